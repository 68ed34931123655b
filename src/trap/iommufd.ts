// The kernel side of IOMMU_HWPT_INVALIDATE for an ARM vIOMMU
// (arm_vsmmu_cache_invalidate, smmu-facts.md §4), run by the kernel thread
// that owns the SMMU model. Pure: no threads, nothing allocated per command.
//
// The user array lives in memory the VMM writes (untrusted from the kernel's
// side, as a user pointer is): each 16-byte entry is copied once into a
// private word buffer, converted in place by the vSMMU policy (VMID forced,
// vSID -> pSID, anything else -EIO), validated, and queued into a block.
// Blocks of 63 commands (CMDQ_BATCH_ENTRIES - 1) are executed on the model,
// each closed by the kernel's own CMD_SYNC, as arm_smmu_cmdq_issue_cmdlist
// does with sync=true.
//
// Two modes (IommufdMode), differing only where a command goes wrong:
//  - 'strict' (default): entry_num out counts the entries executed, and
//    every entry below it HAS executed. A conversion failure or a converted
//    command the host SMMU finds illegal stops the array with -EIO, after
//    the converted prefix of the current block has been flushed.
//  - 'upstream-v6.18': as Linux v6.18's arm_vsmmu_cache_invalidate. A
//    conversion failure returns -EIO with entry_num at it, WITHOUT issuing
//    the converted prefix of the current block (facts §4 caveat: counted
//    but never executed). A converted command the host SMMU finds illegal
//    is issued anyway: the host driver's __arm_smmu_cmdq_skip_err turns it
//    into a CMD_SYNC, the rest of the block runs and the ioctl returns 0.

import { decodeWords } from '../codec.ts';
import type { SmmuFeatures } from '../features.ts';
import { CS, F, FIELD_COUNT, OP } from '../fields.ts';
import type { VSmmu } from '../vsmmu.ts';

export const EIO = 5;
export const EFAULT = 14;
export const EINVAL = 22;

/** CMDQ_BATCH_ENTRIES - 1: the kernel's CMD_SYNC takes the 64th slot. */
export const KERNEL_BLOCK = 63;

/** What executes host commands: the SMMU model (SmmuModel.execute). */
export interface CommandSink {
  execute(f: Uint32Array): number;
}

/** How HwptInvalidate treats a command that goes wrong (see the top of this file). */
export type IommufdMode = 'strict' | 'upstream-v6.18';

export class HwptInvalidate {
  /** entry_num out of the last call. */
  entryNum = 0;
  /** Host commands executed, and kernel CMD_SYNCs issued, over this object's life. */
  executed = 0;
  syncs = 0;
  private readonly u = new Uint32Array(4);
  private readonly recs: Uint32Array[] = [];
  private readonly sync = new Uint32Array(FIELD_COUNT);
  private blockLen = 0;

  constructor(
    private readonly vsmmu: VSmmu,
    private readonly sink: CommandSink,
    private readonly feat: SmmuFeatures,
    private readonly mode: IommufdMode = 'strict',
  ) {
    const store = new Uint32Array(KERNEL_BLOCK * FIELD_COUNT);
    for (let i = 0; i < KERNEL_BLOCK; i++) this.recs.push(store.subarray(i * FIELD_COUNT, (i + 1) * FIELD_COUNT));
    this.sync[F.OP] = OP.CMD_SYNC;
    this.sync[F.CS] = CS.NONE;
  }

  /**
   * entryNum commands of 4 u32 each start at element `at` of `array`.
   * Returns 0 or -errno; `this.entryNum` is the count executed. Never throws
   * on the array's contents.
   */
  invalidate(array: Int32Array | Uint32Array, at: number, entryNum: number): number {
    this.entryNum = 0;
    this.blockLen = 0;
    // An empty array probes data_type support (iommufd uAPI): nothing to do.
    if (!Number.isInteger(entryNum) || entryNum < 0 || at < 0 || at + entryNum * 4 > array.length) return -EINVAL;
    const u = this.u;
    let done = 0;
    for (let i = 0; i < entryNum; i++) {
      const w = at + i * 4;
      u[0] = array[w]!;
      u[1] = array[w + 1]!;
      u[2] = array[w + 2]!;
      u[3] = array[w + 3]!;
      if (this.vsmmu.convertIommufd(u) !== 0) {
        // Upstream returns before issuing the block it was filling.
        this.entryNum = this.mode === 'strict' ? done + this.flush() : done + this.blockLen;
        return -EIO;
      }
      if (decodeWords(u, this.recs[this.blockLen]!, this.feat) !== 0) {
        if (this.mode === 'strict') {
          this.entryNum = done + this.flush();
          return -EIO;
        }
        // The host SMMU stops on it with CERROR_ILL and skip_err replaces it with a CMD_SYNC: a no-op.
        this.recs[this.blockLen]!.set(this.sync);
      }
      if (++this.blockLen === KERNEL_BLOCK) {
        const n = this.flush();
        done += n;
        if (n !== KERNEL_BLOCK) {
          this.entryNum = done;
          return -EIO;
        }
      }
    }
    this.entryNum = done + this.flush();
    return this.entryNum === entryNum ? 0 : -EIO;
  }

  /**
   * Execute the queued block and close it with a CMD_SYNC. Returns how many
   * executed: a command the model refuses stops the block there (the sync
   * still completes the ones before it).
   */
  private flush(): number {
    const n = this.blockLen;
    this.blockLen = 0;
    if (n === 0) return 0;
    let i = 0;
    if (this.mode === 'strict') {
      while (i < n && this.sink.execute(this.recs[i]!) === 0) i++;
    } else {
      // A refused command is skipped (skip_err), the rest of the block still runs.
      for (; i < n; i++) this.sink.execute(this.recs[i]!);
    }
    this.executed += i;
    this.sink.execute(this.sync);
    this.syncs++;
    return i;
  }
}
