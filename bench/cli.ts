// `vcmdq bench` and `vcmdq gate`: argument parsing and file output.
import { accessSync, constants, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError } from '../src/cli/usage.ts';
import { buildBase, buildProbe, describeCandidate, GateBaseError, makeTmp, resolveCommit, runRounds, type AbRun, type Arm } from './ab.ts';
import { BASELINE_NOTE, baselineProblem, judge, median, METRIC_DEFS, regressions, type BaselineFile, type GateMetric, type Verdict } from './gate.ts';
import { machineInfo, PROFILES, Progress } from './harness.ts';
import { describePlacement, placementMode, type Placement } from './placement.ts';
import type { ProbeResult } from './probe.ts';
import { fmt, formatReport, runBench, toJsonDocument, type BenchReport } from './report.ts';
import { SLOWDOWN_ENV, slowdownNs } from './slowdown.ts';
import { renderCdfSvg, seriesOf } from './svg.ts';
import { SCENARIOS, type ScenarioName } from './types.ts';

export const BENCH_USAGE = `usage: vcmdq bench [--quick] [--scenario NAME]... [--json FILE] [--svg FILE]
  scenarios: ${SCENARIOS.join(', ')} (default: all)
  --quick      fewer samples (whole run ~2.5 min on 2 cores, most of it throughput)
  --json FILE  results document (schema: README "Benchmark JSON")
  --svg FILE   round-trip latency CDFs of all paths and baselines`;

const DEFAULT_BASELINE = 'bench/baseline.json';
/** Rounds of each build: a probe takes ~1.3 s on an idle 2-core machine, so 20 rounds a side keep a gate run near one minute while narrowing the intervals by sqrt(2) over 10. */
const DEFAULT_ROUNDS = 20;
const DEFAULT_SELFTEST_SLOWDOWNS = '10,25,50,100';
/** The detection floor the gate promises (issue #11): this much extra work per command always fails it. */
const SELFTEST_MUST_CATCH_NS = 50;

export const GATE_USAGE = `usage: vcmdq gate [--baseline FILE] [--base REF] [--rounds N] [--json FILE] [--allow-missing-base]
       vcmdq gate --selftest [--slowdowns NS,NS,...] [--rounds N] [--json FILE]
       vcmdq gate --set-base REF [--baseline FILE]
  builds the base commit (FILE's "base.commit", or REF) and this tree, runs them alternately for N rounds
  (default ${DEFAULT_ROUNDS}) and fails a metric when the 95% interval of candidate/base lies beyond its threshold.
  --allow-missing-base  a base that is not in this clone (shallow clone) skips the gate with a message, exit 0
  --selftest            adds candidate builds slowed by ${SLOWDOWN_ENV} ns of work per command; reports the
                        smallest slowdown each metric catches; exit 1 unless the unchanged candidate passes and
                        ${SELFTEST_MUST_CATCH_NS} ns fails
  --set-base REF        records REF's commit as the base in FILE (do it in the commit that accepts a speed change)
  ${SLOWDOWN_ENV}=NS    slows the candidate's doorbell kernel thread by NS ns of work per command (never the base)`;

function parseScenarios(values: string[] | undefined): ScenarioName[] {
  if (!values || values.length === 0) return [...SCENARIOS];
  for (const v of values) {
    if (!(SCENARIOS as readonly string[]).includes(v)) throw new UsageError(`unknown scenario ${v} (one of ${SCENARIOS.join(', ')})`);
  }
  return values as ScenarioName[];
}


function writeOutputs(report: BenchReport, json: string | undefined, svg: string | undefined): void {
  if (json) writeFileSync(json, `${JSON.stringify(toJsonDocument(report), null, 2)}\n`);
  if (svg) {
    const p = report.profile;
    writeFileSync(svg, renderCdfSvg(seriesOf(report.measured), report.machine, `${p.samples} samples per path, ${p.name} profile`));
  }
}

/** `vcmdq bench ...`; returns the exit status. Errors reach the dispatcher (src/cli.ts), which prints them as one line. */
export async function benchMain(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      quick: { type: 'boolean', default: false },
      scenario: { type: 'string', multiple: true },
      json: { type: 'string' },
      svg: { type: 'string' },
    },
    strict: true,
  });
  checkWritable(values.json, '--json');
  checkWritable(values.svg, '--svg');
  const report = await runBench({
    profile: values.quick ? PROFILES.quick : PROFILES.full,
    scenarios: parseScenarios(values.scenario),
    progress: new Progress(),
    slowdownNs: slowdownNs(),
  });
  process.stdout.write(`${formatReport(report)}\n`);
  writeOutputs(report, values.json, values.svg);
  return report.measured.length > 0 && report.failed.length === 0 ? 0 : 1;
}

/** An output file must be writable BEFORE a run of minutes, not found unwritable after it. */
function checkWritable(file: string | undefined, option: string): void {
  if (file === undefined) return;
  try {
    if (existsSync(file)) accessSync(file, constants.W_OK);
    else accessSync(path.dirname(path.resolve(file)), constants.W_OK);
  } catch {
    throw new UsageError(`${option} ${file}: cannot write there`);
  }
}

function loadBaseline(file: string): BaselineFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`--baseline ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--baseline ${file}: not JSON (${(e as Error).message})`);
  }
  const problem = baselineProblem(parsed);
  if (problem !== null) throw new UsageError(`--baseline ${file}: ${problem}`);
  return parsed as BaselineFile;
}

function pct(x: number): string {
  return `${x >= 1 ? '+' : ''}${((x - 1) * 100).toFixed(1)}%`;
}

export function formatVerdicts(verdicts: readonly Verdict[], label: string): string {
  const head = ['metric', 'threshold', 'base p50', `${label} p50`, 'ratio', '95% interval', 'rounds', 'verdict'];
  const body = verdicts.map((v) => [
    v.metric.name, `+${Math.round(v.metric.threshold * 100)}%`, fmt(v.baseMedian), fmt(v.candMedian),
    v.interval ? pct(v.interval.ratio) : '-', v.interval ? `[${pct(v.interval.lo)}, ${pct(v.interval.hi)}]` : '-',
    `${v.baseRounds}/${v.candRounds}`, v.status.toUpperCase(),
  ]);
  const widths = head.map((h, c) => Math.max(h.length, ...body.map((r) => r[c]!.length)));
  const line = (r: string[]): string => r.map((x, c) => x.padEnd(widths[c]!)).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

function parseSlowdowns(raw: string): number[] {
  const xs = raw.split(',').map((x) => Number(x.trim()));
  if (xs.length === 0 || xs.some((x) => !Number.isInteger(x) || x <= 0 || x > 1_000_000)) throw new UsageError(`--slowdowns ${raw}: expected whole ns values in (0, 1000000], comma-separated`);
  return [...new Set(xs)].sort((a, b) => a - b);
}

function parseRounds(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_ROUNDS;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 3 || n > 100) throw new UsageError(`--rounds ${raw}: expected a whole number in [3, 100]`);
  return n;
}

/** Per arm, the verdicts of every metric against the base. */
function verdictsOf(run: AbRun, metrics: readonly GateMetric[], arm: string): Verdict[] {
  const base = run.results.get('base')!;
  const cand = run.results.get(arm)!;
  // One seed per metric: the verdicts of a run can be recomputed from its --json rounds.
  return metrics.map((m, k) => judge(m, base.map((r) => r.metrics[m.name]), cand.map((r) => r.metrics[m.name]), k + 1));
}

function placementOf(results: readonly ProbeResult[]): Placement {
  const floor = median(results.map((r) => r.spin_floor_us));
  return { mode: placementMode(floor), spin_floor_us: floor };
}

/** `vcmdq gate ...`; returns the exit status (0 pass, 1 regression); errors as for bench. */
export async function gateMain(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      baseline: { type: 'string', default: DEFAULT_BASELINE },
      base: { type: 'string' },
      rounds: { type: 'string' },
      json: { type: 'string' },
      'allow-missing-base': { type: 'boolean', default: false },
      selftest: { type: 'boolean', default: false },
      slowdowns: { type: 'string' },
      'set-base': { type: 'string' },
    },
    strict: true,
  });
  const root = process.cwd();
  const file = values.baseline;
  const rounds = parseRounds(values.rounds);
  checkWritable(values.json, '--json');
  if (values['set-base'] !== undefined) {
    // An old or damaged file is replaced whole; a valid one keeps its thresholds.
    let old: BaselineFile | null = null;
    try {
      old = loadBaseline(file);
    } catch {
      old = null;
    }
    const commit = resolveCommit(root, values['set-base']);
    checkWritable(file, '--baseline');
    const next: BaselineFile = { note: BASELINE_NOTE, base: { commit, why: `set by vcmdq gate --set-base ${values['set-base']}` }, metrics: old?.metrics ?? [...METRIC_DEFS] };
    writeFileSync(file, `${JSON.stringify(next, null, 2)}\n`);
    process.stdout.write(`gate: base is now ${commit} in ${file}\n`);
    return 0;
  }
  const baseline = loadBaseline(file);
  const candSlowdown = slowdownNs();
  const slowdowns = values.selftest ? parseSlowdowns(values.slowdowns ?? DEFAULT_SELFTEST_SLOWDOWNS) : [];
  if (values.slowdowns !== undefined && !values.selftest) throw new UsageError('--slowdowns goes with --selftest');
  const ref = values.base ?? baseline.base.commit;
  let commit: string;
  try {
    commit = resolveCommit(root, ref);
  } catch (e) {
    if (e instanceof GateBaseError && values['allow-missing-base']) {
      process.stdout.write(`gate: SKIPPED: ${e.message}; no A/B comparison was made\n`);
      return 0;
    }
    throw e;
  }
  const cand = describeCandidate(root);
  const tmp = makeTmp();
  const progress = new Progress();
  try {
    const t0 = performance.now();
    progress.log(`[gate] building base ${commit.slice(0, 12)} and candidate ${cand.commit.slice(0, 12)}${cand.dirty ? ' (+ uncommitted changes)' : ''}`);
    const baseDir = await buildBase(root, commit, tmp);
    const candDir = path.join(tmp, 'candidate');
    await buildProbe(root, candDir, path.join(root, 'node_modules'));
    const arms: Arm[] = [{ label: 'base', dir: baseDir, slowdownNs: 0 }, { label: 'candidate', dir: candDir, slowdownNs: candSlowdown }];
    for (const ns of slowdowns) arms.push({ label: `candidate+${ns}ns`, dir: candDir, slowdownNs: candSlowdown + ns });
    if (candSlowdown > 0) progress.log(`[gate] ${SLOWDOWN_ENV}=${candSlowdown}: the candidate is slowed down on purpose`);
    const run = await runRounds(arms, rounds, (r) => progress.log(`[gate] round ${r + 1}/${rounds} (${arms.map((a) => a.label).join(', ')})`));
    const seconds = (performance.now() - t0) / 1000;
    const metrics = baseline.metrics;
    const out: string[] = [
      `gate: candidate ${cand.commit.slice(0, 12)}${cand.dirty ? '+dirty' : ''} vs base ${commit.slice(0, 12)}, ${rounds} alternating rounds, ${seconds.toFixed(0)} s`,
      ...arms.map((a) => `gate: ${a.label}: ${describePlacement(placementOf(run.results.get(a.label)!))}`),
    ];
    const byArm = new Map(arms.slice(1).map((a) => [a.label, verdictsOf(run, metrics, a.label)]));
    for (const [label, vs] of byArm) out.push('', `## ${label} / base`, formatVerdicts(vs, label));
    const verdicts = byArm.get('candidate')!;
    let status = 0;
    if (values.selftest) {
      out.push('', 'gate: self-test: smallest slowdown each metric catches (FAIL in this run)');
      for (const m of metrics) {
        const caught = slowdowns.find((ns) => byArm.get(`candidate+${ns}ns`)!.find((v) => v.metric.name === m.name)!.status === 'fail');
        out.push(`  ${m.name.padEnd(28)} ${caught === undefined ? `none up to ${slowdowns.at(-1)} ns` : `${caught} ns`}`);
      }
      const mustFail = byArm.get(`candidate+${SELFTEST_MUST_CATCH_NS}ns`);
      const unchangedOk = regressions(verdicts).length === 0;
      const caughtFloor = mustFail === undefined || regressions(mustFail).length > 0;
      out.push(`gate: self-test ${unchangedOk && caughtFloor ? 'OK' : 'FAILED'}: unchanged candidate ${unchangedOk ? 'passes' : 'FAILS'}; +${SELFTEST_MUST_CATCH_NS} ns ${mustFail === undefined ? 'not run' : caughtFloor ? 'fails the gate' : 'PASSES the gate'}`);
      status = unchangedOk && caughtFloor ? 0 : 1;
    } else {
      const bad = regressions(verdicts);
      for (const v of bad) {
        out.push(v.status === 'missing'
          ? `gate: REGRESSION ${v.metric.name}: not measured in enough rounds (${v.baseRounds} base, ${v.candRounds} candidate): ${v.metric.description}`
          : `gate: REGRESSION ${v.metric.name}: candidate/base ${pct(v.interval!.ratio)}, 95% interval [${pct(v.interval!.lo)}, ${pct(v.interval!.hi)}] lies beyond +${Math.round(v.metric.threshold * 100)}%: ${v.metric.description}`);
      }
      if (bad.length === 0) out.push(`gate: OK: no metric slower than its threshold (${verdicts.filter((v) => v.status === 'improved').length} improved)`);
      status = bad.length > 0 ? 1 : 0;
    }
    process.stdout.write(`${out.join('\n')}\n`);
    if (values.json) {
      const m = await machineInfo();
      const doc = {
        machine: m, base: { ref, commit }, candidate: cand, rounds, seconds,
        placement: Object.fromEntries(arms.map((a) => [a.label, placementOf(run.results.get(a.label)!)])),
        verdicts: Object.fromEntries([...byArm].map(([label, vs]) => [label, vs.map((v) => ({
          metric: v.metric.name, threshold: v.metric.threshold, status: v.status, ratio: v.interval?.ratio ?? null,
          interval: v.interval ? [v.interval.lo, v.interval.hi] : null, base_median: v.baseMedian, candidate_median: v.candMedian,
          rounds: [v.baseRounds, v.candRounds],
        }))])),
        samples: Object.fromEntries([...run.results].map(([label, rs]) => [label, rs])),
      };
      writeFileSync(values.json, `${JSON.stringify(doc, null, 2)}\n`);
    }
    return status;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
