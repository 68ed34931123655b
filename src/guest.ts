// The guest driver for one vCMDQ (Linux arm_smmu_cmdq_issue_cmdlist on a
// Tegra241 guest-owned VCMDQ): writes commands into the queue in guest RAM,
// publishes PROD with one store, rings the doorbell only when the kernel
// thread may be asleep, and waits for its CMD_SYNC. Usable on the main thread
// or in a worker: `q.handle` is a plain structured-clone-safe object and
// `GuestQueue.attach(handle)` rebuilds the driver in another thread.
//
// One producer per queue (one queue per guest vCPU, as the Tegra driver picks
// LVCMDQ by CPU): two threads must not submit to the same queue at once.
//
// A queue may have standby lanes: queues of other paths provisioned for it
// (QueueOptions.standby). `switchPath` drains the active lane and moves the
// producer to another, so a guest survives losing its vCMDQ (live migration
// to a host with fewer of them) without losing or repeating a command.

import { buildCmdSync, encodeCommand, illReason, readSlot, writeSlot, type Command } from './codec.ts';
import { CommandError, cerrorName } from './errors.ts';
import type { SmmuFeatures } from './features.ts';
import { CS } from './fields.ts';
import { tlbInvRangeAsid } from './invalidate.ts';
import {
  CONS_ERR_MASK, CONS_ERR_SHIFT, CTL_SPIN_US, ERR_KIND, GERROR_CMDQ_ERR, Q_CONS, Q_ERR_REASON, Q_GERROR,
  Q_GERRORN, Q_PROD, Q_WAITERS, Q_STAT_CMDS, Q_STAT_ERRORS, Q_STAT_SLOT_READS, Q_STAT_SYNCS, kick,
} from './layout.ts';
import { queueConsumed, queueFree, queueIdx, queueIncProd } from './queue.ts';
import { rejectReason } from './vsmmu.ts';
import { KernelThreadDeadError, LIVE, Liveness, SPIN_CLOCK_EVERY, SyncTimeoutError, atomicsWaitAsync } from './waiter.ts';

/** How the guest learns its CMD_SYNC completed (smmu-facts.md §2.4). */
export type CsMode = 'none' | 'sev' | 'irq';

/** Linux CMDQ_BATCH_ENTRIES: a batch is flushed (without sync) at 64 commands. */
export const CMDQ_BATCH_ENTRIES = 64;

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
  /**
   * SMMU_STRTAB_BASE of the guest's vSMMU (a linear stream table at guest
   * IPA `ipa`). A register of the vSMMU, not of the queue: only a transport
   * that reaches the VMM has it (a vCMDQ page does not).
   */
  setStreamTableBase?(ipa: number): void;
}

export interface SubmitOptions {
  /** Append one CMD_SYNC after the last command and wait for it (default true). */
  sync?: boolean;
  /** Completion signal of that sync (default 'sev'). */
  cs?: CsMode;
  /** Timeout of the whole submission, queue space included (default 5000 ms). */
  timeoutMs?: number;
}

/** The queue stopped on a command (CONS.ERR != 0, GERROR.CMDQ_ERR active). */
export class QueueError extends CommandError {
  constructor(
    cerror: number,
    reason: string,
    /** Queue position (wrap|idx) of the faulting command: CONS. */
    readonly index: number,
    readonly prod: number,
    readonly cons: number,
    readonly err: number,
  ) {
    super(cerrorName(cerror), `${reason} (command at CONS=0x${(cons >>> 0).toString(16)}, PROD=0x${(prod >>> 0).toString(16)})`);
  }
}

class DoorbellTransport implements QueueTransport {
  constructor(private readonly i32: Int32Array, private readonly h: QueueHandle) {}
  publishProd(prod: number): void {
    Atomics.store(this.i32, this.h.regs + Q_PROD, prod); // publish: PROD release
    kick(this.i32, this.h.ctl);
  }
  ackGerror(gerror: number): void {
    Atomics.store(this.i32, this.h.regs + Q_GERRORN, gerror); // publish: GERRORN release
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
  readonly live: Liveness;
  /** The driver's PROD on this lane (kept while the lane is idle). */
  prod: number;
}

/** What the driver is waiting for. */
const COND_SPACE = 0;
const COND_SYNC = 1;
const PENDING = -1;

export class GuestQueue {
  private readonly i32: Int32Array;
  private readonly lanes: Lane[];
  // The active lane, unpacked by activate() (constructor, switchPath): the hot path reads these fields only.
  private lane!: Lane;
  private h!: QueueHandle;
  private entries!: Int32Array;
  private transport!: QueueTransport;
  private live!: Liveness;
  private size!: number;
  /** The active lane's handle with the others as standby (what `handle` returns). */
  private combined: QueueHandle;
  private readonly u = new Uint32Array(4);
  /** The driver's PROD (the register is its published copy). */
  private prod!: number;
  // State of the current wait (no per-call objects).
  private need = 0;
  private syncEnd = 0;
  private syncWord = 0;
  private csCode = 0;
  private timeoutMs = 0;
  private waitIndex = 0;
  private waitValue = 0;
  private encodeBuf = new Uint32Array(4 * CMDQ_BATCH_ENTRIES);
  /** invalidateRange's commands: reused, so an unmap allocates nothing. */
  private invBuf = new Uint32Array(4 * CMDQ_BATCH_ENTRIES);

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

  /** Make `lane` the one submissions go to: the driver's working copies of its handle, ring, transport and PROD. */
  private activate(lane: Lane): void {
    this.lane = lane;
    this.h = lane.h;
    this.entries = lane.entries;
    this.transport = lane.transport;
    this.live = lane.live;
    this.size = 1 << lane.h.log2size;
    this.prod = lane.prod;
  }

  /** Everything another thread needs to `attach` this queue (the active lane, the others as standby). Structured-clone safe. */
  get handle(): QueueHandle {
    return this.combined;
  }

  /** The path submissions go to now. */
  get path(): string {
    return this.h.path;
  }

  private makeLane(h: QueueHandle): Lane {
    const factory = transports.get(h.path);
    if (factory === undefined) throw new Error(`no transport for queue path '${h.path}' (is its module imported in this thread?)`);
    const entries = new Int32Array(h.sab, h.basePa, 4 << h.log2size);
    return { h, entries, transport: factory(h), live: new Liveness(this.i32, h.ctl), prod: Atomics.load(this.i32, h.regs + Q_PROD) };
  }

  /**
   * Move this queue to its standby lane of `path`: wait until everything
   * published on the active lane has been consumed, then send every later
   * submission to the other lane. Nothing is lost (the drain) and nothing is
   * repeated (a lane only ever consumes what was written to it). Refuses
   * with PathSwitchError, staying on the active lane, when that lane stopped
   * on an error (resolve it first, e.g. skipFaultingCommand) or does not
   * drain within `timeoutMs`. Call it from the queue's producer thread.
   */
  switchPath(path: string, timeoutMs = 5000): void {
    if (path === this.h.path) return;
    const next = this.lanes.find((l) => l.h.path === path);
    if (next === undefined) {
      throw new RangeError(`queue ${this.h.qid} has no '${path}' lane (open it with standby: ['${path}'])`);
    }
    try {
      this.drain(timeoutMs);
    } catch (e) {
      throw new PathSwitchError(`queue ${this.h.qid}: cannot switch from '${this.h.path}' to '${path}': ${(e as Error).message}`, { cause: e });
    }
    this.lane.prod = this.prod;
    this.activate(next);
    this.combined = { ...next.h, standby: this.lanes.filter((l) => l !== next).map((l) => l.h) };
  }

  /**
   * Wait until every command published on this queue has been consumed
   * (submissions made with sync: false included). Throws QueueError if the
   * queue stopped on one of them, SyncTimeoutError or KernelThreadDeadError.
   */
  drain(timeoutMs = 5000): void {
    // A wait on CONS reaching PROD, as for a CMD_SYNC completed by CONS.
    this.begin('sev', timeoutMs);
    this.syncEnd = this.prod;
    this.block(COND_SYNC);
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

  /** Encode and submit command objects (convenience form; allocates). */
  submit(cmds: readonly Command[], opts: SubmitOptions = {}): void {
    const words = this.encode(cmds);
    this.submitWords(words, cmds.length, opts.sync === false ? null : (opts.cs ?? 'sev'), opts.timeoutMs);
  }

  /** Async form of `submit`: space and completion waits use Atomics.waitAsync. */
  submitAsync(cmds: readonly Command[], opts: SubmitOptions = {}): Promise<void> {
    const words = this.encode(cmds);
    return this.submitWordsAsync(words, cmds.length, opts.sync === false ? null : (opts.cs ?? 'sev'), opts.timeoutMs);
  }

  /**
   * The zero-allocation hot path: `n` commands, 4 u32 each, from `words`; in
   * batches of at most 64 (the last one gets the CMD_SYNC with completion
   * `cs`, or none when cs is null). Blocks until the sync completed. Throws
   * QueueError, SyncTimeoutError or KernelThreadDeadError, each carrying PROD,
   * CONS and ERR.
   */
  submitWords(words: Uint32Array, n: number, cs: CsMode | null, timeoutMs = 5000): void {
    this.begin(cs, timeoutMs);
    for (let i = 0; ;) {
      const batch = this.plan(n - i, cs !== null);
      if (batch < 0) return;
      this.need = batch + (this.csCode >= 0 && batch === n - i && batch < this.size ? 1 : 0);
      this.block(COND_SPACE);
      const withSync = this.need > batch;
      i = this.writeBatch(words, i, batch, withSync);
      if (withSync) {
        this.block(COND_SYNC);
        return;
      }
      if (cs === null && i === n) return;
    }
  }

  /** Async form of `submitWords`. */
  async submitWordsAsync(words: Uint32Array, n: number, cs: CsMode | null, timeoutMs = 5000): Promise<void> {
    this.begin(cs, timeoutMs);
    for (let i = 0; ;) {
      const batch = this.plan(n - i, cs !== null);
      if (batch < 0) return;
      this.need = batch + (this.csCode >= 0 && batch === n - i && batch < this.size ? 1 : 0);
      await this.blockAsync(COND_SPACE);
      const withSync = this.need > batch;
      i = this.writeBatch(words, i, batch, withSync);
      if (withSync) {
        await this.blockAsync(COND_SYNC);
        return;
      }
      if (cs === null && i === n) return;
    }
  }

  /** Just a CMD_SYNC: wait until everything submitted before has executed. */
  sync(cs: CsMode = 'sev', timeoutMs = 5000): void {
    this.submitWords(this.encodeBuf, 0, cs, timeoutMs);
  }

  /**
   * Invalidate every `granule` page overlapping [iova, iova+size) of `asid`
   * as a Linux guest does (tlbInvRangeAsid: arm_smmu_tlb_inv_range_asid, the
   * range rounded out to the granule; one TLBI_NH_ASID where a range cannot
   * express the span), then sync. Arguments are checked before anything is
   * sent: ArgumentError naming the argument.
   */
  invalidateRange(asid: number, iova: number, size: number, granule = 4096, leaf = true, opts: SubmitOptions = {}): void {
    const n = tlbInvRangeAsid(null, 0, asid, iova, size, granule, leaf, this.h.features);
    if (this.invBuf.length < 4 * n) this.invBuf = new Uint32Array(4 * n);
    tlbInvRangeAsid(this.invBuf, 0, asid, iova, size, granule, leaf, this.h.features);
    this.submitWords(this.invBuf, n, opts.sync === false ? null : (opts.cs ?? 'sev'), opts.timeoutMs);
  }

  /** Async form of `invalidateRange` (its commands in a buffer of its own: calls may overlap). */
  invalidateRangeAsync(asid: number, iova: number, size: number, granule = 4096, leaf = true, opts: SubmitOptions = {}): Promise<void> {
    let words: Uint32Array;
    try {
      words = new Uint32Array(4 * tlbInvRangeAsid(null, 0, asid, iova, size, granule, leaf, this.h.features));
      tlbInvRangeAsid(words, 0, asid, iova, size, granule, leaf, this.h.features);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.submitWordsAsync(words, words.length / 4, opts.sync === false ? null : (opts.cs ?? 'sev'), opts.timeoutMs);
  }

  /**
   * Linux __arm_smmu_cmdq_skip_err for a Tegra VCMDQ: if the queue stopped on
   * an error, overwrite the command at CONS with a CMD_SYNC (CS=NONE) and
   * acknowledge by writing GERRORN = GERROR, so the queue resumes with the
   * commands after it. Returns false when no error was active.
   */
  skipFaultingCommand(): boolean {
    const i32 = this.i32;
    const r = this.h.regs;
    const gerror = Atomics.load(i32, r + Q_GERROR);
    if (((gerror ^ Atomics.load(i32, r + Q_GERRORN)) & GERROR_CMDQ_ERR) === 0) return false;
    if (i32[r + Q_ERR_REASON]! >>> 16 === ERR_KIND.BAD_PROD) {
      // Nothing to skip: the register was garbage; the driver's own PROD is the truth.
      this.transport.publishProd(this.prod);
    } else {
      buildCmdSync(this.u, CS.NONE, 0, 0, 0);
      writeSlot(this.entries, queueIdx(Atomics.load(i32, r + Q_CONS), this.h.log2size), this.u);
    }
    this.transport.ackGerror(gerror);
    return true;
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

  /** The driver's current PROD. */
  get prodValue(): number {
    return this.prod;
  }

  private encode(cmds: readonly Command[]): Uint32Array {
    if (this.encodeBuf.length < 4 * cmds.length) this.encodeBuf = new Uint32Array(4 * cmds.length);
    const words = this.encodeBuf;
    for (let k = 0; k < cmds.length; k++) {
      const [w0, w1] = encodeCommand(cmds[k]!, this.h.features);
      words[4 * k] = Number(w0 & 0xffffffffn);
      words[4 * k + 1] = Number(w0 >> 32n);
      words[4 * k + 2] = Number(w1 & 0xffffffffn);
      words[4 * k + 3] = Number(w1 >> 32n);
    }
    return words;
  }

  private begin(cs: CsMode | null, timeoutMs: number): void {
    if (cs === 'irq' && !this.h.features.MSI) throw new RangeError("cs 'irq' needs an SMMU with MSI (SMMU_IDR0.MSI)");
    this.csCode = cs === null ? -1 : CS_CODE[cs];
    this.timeoutMs = timeoutMs;
    this.live.begin(timeoutMs);
  }

  /** Commands in the next batch, or -1 when the submission is complete. */
  private plan(rest: number, sync: boolean): number {
    if (rest === 0 && !sync) return -1;
    const max = Math.min(CMDQ_BATCH_ENTRIES, this.size);
    return rest < max ? rest : max;
  }

  /** Write `batch` commands from words[i..] (plus the sync) and publish PROD once. */
  private writeBatch(words: Uint32Array, i: number, batch: number, withSync: boolean): number {
    const e = this.entries;
    const log2 = this.h.log2size;
    let prod = this.prod;
    for (let k = 0; k < batch; k++) {
      const b = queueIdx(prod, log2) << 2;
      const w = (i + k) << 2;
      e[b] = words[w]!;
      e[b + 1] = words[w + 1]!;
      e[b + 2] = words[w + 2]!;
      e[b + 3] = words[w + 3]!;
      prod = queueIncProd(prod, 1, log2);
    }
    if (withSync) {
      const slot = queueIdx(prod, log2);
      // MSI polling as Linux: the sync's MSI (data 0) lands on its own slot's first word.
      const msi = this.csCode === CS.IRQ ? this.h.baseIpa + 16 * slot : 0;
      buildCmdSync(this.u, this.csCode, msi % 2 ** 32, Math.floor(msi / 2 ** 32), 0);
      writeSlot(e, slot, this.u);
      this.syncWord = (this.h.basePa >>> 2) + (slot << 2);
      prod = queueIncProd(prod, 1, log2);
      this.syncEnd = prod;
    }
    this.prod = prod;
    this.transport.publishProd(prod);
    return i + batch;
  }

  /** Check the wait condition: 0 when met, PENDING (with waitIndex/waitValue set) otherwise; throws on a queue error. */
  private poll(cond: number): number {
    const i32 = this.i32;
    const r = this.h.regs;
    const cons = Atomics.load(i32, r + Q_CONS);
    if (cond === COND_SPACE) {
      if (queueFree(this.prod, cons, this.h.log2size) >= this.need) return 0;
    } else {
      if (queueConsumed(cons, this.syncEnd, this.h.log2size)) return 0;
      if (this.csCode === CS.IRQ) {
        const v = Atomics.load(i32, this.syncWord);
        if (v === 0) return 0;
        this.checkError(cons);
        this.waitIndex = this.syncWord;
        this.waitValue = v;
        return PENDING;
      }
    }
    this.checkError(cons);
    this.waitIndex = r + Q_CONS;
    this.waitValue = cons;
    return PENDING;
  }

  private checkError(cons: number): void {
    const i32 = this.i32;
    const r = this.h.regs;
    if (((Atomics.load(i32, r + Q_GERROR) ^ Atomics.load(i32, r + Q_GERRORN)) & GERROR_CMDQ_ERR) === 0) return;
    const err = (cons & CONS_ERR_MASK) >>> CONS_ERR_SHIFT;
    const pos = cons & ~CONS_ERR_MASK;
    throw new QueueError(err || 1, this.reasonText(i32[r + Q_ERR_REASON]!, pos), pos, this.prod, cons >>> 0, err);
  }

  private reasonText(reason: number, pos: number): string {
    const kind = reason >>> 16;
    const code = reason & 0xffff;
    const u = new Uint32Array(4);
    readSlot(this.entries, queueIdx(pos, this.h.log2size), u);
    switch (kind) {
      case ERR_KIND.DECODE: return illReason(code, u);
      case ERR_KIND.VSMMU: return rejectReason(code, u);
      case ERR_KIND.MODEL: return `the SMMU model refused the command (CERROR ${code})`;
      case ERR_KIND.BAD_PROD: return `PROD written as 0x${code.toString(16)}... is malformed (beyond the queue or skipping entries)`;
      default: return `unknown error reason 0x${reason.toString(16)}`;
    }
  }

  private spinUs(): number {
    return Atomics.load(this.i32, this.h.ctl + CTL_SPIN_US);
  }

  /** Wait until `cond` holds: spin for the budget, then Atomics.wait in slices. */
  private block(cond: number): void {
    if (this.poll(cond) === 0) return;
    const spinUs = this.spinUs();
    if (spinUs > 0) {
      const until = performance.now() + spinUs / 1000;
      for (let n = 1; ; n++) {
        if (this.poll(cond) === 0) return;
        if (n % SPIN_CLOCK_EVERY === 0 && performance.now() > until) break;
      }
    }
    const waiters = this.h.regs + Q_WAITERS;
    while (this.poll(cond) !== 0) {
      Atomics.add(this.i32, waiters, 1); // announce, then re-check: see WAITERS in layout.ts
      try {
        if (this.poll(cond) === 0) return;
        Atomics.wait(this.i32, this.waitIndex, this.waitValue, this.live.sliceMs());
      } finally {
        Atomics.sub(this.i32, waiters, 1);
      }
      if (this.poll(cond) === 0) return;
      this.afterSlice();
    }
  }

  private async blockAsync(cond: number): Promise<void> {
    const waiters = this.h.regs + Q_WAITERS;
    while (this.poll(cond) !== 0) {
      Atomics.add(this.i32, waiters, 1); // announce, then re-check: see WAITERS in layout.ts
      try {
        if (this.poll(cond) === 0) return;
        const w = atomicsWaitAsync(this.i32, this.waitIndex, this.waitValue, this.live.sliceMs());
        if (w.async) await w.value;
      } finally {
        Atomics.sub(this.i32, waiters, 1);
      }
      if (this.poll(cond) === 0) return;
      this.afterSlice();
    }
  }

  private afterSlice(): void {
    const s = this.live.check();
    if (s === LIVE.OK) return;
    const cons = Atomics.load(this.i32, this.h.regs + Q_CONS);
    const err = (cons & CONS_ERR_MASK) >>> CONS_ERR_SHIFT;
    if (s === LIVE.DEAD) throw new KernelThreadDeadError(this.prod, cons >>> 0, err, this.live.why);
    throw new SyncTimeoutError(this.prod, cons >>> 0, err, this.timeoutMs);
  }
}
