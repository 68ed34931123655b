import { describe, expect, test } from 'vitest';
import { ACCESS, PROT } from '../src/model/index.ts';
import { GiB, MiB, cmd, makeVm, makeWorld, run } from './model-fixture.ts';

const VA = 0x4000_0000;
const RW = PROT.READ | PROT.WRITE;

function cached(w: ReturnType<typeof makeWorld>, psid: number, va: number): boolean {
  const walks = w.model.stats.s1Walks;
  w.model.translateIova(psid, -1, va, ACCESS.READ);
  return w.model.stats.s1Walks === walks;
}

describe('TTL and TG hints', () => {
  test('TTL=3 leaves a 2 MiB block entry (level 2); TTL=2 or TTL=0 drops it', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 4, psids: [1], asid: 9 });
    vm.pt.map(VA, vm.dataIpa - (vm.dataIpa % (2 * MiB)), 2 * MiB, RW);
    expect(w.model.translateIova(1, -1, VA + 0x1234, ACCESS.READ)).toHaveProperty('pa');
    run(w.model, cmd('TLBI_NH_VA', { asid: 9, vmid: 4, addr: VA, tg: 1, ttl: 3, num: 0, scale: 0, leaf: 1 }));
    expect(cached(w, 1, VA + 0x1234)).toBe(true);
    run(w.model, cmd('TLBI_NH_VA', { asid: 9, vmid: 4, addr: VA + 0x10000, tg: 1, ttl: 2, leaf: 1 }));
    expect(cached(w, 1, VA)).toBe(false);
    run(w.model, cmd('TLBI_NH_VA', { asid: 9, vmid: 4, addr: VA + 0x1ff000, tg: 1, ttl: 0, num: 0, scale: 1 }));
    expect(cached(w, 1, VA)).toBe(false);
    // TG=0: one address, any level.
    run(w.model, cmd('TLBI_NH_VA', { asid: 9, vmid: 4, addr: VA + 0x1ff000 }));
    expect(cached(w, 1, VA)).toBe(false);
  });

  test('16K and 64K granules walk and are hit by TGs of their own granule', () => {
    for (const [granule, tg] of [[16384, 2], [65536, 3]] as const) {
      const w = makeWorld();
      const vm = makeVm(w, { vmid: 4, psids: [1], asid: 9, granule });
      vm.pt.map(VA, vm.dataIpa, granule * 2, RW);
      expect(w.model.translateIova(1, -1, VA + granule + 8, ACCESS.WRITE)).toEqual({ pa: vm.gm.paOf(vm.dataIpa + granule + 8), sizeLog2: Math.log2(granule) });
      run(w.model, cmd('TLBI_NH_VA', { asid: 9, vmid: 4, addr: VA, tg: tg === 2 ? 3 : 2, num: 1, ttl: 3 }));
      expect(cached(w, 1, VA + granule)).toBe(true);
      run(w.model, cmd('TLBI_NH_VA', { asid: 9, vmid: 4, addr: VA, tg, num: 1, ttl: 3 }));
      expect(cached(w, 1, VA + granule)).toBe(false);
    }
  });
});

describe('tags', () => {
  test('global (nG=0) entries survive NH_ASID, fall to NH_VA of any ASID, NH_VAA and NH_ALL', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 4, psids: [1], asid: 9 });
    vm.pt.map(VA, vm.dataIpa, 0x1000, RW | PROT.GLOBAL);
    vm.pt.map(VA + 0x1000, vm.dataIpa, 0x1000, RW);
    w.model.translateIova(1, -1, VA, ACCESS.READ);
    w.model.translateIova(1, -1, VA + 0x1000, ACCESS.READ);
    run(w.model, cmd('TLBI_NH_ASID', { asid: 9, vmid: 4 }));
    expect(cached(w, 1, VA)).toBe(true);
    expect(cached(w, 1, VA + 0x1000)).toBe(false);
    run(w.model, cmd('TLBI_NH_VA', { asid: 1234, vmid: 4, addr: VA }));
    expect(cached(w, 1, VA)).toBe(false);
    run(w.model, cmd('TLBI_NH_VAA', { vmid: 4, addr: VA }));
    expect(cached(w, 1, VA)).toBe(false);
    run(w.model, cmd('TLBI_NH_ALL', { vmid: 4 }));
    expect(cached(w, 1, VA)).toBe(false);
    run(w.model, cmd('TLBI_NH_ALL', { vmid: 5 }), cmd('TLBI_NSNH_ALL'));
    expect(cached(w, 1, VA)).toBe(false);
  });

  test('16-bit ASIDs and VMIDs are distinct tags', () => {
    const w = makeWorld();
    const a = makeVm(w, { vmid: 0x1204, psids: [1], asid: 0x3409 });
    a.pt.map(VA, a.dataIpa, 0x1000, RW);
    w.model.translateIova(1, -1, VA, ACCESS.READ);
    run(w.model, cmd('TLBI_NH_ASID', { asid: 0x09, vmid: 0x1204 }), cmd('TLBI_NH_ALL', { vmid: 0x04 }), cmd('TLBI_S12_VMALL', { vmid: 0x04 }));
    expect(cached(w, 1, VA)).toBe(true);
    run(w.model, cmd('TLBI_NH_ASID', { asid: 0x3409, vmid: 0x1204 }));
    expect(cached(w, 1, VA)).toBe(false);
  });

  test('ASID16/VMID16 off: the CD/STE upper byte is ignored and a command with a non-zero upper byte hits nothing', () => {
    const w = makeWorld({ ASID16: false, VMID16: false });
    const vm = makeVm(w, { vmid: 0x0004, psids: [1], asid: 0x0009 });
    vm.pt.map(VA, vm.dataIpa, 0x1000, RW);
    w.model.translateIova(1, -1, VA, ACCESS.READ);
    run(w.model, cmd('TLBI_NH_ASID', { asid: 0x0109, vmid: 4 }), cmd('TLBI_NH_ALL', { vmid: 0x0104 }), cmd('TLBI_NH_VA', { asid: 0x0109, vmid: 4, addr: VA }));
    expect(cached(w, 1, VA)).toBe(true);
    run(w.model, cmd('TLBI_NH_ASID', { asid: 0x09, vmid: 4 }));
    expect(cached(w, 1, VA)).toBe(false);
  });
});

describe('stage 2', () => {
  for (const combinedNested of [true, false]) {
    test(`${combinedNested ? 'combined' : 'split'} nested entries: TLBI_S2_IPA ${combinedNested ? 'leaves the combined VA->PA entry (spec: not required to drop S1+S2 entries), the TLBI_NH_ALL Linux adds for a nesting parent drops it' : 'alone drops the nested translation of that IPA'}; S12_VMALL drops both stages`, () => {
      const w = makeWorld({}, { combinedNested });
      const vm = makeVm(w, { vmid: 4, psids: [1], asid: 9 });
      vm.pt.map(VA, vm.dataIpa, 0x2000, RW);
      const ipa = vm.dataIpa + 0x1000;
      expect(w.model.translateIova(1, -1, VA + 0x1000, ACCESS.READ)).toMatchObject({ pa: vm.gm.paOf(ipa) });
      // The host moves the IPA page to fresh memory (splitting its 2M block).
      const fresh = w.layout.alloc(0x1000);
      vm.s2.table.map(ipa, fresh, 0x1000, PROT.READ | PROT.WRITE);
      expect(w.model.translateIova(1, -1, VA + 0x1000, ACCESS.READ)).toMatchObject({ pa: vm.gm.paOf(ipa) });
      run(w.model, cmd('TLBI_S2_IPA', { vmid: 4, addr: ipa - (ipa % (2 * MiB)), tg: 1, num: 0, scale: 9 }));
      if (combinedNested) {
        // arm_smmu_tlb_inv_range_domain: a nest_parent's S2 range is followed by TLBI_NH_ALL(vmid).
        expect(w.model.translateIova(1, -1, VA + 0x1000, ACCESS.READ)).toMatchObject({ pa: vm.gm.paOf(ipa) });
        run(w.model, cmd('TLBI_NH_ALL', { vmid: 4 }));
      }
      expect(w.model.translateIova(1, -1, VA + 0x1000, ACCESS.READ)).toEqual({ pa: fresh, sizeLog2: 12 });
      // Unmapping at stage 2 shows as a stage-2 fault once S12_VMALL has run.
      vm.s2.table.unmap(ipa, 0x1000);
      run(w.model, cmd('TLBI_S12_VMALL', { vmid: 4 }));
      expect(w.model.translateIova(1, -1, VA + 0x1000, ACCESS.READ)).toMatchObject({ fault: 'F_TRANSLATION', stage: 2, ipa });
      expect(w.model.translateIova(1, -1, VA, ACCESS.READ)).toHaveProperty('pa');
    });
  }

  test('stage-2 faults on the CD fetch are class CD, on a table fetch class TT', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 4, psids: [1], asid: 9 });
    vm.pt.map(VA, vm.dataIpa, 0x1000, RW);
    vm.pt.map(VA + 0x1000, vm.dataIpa, 0x1000, RW);
    expect(w.model.translateIova(1, -1, VA, ACCESS.READ)).toHaveProperty('pa');
    vm.s2.table.unmap(0, 2 * MiB); // the guest's tables and CD table live here
    run(w.model, cmd('TLBI_S12_VMALL', { vmid: 4 }));
    // The CD is still cached (no CFGI_CD): the walk's first table fetch faults.
    expect(w.model.translateIova(1, -1, VA + 0x1000, ACCESS.READ)).toMatchObject({ fault: 'F_TRANSLATION', stage: 2, class: 'TT', ipa: vm.pt.root });
    run(w.model, cmd('CFGI_CD_ALL', { sid: 1 }));
    expect(w.model.translateIova(1, -1, VA + 0x1000, ACCESS.READ)).toMatchObject({ fault: 'F_TRANSLATION', stage: 2, class: 'CD' });
  });
});

describe('ATS', () => {
  test('the ATC serves translations until an ATC_INV covering them', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 4, psids: [1], asid: 9 });
    vm.pt.map(VA, vm.dataIpa, 0x4000, RW);
    const pa = vm.gm.paOf(vm.dataIpa + 0x2000);
    expect(w.model.translateIova(1, -1, VA + 0x2000, ACCESS.READ, { ats: true })).toMatchObject({ pa });
    vm.pt.unmap(VA, 0x4000);
    run(w.model, cmd('TLBI_NH_ASID', { asid: 9, vmid: 4 }));
    // The device's ATC still holds it: ATS needs its own invalidation.
    expect(w.model.translateIova(1, -1, VA + 0x2000, ACCESS.READ, { ats: true })).toMatchObject({ pa });
    expect(w.model.stats.atcHits).toBe(1);
    // A span that misses: 4K at VA+0x1000; an SSID-scoped one for another PASID.
    run(w.model, cmd('ATC_INV', { sid: 1, addr: VA + 0x1000, size: 0 }), cmd('ATC_INV', { sid: 1, ssv: 1, ssid: 3, addr: VA, size: 4 }));
    expect(w.model.translateIova(1, -1, VA + 0x2000, ACCESS.READ, { ats: true })).toMatchObject({ pa });
    // Size 2 = 16K aligned down to VA: covers VA+0x2000.
    run(w.model, cmd('ATC_INV', { sid: 1, addr: VA + 0x3000, size: 2 }));
    expect(w.model.translateIova(1, -1, VA + 0x2000, ACCESS.READ, { ats: true })).toMatchObject({ fault: 'F_TRANSLATION' });
    expect(w.model.stats.atcInvalidated).toBe(1);
    expect(w.model.execute(cmd('ATC_INV', { sid: 1, size: 53 }))).not.toBe(0);
  });

  test('ATC_INV Size=52 empties the device ATC; other devices keep theirs', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: 4, psids: [1, 2], asid: 9 });
    vm.pt.map(VA, vm.dataIpa, 0x1000, RW);
    vm.pt.map(GiB * 64, vm.dataIpa, 0x1000, RW);
    for (const sid of [1, 2]) for (const va of [VA, GiB * 64]) w.model.translateIova(sid, -1, va, ACCESS.READ, { ats: true });
    run(w.model, cmd('ATC_INV', { sid: 1, size: 52 }));
    expect(w.model.stats.atcInvalidated).toBe(2);
  });
});

describe('walk cache (SmmuModelOptions.walkCacheEntries)', () => {
  /**
   * The guest replaces the level-3 table under VA's 2 MiB region (a non-leaf
   * change: the level-2 table descriptor now points elsewhere), then
   * invalidates with Leaf=1 (spec 4.4.2: Leaf=1 need only drop leaf entries)
   * or Leaf=0. Returns the page VA + 0x1000 translates to afterwards.
   */
  function afterTableChange(walkCacheEntries: number, leaf: 0 | 1): { pa: number; old: number; fresh: number } {
    const w = makeWorld({}, { walkCacheEntries });
    const vm = makeVm(w, { vmid: 4, psids: [1], asid: 9 });
    vm.pt.map(VA, vm.dataIpa, 0x2000, RW);
    expect(w.model.translateIova(1, -1, VA, ACCESS.READ)).toMatchObject({ pa: vm.gm.paOf(vm.dataIpa) });
    vm.pt.unmap(VA - (VA % (2 * MiB)), 2 * MiB); // clears the level-2 table descriptor
    vm.pt.map(VA, vm.dataIpa + 0x4000, 0x2000, RW); // a new level-3 table
    run(w.model, cmd('TLBI_NH_VA', { asid: 9, vmid: 4, addr: VA, leaf }), cmd('TLBI_NH_VA', { asid: 9, vmid: 4, addr: VA + 0x1000, leaf }));
    const r = w.model.translateIova(1, -1, VA + 0x1000, ACCESS.READ) as { pa: number };
    return { pa: r.pa, old: vm.gm.paOf(vm.dataIpa + 0x1000), fresh: vm.gm.paOf(vm.dataIpa + 0x5000) };
  }

  test('a Leaf=1 TLBI after a table (non-leaf) change leaves a stale walk: the old level-3 table is still used', () => {
    const r = afterTableChange(256, 1);
    expect(r.pa).toBe(r.old);
  });

  test('the Leaf=0 TLBI Linux sends when tables change (tlb_flush_walk) drops the cached table descriptors', () => {
    const r = afterTableChange(256, 0);
    expect(r.pa).toBe(r.fresh);
  });

  test('a Leaf=0 TLBI drops the cached table descriptors even when no IOTLB entry of its VMID is left to drop', () => {
    const w = makeWorld({}, { walkCacheEntries: 256 });
    const vm = makeVm(w, { vmid: 4, psids: [1], asid: 9 });
    vm.pt.map(VA, vm.dataIpa, 0x2000, RW);
    expect(w.model.translateIova(1, -1, VA, ACCESS.READ)).toMatchObject({ pa: vm.gm.paOf(vm.dataIpa) });
    // The leaf goes (Leaf=1); the walk cache keeps the tables, and the VMID's IOTLB bucket is empty.
    run(w.model, cmd('TLBI_NH_VA', { asid: 9, vmid: 4, addr: VA, leaf: 1 }));
    expect(w.model.stats.iotlbInvalidated).toBeGreaterThan(0);
    vm.pt.unmap(VA - (VA % (2 * MiB)), 2 * MiB);
    vm.pt.map(VA, vm.dataIpa + 0x4000, 0x2000, RW);
    const dropped = w.model.stats.walkCacheInvalidated;
    run(w.model, cmd('TLBI_NH_VA', { asid: 9, vmid: 4, addr: VA + 0x1000, leaf: 0 }));
    expect(w.model.stats.walkCacheInvalidated).toBeGreaterThan(dropped);
    expect(w.model.translateIova(1, -1, VA + 0x1000, ACCESS.READ)).toMatchObject({ pa: vm.gm.paOf(vm.dataIpa + 0x5000) });
  });

  test('without a walk cache every walk reads the tables, so even Leaf=1 sees the new table', () => {
    const r = afterTableChange(0, 1);
    expect(r.pa).toBe(r.fresh);
  });
});
