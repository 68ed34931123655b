// The trap paths with real threads, through the same GuestQueue API as the
// vCMDQ: 'trap' (guest, this thread -> VMM thread -> kernel thread) and
// 'trap-inline' (the VMM's emulation on this thread under its BQL -> kernel
// thread). Both must behave the same.

import { afterEach, describe, expect, it } from 'vitest';
import { startHost, type Host } from '../src/host.ts';
import { CONS_ERR_SHIFT, Q_CONS, Q_STAT_CMDS } from '../src/layout.ts';
import { stopTrapPath } from '../src/trap/path.ts';
import '../src/trap/inline.ts';
import { CONVERT, IOMMUFD_ILLEGAL, TRAP_PATHS, trapStats } from './trap-helpers.ts';
import { decodeCommand } from '../src/codec.ts';
import { DEFAULT_FEATURES } from '../src/features.ts';

let host: Host | undefined;
afterEach(async () => {
  if (host !== undefined) {
    await stopTrapPath(host);
    await host.stop();
    host = undefined;
  }
});

describe.each(TRAP_PATHS)('%s path', (path) => {
  it('submits through the trapped PROD write and completes the CMD_SYNC', async () => {
    host = await startHost();
    const vm = await host.createVm({ vmid: 5, streams: [{ vsid: 0x10, psid: 0x20008 }, { vsid: 0x18, psid: 0x30100 }] });
    const q = await vm.openQueue({ path });
    q.submit([{ op: 'TLBI_NH_ASID', asid: 3 }, { op: 'ATC_INV', sid: 0x10, size: 52 }], { cs: 'sev' });
    const cons = host.i32[q.handle.regs + Q_CONS]!;
    expect(cons).toBe(3);
    expect(host.i32[q.handle.regs + Q_STAT_CMDS]).toBe(3);
    expect(trapStats(q.handle)).toMatchObject({ forwarded: 2, handled: 1 });
  });

  it.each(CONVERT.map((v) => [v.name, v] as const))('forwards %s', async (_n, v) => {
    host = await startHost();
    const streams = Object.entries(v.vsid_table!).map(([a, b]) => ({ vsid: Number(a), psid: Number(b) }));
    const vm = await host.createVm({ vmid: v.vsmmu_vmid!, streams });
    const q = await vm.openQueue({ path });
    const cmd = decodeCommand([BigInt(v.words[0]), BigInt(v.words[1])], DEFAULT_FEATURES);
    q.submit([cmd], { cs: 'sev' });
    expect(host.i32[q.handle.regs + Q_CONS]).toBe(2);
    expect(trapStats(q.handle).forwarded).toBe(1);
  });

  it.each(IOMMUFD_ILLEGAL.filter((v) => ['TLBI_S12_VMALL', 'TLBI_EL2_ALL', 'ATC_INV'].includes(v.fields['op'] as string))
    .map((v) => [v.name, v] as const))('stops at %s with CERROR_ILL', async (_n, v) => {
    host = await startHost();
    const streams = Object.entries(v.vsid_table!).map(([a, b]) => ({ vsid: Number(a), psid: Number(b) }));
    const vm = await host.createVm({ vmid: v.vsmmu_vmid!, streams });
    const q = await vm.openQueue({ path });
    const cmd = decodeCommand([BigInt(v.words[0]), BigInt(v.words[1])], DEFAULT_FEATURES);
    expect(() => q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }, cmd], { cs: 'sev' })).toThrow(/ILL/);
    expect(host.i32[q.handle.regs + Q_CONS]).toBe(1 | (1 << CONS_ERR_SHIFT));
  });
});
