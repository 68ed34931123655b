// --svg: latency CDFs of the round-trip scenario and the baselines on one
// log-scale plot, and (`vcmdq sim`) scaling plots of latency and throughput
// against vCPU or queue count; hand-written SVG (no plotting dependency: two
// chart types, output diffable as text).
import type { MachineInfo, MeasuredRow } from './harness.ts';
import { fmt } from './report.ts';
import type { CdfPoint } from './stats.ts';

const W = 960;
const H = 560;
const M = { left: 70, right: 20, top: 50, bottom: 60 };
const PALETTE: Record<string, string> = {
  trap: '#d62728',
  'trap-qemu': '#bcbd22',
  'doorbell-sleep': '#1f77b4',
  'doorbell-spin': '#2ca02c',
  'doorbell-adaptive': '#ff7f0e',
  'trap-iothread': '#8c564b',
  hw: '#e377c2',
  'atomics-wait': '#7f7f7f',
  'atomics-spin': '#17becf',
  postmessage: '#9467bd',
};
/** Paths are told apart by colour, their CS modes by dash pattern, baselines by their own dash. */
const CS_DASH: Record<string, string> = { none: '', sev: '10 3', irq: '2 2' };
const BASELINE_DASH = '6 4';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export interface CdfSeries {
  label: string;
  color: string;
  /** SVG stroke-dasharray, '' for a solid line */
  dash: string;
  points: CdfPoint[];
}

export function seriesOf(measured: readonly MeasuredRow[]): CdfSeries[] {
  return measured
    .filter((m) => (m.row.scenario === 'roundtrip' || m.row.scenario === 'baseline') && m.cdf && m.cdf.length > 0)
    .map((m) => {
      const cs = m.row.params['cs'];
      const api = m.row.params['api'];
      const name = (cs === undefined ? m.row.path : `${m.row.path} cs=${cs}`) + (api === 'objects' ? ' submit(objects)' : '');
      return {
        label: `${name}: p50 ${fmt(m.row.p50_us)}, p99 ${fmt(m.row.p99_us)}, p99.9 ${fmt(m.row.p999_us)} µs`,
        color: PALETTE[m.row.path] ?? '#000000',
        dash: m.row.scenario === 'baseline' ? BASELINE_DASH : (CS_DASH[String(cs)] ?? ''),
        points: m.cdf!,
      };
    });
}

export function renderCdfSvg(series: readonly CdfSeries[], machine: MachineInfo, subtitle: string): string {
  const xs = series.flatMap((s) => s.points.map((p) => p.x)).filter((x) => x > 0);
  const lo = Math.pow(10, Math.floor(Math.log10(xs.length > 0 ? Math.min(...xs) : 0.1)));
  const hi = Math.pow(10, Math.ceil(Math.log10(xs.length > 0 ? Math.max(...xs) : 1000)));
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const X = (v: number): number => M.left + (pw * (Math.log10(Math.max(v, lo)) - Math.log10(lo))) / (Math.log10(hi) - Math.log10(lo));
  const Y = (f: number): number => M.top + ph * (1 - f);
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  o.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  o.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">Round-trip latency CDF: trap vs doorbell paths and bare baselines</text>`);
  o.push(`<text x="${W / 2}" y="37" text-anchor="middle" fill="#444">${esc(subtitle)}; ${machine.cpus} CPUs, Node ${esc(machine.node)}, ${esc(machine.date.slice(0, 10))}</text>`);
  // Decade grid with 2x and 5x minor lines: the log axis stays readable.
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    for (const k of [1, 2, 5]) {
      const v = d * k;
      if (v > hi * 1.0001) break;
      const x = X(v).toFixed(1);
      o.push(`<line x1="${x}" y1="${M.top}" x2="${x}" y2="${M.top + ph}" stroke="${k === 1 ? '#bbbbbb' : '#e6e6e6'}"/>`);
      if (k === 1 || pw / (Math.log10(hi / lo)) > 120) o.push(`<text x="${x}" y="${M.top + ph + 16}" text-anchor="middle">${fmt(v)}</text>`);
    }
  }
  for (const f of [0, 0.25, 0.5, 0.75, 0.9, 1]) {
    const y = Y(f).toFixed(1);
    o.push(`<line x1="${M.left}" y1="${y}" x2="${M.left + pw}" y2="${y}" stroke="#eeeeee"/>`);
    o.push(`<text x="${M.left - 6}" y="${(Y(f) + 4).toFixed(1)}" text-anchor="end">${f}</text>`);
  }
  // Percentile guides labelled inside the right edge, where the CDFs have reached the top.
  for (const [f, name] of [[0.5, 'p50'], [0.9, 'p90'], [0.99, 'p99']] as const) {
    const y = Y(f).toFixed(1);
    o.push(`<line x1="${M.left}" y1="${y}" x2="${M.left + pw}" y2="${y}" stroke="#bbbbbb" stroke-dasharray="4 3"/>`);
    o.push(`<text x="${M.left + pw - 4}" y="${(Y(f) + 13).toFixed(1)}" text-anchor="end" fill="#666">${name}</text>`);
  }
  o.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  o.push(`<text x="${M.left + pw / 2}" y="${H - 18}" text-anchor="middle">round-trip latency, µs (log scale): submit to completion for paths, ping to pong for baselines</text>`);
  o.push(`<text transform="translate(18 ${M.top + ph / 2}) rotate(-90)" text-anchor="middle">fraction of round trips with latency ≤ x</text>`);
  for (const s of series) {
    const d = s.points.map((p, k) => `${k === 0 ? 'M' : 'L'}${X(p.x).toFixed(1)} ${Y(p.y).toFixed(1)}`).join(' ');
    o.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
  }
  // Legend in the lower right: at large latencies every CDF has already
  // risen to the top, so that corner is empty; a white box keeps it legible anyway.
  const lh = 18;
  const lw = Math.max(...series.map((s) => s.label.length), 20) * 6.6 + 44;
  const lx = M.left + pw - lw - 6;
  const ly = M.top + ph - series.length * lh - 14;
  o.push(`<rect x="${lx - 6}" y="${ly - 6}" width="${lw.toFixed(0)}" height="${series.length * lh + 8}" fill="#ffffff" fill-opacity="0.9" stroke="#999"/>`);
  series.forEach((s, k) => {
    const y = ly + k * lh + 6;
    o.push(`<line x1="${lx}" y1="${y}" x2="${lx + 28}" y2="${y}" stroke="${s.color}" stroke-width="2.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    o.push(`<text x="${lx + 36}" y="${y + 4}">${esc(s.label)}</text>`);
  });
  if (series.length === 0) o.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no round-trip samples in this run</text>`);
  o.push('</svg>');
  return `${o.join('\n')}\n`;
}

/** One line of a scaling plot: y against x (both > 0), drawn on log-log axes. */
export interface ScalingSeries {
  label: string;
  color: string;
  dash: string;
  points: { x: number; y: number }[];
}

export interface ScalingPanel {
  title: string;
  yLabel: string;
  series: ScalingSeries[];
}

/** Log-scale decade ticks covering [lo, hi] (1-2-5 steps when the range is narrow). */
function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  const steps = Math.log10(hi / lo) <= 2 ? [1, 2, 5] : [1];
  for (let d = Math.pow(10, Math.floor(Math.log10(lo))); d <= hi * 1.0001; d *= 10) {
    for (const k of steps) if (d * k >= lo * 0.9999 && d * k <= hi * 1.0001) ticks.push(d * k);
  }
  return ticks;
}

/**
 * Panels side by side sharing the x axis (vCPUs or queues, log 2 ticks),
 * y on a log scale fitted to each panel's data.
 */
export function renderScalingSvg(panels: readonly ScalingPanel[], title: string, subtitle: string, xLabel: string): string {
  const pw = 440;
  const ph = 380;
  const m = { left: 70, right: 20, top: 70, bottom: 60 };
  const width = m.left + panels.length * (pw + m.left) + m.right - m.left;
  const height = m.top + ph + m.bottom + 20 * Math.max(0, ...panels.map((p) => p.series.length));
  const xs = panels.flatMap((p) => p.series.flatMap((s) => s.points.map((q) => q.x))).filter((x) => x > 0);
  const xLo = xs.length > 0 ? Math.min(...xs) : 1;
  const xHi = xs.length > 0 ? Math.max(...xs) : 2;
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  o.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  o.push(`<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);
  o.push(`<text x="${width / 2}" y="40" text-anchor="middle" fill="#444">${esc(subtitle)}</text>`);
  panels.forEach((panel, pi) => {
    const left = m.left + pi * (pw + m.left);
    const ys = panel.series.flatMap((s) => s.points.map((q) => q.y)).filter((y) => y > 0);
    const yLo = Math.pow(10, Math.floor(Math.log10(ys.length > 0 ? Math.min(...ys) : 1)));
    const yHi = Math.pow(10, Math.ceil(Math.log10(ys.length > 0 ? Math.max(...ys) : 10)));
    const span = (v: number, lo: number, hi: number): number => (hi > lo ? (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) : 0.5);
    const X = (v: number): number => left + pw * span(v, xLo, xHi);
    const Y = (v: number): number => m.top + ph * (1 - span(Math.max(v, yLo), yLo, yHi));
    o.push(`<text x="${left + pw / 2}" y="${m.top - 10}" text-anchor="middle" font-weight="bold">${esc(panel.title)}</text>`);
    for (let x = xLo; x <= xHi * 1.0001; x *= 2) {
      o.push(`<line x1="${X(x).toFixed(1)}" y1="${m.top}" x2="${X(x).toFixed(1)}" y2="${m.top + ph}" stroke="#e6e6e6"/>`);
      o.push(`<text x="${X(x).toFixed(1)}" y="${m.top + ph + 16}" text-anchor="middle">${x}</text>`);
    }
    for (const y of logTicks(yLo, yHi)) {
      o.push(`<line x1="${left}" y1="${Y(y).toFixed(1)}" x2="${left + pw}" y2="${Y(y).toFixed(1)}" stroke="#e6e6e6"/>`);
      o.push(`<text x="${left - 6}" y="${(Y(y) + 4).toFixed(1)}" text-anchor="end">${fmt(y)}</text>`);
    }
    o.push(`<rect x="${left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
    o.push(`<text x="${left + pw / 2}" y="${m.top + ph + 36}" text-anchor="middle">${esc(xLabel)} (log scale)</text>`);
    o.push(`<text transform="translate(${left - 52} ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(panel.yLabel)} (log scale)</text>`);
    for (const s of panel.series) {
      const pts = s.points.filter((q) => q.x > 0 && q.y > 0);
      if (pts.length === 0) continue;
      const d = pts.map((q, k) => `${k === 0 ? 'M' : 'L'}${X(q.x).toFixed(1)} ${Y(q.y).toFixed(1)}`).join(' ');
      o.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
      for (const q of pts) o.push(`<circle cx="${X(q.x).toFixed(1)}" cy="${Y(q.y).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
    }
    panel.series.forEach((s, k) => {
      const y = m.top + ph + 56 + k * 20;
      o.push(`<line x1="${left}" y1="${y}" x2="${left + 28}" y2="${y}" stroke="${s.color}" stroke-width="2.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
      o.push(`<text x="${left + 36}" y="${y + 4}">${esc(s.label)}</text>`);
    });
  });
  o.push('</svg>');
  return `${o.join('\n')}\n`;
}

/** A path's colour in every plot. */
export function pathColor(path: string): string {
  return PALETTE[path] ?? '#000000';
}
