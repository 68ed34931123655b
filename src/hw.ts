// The 'hw' path: a hardware VCMDQ as NVIDIA Tegra241 CMDQV gives a guest
// (Linux drivers/iommu/arm/arm-smmu-v3/tegra241-cmdqv.c). The guest writes
// commands and PROD straight into the VCMDQ page mapped into it; the SMMU
// consumes them with no exit and no kernel thread woken. Here the SMMU is the
// kernel thread's consume loop (native-free-fastpath/consumer.ts), which
// polls, never sleeping, while a hw queue is enabled, and rewrites each
// command by the queue's VINTF (src/vintf.ts): the VM's VMID forced into
// TLBIs, vSID -> pSID through the SID_MATCH/SID_REPLACE slots, as
// tegra241_vintf_hw_init and tegra241_vintf_init_vsid program them.
//
// The command set is the guest VINTF's (HYP_OWN=0): tegra241_guest_vcmdq_supports_cmd
// (TLBI_NH_ASID, TLBI_NH_VA, ATC_INV) and CMD_SYNC with CS=NONE only. Linux
// never builds anything else for this queue: arm_smmu_cmdq_build_sync_cmd
// forces CS=NONE where arm_smmu_cmdq_needs_busy_polling (a Tegra241 secondary
// CMDQ) and the guest busy-polls CONS; the commit that added it says the
// CMDQV "only supports CS_NONE in the CS field of CMD_SYNC". What the
// hardware does with CS=SEV or IRQ is not public, so this SMMU refuses it
// (CERROR_ILL, the queue stops as for any illegal command) rather than
// treating it as NONE: a driver asking for an MSI that never comes would
// otherwise wait out its timeout on a command that looked successful.
//
// `vm.openQueue({ path: 'hw' })` on a host started with `cmdqv: true`.
// Importing this module registers the path (src/index.ts does).

import { checkInt, show } from './args.ts';
import { ArgumentError } from './errors.ts';
import { GuestQueue, type QueueHandle, type QueueTransport } from './guest.ts';
import { registerQueuePath, type Vm } from './host.ts';
import { Q_CONFIG, Q_GERRORN, Q_PROD, kick } from './layout.ts';
import { VINTF_MAX_VSID, VINTF_SID_SLOTS, VINTF_WORDS, writeVintf } from './vintf.ts';

/** The guest's register writes to its VCMDQ page: plain MMIO writes the SMMU polls. */
class HwTransport implements QueueTransport {
  private readonly i32: Int32Array;
  constructor(private readonly h: QueueHandle) {
    this.i32 = new Int32Array(h.sab);
  }
  publishProd(prod: number): void {
    // No exit and no doorbell: the SMMU polls PROD while the queue is enabled.
    Atomics.store(this.i32, this.h.regs + Q_PROD, prod); // publish: PROD release
  }
  ackGerror(gerror: number): void {
    Atomics.store(this.i32, this.h.regs + Q_GERRORN, gerror); // publish: GERRORN release (polled, as PROD)
  }
  writeConfig(config: number): void {
    Atomics.store(this.i32, this.h.regs + Q_CONFIG, config); // publish: CONFIG release
    // The emulated SMMU sleeps while no hw queue is enabled (a real one idles
    // for free); an enable must wake it. A control-path write, never per command.
    kick(this.i32, this.h.ctl);
  }
}

GuestQueue.registerTransport('hw', (h) => new HwTransport(h));

/** Tegra241 VCMDQ sizes: hw_queue->length is at least 32 bytes (tegra241_vintf_alloc_lvcmdq_user). */
const MIN_LOG2SIZE = 1;

/** openQueue's checks for a hw queue, before anything is provisioned. */
function check(vm: Vm, opts: { log2size?: number; cmdset?: string }): void {
  if (!vm.host.cmdqv) throw new ArgumentError('openQueue: path', "'hw' needs a host SMMU with a Tegra241 CMDQV: startHost({ cmdqv: true })");
  if (opts.cmdset !== undefined && opts.cmdset !== 'tegra241') {
    throw new ArgumentError('openQueue: cmdset', `of a 'hw' queue is 'tegra241' (a guest VINTF's VCMDQ, tegra241_guest_vcmdq_supports_cmd), got ${show(opts.cmdset)}`);
  }
  checkInt('openQueue: log2size', opts.log2size, MIN_LOG2SIZE, vm.host.features.CMDQS, "a Tegra241 VCMDQ holds at least 2 commands (32 bytes)");
  if (vm.streams.length > VINTF_SID_SLOTS) {
    throw new ArgumentError('openQueue: path', `'hw': VM ${vm.vmid} has ${vm.streams.length} devices, a VINTF has ${VINTF_SID_SLOTS} SID_MATCH/SID_REPLACE slots`);
  }
  const big = vm.streams.find((s) => s.vsid > VINTF_MAX_VSID);
  if (big !== undefined) throw new ArgumentError('openQueue: path', `'hw': vSID 0x${big.vsid.toString(16)} of VM ${vm.vmid} does not fit a SID_MATCH register (31 bits)`);
}

/** Each VM's VINTF (word offset), programmed on its first hw queue. */
const vintfs = new WeakMap<Vm, number>();

function vintfOf(vm: Vm): number {
  let at = vintfs.get(vm);
  if (at === undefined) {
    // Host-private memory: the guest reaches its VCMDQ page, never the VINTF's configuration.
    at = vm.host.phys.alloc(VINTF_WORDS * 4, 64) >>> 2;
    writeVintf(vm.host.i32, at, vm.vmid, vm.streams);
    vintfs.set(vm, at);
  }
  return at;
}

registerQueuePath('hw', (vm, opts) => vm.createQueue({ ...opts, cmdset: 'tegra241' }, 'hw', vintfOf(vm)), check);
