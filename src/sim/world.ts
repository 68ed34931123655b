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
  CONFIG_EN, CTL_STATE, KTHREAD_CTL, MB_PAYLOAD_BYTES, initMmio, markPending, mmioBytes, PendingSlots, Q_BASE, Q_CMDSET, Q_CONFIG, Q_CONS, Q_LOG2SIZE,
  Q_PEND, Q_PROD, SERVER_STATE, queueRegs,
} from '../layout.ts';
import { ACCESS, FAULT, SmmuModel, TRANSLATE_OUT_LEN } from '../model/smmu.ts';
import { GuestMemory, PhysLayout } from '../model/mem.ts';
import { PROT, TranslationTable } from '../model/pgtable.ts';
import { STE_CFG, buildStage2, installNestedSte, readGuestSte, writeGuestCd, writeGuestSte } from '../model/structs.ts';
import { queueIdx, queueIncProd, queuePosMask } from '../queue.ts';
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
/** Ring size of every simulated queue: room for a whole batch iteration (4096 commands and a sync) or 64 vCPUs' unmaps at once. */
export const SIM_LOG2SIZE = 13;
/** Largest unmap, pages (dma_map_benchmark's 256K granule). */
export const MAX_PAGES = 64;
/** vCPU v's IOVA window: 2 MiB aligned, so each vCPU has a leaf table of its own. */
const WINDOW_IOVA = 0x4000_0000;
const WINDOW_STRIDE = 2 << 20;
const MiB = 1 << 20;
const RAM_BYTES = 8 * MiB;
/** Every window maps the same guest data pages: a DMA only needs them to translate. */
const DATA_IPA = RAM_BYTES / 2;

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

/** A vCPU's leaf PTEs: host word offset and mapped value (low, high word) of each page's descriptor. */
export interface PteWindow {
  word: Uint32Array;
  lo: Int32Array;
  hi: Int32Array;
}

/** One ring in host memory as the guest writes it: the guest-side PROD (wrap|index) and the slots. */
export class SimRing {
  prod = 0;
  readonly posMask: number;
  constructor(readonly qid: number, readonly regs: number, readonly entries: Int32Array, private readonly i32: Int32Array) {
    this.posMask = queuePosMask(SIM_LOG2SIZE);
  }

  /** Writes `n` commands (4 words each) from `words` at PROD; returns the position after them. Never publishes. */
  write(words: Uint32Array, n: number, u: Uint32Array): number {
    for (let k = 0; k < n; k++) {
      u[0] = words[4 * k]!;
      u[1] = words[4 * k + 1]!;
      u[2] = words[4 * k + 2]!;
      u[3] = words[4 * k + 3]!;
      writeSlot(this.entries, queueIdx(this.prod, SIM_LOG2SIZE), u);
      this.prod = queueIncProd(this.prod, 1, SIM_LOG2SIZE);
    }
    return this.prod;
  }

  /** PROD as a vCMDQ guest publishes it (layout.ts: publish: PROD release). */
  publish(): void {
    Atomics.store(this.i32, this.regs + Q_PROD, this.prod); // publish: PROD release (the slots before it are written)
    markPending(this.i32, KTHREAD_CTL, this.qid); // the pending bit after PROD, as the doorbell transport (layout.ts)
  }

  /** CONS position as the consumer published it (wrap|index, ERR stripped). */
  cons(): number {
    return Atomics.load(this.i32, this.regs + Q_CONS) & this.posMask;
  }
}

/** Is queue position `pos` consumed once CONS reads `cons`? (both wrap|index; at most one lap apart) */
export function consumedBy(pos: number, cons: number): boolean {
  const idx = (1 << SIM_LOG2SIZE) - 1;
  const wrap = 1 << SIM_LOG2SIZE;
  // pos is at most a lap ahead of cons: same wrap -> index compare; wraps differ -> cons is behind unless pos's index is greater.
  return (pos & wrap) === (cons & wrap) ? (pos & idx) <= (cons & idx) : (pos & idx) > (cons & idx);
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

  constructor() {
    this.features = makeFeatures();
    this.mem = new SharedArrayBuffer(SIM_MMIO_BYTES + 2 * RAM_BYTES + SIM_MAX_QUEUES * (16 << SIM_LOG2SIZE) + 4 * MiB);
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
    const bytes = 16 << SIM_LOG2SIZE;
    const base = this.layout.alloc(bytes, bytes);
    this.i32[regs + Q_LOG2SIZE] = SIM_LOG2SIZE;
    this.i32[regs + Q_BASE] = base;
    this.i32[regs + Q_CMDSET] = cmdset;
    Atomics.store(this.i32, regs + Q_CONFIG, CONFIG_EN); // publish: the queue is enabled
    return new SimRing(qid, regs, new Int32Array(this.mem, base, 4 << SIM_LOG2SIZE), this.i32);
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
    const w: PteWindow = { word: new Uint32Array(MAX_PAGES), lo: new Int32Array(MAX_PAGES), hi: new Int32Array(MAX_PAGES) };
    for (let k = 0; k < MAX_PAGES; k++) {
      const ipa = this.pt.leafDescriptor(iova + k * 4096);
      w.word[k] = this.gm.paOf(ipa) >>> 2;
      w.lo[k] = this.gm.read32(ipa);
      w.hi[k] = this.gm.read32(ipa + 4);
    }
    this.pt.unmap(iova, MAX_PAGES * 4096);
    return w;
  }

  /** The guest maps the first `pages` pages of window `w` (the dma_map half): valid word last. */
  map(w: PteWindow, pages: number): void {
    const i32 = this.i32;
    for (let k = 0; k < pages; k++) {
      Atomics.store(i32, w.word[k]! + 1, w.hi[k]!); // unordered: PTE high word, before the valid word
      Atomics.store(i32, w.word[k]!, w.lo[k]!); // publish: PTE valid (break-before-make order)
    }
  }

  /** The guest clears the leaf PTEs (the first half of an unmap; the invalidation follows): valid word first. */
  unmap(w: PteWindow, pages: number): void {
    const i32 = this.i32;
    for (let k = 0; k < pages; k++) {
      Atomics.store(i32, w.word[k]!, 0); // publish: PTE invalid, before the invalidation is sent
      Atomics.store(i32, w.word[k]! + 1, 0); // unordered: PTE high word
    }
  }

  /** The device reads page k of vCPU v's window; returns the model's FAULT code (0: translated). */
  dma(v: number, k: number): number {
    const iova = SimWorld.windowIova(v) + k * 4096;
    return this.model.translate(SIM_STREAM.psid, -1, iova % 2 ** 32, Math.floor(iova / 2 ** 32), ACCESS.READ, this.out);
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
    // At most one command per page (without RIL) plus the sync.
    this.words = new Uint32Array(4 * (MAX_PAGES + 1));
    buildCmdSync(this.sync, cs, 0, 0, 0);
    this.batch = new Uint32Array(4 * batchSize);
    const u = new Uint32Array(4);
    for (let k = 0; k < batchSize; k++) {
      const addr = (0x40000 + k) * 4096;
      buildTlbiNhVa(u, SIM_ASID, SIM_VMID, addr % 2 ** 32, Math.floor(addr / 2 ** 32), 0, 0, 0, 0, 1);
      this.batch.set(u, 4 * k);
    }
  }

  build(iova: number, pages: number): number {
    const size = pages * 4096;
    const n = tlbInvRange(this.words, 0, this.template, iova % 2 ** 32, Math.floor(iova / 2 ** 32), size, 4096, 12, this.features.RIL);
    this.words.set(this.sync, 4 * n);
    this.n = n + 1;
    return this.n;
  }
}

export const SYNC_CS = { sev: CS.SEV, none: CS.NONE } as const;
export { FAULT };
