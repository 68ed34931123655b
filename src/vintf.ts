// A Tegra241 CMDQV virtual interface (VINTF): the per-VM configuration the
// SMMU hardware applies to every command of the VINTF's guest-owned VCMDQs
// (the 'hw' path, src/hw.ts). Pure: the register block is words of the host
// SAB, written by the host (the role of Linux's tegra241_vintf_hw_init and
// tegra241_vintf_init_vsid, drivers/iommu/arm/arm-smmu-v3/tegra241-cmdqv.c)
// and read by the emulated hardware (native-free-fastpath/consumer.ts).
//
// Register meanings are Tegra241's (same driver):
//   CONFIG          EN [0], VMID [16:1], HYP_OWN [17]: the VMID the hardware
//                   forces into every TLBI of the VINTF's queues; HYP_OWN=0 (a
//                   guest VINTF) restricts the queues to the guest command set
//                   (tegra241_guest_vcmdq_supports_cmd).
//   SID_MATCH(s)    vSID << 1 | EN: a command naming this vSID ...
//   SID_REPLACE(s)  ... reaches the SMMU with this pSID instead. 16 slots:
//                   TEGRA241_VINTF_SID_MATCH(s) = 0x40 + 4s up to
//                   SID_REPLACE(0) at 0x80. A vSID no enabled slot matches is
//                   refused (CERROR_ILL here; Tegra's own code is not public).
// The layout below is our own (one register per word, SID_MATCH and
// SID_REPLACE on their own lines); the host writes it before the queue that
// uses it is enabled and the hardware latches it at enable, which is
// equivalent here because a VM's devices are fixed at createVm.

import { VSmmu } from './vsmmu.ts';

/** CONFIG word and its fields (Tegra241 VINTF_CONFIG). */
export const VINTF_CONFIG = 0;
export const VINTF_EN = 1 << 0;
export const VINTF_VMID_SHIFT = 1;
export const VINTF_VMID_MASK = 0xffff;
export const VINTF_HYP_OWN = 1 << 17;
/** SID_MATCH/SID_REPLACE pairs per VINTF (the register map's 16). */
export const VINTF_SID_SLOTS = 16;
/** Word offsets of SID_MATCH(0) and SID_REPLACE(0). */
export const VINTF_SID_MATCH = 16;
export const VINTF_SID_REPLACE = 32;
/** SID_MATCH's enable bit; the vSID sits above it, so a vSID has 31 bits. */
export const SID_MATCH_EN = 1;
export const VINTF_WORDS = 48;
/** Largest vSID a SID_MATCH register can hold. */
export const VINTF_MAX_VSID = 2 ** 31 - 1;

/**
 * Program a guest VINTF at word `at`: enabled, HYP_OWN=0, `vmid`, one
 * SID_MATCH/SID_REPLACE pair per stream. The caller has checked the counts
 * and ranges (at most VINTF_SID_SLOTS streams, vSIDs up to VINTF_MAX_VSID).
 */
export function writeVintf(i32: Int32Array, at: number, vmid: number, streams: readonly { vsid: number; psid: number }[]): void {
  if (streams.length > VINTF_SID_SLOTS) throw new RangeError(`a VINTF has ${VINTF_SID_SLOTS} SID slots, ${streams.length} streams given`);
  streams.forEach(({ vsid, psid }, s) => {
    if (vsid > VINTF_MAX_VSID) throw new RangeError(`vSID 0x${vsid.toString(16)} does not fit SID_MATCH (31 bits)`);
    i32[at + VINTF_SID_REPLACE + s] = psid;
    i32[at + VINTF_SID_MATCH + s] = (vsid << 1) | SID_MATCH_EN;
  });
  i32[at + VINTF_CONFIG] = ((vmid & VINTF_VMID_MASK) << VINTF_VMID_SHIFT) | VINTF_EN;
}

/**
 * What the hardware applies to a command of the VINTF at word `at`: its
 * VMID and its enabled SID slots, as the vCMDQ rewrite (VSmmu.convertVcmdq:
 * VMID forced into NH TLBIs, vSID -> pSID in ATC_INV). Throws on a VINTF
 * that is not enabled or not a guest one, or whose slots match one vSID twice.
 */
export function readVintf(i32: Int32Array, at: number): VSmmu {
  const config = i32[at + VINTF_CONFIG]!;
  if ((config & VINTF_EN) === 0) throw new RangeError(`VINTF at word ${at} is not enabled`);
  if ((config & VINTF_HYP_OWN) !== 0) throw new RangeError(`VINTF at word ${at} is hypervisor-owned: not a guest's`);
  const slots: [number, number][] = [];
  for (let s = 0; s < VINTF_SID_SLOTS; s++) {
    const match = i32[at + VINTF_SID_MATCH + s]!;
    if ((match & SID_MATCH_EN) !== 0) slots.push([match >>> 1, i32[at + VINTF_SID_REPLACE + s]! >>> 0]);
  }
  return new VSmmu((config >>> VINTF_VMID_SHIFT) & VINTF_VMID_MASK, slots);
}
