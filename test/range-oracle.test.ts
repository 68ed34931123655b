// Multi-page range invalidation, every length: the Linux range builders
// (__arm_smmu_tlb_inv_range, arm_smmu_mm_arch_invalidate_secondary_tlbs in
// arm-smmu-v3.c / arm-smmu-v3-sva.c) executed on the model, with the model as
// the oracle: after the commands, every page of the range walks again (no
// stale translation) and the pages just outside it still hit, where the
// command's scope is exact. Granules 4K/16K/64K, RIL on and off (SMMUv3
// §4.4.1.1 range invalidation: TG, NUM, SCALE, TTL).
import { describe, expect, it } from 'vitest';
import { FIELD_COUNT, F, OP } from '../src/fields.ts';
import { decodeWords } from '../src/codec.ts';
import { CMDQ_MAX_TLBI_OPS, svaInvRange, tlbInvRange } from '../src/invalidate.ts';
import { ACCESS, PROT, type Granule } from '../src/model/index.ts';
import { makeVm, makeWorld, type World } from './model-fixture.ts';

const VA = 0x4000_0000;
const ASID = 9;
const VMID = 4;
const PSID = 1;
/** The range starts at this page (not aligned to anything a range could round to). */
const FIRST = 3;

interface Setup { w: World; granule: number }

/** A VM whose VA pages [0, pages) of `granule` all map one data page (the IOTLB caches them one entry each). */
function setup(granule: Granule, pages: number, ril: boolean): Setup {
  const w = makeWorld({ RIL: ril });
  const vm = makeVm(w, { vmid: VMID, psids: [PSID], asid: ASID, granule });
  for (let p = 0; p < pages; p++) vm.pt.map(VA + p * granule, vm.dataIpa, granule, PROT.READ | PROT.WRITE);
  return { w, granule };
}

function walks(s: Setup, page: number): boolean {
  const before = s.w.model.stats.s1Walks;
  // Plain checks in the loops: expect() per probe would dominate the run time.
  const r = s.w.model.translateIova(PSID, -1, VA + page * s.granule, ACCESS.READ);
  if (!('pa' in r)) throw new Error(`page ${page} faulted: ${r.fault}`);
  return s.w.model.stats.s1Walks !== before;
}

/** Execute encoded commands (4 u32 each) on the model, as the host SMMU would after the vSMMU's rewrite. */
function execute(s: Setup, words: Uint32Array, n: number): void {
  const f = new Uint32Array(FIELD_COUNT);
  for (let i = 0; i < n; i++) {
    const ill = decodeWords(words.subarray(4 * i, 4 * i + 4), f, s.w.features);
    const cerror = ill === 0 ? s.w.model.execute(f) : -1;
    if (cerror !== 0) throw new Error(`command ${i} of ${n}: decode ${ill}, CERROR ${cerror}`);
  }
}

/**
 * Prime pages [FIRST-1, FIRST+len], invalidate [FIRST, FIRST+len) with
 * `build`, then: every page in range walks; FIRST-1 hits; FIRST+len hits
 * unless `overshoot` (Linux's non-leaf RIL rounding, see tlbInvRange).
 */
function checkRange(s: Setup, len: number, overshoot: boolean, build: (out: Uint32Array | null) => number): void {
  for (let p = FIRST - 1; p <= FIRST + len; p++) walks(s, p);
  const n = build(null);
  const out = new Uint32Array(4 * n);
  expect(build(out)).toBe(n);
  execute(s, out, n);
  const stale: number[] = [];
  for (let p = FIRST; p < FIRST + len; p++) if (!walks(s, p)) stale.push(p - FIRST);
  expect(stale, `length ${len}: pages left stale`).toEqual([]);
  expect(walks(s, FIRST - 1), `length ${len}: the page before the range was dropped`).toBe(false);
  if (!overshoot) expect(walks(s, FIRST + len), `length ${len}: the page after the range was dropped`).toBe(false);
}

function template(leaf: boolean): Uint32Array {
  const t = new Uint32Array(FIELD_COUNT);
  t[F.OP] = OP.TLBI_NH_VA;
  t[F.ASID] = ASID;
  t[F.VMID] = VMID;
  t[F.LEAF] = leaf ? 1 : 0;
  return t;
}

const MAX_LEN = 300;

describe('tlbInvRange on the model: every length 1..300 granules', () => {
  for (const granule of [4096, 16384, 65536] as const) {
    for (const ril of [true, false]) {
      for (const leaf of [true, false]) {
        it(`${granule / 1024}K pages, RIL ${ril ? 'on' : 'off'}, ${leaf ? 'leaf' : 'non-leaf'}`, () => {
          const s = setup(granule, FIRST + MAX_LEN + 1, ril);
          const pgShift = Math.log2(granule);
          const t = template(leaf);
          const iova = VA + FIRST * granule;
          for (let len = 1; len <= MAX_LEN; len++) {
            // Linux bumps a non-leaf RIL range of 32k+1 pages by one page (TTL=0 with NUM=SCALE=0 is Reserved).
            const overshoot = ril && !leaf && len % 32 === 1;
            checkRange(s, len, overshoot, (out) => tlbInvRange(out, 0, t, iova, 0, len * granule, granule, pgShift, ril));
          }
        });
      }
    }
  }
});

describe('svaInvRange on the model: ranged below CMDQ_MAX_TLBI_OPS pages, ASID-wide from there without RIL', () => {
  const lengths = [...Array.from({ length: 40 }, (_, i) => i + 1), 255, 256, 257, CMDQ_MAX_TLBI_OPS - 1, CMDQ_MAX_TLBI_OPS, CMDQ_MAX_TLBI_OPS + 1];
  for (const ril of [true, false]) {
    it(`RIL ${ril ? 'on' : 'off'}`, () => {
      const max = CMDQ_MAX_TLBI_OPS + 1;
      const s = setup(4096, FIRST + max + 1, ril);
      for (const len of lengths) {
        const asidWide = !ril && len >= CMDQ_MAX_TLBI_OPS;
        // SVA ranges are non-leaf: with RIL a 32k+1 page range is bumped by one page.
        const overshoot = ril && len % 32 === 1;
        if (asidWide) {
          // One TLBI_NH_ASID: the whole ASID goes, the pages outside the range too.
          for (let p = FIRST - 1; p <= FIRST + len; p++) walks(s, p);
          const out = new Uint32Array(4);
          expect(svaInvRange(out, 0, ASID, VA + FIRST * 4096, 0, len * 4096, ril)).toBe(1);
          expect(out[0]! & 0xff).toBe(OP.TLBI_NH_ASID);
          // The vSMMU forces the VMID (arm_vsmmu_convert_user_cmd); here the command goes to the host SMMU as is, so set it.
          out[1] = (out[1]! & 0xffff0000) | VMID;
          execute(s, out, 1);
          for (let p = FIRST - 1; p <= FIRST + len; p++) expect(walks(s, p)).toBe(true);
          continue;
        }
        checkRange(s, len, overshoot, (out) => {
          const n = svaInvRange(out, 0, ASID, VA + FIRST * 4096, 0, len * 4096, ril);
          // svaInvRange builds VMID 0 commands (the guest's view); give them the VM's VMID as the vSMMU would.
          for (let i = 0; out !== null && i < n; i++) out[4 * i + 1] = (out[4 * i + 1]! & 0xffff0000) | VMID;
          return n;
        });
      }
    });
  }

  // arm64's __flush_tlb_range_nosync rounds start down and end up to the page before
  // mmu_notifier_arch_invalidate_secondary_tlbs, so Linux's SVA handler only sees whole pages; svaInvRange takes
  // any byte range and must cover every page it overlaps (a RIL split counts whole pages only).
  for (const ril of [true, false]) {
    it(`a byte range that starts or ends inside a page covers every page it overlaps (RIL ${ril ? 'on' : 'off'})`, () => {
      const s = setup(4096, FIRST + 40 + 1, ril);
      for (let len = 1; len <= 40; len++) {
        for (const [head, tail] of [[1, 0], [0, 1], [0x800, 0x7ff], [0xfff, 0xfff], [0x123, 0]]) {
          const size = len * 4096 - head! - tail!;
          if (size <= 0) continue;
          checkRange(s, len, ril && len % 32 === 1, (out) => {
            const n = svaInvRange(out, 0, ASID, VA + FIRST * 4096 + head!, 0, size, ril);
            for (let i = 0; out !== null && i < n; i++) out[4 * i + 1] = (out[4 * i + 1]! & 0xffff0000) | VMID;
            return n;
          });
        }
      }
    });
  }
});
