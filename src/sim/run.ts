// One simulated run: a path, a vCPU count, a granule, a profile, a seed ->
// the vCPUs' unmap latencies, throughput and CPU time in virtual time, every
// unmap checked against the model (no stale translation). Pure and
// deterministic: the same config gives the same numbers.

import { ArgumentError } from '../errors.ts';
import { checkInt, checkOptions } from '../args.ts';
import { Sim } from './engine.ts';
import { batchCommands, isTrapPath, HwQueue, KernelThread, SIM_PATHS, TrapVmm, Vcpu, Costs, type Server, type SimEnv, type SimPathName, type SimWorkload } from './paths.ts';
import { ADAPTIVE_DEFAULTS, AdaptivePoll, FixedPoll, type AdaptiveParams, type PollPolicy } from '../poll-policy.ts';
import { checkProfile, meanNs, type SimProfile } from './profile.ts';
import { Semaphore, SmmuEngine } from './resources.ts';
import { MAX_PAGES, SIM_LOG2SIZE, SIM_MAX_QUEUES, SYNC_CS, SimWorld } from './world.ts';

export const SIM_GRANULES = [4096, 16384, 65536, 131072, 262144] as const;
/** The kernel thread's fixed spin budget on doorbell-spin: the real bench's SPIN_US (bench/queue-api.ts). */
export const SIM_SPIN_NS = 50_000;

export interface SimConfig {
  profile: SimProfile;
  path: SimPathName;
  vcpus: number;
  /** What each vCPU does per sample (default 'unmap'; paths.ts SimWorkload). */
  workload?: SimWorkload['kind'];
  /** Bytes per unmap (dma_map_benchmark's granule): 4K..256K in 4K pages. Unmap workload only. */
  granule?: number;
  /** Commands per publish of the batch workload (1..4096). */
  batch?: number;
  /** Operations (samples) per vCPU. */
  unmaps: number;
  /** Idle gap before each operation, ns (default 0: back to back). */
  gapNs?: number;
  /** doorbell-adaptive's AdaptivePoll parameters (default: its defaults with this profile's price of a wake-up). */
  adaptive?: AdaptiveParams;
  seed?: number;
  /** vCMDQs (doorbell, hw) shared round-robin by the vCPUs; default one per vCPU. The trap paths have the VM's one CMDQ. */
  queues?: number;
  /** Host CPUs for the host threads (kernel thread, VMM thread); default 1. */
  hostCpus?: number;
  /** Every ring's size, entries = 2^log2size (default SIM_LOG2SIZE; the bench's queues have 2^8). */
  log2size?: number;
}

export interface SimResult {
  path: SimPathName;
  vcpus: number;
  queues: number;
  workload: SimWorkload;
  /** Bytes per unmap (unmap workload), else 0. */
  granule: number;
  /** All operation latencies, ns (vCPU by vCPU). */
  latenciesNs: Float64Array;
  /** Virtual time from start to the last vCPU's last unmap, ns. */
  elapsedNs: number;
  unmaps: number;
  /** CPU time, ns: the vCPUs (while not asleep), and the host threads (kernel thread or VMM thread; spinning included). */
  vcpuCpuNs: number;
  hostCpuNs: number;
  /** Kernel-thread CPU spent spinning idle, ns (doorbell paths). */
  spinNs: number;
  /** Fraction of the run the physical SMMU's command engine was busy. */
  smmuBusy: number;
  /** Kernel-thread wake-ups (doorbell paths) or trapped PROD writes (trap paths). */
  wakeups: number;
  traps: number;
  events: number;
}

const CONFIG_KEYS = ['profile', 'path', 'vcpus', 'workload', 'granule', 'batch', 'unmaps', 'gapNs', 'seed', 'queues', 'hostCpus', 'adaptive', 'log2size'];

/** Guests sleep for their CMD_SYNC when the profile says they do and the path's server does not spin. */
function guestSleeps(profile: SimProfile, path: SimPathName): boolean {
  return profile.guest_wait === 'sleep-unless-spinning' && (isTrapPath(path) || path === 'doorbell-sleep');
}

/**
 * The kernel thread's polling policy: src/poll-policy.ts, the real kernel
 * thread's code. Adaptive keeps its defaults except the price of a sleep,
 * which is this profile's: the latency a wake-up adds (kick + wake).
 */
export function policyOf(path: SimPathName, profile: SimProfile, adaptive?: AdaptiveParams): PollPolicy {
  switch (path) {
    case 'doorbell-spin': return new FixedPoll(SIM_SPIN_NS);
    case 'doorbell-adaptive': return new AdaptivePoll(adaptive ?? { ...ADAPTIVE_DEFAULTS, wakeCostNs: meanNs(profile, 'exit_kernel') + meanNs(profile, 'wake') });
    default: return new FixedPoll(0);
  }
}

function adaptiveOf(v: unknown): AdaptiveParams | undefined {
  if (v === undefined) return undefined;
  const o = checkOptions('runSim: config.adaptive', v, ['wakeCostNs', 'maxSpinNs', 'cpuShare', 'historyPeriods']);
  const num = (k: string, lo: number, hi: number): number => {
    const x = o[k];
    if (typeof x !== 'number' || !(x >= lo && x <= hi)) throw new ArgumentError(`runSim: config.adaptive.${k}`, `must be a number in ${lo}..${hi}, got ${String(x)}`);
    return x;
  };
  return { wakeCostNs: num('wakeCostNs', 0, 1e12), maxSpinNs: num('maxSpinNs', 0, 1e12), cpuShare: num('cpuShare', 0, 1), historyPeriods: num('historyPeriods', 1, 1e9) };
}

function workloadOf(o: Record<string, unknown>): SimWorkload {
  const kind = o['workload'] ?? 'unmap';
  switch (kind) {
    case 'unmap': {
      const granule = checkInt('runSim: config.granule', o['granule'], 4096, MAX_PAGES * 4096, 'bytes, 4K..256K');
      if (granule % 4096 !== 0) throw new ArgumentError('runSim: config.granule', `must be a multiple of 4096, got ${granule}`);
      return { kind: 'unmap', pages: granule / 4096 };
    }
    case 'roundtrip': return { kind: 'roundtrip' };
    case 'batch': return { kind: 'batch', batch: checkInt('runSim: config.batch', o['batch'], 1, 4096) };
    case 'svastorm': return { kind: 'svastorm' };
    default: throw new ArgumentError('runSim: config.workload', `must be unmap, roundtrip, batch or svastorm, got ${JSON.stringify(kind)}`);
  }
}

export function runSim(config: SimConfig): SimResult {
  const o = checkOptions('runSim: config', config, CONFIG_KEYS);
  const profile = checkProfile(o['profile'], 'runSim: config.profile');
  const path = o['path'] as SimPathName;
  if (!(SIM_PATHS as readonly unknown[]).includes(path)) throw new ArgumentError('runSim: config.path', `must be one of ${SIM_PATHS.join(', ')}, got ${String(path)}`);
  const vcpus = checkInt('runSim: config.vcpus', o['vcpus'], 1, SIM_MAX_QUEUES);
  const workload = workloadOf(o);
  const unmaps = checkInt('runSim: config.unmaps', o['unmaps'], 1, 1e7);
  const seed = checkInt('runSim: config.seed', o['seed'] ?? 1, 0, 0xffffffff);
  const queues = checkInt('runSim: config.queues', o['queues'] ?? vcpus, 1, vcpus, 'at most one per vCPU');
  const hostCpus = checkInt('runSim: config.hostCpus', o['hostCpus'] ?? 1, 1, 1024);
  const gapNs = checkInt('runSim: config.gapNs', o['gapNs'] ?? 0, 0, 1e12);
  const adaptive = adaptiveOf(o['adaptive']);
  // The unmap loop's largest operation (65 slots) must fit one lap, as Linux's queue does.
  const log2size = checkInt('runSim: config.log2size', o['log2size'] ?? SIM_LOG2SIZE, 7, SIM_LOG2SIZE);

  const sim = new Sim(seed);
  const world = new SimWorld(log2size);
  const env: SimEnv = {
    sim, costs: new Costs(sim, profile), world, smmu: new SmmuEngine(sim), hostCpus: new Semaphore(sim, hostCpus, 'host CPUs'),
    guestSleeps: guestSleeps(profile, path), path,
  };
  const vs: Vcpu[] = [];
  let kthread: KernelThread | null = null;
  let vmm: TrapVmm | null = null;
  if (isTrapPath(path)) {
    const t = world.openTrapQueue();
    vmm = new TrapVmm(env, t.cmdq, t.hwpt, t.ring, path === 'trap');
    for (let v = 0; v < vcpus; v++) vs.push(new Vcpu(v, env, t.ring, vmm, workload, unmaps, SYNC_CS.sev, gapNs));
    vmm.waiters.push(...vs);
  } else if (path === 'hw') {
    const hws = Array.from({ length: queues }, () => {
      const q = world.openConsumedQueue('hw');
      return new HwQueue(env, q.ring, q.consumer);
    });
    for (let v = 0; v < vcpus; v++) {
      const hq = hws[v % queues]!;
      // A Tegra241 guest VCMDQ takes CS=NONE syncs only: the guest polls CONS.
      const vcpu = new Vcpu(v, env, hq.ring, hq, workload, unmaps, SYNC_CS.none, gapNs);
      hq.waiters.push(vcpu);
      vs.push(vcpu);
    }
  } else {
    kthread = new KernelThread(env, policyOf(path, profile, adaptive));
    const served = Array.from({ length: queues }, () => ({ ...world.openConsumedQueue('vcmdq'), waiters: [] as Vcpu[] }));
    for (const q of served) kthread.addQueue(q);
    for (let v = 0; v < vcpus; v++) {
      const q = served[v % queues]!;
      const vcpu = new Vcpu(v, env, q.ring, kthread as Server, workload, unmaps, SYNC_CS.sev, gapNs);
      q.waiters.push(vcpu);
      vs.push(vcpu);
    }
  }
  for (const v of vs) v.start();
  // Bound: a few dozen events per publish (an unmap or round trip is one; a
  // batch iteration is batchCommands / batch of them, 64 at batch 1); a
  // model that reschedules forever ends in SimLimitError.
  const publishesPerOp = workload.kind === 'batch' ? batchCommands(workload.batch) / workload.batch : 1;
  const events = sim.run(64 * vcpus * unmaps * publishesPerOp + 1000);
  const elapsedNs = Math.max(...vs.map((v) => v.finishedAt));
  for (const v of vs) {
    if (v.done !== unmaps) throw new Error(`sim: vCPU ${v.id} finished ${v.done} of ${unmaps} unmaps (the event queue ran dry: a lost completion)`);
  }
  const latenciesNs = new Float64Array(vcpus * unmaps);
  vs.forEach((v, k) => latenciesNs.set(v.samples, k * unmaps));
  return {
    path, vcpus, queues: vmm !== null ? 1 : queues, workload, granule: workload.kind === 'unmap' ? workload.pages * 4096 : 0, latenciesNs, elapsedNs, unmaps: vcpus * unmaps,
    vcpuCpuNs: vs.reduce((s, v) => s + v.finishedAt - v.sleptNs, 0),
    hostCpuNs: kthread?.cpuUpTo(elapsedNs) ?? vmm?.cpuNs ?? 0,
    spinNs: kthread?.spinNs ?? 0,
    smmuBusy: elapsedNs > 0 ? env.smmu.busyNs / elapsedNs : 0,
    wakeups: kthread?.wakeups ?? 0,
    traps: vmm?.traps ?? 0,
    events,
  };
}
