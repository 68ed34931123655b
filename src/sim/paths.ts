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

import type { Consumer } from '../../native-free-fastpath/consumer.ts';
import { StaleTranslationError } from '../errors.ts';
import { Q_STAT_SYNCS } from '../layout.ts';
import type { TrapCmdq } from '../trap/cmdq.ts';
import type { HwptInvalidate } from '../trap/iommufd.ts';
import type { Actor, Sim } from './engine.ts';
import type { PollPolicy } from '../poll-policy.ts';
import { STEP_NAMES, type SimProfile, type StepName } from './profile.ts';
import { Semaphore, SmmuEngine } from './resources.ts';
import { consumedBy, SimWorld, UnmapCommands, type PteWindow, type SimRing } from './world.ts';

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
const idx = (s: StepName): number => STEP_NAMES.indexOf(s);
export const S = {
  guest_pte: idx('guest_pte'), guest_cmd: idx('guest_cmd'), exit_user: idx('exit_user'), exit_kernel: idx('exit_kernel'),
  ioctl: idx('ioctl'), bql: idx('bql'), vmm_cmd: idx('vmm_cmd'), iommufd_cmd: idx('iommufd_cmd'), kthread_cmd: idx('kthread_cmd'),
  smmu_cmd: idx('smmu_cmd'), smmu_sync: idx('smmu_sync'), wake: idx('wake'), notice: idx('notice'), hw_doorbell: idx('hw_doorbell'),
  hw_cmd: idx('hw_cmd'),
} as const;
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
  /** The bench's batched throughput: min(4096, 64 x batch) TLBIs in publishes of `batch`, one CMD_SYNC at the end. */
  | { kind: 'batch'; batch: number };

/** Commands per timed iteration of the batch workload (as bench/scenarios.ts throughput). */
export function batchCommands(batch: number): number {
  return Math.ceil(Math.min(4096, 64 * batch) / batch) * batch;
}

const V = { START: 0, MAPPED: 1, SUBMIT: 2, DONE: 3, TRAP_ARRIVE: 4, TRAP_BQL: 5, TRAP_WORKED: 6, TRAP_SMMU: 7, TRAP_BACK: 8, BEGIN: 9 } as const;

/** One guest vCPU running its workload in a loop; each operation's latency is one sample. */
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
  private chunk = 0;
  private readonly chunks: number;
  private readonly chunkCmds: number;
  private readonly pages: number;
  private readonly cmds: UnmapCommands;
  private readonly u = new Uint32Array(4);
  private readonly ptes: PteWindow | null;

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
    this.ptes = workload.kind === 'unmap' ? env.world.openWindow(id) : null;
    // Roundtrip and batch: the commands never change.
    if (workload.kind !== 'unmap') this.cmds.build(SimWorld.windowIova(id), 1);
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
      case V.BEGIN:
        this.chunk = 0;
        if (this.ptes === null) {
          this.t0 = env.sim.now;
          env.sim.after(c.drawN(S.guest_cmd, this.chunkCmds === 0 ? this.cmds.n : this.chunkCmds), this, V.SUBMIT);
          return;
        }
        env.sim.after(c.drawN(S.guest_pte, pages), this, V.MAPPED);
        return;
      case V.MAPPED: {
        const ptes = this.ptes!;
        env.world.map(ptes, pages);
        // The device touches every page: the IOTLB now holds what the unmap must invalidate.
        for (let k = 0; k < pages; k++) {
          const fault = env.world.dma(this.id, k);
          if (fault !== 0) throw new Error(`sim: vCPU ${this.id}'s page ${k} does not translate after its map (fault 0x${fault.toString(16)})`);
        }
        this.t0 = env.sim.now;
        env.world.unmap(ptes, pages);
        const n = this.cmds.build(SimWorld.windowIova(this.id), pages);
        env.sim.after(c.drawN(S.guest_pte, pages) + c.drawN(S.guest_cmd, n), this, V.SUBMIT);
        return;
      }
      case V.SUBMIT:
        this.submit();
        return;
      case V.DONE:
        this.complete();
        return;
      default:
        // Trap-path steps of the owner vCPU.
        (this.server as TrapVmm).step(this, kind);
    }
  }

  /** Write this chunk's commands, publish PROD, and hand them over. */
  private submit(): void {
    const env = this.env;
    const last = this.chunk === this.chunks - 1;
    const cmds = this.cmds;
    if (this.chunkCmds === 0) this.waitPos = this.ring.write(cmds.words, cmds.n, this.u);
    else {
      this.waitPos = this.ring.write(cmds.batch, this.chunkCmds, this.u);
      if (last) this.waitPos = this.ring.write(cmds.sync, 1, this.u);
    }
    this.waiting = last;
    this.waitFrom = env.sim.now;
    this.ring.publish();
    const busy = this.server.published(this, last);
    if (busy !== BLOCKED) this.next(busy);
  }

  /** After a publish that returned: the next chunk, or (after the last) wait for the CMD_SYNC. */
  private next(busyNs: number): void {
    if (this.chunk === this.chunks - 1) return;
    this.chunk++;
    const n = this.chunkCmds + (this.chunk === this.chunks - 1 ? 1 : 0);
    this.env.sim.after(busyNs + this.env.costs.drawN(S.guest_cmd, n), this, V.SUBMIT);
  }

  /** The trapped PROD write returned (this vCPU was the owner): its commands up to that PROD are consumed. */
  writeReturned(): void {
    if (this.env.guestSleeps) this.sleptNs += this.env.sim.now - this.waitFrom;
    if (this.chunk < this.chunks - 1) {
      this.next(0);
      return;
    }
    this.waiting = false;
    this.complete();
  }

  /** The CMD_SYNC completed (CONS passed it): the guest sees it after a poll (cache line) or a wake-up. */
  completed(): void {
    if (!this.waiting) return;
    this.waiting = false;
    if (this.env.guestSleeps) {
      this.sleptNs += this.env.sim.now - this.waitFrom;
      this.env.sim.after(this.env.costs.draw(S.wake), this, V.DONE);
    } else {
      this.env.sim.after(this.env.costs.draw(S.notice), this, V.DONE);
    }
  }

  private complete(): void {
    const env = this.env;
    // An unmap's sync has completed: no page of it may translate any more.
    if (this.ptes !== null) {
      for (let k = 0; k < this.pages; k++) {
        if (env.world.dma(this.id, k) === 0) throw new StaleTranslationError(env.path, this.id, SimWorld.windowIova(this.id) + k * 4096, env.sim.now);
      }
    }
    this.samples[this.done++] = env.sim.now - this.t0;
    if (this.done < this.count) env.sim.after(0, this, V.START);
    else this.finishedAt = env.sim.now;
  }
}

/** The vCPUs waiting on `ring` whose CMD_SYNC is at or before `cons` complete. */
function completeWaiters(waiters: readonly Vcpu[], cons: number, except?: Vcpu): void {
  for (let k = 0; k < waiters.length; k++) {
    const v = waiters[k]!;
    if (v.waiting && v !== except && consumedBy(v.waitPos, cons)) v.completed();
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
  private spinEpoch = 0;
  private spinFrom = 0;
  private cpuFrom = 0;
  private consAfter = 0;
  private syncs = 0;
  private cmds = 0;
  /** CPU held, ns (spinning included), and spinning alone. */
  cpuNs = 0;
  spinNs = 0;
  wakeups = 0;

  constructor(private readonly env: SimEnv, private readonly policy: PollPolicy) {}

  addQueue(q: ServedQueue): void {
    this.queues.push(q);
  }

  published(): number {
    const env = this.env;
    const c = env.costs;
    switch (this.state) {
      case 'sleep': {
        // The guest saw SLEEPING and rings: an ioeventfd exit on its CPU, then the wake-up.
        const exit = c.draw(S.exit_kernel);
        this.state = 'waking';
        this.wakeups++;
        env.sim.after(exit + c.draw(S.wake), this, K.WOKEN);
        return exit;
      }
      case 'spin':
        this.state = 'noticing';
        env.sim.after(c.draw(S.notice), this, K.NOTICE);
        return 0;
      default:
        // Waking, noticing or in a pass: that pass or the next one sees the new PROD.
        return 0;
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
        this.policy.arrived(env.sim.now, true);
        this.startPass();
        return;
      case K.NOTICE:
        this.spinNs += env.sim.now - this.spinFrom;
        this.policy.arrived(env.sim.now, false);
        this.startPass();
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
        completeWaiters(q.waiters, this.consAfter);
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

  private startPass(): void {
    this.state = 'busy';
    this.k = 0;
    this.passWork = 0;
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
      this.cmds = q.consumer.pass();
      this.syncs = syncsSince(q.ring, i32, syncs0);
      this.consAfter = q.ring.cons();
      this.passWork += this.cmds;
      env.sim.after(env.costs.drawN(S.kthread_cmd, this.cmds), this, K.ISSUED);
      return;
    }
    if (this.passWork > 0) {
      this.startPass();
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
    this.env.sim.after(this.env.costs.draw(S.hw_doorbell), this, H.FETCH);
    return 0;
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
    completeWaiters(this.waiters, cons);
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
        completeWaiters(this.waiters, this.ring.cons(), v);
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
        completeWaiters(this.waiters, this.ring.cons(), v);
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
    return c.drawN(S.vmm_cmd, parsed) + c.drawN(S.ioctl, q.ioctls - ioctls0) + c.drawN(S.iommufd_cmd, this.fwd);
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
