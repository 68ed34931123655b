// Invalidate-then-translate across threads: once submit (with a CMD_SYNC)
// returns, a DMA agent on another thread never sees the old translation again.
import { describe, expect, it } from 'vitest';
import { ACCESS } from '../src/model/smmu.ts';
import { IOVA, evalWorker, makeVm, mapPage, outcome, pageOfPa, withHost } from './doorbell-helpers.ts';

// Words of the test's control SAB.
const EPOCH = 0;
const STOP = 1;
const SEEN = 2;
const VIOLATIONS = 3;
const FIRST_BAD = 4;
const TRANSLATIONS = 5;

// The agent reads EPOCH before each request: a request issued after the main
// thread published epoch e (which it does after submit returned) must see a
// page >= e. Pages are numbered by epoch.
const AGENT = `
  const ctl = new Int32Array(data.ctl);
  const dma = lib.DmaAgent.attach(data.dma);
  while (Atomics.load(ctl, ${STOP}) === 0) {
    const e = Atomics.load(ctl, ${EPOCH});
    const fault = dma.translateRaw(data.psid, -1, data.iova, ${ACCESS.READ});
    if (fault !== 0) throw new Error('translation fault ' + fault);
    const page = (dma.lastPa - data.ramBase - data.dataIpa) / 4096;
    if (page < e && Atomics.add(ctl, ${VIOLATIONS}, 1) === 0) Atomics.store(ctl, ${FIRST_BAD}, e * 65536 + page);
    Atomics.add(ctl, ${TRANSLATIONS}, 1);
    if (Atomics.load(ctl, ${SEEN}) < e) { Atomics.store(ctl, ${SEEN}, e); Atomics.notify(ctl, ${SEEN}); }
  }
`;

describe('invalidate then translate, DMA agent on another thread', () => {
  for (const spinUs of [0, 50]) {
    it(`never sees the old page after submit returns (spinUs ${spinUs})`, async () => {
      await withHost({ spinUs }, async (host) => {
        const t = await makeVm(host, 1, 0x10);
        const q = await t.vm.openQueue({ log2size: 8 });
        const dma = await host.dma();
        mapPage(t, IOVA, 0);

        // The control: without the TLBI the cached translation survives the PTE change.
        expect(pageOfPa(t, dma.translate(t.psid, -1, IOVA).pa)).toBe(0);
        mapPage(t, IOVA, 1);
        expect(pageOfPa(t, dma.translate(t.psid, -1, IOVA).pa)).toBe(0);
        q.invalidateRange(1, IOVA, 4096);
        expect(pageOfPa(t, dma.translate(t.psid, -1, IOVA).pa)).toBe(1);

        const ctl = new Int32Array(new SharedArrayBuffer(64));
        Atomics.store(ctl, EPOCH, 1);
        const agentDma = await host.dma();
        const w = evalWorker(AGENT, {
          ctl: ctl.buffer, dma: agentDma.handle, psid: t.psid, iova: IOVA, ramBase: t.vm.ramBase, dataIpa: 0x10000,
        });
        const done = outcome(w);
        const rounds = 300;
        const modes = ['none', 'sev', 'irq'] as const;
        for (let e = 2; e <= rounds; e++) {
          mapPage(t, IOVA, e);
          const cs = modes[e % 3]!;
          if (e % 5 === 0) await q.invalidateRangeAsync(1, IOVA, 4096, 4096, true, { cs });
          else q.invalidateRange(1, IOVA, 4096, 4096, true, { cs });
          Atomics.store(ctl, EPOCH, e);
          // Progress, not timing: the agent has translated at least once in this epoch.
          while (Atomics.load(ctl, SEEN) < e) {
            expect(Atomics.wait(ctl, SEEN, Atomics.load(ctl, SEEN), 10_000)).not.toBe('timed-out');
          }
        }
        Atomics.store(ctl, STOP, 1);
        const out = await done;
        await w.terminate();
        expect(out.error).toBeUndefined();
        expect(Atomics.load(ctl, VIOLATIONS), `first stale: epoch/page ${Atomics.load(ctl, FIRST_BAD)}`).toBe(0);
        expect(Atomics.load(ctl, TRANSLATIONS)).toBeGreaterThanOrEqual(rounds - 1);
      });
    });
  }
});
