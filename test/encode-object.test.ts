// The object encoder (encodeCommandInto, issue #15): GuestQueue.submit writes
// command objects into the ring through it, without bigint arithmetic, and
// encodeCommand is its bigint face. The oracle is a bigint restatement of
// the field table, in the shape of Linux's arm_smmu_cmdq_build_cmd: each
// field shifted into its word (FIELD_PREP), addresses ANDed with their mask
// (GENMASK_ULL), checks in field order. For random valid objects of every
// op the three faces (encodeCommandInto, encodeCommand, the words submit
// leaves in the ring) give the oracle's words; for invalid ones they refuse
// with the same error, naming the same field, and submit sends nothing.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeCommand, encodeCommandInto, type Command } from '../src/codec.ts';
import { ArgumentError } from '../src/errors.ts';
import { makeFeatures } from '../src/features.ts';
import { COMMANDS, type CommandSpec, type FieldSpec } from '../src/fields.ts';
import { Q_CONS, Q_DRV_RESV, Q_PROD } from '../src/layout.ts';
import { bareQueue } from './bare-queue.ts';

const U64_MAX = (1n << 64n) - 1n;
const genmask = (f: FieldSpec): bigint => ((1n << BigInt(f.hi + 1)) - 1n) ^ ((1n << BigInt(f.lo)) - 1n);
/** SCALE is 5 bits unless IDR5.DS (spec 4.4.1.1; fields.ts). */
const fieldMax = (f: FieldSpec, ds: boolean): number => (f.name === 'scale' && !ds ? 31 : 2 ** (f.hi - f.lo + 1) - 1);

type Refusal = { error: typeof TypeError | typeof RangeError; names: string };

/** The oracle: the two words, or which error the encoders must throw and what its message must name. */
function reference(cmd: Record<string, unknown>, ds: boolean): [bigint, bigint] | Refusal {
  const spec = COMMANDS.find((c) => c.op === cmd['op']);
  if (spec === undefined) return { error: TypeError, names: 'unknown op' };
  const extra = Object.keys(cmd).find((k) => k !== 'op' && !spec.fields.some((f) => f.name === k));
  if (extra !== undefined) return { error: TypeError, names: `no field '${extra}'` };
  const w = [BigInt(spec.opcode), 0n];
  for (const f of spec.fields) {
    const v = cmd[f.name];
    if (v === undefined) continue;
    const names = `${spec.op}.${f.name}`;
    if (f.inPlace) {
      if (typeof v !== 'bigint') return { error: TypeError, names };
      if (v < 0n || v > U64_MAX) return { error: RangeError, names };
      w[f.w] = w[f.w]! | (v & genmask(f));
    } else {
      if (typeof v !== 'number' || !Number.isInteger(v)) return { error: TypeError, names };
      if (v < 0 || v > fieldMax(f, ds)) return { error: RangeError, names };
      w[f.w] = w[f.w]! | (BigInt(v) << BigInt(f.lo));
    }
  }
  return [w[0]!, w[1]!];
}

const isRefusal = (r: [bigint, bigint] | Refusal): r is Refusal => !Array.isArray(r);

function fieldArb(f: FieldSpec, ds: boolean): fc.Arbitrary<number | bigint> {
  if (f.inPlace) return fc.oneof(fc.bigInt(0n, U64_MAX), fc.bigInt(0n, 0xffffn));
  const max = fieldMax(f, ds);
  return fc.oneof(fc.integer({ min: 0, max: Math.min(max, 3) }), fc.integer({ min: 0, max }), fc.constant(max));
}

/** A valid object of `spec`: any subset of its fields (absent ones encode as 0), each in range. */
const validArb = (spec: CommandSpec, ds: boolean): fc.Arbitrary<Record<string, unknown>> =>
  fc.record(Object.fromEntries(spec.fields.map((f) => [f.name, fieldArb(f, ds)])), { requiredKeys: [] })
    .map((fields) => ({ op: spec.op, ...fields }));

/** Values no field takes, for either kind of field. */
const BAD_VALUE = fc.constantFrom<unknown>(-1, 1.5, 2 ** 32, 2 ** 53, NaN, Infinity, '1', null, true, 1n, -1n, 1n << 64n, 7, {});
const ALL_FIELDS = [...new Set(COMMANDS.flatMap((c) => c.fields.map((f) => f.name)))];

/** A valid object with one to three faults: a bad value in some field, a key the op lacks, or an unknown op. */
const invalidArb = (ds: boolean): fc.Arbitrary<Record<string, unknown>> =>
  fc.constantFrom(...COMMANDS).chain((spec) => fc.tuple(
    validArb(spec, ds),
    fc.array(fc.oneof(
      fc.tuple(fc.constant('value' as const), fc.constantFrom(...(spec.fields.length > 0 ? spec.fields.map((f) => f.name) : ['sid'])), BAD_VALUE),
      fc.tuple(fc.constant('key' as const), fc.constantFrom(...ALL_FIELDS, 'opcode', 'Asid', 'x'), fc.constant(0)),
      fc.tuple(fc.constant('op' as const), fc.constantFrom('TLBI_NOPE', 'tlbi_nh_asid', 'toString', '__proto__'), fc.constant(0)),
    ), { minLength: 1, maxLength: 3 }),
  )).map(([cmd, faults]) => {
    const bad: Record<string, unknown> = { ...cmd };
    for (const [kind, name, value] of faults) {
      if (kind === 'op') bad['op'] = name;
      else bad[name] = value;
    }
    return bad;
  }).filter((c) => isRefusal(reference(c, ds)));

const LOG2 = 8;
const asWords = (u: Uint32Array, at: number): [bigint, bigint] =>
  [(BigInt(u[at + 1]!) << 32n) | BigInt(u[at]!), (BigInt(u[at + 3]!) << 32n) | BigInt(u[at + 2]!)];

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('did not throw');
}

describe('encodeCommandInto, encodeCommand and submit against the bigint oracle', () => {
  for (const ds of [false, true]) {
    const features = makeFeatures({ DS: ds });
    const bare = bareQueue(features, LOG2);

    it(`valid objects of every op encode to the oracle's words on all three faces (DS=${ds})`, () => {
      const u = new Uint32Array(12);
      const listArb = fc.array(fc.constantFrom(...COMMANDS).chain((spec) => validArb(spec, ds)), { minLength: 1, maxLength: 70 });
      fc.assert(fc.property(listArb, fc.nat(2), (cmds, at) => {
        for (const c of cmds) {
          const want = reference(c, ds) as [bigint, bigint];
          u.fill(0xdeadbeef);
          encodeCommandInto(c as unknown as Command, u, 4 * at, features);
          expect(asWords(u, 4 * at)).toEqual(want);
          expect(encodeCommand(c as unknown as Command, { DS: ds })).toEqual(want);
        }
        // The ring: 70 commands are two batches (CMDQ_BATCH_ENTRIES), and PROD wraps the 256 slots now and then.
        const { q, i32, ring, regs } = bare;
        const prod = Atomics.load(i32, regs + Q_PROD);
        q.submit(cmds as unknown as Command[], { sync: false, timeoutMs: 0 });
        cmds.forEach((c, k) => {
          const slot = (prod + k) & ((1 << LOG2) - 1);
          expect(asWords(ring, 4 * slot)).toEqual(reference(c, ds));
        });
        expect(Atomics.load(i32, regs + Q_PROD)).toBe((prod + cmds.length) & ((2 << LOG2) - 1));
        Atomics.store(i32, regs + Q_CONS, Atomics.load(i32, regs + Q_PROD)); // the test consumes everything
      }), { numRuns: 1000 });
    });

    it(`invalid objects are refused by all three faces with the same error, naming the same field (DS=${ds})`, () => {
      const u = new Uint32Array(4);
      fc.assert(fc.property(invalidArb(ds), fc.nat(3), (bad, before) => {
        const want = reference(bad, ds) as Refusal;
        const e1 = thrown(() => encodeCommand(bad as unknown as Command, { DS: ds }));
        expect(e1).toBeInstanceOf(want.error);
        expect(e1.message).toContain(want.names);
        const e2 = thrown(() => encodeCommandInto(bad as unknown as Command, u, 0, features));
        expect(e2.constructor).toBe(e1.constructor);
        expect(e2.message).toBe(e1.message);
        // Refused before anything is sent, even after valid commands in the same list.
        const { q, i32, regs } = bare;
        const resv = Atomics.load(i32, regs + Q_DRV_RESV);
        const valid: Command = { op: 'TLBI_NH_ASID', asid: 1 };
        const e3 = thrown(() => q.submit([...Array<Command>(before).fill(valid), bad as unknown as Command], { sync: false, timeoutMs: 0 }));
        expect(e3).toBeInstanceOf(ArgumentError);
        expect((e3 as ArgumentError).argument).toBe(`cmds[${before}]`);
        expect(e3.message).toContain(e1.message);
        expect((e3.cause as Error).message).toBe(e1.message);
        expect(Atomics.load(i32, regs + Q_DRV_RESV)).toBe(resv);
      }), { numRuns: 2000 });
    });
  }

  it('reads own keys as encodeCommand always has: inherited keys and undefined fields are no error', () => {
    const f = makeFeatures({});
    const inherited = Object.assign(Object.create({ colour: 'red' }) as object, { op: 'TLBI_NH_ASID', asid: 5 }) as Command;
    const undefinedField = { op: 'TLBI_NH_ASID', asid: 5, vmid: undefined } as Command;
    const want = reference({ op: 'TLBI_NH_ASID', asid: 5 }, false);
    for (const c of [inherited, undefinedField]) {
      const u = new Uint32Array(4);
      encodeCommandInto(c, u, 0, f);
      expect(asWords(u, 0)).toEqual(want);
      expect(encodeCommand(c)).toEqual(want);
    }
    expect(() => encodeCommand({ op: 'TLBI_NH_ASID', asid: 5, colour: undefined } as unknown as Command)).toThrow(/has no field 'colour'/);
  });

  it('refuses a bad buffer or offset with an ArgumentError naming it, before writing', () => {
    const cmd: Command = { op: 'TLBI_NH_ALL' };
    const u = new Uint32Array(8).fill(7);
    for (const [name, fn] of [
      ['u', () => encodeCommandInto(cmd, new Int32Array(4) as unknown as Uint32Array)],
      ['at', () => encodeCommandInto(cmd, u, 5)],
      ['at', () => encodeCommandInto(cmd, u, -4)],
      ['at', () => encodeCommandInto(cmd, u, 1.5)],
    ] as const) {
      const e = thrown(fn);
      expect(e).toBeInstanceOf(ArgumentError);
      expect((e as ArgumentError).argument).toBe(name);
    }
    expect([...u]).toEqual(new Array(8).fill(7));
    expect(() => encodeCommandInto(null as unknown as Command, u)).toThrow(TypeError);
  });
});
