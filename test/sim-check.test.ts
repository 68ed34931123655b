// The simcheck scenario's pure parts: its rows and its path mapping. (Its
// timings are the lead's to measure: `vcmdq bench --scenario simcheck`.)
import { describe, expect, it } from 'vitest';
import { simcheckRow, simPathOf, simulateOne, sleepsNote, syncCsOf } from '../bench/scenario-simcheck.ts';
import { loadProfile } from '../src/sim/profile.ts';
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

  it('simulates on the bench\'s ring of 256, where a 4096-command iteration laps the ring and the sleeping kernel thread runs dry more often', () => {
    const over = { workload: 'batch', batch: 256, unmaps: 4 } as const;
    const bench = simulateOne(loadProfile('kvm-arm64'), 'doorbell-sleep', over);
    // The same with the simulator's default ring (8192 slots), which holds the whole iteration.
    const roomy = simulateOne(loadProfile('kvm-arm64'), 'doorbell-sleep', { ...over, log2size: 13 });
    expect(bench.wakeups).toBeGreaterThan(roomy.wakeups);
  });

  it('notes the kernel thread\'s sleeps per batch iteration, measured beside simulated, per doorbell path', () => {
    expect(sleepsNote(1, [{ path: 'doorbell-sleep', measured: 2.04, simulated: 1 }, { path: 'doorbell-spin', measured: 0, simulated: 0.005 }]))
      .toBe('simcheck batch 1: kernel-thread sleeps per iteration, measured / simulated: doorbell-sleep 2.04 / 1.00, doorbell-spin 0.00 / 0.01');
    expect(sleepsNote(16, [])).toMatch(/no doorbell path/);
  });
});
