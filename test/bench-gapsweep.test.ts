// The gap sweep's pure parts (bench/scenario-gapsweep.ts): which hosts it
// compares and that each path's host really runs the policy its name says.
// Shape only, never speed.
import { describe, expect, it } from 'vitest';
import { SPIN_US, hostOptionsOf } from '../bench/queue-api.ts';
import { GAPS_US, GAP_SPIN_BUDGETS_US, coreShare, gapHosts } from '../bench/scenario-gapsweep.ts';
import { PATHS } from '../bench/types.ts';
import type { HostOptions } from '../src/host.ts';
import { CTL_SPIN_US, KTHREAD_CTL } from '../src/layout.ts';
import { HALT_POLL_DEFAULTS } from '../src/poll-policy.ts';
import { withHost } from './doorbell-helpers.ts';

describe('gap sweep', () => {
  it('covers gaps 0-1000 µs against fixed budgets 0, 10, 50, 200 µs, the adaptive poller and KVM halt polling', () => {
    expect([...GAPS_US]).toEqual([0, 5, 20, 100, 1000]);
    expect([...GAP_SPIN_BUDGETS_US]).toEqual([0, 10, 50, 200]);
    expect(gapHosts()).toEqual([
      { name: 'doorbell-sleep', params: { spin_us: 0 } },
      { name: 'doorbell-spin', params: { spin_us: 10 } },
      { name: 'doorbell-spin', params: { spin_us: 50 } },
      { name: 'doorbell-spin', params: { spin_us: 200 } },
      { name: 'doorbell-adaptive', params: { poll: 'adaptive' } },
      { name: 'doorbell-haltpoll', params: { poll: 'halt-poll' } },
    ]);
    expect(PATHS).toContain('doorbell-adaptive');
  });

  it('idle CPU as a share of one core', () => {
    expect(coreShare(10_000, 1000)).toBe(1);
    expect(coreShare(0, 1000)).toBe(0);
  });

  it("each host of the sweep runs the policy its row names (the gate's spinUs paths unchanged)", async () => {
    const expected = [
      { policy: 'fixed', spinNs: 0 }, { policy: 'fixed', spinNs: 10_000 }, { policy: 'fixed', spinNs: 50_000 },
      { policy: 'fixed', spinNs: 200_000 }, { policy: 'adaptive' }, { policy: 'halt-poll', ...HALT_POLL_DEFAULTS },
    ];
    const hosts = gapHosts();
    for (let k = 0; k < hosts.length; k++) {
      const { name, params } = hosts[k]!;
      const spinUs = params['spin_us'];
      const opts = hostOptionsOf(name, typeof spinUs === 'number' ? { spinUs } : {}) as HostOptions;
      await withHost(opts, async (host) => {
        expect(host.poll).toMatchObject(expected[k]!);
      });
    }
    expect(hostOptionsOf('doorbell-spin')).toEqual({ spinUs: SPIN_US });
    expect(hostOptionsOf('doorbell-sleep')).toEqual({ spinUs: 0 });
    expect(hostOptionsOf('trap', { slowdownNs: 50 })).toEqual({ spinUs: 0 });
    expect(hostOptionsOf('doorbell-adaptive', { slowdownNs: 50 })).toEqual({ slowdownNs: 50 });
    expect(hostOptionsOf('doorbell-spin', { bypassModel: true })).toEqual({ spinUs: SPIN_US, model: { bypass: true } });
    // doorbell-adaptive's guests spin as doorbell-spin's do, so the two differ only in the kernel thread.
    await withHost(hostOptionsOf('doorbell-adaptive') as HostOptions, async (host) => {
      expect(host.i32[KTHREAD_CTL + CTL_SPIN_US]).toBe(SPIN_US);
    });
  });
});
