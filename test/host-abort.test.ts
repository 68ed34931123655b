// Cancellation and disposal (issue 14): createVm, openQueue and dma take an
// AbortSignal; an abort before the call or while it waits for the kernel
// thread rejects with the signal's reason and leaves the host usable.
// Host[Symbol.asyncDispose] is stop().
import { describe, expect, it } from 'vitest';
import { Q_CONS } from '../src/layout.ts';
import { startHost, type Host, type Vm } from '../src/index.ts';
import { ServerDeadError } from '../src/waiter.ts';
import { makeVm, withHost } from './doorbell-helpers.ts';

const REASON = { why: 'user gave up' };

/** A host (with VM 2 made) whose kernel thread is busy executing one slow command (1 s), so control messages wait behind it. */
async function busyHost(fn: (host: Host, vm2: Vm, busy: () => boolean) => Promise<void>): Promise<void> {
  await withHost({ injectDelayUs: 1_000_000 }, async (host) => {
    const t = await makeVm(host, 1, 0x10);
    const vm2 = await host.createVm({ vmid: 2, streams: [] });
    const q = await t.vm.openQueue({ log2size: 4 });
    q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { sync: false });
    await fn(host, vm2, () => Atomics.load(host.i32, q.handle.regs + Q_CONS) === 0);
  });
}

describe('AbortSignal', () => {
  it('aborted before the call: createVm, openQueue and dma reject with the reason and allocate nothing', async () => {
    await withHost({}, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      const signal = AbortSignal.abort(REASON);
      const top = host.phys.top;
      const queues = host.queuesLeft;
      await expect(host.createVm({ vmid: 2, streams: [{ vsid: 0, psid: 0x20 }], signal })).rejects.toBe(REASON);
      await expect(t.vm.openQueue({ signal })).rejects.toBe(REASON);
      await expect(host.dma({ signal })).rejects.toBe(REASON);
      expect(host.phys.top).toBe(top);
      expect(host.queuesLeft).toBe(queues);
      // The VMID and pSID are still free.
      expect((await host.createVm({ vmid: 4, streams: [{ vsid: 0, psid: 0x20 }] })).vmid).toBe(4);
    });
  });

  it('aborted while the kernel thread is busy: createVm rejects with the reason at once, and the VM is undone once it answers', async () => {
    await busyHost(async (host, _vm2, busy) => {
      const ac = new AbortController();
      const p = host.createVm({ vmid: 4, streams: [{ vsid: 0, psid: 0x20 }], signal: ac.signal });
      ac.abort(REASON);
      await expect(p).rejects.toBe(REASON);
      expect(busy()).toBe(true); // rejected before the kernel thread answered
      // Control messages are answered in order: once these two are answered, the undo (removeVm) has been too.
      await host.createVm({ vmid: 3, streams: [] });
      await host.dma();
      expect((await host.createVm({ vmid: 4, streams: [{ vsid: 0, psid: 0x20 }] })).vmid).toBe(4);
    });
  });

  it('aborted while the kernel thread is busy: openQueue and dma reject with the reason at once', async () => {
    await busyHost(async (host, vm2, busy) => {
      const ac = new AbortController();
      const q = vm2.openQueue({ signal: ac.signal });
      const d = host.dma({ signal: ac.signal });
      ac.abort(REASON);
      await expect(q).rejects.toBe(REASON);
      await expect(d).rejects.toBe(REASON);
      expect(busy()).toBe(true);
    });
  });
});

describe('Host[Symbol.asyncDispose]', () => {
  it('stops the host (what `await using` calls at the end of the scope)', async () => {
    const host = await startHost();
    await host[Symbol.asyncDispose]();
    await expect(host.dma()).rejects.toBeInstanceOf(ServerDeadError);
  });

  it('a stop right after start finds the kernel thread running: it exits by itself, nothing is terminated', async () => {
    // The thread used to store RUNNING after answering "started", over the STOPPING of an immediate stop().
    const host = await startHost();
    expect(await host.stop()).toEqual({ killed: [] });
  });
});
