// The trap-inline exit: QEMU's shape of a trapped SMMU register write. The
// vCPU's PROD write exits to the VMM on the vCPU's own thread
// (kvm_cpu_exec's KVM_EXIT_MMIO -> address_space_rw), which takes the BQL
// (prepare_mmio_access, system/physmem.c) and runs the SMMU emulation there
// (smmu_writel -> smmuv3_cmdq_consume, hw/arm/smmuv3.c), including its
// ioctl(IOMMU_HWPT_INVALIDATE); then the vCPU resumes. Here: the same Vmm and
// TrapCmdq the VMM thread runs, called synchronously by the guest's thread
// under the VMM's BQL (bql.ts), so every vCPU thread of a VMM serialises on
// one lock, as QEMU's do.
//
// Where the ioctl's kernel half runs: the SMMU model (its TLBs, its
// configuration caches) lives in the kernel thread's heap, so the ioctl is a
// mailbox request to the kernel thread, made on this thread with the BQL
// held, served there by the same TrapKernelSide as the iothread-style VMM's.
// That hop stands for syscall entry, arm_vsmmu_cache_invalidate and the
// physical SMMU consuming the batch up to its CMD_SYNC: on a real host that
// work runs on the vCPU's thread and in the SMMU, without a thread wake-up;
// here it costs one (the kernel thread may sleep). So trap-inline has one
// cross-thread round trip per trapped write where 'trap' has two (vCPU ->
// VMM thread -> kernel thread).

import type { QueueHandle } from '../guest.ts';
import { MB_ARGS } from '../layout.ts';
import type { MailboxHandle } from '../mailbox.ts';
import { Bql } from './bql.ts';
import { TRAP_COUNT_WORDS } from './cmdq.ts';
import { TRAP_ERRNO, Vmm } from './vmm.ts';

/** QueueHandle.extra of a trap-inline queue: where its VMM's shared state is. */
export interface InlineTrapExtra {
  readonly inline: {
    /** Word offset of the VMM's BQL (shared by every queue, and so every vCPU, of the VM). */
    readonly bql: number;
    /** Word offset of the VM's STRTAB_BASE (VMM state, written under the BQL). */
    readonly strtab: number;
    /** Word offset of this queue's TRAP_COUNT_WORDS counters. */
    readonly counts: number;
    /** The VMM's ioctl mailbox on the kernel thread: one per VMM, used only under the BQL. */
    readonly ioctl: MailboxHandle;
    readonly ramBase: number;
    readonly ramBytes: number;
    readonly vsids: readonly number[];
  };
  /** Longest a trapped write may take, BQL wait included (default 5000 ms). */
  readonly timeoutMs?: number;
}

/** The key this thread's Vmm knows its one queue by (an exit per queue, as the VMM thread's mailboxes). */
const EXIT = 0;

/** A trapped write run on the calling thread: same args/results/call shape as the VMM thread's mailbox. */
export class InlineExit {
  readonly args = new Int32Array(MB_ARGS);
  readonly results = new Int32Array(MB_ARGS);
  private readonly vmm: Vmm;
  private readonly bql: Bql;

  constructor(h: QueueHandle, x: InlineTrapExtra['inline']) {
    const i32 = new Int32Array(h.sab);
    this.bql = new Bql(i32, x.bql);
    // No heartbeat to keep: this thread is the vCPU, and nobody waits on it.
    this.vmm = new Vmm(i32, h.features, [x.ioctl], -1);
    this.vmm.addVm(h.vmid, x.ramBase, x.ramBytes, x.vsids, x.strtab);
    this.vmm.addQueue(h.qid, h.vmid, EXIT, i32.subarray(x.counts, x.counts + TRAP_COUNT_WORDS));
  }

  /** Take the BQL, emulate the write, release it; returns results[0] (0 or a TRAP_ERRNO). */
  call(op: number, timeoutMs: number): number {
    if (!this.bql.lock(timeoutMs)) return TRAP_ERRNO.BQL_TIMEOUT;
    try {
      this.vmm.trap(op, EXIT, this.args[0]!, this.args[1]!, this.results, 0);
    } finally {
      this.bql.unlock();
    }
    return this.results[0]!;
  }
}
