// Smoke test of the real baseline worker pairs: shape only, never speed.
import { describe, expect, it } from 'vitest';
import { startBaseline } from '../bench/baselines.ts';
import { latencyRow, runInterleaved, Progress, type Profile } from '../bench/harness.ts';
import { BASELINE_PATHS } from '../bench/types.ts';

const tiny: Profile = { name: 'quick', warmup: 50, samples: 300, rounds: 3, rewarm: 5, timeoutMs: 10_000 };

describe('baseline ping-pong workers', () => {
  it('each baseline answers every round trip, interleaved, and closes', async () => {
    const paths = await Promise.all(BASELINE_PATHS.map((n) => startBaseline(n, { timeoutMs: tiny.timeoutMs })));
    try {
      const measured = await runInterleaved('smoke', paths, tiny, new Progress(process.stderr, false));
      expect(measured.map((m) => m.path.name)).toEqual([...BASELINE_PATHS]);
      for (const m of measured) {
        const { row } = latencyRow('baseline', m.path.name as (typeof BASELINE_PATHS)[number], m.path.params, m.samples, m.cpuUs);
        expect(row.samples).toBe(300);
        // every slot was filled by a real round trip: positive and finite
        expect(m.samples.every((x) => x > 0 && Number.isFinite(x))).toBe(true);
        expect(row.p50_us).toBeLessThanOrEqual(row.p90_us);
        expect(row.p90_us).toBeLessThanOrEqual(row.p99_us);
        expect(row.p99_us).toBeLessThanOrEqual(row.p999_us);
        expect(row.ops_per_s).toBeGreaterThan(0);
      }
    } finally {
      await Promise.all(paths.map((p) => p.close()));
    }
  });
});
