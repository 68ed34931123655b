// `vcmdq sim`: runs the discrete-event model (src/sim) over a grid of paths,
// vCPU counts, granules and queue counts, prints the bench-style tables and
// writes the --json rows (predicted: true) and the scaling plots.
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ArgumentError } from '../src/errors.ts';
import { UsageError } from '../src/cli/usage.ts';
import { isTrapPath, SIM_PATHS, type SimPathName } from '../src/sim/paths.ts';
import { checkProfile, loadProfile, PROFILE_FILES, type SimProfile } from '../src/sim/profile.ts';
import { runSim, SIM_GRANULES } from '../src/sim/run.ts';
import { SIM_MAX_QUEUES } from '../src/sim/world.ts';
import { Progress } from './harness.ts';
import { measureNodeLocal, nodeLocalNote, nodeLocalProfile } from './sim-node-local.ts';
import { formatSimTable, SIM_SCENARIOS, simJsonDocument, simRow, type SimRow, type SimScenario } from './sim-report.ts';
import { pathColor, renderScalingSvg, type ScalingPanel } from './svg.ts';

const DEFAULT_VCPUS = [1, 2, 4, 8, 16, 32, 64];
const DEFAULT_UNMAPS = 500;

export const SIM_USAGE = `usage: vcmdq sim [--profile NAME | --profile-file FILE] [--scenario unmap|roundtrip|svastorm] [--paths P,...] [--vcpus N,...]
                 [--granules SIZE,...] [--queues N,...] [--unmaps N] [--seed N] [--host-cpus N] [--json FILE] [--svg FILE]
  predicts, in virtual time, what the bench measures, from per-step costs (a profile), with every command
  run through the real codec, first pass, iommufd conversion, vSMMU policy, consumer and SMMU model
  --profile NAME     ${Object.keys(PROFILE_FILES).join(', ')} (default; src/sim/profiles/*.json), or node-local:
                     this machine's step costs, measured first by the bench's microbenchmarks (~20 s)
  --profile-file F   a profile document of your own (same schema; every number with its source)
  --scenario S       unmap (dma_map_benchmark: PTE clear + range TLBI + CMD_SYNC, default), roundtrip (TLBI +
                     CMD_SYNC) or svastorm (the bench's vSVA storm: mprotect / COW break / munmap of a process's
                     pages, each blocking on its invalidation)
  --paths P,...      ${SIM_PATHS.join(', ')} (default: all)
  --vcpus N,...      guest vCPUs, each running the loop (default ${DEFAULT_VCPUS.join(',')}; at most ${SIM_MAX_QUEUES})
  --granules S,...   unmap sizes, 4K..256K (default ${SIM_GRANULES.map((g) => `${g / 1024}K`).join(',')})
  --queues N,...     vCMDQs shared by the vCPUs on doorbell and hw paths (default: one per vCPU); the trap
                     paths always have the VM's one CMDQ
  --unmaps N         operations per vCPU (default ${DEFAULT_UNMAPS})
  --seed N           PRNG seed (default 1): the same seed gives the same output
  --host-cpus N      CPUs for the host threads (kernel thread, VMM thread; default 1)
  --json FILE        rows in the bench's --json schema, each with predicted: true and the profile's name
  --svg FILE         latency and throughput against vCPU count (or queue count, with one --vcpus value)`;

function list(raw: string | undefined, what: string, parse: (s: string) => number): number[] | undefined {
  if (raw === undefined) return undefined;
  const xs = raw.split(',').map((s) => s.trim());
  if (xs.length === 0 || xs.some((s) => s === '')) throw new UsageError(`${what} ${raw}: expected a comma-separated list`);
  return [...new Set(xs.map(parse))];
}

function whole(what: string, lo: number, hi: number): (s: string) => number {
  return (s) => {
    const n = Number(s);
    if (!/^[0-9]+$/.test(s) || n < lo || n > hi) throw new UsageError(`${what} ${s}: expected a whole number in [${lo}, ${hi}]`);
    return n;
  };
}

function granule(s: string): number {
  const m = /^([0-9]+)([kK]?)$/.exec(s);
  const n = m ? Number(m[1]) * (m[2] ? 1024 : 1) : NaN;
  if (!(n >= 4096 && n <= 262144 && n % 4096 === 0)) throw new UsageError(`--granules ${s}: expected 4K..256K in 4K steps (e.g. 4K, 64K, 262144)`);
  return n;
}

function paths(raw: string | undefined): SimPathName[] {
  if (raw === undefined) return [...SIM_PATHS];
  const xs = raw.split(',').map((s) => s.trim());
  for (const x of xs) if (!(SIM_PATHS as readonly string[]).includes(x)) throw new UsageError(`--paths: unknown path ${x} (one of ${SIM_PATHS.join(', ')})`);
  return [...new Set(xs)] as SimPathName[];
}

/** Opened for appending before the run (created empty if absent), so a bad path fails now, not after the measurements. */
function checkWritable(file: string | undefined, option: string): void {
  if (file === undefined) return;
  try {
    closeSync(openSync(file, 'a'));
  } catch (e) {
    throw new UsageError(`${option} ${file}: cannot write there (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

function profileFromFile(file: string): SimProfile {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UsageError(`--profile-file ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  try {
    return checkProfile(doc, file);
  } catch (e) {
    if (e instanceof ArgumentError) throw new UsageError(`--profile-file ${e.message}`);
    throw e;
  }
}

/** The scaling panels of one granule: p50 and p99 latency, and throughput, per path (and queue count). */
function panels(rows: readonly SimRow[], x: 'threads' | 'queues', label: string): ScalingPanel[] {
  const keys = [...new Set(rows.map((r) => (x === 'threads' && !isTrapPath(r.path as SimPathName) && r.params['queues'] !== r.params['threads'] ? `${r.path} q=${r.params['queues']}` : r.path)))];
  const seriesOf = (pick: (r: SimRow) => number, dash: string, suffix: string) => keys.map((key) => {
    const mine = rows.filter((r) => key === r.path || key.startsWith(`${r.path} q=`) && `${r.path} q=${r.params['queues']}` === key);
    return {
      label: `${key}${suffix}`, color: pathColor(key.split(' ')[0]!), dash,
      points: mine.map((r) => ({ x: Number(r.params[x]), y: pick(r) })).sort((a, b) => a.x - b.x),
    };
  });
  return [
    { title: `latency, ${label}`, yLabel: 'µs per operation (p50 solid, p99 dashed)', series: [...seriesOf((r) => r.p50_us, '', ' p50'), ...seriesOf((r) => r.p99_us, '6 4', ' p99')] },
    { title: `throughput, ${label}`, yLabel: 'operations per second, all vCPUs', series: seriesOf((r) => r.ops_per_s, '', '') },
  ];
}

/** `vcmdq sim ...`; returns the exit status. Errors reach the dispatcher (src/cli.ts). */
export async function simMain(argv: readonly string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: {
      profile: { type: 'string' }, 'profile-file': { type: 'string' }, scenario: { type: 'string', default: 'unmap' },
      paths: { type: 'string' }, vcpus: { type: 'string' }, granules: { type: 'string' }, queues: { type: 'string' },
      unmaps: { type: 'string' }, seed: { type: 'string' }, 'host-cpus': { type: 'string' }, json: { type: 'string' }, svg: { type: 'string' },
    },
    strict: true,
    allowPositionals: true,
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}`);
  if (values.profile !== undefined && values['profile-file'] !== undefined) throw new UsageError('--profile and --profile-file exclude each other');
  const scenario = values.scenario;
  if (!(SIM_SCENARIOS as readonly string[]).includes(scenario)) throw new UsageError(`--scenario ${scenario}: one of ${SIM_SCENARIOS.join(', ')}`);
  const profileName = values.profile ?? 'kvm-arm64';
  if (values['profile-file'] === undefined && profileName !== 'node-local' && !Object.hasOwn(PROFILE_FILES, profileName)) {
    throw new UsageError(`--profile ${profileName}: one of ${[...Object.keys(PROFILE_FILES), 'node-local'].join(', ')}`);
  }
  const chosenPaths = paths(values.paths);
  const vcpus = list(values.vcpus, '--vcpus', whole('--vcpus', 1, SIM_MAX_QUEUES)) ?? DEFAULT_VCPUS;
  const granules = scenario === 'unmap' ? (list(values.granules, '--granules', granule) ?? [...SIM_GRANULES]) : [0];
  if (scenario !== 'unmap' && values.granules !== undefined) throw new UsageError('--granules goes with --scenario unmap');
  const queues = list(values.queues, '--queues', whole('--queues', 1, SIM_MAX_QUEUES));
  const unmaps = values.unmaps === undefined ? DEFAULT_UNMAPS : whole('--unmaps', 1, 10_000_000)(values.unmaps);
  const seed = values.seed === undefined ? 1 : whole('--seed', 0, 0xffffffff)(values.seed);
  const hostCpus = values['host-cpus'] === undefined ? 1 : whole('--host-cpus', 1, 1024)(values['host-cpus']);
  checkWritable(values.json, '--json');
  checkWritable(values.svg, '--svg');

  const progress = new Progress();
  const notes: string[] = [];
  let profile: SimProfile;
  if (values['profile-file'] !== undefined) profile = profileFromFile(values['profile-file']);
  else if (profileName === 'node-local') {
    progress.log('[sim] node-local: measuring this machine\'s step costs first (bench baselines and micro steps)');
    const m = await measureNodeLocal(progress);
    profile = nodeLocalProfile(m);
    notes.push(nodeLocalNote(m));
  } else profile = loadProfile(profileName);

  const rows: SimRow[] = [];
  for (const g of granules) {
    for (const path of chosenPaths) {
      for (const v of vcpus) {
        const trapPath = isTrapPath(path);
        const qs = trapPath || queues === undefined ? [v] : queues.filter((q) => q <= v);
        for (const q of qs) {
          progress.update(`[sim] ${path} ${v} vCPUs${g > 0 ? `, ${g / 1024}K` : ''}`);
          const r = runSim({
            profile, path, vcpus: v, unmaps, seed, hostCpus, queues: trapPath ? undefined : q,
            ...(scenario === 'unmap' ? { granule: g } : { workload: scenario as SimScenario }),
          });
          rows.push(simRow(r, profile.name, seed));
        }
      }
    }
  }
  notes.push(`predicted in virtual time from profile ${profile.name} (seed ${seed}, ${unmaps} operations per vCPU): not a measurement`);
  progress.log('');
  process.stdout.write(`${formatSimTable(rows, `vcmdq sim (${profile.name}, ${scenario}): predicted, not measured`)}\n\nnotes:\n${notes.map((n) => `  - ${n}`).join('\n')}\n`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify(simJsonDocument(rows, profile, notes), null, 2)}\n`);
  if (values.svg) {
    const byQueues = vcpus.length === 1 && queues !== undefined && queues.length > 1;
    const shown = [...new Set([granules[0]!, granules.at(-1)!])];
    const ps = shown.flatMap((g) => panels(rows.filter((r) => r.params['granule'] === g), byQueues ? 'queues' : 'threads', g > 0 ? `unmap ${g / 1024}K` : scenario));
    writeFileSync(values.svg, renderScalingSvg(ps, `vcmdq sim: ${scenario} scaling, predicted from profile ${profile.name}`, `seed ${seed}, ${unmaps} operations per vCPU; virtual time, not a measurement`, byQueues ? 'queues' : 'vCPUs'));
  }
  return rows.length > 0 ? 0 : 1;
}
