// Shared words of the unmap scenario: the main thread orders a guest vCPU
// worker to do N unmaps, the vCPU asks its DMA agent worker to translate the
// mapping before each one. Each side waits with a timeout.
//
// Only the mechanism under test may be runnable inside a timed unmap: the
// vCPUs of the cell and the path's server threads (kernel thread; VMM on the
// trap path). So each sample is: map and translate (the DMA agent runs),
// wait until the agent is parked in Atomics.wait, a barrier of the cell's
// vCPUs, the timed unmap, a barrier again (no vCPU's agent translates while
// another vCPU's unmap is timed). The main thread waits out the whole cell.
import { readFileSync } from 'node:fs';
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
/** vCPUs taking part in this request (the barrier's parties). */
export const V_PARTIES = 4;
/** Last request finished: its sequence number (negative = it failed; the error was posted). */
export const V_DONE = 16;

// DMA agent control words.
export const D_REQ = 32;
export const D_PAGES = 33;
/** 1: every page must fault (the check after an unmap); 0: every page must translate. */
export const D_EXPECT_FAULT = 34;
export const D_DONE = 48;
/** The request the agent answered last, stored just before it blocks in Atomics.wait for the next one. */
export const D_PARKED = 49;
export const CTL_WORDS = 64;

// Barrier words (Int32Array over `barrier`, shared by one path's vCPUs; zeroed by main before each request).
export const B_ARRIVED = 0;
export const B_AWAKE = 16;
export const BARRIER_WORDS = 32;

export const EXIT = -1;
/** Idle workers re-check for a vanished bench this often: rarely, since each check makes them runnable. */
export const IDLE_SLICE_MS = 1000;

export interface UnmapVcpuData {
  queue: QueueHandle;
  ctl: SharedArrayBuffer;
  /** BARRIER_WORDS words shared by the path's vCPUs. */
  barrier: SharedArrayBuffer;
  /** The DMA agent's OS thread ('' when it could not be told apart): its /proc state proves it parked. */
  dmaTid: string;
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

/**
 * Generation `gen` (1, 2, ... within one request) of a barrier of `parties`
 * threads: returns true once all have arrived AND all are awake, so they
 * leave together (the last arrival spins until the sleepers' wake-ups have
 * landed; nothing is timed meanwhile). False on timeout.
 */
export function barrier(b: Int32Array, parties: number, gen: number, timeoutMs: number): boolean {
  const target = parties * gen;
  const deadline = performance.now() + timeoutMs;
  if (Atomics.add(b, B_ARRIVED, 1) + 1 >= target) Atomics.notify(b, B_ARRIVED);
  for (let v = Atomics.load(b, B_ARRIVED); v < target; v = Atomics.load(b, B_ARRIVED)) {
    const left = deadline - performance.now();
    if (left <= 0) return false;
    Atomics.wait(b, B_ARRIVED, v, left);
  }
  Atomics.add(b, B_AWAKE, 1);
  for (let n = 1; Atomics.load(b, B_AWAKE) < target; n++) {
    if (n % 1024 === 0 && performance.now() > deadline) return false;
  }
  return true;
}

/** Scheduler state of thread `tid` of this process ('R' runnable, 'S' sleeping, ...), or '' when unreadable (not Linux, gone). */
export function threadState(tid: string): string {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return '';
  }
}

/**
 * Waits until the DMA agent has answered request `seq` and is blocked in
 * Atomics.wait: it announced D_PARKED = seq, and (where /proc shows it) its
 * thread sleeps. False on timeout.
 */
export function awaitParked(ctl: Int32Array, seq: number, tid: string, timeoutMs: number): boolean {
  const deadline = performance.now() + timeoutMs;
  for (let n = 1; Atomics.load(ctl, D_PARKED) !== seq; n++) {
    if (n % 1024 === 0 && performance.now() > deadline) return false;
  }
  if (tid === '') return true;
  for (let state = threadState(tid); state !== 'S' && state !== ''; state = threadState(tid)) {
    if (performance.now() > deadline) return false;
  }
  return true;
}
