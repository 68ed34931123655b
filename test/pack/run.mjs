#!/usr/bin/env node
// @ts-check
// The packaging test (issue 14): the package as a user meets it. Packs this
// checkout, installs the tarball into a fresh ESM project (offline: vcmdq has
// no runtime dependencies), and there runs the README's library example
// verbatim on both paths, type-checks a TypeScript consumer with
// `module: nodenext`, and runs the CLI through npx. Every failure names its
// step; the last line is "pack: OK". Run from .ci/run (it builds dist/ through
// `prepack`, so it takes a minute); `node test/pack/run.mjs --keep` leaves the
// temporary project in place for a look.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const keep = process.argv.includes('--keep');
/** A step that takes longer than this did not exit by itself (a thread kept it alive) or hangs. */
const STEP_TIMEOUT_MS = 120_000;

class StepError extends Error {}

let current = '';
/** Run one named step; a failure stops the test with that name. */
function step(name, fn) {
  current = name;
  const r = fn();
  console.log(`pack: ok   ${name}${typeof r === 'string' ? `: ${r}` : ''}`);
}

function fail(why) {
  throw new StepError(why);
}

/** Run a command; its output, or a StepError with its status and stderr (a timeout says the process did not exit). */
function run(cmd, args, cwd, opts = {}) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: STEP_TIMEOUT_MS, ...opts });
  const shown = `${cmd} ${args.join(' ')}`;
  if (r.error) fail(`${shown}: ${r.error.message}`);
  if (r.signal !== null) fail(`${shown}: did not exit by itself within ${STEP_TIMEOUT_MS / 1000} s (killed by ${r.signal})\n${r.stderr}`);
  if (r.status !== 0) fail(`${shown}: exit ${r.status}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** The README's library example: the first ```ts block after "## The library", verbatim. */
function readmeExample() {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const m = /^## The library\n[\s\S]*?^```ts\n([\s\S]*?)^```$/m.exec(readme);
  if (m === null) fail('README.md has no ```ts block under "## The library"');
  return m[1];
}

const work = mkdtempSync(join(tmpdir(), 'vcmdq-pack-'));
const app = join(work, 'app');
const pkgDir = join(app, 'node_modules', 'vcmdq');
let tarball = '';
try {
  step('npm pack (prepack builds dist/)', () => {
    const out = run('npm', ['pack', '--json', '--pack-destination', work], root, { stdio: ['ignore', 'pipe', 'inherit'] });
    // npm prints the build's own output before the JSON document.
    const [info] = JSON.parse(out.slice(out.indexOf('[\n')));
    tarball = join(work, info.filename);
    const files = info.files.map((f) => f.path);
    const bad = files.filter((f) => f.startsWith('dist/types/') && !f.startsWith('dist/types/src/'));
    if (bad.length > 0) fail(`the tarball carries files no user needs: ${bad.join(', ')}`);
    if (!files.includes('dist/types/src/index.d.ts')) fail('the tarball has no dist/types/src/index.d.ts (the exports map\'s types)');
    return `${info.filename}: ${(info.size / 1024).toFixed(0)} kB packed, ${(info.unpackedSize / 1024).toFixed(0)} kB unpacked, ${info.entryCount} files`;
  });

  step('package.json: no runtime dependencies, no install-time scripts', () => {
    const pkg = JSON.parse(run('tar', ['-xOzf', tarball, 'package/package.json'], work));
    const deps = Object.keys({ ...pkg.dependencies, ...pkg.peerDependencies, ...pkg.optionalDependencies });
    if (deps.length > 0) fail(`runtime dependencies ${deps.join(', ')}: the offline install below cannot fetch them`);
    const scripts = ['preinstall', 'install', 'postinstall', 'prepare'].filter((s) => pkg.scripts?.[s] !== undefined);
    if (scripts.length > 0) fail(`scripts ${scripts.join(', ')} would run when a user installs the package`);
  });

  step('install the tarball into a fresh ESM project (offline)', () => {
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'vcmdq-consumer', private: true, type: 'module' }, null, 2)}\n`);
    run('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], app);
    if (!existsSync(join(pkgDir, 'dist', 'index.js'))) fail('node_modules/vcmdq/dist/index.js is missing after the install');
  });

  step('every worker the bundles start is installed', () => {
    const dist = join(pkgDir, 'dist');
    const names = new Set();
    for (const f of readdirSync(dist).filter((f) => f.endsWith('.js'))) {
      for (const m of readFileSync(join(dist, f), 'utf8').matchAll(/["'`]([\w-]+\.worker\.js)["'`]/g)) names.add(m[1]);
    }
    if (names.size === 0) fail('no worker reference found in the bundles (did workerUrl change?)');
    const missing = [...names].filter((n) => !existsSync(join(dist, n)));
    if (missing.length > 0) fail(`referenced but not installed: ${missing.join(', ')} (package.json "files"?)`);
    return [...names].sort().join(', ');
  });

  const example = readmeExample();
  for (const path of ['doorbell', 'trap']) {
    step(`README library example, ${path} path, exits by itself`, () => {
      const code = path === 'doorbell' ? example : example.replace("openQueue({ path: 'doorbell' })", "openQueue({ path: 'trap' })");
      if (code === example && path !== 'doorbell') fail("the example no longer opens its queue with openQueue({ path: 'doorbell' })");
      writeFileSync(join(app, `example-${path}.mjs`), code);
      run(process.execPath, [`example-${path}.mjs`], app);
    });
  }

  step('require() is refused: the package is ESM only', () => {
    writeFileSync(join(app, 'require.cjs'), "try { require('vcmdq'); process.exit(1); } catch (e) { process.exit(e.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED' || e.code === 'ERR_REQUIRE_ESM' ? 0 : 2); }\n");
    run(process.execPath, ['require.cjs'], app);
  });

  step('a TypeScript consumer type-checks with module nodenext (and a bad op or cs does not)', () => {
    const src = join(fileURLToPath(new URL('.', import.meta.url)), 'consumer.ts');
    writeFileSync(join(app, 'consumer.ts'), readFileSync(src, 'utf8'));
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, noEmit: true,
        // A Node project has @types/node (this checkout's: the install is offline); the declarations need it
        // for Symbol.asyncDispose (Host) on a lib older than esnext.disposable.
        skipLibCheck: false, types: ['node'], typeRoots: [join(root, 'node_modules', '@types')],
      },
      files: ['consumer.ts'],
    }));
    run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], app);
  });

  step('npx vcmdq decode', () => {
    const out = JSON.parse(run('npx', ['--no-install', 'vcmdq', 'decode', '0x0000000000000046', '0x0'], app));
    if (out.op !== 'CMD_SYNC') fail(`decoded ${JSON.stringify(out)}, want a CMD_SYNC`);
  });

  step('npx vcmdq replay, both paths', () => {
    writeFileSync(join(app, 'dump.txt'), '0x0001000000000011 0x0   # TLBI_NH_ASID asid=1\n0x0000000000000046 0x0   # CMD_SYNC\n');
    for (const path of ['trap', 'doorbell']) {
      const out = JSON.parse(run('npx', ['--no-install', 'vcmdq', 'replay', '--path', path, 'dump.txt'], app));
      if (out.error !== null || out.executed !== 2) fail(`${path}: ${JSON.stringify(out)}, want 2 commands executed without error`);
    }
  });

  step('npx vcmdq bench --help (the bench is part of the package)', () => {
    const out = run('npx', ['--no-install', 'vcmdq', 'bench', '--help'], app);
    if (!out.startsWith('usage: vcmdq bench')) fail(`printed ${JSON.stringify(out.slice(0, 80))}`);
  });

  console.log('pack: OK');
} catch (e) {
  if (!(e instanceof StepError)) throw e;
  console.error(`pack: FAILED at step "${current}": ${e.message}`);
  process.exitCode = 1;
} finally {
  if (keep) console.log(`pack: kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}
