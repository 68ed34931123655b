// The trap path's pure core in one thread: the VMM's first pass, the kernel's
// IOMMU_HWPT_INVALIDATE handler and the VMM's queue emulation wired by a
// direct call. Threads are exercised in trap-threads.test.ts.

import { describe, expect, it } from 'vitest';
import { buildAtcInv, buildCfgiSte, buildCmdSync, buildTlbiNhAsid, encodeWords } from '../src/codec.ts';
import { DEFAULT_FEATURES, makeFeatures } from '../src/features.ts';
import { CS, OP } from '../src/fields.ts';
import { CONS_ERR_SHIFT, GERROR_CMDQ_ERR, MB_PAYLOAD_BYTES, Q_CONS, Q_ERR_REASON, Q_GERROR, Q_GERRORN } from '../src/layout.ts';
import { FirstPass, ILL_NOT_FOR_GUEST, STOP, firstPassIllText } from '../src/trap/firstpass.ts';
import { TRAP_ERR_KIND } from '../src/trap/cmdq.ts';
import { EINVAL, EIO, HwptInvalidate, KERNEL_BLOCK } from '../src/trap/iommufd.ts';
import { VSmmu } from '../src/vsmmu.ts';
import { cmd } from './model-fixture.ts';
import { CONVERT, IOMMUFD_ILLEGAL, RecordingSink, Rig, hexWords, vsmmuOf, words4 } from './trap-helpers.ts';

const vs = () => new VSmmu(5, [[0x10, 0x20008], [0x18, 0x30100]]);

function asid(a: number, vmid = 0): Uint32Array {
  const u = new Uint32Array(4);
  buildTlbiNhAsid(u, a, vmid);
  return u;
}
function sync(cs: number = CS.SEV, lo = 0, data = 0): Uint32Array {
  const u = new Uint32Array(4);
  buildCmdSync(u, cs, lo, 0, data);
  return u;
}
function array(cmds: Uint32Array[]): Uint32Array {
  const a = new Uint32Array(cmds.length * 4);
  cmds.forEach((u, i) => a.set(u, i * 4));
  return a;
}
/** Host words of NH_ASID(a) converted for vmid 5. */
function hostAsid(a: number): [string, string] {
  return hexWords(asid(a, 5));
}
/** NH_VA with TG != 0 and NUM = SCALE = TTL = 0: converts fine, the host SMMU finds it illegal (spec 4.4.1.1). */
const RESERVED_RANGE = words4(['0x0001000000000012', '0x0000000000010400']);

describe('iommufd handler (kernel side of IOMMU_HWPT_INVALIDATE)', () => {
  it.each(CONVERT.map((v) => [v.name, v] as const))('executes %s with the host words', (_n, v) => {
    const sink = new RecordingSink();
    const hw = new HwptInvalidate(vsmmuOf(v), sink, DEFAULT_FEATURES);
    expect(hw.invalidate(array([words4(v.words)]), 0, 1)).toBe(0);
    expect(hw.entryNum).toBe(1);
    expect(sink.log).toEqual([v.host_words, ['SYNC', '']]);
  });

  it('rewrites TLBI_NSNH_ALL to NH_ALL of the vSMMU VMID with w1 = 0', () => {
    const sink = new RecordingSink();
    const hw = new HwptInvalidate(vs(), sink, DEFAULT_FEATURES);
    const nsnh = Uint32Array.of(OP.TLBI_NSNH_ALL, 0, 0, 0);
    expect(hw.invalidate(array([nsnh]), 0, 1)).toBe(0);
    expect(sink.commands()).toEqual([['0x0000000500000010', '0x0000000000000000']]);
  });

  it.each(IOMMUFD_ILLEGAL.map((v) => [v.name, v] as const))(
    'rejects %s with -EIO, entry_num at its index, the prefix executed and nothing after',
    (_n, v) => {
      const sink = new RecordingSink();
      const hw = new HwptInvalidate(vsmmuOf(v), sink, DEFAULT_FEATURES);
      const rc = hw.invalidate(array([asid(1), asid(2), words4(v.words), asid(3)]), 0, 4);
      expect(rc).toBe(-EIO);
      expect(hw.entryNum).toBe(2);
      // The converted prefix was issued and synced before the error was reported.
      expect(sink.log).toEqual([hostAsid(1), hostAsid(2), ['SYNC', '']]);
    },
  );

  it('executes in blocks of 63, each closed by its own CMD_SYNC', () => {
    const sink = new RecordingSink();
    const hw = new HwptInvalidate(vs(), sink, DEFAULT_FEATURES);
    const n = 3 * KERNEL_BLOCK + 11;
    expect(hw.invalidate(array(Array.from({ length: n }, (_, i) => asid(i))), 0, n)).toBe(0);
    expect(hw.entryNum).toBe(n);
    const syncAt = sink.log.flatMap((e, i) => (e[0] === 'SYNC' ? [i] : []));
    expect(syncAt).toEqual([63, 127, 191, 203]);
    expect(sink.commands()).toEqual(Array.from({ length: n }, (_, i) => hostAsid(i)));
  });

  it('on a rejection inside a later block flushes that block prefix (better than the kernel, which drops it)', () => {
    const sink = new RecordingSink();
    const hw = new HwptInvalidate(vs(), sink, DEFAULT_FEATURES);
    const cmds = Array.from({ length: 150 }, (_, i) => asid(i));
    cmds[100] = words4(['0x0000000000000003', '0x0000000000000001']); // CFGI_STE: -EIO
    expect(hw.invalidate(array(cmds), 0, 150)).toBe(-EIO);
    expect(hw.entryNum).toBe(100);
    expect(sink.commands()).toEqual(Array.from({ length: 100 }, (_, i) => hostAsid(i)));
    expect(sink.syncs).toBe(2);
  });

  it('a command the SMMU refuses after conversion stops there: entry_num counts only what executed', () => {
    const sink = new RecordingSink();
    sink.refuseAt = 70;
    const hw = new HwptInvalidate(vs(), sink, DEFAULT_FEATURES);
    expect(hw.invalidate(array(Array.from({ length: 100 }, (_, i) => asid(i))), 0, 100)).toBe(-EIO);
    expect(hw.entryNum).toBe(70);
    expect(sink.syncs).toBe(2);
  });

  it('refuses a converted command the host SMMU would find illegal (reserved range combination) at its index', () => {
    const sink = new RecordingSink();
    const hw = new HwptInvalidate(vs(), sink, DEFAULT_FEATURES);
    expect(hw.invalidate(array([asid(1), RESERVED_RANGE]), 0, 2)).toBe(-EIO);
    expect(hw.entryNum).toBe(1);
  });

  it('treats an empty array as a probe and an array past its buffer as -EINVAL', () => {
    const hw = new HwptInvalidate(vs(), new RecordingSink(), DEFAULT_FEATURES);
    expect(hw.invalidate(new Uint32Array(0), 0, 0)).toBe(0);
    expect(hw.entryNum).toBe(0);
    expect(hw.invalidate(new Uint32Array(8), 0, 3)).toBe(-EINVAL);
    expect(hw.invalidate(new Uint32Array(8), 0, -1)).toBe(-EINVAL);
    expect(hw.invalidate(new Uint32Array(8), 0, 1.5)).toBe(-EINVAL);
    expect(hw.invalidate(new Uint32Array(8), -4, 1)).toBe(-EINVAL);
    expect(hw.invalidate(array([asid(9), asid(1)]), 4, 1)).toBe(0); // the one command at element 4
    expect([hw.executed, hw.syncs]).toEqual([1, 1]);
  });

  it('closes each block of KERNEL_BLOCK commands with one CMD_SYNC, and no empty block with one', () => {
    // arm_vsmmu_cache_invalidate -> arm_smmu_cmdq_issue_cmdlist(..., sync=true) per batch of CMDQ_BATCH_ENTRIES - 1.
    const sink = new RecordingSink();
    const hw = new HwptInvalidate(vs(), sink, DEFAULT_FEATURES);
    expect(hw.invalidate(array(Array.from({ length: KERNEL_BLOCK }, (_, i) => asid(i))), 0, KERNEL_BLOCK)).toBe(0);
    expect(sink.syncs).toBe(1);
    expect(hw.invalidate(array([asid(1), asid(2)]), 0, 2)).toBe(0);
    expect(sink.syncs).toBe(2);
    // Lifetime counters: every executed host command and every kernel sync.
    expect([hw.executed, hw.syncs]).toEqual([KERNEL_BLOCK + 2, 2]);
  });

  it('a refusal inside a full block stops there: nothing of the next block executes', () => {
    const sink = new RecordingSink();
    sink.refuseAt = 10;
    const hw = new HwptInvalidate(vs(), sink, DEFAULT_FEATURES);
    expect(hw.invalidate(array(Array.from({ length: 2 * KERNEL_BLOCK }, (_, i) => asid(i))), 0, 2 * KERNEL_BLOCK)).toBe(-EIO);
    expect(hw.entryNum).toBe(10);
    expect(sink.commands()).toEqual(Array.from({ length: 10 }, (_, i) => hostAsid(i)));
    expect(sink.syncs).toBe(1);
    expect([hw.executed, hw.syncs]).toEqual([10, 1]);
  });
});

describe('IOMMU_HWPT_INVALIDATE as upstream v6.18 (issue 10 item 12)', () => {
  it('arm_vsmmu_cache_invalidate + __arm_smmu_cmdq_skip_err: a converted command the host SMMU refuses becomes a CMD_SYNC, the rest runs, the ioctl returns 0', () => {
    const sink = new RecordingSink();
    const hw = new HwptInvalidate(vs(), sink, DEFAULT_FEATURES, 'upstream-v6.18');
    expect(hw.invalidate(array([asid(1), RESERVED_RANGE, asid(2)]), 0, 3)).toBe(0);
    expect(hw.entryNum).toBe(3);
    expect(sink.log).toEqual([hostAsid(1), ['SYNC', ''], hostAsid(2), ['SYNC', '']]);
    // The default stays strict: -EIO at the refused entry, the prefix flushed first.
    const strict = new RecordingSink();
    const hs = new HwptInvalidate(vs(), strict, DEFAULT_FEATURES);
    expect(hs.invalidate(array([asid(1), RESERVED_RANGE, asid(2)]), 0, 3)).toBe(-EIO);
    expect(hs.entryNum).toBe(1);
    expect(strict.log).toEqual([hostAsid(1), ['SYNC', '']]);
  });

  it('a conversion failure (arm_vsmmu_convert_user_cmd -EIO) returns before issuing the block it was filling: entry_num counts a prefix that never ran', () => {
    const sink = new RecordingSink();
    const hw = new HwptInvalidate(vs(), sink, DEFAULT_FEATURES, 'upstream-v6.18');
    const atc = new Uint32Array(4);
    buildAtcInv(atc, 0x99, 0, 0, 0, 52, 0, 0); // vSID 0x99 has no pSID
    expect(hw.invalidate(array([asid(1), asid(2), atc, asid(3)]), 0, 4)).toBe(-EIO);
    expect(hw.entryNum).toBe(2);
    expect(sink.log).toEqual([]);
    // In a later block: the blocks before it were issued (each with its sync), the one being filled was not,
    // and entry_num counts both (the kernel's `cur - cmds` at its `out:` label).
    const later = new RecordingSink();
    const hl = new HwptInvalidate(vs(), later, DEFAULT_FEATURES, 'upstream-v6.18');
    const cmds = Array.from({ length: KERNEL_BLOCK + 5 }, (_, i) => asid(i));
    cmds[KERNEL_BLOCK + 3] = atc;
    expect(hl.invalidate(array(cmds), 0, cmds.length)).toBe(-EIO);
    expect(hl.entryNum).toBe(KERNEL_BLOCK + 3);
    expect(later.log).toEqual([...Array.from({ length: KERNEL_BLOCK }, (_, i) => hostAsid(i)), ['SYNC', '']]);
    expect([hl.executed, hl.syncs]).toEqual([KERNEL_BLOCK, 1]);
  });

  it('a command the host SMMU model refuses mid-block is skipped, not the end of the block', () => {
    const sink = new RecordingSink();
    let calls = 0;
    const refuseSecond = { execute: (f: Uint32Array): number => (calls++ === 1 ? 1 : sink.execute(f)) };
    const hw = new HwptInvalidate(vs(), refuseSecond, DEFAULT_FEATURES, 'upstream-v6.18');
    expect(hw.invalidate(array([asid(1), asid(2), asid(3)]), 0, 3)).toBe(0);
    expect(hw.entryNum).toBe(3);
    expect(sink.commands()).toEqual([hostAsid(1), hostAsid(3)]);
  });
});

describe('first pass', () => {
  const queueOf = (cmds: Uint32Array[], log2size: number) => {
    const q = new Int32Array(4 << log2size);
    cmds.forEach((u, i) => q.set(Int32Array.from(u), (i % (1 << log2size)) * 4));
    return q;
  };

  it('batches kernel commands up to and including the CMD_SYNC, counting the VMM no-ops', () => {
    const prefetch = Uint32Array.of(OP.PREFETCH_CONFIG, 0x10, 0, 0);
    const q = queueOf([asid(1), prefetch, asid(2), sync(), asid(3)], 3);
    const fp = new FirstPass(new Uint32Array(64));
    fp.run(q, 3, 0, 5, DEFAULT_FEATURES);
    expect(fp.stop).toBe(STOP.SYNC);
    expect(fp.end).toBe(4);
    expect(fp.batchLen).toBe(2);
    expect(Array.from(fp.batchPos.subarray(0, 2))).toEqual([0, 2]);
    expect(hexWords(fp.batch.subarray(4, 8))).toEqual(hexWords(asid(2)));
    expect(fp.handledByVmm).toBe(1);
    fp.run(q, 3, 4, 5, DEFAULT_FEATURES);
    expect([fp.stop, fp.end, fp.batchLen]).toEqual([STOP.PROD, 5, 1]);
  });

  it('walks across the wrap', () => {
    const q = queueOf([asid(0), asid(1), asid(2), asid(3)], 2);
    const fp = new FirstPass(new Uint32Array(64));
    fp.run(q, 2, 3, 6, DEFAULT_FEATURES); // idx 3, then wrap 1 idx 0, 1
    expect([fp.stop, fp.end, fp.batchLen]).toEqual([STOP.PROD, 6, 3]);
    expect(Array.from(fp.batchPos.subarray(0, 3))).toEqual([3, 4, 5]);
  });

  it('stops ON an illegal command and on a CFGI_STE, and before overflowing its batch', () => {
    const el2 = Uint32Array.of(OP.TLBI_EL2_ALL, 0, 0, 0);
    const fp = new FirstPass(new Uint32Array(8));
    fp.run(queueOf([asid(1), el2], 3), 3, 0, 2, DEFAULT_FEATURES);
    expect([fp.stop, fp.end, fp.ill]).toEqual([STOP.ILL, 1, ILL_NOT_FOR_GUEST]);
    expect(firstPassIllText(fp.ill, fp.stopWords)).toBe(
      'opcode 0x20 is not offered to a guest: its vSMMU has stage 1 only (no stage 2, EL2 or MPAM commands)',
    );
    // Two hex digits, as the opcode byte is printed everywhere (CFGI_VMS_PIDM is 0x07; legal where MPAM is).
    fp.run(queueOf([Uint32Array.of(OP.CFGI_VMS_PIDM, 0, 0, 0)], 1), 1, 0, 1, makeFeatures({ MPAM: true }));
    expect([fp.stop, fp.ill]).toEqual([STOP.ILL, ILL_NOT_FOR_GUEST]);
    expect(firstPassIllText(fp.ill, fp.stopWords)).toMatch(/^opcode 0x07 is not offered to a guest/);
    const ste = new Uint32Array(4);
    buildCfgiSte(ste, 0x10, 1);
    fp.run(queueOf([asid(1), ste], 3), 3, 0, 2, DEFAULT_FEATURES);
    expect([fp.stop, fp.end, fp.batchLen]).toEqual([STOP.CFGI_STE, 1, 1]);
    fp.run(queueOf([asid(1), asid(2), asid(3)], 3), 3, 0, 3, DEFAULT_FEATURES);
    expect([fp.stop, fp.end, fp.batchLen]).toEqual([STOP.FULL, 2, 2]);
  });

  it('decodes the private copy: a reserved opcode is refused with the codec reason', () => {
    const fp = new FirstPass(new Uint32Array(8));
    fp.run(queueOf([Uint32Array.of(0xff, 0, 0, 0)], 1), 1, 0, 1, DEFAULT_FEATURES);
    expect(fp.stop).toBe(STOP.ILL);
    expect(firstPassIllText(fp.ill, fp.stopWords)).toMatch(/Reserved/);
  });
});

describe('VMM queue emulation with a direct kernel', () => {
  it.each(CONVERT.map((v) => [v.name, v] as const))('%s: forwarded, executed with the host words, SYNC completed', (_n, v) => {
    const rig = new Rig(vsmmuOf(v));
    rig.submit(words4(v.words), sync());
    expect(rig.i32[rig.regs + Q_CONS]).toBe(2);
    expect((rig.sink as RecordingSink).log).toEqual([v.host_words, ['SYNC', '']]);
    expect([rig.cmdq.forwarded, rig.cmdq.handledByVmm, rig.cmdq.ioctls]).toEqual([1, 1, 1]);
  });

  // The iommufd rejections, as the guest's queue sees them: what the VMM owns
  // is consumed by the VMM (never forwarded), what no guest may issue stops
  // the queue at its index, and a forwarded command the kernel refuses stops
  // it at its index too.
  const OUTCOME: Record<string, { stop: boolean; cfgi?: number[] }> = {
    CFGI_STE: { stop: false, cfgi: [0x10] },
    CFGI_STE_RANGE: { stop: false, cfgi: [0x10, 0x18] },
    CMD_SYNC: { stop: false },
    PREFETCH_CONFIG: { stop: false },
    TLBI_S12_VMALL: { stop: true },
    TLBI_EL2_ALL: { stop: true },
    ATC_INV: { stop: true },
  };
  it.each(IOMMUFD_ILLEGAL.map((v) => [v.name, v] as const))('%s', (_n, v) => {
    const want = OUTCOME[v.fields['op'] as string]!;
    expect(want).toBeDefined();
    const rig = new Rig(vsmmuOf(v));
    rig.submit(asid(1), words4(v.words), asid(2), sync());
    const sink = rig.sink as RecordingSink;
    const cons = rig.i32[rig.regs + Q_CONS]!;
    if (want.stop) {
      expect(cons).toBe(1 | (1 << CONS_ERR_SHIFT));
      expect(rig.i32[rig.regs + Q_GERROR]! ^ rig.i32[rig.regs + Q_GERRORN]!).toBe(GERROR_CMDQ_ERR);
      // The command before it executed, nothing after it did.
      expect(sink.commands()).toEqual([hostAsid(1)]);
      expect(rig.i32[rig.regs + Q_ERR_REASON]! >>> 16).toBe(
        v.fields['op'] === 'ATC_INV' ? TRAP_ERR_KIND.IOCTL : TRAP_ERR_KIND.FIRST_PASS,
      );
    } else {
      expect(cons).toBe(4);
      expect(sink.commands()).toEqual([hostAsid(1), hostAsid(2)]);
      expect(rig.kernel.cfgi).toEqual(want.cfgi ?? []);
      expect(rig.cmdq.forwarded + rig.cmdq.handledByVmm).toBe(4);
    }
  });

  it('resumes after the guest rewrites the faulting entry and acks GERRORN, without repeating anything', () => {
    const rig = new Rig(vs());
    const el2 = Uint32Array.of(OP.TLBI_EL2_ALL, 0, 0, 0);
    rig.submit(asid(1), el2, asid(2), sync());
    expect(rig.i32[rig.regs + Q_CONS]).toBe(1 | (1 << CONS_ERR_SHIFT));
    // Nothing is consumed while CMDQ_ERR is active, even on a new PROD write.
    rig.submit(asid(3), sync());
    expect(rig.i32[rig.regs + Q_CONS]! & 0xff).toBe(1);
    // Linux __arm_smmu_cmdq_skip_err: overwrite with a CMD_SYNC, then ack.
    rig.rewrite(1, sync());
    rig.cmdq.writeGerrorn(rig.i32[rig.regs + Q_GERROR]!);
    expect(rig.i32[rig.regs + Q_CONS]! & 0xff).toBe(6);
    expect((rig.sink as RecordingSink).commands()).toEqual([hostAsid(1), hostAsid(2), hostAsid(3)]);
  });

  it('completes CMD_SYNC CS=IRQ by writing MSIDATA at the MSI address in guest RAM before CONS passes it', () => {
    const rig = new Rig(vs());
    rig.submit(asid(1), sync(CS.IRQ, 0x8000, 0xabcd));
    expect(rig.i32[(rig.ramBase + 0x8000) >>> 2]).toBe(0xabcd);
    expect(rig.i32[rig.regs + Q_CONS]).toBe(2);
  });

  it('splits a window longer than the ioctl payload into several forwards, in order', () => {
    const cap = MB_PAYLOAD_BYTES / 16;
    const rig = new Rig(vs(), 10);
    const n = cap + 40;
    rig.submit(...Array.from({ length: n }, (_, i) => asid(i & 0xffff)), sync());
    expect(rig.i32[rig.regs + Q_CONS]).toBe(n + 1);
    expect(rig.cmdq.ioctls).toBe(2);
    expect((rig.sink as RecordingSink).commands()).toEqual(Array.from({ length: n }, (_, i) => hostAsid(i & 0xffff)));
  });

  it('a CFGI_STE between invalidations: the ones before it reach the kernel first, no newer effect survives a stop', () => {
    const rig = new Rig(vs());
    const ste = new Uint32Array(4);
    buildCfgiSte(ste, 0x18, 1);
    const bad = Uint32Array.of(OP.TLBI_S2_IPA, 0, 0, 0);
    rig.submit(asid(1), ste, bad, asid(2), sync());
    expect(rig.kernel.cfgi).toEqual([0x18]);
    expect((rig.sink as RecordingSink).commands()).toEqual([hostAsid(1)]);
    expect(rig.i32[rig.regs + Q_CONS]).toBe(2 | (1 << CONS_ERR_SHIFT));
  });

  it('SMMU_CMDQ_PROD is a register, never a CERROR (QEMU smmuv3_cmdq_consume): RES0 bits above WR_WRAP are ignored', () => {
    const rig = new Rig(vs(), 3);
    rig.write(asid(1), asid(2));
    rig.cmdq.writeProd(rig.prod | (1 << 19) | (1 << 31));
    expect(rig.i32[rig.regs + Q_CONS]).toBe(2);
    expect(rig.i32[rig.regs + Q_GERROR]! & GERROR_CMDQ_ERR).toBe(0);
    expect((rig.sink as RecordingSink).commands()).toEqual([hostAsid(1), hostAsid(2)]);
  });

  it('an overfilled PROD (UNPREDICTABLE) is consumed up to its masked value, never CONS.ERR (the case __arm_smmu_cmdq_skip_err would corrupt)', () => {
    const rig = new Rig(vs(), 3);
    // Fill the whole ring with legal commands and consume it, then claim 12 > 8 new entries.
    rig.submit(...Array.from({ length: 8 }, (_, i) => asid(i)));
    rig.cmdq.writeProd((8 + 12) & 15);
    expect(rig.i32[rig.regs + Q_CONS]).toBe((8 + 12) & 15);
    expect(rig.i32[rig.regs + Q_GERROR]! & GERROR_CMDQ_ERR).toBe(0);
    // The ring's 8 entries once, then the first 4 again: what the slots held.
    const ids = [...Array.from({ length: 8 }, (_, i) => i), ...Array.from({ length: 8 + 4 }, (_, i) => i % 8)];
    expect((rig.sink as RecordingSink).commands()).toEqual(ids.map(hostAsid));
  });
});

describe('FirstPass: which commands the VMM forwards and which it consumes itself', () => {
  // The seed thread: the kernel executes the stage-1 invalidations (TLBI_NH_*, TLBI_NSNH_ALL, ATC_INV, CFGI_CD*);
  // PREFETCH_*, PRI_RESP, RESUME and STALL_TERM are the VMM's, and need no action in this emulation.
  const feat = makeFeatures({ PRI: true, STALL_MODEL: 0 });
  const one = (op: keyof typeof OP): FirstPass => {
    const q = new Uint32Array(4 * 4);
    const f = cmd(op, op === 'TLBI_NH_VA' || op === 'TLBI_NH_VAA' ? { addr: 0x1000 } : {});
    encodeWords(f, q.subarray(0, 4));
    const fp = new FirstPass(new Uint32Array(4));
    fp.run(q, 2, 0, 1, feat);
    return fp;
  };
  for (const op of ['TLBI_NH_ALL', 'TLBI_NH_ASID', 'TLBI_NH_VA', 'TLBI_NH_VAA', 'TLBI_NSNH_ALL', 'ATC_INV', 'CFGI_CD', 'CFGI_CD_ALL'] as const) {
    it(`${op} is batched for the kernel`, () => {
      const fp = one(op);
      expect([fp.stop, fp.batchLen, fp.handledByVmm, fp.end]).toEqual([STOP.PROD, 1, 0, 1]);
    });
  }
  for (const op of ['PREFETCH_CONFIG', 'PREFETCH_ADDR', 'PRI_RESP', 'RESUME', 'STALL_TERM'] as const) {
    it(`${op} is consumed by the VMM`, () => {
      const fp = one(op);
      expect([fp.stop, fp.batchLen, fp.handledByVmm, fp.end]).toEqual([STOP.PROD, 0, 1, 1]);
    });
  }
  it('a batch buffer of one command is enough; less is refused', () => {
    expect(new FirstPass(new Uint32Array(4)).capacity).toBe(1);
    expect(() => new FirstPass(new Uint32Array(3))).toThrow(new RangeError('the batch buffer must hold at least one command, got 3 words'));
  });
});
