// Issue 10: corners where the emulation must behave as an SMMUv3 (IHI 0070)
// and the Linux v6.18 / iommufd stack do, each test citing the section or
// function it follows. Pure where it can be; a host where threads matter.
import { afterEach, describe, expect, it } from 'vitest';
import { QueueError, startHost, type Host } from '../src/index.ts';
import { ILL_REASON, decodeWords, illReason } from '../src/codec.ts';
import { DEFAULT_FEATURES } from '../src/features.ts';
import { CS, F, FIELD_COUNT, OP } from '../src/fields.ts';
import { makeVm, thrown } from './doorbell-helpers.ts';

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
