import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// The suite StrykerJS runs against each mutant (stryker.config.mjs): only the
// fast tests that stay in this thread, so a mutation run fits two shared
// cores. Worker-thread tests (doorbell-*, trap-* with a host, mailbox, host-faults)
// would multiply every mutant's cost by a thread start and cannot see Stryker's
// per-test coverage inside a worker anyway; the consumer, the vSMMU and the
// trap first pass are driven in-thread by the tests listed here.
// model-property is left out too: one of its properties takes a minute, and
// model-invalidation, isolation and range-oracle cover the same paths.
export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    include: [
      'test/codec.test.ts',
      'test/fields.test.ts',
      'test/queue.test.ts',
      'test/vsmmu.test.ts',
      'test/invalidate.test.ts',
      'test/invalidate-range.test.ts',
      'test/range-oracle.test.ts',
      'test/isolation.test.ts',
      'test/consumer-order.test.ts',
      'test/consumer-errors.test.ts',
      'test/guest-inthread.test.ts',
      'test/model.test.ts',
      'test/model-invalidation.test.ts',
      'test/trap-pure.test.ts',
    ],
    fileParallelism: false,
    testTimeout: 60_000,
  },
});
