// --svg: latency CDFs of the round-trip scenario and the baselines on one
// log-scale plot, hand-written SVG (no plotting dependency: one chart type,
// ~100 lines, output diffable as text).
import type { MachineInfo, MeasuredRow } from './harness.ts';
import { fmt } from './report.ts';
import type { CdfPoint } from './stats.ts';

const W = 960;
const H = 560;
const M = { left: 70, right: 20, top: 50, bottom: 60 };
const PALETTE: Record<string, string> = {
  trap: '#d62728',
  'doorbell-sleep': '#1f77b4',
  'doorbell-spin': '#2ca02c',
  'doorbell-adaptive': '#ff7f0e',
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
