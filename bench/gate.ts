// The perf gate's decision, pure (no timing, no I/O): per metric, a bootstrap
// confidence interval on the candidate/base ratio of per-round medians, from
// rounds in which the two builds ran alternately on the same machine
// (bench/ab.ts), as Node's benchmark/compare.js runs old and new binaries
// alternately and tests the difference. A metric fails only when its whole
// interval lies beyond its threshold: a noisy metric gets a wide interval and
// passes; only a shift larger than the threshold, seen in every resample,
// fails. Every metric is a time per operation (bench/probe.ts), so a ratio
// above 1 is slower.
import type { ProbeMetric } from './probe.ts';

export interface GateMetric {
  name: ProbeMetric;
  description: string;
  /** Fail when the whole interval of candidate/base lies above 1 + threshold (0.1 = 10% slower). */
  threshold: number;
}

export interface BaselineFile {
  note: string;
  /** The build the candidate is compared with, unless `vcmdq gate --base REF` names another. */
  base: { commit: string; why: string };
  metrics: GateMetric[];
}

/**
 * Thresholds: the in-thread microbenchmarks vary by a few percent between
 * processes, the cross-thread figures by more (the placement of the two
 * vCPUs can move them 2x between rounds, which widens their interval rather
 * than shifting it, since both builds alternate through the same modes).
 */
export const METRIC_DEFS: readonly GateMetric[] = [
  { name: 'consume_ns', threshold: 0.1, description: 'kernel thread consume step, ns/command, in-thread (copy, vSMMU rewrite, decode, validate, execute, publish)' },
  { name: 'trap_work_ns', threshold: 0.1, description: 'VMM first pass + IOMMU_HWPT_INVALIDATE handler, ns/command, in-thread' },
  { name: 'tput_b64_ns', threshold: 0.15, description: 'doorbell-spin, ns/command at batch 64, model executing every command' },
  { name: 'rtt_doorbell_spin_p50_us', threshold: 0.15, description: 'round trip p50, doorbell-spin (TLBI_NH_VA + CMD_SYNC, CS=SEV)' },
  { name: 'rtt_doorbell_sleep_p50_us', threshold: 0.15, description: 'round trip p50, doorbell-sleep' },
  { name: 'rtt_trap_p50_us', threshold: 0.15, description: 'round trip p50, trap (VMM + iommufd ioctl)' },
];

export const BASELINE_NOTE =
  'Perf gate (vcmdq gate): the candidate is built and run alternately with the base commit below, in the same run; a metric fails when the bootstrap 95% interval of candidate/base lies entirely above 1 + threshold. Change the base (vcmdq gate --set-base REF) in the commit that accepts a speed change, saying why.';

export type Status = 'pass' | 'fail' | 'improved' | 'missing';

export interface Interval {
  /** Ratio of the medians of all rounds. */
  ratio: number;
  lo: number;
  hi: number;
}

export interface Verdict {
  metric: GateMetric;
  status: Status;
  interval: Interval | null;
  baseRounds: number;
  candRounds: number;
  baseMedian: number;
  candMedian: number;
}

/** The median of `xs` (NaN when empty); `scratch` avoids an allocation per bootstrap resample. */
export function median(xs: ArrayLike<number>, scratch = new Float64Array(xs.length)): number {
  const n = xs.length;
  if (n === 0) return NaN;
  for (let k = 0; k < n; k++) scratch[k] = xs[k]!;
  const s = scratch.subarray(0, n).sort();
  return n % 2 === 1 ? s[n >> 1]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

/** mulberry32: a seeded PRNG, so a verdict can be recomputed from the same rounds. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const BOOTSTRAP_RESAMPLES = 4000;
export const CONFIDENCE = 0.95;

/**
 * Percentile bootstrap of median(cand)/median(base): each resample draws the
 * rounds of each build with replacement. Null with fewer than 3 rounds a side.
 */
export function bootstrapRatio(base: readonly number[], cand: readonly number[], seed = 1, resamples = BOOTSTRAP_RESAMPLES): Interval | null {
  const b = base.filter(Number.isFinite);
  const c = cand.filter(Number.isFinite);
  if (b.length < 3 || c.length < 3) return null;
  const rand = prng(seed);
  const rb = new Float64Array(b.length);
  const rc = new Float64Array(c.length);
  const scratch = new Float64Array(Math.max(b.length, c.length));
  const ratios = new Float64Array(resamples);
  for (let k = 0; k < resamples; k++) {
    for (let i = 0; i < b.length; i++) rb[i] = b[Math.floor(rand() * b.length)]!;
    for (let i = 0; i < c.length; i++) rc[i] = c[Math.floor(rand() * c.length)]!;
    ratios[k] = median(rc, scratch) / median(rb, scratch);
  }
  ratios.sort();
  const tail = (1 - CONFIDENCE) / 2;
  return {
    ratio: median(c) / median(b),
    lo: ratios[Math.floor(tail * (resamples - 1))]!,
    hi: ratios[Math.ceil((1 - tail) * (resamples - 1))]!,
  };
}

/** The verdict of one metric from its per-round figures of the two builds. */
export function judge(metric: GateMetric, base: readonly number[], cand: readonly number[], seed = 1): Verdict {
  const interval = bootstrapRatio(base, cand, seed);
  let status: Status = 'missing';
  if (interval !== null) {
    if (interval.lo > 1 + metric.threshold) status = 'fail';
    else if (interval.hi < 1 - metric.threshold) status = 'improved';
    else status = 'pass';
  }
  return {
    metric, status, interval,
    baseRounds: base.filter(Number.isFinite).length, candRounds: cand.filter(Number.isFinite).length,
    baseMedian: median(base.filter(Number.isFinite)), candMedian: median(cand.filter(Number.isFinite)),
  };
}

/** Failing verdicts: a slowdown beyond the threshold, or a metric that could not be compared. */
export function regressions(verdicts: readonly Verdict[]): Verdict[] {
  return verdicts.filter((v) => v.status === 'fail' || v.status === 'missing');
}

/** Checks a parsed baseline file's shape; returns the problem, or null. */
export function baselineProblem(b: unknown): string | null {
  const o = b as Partial<BaselineFile> | null;
  if (o === null || typeof o !== 'object') return 'not a JSON object';
  if (!o.base || typeof o.base.commit !== 'string' || !/^[0-9a-f]{7,40}$/.test(o.base.commit)) return '"base.commit" is not a commit hash';
  if (!Array.isArray(o.metrics) || o.metrics.length === 0) return 'no "metrics" array';
  for (const m of o.metrics) {
    if (!METRIC_DEFS.some((d) => d.name === m?.name)) return `unknown metric ${JSON.stringify(m?.name)}`;
    if (!(typeof m.threshold === 'number' && m.threshold > 0 && m.threshold < 1)) return `metric ${m.name}: threshold must be in (0, 1)`;
  }
  return null;
}
