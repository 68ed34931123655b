// The model's cache index (src/model/tagstore.ts) against a plain reference:
// a Map from key to entry index, a list per bucket, and the eviction order the
// store documents (round robin over entry indices). Random operations on a
// store small enough that every probe chain collides and wraps (capacity 3..6,
// a hash table of 8 or 16 slots), so the backward-shift deletion, the
// bucket lists, the live-size mask and the span test are all exercised; after
// every operation each key ever used is looked up and each bucket walked.
// The IOTLB, walk cache, CD cache and ATC of the SMMU model are this store:
// a key found after its removal is a stale translation, a key lost before it
// is a spurious walk.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TagStore } from '../src/model/tagstore.ts';

const BUCKETS = 3;

type Key = { k1: number; tag: number; sizeLog2: number; base: number };
const keyOf = (k: Key): string => `${k.k1}/${k.tag}/${k.sizeLog2}/${k.base}`;

/** Small key space (many collisions, many re-inserts), sizes from 4K to 2^40, bases up to 2^48 (above 2^32: the hash's high word). */
const key = fc
  .record({
    k1: fc.integer({ min: 0, max: 2 }),
    tag: fc.integer({ min: -1, max: 2 }),
    sizeLog2: fc.constantFrom(12, 13, 21, 31, 40),
    pn: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.constantFrom(0xffff_ffff, 2 ** 32 + 1, 2 ** 35 - 1)),
  })
  .filter((r) => r.pn * 2 ** r.sizeLog2 < 2 ** 53)
  .map(({ k1, tag, sizeLog2, pn }): Key => ({ k1, tag, sizeLog2, base: pn * 2 ** sizeLog2 }));

type Op =
  | { kind: 'insert'; key: Key; bucket: number }
  | { kind: 'remove'; pick: number }
  | { kind: 'removeBucket'; bucket: number }
  | { kind: 'removeSpan'; bucket: number; tag: number; start: number; len: number }
  | { kind: 'clear' };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('insert' as const), key, bucket: fc.integer({ min: 0, max: BUCKETS - 1 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('removeBucket' as const), bucket: fc.integer({ min: 0, max: BUCKETS - 1 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('removeSpan' as const),
      bucket: fc.integer({ min: 0, max: BUCKETS - 1 }),
      tag: fc.integer({ min: -1, max: 2 }),
      start: fc.oneof(fc.integer({ min: 0, max: 5 }).map((p) => p * 4096), fc.constantFrom(8191, 4097, 2 ** 31, 2 ** 40 - 1, 2 ** 44)),
      len: fc.constantFrom(1, 4095, 4096, 8192, 2 ** 21, 2 ** 31, 2 ** 44),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('clear' as const) }) },
);

class Reference {
  /** key string -> entry index. */
  readonly byKey = new Map<string, number>();
  readonly entry = new Map<number, { key: Key; bucket: number }>();
  evictions = 0;
  constructor(readonly capacity: number) {}

  drop(e: number): void {
    const x = this.entry.get(e)!;
    this.byKey.delete(keyOf(x.key));
    this.entry.delete(e);
  }
}

/** Everything observable of the store equals the reference. */
function check(store: TagStore, ref: Reference, used: Map<string, Key>): void {
  for (const [s, k] of used) {
    expect(store.find(k.k1, k.tag, k.sizeLog2, k.base), `find ${s}`).toBe(ref.byKey.get(s) ?? -1);
  }
  expect(store.live).toBe(ref.entry.size);
  expect(store.evictions).toBe(ref.evictions);
  // sizeMask has a bit per size below 2^32 (the IOTLB's and ATC's lookups probe those; blocks stop at 1G). The walk
  // cache keys table spans up to 2^39 and never reads the mask: larger sizes are found by key alone.
  let mask = 0;
  for (const { key: k } of ref.entry.values()) if (k.sizeLog2 < 32) mask |= 1 << k.sizeLog2;
  expect(store.sizeMask).toBe(mask);
  for (let b = 0; b < BUCKETS; b++) {
    const want = [...ref.entry].filter(([, x]) => x.bucket === b).map(([e]) => e).sort((x, y) => x - y);
    const got: number[] = [];
    let prev = -1;
    for (let e = store.bucketHead[b]!; e !== -1; e = store.next[e]!) {
      got.push(e);
      expect(store.bucketOf[e]).toBe(b);
      expect(got.length).toBeLessThanOrEqual(store.capacity); // the list ends
      prev = e;
    }
    expect(prev === -1 || store.next[prev] === -1).toBe(true);
    expect(got.sort((x, y) => x - y)).toEqual(want);
    expect(store.bucketCount[b]).toBe(want.length);
  }
  for (const [e, { key: k }] of ref.entry) {
    expect([store.k1[e], store.tag[e], store.sizeLog2[e], store.base[e]]).toEqual([k.k1, k.tag, k.sizeLog2, k.base]);
  }
}

function apply(store: TagStore, ref: Reference, o: Op): void {
  switch (o.kind) {
    case 'insert': {
      const s = keyOf(o.key);
      const old = ref.byKey.get(s);
      if (old !== undefined) ref.drop(old); // same key: replaced
      let evicted = -1;
      if (ref.entry.size === ref.capacity) {
        // Full: the victim is the next index in round-robin order (every index is live).
        evicted = ref.evictions % ref.capacity;
        ref.drop(evicted);
        ref.evictions++;
      }
      const e = store.insert(o.key.k1, o.key.tag, o.key.sizeLog2, o.key.base, o.bucket);
      if (evicted >= 0) expect(e, 'the evicted index is reused').toBe(evicted);
      expect(ref.entry.has(e)).toBe(false);
      expect(e).toBeGreaterThanOrEqual(0);
      expect(e).toBeLessThan(ref.capacity);
      ref.byKey.set(s, e);
      ref.entry.set(e, { key: o.key, bucket: o.bucket });
      return;
    }
    case 'remove': {
      const live = [...ref.entry.keys()];
      if (live.length === 0) {
        store.remove(o.pick % ref.capacity); // not live: nothing happens
        return;
      }
      const e = live[o.pick % live.length]!;
      ref.drop(e);
      store.remove(e);
      store.remove(e); // twice: the second is a no-op
      return;
    }
    case 'removeBucket': {
      const gone = [...ref.entry].filter(([, x]) => x.bucket === o.bucket).map(([e]) => e);
      for (const e of gone) ref.drop(e);
      expect(store.removeBucket(o.bucket)).toBe(gone.length);
      return;
    }
    case 'removeSpan': {
      const end = o.start + o.len;
      const gone = [...ref.entry]
        .filter(([, x]) => x.bucket === o.bucket && (o.tag === -1 || x.key.tag === o.tag))
        .filter(([, x]) => x.key.base < end && x.key.base + 2 ** x.key.sizeLog2 > o.start)
        .map(([e]) => e);
      for (const e of gone) ref.drop(e);
      expect(store.removeSpan(o.bucket, o.tag, o.start, end)).toBe(gone.length);
      return;
    }
    case 'clear': {
      const n = ref.entry.size;
      for (const e of [...ref.entry.keys()]) ref.drop(e);
      expect(store.clear()).toBe(n);
      return;
    }
  }
}

describe('TagStore against a reference map (src/model/tagstore.ts)', () => {
  it('find, insert (replace, round-robin eviction), remove, removeBucket, removeSpan and clear agree with the reference after every step', () => {
    fc.assert(
      fc.property(fc.integer({ min: 3, max: 6 }), fc.array(op, { minLength: 1, maxLength: 60 }), (capacity, ops) => {
        const store = new TagStore(capacity, BUCKETS);
        const ref = new Reference(capacity);
        const used = new Map<string, Key>();
        for (const o of ops) {
          if (o.kind === 'insert') used.set(keyOf(o.key), o.key);
          apply(store, ref, o);
          check(store, ref, used);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('removals in any order keep every other key findable: backward-shift deletion across the table\'s wrap', () => {
    // Many distinct keys at half load of a 16-slot table (capacity 8): probe chains collide and wrap past the last
    // slot, and each removal must leave every remaining key on its probe chain.
    let x = 0x1234_5678;
    const rnd = (n: number): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0), (x >>> 8) % n);
    for (let round = 0; round < 400; round++) {
      const store = new TagStore(8, 1);
      const keys: Key[] = [];
      while (keys.length < 8) {
        const k: Key = { k1: rnd(4), tag: rnd(4) - 1, sizeLog2: 12 + rnd(3), base: 0 };
        k.base = rnd(64) * 2 ** k.sizeLog2;
        if (!keys.some((o) => keyOf(o) === keyOf(k))) keys.push(k);
      }
      const index = keys.map((k) => store.insert(k.k1, k.tag, k.sizeLog2, k.base, 0));
      for (let left = keys.length; left > 0; left--) {
        const i = rnd(left);
        store.remove(index[i]!);
        keys.splice(i, 1);
        index.splice(i, 1);
        keys.forEach((k, j) => expect(store.find(k.k1, k.tag, k.sizeLog2, k.base), `round ${round}`).toBe(index[j]));
      }
    }
  });

  it('keys that differ in one part only are different entries', () => {
    const store = new TagStore(64, 1);
    const keys: Key[] = [];
    for (const k1 of [0, 1]) for (const tag of [0, 1]) for (const sizeLog2 of [12, 13]) for (const pn of [0, 1, 2, 4]) keys.push({ k1, tag, sizeLog2, base: pn * 8192 });
    const index = keys.map((k) => store.insert(k.k1, k.tag, k.sizeLog2, k.base, 0));
    expect(new Set(index).size).toBe(keys.length);
    keys.forEach((k, j) => expect(store.find(k.k1, k.tag, k.sizeLog2, k.base)).toBe(index[j]));
    expect(store.find(2, 0, 12, 0)).toBe(-1);
    expect(store.find(0, 2, 12, 0)).toBe(-1);
    expect(store.find(0, 0, 14, 0)).toBe(-1);
    expect(store.find(0, 0, 12, 3 * 8192)).toBe(-1);
  });

  it('a span removal is exact at both ends: an entry ending at start or beginning at end stays', () => {
    const store = new TagStore(8, 1);
    const a = store.insert(0, 1, 12, 0x1000, 0); // [0x1000, 0x2000)
    const b = store.insert(0, 1, 12, 0x3000, 0); // [0x3000, 0x4000)
    const c = store.insert(0, 1, 21, 0x20_0000, 0); // [2M, 4M)
    expect(store.removeSpan(0, 1, 0x2000, 0x3000)).toBe(0); // between a and b, touching both
    expect(store.removeSpan(0, 2, 0, 2 ** 40)).toBe(0); // another tag
    expect(store.removeSpan(0, 1, 0x1fff, 0x2000)).toBe(1); // a's last byte
    expect(store.find(0, 1, 12, 0x1000)).toBe(-1);
    expect(store.removeSpan(0, 1, 0x3fff_ffff, 2 ** 40)).toBe(0); // above c
    expect(store.removeSpan(0, -1, 0x3f_ffff, 0x40_0000)).toBe(1); // c's last byte, any tag
    expect([store.find(0, 1, 12, 0x3000), store.live]).toEqual([b, 1]);
    expect(a).not.toBe(c);
  });

  it('refuses a capacity that is not a positive integer', () => {
    for (const bad of [0, -1, 1.5, Number.NaN]) expect(() => new TagStore(bad, 1)).toThrow(RangeError);
    expect(new TagStore(1, 1).capacity).toBe(1);
  });
});
