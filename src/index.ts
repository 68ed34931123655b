export * from './fields.ts';
export * from './features.ts';
export * from './errors.ts';
export * from './codec.ts';
export * from './vsmmu.ts';
export * from './invalidate.ts';
export * from './model/index.ts';
export * from './queue.ts';
export * as layout from './layout.ts';
export { MailboxClient, MailboxServer, MB_EIO, MB_ENOSYS, type MailboxHandle, type MailboxHandler } from './mailbox.ts';
export {
  AdaptivePoll, FixedPoll, HaltPoll, POLL_POLICIES, makePollPolicy, checkPollOptions, ADAPTIVE_DEFAULTS, HALT_POLL_DEFAULTS,
  type PollPolicy, type PollPolicyName, type PollConfig, type PollOptions, type AdaptiveParams, type HaltPollParams,
} from './poll-policy.ts';
export { SyncTimeoutError, ServerDeadError, KernelThreadDeadError, MailboxTimeoutError } from './waiter.ts';
export { GuestQueue, QueueError, PathSwitchError, CMDQ_BATCH_ENTRIES, type CsMode, type QueueHandle, type QueueTransport, type SubmitOptions } from './guest.ts';
export {
  startHost, registerQueuePath, type QueueCheck, Host, Vm, DmaAgent,
  type HostOptions, type VmOptions, type QueueOptions, type QueueOpener, type AttachOptions, type Translation,
} from './host.ts';
// The trap path: importing it registers 'trap' with openQueue and GuestQueue in every thread that loads the package.
export { TrapError, type TrapExtra } from './trap/transport.ts';
export { TrapPath, trapPathOf, stopTrapPath } from './trap/path.ts';
// The trap path in QEMU's shape (the VMM's emulation on the vCPU's thread, under its BQL): registers 'trap-inline'.
import './trap/inline.ts';
export type { InlineTrapExtra } from './trap/exit.ts';
// The hw path (a Tegra241 hardware VCMDQ): importing it registers 'hw' the same way.
import './hw.ts';
