// The VMM of the trap path, minus the thread: the per-VM state a VMM keeps
// (its vSMMU's devices, the guest's STRTAB_BASE, its map of guest RAM), the
// trapped register writes it serves, and the ioctls it makes on the kernel
// thread through a mailbox. vmm.worker.ts runs it in a thread; the ops and
// the guest-side transport are here so both sides share one definition.

import type { SmmuFeatures } from '../features.ts';
import { MB_PAYLOAD_BYTES, queueRegs } from '../layout.ts';
import { MailboxClient, type MailboxHandle } from '../mailbox.ts';
import { STE_BYTES } from '../model/structs.ts';
import { TrapCmdq, type TrapKernel } from './cmdq.ts';
import { TRAP_KOP } from './kernel.ts';

/** Trapped register writes, guest vCPU -> VMM (mailbox ops on the VMM's control block). */
export const TRAP_OP = {
  /** args: qid, value. SMMU_CMDQ_PROD: consumes synchronously before returning. */
  PROD: 1,
  /** args: qid, value. GERRORN: an ack resumes consumption. */
  GERRORN: 2,
  /** args: qid, value. CONFIG (CR0.CMDQEN): enabling resumes consumption. */
  CONFIG: 3,
  /** args: vmid, ipaLo, ipaHi. SMMU_STRTAB_BASE of the guest's linear stream table. */
  STRTAB_BASE: 4,
  /** args: qid -> results [1] forwarded, [2] handled by the VMM, [3] ioctls (not a register: the CLI's window into the VMM). */
  STATS: 5,
} as const;

/** The kernel reached through the IOMMU_HWPT_INVALIDATE / nested-STE ioctls. */
class IoctlKernel implements TrapKernel {
  entryNum = 0;
  /** The batch the first pass fills is the ioctl's payload itself (one copy of guest memory, not two). */
  readonly batch: Uint32Array;
  private readonly i32: Int32Array;
  constructor(private readonly client: MailboxClient, private readonly vm: VmmVm) {
    this.i32 = new Int32Array(client.handle.sab);
    this.batch = new Uint32Array(client.handle.sab, client.payloadPa, MB_PAYLOAD_BYTES / 4);
  }

  invalidate(n: number): number {
    const c = this.client;
    c.args[0] = this.vm.vmid;
    c.args[1] = n;
    const rc = c.call(TRAP_KOP.IOMMUFD_INVALIDATE);
    this.entryNum = c.results[1]!;
    return rc;
  }

  cfgiSte(vsid: number): number {
    const vm = this.vm;
    const ipa = vm.strtabIpa + STE_BYTES * vsid;
    // The VMM reads the guest's vSTE from guest RAM, once, into the ioctl's payload.
    if (ipa + STE_BYTES > vm.ramBytes) return -14; // -EFAULT: the STE is outside guest RAM
    const src = (vm.ramBase + ipa) >>> 2;
    for (let k = 0; k < 16; k++) this.batch[k] = this.i32[src + k]!;
    const c = this.client;
    c.args[0] = vm.vmid;
    c.args[1] = vsid;
    return c.call(TRAP_KOP.NESTED_STE);
  }
}

export interface VmmVm {
  readonly vmid: number;
  readonly ramBase: number;
  readonly ramBytes: number;
  readonly vsids: readonly number[];
  strtabIpa: number;
}

/** Control messages host -> VMM thread (answered {id, ok, error?}). */
export type VmmCtrl =
  | { id: number; op: 'addVm'; vmid: number; ramBase: number; ramBytes: number; vsids: number[] }
  | { id: number; op: 'addQueue'; qid: number; vmid: number }
  | { id: number; op: 'addMailbox'; mbid: number };

export class Vmm {
  private readonly vms = new Map<number, { vm: VmmVm; kernel: IoctlKernel }>();
  private readonly queues = new Map<number, TrapCmdq>();
  private readonly ioctl: MailboxClient;

  constructor(private readonly i32: Int32Array, private readonly feat: SmmuFeatures, ioctlMailbox: MailboxHandle) {
    this.ioctl = new MailboxClient(ioctlMailbox);
  }

  addVm(vmid: number, ramBase: number, ramBytes: number, vsids: number[]): void {
    if (this.vms.has(vmid)) throw new Error(`VMM: VMID ${vmid} already added`);
    const vm: VmmVm = { vmid, ramBase, ramBytes, vsids: [...vsids], strtabIpa: 0 };
    this.vms.set(vmid, { vm, kernel: new IoctlKernel(this.ioctl, vm) });
  }

  addQueue(qid: number, vmid: number): void {
    const v = this.vms.get(vmid);
    if (v === undefined) throw new Error(`VMM: no VM ${vmid}`);
    const { vm, kernel } = v;
    this.queues.set(qid, new TrapCmdq(this.i32, queueRegs(qid), qid, this.feat, kernel, kernel.batch, vm.ramBase, vm.ramBytes, vm.vsids));
  }

  /** One trapped write; results[0] = 0 or -errno. Runs to completion: the VMM's device lock is this thread. */
  trap(op: number, a0: number, a1: number, a2: number, res: Int32Array, r: number): void {
    if (op === TRAP_OP.STRTAB_BASE) {
      const v = this.vms.get(a0);
      if (v === undefined || a2 !== 0) {
        res[r] = -22;
        return;
      }
      v.vm.strtabIpa = a1 >>> 0;
      res[r] = 0;
      return;
    }
    const q = this.queues.get(a0);
    if (q === undefined) {
      res[r] = -2;
      return;
    }
    switch (op) {
      case TRAP_OP.PROD: q.writeProd(a1); break;
      case TRAP_OP.GERRORN: q.writeGerrorn(a1); break;
      case TRAP_OP.CONFIG: q.writeConfig(a1); break;
      case TRAP_OP.STATS:
        res[r + 1] = q.forwarded;
        res[r + 2] = q.handledByVmm;
        res[r + 3] = q.ioctls;
        break;
      default:
        res[r] = -38;
        return;
    }
    res[r] = 0;
  }
}
