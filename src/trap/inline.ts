// Host side of the trap-inline path (QEMU's shape, exit.ts): no VMM thread.
// Each VM's VMM is state in shared memory that every vCPU thread runs the
// emulation over: its BQL and STRTAB_BASE words, each queue's counters, and
// one ioctl mailbox on the kernel thread, used under the BQL. The queue's
// entries and registers are a vCMDQ's, so GuestQueue drives it unchanged;
// `vm.openQueue({ path: 'trap-inline' })` once this module is imported
// (src/index.ts does). The queue's liveness is its VM's kernel thread's: it is
// the only server a trapped write waits on.

import type { QueueHandle } from '../guest.ts';
import { registerQueuePath, type Vm } from '../host.ts';
import { CONFIG_EN, LINE_WORDS } from '../layout.ts';
import type { MailboxHandle } from '../mailbox.ts';
import type { InlineTrapExtra } from './exit.ts';
import { TrapTransport } from './transport.ts';

/** A VMM's shared words: the BQL alone on its line (every trapped write takes it), STRTAB_BASE on the next. */
const VMM_BQL = 0;
const VMM_STRTAB = LINE_WORDS;
const VMM_WORDS = 2 * LINE_WORDS;

interface InlineVmm {
  /** Word offset of the VMM's shared words. */
  words: number;
  ioctl: MailboxHandle;
}

/** Each VM's VMM, made on its first trap-inline queue. */
const vmms = new WeakMap<Vm, Promise<InlineVmm>>();

function vmmOf(vm: Vm): Promise<InlineVmm> {
  let p = vmms.get(vm);
  if (p === undefined) {
    // Host-private memory: the VMM's own, out of the guest's reach.
    const words = vm.host.phys.alloc(VMM_WORDS * 4, 64) >>> 2;
    // On the VM's kernel thread: its ioctls reach the SMMU model that serves its queues.
    p = vm.host.mailbox(undefined, vm.kthread).then((ioctl) => ({ words, ioctl }));
    // A failed mailbox is not remembered: the next open tries again.
    p.catch(() => vmms.delete(vm));
    vmms.set(vm, p);
  }
  return p;
}

registerQueuePath('trap-inline', async (vm, opts) => {
  const host = vm.host;
  const vmm = await vmmOf(vm);
  // This queue's counters, on a line of their own (the vCPU that owns the queue writes them per trapped write).
  const counts = host.phys.alloc(LINE_WORDS * 4, 64) >>> 2;
  const { qid, regs, log2size, baseIpa } = vm.allocQueueRegs(opts);
  const extra: InlineTrapExtra = {
    inline: {
      bql: vmm.words + VMM_BQL, strtab: vmm.words + VMM_STRTAB, counts, ioctl: vmm.ioctl,
      ramBase: vm.ramBase, ramBytes: vm.ramBytes, vsids: vm.streams.map((s) => s.vsid),
    },
  };
  const handle: QueueHandle = {
    path: 'trap-inline', sab: host.sab, ctl: host.kthreadCtl(vm.kthread), qid, regs, log2size,
    basePa: vm.ramBase + baseIpa, baseIpa, vmid: vm.vmid, features: host.features, extra,
  };
  // The guest enables its queue: a trapped CONFIG write, like every register write on this path.
  new TrapTransport(handle).writeConfig(CONFIG_EN);
  return handle;
});
