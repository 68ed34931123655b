// npm run mutation:changed [-- BASE]: mutation testing of the protocol-core
// lines changed since BASE (default: the merge base with main), so a change
// is checked in minutes where a full run takes hours. The lines come from
// `git diff -U0 BASE` (working tree included), kept where they fall inside
// the ranges stryker.config.mjs mutates, and handed to Stryker as
// `--mutate file:from-to` (a mutant counts when it starts on such a line).
// Stryker's --incremental also reuses the last run's results of unchanged
// mutants when reports/mutation/stryker-incremental.json exists.
// Exits 0 with a message when no mutated line changed.
import { execFileSync, spawnSync } from 'node:child_process';
import config from '../stryker.config.mjs';

const git = (...args) => execFileSync('git', args, { encoding: 'utf8' });
const base = process.argv[2] ?? git('merge-base', 'HEAD', 'main').trim();

/** Configured mutate entries as { file, from, to } (a whole file: 1..Infinity). */
const scopes = config.mutate.map((m) => {
  const r = /^(.*?)(?::(\d+)-(\d+))?$/.exec(m);
  return { file: r[1], from: r[2] ? Number(r[2]) : 1, to: r[3] ? Number(r[3]) : Infinity };
});
const files = [...new Set(scopes.map((s) => s.file))];

/** Changed line spans [from, to] of the working tree against `base`, per file. */
const changed = [];
for (const file of files) {
  for (const line of git('diff', '-U0', base, '--', file).split('\n')) {
    const h = /^@@ -\S+ \+(\d+)(?:,(\d+))? @@/.exec(line);
    if (h === null) continue;
    const from = Number(h[1]);
    const count = h[2] === undefined ? 1 : Number(h[2]);
    if (count === 0) continue; // a pure deletion: no new line to mutate
    for (const s of scopes) {
      if (s.file !== file) continue;
      const a = Math.max(from, s.from);
      const b = Math.min(from + count - 1, s.to);
      if (a <= b) changed.push(`${file}:${a}-${b}`);
    }
  }
}

if (changed.length === 0) {
  console.log(`mutation:changed: no line of the mutated protocol core changed since ${base.slice(0, 12)}`);
  process.exit(0);
}
console.log(`mutation:changed since ${base.slice(0, 12)}: ${changed.join(' ')}`);
const r = spawnSync('npx', ['stryker', 'run', 'stryker.config.mjs', '--incremental', '--mutate', changed.join(',')], { stdio: 'inherit' });
process.exit(r.status ?? 1);
