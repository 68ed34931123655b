// The one description of every SMMUv3 command's fields, as Linux keeps its
// CMDQ_* masks in arm-smmu-v3.h. The encoder, both decoders (bigint public
// face, allocation-free hot path) and the validator all read this table;
// nothing else in the project knows a bit position.
//
// Conventions (smmu-facts.md §1.2): a command is two 64-bit words, w0 = spec
// bits [63:0], w1 = spec bits [127:64]. In queue memory each word is stored
// little-endian, w0 first, so the hot path sees four u32: u[0] = w0[31:0],
// u[1] = w0[63:32], u[2] = w1[31:0], u[3] = w1[63:32].

/** Field slots of the hot-path scratch record (a Uint32Array indexed by these). */
export const F = {
  OP: 0,
  SSEC: 1,
  SSV: 2,
  SSID: 3,
  SID: 4,
  LEAF: 5,
  VMID: 6,
  ASID: 7,
  /** Address bits [31:0] in place (low 12 bits zero for page addresses). */
  ADDR_LO: 8,
  /** Address bits [63:32]. */
  ADDR_HI: 9,
  TG: 10,
  TTL: 11,
  NUM: 12,
  SCALE: 13,
  SIZE: 14,
  GLOBAL: 15,
  RANGE: 16,
  CS: 17,
  MSH: 18,
  MSIATTR: 19,
  MSIDATA: 20,
  /** MSI address bits [31:0] in place (low 2 bits zero). */
  MSIADDR_LO: 21,
  /** MSI address bits [63:32]. */
  MSIADDR_HI: 22,
  GRPID: 23,
  RESP: 24,
  STAG: 25,
} as const;
export const FIELD_COUNT = 26;

/** Public field names, as in smmu-vectors.json. `addr` and `msiaddr` are bigint. */
export type FieldName =
  | 'sid' | 'ssid' | 'ssv' | 'ssec' | 'leaf' | 'vmid' | 'asid' | 'addr' | 'tg' | 'ttl'
  | 'num' | 'scale' | 'size' | 'global' | 'range' | 'cs' | 'msh' | 'msiattr' | 'msidata'
  | 'msiaddr' | 'grpid' | 'resp' | 'stag';

/** A field at spec bits [hi:lo] of word w (0 or 1), like GENMASK_ULL(hi, lo). */
export interface FieldSpec {
  readonly name: FieldName;
  readonly w: 0 | 1;
  readonly hi: number;
  readonly lo: number;
  /**
   * Address fields keep their bits in place (Linux ANDs the address with the
   * mask instead of shifting it): value = word & GENMASK(hi, lo). They are the
   * only fields that straddle the two u32 halves of a word.
   */
  readonly inPlace?: true;
}

/** SMMU_IDR* capability a command needs; a command needing an absent one is CERROR_ILL. */
export type Needs = 'S1P' | 'S2P' | 'HYP' | 'ATS' | 'MPAM' | 'STALL' | 'PRI';

/** Bits [hi:lo] of word w that the SMMU IGNOREs: never RES0-checked, never decoded. */
export interface BitSpan {
  readonly w: 0 | 1;
  readonly hi: number;
  readonly lo: number;
}

export interface CommandSpec {
  readonly op: OpName;
  readonly opcode: number;
  readonly fields: readonly FieldSpec[];
  readonly needs?: Needs;
  /** Spans that are legal whatever they hold (not RES0), see each use. */
  readonly ignored?: readonly BitSpan[];
}

export type OpName =
  | 'PREFETCH_CONFIG' | 'PREFETCH_ADDR' | 'CFGI_STE' | 'CFGI_STE_RANGE' | 'CFGI_CD'
  | 'CFGI_CD_ALL' | 'CFGI_VMS_PIDM' | 'TLBI_NH_ALL' | 'TLBI_NH_ASID' | 'TLBI_NH_VA'
  | 'TLBI_NH_VAA' | 'TLBI_EL2_ALL' | 'TLBI_EL2_ASID' | 'TLBI_EL2_VA' | 'TLBI_EL2_VAA'
  | 'TLBI_S12_VMALL' | 'TLBI_S2_IPA' | 'TLBI_NSNH_ALL' | 'ATC_INV' | 'PRI_RESP'
  | 'RESUME' | 'STALL_TERM' | 'CMD_SYNC';

/** Opcodes (smmu-facts.md §1.1; Linux CMDQ_OP_*). */
export const OP = {
  PREFETCH_CONFIG: 0x01,
  PREFETCH_ADDR: 0x02,
  CFGI_STE: 0x03,
  CFGI_STE_RANGE: 0x04,
  CFGI_CD: 0x05,
  CFGI_CD_ALL: 0x06,
  CFGI_VMS_PIDM: 0x07,
  TLBI_NH_ALL: 0x10,
  TLBI_NH_ASID: 0x11,
  TLBI_NH_VA: 0x12,
  TLBI_NH_VAA: 0x13,
  TLBI_EL2_ALL: 0x20,
  TLBI_EL2_ASID: 0x21,
  TLBI_EL2_VA: 0x22,
  TLBI_EL2_VAA: 0x23,
  TLBI_S12_VMALL: 0x28,
  TLBI_S2_IPA: 0x2a,
  TLBI_NSNH_ALL: 0x30,
  ATC_INV: 0x40,
  PRI_RESP: 0x41,
  RESUME: 0x44,
  STALL_TERM: 0x45,
  CMD_SYNC: 0x46,
} as const satisfies Record<OpName, number>;

/** CFGI_ALL is CFGI_STE_RANGE with Range = 31 (Linux CMDQ_OP_CFGI_ALL). */
export const CFGI_ALL_RANGE = 31;

/** CMD_SYNC completion signal (CS field, spec 4.7.3). */
export const CS = { NONE: 0, IRQ: 1, SEV: 2 } as const;

// Field groups shared by several commands, as the spec reuses them.
const sid: FieldSpec = { name: 'sid', w: 0, hi: 63, lo: 32 };
const ssid: FieldSpec = { name: 'ssid', w: 0, hi: 31, lo: 12 };
const ssv: FieldSpec = { name: 'ssv', w: 0, hi: 11, lo: 11 };
const ssec: FieldSpec = { name: 'ssec', w: 0, hi: 10, lo: 10 };
const vmid: FieldSpec = { name: 'vmid', w: 0, hi: 47, lo: 32 };
const asid: FieldSpec = { name: 'asid', w: 0, hi: 63, lo: 48 };
const leaf: FieldSpec = { name: 'leaf', w: 1, hi: 0, lo: 0 };
/** SCALE is 5 bits [24:20]; bit 25 joins it only when IDR5.DS = 1 (validator checks). */
const num: FieldSpec = { name: 'num', w: 0, hi: 16, lo: 12 };
const scale: FieldSpec = { name: 'scale', w: 0, hi: 25, lo: 20 };
const ttl: FieldSpec = { name: 'ttl', w: 1, hi: 9, lo: 8 };
const tg: FieldSpec = { name: 'tg', w: 1, hi: 11, lo: 10 };
const va: FieldSpec = { name: 'addr', w: 1, hi: 63, lo: 12, inPlace: true };
/** Linux's IPA mask is [51:12]; the spec's [55:52] are RES0 up to v3.3. */
const ipa: FieldSpec = { name: 'addr', w: 1, hi: 51, lo: 12, inPlace: true };
const rangeTlbi = [num, scale, leaf, ttl, tg] as const;

/**
 * PREFETCH_ADDR w1[11:5], between Size and Addr: where Stride (legal from
 * SMMUv3.1) and NS live. Their exact positions are not in our copy of the
 * spec (smmu-facts.md §9), so the span is IGNORED rather than guessed: a
 * prefetch is a hint (spec 4.2: out-of-range prefetch parameters raise no
 * error), and no hint value may stop a queue.
 */
const prefetchHints: BitSpan = { w: 1, hi: 11, lo: 5 };
/**
 * CMD_SYNC MSIAddr[55:52]. The spec's MSIAddr is [55:2], Linux's mask [51:2]
 * (the encoder keeps to Linux's). Bits above the 52-bit OAS are RES0, but
 * only when CS=IRQ: otherwise every MSI field is IGNORED (spec 4.7.3), so
 * the decoder checks this span itself, against CS.
 */
export const SYNC_MSIADDR_HIGH: BitSpan = { w: 1, hi: 55, lo: 52 };

export const COMMANDS: readonly CommandSpec[] = [
  { op: 'PREFETCH_CONFIG', opcode: OP.PREFETCH_CONFIG, fields: [sid, ssid, ssv, ssec] },
  {
    op: 'PREFETCH_ADDR', opcode: OP.PREFETCH_ADDR,
    fields: [sid, ssid, ssv, ssec, { name: 'size', w: 1, hi: 4, lo: 0 }, va], ignored: [prefetchHints],
  },
  { op: 'CFGI_STE', opcode: OP.CFGI_STE, fields: [sid, ssec, leaf] },
  { op: 'CFGI_STE_RANGE', opcode: OP.CFGI_STE_RANGE, fields: [sid, ssec, { name: 'range', w: 1, hi: 4, lo: 0 }] },
  { op: 'CFGI_CD', opcode: OP.CFGI_CD, fields: [sid, ssid, ssec, leaf], needs: 'S1P' },
  { op: 'CFGI_CD_ALL', opcode: OP.CFGI_CD_ALL, fields: [sid, ssec], needs: 'S1P' },
  { op: 'CFGI_VMS_PIDM', opcode: OP.CFGI_VMS_PIDM, fields: [ssec, vmid], needs: 'MPAM' },
  { op: 'TLBI_NH_ALL', opcode: OP.TLBI_NH_ALL, fields: [vmid], needs: 'S1P' },
  { op: 'TLBI_NH_ASID', opcode: OP.TLBI_NH_ASID, fields: [vmid, asid], needs: 'S1P' },
  { op: 'TLBI_NH_VA', opcode: OP.TLBI_NH_VA, fields: [vmid, asid, ...rangeTlbi, va], needs: 'S1P' },
  { op: 'TLBI_NH_VAA', opcode: OP.TLBI_NH_VAA, fields: [vmid, ...rangeTlbi, va], needs: 'S1P' },
  { op: 'TLBI_EL2_ALL', opcode: OP.TLBI_EL2_ALL, fields: [], needs: 'HYP' },
  { op: 'TLBI_EL2_ASID', opcode: OP.TLBI_EL2_ASID, fields: [asid], needs: 'HYP' },
  { op: 'TLBI_EL2_VA', opcode: OP.TLBI_EL2_VA, fields: [asid, ...rangeTlbi, va], needs: 'HYP' },
  { op: 'TLBI_EL2_VAA', opcode: OP.TLBI_EL2_VAA, fields: [...rangeTlbi, va], needs: 'HYP' },
  { op: 'TLBI_S12_VMALL', opcode: OP.TLBI_S12_VMALL, fields: [vmid], needs: 'S2P' },
  { op: 'TLBI_S2_IPA', opcode: OP.TLBI_S2_IPA, fields: [vmid, ...rangeTlbi, ipa], needs: 'S2P' },
  { op: 'TLBI_NSNH_ALL', opcode: OP.TLBI_NSNH_ALL, fields: [] },
  {
    op: 'ATC_INV', opcode: OP.ATC_INV, needs: 'ATS',
    fields: [sid, ssid, ssv, { name: 'global', w: 0, hi: 9, lo: 9 }, { name: 'size', w: 1, hi: 5, lo: 0 }, va],
  },
  {
    op: 'PRI_RESP', opcode: OP.PRI_RESP, needs: 'PRI',
    fields: [sid, ssid, ssv, { name: 'grpid', w: 1, hi: 8, lo: 0 }, { name: 'resp', w: 1, hi: 13, lo: 12 }],
  },
  {
    op: 'RESUME', opcode: OP.RESUME, needs: 'STALL',
    fields: [sid, ssec, { name: 'resp', w: 0, hi: 13, lo: 12 }, { name: 'stag', w: 1, hi: 15, lo: 0 }],
  },
  { op: 'STALL_TERM', opcode: OP.STALL_TERM, fields: [sid, ssec], needs: 'STALL' },
  {
    op: 'CMD_SYNC', opcode: OP.CMD_SYNC,
    fields: [
      { name: 'cs', w: 0, hi: 13, lo: 12 },
      { name: 'msh', w: 0, hi: 23, lo: 22 },
      { name: 'msiattr', w: 0, hi: 27, lo: 24 },
      { name: 'msidata', w: 0, hi: 63, lo: 32 },
      { name: 'msiaddr', w: 1, hi: 51, lo: 2, inPlace: true },
    ],
    ignored: [SYNC_MSIADDR_HIGH],
  },
];

/**
 * Opcodes that are not commands of the Non-secure queue, with why. Anything
 * neither here nor in COMMANDS is a Reserved opcode.
 */
export function illegalOpcodeReason(opcode: number): string {
  if (opcode === 0x18 || opcode === 0x1a || (opcode >= 0x50 && opcode <= 0x53) || opcode === 0x58 || opcode === 0x5a || opcode === 0x60) {
    return `opcode 0x${hex2(opcode)} is a Secure-only command, illegal on the Non-secure queue`;
  }
  if (opcode === 0x70 || opcode === 0x73) {
    return `opcode 0x${hex2(opcode)} (DPTI) needs Device Permission Tables, which this SMMU does not implement`;
  }
  if (opcode >= 0x80 && opcode <= 0x8f) return `opcode 0x${hex2(opcode)} is IMPLEMENTATION DEFINED and not implemented`;
  return `opcode 0x${hex2(opcode)} is Reserved`;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}
