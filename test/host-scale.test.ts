// The queue count is the host's option (issue 15): startHost({ maxQueues })
// sizes the MMIO region's register area, and running out is an ArgumentError
// that names the option to raise, never a fixed "at most 64".
import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../src/errors.ts';
import { startHost } from '../src/index.ts';
import '../src/trap/path.ts';
import {
  DEFAULT_MAX_QUEUES, FIXED_MAILBOXES, MAILBOX_PAYLOADS, MB_PAYLOAD_BYTES, MB_WORDS, initMmio, mailboxAt, mailboxPayloadOf, mmioBytes,
  mmioLayout, queueRegs,
} from '../src/layout.ts';
import { IOVA, expectInvalidationSeen, makeVm, pageOfPa, withHost } from './doorbell-helpers.ts';

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

// A trap-path queue is its vCPU's exit into the VMM: a mailbox. So are a DMA
// agent and each kernel thread's trap-path ioctl channel. The mailbox count
// is an option too (issue 15: no fixed cap), sized at startHost.
describe('maxMailboxes', () => {
  it('the mailboxes past the fixed 64 follow every other region, each slot with its payload, disjoint and inside the MMIO region', () => {
    expect(mmioLayout(1024, 2, FIXED_MAILBOXES).mailboxesMore).toBe(0);
    expect(mmioBytes(1024, 2, FIXED_MAILBOXES)).toBe(mmioBytes(1024, 2));
    const m = mmioLayout(1024, 2, 200);
    const i32 = new Int32Array(new SharedArrayBuffer(m.bytes));
    expect(initMmio(i32, 1024, 2, 200)).toEqual(m);
    // After the last pending bitmap.
    expect(m.mailboxesMore).toBe(m.pending[1]! + m.pendingWords);
    const spans: [number, number][] = [];
    for (let id = 0; id < 200; id++) {
      const w = mailboxAt(i32, id);
      const pa = mailboxPayloadOf(w);
      if (id < FIXED_MAILBOXES) expect(pa).toBe(MAILBOX_PAYLOADS + id * MB_PAYLOAD_BYTES);
      else expect(w).toBeGreaterThanOrEqual(m.mailboxesMore);
      spans.push([w * 4, (w + MB_WORDS) * 4], [pa, pa + MB_PAYLOAD_BYTES]);
    }
    spans.sort((a, b) => a[0] - b[0]);
    for (let k = 1; k < spans.length; k++) expect(spans[k]![0]).toBeGreaterThanOrEqual(spans[k - 1]![1]);
    expect(spans.at(-1)![1]).toBeLessThanOrEqual(m.bytes);
    // Nothing of the queue registers or the bitmaps lies among them.
    expect(spans.some(([a, b]) => a < (m.pending[1]! + m.pendingWords) * 4 && b > queueRegs(0) * 4)).toBe(false);
  });

  it('is checked at startHost: at least 64, and memBytes must hold what it asks for', async () => {
    for (const maxMailboxes of [63, 0, 64.5, 'many']) {
      const e = await rejection(startHost({ maxMailboxes: maxMailboxes as number }));
      expect((e as ArgumentError).argument).toBe('startHost: maxMailboxes');
    }
    const e = await rejection(startHost({ maxMailboxes: 1 << 16 }));
    expect((e as ArgumentError).argument).toBe('startHost: memBytes');
    expect((e as Error).message).toMatch(/maxMailboxes 65536/);
  });

  it('mailboxes past 64 carry DMA translations, trap-path exits and the ioctl payload; the next one is refused naming startHost: maxMailboxes, taking no queue', async () => {
    await withHost({ maxMailboxes: 70, spinUs: 20 }, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      // 66 DMA agents take ids 0..65; the trap path's ioctl channel (66) and the queue's exit (67) come after the fixed 64.
      const agents = [];
      for (let k = 0; k < 66; k++) agents.push(await host.dma());
      expect(host.mailboxesLeft).toBe(4);
      const q = await t.vm.openQueue({ path: 'trap', log2size: 4 });
      expect(host.mailboxesLeft).toBe(2);
      // The model as the oracle: the invalidation goes guest -> VMM (exit 67) -> kernel (ioctl 66, its batch in 66's
      // payload area, which the kernel's copy_from_user check must accept) and the newest agent (65) sees it.
      expectInvalidationSeen(t, q, agents.at(-1)!);
      expect(q.state()).toMatchObject({ err: 0, errors: 0 });
      // 68 and 69 go to one more agent and one more trap queue; then a trap queue is refused before its registers are taken.
      const last = await host.dma();
      expect(pageOfPa(t, last.translate(t.psid, -1, IOVA).pa)).toBe(1);
      await t.vm.openQueue({ path: 'trap', log2size: 4 });
      const left = host.queuesLeft;
      for (const open of [() => t.vm.openQueue({ path: 'trap', log2size: 4 }), () => host.dma()]) {
        const e = await rejection(open());
        expect(e).toBeInstanceOf(ArgumentError);
        expect((e as ArgumentError).argument).toBe('startHost: maxMailboxes');
        expect((e as Error).message).toMatch(/is 70, and every one is taken .* start the host with a larger maxMailboxes/);
      }
      expect(host.queuesLeft).toBe(left);
      // The doorbell path needs no mailbox: it still opens and runs.
      const d = await t.vm.openQueue({ log2size: 4 });
      d.submitWords(new Uint32Array(0), 0, 'sev');
      expect(d.state().syncs).toBe(1);
    });
  });
});
