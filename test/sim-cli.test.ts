// `vcmdq sim` as a user runs it: help, one-line usage errors (exit 2), and a
// small run whose --json rows carry the bench's fields and the marks of a
// prediction, and whose --svg is one well-formed document.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { vcmdq } from './cli-helpers.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'vcmdq-sim-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('vcmdq sim', () => {
  it('--help prints the usage with the paths and profiles, exit 0', () => {
    const r = vcmdq(['sim', '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^usage: vcmdq sim /);
    expect(r.stdout).toMatch(/kvm-arm64/);
    expect(r.stdout).toMatch(/doorbell-adaptive/);
  });

  it.each([
    [['--profile', 'moon'], /--profile moon: one of kvm-arm64, node-local/],
    [['--paths', 'trap,warp'], /unknown path warp/],
    [['--vcpus', '0'], /--vcpus 0: expected a whole number in \[1, 64\]/],
    [['--vcpus', '65'], /--vcpus 65/],
    [['--granules', '5K'], /--granules 5K: expected 4K\.\.256K/],
    [['--scenario', 'storm'], /--scenario storm: one of unmap, roundtrip/],
    [['--profile-file', '/nonexistent/p.json'], /--profile-file \/nonexistent\/p\.json: no such file/],
    [['--bogus'], /Unknown option '--bogus'/],
  ])('%j is a one-line usage error, exit 2', (args, message) => {
    const r = vcmdq(['sim', ...args]);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^vcmdq sim: [^\n]+\n$/);
    expect(r.stderr).toMatch(message);
  });

  it('--scenario svastorm: rows named as the bench\'s svastorm, one per path and vCPU count', () => {
    const json = path.join(dir, 'storm.json');
    const r = vcmdq(['sim', '--scenario', 'svastorm', '--paths', 'trap-qemu,doorbell-adaptive', '--vcpus', '1,4', '--unmaps', '30', '--json', json]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/## svastorm/);
    const doc = JSON.parse(readFileSync(json, 'utf8')) as { results: Record<string, unknown>[] };
    expect(doc.results.map((row) => [row['scenario'], row['path']])).toEqual([
      ['svastorm', 'trap-qemu'], ['svastorm', 'trap-qemu'], ['svastorm', 'doorbell-adaptive'], ['svastorm', 'doorbell-adaptive'],
    ]);
  });

  it('a small kvm-arm64 run: table, rows in the bench schema marked predicted, an SVG', () => {
    const json = path.join(dir, 'out.json');
    const svg = path.join(dir, 'out.svg');
    const r = vcmdq(['sim', '--profile', 'kvm-arm64', '--paths', 'trap,doorbell-spin,hw', '--vcpus', '1,2', '--granules', '4K,64K', '--unmaps', '20', '--json', json, '--svg', svg]);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/predicted, not measured/);
    const doc = JSON.parse(readFileSync(json, 'utf8')) as { predicted: boolean; profile: { name: string }; results: Record<string, unknown>[] };
    expect(doc.predicted).toBe(true);
    expect(doc.profile.name).toBe('kvm-arm64');
    // 3 paths x 2 vCPU counts x 2 granules.
    expect(doc.results).toHaveLength(12);
    for (const row of doc.results) {
      expect(row).toMatchObject({ scenario: 'unmap', predicted: true, profile: 'kvm-arm64' });
      for (const k of ['p50_us', 'p90_us', 'p99_us', 'p999_us', 'mean_us', 'stddev_us', 'ops_per_s', 'cpu_us_per_op', 'samples']) {
        expect(typeof row[k], k).toBe('number');
      }
      expect(row['p99_us'] as number).toBeGreaterThanOrEqual(row['p50_us'] as number);
      expect(row['samples']).toBe(20 * Number((row['params'] as Record<string, number>)['threads']));
    }
    const text = readFileSync(svg, 'utf8');
    expect(text).toMatch(/^<svg [^>]*>[\s\S]*<\/svg>\n$/);
    expect(text.match(/<path /g)?.length).toBeGreaterThan(6);
  });
});
