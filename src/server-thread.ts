// The host side of one server thread (the kernel thread, the trap path's
// VMM): its worker, the control port its setup messages go through, and its
// death. Whatever ends the thread — an exception, an exit, host.stop(), a
// terminate — ends here once: STATE=DEAD for the thread's waiters, every
// pending control request rejected with ServerDeadError, and `closed`
// resolved. Nothing escapes to the process: a worker's 'error' event has a
// listener, so an exception in a server thread is that server's death, not
// the host process's.

import { Worker, type MessagePort } from 'node:worker_threads';
import { CTL_CTRL, CTL_STATE, CTL_WAKE, SERVER_STATE, kick } from './layout.ts';
import { ServerDeadError } from './waiter.ts';

/** The server thread answered a control message with a refusal (a request the host should not have made). */
export class ControlRefusedError extends Error {
  override readonly name = 'ControlRefusedError';
  constructor(readonly server: string, readonly op: unknown, reason: string) {
    super(`${server} refused ${String(op)}: ${reason}`);
  }
}

interface Reply {
  id: number;
  ok: boolean;
  error?: string;
}

export class ServerThread {
  private readonly pending = new Map<number, { op: unknown; resolve: () => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private death: ServerDeadError | null = null;
  /** stop() asked it to exit: its exit is a stop, not a crash. */
  private stopping = false;
  private readonly exited: Promise<void>;
  /** Resolves, once the worker has exited, with the error its clients get. */
  readonly closed: Promise<ServerDeadError>;

  /**
   * `onDeath` runs once, right after STATE=DEAD is stored (wake the
   * thread's waiters). The thread answers message id 0 once it runs; a
   * message with id -1 reports the exception it is dying of.
   */
  constructor(
    readonly name: string,
    private readonly i32: Int32Array,
    private readonly ctl: number,
    private readonly worker: Worker,
    private readonly port: MessagePort,
    private readonly onDeath: () => void,
  ) {
    port.on('message', (m: Reply) => this.onReply(m));
    this.exited = new Promise((resolve) => worker.once('exit', (code) => {
      this.die(this.stopping ? 'stopped' : `exited with code ${code}`);
      resolve();
    }));
    // Without this listener Node rethrows the worker's exception in this thread and the whole process dies.
    worker.on('error', (e) => this.die(`failed: ${e.message}`));
    this.closed = this.exited.then(() => this.death!);
  }

  /** The error a client of this thread gets now, or null while it lives. */
  get dead(): ServerDeadError | null {
    return this.death;
  }

  /** Throw the thread's death, if it is dead. */
  checkAlive(): void {
    if (this.death !== null) throw this.death;
  }

  /** Wait for the answer to message `id` (0: the thread's "running"). */
  expectReply(id: number, op: unknown = 'start'): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.death !== null) reject(this.death);
      else this.pending.set(id, { op, resolve, reject });
    });
  }

  /** Post a control message and wait for its answer. */
  control(msg: Record<string, unknown>): Promise<void> {
    const id = this.nextId++;
    const done = this.expectReply(id, msg['op']);
    if (this.death === null) {
      this.port.postMessage({ ...msg, id });
      Atomics.add(this.i32, this.ctl + CTL_CTRL, 1); // publish: CTRL release (after the message is queued)
      kick(this.i32, this.ctl);
    }
    return done;
  }

  private onReply(m: Reply): void {
    if (m.id === -1) {
      this.die(`died: ${m.error}`);
      return;
    }
    const p = this.pending.get(m.id);
    if (p === undefined) return;
    this.pending.delete(m.id);
    if (m.ok) p.resolve();
    else p.reject(new ControlRefusedError(this.name, p.op, m.error ?? 'no reason given'));
  }

  /** The thread is gone (or going): make every client see it, once. */
  private die(why: string): void {
    if (this.death !== null) return;
    this.death = new ServerDeadError(this.name, why);
    Atomics.store(this.i32, this.ctl + CTL_STATE, SERVER_STATE.DEAD); // publish: STATE=DEAD for waiters in other threads
    this.onDeath();
    for (const p of this.pending.values()) p.reject(this.death);
    this.pending.clear();
    this.port.close();
  }

  /**
   * Ask the thread to stop (STATE=STOPPING, wake it) and wait for it to
   * exit; a thread that has not exited after `graceMs` is terminated.
   * Returns true when it had to be terminated.
   */
  async stop(graceMs: number): Promise<boolean> {
    if (this.death === null) {
      this.stopping = true;
      Atomics.store(this.i32, this.ctl + CTL_STATE, SERVER_STATE.STOPPING); // publish: STATE STOPPING, before the WAKE that gets it seen
      Atomics.add(this.i32, this.ctl + CTL_WAKE, 1); // publish: WAKE (the sleeper's futex word)
      Atomics.notify(this.i32, this.ctl + CTL_WAKE);
    }
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      void this.worker.terminate();
    }, graceMs);
    await this.exited;
    clearTimeout(timer);
    this.die('stopped');
    return killed;
  }

  /** Kill the thread from outside (worker.terminate), as a crash would; resolves once it has exited. */
  async terminate(): Promise<void> {
    await this.worker.terminate();
    await this.exited;
  }
}
