// The guest driver's batching and range invalidation, driven in-thread
// against the real consumer and model (consumer-rig.ts attachGuest: each PROD
// write runs a consumer pass before it returns). The same contracts are
// tested on real threads by the doorbell-* and guest-* suites; here a mutant
// of src/guest.ts can be seen by mutation testing.
//
// Contracts, from Linux arm_smmu_cmdq_issue_cmdlist / arm_smmu_cmdq_batch_add
// / arm_smmu_cmdq_batch_submit (arm-smmu-v3.c):
// - commands are written in order and published in batches of at most
//   CMDQ_BATCH_ENTRIES (64), and never more than the queue holds;
// - the CMD_SYNC goes in the same PROD write as the last batch when it fits,
//   else alone right after; with no sync nothing is added;
// - a queue error stops the call with the faulting command's position
//   (SMMUv3 §7.1: CONS stays on the command that failed).
import { describe, expect, it, vi } from 'vitest';
import { buildCfgiSte, buildTlbiNhAsid, decodeWords } from '../src/codec.ts';
import { ArgumentError, CERROR } from '../src/errors.ts';
import { CS, F, FIELD_COUNT, OP } from '../src/fields.ts';
import { CMDQ_BATCH_ENTRIES, GuestQueue, QueueError, type CsMode } from '../src/guest.ts';
import { tlbInvRangeAsid } from '../src/invalidate.ts';
import { Q_CONS, Q_DRV_PUB, Q_DRV_RESV, Q_DRV_TURN_WAITERS, Q_STAT_CMDS, Q_STAT_SYNCS, Q_WAITERS } from '../src/layout.ts';
import { ACCESS, PROT } from '../src/model/index.ts';
import { SPIN_CLOCK_EVERY, SyncTimeoutError } from '../src/waiter.ts';
import { attachGuest, makeRig, type GuestRig, type Rig } from './consumer-rig.ts';

const VMID = 7;
const PSID = 1;
const ASID = 3;

/** n TLBI_NH_ASID commands, the k-th naming ASID first + k (so the model's log identifies each). */
function asids(n: number, first: number): Uint32Array {
  const words = new Uint32Array(4 * Math.max(n, 1));
  for (let k = 0; k < n; k++) buildTlbiNhAsid(words.subarray(4 * k, 4 * k + 4), (first + k) & 0xffff, 0);
  return words;
}

/** The PROD steps Linux's batching gives n commands (plus a sync) on a queue of `size` slots. */
function linuxSteps(n: number, sync: boolean, size: number): number[] {
  const max = Math.min(CMDQ_BATCH_ENTRIES, size);
  const steps: number[] = [];
  let rest = n;
  while (rest > max) {
    steps.push(max);
    rest -= max;
  }
  if (rest > 0 && (!sync || rest < size)) steps.push(rest + (sync ? 1 : 0));
  else {
    if (rest > 0) steps.push(rest);
    if (sync) steps.push(1);
  }
  return steps;
}

function stepsOf(g: GuestRig, from: number): number[] {
  const mask = (2 << g.q.log2) - 1;
  let prev = from;
  return g.prods.map((p) => {
    const d = (p - prev) & mask;
    prev = p;
    return d;
  });
}

const rig1 = (features = {}): Rig => makeRig([{ vmid: VMID, psids: [PSID], asid: ASID }], { features });

describe('submitWords batching (Linux arm_smmu_cmdq_issue_cmdlist)', () => {
  for (const log2 of [2, 3, 6, 7]) {
    it(`queue of ${1 << log2} slots: every command once, in order, in batches of <= min(64, size), the sync last`, () => {
      const rig = rig1();
      const g = attachGuest(rig, VMID, log2);
      const size = 1 << log2;
      let executed = 0;
      let syncs = 0;
      let prod = 0;
      let first = 1;
      // One queue through many calls: the ring wraps over and over.
      for (const n of [0, 1, 2, size - 1, size, size + 1, 63, 64, 65, 127, 128, 129, 200]) {
        for (const cs of [null, 'none', 'sev', 'irq'] as (CsMode | null)[]) {
          if (n === 0 && cs === null) continue;
          g.prods.length = 0;
          g.gq.submitWords(asids(n, first), n, cs, 0);
          const label = `n=${n} cs=${cs}`;
          expect(rig.model.log.slice(executed).map((e) => e.f[F.ASID]), label)
            .toEqual(Array.from({ length: n }, (_, k) => (first + k) & 0xffff));
          expect(rig.model.log.slice(executed).every((e) => e.f[F.OP] === OP.TLBI_NH_ASID && e.f[F.VMID] === VMID), label).toBe(true);
          expect(stepsOf(g, prod), label).toEqual(linuxSteps(n, cs !== null, size));
          if (cs !== null) syncs++;
          expect(rig.i32[g.q.regs + Q_STAT_SYNCS], label).toBe(syncs);
          executed += n;
          first += n;
          prod = g.prods.at(-1)!;
          expect(g.gq.prodValue).toBe(prod);
        }
      }
      expect(rig.i32[g.q.regs + Q_STAT_CMDS]).toBe(executed + syncs);
    });
  }

  it('the async forms batch the same way (submitWordsAsync, syncAsync, invalidateRangeAsync)', async () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    let prod = 0;
    let first = 1;
    for (const n of [1, 7, 8, 9, 65, 130]) {
      for (const cs of [null, 'sev', 'irq'] as (CsMode | null)[]) {
        const executed = rig.model.log.length;
        g.prods.length = 0;
        await g.gq.submitWordsAsync(asids(n, first), n, cs, 0);
        expect(rig.model.log.slice(executed).map((e) => e.f[F.ASID])).toEqual(Array.from({ length: n }, (_, k) => first + k));
        expect(stepsOf(g, prod), `n=${n} cs=${cs}`).toEqual(linuxSteps(n, cs !== null, 8));
        prod = g.prods.at(-1)!;
        first += n;
      }
    }
    g.prods.length = 0;
    await g.gq.syncAsync({ cs: 'irq', timeoutMs: 0 });
    expect(stepsOf(g, prod)).toEqual([1]);
    prod = g.prods.at(-1)!;
    const executed = rig.model.log.length;
    g.prods.length = 0;
    await g.gq.invalidateRangeAsync(ASID, 0x4000_0000, 3 * 4096, 4096, true, { timeoutMs: 0 });
    const n = tlbInvRangeAsid(null, 0, ASID, 0x4000_0000, 3 * 4096, 4096, true, rig.w.features);
    expect(rig.model.log.length - executed).toBe(n);
    expect(stepsOf(g, prod)).toEqual(linuxSteps(n, true, 8));
    await expect(g.gq.syncAsync({ sync: 1 as unknown as boolean })).rejects.toThrow(ArgumentError);
    await expect(g.gq.invalidateRangeAsync(ASID, 0x4000_0000, 4096, 4096, true, { sync: 1 as unknown as boolean })).rejects.toThrow(ArgumentError);
  });

  it('two drivers on one queue: the one whose RESV guess a rival made stale by a whole queue still publishes at once, and in RESV order', () => {
    // A driver starts its CAS from the RESV it last left (Linux's cached llq). Here a rival reserves exactly one
    // queue's worth after it, so the guess shows a full queue (RESV - CONS = -size, used = size) though the queue is
    // empty: the driver must look at RESV again, not wait for space that is already there (timeoutMs 0: check once).
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    const rival = new GuestQueue(g.gq.handle);
    g.gq.submitWords(asids(1, 1), 1, 'sev', 0);
    rival.submitWords(asids(7, 2), 7, 'sev', 0); // 8 slots: RESV moves one queue ahead of g's guess
    g.prods.length = 0;
    const executed = rig.model.log.length;
    g.gq.submitWords(asids(1, 9), 1, 'sev', 0);
    expect(rig.model.log.slice(executed).map((e) => e.f[F.ASID])).toEqual([9]);
    expect(g.prods).toEqual([(2 + 8 + 2) & 15]);
    // And the rival, whose own guess is now stale by 2 slots, after it.
    rival.submitWords(asids(1, 10), 1, 'sev', 0);
    expect(rig.model.log.slice(executed).map((e) => e.f[F.ASID])).toEqual([9, 10]);
    expect(Atomics.load(rig.i32, g.q.regs + Q_CONS) & 15).toBe((2 + 8 + 2 + 2) & 15);
  });

  it('two drivers on one queue: a driver whose RESV guess shows room but a rival reserved since loses its CAS, tries again from the rival\'s RESV and publishes after it; at timeoutMs 0 one lost CAS is no timeout', () => {
    // Linux arm_smmu_cmdq_issue_cmdlist: a failed cmpxchg on the llq retries from the value it returned. Here the
    // rival (a fresh driver: its guess is RESV 0) finds CONS at 0, so its guess shows 8 free slots, but g has reserved
    // slot 0 meanwhile: the rival's CAS from 0 fails, and it must neither write slot 0 nor count its command sent.
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    g.pump = false;
    const rival = new GuestQueue(g.gq.handle);
    g.gq.submitWords(asids(1, 1), 1, null, 0);
    rival.submitWords(asids(1, 2), 1, null, 0);
    expect(g.prods).toEqual([1, 2]);
    rig.consumer.pass();
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([1, 2]);
  });

  it('a driver that keeps losing RESV to a rival (one reserving right before each of its CASes) checks its deadline every SPIN_CLOCK_EVERY failed tries: at timeoutMs 0 it throws SyncTimeoutError, having published nothing', () => {
    // The bound on lost CASes (advance): each lost CAS is followed by a space wait that returns at once (there is
    // room), so only the count of tries gets the call to its liveness and timeout check (afterSlice).
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    const rival = new GuestQueue(g.gq.handle);
    const cas = Atomics.compareExchange;
    const budget = 4 * SPIN_CLOCK_EVERY;
    let rivals = 0;
    let inRival = false;
    const spy = vi.spyOn(Atomics, 'compareExchange').mockImplementation(((a: Int32Array, i: number, expected: number, v: number) => {
      // Before each of g's CASes on RESV the rival reserves, publishes and is consumed: the CAS then fails.
      if (!inRival && rivals < budget && a.buffer === rig.i32.buffer && a.byteOffset === 0 && i === g.q.regs + Q_DRV_RESV) {
        inRival = true;
        try {
          rival.submitWords(asids(1, 1000 + rivals++), 1, null, 0);
        } finally {
          inRival = false;
        }
      }
      return cas(a, i, expected, v);
    }) as typeof Atomics.compareExchange);
    try {
      expect(() => g.gq.submitWords(asids(1, 1), 1, null, 0)).toThrow(SyncTimeoutError);
    } finally {
      spy.mockRestore();
    }
    expect(rivals).toBe(SPIN_CLOCK_EVERY);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual(Array.from({ length: rivals }, (_, k) => 1000 + k));
  });

  it('a space wait overtaken between its loads by other producers\' reservations and their consumption still sees the room: at timeoutMs 0 the call publishes, no SyncTimeoutError', () => {
    // A full queue (no pass on PROD writes); then, at each of g's loads of CONS (10 times), the consumer empties the
    // queue and a rival reserves one slot, publishes and is consumed: CONS moves past any RESV g loaded before it.
    // Linux reads prod and cons as one 64-bit llq value, so it never compares a RESV with a later CONS.
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    const rival = new GuestQueue(g.gq.handle);
    g.pump = false;
    g.gq.submitWords(asids(8, 1), 8, null, 0);
    const load = Atomics.load;
    let rivals = 0;
    let inRival = false;
    const spy = vi.spyOn(Atomics, 'load').mockImplementation(((a: Int32Array, i: number) => {
      if (!inRival && rivals < 10 && a.buffer === rig.i32.buffer && a.byteOffset === 0 && i === g.q.regs + Q_CONS) {
        inRival = true;
        try {
          rig.consumer.pass();
          rival.submitWords(asids(1, 100 + rivals++), 1, null, 0);
          rig.consumer.pass();
        } finally {
          inRival = false;
        }
      }
      return load(a, i);
    }) as typeof Atomics.load);
    try {
      g.gq.submitWords(asids(1, 9), 1, null, 0);
    } finally {
      spy.mockRestore();
    }
    rig.consumer.pass();
    const log = rig.model.log.map((e) => e.f[F.ASID]);
    expect(log.slice(0, 8)).toEqual(Array.from({ length: 8 }, (_, k) => 1 + k));
    expect(log.filter((a) => a === 9)).toEqual([9]);
    expect(log.length).toBe(9 + rivals);
  });

  it('a driver alone loads neither RESV nor PUB to publish after its first (its own guess, its own PUB: Linux\'s cached llq); after a rival published, RESV and PUB once each', () => {
    // Loads counted on calls without a sync (a sync's wait loads RESV to unwrap CONS). 8 commands fill the 8 slots
    // exactly: the guess shows just enough room.
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    const rival = new GuestQueue(g.gq.handle);
    const load = Atomics.load;
    const loads = { resv: 0, pub: 0 };
    const counted = (f: () => void): { resv: number; pub: number } => {
      loads.resv = 0;
      loads.pub = 0;
      const spy = vi.spyOn(Atomics, 'load').mockImplementation(((a: Int32Array, i: number) => {
        if (a.buffer === rig.i32.buffer && a.byteOffset === 0) {
          if (i === g.q.regs + Q_DRV_RESV) loads.resv++;
          if (i === g.q.regs + Q_DRV_PUB) loads.pub++;
        }
        return load(a, i);
      }) as typeof Atomics.load);
      try {
        f();
      } finally {
        spy.mockRestore();
      }
      return { ...loads };
    };
    // A new driver's first publish loads PUB (no publish of its own yet), its guess (RESV 0) is right.
    expect(counted(() => g.gq.submitWords(asids(8, 1), 8, null, 0))).toEqual({ resv: 0, pub: 1 });
    expect(counted(() => g.gq.submitWords(asids(1, 9), 1, null, 0))).toEqual({ resv: 0, pub: 0 });
    // The rival reserves, publishes and is consumed: g's guess is behind CONS (no room by it), and PUB is not where g
    // left it. The fresh RESV shows exactly the 8 slots g needs.
    rival.submitWords(asids(1, 10), 1, null, 0);
    expect(counted(() => g.gq.submitWords(asids(8, 11), 8, null, 0))).toEqual({ resv: 1, pub: 1 });
    expect(counted(() => g.gq.submitWords(asids(1, 19), 1, null, 0))).toEqual({ resv: 0, pub: 0 });
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual(Array.from({ length: 19 }, (_, k) => 1 + k));
  });

  it('an async call leaves no listener on the caller\'s AbortSignal once it settles', async () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    const ac = new AbortController();
    const added = vi.spyOn(ac.signal, 'addEventListener');
    const removed = vi.spyOn(ac.signal, 'removeEventListener');
    await g.gq.submitWordsAsync(asids(70, 1), 70, 'sev', 0, ac.signal);
    await g.gq.syncAsync({ signal: ac.signal, timeoutMs: 0 });
    expect(added.mock.calls.length).toBeGreaterThan(0);
    expect(removed.mock.calls.map((c) => [c[0], c[1]])).toEqual(added.mock.calls.map((c) => ['abort', c[1]]));
    expect(rig.model.log.length).toBe(70);
  });

  it('a full queue: the call waits for space and goes on publishing, returning only when all of it executed (both forms)', async () => {
    // No pass on PROD writes: the consumer runs only when the guest announces that it waits (its Atomics.add on
    // WAITERS, in block and blockAsync), a kernel thread answering a waiting guest. So each batch after the first finds
    // the queue full and waits for space (COND_SPACE), and the call must go on publishing after that wait.
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    g.pump = false;
    const add = Atomics.add;
    let inPass = false;
    let answered = 0;
    const spy = vi.spyOn(Atomics, 'add').mockImplementation(((a: Int32Array, i: number, v: number) => {
      const was = add(a, i, v);
      if (!inPass && a.buffer === rig.i32.buffer && a.byteOffset === 0 && i === g.q.regs + Q_WAITERS) {
        inPass = true;
        try {
          if (rig.consumer.pass() > 0) answered++;
        } finally {
          inPass = false;
        }
      }
      return was;
    }) as typeof Atomics.add);
    try {
      let first = 1;
      for (const cs of [null, 'sev'] as (CsMode | null)[]) {
        const executed = rig.model.log.length;
        // With a sync the call returns when all 30 executed; without one, when all 30 are published (a pass runs them).
        answered = 0;
        g.gq.submitWords(asids(30, first), 30, cs, 5000);
        if (cs === null) rig.consumer.pass();
        expect(rig.model.log.slice(executed).map((e) => e.f[F.ASID]), `cs ${cs}`).toEqual(Array.from({ length: 30 }, (_, k) => first + k));
        // 30 commands in batches of 8 on 8 slots: three waits for space (and the sync's own wait).
        expect(answered, `cs ${cs}`).toBe(cs === null ? 3 : 4);
        first += 30;
        const before = rig.model.log.length;
        answered = 0;
        await g.gq.submitWordsAsync(asids(30, first), 30, cs, 5000);
        if (cs === null) rig.consumer.pass();
        expect(rig.model.log.slice(before).map((e) => e.f[F.ASID]), `async cs ${cs}`).toEqual(Array.from({ length: 30 }, (_, k) => first + k));
        expect(answered, `async cs ${cs}`).toBe(cs === null ? 3 : 4);
        first += 30;
      }
    } finally {
      spy.mockRestore();
    }
  });

  it('sync() is one CMD_SYNC; n = 0 without a sync publishes nothing', () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    g.gq.submitWords(new Uint32Array(0), 0, null, 0);
    expect(g.prods).toEqual([]);
    g.gq.sync('sev', 0);
    expect(g.prods).toEqual([1]);
    expect(rig.i32[g.q.regs + Q_STAT_SYNCS]).toBe(1);
    expect(rig.model.log).toEqual([]);
  });

  it('a CS=IRQ sync signals on its own slot (Linux MSI polling): the MSI zeroes the slot\'s first word', () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    g.gq.submitWords(asids(2, 1), 2, 'irq', 0);
    // The sync sat in slot 2; its first word held the opcode until the MSI (data 0) overwrote it.
    expect(g.q.ring[2 * 4]).toBe(0);
    expect(g.q.ring[0]! & 0xff).toBe(OP.TLBI_NH_ASID);
    g.gq.submitWords(asids(2, 1), 2, 'sev', 0);
    expect(g.q.ring[5 * 4]! & 0xff).toBe(OP.CMD_SYNC);
  });

  it('a CS=IRQ sync completes on its MSI write alone (Linux __arm_smmu_cmdq_poll_until_msi); a CS=SEV one waits for CONS', () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    g.pump = false;
    // Playing an SMMU that has written the sync's MSI (data 0, to the sync's own slot) but not yet published CONS.
    g.onPublish = (prod) => {
      g.q.ring[((prod - 1) & 7) * 4] = 0;
    };
    g.gq.submitWords(asids(2, 1), 2, 'irq', 0);
    g.gq.submitWords(asids(2, 3), 2, 'irq', 0); // slots 3..5, with room: CONS has not moved
    expect(Atomics.load(rig.i32, g.q.regs + Q_CONS)).toBe(0);
    expect(() => g.gq.submitWords(new Uint32Array(0), 0, 'sev', 0)).toThrow(SyncTimeoutError);
  });

  it('without a consumer, a CS=IRQ sync past slot 0 does not complete: the guest polls its own slot, which still holds the opcode', () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    g.pump = false;
    // The sync sits in slot 2. Any other word the wait might poll (below the ring, another slot's) is 0 here and
    // would end the wait at once, as if the MSI had landed (Linux __arm_smmu_cmdq_poll_until_msi polls the sync's own).
    expect(() => g.gq.submitWords(asids(2, 1), 2, 'irq', 0)).toThrow(SyncTimeoutError);
    expect(g.q.ring[2 * 4]! & 0xff).toBe(OP.CMD_SYNC);
    expect(rig.model.log).toEqual([]);
  });

  it('a CS=IRQ sync of a ring above 4 GiB of IPA carries the MSI address\'s high word (arm_smmu_cmdq_build_sync_cmd: MSIAddr[51:2] of the sync\'s slot)', () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    g.pump = false;
    // The same ring (PA) as seen at an IPA 4 GiB higher: only the sync's MSI address depends on the IPA.
    const high = new GuestQueue({ ...g.gq.handle, baseIpa: g.gq.handle.baseIpa + 2 ** 32 });
    expect(() => high.submitWords(asids(2, 1), 2, 'irq', 0)).toThrow(SyncTimeoutError);
    const f = new Uint32Array(FIELD_COUNT);
    expect(decodeWords(g.q.ring.subarray(2 * 4, 3 * 4), f, rig.w.features)).toBe(0);
    const msi = g.gq.handle.baseIpa + 2 ** 32 + 16 * 2;
    expect([f[F.OP], f[F.CS], f[F.MSIADDR_LO], f[F.MSIADDR_HI]]).toEqual([OP.CMD_SYNC, CS.IRQ, msi % 2 ** 32, 1]);
  });

  it('the PUB store wakes producers waiting their turn only when one announced itself in TURN_WAITERS (layout.ts, Q_DRV_*)', () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    const pub = g.q.regs + Q_DRV_PUB;
    const notify = vi.spyOn(Atomics, 'notify');
    try {
      const pubWakes = (): number => notify.mock.calls.filter(([, index]) => index === pub).length;
      g.gq.submitWords(asids(2, 1), 2, 'sev', 0);
      expect(pubWakes()).toBe(0);
      // Another producer blocked in awaitTurn (its announce, as it would make before Atomics.wait on PUB).
      Atomics.store(rig.i32, g.q.regs + Q_DRV_TURN_WAITERS, 1);
      g.gq.submitWords(asids(2, 3), 2, 'sev', 0);
      expect(pubWakes()).toBe(1);
      expect(Atomics.load(rig.i32, pub)).toBe(6);
    } finally {
      notify.mockRestore();
    }
  });

  it('without a consumer, a call that needs to wait fails with SyncTimeoutError at timeoutMs 0, having published what fit', () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 2);
    g.pump = false;
    // 4 slots: the first batch (4) fits, the second needs space the consumer never frees.
    expect(() => g.gq.submitWords(asids(6, 1), 6, 'sev', 0)).toThrow(SyncTimeoutError);
    expect(g.prods).toEqual([4]);
    expect(rig.model.log).toEqual([]);
  });
});

describe('a queue error names the faulting command, in any batch', () => {
  for (const [n, bad] of [[5, 0], [5, 4], [70, 63], [70, 64], [70, 69], [150, 130], [300, 290]] as const) {
    it(`${n} commands, the one at ${bad} refused by the vSMMU`, () => {
      const rig = rig1();
      const g = attachGuest(rig, VMID, 7);
      // Some history first, so positions are not all zero-based.
      g.gq.submitWords(asids(9, 1), 9, 'sev', 0);
      const base = g.gq.prodValue;
      const executedBefore = rig.model.log.length;
      const words = asids(n, 100);
      buildCfgiSte(words.subarray(4 * bad, 4 * bad + 4), 0, 1); // not guest-owned on a VCMDQ (Tegra241)
      let err: unknown;
      try {
        g.gq.submitWords(words, n, 'sev', 0);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(QueueError);
      const qe = err as QueueError;
      const mask = (2 << 7) - 1;
      expect(qe.index).toBe((base + bad) & mask);
      expect(qe.err).toBe(CERROR.ILL);
      expect(qe.cerror).toBe('ILL');
      // Everything before the faulting command executed, nothing after it.
      expect(rig.model.log.slice(executedBefore).map((e) => e.f[F.ASID])).toEqual(Array.from({ length: bad }, (_, k) => 100 + k));
      // Linux __arm_smmu_cmdq_skip_err: the queue resumes with the commands after the faulting one.
      expect(g.gq.skipFaultingCommand()).toBe(true);
      expect(rig.model.log.slice(executedBefore).map((e) => e.f[F.ASID]))
        .toEqual(Array.from({ length: n }, (_, k) => 100 + k).filter((_, k) => k !== bad));
      expect(g.gq.skipFaultingCommand()).toBe(false);
      g.gq.submitWords(asids(1, 900), 1, 'sev', 0);
      expect(rig.model.log.at(-1)!.f[F.ASID]).toBe(900);
    });
  }

  it('an error in another call\'s command is not this call\'s: it is not thrown at a bystander', () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    const bad = new Uint32Array(4);
    buildCfgiSte(bad, 0, 1);
    expect(() => g.gq.submitWords(bad, 1, null, 0)).not.toThrow(); // no sync: nothing waited for
    // The queue is stopped on it; a later call's sync cannot complete, and the error is not its own.
    expect(() => g.gq.submitWords(asids(1, 5), 1, 'sev', 0)).toThrow(SyncTimeoutError);
    expect(() => g.gq.drain(0)).toThrow(QueueError);
  });
});

describe('invalidateRange (Linux arm_smmu_tlb_inv_range_asid) with the model as the oracle', () => {
  const VA = 0x4000_0000;
  for (const ril of [true, false]) {
    it(`RIL ${ril ? 'on' : 'off'}: the pages of the range walk again, the pages around it still hit; the commands are the builder's`, () => {
      const rig = rig1({ RIL: ril });
      const vm = rig.vms[0]!;
      const g = attachGuest(rig, VMID, 4);
      const pages = 200;
      for (let p = 0; p < pages + 2; p++) vm.pt.map(VA + p * 4096, vm.dataIpa, 4096, PROT.READ);
      const walks = (p: number): boolean => {
        const before = rig.w.model.stats.s1Walks;
        const r = rig.w.model.translateIova(PSID, -1, VA + p * 4096, ACCESS.READ);
        if (!('pa' in r)) throw new Error(`page ${p} faulted`);
        return rig.w.model.stats.s1Walks !== before;
      };
      for (const [first, len] of [[1, 1], [1, 3], [5, 130], [1, pages]] as const) {
        for (let p = 0; p < pages + 2; p++) walks(p);
        const executed = rig.model.log.length;
        // An unaligned start and size: every page the bytes touch goes.
        g.gq.invalidateRange(ASID, VA + first * 4096 + 0x10, len * 4096 - 0x20, 4096, true, { timeoutMs: 0 });
        const stale = [];
        for (let p = first; p < first + len; p++) if (!walks(p)) stale.push(p);
        expect(stale, `[${first}, +${len})`).toEqual([]);
        expect(walks(first - 1), `[${first}, +${len}): the page before`).toBe(false);
        if (!ril || len % 32 !== 1) expect(walks(first + len), `[${first}, +${len}): the page after`).toBe(false);
        const n = tlbInvRangeAsid(null, 0, ASID, VA + first * 4096 + 0x10, len * 4096 - 0x20, 4096, true, rig.w.features);
        const want = new Uint32Array(4 * n);
        tlbInvRangeAsid(want, 0, ASID, VA + first * 4096 + 0x10, len * 4096 - 0x20, 4096, true, rig.w.features);
        const got = rig.model.log.slice(executed);
        expect(got.length).toBe(n);
        for (let k = 0; k < n; k++) {
          expect(got[k]!.f[F.OP]).toBe(want[4 * k]! & 0xff);
          expect([got[k]!.f[F.ASID], got[k]!.f[F.VMID], got[k]!.f[F.LEAF]]).toEqual([ASID, VMID, 1]);
        }
      }
      expect(rig.i32[g.q.regs + Q_STAT_SYNCS]).toBe(4);
    });
  }

  it('leaf = false and a 16K granule reach the commands; sync: false sends no CMD_SYNC; bad options send nothing', () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 4);
    g.gq.invalidateRange(ASID, VA, 3 * 16384, 16384, false, { sync: false, timeoutMs: 0 });
    expect(rig.i32[g.q.regs + Q_STAT_SYNCS]).toBe(0);
    const ops = rig.model.log.map((e) => [e.f[F.OP], e.f[F.LEAF], e.f[F.TG]]);
    expect(ops.length).toBeGreaterThan(0);
    for (const [op, leaf, tg] of ops) expect([op, leaf, tg]).toEqual([OP.TLBI_NH_VA, 0, 2]);
    const published = g.prods.length;
    expect(() => g.gq.invalidateRange(ASID, VA, 4096, 4096, true, { sync: 'yes' as unknown as boolean })).toThrow(ArgumentError);
    expect(() => g.gq.invalidateRange(ASID, VA, 0)).toThrow(ArgumentError);
    expect(g.prods.length).toBe(published);
  });

  it('leaf defaults to true on both forms; the async form sends every command of a multi-command range (RIL off: one per page)', async () => {
    const rig = rig1({ RIL: false });
    const g = attachGuest(rig, VMID, 4);
    g.gq.invalidateRange(ASID, VA, 4096);
    await g.gq.invalidateRangeAsync(ASID, VA, 4096);
    expect(rig.model.log.map((e) => [e.f[F.OP], e.f[F.LEAF]])).toEqual([[OP.TLBI_NH_VA, 1], [OP.TLBI_NH_VA, 1]]);
    const executed = rig.model.log.length;
    await g.gq.invalidateRangeAsync(ASID, VA, 3 * 4096, 4096, true, { timeoutMs: 0 });
    const sent = rig.model.log.slice(executed).map((e) => e.f[F.ADDR_LO]);
    expect(sent).toEqual([0, 1, 2].map((k) => (VA + k * 4096) >>> 0));
  });

  it('a CS=SEV or CS=NONE sync carries no MSI address or data (Linux arm_smmu_cmdq_build_sync_cmd sets them for CS=IRQ only)', () => {
    const rig = rig1();
    const g = attachGuest(rig, VMID, 3);
    g.gq.submitWords(asids(1, 1), 1, 'sev', 0); // sync in slot 1
    g.gq.sync('none', 0); // slot 2
    for (const slot of [1, 2]) {
      expect(g.q.ring[slot * 4]! & 0xff).toBe(OP.CMD_SYNC);
      expect([...g.q.ring.subarray(slot * 4 + 1, slot * 4 + 4)], `slot ${slot}`).toEqual([0, 0, 0]);
    }
  });
});
