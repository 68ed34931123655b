// Which figure is compared with which: shared by the console tables and the gate.
import { ratio } from './stats.ts';
import type { BaselinePathName, Params, PathName, ResultRow, ScenarioName } from './types.ts';

/**
 * The bare mechanism each path is built on: the spinning doorbell is a spin
 * ping-pong plus the queue work, the sleeping doorbell a wait/wait ping-pong;
 * the trap path blocks too, so its floor is also the wait/wait ping-pong
 * (its extra dispatcher hop is exactly what the ratio shows).
 */
export function baselineFor(path: PathName): BaselinePathName {
  switch (path) {
    // A polling kernel thread's floor; the adaptive poller polls back-to-back round trips.
    // hw: the SMMU polls PROD and the guest polls CONS, a spin ping-pong plus the work.
    case 'hw':
    case 'doorbell-spin':
    case 'doorbell-adaptive': return 'atomics-spin';
    case 'doorbell-sleep':
    case 'trap': return 'atomics-wait';
    default: return 'atomics-wait';
  }
}

/** A path that skips the trap (any doorbell policy, hw): the rows compared with trap (iothread-style). */
export function isDoorbell(path: PathName): boolean {
  return path.startsWith('doorbell-') || path === 'hw';
}

function sameParams(a: Params, b: Params): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

export function findRow(rows: readonly ResultRow[], scenario: ScenarioName, path: PathName, params?: Params): ResultRow | undefined {
  return rows.find((r) => r.scenario === scenario && r.path === path && (params === undefined || sameParams(r.params, params)));
}

export interface RowRatios {
  /** this path / its baseline, p50 and p99 (NaN when the baseline was not measured) */
  vsBaseline: { p50: number; p99: number; baseline: BaselinePathName };
  /** trap / this path with the same params, p50 and p99 (only for doorbell rows) */
  trapOver?: { p50: number; p99: number };
}

export function rowRatios(rows: readonly ResultRow[], row: ResultRow): RowRatios {
  const baseName = baselineFor(row.path);
  const base = findRow(rows, 'baseline', baseName);
  const out: RowRatios = { vsBaseline: { p50: ratio(row.p50_us, base?.p50_us), p99: ratio(row.p99_us, base?.p99_us), baseline: baseName } };
  if (isDoorbell(row.path)) {
    const trap = findRow(rows, row.scenario, 'trap', row.params);
    out.trapOver = { p50: ratio(trap?.p50_us, row.p50_us), p99: ratio(trap?.p99_us, row.p99_us) };
  }
  return out;
}
