// The emulated SMMU both command paths execute on: STE/CD config caches, a
// tagged IOTLB, per-device ATCs, nested stage-1/stage-2 table walks over the
// host memory SharedArrayBuffer, and the invalidation commands. Pure: no
// threads, no I/O. translate() and execute() allocate nothing.
//
// IOTLB organisation: stage-1 entries (VA -> IPA, or VA -> PA for S1-only
// streams) and stage-2 entries (IPA -> PA) are cached separately, so a nested
// translation is two lookups. That makes both invalidation directions exact:
// an S1 TLBI drops the S1 entry keyed by its own VA/ASID/VMID and leaf level,
// TLBI_S2_IPA drops the S2 entry covering the IPA, S12_VMALL drops both. (The
// architecture allows S2_IPA to leave S1 entries; Linux follows it with
// NH_ALL. Table walks go through the same S2 entries.)

import { CERROR } from '../errors.ts';
import type { SmmuFeatures } from '../features.ts';
import { F, OP } from '../fields.ts';
import { join64, split64 } from './mem.ts';
import { D_HI, D_LO, blockAllowed, levelShift } from './pgtable.ts';
import { CD_BYTES, S1DSS, STE_CFG } from './structs.ts';
import { TagStore } from './tagstore.ts';

/** Transaction attributes (bitmask) of a DMA access. */
export const ACCESS = { READ: 1, WRITE: 2, EXEC: 4, PRIV: 8 } as const;

/** Translation result codes: SMMUv3 event record types (spec 7.3), plus STE_ABORT. */
export const FAULT = {
  NONE: 0,
  F_UUT: 0x01,
  C_BAD_STREAMID: 0x02,
  F_STE_FETCH: 0x03,
  C_BAD_STE: 0x04,
  F_BAD_ATS_TREQ: 0x05,
  F_STREAM_DISABLED: 0x06,
  C_BAD_SUBSTREAMID: 0x08,
  F_CD_FETCH: 0x09,
  C_BAD_CD: 0x0a,
  F_WALK_EABT: 0x0b,
  F_TRANSLATION: 0x10,
  F_ADDR_SIZE: 0x11,
  F_ACCESS: 0x12,
  F_PERMISSION: 0x13,
  /** STE.Config = abort: the transaction is terminated and no event is recorded (not an event type). */
  STE_ABORT: 0x100,
} as const;
export type FaultName = Exclude<keyof typeof FAULT, 'NONE'>;

const FAULT_NAMES = new Map<number, FaultName>(
  Object.entries(FAULT).filter(([k]) => k !== 'NONE').map(([k, v]) => [v, k as FaultName]),
);
export function faultName(code: number): FaultName {
  const n = FAULT_NAMES.get(code);
  if (!n) throw new RangeError(`${code} is not a fault code`);
  return n;
}

/** Event record CLASS of a fault: what the faulting access was. */
export const FAULT_CLASS = { CD: 0, TT: 1, IN: 2 } as const;

/**
 * Slots of the `out` array of translate(). Every value fits a u32, so `out`
 * may be a Uint32Array (a mailbox) or a Float64Array of TRANSLATE_OUT_LEN.
 */
export const T_OUT = {
  /** Output PA bits [31:0] and [63:32]. */
  PA_LO: 0,
  PA_HI: 1,
  /** log2 of the naturally aligned region the translation holds for (min of the stages' leaf sizes). */
  SIZE_LOG2: 2,
  /** On a fault: 1 or 2 (0 = configuration, before any stage). */
  STAGE: 3,
  LEVEL: 4,
  /** FAULT_CLASS of the faulting access. */
  CLASS: 5,
  /** On a stage-2 fault: the IPA being translated. */
  IPA_LO: 6,
  IPA_HI: 7,
} as const;
export const TRANSLATE_OUT_LEN = 8;
export type TranslateOut = Uint32Array | Float64Array;

export type TranslateResult =
  | { pa: number; sizeLog2: number }
  | { fault: FaultName; stage: number; level: number; ipa?: number; class: 'CD' | 'TT' | 'IN' };

export interface SmmuModelOptions {
  /** IOTLB capacity, stage-1 and stage-2 entries together (default 4096). */
  iotlbEntries?: number;
  /** CD cache capacity (default 1024). */
  cdEntries?: number;
  /** ATC capacity, all devices together (default 1024). */
  atcEntries?: number;
  /** Most attached streams at once (default 1024). */
  maxStreams?: number;
  /**
   * Cache a nested translation as one combined IOVA -> PA entry (default
   * true), as SMMUs commonly do: it is dropped by the commands that drop
   * stage-1 entries of its VMID/ASID (TLBI_NH_*, TLBI_S12_VMALL,
   * TLBI_NSNH_ALL) but NOT by TLBI_S2_IPA, which the architecture lets
   * leave combined entries behind (so Linux follows a nesting parent's
   * TLBI_S2_IPA with TLBI_NH_ALL, arm_smmu_tlb_inv_range_domain). A missing
   * TLBI_NH_ALL after a stage-2 change then shows as a stale translation.
   * false keeps stage 1 (VA -> IPA) and stage 2 (IPA -> PA) entries apart,
   * so a TLBI_S2_IPA alone suffices: the more forgiving SMMU.
   */
  combinedNested?: boolean;
  /**
   * Walk-cache capacity: intermediate (table) descriptors cached per
   * VMID/ASID (stage 1) or VMID (stage 2), as SMMUs do (default 0: none).
   * A TLBI with Leaf=0 over the range (or by ASID/VMID/all) drops them; a
   * Leaf=1 TLBI does not, so a leaf-only invalidation after a table change
   * leaves a stale walk, as on hardware.
   */
  walkCacheEntries?: number;
}

/** Counters; plain fields, reset with reset(). */
export class SmmuStats {
  /** IOTLB lookups; a nested translation does two (stage 1 by VA, stage 2 by IPA), table fetches one each. */
  iotlbHits = 0;
  iotlbMisses = 0;
  s1Walks = 0;
  s2Walks = 0;
  steHits = 0;
  steMisses = 0;
  cdHits = 0;
  cdMisses = 0;
  atcHits = 0;
  atcMisses = 0;
  /** Entries removed by invalidation commands (not by eviction). */
  iotlbInvalidated = 0;
  /** Walks that started below the root from a cached table descriptor, and walk-cache entries invalidated. */
  walkCacheHits = 0;
  walkCacheInvalidated = 0;
  iotlbEvictions = 0;
  steInvalidated = 0;
  cdInvalidated = 0;
  atcInvalidated = 0;
  commands = 0;
  syncs = 0;
  prefetches = 0;
  /** PRI_RESP, RESUME, STALL_TERM: accepted; no PRI/stall state is modelled. */
  pageResponses = 0;
  reset(): void {
    for (const k of Object.keys(this) as (keyof SmmuStats)[]) if (typeof this[k] === 'number') (this[k] as number) = 0;
  }
}

const POW2 = new Float64Array(128).map((_, i) => 2 ** i);
const TWO32 = 4294967296;
const NONE = -1;

// IOTLB tags: an ASID (0..0xffff), a global S1 entry, or a stage-2 entry.
const TAG_GLOBAL = 0x10000;
const TAG_S2 = 0x20000;
const VMIDS = 0x10000;

/** What an IOTLB entry holds: a stage-1 (or stage-2) translation, a nested stage 1 (VA -> IPA), or a combined nested one (VA -> PA). */
const ENTRY_KIND = { PLAIN: 0, NESTED_S1: 1, COMBINED: 2 } as const;

// Entry permissions (what the leaf allows).
const P_READ = 1;
const P_WRITE = 2;
const P_UX = 4;
const P_PX = 8;
const P_UNPRIV = 16;
const P_ALL = 31;

const CDF_EPD0 = 1;
const CDF_AFFD = 2;

const TABLE_ATTRS = D_HI.PXN_TABLE | D_HI.UXN_TABLE | D_HI.AP_TABLE_NO_UNPRIV | D_HI.AP_TABLE_RDONLY;
/** TCR/VTCR PS/IPS encodings -> bits (52 is capped to 48: no FEAT_LPA). */
const PS_BITS = [32, 36, 40, 42, 44, 48, 48];
/** TCR.TG0 encoding -> page shift. */
const TG0_SHIFT = [12, 16, 14];

export class SmmuModel {
  readonly features: SmmuFeatures;
  readonly stats = new SmmuStats();

  private readonly u32: Uint32Array;
  private readonly memBytes: number;
  private readonly asidMask: number;
  private readonly vmidMask: number;

  // Streams: slot-indexed STE cache.
  private readonly slotOfSid = new Map<number, number>();
  private readonly maxStreams: number;
  private readonly freeSlots: number[] = [];
  private readonly sidOfSlot: Float64Array;
  private readonly stePa: Float64Array;
  private readonly steCached: Uint8Array;
  private readonly steCfg: Uint8Array;
  private readonly steCdMax: Uint8Array;
  private readonly steDss: Uint8Array;
  private readonly steEats: Uint8Array;
  private readonly steCtx: Float64Array;
  private readonly steVmid: Int32Array;
  private readonly s2Ttb: Float64Array;
  private readonly s2PageShift: Uint8Array;
  private readonly s2Start: Uint8Array;
  private readonly s2RootBits: Uint8Array;
  private readonly s2Ias: Uint8Array;
  private readonly s2Oas: Uint8Array;

  // CD cache: key (slot, CD index), bucket = slot.
  private readonly cds: TagStore;
  private readonly cdTtb: Float64Array;
  private readonly cdAsid: Int32Array;
  private readonly cdPageShift: Uint8Array;
  private readonly cdStart: Uint8Array;
  private readonly cdRootBits: Uint8Array;
  private readonly cdVaBits: Uint8Array;
  private readonly cdOas: Uint8Array;
  private readonly cdFlags: Uint8Array;

  // IOTLB: key (VMID, tag, leaf size, base), bucket = VMID (S1) or VMIDS + VMID (S2).
  private readonly tlb: TagStore;
  private readonly tOut: Float64Array;
  private readonly tPerm: Uint8Array;
  private readonly tLevel: Uint8Array;
  private readonly tGranule: Uint8Array;
  /** ENTRY_KIND of the entry. */
  private readonly tNested: Uint8Array;
  /** Combined entries: the IPA of the entry's base, stage 2's permissions and leaf level. */
  private readonly tIpa: Float64Array;
  private readonly tPerm2: Uint8Array;
  private readonly tLevel2: Uint8Array;
  private readonly combined: boolean;

  // Walk cache: key (VMID, ASID or TAG_S2, coverage log2 of the descriptor, base), bucket as the IOTLB's. The
  // coverage also names the granule: no two granules share one (4K 21/30/39, 16K 25/36/47, 64K 29/42).
  private readonly wc: TagStore | null;
  /** The next-level table address (an IPA for a nested stream's stage 1), the table attributes gathered so far. */
  private readonly wcTable: Float64Array;
  private readonly wcAttrs: Uint32Array;

  // ATC: key (slot, SSID + 1), bucket = slot.
  private readonly atc: TagStore;
  private readonly aPa: Float64Array;
  private readonly aPerm: Uint8Array;

  // Results of the last walk / stage-2 translation / translation (scratch, no allocation).
  private wOut = 0;
  private wShift = 0;
  private wLevel = 0;
  private wPerm = 0;
  private wGlobal = false;
  private wGranule = 0;
  private s2Out = 0;
  private s2Shift = 0;
  private s2Perm = 0;
  private s2Level = 0;
  /** stage1() returned a final PA (a combined entry), not an IPA. */
  private wFinal = false;
  private rPa = 0;
  private rShift = 0;
  private rPerm = 0;
  private fStage = 0;
  private fLevel = 0;
  private fIpa = 0;
  private fClass = 0;
  private readonly scratchOut = new Uint32Array(TRANSLATE_OUT_LEN);

  constructor(mem: SharedArrayBuffer, features: SmmuFeatures, opts: SmmuModelOptions = {}) {
    this.features = features;
    this.u32 = new Uint32Array(mem);
    this.memBytes = this.u32.length * 4;
    this.asidMask = features.ASID16 ? 0xffff : 0xff;
    this.vmidMask = features.VMID16 ? 0xffff : 0xff;
    const n = (this.maxStreams = opts.maxStreams ?? 1024);
    for (let i = n - 1; i >= 0; i--) this.freeSlots.push(i);
    this.sidOfSlot = new Float64Array(n).fill(NONE);
    this.stePa = new Float64Array(n);
    this.steCached = new Uint8Array(n);
    this.steCfg = new Uint8Array(n);
    this.steCdMax = new Uint8Array(n);
    this.steDss = new Uint8Array(n);
    this.steEats = new Uint8Array(n);
    this.steCtx = new Float64Array(n);
    this.steVmid = new Int32Array(n);
    this.s2Ttb = new Float64Array(n);
    this.s2PageShift = new Uint8Array(n);
    this.s2Start = new Uint8Array(n);
    this.s2RootBits = new Uint8Array(n);
    this.s2Ias = new Uint8Array(n);
    this.s2Oas = new Uint8Array(n);

    const nc = opts.cdEntries ?? 1024;
    this.cds = new TagStore(nc, n);
    this.cdTtb = new Float64Array(nc);
    this.cdAsid = new Int32Array(nc);
    this.cdPageShift = new Uint8Array(nc);
    this.cdStart = new Uint8Array(nc);
    this.cdRootBits = new Uint8Array(nc);
    this.cdVaBits = new Uint8Array(nc);
    this.cdOas = new Uint8Array(nc);
    this.cdFlags = new Uint8Array(nc);

    const nt = opts.iotlbEntries ?? 4096;
    this.tlb = new TagStore(nt, 2 * VMIDS);
    this.tOut = new Float64Array(nt);
    this.tPerm = new Uint8Array(nt);
    this.tLevel = new Uint8Array(nt);
    this.tGranule = new Uint8Array(nt);
    this.tNested = new Uint8Array(nt);
    this.tIpa = new Float64Array(nt);
    this.tPerm2 = new Uint8Array(nt);
    this.tLevel2 = new Uint8Array(nt);
    this.combined = opts.combinedNested ?? true;
    const nw = opts.walkCacheEntries ?? 0;
    this.wc = nw > 0 ? new TagStore(nw, 2 * VMIDS) : null;
    this.wcTable = new Float64Array(nw);
    this.wcAttrs = new Uint32Array(nw);

    const na = opts.atcEntries ?? 1024;
    this.atc = new TagStore(na, n);
    this.aPa = new Float64Array(na);
    this.aPerm = new Uint8Array(na);
  }

  /** Live IOTLB entries (stage 1 and stage 2). */
  get iotlbSize(): number {
    return this.tlb.live;
  }

  // ---------------------------------------------------------------- streams

  /** Tell the model a physical StreamID exists and where its STE is (a host PA). */
  attachStream(psid: number, stePa: number): void {
    if (!Number.isInteger(psid) || psid < 0 || psid > 0xffffffff) throw new RangeError(`StreamID ${psid} is not a u32`);
    if (this.slotOfSid.has(psid)) throw new RangeError(`StreamID ${psid} is already attached`);
    if (stePa % 64 !== 0 || stePa < 0 || stePa + 64 > this.memBytes) throw new RangeError(`STE address 0x${stePa.toString(16)} is not a 64-byte aligned host PA`);
    const slot = this.freeSlots.pop();
    if (slot === undefined) throw new RangeError(`more than ${this.maxStreams} streams attached`);
    this.slotOfSid.set(psid, slot);
    this.sidOfSlot[slot] = psid;
    this.stePa[slot] = stePa;
    this.steCached[slot] = 0;
  }

  detachStream(psid: number): void {
    const slot = this.slotOfSid.get(psid);
    if (slot === undefined) return;
    this.dropConfig(slot);
    this.atc.removeBucket(slot);
    this.slotOfSid.delete(psid);
    this.sidOfSlot[slot] = NONE;
    this.freeSlots.push(slot);
  }

  // ------------------------------------------------------------ translation

  /**
   * Translate one DMA access of stream `psid` (`ssid` < 0: no SubstreamID) at
   * IOVA hi:lo. Returns 0 with out[T_OUT.PA_LO/PA_HI/SIZE_LOG2], or a FAULT
   * code with out[T_OUT.STAGE/LEVEL/IPA/CLASS]. Allocation-free.
   */
  translate(psid: number, ssid: number, iovaLo: number, iovaHi: number, access: number, out: TranslateOut): number {
    const r = this.translateCore(psid, ssid, iovaLo >>> 0, iovaHi >>> 0, access);
    return this.report(r, out);
  }

  /**
   * The device side of ATS: look in the device's ATC; on a miss send a
   * translation request (STE.EATS must be 1) and fill the ATC with the result.
   */
  atsTranslate(psid: number, ssid: number, iovaLo: number, iovaHi: number, access: number, out: TranslateOut): number {
    if (!this.features.ATS) return this.report(this.fault(FAULT.F_BAD_ATS_TREQ, 0, 0, FAULT_CLASS.IN, 0), out);
    const slot = this.slotOfSid.get(psid);
    if (slot === undefined) return this.report(this.fault(FAULT.C_BAD_STREAMID, 0, 0, FAULT_CLASS.IN, 0), out);
    const va = join64(iovaLo >>> 0, iovaHi >>> 0);
    const tag = ssid < 0 ? 0 : ssid + 1;
    for (let m = this.atc.sizeMask; m !== 0; m &= m - 1) {
      const s = 31 - Math.clz32(m & -m);
      const base = va - (va % POW2[s]!);
      const e = this.atc.find(slot, tag, s, base);
      if (e !== NONE && permits(this.aPerm[e]!, access)) {
        this.stats.atcHits++;
        this.rPa = this.aPa[e]! + (va - base);
        this.rShift = s;
        return this.report(0, out);
      }
    }
    this.stats.atcMisses++;
    let r = this.loadSte(slot);
    // A bypass STE's effective EATS is 0b00 (§7.3.6).
    if (r === 0 && (this.steEats[slot] !== 1 || this.steCfg[slot] === STE_CFG.BYPASS)) r = this.fault(FAULT.F_BAD_ATS_TREQ, 0, 0, FAULT_CLASS.IN, 0);
    if (r === 0) r = this.translateCore(psid, ssid, iovaLo >>> 0, iovaHi >>> 0, access);
    if (r === 0) {
      const s = this.rShift;
      const e = this.atc.insert(slot, tag, s, va - (va % POW2[s]!), slot);
      this.aPa[e] = this.rPa - (this.rPa % POW2[s]!);
      this.aPerm[e] = this.rPerm;
    }
    return this.report(r, out);
  }

  /** Friendly translate for tests and the public API (allocates its result). */
  translateIova(psid: number, ssid: number, iova: number | bigint, access: number, opts: { ats?: boolean } = {}): TranslateResult {
    const [lo, hi] = split64(iova);
    const out = this.scratchOut;
    const r = opts.ats ? this.atsTranslate(psid, ssid, lo, hi, access, out) : this.translate(psid, ssid, lo, hi, access, out);
    if (r === 0) return { pa: join64(out[T_OUT.PA_LO]!, out[T_OUT.PA_HI]!), sizeLog2: out[T_OUT.SIZE_LOG2]! };
    const cls = out[T_OUT.CLASS] === FAULT_CLASS.CD ? 'CD' : out[T_OUT.CLASS] === FAULT_CLASS.TT ? 'TT' : 'IN';
    const res: TranslateResult = { fault: faultName(r), stage: out[T_OUT.STAGE]!, level: out[T_OUT.LEVEL]!, class: cls };
    if (out[T_OUT.STAGE] === 2) res.ipa = join64(out[T_OUT.IPA_LO]!, out[T_OUT.IPA_HI]!);
    return res;
  }

  private report(r: number, out: TranslateOut): number {
    if (r === 0) {
      out[T_OUT.PA_LO] = this.rPa % TWO32;
      out[T_OUT.PA_HI] = Math.floor(this.rPa / TWO32);
      out[T_OUT.SIZE_LOG2] = this.rShift;
    } else {
      out[T_OUT.STAGE] = this.fStage;
      out[T_OUT.LEVEL] = this.fLevel;
      out[T_OUT.CLASS] = this.fClass;
      out[T_OUT.IPA_LO] = this.fIpa % TWO32;
      out[T_OUT.IPA_HI] = Math.floor(this.fIpa / TWO32);
    }
    return r;
  }

  private fault(code: number, stage: number, level: number, cls: number, ipa: number): number {
    this.fStage = stage;
    this.fLevel = level;
    this.fClass = cls;
    this.fIpa = ipa;
    return code;
  }

  /** Sets rPa/rShift/rPerm on success. */
  private translateCore(psid: number, ssid: number, lo: number, hi: number, access: number): number {
    const slot = this.slotOfSid.get(psid);
    if (slot === undefined) return this.fault(FAULT.C_BAD_STREAMID, 0, 0, FAULT_CLASS.IN, 0);
    const sf = this.loadSte(slot);
    if (sf !== 0) return sf;
    const cfg = this.steCfg[slot]!;
    if (cfg === STE_CFG.ABORT) return this.fault(FAULT.STE_ABORT, 0, 0, FAULT_CLASS.IN, 0);
    // A SubstreamID needs stage 1: with stage 1 disabled (Config = bypass or stage 2 only) it is C_BAD_SUBSTREAMID
    // whether or not stage 2 translates (SMMUv3 §7.3.9).
    if (ssid >= 0 && (cfg === STE_CFG.BYPASS || cfg === STE_CFG.S2_TRANS)) return this.fault(FAULT.C_BAD_SUBSTREAMID, 0, 0, FAULT_CLASS.IN, 0);
    // Above 2^48 no stage covers the address; the double would also lose bits.
    if (hi > 0xffff) return this.fault(cfg === STE_CFG.BYPASS ? FAULT.F_ADDR_SIZE : FAULT.F_TRANSLATION, cfg === STE_CFG.S2_TRANS ? 2 : 1, 0, FAULT_CLASS.IN, 0);
    const va = join64(lo, hi);
    if (cfg === STE_CFG.BYPASS) {
      this.rPa = va;
      this.rShift = 12;
      this.rPerm = P_ALL;
      return 0;
    }
    let s1 = cfg !== STE_CFG.S2_TRANS;
    let cdIndex = 0;
    if (s1) {
      const cdMax = this.steCdMax[slot]!;
      const dss = this.steDss[slot]!;
      if (ssid < 0) {
        if (cdMax !== 0 && dss === S1DSS.TERMINATE) return this.fault(FAULT.F_STREAM_DISABLED, 0, 0, FAULT_CLASS.IN, 0);
        if (cdMax !== 0 && dss === S1DSS.BYPASS) s1 = false;
      } else if (cdMax === 0 || ssid >= POW2[cdMax]!) {
        return this.fault(FAULT.C_BAD_SUBSTREAMID, 0, 0, FAULT_CLASS.IN, 0);
      } else if (ssid === 0 && dss === S1DSS.SSID0) {
        // CD 0 is kept for the traffic without a SubstreamID (§5.2 S1DSS = 0b10): F_STREAM_DISABLED, §7.3.7.
        return this.fault(FAULT.F_STREAM_DISABLED, 0, 0, FAULT_CLASS.IN, 0);
      } else {
        cdIndex = ssid;
      }
    }
    let out = va;
    let shift = 64;
    let perm = P_ALL;
    let final = false;
    if (s1) {
      const f = this.stage1(slot, cdIndex, va, access);
      if (f !== 0) return f;
      out = this.wOut;
      shift = this.wShift;
      perm = this.wPerm;
      final = this.wFinal;
    }
    if (!final && (cfg === STE_CFG.S2_TRANS || cfg === STE_CFG.NESTED)) {
      const f = this.s2Translate(slot, out, access, FAULT_CLASS.IN);
      if (f !== 0) return f;
      out = this.s2Out;
      if (this.s2Shift < shift) shift = this.s2Shift;
      perm &= this.s2Perm;
    }
    this.rPa = out;
    this.rShift = shift;
    this.rPerm = perm;
    return 0;
  }

  /**
   * Stage 1 of `va` through the IOTLB or a walk; sets wOut (IPA or PA),
   * wShift, wPerm, and wFinal when wOut is already the PA (a combined entry
   * of a nested stream: stage 2 is then done too, faults included).
   */
  private stage1(slot: number, cdIndex: number, va: number, access: number): number {
    const cd = this.loadCd(slot, cdIndex);
    if (cd < 0) return -cd;
    if (va >= POW2[this.cdVaBits[cd]!]!) return this.fault(FAULT.F_TRANSLATION, 1, 0, FAULT_CLASS.IN, 0);
    const vmid = this.steVmid[slot]!;
    const asid = this.cdAsid[cd]!;
    const nested = this.steCfg[slot] === STE_CFG.NESTED;
    const kind = !nested ? ENTRY_KIND.PLAIN : this.combined ? ENTRY_KIND.COMBINED : ENTRY_KIND.NESTED_S1;
    const tlb = this.tlb;
    this.wFinal = kind === ENTRY_KIND.COMBINED;
    for (let m = tlb.sizeMask; m !== 0; m &= m - 1) {
      const s = 31 - Math.clz32(m & -m);
      const base = va - (va % POW2[s]!);
      let e = tlb.find(vmid, asid, s, base);
      if (e === NONE) e = tlb.find(vmid, TAG_GLOBAL, s, base);
      if (e !== NONE && this.tNested[e] === kind) {
        this.stats.iotlbHits++;
        if (!permits(this.tPerm[e]!, access)) return this.fault(FAULT.F_PERMISSION, 1, this.tLevel[e]!, FAULT_CLASS.IN, 0);
        this.wOut = this.tOut[e]! + (va - base);
        this.wShift = s;
        this.wPerm = this.tPerm[e]!;
        if (kind === ENTRY_KIND.COMBINED) {
          if (!permits(this.tPerm2[e]!, access)) return this.fault(FAULT.F_PERMISSION, 2, this.tLevel2[e]!, FAULT_CLASS.IN, this.tIpa[e]! + (va - base));
          this.wPerm &= this.tPerm2[e]!;
        }
        return 0;
      }
    }
    this.stats.iotlbMisses++;
    if (this.cdFlags[cd]! & CDF_EPD0) return this.fault(FAULT.F_TRANSLATION, 1, 0, FAULT_CLASS.IN, 0);
    const f = this.walk(1, slot, cd, va, FAULT_CLASS.IN);
    if (f !== 0) return f;
    let s = this.wShift;
    let out = this.wOut;
    const perm = this.wPerm;
    const level = this.wLevel;
    const tag = this.wGlobal ? TAG_GLOBAL : asid;
    const granule = this.wGranule;
    if (!permits(perm, access)) {
      // A combined entry needs stage 2 too, which a stage-1 fault never reaches: cache nothing then.
      if (kind !== ENTRY_KIND.COMBINED) this.insertS1(vmid, tag, s, va - (va % POW2[s]!), out, perm, level, granule, kind);
      return this.fault(FAULT.F_PERMISSION, 1, level, FAULT_CLASS.IN, 0);
    }
    if (kind !== ENTRY_KIND.COMBINED) {
      this.insertS1(vmid, tag, s, va - (va % POW2[s]!), out, perm, level, granule, kind);
      this.wOut = out + (va % POW2[s]!);
      return 0;
    }
    // Combined: finish with stage 2 of the output IPA, then cache VA -> PA at the smaller of the two leaf sizes.
    const ipa = out + (va % POW2[s]!);
    const f2 = this.s2Translate(slot, ipa, access, FAULT_CLASS.IN);
    if (f2 !== 0) return f2;
    if (this.s2Shift < s) s = this.s2Shift;
    const off = va % POW2[s]!;
    const e = this.insertS1(vmid, tag, s, va - off, this.s2Out - off, perm, level, granule, kind);
    this.tIpa[e] = ipa - off;
    this.tPerm2[e] = this.s2Perm;
    this.tLevel2[e] = this.s2Level;
    this.wOut = this.s2Out;
    this.wShift = s;
    this.wPerm = perm & this.s2Perm;
    return 0;
  }

  /** Cache a stage-1 result (output `out` at the entry's base); returns the entry. */
  private insertS1(vmid: number, tag: number, s: number, base: number, out: number, perm: number, level: number, granule: number, kind: number): number {
    const e = this.tlb.insert(vmid, tag, s, base, vmid);
    this.stats.iotlbEvictions = this.tlb.evictions;
    this.tOut[e] = out;
    this.tPerm[e] = perm;
    this.tLevel[e] = level;
    this.tGranule[e] = granule;
    this.tNested[e] = kind;
    return e;
  }

  /** Stage 2 of `ipa` for stream `slot`; sets s2Out (PA), s2Shift, s2Perm. */
  private s2Translate(slot: number, ipa: number, access: number, cls: number): number {
    if (ipa >= POW2[this.s2Ias[slot]!]!) return this.fault(FAULT.F_TRANSLATION, 2, 0, cls, ipa);
    const vmid = this.steVmid[slot]!;
    const tlb = this.tlb;
    for (let m = tlb.sizeMask; m !== 0; m &= m - 1) {
      const s = 31 - Math.clz32(m & -m);
      const base = ipa - (ipa % POW2[s]!);
      const e = tlb.find(vmid, TAG_S2, s, base);
      if (e !== NONE) {
        this.stats.iotlbHits++;
        if (!permits(this.tPerm[e]!, access)) return this.fault(FAULT.F_PERMISSION, 2, this.tLevel[e]!, cls, ipa);
        this.s2Out = this.tOut[e]! + (ipa - base);
        this.s2Shift = s;
        this.s2Perm = this.tPerm[e]!;
        this.s2Level = this.tLevel[e]!;
        return 0;
      }
    }
    this.stats.iotlbMisses++;
    const f = this.walk(2, slot, 0, ipa, cls);
    if (f !== 0) return f;
    const s = this.wShift;
    const base = ipa - (ipa % POW2[s]!);
    const e = tlb.insert(vmid, TAG_S2, s, base, VMIDS + vmid);
    this.stats.iotlbEvictions = tlb.evictions;
    this.tOut[e] = this.wOut;
    this.tPerm[e] = this.wPerm;
    this.tLevel[e] = this.wLevel;
    this.tGranule[e] = this.wGranule;
    this.tNested[e] = ENTRY_KIND.PLAIN;
    if (!permits(this.wPerm, access)) return this.fault(FAULT.F_PERMISSION, 2, this.wLevel, cls, ipa);
    this.s2Out = this.wOut + (ipa - base);
    this.s2Shift = s;
    this.s2Perm = this.wPerm;
    this.s2Level = this.wLevel;
    return 0;
  }

  /**
   * One VMSAv8-64 table walk. Stage 1 of a nested stream translates every
   * table address (an IPA) through stage 2 first, as nested hardware does.
   * Sets wOut (aligned leaf output), wShift, wLevel, wPerm, wGlobal, wGranule.
   */
  private walk(stage: 1 | 2, slot: number, cd: number, addr: number, cls: number): number {
    let ps: number, level: number, table: number, bits: number, oas: number;
    if (stage === 1) {
      this.stats.s1Walks++;
      ps = this.cdPageShift[cd]!;
      level = this.cdStart[cd]!;
      table = this.cdTtb[cd]!;
      bits = this.cdRootBits[cd]!;
      oas = this.cdOas[cd]!;
    } else {
      this.stats.s2Walks++;
      ps = this.s2PageShift[slot]!;
      level = this.s2Start[slot]!;
      table = this.s2Ttb[slot]!;
      bits = this.s2RootBits[slot]!;
      oas = this.s2Oas[slot]!;
    }
    const nested = stage === 1 && this.steCfg[slot] === STE_CFG.NESTED;
    const faultIpa = stage === 2 ? addr : 0;
    const granuleMask = ~((1 << ps) - 1);
    let tableAttrs = 0;
    const wc = this.wc;
    const wcVmid = this.steVmid[slot]!;
    const wcTag = stage === 1 ? this.cdAsid[cd]! : TAG_S2;
    const wcBucket = stage === 1 ? wcVmid : VMIDS + wcVmid;
    if (wc !== null) {
      // Resume from the deepest cached table descriptor covering addr.
      for (let l = 2; l >= level; l--) {
        const cover = levelShift(ps, l);
        const e = wc.find(wcVmid, wcTag, cover, addr - (addr % POW2[cover]!));
        if (e === NONE) continue;
        this.stats.walkCacheHits++;
        table = this.wcTable[e]!;
        tableAttrs = this.wcAttrs[e]!;
        level = l + 1;
        bits = ps - 3;
        break;
      }
    }
    for (;;) {
      const shift = levelShift(ps, level);
      let d = table + 8 * (Math.floor(addr / POW2[shift]!) % POW2[bits]!);
      if (nested) {
        const f = this.s2Translate(slot, d, ACCESS.READ | ACCESS.PRIV, FAULT_CLASS.TT);
        if (f !== 0) return f;
        d = this.s2Out;
      }
      if (d + 8 > this.memBytes) return this.fault(FAULT.F_WALK_EABT, stage, level, FAULT_CLASS.TT, faultIpa);
      const lo = this.u32[d / 4]!;
      const hi = this.u32[d / 4 + 1]!;
      if (!(lo & D_LO.VALID)) return this.fault(FAULT.F_TRANSLATION, stage, level, cls, faultIpa);
      if (level < 3 && lo & D_LO.TABLE) {
        tableAttrs |= hi & TABLE_ATTRS;
        table = (hi & D_HI.OA_MASK) * TWO32 + ((lo & granuleMask) >>> 0);
        if (table >= POW2[oas]!) return this.fault(FAULT.F_ADDR_SIZE, stage, level, cls, faultIpa);
        if (wc !== null) {
          const e = wc.insert(wcVmid, wcTag, shift, addr - (addr % POW2[shift]!), wcBucket);
          this.wcTable[e] = table;
          this.wcAttrs[e] = tableAttrs;
        }
        level++;
        bits = ps - 3;
        continue;
      }
      if (level === 3 ? !(lo & D_LO.TABLE) : !blockAllowed(ps, level)) {
        return this.fault(FAULT.F_TRANSLATION, stage, level, cls, faultIpa);
      }
      if (!(lo & D_LO.AF) && !(stage === 1 && this.cdFlags[cd]! & CDF_AFFD)) {
        return this.fault(FAULT.F_ACCESS, stage, level, cls, faultIpa);
      }
      const oaRaw = (hi & D_HI.OA_MASK) * TWO32 + ((lo & ~0xfff) >>> 0);
      const oa = oaRaw - (oaRaw % POW2[shift]!);
      if (oa >= POW2[oas]!) return this.fault(FAULT.F_ADDR_SIZE, stage, level, cls, faultIpa);
      let perm: number;
      if (stage === 1) {
        perm = P_READ;
        if (!(lo & D_LO.AP_RDONLY) && !(tableAttrs & D_HI.AP_TABLE_RDONLY)) perm |= P_WRITE;
        if (lo & D_LO.AP_UNPRIV && !(tableAttrs & D_HI.AP_TABLE_NO_UNPRIV)) perm |= P_UNPRIV;
        if (!(hi & D_HI.UXN) && !(tableAttrs & D_HI.UXN_TABLE)) perm |= P_UX;
        if (!(hi & D_HI.PXN) && !(tableAttrs & D_HI.PXN_TABLE)) perm |= P_PX;
      } else {
        perm = P_UNPRIV;
        if (lo & D_LO.S2AP_R) perm |= P_READ;
        if (lo & D_LO.S2AP_W) perm |= P_WRITE;
        if (!(hi & D_HI.UXN)) perm |= P_UX | P_PX;
      }
      this.wOut = oa;
      this.wShift = shift;
      this.wLevel = level;
      this.wPerm = perm;
      this.wGlobal = stage === 1 && !(lo & D_LO.NG);
      this.wGranule = ps;
      return 0;
    }
  }

  // ----------------------------------------------------------- config cache

  /** Fetch and decode the STE of `slot` unless cached. Invalid STEs are never cached. */
  private loadSte(slot: number): number {
    if (this.steCached[slot]) {
      this.stats.steHits++;
      return 0;
    }
    this.stats.steMisses++;
    const w = this.stePa[slot]! / 4;
    const u = this.u32;
    const w0 = u[w]!;
    const w1 = u[w + 1]!;
    const w2 = u[w + 2]!;
    const w5 = u[w + 5]!;
    const bad = this.fault(FAULT.C_BAD_STE, 0, 0, FAULT_CLASS.IN, 0);
    if (!(w0 & 1)) return bad;
    const cfg = (w0 >>> 1) & 7;
    const s1 = cfg === STE_CFG.S1_TRANS || cfg === STE_CFG.NESTED;
    const s2 = cfg === STE_CFG.S2_TRANS || cfg === STE_CFG.NESTED;
    if (cfg !== STE_CFG.ABORT && cfg !== STE_CFG.BYPASS && !s1 && !s2) return bad;
    // STRW != NS-EL1 (an EL2 stream) is not modelled.
    if ((w2 >>> 30) !== 0) return bad;
    if (s1) {
      const cdMax = w1 >>> 27;
      if (!this.features.S1P || ((w0 >>> 4) & 3) !== 0 || cdMax > 20) return bad;
      this.steCdMax[slot] = cdMax;
      this.steDss[slot] = w2 & 3;
      if (cdMax !== 0 && (w2 & 3) === 3) return bad;
      this.steCtx[slot] = join64(w0 & ~0x3f, w1 & 0xfffff);
    }
    if (s2) {
      if (!this.features.S2P || !((w5 >>> 19) & 1)) return bad;
      const ps = TG0_SHIFT[(w5 >>> 14) & 3];
      const ias = 64 - (w5 & 0x3f);
      const sl0 = (w5 >>> 6) & 3;
      const psBits = PS_BITS[(w5 >>> 16) & 7];
      if (ps === undefined || psBits === undefined || ias < 25 || ias > 48 || sl0 === 3) return bad;
      const start = (ps === 12 ? 2 : 3) - sl0;
      const rootBits = ias - levelShift(ps, start);
      // At most 16 concatenated tables at the start level.
      if (rootBits < 1 || rootBits > ps - 3 + 4) return bad;
      this.s2PageShift[slot] = ps;
      this.s2Start[slot] = start;
      this.s2RootBits[slot] = rootBits;
      this.s2Ias[slot] = ias;
      this.s2Oas[slot] = psBits;
      this.s2Ttb[slot] = join64(u[w + 6]! & ~0xf, u[w + 7]! & 0xfffff);
    }
    this.steCfg[slot] = cfg;
    this.steEats[slot] = (w2 >>> 28) & 3;
    // Without stage 2 support the VMID is not a tag at all.
    this.steVmid[slot] = this.features.S2P ? u[w + 4]! & this.vmidMask : 0;
    this.steCached[slot] = 1;
    return 0;
  }

  /** CD cache index of (slot, cdIndex), fetching the CD on a miss; or -(fault code). */
  private loadCd(slot: number, cdIndex: number): number {
    const hit = this.cds.find(slot, cdIndex, 0, 0);
    if (hit !== NONE) {
      this.stats.cdHits++;
      return hit;
    }
    this.stats.cdMisses++;
    let pa = this.steCtx[slot]! + CD_BYTES * cdIndex;
    if (this.steCfg[slot] === STE_CFG.NESTED) {
      // A 64-byte aligned CD never crosses a page: one stage-2 lookup covers it.
      const f = this.s2Translate(slot, pa, ACCESS.READ | ACCESS.PRIV, FAULT_CLASS.CD);
      if (f !== 0) return -f;
      pa = this.s2Out;
    }
    if (pa + CD_BYTES > this.memBytes) return -this.fault(FAULT.F_CD_FETCH, 1, 0, FAULT_CLASS.CD, 0);
    const w = pa / 4;
    const u = this.u32;
    const w0 = u[w]!;
    const w1 = u[w + 1]!;
    const bad = -this.fault(FAULT.C_BAD_CD, 1, 0, FAULT_CLASS.CD, 0);
    if (!(w0 >>> 31) || !((w1 >>> 9) & 1)) return bad;
    const ps = TG0_SHIFT[(w0 >>> 6) & 3];
    const vaBits = 64 - (w0 & 0x3f);
    const oas = PS_BITS[w1 & 7];
    if (ps === undefined || oas === undefined || vaBits < 25 || vaBits > 48) return bad;
    const e = this.cds.insert(slot, cdIndex, 0, 0, slot);
    const start = 4 - Math.ceil((vaBits - ps) / (ps - 3));
    this.cdTtb[e] = join64(u[w + 2]! & ~0xf, u[w + 3]! & 0xfffff);
    this.cdAsid[e] = (w1 >>> 16) & this.asidMask;
    this.cdPageShift[e] = ps;
    this.cdStart[e] = start;
    this.cdRootBits[e] = vaBits - levelShift(ps, start);
    this.cdVaBits[e] = vaBits;
    this.cdOas[e] = oas;
    this.cdFlags[e] = ((w0 >>> 14) & 1 ? CDF_EPD0 : 0) | ((w1 >>> 3) & 1 ? CDF_AFFD : 0);
    return e;
  }

  private dropConfig(slot: number): void {
    if (this.steCached[slot]) this.stats.steInvalidated++;
    this.steCached[slot] = 0;
    this.stats.cdInvalidated += this.cds.removeBucket(slot);
  }

  // --------------------------------------------------------------- commands

  /**
   * Apply one decoded host command (F slots). Returns 0, or CERROR.ILL for a
   * command this SMMU's features make illegal (the codec normally catches
   * those first). CMD_SYNC completion signalling belongs to the consumer.
   */
  execute(f: Uint32Array): number {
    this.stats.commands++;
    const op = f[F.OP]!;
    // The stage-1 TLBIs a guest's queue is made of, first and in a body small enough to inline where execute is called.
    if (op >= OP.TLBI_NH_ALL && op <= OP.TLBI_NH_VAA) return this.tlbiNh(op, f);
    return this.executeOther(op, f);
  }

  /** TLBI_NH_ALL, _ASID, _VA, _VAA. */
  private tlbiNh(op: number, f: Uint32Array): number {
    const feat = this.features;
    if (!feat.S1P) return CERROR.ILL;
    const vmid = feat.S2P ? f[F.VMID]! : 0;
    const asid = f[F.ASID]!;
    // With 8-bit VMIDs/ASIDs a non-zero upper byte need not hit anything.
    if (vmid > this.vmidMask || (op === OP.TLBI_NH_ASID || op === OP.TLBI_NH_VA) && asid > this.asidMask) return 0;
    if (op === OP.TLBI_NH_ALL) {
      this.stats.iotlbInvalidated += this.tlb.removeBucket(vmid);
      if (this.wc !== null) this.stats.walkCacheInvalidated += this.wc.removeBucket(vmid);
      return 0;
    }
    if (op === OP.TLBI_NH_ASID) {
      this.stats.iotlbInvalidated += this.scan(vmid, asid, false, 0, 0, false, 0, Infinity);
      this.walkInvalidate(vmid, asid, 0, Infinity);
      return 0;
    }
    return this.rangeInvalidate(vmid, op === OP.TLBI_NH_VA ? asid : NONE, f);
  }

  /** Every other command (execute's body). */
  private executeOther(op: number, f: Uint32Array): number {
    const feat = this.features;
    switch (op) {
      case OP.CMD_SYNC:
        this.stats.syncs++;
        return 0;
      case OP.PREFETCH_CONFIG:
      case OP.PREFETCH_ADDR:
        this.stats.prefetches++;
        return 0;
      case OP.CFGI_STE: {
        if (f[F.SSEC]) return CERROR.ILL;
        const slot = this.slotOfSid.get(f[F.SID]!);
        if (slot !== undefined) this.dropConfig(slot);
        return 0;
      }
      case OP.CFGI_STE_RANGE: {
        if (f[F.SSEC]) return CERROR.ILL;
        const range = f[F.RANGE]!;
        const span = POW2[range + 1]!;
        const first = f[F.SID]! - (f[F.SID]! % span);
        // Cost follows the attached streams, not the 2^(Range+1) SIDs named. Range = 31 (CFGI_ALL) spans every
        // u32 StreamID from 0; a free slot's SID (NONE, -1) is below every span.
        for (let slot = 0; slot < this.maxStreams; slot++) {
          const sid = this.sidOfSlot[slot]!;
          if (sid >= first && sid < first + span) this.dropConfig(slot);
        }
        return 0;
      }
      case OP.CFGI_CD:
      case OP.CFGI_CD_ALL: {
        if (!feat.S1P || f[F.SSEC]) return CERROR.ILL;
        const slot = this.slotOfSid.get(f[F.SID]!);
        if (slot === undefined) return 0;
        if (op === OP.CFGI_CD_ALL) {
          this.stats.cdInvalidated += this.cds.removeBucket(slot);
        } else {
          const e = this.cds.find(slot, f[F.SSID]!, 0, 0);
          if (e !== NONE) {
            this.cds.remove(e);
            this.stats.cdInvalidated++;
          }
        }
        return 0;
      }
      case OP.CFGI_VMS_PIDM:
        return feat.MPAM ? 0 : CERROR.ILL;
      case OP.TLBI_EL2_ALL:
      case OP.TLBI_EL2_ASID:
      case OP.TLBI_EL2_VA:
      case OP.TLBI_EL2_VAA:
        // No stream uses the EL2 regime (STRW = EL2 is a bad STE here), so there is nothing to drop.
        return feat.HYP ? 0 : CERROR.ILL;
      case OP.TLBI_S12_VMALL: {
        if (!feat.S2P) return CERROR.ILL;
        const vmid = f[F.VMID]!;
        if (vmid > this.vmidMask) return 0;
        this.stats.iotlbInvalidated += this.tlb.removeBucket(vmid) + this.tlb.removeBucket(VMIDS + vmid);
        if (this.wc !== null) this.stats.walkCacheInvalidated += this.wc.removeBucket(vmid) + this.wc.removeBucket(VMIDS + vmid);
        return 0;
      }
      case OP.TLBI_S2_IPA: {
        if (!feat.S2P) return CERROR.ILL;
        const vmid = f[F.VMID]!;
        if (vmid > this.vmidMask) return 0;
        return this.rangeInvalidate(vmid, TAG_S2, f);
      }
      case OP.TLBI_NSNH_ALL:
        this.stats.iotlbInvalidated += this.tlb.clear();
        if (this.wc !== null) this.stats.walkCacheInvalidated += this.wc.clear();
        return 0;
      case OP.ATC_INV:
        return feat.ATS ? this.atcInvalidate(f) : CERROR.ILL;
      case OP.PRI_RESP:
        if (!feat.PRI) return CERROR.ILL;
        this.stats.pageResponses++;
        return 0;
      case OP.RESUME:
      case OP.STALL_TERM:
        if (feat.STALL_MODEL === 1) return CERROR.ILL;
        this.stats.pageResponses++;
        return 0;
      default:
        return CERROR.ILL;
    }
  }

  /**
   * TLBI_NH_VA/NH_VAA (tag = ASID or NONE for any) and TLBI_S2_IPA (tag =
   * TAG_S2) with the range fields: TG = 0 drops entries containing Addr at any
   * granule/level; TG != 0 drops entries of that granule overlapping
   * [Addr, Addr + (NUM+1) * 2^SCALE granules), restricted to level TTL when
   * TTL != 0. Cost is bounded by the VMID's bucket, never by the range size.
   */
  private rangeInvalidate(vmid: number, tag: number, f: Uint32Array): number {
    const tg = this.features.RIL ? f[F.TG]! : 0;
    if (tg !== 0 && f[F.NUM] === 0 && f[F.SCALE] === 0 && f[F.TTL] === 0) return CERROR.ILL;
    const s2 = tag === TAG_S2;
    const cached = this.tlb.bucketCount[s2 ? VMIDS + vmid : vmid]!;
    // Leaf=1 promises only leaf entries changed: cached table descriptors stay (spec 4.4.2).
    const walks = f[F.LEAF] === 0 && this.wc !== null;
    // Nothing cached that it could drop (so while no device of the VMID translates): no address arithmetic at all.
    if (cached !== 0 || walks) this.dropRange(vmid, tag, tg, cached, walks, f);
    return 0;
  }

  /** rangeInvalidate's work once something may be cached: the span, then probes or a scan, then the walk cache. */
  private dropRange(vmid: number, tag: number, tg: number, cached: number, walks: boolean, f: Uint32Array): void {
    const feat = this.features;
    const s2 = tag === TAG_S2;
    const addr = join64(f[F.ADDR_LO]! & ~0xfff, f[F.ADDR_HI]!);
    let start = addr;
    let end = addr + 1;
    let gs = 0;
    let ttl = 0;
    if (tg !== 0) {
      ttl = f[F.TTL]!;
      const num = f[F.NUM]!;
      let scale = f[F.SCALE]!;
      scale = feat.DS ? Math.min(scale, 39) : scale & 31;
      gs = tg === 1 ? 12 : tg === 2 ? 14 : 16;
      // 16K with TTL = 1 is Reserved without DS and treated as 0.
      if (tg === 2 && ttl === 1 && !feat.DS) ttl = 0;
      start = addr - (addr % POW2[gs]!);
      end = addr + (num + 1) * POW2[scale + gs]!;
    }
    if (cached !== 0) {
      this.stats.iotlbInvalidated += tag !== NONE && this.probeCost(start, end, s2 ? 1 : 2) <= cached
        ? this.probe(vmid, tag, gs, ttl, start, end)
        : this.scan(vmid, tag, s2, gs, ttl, true, start, end);
    }
    if (walks) this.walkInvalidate(s2 ? VMIDS + vmid : vmid, s2 ? NONE : tag, start, end);
  }

  /** Drop walk-cache entries of `bucket` (tag NONE: any ASID) whose span meets [start, end). */
  private walkInvalidate(bucket: number, tag: number, start: number, end: number): void {
    if (this.wc !== null) this.stats.walkCacheInvalidated += this.wc.removeSpan(bucket, tag, start, end);
  }

  /** Hash probes needed to visit every aligned block of [start, end) at each cached size. */
  private probeCost(start: number, end: number, tags: number): number {
    let cost = 0;
    for (let m = this.tlb.sizeMask; m !== 0; m &= m - 1) {
      const s = 31 - Math.clz32(m & -m);
      cost += tags * (Math.floor((end - 1) / POW2[s]!) - Math.floor(start / POW2[s]!) + 1);
    }
    return cost;
  }

  private probe(vmid: number, tag: number, gs: number, ttl: number, start: number, end: number): number {
    const tlb = this.tlb;
    const s2 = tag === TAG_S2;
    let n = 0;
    for (let m = tlb.sizeMask; m !== 0; m &= m - 1) {
      const s = 31 - Math.clz32(m & -m);
      const step = POW2[s]!;
      for (let base = start - (start % step); base < end; base += step) {
        for (let k = 0; k < (s2 ? 1 : 2); k++) {
          const e = tlb.find(vmid, k === 0 ? tag : TAG_GLOBAL, s, base);
          if (e !== NONE && (gs === 0 || this.tGranule[e] === gs) && (ttl === 0 || this.tLevel[e] === ttl)) {
            tlb.remove(e);
            n++;
          }
        }
      }
    }
    return n;
  }

  /**
   * Walk a VMID's bucket and drop matching entries. `tag`: an ASID (which also
   * matches global entries when `withGlobal`), NONE for any, TAG_S2 for the
   * stage-2 bucket.
   */
  private scan(vmid: number, tag: number, s2: boolean, gs: number, ttl: number, withGlobal: boolean, start: number, end: number): number {
    const tlb = this.tlb;
    let n = 0;
    for (let e = tlb.bucketHead[s2 ? VMIDS + vmid : vmid]!, next; e !== NONE; e = next) {
      next = tlb.next[e]!;
      const t = tlb.tag[e]!;
      if (!s2 && tag !== NONE && t !== tag && !(withGlobal && t === TAG_GLOBAL)) continue;
      if (gs !== 0 && this.tGranule[e] !== gs) continue;
      if (ttl !== 0 && this.tLevel[e] !== ttl) continue;
      const base = tlb.base[e]!;
      if (base >= end || base + POW2[tlb.sizeLog2[e]!]! <= start) continue;
      tlb.remove(e);
      n++;
    }
    return n;
  }

  /** ATC_INV: the span 4096 << Size at Addr aligned to it (Size >= 52: all), SSID-scoped when SSV = 1 and Global = 0. */
  private atcInvalidate(f: Uint32Array): number {
    const size = f[F.SIZE]!;
    if (size > 52) return CERROR.ILL;
    const slot = this.slotOfSid.get(f[F.SID]!);
    // An unknown stream, or a device with nothing in its ATC: nothing to drop, and no span arithmetic.
    if (slot === undefined || this.atc.bucketCount[slot] === 0) return 0;
    const span = POW2[12 + size]!;
    const addr = join64(f[F.ADDR_LO]! & ~0xfff, f[F.ADDR_HI]!);
    // Size 52 spans 2^64 from 0: every address.
    const start = addr - (addr % span);
    const end = start + span;
    // Without a PASID the invalidation covers every PASID's entries (PCIe ATS).
    const tag = f[F.SSV] && !f[F.GLOBAL] ? f[F.SSID]! + 1 : NONE;
    this.stats.atcInvalidated += this.atc.removeSpan(slot, tag, start, end);
    return 0;
  }
}

/** Whether leaf permissions allow an access (stage-2 leaves carry P_UNPRIV, stage-1 leaves P_READ). */
function permits(perm: number, access: number): boolean {
  if (access & ACCESS.READ && !(perm & P_READ)) return false;
  if (access & ACCESS.WRITE && !(perm & P_WRITE)) return false;
  if (access & ACCESS.EXEC && !(perm & (access & ACCESS.PRIV ? P_PX : P_UX))) return false;
  return (access & ACCESS.PRIV) !== 0 || (perm & P_UNPRIV) !== 0;
}
