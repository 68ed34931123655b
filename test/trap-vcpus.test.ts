// Several guest vCPUs trapping at once (into the one VMM thread, or each
// running the VMM's emulation under its BQL), and the threads behind a
// trapped write dying: the guest gets a specific error, never a hang.
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { KernelThreadDeadError, ServerDeadError, startHost, trapPathOf, type Host } from '../src/index.ts';
import { evalWorker, makeVm, outcome, thrown } from './doorbell-helpers.ts';
import { TRAP_PATHS, kernelCounter, trapStats } from './trap-helpers.ts';

let host: Host | undefined;
afterEach(async () => {
  await host?.stop();
  host = undefined;
});

const VCPU = `
  const q = lib.GuestQueue.attach(data.queue);
  const modes = ['none', 'sev', 'irq'];
  let forwarded = 0, handled = 0;
  for (let i = 0; i < data.rounds; i++) {
    const n = 1 + (i % 4);
    const cmds = Array.from({ length: n }, (_, k) => ({ op: 'TLBI_NH_VA', asid: data.cpu + 1, addr: BigInt(0x40000000 + (i * 4 + k) * 4096), leaf: 1 }));
    if (i % 5 === 0) { cmds.push({ op: 'PREFETCH_CONFIG', sid: 0 }); handled++; }
    q.submit(cmds, { cs: modes[(i + data.cpu) % 3] });
    forwarded += n;
    handled++; // the CMD_SYNC
  }
  return { state: q.state(), forwarded, handled };
`;

describe.each(TRAP_PATHS)('several vCPUs trapping at once, %s', (path) => {
  it('4 guest threads, one queue each, one VMM: every command executed once, every CMD_SYNC completed', async () => {
    host = await startHost();
    const t = await makeVm(host, 6, 0x10);
    const kernel = await kernelCounter(host);
    const rounds = 150;
    const queues = [];
    for (let cpu = 0; cpu < 4; cpu++) queues.push(await t.vm.openQueue({ path, log2size: 5 }));
    const workers = queues.map((q, cpu) => evalWorker(VCPU, { queue: q.handle, rounds, cpu }));
    const outs = await Promise.all(workers.map(outcome));
    await Promise.all(workers.map((w) => w.terminate()));
    let total = 0;
    for (const [cpu, o] of outs.entries()) {
      expect(o.error).toBeUndefined();
      const r = o.result as { state: { cons: number; prod: number; cmds: number; syncs: number; errors: number }; forwarded: number; handled: number };
      expect(r.state.syncs).toBe(rounds);
      expect(r.state.errors).toBe(0);
      expect(r.state.cons).toBe(r.state.prod);
      expect(r.state.cmds).toBe(r.forwarded + r.handled);
      expect(trapStats(queues[cpu]!.handle)).toMatchObject({ forwarded: r.forwarded, handled: r.handled });
      total += r.forwarded;
    }
    // The kernel executed exactly what the four queues forwarded: nothing twice, nothing dropped.
    expect(kernel(6).executed).toBe(total);
  });
});

describe.each(TRAP_PATHS)('the kernel thread dead under a trapped write, %s', (path) => {
  it('kernel thread terminated: the guest thread gets KernelThreadDeadError from its trapped PROD write', async () => {
    host = await startHost();
    const t = await makeVm(host, 1, 0x10);
    const q = await t.vm.openQueue({ path, log2size: 4 });
    q.submit([{ op: 'TLBI_NH_ALL' }]);
    await host.terminateKernelThread();
    const w = evalWorker(`
      const q = lib.GuestQueue.attach(data.queue);
      q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'sev', timeoutMs: 30000 });
    `, { queue: q.handle });
    const out = await outcome(w);
    await w.terminate();
    expect(out.error?.name).toBe('KernelThreadDeadError');
    expect(out.error?.message).toMatch(/trapped register write.*PROD=0x4 CONS=0x2/);
  });

  it('kernel thread gone without a trace while the guest waits on the main thread: KernelThreadDeadError, not a dead VMM', async () => {
    // The main thread is blocked, so nobody sees the worker exit: the VMM finds the
    // kernel thread's heartbeat stale, and keeps its own beating while it waits.
    host = await startHost({ heartbeatMs: 10, staleMs: 300 });
    const t = await makeVm(host, 1, 0x10);
    const q = await t.vm.openQueue({ path, log2size: 4 });
    host.crashKernelThreadOnNextPass();
    const err = thrown(() => q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'sev', timeoutMs: 20_000 }));
    expect(err).toBeInstanceOf(KernelThreadDeadError);
  });
});

describe('the VMM thread dead under a trapped write (trap: trap-inline has no VMM thread)', () => {
  it('VMM thread terminated: the guest thread gets ServerDeadError naming the VMM', async () => {
    host = await startHost();
    const t = await makeVm(host, 1, 0x10);
    const q = await t.vm.openQueue({ path: 'trap', log2size: 4 });
    const w = evalWorker(`
      const q = lib.GuestQueue.attach(data.queue);
      post({ ready: true });
      await new Promise((r) => require('node:worker_threads').parentPort.once('message', r));
      q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'sev', timeoutMs: 30000 });
    `, { queue: q.handle });
    const done = outcome(w);
    await once(w, 'message');
    await (await trapPathOf(host)).terminate();
    w.postMessage('go');
    const out = await done;
    await w.terminate();
    expect(out.error?.name).toBe('ServerDeadError');
    expect(out.error?.message).toMatch(/^VMM is dead/);
  });

  it('VMM thread gone without a trace while the guest waits on the main thread: ServerDeadError from the stale heartbeat', async () => {
    host = await startHost({ heartbeatMs: 10, staleMs: 300 });
    const t = await makeVm(host, 1, 0x10);
    const q = await t.vm.openQueue({ path: 'trap', log2size: 4 });
    (await trapPathOf(host)).crashOnNextPass();
    const err = thrown(() => q.submit([{ op: 'TLBI_NH_ASID', asid: 1 }], { cs: 'sev', timeoutMs: 20_000 }));
    expect(err).toBeInstanceOf(ServerDeadError);
    expect((err as ServerDeadError).server).toBe('VMM');
  });
});
