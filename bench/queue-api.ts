// The public queue API as the bench uses it (DESIGN.md "Public API shape").
// Looked up at run time on the package entry so the bench builds and its
// baselines run before the paths exist; a missing API is a clean
// BenchUnavailableError, not a crash.
import * as lib from '../src/index.ts';
import { BenchUnavailableError, type QueuePathName } from './types.ts';

export type CsMode = 'none' | 'sev' | 'irq';
export const CS_MODES: readonly CsMode[] = ['none', 'sev', 'irq'];

/** Command objects as the codec takes them: op plus named fields, addresses as bigint. */
export type CommandObject = { op: string } & Record<string, number | bigint | string>;

export interface SubmitOptions {
  sync?: boolean;
  cs?: CsMode;
  timeoutMs?: number;
}

export interface QueueLike {
  submit(cmds: readonly CommandObject[], opts?: SubmitOptions): unknown;
}

export interface VmLike {
  openQueue(opts: { path: 'doorbell' | 'trap'; log2size?: number }): Promise<QueueLike>;
}

export interface HostLike {
  createVm(opts: { vmid: number; ramBytes?: number; streams: { vsid: number; psid: number }[] }): Promise<VmLike>;
  stop(): Promise<void>;
}

export type StartHost = (opts: { spinUs?: number; memBytes?: number }) => Promise<HostLike>;

export function queueApi(): StartHost {
  // Reflect.get: a property the bundler cannot resolve statically (no build warning while it is absent).
  const startHost: unknown = Reflect.get(lib, 'startHost');
  if (typeof startHost !== 'function') throw new BenchUnavailableError('src/index.ts exports no startHost yet (doorbell path not landed)');
  return startHost as StartHost;
}

/** Kernel-thread spin budget of the doorbell-spin path: above the ~20-50 µs that node-latency-floor.md §3 shows a spinning side needs to stay at the floor. */
export const SPIN_US = 50;

export const VMID = 1;
export const STREAM = { vsid: 0, psid: 0x10 };

export interface OpenedPath {
  name: QueuePathName;
  host: HostLike;
  queue: QueueLike;
}

/** Host + VM + queue of one path: each path gets its own host so the spin budget is a host property. */
export async function openPath(name: QueuePathName): Promise<OpenedPath> {
  const startHost = queueApi();
  const host = await startHost({ spinUs: name === 'doorbell-spin' ? SPIN_US : 0 });
  try {
    const vm = await host.createVm({ vmid: VMID, streams: [STREAM] });
    const queue = await vm.openQueue({ path: name === 'trap' ? 'trap' : 'doorbell' });
    return { name, host, queue };
  } catch (e) {
    await host.stop();
    if (name === 'trap' && e instanceof Error) throw new BenchUnavailableError(`trap path: ${e.message}`);
    throw e;
  }
}

/** One leaf TLBI_NH_VA of a 4K page: the guest's single-page invalidation. */
export function tlbiNhVa(page: number): CommandObject {
  return { op: 'TLBI_NH_VA', vmid: VMID, asid: 1, addr: BigInt(page) << 12n, leaf: 1, num: 0, scale: 0, ttl: 0, tg: 0 };
}
