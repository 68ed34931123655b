// Smoke test of `vcmdq bench --scenario simcheck` at tiny sizes: every figure
// gets its row (predicted, measured, ratio) and the notes carry the
// node-local measurements and the batch diagnostics. Shape only, never speed:
// the figures themselves are the lead's to measure.
import { describe, expect, it } from 'vitest';
import { Progress, type Profile } from '../bench/harness.ts';
import { SIMCHECK_BATCHES, simcheck, type SimcheckRow } from '../bench/scenario-simcheck.ts';
import { MORE_PATHS, PATHS } from '../bench/types.ts';

describe('simcheck scenario smoke', () => {
  it('measures the node-local profile, the real paths and the simulated ones, and pairs them figure by figure', async () => {
    const tiny: Profile = { name: 'quick', warmup: 20, samples: 200, rounds: 2, rewarm: 2, timeoutMs: 20_000 };
    const { measured, notes } = await simcheck.run({ profile: tiny, progress: new Progress(process.stderr, false), slowdownNs: 0 });
    const rows = measured.map((m) => m.row as SimcheckRow);
    const paths = [...PATHS, ...MORE_PATHS];
    const figures = (figure: string) => rows.filter((r) => r.params['figure'] === figure);
    expect(figures('roundtrip_p50').map((r) => r.path).sort()).toEqual([...paths].sort());
    expect(figures('trap_over_this_p50').map((r) => r.path)).toEqual(['doorbell-sleep', 'doorbell-spin']);
    expect(figures('throughput_us_per_cmd').length).toBe(SIMCHECK_BATCHES.length * paths.length);
    expect(figures('gapsweep_p50').map((r) => r.path).sort()).toEqual(['doorbell-sleep', 'doorbell-spin']);
    for (const r of rows) {
      expect(r.predicted_us, `${r.path} ${JSON.stringify(r.params)}`).toBeGreaterThan(0);
      expect(r.ratio).toBeCloseTo(r.predicted_us / r.measured_us, 9);
    }
    // The profile's own measurements, the server-CPU ones and the relay pair's among them.
    expect(notes.find((n) => n.startsWith('node-local measured at'))).toMatch(/two threads of the server CPU [\d.]+ µs.* on the server CPU \([\d.]+ ns\/cmd on the main thread\)/);
    for (const b of SIMCHECK_BATCHES) {
      expect(notes.find((n) => n.startsWith(`simcheck batch ${b}:`))).toMatch(/doorbell-sleep [\d.]+ \/ [\d.]+, doorbell-spin [\d.]+ \/ [\d.]+, doorbell-adaptive [\d.]+ \/ [\d.]+$/);
    }
  }, 600_000);
});
