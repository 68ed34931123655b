// How every client of a server thread (guest queues, mailbox callers) waits:
// spin for a budget, then Atomics.wait in slices; between slices look at the
// server's STATE and HEARTBEAT and at the deadline. So a wait ends with the
// answer, a timeout, or proof the server is gone — never a hang (a waiter
// blocked on the main thread cannot receive the worker's exit event, hence
// the heartbeat). Also the typed errors those endings become.

import { CTL_EPOCH, CTL_HEARTBEAT, CTL_HEARTBEAT_MS, CTL_STALE_MS, CTL_STATE, SERVER_STATE } from './layout.ts';

/** A CMD_SYNC (or space in the queue) did not come within the timeout. */
export class SyncTimeoutError extends Error {
  override readonly name = 'SyncTimeoutError';
  constructor(readonly prod: number, readonly cons: number, readonly err: number, timeoutMs: number) {
    super(`CMD_SYNC timeout after ${timeoutMs} ms (PROD=0x${hex(prod)} CONS=0x${hex(cons)} ERR=${err})`);
  }
}

/** A server thread (kernel thread, VMM) is dead or stopped; its clients' requests can no longer complete. */
export class ServerDeadError extends Error {
  override readonly name: string = 'ServerDeadError';
  constructor(readonly server: string, why: string) {
    super(`${server} is dead: ${why}`);
  }
}

/** The kernel thread died (or the host stopped) while a guest waited on its queue. */
export class KernelThreadDeadError extends ServerDeadError {
  override readonly name = 'KernelThreadDeadError';
  constructor(readonly prod: number, readonly cons: number, readonly err: number, why: string) {
    super('kernel thread', `${why} (PROD=0x${hex(prod)} CONS=0x${hex(cons)} ERR=${err})`);
  }
}

/** A mailbox request got no response within its timeout. */
export class MailboxTimeoutError extends Error {
  override readonly name = 'MailboxTimeoutError';
  constructor(readonly op: number, timeoutMs: number) {
    super(`mailbox op ${op}: no response within ${timeoutMs} ms`);
  }
}

function hex(v: number): string {
  return (v >>> 0).toString(16);
}

export const LIVE = { OK: 0, TIMEOUT: 1, DEAD: 2 } as const;

/**
 * Deadline and liveness of one wait, reused across waits (no allocation).
 * `begin` before the wait, `check` between slices.
 */
export class Liveness {
  /** performance.now() + timeoutMs at the wait's first clock read; -1 before it. */
  private deadline = -1;
  private timeoutMs = 0;
  /** CTL_EPOCH when the wait began. */
  private epoch = 0;
  private hb = 0;
  private hbAt = 0;
  /** Why `check` returned DEAD. */
  why = '';

  constructor(private readonly i32: Int32Array, private readonly ctl: number) {}

  /**
   * HEARTBEAT is not read here: its line is the server's, dirtied every pass
   * (layout.ts), and a wait that completes while spinning never needs it. The
   * first `check` takes it as the reference instead, so death by silence is
   * seen at most one slice later than from `begin`. Nor is the clock: a
   * round trip at the floor (~0.2-1 µs) would pay a clock read (~40 ns) for
   * nothing. The deadline starts at the first `now()`, which every path that
   * can block takes within SPIN_CLOCK_EVERY polls (spinUntil, sliceMs,
   * check), so a call may outlast `timeoutMs` by those polls (~1 µs). EPOCH
   * is loaded there too, not here: an Atomics call (~15-35 ns on Node 20)
   * before every publish for a wait most round trips never make. A restart
   * in those first polls is one whose new thread serves the queue as the
   * old one would have (a thread that starts looks at every queue once,
   * layout.ts), so the call ends as if the restart had come before it;
   * restarts take milliseconds (a heartbeat gone stale), not a microsecond.
   */
  begin(timeoutMs: number): void {
    this.timeoutMs = timeoutMs;
    this.deadline = -1;
    this.hbAt = -1;
  }

  /** The clock; its first read in a wait starts the deadline and takes the server's EPOCH. */
  now(): number {
    const t = performance.now();
    if (this.deadline < 0) {
      this.deadline = t + this.timeoutMs;
      this.epoch = Atomics.load(this.i32, this.ctl + CTL_EPOCH);
    }
    return t;
  }

  /** Length of the next Atomics.wait slice: the heartbeat period, cut at the deadline. */
  sliceMs(): number {
    const now = this.now(); // first: it may start the deadline
    const left = this.deadline - now;
    const hbMs = Atomics.load(this.i32, this.ctl + CTL_HEARTBEAT_MS) || 10;
    return left < 0 ? 0 : left < hbMs ? left : hbMs;
  }

  check(): number {
    const now = this.now(); // first: it may start the wait (deadline, EPOCH)
    if (Atomics.load(this.i32, this.ctl + CTL_EPOCH) !== this.epoch) {
      this.why = 'it died and was restarted during this wait';
      return LIVE.DEAD;
    }
    const state = Atomics.load(this.i32, this.ctl + CTL_STATE);
    if (state === SERVER_STATE.DEAD || state === SERVER_STATE.STOPPING) {
      this.why = state === SERVER_STATE.DEAD ? 'STATE=DEAD' : 'stopping';
      return LIVE.DEAD;
    }
    const hb = Atomics.load(this.i32, this.ctl + CTL_HEARTBEAT);
    if (hb !== this.hb || this.hbAt < 0) {
      this.hb = hb;
      this.hbAt = now;
    } else if (now - this.hbAt > Atomics.load(this.i32, this.ctl + CTL_STALE_MS)) {
      this.why = `no heartbeat for ${Math.round(now - this.hbAt)} ms`;
      return LIVE.DEAD;
    }
    return now >= this.deadline ? LIVE.TIMEOUT : LIVE.OK;
  }
}

/** Spin iterations between clock reads while spinning (a clock read costs ~50 Atomics.load). */
export const SPIN_CLOCK_EVERY = 64;

/**
 * A client's spin budget, looked at every SPIN_CLOCK_EVERY polls: `until` is
 * 0 before the first look, which starts the budget (so a wait that ends
 * within SPIN_CLOCK_EVERY polls reads no clock at all, and the budget runs
 * that many polls long). Returns the budget's end, or -1 once it is spent.
 */
export function spinUntil(live: Liveness, until: number, spinUs: number): number {
  const now = live.now();
  if (until === 0) return now + spinUs / 1000;
  return now > until ? -1 : until;
}

/** Atomics.waitAsync's result, spelled out so the declarations do not need the consumer's lib to include ES2024. */
type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };

const keepAlive = (): void => {};

/**
 * Atomics.waitAsync (lib ES2024.SharedMemory; Node 20 has it), holding the
 * event loop open while it is pending: a pending waitAsync holds no reference on the loop, so
 * `await q.submitAsync(...)` whose server just died would let the process
 * exit with the promise never settled. A ref'd timer as long as the wait
 * (waits are sliced: at most a heartbeat period) keeps the process alive
 * until the waiter has looked again and settled.
 */
export function atomicsWaitAsync(i32: Int32Array, index: number, value: number, timeoutMs: number): WaitAsyncResult {
  const w = Atomics.waitAsync(i32, index, value, timeoutMs);
  if (w.async) {
    const timer = setTimeout(keepAlive, Math.min(timeoutMs, 2 ** 31 - 1) + 1);
    void w.value.then(() => clearTimeout(timer));
  }
  return w;
}
