// `vcmdq bench` and `vcmdq gate`: argument parsing and file output.
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { BASELINE_NOTE, extractMetrics, judgeAll, MAX_ATTEMPTS, METRIC_DEFS, needsRemeasure, regressions, updatedBaseline, type BaselineFile, type Verdict } from './gate.ts';
import { PROFILES, Progress } from './harness.ts';
import { INJECT_DELAY_ENV, injectedDelayUs } from './inject.ts';
import { fmt, formatReport, runBench, toJsonDocument, type BenchReport } from './report.ts';
import { renderCdfSvg, seriesOf } from './svg.ts';
import { SCENARIOS, type ScenarioName } from './types.ts';

export const BENCH_USAGE = `usage: vcmdq bench [--quick] [--scenario NAME]... [--json FILE] [--svg FILE]
  scenarios: ${SCENARIOS.join(', ')} (default: all)
  --quick      fewer samples (whole run under 60 s on 2 cores)
  --json FILE  results document (schema: README "Benchmark JSON")
  --svg FILE   round-trip latency CDFs of all paths and baselines`;

export const GATE_USAGE = `usage: vcmdq gate --baseline FILE [--update-baseline]
  runs the quick bench, compares in-run ratios with FILE; exit 1 names the regression.
  ${INJECT_DELAY_ENV}=US slows the doorbell kernel thread down by US µs per command it consumes (to see the gate fail)`;

function parseScenarios(values: string[] | undefined): ScenarioName[] {
  if (!values || values.length === 0) return [...SCENARIOS];
  for (const v of values) {
    if (!(SCENARIOS as readonly string[]).includes(v)) throw new UsageError(`unknown scenario ${v} (one of ${SCENARIOS.join(', ')})`);
  }
  return values as ScenarioName[];
}

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

function writeOutputs(report: BenchReport, json: string | undefined, svg: string | undefined): void {
  if (json) writeFileSync(json, `${JSON.stringify(toJsonDocument(report), null, 2)}\n`);
  if (svg) {
    const p = report.profile;
    writeFileSync(svg, renderCdfSvg(seriesOf(report.measured), report.machine, `${p.samples} samples per path, ${p.name} profile`));
  }
}

/** Argument mistakes print usage and give exit status 2, like the other subcommands. */
async function withUsage(usage: string, name: string, run: () => Promise<number>): Promise<number> {
  try {
    return await run();
  } catch (e) {
    const parseError = e instanceof TypeError && String((e as NodeJS.ErrnoException).code ?? '').startsWith('ERR_PARSE_ARGS');
    if (!(e instanceof UsageError) && !parseError) throw e;
    process.stderr.write(`vcmdq ${name}: ${(e as Error).message}\n${usage}\n`);
    return 2;
  }
}

/** `vcmdq bench ...`; returns the exit status. */
export function benchMain(argv: readonly string[]): Promise<number> {
  return withUsage(BENCH_USAGE, 'bench', () => bench(argv));
}

/** `vcmdq gate ...`; returns the exit status. */
export function gateMain(argv: readonly string[]): Promise<number> {
  return withUsage(GATE_USAGE, 'gate', () => gate(argv));
}

async function bench(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      quick: { type: 'boolean', default: false },
      scenario: { type: 'string', multiple: true },
      json: { type: 'string' },
      svg: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${BENCH_USAGE}\n`);
    return 0;
  }
  const report = await runBench({
    profile: values.quick ? PROFILES.quick : PROFILES.full,
    scenarios: parseScenarios(values.scenario),
    progress: new Progress(),
    injectDelayUs: injectedDelayUs(),
  });
  process.stdout.write(`${formatReport(report)}\n`);
  writeOutputs(report, values.json, values.svg);
  return report.measured.length > 0 ? 0 : 1;
}

function loadBaseline(file: string, allowMissing: boolean): BaselineFile | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (allowMissing && (e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const b = JSON.parse(text) as BaselineFile;
  if (!Array.isArray(b.metrics)) throw new UsageError(`${file}: no "metrics" array`);
  return b;
}

export function formatVerdicts(verdicts: readonly Verdict[], runs: number): string {
  const head = ['metric', 'better', 'baseline', 'tolerance', 'limit', 'measured (best)', 'attempts', 'verdict'];
  const body = verdicts.map((v) => [
    v.metric.name, v.metric.direction, fmt(v.metric.baseline), `${Math.round(v.metric.tolerance * 100)}%`, fmt(v.limit),
    fmt(v.best), v.attempts.map(fmt).join(' '), v.status.toUpperCase(),
  ]);
  const widths = head.map((h, c) => Math.max(h.length, ...body.map((r) => r[c]!.length)));
  const line = (r: string[]): string => r.map((x, c) => x.padEnd(widths[c]!)).join('  ');
  return [`gate: ${runs} quick run(s)`, line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

async function gate(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      baseline: { type: 'string' },
      'update-baseline': { type: 'boolean', default: false },
      json: { type: 'string' },
      svg: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${GATE_USAGE}\n`);
    return 0;
  }
  if (!values.baseline) throw new UsageError('--baseline FILE is required');
  const update = values['update-baseline'];
  const old = loadBaseline(values.baseline, update);
  const metrics = old?.metrics ?? METRIC_DEFS.map((d) => ({ ...d, baseline: null }));
  const delay = injectedDelayUs();
  if (delay > 0) process.stderr.write(`[gate] ${INJECT_DELAY_ENV}=${delay}: doorbell consumer slowed down on purpose\n`);
  const attempts: Record<string, number[]> = {};
  const progress = new Progress();
  let runs = 0;
  let report: BenchReport | undefined;
  let verdicts: Verdict[] = [];
  do {
    runs++;
    progress.log(`[gate] quick run ${runs}/${MAX_ATTEMPTS}`);
    report = await runBench({ profile: PROFILES.quick, scenarios: ['baseline', 'roundtrip', 'throughput'], progress, injectDelayUs: delay });
    for (const [name, value] of Object.entries(extractMetrics(report.measured.map((m) => m.row)))) (attempts[name] ??= []).push(value);
    verdicts = judgeAll(metrics, attempts);
    // An update records the worst of all runs, so it always takes all of them.
  } while (update ? runs < MAX_ATTEMPTS : needsRemeasure(verdicts, runs));
  process.stdout.write(`${formatReport(report)}\n\n${formatVerdicts(verdicts, runs)}\n`);
  writeOutputs(report, values.json, values.svg);
  for (const u of report.unavailable) process.stdout.write(`gate: ${u.scenario} not measured: ${u.reason}\n`);
  if (update) {
    const m = report.machine;
    const next = updatedBaseline(old ?? { note: BASELINE_NOTE, recorded: null, metrics }, attempts, { date: m.date, machine: `${m.cpus} x ${m.cpu_model}, Node ${m.node}` });
    writeFileSync(values.baseline, `${JSON.stringify(next, null, 2)}\n`);
    process.stdout.write(`gate: wrote ${values.baseline}\n`);
    return 0;
  }
  const bad = regressions(verdicts);
  if (bad.length > 0) {
    for (const v of bad) {
      process.stdout.write(v.status === 'missing'
        ? `gate: REGRESSION ${v.metric.name}: not measured in ${runs} run(s) (${v.metric.description}), baseline ${fmt(v.metric.baseline)}\n`
        : `gate: REGRESSION ${v.metric.name}: best of ${runs} = ${fmt(v.best)}, limit ${fmt(v.limit)} (baseline ${fmt(v.metric.baseline)}, ${v.metric.direction} is better, tolerance ${Math.round(v.metric.tolerance * 100)}%): ${v.metric.description}\n`);
    }
    return 1;
  }
  const unjudged = verdicts.filter((v) => v.status === 'no-baseline').length;
  process.stdout.write(`gate: OK${unjudged > 0 ? ` (${unjudged} metric(s) without a recorded baseline, not judged)` : ''}\n`);
  return 0;
}
