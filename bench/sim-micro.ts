// In-thread microbenchmarks of the fixed costs the simulator's node-local
// profile needs (bench/sim-node-local.ts) beyond bench/micro.ts's
// per-command steps: what the real code pays once per PROD write and once
// per pass, whatever the number of commands. Each times the real code on
// one thread over a simulated host's memory (src/sim/world.ts), nothing
// crossing threads, so no line transfer is inside (those are the ping-pongs'):
//  - submit: GuestQueue.submitWords on the doorbell transport, the kernel
//    thread awake (SLEEPING clear: the kick is one load), without a
//    CMD_SYNC: 64 calls of 1 command against 1 call of 64; the difference
//    is 63 commands' copies, the rest per call (the guest's: measured on
//    the producer's thread);
//  - pass: Consumer.pass over one published TLBI against one pass over 64
//    (the kernel thread's: measured on a thread of the server CPU,
//    bench/sim-micro.worker.ts).
// Between timed blocks the queue is emptied untimed (a pass, or nothing to do).
import { buildTlbiNhVa } from '../src/codec.ts';
import { GuestQueue } from '../src/guest.ts';
import { KTHREAD_CTL, Q_BASE } from '../src/layout.ts';
import { queueIncProd } from '../src/queue.ts';
import { SIM_VMID, SimWorld } from '../src/sim/world.ts';

/** The bench's queue size (vm.openQueue's default, src/host.ts). */
const LOG2SIZE = 8;
const BIG = 64;

export interface SubmitCosts {
  /** GuestQueue.submitWords per call, beyond its commands, ns. */
  submit_ns: number;
  /** One command's copy into the ring by submitWords, ns. */
  submit_cmd_ns: number;
}

export interface PassCosts {
  /** Consumer.pass serving one queue, beyond its commands, ns. */
  pass_ns: number;
  /** One command consumed within a pass, ns (as bench/micro.ts consume, on this rig). */
  pass_cmd_ns: number;
}

/** `n` TLBI_NH_VA of distinct pages, 4 words each. */
function tlbis(n: number): Uint32Array {
  const words = new Uint32Array(4 * n);
  const u = new Uint32Array(4);
  for (let k = 0; k < n; k++) {
    const addr = (0x40000 + k) * 4096;
    buildTlbiNhVa(u, 1, SIM_VMID, addr % 2 ** 32, Math.floor(addr / 2 ** 32), 0, 0, 0, 0, 1);
    words.set(u, 4 * k);
  }
  return words;
}

/** Median of `blocks` timed runs of `block` (each followed by an untimed `reset`), after `warmup` untimed ones, ns. */
function medianBlockNs(block: () => void, reset: () => void, blocks: number, warmup: number): number {
  for (let k = 0; k < warmup; k++) {
    block();
    reset();
  }
  const ns = new Float64Array(blocks);
  for (let k = 0; k < blocks; k++) {
    const t0 = performance.now();
    block();
    ns[k] = (performance.now() - t0) * 1e6;
    reset();
  }
  return ns.sort()[blocks >> 1]!;
}

/** Per-call costs from a block of BIG calls of 1 command (`ones`) and one call of BIG commands (`big`), ns. */
export function splitFixed(onesNs: number, bigNs: number): { fixed: number; perCmd: number } {
  const perCall = onesNs / BIG;
  const perCmd = Math.max(0, (bigNs - perCall) / (BIG - 1));
  return { fixed: Math.max(0, perCall - perCmd), perCmd };
}

/** The guest's fixed and per-command costs of GuestQueue.submitWords (the doorbell transport, kernel thread awake). */
export function measureSubmitCosts(blocks = 400, warmup = 400): SubmitCosts {
  const world = new SimWorld(LOG2SIZE);
  const { ring, consumer } = world.openConsumedQueue('vcmdq');
  const i32 = world.i32;
  const q = GuestQueue.attach({
    path: 'doorbell', sab: world.mem, ctl: KTHREAD_CTL, qid: ring.qid, regs: ring.regs, log2size: LOG2SIZE,
    basePa: i32[ring.regs + Q_BASE]!, baseIpa: 0, vmid: SIM_VMID, features: world.features,
  });
  const one = tlbis(1);
  const big = tlbis(BIG);
  const drain = (): void => {
    consumer.pass();
  };
  const submitOnes = medianBlockNs(() => {
    for (let k = 0; k < BIG; k++) q.submitWords(one, 1, null);
  }, drain, blocks, warmup);
  const submitBig = medianBlockNs(() => q.submitWords(big, BIG, null), drain, blocks, warmup);
  const s = splitFixed(submitOnes, submitBig);
  return { submit_ns: s.fixed, submit_cmd_ns: s.perCmd };
}

/** The kernel thread's fixed and per-command costs of Consumer.pass, PROD moved by a simulated guest's publish. */
export function measurePassCosts(blocks = 400, warmup = 400): PassCosts {
  const world = new SimWorld(LOG2SIZE);
  const { ring, consumer } = world.openConsumedQueue('vcmdq');
  const one = tlbis(1);
  // The ring filled once; PROD moved by the simulated guest's publish (PROD, then the pending bit).
  for (let k = 0; k < 1 << LOG2SIZE; k++) ring.write(one, 1, new Uint32Array(4));
  ring.prod = ring.cons();
  const publish = (n: number): void => {
    ring.prod = queueIncProd(ring.prod, n, LOG2SIZE);
    ring.publish();
  };
  const passOnes = medianBlockNs(() => {
    for (let k = 0; k < BIG; k++) {
      publish(1);
      consumer.pass();
    }
  }, () => {}, blocks, warmup);
  const passBig = medianBlockNs(() => {
    publish(BIG);
    consumer.pass();
  }, () => {}, blocks, warmup);
  const p = splitFixed(passOnes, passBig);
  return { pass_ns: p.fixed, pass_cmd_ns: p.perCmd };
}
