// The consumer's setup boundary and its service lists, driven in-thread:
// what addQueue, removeVm and the constructor accept and refuse (the host
// writes the registers they read, so each is checked where it is read), and
// which queues a pass serves: the pending bitmap's slot table, the stopped
// list (SMMUv3 §7.1: a queue stopped on CMDQ_ERR resumes on the GERRORN ack),
// the hardware VCMDQs (Tegra241: polled while VCMDQ_EN, never while disabled).
import { describe, expect, it } from 'vitest';
import { Consumer } from '../native-free-fastpath/consumer.ts';
import { buildCfgiSte } from '../src/codec.ts';
import { F } from '../src/fields.ts';
import {
  CONFIG_EN, CTL_PENDING, CTL_PENDING_WORDS, CTL_SPIN_US, GERROR_CMDQ_ERR, KTHREAD_CTL, Q_BASE, Q_CMDSET, Q_CONFIG, Q_GERROR, Q_GERRORN,
  Q_LOG2SIZE, Q_PEND, Q_PROD, Q_STAT_PASSES, Q_STATUS, Q_VINTF, STATUS_ENABLED, markPending, queueRegs,
} from '../src/layout.ts';
import { VCMDQ_CMDSETS } from '../src/vsmmu.ts';
import { VINTF_WORDS, writeVintf } from '../src/vintf.ts';
import { addQueue, consPos, makeRig, submit, type Rig, type RigQueue, tlbiAsid } from './consumer-rig.ts';

const VMID = 5;
const asid = tlbiAsid;
const illegal = (): Uint32Array => {
  const u = new Uint32Array(4);
  buildCfgiSte(u, 0, 1); // refused on a vCMDQ: CERROR_ILL
  return u;
};
const reg = (rig: Rig, q: RigQueue, w: number): number => Atomics.load(rig.i32, q.regs + w);
const stopped = (rig: Rig, q: RigQueue): boolean => ((reg(rig, q, Q_GERROR) ^ reg(rig, q, Q_GERRORN)) & GERROR_CMDQ_ERR) !== 0;
const ack = (rig: Rig, q: RigQueue): void => {
  Atomics.store(rig.i32, q.regs + Q_GERRORN, reg(rig, q, Q_GERROR));
};

/** Registers of queue `qid` as host.ts writes them before addQueue: 4 slots, pending slot `slot`. */
function hostQueue(rig: Rig, qid: number, slot: number, vintf = 0): RigQueue {
  const regs = queueRegs(qid);
  const base = rig.w.layout.alloc(64, 64);
  rig.i32[regs + Q_LOG2SIZE] = 2;
  rig.i32[regs + Q_BASE] = base;
  rig.i32[regs + Q_CMDSET] = vintf === 0 ? 0 : 1;
  rig.i32[regs + Q_VINTF] = vintf;
  rig.i32[regs + Q_PEND] = slot;
  return { qid, regs, log2: 2, ring: new Uint32Array(rig.w.mem, base, 16), prod: 0 };
}

/** A VINTF of VM `VMID` mapping vSID 0 to pSID 1 (src/hw.ts opens a hardware VCMDQ on one). */
function vintfOf(rig: Rig): number {
  const vintf = rig.w.layout.alloc(VINTF_WORDS * 4, 64) >>> 2;
  writeVintf(rig.i32, vintf, VMID, [{ vsid: 0, psid: 1 }]);
  return vintf;
}

describe('the constructor reads its control block', () => {
  it('refuses a pending bitmap that is empty or runs past the end of memory, and accepts one that ends exactly at it', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }]);
    const i32 = rig.i32;
    const bitmap = i32[KTHREAD_CTL + CTL_PENDING]!;
    const make = (): Consumer => new Consumer(i32, KTHREAD_CTL, rig.model, rig.w.features);
    i32[KTHREAD_CTL + CTL_PENDING_WORDS] = 0;
    expect(make).toThrow(/CTL_PENDING_WORDS 0/);
    i32[KTHREAD_CTL + CTL_PENDING_WORDS] = i32.length - bitmap + 1;
    expect(make).toThrow(RangeError);
    i32[KTHREAD_CTL + CTL_PENDING_WORDS] = i32.length - bitmap;
    expect(make).not.toThrow();
  });

  it('without a policy, polls a fixed CTL_SPIN_US after the last work (startHost spinUs: a fixed budget)', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }]);
    rig.i32[KTHREAD_CTL + CTL_SPIN_US] = 70;
    const c = new Consumer(rig.i32, KTHREAD_CTL, rig.model, rig.w.features);
    expect(c.policy.name).toBe('fixed');
    expect(c.policy.idle(0, false)).toBe(70_000);
  });
});

describe('addQueue validates the registers the host wrote', () => {
  it('names the offending register and value in each refusal, and serves nothing it refused', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }], { features: { CMDQS: 4 } });
    const q = hostQueue(rig, 45, 0);
    rig.i32[q.regs + Q_LOG2SIZE] = 5;
    expect(() => rig.consumer.addQueue(45, VMID)).toThrow('queue 45: LOG2SIZE 5 exceeds CMDQS');
    rig.i32[q.regs + Q_LOG2SIZE] = 2;
    rig.i32[q.regs + Q_CMDSET] = VCMDQ_CMDSETS.length;
    expect(() => rig.consumer.addQueue(45, VMID)).toThrow(`queue 45: Q_CMDSET ${VCMDQ_CMDSETS.length} names no command set`);
    rig.i32[q.regs + Q_CMDSET] = 0;
    expect(rig.i32[q.regs + Q_STATUS]).toBe(0);
  });

  it("Q_PEND must be a free slot inside this thread's bitmap; a hardware VCMDQ has none and ignores it", () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }]);
    const slots = rig.i32[KTHREAD_CTL + CTL_PENDING_WORDS]! * 32;
    for (const [qid, slot] of [[46, -1], [47, slots], [48, slots + 31]] as const) {
      hostQueue(rig, qid, slot);
      expect(() => rig.consumer.addQueue(qid, VMID)).toThrow(`queue ${qid}: Q_PEND ${slot} is not a free slot of this thread's pending bitmap (${slots} slots)`);
      expect(rig.i32[queueRegs(qid) + Q_STATUS]).toBe(0);
    }
    // The last slot is inside; taking it twice is not.
    const last = hostQueue(rig, 49, slots - 1);
    rig.consumer.addQueue(49, VMID);
    expect(rig.i32[last.regs + Q_STATUS]).toBe(STATUS_ENABLED);
    hostQueue(rig, 50, slots - 1);
    expect(() => rig.consumer.addQueue(50, VMID)).toThrow(/Q_PEND/);
    // The last slot's queue is served by its bit.
    Atomics.store(rig.i32, last.regs + Q_CONFIG, CONFIG_EN);
    submit(rig, last, [asid(3)]);
    expect(rig.consumer.pass()).toBe(1);
    // A hardware VCMDQ is polled, not marked: whatever Q_PEND holds is not a slot of it (here one in use, and garbage).
    const vintf = vintfOf(rig);
    for (const [qid, slot] of [[51, slots - 1], [52, -7]] as const) {
      hostQueue(rig, qid, slot, vintf);
      rig.consumer.addQueue(qid, VMID);
      expect(rig.i32[queueRegs(qid) + Q_STATUS]).toBe(STATUS_ENABLED);
    }
  });

  it("the slot table stays a whole number of pending words with no holes, however slots are handed out (a taken bit's lookup stays inside it)", () => {
    for (const slots of [[40], [32], [31], [5, 70, 33]]) {
      const rig = makeRig([{ vmid: VMID, psids: [1] }]);
      let max = -1;
      slots.forEach((slot, k) => {
        const q = hostQueue(rig, 10 + k, slot);
        rig.consumer.addQueue(q.qid, VMID);
        max = Math.max(max, slot);
        // Private, but the comment on it promises this shape: a packed array of whole words, so the pass's lookup
        // of any bit of a word this thread polls is an in-bounds load of an element that exists.
        const bySlot = (rig.consumer as unknown as { bySlot: unknown[] }).bySlot;
        expect(bySlot.length % 32).toBe(0);
        expect(bySlot.length).toBe((Math.floor(max / 32) + 1) * 32);
        expect(Object.keys(bySlot).length).toBe(bySlot.length);
      });
    }
  });

  it('a pass serves the marked queues in ascending slot order, whatever order they were added in', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }]);
    const qs = [70, 40, 3, 35].map((slot, k) => {
      const q = hostQueue(rig, 20 + k, slot);
      rig.consumer.addQueue(q.qid, VMID);
      Atomics.store(rig.i32, q.regs + Q_CONFIG, CONFIG_EN);
      return q;
    });
    qs.forEach((q, k) => submit(rig, q, [asid(0x100 + k)]));
    expect(rig.consumer.pass()).toBe(4);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([0x102, 0x103, 0x101, 0x100]);
  });
});

describe('removeVm', () => {
  it('refuses a VM that any served queue belongs to, not only when every queue does', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }, { vmid: VMID + 1, psids: [2] }, { vmid: VMID + 2, psids: [3] }]);
    addQueue(rig, VMID, 2);
    addQueue(rig, VMID + 1, 2);
    expect(() => rig.consumer.removeVm(VMID)).toThrow(/VMID 5 still has queues/);
    expect(() => rig.consumer.removeVm(VMID + 1)).toThrow(/VMID 6 still has queues/);
    rig.consumer.removeVm(VMID + 2);
    expect(() => rig.consumer.vm(VMID + 2)).toThrow(/VMID 7/);
  });
});

describe('the stopped list: every stopped queue resumes on its own ack', () => {
  it('two queues stopped: acked in the other order than they stopped, each resumes once, and nothing else is lost', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1], asid: 2 }]);
    const [a, b, c] = [addQueue(rig, VMID, 3), addQueue(rig, VMID, 3), addQueue(rig, VMID, 3)];
    expect(rig.consumer.pass()).toBe(0);
    submit(rig, a, [illegal(), asid(1)]);
    submit(rig, b, [illegal(), asid(2)]);
    submit(rig, c, [illegal(), asid(3)]);
    expect(rig.consumer.pass()).toBe(3);
    expect([a, b, c].map((q) => stopped(rig, q))).toEqual([true, true, true]);
    // The guest fixes each faulting slot (Linux __arm_smmu_cmdq_skip_err: a CMD_SYNC there; here a TLBI) and acks.
    for (const q of [a, b, c]) q.ring.set(asid(0x10 + q.qid), 0);
    ack(rig, a);
    expect(rig.consumer.pass()).toBe(2);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([0x10 + a.qid, 1]);
    ack(rig, c);
    expect(rig.consumer.pass()).toBe(2);
    ack(rig, b);
    expect(rig.consumer.pass()).toBe(2);
    expect([a, b, c].map((q) => consPos(rig, q))).toEqual([2, 2, 2]);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([0x10 + a.qid, 1, 0x10 + c.qid, 3, 0x10 + b.qid, 2]);
    expect(rig.consumer.hasWork()).toBe(false);
  });

  it('an acked queue that the guest disabled meanwhile is not consumed, and costs no pass of its own', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1], asid: 2 }]);
    const q = addQueue(rig, VMID, 3);
    submit(rig, q, [illegal(), asid(1)]);
    expect(rig.consumer.pass()).toBe(1);
    const passes = reg(rig, q, Q_STAT_PASSES);
    q.ring.set(asid(4), 0);
    Atomics.store(rig.i32, q.regs + Q_CONFIG, 0); // SMMUv3 §6.3.x CMDQ_EN = 0: the queue is not consumed
    ack(rig, q);
    expect(rig.consumer.pass()).toBe(0);
    expect(consPos(rig, q)).toBe(0);
    expect(reg(rig, q, Q_STAT_PASSES)).toBe(passes);
    // Re-enabled and marked (DoorbellTransport.writeConfig), it runs.
    Atomics.store(rig.i32, q.regs + Q_CONFIG, CONFIG_EN);
    markPending(rig.i32, KTHREAD_CTL, q.qid);
    expect(rig.consumer.pass()).toBe(2);
    expect(reg(rig, q, Q_STAT_PASSES)).toBe(passes + 1);
  });
});

describe('hardware VCMDQs (Q_VINTF): polled while enabled, left alone while disabled', () => {
  it('a disabled hw queue is neither consumed nor work: the thread may sleep; an idle enabled one costs no pass', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1], asid: 2 }]);
    const hw = addQueue(rig, VMID, 3, vintfOf(rig));
    Atomics.store(rig.i32, hw.regs + Q_CONFIG, 0); // added, not (or no longer) enabled: tegra241_vcmdq_hw_deinit
    expect(rig.consumer.hasWork()).toBe(false);
    hw.ring.set(asid(1), 0);
    Atomics.store(rig.i32, hw.regs + Q_PROD, 1);
    expect(rig.consumer.pass()).toBe(0);
    expect(consPos(rig, hw)).toBe(0);
    expect(reg(rig, hw, Q_STAT_PASSES)).toBe(0);
    Atomics.store(rig.i32, hw.regs + Q_CONFIG, CONFIG_EN);
    expect(rig.consumer.pass()).toBe(1);
    expect(reg(rig, hw, Q_STAT_PASSES)).toBe(1);
    // Enabled with nothing new: polled every pass, consumed by none.
    expect(rig.consumer.pass()).toBe(0);
    expect(rig.consumer.pass()).toBe(0);
    expect(reg(rig, hw, Q_STAT_PASSES)).toBe(1);
  });
});
