// The simcheck scenario's pure parts: its rows and its path mapping. (Its
// timings are the lead's to measure: `vcmdq bench --scenario simcheck`.)
import { describe, expect, it } from 'vitest';
import { simcheckRow, simPathOf, syncCsOf } from '../bench/scenario-simcheck.ts';
import { SCENARIO_REGISTRY } from '../bench/scenarios.ts';
import { MORE_PATHS, PATHS, SCENARIOS } from '../bench/types.ts';
import { SIM_PATHS } from '../src/sim/paths.ts';

describe('simcheck', () => {
  it('every real-thread path is a simulated path of the same name, so their rows compare', () => {
    for (const p of [...PATHS, ...MORE_PATHS]) {
      expect(SIM_PATHS, p).toContain(p);
      expect(simPathOf(p)).toBe(p);
    }
    // The reference poller and the baselines are not designs the simulator models.
    expect(simPathOf('doorbell-haltpoll')).toBeUndefined();
    expect(simPathOf('atomics-spin')).toBeUndefined();
  });

  it('measures the hardware VCMDQ with CS=NONE syncs, as the simulated hw guest sends them (a Tegra241 VCMDQ takes no other)', () => {
    expect(syncCsOf('hw')).toBe('none');
    for (const p of ['trap', 'trap-qemu', 'doorbell-spin']) expect(syncCsOf(p)).toBe('sev');
  });

  it('a row carries predicted_us, measured_us and their ratio, in the bench schema', () => {
    const r = simcheckRow('doorbell-spin', { figure: 'roundtrip_p50' }, 1.5, 2, 100);
    expect(r).toMatchObject({ scenario: 'simcheck', path: 'doorbell-spin', predicted_us: 1.5, measured_us: 2, ratio: 0.75, p50_us: 2, samples: 100 });
    expect(simcheckRow('trap', {}, 1, 0, 0).ratio).toBeNaN();
  });

  it('is a registered scenario', () => {
    expect(SCENARIOS).toContain('simcheck');
    expect(SCENARIO_REGISTRY.map((s) => s.name)).toContain('simcheck');
  });
});
