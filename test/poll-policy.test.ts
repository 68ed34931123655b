// The kernel thread's polling policies as pure decisions on synthetic
// arrival streams (src/poll-policy.ts): no threads, no clocks, times in ns.
import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../src/errors.ts';
import {
  ADAPTIVE_DEFAULTS, AdaptivePoll, CPU_WINDOW_NS, FixedPoll, HALT_POLL_DEFAULTS, HaltPoll, bucketOf, bucketUpperNs,
  checkPollOptions, makePollPolicy, type PollPolicy,
} from '../src/poll-policy.ts';

const US = 1000;
/** Time the consumer spends serving each arrival before it goes idle again. */
const WORK_NS = 1 * US;

interface Drive {
  budgets: number[];
  sleeps: number;
  /** Wall time the stream took, ns. */
  elapsedNs: number;
}

/**
 * Feed `gapsNs` to `p` as the consumer would: idle at t, poll for the budget,
 * the work arrives gapsNs[i] later (caught by the poll when within the
 * budget, else after a sleep), served for WORK_NS.
 */
function drive(p: PollPolicy, gapsNs: readonly number[], t0 = 0, guestIdle = false): Drive & { t: number } {
  const budgets: number[] = [];
  let sleeps = 0;
  let t = t0;
  for (const d of gapsNs) {
    const b = p.idle(t, guestIdle);
    budgets.push(b);
    const slept = d > b;
    if (slept) sleeps++;
    p.arrived(t + d, slept);
    t += d + WORK_NS;
  }
  return { budgets, sleeps, elapsedNs: t - t0, t };
}

const repeat = (ns: number, n: number): number[] => Array.from({ length: n }, () => ns);

describe('fixed (io_uring SQPOLL idle; startHost spinUs)', () => {
  it('always polls its budget, and charges a caught arrival only up to the arrival', () => {
    const p = new FixedPoll(50 * US);
    const r = drive(p, [10 * US, 100 * US, 0, 1_000 * US]);
    expect(r.budgets).toEqual(repeat(50 * US, 4));
    expect(r.sleeps).toBe(2);
    // 10 + 50 (wasted) + 0 + 50 (wasted)
    expect(p.spunNs).toBe(110 * US);
  });

  it('a period that outlasted a sleep (heartbeat timeout, no work) is not polled again', () => {
    const p = new FixedPoll(50 * US);
    expect(p.idle(0, false)).toBe(50 * US);
    expect(p.idle(20_000 * US, false)).toBe(0);
    p.arrived(30_000 * US, true);
    expect(p.idle(30_001 * US, false)).toBe(50 * US);
  });
});

describe('halt-poll (KVM kvm_vcpu_halt, grow_halt_poll_ns / shrink_halt_poll_ns)', () => {
  it('grows from halt_poll_ns_grow_start by halt_poll_ns_grow while wake-ups come soon after it slept', () => {
    const p = new HaltPoll(HALT_POLL_DEFAULTS);
    const r = drive(p, repeat(30 * US, 5));
    // 0 (starts at 0) -> 10 (grow_start) -> 20 -> 40, which catches 30 µs: no change.
    expect(r.budgets).toEqual([0, 10 * US, 20 * US, 40 * US, 40 * US]);
    expect(r.sleeps).toBe(3);
  });

  it('shrinks by halt_poll_ns_shrink after blocks longer than halt_poll_ns, to 0 below grow_start', () => {
    const p = new HaltPoll(HALT_POLL_DEFAULTS);
    drive(p, repeat(30 * US, 4)); // poll at 40 µs
    const r = drive(p, repeat(1_000 * US, 4));
    expect(r.budgets).toEqual([40 * US, 20 * US, 10 * US, 0]);
  });

  it('never exceeds halt_poll_ns, and keeps polling a steady gap it can catch whatever it costs', () => {
    const p = new HaltPoll({ ...HALT_POLL_DEFAULTS, haltPollNs: 200 * US });
    const r = drive(p, repeat(150 * US, 12));
    expect(Math.max(...r.budgets)).toBeLessThanOrEqual(200 * US);
    // 10, 20, 40, 80, 160 then caught: 150 µs polled per command from then on.
    expect(r.budgets.slice(-3)).toEqual(repeat(160 * US, 3));
  });

  it('grow 0 never grows; shrink 0 resets to 0 (the module parameters)', () => {
    const still = new HaltPoll({ ...HALT_POLL_DEFAULTS, grow: 0 });
    expect(drive(still, repeat(30 * US, 4)).budgets).toEqual(repeat(0, 4));
    const reset = new HaltPoll({ ...HALT_POLL_DEFAULTS, shrink: 0 });
    drive(reset, repeat(30 * US, 5));
    expect(drive(reset, [1_000 * US, 1_000 * US]).budgets).toEqual([40 * US, 0]);
  });
});

describe('adaptive', () => {
  it('with no history polls for the wake cost (ski rental), capped at maxSpinNs', () => {
    expect(new AdaptivePoll(ADAPTIVE_DEFAULTS).idle(0, false)).toBe(ADAPTIVE_DEFAULTS.wakeCostNs);
    expect(new AdaptivePoll({ ...ADAPTIVE_DEFAULTS, maxSpinNs: 5 * US }).idle(0, false)).toBe(5 * US);
  });

  it('short gaps: polls just past them and catches every arrival once it has learnt', () => {
    for (const gap of [0, 5 * US, 20 * US]) {
      const p = new AdaptivePoll(ADAPTIVE_DEFAULTS);
      const r = drive(p, repeat(gap, 50));
      const last = r.budgets.at(-1)!;
      expect(last).toBeGreaterThanOrEqual(gap);
      expect(last).toBeLessThanOrEqual(Math.max(2 * gap, bucketUpperNs(0)));
      expect(drive(p, repeat(gap, 20), r.t).sleeps).toBe(0);
    }
  });

  it('gaps longer than a wake is worth: sleeps at once, where halt polling keeps polling them', () => {
    const gaps = repeat(100 * US, 60);
    const a = new AdaptivePoll(ADAPTIVE_DEFAULTS);
    const k = new HaltPoll(HALT_POLL_DEFAULTS);
    const ra = drive(a, gaps);
    const rk = drive(k, gaps);
    expect(ra.budgets.slice(-20)).toEqual(repeat(0, 20));
    expect(rk.budgets.slice(-20).every((b) => b >= 100 * US)).toBe(true);
    // Over the stream: adaptive polled only its cold-start budget; KVM ~100 µs per command.
    expect(a.spunNs).toBeLessThan(k.spunNs / 10);
  });

  it('grows when wake-ups come soon after it went to sleep', () => {
    const p = new AdaptivePoll(ADAPTIVE_DEFAULTS);
    const r0 = drive(p, repeat(5_000 * US, 40));
    expect(r0.budgets.at(-1)).toBe(0);
    const r = drive(p, repeat(10 * US, 40), r0.t);
    const first = r.budgets.findIndex((b) => b >= 10 * US);
    expect(first).toBeGreaterThan(0); // it slept first: the history said "long"
    expect(first).toBeLessThan(40);
    expect(r.budgets.slice(first).every((b) => b >= 10 * US)).toBe(true);
  });

  it('shrinks to 0 when its polls are wasted', () => {
    const p = new AdaptivePoll(ADAPTIVE_DEFAULTS);
    const r0 = drive(p, repeat(10 * US, 40));
    expect(r0.budgets.at(-1)).toBeGreaterThan(0);
    const r = drive(p, repeat(2_000 * US, 60), r0.t);
    expect(r.budgets.at(-1)).toBe(0);
    // Wasted polls stop within the history window, not after the whole stream.
    expect(r.budgets.findIndex((b) => b === 0)).toBeLessThan(ADAPTIVE_DEFAULTS.historyPeriods);
  });

  it('bimodal gaps: polls past the short mode, not into the long one', () => {
    const gaps = Array.from({ length: 400 }, (_, i) => (i % 10 === 9 ? 2_000 * US : 5 * US));
    const p = new AdaptivePoll(ADAPTIVE_DEFAULTS);
    const r = drive(p, gaps);
    const tail = r.budgets.slice(-100);
    expect(Math.min(...tail)).toBeGreaterThanOrEqual(5 * US);
    expect(Math.max(...tail)).toBeLessThan(2 * 5 * US);
  });

  it('respects its CPU budget: polling stays under cpuShare of the wall time (plus one window of burst)', () => {
    const cpuShare = 0.1;
    const p = new AdaptivePoll({ ...ADAPTIVE_DEFAULTS, cpuShare });
    // 10 µs gaps, back to back for ~0.5 s of stream time (5 windows): polling would pay for every one of them.
    const r = drive(p, repeat(10 * US, 50_000));
    expect(p.spunNs).toBeLessThanOrEqual(cpuShare * (r.elapsedNs + CPU_WINDOW_NS));
    expect(p.spunNs).toBeGreaterThan(0.5 * cpuShare * r.elapsedNs); // and it does use the budget
    expect(r.sleeps).toBeGreaterThan(0);
  });

  it('cpuShare 0 never polls; wakeCost 0 never polls', () => {
    expect(drive(new AdaptivePoll({ ...ADAPTIVE_DEFAULTS, cpuShare: 0 }), repeat(5 * US, 30)).budgets).toEqual(repeat(0, 30));
    expect(drive(new AdaptivePoll({ ...ADAPTIVE_DEFAULTS, wakeCostNs: 0 }), repeat(5 * US, 30)).budgets).toEqual(repeat(0, 30));
  });

  it('sleeps at once when the guest announced it will block, and the hint costs no CPU budget', () => {
    const p = new AdaptivePoll({ ...ADAPTIVE_DEFAULTS, cpuShare: 0.01 });
    const r0 = drive(p, repeat(5 * US, 30));
    expect(r0.budgets.at(-1)).toBeGreaterThan(0);
    const spun = p.spunNs;
    const r = drive(p, repeat(5 * US, 10), r0.t, true);
    expect(r.budgets).toEqual(repeat(0, 10));
    expect(p.spunNs).toBe(spun);
    expect(drive(p, [5 * US], r.t).budgets[0]).toBeGreaterThan(0);
  });
});

describe('histogram buckets', () => {
  it('bucket k holds [2^(8+k), 2^(9+k)) ns, bucket 0 everything below 512 ns', () => {
    expect(bucketOf(0)).toBe(0);
    expect(bucketOf(511)).toBe(0);
    expect(bucketOf(511.99)).toBe(0);
    expect(bucketOf(512)).toBe(1);
    expect(bucketOf(1023)).toBe(1);
    expect(bucketOf(1023.99)).toBe(1);
    expect(bucketOf(1024)).toBe(2);
    expect(bucketOf(2 ** 25 - 0.5)).toBe(16);
    expect(bucketOf(2 ** 25)).toBe(17);
    expect(bucketOf(2 ** 31)).toBe(17);
    expect(bucketOf(2 ** 32 + 700)).toBe(17);
    expect(bucketOf(1e12)).toBe(17);
    for (let k = 0; k < 17; k++) expect(bucketOf(bucketUpperNs(k))).toBe(k + 1);
    for (let k = 0; k < 17; k++) expect(bucketOf(bucketUpperNs(k) - 1e-3)).toBe(k);
    expect(bucketUpperNs(17)).toBe(Infinity);
  });

  it('bucketOf is floor(log2(ns)) - 8, clamped to 0..17, for fractional and whole ns across the range (no Math.log2 on the idle path)', () => {
    let x = 0x9e3779b9;
    for (let i = 0; i < 20_000; i++) {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      const ns = (x / 2 ** 32) * 2 ** (i % 34) + (i & 1 ? 0.25 : 0);
      const want = ns < 512 ? 0 : Math.min(17, Math.floor(Math.log2(ns)) - 8);
      if (bucketOf(ns) !== want) expect({ ns, bucket: bucketOf(ns) }).toEqual({ ns, bucket: want });
    }
  });

  it('a bucket no period lands in decays to exactly 0, never into the subnormal range where x * decay rounds back to x', () => {
    // One long period, then only short ones: the long one's bucket decays by 31/32 per period. Without a floor it
    // reaches 8e-323 after ~23 000 periods and stays there (16 x 2^-1074 x 31/32 rounds to even, back to 16 x
    // 2^-1074), and every later idle transition computes on subnormals, which the CPU does slowly.
    const p = new AdaptivePoll(ADAPTIVE_DEFAULTS);
    const h = p as unknown as { weight: Float64Array; sumNs: Float64Array };
    drive(p, [5 * US, ...repeat(300, 30_000)]);
    const subnormal = (v: number): boolean => v !== 0 && Math.abs(v) < 2 ** -1022;
    expect([...h.weight, ...h.sumNs].filter(subnormal)).toEqual([]);
    expect(h.weight[bucketOf(5 * US)]).toBe(0);
    expect(h.sumNs[bucketOf(5 * US)]).toBe(0);
    // The short periods' bucket is untouched by the floor: ~historyPeriods of weight, 300 ns each.
    expect(h.weight[0]).toBeCloseTo(ADAPTIVE_DEFAULTS.historyPeriods, 6);
    expect(h.sumNs[0]! / h.weight[0]!).toBeCloseTo(300, 6);
    // And the decision is what the short mode asks for: poll just past it.
    expect(p.idle(1e12, false)).toBe(bucketUpperNs(0));
  });
});

describe('checkPollOptions (startHost poll)', () => {
  it('fills the defaults per policy, in ns', () => {
    expect(checkPollOptions('p', undefined)).toEqual({ policy: 'adaptive', ...ADAPTIVE_DEFAULTS });
    expect(checkPollOptions('p', { policy: 'fixed', spinUs: 7 })).toEqual({ policy: 'fixed', spinNs: 7000 });
    expect(checkPollOptions('p', { policy: 'halt-poll', grow: 4 })).toEqual({ policy: 'halt-poll', ...HALT_POLL_DEFAULTS, grow: 4 });
    expect(checkPollOptions('p', { wakeCostUs: 12, cpuShare: 0.25 })).toMatchObject({ policy: 'adaptive', wakeCostNs: 12_000, cpuShare: 0.25 });
    expect(makePollPolicy(checkPollOptions('p', { policy: 'halt-poll' })).name).toBe('halt-poll');
  });

  it.each([
    [{ policy: 'spin' }, 'startHost: poll.policy'],
    [{ policy: 'fixed', wakeCostUs: 3 }, 'startHost: poll.wakeCostUs'],
    [{ policy: 'fixed', spinUs: 2.5 }, 'startHost: poll.spinUs'],
    [{ cpuShare: 1.5 }, 'startHost: poll.cpuShare'],
    [{ cpuShare: '0.1' }, 'startHost: poll.cpuShare'],
    [{ historyPeriods: 0 }, 'startHost: poll.historyPeriods'],
    [{ policy: 'halt-poll', shrink: -1 }, 'startHost: poll.shrink'],
    ['adaptive', 'startHost: poll'],
  ])('%j is refused naming %s', (v, argument) => {
    let err: unknown;
    try {
      checkPollOptions('startHost: poll', v);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ArgumentError);
    expect((err as ArgumentError).argument).toBe(argument);
  });
});
