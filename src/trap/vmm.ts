// The VMM of the trap path, minus the thread: the per-VM state a VMM keeps
// (its vSMMU's devices, the guest's STRTAB_BASE, its map of guest RAM), the
// trapped register writes it serves, and the ioctls it makes on the kernel
// thread through a mailbox. vmm.worker.ts runs it in a thread; the ops and
// the guest-side transport are here so both sides share one definition.

import type { SmmuFeatures } from '../features.ts';
import { CTL_HEARTBEAT, MB_PAYLOAD_BYTES, VMM_CTL, mailboxWords, queueRegs } from '../layout.ts';
import { MailboxClient, type MailboxHandle } from '../mailbox.ts';
import { STE_BYTES } from '../model/structs.ts';
import { MailboxTimeoutError, ServerDeadError } from '../waiter.ts';
import { TrapCmdq, type TrapKernel } from './cmdq.ts';
import { EFAULT, EIO } from './iommufd.ts';
import { TRAP_KOP } from './kernel.ts';

/**
 * Trapped register writes, guest vCPU -> VMM (mailbox ops on the VMM's
 * control block). Each vCPU's queue has its own mailbox and the VMM knows
 * the queue and VM by it, as a VMM knows which vCPU exited; nothing the
 * guest writes in the mailbox can name another queue or VM.
 */
export const TRAP_OP = {
  /** args: value. SMMU_CMDQ_PROD: consumes synchronously before returning. */
  PROD: 1,
  /** args: value. GERRORN: an ack resumes consumption. */
  GERRORN: 2,
  /** args: value. CONFIG (CR0.CMDQEN): enabling resumes consumption. */
  CONFIG: 3,
  /** args: ipaLo, ipaHi. SMMU_STRTAB_BASE of the VM's linear stream table (64-byte aligned, in guest RAM). */
  STRTAB_BASE: 4,
  /** -> results [1] forwarded, [2] handled by the VMM, [3] ioctls, [4] unusable vSTEs (not a register: the CLI's window into the VMM). */
  STATS: 5,
} as const;

/** results[0] of a trapped write, besides 0. */
export const TRAP_ERRNO = {
  /** The mailbox is bound to no queue. */
  NO_QUEUE: -2,
  /** The ioctl found the kernel thread dead: the guest gets KernelThreadDeadError. */
  KERNEL_DEAD: -19,
  /** A bad register value (STRTAB_BASE outside guest RAM or misaligned). */
  INVAL: -22,
  NOSYS: -38,
  /** The ioctl got no answer in time. */
  KERNEL_TIMEOUT: -110,
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
    // The VMM reads the guest's vSTE from guest RAM, once, into the ioctl's
    // payload. One outside guest RAM cannot be fetched (F_STE_FETCH on
    // hardware): install a V=0 vSTE instead, which the kernel makes an abort
    // STE (arm_smmu_validate_vste), so the device keeps no stale configuration.
    const unreadable = ipa + STE_BYTES > vm.ramBytes;
    if (unreadable) this.batch.fill(0, 0, 16);
    else {
      const src = (vm.ramBase + ipa) >>> 2;
      for (let k = 0; k < 16; k++) this.batch[k] = this.i32[src + k]!;
    }
    const c = this.client;
    c.args[0] = vm.vmid;
    c.args[1] = vsid;
    const rc = c.call(TRAP_KOP.NESTED_STE);
    if (rc !== 0) return rc;
    return unreadable ? -EFAULT : c.results[1] === 1 ? -EIO : 0;
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
  | { id: number; op: 'addQueue'; qid: number; vmid: number; mbid: number };

export class Vmm {
  private readonly vms = new Map<number, { vm: VmmVm; kernel: IoctlKernel }>();
  /** Trap mailbox (word offset) -> the queue it exits for, and its VM. */
  private readonly traps = new Map<number, { q: TrapCmdq; vm: VmmVm }>();
  private readonly ioctl: MailboxClient;

  constructor(private readonly i32: Int32Array, private readonly feat: SmmuFeatures, ioctlMailbox: MailboxHandle) {
    // While an ioctl is in the kernel the VMM is alive: its heartbeat goes on, so vCPUs waiting on it do not give up.
    this.ioctl = new MailboxClient(ioctlMailbox, VMM_CTL + CTL_HEARTBEAT);
  }

  addVm(vmid: number, ramBase: number, ramBytes: number, vsids: number[]): void {
    if (this.vms.has(vmid)) throw new Error(`VMM: VMID ${vmid} already added`);
    const vm: VmmVm = { vmid, ramBase, ramBytes, vsids: [...vsids], strtabIpa: 0 };
    this.vms.set(vmid, { vm, kernel: new IoctlKernel(this.ioctl, vm) });
  }

  /** Queue `qid` of VM `vmid`, whose vCPU exits through mailbox `mbid`. */
  addQueue(qid: number, vmid: number, mbid: number): void {
    const v = this.vms.get(vmid);
    if (v === undefined) throw new Error(`VMM: no VM ${vmid}`);
    const { vm, kernel } = v;
    const q = new TrapCmdq(this.i32, queueRegs(qid), qid, this.feat, kernel, kernel.batch, vm.ramBase, vm.ramBytes, vm.vsids);
    this.traps.set(mailboxWords(mbid), { q, vm });
  }

  /**
   * One trapped write through the mailbox at word offset `mb`; results[0] =
   * 0 or a TRAP_ERRNO. Runs to completion: the VMM's device lock is this thread.
   */
  trap(op: number, mb: number, a0: number, a1: number, res: Int32Array, r: number): void {
    const t = this.traps.get(mb);
    if (t === undefined) {
      res[r] = TRAP_ERRNO.NO_QUEUE;
      return;
    }
    const q = t.q;
    try {
      switch (op) {
        case TRAP_OP.PROD: q.writeProd(a0); break;
        case TRAP_OP.GERRORN: q.writeGerrorn(a0); break;
        case TRAP_OP.CONFIG: q.writeConfig(a0); break;
        case TRAP_OP.STRTAB_BASE: {
          const ipa = a0 >>> 0;
          if (a1 !== 0 || ipa % STE_BYTES !== 0 || ipa >= t.vm.ramBytes) {
            res[r] = TRAP_ERRNO.INVAL;
            return;
          }
          t.vm.strtabIpa = ipa;
          break;
        }
        case TRAP_OP.STATS:
          res[r + 1] = q.forwarded;
          res[r + 2] = q.handledByVmm;
          res[r + 3] = q.ioctls;
          res[r + 4] = q.steEvents;
          break;
        default:
          res[r] = TRAP_ERRNO.NOSYS;
          return;
      }
    } catch (e) {
      // The ioctl could not complete: tell the vCPU why instead of a generic -EIO.
      if (e instanceof ServerDeadError) res[r] = TRAP_ERRNO.KERNEL_DEAD;
      else if (e instanceof MailboxTimeoutError) res[r] = TRAP_ERRNO.KERNEL_TIMEOUT;
      else throw e;
      return;
    }
    res[r] = 0;
  }
}
