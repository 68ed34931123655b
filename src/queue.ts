// SMMUv3 queue index arithmetic (smmu-facts.md §2.2), as Linux's queue_*
// helpers in arm-smmu-v3.c. A PROD/CONS value is (wrap | idx): the index in
// bits [log2size-1:0] and the wrap flag at bit log2size. CONS also carries
// ERR in [30:24]; every helper masks it off, so callers may pass the raw
// register. Pure functions over numbers: no allocation, no state.

/** Mask of the index bits. */
export function queueIdxMask(log2size: number): number {
  return (1 << log2size) - 1;
}

/** Mask of index + wrap bits: the part of PROD/CONS that is a position. */
export function queuePosMask(log2size: number): number {
  return (2 << log2size) - 1;
}

/** Slot index of a PROD/CONS value. */
export function queueIdx(v: number, log2size: number): number {
  return v & queueIdxMask(log2size);
}

/** Wrap flag (0 or 1) of a PROD/CONS value. */
export function queueWrap(v: number, log2size: number): number {
  return (v >>> log2size) & 1;
}

/** Entries written but not yet consumed: (prod - cons) modulo two laps. */
export function queueUsed(prod: number, cons: number, log2size: number): number {
  return (prod - cons) & queuePosMask(log2size);
}

/** Index equal, wrap equal. */
export function queueEmpty(prod: number, cons: number, log2size: number): boolean {
  return ((prod ^ cons) & queuePosMask(log2size)) === 0;
}

/** Index equal, wrap different. */
export function queueFull(prod: number, cons: number, log2size: number): boolean {
  return ((prod ^ cons) & queuePosMask(log2size)) === 1 << log2size;
}

/** Free slots the producer may still fill (meaningful while PROD is at most one lap ahead of CONS). */
export function queueFree(prod: number, cons: number, log2size: number): number {
  return (1 << log2size) - queueUsed(prod, cons, log2size);
}

/** ((wrap|idx) + n) truncated to log2size+1 bits: the wrap toggles when the index passes the end. */
export function queueIncProd(v: number, n: number, log2size: number): number {
  return (v + n) & queuePosMask(log2size);
}

/**
 * Has CONS moved past `prod` (Linux queue_consumed)? True when the entry just
 * before `prod` has been consumed. Valid while the producer waits on its own
 * entries, so CONS cannot lap `prod`.
 */
export function queueConsumed(cons: number, prod: number, log2size: number): boolean {
  const ci = queueIdx(cons, log2size);
  const pi = queueIdx(prod, log2size);
  return queueWrap(cons, log2size) === queueWrap(prod, log2size) ? ci >= pi : ci < pi;
}
