// The scenario registry: what each scenario measures and on which paths.
// Shared pieces are in scenario-kit.ts; a new scenario goes in its own
// bench/scenario-*.ts module and gets one entry here.
import { Bench } from 'tinybench';
import { ACCESS, PROT } from '../src/index.ts';
import type { LatencyPath } from './baselines.ts';
import { latencyRow, runInterleaved, type Profile } from './harness.ts';
import { SubmitPath, closeAll, csVariants, openPaths, startBaselines, type ScenarioDef } from './scenario-kit.ts';
import { mp } from './scenario-mp.ts';
import { ASID, STREAM, tlbiNhVaCommand, tlbiNhVaWords, type OpenedPath } from './queue-api.ts';
import { BASELINE_PATHS, MORE_PATHS, PATHS, type Params, type PathName, type QueuePathName } from './types.ts';
import { anatomy } from './scenario-anatomy.ts';
import { gapsweep } from './scenario-gapsweep.ts';
import { runUnmap } from './unmap.ts';
import { simcheck } from './scenario-simcheck.ts';
import { scale } from './scenario-scale.ts';

export type { ScenarioContext, ScenarioDef, ScenarioRun } from './scenario-kit.ts';

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

/** Why the hw path's CPU figures are its own (2 CPUs: a polling SMMU must not run beside the other paths). */
const HW_NOTE = "hw: its SMMU (the host's kernel thread) polls without sleeping while a hw queue is enabled, burning one of the 2 CPUs; the bench enables the hw queue only while the hw path is measured (each sample chunk, each throughput task) and parks it otherwise, so the other paths never run beside it. Its CMD_SYNCs are CS=NONE (Tegra241 takes no other), the guest busy-polls CONS with the 50 µs spin budget.";

const roundtrip: ScenarioDef = {
  name: 'roundtrip',
  title: 'Single invalidation round trip: TLBI_NH_VA + CMD_SYNC, submit to completion (submitWords per CS; submit with objects, CS=SEV, NONE on hw; trap: iothread-style VMM thread; trap-qemu: on the vCPU thread under the BQL; hw: Tegra241 VCMDQ, CS=NONE)',
  includesBaselines: true,
  async run(ctx) {
    const { profile, progress } = ctx;
    const notes: string[] = [HW_NOTE];
    const opened = await openPaths(ctx, notes, [...PATHS, ...MORE_PATHS]);
    const words = tlbiNhVaWords(0x40000);
    const cmds = [tlbiNhVaCommand(0x40000)];
    let baselines: LatencyPath[] = [];
    try {
      const variants = opened.flatMap((o) => csVariants(o, words, profile.timeoutMs, notes));
      // The convenience API beside the raw one, same command and sync, in the same rotation (issue #15: submit / submitWords).
      // hw takes CS=NONE only, and its SMMU polls only while it samples.
      const objects = opened.map((o) => (o.name === 'hw' ? new SubmitPath(o.name, o.queue, cmds, 'none', profile.timeoutMs, o) : new SubmitPath(o.name, o.queue, cmds, 'sev', profile.timeoutMs)));
      baselines = await startBaselines(profile);
      const measured = await runInterleaved('roundtrip', [...variants, ...objects, ...baselines], profile, progress);
      const rows = measured.map((m) => {
        const isBaseline = (BASELINE_PATHS as readonly string[]).includes(m.path.name);
        return latencyRow(isBaseline ? 'baseline' : 'roundtrip', m.path.name as PathName, m.path.params, m.samples, m.cpuUs);
      });
      return { measured: rows, notes };
    } finally {
      await closeAll([...baselines, ...opened]);
    }
  },
};

export const THROUGHPUT_BATCHES = [1, 16, 64, 256] as const;
/** Commands per timed iteration: 64 batches, at most 4096 commands, one CMD_SYNC at the end (batch 1 trapped costs ~55 µs a command). */
const COMMANDS_PER_ITERATION = 4096;
const commandsPerIteration = (batch: number): number => Math.min(COMMANDS_PER_ITERATION, 64 * batch);
/** Queue of 1024 entries: several 64-command publishes in flight, so the producer rarely waits for space. */
const THROUGHPUT_LOG2SIZE = 10;

/**
 * tinybench fits here (unlike the round trip): one iteration moves 4096
 * commands, so its per-iteration overhead (an async call and two clock reads,
 * ~0.1-1 µs) is noise against the iteration, and it supplies warm-up,
 * time-boxing and statistics. Paths run round-robin: one tinybench task per
 * path and batch size, in rotated order per round, samples merged.
 */
const throughput: ScenarioDef = {
  name: 'throughput',
  title: `Batched throughput: 64 batches (at most ${COMMANDS_PER_ITERATION} commands) per iteration, one CMD_SYNC, model executing every command (all paths of the round trip)`,
  async run(ctx) {
    const { profile, progress } = ctx;
    const notes: string[] = [HW_NOTE];
    const opened = await openPaths(ctx, notes, [...PATHS, ...MORE_PATHS]);
    try {
      const queues = await Promise.all(opened.map((o) => o.openQueue(THROUGHPUT_LOG2SIZE)));
      const rounds = profile.rounds;
      const iterationsPerRound = Math.max(4, Math.round(profile.samples / 100 / rounds));
      const tasks = opened.flatMap((o, oi) => THROUGHPUT_BATCHES.map((batch) => {
        const q = queues[oi]!;
        const words = new Uint32Array(4 * batch);
        for (let k = 0; k < batch; k++) tlbiNhVaWords(0x40000 + k, words, 4 * k);
        const perIter = Math.ceil(commandsPerIteration(batch) / batch);
        const timeoutMs = profile.timeoutMs;
        // A Tegra241 VCMDQ takes CS=NONE only (the guest busy-polls CONS).
        const cs = o.name === 'hw' ? 'none' : 'sev';
        // One call per batch, as a driver issues a command list; the last one carries the CMD_SYNC.
        const fn = (): void => {
          for (let b = 1; b < perIter; b++) q.submitWords(words, batch, null, timeoutMs);
          q.submitWords(words, batch, cs, timeoutMs);
        };
        return { key: `${o.name}/${batch}`, path: o.name, batch, commands: perIter * batch, fn, samplesMs: [] as number[], cpuUs: 0, cpu0: process.cpuUsage(), o };
      }));
      for (let r = 0; r < rounds; r++) {
        progress.update(`[bench] throughput: round ${r + 1}/${rounds}`);
        const order = tasks.map((_, k) => tasks[(k + r) % tasks.length]!);
        const bench = new Bench({ iterations: iterationsPerRound, time: 0, warmup: true, warmupIterations: r === 0 ? 10 : 2, warmupTime: 0, retainSamples: true });
        for (const t of order) {
          bench.add(t.key, t.fn, {
            // Only the timed phase counts: warm-up commands are not in the divisor. The hw SMMU polls only while its task runs.
            beforeAll: (mode) => {
              t.o.active(true);
              if (mode === 'run') t.cpu0 = process.cpuUsage();
            },
            afterAll: (mode) => {
              if (mode === 'run') { const c = process.cpuUsage(t.cpu0); t.cpuUs += c.user + c.system; }
              t.o.active(false);
            },
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
      await closeAll(opened);
    }
  },
};

/** SVA "process" address space: 64 pages from here, backed by guest data pages. */
const SVA_VA = 0x7f00_0000_0000;
const SVA_PAGES = 64;
const SVA_DATA_IPA = 0x20_0000;
/** munmap / mprotect size: 4 pages, Linux's typical small munmap; a COW break is one page. */
const SVA_SPAN = 4;

/**
 * vSVA storm: a guest process's mm maintenance on its own stage-1 table (the
 * CD's TTB0 is the process page table), each operation blocking on its
 * invalidation as arm_smmu_mm_arch_invalidate_secondary_tlbs does. Before
 * each operation the device (a DMA agent) touches the page, so the IOTLB has
 * a live entry to invalidate. The op cycles: mprotect(RO) of 4 pages,
 * COW break (one page pointed at a fresh frame, RW), munmap of 4 pages
 * (re-mmapped untimed afterwards: mmap needs no invalidation).
 */
class SvaStormPath implements LatencyPath {
  readonly params: Params = { ops: 'mprotect,cow,munmap', span_pages: SVA_SPAN };
  private k = 0;
  constructor(readonly name: QueuePathName, private readonly o: OpenedPath, private readonly pt: ReturnType<OpenedPath['vm']['pageTable']>,
    private readonly dma: { translateRaw(psid: number, ssid: number, iova: number, access: number, timeoutMs?: number): number }, private readonly timeoutMs: number) {}

  sample(out: Float64Array, from: number, count: number): void {
    const { pt, o, dma, timeoutMs } = this;
    const q = o.queue;
    const opts = { cs: 'sev' as const, timeoutMs };
    for (let i = from; i < from + count; i++) {
      const op = this.k % 3;
      const page = Math.floor(this.k / 3) % (SVA_PAGES / SVA_SPAN) * SVA_SPAN;
      const va = SVA_VA + page * 4096;
      this.k++;
      if (dma.translateRaw(STREAM.psid, -1, va, ACCESS.READ, timeoutMs) !== 0) throw new Error(`svastorm ${this.name}: page 0x${va.toString(16)} not mapped before its op`);
      const t0 = performance.now();
      if (op === 0) {
        pt.protect(va, SVA_SPAN * 4096, PROT.READ);
        q.invalidateRange(ASID, va, SVA_SPAN * 4096, 4096, true, opts);
      } else if (op === 1) {
        pt.map(va, SVA_DATA_IPA + ((page + this.k) % SVA_PAGES) * 4096, 4096, PROT.READ | PROT.WRITE);
        q.invalidateRange(ASID, va, 4096, 4096, true, opts);
      } else {
        pt.unmap(va, SVA_SPAN * 4096);
        q.invalidateRange(ASID, va, SVA_SPAN * 4096, 4096, true, opts);
      }
      out[i] = (performance.now() - t0) * 1000;
      if (op === 2) pt.map(va, SVA_DATA_IPA + page * 4096, SVA_SPAN * 4096, PROT.READ | PROT.WRITE);
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

const svastorm: ScenarioDef = {
  name: 'svastorm',
  title: 'vSVA storm: mprotect / COW break / munmap on the process page table, each blocking on its invalidation',
  async run(ctx) {
    const { profile, progress } = ctx;
    const notes: string[] = [];
    const opened = await openPaths(ctx, notes);
    try {
      const paths: LatencyPath[] = [];
      for (const o of opened) {
        const pt = o.vm.pageTable();
        await o.vm.attachDevice({ vsid: STREAM.vsid, cd: { asid: ASID, ttb0: pt.root } });
        pt.map(SVA_VA, SVA_DATA_IPA, SVA_PAGES * 4096, PROT.READ | PROT.WRITE);
        paths.push(new SvaStormPath(o.name, o, pt, await o.host.dma(), profile.timeoutMs));
      }
      // Each op is a few hundred µs on the trap path: a fifth of the latency profile keeps the quick run short.
      const p: Profile = { ...profile, warmup: Math.round(profile.warmup / 5), samples: Math.round(profile.samples / 5) };
      const measured = await runInterleaved('svastorm', paths, p, progress);
      return { measured: measured.map((m) => latencyRow('svastorm', m.path.name as PathName, m.path.params, m.samples, m.cpuUs)), notes };
    } finally {
      await closeAll(opened);
    }
  },
};

const unmap: ScenarioDef = {
  name: 'unmap',
  title: 'DMA-unmap latency per mapping size, 1 and 2 guest vCPUs (dma_map_benchmark shape)',
  run: runUnmap,
};

export const SCENARIO_REGISTRY: readonly ScenarioDef[] = [baseline, roundtrip, unmap, throughput, svastorm, gapsweep, anatomy, simcheck, mp, scale];

export function scenarioByName(name: string): ScenarioDef | undefined {
  return SCENARIO_REGISTRY.find((s) => s.name === name);
}
