// `vcmdq decode` and `vcmdq encode`: the codec at the command line, for
// looking at queue dumps and building test commands by hand.

import { createInterface } from 'node:readline';
import { decodeCommand, encodeCommand, type Command } from '../codec.ts';
import { CommandError } from '../errors.ts';
import { DEFAULT_FEATURES, makeFeatures, type SmmuFeatures } from '../features.ts';
import { UsageError } from './usage.ts';

const BOOLEAN_FEATURES = Object.keys(DEFAULT_FEATURES).filter(
  (k) => typeof DEFAULT_FEATURES[k as keyof SmmuFeatures] === 'boolean',
) as (keyof SmmuFeatures)[];

const CAPABILITY_FLAGS = `${BOOLEAN_FEATURES.map((k) => `--[no-]${k.toLowerCase()}`).join(' ')} --stall-model=N`;

export const DECODE_USAGE = `usage: vcmdq decode [CAPS] [<w0> <w1>]
  print a command (two 64-bit words, hex) as one JSON object; with no words,
  read one "w0 w1" per stdin line (# starts a comment) and print one object per line.
  exit 0: all legal; 1: an illegal command (its CERROR_ILL reason on stderr); 2: unusable input.
  CAPS, the SMMU's capabilities (default: all but MPAM and DS, STALL_MODEL 0): ${CAPABILITY_FLAGS}`;

export const ENCODE_USAGE = `usage: vcmdq encode [CAPS] '<json>'
  print the two words of a command object, e.g. '{"op":"TLBI_NH_ASID","asid":1}'
  (numbers may be given as 0x-hex strings); exit 1 names the field that does not fit.
  CAPS as for decode: ${CAPABILITY_FLAGS}`;

/**
 * Split capability flags from the other arguments: `--<cap>` / `--no-<cap>`
 * for each boolean SmmuFeatures field (e.g. --no-ril, --ds, --no-ats) and
 * `--stall-model=N`.
 */
export function parseFeatureFlags(args: readonly string[]): { features: SmmuFeatures; rest: string[] } {
  const partial: Record<string, unknown> = {};
  const rest: string[] = [];
  for (const arg of args) {
    const stall = /^--stall-model=([012])$/.exec(arg);
    const flag = /^--(no-)?([a-z0-9]+)$/i.exec(arg);
    if (stall) partial['STALL_MODEL'] = Number(stall[1]);
    else if (flag && BOOLEAN_FEATURES.includes(flag[2]!.toUpperCase() as keyof SmmuFeatures)) {
      partial[flag[2]!.toUpperCase()] = flag[1] === undefined;
    } else if (arg.startsWith('--')) {
      throw new UsageError(`unknown option ${arg} (capabilities: ${CAPABILITY_FLAGS})`);
    } else rest.push(arg);
  }
  return { features: makeFeatures(partial as Partial<SmmuFeatures>), rest };
}

function parseWord(s: string): bigint {
  const m = /^(?:0x)?([0-9a-f]{1,16})$/i.exec(s);
  if (!m) throw new UsageError(`bad command word '${s}': want up to 16 hex digits`);
  return BigInt(`0x${m[1]}`);
}

const hex64 = (v: bigint): string => `0x${v.toString(16).padStart(16, '0')}`;

/** One JSON object: op and fields, addresses as 0x-hex strings. */
export function commandJson(cmd: Command): string {
  return JSON.stringify(cmd, (_k, v: unknown) => (typeof v === 'bigint' ? hex64(v) : v));
}

function decodeLine(w0: string, w1: string, features: SmmuFeatures): string {
  return commandJson(decodeCommand([parseWord(w0), parseWord(w1)], features));
}

export async function decodeMain(args: string[]): Promise<number> {
  const { features, rest } = parseFeatureFlags(args);
  if (rest.length === 2) {
    try {
      process.stdout.write(`${decodeLine(rest[0]!, rest[1]!, features)}\n`);
      return 0;
    } catch (e) {
      if (e instanceof CommandError) {
        process.stderr.write(`${e.message}\n`);
        return 1;
      }
      throw e;
    }
  }
  if (rest.length !== 0) throw new UsageError(`want two words or none, got ${rest.length} (vcmdq help decode)`);
  // Every line is reported; the status is the worst one (2 bad input > 1 illegal command > 0).
  let status = 0;
  let lineNo = 0;
  for await (const raw of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    lineNo++;
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') continue;
    const words = line.split(/\s+/);
    try {
      if (words.length !== 2) throw new UsageError(`want two hex words, got ${words.length}`);
      process.stdout.write(`${decodeLine(words[0]!, words[1]!, features)}\n`);
    } catch (e) {
      if (e instanceof CommandError) {
        process.stderr.write(`line ${lineNo}: ${e.message}\n`);
        status = Math.max(status, 1);
      } else if (e instanceof UsageError) {
        process.stderr.write(`line ${lineNo}: ${e.message}\n`);
        status = 2;
      } else throw e;
    }
  }
  return status;
}

/** JSON values as Command values: addresses from hex/decimal strings or numbers, other fields also from hex strings. */
function commandFromJson(text: string): Command {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new TypeError(`not JSON: ${(e as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new TypeError('want a JSON object like {"op":"CMD_SYNC","cs":2}');
  const obj = parsed as Record<string, unknown>;
  if (typeof obj['op'] !== 'string') throw new TypeError('field op: want an op name string, e.g. "TLBI_NH_VA"');
  const cmd: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'op') cmd[k] = v;
    else if (typeof v === 'string' && /^(0x[0-9a-f]+|[0-9]+)$/i.test(v)) cmd[k] = k === 'addr' || k === 'msiaddr' ? BigInt(v) : Number(BigInt(v));
    else if ((k === 'addr' || k === 'msiaddr') && typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) cmd[k] = BigInt(v);
    else if (typeof v === 'string') throw new TypeError(`field ${k}: '${v}' is not a number`);
    else cmd[k] = v;
  }
  return cmd as unknown as Command;
}

export function encodeMain(args: string[]): number {
  const { features, rest } = parseFeatureFlags(args);
  if (rest.length !== 1) throw new UsageError(`want one JSON object, got ${rest.length} arguments (vcmdq help encode)`);
  try {
    const [w0, w1] = encodeCommand(commandFromJson(rest[0]!), features);
    process.stdout.write(`${hex64(w0)} ${hex64(w1)}\n`);
    return 0;
  } catch (e) {
    if (e instanceof TypeError || e instanceof RangeError) {
      process.stderr.write(`vcmdq encode: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
