// Issue 10: corners where the emulation must behave as an SMMUv3 (IHI 0070)
// and the Linux v6.18 / iommufd stack do, each test citing the section or
// function it follows. Pure where it can be; a host where threads matter.
import { afterEach, describe, expect, it } from 'vitest';
import { QueueError, startHost, type Host } from '../src/index.ts';
import { makeVm, thrown } from './doorbell-helpers.ts';

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
