// Mutation testing of the protocol core (issue #16): `npm run mutation`.
// Each mutant is one small deliberate bug in a file below; a mutant the
// in-thread tests (test/vitest.mutation.config.ts) do not fail "survives".
// Two shared cores: one test runner, one type checker, run under nice.
import { targets } from './test/mutation-targets.mjs';

// MUTATION_TARGET=NAME (test/mutation.mjs sets it) mutates one target of
// test/mutation-targets.mjs against the test files that guard it, with its own
// sandbox and reports; unset, every target's files are mutated against every
// target's tests (hours on two shared cores: use `npm run mutation`, which runs
// the targets one by one).
const name = process.env.MUTATION_TARGET || undefined;
const target = name === undefined ? undefined : targets[name];
if (name !== undefined && target === undefined) {
  throw new Error(`MUTATION_TARGET=${name}: not one of ${Object.keys(targets).join(', ')} (test/mutation-targets.mjs)`);
}
const tag = name ?? 'all';

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'test/vitest.mutation.config.ts' },
  // Mutants that do not compile are counted as such, not run.
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.mutation.json',
  typescriptChecker: { prioritizePerformanceOverAccuracy: true },
  coverageAnalysis: 'perTest',
  concurrency: 1,
  mutate: target === undefined ? Object.values(targets).flatMap((t) => t.mutate) : target.mutate,
  // Text for humans (error messages) is not protocol; mutating it only adds noise.
  ignoreStatic: true,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: `reports/mutation/${tag}.html` },
  jsonReporter: { fileName: `reports/mutation/${tag}.json` },
  incrementalFile: `reports/mutation/${tag}-incremental.json`,
  tempDirName: `.stryker-tmp-${tag}`,
  // Another target's sandbox (left by a killed run) is not part of the project.
  ignorePatterns: ['/.stryker-tmp-*'],
  cleanTempDir: 'always',
  thresholds: { high: 90, low: 80, break: null },
  // A mutant that loops forever (a wait's exit mutated away) is a Timeout, counted as detected: it is stopped
  // 5 s past 1.5x its tests' dry-run time. 20 s made each of them cost a minute of a shared core.
  timeoutMS: 5_000,
  // The initial run of a target's tests on a loaded machine can take minutes (5 min is Stryker's default).
  dryRunTimeoutMinutes: 30,
};
