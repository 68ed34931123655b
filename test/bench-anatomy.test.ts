// The anatomy scenario (bench/scenario-anatomy.ts): how its parts add up, and
// a smoke run on real threads that checks every part produces its row (shape
// only, never speed: no figure is compared with a time).
import { describe, expect, it } from 'vitest';
import { Progress, type Profile } from '../bench/harness.ts';
import { anatomy, explainRoundTrip, ROUNDTRIP_CMDS } from '../bench/scenario-anatomy.ts';

describe('explainRoundTrip', () => {
  it('residual = round trip - shape - work of both commands; ratios against the floor', () => {
    const e = explainRoundTrip({ floorUs: 0.2, shapeUs: 0.3, workNsPerCmd: 40, roundtripUs: 0.5 });
    expect(ROUNDTRIP_CMDS).toBe(2);
    expect(e.workUs).toBeCloseTo(0.08, 12);
    expect(e.residualUs).toBeCloseTo(0.5 - 0.3 - 0.08, 12);
    expect(e.overFloor).toBeCloseTo(2.5, 12);
    expect(e.shapeOverFloor).toBeCloseTo(1.5, 12);
  });

  it('a round trip faster than its parts shows a negative residual rather than hiding it', () => {
    expect(explainRoundTrip({ floorUs: 0.2, shapeUs: 0.3, workNsPerCmd: 50, roundtripUs: 0.35 }).residualUs).toBeLessThan(0);
  });
});

describe('anatomy scenario (tiny profile)', () => {
  const tiny: Profile = { name: 'quick', warmup: 20, samples: 60, rounds: 2, rewarm: 4, timeoutMs: 10_000 };

  it('produces every part, model executing and bypassed, each row naming its part and runnable threads', async () => {
    const out = await anatomy.run({ profile: tiny, progress: new Progress(process.stderr, false), slowdownNs: 0 });
    const key = (p: Record<string, unknown>): string => `${p['part']}/${p['model'] ?? p['lines']}`;
    expect(out.measured.map((m) => key(m.row.params)).sort()).toEqual([
      'batch-model/undefined', 'batch/bypass', 'batch/execute', 'floor/2', 'residual/bypass', 'residual/execute',
      'roundtrip/bypass', 'roundtrip/execute', 'shape/3', 'work/bypass', 'work/execute',
    ]);
    for (const { row } of out.measured) {
      expect(row.scenario).toBe('anatomy');
      expect(row.params['runnable_threads']).toBe(row.params['where'] === 'in-thread' ? 1 : 2);
      expect(Number.isFinite(row.p50_us), key(row.params)).toBe(true);
    }
    const sampled = out.measured.filter(({ row }) => ['floor', 'shape', 'roundtrip'].includes(row.params['part'] as string));
    for (const { row } of sampled) expect(row.samples).toBe(tiny.samples);
    // The residual is derived from the rows beside it, exactly.
    const find = (part: string, model?: string) => out.measured.find(({ row }) => row.params['part'] === part && (model === undefined || row.params['model'] === model))!.row;
    for (const model of ['execute', 'bypass']) {
      const e = explainRoundTrip({ floorUs: find('floor').p50_us, shapeUs: find('shape').p50_us, workNsPerCmd: find('work', model).p50_us * 1000, roundtripUs: find('roundtrip', model).p50_us });
      expect(find('residual', model).p50_us).toBeCloseTo(e.residualUs, 9);
    }
    expect(find('batch-model').p50_us).toBeCloseTo(find('batch', 'execute').p50_us - find('batch', 'bypass').p50_us, 9);
    // A part of an operation has no rate of its own; a whole one (a command's in-thread work) does.
    expect(find('residual', 'execute').ops_per_s).toBeNaN();
    expect(find('work', 'execute').ops_per_s).toBeCloseTo(1e6 / find('work', 'execute').p50_us, 6);
    expect(out.notes.some((n) => n.includes('target >= 100 M/s'))).toBe(true);
  });
});
