// One extra producer of the multi-producer scenario: a thread attached to
// the queue's handle (GuestQueue.attach), running cells on request.
import { parentPort, workerData } from 'node:worker_threads';
import { GuestQueue } from '../src/guest.ts';
import '../src/trap/transport.ts'; // registers the 'trap' transport in this thread
import { P_BATCH, P_CALLS, P_DONE, P_REQ, produce, type MpProducerData } from './mp-protocol.ts';
import { EXIT } from './unmap-protocol.ts';

const data = workerData as MpProducerData;
const ctl = new Int32Array(data.ctl);
const out = new Float64Array(data.samples);
const q = GuestQueue.attach(data.queue);
// This thread's clock minus the main thread's, so every producer's span is on one clock.
const clockShift = performance.timeOrigin - data.timeOrigin;

function serve(): void {
  let seen = 0;
  for (;;) {
    const seq = Atomics.load(ctl, P_REQ);
    if (seq === EXIT) return;
    if (seq === seen) {
      Atomics.wait(ctl, P_REQ, seq, 100); // bounded: re-checks for EXIT
      continue;
    }
    seen = seq;
    produce(q, data.words, ctl[P_BATCH]!, ctl[P_CALLS]!, out, data.cap, clockShift, data.timeoutMs);
    Atomics.store(ctl, P_DONE, seq); // publish: DONE release (the samples and span written above)
    Atomics.notify(ctl, P_DONE);
  }
}

try {
  serve();
} catch (e) {
  parentPort?.postMessage({ error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
  Atomics.store(ctl, P_DONE, -Math.max(1, Atomics.load(ctl, P_REQ))); // publish: DONE (failed; the message has the reason)
  Atomics.notify(ctl, P_DONE);
}
