// `vcmdq sim` output: result rows in the bench's --json schema (README
// "The benchmark's --json document") marked `predicted: true` with the
// profile's name, so a simulated number is never taken for a measured one;
// the console table; the document.
import type { SimResult } from '../src/sim/run.ts';
import type { SimPathName } from '../src/sim/paths.ts';
import { fmt, table } from './report.ts';
import { summarizeSorted, sortedCopy } from './stats.ts';
import type { Params, ResultRow } from './types.ts';

/** What `vcmdq sim --scenario` simulates: the bench scenarios of the same names. */
export const SIM_SCENARIOS = ['unmap', 'roundtrip', 'svastorm'] as const;
export type SimScenario = (typeof SIM_SCENARIOS)[number];

/** A simulated row: the bench's row fields, the sim's path names, and the marks of a prediction. */
export interface SimRow extends Omit<ResultRow, 'path' | 'scenario'> {
  scenario: SimScenario;
  path: SimPathName;
  /** Always true: virtual time from a cost profile, not a measurement. */
  predicted: true;
  profile: string;
}

/**
 * One row per run. Latencies are per operation (an unmap: PTE clear +
 * invalidation + CMD_SYNC; a round trip; a storm operation), µs; `ops_per_s`
 * is the run's aggregate operations per virtual second over all vCPUs;
 * `cpu_us_per_op` is all CPU time (vCPUs and host threads, spinning
 * included) per operation; params add the host threads' share.
 */
export function simRow(r: SimResult, profile: string, seed: number): SimRow {
  const us = new Float64Array(r.latenciesNs.length);
  for (let k = 0; k < us.length; k++) us[k] = r.latenciesNs[k]! / 1000;
  const s = summarizeSorted(sortedCopy(us));
  const params: Params = {
    granule: r.granule, threads: r.vcpus, queues: r.queues, unmaps_per_thread: r.unmaps / r.vcpus, seed,
    host_cpu_us_per_op: round(r.hostCpuNs / r.unmaps / 1000), spin_cpu_us_per_op: round(r.spinNs / r.unmaps / 1000),
    smmu_busy: round(r.smmuBusy),
  };
  return {
    scenario: r.workload.kind === 'batch' ? 'roundtrip' : r.workload.kind, path: r.path, params,
    p50_us: s.p50, p90_us: s.p90, p99_us: s.p99, p999_us: s.p999, mean_us: s.mean, stddev_us: s.stddev,
    ops_per_s: r.elapsedNs > 0 ? (r.unmaps * 1e9) / r.elapsedNs : 0,
    cpu_us_per_op: (r.vcpuCpuNs + r.hostCpuNs) / r.unmaps / 1000,
    samples: s.count, predicted: true, profile,
  };
}

function round(x: number): number {
  return Number(x.toPrecision(4));
}

/** The console table: one block per granule, a row per path and vCPU count. */
export function formatSimTable(rows: readonly SimRow[], title: string): string {
  const out: string[] = [title];
  const granules = [...new Set(rows.map((r) => Number(r.params['granule'])))];
  for (const g of granules) {
    const mine = rows.filter((r) => r.params['granule'] === g);
    // Against QEMU's trap (what a real host runs today), or the iothread trap when only that one ran.
    const base = mine.some((t) => t.path === 'trap-qemu') ? 'trap-qemu' : 'trap';
    const header = ['path', 'vCPUs', 'queues', 'p50', 'p99', 'mean', 'ops/s', 'cpu µs/op', 'host cpu µs/op', `${base}/this p50`];
    const body = mine.map((r) => {
      const trap = mine.find((t) => t.path === base && t.params['threads'] === r.params['threads']);
      return [
        r.path, String(r.params['threads']), String(r.params['queues']), fmt(r.p50_us), fmt(r.p99_us), fmt(r.mean_us),
        fmt(r.ops_per_s), fmt(r.cpu_us_per_op), fmt(Number(r.params['host_cpu_us_per_op'])), trap ? `${fmt(trap.p50_us / r.p50_us)}x` : '-',
      ];
    });
    out.push('', `## ${g > 0 ? `unmap, granule ${g / 1024}K` : mine[0]!.scenario} (predicted, µs)`, table(header, body));
  }
  return out.join('\n');
}

/** The --json document: the bench's shape, with the profile in place of the machine. */
export function simJsonDocument(rows: readonly SimRow[], profile: object, notes: readonly string[]): object {
  return { predicted: true, profile, results: rows, unavailable: [], notes };
}
