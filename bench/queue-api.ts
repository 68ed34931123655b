// The public queue API as the bench uses it (src/index.ts, plus the trap
// path's module so 'trap' is registered), and the per-path set-up: each path
// gets its own host, so the kernel thread's spin budget is a host property.
import { buildTlbiNhVa, startHost, type Command, type GuestQueue, type Host, type HostOptions, type Vm } from '../src/index.ts';
import { stopTrapPath } from '../src/trap/path.ts';
import { startThreads } from './affinity.ts';
import { BenchUnavailableError, type QueuePathName } from './types.ts';

export type CsMode = 'none' | 'sev' | 'irq';
export const CS_MODES: readonly CsMode[] = ['none', 'sev', 'irq'];

/** Kernel-thread spin budget of the doorbell-spin path: above the ~20-50 µs that node-latency-floor.md §3 shows a spinning side needs to stay at the floor. */
export const SPIN_US = 50;

export const VMID = 1;
export const ASID = 1;
export const STREAM = { vsid: 0, psid: 0x10 };

export interface OpenedPath {
  name: QueuePathName;
  host: Host;
  vm: Vm;
  queue: GuestQueue;
  /** OS threads started for this path (kernel thread, VMM): for CPU time. */
  tids: string[];
  /** The kernel thread's TID ('' when it could not be told apart). */
  kthreadTid: string;
  close(): Promise<void>;
}

export interface PathOptions {
  /** Kernel-thread spin budget; default per path (0, or SPIN_US for doorbell-spin). */
  spinUs?: number;
  /** ns of extra work per command the kernel thread consumes (the gate's self-test; doorbell hosts only). */
  slowdownNs?: number;
  /** Doorbell hosts only: startHost's model.bypass (the transport alone; bench/scenario-anatomy.ts). Never set by the gate's probe. */
  bypassModel?: boolean;
}

export function spinUsOf(name: QueuePathName): number {
  return name === 'doorbell-spin' ? SPIN_US : 0;
}

async function stopHost(host: Host): Promise<void> {
  try {
    await stopTrapPath(host);
  } finally {
    await host.stop();
  }
}

/** Host + VM + first queue of one path, its threads on the server CPU. */
export async function openPath(name: QueuePathName, opts: PathOptions = {}): Promise<OpenedPath> {
  const spinUs = opts.spinUs ?? spinUsOf(name);
  // The slowdown models a slower doorbell consumer; the trap path is the reference it is compared with.
  const slowdownNs = name === 'trap' ? 0 : (opts.slowdownNs ?? 0);
  // Options passed only when set: the perf gate runs this file against older builds too, whose hosts may not know them.
  const hostOpts: HostOptions = { spinUs };
  if (slowdownNs > 0) hostOpts.slowdownNs = slowdownNs;
  if (opts.bypassModel === true && name !== 'trap') hostOpts.model = { bypass: true };
  const started = await startThreads('server', () => startHost(hostOpts));
  const host = started.value;
  try {
    const vm = await host.createVm({ vmid: VMID, streams: [STREAM] });
    const opened = await startThreads('server', () => vm.openQueue({ path: name === 'trap' ? 'trap' : 'doorbell' }));
    return {
      name, host, vm, queue: opened.value, tids: [...started.tids, ...opened.tids],
      kthreadTid: started.tids.length === 1 ? started.tids[0]! : '',
      close: () => stopHost(host),
    };
  } catch (e) {
    await stopHost(host);
    if (name === 'trap' && e instanceof Error) throw new BenchUnavailableError(`trap path: ${e.message}`);
    throw e;
  }
}

/** One leaf TLBI_NH_VA of a 4K page as the 4 queue words: the guest's single-page invalidation. */
export function tlbiNhVaWords(page: number, out = new Uint32Array(4), at = 0): Uint32Array {
  const u = new Uint32Array(4);
  const addr = page * 4096;
  buildTlbiNhVa(u, ASID, VMID, addr % 2 ** 32, Math.floor(addr / 2 ** 32), 0, 0, 0, 0, 1);
  out.set(u, at);
  return out;
}

/** The same TLBI_NH_VA as tlbiNhVaWords(page), as a command object for `submit`. */
export function tlbiNhVaCommand(page: number): Command {
  return { op: 'TLBI_NH_VA', asid: ASID, vmid: VMID, addr: BigInt(page * 4096), leaf: 1 };
}
