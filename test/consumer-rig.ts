// The kernel thread's Consumer driven in-thread: the SAB laid out as
// src/host.ts lays it out (MMIO registers below MMIO_BYTES, the model's
// memory above), queues registered as kthread.worker.ts registers them, and
// pass() called by the test instead of the thread's run loop. So what the
// consumer does between a PROD and a CONS publish can be observed from the
// model it calls, and its mutants die in a fast in-thread test.
import { Consumer, VmEntry, type ConsumerModel, type Stage2Lookup } from '../native-free-fastpath/consumer.ts';
import { buildTlbiNhAsid } from '../src/codec.ts';
import type { SmmuFeatures } from '../src/features.ts';
import { F } from '../src/fields.ts';
import { GuestQueue, type QueueTransport } from '../src/guest.ts';
import {
  CONFIG_EN, CTL_STATE, KTHREAD_CTL, SERVER_STATE, MMIO_BYTES, Q_BASE, Q_CMDSET, Q_CONFIG, Q_CONS, Q_GERRORN, Q_LOG2SIZE, Q_PEND, Q_PROD, Q_VINTF,
  PendingSlots, initMmio, markPending, queueRegs,
} from '../src/layout.ts';
import type { SmmuModel } from '../src/model/smmu.ts';
import type { PollPolicy } from '../src/poll-policy.ts';
import { VCMDQ_CMDSETS, VCMDQ_TEGRA241, VSmmu } from '../src/vsmmu.ts';
import { MiB, makeVm, makeWorld, type Vm, type World } from './model-fixture.ts';

/** What the model saw at one execute: the decoded command and the published state of every queue. */
export interface Executed {
  f: Uint32Array;
  /** Q_CONS of each queue (by rig order) at the moment of the call. */
  cons: number[];
  /** Words of the MSI area at the moment of the call. */
  msi: Int32Array;
}

/** A ConsumerModel that records each execute, then delegates to the real model. */
export class RecordingModel implements ConsumerModel {
  readonly log: Executed[] = [];
  queues: RigQueue[] = [];
  /** A test's override: a non-zero CERROR refuses the command instead of executing it. */
  refuse: (f: Uint32Array) => number = () => 0;
  constructor(private readonly inner: SmmuModel, private readonly i32: Int32Array, private readonly msiWords: [number, number]) {}
  execute(f: Uint32Array): number {
    this.log.push({
      f: f.slice(),
      cons: this.queues.map((q) => Atomics.load(this.i32, q.regs + Q_CONS)),
      msi: this.i32.slice(this.msiWords[0], this.msiWords[0] + this.msiWords[1]),
    });
    const cerror = this.refuse(f);
    return cerror !== 0 ? cerror : this.inner.execute(f);
  }
  translate(psid: number, ssid: number, iovaLo: number, iovaHi: number, access: number, out: Uint32Array): number {
    return this.inner.translate(psid, ssid, iovaLo, iovaHi, access, out);
  }
}

export interface RigQueue {
  qid: number;
  regs: number;
  log2: number;
  /** The ring as guest memory (what a guest writes). */
  ring: Uint32Array;
  /** PROD as the guest last published it. */
  prod: number;
}

export interface Rig {
  w: World;
  i32: Int32Array;
  consumer: Consumer;
  model: RecordingModel;
  /** Byte PA and IPA (VM 0's) of a zeroed MSI area of `MSI_WORDS` words. */
  msiPa: number;
  msiIpa: number;
  vms: Vm[];
  /** The thread's pending slots, handed out per VM as host.ts does. */
  slots: PendingSlots;
}

export const MSI_WORDS = 64;

export interface RigOptions {
  /** Substitute a VSmmu for a VM (default: the real one). */
  vsmmu?: (vmid: number, streams: [number, number][]) => VSmmu;
  features?: Partial<SmmuFeatures>;
  /** Substitute the MSI stage-2 lookup of every VM (default: IPA [0, ramBytes) -> its RAM, as buildStage2 maps it). */
  stage2?: Stage2Lookup;
  /** The consumer's polling policy (default: Consumer's own, a fixed budget of CTL_SPIN_US). */
  policy?: PollPolicy;
}

/** A consumer over a fresh world with one VM per entry of `vms` (vmid, psids, asid). */
export function makeRig(vms: { vmid: number; psids: number[]; asid?: number }[], opts: RigOptions = {}): Rig {
  const vsmmu = opts.vsmmu ?? ((vmid, streams) => new VSmmu(vmid, streams));
  const w = makeWorld(opts.features ?? {}, {}, (2 + 10 * vms.length) * MiB, MMIO_BYTES);
  const i32 = new Int32Array(w.mem);
  const slots = new PendingSlots(initMmio(i32).pendingWords);
  const made = vms.map((o) => makeVm(w, { ...o, ramBytes: 8 * MiB }));
  const msiIpa = 6 * MiB; // above the table pool (IPA [0, ramBytes/4)) and below the data pages (ramBytes/2 on)
  const msiPa = made[0]!.gm.paOf(msiIpa);
  const model = new RecordingModel(w.model, i32, [msiPa >>> 2, MSI_WORDS]);
  const consumer = new Consumer(i32, KTHREAD_CTL, model, w.features, opts.policy);
  // As run() would: hasWork() reports any other state as work (the thread must look at it).
  Atomics.store(i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.RUNNING);
  for (const vm of made) {
    const streams = [...vm.streams].map(([psid, vsid]) => [vsid, psid] as [number, number]);
    const ramBytes = 8 * MiB;
    const stage2 = opts.stage2 ?? ((lo, hi) => (hi === 0 && lo >>> 0 < ramBytes ? vm.gm.paOf(lo >>> 0) : -1));
    consumer.addVm(vm.vmid, new VmEntry(vsmmu(vm.vmid, streams), stage2));
  }
  return { w, i32, consumer, model, msiPa, msiIpa, vms: made, slots };
}

let nextQid = 0;

/**
 * A queue of 2^log2 slots for `vmid`, registered and enabled as host.ts +
 * kthread.worker.ts do; with `vintf` (a VINTF's word offset), a hardware
 * VCMDQ as src/hw.ts opens it (Tegra241 command set).
 */
export function addQueue(rig: Rig, vmid: number, log2: number, vintf = 0): RigQueue {
  const qid = nextQid++ % 64;
  const regs = queueRegs(qid);
  const bytes = 16 << log2;
  const base = rig.w.layout.alloc(bytes, Math.max(bytes, 32));
  rig.i32[regs + Q_LOG2SIZE] = log2;
  rig.i32[regs + Q_BASE] = base;
  rig.i32[regs + Q_VINTF] = vintf;
  rig.i32[regs + Q_CMDSET] = vintf === 0 ? 0 : VCMDQ_CMDSETS.indexOf(VCMDQ_TEGRA241);
  rig.i32[regs + Q_PEND] = vintf === 0 ? rig.slots.take(vmid) : 0;
  rig.consumer.addQueue(qid, vmid);
  Atomics.store(rig.i32, regs + Q_CONFIG, CONFIG_EN);
  const q = { qid, regs, log2, ring: new Uint32Array(rig.w.mem, base, 4 << log2), prod: 0 };
  rig.model.queues = [...rig.model.queues, q];
  return q;
}

/** Guest side: write `cmds` (4 u32 each) at PROD and publish PROD (no space check: callers stay within the queue). */
export function submit(rig: Rig, q: RigQueue, cmds: Uint32Array[], mark = true): void {
  const posMask = (2 << q.log2) - 1;
  for (const c of cmds) {
    q.ring.set(c, (q.prod & ((1 << q.log2) - 1)) * 4);
    q.prod = (q.prod + 1) & posMask;
  }
  Atomics.store(rig.i32, q.regs + Q_PROD, q.prod);
  // mark false: what DoorbellTransport.publishProd does when it loads NO_NOTIFY set (layout.ts, "Polled queues").
  if (mark) markPending(rig.i32, KTHREAD_CTL, q.qid);
}

/** A TLBI_NH_ASID of ASID `a`: a command any VM's queue may carry, told apart by its ASID. */
export function tlbiAsid(a: number): Uint32Array {
  const u = new Uint32Array(4);
  buildTlbiNhAsid(u, a, 0);
  return u;
}

/** CONS's position bits (wrap|idx) as published. */
export function consPos(rig: Rig, q: RigQueue): number {
  return Atomics.load(rig.i32, q.regs + Q_CONS) & ((2 << q.log2) - 1);
}

/** The (lo, hi) address of a decoded command. */
export function addrOf(f: Uint32Array): number {
  return f[F.ADDR_HI]! * 2 ** 32 + f[F.ADDR_LO]!;
}

/** What the in-thread transport saw: every PROD the guest published, in order. */
export interface GuestRig {
  gq: GuestQueue;
  q: RigQueue;
  prods: number[];
  /** False: PROD writes are recorded but not consumed (the kernel thread is busy elsewhere). */
  pump: boolean;
  /** Called after each PROD write that is not pumped (a test playing the SMMU). */
  onPublish: (prod: number) => void;
}

/**
 * A GuestQueue on a new queue of `vmid`, in this thread: the ring in the VM's
 * RAM (so a CS=IRQ sync's MSI, aimed at its own slot as Linux does, lands),
 * and a transport whose PROD write runs one consumer pass before it returns,
 * as a trapped PROD write completes its commands before the vCPU resumes.
 * Submissions with timeoutMs 0 then never wait: what they need is done.
 */
export function attachGuest(rig: Rig, vmid: number, log2: number): GuestRig {
  const vm = rig.vms.find((v) => v.vmid === vmid)!;
  const qid = nextQid++ % 64;
  const regs = queueRegs(qid);
  const baseIpa = vm.gm.allocTable(Math.max(16 << log2, 32));
  const basePa = vm.gm.paOf(baseIpa);
  rig.i32[regs + Q_LOG2SIZE] = log2;
  rig.i32[regs + Q_BASE] = basePa;
  rig.i32[regs + Q_PEND] = rig.slots.take(vmid);
  rig.consumer.addQueue(qid, vmid);
  Atomics.store(rig.i32, regs + Q_CONFIG, CONFIG_EN);
  const q: RigQueue = { qid, regs, log2, ring: new Uint32Array(rig.w.mem, basePa, 4 << log2), prod: 0 };
  rig.model.queues = [...rig.model.queues, q];
  const g: GuestRig = { gq: null as unknown as GuestQueue, q, prods: [], pump: true, onPublish: () => {} };
  const transport: QueueTransport = {
    publishProd(prod) {
      Atomics.store(rig.i32, regs + Q_PROD, prod);
      markPending(rig.i32, KTHREAD_CTL, qid); // as the doorbell transport: the bit after PROD
      g.prods.push(prod);
      if (g.pump) rig.consumer.pass();
      else g.onPublish(prod);
    },
    ackGerror(gerror) {
      Atomics.store(rig.i32, regs + Q_GERRORN, gerror);
      if (g.pump) rig.consumer.pass();
    },
    writeConfig(config) {
      Atomics.store(rig.i32, regs + Q_CONFIG, config);
      markPending(rig.i32, KTHREAD_CTL, qid); // as the doorbell transport: a re-enabled queue is looked at again
    },
  };
  g.gq = new GuestQueue({
    path: IN_THREAD, sab: rig.w.mem, ctl: KTHREAD_CTL, qid, regs, log2size: log2, basePa, baseIpa, vmid,
    features: rig.w.features, extra: transport,
  });
  return g;
}

const IN_THREAD = 'in-thread-test';
GuestQueue.registerTransport(IN_THREAD, (h) => h.extra as QueueTransport);
