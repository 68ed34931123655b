// The kernel thread comes back (issue 9 ★): after it dies, restartKernelThread
// (or autoRestart) starts a new one that rebuilds VMs, streams, mailboxes and
// queues from the host's records and resumes every queue from its published
// CONS. Killed at random points of a long stream, every published command
// executes exactly once (the crash hook fires between commands, so nothing is
// consumed-but-unpublished: see restartKernelThread for that case), waiters
// blocked at the death get their error, and no translation is stale after.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ServerDeadError } from '../src/index.ts';
import { ACCESS } from '../src/model/smmu.ts';
import { IOVA, makeVm, mapPage, pageOfPa, withHost } from './doorbell-helpers.ts';

const HOW = ['exit', 'throw'] as const;

describe('restartKernelThread', () => {
  it('random kills in a long stream: every published command executes exactly once, every later submission completes', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.record({ n: fc.integer({ min: 1, max: 30 }), kill: fc.oneof({ arbitrary: fc.constant(null), weight: 5 }, { arbitrary: fc.constantFrom(...HOW), weight: 1 }) }), { minLength: 10, maxLength: 25 }),
      async (rounds) => {
        await withHost({ heartbeatMs: 10, staleMs: 2000 }, async (host) => {
          const t = await makeVm(host, 1, 0x10);
          const q = await t.vm.openQueue({ log2size: 6 });
          const dma = await host.dma();
          let published = 0;
          let syncs = 0;
          for (const { n, kill } of rounds) {
            const cmds = Array.from({ length: n }, (_, k) => ({ op: 'TLBI_NH_VA' as const, asid: 1, addr: BigInt(IOVA + 4096 * k), leaf: 1 }));
            if (kill !== null) host.crashKernelThreadOnNextPass(kill);
            const out = await q.submitAsync(cmds, { timeoutMs: 20_000 }).then(() => 'ok', (e: unknown) => e);
            // One PROD store published the commands and their sync, whether or not the thread lived to consume them.
            published += n + 1;
            syncs++;
            if (kill === null) {
              expect(out).toBe('ok');
              continue;
            }
            // The crash hook fires after the PROD load, so this submission met a dying thread.
            expect(out).toBeInstanceOf(ServerDeadError);
            await host.restartKernelThread();
            // The mailboxes came back too.
            expect(dma.translate(0x10, -1, IOVA, ACCESS.READ).fault).not.toBe(-1);
          }
          q.drain(20_000);
          const st = q.state();
          expect(st.cons).toBe(st.prod);
          expect(st.cmds).toBe(published);
          expect(st.syncs).toBe(syncs);
          expect(st.errors).toBe(0);
        });
      },
    // Each kill costs a worker start (~0.3 s idle, seconds under the suite's load): a few per run, two runs.
    ), { numRuns: 2 });
  });

  it('caches start empty: a mapping changed while the thread was dead translates to the new page, and invalidations work after', async () => {
    await withHost({ heartbeatMs: 10, staleMs: 200 }, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      const q = await t.vm.openQueue({ log2size: 4 });
      const dma = await host.dma();
      mapPage(t, IOVA, 1);
      expect(pageOfPa(t, dma.translate(0x10, -1, IOVA).pa)).toBe(1); // now cached in the IOTLB
      await host.terminateKernelThread();
      // The guest remaps while nobody can invalidate: the old IOTLB entry dies with the thread.
      t.pt.unmap(IOVA, 4096);
      mapPage(t, IOVA, 2);
      await host.restartKernelThread();
      expect(pageOfPa(t, dma.translate(0x10, -1, IOVA).pa)).toBe(2);
      // The rebuilt queue invalidates: remap again and the translation follows.
      t.pt.unmap(IOVA, 4096);
      mapPage(t, IOVA, 3);
      q.invalidateRange(1, IOVA, 4096);
      expect(pageOfPa(t, dma.translate(0x10, -1, IOVA).pa)).toBe(3);
    });
  });

  it('a trap queue works again after the kernel thread behind its VMM is restarted', async () => {
    await withHost({ heartbeatMs: 10, staleMs: 200 }, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      const q = await t.vm.openQueue({ path: 'trap', log2size: 4 });
      q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }]);
      await host.terminateKernelThread();
      expect(() => q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }])).toThrow(ServerDeadError);
      await host.restartKernelThread();
      q.skipFaultingCommand();
      q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }]);
    });
  });

  it('autoRestart: a waiter gets its error, the host restarts the thread itself, and the command that died in flight runs again', async () => {
    // Each command takes 1 s after it executed and before CONS is published, so the waiter is surely pending when the thread dies.
    await withHost({ autoRestart: 1, injectDelayUs: 1_000_000 }, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      const q = await t.vm.openQueue({ log2size: 4 });
      const first = q.submitAsync([{ op: 'TLBI_NH_ASID', asid: 1 }], { timeoutMs: 20_000 }).then(() => 'ok', (e: unknown) => e);
      while (q.state().cmds === 0) await new Promise((r) => setImmediate(r)); // bounded by the test timeout: the TLBI is being consumed
      await host.terminateKernelThread();
      expect(await first).toBeInstanceOf(ServerDeadError);
      expect(host.lastRestart).not.toBeNull();
      await host.lastRestart;
      await q.submitAsync([{ op: 'TLBI_NH_ASID', asid: 1 }], { timeoutMs: 20_000 });
      // The TLBI consumed but not published as consumed ran again (harmless for an invalidation): 1 + 1 + sync, then TLBI + sync.
      expect(q.state().cmds).toBe(5);
      expect(q.state().syncs).toBe(2);
    });
  });

  it('a stopped host is not restarted', async () => {
    const host = await withHost({}, async (h) => h);
    await expect(host.restartKernelThread()).rejects.toBeInstanceOf(ServerDeadError);
  });
});
