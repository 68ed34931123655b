// `vcmdq replay`: run a command dump through one path (trap or doorbell) on
// a fresh emulated host and print what happened as one JSON object. The
// dump is what a guest wrote into its queue, one command per line as two
// hex words; the queue stopping on an error is a result, not a failure.

import { readFileSync } from 'node:fs';
import { QueueError } from '../guest.ts';
import { startHost } from '../host.ts';
import { queueUsed } from '../queue.ts';
import { CONS_ERR_MASK } from '../layout.ts';
import { readTrapCounts } from '../trap/transport.ts';
import '../trap/path.ts';
import { UsageError } from './codec-cmds.ts';

export const REPLAY_HELP =
  'replay --path trap|doorbell [--vmid N] [--stream VSID:PSID ...] FILE   run a command dump (two hex words per line, # comments)'
  + ' through one path; prints {path, prod, cons, error, executed, forwarded, handled_by_vmm} (forwarded and handled_by_vmm are 0 on doorbell)';

const LOG2SIZE = 8;
/** Commands published between drains: at most one Linux batch, so the error index is exact. */
const CHUNK = 64;

interface ReplayArgs {
  path: 'trap' | 'doorbell';
  vmid: number;
  streams: { vsid: number; psid: number }[];
  file: string;
}

function parseInt32(s: string | undefined, what: string): number {
  if (s === undefined || !/^(0x[0-9a-f]+|[0-9]+)$/i.test(s)) throw new UsageError(`${what} must be a number, got ${s ?? 'nothing'}`);
  const v = Number(s);
  if (v > 0xffffffff) throw new UsageError(`${what} must fit 32 bits, got ${s}`);
  return v;
}

function parseArgs(args: readonly string[]): ReplayArgs {
  let path: string | undefined;
  let vmid = 1;
  const streams: { vsid: number; psid: number }[] = [];
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--path') path = args[++i];
    else if (a === '--vmid') vmid = parseInt32(args[++i], '--vmid');
    else if (a === '--stream') {
      const [vsid, psid, extra] = (args[++i] ?? '').split(':');
      if (extra !== undefined) throw new UsageError(`--stream wants VSID:PSID, got ${args[i]}`);
      streams.push({ vsid: parseInt32(vsid, '--stream VSID'), psid: parseInt32(psid, '--stream PSID') });
    } else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
    else files.push(a);
  }
  if (path !== 'trap' && path !== 'doorbell') throw new UsageError(`--path must be trap or doorbell, got ${path ?? 'nothing'}`);
  if (vmid > 0xffff) throw new UsageError(`--vmid must be a 16-bit VMID, got ${vmid}`);
  if (files.length !== 1) throw new UsageError(`one dump FILE expected, got ${files.length}`);
  return { path, vmid, streams, file: files[0]! };
}

/** The dump as queue words (4 u32 per command); UsageError naming the line on anything else. */
export function parseDump(text: string, name: string): Uint32Array {
  const out: number[] = [];
  const word = /^(?:0x)?([0-9a-f]{1,16})$/i;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const parts = line.split(/\s+/);
    const m = parts.map((p) => word.exec(p));
    if (parts.length !== 2 || m[0] === null || m[1] === null) {
      throw new UsageError(`${name}:${i + 1}: expected two hex words (w0 w1), got '${raw.trim()}'`);
    }
    for (const w of m) {
      const v = BigInt(`0x${w![1]}`);
      out.push(Number(v & 0xffffffffn), Number(v >> 32n));
    }
  });
  return Uint32Array.from(out);
}

export async function replayMain(args: string[]): Promise<number> {
  const a = parseArgs(args);
  let text: string;
  try {
    text = readFileSync(a.file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${a.file}: ${(e as Error).message}`);
  }
  const words = parseDump(text, a.file);
  const n = words.length / 4;
  const host = await startHost();
  try {
    const vm = await host.createVm({ vmid: a.vmid, streams: a.streams });
    const q = await vm.openQueue({ path: a.path, log2size: LOG2SIZE });
    let error: { cerror: string; index: number } | null = null;
    let executed = n;
    for (let i = 0; i < n && error === null; i += CHUNK) {
      const len = Math.min(CHUNK, n - i);
      try {
        q.submitWords(words.subarray(4 * i), len, null);
        q.drain();
      } catch (e) {
        if (!(e instanceof QueueError)) throw e;
        // Everything published but [CONS, PROD) was consumed: the faulting command is the first of those.
        executed = i + len - queueUsed(q.prodValue, e.cons & ~CONS_ERR_MASK, LOG2SIZE);
        error = { cerror: e.cerror, index: executed };
      }
    }
    const s = q.state();
    const counts = a.path === 'trap' ? readTrapCounts(q.handle) : { forwarded: 0, handledByVmm: 0 };
    const result = {
      path: a.path, prod: s.prod, cons: s.cons & ~CONS_ERR_MASK, error, executed,
      forwarded: counts.forwarded, handled_by_vmm: counts.handledByVmm,
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } finally {
    await host.stop();
  }
}
