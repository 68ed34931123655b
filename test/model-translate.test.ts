// The model's translation path against the architecture, one rule per test:
// which STE and CD fields make a configuration illegal (C_BAD_STE, C_BAD_CD),
// what a SubstreamID selects (S1CDMax, S1DSS), what a walk faults on
// (F_TRANSLATION, F_ACCESS, F_ADDR_SIZE, F_WALK_EABT, F_CD_FETCH) and at which
// stage and level, what permissions a leaf and its tables grant, and what the
// ATC does. SMMUv3 (IHI 0070) §5.2 STE, §5.4 CD, §3.9 SubstreamID, §3.13 ATS,
// §7.3 event records; VMSAv8-64 descriptors as Linux io-pgtable-arm writes them.
// QEMU hw/arm/smmuv3.c decode_ste / decode_cd / smmu_ptw_64 check the same
// fields. Streams here are stage-1 only (STE.Config = S1_TRANS, CD and tables
// in host memory), stage-2 only, bypass, or nested (test/model-fixture.ts).
import { describe, expect, test } from 'vitest';
import {
  ACCESS, CD, D_HI, D_LO, HostTableStore, descOa, levelShift, PROT, S1DSS, STE, STE_CFG, T_OUT, TRANSLATE_OUT_LEN, TranslationTable,
  buildStage2, encodeCd, encodeSte, writeGuestCd, writeHostWords,
} from '../src/model/index.ts';
import type { SmmuFeatures } from '../src/features.ts';
import { MiB, S1_PSID as PSID, cmd, makeVm, patch, run, s1Stream, small, type Field, type S1, type World } from './model-fixture.ts';

const VA = 0x4000_0000;
const RW = PROT.READ | PROT.WRITE;

const tr = (w: World, va: number | bigint, access: number = ACCESS.READ, ssid = -1, psid = PSID) => w.model.translateIova(psid, ssid, va, access);


/** A small world whose stream PSID translates stage 2 only, through a 2 MiB RAM block mapped at IPA 0 (3 levels). */
function stage2OnlyStream(): { w: ReturnType<typeof small>; ram: number; s2: ReturnType<typeof buildStage2> } {
  const w = small();
  const ram = w.layout.alloc(2 * MiB, 2 * MiB);
  const s2 = buildStage2(w.mem, w.layout, ram, 2 * MiB, 3);
  const stePa = w.layout.alloc(64, 64);
  writeHostWords(w.mem, stePa, encodeSte({ config: STE_CFG.S2_TRANS, s2 }));
  w.model.attachStream(PSID, stePa);
  return { w, ram, s2 };
}
describe('STE validity (SMMUv3 §5.2: C_BAD_STE, never cached)', () => {
  type Patch = [Field, number];
  /** A legal S1 or S2 STE with fields patched: the stream faults C_BAD_STE. Each case is illegal for that one reason. */
  const bad: { name: string; base: 'S1' | 'S2'; p: Patch[]; feat?: Partial<SmmuFeatures> }[] = [
    { name: 'V = 0', base: 'S1', p: [[STE.V, 0]] },
    { name: 'Config = 1 (reserved)', base: 'S1', p: [[STE.CONFIG, 1]] },
    { name: 'Config = 2 (reserved)', base: 'S1', p: [[STE.CONFIG, 2]] },
    { name: 'Config = 3 (reserved)', base: 'S1', p: [[STE.CONFIG, 3]] },
    { name: 'STRW = 1 (EL2 regimes are not modelled)', base: 'S1', p: [[STE.STRW, 1]] },
    { name: 'STRW = 2', base: 'S1', p: [[STE.STRW, 2]] },
    { name: 'S1Fmt = 1 (no IDR0.CD2L)', base: 'S1', p: [[STE.S1FMT, 1]] },
    { name: 'S1Fmt = 2', base: 'S1', p: [[STE.S1FMT, 2]] },
    { name: 'S1CDMax = 21 (SSIDs are 20 bits)', base: 'S1', p: [[STE.S1CDMAX, 21]] },
    { name: 'S1DSS = 3 (reserved) with S1CDMax > 0', base: 'S1', p: [[STE.S1CDMAX, 1], [STE.S1DSS, 3]] },
    { name: 'stage 1 without IDR0.S1P', base: 'S1', p: [], feat: { S1P: false } },
    { name: 'stage 2 without IDR0.S2P', base: 'S2', p: [], feat: { S2P: false } },
    { name: 'S2AA64 = 0', base: 'S2', p: [[STE.S2AA64, 0]] },
    { name: 'S2TG = 3 (reserved)', base: 'S2', p: [[STE.S2TG, 3]] },
    { name: 'S2PS = 7 (reserved)', base: 'S2', p: [[STE.S2PS, 7]] },
    // Each size below has a start level that would give it 1..16 root tables: only the size bound refuses it.
    { name: 'S2T0SZ = 40 (IAS 24 < 25), from level 2', base: 'S2', p: [[STE.S2T0SZ, 40], [STE.S2SL0, 0]] },
    { name: 'S2T0SZ = 15 (IAS 49 > 48), from level 0', base: 'S2', p: [[STE.S2T0SZ, 15], [STE.S2SL0, 2]] },
    { name: 'S2SL0 = 3 (reserved)', base: 'S2', p: [[STE.S2SL0, 3]] },
    // 16K, IAS 48: SL0 = 3 would start at level 0 with one bit left for it, which only FEAT_LPA2 (not modelled) allows.
    { name: 'S2SL0 = 3 with 16K pages and IAS 48', base: 'S2', p: [[STE.S2TG, 2], [STE.S2T0SZ, 16], [STE.S2SL0, 3]] },
    // IAS 35 from level 2 (SL0 = 0): 2^(35-21) = 16384 entries, more than 16 concatenated 512-entry tables.
    { name: 'IAS 35 from level 2 (more than 16 concatenated tables)', base: 'S2', p: [[STE.S2T0SZ, 29], [STE.S2SL0, 0]] },
    // IAS 39 from level 0 (SL0 = 2): a level-0 entry covers 2^39, so the root would have one entry.
    { name: 'IAS 39 from level 0 (start level too shallow)', base: 'S2', p: [[STE.S2SL0, 2]] },
  ];
  for (const c of bad) {
    test(`${c.name}: C_BAD_STE`, () => {
      const w = small(c.feat ?? {});
      const stePa = w.layout.alloc(64, 64);
      const s2 = buildStage2(w.mem, w.layout, w.layout.alloc(2 * MiB, 2 * MiB), 2 * MiB, 3);
      const words = encodeSte(c.base === 'S1' ? { config: STE_CFG.S1_TRANS, s1ContextPtr: 0x1000 } : { config: STE_CFG.S2_TRANS, s2 });
      for (const [f, v] of c.p) patch(words, f, v);
      writeHostWords(w.mem, stePa, words);
      w.model.attachStream(PSID, stePa);
      expect(tr(w, 0x1000)).toMatchObject({ fault: 'C_BAD_STE', stage: 0, level: 0, class: 'IN' });
      // Never cached: the next translation fetches it again.
      tr(w, 0x1000);
      expect(w.model.stats).toMatchObject({ steHits: 0, steMisses: 2 });
    });
  }

  test('the legal neighbours of those values are accepted and cached', () => {
    const w = small();
    const s2 = buildStage2(w.mem, w.layout, w.layout.alloc(2 * MiB, 2 * MiB), 2 * MiB, 3);
    const ok: [string, Patch[]][] = [
      ['S1CDMax = 20', [[STE.S1CDMAX, 20], [STE.S1DSS, S1DSS.BYPASS]]],
      ['S1DSS = 3 with S1CDMax = 0 (ignored)', [[STE.S1DSS, 3]]],
      ['IAS 25 from level 2', [[STE.S2T0SZ, 39], [STE.S2SL0, 0]]],
      ['IAS 48 from level 0', [[STE.S2T0SZ, 16], [STE.S2SL0, 2]]],
      ['IAS 34 from level 2 (16 concatenated tables)', [[STE.S2T0SZ, 30], [STE.S2SL0, 0]]],
      ['IAS 40 from level 0 (two root entries)', [[STE.S2T0SZ, 24], [STE.S2SL0, 2]]],
    ];
    ok.forEach(([name, p], i) => {
      const words = encodeSte(name.startsWith('S1') ? { config: STE_CFG.S1_TRANS, s1ContextPtr: 0x1000 } : { config: STE_CFG.S2_TRANS, s2 });
      for (const [f, v] of p) patch(words, f, v);
      const stePa = w.layout.alloc(64, 64);
      writeHostWords(w.mem, stePa, words);
      w.model.attachStream(10 + i, stePa);
      const hits = w.model.stats.steHits;
      expect(tr(w, 0x1000, ACCESS.READ, -1, 10 + i), name).not.toMatchObject({ fault: 'C_BAD_STE' });
      tr(w, 0x1000, ACCESS.READ, -1, 10 + i);
      expect(w.model.stats.steHits, name).toBe(hits + 1);
    });
  });
});

describe('CD validity (SMMUv3 §5.4: C_BAD_CD; a CD fetch past memory: F_CD_FETCH)', () => {
  const bad: { name: string; f: Field; v: number }[] = [
    { name: 'V = 0', f: CD.V, v: 0 },
    { name: 'AA64 = 0', f: CD.AA64, v: 0 },
    { name: 'TG0 = 3 (reserved)', f: CD.TG0, v: 3 },
    { name: 'IPS = 7 (reserved)', f: CD.IPS, v: 7 },
    { name: 'T0SZ = 40 (VA 24 bits < 25)', f: CD.T0SZ, v: 40 },
    { name: 'T0SZ = 15 (VA 49 bits > 48)', f: CD.T0SZ, v: 15 },
  ];
  for (const c of bad) {
    test(`${c.name}: C_BAD_CD, not cached`, () => {
      const s = s1Stream();
      writeHostWords(s.w.mem, s.cdTable, patch(encodeCd({ asid: 9, ttb0: s.pt.root }), c.f, c.v));
      expect(tr(s.w, VA)).toMatchObject({ fault: 'C_BAD_CD', stage: 1, level: 0, class: 'CD' });
      tr(s.w, VA);
      expect(s.w.model.stats).toMatchObject({ cdHits: 0, cdMisses: 2 });
    });
  }

  test('T0SZ 39 (25-bit VA) and 16 (48-bit VA) bound the input: the last page translates, the next address faults at stage 1, level 0', () => {
    for (const t0sz of [39, 16]) {
      const s = s1Stream();
      const pt = new TranslationTable(new HostTableStore(s.w.layout), 1, { inputBits: 64 - t0sz });
      writeHostWords(s.w.mem, s.cdTable, encodeCd({ asid: 9, ttb0: pt.root, t0sz }));
      const top = 2 ** (64 - t0sz);
      pt.map(top - 0x1000, s.data, 0x1000, RW);
      expect(tr(s.w, top - 0x1000)).toEqual({ pa: s.data, sizeLog2: 12 });
      expect(tr(s.w, top)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1, level: 0, class: 'IN' });
    }
  });

  test('a CD ending at the last byte of host memory is fetched; one past it is F_CD_FETCH', () => {
    const w = small();
    const end = w.mem.byteLength;
    const stePa = w.layout.alloc(64, 64);
    // Two CDs: SSID 0 in the last 64 bytes of memory (all zero: V = 0), SSID 1 past the end.
    writeHostWords(w.mem, stePa, encodeSte({ config: STE_CFG.S1_TRANS, s1ContextPtr: end - 64, s1CdMax: 1, s1Dss: S1DSS.BYPASS }));
    w.model.attachStream(PSID, stePa);
    expect(tr(w, VA, ACCESS.READ, 0)).toMatchObject({ fault: 'C_BAD_CD', stage: 1, class: 'CD' });
    expect(tr(w, VA, ACCESS.READ, 1)).toMatchObject({ fault: 'F_CD_FETCH', stage: 1, level: 0, class: 'CD' });
  });
});

describe('SubstreamIDs (SMMUv3 §3.9, STE.S1CDMax and S1DSS)', () => {
  /** Four CDs (ASIDs 9..12) over one table mapping VA; S1CDMax = 2 (SSIDs 0..3) and the given S1DSS. */
  function ssidStream(dss: number): S1 {
    const s = s1Stream({ ste: { s1CdMax: 2, s1Dss: dss }, cds: 4 });
    s.pt.map(VA, s.data, 0x1000, RW);
    return s;
  }

  test('an SSID selects its own CD: each has its ASID, so NH_ASID of one leaves the others cached', () => {
    const s = ssidStream(S1DSS.SSID0);
    for (const ssid of [1, 2, 3]) expect(tr(s.w, VA, ACCESS.READ, ssid)).toEqual({ pa: s.data, sizeLog2: 12 });
    run(s.w.model, cmd('TLBI_NH_ASID', { asid: 9 + 2, vmid: 0 }));
    const walks = s.w.model.stats.s1Walks;
    for (const ssid of [1, 3]) tr(s.w, VA, ACCESS.READ, ssid);
    expect(s.w.model.stats.s1Walks).toBe(walks);
    tr(s.w, VA, ACCESS.READ, 2);
    expect(s.w.model.stats.s1Walks).toBe(walks + 1);
  });

  test('SSID >= 2^S1CDMax, or an SSID on a stream with S1CDMax = 0: C_BAD_SUBSTREAMID', () => {
    const s = ssidStream(S1DSS.BYPASS);
    expect(tr(s.w, VA, ACCESS.READ, 3)).toHaveProperty('pa');
    expect(tr(s.w, VA, ACCESS.READ, 4)).toMatchObject({ fault: 'C_BAD_SUBSTREAMID', stage: 0, class: 'IN' });
    const one = s1Stream();
    one.pt.map(VA, one.data, 0x1000, RW);
    expect(tr(one.w, VA, ACCESS.READ, -1)).toHaveProperty('pa');
    expect(tr(one.w, VA, ACCESS.READ, 0)).toMatchObject({ fault: 'C_BAD_SUBSTREAMID' });
  });

  test('S1DSS without a SubstreamID: TERMINATE faults F_STREAM_DISABLED, BYPASS skips stage 1, SSID0 uses CD 0', () => {
    const term = ssidStream(S1DSS.TERMINATE);
    expect(tr(term.w, VA)).toMatchObject({ fault: 'F_STREAM_DISABLED', stage: 0, class: 'IN' });
    expect(tr(term.w, VA, ACCESS.READ, 0)).toEqual({ pa: term.data, sizeLog2: 12 });
    const byp = ssidStream(S1DSS.BYPASS);
    // Stage 1 bypassed, no stage 2: the IOVA is the PA (and VA is far past this 8 MiB memory: nothing is walked).
    expect(tr(byp.w, VA)).toEqual({ pa: VA, sizeLog2: 64 });
    expect(byp.w.model.stats.s1Walks).toBe(0);
    expect(tr(byp.w, VA, ACCESS.READ, 0)).toEqual({ pa: byp.data, sizeLog2: 12 });
    const ssid0 = ssidStream(S1DSS.SSID0);
    expect(tr(ssid0.w, VA)).toEqual({ pa: ssid0.data, sizeLog2: 12 });
    // With S1DSS = SSID0, SSID 0 itself is reserved for the no-SSID traffic: F_STREAM_DISABLED (§5.2 S1DSS, §7.3.7).
    expect(tr(ssid0.w, VA, ACCESS.READ, 0)).toMatchObject({ fault: 'F_STREAM_DISABLED', stage: 0, class: 'IN' });
    expect(tr(ssid0.w, VA, ACCESS.READ, 1)).toHaveProperty('pa');
  });
});

describe('STE.Config: abort, bypass, stage 2 only; addresses above 48 bits', () => {
  test('abort: STE_ABORT; bypass: the IOVA is the PA at 4K; an unknown StreamID: C_BAD_STREAMID', () => {
    const w = small();
    const abort = w.layout.alloc(64, 64);
    writeHostWords(w.mem, abort, encodeSte({ config: STE_CFG.ABORT }));
    w.model.attachStream(5, abort);
    expect(tr(w, VA, ACCESS.READ, -1, 5)).toMatchObject({ fault: 'STE_ABORT', stage: 0, level: 0, class: 'IN' });
    const bypass = w.layout.alloc(64, 64);
    writeHostWords(w.mem, bypass, encodeSte({ config: STE_CFG.BYPASS }));
    w.model.attachStream(6, bypass);
    // Above 4 GiB: both PA words are reported.
    const out = new Float64Array(TRANSLATE_OUT_LEN);
    expect(w.model.translate(6, -1, 0x1234_5678, 0xabcd, ACCESS.WRITE, out)).toBe(0);
    expect([out[T_OUT.PA_LO], out[T_OUT.PA_HI], out[T_OUT.SIZE_LOG2]]).toEqual([0x1234_5678, 0xabcd, 12]);
    expect(tr(w, 0, ACCESS.READ, -1, 7)).toMatchObject({ fault: 'C_BAD_STREAMID', stage: 0, class: 'IN' });
  });

  test('at or above 2^48 no stage covers the address: bypass F_ADDR_SIZE, stage 2 only F_TRANSLATION at stage 2, stage 1 at stage 1', () => {
    const w = small();
    const s2 = buildStage2(w.mem, w.layout, w.layout.alloc(2 * MiB, 2 * MiB), 2 * MiB, 3);
    const cfgs = [[STE_CFG.BYPASS, 'F_ADDR_SIZE', 1], [STE_CFG.S2_TRANS, 'F_TRANSLATION', 2], [STE_CFG.S1_TRANS, 'F_TRANSLATION', 1]] as const;
    cfgs.forEach(([config, fault, stage], i) => {
      const stePa = w.layout.alloc(64, 64);
      writeHostWords(w.mem, stePa, encodeSte({ config, s2, s1ContextPtr: 0x1000 }));
      w.model.attachStream(i, stePa);
      expect(tr(w, 2 ** 48, ACCESS.READ, -1, i)).toMatchObject({ fault, stage, level: 0, class: 'IN' });
      // Just below, the stream's own configuration decides: bypass gives the PA, stage 1 reads its (empty) CD.
      if (config !== STE_CFG.S2_TRANS) expect(tr(w, 2 ** 48 - 0x1000, ACCESS.READ, -1, i)).toMatchObject(config === STE_CFG.BYPASS ? { pa: 2 ** 48 - 0x1000 } : { fault: 'C_BAD_CD' });
    });
  });

  test('stage 2 only: IPA -> PA through the host table; an IPA past S2T0SZ faults at stage 2 with the IPA (both words)', () => {
    const { w, ram } = stage2OnlyStream();
    expect(tr(w, 0x1_2345)).toEqual({ pa: ram + 0x1_2345, sizeLog2: 21 });
    expect(tr(w, 2 * MiB)).toMatchObject({ fault: 'F_TRANSLATION', stage: 2, class: 'IN', ipa: 2 * MiB });
    // The first IPA past IAS 39 (its high word is reported too); the walk would wrap it onto IPA 0.
    const ipa = 2 ** 39;
    expect(tr(w, ipa)).toMatchObject({ fault: 'F_TRANSLATION', stage: 2, level: 0, class: 'IN', ipa });
    expect(w.model.stats.s2Walks).toBe(2);
  });
});

/** PA of the descriptor that maps `va` at `level` in a 4K host table (walking the table descriptors above it). */
function descPa(s: S1, va: number, level: number): number {
  const u = new Uint32Array(s.w.mem);
  let table = s.pt.root;
  for (let l = s.pt.startLevel; ; l++) {
    const d = table + 8 * (Math.floor(va / 2 ** levelShift(12, l)) % 512);
    if (l === level) return d;
    table = descOa(u[d / 4]!, u[d / 4 + 1]!, 12);
  }
}

/** Set and clear bits of a descriptor's low and high words. */
function edit(s: S1, d: number, lo: { set?: number; clear?: number }, hi: { set?: number; clear?: number } = {}): void {
  const u = new Uint32Array(s.w.mem);
  u[d / 4] = ((u[d / 4]! & ~(lo.clear ?? 0)) | (lo.set ?? 0)) >>> 0;
  u[d / 4 + 1] = ((u[d / 4 + 1]! & ~(hi.clear ?? 0)) | (hi.set ?? 0)) >>> 0;
}

describe('stage-1 walk faults (VMSAv8-64; SMMUv3 §7.3 F_TRANSLATION, F_ACCESS, F_ADDR_SIZE, F_WALK_EABT)', () => {
  test('an invalid descriptor faults F_TRANSLATION at its level; a mapped page gives its PA at 4K, a 2 MiB block at 2 MiB', () => {
    const s = s1Stream();
    s.pt.map(VA, s.data, 0x1000, RW);
    s.pt.map(VA + 2 * MiB, s.data + 2 * MiB, 2 * MiB, RW);
    expect(tr(s.w, VA + 0x123)).toEqual({ pa: s.data + 0x123, sizeLog2: 12 });
    expect(tr(s.w, VA + 2 * MiB + 0x1234)).toEqual({ pa: s.data + 2 * MiB + 0x1234, sizeLog2: 21 });
    expect(tr(s.w, VA + 0x1000)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1, level: 3, class: 'IN' });
    expect(tr(s.w, VA + 4 * MiB)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1, level: 2 });
    expect(tr(s.w, VA + 2 ** 30)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1, level: 1 });
    expect(tr(s.w, 2 ** 40)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1, level: 0 });
  });

  test('a level-3 descriptor with bit 1 clear is reserved, a block at level 0 is not allowed at 4K: F_TRANSLATION at that level', () => {
    const s = s1Stream();
    s.pt.map(VA, s.data, 0x2000, RW);
    edit(s, descPa(s, VA + 0x1000, 3), { clear: D_LO.TABLE });
    expect(tr(s.w, VA)).toHaveProperty('pa');
    expect(tr(s.w, VA + 0x1000)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1, level: 3 });
    // The level-0 table descriptor made a block descriptor (bit 1 clear): 512 GiB blocks do not exist.
    edit(s, descPa(s, VA, 0), { clear: D_LO.TABLE });
    run(s.w.model, cmd('TLBI_NH_ALL', { vmid: 0 }));
    expect(tr(s.w, VA)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1, level: 0 });
  });

  test('1 GiB blocks at level 1 with 4K pages; 16K pages have no level-1 block (F_TRANSLATION), a 32 MiB block at level 2', () => {
    const s = s1Stream({ opts: {} });
    s.pt.map(2 ** 30, 0, 2 ** 30, RW);
    expect(tr(s.w, 2 ** 30 + 0x1234)).toEqual({ pa: 0x1234, sizeLog2: 30 });
    const g = s1Stream({ granule: 16384 });
    g.pt.map(2 ** 36, 0, 2 ** 25, RW); // one 32 MiB block at level 2
    expect(tr(g.w, 2 ** 36 + 0x4321)).toEqual({ pa: 0x4321, sizeLog2: 25 });
    // The same output written one level up, as a level-1 block (64 GiB at 16K): not allowed.
    const u = new Uint32Array(g.w.mem);
    const root = g.pt.root;
    const l1table = descOa(u[root / 4]!, u[root / 4 + 1]!, 14);
    const d = l1table + 8 * (Math.floor(2 ** 36 / 2 ** 36) % 2048);
    u[d / 4] = (D_LO.VALID | D_LO.AF | D_LO.SH_INNER) >>> 0;
    u[d / 4 + 1] = 0;
    run(g.w.model, cmd('TLBI_NH_ALL', { vmid: 0 }));
    expect(tr(g.w, 2 ** 36 + 0x4321)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1, level: 1 });
  });

  test('AF = 0 faults F_ACCESS at the leaf level unless CD.AFFD; at stage 2 AFFD does not apply', () => {
    for (const affd of [false, true]) {
      const s = s1Stream({ cd: { affd } });
      s.pt.map(VA, s.data, 0x1000, RW);
      s.pt.map(VA + 2 * MiB, s.data + 2 * MiB, 2 * MiB, RW);
      edit(s, descPa(s, VA, 3), { clear: D_LO.AF });
      edit(s, descPa(s, VA + 2 * MiB, 2), { clear: D_LO.AF });
      if (affd) {
        expect(tr(s.w, VA)).toEqual({ pa: s.data, sizeLog2: 12 });
        expect(tr(s.w, VA + 2 * MiB)).toEqual({ pa: s.data + 2 * MiB, sizeLog2: 21 });
      } else {
        expect(tr(s.w, VA)).toMatchObject({ fault: 'F_ACCESS', stage: 1, level: 3, class: 'IN' });
        expect(tr(s.w, VA + 2 * MiB)).toMatchObject({ fault: 'F_ACCESS', stage: 1, level: 2 });
      }
    }
  });

  test('an output or next-table address at or above 2^IPS faults F_ADDR_SIZE at that level; just below it translates', () => {
    // IPS = 0: 32-bit output.
    const s = s1Stream({ cd: { ips: 0 } });
    s.pt.map(VA, s.data, 0x3000, RW);
    edit(s, descPa(s, VA + 0x1000, 3), { clear: 0xfffff000 }, { set: 1 }); // OA 2^32
    edit(s, descPa(s, VA + 0x2000, 3), { set: 0xfffff000 }); // OA 2^32 - 4K
    expect(tr(s.w, VA + 0x1000)).toMatchObject({ fault: 'F_ADDR_SIZE', stage: 1, level: 3, class: 'IN' });
    expect(tr(s.w, VA + 0x2000)).toEqual({ pa: 2 ** 32 - 0x1000, sizeLog2: 12 });
    // The level-2 table descriptor pointing at exactly 2^32: the walk stops there.
    edit(s, descPa(s, VA, 2), { clear: 0xfffff000 }, { set: 1 });
    expect(tr(s.w, VA)).toMatchObject({ fault: 'F_ADDR_SIZE', stage: 1, level: 2 });
    // IPS = 1: 36 bits; the same 2^32 output is fine.
    const t = s1Stream({ cd: { ips: 1 } });
    t.pt.map(VA, s.data, 0x1000, RW);
    edit(t, descPa(t, VA, 3), { clear: 0xfffff000 }, { set: 1 });
    expect(tr(t.w, VA)).toEqual({ pa: 2 ** 32, sizeLog2: 12 });
  });

  test('a table that ends past host memory: F_WALK_EABT, class TT; the last descriptor of memory is read', () => {
    const w = small();
    const end = w.mem.byteLength;
    const cdPa = w.layout.alloc(64, 64);
    const stePa = w.layout.alloc(64, 64);
    // TTB0 at the last page: level-0 entry 511 is the last 8 bytes of memory (zero: invalid); entry 0 of a TTB0 at the end is past it.
    writeHostWords(w.mem, cdPa, encodeCd({ asid: 9, ttb0: end - 0x1000 }));
    writeHostWords(w.mem, stePa, encodeSte({ config: STE_CFG.S1_TRANS, s1ContextPtr: cdPa }));
    w.model.attachStream(PSID, stePa);
    expect(tr(w, 511 * 2 ** 39)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1, level: 0 });
    writeHostWords(w.mem, cdPa, encodeCd({ asid: 9, ttb0: end }));
    run(w.model, cmd('CFGI_CD', { sid: PSID, ssid: 0 }));
    expect(tr(w, 0)).toMatchObject({ fault: 'F_WALK_EABT', stage: 1, level: 0, class: 'TT' });
  });

  test('CD.EPD0: no walk, F_TRANSLATION at stage 1 level 0', () => {
    const s = s1Stream({ cd: { epd0: true } });
    s.pt.map(VA, s.data, 0x1000, RW);
    expect(tr(s.w, VA)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1, level: 0, class: 'IN' });
    expect(s.w.model.stats.s1Walks).toBe(0);
  });
});

describe('permissions (VMSAv8-64 AP[2:1], UXN, PXN, APTable, UXNTable, PXNTable; stage 2 S2AP, XN)', () => {
  const R = ACCESS.READ;
  const W = ACCESS.WRITE;
  const X = ACCESS.EXEC;
  const P = ACCESS.PRIV;
  /** Which of these accesses a page allows: read, write, exec, each unprivileged then privileged. */
  const ACCESSES = [R, W, X, R | P, W | P, X | P];
  function allowed(s: S1, va: number): boolean[] {
    return ACCESSES.map((a) => {
      // A fresh walk each time: the permissions come from the descriptors, not an earlier entry.
      run(s.w.model, cmd('TLBI_NH_ALL', { vmid: 0 }));
      const r = tr(s.w, va, a);
      if (!('pa' in r)) expect(r).toMatchObject({ fault: 'F_PERMISSION', stage: 1, level: 3 });
      return 'pa' in r;
    });
  }

  test('leaf bits', () => {
    const s = s1Stream();
    s.pt.map(VA, s.data, 0x1000, RW | PROT.EXEC);
    expect(allowed(s, VA)).toEqual([true, true, true, true, true, true]);
    s.pt.protect(VA, 0x1000, PROT.READ | PROT.EXEC); // AP[2] = 1: read-only
    expect(allowed(s, VA)).toEqual([true, false, true, true, false, true]);
    s.pt.protect(VA, 0x1000, RW | PROT.EXEC | PROT.PRIV); // AP[1] = 0: privileged only
    expect(allowed(s, VA)).toEqual([false, false, false, true, true, true]);
    s.pt.protect(VA, 0x1000, RW | PROT.EXEC);
    edit(s, descPa(s, VA, 3), {}, { set: D_HI.UXN });
    expect(allowed(s, VA)).toEqual([true, true, false, true, true, true]);
    edit(s, descPa(s, VA, 3), {}, { clear: D_HI.UXN, set: D_HI.PXN });
    expect(allowed(s, VA)).toEqual([true, true, true, true, true, false]);
  });

  test('table bits restrict every page below them, at any level', () => {
    const cases: [number, number, boolean[]][] = [
      [D_HI.AP_TABLE_RDONLY, 1, [true, false, true, true, false, true]],
      [D_HI.AP_TABLE_NO_UNPRIV, 2, [false, false, false, true, true, true]],
      [D_HI.UXN_TABLE, 0, [true, true, false, true, true, true]],
      [D_HI.PXN_TABLE, 2, [true, true, true, true, true, false]],
    ];
    for (const [bit, level, expected] of cases) {
      const s = s1Stream();
      s.pt.map(VA, s.data, 0x1000, RW | PROT.EXEC);
      edit(s, descPa(s, VA, level), {}, { set: bit });
      expect(allowed(s, VA)).toEqual(expected);
    }
  });

  test('stage 2: S2AP[0] read, S2AP[1] write, XN both privileges; privilege does not matter at stage 2', () => {
    const { w, ram, s2 } = stage2OnlyStream();
    const allowed2 = (): boolean[] => ACCESSES.map((a) => {
      run(w.model, cmd('TLBI_S12_VMALL', { vmid: 3 }));
      const r = tr(w, 0x1000, a);
      if (!('pa' in r)) expect(r).toMatchObject({ fault: 'F_PERMISSION', stage: 2, level: 3, ipa: 0x1000 });
      return 'pa' in r;
    });
    s2.table.map(0x1000, ram + 0x1000, 0x1000, PROT.READ | PROT.WRITE | PROT.EXEC);
    expect(allowed2()).toEqual([true, true, true, true, true, true]);
    s2.table.protect(0x1000, 0x1000, PROT.READ | PROT.EXEC);
    expect(allowed2()).toEqual([true, false, true, true, false, true]);
    s2.table.protect(0x1000, 0x1000, PROT.WRITE | PROT.EXEC);
    expect(allowed2()).toEqual([false, true, true, false, true, true]);
    s2.table.protect(0x1000, 0x1000, PROT.READ | PROT.WRITE);
    expect(allowed2()).toEqual([true, true, false, true, true, false]);
  });

  test('a permission fault from the IOTLB reports the leaf level, without a walk; the entry was cached by the faulting walk', () => {
    const s = s1Stream();
    s.pt.map(VA, s.data, 2 * MiB, PROT.READ);
    // Inside the block, not at its base: the entry is cached at the block's base.
    expect(tr(s.w, VA + 0x3000, W)).toMatchObject({ fault: 'F_PERMISSION', stage: 1, level: 2 });
    const walks = s.w.model.stats.s1Walks;
    expect(tr(s.w, VA + 0x5000, R)).toEqual({ pa: s.data + 0x5000, sizeLog2: 21 });
    expect(tr(s.w, VA + 0x6000, W)).toMatchObject({ fault: 'F_PERMISSION', stage: 1, level: 2 });
    expect(s.w.model.stats.s1Walks).toBe(walks);
  });
});

describe('nested streams: stage 1 then stage 2, combined or split IOTLB entries', () => {
  function nested(combinedNested: boolean) {
    const w = small({}, { combinedNested });
    const vm = makeVm(w, { vmid: 4, psids: [PSID], asid: 9, ramBytes: 4 * MiB });
    return { w, vm };
  }

  for (const combinedNested of [true, false]) {
    const kind = combinedNested ? 'combined' : 'split';
    test(`${kind}: the result is as small as the smaller leaf (a 2 MiB stage-1 block over 4K stage-2 pages), hit or walk`, () => {
      const { w, vm } = nested(combinedNested);
      const ipa = vm.dataIpa; // 2 MiB aligned
      vm.pt.map(VA, ipa, 2 * MiB, RW);
      // The host splits the stage-2 block into pages, one of them elsewhere.
      const moved = w.layout.alloc(0x1000);
      vm.s2.table.map(ipa + 0x3000, moved, 0x1000, RW);
      for (let i = 0; i < 2; i++) {
        expect(tr(w, VA + 0x3010)).toEqual({ pa: moved + 0x10, sizeLog2: 12 });
        expect(tr(w, VA + 0x4010)).toEqual({ pa: vm.gm.paOf(ipa + 0x4010), sizeLog2: 12 });
      }
    });

    test(`${kind}: a read-only stage 2 refuses a write at stage 2 (with the IPA), from a walk and from the IOTLB`, () => {
      const { w, vm } = nested(combinedNested);
      vm.pt.map(VA, vm.dataIpa, 0x1000, RW);
      vm.s2.table.protect(vm.dataIpa, 0x1000, PROT.READ);
      run(w.model, cmd('TLBI_S12_VMALL', { vmid: 4 }));
      expect(tr(w, VA + 8, ACCESS.WRITE)).toMatchObject({ fault: 'F_PERMISSION', stage: 2, level: 3, ipa: vm.dataIpa + 8, class: 'IN' });
      expect(tr(w, VA + 8, ACCESS.READ)).toEqual({ pa: vm.gm.paOf(vm.dataIpa + 8), sizeLog2: 12 });
      const walks = w.model.stats.s1Walks;
      expect(tr(w, VA + 16, ACCESS.WRITE)).toMatchObject({ fault: 'F_PERMISSION', stage: 2, level: 3, ipa: vm.dataIpa + 16 });
      expect(w.model.stats.s1Walks).toBe(walks);
      // ATS: the translation the ATC keeps, made from that IOTLB entry, carries both stages' permissions.
      const ats = (a: number) => w.model.translateIova(PSID, -1, VA + 24, a, { ats: true });
      expect(ats(ACCESS.READ)).toHaveProperty('pa');
      expect(ats(ACCESS.WRITE)).toMatchObject({ fault: 'F_PERMISSION', stage: 2 });
      // And made by a walk (nothing cached).
      run(w.model, cmd('TLBI_S12_VMALL', { vmid: 4 }), cmd('ATC_INV', { sid: PSID, size: 52 }));
      expect(ats(ACCESS.READ)).toHaveProperty('pa');
      expect(ats(ACCESS.WRITE)).toMatchObject({ fault: 'F_PERMISSION', stage: 2 });
      expect(w.model.stats.atcHits).toBe(0);
    });

    test(`${kind}: a stage-1 permission fault leaves nothing that would later translate wrong`, () => {
      const { w, vm } = nested(combinedNested);
      vm.pt.map(VA, vm.dataIpa, 0x1000, PROT.READ);
      expect(tr(w, VA, ACCESS.WRITE)).toMatchObject({ fault: 'F_PERMISSION', stage: 1, level: 3 });
      // The read gets the PA, never the IPA a half-made entry would hold.
      expect(tr(w, VA + 4, ACCESS.READ)).toEqual({ pa: vm.gm.paOf(vm.dataIpa + 4), sizeLog2: 12 });
      expect(tr(w, VA + 4, ACCESS.READ)).toEqual({ pa: vm.gm.paOf(vm.dataIpa + 4), sizeLog2: 12 });
    });
  }

  test('a global (nG = 0) entry cached through one ASID serves another ASID of the same VMID without a walk', () => {
    const s = s1Stream({ ste: { s1CdMax: 1, s1Dss: S1DSS.BYPASS }, cds: 2 });
    s.pt.map(VA, s.data, 0x1000, RW | PROT.GLOBAL);
    s.pt.map(VA + 0x1000, s.data, 0x1000, RW);
    expect(tr(s.w, VA, ACCESS.READ, 0)).toEqual({ pa: s.data, sizeLog2: 12 });
    expect(tr(s.w, VA + 0x1000, ACCESS.READ, 0)).toHaveProperty('pa');
    const walks = s.w.model.stats.s1Walks;
    expect(tr(s.w, VA + 4, ACCESS.READ, 1)).toEqual({ pa: s.data + 4, sizeLog2: 12 });
    expect(s.w.model.stats.s1Walks).toBe(walks);
    // A non-global entry of ASID 9 is not ASID 10's.
    expect(tr(s.w, VA + 0x1000, ACCESS.READ, 1)).toHaveProperty('pa');
    expect(s.w.model.stats.s1Walks).toBe(walks + 1);
  });
});

describe('ATS (SMMUv3 §3.9.1 / §13: translation requests and the device ATC)', () => {
  test('a translation request needs IDR0.ATS, a known StreamID and STE.EATS = 1', () => {
    const off = s1Stream({ features: { ATS: false } });
    off.pt.map(VA, off.data, 0x1000, RW);
    expect(off.w.model.translateIova(PSID, -1, VA, ACCESS.READ, { ats: true })).toMatchObject({ fault: 'F_BAD_ATS_TREQ', stage: 0, class: 'IN' });
    const noEats = s1Stream({ ste: { eats: 0 } });
    noEats.pt.map(VA, noEats.data, 0x1000, RW);
    expect(noEats.w.model.translateIova(PSID, -1, VA, ACCESS.READ, { ats: true })).toMatchObject({ fault: 'F_BAD_ATS_TREQ' });
    expect(noEats.w.model.translateIova(PSID, -1, VA, ACCESS.READ)).toHaveProperty('pa');
    expect(noEats.w.model.translateIova(PSID + 1, -1, VA, ACCESS.READ, { ats: true })).toMatchObject({ fault: 'C_BAD_STREAMID' });
  });

  test('the ATC holds the whole leaf: a later request anywhere in the block hits, at the right offset', () => {
    const s = s1Stream();
    s.pt.map(VA, s.data, 2 * MiB, RW);
    const ats = (va: number, a: number = ACCESS.READ) => s.w.model.translateIova(PSID, -1, va, a, { ats: true });
    expect(ats(VA + 0x1234)).toEqual({ pa: s.data + 0x1234, sizeLog2: 21 });
    expect(ats(VA + 0x15_6789)).toEqual({ pa: s.data + 0x15_6789, sizeLog2: 21 });
    expect(s.w.model.stats).toMatchObject({ atcHits: 1, atcMisses: 1 });
  });

  test('an ATC entry grants only its permissions: a write to a read-only entry goes back to the SMMU and faults', () => {
    const s = s1Stream();
    s.pt.map(VA, s.data, 0x1000, PROT.READ);
    const ats = (a: number) => s.w.model.translateIova(PSID, -1, VA, a, { ats: true });
    expect(ats(ACCESS.READ)).toHaveProperty('pa');
    expect(ats(ACCESS.WRITE)).toMatchObject({ fault: 'F_PERMISSION', stage: 1 });
    expect(s.w.model.stats).toMatchObject({ atcHits: 0, atcMisses: 2 });
  });

  test('ATC entries are per PASID: no SSID, SSID 0 and SSID 1 translate through their own CDs and keep apart', () => {
    const s = s1Stream({ ste: { s1CdMax: 1, s1Dss: S1DSS.BYPASS }, cds: 2 });
    const other = new TranslationTable(new HostTableStore(s.w.layout), 1);
    writeHostWords(s.w.mem, s.cdTable + 64, encodeCd({ asid: 10, ttb0: other.root }));
    s.pt.map(VA, s.data, 0x1000, RW);
    other.map(VA, s.data + 0x1000, 0x1000, RW);
    const ats = (ssid: number) => s.w.model.translateIova(PSID, ssid, VA, ACCESS.READ, { ats: true });
    for (let i = 0; i < 2; i++) {
      expect(ats(-1)).toEqual({ pa: VA, sizeLog2: 64 }); // S1DSS = BYPASS: no stage 1
      expect(ats(0)).toEqual({ pa: s.data, sizeLog2: 12 });
      expect(ats(1)).toEqual({ pa: s.data + 0x1000, sizeLog2: 12 });
    }
  });
});

describe('more walk rules', () => {
  test('stage 2 never takes CD.AFFD: AF = 0 in a stage-2 leaf faults F_ACCESS at stage 2 though the CD sets AFFD', () => {
    const w = small();
    const vm = makeVm(w, { vmid: 4, psids: [PSID], asid: 9, ramBytes: 4 * MiB });
    writeGuestCd(vm.gm, vm.cdTable, 0, { asid: 9, ttb0: vm.pt.root, affd: true });
    vm.pt.map(VA, vm.dataIpa, 0x1000, RW);
    // Stage 2 of the data page as a level-3 page (splitting the 2 MiB block), then its AF cleared.
    vm.s2.table.map(vm.dataIpa, vm.gm.paOf(vm.dataIpa), 0x1000, RW);
    const d = vm.s2.table.leafDescriptor(vm.dataIpa);
    const u = new Uint32Array(w.mem);
    u[d / 4] = (u[d / 4]! & ~D_LO.AF) >>> 0;
    expect(tr(w, VA)).toMatchObject({ fault: 'F_ACCESS', stage: 2, level: 3, ipa: vm.dataIpa, class: 'IN' });
  });

  test('output-address bits below a block size are RES0 and not used: the block maps from its aligned base', () => {
    const s = s1Stream();
    s.pt.map(VA, s.data, 2 * MiB, RW);
    edit(s, descPa(s, VA, 2), { set: 0x1000 });
    expect(tr(s.w, VA + 0x1234)).toEqual({ pa: s.data + 0x1234, sizeLog2: 21 });
  });

  for (const [granule, inputBits] of [[16384, 36], [65536, 42]] as const) {
    test(`stage 2 with ${granule / 1024}K pages: S2SL0 counts from level 3, the walk and its blocks`, () => {
      const w = small();
      const table = new TranslationTable(new HostTableStore(w.layout), 2, { granule, inputBits });
      const data = w.layout.alloc(2 * granule, granule);
      table.map(granule, data, granule, RW);
      const stePa = w.layout.alloc(64, 64);
      // VTCR.TG: 1 = 64K, 2 = 16K; SL0 for 16K/64K: 0 = level 3, 1 = level 2, 2 = level 1.
      writeHostWords(w.mem, stePa, encodeSte({ config: STE_CFG.S2_TRANS, s2: { vmid: 3, ttb: table.root, t0sz: table.t0sz, sl0: 3 - table.startLevel, tg: granule === 65536 ? 1 : 2, ps: 5 } }));
      w.model.attachStream(PSID, stePa);
      expect(tr(w, granule + 0x123)).toEqual({ pa: data + 0x123, sizeLog2: Math.log2(granule) });
      expect(tr(w, 0)).toMatchObject({ fault: 'F_TRANSLATION', stage: 2, level: 3 });
    });
  }
});

test('the walk cache: a second walk under the same tables resumes from the deepest cached table descriptor and finds its own page', () => {
  const s = s1Stream({ opts: { walkCacheEntries: 16 } });
  s.pt.map(VA, s.data, 0x2000, RW);
  s.pt.map(VA + 2 * MiB, s.data + 0x2000, 0x1000, RW);
  expect(tr(s.w, VA)).toEqual({ pa: s.data, sizeLog2: 12 });
  expect(s.w.model.stats.walkCacheHits).toBe(0);
  // Same level-3 table: resumes at level 3.
  expect(tr(s.w, VA + 0x1000)).toEqual({ pa: s.data + 0x1000, sizeLog2: 12 });
  // Another level-3 table under the same level-2 table: resumes at level 2.
  expect(tr(s.w, VA + 2 * MiB)).toEqual({ pa: s.data + 0x2000, sizeLog2: 12 });
  expect(s.w.model.stats).toMatchObject({ s1Walks: 3, walkCacheHits: 2 });
  // Another GiB under the same level-0 (root) table descriptor: resumes at level 1 from the root's cached descriptor.
  expect(s.pt.startLevel).toBe(0);
  s.pt.map(VA + 2 ** 30, s.data + 0x3000, 0x1000, RW);
  expect(tr(s.w, VA + 2 ** 30)).toEqual({ pa: s.data + 0x3000, sizeLog2: 12 });
  expect(s.w.model.stats).toMatchObject({ s1Walks: 4, walkCacheHits: 3 });
  // Resuming keeps the table attributes met above the cached descriptor.
  edit(s, descPa(s, VA, 1), {}, { set: D_HI.AP_TABLE_RDONLY });
  run(s.w.model, cmd('TLBI_NH_ALL', { vmid: 0 }));
  const hits = s.w.model.stats.walkCacheHits;
  expect(tr(s.w, VA, ACCESS.READ)).toHaveProperty('pa');
  expect(tr(s.w, VA + 0x1000, ACCESS.WRITE)).toMatchObject({ fault: 'F_PERMISSION', stage: 1, level: 3 });
  expect(s.w.model.stats.walkCacheHits).toBe(hits + 1);
});

test('stage-1 and stage-2 walk-cache entries of one VMID never meet, though a VA and an IPA share a table descriptor\'s span', () => {
  // Both stages' level-1 descriptors cover [0, 1 GiB) here: the VA below 1 GiB and the guest's IPAs (its 4 MiB of RAM).
  const w = small({}, { walkCacheEntries: 16 });
  const vm = makeVm(w, { vmid: 4, psids: [PSID], asid: 9, ramBytes: 4 * MiB });
  const low = 0x20_0000;
  vm.pt.map(low, vm.dataIpa, 0x2000, RW);
  const pa = vm.gm.paOf(vm.dataIpa);
  expect(tr(w, low + 8)).toEqual({ pa: pa + 8, sizeLog2: 12 });
  // A second walk resumes from both stages' cached descriptors (the IOTLB emptied, the walk caches kept).
  run(w.model, cmd('TLBI_NH_VA', { vmid: 4, asid: 9, addr: low, leaf: 1 }), cmd('TLBI_S2_IPA', { vmid: 4, addr: vm.dataIpa, leaf: 1 }));
  const hits = w.model.stats.walkCacheHits;
  expect(tr(w, low + 0x1008)).toEqual({ pa: pa + 0x1008, sizeLog2: 12 });
  expect(tr(w, low + 16)).toEqual({ pa: pa + 16, sizeLog2: 12 });
  expect(w.model.stats.walkCacheHits).toBeGreaterThan(hits);
});

describe('the stage-2 IOTLB and the fault record', () => {
  test('stage-2 entries of every cached size are found: 4K pages beside 2 MiB blocks hit, and each lookup counts a hit or a miss', () => {
    const { w, ram, s2 } = stage2OnlyStream();
    s2.table.map(4 * MiB, ram + 0x5000, 0x1000, RW);
    expect(tr(w, 0x1234)).toEqual({ pa: ram + 0x1234, sizeLog2: 21 });
    expect(tr(w, 4 * MiB + 8)).toEqual({ pa: ram + 0x5008, sizeLog2: 12 });
    expect(w.model.stats).toMatchObject({ s2Walks: 2, iotlbMisses: 2, iotlbHits: 0 });
    expect(tr(w, 4 * MiB + 16)).toEqual({ pa: ram + 0x5010, sizeLog2: 12 });
    expect(tr(w, 0x2234)).toEqual({ pa: ram + 0x2234, sizeLog2: 21 });
    expect(w.model.stats).toMatchObject({ s2Walks: 2, iotlbMisses: 2, iotlbHits: 2 });
  });

  test('a stage-1 fault reports no IPA (the event record\'s IPA is a stage-2 fault\'s, SMMUv3 §7.3): the IPA words are 0, not the VA', () => {
    const s = s1Stream();
    const out = new Float64Array(TRANSLATE_OUT_LEN).fill(7);
    expect(s.w.model.translate(PSID, -1, VA, 0x12, ACCESS.READ, out)).not.toBe(0);
    expect([out[T_OUT.STAGE], out[T_OUT.IPA_LO], out[T_OUT.IPA_HI]]).toEqual([1, 0, 0]);
  });
});

describe('SubstreamIDs, ATS requests and counters at their edges (SMMUv3 §5.2 STE.S1CDMax/S1DSS, §7.3.6, §7.3.9)', () => {
  test('a SubstreamID on a stream with stage 1 disabled (bypass, stage 2 only) is C_BAD_SUBSTREAMID; without one it translates', () => {
    const { w, ram } = stage2OnlyStream();
    const bypass = w.layout.alloc(64, 64);
    writeHostWords(w.mem, bypass, encodeSte({ config: STE_CFG.BYPASS }));
    w.model.attachStream(6, bypass);
    for (const psid of [PSID, 6]) {
      for (const ssid of [0, 1]) expect(tr(w, 0x1000, ACCESS.READ, ssid, psid)).toMatchObject({ fault: 'C_BAD_SUBSTREAMID', stage: 0, class: 'IN' });
    }
    expect(tr(w, 0x1000)).toEqual({ pa: ram + 0x1000, sizeLog2: 21 });
    expect(tr(w, 0x1000, ACCESS.READ, -1, 6)).toEqual({ pa: 0x1000, sizeLog2: 12 });
  });

  test('S1DSS is ignored while S1CDMax = 0: traffic without a SubstreamID uses the one CD even with S1DSS = BYPASS', () => {
    const s = s1Stream({ ste: { s1CdMax: 0, s1Dss: S1DSS.BYPASS } });
    s.pt.map(VA, s.data, 0x1000, RW);
    expect(tr(s.w, VA + 8)).toEqual({ pa: s.data + 8, sizeLog2: 12 });
  });

  test('ATS: an invalid STE answers C_BAD_STE (F_BAD_ATS_TREQ needs STE.V = 1, §7.3.6); a bypass STE\'s EATS counts as 0', () => {
    const s = s1Stream();
    writeHostWords(s.w.mem, s.stePa, patch(encodeSte({ config: STE_CFG.S1_TRANS, s1ContextPtr: s.cdTable, eats: 0 }), STE.V, 0));
    expect(s.w.model.translateIova(PSID, -1, VA, ACCESS.READ, { ats: true })).toMatchObject({ fault: 'C_BAD_STE' });
    const w = small();
    const stePa = w.layout.alloc(64, 64);
    writeHostWords(w.mem, stePa, encodeSte({ config: STE_CFG.BYPASS, eats: 1 }));
    w.model.attachStream(6, stePa);
    expect(w.model.translateIova(6, -1, VA, ACCESS.READ, { ats: true })).toMatchObject({ fault: 'F_BAD_ATS_TREQ', stage: 0 });
    expect(tr(w, VA, ACCESS.READ, -1, 6)).toEqual({ pa: VA, sizeLog2: 12 });
  });

  test('ATS: a request that faults fills nothing; a later request after the mapping is made gets the new page', () => {
    const s = s1Stream();
    s.pt.map(VA, s.data, 0x1000, RW);
    const ats = (va: number) => s.w.model.translateIova(PSID, -1, va, ACCESS.READ, { ats: true });
    expect(ats(VA)).toEqual({ pa: s.data, sizeLog2: 12 });
    expect(ats(VA + 0x1000)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1, level: 3 });
    s.pt.map(VA + 0x1000, s.data + 0x5000, 0x1000, RW);
    expect(ats(VA + 0x1010)).toEqual({ pa: s.data + 0x5010, sizeLog2: 12 });
    expect(s.w.model.stats).toMatchObject({ atcHits: 0, atcMisses: 3 });
  });

  test('ATS: ATC entries of every cached size are found (4K pages beside a 2 MiB block); any negative SSID is "no SubstreamID"', () => {
    const s = s1Stream();
    s.pt.map(VA, s.data, 0x1000, RW);
    s.pt.map(VA + 2 * MiB, s.data + 2 * MiB, 2 * MiB, RW);
    const ats = (va: number, ssid = -1) => s.w.model.translateIova(PSID, ssid, va, ACCESS.READ, { ats: true });
    expect(ats(VA + 8)).toEqual({ pa: s.data + 8, sizeLog2: 12 });
    expect(ats(VA + 2 * MiB + 8)).toEqual({ pa: s.data + 2 * MiB + 8, sizeLog2: 21 });
    expect(ats(VA + 16, -2)).toEqual({ pa: s.data + 16, sizeLog2: 12 });
    expect(ats(VA + 2 * MiB + 16)).toEqual({ pa: s.data + 2 * MiB + 16, sizeLog2: 21 });
    expect(s.w.model.stats).toMatchObject({ atcHits: 2, atcMisses: 2 });
  });

  test('a stage-1 fault carries no IPA; the IOTLB and CD cache count their hits and misses', () => {
    const s = s1Stream();
    s.pt.map(VA, s.data, 0x1000, RW);
    expect(tr(s.w, VA + 0x1000)).toEqual({ fault: 'F_TRANSLATION', stage: 1, level: 3, class: 'IN' });
    tr(s.w, VA);
    tr(s.w, VA + 8);
    expect(s.w.model.stats).toMatchObject({ iotlbHits: 1, iotlbMisses: 2, cdHits: 2, cdMisses: 1 });
  });

  test('a stage-2-only STE ignores the stage-1 fields and needs no IDR0.S1P (§5.2: S1ContextPtr, S1Fmt, S1CDMax IGNORED)', () => {
    const w = small({ S1P: false });
    const ram = w.layout.alloc(2 * MiB, 2 * MiB);
    const s2 = buildStage2(w.mem, w.layout, ram, 2 * MiB, 3);
    const stePa = w.layout.alloc(64, 64);
    const words = encodeSte({ config: STE_CFG.S2_TRANS, s2 });
    patch(words, STE.S1FMT, 3);
    patch(words, STE.S1CDMAX, 31);
    writeHostWords(w.mem, stePa, words);
    w.model.attachStream(PSID, stePa);
    expect(tr(w, 0x1234)).toEqual({ pa: ram + 0x1234, sizeLog2: 21 });
  });

  test('the table bases\' high words are their own: an STE or a CD after non-zero memory still finds its tables', () => {
    // S2TTB and CD.TTB0 span two words each; the words just before each structure are all ones here.
    const w = small();
    const ram = w.layout.alloc(2 * MiB, 2 * MiB);
    const s2 = buildStage2(w.mem, w.layout, ram, 2 * MiB, 3);
    const area = w.layout.alloc(128, 64);
    writeHostWords(w.mem, area, new Uint32Array(16).fill(0xffffffff));
    writeHostWords(w.mem, area + 64, encodeSte({ config: STE_CFG.S2_TRANS, s2 }));
    w.model.attachStream(PSID, area + 64);
    expect(tr(w, 0x1234)).toEqual({ pa: ram + 0x1234, sizeLog2: 21 });
    const s = s1Stream({ ste: { s1CdMax: 1, s1Dss: S1DSS.BYPASS }, cds: 2 });
    writeHostWords(s.w.mem, s.cdTable, new Uint32Array(16).fill(0xffffffff));
    s.pt.map(VA, s.data, 0x1000, RW);
    expect(tr(s.w, VA, ACCESS.READ, 1)).toEqual({ pa: s.data, sizeLog2: 12 });
  });
});

test('an STE rewritten from stage 1 with substreams (S1DSS = TERMINATE) to stage 2 only, then CFGI_STE: traffic without a SubstreamID translates', () => {
  // Nothing of the old stage-1 configuration outlives the CFGI_STE (§4.3.1): S1CDMax and S1DSS are IGNORED once stage 1 is disabled.
  const s = s1Stream({ ste: { s1CdMax: 2, s1Dss: S1DSS.TERMINATE }, cds: 4 });
  expect(tr(s.w, VA)).toMatchObject({ fault: 'F_STREAM_DISABLED' });
  const ram = s.data; // 2 MiB aligned: the guest RAM of the new stage 2
  writeHostWords(s.w.mem, s.stePa, encodeSte({ config: STE_CFG.S2_TRANS, s2: buildStage2(s.w.mem, s.w.layout, ram, 2 * MiB, 3) }));
  run(s.w.model, cmd('CFGI_STE', { sid: PSID }));
  expect(tr(s.w, 0x1234)).toEqual({ pa: ram + 0x1234, sizeLog2: 21 });
});
