// The trap path as a user meets it: straight from the built package entry
// (no deep import registers it), from a guest worker that only attached the
// handle, and gone after host.stop() (no VMM thread left behind).
import { describe, expect, it } from 'vitest';
import { CTL_STATE, Q_CONS, SERVER_STATE, VMM_CTL } from '../src/layout.ts';
import { LIB, evalWorker, outcome } from './doorbell-helpers.ts';

type Lib = typeof import('../src/index.ts');

describe('trap path wiring', () => {
  it('works from the package entry and from a guest worker; host.stop() stops the VMM thread', async () => {
    const lib = (await import(LIB)) as Lib;
    const host = await lib.startHost();
    try {
      const vm = await host.createVm({ vmid: 3, streams: [{ vsid: 0, psid: 0x10 }] });
      const q = await vm.openQueue({ path: 'trap', log2size: 4 });
      expect(q.path).toBe('trap');
      q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'sev' });
      expect(Atomics.load(host.i32, q.handle.regs + Q_CONS)).toBe(2);
      // A guest vCPU thread that did nothing but attach the handle.
      const w = evalWorker(`
        const q = lib.GuestQueue.attach(data.queue);
        q.submit([{ op: 'TLBI_NH_ASID', asid: 2 }, { op: 'ATC_INV', sid: 0, size: 52 }], { cs: 'sev' });
        return q.state().cons;
      `, { queue: q.handle });
      const out = await outcome(w);
      await w.terminate();
      expect(out.error).toBeUndefined();
      expect(out.result).toBe(5);
      expect(Atomics.load(host.i32, VMM_CTL + CTL_STATE)).toBe(SERVER_STATE.RUNNING);
    } finally {
      await host.stop();
    }
    expect(Atomics.load(host.i32, VMM_CTL + CTL_STATE)).toBe(SERVER_STATE.DEAD);
  });

  it('trap mailboxes come from the host allocator: DMA agents made before and after never collide with them', async () => {
    const lib = (await import(LIB)) as Lib;
    const host = await lib.startHost();
    try {
      const vm = await host.createVm({ vmid: 1, streams: [{ vsid: 0, psid: 0x10 }] });
      const before = await host.dma();
      const q1 = await vm.openQueue({ path: 'trap', log2size: 4 });
      const after = await host.dma();
      const q2 = await vm.openQueue({ path: 'trap', log2size: 4 });
      const ids = [before.handle.id, after.handle.id, ...[q1, q2].map((q) => (q.handle.extra as { trap: { id: number } }).trap.id)];
      expect(new Set(ids).size).toBe(4);
      // Both kinds still work: a translation (kernel thread) and trapped writes (VMM).
      expect(after.translate(0x10, -1, 0x1000).fault).not.toBe(0); // nothing attached: a fault, but an answer
      q1.submit([{ op: 'TLBI_NH_ALL' }]);
      q2.submit([{ op: 'TLBI_NH_ALL' }]);
      expect([q1.state().cons, q2.state().cons]).toEqual([2, 2]);
    } finally {
      await host.stop();
    }
  });
});
