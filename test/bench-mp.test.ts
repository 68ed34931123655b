// The multi-producer bench scenario (bench/scenario-mp.ts): its pure parts,
// and a smoke run with a tiny profile that checks the rows' shape and sample
// counts, never their speed.
import { describe, expect, it } from 'vitest';
import { PROFILES, Progress, type Profile } from '../bench/harness.ts';
import { MP_BATCHES, MP_PRODUCERS, aggregateUsPerCommand, mp, mpCapacity, mpPlan, mpThreads } from '../bench/scenario-mp.ts';
import { PATHS } from '../bench/types.ts';

describe('mp scenario: pure parts', () => {
  it('threads counts the producers and the path\'s server threads', () => {
    expect(mpThreads('doorbell-spin', 1)).toBe(2);
    expect(mpThreads('doorbell-sleep', 4)).toBe(5);
    expect(mpThreads('trap', 4)).toBe(6); // kernel thread and VMM
  });

  it('the aggregate spans from the earliest start to the latest end, over every command', () => {
    // Two producers, 10 ms and 12 ms long, overlapping: 13 ms for 1300 commands is 10 µs each.
    expect(aggregateUsPerCommand([[5, 15], [3, 15.5], [4, 16]], 1300)).toBeCloseTo(10, 12);
    expect(aggregateUsPerCommand([[0, 2]], 1000)).toBeCloseTo(2, 12);
  });

  it('the plan keeps at least one chunk per round, and the buffers hold the largest cell', () => {
    for (const profile of Object.values(PROFILES)) {
      const plan = mpPlan(profile);
      expect(plan.rtCalls).toBeGreaterThanOrEqual(profile.rounds);
      expect(plan.tpSamples).toBeGreaterThanOrEqual(profile.rounds);
      const cap = mpCapacity(plan, profile.rounds);
      expect(cap).toBeGreaterThanOrEqual(Math.ceil(plan.rtCalls / profile.rounds));
      expect(cap).toBeGreaterThanOrEqual(plan.rtWarm);
    }
  });
});

describe('mp scenario: smoke run', () => {
  it('produces one row per path, producer count and batch, with every sample taken', async () => {
    process.env['VCMDQ_BENCH_NOPIN'] = '1'; // this test process is not the bench: leave its threads where they are
    const tiny: Profile = { name: 'quick', warmup: 0, samples: 150, rounds: 2, rewarm: 2, timeoutMs: 20_000 };
    const plan = mpPlan(tiny);
    const { measured, notes } = await mp.run({ profile: tiny, progress: new Progress(process.stderr, false), slowdownNs: 0 });
    const rows = measured.map((m) => m.row);
    const expected = PATHS.flatMap((path) => MP_PRODUCERS.flatMap((producers) => MP_BATCHES.map((batch) => ({ path, producers, batch }))));
    expect(rows.map((r) => ({ path: r.path, producers: r.params['producers'], batch: r.params['batch'] })))
      .toEqual(expect.arrayContaining(expected));
    expect(rows).toHaveLength(expected.length);
    for (const r of rows) {
      expect(r.scenario).toBe('mp');
      const producers = r.params['producers'] as number;
      expect(r.params['threads']).toBe(mpThreads(r.path as (typeof PATHS)[number], producers));
      expect(r.samples).toBe(r.params['batch'] === 1 ? producers * plan.rtCalls : plan.tpSamples);
      expect(Number.isFinite(r.p50_us) && Number.isFinite(r.p99_us) && r.p50_us > 0).toBe(true);
    }
    expect(notes.join('\n')).toMatch(/threads = producers \+ server threads/);
  }, 120_000);
});
