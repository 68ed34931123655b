// The VMM of the trap path, minus the thread: the per-VM state a VMM keeps
// (its vSMMU's devices, the guest's STRTAB_BASE, its map of guest RAM), the
// trapped register writes it serves, and the ioctls it makes on the kernel
// thread through a mailbox. Two shapes run it: vmm.worker.ts in a thread of
// its own (the iothread-style design, 'trap'), and each vCPU thread itself
// under the VMM's BQL (QEMU's shape, 'trap-inline', exit.ts). The ops and
// the guest-side transport are here so every side shares one definition.

import type { SmmuFeatures } from '../features.ts';
import { CTL_HEARTBEAT, MB_PAYLOAD_BYTES, VMM_CTL, queueRegs } from '../layout.ts';
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
  /** trap-inline: the VMM's BQL was not released in time (a vCPU thread stuck or killed holding it). */
  BQL_TIMEOUT: -35,
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

/** A VM's STRTAB_BASE kept in a word of shared memory, so every thread running its VMM sees the guest's last write. */
function sharedStrtab(vm: Omit<VmmVm, 'strtabIpa'>, i32: Int32Array, word: number): VmmVm {
  return {
    ...vm,
    get strtabIpa(): number {
      return Atomics.load(i32, word);
    },
    set strtabIpa(ipa: number) {
      Atomics.store(i32, word, ipa); // publish: STRTAB_BASE (written under the BQL; read by whichever vCPU's CFGI_STE comes next)
    },
  };
}

/** Control messages host -> VMM thread (answered {id, ok, error?}). */
export type VmmCtrl =
  | { id: number; op: 'addVm'; vmid: number; ramBase: number; ramBytes: number; vsids: number[]; kthread: number }
  | { id: number; op: 'addQueue'; qid: number; vmid: number; mbid: number };

export class Vmm {
  private readonly vms = new Map<number, { vm: VmmVm; kernel: IoctlKernel }>();
  /** Trap mailbox (word offset) -> the queue it exits for, and its VM. */
  private readonly traps = new Map<number, { q: TrapCmdq; vm: VmmVm }>();
  /** One ioctl channel per kernel thread. */
  private readonly ioctls: MailboxClient[];

  /**
   * `ioctlMailboxes`: one per kernel thread, a VM's ioctls go to the thread
   * that serves it. `beat`: word offset of the HEARTBEAT the VMM bumps while
   * it waits for an ioctl (its VMM thread's; -1 for none when the caller is a
   * vCPU thread).
   */
  constructor(private readonly i32: Int32Array, private readonly feat: SmmuFeatures, ioctlMailboxes: readonly MailboxHandle[], beat = VMM_CTL + CTL_HEARTBEAT) {
    // While an ioctl is in the kernel the VMM is alive: its heartbeat goes on, so vCPUs waiting on it do not give up.
    this.ioctls = ioctlMailboxes.map((h) => new MailboxClient(h, beat));
  }

  /**
   * VM `vmid`, whose vSMMU lives on kernel thread `kthread` (its ioctls go
   * there). `strtabWord`: keep the VM's STRTAB_BASE in this shared word (-1:
   * in this object, one VMM thread).
   */
  addVm(vmid: number, ramBase: number, ramBytes: number, vsids: readonly number[], strtabWord = -1, kthread = 0): void {
    if (this.vms.has(vmid)) throw new Error(`VMM: VMID ${vmid} already added`);
    const ioctl = this.ioctls[kthread];
    if (ioctl === undefined) throw new Error(`VMM: no ioctl channel to kernel thread ${kthread}`);
    const base = { vmid, ramBase, ramBytes, vsids: [...vsids] };
    const vm: VmmVm = strtabWord < 0 ? { ...base, strtabIpa: 0 } : sharedStrtab(base, this.i32, strtabWord);
    this.vms.set(vmid, { vm, kernel: new IoctlKernel(ioctl, vm) });
  }

  /** Queue `qid` of VM `vmid`, whose vCPU exits through `exit` (a mailbox's word offset); `counts` as TrapCmdq's. */
  addQueue(qid: number, vmid: number, exit: number, counts?: Int32Array): void {
    const v = this.vms.get(vmid);
    if (v === undefined) throw new Error(`VMM: no VM ${vmid}`);
    const { vm, kernel } = v;
    const q = new TrapCmdq(this.i32, queueRegs(qid), qid, this.feat, kernel, kernel.batch, vm.ramBase, vm.ramBytes, vm.vsids, counts);
    this.traps.set(exit, { q, vm });
  }

  /**
   * One trapped write through exit `mb` (the word offset of the queue's
   * mailbox); results[0] = 0 or a TRAP_ERRNO. Runs to completion: the VMM's
   * device lock is its thread, or the BQL its caller holds (trap-inline).
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
