// A dead kernel thread never leaves a waiter hanging: it gets
// KernelThreadDeadError (carrying PROD/CONS/ERR) well within its timeout.
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { KernelThreadDeadError, ServerDeadError } from '../src/waiter.ts';
import { Q_PROD } from '../src/layout.ts';
import { evalWorker, makeVm, outcome, thrown, withHost } from './doorbell-helpers.ts';

const WAITER = `
  const q = lib.GuestQueue.attach(data.queue);
  post({ submitting: true });
  q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: data.cs, timeoutMs: 30000 });
  return 'completed';
`;

describe('killing the kernel thread mid-wait', () => {
  for (const cs of ['sev', 'irq', 'none'] as const) {
    it(`worker waiter (cs ${cs}), kernel thread terminated from the main thread`, async () => {
      // Each command takes 20 s in the kernel thread, so the waiter is surely waiting when the thread dies.
      await withHost({ spinUs: 0, injectDelayUs: 20_000_000 }, async (host) => {
        const t = await makeVm(host, 1, 0x10);
        const q = await t.vm.openQueue({ log2size: 4 });
        const w = evalWorker(WAITER, { queue: q.handle, cs });
        const done = outcome(w);
        await once(w, 'message');
        // The command is published: the kernel thread is executing it (for 20 s).
        while (Atomics.load(host.i32, q.handle.regs + Q_PROD) === 0) await new Promise((r) => setImmediate(r));
        await host.terminateKernelThread();
        const out = await done;
        await w.terminate();
        expect(out.error?.name).toBe('KernelThreadDeadError');
        expect(out.error?.message).toMatch(/PROD=0x2 CONS=0x0/);
      });
    });
  }

  it('main-thread waiter: the kernel thread dies without a trace; the stale heartbeat gives the error', async () => {
    await withHost({ spinUs: 0, heartbeatMs: 10, staleMs: 300 }, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      const q = await t.vm.openQueue({ log2size: 4 });
      host.crashKernelThreadOnNextPass();
      const err = thrown(() => q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'sev', timeoutMs: 20_000 }));
      expect(err).toBeInstanceOf(KernelThreadDeadError);
      expect((err as KernelThreadDeadError).prod).toBe(2);
      // The DMA agents' mailboxes fail the same way.
      const dma = await host.dma().catch((e: Error) => e);
      expect(dma).toBeInstanceOf(Error);
    });
  });

  it('host.stop() with a waiter pending: the waiter gets an error, no worker stays', async () => {
    const t0 = { w: null as null | import('node:worker_threads').Worker };
    await withHost({ spinUs: 0, injectDelayUs: 20_000_000 }, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      const q = await t.vm.openQueue({ log2size: 4 });
      const dma = await host.dma();
      t0.w = evalWorker(WAITER, { queue: q.handle, cs: 'sev' });
      const done = outcome(t0.w);
      await once(t0.w, 'message');
      while (Atomics.load(host.i32, q.handle.regs + Q_PROD) === 0) await new Promise((r) => setImmediate(r));
      await host.stop();
      const out = await done;
      expect(out.error?.name).toBe('KernelThreadDeadError');
      expect(() => dma.translate(0x10, -1, 0)).toThrow(ServerDeadError);
    });
    await t0.w!.terminate();
  });
});
