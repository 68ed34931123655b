// Consumer of the bare ping-pong baselines: answers each PING with the same
// sequence number in PONG. "wait" blocks in Atomics.wait between PINGs;
// "spin" polls Atomics.load and only sleeps after idleSpinUs of silence.
// The batch-stream variant answers each PROD (PING) with CONS (PONG) after
// copying the slots between them.
import { parentPort, workerData } from 'node:worker_threads';
import { queueIdx, queueIncProd } from '../src/queue.ts';
import {
  BATCH_RING, BATCH_RING_LOG2, BATCH_SUM, PING, PONG, RELAY_US_BYTE, SLEEPING, SLOT, STOP, STREAM_SLOT_WORDS, STREAM_SLOTS, type PingPongExit,
  type PingPongWorkerData,
} from './pingpong-protocol.ts';
import { nowUs } from './stats.ts';

const data = workerData as PingPongWorkerData;
const i32 = new Int32Array(data.sab);
const spinUs = data.mode === 'spin' ? data.idleSpinUs : 0;
const notifyProducer = data.mode === 'wait';
const slotWords = data.slotWords;
const maxIdlePolls = Math.ceil(data.idleExitMs / data.pollMs);
/** The relay variant: the partner's words, and where its round trip's µs go. */
const relay = data.relay === undefined ? null : { partner: new Int32Array(data.relay), us: new Float64Array(data.sab, RELAY_US_BYTE, 1) };
let relaySeq = 0;

/**
 * The relay variant's own round trip with its partner, as the producer of a
 * wait ping-pong makes it (PING, a notify if the partner sleeps, block until
 * PONG), timed here: µs.
 */
function relayRoundTrip(r: Int32Array): number {
  const seq = ++relaySeq;
  const t0 = nowUs();
  Atomics.store(r, PING, seq);
  if (Atomics.load(r, SLEEPING) !== 0) Atomics.notify(r, PING, 1);
  for (let polls = 0; Atomics.load(r, PONG) !== seq;) {
    if (Atomics.wait(r, PONG, seq - 1, data.pollMs) === 'timed-out' && ++polls > maxIdlePolls) {
      throw new Error(`no PONG from the relay partner for ${data.idleExitMs} ms: partner gone`);
    }
  }
  return nowUs() - t0;
}

/**
 * The streaming variant: read the slot of PING `seq` (written before it). The
 * producer may have reused that slot for a later PING since, never an earlier one.
 */
function checkStreamSlot(seq: number): void {
  const at = SLOT + (seq % STREAM_SLOTS) * STREAM_SLOT_WORDS;
  for (let w = 0; w < STREAM_SLOT_WORDS; w++) {
    if (i32[at + w]! < seq) throw new Error(`stream slot word ${w} is ${i32[at + w]}, older than PING ${seq}: written after PING?`);
  }
}

/** The 3-line variant: read the slot line the producer wrote before PING (its words all hold the sequence number). */
function checkSlot(seq: number): void {
  for (let w = 0; w < slotWords; w++) {
    if (i32[SLOT + w] !== seq) throw new Error(`slot word ${w} is ${i32[SLOT + w]}, not ${seq}: written after PING?`);
  }
}

/** The consumer's private copy of a slot, as the kernel thread's (Consumer.u). */
const u = new Uint32Array(4);
let sum = 0;

/**
 * The batch stream: copy each slot of [cons, prod) once into `u`, as the
 * consumer's readSlot, and fold the copy into the running sum, published
 * beside CONS. No decode, no vSMMU, no pending bitmap: the floor of moving
 * the lines. The PING load that returned `prod` is the acquire the slots rely on.
 */
function copyRing(cons: number, prod: number): void {
  for (let pos = cons; pos !== prod; pos = queueIncProd(pos, 1, BATCH_RING_LOG2)) {
    const b = BATCH_RING + (queueIdx(pos, BATCH_RING_LOG2) << 2);
    u[0] = i32[b]!;
    u[1] = i32[b + 1]!;
    u[2] = i32[b + 2]!;
    u[3] = i32[b + 3]!;
    sum = (sum + u[0] + u[1] + u[2] + u[3]) | 0;
  }
  i32[BATCH_SUM] = sum; // plain store, published by the CONS (PONG) store after it
}

function serve(): void {
  let last = 0;
  let idlePolls = 0;
  for (;;) {
    let v = Atomics.load(i32, PING);
    if (v === last && spinUs > 0) {
      // Clock reads cost ~50 ns against ~6 ns per load: the first one comes
      // after 256 polls, so a back-to-back round trip never reads the clock.
      let start = 0;
      for (let k = 1; v === last; k++) {
        v = Atomics.load(i32, PING);
        if ((k & 255) === 0) {
          const t = nowUs();
          if (start === 0) start = t;
          else if (t - start > spinUs) break;
        }
      }
    }
    if (v === last) {
      // Raise the flag before the wait so the producer notifies; the wait
      // itself compares PING atomically, so a PING stored after the flag
      // check cannot be missed (it returns "not-equal").
      Atomics.store(i32, SLEEPING, 1);
      const r = Atomics.wait(i32, PING, last, data.pollMs);
      Atomics.store(i32, SLEEPING, 0);
      if (r === 'timed-out' && ++idlePolls > maxIdlePolls) {
        throw new Error(`no PING for ${data.idleExitMs} ms: producer gone`);
      }
      continue;
    }
    if (v === STOP) {
      if (relay !== null) {
        Atomics.store(relay.partner, PING, STOP);
        Atomics.notify(relay.partner, PING, 1);
      }
      return;
    }
    idlePolls = 0;
    if (data.batch === true) copyRing(last, v);
    else if (data.stream === true) checkStreamSlot(v);
    else checkSlot(v);
    if (relay !== null) relay.us[0] = relayRoundTrip(relay.partner);
    last = v;
    Atomics.store(i32, PONG, v);
    if (notifyProducer) Atomics.notify(i32, PONG, 1);
  }
}

try {
  serve();
} catch (e) {
  parentPort?.postMessage({ error: e instanceof Error ? e.message : String(e) } satisfies PingPongExit);
}
