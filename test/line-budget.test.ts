// Which shared cache lines each side of a doorbell round trip touches, counted
// without perf counters (src/layout.ts, "Cache lines per round trip"): every
// Atomics access to the host memory is recorded by word, in one thread, with
// the kernel thread's consume step (the consumer rig) run from inside the
// guest's wait, as if the kernel thread answered while the guest spun. What
// depends on where the two threads run is the lines they share, so these
// counts are what placement multiplies: they must not grow per command, the
// guest must never touch a line the kernel thread writes per pass (HEARTBEAT,
// statistics), and neither side reads the clock on the way.
import { describe, expect, it } from 'vitest';
import { buildCmdSync, buildTlbiNhVa } from '../src/codec.ts';
import { CS } from '../src/fields.ts';
import { GuestQueue, type CsMode, type QueueHandle } from '../src/guest.ts';
import {
  CTL_EPOCH, CTL_HEARTBEAT, CTL_SPIN_US, CTL_WORDS, KTHREAD_CTL, LINE_WORDS, Q_CONS, Q_PROD, Q_WORDS, pendingSlot, pendingWord,
} from '../src/layout.ts';
import { addQueue, makeRig, submit, type Rig, type RigQueue } from './consumer-rig.ts';

type Side = 'guest' | 'kernel';
interface Access { side: Side; op: string; word: number }

const WRITES = new Set(['store', 'add', 'sub', 'compareExchange', 'exchange', 'and', 'or', 'xor']);
const OPS = [...WRITES, 'load', 'notify', 'wait'] as const;
/** A publishing store: Atomics.store, or storeRelease's exchange (layout.ts). */
const PUBLISH = new Set(['store', 'exchange']);

/**
 * Records every Atomics call on `i32`'s buffer while `fn` runs, and every
 * performance.now() (the clock reads), by side. `onLoad` may act on a load
 * before it is performed (the kernel thread answering).
 */
function record(i32: Int32Array, fn: () => void, onLoad: (word: number) => void = () => {}): { accesses: Access[]; clock: Record<Side, number> } {
  const accesses: Access[] = [];
  const clock = { guest: 0, kernel: 0 };
  let side: Side = 'guest';
  const saved = new Map<string, unknown>();
  const A = Atomics as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const op of OPS) {
    const real = A[op]!;
    saved.set(op, real);
    A[op] = (ta: unknown, word: unknown, ...rest: unknown[]) => {
      if (ta instanceof Int32Array && ta.buffer === i32.buffer) {
        const w = (ta.byteOffset >>> 2) + (word as number);
        accesses.push({ side, op, word: w });
        if (op === 'load' && side === 'guest') {
          side = 'kernel';
          try { onLoad(w); } finally { side = 'guest'; }
        }
      }
      return real(ta, word, ...rest);
    };
  }
  const now = performance.now.bind(performance);
  performance.now = () => { clock[side]++; return now(); };
  try {
    fn();
  } finally {
    for (const [op, real] of saved) A[op] = real as (...a: unknown[]) => unknown;
    performance.now = now;
  }
  return { accesses, clock };
}

/** A name for each shared line the accesses land on: the control block's and the queue's lines by number, the ring as one, the queue's pending-bitmap line. */
function lineOf(word: number, q: RigQueue, ringWord: number, ringWords: number): string {
  const pend = pendingWord(pendI32!, KTHREAD_CTL, pendingSlot(pendI32!, q.qid));
  if (Math.floor(word / LINE_WORDS) === Math.floor(pend / LINE_WORDS)) return 'pend';
  if (word >= KTHREAD_CTL && word < KTHREAD_CTL + CTL_WORDS) return `ctl.${Math.floor((word - KTHREAD_CTL) / LINE_WORDS)}`;
  if (word >= q.regs && word < q.regs + Q_WORDS) return `q.${Math.floor((word - q.regs) / LINE_WORDS)}`;
  if (word >= ringWord && word < ringWord + ringWords) return 'ring';
  return `other@${word}`;
}

function tlbi(k: number): Uint32Array {
  const u = new Uint32Array(4);
  buildTlbiNhVa(u, 1, 1, (0x40000 + k) * 4096, 0, 0, 0, 0, 0, 1);
  return u;
}

function words(n: number): Uint32Array {
  const w = new Uint32Array(4 * n);
  for (let k = 0; k < n; k++) w.set(tlbi(k), 4 * k);
  return w;
}

interface Setup { rig: Rig; q: RigQueue; guest: GuestQueue; ringWord: number }

/** The host memory of the latest setup, where lineOf finds the pending bitmap (CTL_PENDING). */
let pendI32: Int32Array | null = null;

function setup(spinUs: number): Setup {
  const rig = makeRig([{ vmid: 1, psids: [0x10] }]);
  pendI32 = rig.i32;
  const q = addQueue(rig, 1, 8);
  rig.i32[KTHREAD_CTL + CTL_SPIN_US] = spinUs;
  // The model itself, without the rig's recording wrapper (which reads CONS at every execute).
  rig.model.execute = (f) => rig.w.model.execute(f);
  const handle: QueueHandle = {
    path: 'doorbell', sab: rig.w.mem, ctl: KTHREAD_CTL, qid: q.qid, regs: q.regs, log2size: q.log2,
    basePa: q.ring.byteOffset, baseIpa: 0, vmid: 1, features: rig.w.features,
  };
  return { rig, q, guest: new GuestQueue(handle), ringWord: q.ring.byteOffset >>> 2 };
}

/**
 * One submitWords of `n` TLBIs + CMD_SYNC; the consumer's pass runs at the
 * guest's `answerAt`-th load of CONS after its PROD publish (its wait's
 * polls), as a kernel thread that answers while the guest spins.
 */
function roundTrip(s: Setup, n: number, cs: CsMode, answerAt: number) {
  let published = false;
  let consLoads = 0;
  let passes = 0;
  const r = record(s.rig.i32, () => s.guest.submitWords(words(n), n, cs, 5000), (w) => {
    if (w !== s.q.regs + Q_CONS) return;
    if (!published) published = s.rig.i32[s.q.regs + Q_PROD] !== 0; // a plain read: not one of the kernel thread's accesses
    if (published && ++consLoads === answerAt) passes += s.rig.consumer.pass() > 0 ? 1 : 0;
  });
  expect(passes).toBe(1);
  return r;
}

function lines(s: Setup, accesses: Access[], side: Side, writes: boolean): string[] {
  return [...new Set(accesses.filter((a) => a.side === side && WRITES.has(a.op) === writes).map((a) => lineOf(a.word, s.q, s.ringWord, s.q.ring.length)))].sort();
}

describe('shared lines per doorbell round trip (the layout.ts list, counted)', () => {
  it('the guest reads only its own lines, CONS\'s and the config/SLEEPING lines; it writes PROD\'s line and its driver line, and its pending bit\'s line only while the queue is not polled; no clock on either side', () => {
    const s = setup(50);
    const first = roundTrip(s, 1, 'sev', 10);
    // q.0: PROD, GERRORN, NO_NOTIFY (and WAITERS); q.1: CONS, GERROR; q.4: RESV, PUB, TURN_WAITERS; ctl.1: SLEEPING (kick); ctl.2: SPIN_US.
    expect(lines(s, first.accesses, 'guest', false)).toEqual(['ctl.1', 'ctl.2', 'q.0', 'q.1', 'q.4']);
    // pend: the OR of the queue's pending bit after PROD, while the kernel thread does not poll the queue.
    expect(lines(s, first.accesses, 'guest', true)).toEqual(['pend', 'q.0', 'q.4']);
    // That pass put the queue in the polled set (layout.ts, "Polled queues"): the next publish is the PROD store
    // alone, no OR and no kick (so no SLEEPING read).
    const polled = roundTrip(s, 1, 'sev', 10);
    expect(lines(s, polled.accesses, 'guest', false)).toEqual(['ctl.2', 'q.0', 'q.1', 'q.4']);
    expect(lines(s, polled.accesses, 'guest', true)).toEqual(['q.0', 'q.4']);
    // Never the lines the kernel thread dirties per pass or per command (ctl.3 HEARTBEAT and pass counts, q.3 statistics).
    for (const { clock } of [first, polled]) expect(clock).toEqual({ guest: 0, kernel: 0 });
  });

  it('liveness costs a round trip that completes while spinning nothing: no EPOCH or HEARTBEAT load; a wait past the first clock read takes EPOCH once (waiter.ts Liveness)', () => {
    const epochLoads = (answerAt: number): number => {
      const s = setup(50);
      const { accesses } = roundTrip(s, 1, 'sev', answerAt);
      expect(accesses.some((a) => a.side === 'guest' && a.word === KTHREAD_CTL + CTL_HEARTBEAT)).toBe(false);
      return accesses.filter((a) => a.side === 'guest' && a.word === KTHREAD_CTL + CTL_EPOCH).length;
    };
    // Answered at the 10th poll: before the spin's first clock read (SPIN_CLOCK_EVERY polls).
    expect(epochLoads(10)).toBe(0);
    // Answered at the 70th: the spin read the clock at the 64th, which started the wait's deadline and took EPOCH.
    expect(epochLoads(70)).toBe(1);
  });

  it('the kernel thread writes CONS once per pass that ends on its CMD_SYNC, and loads only PROD\'s line: the pending and control words are peeked', () => {
    const s = setup(50);
    const first = roundTrip(s, 1, 'sev', 3);
    const polled = roundTrip(s, 1, 'sev', 3);
    for (const { accesses } of [first, polled]) {
      const consStores = accesses.filter((a) => a.side === 'kernel' && PUBLISH.has(a.op) && a.word === s.q.regs + Q_CONS);
      expect(consStores).toHaveLength(1);
      // The crash hook (ctl.0) is read plainly after PROD's load (consume), as STATE and CTRL's other words are in a
      // poll; a pass's only loads are PROD's (q.0: the acquire of the slots) and WAITERS's after the CONS publish.
      expect(lines(s, accesses, 'kernel', false)).toEqual(['q.0']);
    }
    // pend: peeked with a plain read (layout.ts, "Peeks": invisible to this recording of Atomics calls, and the same
    // line), and taken with an RMW (a write) when set; so it shows among the writes only. q.0: NO_NOTIFY, stored
    // once, as the pass that consumed the queue's commands puts it in the polled set.
    expect(lines(s, first.accesses, 'kernel', true)).toEqual(['pend', 'q.0', 'q.1']);
    // Polled, the queue's commands come with no bit: CONS is the only line the kernel thread writes.
    expect(lines(s, polled.accesses, 'kernel', true)).toEqual(['q.1']);
  });

  it('per batch, not per command: 1 and 60 commands make the same Atomics accesses on each side', () => {
    const count = (n: number, side: Side): Record<string, number> => {
      const s = setup(50);
      const { accesses } = roundTrip(s, n, 'sev', 5);
      const out: Record<string, number> = {};
      for (const a of accesses.filter((x) => x.side === side)) {
        const k = `${a.op} ${lineOf(a.word, s.q, s.ringWord, s.q.ring.length)}`;
        out[k] = (out[k] ?? 0) + 1;
      }
      return out;
    };
    for (const side of ['guest', 'kernel'] as const) expect(count(60, side), side).toEqual(count(1, side));
  });

  it('a pass whose last command is not a CMD_SYNC still publishes CONS once, after it', () => {
    const s = setup(0);
    const sync = new Uint32Array(4);
    buildCmdSync(sync, CS.NONE, 0, 0, 0);
    submit(s.rig, s.q, [tlbi(0), sync, tlbi(1)]);
    const { accesses } = record(s.rig.i32, () => { s.rig.consumer.pass(); });
    const stores = accesses.filter((a) => PUBLISH.has(a.op) && a.word === s.q.regs + Q_CONS);
    expect(stores).toHaveLength(2); // the sync's, then the pass's for the TLBI after it
    expect(Atomics.load(s.rig.i32, s.q.regs + Q_CONS) & 0x1ff).toBe(3);
  });
});
