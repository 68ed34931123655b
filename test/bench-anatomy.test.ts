// The anatomy scenario (bench/scenario-anatomy.ts): how its parts add up, and
// a smoke run on real threads that checks every part produces its row (shape
// only, never speed: no figure is compared with a time).
import { describe, expect, it } from 'vitest';
import { Progress, type Profile } from '../bench/harness.ts';
import { startBatchStream } from '../bench/baselines.ts';
import { runMicro } from '../bench/micro.ts';
import { anatomy, batchVerdict, explainBatch, explainRoundTrip, ROUNDTRIP_CMDS, TRANSPORT_TARGET_NS } from '../bench/scenario-anatomy.ts';
import { bypassExecute } from '../native-free-fastpath/consumer.ts';
import { ArgumentError } from '../src/errors.ts';

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

describe('explainBatch', () => {
  it('residual = transport - stream floor - in-thread work, per command', () => {
    const e = explainBatch({ floorNs: 6, workNs: 9, transportNs: 24 });
    expect(e.residualNs).toBeCloseTo(24 - 6 - 9, 12);
    expect(e.forbidden).toBe(false);
    expect(e.budgetNs).toBeCloseTo(TRANSPORT_TARGET_NS - 6, 12);
  });

  it('a floor at or over 10 ns/cmd forbids 100 M/s, and the verdict says the hardware does', () => {
    expect(TRANSPORT_TARGET_NS).toBe(10);
    expect(explainBatch({ floorNs: 10, workNs: 0, transportNs: 10 }).forbidden).toBe(true);
    expect(explainBatch({ floorNs: 9.9, workNs: 0, transportNs: 10 }).forbidden).toBe(false);
    expect(batchVerdict({ floorNs: 12, workNs: 9, transportNs: 24 })).toContain('forbid');
  });

  it('under the target, the verdict gives the budget left and says when the work alone is over it', () => {
    const over = batchVerdict({ floorNs: 6, workNs: 9, transportNs: 24 });
    expect(over).toContain('leaves 4.0 ns');
    expect(over).toContain('work alone is over it');
    expect(batchVerdict({ floorNs: 6, workNs: 3, transportNs: 12 })).not.toContain('over it');
  });
});

describe('the batch floor and the 64-command consume step', () => {
  it('the bare batch stream runs (its consumer copied every slot: the checksum beside CONS matched) and yields per-command samples', async () => {
    const words = new Uint32Array(4 * 64).map((_, k) => 0x9e3779b9 * (k + 1));
    const stream = await startBatchStream({ timeoutMs: 10_000, idleSpinUs: 100 }, words);
    try {
      const out = new Float64Array(5);
      await stream.sample(out, 0, out.length); // throws when the consumer's sum differs from the slots published
      for (const v of out) expect(v).toBeGreaterThan(0);
      expect(stream.params['shape']).toBe('batch-stream');
    } finally {
      await stream.close();
    }
  });

  it('startBatchStream takes exactly one batch of words', async () => {
    await expect(startBatchStream({ timeoutMs: 1000 }, new Uint32Array(4 * 63))).rejects.toThrow(ArgumentError);
  });

  it('runMicro consumes in passes of passCmds (each pass must take exactly that many) and refuses a passCmds that does not tile the ring', () => {
    expect(runMicro('consume', { blocks: 2, warmup: 1, wrapModel: bypassExecute, passCmds: 64 }).blocks).toBe(2);
    for (const bad of [0, 3, 48, 2048, 1.5]) expect(() => runMicro('consume', { blocks: 1, warmup: 0, passCmds: bad })).toThrow(ArgumentError);
  });
});

describe('anatomy scenario (tiny profile)', () => {
  const tiny: Profile = { name: 'quick', warmup: 20, samples: 60, rounds: 2, rewarm: 4, timeoutMs: 10_000 };

  it('produces every part, model executing and bypassed, each row naming its part and runnable threads', async () => {
    const out = await anatomy.run({ profile: tiny, progress: new Progress(process.stderr, false), slowdownNs: 0 });
    const key = (p: Record<string, unknown>): string => `${p['part']}/${p['model'] ?? p['lines']}`;
    expect(out.measured.map((m) => key(m.row.params)).sort()).toEqual([
      'batch-floor/undefined', 'batch-model/undefined', 'batch-residual/bypass', 'batch-work/bypass', 'batch/bypass', 'batch/execute', 'floor/2', 'residual/bypass', 'residual/execute',
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
    // transport = stream floor + in-thread work (64-command passes) + residual, exactly.
    const b = explainBatch({ floorNs: find('batch-floor').p50_us * 1000, workNs: find('batch-work').p50_us * 1000, transportNs: find('batch', 'bypass').p50_us * 1000 });
    expect(find('batch-residual').p50_us * 1000).toBeCloseTo(b.residualNs, 6);
    expect(find('batch-floor').samples).toBe(find('batch', 'bypass').samples);
    expect(out.notes.some((n) => n.includes('stream floor') && n.includes('10 ns/cmd'))).toBe(true);
  });
});
