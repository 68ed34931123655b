import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildCmdSync, decodeCommand, encodeCommand, getField, type Command } from '../src/codec.ts';
import { F, OP } from '../src/fields.ts';
import { VCMDQ_TEGRA241, VSMMU_REJECT, VSmmu, convertBatch, rejectReason } from '../src/vsmmu.ts';

interface Vector {
  name: string;
  kind: string;
  words: [string, string];
  host_words?: [string, string];
  vsmmu_vmid?: number;
  vsid_table?: Record<string, string>;
  expected?: Record<string, unknown>;
}
const vectors = JSON.parse(readFileSync(new URL('./fixtures/smmu-vectors.json', import.meta.url), 'utf8')) as Vector[];

function toU32(words: readonly [string | bigint, string | bigint]): Uint32Array {
  const [w0, w1] = words.map((w) => BigInt(w));
  return new Uint32Array([Number(w0! & 0xffffffffn), Number(w0! >> 32n), Number(w1! & 0xffffffffn), Number(w1! >> 32n)]);
}
const vsmmuOf = (v: Vector): VSmmu =>
  new VSmmu(v.vsmmu_vmid!, Object.entries(v.vsid_table!).map(([vs, ps]) => [Number(vs), Number(ps)] as const));

describe('iommufd conversion (arm_vsmmu_convert_user_cmd)', () => {
  const convert = vectors.filter((v) => v.kind === 'iommufd-convert');
  const rejected = vectors.filter((v) => v.kind === 'illegal' && v.expected?.['iommufd'] === '-EIO');
  it('has vectors', () => {
    expect(convert.length).toBeGreaterThanOrEqual(6);
    expect(rejected.length).toBeGreaterThanOrEqual(7);
  });
  for (const v of convert) {
    it(`converts bit for bit: ${v.name}`, () => {
      const u = toU32(v.words);
      expect(vsmmuOf(v).convertIommufd(u)).toBe(0);
      expect([...u]).toEqual([...toU32(v.host_words!)]);
    });
  }
  for (const v of rejected) {
    it(`rejects: ${v.name}`, () => {
      const u = toU32(v.words);
      const code = vsmmuOf(v).convertIommufd(u);
      expect(code).not.toBe(0);
      expect(rejectReason(code, u)).toMatch(/not forwarded|no vDEVICE/);
    });
  }
  it('NSNH_ALL becomes NH_ALL(vmid) with w1 cleared', () => {
    const u = toU32([0x0000abcd00000030n, 0xffffffffffffffffn]);
    expect(new VSmmu(0x42, []).convertIommufd(u)).toBe(0);
    expect([...u]).toEqual([0x10, 0x42, 0, 0]);
  });
  it('an unknown vSID names itself', () => {
    const u = toU32([0x0000009900000040n, 0x34n]);
    const code = new VSmmu(5, [[0x10, 0x20008]]).convertIommufd(u);
    expect(code & 0xff).toBe(VSMMU_REJECT.UNKNOWN_VSID);
    expect(rejectReason(code, u)).toBe('ATC_INV names vSID 0x99 with no vDEVICE in this vSMMU');
    expect([...u]).toEqual([...toU32([0x0000009900000040n, 0x34n])]);
  });
});

describe('vCMDQ command set', () => {
  const vs = new VSmmu(5, [[0x10, 0x20008]]);
  const words = (c: Command): Uint32Array => toU32(encodeCommand(c));
  it('forces the VMID of NH TLBIs and maps the SID of ATC_INV', () => {
    for (const op of ['TLBI_NH_ALL', 'TLBI_NH_ASID', 'TLBI_NH_VA', 'TLBI_NH_VAA'] as const) {
      const u = words({ op, vmid: 0xffff });
      expect(vs.convertVcmdq(u)).toBe(0);
      expect(getField(u, F.VMID)).toBe(5);
    }
    const u = words({ op: 'ATC_INV', sid: 0x10, size: 52 });
    expect(vs.convertVcmdq(u)).toBe(0);
    expect(decodeCommand([BigInt(u[0]!) | (BigInt(u[1]!) << 32n), BigInt(u[2]!)])).toMatchObject({ sid: 0x20008, size: 52 });
    expect(vs.convertVcmdq(words({ op: 'ATC_INV', sid: 0x11 })) & 0xff).toBe(VSMMU_REJECT.UNKNOWN_VSID);
  });
  it('passes CMD_SYNC with CS NONE, IRQ, SEV through unchanged, refuses CS=0b11', () => {
    const u = new Uint32Array(4);
    for (const cs of [0, 1, 2]) {
      buildCmdSync(u, cs, 0x1230, 0, 7);
      const before = [...u];
      expect(vs.convertVcmdq(u)).toBe(0);
      expect([...u]).toEqual(before);
    }
    buildCmdSync(u, 3, 0, 0, 0);
    const code = vs.convertVcmdq(u);
    expect(rejectReason(code)).toBe('CMD_SYNC CS=0b11 is Reserved');
  });
  it('refuses everything else, including what iommufd forwards (NSNH_ALL, CFGI_CD)', () => {
    for (const op of ['TLBI_NSNH_ALL', 'CFGI_CD', 'CFGI_CD_ALL', 'CFGI_STE', 'TLBI_S12_VMALL', 'PREFETCH_CONFIG'] as const) {
      const code = vs.convertVcmdq(words(op === 'TLBI_NSNH_ALL' || op === 'TLBI_S12_VMALL' ? { op } : { op, sid: 0x10 }));
      expect(code & 0xff).toBe(VSMMU_REJECT.OPCODE);
      expect(rejectReason(code)).toBe(`${op} is not forwarded for a guest`);
    }
  });
  // Linux tegra241_guest_vcmdq_supports_cmd: a guest-owned VCMDQ takes TLBI_NH_ASID, TLBI_NH_VA and ATC_INV,
  // and its CMD_SYNCs complete by CONS alone (CS=NONE; the VCMDQ raises no SEV or MSI for a guest).
  it('the Tegra241 set admits NH_ASID, NH_VA, ATC_INV and CS=NONE syncs, and names what it refuses', () => {
    for (const op of ['TLBI_NH_ASID', 'TLBI_NH_VA'] as const) {
      const u = words({ op, vmid: 0xffff });
      expect(vs.convertVcmdq(u, VCMDQ_TEGRA241)).toBe(0);
      expect(getField(u, F.VMID)).toBe(5);
    }
    const atc = words({ op: 'ATC_INV', sid: 0x10, size: 52 });
    expect(vs.convertVcmdq(atc, VCMDQ_TEGRA241)).toBe(0);
    expect(getField(atc, F.SID)).toBe(0x20008);
    const u = new Uint32Array(4);
    buildCmdSync(u, 0, 0, 0, 0);
    const before = [...u];
    expect(vs.convertVcmdq(u, VCMDQ_TEGRA241)).toBe(0);
    expect([...u]).toEqual(before);
    for (const cs of [1, 2, 3]) {
      buildCmdSync(u, cs, 0, 0, 0);
      const code = vs.convertVcmdq(u, VCMDQ_TEGRA241);
      expect(code).toBe(VSMMU_REJECT.TEGRA241_SYNC_CS | (OP.CMD_SYNC << 8));
      expect(rejectReason(code, u)).toBe(`CMD_SYNC CS=${cs}: a Tegra241 guest VCMDQ takes CS=NONE only (the guest polls CONS)`);
    }
    expect(rejectReason(VSMMU_REJECT.TEGRA241_SYNC_CS | (OP.CMD_SYNC << 8))).toBe('CMD_SYNC CS=?: a Tegra241 guest VCMDQ takes CS=NONE only (the guest polls CONS)');
    // What the wide set forwards but Tegra241's does not.
    for (const op of ['TLBI_NH_ALL', 'TLBI_NH_VAA'] as const) {
      const code = vs.convertVcmdq(words({ op }), VCMDQ_TEGRA241);
      expect(code).toBe(VSMMU_REJECT.TEGRA241_OPCODE | (OP[op] << 8));
      expect(rejectReason(code)).toBe(`${op} is not in a Tegra241 guest VCMDQ's command set (TLBI_NH_ASID, TLBI_NH_VA, ATC_INV, CMD_SYNC; tegra241_guest_vcmdq_supports_cmd)`);
    }
  });
  it('the Tegra "inferred" vector (CFGI_STE on a guest VCMDQ) is refused', () => {
    const v = vectors.find((x) => x.expected?.['confidence'] === 'inferred')!;
    expect(v.name).toMatch(/CFGI_STE/);
    expect(vs.convertVcmdq(toU32(v.words)) & 0xff).toBe(VSMMU_REJECT.OPCODE);
  });
});

describe('convertBatch', () => {
  const vs = new VSmmu(5, [[0x10, 0x20008]]);
  const good = toU32([0x0009ffff00000011n, 0n]);
  const bad = toU32([0x000000000fc02046n, 0n]);
  for (const k of [0, 3, 6]) {
    it(`stops at the rejected entry ${k} of 7 (entry_num out)`, () => {
      const words = new Uint32Array(7 * 4);
      for (let i = 0; i < 7; i++) words.set(i === k ? bad : good, i * 4);
      expect(convertBatch(words, 7, vs)).toBe(k);
      for (let i = 0; i < 7; i++) {
        const expected = i < k ? 5 : i === k ? 0 : 0xffff;
        expect(words[i * 4 + 1]! & 0xffff).toBe(expected);
      }
    });
  }
  it('converts entries 0..n-1 only, all four words each (the high address word included)', () => {
    // NH_VA with address bits above 32 in w3 (arm_vsmmu_convert_user_cmd copies the whole entry).
    const va = toU32(encodeCommand({ op: 'TLBI_NH_VA', asid: 3, vmid: 0x77, addr: 0x1234_5678_9000n }));
    expect(va[3]).not.toBe(0);
    const words = new Uint32Array(8);
    words.set(va, 0);
    words.set(good, 4);
    expect(convertBatch(words, 1, vs)).toBe(1);
    expect(decodeCommand([BigInt(words[0]!) | (BigInt(words[1]!) << 32n), BigInt(words[2]!) | (BigInt(words[3]!) << 32n)])).toMatchObject({ vmid: 5, asid: 3, addr: 0x1234_5678_9000n });
    // Entry 1 is past n: left exactly as the guest wrote it.
    expect([...words.subarray(4)]).toEqual([...good]);
  });
  it('returns n when every entry converts', () => {
    const words = new Uint32Array(8);
    words.set(good, 0);
    words.set(good, 4);
    expect(convertBatch(words, 2, vs)).toBe(2);
    expect(convertBatch(words, 0, vs)).toBe(0);
  });
});

describe('isolation', () => {
  it('a converted command carries only this vSMMU\'s VMID and pSIDs', () => {
    const u32 = fc.integer({ min: 0, max: 0xffffffff });
    const guestOps = [OP.TLBI_NH_ALL, OP.TLBI_NH_ASID, OP.TLBI_NH_VA, OP.TLBI_NH_VAA, OP.TLBI_NSNH_ALL, OP.ATC_INV, OP.CFGI_CD, OP.CFGI_CD_ALL, OP.CMD_SYNC, OP.TLBI_S2_IPA];
    let sidsMapped = 0;
    const streams = fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 7 }), u32), { selector: ([v]) => v, maxLength: 6 });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), streams, fc.oneof(fc.constantFrom(...guestOps), fc.integer({ min: 0, max: 255 })),
        u32, fc.oneof(u32, fc.integer({ min: 0, max: 7 })), u32, u32, fc.boolean(),
        (vmid, map, opcode, w0lo, w0hi, w1lo, w1hi, vcmdq) => {
          const vs = new VSmmu(vmid, map);
          const psids = new Set(map.map(([, p]) => p));
          const u = new Uint32Array([(w0lo & ~0xff) | opcode, w0hi, w1lo, w1hi]);
          if ((vcmdq ? vs.convertVcmdq(u) : vs.convertIommufd(u)) !== 0) return;
          switch (u[0]! & 0xff) {
            case OP.TLBI_NH_ALL: case OP.TLBI_NH_ASID: case OP.TLBI_NH_VA: case OP.TLBI_NH_VAA:
              expect(getField(u, F.VMID)).toBe(vmid);
              break;
            case OP.ATC_INV: case OP.CFGI_CD: case OP.CFGI_CD_ALL:
              expect(psids.has(getField(u, F.SID))).toBe(true);
              sidsMapped++;
              break;
            case OP.CMD_SYNC:
              expect(vcmdq).toBe(true);
              break;
            default:
              throw new Error(`converted opcode 0x${(u[0]! & 0xff).toString(16)} escaped the policy`);
          }
        }),
      { numRuns: 10000 },
    );
    expect(sidsMapped).toBeGreaterThan(100);
  });
});

describe('construction', () => {
  it('refuses bad VMIDs and duplicate vSIDs', () => {
    expect(() => new VSmmu(0x10000, [])).toThrow(/vmid/);
    expect(() => new VSmmu(1, [[1, 2], [1, 3]])).toThrow(/mapped twice/);
    expect(() => new VSmmu(1, [[1, -2]])).toThrow(/psid/);
  });

  it('names the argument of each out-of-range VMID, vSID and pSID, and takes the edges', () => {
    for (const vmid of [-1, 1.5, 0x10000, Number.NaN]) expect(() => new VSmmu(vmid, []), `vmid ${vmid}`).toThrow(RangeError);
    expect(new VSmmu(0xffff, []).vmid).toBe(0xffff);
    expect(new VSmmu(0, []).vmid).toBe(0);
    for (const bad of [-1, 0.5, 2 ** 32]) {
      expect(() => new VSmmu(1, [[bad, 1]]), `vsid ${bad}`).toThrow(/vsid must be a 32-bit StreamID/);
      expect(() => new VSmmu(1, [[1, bad]]), `psid ${bad}`).toThrow(/psid must be a 32-bit StreamID/);
    }
    expect(new VSmmu(1, [[0xffffffff, 0xffffffff]]).vsidToPsid.get(0xffffffff)).toBe(0xffffffff);
  });
});

describe('rejectReason', () => {
  it('names an opcode without a command name by its number, a missing vSID generically, and refuses a non-code', () => {
    expect(rejectReason(VSMMU_REJECT.OPCODE | (0x7f << 8))).toBe('opcode 0x7f is not forwarded for a guest');
    expect(rejectReason(VSMMU_REJECT.OPCODE | (0x0e << 8))).toBe('opcode 0x0e is not forwarded for a guest'); // zero-padded
    expect(rejectReason(VSMMU_REJECT.UNKNOWN_VSID | (OP.ATC_INV << 8))).toBe('ATC_INV names a vSID with no vDEVICE in this vSMMU');
    expect(() => rejectReason(0x40 << 8)).toThrow(/is not a VSMMU_REJECT code/);
  });
});
