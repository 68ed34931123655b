// The perf gate's decision rule and its plumbing, on synthetic samples: no
// timing here (speed is the gate's job, never a unit test's).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { armOrder, buildBase, GateBaseError, resolveCommit } from '../bench/ab.ts';
import { baselineProblem, bootstrapRatio, judge, median, METRIC_DEFS, regressions, type GateMetric } from '../bench/gate.ts';
import { placementMode } from '../bench/placement.ts';
import { SLOWDOWN_ENV, slowdownNs } from '../bench/slowdown.ts';
import { work } from '../native-free-fastpath/slowdown.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const metric: GateMetric = { name: 'consume_ns', description: 'test metric', threshold: 0.1 };

/** `n` rounds around `centre`, spread by +-`spread` (relative), deterministic. */
function rounds(centre: number, spread: number, n = 10): number[] {
  return Array.from({ length: n }, (_, k) => centre * (1 + spread * Math.sin(k * 2.399963)));
}

describe('gate decision: bootstrap interval of candidate/base against the threshold', () => {
  it('an unchanged build passes: the interval straddles 1', () => {
    const v = judge(metric, rounds(50, 0.03), rounds(50, 0.03, 9));
    expect(v.status).toBe('pass');
    expect(v.interval!.lo).toBeLessThan(1);
    expect(v.interval!.hi).toBeGreaterThan(1);
  });

  it('an interval straddling the threshold passes (not proven slower than the threshold)', () => {
    // 10% slower on average, +-8%: some resamples land under +10%.
    const v = judge(metric, rounds(50, 0.02), rounds(55, 0.08));
    expect(v.interval!.lo).toBeLessThan(1.1);
    expect(v.interval!.hi).toBeGreaterThan(1.1);
    expect(v.status).toBe('pass');
  });

  it('an interval wholly beyond the threshold fails, and is named by regressions()', () => {
    const v = judge(metric, rounds(50, 0.03), rounds(70, 0.03));
    expect(v.interval!.lo).toBeGreaterThan(1.1);
    expect(v.status).toBe('fail');
    expect(regressions([v, judge(metric, rounds(50, 0.03), rounds(50, 0.03))])).toEqual([v]);
  });

  it('a bimodal metric (placement flips between rounds) gets a wide interval, not a false failure', () => {
    const bimodal = (k: number): number => (k % 3 === 0 ? 0.9 : 0.4);
    const base = Array.from({ length: 10 }, (_, k) => bimodal(k));
    const cand = Array.from({ length: 10 }, (_, k) => bimodal(k + 1));
    expect(judge({ ...metric, threshold: 0.15 }, base, cand).status).not.toBe('fail');
  });

  it('a clear speed-up is reported as improved, never as a failure', () => {
    expect(judge(metric, rounds(50, 0.02), rounds(30, 0.02)).status).toBe('improved');
  });

  it('too few rounds, or none that measured, is "missing" and fails the gate', () => {
    expect(bootstrapRatio([1, 2], [1, 2, 3])).toBeNull();
    const v = judge(metric, [NaN, NaN, NaN, NaN], rounds(50, 0.01));
    expect(v.status).toBe('missing');
    expect(regressions([v])).toEqual([v]);
  });

  it('is reproducible for a seed and the ratio is that of the medians', () => {
    const b = rounds(40, 0.05);
    const c = rounds(44, 0.05);
    expect(bootstrapRatio(b, c, 7)).toEqual(bootstrapRatio(b, c, 7));
    expect(bootstrapRatio(b, c, 7)!.ratio).toBeCloseTo(median(c) / median(b), 12);
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });
});

describe('gate baseline file', () => {
  it('accepts the committed file and every default metric', () => {
    expect(baselineProblem({ note: '', base: { commit: 'abcdef1', why: '' }, metrics: METRIC_DEFS })).toBeNull();
  });

  it('names what is wrong with a malformed file', () => {
    expect(baselineProblem(null)).toMatch(/object/);
    expect(baselineProblem({ base: { commit: 'HEAD' }, metrics: METRIC_DEFS })).toMatch(/base\.commit/);
    expect(baselineProblem({ base: { commit: 'abcdef1' }, metrics: [] })).toMatch(/metrics/);
    expect(baselineProblem({ base: { commit: 'abcdef1' }, metrics: [{ name: 'nope', threshold: 0.1 }] })).toMatch(/unknown metric/);
    expect(baselineProblem({ base: { commit: 'abcdef1' }, metrics: [{ ...metric, threshold: 2 }] })).toMatch(/threshold/);
  });
});

describe('gate A/B plumbing', () => {
  it('a base that is not in the clone is a GateBaseError naming it', () => {
    const err = (() => {
      try {
        resolveCommit(ROOT, '0000000000000000000000000000000000000001');
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(GateBaseError);
    expect((err as Error).message).toMatch(/0000000000000000000000000000000000000001 is not in this clone/);
  });

  it('a base whose sources cannot build the probe is a GateBaseError that says what to do', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'vcmdq-gate-test-'));
    try {
      // The root commit has no bench/ sources the probe needs (no SMMU model, no consumer).
      const root = resolveCommit(ROOT, 'HEAD');
      const first = (await import('node:child_process')).execFileSync('git', ['rev-list', '--max-parents=0', root], { cwd: ROOT, encoding: 'utf8' }).trim().split('\n')[0]!;
      await expect(buildBase(ROOT, first, tmp)).rejects.toThrow(/cannot be built with this tree's benchmark code.*--set-base/);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('alternates the builds: each runs first in half the rounds', () => {
    const firsts = Array.from({ length: 10 }, (_, r) => armOrder(2, r)[0]);
    expect(firsts.filter((a) => a === 0)).toHaveLength(5);
    for (let r = 0; r < 12; r++) expect([...armOrder(5, r)].sort()).toEqual([0, 1, 2, 3, 4]);
  });
});

describe('slowdown knob and placement modes', () => {
  it('reads VCMDQ_SLOWDOWN_NS strictly', () => {
    expect(SLOWDOWN_ENV).toBe('VCMDQ_SLOWDOWN_NS');
    expect(slowdownNs({})).toBe(0);
    expect(slowdownNs({ [SLOWDOWN_ENV]: '50' })).toBe(50);
    expect(() => slowdownNs({ [SLOWDOWN_ENV]: '-1' })).toThrow(RangeError);
    expect(() => slowdownNs({ [SLOWDOWN_ENV]: 'fast' })).toThrow(RangeError);
    expect(() => slowdownNs({ [SLOWDOWN_ENV]: '2.5' })).toThrow(RangeError);
  });

  it('the slowdown work is a real dependent computation (its result depends on the iteration count)', () => {
    expect(work(0)).not.toBe(work(1));
    expect(work(1000)).not.toBe(work(1001));
  });

  it('names the two known placement modes from the spin floor (node-latency-floor.md §2)', () => {
    expect(placementMode(0.14)).toBe('near');
    expect(placementMode(0.23)).toBe('near');
    expect(placementMode(0.9)).toBe('far');
    expect(placementMode(0.5)).toBe('between');
  });
});
