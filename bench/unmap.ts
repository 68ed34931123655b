// The DMA-unmap table, shaped like Linux's dma_map_benchmark output: unmap
// latency per mapping size ("granule", as its -g option: pages per map) for
// 1 and 2 guest vCPU threads, each vCPU on its own vCMDQ with its own DMA
// agent, all paths in one run, interleaved round by round.
// Inside a timed unmap only the mechanism runs: the cell's vCPUs and the
// path's server threads. The DMA agents translate between samples and are
// parked during them, the main thread waits out the cell, idle vCPUs sleep
// (unmap-protocol.ts). Each row says how many threads that leaves runnable
// (params.runnable_threads): on 2 CPUs, more than 2 means the row also
// measures the run queue.
import { Worker } from 'node:worker_threads';
import { workerUrl } from '../src/worker-url.ts';
import { startThreads } from './affinity.ts';
import { latencyRow, type MeasuredRow } from './harness.ts';
import { ASID, openPath, STREAM, type OpenedPath } from './queue-api.ts';
import type { ScenarioContext, ScenarioRun } from './scenarios.ts';
import { BenchTimeoutError, PATHS, type QueuePathName } from './types.ts';
import {
  BARRIER_WORDS, B_ARRIVED, B_AWAKE, CTL_WORDS, D_REQ, EXIT, V_COUNT, V_DONE, V_FROM, V_PAGES, V_PARTIES, V_REQ, awaitWord, post,
  type DmaAgentData, type UnmapVcpuData,
} from './unmap-protocol.ts';

export const UNMAP_GRANULES = [4096, 16384, 65536, 131072, 262144] as const;
export const UNMAP_THREADS = [1, 2] as const;
const MAX_PAGES = 262144 / 4096;
/** vCPU v's window: its own 2 MiB-aligned IOVA range (its own leaf table) and data pages. */
const WINDOW_IOVA = 0x4000_0000;
const WINDOW_STRIDE = 2 << 20;
const DATA_IPA = 0x10_0000;

/** Threads of the mechanism on each path: the kernel thread, and on the trap path the VMM too. */
export function serverThreads(name: QueuePathName): number {
  return name === 'trap' ? 2 : 1;
}

/** Threads that may be runnable inside a timed unmap of `threads` vCPUs on path `name`. */
export function runnableThreads(name: QueuePathName, threads: number): number {
  return threads + serverThreads(name);
}

interface Vcpu {
  worker: Worker;
  dma: Worker;
  ctl: Int32Array;
  samples: Float64Array;
  seq: number;
  failure?: string;
}

interface PathRig {
  opened: OpenedPath;
  vcpus: Vcpu[];
  /** The vCPUs' barrier words (unmap-protocol.ts B_*). */
  barrier: Int32Array;
}

async function startRig(name: QueuePathName, ctx: ScenarioContext, samplesPerCell: number): Promise<PathRig> {
  const opened = await openPath(name, { slowdownNs: ctx.slowdownNs });
  const vcpus: Vcpu[] = [];
  const barrierSab = new SharedArrayBuffer(BARRIER_WORDS * 4);
  try {
    const { vm, host } = opened;
    const pt = vm.pageTable();
    await vm.attachDevice({ vsid: STREAM.vsid, cd: { asid: ASID, ttb0: pt.root } });
    const read32 = (ipa: number): number => vm.memory.read32(ipa);
    for (let v = 0; v < 2; v++) {
      const iova = WINDOW_IOVA + v * WINDOW_STRIDE;
      // Map once to build the tables and learn each leaf descriptor, then unmap: nothing was translated yet.
      pt.map(iova, DATA_IPA + v * MAX_PAGES * 4096, MAX_PAGES * 4096, 3);
      const descIpa = Array.from({ length: MAX_PAGES }, (_, k) => pt.leafDescriptor(iova + k * 4096));
      const descLo = descIpa.map((d) => read32(d));
      const descHi = descIpa.map((d) => read32(d + 4));
      pt.unmap(iova, MAX_PAGES * 4096);
      const queue = v === 0 ? opened.queue : await vm.openQueue({ path: name === 'trap' ? 'trap' : 'doorbell' });
      const dmaAgent = await host.dma();
      const ctlSab = new SharedArrayBuffer(CTL_WORDS * 4);
      const samplesSab = new SharedArrayBuffer(8 * samplesPerCell);
      const ddata: DmaAgentData = { ctl: ctlSab, dma: dmaAgent.handle, psid: STREAM.psid, iova, timeoutMs: ctx.profile.timeoutMs };
      // The device is not on the vCPUs' CPU budget: it sits with the host threads.
      const { value: dma, tids: dmaTids } = await startThreads('server', async () => new Worker(workerUrl('dma.worker.js'), { workerData: ddata }));
      const vdata: UnmapVcpuData = {
        queue: queue.handle, ctl: ctlSab, barrier: barrierSab, dmaTid: dmaTids.length === 1 ? dmaTids[0]! : '', samples: samplesSab, asid: ASID, iova,
        descPa: descIpa.map((d) => vm.ramBase + d), descLo, descHi, timeoutMs: ctx.profile.timeoutMs,
      };
      const { value: worker } = await startThreads('float', async () => new Worker(workerUrl('unmap.worker.js'), { workerData: vdata }));
      const vcpu: Vcpu = { worker, dma, ctl: new Int32Array(ctlSab), samples: new Float64Array(samplesSab), seq: 0 };
      for (const w of [worker, dma]) {
        w.on('message', (m: { error?: string }) => { vcpu.failure ??= m.error; });
        w.on('error', (e) => { vcpu.failure ??= e.message; });
      }
      vcpus.push(vcpu);
    }
    return { opened, vcpus, barrier: new Int32Array(barrierSab) };
  } catch (e) {
    await closeRig({ opened, vcpus, barrier: new Int32Array(barrierSab) });
    throw e;
  }
}

async function closeRig(rig: PathRig): Promise<void> {
  for (const v of rig.vcpus) {
    post(v.ctl, V_REQ, EXIT);
    post(v.ctl, D_REQ, EXIT);
  }
  await Promise.all(rig.vcpus.flatMap((v) => [v.worker.terminate(), v.dma.terminate()]));
  await rig.opened.close();
}

/** Runs `count` unmaps of `pages` pages on the first `threads` vCPUs at once; blocks until all are done. */
function runCell(rig: PathRig, threads: number, pages: number, count: number, timeoutMs: number): void {
  const active = rig.vcpus.slice(0, threads);
  // Every vCPU is idle between cells: the barrier starts again from generation 1.
  Atomics.store(rig.barrier, B_ARRIVED, 0);
  Atomics.store(rig.barrier, B_AWAKE, 0);
  for (const v of active) {
    v.ctl[V_PAGES] = pages;
    v.ctl[V_COUNT] = count;
    v.ctl[V_FROM] = 0;
    v.ctl[V_PARTIES] = threads;
    post(v.ctl, V_REQ, ++v.seq);
  }
  // Budget: every unmap may take the per-operation timeout, plus its DMA round trips.
  const budget = timeoutMs + count * 20;
  for (const v of active) {
    if (!awaitWord(v.ctl, V_DONE, v.seq, budget)) throw new BenchTimeoutError(`unmap ${rig.opened.name}: vCPU did not finish ${count} unmaps within ${budget} ms`);
    if (Atomics.load(v.ctl, V_DONE) < 0) throw new Error(`unmap ${rig.opened.name}: vCPU failed: ${v.failure ?? '(no message yet)'}`);
  }
}

export async function runUnmap(ctx: ScenarioContext): Promise<ScenarioRun> {
  const { profile, progress } = ctx;
  // 1/25 of the latency profile per cell (200 quick, 2000 full): 10 cells per path, and before each unmap
  // the DMA agent translates every page through the kernel thread (up to 64 mailbox round trips).
  const perCell = Math.max(4 * profile.rounds, Math.round(profile.samples / 25));
  const perRound = (r: number): number => Math.floor(((r + 1) * perCell) / profile.rounds) - Math.floor((r * perCell) / profile.rounds);
  const rigs: PathRig[] = [];
  try {
    const warm = Math.max(2, Math.round(profile.rewarm / 4));
    for (const name of PATHS) rigs.push(await startRig(name, ctx, Math.max(warm, Math.ceil(perCell / profile.rounds) + 1)));
    const cells = UNMAP_THREADS.flatMap((threads) => UNMAP_GRANULES.map((granule) => ({ threads, granule })));
    const kept = rigs.map(() => cells.map((c) => new Float64Array(perCell * c.threads)));
    const filled = rigs.map(() => cells.map(() => 0));
    for (let r = 0; r < profile.rounds; r++) {
      for (let k = 0; k < rigs.length; k++) {
        const p = (k + r) % rigs.length;
        const rig = rigs[p]!;
        progress.update(`[bench] unmap: round ${r + 1}/${profile.rounds} ${rig.opened.name}`);
        cells.forEach((c, ci) => {
          const pages = c.granule / 4096;
          runCell(rig, c.threads, pages, warm, profile.timeoutMs);
          const n = perRound(r);
          runCell(rig, c.threads, pages, n, profile.timeoutMs);
          const out = kept[p]![ci]!;
          for (let t = 0; t < c.threads; t++) {
            out.set(rig.vcpus[t]!.samples.subarray(0, n), filled[p]![ci]!);
            filled[p]![ci]! += n;
          }
        });
      }
    }
    const measured: MeasuredRow[] = [];
    rigs.forEach((rig, p) => cells.forEach((c, ci) => {
      const params = { granule: c.granule, threads: c.threads, runnable_threads: runnableThreads(rig.opened.name, c.threads) };
      const m = latencyRow('unmap', rig.opened.name, params, kept[p]![ci]!.subarray(0, filled[p]![ci]!), null);
      measured.push({ row: m.row });
    }));
    return {
      measured,
      notes: [
        'unmap: each sample = clear the leaf PTEs + invalidateRange (range TLBI, RIL) + CMD_SYNC(SEV), after a DMA agent translated every page and parked; the first unmap per request is checked to fault afterwards',
        'unmap: runnable_threads = the cell\'s vCPUs + the path\'s server threads (kernel thread; + VMM on trap), the DMA agents parked; rows above the CPU count measure the run queue too',
      ],
    };
  } finally {
    for (const rig of rigs) await closeRig(rig);
  }
}
