// Command errors as hardware: the queue stops at the faulting command with
// CONS on it and CERROR_ILL, earlier commands executed, later ones not; after
// the guest's skip + GERRORN ack the rest executes. Other VMs keep running.
import { describe, expect, it } from 'vitest';
import type { Command } from '../src/codec.ts';
import { QueueError } from '../src/guest.ts';
import { KTHREAD_CTL, Q_CONS, Q_PROD, kick, markPending } from '../src/layout.ts';
import { queueIncProd } from '../src/queue.ts';
import { ASID, IOVA, makeVm, mapPage, pageOfPa, thrown, withHost, type TestVm } from './doorbell-helpers.ts';
import type { DmaAgent } from '../src/host.ts';

const tlbi = (page: number): Command => ({ op: 'TLBI_NH_VA', asid: ASID, addr: BigInt(IOVA + page * 4096), leaf: 1 });

/** Map IOVA pages 0..n-1 to data pages 0..n-1, prime the TLB, then remap them to n..2n-1 without invalidating. */
function staleMappings(t: TestVm, dma: DmaAgent, n: number): void {
  for (let p = 0; p < n; p++) mapPage(t, IOVA + p * 4096, p);
  for (let p = 0; p < n; p++) expect(pageOfPa(t, dma.translate(t.psid, -1, IOVA + p * 4096).pa)).toBe(p);
  for (let p = 0; p < n; p++) mapPage(t, IOVA + p * 4096, n + p);
}

/** Which IOVA pages now translate to their new page (i.e. were invalidated). */
function invalidated(t: TestVm, dma: DmaAgent, n: number): boolean[] {
  return Array.from({ length: n }, (_, p) => pageOfPa(t, dma.translate(t.psid, -1, IOVA + p * 4096).pa) === n + p);
}

const BAD: { name: string; cmd: Command | [number, number, number, number]; reason: RegExp }[] = [
  { name: 'a reserved opcode', cmd: [0x00, 0, 0, 0], reason: /Reserved/ },
  { name: 'a legal SMMU command outside the vCMDQ set (CFGI_STE)', cmd: { op: 'CFGI_STE', sid: 0, leaf: 1 }, reason: /CFGI_STE/ },
  { name: 'an ATC_INV naming a vSID the VM does not own', cmd: { op: 'ATC_INV', sid: 7, size: 52 }, reason: /vSID 0x7/ },
  { name: 'a TLBI with RES0 bits set', cmd: [0x12 | (1 << 8), ASID << 16, IOVA | 1, 0], reason: /RES0|reserved/i },
];

describe('a command error stops only its queue', () => {
  for (const bad of BAD) {
    it(`${bad.name}: halts at its index with CERROR_ILL; skip resumes; VM 2 unaffected`, async () => {
      await withHost({ spinUs: 0 }, async (host) => {
        const a = await makeVm(host, 1, 0x10);
        const b = await makeVm(host, 2, 0x20);
        const qa = await a.vm.openQueue({ log2size: 6 });
        const qb = await b.vm.openQueue({ log2size: 6 });
        const dma = await host.dma();
        staleMappings(a, dma, 4);
        staleMappings(b, dma, 2);

        // pages 0, 1 | bad | pages 2, 3, then the CMD_SYNC.
        const words = new Uint32Array(5 * 4);
        const cmds = [tlbi(0), tlbi(1), tlbi(0), tlbi(2), tlbi(3)];
        const { encodeCommand } = await import('../src/codec.ts');
        cmds.forEach((c, k) => {
          const [w0, w1] = encodeCommand(c);
          words.set([Number(w0 & 0xffffffffn), Number(w0 >> 32n), Number(w1 & 0xffffffffn), Number(w1 >> 32n)], 4 * k);
        });
        if (Array.isArray(bad.cmd)) words.set(bad.cmd, 8);
        else {
          const [w0, w1] = encodeCommand(bad.cmd);
          words.set([Number(w0 & 0xffffffffn), Number(w0 >> 32n), Number(w1 & 0xffffffffn), Number(w1 >> 32n)], 8);
        }
        const start = qa.prodValue;
        const err = thrown(() => qa.submitWords(words, 5, 'sev', 10_000));
        expect(err).toBeInstanceOf(QueueError);
        const qe = err as QueueError;
        expect(qe.cerror).toBe('ILL');
        expect(qe.err).toBe(1);
        expect(qe.index).toBe(queueIncProd(start, 2, 6));
        expect(qe.reason).toMatch(bad.reason);
        expect(invalidated(a, dma, 4)).toEqual([true, true, false, false]);
        const st = qa.state();
        expect(st.gerror ^ st.gerrorn).toBe(1);

        // The other VM's queue works while queue A is stopped, and A stays stopped.
        qb.submit([tlbi(0), tlbi(1)], { cs: 'irq' });
        expect(invalidated(b, dma, 2)).toEqual([true, true]);
        // Behind another call's error a sync waits (to its timeout); drain reports any error before its end.
        expect(() => qa.drain(10_000)).toThrow(QueueError);
        expect(invalidated(a, dma, 4)).toEqual([true, true, false, false]);

        expect(qa.skipFaultingCommand()).toBe(true);
        qa.sync('sev', 10_000);
        expect(invalidated(a, dma, 4)).toEqual([true, true, true, true]);
        expect(qa.skipFaultingCommand()).toBe(false);
        const after = qa.state();
        expect(after.gerror ^ after.gerrorn).toBe(0);
        expect(after.errors).toBe(1); // the queued sync behind the error did not raise a second one
      });
    });
  }

  it('SMMU_CMDQ_PROD is a register, never a CERROR (QEMU smmuv3_cmdq_consume): RES0 bits ignored, an overfill consumed up to the masked PROD', async () => {
    await withHost({ spinUs: 0 }, async (host) => {
      const a = await makeVm(host, 1, 0x10);
      const q = await a.vm.openQueue({ log2size: 4 });
      // Every slot of the 16-entry ring holds a legal command (8 x (TLBI + SYNC)).
      for (let k = 0; k < 8; k++) q.submit([tlbi(k)], { cs: 'sev' });
      const start = q.state();
      const waitCons = (want: number): void => {
        for (let n = 0; (q.state().cons & 31) !== want; n++) {
          expect(n).toBeLessThan(1000);
          Atomics.wait(host.i32, q.handle.regs + Q_CONS, q.state().cons, 10);
        }
      };
      // RES0 bits above WR_WRAP with the current position: nothing to consume, no error.
      Atomics.store(host.i32, q.handle.regs + Q_PROD, q.prodValue | (1 << 19));
      markPending(host.i32, KTHREAD_CTL, q.handle.qid);
      kick(host.i32, KTHREAD_CTL);
      // 20 entries claimed on a 16-entry ring (UNPREDICTABLE): consumed up to the masked PROD.
      const over = queueIncProd(q.prodValue, 20, 4);
      Atomics.store(host.i32, q.handle.regs + Q_PROD, over | (1 << 20));
      markPending(host.i32, KTHREAD_CTL, q.handle.qid);
      kick(host.i32, KTHREAD_CTL);
      waitCons(over);
      const st = q.state();
      expect(st.err).toBe(0);
      expect(st.gerror ^ st.gerrorn).toBe(0);
      expect(st.errors).toBe(0);
      expect(st.cmds - start.cmds).toBe(20);
    });
  });

  it('an MSI outside the VM toggles GERROR.MSI_CMDQ_ABT and the sync still completes', async () => {
    await withHost({ spinUs: 0 }, async (host) => {
      const a = await makeVm(host, 1, 0x10);
      const q = await a.vm.openQueue({ log2size: 4 });
      const before = q.state().cons;
      q.submit([{ op: 'CMD_SYNC', cs: 1, msiaddr: 0x7_0000_0000n, msidata: 5 }], { cs: 'sev' });
      const st = q.state();
      expect(st.cons).toBe(before + 2);
      expect((st.gerror ^ st.gerrorn) & 0x10).toBe(0x10);
      expect((st.gerror ^ st.gerrorn) & 1).toBe(0);
    });
  });

  it('the consumer copies each slot once: slot reads equal commands consumed, including a refused one', async () => {
    await withHost({ spinUs: 0 }, async (host) => {
      const a = await makeVm(host, 1, 0x10);
      const q = await a.vm.openQueue({ log2size: 8 });
      for (let k = 0; k < 10; k++) q.submit(Array.from({ length: 100 }, (_, p) => tlbi(p)), { cs: 'sev' });
      expect(() => q.submit([{ op: 'CFGI_STE', sid: 0, leaf: 1 }], { cs: 'sev' })).toThrow(QueueError);
      const st = q.state();
      // 10 x (100 + sync) consumed, then the refused CFGI_STE read once and not again while stopped.
      expect(st.cmds).toBe(10 * 101 + 1);
      expect(st.slotReads).toBe(st.cmds);
    });
  });
});
