// Every GuestQueue entry point at its boundary (issue #9): random argument
// values thrown at every method, on both paths, each call watched from
// another thread. Every call returns, or throws a typed error (ArgumentError
// naming the argument, or a queue/timeout error of the call), and never
// spins: the worker bumps a progress word after each call and the main thread
// fails the test when it stops moving. AbortSignal on the async forms
// (issue #14): an abort before or during the wait rejects with the signal's
// reason, and commands already published still execute.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeCommand } from '../src/codec.ts';
import { QueueError } from '../src/guest.ts';
import { atomicsWaitAsync } from '../src/waiter.ts';
import '../src/trap/path.ts';
import { evalWorker, makeVm, outcome, refusedArgument, withHost } from './doorbell-helpers.ts';

/** Argument values, as tokens a worker turns into values (NaN, typed arrays... do not survive JSON). */
const VALUE = fc.constantFrom(
  'undef', 'null', 'NaN', 'Inf', '-Inf', 'obj', 'arr', 'true', 'str', 'u32x0', 'u32x8', 'u32zero8', 'i32x8',
  -1, 0, 1, 3, 1.5, 7, 64, 65, 4096, 3000, 65537, 2 ** 31, 2 ** 48, 1e9,
  'none', 'sev', 'irq', 'loud', 'doorbell', 'trap',
);
const CMDS = fc.constantFrom('cmds-ok', 'cmds-bad-op', 'cmds-null', 'cmds-wide', 'cmds-empty', 'undef', 'str', 7);
const OPTS = fc.oneof(VALUE, fc.record({ cs: VALUE, timeoutMs: VALUE, sync: VALUE }, { requiredKeys: [] }));
const CALL = fc.oneof(
  fc.tuple(fc.constantFrom('submit', 'submitAsync'), CMDS, OPTS),
  fc.tuple(fc.constantFrom('submitWords', 'submitWordsAsync'), VALUE, VALUE, VALUE, VALUE),
  fc.tuple(fc.constantFrom('sync'), VALUE, VALUE),
  fc.tuple(fc.constantFrom('syncAsync', 'drain'), OPTS),
  fc.tuple(fc.constantFrom('invalidateRange', 'invalidateRangeAsync'), VALUE, VALUE, VALUE, VALUE, VALUE, OPTS),
  fc.tuple(fc.constantFrom('switchPath'), VALUE, VALUE),
  fc.tuple(fc.constantFrom('skipFaultingCommand')),
);

const RUNNER = `
  const q = lib.GuestQueue.attach(data.queue);
  const progress = new Int32Array(data.progress);
  const ok = new Uint32Array(4); ok.set(data.tlbi);
  const v = (t) => {
    if (t !== null && typeof t === 'object') return Object.fromEntries(Object.entries(t).map(([k, x]) => [k, v(x)]));
    switch (t) {
      case 'undef': return undefined; case 'null': return null; case 'NaN': return NaN; case 'Inf': return Infinity;
      case '-Inf': return -Infinity; case 'obj': return {}; case 'arr': return []; case 'true': return true; case 'str': return 'x';
      case 'u32x0': return new Uint32Array(0); case 'i32x8': return new Int32Array(8);
      case 'u32x8': { const w = new Uint32Array(8); w.set(ok); w.set(ok, 4); return w; }
      case 'u32zero8': return new Uint32Array(8);
      case 'cmds-ok': return [{ op: 'TLBI_NH_ASID', asid: 1 }, { op: 'TLBI_NH_ALL' }];
      case 'cmds-bad-op': return [{ op: 'TLBI_NOPE' }];
      case 'cmds-null': return [null];
      case 'cmds-wide': return [{ op: 'TLBI_NH_ASID', asid: 70000 }];
      case 'cmds-empty': return [];
      default: return t;
    }
  };
  const outcomes = [];
  for (const [method, ...args] of data.calls) {
    let r;
    try {
      r = q[method](...args.map(v));
      if (r instanceof Promise) await r;
      outcomes.push({ method, ok: true });
    } catch (e) {
      outcomes.push({ method, args, name: e && e.name, argument: e && e.argument, message: String(e && e.message) });
    }
    // A refused command (zero words) leaves the queue stopped: resolve it as its caller would, bounded.
    for (let k = 0; k < 100 && q.skipFaultingCommand(); k++) {
      try { q.drain(5000); } catch (e) { if (e.name !== 'CommandError') throw e; }
    }
    Atomics.add(progress, 0, 1);
    Atomics.notify(progress, 0);
  }
  return outcomes;
`;

const TYPED = new Set(['ArgumentError', 'CommandError', 'SyncTimeoutError', 'PathSwitchError']);

describe('every GuestQueue method at its boundary', () => {
  for (const path of ['doorbell', 'trap'] as const) {
    it(`${path}: random arguments: each call returns or throws a typed error, and never spins`, async () => {
      await withHost({ spinUs: 20 }, async (host) => {
        const t = await makeVm(host, 1, 0x10);
        const q = await t.vm.openQueue({ path, standby: [path === 'trap' ? 'doorbell' : 'trap'], log2size: 4 });
        const calls = fc.sample(CALL, { numRuns: 300, seed: path === 'trap' ? 2 : 1 });
        const [w0, w1] = encodeCommand({ op: 'TLBI_NH_ALL' });
        const tlbi = [Number(w0 & 0xffffffffn), Number(w0 >> 32n), Number(w1 & 0xffffffffn), Number(w1 >> 32n)];
        const progress = new Int32Array(new SharedArrayBuffer(4));
        const w = evalWorker(RUNNER, { queue: q.handle, calls, progress: progress.buffer, tlbi });
        const done = outcome(w);
        // The watchdog: no call may take longer than this without the progress word moving.
        for (let seen = 0; seen < calls.length;) {
          const r = atomicsWaitAsync(progress, 0, seen, 20_000);
          if (r.async) expect(await r.value, `stuck after call ${seen}: ${JSON.stringify(calls[seen])}`).toBe('ok');
          seen = Atomics.load(progress, 0);
        }
        const out = await done;
        await w.terminate();
        expect(out.error).toBeUndefined();
        const outcomes = out.result as { method: string; ok?: boolean; name?: string; argument?: string; message?: string }[];
        expect(outcomes.length).toBe(calls.length);
        for (const o of outcomes) {
          if (o.ok) continue;
          expect(TYPED.has(o.name!), `${o.method}: ${o.name}: ${o.message}`).toBe(true);
          if (o.name === 'ArgumentError') expect(o.argument, o.message).toBeTruthy();
        }
        // Both endings happen: the sample is not all refusals.
        expect(outcomes.some((o) => o.ok)).toBe(true);
        expect(outcomes.some((o) => o.name === 'ArgumentError')).toBe(true);
      });
    }, 120_000);
  }

  it('the issue #9 cases: cs loud, timeoutMs NaN/negative/Infinity are refused naming the argument; 0 checks once', async () => {
    await withHost({}, async (host) => {
      const t = await makeVm(host, 1, 0x10);
      for (const path of ['doorbell', 'trap']) {
        const q = await t.vm.openQueue({ path });
        const cmds = [{ op: 'TLBI_NH_ASID' as const, asid: 1 }];
        const cases: [string, () => unknown][] = [
          ['cs', () => q.submit(cmds, { cs: 'loud' as 'sev', timeoutMs: 2000 })],
          ['timeoutMs', () => q.submit(cmds, { timeoutMs: NaN })],
          ['timeoutMs', () => q.submit(cmds, { timeoutMs: -1 })],
          ['timeoutMs', () => q.submit(cmds, { timeoutMs: Infinity })],
          ['n', () => q.submitWords(new Uint32Array(4), 2, 'sev')],
          ['words', () => q.submitWords([0, 0, 0, 0] as unknown as Uint32Array, 1, 'sev')],
          ['cmds[0]', () => q.submit([{ op: 'TLBI_NH_ASID', asid: 65537 }])],
        ];
        const before = q.state();
        for (const [arg, call] of cases) expect(refusedArgument(call), arg).toBe(arg);
        expect(q.state()).toEqual(before);
        // timeoutMs 0: never blocks. A trapped PROD write completes the commands before it returns, so the
        // trap path succeeds; on the doorbell the answer depends on the kernel thread, but it is immediate.
        try {
          q.submit(cmds, { timeoutMs: 0 });
        } catch (e) {
          expect(path).toBe('doorbell');
          expect((e as Error).name).toBe('SyncTimeoutError');
        }
        q.drain();
      }
    });
  });
});

describe('AbortSignal on the async forms', () => {
  for (const path of ['doorbell', 'trap'] as const) {
    it(`${path}: an abort before the call rejects with the reason and sends nothing`, async () => {
      await withHost({}, async (host) => {
        const t = await makeVm(host, 1, 0x10);
        const q = await t.vm.openQueue({ path });
        const reason = new Error('changed my mind');
        const signal = AbortSignal.abort(reason);
        const before = q.state();
        await expect(q.submitAsync([{ op: 'TLBI_NH_ALL' }], { signal })).rejects.toBe(reason);
        await expect(q.invalidateRangeAsync(1, 0x1000, 4096, 4096, true, { signal })).rejects.toBe(reason);
        await expect(q.syncAsync({ signal })).rejects.toBe(reason);
        expect(q.state()).toEqual(before);
      });
    });

    it(`${path}: an abort during the wait rejects at once; the published commands still execute`, async () => {
      await withHost({}, async (host) => {
        const t = await makeVm(host, 1, 0x10);
        const q = await t.vm.openQueue({ path });
        const refused = q.submitWordsAsync(new Uint32Array(4), 1, 'sev'); // opcode 0: CERROR_ILL, the queue stops
        const ac = new AbortController();
        const before = q.state().syncs;
        // Queued behind the stopped command, so its CMD_SYNC cannot complete until the skip.
        const waiting = q.submitAsync([{ op: 'CMD_SYNC', cs: 0 }], { signal: ac.signal, timeoutMs: 60_000 });
        const e = await refused.catch((x: unknown) => x);
        expect(e).toBeInstanceOf(QueueError);
        // Both paths name the reason (the trap path's VMM writes ERR_REASON kinds of its own).
        expect((e as QueueError).reason).toMatch(/^opcode 0x00 is Reserved/);
        const reason = new Error('unmount');
        ac.abort(reason);
        await expect(waiting).rejects.toBe(reason);
        expect(q.skipFaultingCommand()).toBe(true);
        q.drain();
        // The skip's CMD_SYNC, then the aborted call's command and its CMD_SYNC, and the refused call's CMD_SYNC.
        expect(q.state().syncs - before).toBe(4);
      });
    });
  }
});
