// The three baselines as real worker pairs, producer = this thread:
// bare Atomics wait/wait ping-pong, bare spin ping-pong, postMessage echo.
import { Worker } from 'node:worker_threads';
import { workerUrl } from '../src/worker-url.ts';
import { startThreads } from './affinity.ts';
import { ArgumentError } from '../src/errors.ts';
import { queueFree, queueIdx, queueIncProd } from '../src/queue.ts';
import {
  BATCH_RING, BATCH_RING_LOG2, BATCH_STREAM_BATCH, BATCH_SUM, BATCH_WORDS, PING, PONG, RELAY_BYTES, RELAY_US_BYTE, SLEEPING, SLOT, STOP, STREAM_SLOT_WORDS,
  STREAM_SLOTS, WORDS, type PingPongExit, type PingPongMode, type PingPongWorkerData,
} from './pingpong-protocol.ts';
import { nowUs } from './stats.ts';
import { BenchTimeoutError, type BaselinePathName, type Params } from './types.ts';

/** A thing the harness can time: fills out[from, from + count) with round-trip µs. */
export interface LatencyPath {
  readonly name: string;
  readonly params: Params;
  sample(out: Float64Array, from: number, count: number): void | Promise<void>;
  /** CPU clock charged to this path, µs (e.g. its kernel thread's); absent = the whole process's. */
  cpuUs?(): number;
  close(): Promise<void>;
}

export interface BaselineOptions {
  /** Longest a single round trip may take before it is reported as a failure. */
  timeoutMs: number;
  /**
   * Spin ping-pong: how long its consumer spins on an unchanged PING before
   * it sleeps (default IDLE_SPIN_US). A rotation that shares the server CPU
   * with a kernel thread wants it as short as that thread's spin budget, so
   * the idle consumer leaves the CPU before the next path's samples.
   */
  idleSpinUs?: number;
}

const IDLE_SPIN_US = 2000;
const POLL_MS = 50;
const IDLE_EXIT_MS = 120_000;

function onceWithin<T>(what: string, ms: number, start: (resolve: (v: T) => void, reject: (e: Error) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new BenchTimeoutError(`${what}: no answer within ${ms} ms`)), ms);
    start(
      (v) => { clearTimeout(timer); resolve(v); },
      (e) => { clearTimeout(timer); reject(e); },
    );
  });
}

/** A consumer worker, placed on the server CPU (bench/affinity.ts). */
async function startWorker(file: string, workerData: unknown, timeoutMs: number): Promise<Worker> {
  const { value } = await startThreads('server', async () => {
    const w = new Worker(workerUrl(file), { workerData });
    await onceWithin<void>(`${file} start`, timeoutMs, (resolve, reject) => {
      w.once('online', () => resolve());
      w.once('error', reject);
    });
    return w;
  });
  return value;
}

/** Waits for the worker to exit on its own, terminating it if it does not. */
async function joinWorker(w: Worker, timeoutMs: number): Promise<void> {
  try {
    await onceWithin<void>('worker exit', timeoutMs, (resolve) => w.once('exit', () => resolve()));
  } catch {
    await w.terminate();
  }
}

class PingPong implements LatencyPath {
  readonly params: Params;
  protected readonly i32: Int32Array;
  protected seq = 0;
  private failure: string | undefined;

  constructor(
    readonly name: BaselinePathName,
    private readonly mode: PingPongMode,
    private readonly worker: Worker,
    sab: SharedArrayBuffer,
    protected readonly timeoutMs: number,
    /** Words of the slot line written before each PING (0: the bare 2-line shape). */
    private readonly slotWords: number,
  ) {
    this.i32 = new Int32Array(sab);
    this.params = mode === 'spin' ? { consumer: 'spin', producer: 'spin' } : { consumer: 'wait', producer: 'wait' };
    if (slotWords > 0) this.params = { ...this.params, lines: 3 };
    worker.on('message', (m: PingPongExit) => { this.failure = m.error; });
    worker.on('error', (e) => { this.failure = e.message; });
  }

  sample(out: Float64Array, from: number, count: number): void {
    const i32 = this.i32;
    const spin = this.mode === 'spin';
    const slotWords = this.slotWords;
    const end = from + count;
    for (let i = from; i < end; i++) {
      const seq = ++this.seq;
      const t0 = nowUs();
      for (let w = 0; w < slotWords; w++) i32[SLOT + w] = seq; // plain stores, published by the PING store as a slot by PROD
      Atomics.store(i32, PING, seq);
      if (Atomics.load(i32, SLEEPING) !== 0) Atomics.notify(i32, PING, 1);
      if (spin) this.spinFor(seq, t0);
      else this.waitFor(seq);
      out[i] = nowUs() - t0;
    }
  }

  private waitFor(seq: number): void {
    while (Atomics.load(this.i32, PONG) !== seq) {
      if (Atomics.wait(this.i32, PONG, seq - 1, this.timeoutMs) === 'timed-out' && Atomics.load(this.i32, PONG) !== seq) {
        this.timedOut();
      }
    }
  }

  protected spinFor(seq: number, t0: number): void {
    const limitUs = this.timeoutMs * 1000;
    // Look at the clock every 4096 polls (~25 µs): a round trip that answers
    // in ~1 µs never pays for it.
    for (let k = 1; Atomics.load(this.i32, PONG) !== seq; k++) {
      if ((k & 4095) === 0 && nowUs() - t0 > limitUs) this.timedOut();
    }
  }

  protected timedOut(): never {
    throw new BenchTimeoutError(`${this.name}: no PONG within ${this.timeoutMs} ms${this.failure ? ` (consumer: ${this.failure})` : ''}`);
  }

  async close(): Promise<void> {
    Atomics.store(this.i32, PING, STOP);
    Atomics.notify(this.i32, PING, 1);
    await joinWorker(this.worker, this.timeoutMs);
  }
}

/**
 * A ping-pong pair. `slotWords` > 0 gives it the shape of a doorbell round
 * trip (PROD + slot + CONS): the producer writes that many words of a slot
 * line before PING, the consumer reads them before PONG.
 */
/** Publishes per sample of the stream variant: a batch-1 throughput iteration's (bench/scenarios.ts throughput, batch 1). */
export const STREAM_ITEMS = 64;

/**
 * The spin pair streaming: the producer publishes PING after PING without
 * waiting for each PONG, each after writing its slot (a 16-byte command, 4
 * to the SLOT line, STREAM_SLOTS), while the consumer reads the slot of
 * every PING it sees and answers it. The producer reads nothing the
 * consumer writes per publish, as a guest's batch-1 stream does
 * (GuestQueue.tryPublish's space check reads its cached CONS, and a polled
 * queue's publish is the PROD store alone): PING's line and the slot line
 * bounce, with no work around them. A sample is µs per publish over
 * STREAM_ITEMS publishes (the last PONG awaited after the clock read, so a
 * sample's wait is not in it).
 */
class PingStream extends PingPong {
  override readonly params: Params = { consumer: 'spin', producer: 'spin', shape: 'stream', per: 'publish' };

  override sample(out: Float64Array, from: number, count: number): void {
    const i32 = this.i32;
    for (let i = from; i < from + count; i++) {
      const t0 = nowUs();
      for (let k = 0; k < STREAM_ITEMS; k++) {
        const seq = ++this.seq;
        const slot = SLOT + (seq % STREAM_SLOTS) * STREAM_SLOT_WORDS;
        for (let w = 0; w < STREAM_SLOT_WORDS; w++) i32[slot + w] = seq; // plain stores, published by the PING store
        Atomics.store(i32, PING, seq);
        if (Atomics.load(i32, SLEEPING) !== 0) Atomics.notify(i32, PING, 1);
      }
      out[i] = (nowUs() - t0) / STREAM_ITEMS;
      this.spinFor(this.seq, t0);
    }
  }
}

/** The bare spin pair in its streaming shape (PingStream): the line crossings a producer pays per publish while a poller answers each. */
export async function startPingStream(opts: BaselineOptions): Promise<LatencyPath> {
  const sab = new SharedArrayBuffer(WORDS * 4);
  const data: PingPongWorkerData = { sab, mode: 'spin', idleSpinUs: opts.idleSpinUs ?? IDLE_SPIN_US, pollMs: POLL_MS, idleExitMs: IDLE_EXIT_MS, slotWords: 0, stream: true };
  const w = await startWorker('pingpong.worker.js', data, opts.timeoutMs);
  return new PingStream('atomics-spin', 'spin', w, sab, opts.timeoutMs, 0);
}

/**
 * The relay pair: each PING goes to a wait-mode consumer which, before
 * answering, makes a wait-mode round trip of its own with a second consumer
 * placed on the same (server) CPU, as the iothread VMM's ioctl reaches the
 * kernel thread beside it. A sample is that inner round trip between two
 * threads of one CPU, timed by the relaying thread; the outer one, across
 * the CPUs, only drives it.
 */
class RelayPingPong extends PingPong {
  override readonly params: Params = { consumer: 'wait', producer: 'wait', cpus: 'same' };
  private readonly relayUs: Float64Array;
  constructor(worker: Worker, private readonly partner: Worker, sab: SharedArrayBuffer, timeoutMs: number) {
    super('atomics-wait', 'wait', worker, sab, timeoutMs, 0);
    this.relayUs = new Float64Array(sab, RELAY_US_BYTE, 1);
  }

  override sample(out: Float64Array, from: number, count: number): void {
    for (let i = from; i < from + count; i++) {
      super.sample(out, i, 1);
      out[i] = this.relayUs[0]!;
    }
  }

  override async close(): Promise<void> {
    // The relaying consumer passes the STOP on to its partner, which may exit before the relay does: listen first.
    const partnerGone = joinWorker(this.partner, this.timeoutMs);
    await super.close();
    await partnerGone;
  }
}

/** The wait ping-pong between two threads of the server CPU (RelayPingPong). */
export async function startRelayPingPong(opts: BaselineOptions): Promise<LatencyPath> {
  const partnerSab = new SharedArrayBuffer(WORDS * 4);
  const wait = { mode: 'wait', idleSpinUs: 0, pollMs: POLL_MS, idleExitMs: IDLE_EXIT_MS, slotWords: 0 } as const;
  const partner = await startWorker('pingpong.worker.js', { ...wait, sab: partnerSab } satisfies PingPongWorkerData, opts.timeoutMs);
  const sab = new SharedArrayBuffer(RELAY_BYTES);
  try {
    const w = await startWorker('pingpong.worker.js', { ...wait, sab, relay: partnerSab } satisfies PingPongWorkerData, opts.timeoutMs);
    return new RelayPingPong(w, partner, sab, opts.timeoutMs);
  } catch (e) {
    await partner.terminate();
    throw e;
  }
}

/** Batches per sample of the batch stream: a batch-64 throughput iteration's (bench/scenario-anatomy.ts, bench/probe.ts). */
export const BATCH_STREAM_BATCHES = 64;
const BATCH_STREAM_CMDS = BATCH_STREAM_BATCHES * BATCH_STREAM_BATCH;

/**
 * The spin pair as a bare batch-64 stream, the anatomy's batch floor: the
 * producer copies a batch's commands (4 words each, as GuestQueue's
 * writeBatch) into the ring and publishes PROD once per batch, after waiting
 * for space as a guest does (it reads CONS); the consumer copies each slot
 * once and publishes CONS per PROD it sees; the sample ends when CONS reaches
 * the last PROD (a CMD_SYNC's wait). No protocol (no reservation, no pending
 * bitmap, no decode): the line crossings and copies a batch cannot avoid. A
 * sample is µs per command over BATCH_STREAM_BATCHES batches.
 */
class BatchStream extends PingPong {
  override readonly params: Params = { consumer: 'spin', producer: 'spin', shape: 'batch-stream', batch: BATCH_STREAM_BATCH, per: 'command' };
  private prod = 0;
  /** What BATCH_SUM must hold once CONS reaches `prod`: the sum of every word published. */
  private sum = 0;
  private readonly batchSum: number;

  constructor(worker: Worker, sab: SharedArrayBuffer, timeoutMs: number, private readonly words: Uint32Array) {
    super('atomics-spin', 'spin', worker, sab, timeoutMs, 0);
    let s = 0;
    for (let w = 0; w < 4 * BATCH_STREAM_BATCH; w++) s = (s + words[w]!) | 0;
    this.batchSum = s;
  }

  override sample(out: Float64Array, from: number, count: number): void {
    const i32 = this.i32;
    const words = this.words;
    for (let i = from; i < from + count; i++) {
      const t0 = nowUs();
      let prod = this.prod;
      for (let b = 0; b < BATCH_STREAM_BATCHES; b++) {
        if (queueFree(prod, Atomics.load(i32, PONG), BATCH_RING_LOG2) < BATCH_STREAM_BATCH) this.spinForSpace(prod, t0);
        for (let k = 0; k < BATCH_STREAM_BATCH; k++) {
          const s = BATCH_RING + (queueIdx(prod + k, BATCH_RING_LOG2) << 2);
          const w = k << 2;
          i32[s] = words[w]!; // plain stores, published by the PROD store
          i32[s + 1] = words[w + 1]!;
          i32[s + 2] = words[w + 2]!;
          i32[s + 3] = words[w + 3]!;
        }
        prod = queueIncProd(prod, BATCH_STREAM_BATCH, BATCH_RING_LOG2);
        Atomics.store(i32, PING, prod); // publish: PROD release
        if (Atomics.load(i32, SLEEPING) !== 0) Atomics.notify(i32, PING, 1);
      }
      this.spinFor(prod, t0);
      out[i] = (nowUs() - t0) / BATCH_STREAM_CMDS;
      this.prod = prod;
      this.sum = (this.sum + Math.imul(this.batchSum, BATCH_STREAM_BATCHES)) | 0;
      // CONS reached PROD (acquire), so the sum stored before it is the whole iteration's.
      const seen = i32[BATCH_SUM]!;
      if (seen !== this.sum) throw new Error(`batch stream: the consumer's copies sum to ${seen}, the slots published to ${this.sum}`);
    }
  }

  /** Wait until a batch fits in the ring (CONS read, as a guest's space check), within the timeout. */
  private spinForSpace(prod: number, t0: number): void {
    const limitUs = this.timeoutMs * 1000;
    for (let k = 1; queueFree(prod, Atomics.load(this.i32, PONG), BATCH_RING_LOG2) < BATCH_STREAM_BATCH; k++) {
      if ((k & 4095) === 0 && nowUs() - t0 > limitUs) this.timedOut();
    }
  }
}

/** The bare batch stream (BatchStream) of the 64 commands in `words` (4 u32 each) per batch. */
export async function startBatchStream(opts: BaselineOptions, words: Uint32Array): Promise<LatencyPath> {
  if (!(words instanceof Uint32Array) || words.length !== 4 * BATCH_STREAM_BATCH) {
    throw new ArgumentError('words', `must be a Uint32Array of ${4 * BATCH_STREAM_BATCH} words (a batch of ${BATCH_STREAM_BATCH} commands)`);
  }
  const sab = new SharedArrayBuffer(BATCH_WORDS * 4);
  const data: PingPongWorkerData = { sab, mode: 'spin', idleSpinUs: opts.idleSpinUs ?? IDLE_SPIN_US, pollMs: POLL_MS, idleExitMs: IDLE_EXIT_MS, slotWords: 0, batch: true };
  const w = await startWorker('pingpong.worker.js', data, opts.timeoutMs);
  return new BatchStream(w, sab, opts.timeoutMs, words);
}

export async function startPingPong(mode: PingPongMode, opts: BaselineOptions, slotWords = 0): Promise<LatencyPath> {
  const sab = new SharedArrayBuffer(WORDS * 4);
  const data: PingPongWorkerData = { sab, mode, idleSpinUs: opts.idleSpinUs ?? IDLE_SPIN_US, pollMs: POLL_MS, idleExitMs: IDLE_EXIT_MS, slotWords };
  const w = await startWorker('pingpong.worker.js', data, opts.timeoutMs);
  return new PingPong(mode === 'spin' ? 'atomics-spin' : 'atomics-wait', mode, w, sab, opts.timeoutMs, slotWords);
}

class Echo implements LatencyPath {
  readonly name = 'postmessage';
  readonly params: Params = { message: 'number' };
  constructor(private readonly worker: Worker, private readonly timeoutMs: number) {}

  /**
   * Event-driven loop: each reply records its sample and sends the next
   * message from the handler, so no promise or timer is created per sample;
   * one watchdog covers the whole batch.
   */
  sample(out: Float64Array, from: number, count: number): Promise<void> {
    const w = this.worker;
    const end = from + count;
    const budgetMs = this.timeoutMs + count;
    return new Promise<void>((resolve, reject) => {
      let i = from;
      let t0 = 0;
      const finish = (e?: Error): void => {
        clearTimeout(watchdog);
        w.off('message', onMessage);
        w.off('error', finish);
        if (e) reject(e);
        else resolve();
      };
      const onMessage = (): void => {
        out[i++] = nowUs() - t0;
        if (i >= end) return finish();
        t0 = nowUs();
        w.postMessage(i);
      };
      const watchdog = setTimeout(() => finish(new BenchTimeoutError(`postmessage: ${end - i} of ${count} echoes missing after ${budgetMs} ms`)), budgetMs);
      w.on('message', onMessage);
      w.on('error', finish);
      if (count === 0) return finish();
      t0 = nowUs();
      w.postMessage(i);
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

export async function startEcho(opts: BaselineOptions): Promise<LatencyPath> {
  return new Echo(await startWorker('echo.worker.js', undefined, opts.timeoutMs), opts.timeoutMs);
}

export function startBaseline(name: BaselinePathName, opts: BaselineOptions): Promise<LatencyPath> {
  switch (name) {
    case 'atomics-wait': return startPingPong('wait', opts);
    case 'atomics-spin': return startPingPong('spin', opts);
    case 'postmessage': return startEcho(opts);
  }
}
