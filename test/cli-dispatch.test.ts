// The contract every `vcmdq` subcommand shares (issue 9 item 7): help on
// stdout with status 0, every error one line on stderr with status 2 (usage)
// or 1 (failure), never a stack trace.
import { describe, expect, it } from 'vitest';
import { fixture, vcmdq, type CliRun } from './cli-helpers.ts';

const COMMANDS = ['decode', 'encode', 'replay', 'bench', 'gate', 'sim'];

/** One line on stderr, nothing on stdout, no stack frame. */
function expectOneLineError(r: CliRun, status: number, message: RegExp): void {
  expect(r.status).toBe(status);
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(/^[^\n]+\n$/);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.stderr).toMatch(message);
}

describe('help', () => {
  it.each([['--help'], ['-h'], ['help']])('vcmdq %s lists every command on stdout, exit 0', (flag) => {
    const r = vcmdq([flag]);
    expect(r.status).toBe(0);
    expect(r.stderr).toBe('');
    for (const c of COMMANDS) expect(r.stdout).toMatch(new RegExp(`^  vcmdq ${c} `, 'm'));
  });

  it.each(COMMANDS)('vcmdq %s --help and vcmdq help %s print its usage on stdout, exit 0, and run nothing', (c) => {
    const viaFlag = vcmdq([c, '--help']);
    expect(viaFlag.status).toBe(0);
    expect(viaFlag.stderr).toBe('');
    expect(viaFlag.stdout).toMatch(new RegExp(`^usage: vcmdq ${c} `));
    expect(vcmdq(['help', c])).toEqual(viaFlag);
    // -h after other (even bad) arguments still asks for help, before anything runs.
    expect(vcmdq([c, '--bogus', '-h'])).toEqual(viaFlag);
  });

  it('help for an unknown command, or for two, is a usage error', () => {
    expectOneLineError(vcmdq(['help', 'frobnicate']), 2, /^vcmdq: unknown command frobnicate \(commands: decode, encode, replay/);
    expectOneLineError(vcmdq(['help', 'decode', 'encode']), 2, /at most one command/);
  });
});

describe('errors', () => {
  it('an unknown or missing command exits 2 with one line naming the commands', () => {
    expectOneLineError(vcmdq(['frobnicate']), 2, /unknown command frobnicate .*decode, encode, replay, bench, gate/);
    expectOneLineError(vcmdq(['toString']), 2, /unknown command toString/);
    expectOneLineError(vcmdq([]), 2, /^vcmdq: no command/);
  });

  it('replay: a vSID declared twice is a usage error naming it (it used to be a stack trace)', () => {
    const r = vcmdq(['replay', '--path', 'trap', '--stream', '0x10:0x20008', '--stream', '0x10:0x20009', fixture('replay-legal.txt')]);
    expectOneLineError(r, 2, /^vcmdq replay: --stream 0x10:0x20009: vSID 0x10 is already declared\n$/);
    expectOneLineError(vcmdq(['replay', '--path', 'trap', '--stream', '1:7', '--stream', '2:7', fixture('replay-legal.txt')]), 2, /pSID 0x7 is already declared/);
  });

  it('replay: option mistakes are one-line usage errors', () => {
    const legal = fixture('replay-legal.txt');
    const cases: [string[], RegExp][] = [
      [['--path', 'trap', '--bogus', legal], /Unknown option '--bogus'/],
      [['--path', 'trap', '--stream'], /'--stream <value>' argument missing/],
      [['--path', 'trap', '--stream', '1', legal], /--stream VSID:PSID wants A:B, got '1'/],
      [['--path', 'trap', '--stream', '1:2:3', legal], /wants A:B/],
      [['--path', 'trap', '--vmid', '0x10000', legal], /--vmid must be at most 0xffff/],
      [['--path', 'trap', '--vmid', 'five', legal], /--vmid must be a number, got 'five'/],
      [['--path', 'trap', '--attach', '0x10', legal], /--attach 0x10: vSID 0x10 is not declared with --stream/],
      [['--path', 'trap', '--stream', '0x10:1', '--attach', '0x10', '--attach', '0x10:3', legal], /vSID 0x10 is already attached/],
      [['--path', 'trap', '--stream', '0x10:1', '--attach', '0x10:0x10000', legal], /--attach VSID\[:ASID\] must be at most 0xffff/],
      [['--path', 'doorbell', '--strtab', '0x1000', legal], /--strtab needs --path trap/],
      [['--path', 'trap', '--strtab', '0x1010', legal], /64-byte aligned/],
      [['--path', 'trap', '--stream', '0x10000:1', '--strtab', '0x0', legal], /end within the first half of guest RAM/],
      [['--path', 'trap', legal, legal], /one dump FILE expected, got 2/],
    ];
    for (const [args, message] of cases) expectOneLineError(vcmdq(['replay', ...args]), 2, message);
  });
});
