// What every `vcmdq` subcommand shares: the usage-error type (exit status 2)
// and the checks that let a bad argument fail before any work is done.

import { accessSync, constants, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** A command-line mistake: one line on stderr, exit status 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** True for the errors node:util parseArgs throws on an unknown option or a missing value (a usage mistake). */
export function isParseArgsError(e: unknown): boolean {
  return e instanceof TypeError && String((e as NodeJS.ErrnoException).code ?? '').startsWith('ERR_PARSE_ARGS');
}

/**
 * Refuse an output `file` that cannot be written, before a long run rather
 * than after it: its directory must exist and be writable, and the file, if
 * it exists, must be a writable regular file. Throws UsageError naming `what`.
 */
export function checkOutputPath(file: string, what: string): void {
  const path = resolve(file);
  let st;
  try {
    st = statSync(path, { throwIfNoEntry: false });
    if (st?.isDirectory()) throw new UsageError(`${what} ${file} is a directory`);
    accessSync(st === undefined ? dirname(path) : path, constants.W_OK);
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`${what} ${file} cannot be written: ${(e as Error).message}`);
  }
}

/** A 0x-hex or decimal number argument in [0, max]. */
export function parseNumberArg(s: string, what: string, max: number): number {
  if (!/^(0x[0-9a-f]+|[0-9]+)$/i.test(s)) throw new UsageError(`${what} must be a number, got '${s}'`);
  const v = Number(s);
  if (!(v <= max)) throw new UsageError(`${what} must be at most 0x${max.toString(16)}, got ${s}`);
  return v;
}
