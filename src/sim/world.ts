// The simulated machine's state, built from the project's own code: host
// memory and the SMMU model (src/model), one VM with its stage 2, a guest
// stage-1 table and CD, its device attached through a nested STE as the
// kernel attaches it, and the queues of each path: a vCMDQ served by the
// kernel thread's Consumer (native-free-fastpath/consumer.ts), a hardware
// VCMDQ (the same consumer with the strict Tegra241 command set, as the
// emulation's `hw` SMMU), or the trapped CMDQ the VMM emulates (TrapCmdq,
// FirstPass, and IOMMU_HWPT_INVALIDATE through HwptInvalidate). Nothing here
// knows about time: the actors (paths.ts) decide when each piece runs.

import { Consumer, VmEntry } from '../../native-free-fastpath/consumer.ts';
import { buildCmdSync, buildTlbiNhVa, writeSlot } from '../codec.ts';
import { makeFeatures, type SmmuFeatures } from '../features.ts';
import { CS, F, FIELD_COUNT, OP } from '../fields.ts';
import { tlbInvRange } from '../invalidate.ts';
import {
  CONFIG_EN, CTL_STATE, KTHREAD_CTL, MB_PAYLOAD_BYTES, initMmio, mmioBytes, PendingSlots, Q_BASE, Q_CMDSET, Q_CONFIG, Q_CONS, Q_LOG2SIZE,
  Q_PEND, SERVER_STATE, pendingBit, pendingSlot, pendingWord, publishDoorbellProd, queueRegs,
} from '../layout.ts';
import { ACCESS, FAULT, SmmuModel, T_OUT, TRANSLATE_OUT_LEN } from '../model/smmu.ts';
import { GuestMemory, PhysLayout } from '../model/mem.ts';
import { PROT, TranslationTable } from '../model/pgtable.ts';
import { STE_CFG, buildStage2, installNestedSte, readGuestSte, writeGuestCd, writeGuestSte } from '../model/structs.ts';
import { queueConsumed, queueFree, queueIdx, queueIncProd, queuePosMask } from '../queue.ts';
import { TrapCmdq, type TrapKernel } from '../trap/cmdq.ts';
import { HwptInvalidate } from '../trap/iommufd.ts';
import { VCMDQ_CMDSETS, VCMDQ_TEGRA241, VSmmu } from '../vsmmu.ts';

/** Queues (and vCPUs) a simulated host has at most: one VM's vCPUs, each with its own vCMDQ. */
export const SIM_MAX_QUEUES = 64;
/** The simulated host's MMIO region: its register blocks for SIM_MAX_QUEUES queues. */
const SIM_MMIO_BYTES = mmioBytes(SIM_MAX_QUEUES);

export const SIM_VMID = 1;
export const SIM_ASID = 1;
export const SIM_STREAM = { vsid: 0, psid: 0x10 } as const;
/**
 * Default ring size of the simulated queues: 8192 entries, room for 64
 * vCPUs' largest unmaps at once (a Linux guest's CMDQ and a Tegra241 VCMDQ
 * are larger still). The self-check asks for the bench's 256 instead.
 */
export const SIM_LOG2SIZE = 13;
/** Largest ring: the SAB reserves this much per queue. */
const SIM_MAX_LOG2SIZE = 13;
/** Largest unmap, pages (dma_map_benchmark's 256K granule). */
export const MAX_PAGES = 64;
/** vCPU v's IOVA window: 2 MiB aligned, so each vCPU has a leaf table of its own. */
const WINDOW_IOVA = 0x4000_0000;
const WINDOW_STRIDE = 2 << 20;
const MiB = 1 << 20;
const RAM_BYTES = 8 * MiB;
/** Every window maps the same guest data pages: a DMA only needs them to translate. */
const DATA_IPA = RAM_BYTES / 2;
/** The COW break's fresh frames, right above the data pages. */
const COW_IPA = DATA_IPA + MAX_PAGES * 4096;

/** The trapped CMDQ's kernel: IOMMU_HWPT_INVALIDATE called directly on the simulated thread (no mailbox: time is the profile's). */
class DirectIoctl implements TrapKernel {
  readonly batch = new Uint32Array(MB_PAYLOAD_BYTES / 4);
  constructor(readonly hwpt: HwptInvalidate) {}
  invalidate(n: number): number {
    return this.hwpt.invalidate(this.batch, 0, n);
  }
  get entryNum(): number {
    return this.hwpt.entryNum;
  }
  /** The simulated guests never change an STE. */
  cfgiSte(): number {
    throw new Error('sim: a CFGI_STE reached the simulated VMM (the workloads send TLBIs and CMD_SYNCs only)');
  }
}

/** The leaf descriptor values (low, high word) of a window's pages under one mapping. */
export interface PteValues {
  lo: Int32Array;
  hi: Int32Array;
}

/** A vCPU's leaf PTEs: host word offset and mapped value of each page's descriptor. */
export interface PteWindow extends PteValues {
  word: Uint32Array;
}

/**
 * A vCPU's SVA process window (the vSVA storm): mapped read-write, with the
 * descriptor values of its pages made read-only (mprotect) and pointed at
 * fresh frames (a COW break), and the PA each fresh frame translates to.
 */
export interface SvaWindow extends PteWindow {
  ro: PteValues;
  cow: PteValues;
  cowPa: Float64Array;
}

/** One ring in host memory as the guest writes it: the guest-side PROD (wrap|index) and the slots. */
export class SimRing {
  prod = 0;
  /**
   * CONS as the guest sees it: moved by the server's actor when its work up to
   * there completes in virtual time. The register runs ahead (the real code
   * behind it runs at once, the time is charged after), so a guest reading it
   * would see room, or a completion, before the simulated SMMU has made it.
   */
  seenCons = 0;
  readonly posMask: number;
  readonly size: number;
  constructor(readonly qid: number, readonly regs: number, readonly log2size: number, readonly entries: Int32Array, private readonly i32: Int32Array) {
    this.posMask = queuePosMask(log2size);
    this.size = 1 << log2size;
  }

  /** Writes `n` commands (4 words each) from `words` at PROD; returns the position after them. Never publishes. */
  write(words: Uint32Array, n: number, u: Uint32Array): number {
    for (let k = 0; k < n; k++) {
      u[0] = words[4 * k]!;
      u[1] = words[4 * k + 1]!;
      u[2] = words[4 * k + 2]!;
      u[3] = words[4 * k + 3]!;
      writeSlot(this.entries, queueIdx(this.prod, this.log2size), u);
      this.prod = queueIncProd(this.prod, 1, this.log2size);
    }
    return this.prod;
  }

  /** PROD as a vCMDQ guest publishes it (layout.ts: publish: PROD release). */
  publish(): void {
    // As the doorbell transport: PROD (the slots before it are written), then the bit unless the queue is polled.
    const slot = pendingSlot(this.i32, this.qid);
    publishDoorbellProd(this.i32, this.regs, this.prod, pendingWord(this.i32, KTHREAD_CTL, slot), pendingBit(slot));
  }

  /** CONS position as the consumer published it (wrap|index, ERR stripped). */
  cons(): number {
    return Atomics.load(this.i32, this.regs + Q_CONS) & this.posMask;
  }

  /** Slots the guest may fill before it must wait for CONS (GuestQueue.tryPublish's space check). */
  free(cons: number): number {
    return queueFree(this.prod, cons, this.log2size);
  }

  /** Is the position `pos` (just after a CMD_SYNC) consumed once CONS reads `cons`? (Linux queue_consumed) */
  consumed(pos: number, cons: number): boolean {
    return queueConsumed(cons, pos, this.log2size);
  }
}

export class SimWorld {
  readonly features: SmmuFeatures;
  readonly mem: SharedArrayBuffer;
  readonly i32: Int32Array;
  readonly model: SmmuModel;
  readonly vsmmu: VSmmu;
  readonly pt: TranslationTable;
  private readonly layout: PhysLayout;
  private readonly gm: GuestMemory;
  private readonly vmEntry: VmEntry;
  private nextQid = 0;
  /** The kernel thread's pending slots, as the host hands them out (one VM: its words filled in turn). */
  private readonly slots: PendingSlots;
  private readonly out = new Float64Array(TRANSLATE_OUT_LEN);

  /** `log2size`: every ring's size (entries = 2^log2size), at most SIM_LOG2SIZE. */
  constructor(private readonly log2size = SIM_LOG2SIZE) {
    if (!Number.isInteger(log2size) || log2size < 1 || log2size > SIM_MAX_LOG2SIZE) throw new RangeError(`sim: ring log2size ${log2size} is not in 1..${SIM_MAX_LOG2SIZE}`);
    this.features = makeFeatures();
    this.mem = new SharedArrayBuffer(SIM_MMIO_BYTES + 2 * RAM_BYTES + SIM_MAX_QUEUES * (16 << SIM_MAX_LOG2SIZE) + 4 * MiB);
    this.i32 = new Int32Array(this.mem);
    this.slots = new PendingSlots(initMmio(this.i32, SIM_MAX_QUEUES).pendingWords);
    this.layout = new PhysLayout(this.mem, SIM_MMIO_BYTES);
    this.model = new SmmuModel(this.mem, this.features);
    const ramBase = this.layout.alloc(RAM_BYTES, 2 * MiB);
    const s2 = buildStage2(this.mem, this.layout, ramBase, RAM_BYTES, SIM_VMID);
    this.gm = new GuestMemory(this.mem, ramBase, RAM_BYTES, { ipa: 0, bytes: RAM_BYTES / 4 });
    this.pt = new TranslationTable(this.gm, 1, { granule: 4096 });
    const cdTable = this.gm.allocTable(4096);
    const strtab = this.gm.allocTable(4096);
    writeGuestCd(this.gm, cdTable, 0, { asid: SIM_ASID, ttb0: this.pt.root, tg0: 0 });
    writeGuestSte(this.gm, strtab, SIM_STREAM.vsid, { config: STE_CFG.S1_TRANS, s1ContextPtr: cdTable, s1CdMax: 0 });
    const stePa = this.layout.alloc(64, 64);
    const reject = installNestedSte(this.mem, stePa, readGuestSte(this.gm, strtab, SIM_STREAM.vsid), s2);
    if (reject !== null) throw new Error(`sim: the nested STE was refused: ${reject}`);
    this.model.attachStream(SIM_STREAM.psid, stePa);
    this.vsmmu = new VSmmu(SIM_VMID, [[SIM_STREAM.vsid, SIM_STREAM.psid]]);
    // No MSI in the simulated workloads (CS=SEV or NONE): a stage-2 lookup is never made.
    this.vmEntry = new VmEntry(this.vsmmu, () => -1);
    Atomics.store(this.i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.RUNNING); // unordered: one thread; hasWork() reads STATE
  }

  /** vCPU v's first IOVA. */
  static windowIova(v: number): number {
    return WINDOW_IOVA + v * WINDOW_STRIDE;
  }

  private allocRing(cmdset: number): SimRing {
    if (this.nextQid >= SIM_MAX_QUEUES) throw new RangeError(`sim: at most ${SIM_MAX_QUEUES} queues per host`);
    const qid = this.nextQid++;
    const regs = queueRegs(qid);
    const log2 = this.log2size;
    const bytes = 16 << log2;
    const base = this.layout.alloc(bytes, bytes);
    this.i32[regs + Q_LOG2SIZE] = log2;
    this.i32[regs + Q_BASE] = base;
    this.i32[regs + Q_CMDSET] = cmdset;
    Atomics.store(this.i32, regs + Q_CONFIG, CONFIG_EN); // publish: the queue is enabled
    return new SimRing(qid, regs, log2, new Int32Array(this.mem, base, 4 << log2), this.i32);
  }

  /**
   * A vCMDQ (wide command set) or a hardware VCMDQ (strict Tegra241 set),
   * each with a consumer of its own, so its time is its own: the kernel
   * thread actor visits its queues in order as Consumer.pass() does.
   */
  openConsumedQueue(kind: 'vcmdq' | 'hw'): { ring: SimRing; consumer: Consumer } {
    const ring = this.allocRing(kind === 'hw' ? VCMDQ_CMDSETS.indexOf(VCMDQ_TEGRA241) : 0);
    this.i32[ring.regs + Q_PEND] = this.slots.take(SIM_VMID); // before addQueue reads it, as the host writes it
    const consumer = new Consumer(this.i32, KTHREAD_CTL, this.model, this.features);
    consumer.addVm(SIM_VMID, this.vmEntry);
    consumer.addQueue(ring.qid, SIM_VMID);
    return { ring, consumer };
  }

  /** The VM's trapped CMDQ and the VMM's emulation of it; `writeProd` consumes synchronously. */
  openTrapQueue(): { ring: SimRing; cmdq: TrapCmdq; hwpt: HwptInvalidate } {
    const ring = this.allocRing(0);
    const hwpt = new HwptInvalidate(this.vsmmu, this.model, this.features);
    const ioctl = new DirectIoctl(hwpt);
    const cmdq = new TrapCmdq(this.i32, ring.regs, ring.qid, this.features, ioctl, ioctl.batch, 0, RAM_BYTES, [SIM_STREAM.vsid]);
    cmdq.writeConfig(CONFIG_EN);
    return { ring, cmdq, hwpt };
  }

  /**
   * vCPU v's window, set up once: mapped whole to build its tables, each
   * leaf descriptor's host word offset and value kept, then unmapped. The
   * unmap loop then writes the leaf PTEs itself, as the bench's vCPUs do.
   */
  openWindow(v: number): PteWindow {
    const iova = SimWorld.windowIova(v);
    this.pt.map(iova, DATA_IPA, MAX_PAGES * 4096, PROT.READ | PROT.WRITE);
    const word = new Uint32Array(MAX_PAGES);
    for (let k = 0; k < MAX_PAGES; k++) word[k] = this.gm.paOf(this.pt.leafDescriptor(iova + k * 4096)) >>> 2;
    const w: PteWindow = { word, ...this.values(word) };
    this.pt.unmap(iova, MAX_PAGES * 4096);
    return w;
  }

  /**
   * vCPU v's SVA window, set up once as openWindow, with its read-only and
   * fresh-frame descriptor values kept too, and left mapped read-write (the
   * process's memory before the storm).
   */
  openSvaWindow(v: number): SvaWindow {
    const iova = SimWorld.windowIova(v);
    const bytes = MAX_PAGES * 4096;
    const w = this.openWindow(v);
    this.pt.map(iova, DATA_IPA, bytes, PROT.READ);
    const ro = this.values(w.word);
    this.pt.map(iova, COW_IPA, bytes, PROT.READ | PROT.WRITE);
    const cow = this.values(w.word);
    this.pt.map(iova, DATA_IPA, bytes, PROT.READ | PROT.WRITE);
    const cowPa = Float64Array.from({ length: MAX_PAGES }, (_, k) => this.gm.paOf(COW_IPA + k * 4096));
    return { ...w, ro, cow, cowPa };
  }

  /** The descriptors at `word` as they are now. */
  private values(word: Uint32Array): PteValues {
    const v: PteValues = { lo: new Int32Array(word.length), hi: new Int32Array(word.length) };
    for (let k = 0; k < word.length; k++) {
      v.lo[k] = Atomics.load(this.i32, word[k]!);
      v.hi[k] = Atomics.load(this.i32, word[k]! + 1);
    }
    return v;
  }

  /** The guest maps the first `pages` pages of window `w` (the dma_map half): valid word last. */
  map(w: PteWindow, pages: number): void {
    this.writePtes(w.word, w, 0, pages);
  }

  /** The guest writes pages [from, from + n) of a window with `values` (map, mprotect, COW break): valid word last. */
  writePtes(word: Uint32Array, values: PteValues, from: number, n: number): void {
    const i32 = this.i32;
    for (let k = from; k < from + n; k++) {
      Atomics.store(i32, word[k]! + 1, values.hi[k]!); // unordered: PTE high word, before the valid word
      Atomics.store(i32, word[k]!, values.lo[k]!); // publish: PTE valid (break-before-make order)
    }
  }

  /** The guest clears the first `pages` leaf PTEs (the first half of an unmap; the invalidation follows). */
  unmap(w: PteWindow, pages: number): void {
    this.clearPtes(w.word, 0, pages);
  }

  /** The guest clears pages [from, from + n) of a window: valid word first. */
  clearPtes(word: Uint32Array, from: number, n: number): void {
    const i32 = this.i32;
    for (let k = from; k < from + n; k++) {
      Atomics.store(i32, word[k]!, 0); // publish: PTE invalid, before the invalidation is sent
      Atomics.store(i32, word[k]! + 1, 0); // unordered: PTE high word
    }
  }

  /** The device accesses page k of vCPU v's window (a read unless said); returns the model's FAULT code (0: translated, PA in dmaPa()). */
  dma(v: number, k: number, access: number = ACCESS.READ): number {
    const iova = SimWorld.windowIova(v) + k * 4096;
    return this.model.translate(SIM_STREAM.psid, -1, iova % 2 ** 32, Math.floor(iova / 2 ** 32), access, this.out);
  }

  /** The output PA of the last dma() that translated. */
  dmaPa(): number {
    return this.out[T_OUT.PA_LO]! + this.out[T_OUT.PA_HI]! * 2 ** 32;
  }
}

/**
 * The guest driver's unmap invalidation, built by the project's Linux
 * splitter (tlbInvRange, as __arm_smmu_tlb_inv_range with RIL) and closed
 * by a CMD_SYNC with completion signal `cs`: the words a vCPU writes. One
 * per vCPU, reused for every unmap (nothing allocated per unmap).
 */
export class UnmapCommands {
  readonly words: Uint32Array;
  n = 0;
  /** The CMD_SYNC alone. */
  readonly sync = new Uint32Array(4);
  /** `batchSize` leaf TLBI_NH_VA of distinct pages (the batch workload; bench/micro.ts's fill). */
  readonly batch: Uint32Array;
  private readonly template = new Uint32Array(FIELD_COUNT);

  constructor(private readonly features: SmmuFeatures, cs: number, batchSize = 0) {
    this.template[F.OP] = OP.TLBI_NH_VA;
    this.template[F.ASID] = SIM_ASID;
    this.template[F.VMID] = SIM_VMID;
    this.template[F.LEAF] = 1;
    // At most one command per page (without RIL).
    this.words = new Uint32Array(4 * MAX_PAGES);
    buildCmdSync(this.sync, cs, 0, 0, 0);
    this.batch = new Uint32Array(4 * batchSize);
    const u = new Uint32Array(4);
    for (let k = 0; k < batchSize; k++) {
      const addr = (0x40000 + k) * 4096;
      buildTlbiNhVa(u, SIM_ASID, SIM_VMID, addr % 2 ** 32, Math.floor(addr / 2 ** 32), 0, 0, 0, 0, 1);
      this.batch.set(u, 4 * k);
    }
  }

  /** The range TLBIs of `pages` pages from `iova` into `words`; returns their number (the CMD_SYNC is `sync`, written after them). */
  build(iova: number, pages: number): number {
    const size = pages * 4096;
    this.n = tlbInvRange(this.words, 0, this.template, iova % 2 ** 32, Math.floor(iova / 2 ** 32), size, 4096, 12, this.features.RIL);
    return this.n;
  }
}

export const SYNC_CS = { sev: CS.SEV, none: CS.NONE } as const;
export { FAULT };
