import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ILL_REASON, buildAtcInv, buildCfgiCd, buildCfgiSte, buildCmdSync, buildTlbiNhAll, buildTlbiNhAsid, buildTlbiNhVa,
  commandFromFields, decodeCommand, decodeWords, encodeCommand, encodeWords, fieldAccessor, getField, hasField, illReason, readSlot, setField,
  writeSlot, type Command,
} from '../src/codec.ts';
import { CommandError } from '../src/errors.ts';
import { DEFAULT_FEATURES, makeFeatures, type SmmuFeatures } from '../src/features.ts';
import { COMMANDS, F, FIELD_COUNT, OP, type CommandSpec, type FieldSpec } from '../src/fields.ts';

interface Vector {
  name: string;
  kind: 'legal' | 'illegal' | 'iommufd-convert';
  fields: Record<string, string | number>;
  words: [string, string];
  expected?: Record<string, unknown>;
}
const vectors = JSON.parse(readFileSync(new URL('./fixtures/smmu-vectors.json', import.meta.url), 'utf8')) as Vector[];

/** A vector's `fields` as a Command: drop the opcode, addresses to bigint. */
function commandOf(v: Vector): Command {
  const cmd: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(v.fields)) {
    if (k === 'opcode') continue;
    cmd[k] = k === 'addr' || k === 'msiaddr' ? BigInt(val) : val;
  }
  return cmd as unknown as Command;
}
const wordsOf = (v: Vector): [bigint, bigint] => [BigInt(v.words[0]), BigInt(v.words[1])];

/** The spec mask GENMASK(hi, lo) of an in-place field, computed independently of the codec. */
const genmask = (f: FieldSpec): bigint => ((1n << BigInt(f.hi + 1)) - 1n) ^ ((1n << BigInt(f.lo)) - 1n);
const specOf = (op: string): CommandSpec => COMMANDS.find((c) => c.op === op)!;

/** Every field of the op, absent ones as zero, addresses masked: what decode must return. */
function normalised(cmd: Command): Command {
  const spec = specOf(cmd.op);
  const out: Record<string, unknown> = { op: cmd.op };
  const values = cmd as unknown as Record<string, number | bigint | undefined>;
  for (const f of spec.fields) {
    const v = values[f.name];
    out[f.name] = f.inPlace ? ((v as bigint | undefined) ?? 0n) & genmask(f) : (v ?? 0);
  }
  return out as unknown as Command;
}

const ALL_ON: Partial<SmmuFeatures> = { MPAM: true, RIL: true };

describe('legal vectors', () => {
  const legal = vectors.filter((v) => v.kind === 'legal');
  it('has vectors to test', () => expect(legal.length).toBeGreaterThan(40));
  for (const v of legal) {
    it(`encodes and decodes: ${v.name}`, () => {
      const cmd = commandOf(v);
      expect(encodeCommand(cmd)).toEqual(wordsOf(v));
      // The spec permits refusing ATC_INV Size>52 (4.5.1) and this SMMU does,
      // so the all-fields-max encoder vector is one the decoder refuses.
      if (cmd.op === 'ATC_INV' && cmd.size! > 52) expect(illOf(wordsOf(v)).reason).toMatch(/Size=63 is above 52/);
      else expect(decodeCommand(wordsOf(v), ALL_ON)).toEqual(normalised(cmd));
    });
  }
});

/** Features under which each SMMU-level illegal vector is illegal, and the reason text it must give. */
const ILLEGAL_CASES: Record<string, { features?: Partial<SmmuFeatures>; reason: RegExp }> = {
  'Reserved opcode 0x00': { reason: /opcode 0x00 is Reserved/ },
  'Reserved opcode 0xff': { reason: /opcode 0xff is Reserved/ },
  'IMPLEMENTATION DEFINED opcode 0x80': { reason: /0x80 is IMPLEMENTATION DEFINED/ },
  'TLBI_NH_VA TG=1 NUM=0 SCALE=0 TTL=0 (Reserved range combination)': { features: { RIL: true }, reason: /Reserved range combination/ },
  'TLBI_NH_VA TG=2 TTL=1 with IDR5.DS==0': { features: { RIL: true, DS: false }, reason: /TTL=1 with a 16K granule is Reserved without SMMU_IDR5.DS/ },
  'CMD_SYNC with RES0 bits in word1 [1:0] set': { reason: /^RES0 bits 0x3 set in w1 of CMD_SYNC$/ },
  'ATC_INV Size=53 (>52)': { reason: /ATC_INV Size=53 is above 52/ },
  'ATC_INV when SMMU_IDR0.ATS==0': { features: { ATS: false }, reason: /ATC_INV needs ATS/ },
  'TLBI_EL2_ALL when SMMU_IDR0.Hyp==0': { features: { HYP: false }, reason: /TLBI_EL2_ALL needs the EL2 translation regime/ },
  'TLBI_EL3_ALL on Non-secure queue': { reason: /0x18 is a Secure-only command/ },
  'TLBI_NH_ALL on a stage-2-only SMMU': { features: { S1P: false }, reason: /stage-2-only/ },
  'TLBI_S12_VMALL on a stage-1-only SMMU': { features: { S2P: false }, reason: /stage-1-only/ },
  'CFGI_VMS_PIDM when SMMU_IDR3.MPAM==0': { features: { MPAM: false }, reason: /CFGI_VMS_PIDM needs MPAM/ },
  'STALL_TERM when IDR0.STALL_MODEL==0b01 (no stall)': { features: { STALL_MODEL: 1 }, reason: /STALL_TERM needs stall support/ },
};

function illOf(words: [bigint, bigint], features?: Partial<SmmuFeatures>): CommandError {
  try {
    decodeCommand(words, features);
  } catch (e) {
    if (e instanceof CommandError) return e;
    throw e;
  }
  throw new Error('decoded without error');
}

describe('SMMU-level illegal vectors', () => {
  const smmuLevel = vectors.filter((v) => v.kind === 'illegal' && v.expected?.['cerror'] !== undefined && v.expected['confidence'] !== 'inferred');
  it('covers each one', () => expect(smmuLevel.map((v) => v.name).sort()).toEqual(Object.keys(ILLEGAL_CASES).sort()));
  for (const v of smmuLevel) {
    it(`CERROR_ILL: ${v.name}`, () => {
      const c = ILLEGAL_CASES[v.name]!;
      const e = illOf(wordsOf(v), c.features);
      expect(e.cerror).toBe('ILL');
      expect(e.reason).toMatch(c.reason);
    });
  }
  it('the feature-dependent ones decode once the capability is there', () => {
    for (const v of smmuLevel) {
      const f = ILLEGAL_CASES[v.name]!.features;
      if (f === undefined || 'RIL' in f) continue;
      expect(() => decodeCommand(wordsOf(v), { ...ALL_ON })).not.toThrow();
    }
  });
  it('TG=16K TTL=1 is a range hint when DS is implemented', () => {
    const v = vectors.find((x) => x.name === 'TLBI_NH_VA TG=2 TTL=1 with IDR5.DS==0')!;
    expect(decodeCommand(wordsOf(v), { DS: true })).toMatchObject({ op: 'TLBI_NH_VA', tg: 2, ttl: 1 });
  });
});

describe('validation rules', () => {
  const nhva = (fields: Partial<Command>, features?: Partial<SmmuFeatures>): [bigint, bigint] =>
    encodeCommand({ op: 'TLBI_NH_VA', asid: 1, addr: 0x10000n, ...fields } as Command, features);

  it('SSec=1 is CERROR_ILL', () => {
    const e = illOf(encodeCommand({ op: 'CFGI_STE', sid: 3, ssec: 1, leaf: 1 }));
    expect(e.reason).toBe('SSec=1 on the Non-secure queue (CFGI_STE)');
  });
  it('bit 10 of a TLBI (no SSec field there) is plain RES0', () => {
    expect(illOf([0x412n, 0n]).reason).toBe('RES0 bits 0x400 set in w0 of TLBI_NH_VA');
  });
  it('CS=0b11 is CERROR_ILL, CS 0..2 are not', () => {
    expect(illOf(encodeCommand({ op: 'CMD_SYNC', cs: 3 })).reason).toBe('CMD_SYNC CS=0b11 is Reserved');
    for (const cs of [0, 1, 2]) expect(decodeCommand(encodeCommand({ op: 'CMD_SYNC', cs }))).toMatchObject({ cs });
  });
  it('PRI_RESP Resp=3 is CERROR_ILL', () => {
    expect(illOf(encodeCommand({ op: 'PRI_RESP', sid: 1, resp: 3 })).reason).toBe('PRI_RESP Resp=0b11 is ILLEGAL');
    expect(illOf(encodeCommand({ op: 'PRI_RESP', sid: 1 }), { PRI: false }).reason).toMatch(/PRI_RESP needs PRI/);
  });
  it('ATC_INV Size 52 is legal, 53..63 are not', () => {
    expect(decodeCommand(encodeCommand({ op: 'ATC_INV', size: 52 }))).toMatchObject({ size: 52 });
    for (let size = 53; size < 64; size++) expect(illOf(encodeCommand({ op: 'ATC_INV', size })).reason).toMatch(/Size=/);
  });
  it('without RIL, TG/TTL/NUM/SCALE are RES0', () => {
    expect(decodeCommand(nhva({ leaf: 1 }), { RIL: false })).toMatchObject({ tg: 0, leaf: 1 });
    for (const f of [{ tg: 1, ttl: 3 }, { ttl: 1 }, { num: 1 }, { scale: 2 }]) {
      expect(illOf(nhva(f), { RIL: false }).reason).toMatch(/RES0 without range invalidation \(SMMU_IDR3.RIL=0\)/);
    }
  });
  it('with TG=0, TTL/NUM/SCALE are RES0 (spec 4.4.1.1)', () => {
    for (const f of [{ ttl: 1 }, { num: 1 }, { scale: 1 }]) {
      expect(illOf(nhva(f)).reason).toMatch(/RES0 when TG=0/);
    }
  });
  it('the Reserved combination needs all of NUM, SCALE and TTL zero', () => {
    expect(illOf(nhva({ tg: 3 })).reason).toMatch(/Reserved range combination/);
    expect(() => decodeCommand(nhva({ tg: 3, num: 1 }))).not.toThrow();
    expect(() => decodeCommand(nhva({ tg: 3, scale: 1 }))).not.toThrow();
    expect(() => decodeCommand(nhva({ tg: 3, ttl: 1 }))).not.toThrow();
    // TTL=1 with TG=16K counts as 0 only when the combination would otherwise be reserved.
    expect(() => decodeCommand(nhva({ tg: 2, ttl: 1, num: 1 }))).not.toThrow();
  });
  it('SCALE bit 25 needs DS', () => {
    expect(() => encodeCommand({ op: 'TLBI_NH_VA', tg: 1, scale: 32 })).toThrow(/TLBI_NH_VA.scale=32 does not fit/);
    const words = nhva({ tg: 1, scale: 39 }, { DS: true });
    expect(illOf(words).reason).toMatch(/SCALE=39 uses bit 25/);
    expect(decodeCommand(words, { DS: true })).toMatchObject({ scale: 39 });
  });
  it('a capability check names the capability', () => {
    expect(illOf(encodeCommand({ op: 'TLBI_S2_IPA', vmid: 1 }), { S2P: false }).reason).toMatch(/SMMU_IDR0.S2P=0/);
    expect(illOf(encodeCommand({ op: 'RESUME', sid: 1 }), { STALL_MODEL: 1 }).reason).toMatch(/STALL_MODEL=0b01/);
    expect(() => decodeCommand(encodeCommand({ op: 'RESUME', sid: 1 }), { STALL_MODEL: 2 })).not.toThrow();
  });
  it('DPTI and Secure opcodes are named as such', () => {
    expect(illOf([0x70n, 0n]).reason).toMatch(/DPTI/);
    expect(illOf([0x5an, 0n]).reason).toMatch(/Secure-only/);
  });
});

describe('encoder errors', () => {
  it('names an unknown field', () => {
    expect(() => encodeCommand({ op: 'TLBI_NH_ALL', asid: 1 })).toThrow(/TLBI_NH_ALL has no field 'asid'/);
  });
  it('names a field that does not fit', () => {
    expect(() => encodeCommand({ op: 'TLBI_NH_ASID', asid: 0x10000 })).toThrow(RangeError);
    expect(() => encodeCommand({ op: 'TLBI_NH_ASID', asid: 0x10000 })).toThrow(/asid/);
    expect(() => encodeCommand({ op: 'CFGI_STE', leaf: 2 })).toThrow(/CFGI_STE.leaf=2/);
    expect(() => encodeCommand({ op: 'CFGI_STE', sid: -1 })).toThrow(/sid/);
    expect(() => encodeCommand({ op: 'CFGI_STE', sid: 1.5 })).toThrow(TypeError);
    expect(() => encodeCommand({ op: 'ATC_INV', addr: 1n << 64n })).toThrow(/ATC_INV.addr/);
    expect(() => encodeCommand({ op: 'ATC_INV', addr: 5 as unknown as bigint })).toThrow(/ATC_INV.addr must be a bigint/);
    expect(() => encodeCommand({ op: 'NOPE' } as unknown as Command)).toThrow(/unknown op NOPE/);
  });
  it('decodeCommand refuses words that are not u64', () => {
    expect(() => decodeCommand([-1n, 0n])).toThrow(RangeError);
    expect(() => decodeCommand([1n << 64n, 0n])).toThrow(RangeError);
  });
});

describe('hot face', () => {
  it('readSlot copies one slot, from Int32Array too', () => {
    const q = new Int32Array(16);
    q.set([-1, 2, 3, 4], 8);
    const u = new Uint32Array(4);
    readSlot(q, 2, u);
    expect([...u]).toEqual([0xffffffff, 2, 3, 4]);
    const q2 = new Uint32Array(8);
    writeSlot(q2, 1, u);
    expect([...q2.subarray(4)]).toEqual([0xffffffff, 2, 3, 4]);
  });
  it('builders produce the Linux words', () => {
    const u = new Uint32Array(4);
    const words = (): [bigint, bigint] => [(BigInt(u[1]!) << 32n) | BigInt(u[0]!), (BigInt(u[3]!) << 32n) | BigInt(u[2]!)];
    buildTlbiNhVa(u, 0x22, 0, 0x10000, 0, 0, 4, 1, 3, 1);
    expect(words()).toEqual([0x0022000000400012n, 0x10701n]);
    buildCmdSync(u, 1, 0x80401230, 0, 0);
    expect(words()).toEqual([0x0fc01046n, 0x80401230n]);
    buildCmdSync(u, 0, 0, 0, 0);
    expect(words()).toEqual([0x0fc00046n, 0n]);
    buildTlbiNhAsid(u, 0x1234, 7);
    expect(words()).toEqual([0x1234000700000011n, 0n]);
    buildTlbiNhAll(u, 0xffff);
    expect(words()).toEqual([0x0000ffff00000010n, 0n]);
    buildAtcInv(u, 2049, 0x12345, 1, 0, 2, 0x8000, 0);
    expect(words()).toEqual([0x0000080112345840n, 0x8002n]);
    buildCfgiSte(u, 0x100, 1);
    expect(words()).toEqual([0x0000010000000003n, 1n]);
    buildCfgiCd(u, 8, 0xfffff, 1);
    expect(words()).toEqual([0x00000008fffff005n, 1n]);
  });
  it('getField/setField touch only the named field', () => {
    const u = new Uint32Array(4);
    buildTlbiNhVa(u, 0xbeef, 0x1234, 0xfffff000, 0xffffffff, 31, 31, 3, 3, 1);
    const before = [...u];
    expect(getField(u, F.VMID)).toBe(0x1234);
    expect(getField(u, F.ADDR_HI)).toBe(0xffffffff);
    expect(setField(u, F.VMID, 5)).toBe(true);
    expect(getField(u, F.VMID)).toBe(5);
    expect(getField(u, F.ASID)).toBe(0xbeef);
    expect([u[0], u[2], u[3]]).toEqual([before[0], before[2], before[3]]);
    expect(setField(u, F.SID, 1)).toBe(false);
    expect(getField(u, F.SID)).toBe(0);
  });
  it('fieldAccessor reads and writes what getField/setField do, for every op that shares the place, and nothing else', () => {
    // VMID of the NH TLBIs, SID of ATC_INV/CFGI_CD*, CS of CMD_SYNC (the vSMMU's rewrites), an in-place address too.
    // And every field of every op alone, from the table (the first op's first part included: index 0 is a place).
    const cases: [number, number[]][] = [
      [F.VMID, [OP.TLBI_NH_ALL, OP.TLBI_NH_ASID, OP.TLBI_NH_VA, OP.TLBI_NH_VAA]],
      [F.SID, [OP.ATC_INV, OP.CFGI_CD, OP.CFGI_CD_ALL]],
      [F.CS, [OP.CMD_SYNC]],
      [F.ADDR_LO, [OP.TLBI_NH_VA, OP.TLBI_NH_VAA]],
      ...COMMANDS.flatMap((spec) => Array.from({ length: FIELD_COUNT }, (_, slot): [number, number[]] => [slot, [spec.opcode]])
        .filter(([slot]) => hasField(spec.opcode, slot))),
    ];
    for (const [slot, opcodes] of cases) {
      const acc = fieldAccessor(slot, opcodes);
      fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 5, maxLength: 5 }), ([w0, w1, w2, w3, v]) => {
        for (const opcode of opcodes) {
          const u = new Uint32Array([(w0! & ~0xff) | opcode, w1!, w2!, w3!]);
          const want = u.slice();
          expect(acc.get(u)).toBe(getField(u, slot));
          setField(want, slot, v!);
          acc.set(u, v!);
          expect([...u]).toEqual([...want]);
        }
      }), { numRuns: 20 });
    }
  });
  it('fieldAccessor refuses, at construction, an op without the field or a field in two places', () => {
    expect(() => fieldAccessor(F.VMID, [OP.TLBI_NH_VA, OP.ATC_INV])).toThrow(/has no field/);
    expect(() => fieldAccessor(F.VMID, [0xff])).toThrow(/has no field/);
    // RESP is w1[13:12] in PRI_RESP, w0[13:12] in RESUME.
    expect(() => fieldAccessor(F.RESP, [OP.PRI_RESP, OP.RESUME])).toThrow(new Error(`fields.ts: F slot ${F.RESP} is not in one place in opcodes ${OP.PRI_RESP}, ${OP.RESUME}`));
    // SIZE is w1[4:0] in PREFETCH_ADDR, w1[5:0] in ATC_INV: the same u32 and shift, another mask.
    expect(() => fieldAccessor(F.SIZE, [OP.PREFETCH_ADDR, OP.ATC_INV])).toThrow(/not in one place/);
    expect(() => fieldAccessor(F.SID, [])).toThrow(/not in one place/);
  });
  it('illReason rejects a code it does not know', () => {
    expect(() => illReason(0xee, new Uint32Array([0x46, 0, 0, 0]))).toThrow(new RangeError('238 is not an ILL_REASON code'));
  });
  it('reason codes are small integers with the kind in the low byte', () => {
    const u = new Uint32Array([0x46, 0, 3, 0]);
    const code = decodeWords(u, new Uint32Array(FIELD_COUNT), DEFAULT_FEATURES);
    expect(code & 0xff).toBe(ILL_REASON.RES0);
    expect(code >>> 8).toBe(1);
  });
});

// ---------------------------------------------------------------------------
// Properties. Commands are generated from the table, so a new op is covered.

const FULL = makeFeatures({ MPAM: true, RIL: true, DS: true });

/** Legality restated from the spec, independently of the codec's checks. */
function isLegal(c: Record<string, string | number | bigint>, feat: SmmuFeatures): boolean {
  if (c['ssec'] === 1 || c['cs'] === 3) return false;
  if (c['op'] === 'PRI_RESP' && c['resp'] === 3) return false;
  if (c['op'] === 'ATC_INV' && (c['size'] as number) > 52) return false;
  if ('tg' in c) {
    const { tg, ttl, num, scale } = c as Record<string, number>;
    if (!feat.RIL) return (tg! | ttl! | num! | scale!) === 0;
    if (tg === 0) return (ttl! | num! | scale!) === 0;
    if (scale! > 31 && !feat.DS) return false;
    const eff = tg === 2 && ttl === 1 && !feat.DS ? 0 : ttl;
    if (num === 0 && scale === 0 && eff === 0) return false;
  }
  return true;
}

function fieldArb(f: FieldSpec): fc.Arbitrary<number | bigint> {
  if (f.inPlace) return fc.bigInt(0n, (1n << 64n) - 1n);
  const max = 2 ** (f.hi - f.lo + 1) - 1;
  // Small values make the range and Resp rules reachable often.
  return fc.oneof(fc.integer({ min: 0, max: Math.min(max, 3) }), fc.integer({ min: 0, max }));
}

const legalCommandArb = fc.constantFrom(...COMMANDS).chain((spec) =>
  fc.record(Object.fromEntries(spec.fields.map((f) => [f.name, fieldArb(f)])) as Record<string, fc.Arbitrary<number | bigint>>)
    .map((fields): Record<string, string | number | bigint> => ({ op: spec.op, ...fields }))
    .filter((c) => isLegal(c, FULL)),
);

describe('properties', () => {
  it('decode(encode(c)) is c (addresses masked) for random legal commands of every op', () => {
    fc.assert(
      fc.property(legalCommandArb, (c) => {
        const cmd = c as unknown as Command;
        expect(decodeCommand(encodeCommand(cmd, FULL), FULL)).toEqual(normalised(cmd));
      }),
      { numRuns: 10000 },
    );
  });

  const opcodeArb = fc.oneof(fc.constantFrom(...COMMANDS.map((c) => c.opcode)), fc.integer({ min: 0, max: 255 }));
  const u64Arb = fc.oneof(fc.bigInt(0n, (1n << 64n) - 1n), fc.bigInt(0n, 0xffffn), fc.constant(0n));
  const wordsArb = fc.tuple(opcodeArb, u64Arb, u64Arb).map(([op, w0, w1]) => [(w0 & ~0xffn) | BigInt(op), w1] as [bigint, bigint]);
  const featArb = fc.record({
    S1P: fc.boolean(), S2P: fc.boolean(), HYP: fc.boolean(), ATS: fc.boolean(), PRI: fc.boolean(), RIL: fc.boolean(),
    MPAM: fc.boolean(), DS: fc.boolean(), STALL_MODEL: fc.constantFrom(0 as const, 1 as const, 2 as const),
  });

  it('random words either decode or throw CommandError ILL, never anything else', () => {
    let legal = 0;
    fc.assert(
      fc.property(wordsArb, featArb, (words, feat) => {
        try {
          decodeCommand(words, feat);
          legal++;
        } catch (e) {
          expect(e).toBeInstanceOf(CommandError);
          expect((e as CommandError).cerror).toBe('ILL');
          expect((e as CommandError).reason.length).toBeGreaterThan(10);
        }
      }),
      { numRuns: 10000 },
    );
    expect(legal).toBeGreaterThan(100);
  });

  it('hot and public decoders agree, and a legal command re-encodes to the same words but for its IGNORED spans', () => {
    /** Per u32 of the command: the bits of its `ignored` spans (fields.ts), which decode to nothing. */
    const ignoredBits = (opcode: number): number[] => {
      const m = [0, 0, 0, 0];
      for (const sp of COMMANDS.find((c) => c.opcode === opcode)?.ignored ?? []) {
        const k = 2 * sp.w + (sp.lo >> 5);
        m[k] = (m[k]! | (((2 ** (sp.hi - sp.lo + 1) - 1) * 2 ** (sp.lo & 31)) >>> 0)) >>> 0;
      }
      return m;
    };
    const u = new Uint32Array(4);
    const out = new Uint32Array(FIELD_COUNT);
    const again = new Uint32Array(4);
    fc.assert(
      fc.property(wordsArb, featArb, (words, partial) => {
        const feat = makeFeatures(partial);
        u[0] = Number(words[0] & 0xffffffffn); u[1] = Number(words[0] >> 32n);
        u[2] = Number(words[1] & 0xffffffffn); u[3] = Number(words[1] >> 32n);
        const code = decodeWords(u, out, feat);
        if (code === 0) {
          expect(decodeCommand(words, feat)).toEqual(commandFromFields(out));
          const ign = ignoredBits(u[0]! & 0xff);
          const kept = [...u].map((x, k) => (x & ~ign[k]!) >>> 0);
          encodeWords(out, again);
          expect([...again]).toEqual(kept);
          const keptWords = [BigInt(kept[0]!) | (BigInt(kept[1]!) << 32n), BigInt(kept[2]!) | (BigInt(kept[3]!) << 32n)];
          expect(encodeCommand(commandFromFields(out), feat)).toEqual(keptWords);
        } else {
          expect(() => decodeCommand(words, feat)).toThrow(new CommandError('ILL', illReason(code, u)).message);
        }
      }),
      { numRuns: 10000 },
    );
  });

  it('opcodes are exactly the table plus illegal ones', () => {
    const out = new Uint32Array(FIELD_COUNT);
    const known = new Set(COMMANDS.map((c) => c.opcode));
    for (let op = 0; op < 256; op++) {
      const code = decodeWords(new Uint32Array([op, 0, 0, 0]), out, FULL);
      expect(code === ILL_REASON.OPCODE).toBe(!known.has(op));
    }
    expect(known.has(OP.CMD_SYNC)).toBe(true);
  });
});
