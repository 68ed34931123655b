// What every scenario module shares: the scenario contract, opening and closing
// paths, and the blocking submit sample. The gate's probe imports this module
// (SubmitPath), and the gate bundles the probe against the *base* commit's
// src/, so nothing here may import a src/ export newer than the gate's base;
// new scenarios live in their own bench/scenario-*.ts modules, which the probe
// never reaches.
import type { Command, CsMode as LibCsMode, GuestQueue } from '../src/index.ts';
import { startBaseline, type LatencyPath } from './baselines.ts';
import type { MeasuredRow, Profile, Progress } from './harness.ts';
import { CS_MODES, openPath, type CsMode, type OpenedPath, type PathOptions } from './queue-api.ts';
import { BASELINE_PATHS, BenchUnavailableError, PATHS, type Params, type QueuePathName, type ScenarioName } from './types.ts';

export interface ScenarioContext {
  profile: Profile;
  progress: Progress;
  /** ns of extra work per command in the doorbell kernel thread (VCMDQ_SLOWDOWN_NS): the gate's self-test. */
  slowdownNs: number;
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

export async function closeAll(items: { close(): Promise<void> }[]): Promise<void> {
  const errors = (await Promise.allSettled(items.map((p) => p.close()))).filter((r) => r.status === 'rejected');
  if (errors.length > 0) throw (errors[0] as PromiseRejectedResult).reason;
}

export async function startBaselines(profile: Profile): Promise<LatencyPath[]> {
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
export async function openPaths(ctx: ScenarioContext, notes: string[], names: readonly QueuePathName[] = PATHS, opts: PathOptions = {}): Promise<OpenedPath[]> {
  const opened: OpenedPath[] = [];
  for (const name of names) {
    try {
      opened.push(await openPath(name, { slowdownNs: ctx.slowdownNs, ...opts }));
    } catch (e) {
      if (!(e instanceof BenchUnavailableError)) {
        await closeAll(opened);
        throw e;
      }
      notes.push(`${name}: not available (${e.message})`);
    }
  }
  if (opened.length === 0) throw new BenchUnavailableError(notes.join('; '));
  return opened;
}

/**
 * One blocking submit (TLBI_NH_VA + CMD_SYNC) per sample, of one command
 * given as its 4 words (`submitWords`, params.api 'words') or as a command
 * object (`submit`, the convenience API, api 'objects'; its options object is
 * built once). Neither form allocates per sample. `engine`: the path's own
 * poller (OpenedPath.active), run only while this path samples, with one
 * untimed submit after starting it so no sample pays its wake-up.
 */
export class SubmitPath implements LatencyPath {
  readonly params: Params;
  private readonly words: Uint32Array | null;
  private readonly cmds: readonly Command[] | null;
  private readonly opts: { cs: LibCsMode; timeoutMs: number };
  constructor(readonly name: QueuePathName, private readonly q: GuestQueue, command: Uint32Array | readonly Command[], private readonly cs: CsMode, private readonly timeoutMs: number,
    private readonly engine?: { active(on: boolean): void }) {
    this.words = command instanceof Uint32Array ? command : null;
    this.cmds = command instanceof Uint32Array ? null : command;
    this.params = { cs, api: this.words !== null ? 'words' : 'objects' };
    this.opts = { cs: cs as LibCsMode, timeoutMs };
  }

  sample(out: Float64Array, from: number, count: number): void {
    const { q, words, cmds, cs, timeoutMs, opts, engine } = this;
    if (engine !== undefined) {
      engine.active(true);
      q.submit(cmds ?? [], opts);
    }
    try {
      const end = from + count;
      for (let i = from; i < end; i++) {
        const t0 = performance.now();
        if (words !== null) q.submitWords(words, 1, cs as LibCsMode, timeoutMs);
        else q.submit(cmds!, opts);
        out[i] = (performance.now() - t0) * 1000;
      }
    } finally {
      engine?.active(false);
    }
  }

  // The host is shared by this path's CS variants and stopped by the scenario.
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Keeps the CS modes a path accepts (one probe submit each); refusals become
 * notes, and a refused command is skipped (Linux's __arm_smmu_cmdq_skip_err)
 * so the queue goes on. The hw path's SMMU polls only while it probes and samples.
 */
export function csVariants(o: OpenedPath, words: Uint32Array, timeoutMs: number, notes: string[]): SubmitPath[] {
  const variants: SubmitPath[] = [];
  const engine = o.name === 'hw' ? o : undefined;
  engine?.active(true);
  try {
    for (const cs of CS_MODES) {
      try {
        o.queue.submitWords(words, 1, cs, timeoutMs);
        variants.push(new SubmitPath(o.name, o.queue, words, cs, timeoutMs, engine));
      } catch (e) {
        notes.push(`${o.name}: CS=${cs.toUpperCase()} not supported (${e instanceof Error ? e.message : String(e)})`);
        if (o.queue.skipFaultingCommand()) o.queue.drain(timeoutMs);
      }
    }
  } finally {
    engine?.active(false);
  }
  return variants;
}

