// Cost profiles: every number has a source, the published ones are the
// figures the issue cites, the checker refuses what it should, and the
// node-local builder turns measurements into a profile of the same schema.
import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../src/errors.ts';
import { checkProfile, loadProfile, PROFILE_FILES, SOURCE_KINDS, STEP_NAMES } from '../src/sim/profile.ts';
import { checkServerMicro, nodeLocalNote, nodeLocalProfile, type NodeLocalMeasurements } from '../bench/sim-node-local.ts';
import { splitFixed } from '../bench/sim-micro.ts';

describe('shipped profiles', () => {
  it.each(Object.keys(PROFILE_FILES))('%s: every step has a range, a kind and a source', (name) => {
    const p = loadProfile(name);
    expect(Object.keys(p.steps).sort()).toEqual([...STEP_NAMES].sort());
    for (const s of STEP_NAMES) {
      const c = p.steps[s];
      expect(c.hi_ns, s).toBeGreaterThanOrEqual(c.lo_ns);
      expect(SOURCE_KINDS, s).toContain(c.kind);
      expect(c.source.length, s).toBeGreaterThan(20);
      // An assumption says it is one; a structural zero is a zero.
      if (c.kind === 'assumed') expect(c.source, s).toMatch(/[Nn]o (published|per-step|figure)|[Aa]ssumed|Not measured/);
      if (c.kind === 'structural') expect([c.lo_ns, c.hi_ns], s).toEqual([0, 0]);
    }
  });

  it('kvm-arm64 carries the published kvm-unit-tests exits (issue 13): to user space 1.7-2.3 µs, in-kernel 0.45-0.64 µs', () => {
    const p = loadProfile('kvm-arm64');
    expect(p.steps.exit_user).toMatchObject({ lo_ns: 1700, hi_ns: 2300, kind: 'published' });
    expect(p.steps.exit_user.source).toMatch(/mmio_read_user/);
    expect(p.steps.exit_kernel).toMatchObject({ lo_ns: 450, hi_ns: 640, kind: 'published' });
    expect(p.steps.exit_kernel.source).toMatch(/mmio_read_vgic/);
    expect(p.guest_wait).toBe('poll');
  });

  it('an unknown profile name is an ArgumentError naming the profile', () => {
    expect(() => loadProfile('nope')).toThrow(expect.objectContaining({ argument: 'profile' }) as ArgumentError);
  });
});

describe('checkProfile', () => {
  const good = (): Record<string, unknown> => JSON.parse(JSON.stringify(loadProfile('kvm-arm64'))) as Record<string, unknown>;
  const steps = (d: Record<string, unknown>) => d['steps'] as Record<string, Record<string, unknown>>;

  it('refuses a number without a source, an inverted range, a missing or unknown step, a bad kind or wait mode', () => {
    const cases: [(d: Record<string, unknown>) => void, string][] = [
      [(d) => { delete steps(d)['wake']!['source']; }, 'p.steps.wake.source'],
      [(d) => { steps(d)['notice']!['hi_ns'] = 1; }, 'p.steps.notice.hi_ns'],
      [(d) => { steps(d)['ioctl']!['lo_ns'] = -1; }, 'p.steps.ioctl.lo_ns'],
      [(d) => { delete steps(d)['bql']; }, 'p.steps.bql'],
      [(d) => { steps(d)['teleport'] = { lo_ns: 0, hi_ns: 0, kind: 'assumed', source: 'made up for the test' }; }, 'p.steps.teleport'],
      [(d) => { steps(d)['bql']!['kind'] = 'fitted'; }, 'p.steps.bql.kind'],
      [(d) => { d['guest_wait'] = 'nap'; }, 'p.guest_wait'],
      [(d) => { d['name'] = 'Bad Name'; }, 'p.name'],
    ];
    for (const [spoil, argument] of cases) {
      const d = good();
      spoil(d);
      expect(() => checkProfile(d, 'p')).toThrow(expect.objectContaining({ argument }) as ArgumentError);
    }
    expect(checkProfile(good(), 'p').name).toBe('kvm-arm64');
  });
});

describe('node-local', () => {
  const m: NodeLocalMeasurements = {
    wait_rtt_us: 40, local_wait_rtt_us: 26, spin_rtt_us: 0.5, shape_rtt_us: 0.56, stream_us: 0.3, clock_ns: 45, notify_ns: 35,
    consume_ns_per_cmd: 110, consume_main_ns_per_cmd: 150, trap_ns_per_cmd: 180, submit_ns: 70, submit_cmd_ns: 8, pass_ns: 60, samples: 1000,
    date: '2026-11-28T00:00:00.000Z',
  };

  it('is built from the measurements: hops as half round trips, work per command from the micro steps, each sourced', () => {
    const p = nodeLocalProfile(m);
    expect(p.name).toBe('node-local');
    expect(p.steps.wake).toMatchObject({ lo_ns: 20_000, hi_ns: 20_000, kind: 'measured' });
    expect(p.steps.notice).toMatchObject({ lo_ns: 250, kind: 'measured' });
    expect(p.steps.ioctl.lo_ns).toBe(40_000);
    // The iothread VMM's ioctl goes to the kernel thread on its own CPU: the two-threads-of-one-CPU ping-pong.
    expect(p.steps.ioctl_iothread.lo_ns).toBe(26_000);
    // The kernel thread's steps are the ones timed on the server CPU, not the main thread's (kept for the note only).
    expect(p.steps.kthread_cmd.lo_ns).toBe(110);
    expect(p.steps.hw_cmd.lo_ns).toBe(110);
    expect(nodeLocalNote(m)).toMatch(/110 ns\/cmd \+ 60 ns\/pass on the server CPU \(150 ns\/cmd on the main thread\)/);
    // The emulated hw SMMU polls like a spinning kernel thread: PROD and slot lines to see a write, the line back per publish.
    expect(p.steps.hw_doorbell.lo_ns).toBeCloseTo(250 + 60, 6);
    expect(p.steps.hw_publish.lo_ns).toBeCloseTo(300, 6);
    expect(p.steps.vmm_cmd.lo_ns).toBe(180);
    expect(p.steps.exit_kernel.lo_ns).toBe(35);
    // The parts the first self-check missed, each from its own microbenchmark: the slot line (3-line shape
    // minus the 2-line one), the guest's price of a publish to a poller (the stream), the fixed work per PROD write
    // and per pass, and the timer.
    expect(p.steps.slot_lines.lo_ns).toBeCloseTo(60, 6);
    expect(p.steps.publish_line.lo_ns).toBeCloseTo(300, 6);
    expect(p.steps.guest_submit.lo_ns).toBe(70);
    expect(p.steps.guest_cmd.lo_ns).toBe(8);
    expect(p.steps.kthread_pass.lo_ns).toBe(60);
    expect(p.steps.clock.lo_ns).toBe(45);
    // A 3-line shape measured faster than the 2-line one (noise) gives no negative cost.
    expect(nodeLocalProfile({ ...m, shape_rtt_us: 0.4 }).steps.slot_lines.lo_ns).toBe(0);
    expect(p.guest_wait).toBe('sleep-unless-spinning');
    for (const s of STEP_NAMES) if (p.steps[s].kind === 'measured') expect(p.steps[s].source, s).toMatch(/2026-11-28/);
  });
});

describe('node-local micro steps (their pure parts)', () => {
  it('splits a block of 64 calls of one command and one call of 64 into a fixed cost per call and a cost per command', () => {
    // 64 calls of (100 + 10) ns against one call of 100 + 64 * 10 ns.
    expect(splitFixed(64 * 110, 100 + 64 * 10)).toEqual({ fixed: 100, perCmd: 10 });
    // Noise making the big call look cheaper than one call gives no negative cost.
    expect(splitFixed(64 * 110, 50).perCmd).toBe(0);
  });

  it('takes the server-CPU worker\'s message only when it carries every time, finite and >= 0', () => {
    expect(checkServerMicro({ consume_ns_per_cmd: 40, pass_ns: 90 })).toEqual({ consume_ns_per_cmd: 40, pass_ns: 90 });
    for (const bad of [undefined, null, {}, { consume_ns_per_cmd: 40 }, { consume_ns_per_cmd: NaN, pass_ns: 1 }, { consume_ns_per_cmd: 1, pass_ns: -1 }, { consume_ns_per_cmd: '4', pass_ns: 1 }]) {
      expect(() => checkServerMicro(bad), JSON.stringify(bad)).toThrow(/sim-micro.worker/);
    }
  });
});
