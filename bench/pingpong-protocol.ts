// Shared-memory words of the bare ping-pong baselines, used by both threads.
// PING and PONG sit 128 bytes apart (as in node-latency-floor.md §1-2) so the
// two directions do not share a cache line; SLEEPING has a line of its own.
// SLOT is the 3-line variant's "command" line (bench/scenario-anatomy.ts):
// written by the producer before PING and read by the consumer before PONG,
// as a doorbell round trip moves a slot line and PROD one way and CONS back.

export const PING = 0;
export const SLEEPING = 16;
export const PONG = 32;
export const SLOT = 64;
/** Words of SLOT the 3-line variant writes and reads: two 16-byte commands (a TLBI and its CMD_SYNC). */
export const SLOT_WORDS = 8;
/**
 * The streaming variant's slots: the SLOT line as a ring of 4 slots of one
 * 16-byte command, publish `seq` writing slot seq % STREAM_SLOTS, as a
 * batch-1 stream fills a queue's slots, 4 to a line.
 */
export const STREAM_SLOTS = 4;
export const STREAM_SLOT_WORDS = 4;
export const WORDS = 80;
/**
 * The relay variant (bench/sim-node-local.ts's hop between two threads of
 * one CPU): its SAB is RELAY_BYTES long, the Float64 at RELAY_US_BYTE holding
 * the µs of the consumer's own round trip with its relay partner for the
 * last PING.
 */
export const RELAY_US_BYTE = WORDS * 4;
export const RELAY_BYTES = RELAY_US_BYTE + 8;
/**
 * The batch-stream variant (startBatchStream, the anatomy's batch floor):
 * PING is PROD and PONG is CONS, queue positions (wrap|idx, src/queue.ts) of
 * a ring of 2^BATCH_RING_LOG2 16-byte slots at word BATCH_RING (a line of its
 * own past WORDS); the producer publishes BATCH_STREAM_BATCH slots per PROD,
 * the consumer copies each slot once and publishes CONS per PROD it sees.
 * BATCH_SUM, beside CONS (same line, same writer), is the consumer's running
 * sum of every word it copied: the producer checks it, so a floor that skips
 * its reads cannot pass for a fast one.
 */
export const BATCH_RING_LOG2 = 10;
export const BATCH_STREAM_BATCH = 64;
export const BATCH_SUM = PONG + 1;
export const BATCH_RING = 128;
export const BATCH_WORDS = BATCH_RING + (4 << BATCH_RING_LOG2);
/** PING value that tells the consumer to exit (sequence numbers start at 1). */
export const STOP = -1;

export type PingPongMode = 'wait' | 'spin';

export interface PingPongWorkerData {
  sab: SharedArrayBuffer;
  mode: PingPongMode;
  /**
   * spin mode: how long the consumer spins on an unchanged PING before it
   * sleeps. Far above a round trip (~1 µs) so it never sleeps while the
   * producer is sampling, small enough that it stops burning one of the two
   * cores while the harness runs the other paths of a round.
   */
  idleSpinUs: number;
  /** Bound of each Atomics.wait; the consumer re-checks PING and its idle limit after it. */
  pollMs: number;
  /** The consumer gives up (and reports it) after this long without a PING, so it can never outlive its producer. */
  idleExitMs: number;
  /** 0: the bare 2-line ping-pong; SLOT_WORDS: the consumer reads (and checks) the SLOT words before answering. */
  slotWords: number;
  /** The streaming variant: PINGs come without waiting for PONGs, each with its slot of the SLOT ring (STREAM_SLOTS). */
  stream?: boolean;
  /**
   * The relay variant: before answering each PING, a wait-mode round trip
   * of its own with the consumer serving this SAB (a second wait-mode
   * consumer, placed on the same CPU), timed and stored at RELAY_US_BYTE; a
   * STOP is passed on to it.
   */
  relay?: SharedArrayBuffer;
  /** The batch-stream variant: PING/PONG are PROD/CONS of the ring at BATCH_RING (BATCH_RING_LOG2). */
  batch?: boolean;
}

/** Posted by the consumer when it leaves for any reason other than STOP. */
export interface PingPongExit {
  error: string;
}
