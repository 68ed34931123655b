// Mutation testing of the protocol core (issue #16): `npm run mutation`.
// Each mutant is one small deliberate bug in a file below; a mutant the
// in-thread tests (test/vitest.mutation.config.ts) do not fail "survives".
// Two shared cores: one test runner, one type checker, run under nice.
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
  mutate: [
    'src/queue.ts',
    'src/codec.ts',
    'src/fields.ts',
    'src/vsmmu.ts',
    'src/invalidate.ts',
    // The model's translation (translate .. walk, STE/CD loading) and invalidation (execute ..) paths.
    'src/model/smmu.ts:355-1051',
    'src/model/tagstore.ts',
    'src/trap/firstpass.ts',
    'src/trap/iommufd.ts',
    'native-free-fastpath/consumer.ts',
    // The guest driver's batching (submitWords .. invalidateRangeAsync; plan .. publish; consumed) without
    // awaitTurn, which only another producer thread reaches.
    'src/guest.ts:420-496',
    'src/guest.ts:598-692',
    'src/guest.ts:720-730',
  ],
  // Text for humans (error messages) is not protocol; mutating it only adds noise.
  ignoreStatic: true,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/index.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  incrementalFile: 'reports/mutation/stryker-incremental.json',
  tempDirName: '.stryker-tmp',
  // Per-file runs side by side (--tempDirName .stryker-tmp-NAME) must not copy each other's sandboxes.
  ignorePatterns: ['/.stryker-tmp-*'],
  cleanTempDir: 'always',
  thresholds: { high: 90, low: 80, break: null },
  timeoutMS: 20_000,
  // The initial run of the whole in-thread suite takes minutes on a loaded machine (5 min is Stryker's default).
  dryRunTimeoutMinutes: 30,
};
