// The simcheck scenario's pure parts: its rows and its path mapping. (Its
// timings are the lead's to measure: `vcmdq bench --scenario simcheck`.)
import { describe, expect, it } from 'vitest';
import { SIM_PATH_OF, simcheckRow } from '../bench/scenario-simcheck.ts';
import { SCENARIO_REGISTRY } from '../bench/scenarios.ts';
import { PATHS, SCENARIOS } from '../bench/types.ts';
import { SIM_PATHS } from '../src/sim/paths.ts';

describe('simcheck', () => {
  it('every real-thread path has a simulated counterpart (a new path must say which design it is)', () => {
    for (const p of PATHS) {
      expect(SIM_PATH_OF[p], p).toBeDefined();
      expect(SIM_PATHS).toContain(SIM_PATH_OF[p]);
    }
    // The emulation's trap hands the write to a separate VMM thread: the iothread shape.
    expect(SIM_PATH_OF['trap']).toBe('trap-iothread');
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
