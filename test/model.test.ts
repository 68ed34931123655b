import { describe, expect, test } from 'vitest';
import { decodeWords, encodeCommand } from '../src/codec.ts';
import { CERROR } from '../src/errors.ts';
import { FIELD_COUNT } from '../src/fields.ts';
import {
  ACCESS, PROT, STE_CFG, T_OUT, TRANSLATE_OUT_LEN, installNestedSte, writeGuestCd, writeGuestSte, readGuestSte,
} from '../src/model/index.ts';
import { MiB, cmd, linuxRangeTlbi, makeVm, makeWorld, run } from './model-fixture.ts';

const RW = PROT.READ | PROT.WRITE;
const VA = 0x4000_0000;

describe('translation', () => {
  test('nested walk: VA -> IPA (guest stage 1) -> PA (host stage 2), then served from the IOTLB', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 5, psids: [100] });
    vm.pt.map(VA, vm.dataIpa, 0x3000, RW);
    const pa = vm.gm.paOf(vm.dataIpa + 0x1010);
    expect(w.model.translateIova(100, -1, VA + 0x1010, ACCESS.WRITE)).toEqual({ pa, sizeLog2: 12 });
    const walks = w.model.stats.s1Walks;
    const out = new Float64Array(TRANSLATE_OUT_LEN);
    expect(w.model.translate(100, -1, VA + 0x1010, 0, ACCESS.READ, out)).toBe(0);
    expect(out[T_OUT.PA_LO]! + out[T_OUT.PA_HI]! * 2 ** 32).toBe(pa);
    expect(w.model.stats.s1Walks).toBe(walks);
    expect(w.model.stats.iotlbHits).toBeGreaterThan(0);
  });

  test('faults: unmapped, read-only write, privileged-only, exec-never, unknown SID, SSID without CD table', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 5, psids: [100] });
    vm.pt.map(VA, vm.dataIpa, 0x1000, PROT.READ);
    vm.pt.map(VA + 0x1000, vm.dataIpa, 0x1000, RW | PROT.PRIV);
    const m = w.model;
    expect(m.translateIova(100, -1, VA + 0x5000, ACCESS.READ)).toMatchObject({ fault: 'F_TRANSLATION', stage: 1 });
    expect(m.translateIova(100, -1, VA, ACCESS.WRITE)).toMatchObject({ fault: 'F_PERMISSION', stage: 1, level: 3 });
    expect(m.translateIova(100, -1, VA, ACCESS.EXEC)).toMatchObject({ fault: 'F_PERMISSION' });
    expect(m.translateIova(100, -1, VA + 0x1000, ACCESS.READ)).toMatchObject({ fault: 'F_PERMISSION' });
    expect(m.translateIova(100, -1, VA + 0x1000, ACCESS.WRITE | ACCESS.PRIV)).toHaveProperty('pa');
    expect(m.translateIova(101, -1, VA, ACCESS.READ)).toMatchObject({ fault: 'C_BAD_STREAMID' });
    expect(m.translateIova(100, 3, VA, ACCESS.READ)).toMatchObject({ fault: 'C_BAD_SUBSTREAMID' });
    expect(m.translateIova(100, -1, 2 ** 48, ACCESS.READ)).toMatchObject({ fault: 'F_TRANSLATION' });
    expect(m.translateIova(100, -1, 2n ** 63n, ACCESS.READ)).toMatchObject({ fault: 'F_TRANSLATION' });
  });

  test('a stage-1 output IPA outside guest RAM faults at stage 2: the guest cannot reach host memory', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 5, psids: [100] });
    vm.pt.map(VA, 64 * MiB, 0x1000, RW);
    expect(w.model.translateIova(100, -1, VA, ACCESS.READ)).toMatchObject({ fault: 'F_TRANSLATION', stage: 2, ipa: 64 * MiB, class: 'IN' });
  });
});

describe('configuration caches', () => {
  test('a changed CD takes effect only after CFGI_CD', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 5, psids: [100], asid: 1 });
    vm.pt.map(VA, vm.dataIpa, 0x1000, RW);
    expect(w.model.translateIova(100, -1, VA, ACCESS.READ)).toHaveProperty('pa');
    writeGuestCd(vm.gm, vm.cdTable, 0, { asid: 1, ttb0: vm.pt.root, invalid: true });
    run(w.model, cmd('TLBI_NH_ASID', { asid: 1, vmid: 5 }));
    // The cached CD still points at the old table: the walk succeeds.
    expect(w.model.translateIova(100, -1, VA, ACCESS.READ)).toHaveProperty('pa');
    run(w.model, cmd('CFGI_CD', { sid: 100, ssid: 0, leaf: 1 }));
    expect(w.model.translateIova(100, -1, VA, ACCESS.READ)).toMatchObject({ fault: 'C_BAD_CD' });
  });

  test('CFGI_STE drops the STE and its CDs; CFGI_ALL drops every stream', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 5, psids: [100, 101] });
    vm.pt.map(VA, vm.dataIpa, 0x1000, RW);
    for (const sid of [100, 101]) expect(w.model.translateIova(sid, -1, VA, ACCESS.READ)).toHaveProperty('pa');
    // The guest switches vSTE 0 to abort; the VMM installs it on the trapped CFGI_STE.
    writeGuestSte(vm.gm, vm.strtab, 0, { config: STE_CFG.ABORT });
    installNestedSte(w.mem, vm.stePa.get(100)!, readGuestSte(vm.gm, vm.strtab, 0), vm.s2);
    expect(w.model.translateIova(100, -1, VA, ACCESS.READ)).toHaveProperty('pa');
    run(w.model, cmd('CFGI_STE', { sid: 100, leaf: 1 }));
    expect(w.model.translateIova(100, -1, VA, ACCESS.READ)).toMatchObject({ fault: 'STE_ABORT' });
    expect(w.model.translateIova(101, -1, VA, ACCESS.READ)).toHaveProperty('pa');
    writeGuestCd(vm.gm, vm.cdTable, 0, { asid: 1, ttb0: vm.pt.root, invalid: true });
    run(w.model, cmd('CFGI_STE_RANGE', { sid: 0, range: 31 }));
    expect(w.model.translateIova(101, -1, VA, ACCESS.READ)).toMatchObject({ fault: 'C_BAD_CD' });
    expect(w.model.stats.steInvalidated).toBe(3);
  });

  test('CFGI_STE_RANGE covers the aligned 2^(Range+1) SIDs only', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 5, psids: [0x40, 0x43, 0x44] });
    vm.pt.map(VA, vm.dataIpa, 0x1000, RW);
    for (const sid of [0x40, 0x43, 0x44]) w.model.translateIova(sid, -1, VA, ACCESS.READ);
    run(w.model, cmd('CFGI_STE_RANGE', { sid: 0x42, range: 1 }));
    expect(w.model.stats.steInvalidated).toBe(2);
  });
});

describe('commands', () => {
  test('features gate commands with CERROR_ILL; the reserved range combination is ILL', () => {
    const w = makeWorld({ S1P: false, HYP: false, ATS: false, PRI: false, STALL_MODEL: 1 });
    for (const op of ['TLBI_NH_ASID', 'CFGI_CD', 'TLBI_EL2_ALL', 'ATC_INV', 'PRI_RESP', 'RESUME', 'STALL_TERM', 'CFGI_VMS_PIDM'] as const) {
      expect(w.model.execute(cmd(op))).toBe(CERROR.ILL);
    }
    const w2 = makeWorld();
    expect(w2.model.execute(cmd('TLBI_NH_VA', { tg: 1 }))).toBe(CERROR.ILL);
    expect(w2.model.execute(cmd('TLBI_S2_IPA', { tg: 1 }))).toBe(CERROR.ILL);
    expect(w2.model.execute(cmd('CFGI_STE', { ssec: 1 }))).toBe(CERROR.ILL);
    expect(w2.model.execute(cmd('CMD_SYNC', { cs: 2 }))).toBe(0);
    expect(w2.model.execute(cmd('PRI_RESP', { resp: 2 }))).toBe(0);
    expect(w2.model.stats.pageResponses).toBe(1);
  });

  test('huge ranges: 1 GiB and NUM=31 SCALE=31 at 64K finish without visiting each page', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 5, psids: [100] });
    vm.pt.map(VA, vm.dataIpa, 0x4000, RW);
    vm.pt.map(0x7000_0000_0000 - 0x1000, vm.dataIpa, 0x1000, RW);
    for (const va of [VA, VA + 0x3000, 0x7000_0000_0000 - 0x1000]) w.model.translateIova(100, -1, va, ACCESS.READ);
    run(w.model, cmd('TLBI_NH_VA', { asid: 1, vmid: 5, addr: VA, tg: 1, num: 0, scale: 18 }));
    expect(w.model.translateIova(100, -1, VA + 0x3000, ACCESS.READ)).toHaveProperty('pa');
    expect(w.model.stats.iotlbInvalidated).toBe(2);
    // TG = 64K restricts to 64K-granule entries: these 4K ones may (and here do) survive.
    run(w.model, cmd('TLBI_NH_VA', { asid: 1, vmid: 5, addr: 0, tg: 3, num: 31, scale: 31 }));
    expect(w.model.stats.iotlbInvalidated).toBe(2);
    // A range ending past 2^64 does not wrap or overflow.
    run(w.model, cmd('TLBI_NH_VA', { asid: 1, vmid: 5, addr: 2n ** 64n - 4096n, tg: 1, num: 31, scale: 31 }));
    expect(w.model.stats.iotlbInvalidated).toBe(2);
    run(w.model, cmd('TLBI_NH_VA', { asid: 1, vmid: 5, addr: 0, tg: 1, num: 31, scale: 31 }));
    expect(w.model.stats.iotlbInvalidated).toBe(4);
    run(w.model, cmd('TLBI_S2_IPA', { vmid: 5, addr: 0, tg: 1, num: 31, scale: 31 }));
    expect(w.model.iotlbSize).toBe(0);
  });
});

describe('linux builders', () => {
  test('linuxRangeTlbi splits like __arm_smmu_tlb_inv_range (35 pages = 3 + 32)', () => {
    const c = linuxRangeTlbi(1, 5, 0, 35 * 4096);
    expect(c.map((f) => [f[12], f[13]])).toEqual([[2, 0], [0, 5]]);
  });
});


describe('end to end through the codec', () => {
  test('an encoded TLBI_NH_VA, decoded by the hot-path decoder, invalidates in the model', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 5, psids: [100], asid: 1 });
    vm.pt.map(VA, vm.dataIpa, 0x2000, RW);
    w.model.translateIova(100, -1, VA + 0x1000, ACCESS.READ);
    vm.pt.unmap(VA, 0x2000);
    const [w0, w1] = encodeCommand({ op: 'TLBI_NH_VA', asid: 1, vmid: 5, addr: BigInt(VA), tg: 1, ttl: 3, num: 1, scale: 0, leaf: 1 } as never);
    const u = new Uint32Array([Number(w0 & 0xffffffffn), Number(w0 >> 32n), Number(w1 & 0xffffffffn), Number(w1 >> 32n)]);
    const f = new Uint32Array(FIELD_COUNT);
    expect(decodeWords(u, f, w.features)).toBe(0);
    expect(w.model.execute(f)).toBe(0);
    expect(w.model.translateIova(100, -1, VA + 0x1000, ACCESS.READ)).toMatchObject({ fault: 'F_TRANSLATION' });
  });
});
