// Several producers on one queue (issue #9): 1, 2 and 4 producers share one
// queue of each path, as Linux CPUs share one CMDQ. Producer 0 is the main
// thread (the bench's pinned guest vCPU); the others are worker threads that
// attach the queue's handle (GuestQueue.attach) and float over every CPU.
// Two measures per path and producer count:
//  - round trip: one TLBI_NH_VA + CMD_SYNC(SEV) per call, each call's
//    latency, all producers' calls pooled (batch=1, measure=call);
//  - aggregate throughput: every producer makes MP_TP_CALLS calls of 64
//    commands + CMD_SYNC(SEV) at once; a sample is the span from the first
//    producer's start to the last one's end over all their commands
//    (batch=64, measure=command: ops/s is commands per second, all producers).
// On a 2-core machine, producers beyond one compete with the kernel thread
// (and the VMM on trap) for the cores: params.threads counts the threads that
// may be runnable at once, so a row says how oversubscribed it was.
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { GuestQueue } from '../src/guest.ts';
import { workerUrl } from '../src/worker-url.ts';
import { startThreads } from './affinity.ts';
import { chunkSize, latencyRow, type MeasuredRow, type Profile } from './harness.ts';
import { P_BATCH, P_CALLS, P_CTL_WORDS, P_DONE, P_REQ, produce, type MpProducerData } from './mp-protocol.ts';
import { tlbiNhVaWords, type OpenedPath } from './queue-api.ts';
import { closeAll, openPaths, type ScenarioContext, type ScenarioDef, type ScenarioRun } from './scenario-kit.ts';
import { BenchTimeoutError, type QueuePathName } from './types.ts';
import { EXIT, awaitWord, post } from './unmap-protocol.ts';

export const MP_PRODUCERS = [1, 2, 4] as const;
/** Commands per call: 1 for the round trip, 64 (Linux CMDQ_BATCH_ENTRIES) for the aggregate throughput. */
export const MP_BATCHES = [1, 64] as const;
/** Calls of 64 commands per producer in one throughput sample. */
export const MP_TP_CALLS = 8;
/** 1024 entries: four producers' 65-entry calls in flight at once. */
const MP_LOG2SIZE = 10;
const MAX_PRODUCERS = Math.max(...MP_PRODUCERS);

/** Threads that may be runnable at once in a cell: the producers plus the path's server threads (kernel thread; and the VMM on trap). */
export function mpThreads(path: QueuePathName, producers: number): number {
  return producers + (path === 'trap' ? 2 : 1);
}

/** How much each cell does, from the latency profile. */
export interface MpPlan {
  /** Round-trip calls kept per producer (over all rounds). */
  rtCalls: number;
  /** Round-trip calls discarded per producer before each kept chunk. */
  rtWarm: number;
  /** Throughput samples kept per row (over all rounds). */
  tpSamples: number;
}

/** A fiftieth of the latency profile's round trips per producer, a five-hundredth as throughput samples (at least one per round). */
export function mpPlan(profile: Profile): MpPlan {
  return {
    rtCalls: Math.max(profile.rounds, Math.round(profile.samples / 50)),
    rtWarm: Math.max(2, profile.rewarm),
    tpSamples: Math.max(profile.rounds, Math.round(profile.samples / 500)),
  };
}

/** Per-call capacity of one producer's sample buffer. */
export function mpCapacity(plan: MpPlan, rounds: number): number {
  return Math.max(plan.rtWarm, Math.ceil(plan.rtCalls / rounds) + 1, MP_TP_CALLS);
}

/** µs per command over all producers: the span from the earliest start to the latest end (ms), divided by every command made in it. */
export function aggregateUsPerCommand(spans: readonly (readonly [number, number])[], commands: number): number {
  let start = Infinity;
  let end = -Infinity;
  for (const [s, e] of spans) {
    start = Math.min(start, s);
    end = Math.max(end, e);
  }
  return ((end - start) * 1000) / commands;
}

interface Producer {
  worker: Worker;
  ctl: Int32Array;
  out: Float64Array;
  seq: number;
  failure?: string;
}

interface Rig {
  opened: OpenedPath;
  queue: GuestQueue;
  words: Uint32Array;
  /** The main thread's buffer (producer 0). */
  out: Float64Array;
  cap: number;
  workers: Producer[];
}

async function startRig(o: OpenedPath, cap: number, timeoutMs: number): Promise<Rig> {
  const queue = await o.vm.openQueue({ path: o.name === 'trap' ? 'trap' : 'doorbell', log2size: MP_LOG2SIZE });
  const words = new Uint32Array(4 * MP_BATCHES[MP_BATCHES.length - 1]!);
  for (let k = 0; k < words.length / 4; k++) tlbiNhVaWords(0x40000 + k, words, 4 * k);
  const rig: Rig = { opened: o, queue, words, out: new Float64Array(cap + 2), cap, workers: [] };
  try {
    for (let w = 1; w < MAX_PRODUCERS; w++) {
      const ctl = new SharedArrayBuffer(4 * P_CTL_WORDS);
      const samples = new SharedArrayBuffer(8 * (cap + 2));
      const data: MpProducerData = { queue: queue.handle, ctl, samples, cap, words, timeOrigin: performance.timeOrigin, timeoutMs };
      const { value: worker } = await startThreads('float', async () => new Worker(workerUrl('mp.worker.js'), { workerData: data }));
      const p: Producer = { worker, ctl: new Int32Array(ctl), out: new Float64Array(samples), seq: 0 };
      worker.on('message', (m: { error?: string }) => { p.failure ??= m.error; });
      worker.on('error', (e) => { p.failure ??= e.message; });
      rig.workers.push(p);
    }
  } catch (e) {
    await closeRig(rig);
    throw e;
  }
  return rig;
}

async function closeRig(rig: Rig): Promise<void> {
  for (const p of rig.workers) post(p.ctl, P_REQ, EXIT);
  await Promise.all(rig.workers.map((p) => p.worker.terminate()));
}

/** `producers` producers make `calls` calls of `batch` commands at once; blocks until all are done. Returns the producers' buffers. */
function runCell(rig: Rig, producers: number, batch: number, calls: number, timeoutMs: number): Float64Array[] {
  const active = rig.workers.slice(0, producers - 1);
  for (const p of active) {
    p.ctl[P_BATCH] = batch;
    p.ctl[P_CALLS] = calls;
    post(p.ctl, P_REQ, ++p.seq);
  }
  produce(rig.queue, rig.words, batch, calls, rig.out, rig.cap, 0, timeoutMs);
  // Every call may take the per-call timeout; the producers run at once.
  const budget = timeoutMs * calls + 1000;
  for (const p of active) {
    if (!awaitWord(p.ctl, P_DONE, p.seq, budget)) throw new BenchTimeoutError(`mp ${rig.opened.name}: a producer did not finish ${calls} calls within ${budget} ms`);
    if (Atomics.load(p.ctl, P_DONE) < 0) throw new Error(`mp ${rig.opened.name}: a producer failed: ${p.failure ?? '(no message yet)'}`);
  }
  return [rig.out, ...active.map((p) => p.out)];
}

interface Cell {
  rig: Rig;
  producers: number;
  batch: number;
  kept: number[];
}

function runRound(cells: Cell[], plan: MpPlan, profile: Profile, r: number): void {
  const rtChunk = chunkSize(plan.rtCalls, profile.rounds, r);
  const tpChunk = chunkSize(plan.tpSamples, profile.rounds, r);
  for (const c of cells) {
    runCell(c.rig, c.producers, c.batch, c.batch === 1 ? plan.rtWarm : 1, profile.timeoutMs);
    if (c.batch === 1) {
      for (const out of runCell(c.rig, c.producers, 1, rtChunk, profile.timeoutMs)) c.kept.push(...out.subarray(0, rtChunk));
      continue;
    }
    for (let s = 0; s < tpChunk; s++) {
      const outs = runCell(c.rig, c.producers, c.batch, MP_TP_CALLS, profile.timeoutMs);
      const spans = outs.map((o) => [o[c.rig.cap]!, o[c.rig.cap + 1]!] as const);
      c.kept.push(aggregateUsPerCommand(spans, c.producers * MP_TP_CALLS * c.batch));
    }
  }
}

async function runMp(ctx: ScenarioContext): Promise<ScenarioRun> {
  const { profile, progress } = ctx;
  const notes: string[] = [];
  const plan = mpPlan(profile);
  const cap = mpCapacity(plan, profile.rounds);
  const opened = await openPaths(ctx, notes);
  const rigs: Rig[] = [];
  try {
    for (const o of opened) rigs.push(await startRig(o, cap, profile.timeoutMs));
    const cells = rigs.map((rig) => MP_PRODUCERS.flatMap((producers) => MP_BATCHES.map((batch): Cell => ({ rig, producers, batch, kept: [] }))));
    for (let r = 0; r < profile.rounds; r++) {
      // Paths rotated per round, as runInterleaved does: drift lands on every path alike.
      for (let k = 0; k < rigs.length; k++) {
        const p = (k + r) % rigs.length;
        progress.update(`[bench] mp: round ${r + 1}/${profile.rounds} ${rigs[p]!.opened.name}`);
        runRound(cells[p]!, plan, profile, r);
      }
    }
    const measured: MeasuredRow[] = cells.flat().map((c) => {
      const params = {
        producers: c.producers, threads: mpThreads(c.rig.opened.name, c.producers), batch: c.batch, cs: 'sev',
        measure: c.batch === 1 ? 'call' : 'command',
      };
      return { row: latencyRow('mp', c.rig.opened.name, params, Float64Array.from(c.kept), null).row };
    });
    const cpus = os.cpus().length;
    notes.push(`producer 0 is the main thread, the others are workers on GuestQueue.attach; threads = producers + server threads (kernel thread, and the VMM on trap) that may be runnable at once, on ${cpus} CPUs: above ${cpus} they time-slice, so those rows measure oversubscription as much as the protocol`);
    notes.push(`batch=1 rows are per-call round trips pooled over the producers; batch=64 rows are aggregate µs per command (span of ${MP_TP_CALLS} calls per producer over all their commands), ops/s = commands/s of all producers`);
    return { measured, notes };
  } finally {
    for (const rig of rigs) await closeRig(rig);
    await closeAll(opened);
  }
}

export const mp: ScenarioDef = {
  name: 'mp',
  title: `Several producers on one queue: ${MP_PRODUCERS.join(', ')} producers (main thread + workers), round trip per call and aggregate batch-64 throughput; on 2 cores extra producers compete with the server threads (params.threads)`,
  run: runMp,
};
