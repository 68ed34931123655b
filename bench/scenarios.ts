// The scenario registry: what each scenario measures and on which paths.
import { Bench } from 'tinybench';
import { startBaseline, type LatencyPath } from './baselines.ts';
import { latencyRow, runInterleaved, type MeasuredRow, type Profile, type Progress } from './harness.ts';
import { CS_MODES, openPath, queueApi, tlbiNhVa, type CommandObject, type CsMode, type OpenedPath, type QueueLike, type SubmitOptions } from './queue-api.ts';
import { BASELINE_PATHS, BenchUnavailableError, PATHS, type Params, type PathName, type QueuePathName, type ScenarioName } from './types.ts';

export interface ScenarioContext {
  profile: Profile;
  progress: Progress;
}

export interface ScenarioRun {
  measured: MeasuredRow[];
  notes: string[];
}

export interface ScenarioDef {
  name: ScenarioName;
  title: string;
  /** Also produces the baseline rows (the baselines run inside its rotation). */
  includesBaselines?: boolean;
  run(ctx: ScenarioContext): Promise<ScenarioRun>;
}

async function closeAll(items: { close(): Promise<void> }[]): Promise<void> {
  const errors = (await Promise.allSettled(items.map((p) => p.close()))).filter((r) => r.status === 'rejected');
  if (errors.length > 0) throw (errors[0] as PromiseRejectedResult).reason;
}

async function startBaselines(profile: Profile): Promise<LatencyPath[]> {
  const started: LatencyPath[] = [];
  try {
    for (const name of BASELINE_PATHS) started.push(await startBaseline(name, { timeoutMs: profile.timeoutMs }));
  } catch (e) {
    await closeAll(started);
    throw e;
  }
  return started;
}

/** Opens every queue path; a path whose start fails is reported, the others still run. */
async function openPaths(notes: string[]): Promise<OpenedPath[]> {
  queueApi(); // one clear "not available" when the whole API is missing
  const opened: OpenedPath[] = [];
  for (const name of PATHS) {
    try {
      opened.push(await openPath(name));
    } catch (e) {
      if (!(e instanceof BenchUnavailableError)) {
        await closeAll(opened.map((o) => o.host).map((h) => ({ close: () => h.stop() })));
        throw e;
      }
      notes.push(`${name}: not available (${e.message})`);
    }
  }
  if (opened.length === 0) throw new BenchUnavailableError(notes.join('; '));
  return opened;
}

function assertBlocking(r: unknown, path: string): void {
  if (r !== undefined && typeof (r as { then?: unknown }).then === 'function') {
    throw new BenchUnavailableError(`${path}: submit() returned a promise; the bench times the blocking submit`);
  }
}

/** One blocking submit per sample with a fixed, preallocated command list. */
class SubmitPath implements LatencyPath {
  readonly params: Params;
  private readonly opts: SubmitOptions;
  constructor(readonly name: QueuePathName, private readonly q: QueueLike, private readonly cmds: readonly CommandObject[], cs: CsMode, timeoutMs: number) {
    this.params = { cs };
    this.opts = { sync: true, cs, timeoutMs };
  }

  sample(out: Float64Array, from: number, count: number): void {
    const end = from + count;
    for (let i = from; i < end; i++) {
      const t0 = performance.now();
      assertBlocking(this.q.submit(this.cmds, this.opts), this.name);
      out[i] = (performance.now() - t0) * 1000;
    }
  }

  // The host is shared by this path's CS variants and stopped by the scenario.
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Keeps the CS modes a path accepts (one probe submit each); refusals become notes. */
function csVariants(o: OpenedPath, cmds: readonly CommandObject[], timeoutMs: number, notes: string[]): SubmitPath[] {
  const variants: SubmitPath[] = [];
  for (const cs of CS_MODES) {
    try {
      assertBlocking(o.queue.submit(cmds, { sync: true, cs, timeoutMs }), o.name);
      variants.push(new SubmitPath(o.name, o.queue, cmds, cs, timeoutMs));
    } catch (e) {
      if (e instanceof BenchUnavailableError) throw e;
      notes.push(`${o.name}: CS=${cs.toUpperCase()} not supported (${e instanceof Error ? e.message : String(e)})`);
    }
  }
  return variants;
}

const baseline: ScenarioDef = {
  name: 'baseline',
  title: 'Baselines: bare round trips between two threads (producer = main thread)',
  async run({ profile, progress }) {
    const paths = await startBaselines(profile);
    try {
      const measured = await runInterleaved('baseline', paths, profile, progress);
      return { measured: measured.map((m) => latencyRow('baseline', m.path.name as PathName, m.path.params, m.samples, m.cpuUs)), notes: [] };
    } finally {
      await closeAll(paths);
    }
  },
};

const roundtrip: ScenarioDef = {
  name: 'roundtrip',
  title: 'Single invalidation round trip: TLBI_NH_VA + CMD_SYNC, submit to completion',
  includesBaselines: true,
  async run({ profile, progress }) {
    const notes: string[] = [];
    const opened = await openPaths(notes);
    const cmds = [tlbiNhVa(0x40000)];
    let baselines: LatencyPath[] = [];
    try {
      const variants = opened.flatMap((o) => csVariants(o, cmds, profile.timeoutMs, notes));
      baselines = await startBaselines(profile);
      const measured = await runInterleaved('roundtrip', [...variants, ...baselines], profile, progress);
      const rows = measured.map((m) => {
        const isBaseline = (BASELINE_PATHS as readonly string[]).includes(m.path.name);
        return latencyRow(isBaseline ? 'baseline' : 'roundtrip', m.path.name as PathName, m.path.params, m.samples, m.cpuUs);
      });
      return { measured: rows, notes };
    } finally {
      await closeAll([...baselines, ...opened.map((o) => ({ close: () => o.host.stop() }))]);
    }
  },
};

export const THROUGHPUT_BATCHES = [1, 16, 64, 256] as const;
/** Commands per timed iteration: whole batches, one CMD_SYNC at the end, so every batch size moves the same work. */
const COMMANDS_PER_ITERATION = 4096;

/**
 * tinybench fits here (unlike the round trip): one iteration moves 4096
 * commands, so its per-iteration overhead (an async call and two clock reads,
 * ~0.1-1 µs) is noise against the iteration, and it supplies warm-up,
 * time-boxing and statistics. Paths run round-robin: one tinybench task per
 * path and batch size, in rotated order per round, samples merged.
 */
const throughput: ScenarioDef = {
  name: 'throughput',
  title: `Batched throughput: ${COMMANDS_PER_ITERATION} commands per iteration in batches, one CMD_SYNC, model executing every command`,
  async run({ profile, progress }) {
    const notes: string[] = [];
    const opened = await openPaths(notes);
    try {
      const rounds = profile.rounds;
      const iterationsPerRound = Math.max(4, Math.round(profile.samples / 100 / rounds));
      const tasks = opened.flatMap((o) => THROUGHPUT_BATCHES.map((batch) => {
        const cmds = Array.from({ length: batch }, (_, k) => tlbiNhVa(0x40000 + k));
        const nosync: SubmitOptions = { sync: false, timeoutMs: profile.timeoutMs };
        const sync: SubmitOptions = { sync: true, cs: 'sev', timeoutMs: profile.timeoutMs };
        const perIter = Math.ceil(COMMANDS_PER_ITERATION / batch);
        const fn = (): void => {
          for (let b = 1; b < perIter; b++) assertBlocking(o.queue.submit(cmds, nosync), o.name);
          assertBlocking(o.queue.submit(cmds, sync), o.name);
        };
        return { key: `${o.name}/${batch}`, path: o.name, batch, commands: perIter * batch, fn, samplesMs: [] as number[], cpuUs: 0, cpu0: process.cpuUsage() };
      }));
      for (let r = 0; r < rounds; r++) {
        progress.update(`[bench] throughput: round ${r + 1}/${rounds}`);
        const order = tasks.map((_, k) => tasks[(k + r) % tasks.length]!);
        const bench = new Bench({ iterations: iterationsPerRound, time: 0, warmup: true, warmupIterations: r === 0 ? 10 : 2, warmupTime: 0, retainSamples: true });
        for (const t of order) {
          bench.add(t.key, t.fn, {
            // Only the timed phase counts: warm-up commands are not in the divisor.
            beforeAll: (mode) => { if (mode === 'run') t.cpu0 = process.cpuUsage(); },
            afterAll: (mode) => { if (mode === 'run') { const c = process.cpuUsage(t.cpu0); t.cpuUs += c.user + c.system; } },
          });
        }
        await bench.run();
        for (const t of order) {
          const res = bench.getTask(t.key)?.result;
          if (!res || !('latency' in res)) throw new Error(`throughput ${t.key}: ${res && 'error' in res ? res.error.message : res?.state}`);
          for (const ms of res.latency.samples ?? []) t.samplesMs.push(ms);
        }
      }
      const rows = tasks.map((t) => {
        // Per-command µs, so the latency columns read as the cost of one command.
        const perCmd = Float64Array.from(t.samplesMs, (ms) => (ms * 1000) / t.commands);
        const m = latencyRow('throughput', t.path, { batch: t.batch, commands_per_iteration: t.commands }, perCmd, null);
        m.row.cpu_us_per_op = t.cpuUs / (t.commands * t.samplesMs.length);
        return { row: m.row };
      });
      return { measured: rows, notes };
    } finally {
      await closeAll(opened.map((o) => ({ close: () => o.host.stop() })));
    }
  },
};

function pending(name: ScenarioName, title: string, needs: string): ScenarioDef {
  return {
    name,
    title,
    async run() {
      throw new BenchUnavailableError(`not available yet: needs ${needs}`);
    },
  };
}

export const SCENARIO_REGISTRY: readonly ScenarioDef[] = [
  baseline,
  roundtrip,
  pending('unmap', 'DMA-unmap latency per granule, 1 and 2 guest vCPUs (dma_map_benchmark shape)', 'host.dma() and GuestQueue.attach in a vCPU worker'),
  throughput,
  pending('svastorm', 'vSVA storm: munmap / mprotect / COW breaks blocking on each invalidation', 'host.dma() and the SVA mapping helpers'),
  pending('gapsweep', 'Gap sweep: arrival gap x spin budget, latency and kernel-thread CPU per command', "the kernel thread's own CPU time (per-thread schedstat) exported by the host"),
];

export function scenarioByName(name: string): ScenarioDef | undefined {
  return SCENARIO_REGISTRY.find((s) => s.name === name);
}
