// Differential: the same guest command streams through the trap path and
// the vCMDQ doorbell path must leave the SMMU in the same state. Two hosts,
// one per path, set up by the same steps (so allocations and every address
// match): one host with two VMs would share one model, so a path that
// touched the other VM's IOTLB entries (a VMID not forced) would change the
// other path's answers too, and mask itself. Each run gets a fresh VM of
// the same shape on both hosts; earlier runs left identical state behind
// (each was compared), so the starting states are identical.
//
// What is compared: every probe translation afterwards (warm IOTLB, then the
// guest remaps every probe without invalidating, so a probe that sees the
// new page proves its entry was invalidated and one that sees the old page
// proves it was not: the IOTLB hit/miss pattern), PROD/CONS/ERR/GERROR,
// completed syncs and errors, and the faulting index.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeCommand, type Command } from '../src/codec.ts';
import { QueueError, startHost, type DmaAgent, type GuestQueue, type Host, type Vm } from '../src/index.ts';
import { PROT } from '../src/model/pgtable.ts';
import type { TranslationTable } from '../src/model/pgtable.ts';
import { wordsOf } from './trap-helpers.ts';

const PROBES = 6;
const IOVA = 0x4000_0000;
const DATA_IPA = 0x10000;

interface Side {
  host: Host;
  dma: DmaAgent;
}
let trap: Side;
let door: Side;
let run = 0;

beforeAll(async () => {
  const side = async (): Promise<Side> => {
    const host = await startHost({ memBytes: 128 << 20 });
    return { host, dma: await host.dma() };
  };
  trap = await side();
  door = await side();
});
afterAll(async () => {
  await trap?.host.stop();
  await door?.host.stop();
});

interface Guest {
  vm: Vm;
  q: GuestQueue;
  pts: TranslationTable[];
}

/** A VM with two devices (vSID k: ASID k+1, its own table), every probe mapped to page k*16+p and cached. */
async function guest(s: Side, vmid: number, path: 'trap' | 'doorbell'): Promise<Guest> {
  const vm = await s.host.createVm({ vmid, ramBytes: 1 << 20, streams: [0, 1].map((k) => ({ vsid: k, psid: vmid * 16 + k })) });
  const pts: TranslationTable[] = [];
  for (const k of [0, 1]) {
    const pt = vm.pageTable();
    for (let p = 0; p < PROBES; p++) pt.map(IOVA + p * 4096, DATA_IPA + (k * 16 + p) * 4096, 4096, PROT.READ | PROT.WRITE);
    await vm.attachDevice({ vsid: k, cd: { asid: k + 1, ttb0: pt.root } });
    pts.push(pt);
  }
  const q = await vm.openQueue({ path, log2size: 8 });
  return { vm, q, pts };
}

/** Every probe of both devices: fault code, and the page as an offset in the VM's RAM (hosts lay RAM out alike, but this does not rely on it). */
function probe(s: Side, g: Guest): string[] {
  const out: string[] = [];
  for (const k of [0, 1]) {
    for (let p = 0; p < PROBES; p++) {
      const t = s.dma.translate(g.vm.psidOf(k), -1, IOVA + p * 4096);
      out.push(t.fault === 0 ? `page ${(t.pa - g.vm.ramBase - DATA_IPA) / 4096}` : `fault ${t.fault}`);
    }
  }
  return out;
}

/** The guest moves every probe to another page without telling the SMMU. */
function remap(g: Guest): void {
  g.pts.forEach((pt, k) => {
    for (let p = 0; p < PROBES; p++) {
      pt.unmap(IOVA + p * 4096, 4096);
      pt.map(IOVA + p * 4096, DATA_IPA + (k * 16 + 8 + p) * 4096, 4096, PROT.READ | PROT.WRITE);
    }
  });
}

function runStream(s: Side, g: Guest, words: Uint32Array, n: number) {
  let errorAt: number | null = null;
  try {
    g.q.submitWords(words, n, null);
    g.q.drain();
  } catch (e) {
    if (!(e instanceof QueueError)) throw e;
    errorAt = e.index;
  }
  // Probes first: a request the kernel thread serves after the queue work orders its statistics words before our reads.
  const translations = probe(s, g);
  const { prod, cons, err, gerror, syncs, errors } = g.q.state();
  return { errorAt, translations, regs: { prod, cons, err, gerror, syncs, errors } };
}

const page = fc.integer({ min: 0, max: PROBES }); // PROBES itself: a page no probe uses
const addr = page.map((p) => BigInt(IOVA + p * 4096));
const legal: fc.Arbitrary<Command> = fc.oneof(
  fc.record({ op: fc.constant('TLBI_NH_ASID'), asid: fc.integer({ min: 1, max: 3 }), vmid: fc.integer({ min: 0, max: 0xffff }) }),
  fc.record({ op: fc.constant('TLBI_NH_VA'), asid: fc.integer({ min: 1, max: 3 }), addr, leaf: fc.integer({ min: 0, max: 1 }) }),
  fc.record({ op: fc.constant('TLBI_NH_VAA'), addr, leaf: fc.integer({ min: 0, max: 1 }) }),
  fc.record({ op: fc.constant('TLBI_NH_ALL'), vmid: fc.integer({ min: 0, max: 0xffff }) }),
  fc.record({ op: fc.constant('ATC_INV'), sid: fc.integer({ min: 0, max: 1 }), size: fc.constantFrom(0, 12, 52), addr: fc.constant(0n) }),
  fc.record({ op: fc.constant('CMD_SYNC'), cs: fc.constantFrom(0, 1, 2) }), // NONE, IRQ (no MSI address), SEV
) as fc.Arbitrary<Command>;
/** Refused on both paths: a vSID with no device, a stage-2 TLBI, a Reserved opcode. */
const illegal = fc.constantFrom<[bigint, bigint]>(
  encodeCommand({ op: 'ATC_INV', sid: 9, size: 52, addr: 0n } as Command),
  encodeCommand({ op: 'TLBI_S12_VMALL', vmid: 1 } as Command),
  [0x00n, 0n],
);
const stream = fc.array(
  fc.oneof({ weight: 12, arbitrary: legal.map((c) => encodeCommand(c)) }, { weight: 1, arbitrary: illegal }),
  { minLength: 1, maxLength: 40 },
);

function toWords(cmds: [bigint, bigint][]): Uint32Array {
  return wordsOf(cmds.map(([w0, w1]) => Uint32Array.of(Number(w0 & 0xffffffffn), Number(w0 >> 32n), Number(w1 & 0xffffffffn), Number(w1 >> 32n))));
}

describe('trap path vs doorbell path', () => {
  it('identical SMMU state, registers and error position after the same random stream', async () => {
    let withError = 0;
    await fc.assert(
      fc.asyncProperty(stream, async (cmds) => {
        const vmid = ++run;
        const gt = await guest(trap, vmid, 'trap');
        const gd = await guest(door, vmid, 'doorbell');
        expect(probe(trap, gt)).toEqual(probe(door, gd)); // warm: every probe cached
        remap(gt);
        remap(gd);
        const words = toWords(cmds);
        const a = runStream(trap, gt, words, cmds.length);
        const b = runStream(door, gd, words, cmds.length);
        expect(a).toEqual(b);
        if (a.errorAt !== null) withError++;
      }),
      // Each run (and each shrink step) takes a VM and two queues of every host's 64: no shrinking; the
      // failing stream is printed as generated.
      { numRuns: 40, endOnFailure: true },
    );
    // The generator did reach the error position comparison.
    expect(withError).toBeGreaterThan(0);
  });
});
