// What the `vcmdq` subcommands share: the usage-error type (exit status 2)
// and argument checks.

/** A command-line mistake: one line on stderr, exit status 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** True for the errors node:util parseArgs throws on an unknown option or a missing value (a usage mistake). */
export function isParseArgsError(e: unknown): boolean {
  return e instanceof TypeError && String((e as NodeJS.ErrnoException).code ?? '').startsWith('ERR_PARSE_ARGS');
}

/** A 0x-hex or decimal number argument in [0, max]. */
export function parseNumberArg(s: string, what: string, max: number): number {
  if (!/^(0x[0-9a-f]+|[0-9]+)$/i.test(s)) throw new UsageError(`${what} must be a number, got '${s}'`);
  const v = Number(s);
  if (!(v <= max)) throw new UsageError(`${what} must be at most 0x${max.toString(16)}, got ${s}`);
  return v;
}
