// The codec's smaller faces, each against an oracle outside the code under
// test (mutation testing of src/codec.ts found them unguarded):
//  - getField/setField/hasField (the vSMMU's rewrite of VMID and SID uses
//    them on the consumer's private copy) against encodeCommand of objects;
//  - encodeWords of an F record with every slot set: only the op's own
//    fields reach the words (an F record is reused across ops);
//  - decode rules at their edges: a command that needs no capability on an
//    SMMU with none, CMD_SYNC MSIAddr[55:52] (RES0 only when CS=IRQ, spec
//    4.7.3), the reason text of RES0 in either word, of the Reserved range
//    combination, of a missing capability;
//  - the object encoder's and the bigint faces' refusals, naming what is wrong.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ILL_REASON, commandFromFields, decodeCommand, decodeWords, encodeCommand, encodeCommandInto, encodeWords, getField, hasField,
  illReason, setField, type Command,
} from '../src/codec.ts';
import { CommandError } from '../src/errors.ts';
import { DEFAULT_FEATURES, makeFeatures } from '../src/features.ts';
import { COMMANDS, CS, F, FIELD_COUNT, OP, type FieldSpec } from '../src/fields.ts';

/** The F slots of one table field, restated from fields.ts's comments: in-place addresses as _LO/_HI halves, by the u32s they touch. */
function slotsOf(field: FieldSpec): number[] {
  const slots = F as Record<string, number>;
  const name = field.name.toUpperCase();
  if (!field.inPlace) return [slots[name]!];
  return [0, 1].filter((h) => field.lo <= 32 * h + 31 && field.hi >= 32 * h).map((h) => slots[`${name}_${h === 0 ? 'LO' : 'HI'}`]!);
}

const NO_FEATURES = makeFeatures({
  S1P: false, S2P: false, HYP: false, ATS: false, MPAM: false, PRI: false, RIL: false, DS: false, MSI: false, STALL_MODEL: 1,
});
const ALL_FEATURES = makeFeatures({ S1P: true, S2P: true, HYP: true, ATS: true, MPAM: true, PRI: true, RIL: true, DS: true, MSI: true, STALL_MODEL: 0 });

/** Words of a command object as [u0, u1, u2, u3]. */
function words(cmd: Command): Uint32Array {
  const u = new Uint32Array(4);
  encodeCommandInto(cmd, u, 0, { DS: true });
  return u;
}

/** A random legal-width value for each field of `op`'s spec. */
function randomCommand(spec: (typeof COMMANDS)[number], rnd: () => number): Command {
  const cmd: Record<string, unknown> = { op: spec.op };
  for (const field of spec.fields) {
    const width = field.hi - field.lo + 1;
    if (field.inPlace) cmd[field.name] = (BigInt(Math.floor(rnd() * 2 ** 32)) << 32n) | BigInt(Math.floor(rnd() * 2 ** 32));
    else cmd[field.name] = Math.floor(rnd() * 2 ** Math.min(width, 31)) + (width === 32 && rnd() < 0.5 ? 2 ** 31 : 0);
  }
  return cmd as Command;
}

describe('getField, setField, hasField against encodeCommand', () => {
  it('hasField is true exactly for the slots of the op\'s table fields, false for every opcode that is no command', () => {
    const specs = new Map(COMMANDS.map((s) => [s.opcode, s]));
    for (let opcode = 0; opcode < 256; opcode++) {
      const spec = specs.get(opcode);
      const own = new Set(spec === undefined ? [] : spec.fields.flatMap(slotsOf));
      for (let slot = 1; slot < FIELD_COUNT; slot++) expect(hasField(opcode, slot), `opcode 0x${opcode.toString(16)} slot ${slot}`).toBe(own.has(slot));
      expect(hasField(opcode | 0x100, [...own][0] ?? F.SID)).toBe(own.size > 0); // only the opcode byte counts
    }
  });

  it('getField reads each field of random commands of every op; setField turns command A into command B field by field', () => {
    fc.assert(
      fc.property(fc.integer(), (seed) => {
        let x = seed >>> 0 || 1;
        const rnd = (): number => ((x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) >>> 0 || 7), x / 2 ** 32);
        for (const spec of COMMANDS) {
          const a = words(randomCommand(spec, rnd));
          const bCmd = randomCommand(spec, rnd);
          const b = words(bCmd);
          for (const field of spec.fields) {
            for (const slot of slotsOf(field)) {
              const want = getField(b, slot);
              if (!field.inPlace) expect(want, `${spec.op}.${field.name}`).toBe((bCmd as unknown as Record<string, number>)[field.name]);
              expect(setField(a, slot, want), `${spec.op}.${field.name}`).toBe(true);
              expect(getField(a, slot)).toBe(want);
            }
          }
          expect([...a], spec.op).toEqual([...b]); // every field of B, no other bit changed
          // An in-place half reads back as its bits of the word.
          if (spec.op === 'TLBI_NH_VA') expect(getField(b, F.ADDR_LO)).toBe((b[2]! & 0xfffff000) >>> 0);
        }
      }),
      { numRuns: 30 },
    );
  });

  it('a slot the op lacks reads 0 and is not written; an opcode that is no command has no fields', () => {
    const u = words({ op: 'PREFETCH_CONFIG', sid: 0x1234, ssid: 0x55, ssv: 1 });
    expect(getField(u, F.SID)).toBe(0x1234); // the first op of the table, its first field
    expect(getField(u, F.VMID)).toBe(0);
    const before = [...u];
    expect(setField(u, F.VMID, 7)).toBe(false);
    expect([...u]).toEqual(before);
    expect(setField(u, F.SID, 0xbeef)).toBe(true);
    expect(u[1]).toBe(0xbeef);
    const bad = new Uint32Array([0x00, 0xffffffff, 0xffffffff, 0xffffffff]); // opcode 0x00 is Reserved
    for (let slot = 1; slot < FIELD_COUNT; slot++) {
      expect(getField(bad, slot)).toBe(0);
      expect(setField(bad, slot, 0)).toBe(false);
    }
    expect([...bad]).toEqual([0x00, 0xffffffff, 0xffffffff, 0xffffffff]);
    expect(Object.keys(bad)).toEqual(['0', '1', '2', '3']);
  });
});

describe('encodeWords', () => {
  it('writes only the op\'s own fields of an F record whose every slot is set', () => {
    for (const spec of COMMANDS) {
      const full = new Uint32Array(FIELD_COUNT).fill(0xffffffff);
      full[F.OP] = spec.opcode;
      const own = new Uint32Array(FIELD_COUNT);
      own[F.OP] = spec.opcode;
      for (const field of spec.fields) for (const slot of slotsOf(field)) own[slot] = 0xffffffff;
      const a = new Uint32Array(6).fill(0xaaaaaaaa);
      const b = new Uint32Array(6).fill(0x55555555);
      encodeWords(full, a, 1);
      encodeWords(own, b, 1);
      expect([...a.subarray(1, 5)], spec.op).toEqual([...b.subarray(1, 5)]);
      expect([a[0], a[5], b[0], b[5]]).toEqual([0xaaaaaaaa, 0xaaaaaaaa, 0x55555555, 0x55555555]);
    }
  });
});

describe('decode rules at their edges', () => {
  it('a command that needs no capability decodes on an SMMU that has none', () => {
    const out = new Uint32Array(FIELD_COUNT);
    for (const cmd of [{ op: 'CMD_SYNC', cs: CS.SEV }, { op: 'CFGI_STE', sid: 3 }, { op: 'TLBI_NSNH_ALL' }, { op: 'PREFETCH_CONFIG', sid: 1 }] as Command[]) {
      expect(decodeWords(words(cmd), out, NO_FEATURES), cmd.op).toBe(0);
    }
    expect(decodeWords(words({ op: 'TLBI_NH_ALL' }), out, NO_FEATURES)).toBe(ILL_REASON.CAPABILITY);
  });

  it('spec 4.4.1.1 range rules at their edges: SCALE 31 vs 32 without DS, TTL=1 Reserved only at TG=16K, NUM=SCALE=TTL=0 only with TG', () => {
    const out = new Uint32Array(FIELD_COUNT);
    const ril = makeFeatures({ RIL: true, DS: false });
    const ds = makeFeatures({ RIL: true, DS: true });
    const va = (f: Partial<Command>): Uint32Array => words({ op: 'TLBI_NH_VA', asid: 1, addr: 0x10000n, ...f } as Command);
    const cases: [Partial<Command>, number, number][] = [
      // [fields, code without DS, code with DS]
      [{ tg: 1, scale: 31 }, 0, 0],
      [{ tg: 1, scale: 32 }, ILL_REASON.SCALE_DS, 0],
      [{ tg: 3, num: 31, scale: 63 }, ILL_REASON.SCALE_DS, 0],
      [{ tg: 2, ttl: 1 }, ILL_REASON.RANGE_RESERVED, 0],
      [{ tg: 2, ttl: 1, num: 1 }, 0, 0],
      [{ tg: 2, ttl: 1, scale: 1 }, 0, 0],
      [{ tg: 2, ttl: 2 }, 0, 0],
      [{ tg: 2, ttl: 3 }, 0, 0],
      [{ tg: 1, ttl: 1 }, 0, 0],
      [{ tg: 3, ttl: 1 }, 0, 0],
      [{ tg: 1 }, ILL_REASON.RANGE_RESERVED, ILL_REASON.RANGE_RESERVED],
      [{ tg: 2 }, ILL_REASON.RANGE_RESERVED, ILL_REASON.RANGE_RESERVED],
      [{ tg: 1, num: 1 }, 0, 0],
      [{ ttl: 2 }, ILL_REASON.RANGE_TG0, ILL_REASON.RANGE_TG0],
      [{ num: 31 }, ILL_REASON.RANGE_TG0, ILL_REASON.RANGE_TG0],
      [{ scale: 32 }, ILL_REASON.RANGE_TG0, ILL_REASON.RANGE_TG0],
      [{}, 0, 0],
    ];
    for (const [f, noDs, withDs] of cases) {
      expect(decodeWords(va(f), out, ril), `${JSON.stringify(f)} without DS`).toBe(noDs);
      expect(decodeWords(va(f), out, ds), `${JSON.stringify(f)} with DS`).toBe(withDs);
      // Without RIL any of the four fields is RES0, whatever DS says.
      expect(decodeWords(va(f), out, makeFeatures({ RIL: false, DS: true })), `${JSON.stringify(f)} without RIL`).toBe(
        Object.keys(f).length === 0 ? 0 : ILL_REASON.RANGE_NO_RIL,
      );
    }
  });

  it('CMD_SYNC MSIAddr[55:52] is RES0 only with CS=IRQ (spec 4.7.3: the MSI fields are IGNORED otherwise)', () => {
    const out = new Uint32Array(FIELD_COUNT);
    for (const cs of [CS.NONE, CS.IRQ, CS.SEV]) {
      const u = words({ op: 'CMD_SYNC', cs, msiaddr: 0x1000n });
      expect(decodeWords(u, out, DEFAULT_FEATURES), `cs ${cs}`).toBe(0);
      u[3] = (u[3]! | (1 << 20)) >>> 0; // MSIAddr bit 52
      const code = decodeWords(u, out, DEFAULT_FEATURES);
      expect(code, `cs ${cs} with bit 52`).toBe(cs === CS.IRQ ? ILL_REASON.MSIADDR_OAS : 0);
      if (cs === CS.IRQ) expect(illReason(code, u)).toMatch(/^CMD_SYNC CS=IRQ with MSIAddr\[55:52\] set/);
    }
  });

  it('names the RES0 bits and the word they are in, low and high u32 of either word', () => {
    // TLBI_NH_ALL: w0 [11:8] and [63:48] are RES0 (VMID is [47:32]), w1 is RES0 whole. Bit 63 set: the text is unsigned.
    const nhAll = words({ op: 'TLBI_NH_ALL', vmid: 1 });
    nhAll[1] = (nhAll[1]! | 0x8000_0000) >>> 0; // w0 bit 63
    nhAll[0] = (nhAll[0]! | 0x100) >>> 0; // w0 bit 8
    const code = decodeWords(nhAll, new Uint32Array(FIELD_COUNT), DEFAULT_FEATURES);
    expect(code).toBe(ILL_REASON.RES0);
    expect(illReason(code, nhAll)).toBe('RES0 bits 0x8000000000000100 set in w0 of TLBI_NH_ALL');
    const w1 = words({ op: 'TLBI_NH_ALL', vmid: 1 });
    w1[2] = 0x4;
    w1[3] = 0x10;
    const code1 = decodeWords(w1, new Uint32Array(FIELD_COUNT), DEFAULT_FEATURES);
    expect(code1).toBe(ILL_REASON.RES0 | (1 << 8));
    expect(illReason(code1, w1)).toBe('RES0 bits 0x1000000004 set in w1 of TLBI_NH_ALL');
  });

  it('RES0 bits of w1 are those of the op itself, not of its neighbour in the table (CMD_SYNC: w1 [1:0] only)', () => {
    const u = words({ op: 'CMD_SYNC', cs: CS.SEV, msiaddr: 0x1234_5678_9abc_def0n & ~3n });
    u[2] = (u[2]! | 0x3) >>> 0;
    const code = decodeWords(u, new Uint32Array(FIELD_COUNT), DEFAULT_FEATURES);
    expect(code).toBe(ILL_REASON.RES0 | (1 << 8));
    expect(illReason(code, u)).toBe('RES0 bits 0x3 set in w1 of CMD_SYNC');
  });

  it('the Reserved range text names the 16K TTL=1 rule only for TG=2 with TTL=1', () => {
    const feats = { RIL: true, DS: false };
    const text = (tg: number, ttl: number): string => {
      try {
        decodeCommand(encodeCommand({ op: 'TLBI_NH_VA', tg, ttl, num: 0, scale: 0 }), feats);
      } catch (e) {
        expect(e).toBeInstanceOf(CommandError);
        return (e as CommandError).reason;
      }
      throw new Error(`TG=${tg} TTL=${ttl} decoded`);
    };
    const base = (tg: number, ttl: number): string =>
      `TLBI_NH_VA: TG=${tg} TTL=${ttl} NUM=0 SCALE=0 is the Reserved range combination (TG!=0 with NUM=0, SCALE=0, TTL=0)`;
    expect(text(1, 0)).toBe(base(1, 0));
    expect(text(2, 0)).toBe(base(2, 0));
    expect(text(2, 1)).toBe(`${base(2, 1)}; TTL=1 with a 16K granule is Reserved without SMMU_IDR5.DS and treated as TTL=0`);
  });

  it('a missing capability and an oversized ATC_INV are named in full; a legal command\'s reason text is no opcode\'s', () => {
    const noAts = (): string => {
      try {
        decodeCommand(encodeCommand({ op: 'ATC_INV', sid: 1 }), { ATS: false });
      } catch (e) {
        return (e as CommandError).reason;
      }
      return '';
    };
    expect(noAts()).toBe('ATC_INV needs ATS (SMMU_IDR0.ATS=0)');
    const big = words({ op: 'ATC_INV', size: 60 });
    expect(illReason(ILL_REASON.ATC_SIZE, big)).toBe('ATC_INV Size=60 is above 52 (the invalidate-all size)');
    // PREFETCH_CONFIG is the table's first command: an SSec refusal of it is named for it, not as an opcode.
    const pc = words({ op: 'PREFETCH_CONFIG', ssec: 1 });
    expect(decodeWords(pc, new Uint32Array(FIELD_COUNT), ALL_FEATURES)).toBe(ILL_REASON.SSEC);
    expect(illReason(ILL_REASON.SSEC, pc)).toBe('SSec=1 on the Non-secure queue (PREFETCH_CONFIG)');
  });
});

describe('refusals of the object and bigint faces name what is wrong', () => {
  it('a key that is no field of the op, on an op with fields and on one without', () => {
    expect(() => encodeCommand({ op: 'CMD_SYNC', foo: 1 } as unknown as Command)).toThrow(new TypeError("CMD_SYNC has no field 'foo'"));
    expect(() => encodeCommand({ op: 'TLBI_EL2_ALL', vmid: 1 } as unknown as Command)).toThrow(new TypeError("TLBI_EL2_ALL has no field 'vmid'"));
    expect(() => encodeCommand({ op: 'TLBI_NH_ASID', asid: 1, vmid: 2 })).not.toThrow();
  });

  it('a value out of its field names the field\'s range (SCALE: 5 bits without DS, 6 with)', () => {
    expect(() => encodeCommand({ op: 'TLBI_NH_VA', scale: 40 })).toThrow(new RangeError('TLBI_NH_VA.scale=40 does not fit its field (0..31)'));
    expect(() => encodeCommand({ op: 'TLBI_NH_VA', scale: 64 }, { DS: true })).toThrow(new RangeError('TLBI_NH_VA.scale=64 does not fit its field (0..63)'));
    expect(() => encodeCommand({ op: 'TLBI_NH_VA', asid: 0x10000 })).toThrow(new RangeError('TLBI_NH_VA.asid=65536 does not fit its field (0..65535)'));
    expect(() => encodeCommand({ op: 'TLBI_NH_VA', tg: 4 }, { DS: true })).toThrow(new RangeError('TLBI_NH_VA.tg=4 does not fit its field (0..3)'));
  });

  it('encodeCommandInto checks its buffer, offset and object first', () => {
    const u = new Uint32Array(8);
    expect(() => encodeCommandInto({ op: 'CMD_SYNC' }, [0, 0, 0, 0] as unknown as Uint32Array)).toThrow('u must be a Uint32Array');
    expect(() => encodeCommand({ op: 'TLBI_NH_ASID', asid: 5n } as unknown as Command)).toThrow(new TypeError('TLBI_NH_ASID.asid must be an integer, got 5n'));
    expect(() => encodeCommand({ op: 'TLBI_NH_ASID', asid: '5' } as unknown as Command)).toThrow(new TypeError('TLBI_NH_ASID.asid must be an integer, got "5"'));
    expect(() => encodeCommandInto({ op: 'CMD_SYNC' }, u, 5)).toThrow(/must be an integer in 0\.\.4 \(4 words from it in u\), got 5/);
    encodeCommandInto({ op: 'CMD_SYNC', cs: 1 }, u, 4);
    expect(u[4]).toBe(OP.CMD_SYNC | (1 << 12));
    expect(() => encodeCommandInto(null as unknown as Command, u)).toThrow(new TypeError('a command must be an object, got null'));
    expect(() => encodeCommandInto('CMD_SYNC' as unknown as Command, u)).toThrow(new TypeError('a command must be an object, got CMD_SYNC'));
  });

  it('decodeCommand names the word that is no u64; commandFromFields refuses an opcode with no command', () => {
    expect(() => decodeCommand([-1n, 0n])).toThrow(new RangeError('w0 must be in 0..2^64-1, got -1'));
    expect(() => decodeCommand([0n, 2n ** 64n])).toThrow(new RangeError(`w1 must be in 0..2^64-1, got ${2n ** 64n}`));
    const f = new Uint32Array(FIELD_COUNT);
    f[F.OP] = 0x00;
    expect(() => commandFromFields(f)).toThrow(new RangeError('opcode 0x0 has no command'));
    f[F.OP] = OP.CMD_SYNC;
    expect(commandFromFields(f)).toMatchObject({ op: 'CMD_SYNC', cs: 0 });
  });
});
