import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    include: ['test/**/*.test.ts'],
    // Worker threads cannot load .ts files on Node 20: tests that start workers
    // run the esbuild output the package ships, built once here.
    globalSetup: ['test/global-setup.ts'],
    // Thread-heavy suites share two cores; run files one at a time so a
    // spinning kernel thread of one file does not starve another file's.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
