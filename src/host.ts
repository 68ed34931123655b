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

import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { makeFeatures, type SmmuFeatures } from './features.ts';
import { GuestQueue, type QueueHandle } from './guest.ts';
import {
  CONFIG_EN, CRASH_CODE, CTL_CRASH, CTL_HEARTBEAT_MS, CTL_INJECT_DELAY_US, CTL_SLOWDOWN_NS, CTL_SPIN_US, CTL_STALE_MS, KTHREAD_CTL,
  KTHREAD_OP, MAX_MAILBOXES, MAX_QUEUES, MMIO_BYTES, Q_BASE, Q_BASE_IPA, Q_CONFIG, Q_LOG2SIZE, Q_VMID,
  notifyQueueWaiters, queueRegs, type CrashHow,
} from './layout.ts';
import { MailboxClient, type MailboxHandle } from './mailbox.ts';
import { GuestMemory, PhysLayout } from './model/mem.ts';
import { TranslationTable, type TableOptions } from './model/pgtable.ts';
import { STE_BYTES, STE_CFG, buildStage2, encodeSte, installNestedSte, writeGuestCd, type CdFields, type Stage2 } from './model/structs.ts';
import { ACCESS } from './model/smmu.ts';
import { ServerThread } from './server-thread.ts';
import { workerUrl } from './worker-url.ts';

export interface HostOptions {
  features?: Partial<SmmuFeatures>;
  /** Kernel-thread spin budget before sleeping, µs (0 = sleep at once). Guests use the same budget. */
  spinUs?: number;
  /** Host physical memory (default 64 MiB). */
  memBytes?: number;
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
}

export interface VmOptions {
  vmid: number;
  /** Guest RAM (default 8 MiB); IPA [0, ramBytes). */
  ramBytes?: number;
  /** The VM's devices: guest vSID -> host pSID (its vDEVICEs). */
  streams: readonly { vsid: number; psid: number }[];
}

export interface QueueOptions {
  path?: string;
  /**
   * Paths to provision as well, idle, so the guest can move the queue to
   * one of them at run time with `q.switchPath(path)` (a live migration to
   * a host with fewer vCMDQs falls back to 'trap'). Each costs a queue.
   */
  standby?: readonly string[];
  /** Entries = 2^log2size (default 8: 256 entries; Linux wants more than 64). */
  log2size?: number;
}

/** Provisions one queue of a registered path and returns its handle (GuestQueue drives it through the path's transport). */
export type QueueOpener = (vm: Vm, opts: QueueOptions) => Promise<QueueHandle>;
const queueOpeners = new Map<string, QueueOpener>();

/** Add a queue path (the trap path registers 'trap'). 'doorbell' is built in. */
export function registerQueuePath(path: string, opener: QueueOpener): void {
  queueOpeners.set(path, opener);
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
  private readonly thread: ServerThread;
  private nextQid = 0;
  private nextMailbox = 0;
  /** Paths' own threads, stopped before the kernel thread they make requests on; each returns what it killed. */
  private readonly stopHooks: ((graceMs: number) => Promise<string[]>)[] = [];
  private readonly vms = new Map<number, Vm>();

  private constructor(sab: SharedArrayBuffer, features: SmmuFeatures, worker: Worker, port: MessagePort) {
    this.sab = sab;
    this.i32 = new Int32Array(sab);
    this.features = features;
    this.phys = new PhysLayout(sab, MMIO_BYTES);
    // Its death wakes every queue waiter (a waiter blocked on this thread relies on the heartbeat instead).
    this.thread = new ServerThread('kernel thread', this.i32, KTHREAD_CTL, worker, port, () => {
      for (let qid = 0; qid < this.nextQid; qid++) notifyQueueWaiters(this.i32, qid);
    });
  }

  /** @internal use startHost */
  static async start(opts: HostOptions = {}): Promise<Host> {
    const features = makeFeatures(opts.features);
    const memBytes = opts.memBytes ?? 64 << 20;
    if (!(memBytes > MMIO_BYTES && memBytes <= 2 ** 31 && memBytes % 65536 === 0)) {
      throw new RangeError(`memBytes must be a multiple of 64 KiB in (${MMIO_BYTES}, 2 GiB], got ${memBytes}`);
    }
    const sab = new SharedArrayBuffer(memBytes);
    const i32 = new Int32Array(sab);
    const ctl = KTHREAD_CTL;
    i32[ctl + CTL_SPIN_US] = opts.spinUs ?? 0;
    i32[ctl + CTL_HEARTBEAT_MS] = opts.heartbeatMs ?? 20;
    i32[ctl + CTL_STALE_MS] = opts.staleMs ?? 2000;
    i32[ctl + CTL_INJECT_DELAY_US] = checkDelayUs(opts.injectDelayUs ?? 0);
    i32[ctl + CTL_SLOWDOWN_NS] = checkSlowdownNs(opts.slowdownNs ?? 0);
    const { port1, port2 } = new MessageChannel();
    const worker = new Worker(workerUrl('kthread.worker.js'), {
      workerData: { sab, features, port: port2 },
      transferList: [port2],
    });
    const host = new Host(sab, features, worker, port1);
    await host.thread.expectReply(0);
    return host;
  }

  /** Send a control message to the kernel thread and wait for its answer. */
  control(msg: Record<string, unknown>): Promise<void> {
    return this.thread.control(msg);
  }

  /** @internal throws the kernel thread's ServerDeadError when it is dead or the host stopped. */
  checkAlive(): void {
    this.thread.checkAlive();
  }

  async createVm(opts: VmOptions): Promise<Vm> {
    this.checkAlive();
    if (this.vms.has(opts.vmid)) throw new Error(`VMID ${opts.vmid} already exists`);
    const ramBytes = opts.ramBytes ?? 8 << 20;
    if (ramBytes % (1 << 20) !== 0 || ramBytes < 1 << 20) throw new RangeError('ramBytes must be a multiple of 1 MiB');
    const ramBase = this.phys.alloc(ramBytes, 2 << 20);
    const stage2 = buildStage2(this.sab, this.phys, ramBase, ramBytes, opts.vmid);
    await this.control({
      op: 'addVm', vmid: opts.vmid, streams: opts.streams.map((s) => [s.vsid, s.psid]), ramBase, ramBytes,
    });
    const vm = new Vm(this, opts.vmid, ramBase, ramBytes, stage2, opts.streams);
    this.vms.set(opts.vmid, vm);
    return vm;
  }

  /** @internal a register block for a new queue. */
  allocQueue(): number {
    if (this.nextQid >= MAX_QUEUES) throw new RangeError(`at most ${MAX_QUEUES} queues`);
    return this.nextQid++;
  }

  /**
   * @internal a fresh mailbox id, registered with no server: the caller
   * hands it to the thread that serves it (the trap path's VMM).
   */
  allocMailboxId(): number {
    if (this.nextMailbox >= MAX_MAILBOXES) throw new RangeError(`at most ${MAX_MAILBOXES} mailboxes`);
    return this.nextMailbox++;
  }

  /** @internal `stop` runs `fn` (last registered first) before stopping the kernel thread; it returns the threads it killed. */
  onStop(fn: (graceMs: number) => Promise<string[]>): void {
    this.stopHooks.push(fn);
  }

  /** A mailbox served by the kernel thread (DMA agents, the trap path's ioctl channel). */
  async mailbox(): Promise<MailboxHandle> {
    this.checkAlive();
    const id = this.allocMailboxId();
    await this.control({ op: 'addMailbox', mbid: id });
    return { sab: this.sab, ctl: KTHREAD_CTL, id, server: 'kernel thread' };
  }

  /** A DMA agent (a device asking the SMMU to translate), usable here or, via `agent.handle`, in any thread. */
  async dma(): Promise<DmaAgent> {
    return new DmaAgent(await this.mailbox());
  }

  /**
   * Stop the paths' threads, then the kernel thread; pending waiters get
   * KernelThreadDeadError (ServerDeadError), later calls ServerDeadError.
   * Each thread gets `graceMs` to exit and is terminated after that, so
   * stop() finishes even with a wedged worker; the report names the threads
   * it had to kill. No worker is left running. Stopping twice is harmless.
   */
  async stop(opts: StopOptions = {}): Promise<StopReport> {
    const graceMs = opts.graceMs ?? 5000;
    if (!(Number.isInteger(graceMs) && graceMs >= 0 && graceMs <= 2 ** 31 - 1)) {
      throw new RangeError(`stop: graceMs must be a whole number of ms in 0..2^31-1, got ${String(graceMs)}`);
    }
    const killed: string[] = [];
    for (let fn = this.stopHooks.pop(); fn !== undefined; fn = this.stopHooks.pop()) killed.push(...(await fn(graceMs)));
    if (await this.thread.stop(graceMs)) killed.push('kernel thread');
    return { killed };
  }

  /** Test hook: kill the kernel thread from outside (worker.terminate), as a crash would. */
  terminateKernelThread(): Promise<void> {
    return this.thread.terminate();
  }

  /**
   * Test hook: the kernel thread fails at its next pass: 'exit' without
   * marking itself dead, 'throw' an exception out of its loop, 'wedge' blocks forever.
   */
  crashKernelThreadOnNextPass(how: CrashHow = 'exit'): void {
    Atomics.store(this.i32, KTHREAD_CTL + CTL_CRASH, CRASH_CODE[how]);
  }
}

function checkSlowdownNs(ns: number): number {
  if (!Number.isInteger(ns) || ns < 0 || ns > 1_000_000) throw new RangeError(`slowdownNs must be a whole number of ns in [0, 1e6], got ${ns}`);
  return ns;
}

function checkDelayUs(us: number): number {
  if (!Number.isInteger(us) || us < 0) throw new RangeError(`injectDelayUs must be a whole number of µs >= 0, got ${us}`);
  return us;
}

/** Start the emulated host: host memory, the SMMU model in the kernel thread. */
export function startHost(opts: HostOptions = {}): Promise<Host> {
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

  constructor(
    readonly host: Host,
    readonly vmid: number,
    readonly ramBase: number,
    readonly ramBytes: number,
    readonly stage2: Stage2,
    readonly streams: readonly { vsid: number; psid: number }[],
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
    if (s === undefined) throw new RangeError(`VM ${this.vmid} has no vSID 0x${vsid.toString(16)}`);
    return s.psid;
  }

  /** Install the nested STE for `vsid`'s pSID from the guest's vSTE (as a VMM does on CFGI_STE), then tell the SMMU. */
  async attachDevice(opts: AttachOptions): Promise<void> {
    this.host.checkAlive();
    const psid = this.psidOf(opts.vsid);
    let vste = opts.vste;
    if (vste === undefined) {
      if (opts.cd === undefined) throw new RangeError('attachDevice needs a vste or a cd');
      const cdTable = this.alloc(64, 64);
      writeGuestCd(this.memory, cdTable, 0, opts.cd);
      vste = encodeSte({ config: STE_CFG.S1_TRANS, s1ContextPtr: cdTable });
    }
    const stePa = this.host.phys.alloc(STE_BYTES, STE_BYTES);
    const reject = installNestedSte(this.host.sab, stePa, vste, this.stage2);
    if (reject !== null) throw new Error(`vSTE of vSID 0x${opts.vsid.toString(16)} refused: ${reject}`);
    await this.host.control({ op: 'attachStream', psid, stePa });
  }

  /** Open a command queue of this VM on `opts.path` ('doorbell' by default), with its `standby` paths provisioned. */
  async openQueue(opts: QueueOptions = {}): Promise<GuestQueue> {
    this.host.checkAlive();
    const paths = [opts.path ?? 'doorbell', ...(opts.standby ?? [])];
    if (new Set(paths).size !== paths.length) throw new RangeError(`each path once: ${paths.join(', ')}`);
    const handles: QueueHandle[] = [];
    for (const path of paths) handles.push(await this.queueHandle(path, opts));
    const [active, ...standby] = handles;
    return new GuestQueue(standby.length === 0 ? active! : { ...active!, standby });
  }

  private queueHandle(path: string, opts: QueueOptions): Promise<QueueHandle> {
    if (path === 'doorbell') return this.createQueue(opts);
    const opener = queueOpeners.get(path);
    if (opener === undefined) throw new Error(`no queue path '${path}' (is its module imported?)`);
    return opener(this, opts);
  }

  /**
   * A queue of either path, not yet enabled or served: its ring in guest RAM
   * (aligned to its size, as SMMU_CMDQ_BASE requires) and its register block
   * with LOG2SIZE, BASE and VMID programmed.
   */
  allocQueueRegs(opts: QueueOptions): { qid: number; regs: number; log2size: number; baseIpa: number } {
    const log2size = opts.log2size ?? 8;
    const cmdqs = this.host.features.CMDQS;
    if (!(Number.isInteger(log2size) && log2size >= 0 && log2size <= cmdqs)) {
      throw new RangeError(`log2size must be in 0..${cmdqs} (IDR1.CMDQS)`);
    }
    const bytes = 16 << log2size;
    const baseIpa = this.alloc(bytes, Math.max(bytes, 32));
    const qid = this.host.allocQueue();
    const regs = queueRegs(qid);
    const i32 = this.host.i32;
    i32[regs + Q_LOG2SIZE] = log2size;
    i32[regs + Q_BASE] = this.ramBase + baseIpa;
    i32[regs + Q_BASE_IPA] = baseIpa;
    i32[regs + Q_VMID] = this.vmid;
    return { qid, regs, log2size, baseIpa };
  }

  /** Allocate a vCMDQ in guest RAM, program its registers and have the kernel thread serve it; returns its handle. */
  async createQueue(opts: QueueOptions = {}): Promise<QueueHandle> {
    const { qid, regs, log2size, baseIpa } = this.allocQueueRegs(opts);
    Atomics.store(this.host.i32, regs + Q_CONFIG, CONFIG_EN);
    await this.host.control({ op: 'addQueue', qid, vmid: this.vmid });
    return {
      path: 'doorbell', sab: this.host.sab, ctl: KTHREAD_CTL, qid, regs, log2size,
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
  /** Translate `iova` for stream `psid`/`ssid` (-1: no SubstreamID); returns the fault code (0 = ok) with the PA in `lastPa`. Allocation-free. */
  translateRaw(psid: number, ssid: number, iova: number, access: number, timeoutMs = 5000): number {
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
