// Thread faults stay inside the thread's own clients (issue 9, items 4-6): a
// VMM thread that throws or exits is a ServerDeadError for the trap guests of
// that VMM only; an awaited doorbell submitAsync keeps the process alive
// until it settles; setup on a stopped host is the typed dead-server error;
// host.stop() is bounded even when a worker is wedged, and says what it killed.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ServerDeadError, trapPathOf } from '../src/index.ts';
import { LIB, makeVm, thrown, withHost } from './doorbell-helpers.ts';

const TLBI = [{ op: 'TLBI_NH_ASID', asid: 1 }] as const;

describe('VMM thread faults', () => {
  for (const how of ['throw', 'exit'] as const) {
    it(`a VMM that ${how}s is ServerDeadError for its trap guests; a doorbell guest of another VM keeps running`, async () => {
      await withHost({ heartbeatMs: 10, staleMs: 2000 }, async (host) => {
        const a = await makeVm(host, 1, 0x10);
        const b = await makeVm(host, 2, 0x20);
        const trapQ = await a.vm.openQueue({ path: 'trap', log2size: 4 });
        const bellQ = await b.vm.openQueue({ path: 'doorbell', log2size: 4 });
        trapQ.submit([...TLBI]);
        const vmm = await trapPathOf(host);
        vmm.crashOnNextPass(how);
        // The VMM marks itself dead (throw) or the host sees the exit; either way the guest gets the typed error.
        const dead = await vmm.closed;
        expect(dead).toBeInstanceOf(ServerDeadError);
        const err = thrown(() => trapQ.submit([...TLBI], { timeoutMs: 20_000 }));
        expect(err).toBeInstanceOf(ServerDeadError);
        expect((err as ServerDeadError).server).toBe('VMM');
        // The kernel thread and its doorbell guests are untouched.
        for (let k = 0; k < 20; k++) bellQ.submit([...TLBI]);
        await bellQ.submitAsync([...TLBI]);
        expect(bellQ.state().syncs).toBe(21);
        // Setup on the dead VMM is the same typed error.
        await expect(a.vm.openQueue({ path: 'trap' })).rejects.toBeInstanceOf(ServerDeadError);
      });
    });
  }
});

describe('a stopped host', () => {
  it('refuses setup calls with ServerDeadError naming the kernel thread', async () => {
    let vm: Awaited<ReturnType<typeof makeVm>> | undefined;
    const host = await withHost({}, async (h) => {
      vm = await makeVm(h, 1, 0x10);
      return h;
    });
    for (const call of [
      () => host.createVm({ vmid: 2, streams: [{ vsid: 0, psid: 0x20 }] }),
      () => host.dma(),
      () => vm!.vm.openQueue({ path: 'doorbell' }),
      () => vm!.vm.openQueue({ path: 'trap' }),
      () => vm!.vm.attachDevice({ vsid: 0, cd: { asid: 1, ttb0: vm!.pt.root } }),
    ]) {
      const e = await call().then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(ServerDeadError);
      expect((e as ServerDeadError).server).toBe('kernel thread');
    }
    // A second stop has nothing left to do.
    expect(await host.stop()).toEqual({ killed: [] });
  });

  it('a wedged kernel thread and VMM are terminated after the grace period, and stop() says so', async () => {
    await withHost({}, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      await t.vm.openQueue({ path: 'trap', log2size: 4 });
      (await trapPathOf(host)).crashOnNextPass('wedge');
      host.crashKernelThreadOnNextPass('wedge');
      const report = await host.stop({ graceMs: 50 });
      expect(report.killed).toEqual(['VMM', 'kernel thread']);
    });
  });

  it('stop() of a healthy host kills nothing', async () => {
    await withHost({}, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      await t.vm.openQueue({ path: 'trap', log2size: 4 });
      expect(await host.stop()).toEqual({ killed: [] });
    });
  });
});

/** Run an ES module body in a fresh node process with the built package as `lib`; its stdout lines and exit code. */
function runChild(body: string): { lines: string[]; status: number | null } {
  // A file, not `-e`: workers inherit the parent's execArgv, and --input-type would stop them starting.
  const dir = mkdtempSync(join(tmpdir(), 'vcmdq-child-'));
  const file = join(dir, 'child.mjs');
  writeFileSync(file, `import * as lib from ${JSON.stringify(LIB)};\n${body}`);
  try {
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 30_000 });
    return { lines: r.stdout.split('\n').filter((l) => l !== ''), status: r.status };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('an awaited submitAsync keeps the process alive until it settles', () => {
  for (const path of ['doorbell', 'trap'] as const) {
    it(`${path}: submitAsync after host.stop() rejects with KernelThreadDeadError, and the code after it runs`, () => {
      const { lines, status } = runChild(`
        const host = await lib.startHost();
        const vm = await host.createVm({ vmid: 1, streams: [{ vsid: 0, psid: 0x10 }] });
        const q = await vm.openQueue({ path: '${path}', log2size: 4 });
        await host.stop();
        try { await q.submitAsync([{ op: 'TLBI_NH_ASID', asid: 1 }]); console.log('resolved'); }
        catch (e) { console.log(e instanceof lib.ServerDeadError ? 'dead' : 'other ' + e.name); }
        console.log('after');
      `);
      expect(lines).toEqual(['dead', 'after']);
      expect(status).toBe(0);
    });
  }

  it('doorbell: a submitAsync pending while host.stop() runs rejects with KernelThreadDeadError', () => {
    // Each command takes 20 s in the kernel thread, so the submission is pending when stop() begins.
    const { lines, status } = runChild(`
      const host = await lib.startHost({ injectDelayUs: 20000000 });
      const vm = await host.createVm({ vmid: 1, streams: [{ vsid: 0, psid: 0x10 }] });
      const q = await vm.openQueue({ log2size: 4 });
      // Settled during or after stop(): handled from the start, so an early rejection is not an unhandled one.
      const p = q.submitAsync([{ op: 'TLBI_NH_ASID', asid: 1 }], { timeoutMs: 60000 }).then(() => 'resolved', (e) => e.name);
      await host.stop();
      console.log(await p);
      console.log('after');
    `);
    expect(lines).toEqual(['KernelThreadDeadError', 'after']);
    expect(status).toBe(0);
  });
});
