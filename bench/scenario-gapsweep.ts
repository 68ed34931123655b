// The gap sweep: what each kernel-thread polling policy costs and buys as the
// time between round trips grows. Fixed budgets (io_uring SQPOLL's idle:
// 0 = doorbell-sleep, 10/50/200 µs = doorbell-spin), the adaptive poller
// (startHost's default: doorbell-adaptive) and KVM's halt polling
// (doorbell-haltpoll, the anchor it is judged against), all in one run, gaps
// interleaved path by path. Per row: the round trip's latency and the kernel
// thread's own CPU per command, polling included. Then each kernel thread's
// CPU over one second of idle after a burst of back-to-back round trips (a
// note per path): what a policy burns when the guest stops.
import { setTimeout as sleep } from 'node:timers/promises';
import { threadCpuUs } from './affinity.ts';
import type { LatencyPath } from './baselines.ts';
import { latencyRow, runInterleaved, type MeasuredRow, type Profile } from './harness.ts';
import { closeAll, openPaths, type ScenarioDef } from './scenario-kit.ts';
import { tlbiNhVaWords, type OpenedPath } from './queue-api.ts';
import type { Params, PathName, QueuePathName } from './types.ts';

export const GAPS_US = [0, 5, 20, 100, 1000] as const;
/** Fixed kernel-thread budgets, µs (0 is doorbell-sleep). */
export const GAP_SPIN_BUDGETS_US = [0, 10, 50, 200] as const;
/** The polling-policy paths measured beside the fixed budgets. */
export const GAP_POLICY_PATHS = ['doorbell-adaptive', 'doorbell-haltpoll'] as const satisfies readonly QueuePathName[];
/** Idle time over which each kernel thread's CPU is read, and the burst of round trips before it. */
export const IDLE_MS = 1000;
const IDLE_BURST = 200;

/** A host of the sweep: its path name and the params its rows carry (spin_us for a fixed budget, poll otherwise). */
export interface GapHost {
  name: QueuePathName;
  params: Params;
}

/** The sweep's hosts, in row order: every fixed budget, then every policy path. */
export function gapHosts(): GapHost[] {
  return [
    ...GAP_SPIN_BUDGETS_US.map((spinUs): GapHost => ({ name: spinUs === 0 ? 'doorbell-sleep' : 'doorbell-spin', params: { spin_us: spinUs } })),
    ...GAP_POLICY_PATHS.map((name): GapHost => ({ name, params: { poll: name === 'doorbell-adaptive' ? 'adaptive' : 'halt-poll' } })),
  ];
}

/** Share of one core, %, that `cpuUs` of CPU over `wallMs` is. */
export function coreShare(cpuUs: number, wallMs: number): number {
  return (100 * cpuUs) / (1000 * wallMs);
}

/**
 * One doorbell round trip per sample after an idle gap (busy-waited on the
 * producer: a timer cannot do 5 µs), with the CPU time of the kernel thread
 * alone (its /proc schedstat, bench/affinity.ts) as the path's CPU clock, so
 * cpu_us_per_op is what the kernel thread burns per command, polling
 * included.
 */
class GapPath implements LatencyPath {
  readonly params: Params;
  constructor(readonly name: QueuePathName, private readonly o: OpenedPath, private readonly words: Uint32Array,
    private readonly gapUs: number, hostParams: Params, private readonly timeoutMs: number) {
    this.params = { gap_us: gapUs, ...hostParams, cs: 'sev' };
  }

  sample(out: Float64Array, from: number, count: number): void {
    const { words, timeoutMs } = this;
    const q = this.o.queue;
    const gapMs = this.gapUs / 1000;
    for (let i = from; i < from + count; i++) {
      const until = performance.now() + gapMs;
      while (performance.now() < until);
      const t0 = performance.now();
      q.submitWords(words, 1, 'sev', timeoutMs);
      out[i] = (performance.now() - t0) * 1000;
    }
  }

  cpuUs(): number {
    return threadCpuUs(this.o.kthreadTid);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Each kernel thread's CPU over IDLE_MS of silence after IDLE_BURST back-to-back round trips, as notes. */
async function idleNotes(opened: readonly OpenedPath[], hosts: readonly GapHost[], words: Uint32Array, timeoutMs: number): Promise<string[]> {
  for (const o of opened) for (let k = 0; k < IDLE_BURST; k++) o.queue.submitWords(words, 1, 'sev', timeoutMs);
  const t0 = performance.now();
  const before = opened.map((o) => threadCpuUs(o.kthreadTid));
  await sleep(IDLE_MS);
  const wallMs = performance.now() - t0;
  return opened.map((o, k) => {
    const cpu = threadCpuUs(o.kthreadTid) - before[k]!;
    const label = `${o.name} ${Object.entries(hosts[k]!.params).map(([p, v]) => `${p}=${v}`).join(' ')}`;
    return `idle ${(wallMs / 1000).toFixed(2)} s after ${IDLE_BURST} round trips: ${label}: kernel thread ${cpu.toFixed(0)} µs CPU (${coreShare(cpu, wallMs).toFixed(3)}% of a core)`;
  });
}

export const gapsweep: ScenarioDef = {
  name: 'gapsweep',
  title: 'Gap sweep: arrival gap x kernel-thread polling policy (fixed budgets, adaptive, KVM halt-poll); latency, kernel-thread CPU per command and while idle',
  async run(ctx) {
    const { profile, progress } = ctx;
    const notes: string[] = [];
    const hosts = gapHosts();
    const opened: OpenedPath[] = [];
    try {
      for (const h of hosts) {
        const spinUs = h.params['spin_us'];
        opened.push(...await openPaths(ctx, notes, [h.name], typeof spinUs === 'number' ? { spinUs } : {}));
      }
      if (opened.length !== hosts.length) throw new Error(`gapsweep: ${hosts.length - opened.length} of its hosts did not start (${notes.join('; ')})`);
      if (opened.some((o) => o.kthreadTid === '')) notes.push('kernel-thread TID not found: cpu_us_per_op is NaN');
      const words = tlbiNhVaWords(0x40000);
      // Gaps are measured one at a time (paths interleaved within each); the 1 ms gap alone is 1 ms per sample.
      const p: Profile = { ...profile, warmup: Math.round(profile.warmup / 10), samples: Math.round(profile.samples / 10), rewarm: Math.max(2, Math.round(profile.rewarm / 4)) };
      const measured: MeasuredRow[] = [];
      for (const gap of GAPS_US) {
        const paths = opened.map((o, k) => new GapPath(o.name, o, words, gap, hosts[k]!.params, profile.timeoutMs));
        const m = await runInterleaved(`gapsweep ${gap} µs`, paths, p, progress);
        measured.push(...m.map((x) => ({ row: latencyRow('gapsweep', x.path.name as PathName, x.path.params, x.samples, x.cpuUs).row })));
      }
      progress.update(`[bench] gapsweep: ${IDLE_MS} ms idle`);
      notes.push(...await idleNotes(opened, hosts, words, profile.timeoutMs));
      return { measured, notes };
    } finally {
      await closeAll(opened);
    }
  },
};
