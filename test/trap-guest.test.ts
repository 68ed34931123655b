// A guest in its own thread driving the trap path the way a VMM author's
// guest would: its stream table (STRTAB_BASE, a trapped write) and a
// CFGI_STE that the VMM turns into a new device configuration; and a queue
// moved between the vCMDQ and the trap path mid-stream.
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { PathSwitchError, QueueError, startHost, type Host } from '../src/index.ts';
import { Q_CONS, Q_PROD } from '../src/layout.ts';
import { STE_CFG } from '../src/model/structs.ts';
import { ASID, IOVA, evalWorker, makeVm, mapPage, outcome, pageOfPa, thrown } from './doorbell-helpers.ts';
import { TRAP_PATHS, kernelCounter, trapStats } from './trap-helpers.ts';

let host: Host | undefined;
afterEach(async () => {
  await host?.stop();
  host = undefined;
});

describe.each(TRAP_PATHS)('CFGI_STE from a guest thread, %s', (path) => {
  it('the device follows the guest vSTE only once the guest issues CFGI_STE through the trapped CMDQ', async () => {
    host = await startHost();
    const t = await makeVm(host, 2, 0x10); // vSID 0 attached at boot: CD (ASID 1) -> table mapping IOVA to page 0
    mapPage(t, IOVA, 0);
    const q = await t.vm.openQueue({ path, log2size: 4 });
    const dma = await host.dma();
    const kernel = await kernelCounter(host);
    const page = () => pageOfPa(t, dma.translate(t.psid, -1, IOVA).pa);
    expect(page()).toBe(0);
    // The guest's next configuration: a new table (IOVA -> page 1) under ASID 2, and room for its stream table.
    const pt2 = t.vm.pageTable();
    pt2.map(IOVA, 0x10000 + 4096, 4096, 3);
    const strtab = t.vm.alloc(64 * 4, 64);
    const cdTable = t.vm.alloc(64, 64);
    const w = evalWorker(`
      const { parentPort } = require('node:worker_threads');
      const q = lib.GuestQueue.attach(data.queue);
      const mem = new lib.GuestMemory(data.sab, data.ramBase, data.ramBytes);
      q.setStreamTableBase(data.strtab);
      lib.writeGuestCd(mem, data.cdTable, 0, { asid: 2, ttb0: data.ttb0 });
      lib.writeGuestSte(mem, data.strtab, 0, { config: ${STE_CFG.S1_TRANS}, s1ContextPtr: data.cdTable });
      post({ written: true });
      await new Promise((r) => parentPort.once('message', r));
      q.submit([{ op: 'CFGI_STE', sid: 0, leaf: 1 }], { cs: 'sev' });
      return q.state().cons;
    `, {
      queue: q.handle, sab: host.sab, ramBase: t.vm.ramBase, ramBytes: t.vm.ramBytes, strtab, cdTable, ttb0: pt2.root,
    });
    const done = outcome(w);
    await once(w, 'message');
    // vSTE and CD rewritten, STRTAB_BASE set: the device still uses the configuration the VMM installed.
    expect(page()).toBe(0);
    expect(kernel(2).steInstalls).toBe(0);
    w.postMessage('go');
    const out = await done;
    await w.terminate();
    expect(out.error).toBeUndefined();
    expect(out.result).toBe(2);
    expect(page()).toBe(1);
    expect(kernel(2).steInstalls).toBe(1);
    expect(trapStats(q.handle)).toMatchObject({ forwarded: 0, handled: 2 });
  });

  it('a STRTAB_BASE outside guest RAM is refused by the VMM', async () => {
    host = await startHost();
    const t = await makeVm(host, 2, 0x10);
    const q = await t.vm.openQueue({ path, log2size: 4 });
    expect(() => q.setStreamTableBase(t.vm.ramBytes)).toThrow(/errno 22/);
    expect(() => q.setStreamTableBase(0x1010)).toThrow(/errno 22/); // not 64-byte aligned
  });
});

describe('STRTAB_BASE without a trap lane', () => {
  it('a doorbell-only queue has no STRTAB_BASE to write', async () => {
    host = await startHost();
    const t = await makeVm(host, 2, 0x10);
    const q = await t.vm.openQueue({ log2size: 4 });
    expect(() => q.setStreamTableBase(0x1000)).toThrow(/no lane reaches the VMM/);
  });
});

describe('switching a queue between the vCMDQ and the trap path', () => {
  it('mid-stream, in a guest thread: nothing lost, nothing repeated', async () => {
    // A slow kernel thread (per vCMDQ command), so the unsynced doorbell batch is surely still in flight at the switch.
    host = await startHost({ injectDelayUs: 2000 });
    const t = await makeVm(host, 4, 0x10);
    mapPage(t, IOVA, 0);
    const dma = await host.dma();
    const page = () => pageOfPa(t, dma.translate(t.psid, -1, IOVA).pa);
    expect(page()).toBe(0); // cached in the IOTLB
    mapPage(t, IOVA, 1); // the guest remaps; only its TLBI (last of the unsynced batch) makes the device see it
    const q = await t.vm.openQueue({ path: 'doorbell', standby: ['trap'], log2size: 6 });
    const kernel = await kernelCounter(host);
    const w = evalWorker(`
      const q = lib.GuestQueue.attach(data.queue);
      const nop = (n) => Array.from({ length: n }, (_, i) => ({ op: 'TLBI_NH_ASID', asid: 100 + i }));
      const va = { op: 'TLBI_NH_VA', asid: data.asid, addr: BigInt(data.iova), leaf: 1 };
      const door = q.handle;
      q.submit([...nop(40), va], { sync: false });           // A: 41 on the vCMDQ, no sync
      q.switchPath('trap');                                   // drains A
      const regs = new Int32Array(door.sab);
      const atSwitch = { prod: Atomics.load(regs, door.regs + data.Q_PROD), cons: Atomics.load(regs, door.regs + data.Q_CONS) };
      q.submit(nop(20), { cs: 'sev' });                       // B: 20 + sync through the VMM
      const trap = q.handle;
      q.switchPath('doorbell');
      q.submit(nop(5), { cs: 'irq' });                        // C: 5 + sync on the vCMDQ again
      q.drain();                                              // the MSI may land before CONS passes the sync
      return { atSwitch, doorPath: door.path, trapPath: trap.path, trapStandby: trap.standby.map((h) => h.path), path: q.path };
    `, { queue: q.handle, asid: ASID, iova: IOVA, Q_PROD, Q_CONS });
    const out = await outcome(w);
    await w.terminate();
    expect(out.error).toBeUndefined();
    const r = out.result as { atSwitch: { cons: number; prod: number }; doorPath: string; trapPath: string; trapStandby: string[]; path: string };
    // A request served by the kernel thread after that drain: its statistics words (plain stores after CONS) are now visible too.
    expect(page()).toBe(1);
    // The switch waited for all of A: CONS had reached PROD on the vCMDQ.
    expect(r.atSwitch).toMatchObject({ prod: 41, cons: 41 });
    expect([r.doorPath, r.trapPath, r.trapStandby, r.path]).toEqual(['doorbell', 'trap', ['doorbell'], 'doorbell']);
    // vCMDQ: A and C with its sync, each once. Trap queue: B and its sync, each once; the kernel executed B once.
    expect(q.state()).toMatchObject({ prod: 41 + 6, cons: 41 + 6, cmds: 41 + 6, syncs: 1 });
    const trapHandle = q.handle.standby![0]!;
    expect(Atomics.load(host.i32, trapHandle.regs + Q_PROD)).toBe(21);
    expect(trapStats(trapHandle)).toMatchObject({ forwarded: 20, handled: 1 });
    expect(kernel(4).executed).toBe(20);
  });

  it('refuses to switch while the queue is stopped on an error, and switches once it is resolved', async () => {
    host = await startHost();
    const t = await makeVm(host, 4, 0x10);
    const q = await t.vm.openQueue({ path: 'doorbell', standby: ['trap'], log2size: 4 });
    // CFGI_STE is not in a vCMDQ's command set: CERROR_ILL at index 1.
    expect(() => q.submit([{ op: 'TLBI_NH_ALL' }, { op: 'CFGI_STE', sid: 0, leaf: 1 }, { op: 'TLBI_NH_ALL' }])).toThrow(QueueError);
    const err = thrown(() => q.switchPath('trap'));
    expect(err).toBeInstanceOf(PathSwitchError);
    expect((err as Error).message).toMatch(/cannot switch from 'doorbell' to 'trap'.*CONS=0x1/);
    expect(q.path).toBe('doorbell');
    expect(q.skipFaultingCommand()).toBe(true);
    q.switchPath('trap');
    expect(q.path).toBe('trap');
    q.submit([{ op: 'CFGI_STE', sid: 0, leaf: 1 }]); // now the VMM handles it
    expect(q.state().cons).toBe(2);
    expect(() => q.switchPath('nowhere')).toThrow(/no 'nowhere' lane/);
  });
});
