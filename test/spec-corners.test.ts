// Issue 10: corners where the emulation must behave as an SMMUv3 (IHI 0070)
// and the Linux v6.18 / iommufd stack do, each test citing the section or
// function it follows. Pure where it can be; a host where threads matter.
import { afterEach, describe, expect, it } from 'vitest';
import { QueueError, startHost, type Host } from '../src/index.ts';
import { ILL_REASON, decodeWords, illReason } from '../src/codec.ts';
import { DEFAULT_FEATURES } from '../src/features.ts';
import { CS, F, FIELD_COUNT, OP } from '../src/fields.ts';
import { FAULT } from '../src/model/smmu.ts';
import { PROT } from '../src/model/pgtable.ts';
import { ASID, DATA_IPA, IOVA, makeVm, thrown } from './doorbell-helpers.ts';
import { trapStats } from './trap-helpers.ts';
import { readTrapCounts } from '../src/trap/transport.ts';
import { ENOENT, TRAP_KOP, TrapKernelSide } from '../src/trap/kernel.ts';
import { MB_ARG0, MB_PAYLOAD, MB_RES0, MMIO_BYTES, mailboxPayload, mailboxWords } from '../src/layout.ts';
import type { MailboxHandler, MailboxServer } from '../src/mailbox.ts';
import { VSmmu } from '../src/vsmmu.ts';
import { RecordingSink } from './trap-helpers.ts';
import { EFAULT } from '../src/trap/iommufd.ts';
import { STE, STE_CFG, encodeSte, getField, installNestedSte, type Stage2Config } from '../src/model/structs.ts';

const f = new Uint32Array(FIELD_COUNT);

let host: Host | undefined;
afterEach(async () => {
  await host?.stop();
  host = undefined;
});

describe('trap-path error text (issue 10 item 7)', () => {
  it('a first-pass refusal reads as its reason, named QueueError, with CONS printed as wrap|index (no ERR bits)', async () => {
    host = await startHost();
    const t = await makeVm(host, 3, 0x10);
    const q = await t.vm.openQueue({ path: 'trap', log2size: 4 });
    const err = thrown(() => q.submit([{ op: 'TLBI_NH_ALL' }, { op: 'TLBI_S12_VMALL', vmid: 1 }]));
    expect(err).toBeInstanceOf(QueueError);
    const qe = err as QueueError;
    expect(qe.name).toBe('QueueError');
    expect(qe.reason).toMatch(/opcode 0x28 is not offered to a guest/);
    expect(qe.message).toMatch(/command at CONS=0x1, PROD=/);
    expect(qe.err).toBe(1);
  });

  it('a forwarded command the kernel refuses (arm_vsmmu_convert_user_cmd: unknown vSID) names the ioctl and its errno', async () => {
    host = await startHost();
    const t = await makeVm(host, 3, 0x10);
    const q = await t.vm.openQueue({ path: 'trap', log2size: 4 });
    const err = thrown(() => q.submit([{ op: 'ATC_INV', sid: 9, size: 52 }]));
    expect(err).toBeInstanceOf(QueueError);
    expect((err as QueueError).reason).toMatch(/IOMMU_HWPT_INVALIDATE returned -EIO/);
    expect((err as QueueError).reason).not.toMatch(/unknown error reason/);
  });
});

describe('no RES0 over-checking (issue 10 item 5)', () => {
  it('spec 4.2.2 CMD_PREFETCH_ADDR: Stride (SMMUv3.1+) and NS, in w1[11:5], never stop the queue', () => {
    for (const bits of [1 << 5, 0xf << 8, 0x7f << 5]) {
      const u = Uint32Array.of(OP.PREFETCH_ADDR, 0x10, 0x4000_0000 | bits | 3, 0);
      expect(decodeWords(u, f, DEFAULT_FEATURES)).toBe(0);
      expect(f[F.SIZE]).toBe(3);
      expect(f[F.ADDR_LO]).toBe(0x4000_0000);
    }
    // The rest of the RES0 bits are still checked.
    expect(decodeWords(Uint32Array.of(OP.PREFETCH_ADDR | (1 << 8), 0, 0, 0), f, DEFAULT_FEATURES)).toBe(ILL_REASON.RES0);
  });

  it('spec 4.7.3 CMD_SYNC: MSIAddr[55:52] is IGNORED unless CS=IRQ, and RES0 above the 52-bit OAS when it is', () => {
    const sync = (cs: number): Uint32Array => Uint32Array.of(OP.CMD_SYNC | (cs << 12), 0, 0x1000, 0xf << 20);
    expect(decodeWords(sync(CS.NONE), f, DEFAULT_FEATURES)).toBe(0);
    expect(decodeWords(sync(CS.SEV), f, DEFAULT_FEATURES)).toBe(0);
    const ill = decodeWords(sync(CS.IRQ), f, DEFAULT_FEATURES);
    expect(ill).toBe(ILL_REASON.MSIADDR_OAS);
    expect(illReason(ill, sync(CS.IRQ))).toMatch(/MSIAddr\[55:52\]/);
    // Bits [63:56] are RES0 whatever CS says.
    expect(decodeWords(Uint32Array.of(OP.CMD_SYNC, 0, 0, 1 << 24), f, DEFAULT_FEATURES)).toBe(ILL_REASON.RES0 | (1 << 8));
  });
});

describe('CFGI_STE on the trap path is always consumed (issue 10 item 2)', () => {
  it('spec 4.3.1: a vSTE outside guest RAM (-EFAULT) or a vSID with no physical STE (-ENOENT) completes the command; the device aborts, the VMM counts the event', async () => {
    host = await startHost();
    const vm = await host.createVm({ vmid: 6, streams: [{ vsid: 0, psid: 0x10 }, { vsid: 1, psid: 0x11 }, { vsid: 2, psid: 0x12 }] });
    const pt = vm.pageTable();
    pt.map(IOVA, DATA_IPA, 4096, PROT.READ | PROT.WRITE);
    for (const vsid of [0, 1]) await vm.attachDevice({ vsid, cd: { asid: ASID, ttb0: pt.root } });
    const dma = await host.dma();
    expect(dma.translate(0x11, -1, IOVA).fault).toBe(0);
    const q = await vm.openQueue({ path: 'trap', log2size: 4 });
    // vSID 0's vSTE is the last 64 bytes of guest RAM, so vSID 1's lies beyond it.
    q.setStreamTableBase(vm.ramBytes - 64);
    q.submit([{ op: 'CFGI_STE', sid: 1, leaf: 1 }, { op: 'CFGI_STE', sid: 2, leaf: 1 }, { op: 'TLBI_NH_ALL' }], { cs: 'sev' });
    const st = q.state();
    expect(st.cons).toBe(4);
    expect(st.err).toBe(0);
    expect(st.gerror ^ st.gerrorn).toBe(0);
    expect(trapStats(q.handle)).toMatchObject({ forwarded: 1 });
    expect(readTrapCounts(q.handle).steEvents).toBe(2);
    // The unreadable vSTE left the device no stale configuration: it aborts now; vSID 0 is untouched.
    expect(dma.translate(0x11, -1, IOVA).fault).toBe(FAULT.STE_ABORT);
    expect(dma.translate(0x10, -1, IOVA).fault).toBe(0);
  });
});

describe('installNestedSte follows Linux arm_smmu_validate_vste (issue 10 item 4)', () => {
  const s2: Stage2Config = { vmid: 9, ttb: 0x20_0000, t0sz: 25, sl0: 1, tg: 0, ps: 5 };
  const mem = new SharedArrayBuffer(4096);
  const installed = (): Uint32Array => new Uint32Array(mem, 0, 16).slice();
  const vste = (f: Parameters<typeof encodeSte>[0]): Uint32Array => encodeSte(f);

  it('STRTAB_STE_0_NESTING_ALLOWED includes S1FMT: a two-level CD table vSTE is installed, S1Fmt kept', () => {
    const v = vste({ config: STE_CFG.S1_TRANS, s1ContextPtr: 0x4000, s1CdMax: 4 });
    v[0] = (v[0]! | (1 << 4)) >>> 0; // S1Fmt = 1 (two-level, 4 KiB leaf tables)
    expect(installNestedSte(mem, 0, v, s2)).toBeNull();
    const w = installed();
    expect(getField(w, STE.CONFIG)).toBe(STE_CFG.NESTED);
    expect(getField(w, STE.S1FMT)).toBe(1);
    expect(getField(w, STE.S1CDMAX)).toBe(4);
    expect(getField(w, STE.S2VMID)).toBe(9);
  });

  it('EATS other than ABT/TRANS is -EIO (the stream aborts); EATS=TRANS is kept', () => {
    expect(installNestedSte(mem, 0, vste({ config: STE_CFG.S1_TRANS, s1ContextPtr: 0x4000, eats: 2 }), s2)).toBe('BAD_EATS');
    expect(getField(installed(), STE.CONFIG)).toBe(STE_CFG.ABORT);
    expect(installNestedSte(mem, 0, vste({ config: STE_CFG.S1_TRANS, s1ContextPtr: 0x4000, eats: 1 }), s2)).toBeNull();
    expect(getField(installed(), STE.EATS)).toBe(1);
  });

  it('a bit outside NESTING_ALLOWED (STE_0 [58:52], STRW, STE_1 high word) is -EIO; the stage-2 half (words 4..15) is never read', () => {
    for (const [k, bit] of [[1, 20], [2, 30], [3, 0]] as const) {
      const v = vste({ config: STE_CFG.S1_TRANS, s1ContextPtr: 0x4000 });
      v[k] = (v[k]! | (1 << bit)) >>> 0;
      expect(installNestedSte(mem, 0, v, s2)).toBe('NOT_ALLOWED');
      expect(getField(installed(), STE.CONFIG)).toBe(STE_CFG.ABORT);
    }
    const v = vste({ config: STE_CFG.S1_TRANS, s1ContextPtr: 0x4000 });
    v.fill(0xffffffff, 4);
    expect(installNestedSte(mem, 0, v, s2)).toBeNull();
    expect(getField(installed(), STE.S2VMID)).toBe(9);
  });
});

describe('the kernel checks the VMM ioctl arguments (issue 10 item 8)', () => {
  /** The kernel side's handlers, called as the mailbox server would for mailbox 3. */
  function kernel(): { call: (op: number, args: number[], payloadPa: number) => number; sink: RecordingSink; i32: Int32Array; mb: number } {
    const sab = new SharedArrayBuffer(MMIO_BYTES + 65536);
    const i32 = new Int32Array(sab);
    const sink = new RecordingSink();
    const vsmmu = new VSmmu(5, [[0x10, 0x20008]]);
    const side = new TrapKernelSide(sab, { vm: (id) => { if (id !== 5) throw new Error('no VM'); return { vsmmu }; } }, sink, DEFAULT_FEATURES);
    const handlers = new Map<number, MailboxHandler>();
    side.register({ register: (op: number, h: MailboxHandler) => handlers.set(op, h) } as unknown as MailboxServer);
    const base = mailboxWords(3);
    const call = (op: number, args: number[], payloadPa: number): number => {
      args.forEach((a, k) => { i32[base + MB_ARG0 + k] = a; });
      i32[base + MB_PAYLOAD] = payloadPa;
      handlers.get(op)!(i32, base);
      return i32[base + MB_RES0]!;
    };
    return { call, sink, i32, mb: 3 };
  }

  it('copy_from_user: a payload pointer outside the VMM\'s own buffer is -EFAULT and nothing is read or executed', () => {
    const k = kernel();
    const own = mailboxPayload(k.mb);
    k.i32.set([OP.TLBI_NH_ALL, 0, 0, 0], own >>> 2);
    for (const pa of [mailboxPayload(k.mb + 1), own - 16, own + 4096 - 8, MMIO_BYTES, own + 2, -16]) {
      expect(k.call(TRAP_KOP.IOMMUFD_INVALIDATE, [5, 1], pa)).toBe(-EFAULT);
      expect(k.call(TRAP_KOP.NESTED_STE, [5, 0x10], pa)).toBe(-EFAULT);
    }
    expect(k.sink.log).toEqual([]);
    expect(k.call(TRAP_KOP.IOMMUFD_INVALIDATE, [5, 1], own)).toBe(0);
    expect(k.sink.commands()).toHaveLength(1);
  });

  it('iommufd object lookup: a VMID with no vIOMMU is -ENOENT for both ioctls', () => {
    const k = kernel();
    const own = mailboxPayload(k.mb);
    expect(k.call(TRAP_KOP.IOMMUFD_INVALIDATE, [6, 1], own)).toBe(-ENOENT);
    expect(k.call(TRAP_KOP.NESTED_STE, [6, 0x10], own)).toBe(-ENOENT);
    expect(k.sink.log).toEqual([]);
  });
});

describe('a strict Tegra241 guest VCMDQ, per queue (issue 10 item 11)', () => {
  it('tegra241_guest_vcmdq_supports_cmd: TLBI_NH_ASID, TLBI_NH_VA, ATC_INV and CMD_SYNC CS=NONE pass; NH_VAA, NH_ALL and a SEV sync stop the queue; a wide queue of the same VM takes them', async () => {
    host = await startHost({ spinUs: 0 });
    const t = await makeVm(host, 7, 0x10);
    const strict = await t.vm.openQueue({ cmdset: 'tegra241', log2size: 4 });
    const wide = await t.vm.openQueue({ log2size: 4 });
    const legal = [
      { op: 'TLBI_NH_ASID', asid: 1 }, { op: 'TLBI_NH_VA', asid: 1, addr: BigInt(IOVA), leaf: 1 }, { op: 'ATC_INV', sid: 0, size: 52 },
    ] as const;
    strict.submit([...legal], { cs: 'none' });
    expect(strict.state().err).toBe(0);
    for (const bad of [{ op: 'TLBI_NH_VAA', addr: BigInt(IOVA), leaf: 1 }, { op: 'TLBI_NH_ALL' }] as const) {
      const err = thrown(() => strict.submit([bad], { cs: 'none' }));
      expect(err).toBeInstanceOf(QueueError);
      expect((err as QueueError).reason).toMatch(/not in a Tegra241 guest VCMDQ's command set/);
      expect(strict.skipFaultingCommand()).toBe(true);
      strict.sync('none', 10_000);
    }
    const err = thrown(() => strict.sync('sev', 10_000));
    expect((err as QueueError).reason).toMatch(/CS=2: a Tegra241 guest VCMDQ takes CS=NONE only/);
    wide.submit([{ op: 'TLBI_NH_VAA', addr: BigInt(IOVA), leaf: 1 }, { op: 'TLBI_NH_ALL' }], { cs: 'sev' });
    expect(wide.state().err).toBe(0);
    await expect(t.vm.openQueue({ cmdset: 'x' as 'wide' })).rejects.toThrow(/cmdset must be 'wide' or 'tegra241'/);
  });
});
