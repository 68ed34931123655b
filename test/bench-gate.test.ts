import { describe, expect, it } from 'vitest';
import { extractMetrics, judge, judgeAll, METRIC_DEFS, needsRemeasure, regressions, updatedBaseline, type GateMetric } from '../bench/gate.ts';
import { INJECT_DELAY_ENV, injectedDelayUs } from '../bench/inject.ts';
import type { PathName, ResultRow, ScenarioName } from '../bench/types.ts';

const lower: GateMetric = { name: 'db_over_spin', description: '', direction: 'lower', tolerance: 0.15, baseline: 1.2 };
const higher: GateMetric = { name: 'trap_over_db', description: '', direction: 'higher', tolerance: 0.3, baseline: 40 };

describe('gate comparison', () => {
  it('catches a regression beyond tolerance in either direction of "better"', () => {
    expect(judge(lower, [1.5]).status).toBe('fail'); // limit 1.38
    expect(judge(higher, [25]).status).toBe('fail'); // limit 28
    expect(judge(lower, [1.5]).limit).toBeCloseTo(1.38, 12);
  });

  it('passes noise within tolerance and flags large improvements', () => {
    expect(judge(lower, [1.35]).status).toBe('pass');
    expect(judge(higher, [29]).status).toBe('pass');
    expect(judge(lower, [0.9]).status).toBe('improved');
    expect(judge(higher, [60]).status).toBe('improved');
  });

  it('a failure that passes on re-measure passes: judged on the best attempt', () => {
    let v = judgeAll([lower, higher], { db_over_spin: [1.6], trap_over_db: [41] });
    expect(regressions(v).map((x) => x.metric.name)).toEqual(['db_over_spin']);
    expect(needsRemeasure(v, 1)).toBe(true);
    v = judgeAll([lower, higher], { db_over_spin: [1.6, 1.25], trap_over_db: [41, 20] });
    expect(regressions(v)).toEqual([]);
    expect(v[0]!.best).toBe(1.25);
    expect(v[1]!.best).toBe(41);
  });

  it('a regression that persists over all attempts fails, and attempts are bounded', () => {
    const v = judgeAll([lower], { db_over_spin: [1.6, 1.5, 1.45] });
    expect(regressions(v)).toHaveLength(1);
    expect(needsRemeasure(v, 3)).toBe(false);
    expect(needsRemeasure(judgeAll([lower], { db_over_spin: [1.2] }), 1)).toBe(false);
  });

  it('a metric with a baseline that the run did not measure is a regression; one without a baseline is not judged', () => {
    expect(judge(lower, [NaN]).status).toBe('missing');
    expect(judge(lower, []).status).toBe('missing');
    expect(judge({ ...lower, baseline: null }, [1.9]).status).toBe('no-baseline');
    expect(regressions(judgeAll([{ ...lower, baseline: null }], { db_over_spin: [NaN] }))).toEqual([]);
  });

  it('update records the worst attempt and only ratchets in the good direction', () => {
    const old = { note: 'n', recorded: null, metrics: METRIC_DEFS.map((d) => ({ ...d, baseline: d.direction === 'higher' ? 40 : 1.2 })) };
    const next = updatedBaseline(old, {
      trap_over_doorbell_spin_p50: [50, 45, 60], // worst 45 > 40: moves up
      trap_over_doorbell_spin_p99: [30, 90, 95], // worst 30 < 40: stays
      doorbell_spin_over_atomics_spin_p50: [1.1, 1.4, 1.0], // worst 1.4, worse than 1.2: stays
      doorbell_sleep_over_atomics_wait_p50: [1.0, 1.1, 0.9], // worst 1.1 < 1.2: moves down (better)
    }, { date: 'd', machine: 'm' });
    const by = Object.fromEntries(next.metrics.map((m) => [m.name, m.baseline]));
    expect(by['trap_over_doorbell_spin_p50']).toBe(45);
    expect(by['doorbell_spin_over_atomics_spin_p50']).toBe(1.2);
    expect(by['trap_over_doorbell_spin_p99']).toBe(40);
    expect(by['doorbell_sleep_over_atomics_wait_p50']).toBe(1.1);
    expect(by['throughput_b64_cmds_per_spin_rtt']).toBe(40);
    expect(updatedBaseline(null, { trap_over_doorbell_spin_p99: [7] }, null).metrics.find((m) => m.name === 'trap_over_doorbell_spin_p99')!.baseline).toBe(7);
  });
});

function row(scenario: ScenarioName, path: PathName, params: ResultRow['params'], p50: number, p99: number, ops = 0): ResultRow {
  return { scenario, path, params, p50_us: p50, p90_us: p50, p99_us: p99, p999_us: p99, mean_us: p50, stddev_us: 0, ops_per_s: ops, cpu_us_per_op: null, samples: 1 };
}

describe('gate metrics from result rows', () => {
  it('computes the in-run ratios from the matching rows', () => {
    const rows = [
      row('baseline', 'atomics-spin', {}, 0.9, 1.1),
      row('baseline', 'atomics-wait', {}, 25, 80),
      row('roundtrip', 'trap', { cs: 'none' }, 1000, 1000),
      row('roundtrip', 'trap', { cs: 'sev' }, 40, 100),
      row('roundtrip', 'doorbell-spin', { cs: 'sev' }, 1, 2),
      row('roundtrip', 'doorbell-sleep', { cs: 'sev' }, 27.5, 90),
      row('throughput', 'doorbell-spin', { batch: 64, commands_per_iteration: 4096 }, 0, 0, 20e6),
    ];
    const m = extractMetrics(rows);
    expect(m['trap_over_doorbell_spin_p50']).toBe(40);
    expect(m['trap_over_doorbell_spin_p99']).toBe(50);
    expect(m['doorbell_spin_over_atomics_spin_p50']).toBeCloseTo(1 / 0.9, 12);
    expect(m['doorbell_sleep_over_atomics_wait_p50']).toBe(1.1);
    expect(m['throughput_b64_cmds_per_spin_rtt']).toBeCloseTo(18, 12);
  });

  it('reports NaN for what a run (baselines only) did not measure', () => {
    const m = extractMetrics([row('baseline', 'atomics-spin', {}, 0.9, 1.1)]);
    expect(Object.values(m).every(Number.isNaN)).toBe(true);
  });
});

describe('slowdown knob', () => {
  it('parses the env var and rejects nonsense', () => {
    expect(INJECT_DELAY_ENV).toBe('VCMDQ_INJECT_DELAY_US');
    expect(injectedDelayUs({})).toBe(0);
    expect(injectedDelayUs({ [INJECT_DELAY_ENV]: '20' })).toBe(20);
    expect(() => injectedDelayUs({ [INJECT_DELAY_ENV]: '-1' })).toThrow(RangeError);
    expect(() => injectedDelayUs({ [INJECT_DELAY_ENV]: 'fast' })).toThrow(RangeError);
  });
});
