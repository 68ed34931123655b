// Shared by the trap-path tests: the vectors file, word conversions, and a
// single-threaded rig (register block + queue in a SAB) around TrapCmdq.

import { readFileSync } from 'node:fs';
import { encodeWords } from '../src/codec.ts';
import { DEFAULT_FEATURES, type SmmuFeatures } from '../src/features.ts';
import { FIELD_COUNT } from '../src/fields.ts';
import { MB_PAYLOAD_BYTES, MMIO_BYTES, Q_BASE, Q_LOG2SIZE, queueRegs } from '../src/layout.ts';
import type { QueueHandle } from '../src/guest.ts';
import type { Host } from '../src/host.ts';
import { MailboxClient } from '../src/mailbox.ts';
import { TrapCmdq, type TrapKernel } from '../src/trap/cmdq.ts';
import { TRAP_KOP } from '../src/trap/kernel.ts';
import { readTrapCounts } from '../src/trap/transport.ts';
import { HwptInvalidate, type CommandSink } from '../src/trap/iommufd.ts';
import { VSmmu } from '../src/vsmmu.ts';

export interface Vector {
  name: string;
  kind: 'legal' | 'iommufd-convert' | 'illegal';
  fields: Record<string, string | number>;
  words: [string, string];
  host_words?: [string, string];
  vsmmu_vmid?: number;
  vsid_table?: Record<string, string>;
  expected?: Record<string, unknown>;
}

/** The two trap paths: the iothread-style VMM thread, and QEMU's shape (on the vCPU's thread, under the BQL). */
export const TRAP_PATHS = ['trap', 'trap-inline'] as const;

export const VECTORS: Vector[] = JSON.parse(readFileSync(new URL('./fixtures/smmu-vectors.json', import.meta.url), 'utf8'));
export const CONVERT = VECTORS.filter((v) => v.kind === 'iommufd-convert');
export const IOMMUFD_ILLEGAL = VECTORS.filter((v) => v.kind === 'illegal' && v.expected?.['iommufd'] === '-EIO');

/** [w0, w1] hex strings -> the 4 u32 of queue memory. */
export function words4(w: readonly [string, string]): Uint32Array {
  const u = new Uint32Array(4);
  const a = BigInt(w[0]);
  const b = BigInt(w[1]);
  u[0] = Number(a & 0xffffffffn);
  u[1] = Number(a >> 32n);
  u[2] = Number(b & 0xffffffffn);
  u[3] = Number(b >> 32n);
  return u;
}

export function hexWords(u: ArrayLike<number>): [string, string] {
  const h = (lo: number, hi: number) => '0x' + ((BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0)).toString(16).padStart(16, '0');
  return [h(u[0]!, u[1]!), h(u[2]!, u[3]!)];
}

export function vsmmuOf(v: Vector): VSmmu {
  const table = Object.entries(v.vsid_table ?? {}).map(([a, b]) => [Number(a), Number(b)] as const);
  return new VSmmu(v.vsmmu_vmid ?? 5, table);
}

/** Records every host command the kernel executes, re-encoded as words ('SYNC' for a CMD_SYNC). */
export class RecordingSink implements CommandSink {
  readonly log: [string, string][] = [];
  syncs = 0;
  /** Refuse the command at this execution count (0-based), to test the model refusing. */
  refuseAt = -1;
  private readonly u = new Uint32Array(4);
  execute(f: Uint32Array): number {
    if (f.length !== FIELD_COUNT) throw new Error('not an F record');
    if (f[0] === 0x46) {
      this.syncs++;
      this.log.push(['SYNC', '']);
      return 0;
    }
    if (this.log.length - this.syncs === this.refuseAt) return 1;
    encodeWords(f, this.u);
    this.log.push(hexWords(this.u));
    return 0;
  }
  commands(): [string, string][] {
    return this.log.filter((e) => e[0] !== 'SYNC');
  }
}

/** The kernel reached by a direct call, as the kernel thread's mailbox handler reaches it. */
export class DirectKernel implements TrapKernel {
  readonly cfgi: number[] = [];
  constructor(readonly hw: HwptInvalidate, readonly batch: Uint32Array) {}
  invalidate(n: number): number {
    return this.hw.invalidate(this.batch, 0, n);
  }
  get entryNum(): number {
    return this.hw.entryNum;
  }
  cfgiSte(vsid: number): number {
    this.cfgi.push(vsid);
    return 0;
  }
}

/** One trapped queue in a SAB, its VMM emulation, and a direct kernel. */
export class Rig {
  readonly sab: SharedArrayBuffer;
  readonly i32: Int32Array;
  readonly regs = queueRegs(0);
  readonly ramBase = MMIO_BYTES;
  readonly ramBytes = 1 << 20;
  readonly queuePa: number;
  readonly cmdq: TrapCmdq;
  readonly kernel: DirectKernel;
  readonly sink: CommandSink;
  prod = 0;

  constructor(readonly vsmmu: VSmmu, readonly log2size = 4, sink: CommandSink = new RecordingSink(), feat: SmmuFeatures = DEFAULT_FEATURES) {
    this.sab = new SharedArrayBuffer(this.ramBase + this.ramBytes);
    this.i32 = new Int32Array(this.sab);
    this.queuePa = this.ramBase + 0x1000;
    this.i32[this.regs + Q_LOG2SIZE] = log2size;
    this.i32[this.regs + Q_BASE] = this.queuePa;
    const batch = new Uint32Array(MB_PAYLOAD_BYTES / 4);
    this.sink = sink;
    this.kernel = new DirectKernel(new HwptInvalidate(vsmmu, sink, feat), batch);
    this.cmdq = new TrapCmdq(this.i32, this.regs, 0, feat, this.kernel, batch, this.ramBase, this.ramBytes, [...vsmmu.vsidToPsid.keys()]);
    this.cmdq.writeConfig(1);
  }

  /** Guest writes commands at PROD (no publish). */
  write(...cmds: Uint32Array[]): void {
    const mask = (1 << this.log2size) - 1;
    for (const u of cmds) {
      const w = (this.queuePa >>> 2) + (this.prod & mask) * 4;
      this.i32.set(Int32Array.from(u), w);
      this.prod = (this.prod + 1) & ((2 << this.log2size) - 1);
    }
  }

  /** Overwrite the slot at queue position `pos`. */
  rewrite(pos: number, u: Uint32Array): void {
    const w = (this.queuePa >>> 2) + (pos & ((1 << this.log2size) - 1)) * 4;
    this.i32.set(Int32Array.from(u), w);
  }

  submit(...cmds: Uint32Array[]): void {
    this.write(...cmds);
    this.cmdq.writeProd(this.prod);
  }
}

/** The VMM's counters of a trap queue, named as the tests compare them. */
export function trapStats(handle: QueueHandle): { forwarded: number; handled: number; ioctls: number } {
  const c = readTrapCounts(handle);
  return { forwarded: c.forwarded, handled: c.handledByVmm, ioctls: c.ioctls };
}

/** The kernel side's counters for a VM: commands its IOMMU_HWPT_INVALIDATEs executed, vSTEs installed. */
export async function kernelCounter(host: Host): Promise<(vmid: number) => { executed: number; steInstalls: number }> {
  const c = new MailboxClient(await host.mailbox());
  return (vmid) => {
    c.args[0] = vmid;
    if (c.call(TRAP_KOP.STATS) !== 0) throw new Error(`no hwpt for VM ${vmid}`);
    return { executed: c.results[1]!, steInstalls: c.results[2]! };
  };
}

/** The VM streams of a vector's vsid table. */
export function streamsOf(v: Vector): { vsid: number; psid: number }[] {
  return Object.entries(v.vsid_table ?? {}).map(([a, b]) => ({ vsid: Number(a), psid: Number(b) }));
}

/** Concatenate 4-word commands into one words array for submitWords. */
export function wordsOf(cmds: readonly Uint32Array[]): Uint32Array {
  const a = new Uint32Array(cmds.length * 4);
  cmds.forEach((u, i) => a.set(u, i * 4));
  return a;
}
