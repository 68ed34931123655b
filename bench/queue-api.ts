// The public queue API as the bench uses it (src/index.ts, plus the trap
// path's module so 'trap' is registered), and the per-path set-up: each path
// gets its own host, so the kernel thread's spin budget is a host property.
// The gate's probe runs this file against an older src/ too: only the trap
// and doorbell paths may be opened there, so the trap-qemu and hw branches
// below reach no API the probe needs.
import { buildTlbiNhVa, startHost, type Command, type GuestQueue, type Host, type Vm } from '../src/index.ts';
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
  /**
   * A further queue of this path's VM (the throughput scenario's bigger
   * ring), parked with the others while the path is not measured.
   */
  openQueue(log2size: number): Promise<GuestQueue>;
  /**
   * Run the path's own poller or park it: the hw path's SMMU polls, burning
   * a CPU, while one of its queues is enabled, so on 2 CPUs it must poll
   * only while the hw path is measured. A no-op on the other paths.
   */
  active(on: boolean): void;
  close(): Promise<void>;
}

export interface PathOptions {
  /** Kernel-thread spin budget (a fixed policy); default per path (spinUsOf). */
  spinUs?: number;
  /** ns of extra work per command the kernel thread consumes (the gate's self-test; doorbell hosts only). */
  slowdownNs?: number;
  /** Doorbell hosts only: startHost's model.bypass (the transport alone; bench/scenario-anatomy.ts). Never set by the gate's probe. */
  bypassModel?: boolean;
}

/**
 * The fixed budget each path's host is started with: SPIN_US for
 * doorbell-spin, 0 for doorbell-sleep and trap; none for the polling-policy
 * paths, whose hosts get a `poll` instead (pollOf).
 */
export function spinUsOf(name: QueuePathName): number | undefined {
  switch (name) {
    // hw: the guest busy-polls CONS as Linux does on a Tegra241 VCMDQ (the host's spin budget is also the guests').
    case 'doorbell-spin':
    case 'hw': return SPIN_US;
    case 'doorbell-adaptive':
    case 'doorbell-haltpoll': return undefined;
    default: return 0;
  }
}

/**
 * startHost's `poll` of the polling-policy paths: doorbell-adaptive is the
 * host's default (no option), doorbell-haltpoll KVM's halt polling with
 * its upstream parameters. Written out here rather than imported, so this
 * module keeps building against older src/ (the gate's probe bundles it).
 */
function pollOf(name: QueuePathName): { policy: string } | undefined {
  return name === 'doorbell-haltpoll' ? { policy: 'halt-poll' } : undefined;
}

/** The library path each bench path opens. */
function libraryPath(name: QueuePathName): string {
  switch (name) {
    case 'trap': return 'trap';
    case 'trap-qemu': return 'trap-inline';
    case 'hw': return 'hw';
    default: return 'doorbell';
  }
}

async function stopHost(host: Host): Promise<void> {
  try {
    await stopTrapPath(host);
  } finally {
    await host.stop();
  }
}

/**
 * startHost's options for path `name`: its fixed budget or its policy, and
 * the slowdown, each only when set (the perf gate runs this file against
 * older builds too, whose hosts may not know every option).
 */
export function hostOptionsOf(name: QueuePathName, opts: PathOptions = {}): Record<string, unknown> {
  const spinUs = opts.spinUs ?? spinUsOf(name);
  const poll = pollOf(name);
  // The slowdown models a slower SW vCMDQ consumer; the trap paths and hw are the references it is compared with.
  const doorbell = libraryPath(name) === 'doorbell';
  const slowdownNs = doorbell ? (opts.slowdownNs ?? 0) : 0;
  const hostOpts: Record<string, unknown> = {};
  if (spinUs !== undefined) hostOpts['spinUs'] = spinUs;
  if (poll !== undefined) hostOpts['poll'] = poll;
  if (slowdownNs > 0) hostOpts['slowdownNs'] = slowdownNs;
  if (opts.bypassModel === true && doorbell) hostOpts['model'] = { bypass: true };
  if (name === 'hw') hostOpts['cmdqv'] = true;
  return hostOpts;
}

/** Host + VM + first queue of one path, its threads on the server CPU. */
export async function openPath(name: QueuePathName, opts: PathOptions = {}): Promise<OpenedPath> {
  const started = await startThreads('server', () => startHost(hostOptionsOf(name, opts) as Parameters<typeof startHost>[0]));
  const host = started.value;
  try {
    const vm = await host.createVm({ vmid: VMID, streams: [STREAM] });
    const path = libraryPath(name);
    const hw = name === 'hw';
    const queues: GuestQueue[] = [];
    const openQueue = async (log2size?: number): Promise<GuestQueue> => {
      const q = await vm.openQueue(log2size === undefined ? { path } : { path, log2size });
      // A hw queue opens enabled: park it until its path is measured.
      if (hw) q.setEnabled(false);
      queues.push(q);
      return q;
    };
    const opened = await startThreads('server', () => openQueue());
    return {
      name, host, vm, queue: opened.value, tids: [...started.tids, ...opened.tids],
      kthreadTid: started.tids.length === 1 ? started.tids[0]! : '',
      openQueue,
      active: (on) => {
        if (hw) for (const q of queues) q.setEnabled(on);
      },
      close: () => stopHost(host),
    };
  } catch (e) {
    await stopHost(host);
    if (libraryPath(name) !== 'doorbell' && e instanceof Error) throw new BenchUnavailableError(`${name} path: ${e.message}`);
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
