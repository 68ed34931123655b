// The kernel thread's side of the trap path: the ioctls a VMM makes on its
// vIOMMU, served from the kernel thread's mailbox loop (registered by
// native-free-fastpath/kthread.worker.ts). Requests come from the VMM, which
// is user space: every argument is checked, the payload is read once per
// entry (HwptInvalidate), and a bad request is an errno, never a throw.

import { CS, F, FIELD_COUNT, OP } from '../fields.ts';
import type { SmmuFeatures } from '../features.ts';
import { MB_ARG0, MB_PAYLOAD, MB_PAYLOAD_BYTES, MB_RES0, mailboxPayloadOf } from '../layout.ts';
import type { MailboxServer } from '../mailbox.ts';
import { STE, getAddr, getField, installNestedSte, type Stage2Config } from '../model/structs.ts';
import type { VSmmu } from '../vsmmu.ts';
import { EFAULT, EINVAL, HwptInvalidate, type CommandSink, type IommufdMode } from './iommufd.ts';

export const ENOENT = 2;

/** Mailbox ops of the trap path on the kernel thread (after KTHREAD_OP.TRANSLATE = 1). */
export const TRAP_KOP = {
  /** args: vmid, entry_num; payload: entry_num x 16-byte commands -> results: [0] = 0 | -errno, [1] = entry_num out. */
  IOMMUFD_INVALIDATE: 2,
  /** args: vmid, vsid; payload: the guest's 64-byte vSTE -> results: [0] = 0 | -errno, [1] = 1 when the vSTE was refused (STE set to abort). */
  NESTED_STE: 3,
  /** args: vmid -> results: [0] = 0 | -ENOENT, [1] commands executed for the VM's IOMMU_HWPT_INVALIDATEs, [2] vSTE installs (debug, not an ioctl: how tests count each forwarded command executed once). */
  STATS: 4,
} as const;

/** What the kernel thread knows of a VM. */
export interface KernelVms {
  vm(vmid: number): { readonly vsmmu: VSmmu };
}

export class TrapKernelSide {
  private readonly hwpt = new Map<number, HwptInvalidate>();
  private readonly stePa = new Map<number, number>();
  private readonly steInstalls = new Map<number, number>();
  private readonly vste = new Uint32Array(16);
  private readonly ste = new Uint32Array(16);
  private readonly cfgi = new Uint32Array(FIELD_COUNT);
  private readonly sync = new Uint32Array(FIELD_COUNT);

  constructor(
    private readonly sab: SharedArrayBuffer,
    private readonly vms: KernelVms,
    private readonly model: CommandSink,
    private readonly feat: SmmuFeatures,
    /** IOMMU_HWPT_INVALIDATE behaviour on a bad entry: 'strict' (default) or as Linux v6.18 (iommufd.ts). */
    private readonly iommufdMode: IommufdMode = 'strict',
  ) {
    this.cfgi[F.OP] = OP.CFGI_STE;
    this.cfgi[F.LEAF] = 1;
    this.sync[F.OP] = OP.CMD_SYNC;
    this.sync[F.CS] = CS.NONE;
  }

  register(server: MailboxServer): void {
    server.register(TRAP_KOP.IOMMUFD_INVALIDATE, (i32, base) => {
      const entryNum = i32[base + MB_ARG0 + 1]!;
      const [rc, n] = !(entryNum >= 0 && entryNum <= MB_PAYLOAD_BYTES / 16) ? [-EINVAL, 0]
        : !userRange(base, i32[base + MB_PAYLOAD]!, entryNum * 16) ? [-EFAULT, 0]
          : this.invalidate(i32, i32[base + MB_ARG0]!, entryNum, i32[base + MB_PAYLOAD]!);
      i32[base + MB_RES0] = rc;
      i32[base + MB_RES0 + 1] = n;
    });
    server.register(TRAP_KOP.NESTED_STE, (i32, base) => {
      const rc = !userRange(base, i32[base + MB_PAYLOAD]!, 64) ? -EFAULT
        : this.nestedSte(i32, i32[base + MB_ARG0]!, i32[base + MB_ARG0 + 1]! >>> 0, i32[base + MB_PAYLOAD]!);
      i32[base + MB_RES0] = rc < 0 ? rc : 0;
      i32[base + MB_RES0 + 1] = rc > 0 ? 1 : 0;
    });
    server.register(TRAP_KOP.STATS, (i32, base) => {
      const vmid = i32[base + MB_ARG0]!;
      const hw = this.hwptOf(vmid);
      i32[base + MB_RES0] = hw === undefined ? -ENOENT : 0;
      i32[base + MB_RES0 + 1] = hw?.executed ?? 0;
      i32[base + MB_RES0 + 2] = this.steInstalls.get(vmid) ?? 0;
    });
  }

  /** The host attached pSID `psid` with its physical STE at `stePa` (its stage 2 is the nesting parent). */
  attachStream(psid: number, stePa: number): void {
    this.stePa.set(psid, stePa);
  }

  private invalidate(i32: Int32Array, vmid: number, entryNum: number, payloadPa: number): [number, number] {
    const hw = this.hwptOf(vmid);
    if (hw === undefined) return [-ENOENT, 0];
    const rc = hw.invalidate(i32, payloadPa >>> 2, entryNum);
    return [rc, hw.entryNum];
  }

  private hwptOf(vmid: number): HwptInvalidate | undefined {
    let hw = this.hwpt.get(vmid);
    if (hw === undefined) {
      let vsmmu: VSmmu;
      try {
        vsmmu = this.vms.vm(vmid).vsmmu;
      } catch {
        return undefined;
      }
      hw = new HwptInvalidate(vsmmu, this.model, this.feat, this.iommufdMode);
      this.hwpt.set(vmid, hw);
    }
    return hw;
  }

  /**
   * Re-attach the device behind `vsid` to a nested HWPT made from the vSTE
   * (arm_smmu_make_nested_domain_ste), then do what Linux's STE writer does
   * after any STE change: CFGI_STE + CMD_SYNC, so the SMMU drops the config
   * it cached for that StreamID. Returns -errno, 0, or 1 (vSTE refused, the
   * stream now aborts).
   */
  private nestedSte(i32: Int32Array, vmid: number, vsid: number, payloadPa: number): number {
    const hw = this.hwptOf(vmid);
    if (hw === undefined) return -ENOENT;
    const psid = this.vms.vm(vmid).vsmmu.vsidToPsid.get(vsid);
    const stePa = psid === undefined ? undefined : this.stePa.get(psid);
    if (psid === undefined || stePa === undefined) return -ENOENT;
    const p = payloadPa >>> 2;
    for (let k = 0; k < 16; k++) this.vste[k] = i32[p + k]!;
    const s = stePa >>> 2;
    for (let k = 0; k < 16; k++) this.ste[k] = i32[s + k]!;
    const reject = installNestedSte(this.sab, stePa, this.vste, stage2Of(this.ste));
    this.cfgi[F.SID] = psid;
    this.model.execute(this.cfgi);
    this.model.execute(this.sync);
    this.steInstalls.set(vmid, (this.steInstalls.get(vmid) ?? 0) + 1);
    return reject === null ? 0 : 1;
  }
}

/**
 * copy_from_user's check: the VMM's "user pointer" (the payload PA in the
 * mailbox, a word the VMM can write) must name `bytes` inside the VMM's own
 * buffer, the payload area of the mailbox the request came through;
 * anything else (another mailbox's area, a VM's RAM, the host's tables) is
 * -EFAULT, never read.
 */
function userRange(base: number, pa: number, bytes: number): boolean {
  const lo = mailboxPayloadOf(base);
  return pa % 4 === 0 && pa >= lo && pa + bytes <= lo + MB_PAYLOAD_BYTES;
}

/** The stage-2 half of a physical STE: the parent HWPT the host attached the stream to. */
function stage2Of(ste: Uint32Array): Stage2Config {
  return {
    vmid: getField(ste, STE.S2VMID),
    ttb: getAddr(ste, STE.S2TTB_LO, STE.S2TTB_HI),
    t0sz: getField(ste, STE.S2T0SZ),
    sl0: getField(ste, STE.S2SL0),
    tg: getField(ste, STE.S2TG),
    ps: getField(ste, STE.S2PS),
  };
}
