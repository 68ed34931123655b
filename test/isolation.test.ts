// Cross-VM isolation of guest TLB invalidation, both ways, with the ASIDs
// colliding on purpose: two VMs whose devices use the SAME ASID at the SAME
// VAs. A guest's command must reach every entry of its own VM that it names
// and no entry of the other VM, even when the guest writes the other VM's
// VMID into it. The VMID is what separates them: Linux
// arm_vsmmu_convert_user_cmd (iommufd/viommu) and the Tegra241 VCMDQ force
// it; the SMMU matches NH_* TLBIs on (VMID, ASID) (SMMUv3 §3.17, §4.4.2).
import { describe, expect, it } from 'vitest';
import { decodeWords, encodeWords } from '../src/codec.ts';
import { F, FIELD_COUNT, OP } from '../src/fields.ts';
import { ACCESS, PROT } from '../src/model/index.ts';
import { VSmmu, convertBatch } from '../src/vsmmu.ts';
import { addQueue, consPos, makeRig, submit, type Rig } from './consumer-rig.ts';

const ASID = 7;
const VA = 0x4000_0000;
const PAGES = 4;
const RW = PROT.READ | PROT.WRITE;
/** [vmid, psid] of the two VMs. */
const A = { vmid: 1, psid: 0x11 };
const B = { vmid: 2, psid: 0x22 };

function world(): Rig {
  const rig = makeRig([{ vmid: A.vmid, psids: [A.psid], asid: ASID }, { vmid: B.vmid, psids: [B.psid], asid: ASID }]);
  for (const vm of rig.vms) vm.pt.map(VA, vm.dataIpa, PAGES * 4096, RW);
  return rig;
}

/** Fill both VMs' IOTLBs with every page. */
function prime(rig: Rig): void {
  for (const psid of [A.psid, B.psid]) for (let p = 0; p < PAGES; p++) rig.w.model.translateIova(psid, -1, VA + p * 4096, ACCESS.READ);
}

/** Which pages of `psid` still hit the IOTLB (no stage-1 walk). Each probe re-fills, so read each page once. */
function cachedPages(rig: Rig, psid: number): number[] {
  const hit: number[] = [];
  for (let p = 0; p < PAGES; p++) {
    const walks = rig.w.model.stats.s1Walks;
    rig.w.model.translateIova(psid, -1, VA + p * 4096, ACCESS.READ);
    if (rig.w.model.stats.s1Walks === walks) hit.push(p);
  }
  return hit;
}

/** A guest command as written by VM `self`, with the OTHER VM's VMID in it (a guest may write anything). */
function hostile(op: number, otherVmid: number, page = 1): Uint32Array {
  const f = new Uint32Array(FIELD_COUNT);
  f[F.OP] = op;
  f[F.VMID] = otherVmid;
  f[F.ASID] = ASID;
  f[F.ADDR_LO] = VA + page * 4096;
  const u = new Uint32Array(4);
  encodeWords(f, u);
  return u;
}

/** Each command and the pages of the issuing VM it must drop (page 1 is the one a VA command names). */
const CASES: { name: string; op: number; drops: number[]; vcmdq: boolean }[] = [
  { name: 'TLBI_NH_ASID', op: OP.TLBI_NH_ASID, drops: [0, 1, 2, 3], vcmdq: true },
  { name: 'TLBI_NH_VA', op: OP.TLBI_NH_VA, drops: [1], vcmdq: true },
  { name: 'TLBI_NH_VAA', op: OP.TLBI_NH_VAA, drops: [1], vcmdq: true },
  { name: 'TLBI_NH_ALL', op: OP.TLBI_NH_ALL, drops: [0, 1, 2, 3], vcmdq: true },
  // NSNH_ALL from a guest becomes NH_ALL of its own VMID (iommufd only; the vCMDQ refuses it).
  { name: 'TLBI_NSNH_ALL', op: OP.TLBI_NSNH_ALL, drops: [0, 1, 2, 3], vcmdq: false },
];

const all = [0, 1, 2, 3];
const without = (drops: number[]): number[] => all.filter((p) => !drops.includes(p));

describe('VM isolation of NH TLBIs with colliding ASIDs', () => {
  for (const c of CASES) {
    for (const [self, other] of [[A, B], [B, A]] as const) {
      it(`${c.name} of VMID ${self.vmid} through iommufd (convertBatch) drops its own entries only`, () => {
        const rig = world();
        const vs = new VSmmu(self.vmid, [[0, self.psid]]);
        prime(rig);
        const u = hostile(c.op, other.vmid);
        expect(convertBatch(u, 1, vs)).toBe(1);
        const f = new Uint32Array(FIELD_COUNT);
        expect(decodeWords(u, f, rig.w.features)).toBe(0);
        expect(rig.w.model.execute(f)).toBe(0);
        expect(cachedPages(rig, self.psid)).toEqual(without(c.drops));
        expect(cachedPages(rig, other.psid)).toEqual(all);
      });

      if (!c.vcmdq) continue;
      it(`${c.name} on VMID ${self.vmid}'s vCMDQ (consumer) drops its own entries only`, () => {
        const rig = world();
        const qa = addQueue(rig, A.vmid, 2);
        const qb = addQueue(rig, B.vmid, 2);
        const q = self === A ? qa : qb;
        prime(rig);
        submit(rig, q, [hostile(c.op, other.vmid)]);
        expect(rig.consumer.pass()).toBe(1);
        expect(consPos(rig, q)).toBe(q.prod); // executed, no queue error
        expect(cachedPages(rig, self.psid)).toEqual(without(c.drops));
        expect(cachedPages(rig, other.psid)).toEqual(all);
      });
    }
  }

  it('both VMs invalidating at once through their own queues each reach exactly their own entries', () => {
    const rig = world();
    const qa = addQueue(rig, A.vmid, 3);
    const qb = addQueue(rig, B.vmid, 3);
    prime(rig);
    // A drops page 1 by VA, B drops page 2 by VAA, in the same pass, each naming the other's VMID.
    submit(rig, qa, [hostile(OP.TLBI_NH_VA, B.vmid, 1)]);
    submit(rig, qb, [hostile(OP.TLBI_NH_VAA, A.vmid, 2)]);
    expect(rig.consumer.pass()).toBe(2);
    expect(cachedPages(rig, A.psid)).toEqual([0, 2, 3]);
    expect(cachedPages(rig, B.psid)).toEqual([0, 1, 3]);
  });

  it('the model alone: NH_ASID / NH_VA of one (VMID, ASID) leave the same ASID of another VMID cached', () => {
    const rig = world();
    prime(rig);
    for (const op of [OP.TLBI_NH_ASID, OP.TLBI_NH_VA]) {
      const f = new Uint32Array(FIELD_COUNT);
      f[F.OP] = op;
      f[F.VMID] = A.vmid;
      f[F.ASID] = ASID;
      f[F.ADDR_LO] = VA + 4096;
      expect(rig.w.model.execute(f)).toBe(0);
    }
    expect(cachedPages(rig, B.psid)).toEqual(all);
    expect(cachedPages(rig, A.psid)).toEqual([]);
  });
});
