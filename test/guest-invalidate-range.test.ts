// GuestQueue.invalidateRange on real threads, both paths: the issue #9
// findings (a short size, an unaligned iova, size 2^48, bad arguments) with a
// DMA agent's translations as the oracle. The builder's property test with the
// model in-thread is test/invalidate-range.test.ts.
import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../src/errors.ts';
import '../src/trap/path.ts';
import { IOVA, makeVm, mapPage, pageOfPa, refusedArgument, withHost, type TestVm } from './doorbell-helpers.ts';
import type { DmaAgent } from '../src/host.ts';

const PAGES = 4;

/** Map PAGES pages at IOVA to generation `gen` (data pages gen*PAGES + p). */
function mapAll(t: TestVm, gen: number): void {
  for (let p = 0; p < PAGES; p++) mapPage(t, IOVA + p * 4096, gen * PAGES + p);
}

function generations(t: TestVm, dma: DmaAgent): number[] {
  return Array.from({ length: PAGES }, (_, p) => Math.floor(pageOfPa(t, dma.translate(t.psid, -1, IOVA + p * 4096).pa) / PAGES));
}

describe('invalidateRange on real threads', () => {
  for (const path of ['doorbell', 'trap'] as const) {
    for (const ril of [true, false]) {
      it(`${path}, RIL ${ril}: every page overlapping the range is invalidated, bad arguments send nothing`, async () => {
        await withHost({ features: { RIL: ril } }, async (host) => {
          const t = await makeVm(host, 1, 0x10);
          const q = await t.vm.openQueue({ path });
          const dma = await host.dma();
          let gen = 0;
          const remap = (): void => {
            mapAll(t, ++gen);
          };
          mapAll(t, gen);
          expect(generations(t, dma)).toEqual([0, 0, 0, 0]);
          // size 100 at a page-aligned iova: that page (with RIL also the next: a lone page without a TTL
          // hint goes as two, avoiding the Reserved NUM=SCALE=TTL=0 range).
          remap();
          q.invalidateRange(1, IOVA, 100);
          expect(generations(t, dma)).toEqual(ril ? [1, 1, 0, 0] : [1, 0, 0, 0]);
          // iova 0x...800, size 0x1000: two pages.
          remap();
          q.invalidateRange(1, IOVA + 0x800, 0x1000);
          expect(generations(t, dma)).toEqual([2, 2, 0, 0]);
          // The whole 48-bit space: one TLBI_NH_ASID, not an illegal SCALE=36 range that stops the queue.
          remap();
          await q.invalidateRangeAsync(1, 0, 2 ** 48);
          expect(generations(t, dma)).toEqual([3, 3, 3, 3]);
          expect(q.state().err).toBe(0);

          const before = q.state();
          const bad: [string, () => void][] = [
            ['size', () => q.invalidateRange(1, IOVA, 0)],
            ['size', () => q.invalidateRange(1, IOVA, NaN)],
            ['asid', () => q.invalidateRange(65537, IOVA, 4096)],
            ['granule', () => q.invalidateRange(1, IOVA, 4096, 3000)],
            ['granule', () => q.invalidateRange(1, IOVA, 4096, 0)],
            ['iova', () => q.invalidateRange(1, 2 ** 48, 4096)],
          ];
          for (const [arg, call] of bad) expect(refusedArgument(call), arg).toBe(arg);
          const e = await q.invalidateRangeAsync(1, IOVA, -1).catch((x: unknown) => x);
          expect((e as ArgumentError).argument).toBe('size');
          expect(q.state()).toEqual(before);
        });
      });
    }
  }
});
