// npm run mutation:changed [-- BASE]: mutation testing of the protocol-core
// lines changed since BASE (default: the merge base with main), so a change
// is checked in minutes where a full run takes much longer. The lines come
// from `git diff -U0 BASE` (working tree included), kept where they fall
// inside a target's ranges (test/mutation-targets.mjs), and each target with
// changed lines is run as `npm run mutation` runs it (its own guarding tests,
// one target after the other, the same machine-wide lock) with
// `--mutate file:from-to` (a mutant counts when it starts on such a line) and
// Stryker's --incremental (reusing the target's last results of unchanged
// mutants when reports/mutation/TARGET-incremental.json exists).
// Exits 0 with a message when no mutated line changed.
import { execFileSync } from 'node:child_process';
import { targets } from './mutation-targets.mjs';
import { lock, runTarget } from './mutation.mjs';

const git = (...args) => execFileSync('git', args, { encoding: 'utf8' });
const base = process.argv[2] ?? git('merge-base', 'HEAD', 'main').trim();

/** A mutate entry as { file, from, to } (a whole file: 1..Infinity). */
function scope(m) {
  const r = /^(.*?)(?::(\d+)-(\d+))?$/.exec(m);
  return { file: r[1], from: r[2] ? Number(r[2]) : 1, to: r[3] ? Number(r[3]) : Infinity };
}

/** Changed line spans [from, to] of the working tree against `base` in `file`. */
const spans = new Map();
function changedSpans(file) {
  if (!spans.has(file)) {
    const out = [];
    for (const line of git('diff', '-U0', base, '--', file).split('\n')) {
      const h = /^@@ -\S+ \+(\d+)(?:,(\d+))? @@/.exec(line);
      if (h === null) continue;
      const count = h[2] === undefined ? 1 : Number(h[2]);
      if (count !== 0) out.push([Number(h[1]), Number(h[1]) + count - 1]); // count 0: a pure deletion, no new line to mutate
    }
    spans.set(file, out);
  }
  return spans.get(file);
}

const runs = [];
for (const [name, t] of Object.entries(targets)) {
  const changed = [];
  for (const s of t.mutate.map(scope)) {
    for (const [from, to] of changedSpans(s.file)) {
      const a = Math.max(from, s.from);
      const b = Math.min(to, s.to);
      if (a <= b) changed.push(`${s.file}:${a}-${b}`);
    }
  }
  if (changed.length > 0) runs.push({ name, changed });
}

if (runs.length === 0) {
  console.log(`mutation:changed: no line of the mutated protocol core changed since ${base.slice(0, 12)}`);
  process.exit(0);
}
lock();
let status = 0;
for (const { name, changed } of runs) {
  console.log(`mutation:changed since ${base.slice(0, 12)}: ${name}: ${changed.join(' ')}`);
  status = (await runTarget(name, ['--incremental', '--mutate', changed.join(',')])) || status;
}
process.exit(status);
