// A request/response slot in the SAB between a client thread and a server
// thread that serves many slots without returning to its event loop (the
// kernel thread, the trap VMM). Protocol in src/layout.ts (mailboxes). Used
// for translate (DMA agent -> kernel thread), the iommufd ioctl (trap VMM ->
// kernel thread) and trapped register writes (guest vCPU -> VMM).
//
// Zero-allocation call: set `client.args[i]`, `call(op)`, read
// `client.results[i]` (both private to the client: they are copied into and
// out of the slot while the client holds it, so several client threads may
// share one mailbox). Larger inputs go through `client.payload`, a 4 KiB area
// of the SAB whose PA is in the MB_PAYLOAD word; it is written before the
// claim, so only a mailbox with a single client thread may use it.

import {
  CTL_SPIN_US, MAILBOX_STATE, MB_ARG0, MB_ARGS, MB_OP, MB_PAYLOAD, MB_PAYLOAD_BYTES, MB_RES0, MB_STATE, kick,
  mailboxAt, mailboxPayloadOf, readWord,
} from './layout.ts';
import { show } from './args.ts';
import { ArgumentError } from './errors.ts';
import { LIVE, Liveness, MailboxTimeoutError, SPIN_CLOCK_EVERY, ServerDeadError, atomicsWaitAsync, spinUntil } from './waiter.ts';

/** Results[0] when the server had no handler for the op (-ENOSYS). */
export const MB_ENOSYS = -38;
/** Results[0] when the handler threw: the request was malformed (-EIO); the server lives on. */
export const MB_EIO = -5;

/** What a client needs to reach one mailbox from any thread (structured-clone safe). */
export interface MailboxHandle {
  readonly sab: SharedArrayBuffer;
  /** Word offset of the server's control block. */
  readonly ctl: number;
  readonly id: number;
  /** Name used in errors ("kernel thread", "VMM"). */
  readonly server: string;
}

/** Longest wait a caller may ask for (Atomics.wait's and setTimeout's limit), ms. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

function checkTimeout(timeoutMs: unknown): never {
  throw new ArgumentError('timeoutMs', `must be a number of ms in 0..${MAX_TIMEOUT_MS} (0: answer already there or time out), got ${show(timeoutMs)}`);
}

export class MailboxClient {
  readonly handle: MailboxHandle;
  /** Arguments of the next call (MB_ARGS words, copied into the slot once it is claimed). */
  readonly args = new Int32Array(MB_ARGS);
  /** Results of the last call (copied out of the slot before it is released). */
  readonly results = new Int32Array(MB_ARGS);
  /** The payload area, and its byte PA (what a request names). */
  readonly payload: Uint8Array;
  readonly payloadPa: number;
  private readonly i32: Int32Array;
  private readonly base: number;
  private readonly live: Liveness;

  /**
   * `beat`: word offset of the caller's own HEARTBEAT when the caller is
   * itself a server thread (the VMM): bumped between wait slices, so that
   * its clients see it alive while it waits here.
   */
  constructor(handle: MailboxHandle, private readonly beat = -1) {
    this.handle = handle;
    this.i32 = new Int32Array(handle.sab);
    this.base = mailboxAt(this.i32, handle.id);
    this.payloadPa = mailboxPayloadOf(this.base);
    this.payload = new Uint8Array(handle.sab, this.payloadPa, MB_PAYLOAD_BYTES);
    this.live = new Liveness(this.i32, handle.ctl);
  }

  /**
   * Send `op` with the current args, wait for the response and return
   * results[0]. Throws MailboxTimeoutError or ServerDeadError. Args must be
   * written before the call; a concurrent caller on the same mailbox waits
   * for the slot. On timeout the slot stays claimed by the abandoned request:
   * the mailbox is unusable afterwards, as a timed-out device is.
   */
  call(op: number, timeoutMs = 5000): number {
    if (!(typeof timeoutMs === 'number' && timeoutMs >= 0 && timeoutMs <= MAX_TIMEOUT_MS)) checkTimeout(timeoutMs);
    const i32 = this.i32;
    const st = this.base + MB_STATE;
    this.live.begin(timeoutMs);
    while (Atomics.compareExchange(i32, st, MAILBOX_STATE.IDLE, MAILBOX_STATE.CLAIMED) !== MAILBOX_STATE.IDLE) { // acquire: claim the slot (pairs with the IDLE release of its last user)
      this.block(st, Atomics.load(i32, st), op, timeoutMs);
    }
    this.publish(op);
    const spinUs = Atomics.load(i32, this.handle.ctl + CTL_SPIN_US);
    if (spinUs > 0) {
      // As a guest's wait: no clock read before the SPIN_CLOCK_EVERY-th poll (spinUntil).
      for (let n = 1, until = 0; Atomics.load(i32, st) === MAILBOX_STATE.REQUEST; n++) {
        if (n % SPIN_CLOCK_EVERY === 0 && (until = spinUntil(this.live, until, spinUs)) < 0) break;
      }
    }
    while (Atomics.load(i32, st) === MAILBOX_STATE.REQUEST) this.block(st, MAILBOX_STATE.REQUEST, op, timeoutMs);
    this.checkAnswered(st);
    return this.finish();
  }

  /** Async form of `call` (Atomics.waitAsync): for a thread that must keep its event loop. */
  async callAsync(op: number, timeoutMs = 5000): Promise<number> {
    if (!(typeof timeoutMs === 'number' && timeoutMs >= 0 && timeoutMs <= MAX_TIMEOUT_MS)) checkTimeout(timeoutMs);
    const i32 = this.i32;
    const st = this.base + MB_STATE;
    this.live.begin(timeoutMs);
    while (Atomics.compareExchange(i32, st, MAILBOX_STATE.IDLE, MAILBOX_STATE.CLAIMED) !== MAILBOX_STATE.IDLE) { // acquire: claim the slot (pairs with the IDLE release of its last user)
      await this.blockAsync(st, Atomics.load(i32, st), op, timeoutMs);
    }
    this.publish(op);
    while (Atomics.load(i32, st) === MAILBOX_STATE.REQUEST) await this.blockAsync(st, MAILBOX_STATE.REQUEST, op, timeoutMs);
    this.checkAnswered(st);
    return this.finish();
  }

  /** The slot is ours (CLAIMED): fill it and hand it to the server. */
  private publish(op: number): void {
    const i32 = this.i32;
    const b = this.base;
    for (let k = 0; k < MB_ARGS; k++) i32[b + MB_ARG0 + k] = this.args[k]!;
    i32[b + MB_OP] = op;
    i32[b + MB_PAYLOAD] = this.payloadPa;
    Atomics.store(i32, b + MB_STATE, MAILBOX_STATE.REQUEST); // publish: mailbox REQUEST release
    kick(i32, this.handle.ctl);
  }

  /**
   * The request left REQUEST: answered, unless a restarted server's host
   * freed the slot (host.restartKernelThread), when the slot is no longer
   * ours and the request may or may not have run.
   */
  private checkAnswered(st: number): void {
    if (Atomics.load(this.i32, st) !== MAILBOX_STATE.RESPONSE) {
      throw new ServerDeadError(this.handle.server, 'it was restarted while serving this request');
    }
  }

  /** The response is in: copy the results out, release the slot, wake a caller queued on it. */
  private finish(): number {
    const i32 = this.i32;
    const b = this.base;
    for (let k = 0; k < MB_ARGS; k++) this.results[k] = i32[b + MB_RES0 + k]!;
    Atomics.store(i32, b + MB_STATE, MAILBOX_STATE.IDLE); // publish: mailbox IDLE release (results copied out; the next claimer may overwrite them)
    Atomics.notify(i32, b + MB_STATE);
    return this.results[0]!;
  }

  private block(st: number, value: number, op: number, timeoutMs: number): void {
    Atomics.wait(this.i32, st, value, this.live.sliceMs());
    if (Atomics.load(this.i32, st) === value) this.afterSlice(op, timeoutMs);
  }

  private async blockAsync(st: number, value: number, op: number, timeoutMs: number): Promise<void> {
    const w = atomicsWaitAsync(this.i32, st, value, this.live.sliceMs());
    if (w.async) await w.value;
    if (Atomics.load(this.i32, st) === value) this.afterSlice(op, timeoutMs);
  }

  private afterSlice(op: number, timeoutMs: number): void {
    if (this.beat >= 0) Atomics.add(this.i32, this.beat, 1); // unordered: heartbeat (liveness only)
    const s = this.live.check();
    if (s === LIVE.DEAD) throw new ServerDeadError(this.handle.server, this.live.why);
    if (s === LIVE.TIMEOUT) throw new MailboxTimeoutError(op, timeoutMs);
  }
}

/**
 * A request handler on the server: reads args at `base + MB_ARG0 + k`, the
 * payload at the PA in `base + MB_PAYLOAD`, writes results at
 * `base + MB_RES0 + k` (results[0] = status). Must not block for long: the
 * server serves queues in the same loop.
 */
export type MailboxHandler = (i32: Int32Array, base: number) => void;

/** Server side: the set of mailboxes a server thread serves, and its op table. */
export class MailboxServer {
  private ids: number[] = [];
  private readonly handlers = new Map<number, MailboxHandler>();
  /** Dense copy of `ids` as word offsets, rebuilt on add: the poll loop reads only this. */
  private bases = new Int32Array(0);

  /**
   * `onRequest` runs after a request is seen and before it is served (the
   * kernel thread's crash test hook: a request published after the hook was
   * armed is then never served, as a PROD is never consumed).
   */
  constructor(private readonly i32: Int32Array, private readonly onRequest: (() => void) | null = null) {}

  register(op: number, handler: MailboxHandler): void {
    this.handlers.set(op, handler);
  }

  add(id: number): void {
    if (!this.ids.includes(id)) this.ids.push(id);
    this.bases = Int32Array.from(this.ids, (i) => mailboxAt(this.i32, i));
  }

  /**
   * Any request waiting? `peek`: plain reads (a server's idle poll: a stale
   * one costs one more poll), else Atomics.load (the sleep re-check).
   */
  hasWork(peek = false): boolean {
    const i32 = this.i32;
    const b = this.bases;
    for (let k = 0; k < b.length; k++) if (readWord(i32, b[k]! + MB_STATE, peek) === MAILBOX_STATE.REQUEST) return true;
    return false;
  }

  /** Serve every pending request once; returns how many were served. */
  poll(): number {
    const i32 = this.i32;
    const b = this.bases;
    let served = 0;
    for (let k = 0; k < b.length; k++) {
      const base = b[k]!;
      // Peeked first (an idle slot stays in this thread's cache); the Atomics.load is the acquire of the request's arguments.
      if (i32[base + MB_STATE] !== MAILBOX_STATE.REQUEST || Atomics.load(i32, base + MB_STATE) !== MAILBOX_STATE.REQUEST) continue;
      this.onRequest?.();
      const h = this.handlers.get(i32[base + MB_OP]!);
      if (h === undefined) i32[base + MB_RES0] = MB_ENOSYS;
      else {
        try {
          h(i32, base);
        } catch {
          i32[base + MB_RES0] = MB_EIO;
        }
      }
      Atomics.store(i32, base + MB_STATE, MAILBOX_STATE.RESPONSE); // publish: mailbox RESPONSE release
      // All: callers queued for the slot wait on the same word as its owner.
      Atomics.notify(i32, base + MB_STATE);
      served++;
    }
    return served;
  }

  /** Wake every client blocked on a mailbox (the server is dying: they will see STATE=DEAD). */
  wakeAll(): void {
    for (const base of this.bases) Atomics.notify(this.i32, base + MB_STATE);
  }
}
