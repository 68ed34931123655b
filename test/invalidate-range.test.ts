// GuestQueue.invalidateRange's builder (tlbInvRangeAsid: Linux
// arm_smmu_tlb_inv_range_asid -> __arm_smmu_tlb_inv_range, rounded out to the
// granule, whole-ASID fallback) proven with the SMMU model as the oracle, in
// this thread: prime the IOTLB with every page of a window, point every page
// somewhere new, run the built commands and a CMD_SYNC, then translate again.
// No page overlapping the range may translate stale; pages outside it keep
// their IOTLB entries unless the command's scope (the whole-ASID fallback, a
// non-leaf RIL split's one extra page) includes them.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeCommand } from '../src/codec.ts';
import { makeFeatures, type SmmuFeatures } from '../src/features.ts';
import { CMDQ_MAX_TLBI_OPS, tlbInvRangeAsid } from '../src/invalidate.ts';
import { ACCESS, PROT, type Granule } from '../src/model/index.ts';
import { refusedArgument, thrown } from './doorbell-helpers.ts';
import { cmd, makeVm, makeWorld, run, MiB } from './model-fixture.ts';

const ASID = 0x1234;
const VMID = 3;
const PSID = 7;
/** Pages of the test window around each range. */
const W = 40;

function words(n: number, iova: number, size: number, granule: number, leaf: boolean, feat: SmmuFeatures): Uint32Array {
  const out = new Uint32Array(4 * n);
  expect(tlbInvRangeAsid(out, 0, ASID, iova, size, granule, leaf, feat)).toBe(n);
  return out;
}

function decoded(out: Uint32Array, feat: SmmuFeatures): ReturnType<typeof decodeCommand>[] {
  const cmds = [];
  for (let k = 0; k < out.length / 4; k++) {
    const w0 = (BigInt(out[4 * k + 1]!) << 32n) | BigInt(out[4 * k]!);
    const w1 = (BigInt(out[4 * k + 3]!) << 32n) | BigInt(out[4 * k + 2]!);
    cmds.push(decodeCommand([w0, w1], feat)); // throws on an illegal command
  }
  return cmds;
}

/** One model per (granule, RIL): a VM whose device translates ASID 0x1234 through a stage-1 table of that granule. */
function oracle(granule: Granule, ril: boolean) {
  const w = makeWorld({ RIL: ril }, {}, 48 * MiB);
  const vm = makeVm(w, { vmid: VMID, psids: [PSID], asid: ASID, granule, ramBytes: 32 * MiB });
  const feat = w.features;
  const pa = (page: number, gen: number): number => vm.gm.paOf(vm.dataIpa + (gen * W + page) * granule);
  const translate = (va: number) => w.model.translateIova(PSID, -1, va, ACCESS.READ);
  return {
    feat,
    /**
     * Window of W pages at `base` primed with generation 0, remapped to
     * generation 1, then `iova`/`size` invalidated with the builder. Returns
     * which pages still translate to generation 0 (stale) and the commands.
     */
    check(base: number, iova: number, size: number, leaf: boolean) {
      run(w.model, cmd('TLBI_NH_ALL', { vmid: VMID }));
      for (let p = 0; p < W; p++) vm.pt.map(base + p * granule, vm.dataIpa + p * granule, granule, PROT.READ | PROT.WRITE);
      for (let p = 0; p < W; p++) if ((translate(base + p * granule) as { pa: number }).pa !== pa(p, 0)) throw new Error(`page ${p} not primed`);
      for (let p = 0; p < W; p++) vm.pt.map(base + p * granule, vm.dataIpa + (W + p) * granule, granule, PROT.READ | PROT.WRITE);
      const cmds = invalidate(iova, size, granule, leaf);
      const stale: boolean[] = [];
      for (let p = 0; p < W; p++) {
        const r = translate(base + p * granule) as { pa: number };
        expect([pa(p, 0), pa(p, 1)]).toContain(r.pa);
        stale.push(r.pa === pa(p, 0));
      }
      return { stale, cmds };
    },
    /**
     * A 2 MiB block (level 2 of a 4K table) at `base`, primed, moved to
     * another 2 MiB, then [iova, iova + size) invalidated with the builder:
     * does any page of the block still translate to the old one?
     */
    blockStale(base: number, iova: number, size: number): boolean[] {
      run(w.model, cmd('TLBI_NH_ALL', { vmid: VMID }));
      const BLOCK = 2 * MiB;
      vm.pt.map(base, vm.dataIpa, BLOCK, PROT.READ | PROT.WRITE);
      const old = (translate(base + 0x1000) as { pa: number }).pa;
      if (old !== vm.gm.paOf(vm.dataIpa + 0x1000)) throw new Error('block not primed');
      vm.pt.map(base, vm.dataIpa + BLOCK, BLOCK, PROT.READ | PROT.WRITE);
      invalidate(iova, size, 4096, true);
      return [0, 0x1000, BLOCK - 4096].map((off) => (translate(base + off) as { pa: number }).pa === vm.gm.paOf(vm.dataIpa + off));
    },
  };

  /** Build [iova, iova + size)'s commands, run them and a CMD_SYNC on the model; returns them decoded. */
  function invalidate(iova: number, size: number, granule: number, leaf: boolean): ReturnType<typeof decodeCommand>[] {
      const n = tlbInvRangeAsid(null, 0, ASID, iova, size, granule, leaf, feat);
      const out = words(n, iova, size, granule, leaf, feat);
      for (let k = 0; k < n; k++) {
        const f = new Uint32Array(32);
        const c = decoded(out.subarray(4 * k, 4 * k + 4), feat)[0]!;
        // Execute the decoded command through the model exactly as the consumer would.
        f.set(cmd(c.op as 'TLBI_NH_VA', {
          asid: c.asid, vmid: VMID, tg: c.tg ?? 0, ttl: c.ttl ?? 0, num: c.num ?? 0, scale: c.scale ?? 0, leaf: c.leaf ?? 0,
          addr: c.addr ?? 0n,
        }));
        expect(w.model.execute(f)).toBe(0);
      }
      w.model.execute(cmd('CMD_SYNC'));
      return decoded(out, feat);
  }
}

describe('tlbInvRangeAsid with the model as the oracle', () => {
  const oracles = new Map<string, ReturnType<typeof oracle>>();
  const get = (g: Granule, ril: boolean) => {
    const k = `${g}/${ril}`;
    if (!oracles.has(k)) oracles.set(k, oracle(g, ril));
    return oracles.get(k)!;
  };
  it('no page overlapping the range translates stale; pages outside keep their entries where the scope allows', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<Granule>(4096, 16384, 65536),
        fc.boolean(),
        fc.boolean(),
        // Window bases: low, straddling the 32-bit boundary, at the top of the 48-bit space.
        fc.constantFrom(0, 1, 2),
        fc.integer({ min: 0, max: W * 65536 - 1 }),
        fc.integer({ min: 1, max: W * 65536 }),
        (granule, ril, leaf, where, off, len) => {
          const o = get(granule, ril);
          const span = W * granule;
          const base = [0x4000_0000, 2 ** 32 - 16 * granule, 2 ** 48 - span][where]!;
          const iova = base + (off % span);
          const size = 1 + ((len - 1) % (base + span - iova));
          const { stale, cmds } = o.check(base, iova, size, leaf);
          const first = Math.floor((iova - base) / granule);
          const last = Math.ceil((iova + size - base) / granule) - 1;
          const whole = cmds.length === 1 && cmds[0]!.op === 'TLBI_NH_ASID';
          for (let p = 0; p < W; p++) {
            if (p >= first && p <= last) expect(stale[p], `page ${p} of [${first}, ${last}] stale`).toBe(false);
            // A RIL split with TTL 0 (no level hint: tlbInvRangeAsid never gives one) rounds a lone page in a
            // 32-page window up to two (Reserved NUM=SCALE=TTL=0), so the page after the range may go too.
            else if (!whole && !(ril && p === last + 1)) expect(stale[p], `page ${p} outside [${first}, ${last}] dropped`).toBe(true);
          }
          // The fallback only where a range cannot say it (W pages fit both ways).
          expect(whole).toBe(false);
          if (ril) expect(cmds.length).toBeLessThanOrEqual(5);
          else expect(cmds.length).toBe(last - first + 1);
        },
      ),
      { numRuns: 120 },
    );
  });

  it('the issue #9 cases: size 100 and an unaligned iova cover their pages (RIL on and off)', () => {
    for (const ril of [true, false]) {
      const o = get(4096, ril);
      const base = 0x4000_0000;
      // With RIL a lone page goes as two (TTL 0, see above): the page after it too.
      expect(o.check(base, base, 100, true).stale.slice(0, 3)).toEqual([false, !ril, true]);
      expect(o.check(base, base + 0x800, 0x1000, true).stale.slice(0, 3)).toEqual([false, false, true]);
    }
  });

  it('a range over a 2 MiB block leaves no page of it stale: no TTL hint claims level 3 (Linux passes the unmapped leaf size; the helper knows only the granule)', () => {
    for (const ril of [true, false]) {
      const o = get(4096, ril);
      const base = 0x4000_0000;
      expect(o.blockStale(base, base, 2 * MiB), `RIL ${ril}, whole block`).toEqual([false, false, false]);
      // One page of the block: the block's one IOTLB entry covers it, so the whole block goes.
      expect(o.blockStale(base, base + 0x1000, 4096), `RIL ${ril}, one page`).toEqual([false, false, false]);
    }
  });

  it('a span no range can express becomes one TLBI_NH_ASID that drops every page of the ASID', () => {
    const o = get(4096, true);
    // 2^36 pages would need SCALE = 36; Linux's split would build an illegal command.
    const all = o.check(0x4000_0000, 0, 2 ** 48, true);
    expect(all.cmds.map((c) => c.op)).toEqual(['TLBI_NH_ASID']);
    expect(all.stale.every((s) => !s)).toBe(true);
    // 2^35 pages also need SCALE 35; 17 * 2^31 pages are one legal command (NUM 16, SCALE 31).
    expect(decoded(words(1, 0, 2 ** 47, 4096, true, o.feat), o.feat).map((c) => c.op)).toEqual(['TLBI_NH_ASID']);
    expect(decoded(words(1, 0, 17 * 2 ** 43, 4096, true, o.feat), o.feat)).toMatchObject([{ op: 'TLBI_NH_VA', num: 16, scale: 31 }]);
  });

  it('without RIL, CMDQ_MAX_TLBI_OPS pages or more become one TLBI_NH_ASID (SVA\'s fallback); fewer stay per page', () => {
    const feat = makeFeatures({ RIL: false });
    for (const g of [4096, 16384, 65536]) {
      expect(tlbInvRangeAsid(null, 0, ASID, 0, CMDQ_MAX_TLBI_OPS * g, g, true, feat)).toBe(1);
      expect(decoded(words(1, 0, CMDQ_MAX_TLBI_OPS * g, g, true, feat), feat)[0]!.op).toBe('TLBI_NH_ASID');
      // One byte more than 511 pages at an unaligned start touches 513 pages.
      expect(tlbInvRangeAsid(null, 0, ASID, 1, (CMDQ_MAX_TLBI_OPS - 1) * g, g, true, feat)).toBe(1);
      expect(tlbInvRangeAsid(null, 0, ASID, g, (CMDQ_MAX_TLBI_OPS - 1) * g, g, true, feat)).toBe(CMDQ_MAX_TLBI_OPS - 1);
    }
  });

  it('refuses bad arguments up front with an ArgumentError naming the argument, writing nothing', () => {
    const feat = makeFeatures();
    const narrow = makeFeatures({ ASID16: false });
    const cases: [string, () => unknown][] = [
      ['size', () => tlbInvRangeAsid(null, 0, 1, 0, 0, 4096, true, feat)],
      ['size', () => tlbInvRangeAsid(null, 0, 1, 0, -4096, 4096, true, feat)],
      ['size', () => tlbInvRangeAsid(null, 0, 1, 0, NaN, 4096, true, feat)],
      ['size', () => tlbInvRangeAsid(null, 0, 1, 0, Infinity, 4096, true, feat)],
      ['size', () => tlbInvRangeAsid(null, 0, 1, 2 ** 48 - 4096, 8192, 4096, true, feat)],
      ['granule', () => tlbInvRangeAsid(null, 0, 1, 0, 4096, 3000, true, feat)],
      ['granule', () => tlbInvRangeAsid(null, 0, 1, 0, 4096, 0, true, makeFeatures({ RIL: false }))],
      ['granule', () => tlbInvRangeAsid(null, 0, 1, 0, 4096, 2 << 20, true, feat)],
      ['asid', () => tlbInvRangeAsid(null, 0, 65537, 0, 4096, 4096, true, feat)],
      ['asid', () => tlbInvRangeAsid(null, 0, 256, 0, 4096, 4096, true, narrow)],
      ['asid', () => tlbInvRangeAsid(null, 0, NaN, 0, 4096, 4096, true, feat)],
      ['asid', () => tlbInvRangeAsid(null, 0, -1, 0, 4096, 4096, true, feat)],
      ['iova', () => tlbInvRangeAsid(null, 0, 1, 2 ** 48, 4096, 4096, true, feat)],
      ['iova', () => tlbInvRangeAsid(null, 0, 1, -1, 4096, 4096, true, feat)],
      ['iova', () => tlbInvRangeAsid(null, 0, 1, NaN, 4096, 4096, true, feat)],
      ['leaf', () => tlbInvRangeAsid(null, 0, 1, 0, 4096, 4096, 1 as unknown as boolean, feat)],
    ];
    for (const [arg, call] of cases) expect(refusedArgument(call), arg).toBe(arg);
    expect(tlbInvRangeAsid(null, 0, 255, 0, 4096, 4096, true, narrow)).toBe(1);
    // ASID 0 is an ASID like any other (the kernel's own on a stage-1 domain), not a refusal.
    expect(tlbInvRangeAsid(null, 0, 0, 0, 4096, 4096, true, feat)).toBe(1);
    // Each refusal says what the argument must be, under which feature, and what it got.
    const texts: [string, () => unknown][] = [
      ['asid must be an integer in 0..65535 (IDR0.ASID16=1), got 65537', () => tlbInvRangeAsid(null, 0, 65537, 0, 4096, 4096, true, feat)],
      ['asid must be an integer in 0..255 (IDR0.ASID16=0), got 256', () => tlbInvRangeAsid(null, 0, 256, 0, 4096, 4096, true, narrow)],
      ['granule must be 4096, 16384 or 65536 (a stage-1 TG0), got 3000', () => tlbInvRangeAsid(null, 0, 1, 0, 4096, 3000, true, feat)],
      ['iova must be an integer address in [0, 2^48), got -1', () => tlbInvRangeAsid(null, 0, 1, -1, 4096, 4096, true, feat)],
      ['size must be a whole number of bytes > 0 with iova + size <= 2^48, got 0', () => tlbInvRangeAsid(null, 0, 1, 0, 0, 4096, true, feat)],
      ['leaf must be a boolean, got 1', () => tlbInvRangeAsid(null, 0, 1, 0, 4096, 4096, 1 as unknown as boolean, feat)],
    ];
    for (const [text, call] of texts) expect((thrown(call) as Error).message).toBe(text);
  });

  // arm_smmu_tlb_inv_range_asid's RIL split: a page count that is 1 more than a multiple of 32 gets one page more
  // (a lone page at SCALE 0 with TTL 0 would be Reserved), and the split needs SCALE <= 31 without DS. 2^32 - 1
  // pages (all 32 low bits) split within SCALE 31, so they stay a range; one page more would need SCALE 32 and
  // fall back to TLBI_NH_ASID. The count is 31 mod 32, so it takes no extra page.
  it('at the SCALE limit: 2^32 - 1 pages stay a range split, 2^32 fall back to the whole ASID without DS and are one SCALE-32 command with it', () => {
    const feat = makeFeatures({ RIL: true, DS: false });
    const size = (2 ** 32 - 1) * 4096;
    const n = tlbInvRangeAsid(null, 0, ASID, 0, size, 4096, true, feat);
    const cmds = decoded(words(n, 0, size, 4096, true, feat), feat);
    expect(cmds.every((c) => c.op === 'TLBI_NH_VA')).toBe(true);
    // 2^32 - 1 = 31 * (1 + 2^5 + ... + 2^25) + 3 * 2^30: one command per 5-bit chunk.
    expect(cmds.map((c) => (c as { scale: number }).scale)).toEqual([0, 5, 10, 15, 20, 25, 30]);
    const pages = cmds.reduce((sum, c) => sum + ((c as { num: number }).num + 1) * 2 ** (c as { scale: number }).scale, 0);
    expect(pages).toBe(2 ** 32 - 1);
    // One page more needs SCALE 32: the whole ASID instead.
    const m = tlbInvRangeAsid(null, 0, ASID, 0, size + 4096, 4096, true, feat);
    expect(decoded(words(m, 0, size + 4096, 4096, true, feat), feat).map((c) => c.op)).toEqual(['TLBI_NH_ASID']);
    // With DS (SCALE up to 39 here, 63 in the split check), 2^32 pages are one command: NUM 0 at SCALE 32, whose
    // __ffs comes from the page count's high 32 bits.
    const ds = makeFeatures({ RIL: true, DS: true });
    const k = tlbInvRangeAsid(null, 0, ASID, 0, size + 4096, 4096, true, ds);
    expect(decoded(words(k, 0, size + 4096, 4096, true, ds), ds)).toMatchObject([{ op: 'TLBI_NH_VA', num: 0, scale: 32 }]);
    // 3 x 2^32 pages: __ffs is the lowest set bit of the high half (32), not its top bit: NUM 2 at SCALE 32.
    const big = 3 * 2 ** 44;
    const j = tlbInvRangeAsid(null, 0, ASID, 0, big, 4096, true, ds);
    expect(decoded(words(j, 0, big, 4096, true, ds), ds)).toMatchObject([{ op: 'TLBI_NH_VA', num: 2, scale: 32 }]);
    // 2^32 + 2 pages: the low window (2 pages at SCALE 1) fits, the next (2^32) does not. The check walks every window
    // of the split, as __arm_smmu_tlb_inv_range would issue them, not only the first: the whole ASID without DS.
    const two = (2 ** 32 + 2) * 4096;
    const t = tlbInvRangeAsid(null, 0, ASID, 0, two, 4096, true, feat);
    expect(decoded(words(t, 0, two, 4096, true, feat), feat).map((c) => c.op)).toEqual(['TLBI_NH_ASID']);
    expect(decoded(words(2, 0, two, 4096, true, ds), ds)).toMatchObject([{ num: 0, scale: 1 }, { num: 0, scale: 32, addr: 2n * 4096n }]);
  });
});
