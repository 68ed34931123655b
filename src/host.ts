// The emulated host: one SharedArrayBuffer as host physical memory, the
// kernel thread (native-free-fastpath/kthread.worker.ts) owning the SMMU
// model, VMs with RAM, stage 2 and a vSMMU, their vCMDQs, and DMA agents.
//
//   const host = await startHost({ spinUs: 50 });
//   const vm = await host.createVm({ vmid: 1, streams: [{ vsid: 0, psid: 0x10 }] });
//   const pt = vm.pageTable();                       // guest stage 1 (TranslationTable over guest RAM)
//   await vm.attachDevice({ vsid: 0, cd: { asid: 1, ttb0: pt.root } });
//   const q = await vm.openQueue({ path: 'doorbell' });
//   q.submit([{ op: 'TLBI_NH_VA', asid: 1, addr: 0x1000n, leaf: 1 }], { cs: 'sev' });
//   const dma = await host.dma();                    // dma.handle -> DmaAgent.attach(handle) in a worker
//   dma.translate(0x10, 0, 0x1000, ACCESS.READ);
//   await host.stop();

import { MessageChannel, Worker } from 'node:worker_threads';
import { checkInt, checkOptions, checkSignal, show } from './args.ts';
import { ArgumentError } from './errors.ts';
import { DEFAULT_FEATURES, makeFeatures, type SmmuFeatures } from './features.ts';
import { GuestQueue, type QueueHandle } from './guest.ts';
import {
  CONFIG_EN, CRASH_CODE, CTL_CRASH, CTL_CRASH_AFTER, CTL_EPOCH, CTL_HEARTBEAT_MS, CTL_INJECT_DELAY_US, CTL_SLEEPING, CTL_SLOWDOWN_NS, CTL_SPIN_US,
  CTL_STALE_MS, CTL_STATE, DEFAULT_MAX_QUEUES, FIXED_MAILBOXES, KTHREAD_OP, MAILBOX_STATE, MB_STATE, Q_BASE,
  Q_BASE_IPA, Q_CMDSET, Q_CONFIG, Q_LOG2SIZE, Q_PEND, Q_VINTF, Q_VMID, SERVER_STATE, PendingSlots, initMmio, mailboxAt, mmioLayout, notifyQueueWaiters, queueRegs,
  type CrashHow, type MmioLayout,
} from './layout.ts';
import { MailboxClient, type MailboxHandle } from './mailbox.ts';
import { checkPollOptions, type PollConfig, type PollOptions } from './poll-policy.ts';
import { GuestMemory, PhysLayout } from './model/mem.ts';
import { TranslationTable, type TableOptions } from './model/pgtable.ts';
import { VCMDQ_CMDSETS } from './vsmmu.ts';
import { STE_BYTES, STE_CFG, buildStage2, encodeSte, installNestedSte, writeGuestCd, type CdFields, type Stage2 } from './model/structs.ts';
import { ACCESS } from './model/smmu.ts';
import type { IommufdMode } from './trap/iommufd.ts';
import { ServerThread } from './server-thread.ts';
import { ServerDeadError } from './waiter.ts';
import { workerUrl } from './worker-url.ts';

export interface HostOptions {
  features?: Partial<SmmuFeatures>;
  /**
   * A fixed kernel-thread spin budget before sleeping, µs (0 = sleep at
   * once), io_uring SQPOLL's idle; guests spin as long. Exactly what it was
   * before `poll` existed (the perf gate measures it). Not with `poll`.
   */
  spinUs?: number;
  /**
   * The kernel thread's polling policy (src/poll-policy.ts, README "The
   * adaptive poller"): { policy: 'adaptive' } (the default when neither this
   * nor spinUs is given: polls only while the wake it saves is worth the CPU,
   * within cpuShare of a core), 'halt-poll' (KVM's halt polling) or 'fixed'.
   */
  poll?: PollOptions;
  /** Guests' spin budget before blocking on a completion, µs (default: spinUs when given, else 50: one wake of a sleeping kernel thread). */
  guestSpinUs?: number;
  /** Host physical memory (default 64 MiB). */
  memBytes?: number;
  /**
   * Queues the host can provision, of every path (default 1024: 64 VMs x 16
   * vCPUs). Each costs a 320-byte register block in the MMIO region, which
   * memBytes must hold with room to spare.
   */
  maxQueues?: number;
  /**
   * Mailboxes the host can hand out (default 64, at least 64): one per
   * `trap` queue (its vCPU's exit into the VMM), per DMA agent, per kernel
   * thread carrying `trap` ioctls and per VM's `trap-inline` VMM. Past 64
   * each costs 4224 bytes of the MMIO region (its slot and its 4 KiB
   * payload area).
   */
  maxMailboxes?: number;
  /**
   * Kernel-thread workers (default 1). VMs are spread over them (each new VM
   * goes to the thread with the fewest), each thread with its own control
   * block, doorbell, pending bitmap and SMMU model; all of a VM's queues,
   * streams and DMA agents stay on its thread, so CMD_SYNC ordering per
   * queue is unchanged.
   */
  kernelThreads?: number;
  /** Test hook (a slow or wedged SMMU): busy-wait this many µs per command the kernel thread consumes, still beating the heartbeat. */
  injectDelayUs?: number;
  /**
   * Bench hook (the perf gate's detection floor, VCMDQ_SLOWDOWN_NS): about this
   * many ns of extra work per command consumed, as calibrated loop iterations,
   * so it scales with the machine like real code does. Default 0.
   */
  slowdownNs?: number;
  /** Kernel-thread heartbeat period and waiters' slice, ms (default 20). */
  heartbeatMs?: number;
  /** A heartbeat unchanged this long means the kernel thread is dead, ms (default 2000). */
  staleMs?: number;
  /** Restart the kernel thread automatically when it exits or throws, at most this many times (default 0; see restartKernelThread). */
  autoRestart?: number;
  /**
   * IOMMU_HWPT_INVALIDATE on an entry that fails: 'strict' (default: -EIO
   * after flushing the converted prefix) or 'upstream-v6.18' (Linux v6.18:
   * a host-illegal command becomes a CMD_SYNC through skip_err and the ioctl
   * returns 0). src/trap/iommufd.ts; README "Where the emulation differs".
   */
  iommufd?: IommufdMode;
  /**
   * The SMMU model's caching (SmmuModelOptions): `combinedNested` (default
   * true: a nested translation is one VA -> PA IOTLB entry, so a missing
   * TLBI_NH_ALL after a stage-2 change shows) and `walkCacheEntries`
   * (default 0; > 0 caches table descriptors, so a Leaf=1 TLBI after a table
   * change leaves a stale walk, as on hardware). `bypass` (default false) is
   * a bench hook: the doorbell kernel thread still copies, converts, decodes
   * and validates every command and publishes CONS, but never executes one
   * on the model (nothing is invalidated; translations still work), so the
   * bench can time the transport alone. The trap path is not affected.
   */
  model?: { combinedNested?: boolean; walkCacheEntries?: number; bypass?: boolean };
  /**
   * The host SMMU has a Tegra241 CMDQV (default false): VMs may open
   * hardware VCMDQs, `openQueue({ path: 'hw' })` (src/hw.ts). While one is
   * enabled the kernel thread, which plays the SMMU, polls and never sleeps:
   * it burns a CPU as long as a hw queue is enabled.
   */
  cmdqv?: boolean;
}

export interface VmOptions {
  /** 1..2^vmid_bits-1 (8 bits unless features.VMID16), unique on the host. */
  vmid: number;
  /** Guest RAM (default 8 MiB); IPA [0, ramBytes). */
  ramBytes?: number;
  /** The VM's devices: guest vSID -> host pSID (its vDEVICEs). */
  streams: readonly { vsid: number; psid: number }[];
  /** Aborting rejects with the signal's reason; nothing of the VM is left behind. */
  signal?: AbortSignal;
}

export interface QueueOptions {
  path?: string;
  /**
   * Paths to provision as well, idle, so the guest can move the queue to
   * one of them at run time with `q.switchPath(path)` (a live migration to
   * a host with fewer vCMDQs falls back to 'trap'). Each costs a queue.
   */
  standby?: readonly string[];
  /** Entries = 2^log2size (default 8: 256 entries; Linux wants more than 64); at most IDR1.CMDQS, and the ring must fit the VM's queue area (a quarter of its ramBytes). */
  log2size?: number;
  /** Aborting rejects with the signal's reason (a queue the kernel thread already serves stays provisioned, unused). */
  signal?: AbortSignal;
  /**
   * The doorbell queue's command set: 'wide' (default: NH TLBIs, ATC_INV,
   * CMD_SYNC with any CS) or 'tegra241' (exactly Linux's
   * tegra241_guest_vcmdq_supports_cmd set, CMD_SYNC CS=NONE). The trap paths
   * emulate the whole vSMMU CMDQ and ignore it; a 'hw' queue is always
   * 'tegra241' (a guest VINTF's VCMDQ) and refuses 'wide'.
   */
  cmdset?: 'wide' | 'tegra241';
}

/** Provisions one queue of a registered path and returns its handle (GuestQueue drives it through the path's transport). */
export type QueueOpener = (vm: Vm, opts: QueueOptions) => Promise<QueueHandle>;
/**
 * A path's own argument checks, run by openQueue with the other checks,
 * before anything is provisioned: throws ArgumentError. `opts` is what the
 * caller passed (log2size already checked).
 */
export type QueueCheck = (vm: Vm, opts: QueueOptions) => void;
const queueOpeners = new Map<string, { open: QueueOpener; check?: QueueCheck | undefined }>();

/** Add a queue path (the trap path registers 'trap'). 'doorbell' is built in. */
export function registerQueuePath(path: string, opener: QueueOpener, check?: QueueCheck): void {
  queueOpeners.set(path, { open: opener, check });
}

/** What `host.stop()` did. */
export interface StopReport {
  /** Threads that did not exit within the grace period and were terminated ('VMM', 'kernel thread'). */
  killed: string[];
}

export interface StopOptions {
  /** How long each thread may take to exit before it is terminated, ms (default 5000). */
  graceMs?: number;
}

export class Host {
  readonly sab: SharedArrayBuffer;
  readonly i32: Int32Array;
  readonly features: SmmuFeatures;
  /** Host-physical allocator above the MMIO region (stage-2 tables, STEs, VM RAM). */
  readonly phys: PhysLayout;
  /** The kernel threads (HostOptions.kernelThreads); each VM is served by one of them. */
  private readonly kthreads: KernelThread[];
  private stopped = false;
  /** Automatic restarts left (HostOptions.autoRestart). */
  private autoRestarts: number;
  private nextQid = 0;
  private nextMailbox = 0;
  /** Paths' own threads, stopped before the kernel thread they make requests on; each returns what it killed. */
  private readonly stopHooks: ((graceMs: number) => Promise<string[]>)[] = [];
  private readonly vms = new Map<number, Vm>();

  /** HostOptions.cmdqv: hardware VCMDQs ('hw' queues) may be opened. */
  readonly cmdqv: boolean;

  private constructor(
    sab: SharedArrayBuffer,
    features: SmmuFeatures,
    /** HostOptions.maxQueues: register blocks in the MMIO region. */
    readonly maxQueues: number,
    /** HostOptions.maxMailboxes: mailbox slots in the MMIO region. */
    readonly maxMailboxes: number,
    mmio: MmioLayout,
    autoRestart: number,
    cmdqv: boolean,
    private readonly kthreadOpts: { iommufd: IommufdMode; model: { combinedNested: boolean; walkCacheEntries: number }; bypass: boolean; poll: PollConfig },
  ) {
    this.sab = sab;
    this.cmdqv = cmdqv;
    this.i32 = new Int32Array(sab);
    this.features = features;
    this.phys = new PhysLayout(sab, mmio.bytes);
    this.autoRestarts = autoRestart;
    const n = mmio.ctl.length;
    this.kthreads = mmio.ctl.map((ctl, k) => new KernelThread(k, ctl, n === 1 ? 'kernel thread' : `kernel thread ${k}`, new PendingSlots(mmio.pendingWords)));
    for (const kt of this.kthreads) kt.thread = this.spawn(kt);
  }

  /** Kernel threads the host runs (HostOptions.kernelThreads). */
  get kernelThreads(): number {
    return this.kthreads.length;
  }

  /** A kernel thread over this host's memory. Its death wakes every queue waiter (one blocked on it sees the heartbeat instead). */
  private spawn(kt: KernelThread): ServerThread {
    const { port1, port2 } = new MessageChannel();
    const worker = new Worker(workerUrl('kthread.worker.js'), {
      workerData: { sab: this.sab, features: this.features, port: port2, ctl: kt.ctl, ...this.kthreadOpts },
      transferList: [port2],
    });
    return new ServerThread(kt.name, this.i32, kt.ctl, worker, port1, () => {
      // Waiters of the other threads' queues wake too, re-check and wait again: cheaper than tracking whose is whose.
      for (let qid = 0; qid < this.nextQid; qid++) notifyQueueWaiters(this.i32, qid);
      if (!this.stopped && kt.restarting === null && this.autoRestarts > 0) {
        this.autoRestarts--;
        // Handled here; the restart's own failure is seen through lastRestart or the next call.
        this.restartKernelThread(kt.index).catch(() => {});
      }
    });
  }

  /** @internal use startHost */
  static async start(options?: HostOptions): Promise<Host> {
    const opts = checkOptions('startHost: options', options, HOST_OPTIONS);
    const features = makeFeatures(checkFeatures(opts['features']));
    const maxQueues = checkInt('startHost: maxQueues', opts['maxQueues'] ?? DEFAULT_MAX_QUEUES, 1, 1 << 20, 'queues');
    const kernelThreads = checkInt('startHost: kernelThreads', opts['kernelThreads'] ?? 1, 1, MAX_KERNEL_THREADS, 'kernel-thread workers');
    const maxMailboxes = checkInt('startHost: maxMailboxes', opts['maxMailboxes'] ?? FIXED_MAILBOXES, FIXED_MAILBOXES, 1 << 16, 'mailboxes');
    const mmio = mmioLayout(maxQueues, kernelThreads, maxMailboxes);
    const memBytes = checkInt('startHost: memBytes', opts['memBytes'] ?? 64 << 20, mmio.bytes + 65536, 2 ** 31,
      `bytes: the MMIO region of maxQueues ${maxQueues}, kernelThreads ${kernelThreads} and maxMailboxes ${maxMailboxes} takes ${mmio.bytes} and 64 KiB must be left`);
    if (memBytes % 65536 !== 0) throw new ArgumentError('startHost: memBytes', `must be a multiple of 64 KiB, got ${memBytes}`);
    if (opts['spinUs'] !== undefined && opts['poll'] !== undefined) throw new ArgumentError('startHost: poll', 'cannot be combined with spinUs (a fixed budget): give one of them');
    const spinUs = opts['spinUs'] === undefined ? undefined : checkInt('startHost: spinUs', opts['spinUs'], 0, 1_000_000, 'µs');
    const poll: PollConfig = spinUs !== undefined ? { policy: 'fixed', spinNs: 1000 * spinUs } : checkPollOptions('startHost: poll', opts['poll']);
    const guestSpinUs = checkInt('startHost: guestSpinUs', opts['guestSpinUs'] ?? spinUs ?? GUEST_SPIN_US, 0, 1_000_000, 'µs');
    const heartbeatMs = checkInt('startHost: heartbeatMs', opts['heartbeatMs'] ?? 20, 1, 60_000, 'ms');
    // A heartbeat must be able to beat at least twice before it counts as stale.
    const staleMs = checkInt('startHost: staleMs', opts['staleMs'] ?? 2000, 2 * heartbeatMs, 2 ** 31 - 1, 'ms, at least 2 x heartbeatMs');
    const injectDelayUs = checkInt('startHost: injectDelayUs', opts['injectDelayUs'] ?? 0, 0, 2 ** 31 - 1, 'µs per command');
    const slowdownNs = checkInt('startHost: slowdownNs', opts['slowdownNs'] ?? 0, 0, 1_000_000, 'ns per command');
    const sab = new SharedArrayBuffer(memBytes);
    const i32 = new Int32Array(sab);
    initMmio(i32, maxQueues, kernelThreads, maxMailboxes);
    for (const ctl of mmio.ctl) {
      i32[ctl + CTL_SPIN_US] = guestSpinUs;
      i32[ctl + CTL_HEARTBEAT_MS] = heartbeatMs;
      i32[ctl + CTL_STALE_MS] = staleMs;
      i32[ctl + CTL_INJECT_DELAY_US] = injectDelayUs;
      i32[ctl + CTL_SLOWDOWN_NS] = slowdownNs;
    }
    const autoRestart = checkInt('startHost: autoRestart', opts['autoRestart'] ?? 0, 0, 1000, 'automatic kernel-thread restarts');
    const iommufd = opts['iommufd'] ?? 'strict';
    if (iommufd !== 'strict' && iommufd !== 'upstream-v6.18') throw new ArgumentError('startHost: iommufd', `must be 'strict' or 'upstream-v6.18', got ${show(iommufd)}`);
    const m = checkOptions('startHost: model', opts['model'], MODEL_OPTIONS);
    const combinedNested = m['combinedNested'] ?? true;
    if (typeof combinedNested !== 'boolean') throw new ArgumentError('startHost: model.combinedNested', `must be a boolean, got ${show(combinedNested)}`);
    const walkCacheEntries = checkInt('startHost: model.walkCacheEntries', m['walkCacheEntries'] ?? 0, 0, 1 << 20, 'table descriptors cached');
    const bypass = m['bypass'] ?? false;
    if (typeof bypass !== 'boolean') throw new ArgumentError('startHost: model.bypass', `must be a boolean, got ${show(bypass)}`);
    const cmdqv = opts['cmdqv'] ?? false;
    if (typeof cmdqv !== 'boolean') throw new ArgumentError('startHost: cmdqv', `must be a boolean, got ${show(cmdqv)}`);
    const host = new Host(sab, features, maxQueues, maxMailboxes, mmio, autoRestart, cmdqv, { iommufd, model: { combinedNested, walkCacheEntries }, bypass, poll });
    await Promise.all(host.kthreads.map((kt) => kt.thread.expectReply(0)));
    return host;
  }

  /**
   * Send a control message to kernel thread `kthread` and wait for its
   * answer; an accepted one is recorded for a restart of that thread to replay.
   */
  async control(msg: Record<string, unknown>, kthread = 0): Promise<void> {
    const kt = this.kthread(kthread);
    await kt.thread.control(msg);
    // Answers come in the order the messages were sent, so the records keep that order.
    kt.records.push(msg);
    if (msg['op'] === 'addMailbox') kt.mailboxes.push(msg['mbid'] as number);
  }

  /** @internal kernel thread `k`, checked (an ArgumentError naming `argument`). */
  kthread(k: number, argument = 'kthread'): KernelThread {
    checkInt(argument, k, 0, this.kthreads.length - 1, `a kernel-thread index, the host has ${this.kthreads.length}`);
    return this.kthreads[k]!;
  }

  /** @internal the control block of kernel thread `k` (its handles' `ctl`). */
  kthreadCtl(k: number): number {
    return this.kthread(k).ctl;
  }

  /**
   * Replace kernel thread `kthread` (after it died: an exception, an exit,
   * a heartbeat gone stale; a thread still running is terminated first), or,
   * without an index, every kernel thread, each as if on its own. The new
   * one rebuilds the VMs, streams, mailboxes and queues of that thread from
   * the host's records and resumes each queue from its published CONS; its
   * SMMU's caches start empty, which is always safe. The other threads and
   * their VMs are not touched. Waiters blocked on the old thread have had
   * their error. Nothing published as consumed runs again; a command the old
   * thread consumed but had not yet published as consumed (it died inside a
   * pass) runs again, which is harmless for invalidations and syncs. A
   * restart of a thread already under way is joined, not repeated.
   */
  restartKernelThread(kthread?: number): Promise<void> {
    if (kthread === undefined && this.kthreads.length > 1) {
      const all = Promise.all(this.kthreads.map((kt) => this.restartOne(kt))).then(() => {});
      this.lastRestart = all;
      return all;
    }
    const kt = this.kthread(kthread ?? 0, 'restartKernelThread: kthread');
    this.lastRestart = this.restartOne(kt);
    return this.lastRestart;
  }

  /** The kernel thread's polling policy, as checked with its defaults filled in (ns). */
  get poll(): PollConfig {
    return this.kthreadOpts.poll;
  }

  /** The latest restart (automatic or not), or null: tests and callers await it. */
  lastRestart: Promise<void> | null = null;

  private restartOne(kt: KernelThread): Promise<void> {
    if (this.stopped) return Promise.reject(kt.thread.dead ?? new ServerDeadError(kt.name, 'the host was stopped'));
    kt.restarting ??= this.restart(kt).finally(() => {
      kt.restarting = null;
    });
    return kt.restarting;
  }

  private async restart(kt: KernelThread): Promise<void> {
    await kt.thread.terminate();
    const i32 = this.i32;
    const ctl = kt.ctl;
    // The dead thread's words: the crash hook disarmed, nobody asleep, STARTING until the new one runs.
    Atomics.store(i32, ctl + CTL_CRASH, 0); // unordered: no thread serves this block now
    Atomics.store(i32, ctl + CTL_CRASH_AFTER, 0); // unordered: as above
    Atomics.store(i32, ctl + CTL_SLEEPING, 0); // unordered: as above
    // publish: EPOCH before STATE leaves DEAD, so a waiter that sees the new STATE also sees it slept through a death.
    Atomics.add(i32, ctl + CTL_EPOCH, 1);
    Atomics.store(i32, ctl + CTL_STATE, SERVER_STATE.STARTING); // publish: STATE, the waiters' liveness check (not DEAD any more)
    // Slots the dead thread left claimed or answered are freed; a client still waiting on one sees no
    // RESPONSE and gets ServerDeadError (MailboxClient), its request may have run or not, as after a timeout.
    for (const id of kt.mailboxes) {
      Atomics.store(i32, mailboxAt(i32, id) + MB_STATE, MAILBOX_STATE.IDLE); // publish: mailbox IDLE release, as a client's finish
      Atomics.notify(i32, mailboxAt(i32, id) + MB_STATE);
    }
    kt.thread = this.spawn(kt);
    await kt.thread.expectReply(0);
    // Sent together (answered in order): addVm before the streams and queues that name it.
    await Promise.all(kt.records.map((m) => kt.thread.control(m)));
  }

  /** @internal throws kernel thread `kthread`'s ServerDeadError when it is dead or the host stopped (default: any thread's). */
  checkAlive(kthread?: number): void {
    if (kthread !== undefined) this.kthread(kthread).thread.checkAlive();
    else for (const kt of this.kthreads) kt.thread.checkAlive();
  }

  /**
   * A VM: guest RAM, its stage 2, its vSMMU with `streams` (vSID -> pSID).
   * Every argument is checked before anything is allocated (ArgumentError);
   * a call that fails later (the kernel thread died) gives its memory back.
   */
  async createVm(options: VmOptions): Promise<Vm> {
    const opts = checkOptions('createVm: options', options, VM_OPTIONS);
    // Linux arm_smmu_domain_finalise_s2 allocates VMIDs in [1, 2^vmid_bits), vmid_bits = IDR0.VMID16 ? 16 : 8
    // (arm_smmu_device_hw_probe); VMID 0 is kept for stage-2 bypass STEs.
    const vmidBits = this.features.VMID16 ? 16 : 8;
    const vmid = checkInt('createVm: vmid', opts['vmid'], 1, 2 ** vmidBits - 1, `a ${vmidBits}-bit VMID, IDR0.VMID16=${this.features.VMID16 ? 1 : 0}; 0 is reserved`);
    if (this.vms.has(vmid)) throw new ArgumentError('createVm: vmid', `${vmid} is already in use`);
    const ramBytes = checkInt('createVm: ramBytes', opts['ramBytes'] ?? 8 << 20, 1 << 20, 2 ** 31, 'bytes');
    if (ramBytes % (1 << 20) !== 0) throw new ArgumentError('createVm: ramBytes', `must be a multiple of 1 MiB, got ${ramBytes}`);
    const streams = this.checkStreams(opts['streams']);
    const signal = checkSignal('createVm: signal', opts['signal']);
    signal?.throwIfAborted();
    // The thread with the fewest VMs (the lowest index on a tie): all of a VM's queues stay on it.
    const kt = this.kthreads.reduce((a, b) => (b.vms < a.vms ? b : a));
    kt.thread.checkAlive();
    const mark = this.phys.top;
    let ramBase: number;
    let stage2: Stage2;
    try {
      ramBase = this.phys.alloc(ramBytes, 2 << 20);
      stage2 = buildStage2(this.sab, this.phys, ramBase, ramBytes, vmid);
    } catch {
      this.phys.rewind(mark);
      throw new ArgumentError('createVm: ramBytes', `${ramBytes} bytes (and their stage-2 tables) do not fit in the host memory left (${this.sab.byteLength - mark} bytes): raise startHost's memBytes`);
    }
    const end = this.phys.top;
    const vm = new Vm(this, vmid, ramBase, ramBytes, stage2, streams, kt.index);
    // Reserved now, so a concurrent createVm cannot take the same VMID or pSIDs while this one waits.
    this.vms.set(vmid, vm);
    kt.vms++;
    const release = (): void => {
      this.vms.delete(vmid);
      kt.vms--;
      // Give the memory back if nothing was allocated after it (a failed or aborted call leaves nothing behind).
      if (this.phys.top === end) this.phys.rewind(mark);
    };
    const added = this.control({ op: 'addVm', vmid, streams: streams.map((x) => [x.vsid, x.psid]), ramBase, ramBytes }, kt.index);
    try {
      await abortable(added, signal);
    } catch (e) {
      if (e === signal?.reason) {
        // Aborted while the kernel thread may be adding it: the VMID stays reserved until it answered, then is undone.
        void added.then(() => this.control({ op: 'removeVm', vmid }, kt.index)).then(release, release);
      } else release();
      throw e;
    }
    return vm;
  }

  /** createVm's `streams`: an array of {vsid, psid} StreamIDs, vSIDs unique in the VM, pSIDs unique on the host. */
  private checkStreams(v: unknown): { vsid: number; psid: number }[] {
    if (!Array.isArray(v)) throw new ArgumentError('createVm: streams', `must be an array of { vsid, psid }, got ${show(v)}`);
    const taken = new Set<number>();
    for (const vm of this.vms.values()) for (const x of vm.streams) taken.add(x.psid);
    const vsids = new Set<number>();
    return v.map((x: unknown, k) => {
      const at = `createVm: streams[${k}]`;
      const o = checkOptions(at, x, ['vsid', 'psid']);
      const vsid = checkInt(`${at}.vsid`, o['vsid'], 0, 2 ** 32 - 1, 'a 32-bit StreamID');
      const psid = checkInt(`${at}.psid`, o['psid'], 0, 2 ** 32 - 1, 'a 32-bit StreamID');
      if (vsids.has(vsid)) throw new ArgumentError(`${at}.vsid`, `0x${vsid.toString(16)} is mapped twice in this VM`);
      if (taken.has(psid)) throw new ArgumentError(`${at}.psid`, `0x${psid.toString(16)} already belongs to a device (pSIDs are unique on the host)`);
      vsids.add(vsid);
      taken.add(psid);
      return { vsid, psid };
    });
  }

  /** Queues this host can still provision. */
  get queuesLeft(): number {
    return this.maxQueues - this.nextQid;
  }

  /**
   * @internal the pending slot (Q_PEND) of a new doorbell queue of VM `vmid`
   * on kernel thread `k`: in words no other VM's queues use. A bitmap has a
   * word per queue the host may have, so this runs out only after the
   * queues do; the refusal still names maxQueues.
   */
  allocPendingSlot(k: number, vmid: number): number {
    const slot = this.kthread(k).slots.take(vmid);
    if (slot < 0) throw this.queuesExhausted(1);
    return slot;
  }

  /** @internal a register block for a new queue (openQueue checks queuesLeft first; this is the backstop). */
  allocQueue(): number {
    if (this.nextQid >= this.maxQueues) throw this.queuesExhausted(1);
    return this.nextQid++;
  }

  /** @internal the refusal of a call that needs `n` more queues than are left: it names the option to raise. */
  queuesExhausted(n: number): ArgumentError {
    return new ArgumentError('startHost: maxQueues', `is ${this.maxQueues}: ${n} more queue(s) needed, ${this.queuesLeft} left; start the host with a larger maxQueues`);
  }

  /**
   * @internal a fresh mailbox id, registered with no server: the caller
   * hands it to the thread that serves it (the trap path's VMM).
   */
  allocMailboxId(): number {
    if (this.mailboxesLeft === 0) throw this.mailboxesExhausted();
    return this.nextMailbox++;
  }

  /** Mailboxes this host can still hand out. */
  get mailboxesLeft(): number {
    return this.maxMailboxes - this.nextMailbox;
  }

  /** @internal the refusal of a call that needs a mailbox when none is left: it names the option to raise. */
  mailboxesExhausted(): ArgumentError {
    return new ArgumentError('startHost: maxMailboxes', `is ${this.maxMailboxes}, and every one is taken (one per trap queue, per DMA agent, per kernel thread carrying trap ioctls and per VM's trap-inline VMM; ids are not reused): start the host with a larger maxMailboxes`);
  }

  /** @internal `stop` runs `fn` (last registered first) before stopping the kernel thread; it returns the threads it killed. */
  onStop(fn: (graceMs: number) => Promise<string[]>): void {
    this.stopHooks.push(fn);
  }

  /** A mailbox served by the kernel thread (DMA agents, the trap path's ioctl channel). */
  async mailbox(signal?: AbortSignal, kthread = 0): Promise<MailboxHandle> {
    signal?.throwIfAborted();
    const kt = this.kthread(kthread);
    kt.thread.checkAlive();
    const id = this.allocMailboxId();
    // An abort leaves the mailbox registered but unused (mailbox ids are not reused).
    await abortable(this.control({ op: 'addMailbox', mbid: id }, kthread), signal);
    return { sab: this.sab, ctl: kt.ctl, id, server: kt.name };
  }

  /**
   * A DMA agent (a device asking the SMMU to translate), usable here or, via
   * `agent.handle`, in any thread. With several kernel threads each has its
   * own SMMU model (its VMs' streams and caches), so the agent names its
   * VM: `vmid` picks the thread that serves it (optional with one thread).
   */
  async dma(options?: { signal?: AbortSignal; vmid?: number }): Promise<DmaAgent> {
    const opts = checkOptions('dma: options', options, ['signal', 'vmid']);
    const signal = checkSignal('dma: signal', opts['signal']);
    let kthread = 0;
    if (opts['vmid'] !== undefined) {
      const vm = this.vms.get(checkInt('dma: vmid', opts['vmid'], 1, 2 ** 16 - 1, 'a VMID'));
      if (vm === undefined) throw new ArgumentError('dma: vmid', `${String(opts['vmid'])} names no VM of this host`);
      kthread = vm.kthread;
    } else if (this.kthreads.length > 1) {
      throw new ArgumentError('dma: vmid', `is needed on a host with ${this.kthreads.length} kernel threads: the agent translates through the SMMU model of its VM's thread`);
    }
    return new DmaAgent(await this.mailbox(signal, kthread));
  }

  /**
   * Stop the paths' threads, then the kernel thread; pending waiters get
   * KernelThreadDeadError (ServerDeadError), later calls ServerDeadError.
   * Each thread gets `graceMs` to exit and is terminated after that, so
   * stop() finishes even with a wedged worker; the report names the threads
   * it had to kill. No worker is left running. Stopping twice is harmless.
   */
  async stop(opts?: StopOptions): Promise<StopReport> {
    const graceMs = checkInt('stop: graceMs', checkOptions('stop: options', opts, ['graceMs'])['graceMs'] ?? 5000, 0, 2 ** 31 - 1, 'ms');
    this.stopped = true;
    const killed: string[] = [];
    for (let fn = this.stopHooks.pop(); fn !== undefined; fn = this.stopHooks.pop()) killed.push(...(await fn(graceMs)));
    const stops = await Promise.all(this.kthreads.map((kt) => kt.thread.stop(graceMs)));
    this.kthreads.forEach((kt, k) => stops[k] && killed.push(kt.name));
    return { killed };
  }

  /** `await using host = await startHost()`: stop() at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Test hook: kill the kernel thread from outside (worker.terminate), as a crash would. */
  terminateKernelThread(kthread = 0): Promise<void> {
    return this.kthread(kthread, 'terminateKernelThread: kthread').thread.terminate();
  }

  /**
   * Test hook: the kernel thread fails at its next pass: 'exit' without
   * marking itself dead, 'throw' an exception out of its loop, 'wedge' blocks forever.
   */
  crashKernelThreadOnNextPass(how: CrashHow = 'exit', kthread = 0): void {
    Atomics.store(this.i32, this.kthread(kthread, 'crashKernelThreadOnNextPass: kthread').ctl + CTL_CRASH, CRASH_CODE[how]); // publish: CRASH request (test hook), read at the next pass
  }

  /**
   * Test hook: kernel thread `kthread` (default 0; a VM's is `vm.kthread`)
   * fails inside a pass, right after executing the `commands`-th command it
   * consumes from now on (any of its queues) and before
   * publishing CONS past it: the commands it consumed since its last
   * CMD_SYNC are executed but not published as consumed, so a restart runs
   * them again. When that command is a CMD_SYNC, everything up to it is
   * published (completeSync) and nothing runs again.
   */
  crashKernelThreadAfter(commands: number, how: CrashHow = 'exit', kthread = 0): void {
    checkInt('crashKernelThreadAfter: commands', commands, 1, 2 ** 31 - 1, 'commands');
    if (typeof how !== 'string' || !Object.hasOwn(CRASH_CODE, how)) throw new ArgumentError('crashKernelThreadAfter: how', `must be 'exit', 'throw' or 'wedge', got ${show(how)}`);
    const ctl = this.kthread(kthread, 'crashKernelThreadAfter: kthread').ctl;
    // publish: the countdown before the CRASH word that arms it, so the thread never sees CRASH without its countdown.
    Atomics.store(this.i32, ctl + CTL_CRASH_AFTER, commands);
    Atomics.store(this.i32, ctl + CTL_CRASH, CRASH_CODE[how]); // publish: CRASH request (test hook)
  }
}

/** startHost's kernelThreads limit: each is a worker spinning on a core while busy. */
const MAX_KERNEL_THREADS = 64;

/** One kernel thread of a host: its control block, its worker, and what a replacement replays. */
class KernelThread {
  thread!: ServerThread;
  /** Every setup message this thread accepted, in order: what a new thread replays to rebuild its VMs, streams, mailboxes and queues. */
  readonly records: Record<string, unknown>[] = [];
  /** Mailboxes it serves (a restart frees the slots the dead one left claimed). */
  readonly mailboxes: number[] = [];
  restarting: Promise<void> | null = null;
  /** VMs placed on it (createVm picks the thread with the fewest). */
  vms = 0;
  constructor(
    readonly index: number,
    readonly ctl: number,
    readonly name: string,
    /** Its pending bitmap's slots, handed out whole words per VM (layout.ts PendingSlots). */
    readonly slots: PendingSlots,
  ) {}
}

/** Guests' default spin before blocking, µs: longer than one wake of a sleeping kernel thread (~15-25 µs here), so the guest catches its completion without a second wake. */
const GUEST_SPIN_US = 50;
const HOST_OPTIONS = ['features', 'spinUs', 'poll', 'guestSpinUs', 'memBytes', 'maxQueues', 'maxMailboxes', 'kernelThreads', 'injectDelayUs', 'slowdownNs', 'heartbeatMs', 'staleMs', 'autoRestart', 'iommufd', 'model', 'cmdqv'] as const;
const MODEL_OPTIONS = ['combinedNested', 'walkCacheEntries', 'bypass'] as const;
const VM_OPTIONS = ['vmid', 'ramBytes', 'streams', 'signal'] as const;
const QUEUE_OPTIONS = ['path', 'standby', 'log2size', 'signal', 'cmdset'] as const;

/** startHost's `features`: known capability names with values of their type (makeFeatures fills the rest). */
function checkFeatures(v: unknown): Partial<SmmuFeatures> {
  const f = checkOptions('startHost: features', v, Object.keys(DEFAULT_FEATURES));
  for (const [k, x] of Object.entries(f)) {
    const at = `startHost: features.${k}`;
    if (k === 'STALL_MODEL') checkInt(at, x, 0, 2, 'IDR0.STALL_MODEL');
    else if (k === 'CMDQS') checkInt(at, x, 0, 19, 'IDR1.CMDQS');
    else if (typeof x !== 'boolean') throw new ArgumentError(at, `must be a boolean, got ${show(x)}`);
  }
  return f as Partial<SmmuFeatures>;
}

/** `p`, or the signal's reason as soon as it aborts (the work behind `p` goes on; the caller undoes it). */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Start the emulated host: host memory, the SMMU model in the kernel thread. */
export function startHost(opts?: HostOptions): Promise<Host> {
  return Host.start(opts);
}

export interface AttachOptions {
  vsid: number;
  /** The guest's vSTE (16 words), as the VMM reads it from the guest's stream table. */
  vste?: Uint32Array;
  /** Or: a stage-1 context; the guest writes this CD (SSID 0) into a CD table in its RAM and points its vSTE at it. */
  cd?: CdFields;
}

export class Vm {
  /** The guest's view of its RAM (IPA addressed); page tables come from its last quarter. */
  readonly memory: GuestMemory;
  private bump: number;
  private readonly bumpEnd: number;
  /** vSIDs whose STE is installed. */
  private readonly attached = new Set<number>();

  constructor(
    readonly host: Host,
    readonly vmid: number,
    readonly ramBase: number,
    readonly ramBytes: number,
    readonly stage2: Stage2,
    readonly streams: readonly { vsid: number; psid: number }[],
    /** The kernel thread serving this VM's queues, streams and DMA agents. */
    readonly kthread = 0,
  ) {
    const quarter = ramBytes / 4;
    this.memory = new GuestMemory(host.sab, ramBase, ramBytes, { ipa: 3 * quarter, bytes: quarter });
    this.bump = 2 * quarter;
    this.bumpEnd = 3 * quarter;
  }

  /** Guest allocation from the third quarter of RAM (queues, CD tables); the first half is the guest's to use. */
  alloc(bytes: number, align = 4096): number {
    const ipa = Math.ceil(this.bump / align) * align;
    if (ipa + bytes > this.bumpEnd) throw new RangeError('guest RAM allocator exhausted');
    this.bump = ipa + bytes;
    return ipa;
  }

  /** A guest stage-1 page table whose tables live in guest RAM. */
  pageTable(opts: TableOptions = {}): TranslationTable {
    return new TranslationTable(this.memory, 1, opts);
  }

  /** The pSID of a guest vSID. */
  psidOf(vsid: number): number {
    const s = this.streams.find((x) => x.vsid === vsid);
    if (s === undefined) throw new ArgumentError('vsid', `${typeof vsid === 'number' ? `0x${vsid.toString(16)}` : show(vsid)} is not a device of VM ${this.vmid}`);
    return s.psid;
  }

  /**
   * Install the nested STE for `vsid`'s pSID from the guest's vSTE (as a VMM
   * does on CFGI_STE), then tell the SMMU. Once per device; a refused vSTE
   * or a failed call leaves no memory behind.
   */
  async attachDevice(options: AttachOptions): Promise<void> {
    const opts = checkOptions('attachDevice: options', options, ['vsid', 'vste', 'cd']);
    const vsid = checkInt('attachDevice: vsid', opts['vsid'], 0, 2 ** 32 - 1, 'a 32-bit StreamID');
    if (!this.streams.some((x) => x.vsid === vsid)) throw new ArgumentError('attachDevice: vsid', `0x${vsid.toString(16)} is not a device of VM ${this.vmid}`);
    const psid = this.psidOf(vsid);
    this.host.checkAlive(this.kthread);
    if (this.attached.has(vsid)) throw new ArgumentError('attachDevice: vsid', `0x${vsid.toString(16)} is already attached`);
    if ((opts['vste'] === undefined) === (opts['cd'] === undefined)) throw new ArgumentError('attachDevice: vste', 'give either a vste or a cd');
    if (opts['vste'] !== undefined && !(opts['vste'] instanceof Uint32Array && opts['vste'].length === 16)) {
      throw new ArgumentError('attachDevice: vste', `must be a Uint32Array(16) (a 64-byte STE), got ${show(opts['vste'])}`);
    }
    const cd = opts['cd'] === undefined ? undefined : this.checkCd(opts['cd']);
    const bumpMark = this.bump;
    const physMark = this.host.phys.top;
    const undo = (): void => {
      this.bump = bumpMark;
      this.host.phys.rewind(physMark);
    };
    let vste = opts['vste'] as Uint32Array | undefined;
    if (cd !== undefined) {
      if (!this.fits(1, 64, 64)) throw new ArgumentError('attachDevice: cd', `no room left for a CD table in VM ${this.vmid}'s queue area: raise createVm's ramBytes`);
      const cdTable = this.alloc(64, 64);
      writeGuestCd(this.memory, cdTable, 0, cd);
      vste = encodeSte({ config: STE_CFG.S1_TRANS, s1ContextPtr: cdTable });
    }
    let stePa: number;
    try {
      stePa = this.host.phys.alloc(STE_BYTES, STE_BYTES);
    } catch {
      undo();
      throw new ArgumentError('attachDevice: vsid', 'no host memory left for its STE: raise startHost\'s memBytes');
    }
    const reject = installNestedSte(this.host.sab, stePa, vste!, this.stage2);
    if (reject !== null) {
      undo();
      throw new ArgumentError('attachDevice: vste', `of vSID 0x${vsid.toString(16)} refused: ${reject}`);
    }
    this.attached.add(vsid);
    try {
      await this.host.control({ op: 'attachStream', psid, stePa }, this.kthread);
    } catch (e) {
      this.attached.delete(vsid);
      throw e;
    }
  }

  /** attachDevice's `cd`: the CD fields, each of its type and width. */
  private checkCd(v: unknown): CdFields {
    const cd = checkOptions('attachDevice: cd', v, ['asid', 'ttb0', 't0sz', 'tg0', 'ips', 'epd0', 'affd', 'invalid']);
    const asidBits = this.host.features.ASID16 ? 16 : 8;
    checkInt('attachDevice: cd.asid', cd['asid'], 0, 2 ** asidBits - 1, `a ${asidBits}-bit ASID, IDR0.ASID16=${this.host.features.ASID16 ? 1 : 0}`);
    checkInt('attachDevice: cd.ttb0', cd['ttb0'], 0, 2 ** 52 - 1, 'an address');
    if (cd['t0sz'] !== undefined) checkInt('attachDevice: cd.t0sz', cd['t0sz'], 0, 63);
    if (cd['tg0'] !== undefined) checkInt('attachDevice: cd.tg0', cd['tg0'], 0, 2, 'TCR.TG0: 0 = 4K, 1 = 64K, 2 = 16K');
    if (cd['ips'] !== undefined) checkInt('attachDevice: cd.ips', cd['ips'], 0, 6, 'TCR.IPS');
    for (const k of ['epd0', 'affd', 'invalid']) {
      if (cd[k] !== undefined && typeof cd[k] !== 'boolean') throw new ArgumentError(`attachDevice: cd.${k}`, `must be a boolean, got ${show(cd[k])}`);
    }
    return cd as unknown as CdFields;
  }

  /** Would `n` allocations of `bytes` at `align` fit in what is left of the queue area? */
  private fits(n: number, bytes: number, align: number): boolean {
    let at = this.bump;
    for (let k = 0; k < n; k++) at = Math.ceil(at / align) * align + bytes;
    return at <= this.bumpEnd;
  }

  /**
   * Open a command queue of this VM on `path` ('doorbell' by default), with
   * its `standby` paths provisioned. Every option is checked before
   * anything is provisioned: the paths exist, log2size is within
   * IDR1.CMDQS, and every lane's ring fits in the VM's queue area.
   */
  async openQueue(options?: QueueOptions): Promise<GuestQueue> {
    const opts = checkOptions('openQueue: options', options, QUEUE_OPTIONS);
    const path = opts['path'] ?? 'doorbell';
    const standby = opts['standby'] ?? [];
    if (!Array.isArray(standby)) throw new ArgumentError('openQueue: standby', `must be an array of path names, got ${show(standby)}`);
    const paths: unknown[] = [path, ...standby];
    paths.forEach((p, k) => {
      if (typeof p !== 'string' || (p !== 'doorbell' && !queueOpeners.has(p))) {
        const known = ['doorbell', ...queueOpeners.keys()].join(', ');
        throw new ArgumentError(k === 0 ? 'openQueue: path' : `openQueue: standby[${k - 1}]`, `must be a queue path (${known}), got ${show(p)}`);
      }
    });
    if (new Set(paths).size !== paths.length) throw new ArgumentError('openQueue: standby', `names each path once, got ${paths.join(', ')}`);
    const cmdqs = this.host.features.CMDQS;
    const log2size = checkInt('openQueue: log2size', opts['log2size'] ?? 8, 0, cmdqs, 'IDR1.CMDQS');
    const bytes = 16 << log2size;
    if (!this.fits(paths.length, bytes, Math.max(bytes, 32))) {
      throw new ArgumentError('openQueue: log2size', `${log2size}: ${paths.length} ring(s) of ${bytes} bytes do not fit in the ${this.bumpEnd - this.bump} bytes left of VM ${this.vmid}'s queue area (a quarter of its RAM): raise createVm's ramBytes (now ${this.ramBytes}) or lower log2size`);
    }
    const signal = checkSignal('openQueue: signal', opts['signal']);
    signal?.throwIfAborted();
    if (this.host.queuesLeft < paths.length) throw this.host.queuesExhausted(paths.length);
    this.host.checkAlive(this.kthread);
    const cmdset = opts['cmdset'] ?? 'wide';
    if (cmdset !== 'wide' && cmdset !== 'tegra241') throw new ArgumentError('openQueue: cmdset', `must be 'wide' or 'tegra241', got ${show(cmdset)}`);
    for (const p of paths as string[]) queueOpeners.get(p)?.check?.(this, { log2size, cmdset: opts['cmdset'] as QueueOptions['cmdset'] });
    const clean: QueueOptions = { log2size, cmdset };
    const handles: QueueHandle[] = [];
    for (const p of paths as string[]) handles.push(await abortable(this.queueHandle(p, clean), signal));
    const [active, ...rest] = handles;
    return new GuestQueue(rest.length === 0 ? active! : { ...active!, standby: rest });
  }

  private queueHandle(path: string, opts: QueueOptions): Promise<QueueHandle> {
    if (path === 'doorbell') return this.createQueue(opts);
    return queueOpeners.get(path)!.open(this, opts);
  }

  /**
   * A queue of either path, not yet enabled or served: its ring in guest RAM
   * (aligned to its size, as SMMU_CMDQ_BASE requires) and its register block
   * with LOG2SIZE, BASE and VMID programmed.
   */
  allocQueueRegs(opts: QueueOptions): { qid: number; regs: number; log2size: number; baseIpa: number } {
    const log2size = checkInt('log2size', opts.log2size ?? 8, 0, this.host.features.CMDQS, 'IDR1.CMDQS');
    const cmdset = VCMDQ_CMDSETS.findIndex((c) => c.name === (opts.cmdset ?? 'wide'));
    if (cmdset < 0) throw new ArgumentError('openQueue: cmdset', `must be 'wide' or 'tegra241', got ${show(opts.cmdset)}`);
    const bytes = 16 << log2size;
    const baseIpa = this.alloc(bytes, Math.max(bytes, 32));
    const qid = this.host.allocQueue();
    const regs = queueRegs(qid);
    const i32 = this.host.i32;
    i32[regs + Q_LOG2SIZE] = log2size;
    i32[regs + Q_BASE] = this.ramBase + baseIpa;
    i32[regs + Q_BASE_IPA] = baseIpa;
    i32[regs + Q_VMID] = this.vmid;
    i32[regs + Q_CMDSET] = cmdset;
    return { qid, regs, log2size, baseIpa };
  }

  /**
   * Allocate a vCMDQ in guest RAM, program its registers and have the kernel
   * thread serve it; returns its handle. `vintf` (word offset of a VINTF,
   * src/vintf.ts) makes it a hardware VCMDQ of path `path` ('hw').
   */
  async createQueue(opts: QueueOptions = {}, path = 'doorbell', vintf = 0): Promise<QueueHandle> {
    const { qid, regs, log2size, baseIpa } = this.allocQueueRegs(opts);
    this.host.i32[regs + Q_VINTF] = vintf; // read by the kernel thread's addQueue, after the message below
    // A hardware VCMDQ has no pending bit (layout.ts); read by the transport and addQueue, both after the message below.
    if (vintf === 0) this.host.i32[regs + Q_PEND] = this.host.allocPendingSlot(this.kthread, this.vmid);
    Atomics.store(this.host.i32, regs + Q_CONFIG, CONFIG_EN); // publish: CONFIG.EN, before the addQueue message that has it read
    await this.host.control({ op: 'addQueue', qid, vmid: this.vmid }, this.kthread);
    return {
      path, sab: this.host.sab, ctl: this.host.kthreadCtl(this.kthread), qid, regs, log2size,
      basePa: this.ramBase + baseIpa, baseIpa, vmid: this.vmid, features: this.host.features,
    };
  }
}

export interface Translation {
  /** 0 = translated; otherwise the model's fault code. */
  fault: number;
  /** Output PA (valid when fault = 0). */
  pa: number;
}

/** A device issuing translation requests to the SMMU over a mailbox. */
export class DmaAgent {
  private readonly mb: MailboxClient;
  constructor(readonly handle: MailboxHandle) {
    this.mb = new MailboxClient(handle);
  }
  static attach(handle: MailboxHandle): DmaAgent {
    return new DmaAgent(handle);
  }
  /**
   * Translate `iova` for stream `psid`/`ssid` (-1: no SubstreamID); returns
   * the fault code (0 = ok) with the PA in `lastPa`. Allocation-free (the
   * argument checks are comparisons; only a refusal allocates).
   */
  translateRaw(psid: number, ssid: number, iova: number, access: number, timeoutMs = 5000): number {
    if (!(typeof psid === 'number' && psid >>> 0 === psid)) checkInt('translate: psid', psid, 0, 2 ** 32 - 1, 'a 32-bit StreamID');
    if (!(Number.isInteger(ssid) && ssid >= -1 && ssid < 2 ** 20)) checkInt('translate: ssid', ssid, -1, 2 ** 20 - 1, 'a 20-bit SubstreamID, -1 for none');
    if (!(Number.isSafeInteger(iova) && iova >= 0)) checkInt('translate: iova', iova, 0, Number.MAX_SAFE_INTEGER, 'an address');
    if (!(typeof access === 'number' && (access & 0xf) === access)) checkInt('translate: access', access, 0, 15, 'ACCESS bits');
    const a = this.mb.args;
    a[0] = psid;
    a[1] = ssid;
    a[2] = iova % 2 ** 32;
    a[3] = Math.floor(iova / 2 ** 32);
    a[4] = access;
    return this.mb.call(KTHREAD_OP.TRANSLATE, timeoutMs);
  }
  /** PA of the last successful translateRaw. */
  get lastPa(): number {
    const r = this.mb.results;
    return (r[2]! >>> 0) * 2 ** 32 + (r[1]! >>> 0);
  }
  translate(psid: number, ssid: number, iova: number, access: number = ACCESS.READ, timeoutMs = 5000): Translation {
    const fault = this.translateRaw(psid, ssid, iova, access, timeoutMs);
    return { fault, pa: fault === 0 ? this.lastPa : 0 };
  }
}
