// The vSMMU policy: which guest commands may reach the host SMMU, and how
// they are rewritten so a guest can only name its own VMID and StreamIDs.
// Pure: commands are rewritten in place in a caller's Uint32Array(4).

import { encodeWords, fieldAccessor, getField } from './codec.ts';
import { CS, F, FIELD_COUNT, OP } from './fields.ts';

/** Why a guest command was refused: low byte = kind, bits [15:8] = the opcode. 0 means converted. */
export const VSMMU_REJECT = {
  /** Not a command this path forwards (iommufd: -EIO; vCMDQ: CERROR_ILL on the queue). */
  OPCODE: 1,
  /** ATC_INV/CFGI_CD* naming a vSID with no vDEVICE in this vSMMU (-EIO). */
  UNKNOWN_VSID: 2,
  /** vCMDQ CMD_SYNC with the Reserved CS=0b11. */
  SYNC_CS: 3,
  /** A Tegra241 guest VCMDQ (strict command set): an opcode outside it. */
  TEGRA241_OPCODE: 4,
  /** A Tegra241 guest VCMDQ: CMD_SYNC with CS other than NONE (the guest polls CONS). */
  TEGRA241_SYNC_CS: 5,
} as const;

const nsnh = new Uint32Array(FIELD_COUNT);
/** The fields the rewrite touches, each in one place in the commands that carry it (codec.ts fieldAccessor). */
const VMID = fieldAccessor(F.VMID, [OP.TLBI_NH_ALL, OP.TLBI_NH_ASID, OP.TLBI_NH_VA, OP.TLBI_NH_VAA]);
const SID = fieldAccessor(F.SID, [OP.ATC_INV, OP.CFGI_CD, OP.CFGI_CD_ALL]);
const SYNC_CS = fieldAccessor(F.CS, [OP.CMD_SYNC]);
const scratch = new Uint32Array(4);

/** What a vCMDQ command set admits of one opcode. */
const ADMIT = { NO: 0, INVALIDATION: 1, SYNC: 2, SYNC_CS_NONE: 3 } as const;

/** A vCMDQ's command set, chosen per queue (layout.ts Q_CMDSET): one table lookup per command whichever it is. */
export class VcmdqCmdset {
  /** Per opcode, an ADMIT value. */
  readonly admit = new Uint8Array(256);
  constructor(
    readonly name: 'wide' | 'tegra241',
    invalidations: readonly number[],
    sync: number,
    /** VSMMU_REJECT kind for an opcode outside the set. */
    readonly rejectOpcode: number,
  ) {
    for (const op of invalidations) this.admit[op] = ADMIT.INVALIDATION;
    this.admit[OP.CMD_SYNC] = sync;
  }
}

/**
 * The default vCMDQ set: Tegra241's guest-owned invalidations plus NH_VAA and
 * NH_ALL (which a guest may send and the host SMMU executes as iommufd would
 * forward them), and CMD_SYNC with CS NONE, SEV or IRQ (MSI).
 */
export const VCMDQ_WIDE = new VcmdqCmdset(
  'wide', [OP.TLBI_NH_ALL, OP.TLBI_NH_ASID, OP.TLBI_NH_VA, OP.TLBI_NH_VAA, OP.ATC_INV], ADMIT.SYNC, VSMMU_REJECT.OPCODE,
);

/**
 * A strict Tegra241 guest VCMDQ: exactly what Linux's
 * tegra241_guest_vcmdq_supports_cmd lets a guest put there (TLBI_NH_ASID,
 * TLBI_NH_VA, ATC_INV) and the CMD_SYNC arm_smmu_cmdq_build_sync_cmd builds
 * for a queue that needs busy polling (CS=NONE).
 */
export const VCMDQ_TEGRA241 = new VcmdqCmdset(
  'tegra241', [OP.TLBI_NH_ASID, OP.TLBI_NH_VA, OP.ATC_INV], ADMIT.SYNC_CS_NONE, VSMMU_REJECT.TEGRA241_OPCODE,
);

/** Q_CMDSET register values (layout.ts) -> command set. */
export const VCMDQ_CMDSETS: readonly VcmdqCmdset[] = [VCMDQ_WIDE, VCMDQ_TEGRA241];

export class VSmmu {
  readonly vmid: number;
  readonly vsidToPsid: ReadonlyMap<number, number>;

  constructor(vmid: number, streams: Iterable<readonly [vsid: number, psid: number]>) {
    if (!Number.isInteger(vmid) || vmid < 0 || vmid > 0xffff) throw new RangeError(`vmid must be a 16-bit VMID, got ${vmid}`);
    const map = new Map<number, number>();
    for (const [vsid, psid] of streams) {
      for (const [name, v] of [['vsid', vsid], ['psid', psid]] as const) {
        if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${name} must be a 32-bit StreamID, got ${v}`);
      }
      if (map.has(vsid)) throw new RangeError(`vsid 0x${vsid.toString(16)} is mapped twice`);
      map.set(vsid, psid);
    }
    this.vmid = vmid;
    this.vsidToPsid = map;
  }

  /**
   * arm_vsmmu_convert_user_cmd, in place: NH TLBIs get this vSMMU's VMID,
   * NSNH_ALL becomes NH_ALL(vmid), ATC_INV/CFGI_CD/CFGI_CD_ALL get the pSID.
   * Every other bit passes through untouched (the host SMMU judges it).
   */
  convertIommufd(u: Uint32Array): number {
    const opcode = u[0]! & 0xff;
    switch (opcode) {
      case OP.TLBI_NH_ALL:
      case OP.TLBI_NH_ASID:
      case OP.TLBI_NH_VA:
      case OP.TLBI_NH_VAA:
        VMID.set(u, this.vmid);
        return 0;
      case OP.TLBI_NSNH_ALL:
        // The kernel builds a fresh NH_ALL: w0 = opcode | VMID, w1 = 0.
        nsnh[F.OP] = OP.TLBI_NH_ALL;
        nsnh[F.VMID] = this.vmid;
        encodeWords(nsnh, u);
        return 0;
      case OP.ATC_INV:
      case OP.CFGI_CD:
      case OP.CFGI_CD_ALL:
        return this.mapSid(u);
      default:
        return VSMMU_REJECT.OPCODE | (opcode << 8);
    }
  }

  /**
   * A guest vCMDQ command of command set `set` (default the wide one), with
   * the same VMID/SID rewrites as iommufd: the invalidations are a subset of
   * what iommufd forwards, rewritten exactly as it would rewrite them.
   */
  convertVcmdq(u: Uint32Array, set: VcmdqCmdset = VCMDQ_WIDE): number {
    const opcode = u[0]! & 0xff;
    switch (set.admit[opcode]) {
      case ADMIT.INVALIDATION: return this.convertIommufd(u);
      case ADMIT.SYNC: {
        const cs = SYNC_CS.get(u);
        return cs === CS.NONE || cs === CS.SEV || cs === CS.IRQ ? 0 : VSMMU_REJECT.SYNC_CS | (opcode << 8);
      }
      case ADMIT.SYNC_CS_NONE: return SYNC_CS.get(u) === CS.NONE ? 0 : VSMMU_REJECT.TEGRA241_SYNC_CS | (opcode << 8);
      default: return set.rejectOpcode | (opcode << 8);
    }
  }

  private mapSid(u: Uint32Array): number {
    const psid = this.vsidToPsid.get(SID.get(u));
    if (psid === undefined) return VSMMU_REJECT.UNKNOWN_VSID | ((u[0]! & 0xff) << 8);
    SID.set(u, psid);
    return 0;
  }
}

const OPCODE_NAME = new Map<number, string>(Object.entries(OP).map(([name, code]) => [code, name]));

/** Text for a VSMMU_REJECT code; `u` (the refused command) adds the vSID. */
export function rejectReason(code: number, u?: Uint32Array): string {
  const opcode = (code >>> 8) & 0xff;
  const op = OPCODE_NAME.get(opcode) ?? `opcode 0x${opcode.toString(16).padStart(2, '0')}`;
  switch (code & 0xff) {
    case VSMMU_REJECT.OPCODE: return `${op} is not forwarded for a guest`;
    case VSMMU_REJECT.UNKNOWN_VSID:
      return `${op} names ${u === undefined ? 'a vSID' : `vSID 0x${getField(u, F.SID).toString(16)}`} with no vDEVICE in this vSMMU`;
    case VSMMU_REJECT.SYNC_CS: return `${op} CS=0b11 is Reserved`;
    case VSMMU_REJECT.TEGRA241_OPCODE:
      return `${op} is not in a Tegra241 guest VCMDQ's command set (TLBI_NH_ASID, TLBI_NH_VA, ATC_INV, CMD_SYNC; tegra241_guest_vcmdq_supports_cmd)`;
    case VSMMU_REJECT.TEGRA241_SYNC_CS:
      return `${op} CS=${u === undefined ? '?' : getField(u, F.CS)}: a Tegra241 guest VCMDQ takes CS=NONE only (the guest polls CONS)`;
    default: throw new RangeError(`${code} is not a VSMMU_REJECT code`);
  }
}

/**
 * The IOMMU_HWPT_INVALIDATE array walk: converts entries 0..n-1 of `words`
 * (4 u32 each) in place and returns the index of the first refused entry
 * (the entry_num reported back), or n when all were converted. Entries
 * after a refused one are left as the guest wrote them.
 */
export function convertBatch(words: Uint32Array, n: number, vsmmu: VSmmu): number {
  for (let i = 0; i < n; i++) {
    const b = i << 2;
    scratch[0] = words[b]!;
    scratch[1] = words[b + 1]!;
    scratch[2] = words[b + 2]!;
    scratch[3] = words[b + 3]!;
    if (vsmmu.convertIommufd(scratch) !== 0) return i;
    words.set(scratch, b);
  }
  return n;
}
