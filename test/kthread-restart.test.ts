// The kernel thread comes back (issue 9 ★): after it dies, restartKernelThread
// (or autoRestart) starts a new one that rebuilds VMs, streams, mailboxes and
// queues from the host's records and resumes every queue from its published
// CONS. Killed at random points of a long stream, waiters blocked at the
// death get their error, the exact commands the issue names run again and no
// others, and no translation is stale after.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeCommand } from '../src/codec.ts';
import { ServerDeadError } from '../src/index.ts';
import { ACCESS } from '../src/model/smmu.ts';
import { queueUsed } from '../src/queue.ts';
import { IOVA, makeVm, mapPage, pageOfPa, refusedArgument, withHost } from './doorbell-helpers.ts';

const HOW = ['exit', 'throw'] as const;
const LOG2SIZE = 6;
/** Guest IPA of marker word 0 (the guest's own half of RAM, above the data pages). */
const MARK_IPA = 0x10_0000;

/** The four words of `cmd`. */
function words(cmd: Parameters<typeof encodeCommand>[0]): number[] {
  const [w0, w1] = encodeCommand(cmd);
  return [Number(w0 & 0xffffffffn), Number(w0 >> 32n), Number(w1 & 0xffffffffn), Number(w1 >> 32n)];
}

/**
 * Where a kill lands in a batch of `syncAt.length` commands: the 1-based
 * position of the last CMD_SYNC at or before the `k`-th command (0 if none).
 * The consumer publishes CONS past each CMD_SYNC as it completes it
 * (completeSync), and past the rest only at the end of its pass, so this is
 * how far the dead thread's CONS got.
 */
function lastSyncAtOrBefore(syncAt: boolean[], k: number): number {
  for (let j = k; j > 0; j--) if (syncAt[j - 1]) return j;
  return 0;
}

describe('restartKernelThread', () => {
  it('killed at random points of a long stream, mid-pass too: exactly the commands consumed but not published as consumed run again', async () => {
    // A round: one batch of TLBI_NH_VA (the round's page, remapped just before) and CMD_SYNC CS=IRQ markers (each
    // writes 1 to a word of its own: spec 4.7.3, the MSI write is the sync's completion), plus the call's own
    // closing CMD_SYNC. A kill is armed before the batch is published, at one of three points:
    //   - 'pass': at the start of the pass, before any command (crashKernelThreadOnNextPass);
    //   - k, the k-th command a TLBI: executed, CONS not yet published past it (the window a restart re-runs);
    //   - k, the k-th command a CMD_SYNC: completed and published, nothing before it runs again.
    const round = fc.record({
      isSync: fc.array(fc.boolean(), { minLength: 1, maxLength: 30 }),
      kill: fc.oneof(
        { arbitrary: fc.constant(null), weight: 3 },
        { arbitrary: fc.record({ at: fc.oneof({ arbitrary: fc.constant('pass' as const), weight: 1 }, { arbitrary: fc.nat(), weight: 3 }), how: fc.constantFrom(...HOW) }), weight: 2 },
      ),
    });
    await fc.assert(fc.asyncProperty(fc.array(round, { minLength: 6, maxLength: 12 }), async (rounds) => {
      await withHost({ heartbeatMs: 10, staleMs: 2000 }, async (host) => {
        const t = await makeVm(host, 1, 0x10);
        const q = await t.vm.openQueue({ log2size: LOG2SIZE });
        const dma = await host.dma();
        const marks = new Int32Array(host.sab, t.vm.ramBase + MARK_IPA, 32 * rounds.length);
        const marker = words({ op: 'CMD_SYNC', cs: 1, msidata: 1, msiaddr: 0n });
        let nextMark = 0;
        for (const [r, { isSync, kill }] of rounds.entries()) {
          const iova = IOVA + 4096 * r;
          mapPage(t, iova, 2 * r);
          expect(pageOfPa(t, dma.translate(t.psid, -1, iova).pa)).toBe(2 * r); // now in the IOTLB
          t.pt.unmap(iova, 4096);
          mapPage(t, iova, 2 * r + 1);
          const syncAt = isSync.includes(false) ? isSync : [...isSync, false]; // at least one TLBI of the page
          const n = syncAt.length;
          const w = new Uint32Array(4 * n);
          const myMarks: number[] = [];
          syncAt.forEach((sync, j) => {
            if (!sync) return w.set(words({ op: 'TLBI_NH_VA', asid: 1, addr: BigInt(iova), leaf: 1 }), 4 * j);
            w.set(marker, 4 * j);
            w[4 * j + 2] = marker[2]! + MARK_IPA + 4 * nextMark; // MSIAddr[31:2]
            myMarks.push(nextMark++);
            return undefined;
          });
          const all = [...syncAt, true]; // the call's closing CMD_SYNC
          const before = q.state();
          // k: commands the dead thread executed; last: how far its published CONS got.
          const k = kill === null ? all.length : kill.at === 'pass' ? 0 : 1 + (kill.at % all.length);
          const last = lastSyncAtOrBefore(all, k);
          if (kill?.at === 'pass') host.crashKernelThreadOnNextPass(kill.how);
          else if (kill !== null) host.crashKernelThreadAfter(k, kill.how);
          const out = await q.submitWordsAsync(w, n, 'sev', 20_000).then(() => 'ok', (e: unknown) => e);
          // The call's sync completed exactly when the thread lived to complete it.
          if (last === all.length) expect(out).toBe('ok');
          else expect(out).toBeInstanceOf(ServerDeadError);
          let reRun = 0;
          if (kill !== null) {
            // Read before the restart (the new thread consumes at once): the call's error came after the thread
            // stopped consuming; a call that completed saw the whole batch executed, and only the crash follows.
            const dead = q.state();
            expect(dead.cmds - before.cmds).toBe(k);
            expect(queueUsed(dead.cons, before.cons, LOG2SIZE)).toBe(last);
            reRun = k - last;
            await host.restartKernelThread(); // terminates the old thread first if it is still on its way to the crash
            // The mailboxes came back too.
            expect(dma.translate(0x10, -1, IOVA, ACCESS.READ).fault).not.toBe(-1);
          }
          q.drain(20_000);
          const after = q.state();
          // Every command once, and the TLBIs between the last published CONS and the kill point once more.
          expect(after.cmds - before.cmds).toBe(all.length + reRun);
          expect(after.syncs - before.syncs).toBe(all.filter(Boolean).length);
          expect(queueUsed(after.cons, before.cons, LOG2SIZE)).toBe(all.length);
          expect(myMarks.map((m) => marks[m])).toEqual(myMarks.map(() => 1));
          expect(pageOfPa(t, dma.translate(t.psid, -1, iova).pa)).toBe(2 * r + 1);
        }
        expect(marks.subarray(nextMark).every((v) => v === 0)).toBe(true);
        expect(q.state().errors).toBe(0);
      });
    // Each kill costs a worker start (~0.3 s idle, up to seconds each at a load of 16 on 2 cores): about
    // 3.6 kills a run, two runs, and a test timeout sized for that load rather than the default 60 s.
    }), { numRuns: 2 });
  }, 180_000);

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

  it('crashKernelThreadAfter refuses a count or a way to die it cannot honour, and arms nothing then', async () => {
    await withHost({}, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      const q = await t.vm.openQueue({ log2size: 4 });
      for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 31]) {
        expect(refusedArgument(() => host.crashKernelThreadAfter(bad))).toBe('crashKernelThreadAfter: commands');
      }
      expect(refusedArgument(() => host.crashKernelThreadAfter(1, 'toString' as never))).toBe('crashKernelThreadAfter: how');
      await q.submitAsync([{ op: 'TLBI_NH_ASID', asid: 1 }], { timeoutMs: 20_000 });
      expect(q.state().cmds).toBe(2);
    });
  });

  it('a stopped host is not restarted', async () => {
    const host = await withHost({}, async (h) => h);
    await expect(host.restartKernelThread()).rejects.toBeInstanceOf(ServerDeadError);
  });
});
