// Smoke test of the real baseline worker pairs: shape only, never speed.
import { describe, expect, it } from 'vitest';
import { startBaseline, startRelayPingPong } from '../bench/baselines.ts';
import { measureOnServerCpu } from '../bench/sim-node-local.ts';
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

describe('the node-local profile\'s own hop and micro workers (bench/sim-node-local.ts)', () => {
  it('the relay pair: each sample is the relaying thread\'s own round trip with its partner (written per PING), and both exit on close', async () => {
    const relay = await startRelayPingPong({ timeoutMs: tiny.timeoutMs });
    try {
      const out = new Float64Array(40);
      relay.sample(out, 0, out.length);
      // A sample the relaying thread did not write would read 0 (the SAB's initial value) or repeat a stale one.
      expect(out.every((x) => x > 0 && Number.isFinite(x))).toBe(true);
      expect(relay.params).toMatchObject({ cpus: 'same' });
    } finally {
      await relay.close();
    }
  });

  it('the server-CPU micro worker reports the kernel thread\'s consume and pass costs', async () => {
    const m = await measureOnServerCpu(60_000);
    expect(m.consume_ns_per_cmd).toBeGreaterThan(0);
    expect(Number.isFinite(m.pass_ns)).toBe(true);
  });
});
