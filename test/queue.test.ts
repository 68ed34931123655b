import { describe, expect, it } from 'vitest';
import {
  queueConsumed, queueEmpty, queueFree, queueFull, queueIdx, queueIncProd, queuePosMask, queueUsed, queueWrap,
} from '../src/queue.ts';

// Brute-force model: positions are unbounded counters; the register holds
// them modulo two laps. Every (cons, prod) register pair a legal producer can
// reach is generated from a counter pair, with what the model says about it.
function reachable(log2size: number): Map<string, number> {
  const size = 1 << log2size;
  const laps = 2 * size;
  const used = new Map<string, number>();
  for (let c = 0; c < laps; c++) {
    for (let k = 0; k <= size; k++) used.set(`${(c + k) % laps},${c}`, k);
  }
  return used;
}

const ERR_BITS = [0, 0x01 << 24, 0x7f << 24];

describe('queue arithmetic, exhaustive for LOG2SIZE 0..4', () => {
  for (let log2 = 0; log2 <= 4; log2++) {
    it(`LOG2SIZE ${log2}`, () => {
      const size = 1 << log2;
      const laps = 2 * size;
      const model = reachable(log2);
      let checked = 0;
      for (let prod = 0; prod < laps; prod++) {
        for (let cons = 0; cons < laps; cons++) {
          for (const err of ERR_BITS) {
            const consReg = cons | err;
            const used = model.get(`${prod},${cons}`);
            if (used === undefined) continue;
            expect(queueUsed(prod, consReg, log2)).toBe(used);
            expect(queueEmpty(prod, consReg, log2)).toBe(used === 0);
            expect(queueFull(prod, consReg, log2)).toBe(used === size);
            expect(queueFree(prod, consReg, log2)).toBe(size - used);
            checked++;
          }
        }
      }
      expect(checked).toBe(laps * (size + 1) * ERR_BITS.length);
    });

    it(`LOG2SIZE ${log2}: increment, idx/wrap and consumed`, () => {
      const size = 1 << log2;
      const laps = 2 * size;
      for (let p = 0; p < laps; p++) {
        expect(queueIdx(p, log2)).toBe(p % size);
        expect(queueWrap(p, log2)).toBe(Math.floor(p / size));
        for (let n = 0; n <= size; n++) expect(queueIncProd(p, n, log2)).toBe((p + n) % laps);
        // CONS within one lap either side of PROD: consumed exactly when it is not behind.
        for (let d = -size; d < size; d++) {
          const c = (((p + d) % laps) + laps) % laps;
          expect(queueConsumed(c | (1 << 24), p, log2)).toBe(d >= 0);
        }
      }
    });
  }

  it('the worked example of smmu-facts §2.2 (QS=3, PROD=0x0A)', () => {
    expect(queueIdx(0x0a, 3)).toBe(2);
    expect(queueWrap(0x0a, 3)).toBe(1);
    expect(queueFull(0x0a, 0x02, 3)).toBe(true);
    expect(queueEmpty(0x0a, 0x0a, 3)).toBe(true);
    expect(queueFree(0x0a, 0x05, 3)).toBe(3);
  });

  it('PROD bits above WR_WRAP are RES0: the position mask (what both consumers apply, as QEMU) drops them', () => {
    expect((0x0a | 0x10) & queuePosMask(3)).toBe(0x0a);
    expect((0x0a | (1 << 19)) & queuePosMask(3)).toBe(0x0a);
  });
});
