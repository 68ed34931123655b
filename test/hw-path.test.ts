// The hw path on real threads: a guest (this thread, or a worker) writes its
// Tegra241 VCMDQ and PROD, and the SMMU (the kernel thread, polling while a
// hw queue is enabled) consumes it with no exit and no doorbell. A DMA
// agent's translations are the oracle: after a synced invalidation, no page
// it names translates stale, and no page of another VM is touched.
import { afterEach, describe, expect, it } from 'vitest';
import { KernelThreadDeadError, QueueError, SyncTimeoutError, startHost, type Host } from '../src/index.ts';
import { ASID, IOVA, evalWorker, makeVm, mapPage, outcome, pageOfPa, refusedArgument, thrown, type TestVm } from './doorbell-helpers.ts';
import type { DmaAgent } from '../src/host.ts';

let host: Host | undefined;
afterEach(async () => {
  await host?.stop();
  host = undefined;
});

/** A CMD_SYNC on this queue is CS=NONE: the guest busy-polls CONS (arm_smmu_cmdq_needs_busy_polling). */
const NONE = { cs: 'none' } as const;

function pageAt(t: TestVm, dma: DmaAgent, iova: number): number {
  return pageOfPa(t, dma.translate(t.psid, -1, iova).pa);
}

describe('hw path: a Tegra241 VCMDQ on real threads', () => {
  it('executes a TLBI under the VM\'s VMID whatever VMID the guest wrote, and completes its CS=NONE sync', async () => {
    host = await startHost({ cmdqv: true });
    const t = await makeVm(host, 5, 0x20008);
    mapPage(t, IOVA, 0);
    const dma = await host.dma();
    expect(pageAt(t, dma, IOVA)).toBe(0); // cached in the IOTLB
    mapPage(t, IOVA, 1);
    expect(pageAt(t, dma, IOVA)).toBe(0); // stale until invalidated
    const q = await t.vm.openQueue({ path: 'hw', log2size: 4 });
    q.submit([{ op: 'TLBI_NH_VA', asid: ASID, vmid: 77, addr: BigInt(IOVA), leaf: 1 }], NONE);
    expect(pageAt(t, dma, IOVA)).toBe(1);
    expect(q.state()).toMatchObject({ cons: 2, cmds: 2, syncs: 1, errors: 0 });
  });

  it('ATC_INV reaches the SMMU through a SID slot; a vSID with none stops the queue (CERROR_ILL, GERROR) until skipped', async () => {
    host = await startHost({ cmdqv: true });
    const t = await makeVm(host, 5, 0x20008);
    const q = await t.vm.openQueue({ path: 'hw', log2size: 4 });
    q.submit([{ op: 'ATC_INV', sid: 0, size: 52 }], NONE);
    const e = thrown(() => q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }, { op: 'ATC_INV', sid: 0x99, size: 52 }], NONE));
    expect(e).toBeInstanceOf(QueueError);
    expect((e as QueueError).cerror).toBe('ILL');
    expect((e as QueueError).index).toBe(3);
    expect(q.state().gerror ^ q.state().gerrorn).toBe(1);
    expect(q.skipFaultingCommand()).toBe(true);
    q.drain();
    q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], NONE);
    // Acknowledged (GERRORN = GERROR) and consumed on; CONS.ERR keeps its last value, as QEMU's queue_cons_incr.
    const st = q.state();
    expect([st.gerror ^ st.gerrorn, st.cons & 0xff, st.errors]).toEqual([0, 7, 1]);
  });

  it("refuses what a guest VINTF's VCMDQ does not take: TLBI_NH_ALL, TLBI_NH_VAA, CFGI_STE, CMD_SYNC with CS=SEV or IRQ", async () => {
    host = await startHost({ cmdqv: true });
    const t = await makeVm(host, 5, 0x20008);
    const q = await t.vm.openQueue({ path: 'hw', log2size: 4 });
    const refused: [string, () => void][] = [
      ['TLBI_NH_ALL', () => q.submit([{ op: 'TLBI_NH_ALL' }], NONE)],
      ['TLBI_NH_VAA', () => q.submit([{ op: 'TLBI_NH_VAA', addr: 0n }], NONE)],
      ['CFGI_STE', () => q.submit([{ op: 'CFGI_STE', sid: 0, leaf: 1 }], NONE)],
      ['CS=SEV', () => q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'sev' })],
      ['CS=IRQ', () => q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'irq' })],
    ];
    for (const [name, call] of refused) {
      const e = thrown(call);
      expect(e, name).toBeInstanceOf(QueueError);
      expect((e as QueueError).cerror, name).toBe('ILL');
      expect(q.skipFaultingCommand(), name).toBe(true);
      q.drain();
    }
    expect(q.state().errors).toBe(refused.length);
  });

  it('isolation: a VM naming the other VM\'s VMID and the same ASID invalidates only its own translations', async () => {
    host = await startHost({ cmdqv: true });
    const a = await makeVm(host, 1, 0x11);
    const b = await makeVm(host, 2, 0x22);
    const dma = await host.dma();
    for (const t of [a, b]) {
      mapPage(t, IOVA, 0);
      expect(pageAt(t, dma, IOVA)).toBe(0);
      mapPage(t, IOVA, 1);
    }
    const qa = await a.vm.openQueue({ path: 'hw', log2size: 4 });
    const qb = await b.vm.openQueue({ path: 'hw', log2size: 4 });
    qa.submit([{ op: 'TLBI_NH_ASID', asid: ASID, vmid: 2 }], NONE);
    expect(pageAt(a, dma, IOVA)).toBe(1);
    expect(pageAt(b, dma, IOVA)).toBe(0); // B's entry survived A's command: B has not invalidated yet
    qb.submit([{ op: 'TLBI_NH_ASID', asid: ASID, vmid: 1 }], NONE);
    expect(pageAt(b, dma, IOVA)).toBe(1);
  });

  it('invalidateRange: every page overlapping the range translates fresh afterwards, the others stay cached', async () => {
    host = await startHost({ cmdqv: true });
    const t = await makeVm(host, 3, 0x30);
    const dma = await host.dma();
    const pages = 4;
    const gens = (): number[] => Array.from({ length: pages }, (_, p) => Math.floor(pageAt(t, dma, IOVA + p * 4096) / pages));
    const remap = (gen: number): void => {
      for (let p = 0; p < pages; p++) mapPage(t, IOVA + p * 4096, gen * pages + p);
    };
    remap(0);
    expect(gens()).toEqual([0, 0, 0, 0]);
    const q = await t.vm.openQueue({ path: 'hw' });
    remap(1);
    q.invalidateRange(ASID, IOVA + 0x800, 0x1000, 4096, true, NONE); // overlaps pages 0 and 1
    expect(gens()).toEqual([1, 1, 0, 0]);
    remap(2);
    q.invalidateRange(ASID, 0, 2 ** 48, 4096, true, NONE); // the whole space: one TLBI_NH_ASID
    expect(gens()).toEqual([2, 2, 2, 2]);
  });

  it('a disabled queue is not consumed; enabling it again wakes the SMMU, which consumes what waited', async () => {
    // A heartbeat far longer than the drain's timeout: only the enable's wake-up can end the SMMU's back-off in time.
    host = await startHost({ cmdqv: true, heartbeatMs: 60_000, staleMs: 120_000 });
    const t = await makeVm(host, 3, 0x30);
    const q = await t.vm.openQueue({ path: 'hw', log2size: 4 });
    q.setEnabled(false);
    expect(thrown(() => q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'none', timeoutMs: 0 }))).toBeInstanceOf(SyncTimeoutError);
    q.setEnabled(true);
    q.drain(5000);
    expect(q.state()).toMatchObject({ cons: 2, cmds: 2 });
    expect(refusedArgument(() => q.setEnabled(1 as unknown as boolean))).toBe('enabled');
  });

  it('host.stop() stops the polling SMMU; a guest thread waiting on its queue gets KernelThreadDeadError', async () => {
    host = await startHost({ cmdqv: true });
    const t = await makeVm(host, 3, 0x30);
    const q = await t.vm.openQueue({ path: 'hw', log2size: 4 });
    q.setEnabled(false); // its commands wait, so the guest is still waiting when the host stops
    const w = evalWorker(`
      const q = lib.GuestQueue.attach(data.queue);
      post({ ready: true });
      q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'none', timeoutMs: 30000 });
    `, { queue: q.handle });
    const done = outcome(w);
    await new Promise((r) => w.once('message', r));
    const other = await makeVm(host, 4, 0x40);
    const polled = await other.vm.openQueue({ path: 'hw', log2size: 4 }); // enabled: the SMMU polls while we stop it
    polled.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], NONE);
    expect(await host.stop({ graceMs: 5000 })).toEqual({ killed: [] });
    const out = await done;
    await w.terminate();
    expect(out.error?.name).toBe('KernelThreadDeadError');
    expect(thrown(() => polled.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], NONE))).toBeInstanceOf(KernelThreadDeadError);
  });

  it('openQueue checks a hw queue before provisioning anything', async () => {
    host = await startHost();
    const t = await makeVm(host, 3, 0x30);
    const e = await t.vm.openQueue({ path: 'hw' }).catch((x: unknown) => x);
    expect((e as { argument?: string }).argument).toBe('openQueue: path');
    expect((e as Error).message).toMatch(/cmdqv: true/);
    await host.stop();
    host = await startHost({ cmdqv: true });
    const v = await makeVm(host, 3, 0x30);
    const left = host.queuesLeft;
    const arg = async (o: object): Promise<unknown> => ((await v.vm.openQueue(o as never).catch((x: unknown) => x)) as { argument?: string }).argument;
    expect(await arg({ path: 'hw', cmdset: 'wide' })).toBe('openQueue: cmdset');
    expect(await arg({ path: 'hw', log2size: 0 })).toBe('openQueue: log2size');
    expect(await arg({ path: 'doorbell', standby: ['hw'], cmdset: 'wide' })).toBe('openQueue: cmdset');
    const many = await host.createVm({ vmid: 9, streams: Array.from({ length: 17 }, (_, k) => ({ vsid: k, psid: 0x100 + k })) });
    expect(((await many.openQueue({ path: 'hw' }).catch((x: unknown) => x)) as { argument?: string }).argument).toBe('openQueue: path');
    const big = await host.createVm({ vmid: 10, streams: [{ vsid: 2 ** 31, psid: 0x200 }] });
    expect(((await big.openQueue({ path: 'hw' }).catch((x: unknown) => x)) as { argument?: string }).argument).toBe('openQueue: path');
    expect(host.queuesLeft).toBe(left); // nothing was provisioned
    const r = await startHost({ cmdqv: 'yes' as unknown as boolean }).catch((x: unknown) => x);
    expect((r as { argument?: string }).argument).toBe('startHost: cmdqv');
  });
});
