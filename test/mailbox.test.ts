// The mailbox protocol against a generic server thread (not the kernel
// thread): results, payload, unknown ops, a throwing handler, timeouts and a
// dead server each end as specified; concurrent clients share one slot.
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import type { Worker } from 'node:worker_threads';
import {
  CTL_HEARTBEAT_MS, CTL_STALE_MS, CTL_STATE, MB_PAYLOAD_BYTES, MMIO_BYTES, SERVER_STATE, VMM_CTL,
} from '../src/layout.ts';
import { MB_EIO, MB_ENOSYS, MailboxClient } from '../src/mailbox.ts';
import { MailboxTimeoutError, ServerDeadError } from '../src/waiter.ts';
import { evalWorker, outcome } from './doorbell-helpers.ts';

const OP_ADD = 7;
const OP_SUM_PAYLOAD = 8;
const OP_THROW = 9;

const SERVER = `
  const L = lib.layout;
  const i32 = new Int32Array(data.sab);
  const ctl = data.ctl;
  const srv = new lib.MailboxServer(i32);
  srv.register(${OP_ADD}, (m, b) => { m[b + L.MB_RES0] = 0; m[b + L.MB_RES0 + 1] = m[b + L.MB_ARG0] + m[b + L.MB_ARG0 + 1]; });
  srv.register(${OP_SUM_PAYLOAD}, (m, b) => {
    const bytes = new Uint8Array(m.buffer, m[b + L.MB_PAYLOAD], m[b + L.MB_ARG0]);
    m[b + L.MB_RES0] = 0; m[b + L.MB_RES0 + 1] = bytes.reduce((s, x) => s + x, 0);
  });
  srv.register(${OP_THROW}, () => { throw new Error('malformed request'); });
  for (const id of data.ids) srv.add(id);
  Atomics.store(i32, ctl + L.CTL_STATE, L.SERVER_STATE.RUNNING);
  post({ ready: true });
  const running = () => Atomics.load(i32, ctl + L.CTL_STATE) === L.SERVER_STATE.RUNNING;
  while (running()) {
    Atomics.add(i32, ctl + L.CTL_HEARTBEAT, 1);
    if (srv.poll() === 0) L.sleepUnlessWork(i32, ctl, () => !running() || srv.hasWork(), 20);
  }
  return 'stopped';
`;

const CLIENT = `
  const c = new lib.MailboxClient(data.handle);
  for (let i = 0; i < data.n; i++) {
    c.args[0] = i; c.args[1] = data.k;
    if (c.call(${OP_ADD}) !== 0 || c.results[1] !== i + data.k) throw new Error('wrong result at ' + i);
  }
  return data.n;
`;

let server: Worker | null = null;
afterEach(async () => {
  await server?.terminate();
  server = null;
});

async function startServer(ids: number[], staleMs = 5000): Promise<SharedArrayBuffer> {
  const sab = new SharedArrayBuffer(MMIO_BYTES);
  const i32 = new Int32Array(sab);
  i32[VMM_CTL + CTL_HEARTBEAT_MS] = 20;
  i32[VMM_CTL + CTL_STALE_MS] = staleMs;
  server = evalWorker(SERVER, { sab, ctl: VMM_CTL, ids });
  await once(server, 'message');
  return sab;
}

const handle = (sab: SharedArrayBuffer, id: number) => ({ sab, ctl: VMM_CTL, id, server: 'test server' });

describe('mailbox', () => {
  it('answers calls with results and payload; unknown op is ENOSYS; a throwing handler is EIO and the server lives', async () => {
    const sab = await startServer([0]);
    const c = new MailboxClient(handle(sab, 0));
    for (let i = 0; i < 1000; i++) {
      c.args[0] = i;
      c.args[1] = 3 * i;
      expect(c.call(OP_ADD)).toBe(0);
      expect(c.results[1]).toBe(4 * i);
    }
    c.payload.fill(2, 0, MB_PAYLOAD_BYTES);
    c.args[0] = MB_PAYLOAD_BYTES;
    expect(c.call(OP_SUM_PAYLOAD)).toBe(0);
    expect(c.results[1]).toBe(2 * MB_PAYLOAD_BYTES);
    expect(c.call(99)).toBe(MB_ENOSYS);
    expect(c.call(OP_THROW)).toBe(MB_EIO);
    c.args[0] = 1;
    c.args[1] = 1;
    expect(await c.callAsync(OP_ADD)).toBe(0);
    expect(c.results[1]).toBe(2);
  });

  it('two client threads sharing one mailbox each get their own answers', async () => {
    const sab = await startServer([3]);
    const ws = [1000, 2000].map((k) => evalWorker(CLIENT, { handle: handle(sab, 3), n: 2000, k }));
    const outs = await Promise.all(ws.map(outcome));
    await Promise.all(ws.map((w) => w.terminate()));
    expect(outs.map((o) => o.error)).toEqual([undefined, undefined]);
    expect(outs.map((o) => o.result)).toEqual([2000, 2000]);
  });

  it('a mailbox nobody serves times out with MailboxTimeoutError', async () => {
    const sab = await startServer([0]);
    const c = new MailboxClient(handle(sab, 1));
    expect(() => c.call(OP_ADD, 100)).toThrow(MailboxTimeoutError);
  });

  it('a server that says it stopped gives ServerDeadError', async () => {
    const sab = await startServer([0]);
    Atomics.store(new Int32Array(sab), VMM_CTL + CTL_STATE, SERVER_STATE.DEAD);
    const c = new MailboxClient(handle(sab, 0));
    await expect(c.callAsync(OP_ADD, 10_000)).rejects.toThrow(ServerDeadError);
  });

  it('a server that vanished without a word is found dead by its stale heartbeat', async () => {
    const sab = await startServer([0], 200);
    await server!.terminate();
    const c = new MailboxClient(handle(sab, 0));
    expect(() => c.call(OP_ADD, 10_000)).toThrow(ServerDeadError);
  });
});
