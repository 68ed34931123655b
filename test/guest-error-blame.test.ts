// A queue error is blamed on the call whose command it was, even when the
// waiting call was stalled while other producers lapped the queue (issue 9:
// "a refused command is reported to the caller whose command it was").
//
// Found once under load in guest-multi-producer.test.ts: a caller with no bad
// command got another caller's QueueError. The waiter had loaded RESV, was
// preempted, and other producers moved the queue on by more than its size
// before one of their commands was refused; unwrapping the fault's CONS
// (a wrap|index value) against that old RESV put it a lap back, inside the
// waiter's own, long completed, range. Here the stall is made deterministic:
// the consumer runs in this thread (test/consumer-rig.ts), and the other
// producer's work is done from inside the waiter's first GERROR load.
import { afterEach, describe, expect, it } from 'vitest';
import { buildCmdSync } from '../src/codec.ts';
import { CS } from '../src/fields.ts';
import { GuestQueue, QueueError } from '../src/guest.ts';
import { CTL_HEARTBEAT_MS, CTL_STALE_MS, KTHREAD_CTL, Q_GERROR } from '../src/layout.ts';
import { addQueue, makeRig, type Rig, type RigQueue } from './consumer-rig.ts';

const LOG2 = 6;
const SIZE = 1 << LOG2;
const realLoad = Atomics.load;

afterEach(() => {
  Atomics.load = realLoad;
});

/** Two drivers (two producers) of one in-thread doorbell queue. */
function producers(rig: Rig, q: RigQueue): [GuestQueue, GuestQueue] {
  rig.i32[KTHREAD_CTL + CTL_HEARTBEAT_MS] = 20;
  rig.i32[KTHREAD_CTL + CTL_STALE_MS] = 60_000;
  const handle = {
    path: 'doorbell', sab: rig.w.mem as SharedArrayBuffer, ctl: KTHREAD_CTL, qid: q.qid, regs: q.regs, log2size: LOG2,
    basePa: q.ring.byteOffset, baseIpa: 0, vmid: 1, features: rig.w.features,
  };
  return [new GuestQueue(handle), GuestQueue.attach(handle)];
}

/** n legal fillers (CMD_SYNC CS=NONE), 4 words each; `badAt` (if given) is all zeros: opcode 0, CERROR_ILL. */
function fillers(n: number, badAt = -1): Uint32Array {
  const u = new Uint32Array(4);
  buildCmdSync(u, CS.NONE, 0, 0, 0);
  const words = new Uint32Array(4 * n);
  for (let k = 0; k < n; k++) if (k !== badAt) words.set(u, 4 * k);
  return words;
}

/** Run `script` the first time the waiter loads GERROR of `regs`: its stall. */
function onFirstGerrorLoad(rig: Rig, regs: number, script: () => void): void {
  let armed = true;
  Atomics.load = ((arr: Int32Array, idx: number) => {
    if (armed && arr.buffer === rig.i32.buffer && idx === regs + Q_GERROR) {
      armed = false;
      script();
    }
    return realLoad(arr, idx);
  }) as typeof Atomics.load;
}

describe('queue error attribution after a stall (checkError unwraps CONS against a RESV loaded with it)', () => {
  for (const lap of [1, 3]) {
    it(`a waiter stalled while the queue moves ${lap} lap(s) on is not blamed for another producer's refused command`, () => {
      const rig = makeRig([{ vmid: 1, psids: [0x10] }]);
      const q = addQueue(rig, 1, LOG2);
      const [a, b] = producers(rig, q);
      onFirstGerrorLoad(rig, q.regs, () => {
        rig.consumer.pass(); // A's 10 commands and its sync: CONS 11
        // Others push the queue on until the refused command sits a whole number of laps (+ 5) past A's range.
        let pos = 11;
        const target = lap * 2 * SIZE + 5;
        while (pos < target) {
          const n = Math.min(SIZE, target - pos);
          b.submitWords(fillers(n), n, null, 1000);
          rig.consumer.pass();
          pos += n;
        }
        b.submitWords(fillers(1, 0), 1, null, 1000);
        rig.consumer.pass(); // refused: CONS stops at `target`, GERROR.CMDQ_ERR toggles
      });
      // A's commands all completed; the error is B's. A must return, not throw B's QueueError.
      a.submitWords(fillers(10), 10, 'sev', 1000);
      Atomics.load = realLoad;
      const stopped = a.state();
      expect(stopped.gerror).not.toBe(stopped.gerrorn); // the queue is still stopped on B's command...
      expect(b.skipFaultingCommand()).toBe(true); // ...which nobody has skipped for B
      rig.consumer.pass();
      const resumed = a.state();
      expect(resumed.gerror).toBe(resumed.gerrorn);
    });
  }

  it("the owner of the refused command still gets its QueueError at the command's index", () => {
    const rig = makeRig([{ vmid: 1, psids: [0x10] }]);
    const q = addQueue(rig, 1, LOG2);
    const [a] = producers(rig, q);
    onFirstGerrorLoad(rig, q.regs, () => rig.consumer.pass());
    let e: unknown;
    try {
      a.submitWords(fillers(10, 3), 10, 'sev', 1000);
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(QueueError);
    expect((e as QueueError).index).toBe(3);
  });
});
