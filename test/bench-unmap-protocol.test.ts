// The unmap scenario's parking and barrier (bench/unmap-protocol.ts), the
// pieces that keep the DMA agents and idle threads off the CPUs inside a
// timed unmap: each shown to hold and to give up, never by timing anything.
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { startThreads } from '../bench/affinity.ts';
import {
  BARRIER_WORDS, B_ARRIVED, B_AWAKE, CTL_WORDS, D_PARKED, awaitParked, barrier, threadState,
} from '../bench/unmap-protocol.ts';
import { runnableThreads } from '../bench/unmap.ts';

describe('barrier', () => {
  it('one party passes every generation at once and counts it', () => {
    const b = new Int32Array(new SharedArrayBuffer(BARRIER_WORDS * 4));
    for (let gen = 1; gen <= 3; gen++) expect(barrier(b, 1, gen, 1000)).toBe(true);
    expect([b[B_ARRIVED], b[B_AWAKE]]).toEqual([3, 3]);
  });

  it('a party that never arrives makes it give up (false), not hang', () => {
    const b = new Int32Array(new SharedArrayBuffer(BARRIER_WORDS * 4));
    expect(barrier(b, 2, 1, 5)).toBe(false);
  });

  it('two threads leave generation after generation together', async () => {
    const sab = new SharedArrayBuffer(BARRIER_WORDS * 4);
    // The other party: the same barrier code, bundled by the test's build (dist/), in a worker of its own.
    const src = `
      const { workerData, parentPort } = require('node:worker_threads');
      const { B_ARRIVED, B_AWAKE } = workerData.words;
      const b = new Int32Array(workerData.sab);
      ${barrier.toString()}
      let ok = true;
      for (let gen = 1; gen <= 50; gen++) ok = barrier(b, 2, gen, 10000) && ok;
      parentPort.postMessage(ok);`;
    const w = new Worker(src, { eval: true, workerData: { sab, words: { B_ARRIVED, B_AWAKE } } });
    const done = new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
    const b = new Int32Array(sab);
    const seen: number[] = [];
    for (let gen = 1; gen <= 50; gen++) {
      expect(barrier(b, 2, gen, 10000)).toBe(true);
      // Past generation gen, both have arrived there: never fewer than 2*gen arrivals.
      seen.push(Atomics.load(b, B_ARRIVED) - 2 * gen);
    }
    expect(await done).toBe(true);
    expect(seen.every((x) => x >= 0 && x <= 2)).toBe(true);
    await w.terminate();
  });
});

describe('awaitParked', () => {
  it('waits for the agent to announce the request it answered, and gives up (false) when it never does', () => {
    const ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
    ctl[D_PARKED] = 3;
    expect(awaitParked(ctl, 3, '', 1000)).toBe(true);
    expect(awaitParked(ctl, 4, '', 5)).toBe(false);
  });

  it('where /proc shows it, a parked thread is one that sleeps in Atomics.wait', async () => {
    const sab = new SharedArrayBuffer(CTL_WORDS * 4);
    const src = `
      const { workerData } = require('node:worker_threads');
      const ctl = new Int32Array(workerData);
      Atomics.store(ctl, ${D_PARKED}, 1);
      Atomics.wait(ctl, 0, 0, 60000);`;
    const { value: w, tids } = await startThreads('float', async () => {
      const worker = new Worker(src, { eval: true, workerData: sab });
      await new Promise((resolve) => worker.once('online', resolve));
      return worker;
    });
    try {
      const tid = tids.length === 1 ? tids[0]! : '';
      expect(awaitParked(new Int32Array(sab), 1, tid, 10000)).toBe(true);
      if (threadState(tid) !== '') expect(threadState(tid)).toBe('S');
    } finally {
      Atomics.notify(new Int32Array(sab), 0);
      await w.terminate();
    }
  });

  it('threadState: a thread that does not exist has no state (awaitParked then trusts D_PARKED alone)', () => {
    expect(threadState('999999999')).toBe('');
  });
});

describe('runnable_threads of an unmap row', () => {
  it('the vCPUs plus the path\'s server threads: the kernel thread, and the VMM on trap', () => {
    expect(runnableThreads('doorbell-spin', 1)).toBe(2);
    expect(runnableThreads('doorbell-sleep', 2)).toBe(3);
    expect(runnableThreads('trap', 2)).toBe(4);
  });
});
