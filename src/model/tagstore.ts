// A bounded, allocation-free cache index: entries live in preallocated typed
// arrays, found by an exact key through an open-addressing hash (linear
// probing, backward-shift deletion: no tombstones), and threaded on one
// intrusive list per bucket so an invalidation by VMID / stream walks only
// that bucket's entries. The IOTLB, the CD cache and the ATCs are all this
// store; what an entry maps to lives in the owner's arrays, indexed like it.
//
// Key = (k1, tag, sizeLog2, base): k1 and tag are small integers (VMID, ASID
// tag, stream slot, SSID), base is the entry's first address, aligned to
// 2^sizeLog2 (a double, exact below 2^53).

const NONE = -1;
/** 2^s by table lookup: the span test runs per entry of an invalidated bucket. */
const POW2 = new Float64Array(128).map((_, i) => 2 ** i);

export class TagStore {
  readonly capacity: number;
  readonly k1: Int32Array;
  readonly tag: Int32Array;
  readonly sizeLog2: Uint8Array;
  readonly base: Float64Array;
  readonly bucketOf: Int32Array;
  /** Next entry in the same bucket (NONE at the end); iterate from bucketHead. */
  readonly next: Int32Array;
  readonly bucketHead: Int32Array;
  readonly bucketCount: Int32Array;
  /** Bit s set when some live entry has sizeLog2 = s (lookups probe only those sizes). */
  sizeMask = 0;
  live = 0;
  evictions = 0;

  private readonly prev: Int32Array;
  private readonly slotOf: Int32Array;
  private readonly table: Int32Array;
  private readonly tableMask: number;
  private readonly sizeCount = new Int32Array(32);
  private readonly freeNext: Int32Array;
  private freeHead = 0;
  private victim = 0;

  constructor(capacity: number, buckets: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`cache capacity ${capacity} must be a positive integer`);
    this.capacity = capacity;
    this.k1 = new Int32Array(capacity);
    this.tag = new Int32Array(capacity);
    this.sizeLog2 = new Uint8Array(capacity);
    this.base = new Float64Array(capacity);
    this.bucketOf = new Int32Array(capacity).fill(NONE);
    this.next = new Int32Array(capacity);
    this.prev = new Int32Array(capacity);
    this.slotOf = new Int32Array(capacity);
    this.freeNext = new Int32Array(capacity);
    this.bucketHead = new Int32Array(buckets).fill(NONE);
    this.bucketCount = new Int32Array(buckets);
    let size = 2;
    while (size < capacity * 2) size *= 2;
    this.table = new Int32Array(size).fill(NONE);
    this.tableMask = size - 1;
    this.resetFree();
  }

  private resetFree(): void {
    for (let i = 0; i < this.capacity; i++) this.freeNext[i] = i + 1 < this.capacity ? i + 1 : NONE;
    this.freeHead = 0;
  }

  private hash(k1: number, tag: number, sizeLog2: number, base: number): number {
    const pn = base / 2 ** sizeLog2;
    let h = Math.imul(pn >>> 0, 0x9e3779b1) ^ Math.imul((pn / 4294967296) >>> 0, 0x85ebca77);
    h ^= Math.imul(k1, 0xc2b2ae3d) ^ Math.imul(tag + 0x632be5ab, 0x27d4eb2f) ^ sizeLog2;
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
    return (h ^ (h >>> 13)) & this.tableMask;
  }

  /** Entry index with exactly this key, or -1. */
  find(k1: number, tag: number, sizeLog2: number, base: number): number {
    for (let s = this.hash(k1, tag, sizeLog2, base); ; s = (s + 1) & this.tableMask) {
      const e = this.table[s]!;
      if (e === NONE) return NONE;
      if (this.base[e] === base && this.k1[e] === k1 && this.tag[e] === tag && this.sizeLog2[e] === sizeLog2) return e;
    }
  }

  /**
   * Insert a key (replacing an entry with the same key) in `bucket`; when full,
   * evicts in round-robin order. Returns the entry index for the owner's payload.
   */
  insert(k1: number, tag: number, sizeLog2: number, base: number, bucket: number): number {
    const old = this.find(k1, tag, sizeLog2, base);
    if (old !== NONE) this.remove(old);
    if (this.freeHead === NONE) {
      // Full means every index is live, so any index is a victim.
      this.remove(this.victim);
      this.evictions++;
      this.victim = (this.victim + 1) % this.capacity;
    }
    const e = this.freeHead;
    this.freeHead = this.freeNext[e]!;
    this.k1[e] = k1;
    this.tag[e] = tag;
    this.sizeLog2[e] = sizeLog2;
    this.base[e] = base;
    let s = this.hash(k1, tag, sizeLog2, base);
    while (this.table[s] !== NONE) s = (s + 1) & this.tableMask;
    this.table[s] = e;
    this.slotOf[e] = s;
    this.bucketOf[e] = bucket;
    const head = this.bucketHead[bucket]!;
    this.next[e] = head;
    this.prev[e] = NONE;
    if (head !== NONE) this.prev[head] = e;
    this.bucketHead[bucket] = e;
    this.bucketCount[bucket]!++;
    if (this.sizeCount[sizeLog2]!++ === 0) this.sizeMask |= 1 << sizeLog2;
    this.live++;
    return e;
  }

  remove(e: number): void {
    const bucket = this.bucketOf[e]!;
    if (bucket === NONE) return;
    // Unlink from the bucket list.
    const p = this.prev[e]!;
    const n = this.next[e]!;
    if (p !== NONE) this.next[p] = n;
    else this.bucketHead[bucket] = n;
    if (n !== NONE) this.prev[n] = p;
    this.bucketCount[bucket]!--;
    this.bucketOf[e] = NONE;
    const sz = this.sizeLog2[e]!;
    if (--this.sizeCount[sz]! === 0) this.sizeMask &= ~(1 << sz);
    this.live--;
    // Backward-shift deletion keeps every probe chain unbroken.
    const mask = this.tableMask;
    let hole = this.slotOf[e]!;
    this.table[hole] = NONE;
    for (let s = (hole + 1) & mask; ; s = (s + 1) & mask) {
      const m = this.table[s]!;
      if (m === NONE) break;
      const home = this.hash(this.k1[m]!, this.tag[m]!, this.sizeLog2[m]!, this.base[m]!);
      // m may fill the hole when its home is not cyclically inside (hole, s].
      const between = hole <= s ? home > hole && home <= s : home > hole || home <= s;
      if (!between) {
        this.table[hole] = m;
        this.slotOf[m] = hole;
        this.table[s] = NONE;
        hole = s;
      }
    }
    this.freeNext[e] = this.freeHead;
    this.freeHead = e;
  }

  /** Remove every entry of a bucket; returns how many. */
  removeBucket(bucket: number): number {
    let n = 0;
    for (let e = this.bucketHead[bucket]!; e !== NONE; e = this.bucketHead[bucket]!) {
      this.remove(e);
      n++;
    }
    return n;
  }

  /**
   * Remove the entries of `bucket` whose span [base, base + 2^sizeLog2)
   * meets [start, end), only those tagged `tag` unless it is NONE (-1: any
   * tag); returns how many. An invalidation by address walks one bucket, so
   * its cost is bounded by that bucket's entries, never by the range.
   */
  removeSpan(bucket: number, tag: number, start: number, end: number): number {
    let n = 0;
    for (let e = this.bucketHead[bucket]!, next; e !== NONE; e = next) {
      next = this.next[e]!;
      if (tag !== NONE && this.tag[e] !== tag) continue;
      const base = this.base[e]!;
      if (base >= end || base + POW2[this.sizeLog2[e]!]! <= start) continue;
      this.remove(e);
      n++;
    }
    return n;
  }

  /** Drop everything; returns how many entries were live. */
  clear(): number {
    const n = this.live;
    this.table.fill(NONE);
    this.bucketHead.fill(NONE);
    this.bucketCount.fill(0);
    this.bucketOf.fill(NONE);
    this.sizeCount.fill(0);
    this.sizeMask = 0;
    this.live = 0;
    this.resetFree();
    return n;
  }
}
