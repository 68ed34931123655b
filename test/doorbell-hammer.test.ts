// Lost-wakeup hammer: thousands of submissions with random gaps around the
// kernel thread's spin budget, from one and from two guest threads, on one
// queue each and spread at random over many queues (the pending bitmap). The
// kernel thread's sleep has a 5 s safety timeout and each submission a 2 s
// one, so a lost wake-up shows up as a SyncTimeoutError, not as latency.
import { describe, expect, it } from 'vitest';
import { GuestQueue, type QueueHandle } from '../src/guest.ts';
import { CTL_STAT_SLEEPS, KTHREAD_CTL } from '../src/layout.ts';
import type { HostOptions } from '../src/host.ts';
import { POLL_EXTREMES, evalWorker, makeVm, outcome, withHost } from './doorbell-helpers.ts';

const GUEST = `
  const q = lib.GuestQueue.attach(data.queue);
  const words = new Uint32Array(4 * 3);
  const u = new Uint32Array(4);
  const modes = ['none', 'sev', 'irq'];
  let seed = data.seed;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let i = 0; i < data.iterations; i++) {
    const gapUs = rnd() * data.maxGapUs;
    const until = performance.now() + gapUs / 1000;
    while (performance.now() < until);
    const n = Math.floor(rnd() * 3);
    for (let k = 0; k < n; k++) {
      lib.buildTlbiNhVa(u, 1, 0, (0x40000000 + k * 4096) >>> 0, 0, 0, 0, 0, 0, 1);
      words.set(u, 4 * k);
    }
    q.submitWords(words, n, modes[i % 3], 2000);
  }
  return q.state().syncs;
`;

/** Kernel-thread policies, with gaps around where each one's decisions change, and whether it must have slept. */
const VARIANTS: { name: string; opts: HostOptions; maxGapUs: number; sleeps: boolean }[] = [
  { name: 'spin budget 0 µs', opts: { spinUs: 0 }, maxGapUs: 10, sleeps: true },
  { name: 'spin budget 20 µs', opts: { spinUs: 20 }, maxGapUs: 50, sleeps: true },
  // Gaps across its wake cost (30 µs): it switches between polling and sleeping as it learns.
  { name: 'adaptive (default)', opts: {}, maxGapUs: 80, sleeps: false },
  { name: 'adaptive, most aggressive', opts: POLL_EXTREMES.aggressive, maxGapUs: 80, sleeps: false },
  { name: 'adaptive, most lazy', opts: POLL_EXTREMES.lazy, maxGapUs: 80, sleeps: true },
];

describe('lost-wakeup hammer', () => {
  for (const v of VARIANTS) {
    for (const threads of [1, 2]) {
      it(`${v.name}, ${threads} guest thread(s): every CMD_SYNC completes`, async () => {
        await withHost({ ...v.opts, heartbeatMs: 5000, staleMs: 60_000 }, async (host) => {
          const t = await makeVm(host, 1, 0x10);
          const iterations = 4000;
          const workers = [];
          for (let k = 0; k < threads; k++) {
            const q = await t.vm.openQueue({ log2size: 4 });
            workers.push(evalWorker(GUEST, { queue: q.handle, iterations, seed: 17 + k, maxGapUs: v.maxGapUs }));
          }
          const outs = await Promise.all(workers.map(outcome));
          await Promise.all(workers.map((w) => w.terminate()));
          for (const o of outs) {
            expect(o.error).toBeUndefined();
            expect(o.result).toBe(iterations);
          }
          // The sleep path was exercised, not just the spin.
          if (v.sleeps) expect(host.i32[KTHREAD_CTL + CTL_STAT_SLEEPS]).toBeGreaterThan(0);
        });
      });
    }
  }

  // The pending bitmap (layout.ts): 40 queues span two bitmap words, both
  // threads publish to any of them at random (so two producers race on one
  // word, and on one queue's PUB turn), with gaps around the spin budget so
  // the kernel thread takes bits, sleeps and is woken in every order.
  for (const spinUs of [0, 20]) {
    it(`spin budget ${spinUs} µs, 2 guest threads on 40 queues picked at random: every CMD_SYNC completes on the queue it was sent to`, async () => {
      await withHost({ spinUs, heartbeatMs: 5000, staleMs: 60_000 }, async (host) => {
        const t = await makeVm(host, 1, 0x10);
        const handles: QueueHandle[] = [];
        for (let k = 0; k < 40; k++) handles.push((await t.vm.openQueue({ log2size: 4 })).handle);
        expect(new Set(handles.map((h) => h.qid >>> 5)).size).toBe(2);
        const iterations = 3000;
        const workers = [0, 1].map((k) => evalWorker(SPREAD, { queues: handles, iterations, seed: 31 + k, maxGapUs: 2 * spinUs + 10 }));
        const outs = await Promise.all(workers.map(outcome));
        await Promise.all(workers.map((w) => w.terminate()));
        const perQueue = new Array<number>(40).fill(0);
        for (const o of outs) {
          expect(o.error).toBeUndefined();
          (o.result as number[]).forEach((n, k) => (perQueue[k]! += n));
        }
        expect(perQueue.reduce((a, b) => a + b, 0)).toBe(2 * iterations);
        // Every queue executed exactly the syncs sent to it: none lost, none taken for another queue's bit.
        const syncs = handles.map((h) => GuestQueue.attach(h).state().syncs);
        expect(syncs).toEqual(perQueue);
        expect(host.i32[KTHREAD_CTL + CTL_STAT_SLEEPS]).toBeGreaterThan(0);
      });
    });
  }
});

/** A guest thread submitting each CMD_SYNC to a queue picked at random; returns how many it sent to each. */
const SPREAD = `
  const qs = data.queues.map((h) => lib.GuestQueue.attach(h));
  const sent = qs.map(() => 0);
  const modes = ['none', 'sev', 'irq'];
  const none = new Uint32Array(0);
  let seed = data.seed;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let i = 0; i < data.iterations; i++) {
    const until = performance.now() + (rnd() * data.maxGapUs) / 1000;
    while (performance.now() < until);
    const k = Math.floor(rnd() * qs.length);
    qs[k].submitWords(none, 0, modes[i % 3], 2000);
    sent[k]++;
  }
  return sent;
`;
