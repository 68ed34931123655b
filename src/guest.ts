// The guest driver for one vCMDQ (Linux arm_smmu_cmdq_issue_cmdlist on a
// Tegra241 guest-owned VCMDQ): writes commands into the queue in guest RAM,
// publishes PROD with one store, rings the doorbell only when the kernel
// thread may be asleep, and waits for its CMD_SYNC. Usable on the main thread
// or in a worker: `q.handle` is a plain structured-clone-safe object and
// `GuestQueue.attach(handle)` rebuilds the driver in another thread.
//
// Any number of producers per queue: threads attached to the same handle and
// overlapping async calls submit at once, as Linux CPUs share one CMDQ (the
// protocol is above submitWords). A Tegra guest picks one LVCMDQ per CPU, so
// one producer per queue is the fast common case, and it stays cheap.
//
// A queue may have standby lanes: queues of other paths provisioned for it
// (QueueOptions.standby). `switchPath` drains the active lane and moves the
// producer to another, so a guest survives losing its vCMDQ (live migration
// to a host with fewer of them) without losing or repeating a command.

import { buildCmdSync, encodeCommandInto, readSlot, writeSlot, type Command } from './codec.ts';
import { ArgumentError, CommandError, cerrorName } from './errors.ts';
import type { SmmuFeatures } from './features.ts';
import { CS } from './fields.ts';
import { tlbInvRangeAsid } from './invalidate.ts';
import {
  CONFIG_EN, CONS_ERR_MASK, CONS_ERR_SHIFT, CTL_PENDING, CTL_SPIN_US, GERROR_CMDQ_ERR, IDLE_HINT_SET, Q_CONFIG, Q_CONS, Q_DRV_PUB, Q_DRV_RESV,
  Q_DRV_TURN_WAITERS, Q_ERR_REASON, Q_GERROR, Q_GERRORN, Q_IDLE_HINT, Q_PEND, Q_PROD, Q_WAITERS, Q_STAT_CMDS, Q_STAT_ERRORS,
  Q_STAT_SLOT_READS, Q_STAT_SYNCS, kick, pendingBit, pendingWord, publishDoorbellProd, storeRelease,
} from './layout.ts';
import { queueFree, queueIdx, queuePosMask } from './queue.ts';
import { errReasonText } from './reason.ts';
import { KernelThreadDeadError, LIVE, Liveness, SPIN_CLOCK_EVERY, SyncTimeoutError, atomicsWaitAsync, spinUntil } from './waiter.ts';

/** How the guest learns its CMD_SYNC completed (smmu-facts.md §2.4). */
export type CsMode = 'none' | 'sev' | 'irq';

/** Linux CMDQ_BATCH_ENTRIES: a batch is flushed (without sync) at 64 commands. */
export const CMDQ_BATCH_ENTRIES = 64;

/**
 * Commands in a submission's next PROD write, with `rest` still to send and a
 * closing CMD_SYNC when `sync`, on a queue of `size` slots: at most
 * CMDQ_BATCH_ENTRIES and the queue (Linux's arm_smmu_cmdq_batch_add flushes
 * at 64); -1 when the submission is complete. Pure, so the simulator
 * (src/sim/paths.ts) batches as the driver does.
 */
export function planBatch(rest: number, sync: boolean, size: number): number {
  if (rest === 0 && !sync) return -1;
  const max = Math.min(CMDQ_BATCH_ENTRIES, size);
  return rest < max ? rest : max;
}

/** Slots that PROD write takes: its `batch` commands, and the CMD_SYNC when this is the last batch and the sync fits beside it. */
export function batchSlots(batch: number, rest: number, sync: boolean, size: number): number {
  return batch + (sync && batch === rest && batch < size ? 1 : 0);
}

/** Everything a thread needs to drive one queue. Structured-clone safe. */
export interface QueueHandle {
  /** Which transport publishes PROD/GERRORN: 'doorbell' (direct) or one registered with registerTransport. */
  readonly path: string;
  readonly sab: SharedArrayBuffer;
  /** Word offset of the kernel thread's control block (liveness, spin budget). */
  readonly ctl: number;
  readonly qid: number;
  /** Word offset of the queue's register block. */
  readonly regs: number;
  readonly log2size: number;
  /** Byte PA of entry 0 (guest RAM; the guest's own view of its memory). */
  readonly basePa: number;
  /** The same address as the guest's IPA (what an MSI address names). */
  readonly baseIpa: number;
  readonly vmid: number;
  readonly features: SmmuFeatures;
  /** Transport-specific data (e.g. the trap path's mailbox handle). */
  readonly extra?: unknown;
  /** Idle queues of other paths this queue can switch to (each without `standby` of its own). */
  readonly standby?: readonly QueueHandle[];
}

/**
 * How the guest's register writes reach the SMMU. The doorbell transport
 * stores straight into the register page and kicks the kernel thread; the
 * trap path (src/trap) forwards them through the VMM instead.
 */
export interface QueueTransport {
  /** Make the new PROD visible to the consumer (one release store). */
  publishProd(prod: number): void;
  /** Acknowledge global errors: GERRORN = gerror (Linux writes back what it read). */
  ackGerror(gerror: number): void;
  /** The queue's CONFIG register (EN, bit 0: CR0.CMDQEN's role, Tegra241's VCMDQ_CONFIG.EN). */
  writeConfig(config: number): void;
  /**
   * SMMU_STRTAB_BASE of the guest's vSMMU (a linear stream table at guest
   * IPA `ipa`). A register of the vSMMU, not of the queue: only a transport
   * that reaches the VMM has it (a vCMDQ page does not).
   */
  setStreamTableBase?(ipa: number): void;
  /** The producer will block for a while: a polling consumer may sleep at once (advisory; layout.ts Q_IDLE_HINT). */
  announceIdle?(): void;
}

export interface SubmitOptions {
  /** Append one CMD_SYNC after the last command and wait for it (default true). */
  sync?: boolean;
  /** Completion signal of that sync (default 'sev'). */
  cs?: CsMode;
  /**
   * Timeout of the whole submission, queue space included (default 5000 ms),
   * a finite number >= 0. 0 means check once and never block: the call
   * succeeds only if its work is already done by then (a trapped PROD write
   * completes its commands before it returns; a doorbell does not).
   */
  timeoutMs?: number;
  /** Async forms only: aborting rejects the call with the signal's reason; commands already published still execute. */
  signal?: AbortSignal;
}

/** The queue stopped on a command (CONS.ERR != 0, GERROR.CMDQ_ERR active). */
export class QueueError extends CommandError {
  override readonly name = 'QueueError';
  constructor(
    cerror: number,
    reason: string,
    /** Queue position (wrap|idx) of the faulting command: CONS. */
    readonly index: number,
    readonly prod: number,
    readonly cons: number,
    readonly err: number,
  ) {
    // CONS printed as its position (wrap|index); its ERR bits are in `err`.
    super(cerrorName(cerror), `${reason} (command at CONS=0x${(index >>> 0).toString(16)}, PROD=0x${(prod >>> 0).toString(16)})`);
  }
}

class DoorbellTransport implements QueueTransport {
  /** The queue's word and bit in its kernel thread's pending bitmap: its slot (Q_PEND), read once here. */
  private readonly pendWord: number;
  private readonly pendBit: number;
  constructor(private readonly i32: Int32Array, private readonly h: QueueHandle) {
    if (!(i32[h.ctl + CTL_PENDING]! > 0)) throw new TypeError(`queue ${h.qid}: the control block at ${h.ctl} has no pending bitmap (CTL_PENDING; layout.initMmio)`);
    const slot = i32[h.regs + Q_PEND]!;
    this.pendWord = pendingWord(i32, h.ctl, slot);
    this.pendBit = pendingBit(slot);
  }
  publishProd(prod: number): void {
    // Polled (no bit set): the kernel thread reads this PROD itself until it clears NO_NOTIFY and re-reads PROD.
    if (publishDoorbellProd(this.i32, this.h.regs, prod, this.pendWord, this.pendBit)) kick(this.i32, this.h.ctl);
  }
  ackGerror(gerror: number): void {
    Atomics.store(this.i32, this.h.regs + Q_GERRORN, gerror); // publish: GERRORN release
    kick(this.i32, this.h.ctl);
  }
  announceIdle(): void {
    const r = this.h.regs;
    Atomics.store(this.i32, r + Q_IDLE_HINT, Atomics.load(this.i32, r + Q_PROD) | IDLE_HINT_SET); // publish: IDLE_HINT, after our last PROD
  }
  writeConfig(config: number): void {
    Atomics.store(this.i32, this.h.regs + Q_CONFIG, config); // publish: CONFIG release (the consumer serves the queue only while EN)
    // A pass drops the bit of a disabled queue, so commands published while it was off are announced again (layout.ts).
    Atomics.or(this.i32, this.pendWord, this.pendBit); // publish: PENDING, after CONFIG
    kick(this.i32, this.h.ctl);
  }
}

type TransportFactory = (handle: QueueHandle) => QueueTransport;
const transports = new Map<string, TransportFactory>([
  ['doorbell', (h) => new DoorbellTransport(new Int32Array(h.sab), h)],
]);

const CS_CODE = { none: CS.NONE, sev: CS.SEV, irq: CS.IRQ } as const;

/** switchPath refused: the active lane cannot be drained (it stopped on an error, or the wait failed). */
export class PathSwitchError extends Error {
  override readonly name = 'PathSwitchError';
}

/** One queue the driver can produce into: the active one, or a standby of another path. */
interface Lane {
  readonly h: QueueHandle;
  readonly entries: Int32Array;
  readonly transport: QueueTransport;
  /** The synchronous calls' wait (one at a time per thread). */
  readonly call: Call;
}

/** What the driver is waiting for. */
const COND_SPACE = 0;
const COND_SYNC = 1;
const PENDING = -1;
/** advance(): the submission is complete, nothing to wait for. */
const DONE = 2;

/**
 * One submission's wait state. The synchronous forms reuse one per lane (a
 * thread runs one at a time: nothing allocated per command); every async call
 * has its own, since several may be pending at once on one GuestQueue.
 */
class Call {
  /** CS code of the closing CMD_SYNC; -1 for none. */
  cs = -1;
  /** Index of the first command not yet published. */
  next = 0;
  /** Consecutive failed publish attempts of the current batch (no space, or a lost CAS). */
  tries = 0;
  timeoutMs = 0;
  /** Slots the next batch reserves (its commands and the CMD_SYNC). */
  need = 0;
  /** Free-running position just past this call's CMD_SYNC (or, for drain, past everything published). */
  syncEnd = 0;
  /** Word index the CS=IRQ MSI of that sync lands on. */
  syncWord = 0;
  waitIndex = 0;
  waitValue = 0;
  /** [start, end) of each batch this call published (free-running): whose is a faulting command. */
  ranges = new Int32Array(8);
  nRanges = 0;
  /** drain: every error before syncEnd is this call's to report. */
  all = false;
  signal: AbortSignal | undefined = undefined;
  /** Resolves when `signal` aborts, so a pending waitAsync slice ends at once. */
  aborted: Promise<unknown> | null = null;
  onAbort: (() => void) | null = null;
  constructor(readonly live: Liveness) {}
}

function checkWords(words: Uint32Array, n: number): void {
  if (!(words instanceof Uint32Array)) throw new ArgumentError('words', 'must be a Uint32Array of 4 words per command');
  if (!Number.isInteger(n) || n < 0 || 4 * n > words.length) {
    throw new ArgumentError('n', `must be an integer in 0..${words.length >>> 2} (4 words per command in words), got ${n}`);
  }
}

function checkOpts(opts: SubmitOptions): SubmitOptions {
  if (opts === null || typeof opts !== 'object') throw new ArgumentError('opts', 'must be an object');
  if (opts.sync !== undefined && typeof opts.sync !== 'boolean') throw new ArgumentError('opts.sync', `must be a boolean, got ${String(opts.sync)}`);
  return opts;
}

function syncCs(opts: SubmitOptions): CsMode | null {
  return opts.sync === false ? null : (opts.cs ?? 'sev');
}

export class GuestQueue {
  private readonly i32: Int32Array;
  private readonly lanes: Lane[];
  // The active lane, unpacked by activate() (constructor, switchPath): the hot path reads these fields only.
  private lane!: Lane;
  private h!: QueueHandle;
  private regs!: number;
  private entries!: Int32Array;
  private transport!: QueueTransport;
  private size!: number;
  private posMask!: number;
  /** The active lane's handle with the others as standby (what `handle` returns). */
  private combined: QueueHandle;
  private readonly u = new Uint32Array(4);
  private encodeBuf = new Uint32Array(4 * CMDQ_BATCH_ENTRIES);
  /** invalidateRange's commands: reused, so an unmap allocates nothing. */
  private invBuf = new Uint32Array(4 * CMDQ_BATCH_ENTRIES);
  // The active lane's RESV and PUB as this driver last left them, so a batch
  // with no rival producer loads neither before its CAS (each Atomics call
  // is ~20 ns on Node 20; Linux's cmpxchg loop starts from its cached llq
  // the same way, and a failed cmpxchg refreshes it). Reset by activate().
  /** RESV as our last CAS left it (or as a lost CAS returned it): where the next CAS starts. */
  private resvSeen = 0;
  /** PUB as our last publish stored it; meaningful while `pubOwned`. */
  private pubStored = 0;
  private pubOwned = false;
  /**
   * CONS as tryPublish last loaded it (Linux's llq.cons), trusted while
   * `consOwn`: set by our successful CAS, cleared when resvSeen takes a
   * rival's value. A stale CONS only understates the room, and a batch
   * without a sync then reads no line the consumer writes per command.
   */
  private consSeen = 0;
  private consOwn = false;

  /** Build the driver for `handle` in this thread. */
  static attach(handle: QueueHandle): GuestQueue {
    return new GuestQueue(handle);
  }

  /** Add a transport for `handle.path` (the trap path registers 'trap'). */
  static registerTransport(path: string, factory: TransportFactory): void {
    transports.set(path, factory);
  }

  constructor(handle: QueueHandle) {
    const { standby = [], ...active } = handle;
    this.i32 = new Int32Array(handle.sab);
    this.lanes = [active, ...standby].map((h) => this.makeLane(h));
    this.activate(this.lanes[0]!);
    this.combined = handle;
  }

  /** Make `lane` the one submissions go to: the driver's working copies of its handle, ring and transport. */
  private activate(lane: Lane): void {
    this.lane = lane;
    this.h = lane.h;
    this.regs = lane.h.regs;
    this.entries = lane.entries;
    this.transport = lane.transport;
    this.size = 1 << lane.h.log2size;
    this.posMask = queuePosMask(lane.h.log2size);
    this.resvSeen = Atomics.load(this.i32, this.regs + Q_DRV_RESV);
    this.pubOwned = false;
    this.consOwn = false;
  }

  /** Everything another thread needs to `attach` this queue (the active lane, the others as standby). Structured-clone safe. */
  get handle(): QueueHandle {
    return this.combined;
  }

  /** The path submissions go to now. */
  get path(): string {
    return this.h.path;
  }

  /**
   * Tell the SMMU this producer is about to block for a while (a vCPU going
   * to WFI: nothing more to submit until something wakes it). The kernel
   * thread's adaptive poller then sleeps at once instead of polling once
   * every queue it serves has said so. Advisory: the next submission
   * cancels it, and is served as any other (a sleeping kernel thread is
   * woken by its doorbell); a path with no polling consumer ignores it.
   */
  announceIdle(): void {
    this.transport.announceIdle?.();
  }

  private makeLane(h: QueueHandle): Lane {
    const factory = transports.get(h.path);
    if (factory === undefined) throw new Error(`no transport for queue path '${h.path}' (is its module imported in this thread?)`);
    const entries = new Int32Array(h.sab, h.basePa, 4 << h.log2size);
    return { h, entries, transport: factory(h), call: new Call(new Liveness(this.i32, h.ctl)) };
  }

  /**
   * Move this queue to its standby lane of `path`: wait until everything
   * published on the active lane has been consumed, then send every later
   * submission to the other lane. Nothing is lost (the drain) and nothing is
   * repeated (a lane only ever consumes what was written to it). Refuses
   * with PathSwitchError, staying on the active lane, when that lane stopped
   * on an error (resolve it first, e.g. skipFaultingCommand) or does not
   * drain within `timeoutMs`. The caller must be the queue's only producer
   * at that moment (no other thread or pending async call submitting).
   */
  switchPath(path: string, timeoutMs = 5000): void {
    if (path === this.h.path) return;
    const next = this.lanes.find((l) => l.h.path === path);
    if (next === undefined) {
      throw new ArgumentError('path', `${JSON.stringify(path)}: queue ${this.h.qid} has no '${String(path)}' lane (open it with standby: ['${String(path)}'])`);
    }
    try {
      this.drain(timeoutMs);
    } catch (e) {
      if (e instanceof ArgumentError) throw e;
      throw new PathSwitchError(`queue ${this.h.qid}: cannot switch from '${this.h.path}' to '${path}': ${(e as Error).message}`, { cause: e });
    }
    this.activate(next);
    this.combined = { ...next.h, standby: this.lanes.filter((l) => l !== next).map((l) => l.h) };
  }

  /**
   * Wait until every command published on this queue (by any producer) has
   * been consumed, submissions made with sync: false included. Throws
   * QueueError if the queue stopped on any of them, SyncTimeoutError or
   * KernelThreadDeadError.
   */
  drain(timeoutMs = 5000): void {
    // A wait on CONS reaching PUB, as for a CMD_SYNC completed by CONS.
    const c = this.begin(this.lane.call, 'sev', timeoutMs, undefined);
    c.all = true;
    c.syncEnd = Atomics.load(this.i32, this.regs + Q_DRV_PUB);
    this.block(c, COND_SYNC);
  }

  /**
   * Write SMMU_STRTAB_BASE: the guest's linear stream table is at `ipa`.
   * The VMM reads a vSTE from it on each CFGI_STE. A trapped write, so it
   * needs a lane that reaches the VMM (the active one or a standby).
   */
  setStreamTableBase(ipa: number): void {
    const lane = [this.lane, ...this.lanes].find((l) => l.transport.setStreamTableBase !== undefined);
    if (lane === undefined) throw new Error(`queue ${this.h.qid}: no lane reaches the VMM's SMMU registers (open it with path or standby 'trap')`);
    lane.transport.setStreamTableBase!(ipa);
  }

  /**
   * Encode and submit command objects: each is checked and encoded
   * (encodeCommandInto, no bigint arithmetic) into a reused per-queue buffer,
   * then sent as submitWords sends words. Allocates nothing per call once the
   * buffer has grown to the largest list seen. A bad object is refused before
   * anything is sent: ArgumentError naming cmds[k], whose message (and cause,
   * encodeCommand's TypeError or RangeError) names the field.
   */
  submit(cmds: readonly Command[], opts: SubmitOptions = {}): void {
    const cs = syncCs(checkOpts(opts));
    this.send(this.encode(cmds, false), cmds.length, cs, opts.timeoutMs);
  }

  /**
   * Async form of `submit`: space and completion waits use Atomics.waitAsync;
   * `opts.signal` aborts the wait. The commands are encoded into a buffer of
   * the call's own (one allocation per call, none per command): calls overlap.
   */
  async submitAsync(cmds: readonly Command[], opts: SubmitOptions = {}): Promise<void> {
    checkOpts(opts);
    const words = this.encode(cmds, true);
    return this.submitWordsAsync(words, cmds.length, syncCs(opts), opts.timeoutMs, opts.signal);
  }

  // ─────────────────────────────────────────────────────────────────────────
  // SUBMISSION: several producers on one queue (any threads attached to it,
  // any number of pending async calls of each), as DPDK's multi-producer
  // rte_ring enqueue, the protocol of equal strength to Linux's
  // arm_smmu_cmdq_issue_cmdlist chosen here (words: Q_DRV_* in layout.ts):
  //  1. Reserve: load RESV (r), load CONS; if queueFree(r, CONS) >= need,
  //     CAS RESV r -> r + need (else wait for space, whose test loads CONS
  //     first (poll), or retry after a lost CAS). Exact: a successful CAS
  //     proves RESV was r when CONS was read, and CONS <= PUB <= RESV, so
  //     the 20-bit difference is the real one.
  //     Invariant: RESV - CONS <= queue size (nobody overwrites an entry the
  //     SMMU has not consumed).
  //  2. Write the entries (and the CMD_SYNC) into the reserved slots.
  //  3. Wait for our turn (PUB == r; predecessors are threads in steps 2-3,
  //     which never yield), publish PROD = r + need through the transport,
  //     then store PUB = r + need (publish: PUB release, after PROD, so PROD
  //     never moves backwards) and notify PUB if a producer waits for it.
  //  4. Wait for our own CMD_SYNC: done when CONS has passed it. CONS is a
  //     20-bit wrapping register and other producers may lap the queue while
  //     we sleep, so with r1 = RESV loaded before CONS: CONS >= r1 - size, so
  //     if r1 - size >= syncEnd we are done; else CONS lies in
  //     [r1 - size, r1 + size) and unwraps exactly. No false completion, and
  //     a false "not yet" only while CONS is a lap ahead, which makes the
  //     first test true at the next look. A queue error is placed with a
  //     RESV loaded while the error is active (checkError), never this one:
  //     blaming is not as forgiving as a late "not yet".
  // Steps 1-3 run without yielding, also in the async forms (only the waits
  // for space and for the sync await), so a reservation is never held across
  // an await and a thread can never wait on its own unpublished entries.
  // Where Linux's owner gathers other CPUs' entries and writes PROD once,
  // here each producer writes PROD for its own entries in reservation order:
  // the same guarantees (each command once, each sync after its caller's
  // commands), one MMIO write per batch instead of per owner.
  //
  // The caller's contract, in the form of Linux's comment above
  // arm_smmu_cmdq_issue_cmdlist:
  //  - stores to page tables (guest RAM) made before the call are visible to
  //    the SMMU before any of the call's commands executes: the PROD publish
  //    is a release (storeRelease, or the trapped write's mailbox release);
  //  - when a call with a CMD_SYNC returns, every command of this call (and
  //    every command published before it, by any producer) has executed;
  //  - on a timeout, an abort or an error thrown by the wait, the commands
  //    already published stay in the queue and still execute (as after a
  //    CMD_SYNC timeout in Linux); batches not yet reserved are not sent.
  //  - a command the SMMU refuses stops the queue at it (CONS.ERR); the call
  //    whose command it was gets QueueError and should skipFaultingCommand()
  //    (Linux's __arm_smmu_cmdq_skip_err, run once per error); other calls
  //    waiting behind it keep waiting, up to their timeout.
  // A single producer pays, over the one-producer driver: one uncontended CAS
  // (RESV), one store of PUB and one load of TURN_WAITERS per batch, and one
  // load of RESV per completion check: it loads neither RESV nor PUB before
  // its CAS while no rival reserves (resvSeen, pubStored: Linux's cached llq),
  // and loads CONS for room only when the CONS it last saw shows too little
  // (consSeen, as Linux refreshes llq.cons only in
  // arm_smmu_cmdq_poll_until_not_full).
  // ─────────────────────────────────────────────────────────────────────────

  /**
   * The zero-allocation hot path: `n` commands, 4 u32 each, from `words`; in
   * batches of at most 64 (the last one gets the CMD_SYNC with completion
   * `cs`, or none when cs is null). Blocks until the sync completed; with
   * timeoutMs = 0 it never blocks (it checks once and throws
   * SyncTimeoutError if the work is not done). Throws ArgumentError,
   * QueueError, SyncTimeoutError or KernelThreadDeadError, each carrying
   * PROD, CONS and ERR. Safe from any number of threads at once.
   */
  submitWords(words: Uint32Array, n: number, cs: CsMode | null, timeoutMs = 5000): void {
    checkWords(words, n);
    this.send(words, n, cs, timeoutMs);
  }

  /** submitWords once `words` and `n` are known good: submit's encoder made them. */
  private send(words: Uint32Array, n: number, cs: CsMode | null, timeoutMs = 5000): void {
    const c = this.begin(this.lane.call, cs, timeoutMs, undefined);
    for (;;) {
      const wait = this.advance(c, words, n);
      if (wait === DONE) return;
      this.block(c, wait);
      if (wait === COND_SYNC) return;
    }
  }

  /**
   * Async form of `submitWords`; `words` must stay unchanged until it
   * settles. An abort of `signal` rejects with its reason; commands already
   * published still execute.
   */
  async submitWordsAsync(words: Uint32Array, n: number, cs: CsMode | null, timeoutMs = 5000, signal?: AbortSignal): Promise<void> {
    checkWords(words, n);
    const c = this.begin(new Call(new Liveness(this.i32, this.h.ctl)), cs, timeoutMs, signal);
    try {
      for (;;) {
        const wait = this.advance(c, words, n);
        if (wait === DONE) return;
        await this.blockAsync(c, wait);
        if (wait === COND_SYNC) return;
      }
    } finally {
      if (c.onAbort !== null) signal!.removeEventListener('abort', c.onAbort);
    }
  }

  /** Just a CMD_SYNC: wait until everything submitted before (by this or any producer) has executed. */
  sync(cs: CsMode = 'sev', timeoutMs = 5000): void {
    this.submitWords(this.encodeBuf, 0, cs, timeoutMs);
  }

  /** Async form of `sync` (`opts.signal` aborts the wait). */
  syncAsync(opts: SubmitOptions = {}): Promise<void> {
    try {
      checkOpts(opts);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.submitWordsAsync(new Uint32Array(0), 0, opts.cs ?? 'sev', opts.timeoutMs, opts.signal);
  }

  /**
   * Invalidate every `granule` page overlapping [iova, iova+size) of `asid`
   * as a Linux guest does (tlbInvRangeAsid: arm_smmu_tlb_inv_range_asid, the
   * range rounded out to the granule; one TLBI_NH_ASID where a range cannot
   * express the span), then sync. Arguments are checked before anything is
   * sent: ArgumentError naming the argument.
   */
  invalidateRange(asid: number, iova: number, size: number, granule = 4096, leaf = true, opts: SubmitOptions = {}): void {
    checkOpts(opts);
    const n = tlbInvRangeAsid(null, 0, asid, iova, size, granule, leaf, this.h.features);
    if (this.invBuf.length < 4 * n) this.invBuf = new Uint32Array(4 * n);
    tlbInvRangeAsid(this.invBuf, 0, asid, iova, size, granule, leaf, this.h.features);
    this.submitWords(this.invBuf, n, syncCs(opts), opts.timeoutMs);
  }

  /** Async form of `invalidateRange` (its commands in a buffer of its own: calls may overlap; `opts.signal` aborts the wait). */
  async invalidateRangeAsync(asid: number, iova: number, size: number, granule = 4096, leaf = true, opts: SubmitOptions = {}): Promise<void> {
    checkOpts(opts);
    const words = new Uint32Array(4 * tlbInvRangeAsid(null, 0, asid, iova, size, granule, leaf, this.h.features));
    tlbInvRangeAsid(words, 0, asid, iova, size, granule, leaf, this.h.features);
    return this.submitWordsAsync(words, words.length / 4, syncCs(opts), opts.timeoutMs, opts.signal);
  }

  /**
   * Linux __arm_smmu_cmdq_skip_err for a Tegra VCMDQ: if the queue stopped on
   * an error, overwrite the command at CONS with a CMD_SYNC (CS=NONE) and
   * acknowledge by writing GERRORN = GERROR, so the queue resumes with the
   * commands after it. Returns false when no error was active. Call it once
   * per error: from the call that got the QueueError.
   */
  skipFaultingCommand(): boolean {
    const i32 = this.i32;
    const r = this.h.regs;
    const gerror = Atomics.load(i32, r + Q_GERROR);
    if (((gerror ^ Atomics.load(i32, r + Q_GERRORN)) & GERROR_CMDQ_ERR) === 0) return false;
    // Only CONS is read, never the ERR_REASON debug word: a real driver has no such word.
    buildCmdSync(this.u, CS.NONE, 0, 0, 0);
    writeSlot(this.entries, queueIdx(Atomics.load(i32, r + Q_CONS), this.h.log2size), this.u);
    this.transport.ackGerror(gerror);
    return true;
  }

  /**
   * Enable or disable the active lane's queue (CONFIG.EN). A disabled queue
   * is not consumed: published commands wait until it is enabled again, so
   * a submission made meanwhile times out. A 'hw' queue's SMMU polls only
   * while one of its queues is enabled: disabling is how a guest (the bench)
   * stops it burning a CPU.
   */
  setEnabled(enabled: boolean): void {
    if (typeof enabled !== 'boolean') throw new ArgumentError('enabled', `must be a boolean, got ${String(enabled)}`);
    this.transport.writeConfig(enabled ? CONFIG_EN : 0);
  }

  /** Register snapshot and statistics, for tests and tools. */
  state(): { prod: number; cons: number; err: number; gerror: number; gerrorn: number; cmds: number; syncs: number; errors: number; slotReads: number } {
    const i32 = this.i32;
    const r = this.h.regs;
    const cons = Atomics.load(i32, r + Q_CONS);
    return {
      prod: Atomics.load(i32, r + Q_PROD), cons, err: (cons & CONS_ERR_MASK) >>> CONS_ERR_SHIFT,
      gerror: Atomics.load(i32, r + Q_GERROR), gerrorn: Atomics.load(i32, r + Q_GERRORN),
      cmds: i32[r + Q_STAT_CMDS]!, syncs: i32[r + Q_STAT_SYNCS]!, errors: i32[r + Q_STAT_ERRORS]!,
      slotReads: i32[r + Q_STAT_SLOT_READS]!,
    };
  }

  /** Write raw words into slot `pos` without publishing (tests: a guest racing its own queue memory). */
  writeSlotRaw(pos: number, u: Uint32Array): void {
    writeSlot(this.entries, queueIdx(pos, this.h.log2size), u);
  }

  /** The PROD the drivers of this queue have published (a queue position: wrap|idx). */
  get prodValue(): number {
    return this.publishedProd();
  }

  private publishedProd(): number {
    return Atomics.load(this.i32, this.regs + Q_DRV_PUB) & this.posMask;
  }

  /** Encode `cmds` into words: the reused buffer for the synchronous forms, a fresh one for async calls (they overlap). */
  private encode(cmds: readonly Command[], fresh: boolean): Uint32Array {
    if (!Array.isArray(cmds)) throw new ArgumentError('cmds', 'must be an array of commands');
    if (fresh) {
      return this.encodeInto(new Uint32Array(4 * cmds.length), cmds);
    }
    if (this.encodeBuf.length < 4 * cmds.length) this.encodeBuf = new Uint32Array(4 * cmds.length);
    return this.encodeInto(this.encodeBuf, cmds);
  }

  private encodeInto(words: Uint32Array, cmds: readonly Command[]): Uint32Array {
    const features = this.h.features;
    for (let k = 0; k < cmds.length; k++) {
      const cmd = cmds[k];
      if (cmd === null || typeof cmd !== 'object') throw new ArgumentError(`cmds[${k}]`, `must be a command object, got ${String(cmd)}`);
      try {
        encodeCommandInto(cmd, words, 4 * k, features);
      } catch (e) {
        throw new ArgumentError(`cmds[${k}]`, `is not a command: ${(e as Error).message}`, { cause: e });
      }
    }
    return words;
  }

  /** Check the call's arguments and arm its wait: ArgumentError naming a bad one, before anything is sent. */
  private begin(c: Call, cs: CsMode | null, timeoutMs: number, signal: AbortSignal | undefined): Call {
    if (cs !== null && cs !== 'none' && cs !== 'sev' && cs !== 'irq') {
      throw new ArgumentError('cs', `must be 'none', 'sev' or 'irq', got ${String(cs)}`);
    }
    if (cs === 'irq' && !this.h.features.MSI) throw new ArgumentError('cs', "'irq' needs an SMMU with MSI (SMMU_IDR0.MSI)");
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0) {
      throw new ArgumentError('timeoutMs', `must be a finite number of ms >= 0 (0 = check once, never block), got ${String(timeoutMs)}`);
    }
    if (signal !== undefined) {
      if (!(signal instanceof AbortSignal)) throw new ArgumentError('signal', 'must be an AbortSignal');
      signal.throwIfAborted();
    }
    c.cs = cs === null ? -1 : CS_CODE[cs];
    c.timeoutMs = timeoutMs;
    c.next = 0;
    c.tries = 0;
    c.nRanges = 0;
    c.all = false;
    c.signal = signal;
    if (signal !== undefined) {
      c.aborted = new Promise((resolve) => {
        c.onAbort = () => resolve(undefined);
        signal.addEventListener('abort', c.onAbort, { once: true });
      });
    }
    c.live.begin(timeoutMs);
    return c;
  }

  /**
   * Publish the batches of words[c.next..n) that go without waiting (steps
   * 1-3 of the protocol; the last batch carries the CMD_SYNC c.cs asks for)
   * and say what to wait for before calling again: COND_SPACE (no space, or
   * another producer won the CAS), COND_SYNC (this call's sync is published:
   * wait for it and the submission is complete) or DONE. submitWords and
   * submitWordsAsync share it and differ only in how they wait.
   */
  private advance(c: Call, words: Uint32Array, n: number): number {
    for (;;) {
      const i = c.next;
      const batch = planBatch(n - i, c.cs >= 0, this.size);
      if (batch < 0) return DONE;
      c.need = batchSlots(batch, n - i, c.cs >= 0, this.size);
      if (!this.tryPublish(c, words, i, batch)) {
        // The bound on lost CASes, whose space wait returns at once: the liveness and timeout check every SPIN_CLOCK_EVERY tries.
        if (++c.tries % SPIN_CLOCK_EVERY === 0) this.afterSlice(c);
        return COND_SPACE;
      }
      c.tries = 0;
      c.next = i + batch;
      if (c.need > batch) return COND_SYNC;
    }
  }

  /**
   * Steps 1-3 of the protocol for one batch, without yielding: reserve c.need
   * slots, write `batch` commands from words[i..] (plus the sync), publish.
   * False when there was no space or another producer won the CAS.
   */
  private tryPublish(c: Call, words: Uint32Array, i: number, batch: number): boolean {
    const i32 = this.i32;
    const resv = this.regs + Q_DRV_RESV;
    const cons = this.regs + Q_CONS;
    const log2 = this.h.log2size;
    let start = this.resvSeen;
    // The cached CONS first. While consOwn, start is the end of our last
    // reservation, made with the room consSeen showed: start - consSeen <=
    // size then. If the CAS below succeeds, nobody has reserved since, so it
    // still holds and the room consSeen shows is real, only understated (a
    // rival's reservation fails our CAS, which clears consOwn).
    if (!this.consOwn || queueFree(start, this.consSeen, log2) < c.need) {
      if (queueFree(start, (this.consSeen = Atomics.load(i32, cons)), log2) < c.need) {
        // No room by the guess, which may be stale (a rival reserved since,
        // and a stale guess can show no room forever): step 1 as written.
        start = this.resvSeen = Atomics.load(i32, resv);
        if (queueFree(start, (this.consSeen = Atomics.load(i32, cons)), log2) < c.need) {
          this.consOwn = false;
          return false;
        }
      }
    }
    // A successful CAS proves RESV was `start` all along (it only grows), so
    // also when CONS was read: the room shown is exact, guess or not.
    const end = (start + c.need) | 0;
    const was = Atomics.compareExchange(i32, resv, start, end); // acquire: slots [start, end) are ours
    if (was !== start) {
      this.resvSeen = was; // a rival reserved (or the guess was stale): the next try starts there
      this.consOwn = false;
      return false;
    }
    this.consOwn = true;
    this.resvSeen = end;
    this.writeBatch(c, words, i, batch, start);
    this.publish(c, start, end);
    return true;
  }

  /** Write `batch` commands from words[i..] (plus the sync when c.need says so) into the slots reserved at `start`. */
  private writeBatch(c: Call, words: Uint32Array, i: number, batch: number, start: number): void {
    const e = this.entries;
    const log2 = this.h.log2size;
    let prod = start;
    for (let k = 0; k < batch; k++) {
      const b = queueIdx(prod, log2) << 2;
      const w = (i + k) << 2;
      e[b] = words[w]!;
      e[b + 1] = words[w + 1]!;
      e[b + 2] = words[w + 2]!;
      e[b + 3] = words[w + 3]!;
      prod++;
    }
    if (c.need > batch) {
      const slot = queueIdx(prod, log2);
      // MSI polling as Linux: the sync's MSI (data 0) lands on its own slot's first word.
      const msi = c.cs === CS.IRQ ? this.h.baseIpa + 16 * slot : 0;
      buildCmdSync(this.u, c.cs, msi % 2 ** 32, Math.floor(msi / 2 ** 32), 0);
      writeSlot(e, slot, this.u);
      c.syncWord = (this.h.basePa >>> 2) + (slot << 2);
      c.syncEnd = (start + c.need) | 0;
    }
    if (c.nRanges * 2 === c.ranges.length) {
      const grown = new Int32Array(2 * c.ranges.length);
      grown.set(c.ranges);
      c.ranges = grown;
    }
    c.ranges[2 * c.nRanges] = start;
    c.ranges[2 * c.nRanges + 1] = (start + c.need) | 0;
    c.nRanges++;
  }

  /** Step 3: in reservation order, make [start, end) visible to the consumer. */
  private publish(c: Call, start: number, end: number): void {
    const i32 = this.i32;
    const pub = this.regs + Q_DRV_PUB;
    // Our turn without a load when our own publish left PUB at `start`: our
    // CAS from `start` proves nobody reserved after that publish, and only a
    // reservation's owner moves PUB past it.
    if (!(this.pubOwned && this.pubStored === start) && Atomics.load(i32, pub) !== start) this.awaitTurn(c, start);
    try {
      this.transport.publishProd(end & this.posMask);
    } finally {
      // A failed trapped write still passes the turn on: the next PROD write covers these entries too.
      storeRelease(i32, pub, end); // publish: PUB release (after PROD: PROD never moves backwards)
      this.pubStored = end;
      this.pubOwned = true;
      if (Atomics.load(i32, this.regs + Q_DRV_TURN_WAITERS) !== 0) Atomics.notify(i32, pub);
    }
  }

  /**
   * Wait (blocking, also for async calls: see the protocol) until every
   * reservation before `start` is published. Its owners are other threads
   * between their CAS and their PROD write. A thread killed there leaves the
   * queue wedged, as a CPU lost inside arm_smmu_cmdq_issue_cmdlist would: this
   * wait then ends with SyncTimeoutError, its entries never published.
   */
  private awaitTurn(c: Call, start: number): void {
    const i32 = this.i32;
    const pub = this.regs + Q_DRV_PUB;
    const waiters = this.regs + Q_DRV_TURN_WAITERS;
    for (let n = 1; n <= SPIN_CLOCK_EVERY; n++) if (Atomics.load(i32, pub) === start) return;
    for (;;) {
      Atomics.add(i32, waiters, 1); // publish: TURN_WAITERS announce, then re-check (as WAITERS in layout.ts)
      try {
        const v = Atomics.load(i32, pub);
        if (v === start) return;
        Atomics.wait(i32, pub, v, c.live.sliceMs());
      } finally {
        Atomics.sub(i32, waiters, 1); // unordered: TURN_WAITERS retire (a notify that finds nobody is harmless)
      }
      if (Atomics.load(i32, pub) === start) return;
      this.afterSlice(c);
    }
  }

  /** Has CONS passed the free-running position `end`? (step 4 of the protocol) */
  private consumed(resv: number, cons: number, end: number): boolean {
    const base = (resv - this.size) | 0;
    if (((base - end) | 0) >= 0) return true;
    return ((this.unwrapCons(base, cons) - end) | 0) >= 0;
  }

  /** CONS as a free-running position, given `base` = RESV - size loaded before it (CONS >= base). */
  private unwrapCons(base: number, cons: number): number {
    return (base + ((cons - base) & this.posMask)) | 0;
  }

  /** Check the wait condition: 0 when met, PENDING (with waitIndex/waitValue set) otherwise; throws on this call's queue error. */
  private poll(c: Call, cond: number): number {
    const i32 = this.i32;
    const r = this.regs;
    let cons: number;
    if (cond === COND_SPACE) {
      // CONS before RESV: CONS never passes a RESV loaded after it, so the
      // room is never negative (a stale CONS only understates it, and the
      // wait on that CONS value then returns at once). The other order lets
      // producers that reserve and are consumed between the two loads put
      // CONS past the RESV loaded: no room shown in an empty queue, and a
      // wait for a CONS move that may never come (SyncTimeoutError at
      // timeoutMs 0). Linux reads prod and cons together, one 64-bit llq.
      cons = Atomics.load(i32, r + Q_CONS);
      if (queueFree(Atomics.load(i32, r + Q_DRV_RESV), cons, this.h.log2size) >= c.need) return 0;
    } else {
      const resv = Atomics.load(i32, r + Q_DRV_RESV); // before CONS (step 4)
      cons = Atomics.load(i32, r + Q_CONS);
      if (this.consumed(resv, cons, c.syncEnd)) return 0;
      if (c.cs === CS.IRQ) {
        const v = Atomics.load(i32, c.syncWord);
        if (v === 0) return 0;
        this.checkError(c);
        c.waitIndex = c.syncWord;
        c.waitValue = v;
        return PENDING;
      }
    }
    this.checkError(c);
    c.waitIndex = r + Q_CONS;
    c.waitValue = cons;
    return PENDING;
  }

  /** If the queue stopped on a command of this call (or, for drain, on any command before its end), throw QueueError. */
  private checkError(c: Call): void {
    const i32 = this.i32;
    const r = this.regs;
    const gerror = Atomics.load(i32, r + Q_GERROR);
    const gerrorn = Atomics.load(i32, r + Q_GERRORN);
    if (((gerror ^ gerrorn) & GERROR_CMDQ_ERR) === 0) return;
    // The consumer stores CONS (with ERR) before it toggles GERROR, so a CONS
    // loaded after seeing the toggle is the faulting command's position; one
    // loaded before it may be any earlier position (another producer's error
    // raised since), which would blame this call for it. RESV is loaded here
    // too, not taken from the poll: while the error stays active CONS is
    // frozen at the fault F and no one can reserve past F + size, so F lies
    // in [RESV - size, RESV] and unwraps exactly; a RESV from before a stall
    // may be laps behind and unwrap F into an old range of this call (a
    // bystander blamed for another producer's command, seen once under load).
    // If the error was acknowledged meanwhile, or CONS moved (an ack, progress
    // and a new error with the same GERROR/GERRORN values), look again at the
    // next poll.
    const cons = Atomics.load(i32, r + Q_CONS);
    const resv = Atomics.load(i32, r + Q_DRV_RESV);
    if (Atomics.load(i32, r + Q_GERROR) !== gerror || Atomics.load(i32, r + Q_GERRORN) !== gerrorn) return;
    if (Atomics.load(i32, r + Q_CONS) !== cons) return;
    const at = this.unwrapCons((resv - this.size) | 0, cons);
    let mine = c.all && ((c.syncEnd - at) | 0) > 0;
    for (let k = 0; k < c.nRanges && !mine; k++) {
      mine = ((at - c.ranges[2 * k]!) | 0) >= 0 && ((c.ranges[2 * k + 1]! - at) | 0) > 0;
    }
    if (!mine) return;
    const err = (cons & CONS_ERR_MASK) >>> CONS_ERR_SHIFT;
    const pos = cons & ~CONS_ERR_MASK;
    throw new QueueError(err || 1, this.reasonText(i32[r + Q_ERR_REASON]!, pos), pos, this.publishedProd(), cons >>> 0, err);
  }

  private reasonText(reason: number, pos: number): string {
    const u = new Uint32Array(4);
    readSlot(this.entries, queueIdx(pos, this.h.log2size), u);
    return errReasonText(reason, u);
  }

  private spinUs(): number {
    return Atomics.load(this.i32, this.h.ctl + CTL_SPIN_US);
  }

  /** Wait until `cond` holds: spin for the budget (not with timeoutMs 0), then Atomics.wait in slices. */
  private block(c: Call, cond: number): void {
    if (this.poll(c, cond) === 0) return;
    const spinUs = this.spinUs();
    if (spinUs > 0 && c.timeoutMs > 0) {
      // No clock read before the SPIN_CLOCK_EVERY-th poll (spinUntil): a round trip's wait usually ends sooner.
      for (let n = 1, until = 0; ; n++) {
        if (this.poll(c, cond) === 0) return;
        if (n % SPIN_CLOCK_EVERY === 0 && (until = spinUntil(c.live, until, spinUs)) < 0) break;
      }
    }
    const waiters = this.regs + Q_WAITERS;
    while (this.poll(c, cond) !== 0) {
      Atomics.add(this.i32, waiters, 1); // publish: WAITERS announce, then re-check (see WAITERS in layout.ts)
      try {
        if (this.poll(c, cond) === 0) return;
        Atomics.wait(this.i32, c.waitIndex, c.waitValue, c.live.sliceMs());
      } finally {
        Atomics.sub(this.i32, waiters, 1); // unordered: WAITERS retire (a notify that finds nobody is harmless)
      }
      if (this.poll(c, cond) === 0) return;
      this.afterSlice(c);
    }
  }

  private async blockAsync(c: Call, cond: number): Promise<void> {
    const waiters = this.regs + Q_WAITERS;
    while (this.poll(c, cond) !== 0) {
      Atomics.add(this.i32, waiters, 1); // publish: WAITERS announce, then re-check (see WAITERS in layout.ts)
      try {
        if (this.poll(c, cond) === 0) return;
        const w = atomicsWaitAsync(this.i32, c.waitIndex, c.waitValue, c.live.sliceMs());
        if (w.async) await (c.aborted === null ? w.value : Promise.race([w.value, c.aborted]));
      } finally {
        Atomics.sub(this.i32, waiters, 1); // unordered: WAITERS retire (a notify that finds nobody is harmless)
      }
      c.signal?.throwIfAborted();
      if (this.poll(c, cond) === 0) return;
      this.afterSlice(c);
    }
  }

  private afterSlice(c: Call): void {
    const s = c.live.check();
    if (s === LIVE.OK) return;
    const cons = Atomics.load(this.i32, this.regs + Q_CONS);
    const err = (cons & CONS_ERR_MASK) >>> CONS_ERR_SHIFT;
    if (s === LIVE.DEAD) throw new KernelThreadDeadError(this.publishedProd(), cons >>> 0, err, c.live.why);
    throw new SyncTimeoutError(this.publishedProd(), cons >>> 0, err, c.timeoutMs);
  }
}
