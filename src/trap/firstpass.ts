// The VMM's first pass over the trapped, interleaved CMDQ (issue 5; the seed
// thread's "userspace takes a first pass over the cmdq and then sends what it
// didn't handle to the kernel"). Pure: no threads, no I/O, nothing allocated
// per command. Guest queue memory is untrusted, so each 16-byte command is
// read ONCE into a private copy and only the copy is decoded and kept.
//
// One call walks one segment from CONS towards PROD and stops at the first of:
//   - a CMD_SYNC (included: the segment ends the guest's batch),
//   - PROD,
//   - a command the guest may not issue (CONS must stay on it, CERROR_ILL),
//   - a CFGI_STE / CFGI_STE_RANGE: the VMM installs the new configuration
//     itself, and must do so AFTER the kernel has executed the invalidations
//     queued before it, and BEFORE anything after it runs; stopping here lets
//     the caller flush the batch first, so a later rejection can never leave a
//     newer command's effect behind (spec 4.1.3: newer commands have no effect),
//   - the batch buffer being full (the caller forwards and continues).
// Kernel-only commands are collected (as the guest wrote them: the kernel's
// iommufd conversion rewrites VMID/SID, the VMM must not be trusted to) into
// one batch per segment; commands the VMM owns but that need no action
// (PREFETCH_*, PRI_RESP, RESUME, STALL_TERM) are consumed here and counted.

import { decodeWords, illReason, readSlot } from '../codec.ts';
import type { SmmuFeatures } from '../features.ts';
import { F, FIELD_COUNT, OP } from '../fields.ts';
import { queueIdx, queueIncProd } from '../queue.ts';

/** Why a segment ended. */
export const STOP = {
  /** Reached PROD: everything published was consumed. */
  PROD: 0,
  /** Ended with a CMD_SYNC (its decoded fields are in `sync`). */
  SYNC: 1,
  /** The command at `end` is illegal for a guest (`ill` holds the reason). */
  ILL: 2,
  /** The command at `end` is a CFGI_STE/CFGI_STE_RANGE (decoded in `cfgi`) for the VMM to handle. */
  CFGI_STE: 3,
  /** The batch buffer is full; `end` is the first command not yet looked at. */
  FULL: 4,
} as const;

/** ILL reason of a well-formed command that a guest's vSMMU does not offer (stage 2, EL2, MPAM). */
export const ILL_NOT_FOR_GUEST = 0x1000;

/** Text for a FirstPass `ill` code; error path only. */
export function firstPassIllText(code: number, u: Uint32Array): string {
  if (code !== ILL_NOT_FOR_GUEST) return illReason(code, u);
  return `opcode 0x${(u[0]! & 0xff).toString(16).padStart(2, '0')} is not offered to a guest: its vSMMU has stage 1 only (no stage 2, EL2 or MPAM commands)`;
}

/** Kernel-only commands: forwarded through IOMMU_HWPT_INVALIDATE. */
export function isKernelOp(op: number): boolean {
  return op === OP.TLBI_NH_ALL || op === OP.TLBI_NH_ASID || op === OP.TLBI_NH_VA || op === OP.TLBI_NH_VAA
    || op === OP.TLBI_NSNH_ALL || op === OP.ATC_INV || op === OP.CFGI_CD || op === OP.CFGI_CD_ALL;
}

/** Commands the VMM accepts and consumes without action in this emulation. */
function isVmmNoop(op: number): boolean {
  return op === OP.PREFETCH_CONFIG || op === OP.PREFETCH_ADDR || op === OP.PRI_RESP
    || op === OP.RESUME || op === OP.STALL_TERM;
}

/** Preallocated result of one segment, reused for every call. */
export class FirstPass {
  /** Private copies of the kernel-only commands, 4 words each, as the guest wrote them. */
  readonly batch: Uint32Array;
  /** Queue position (wrap|index) each batched command was read from, to map a rejection back to CONS. */
  readonly batchPos: Uint32Array;
  batchLen = 0;
  /** Commands consumed by the VMM itself in this segment (no-op kinds; the CFGI_STE is counted by its handler). */
  handledByVmm = 0;
  stop: number = STOP.PROD;
  /** Position the segment stopped at: after the CMD_SYNC for SYNC; on the stopping command for ILL/CFGI_STE. */
  end = 0;
  /** ILL reason code of the stopping command (decodeWords code, or ILL_NOT_FOR_GUEST). */
  ill = 0;
  /** The stopping command's private copy (ILL: for the error message; CFGI_STE/SYNC: its words). */
  readonly stopWords = new Uint32Array(4);
  /** Decoded fields of the CMD_SYNC (STOP.SYNC) or the CFGI_STE[_RANGE] (STOP.CFGI_STE). */
  readonly fields = new Uint32Array(FIELD_COUNT);
  readonly capacity: number;
  private readonly u = new Uint32Array(4);

  /**
   * `batch` receives the copies: pass the ioctl's payload area so the
   * private copy is also the array handed to the kernel (no second copy).
   */
  constructor(batch: Uint32Array) {
    const capacity = batch.length >>> 2;
    if (capacity < 1) throw new RangeError(`the batch buffer must hold at least one command, got ${batch.length} words`);
    this.capacity = capacity;
    this.batch = batch;
    this.batchPos = new Uint32Array(capacity);
  }

  /**
   * Walk from `cons` towards `prod` (both wrap|index values of a queue of
   * 2^log2size 16-byte entries held in `queue`, one u32 per element) and fill
   * this record. Never throws on guest data.
   */
  run(queue: Int32Array | Uint32Array, log2size: number, cons: number, prod: number, feat: SmmuFeatures): void {
    const u = this.u;
    const f = this.fields;
    this.batchLen = 0;
    this.handledByVmm = 0;
    this.ill = 0;
    let pos = cons;
    while (pos !== prod) {
      if (this.batchLen === this.capacity) return this.finish(STOP.FULL, pos);
      readSlot(queue, queueIdx(pos, log2size), u);
      const ill = decodeWords(u, f, feat);
      if (ill !== 0) {
        this.ill = ill;
        return this.keep(STOP.ILL, pos);
      }
      const op = f[F.OP]!;
      if (isKernelOp(op)) {
        const n = this.batchLen++;
        this.batch.set(u, n * 4);
        this.batchPos[n] = pos;
      } else if (op === OP.CMD_SYNC) {
        return this.keep(STOP.SYNC, queueIncProd(pos, 1, log2size));
      } else if (op === OP.CFGI_STE || op === OP.CFGI_STE_RANGE) {
        return this.keep(STOP.CFGI_STE, pos);
      } else if (isVmmNoop(op)) {
        this.handledByVmm++;
      } else {
        // Stage-2 and EL2 TLBIs, CFGI_VMS_PIDM: legal on the host's SMMU, but
        // the vSMMU a nested guest sees offers stage 1 only.
        this.ill = ILL_NOT_FOR_GUEST;
        return this.keep(STOP.ILL, pos);
      }
      pos = queueIncProd(pos, 1, log2size);
    }
    this.finish(STOP.PROD, pos);
  }

  private keep(stop: number, end: number): void {
    this.stopWords.set(this.u);
    this.finish(stop, end);
  }

  private finish(stop: number, end: number): void {
    this.stop = stop;
    this.end = end;
  }
}
