// Latency statistics for the benchmark. Pure: no clock, no threads, no I/O.
// Samples are microseconds in a Float64Array the timed loop filled in place.

/**
 * The timed loops read the clock with `performance.now()` rather than
 * `process.hrtime.bigint()`. Both read the same monotonic clock (libuv's
 * uv_hrtime, CLOCK_MONOTONIC) and both resolve nanoseconds on Node 20, but
 * hrtime.bigint() returns a heap BigInt per call and the difference needs a
 * third BigInt plus Number(): three allocations per sample, i.e. GC pauses
 * landing inside the distribution being measured. performance.now() returns
 * a double, so a sample is two calls and one subtraction written into a
 * preallocated Float64Array. It costs ~50 ns against ~42 ns per call
 * (node-latency-floor.md §8), a constant that every path and baseline pays
 * alike; the harness reports the measured cost as machine.clock_ns.
 */
export function nowUs(): number {
  return performance.now() * 1000;
}

export interface LatencySummary {
  count: number;
  min: number;
  max: number;
  mean: number;
  /** Sample standard deviation (n - 1 denominator); 0 for fewer than 2 samples. */
  stddev: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
}

/** Ascending copy of the first `n` samples; the caller's buffer stays as recorded. */
export function sortedCopy(samples: Float64Array, n = samples.length): Float64Array {
  if (n < 0 || n > samples.length) throw new RangeError(`sample count ${n} outside 0..${samples.length}`);
  return samples.slice(0, n).sort();
}

/**
 * Nearest-rank percentile of ascending samples: the smallest sample with at
 * least a fraction `q` of the samples at or below it. It never interpolates,
 * so every reported percentile is a latency that was actually observed.
 */
export function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile ${q} outside [0, 1]`);
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** The nearest-rank median of samples in recorded order (sorts a copy). */
export function median(samples: Float64Array): number {
  return percentile(sortedCopy(samples), 0.5);
}

export function summarizeSorted(sorted: Float64Array): LatencySummary {
  const n = sorted.length;
  if (n === 0) {
    return { count: 0, min: NaN, max: NaN, mean: NaN, stddev: NaN, p50: NaN, p90: NaN, p99: NaN, p999: NaN };
  }
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i]!;
  const mean = sum / n;
  let sq = 0;
  for (let i = 0; i < n; i++) {
    const d = sorted[i]! - mean;
    sq += d * d;
  }
  return {
    count: n,
    min: sorted[0]!,
    max: sorted[n - 1]!,
    mean,
    stddev: n > 1 ? Math.sqrt(sq / (n - 1)) : 0,
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    p999: percentile(sorted, 0.999),
  };
}

export function summarize(samples: Float64Array, n = samples.length): LatencySummary {
  return summarizeSorted(sortedCopy(samples, n));
}

export interface CdfPoint {
  /** latency, µs */
  x: number;
  /** fraction of samples <= x */
  y: number;
}

/**
 * Empirical CDF of ascending samples reduced to about `bodyPoints` evenly
 * spaced ranks plus log-spaced ranks towards the maximum, so the tail
 * (p99..max), which is what a latency plot is read for, keeps its shape.
 */
export function cdfPoints(sorted: Float64Array, bodyPoints = 200): CdfPoint[] {
  const n = sorted.length;
  if (n === 0) return [];
  const ranks = new Set<number>();
  const body = Math.max(2, bodyPoints);
  for (let k = 0; k < body; k++) ranks.add(Math.round((k * (n - 1)) / (body - 1)));
  // Tail: ranks whose distance from the end shrinks geometrically.
  for (let gap = (n - 1) / 100; gap >= 1; gap /= 1.25) ranks.add(n - 1 - Math.floor(gap));
  ranks.add(n - 1);
  return [...ranks].sort((a, b) => a - b).map((i) => ({ x: sorted[i]!, y: (i + 1) / n }));
}

/** a / b, or NaN when either side is missing, so a ratio never pretends to exist. */
export function ratio(a: number | undefined, b: number | undefined): number {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return NaN;
  return a / b;
}
