// The kernel thread's test and bench hooks, driven in-thread and on a fake
// clock: the crash hook's countdown at its boundaries (CTL_CRASH_AFTER), the
// crash hook on a mailbox request, the gate's slowdown knob
// (CTL_SLOWDOWN_NS: calibrated once, N ns of work per command) and the slow-
// SMMU delay (CTL_INJECT_DELAY_US: a heartbeat per clock millisecond). Each is
// a contract other tests rely on (kthread-restart, the gate self-test,
// host-faults), so its arithmetic is pinned here, without real time.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { calibrateWork, work } from '../native-free-fastpath/slowdown.ts';
import { buildCmdSync, buildTlbiNhAsid } from '../src/codec.ts';
import { CS, F } from '../src/fields.ts';
import {
  CTL_CRASH, CTL_CRASH_AFTER, CTL_HEARTBEAT, CTL_INJECT_DELAY_US, CTL_SLOWDOWN_NS, CTL_STATE, GERROR_MSI_CMDQ_ABT, KTHREAD_CTL, KTHREAD_OP,
  MAILBOX_STATE, MB_ARG0, MB_OP, MB_STATE, Q_GERROR, Q_STAT_PASSES, SERVER_STATE, mailboxWords,
} from '../src/layout.ts';
import { ACCESS } from '../src/model/index.ts';
import { addQueue, consPos, makeRig, submit, type Rig, type RigQueue } from './consumer-rig.ts';

// The slowdown's work loop and its calibration, replaced by counters: the knob's arithmetic is what is tested,
// not the core's speed (no timing in tests).
vi.mock('../native-free-fastpath/slowdown.ts', () => ({
  calibrateWork: vi.fn(() => 2), // 2 iterations per ns
  work: vi.fn(() => 1),
}));

const VMID = 5;
const asid = (a: number): Uint32Array => {
  const u = new Uint32Array(4);
  buildTlbiNhAsid(u, a, 0);
  return u;
};
const reg = (rig: Rig, q: RigQueue, w: number): number => Atomics.load(rig.i32, q.regs + w);
const asids = (rig: Rig): number[] => rig.model.log.map((e) => e.f[F.ASID]!);

function rig1(log2 = 3): { rig: Rig; q: RigQueue } {
  const rig = makeRig([{ vmid: VMID, psids: [1], asid: 2 }]);
  const q = addQueue(rig, VMID, log2);
  expect(rig.consumer.pass()).toBe(0); // the new queue's one look
  return { rig, q };
}

/**
 * Give the consumer the hooks run() would (a crash throws), without running
 * its loop: run() over a STOPPING state stores them and returns at once.
 */
function withCrashHook(rig: Rig): void {
  Atomics.store(rig.i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.STOPPING);
  rig.consumer.run({ control: () => {}, crash: () => { throw new Error('crashed'); } });
  Atomics.store(rig.i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.RUNNING);
}

function arm(rig: Rig, after: number): void {
  Atomics.store(rig.i32, KTHREAD_CTL + CTL_CRASH_AFTER, after); // the host writes the countdown, then arms
  Atomics.store(rig.i32, KTHREAD_CTL + CTL_CRASH, 1);
}

afterEach(() => {
  vi.restoreAllMocks();
  vi.mocked(calibrateWork).mockClear();
  vi.mocked(work).mockClear();
});

describe('the crash hook (CTL_CRASH, CTL_CRASH_AFTER: kthread-restart kills the thread inside a pass)', () => {
  it('armed with no countdown: the pass dies before it touches the queue (no command, no pass counted)', () => {
    const { rig, q } = rig1();
    withCrashHook(rig);
    submit(rig, q, [asid(1)]);
    const passes = reg(rig, q, Q_STAT_PASSES);
    arm(rig, 0);
    expect(() => rig.consumer.pass()).toThrow('crashed');
    expect(asids(rig)).toEqual([]);
    expect(reg(rig, q, Q_STAT_PASSES)).toBe(passes);
  });

  it('a countdown equal to what the pass takes dies in that pass, after its last command', () => {
    const { rig, q } = rig1();
    withCrashHook(rig);
    arm(rig, 2);
    submit(rig, q, [asid(1), asid(2)]);
    expect(() => rig.consumer.pass()).toThrow('crashed');
    expect(asids(rig)).toEqual([1, 2]);
    expect(consPos(rig, q)).toBe(0); // executed, not published: a restart runs both again
  });

  it('a countdown longer than the pass runs it whole, publishes it, and counts down, with the hook in place', () => {
    const { rig, q } = rig1();
    withCrashHook(rig);
    arm(rig, 5);
    submit(rig, q, [asid(1)]);
    expect(rig.consumer.pass()).toBe(1);
    expect(consPos(rig, q)).toBe(1);
    expect(rig.i32[KTHREAD_CTL + CTL_CRASH_AFTER]).toBe(4);
    submit(rig, q, [asid(2), asid(3), asid(4), asid(5)]);
    expect(() => rig.consumer.pass()).toThrow('crashed');
    expect(asids(rig)).toEqual([1, 2, 3, 4, 5]);
  });

  it('a fatal command whose next position wraps to 0 still ends the pass there', () => {
    const { rig, q } = rig1(2); // 4 slots: positions 0..7 (wrap bit 4)
    submit(rig, q, [asid(1), asid(2), asid(3), asid(4)]);
    expect(rig.consumer.pass()).toBe(4);
    submit(rig, q, [asid(5), asid(6)]);
    expect(rig.consumer.pass()).toBe(2);
    expect(consPos(rig, q)).toBe(6);
    withCrashHook(rig);
    arm(rig, 2);
    submit(rig, q, [asid(7), asid(8), asid(9)]);
    expect(() => rig.consumer.pass()).toThrow('crashed');
    // The pass ended right after its 2nd command (the one ending at position 0): command 9 was never read.
    expect(asids(rig)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('fires on a mailbox request as on a PROD: the request is never served; unarmed, the same request is', () => {
    const { rig } = rig1();
    withCrashHook(rig);
    const mb = mailboxWords(3);
    rig.consumer.mailboxes.add(3);
    const ask = (): void => {
      rig.i32[mb + MB_OP] = KTHREAD_OP.TRANSLATE;
      rig.i32.set([1, -1, 0x4000_0000, 0, ACCESS.READ], mb + MB_ARG0);
      Atomics.store(rig.i32, mb + MB_STATE, MAILBOX_STATE.REQUEST);
    };
    ask();
    expect(rig.consumer.pass()).toBe(1);
    expect(Atomics.load(rig.i32, mb + MB_STATE)).toBe(MAILBOX_STATE.RESPONSE);
    arm(rig, 3); // even with a countdown: a request has no commands to count
    ask();
    expect(() => rig.consumer.pass()).toThrow('crashed');
    expect(Atomics.load(rig.i32, mb + MB_STATE)).toBe(MAILBOX_STATE.REQUEST);
  });
});

describe('CTL_SLOWDOWN_NS: the gate\'s slower SMMU', () => {
  it('calibrates once, then burns round(ns x iterations per ns) of work per command; 0 burns none; each pass is counted', () => {
    const { rig, q } = rig1();
    const passes = reg(rig, q, Q_STAT_PASSES);
    rig.i32[KTHREAD_CTL + CTL_SLOWDOWN_NS] = 50;
    submit(rig, q, [asid(1), asid(2)]);
    expect(rig.consumer.pass()).toBe(2);
    expect(vi.mocked(calibrateWork)).toHaveBeenCalledTimes(1);
    expect(vi.mocked(work).mock.calls).toEqual([[100], [100]]);
    rig.i32[KTHREAD_CTL + CTL_SLOWDOWN_NS] = 30;
    submit(rig, q, [asid(3)]);
    expect(rig.consumer.pass()).toBe(1);
    expect(vi.mocked(work).mock.calls).toEqual([[100], [100], [60]]);
    rig.i32[KTHREAD_CTL + CTL_SLOWDOWN_NS] = 0;
    submit(rig, q, [asid(4)]);
    expect(rig.consumer.pass()).toBe(1);
    expect(vi.mocked(work)).toHaveBeenCalledTimes(3);
    // Calibrated on the first non-zero value only: a later change reuses it.
    expect(vi.mocked(calibrateWork)).toHaveBeenCalledTimes(1);
    expect(asids(rig)).toEqual([1, 2, 3, 4]);
    expect(reg(rig, q, Q_STAT_PASSES)).toBe(passes + 3);
  });
});

describe('CTL_INJECT_DELAY_US: a slower SMMU (test hook), on a fake clock', () => {
  /** performance.now() advancing 0.5 ms per read; after `limit` reads the host stops the thread. */
  function fakeClock(rig: Rig, limit = 10_000): { reads: () => number } {
    let now = 1000;
    let reads = 0;
    vi.spyOn(performance, 'now').mockImplementation(() => {
      if (++reads === limit) Atomics.store(rig.i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.STOPPING);
      return (now += 0.5);
    });
    return { reads: () => reads };
  }

  it('stalls each command for the delay, beating the heartbeat once per clock millisecond after the first', () => {
    const { rig, q } = rig1();
    const clock = fakeClock(rig);
    const beat = rig.i32[KTHREAD_CTL + CTL_HEARTBEAT]!;
    rig.i32[KTHREAD_CTL + CTL_INJECT_DELAY_US] = 4500;
    submit(rig, q, [asid(1), asid(2)]);
    expect(rig.consumer.pass()).toBe(2);
    expect(consPos(rig, q)).toBe(2);
    // Per command: the deadline read (t), then reads at t+0.5 .. t+4.5 (until t+4.5 is not before it): 10 reads;
    // beats at t+1.5, t+2.5 and t+3.5 (the first a millisecond after the loop's first read).
    expect(clock.reads()).toBe(20);
    expect(rig.i32[KTHREAD_CTL + CTL_HEARTBEAT]! - beat).toBe(6);
  });
});

describe('a CS=IRQ sync whose MSI address translates to PA 0', () => {
  it('writes there: only an unmapped IPA (stage-2 lookup -1) or one past memory aborts (GERROR.MSI_CMDQ_ABT)', () => {
    const rig = makeRig([{ vmid: VMID, psids: [1] }], { stage2: (lo, hi) => (hi === 0 && lo === 0x40 ? 0 : -1) });
    const q = addQueue(rig, VMID, 3);
    const u = new Uint32Array(4);
    buildCmdSync(u, CS.IRQ, 0x40, 0, 0x1234);
    submit(rig, q, [u]);
    expect(rig.consumer.pass()).toBe(1);
    expect(rig.i32[0]).toBe(0x1234);
    expect(reg(rig, q, Q_GERROR) & GERROR_MSI_CMDQ_ABT).toBe(0);
  });
});
