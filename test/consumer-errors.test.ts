// The kernel thread's error and signalling paths, driven in-thread (the
// doorbell-* tests prove the same on real threads, where a mutant of the
// consumer cannot be seen by mutation testing). Hardware behaviour mirrored:
// SMMUv3 §3.5.2 / §7.1 (CONS.ERR, GERROR.CMDQ_ERR, a stopped queue resumes
// on GERRORN), QEMU smmuv3_cmdq_consume (stop at the faulting command,
// CONS.ERR kept across later advances, queue_cons_incr).
import { describe, expect, it, vi } from 'vitest';
import { buildCfgiSte, buildCmdSync, buildTlbiNhAll, buildTlbiNhAsid, buildTlbiNhVa } from '../src/codec.ts';
import { CERROR } from '../src/errors.ts';
import { CS, F, OP } from '../src/fields.ts';
import {
  CONFIG_EN, CONS_ERR_SHIFT, CTL_CRASH, CTL_CRASH_AFTER, CTL_CTRL, CTL_HEARTBEAT, CTL_INJECT_DELAY_US, CTL_SLOWDOWN_NS, CTL_SPIN_US, CTL_STAT_PASSES, CTL_STAT_SLEEPS, CTL_STATE, ERR_KIND, GERROR_CMDQ_ERR,
  GERROR_MSI_CMDQ_ABT, KTHREAD_CTL, KTHREAD_OP, MAILBOX_STATE, MB_ARG0, MB_OP, MB_PAYLOAD, MB_RES0, MB_STATE, Q_BASE, Q_CONFIG,
  Q_CMDSET, Q_CONS, Q_ERR_REASON, Q_GERROR, Q_GERRORN, Q_LOG2SIZE, Q_PEND, Q_PROD, Q_STAT_CMDS, Q_STAT_ERRORS, Q_STAT_PASSES,
  Q_STAT_SLOT_READS, Q_STAT_SYNCS, Q_STATUS, Q_WAITERS, SERVER_STATE, STATUS_ENABLED, mailboxWords, markPending, pendingSlot, pendingWord, queueRegs,
} from '../src/layout.ts';
import { ACCESS, PROT } from '../src/model/index.ts';
import { VCMDQ_CMDSETS, VCMDQ_TEGRA241, VSMMU_REJECT, VSmmu } from '../src/vsmmu.ts';
import { addQueue, consPos, makeRig, submit, type Rig, type RigQueue } from './consumer-rig.ts';

const VMID = 5;

function rig1(log2 = 3): { rig: Rig; q: RigQueue } {
  const rig = makeRig([{ vmid: VMID, psids: [1], asid: 2 }]);
  return { rig, q: addQueue(rig, VMID, log2) };
}

const asid = (a: number): Uint32Array => {
  const u = new Uint32Array(4);
  buildTlbiNhAsid(u, a, 0);
  return u;
};
const sync = (cs: number, msiIpa = 0, data = 0): Uint32Array => {
  const u = new Uint32Array(4);
  buildCmdSync(u, cs, msiIpa, 0, data);
  return u;
};
const reg = (rig: Rig, q: RigQueue, w: number): number => Atomics.load(rig.i32, q.regs + w);
const errOf = (rig: Rig, q: RigQueue): number => (reg(rig, q, Q_CONS) >>> CONS_ERR_SHIFT) & 0x7f;

/** Guest acks GERROR (writes GERRORN = GERROR), as arm_smmu_gerror_handler does after fixing the queue. */
function ack(rig: Rig, q: RigQueue): void {
  Atomics.store(rig.i32, q.regs + Q_GERRORN, reg(rig, q, Q_GERROR));
}

describe('queue errors stop the queue at the faulting command', () => {
  it('a command the vSMMU refuses: CONS at it with ERR=ILL, GERROR.CMDQ_ERR toggled, earlier commands executed, reason VSMMU', () => {
    const { rig, q } = rig1();
    const bad = new Uint32Array(4);
    buildCfgiSte(bad, 0, 1); // not in the vCMDQ's guest-owned set (Tegra241 VCMDQ)
    submit(rig, q, [asid(1), asid(2), bad, asid(3)]);
    expect(rig.consumer.pass()).toBe(3);
    expect(consPos(rig, q)).toBe(2);
    expect(errOf(rig, q)).toBe(CERROR.ILL);
    expect(reg(rig, q, Q_GERROR)).toBe(GERROR_CMDQ_ERR);
    expect(reg(rig, q, Q_ERR_REASON)).toBe((ERR_KIND.VSMMU << 16) | VSMMU_REJECT.OPCODE | (OP.CFGI_STE << 8));
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([1, 2]);
    expect([reg(rig, q, Q_STAT_CMDS), reg(rig, q, Q_STAT_ERRORS), reg(rig, q, Q_STAT_SLOT_READS), reg(rig, q, Q_STAT_PASSES)]).toEqual([3, 1, 3, 1]);
    // Stopped: no service (and no work reported) until the guest acks, whatever PROD says.
    expect(rig.consumer.hasWork()).toBe(false);
    expect(rig.consumer.pass()).toBe(0);
    // The guest rewrites the faulting slot (arm_smmu_cmdq_skip_err: a CMD_SYNC) and acks: consumption resumes there.
    q.ring.set(sync(CS.NONE), 2 * 4);
    ack(rig, q);
    expect(rig.consumer.hasWork()).toBe(true);
    expect(rig.consumer.pass()).toBe(2);
    expect(consPos(rig, q)).toBe(4);
    // CONS.ERR stays as last reported while CONS advances (QEMU queue_cons_incr keeps it).
    expect(errOf(rig, q)).toBe(CERROR.ILL);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([1, 2, 3]);
  });

  it('a command that fails to decode: ERR=ILL, reason DECODE; a Reserved CS sync: ILL too', () => {
    const { rig, q } = rig1();
    const res0 = asid(4);
    res0[2] = 0x1000; // TLBI_NH_ASID's address dword is RES0 (SMMUv3 §4.4.2)
    submit(rig, q, [res0]);
    expect(rig.consumer.pass()).toBe(1);
    expect(consPos(rig, q)).toBe(0);
    expect(errOf(rig, q)).toBe(CERROR.ILL);
    expect(reg(rig, q, Q_ERR_REASON) >>> 16).toBe(ERR_KIND.DECODE);
    expect(reg(rig, q, Q_ERR_REASON) & 0xffff).not.toBe(0);
    expect(rig.model.log).toEqual([]);

    const { rig: r2, q: q2 } = rig1();
    const s = sync(CS.NONE);
    s[0] = s[0]! | (3 << 12);
    submit(r2, q2, [asid(1), s]);
    expect(r2.consumer.pass()).toBe(2);
    expect(consPos(r2, q2)).toBe(1);
    expect(errOf(r2, q2)).toBe(CERROR.ILL);
    // Both the decoder and the vSMMU refuse CS=0b11; the decoder's reason is the one reported.
    expect(reg(r2, q2, Q_ERR_REASON) >>> 16).toBe(ERR_KIND.DECODE);
    expect(reg(r2, q2, Q_STAT_SYNCS)).toBe(0);
  });

  it('the model refusing a command stops the queue with the model\'s CERROR, reason MODEL', () => {
    const { rig, q } = rig1();
    rig.model.refuse = (f) => (f[F.ASID] === 7 ? CERROR.ATC_INV_SYNC : 0);
    submit(rig, q, [asid(6), asid(7), asid(8)]);
    expect(rig.consumer.pass()).toBe(2);
    expect(consPos(rig, q)).toBe(1);
    expect(errOf(rig, q)).toBe(CERROR.ATC_INV_SYNC);
    expect(reg(rig, q, Q_ERR_REASON)).toBe((ERR_KIND.MODEL << 16) | CERROR.ATC_INV_SYNC);
    expect(reg(rig, q, Q_GERROR)).toBe(GERROR_CMDQ_ERR);
    expect(reg(rig, q, Q_STAT_PASSES)).toBe(1);
    // A second error after the ack toggles GERROR back (GERROR ^ GERRORN = active errors).
    ack(rig, q);
    rig.model.refuse = (f) => (f[F.ASID] === 7 ? CERROR.ABT : 0);
    expect(rig.consumer.pass()).toBe(1);
    expect(errOf(rig, q)).toBe(CERROR.ABT);
    expect(reg(rig, q, Q_GERROR)).toBe(0);
    expect(reg(rig, q, Q_STAT_ERRORS)).toBe(2);
  });

  it('PROD bits above WR_WRAP are RES0: ignored, the queue is consumed up to the masked PROD (QEMU smmuv3_cmdq_consume)', () => {
    const { rig, q } = rig1(2);
    q.ring.set(asid(1), 0);
    q.ring.set(asid(2), 4);
    q.ring.set(asid(3), 8);
    Atomics.store(rig.i32, q.regs + Q_PROD, 0b011 | (1 << 8));
    markPending(rig.i32, KTHREAD_CTL, q.qid);
    expect(rig.consumer.pass()).toBe(3);
    expect(consPos(rig, q)).toBe(0b011);
    expect(errOf(rig, q)).toBe(0);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([1, 2, 3]);
  });

  it('a full queue (PROD = CONS with the wrap bit flipped) is consumed whole', () => {
    const { rig, q } = rig1(2);
    submit(rig, q, [asid(1), asid(2), asid(3), asid(4)]);
    expect(q.prod).toBe(0b100);
    expect(rig.consumer.pass()).toBe(4);
    expect(consPos(rig, q)).toBe(0b100);
    expect(errOf(rig, q)).toBe(0);
  });
});

describe('CMD_SYNC signalling', () => {
  it('CS=IRQ writes MSIData at the stage-2 translation of MSIAddr; an unmapped MSIAddr raises GERROR.MSI_CMDQ_ABT and still completes', () => {
    const { rig, q } = rig1();
    submit(rig, q, [sync(CS.IRQ, rig.msiIpa + 8, 0xabc)]);
    expect(rig.consumer.pass()).toBe(1);
    expect(rig.i32[(rig.msiPa >>> 2) + 2]).toBe(0xabc);
    expect(reg(rig, q, Q_GERROR)).toBe(0);
    // IPA beyond the VM's RAM: no stage-2 mapping (SMMUv3 §3.16.1: the MSI write aborts, GERROR.MSI_CMDQ_ABT_ERR).
    submit(rig, q, [sync(CS.IRQ, 0x7000_0000, 0xdef)]);
    expect(rig.consumer.pass()).toBe(1);
    expect(consPos(rig, q)).toBe(2);
    expect(errOf(rig, q)).toBe(0);
    expect(reg(rig, q, Q_GERROR)).toBe(GERROR_MSI_CMDQ_ABT);
    // Still active (not acked): a second abort does not toggle it back.
    submit(rig, q, [sync(CS.IRQ, 0x7000_0000, 0xdef)]);
    expect(rig.consumer.pass()).toBe(1);
    expect(reg(rig, q, Q_GERROR)).toBe(GERROR_MSI_CMDQ_ABT);
    // The MSI abort does not stop the queue (it is not CMDQ_ERR).
    expect(rig.consumer.hasWork()).toBe(false);
    submit(rig, q, [asid(3)]);
    expect(rig.consumer.hasWork()).toBe(true);
    expect(rig.consumer.pass()).toBe(1);
    expect(reg(rig, q, Q_STAT_SYNCS)).toBe(3);
  });

  it('CS=IRQ with MSIAddr 0, CS=NONE and CS=SEV write no MSI; an MSI at the last word of memory aborts', () => {
    const { rig, q } = rig1();
    Atomics.store(rig.i32, q.regs + Q_CONFIG, 0);
    submit(rig, q, [sync(CS.IRQ, 0, 0x55), sync(CS.NONE, rig.msiIpa, 0x66), sync(CS.SEV, rig.msiIpa, 0x77)]);
    const before = rig.i32.slice();
    Atomics.store(rig.i32, q.regs + Q_CONFIG, CONFIG_EN);
    expect(rig.consumer.pass()).toBe(3);
    // Only the queue's own registers changed (and its pending bit, taken).
    const changed: number[] = [];
    const pend = pendingWord(rig.i32, KTHREAD_CTL, pendingSlot(rig.i32, q.qid));
    for (let k = 0; k < before.length; k++) if (rig.i32[k] !== before[k] && (k < q.regs || k >= q.regs + 64) && k !== pend) changed.push(k);
    expect(changed).toEqual([]);

    // A stage 2 that maps the MSI to the last 2 bytes of host memory: the 4-byte write would leave it.
    let msiPa = 0;
    const r2 = makeRig([{ vmid: VMID, psids: [1] }], { stage2: () => msiPa });
    const mem = r2.i32.byteLength;
    msiPa = mem - 2;
    const q2 = addQueue(r2, VMID, 2);
    submit(r2, q2, [sync(CS.IRQ, 0x40, 1)]);
    expect(r2.consumer.pass()).toBe(1);
    expect(reg(r2, q2, Q_GERROR)).toBe(GERROR_MSI_CMDQ_ABT);
    msiPa = mem - 4;
    ack(r2, q2);
    submit(r2, q2, [sync(CS.IRQ, 0x40, 9)]);
    expect(r2.consumer.pass()).toBe(1);
    expect(r2.i32[r2.i32.length - 1]).toBe(9);
    expect(reg(r2, q2, Q_GERROR)).toBe(GERROR_MSI_CMDQ_ABT); // no new abort: unchanged since the ack
  });

  it('without IDR0.MSI a CS=IRQ sync completes without writing', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }], { features: { MSI: false } });
    const q = addQueue(rig, VMID, 2);
    submit(rig, q, [sync(CS.IRQ, rig.msiIpa, 0x99)]);
    expect(rig.consumer.pass()).toBe(1);
    expect(consPos(rig, q)).toBe(1);
    expect(rig.i32[rig.msiPa >>> 2]).toBe(0);
  });
});

describe('service bookkeeping', () => {
  it('a queue is served only while CONFIG.EN is set; addQueue starts at the CONS register and reports ENABLED', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }]);
    const qid = 40;
    const r = queueRegs(qid);
    const base = rig.w.layout.alloc(64, 64);
    rig.i32[r + Q_LOG2SIZE] = 2;
    rig.i32[r + Q_BASE] = base;
    // The queue was consumed to position 0b110 before (say, by an earlier kernel thread); ERR bits are not a position.
    rig.i32[r + Q_CONS] = 0b110 | (CERROR.ILL << CONS_ERR_SHIFT);
    rig.consumer.addQueue(qid, VMID);
    expect(rig.i32[r + Q_STATUS]).toBe(STATUS_ENABLED);
    const ring = new Uint32Array(rig.w.mem, base, 16);
    ring.set(asid(11), 2 * 4);
    ring.set(asid(12), 3 * 4);
    Atomics.store(rig.i32, r + Q_PROD, 0b000);
    markPending(rig.i32, KTHREAD_CTL, qid);
    expect(rig.consumer.pass()).toBe(0); // not enabled: the pending bit is taken and dropped
    expect(rig.consumer.hasWork()).toBe(false);
    // Enabling is announced like a PROD (layout.ts): whoever sets CONFIG.EN then marks the queue pending.
    Atomics.store(rig.i32, r + Q_CONFIG, CONFIG_EN);
    expect(rig.consumer.hasWork()).toBe(false);
    markPending(rig.i32, KTHREAD_CTL, qid);
    expect(rig.consumer.hasWork()).toBe(true);
    expect(rig.consumer.pass()).toBe(2);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([11, 12]);
    expect(rig.i32[r + Q_CONS]! & 7).toBe(0);
  });

  it('addQueue refuses LOG2SIZE beyond IDR1.CMDQS; addVm refuses a VMID twice; vm() names an unknown VMID', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }], { features: { CMDQS: 4 } });
    const r = queueRegs(41);
    rig.i32[r + Q_LOG2SIZE] = 5;
    expect(() => rig.consumer.addQueue(41, VMID)).toThrow(RangeError);
    rig.i32[r + Q_LOG2SIZE] = -1;
    expect(() => rig.consumer.addQueue(41, VMID)).toThrow(RangeError);
    rig.i32[r + Q_LOG2SIZE] = 4;
    rig.i32[r + Q_BASE] = rig.w.layout.alloc(256, 256);
    rig.consumer.addQueue(41, VMID);
    expect(rig.i32[r + Q_STATUS]).toBe(STATUS_ENABLED);
    expect(() => rig.consumer.addVm(VMID, rig.consumer.vm(VMID))).toThrow(/VMID 5/);
    expect(() => rig.consumer.vm(6)).toThrow(/VMID 6/);
    expect(() => rig.consumer.addQueue(42, 6)).toThrow(/VMID 6/);
  });

  it('hasWork sees a control message, a state change, the crash hook, and a mailbox request', () => {
    const { rig } = rig1();
    const i32 = rig.i32;
    Atomics.store(i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.RUNNING);
    expect(rig.consumer.hasWork()).toBe(true); // addQueue marked the new queue pending, once
    expect(rig.consumer.pass()).toBe(0);
    expect(rig.consumer.hasWork()).toBe(false);
    Atomics.add(i32, KTHREAD_CTL + CTL_CTRL, 1);
    expect(rig.consumer.hasWork()).toBe(true);
    Atomics.sub(i32, KTHREAD_CTL + CTL_CTRL, 1);
    Atomics.store(i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.STOPPING);
    expect(rig.consumer.hasWork()).toBe(true);
    Atomics.store(i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.RUNNING);
    Atomics.store(i32, KTHREAD_CTL + CTL_CRASH, 1);
    expect(rig.consumer.hasWork()).toBe(true);
    Atomics.store(i32, KTHREAD_CTL + CTL_CRASH, 0);
    rig.consumer.mailboxes.add(3);
    expect(rig.consumer.hasWork()).toBe(false);
    Atomics.store(i32, mailboxWords(3) + MB_STATE, MAILBOX_STATE.REQUEST);
    expect(rig.consumer.hasWork()).toBe(true);
  });

  it('the TRANSLATE mailbox answers what the model translates, before the queues of the same pass', () => {
    const { rig, q } = rig1();
    const vm = rig.vms[0]!;
    vm.pt.map(0x4000_0000, vm.dataIpa, 0x1000, PROT.READ | PROT.WRITE);
    const mb = mailboxWords(2);
    rig.consumer.mailboxes.add(2);
    const i32 = rig.i32;
    i32[mb + MB_OP] = KTHREAD_OP.TRANSLATE;
    i32.set([1, -1, 0x4000_0123, 0, ACCESS.READ], mb + MB_ARG0);
    i32.fill(-7, mb + MB_RES0, mb + MB_RES0 + 7);
    Atomics.store(i32, mb + MB_STATE, MAILBOX_STATE.REQUEST);
    // The same pass also consumes an NH_ASID of that ASID; the translation was served first (it may see the old entry).
    submit(rig, q, [asid(2)]);
    expect(rig.consumer.pass()).toBe(2);
    expect(Atomics.load(i32, mb + MB_STATE)).toBe(MAILBOX_STATE.RESPONSE);
    const out = new Uint32Array(8);
    expect(i32[mb + MB_RES0]).toBe(rig.w.model.translate(1, -1, 0x4000_0123, 0, ACCESS.READ, out));
    expect(i32[mb + MB_RES0]).toBe(0);
    expect(Array.from(i32.subarray(mb + MB_RES0 + 1, mb + MB_RES0 + 7), (x) => x >>> 0)).toEqual(Array.from(out.subarray(0, 6)));
    expect(i32[mb + MB_RES0 + 1]).toBe(vm.gm.paOf(vm.dataIpa + 0x123));
    expect(rig.w.model.stats.iotlbInvalidated).toBeGreaterThan(0);
  });

  it('run: marks RUNNING, serves control messages, stops when STATE leaves RUNNING, beats the heartbeat; markDead', () => {
    const { rig, q } = rig1();
    const i32 = rig.i32;
    submit(rig, q, [asid(1)]);
    Atomics.add(i32, KTHREAD_CTL + CTL_CTRL, 1);
    let controls = 0;
    const beat = i32[KTHREAD_CTL + CTL_HEARTBEAT]!;
    rig.consumer.run({
      control: () => {
        controls++;
        // First control: let one pass run; the second stops the thread.
        if (controls === 1) Atomics.add(i32, KTHREAD_CTL + CTL_CTRL, 1);
        else Atomics.store(i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.STOPPING);
        expect(Atomics.load(i32, KTHREAD_CTL + CTL_STATE)).not.toBe(SERVER_STATE.STARTING);
      },
      crash: () => { throw new Error('no crash armed'); },
    });
    expect(controls).toBe(2);
    expect(consPos(rig, q)).toBe(1);
    expect(i32[KTHREAD_CTL + CTL_HEARTBEAT]).toBe(beat + 1);
    expect(i32[KTHREAD_CTL + CTL_STAT_PASSES]).toBe(1);
    rig.consumer.markDead();
    expect(Atomics.load(i32, KTHREAD_CTL + CTL_STATE)).toBe(SERVER_STATE.DEAD);
  });

  it('run: the crash hook fires before anything else, and a PROD published after it is never consumed', () => {
    const { rig, q } = rig1();
    const i32 = rig.i32;
    Atomics.store(i32, KTHREAD_CTL + CTL_CRASH, 1);
    submit(rig, q, [asid(1)]);
    expect(() => rig.consumer.run({ control: () => {}, crash: () => { throw new Error('crashed'); } })).toThrow('crashed');
    expect(consPos(rig, q)).toBe(0);
    expect(rig.model.log).toEqual([]);
    // pass() itself checks the hook after reading PROD (the hooks are the ones run() was given).
    expect(() => rig.consumer.pass()).toThrow('crashed');
    expect(rig.model.log).toEqual([]);
  });

  it('the mid-pass crash hook: the pass stops right after its k-th command, CONS published past the last CMD_SYNC only', () => {
    const { rig, q } = rig1(4);
    const i32 = rig.i32;
    const crashed = { control: () => {}, crash: () => { throw new Error('crashed'); } };
    rig.consumer.pass(); // the new queue's one look (addQueue marks it pending), before the hook is armed
    Atomics.store(i32, KTHREAD_CTL + CTL_CRASH_AFTER, 4);
    Atomics.store(i32, KTHREAD_CTL + CTL_CRASH, 1);
    // Armed with a countdown, the hook wants no service of its own: an idle thread may sleep.
    expect(rig.consumer.hasWork()).toBe(false);
    submit(rig, q, [asid(1), asid(2), sync(CS.NONE), asid(3), asid(4)]);
    expect(() => rig.consumer.run(crashed)).toThrow('crashed');
    // Executed: 1, 2, the sync (which published CONS past itself), 3; command 4 never read.
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([1, 2, 3]);
    expect([reg(rig, q, Q_STAT_CMDS), reg(rig, q, Q_STAT_SYNCS)]).toEqual([4, 1]);
    // NH_ASID 3 ran but is not published as consumed: a restart resumes at it and runs it again.
    expect(consPos(rig, q)).toBe(3);
  });

  it('the mid-pass crash hook counts down across passes, and a countdown ending on a CMD_SYNC leaves nothing unpublished', () => {
    const { rig, q } = rig1(4);
    const i32 = rig.i32;
    submit(rig, q, [asid(1)]);
    Atomics.store(i32, KTHREAD_CTL + CTL_CRASH_AFTER, 3);
    Atomics.store(i32, KTHREAD_CTL + CTL_CRASH, 1);
    // A pass shorter than the countdown runs whole, published, and counts it down.
    expect(rig.consumer.pass()).toBe(1);
    expect(consPos(rig, q)).toBe(1);
    expect(i32[KTHREAD_CTL + CTL_CRASH_AFTER]).toBe(2);
    submit(rig, q, [asid(2), sync(CS.NONE), asid(3)]);
    expect(() => rig.consumer.run({ control: () => {}, crash: () => { throw new Error('crashed'); } })).toThrow('crashed');
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([1, 2]);
    expect(consPos(rig, q)).toBe(3);
  });

  it('NH_VA through the queue reaches the model with the forced VMID and the address', () => {
    const { rig, q } = rig1();
    const u = new Uint32Array(4);
    buildTlbiNhVa(u, 2, 0x77, 0x4000_0000, 0, 0, 0, 0, 0, 1);
    submit(rig, q, [u]);
    expect(rig.consumer.pass()).toBe(1);
    const f = rig.model.log[0]!.f;
    expect([f[F.OP], f[F.VMID], f[F.ASID], f[F.ADDR_LO], f[F.LEAF]]).toEqual([OP.TLBI_NH_VA, VMID, 2, 0x4000_0000, 1]);
  });
});

describe('setup, restart and test hooks', () => {
  it('removeVm forgets a VM no queue serves, and refuses one a queue still serves', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }, { vmid: VMID + 1, psids: [2] }]);
    addQueue(rig, VMID, 2);
    expect(() => rig.consumer.removeVm(VMID)).toThrow(/VMID 5/);
    expect(rig.consumer.vm(VMID)).toBeDefined();
    rig.consumer.removeVm(VMID + 1);
    expect(() => rig.consumer.vm(VMID + 1)).toThrow(/VMID 6/);
    // Its VMID is free again (a createVm retried after an abort).
    const vm = rig.consumer.vm(VMID);
    rig.consumer.addVm(VMID + 1, vm);
    expect(rig.consumer.vm(VMID + 1)).toBe(vm);
  });

  it('Q_CMDSET picks the queue\'s command set (strict Tegra241 refuses NH_ALL); a value naming none is refused at addQueue', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }]);
    const r = queueRegs(43);
    rig.i32[r + Q_LOG2SIZE] = 2;
    rig.i32[r + Q_BASE] = rig.w.layout.alloc(64, 64);
    rig.i32[r + Q_CMDSET] = VCMDQ_CMDSETS.length;
    expect(() => rig.consumer.addQueue(43, VMID)).toThrow(RangeError);
    expect(rig.i32[r + Q_STATUS]).toBe(0);
    rig.i32[r + Q_CMDSET] = VCMDQ_CMDSETS.indexOf(VCMDQ_TEGRA241);
    rig.consumer.addQueue(43, VMID);
    Atomics.store(rig.i32, r + Q_CONFIG, CONFIG_EN);
    const ring = new Uint32Array(rig.w.mem, rig.i32[r + Q_BASE]!, 16);
    const all = new Uint32Array(4);
    buildTlbiNhAll(all, 0);
    ring.set(asid(1), 0);
    ring.set(all, 4);
    Atomics.store(rig.i32, r + Q_PROD, 2);
    expect(rig.consumer.pass()).toBe(2);
    // tegra241_guest_vcmdq_supports_cmd has no TLBI_NH_ALL: the queue stops on it.
    expect(Atomics.load(rig.i32, r + Q_CONS) & 7).toBe(1);
    expect(rig.i32[r + Q_ERR_REASON]).toBe((ERR_KIND.VSMMU << 16) | VSMMU_REJECT.TEGRA241_OPCODE | (OP.TLBI_NH_ALL << 8));
  });

  it('a queue taken over with an error still active (GERROR != GERRORN, a restarted kernel thread) stays stopped until the ack', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }]);
    const r = queueRegs(44);
    rig.i32[r + Q_LOG2SIZE] = 2;
    rig.i32[r + Q_BASE] = rig.w.layout.alloc(64, 64);
    rig.i32[r + Q_PEND] = rig.slots.take(VMID);
    rig.i32[r + Q_GERROR] = GERROR_CMDQ_ERR;
    rig.i32[r + Q_CONS] = 1 | (CERROR.ILL << CONS_ERR_SHIFT);
    rig.consumer.addQueue(44, VMID);
    Atomics.store(rig.i32, r + Q_CONFIG, CONFIG_EN);
    const ring = new Uint32Array(rig.w.mem, rig.i32[r + Q_BASE]!, 16);
    ring.set(asid(7), 4);
    Atomics.store(rig.i32, r + Q_PROD, 2);
    markPending(rig.i32, KTHREAD_CTL, 44);
    // The bit (and addQueue's look) is taken and dropped: the queue is stopped.
    expect(rig.consumer.pass()).toBe(0);
    expect(rig.consumer.hasWork()).toBe(false);
    Atomics.store(rig.i32, r + Q_GERRORN, GERROR_CMDQ_ERR);
    expect(rig.consumer.pass()).toBe(1);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([7]);
    // A new error then toggles GERROR from the value it took over (back to 0: active again).
    rig.model.refuse = () => CERROR.ABT;
    ring.set(asid(8), 8);
    Atomics.store(rig.i32, r + Q_PROD, 3);
    markPending(rig.i32, KTHREAD_CTL, 44);
    expect(rig.consumer.pass()).toBe(1);
    expect(rig.i32[r + Q_GERROR]).toBe(0);
    expect(Atomics.load(rig.i32, r + Q_CONS) & 7).toBe(2);
  });

  it('a command the vSMMU wrongly admits is still refused by the consumer (only invalidations and CMD_SYNC execute)', () => {
    // A vSMMU that admits everything (a policy bug): the consumer's own switch is the second line.
    const rig = makeRig([{ vmid: VMID, psids: [1] }], { vsmmu: (vmid, streams) => Object.assign(new VSmmu(vmid, streams), { convertVcmdq: () => 0 }) });
    const q = addQueue(rig, VMID, 2);
    const bad = new Uint32Array(4);
    buildCfgiSte(bad, 0, 1);
    submit(rig, q, [asid(1), bad]);
    expect(rig.consumer.pass()).toBe(2);
    expect(consPos(rig, q)).toBe(1);
    expect(errOf(rig, q)).toBe(CERROR.ILL);
    expect(reg(rig, q, Q_ERR_REASON)).toBe((ERR_KIND.MODEL << 16) | CERROR.ILL);
    expect(rig.model.log.map((e) => e.f[F.OP])).toEqual([OP.TLBI_NH_ASID]);
  });

  it('a STOPPING state set before run() is kept: the thread returns without serving anything', () => {
    const { rig, q } = rig1();
    submit(rig, q, [asid(1)]);
    Atomics.store(rig.i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.STOPPING);
    rig.consumer.run({ control: () => {}, crash: () => {} });
    expect(Atomics.load(rig.i32, KTHREAD_CTL + CTL_STATE)).toBe(SERVER_STATE.STOPPING);
    expect(consPos(rig, q)).toBe(0);
    // From STARTING it moves to RUNNING (then a control message stops it).
    Atomics.store(rig.i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.STARTING);
    Atomics.add(rig.i32, KTHREAD_CTL + CTL_CTRL, 1);
    let seen = -1;
    rig.consumer.run({
      control: () => {
        seen = Atomics.load(rig.i32, KTHREAD_CTL + CTL_STATE);
        Atomics.store(rig.i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.STOPPING);
      },
      crash: () => {},
    });
    expect(seen).toBe(SERVER_STATE.RUNNING);
  });

  it('TRANSLATE answers each request afresh: a fault after a hit leaves none of the hit\'s words behind', () => {
    const { rig } = rig1();
    const vm = rig.vms[0]!;
    vm.pt.map(0x4000_0000, vm.dataIpa, 0x1000, PROT.READ | PROT.WRITE);
    const mb = mailboxWords(4);
    rig.consumer.mailboxes.add(4);
    const i32 = rig.i32;
    const ask = (iova: number): Int32Array => {
      i32[mb + MB_OP] = KTHREAD_OP.TRANSLATE;
      i32.set([1, -1, iova, 0, ACCESS.READ], mb + MB_ARG0);
      Atomics.store(i32, mb + MB_STATE, MAILBOX_STATE.REQUEST);
      expect(rig.consumer.pass()).toBe(1);
      return i32.slice(mb + MB_RES0, mb + MB_RES0 + 8);
    };
    i32[mb + MB_PAYLOAD] = 0x5a5a; // the word after the seven result words: not the handler's
    const hit = ask(0x4000_0010);
    expect(hit[0]).toBe(0);
    const miss = ask(0x5000_0000);
    const out = new Uint32Array(8);
    const fault = rig.w.model.translate(1, -1, 0x5000_0000, 0, ACCESS.READ, out);
    expect(fault).not.toBe(0);
    expect(Array.from(miss.subarray(0, 7), (x) => x >>> 0)).toEqual([fault, ...out.subarray(0, 6)]);
    // The fault code and six words, nothing beyond (MB_RES0 + 7 is MB_PAYLOAD).
    expect(MB_RES0 + 7).toBe(MB_PAYLOAD);
    expect(i32[mb + MB_PAYLOAD]).toBe(0x5a5a);
    expect(hit[7]).toBe(0x5a5a);
  });

  it('CTL_SLOWDOWN_NS (the gate\'s slower SMMU) burns work per command and changes nothing else; 0 burns none', () => {
    const { rig, q } = rig1();
    submit(rig, q, [asid(1), asid(2)]);
    expect(rig.consumer.pass()).toBe(2);
    expect(rig.consumer.slowdownSink).toBe(0);
    rig.i32[KTHREAD_CTL + CTL_SLOWDOWN_NS] = 50;
    // An odd count: the sink XORs the same work result per command.
    submit(rig, q, [asid(3)]);
    expect(rig.consumer.pass()).toBe(1);
    expect(rig.consumer.slowdownSink).not.toBe(0);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([1, 2, 3]);
    rig.i32[KTHREAD_CTL + CTL_SLOWDOWN_NS] = 0;
    const sink = rig.consumer.slowdownSink;
    submit(rig, q, [asid(5)]);
    expect(rig.consumer.pass()).toBe(1);
    expect(rig.consumer.slowdownSink).toBe(sink);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([1, 2, 3, 5]);
  });

  it('CTL_INJECT_DELAY_US (a slower SMMU, test hook): a pass gives up after the command in progress when the host stops', () => {
    const { rig, q } = rig1();
    const i32 = rig.i32;
    i32[KTHREAD_CTL + CTL_INJECT_DELAY_US] = 1;
    submit(rig, q, [asid(1), asid(2)]);
    expect(rig.consumer.pass()).toBe(2);
    expect(consPos(rig, q)).toBe(2);
    // A delay of many heartbeat periods (1 ms each): the first beat sees STOPPING and ends the pass after one command.
    i32[KTHREAD_CTL + CTL_INJECT_DELAY_US] = 10_000_000;
    Atomics.store(i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.STOPPING);
    const beat = i32[KTHREAD_CTL + CTL_HEARTBEAT]!;
    submit(rig, q, [asid(3), asid(4)]);
    expect(rig.consumer.pass()).toBe(1);
    expect(consPos(rig, q)).toBe(3);
    expect(i32[KTHREAD_CTL + CTL_HEARTBEAT]).toBe(beat + 1);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([1, 2, 3]);
  });
});

describe('wake-ups (layout.ts WAITERS: a waiter announces itself, the publisher notifies only then)', () => {
  function recordNotifies(): { calls: number[]; restore: () => void } {
    const calls: number[] = [];
    const spy = vi.spyOn(Atomics, 'notify').mockImplementation((_a, index) => {
      calls.push(index);
      return 0;
    });
    return { calls, restore: () => spy.mockRestore() };
  }

  it('nobody waiting: a pass of commands, syncs and an MSI makes no notify call', () => {
    const { rig, q } = rig1();
    const n = recordNotifies();
    try {
      submit(rig, q, [asid(1), sync(CS.SEV), sync(CS.IRQ, rig.msiIpa, 5), asid(2)]);
      expect(rig.consumer.pass()).toBe(4);
    } finally {
      n.restore();
    }
    expect(n.calls).toEqual([]);
    expect(consPos(rig, q)).toBe(4);
  });

  it('a waiter announced: woken on CONS after commands and after a sync, on the MSI word of a CS=IRQ sync, and on an error', () => {
    const { rig, q } = rig1();
    const msiWord = rig.msiPa >>> 2;
    Atomics.store(rig.i32, q.regs + Q_WAITERS, 1);
    const n = recordNotifies();
    try {
      submit(rig, q, [asid(1)]);
      rig.consumer.pass();
      expect(n.calls).toEqual([q.regs + Q_CONS]);
      n.calls.length = 0;
      submit(rig, q, [sync(CS.NONE)]);
      rig.consumer.pass();
      expect(n.calls).toEqual([q.regs + Q_CONS]);
      n.calls.length = 0;
      submit(rig, q, [sync(CS.IRQ, rig.msiIpa, 5)]);
      rig.consumer.pass();
      expect(n.calls).toEqual([msiWord, q.regs + Q_CONS]);
      n.calls.length = 0;
      rig.model.refuse = () => CERROR.ABT;
      submit(rig, q, [asid(2)]);
      rig.consumer.pass();
      expect(n.calls).toContain(q.regs + Q_CONS);
      n.calls.length = 0;
      // markDead wakes every queue's waiters and every mailbox, whatever WAITERS says.
      Atomics.store(rig.i32, q.regs + Q_WAITERS, 0);
      rig.consumer.mailboxes.add(5);
      rig.consumer.markDead();
      expect(n.calls).toContain(q.regs + Q_CONS);
      expect(n.calls).toContain(mailboxWords(5) + MB_STATE);
    } finally {
      n.restore();
    }
  });
});

describe('run(): the thread body\'s loop', () => {
  it('idle: spins CTL_SPIN_US for work (served without sleeping), then sleeps on WAKE, counted in STAT_SLEEPS', () => {
    const { rig, q } = rig1();
    const i32 = rig.i32;
    i32[KTHREAD_CTL + CTL_SPIN_US] = 50;
    submit(rig, q, [asid(1)]);
    // A fake clock, 1 µs per read; the first read inside the idle spin is when a guest submits again.
    let now = 0;
    let spinning = false;
    let arrived = false;
    const clock = vi.spyOn(performance, 'now').mockImplementation(() => {
      if (spinning && !arrived) {
        arrived = true;
        submit(rig, q, [asid(2)]);
      }
      return (now += 0.001);
    });
    let sleeps = 0;
    const wait = vi.spyOn(Atomics, 'wait').mockImplementation(() => {
      sleeps++;
      Atomics.store(i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.STOPPING); // the host stops a sleeping thread
      return 'ok';
    });
    rig.model.refuse = () => {
      spinning = true; // from the first command on, the next idle pass spins
      return 0;
    };
    try {
      rig.consumer.run({ control: () => {}, crash: () => {} });
    } finally {
      clock.mockRestore();
      wait.mockRestore();
    }
    expect(arrived).toBe(true);
    expect(rig.model.log.map((e) => e.f[F.ASID])).toEqual([1, 2]);
    expect(sleeps).toBe(1);
    expect(i32[KTHREAD_CTL + CTL_STAT_SLEEPS]).toBe(1);
    expect(i32[KTHREAD_CTL + CTL_STAT_PASSES]).toBe(2);
  });

  it('control() runs only when CTL_CTRL changed; the crash hook fires even with no work', () => {
    const { rig, q } = rig1();
    const i32 = rig.i32;
    submit(rig, q, [asid(1)]);
    Atomics.add(i32, KTHREAD_CTL + CTL_CTRL, 1);
    let controls = 0;
    // The host stops the thread while it executes the command: the loop then ends without another control().
    rig.model.refuse = () => {
      Atomics.store(i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.STOPPING);
      return 0;
    };
    rig.consumer.run({ control: () => void controls++, crash: () => {} });
    expect(controls).toBe(1);
    expect(consPos(rig, q)).toBe(1);

    const { rig: r2 } = rig1();
    Atomics.store(r2.i32, KTHREAD_CTL + CTL_CRASH, 1);
    expect(() => r2.consumer.run({ control: () => {}, crash: () => { throw new Error('crashed'); } })).toThrow('crashed');
  });

  it('TRANSLATE passes the IOVA\'s high word and the access type through (a write to a read-only page faults)', () => {
    const { rig } = rig1();
    const vm = rig.vms[0]!;
    vm.pt.map(0x4000_0000, vm.dataIpa, 0x1000, PROT.READ);
    const mb = mailboxWords(6);
    rig.consumer.mailboxes.add(6);
    const i32 = rig.i32;
    const ask = (lo: number, hi: number, access: number): number => {
      i32[mb + MB_OP] = KTHREAD_OP.TRANSLATE;
      i32.set([1, -1, lo, hi, access], mb + MB_ARG0);
      Atomics.store(i32, mb + MB_STATE, MAILBOX_STATE.REQUEST);
      rig.consumer.pass();
      return i32[mb + MB_RES0]!;
    };
    const out = new Uint32Array(8);
    expect(ask(0x4000_0000, 0, ACCESS.READ)).toBe(0);
    expect(ask(0x4000_0000, 0, ACCESS.WRITE)).toBe(rig.w.model.translate(1, -1, 0x4000_0000, 0, ACCESS.WRITE, out));
    expect(ask(0x4000_0000, 0, ACCESS.WRITE)).not.toBe(0);
    expect(ask(0x4000_0000, 1, ACCESS.READ)).toBe(rig.w.model.translate(1, -1, 0x4000_0000, 1, ACCESS.READ, out));
    expect(ask(0x4000_0000, 1, ACCESS.READ)).not.toBe(0);
  });
});
