// In-thread microbenchmarks of the hot work, for the perf gate: no thread hop
// inside a timed region, so they measure the code, not where the host put the
// two vCPUs (a cross-core round trip moves 2x with placement; these move by a
// few percent). Each runs the real code over a pre-filled queue:
//  - consume: the kernel thread's consume step (Consumer.pass: slot copy,
//    vSMMU rewrite, decode, validate, execute on the SMMU model, CONS publish)
//    over 1023 TLBI_NH_VA + 1 CMD_SYNC;
//  - trap: the VMM's first pass over 1024 TLBI_NH_VA, then the kernel's
//    IOMMU_HWPT_INVALIDATE handler on the batch it built (blocks of 63).
// The gate builds this file against both the base and the candidate sources
// (bench/gate.ts), so it only names what both builds have; the slowdown word
// is looked up by name on the layout module and used only when asked for, and
// so is the pending bitmap (initMmio, markPending): a build that has one
// consumes only the queues marked in it, a build without one scans them all.
import { buildCmdSync, buildTlbiNhVa, writeSlot } from '../src/codec.ts';
import { ArgumentError } from '../src/errors.ts';
import { makeFeatures } from '../src/features.ts';
import { CS } from '../src/fields.ts';
import * as layout from '../src/layout.ts';
import { SmmuModel } from '../src/model/smmu.ts';
import { queueIncProd } from '../src/queue.ts';
import { FirstPass } from '../src/trap/firstpass.ts';
import { HwptInvalidate } from '../src/trap/iommufd.ts';
import { VSmmu } from '../src/vsmmu.ts';
import { Consumer, VmEntry, type ConsumerModel } from '../native-free-fastpath/consumer.ts';

export const MICRO_NAMES = ['consume', 'trap'] as const;
export type MicroName = (typeof MICRO_NAMES)[number];

const LOG2SIZE = 10;
const CMDS = 1 << LOG2SIZE;
const VMID = 1;
const ASID = 1;
const STREAMS: [number, number][] = [[0, 0x10]];

/** One timed block: runs the code over CMDS commands. */
type Block = () => void;

/** A host SAB with the MMIO region and one 1024-entry ring right above it. */
function hostMemory(): { sab: SharedArrayBuffer; i32: Int32Array; ringByte: number } {
  const ringByte = layout.MMIO_BYTES;
  const sab = new SharedArrayBuffer(ringByte + CMDS * 16 + (1 << 20));
  return { sab, i32: new Int32Array(sab), ringByte };
}

/** 1024 leaf TLBI_NH_VA of distinct pages (the last one replaced by `last` when given). */
function fillRing(ring: Int32Array, last?: (u: Uint32Array) => void): void {
  const u = new Uint32Array(4);
  for (let k = 0; k < CMDS; k++) {
    const addr = (0x40000 + k) * 4096;
    buildTlbiNhVa(u, ASID, VMID, addr % 2 ** 32, Math.floor(addr / 2 ** 32), 0, 0, 0, 0, 1);
    if (k === CMDS - 1 && last) last(u);
    writeSlot(ring, k, u);
  }
}

type InitMmio = (i32: Int32Array) => unknown;
type MarkPending = (i32: Int32Array, ctl: number, qid: number) => void;

/**
 * The consume step: a full ring handed to Consumer.pass() by moving PROD a
 * whole lap, `passCmds` commands per pass (a power of two up to CMDS; the
 * anatomy's batch asks for 64, one pass per batch published). `wrapModel`
 * substitutes what the consumer calls (the anatomy's model-bypassed step);
 * the gate passes neither.
 */
function consumeBlock(slowdownNs: number, wrapModel?: (m: ConsumerModel) => ConsumerModel, passCmds = CMDS): Block {
  const features = makeFeatures();
  const { sab, i32, ringByte } = hostMemory();
  const named = layout as Record<string, unknown>;
  (named['initMmio'] as InitMmio | undefined)?.(i32);
  const markPending = named['markPending'] as MarkPending | undefined;
  const model = new SmmuModel(sab, features);
  const ctl = layout.KTHREAD_CTL;
  const consumer = new Consumer(i32, ctl, wrapModel ? wrapModel(model) : model, features);
  consumer.addVm(VMID, new VmEntry(new VSmmu(VMID, STREAMS), () => -1));
  const r = layout.queueRegs(0);
  i32[r + layout.Q_LOG2SIZE] = LOG2SIZE;
  i32[r + layout.Q_BASE] = ringByte;
  i32[r + layout.Q_CONFIG] = layout.CONFIG_EN;
  consumer.addQueue(0, VMID);
  fillRing(new Int32Array(sab, ringByte, 4 * CMDS), (u) => buildCmdSync(u, CS.NONE, 0, 0, 0));
  if (slowdownNs > 0) {
    const word = named['CTL_SLOWDOWN_NS'];
    if (typeof word !== 'number') throw new Error('this build has no slowdown knob (CTL_SLOWDOWN_NS)');
    i32[ctl + word] = slowdownNs;
  }
  let prod = 0;
  return () => {
    for (let done = 0; done < CMDS; done += passCmds) {
      prod = queueIncProd(prod, passCmds, LOG2SIZE);
      Atomics.store(i32, r + layout.Q_PROD, prod);
      markPending?.(i32, ctl, 0);
      if (consumer.pass() !== passCmds) throw new Error(`consume micro: the consumer did not take the ${passCmds} commands published`);
    }
  };
}

/** The trap path's per-command work: the VMM's first pass, then the iommufd handler on its batch. */
function trapBlock(): Block {
  const features = makeFeatures();
  const { sab, ringByte } = hostMemory();
  const ring = new Int32Array(sab, ringByte, 4 * CMDS);
  fillRing(ring);
  const model = new SmmuModel(sab, features);
  const pass = new FirstPass(new Uint32Array(4 * CMDS));
  const ioctl = new HwptInvalidate(new VSmmu(VMID, STREAMS), model, features);
  let cons = 0;
  return () => {
    const prod = queueIncProd(cons, CMDS, LOG2SIZE);
    pass.run(ring, LOG2SIZE, cons, prod, features);
    if (pass.batchLen !== CMDS || ioctl.invalidate(pass.batch, 0, pass.batchLen) !== 0) throw new Error('trap micro: a command was refused');
    cons = prod;
  };
}

export interface MicroResult {
  name: MicroName;
  /** Median over the timed blocks, ns per command. */
  ns_per_cmd: number;
  blocks: number;
}

/**
 * Times `blocks` blocks after `warmup` untimed ones (the JIT's tiers settle in
 * the first few hundred) and reports the median block, per command: the
 * median ignores the odd block a timer interrupt or GC landed in.
 */
export function runMicro(
  name: MicroName,
  opts: { blocks?: number; warmup?: number; slowdownNs?: number; wrapModel?: (m: ConsumerModel) => ConsumerModel; passCmds?: number } = {},
): MicroResult {
  const blocks = opts.blocks ?? 200;
  const warmup = opts.warmup ?? 300;
  const passCmds = opts.passCmds ?? CMDS;
  if (!(Number.isInteger(passCmds) && passCmds >= 1 && passCmds <= CMDS && (passCmds & (passCmds - 1)) === 0)) {
    throw new ArgumentError('opts.passCmds', `must be a power of two in 1..${CMDS}, got ${String(opts.passCmds)}`);
  }
  const block = name === 'consume' ? consumeBlock(opts.slowdownNs ?? 0, opts.wrapModel, passCmds) : trapBlock();
  for (let k = 0; k < warmup; k++) block();
  const ns = new Float64Array(blocks);
  for (let k = 0; k < blocks; k++) {
    const t0 = performance.now();
    block();
    ns[k] = ((performance.now() - t0) * 1e6) / CMDS;
  }
  ns.sort();
  return { name, ns_per_cmd: ns[blocks >> 1]!, blocks };
}
