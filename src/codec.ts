// The SMMUv3 command codec. Everything here is derived, at module load, from
// the one table in fields.ts: per-opcode lists of (u32 index, shift, mask,
// slot) parts and per-u32 RES0 masks. There is exactly one decoder
// (decodeWords, allocation-free, for the consumer's hot path) and one encoder
// of command objects (encodeCommandInto, allocation-free, for the guest's
// submit); the public bigint faces (decodeCommand, encodeCommand) are
// wrappers around them.

import {
  COMMANDS, CS, F, FIELD_COUNT, OP, SYNC_MSIADDR_HIGH, illegalOpcodeReason, type BitSpan, type CommandSpec, type FieldName, type FieldSpec,
  type Needs, type OpName,
} from './fields.ts';
import { DEFAULT_FEATURES, makeFeatures, type SmmuFeatures } from './features.ts';
import { ArgumentError, CommandError } from './errors.ts';

/** A command as plain data: `op` plus the fields of that op (smmu-vectors.json names). */
export type Command = { op: OpName; addr?: bigint; msiaddr?: bigint } & {
  [K in Exclude<FieldName, 'addr' | 'msiaddr'>]?: number;
};

/**
 * Why a command is CERROR_ILL: low byte = kind, bits [15:8] = detail (the
 * 64-bit word index for RES0). 0 means legal. illReason() turns a code back
 * into text, on the error path only.
 */
export const ILL_REASON = {
  OPCODE: 1,
  CAPABILITY: 2,
  RES0: 3,
  SSEC: 4,
  RANGE_NO_RIL: 5,
  RANGE_TG0: 6,
  SCALE_DS: 7,
  RANGE_RESERVED: 8,
  CS_RESERVED: 9,
  PRI_RESP: 10,
  ATC_SIZE: 11,
  MSIADDR_OAS: 12,
} as const;

/** Linux's CMD_SYNC attributes (arm_smmu_cmdq_build_sync_cmd): Inner Shareable, Inner/Outer Write-Back. */
export const SYNC_MSH_ISH = 3;
export const SYNC_MSIATTR_OIWB = 0xf;
/** ATC_INV Size meaning "the whole address space" (Linux ATC_INV_SIZE_ALL). */
export const ATC_INV_SIZE_ALL = 52;

// ---------------------------------------------------------------------------
// Tables derived from COMMANDS.

const N_SPECS = COMMANDS.length;
/** opcode -> index into COMMANDS, -1 for opcodes that are no command of the Non-secure queue. */
const OPC_SPEC = new Int8Array(256).fill(-1);
/** Parts of spec s are PART_*[PART_START[s] .. PART_START[s+1]). */
const PART_START = new Uint16Array(N_SPECS + 1);
const partU32: number[] = [];
const partShift: number[] = [];
const partMask: number[] = [];
const partSlot: number[] = [];
const partInPlace: number[] = [];
/** Per spec, per u32 of the command: bits that no field (nor the opcode byte) covers. */
const RES0 = new Uint32Array(N_SPECS * 4);
/** Per spec, per F slot: the part holding it, or -1 when the op has no such field. */
const SLOT_PART = new Int16Array(N_SPECS * FIELD_COUNT).fill(-1);

/** The u32 (0..3) a BitSpan lies in; spans never straddle two. */
function spanU32(span: BitSpan): number {
  if ((span.lo >> 5) !== (span.hi >> 5)) throw new Error(`fields.ts: ignored span [${span.hi}:${span.lo}] straddles a u32`);
  return 2 * span.w + (span.lo >> 5);
}

/** The span's bits within its u32. */
function spanMask(span: BitSpan): number {
  const width = span.hi - span.lo + 1;
  return (((width === 32 ? 0xffffffff : (1 << width) - 1)) << (span.lo & 31)) >>> 0;
}

const SYNC_MSIADDR_HIGH_U32 = spanU32(SYNC_MSIADDR_HIGH);
const SYNC_MSIADDR_HIGH_MASK = spanMask(SYNC_MSIADDR_HIGH);

function slotOf(field: FieldSpec, half: number): number {
  const key = field.inPlace ? `${field.name.toUpperCase()}_${half === 0 ? 'LO' : 'HI'}` : field.name.toUpperCase();
  const slot = (F as Record<string, number>)[key];
  if (slot === undefined) throw new Error(`fields.ts: field ${field.name} has no F slot ${key}`);
  return slot;
}

COMMANDS.forEach((spec, s) => {
  OPC_SPEC[spec.opcode] = s;
  PART_START[s] = partU32.length;
  const covered = [0xff, 0, 0, 0];
  for (const field of spec.fields) {
    const halves = [0, 1].filter((h) => field.lo <= 32 * h + 31 && field.hi >= 32 * h);
    // Only in-place addresses may straddle two u32s; any other field is one (u32, shift, mask) part.
    if (halves.length > 1 && !field.inPlace) throw new Error(`fields.ts: ${spec.op}.${field.name} straddles a u32`);
    for (const h of halves) {
      const lo = Math.max(field.lo, 32 * h) - 32 * h;
      const hi = Math.min(field.hi, 32 * h + 31) - 32 * h;
      const width = hi - lo + 1;
      const mask = width === 32 ? 0xffffffff : (1 << width) - 1;
      const inPlaceMask = (mask << lo) >>> 0;
      const k = 2 * field.w + h;
      const slot = slotOf(field, h);
      SLOT_PART[s * FIELD_COUNT + slot] = partU32.length;
      partU32.push(k);
      partShift.push(field.inPlace ? 0 : lo);
      partMask.push(field.inPlace ? inPlaceMask : mask);
      partSlot.push(slot);
      partInPlace.push(field.inPlace ? 1 : 0);
      covered[k] = (covered[k]! | inPlaceMask) >>> 0;
    }
  }
  for (const span of spec.ignored ?? []) {
    const k = spanU32(span);
    covered[k] = (covered[k]! | spanMask(span)) >>> 0;
  }
  for (let k = 0; k < 4; k++) RES0[s * 4 + k] = ~covered[k]! >>> 0;
});
PART_START[N_SPECS] = partU32.length;
const PART_U32 = Uint8Array.from(partU32);
const PART_SHIFT = Uint8Array.from(partShift);
const PART_MASK = Uint32Array.from(partMask);
const PART_SLOT = Uint8Array.from(partSlot);
const PART_IN_PLACE = Uint8Array.from(partInPlace);

// ---------------------------------------------------------------------------
// Hot face: typed arrays in, typed arrays out; no allocation, no bigint, no throw.

/** Copy the 4 u32 of queue slot `slot`: the one read of guest-writable memory. */
export function readSlot(q: Int32Array | Uint32Array, slot: number, u: Uint32Array): void {
  const b = slot << 2;
  u[0] = q[b]!;
  u[1] = q[b + 1]!;
  u[2] = q[b + 2]!;
  u[3] = q[b + 3]!;
}

/** Store the 4 u32 of a built command into queue slot `slot`. */
export function writeSlot(q: Int32Array | Uint32Array, slot: number, u: Uint32Array): void {
  const b = slot << 2;
  q[b] = u[0]!;
  q[b + 1] = u[1]!;
  q[b + 2] = u[2]!;
  q[b + 3] = u[3]!;
}

/** Per capability a command may need, the test of SmmuFeatures `feat` that admits it (generated into the decoders). */
const CAPABILITY_TEST: Record<Needs, string> = {
  S1P: 'feat.S1P', S2P: 'feat.S2P', HYP: 'feat.HYP', ATS: 'feat.ATS', MPAM: 'feat.MPAM', STALL: 'feat.STALL_MODEL !== 1', PRI: 'feat.PRI',
};

/** The TG/TTL/NUM/SCALE rules of spec 4.4.1.1, on decoded fields. */
function checkRange(tg: number, ttl: number, num: number, scale: number, feat: SmmuFeatures): number {
  if (!feat.RIL) return (tg | ttl | num | scale) !== 0 ? ILL_REASON.RANGE_NO_RIL : 0;
  if (tg === 0) {
    // Spec 4.4.1.1: with TG=0 the SCALE, NUM and TTL fields are RES0; like
    // every other RES0 field here, non-zero is detected as CERROR_ILL (4.1.5).
    return (ttl | num | scale) !== 0 ? ILL_REASON.RANGE_TG0 : 0;
  }
  if (scale > 31 && !feat.DS) return ILL_REASON.SCALE_DS;
  // TTL=1 with a 16K granule is Reserved without DS and treated as TTL=0.
  const effTtl = tg === 2 && ttl === 1 && !feat.DS ? 0 : ttl;
  return num === 0 && scale === 0 && effTtl === 0 ? ILL_REASON.RANGE_RESERVED : 0;
}

/**
 * The checks of each op that no field mask expresses, on its decoded locals
 * (generated after its range rules): CMD_SYNC's Reserved CS and its MSI
 * address above the OAS (IGNORED unless CS=IRQ), PRI_RESP's ILLEGAL Resp,
 * ATC_INV's Size above the invalidate-all size.
 */
const OP_CHECKS: Partial<Record<OpName, string>> = {
  CMD_SYNC: `if (v${F.CS} === 3) return ${ILL_REASON.CS_RESERVED};\n` +
    `if (v${F.CS} === ${CS.IRQ} && (u[${SYNC_MSIADDR_HIGH_U32}] & ${SYNC_MSIADDR_HIGH_MASK}) !== 0) return ${ILL_REASON.MSIADDR_OAS};`,
  PRI_RESP: `if (v${F.RESP} === 3) return ${ILL_REASON.PRI_RESP};`,
  ATC_INV: `if (v${F.SIZE} > ${ATC_INV_SIZE_ALL}) return ${ILL_REASON.ATC_SIZE};`,
};

/**
 * One straight-line decoder per command, generated from the table at load
 * time (the decodetree approach QEMU takes for instruction decoders), as the
 * cases of one switch on the opcode: checks in the order decodeWords
 * documents: the capability the op needs, RES0, one masked shift per field
 * (kept in a local too, so the checks after it read no memory) and an
 * explicit zero for every slot the op lacks, SSec, the range rules, the op's
 * own checks (OP_CHECKS). A loop interpreting the part tables costs ~3x more
 * per command on the consumer's hot path; the generated code reads the same
 * tables, so there is still one description of the fields. One function,
 * not one per op: its call site is monomorphic, a direct call where a
 * function picked from an array per opcode went through the generic Call
 * builtin (~27 instructions per command, callgrind), and the switch is a
 * jump table. All-zero range fields are legal whatever the features
 * (checkRange), so only a command that uses them pays for the call.
 */
type Decoder = (u: Uint32Array, out: Uint32Array, feat: SmmuFeatures) => number;
const DECODE: Decoder = ((): Decoder => {
  const cases = COMMANDS.map((spec, s) => {
    const body: string[] = [`case ${spec.opcode}: {`];
    if (spec.needs !== undefined) body.push(`if (!(${CAPABILITY_TEST[spec.needs]})) return ${ILL_REASON.CAPABILITY};`);
    const r = RES0.subarray(4 * s, 4 * s + 4);
    body.push(`if (((u[0] & ${r[0]}) | (u[1] & ${r[1]})) !== 0) return ${ILL_REASON.RES0};`);
    body.push(`if (((u[2] & ${r[2]}) | (u[3] & ${r[3]})) !== 0) return ${ILL_REASON.RES0 | (1 << 8)};`);
    const written = new Set<number>([F.OP]);
    for (let p = PART_START[s]!; p < PART_START[s + 1]!; p++) {
      const x = `u[${PART_U32[p]}]`;
      const v = PART_IN_PLACE[p] ? `${x} & ${PART_MASK[p]}` : `(${x} >>> ${PART_SHIFT[p]}) & ${PART_MASK[p]}`;
      body.push(`const v${PART_SLOT[p]} = ${v};`, `out[${PART_SLOT[p]}] = v${PART_SLOT[p]};`);
      written.add(PART_SLOT[p]!);
    }
    for (let slot = 0; slot < FIELD_COUNT; slot++) if (!written.has(slot)) body.push(`out[${slot}] = 0;`);
    if (written.has(F.SSEC)) body.push(`if (v${F.SSEC} !== 0) return ${ILL_REASON.SSEC};`);
    if (written.has(F.TG)) {
      const [tg, ttl, num, scale] = [F.TG, F.TTL, F.NUM, F.SCALE].map((slot) => `v${slot}`);
      body.push(`if ((${tg} | ${ttl} | ${num} | ${scale}) !== 0) { const r = checkRange(${tg}, ${ttl}, ${num}, ${scale}, feat); if (r !== 0) return r; }`);
    }
    const checks = OP_CHECKS[spec.op];
    if (checks !== undefined) {
      for (const slot of checks.matchAll(/\bv(\d+)\b/g)) {
        if (!written.has(Number(slot[1]))) throw new Error(`codec.ts: OP_CHECKS.${spec.op} reads F slot ${slot[1]}, which ${spec.op} has not`);
      }
      body.push(checks);
    }
    body.push('return 0;', '}');
    return body.join('\n');
  });
  const src = `return function decode(u, out, feat) {\nconst opcode = u[0] & 0xff;\nout[${F.OP}] = opcode;\nswitch (opcode) {\n${cases.join('\n')}\ndefault: return ${ILL_REASON.OPCODE};\n}\n};`;
  return new Function('checkRange', src)(checkRange) as Decoder;
})();

/** Every capability: illReason decodes a refused command's fields whatever the SMMU lacked. */
const ALL_CAPABILITIES = makeFeatures({ MPAM: true, DS: true });

/**
 * Decode and validate the private copy `u` (4 u32) into the F record `out`.
 * Returns 0 when the command is legal on this SMMU's Non-secure queue, else
 * an ILL_REASON code (out is then partially filled and must not be used).
 */
export function decodeWords(u: Uint32Array, out: Uint32Array, feat: SmmuFeatures): number {
  return DECODE(u, out, feat);
}

/**
 * Encode the F record `f` (f[F.OP] = opcode) into u[at..at+3]. Values are
 * masked to their fields; an opcode with no table entry is written alone.
 */
export function encodeWords(f: Uint32Array, u: Uint32Array, at = 0): void {
  const opcode = f[F.OP]! & 0xff;
  u[at] = opcode;
  u[at + 1] = 0;
  u[at + 2] = 0;
  u[at + 3] = 0;
  const s = OPC_SPEC[opcode]!;
  if (s < 0) return;
  for (let p = PART_START[s]!, end = PART_START[s + 1]!; p < end; p++) {
    const v = f[PART_SLOT[p]!]! & PART_MASK[p]!;
    const k = at + PART_U32[p]!;
    u[k] = u[k]! | (PART_IN_PLACE[p] ? v : v << PART_SHIFT[p]!);
  }
}

/** Read one field (by F slot) of the command in u; 0 when the op has no such field. */
export function getField(u: Uint32Array, slot: number): number {
  const s = OPC_SPEC[u[0]! & 0xff]!;
  if (s < 0) return 0;
  const p = SLOT_PART[s * FIELD_COUNT + slot]!;
  if (p < 0) return 0;
  const x = u[PART_U32[p]!]!;
  return (PART_IN_PLACE[p] ? x & PART_MASK[p]! : (x >>> PART_SHIFT[p]!) & PART_MASK[p]!) >>> 0;
}

/** Overwrite one field (by F slot) of the command in u, leaving every other bit alone. Returns false when the op has no such field. */
export function setField(u: Uint32Array, slot: number, value: number): boolean {
  const s = OPC_SPEC[u[0]! & 0xff]!;
  if (s < 0) return false;
  const p = SLOT_PART[s * FIELD_COUNT + slot]!;
  if (p < 0) return false;
  const k = PART_U32[p]!, mask = PART_MASK[p]!;
  if (PART_IN_PLACE[p]) u[k] = (u[k]! & ~mask) | (value & mask);
  else {
    const shift = PART_SHIFT[p]!;
    u[k] = (u[k]! & ~(mask << shift)) | ((value & mask) << shift);
  }
  return true;
}

/** The one place field `slot` has in every op of `opcodes` (a table change that splits it fails at module load). */
function sharedPart(slot: number, opcodes: readonly number[]): { k: number; shift: number; mask: number } {
  const places = opcodes.map((opcode) => {
    const s = OPC_SPEC[opcode & 0xff]!;
    const p = s < 0 ? -1 : SLOT_PART[s * FIELD_COUNT + slot]!;
    if (p < 0) throw new Error(`fields.ts: opcode 0x${opcode.toString(16)} has no field in F slot ${slot}`);
    // In place (an address): the mask is already in place, shift 0.
    return { k: PART_U32[p]!, shift: PART_IN_PLACE[p] ? 0 : PART_SHIFT[p]!, mask: PART_MASK[p]! };
  });
  const first = places[0];
  if (first === undefined || places.some((x) => x.k !== first.k || x.shift !== first.shift || x.mask !== first.mask)) {
    throw new Error(`fields.ts: F slot ${slot} is not in one place in opcodes ${opcodes.join(', ')}`);
  }
  return first;
}

/**
 * getField and setField of one field, for commands of the given opcodes
 * only, with the table walk done once (here) instead of per call: straight-
 * line code generated as the decoders are. The vSMMU rewrites a field of
 * every guest command on the consumer's hot path, where setField's per-call
 * lookups (spec, part, u32, shift, mask) were about a quarter of the
 * per-command cost. The caller guarantees the opcode; the accessor does not
 * look at it.
 */
export function fieldAccessor(slot: number, opcodes: readonly number[]): { get(u: Uint32Array): number; set(u: Uint32Array, value: number): void } {
  const { k, shift, mask } = sharedPart(slot, opcodes);
  const placed = (mask << shift) >>> 0;
  return {
    get: new Function('u', `return ((u[${k}] >>> ${shift}) & ${mask}) >>> 0;`) as (u: Uint32Array) => number,
    set: new Function('u', 'v', `u[${k}] = (u[${k}] & ${~placed >>> 0}) | ((v & ${mask}) << ${shift});`) as (u: Uint32Array, value: number) => void,
  };
}

/** True when the op of opcode `opcode` has the field in F slot `slot`. */
export function hasField(opcode: number, slot: number): boolean {
  const s = OPC_SPEC[opcode & 0xff]!;
  return s >= 0 && SLOT_PART[s * FIELD_COUNT + slot]! >= 0;
}

// Builders for the guest driver: each fills a scratch F record and encodes it,
// so no bit position is restated here.
const bf = new Uint32Array(FIELD_COUNT);

function start(opcode: number): Uint32Array {
  bf.fill(0);
  bf[F.OP] = opcode;
  return bf;
}

export function buildTlbiNhVa(
  u: Uint32Array, asid: number, vmid: number, addrLo: number, addrHi: number,
  num: number, scale: number, tg: number, ttl: number, leaf: number,
): void {
  const f = start(OP.TLBI_NH_VA);
  f[F.ASID] = asid;
  f[F.VMID] = vmid;
  f[F.ADDR_LO] = addrLo;
  f[F.ADDR_HI] = addrHi;
  f[F.NUM] = num;
  f[F.SCALE] = scale;
  f[F.TG] = tg;
  f[F.TTL] = ttl;
  f[F.LEAF] = leaf;
  encodeWords(f, u);
}

export function buildTlbiNhAsid(u: Uint32Array, asid: number, vmid: number): void {
  const f = start(OP.TLBI_NH_ASID);
  f[F.ASID] = asid;
  f[F.VMID] = vmid;
  encodeWords(f, u);
}

export function buildTlbiNhAll(u: Uint32Array, vmid: number): void {
  const f = start(OP.TLBI_NH_ALL);
  f[F.VMID] = vmid;
  encodeWords(f, u);
}

export function buildCfgiSte(u: Uint32Array, sid: number, leaf: number): void {
  const f = start(OP.CFGI_STE);
  f[F.SID] = sid;
  f[F.LEAF] = leaf;
  encodeWords(f, u);
}

export function buildCfgiCd(u: Uint32Array, sid: number, ssid: number, leaf: number): void {
  const f = start(OP.CFGI_CD);
  f[F.SID] = sid;
  f[F.SSID] = ssid;
  f[F.LEAF] = leaf;
  encodeWords(f, u);
}

export function buildAtcInv(
  u: Uint32Array, sid: number, ssid: number, ssv: number, global: number, size: number, addrLo: number, addrHi: number,
): void {
  const f = start(OP.ATC_INV);
  f[F.SID] = sid;
  f[F.SSID] = ssid;
  f[F.SSV] = ssv;
  f[F.GLOBAL] = global;
  f[F.SIZE] = size;
  f[F.ADDR_LO] = addrLo;
  f[F.ADDR_HI] = addrHi;
  encodeWords(f, u);
}

/** CMD_SYNC as Linux builds it: MSH=ISH, MSIAttr=OIWB whatever the CS. */
export function buildCmdSync(u: Uint32Array, cs: number, msiAddrLo: number, msiAddrHi: number, msiData: number): void {
  const f = start(OP.CMD_SYNC);
  f[F.CS] = cs;
  f[F.MSH] = SYNC_MSH_ISH;
  f[F.MSIATTR] = SYNC_MSIATTR_OIWB;
  f[F.MSIADDR_LO] = msiAddrLo;
  f[F.MSIADDR_HI] = msiAddrHi;
  f[F.MSIDATA] = msiData;
  encodeWords(f, u);
}

// ---------------------------------------------------------------------------
// Error path: text for a reason code, rebuilt from the words themselves.

const CAPABILITY_TEXT: Record<Needs, string> = {
  S1P: 'stage 1 translation, and this SMMU is stage-2-only (SMMU_IDR0.S1P=0)',
  S2P: 'stage 2 translation, and this SMMU is stage-1-only (SMMU_IDR0.S2P=0)',
  HYP: 'the EL2 translation regime (SMMU_IDR0.Hyp=0)',
  ATS: 'ATS (SMMU_IDR0.ATS=0)',
  MPAM: 'MPAM (SMMU_IDR3.MPAM=0)',
  STALL: 'stall support (SMMU_IDR0.STALL_MODEL=0b01, no stall)',
  PRI: 'PRI (SMMU_IDR0.PRI=0)',
};

export function illReason(code: number, u: Uint32Array): string {
  const kind = code & 0xff;
  const opcode = u[0]! & 0xff;
  const s = OPC_SPEC[opcode]!;
  if (kind === ILL_REASON.OPCODE || s < 0) return illegalOpcodeReason(opcode);
  const spec = COMMANDS[s]!;
  const op = spec.op;
  const f = new Uint32Array(FIELD_COUNT);
  DECODE(u, f, ALL_CAPABILITIES); // fills the fields unless RES0 bits are set, whose text needs none
  const rangeText = `TG=${f[F.TG]} TTL=${f[F.TTL]} NUM=${f[F.NUM]} SCALE=${f[F.SCALE]}`;
  switch (kind) {
    case ILL_REASON.CAPABILITY: return `${op} needs ${CAPABILITY_TEXT[spec.needs!]}`;
    case ILL_REASON.RES0: {
      const w = (code >>> 8) & 1;
      const bits = (BigInt((u[2 * w + 1]! & RES0[s * 4 + 2 * w + 1]!) >>> 0) << 32n) | BigInt((u[2 * w]! & RES0[s * 4 + 2 * w]!) >>> 0);
      return `RES0 bits 0x${bits.toString(16)} set in w${w} of ${op}`;
    }
    case ILL_REASON.SSEC: return `SSec=1 on the Non-secure queue (${op})`;
    case ILL_REASON.RANGE_NO_RIL:
      return `${op}: TG, TTL, NUM and SCALE are RES0 without range invalidation (SMMU_IDR3.RIL=0), got ${rangeText}`;
    case ILL_REASON.RANGE_TG0: return `${op}: TTL, NUM and SCALE are RES0 when TG=0 (no range, no level hint), got ${rangeText}`;
    case ILL_REASON.SCALE_DS: return `${op}: SCALE=${f[F.SCALE]} uses bit 25, which is RES0 without SMMU_IDR5.DS`;
    case ILL_REASON.RANGE_RESERVED:
      return `${op}: ${rangeText} is the Reserved range combination (TG!=0 with NUM=0, SCALE=0, TTL=0)` +
        (f[F.TG] === 2 && f[F.TTL] === 1 ? '; TTL=1 with a 16K granule is Reserved without SMMU_IDR5.DS and treated as TTL=0' : '');
    case ILL_REASON.CS_RESERVED: return 'CMD_SYNC CS=0b11 is Reserved';
    case ILL_REASON.PRI_RESP: return 'PRI_RESP Resp=0b11 is ILLEGAL';
    case ILL_REASON.MSIADDR_OAS:
      return 'CMD_SYNC CS=IRQ with MSIAddr[55:52] set: above the 52-bit output address size, RES0 (IGNORED only when CS is not IRQ)';
    case ILL_REASON.ATC_SIZE: return `ATC_INV Size=${f[F.SIZE]} is above ${ATC_INV_SIZE_ALL} (the invalidate-all size)`;
    default: throw new RangeError(`${code} is not an ILL_REASON code`);
  }
}

/** DESIGN.md's name for illReason. */
export const illReasonText = illReason;

// ---------------------------------------------------------------------------
// Object face: a command object straight into 4 u32 (the guest's submit path),
// with no bigint arithmetic and no allocation unless it refuses the object.

/** SCALE's bound without IDR5.DS: its 5 low bits (the field is 6 wide for DS, fields.ts). */
const SCALE_MAX_NO_DS = 31;
/**
 * What a generated encoder found wrong: low byte the kind, bits [15:8] the
 * field's index in its CommandSpec. OBJ_KEYS means the object has a key that
 * is not a field of its op; it may be inherited, which encodeCommand ignores
 * (it looks at own keys only), so objectError decides.
 */
const OBJ_TYPE = 1;
const OBJ_RANGE = 2;
const OBJ_KEYS = 3;

/**
 * A bigint address splits into u32 halves through this scratch: a
 * BigUint64Array store converts without allocating, where `v & 0xffffffffn`
 * and `v >> 32n` would each allocate a bigint.
 */
const ADDR64 = new BigUint64Array(1);
const ADDR32 = new Uint32Array(ADDR64.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const ADDR32_LO = LITTLE_ENDIAN ? 0 : 1;
const U64_MAX = (1n << 64n) - 1n;

type ObjectEncoder = (cmd: Command, u: Uint32Array, at: number, ds: boolean) => number;
/**
 * Per command, a straight-line encoder generated from the same part tables
 * as DECODE's: one named property read per field (an inline cache per op,
 * where a loop over names would be a megamorphic keyed load), the checks
 * encodeCommand documents in field order (the first bad field is the one
 * reported), the value or'ed into its u32, then one for-in pass for keys
 * that are no field of the op.
 */
const ENCODE_OBJECT: readonly ObjectEncoder[] = COMMANDS.map((spec, s) => {
  const body: string[] = [`let u0 = ${spec.opcode}, u1 = 0, u2 = 0, u3 = 0, v;`];
  spec.fields.forEach((field, i) => {
    body.push(`v = cmd.${field.name};`, 'if (v !== undefined) {');
    if (field.inPlace) {
      body.push(`if (typeof v !== 'bigint') return ${OBJ_TYPE | (i << 8)};`);
      body.push(`if (v < 0n || v > ${U64_MAX}n) return ${OBJ_RANGE | (i << 8)};`);
      body.push('A64[0] = v;');
      for (const h of [0, 1]) {
        const p = SLOT_PART[s * FIELD_COUNT + slotOf(field, h)]!;
        if (p >= 0) body.push(`u${PART_U32[p]} |= A32[${h === 0 ? ADDR32_LO : 1 - ADDR32_LO}] & ${PART_MASK[p]};`);
      }
    } else {
      const p = SLOT_PART[s * FIELD_COUNT + slotOf(field, 0)]!;
      const max = PART_MASK[p]!;
      body.push(`if (typeof v !== 'number' || !Number.isInteger(v)) return ${OBJ_TYPE | (i << 8)};`);
      body.push(`if (v < 0 || v > ${field.name === 'scale' ? `(ds ? ${max} : ${SCALE_MAX_NO_DS})` : max}) return ${OBJ_RANGE | (i << 8)};`);
      body.push(`u${PART_U32[p]} |= v << ${PART_SHIFT[p]};`);
    }
    body.push('}');
  });
  body.push('u[at] = u0; u[at + 1] = u1; u[at + 2] = u2; u[at + 3] = u3;');
  const known = ['op', ...spec.fields.map((f) => f.name)].map((k) => `key !== '${k}'`).join(' && ');
  body.push(`for (const key in cmd) if (${known}) return ${OBJ_KEYS};`);
  body.push('return 0;');
  return new Function('A64', 'A32', `return function encode_${spec.op}(cmd, u, at, ds) {\n${body.join('\n')}\n};`)(ADDR64, ADDR32) as ObjectEncoder;
});

const SPEC_INDEX = new Map(COMMANDS.map((spec, s) => [spec.op as string, s]));

/** A bigint that is not a u64, as the error it is; null when it is one. */
function u64Error(v: unknown, what: string): TypeError | RangeError | null {
  if (typeof v !== 'bigint') return new TypeError(`${what} must be a bigint, got ${typeof v}`);
  if (v < 0n || v > U64_MAX) return new RangeError(`${what} must be in 0..2^64-1, got ${v}`);
  return null;
}

/** The error for an encoder's refusal `code` (error path only); null when an OBJ_KEYS refusal was only inherited keys. */
function objectError(spec: CommandSpec, cmd: Command, code: number, ds: boolean): TypeError | RangeError | null {
  const values = cmd as unknown as Record<string, unknown>;
  for (const key of Object.keys(values)) {
    if (key !== 'op' && !spec.fields.some((field) => field.name === key)) return new TypeError(`${spec.op} has no field '${key}'`);
  }
  if (code === OBJ_KEYS) return null;
  const field = spec.fields[code >>> 8]!;
  const what = `${spec.op}.${field.name}`;
  const v = values[field.name];
  if (field.inPlace) return u64Error(v, what);
  if ((code & 0xff) === OBJ_TYPE) {
    return new TypeError(`${what} must be an integer, got ${typeof v === 'bigint' ? `${v}n` : JSON.stringify(v)}`);
  }
  const max = field.name === 'scale' && !ds ? SCALE_MAX_NO_DS : 2 ** (field.hi - field.lo + 1) - 1;
  return new RangeError(`${what}=${String(v)} does not fit its field (0..${max})`);
}

// The op of the last object encoded and its spec index: a guest submits runs
// of one op, and comparing an internalized string is cheaper than the Map's
// lookup (2-4 ns of the ~20 ns an encode takes).
let lastOp: unknown;
let lastSpec = -1;

/**
 * Encode the command object `cmd` into u[at..at+3], as encodeCommand does
 * (same checks, same errors: TypeError or RangeError naming the field),
 * without bigint arithmetic or allocation: GuestQueue.submit's encoder.
 * `features.DS` widens SCALE to 6 bits.
 */
export function encodeCommandInto(cmd: Command, u: Uint32Array, at = 0, features?: Partial<SmmuFeatures>): void {
  if (!(u instanceof Uint32Array)) throw new ArgumentError('u', 'must be a Uint32Array');
  if (!Number.isInteger(at) || at < 0 || at + 4 > u.length) throw new ArgumentError('at', `must be an integer in 0..${u.length - 4} (4 words from it in u), got ${at}`);
  if (cmd === null || typeof cmd !== 'object') throw new TypeError(`a command must be an object, got ${String(cmd)}`);
  const op = cmd.op;
  let s = lastSpec;
  if (op !== lastOp) {
    const found = SPEC_INDEX.get(op);
    if (found === undefined) throw new TypeError(`unknown op ${String(op)}`);
    s = lastSpec = found;
    lastOp = op;
  }
  const ds = features?.DS ?? DEFAULT_FEATURES.DS;
  const code = ENCODE_OBJECT[s]!(cmd, u, at, ds);
  if (code !== 0) {
    const e = objectError(COMMANDS[s]!, cmd, code, ds);
    if (e !== null) throw e;
  }
}

// ---------------------------------------------------------------------------
// Public face: bigint words and plain objects, built on the hot face.

const pu = new Uint32Array(4);
const pf = new Uint32Array(FIELD_COUNT);

function putU64(v: unknown, u: Uint32Array, k: number, what: string): void {
  const e = u64Error(v, what);
  if (e !== null) throw e;
  ADDR64[0] = v as bigint;
  u[k] = ADDR32[ADDR32_LO]!;
  u[k + 1] = ADDR32[1 - ADDR32_LO]!;
}

function u64(lo: number, hi: number): bigint {
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** The plain-object form of a decoded F record: op and every field of that op. */
export function commandFromFields(f: Uint32Array): Command {
  const s = OPC_SPEC[f[F.OP]! & 0xff]!;
  if (s < 0) throw new RangeError(`opcode 0x${f[F.OP]!.toString(16)} has no command`);
  const spec = COMMANDS[s]!;
  const cmd: Record<string, string | number | bigint> = { op: spec.op };
  for (const field of spec.fields) {
    cmd[field.name] = field.inPlace ? u64(f[slotOf(field, 0)]!, f[slotOf(field, 1)]!) : f[slotOf(field, 0)]!;
  }
  return cmd as unknown as Command;
}

/** Decode [w0, w1]; throws CommandError('ILL', reason) for a command the SMMU would refuse. */
export function decodeCommand(words: readonly [bigint, bigint], features?: Partial<SmmuFeatures>): Command {
  putU64(words[0], pu, 0, 'w0');
  putU64(words[1], pu, 2, 'w1');
  const feat = features === undefined ? DEFAULT_FEATURES : makeFeatures(features);
  const code = decodeWords(pu, pf, feat);
  if (code !== 0) throw new CommandError('ILL', illReason(code, pu));
  return commandFromFields(pf);
}

/**
 * Encode a command like Linux's arm_smmu_cmdq_build_cmd: absent fields are 0,
 * addresses are ANDed with their field mask, any other value must fit its
 * field (SCALE: 5 bits, 6 with features.DS); a key that is no field of the op
 * is refused. The encoder does not judge legality: it can build any command
 * the decoder would refuse. The bigint face of encodeCommandInto.
 */
export function encodeCommand(cmd: Command, features?: Partial<SmmuFeatures>): [bigint, bigint] {
  encodeCommandInto(cmd, pu, 0, features);
  return [u64(pu[0]!, pu[1]!), u64(pu[2]!, pu[3]!)];
}
