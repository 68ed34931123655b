// A device doing DMA through the SMMU: on request, translates every page of
// the vCPU's mapping (which fills the IOTLB, so the unmap that follows has
// real entries to invalidate), or checks that every page now faults. Between
// requests it is parked in Atomics.wait (announced by D_PARKED), so it is
// never runnable inside a vCPU's timed unmap (unmap-protocol.ts).
import { parentPort, workerData } from 'node:worker_threads';
import { DmaAgent } from '../src/host.ts';
import { ACCESS } from '../src/model/smmu.ts';
import { D_DONE, D_EXPECT_FAULT, D_PAGES, D_PARKED, D_REQ, EXIT, IDLE_SLICE_MS, type DmaAgentData } from './unmap-protocol.ts';

const data = workerData as DmaAgentData;
const ctl = new Int32Array(data.ctl);
const agent = DmaAgent.attach(data.dma);
const IDLE_EXIT_MS = 120_000;

function serve(): void {
  let seen = 0;
  let idleSince = performance.now();
  for (;;) {
    const seq = Atomics.load(ctl, D_REQ);
    if (seq === EXIT) return;
    if (seq === seen) {
      Atomics.wait(ctl, D_REQ, seq, IDLE_SLICE_MS);
      if (Atomics.load(ctl, D_REQ) === seq && performance.now() - idleSince > IDLE_EXIT_MS) throw new Error('DMA agent: no request for 120 s: bench gone');
      continue;
    }
    seen = seq;
    const pages = ctl[D_PAGES]!;
    const expectFault = ctl[D_EXPECT_FAULT] !== 0;
    for (let k = 0; k < pages; k++) {
      const fault = agent.translateRaw(data.psid, -1, data.iova + k * 4096, ACCESS.READ, data.timeoutMs);
      if ((fault !== 0) !== expectFault) {
        throw new Error(expectFault ? `page ${k} still translates after its unmap returned (stale IOTLB entry)` : `page ${k} faults (${fault}) while mapped`);
      }
    }
    Atomics.store(ctl, D_DONE, seq);
    Atomics.notify(ctl, D_DONE);
    idleSince = performance.now();
    // From here to Atomics.wait: one load and a compare.
    Atomics.store(ctl, D_PARKED, seq);
  }
}

try {
  serve();
} catch (e) {
  parentPort?.postMessage({ error: e instanceof Error ? e.message : String(e) });
  Atomics.store(ctl, D_DONE, -Math.max(1, Atomics.load(ctl, D_REQ)));
  Atomics.notify(ctl, D_DONE);
}
