// The VMM thread of the trap path: ONE general dispatcher serving every
// trapped register write of its VMs, one at a time (a VMM's device lock), so
// vCPUs that trap together queue behind each other, as they do in QEMU. It
// blocks in Atomics.wait on its own control block (VMM_CTL) when idle and
// never spins: on a 2-core machine a third spinning thread starves the guest
// and the kernel thread. Its ioctls to the kernel thread block in the
// mailbox client (timeout + heartbeat: a dead kernel thread becomes -EIO
// for the trapping vCPU, not a hang).

import { workerData, type MessagePort } from 'node:worker_threads';
import { crashNow, drainControlPort } from '../control-port.ts';
import { makeFeatures, type SmmuFeatures } from '../features.ts';
import {
  CTL_CRASH, CTL_CTRL, CTL_HEARTBEAT, CTL_HEARTBEAT_MS, CTL_STATE, CTL_STAT_PASSES, CTL_STAT_SLEEPS, MB_ARG0, MB_RES0,
  SERVER_STATE, VMM_CTL, mailboxAt, sleepUnlessWork,
} from '../layout.ts';
import { MailboxServer, type MailboxHandle } from '../mailbox.ts';
import { TRAP_OP, Vmm, type VmmCtrl } from './vmm.ts';

/** workerData of the VMM thread (built by the host). */
export interface VmmData {
  sab: SharedArrayBuffer;
  features: SmmuFeatures;
  port: MessagePort;
  /** The mailbox this VMM makes its ioctls on, one per kernel thread: a VM's go to the thread that serves it. */
  ioctls: MailboxHandle[];
}

const { sab, features: featIn, port, ioctls } = workerData as VmmData;
const i32 = new Int32Array(sab);
const vmm = new Vmm(i32, makeFeatures(featIn), ioctls);
const server = new MailboxServer(i32);
for (const op of Object.values(TRAP_OP)) {
  server.register(op, (m, base) => {
    const a = base + MB_ARG0;
    vmm.trap(op, base, m[a]!, m[a + 1]!, m, base + MB_RES0);
  });
}

function control(msg: VmmCtrl): void {
  switch (msg.op) {
    case 'addVm': return vmm.addVm(msg.vmid, msg.ramBase, msg.ramBytes, msg.vsids, -1, msg.kthread);
    case 'addQueue':
      vmm.addQueue(msg.qid, msg.vmid, mailboxAt(i32, msg.mbid));
      return server.add(msg.mbid);
  }
}

function drainControl(): void {
  drainControlPort<VmmCtrl>(port, control);
}

function markDead(): void {
  Atomics.store(i32, VMM_CTL + CTL_STATE, SERVER_STATE.DEAD); // publish: STATE DEAD, before the waiters are woken
  server.wakeAll();
}

let ctrlSeen = 0;
const hasWork = (): boolean =>
  Atomics.load(i32, VMM_CTL + CTL_CTRL) !== ctrlSeen || Atomics.load(i32, VMM_CTL + CTL_STATE) !== SERVER_STATE.RUNNING
  || Atomics.load(i32, VMM_CTL + CTL_CRASH) !== 0 || server.hasWork();

try {
  drainControl();
  Atomics.store(i32, VMM_CTL + CTL_STATE, SERVER_STATE.RUNNING); // publish: STATE RUNNING
  port.postMessage({ id: 0, ok: true });
  for (;;) {
    const crash = Atomics.load(i32, VMM_CTL + CTL_CRASH);
    if (crash !== 0) crashNow(crash);
    const ctrl = Atomics.load(i32, VMM_CTL + CTL_CTRL);
    if (ctrl !== ctrlSeen) {
      ctrlSeen = ctrl;
      drainControl();
    }
    if (Atomics.load(i32, VMM_CTL + CTL_STATE) !== SERVER_STATE.RUNNING) break;
    const served = server.poll();
    Atomics.add(i32, VMM_CTL + CTL_HEARTBEAT, 1); // unordered: heartbeat (liveness only)
    if (served !== 0) {
      i32[VMM_CTL + CTL_STAT_PASSES]!++;
      continue;
    }
    if (sleepUnlessWork(i32, VMM_CTL, hasWork, i32[VMM_CTL + CTL_HEARTBEAT_MS]!)) i32[VMM_CTL + CTL_STAT_SLEEPS]!++;
  }
  markDead();
  port.close();
} catch (e) {
  markDead();
  port.postMessage({ id: -1, ok: false, error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  port.close();
  throw e;
}
