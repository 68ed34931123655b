// A guest vCPU running dma_map_benchmark's unmap half on its own vCMDQ: per
// unmap, the mapping is made (untimed) and translated by the DMA agent, then
// the timed part is the guest driver's unmap: clear the leaf PTEs, then
// invalidateRange (range TLBI or per page, then CMD_SYNC). The first unmap of
// each request is checked: afterwards every page must fault for the device.
import { parentPort, workerData } from 'node:worker_threads';
import { GuestQueue } from '../src/guest.ts';
import '../src/trap/transport.ts'; // registers the 'trap' transport in this thread
import { BenchTimeoutError } from './types.ts';
import {
  D_DONE, D_EXPECT_FAULT, D_PAGES, D_REQ, EXIT, V_COUNT, V_DONE, V_FROM, V_PAGES, V_REQ, awaitWord, post, type UnmapVcpuData,
} from './unmap-protocol.ts';

const data = workerData as UnmapVcpuData;
const ctl = new Int32Array(data.ctl);
const samples = new Float64Array(data.samples);
const mem = new Int32Array(data.queue.sab);
const q = GuestQueue.attach(data.queue);
const opts = { cs: 'sev' as const, timeoutMs: data.timeoutMs };
const descW = data.descPa.map((pa) => pa >>> 2);
let dmaSeq = 0;

function dma(pages: number, expectFault: boolean): void {
  ctl[D_PAGES] = pages;
  ctl[D_EXPECT_FAULT] = expectFault ? 1 : 0;
  const seq = ++dmaSeq;
  post(ctl, D_REQ, seq);
  if (!awaitWord(ctl, D_DONE, seq, data.timeoutMs)) throw new BenchTimeoutError(`DMA agent: no answer within ${data.timeoutMs} ms`);
  if (Atomics.load(ctl, D_DONE) < 0) throw new Error('DMA agent failed (its message has the reason)');
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
      Atomics.wait(ctl, V_REQ, seq, 100);
      continue;
    }
    seen = seq;
    const pages = ctl[V_PAGES]!;
    const count = ctl[V_COUNT]!;
    const from = ctl[V_FROM]!;
    for (let i = 0; i < count; i++) {
      mapPtes(pages);
      dma(pages, false);
      samples[from + i] = unmapOnce(pages);
      if (i === 0) dma(pages, true);
    }
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
