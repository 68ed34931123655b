// The perf gate's A/B runner (the I/O around bench/gate.ts): builds the base
// commit and the candidate tree, then runs their probes (bench/probe.ts) in
// alternating rounds on this machine, as Node's benchmark/compare.js does with
// two binaries.
//
// Both builds run the CANDIDATE's benchmark code: the base's sources come from
// `git archive <commit>`, the candidate's bench/ is laid over them, and esbuild
// bundles bench/probe.ts plus every worker entry of that tree (this checkout's
// node_modules serve both). So the two differ only in the library code under
// test, never in how it is measured. A base whose sources lack something the
// probe names fails its build with esbuild's message: then record a newer base.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ProbeResult } from './probe.ts';
import { SLOWDOWN_ENV } from './slowdown.ts';

/** A base that cannot be had or built: the message says why and what to do. */
export class GateBaseError extends Error {
  override readonly name = 'GateBaseError';
}

/** A probe process that failed or did not answer in time. */
export class ProbeError extends Error {
  override readonly name = 'ProbeError';
}

export interface Arm {
  /** 'base', 'candidate', or 'candidate+50ns' in the self-test. */
  label: string;
  /** Directory holding probe.js and the worker bundles. */
  dir: string;
  slowdownNs: number;
}

function git(root: string, args: string[]): { ok: boolean; out: string; err: string } {
  const r = spawnSync('git', args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 });
  return { ok: r.status === 0, out: (r.stdout ?? '').trim(), err: (r.stderr ?? '').trim() || (r.error?.message ?? '') };
}

/** The full hash of `ref`, or a GateBaseError saying why it is not here (e.g. a shallow clone). */
export function resolveCommit(root: string, ref: string): string {
  const r = git(root, ['rev-parse', '--verify', '--quiet', `${ref}^{commit}`]);
  if (!r.ok || r.out === '') {
    const shallow = git(root, ['rev-parse', '--is-shallow-repository']).out === 'true';
    throw new GateBaseError(`base ${ref} is not in this clone${shallow ? ' (a shallow clone: fetch its history, e.g. git fetch --unshallow)' : ''}`);
  }
  return r.out;
}

/** The candidate's identity: HEAD's hash, and whether the tree differs from it. */
export function describeCandidate(root: string): { commit: string; dirty: boolean } {
  const head = git(root, ['rev-parse', 'HEAD']);
  const status = git(root, ['status', '--porcelain', '--untracked-files=no']);
  return { commit: head.ok ? head.out : 'unknown', dirty: status.ok && status.out !== '' };
}

function workerEntries(root: string): string[] {
  const entries: string[] = [];
  for (const dir of ['src', 'native-free-fastpath', 'bench']) {
    const abs = path.join(root, dir);
    if (!existsSync(abs)) continue;
    for (const f of readdirSync(abs, { recursive: true, encoding: 'utf8' })) {
      if (f.endsWith('.worker.ts')) entries.push(path.join(abs, f));
    }
  }
  return entries;
}

/** Bundle `root`'s probe and worker entries into `outDir`, flat, as the package build lays out dist/. */
export async function buildProbe(root: string, outDir: string, nodeModules: string): Promise<void> {
  // esbuild is a development dependency: loaded only here, so the installed CLI runs without it.
  const { build } = await import('esbuild');
  await build({
    entryPoints: [path.join(root, 'bench/probe.ts'), ...workerEntries(root)],
    bundle: true, platform: 'node', format: 'esm', target: 'node20', outdir: outDir,
    entryNames: '[name]', logLevel: 'silent', nodePaths: [nodeModules],
  });
}

/**
 * Sources of `commit` in a fresh temporary directory with the candidate's
 * bench/ over them, built; returns the build directory. The caller removes
 * `tmp` when done.
 */
export async function buildBase(root: string, commit: string, tmp: string): Promise<string> {
  const src = path.join(tmp, 'base-src');
  rmSync(src, { recursive: true, force: true });
  mkdirSync(src, { recursive: true });
  const archive = spawnSync('sh', ['-c', `git archive --format=tar ${commit} | tar -x -C "${src}"`], { cwd: root, encoding: 'utf8' });
  if (archive.status !== 0) throw new GateBaseError(`git archive ${commit} failed: ${archive.stderr.trim()}`);
  rmSync(path.join(src, 'bench'), { recursive: true, force: true });
  cpSync(path.join(root, 'bench'), path.join(src, 'bench'), { recursive: true });
  const out = path.join(tmp, 'base');
  try {
    await buildProbe(src, out, path.join(root, 'node_modules'));
  } catch (e) {
    const msg = e instanceof Error ? e.message.split('\n').slice(0, 6).join(' | ') : String(e);
    throw new GateBaseError(`the base ${commit.slice(0, 12)} cannot be built with this tree's benchmark code (${msg}); record a newer base: vcmdq gate --set-base REF`);
  }
  return out;
}

export function makeTmp(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'vcmdq-gate-'));
}

/** Longest one probe may take before it counts as failed (a hung worker must not hang the gate). */
export const PROBE_TIMEOUT_MS = 90_000;

/** One probe of `arm` in a child process; its JSON line, or a ProbeError. */
export function runProbeProcess(arm: Arm): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, [SLOWDOWN_ENV]: String(arm.slowdownNs) };
    const child = spawn(process.execPath, [path.join(arm.dir, 'probe.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), PROBE_TIMEOUT_MS);
    child.on('error', (e) => { clearTimeout(timer); reject(new ProbeError(`${arm.label}: ${e.message}`)); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) {
        const why = signal === 'SIGKILL' ? `no answer within ${PROBE_TIMEOUT_MS / 1000} s` : `exit ${code ?? signal}`;
        reject(new ProbeError(`${arm.label} probe: ${why}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
        return;
      }
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!) as ProbeResult);
      } catch {
        reject(new ProbeError(`${arm.label} probe: no JSON result (${out.slice(0, 200)})`));
      }
    });
  });
}

/**
 * Order of the arms in round `r`: rotated by one each round (two builds: A B,
 * B A, A B, ...), so each runs first equally often and none always follows
 * the same other one.
 */
export function armOrder(arms: number, r: number): number[] {
  return Array.from({ length: arms }, (_, k) => (k + r) % arms);
}

export interface AbRun {
  /** Per arm label: one ProbeResult per round. */
  results: Map<string, ProbeResult[]>;
  rounds: number;
}

/** `rounds` rounds of every arm, in armOrder; `onRound` reports progress. */
export async function runRounds(arms: readonly Arm[], rounds: number, onRound: (r: number) => void): Promise<AbRun> {
  const results = new Map<string, ProbeResult[]>(arms.map((a) => [a.label, []]));
  for (let r = 0; r < rounds; r++) {
    onRound(r);
    for (const k of armOrder(arms.length, r)) {
      const arm = arms[k]!;
      results.get(arm.label)!.push(await runProbeProcess(arm));
    }
  }
  return { results, rounds };
}
