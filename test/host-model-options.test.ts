// startHost's choices of SMMU and iommufd behaviour reach the kernel thread
// (issue 10 items 10 and 12): the model's walk cache and the upstream-v6.18
// IOMMU_HWPT_INVALIDATE, each shown on real threads against the default.
import { describe, expect, it } from 'vitest';
import { buildTlbiNhAsid } from '../src/codec.ts';
import { ArgumentError } from '../src/errors.ts';
import { QueueError } from '../src/guest.ts';
import { startHost, type HostOptions } from '../src/index.ts';
import { MailboxClient } from '../src/mailbox.ts';
import { PROT } from '../src/model/pgtable.ts';
import { TRAP_KOP } from '../src/trap/kernel.ts';
import { DATA_IPA, IOVA, makeVm, withHost } from './doorbell-helpers.ts';
import { kernelCounter, wordsOf, words4 } from './trap-helpers.ts';

const RW = PROT.READ | PROT.WRITE;

describe('startHost({ model: { walkCacheEntries } }): a Leaf=1 TLBI after a table change (spec 4.4.2)', () => {
  /**
   * The guest replaces the level-3 table under IOVA's 2 MiB region (the
   * level-2 descriptor now points at a new table), then sends leaf-only
   * TLBI_NH_VAs for both pages and a CMD_SYNC. Returns the page IOVA + 0x1000
   * translates to, and the old and new targets.
   */
  async function afterTableChange(opts: HostOptions): Promise<{ pa: number; old: number; fresh: number }> {
    return withHost(opts, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      const q = await t.vm.openQueue({ path: 'doorbell' });
      const dma = await host.dma();
      t.pt.map(IOVA, DATA_IPA, 0x2000, RW);
      expect(dma.translate(t.psid, -1, IOVA).fault).toBe(0); // walks, and with a walk cache caches the tables
      t.pt.unmap(IOVA, 2 << 20); // clears the level-2 table descriptor
      t.pt.map(IOVA, DATA_IPA + 0x4000, 0x2000, RW); // a new level-3 table
      q.submit([0, 0x1000].map((off) => ({ op: 'TLBI_NH_VA' as const, asid: 1, addr: BigInt(IOVA + off), leaf: 1 })), { timeoutMs: 5000 });
      return { pa: dma.translate(t.psid, -1, IOVA + 0x1000).pa, old: t.vm.ramBase + DATA_IPA + 0x1000, fresh: t.vm.ramBase + DATA_IPA + 0x5000 };
    });
  }

  it('with a walk cache the old level-3 table is still walked: stale, as on hardware', async () => {
    const r = await afterTableChange({ model: { walkCacheEntries: 256 } });
    expect(r.pa).toBe(r.old);
  });

  it('without one (the default) every walk reads the tables, so the leaf-only TLBI suffices', async () => {
    const r = await afterTableChange({});
    expect(r.pa).toBe(r.fresh);
  });
});

describe('startHost({ model: { bypass } }): the bench hook that times the doorbell transport alone', () => {
  /** Maps IOVA, lets the device cache it, unmaps it, then sends TLBI_NH_VA + CMD_SYNC; then one command vCMDQ refuses. */
  async function unmapThenInvalidate(opts: HostOptions): Promise<{ fault: number; cmds: number; refused: unknown }> {
    return withHost(opts, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      const q = await t.vm.openQueue({ path: 'doorbell' });
      const dma = await host.dma();
      t.pt.map(IOVA, DATA_IPA, 0x1000, RW);
      expect(dma.translate(t.psid, -1, IOVA).fault).toBe(0); // translations still reach the model
      t.pt.unmap(IOVA, 0x1000);
      q.submit([{ op: 'TLBI_NH_VA', asid: 1, addr: BigInt(IOVA), leaf: 1 }], { timeoutMs: 5000 });
      const fault = dma.translate(t.psid, -1, IOVA).fault;
      const cmds = q.state().cmds;
      // CFGI_STE is not a vCMDQ command (Tegra241 accepts TLBIs, ATC_INV, CMD_SYNC): still refused, CERROR_ILL.
      const refused = (() => { try { q.submit([{ op: 'CFGI_STE', sid: 0, leaf: 1 }], { timeoutMs: 5000 }); return null; } catch (e) { return e; } })();
      return { fault, cmds, refused };
    });
  }

  it('bypassed: CONS passes the commands, nothing executes (the cached translation stays), bad commands still stop the queue', async () => {
    const r = await unmapThenInvalidate({ model: { bypass: true } });
    expect(r.fault).toBe(0);
    expect(r.cmds).toBe(2);
    expect(r.refused).toBeInstanceOf(QueueError);
    expect((r.refused as QueueError).cerror).toBe('ILL');
  });

  it('not bypassed (the default): the TLBI executes and the page faults', async () => {
    const r = await unmapThenInvalidate({});
    expect(r.fault).not.toBe(0);
    expect(r.cmds).toBe(2);
    expect(r.refused).toBeInstanceOf(QueueError);
  });
});

describe("startHost({ iommufd }): IOMMU_HWPT_INVALIDATE on a command the host SMMU refuses", () => {
  const asid = (a: number): Uint32Array => {
    const u = new Uint32Array(4);
    buildTlbiNhAsid(u, a, 0);
    return u;
  };
  /** TLBI_NH_VA with TG != 0 and NUM = SCALE = TTL = 0: converts, but is the Reserved range combination (spec 4.4.1.1). */
  const reserved = words4(['0x0001000000000012', '0x0000000000010400']);

  async function ioctl(opts: HostOptions): Promise<{ rc: number; entryNum: number; executed: number }> {
    return withHost(opts, async (host) => {
      const vm = await host.createVm({ vmid: 5, streams: [{ vsid: 0x10, psid: 0x20008 }] });
      const kernel = await kernelCounter(host);
      const c = new MailboxClient(await host.mailbox());
      const cmds = [asid(1), reserved, asid(3)];
      new Uint32Array(host.sab, c.payloadPa, cmds.length * 4).set(wordsOf(cmds));
      c.args[0] = vm.vmid;
      c.args[1] = cmds.length;
      const rc = c.call(TRAP_KOP.IOMMUFD_INVALIDATE);
      return { rc, entryNum: c.results[1]!, executed: kernel(vm.vmid).executed };
    });
  }

  it("'upstream-v6.18': __arm_smmu_cmdq_skip_err makes it a CMD_SYNC, the rest runs, the ioctl returns 0", async () => {
    // All three count as executed: the refused one ran as the CMD_SYNC skip_err put in its place.
    expect(await ioctl({ iommufd: 'upstream-v6.18' })).toEqual({ rc: 0, entryNum: 3, executed: 3 });
  });

  it("'strict' (the default): -EIO at its index, the prefix executed", async () => {
    expect(await ioctl({})).toEqual({ rc: -5, entryNum: 1, executed: 1 });
  });

  it('refuses bad choices naming them', async () => {
    const bad: [HostOptions, string][] = [
      [{ iommufd: 'loose' as never }, 'startHost: iommufd'],
      [{ model: { combinedNested: 1 as never } }, 'startHost: model.combinedNested'],
      [{ model: { walkCacheEntries: -1 } }, 'startHost: model.walkCacheEntries'],
      [{ model: { walkcache: 4 } as never }, 'startHost: model.walkcache'],
      [{ model: { bypass: 'yes' as never } }, 'startHost: model.bypass'],
    ];
    for (const [opts, argument] of bad) {
      const e = await startHost(opts).then(() => undefined, (x: unknown) => x);
      expect(e, argument).toBeInstanceOf(ArgumentError);
      expect((e as ArgumentError).argument).toBe(argument);
    }
  });
});
