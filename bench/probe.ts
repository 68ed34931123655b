// One measurement of one build, for the perf gate's A/B rounds (bench/gate.ts
// runs `node <build>/probe.js` alternately for the base and the candidate and
// reads the one JSON line it prints). Every figure is a time per operation, so
// lower is better for all of them:
//  - consume_ns, trap_work_ns: the in-thread microbenchmarks (bench/micro.ts);
//  - rtt_*_p50_us: one TLBI_NH_VA + CMD_SYNC (CS=SEV) round trip on each path,
//    interleaved in rounds as the bench does;
//  - tput_b64_ns: doorbell-spin, ns per command at batch 64 (64 batches and
//    one CMD_SYNC per iteration, the model executing every command).
// spin_floor_us (the bare spin ping-pong) is reported, not judged: it tells
// which placement mode the two vCPUs were in (bench/placement.ts).
//
// VCMDQ_SLOWDOWN_NS (bench/slowdown.ts) slows this build's doorbell kernel
// thread and consume microbenchmark; the gate sets it for the candidate only.
import type { GuestQueue } from '../src/index.ts';
import { startBaseline } from './baselines.ts';
import { Progress, runInterleaved, type Profile } from './harness.ts';
import { runMicro } from './micro.ts';
import { openPath, tlbiNhVaWords, type OpenedPath } from './queue-api.ts';
import { SubmitPath } from './scenario-kit.ts';
import { slowdownNs } from './slowdown.ts';
import { median } from './stats.ts';
import type { QueuePathName } from './types.ts';

/** The figures one probe reports, by name (all lower-is-better). */
export const PROBE_METRICS = ['consume_ns', 'trap_work_ns', 'rtt_doorbell_spin_p50_us', 'rtt_doorbell_sleep_p50_us', 'rtt_trap_p50_us', 'tput_b64_ns'] as const;
export type ProbeMetric = (typeof PROBE_METRICS)[number];

export interface ProbeResult {
  metrics: Record<ProbeMetric, number>;
  spin_floor_us: number;
  slowdown_ns: number;
}

/** Small enough that a probe takes a few seconds, large enough that a p50 is stable to a few percent. */
const RTT_PROFILE: Profile = { name: 'quick', warmup: 300, samples: 1500, rounds: 3, rewarm: 20, timeoutMs: 5000 };
const TPUT_BATCH = 64;
const TPUT_LOG2SIZE = 10;
const TPUT_ITERS = 40;

async function roundTrips(slowdown: number): Promise<{ spin: number; sleep: number; trap: number; floor: number; spinPath: OpenedPath; all: OpenedPath[] }> {
  const names: QueuePathName[] = ['doorbell-spin', 'doorbell-sleep', 'trap'];
  const opened: OpenedPath[] = [];
  for (const n of names) opened.push(await openPath(n, { slowdownNs: slowdown }));
  const words = tlbiNhVaWords(0x40000);
  const paths = opened.map((o) => new SubmitPath(o.name, o.queue, words, 'sev', RTT_PROFILE.timeoutMs));
  const floor = await startBaseline('atomics-spin', { timeoutMs: RTT_PROFILE.timeoutMs });
  try {
    const m = await runInterleaved('gate', [...paths, floor], RTT_PROFILE, new Progress(process.stderr, false));
    const p50 = (k: number): number => median(m[k]!.samples);
    return { spin: p50(0), sleep: p50(1), trap: p50(2), floor: p50(3), spinPath: opened[0]!, all: opened };
  } catch (e) {
    await Promise.allSettled(opened.map((o) => o.close()));
    throw e;
  } finally {
    await floor.close();
  }
}

/** Median ns per command of TPUT_ITERS iterations of 64 batches of 64 (after as many untimed). */
function throughput(q: GuestQueue): number {
  const words = new Uint32Array(4 * TPUT_BATCH);
  for (let k = 0; k < TPUT_BATCH; k++) tlbiNhVaWords(0x40000 + k, words, 4 * k);
  const per = new Float64Array(TPUT_ITERS);
  for (let it = -TPUT_ITERS; it < TPUT_ITERS; it++) {
    const t0 = performance.now();
    for (let b = 1; b < 64; b++) q.submitWords(words, TPUT_BATCH, null, 5000);
    q.submitWords(words, TPUT_BATCH, 'sev', 5000);
    if (it >= 0) per[it] = ((performance.now() - t0) * 1e6) / (64 * TPUT_BATCH);
  }
  return median(per);
}

export async function runProbe(slowdown: number): Promise<ProbeResult> {
  const consume = runMicro('consume', { slowdownNs: slowdown }).ns_per_cmd;
  const trapWork = runMicro('trap').ns_per_cmd;
  const rt = await roundTrips(slowdown);
  try {
    const q = await rt.spinPath.vm.openQueue({ path: 'doorbell', log2size: TPUT_LOG2SIZE });
    const tput = throughput(q);
    return {
      metrics: {
        consume_ns: consume, trap_work_ns: trapWork,
        rtt_doorbell_spin_p50_us: rt.spin, rtt_doorbell_sleep_p50_us: rt.sleep, rtt_trap_p50_us: rt.trap,
        tput_b64_ns: tput,
      },
      spin_floor_us: rt.floor,
      slowdown_ns: slowdown,
    };
  } finally {
    await Promise.allSettled(rt.all.map((o) => o.close()));
  }
}

// Entry point of dist/probe.js: one JSON line on stdout; any failure is one line on stderr and exit 1.
if (process.argv[1] !== undefined && /probe\.js$/.test(process.argv[1])) {
  runProbe(slowdownNs()).then(
    (r) => process.stdout.write(`${JSON.stringify(r)}\n`),
    (e: unknown) => {
      process.stderr.write(`probe: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
