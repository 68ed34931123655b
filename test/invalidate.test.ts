import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeCommand, encodeCommand, type Command } from '../src/codec.ts';
import { ArgumentError } from '../src/errors.ts';
import { makeFeatures } from '../src/features.ts';
import { F, FIELD_COUNT, OP } from '../src/fields.ts';
import { CMDQ_MAX_TLBI_OPS, atcInvToCmd, svaInvRange, tlbInvRange } from '../src/invalidate.ts';
import { thrown } from './doorbell-helpers.ts';

interface Vector { name: string; kind: string; words: [string, string] }
const vectors = JSON.parse(readFileSync(new URL('./fixtures/smmu-vectors.json', import.meta.url), 'utf8')) as Vector[];
const vectorWords = (prefix: string): [bigint, bigint][] =>
  vectors.filter((v) => v.name.startsWith(prefix)).map((v) => [BigInt(v.words[0]), BigInt(v.words[1])]);

const wordsAt = (out: Uint32Array, i: number): [bigint, bigint] => [
  (BigInt(out[4 * i + 1]!) << 32n) | BigInt(out[4 * i]!),
  (BigInt(out[4 * i + 3]!) << 32n) | BigInt(out[4 * i + 2]!),
];

function template(op: number, asid: number, vmid: number, leaf: number): Uint32Array {
  const t = new Uint32Array(FIELD_COUNT);
  t[F.OP] = op;
  t[F.ASID] = asid;
  t[F.VMID] = vmid;
  t[F.LEAF] = leaf;
  return t;
}

function run(t: Uint32Array, iova: bigint, size: number, granule: number, pgShift: number, ril: boolean): [bigint, bigint][] {
  const n = tlbInvRange(null, 0, t, Number(iova & 0xffffffffn), Number(iova >> 32n), size, granule, pgShift, ril);
  const out = new Uint32Array(4 * n);
  expect(tlbInvRange(out, 0, t, Number(iova & 0xffffffffn), Number(iova >> 32n), size, granule, pgShift, ril)).toBe(n);
  return Array.from({ length: n }, (_, i) => wordsAt(out, i));
}

const K = 4096;
describe('__arm_smmu_tlb_inv_range against the [cmd k] vector groups', () => {
  // Each group: the vector name prefix, the Linux call that produced it, and
  // any commands after the ones the vector file lists (worked out by hand).
  const groups: { prefix: string; t: Uint32Array; iova: bigint; size: number; granule: number; pgShift: number; ril: boolean; more?: Command[] }[] = [
    { prefix: 'TLBI_NH_VA RIL 16x4K leaf', t: template(OP.TLBI_NH_VA, 0x22, 0, 1), iova: 0x10000n, size: 16 * K, granule: K, pgShift: 12, ril: true },
    { prefix: 'TLBI_NH_VA RIL 2MB block', t: template(OP.TLBI_NH_VA, 1, 0, 1), iova: 0x40000000n, size: 2 << 20, granule: 2 << 20, pgShift: 12, ril: true },
    {
      prefix: 'TLBI_NH_VA RIL 35x4K leaf', t: template(OP.TLBI_NH_VA, 7, 0, 1), iova: 0n, size: 35 * K, granule: K, pgShift: 12, ril: true,
      // 35 = 0b100011: 3 pages at SCALE 0, then 32 pages as NUM=0 SCALE=5 at page 3.
      more: [{ op: 'TLBI_NH_VA', asid: 7, num: 0, scale: 5, leaf: 1, ttl: 3, tg: 1, addr: 0x3000n }],
    },
    { prefix: 'TLBI_NH_VA RIL 33x4K non-leaf', t: template(OP.TLBI_NH_VA, 3, 0, 0), iova: 0x100000n, size: 33 * K, granule: K, pgShift: 12, ril: true },
    { prefix: 'TLBI_NH_VA RIL 1MB 64K-granule', t: template(OP.TLBI_NH_VA, 4, 0, 1), iova: 0x1000000n, size: 1 << 20, granule: 65536, pgShift: 16, ril: true },
    { prefix: 'TLBI_NH_VA no RIL 3x4K leaf', t: template(OP.TLBI_NH_VA, 2, 0, 1), iova: 0x7000n, size: 3 * K, granule: K, pgShift: 12, ril: false },
    { prefix: 'TLBI_EL2_VA RIL 8x4K leaf', t: template(OP.TLBI_EL2_VA, 0x55, 0, 1), iova: 0x400000n, size: 8 * K, granule: K, pgShift: 12, ril: true },
    { prefix: 'TLBI_S2_IPA RIL 4MB of 2M blocks', t: template(OP.TLBI_S2_IPA, 0, 0xffff, 1), iova: 0x80000000n, size: 4 << 20, granule: 2 << 20, pgShift: 12, ril: true },
  ];
  it('covers every multi-command vector group', () => {
    const names = vectors.filter((v) => v.name.includes('[cmd ')).map((v) => v.name);
    for (const n of names) expect(groups.some((g) => n.startsWith(g.prefix))).toBe(true);
  });
  for (const g of groups) {
    it(g.prefix, () => {
      const expected = [...vectorWords(g.prefix), ...(g.more ?? []).map((c) => encodeCommand(c))];
      expect(expected.length).toBeGreaterThan(0);
      const got = run(g.t, g.iova, g.size, g.granule, g.pgShift, g.ril);
      expect(got).toEqual(expected);
      for (const w of got) decodeCommand(w, { RIL: g.ril });
    });
  }
  it('a lone non-leaf page is bumped to two so it is not the Reserved combination', () => {
    const [w, ...rest] = run(template(OP.TLBI_NH_VA, 1, 0, 0), 0x5000n, K, K, 12, true);
    expect(rest).toEqual([]);
    expect(decodeCommand(w!)).toMatchObject({ num: 0, scale: 1, ttl: 0, tg: 1, addr: 0x5000n });
  });
  it('carries the address across the 32-bit boundary', () => {
    const got = run(template(OP.TLBI_NH_VA, 1, 0, 1), 0xffffe000n, 2 * K, K, 12, false);
    expect(got.map((w) => decodeCommand(w).addr)).toEqual([0xffffe000n, 0xfffff000n]);
    const got2 = run(template(OP.TLBI_NH_VA, 1, 0, 1), 0xfffff000n, 35 * K, K, 12, true);
    expect(got2.map((w) => decodeCommand(w).addr)).toEqual([0xfffff000n, 0x100002000n]);
  });
  it('refuses a size that is not whole pages of pgShift (the RIL split counts whole pages), and takes size 0 as no command', () => {
    const t = template(OP.TLBI_NH_VA, 1, 0, 1);
    for (const ril of [true, false]) {
      for (const [size, pgShift] of [[100, 12], [K + 1, 12], [K, 14], [-K, 12], [Number.NaN, 12]] as const) {
        const err = thrown(() => tlbInvRange(null, 0, t, 0, 0, size, K, pgShift, ril));
        expect(err).toBeInstanceOf(ArgumentError);
        expect((err as ArgumentError).message).toBe(`size must be a whole number of 2^${pgShift}-byte pages, got ${size}`);
      }
      expect(tlbInvRange(null, 0, t, 0, 0, 0, K, 12, ril)).toBe(0);
      expect(tlbInvRange(null, 0, t, 0, 0, 4 * K, 4 * K, 14, ril)).toBe(1);
    }
  });
  it('refuses to write past the end of out', () => {
    const t = template(OP.TLBI_NH_VA, 1, 0, 1);
    expect(() => tlbInvRange(new Uint32Array(8), 0, t, 0, 0, 3 * K, K, 12, false)).toThrow(
      new RangeError('out holds 2 commands; size it with tlbInvRange(null, ...)'),
    );
  });
  it('every command of a RIL split is legal and together they cover exactly the pages (leaf)', () => {
    const feat = makeFeatures({ RIL: true });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1 << 20 }), fc.integer({ min: 0, max: 0xfffff }), (pages, page) => {
        const got = run(template(OP.TLBI_NH_VA, 1, 0, 1), BigInt(page) * 4096n, pages * K, K, 12, true);
        let next = BigInt(page) * 4096n;
        let total = 0;
        for (const w of got) {
          const c = decodeCommand(w, feat);
          expect(c.addr).toBe(next);
          const span = (c.num! + 1) * 2 ** c.scale!;
          total += span;
          next += BigInt(span) * 4096n;
        }
        expect(total).toBe(pages);
        // One command per non-zero 5-bit window of the page count.
        expect(got.length).toBeLessThanOrEqual(5);
      }),
      { numRuns: 10000 },
    );
  });
});

describe('SVA invalidation', () => {
  const one = (size: number, ril: boolean): [bigint, bigint][] => {
    const out = new Uint32Array(4 * 600);
    const n = svaInvRange(out, 0, 9, 0x200000, 0, size, ril);
    return Array.from({ length: n }, (_, i) => wordsAt(out, i));
  };
  it('without RIL, CMDQ_MAX_TLBI_OPS pages become one TLBI_NH_ASID', () => {
    expect(CMDQ_MAX_TLBI_OPS).toBe(512);
    expect(one(512 * K, false)).toEqual([encodeCommand({ op: 'TLBI_NH_ASID', asid: 9 })]);
    const below = one(511 * K, false);
    expect(below.length).toBe(511);
    expect(decodeCommand(below[510]!, { RIL: false })).toMatchObject({ op: 'TLBI_NH_VA', asid: 9, leaf: 0, addr: 0x200000n + 510n * 4096n });
  });
  it('with RIL, a large range stays a range; size 0 is invalidate-all', () => {
    expect(one(512 * K, true)).toEqual([encodeCommand({ op: 'TLBI_NH_VA', asid: 9, tg: 1, scale: 9, addr: 0x200000n })]);
    expect(one(0, true)).toEqual([encodeCommand({ op: 'TLBI_NH_ASID', asid: 9 })]);
  });
});

describe('arm_smmu_atc_inv_to_cmd', () => {
  const atc = (sid: number, ssid: number, iova: bigint, size: number): [bigint, bigint] => {
    const u = new Uint32Array(4);
    atcInvToCmd(u, sid, ssid, Number(iova & 0xffffffffn), Number(iova >> 32n), size);
    return wordsAt(u, 0);
  };
  it('the ATC vectors', () => {
    expect([atc(2049, 0x12345, 0x8000n, 4 * K)]).toEqual(vectorWords('ATC_INV SSV=1 ssid=0x12345 pages [8;11]'));
    expect([atc(256, 0, 0n, 0)]).toEqual(vectorWords('ATC_INV invalidate-all (size=52'));
  });
  it('pages [7;10] span 16 pages at page 0 (smmu-facts §3)', () => {
    expect(decodeCommand(atc(1, 0, 7n * 4096n, 4 * K))).toMatchObject({ size: 4, addr: 0n, ssv: 0 });
  });
  it('one page is Size 0 at that page; unaligned starts count their page', () => {
    expect(decodeCommand(atc(1, 0, 0x7000n, 1))).toMatchObject({ size: 0, addr: 0x7000n });
    expect(decodeCommand(atc(1, 0, 0x7fffn, 2))).toMatchObject({ size: 4, addr: 0n });
  });
  it('the span always covers the range, aligned, for high addresses too', () => {
    fc.assert(
      // Ranges stay inside the 64-bit address space, as a driver's do.
      fc.property(fc.bigInt(0n, (1n << 52n) - (1n << 29n)), fc.integer({ min: 1, max: 2 ** 40 }), (page, size) => {
        const iova = page * 4096n + BigInt(size % 4096);
        const c = decodeCommand(atc(1, 0, iova, size));
        const span = 1n << BigInt(c.size! + 12);
        expect(c.addr! % span).toBe(0n);
        expect(c.addr! <= iova).toBe(true);
        expect(c.addr! + span >= iova + BigInt(size)).toBe(true);
        // Minimal (fls_long(page_start ^ page_end)): the range crosses the span's midpoint, so neither aligned half
        // would do.
        const mid = c.addr! + span / 2n;
        if (c.size! > 0) expect(iova < mid && iova + BigInt(size) > mid, `span 2^${c.size} pages at ${c.addr}`).toBe(true);
      }),
      { numRuns: 10000 },
    );
  });
});

describe('range commands beyond 4 GiB', () => {
  it('a RIL chunk of 2^32 bytes or more carries into ADDR_HI for the next command', () => {
    // 3 * 2^20 + 2^25 pages of 4 KiB: NUM=3 SCALE=20 (3 * 4 GiB) first, then NUM=1 SCALE=25 at 12 GiB.
    const t = template(OP.TLBI_NH_VA, 1, 0, 1);
    const size = (3 * 2 ** 20 + 2 ** 25) * K;
    const cmds = run(t, 0n, size, K, 12, true).map((w) => decodeCommand(w));
    expect(cmds.map((c) => [c.num, c.scale, c.addr])).toEqual([[2, 20, 0n], [0, 25, 3n << 32n]]);
  });

  it('svaInvRange refuses an out without room for its one TLBI_NH_ASID', () => {
    expect(() => svaInvRange(new Uint32Array(4), 1, 7, 0, 0, 0, false)).toThrow(/out holds no command/);
    const out = new Uint32Array(8);
    expect(svaInvRange(out, 4, 7, 0, 0, 0, false)).toBe(1);
    expect(decodeCommand(wordsAt(out, 1))).toMatchObject({ op: 'TLBI_NH_ASID', asid: 7 });
  });
});
