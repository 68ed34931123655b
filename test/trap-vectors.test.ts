// Every iommufd-convert and iommufd-illegal vector end to end with real
// threads: through a guest's trapped CMDQ and the VMM thread, and as the raw
// IOMMU_HWPT_INVALIDATE ioctl on the kernel thread (what a VMM that forwarded
// it anyway would get).
import { afterEach, describe, expect, it } from 'vitest';
import { buildTlbiNhAsid } from '../src/codec.ts';
import { QueueError } from '../src/guest.ts';
import { startHost, type Host } from '../src/index.ts';
import { CONS_ERR_SHIFT, Q_CONS } from '../src/layout.ts';
import { MailboxClient } from '../src/mailbox.ts';
import { TRAP_KOP } from '../src/trap/kernel.ts';
import { CONVERT, IOMMUFD_ILLEGAL, kernelCounter, streamsOf, trapStats, wordsOf, words4, type Vector } from './trap-helpers.ts';
import { thrown } from './doorbell-helpers.ts';

let host: Host | undefined;
afterEach(async () => {
  await host?.stop();
  host = undefined;
});

const asid = (a: number): Uint32Array => {
  const u = new Uint32Array(4);
  buildTlbiNhAsid(u, a, 0);
  return u;
};

/** A host with the vector's VM, every device attached (so the VMM's CFGI_STE has physical STEs to rewrite). */
async function vmOf(v: Vector) {
  host = await startHost();
  const vm = await host.createVm({ vmid: v.vsmmu_vmid!, streams: streamsOf(v) });
  for (const s of vm.streams) await vm.attachDevice({ vsid: s.vsid, cd: { asid: 1, ttb0: vm.pageTable().root } });
  return { host, vm, kernel: await kernelCounter(host) };
}

/** What the VMM does with each command the kernel would refuse: handle it itself, or stop the queue on it. */
const VMM_OUTCOME: Record<string, { handled: true; steInstalls: number } | { handled: false }> = {
  CFGI_STE: { handled: true, steInstalls: 1 },
  CFGI_STE_RANGE: { handled: true, steInstalls: 2 }, // CFGI_ALL: both devices
  CMD_SYNC: { handled: true, steInstalls: 0 },
  PREFETCH_CONFIG: { handled: true, steInstalls: 0 },
  TLBI_S12_VMALL: { handled: false },
  TLBI_EL2_ALL: { handled: false },
  ATC_INV: { handled: false },
};

describe('iommufd vectors through the VMM thread', () => {
  it('the outcome table covers every iommufd-illegal vector', () => {
    expect(IOMMUFD_ILLEGAL.map((v) => v.fields['op']).sort()).toEqual(Object.keys(VMM_OUTCOME).sort());
  });

  it.each(CONVERT.map((v) => [v.name, v] as const))('guest queue: %s is forwarded once and executed', async (_n, v) => {
    const { vm, kernel } = await vmOf(v);
    const q = await vm.openQueue({ path: 'trap', log2size: 4 });
    q.submitWords(wordsOf([words4(v.words)]), 1, 'sev');
    expect(q.state().cons).toBe(2);
    expect(trapStats(q.handle)).toEqual({ forwarded: 1, handled: 1, ioctls: 1 });
    expect(kernel(vm.vmid).executed).toBe(1);
  });

  it.each(IOMMUFD_ILLEGAL.map((v) => [v.name, v] as const))('guest queue: %s is never forwarded', async (_n, v) => {
    const { vm, kernel } = await vmOf(v);
    const q = await vm.openQueue({ path: 'trap', log2size: 4 });
    const outcome = VMM_OUTCOME[v.fields['op'] as string]!;
    const words = wordsOf([asid(1), words4(v.words), asid(2)]);
    if (outcome.handled) {
      q.submitWords(words, 3, 'sev');
      expect(q.state().cons).toBe(4);
      expect(trapStats(q.handle)).toMatchObject({ forwarded: 2, handled: 2 });
      expect(kernel(vm.vmid)).toEqual({ executed: 2, steInstalls: outcome.steInstalls });
    } else {
      const err = thrown(() => q.submitWords(words, 3, 'sev'));
      expect(err).toBeInstanceOf(QueueError);
      expect((err as QueueError).index).toBe(1);
      expect(Atomics.load(host!.i32, q.handle.regs + Q_CONS)).toBe(1 | (1 << CONS_ERR_SHIFT));
      // Only the command before it executed.
      expect(trapStats(q.handle).forwarded).toBe(1);
      expect(kernel(vm.vmid).executed).toBe(1);
    }
  });
});

describe('iommufd vectors as the raw ioctl on the kernel thread', () => {
  async function ioctl(v: Vector, cmds: Uint32Array[]): Promise<{ rc: number; entryNum: number; executed: number }> {
    const { host: h, vm, kernel } = await vmOf(v);
    const c = new MailboxClient(await h.mailbox());
    new Uint32Array(h.sab, c.payloadPa, cmds.length * 4).set(wordsOf(cmds));
    c.args[0] = vm.vmid;
    c.args[1] = cmds.length;
    const rc = c.call(TRAP_KOP.IOMMUFD_INVALIDATE);
    return { rc, entryNum: c.results[1]!, executed: kernel(vm.vmid).executed };
  }

  it.each(CONVERT.map((v) => [v.name, v] as const))('%s: 0, entry_num 1', async (_n, v) => {
    expect(await ioctl(v, [words4(v.words)])).toEqual({ rc: 0, entryNum: 1, executed: 1 });
  });

  it.each(IOMMUFD_ILLEGAL.map((v) => [v.name, v] as const))('%s: -EIO, entry_num at its index, the prefix executed', async (_n, v) => {
    expect(await ioctl(v, [asid(1), asid(2), words4(v.words), asid(3)])).toEqual({ rc: -5, entryNum: 2, executed: 2 });
  });
});
