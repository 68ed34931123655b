// The Linux guest driver's invalidation command builders (arm-smmu-v3.c,
// v6.18): the range TLBI splitter, the SVA invalidate-all fallback and the
// ATC_INV span. Pure; they write commands into a caller's Uint32Array and
// allocate nothing. Addresses are (lo, hi) u32 pairs; sizes are byte counts
// as numbers (exact up to 2^53).

import { ATC_INV_SIZE_ALL, buildAtcInv, buildTlbiNhAsid, encodeWords } from './codec.ts';
import { ArgumentError } from './errors.ts';
import type { SmmuFeatures } from './features.ts';
import { F, FIELD_COUNT, OP } from './fields.ts';

/** Linux CMDQ_MAX_TLBI_OPS = 1 << (PAGE_SHIFT - 3) for 4 KiB pages. */
export const CMDQ_MAX_TLBI_OPS = 512;
const PAGE_SHIFT = 12;
const PAGE_SIZE = 1 << PAGE_SHIFT;
const TWO_32 = 2 ** 32;

const cmd = new Uint32Array(FIELD_COUNT);

/** __ffs for an integer 1 <= n < 2^53. */
function ffs(n: number): number {
  const lo = n % TWO_32;
  if (lo !== 0) return 31 - Math.clz32(lo & -lo);
  const hi = Math.floor(n / TWO_32);
  return 63 - Math.clz32(hi & -hi);
}

/**
 * __arm_smmu_tlb_inv_range: the commands invalidating [iova, iova + size).
 * `template` is an F record with OP (TLBI_NH_VA, TLBI_EL2_VA, TLBI_S2_IPA...),
 * ASID/VMID and LEAF set, like Linux's struct arm_smmu_cmdq_ent; `granule`
 * is the leaf size (bytes, a power of two), `pgShift` the log2 of the
 * domain's smallest page size (12, 14, 16), `ril` SMMU_IDR3.RIL.
 * `ttlHint` = false leaves TTL 0 ("any level") on leaf commands too: for a
 * caller that does not know whether the range holds pages or blocks, since a
 * TTL naming the wrong level lets the SMMU keep the entry (Arm IHI 0070
 * §4.4.1.1: TTL is a hint the SMMU may use to skip other levels).
 *
 * `size` is a whole number of 2^pgShift pages (ArgumentError otherwise).
 * Writes the commands to out[at..] (4 u32 each) and returns how many; with
 * out = null it only counts them, to size the buffer.
 */
export function tlbInvRange(
  out: Uint32Array | null, at: number, template: Uint32Array,
  iovaLo: number, iovaHi: number, size: number, granule: number, pgShift: number, ril: boolean, ttlHint = true,
): number {
  // Linux's callers hand whole pages (io-pgtable's gather, arm64's rounded SVA range; svaInvRange and
  // tlbInvRangeAsid round out): a RIL split counts whole pages, so a partial one would go uninvalidated.
  if (!(size >= 0 && size % 2 ** pgShift === 0)) throw new ArgumentError('size', `must be a whole number of 2^${pgShift}-byte pages, got ${size}`);
  cmd.set(template);
  cmd[F.TG] = cmd[F.TTL] = cmd[F.NUM] = cmd[F.SCALE] = 0;
  let invRange = granule;
  let numPages = 0;
  if (ril) {
    numPages = Math.floor(size / 2 ** pgShift);
    cmd[F.TG] = (pgShift - 10) / 2;
    if (cmd[F.LEAF] && ttlHint) cmd[F.TTL] = 4 - Math.floor((Math.log2(granule) - 3) / (pgShift - 3));
    // TTL 0 (non-leaf, or no hint): a lone page would be the Reserved NUM=SCALE=TTL=0 combination.
    else if (numPages % 32 === 1) numPages++;
  }
  let lo = iovaLo >>> 0;
  let hi = iovaHi >>> 0;
  let left = size;
  let n = 0;
  while (left > 0) {
    if (ril) {
      // numPages reaches 0 with left (whole pages; less the non-leaf bump's page when there was one).
      const scale = ffs(numPages);
      const num = Math.floor(numPages / 2 ** scale) % 32;
      cmd[F.SCALE] = scale;
      cmd[F.NUM] = num - 1;
      invRange = num * 2 ** (scale + pgShift);
      numPages -= num * 2 ** scale;
    }
    if (out !== null) {
      if (at + 4 > out.length) throw new RangeError(`out holds ${n} commands; size it with tlbInvRange(null, ...)`);
      cmd[F.ADDR_LO] = lo;
      cmd[F.ADDR_HI] = hi;
      encodeWords(cmd, out, at);
      at += 4;
    }
    n++;
    const sum = lo + (invRange % TWO_32);
    lo = sum >>> 0;
    hi = (hi + Math.floor(invRange / TWO_32) + (sum >= TWO_32 ? 1 : 0)) >>> 0;
    left -= invRange;
  }
  return n;
}

/** Translation granules a stage-1 table may use (TG0: 4K, 16K, 64K), the only `granule`s tlbInvRangeAsid takes. */
export const GRANULES: readonly number[] = [4096, 16384, 65536];
/** Input address bits of a stage-1 VA (VA_BITS = 48, T0SZ = 16): the range tlbInvRangeAsid accepts. */
export const VA_BITS = 48;

/**
 * Does __arm_smmu_tlb_inv_range's RIL split of `numPages` use only SCALEs the
 * field can hold? Each command takes the 5-bit window of the page count at
 * __ffs(num_pages); 2^36 pages (all of a 48-bit space in 4K pages) would need
 * SCALE = 36, an illegal command. At most 11 rounds (a page count < 2^53).
 */
function rilSplitFits(numPages: number, maxScale: number): boolean {
  while (numPages > 0) {
    const scale = ffs(numPages);
    if (scale > maxScale) return false;
    numPages -= (Math.floor(numPages / 2 ** scale) % 32) * 2 ** scale;
  }
  return true;
}

const asidTemplate = new Uint32Array(FIELD_COUNT);
const nhAsidScratch = new Uint32Array(4);

/** The whole-ASID fallback: one TLBI_NH_ASID at out[at..] (counted only when out is null). */
function nhAsid(out: Uint32Array | null, at: number, asid: number): number {
  if (out !== null) {
    if (at + 4 > out.length) throw new RangeError('out holds no command');
    buildTlbiNhAsid(nhAsidScratch, asid, 0);
    out.set(nhAsidScratch, at);
  }
  return 1;
}

/**
 * The guest driver's stage-1 unmap invalidation, Linux arm_smmu_tlb_inv_range_asid
 * -> __arm_smmu_tlb_inv_range (TLBI_NH_VA, then the caller's CMD_SYNC): every
 * `granule` page overlapping [iova, iova + size) of `asid`, the range rounded
 * out to the granule (as io-pgtable's iommu_iotlb_gather hands Linux whole
 * pages). TG = the granule. TTL stays 0 even for a leaf-only invalidation:
 * Linux passes the size of the leaf it unmapped and so knows the level, but
 * this helper only knows the granule, and a range may hold 2 MiB (or larger)
 * blocks, which a TTL of 3 would leave cached.
 *
 * Where a range cannot say it, one TLBI_NH_ASID (the whole ASID; always safe)
 * instead: without RIL from CMDQ_MAX_TLBI_OPS pages on, as SVA's
 * arm_smmu_mm_arch_invalidate_secondary_tlbs does (io-pgtable's DMA path
 * has no such fallback and would send one TLBI per page); with RIL when the
 * split would need a SCALE beyond the field (2^36 pages: a whole 48-bit space).
 *
 * Arguments are checked before anything is written: ArgumentError (a
 * RangeError) naming the argument. Writes to out[at..] and returns the
 * command count; out = null only counts.
 */
export function tlbInvRangeAsid(
  out: Uint32Array | null, at: number, asid: number, iova: number, size: number, granule: number, leaf: boolean,
  features: SmmuFeatures,
): number {
  const asidMax = features.ASID16 ? 0xffff : 0xff;
  if (!Number.isInteger(asid) || asid < 0 || asid > asidMax) {
    throw new ArgumentError('asid', `must be an integer in 0..${asidMax} (IDR0.ASID16=${features.ASID16 ? 1 : 0}), got ${asid}`);
  }
  if (!GRANULES.includes(granule)) throw new ArgumentError('granule', `must be 4096, 16384 or 65536 (a stage-1 TG0), got ${granule}`);
  if (!Number.isSafeInteger(iova) || iova < 0 || iova >= 2 ** VA_BITS) {
    throw new ArgumentError('iova', `must be an integer address in [0, 2^${VA_BITS}), got ${iova}`);
  }
  if (!Number.isSafeInteger(size) || size <= 0 || iova + size > 2 ** VA_BITS) {
    throw new ArgumentError('size', `must be a whole number of bytes > 0 with iova + size <= 2^${VA_BITS}, got ${size}`);
  }
  if (typeof leaf !== 'boolean') throw new ArgumentError('leaf', `must be a boolean, got ${String(leaf)}`);
  const start = iova - (iova % granule);
  const pages = Math.ceil((iova + size) / granule) - start / granule;
  const pgShift = Math.log2(granule);
  const fits = features.RIL
    ? rilSplitFits(pages % 32 === 1 ? pages + 1 : pages, features.DS ? 63 : 31)
    : pages < CMDQ_MAX_TLBI_OPS;
  if (!fits) return nhAsid(out, at, asid);
  const t = asidTemplate;
  t.fill(0);
  t[F.OP] = OP.TLBI_NH_VA;
  t[F.ASID] = asid;
  t[F.LEAF] = leaf ? 1 : 0;
  return tlbInvRange(out, at, t, start % TWO_32, Math.floor(start / TWO_32), pages * granule, granule, pgShift, features.RIL, false);
}

const svaTemplate = new Uint32Array(FIELD_COUNT);

/**
 * arm_smmu_mm_arch_invalidate_secondary_tlbs (SVA): every 4 KiB page
 * overlapping [iova, iova + size). Without RIL, a range of CMDQ_MAX_TLBI_OPS
 * pages or more, and size 0 (the whole address space), become one
 * TLBI_NH_ASID; otherwise a non-leaf 4 KiB range. Returns the number of
 * commands written to out[at..].
 */
export function svaInvRange(out: Uint32Array | null, at: number, asid: number, iovaLo: number, iovaHi: number, size: number, ril: boolean): number {
  // Rounded out to whole pages, as arm64's __flush_tlb_range_nosync hands them to the notifier (start rounded down,
  // end up): a RIL split counts whole pages, and a per-page walk from an unaligned start stops a page short.
  const head = (iovaLo >>> 0) % PAGE_SIZE;
  const bytes = Math.ceil((head + size) / PAGE_SIZE) * PAGE_SIZE;
  if (size === 0 || (!ril && bytes >= CMDQ_MAX_TLBI_OPS * PAGE_SIZE)) return nhAsid(out, at, asid);
  svaTemplate.fill(0);
  svaTemplate[F.OP] = OP.TLBI_NH_VA;
  svaTemplate[F.ASID] = asid;
  return tlbInvRange(out, at, svaTemplate, (iovaLo >>> 0) - head, iovaHi, bytes, PAGE_SIZE, PAGE_SHIFT, ril);
}

/**
 * arm_smmu_atc_inv_to_cmd plus the caller's SID: one ATC_INV covering
 * [iova, iova + size) with the smallest aligned power-of-two span of 4 KiB
 * pages; size 0 invalidates everything. SSV is set for a non-zero SSID.
 */
export function atcInvToCmd(u: Uint32Array, sid: number, ssid: number, iovaLo: number, iovaHi: number, size: number): void {
  const ssv = ssid !== 0 ? 1 : 0;
  if (size === 0) {
    buildAtcInv(u, sid, ssid, ssv, 0, ATC_INV_SIZE_ALL, 0, 0);
    return;
  }
  // Page numbers are below 2^52, so doubles hold them exactly.
  const first = (iovaHi >>> 0) * 2 ** 20 + ((iovaLo >>> 0) >>> PAGE_SHIFT);
  const last = first + Math.floor(((iovaLo & (PAGE_SIZE - 1)) + size - 1) / PAGE_SIZE);
  const xHi = Math.floor(first / TWO_32) ^ Math.floor(last / TWO_32);
  const xLo = (first % TWO_32) ^ (last % TWO_32);
  const log2Span = xHi !== 0 ? 64 - Math.clz32(xHi) : 32 - Math.clz32(xLo);
  const start = Math.floor(first / 2 ** log2Span) * 2 ** log2Span;
  buildAtcInv(u, sid, ssid, ssv, 0, log2Span, (start % 2 ** 20) * PAGE_SIZE, Math.floor(start / 2 ** 20));
}
