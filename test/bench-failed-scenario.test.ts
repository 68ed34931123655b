// A scenario that throws (a bug, not a missing facility) must not cost the
// results the other scenarios measured: runBench records it under `failed`,
// runs the rest, and the JSON document carries it (bench/README.md). A full
// run lost nine minutes of rows to one simulator error before this.
import { describe, expect, it, vi } from 'vitest';
import { latencyRow, PROFILES, Progress } from '../bench/harness.ts';
import { BenchUnavailableError } from '../bench/types.ts';

vi.mock('../bench/scenarios.ts', () => ({
  SCENARIO_REGISTRY: [
    { name: 'roundtrip', title: 'throws', run: () => Promise.reject(new RangeError('boom')) },
    { name: 'anatomy', title: 'unavailable', run: () => Promise.reject(new BenchUnavailableError('no facility')) },
    {
      name: 'svastorm', title: 'measures',
      run: () => Promise.resolve({ measured: [latencyRow('svastorm', 'trap', {}, Float64Array.of(1, 2, 3), null)], notes: ['ok'] }),
    },
  ],
}));

describe('bench: one failing scenario', () => {
  it('is reported as failed while the scenarios after it still run and are kept', async () => {
    const { runBench, toJsonDocument } = await import('../bench/report.ts');
    const report = await runBench({ profile: PROFILES.quick, scenarios: ['roundtrip', 'anatomy', 'svastorm'], progress: new Progress(process.stderr, false) });
    expect(report.failed).toEqual([{ scenario: 'roundtrip', error: 'RangeError: boom' }]);
    expect(report.unavailable).toEqual([{ scenario: 'anatomy', reason: 'no facility' }]);
    expect(report.measured.map((m) => m.row.scenario)).toEqual(['svastorm']);
    expect(report.notes).toContain('svastorm: ok');
    expect((toJsonDocument(report) as { failed: unknown }).failed).toEqual(report.failed);
  });
});
