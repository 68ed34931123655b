// The modelled SMMU's capabilities, named after the SMMU_IDR0/1/3/5 fields
// they stand for. A command that needs an absent capability is CERROR_ILL
// (smmu-facts.md §2.3), exactly as on hardware that does not advertise it.

export interface SmmuFeatures {
  /** IDR0.S1P: stage-1 translation (NH_* TLBIs, CFGI_CD*). */
  readonly S1P: boolean;
  /** IDR0.S2P: stage-2 translation (TLBI_S12_VMALL, TLBI_S2_IPA). */
  readonly S2P: boolean;
  /** IDR0.Hyp: EL2 translation regime (TLBI_EL2_*). */
  readonly HYP: boolean;
  /** IDR0.ATS: ATC_INV. */
  readonly ATS: boolean;
  /** IDR0.PRI: PRI_RESP. */
  readonly PRI: boolean;
  /** IDR0.SEV: CMD_SYNC CS=SEV raises a wake-up event (else it behaves as NONE). */
  readonly SEV: boolean;
  /** IDR0.MSI: CMD_SYNC CS=IRQ writes MSIData to MSIAddr. */
  readonly MSI: boolean;
  /** IDR0.ASID16: 16-bit ASIDs (else the upper byte is RES0 and never hits). */
  readonly ASID16: boolean;
  /** IDR0.VMID16: 16-bit VMIDs. */
  readonly VMID16: boolean;
  /** IDR3.RIL: range invalidation (TG/NUM/SCALE/TTL); RES0 without it. */
  readonly RIL: boolean;
  /** IDR3.MPAM: CFGI_VMS_PIDM. */
  readonly MPAM: boolean;
  /** IDR0.STALL_MODEL: 0b00 stall and terminate, 0b01 no stall (RESUME, STALL_TERM illegal), 0b10 stall forced. */
  readonly STALL_MODEL: 0 | 1 | 2;
  /** IDR5.DS: 52-bit/16K-TTL1 support; widens SCALE to 6 bits. */
  readonly DS: boolean;
  /** IDR1.CMDQS: largest LOG2SIZE a command queue may use (≤ 19). */
  readonly CMDQS: number;
}

export const DEFAULT_FEATURES: SmmuFeatures = Object.freeze({
  S1P: true,
  S2P: true,
  HYP: true,
  ATS: true,
  PRI: true,
  SEV: true,
  MSI: true,
  ASID16: true,
  VMID16: true,
  RIL: true,
  MPAM: false,
  STALL_MODEL: 0,
  DS: false,
  CMDQS: 19,
});

/** Fill the unnamed capabilities of a partial record with the defaults. */
export function makeFeatures(partial: Partial<SmmuFeatures> = {}): SmmuFeatures {
  const f = { ...DEFAULT_FEATURES, ...partial };
  if (!Number.isInteger(f.CMDQS) || f.CMDQS < 0 || f.CMDQS > 19) {
    throw new RangeError(`SmmuFeatures.CMDQS must be an integer in 0..19 (IDR1.CMDQS), got ${f.CMDQS}`);
  }
  return Object.freeze(f);
}
