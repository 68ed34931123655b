// The discrete-event core of `vcmdq sim`: virtual time in ns, an event queue
// ordered by (time, insertion sequence), and a seeded PRNG. Pure: no clock,
// no threads, no I/O. Two events at the same virtual time fire in the order
// they were scheduled (FIFO tie-break), so a run is a function of its inputs
// and seed, never of heap layout or Map iteration order.

import { ArgumentError, SimLimitError } from '../errors.ts';

/** Something that reacts to its own events; `kind` says which of its events fired. */
export interface Actor {
  fire(kind: number): void;
}

/**
 * A binary min-heap of events keyed by (at, seq), stored as parallel arrays
 * (times and sequence numbers in typed arrays, grown by doubling) so an
 * event costs no allocation once the queue has reached its working size.
 */
export class EventQueue {
  private at = new Float64Array(64);
  private seq = new Float64Array(64);
  private kind = new Int32Array(64);
  private actor: (Actor | undefined)[] = new Array<Actor | undefined>(64);
  private n = 0;
  private nextSeq = 0;

  get size(): number {
    return this.n;
  }

  /** Time of the earliest event; Infinity when empty. */
  peekTime(): number {
    return this.n === 0 ? Infinity : this.at[0]!;
  }

  push(at: number, actor: Actor, kind: number): void {
    if (this.n === this.at.length) this.grow();
    let i = this.n++;
    const s = this.nextSeq++;
    // Sift up: move parents that sort after the new event down one level.
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(at, s, p)) break;
      this.move(p, i);
      i = p;
    }
    this.place(i, at, s, kind, actor);
  }

  /** Removes the earliest event and fires it; false when the queue was empty. */
  popFire(setNow: (t: number) => void): boolean {
    if (this.n === 0) return false;
    const actor = this.actor[0]!;
    const kind = this.kind[0]!;
    setNow(this.at[0]!);
    const last = --this.n;
    if (last > 0) {
      const at = this.at[last]!;
      const s = this.seq[last]!;
      const k = this.kind[last]!;
      const a = this.actor[last]!;
      let i = 0;
      // Sift down the former last element from the root.
      for (;;) {
        const l = 2 * i + 1;
        if (l >= last) break;
        const r = l + 1;
        const c = r < last && this.lessAt(r, l) ? r : l;
        if (!this.lessThan(c, at, s)) break;
        this.move(c, i);
        i = c;
      }
      this.place(i, at, s, k, a);
    }
    this.actor[last] = undefined;
    actor.fire(kind);
    return true;
  }

  /** Does (at, s) sort before slot i? */
  private before(at: number, s: number, i: number): boolean {
    const t = this.at[i]!;
    return at < t || (at === t && s < this.seq[i]!);
  }

  /** Does slot i sort before (at, s)? */
  private lessThan(i: number, at: number, s: number): boolean {
    const t = this.at[i]!;
    return t < at || (t === at && this.seq[i]! < s);
  }

  private lessAt(i: number, j: number): boolean {
    return this.lessThan(i, this.at[j]!, this.seq[j]!);
  }

  private place(i: number, at: number, s: number, kind: number, actor: Actor): void {
    this.at[i] = at;
    this.seq[i] = s;
    this.kind[i] = kind;
    this.actor[i] = actor;
  }

  private move(from: number, to: number): void {
    this.at[to] = this.at[from]!;
    this.seq[to] = this.seq[from]!;
    this.kind[to] = this.kind[from]!;
    this.actor[to] = this.actor[from];
  }

  private grow(): void {
    const cap = this.at.length * 2;
    const at = new Float64Array(cap);
    at.set(this.at);
    const seq = new Float64Array(cap);
    seq.set(this.seq);
    const kind = new Int32Array(cap);
    kind.set(this.kind);
    this.at = at;
    this.seq = seq;
    this.kind = kind;
    this.actor.length = cap;
  }
}

/**
 * xoshiro128** (Blackman and Vigna), seeded through splitmix32 so that
 * nearby seeds give unrelated streams. 32-bit integer arithmetic only: the
 * same sequence on every engine.
 */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new ArgumentError('Prng: seed', `must be an integer in 0..2^32-1, got ${seed}`);
    let s = seed >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
  }

  /** A uniform u32. */
  nextU32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** A uniform double in [0, 1). */
  next(): number {
    return this.nextU32() / 2 ** 32;
  }

  /** A uniform double in [lo, hi] (lo when the range is empty). */
  uniform(lo: number, hi: number): number {
    return hi > lo ? lo + (hi - lo) * this.next() : lo;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** The simulator: virtual time, the event queue, the PRNG. */
export class Sim {
  /** Virtual time, ns. */
  now = 0;
  readonly queue = new EventQueue();
  readonly rng: Prng;
  private readonly setNow = (t: number): void => {
    this.now = t;
  };

  constructor(seed: number) {
    this.rng = new Prng(seed);
  }

  /** Fire `actor`'s event `kind` `delayNs` from now (0: after every event already due now). */
  after(delayNs: number, actor: Actor, kind: number): void {
    if (!(delayNs >= 0)) throw new ArgumentError('Sim.after: delayNs', `must be >= 0, got ${delayNs}`);
    this.queue.push(this.now + delayNs, actor, kind);
  }

  /**
   * Fires events in (time, order) until the queue is empty or `maxEvents`
   * have fired (the bound on every run: a model bug that keeps rescheduling
   * ends with a SimLimitError, not a hang). Returns the number fired.
   */
  run(maxEvents: number): number {
    let fired = 0;
    while (this.queue.popFire(this.setNow)) {
      if (++fired >= maxEvents && this.queue.size > 0) throw new SimLimitError(`${maxEvents} events fired and the queue is not empty at t=${this.now} ns`);
    }
    return fired;
  }
}
