// Thread placement and per-thread CPU time, from /proc (Linux only; a no-op elsewhere).
//
// Why pin: on this 2-vCPU guest the scheduler's wake-affine placement can put
// the producer and its consumer thread on the SAME vCPU (the woken thread
// lands on the waker's CPU), and a spinning pair then degenerates into
// time-slicing: the doorbell-spin round trip measured ~111 µs p50 for
// seconds at a time, and the bare spin ping-pong showed a p90 of ~4 ms. So
// the bench puts the producer (this, the main thread: the guest vCPU) on
// CPU 0 and every server thread it starts (kernel thread, VMM, baseline
// consumers) on CPU 1, the way a vCMDQ benchmark pins its vCPU and its
// kernel thread. Guest vCPU workers (2-vCPU unmap) float over both CPUs.
// Set VCMDQ_BENCH_NOPIN=1 to measure unpinned.
//
// Node has no gettid() or per-thread CPU clock: a worker's OS thread is
// found as the /proc/self/task entry that appeared while it started, and
// its CPU time is the first field of /proc/self/task/TID/schedstat (ns on
// CPU, the scheduler's own sum_exec_runtime), read outside the timed loops.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';

export const NOPIN_ENV = 'VCMDQ_BENCH_NOPIN';
const PRODUCER_CPU = '0';
const SERVER_CPU = '1';

function tasks(): Set<string> {
  try {
    return new Set(readdirSync('/proc/self/task'));
  } catch {
    return new Set();
  }
}

function taskset(cpus: string, tid: string): boolean {
  const r = spawnSync('taskset', ['-pc', cpus, tid], { stdio: 'ignore' });
  return r.status === 0;
}

let pinning: boolean | undefined;

/** Whether threads are pinned (decided once: Linux, >= 2 CPUs, taskset works, not disabled). */
export function pinningEnabled(): boolean {
  if (pinning === undefined) {
    pinning = process.platform === 'linux' && os.cpus().length >= 2 && !process.env[NOPIN_ENV]
      && taskset(`${PRODUCER_CPU}`, String(process.pid));
  }
  return pinning;
}

export type Placement = 'server' | 'float';

/**
 * Runs `start` (which starts worker threads) and places the OS threads that
 * appeared meanwhile; returns their TIDs (also when not pinning, for CPU time).
 */
export async function startThreads<T>(placement: Placement, start: () => Promise<T>): Promise<{ value: T; tids: string[] }> {
  const before = tasks();
  const value = await start();
  const tids = [...tasks()].filter((t) => !before.has(t));
  if (pinningEnabled()) {
    const cpus = placement === 'server' ? SERVER_CPU : `${PRODUCER_CPU},${SERVER_CPU}`;
    for (const t of tids) taskset(cpus, t);
  }
  return { value, tids };
}

/** CPU time of thread `tid` of this process so far, µs; NaN when unreadable (not Linux, thread gone). */
export function threadCpuUs(tid: string): number {
  try {
    return Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1000;
  } catch {
    return NaN;
  }
}
