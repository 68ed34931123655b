// The actors of `vcmdq sim`: vCPUs running the dma_map_benchmark unmap loop,
// and what serves their invalidations on each path. Each actor is a small
// state machine driven by its events; the commands themselves go through the
// project's real code (world.ts), so the model executes every invalidation
// and a vCPU checks, when its CMD_SYNC completes, that no page it unmapped
// still translates.
//
// Paths:
//  - trap-qemu: QEMU's shape (the bench's `trap-qemu`, library path
//    'trap-inline'). The guest's PROD write exits to user space on the
//    vCPU's thread, which takes the BQL, runs the VMM's first pass and the
//    IOMMU_HWPT_INVALIDATE ioctl (kernel conversion, the physical SMMU's
//    CMDQ with a CMD_SYNC per block), and returns.
//  - trap: the iothread shape (the bench's `trap`, library path 'trap'). The
//    PROD write is a kick (an in-kernel exit) to a separate VMM thread that
//    does the same work.
// The names are the bench's (bench/types.ts), so simulated and measured rows
// of one path compare.
//  - doorbell-*: a vCMDQ per vCPU (or shared, `queues`), PROD in memory, one
//    kernel thread serving every queue; it is kicked (exit_kernel + wake)
//    only when it sleeps. Its idle policy is sleep, fixed spin or adaptive.
//  - hw: a hardware VCMDQ per vCPU (Tegra241 CMDQV): the SMMU reads it
//    directly; no exit, no kernel thread.
// On both trap paths the vCPUs share the VM's one CMDQ as Linux shares it:
// one CPU at a time (the owner) writes PROD, covering every command written
// before it (arm_smmu_cmdq_issue_cmdlist's owner gathering); the others
// poll for their CMD_SYNC.

import { POLLED_QUEUES, type Consumer } from '../../native-free-fastpath/consumer.ts';
import { StaleTranslationError } from '../errors.ts';
import { Q_NO_NOTIFY, Q_STAT_SYNCS } from '../layout.ts';
import type { TrapCmdq } from '../trap/cmdq.ts';
import type { HwptInvalidate } from '../trap/iommufd.ts';
import type { Actor, Sim } from './engine.ts';
import type { PollPolicy } from '../poll-policy.ts';
import { STEP_NAMES, type SimProfile, type StepName } from './profile.ts';
import { Semaphore, SmmuEngine } from './resources.ts';
import { SimWorld, UnmapCommands, type PteWindow, type SimRing, type SvaWindow } from './world.ts';
import { ACCESS } from '../model/smmu.ts';
import { batchSlots, planBatch } from '../guest.ts';

export const SIM_PATHS = ['trap', 'trap-qemu', 'doorbell-sleep', 'doorbell-spin', 'doorbell-adaptive', 'hw'] as const;
export type SimPathName = (typeof SIM_PATHS)[number];

/** The two trap paths: the VM's one trapped CMDQ, emulated by the VMM. */
export function isTrapPath(path: SimPathName): boolean {
  return path === 'trap' || path === 'trap-qemu';
}

/** Step costs drawn from the profile with the run's PRNG. */
export class Costs {
  private readonly lo = new Float64Array(STEP_NAMES.length);
  private readonly span = new Float64Array(STEP_NAMES.length);
  constructor(private readonly sim: Sim, profile: SimProfile) {
    STEP_NAMES.forEach((s, k) => {
      this.lo[k] = profile.steps[s].lo_ns;
      this.span[k] = profile.steps[s].hi_ns - profile.steps[s].lo_ns;
    });
  }

  /** One draw of step `s`, ns. */
  draw(s: Step): number {
    const span = this.span[s]!;
    return span === 0 ? this.lo[s]! : this.lo[s]! + span * this.sim.rng.next();
  }

  /** `n` independent draws of step `s`, summed. */
  drawN(s: Step, n: number): number {
    let t = 0;
    for (let k = 0; k < n; k++) t += this.draw(s);
    return t;
  }
}

/** Step indices (positions in STEP_NAMES), resolved once. */
export const S = Object.fromEntries(STEP_NAMES.map((s, k) => [s, k])) as Readonly<Record<StepName, number>>;
type Step = number;

/** What every actor of one run shares. */
export interface SimEnv {
  sim: Sim;
  costs: Costs;
  world: SimWorld;
  smmu: SmmuEngine;
  /** Host CPUs for the host threads (kernel thread, VMM thread); vCPUs have CPUs of their own. */
  hostCpus: Semaphore;
  /** Guests sleep while their CMD_SYNC is outstanding (wake-up to see it) instead of polling CONS (a cache line). */
  guestSleeps: boolean;
  path: SimPathName;
}

/** Something a vCPU's commands are handed to once written into its ring. */
export interface Server {
  /**
   * The vCPU published PROD of its ring (`last`: the chunk ends with its
   * CMD_SYNC). Returns the time the vCPU itself spends on it (a kick's
   * exit), ns, or BLOCKED when the write does not return until the server
   * says so (a trapped write: Vcpu.writeReturned).
   */
  published(v: Vcpu, last: boolean): number;
}

/** Server.published: the vCPU is held until Vcpu.writeReturned(). */
export const BLOCKED = -1;

/** What each vCPU does per operation (one latency sample). */
export type SimWorkload =
  /** dma_map_benchmark: map `pages` pages, DMA, then the timed unmap: PTE clear, range TLBI, CMD_SYNC; checked after. */
  | { kind: 'unmap'; pages: number }
  /** The bench's round trip: one TLBI_NH_VA and a CMD_SYNC, nothing mapped. */
  | { kind: 'roundtrip' }
  /** The bench's batched throughput: min(4096, 64 x batch) TLBIs in submissions of `batch`, one CMD_SYNC at the end. */
  | { kind: 'batch'; batch: number }
  /**
   * The bench's vSVA storm (bench/scenarios.ts svastorm): a process's mm
   * maintenance on its own stage-1 table, each operation blocking on its
   * invalidation as arm_smmu_mm_arch_invalidate_secondary_tlbs does. The
   * cycle: mprotect(RO) of 4 pages, a COW break of the first (a fresh frame,
   * RW), munmap of the 4 (re-mapped untimed after); the device touches the
   * pages before each, and after each CMD_SYNC the old translation must be gone.
   */
  | { kind: 'svastorm' };

/** The storm's span of an mprotect or munmap, pages (bench/scenarios.ts SVA_SPAN), and its groups of pages in the window. */
export const SVA_SPAN = 4;
const SVA_GROUPS = 16;
const SVA = { MPROTECT: 0, COW: 1, MUNMAP: 2 } as const;
const SVA_OP_NAMES = ['mprotect', 'COW break', 'munmap'];

/** Commands per timed iteration of the batch workload (as bench/scenarios.ts throughput). */
export function batchCommands(batch: number): number {
  return Math.ceil(Math.min(4096, 64 * batch) / batch) * batch;
}

const V = { START: 0, BEGIN: 1, SUBMIT: 2, PUBLISH: 3, DONE: 4, TRAP_ARRIVE: 5, TRAP_BQL: 6, TRAP_WORKED: 7, TRAP_SMMU: 8, TRAP_BACK: 9 } as const;

/**
 * One guest vCPU running its workload in a loop; each operation's latency is
 * one sample. Each operation is one or more submissions (submitWords calls),
 * sent as GuestQueue.submitWords sends them: in PROD writes planned by the
 * driver's own planBatch/batchSlots (at most 64 commands, the CMD_SYNC with
 * the last), each after the space check that reads CONS
 * (GuestQueue.tryPublish), waiting for space when the ring is full.
 */
export class Vcpu implements Actor {
  /** Operation latencies, ns, in completion order. */
  readonly samples: Float64Array;
  done = 0;
  /** Queue position after this vCPU's outstanding CMD_SYNC (valid while `waiting`). */
  waitPos = 0;
  waiting = false;
  /** Time spent asleep waiting (not on a CPU), ns. */
  sleptNs = 0;
  finishedAt = 0;
  private t0 = 0;
  private waitFrom = 0;
  /** The submission in progress: `callN` commands of `callWords` from `callNext` on, and whether its CMD_SYNC is still to be written. */
  private callWords: Uint32Array;
  private callN = 0;
  private callNext = 0;
  private callSync = false;
  /** The PROD write being made: its commands and its slots (batchSlots). */
  private batch = 0;
  private need = 0;
  /** Slots a publish waits for (0: not waiting for space). */
  private spaceNeed = 0;
  /** Submission index within the operation (the batch workload sends several). */
  private chunk = 0;
  private readonly chunks: number;
  private readonly chunkCmds: number;
  private readonly pages: number;
  private readonly cmds: UnmapCommands;
  private readonly u = new Uint32Array(4);
  private readonly ptes: PteWindow | null;
  private readonly sva: SvaWindow | null;
  /** The storm's operation count, and the current one's kind, first page and pages. */
  private svaK = 0;
  private svaOp = 0;
  private svaFirst = 0;
  private svaSpan = 0;

  constructor(
    readonly id: number,
    private readonly env: SimEnv,
    readonly ring: SimRing,
    private readonly server: Server,
    workload: SimWorkload,
    private readonly count: number,
    cs: number,
    /** Idle time before each operation, ns (the bench's gap sweep: the vCPU busy-waits it, untimed). */
    private readonly gapNs = 0,
  ) {
    this.samples = new Float64Array(count);
    this.pages = workload.kind === 'unmap' ? workload.pages : 1;
    this.chunkCmds = workload.kind === 'batch' ? workload.batch : 0;
    this.chunks = workload.kind === 'batch' ? batchCommands(workload.batch) / workload.batch : 1;
    this.cmds = new UnmapCommands(env.world.features, cs, this.chunkCmds);
    this.callWords = this.cmds.words;
    this.ptes = workload.kind === 'unmap' ? env.world.openWindow(id) : null;
    this.sva = workload.kind === 'svastorm' ? env.world.openSvaWindow(id) : null;
    // Roundtrip: the same TLBI every time.
    if (workload.kind === 'roundtrip') this.cmds.build(SimWorld.windowIova(id), 1);
  }

  start(): void {
    this.env.sim.after(0, this, V.START);
  }

  fire(kind: number): void {
    const { env, pages } = this;
    const c = env.costs;
    switch (kind) {
      case V.START:
        env.sim.after(this.gapNs, this, V.BEGIN);
        return;
      case V.BEGIN: {
        // The timed loop reads the clock around each operation (the bench's performance.now(), dma_map_benchmark's ktime_get).
        let untilSubmit = c.draw(S.clock);
        this.chunk = 0;
        if (this.ptes !== null) {
          const ptes = this.ptes;
          env.world.map(ptes, pages);
          // The device touches every page: the IOTLB now holds what the unmap must invalidate.
          for (let k = 0; k < pages; k++) {
            const fault = env.world.dma(this.id, k);
            if (fault !== 0) throw new Error(`sim: vCPU ${this.id}'s page ${k} does not translate after its map (fault 0x${fault.toString(16)})`);
          }
          env.world.unmap(ptes, pages);
          untilSubmit += c.drawN(S.guest_pte, pages);
          this.startCall(this.cmds.words, this.cmds.build(SimWorld.windowIova(this.id), pages), true);
        } else if (this.sva !== null) {
          untilSubmit += c.drawN(S.guest_pte, this.svaBegin(this.sva));
        } else if (this.chunkCmds === 0) this.startCall(this.cmds.words, this.cmds.n, true);
        else this.startCall(this.cmds.batch, this.chunkCmds, this.chunks === 1);
        this.t0 = env.sim.now;
        env.sim.after(untilSubmit, this, V.SUBMIT);
        return;
      }
      case V.SUBMIT:
        this.prepare();
        return;
      case V.PUBLISH:
        this.publish();
        return;
      case V.DONE:
        this.complete();
        return;
      default:
        // Trap-path steps of the owner vCPU.
        (this.server as TrapVmm).step(this, kind);
    }
  }

  /**
   * The storm's next operation, as SvaStormPath.sample: the device touches
   * its pages (untimed), then the guest changes their PTEs and builds the
   * range invalidation. Returns the PTEs written.
   */
  private svaBegin(w: SvaWindow): number {
    const world = this.env.world;
    const k = this.svaK++;
    this.svaOp = k % 3;
    this.svaFirst = (Math.floor(k / 3) % SVA_GROUPS) * SVA_SPAN;
    this.svaSpan = this.svaOp === SVA.COW ? 1 : SVA_SPAN;
    const first = this.svaFirst;
    const span = this.svaSpan;
    for (let p = first; p < first + span; p++) {
      if (world.dma(this.id, p) !== 0) throw new Error(`sim: vCPU ${this.id}'s SVA page ${p} does not translate before its operation`);
    }
    if (this.svaOp === SVA.MPROTECT) world.writePtes(w.word, w.ro, first, span);
    else if (this.svaOp === SVA.COW) world.writePtes(w.word, w.cow, first, span);
    else world.clearPtes(w.word, first, span);
    this.startCall(this.cmds.words, this.cmds.build(SimWorld.windowIova(this.id) + first * 4096, span), true);
    return span;
  }

  /** The storm's operation completed: its old translations must be gone (a write faults, the fresh frame shows, the page faults). */
  private svaCheck(w: SvaWindow): void {
    const { env, svaFirst: first, svaSpan: span } = this;
    const world = env.world;
    for (let p = first; p < first + span; p++) {
      const stale = this.svaOp === SVA.MPROTECT ? world.dma(this.id, p, ACCESS.WRITE) === 0
        : this.svaOp === SVA.COW ? world.dma(this.id, p) !== 0 || world.dmaPa() !== w.cowPa[p]
          : world.dma(this.id, p) === 0;
      if (stale) throw new StaleTranslationError(env.path, this.id, SimWorld.windowIova(this.id) + p * 4096, env.sim.now, SVA_OP_NAMES[this.svaOp]!);
    }
    // munmap's pages come back untimed (the bench re-mmaps them: no invalidation needed).
    if (this.svaOp === SVA.MUNMAP) world.writePtes(w.word, w, first, span);
  }

  private startCall(words: Uint32Array, n: number, sync: boolean): void {
    this.callWords = words;
    this.callN = n;
    this.callNext = 0;
    this.callSync = sync;
  }

  /**
   * The next PROD write of the submission: the driver's plan (planBatch,
   * batchSlots), its commands copied (guest_cmd each) and its bookkeeping
   * (guest_submit). The lines the write moves are the server's to price
   * (Server.published).
   */
  private prepare(): void {
    const env = this.env;
    const c = env.costs;
    const rest = this.callN - this.callNext;
    this.batch = planBatch(rest, this.callSync, this.ring.size);
    this.need = batchSlots(this.batch, rest, this.callSync, this.ring.size);
    env.sim.after(c.drawN(S.guest_cmd, this.need) + c.draw(S.guest_submit), this, V.PUBLISH);
  }

  /** Space permitting, write the planned commands (and the CMD_SYNC), publish PROD and hand them over; else wait for CONS. */
  private publish(): void {
    const env = this.env;
    const ring = this.ring;
    if (ring.free(ring.seenCons) < this.need) {
      // GuestQueue.block(COND_SPACE): woken (or seeing it, polling) when CONS moves (consMoved).
      this.spaceNeed = this.need;
      this.waitFrom = env.sim.now;
      return;
    }
    const cmds = this.cmds;
    ring.write(this.callWords.subarray(4 * this.callNext), this.batch, this.u);
    this.callNext += this.batch;
    const withSync = this.need > this.batch;
    if (withSync) {
      this.waitPos = ring.write(cmds.sync, 1, this.u);
      this.callSync = false;
      this.waiting = true;
    }
    this.waitFrom = env.sim.now;
    ring.publish();
    const busy = this.server.published(this, withSync);
    if (busy !== BLOCKED) this.next(busy);
  }

  /** After a PROD write that returned: the submission's next write, the operation's next submission, or (after its CMD_SYNC) the wait. */
  private next(busyNs: number): void {
    if (planBatch(this.callN - this.callNext, this.callSync, this.ring.size) >= 0) {
      this.env.sim.after(busyNs, this, V.SUBMIT);
      return;
    }
    if (this.chunk === this.chunks - 1) return; // the CMD_SYNC is out: consMoved() completes the operation
    this.chunk++;
    this.startCall(this.cmds.batch, this.chunkCmds, this.chunk === this.chunks - 1);
    this.env.sim.after(busyNs, this, V.SUBMIT);
  }

  /** The trapped PROD write returned (this vCPU was the owner): its commands up to that PROD are consumed. */
  writeReturned(): void {
    const env = this.env;
    if (env.guestSleeps) this.sleptNs += env.sim.now - this.waitFrom;
    if (this.waiting) {
      this.waiting = false;
      this.complete();
      return;
    }
    this.next(0);
  }

  /**
   * The consumer published CONS: a CMD_SYNC this vCPU waits for has
   * completed, or a publish waiting for space has room now. The guest sees
   * it after a poll (one line) or, when it sleeps, a wake-up.
   */
  consMoved(cons: number): void {
    const env = this.env;
    let then: number;
    if (this.waiting && this.ring.consumed(this.waitPos, cons)) {
      this.waiting = false;
      then = V.DONE;
    } else if (this.spaceNeed > 0 && this.ring.free(cons) >= this.spaceNeed) {
      this.spaceNeed = 0;
      then = V.PUBLISH;
    } else return;
    if (env.guestSleeps) {
      this.sleptNs += env.sim.now - this.waitFrom;
      env.sim.after(env.costs.draw(S.wake), this, then);
    } else env.sim.after(env.costs.draw(S.notice), this, then);
  }

  private complete(): void {
    const env = this.env;
    // An unmap's sync has completed: no page of it may translate any more.
    if (this.ptes !== null) {
      for (let k = 0; k < this.pages; k++) {
        if (env.world.dma(this.id, k) === 0) throw new StaleTranslationError(env.path, this.id, SimWorld.windowIova(this.id) + k * 4096, env.sim.now);
      }
    }
    if (this.sva !== null) this.svaCheck(this.sva);
    this.samples[this.done++] = env.sim.now - this.t0;
    if (this.done < this.count) env.sim.after(0, this, V.START);
    else this.finishedAt = env.sim.now;
  }
}

/**
 * The server's work on `ring` up to `cons` is complete in virtual time: the
 * guests see CONS there (SimRing.seenCons), and every vCPU on the queue but
 * `except` looks (Vcpu.consMoved).
 */
function completeWaiters(ring: SimRing, waiters: readonly Vcpu[], cons: number, except?: Vcpu): void {
  ring.seenCons = cons;
  for (let k = 0; k < waiters.length; k++) {
    const v = waiters[k]!;
    if (v !== except) v.consMoved(cons);
  }
}

/** Syncs the consumer of `ring` completed since `before` (its statistics word). */
function syncsSince(ring: SimRing, i32: Int32Array, before: number): number {
  return i32[ring.regs + Q_STAT_SYNCS]! - before;
}

const K = { WOKEN: 0, CPU: 1, NOTICE: 2, ISSUED: 3, SMMU_DONE: 4, SPIN_END: 5 } as const;
/** SPIN_END events carry the spin's epoch above the kind bits, so a stale one is recognised. */
const EPOCH_SHIFT = 3;

interface ServedQueue {
  ring: SimRing;
  consumer: Consumer;
  waiters: Vcpu[];
}

/**
 * The SW vCMDQ's kernel thread: passes over its queues in order, as
 * Consumer.run does (each queue consumed by the real consume step), idles
 * by the same polling policy code as the real one (src/poll-policy.ts: poll
 * for the budget it gives, holding its CPU, then sleep), and is kicked only
 * while asleep (the need-wakeup flag).
 */
export class KernelThread implements Actor, Server {
  private state: 'sleep' | 'waking' | 'spin' | 'noticing' | 'busy' = 'sleep';
  readonly queues: ServedQueue[] = [];
  private k = 0;
  private passWork = 0;
  /** The next queue consumed has had its PROD and slot lines read already (the notice or wake-up that started this pass). */
  private linesSeen = false;
  private spinEpoch = 0;
  private spinFrom = 0;
  private cpuFrom = 0;
  private consAfter = 0;
  private syncs = 0;
  private cmds = 0;
  /** Queues in the polled set. Each queue has a consumer of its own, so the thread holds the set to POLLED_QUEUES itself. */
  private polled = 0;
  /** CPU held, ns (spinning included), and spinning alone. */
  cpuNs = 0;
  spinNs = 0;
  wakeups = 0;
  /** When the guest rang the sleeping thread (the end of its idle period, as CTL_KICKED_AT tells the real one). */
  private kickedAt = 0;

  constructor(private readonly env: SimEnv, private readonly policy: PollPolicy) {}

  addQueue(q: ServedQueue): void {
    this.queues.push(q);
  }

  published(v: Vcpu): number {
    const env = this.env;
    const c = env.costs;
    switch (this.state) {
      case 'sleep': {
        // The guest saw SLEEPING and rings: an ioeventfd exit on its CPU, then the wake-up. The idle period ends
        // here, at the first ring (layout.ts CTL_KICKED_AT), not when the wake-up reaches the thread.
        const exit = c.draw(S.exit_kernel);
        this.kickedAt = env.sim.now;
        this.state = 'waking';
        this.wakeups++;
        env.sim.after(exit + c.draw(S.wake), this, K.WOKEN);
        return exit;
      }
      case 'waking':
        // SLEEPING stays set until the thread runs (layout.ts: only the sleeper clears it): the guest rings again.
        return c.draw(S.exit_kernel);
      case 'spin':
        // The poll sees the queue's pending bit (one line), then reads PROD and the slots behind it, or,
        // the queue polled, PROD itself: layout.ts's line budget (pend unless polled, q.0 and the slot
        // line to the kernel thread). The guest takes PROD's line back from the poller (publish_line).
        this.state = 'noticing';
        env.sim.after(this.lines(c, v.ring), this, K.NOTICE);
        return c.draw(S.publish_line);
      default:
        // Noticing or in a pass: that pass or the next one sees the new PROD; the thread reads PROD's line as the guest writes it.
        return c.draw(S.publish_line);
    }
  }

  fire(kind: number): void {
    const env = this.env;
    switch (kind & ((1 << EPOCH_SHIFT) - 1)) {
      case K.WOKEN:
        env.hostCpus.acquire(this, K.CPU);
        return;
      case K.CPU:
        this.cpuFrom = env.sim.now;
        this.policy.arrived(this.kickedAt, true);
        this.startPass(true);
        return;
      case K.NOTICE:
        this.spinNs += env.sim.now - this.spinFrom;
        this.policy.arrived(env.sim.now, false);
        this.startPass(true);
        return;
      case K.ISSUED: {
        // The consumed commands go to the physical SMMU: each TLBI, then the syncs.
        const c = env.costs;
        const tlbis = this.cmds - this.syncs;
        env.smmu.submit(c.drawN(S.smmu_cmd, tlbis), c.drawN(S.smmu_sync, this.syncs), this, K.SMMU_DONE);
        return;
      }
      case K.SMMU_DONE: {
        const q = this.queues[this.k]!;
        completeWaiters(q.ring, q.waiters, this.consAfter);
        this.k++;
        this.step();
        return;
      }
      case K.SPIN_END:
        if (this.state !== 'spin' || kind >>> EPOCH_SHIFT !== this.spinEpoch) return;
        this.spinNs += env.sim.now - this.spinFrom;
        this.sleep();
        return;
    }
  }

  /**
   * The lines a publish to `ring` moves to the thread (layout.ts's line
   * budget): the pending bitmap's (polled), then PROD's and the slots'
   * behind it; PROD's, polled, and the slots' when the queue is in the
   * thread's polled set (its NO_NOTIFY, set by the real consume step).
   */
  private lines(c: Costs, ring: SimRing): number {
    const polled = this.env.world.i32[ring.regs + Q_NO_NOTIFY] !== 0;
    return c.draw(S.notice) + c.drawN(S.slot_lines, polled ? 1 : 2);
  }

  /** `seen`: the pass starts on a PROD it has just read (noticed while polling, or the wake-up's re-check). */
  private startPass(seen: boolean): void {
    this.state = 'busy';
    this.k = 0;
    this.passWork = 0;
    this.linesSeen = seen;
    this.step();
  }

  /** Serve the next queue with work from `k` on; at the end of the pass, pass again or go idle. */
  private step(): void {
    const env = this.env;
    const qs = this.queues;
    while (this.k < qs.length && !qs[this.k]!.consumer.hasWork()) this.k++;
    if (this.k < qs.length) {
      const q = qs[this.k]!;
      const i32 = env.world.i32;
      const syncs0 = i32[q.ring.regs + Q_STAT_SYNCS]!;
      const wasPolled = i32[q.ring.regs + Q_NO_NOTIFY] !== 0;
      this.cmds = q.consumer.pass();
      // Consumer.notePolled in one thread's set (its NO_NOTIFY says whether a queue is in): a full set takes no
      // newcomer (none of the simulated queues idles 64 passes while the others work, the real set's only way in).
      this.polled += Number(i32[q.ring.regs + Q_NO_NOTIFY] !== 0) - Number(wasPolled);
      if (this.polled > POLLED_QUEUES) {
        q.consumer.unpollAll();
        this.polled--;
      }
      this.syncs = syncsSince(q.ring, i32, syncs0);
      this.consAfter = q.ring.cons();
      this.passWork += this.cmds;
      // Consumer.consume: PROD's line and the slots' (unless this pass began by reading them), the
      // queue's fixed work (kthread_pass), then each command.
      const c = env.costs;
      const lines = this.linesSeen ? 0 : this.lines(c, q.ring);
      this.linesSeen = false;
      env.sim.after(lines + c.draw(S.kthread_pass) + c.drawN(S.kthread_cmd, this.cmds), this, K.ISSUED);
      return;
    }
    if (this.passWork > 0) {
      this.startPass(false);
      return;
    }
    // The simulated guests never announce that they will block (no Q_IDLE_HINT).
    const budget = this.policy.idle(env.sim.now, false);
    if (budget > 0) {
      this.state = 'spin';
      this.spinFrom = env.sim.now;
      this.spinEpoch++;
      env.sim.after(budget, this, K.SPIN_END | (this.spinEpoch << EPOCH_SHIFT));
      return;
    }
    this.sleep();
  }

  private sleep(): void {
    // Consumer.sleep: the polled sets are emptied before the thread sleeps (its producers ring again).
    for (const q of this.queues) q.consumer.unpollAll();
    this.polled = 0;
    this.state = 'sleep';
    this.cpuNs += this.env.sim.now - this.cpuFrom;
    this.env.hostCpus.release();
  }

  /** CPU held up to now, ns (a thread still holding its CPU counts up to now). */
  cpuUpTo(now: number): number {
    return this.cpuNs + (this.state === 'sleep' || this.state === 'waking' ? 0 : now - this.cpuFrom);
  }
}

const H = { FETCH: 0, DONE: 1 } as const;

/** One hardware VCMDQ: the SMMU fetches it on the doorbell and serves it on its command engine. */
export class HwQueue implements Actor, Server {
  readonly waiters: Vcpu[] = [];
  /** CONS after each fetch, completed in order by the engine. */
  private readonly pending: number[] = [];
  private head = 0;
  constructor(private readonly env: SimEnv, readonly ring: SimRing, private readonly consumer: Consumer) {}

  published(): number {
    const c = this.env.costs;
    this.env.sim.after(c.draw(S.hw_doorbell), this, H.FETCH);
    return c.draw(S.hw_publish);
  }

  fire(kind: number): void {
    const env = this.env;
    if (kind === H.FETCH) {
      if (!this.consumer.hasWork()) return; // an earlier fetch took these commands
      const i32 = env.world.i32;
      const syncs0 = i32[this.ring.regs + Q_STAT_SYNCS]!;
      const n = this.consumer.pass();
      const syncs = syncsSince(this.ring, i32, syncs0);
      this.pending.push(this.ring.cons());
      const c = env.costs;
      // The engine fetches and checks every command (hw_cmd), executes the TLBIs, then completes the syncs.
      env.smmu.submit(c.drawN(S.hw_cmd, n) + c.drawN(S.smmu_cmd, n - syncs), c.drawN(S.smmu_sync, syncs), this, H.DONE);
      return;
    }
    const cons = this.pending[this.head++]!;
    if (this.head === this.pending.length) {
      this.pending.length = 0;
      this.head = 0;
    }
    completeWaiters(this.ring, this.waiters, cons);
  }
}

const T = { REQUEST: 0, CPU: 1, WORKED: 2, SMMU_DONE: 3 } as const;

/**
 * The VMM's side of the trapped CMDQ: the VM's one queue, shared as Linux
 * shares it. The vCPU that publishes while no write is in flight is the
 * owner: its PROD write (the trap) covers every command written before it.
 * One that publishes while the owner's write is in flight becomes the next
 * owner and waits for it (arm_smmu_cmdq_issue_cmdlist's owner_prod); any
 * other publisher is gathered into the next owner's write and goes on (or
 * polls for its CMD_SYNC). In the iothread shape a VMM thread serves the
 * writes, in QEMU's shape the owner's own thread does, under the BQL.
 */
export class TrapVmm implements Actor, Server {
  private owner: Vcpu | null = null;
  private nextOwner: Vcpu | null = null;
  /** Every vCPU on the queue, for completions. */
  readonly waiters: Vcpu[] = [];
  /** PROD the owner's trapped write carries. */
  private ownerProd = 0;
  private readonly bql: Semaphore;
  private threadState: 'sleep' | 'waking' | 'busy' = 'sleep';
  private cpuFrom = 0;
  cpuNs = 0;
  /** Trapped PROD writes served. */
  traps = 0;
  private fwd = 0;
  private blocks = 0;

  constructor(
    private readonly env: SimEnv,
    private readonly cmdq: TrapCmdq,
    /** The kernel's IOMMU_HWPT_INVALIDATE handler behind the VMM's ioctls (its CMD_SYNC count is the SMMU's work). */
    private readonly hwpt: HwptInvalidate,
    readonly ring: SimRing,
    readonly iothread: boolean,
  ) {
    this.bql = new Semaphore(env.sim, 1, 'BQL');
  }

  published(v: Vcpu): number {
    if (this.owner === null) {
      this.becomeOwner(v);
      return BLOCKED;
    }
    if (this.nextOwner === null) {
      this.nextOwner = v;
      return BLOCKED;
    }
    // Gathered: the next owner's write will carry these commands.
    return 0;
  }

  private becomeOwner(v: Vcpu): void {
    this.owner = v;
    // The owner writes PROD for everything written so far (its own commands and those gathered).
    this.ownerProd = this.ring.prod;
    const c = this.env.costs;
    if (this.iothread) {
      // The write kicks the VMM thread (an in-kernel exit) and waits for its reply.
      this.env.sim.after(c.draw(S.exit_kernel), this, T.REQUEST);
    } else {
      this.env.sim.after(c.draw(S.exit_user) / 2, v, V.TRAP_ARRIVE);
    }
  }

  /** The owner vCPU's own steps (QEMU shape: all on its thread). */
  step(v: Vcpu, kind: number): void {
    const env = this.env;
    switch (kind) {
      case V.TRAP_ARRIVE:
        this.bql.acquire(v, V.TRAP_BQL);
        return;
      case V.TRAP_BQL:
        env.sim.after(this.consume() + env.costs.draw(S.bql), v, V.TRAP_WORKED);
        return;
      case V.TRAP_WORKED:
        this.submitToSmmu(v, V.TRAP_SMMU);
        return;
      case V.TRAP_SMMU:
        this.bql.release();
        completeWaiters(this.ring, this.waiters, this.ring.cons(), v);
        env.sim.after(env.costs.draw(S.exit_user) / 2, v, V.TRAP_BACK);
        return;
      case V.TRAP_BACK:
        this.handOver(v);
        v.writeReturned();
        return;
      default:
        throw new Error(`sim: vCPU event ${kind} is not a trap step`);
    }
  }

  fire(kind: number): void {
    const env = this.env;
    switch (kind) {
      case T.REQUEST:
        if (this.threadState === 'sleep') {
          this.threadState = 'waking';
          env.sim.after(env.costs.draw(S.wake), this, T.CPU);
        }
        return;
      case T.CPU:
        if (this.threadState === 'waking') {
          // Woken: it needs a host CPU before it runs.
          this.threadState = 'busy';
          env.hostCpus.acquire(this, T.CPU);
          return;
        }
        this.cpuFrom = env.sim.now;
        env.sim.after(this.consume(), this, T.WORKED);
        return;
      case T.WORKED:
        this.submitToSmmu(this, T.SMMU_DONE);
        return;
      case T.SMMU_DONE: {
        const v = this.owner!;
        completeWaiters(this.ring, this.waiters, this.ring.cons(), v);
        // The reply reaches the owner as a completion does; the VMM thread, with no other write to serve, sleeps.
        env.sim.after(env.guestSleeps ? env.costs.draw(S.wake) : env.costs.draw(S.notice), v, V.TRAP_BACK);
        this.threadState = 'sleep';
        this.cpuNs += env.sim.now - this.cpuFrom;
        env.hostCpus.release();
        return;
      }
    }
  }

  /** The trapped PROD write, for real (first pass, ioctl, model); returns the VMM's and the kernel's CPU time for it, ns. */
  private consume(): number {
    const q = this.cmdq;
    const c = this.env.costs;
    const fwd0 = q.forwarded;
    const vmm0 = q.handledByVmm;
    const ioctls0 = q.ioctls;
    const syncs0 = this.hwpt.syncs;
    q.writeProd(this.ownerProd);
    this.traps++;
    this.fwd = q.forwarded - fwd0;
    this.blocks = this.hwpt.syncs - syncs0;
    const parsed = this.fwd + (q.handledByVmm - vmm0);
    return c.drawN(S.vmm_cmd, parsed) + c.drawN(this.iothread ? S.ioctl_iothread : S.ioctl, q.ioctls - ioctls0) + c.drawN(S.iommufd_cmd, this.fwd);
  }

  /** The physical SMMU's work for the last consume: the forwarded TLBIs and the kernel's CMD_SYNC per block. */
  private submitToSmmu(actor: Actor, kind: number): void {
    const c = this.env.costs;
    this.env.smmu.submit(c.drawN(S.smmu_cmd, this.fwd), c.drawN(S.smmu_sync, this.blocks), actor, kind);
  }

  /** The owner's write returned: the next owner writes PROD for everything written since. */
  private handOver(v: Vcpu): void {
    if (this.owner !== v) throw new Error('sim: a trapped write returned for a vCPU that is not the owner');
    this.owner = null;
    const next = this.nextOwner;
    this.nextOwner = null;
    if (next !== null) this.becomeOwner(next);
  }
}
