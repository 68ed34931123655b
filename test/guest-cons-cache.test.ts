// The guest's cached CONS (guest.ts tryPublish, consSeen; Linux's llq.cons,
// refreshed only by arm_smmu_cmdq_poll_until_not_full): a producer alone
// loads CONS for room only when the CONS it last saw shows too little, so a
// run of batches without a CMD_SYNC reads no line the consumer writes per
// batch; and a rival's reservation voids the cache, so no producer ever
// reserves a slot the SMMU has not consumed. The test is the SMMU: it frees
// slots by storing CONS (bare-queue.ts).
import { afterEach, describe, expect, it } from 'vitest';
import { GuestQueue } from '../src/guest.ts';
import { Q_CONS, Q_DRV_RESV, Q_PROD } from '../src/layout.ts';
import { SyncTimeoutError } from '../src/waiter.ts';
import { bareQueue, type BareQueue } from './bare-queue.ts';

const LOG2 = 4; // 16 slots
const SIZE = 1 << LOG2;

/** n distinct 4-word entries (the guest copies words unchecked; the test only reads them back), tagged `tag`. */
function entries(tag: number, n: number): Uint32Array {
  const w = new Uint32Array(4 * n);
  for (let k = 0; k < n; k++) w.set([tag, k, ~tag >>> 0, ~k >>> 0], 4 * k);
  return w;
}

/** Publish n entries without a sync; at timeoutMs 0 a call that finds no room throws SyncTimeoutError at once. */
function send(q: GuestQueue, tag: number, n: number): void {
  q.submitWords(entries(tag, n), n, null, 0);
}

/** The SMMU consumes every published entry. */
function consumeAll(b: BareQueue): void {
  Atomics.store(b.i32, b.regs + Q_CONS, Atomics.load(b.i32, b.regs + Q_PROD));
}

// Counts the guest's Atomics.load of CONS while fn runs.
const realLoad = Atomics.load;
afterEach(() => {
  Atomics.load = realLoad;
});
function consLoads(b: BareQueue, fn: () => void): number {
  let n = 0;
  Atomics.load = ((ta: Int32Array, i: number) => {
    if (ta.buffer === b.i32.buffer && i === b.regs + Q_CONS) n++;
    return realLoad(ta, i);
  }) as typeof Atomics.load;
  try {
    fn();
  } finally {
    Atomics.load = realLoad;
  }
  return n;
}

describe('the guest producer caches CONS for room (Linux llq.cons)', () => {
  it('loads CONS only when the CONS it last saw shows too little room', () => {
    const b = bareQueue(undefined, LOG2);
    expect(consLoads(b, () => send(b.q, 1, 4))).toBe(1); // nothing cached yet
    expect(consLoads(b, () => send(b.q, 2, 4))).toBe(0); // 12 free by the cache
    expect(consLoads(b, () => send(b.q, 3, 8))).toBe(0); // exactly 8 free by the cache
    // Full by the cache and in truth: one fresh look (CONS), then step 1 as written (RESV, CONS), then the space wait's look.
    expect(() => send(b.q, 4, 1)).toThrow(SyncTimeoutError);
    consumeAll(b);
    // The cache shows no room; the fresh CONS shows 16.
    expect(consLoads(b, () => send(b.q, 5, 16))).toBe(1);
    expect(Atomics.load(b.i32, b.regs + Q_PROD)).toBe(32 & (2 * SIZE - 1));
    for (let k = 0; k < SIZE; k++) expect(Array.from(b.ring.subarray(4 * k, 4 * k + 2))).toEqual([5, k]);
  });

  it('a rival\'s reservation voids the cache: the stale producer never reserves a slot the SMMU has not consumed', () => {
    const b = bareQueue(undefined, LOG2);
    const rival = GuestQueue.attach(b.handle);
    send(b.q, 1, 4); // b.q caches CONS 0 with RESV 4
    consumeAll(b);
    // The rival laps b.q's cached CONS twice over: RESV 40 with CONS 24 (full).
    send(rival, 2, 16);
    consumeAll(b);
    send(rival, 3, 4);
    consumeAll(b);
    send(rival, 4, 16);
    expect(Atomics.load(b.i32, b.regs + Q_DRV_RESV)).toBe(40);
    const before = b.ring.slice();
    // b.q's cache (RESV 4, CONS 0) shows room; its CAS from 4 fails and returns RESV 40, and the call's space
    // wait finds no room. Its next call starts from RESV 40: kept, CONS 0 against RESV 40 (40 - 0 = 8 modulo
    // the 32 positions) would show 8 free slots where none is, and the CAS from 40 would succeed and overwrite
    // the rival's unconsumed entries.
    for (let call = 0; call < 2; call++) {
      expect(() => send(b.q, 9, 1)).toThrow(SyncTimeoutError);
      expect(Atomics.load(b.i32, b.regs + Q_DRV_RESV)).toBe(40);
      expect(b.ring).toEqual(before);
    }
    // Once the SMMU consumes them, b.q goes on from the real RESV.
    consumeAll(b);
    send(b.q, 9, 1);
    expect(Array.from(b.ring.subarray(4 * (40 % SIZE), 4 * (40 % SIZE) + 2))).toEqual([9, 0]);
  });
});
