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
export { SyncTimeoutError, ServerDeadError, KernelThreadDeadError, MailboxTimeoutError } from './waiter.ts';
export { GuestQueue, QueueError, CMDQ_BATCH_ENTRIES, type CsMode, type QueueHandle, type QueueTransport, type SubmitOptions } from './guest.ts';
export {
  startHost, registerQueuePath, Host, Vm, DmaAgent,
  type HostOptions, type VmOptions, type QueueOptions, type QueueOpener, type AttachOptions, type Translation,
} from './host.ts';
