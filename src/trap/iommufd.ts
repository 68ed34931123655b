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
// Partial completion: entry_num out counts the entries executed, and every
// entry below it HAS executed. Linux counts the converted prefix of the
// current block but returns before issuing it (facts §4 caveat); here the
// prefix is flushed before a rejection is reported.

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
      if (this.vsmmu.convertIommufd(u) !== 0 || decodeWords(u, this.recs[this.blockLen]!, this.feat) !== 0) {
        this.entryNum = done + this.flush();
        return -EIO;
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
    while (i < n && this.sink.execute(this.recs[i]!) === 0) i++;
    this.executed += i;
    this.sink.execute(this.sync);
    this.syncs++;
    return i;
  }
}
