// The kernel thread's in-thread steps for the node-local profile
// (bench/sim-node-local.ts), timed where the kernel thread runs: on a
// thread of the server CPU, in an isolate of its own that has run nothing
// else, as the real kernel thread's has not (the producer's main thread is
// on the other CPU and has run every other consumer the bench builds, the
// anatomy's model-bypassed one included). It waits for the starter's
// message, sent once the thread is placed, then posts one ServerMicro.
import { parentPort } from 'node:worker_threads';
import { runMicro } from './micro.ts';
import { measurePassCosts } from './sim-micro.ts';
import type { ServerMicro } from './sim-node-local.ts';

parentPort?.once('message', () => {
  const consume = runMicro('consume');
  const pass = measurePassCosts();
  parentPort?.postMessage({ consume_ns_per_cmd: consume.ns_per_cmd, pass_ns: pass.pass_ns } satisfies ServerMicro);
});
