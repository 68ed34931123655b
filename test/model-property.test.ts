// The IOTLB coherence property: after a PTE change plus the invalidation Linux
// would issue for it plus CMD_SYNC, translate() agrees with an uncached
// reference (a shadow of the guest's mappings), and VM A's commands never
// touch VM B.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { ACCESS, PROT, type TranslateResult } from '../src/model/index.ts';
import { MiB, cmd, linuxRangeTlbi, makeVm, makeWorld, run, type Vm, type World } from './model-fixture.ts';

const VA = 0x4000_0000;
const PAGES = 1024; // a 4 MiB window: two 2 MiB block slots
const ASID = 7;
const VMID = 3;
const PSID = 50;

interface Page { ipa: number; prot: number }
type Shadow = (Page | undefined)[];

function expected(vm: Vm, shadow: Shadow, page: number, access: number): TranslateResult | 'PERM' | 'TRANS' {
  const p = shadow[page];
  if (!p) return 'TRANS';
  if (access & ACCESS.WRITE && !(p.prot & PROT.WRITE)) return 'PERM';
  if (!(access & ACCESS.PRIV) && p.prot & PROT.PRIV) return 'PERM';
  return { pa: vm.gm.paOf(p.ipa), sizeLog2: 0 };
}

function check(w: World, vm: Vm, shadow: Shadow, page: number, access: number): void {
  const got = w.model.translateIova(PSID, -1, VA + page * 4096, access);
  const want = expected(vm, shadow, page, access);
  if (want === 'TRANS') expect(got).toMatchObject({ fault: 'F_TRANSLATION' });
  else if (want === 'PERM') expect(got).toMatchObject({ fault: 'F_PERMISSION' });
  else expect(got).toMatchObject({ pa: (want as { pa: number }).pa });
}

const prot = fc.constantFrom(PROT.READ, PROT.READ | PROT.WRITE, PROT.READ | PROT.WRITE | PROT.PRIV);
const inval = fc.constantFrom('perPage', 'linuxRange', 'asid', 'vaa', 'all', 's12') as fc.Arbitrary<string>;
const op = fc.oneof(
  fc.record({ k: fc.constant('map' as const), page: fc.nat(PAGES - 1), n: fc.integer({ min: 1, max: 40 }), ipaPage: fc.nat(PAGES - 41), prot, inval }),
  fc.record({ k: fc.constant('block' as const), slot: fc.nat(1), ipaBlock: fc.nat(1), prot, inval }),
  fc.record({ k: fc.constant('unmap' as const), page: fc.nat(PAGES - 1), n: fc.integer({ min: 1, max: 600 }), inval }),
  fc.record({ k: fc.constant('protect' as const), page: fc.nat(PAGES - 1), n: fc.integer({ min: 1, max: 600 }), prot, inval }),
  fc.record({ k: fc.constant('translate' as const), page: fc.nat(PAGES - 1), access: fc.constantFrom(ACCESS.READ, ACCESS.WRITE, ACCESS.READ | ACCESS.PRIV, ACCESS.WRITE | ACCESS.PRIV) }),
);

function invalidate(w: World, kind: string, page: number, n: number): void {
  const va = VA + page * 4096;
  // Blocks may be involved (split, replaced): like io-pgtable's walk flush, no leaf/TTL hint.
  switch (kind) {
    case 'perPage': {
      const c: Uint32Array[] = [];
      for (let i = 0; i < n; i++) c.push(cmd('TLBI_NH_VA', { asid: ASID, vmid: VMID, addr: va + i * 4096 }));
      // A block entry may cover pages outside [page, page+n): flush the 2M blocks the range touches too.
      for (let b = Math.floor(va / (2 * MiB)); b * 2 * MiB < va + n * 4096; b++) c.push(cmd('TLBI_NH_VA', { asid: ASID, vmid: VMID, addr: b * 2 * MiB }));
      run(w.model, ...c);
      break;
    }
    case 'linuxRange': run(w.model, ...linuxRangeTlbi(ASID, VMID, va, n * 4096, 4096, false)); break;
    case 'asid': run(w.model, cmd('TLBI_NH_ASID', { asid: ASID, vmid: VMID })); break;
    case 'vaa':
      run(w.model, n > 32 ? cmd('TLBI_NH_ALL', { vmid: VMID }) : cmd('TLBI_NH_VAA', { vmid: VMID, addr: va, tg: n === 1 ? 0 : 1, num: n - 1 }));
      break;
    case 'all': run(w.model, cmd('TLBI_NH_ALL', { vmid: VMID })); break;
    default: run(w.model, cmd('TLBI_S12_VMALL', { vmid: VMID }));
  }
}

describe('IOTLB coherence against an uncached reference', () => {
  test('after a PTE change + Linux-style invalidation + CMD_SYNC, translate never returns the old mapping', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 40 }), (ops) => {
        const w = makeWorld({}, { iotlbEntries: 512 }, 40 * MiB);
        const vm = makeVm(w, { vmid: VMID, psids: [PSID], asid: ASID });
        const shadow: Shadow = new Array(PAGES).fill(undefined);
        for (const o of ops) {
          if (o.k === 'translate') {
            check(w, vm, shadow, o.page, o.access);
            continue;
          }
          let page: number, n: number;
          if (o.k === 'block') {
            page = o.slot * 512;
            n = 512;
            vm.pt.map(VA + page * 4096, vm.dataIpa + o.ipaBlock * 2 * MiB, 2 * MiB, o.prot);
            for (let i = 0; i < n; i++) shadow[page + i] = { ipa: vm.dataIpa + o.ipaBlock * 2 * MiB + i * 4096, prot: o.prot };
          } else {
            page = o.page;
            n = Math.min(o.n, PAGES - o.page);
            if (o.k === 'map') {
              vm.pt.map(VA + page * 4096, vm.dataIpa + o.ipaPage * 4096, n * 4096, o.prot);
              for (let i = 0; i < n; i++) shadow[page + i] = { ipa: vm.dataIpa + (o.ipaPage + i) * 4096, prot: o.prot };
            } else if (o.k === 'unmap') {
              vm.pt.unmap(VA + page * 4096, n * 4096);
              for (let i = 0; i < n; i++) shadow[page + i] = undefined;
            } else {
              vm.pt.protect(VA + page * 4096, n * 4096, o.prot);
              for (let i = 0; i < n; i++) if (shadow[page + i]) shadow[page + i] = { ...shadow[page + i]!, prot: o.prot };
            }
          }
          invalidate(w, o.inval, page, n);
          // Every page the change touched agrees with the reference right after the sync.
          for (let i = 0; i < n; i += Math.max(1, n >> 3)) check(w, vm, shadow, page + i, ACCESS.READ);
        }
        for (let p = 0; p < PAGES; p += 37) check(w, vm, shadow, p, ACCESS.WRITE);
      }),
      { numRuns: 300 },
    );
  });

  test('caching really happens: before the invalidation the stale translation IS returned', () => {
    const w = makeWorld();
    const vm = makeVm(w, { vmid: VMID, psids: [PSID], asid: ASID });
    vm.pt.map(VA, vm.dataIpa, 0x2000, PROT.READ | PROT.WRITE);
    const old = vm.gm.paOf(vm.dataIpa + 0x1000);
    expect(w.model.translateIova(PSID, -1, VA + 0x1000, ACCESS.WRITE)).toMatchObject({ pa: old });
    expect(w.model.translateIova(PSID, -1, VA, ACCESS.READ)).toHaveProperty('pa');
    vm.pt.map(VA + 0x1000, vm.dataIpa + 0x5000, 0x1000, PROT.READ);
    vm.pt.unmap(VA, 0x1000);
    // No invalidation yet: an SMMU without an IOTLB would already see the new tables.
    expect(w.model.translateIova(PSID, -1, VA + 0x1000, ACCESS.WRITE)).toMatchObject({ pa: old });
    expect(w.model.translateIova(PSID, -1, VA, ACCESS.READ)).toHaveProperty('pa');
    run(w.model, ...linuxRangeTlbi(ASID, VMID, VA, 0x2000));
    expect(w.model.translateIova(PSID, -1, VA + 0x1000, ACCESS.WRITE)).toMatchObject({ fault: 'F_PERMISSION' });
    expect(w.model.translateIova(PSID, -1, VA + 0x1000, ACCESS.READ)).toMatchObject({ pa: vm.gm.paOf(vm.dataIpa + 0x5000) });
    expect(w.model.translateIova(PSID, -1, VA, ACCESS.READ)).toMatchObject({ fault: 'F_TRANSLATION' });
  });
});

describe('isolation', () => {
  const A = { vmid: 1, psids: [10, 11] };
  const B = { vmid: 2, psids: [20, 21] };
  const anyCmd = fc.oneof(
    fc.record({ op: fc.constantFrom('TLBI_NH_ALL', 'TLBI_NH_ASID', 'TLBI_S12_VMALL', 'CMD_SYNC' as const) as fc.Arbitrary<'TLBI_NH_ALL'>, asid: fc.nat(0xffff) }),
    fc.record({
      op: fc.constantFrom('TLBI_NH_VA', 'TLBI_NH_VAA', 'TLBI_S2_IPA') as fc.Arbitrary<'TLBI_NH_VA'>,
      asid: fc.nat(0xffff), addr: fc.bigInt({ min: 0n, max: (1n << 52n) - 1n }).map((a) => a & ~0xfffn),
      tg: fc.nat(3), ttl: fc.nat(3), num: fc.nat(31), scale: fc.nat(31), leaf: fc.nat(1),
    }),
    fc.record({
      op: fc.constantFrom('ATC_INV', 'CFGI_CD', 'CFGI_CD_ALL') as fc.Arbitrary<'ATC_INV'>,
      sidIdx: fc.nat(1), ssid: fc.nat(0xfffff), ssv: fc.nat(1), global: fc.nat(1), size: fc.nat(52),
      addr: fc.bigInt({ min: 0n, max: (1n << 48n) - 1n }).map((a) => a & ~0xfffn),
    }),
  );

  test("random command streams carrying VM A's VMID and pSIDs never change VM B's translations or evict its entries", () => {
    fc.assert(
      fc.property(fc.array(anyCmd, { minLength: 1, maxLength: 30 }), (cmds) => {
        const w = makeWorld({}, {}, 80 * MiB);
        const a = makeVm(w, { ...A, asid: 1 });
        const b = makeVm(w, { ...B, asid: 1 });
        for (const vm of [a, b]) {
          vm.pt.map(VA, vm.dataIpa, 0x8000, PROT.READ | PROT.WRITE);
          vm.pt.map(VA + 2 * MiB, vm.dataIpa + 2 * MiB, 2 * MiB, PROT.READ | PROT.GLOBAL);
        }
        const probes = [VA, VA + 0x3000, VA + 0x7000, VA + 2 * MiB + 0x1234];
        const before = B.psids.flatMap((sid) => probes.map((va) => w.model.translateIova(sid, -1, va, ACCESS.READ)));
        for (const psid of A.psids) for (const va of probes) w.model.translateIova(psid, -1, va, ACCESS.READ);
        // B's guest edits its tables without telling anyone: any B re-walk would show up.
        b.pt.unmap(VA, 0x8000);
        const walks = w.model.stats.s1Walks + w.model.stats.s2Walks;
        for (const c of cmds) {
          const { op, sidIdx, ...rest } = c as typeof c & { sidIdx?: number };
          const fields: Record<string, number | bigint> = { ...rest, vmid: A.vmid };
          delete fields.op;
          if (sidIdx !== undefined) fields.sid = A.psids[sidIdx]!;
          w.model.execute(cmd(op, fields as never));
        }
        const after = B.psids.flatMap((sid) => probes.map((va) => w.model.translateIova(sid, -1, va, ACCESS.READ)));
        expect(after).toEqual(before);
        expect(w.model.stats.s1Walks + w.model.stats.s2Walks).toBe(walks);
      }),
      { numRuns: 200 },
    );
  });
});
