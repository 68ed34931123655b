// The `node-local` cost profile of `vcmdq sim`: this machine's own step
// costs, measured by the bench's microbenchmarks at run time (never a
// file: it is only true of the machine and the moment it was measured).
//  - hops: the bare Atomics.wait and spin ping-pongs (bench/baselines.ts):
//    a wake-up is half a wait round trip, a poller's notice half a spin one;
//    the 3-line spin ping-pong (the doorbell round trip's shape, as
//    bench/scenario-anatomy.ts measures it): what the slot line adds; and
//    the spin pair streaming (publish after publish): what a producer pays
//    per publish while a poller takes each;
//    and the wait ping-pong between two threads of the server CPU (the
//    relay pair): the iothread VMM's ioctl to the kernel thread beside it;
//  - in-thread work per command: bench/micro.ts's consume step (the kernel
//    thread's, model included) and trap step (the VMM's first pass and the
//    IOMMU_HWPT_INVALIDATE handler, model included);
//  - in-thread fixed work per PROD write and per pass (bench/sim-micro.ts):
//    GuestQueue.submitWords' bookkeeping, Consumer.pass's per queue;
//  - each measured on the thread that pays it in the real paths: the guest's
//    steps on the producer's main thread, the kernel thread's (consume and
//    pass) in a fresh worker on the server CPU (bench/sim-micro.worker.ts),
//    as the kernel thread and the hw SMMU run;
//  - a kick: Atomics.notify's cost, and a clock read (harness singleThreadCosts).
// The emulation has no exits and no separate SMMU: those steps are
// structural zeros, each saying where its cost went instead.
import { Worker } from 'node:worker_threads';
import { workerUrl } from '../src/worker-url.ts';
import { startThreads } from './affinity.ts';
import { startBaseline, startPingPong, startPingStream, startRelayPingPong } from './baselines.ts';
import { SLOT_WORDS } from './pingpong-protocol.ts';
import { measureSubmitCosts } from './sim-micro.ts';
import { BenchTimeoutError } from './types.ts';
import { runInterleaved, singleThreadCosts, type Profile, type Progress } from './harness.ts';
import { runMicro } from './micro.ts';
import { median } from './stats.ts';
import { checkProfile, type SimProfile, type StepCost, type StepName } from '../src/sim/profile.ts';

export interface NodeLocalMeasurements {
  /** Bare Atomics.wait ping-pong round trip, p50, µs. */
  wait_rtt_us: number;
  /** Bare spin ping-pong round trip, p50, µs. */
  spin_rtt_us: number;
  /** The same with the doorbell's 3-line shape (a slot line beside PING), p50, µs. */
  shape_rtt_us: number;
  /** The spin pair streaming, per publish, p50, µs. */
  stream_us: number;
  /** Bare Atomics.wait ping-pong round trip between two threads of the server CPU (the relay pair), p50, µs. */
  local_wait_rtt_us: number;
  /** performance.now(), ns. */
  clock_ns: number;
  /** In-thread fixed costs (bench/sim-micro.ts), ns: the guest's on the main thread, the pass on the server CPU. */
  submit_ns: number;
  submit_cmd_ns: number;
  pass_ns: number;
  /** Atomics.notify with nobody waiting, ns. */
  notify_ns: number;
  /** Consume step per command (Consumer.pass over 1023 TLBI_NH_VA + CMD_SYNC), on the server CPU, ns. */
  consume_ns_per_cmd: number;
  /** The same on the producer's main thread, ns: not in the profile, noted beside it (where a step is timed moves it). */
  consume_main_ns_per_cmd: number;
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
    guest_cmd: fixed(m.submit_cmd_ns, 'measured', `bench/sim-micro.ts submit: GuestQueue.submitWords' copy of one command into the ring (one call of 64 against 64 calls of 1, in-thread), ${m.date}.`),
    guest_submit: fixed(m.submit_ns, 'measured', `bench/sim-micro.ts submit: GuestQueue.submitWords per call beyond its commands (reserve, space check, PROD publish, kick check, PUB), in-thread, ${m.date}.`),
    exit_user: fixed(0, 'structural', 'The emulation\'s QEMU-shaped trap handler is a call on the vCPU\'s own thread: no exit.'),
    exit_kernel: fixed(m.notify_ns, 'measured', `The kick: Atomics.add + Atomics.notify, priced as Atomics.notify with nobody waiting (machine.notify_idle_ns), ${m.date}; the wake-up itself is \`wake\`.`),
    ioctl: fixed(m.wait_rtt_us * 1000, 'measured', `The emulation's ioctl is a mailbox request to the sleeping kernel thread and its answer: from the vCPU's thread (trap-qemu) on the other CPU, one bare Atomics.wait ping-pong round trip (bench/baselines.ts atomics-wait p50), ${at}.`),
    ioctl_iothread: fixed(m.local_wait_rtt_us * 1000, 'measured', `The iothread VMM's mailbox request to the kernel thread and its answer: both threads on the server CPU, so one Atomics.wait ping-pong round trip between two threads of one CPU (bench/baselines.ts startRelayPingPong, the relaying thread woken from the other CPU as the VMM is), p50, ${at}.`),
    bql: fixed(30, 'assumed', 'Not measured: an uncontended Atomics.compareExchange lock and its release, of the order of 20-40 ns.'),
    vmm_cmd: fixed(m.trap_ns_per_cmd, 'measured', `bench/micro.ts trap: the VMM's first pass and the kernel's IOMMU_HWPT_INVALIDATE handler with the model executing, per command (median block), ${m.date}.`),
    iommufd_cmd: fixed(0, 'structural', 'Included in vmm_cmd: bench/micro.ts\'s trap block times the first pass and the ioctl handler together.'),
    kthread_pass: fixed(m.pass_ns, 'measured', `bench/sim-micro.ts pass: Consumer.pass serving one queue beyond its commands (one TLBI per pass against 64), in-thread on the server CPU (bench/sim-micro.worker.ts), ${m.date}.`),
    kthread_cmd: fixed(m.consume_ns_per_cmd, 'measured', `bench/micro.ts consume: Consumer.pass per command (slot copy, vSMMU rewrite, decode, model execute, CONS publish), median block, in-thread on the server CPU (bench/sim-micro.worker.ts), ${m.date}.`),
    smmu_cmd: fixed(0, 'structural', 'The SMMU model executes inside the consume and trap steps, on the calling thread: its cost is in kthread_cmd and vmm_cmd.'),
    smmu_sync: fixed(0, 'structural', 'The model completes a CMD_SYNC inside the consume step (its cost is in kthread_cmd): no separate wait.'),
    wake: fixed((m.wait_rtt_us * 1000) / 2, 'measured', `Half a bare Atomics.wait ping-pong round trip (bench/baselines.ts atomics-wait p50 / 2): a futex wake-up and the woken thread running, ${at}.`),
    notice: fixed((m.spin_rtt_us * 1000) / 2, 'measured', `Half a bare spin ping-pong round trip (bench/baselines.ts atomics-spin p50 / 2): a store seen by a poller on the other CPU, ${at}.`),
    publish_line: fixed(m.stream_us * 1000, 'measured', `The spin pair streaming (bench/baselines.ts startPingStream: PING after PING, each with its slot, the poller answering each; the producer reads nothing the poller writes, as GuestQueue's cached CONS and a polled queue's publish), p50 per publish, ${at}.`),
    slot_lines: fixed(Math.max(0, m.shape_rtt_us - m.spin_rtt_us) * 1000, 'measured', `One line read behind the polled one: the 3-line spin ping-pong (PING plus a slot line, bench/baselines.ts startPingPong with SLOT_WORDS, as the anatomy's shape) p50 minus the bare one's, ${at}.`),
    hw_doorbell: fixed((m.spin_rtt_us * 1000) / 2 + Math.max(0, m.shape_rtt_us - m.spin_rtt_us) * 1000, 'measured', `The emulated hardware VCMDQ is read by a polling thread: PROD and the slot line behind it, as a polling kernel thread reads them (notice + slot_lines: atomics-spin p50 / 2 plus the 3-line spin ping-pong's excess over it), ${at}.`),
    hw_publish: fixed(m.stream_us * 1000, 'measured', `The emulated SMMU polls the guest's register page as a spinning kernel thread polls PROD: each PROD write takes the line back, as publish_line (the spin pair streaming, bench/baselines.ts startPingStream, p50 per publish), ${at}.`),
    hw_cmd: fixed(m.consume_ns_per_cmd, 'measured', `The emulated SMMU is a thread of the server CPU running the consume step on each command: as kthread_cmd (bench/micro.ts consume on the server CPU), ${m.date}.`),
    clock: fixed(m.clock_ns, 'measured', `performance.now() per call (harness singleThreadCosts), the bench's timer around each sample, ${m.date}.`),
  };
  return checkProfile({
    name: 'node-local',
    description: `This machine, measured by the bench's own microbenchmarks at ${m.date}: one fixed value per step.`,
    guest_wait: 'sleep-unless-spinning',
    guest_wait_source: 'GuestQueue waits for a CMD_SYNC by spinning for the kernel thread\'s spin budget, then Atomics.wait (src/guest.ts block); the trap transport\'s mailbox call sleeps (the VMM never spins).',
    steps,
  });
}

/** The measurements in one line (the notes of `vcmdq sim --profile node-local` and simcheck). */
export function nodeLocalNote(m: NodeLocalMeasurements): string {
  return `node-local measured at ${m.date}: round trips wait ${m.wait_rtt_us.toFixed(2)} µs, wait between two threads of the server CPU ${m.local_wait_rtt_us.toFixed(2)} µs, `
    + `spin ${m.spin_rtt_us.toFixed(2)} µs, 3-line spin ${m.shape_rtt_us.toFixed(2)} µs, spin stream ${m.stream_us.toFixed(3)} µs/publish; `
    + `consume ${m.consume_ns_per_cmd.toFixed(0)} ns/cmd + ${m.pass_ns.toFixed(0)} ns/pass on the server CPU (${m.consume_main_ns_per_cmd.toFixed(0)} ns/cmd on the main thread), trap ${m.trap_ns_per_cmd.toFixed(0)} ns/cmd, `
    + `submitWords ${m.submit_ns.toFixed(0)} ns/call + ${m.submit_cmd_ns.toFixed(1)} ns/cmd, notify ${m.notify_ns.toFixed(0)} ns, clock ${m.clock_ns.toFixed(0)} ns`;
}

/** What bench/sim-micro.worker.ts measures on the server CPU, ns. */
export interface ServerMicro {
  consume_ns_per_cmd: number;
  pass_ns: number;
}

/** The worker's message, checked: every field a finite number >= 0 (a worker of another build, or a crash, says otherwise). */
export function checkServerMicro(msg: unknown): ServerMicro {
  const o = (msg ?? {}) as Record<string, unknown>;
  for (const k of ['consume_ns_per_cmd', 'pass_ns'] as const) {
    const x = o[k];
    if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) throw new Error(`sim-micro.worker: ${k} is ${String(x)}, not a time in ns`);
  }
  return { consume_ns_per_cmd: o['consume_ns_per_cmd'] as number, pass_ns: o['pass_ns'] as number };
}

/** Runs bench/sim-micro.worker.ts on a thread of the server CPU (bench/affinity.ts), once placed; its measurements. */
export async function measureOnServerCpu(timeoutMs: number): Promise<ServerMicro> {
  const { value: w } = await startThreads('server', () => new Promise<Worker>((resolve, reject) => {
    const w = new Worker(workerUrl('sim-micro.worker.js'));
    w.once('online', () => resolve(w));
    w.once('error', reject);
  }));
  try {
    return await new Promise<ServerMicro>((resolve, reject) => {
      const timer = setTimeout(() => reject(new BenchTimeoutError(`sim-micro.worker: no measurements within ${timeoutMs} ms`)), timeoutMs);
      w.once('message', (msg: unknown) => {
        clearTimeout(timer);
        try {
          resolve(checkServerMicro(msg));
        } catch (e) {
          reject(e as Error);
        }
      });
      w.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      w.postMessage('go');
    });
  } finally {
    await w.terminate();
  }
}

/** Measures what nodeLocalProfile needs: five ping-pongs interleaved, the micro steps, the notify and clock costs (~10-30 s). */
export async function measureNodeLocal(progress: Progress, samples = 20_000): Promise<NodeLocalMeasurements> {
  const profile: Profile = { name: 'quick', warmup: Math.round(samples / 10), samples, rounds: 5, rewarm: 20, timeoutMs: 5000 };
  const paths = [
    await startBaseline('atomics-wait', profile), await startBaseline('atomics-spin', profile),
    await startPingPong('spin', { timeoutMs: profile.timeoutMs }, SLOT_WORDS), await startPingStream({ timeoutMs: profile.timeoutMs }),
    await startRelayPingPong({ timeoutMs: profile.timeoutMs }),
  ];
  let rtt: number[];
  try {
    const measured = await runInterleaved('sim node-local hops', paths, profile, progress);
    rtt = measured.map((m) => median(m.samples));
  } finally {
    await Promise.all(paths.map((p) => p.close()));
  }
  progress.update('[sim] node-local: in-thread micro steps');
  const consumeMain = runMicro('consume');
  const trap = runMicro('trap');
  const submit = measureSubmitCosts();
  const server = await measureOnServerCpu(60_000);
  const costs = await singleThreadCosts();
  return {
    wait_rtt_us: rtt[0]!, spin_rtt_us: rtt[1]!, shape_rtt_us: rtt[2]!, stream_us: rtt[3]!, local_wait_rtt_us: rtt[4]!,
    notify_ns: costs.notify_idle_ns, clock_ns: costs.clock_ns,
    submit_ns: submit.submit_ns, submit_cmd_ns: submit.submit_cmd_ns, pass_ns: server.pass_ns,
    consume_ns_per_cmd: server.consume_ns_per_cmd, consume_main_ns_per_cmd: consumeMain.ns_per_cmd, trap_ns_per_cmd: trap.ns_per_cmd,
    samples, date: new Date().toISOString(),
  };
}
