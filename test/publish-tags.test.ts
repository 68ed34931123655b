// Memory ordering is part of the design (src/layout.ts, ORDERING PROTOCOL):
// every atomic write to a shared word says what it does for the other
// threads, next to the code, so a new one cannot slip in unexplained.
//   // publish: X     a release: another thread's acquire of this word makes
//                     what was written before it (or the value itself) visible
//   // acquire: X     takes ownership (a claim), pairing with someone's publish
//   // unordered: X   a counter or flag nothing is ordered by (statistics,
//                     heartbeats, a waiter leaving, table data published later)
// The tag sits on the statement's line or in the comment lines right above it.
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const WRITE = /\bAtomics\.(store|add|sub|and|or|xor|exchange|compareExchange)\(|(?<!function )\bstoreRelease\(/;
const TAG = /\/\/ (publish|acquire|unordered): \S/;

function sources(dir: string): string[] {
  return readdirSync(join(root, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(root, dir, f));
}

/** `file:line` of each atomic write in `text` without a tag. */
function untaggedWrites(text: string, file: string): string[] {
  const lines = text.split('\n');
  const out: string[] = [];
  lines.forEach((line, i) => {
    const code = line.replace(/\/\/.*$/, '');
    if (!WRITE.test(code) || /^\s*\*/.test(line)) return;
    if (TAG.test(line)) return;
    for (let j = i - 1; j >= 0 && /^\s*\/\//.test(lines[j]!); j--) if (TAG.test(lines[j]!)) return;
    out.push(`${file}:${i + 1}: ${line.trim()}`);
  });
  return out;
}

describe('ordering tags', () => {
  it('every atomic write in src/ and native-free-fastpath/ says whether it publishes', () => {
    const files = [...sources('src'), ...sources('native-free-fastpath')];
    expect(files.length).toBeGreaterThan(20);
    const missing = files.flatMap((f) => untaggedWrites(readFileSync(f, 'utf8'), relative(root, f)));
    expect(missing).toEqual([]);
  });

  it('the scanner finds an untagged write, and accepts a tag on the line or in the comment above', () => {
    const text = [
      'Atomics.store(i32, A, 1); // publish: A',
      '// publish: B, after the data',
      'Atomics.store(i32, B, 1);',
      'Atomics.add(i32, C, 1);',
      '// Atomics.store(i32, D, 1) in a comment is not a write',
      ' * Atomics.store(i32, E, 1) in a doc comment neither',
      'if (Atomics.compareExchange(i32, F, 0, 1) === 0) { // acquire: F',
      'Atomics.sub(i32, G, 1); // unordered: G',
    ].join('\n');
    expect(untaggedWrites(text, 'x.ts')).toEqual(['x.ts:4: Atomics.add(i32, C, 1);']);
  });
});
