import { describe, expect, it } from 'vitest';
import { chunkSize, roundOrder } from '../bench/harness.ts';
import { cdfPoints, percentile, ratio, sortedCopy, summarize } from '../bench/stats.ts';

const oneToHundred = Float64Array.from({ length: 100 }, (_, i) => 100 - i); // recorded out of order

describe('bench stats', () => {
  it('nearest-rank percentiles of 1..100 are the ranks themselves', () => {
    const s = summarize(oneToHundred);
    expect(s).toMatchObject({ count: 100, min: 1, max: 100, p50: 50, p90: 90, p99: 99, p999: 100, mean: 50.5 });
    // sample stddev of 1..n = sqrt(n(n+1)/12)
    expect(s.stddev).toBeCloseTo(Math.sqrt((100 * 101) / 12), 10);
  });

  it('summarizes only the first n samples and leaves the buffer as recorded', () => {
    const buf = Float64Array.of(4, 2, 8, 6, 999, 999);
    const s = summarize(buf, 4);
    expect(s).toMatchObject({ count: 4, min: 2, max: 8, mean: 5, p50: 4 });
    expect(s.stddev).toBeCloseTo(Math.sqrt(20 / 3), 12);
    expect(Array.from(buf)).toEqual([4, 2, 8, 6, 999, 999]);
    expect(() => summarize(buf, 7)).toThrow(RangeError);
  });

  it('small and empty inputs do not invent numbers', () => {
    expect(summarize(Float64Array.of(3))).toMatchObject({ count: 1, p50: 3, p999: 3, stddev: 0 });
    expect(Number.isNaN(summarize(new Float64Array(0)).p50)).toBe(true);
    expect(percentile(Float64Array.of(1, 2, 3, 4), 0)).toBe(1);
    expect(percentile(Float64Array.of(1, 2, 3, 4), 0.25)).toBe(1);
    expect(percentile(Float64Array.of(1, 2, 3, 4), 0.26)).toBe(2);
    expect(() => percentile(Float64Array.of(1), 1.5)).toThrow(RangeError);
  });

  it('CDF points are monotone, end at (max, 1) and keep the tail', () => {
    const sorted = sortedCopy(Float64Array.from({ length: 10_000 }, (_, i) => i + 1));
    const pts = cdfPoints(sorted, 50);
    for (let k = 1; k < pts.length; k++) {
      expect(pts[k]!.x).toBeGreaterThanOrEqual(pts[k - 1]!.x);
      expect(pts[k]!.y).toBeGreaterThan(pts[k - 1]!.y);
    }
    expect(pts.at(-1)).toEqual({ x: 10_000, y: 1 });
    expect(pts[0]).toEqual({ x: 1, y: 1e-4 });
    // at least a few points between p99 and p99.9: a 50-point even spread alone would have none
    expect(pts.filter((p) => p.y > 0.99 && p.y < 0.999).length).toBeGreaterThanOrEqual(3);
    expect(cdfPoints(new Float64Array(0))).toEqual([]);
  });

  it('ratios are NaN, not 0 or Infinity, when a side is missing', () => {
    expect(ratio(30, 1.5)).toBe(20);
    expect(ratio(undefined, 2)).toBeNaN();
    expect(ratio(2, 0)).toBeNaN();
  });

  it('rounds split the samples exactly and rotate the path order', () => {
    const sizes = [0, 1, 2, 3, 4, 5, 6].map((r) => chunkSize(5000, 7, r));
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(5000);
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    expect(roundOrder(3, 0)).toEqual([0, 1, 2]);
    expect(roundOrder(3, 1)).toEqual([1, 2, 0]);
    expect(roundOrder(3, 5)).toEqual([2, 0, 1]);
  });
});
