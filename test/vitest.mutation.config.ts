import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

// The suite StrykerJS runs against each mutant (stryker.config.mjs): only the
// fast tests that stay in this thread, so a mutation run fits two shared
// cores. Worker-thread tests (doorbell-*, trap-* with a host, mailbox, host-faults)
// would multiply every mutant's cost by a thread start and cannot see Stryker's
// per-test coverage inside a worker anyway; the consumer, the vSMMU, the
// trap first pass and the guest driver are driven in-thread by the tests listed here.
// model-property is left out too: one of its properties takes a minute, and
// model-invalidation, isolation and range-oracle cover the same paths.
//
// Listed cheapest first (seconds per file on two shared cores, 2026-11-28),
// and run in this order: Stryker stops a mutant's run at its first failing
// test, so a mutant the unit tests kill never waits for the property tests.
const include = [
  'test/fields.test.ts',
  'test/trap-pure.test.ts',
  'test/queue.test.ts',
  'test/vsmmu.test.ts',
  'test/codec.test.ts',
  'test/model.test.ts',
  'test/isolation.test.ts',
  'test/consumer-errors.test.ts',
  'test/guest-inthread.test.ts',
  'test/consumer-order.test.ts',
  'test/invalidate.test.ts',
  'test/model-invalidation.test.ts',
  'test/invalidate-range.test.ts',
  'test/range-oracle.test.ts',
];

class CheapFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (s: TestSpecification): number => include.findIndex((p) => s.moduleId.endsWith(p));
    return [...files].sort((a, b) => rank(a) - rank(b));
  }
}

export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    include,
    sequence: { sequencer: CheapFirst },
    fileParallelism: false,
    testTimeout: 60_000,
  },
});
