// The trapping transport of GuestQueue: the guest's PROD and GERRORN writes
// are MMIO writes that exit to the VMM. Each is a synchronous mailbox request
// to the VMM thread; the vCPU blocks until the VMM has emulated the write
// (and, for PROD, consumed the queue up to it, as QEMU does inside the MMIO
// write). Importing this module registers the 'trap' path with GuestQueue in
// the importing thread, so `openQueue({ path: 'trap' })` handles attach
// anywhere the module is loaded.

import { GuestQueue, type QueueHandle, type QueueTransport } from '../guest.ts';
import { MailboxClient, type MailboxHandle } from '../mailbox.ts';
import { TRAP_OP } from './vmm.ts';

/** QueueHandle.extra of a trap-path queue. */
export interface TrapExtra {
  /** This vCPU's trap mailbox on the VMM thread. */
  readonly trap: MailboxHandle;
  /** Longest a trapped write may take (the VMM's ioctls included). */
  readonly timeoutMs?: number;
}

/** The VMM refused a trapped write (results[0] < 0). */
export class TrapError extends Error {
  override readonly name = 'TrapError';
  constructor(readonly op: number, readonly errno: number) {
    super(`trapped register write (op ${op}) failed in the VMM: errno ${-errno}`);
  }
}

export class TrapTransport implements QueueTransport {
  private readonly client: MailboxClient;
  private readonly timeoutMs: number;
  constructor(private readonly h: QueueHandle) {
    const extra = h.extra as TrapExtra | undefined;
    if (extra?.trap === undefined) throw new TypeError(`queue ${h.qid}: a trap-path handle needs extra.trap (the VMM mailbox)`);
    this.client = new MailboxClient(extra.trap);
    this.timeoutMs = extra.timeoutMs ?? 5000;
  }

  publishProd(prod: number): void {
    this.write(TRAP_OP.PROD, prod);
  }

  ackGerror(gerror: number): void {
    this.write(TRAP_OP.GERRORN, gerror);
  }

  /** CONFIG (the queue enable): also a trapped write. */
  writeConfig(v: number): void {
    this.write(TRAP_OP.CONFIG, v);
  }

  private write(op: number, v: number): void {
    const c = this.client;
    c.args[0] = this.h.qid;
    c.args[1] = v;
    const rc = c.call(op, this.timeoutMs);
    if (rc < 0) throw new TrapError(op, rc);
  }
}

GuestQueue.registerTransport('trap', (h) => new TrapTransport(h));
