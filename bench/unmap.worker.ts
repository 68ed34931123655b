// A guest vCPU running dma_map_benchmark's unmap half on its own vCMDQ: per
// unmap, the mapping is made (untimed) and translated by the DMA agent, then
// the timed part is the guest driver's unmap: clear the leaf PTEs, then
// invalidateRange (range TLBI or per page, then CMD_SYNC). The first unmap of
// each request is checked: afterwards every page must fault for the device.
// The timed unmap starts only once the agent is parked and every vCPU of the
// cell is at the same point, and no agent runs again until every vCPU's
// unmap is over (the barriers of unmap-protocol.ts).
import { parentPort, workerData } from 'node:worker_threads';
import { GuestQueue } from '../src/guest.ts';
import '../src/trap/transport.ts'; // registers the 'trap' transport in this thread
import { BenchTimeoutError } from './types.ts';
import {
  D_DONE, D_EXPECT_FAULT, D_PAGES, D_REQ, EXIT, IDLE_SLICE_MS, V_COUNT, V_DONE, V_FROM, V_PAGES, V_PARTIES, V_REQ,
  awaitParked, awaitWord, barrier, post, type UnmapVcpuData,
} from './unmap-protocol.ts';

const data = workerData as UnmapVcpuData;
const ctl = new Int32Array(data.ctl);
const samples = new Float64Array(data.samples);
const bar = new Int32Array(data.barrier);
const mem = new Int32Array(data.queue.sab);
const q = GuestQueue.attach(data.queue);
const opts = { cs: 'sev' as const, timeoutMs: data.timeoutMs };
const descW = data.descPa.map((pa) => pa >>> 2);
let dmaSeq = 0;

/** The agent's translations of the window (or the check that every page faults); returns once the agent is parked again. */
function dma(pages: number, expectFault: boolean): void {
  ctl[D_PAGES] = pages;
  ctl[D_EXPECT_FAULT] = expectFault ? 1 : 0;
  const seq = ++dmaSeq;
  post(ctl, D_REQ, seq);
  if (!awaitWord(ctl, D_DONE, seq, data.timeoutMs)) throw new BenchTimeoutError(`DMA agent: no answer within ${data.timeoutMs} ms`);
  if (Atomics.load(ctl, D_DONE) < 0) throw new Error('DMA agent failed (its message has the reason)');
  if (!awaitParked(ctl, seq, data.dmaTid, data.timeoutMs)) throw new BenchTimeoutError(`DMA agent: not parked within ${data.timeoutMs} ms of its answer`);
}

/** Every vCPU of the request at the same point (generation `gen`), or a timeout. */
function together(parties: number, gen: number): void {
  if (!barrier(bar, parties, gen, data.timeoutMs)) throw new BenchTimeoutError(`unmap barrier ${gen}: the other vCPU did not arrive within ${data.timeoutMs} ms`);
}

/** Guest writes its PTEs: valid word last when mapping, first when clearing (break-before-make). */
function mapPtes(pages: number): void {
  for (let k = 0; k < pages; k++) {
    Atomics.store(mem, descW[k]! + 1, data.descHi[k]!);
    Atomics.store(mem, descW[k]!, data.descLo[k]!);
  }
}

function unmapOnce(pages: number): number {
  const t0 = performance.now();
  for (let k = 0; k < pages; k++) {
    Atomics.store(mem, descW[k]!, 0);
    Atomics.store(mem, descW[k]! + 1, 0);
  }
  q.invalidateRange(data.asid, data.iova, pages * 4096, 4096, true, opts);
  return (performance.now() - t0) * 1000;
}

function serve(): void {
  let seen = 0;
  for (;;) {
    const seq = Atomics.load(ctl, V_REQ);
    if (seq === EXIT) return;
    if (seq === seen) {
      Atomics.wait(ctl, V_REQ, seq, IDLE_SLICE_MS);
      continue;
    }
    seen = seq;
    const pages = ctl[V_PAGES]!;
    const count = ctl[V_COUNT]!;
    const from = ctl[V_FROM]!;
    const parties = ctl[V_PARTIES]!;
    let gen = 0;
    for (let i = 0; i < count; i++) {
      if (i === 1) dma(pages, true); // the check of unmap 0, before the window is mapped again
      mapPtes(pages);
      dma(pages, false);
      together(parties, ++gen);
      samples[from + i] = unmapOnce(pages);
      together(parties, ++gen);
    }
    if (count === 1) dma(pages, true);
    Atomics.store(ctl, V_DONE, seq);
    Atomics.notify(ctl, V_DONE);
  }
}

try {
  serve();
} catch (e) {
  parentPort?.postMessage({ error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
  Atomics.store(ctl, V_DONE, -Math.max(1, Atomics.load(ctl, V_REQ)));
  Atomics.notify(ctl, V_DONE);
}
