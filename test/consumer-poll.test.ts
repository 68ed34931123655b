// The consumer's idle path driven in-thread with a recording policy: what it
// tells the polling policy (src/poll-policy.ts) and when, and the guest's
// "I will block" hint (layout.ts Q_IDLE_HINT) as the consumer reads it.
// run() returns once STATE leaves RUNNING, so each policy call can end the
// run by setting STOPPING: no thread, no clock in the assertions.
import { describe, expect, it, vi } from 'vitest';
import { buildTlbiNhAsid } from '../src/codec.ts';
import {
  CONFIG_EN, CTL_CRASH, CTL_CTRL, CTL_HEARTBEAT, CTL_HEARTBEAT_MS, CTL_KICKED_AT, CTL_SLEEPING, CTL_STAT_SLEEPS, CTL_STATE, IDLE_HINT_SET, KTHREAD_CTL, Q_CONFIG, Q_IDLE_HINT,
  Q_PROD, SERVER_STATE, kick,
} from '../src/layout.ts';
import type { PollPolicy, PollPolicyName } from '../src/poll-policy.ts';
import { VINTF_WORDS, writeVintf } from '../src/vintf.ts';
import { SPIN_CLOCK_EVERY } from '../src/waiter.ts';
import { addQueue, consPos, makeRig, submit, type Rig, type RigQueue } from './consumer-rig.ts';

const VMID = 5;
const STOP = (rig: Rig): void => {
  Atomics.store(rig.i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.STOPPING);
};
const hooks = { control: (): void => {}, crash: (): never => { throw new Error('no crash armed'); } };

/** Records every call; `onIdle(n)` answers the n-th idle() (0-based) and may stop the run. */
class RecordingPolicy implements PollPolicy {
  readonly name: PollPolicyName = 'adaptive';
  spunNs = 0;
  readonly hints: boolean[] = [];
  readonly arrivals: boolean[] = [];
  /** The nowNs of each idle() and arrived() call. */
  readonly idleAt: number[] = [];
  readonly arrivedAt: number[] = [];
  constructor(readonly usesGuestHint: boolean, private readonly onIdle: (n: number) => number) {}
  idle(nowNs: number, guestIdle: boolean): number {
    this.idleAt.push(nowNs);
    this.hints.push(guestIdle);
    return this.onIdle(this.hints.length - 1);
  }
  arrived(nowNs: number, slept: boolean): void {
    this.arrivedAt.push(nowNs);
    this.arrivals.push(slept);
  }
}

function rigWith(policy: PollPolicy, queues = 1): { rig: Rig; qs: RigQueue[] } {
  const rig = makeRig([{ vmid: VMID, psids: [1], asid: 2 }], { policy });
  return { rig, qs: Array.from({ length: queues }, () => addQueue(rig, VMID, 3)) };
}

const cmd = (): Uint32Array => {
  const u = new Uint32Array(4);
  buildTlbiNhAsid(u, 1, 0);
  return u;
};

/** The guest side of GuestQueue.announceIdle: the hint names the PROD published so far. */
const announce = (rig: Rig, q: RigQueue): void => {
  Atomics.store(rig.i32, q.regs + Q_IDLE_HINT, Atomics.load(rig.i32, q.regs + Q_PROD) | IDLE_HINT_SET);
};

function runOnce(rig: Rig): void {
  Atomics.store(rig.i32, KTHREAD_CTL + CTL_STATE, SERVER_STATE.RUNNING);
  rig.consumer.run(hooks);
}

describe('the consumer tells its policy about idle periods', () => {
  it('goes idle only after a pass finds nothing; a budget of 0 sleeps at once, and the re-check that finds work is an arrival while awake', () => {
    let rig!: Rig;
    // The first idle() stops the run: the sleep's re-check then sees STATE move (work) and does not sleep.
    const p = new RecordingPolicy(true, () => {
      STOP(rig);
      return 0;
    });
    const made = rigWith(p);
    rig = made.rig;
    const q = made.qs[0]!;
    submit(rig, q, [cmd(), cmd()]);
    runOnce(rig);
    expect(consPos(rig, q)).toBe(2);
    expect(p.hints).toEqual([false]);
    expect(p.arrivals).toEqual([false]);
    expect(rig.i32[KTHREAD_CTL + CTL_STAT_SLEEPS]).toBe(0);
  });

  it('a budget > 0 polls: work seen while polling is an arrival while awake, and the thread does not sleep', () => {
    let rig!: Rig;
    const p = new RecordingPolicy(true, () => {
      STOP(rig); // the poll's first look sees it
      return 1e12;
    });
    rig = rigWith(p).rig;
    runOnce(rig);
    expect(p.hints).toEqual([false]);
    expect(p.arrivals).toEqual([false]);
    expect(rig.i32[KTHREAD_CTL + CTL_STAT_SLEEPS]).toBe(0);
  });

  it('a sleep that times out without work is no arrival: the period stays open until the next idle()', () => {
    let rig!: Rig;
    const p = new RecordingPolicy(true, (n) => {
      if (n === 1) STOP(rig);
      return 0;
    });
    rig = rigWith(p).rig;
    rig.i32[KTHREAD_CTL + CTL_HEARTBEAT_MS] = 1; // the sleep ends by its timeout (nobody kicks)
    runOnce(rig);
    expect(rig.i32[KTHREAD_CTL + CTL_STAT_SLEEPS]).toBe(1);
    expect(p.hints).toEqual([false, false]);
    expect(p.arrivals).toEqual([false]);
  });
});

/** run() once, calling `onLoad(word)` for every Atomics.load of the rig's memory. */
function runRecordingLoads(rig: Rig, onLoad: (word: number) => void): void {
  const load = Atomics.load;
  Atomics.load = ((ta: Int32Array, w: number) => {
    if (ta === rig.i32) onLoad(w);
    return load(ta, w);
  }) as typeof Atomics.load;
  try {
    runOnce(rig);
  } finally {
    Atomics.load = load;
  }
}

/** run() once, calling `onLoad` for every Atomics.load of a queue's Q_IDLE_HINT (how many queues an idle scan read). */
function runCountingHintLoads(rig: Rig, qs: RigQueue[], onLoad: () => void): void {
  const hintWords = new Set(qs.map((q) => q.regs + Q_IDLE_HINT));
  runRecordingLoads(rig, (w) => {
    if (hintWords.has(w)) onLoad();
  });
}

describe("the guest's idle hint (Q_IDLE_HINT)", () => {
  const hintSeen = (setup: (rig: Rig, qs: RigQueue[]) => void, queues = 1, usesGuestHint = true): boolean[] => {
    let rig!: Rig;
    const p = new RecordingPolicy(usesGuestHint, () => {
      STOP(rig);
      return 0;
    });
    const made = rigWith(p, queues);
    rig = made.rig;
    setup(rig, made.qs);
    runOnce(rig);
    return p.hints;
  };

  it('holds while PROD is where the guest announced it', () => {
    expect(hintSeen((rig, [q]) => announce(rig, q!))).toEqual([true]);
    expect(hintSeen((rig, [q]) => {
      submit(rig, q!, [cmd()]);
      announce(rig, q!);
    })).toEqual([true]);
  });

  it('is cancelled by the next publish, with no store of its own', () => {
    expect(hintSeen((rig, [q]) => {
      announce(rig, q!);
      submit(rig, q!, [cmd()]);
    })).toEqual([false]);
  });

  it('counts only when every enabled queue announced; a disabled queue does not count, no queue at all is no hint', () => {
    expect(hintSeen((rig, [a]) => announce(rig, a!), 2)).toEqual([false]);
    expect(hintSeen((rig, [a, b]) => {
      announce(rig, a!);
      announce(rig, b!);
    }, 2)).toEqual([true]);
    expect(hintSeen((rig, [a, b]) => {
      announce(rig, a!);
      Atomics.store(rig.i32, b!.regs + Q_CONFIG, 0);
    }, 2)).toEqual([true]);
    expect(hintSeen((rig, [a]) => {
      announce(rig, a!);
      Atomics.store(rig.i32, a!.regs + Q_CONFIG, 0);
    })).toEqual([false]);
    expect(hintSeen(() => {}, 0)).toEqual([false]);
    // Re-enabled: its hint counts again.
    expect(hintSeen((rig, [a]) => {
      announce(rig, a!);
      Atomics.store(rig.i32, a!.regs + Q_CONFIG, CONFIG_EN);
    })).toEqual([true]);
  });

  it('at many queues, an idle transition starts where the last one found a queue without a hint: one look while that queue stays busy', () => {
    let rig!: Rig;
    let hintLoads = 0;
    const perIdle: number[] = [];
    const p = new RecordingPolicy(true, (n) => {
      perIdle.push(hintLoads);
      hintLoads = 0;
      if (n === 1) STOP(rig);
      return 0;
    });
    const made = rigWith(p, 60);
    rig = made.rig;
    made.qs.forEach((q, k) => k !== 30 && announce(rig, q));
    rig.i32[KTHREAD_CTL + CTL_HEARTBEAT_MS] = 1; // the first sleep ends by its timeout: a second idle transition
    runCountingHintLoads(rig, made.qs, () => hintLoads++);
    expect(p.hints).toEqual([false, false]);
    // The first scan reads queues 0..30, the second only queue 30 (still without a hint).
    expect(perIdle).toEqual([31, 1]);
    // The answer is still about every queue: 30 announces, and another queue that has published since its hint is found.
    expect(hintSeen((r, qs) => {
      qs.forEach((q) => announce(r, q));
      submit(r, qs[5]!, [cmd()]);
    }, 60)).toEqual([false]);
  });

  it('the scan wraps past the last queue: started at queue 30, it still finds queue 10 busy', () => {
    let rig!: Rig;
    let qs!: RigQueue[];
    let hintLoads = 0;
    const perIdle: number[] = [];
    const p = new RecordingPolicy(true, (n) => {
      perIdle.push(hintLoads);
      hintLoads = 0;
      if (n === 0) {
        announce(rig, qs[30]!); // 30 goes idle, and 10 publishes after its hint
        submit(rig, qs[10]!, [cmd()]);
      } else STOP(rig);
      return 0;
    });
    ({ rig, qs } = rigWith(p, 60));
    qs.forEach((q, k) => k !== 30 && announce(rig, q));
    runCountingHintLoads(rig, qs, () => hintLoads++);
    expect(p.hints).toEqual([false, false]);
    // The first scan reads 0..30; the second starts at 30 and reads 30..59, then 0..10.
    expect(perIdle).toEqual([31, 41]);
    expect(consPos(rig, qs[10]!)).toBe(1);
  });

  it('is not read for a policy that ignores it (fixed, halt-poll)', () => {
    expect(hintSeen((rig, [q]) => announce(rig, q!), 1, false)).toEqual([false]);
  });
});

/** What run() did on its idle path: each clock read (and how many hasWork() polls ran before it), the WAKE waits, and
 * the stores of CTL_SLEEPING = 1 (the thread telling producers it may sleep: each costs a kicking producer a notify). */
interface IdleTrace {
  clock: number[];
  pollsAtClock: number[];
  polls: number;
  waits: number;
  sleepAnnounced: number;
}

/**
 * run() on a fake idle path: performance.now() advances 1 ms per read, the
 * WAKE wait returns at once with the thread stopped by the host, and every
 * poll (pollWork or hasWork) is counted (`onPoll(n)` runs before the n-th answers). The
 * 100000th poll or clock read stops the thread, so a spin or an idle loop
 * that never ends ends the run (and the test fails instead of hanging).
 */
function runIdle(rig: Rig, onPoll: (n: number) => void = () => {}, onWait: () => void = () => {}): IdleTrace {
  const t: IdleTrace = { clock: [], pollsAtClock: [], polls: 0, waits: 0, sleepAnnounced: 0 };
  let now = 1000;
  const clock = vi.spyOn(performance, 'now').mockImplementation(() => {
    if (t.clock.length === 10_000) STOP(rig); // as many idle transitions: a loop that never sleeps ends too
    t.clock.push(++now);
    t.pollsAtClock.push(t.polls);
    return now;
  });
  const { wait, store } = Atomics;
  Atomics.wait = ((): 'ok' => {
    t.waits++;
    onWait();
    STOP(rig);
    return 'ok';
  }) as typeof Atomics.wait;
  Atomics.store = ((ta: Int32Array, i: number, v: number) => {
    if (ta === rig.i32 && i === KTHREAD_CTL + CTL_SLEEPING && v === 1) t.sleepAnnounced++;
    return store(ta, i, v);
  }) as typeof Atomics.store;
  // Both ways the thread looks for work count as polls: pollWork (the spin's, peeking at the pending words) and
  // hasWork (the sleep's re-check, loading them atomically).
  const counted = (look: () => boolean) => (): boolean => {
    t.polls++;
    if (t.polls === 100_000) STOP(rig);
    onPoll(t.polls);
    return look();
  };
  const c = rig.consumer as unknown as { hasWork: () => boolean; pollWork: () => boolean };
  c.hasWork = counted(c.hasWork.bind(rig.consumer));
  c.pollWork = counted(c.pollWork.bind(rig.consumer));
  try {
    runOnce(rig);
  } finally {
    clock.mockRestore();
    Object.assign(Atomics, { wait, store });
  }
  return t;
}

describe('the idle poll and the sleep, on a fake clock (io_uring SQPOLL: poll sq_thread_idle, then sleep)', () => {
  const E = SPIN_CLOCK_EVERY;

  it('a budget is polled SPIN_CLOCK_EVERY times per clock read until the clock passes it, then the thread sleeps; the policy hears the clock in ns', () => {
    let rig!: Rig;
    const p = new RecordingPolicy(false, () => 5e6);
    rig = rigWith(p).rig;
    const t = runIdle(rig);
    // Idle at 1001 ms; the spin reads the clock after every E polls, 1002 .. 1007, and the first read past 1001 + 5
    // ends it; the sleep's re-check is one more poll; woken at 1008 (stopped by the host: work), an arrival after a sleep.
    expect(t.clock).toEqual([1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008]);
    expect(t.pollsAtClock).toEqual([0, E, 2 * E, 3 * E, 4 * E, 5 * E, 6 * E, 6 * E + 1]);
    expect(t.waits).toBe(1);
    expect(t.sleepAnnounced).toBe(1);
    expect(p.idleAt).toEqual([1001e6]);
    expect(p.arrivals).toEqual([true]);
    expect(p.arrivedAt).toEqual([1008e6]);
    expect(rig.i32[KTHREAD_CTL + CTL_STAT_SLEEPS]).toBe(1);
  });

  it('a budget of 0 sleeps at once: no poll but the sleep\'s re-check, no clock read but the two that bound the sleep', () => {
    let rig!: Rig;
    const p = new RecordingPolicy(false, () => 0);
    rig = rigWith(p).rig;
    const t = runIdle(rig);
    expect(t.clock).toEqual([1001, 1002]);
    expect(t.pollsAtClock).toEqual([0, 1]);
    expect(t.waits).toBe(1);
    expect(p.arrivedAt).toEqual([1002e6]);
    expect(p.arrivals).toEqual([true]);
  });

  it('a sleep ended by a kick: the arrival is the first kick\'s time (CTL_KICKED_AT), not the wake-up\'s; a kick that found the thread awake stamps nothing', () => {
    let rig!: Rig;
    const p = new RecordingPolicy(false, () => 0);
    rig = rigWith(p).rig;
    kick(rig.i32, KTHREAD_CTL); // awake: no stamp
    expect(Atomics.load(rig.i32, KTHREAD_CTL + CTL_KICKED_AT)).toBe(0);
    // Two producers kick the sleeping thread (clock 1002, then 1003); it wakes at 1004.
    const t = runIdle(rig, () => {}, () => {
      kick(rig.i32, KTHREAD_CTL);
      kick(rig.i32, KTHREAD_CTL);
    });
    expect(t.clock).toEqual([1001, 1002, 1003, 1004]);
    expect(p.arrivals).toEqual([true]);
    // The first kick's reading, to the µs clockUs keeps (the fake clock's ms plus a fractional timeOrigin).
    expect(Math.abs(p.arrivedAt[0]! - 1002e6)).toBeLessThanOrEqual(500);
    // The next sleep starts from a clear word.
    expect(Atomics.load(rig.i32, KTHREAD_CTL + CTL_KICKED_AT)).not.toBe(0);
    runIdle(rig);
    expect(Atomics.load(rig.i32, KTHREAD_CTL + CTL_KICKED_AT)).toBe(0);
  });

  it('work seen while polling ends the poll without a sleep, or its announcement; its arrival is the last clock read', () => {
    let rig!: Rig;
    const p = new RecordingPolicy(false, (n) => {
      if (n === 1) STOP(rig); // the next idle's first poll sees it
      return n === 0 ? 5e6 : 1e12;
    });
    const made = rigWith(p);
    rig = made.rig;
    const q = made.qs[0]!;
    const t = runIdle(rig, (n) => n === 100 && submit(rig, q, [cmd()]));
    expect(consPos(rig, q)).toBe(1);
    expect(t.waits).toBe(0);
    expect(t.sleepAnnounced).toBe(0);
    // The clock was read at the idle (1001) and after poll E (1002), the second idle at 1003.
    expect(t.clock).toEqual([1001, 1002, 1003]);
    expect(p.idleAt).toEqual([1001e6, 1003e6]);
    expect(p.arrivedAt).toEqual([1002e6, 1003e6]);
    expect(p.arrivals).toEqual([false, false]);
    expect(rig.i32[KTHREAD_CTL + CTL_STAT_SLEEPS]).toBe(0);
  });
});

describe('a hardware VCMDQ keeps the thread polling (the SMMU polls an enabled VCMDQ; its guest rings no doorbell)', () => {
  /**
   * A rig whose one queue is a hw VCMDQ (enabled or not), with a policy that
   * stops the thread at its first idle(); the host also stops it after its
   * third pass, so a thread that polls on ends there. `passes()` counts them.
   */
  function hwRig(enabled: boolean): { rig: Rig; p: RecordingPolicy; hw: RigQueue; passes: () => number } {
    let rig!: Rig;
    const p = new RecordingPolicy(false, () => {
      STOP(rig);
      return 0;
    });
    rig = makeRig([{ vmid: VMID, psids: [1], asid: 2 }], { policy: p });
    const vintf = rig.w.layout.alloc(VINTF_WORDS * 4, 64) >>> 2;
    writeVintf(rig.i32, vintf, VMID, [{ vsid: 0, psid: 1 }]);
    const hw = addQueue(rig, VMID, 3, vintf);
    if (!enabled) Atomics.store(rig.i32, hw.regs + Q_CONFIG, 0);
    let passes = 0;
    const pass = rig.consumer.pass.bind(rig.consumer);
    rig.consumer.pass = (): number => {
      const work = pass();
      if (++passes === 3) STOP(rig);
      return work;
    };
    return { rig, p, hw, passes: () => passes };
  }

  it('while one is enabled the loop never goes idle (no idle(), no sleep); disabled, it goes idle as usual', () => {
    for (const enabled of [true, false]) {
      const { rig, p, passes } = hwRig(enabled);
      const beat0 = rig.i32[KTHREAD_CTL + CTL_HEARTBEAT]!;
      runOnce(rig);
      expect([passes(), p.hints]).toEqual(enabled ? [3, []] : [1, [false]]);
      // HEARTBEAT moves once per pass (liveness), whoever bumps it how.
      expect(rig.i32[KTHREAD_CTL + CTL_HEARTBEAT]! - beat0).toBe(passes());
      expect(rig.i32[KTHREAD_CTL + CTL_STAT_SLEEPS]).toBe(0);
    }
  });

  it('the loop\'s own looks between passes are peeks: CTRL is its one Atomics.load per iteration; STATE, the crash hook and the enabled VCMDQ\'s CONFIG are read plainly (layout.ts, "Peeks")', () => {
    const { rig, hw, passes } = hwRig(true);
    const loads: number[] = [];
    runRecordingLoads(rig, (w) => loads.push(w));
    expect(passes()).toBe(3);
    const count = (w: number): number => loads.filter((i) => i === w).length;
    // Three passes and the look that sees STOPPING: four iterations, one CTRL load each.
    expect([CTL_CTRL, CTL_STATE, CTL_CRASH].map((w) => count(KTHREAD_CTL + w))).toEqual([4, 0, 0]);
    expect(count(hw.regs + Q_CONFIG)).toBe(0);
  });
});
