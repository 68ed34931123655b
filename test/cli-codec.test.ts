import { describe, expect, it } from 'vitest';
import { vcmdq } from './cli-helpers.ts';

describe('vcmdq decode', () => {
  it('prints the TLBI_NH_VA of the 16-page range vector', () => {
    const r = vcmdq(['decode', '0x0022000000400012', '0x0000000000010701']);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ op: 'TLBI_NH_VA', vmid: 0, asid: 0x22, num: 0, scale: 4, leaf: 1, ttl: 3, tg: 1, addr: '0x0000000000010000' });
  });
  it('an illegal command exits 1 with the CERROR_ILL reason', () => {
    const r = vcmdq(['decode', '0x0fc02046', '0x3']);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('CERROR_ILL: RES0 bits 0x3 set in w1 of CMD_SYNC\n');
  });
  it('capability flags change the verdict', () => {
    expect(vcmdq(['decode', '--no-ril', '0x0022000000400012', '0x10701']).stderr).toMatch(/^CERROR_ILL: .*SMMU_IDR3.RIL=0/);
    expect(vcmdq(['decode', '--no-ats', '0x0000010000000040', '0x34']).status).toBe(1);
    expect(vcmdq(['decode', '--stall-model=1', '0x0000000100000045', '0']).stderr).toMatch(/STALL_MODEL/);
    expect(vcmdq(['decode', '--bogus', '0x46', '0']).status).toBe(2);
  });
  it('bad hex exits 2 with a message', () => {
    const r = vcmdq(['decode', '0xzz', '0']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/bad command word '0xzz'/);
  });
  it('reads stdin line by line, reporting every line', () => {
    const input = ['# a queue dump', '0x0000000000000046 0x0', '', '0x0fc02046 0x3   # RES0 set', '0x0009000500000011 0'].join('\n');
    const r = vcmdq(['decode'], input);
    expect(r.status).toBe(1);
    expect(r.stdout.trim().split('\n').map((l) => JSON.parse(l).op)).toEqual(['CMD_SYNC', 'TLBI_NH_ASID']);
    expect(r.stderr).toBe('line 4: CERROR_ILL: RES0 bits 0x3 set in w1 of CMD_SYNC\n');
  });
  it('stdin: a bad line exits 2, the good ones are still decoded', () => {
    const r = vcmdq(['decode'], '0x46 0\nnot hex\n0x46 0 0\n0x46 0\n');
    expect(r.status).toBe(2);
    expect(r.stdout.trim().split('\n')).toHaveLength(2);
    expect(r.stderr).toMatch(/^line 2: bad command word 'not'.*\nline 3: want two hex words, got 3\n$/);
  });
  it('all-good stdin exits 0', () => {
    expect(vcmdq(['decode'], '0x46 0\n').status).toBe(0);
  });
});

describe('vcmdq encode', () => {
  it('prints the two words', () => {
    const r = vcmdq(['encode', '{"op":"CMD_SYNC","cs":1,"msh":3,"msiattr":15,"msiaddr":"0x80401230"}']);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('0x000000000fc01046 0x0000000080401230\n');
  });
  it('round-trips with decode', () => {
    const words = vcmdq(['encode', '{"op":"ATC_INV","sid":2049,"ssv":1,"ssid":"0x12345","size":2,"addr":32768}']).stdout.trim().split(' ');
    expect(words).toEqual(['0x0000080112345840', '0x0000000000008002']);
    expect(JSON.parse(vcmdq(['decode', ...words]).stdout)).toMatchObject({ op: 'ATC_INV', sid: 2049, ssid: 0x12345, addr: '0x0000000000008000' });
  });
  it('an invalid object exits 1 naming the field', () => {
    const cases: [string, RegExp][] = [
      ['{"op":"TLBI_NH_ALL","asid":1}', /TLBI_NH_ALL has no field 'asid'/],
      ['{"op":"TLBI_NH_ASID","asid":65536}', /TLBI_NH_ASID.asid=65536 does not fit/],
      ['{"op":"CFGI_STE","sid":"x1"}', /field sid: 'x1' is not a number/],
      ['{"asid":1}', /field op/],
      ['{"op":"NOPE"}', /unknown op NOPE/],
      ['{nope', /not JSON/],
    ];
    for (const [json, message] of cases) {
      const r = vcmdq(['encode', json]);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(message);
    }
  });
});
