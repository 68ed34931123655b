// Runs the selected scenarios and renders the results: console tables and
// the --json document.
import { machineInfo, type MachineInfo, type MeasuredRow, type Profile, type Progress } from './harness.ts';
import { describePlacement, placementMode, type Placement } from './placement.ts';
import { findRow, isDoorbell, rowRatios } from './ratios.ts';
import { SCENARIO_REGISTRY, type ScenarioDef } from './scenarios.ts';
import { BenchUnavailableError, type ResultRow, type ScenarioName } from './types.ts';

export interface BenchReport {
  machine: MachineInfo;
  /** The placement mode this run found, from its bare spin ping-pong (null when that baseline did not run). */
  placement: Placement | null;
  profile: Profile;
  measured: MeasuredRow[];
  unavailable: { scenario: ScenarioName; reason: string }[];
  /** Scenarios that threw (a bug, not a missing facility): the others still run and are reported; the bench exits 1. */
  failed: { scenario: ScenarioName; error: string }[];
  notes: string[];
}

export interface BenchOptions {
  profile: Profile;
  scenarios: readonly ScenarioName[];
  progress: Progress;
  /** ns of extra work per command in the doorbell kernel threads (0 = none). */
  slowdownNs?: number;
}

/**
 * Runs scenarios in registry order. A scenario that measures the baselines
 * in its own rotation (roundtrip) replaces the separate baseline run, so the
 * path/baseline ratios come from one interleaved rotation.
 */
export async function runBench(opts: BenchOptions): Promise<BenchReport> {
  const { profile, progress } = opts;
  const machine = await machineInfo();
  const report: BenchReport = { machine, placement: null, profile, measured: [], unavailable: [], failed: [], notes: [] };
  if (opts.slowdownNs) report.notes.push(`injected slowdown: ${opts.slowdownNs} ns of work per command in the doorbell kernel threads`);
  const selected = SCENARIO_REGISTRY.filter((s) => opts.scenarios.includes(s.name));
  const wantBaseline = selected.some((s) => s.name === 'baseline');
  let haveBaselines = false;
  const runOne = async (s: ScenarioDef): Promise<boolean> => {
    progress.log(`[bench] ${s.name}: ${s.title}`);
    const t0 = performance.now();
    try {
      const out = await s.run({ profile, progress, slowdownNs: opts.slowdownNs ?? 0 });
      report.measured.push(...out.measured);
      report.notes.push(...out.notes.map((n) => `${s.name}: ${n}`));
      progress.log(`[bench] ${s.name}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      return true;
    } catch (e) {
      if (!(e instanceof BenchUnavailableError)) {
        // One scenario's bug must not cost the minutes of results the others measured.
        const error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
        report.failed.push({ scenario: s.name, error });
        progress.log(`[bench] ${s.name}: FAILED: ${error}`);
        return false;
      }
      report.unavailable.push({ scenario: s.name, reason: e.message });
      progress.log(`[bench] ${s.name}: ${e.message}`);
      return false;
    }
  };
  for (const s of selected) {
    if (s.name === 'baseline') continue;
    const ok = await runOne(s);
    if (ok && s.includesBaselines) haveBaselines = true;
  }
  if (wantBaseline && !haveBaselines) {
    const b = selected.find((s) => s.name === 'baseline')!;
    await runOne(b);
  }
  const floor = findRow(report.measured.map((m) => m.row), 'baseline', 'atomics-spin');
  if (floor) report.placement = { mode: placementMode(floor.p50_us), spin_floor_us: floor.p50_us };
  return report;
}

/** Three significant digits, enough for latencies that vary run to run by more than 1%. */
export function fmt(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '-';
  const a = Math.abs(x);
  if (a >= 1e6) return `${(x / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${(x / 1e3).toPrecision(3)}k`;
  if (a >= 100) return x.toFixed(0);
  return x.toPrecision(3);
}

function fmtRatio(a: number, b: number): string {
  return Number.isFinite(a) || Number.isFinite(b) ? `${fmt(a)}x / ${fmt(b)}x` : '-';
}

function params(row: ResultRow): string {
  const kv = Object.entries(row.params).map(([k, v]) => `${k}=${v}`);
  return kv.length > 0 ? kv.join(' ') : '-';
}

/** A text table: the first two columns left-aligned, the rest right-aligned. */
export function table(header: string[], body: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...body.map((r) => r[c]!.length)));
  const line = (cells: string[]): string => cells.map((cell, c) => (c < 2 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

export function formatReport(report: BenchReport): string {
  const m = report.machine;
  const rows = report.measured.map((x) => x.row);
  const p = report.profile;
  const out: string[] = [
    `vcmdq bench (${p.name}): ${m.date}`,
    `machine: ${m.cpus} CPUs (${m.cpu_model}), Node ${m.node} (V8 ${m.v8}), ${m.os} ${m.arch}; clock read ${fmt(m.clock_ns)} ns, idle Atomics.notify ${fmt(m.notify_idle_ns)} ns; ${m.pinned ? 'producer pinned to CPU 0, server threads to CPU 1' : 'threads not pinned'}`,
    report.placement ? describePlacement(report.placement) : 'placement: unknown (the baselines did not run)',
    `latency: ${p.samples} kept samples per path after ${p.warmup} warm-up, in ${p.rounds} interleaved rounds (+${p.rewarm} discarded per round); times in µs`,
  ];
  const scenarios = [...new Set(rows.map((r) => r.scenario))];
  for (const s of scenarios) {
    const mine = rows.filter((r) => r.scenario === s);
    if (s === 'simcheck') {
      // Predicted (the simulator on this machine's measured step costs) against measured, per figure.
      const body = mine.map((r) => {
        const c = r as ResultRow & { predicted_us?: number; measured_us?: number; ratio?: number };
        return [r.path, params(r), fmt(c.predicted_us), fmt(c.measured_us), `${fmt(c.ratio)}x`];
      });
      out.push('', `## ${s}`, table(['path', 'figure', 'predicted', 'measured', 'predicted/measured'], body));
      continue;
    }
    const hasTrapRatio = mine.some((r) => isDoorbell(r.path));
    const header = ['path', 'params', 'samples', 'p50', 'p90', 'p99', 'p99.9', 'mean', 'stddev', 'ops/s', 'cpu µs/op', 'vs baseline p50/p99'];
    if (hasTrapRatio) header.push('trap/this p50/p99');
    const body = mine.map((r) => {
      const q = rowRatios(rows, r);
      const cells = [
        r.path, params(r), String(r.samples), fmt(r.p50_us), fmt(r.p90_us), fmt(r.p99_us), fmt(r.p999_us),
        fmt(r.mean_us), fmt(r.stddev_us), fmt(r.ops_per_s), fmt(r.cpu_us_per_op),
        `${fmtRatio(q.vsBaseline.p50, q.vsBaseline.p99)} ${q.vsBaseline.baseline}`,
      ];
      if (hasTrapRatio) cells.push(q.trapOver ? fmtRatio(q.trapOver.p50, q.trapOver.p99) : '');
      return cells;
    });
    out.push('', `## ${s}`, table(header, body));
  }
  for (const u of report.unavailable) out.push('', `## ${u.scenario}: not measured (${u.reason})`);
  for (const f of report.failed) out.push('', `## ${f.scenario}: FAILED (${f.error})`);
  if (report.notes.length > 0) out.push('', 'notes:', ...report.notes.map((n) => `  - ${n}`));
  return out.join('\n');
}

/** The --json document (schema in README "Benchmark JSON"). */
export function toJsonDocument(report: BenchReport): object {
  const { name, warmup, samples, rounds, rewarm } = report.profile;
  return {
    machine: { ...report.machine, placement: report.placement },
    profile: { name, warmup, samples, rounds, rewarm },
    results: report.measured.map((x) => x.row),
    unavailable: report.unavailable,
    failed: report.failed,
    notes: report.notes,
  };
}
