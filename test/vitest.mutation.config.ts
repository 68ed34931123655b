import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { allTests, targets } from './mutation-targets.mjs';

// The suite StrykerJS runs against each mutant (stryker.config.mjs): only
// tests that stay in this thread. Worker-thread tests (doorbell-*, trap-* with
// a host, mailbox, host-faults) would multiply every mutant's cost by a thread
// start and cannot show Stryker's per-test coverage inside a worker anyway; the
// consumer, the vSMMU, the trap first pass and the guest driver are driven
// in-thread by the tests listed in test/mutation-targets.mjs.
//
// MUTATION_TARGET=NAME (set by test/mutation.mjs) narrows the files to the
// ones that guard that target; unset, every target's files run.
// model-property is left out: one of its properties takes a minute, and
// model-invalidation, model-differential, isolation and range-oracle cover the
// same paths.
//
// Files run in the order listed (a target lists its cheapest, most direct
// tests first): Stryker stops a mutant's run at its first failing test, so a
// mutant the unit tests kill never waits for the property tests.
const name = process.env['MUTATION_TARGET'];
const target = name === undefined || name === '' ? undefined : targets[name];
if (name !== undefined && name !== '' && target === undefined) {
  throw new Error(`MUTATION_TARGET=${name}: not one of ${Object.keys(targets).join(', ')} (test/mutation-targets.mjs)`);
}
const include = target === undefined ? allTests : target.tests;

class ListedOrder extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (s: TestSpecification): number => include.findIndex((p) => s.moduleId.endsWith(p));
    return [...files].sort((a, b) => rank(a) - rank(b));
  }
}

export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    include: [...include],
    sequence: { sequencer: ListedOrder },
    fileParallelism: false,
    testTimeout: 60_000,
  },
});
