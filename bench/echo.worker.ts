// postMessage echo baseline: returns every message on the port it came from.
// Exits when the producer closes the port or terminates it.
import { parentPort } from 'node:worker_threads';

const port = parentPort;
if (port) port.on('message', (m: unknown) => port.postMessage(m));
