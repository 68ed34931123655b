// Shared set-up for the doorbell tests: a host with VMs whose device has a
// guest stage-1 mapping, and workers that run the built library (dist/) so
// guest drivers and DMA agents live on real other threads.
import { once } from 'node:events';
import { expect } from 'vitest';
import { Worker } from 'node:worker_threads';
import { ArgumentError } from '../src/errors.ts';
import { startHost, type DmaAgent, type Host, type HostOptions, type Vm } from '../src/host.ts';
import type { GuestQueue } from '../src/guest.ts';
import { PROT } from '../src/model/pgtable.ts';
import type { TranslationTable } from '../src/model/pgtable.ts';

export const LIB = new URL('../dist/index.js', import.meta.url).href;
export const ASID = 1;
export const IOVA = 0x4000_0000;
/** Guest data pages live from this IPA (first half of RAM is the guest's own). */
export const DATA_IPA = 0x10000;

export interface TestVm {
  vm: Vm;
  pt: TranslationTable;
  psid: number;
}

/** A VM with one device (vSID 0) attached with a stage-1 table for ASID 1. */
export async function makeVm(host: Host, vmid: number, psid: number): Promise<TestVm> {
  const vm = await host.createVm({ vmid, streams: [{ vsid: 0, psid }] });
  const pt = vm.pageTable();
  await vm.attachDevice({ vsid: 0, cd: { asid: ASID, ttb0: pt.root } });
  return { vm, pt, psid };
}

/** Point `iova` at data page `page` of the guest (guest writes its PTE; no invalidation). */
export function mapPage(t: TestVm, iova: number, page: number): void {
  t.pt.map(iova, DATA_IPA + page * 4096, 4096, PROT.READ | PROT.WRITE);
}

/** Which data page a PA is, for the VM (or -1). */
export function pageOfPa(t: TestVm, pa: number): number {
  const off = pa - t.vm.ramBase - DATA_IPA;
  return off >= 0 && off % 4096 === 0 ? off / 4096 : -1;
}

/**
 * The model as the oracle of one invalidation through `q`, seen by `dma`:
 * IOVA at page 0 is cached; moved to page 1 it still translates to 0 (the
 * control: without the TLBI the cached translation survives the PTE change);
 * after invalidateRange it translates to 1.
 */
export function expectInvalidationSeen(t: TestVm, q: GuestQueue, dma: DmaAgent): void {
  mapPage(t, IOVA, 0);
  expect(pageOfPa(t, dma.translate(t.psid, -1, IOVA).pa)).toBe(0);
  mapPage(t, IOVA, 1);
  expect(pageOfPa(t, dma.translate(t.psid, -1, IOVA).pa)).toBe(0);
  q.invalidateRange(1, IOVA, 4096);
  expect(pageOfPa(t, dma.translate(t.psid, -1, IOVA).pa)).toBe(1);
}

/**
 * The adaptive poller at its two extremes (src/poll-policy.ts; issue #12: the
 * lost-wakeup hammer and the tests pass with both). Most aggressive: a wake
 * is worth a second and there is no CPU limit, so after every work it polls
 * its longest budget (~0.5 s), like a kernel thread that never sleeps. Most
 * lazy: a wake is worth nothing and no CPU may be spent, so it never polls
 * and sleeps after every pass, as do the guests (they spin 0).
 */
export const POLL_EXTREMES = {
  aggressive: { poll: { policy: 'adaptive', wakeCostUs: 1_000_000, maxSpinUs: 1_000_000, cpuShare: 1 } },
  lazy: { poll: { policy: 'adaptive', wakeCostUs: 0, maxSpinUs: 0, cpuShare: 0 }, guestSpinUs: 0 },
} as const satisfies Record<string, HostOptions>;

export async function withHost<T>(opts: HostOptions, fn: (host: Host) => Promise<T>): Promise<T> {
  const host = await startHost(opts);
  try {
    return await fn(host);
  } finally {
    await host.stop();
  }
}

/**
 * A worker running `body` (plain JS, an async function body) with `lib` (the
 * built package), `data` (workerData) and `post` (parentPort.postMessage) in
 * scope. Its return value, or its error as {name, message}, is posted back.
 */
export function evalWorker(body: string, data: unknown): Worker {
  const src = `
    const { workerData, parentPort } = require('node:worker_threads');
    const post = (m) => parentPort.postMessage(m);
    import(workerData.lib).then(async (lib) => {
      const data = workerData.data;
      try {
        const result = await (async () => { ${body} })();
        post({ done: true, result });
      } catch (e) {
        post({ done: true, error: { name: e && e.name, message: String(e && e.message), stack: String(e && e.stack) } });
      }
    });`;
  return new Worker(src, { eval: true, workerData: { lib: LIB, data } });
}

export interface WorkerOutcome {
  result?: unknown;
  error?: { name: string; message: string; stack: string };
}

/** The worker's final message (skipping progress messages). */
export async function outcome(w: Worker): Promise<WorkerOutcome> {
  for (;;) {
    const [m] = (await once(w, 'message')) as [WorkerOutcome & { done?: boolean }];
    if (m.done) return m;
  }
}

/** What `fn` threw on this thread (undefined when it returned): for asserting an error's type and fields. */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

/** The argument an ArgumentError thrown by `fn` names (undefined when it threw something else or returned). */
export function refusedArgument(fn: () => unknown): string | undefined {
  const e = thrown(fn);
  return e instanceof ArgumentError ? e.argument : undefined;
}
