// Names and result rows shared by the harness, its output and the gate.

export const SCENARIOS = ['baseline', 'roundtrip', 'unmap', 'throughput', 'svastorm', 'gapsweep', 'anatomy', 'simcheck', 'mp', 'scale'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

/**
 * trap: iothread-style (a VMM thread serves the exits); doorbell-sleep /
 * -spin: fixed kernel-thread budgets (0, 50 µs); doorbell-adaptive:
 * startHost's default poller.
 */
export const PATHS = ['trap', 'doorbell-sleep', 'doorbell-spin', 'doorbell-adaptive'] as const;
/**
 * Paths of the roundtrip and throughput scenarios besides PATHS: trap-qemu
 * (QEMU's shape: the exit handled on the vCPU's thread under the BQL,
 * library path 'trap-inline') and hw (a Tegra241 hardware VCMDQ, its SMMU
 * polling while it is measured).
 */
export const MORE_PATHS = ['trap-qemu', 'hw'] as const;
/** Reference policies measured in the gap sweep only: KVM's halt polling, the anchor the adaptive poller is judged against. */
export const REFERENCE_PATHS = ['doorbell-haltpoll'] as const;
export const BASELINE_PATHS = ['atomics-wait', 'atomics-spin', 'postmessage'] as const;
export type QueuePathName = (typeof PATHS)[number] | (typeof REFERENCE_PATHS)[number] | (typeof MORE_PATHS)[number];
export type BaselinePathName = (typeof BASELINE_PATHS)[number];
export type PathName = QueuePathName | BaselinePathName;

export type Params = Record<string, number | string>;

/** One row of `--json` results; field names are the documented schema. */
export interface ResultRow {
  scenario: ScenarioName;
  path: PathName;
  params: Params;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  p999_us: number;
  mean_us: number;
  stddev_us: number;
  ops_per_s: number;
  /** Process CPU time (all threads: user + system) per operation; null where not measured. */
  cpu_us_per_op: number | null;
  samples: number;
}

/** A wait that ran out: the peer is gone or stuck. Always preferred to a hang. */
export class BenchTimeoutError extends Error {
  override readonly name = 'BenchTimeoutError';
}

/** A scenario or path whose implementation is not in the tree yet (or failed to start). */
export class BenchUnavailableError extends Error {
  override readonly name = 'BenchUnavailableError';
}
