// The `scale` scenario (issue 15): what many queues cost.
//  - Round trip (TLBI_NH_VA + CMD_SYNC, CS=SEV, blocking) on one busy queue
//    while 0, 63, 255 or 1023 other queues exist, idle or with 1% of them
//    active; one host per idle count, all of a kernel-thread count's hosts
//    interleaved round by round (runInterleaved), so their ratios share a
//    time window.
//  - Batched throughput spread over 1, 16 and 256 queues.
//  - Host memory per VM and per queue, and a soak of 64 VMs x 16 queues
//    (every command executed once, RSS per round), as notes.
//  - Each with 1 and 2 kernel threads.
// Who drives the 1% active queues: the measuring thread itself, outside the
// timed region. Before each sample it publishes one TLBI (no CMD_SYNC, not
// waited for) to the next active queue in turn. On 2 cores a guest thread
// per active queue would measure the run queue (3+ runnable threads on 2
// cores), not the scan; this way the kernel thread finds the active queues'
// bits beside the busy queue's, as if other guests had just published, and
// the round trip pays for the scan and their consumption only.
import { startHost, type GuestQueue, type Host, type Vm } from '../src/index.ts';
import { startThreads } from './affinity.ts';
import type { LatencyPath } from './baselines.ts';
import { latencyRow, runInterleaved, type MeasuredRow, type Profile } from './harness.ts';
import { closeAll, type ScenarioDef } from './scenario-kit.ts';
import { SPIN_US, STREAM, tlbiNhVaWords } from './queue-api.ts';
import type { Params } from './types.ts';

export const SCALE_IDLE_QUEUES = [0, 63, 255, 1023] as const;
export const SCALE_ACTIVE_PCT = [0, 1] as const;
export const SCALE_KTHREADS = [1, 2] as const;
export const SCALE_SPREAD_QUEUES = [1, 16, 256] as const;
/** Commands per throughput batch (one submitWords call), and batches per timed iteration. */
export const SCALE_BATCH = 16;
const BATCHES_PER_ITERATION = 256;
/** Queues per VM: one per vCPU of a 16-vCPU guest (the README's 64 VMs x 16 queues). */
export const QUEUES_PER_VM = 16;
const VM_RAM = 1 << 20;
const LOG2SIZE = 4;
/**
 * A heartbeat this stale means a dead kernel thread: long, because this
 * scenario runs up to three busy threads (two kernel threads and the
 * producer) on 2 cores, where a thread may wait its turn for a while; a
 * liveness false alarm would end the run, a late one costs nothing here.
 */
const STALE_MS = 30_000;

/** Active queues among `idle` others at `pct` percent (at least one when pct > 0 and there are any). */
export function activeCount(idle: number, pct: number): number {
  return pct === 0 || idle === 0 ? 0 : Math.max(1, Math.round((idle * pct) / 100));
}

/** VMs for `queues` queues of QUEUES_PER_VM each (the last one may hold fewer). */
export function vmsFor(queues: number): number {
  return Math.ceil(queues / QUEUES_PER_VM);
}

/** Host memory for `vms` VMs of VM_RAM (each placed at 2 MiB, with its stage-2 tables) plus the MMIO region's share. */
export function memBytesFor(vms: number): number {
  return (2 * vms + 16) << 20;
}

/**
 * Queue k of `n` spread over VMs: interleaved (VM 0's first, VM 1's first,
 * ...), so the first m queues of the list touch min(m, VMs) VMs, and with two
 * kernel threads both threads' queues.
 */
export function interleave<T>(perVm: readonly (readonly T[])[]): T[] {
  const out: T[] = [];
  const most = Math.max(0, ...perVm.map((v) => v.length));
  for (let j = 0; j < most; j++) for (const v of perVm) if (j < v.length) out.push(v[j]!);
  return out;
}

/** `n` queues of `vm`, their setup messages in flight together (qids in call order: each call allocates before its first await). */
function openQueues(vm: Vm, n: number): Promise<GuestQueue[]> {
  return Promise.all(Array.from({ length: n }, () => vm.openQueue({ log2size: LOG2SIZE })));
}

/** What the scenario runs: the issue's sizes (SCALE_PLAN), smaller in the smoke test. */
export interface ScalePlan {
  idleQueues: readonly number[];
  activePct: readonly number[];
  kthreads: readonly number[];
  spreadQueues: readonly number[];
  soakVms: number;
}

export const SCALE_PLAN: ScalePlan = {
  idleQueues: SCALE_IDLE_QUEUES, activePct: SCALE_ACTIVE_PCT, kthreads: SCALE_KTHREADS, spreadQueues: SCALE_SPREAD_QUEUES, soakVms: 64,
};

type Ctx = Parameters<ScenarioDef['run']>[0];

interface ScaleHost {
  host: Host;
  /** Queues by VM, VM 0 first. */
  perVm: GuestQueue[][];
  close(): Promise<void>;
}

/** A host with `vms` VMs of up to QUEUES_PER_VM queues each, `queues` in all. */
async function openScaleHost(queues: number, kthreads: number, slowdownNs: number): Promise<ScaleHost> {
  const vms = Math.max(1, vmsFor(queues));
  const opts = { spinUs: SPIN_US, kernelThreads: kthreads, memBytes: memBytesFor(vms), staleMs: STALE_MS, ...(slowdownNs > 0 ? { slowdownNs } : {}) };
  const host = (await startThreads('server', () => startHost(opts))).value;
  try {
    const perVm: GuestQueue[][] = [];
    for (let v = 0; v < vms; v++) {
      const vm: Vm = await host.createVm({ vmid: v + 1, ramBytes: VM_RAM, streams: [{ vsid: STREAM.vsid, psid: STREAM.psid + v }] });
      const n = Math.min(QUEUES_PER_VM, queues - v * QUEUES_PER_VM);
      perVm.push(await openQueues(vm, n));
    }
    return { host, perVm, close: async () => void (await host.stop()) };
  } catch (e) {
    await host.stop();
    throw e;
  }
}

/** The busy queue's round trip; before each sample, one unsynced publish to the next active queue (see the header). */
class BusyPath implements LatencyPath {
  readonly name = 'doorbell-spin' as const;
  readonly params: Params;
  private next = 0;
  constructor(private readonly busy: GuestQueue, private readonly active: GuestQueue[], private readonly words: Uint32Array,
    private readonly timeoutMs: number, idle: number, activePct: number, kthreads: number) {
    this.params = { idle_queues: idle, active_pct: activePct, kthreads };
  }

  sample(out: Float64Array, from: number, count: number): void {
    const { busy, active, words, timeoutMs } = this;
    for (let i = from; i < from + count; i++) {
      if (active.length !== 0) {
        active[this.next]!.submitWords(words, 1, null, timeoutMs);
        this.next = (this.next + 1) % active.length;
      }
      const t0 = performance.now();
      busy.submitWords(words, 1, 'sev', timeoutMs);
      out[i] = (performance.now() - t0) * 1000;
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

async function roundTrips(plan: ScalePlan, kthreads: number, profile: Profile, ctx: Ctx): Promise<MeasuredRow[]> {
  const hosts: ScaleHost[] = [];
  try {
    const words = tlbiNhVaWords(0x40000);
    const paths: BusyPath[] = [];
    for (const idle of plan.idleQueues) {
      const h = await openScaleHost(idle + 1, kthreads, ctx.slowdownNs);
      hosts.push(h);
      // The busy queue is VM 1's first; the others are idle or active.
      const [busy, ...others] = interleave(h.perVm);
      for (const pct of plan.activePct) {
        if (pct !== 0 && idle === 0) continue;
        // Active ones spread over the VMs (and threads): every k-th of the interleaved list.
        const n = activeCount(idle, pct);
        const active = Array.from({ length: n }, (_, k) => others[Math.floor((k * others.length) / n)]!);
        paths.push(new BusyPath(busy!, active, words, profile.timeoutMs, idle, pct, kthreads));
      }
    }
    const measured = await runInterleaved(`scale round trip, ${kthreads} kernel thread(s)`, paths, profile, ctx.progress);
    return measured.map((m) => ({ row: latencyRow('scale', 'doorbell-spin', m.path.params, m.samples, m.cpuUs).row }));
  } finally {
    await closeAll(hosts);
  }
}

/** Batched throughput: BATCHES_PER_ITERATION batches of SCALE_BATCH round-robin over the first `queues`, then a CMD_SYNC on each. */
async function throughput(plan: ScalePlan, kthreads: number, profile: Profile, ctx: Ctx): Promise<MeasuredRow[]> {
  const most = Math.max(...plan.spreadQueues);
  const h = await openScaleHost(most, kthreads, ctx.slowdownNs);
  try {
    const all = interleave(h.perVm);
    const words = new Uint32Array(4 * SCALE_BATCH);
    for (let k = 0; k < SCALE_BATCH; k++) tlbiNhVaWords(0x40000 + k, words, 4 * k);
    const none = new Uint32Array(0);
    const iterations = Math.max(8, Math.round(profile.samples / 200));
    const rows: MeasuredRow[] = [];
    for (const queues of plan.spreadQueues) {
      const qs = all.slice(0, queues);
      const iteration = (): void => {
        for (let b = 0; b < BATCHES_PER_ITERATION; b++) qs[b % queues]!.submitWords(words, SCALE_BATCH, null, profile.timeoutMs);
        for (const q of qs) q.submitWords(none, 0, 'sev', profile.timeoutMs);
      };
      ctx.progress.update(`[bench] scale throughput: ${queues} queue(s), ${kthreads} kernel thread(s)`);
      for (let k = 0; k < Math.max(2, iterations >> 3); k++) iteration();
      const perCmd = new Float64Array(iterations);
      const cpu0 = process.cpuUsage();
      for (let k = 0; k < iterations; k++) {
        const t0 = performance.now();
        iteration();
        perCmd[k] = ((performance.now() - t0) * 1000) / (BATCHES_PER_ITERATION * SCALE_BATCH);
      }
      const cpu = process.cpuUsage(cpu0);
      const m = latencyRow('scale', 'doorbell-spin', { queues, batch: SCALE_BATCH, kthreads }, perCmd, null);
      m.row.cpu_us_per_op = (cpu.user + cpu.system) / (iterations * BATCHES_PER_ITERATION * SCALE_BATCH);
      rows.push({ row: m.row });
    }
    return rows;
  } finally {
    await h.close();
  }
}

/** Host memory a VM and a queue take (notes), and the soak: 64 VMs x 16 queues, every command once, RSS per round. */
async function memoryAndSoak(notes: string[], vms: number, kthreads: number, rounds: number): Promise<void> {
  const host = (await startThreads('server', () => startHost({ kernelThreads: kthreads, memBytes: memBytesFor(vms), spinUs: SPIN_US, staleMs: STALE_MS }))).value;
  try {
    const top0 = host.phys.top;
    const rss0 = process.memoryUsage().rss;
    const perVm: GuestQueue[][] = [];
    for (let v = 0; v < vms; v++) {
      const vm = await host.createVm({ vmid: v + 1, ramBytes: VM_RAM, streams: [{ vsid: 0, psid: 0x100 + v }] });
      perVm.push(await openQueues(vm, QUEUES_PER_VM));
    }
    const perVmBytes = (host.phys.top - top0) / vms;
    const rssSetup = process.memoryUsage().rss;
    notes.push(`memory (${kthreads} kernel thread(s)): a VM of ${VM_RAM >> 20} MiB takes ${(perVmBytes / 2 ** 20).toFixed(2)} MiB of host memory `
      + `(its RAM at 2 MiB alignment and its stage-2 tables); a queue takes a 320-byte register block in the MMIO region, its ring `
      + `(16 bytes per entry, ${16 << LOG2SIZE} here) in its VM's RAM and a bit of its kernel thread's pending bitmap; `
      + `${vms} VMs x ${QUEUES_PER_VM} queues grew this process's RSS by ${((rssSetup - rss0) / 2 ** 20).toFixed(1)} MiB (host memory pages touched, worker heaps)`);
    const all = interleave(perVm);
    const words = tlbiNhVaWords(0x40000);
    const rss: string[] = [];
    for (let r = 0; r < rounds; r++) {
      for (const q of all) q.submitWords(words, 1, 'sev', 5000);
      rss.push((process.memoryUsage().rss / 2 ** 20).toFixed(1));
    }
    const wrong = all.filter((q) => { const s = q.state(); return s.cmds !== 2 * rounds || s.syncs !== rounds || s.errors !== 0; }).length;
    notes.push(`soak (${kthreads} kernel thread(s)): ${vms} VMs x ${QUEUES_PER_VM} queues, ${rounds} rounds of TLBI + CMD_SYNC on every queue: `
      + `${wrong === 0 ? 'every command executed exactly once' : `${wrong} queue(s) with a wrong count`}; RSS per round (MiB): ${rss.join(' ')}`);
  } finally {
    await host.stop();
  }
}

/** The scenario at the sizes of `plan`. */
export async function runScale(ctx: Ctx, plan: ScalePlan): Promise<{ measured: MeasuredRow[]; notes: string[] }> {
  const { profile } = ctx;
  const notes = [
    'round trip: the measuring thread publishes one unsynced TLBI to the next active queue before each sample (outside the timed region), '
    + 'so on 2 cores the kernel thread sees other queues\' bits without an extra runnable thread: the scan is measured, not the run queue',
    `throughput: ${BATCHES_PER_ITERATION} batches of ${SCALE_BATCH} round-robin over the queues from one thread, then a CMD_SYNC (CS=SEV) on each queue; per-command µs`,
  ];
  const measured: MeasuredRow[] = [];
  for (const kthreads of plan.kthreads) measured.push(...await roundTrips(plan, kthreads, profile, ctx));
  for (const kthreads of plan.kthreads) measured.push(...await throughput(plan, kthreads, profile, ctx));
  for (const kthreads of plan.kthreads) await memoryAndSoak(notes, plan.soakVms, kthreads, profile.name === 'quick' ? 3 : 20);
  return { measured, notes };
}

export const scale: ScenarioDef = {
  name: 'scale',
  title: 'Scale: busy-queue round trip among 0-1023 other queues (idle, 1% active), throughput over 1-256 queues, memory, 64 VMs x 16 queues soak; 1 and 2 kernel threads',
  run: (ctx) => runScale(ctx, SCALE_PLAN),
};
