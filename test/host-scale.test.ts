// The queue count is the host's option (issue 15): startHost({ maxQueues })
// sizes the MMIO region's register area, and running out is an ArgumentError
// that names the option to raise, never a fixed "at most 64".
import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../src/errors.ts';
import { startHost } from '../src/index.ts';
import { DEFAULT_MAX_QUEUES, mmioBytes, queueRegs } from '../src/layout.ts';
import { withHost } from './doorbell-helpers.ts';

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(() => undefined, (e: unknown) => e);
}

describe('maxQueues', () => {
  it('is checked at startHost, and memBytes must hold the MMIO region it asks for', async () => {
    for (const maxQueues of [0, 2.5, -1, 'many']) {
      const e = await rejection(startHost({ maxQueues: maxQueues as number }));
      expect(e).toBeInstanceOf(ArgumentError);
      expect((e as ArgumentError).argument).toBe('startHost: maxQueues');
    }
    // 2^20 queues need 320 MiB of register blocks: more than the default 64 MiB.
    const e = await rejection(startHost({ maxQueues: 1 << 20 }));
    expect(e).toBeInstanceOf(ArgumentError);
    expect((e as ArgumentError).argument).toBe('startHost: memBytes');
    expect((e as Error).message).toMatch(/maxQueues 1048576/);
  });

  it('the register area grows with maxQueues, after every fixed region: the last block ends inside the MMIO region', () => {
    for (const n of [1, 64, DEFAULT_MAX_QUEUES, 4096]) {
      expect(queueRegs(n) * 4).toBeLessThanOrEqual(mmioBytes(n));
      expect(mmioBytes(n) % 65536).toBe(0);
    }
    expect(mmioBytes(4096)).toBeGreaterThan(mmioBytes(64));
  });

  it('a host with maxQueues 3 provisions three queues, then refuses naming startHost: maxQueues (standby lanes count)', async () => {
    await withHost({ maxQueues: 3 }, async (host) => {
      const vm = await host.createVm({ vmid: 1, streams: [] });
      await vm.openQueue();
      await vm.openQueue();
      expect(host.queuesLeft).toBe(1);
      const two = await rejection(vm.openQueue({ standby: ['trap'] }));
      expect(two).toBeInstanceOf(ArgumentError);
      expect((two as ArgumentError).argument).toBe('startHost: maxQueues');
      expect((two as Error).message).toMatch(/is 3: 2 more queue\(s\) needed, 1 left/);
      expect(host.queuesLeft).toBe(1);
      const q = await vm.openQueue();
      q.submitWords(new Uint32Array(0), 0, 'none');
      expect(q.state().syncs).toBe(1);
      expect(((await rejection(vm.openQueue())) as ArgumentError).argument).toBe('startHost: maxQueues');
    });
  });

  it('the default host serves more than 64 queues: 100 queues of one VM each run a CMD_SYNC', async () => {
    await withHost({ spinUs: 50 }, async (host) => {
      const vm = await host.createVm({ vmid: 1, streams: [] });
      const qs = [];
      for (let k = 0; k < 100; k++) qs.push(await vm.openQueue({ log2size: 4 }));
      // Newest first: the queues beyond the old cap of 64 are the ones in doubt.
      for (const q of qs.reverse()) q.submitWords(new Uint32Array(0), 0, 'none');
      expect(qs.map((q) => q.state().syncs)).toEqual(qs.map(() => 1));
      expect(host.queuesLeft).toBe(DEFAULT_MAX_QUEUES - 100);
    });
  });

  it('64 VMs x 16 queues (the README\'s soak): the default 64 MiB do not hold 64 VMs, 144 MiB do, and every command runs exactly once', async () => {
    // Each VM's RAM is placed at 2 MiB alignment with its stage-2 tables: a 1 MiB VM takes 2 MiB of host memory.
    await withHost({}, async (host) => {
      let made = 0;
      const e = await (async () => {
        for (; made < 64; made++) await host.createVm({ vmid: made + 1, ramBytes: 1 << 20, streams: [] });
      })().then(() => undefined, (x: unknown) => x);
      expect((e as ArgumentError).argument).toBe('createVm: ramBytes');
      expect(made).toBeLessThan(64);
    });
    await withHost({ memBytes: 144 << 20, spinUs: 20 }, async (host) => {
      const qs = [];
      for (let v = 0; v < 64; v++) {
        const vm = await host.createVm({ vmid: v + 1, ramBytes: 1 << 20, streams: [] });
        qs.push(...await Promise.all(Array.from({ length: 16 }, () => vm.openQueue({ log2size: 4 }))));
      }
      expect(host.queuesLeft).toBe(0);
      const none = new Uint32Array(0);
      for (let round = 0; round < 3; round++) for (const q of qs) q.submitWords(none, 0, 'sev');
      expect(qs.map((q) => q.state().syncs)).toEqual(qs.map(() => 3));
      expect(qs.every((q) => q.state().cmds === 3 && q.state().errors === 0)).toBe(true);
    });
  });
});
