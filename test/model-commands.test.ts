// Every command the model executes, one rule per test, with the model as the
// oracle: after an invalidation nothing in its scope translates from a stale
// entry (IOTLB, walk cache, CD/STE cache, ATC) and nothing outside it is
// dropped where the scope is exact. Which IDR0 features make a command
// CERROR_ILL (SMMUv3 §4.1.1 and each command's section in §4; QEMU
// hw/arm/smmuv3.c smmuv3_cmdq_consume raises the same), and the counters the
// commands keep (SmmuStats).
import { describe, expect, test } from 'vitest';
import { CERROR } from '../src/errors.ts';
import type { SmmuFeatures } from '../src/features.ts';
import { OP } from '../src/fields.ts';
import { ACCESS, HostTableStore, PROT, S1DSS, STE_CFG, TranslationTable, encodeCd, encodeSte, writeHostWords } from '../src/model/index.ts';
import { MiB, S1_PSID, cmd, linuxRangeTlbi, makeVm, makeWorld, run, s1Stream, small, type S1, type Vm, type World } from './model-fixture.ts';

const VA = 0x4000_0000;
const RW = PROT.READ | PROT.WRITE;

/** A world over 6 MiB of host memory per VM (the fixture's 96 MiB costs more than these tests) and one nested VM per entry of `vms`. */
function world(vms: { vmid: number; psids: number[]; asid?: number }[], features: Parameters<typeof makeWorld>[0] = {}, opts: Parameters<typeof makeWorld>[1] = {}): { w: World; vms: Vm[] } {
  const w = makeWorld(features, opts, (4 + 6 * vms.length) * MiB);
  return { w, vms: vms.map((v) => makeVm(w, { ...v, ramBytes: 4 * MiB })) };
}

/** Whether stream `psid` translates `va` from the IOTLB (no stage-1 walk). Each probe fills the IOTLB again. */
function hits(w: World, psid: number, va: number, ssid = -1): boolean {
  const walks = w.model.stats.s1Walks;
  const r = w.model.translateIova(psid, ssid, va, ACCESS.READ);
  if (!('pa' in r)) throw new Error(`0x${va.toString(16)} faulted: ${r.fault}`);
  return w.model.stats.s1Walks === walks;
}

describe('which features make a command CERROR_ILL (SMMUv3 §4.1.1; QEMU smmuv3_cmdq_consume)', () => {
  const needs: [keyof typeof OP, Partial<SmmuFeatures>][] = [
    ['TLBI_NH_ALL', { S1P: false }],
    ['TLBI_NH_VAA', { S1P: false }],
    ['CFGI_CD_ALL', { S1P: false }],
    ['TLBI_S12_VMALL', { S2P: false }],
    ['TLBI_S2_IPA', { S2P: false }],
    ['TLBI_EL2_ASID', { HYP: false }],
    ['TLBI_EL2_VA', { HYP: false }],
    ['TLBI_EL2_VAA', { HYP: false }],
    ['ATC_INV', { ATS: false }],
    ['CFGI_VMS_PIDM', { MPAM: false }],
    ['PRI_RESP', { PRI: false }],
    ['RESUME', { STALL_MODEL: 1 }],
  ];
  for (const [op, feat] of needs) {
    test(`${op}: CERROR_ILL without the feature, accepted with it`, () => {
      const on: Partial<SmmuFeatures> = Object.fromEntries(Object.entries(feat).map(([k, v]) => [k, typeof v === 'boolean' ? !v : 0]));
      expect(makeWorld(feat, {}, MiB).model.execute(cmd(op))).toBe(CERROR.ILL);
      expect(makeWorld(on, {}, MiB).model.execute(cmd(op))).toBe(0);
    });
  }

  test('SSec = 1 on any CFGI is ILL (no Secure state); an unknown opcode is ILL', () => {
    const { model } = makeWorld({}, {}, MiB);
    for (const op of ['CFGI_STE', 'CFGI_STE_RANGE', 'CFGI_CD', 'CFGI_CD_ALL'] as const) {
      expect(model.execute(cmd(op, { ssec: 1 })), op).toBe(CERROR.ILL);
      expect(model.execute(cmd(op)), op).toBe(0);
    }
    const f = cmd('CMD_SYNC');
    f[0] = 0x08; // no command has it
    expect(model.execute(f)).toBe(CERROR.ILL);
  });

  test('the counters: every command, syncs, prefetches, page responses', () => {
    const { model } = makeWorld({}, {}, MiB);
    run(model, cmd('PREFETCH_CONFIG'), cmd('PREFETCH_ADDR'), cmd('PRI_RESP'), cmd('RESUME'), cmd('STALL_TERM'), cmd('TLBI_EL2_ALL'));
    expect(model.stats).toMatchObject({ commands: 7, syncs: 1, prefetches: 2, pageResponses: 3 });
  });
});

describe('the VMID of NH_* TLBIs: a tag only with stage 2 (SMMUv3 §4.4.2; QEMU: NH_ASID/NH_ALL use the VMID when S2 is supported)', () => {
  for (const s2p of [true, false]) {
    test(`${s2p ? 'with' : 'without'} IDR0.S2P, NH_ALL/NH_ASID/NH_VA naming VMID 5 ${s2p ? 'leave' : 'reach'} a stage-1-only stream (STE.S2VMID = 0)`, () => {
      const s = s1Stream({ features: { S2P: s2p } });
      s.pt.map(VA, s.data, 0x1000, RW);
      for (const c of [cmd('TLBI_NH_ALL', { vmid: 5 }), cmd('TLBI_NH_ASID', { vmid: 5, asid: 9 }), cmd('TLBI_NH_VA', { vmid: 5, asid: 9, addr: VA })]) {
        hits(s.w, S1_PSID, VA);
        run(s.w.model, c);
        expect(hits(s.w, S1_PSID, VA)).toBe(s2p);
      }
    });
  }
});

describe('scope of each invalidation: in scope nothing stale, outside it nothing dropped', () => {
  test('NH_ALL and S12_VMALL drop one VMID (both stages), NSNH_ALL every VMID; the counters count what went', () => {
    for (const [c, dropsB] of [[cmd('TLBI_NH_ALL', { vmid: 4 }), false], [cmd('TLBI_S12_VMALL', { vmid: 4 }), false], [cmd('TLBI_NSNH_ALL'), true]] as const) {
      const { w, vms } = world([{ vmid: 4, psids: [1], asid: 9 }, { vmid: 6, psids: [2], asid: 9 }], {}, { combinedNested: false });
      for (const vm of vms) vm.pt.map(VA, vm.dataIpa, 0x1000, RW);
      hits(w, 1, VA);
      hits(w, 2, VA);
      const live = w.model.iotlbSize;
      run(w.model, c);
      const left = w.model.iotlbSize;
      expect(w.model.stats.iotlbInvalidated).toBe(live - left);
      // The two VMs are built alike, so each holds half the entries; NH_ALL leaves VMID 4's stage-2 ones.
      if (dropsB) expect(left).toBe(0);
      else if (c[0] === OP.TLBI_NH_ALL) expect(left > live / 2 && left < live).toBe(true);
      else expect(left).toBe(live / 2);
      const s2Walks = w.model.stats.s2Walks;
      expect(hits(w, 1, VA)).toBe(false);
      expect(hits(w, 2, VA)).toBe(!dropsB);
      // NH_ALL keeps VMID 4's stage-2 entries: its new walk finds the IPA of its tables and data cached.
      expect(w.model.stats.s2Walks > s2Walks).toBe(c[0] !== OP.TLBI_NH_ALL);
    }
  });
});

describe('the walk cache (SmmuModelOptions.walkCacheEntries): ASID-, VMID- and all-wide TLBIs drop cached table descriptors', () => {
  /**
   * VM 4 caches a walk of VA, then replaces the level-3 table under VA (a
   * non-leaf change) and runs `c`. Returns whether VA then translates through
   * the new table (true), or a stale walk reached the old one (false), and the
   * walk-cache entries `c` dropped.
   */
  function afterTableChange(c: Uint32Array): { fresh: boolean; dropped: number } {
    const { w, vms } = world([{ vmid: 4, psids: [1], asid: 9 }], {}, { walkCacheEntries: 64 });
    const vm = vms[0]!;
    vm.pt.map(VA, vm.dataIpa, 0x1000, RW);
    hits(w, 1, VA);
    vm.pt.unmap(VA - (VA % (2 * MiB)), 2 * MiB);
    vm.pt.map(VA, vm.dataIpa + 0x4000, 0x1000, RW);
    // Leaf=1 on the page: the IOTLB entry goes, the table descriptors stay (spec 4.4.2).
    run(w.model, cmd('TLBI_NH_VA', { asid: 9, vmid: 4, addr: VA, leaf: 1 }));
    const before = w.model.stats.walkCacheInvalidated;
    run(w.model, c);
    const r = w.model.translateIova(1, -1, VA, ACCESS.READ) as { pa: number };
    return { fresh: r.pa === vm.gm.paOf(vm.dataIpa + 0x4000), dropped: w.model.stats.walkCacheInvalidated - before };
  }

  test('the stale walk the next tests rule out: a command of another VMID or ASID leaves it', () => {
    for (const c of [cmd('TLBI_NH_ALL', { vmid: 5 }), cmd('TLBI_NH_ASID', { vmid: 4, asid: 8 }), cmd('TLBI_S12_VMALL', { vmid: 5 }), cmd('CMD_SYNC')]) {
      expect(afterTableChange(c)).toEqual({ fresh: false, dropped: 0 });
    }
  });

  for (const c of [cmd('TLBI_NH_ALL', { vmid: 4 }), cmd('TLBI_NH_ASID', { vmid: 4, asid: 9 }), cmd('TLBI_S12_VMALL', { vmid: 4 }), cmd('TLBI_NSNH_ALL'), cmd('TLBI_NH_VAA', { vmid: 4, addr: VA })]) {
    const name = Object.keys(OP).find((k) => OP[k as keyof typeof OP] === c[0]);
    test(`${name} drops them: the new table is walked`, () => {
      const r = afterTableChange(c);
      expect(r.fresh).toBe(true);
      expect(r.dropped).toBeGreaterThan(0);
    });
  }
});

describe('the CD cache (SMMUv3 §4.3.2 CFGI_CD, §4.3.3 CFGI_CD_ALL)', () => {
  /** Two CDs (SSIDs 0 and 1) cached, then both rewritten to an empty table: which SSIDs still walk the old one after `c`. */
  function stale(c: Uint32Array): boolean[] {
    const s = s1Stream({ ste: { s1CdMax: 1, s1Dss: S1DSS.BYPASS }, cds: 2 });
    s.pt.map(VA, s.data, 0x1000, RW);
    for (const ssid of [0, 1]) s.w.model.translateIova(S1_PSID, ssid, VA, ACCESS.READ);
    const empty = new TranslationTable(new HostTableStore(s.w.layout), 1);
    for (const ssid of [0, 1]) writeHostWords(s.w.mem, s.cdTable + 64 * ssid, encodeCd({ asid: 9 + ssid, ttb0: empty.root }));
    run(s.w.model, cmd('TLBI_NH_ALL', { vmid: 0 }), c);
    return [0, 1].map((ssid) => 'pa' in s.w.model.translateIova(S1_PSID, ssid, VA, ACCESS.READ));
  }

  test('CFGI_CD drops the CD of its SSID only; CFGI_CD_ALL every CD of its stream; either for another stream drops nothing', () => {
    expect(stale(cmd('CMD_SYNC'))).toEqual([true, true]);
    expect(stale(cmd('CFGI_CD', { sid: S1_PSID, ssid: 1 }))).toEqual([true, false]);
    expect(stale(cmd('CFGI_CD', { sid: S1_PSID, ssid: 0 }))).toEqual([false, true]);
    expect(stale(cmd('CFGI_CD_ALL', { sid: S1_PSID }))).toEqual([false, false]);
    expect(stale(cmd('CFGI_CD_ALL', { sid: S1_PSID + 1 }))).toEqual([true, true]);
    expect(stale(cmd('CFGI_CD', { sid: S1_PSID + 1, ssid: 0 }))).toEqual([true, true]);
  });

  test('the counters: a CFGI_CD of an uncached SSID drops nothing; CFGI_STE of an unknown or uncached stream neither', () => {
    const s = s1Stream({ ste: { s1CdMax: 1, s1Dss: S1DSS.BYPASS }, cds: 2 });
    s.pt.map(VA, s.data, 0x1000, RW);
    s.w.model.translateIova(S1_PSID, 0, VA, ACCESS.READ);
    run(s.w.model, cmd('CFGI_CD', { sid: S1_PSID, ssid: 1 }), cmd('CFGI_STE', { sid: 7 }));
    expect(s.w.model.stats).toMatchObject({ cdInvalidated: 0, steInvalidated: 0 });
    run(s.w.model, cmd('CFGI_CD', { sid: S1_PSID, ssid: 0 }));
    expect(s.w.model.stats.cdInvalidated).toBe(1);
    run(s.w.model, cmd('CFGI_STE', { sid: S1_PSID }), cmd('CFGI_STE', { sid: S1_PSID }));
    expect(s.w.model.stats.steInvalidated).toBe(1);
    // CFGI_STE drops the stream's CDs with its STE (both fetched again by the next translation).
    s.w.model.translateIova(S1_PSID, 0, VA, ACCESS.READ);
    s.w.model.translateIova(S1_PSID, 1, VA, ACCESS.READ);
    run(s.w.model, cmd('CFGI_STE', { sid: S1_PSID }));
    expect(s.w.model.stats).toMatchObject({ steInvalidated: 2, cdInvalidated: 3 });
  });
});

describe('ATC_INV (SMMUv3 §4.5.1; PCIe ATS invalidation): the span 4K << Size at Addr aligned to it, per PASID when SSV = 1', () => {
  /** A device with pages -1..4 of VA in its ATC (no PASID) and page 0 under PASIDs 0 and 1: what is still there after `c`. */
  function left(c: Uint32Array): { noPasid: number[]; pasid1: boolean } {
    const s = s1Stream({ ste: { s1CdMax: 1, s1Dss: S1DSS.SSID0 }, cds: 2 });
    s.pt.map(VA - 0x1000, s.data, 0x6000, RW);
    const ats = (page: number, ssid = -1) => s.w.model.translateIova(S1_PSID, ssid, VA + page * 0x1000, ACCESS.READ, { ats: true });
    const pages = [-1, 0, 1, 2, 3, 4];
    for (const p of pages) ats(p);
    ats(0, 1);
    s.pt.unmap(VA - 0x1000, 0x6000);
    run(s.w.model, cmd('TLBI_NH_ALL', { vmid: 0 }), c);
    return { noPasid: pages.filter((p) => 'pa' in ats(p)), pasid1: 'pa' in ats(0, 1) };
  }

  test('Size 2 at page 3: pages 0..3 go, -1 and 4 stay', () => {
    expect(left(cmd('ATC_INV', { sid: S1_PSID, addr: VA + 0x3000, size: 2 })).noPasid).toEqual([-1, 4]);
  });
  test('Size 0 at page 2: that page only', () => {
    expect(left(cmd('ATC_INV', { sid: S1_PSID, addr: VA + 0x2000, size: 0 })).noPasid).toEqual([-1, 0, 1, 3, 4]);
  });
  test('Size 52: everything of the device', () => {
    expect(left(cmd('ATC_INV', { sid: S1_PSID, addr: VA + 0x2000, size: 52 }))).toMatchObject({ noPasid: [], pasid1: false });
  });
  test('SSV = 1: that PASID only; SSV = 1 with Global = 1, or SSV = 0: every PASID', () => {
    expect(left(cmd('ATC_INV', { sid: S1_PSID, addr: VA, size: 0, ssv: 1, ssid: 1 }))).toMatchObject({ noPasid: [-1, 0, 1, 2, 3, 4], pasid1: false });
    expect(left(cmd('ATC_INV', { sid: S1_PSID, addr: VA, size: 0, ssv: 1, ssid: 0 }))).toMatchObject({ noPasid: [-1, 0, 1, 2, 3, 4], pasid1: true });
    expect(left(cmd('ATC_INV', { sid: S1_PSID, addr: VA, size: 0, ssv: 1, ssid: 1, global: 1 }))).toMatchObject({ noPasid: [-1, 1, 2, 3, 4], pasid1: false });
    expect(left(cmd('ATC_INV', { sid: S1_PSID, addr: VA, size: 0 }))).toMatchObject({ noPasid: [-1, 1, 2, 3, 4], pasid1: false });
  });
  test('another StreamID: nothing goes', () => {
    expect(left(cmd('ATC_INV', { sid: S1_PSID + 1, addr: VA, size: 52 }))).toMatchObject({ noPasid: [-1, 0, 1, 2, 3, 4], pasid1: true });
  });
});

describe('range TLBIs by VA, VA of any ASID, and IPA: exactly the pages of the range, through the per-address probes and the bucket scan', () => {
  const PAGES = 80;
  const FIRST = 5;
  /** Which primed pages still hit after TLBIs covering [FIRST, FIRST + len) (linuxRangeTlbi, RIL) with opcode `op`. */
  function rangeLeft(op: 'TLBI_NH_VA' | 'TLBI_NH_VAA' | 'TLBI_S2_IPA', len: number, primed: number[]): number[] {
    const s2 = op === 'TLBI_S2_IPA';
    const w = small({}, {});
    let psid = S1_PSID;
    let walked: () => number;
    if (s2) {
      // A stage-2-only stream with 4K stage-2 pages (no blocks), VMID 3: IPA page p -> PA page p.
      const table = new TranslationTable(new HostTableStore(w.layout), 2, { inputBits: 39 });
      const data = w.layout.alloc(PAGES * 0x1000);
      for (let p = 0; p < PAGES; p++) table.map(VA + p * 0x1000, data + p * 0x1000, 0x1000, RW);
      const stePa = w.layout.alloc(64, 64);
      writeHostWords(w.mem, stePa, encodeSte({ config: STE_CFG.S2_TRANS, s2: { vmid: 3, ttb: table.root, t0sz: table.t0sz, sl0: 2 - table.startLevel, tg: 0, ps: 5 } }));
      psid = 9;
      w.model.attachStream(psid, stePa);
      walked = () => w.model.stats.s2Walks;
    } else {
      const pt = new TranslationTable(new HostTableStore(w.layout), 1);
      const cd = w.layout.alloc(64, 64);
      writeHostWords(w.mem, cd, encodeCd({ asid: 9, ttb0: pt.root }));
      const data = w.layout.alloc(PAGES * 0x1000);
      for (let p = 0; p < PAGES; p++) pt.map(VA + p * 0x1000, data + p * 0x1000, 0x1000, RW);
      const stePa = w.layout.alloc(64, 64);
      writeHostWords(w.mem, stePa, encodeSte({ config: STE_CFG.S1_TRANS, s1ContextPtr: cd }));
      w.model.attachStream(psid, stePa);
      walked = () => w.model.stats.s1Walks;
    }
    const hit = (p: number): boolean => {
      const before = walked();
      expect(w.model.translateIova(psid, -1, VA + p * 0x1000, ACCESS.READ)).toHaveProperty('pa');
      return walked() === before;
    };
    for (const p of primed) hit(p);
    const cmds = linuxRangeTlbi(9, s2 ? 3 : 0, VA + FIRST * 0x1000, len * 0x1000);
    for (const c of cmds) c[0] = OP[op];
    run(w.model, ...cmds);
    return primed.filter(hit);
  }

  // A range is split at 32-page steps (NUM is 5 bits); range-oracle.test.ts runs every length to 300 for NH_VA.
  const LENGTHS = [1, 2, 3, 7, 31, 32, 33, 40];
  for (const op of ['TLBI_NH_VA', 'TLBI_NH_VAA', 'TLBI_S2_IPA'] as const) {
    test(`${op}: every page primed (probes)`, () => {
      const all = Array.from({ length: PAGES }, (_, p) => p);
      for (const len of LENGTHS) {
        expect(rangeLeft(op, len, all), `length ${len}`).toEqual(all.filter((p) => p < FIRST || p >= FIRST + len));
      }
    });

    test(`${op}: only the pages at the edges primed (few entries: the bucket scan)`, () => {
      for (const len of LENGTHS) {
        const edges = [...new Set([FIRST - 1, FIRST, FIRST + len - 1, FIRST + len])];
        expect(rangeLeft(op, len, edges), `length ${len}`).toEqual([FIRST - 1, FIRST + len]);
      }
    });
  }
});

describe('range fields at 16K (SMMUv3 §4.4.1.1: the range starts at Addr; TG = 16K with TTL = 1 is Reserved without IDR5.DS and treated as 0)', () => {
  /** A 16K-granule stage-1 stream with pages 0..3 of VA cached (level 3): which still hit after `c`. */
  function left16k(c: Uint32Array, features: Parameters<typeof small>[0] = {}): number[] {
    const s = s1Stream({ granule: 16384, features });
    s.pt.map(VA, s.data, 4 * 16384, RW);
    const pages = [0, 1, 2, 3];
    for (const p of pages) hits(s.w, S1_PSID, VA + p * 16384);
    run(s.w.model, c);
    return pages.filter((p) => hits(s.w, S1_PSID, VA + p * 16384));
  }

  test('Addr inside a granule: the granule holding Addr is in the range, and the range runs (NUM+1) << SCALE granules from Addr', () => {
    // [VA + 16K + 12K, +16K) meets pages 1 and 2.
    expect(left16k(cmd('TLBI_NH_VA', { asid: 9, addr: VA + 16384 + 0x3000, tg: 2, ttl: 3, num: 0, scale: 0, leaf: 1 }))).toEqual([0, 3]);
    expect(left16k(cmd('TLBI_NH_VA', { asid: 9, addr: VA + 16384, tg: 2, ttl: 3, num: 0, scale: 0, leaf: 1 }))).toEqual([0, 2, 3]);
  });

  test('TTL = 1 without DS is TTL = 0 (any level): the level-3 pages of the range go', () => {
    expect(left16k(cmd('TLBI_NH_VA', { asid: 9, addr: VA + 16384, tg: 2, ttl: 1, num: 1, scale: 0, leaf: 1 }))).toEqual([0, 3]);
    // With DS, TTL = 1 names level 1, and TTL = 2 level 2 in any case: these level-3 pages are outside their scope.
    expect(left16k(cmd('TLBI_NH_VA', { asid: 9, addr: VA + 16384, tg: 2, ttl: 1, num: 1, scale: 0, leaf: 1 }), { DS: true })).toEqual([0, 1, 2, 3]);
    expect(left16k(cmd('TLBI_NH_VA', { asid: 9, addr: VA + 16384, tg: 2, ttl: 2, num: 1, scale: 0, leaf: 1 }))).toEqual([0, 1, 2, 3]);
  });
});

describe('edges of the command fields', () => {
  test('CFGI_STE_RANGE: the aligned 2^(Range+1) StreamIDs, none below or above; Range 31 (CFGI_ALL) every stream', () => {
    const s = s1Stream();
    // s1Stream's STE serves any StreamID: attach it under more of them.
    const sids = [0x3f, 0x40, 0x43, 0x44, 0xffff_ffff];
    for (const sid of sids) if (sid !== S1_PSID) s.w.model.attachStream(sid, s.stePa);
    const cachedAll = (): void => { for (const sid of sids) s.w.model.translateIova(sid, -1, VA, ACCESS.READ); };
    cachedAll();
    run(s.w.model, cmd('CFGI_STE_RANGE', { sid: 0x42, range: 1 }));
    expect(s.w.model.stats.steInvalidated).toBe(2);
    cachedAll();
    run(s.w.model, cmd('CFGI_STE_RANGE', { sid: 0x42, range: 31 }));
    expect(s.w.model.stats.steInvalidated).toBe(2 + sids.length);
  });

  test('the largest VMID and ASID are tags like any other (8-bit and 16-bit)', () => {
    for (const [bits16, vmid, asid] of [[false, 0xff, 0xff], [true, 0xffff, 0xffff]] as const) {
      const { w, vms } = world([{ vmid, psids: [1], asid }], { VMID16: bits16, ASID16: bits16 });
      vms[0]!.pt.map(VA, vms[0]!.dataIpa, 0x1000, RW);
      for (const c of [
        cmd('TLBI_NH_ALL', { vmid }), cmd('TLBI_NH_ASID', { vmid, asid }), cmd('TLBI_NH_VA', { vmid, asid, addr: VA }),
        cmd('TLBI_S12_VMALL', { vmid }),
      ]) {
        hits(w, 1, VA);
        const live = w.model.iotlbSize;
        run(w.model, c);
        expect(w.model.iotlbSize, `op 0x${c[0]!.toString(16)}`).toBeLessThan(live);
        expect(w.model.stats.iotlbInvalidated).toBeGreaterThan(0);
      }
      // Stage 2 by IPA: the data page's stage-2 entry goes (the next walk of stage 2 misses).
      hits(w, 1, VA);
      const ipa = vms[0]!.dataIpa;
      run(w.model, cmd('TLBI_S2_IPA', { vmid, addr: ipa }), cmd('TLBI_NH_ALL', { vmid }));
      const s2Walks = w.model.stats.s2Walks;
      hits(w, 1, VA);
      expect(w.model.stats.s2Walks).toBe(s2Walks + 1);
    }
  });

  test('NH_ASID counts what it drops; CFGI_CD_ALL counts every CD of the stream', () => {
    const s = s1Stream({ ste: { s1CdMax: 1, s1Dss: S1DSS.BYPASS }, cds: 2 });
    s.pt.map(VA, s.data, 0x2000, RW);
    for (const va of [VA, VA + 0x1000]) for (const ssid of [0, 1]) s.w.model.translateIova(S1_PSID, ssid, va, ACCESS.READ);
    run(s.w.model, cmd('TLBI_NH_ASID', { vmid: 0, asid: 10 }));
    expect(s.w.model.stats.iotlbInvalidated).toBe(2);
    expect(s.w.model.iotlbSize).toBe(2);
    run(s.w.model, cmd('CFGI_CD_ALL', { sid: S1_PSID }));
    expect(s.w.model.stats.cdInvalidated).toBe(2);
  });
});

describe('the stage-2 walk cache: VMID-wide, all-wide and Leaf=0 IPA TLBIs drop cached stage-2 table descriptors', () => {
  /**
   * A stage-2-only stream (VMID 3, 4K pages) caches a walk of IPA VA, then the
   * host replaces the level-3 table under it (a non-leaf change) and runs `c`.
   * Returns whether VA then translates through the new table.
   */
  function fresh(c: Uint32Array): boolean {
    const w = small({}, { walkCacheEntries: 64 });
    const table = new TranslationTable(new HostTableStore(w.layout), 2, { inputBits: 39 });
    const data = w.layout.alloc(0x2000);
    table.map(VA, data, 0x1000, RW);
    const stePa = w.layout.alloc(64, 64);
    writeHostWords(w.mem, stePa, encodeSte({ config: STE_CFG.S2_TRANS, s2: { vmid: 3, ttb: table.root, t0sz: table.t0sz, sl0: 2 - table.startLevel, tg: 0, ps: 5 } }));
    w.model.attachStream(9, stePa);
    expect(w.model.translateIova(9, -1, VA, ACCESS.READ)).toMatchObject({ pa: data });
    table.unmap(VA - (VA % (2 * MiB)), 2 * MiB);
    table.map(VA, data + 0x1000, 0x1000, RW);
    run(w.model, cmd('TLBI_S2_IPA', { vmid: 3, addr: VA, leaf: 1 }));
    const dropped = w.model.stats.walkCacheInvalidated;
    run(w.model, c);
    const isFresh = (w.model.translateIova(9, -1, VA, ACCESS.READ) as { pa: number }).pa === data + 0x1000;
    // The counter follows: what made the walk fresh was dropped and counted (the level-1 and level-2 table descriptors above VA).
    expect(w.model.stats.walkCacheInvalidated - dropped).toBe(isFresh ? 2 : 0);
    return isFresh;
  }

  test('S12_VMALL, NSNH_ALL and S2_IPA with Leaf = 0 drop them; Leaf = 1, NH_ALL and another VMID leave the stale walk', () => {
    expect(fresh(cmd('TLBI_S12_VMALL', { vmid: 3 }))).toBe(true);
    expect(fresh(cmd('TLBI_NSNH_ALL'))).toBe(true);
    expect(fresh(cmd('TLBI_S2_IPA', { vmid: 3, addr: VA, leaf: 0 }))).toBe(true);
    expect(fresh(cmd('TLBI_S2_IPA', { vmid: 3, addr: VA, leaf: 1 }))).toBe(false);
    expect(fresh(cmd('TLBI_NH_ALL', { vmid: 3 }))).toBe(false);
    expect(fresh(cmd('TLBI_S12_VMALL', { vmid: 4 }))).toBe(false);
  });
});

describe('range fields with and without IDR3.RIL and IDR5.DS', () => {
  /** A 4K stage-1-only stream with pages 0..3 of VA cached: which still hit after `c`. */
  function left4k(c: Uint32Array, features: Parameters<typeof small>[0] = {}): number[] {
    const s = s1Stream({ features });
    s.pt.map(VA, s.data, 0x4000, RW);
    const pages = [0, 1, 2, 3];
    for (const p of pages) hits(s.w, S1_PSID, VA + p * 0x1000);
    run(s.w.model, c);
    return pages.filter((p) => hits(s.w, S1_PSID, VA + p * 0x1000));
  }

  test('without RIL the range fields are RES0 and ignored: one address, not a range, and never the reserved combination', () => {
    expect(left4k(cmd('TLBI_NH_VA', { asid: 9, addr: VA + 0x1000, tg: 1, num: 1, scale: 0, ttl: 0 }), { RIL: false })).toEqual([0, 2, 3]);
    expect(left4k(cmd('TLBI_NH_VA', { asid: 9, addr: VA + 0x1000, tg: 1, num: 1, scale: 0, ttl: 0 }))).toEqual([0, 3]);
  });

  test('TTL = 1 at 4K names level 1 (1 GiB blocks), with or without DS: the level-3 pages of the range stay; TTL = 3 drops them', () => {
    expect(left4k(cmd('TLBI_NH_VA', { asid: 9, addr: VA, tg: 1, num: 3, scale: 0, ttl: 1, leaf: 1 }))).toEqual([0, 1, 2, 3]);
    expect(left4k(cmd('TLBI_NH_VA', { asid: 9, addr: VA, tg: 1, num: 3, scale: 0, ttl: 3, leaf: 1 }))).toEqual([]);
  });

  test('with DS, SCALE has 6 bits: SCALE = 32 spans 2^32 granules from Addr; SCALE 0 one granule', () => {
    expect(left4k(cmd('TLBI_NH_VA', { asid: 9, addr: 0, tg: 1, num: 0, scale: 32, ttl: 3 }), { DS: true })).toEqual([]);
    expect(left4k(cmd('TLBI_NH_VA', { asid: 9, addr: VA + 0x2000, tg: 1, num: 0, scale: 0, ttl: 3 }), { DS: true })).toEqual([0, 1, 3]);
  });
});

describe('ASIDs of one VMID (SMMUv3 §4.4.2: NH_VA matches its ASID and global entries only)', () => {
  test('NH_VA of ASID 9 keeps ASID 10 entries at the same VA (probes and scan) and drops only ASID 9 walk-cache entries', () => {
    // One address (TG = 0): two probes, as many as the entries cached; 64 pages: the bucket scan.
    for (const len of [1, 64]) {
      const s = s1Stream({ ste: { s1CdMax: 1, s1Dss: S1DSS.BYPASS }, cds: 2, opts: { walkCacheEntries: 16 } });
      s.pt.map(VA, s.data, 0x1000, RW);
      for (const ssid of [0, 1]) hits(s.w, S1_PSID, VA, ssid);
      // ASID 9's walk cached the level-0..2 table descriptors; so did ASID 10's.
      run(s.w.model, ...(len === 1 ? [cmd('TLBI_NH_VA', { asid: 9, addr: VA })] : linuxRangeTlbi(9, 0, VA, len * 0x1000, 4096, false)));
      expect(s.w.model.stats.walkCacheInvalidated, `${len} pages`).toBe(3);
      expect(s.w.model.stats.iotlbInvalidated, `${len} pages`).toBe(1);
      expect(hits(s.w, S1_PSID, VA, 1), `${len} pages`).toBe(true);
      expect(hits(s.w, S1_PSID, VA, 0), `${len} pages`).toBe(false);
    }
  });
});

describe('the per-address probes of a range TLBI find what the bucket scan finds (SMMUv3 §4.4.1.1, §4.4.2)', () => {
  // dropRange probes each aligned block of the range when that costs no more lookups than the VMID's bucket holds
  // entries, and scans the bucket otherwise. `pad` extra pages cached far from VA choose the probes; none, the scan.
  const FAR = VA + 8 * MiB;
  function padded(s: S1, pad: number): void {
    if (pad !== 0) s.pt.map(FAR, s.data + 2 * MiB, pad * 0x1000, RW);
    for (let p = 0; p < pad; p++) hits(s.w, S1_PSID, FAR + p * 0x1000);
  }

  for (const pad of [0, 8]) {
    const how = pad === 0 ? 'scan' : 'probes';
    test(`${how}: NH_VA at a page inside a cached 2 MiB block drops the block (an entry containing Addr, §4.4.2)`, () => {
      const s = s1Stream();
      s.pt.map(VA, s.data, 2 * MiB, RW);
      padded(s, pad);
      expect(s.w.model.translateIova(S1_PSID, -1, VA + 0x3000, ACCESS.READ)).toMatchObject({ sizeLog2: 21 });
      run(s.w.model, cmd('TLBI_NH_VA', { asid: 9, addr: VA + 0x5000 }));
      expect(s.w.model.stats.iotlbInvalidated).toBe(1);
      expect(hits(s.w, S1_PSID, VA + 0x3000)).toBe(false);
    });

    test(`${how}: NH_VA of an ASID drops a global (nG = 0) entry at Addr, whichever ASID it names`, () => {
      for (const asid of [9, 10]) {
        const s = s1Stream();
        s.pt.map(VA, s.data, 0x1000, RW | PROT.GLOBAL);
        padded(s, pad);
        hits(s.w, S1_PSID, VA);
        run(s.w.model, cmd('TLBI_NH_VA', { asid, addr: VA }));
        expect(s.w.model.stats.iotlbInvalidated, `ASID ${asid}`).toBe(1);
        expect(hits(s.w, S1_PSID, VA), `ASID ${asid}`).toBe(false);
      }
    });

    test(`${how}: a TG names the granule of the entries it drops: a 4K range over a cached 16K page leaves it, a 16K one drops it`, () => {
      for (const [tg, dropped] of [[1, 0], [2, 1]] as const) {
        const s = s1Stream({ granule: 16384 });
        s.pt.map(VA, s.data, 16384, RW);
        if (pad !== 0) s.pt.map(FAR, s.data + 2 * MiB, pad * 16384, RW);
        for (let p = 0; p < pad; p++) hits(s.w, S1_PSID, FAR + p * 16384);
        hits(s.w, S1_PSID, VA);
        run(s.w.model, cmd('TLBI_NH_VA', { asid: 9, addr: VA, tg, num: 0, scale: 0, ttl: 3, leaf: 1 }));
        expect(s.w.model.stats.iotlbInvalidated, `TG ${tg}`).toBe(dropped);
        expect(hits(s.w, S1_PSID, VA), `TG ${tg}`).toBe(dropped === 0);
      }
    });
  }

  test('S2_IPA drops stage-2 entries only: a global stage-1 entry whose VA equals the IPA stays (split nested entries, probes)', () => {
    const { w, vms } = world([{ vmid: 4, psids: [1], asid: 9 }], {}, { combinedNested: false });
    const vm = vms[0]!;
    // VA = the data page's own IPA, so the stage-1 entry and the stage-2 entry of the data share a key but for the tag.
    const ipa = vm.dataIpa;
    vm.pt.map(ipa, ipa, 0x1000, RW | PROT.GLOBAL);
    hits(w, 1, ipa);
    const s2Walks = w.model.stats.s2Walks;
    run(w.model, cmd('TLBI_S2_IPA', { vmid: 4, addr: ipa }));
    expect(w.model.stats.iotlbInvalidated).toBe(1);
    // Stage 1 still hits (no stage-1 walk); the data's stage 2 is walked again.
    expect(hits(w, 1, ipa)).toBe(true);
    expect(w.model.stats.s2Walks).toBe(s2Walks + 1);
  });
});
