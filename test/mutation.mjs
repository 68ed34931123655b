// npm run mutation [-- TARGET ...] [-- STRYKER_ARGS]: mutation testing of the
// protocol core (issue #16), one Stryker run per target of
// test/mutation-targets.mjs (all of them when none is named), one after the
// other, each against the test files that guard it. Prints each target's
// score per file, its surviving mutants and how long it took, and writes
// reports/mutation/TARGET.json and .html.
//
// Two shared cores: `npm run mutation` runs this under `nice -n 15`, Stryker
// uses one test runner (concurrency 1), and a lock file in the system's temp
// directory refuses a second mutation run on the machine while one is going.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { targets } from './mutation-targets.mjs';

const LOCK = join(tmpdir(), 'vcmdq-stryker.lock');

/** Take the machine-wide lock, or exit naming the process that holds it. A lock whose process is gone is taken over. */
function lock() {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(LOCK, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      process.on('exit', () => rmSync(LOCK, { force: true }));
      return;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
      const holder = Number(readFileSync(LOCK, 'utf8'));
      if (alive(holder)) {
        console.error(`mutation: another mutation run (pid ${holder}, ${LOCK}) is going; one at a time on two cores`);
        process.exit(1);
      }
      rmSync(LOCK, { force: true }); // stale: its process is gone
    }
  }
  console.error(`mutation: could not take ${LOCK}`);
  process.exit(1);
}

function alive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

/** Per file of a Stryker JSON report: counts by status and the score (killed + timed out over those that ran or had no coverage). */
export function scores(report) {
  const rows = [];
  for (const [file, { mutants }] of Object.entries(report.files)) {
    const n = {};
    for (const m of mutants) n[m.status] = (n[m.status] ?? 0) + 1;
    const detected = (n.Killed ?? 0) + (n.Timeout ?? 0);
    const valid = detected + (n.Survived ?? 0) + (n.NoCoverage ?? 0);
    const survivors = mutants
      .filter((m) => m.status === 'Survived' || m.status === 'NoCoverage')
      .map((m) => `${file}:${m.location.start.line}:${m.location.start.column} ${m.mutatorName} ${m.status}: ${JSON.stringify(m.replacement ?? '')}`);
    rows.push({ file, n, score: valid === 0 ? NaN : (100 * detected) / valid, survivors });
  }
  return rows;
}

/** Run one target (extra Stryker arguments appended); resolves to Stryker's exit status. */
export async function runTarget(name, extra = []) {
  const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  const dirty = execFileSync('git', ['status', '--porcelain', '--', ...targets[name].mutate.map((m) => m.replace(/:.*/, ''))], { encoding: 'utf8' }) !== '';
  const t0 = Date.now();
  const began = new Date().toISOString().slice(0, 16).replace('T', ' ');
  console.log(`mutation: ${name} (${targets[name].note}) from ${began} UTC on ${commit}${dirty ? ' + working tree' : ''}; tests: ${targets[name].tests.join(' ')}`);
  rmSync(`reports/mutation/${name}.json`, { force: true }); // a failed run must not print the last run's scores
  // Its own process group, so that stopping this script (SIGINT, SIGTERM) stops Stryker and its test runner too:
  // an orphaned run would go on burning a core beside the next one.
  const child = spawn('npx', ['stryker', 'run', 'stryker.config.mjs', ...extra], {
    stdio: 'inherit',
    detached: true,
    env: { ...process.env, MUTATION_TARGET: name },
  });
  const stop = (sig) => {
    try {
      process.kill(-child.pid, sig);
    } catch {
      // already gone
    }
    process.exit(1);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const status = await new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  const secs = Math.round((Date.now() - t0) / 1000);
  try {
    for (const row of scores(JSON.parse(readFileSync(`reports/mutation/${name}.json`, 'utf8')))) {
      const counts = Object.entries(row.n).map(([k, v]) => `${v} ${k}`).join(', ');
      console.log(`mutation: ${name}: ${row.file} ${row.score.toFixed(1)}% (${counts}) in ${secs} s on ${commit}${dirty ? '+' : ''}`);
      for (const s of row.survivors) console.log(`  ${s}`);
    }
  } catch (e) {
    console.log(`mutation: ${name}: no report (${e.message})`);
  }
  return status;
}

/** Parse `[TARGET ...] [-- STRYKER_ARGS]`. */
function parseArgs(argv) {
  const dash = argv.indexOf('--');
  const names = dash < 0 ? argv : argv.slice(0, dash);
  const extra = dash < 0 ? [] : argv.slice(dash + 1);
  for (const n of names) {
    if (!(n in targets)) {
      console.error(`mutation: unknown target ${n}; targets: ${Object.keys(targets).join(' ')}`);
      process.exit(2);
    }
  }
  return { names: names.length === 0 ? Object.keys(targets) : names, extra };
}

export { lock };

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { names, extra } = parseArgs(process.argv.slice(2));
  lock();
  let status = 0;
  for (const n of names) status = (await runTarget(n, extra)) || status;
  process.exit(status);
}
