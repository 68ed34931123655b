// Shared words of the unmap scenario: the main thread orders a guest vCPU
// worker to do N unmaps, the vCPU asks its DMA agent worker to translate the
// mapping before each one. Each side waits with a timeout.
import type { QueueHandle } from '../src/guest.ts';
import type { MailboxHandle } from '../src/mailbox.ts';

// vCPU control words (Int32Array over `ctl`).
/** Request sequence number, bumped by main (0 = none yet; -1 = exit). */
export const V_REQ = 0;
/** Pages (4K) per unmap. */
export const V_PAGES = 1;
/** Unmaps to do. */
export const V_COUNT = 2;
/** First sample index to write. */
export const V_FROM = 3;
/** Last request finished: its sequence number (negative = it failed; the error was posted). */
export const V_DONE = 16;

// DMA agent control words.
export const D_REQ = 32;
export const D_PAGES = 33;
/** 1: every page must fault (the check after an unmap); 0: every page must translate. */
export const D_EXPECT_FAULT = 34;
export const D_DONE = 48;
export const CTL_WORDS = 64;

export const EXIT = -1;

export interface UnmapVcpuData {
  queue: QueueHandle;
  ctl: SharedArrayBuffer;
  /** Float64Array of µs samples, written at [from, from + count). */
  samples: SharedArrayBuffer;
  asid: number;
  /** First IOVA of this vCPU's window. */
  iova: number;
  /** Host-memory byte address of each window page's leaf descriptor (lo word; hi at +4) and its mapped value. */
  descPa: number[];
  descLo: number[];
  descHi: number[];
  timeoutMs: number;
}

export interface DmaAgentData {
  ctl: SharedArrayBuffer;
  dma: MailboxHandle;
  psid: number;
  iova: number;
  timeoutMs: number;
}

/** Waits until ctl[index] === want (or a negative failure); false on timeout. */
export function awaitWord(ctl: Int32Array, index: number, want: number, timeoutMs: number): boolean {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = Atomics.load(ctl, index);
    if (v === want || v === -want) return true;
    const left = deadline - performance.now();
    if (left <= 0) return false;
    Atomics.wait(ctl, index, v, left);
  }
}

/** Publish request `seq` at `reqIndex` and wake the worker. */
export function post(ctl: Int32Array, reqIndex: number, seq: number): void {
  Atomics.store(ctl, reqIndex, seq);
  Atomics.notify(ctl, reqIndex);
}
