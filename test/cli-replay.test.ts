// `vcmdq replay` as a user runs it: the built CLI on fixture dumps, through
// both paths; the process must exit on its own (host.stop() ends every thread).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
function replay(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  // A timeout here would mean a thread kept the process alive.
  const r = spawnSync(process.execPath, [cli, 'replay', ...args], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('vcmdq replay', () => {
  it('a legal dump through the trap path: the VMM forwards the invalidations and handles the syncs', () => {
    const r = replay('--path', 'trap', '--vmid', '3', '--stream', '0:0x10', fixture('replay-legal.txt'));
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ path: 'trap', prod: 6, cons: 6, error: null, executed: 6, forwarded: 4, handled_by_vmm: 2 });
  });

  it('the same dump through the doorbell path', () => {
    const r = replay('--path', 'doorbell', '--stream', '0:0x10', fixture('replay-legal.txt'));
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ path: 'doorbell', prod: 6, cons: 6, error: null, executed: 6, forwarded: 0, handled_by_vmm: 0 });
  });

  it.each(['trap', 'doorbell'])('an illegal entry after the first batch stops the %s queue at its index, exit 0', (path) => {
    const r = replay('--path', path, fixture('replay-illegal.txt'));
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ path, prod: 77, cons: 70, error: { cerror: 'ILL', index: 70 }, executed: 70 });
  });

  it('an ATC_INV for a vSID the VM does not have is the kernel refusing it: CERROR_ILL at its index', () => {
    const r = replay('--path', 'trap', fixture('replay-legal.txt'));
    expect(JSON.parse(r.stdout)).toEqual({ path: 'trap', prod: 6, cons: 2, error: { cerror: 'ILL', index: 2 }, executed: 2, forwarded: 2, handled_by_vmm: 0 });
  });

  it('unusable input exits 2 with a message naming the line', () => {
    const r = replay('--path', 'trap', fixture('replay-badhex.txt'));
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/replay-badhex\.txt:3: expected two hex words .*0xZZ/);
    expect(replay('--path', 'sideways', fixture('replay-legal.txt')).status).toBe(2);
    expect(replay('--path', 'trap', '--stream', '1', fixture('replay-legal.txt')).status).toBe(2);
    expect(replay('--path', 'trap', fixture('no-such-file.txt')).stderr).toMatch(/cannot read/);
  });

  it('is listed in the help', () => {
    const r = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
    expect(r.stderr).toMatch(/replay --path trap\|doorbell .*0 on doorbell/);
  });
});
