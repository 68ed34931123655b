// kernelThreads: N (issue 15): VMs are spread over N kernel-thread workers,
// each with its own control block, doorbell, pending bitmap and SMMU model,
// all of a VM's queues, streams and DMA agents on its thread. On real
// threads: both threads serve, a translation reaches its VM's model (and is
// invalidated there), one thread's death and restart leave the other's VMs
// running, and the trap path's ioctls reach the right thread.
import { describe, expect, it, vi } from 'vitest';
import { ArgumentError } from '../src/errors.ts';
import { ServerDeadError, startHost } from '../src/index.ts';
import { CTL_STAT_PASSES, KTHREAD_CTL } from '../src/layout.ts';
import { ACCESS } from '../src/model/smmu.ts';
import { IOVA, makeVm, mapPage, pageOfPa, withHost } from './doorbell-helpers.ts';

const tlbi = (k: number) => ({ op: 'TLBI_NH_VA' as const, asid: 1, addr: BigInt(IOVA + 4096 * k), leaf: 1 });

describe('kernelThreads', () => {
  it('is checked at startHost', async () => {
    for (const kernelThreads of [0, 1.5, 65]) {
      const e = await startHost({ kernelThreads }).then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(ArgumentError);
      expect((e as ArgumentError).argument).toBe('startHost: kernelThreads');
    }
  });

  it('VMs alternate over 2 threads, each queue is served by its VM\'s thread, and a DMA agent translates through its VM\'s model', async () => {
    await withHost({ kernelThreads: 2, spinUs: 20 }, async (host) => {
      expect(host.kernelThreads).toBe(2);
      const ts = [];
      for (let k = 0; k < 4; k++) ts.push(await makeVm(host, k + 1, 0x10 + k));
      expect(ts.map((t) => t.vm.kthread)).toEqual([0, 1, 0, 1]);
      const qs = [];
      for (const t of ts) qs.push(await t.vm.openQueue({ log2size: 4 }));
      const ctls = qs.map((q) => q.handle.ctl);
      expect(ctls[0]).toBe(KTHREAD_CTL);
      expect(ctls[1]).not.toBe(KTHREAD_CTL);
      expect(ctls[2]).toBe(ctls[0]);
      expect(ctls[3]).toBe(ctls[1]);
      const before = ctls.slice(0, 2).map((c) => host.i32[c + CTL_STAT_PASSES]!);
      for (const q of qs) q.submit([tlbi(0), tlbi(1)], { cs: 'sev' });
      expect(qs.map((q) => q.state().cmds)).toEqual([3, 3, 3, 3]);
      // Each thread did the passes of its own VMs. A thread bumps CTL_STAT_PASSES
      // after pass() returns, that is after the CONS publish the guest saw, so
      // the count may still lag here: poll it (bounded), never read it once.
      await vi.waitFor(() => ctls.slice(0, 2).forEach((c, k) => expect(Atomics.load(host.i32, c + CTL_STAT_PASSES)).toBeGreaterThan(before[k]!)), { timeout: 5000, interval: 1 });

      expect((await host.dma().then(() => undefined, (e: unknown) => e) as ArgumentError).argument).toBe('dma: vmid');
      const t = ts[1]!;
      const dma = await host.dma({ vmid: t.vm.vmid });
      expect(dma.handle.ctl).toBe(ctls[1]);
      mapPage(t, IOVA, 3);
      const first = dma.translate(t.psid, -1, IOVA, ACCESS.READ);
      expect(first.fault).toBe(0);
      expect(pageOfPa(t, first.pa)).toBe(3);
      // The model as oracle: after the remap and its TLBI + CMD_SYNC on the VM's queue, no stale translation.
      mapPage(t, IOVA, 4);
      qs[1]!.submit([tlbi(0)], { cs: 'sev' });
      expect(pageOfPa(t, dma.translate(t.psid, -1, IOVA, ACCESS.READ).pa)).toBe(4);
    });
  });

  it('one thread dies: its VMs get ServerDeadError, the other thread\'s go on; restartKernelThread(1) brings only it back', async () => {
    await withHost({ kernelThreads: 2, heartbeatMs: 10, staleMs: 2000 }, async (host) => {
      const a = await makeVm(host, 1, 0x10);
      const b = await makeVm(host, 2, 0x11);
      const qa = await a.vm.openQueue({ log2size: 4 });
      const qb = await b.vm.openQueue({ log2size: 4 });
      await host.terminateKernelThread(1);
      expect(await qb.submitAsync([tlbi(0)], { timeoutMs: 5000 }).then(() => 'ok', (e: unknown) => e)).toBeInstanceOf(ServerDeadError);
      await qa.submitAsync([tlbi(0)], { timeoutMs: 5000 });
      await expect(b.vm.openQueue()).rejects.toBeInstanceOf(ServerDeadError);
      const served = host.i32[KTHREAD_CTL + CTL_STAT_PASSES]!;
      await host.restartKernelThread(1);
      // Thread 0 was not restarted: its counters run on.
      expect(host.i32[KTHREAD_CTL + CTL_STAT_PASSES]).toBeGreaterThanOrEqual(served);
      await qb.submitAsync([tlbi(1)], { timeoutMs: 5000 });
      await qa.submitAsync([tlbi(1)], { timeoutMs: 5000 });
      // The command published to the dead thread ran after the restart, once.
      expect(qb.state().cmds).toBe(4);
      expect(qa.state().cmds).toBe(4);
      expect(() => host.restartKernelThread(2)).toThrow(/restartKernelThread: kthread must be an integer in 0\.\.1/);
    });
  });

  it('autoRestart brings back the thread that crashed; stop() ends every thread', async () => {
    const host = await startHost({ kernelThreads: 2, autoRestart: 1, heartbeatMs: 10, staleMs: 2000 });
    const a = await makeVm(host, 1, 0x10);
    const b = await makeVm(host, 2, 0x11);
    const qb = await b.vm.openQueue({ log2size: 4 });
    host.crashKernelThreadOnNextPass('throw', 1);
    expect(await qb.submitAsync([tlbi(0)], { timeoutMs: 5000 }).then(() => 'ok', (e: unknown) => e)).toBeInstanceOf(ServerDeadError);
    // The submission saw STATE=DEAD (the dying thread's own store); the host restarts once the worker's exit reaches it.
    while (host.lastRestart === null) await new Promise((r) => setImmediate(r)); // bounded by the test timeout
    await host.lastRestart;
    await qb.submitAsync([tlbi(1)], { timeoutMs: 5000 });
    expect(qb.state().cmds).toBe(4);
    const qa = await a.vm.openQueue({ log2size: 4 });
    await qa.submitAsync([tlbi(0)], { timeoutMs: 5000 });
    expect(await host.stop()).toEqual({ killed: [] });
    await expect(qa.submitAsync([tlbi(0)], { timeoutMs: 1000 })).rejects.toBeInstanceOf(ServerDeadError);
    await expect(qb.submitAsync([tlbi(0)], { timeoutMs: 1000 })).rejects.toBeInstanceOf(ServerDeadError);
  });

  it('a hw queue is served by its VM\'s thread, and the mid-pass crash hook names the thread: thread 1 dies after its 2nd command, thread 0 goes on, restartKernelThread(1) re-runs exactly the unpublished ones', async () => {
    await withHost({ kernelThreads: 2, cmdqv: true, heartbeatMs: 10, staleMs: 2000 }, async (host) => {
      const a = await makeVm(host, 1, 0x10);
      const b = await makeVm(host, 2, 0x11);
      const qa = await a.vm.openQueue({ log2size: 4 });
      const qb = await b.vm.openQueue({ path: 'hw', log2size: 4 });
      expect([qa.handle.ctl, qb.handle.ctl]).toEqual([KTHREAD_CTL, host.kthreadCtl(1)]);
      const none = { cs: 'none', timeoutMs: 5000 } as const;
      await qb.submitAsync([tlbi(0)], none);
      expect(qb.state().cmds).toBe(2);
      expect(() => host.crashKernelThreadAfter(1, 'exit', 2)).toThrow(/crashKernelThreadAfter: kthread/);
      host.crashKernelThreadAfter(2, 'exit', 1);
      // Thread 0 is not armed: its queue runs on.
      await qa.submitAsync([tlbi(0)], { timeoutMs: 5000 });
      expect(await qb.submitAsync([tlbi(1), tlbi(2), tlbi(3)], none).then(() => 'ok', (e: unknown) => e)).toBeInstanceOf(ServerDeadError);
      // TLBIs 1 and 2 executed, none published as consumed (no CMD_SYNC passed).
      expect(qb.state()).toMatchObject({ cons: 2, cmds: 4 });
      await qa.submitAsync([tlbi(1)], { timeoutMs: 5000 });
      await host.restartKernelThread(1);
      qb.drain(5000);
      // The restart resumed at CONS: the two unpublished TLBIs ran again, then the rest, once.
      expect(qb.state()).toMatchObject({ cons: 6, cmds: 8, syncs: 2, errors: 0 });
      expect(qa.state()).toMatchObject({ cmds: 4, errors: 0 });
    });
  });

  for (const path of ['trap', 'trap-inline'] as const) it(`the ${path} path's ioctls reach the thread of their VM`, async () => {
    await withHost({ kernelThreads: 2 }, async (host) => {
      await makeVm(host, 1, 0x10);
      const b = await makeVm(host, 2, 0x11);
      expect(b.vm.kthread).toBe(1);
      const q = await b.vm.openQueue({ path, log2size: 4 });
      mapPage(b, IOVA, 5);
      const dma = await host.dma({ vmid: 2 });
      expect(pageOfPa(b, dma.translate(b.psid, -1, IOVA, ACCESS.READ).pa)).toBe(5);
      mapPage(b, IOVA, 6);
      await q.submitAsync([tlbi(0)], { timeoutMs: 5000 });
      expect(q.state().errors).toBe(0);
      expect(pageOfPa(b, dma.translate(b.psid, -1, IOVA, ACCESS.READ).pa)).toBe(6);
    });
  });
});
