// The consumer's idle path driven in-thread with a recording policy: what it
// tells the polling policy (src/poll-policy.ts) and when, and the guest's
// "I will block" hint (layout.ts Q_IDLE_HINT) as the consumer reads it.
// run() returns once STATE leaves RUNNING, so each policy call can end the
// run by setting STOPPING: no thread, no clock in the assertions.
import { describe, expect, it } from 'vitest';
import { buildTlbiNhAsid } from '../src/codec.ts';
import {
  CONFIG_EN, CTL_HEARTBEAT_MS, CTL_STAT_SLEEPS, CTL_STATE, IDLE_HINT_SET, KTHREAD_CTL, Q_CONFIG, Q_IDLE_HINT, Q_PROD, SERVER_STATE,
} from '../src/layout.ts';
import type { PollPolicy, PollPolicyName } from '../src/poll-policy.ts';
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
  constructor(readonly usesGuestHint: boolean, private readonly onIdle: (n: number) => number) {}
  idle(_nowNs: number, guestIdle: boolean): number {
    this.hints.push(guestIdle);
    return this.onIdle(this.hints.length - 1);
  }
  arrived(_nowNs: number, slept: boolean): void {
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
    const hintWords = new Set(made.qs.map((q) => q.regs + Q_IDLE_HINT));
    const load = Atomics.load;
    Atomics.load = ((ta: Int32Array, w: number) => {
      if (ta === rig.i32 && hintWords.has(w)) hintLoads++;
      return load(ta, w);
    }) as typeof Atomics.load;
    try {
      runOnce(rig);
    } finally {
      Atomics.load = load;
    }
    expect(p.hints).toEqual([false, false]);
    // The first scan reads queues 0..30, the second only queue 30 (still without a hint).
    expect(perIdle).toEqual([31, 1]);
    // The answer is still about every queue: 30 announces, and another queue that has published since its hint is found.
    expect(hintSeen((r, qs) => {
      qs.forEach((q) => announce(r, q));
      submit(r, qs[5]!, [cmd()]);
    }, 60)).toEqual([false]);
  });

  it('is not read for a policy that ignores it (fixed, halt-poll)', () => {
    expect(hintSeen((rig, [q]) => announce(rig, q!), 1, false)).toEqual([false]);
  });
});
