// VMSAv8-64 translation tables (long descriptors), as software builds them:
// the guest's stage-1 tables in its RAM (by IPA) and the host's stage-2 tables
// in host memory (by PA). The SMMU model walks the same bits (walk in smmu.ts);
// the constants below are the only place the descriptor bits are named.
//
// A 64-bit descriptor is two u32: lo = bits [31:0], hi = bits [63:32].

import type { TableStore } from './mem.ts';

/** Descriptor bits in the low word. */
export const D_LO = {
  VALID: 1 << 0,
  /** Table descriptor at levels 0-2; page descriptor at level 3 (0 there = reserved, faults). */
  TABLE: 1 << 1,
  /** Stage 1 AP[1]: unprivileged (EL0) access allowed. */
  AP_UNPRIV: 1 << 6,
  /** Stage 1 AP[2]: read-only. */
  AP_RDONLY: 1 << 7,
  /** Stage 2 S2AP[0]: read allowed. */
  S2AP_R: 1 << 6,
  /** Stage 2 S2AP[1]: write allowed. */
  S2AP_W: 1 << 7,
  SH_INNER: 3 << 8,
  AF: 1 << 10,
  /** Stage 1 nG: tagged with the ASID; 0 = global. */
  NG: 1 << 11,
  /** Stage 2 MemAttr = Normal, Inner/Outer Write-Back. */
  S2_MEMATTR_WB: 0xf << 2,
} as const;

/** Descriptor bits in the high word (architecture bit - 32). */
export const D_HI = {
  /** Output address bits [47:32]. */
  OA_MASK: 0xffff,
  /** Upper attributes [63:50]. */
  ATTR_MASK: 0xfffc0000 | 0,
  PXN: 1 << (53 - 32),
  /** Stage 1 UXN; stage 2 XN[1] (execute never at any level). */
  UXN: 1 << (54 - 32),
  PXN_TABLE: 1 << (59 - 32),
  UXN_TABLE: 1 << (60 - 32),
  /** APTable[0]: no unprivileged access below this table. */
  AP_TABLE_NO_UNPRIV: 1 << (61 - 32),
  /** APTable[1]: read-only below this table. */
  AP_TABLE_RDONLY: 1 << (62 - 32),
} as const;

/** Protection requested of a mapping (bitmask; Linux IOMMU_READ/WRITE/...). */
export const PROT = {
  /** Stage 2 read. Stage 1 has no "no read" encoding: every valid stage-1 entry is readable. */
  READ: 1,
  WRITE: 2,
  EXEC: 4,
  /** Stage 1: privileged-only (AP[1] = 0), like Linux IOMMU_PRIV. */
  PRIV: 8,
  /** Stage 1: global (nG = 0), matched by every ASID. */
  GLOBAL: 16,
} as const;

export type Granule = 4096 | 16384 | 65536;

/** log2 of the region one descriptor at `level` maps. */
export function levelShift(pageShift: number, level: number): number {
  return pageShift + (3 - level) * (pageShift - 3);
}

/**
 * Whether a block descriptor is legal at `level` (48-bit OA, no FEAT_LPA):
 * 4K granule: 1 GiB at level 1, 2 MiB at level 2; 16K: 32 MiB at level 2;
 * 64K: 512 MiB at level 2.
 */
export function blockAllowed(pageShift: number, level: number): boolean {
  return level === 2 || (level === 1 && pageShift === 12);
}

/** Start level for an input size (no concatenated tables): as many levels as the input bits need. */
export function startLevelFor(pageShift: number, inputBits: number): number {
  return 4 - Math.ceil((inputBits - pageShift) / (pageShift - 3));
}

/** Output address of a table/page/block descriptor, aligned to `shift`. */
export function descOa(lo: number, hi: number, shift: number): number {
  const oa = (hi & D_HI.OA_MASK) * 4294967296 + ((lo & ~0xfff) >>> 0);
  return oa - (oa % 2 ** shift);
}

const MAP = 0;
const UNMAP = 1;
const PROTECT = 2;

export interface TableOptions {
  granule?: Granule;
  /** Input address bits (stage 1: 64 - T0SZ; stage 2: 64 - S2T0SZ). */
  inputBits?: number;
}

/**
 * One translation regime's tables: stage 1 (guest, over GuestMemory) or
 * stage 2 (host, over HostTableStore). Table pages come from the store's
 * allocator and are never freed (a split block's old descriptor is replaced).
 * Writes follow break-before-make order for a walker on another thread: the
 * word carrying the valid bit is written last when validating, first when
 * invalidating.
 */
export class TranslationTable {
  readonly stage: 1 | 2;
  readonly pageShift: number;
  readonly inputBits: number;
  readonly startLevel: number;
  readonly root: number;
  private readonly rootBits: number;

  constructor(readonly store: TableStore, stage: 1 | 2, opts: TableOptions = {}) {
    const granule = opts.granule ?? 4096;
    this.stage = stage;
    this.pageShift = Math.log2(granule);
    if (![12, 14, 16].includes(this.pageShift)) throw new RangeError(`granule ${granule} is not 4K/16K/64K`);
    this.inputBits = opts.inputBits ?? (stage === 1 ? 48 : 39);
    if (this.inputBits < 25 || this.inputBits > 48) throw new RangeError(`input size ${this.inputBits} bits is outside 25..48`);
    this.startLevel = startLevelFor(this.pageShift, this.inputBits);
    this.rootBits = this.inputBits - levelShift(this.pageShift, this.startLevel);
    this.root = store.allocTable(8 * 2 ** this.rootBits);
  }

  /** T0SZ (stage 1) / S2T0SZ (stage 2) describing this table. */
  get t0sz(): number {
    return 64 - this.inputBits;
  }

  /** Map [va, va+size) to [oa, oa+size), with blocks wherever both sides are aligned. */
  map(va: number, oa: number, size: number, prot: number): void {
    this.check(va, size);
    if (oa % 2 ** this.pageShift !== 0 || oa + size > 2 ** 48) throw new RangeError(`output address 0x${oa.toString(16)} is unaligned or beyond 48 bits`);
    this.apply(MAP, this.root, this.startLevel, va, va + size, oa - va, prot);
  }

  unmap(va: number, size: number): void {
    this.check(va, size);
    this.apply(UNMAP, this.root, this.startLevel, va, va + size, 0, 0);
  }

  /** Change the permissions of whatever is mapped in [va, va+size) (holes stay holes). */
  protect(va: number, size: number, prot: number): void {
    this.check(va, size);
    this.apply(PROTECT, this.root, this.startLevel, va, va + size, 0, prot);
  }

  /**
   * Address (in the table store) of the last-level descriptor that maps
   * `va`, walking the tables as the SMMU does: for a caller that writes
   * the leaf PTEs itself, as a guest driver's unmap loop does. Throws when
   * no table reaches that level there (map the range first).
   */
  leafDescriptor(va: number): number {
    const s = this.store;
    let table = this.root;
    for (let level = this.startLevel; ; level++) {
      const shift = levelShift(this.pageShift, level);
      const bits = level === this.startLevel ? this.rootBits : this.pageShift - 3;
      const d = table + 8 * (Math.floor(va / 2 ** shift) % 2 ** bits);
      if (level === 3) return d;
      const lo = s.read32(d);
      if ((lo & D_LO.VALID) === 0 || (lo & D_LO.TABLE) === 0) throw new RangeError(`no table at level ${level} for 0x${va.toString(16)}`);
      table = descOa(lo, s.read32(d + 4), this.pageShift);
    }
  }

  private check(va: number, size: number): void {
    const g = 2 ** this.pageShift;
    if (!Number.isSafeInteger(va) || !Number.isSafeInteger(size) || va % g !== 0 || size % g !== 0 || size <= 0 || va + size > 2 ** this.inputBits) {
      throw new RangeError(`range [0x${va.toString(16)}, +0x${size.toString(16)}) is not granule-aligned inside the ${this.inputBits}-bit input space`);
    }
  }

  private apply(op: number, table: number, level: number, va: number, end: number, delta: number, prot: number): void {
    const shift = levelShift(this.pageShift, level);
    const entrySize = 2 ** shift;
    const entries = 2 ** (level === this.startLevel ? this.rootBits : this.pageShift - 3);
    const s = this.store;
    for (let a = va; a < end;) {
      const entryVa = a - (a % entrySize);
      const entryEnd = entryVa + entrySize;
      const ce = Math.min(end, entryEnd);
      const d = table + 8 * ((entryVa / entrySize) % entries);
      const lo = s.read32(d);
      const hi = s.read32(d + 4);
      const full = a === entryVa && ce === entryEnd;
      const valid = (lo & D_LO.VALID) !== 0;
      const isTable = level < 3 && (lo & D_LO.TABLE) !== 0;
      const leafOk = level === 3 || blockAllowed(this.pageShift, level);
      if (op === UNMAP && full) {
        this.writeDesc(d, 0, 0);
      } else if (op === MAP && full && leafOk && (entryVa + delta) % entrySize === 0) {
        this.writeLeaf(d, level, entryVa + delta, prot);
      } else if (op === PROTECT && full && valid && !isTable) {
        this.writeLeaf(d, level, descOa(lo, hi, shift), prot);
      } else if (level < 3 && (valid || op === MAP)) {
        let next: number;
        if (isTable) {
          next = descOa(lo, hi, this.pageShift);
        } else {
          next = s.allocTable(2 ** this.pageShift);
          if (valid) this.splitBlock(next, level + 1, lo, hi, descOa(lo, hi, shift));
          this.writeDesc(d, (next % 4294967296) | D_LO.VALID | D_LO.TABLE, Math.floor(next / 4294967296));
        }
        this.apply(op, next, level + 1, a, ce, delta, prot);
      }
      a = ce;
    }
  }

  /** Fill a new next-level table with entries equal to the block it replaces. */
  private splitBlock(table: number, level: number, lo: number, hi: number, oa: number): void {
    const childSize = 2 ** levelShift(this.pageShift, level);
    const attrLo = (lo & 0xfff & ~D_LO.TABLE) | (level === 3 ? D_LO.TABLE : 0);
    const attrHi = hi & D_HI.ATTR_MASK;
    const n = 2 ** (this.pageShift - 3);
    for (let i = 0; i < n; i++) {
      const o = oa + i * childSize;
      this.store.write32(table + 8 * i + 4, attrHi | Math.floor(o / 4294967296));
      this.store.write32(table + 8 * i, (attrLo | (o % 4294967296)) >>> 0);
    }
  }

  private writeLeaf(d: number, level: number, oa: number, prot: number): void {
    let lo = D_LO.VALID | D_LO.AF | D_LO.SH_INNER | (level === 3 ? D_LO.TABLE : 0);
    let hi = 0;
    if (this.stage === 1) {
      if (!(prot & PROT.WRITE)) lo |= D_LO.AP_RDONLY;
      if (!(prot & PROT.PRIV)) lo |= D_LO.AP_UNPRIV;
      if (!(prot & PROT.GLOBAL)) lo |= D_LO.NG;
      if (!(prot & PROT.EXEC)) hi |= D_HI.UXN | D_HI.PXN;
    } else {
      lo |= D_LO.S2_MEMATTR_WB;
      if (prot & PROT.READ) lo |= D_LO.S2AP_R;
      if (prot & PROT.WRITE) lo |= D_LO.S2AP_W;
      if (!(prot & PROT.EXEC)) hi |= D_HI.UXN;
    }
    this.writeDesc(d, (lo | (oa % 4294967296)) >>> 0, hi | Math.floor(oa / 4294967296));
  }

  private writeDesc(d: number, lo: number, hi: number): void {
    if (lo & D_LO.VALID) {
      this.store.write32(d + 4, hi);
      this.store.write32(d, lo >>> 0);
    } else {
      this.store.write32(d, lo >>> 0);
      this.store.write32(d + 4, hi);
    }
  }
}
