// Lost-wakeup hammer: thousands of submissions with random gaps around the
// kernel thread's spin budget, from one and from two guest threads, on one
// queue each and spread at random over many queues (the pending bitmap). The
// kernel thread's sleep has a 5 s safety timeout and each submission a 2 s
// one, so a lost wake-up shows up as a SyncTimeoutError, not as latency.
import { describe, expect, it } from 'vitest';
import { GuestQueue, type QueueHandle } from '../src/guest.ts';
import { CTL_STAT_SLEEPS, KTHREAD_CTL, pendingSlot, pendingWord } from '../src/layout.ts';
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
        expect(new Set(handles.map((h) => wordOf(host.i32, h))).size).toBe(2);
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

  // VM isolation (layout.ts, Q_PEND): VM A's guest thread stores 0 into every
  // pending word A owns, nonstop, while VM B's guest thread sends CMD_SYNCs on
  // a queue opened between A's (with bit = qid it would sit in A's word). A
  // bit of B's cleared by A shows up as B's SyncTimeoutError (2 s per call).
  it('a guest of VM A clearing its pending words nonstop cannot delay VM B: B\'s 3000 CMD_SYNCs all complete', async () => {
    await withHost({ spinUs: 20, heartbeatMs: 5000, staleMs: 60_000 }, async (host) => {
      const a = await makeVm(host, 1, 0x10);
      const b = await makeVm(host, 2, 0x11);
      const qa = [await a.vm.openQueue({ log2size: 4 })];
      const qb = await b.vm.openQueue({ log2size: 4 });
      qa.push(await a.vm.openQueue({ log2size: 4 }));
      const owned = [...new Set(qa.map((q) => wordOf(host.i32, q.handle)))];
      expect(owned).not.toContain(wordOf(host.i32, qb.handle));
      const stop = new Int32Array(new SharedArrayBuffer(4));
      const storm = evalWorker(STORM, { sab: host.sab, words: owned, stop: stop.buffer, maxRounds: 2 ** 40 });
      const guest = evalWorker(GUEST, { queue: qb.handle, iterations: 3000, seed: 7, maxGapUs: 50 });
      const out = await outcome(guest);
      Atomics.store(stop, 0, 1);
      const stormed = await outcome(storm);
      await Promise.all([storm, guest].map((w) => w.terminate()));
      expect(out.error).toBeUndefined();
      expect(out.result).toBe(3000);
      expect(stormed.result as number).toBeGreaterThan(0);
    });
  });
});

/** Queue `h`'s pending word (its slot, Q_PEND, in its kernel thread's bitmap). */
function wordOf(i32: Int32Array, h: QueueHandle): number {
  return pendingWord(i32, h.ctl, pendingSlot(i32, h.qid));
}

/** A hostile (or buggy) vCPU: plain stores of 0 to `words` of host memory until told to stop; returns the rounds made. */
const STORM = `
  const i32 = new Int32Array(data.sab);
  const stop = new Int32Array(data.stop);
  let rounds = 0;
  while (Atomics.load(stop, 0) === 0 && rounds < data.maxRounds) {
    for (const w of data.words) i32[w] = 0;
    rounds++;
  }
  return rounds;
`;

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
