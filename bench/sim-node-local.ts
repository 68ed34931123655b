// The `node-local` cost profile of `vcmdq sim`: this machine's own step
// costs, measured by the bench's microbenchmarks at run time (never a
// file: it is only true of the machine and the moment it was measured).
//  - hops: the bare Atomics.wait and spin ping-pongs (bench/baselines.ts):
//    a wake-up is half a wait round trip, a poller's notice half a spin one;
//  - in-thread work per command: bench/micro.ts's consume step (the kernel
//    thread's, model included) and trap step (the VMM's first pass and the
//    IOMMU_HWPT_INVALIDATE handler, model included);
//  - a kick: Atomics.notify's cost (harness singleThreadCosts).
// The emulation has no exits and no separate SMMU: those steps are
// structural zeros, each saying where its cost went instead.
import { startBaseline } from './baselines.ts';
import { runInterleaved, singleThreadCosts, type Profile, type Progress } from './harness.ts';
import { runMicro } from './micro.ts';
import { median } from './stats.ts';
import { checkProfile, type SimProfile, type StepCost, type StepName } from '../src/sim/profile.ts';

export interface NodeLocalMeasurements {
  /** Bare Atomics.wait ping-pong round trip, p50, µs. */
  wait_rtt_us: number;
  /** Bare spin ping-pong round trip, p50, µs. */
  spin_rtt_us: number;
  /** Atomics.notify with nobody waiting, ns. */
  notify_ns: number;
  /** Consume step per command (Consumer.pass over 1023 TLBI_NH_VA + CMD_SYNC), ns. */
  consume_ns_per_cmd: number;
  /** Trap step per command (FirstPass + HwptInvalidate over 1024 TLBI_NH_VA), ns. */
  trap_ns_per_cmd: number;
  /** Round trips kept per ping-pong. */
  samples: number;
  /** When, ISO-8601. */
  date: string;
}

function fixed(ns: number, kind: StepCost['kind'], source: string): StepCost {
  return { lo_ns: Math.max(0, ns), hi_ns: Math.max(0, ns), kind, source };
}

/**
 * The profile from measurements (pure): each step one fixed value, the
 * measured medians, so the simulator's p50 is a sum of medians (its tails
 * are not a prediction on this profile).
 */
export function nodeLocalProfile(m: NodeLocalMeasurements): SimProfile {
  const at = `${m.samples} round trips, ${m.date}`;
  const steps: Record<StepName, StepCost> = {
    guest_pte: fixed(10, 'assumed', 'Not measured: two Atomics.store per PTE on V8, of the order of 10 ns.'),
    guest_cmd: fixed(20, 'assumed', 'Not measured: submitWords copies 4 words per command into the ring; of the order of 10-30 ns.'),
    exit_user: fixed(0, 'structural', 'The emulation\'s QEMU-shaped trap handler is a call on the vCPU\'s own thread: no exit.'),
    exit_kernel: fixed(m.notify_ns, 'measured', `The kick: Atomics.add + Atomics.notify, priced as Atomics.notify with nobody waiting (machine.notify_idle_ns), ${m.date}; the wake-up itself is \`wake\`.`),
    ioctl: fixed(m.wait_rtt_us * 1000, 'measured', `The emulation's ioctl is a mailbox request to the sleeping kernel thread and its answer: one bare Atomics.wait ping-pong round trip (bench/baselines.ts atomics-wait p50), ${at}.`),
    bql: fixed(30, 'assumed', 'Not measured: an uncontended Atomics.compareExchange lock and its release, of the order of 20-40 ns.'),
    vmm_cmd: fixed(m.trap_ns_per_cmd, 'measured', `bench/micro.ts trap: the VMM's first pass and the kernel's IOMMU_HWPT_INVALIDATE handler with the model executing, per command (median block), ${m.date}.`),
    iommufd_cmd: fixed(0, 'structural', 'Included in vmm_cmd: bench/micro.ts\'s trap block times the first pass and the ioctl handler together.'),
    kthread_cmd: fixed(m.consume_ns_per_cmd, 'measured', `bench/micro.ts consume: Consumer.pass per command (slot copy, vSMMU rewrite, decode, model execute, CONS publish), median block, ${m.date}.`),
    smmu_cmd: fixed(0, 'structural', 'The SMMU model executes inside the consume and trap steps, on the calling thread: its cost is in kthread_cmd and vmm_cmd.'),
    smmu_sync: fixed(0, 'structural', 'The model completes a CMD_SYNC inside the consume step (its cost is in kthread_cmd): no separate wait.'),
    wake: fixed((m.wait_rtt_us * 1000) / 2, 'measured', `Half a bare Atomics.wait ping-pong round trip (bench/baselines.ts atomics-wait p50 / 2): a futex wake-up and the woken thread running, ${at}.`),
    notice: fixed((m.spin_rtt_us * 1000) / 2, 'measured', `Half a bare spin ping-pong round trip (bench/baselines.ts atomics-spin p50 / 2): a store seen by a poller on the other CPU, ${at}.`),
    hw_doorbell: fixed((m.spin_rtt_us * 1000) / 2, 'measured', `The emulated hardware VCMDQ is read by a polling thread: a poller's notice, as \`notice\` (atomics-spin p50 / 2), ${at}.`),
    hw_cmd: fixed(m.consume_ns_per_cmd, 'measured', `The emulated SMMU runs the consume step on each command: as kthread_cmd (bench/micro.ts consume), ${m.date}.`),
  };
  return checkProfile({
    name: 'node-local',
    description: `This machine, measured by the bench's own microbenchmarks at ${m.date}: one fixed value per step.`,
    guest_wait: 'sleep-unless-spinning',
    guest_wait_source: 'GuestQueue waits for a CMD_SYNC by spinning for the kernel thread\'s spin budget, then Atomics.wait (src/guest.ts block); the trap transport\'s mailbox call sleeps (the VMM never spins).',
    steps,
  });
}

/** Measures what nodeLocalProfile needs: two ping-pongs interleaved, the two micro steps, the notify cost (~10-30 s). */
export async function measureNodeLocal(progress: Progress, samples = 20_000): Promise<NodeLocalMeasurements> {
  const profile: Profile = { name: 'quick', warmup: Math.round(samples / 10), samples, rounds: 5, rewarm: 20, timeoutMs: 5000 };
  const paths = [await startBaseline('atomics-wait', profile), await startBaseline('atomics-spin', profile)];
  let rtt: number[];
  try {
    const measured = await runInterleaved('sim node-local hops', paths, profile, progress);
    rtt = measured.map((m) => median(m.samples));
  } finally {
    await Promise.all(paths.map((p) => p.close()));
  }
  progress.update('[sim] node-local: in-thread micro steps');
  const consume = runMicro('consume');
  const trap = runMicro('trap');
  const costs = await singleThreadCosts();
  return {
    wait_rtt_us: rtt[0]!, spin_rtt_us: rtt[1]!, notify_ns: costs.notify_idle_ns,
    consume_ns_per_cmd: consume.ns_per_cmd, trap_ns_per_cmd: trap.ns_per_cmd, samples, date: new Date().toISOString(),
  };
}
