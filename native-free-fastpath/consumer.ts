// The kernel thread's consume loop: the SW-emulated vCMDQ. Serves every
// enabled queue of its VMs and every mailbox it is given from one thread,
// visiting only the queues marked in its pending bitmap, and sleeping on the
// WAKE doorbell when idle (protocol and its lost-wakeup argument: src/layout.ts).
// No worker APIs here: kthread.worker.ts owns the port and the thread's life.
//
// The same loop is the SMMU hardware of the 'hw' path (src/hw.ts): a queue
// with a VINTF (Q_VINTF) is a Tegra241 VCMDQ, rewritten by its VINTF's
// configuration instead of the VM's vSMMU; it has no pending bit, every pass
// reads its PROD, and while one is enabled the loop never sleeps (hardware
// polls; the guest never rings a doorbell). It is this
// thread because it owns the SMMU model: the caches a TLBI must reach live in
// its heap, and a device's translations are served here too.
//
// Per command, as QEMU's smmuv3_cmdq_consume: copy the slot ONCE into a
// private Uint32Array (guest memory is untrusted and may change under us),
// apply the vSMMU's vCMDQ policy to the copy (VMID forced, vSID -> pSID),
// decode and validate the copy, execute it on the model, advance CONS.
// Errors stop the queue exactly as hardware does (smmu-facts.md §2.3).

import { decodeWords, readSlot } from '../src/codec.ts';
import { CERROR } from '../src/errors.ts';
import type { SmmuFeatures } from '../src/features.ts';
import { CS, F, FIELD_COUNT, OP } from '../src/fields.ts';
import {
  CONFIG_EN, CONS_ERR_SHIFT, CTL_KICKED_AT, CTL_CRASH, CTL_CRASH_AFTER, CTL_CTRL, CTL_HEARTBEAT, CTL_HEARTBEAT_MS, CTL_INJECT_DELAY_US, CTL_PENDING,
  CTL_PENDING_WORDS, CTL_SLOWDOWN_NS, CTL_SPIN_US, CTL_STAT_PASSES, KTHREAD_OP, CTL_STAT_SLEEPS, CTL_STATE, ERR_KIND, GERROR_CMDQ_ERR, GERROR_MSI_CMDQ_ABT,
  IDLE_HINT_SET, MB_ARG0, MB_RES0, Q_BASE, Q_CMDSET, Q_CONFIG, Q_CONS, Q_ERR_REASON, Q_GERROR, Q_GERRORN, Q_IDLE_HINT, Q_LOG2SIZE, Q_NO_NOTIFY, Q_PEND, Q_PROD,
  Q_STAT_CMDS, Q_STAT_ERRORS, Q_WAITERS, Q_STAT_PASSES, Q_STAT_SLOT_READS, Q_STAT_SYNCS, Q_STATUS, Q_VINTF, SERVER_STATE,
  STATUS_ENABLED, clockUsAt, notifyQueueWaiters, readWord, pendingBit, pendingWord, queueRegs, sleepUnlessWork, storeRelease,
} from '../src/layout.ts';
import { MailboxServer } from '../src/mailbox.ts';
import { FixedPoll, type PollPolicy } from '../src/poll-policy.ts';
import { queueIncProd, queuePosMask, queueUsed } from '../src/queue.ts';
import { VCMDQ_CMDSETS, type VcmdqCmdset, type VSmmu } from '../src/vsmmu.ts';
import { readVintf } from '../src/vintf.ts';
import { calibrateWork, work } from './slowdown.ts';
import { SPIN_CLOCK_EVERY } from '../src/waiter.ts';

/**
 * The polled set's size (layout.ts, "Polled queues"): every poll peeks each
 * member's PROD, ~1 ns for an idle one's cached line, so 8 cost a poll
 * little, and a thread kept busy by more queues than that is seldom idle
 * long enough for the bitmap's extra line to matter.
 */
export const POLLED_QUEUES = 8;
/** Passes a polled queue may go without commands before a newcomer may take its place. */
export const POLLED_IDLE_PASSES = 64;

/** Add a pass's slot reads and commands to the queue at `r`'s statistics (before the CONS publish that completes them). */
function countTaken(i32: Int32Array, r: number, reads: number, cmds: number): void {
  i32[r + Q_STAT_SLOT_READS]! += reads;
  i32[r + Q_STAT_CMDS]! += cmds;
}

/** GERROR.CMDQ_ERR active: GERROR and GERRORN differ in it (an error x is active while GERROR[x] != GERRORN[x]; software acks by toggling GERRORN, as Linux arm_smmu_gerror_handler writes back what it read). */
function errorActive(gerror: number, gerrorn: number): boolean {
  return ((gerror ^ gerrorn) & GERROR_CMDQ_ERR) !== 0;
}

/** What the consumer needs of the SMMU model. */
export interface ConsumerModel {
  execute(f: Uint32Array): number;
  translate(psid: number, ssid: number, iovaLo: number, iovaHi: number, access: number, out: Uint32Array): number;
}

/**
 * The bench's transport-only hook (startHost `model: { bypass: true }`): a
 * model whose execute accepts every command and does nothing, translations
 * still answered by `model`. The consumer keeps copying, converting,
 * decoding and validating each command and publishing CONS; only the SMMU's
 * work is gone. Swapped in once at thread start, so the default path pays no
 * per-command branch for it.
 */
export function bypassExecute(model: ConsumerModel): ConsumerModel {
  return {
    execute: () => 0,
    translate: (psid, ssid, iovaLo, iovaHi, access, out) => model.translate(psid, ssid, iovaLo, iovaHi, access, out),
  };
}

/** Stage-2 lookup of one VM: IPA -> PA, or -1 when the IPA is not mapped (an MSI to it aborts). */
export type Stage2Lookup = (ipaLo: number, ipaHi: number) => number;

export class VmEntry {
  constructor(readonly vsmmu: VSmmu, readonly stage2: Stage2Lookup) {}
}

class QueueEntry {
  /** Kernel thread's own CONS position (wrap|idx); the register is its published copy. */
  cons = 0;
  /** CONS.ERR as last reported, kept in CONS like QEMU's queue_cons_incr. */
  errBits = 0;
  /** GERROR value; only this thread writes the register. */
  gerror = 0;
  /** wrap|index bits of PROD; the rest of the register is RES0 and ignored (QEMU masks it the same way). */
  readonly posMask: number;
  /** In the thread's polled set (its NO_NOTIFY is set). */
  polled = false;
  /** The thread's pass count when this queue last had commands (the polled set's idle test). */
  workPass = 0;
  /**
   * The pass count when a pass last served this queue, polled or by its bit:
   * a bit taken later in that pass is dropped (pass()); reset when the queue
   * leaves the polled set (unpoll).
   */
  servedPass = -1;
  constructor(
    readonly qid: number,
    readonly regs: number,
    readonly log2size: number,
    /** The queue's entries as a view of host memory at BASE. */
    readonly entries: Int32Array,
    readonly vm: VmEntry,
    /** The queue's command set (Q_CMDSET, fixed at setup). */
    readonly cmdset: VcmdqCmdset,
    /** The rewrite its commands get: the VM's vSMMU, or a hardware VCMDQ's VINTF configuration. */
    readonly vsmmu: VSmmu,
    /** The queue's word and bit in its kernel thread's pending bitmap (its slot, Q_PEND). */
    readonly pendWord: number,
    readonly pendBit: number,
  ) {
    this.posMask = queuePosMask(log2size);
  }
}

export interface ConsumerHooks {
  /** Drain control messages; called when CTL_CTRL changed. */
  control(): void;
  /** The CTL_CRASH test hook fired: die without cleaning up. */
  crash(): void;
}

export class Consumer {
  readonly mailboxes: MailboxServer;
  private queues: QueueEntry[] = [];
  /** Hardware VCMDQs (Q_VINTF set): while one is enabled the thread polls and never sleeps. */
  private hwQueues: QueueEntry[] = [];
  /** Doorbell queues whose PROD the thread reads itself while it polls (layout.ts, "Polled queues"); at most POLLED_QUEUES. */
  private polled: QueueEntry[] = [];
  /** Passes made, the clock of the polled set's idle test (wraps harmlessly: only differences are compared). */
  private passCount = 0;
  /** Queue by pending slot (null: no queue of this thread), filled to whole pending words so a taken bit always indexes inside it. */
  private bySlot: (QueueEntry | null)[] = [];
  /** The pending words holding this thread's queues' bits, ascending: all a pass polls for queue work. */
  private pendWords = new Int32Array(0);
  /** Per pending word, the bits of this consumer's queues: it takes only those (a guest may set others in its own words). */
  private pendMasks = new Int32Array(0);
  /** Word offset of this thread's pending bitmap (CTL_PENDING), and its slots (32 per word, CTL_PENDING_WORDS). */
  private readonly bitmap: number;
  private readonly slots: number;
  /** Queues stopped on an error (GERROR.CMDQ_ERR active): no bit announces their GERRORN ack, so each pass reads it. */
  private readonly stopped: QueueEntry[] = [];
  private readonly vms = new Map<number, VmEntry>();
  /** Private copy of the slot being consumed, and its decoded fields. */
  private readonly u = new Uint32Array(4);
  private readonly f = new Uint32Array(FIELD_COUNT);
  private readonly tr = new Uint32Array(8);
  private ctrlSeen = 0;
  private hooks: ConsumerHooks | null = null;
  /** Bench slowdown (CTL_SLOWDOWN_NS) as it was last read, and as work iterations per command. */
  private slowdownNs = 0;
  private slowdownIters = 0;
  /** Iterations per ns on this thread, calibrated the first time a slowdown is asked for. */
  private itersPerNs = 0;
  /** Keeps the slowdown's work observable, so the JIT cannot drop it. */
  slowdownSink = 0;
  /** The sleep re-check, bound once: the idle path allocates nothing either. */
  private readonly hasWorkFn = (): boolean => this.hasWork();
  /** How long to poll after the last work (src/poll-policy.ts). */
  readonly policy: PollPolicy;
  /** The last clock read of a poll (performance.now() ms): when it saw work, the arrival time the policy is told. */
  private polledAt = 0;
  /** Index in `queues` of the queue that last had no idle hint: guestsIdle() looks there first. */
  private idleCursor = 0;

  constructor(
    private readonly i32: Int32Array,
    private readonly ctl: number,
    private readonly model: ConsumerModel,
    private readonly features: SmmuFeatures,
    /** Default: a fixed budget of CTL_SPIN_US (what `startHost({ spinUs })` asks for). */
    policy?: PollPolicy,
  ) {
    this.policy = policy ?? new FixedPoll(1000 * i32[ctl + CTL_SPIN_US]!);
    this.bitmap = i32[ctl + CTL_PENDING]!;
    const words = i32[ctl + CTL_PENDING_WORDS]!;
    if (!(this.bitmap > 0 && words > 0 && this.bitmap + words <= i32.length)) {
      throw new RangeError(`control block ${ctl} has no pending bitmap (CTL_PENDING ${this.bitmap}, CTL_PENDING_WORDS ${words}): layout.initMmio sets them`);
    }
    this.slots = words * 32;
    // The crash test hook is read after a request is seen, as after PROD in consume(): a test's request meets a
    // dead thread. A plain read for the same reason as there: the request's STATE was just loaded atomically.
    this.mailboxes = new MailboxServer(i32, () => {
      if (i32[ctl + CTL_CRASH] !== 0) this.hooks?.crash();
    });
    this.mailboxes.register(KTHREAD_OP.TRANSLATE, (m, base) => {
      const a = base + MB_ARG0;
      const out = this.tr;
      out.fill(0);
      const fault = this.model.translate(m[a]! >>> 0, m[a + 1]!, m[a + 2]! >>> 0, m[a + 3]! >>> 0, m[a + 4]!, out);
      m[base + MB_RES0] = fault;
      for (let k = 0; k < 6; k++) m[base + MB_RES0 + 1 + k] = out[k]!;
    });
  }

  addVm(vmid: number, vm: VmEntry): void {
    if (this.vms.has(vmid)) throw new Error(`VMID ${vmid} already has a vSMMU`);
    this.vms.set(vmid, vm);
  }

  /** Forget a VM no queue serves (its createVm was aborted). */
  removeVm(vmid: number): void {
    if (this.queues.some((q) => q.vm === this.vms.get(vmid))) throw new Error(`VMID ${vmid} still has queues`);
    this.vms.delete(vmid);
  }

  vm(vmid: number): VmEntry {
    const vm = this.vms.get(vmid);
    if (vm === undefined) throw new Error(`no vSMMU for VMID ${vmid}`);
    return vm;
  }

  /** Serve queue `qid`, whose registers (LOG2SIZE, BASE) the host has written. */
  addQueue(qid: number, vmid: number): void {
    const r = queueRegs(qid);
    const log2 = this.i32[r + Q_LOG2SIZE]!;
    if (!(log2 >= 0 && log2 <= this.features.CMDQS)) throw new RangeError(`queue ${qid}: LOG2SIZE ${log2} exceeds CMDQS`);
    const base = this.i32[r + Q_BASE]! >>> 0;
    const entries = new Int32Array(this.i32.buffer, base, 4 << log2);
    const cmdset = VCMDQ_CMDSETS[this.i32[r + Q_CMDSET]!];
    if (cmdset === undefined) throw new RangeError(`queue ${qid}: Q_CMDSET ${this.i32[r + Q_CMDSET]} names no command set`);
    const vm = this.vm(vmid);
    const vintf = this.i32[r + Q_VINTF]!;
    const slot = this.i32[r + Q_PEND]!;
    if (vintf === 0 && !(slot >= 0 && slot < this.slots && this.bySlot[slot] == null)) {
      throw new RangeError(`queue ${qid}: Q_PEND ${slot} is not a free slot of this thread's pending bitmap (${this.slots} slots)`);
    }
    const q = new QueueEntry(qid, r, log2, entries, vm, cmdset, vintf === 0 ? vm.vsmmu : readVintf(this.i32, vintf),
      pendingWord(this.i32, this.ctl, slot), pendingBit(slot));
    q.cons = Atomics.load(this.i32, r + Q_CONS) & q.posMask;
    q.gerror = Atomics.load(this.i32, r + Q_GERROR);
    this.queues = [...this.queues, q];
    if (this.stoppedOnError(q)) this.stopped.push(q);
    // A hardware VCMDQ is polled every pass, as the SMMU polls it; it has no pending bit (layout.ts).
    if (vintf !== 0) this.hwQueues = [...this.hwQueues, q];
    else {
      while (this.bySlot.length <= slot) this.bySlot.push(null);
      while (this.bySlot.length % 32 !== 0) this.bySlot.push(null);
      this.bySlot[slot] = q;
      // Word -> this consumer's bits in it, one more bit; rebuilt per queue added (setup, not per pass), in words' order.
      const mine = new Map(Array.from(this.pendWords, (w, k) => [w, this.pendMasks[k]!]));
      mine.set(q.pendWord, (mine.get(q.pendWord) ?? 0) | q.pendBit);
      this.pendWords = Int32Array.from(mine.keys()).sort();
      this.pendMasks = Int32Array.from(this.pendWords, (w) => mine.get(w)!);
    }
    Atomics.store(this.i32, r + Q_STATUS, STATUS_ENABLED); // publish: STATUS.ENABLED (the queue is served)
    // A new (or restarted) thread looks at each queue once: PROD may have moved before it was served.
    if (vintf === 0) {
      // A dead thread's polled set must not silence this queue's producers: clear, then mark (layout.ts, "Polled queues").
      Atomics.store(this.i32, r + Q_NO_NOTIFY, 0); // publish: NO_NOTIFY cleared, before the mark below
      Atomics.or(this.i32, q.pendWord, q.pendBit); // publish: PENDING (its own bit, for its next pass)
    }
  }

  /** Does a pending bit, a stopped queue's ack, a mailbox or a control word want service? (the sleep re-check; see layout.ts) */
  hasWork(): boolean {
    return this.controlWork(false) || this.pendingSet(false) || this.polledWork(false) || this.otherWork(false);
  }

  /**
   * hasWork() with every word but CTRL peeked (plain reads; layout.ts,
   * "Peeks"): the idle poll's test. A stale peek costs one more poll, never a
   * sleep: the re-check before Atomics.wait is hasWork().
   */
  private pollWork(): boolean {
    return this.controlWork(true) || this.polledWork(true) || this.pendingSet(true) || this.otherWork(true);
  }

  /** Has a polled queue's PROD moved past the thread's CONS? `peek` as pendingSet (a pass loads PROD before it consumes). */
  private polledWork(peek: boolean): boolean {
    const p = this.polled;
    for (let k = 0; k < p.length; k++) {
      const q = p[k]!;
      if ((readWord(this.i32, q.regs + Q_PROD, peek) & q.posMask) !== q.cons) return true;
    }
    return false;
  }

  /**
   * `q`, announced by its bit, just had commands: keep reading its PROD
   * directly. A full set takes it only in place of a queue idle for
   * POLLED_IDLE_PASSES passes, so queues that take turns never churn it.
   */
  private notePolled(q: QueueEntry): void {
    q.workPass = this.passCount;
    if (q.polled || this.stoppedOnError(q, true)) return;
    const p = this.polled;
    if (p.length === POLLED_QUEUES) {
      let k = 0;
      while (k < p.length && this.passCount - p[k]!.workPass <= POLLED_IDLE_PASSES) k++;
      if (k === p.length) return;
      this.unpoll(k, true);
    }
    q.polled = true;
    p.push(q);
    Atomics.store(this.i32, q.regs + Q_NO_NOTIFY, 1); // publish: NO_NOTIFY (a producer that reads it sets no bit)
  }

  /**
   * Take polled[k] out of the set: clear NO_NOTIFY, then (`mark`) re-read
   * PROD and set the queue's bit if it moved (layout.ts, "Polled queues").
   * No mark for a queue that stopped on an error or was disabled: what
   * resumes it (the ack, seen through the stopped list; the enable's bit)
   * loads PROD anyway.
   */
  private unpoll(k: number, mark: boolean): void {
    const p = this.polled;
    const q = p[k]!;
    p[k] = p[p.length - 1]!;
    p.pop();
    q.polled = false;
    // Its mark below may land in a word this pass has yet to take: that bit must be served, not dropped as served.
    q.servedPass = (this.passCount - 1) | 0;
    const r = q.regs;
    Atomics.store(this.i32, r + Q_NO_NOTIFY, 0); // publish: NO_NOTIFY cleared, before the PROD re-read
    if (mark && (Atomics.load(this.i32, r + Q_PROD) & q.posMask) !== q.cons) Atomics.or(this.i32, q.pendWord, q.pendBit); // publish: PENDING (its own bit)
  }

  /**
   * CTRL moved, STATE left RUNNING or the crash hook is armed. CTRL is always
   * an Atomics.load: a call the JIT cannot see through, so no peek of a poll
   * is hoisted out of its loop; and a move of it is acted on (hooks.control)
   * only after that load.
   */
  private controlWork(peek: boolean): boolean {
    const ctl = this.ctl;
    return Atomics.load(this.i32, ctl + CTL_CTRL) !== this.ctrlSeen || readWord(this.i32, ctl + CTL_STATE, peek) !== SERVER_STATE.RUNNING
      || (readWord(this.i32, ctl + CTL_CRASH, peek) !== 0 && this.crashNow());
  }

  /** Is one of this thread's pending bits set? `peek`: plain reads (a poll), else Atomics.load (the sleep re-check (A)). */
  private pendingSet(peek: boolean): boolean {
    const words = this.pendWords;
    const masks = this.pendMasks;
    for (let k = 0; k < words.length; k++) if ((readWord(this.i32, words[k]!, peek) & masks[k]!) !== 0) return true;
    return false;
  }

  /** A stopped queue acked, an enabled hw queue (the thread polls on), or a mailbox request; `peek` as pendingSet. */
  private otherWork(peek: boolean): boolean {
    const s = this.stopped;
    for (let k = 0; k < s.length; k++) if (!this.stoppedOnError(s[k]!, peek)) return true;
    return this.hwPolling(peek) || this.mailboxes.hasWork(peek);
  }

  /** Is a hardware VCMDQ enabled? Then the thread is the SMMU polling it, and never sleeps. `peek` as pendingSet. */
  private hwPolling(peek: boolean): boolean {
    const hq = this.hwQueues;
    for (let k = 0; k < hq.length; k++) if ((readWord(this.i32, hq[k]!.regs + Q_CONFIG, peek) & CONFIG_EN) !== 0) return true;
    return false;
  }

  /**
   * Queue `q`'s PROD (position bits) when it wants service, else -1. CONFIG
   * and GERRORN are read plainly: register values with nothing published
   * behind them, and a pass that took the queue's bit reads them after the
   * take, which orders them after the guest's stores (layout.ts, "Peeks").
   * PROD is the acquire: it publishes the slots up to it, so it is loaded
   * atomically, once per consume.
   */
  private serviceProd(q: QueueEntry): number {
    const i32 = this.i32;
    const r = q.regs;
    if ((i32[r + Q_CONFIG]! & CONFIG_EN) === 0) return -1;
    if (errorActive(q.gerror, i32[r + Q_GERRORN]!)) return -1;
    // PROD is a register, not a command: no CERROR applies to it. Bits above
    // WR_WRAP are RES0 and ignored; a PROD further ahead than the free space
    // (or behind CONS) is UNPREDICTABLE, and this SMMU, as QEMU's
    // smmuv3_cmdq_consume, consumes up to the masked value (at most two laps).
    const prod = Atomics.load(i32, r + Q_PROD) & q.posMask; // acquire: slots up to PROD are written
    return prod !== q.cons ? prod : -1;
  }

  /** GERROR.CMDQ_ERR active (GERRORN loaded atomically, or peeked in a poll): the queue waits for the guest's ack. */
  private stoppedOnError(q: QueueEntry, peek = false): boolean {
    return errorActive(q.gerror, readWord(this.i32, q.regs + Q_GERRORN, peek));
  }

  /** Consume queue `q` if it wants service (serviceProd); returns commands consumed. */
  private serve(q: QueueEntry, delayUs: number): number {
    const prod = this.serviceProd(q);
    return prod < 0 ? 0 : this.consume(q, prod, delayUs);
  }

  /**
   * Do all enabled queues hold their producer's "I will block" hint, and
   * none has published since (Q_IDLE_HINT)? The hint is loaded before PROD,
   * so a publish after the hint always shows as a PROD that moved past it.
   * The scan starts at the queue that failed it last time: while that one is
   * still busy, an idle transition costs one look, not one per queue (1024 by
   * default). Only an answer of true reads every queue, and the thread then
   * sleeps, which costs more than the scan.
   */
  private guestsIdle(): boolean {
    const i32 = this.i32;
    const qs = this.queues;
    const n = qs.length;
    let hinted = false;
    let k = this.idleCursor < n ? this.idleCursor : 0;
    for (let seen = 0; seen < n; seen++, k = k + 1 === n ? 0 : k + 1) {
      const q = qs[k]!;
      const r = q.regs;
      if ((Atomics.load(i32, r + Q_CONFIG) & CONFIG_EN) === 0) continue;
      const hint = Atomics.load(i32, r + Q_IDLE_HINT);
      if ((hint & IDLE_HINT_SET) === 0 || ((hint ^ Atomics.load(i32, r + Q_PROD)) & q.posMask) !== 0) {
        this.idleCursor = k;
        return false;
      }
      hinted = true;
    }
    return hinted;
  }

  /**
   * The thread body: passes until STATE leaves RUNNING. After the last work
   * it polls for as long as its policy says (src/poll-policy.ts), then sleeps
   * on WAKE. The clock is read only on that idle transition, every
   * SPIN_CLOCK_EVERY polls, and after a sleep: never while work flows. It
   * never sleeps while a hardware VCMDQ is enabled (it polls on, as the SMMU would).
   */
  run(hooks: ConsumerHooks): void {
    this.hooks = hooks;
    const i32 = this.i32;
    const ctl = this.ctl;
    // STARTING -> RUNNING only: a stop() that came first (STOPPING) is not overwritten.
    Atomics.compareExchange(i32, ctl + CTL_STATE, SERVER_STATE.STARTING, SERVER_STATE.RUNNING); // publish: STATE RUNNING
    for (;;) {
      // CTRL is loaded atomically (it publishes the control message that hooks.control reads); STATE and the
      // crash hook are peeked, as in a poll: a stale peek costs one more pass (layout.ts, "Peeks").
      if (i32[ctl + CTL_CRASH] !== 0 && this.crashNow()) hooks.crash();
      const ctrl = Atomics.load(i32, ctl + CTL_CTRL);
      if (ctrl !== this.ctrlSeen) {
        this.ctrlSeen = ctrl;
        hooks.control();
      }
      if (i32[ctl + CTL_STATE] !== SERVER_STATE.RUNNING) return;
      const work = this.pass();
      this.beat();
      if (work !== 0) {
        i32[ctl + CTL_STAT_PASSES]!++;
        continue;
      }
      if (this.hwQueues.length !== 0 && this.hwPolling(true)) continue;
      const policy = this.policy;
      const idleAt = performance.now();
      this.polledAt = idleAt;
      const budgetNs = policy.idle(idleAt * 1e6, policy.usesGuestHint && this.guestsIdle());
      if ((budgetNs > 0 && this.spin(idleAt, budgetNs)) || !this.sleep()) {
        // Seen while polling (or by the sleep's re-check): the arrival is the last clock read, no new one.
        policy.arrived(this.polledAt * 1e6, false);
        continue;
      }
      i32[ctl + CTL_STAT_SLEEPS]!++;
      // Woken: work ends the idle period; a heartbeat timeout leaves it open (the policy polls it no more). The
      // period ended at the first kick (CTL_KICKED_AT), ~15-25 µs before the wake-up reached this thread, not at it.
      const wokeAt = performance.now();
      if (this.hasWork()) {
        // (Two threads' readings of one clock: a kick can read up to ~1 µs "after" the wake-up's reading, an arrival
        // that much later, which changes the period by as little.)
        const kicked = Atomics.load(i32, ctl + CTL_KICKED_AT);
        const ago = kicked === 0 ? 0 : ((clockUsAt(wokeAt) - kicked) | 0) / 1000;
        policy.arrived((wokeAt - ago) * 1e6, true);
      }
    }
  }

  /** Empty the polled set, each queue marked if its PROD moved (unpoll): before a sleep, here or in the simulator's thread. */
  unpollAll(): void {
    while (this.polled.length !== 0) this.unpoll(this.polled.length - 1, true);
  }

  /**
   * The run loop's sleep: empty the polled set (the sleep argument covers
   * bits only; layout.ts, "Polled queues"), then sleepUnlessWork. False
   * when work came instead; true after a wake-up or heartbeatMs. Public for
   * the tests of that hand-over.
   */
  sleep(): boolean {
    this.unpollAll();
    return sleepUnlessWork(this.i32, this.ctl, this.hasWorkFn, this.i32[this.ctl + CTL_HEARTBEAT_MS]!);
  }

  /**
   * Bump HEARTBEAT (liveness only, unordered). A plain read-modify-write, not
   * an Atomics.add (~35 ns a call on Node 20, once per pass): this thread is
   * its only writer, and its readers' Atomics.load sees some recent count
   * whole (Int32Array accesses never tear), which is all liveness asks.
   */
  private beat(): void {
    const h = this.ctl + CTL_HEARTBEAT;
    this.i32[h] = (this.i32[h]! + 1) | 0;
  }

  /** Poll for work for up to `budgetNs` from `fromMs` (performance.now()); true when work arrived. */
  private spin(fromMs: number, budgetNs: number): boolean {
    const until = fromMs + budgetNs / 1e6;
    for (let n = 1; ; n++) {
      if (this.pollWork()) return true;
      if (n % SPIN_CLOCK_EVERY === 0 && (this.polledAt = performance.now()) > until) return false;
    }
  }

  /**
   * One pass over every mailbox, the stopped queues' acks, the queues marked
   * pending (their bits taken) and every hardware VCMDQ; returns the
   * commands and requests served.
   */
  pass(): number {
    const i32 = this.i32;
    const delayUs = i32[this.ctl + CTL_INJECT_DELAY_US]!;
    const slowdownNs = i32[this.ctl + CTL_SLOWDOWN_NS]!;
    if (slowdownNs !== this.slowdownNs) this.setSlowdown(slowdownNs);
    // Requests first: a translation racing an unsynced invalidation may then
    // see the old entry, as on hardware; only a CMD_SYNC orders them.
    let work = this.mailboxes.poll();
    // The polled queues next: they are the busy ones, and the bitmap's scan (a word per VM) then runs after their
    // CONS publish, not before it.
    const p = this.polled;
    for (let k = p.length - 1; k >= 0; k--) {
      const q = p[k]!;
      q.servedPass = this.passCount;
      const prod = this.serviceProd(q);
      if (prod >= 0) {
        q.workPass = this.passCount;
        work += this.consume(q, prod, delayUs);
      } else if ((i32[q.regs + Q_CONFIG]! & CONFIG_EN) === 0) {
        // Disabled: back to its bit, which whoever enables it sets (writeConfig), and that pass loads PROD.
        this.unpoll(k, false);
      }
    }
    if (this.stopped.length !== 0) work += this.resumeAcked(delayUs);
    const words = this.pendWords;
    const masks = this.pendMasks;
    for (let k = 0; k < words.length; k++) {
      const w = words[k]!;
      // Peeked (a plain read; layout.ts, "Peeks"): an idle word stays in this thread's cache; only a set one is taken (an RMW).
      const mask = masks[k]!;
      if ((i32[w]! & mask) === 0) continue;
      let bits = Atomics.and(i32, w, ~mask) & mask; // acquire: PENDING bits taken (this consumer's only), before the PROD loads of the queues they name (layout.ts)
      const first = (w - this.bitmap) << 5;
      while (bits !== 0) {
        const b = 31 - Math.clz32(bits & -bits);
        bits &= bits - 1;
        const q = this.bySlot[first + b];
        // null: a bit no queue of this thread owns (a guest may write any in its own words); dropped.
        // Served above as a polled queue: dropped too. A publisher sets the bit only after loading NO_NOTIFY clear,
        // before the store that made the queue polled, so its PROD precedes that store, which precedes the PROD
        // load above (layout.ts, "Polled queues"); the thread marks a queue only as it leaves the set, which
        // forgets that it was served.
        if (q == null || q.servedPass === this.passCount) continue;
        q.servedPass = this.passCount;
        const n = this.serve(q, delayUs);
        if (n !== 0) this.notePolled(q);
        work += n;
      }
    }
    this.passCount = (this.passCount + 1) | 0;
    const hq = this.hwQueues;
    for (let k = 0; k < hq.length; k++) work += this.serve(hq[k]!, delayUs);
    return work;
  }

  /** Consume the stopped queues whose error the guest acknowledged (GERRORN); they leave the list. */
  private resumeAcked(delayUs: number): number {
    const s = this.stopped;
    let work = 0;
    for (let k = s.length - 1; k >= 0; k--) {
      const q = s[k]!;
      if (this.stoppedOnError(q)) continue;
      s[k] = s[s.length - 1]!;
      s.pop();
      work += this.serve(q, delayUs);
    }
    return work;
  }

  /** Consume queue `q` up to `prod` (serviceProd's load); returns commands consumed (a refused one counts). */
  private consume(q: QueueEntry, prod: number, delayUs: number): number {
    const i32 = this.i32;
    const r = q.regs;
    const log2 = q.log2size;
    // The crash test hook is read after PROD: a PROD published after the
    // hook was armed is then never consumed, so a test can rely on its
    // submission meeting a dead thread. A plain read: the arming store
    // happens before that PROD store (the test arms, then submits), which
    // happens before serviceProd's Atomics.load that read it, which precedes
    // this read, so it sees the hook armed. Armed to fail mid-pass, it
    // shortens this pass to end at the fatal command instead.
    let crashAtEnd = false;
    if (i32[this.ctl + CTL_CRASH] !== 0) {
      const end = this.crashPoint(q, prod);
      crashAtEnd = end >= 0;
      if (crashAtEnd) prod = end;
    }
    let cons = q.cons;
    const u = this.u;
    const f = this.f;
    const vsmmu = q.vsmmu;
    const cmdset = q.cmdset;
    const idxMask = (1 << log2) - 1;
    let done = 0;
    // Slots read and commands taken since the last publish: added to
    // Q_STAT_SLOT_READS / Q_STAT_CMDS right before each CONS publish
    // (countTaken), so a guest that sees CONS or GERROR move also sees its
    // commands counted, without two stores to shared memory per command.
    // `reads` counts calls of readSlot and nothing else: STAT_SLOT_READS ==
    // STAT_CMDS is the proof, for tests, that each slot is read once.
    let reads = 0;
    let taken = 0;
    // CONS as last published: a pass that ends on a CMD_SYNC has published
    // it already (completeSync), and a second store of the same value would
    // only pull CONS's line away from the guest polling it once more.
    let published = cons;
    const slowIters = this.slowdownIters;
    while (cons !== prod) {
      if (slowIters !== 0) this.slowdownSink ^= work(slowIters);
      readSlot(q.entries, cons & idxMask, u); // the one read of this slot; only `u` is looked at below
      reads++;
      taken++;
      done++;
      const rejected = vsmmu.convertVcmdq(u, cmdset);
      const ill = decodeWords(u, f, this.features);
      if (ill !== 0 || rejected !== 0) {
        q.cons = cons;
        countTaken(i32, r, reads, taken);
        this.fail(q, cons, CERROR.ILL, ill !== 0 ? ERR_KIND.DECODE : ERR_KIND.VSMMU, ill !== 0 ? ill : rejected);
        i32[r + Q_STAT_PASSES]!++;
        return done;
      }
      let cerror = 0;
      switch (f[F.OP]) {
        case OP.TLBI_NH_ALL:
        case OP.TLBI_NH_ASID:
        case OP.TLBI_NH_VA:
        case OP.TLBI_NH_VAA:
        case OP.ATC_INV:
          cerror = this.model.execute(f);
          break;
        case OP.CMD_SYNC:
          // Everything before the sync has executed (this loop is in order):
          // signal, then let CONS pass it.
          cons = queueIncProd(cons, 1, log2);
          countTaken(i32, r, reads, taken);
          reads = 0;
          taken = 0;
          this.completeSync(q, cons);
          published = cons;
          continue;
        default:
          // convertVcmdq admits nothing else; refuse rather than trust that.
          cerror = CERROR.ILL;
      }
      if (cerror !== 0) {
        q.cons = cons;
        countTaken(i32, r, reads, taken);
        this.fail(q, cons, cerror, ERR_KIND.MODEL, cerror);
        i32[r + Q_STAT_PASSES]!++;
        return done;
      }
      cons = queueIncProd(cons, 1, log2);
      if (delayUs !== 0) {
        // The slow-SMMU test hook: what this pass took is counted before each stall, as it was taken (tests watch it).
        countTaken(i32, r, reads, taken);
        reads = 0;
        taken = 0;
        if (!this.busyWaitUs(delayUs)) {
          // Cut short (the host is stopping): the rest stays announced.
          Atomics.or(i32, q.pendWord, q.pendBit); // publish: PENDING (its own bit)
          break;
        }
      }
    }
    q.cons = cons;
    countTaken(i32, r, reads, taken);
    i32[r + Q_STAT_PASSES]!++;
    // The mid-pass crash hook: everything up to here executed, the commands since the last CMD_SYNC are not yet published as consumed.
    if (crashAtEnd) this.hooks?.crash();
    if (cons !== published) {
      storeRelease(i32, r + Q_CONS, cons | q.errBits); // publish: CONS release
      if (Atomics.load(i32, r + Q_WAITERS) !== 0) Atomics.notify(i32, r + Q_CONS);
    }
    return done;
  }

  /** The crash hook asks to fail now (armed, with no mid-pass countdown). Costs one load while unarmed. */
  private crashNow(): boolean {
    return Atomics.load(this.i32, this.ctl + CTL_CRASH) !== 0 && Atomics.load(this.i32, this.ctl + CTL_CRASH_AFTER) === 0;
  }

  /**
   * The armed crash hook meets a pass of `q` up to `prod`: fail now when no
   * countdown is set; otherwise return where the pass must stop to fail
   * after its fatal command, or -1 when the countdown outlasts this pass
   * (counted down by the commands it takes). Test-only: runs only while
   * CTL_CRASH is armed.
   */
  private crashPoint(q: QueueEntry, prod: number): number {
    const i32 = this.i32;
    const after = Atomics.load(i32, this.ctl + CTL_CRASH_AFTER);
    if (after === 0) this.hooks?.crash();
    const avail = queueUsed(prod, q.cons, q.log2size);
    if (avail >= after) return queueIncProd(q.cons, after, q.log2size);
    Atomics.store(i32, this.ctl + CTL_CRASH_AFTER, after - avail); // unordered: the countdown (test hook); the host wrote it before arming
    return -1;
  }

  /** CMD_SYNC at CONS-1 completed: the signal its CS asks for, with CONS published past it. */
  private completeSync(q: QueueEntry, consAfter: number): void {
    const i32 = this.i32;
    const f = this.f;
    const cs = f[F.CS];
    // Counted before either publish that completes the sync (the MSI, then CONS), so a guest that saw its sync
    // complete, by either, also sees it counted.
    i32[q.regs + Q_STAT_SYNCS]!++;
    if (cs === CS.IRQ && this.features.MSI && (f[F.MSIADDR_LO]! | f[F.MSIADDR_HI]!) !== 0) {
      const pa = q.vm.stage2(f[F.MSIADDR_LO]!, f[F.MSIADDR_HI]!);
      if (pa < 0 || pa + 4 > i32.byteLength) this.raiseGerror(q, GERROR_MSI_CMDQ_ABT);
      else {
        storeRelease(i32, pa >>> 2, f[F.MSIDATA]!); // publish: MSI release (a 32-bit write, as the SMMU's)
        if (Atomics.load(i32, q.regs + Q_WAITERS) !== 0) Atomics.notify(i32, pa >>> 2);
      }
    }
    storeRelease(i32, q.regs + Q_CONS, consAfter | q.errBits); // publish: CONS release
    // Every CONS waiter, not only CS=SEV's: a space or CS=NONE waiter may
    // have no later publish in this pass to wake it (consume stores CONS
    // again only when commands followed the sync).
    if (Atomics.load(i32, q.regs + Q_WAITERS) !== 0) Atomics.notify(i32, q.regs + Q_CONS);
  }

  /** Stop `q` at `cons` with CONS.ERR = cerror, as hardware: CONS.ERR before GERROR.CMDQ_ERR. */
  private fail(q: QueueEntry, cons: number, cerror: number, kind: number, code: number): void {
    const i32 = this.i32;
    const r = q.regs;
    i32[r + Q_ERR_REASON] = (kind << 16) | (code & 0xffff);
    i32[r + Q_STAT_ERRORS]!++;
    q.errBits = cerror << CONS_ERR_SHIFT;
    Atomics.store(i32, r + Q_CONS, cons | q.errBits); // publish: CONS (with ERR) release, before GERROR
    this.raiseGerror(q, GERROR_CMDQ_ERR);
    // consume() runs only on a queue not stopped, so the queue is not on the list yet.
    this.stopped.push(q);
    // Stopped, it waits for GERRORN, not PROD: its producers go back to bits until the ack resumes it (no mark needed).
    if (q.polled) this.unpoll(this.polled.indexOf(q), false);
    notifyQueueWaiters(i32, q.qid);
  }

  /** Toggle GERROR bit `bit` unless that error is already active (GERROR != GERRORN). */
  private raiseGerror(q: QueueEntry, bit: number): void {
    const active = (q.gerror ^ Atomics.load(this.i32, q.regs + Q_GERRORN)) & bit;
    if (active !== 0) return;
    q.gerror ^= bit;
    Atomics.store(this.i32, q.regs + Q_GERROR, q.gerror); // publish: GERROR release
  }

  /** The gate's slowdown knob: `ns` of calibrated work per command from now on (bench only). */
  private setSlowdown(ns: number): void {
    if (ns !== 0 && this.itersPerNs === 0) this.itersPerNs = calibrateWork();
    this.slowdownNs = ns;
    this.slowdownIters = Math.round(ns * this.itersPerNs);
  }

  /**
   * The test hook: burn `us` microseconds per command (a slower SMMU). A
   * long delay still beats the heartbeat and gives up (false) when the host
   * stops, and the pass with it.
   */
  private busyWaitUs(us: number): boolean {
    const i32 = this.i32;
    const ctl = this.ctl;
    const until = performance.now() + us / 1000;
    for (let now = performance.now(), beat = now + 1; now < until; now = performance.now()) {
      if (now < beat) continue;
      beat = now + 1;
      this.beat();
      if (Atomics.load(i32, ctl + CTL_STATE) !== SERVER_STATE.RUNNING) return false;
    }
    return true;
  }

  /** The thread is going away: STATE=DEAD, then wake every waiter so it sees that. */
  markDead(): void {
    Atomics.store(this.i32, this.ctl + CTL_STATE, SERVER_STATE.DEAD); // publish: STATE DEAD, before the waiters are woken
    for (const q of this.queues) notifyQueueWaiters(this.i32, q.qid);
    this.mailboxes.wakeAll();
  }
}

