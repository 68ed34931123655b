// The pending bitmap keeps VMs apart (src/layout.ts, Q_PEND and PendingSlots):
// a queue's bit is its host-allocated slot, not its qid, and the host hands
// out whole words per VM, so a guest that stores anything to the words it
// owns can delay only its own VM. Before slots, bit = qid put the queues of
// VMs created in turn into one word: a plain store of 0 there cleared
// another VM's bit, and that VM's CMD_SYNC waited for a publish that a
// waiting guest never makes. Tegra241 CMDQV keeps its status bitmaps per
// VINTF (per VM) for the same reason (Linux tegra241-cmdqv.c,
// tegra241_vintf0_handle_error reads VINTF0's own LVCMDQ_ERR_MAP words).
import { afterEach, describe, expect, it } from 'vitest';
import { buildTlbiNhAsid } from '../src/codec.ts';
import { ArgumentError } from '../src/errors.ts';
import { F } from '../src/fields.ts';
import { GuestQueue } from '../src/guest.ts';
import {
  CTL_HEARTBEAT_MS, CTL_STALE_MS, KTHREAD_CTL, LINE_WORDS, PendingSlots, Q_GERROR, Q_PROD, mmioLayout, pendingBitmapWords, pendingSlot,
  pendingWord,
} from '../src/layout.ts';
import { addQueue, consPos, makeRig, submit, type Rig, type RigQueue } from './consumer-rig.ts';
import { withHost } from './doorbell-helpers.ts';

const A = 5;
const B = 6;
const realLoad = Atomics.load;

afterEach(() => {
  Atomics.load = realLoad;
});

const wordOf = (rig: Rig, q: RigQueue): number => pendingWord(rig.i32, KTHREAD_CTL, pendingSlot(rig.i32, q.qid));

function tlbi(asid: number): Uint32Array {
  const u = new Uint32Array(4);
  buildTlbiNhAsid(u, asid, 0);
  return u;
}

describe('PendingSlots: whole words per VM', () => {
  it('a VM fills its word before it takes a fresh one, and interleaved VMs never share a word', () => {
    const slots = new PendingSlots(8);
    const got = new Map<number, number[]>([[A, []], [B, []]]);
    for (let k = 0; k < 40; k++) for (const vm of [A, B]) got.get(vm)!.push(slots.take(vm));
    const words = (vm: number): Set<number> => new Set(got.get(vm)!.map((s) => s >>> 5));
    expect(got.get(A)!.slice(0, 32)).toEqual(Array.from({ length: 32 }, (_, k) => k)); // word 0, bits in turn
    expect(got.get(B)!.slice(0, 32)).toEqual(Array.from({ length: 32 }, (_, k) => 32 + k)); // word 1
    expect([...words(A)]).toEqual([0, 2]);
    expect([...words(B)]).toEqual([1, 3]);
  });

  it('the worst case fits: maxQueues VMs of one queue each get a word apiece, and only then does it run out', () => {
    for (const maxQueues of [1, 17, 64, 1000]) {
      const m = mmioLayout(maxQueues);
      expect(m.pendingWords).toBe(pendingBitmapWords(maxQueues));
      expect(m.pendingWords % LINE_WORDS).toBe(0);
      const slots = new PendingSlots(m.pendingWords);
      const taken = Array.from({ length: maxQueues }, (_, vm) => slots.take(vm + 1));
      expect(new Set(taken.map((s) => s >>> 5)).size).toBe(maxQueues);
      expect(taken.every((s) => s >= 0 && s >>> 5 < m.pendingWords)).toBe(true);
      // What is left is the rounding to whole lines; past it the allocator refuses.
      for (let k = maxQueues; k < m.pendingWords; k++) expect(slots.take(100_000 + k)).toBeGreaterThanOrEqual(0);
      expect(slots.take(999_999)).toBe(-1);
    }
  });
});

describe('a guest cannot delay another VM through the pending bitmap', () => {
  it('two VMs with queues opened in turn get disjoint pending words', () => {
    const rig = makeRig([{ vmid: A, psids: [1] }, { vmid: B, psids: [2] }]);
    const qa: RigQueue[] = [];
    const qb: RigQueue[] = [];
    for (let k = 0; k < 33; k++) {
      qa.push(addQueue(rig, A, 3));
      qb.push(addQueue(rig, B, 3));
    }
    const wa = new Set(qa.map((q) => wordOf(rig, q)));
    const wb = new Set(qb.map((q) => wordOf(rig, q)));
    expect(wa.size).toBe(2); // 33 queues: one full word and one more
    expect(wb.size).toBe(2);
    expect([...wa].filter((w) => wb.has(w))).toEqual([]);
  });

  it('VM A storing 0 into every pending word it owns, between B\'s publish and the pass, does not delay B: B\'s CMD_SYNC completes', () => {
    const rig = makeRig([{ vmid: A, psids: [1] }, { vmid: B, psids: [2] }]);
    rig.i32[KTHREAD_CTL + CTL_HEARTBEAT_MS] = 20;
    rig.i32[KTHREAD_CTL + CTL_STALE_MS] = 60_000;
    // In turn, as VMs are created and open queues: with bit = qid, B's queue would sit in A's first word.
    const qa = [addQueue(rig, A, 3)];
    const qb = addQueue(rig, B, 6);
    for (let k = 0; k < 32; k++) qa.push(addQueue(rig, A, 3));
    expect(rig.consumer.pass()).toBe(0); // each new queue's first look
    const owned = [...new Set(qa.map((q) => wordOf(rig, q)))];
    expect(owned).toHaveLength(2);
    // B's guest: the real doorbell transport (DoorbellTransport reads Q_PEND), in this thread.
    const guest = new GuestQueue({
      path: 'doorbell', sab: rig.w.mem as SharedArrayBuffer, ctl: KTHREAD_CTL, qid: qb.qid, regs: qb.regs, log2size: qb.log2,
      basePa: qb.ring.byteOffset, baseIpa: 0, vmid: B, features: rig.w.features,
    });
    // A publishes too, then its hostile (or buggy) vCPU clears every word A owns: A loses only its own announcement.
    submit(rig, qa[0]!, [tlbi(1)]);
    let stormed = false;
    Atomics.load = ((arr: Int32Array, idx: number) => {
      // B's wait, after its PROD is published: the storm, then the kernel thread's pass.
      if (!stormed && arr.buffer === rig.i32.buffer && idx === qb.regs + Q_GERROR && realLoad(arr, qb.regs + Q_PROD) !== 0) {
        stormed = true;
        for (const w of owned) Atomics.store(rig.i32, w, 0);
        rig.consumer.pass();
      }
      return realLoad(arr, idx);
    }) as typeof Atomics.load;
    guest.submitWords(tlbi(2), 1, 'sev', 1000); // a TLBI and its CMD_SYNC; throws SyncTimeoutError if B waited on A
    expect(stormed).toBe(true);
    expect(consPos(rig, qb)).toBe(2);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([2]); // B's TLBI ran (a sync is not the model's), A's did not
    expect(consPos(rig, qa[0]!)).toBe(0);
    // A's next publish announces its queue again, and both its commands run: it harmed only itself, until then.
    submit(rig, qa[0]!, [tlbi(3)]);
    expect(rig.consumer.pass()).toBe(2);
    expect(consPos(rig, qa[0]!)).toBe(2);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([2, 1, 3]);
  });
});

describe('a host of maxQueues single-queue VMs', () => {
  it('fits: each VM\'s doorbell queue has a pending word of its own and runs its CMD_SYNC; one more queue is refused naming maxQueues', async () => {
    const maxQueues = 24;
    await withHost({ maxQueues, memBytes: 96 << 20, spinUs: 20 }, async (host) => {
      const qs: GuestQueue[] = [];
      for (let v = 0; v < maxQueues; v++) {
        const vm = await host.createVm({ vmid: v + 1, ramBytes: 1 << 20, streams: [] });
        qs.push(await vm.openQueue({ log2size: 4 }));
      }
      const words = qs.map((q) => pendingWord(host.i32, q.handle.ctl, pendingSlot(host.i32, q.handle.qid)));
      expect(new Set(words).size).toBe(maxQueues);
      for (const q of qs.reverse()) q.submitWords(new Uint32Array(0), 0, 'sev');
      expect(qs.map((q) => q.state().syncs)).toEqual(qs.map(() => 1));
      const vm = await host.createVm({ vmid: maxQueues + 1, ramBytes: 1 << 20, streams: [] });
      const e = await vm.openQueue().then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(ArgumentError);
      expect((e as ArgumentError).argument).toBe('startHost: maxQueues');
    });
  });
});
