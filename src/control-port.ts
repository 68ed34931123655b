// Server threads (kernel thread, VMM) never return to their event loop while
// serving, so their setup messages are drained synchronously with
// receiveMessageOnPort when the host bumps their CTRL word. Each message is
// answered on the same port with {id, ok, error?}; a refused message is an
// answer, not a dead thread.
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { CRASH } from './layout.ts';

export function drainControlPort<M extends { id: number }>(port: MessagePort, handle: (msg: M) => void): void {
  for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
    const msg = m.message as M;
    try {
      handle(msg);
      port.postMessage({ id: msg.id, ok: true });
    } catch (e) {
      port.postMessage({ id: msg.id, ok: false, error: e instanceof Error ? e.message : String(e) });
    }
  }
}

/** The CTL_CRASH test hook fired in a server thread: fail the way it asks (layout.ts CRASH). */
export function crashNow(how: number): void {
  if (how === CRASH.THROW) throw new Error('CTL_CRASH test hook: an exception in the server loop');
  if (how === CRASH.WEDGE) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // nobody ever notifies this word
  process.exit(70);
}
