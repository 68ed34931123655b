// The trapping transport of GuestQueue: the guest's PROD and GERRORN writes
// are MMIO writes that exit to the VMM; the vCPU goes on once the VMM has
// emulated the write (and, for PROD, consumed the queue up to it, as QEMU
// does inside the MMIO write). Where the exit goes is the only difference
// between the two trap paths:
//  - 'trap' (iothread-style): a synchronous mailbox request to the VMM
//    thread, which serves every vCPU's exits one at a time;
//  - 'trap-inline' (QEMU's shape, exit.ts): the emulation runs on the vCPU's
//    own thread under the VMM's BQL.
// Importing this module registers both transports with GuestQueue in the
// importing thread, so their handles attach anywhere the module is loaded.

import { GuestQueue, type QueueHandle, type QueueTransport } from '../guest.ts';
import { CONS_ERR_MASK, CONS_ERR_SHIFT, Q_CONS, Q_PROD } from '../layout.ts';
import { MailboxClient, type MailboxHandle } from '../mailbox.ts';
import { KernelThreadDeadError } from '../waiter.ts';
import type { TrapCounts } from './cmdq.ts';
import { InlineExit, type InlineTrapExtra } from './exit.ts';
import { TRAP_ERRNO, TRAP_OP } from './vmm.ts';

/** QueueHandle.extra of a trap-path queue. */
export interface TrapExtra {
  /** This vCPU's trap mailbox on the VMM thread. */
  readonly trap: MailboxHandle;
  /** Longest a trapped write may take (the VMM's ioctls included). */
  readonly timeoutMs?: number;
}

/** Where a trapped write goes: the VMM thread's mailbox (MailboxClient) or the calling thread (InlineExit). */
interface TrapExit {
  readonly args: Int32Array;
  readonly results: Int32Array;
  call(op: number, timeoutMs: number): number;
}

/** The exit of a trap or trap-inline queue's handle. */
function exitOf(h: QueueHandle): TrapExit {
  const extra = h.extra as Partial<TrapExtra & InlineTrapExtra> | undefined;
  if (extra?.trap !== undefined) return new MailboxClient(extra.trap);
  if (extra?.inline !== undefined) return new InlineExit(h, extra.inline);
  throw new TypeError(`queue ${h.qid}: a trap-path handle needs extra.trap (the VMM mailbox) or extra.inline (the VMM's shared state)`);
}

/** The VMM refused a trapped write (results[0] < 0). */
export class TrapError extends Error {
  override readonly name = 'TrapError';
  constructor(readonly op: number, readonly errno: number) {
    super(`trapped register write (op ${op}) failed in the VMM: errno ${-errno}`);
  }
}

export class TrapTransport implements QueueTransport {
  private readonly client: TrapExit;
  private readonly timeoutMs: number;
  private readonly i32: Int32Array;
  constructor(private readonly h: QueueHandle) {
    this.i32 = new Int32Array(h.sab);
    this.client = exitOf(h);
    this.timeoutMs = (h.extra as { timeoutMs?: number }).timeoutMs ?? 5000;
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

  setStreamTableBase(ipa: number): void {
    if (!Number.isInteger(ipa) || ipa < 0 || ipa >= 2 ** 52) throw new RangeError(`STRTAB_BASE must be an IPA, got ${ipa}`);
    this.write(TRAP_OP.STRTAB_BASE, ipa % 2 ** 32, Math.floor(ipa / 2 ** 32));
  }

  private write(op: number, v: number, v1 = 0): void {
    const c = this.client;
    c.args[0] = v;
    c.args[1] = v1;
    const rc = c.call(op, this.timeoutMs);
    if (rc === 0) return;
    if (rc === TRAP_ERRNO.KERNEL_DEAD) {
      // The same error a vCMDQ guest gets when the kernel thread dies under it.
      const i32 = this.i32;
      const cons = Atomics.load(i32, this.h.regs + Q_CONS);
      throw new KernelThreadDeadError(Atomics.load(i32, this.h.regs + Q_PROD), cons >>> 0, (cons & CONS_ERR_MASK) >>> CONS_ERR_SHIFT,
        'the VMM found it dead during a trapped register write');
    }
    throw new TrapError(op, rc);
  }
}

/** The VMM's counters of the trap or trap-inline queue `handle` (its STATS op, through the queue's own exit). */
export function readTrapCounts(handle: QueueHandle): TrapCounts {
  const c = exitOf(handle);
  const rc = c.call(TRAP_OP.STATS, 5000);
  if (rc !== 0) throw new TrapError(TRAP_OP.STATS, rc);
  return { forwarded: c.results[1]!, handledByVmm: c.results[2]!, ioctls: c.results[3]!, steEvents: c.results[4]! };
}

GuestQueue.registerTransport('trap', (h) => new TrapTransport(h));
GuestQueue.registerTransport('trap-inline', (h) => new TrapTransport(h));
