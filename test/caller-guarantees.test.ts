// The caller's contract of GuestQueue.submitWords (written above it in
// src/guest.ts, as Linux states them above arm_smmu_cmdq_issue_cmdlist), on
// both paths, with a DMA agent on another thread:
//  1. page-table stores made before the call are visible to the SMMU before
//     any of its commands runs (the walk after the TLBI sees the new PTE);
//  2. code after a completed CMD_SYNC is ordered after every command before it
//     (a translation asked for after submit returned never sees the old page);
//  3. after a timeout the published commands stay published and still execute.
import { describe, expect, it } from 'vitest';
import { ACCESS } from '../src/model/smmu.ts';
import '../src/trap/path.ts';
import { SyncTimeoutError } from '../src/waiter.ts';
import type { HostOptions } from '../src/host.ts';
import { IOVA, POLL_EXTREMES, evalWorker, expectInvalidationSeen, makeVm, mapPage, outcome, pageOfPa, thrown, withHost } from './doorbell-helpers.ts';

// Words of the test's control SAB.
const EPOCH = 0;
const STOP = 1;
const SEEN = 2;
const VIOLATIONS = 3;
const FIRST_BAD = 4;
const TRANSLATIONS = 5;
// Set by the agent when it stops on an error, with a notify on SEEN: the main
// thread, blocked in Atomics.wait, would not see the worker's exit until its
// wait timed out, and would then report the timeout instead of the error.
const AGENT_FAILED = 6;

// The agent reads EPOCH before each request: a request issued after the main
// thread published epoch e (which it does after submit returned) must see a
// page >= e. Pages are numbered by epoch.
const AGENT = `
  const ctl = new Int32Array(data.ctl);
  const dma = lib.DmaAgent.attach(data.dma);
  try {
    while (Atomics.load(ctl, ${STOP}) === 0) {
      const e = Atomics.load(ctl, ${EPOCH});
      const fault = dma.translateRaw(data.psid, -1, data.iova, ${ACCESS.READ});
      if (fault !== 0) throw new Error('translation fault ' + fault);
      const page = (dma.lastPa - data.ramBase - data.dataIpa) / 4096;
      if (page < e && Atomics.add(ctl, ${VIOLATIONS}, 1) === 0) Atomics.store(ctl, ${FIRST_BAD}, e * 65536 + page);
      Atomics.add(ctl, ${TRANSLATIONS}, 1);
      if (Atomics.load(ctl, ${SEEN}) < e) { Atomics.store(ctl, ${SEEN}, e); Atomics.notify(ctl, ${SEEN}); }
    }
  } catch (err) {
    Atomics.store(ctl, ${AGENT_FAILED}, 1);
    Atomics.notify(ctl, ${SEEN});
    throw err;
  }
`;

describe('invalidate then translate, DMA agent on another thread', () => {
  const hosts: [string, 'doorbell' | 'trap', HostOptions][] = [
    ['spinUs 0', 'doorbell', { spinUs: 0 }], ['spinUs 50', 'doorbell', { spinUs: 50 }], ['spinUs 0', 'trap', { spinUs: 0 }],
    ['adaptive, most aggressive', 'doorbell', POLL_EXTREMES.aggressive], ['adaptive, most lazy', 'doorbell', POLL_EXTREMES.lazy],
  ];
  for (const [name, path, opts] of hosts) {
    it(`${path}: never sees the old page after submit returns (${name})`, async () => {
      await withHost(opts, async (host) => {
        const t = await makeVm(host, 1, 0x10);
        const q = await t.vm.openQueue({ path, log2size: 8 });
        expectInvalidationSeen(t, q, await host.dma());

        const ctl = new Int32Array(new SharedArrayBuffer(64));
        Atomics.store(ctl, EPOCH, 1);
        const agentDma = await host.dma();
        const w = evalWorker(AGENT, {
          ctl: ctl.buffer, dma: agentDma.handle, psid: t.psid, iova: IOVA, ramBase: t.vm.ramBase, dataIpa: 0x10000,
        });
        const done = outcome(w);
        const rounds = 300;
        const modes = ['none', 'sev', 'irq'] as const;
        for (let e = 2; e <= rounds; e++) {
          mapPage(t, IOVA, e);
          const cs = modes[e % 3]!;
          if (e % 5 === 0) await q.invalidateRangeAsync(1, IOVA, 4096, 4096, true, { cs });
          else q.invalidateRange(1, IOVA, 4096, 4096, true, { cs });
          Atomics.store(ctl, EPOCH, e);
          // Progress, not timing: the agent has translated at least once in this epoch. The wait's
          // expected value is the one the loop tested: loading SEEN again for it could read the
          // agent's update to e, whose notify has already gone, and wait for a change that never comes.
          for (let seen = Atomics.load(ctl, SEEN); seen < e && Atomics.load(ctl, AGENT_FAILED) === 0; seen = Atomics.load(ctl, SEEN)) {
            expect(Atomics.wait(ctl, SEEN, seen, 10_000)).not.toBe('timed-out');
          }
          if (Atomics.load(ctl, AGENT_FAILED) !== 0) break;
        }
        Atomics.store(ctl, STOP, 1);
        const out = await done;
        await w.terminate();
        expect(out.error).toBeUndefined();
        expect(Atomics.load(ctl, VIOLATIONS), `first stale: epoch/page ${Atomics.load(ctl, FIRST_BAD)}`).toBe(0);
        expect(Atomics.load(ctl, TRANSLATIONS)).toBeGreaterThanOrEqual(rounds - 1);
      });
    });
  }
});

describe('what a timeout leaves behind', () => {
  // Linux: a CMD_SYNC that times out (arm_smmu_cmdq_poll_until_sync -> -ETIMEDOUT)
  // leaves the queue as it is; the commands before it still execute.
  it('doorbell: after SyncTimeoutError the TLBI and its sync stay published, still execute, and a later sync waits for them', async () => {
    // The kernel thread busy-waits 1 s after each command it executes (injectDelayUs): a 1 ms timeout
    // expires while CONS is still short of the sync.
    await withHost({ spinUs: 0, injectDelayUs: 1_000_000 }, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      const q = await t.vm.openQueue({ log2size: 4 });
      const dma = await host.dma();
      mapPage(t, IOVA, 0);
      expect(pageOfPa(t, dma.translate(t.psid, -1, IOVA).pa)).toBe(0);
      mapPage(t, IOVA, 1);
      const e = thrown(() => q.invalidateRange(1, IOVA, 4096, 4096, true, { timeoutMs: 1 }));
      expect(e).toBeInstanceOf(SyncTimeoutError);
      // Published: PROD is past the TLBI and its CMD_SYNC, as the error says.
      expect((e as SyncTimeoutError).prod).toBe(2);
      expect(q.state().prod).toBe(2);
      q.sync('sev', 30_000);
      expect(q.state()).toMatchObject({ cons: 3, err: 0 });
      expect(pageOfPa(t, dma.translate(t.psid, -1, IOVA, ACCESS.READ, 30_000).pa)).toBe(1);
    });
  });
});
