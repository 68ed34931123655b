// The trap-inline path's BQL: one lock per VMM in shared memory, taken by
// every vCPU thread around a trapped register write, as QEMU's
// prepare_mmio_access takes the BQL around an MMIO dispatch. Its state
// machine in-thread, then on real threads: a vCPU whose VMM's BQL is held
// elsewhere waits for it (and gives up at its deadline, never hangs), and
// every queue of a VM shares the one lock.
import { describe, expect, it } from 'vitest';
import { startHost } from '../src/index.ts';
import { Bql } from '../src/trap/bql.ts';
import type { InlineTrapExtra } from '../src/trap/exit.ts';
import '../src/trap/inline.ts';
import { evalWorker, makeVm, outcome } from './doorbell-helpers.ts';

describe('Bql in-thread', () => {
  it('free -> held -> held with waiters -> free; a lock that cannot come returns false at its deadline', () => {
    const i32 = new Int32Array(new SharedArrayBuffer(64));
    const bql = new Bql(i32, 3);
    expect(bql.lock(0)).toBe(true);
    expect(i32[3]).toBe(1);
    // Held: a second taker (here the same thread) announces itself and gives up at once with timeout 0.
    expect(bql.lock(0)).toBe(false);
    expect(i32[3]).toBe(2);
    bql.unlock();
    expect(i32[3]).toBe(0);
    expect(bql.lock(0)).toBe(true);
    bql.unlock();
    expect(i32[3]).toBe(0);
  });
});

describe('the BQL on real threads', () => {
  it("a vCPU trapping while its VMM's BQL is held waits for it; every queue of the VM takes the same lock", async () => {
    await using host = await startHost();
    const t = await makeVm(host, 2, 0x10);
    const q0 = await t.vm.openQueue({ path: 'trap-inline', log2size: 4 });
    const q1 = await t.vm.openQueue({ path: 'trap-inline', log2size: 4 });
    const x0 = (q0.handle.extra as InlineTrapExtra).inline;
    const x1 = (q1.handle.extra as InlineTrapExtra).inline;
    expect(x1.bql).toBe(x0.bql);
    // Another VM is another VMM: its own lock.
    const u = await makeVm(host, 3, 0x20);
    const other = await u.vm.openQueue({ path: 'trap-inline', log2size: 4 });
    expect((other.handle.extra as InlineTrapExtra).inline.bql).not.toBe(x0.bql);

    // This thread is "in the VMM" (holds the BQL) while a vCPU thread traps on the other queue.
    const bql = new Bql(host.i32, x0.bql);
    expect(bql.lock(1000)).toBe(true);
    const w = evalWorker(`
      const q = lib.GuestQueue.attach(data.queue);
      let refused;
      try { q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'sev' }); } catch (e) { refused = e.name + ': ' + e.message; }
      post({ refused });
      await new Promise((r) => require('node:worker_threads').parentPort.once('message', r));
      const full = lib.GuestQueue.attach(data.full);
      full.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'sev' });
      return full.state();
    `, {
      // A short trapped-write limit, so the wait for the held BQL ends while this thread still holds it.
      queue: { ...q1.handle, extra: { ...(q1.handle.extra as object), timeoutMs: 50 } },
      full: q1.handle,
    });
    const done = outcome(w);
    const [first] = (await new Promise((r) => w.once('message', (m) => r([m])))) as [{ refused?: string }];
    expect(first.refused).toMatch(/^TrapError: .*errno 35/);
    // Nothing ran: the write never got past the lock.
    expect(q1.state()).toMatchObject({ cons: 0, cmds: 0 });
    bql.unlock();
    w.postMessage('go');
    const out = await done;
    await w.terminate();
    expect(out.error).toBeUndefined();
    // A failed trapped write still passes the producers' turn on (guest.ts publish): the next PROD write covers its entries, so both ran.
    expect(out.result).toMatchObject({ cons: 4, cmds: 4, syncs: 2 });
    q0.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'sev' });
    expect(host.i32[x0.bql]).toBe(0);
  });
});
