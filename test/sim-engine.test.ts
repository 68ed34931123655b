// The simulator's engine: event order (time, then scheduling order), the
// seeded PRNG, the run bound, and the shared resources.
import { describe, expect, it } from 'vitest';
import { ArgumentError, SimLimitError } from '../src/errors.ts';
import { EventQueue, Prng, Sim, type Actor } from '../src/sim/engine.ts';
import { Semaphore, SmmuEngine } from '../src/sim/resources.ts';

/** An actor that logs (time, kind) of each event it gets. */
class Log implements Actor {
  readonly seen: [number, number][] = [];
  constructor(private readonly sim: Sim, private readonly then?: (kind: number) => void) {}
  fire(kind: number): void {
    this.seen.push([this.sim.now, kind]);
    this.then?.(kind);
  }
}

describe('EventQueue', () => {
  it('fires in time order, and events at the same time in the order they were scheduled', () => {
    const sim = new Sim(1);
    const log = new Log(sim);
    // Times from a PRNG with many ties; kinds number the scheduling order.
    const rng = new Prng(7);
    const times = Array.from({ length: 2000 }, () => rng.nextU32() % 50);
    times.forEach((t, k) => sim.after(t, log, k));
    expect(sim.run(10_000)).toBe(times.length);
    const expected = times.map((t, k) => [t, k] as [number, number]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    expect(log.seen).toEqual(expected);
  });

  it('an event scheduled for now fires after the events already due now (FIFO tie-break)', () => {
    const sim = new Sim(1);
    const log = new Log(sim, (kind) => {
      if (kind === 0) sim.after(0, log, 9);
    });
    sim.after(5, log, 0);
    sim.after(5, log, 1);
    sim.run(10);
    expect(log.seen).toEqual([[5, 0], [5, 1], [5, 9]]);
  });

  it('keeps its order while growing and shrinking (interleaved pushes and pops)', () => {
    const q = new EventQueue();
    const fired: number[] = [];
    const actor: Actor = { fire: (k) => fired.push(k) };
    let now = 0;
    const rng = new Prng(3);
    const pending: [number, number][] = [];
    for (let k = 0; k < 500; k++) {
      const at = now + (rng.nextU32() % 100);
      q.push(at, actor, k);
      pending.push([at, k]);
      if (k % 3 === 0) {
        q.popFire((t) => { now = t; });
        pending.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        expect(fired.at(-1)).toBe(pending.shift()![1]);
      }
    }
    expect(q.size).toBe(pending.length);
    expect(q.peekTime()).toBe(Math.min(...pending.map((p) => p[0])));
  });

  it('refuses a negative delay and ends a run that keeps rescheduling with SimLimitError', () => {
    const sim = new Sim(1);
    const forever: Actor = { fire: () => sim.after(1, forever, 0) };
    expect(() => sim.after(-1, forever, 0)).toThrow(ArgumentError);
    sim.after(0, forever, 0);
    expect(() => sim.run(100)).toThrow(SimLimitError);
  });
});

describe('Prng', () => {
  it('is deterministic per seed and differs between seeds', () => {
    const draw = (seed: number): number[] => {
      const r = new Prng(seed);
      return Array.from({ length: 64 }, () => r.nextU32());
    };
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
  });

  it('draws uniformly: mean and range of next() and uniform()', () => {
    const r = new Prng(11);
    let sum = 0;
    let lo = Infinity;
    let hi = -Infinity;
    for (let k = 0; k < 100_000; k++) {
      const x = r.uniform(10, 20);
      sum += x;
      lo = Math.min(lo, x);
      hi = Math.max(hi, x);
    }
    expect(sum / 100_000).toBeCloseTo(15, 1);
    expect(lo).toBeGreaterThanOrEqual(10);
    expect(hi).toBeLessThan(20);
    expect(r.uniform(5, 5)).toBe(5);
  });

  it('refuses a seed outside u32', () => {
    expect(() => new Prng(-1)).toThrow(ArgumentError);
    expect(() => new Prng(1.5)).toThrow(ArgumentError);
  });
});

describe('Semaphore', () => {
  it('hands units out first come, first served, and counts the time they were held', () => {
    const sim = new Sim(1);
    const lock = new Semaphore(sim, 1, 'BQL');
    const order: number[] = [];
    const holder = (id: number, holdNs: number): Actor => {
      const a: Actor = {
        fire: (kind) => {
          if (kind === 0) lock.acquire(a, 1);
          else if (kind === 1) {
            order.push(id);
            sim.after(holdNs, a, 2);
          } else lock.release();
        },
      };
      return a;
    };
    // Three want the lock at t=0 in this order, each holds it 10 ns: they run one after the other.
    for (const id of [0, 1, 2]) sim.after(0, holder(id, 10), 0);
    sim.run(100);
    expect(order).toEqual([0, 1, 2]);
    expect(sim.now).toBe(30);
    expect(lock.busyNs()).toBe(30);
    expect(() => lock.release()).toThrow(/released more/);
  });
});

describe('SmmuEngine', () => {
  it('serialises issue time and overlaps sync latency', () => {
    const sim = new Sim(1);
    const smmu = new SmmuEngine(sim);
    const log = new Log(sim);
    smmu.submit(100, 1000, log, 0);
    smmu.submit(100, 1000, log, 1);
    sim.run(10);
    // The second waits for the first's issue (100 ns), not for its sync.
    expect(log.seen).toEqual([[1100, 0], [1200, 1]]);
    expect(smmu.busyNs).toBe(200);
  });
});
