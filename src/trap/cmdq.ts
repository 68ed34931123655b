// The VMM's emulation of one trapped SMMU CMDQ (QEMU smmuv3_cmdq_consume
// with the accel forward, smmu-facts.md §6, batched per CMD_SYNC as issue 5
// asks). Pure: the kernel is reached through the TrapKernel port (a mailbox
// ioctl in the VMM thread, a direct call in tests), the registers are words
// of the shared register block, written as the kernel thread writes a vCMDQ's
// (the ordering protocol in src/layout.ts), so the guest driver reads CONS,
// ERR and GERROR the same way on both paths.
//
// Consumption runs synchronously inside the trapped register write, as QEMU
// does inside the MMIO write: when `writeProd` returns, every command up to
// PROD has been consumed or the queue has stopped on an error.

import { CS, F, OP } from '../fields.ts';
import { CERROR } from '../errors.ts';
import {
  CONFIG_EN, CONS_ERR_MASK, CONS_ERR_SHIFT, GERROR_CMDQ_ERR, GERROR_MSI_CMDQ_ABT, Q_BASE, Q_CONFIG, Q_CONS,
  Q_ERR_REASON, Q_GERROR, Q_GERRORN, Q_LOG2SIZE, Q_PROD, Q_STATUS, Q_STAT_CMDS, Q_STAT_ERRORS, Q_STAT_PASSES,
  Q_STAT_SLOT_READS, Q_STAT_SYNCS, STATUS_ENABLED, notifyQueueWaiters,
} from '../layout.ts';
import { queueIncProd, queuePosMask, queueUsed } from '../queue.ts';
import type { SmmuFeatures } from '../features.ts';
import { FirstPass, STOP } from './firstpass.ts';

/** What the VMM asks of the kernel (ioctls on the vIOMMU). */
export interface TrapKernel {
  /**
   * IOMMU_HWPT_INVALIDATE of the first `n` commands of the batch buffer this
   * port was built over. Returns 0 or -errno; `entryNum` is then the count
   * the kernel executed.
   */
  invalidate(n: number): number;
  readonly entryNum: number;
  /**
   * The guest changed the STE of `vsid`: re-read it and re-attach the device
   * to a nested HWPT built from it (the kernel rewrites the physical STE and
   * drops its cached configuration). Returns 0, or -errno when the vSTE
   * could not be used: outside guest RAM (-EFAULT; an abort STE is then
   * installed), refused by arm_smmu_validate_vste (-EIO; abort installed),
   * or no physical STE behind the vSID yet (-ENOENT; nothing to install).
   */
  cfgiSte(vsid: number): number;
}

/** ERR_REASON kinds of the trap path, after the kernel thread's ERR_KIND values. */
export const TRAP_ERR_KIND = {
  /** The first pass refused the command (code: FirstPass `ill`, see firstPassIllText). */
  FIRST_PASS: 8,
  /** The kernel refused a forwarded command (code: -errno of the ioctl). */
  IOCTL: 9,
} as const;

/** Counters the VMM keeps per queue (the CLI and tests read them). */
export interface TrapCounts {
  /** Commands executed by the kernel on this queue's behalf (sum of entry_num out). */
  forwarded: number;
  /** Commands consumed by the VMM itself: CFGI_STE*, PREFETCH*, PRI_RESP, RESUME, STALL_TERM, CMD_SYNC. */
  handledByVmm: number;
  /** IOMMU_HWPT_INVALIDATE calls made. */
  ioctls: number;
  /**
   * CFGI_STEs whose vSTE could not be used (TrapKernel.cfgiSte errors). The
   * command itself completed, as on hardware, where CFGI_STE never reads the
   * STE: the bad STE shows when the device next translates (C_BAD_STE,
   * F_STE_FETCH). The vSMMU has no event queue, so the VMM counts them.
   */
  steEvents: number;
}

/** Words of a TrapCmdq's counters (TrapCounts, in this order). */
export const TRAP_COUNT_WORDS = 4;
const C_FORWARDED = 0;
const C_HANDLED = 1;
const C_IOCTLS = 2;
const C_STE_EVENTS = 3;

export class TrapCmdq implements TrapCounts {
  private readonly fp: FirstPass;
  private readonly queue: Int32Array;
  private readonly log2size: number;

  /**
   * `i32` is the whole SAB, `regs` the word offset of queue `qid`'s register
   * block (its LOG2SIZE and BASE already set by the host), `ram` the VM's
   * RAM window [ramBase, ramBase + ramBytes) as byte PAs, `vsids` the vSIDs
   * this vSMMU has devices for, `batch` the buffer the kernel port forwards.
   */
  constructor(
    private readonly i32: Int32Array,
    private readonly regs: number,
    private readonly qid: number,
    private readonly feat: SmmuFeatures,
    private readonly kernel: TrapKernel,
    batch: Uint32Array,
    private readonly ramBase: number,
    private readonly ramBytes: number,
    private readonly vsids: readonly number[],
    /**
     * The counters (TRAP_COUNT_WORDS): private to the VMM thread, or words of
     * the VMM's shared memory when every vCPU thread runs this emulation
     * (trap-inline), written under its BQL.
     */
    private readonly counts: Int32Array = new Int32Array(TRAP_COUNT_WORDS),
  ) {
    this.log2size = i32[regs + Q_LOG2SIZE]!;
    const base = i32[regs + Q_BASE]! >>> 2;
    this.queue = i32.subarray(base, base + (4 << this.log2size));
    this.fp = new FirstPass(batch);
  }

  get forwarded(): number {
    return this.counts[C_FORWARDED]!;
  }
  get handledByVmm(): number {
    return this.counts[C_HANDLED]!;
  }
  get ioctls(): number {
    return this.counts[C_IOCTLS]!;
  }
  get steEvents(): number {
    return this.counts[C_STE_EVENTS]!;
  }

  /** Trapped write of SMMU_CMDQ_PROD. */
  writeProd(v: number): void {
    Atomics.store(this.i32, this.regs + Q_PROD, v); // publish: PROD register (the trapped write), for readers of the register page
    this.consume();
  }

  /** Trapped write of GERRORN: an ack re-runs the consumer (QEMU smmuv3_write_gerrorn). */
  writeGerrorn(v: number): void {
    Atomics.store(this.i32, this.regs + Q_GERRORN, v); // publish: GERRORN register (the trapped write)
    this.consume();
  }

  /** Trapped write of CONFIG (CR0.CMDQEN's role); enabling re-runs the consumer. */
  writeConfig(v: number): void {
    const i32 = this.i32;
    Atomics.store(i32, this.regs + Q_CONFIG, v); // publish: CONFIG register (the trapped write)
    Atomics.store(i32, this.regs + Q_STATUS, (v & CONFIG_EN) !== 0 ? STATUS_ENABLED : 0); // publish: STATUS follows CONFIG
    this.consume();
  }

  /** Consume from CONS towards PROD until empty or stopped on an error. */
  consume(): void {
    const i32 = this.i32;
    const r = this.regs;
    if ((Atomics.load(i32, r + Q_CONFIG) & CONFIG_EN) === 0) return;
    if (((Atomics.load(i32, r + Q_GERROR) ^ Atomics.load(i32, r + Q_GERRORN)) & GERROR_CMDQ_ERR) !== 0) return;
    const qs = this.log2size;
    const pm = queuePosMask(qs);
    // PROD is a register: RES0 bits above WR_WRAP are ignored and an
    // overfilled PROD (UNPREDICTABLE) is consumed up to, as QEMU's
    // smmuv3_cmdq_consume does; never a CERROR (see the kernel thread's consume).
    const prod = Atomics.load(i32, r + Q_PROD) & pm;
    let cons = Atomics.load(i32, r + Q_CONS) & pm;
    Atomics.add(i32, r + Q_STAT_PASSES, 1); // unordered: statistics
    const fp = this.fp;
    while (cons !== prod) {
      fp.run(this.queue, qs, cons, prod, this.feat);
      const n = fp.batchLen;
      if (n > 0) {
        this.counts[C_IOCTLS]!++;
        const rc = this.kernel.invalidate(n);
        const done = Math.min(this.kernel.entryNum, n);
        this.counts[C_FORWARDED]! += done;
        if (rc !== 0 || done < n) {
          // QEMU accel: a failed forward is CERROR_ILL on the guest's queue, at the refused entry.
          const at = fp.batchPos[done < n ? done : n - 1]!;
          this.account(cons, at, done);
          return this.fail(at, TRAP_ERR_KIND.IOCTL, rc);
        }
      }
      // Consumed up to fp.end: the batch (all executed), the VMM's no-ops, and a closing SYNC.
      this.account(cons, fp.end, n);
      cons = fp.end;
      switch (fp.stop) {
        case STOP.ILL:
          return this.fail(cons, TRAP_ERR_KIND.FIRST_PASS, fp.ill);
        case STOP.CFGI_STE: {
          // Always consumed (spec 4.3.1: CFGI_STE does not look at the STE).
          this.cfgiSte();
          const next = queueIncProd(cons, 1, qs);
          this.account(cons, next, 0);
          cons = next;
          this.publishCons(cons);
          break;
        }
        case STOP.SYNC:
          this.completeSync(cons);
          break;
        default:
          this.publishCons(cons);
      }
    }
  }

  /** Counters for the span [from, to) now consumed, of which `forwardedHere` went to the kernel; the rest the VMM handled. */
  private account(from: number, to: number, forwardedHere: number): void {
    const used = queueUsed(to, from, this.log2size);
    this.counts[C_HANDLED]! += used - forwardedHere;
    const r = this.regs;
    Atomics.add(this.i32, r + Q_STAT_CMDS, used); // unordered: statistics
    Atomics.add(this.i32, r + Q_STAT_SLOT_READS, used); // unordered: statistics
  }

  /** CONS moves with ERR preserved, as QEMU's queue_cons_incr. */
  private publishCons(cons: number): void {
    const i32 = this.i32;
    const c = this.regs + Q_CONS;
    Atomics.store(i32, c, (Atomics.load(i32, c) & CONS_ERR_MASK) | cons); // publish: CONS release
  }

  /**
   * The CMD_SYNC before `cons` completed (everything before it executed: the
   * kernel's ioctl returned after its own syncs). Completion effects per CS,
   * spec 4.7.3: the MSI write is observable before CONS passes the SYNC.
   */
  private completeSync(cons: number): void {
    const i32 = this.i32;
    const f = this.fp.fields;
    Atomics.add(i32, this.regs + Q_STAT_SYNCS, 1); // unordered: statistics
    const cs = f[F.CS]!;
    if (cs === CS.IRQ && this.feat.MSI) this.msiWrite(f[F.MSIADDR_LO]!, f[F.MSIADDR_HI]!, f[F.MSIDATA]!);
    this.publishCons(cons);
    if (cs === CS.SEV || cs === CS.IRQ) Atomics.notify(i32, this.regs + Q_CONS);
  }

  /** MSIData to the guest IPA MSIAddr: the VMM's map of guest RAM is stage 2's (IPA + ramBase). */
  private msiWrite(lo: number, hi: number, data: number): void {
    // MSIAddr == 0 means no MSI (spec 4.7.3).
    if (lo === 0 && hi === 0) return;
    if (hi !== 0 || lo + 4 > this.ramBytes) {
      this.raiseGerror(GERROR_MSI_CMDQ_ABT);
      return;
    }
    const w = (this.ramBase + lo) >>> 2;
    Atomics.store(this.i32, w, data); // publish: MSI release
    Atomics.notify(this.i32, w);
  }

  /** The VMM's own handling of CFGI_STE / CFGI_STE_RANGE / CFGI_ALL: re-attach every device in range. */
  private cfgiSte(): void {
    const f = this.fp.fields;
    const sid = f[F.SID]!;
    // CFGI_STE is a range of one SID; STE_RANGE covers 2^(Range+1) SIDs, Range=31 all of them.
    const range = f[F.OP] === OP.CFGI_STE_RANGE ? f[F.RANGE]! : -1;
    for (let k = 0; k < this.vsids.length; k++) {
      const vsid = this.vsids[k]!;
      const hit = range === -1 ? vsid === sid : range >= 31 || ((vsid ^ sid) >>> (range + 1)) === 0;
      if (hit && this.kernel.cfgiSte(vsid) !== 0) this.counts[C_STE_EVENTS]!++;
    }
  }

  /**
   * Stop at `cons` with CERROR_ILL: CONS.ERR is written before
   * GERROR.CMDQ_ERR is toggled (spec 7.1), so a guest that sees the error
   * reads the right CONS.
   */
  private fail(cons: number, kind: number, code: number): void {
    const i32 = this.i32;
    const r = this.regs;
    i32[r + Q_ERR_REASON] = (kind << 16) | (code & 0xffff);
    Atomics.add(i32, r + Q_STAT_ERRORS, 1); // unordered: statistics
    Atomics.store(i32, r + Q_CONS, cons | (CERROR.ILL << CONS_ERR_SHIFT)); // publish: CONS release
    this.raiseGerror(GERROR_CMDQ_ERR);
    notifyQueueWaiters(i32, this.qid);
  }

  /** Toggle a GERROR bit unless that error is already active. */
  private raiseGerror(bit: number): void {
    const i32 = this.i32;
    const r = this.regs;
    const g = Atomics.load(i32, r + Q_GERROR);
    if (((g ^ Atomics.load(i32, r + Q_GERRORN)) & bit) === 0) {
      Atomics.store(i32, r + Q_GERROR, g ^ bit); // publish: GERROR release
      Atomics.notify(i32, r + Q_GERROR);
    }
  }
}
