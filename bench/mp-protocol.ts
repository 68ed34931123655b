// Shared by the multi-producer scenario (bench/scenario-mp.ts) and its
// producer workers (bench/mp.worker.ts): the control words through which the
// main thread starts a cell on each worker, and the one producer loop every
// producer runs, the main thread's included.
import type { GuestQueue, QueueHandle } from '../src/guest.ts';

// Worker control words (Int32Array over `ctl`).
/** Request sequence number, bumped by main (0 = none yet; -1 = exit). */
export const P_REQ = 0;
/** Commands per call (CMD_SYNC(SEV) appended to each call). */
export const P_BATCH = 1;
/** Calls to make. */
export const P_CALLS = 2;
/** Last request finished: its sequence number (negative = it failed; the error was posted). */
export const P_DONE = 16;
export const P_CTL_WORDS = 32;

export interface MpProducerData {
  queue: QueueHandle;
  ctl: SharedArrayBuffer;
  /** Float64Array: per-call µs at [0, calls), then the call span's start and end (ms, main thread's clock) at [cap, cap + 2). */
  samples: SharedArrayBuffer;
  /** Capacity of the per-call part of `samples`. */
  cap: number;
  /** Words of up to MP_MAX_BATCH TLBI_NH_VA commands. */
  words: Uint32Array;
  /** The main thread's performance.timeOrigin: spans of all producers on one clock. */
  timeOrigin: number;
  timeoutMs: number;
}

/**
 * One producer's share of a cell: `calls` blocking calls of `batch` commands
 * plus a CMD_SYNC(SEV) each, per-call µs written to out[0, calls) and the
 * span [first call's start, last call's end] (ms, shifted by `clockShift` onto
 * the main thread's clock) to out[cap], out[cap + 1].
 */
export function produce(q: GuestQueue, words: Uint32Array, batch: number, calls: number, out: Float64Array, cap: number, clockShift: number, timeoutMs: number): void {
  const first = performance.now();
  let t0 = first;
  for (let i = 0; i < calls; i++) {
    q.submitWords(words, batch, 'sev', timeoutMs);
    const t1 = performance.now();
    out[i] = (t1 - t0) * 1000;
    t0 = t1;
  }
  out[cap] = first + clockShift;
  out[cap + 1] = t0 + clockShift;
}
