// The polled set (src/layout.ts, "Polled queues"; virtio's
// VRING_USED_F_NO_NOTIFY, io_uring's SQPOLL thread reading the SQ tail
// itself): a queue whose bit brought commands is then read directly by every
// poll and pass, its NO_NOTIFY set so its producers publish with the PROD
// store alone; the set is bounded and never churns; the thread empties it
// before it sleeps, re-reading each PROD after clearing NO_NOTIFY, so a
// producer that saw NO_NOTIFY set just before is never lost; a disabled or
// stopped queue leaves it (both in test/consumer-pending.test.ts); a
// (re)started thread clears what a dead one left.
// Driven in-thread; test/doorbell-hammer.test.ts races the same on threads.
import { describe, expect, it } from 'vitest';
import { Consumer, POLLED_IDLE_PASSES, POLLED_QUEUES } from '../native-free-fastpath/consumer.ts';
import {
  CTL_HEARTBEAT_MS, CTL_SLEEPING, KTHREAD_CTL, Q_NO_NOTIFY, Q_PROD, markPending, pendingBit, pendingSlot,
  pendingWord,
} from '../src/layout.ts';
import { F } from '../src/fields.ts';
import { addQueue, consPos, makeRig, submit, tlbiAsid as asid, type Rig, type RigQueue } from './consumer-rig.ts';

const VMID = 5;
const pendingOf = (rig: Rig, q: RigQueue): boolean =>
  (Atomics.load(rig.i32, pendingWord(rig.i32, KTHREAD_CTL, pendingSlot(rig.i32, q.qid))) & pendingBit(pendingSlot(rig.i32, q.qid))) !== 0;
const noNotify = (rig: Rig, q: RigQueue): number => Atomics.load(rig.i32, q.regs + Q_NO_NOTIFY);

/** What DoorbellTransport.publishProd does when it loads NO_NOTIFY set: the slots, then PROD, and no bit. */
const publishPolled = (rig: Rig, q: RigQueue, cmds: Uint32Array[]): void => submit(rig, q, cmds, false);

/** A rig with `n` queues of 16 slots, each already looked at once (addQueue marks a new queue pending). */
function rigN(n: number): { rig: Rig; qs: RigQueue[] } {
  const rig = makeRig([{ vmid: VMID, psids: [1], asid: 2 }]);
  const qs = Array.from({ length: n }, () => addQueue(rig, VMID, 4));
  expect(rig.consumer.pass()).toBe(0);
  return { rig, qs };
}

/** rigN(1) with its queue in the polled set. */
function polledRig(): { rig: Rig; q: RigQueue } {
  const { rig, qs } = rigN(1);
  const q = qs[0]!;
  submit(rig, q, [asid(1)]);
  expect(rig.consumer.pass()).toBe(1);
  expect(noNotify(rig, q)).toBe(1);
  return { rig, q };
}

describe('the polled set (layout.ts, "Polled queues")', () => {
  it('a queue whose bit brought commands is polled: its next PROD store, with no bit, is work and is consumed', () => {
    const { rig, q } = polledRig();
    publishPolled(rig, q, [asid(2), asid(3)]);
    expect(pendingOf(rig, q)).toBe(false);
    expect(rig.consumer.hasWork()).toBe(true);
    expect(rig.consumer.pass()).toBe(2);
    expect(consPos(rig, q)).toBe(3);
    expect(rig.consumer.hasWork()).toBe(false);
    expect(rig.model.log.map((e) => e.f[2])).toHaveLength(3);
  });

  it('a bit that brought nothing (PROD already consumed) does not make the queue polled', () => {
    const { rig, qs } = rigN(1);
    markPending(rig.i32, KTHREAD_CTL, qs[0]!.qid);
    expect(rig.consumer.pass()).toBe(0);
    expect(noNotify(rig, qs[0]!)).toBe(0);
  });

  it(`holds at most POLLED_QUEUES (${POLLED_QUEUES}); a newcomer takes the place of a member only once it sat idle for more than POLLED_IDLE_PASSES (${POLLED_IDLE_PASSES}) passes`, () => {
    const { rig, qs } = rigN(POLLED_QUEUES + 1);
    const members = qs.slice(0, POLLED_QUEUES);
    const idle = members[POLLED_QUEUES - 1]!;
    const newcomer = qs[POLLED_QUEUES]!;
    for (const q of members) submit(rig, q, [asid(1)]);
    expect(rig.consumer.pass()).toBe(POLLED_QUEUES);
    expect(members.map((q) => noNotify(rig, q))).toEqual(members.map(() => 1));
    // Every pass: each member but `idle` publishes as a polled producer does, the newcomer by its bit.
    let admittedAt = -1;
    for (let pass = 1; pass <= POLLED_IDLE_PASSES + 2 && admittedAt < 0; pass++) {
      for (const q of members) if (q !== idle) publishPolled(rig, q, [asid(1)]);
      submit(rig, newcomer, [asid(1)]);
      expect(rig.consumer.pass()).toBe(POLLED_QUEUES);
      if (noNotify(rig, newcomer) === 1) admittedAt = pass;
    }
    // `idle` last had commands at pass 0 (the pass count before the loop); it is replaced at the first pass where
    // more than POLLED_IDLE_PASSES passes separate the two.
    expect(admittedAt).toBe(POLLED_IDLE_PASSES + 1);
    expect(noNotify(rig, idle)).toBe(0);
    // Its PROD never moved, so leaving marks nothing; everything published was consumed once.
    expect(pendingOf(rig, idle)).toBe(false);
    for (const q of qs) expect(consPos(rig, q)).toBe(q.prod);
  });

  it('a member replaced in the pass that served it, whose producer published since, is marked and served in that pass (its bit in a word the pass takes later)', () => {
    // The newcomer's VM first, so its pending word comes before the members' in the pass's scan.
    const rig = makeRig([{ vmid: VMID, psids: [1], asid: 2 }, { vmid: VMID + 1, psids: [2], asid: 3 }]);
    const newcomer = addQueue(rig, VMID, 4);
    const members = Array.from({ length: POLLED_QUEUES }, () => addQueue(rig, VMID + 1, 4));
    const idle = members[0]!;
    expect(rig.consumer.pass()).toBe(0);
    for (const q of members) submit(rig, q, [asid(1)]);
    expect(rig.consumer.pass()).toBe(POLLED_QUEUES);
    const round = (): void => {
      for (const q of members) if (q !== idle) publishPolled(rig, q, [asid(1)]);
      submit(rig, newcomer, [asid(7)]);
    };
    for (let pass = 1; pass <= POLLED_IDLE_PASSES; pass++) {
      round();
      expect(rig.consumer.pass()).toBe(POLLED_QUEUES);
    }
    expect(noNotify(rig, newcomer)).toBe(0);
    // The next pass replaces `idle` by the newcomer. While it executes the newcomer's command, idle's producer
    // publishes, having loaded NO_NOTIFY set (no bit): the replacement's PROD re-read must mark it, and the
    // bit, taken later in the same pass, must be served, not dropped as a queue the pass already served.
    const execute = rig.model.execute.bind(rig.model);
    let published = false;
    rig.model.execute = (f) => {
      if (!published && f[F.ASID] === 7) {
        published = true;
        publishPolled(rig, idle, [asid(8)]);
      }
      return execute(f);
    };
    round();
    expect(rig.consumer.pass()).toBe(POLLED_QUEUES + 1);
    expect(published).toBe(true);
    expect([noNotify(rig, newcomer), noNotify(rig, idle)]).toEqual([1, 0]);
    expect(consPos(rig, idle)).toBe(idle.prod);
  });

  it('before sleeping the thread empties the set: NO_NOTIFY cleared, then PROD re-read, so a producer that saw NO_NOTIFY set just before is marked and the sleep is refused', () => {
    const { rig, q } = polledRig();
    // The producer loaded NO_NOTIFY = 1 after its PROD store: no bit, no kick. The thread has not polled since.
    publishPolled(rig, q, [asid(2)]);
    expect(rig.consumer.sleep()).toBe(false);
    expect(noNotify(rig, q)).toBe(0);
    expect(pendingOf(rig, q)).toBe(true);
    expect(Atomics.load(rig.i32, KTHREAD_CTL + CTL_SLEEPING)).toBe(0);
    expect(rig.consumer.pass()).toBe(1);
    expect(consPos(rig, q)).toBe(2);
    // Polled again; idle now: the set is emptied without a mark, and the thread sleeps (until its 1 ms heartbeat).
    expect(noNotify(rig, q)).toBe(1);
    rig.i32[KTHREAD_CTL + CTL_HEARTBEAT_MS] = 1;
    expect(rig.consumer.sleep()).toBe(true);
    expect(noNotify(rig, q)).toBe(0);
    expect(pendingOf(rig, q)).toBe(false);
    expect(Atomics.load(rig.i32, KTHREAD_CTL + CTL_SLEEPING)).toBe(0);
  });

  it('a thread given a queue a dead thread left polled clears NO_NOTIFY before it marks the queue, and consumes what came unmarked', () => {
    const { rig, q } = polledRig();
    publishPolled(rig, q, [asid(2)]); // to the dead thread: no bit
    const again = new Consumer(rig.i32, KTHREAD_CTL, rig.model, rig.w.features);
    again.addVm(VMID, rig.consumer.vm(VMID));
    again.addQueue(q.qid, VMID);
    expect(noNotify(rig, q)).toBe(0);
    expect(again.pass()).toBe(1);
    expect(consPos(rig, q)).toBe(2);
  });

  it('a polled queue whose bit is also set (its producer saw NO_NOTIFY clear) is served once per pass: one PROD load', () => {
    const { rig, q } = polledRig();
    submit(rig, q, [asid(2)]);
    let prodLoads = 0;
    const load = Atomics.load;
    Atomics.load = ((ta: Int32Array, i: number) => {
      if (ta.buffer === rig.i32.buffer && i === q.regs + Q_PROD) prodLoads++;
      return load(ta, i);
    }) as typeof Atomics.load;
    try {
      expect(rig.consumer.pass()).toBe(1);
    } finally {
      Atomics.load = load;
    }
    expect(prodLoads).toBe(1);
  });
});
