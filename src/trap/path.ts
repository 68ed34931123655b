// Host side of the trap path: starts the VMM thread (one per host, serving
// every VM's trapped registers one at a time), gives it an ioctl mailbox on
// the kernel thread, and opens trapped queues: `vm.openQueue({ path: 'trap' })`
// once this module is imported (src/index.ts does, so the package entry and
// every thread that loads it have the path). The queue's entries live in
// guest RAM and its registers in the same register block layout as a vCMDQ,
// so GuestQueue drives it unchanged; only PROD/GERRORN/CONFIG (and the
// vSMMU's STRTAB_BASE) writes go through the VMM. host.stop() stops the VMM.

import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import type { QueueHandle } from '../guest.ts';
import { registerQueuePath, type Host, type QueueOptions, type Vm } from '../host.ts';
import {
  CONFIG_EN, CRASH_CODE, CTL_CRASH, CTL_HEARTBEAT_MS, CTL_SPIN_US, CTL_STALE_MS, KTHREAD_CTL, VMM_CTL, kick,
  type CrashHow,
} from '../layout.ts';
import type { MailboxHandle } from '../mailbox.ts';
import { ServerThread } from '../server-thread.ts';
import type { ServerDeadError } from '../waiter.ts';
import { workerUrl } from '../worker-url.ts';
import { TrapTransport, type TrapExtra } from './transport.ts';
import type { VmmCtrl } from './vmm.ts';

type CtrlBody = VmmCtrl extends infer T ? (T extends { id: number } ? Omit<T, 'id'> : never) : never;

/** The VMM thread of one host. */
export class TrapPath {
  private readonly vms = new Set<number>();
  private readonly thread: ServerThread;

  private constructor(readonly host: Host, worker: Worker, port: MessagePort) {
    // Its death is the trap guests' ServerDeadError (their mailbox waits see STATE=DEAD); the kernel thread and doorbell guests go on.
    this.thread = new ServerThread('VMM', host.i32, VMM_CTL, worker, port, () => {});
  }

  /** Resolves, once the VMM thread has exited, with the error its guests get. */
  get closed(): Promise<ServerDeadError> {
    return this.thread.closed;
  }

  static async start(host: Host): Promise<TrapPath> {
    const i32 = host.i32;
    // A vCPU in a VM exit does not spin, and neither does the VMM (2 cores).
    i32[VMM_CTL + CTL_SPIN_US] = 0;
    i32[VMM_CTL + CTL_HEARTBEAT_MS] = i32[KTHREAD_CTL + CTL_HEARTBEAT_MS]!;
    i32[VMM_CTL + CTL_STALE_MS] = i32[KTHREAD_CTL + CTL_STALE_MS]!;
    // One ioctl channel per kernel thread: a VM's ioctls reach the SMMU model of the thread that serves it.
    const ioctls: MailboxHandle[] = [];
    for (let k = 0; k < host.kernelThreads; k++) ioctls.push(await host.mailbox(undefined, k));
    const { port1, port2 } = new MessageChannel();
    const worker = new Worker(workerUrl('vmm.worker.js'), {
      workerData: { sab: host.sab, features: host.features, port: port2, ioctls },
      transferList: [port2],
    });
    const path = new TrapPath(host, worker, port1);
    host.onStop((graceMs) => path.stop(graceMs));
    await path.thread.expectReply(0);
    return path;
  }

  private control(body: CtrlBody): Promise<void> {
    return this.thread.control(body);
  }

  /** Provision a trapped CMDQ for `vm`: registers and ring as a vCMDQ, served by the VMM through its own trap mailbox. */
  async openQueue(vm: Vm, opts: QueueOptions): Promise<QueueHandle> {
    this.thread.checkAlive();
    if (!this.vms.has(vm.vmid)) {
      await this.control({ op: 'addVm', vmid: vm.vmid, ramBase: vm.ramBase, ramBytes: vm.ramBytes, vsids: vm.streams.map((s) => s.vsid), kthread: vm.kthread });
      this.vms.add(vm.vmid);
    }
    // Refused before its register block is taken, so a refusal leaves the host as it was.
    if (this.host.mailboxesLeft === 0) throw this.host.mailboxesExhausted();
    const { qid, regs: r, log2size, baseIpa } = vm.allocQueueRegs(opts);
    const features = this.host.features;
    // The mailbox is this vCPU's exit into the VMM: the VMM knows the queue
    // (and VM) by the mailbox, never by what the guest writes into it.
    const mbid = this.host.allocMailboxId();
    await this.control({ op: 'addQueue', qid, vmid: vm.vmid, mbid });
    const extra: TrapExtra = { trap: { sab: this.host.sab, ctl: VMM_CTL, id: mbid, server: 'VMM' } };
    const handle: QueueHandle = {
      path: 'trap', sab: this.host.sab, ctl: VMM_CTL, qid, regs: r, log2size,
      basePa: vm.ramBase + baseIpa, baseIpa, vmid: vm.vmid, features, extra,
    };
    // The guest enables its queue: a trapped CONFIG write, like every register write on this path.
    new TrapTransport(handle).writeConfig(CONFIG_EN);
    return handle;
  }

  /** Stop the VMM thread (no worker left running); a VMM that does not exit within `graceMs` is terminated: returns ['VMM'] then. */
  async stop(graceMs = 5000): Promise<string[]> {
    return (await this.thread.stop(graceMs)) ? ['VMM'] : [];
  }

  /** Test hook: the VMM thread fails at its next pass ('exit' without marking itself dead, 'throw', 'wedge'). */
  crashOnNextPass(how: CrashHow = 'exit'): void {
    Atomics.store(this.host.i32, VMM_CTL + CTL_CRASH, CRASH_CODE[how]); // publish: CRASH request (test hook), read at the next pass
    kick(this.host.i32, VMM_CTL);
  }

  /** Test hook: kill the VMM thread from outside (worker.terminate), as a crash would. */
  terminate(): Promise<void> {
    return this.thread.terminate();
  }
}

const paths = new WeakMap<Host, Promise<TrapPath>>();

/** The host's trap path, started on first use. */
export function trapPathOf(host: Host): Promise<TrapPath> {
  let p = paths.get(host);
  if (p === undefined) {
    p = TrapPath.start(host);
    paths.set(host, p);
  }
  return p;
}

registerQueuePath('trap', async (vm, opts) => (await trapPathOf(vm.host)).openQueue(vm, opts));

/** Stop the host's VMM thread now, if it was started (host.stop() does this too). */
export async function stopTrapPath(host: Host): Promise<void> {
  const p = paths.get(host);
  if (p !== undefined) await (await p).stop();
}
