// The pending bitmap (src/layout.ts, issue 15): a pass visits only the queues
// whose bits it took, so it never reads an idle queue's registers, and the
// cases no PROD bit announces still run: a stopped queue's GERRORN ack, a
// thread (re)started over queues whose PROD already moved.
// Driven in-thread; test/doorbell-hammer.test.ts races the same on threads.
import { describe, expect, it } from 'vitest';
import { Consumer } from '../native-free-fastpath/consumer.ts';
import { buildCfgiSte, buildCmdSync } from '../src/codec.ts';
import { CS } from '../src/fields.ts';
import {
  CONFIG_EN, CTL_CRASH, CTL_CTRL, CTL_PENDING, CTL_STATE, KTHREAD_CTL, MAILBOX_STATE, MB_STATE, Q_CONFIG, Q_CONS, Q_GERROR, Q_GERRORN, Q_NO_NOTIFY, Q_PROD,
  Q_STAT_CMDS, Q_STAT_SLOT_READS, mailboxWords, markPending, pendingBit, pendingSlot, pendingWord,
} from '../src/layout.ts';
import { VINTF_WORDS, writeVintf } from '../src/vintf.ts';
import { addQueue, consPos, makeRig, submit, type Rig, type RigQueue, tlbiAsid } from './consumer-rig.ts';

const VMID = 5;
const asid = tlbiAsid;
/** Queue `q`'s pending word (its slot's, Q_PEND). */
const wordOf = (rig: Rig, q: RigQueue): number => pendingWord(rig.i32, KTHREAD_CTL, pendingSlot(rig.i32, q.qid));
const pendingOf = (rig: Rig, q: RigQueue): boolean => (Atomics.load(rig.i32, wordOf(rig, q)) & pendingBit(pendingSlot(rig.i32, q.qid))) !== 0;

/** A rig with `n` queues of 8 slots, each already looked at once (addQueue marks a new queue pending). */
function rigN(n: number): { rig: Rig; qs: RigQueue[] } {
  const rig = makeRig([{ vmid: VMID, psids: [1], asid: 2 }]);
  const qs = Array.from({ length: n }, () => addQueue(rig, VMID, 3));
  expect(rig.consumer.pass()).toBe(0);
  return { rig, qs };
}

describe('the pending bitmap', () => {
  it('a pass consumes only queues whose bit is set: a PROD moved without its bit waits for the bit', () => {
    const { rig, qs } = rigN(40);
    expect(new Set(qs.map((q) => wordOf(rig, q))).size).toBe(2);
    const [a, b] = [qs[3]!, qs[37]!];
    // b's PROD moves but nobody marks it: a pass must not see it (it reads no unmarked queue).
    b.ring.set(asid(7), 0);
    Atomics.store(rig.i32, b.regs + Q_PROD, 1);
    submit(rig, a, [asid(1), asid(2)]);
    expect(rig.consumer.pass()).toBe(2);
    expect(consPos(rig, b)).toBe(0);
    expect(rig.consumer.hasWork()).toBe(false);
    expect(pendingOf(rig, a)).toBe(false); // taken
    markPending(rig.i32, KTHREAD_CTL, b.qid);
    expect(rig.consumer.hasWork()).toBe(true);
    expect(rig.consumer.pass()).toBe(1);
    expect(consPos(rig, b)).toBe(1);
    // A bit whose PROD was already consumed costs a look and nothing else.
    markPending(rig.i32, KTHREAD_CTL, b.qid);
    expect(rig.consumer.pass()).toBe(0);
    expect(rig.i32[b.regs + Q_STAT_CMDS]).toBe(1);
  });

  it('a bit no queue owns, set by the guest in its own word, is neither work nor taken', () => {
    const { rig, qs } = rigN(2);
    const word = wordOf(rig, qs[0]!);
    const stray = 31; // the VM's word has slots 0 and 1 in use; bit 31 is nobody's
    Atomics.or(rig.i32, word, pendingBit(stray));
    expect(rig.consumer.hasWork()).toBe(false);
    expect(rig.consumer.pass()).toBe(0);
    expect(Atomics.load(rig.i32, word)).toBe(pendingBit(stray));
  });

  for (const polled of [false, true]) {
    it(`a queue stopped on an error resumes on its GERRORN ack alone, even though its bit was taken while it was stopped${polled ? ' (polled, the bad command published unmarked: it leaves the polled set at the error, layout.ts "Polled queues")' : ''}`, () => {
      const { rig, qs } = rigN(1);
      const q = qs[0]!;
      const bad = new Uint32Array(4);
      buildCfgiSte(bad, 0, 1); // refused on a vCMDQ: CERROR_ILL
      submit(rig, q, [asid(1)]);
      expect(rig.consumer.pass()).toBe(1);
      expect(Atomics.load(rig.i32, q.regs + Q_NO_NOTIFY)).toBe(1);
      submit(rig, q, [bad], !polled);
      expect(rig.consumer.pass()).toBe(1);
      expect(Atomics.load(rig.i32, q.regs + Q_GERROR)).not.toBe(Atomics.load(rig.i32, q.regs + Q_GERRORN));
      expect(Atomics.load(rig.i32, q.regs + Q_NO_NOTIFY)).toBe(0);
      // The guest publishes more while stopped: the bit is taken, nothing runs.
      submit(rig, q, [asid(3)]);
      expect(rig.consumer.pass()).toBe(0);
      expect(pendingOf(rig, q)).toBe(false);
      expect(rig.consumer.hasWork()).toBe(false);
      // Linux skip_err: the faulting slot becomes something legal, then GERRORN = GERROR, with no PROD write and no bit.
      q.ring.set(asid(2), 4);
      Atomics.store(rig.i32, q.regs + Q_GERRORN, Atomics.load(rig.i32, q.regs + Q_GERROR));
      expect(rig.consumer.hasWork()).toBe(true);
      expect(rig.consumer.pass()).toBe(2);
      expect(consPos(rig, q)).toBe(3);
      expect(rig.consumer.hasWork()).toBe(false);
    });
  }

  it('while CMDQ_ERR is active nothing is consumed (spec 7.1): a queue stopped past slot 1 whose bit is taken runs nothing, and CONS, GERROR and its counters stay', () => {
    // Past slot 1 on purpose: a stopped queue must not be consumed up to any position, whatever it stopped at.
    const { rig, qs } = rigN(1);
    const q = qs[0]!;
    const bad = new Uint32Array(4);
    buildCfgiSte(bad, 0, 1); // refused on a vCMDQ: CERROR_ILL
    submit(rig, q, [asid(1), asid(2), asid(3), bad]);
    expect(rig.consumer.pass()).toBe(4);
    const regs = (): number[] => [Q_CONS, Q_GERROR, Q_STAT_CMDS, Q_STAT_SLOT_READS].map((r) => Atomics.load(rig.i32, q.regs + r));
    const stopped = regs();
    expect(consPos(rig, q)).toBe(3);
    expect(stopped[1]).not.toBe(Atomics.load(rig.i32, q.regs + Q_GERRORN));
    const executed = rig.model.log.length;
    submit(rig, q, [asid(5)]);
    expect(rig.consumer.pass()).toBe(0);
    expect(pendingOf(rig, q)).toBe(false); // taken
    expect(regs()).toEqual(stopped);
    expect(rig.model.log.length).toBe(executed);
  });

  it('a new consumer over queues whose PROD moved with no bit (a restart) looks at each once', () => {
    const { rig, qs } = rigN(3);
    submit(rig, qs[1]!, [asid(1)]);
    Atomics.store(rig.i32, wordOf(rig, qs[1]!), 0); // the bit died with the old thread
    const again = new Consumer(rig.i32, KTHREAD_CTL, rig.model, rig.w.features);
    again.addVm(VMID, rig.consumer.vm(VMID));
    for (const q of qs) again.addQueue(q.qid, VMID);
    expect(again.pass()).toBe(1);
    expect(consPos(rig, qs[1]!)).toBe(1);
  });

  it('a hardware VCMDQ has no bit: its PROD, written as hardware sees it (no bit, no doorbell), is consumed by the next pass among 60 idle doorbell queues', () => {
    const { rig, qs } = rigN(60);
    const vintf = rig.w.layout.alloc(VINTF_WORDS * 4, 64) >>> 2;
    writeVintf(rig.i32, vintf, VMID, [{ vsid: 0, psid: 1 }]);
    const hw = addQueue(rig, VMID, 3, vintf);
    // A new hw queue is not marked: the SMMU polls it anyway.
    expect(pendingOf(rig, hw)).toBe(false);
    const sync = new Uint32Array(4);
    buildCmdSync(sync, CS.NONE, 0, 0, 0);
    hw.ring.set(asid(4), 0);
    hw.ring.set(sync, 4);
    Atomics.store(rig.i32, hw.regs + Q_PROD, 2); // what HwTransport.publishProd does
    expect(rig.consumer.hasWork()).toBe(true);
    expect(rig.consumer.pass()).toBe(2);
    expect(consPos(rig, hw)).toBe(2);
    // The idle doorbell queues were not read: no slot copied, and their bits stay clear.
    expect(qs.map((q) => rig.i32[q.regs + Q_STAT_SLOT_READS])).toEqual(qs.map(() => 0));
    // A doorbell queue beside it is still served by its bit alone.
    submit(rig, qs[59]!, [asid(5)]);
    expect(rig.consumer.pass()).toBe(1);
    expect(consPos(rig, qs[59]!)).toBe(1);
    // While the hw queue is enabled the thread polls (never sleeps); disabled, it may sleep.
    expect(rig.consumer.hasWork()).toBe(true);
    Atomics.store(rig.i32, hw.regs + Q_CONFIG, 0);
    expect(rig.consumer.hasWork()).toBe(false);
  });

  for (const polled of [false, true]) {
    it(`a queue disabled while its PROD moved${polled ? ' (published unmarked, the queue polled: it leaves the polled set, layout.ts "Polled queues")' : ''}: the pass drops its bit; re-enabling marks it again and the commands run`, () => {
      const { rig, qs } = rigN(2);
      const q = qs[1]!;
      if (polled) {
        submit(rig, q, [asid(9)]);
        expect(rig.consumer.pass()).toBe(1);
        expect(Atomics.load(rig.i32, q.regs + Q_NO_NOTIFY)).toBe(1);
      }
      Atomics.store(rig.i32, q.regs + Q_CONFIG, 0);
      submit(rig, q, [asid(1), asid(2)], !polled);
      expect(rig.consumer.pass()).toBe(0);
      expect(Atomics.load(rig.i32, q.regs + Q_NO_NOTIFY)).toBe(0);
      expect(pendingOf(rig, q)).toBe(false);
      expect(rig.consumer.hasWork()).toBe(false);
      // What DoorbellTransport.writeConfig does: CONFIG, then the bit (the pass reads CONFIG after taking it).
      Atomics.store(rig.i32, q.regs + Q_CONFIG, CONFIG_EN);
      markPending(rig.i32, KTHREAD_CTL, q.qid);
      expect(rig.consumer.pass()).toBe(2);
      expect(consPos(rig, q)).toBe(q.prod);
    });
  }

  it('peeks and the sleep re-check: a pass and the idle poll read the words plainly, the re-check before Atomics.wait loads each one atomically; a pass takes (an RMW) only a word with a bit of its own (layout.ts, "Peeks")', () => {
    const { rig, qs } = rigN(40);
    const words = [...new Set(qs.map((q) => wordOf(rig, q)))];
    expect(words.length).toBe(2);
    const loads: number[] = [];
    const ands: number[] = [];
    const { load, and } = Atomics;
    const loaded = (f: () => unknown): { value: unknown; words: number[]; taken: number[] } => {
      loads.length = 0;
      ands.length = 0;
      Atomics.load = ((ta: Int32Array, i: number) => {
        if (ta === rig.i32) loads.push(i);
        return load(ta, i);
      }) as typeof Atomics.load;
      Atomics.and = ((ta: Int32Array, i: number, v: number) => {
        if (ta === rig.i32) ands.push(i);
        return and(ta, i, v);
      }) as typeof Atomics.and;
      try {
        return { value: f(), words: words.filter((w) => loads.includes(w)), taken: [...ands] };
      } finally {
        Object.assign(Atomics, { load, and });
      }
    };
    // Nothing pending: an idle pass peeks (no Atomics call per word: ~18 ns a load, ~35 ns an RMW on Node 20) and
    // takes nothing (an RMW of an idle word would pull the guest's line away every pass); the re-check loads both.
    expect(loaded(() => rig.consumer.pass())).toEqual({ value: 0, words: [], taken: [] });
    expect(loaded(() => rig.consumer.hasWork())).toEqual({ value: false, words, taken: [] });
    // A publish on the second word: the re-check sees it through its atomic load, and the pass that follows takes that
    // word alone and consumes it.
    const q = qs[37]!;
    submit(rig, q, [asid(9)]);
    expect(loaded(() => rig.consumer.hasWork())).toEqual({ value: true, words, taken: [] });
    expect(loaded(() => rig.consumer.pass())).toEqual({ value: 1, words: [], taken: [words[1]] });
    expect(consPos(rig, q)).toBe(1);
    expect(pendingOf(rig, q)).toBe(false);
  });

  it('the idle poll makes one Atomics call, CTRL\'s load, and peeks at the rest: STATE, the crash hook, the pending words, the mailboxes; the re-check loads them all', () => {
    const { rig, qs } = rigN(40);
    const c = rig.consumer as unknown as { pollWork: () => boolean; hasWork: () => boolean; pass: () => number };
    rig.consumer.mailboxes.add(3);
    rig.consumer.mailboxes.add(4);
    const ctl = (w: number): number => KTHREAD_CTL + w;
    const mb = (id: number): number => mailboxWords(id) + MB_STATE;
    const all = [ctl(CTL_CTRL), ctl(CTL_STATE), ctl(CTL_CRASH), ...new Set(qs.map((q) => wordOf(rig, q))), mb(3), mb(4)].sort((x, y) => x - y);
    const loads: number[] = [];
    const load = Atomics.load;
    const loaded = (f: () => unknown): { value: unknown; words: number[] } => {
      loads.length = 0;
      Atomics.load = ((ta: Int32Array, i: number) => {
        if (ta === rig.i32) loads.push(i);
        return load(ta, i);
      }) as typeof Atomics.load;
      try {
        return { value: f(), words: [...new Set(loads)].sort((x, y) => x - y) };
      } finally {
        Atomics.load = load;
      }
    };
    // CTRL stays a load: a call the JIT cannot see through, so no peek is hoisted out of the spin (layout.ts, "Peeks").
    expect(loaded(() => c.pollWork())).toEqual({ value: false, words: [ctl(CTL_CTRL)] });
    expect(loaded(() => c.hasWork())).toEqual({ value: false, words: all });
    // An idle pass loads nothing; a request is seen by its peek, then loaded (the acquire of its arguments) and served.
    expect(loaded(() => c.pass())).toEqual({ value: 0, words: [] });
    Atomics.store(rig.i32, mb(4), MAILBOX_STATE.REQUEST);
    expect(loaded(() => c.pollWork()).value).toBe(true);
    expect(loaded(() => c.pass())).toEqual({ value: 1, words: [mb(4)] });
    expect(Atomics.load(rig.i32, mb(4))).toBe(MAILBOX_STATE.RESPONSE);
    // STATE and the crash hook, peeked, still end the poll.
    Atomics.store(rig.i32, ctl(CTL_CRASH), 1);
    expect(loaded(() => c.pollWork()).value).toBe(true);
    Atomics.store(rig.i32, ctl(CTL_CRASH), 0);
    Atomics.store(rig.i32, ctl(CTL_STATE), Atomics.load(rig.i32, ctl(CTL_STATE)) + 1);
    expect(loaded(() => c.pollWork()).value).toBe(true);
  });

  it('a control block without a pending bitmap is refused at construction', () => {
    const { rig } = rigN(1);
    rig.i32[KTHREAD_CTL + CTL_PENDING] = 0;
    expect(() => new Consumer(rig.i32, KTHREAD_CTL, rig.model, rig.w.features)).toThrow(/CTL_PENDING/);
  });
});
