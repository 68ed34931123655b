// The kernel thread's consume loop observed from inside: the model records
// the published CONS (and the MSI words) at each execute, so the order of
// execution against completion is a checked property, not a comment.
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { buildCmdSync, buildTlbiNhAll, buildTlbiNhAsid, buildTlbiNhVa, decodeWords, encodeWords } from '../src/codec.ts';
import { CS, F, FIELD_COUNT, OP } from '../src/fields.ts';
import { Q_CONS, Q_STAT_CMDS, Q_STAT_SLOT_READS, Q_STAT_SYNCS } from '../src/layout.ts';
import { VSmmu } from '../src/vsmmu.ts';
import { MSI_WORDS, addQueue, addrOf, consPos, makeRig, submit, type Rig, type RigQueue } from './consumer-rig.ts';

const VMID = 3;
const OTHER_VMID = 9;

type Kind = 'asid' | 'va' | 'vaa' | 'all' | 'sync';
interface Planned { kind: Kind; cs: number }

/** Guest words for command `seq` of a plan: each TLBI names its own ASID / address, so the log identifies it. */
function guestWords(p: Planned, seq: number, rig: Rig, syncNo: number): Uint32Array {
  const u = new Uint32Array(4);
  const asid = 0x100 + seq;
  const va = 0x4000_0000 + seq * 0x1000;
  switch (p.kind) {
    case 'asid': buildTlbiNhAsid(u, asid, OTHER_VMID); break;
    case 'va': buildTlbiNhVa(u, asid, OTHER_VMID, va, 0, 0, 0, 0, 0, 1); break;
    case 'vaa': {
      const f = new Uint32Array(FIELD_COUNT);
      f[F.OP] = OP.TLBI_NH_VAA;
      f[F.VMID] = OTHER_VMID;
      f[F.ADDR_LO] = va;
      encodeWords(f, u);
      break;
    }
    case 'all': buildTlbiNhAll(u, OTHER_VMID); break;
    case 'sync':
      // CS=IRQ: MSIData = syncNo + 1 to its own word of the MSI area (smmu-facts.md §2.4).
      buildCmdSync(u, p.cs, p.cs === CS.IRQ ? rig.msiIpa + 4 * syncNo : 0, 0, syncNo + 1);
      break;
  }
  return u;
}

/**
 * Run `plan` through one queue of 2^log2 slots in `batches` (each at most a
 * queue's worth, one pass each) and check, for every command the model
 * executed, that no completion had yet passed it: the queue's CONS as
 * published then is at or before the command's slot, and no later CMD_SYNC
 * had written its MSI. This is QEMU smmuv3_cmdq_consume's and Linux
 * arm_smmu_cmdq_issue_cmdlist's contract: a CMD_SYNC completes only after
 * every command before it (SMMUv3 §4.6.3 "CMD_SYNC"), and CONS passes a
 * command only once it is consumed (§3.5.2).
 */
function runPlan(plan: Planned[], log2: number, batches: number[]): void {
  const rig = makeRig([{ vmid: VMID, psids: [1] }]);
  const q = addQueue(rig, VMID, log2);
  const posMask = (2 << log2) - 1;
  const words: Uint32Array[] = [];
  const syncNo: number[] = [];
  let syncs = 0;
  plan.forEach((p, seq) => {
    syncNo.push(p.kind === 'sync' ? syncs : -1);
    words.push(guestWords(p, seq, rig, p.kind === 'sync' ? syncs++ : 0));
  });
  // Expected host command of each TLBI: the guest's words after the vSMMU's rewrite, decoded.
  const vs = new VSmmu(VMID, [[0, 1]]);
  const expected = plan.map((p, seq) => {
    if (p.kind === 'sync') return null;
    const u = words[seq]!.slice();
    expect(vs.convertVcmdq(u)).toBe(0);
    const f = new Uint32Array(FIELD_COUNT);
    expect(decodeWords(u, f, rig.w.features)).toBe(0);
    return f;
  });

  // Log entry k is the k-th TLBI of the plan (the consumer executes in order; syncs are not executed on the model).
  const tlbiSeqs = plan.flatMap((p, seq) => (p.kind === 'sync' ? [] : [seq]));
  let first = 0;
  let logged = 0;
  for (const n of batches) {
    const startPos = consPos(rig, q);
    submit(rig, q, words.slice(first, first + n));
    expect(rig.consumer.pass()).toBe(n);
    expect(consPos(rig, q)).toBe(q.prod);
    for (; logged < rig.model.log.length; logged++) {
      const e = rig.model.log[logged]!;
      const seq = tlbiSeqs[logged]!;
      expect(seq, 'the model executed a command of a later pass').toBeLessThan(first + n);
      expect(e.f).toEqual(expected[seq]);
      const published = ((e.cons[0]! & posMask) - startPos) & posMask;
      expect(published, `command ${seq} (${plan[seq]!.kind}) executed after CONS passed it`).toBeLessThanOrEqual(seq - first);
      for (let s = seq + 1; s < plan.length; s++) {
        if (plan[s]!.kind === 'sync' && plan[s]!.cs === CS.IRQ) {
          expect(e.msi[syncNo[s]!], `command ${seq} executed after the CMD_SYNC at ${s} signalled`).toBe(0);
        }
      }
    }
    expect(logged, 'a command of this pass was not executed in it').toBe(tlbiSeqs.filter((seq) => seq < first + n).length);
    first += n;
  }
  expect(rig.model.log.length).toBe(plan.filter((p) => p.kind !== 'sync').length);
  // Every CS=IRQ sync signalled exactly its data; statistics agree with the plan.
  plan.forEach((p, s) => {
    if (p.kind === 'sync' && p.cs === CS.IRQ) expect(rig.i32[(rig.msiPa >>> 2) + syncNo[s]!]).toBe(syncNo[s]! + 1);
  });
  expect(rig.i32[q.regs + Q_STAT_CMDS]).toBe(plan.length);
  expect(rig.i32[q.regs + Q_STAT_SYNCS]).toBe(syncs);
  expect(rig.i32[q.regs + Q_STAT_SLOT_READS]).toBe(plan.length);
}

const planArb = fc.array(
  fc.oneof(
    fc.constantFrom<Kind>('asid', 'va', 'vaa', 'all').map((kind) => ({ kind, cs: 0 })),
    fc.constantFrom(CS.NONE, CS.SEV, CS.IRQ).map((cs) => ({ kind: 'sync' as Kind, cs })),
  ),
  { minLength: 1, maxLength: 40 },
).filter((p) => p.filter((c) => c.kind === 'sync').length <= MSI_WORDS);

/** Split `len` commands into passes of 1..2^log2 commands. */
const batchesArb = (len: number, log2: number): fc.Arbitrary<number[]> =>
  fc.array(fc.integer({ min: 1, max: 1 << log2 }), { minLength: len, maxLength: len }).map((sizes) => {
    const out: number[] = [];
    let left = len;
    for (const s of sizes) {
      if (left === 0) break;
      const n = Math.min(s, left);
      out.push(n);
      left -= n;
    }
    return out;
  });

describe('consume order: every command executes before a CONS publish or CMD_SYNC signal passes it', () => {
  it('TLBI, TLBI, SYNC(IRQ), TLBI, SYNC(SEV) in one pass', () => {
    const plan: Planned[] = [
      { kind: 'asid', cs: 0 }, { kind: 'va', cs: 0 }, { kind: 'sync', cs: CS.IRQ }, { kind: 'vaa', cs: 0 }, { kind: 'sync', cs: CS.SEV },
    ];
    runPlan(plan, 3, [5]);
  });

  it('holds for any mix of TLBIs and syncs, any pass boundaries, across queue wraps', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }).chain((log2) => planArb.chain((plan) => batchesArb(plan.length, log2).map((b) => ({ log2, plan, b })))),
        ({ log2, plan, b }) => runPlan(plan, log2, b),
      ),
      { numRuns: 60 },
    );
  });
});

/**
 * A vSMMU that behaves as a hostile guest racing the kernel thread: when the
 * consumer hands it the private copy of a slot, it rewrites that slot in the
 * ring (other ASID, other address, the other VM's VMID, Reserved CS for a
 * sync). The consumer must execute what it copied first, as QEMU's
 * smmuv3_cmdq_consume reads each entry once (queue_read) and Linux treats
 * guest memory as untrusted (iommufd arm_vsmmu_convert_user_cmd works on a copy).
 */
class ScribblingVSmmu extends VSmmu {
  q: RigQueue | null = null;
  private next = 0;
  override convertVcmdq(u: Uint32Array): number {
    const q = this.q!;
    const at = (this.next++ & ((1 << q.log2) - 1)) * 4;
    const slot = q.ring.subarray(at, at + 4);
    if ((slot[0]! & 0xff) === OP.CMD_SYNC) slot[0] = slot[0]! | (3 << 12);
    else {
      slot[1] = ((slot[1]! ^ 0xffff0000) & 0xffff0000) | OTHER_VMID;
      slot[2] = slot[2]! ^ 0x0010_0000;
    }
    return super.convertVcmdq(u);
  }
}

describe('statistics are added per pass, yet counted before each publish that completes them', () => {
  it('whatever CONS or MSI a guest can see at any moment of a pass, the commands before it are counted as taken and as slot reads', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }]);
    const q = addQueue(rig, VMID, 4);
    const plan: Planned[] = [
      { kind: 'va', cs: 0 }, { kind: 'asid', cs: 0 }, { kind: 'va', cs: 0 }, { kind: 'sync', cs: CS.IRQ },
      { kind: 'vaa', cs: 0 }, { kind: 'va', cs: 0 }, { kind: 'sync', cs: CS.NONE }, { kind: 'all', cs: 0 },
    ];
    let syncs = 0;
    const words = plan.map((p, seq) => guestWords(p, seq, rig, p.kind === 'sync' ? syncs++ : 0));
    // At each execute (mid-pass): the published CONS, the first sync's MSI word, and both counters.
    const seen: { cons: number; msi: number; cmds: number; reads: number }[] = [];
    rig.model.refuse = () => {
      seen.push({ cons: consPos(rig, q), msi: rig.i32[rig.msiPa >>> 2]!, cmds: rig.i32[q.regs + Q_STAT_CMDS]!, reads: rig.i32[q.regs + Q_STAT_SLOT_READS]! });
      return 0;
    };
    submit(rig, q, words);
    expect(rig.consumer.pass()).toBe(plan.length);
    // The TLBIs after each sync ran with CONS (and the MSI) already past it, in this same pass.
    expect(seen.map((s) => s.cons)).toEqual([0, 0, 0, 4, 4, 7]);
    expect(seen.map((s) => s.msi)).toEqual([0, 0, 0, 1, 1, 1]);
    for (const s of seen) {
      expect(s.cmds).toBeGreaterThanOrEqual(s.cons);
      expect(s.reads).toBe(s.cmds);
    }
    expect([rig.i32[q.regs + Q_STAT_CMDS], rig.i32[q.regs + Q_STAT_SLOT_READS], rig.i32[q.regs + Q_STAT_SYNCS]]).toEqual([8, 8, 2]);
  });
});

describe('a CS=IRQ sync is counted before its MSI', () => {
  // The MSI completes a CS=IRQ sync for the guest (Linux __arm_smmu_cmdq_poll_until_msi returns on it, before
  // CONS moves), so Q_STAT_SYNCS must already count it when the MSI store lands, as it does before CONS.
  it('at the MSI store and at the CONS store, Q_STAT_SYNCS already counts the sync', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }]);
    const q = addQueue(rig, VMID, 4);
    const plan: Planned[] = [{ kind: 'va', cs: 0 }, { kind: 'sync', cs: CS.IRQ }];
    const words = plan.map((p, seq) => guestWords(p, seq, rig, 0));
    const atStore: { word: string; syncs: number }[] = [];
    // Both publishes go through storeRelease (layout.ts: an Atomics.exchange).
    const real = Atomics.exchange;
    const spy = vi.spyOn(Atomics, 'exchange').mockImplementation(((a: Int32Array, i: number, v: number) => {
      if (a === rig.i32 && (i === rig.msiPa >>> 2 || i === q.regs + Q_CONS)) {
        atStore.push({ word: i === q.regs + Q_CONS ? 'CONS' : 'MSI', syncs: rig.i32[q.regs + Q_STAT_SYNCS]! });
      }
      return real(a, i, v);
    }) as typeof Atomics.exchange);
    try {
      submit(rig, q, words);
      expect(rig.consumer.pass()).toBe(2);
    } finally {
      spy.mockRestore();
    }
    expect(atStore).toEqual([{ word: 'MSI', syncs: 1 }, { word: 'CONS', syncs: 1 }]);
  });
});

describe('read-once: the executed command is the first copy of the slot', () => {
  it('a guest rewriting the slot after the copy changes nothing the model executes', () => {
    let scribbler: ScribblingVSmmu | null = null;
    const rig = makeRig([{ vmid: VMID, psids: [1] }], { vsmmu: (vmid, streams) => (scribbler = new ScribblingVSmmu(vmid, streams)) });
    const q = addQueue(rig, VMID, 2);
    scribbler!.q = q;
    const plan: Planned[] = [{ kind: 'asid', cs: 0 }, { kind: 'va', cs: 0 }, { kind: 'sync', cs: CS.SEV }, { kind: 'vaa', cs: 0 }, { kind: 'va', cs: 0 }, { kind: 'sync', cs: CS.NONE }];
    const words = plan.map((p, seq) => guestWords(p, seq, rig, 0));
    const vs = new VSmmu(VMID, [[0, 1]]);
    const expected = words.filter((_, seq) => plan[seq]!.kind !== 'sync').map((w) => {
      const u = w.slice();
      vs.convertVcmdq(u);
      const f = new Uint32Array(FIELD_COUNT);
      decodeWords(u, f, rig.w.features);
      return f;
    });
    submit(rig, q, words.slice(0, 4));
    expect(rig.consumer.pass()).toBe(4);
    submit(rig, q, words.slice(4));
    expect(rig.consumer.pass()).toBe(2);
    // The scribbles happened (the ring no longer holds what the guest first wrote)...
    expect(q.ring.slice(4, 8)).not.toEqual(words[1]);
    // ...yet every execute saw the first copy, VMID forced, no queue error, each slot read once.
    expect(rig.model.log.map((e) => e.f)).toEqual(expected);
    expect(rig.model.log.map((e) => e.f[F.VMID])).toEqual(expected.map(() => VMID));
    expect(rig.model.log.map((e) => addrOf(e.f))).toEqual(expected.map((f) => addrOf(f)));
    expect(Atomics.load(rig.i32, q.regs + Q_CONS)).toBe(q.prod);
    expect(rig.i32[q.regs + Q_STAT_SLOT_READS]).toBe(plan.length);
    expect(rig.i32[q.regs + Q_STAT_SYNCS]).toBe(2);
  });
});
