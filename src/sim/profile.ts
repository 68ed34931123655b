// Cost profiles of `vcmdq sim`: the virtual-time price of each step a path
// takes, as data (src/sim/profiles/*.json, or built at run time from this
// machine's measurements, bench/sim-node-local.ts). Every number carries its
// source: a published per-step figure, a measurement, or an assumption with
// its range. A profile number is never fitted to an end-to-end result.

import { ArgumentError } from '../errors.ts';
import kvmArm64 from './profiles/kvm-arm64.json' with { type: 'json' };

/**
 * The steps, one cost range each. Round trips are named as such; everything
 * else is one way. Per-command steps are paid once per 16-byte command.
 */
export const STEP_NAMES = [
  /** The guest writes or clears one leaf PTE (map before the DMA, unmap before the invalidation). */
  'guest_pte',
  /** The guest driver builds one command and writes it into the ring (CMD_SYNC included). */
  'guest_cmd',
  /** The guest driver's fixed cost of one PROD write beyond its commands: reserve, space check, publish, doorbell check (GuestQueue.submitWords; arm_smmu_cmdq_issue_cmdlist's bookkeeping). */
  'guest_submit',
  /** Trapped MMIO write handled in user space (QEMU): exit, dispatch and back, round trip, on the vCPU thread. */
  'exit_user',
  /** MMIO write handled in the kernel (an ioeventfd doorbell): exit and back, round trip. */
  'exit_kernel',
  /** One ioctl (IOMMU_HWPT_INVALIDATE): entry and exit, round trip, excluding the work it does. */
  'ioctl',
  /**
   * The same ioctl made by the iothread-style VMM (the bench's `trap`): from
   * a host thread that shares the host CPUs with the kernel's work, not from
   * the vCPU's thread (QEMU's shape, `ioctl`).
   */
  'ioctl_iothread',
  /** Taking and dropping the VMM's big lock, uncontended. */
  'bql',
  /** The VMM's per-command cost in its first pass (smmuv3_cmdq_consume: read, decode, batch). */
  'vmm_cmd',
  /** The kernel's per-command cost in IOMMU_HWPT_INVALIDATE (copy, arm_vsmmu_convert_user_cmd, queue for the SMMU). */
  'iommufd_cmd',
  /** The kernel thread's per-command cost consuming a vCMDQ (copy, convert, decode, queue for the SMMU). */
  'kthread_cmd',
  /** The kernel thread's fixed cost of consuming one queue in a pass beyond its commands (Consumer.pass: checks, CONS publish, waiters check). */
  'kthread_pass',
  /** The physical SMMU's service time of one invalidation command (host CMDQ or VCMDQ). */
  'smmu_cmd',
  /** The physical SMMU's CMD_SYNC: from its turn in the queue to completion visible to the waiter. */
  'smmu_sync',
  /** A sleeping thread on another CPU, from the wake-up (eventfd, futex) to running. */
  'wake',
  /** A polling thread on another CPU sees a store (one cache-line transfer). */
  'notice',
  /**
   * The guest's own price of a PROD write while the consumer polls it: the
   * lines a stream of publishes bounces (PROD taken back from the poller,
   * CONS read for the space check), per publish. Paid by the vCPU, not by
   * the consumer's view of the write (that is `notice`).
   */
  'publish_line',
  /**
   * A consumer that saw the line it polls move reads a further line behind
   * it, paid per line (the 3-line round trip over the 2-line one): the SW
   * vCMDQ's kernel thread reads two (PROD's behind its pending bitmap's, then
   * the slots'; layout.ts's line budget), a poller of PROD itself one (the
   * hw SMMU, and the kernel thread for the queues in its polled set).
   */
  'slot_lines',
  /** The guest's PROD write to its hardware VCMDQ page reaching the SMMU (no exit). */
  'hw_doorbell',
  /**
   * The guest's own price of a PROD write to its hardware VCMDQ beyond
   * guest_submit: on hardware a posted write to device memory (nothing
   * more); where the SMMU is a thread polling the register page (the
   * emulation's `hw`), the line it takes back from the poller, as publish_line.
   */
  'hw_publish',
  /** A hardware VCMDQ's per-command fetch and check beyond smmu_cmd (the emulation's `hw` SMMU is a thread running the consume step). */
  'hw_cmd',
  /** The timed loop's clock read around each operation (the bench's performance.now(), dma_map_benchmark's ktime_get): one read's cost falls inside the interval. */
  'clock',
] as const;
export type StepName = (typeof STEP_NAMES)[number];

/** Where a number comes from. */
export const SOURCE_KINDS = ['published', 'measured', 'assumed', 'structural'] as const;
export type SourceKind = (typeof SOURCE_KINDS)[number];

/** One step's cost: drawn uniformly in [lo_ns, hi_ns] each time the step is taken. */
export interface StepCost {
  lo_ns: number;
  hi_ns: number;
  kind: SourceKind;
  /** Who measured or published it, where, on what; or why the range was assumed. */
  source: string;
}

/**
 * How a guest waits for its CMD_SYNC: 'poll' (a Linux guest spins on CONS
 * or its MSI word, so completion costs one `notice`), or
 * 'sleep-unless-spinning' (the emulation's waiter: it spins only while the
 * kernel thread does, and otherwise sleeps, so completion costs a `wake`).
 */
export const GUEST_WAITS = ['poll', 'sleep-unless-spinning'] as const;
export type GuestWait = (typeof GUEST_WAITS)[number];

export interface SimProfile {
  name: string;
  description: string;
  guest_wait: GuestWait;
  guest_wait_source: string;
  steps: Record<StepName, StepCost>;
}

/** Checks a parsed profile document field by field; an ArgumentError names the first bad one. */
export function checkProfile(doc: unknown, what = 'profile'): SimProfile {
  const o = asObject(doc, what);
  const name = o['name'];
  if (typeof name !== 'string' || !/^[a-z0-9-]+$/.test(name)) throw new ArgumentError(`${what}.name`, `must be a lower-case name, got ${JSON.stringify(name)}`);
  if (typeof o['description'] !== 'string') throw new ArgumentError(`${what}.description`, 'must be a string');
  if (!(GUEST_WAITS as readonly unknown[]).includes(o['guest_wait'])) throw new ArgumentError(`${what}.guest_wait`, `must be one of ${GUEST_WAITS.join(', ')}, got ${JSON.stringify(o['guest_wait'])}`);
  checkSource(o['guest_wait_source'], `${what}.guest_wait_source`);
  const steps = asObject(o['steps'], `${what}.steps`);
  for (const k of Object.keys(steps)) {
    if (!(STEP_NAMES as readonly string[]).includes(k)) throw new ArgumentError(`${what}.steps.${k}`, `is not a step (steps: ${STEP_NAMES.join(', ')})`);
  }
  for (const step of STEP_NAMES) {
    const at = `${what}.steps.${step}`;
    const s = asObject(steps[step], at);
    const lo = s['lo_ns'];
    const hi = s['hi_ns'];
    if (typeof lo !== 'number' || !(lo >= 0) || !Number.isFinite(lo)) throw new ArgumentError(`${at}.lo_ns`, `must be a finite number >= 0, got ${String(lo)}`);
    if (typeof hi !== 'number' || !(hi >= lo) || !Number.isFinite(hi)) throw new ArgumentError(`${at}.hi_ns`, `must be a finite number >= lo_ns (${lo}), got ${String(hi)}`);
    if (!(SOURCE_KINDS as readonly unknown[]).includes(s['kind'])) throw new ArgumentError(`${at}.kind`, `must be one of ${SOURCE_KINDS.join(', ')}, got ${JSON.stringify(s['kind'])}`);
    checkSource(s['source'], `${at}.source`);
  }
  return doc as SimProfile;
}

function checkSource(src: unknown, at: string): void {
  if (typeof src !== 'string' || src.trim().length < 10) throw new ArgumentError(at, 'must say where the number comes from (at least a few words)');
}

function asObject(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ArgumentError(what, 'must be an object');
  return v as Record<string, unknown>;
}

/** The profiles shipped as data files, by name. */
export const PROFILE_FILES: Readonly<Record<string, unknown>> = { 'kvm-arm64': kvmArm64 };

/** A shipped profile, checked. */
export function loadProfile(name: string): SimProfile {
  if (!Object.hasOwn(PROFILE_FILES, name)) throw new ArgumentError('profile', `${JSON.stringify(name)} is not a shipped profile (${Object.keys(PROFILE_FILES).join(', ')}; node-local is measured)`);
  return checkProfile(PROFILE_FILES[name], name);
}

/** A step's mean, ns (for summaries and the structural tests). */
export function meanNs(p: SimProfile, step: StepName): number {
  const s = p.steps[step];
  return (s.lo_ns + s.hi_ns) / 2;
}
