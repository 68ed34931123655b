// Differential property (issue 10): random guest and host activity — stage-1
// map/unmap/remap, stage-1 table replacement, stage-2 remap, CD and STE
// changes — each followed by the invalidations Linux sends for it, with a
// random subset of them left out. The SMMU model (combined nested IOTLB
// entries and a walk cache) is compared with an uncached reference walk of
// the same memory. Each step first primes the model (translates the page it
// is about to change), so a left-out invalidation always has something to
// leave stale: the model must answer stale exactly when one was left out.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { ACCESS, PROT, SmmuModel, STE_CFG, TranslationTable, encodeSte, installNestedSte, writeGuestCd } from '../src/model/index.ts';
import { MiB, cmd, makeVm, makeWorld, run, type Vm, type World } from './model-fixture.ts';

const VMID = 4;
const ASID = 9;
const PSID = 1;
const VA = 0x4000_0000;
const RW = PROT.READ | PROT.WRITE;
/** Probe pages: even pages of two 2 MiB regions (the odd page after each is its table-change partner). */
const PAGES = [0, 2, 4, 6].flatMap((i) => [VA + i * 0x1000, VA + 2 * MiB + i * 0x1000]);

/** A change: the pages to probe, the invalidations Linux requires for it, and what is sent when some are left out. */
interface Change {
  probes: number[];
  units: string[];
  send: (kept: readonly boolean[]) => Uint32Array[];
}

/** Each unit is its own commands: send the kept ones. */
function independent(probes: number[], units: [string, Uint32Array[]][]): Change {
  return { probes, units: units.map((u) => u[0]), send: (kept) => units.flatMap((u, k) => (kept[k] ? u[1] : [])) };
}

class Rig {
  readonly w: World;
  readonly vm: Vm;
  readonly ref: SmmuModel;
  /** The two stage-1 tables a CD may point at, and what each maps (VA -> IPA). */
  readonly tables: [TranslationTable, TranslationTable];
  readonly maps: [Map<number, number>, Map<number, number>] = [new Map(), new Map()];
  active = 0;
  private nextIpa: number;
  private readonly stePa: number;

  constructor() {
    this.w = makeWorld({}, { combinedNested: true, walkCacheEntries: 512 }, 64 * MiB);
    this.vm = makeVm(this.w, { vmid: VMID, psids: [PSID], asid: ASID });
    this.stePa = this.vm.stePa.get(PSID)!;
    this.ref = new SmmuModel(this.w.mem, this.w.features);
    this.ref.attachStream(PSID, this.stePa);
    this.tables = [this.vm.pt, new TranslationTable(this.vm.gm, 1, { granule: 4096 })];
    this.nextIpa = this.vm.dataIpa;
    for (const t of [0, 1]) for (const p of PAGES) for (const v of [p, p + 0x1000]) this.map(t, v, this.fresh());
  }

  fresh(): number {
    this.nextIpa += 0x1000;
    return this.nextIpa;
  }

  map(t: number, va: number, ipa: number): void {
    this.tables[t]!.map(va, ipa, 0x1000, RW);
    this.maps[t]!.set(va, ipa);
  }

  /** What the model and an uncached walk of the same memory say about `va`. */
  answers(va: number): [string, string] {
    this.ref.execute(cmd('TLBI_NSNH_ALL'));
    this.ref.execute(cmd('CFGI_STE_RANGE', { range: 31 }));
    return [JSON.stringify(this.w.model.translateIova(PSID, -1, va, ACCESS.READ)), JSON.stringify(this.ref.translateIova(PSID, -1, va, ACCESS.READ))];
  }

  /** Forget everything cached, so the next step starts from a coherent model. */
  flush(): void {
    run(this.w.model, cmd('TLBI_NSNH_ALL'), cmd('CFGI_STE_RANGE', { range: 31 }));
  }

  /** Apply change `kind` at page `p`. */
  change(kind: string, p: number): Change {
    const t = this.active;
    const nhVa = (va: number, leaf: number): Uint32Array => cmd('TLBI_NH_VA', { asid: ASID, vmid: VMID, addr: va, leaf });
    switch (kind) {
      case 's1-remap':
        this.map(t, p, this.fresh());
        return independent([p], [['TLBI_NH_VA', [nhVa(p, 1)]]]);
      case 's1-unmap':
        this.tables[t]!.unmap(p, 0x1000);
        this.maps[t]!.delete(p);
        return independent([p], [['TLBI_NH_VA', [nhVa(p, 1)]]]);
      case 's1-table': {
        // A non-leaf change: a new level-3 table for p's 2 MiB region, every page in it remapped.
        const region = p - (p % (2 * MiB));
        const pages = [...this.maps[t]!.keys()].filter((v) => v >= region && v < region + 2 * MiB);
        this.tables[t]!.unmap(region, 2 * MiB);
        for (const v of pages) this.map(t, v, this.fresh());
        // Linux's tlb_flush_walk: Leaf=0 on p. Without "the leaf entry" it becomes a Leaf=0 TLBI of the
        // partner page (walk entries only); without "the walk" a Leaf=1 TLBI of p.
        return {
          probes: [p, p + 0x1000],
          units: ['leaf entry', 'walk (Leaf=0)'],
          send: ([leaf, walk]) => (leaf ? [nhVa(p, walk ? 0 : 1)] : walk ? [nhVa(p + 0x1000, 0)] : []),
        };
      }
      case 's2-remap': {
        // The host moves the IPA page behind p (arm_smmu_tlb_inv_range_domain for a nest parent: S2_IPA, then NH_ALL).
        const ipa = this.maps[t]!.get(p)!;
        const pa = this.w.layout.alloc(0x1000, 0x1000);
        this.vm.s2.table.map(ipa, pa, 0x1000, RW);
        return independent([p], [
          ['TLBI_S2_IPA', [cmd('TLBI_S2_IPA', { vmid: VMID, addr: ipa, leaf: 1 })]],
          ['TLBI_NH_ALL', [cmd('TLBI_NH_ALL', { vmid: VMID })]],
        ]);
      }
      case 'cd': {
        // The guest points its CD at the other table, where p maps elsewhere (arm_smmu_write_cd_entry: CFGI_CD; then the ASID's TLBI).
        const o = 1 - t;
        this.map(o, p, this.fresh());
        writeGuestCd(this.vm.gm, this.vm.cdTable, 0, { asid: ASID, ttb0: this.tables[o]!.root });
        this.active = o;
        return independent([p], [
          ['CFGI_CD', [cmd('CFGI_CD', { sid: PSID, leaf: 1 })]],
          ['TLBI_NH_ASID', [cmd('TLBI_NH_ASID', { asid: ASID, vmid: VMID })]],
        ]);
      }
      default: {
        // STE change: the VMM installs an abort STE (arm_smmu_write_ste: CFGI_STE). Undone by restoreSte.
        installNestedSte(this.w.mem, this.stePa, encodeSte({ config: STE_CFG.ABORT }), this.vm.s2);
        return independent([p], [['CFGI_STE', [cmd('CFGI_STE', { sid: PSID, leaf: 1 })]]]);
      }
    }
  }

  restoreSte(): void {
    installNestedSte(this.w.mem, this.stePa, encodeSte({ config: STE_CFG.S1_TRANS, s1ContextPtr: this.vm.cdTable }), this.vm.s2);
  }
}

const KINDS = ['s1-remap', 's1-unmap', 's1-table', 's2-remap', 'cd', 'ste'] as const;
const step = fc.record({ kind: fc.constantFrom(...KINDS), page: fc.nat(PAGES.length - 1), omit: fc.nat(3) });

describe('differential: model vs uncached reference walk, with invalidations left out', () => {
  test('stale answers appear exactly when a required invalidation was left out (stage 1, stage 2, nested, walk cache, CD, STE)', () => {
    const seen = new Map<string, { kept: number; left: number }>();
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 12 }), (steps) => {
        const rig = new Rig();
        for (const s of steps) {
          const p = PAGES[s.page]!;
          // Only pages still mapped in the active table can be primed (an unmapped page caches nothing).
          if (!rig.maps[rig.active]!.has(p)) continue;
          const [primed] = rig.answers(p); // prime: the model caches p's walk, leaf and config
          expect(primed).toMatch(/"pa"/);
          const { probes, units, send } = rig.change(s.kind, p);
          const kept = units.map((_, k) => ((s.omit >> k) & 1) === 0);
          const left = units.filter((_, k) => !kept[k]);
          run(rig.w.model, ...send(kept));
          const stale = probes.some((v) => {
            const [model, ref] = rig.answers(v);
            return model !== ref;
          });
          const key = `${s.kind}: left out ${left.join(' + ') || 'nothing'}`;
          const c = seen.get(s.kind) ?? { kept: 0, left: 0 };
          if (left.length > 0) c.left++;
          else c.kept++;
          seen.set(s.kind, c);
          expect({ key, stale }).toEqual({ key, stale: left.length > 0 });
          if (s.kind === 'ste') rig.restoreSte();
          rig.flush();
        }
      }),
      { numRuns: 40 },
    );
    // Every kind was exercised both ways.
    for (const k of KINDS) expect(seen.get(k), k).toMatchObject({ kept: expect.any(Number), left: expect.any(Number) });
    for (const k of KINDS) expect(Math.min(seen.get(k)!.kept, seen.get(k)!.left), k).toBeGreaterThan(0);
  });
});
