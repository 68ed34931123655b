// Types of test/mutation-targets.mjs (plain JS: stryker.config.mjs and test/mutation.mjs load it in Node).
export interface MutationTarget {
  /** Stryker `mutate` entries: a file, or file:from-to. */
  readonly mutate: readonly string[];
  /** The in-thread test files that guard it, run in this order. */
  readonly tests: readonly string[];
  readonly note: string;
}
export declare const targets: Readonly<Record<string, MutationTarget>>;
export declare const allTests: readonly string[];
