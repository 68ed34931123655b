// Harness core: sample-count profiles, round-robin interleaving of paths,
// progress on stderr, machine facts, turning samples into result rows.
import os from 'node:os';
import { Bench } from 'tinybench';
import { pinningEnabled } from './affinity.ts';
import type { LatencyPath } from './baselines.ts';
import { cdfPoints, nowUs, summarizeSorted, sortedCopy, type CdfPoint } from './stats.ts';
import type { Params, PathName, ResultRow, ScenarioName } from './types.ts';

export interface Profile {
  name: 'full' | 'quick';
  /** Discarded round trips per path before the first round. */
  warmup: number;
  /** Kept round trips per path, spread over `rounds`. */
  samples: number;
  rounds: number;
  /** Discarded round trips per path at the start of every round: a spinning peer that slept while the other paths ran is awake again before samples are kept. */
  rewarm: number;
  /** Longest one operation may take before the run fails (never a hang). */
  timeoutMs: number;
}

export const PROFILES: Record<Profile['name'], Profile> = {
  // 50k samples after 5k warm-up: the method of node-latency-floor.md.
  full: { name: 'full', warmup: 5000, samples: 50_000, rounds: 10, rewarm: 50, timeoutMs: 5000 },
  // p99.9 still rests on 5 samples here; the gate compares p50 and p99 only.
  quick: { name: 'quick', warmup: 500, samples: 5000, rounds: 5, rewarm: 20, timeoutMs: 5000 },
};

/** Samples kept in round `r` of `rounds` (rounds differ by at most one). */
export function chunkSize(total: number, rounds: number, r: number): number {
  return Math.floor(((r + 1) * total) / rounds) - Math.floor((r * total) / rounds);
}

/** Path order of round `r`: rotated by one each round so no path always runs first (right after the warm peers) or last. */
export function roundOrder(pathCount: number, r: number): number[] {
  const order: number[] = [];
  for (let k = 0; k < pathCount; k++) order.push((r + k) % pathCount);
  return order;
}

/** One status line on stderr, rewritten in place on a terminal, sparse when logged. */
export class Progress {
  private lastLen = 0;
  constructor(private readonly out: NodeJS.WriteStream = process.stderr, private readonly enabled = true) {}

  update(text: string): void {
    if (!this.enabled) return;
    if (this.out.isTTY) {
      this.out.write(`\r${text.padEnd(this.lastLen)}`);
      this.lastLen = text.length;
    }
  }

  /** A line that stays (start/end of a scenario), also when stderr is not a terminal. */
  log(text: string): void {
    if (!this.enabled) return;
    if (this.out.isTTY && this.lastLen > 0) this.out.write(`\r${''.padEnd(this.lastLen)}\r`);
    this.lastLen = 0;
    this.out.write(`${text}\n`);
  }
}

export interface Measured {
  path: LatencyPath;
  /** Kept samples (µs), in the order taken. */
  samples: Float64Array;
  /** CPU spent while this path's kept samples were taken, µs: its own clock (LatencyPath.cpuUs) or the process's. */
  cpuUs: number;
}

/** The path's own CPU clock (e.g. its kernel thread's) if it has one, else the whole process's (user + system), µs. */
function cpuNow(p: LatencyPath): number {
  if (p.cpuUs) return p.cpuUs();
  const c = process.cpuUsage();
  return c.user + c.system;
}

/**
 * Times all paths against each other in round-robin rounds, so drift of the
 * host (vCPU placement moves, noisy neighbours) lands on every path alike
 * instead of on whichever ran during the bad stretch.
 */
export async function runInterleaved(label: string, paths: LatencyPath[], profile: Profile, progress: Progress): Promise<Measured[]> {
  const scratch = new Float64Array(Math.max(profile.warmup, profile.rewarm, 1));
  const measured: Measured[] = paths.map((path) => ({ path, samples: new Float64Array(profile.samples), cpuUs: 0 }));
  for (const p of paths) {
    progress.update(`[bench] ${label}: warm-up ${p.name}`);
    await p.sample(scratch, 0, profile.warmup);
  }
  const filled = new Array<number>(paths.length).fill(0);
  for (let r = 0; r < profile.rounds; r++) {
    for (const k of roundOrder(paths.length, r)) {
      const m = measured[k]!;
      progress.update(`[bench] ${label}: round ${r + 1}/${profile.rounds} ${m.path.name}`);
      await m.path.sample(scratch, 0, profile.rewarm);
      const n = chunkSize(profile.samples, profile.rounds, r);
      const cpu0 = cpuNow(m.path);
      await m.path.sample(m.samples, filled[k]!, n);
      m.cpuUs += cpuNow(m.path) - cpu0;
      filled[k]! += n;
    }
  }
  return measured;
}

/** A result row plus what the SVG needs; only `row` goes to --json. */
export interface MeasuredRow {
  row: ResultRow;
  cdf?: CdfPoint[];
}

export function latencyRow(scenario: ScenarioName, path: PathName, params: Params, samples: Float64Array, cpuUs: number | null): MeasuredRow {
  const sorted = sortedCopy(samples);
  const s = summarizeSorted(sorted);
  return {
    row: {
      scenario, path, params,
      p50_us: s.p50, p90_us: s.p90, p99_us: s.p99, p999_us: s.p999,
      mean_us: s.mean, stddev_us: s.stddev,
      ops_per_s: s.count > 0 ? 1e6 / s.mean : 0,
      cpu_us_per_op: cpuUs === null || s.count === 0 ? null : cpuUs / s.count,
      samples: s.count,
    },
    cdf: cdfPoints(sorted),
  };
}

export interface MachineInfo {
  cpus: number;
  cpu_model: string;
  node: string;
  v8: string;
  os: string;
  arch: string;
  date: string;
  /** Cost of one clock read of the timed loops (every latency sample contains one), ns. */
  clock_ns: number;
  /** Atomics.notify with nobody waiting, ns: the price a producer pays per doorbell when the consumer is awake. */
  notify_idle_ns: number;
  /** Producer (main thread) on CPU 0, server threads on CPU 1 (bench/affinity.ts). */
  pinned: boolean;
}

/**
 * Single-thread costs through tinybench: it handles warm-up, iteration
 * counts and statistics. Each task does a block of calls so the per-call
 * figure is not swamped by tinybench's own per-iteration clock reads.
 */
export async function singleThreadCosts(): Promise<{ clock_ns: number; notify_idle_ns: number }> {
  const BLOCK = 1000;
  const i32 = new Int32Array(new SharedArrayBuffer(4));
  let sink = 0;
  const bench = new Bench({ time: 100, warmupTime: 20, iterations: 20 });
  bench
    .add('clock', () => { for (let k = 0; k < BLOCK; k++) sink += nowUs(); })
    .add('notify-idle', () => { for (let k = 0; k < BLOCK; k++) sink += Atomics.notify(i32, 0, 1); });
  await bench.run();
  const perCallNs = (name: string): number => {
    const r = bench.getTask(name)?.result;
    if (!r || !('latency' in r)) throw new Error(`tinybench task ${name} did not complete (${r?.state})`);
    return (r.latency.p50 * 1e6) / BLOCK;
  };
  if (sink === -1) process.stderr.write(''); // keeps `sink` observable so the loops are not dead code to the JIT
  return { clock_ns: perCallNs('clock'), notify_idle_ns: perCallNs('notify-idle') };
}

export async function machineInfo(): Promise<MachineInfo> {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpu_model: cpus[0]?.model.trim() ?? 'unknown',
    node: process.version,
    v8: process.versions.v8,
    os: `${os.type()} ${os.release()}`,
    arch: process.arch,
    date: new Date().toISOString(),
    ...(await singleThreadCosts()),
    pinned: pinningEnabled(),
  };
}
