// SMMUv3 Stream Table Entries and Context Descriptors, 64 bytes each, with the
// field positions of the architecture (Linux STRTAB_STE_* / CTXDESC_CD_*).
// Only the fields the model acts on are named; the rest stay zero.
//
// Word i below is u32 i of the structure (little-endian), i.e. architecture
// bits [32i+31 : 32i].

import { GuestMemory, type PhysLayout, HostTableStore, join64, writeHostWords } from './mem.ts';
import { PROT, TranslationTable } from './pgtable.ts';

export const STE_BYTES = 64;
export const CD_BYTES = 64;

/** STE.Config (STRTAB_STE_0_CFG, bits [3:1]). */
export const STE_CFG = { ABORT: 0, BYPASS: 4, S1_TRANS: 5, S2_TRANS: 6, NESTED: 7 } as const;
/** STE.S1DSS (STRTAB_STE_1_S1DSS): what a transaction without a SubstreamID does when S1CDMax > 0. */
export const S1DSS = { TERMINATE: 0, BYPASS: 1, SSID0: 2 } as const;

/** Bit positions, as (word, shift, width). */
export const STE = {
  V: [0, 0, 1],
  CONFIG: [0, 1, 3],
  S1FMT: [0, 4, 2],
  /** S1ContextPtr[51:6]: word 0 bits [31:6] and word 1 bits [19:0]. */
  S1CTXPTR_LO: [0, 6, 26],
  S1CTXPTR_HI: [1, 0, 20],
  S1CDMAX: [1, 27, 5],
  S1DSS: [2, 0, 2],
  /** EATS (bits [93:92]): 0 = ATS translation requests aborted, 1 = full translation. */
  EATS: [2, 28, 2],
  /** STRW (bits [95:94]): 0 = NS-EL1 regime (the only one modelled). */
  STRW: [2, 30, 2],
  S2VMID: [4, 0, 16],
  /** VTCR fields, bits [178:160]: word 5. */
  S2T0SZ: [5, 0, 6],
  S2SL0: [5, 6, 2],
  S2TG: [5, 14, 2],
  S2PS: [5, 16, 3],
  S2AA64: [5, 19, 1],
  /** S2TTB[51:4]: word 6 bits [31:4], word 7 bits [19:0]. */
  S2TTB_LO: [6, 4, 28],
  S2TTB_HI: [7, 0, 20],
} as const satisfies Record<string, readonly [number, number, number]>;

export const CD = {
  T0SZ: [0, 0, 6],
  /** TCR.TG0 encoding: 0 = 4K, 1 = 64K, 2 = 16K. */
  TG0: [0, 6, 2],
  EPD0: [0, 14, 1],
  EPD1: [0, 30, 1],
  V: [0, 31, 1],
  /** IPS (bits [34:32]): output size of stage 1, as TCR.IPS. */
  IPS: [1, 0, 3],
  /** AFFD (bit 35): an access-flag fault is not raised for AF = 0. */
  AFFD: [1, 3, 1],
  AA64: [1, 9, 1],
  /** R (bit 45): record faults. */
  R: [1, 13, 1],
  /** A (bit 46): terminated transactions abort (1) rather than RAZ/WI (0). */
  A: [1, 14, 1],
  ASID: [1, 16, 16],
  /** TTB0[51:4]: word 2 bits [31:4], word 3 bits [19:0]. */
  TTB0_LO: [2, 4, 28],
  TTB0_HI: [3, 0, 20],
} as const satisfies Record<string, readonly [number, number, number]>;

type Field = readonly [number, number, number];

export function getField(w: Uint32Array, f: Field): number {
  const [i, sh, width] = f;
  return width === 32 ? w[i]! >>> 0 : (w[i]! >>> sh) & ((1 << width) - 1);
}

export function setField(w: Uint32Array, f: Field, v: number): void {
  const [i, sh, width] = f;
  const mask = width === 32 ? 0xffffffff : ((1 << width) - 1) << sh;
  w[i] = ((w[i]! & ~mask) | ((v << sh) & mask)) >>> 0;
}

/** An address field split as [lo field holding bits from `lo[1]`, hi field holding bits [51:32]]. */
function setAddr(w: Uint32Array, lo: Field, hi: Field, addr: number): void {
  if (addr % 2 ** lo[1] !== 0) throw new RangeError(`address 0x${addr.toString(16)} is not ${2 ** lo[1]}-byte aligned`);
  setField(w, lo, (addr % 4294967296) >>> lo[1]);
  setField(w, hi, Math.floor(addr / 4294967296));
}

export function getAddr(w: Uint32Array, lo: Field, hi: Field): number {
  return join64(getField(w, lo) << lo[1], getField(w, hi));
}

/** Stage-2 context the host puts in a physical STE. */
export interface Stage2Config {
  vmid: number;
  /** PA of the stage-2 root table. */
  ttb: number;
  t0sz: number;
  sl0: number;
  /** VTCR.TG0 encoding (0 = 4K). */
  tg: number;
  /** Output size, VTCR.PS encoding (5 = 48 bits). */
  ps: number;
}

export interface SteFields {
  config: number;
  s1ContextPtr?: number;
  s1CdMax?: number;
  s1Dss?: number;
  eats?: number;
  s2?: Stage2Config;
  /** Leave V = 0 (to test C_BAD_STE). */
  invalid?: boolean;
}

export function encodeSte(f: SteFields, w: Uint32Array = new Uint32Array(16)): Uint32Array {
  w.fill(0);
  setField(w, STE.V, f.invalid ? 0 : 1);
  setField(w, STE.CONFIG, f.config);
  setAddr(w, STE.S1CTXPTR_LO, STE.S1CTXPTR_HI, f.s1ContextPtr ?? 0);
  setField(w, STE.S1CDMAX, f.s1CdMax ?? 0);
  setField(w, STE.S1DSS, f.s1Dss ?? 0);
  setField(w, STE.EATS, f.eats ?? 0);
  if (f.s2) applyStage2(w, f.s2);
  return w;
}

function applyStage2(w: Uint32Array, s2: Stage2Config): void {
  setField(w, STE.S2VMID, s2.vmid);
  setField(w, STE.S2T0SZ, s2.t0sz);
  setField(w, STE.S2SL0, s2.sl0);
  setField(w, STE.S2TG, s2.tg);
  setField(w, STE.S2PS, s2.ps);
  setField(w, STE.S2AA64, 1);
  setAddr(w, STE.S2TTB_LO, STE.S2TTB_HI, s2.ttb);
}

export interface CdFields {
  asid: number;
  /** TTB0: an IPA for nested streams, a PA for stage-1-only streams. */
  ttb0: number;
  t0sz?: number;
  /** TCR.TG0 encoding: 0 = 4K, 1 = 64K, 2 = 16K. */
  tg0?: number;
  /** TCR.IPS encoding; default 5 (48 bits). */
  ips?: number;
  epd0?: boolean;
  affd?: boolean;
  invalid?: boolean;
}

export function encodeCd(f: CdFields, w: Uint32Array = new Uint32Array(16)): Uint32Array {
  w.fill(0);
  setField(w, CD.V, f.invalid ? 0 : 1);
  setField(w, CD.T0SZ, f.t0sz ?? 16);
  setField(w, CD.TG0, f.tg0 ?? 0);
  setField(w, CD.EPD0, f.epd0 ? 1 : 0);
  setField(w, CD.EPD1, 1);
  setField(w, CD.IPS, f.ips ?? 5);
  setField(w, CD.AFFD, f.affd ? 1 : 0);
  setField(w, CD.AA64, 1);
  setField(w, CD.R, 1);
  setField(w, CD.A, 1);
  setField(w, CD.ASID, f.asid);
  setAddr(w, CD.TTB0_LO, CD.TTB0_HI, f.ttb0);
  return w;
}

/** TCR.TG0 encoding of a granule. */
export function tg0Of(granule: number): number {
  return granule === 4096 ? 0 : granule === 65536 ? 1 : 2;
}

/** Write a physical STE (host memory). */
export function writeSte(mem: SharedArrayBuffer, stePa: number, f: SteFields): void {
  writeHostWords(mem, stePa, encodeSte(f));
}

/** Guest writes a CD into its CD table (guest RAM, by IPA): cdTableIpa + 64 * ssid. */
export function writeGuestCd(gm: GuestMemory, cdTableIpa: number, ssid: number, f: CdFields): void {
  gm.writeWords(cdTableIpa + CD_BYTES * ssid, encodeCd(f));
}

/** Guest writes its vSTE into its own linear stream table (guest RAM): strtabIpa + 64 * vsid. */
export function writeGuestSte(gm: GuestMemory, strtabIpa: number, vsid: number, f: SteFields): void {
  gm.writeWords(strtabIpa + STE_BYTES * vsid, encodeSte(f));
}

/** VMM reads the guest's vSTE (on a trapped CFGI_STE) into `out` (16 words). */
export function readGuestSte(gm: GuestMemory, strtabIpa: number, vsid: number, out: Uint32Array = new Uint32Array(16)): Uint32Array {
  return gm.readWords(strtabIpa + STE_BYTES * vsid, out);
}

/** Why installNestedSte refused a vSTE (Linux -EIO; the physical STE is then set to abort). */
export type NestedSteReject = 'NOT_ALLOWED' | 'BAD_CONFIG' | 'BAD_EATS';

/**
 * Linux STRTAB_STE_0_NESTING_ALLOWED / STRTAB_STE_1_NESTING_ALLOWED as the
 * four u32 of the vSTE's first 128 bits: V, Config, S1Fmt, S1ContextPtr,
 * S1CDMax; S1DSS, S1CIR, S1COR, S1CSH, S1STALLD, EATS. The rest of the
 * vSTE (words 4..15, the guest's stage-2 half) is never read: the uAPI
 * (struct iommu_hwpt_arm_smmuv3) carries ste[0..1] only.
 */
export const STE_NESTING_ALLOWED: readonly number[] = [0xffffffff, 0xf80fffff, 0x380000ff, 0];
const STE_EATS = { ABT: 0, TRANS: 1 } as const;

/**
 * Build the physical STE of a nested stream from the guest's vSTE and the
 * host's stage 2, as Linux arm_smmu_validate_vste + arm_smmu_make_nested_domain_ste
 * do: V = 0 gives an abort STE; any bit outside NESTING_ALLOWED, a Config
 * other than abort/bypass/S1, or EATS other than ABT/TRANS is refused (-EIO)
 * and the STE is set to abort, so the stream cannot keep a stale
 * configuration. Config = bypass gives an S2-only STE, Config = S1 a nested
 * STE carrying the guest's allowed stage-1 bits (S1Fmt included: two-level
 * CD tables are the hardware's business; this model has no IDR0.CD2L, so a
 * translation then reports C_BAD_STE). Stage 2 and the VMID always come from
 * the host. Returns null on success.
 */
export function installNestedSte(mem: SharedArrayBuffer, stePa: number, vste: Uint32Array, s2: Stage2Config): NestedSteReject | null {
  const w = new Uint32Array(16);
  let reject: NestedSteReject | null = null;
  let config: number = STE_CFG.ABORT;
  if (getField(vste, STE.V)) {
    const gcfg = getField(vste, STE.CONFIG);
    const eats = getField(vste, STE.EATS);
    if (((vste[0]! & ~STE_NESTING_ALLOWED[0]!) | (vste[1]! & ~STE_NESTING_ALLOWED[1]!)
      | (vste[2]! & ~STE_NESTING_ALLOWED[2]!) | (vste[3]! & ~STE_NESTING_ALLOWED[3]!)) !== 0) reject = 'NOT_ALLOWED';
    else if (gcfg !== STE_CFG.ABORT && gcfg !== STE_CFG.BYPASS && gcfg !== STE_CFG.S1_TRANS) reject = 'BAD_CONFIG';
    else if (eats !== STE_EATS.ABT && eats !== STE_EATS.TRANS) reject = 'BAD_EATS';
    else if (gcfg === STE_CFG.BYPASS) config = STE_CFG.S2_TRANS;
    else if (gcfg === STE_CFG.S1_TRANS) config = STE_CFG.NESTED;
  }
  if (config === STE_CFG.NESTED) {
    for (let k = 0; k < 3; k++) w[k] = vste[k]! & STE_NESTING_ALLOWED[k]!;
  }
  setField(w, STE.V, 1);
  setField(w, STE.CONFIG, config);
  applyStage2(w, s2);
  writeHostWords(mem, stePa, w);
  return reject;
}

/** A VM's stage 2 as the host built it. */
export interface Stage2 extends Stage2Config {
  table: TranslationTable;
}

/**
 * Host builds stage 2 for a VM: IPA [0, ramBytes) -> PA [ramBase, ...),
 * read/write/exec, 4K granule, 39-bit IPA starting at level 1 (SL0 = 1),
 * 2 MiB / 1 GiB blocks where IPA and PA are both aligned. Tables come from
 * `layout` (host-private memory). The table object stays usable for later
 * host changes (tests remap pages, then TLBI_S2_IPA).
 */
export function buildStage2(mem: SharedArrayBuffer, layout: PhysLayout, ramBase: number, ramBytes: number, vmid: number): Stage2 {
  if (layout.mem !== mem) throw new RangeError('buildStage2: layout is over a different memory');
  const table = new TranslationTable(new HostTableStore(layout), 2, { granule: 4096, inputBits: 39 });
  table.map(0, ramBase, ramBytes, PROT.READ | PROT.WRITE | PROT.EXEC);
  // SL0 for 4K: 0 = level 2, 1 = level 1, 2 = level 0.
  return { vmid, ttb: table.root, t0sz: table.t0sz, sl0: 2 - table.startLevel, tg: 0, ps: 5, table };
}
