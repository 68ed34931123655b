// A "kernel thread": one worker owning an SMMU model, serving the vCMDQs and
// mailboxes of the VMs the host placed on it (native-free-fastpath/consumer.ts;
// a host with kernelThreads: N runs N of these, each on its own control block). It never returns to its
// event loop while serving: control messages (add VM, add queue, attach
// stream, add mailbox) are drained from the MessagePort with
// receiveMessageOnPort when the host bumps CTL_CTRL, and answered on the port.
// Any exception escaping the loop marks STATE=DEAD and wakes every waiter
// before the thread dies.

import { workerData, type MessagePort } from 'node:worker_threads';
import { crashNow, drainControlPort } from '../src/control-port.ts';
import { makeFeatures, type SmmuFeatures } from '../src/features.ts';
import { makePollPolicy, type PollConfig } from '../src/poll-policy.ts';
import { CTL_CRASH, CTL_STATE, SERVER_STATE } from '../src/layout.ts';
import { SmmuModel, type SmmuModelOptions } from '../src/model/smmu.ts';
import { VSmmu } from '../src/vsmmu.ts';
import { Consumer, VmEntry, bypassExecute } from './consumer.ts';
// Trap-path plug (src/trap): the VMM's ioctls on its vIOMMU.
import { TrapKernelSide } from '../src/trap/kernel.ts';
import type { IommufdMode } from '../src/trap/iommufd.ts';

/** workerData of the kernel thread (built by src/host.ts). */
export interface KthreadData {
  sab: SharedArrayBuffer;
  features: SmmuFeatures;
  port: MessagePort;
  /** Word offset of this thread's control block (KTHREAD_CTL for thread 0). */
  ctl: number;
  /** IOMMU_HWPT_INVALIDATE on a bad entry: 'strict' (default) or 'upstream-v6.18' (src/trap/iommufd.ts). */
  iommufd?: IommufdMode;
  /** The SMMU model's caching options (HostOptions.model). */
  model?: Pick<SmmuModelOptions, 'combinedNested' | 'walkCacheEntries'>;
  /** Bench hook (HostOptions.model.bypass): the doorbell consumer skips model.execute (bypassExecute). */
  bypass?: boolean;
  /** How long the thread polls before it sleeps (HostOptions.poll / spinUs, checked by the host). */
  poll: PollConfig;
}

/** Control messages (host -> kernel thread); each is answered with {id, ok, error?}. */
export type KthreadCtrl =
  | { id: number; op: 'addVm'; vmid: number; streams: [number, number][]; ramBase: number; ramBytes: number }
  | { id: number; op: 'removeVm'; vmid: number }
  | { id: number; op: 'addQueue'; qid: number; vmid: number }
  | { id: number; op: 'attachStream'; psid: number; stePa: number }
  | { id: number; op: 'addMailbox'; mbid: number };

const { sab, features: featIn, port, ctl, iommufd, model: modelOpts, bypass, poll } = workerData as KthreadData;
const i32 = new Int32Array(sab);
const features = makeFeatures(featIn);
const model = new SmmuModel(sab, features, modelOpts);
// The trap path (below) keeps the real model: the bypass measures the doorbell's transport only.
const consumer = new Consumer(i32, ctl, bypass === true ? bypassExecute(model) : model, features, makePollPolicy(poll));
// Trap-path plug: IOMMUFD_INVALIDATE and NESTED_STE join the mailbox dispatch.
const trap = new TrapKernelSide(sab, consumer, model, features, iommufd ?? 'strict');
trap.register(consumer.mailboxes);

function control(msg: KthreadCtrl): void {
  switch (msg.op) {
    case 'addVm': {
      const { ramBase, ramBytes } = msg;
      // The host's stage 2 maps IPA [0, ramBytes) to PA [ramBase, ...) (buildStage2); an MSI elsewhere aborts.
      const stage2 = (lo: number, hi: number): number => (hi === 0 && lo >>> 0 < ramBytes ? ramBase + (lo >>> 0) : -1);
      consumer.addVm(msg.vmid, new VmEntry(new VSmmu(msg.vmid, msg.streams), stage2));
      return;
    }
    case 'removeVm':
      consumer.removeVm(msg.vmid);
      return;
    case 'addQueue':
      consumer.addQueue(msg.qid, msg.vmid);
      return;
    case 'attachStream':
      model.attachStream(msg.psid, msg.stePa);
      trap.attachStream(msg.psid, msg.stePa); // trap-path plug
      return;
    case 'addMailbox':
      consumer.mailboxes.add(msg.mbid);
      return;
  }
}

function drainControl(): void {
  drainControlPort<KthreadCtrl>(port, control);
}

try {
  drainControl();
  // RUNNING before the host hears "started": a stop() right after startHost() must find the thread running.
  Atomics.compareExchange(i32, ctl + CTL_STATE, SERVER_STATE.STARTING, SERVER_STATE.RUNNING); // publish: STATE RUNNING, before "started"
  port.postMessage({ id: 0, ok: true });
  consumer.run({
    control: drainControl,
    crash: () => crashNow(Atomics.load(i32, ctl + CTL_CRASH)),
  });
  consumer.markDead();
  port.close();
} catch (e) {
  consumer.markDead();
  port.postMessage({ id: -1, ok: false, error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  port.close();
  throw e;
}
