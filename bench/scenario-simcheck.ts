// `vcmdq bench --scenario simcheck`: does the simulator's structure match
// this machine? It measures the node-local step costs (bench/sim-node-local
// .ts), runs the simulator with them, and measures the real threads in the
// same run, figure by figure: the round-trip p50 of each path, the trap /
// doorbell ratios, the batched throughput per command, and one gap-sweep
// point. Each row carries predicted_us, measured_us and ratio
// (predicted / measured); the target is 0.75..1.25. Nothing here is
// fitted: the profile comes from the hops and micro steps alone.
import type { CsMode as LibCsMode } from '../src/index.ts';
import { CTL_STAT_SLEEPS } from '../src/layout.ts';
import { ADAPTIVE_DEFAULTS } from '../src/poll-policy.ts';
import { batchCommands, SIM_PATHS, type SimPathName } from '../src/sim/paths.ts';
import { runSim, SIM_SPIN_NS, type SimConfig, type SimResult } from '../src/sim/run.ts';
import type { LatencyPath } from './baselines.ts';
import { runInterleaved, type Profile } from './harness.ts';
import { closeAll, openPaths, SubmitPath, type ScenarioDef } from './scenario-kit.ts';
import { measureNodeLocal, nodeLocalNote, nodeLocalProfile } from './sim-node-local.ts';
import { median } from './stats.ts';
import { tlbiNhVaWords, type OpenedPath } from './queue-api.ts';
import { MORE_PATHS, PATHS, type Params, type QueuePathName, type ResultRow } from './types.ts';
import type { SimProfile } from '../src/sim/profile.ts';

/** The simulated path of a real-thread path: the same name (the simulator's paths are named as the bench's), or undefined. */
export function simPathOf(name: string): SimPathName | undefined {
  return (SIM_PATHS as readonly string[]).includes(name) ? (name as SimPathName) : undefined;
}

export const SIMCHECK_BATCHES = [1, 16, 256] as const;
/** The gap-sweep point: shorter than doorbell-spin's 50 µs budget, far longer than a round trip. */
export const SIMCHECK_GAP_US = 20;

/** A simcheck row: the bench's fields (the measured side's summary) and the comparison. */
export interface SimcheckRow extends ResultRow {
  predicted_us: number;
  measured_us: number;
  /** predicted / measured. */
  ratio: number;
}

/** One comparison row; the latency fields are the measured figure (a ratio figure has no distribution). */
export function simcheckRow(path: QueuePathName, params: Params, predictedUs: number, measuredUs: number, samples: number): SimcheckRow {
  return {
    scenario: 'simcheck', path, params,
    p50_us: measuredUs, p90_us: NaN, p99_us: NaN, p999_us: NaN, mean_us: NaN, stddev_us: NaN,
    ops_per_s: measuredUs > 0 ? 1e6 / measuredUs : 0, cpu_us_per_op: null, samples,
    predicted_us: predictedUs, measured_us: measuredUs, ratio: measuredUs > 0 ? predictedUs / measuredUs : NaN,
  };
}

/** The real queues' size: vm.openQueue's default (src/host.ts), which openPath takes. */
export const SIMCHECK_LOG2SIZE = 8;

/** A simulated single-vCPU run as the real one is set up: the bench's ring, and for doorbell-adaptive startHost's default poller (AdaptivePoll with its defaults). */
export function simulateOne(profile: SimProfile, path: SimPathName, over: Partial<SimConfig>): SimResult {
  return runSim({ profile, path, vcpus: 1, workload: 'roundtrip', unmaps: 2000, adaptive: ADAPTIVE_DEFAULTS, log2size: SIMCHECK_LOG2SIZE, ...over });
}

/** p50 of a simulated run, µs (per command for the batch workload: `perOp` commands per operation). */
export function simP50(r: SimResult, perOp = 1): number {
  return median(r.latenciesNs) / 1000 / perOp;
}

/** p50 of a simulated single-vCPU run, µs (per command for the batch workload). */
export function predictP50(profile: SimProfile, path: SimPathName, over: Partial<SimConfig>, perOp = 1): number {
  return simP50(simulateOne(profile, path, over), perOp);
}

/** How often a doorbell path's kernel thread went to sleep per batch iteration, measured and simulated (a wake-up per sleep). */
export interface SleepCount {
  path: QueuePathName;
  measured: number;
  simulated: number;
}

/**
 * The batch figures' diagnostic note: a sleeping kernel thread that runs dry
 * in the middle of an iteration costs a kick and a wake-up more, so where a
 * batch figure is off, whether the real thread slept more often than the
 * simulated one says which side of that race each is on.
 */
export function sleepsNote(batch: number, counts: readonly SleepCount[]): string {
  const each = counts.map((c) => `${c.path} ${c.measured.toFixed(2)} / ${c.simulated.toFixed(2)}`);
  return `simcheck batch ${batch}: kernel-thread sleeps per iteration, measured / simulated: ${each.length > 0 ? each.join(', ') : 'no doorbell path'}`;
}

/** The sleep counter of a doorbell path's kernel thread (its CTL_STAT_SLEEPS word); undefined on the other paths. */
function kthreadSleeps(o: OpenedPath): (() => number) | undefined {
  if (!o.name.startsWith('doorbell-')) return undefined;
  const i32 = new Int32Array(o.host.sab);
  const at = o.host.kthreadCtl(o.vm.kthread) + CTL_STAT_SLEEPS;
  return () => Atomics.load(i32, at);
}

/** A submit after an idle gap (busy-waited: a timer cannot do microseconds); the gap is not timed. */
class GappedSubmit implements LatencyPath {
  readonly params: Params;
  constructor(readonly name: QueuePathName, private readonly inner: SubmitPath, private readonly gapUs: number) {
    this.params = { gap_us: gapUs, cs: 'sev' };
  }
  sample(out: Float64Array, from: number, count: number): void {
    for (let i = from; i < from + count; i++) {
      const until = performance.now() + this.gapUs / 1000;
      while (performance.now() < until);
      this.inner.sample(out, i, 1);
    }
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The CMD_SYNC completion each path takes: a Tegra241 VCMDQ takes CS=NONE only (src/hw.ts), the others SEV. */
export function syncCsOf(name: string): 'none' | 'sev' {
  return name === 'hw' ? 'none' : 'sev';
}

/**
 * The bench's throughput iteration (bench/scenarios.ts): publishes of `batch`, the last with a CMD_SYNC; µs per
 * command. The path's own poller (the hw SMMU) runs only while it samples, as in the throughput scenario.
 */
class BatchIteration implements LatencyPath {
  readonly params: Params;
  private readonly words: Uint32Array<ArrayBuffer>;
  private readonly publishes: number;
  private readonly cs: LibCsMode;
  private readonly sleepCount: (() => number) | undefined;
  /** Iterations run and kernel-thread sleeps seen during them (doorbell paths), warm-up included. */
  iterations = 0;
  sleeps = 0;
  constructor(readonly name: QueuePathName, private readonly o: OpenedPath, private readonly batch: number, private readonly timeoutMs: number) {
    this.sleepCount = kthreadSleeps(o);
    this.cs = syncCsOf(name) as LibCsMode;
    this.params = { batch };
    this.words = new Uint32Array(4 * batch);
    for (let k = 0; k < batch; k++) tlbiNhVaWords(0x40000 + k, this.words, 4 * k);
    this.publishes = batchCommands(batch) / batch;
  }
  sample(out: Float64Array, from: number, count: number): void {
    const q = this.o.queue;
    const sleeps0 = this.sleepCount?.() ?? 0;
    this.o.active(true);
    try {
      for (let i = from; i < from + count; i++) {
        const t0 = performance.now();
        for (let b = 1; b < this.publishes; b++) q.submitWords(this.words, this.batch, null, this.timeoutMs);
        q.submitWords(this.words, this.batch, this.cs, this.timeoutMs);
        out[i] = ((performance.now() - t0) * 1000) / (this.publishes * this.batch);
      }
    } finally {
      this.o.active(false);
    }
    this.iterations += count;
    if (this.sleepCount !== undefined) this.sleeps += this.sleepCount() - sleeps0;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

export const simcheck: ScenarioDef = {
  name: 'simcheck',
  title: 'Simulator self-check: node-local step costs measured, simulated, and compared with the real threads in the same run',
  async run(ctx) {
    const { profile, progress } = ctx;
    const notes: string[] = [];
    progress.log('[bench] simcheck: measuring the node-local step costs');
    const m = await measureNodeLocal(progress, Math.max(2000, Math.round(profile.samples / 5)));
    const sp = nodeLocalProfile(m);
    notes.push(nodeLocalNote(m));
    // Every path the round-trip scenario measures, QEMU's trap shape and the hardware VCMDQ included.
    const opened = await openPaths(ctx, notes, [...PATHS, ...MORE_PATHS]);
    const rows: SimcheckRow[] = [];
    try {
      const simulated = opened.filter((o) => simPathOf(o.name) !== undefined);
      const words = tlbiNhVaWords(0x40000);
      const submits = simulated.map((o) => new SubmitPath(o.name, o.queue, words, syncCsOf(o.name), profile.timeoutMs, o.name === 'hw' ? o : undefined));
      const rt = await runInterleaved('simcheck round trip', submits, profile, progress);
      const measuredRt = new Map(rt.map((x) => [x.path.name, median(x.samples)]));
      const predictedRt = new Map<string, number>();
      for (const o of simulated) {
        const predicted = predictP50(sp, simPathOf(o.name)!, {});
        predictedRt.set(o.name, predicted);
        rows.push(simcheckRow(o.name, { figure: 'roundtrip_p50', cs: syncCsOf(o.name) }, predicted, measuredRt.get(o.name)!, profile.samples));
      }
      for (const d of ['doorbell-sleep', 'doorbell-spin'] as const) {
        const [pt, pd, mt, md] = [predictedRt.get('trap'), predictedRt.get(d), measuredRt.get('trap'), measuredRt.get(d)];
        if (pt !== undefined && pd !== undefined && mt !== undefined && md !== undefined) rows.push(simcheckRow(d, { figure: 'trap_over_this_p50' }, pt / pd, mt / md, profile.samples));
      }
      const few: Profile = { ...profile, warmup: Math.max(10, Math.round(profile.warmup / 50)), samples: Math.max(20, Math.round(profile.samples / 100)), rewarm: 2 };
      for (const batch of SIMCHECK_BATCHES) {
        const iters = simulated.map((o) => new BatchIteration(o.name, o, batch, profile.timeoutMs));
        const meas = await runInterleaved(`simcheck batch ${batch}`, iters, few, progress);
        const counts: SleepCount[] = [];
        for (const [k, x] of meas.entries()) {
          const r = simulateOne(sp, simPathOf(x.path.name)!, { workload: 'batch', batch, unmaps: 200 });
          rows.push(simcheckRow(x.path.name as QueuePathName, { figure: 'throughput_us_per_cmd', batch }, simP50(r, batchCommands(batch)), median(x.samples), few.samples));
          const it = iters[k]!;
          if (x.path.name.startsWith('doorbell-') && it.iterations > 0) counts.push({ path: it.name, measured: it.sleeps / it.iterations, simulated: r.wakeups / r.unmaps });
        }
        notes.push(sleepsNote(batch, counts));
      }
      const gapPaths = simulated.filter((o) => o.name === 'doorbell-sleep' || o.name === 'doorbell-spin');
      const gp: Profile = { ...profile, warmup: Math.round(profile.warmup / 10), samples: Math.round(profile.samples / 10), rewarm: 5 };
      const gapped = gapPaths.map((o) => new GappedSubmit(o.name, new SubmitPath(o.name, o.queue, words, 'sev', profile.timeoutMs), SIMCHECK_GAP_US));
      for (const x of await runInterleaved(`simcheck gap ${SIMCHECK_GAP_US} µs`, gapped, gp, progress)) {
        const predicted = predictP50(sp, simPathOf(x.path.name)!, { gapNs: SIMCHECK_GAP_US * 1000 });
        rows.push(simcheckRow(x.path.name as QueuePathName, { figure: 'gapsweep_p50', gap_us: SIMCHECK_GAP_US, spin_us: x.path.name === 'doorbell-spin' ? SIM_SPIN_NS / 1000 : 0 }, predicted, median(x.samples), gp.samples));
      }
    } finally {
      await closeAll(opened);
    }
    notes.push('simcheck: ratio = predicted / measured per figure (target 0.75..1.25); predicted from the node-local profile alone, nothing fitted');
    return { measured: rows.map((row) => ({ row })), notes };
  },
};
