// Argument checks at the public boundary: each refuses with an ArgumentError
// that names the argument (`startHost: spinUs`, `createVm: streams[2].psid`)
// and says what it must be, before the call has done anything.

import { ArgumentError } from './errors.ts';

/** A value as an error message shows it (no huge dumps, no throwing on odd objects). */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v === null || typeof v !== 'object') return String(v);
  return Array.isArray(v) ? `an array of ${v.length}` : 'an object';
}

/** `v` is an integer in [lo, hi]; `unit` and `why` go into the message. */
export function checkInt(argument: string, v: unknown, lo: number, hi: number, why = ''): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new ArgumentError(argument, `must be an integer in ${lo}..${hi}${why === '' ? '' : ` (${why})`}, got ${show(v)}`);
  }
  return v;
}

/**
 * `v` is an options object (undefined reads as {}) with no key outside
 * `keys`: a misspelt option is refused rather than silently ignored.
 */
export function checkOptions(argument: string, v: unknown, keys: readonly string[]): Record<string, unknown> {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ArgumentError(argument, `must be an options object, got ${show(v)}`);
  for (const k of Object.keys(v)) {
    if (!keys.includes(k)) throw new ArgumentError(`${argument}.${k}`, `is not an option (known: ${keys.join(', ')})`);
  }
  return v as Record<string, unknown>;
}

/** `v` is an AbortSignal or undefined. */
export function checkSignal(argument: string, v: unknown): AbortSignal | undefined {
  if (v === undefined || v instanceof AbortSignal) return v;
  throw new ArgumentError(argument, `must be an AbortSignal, got ${show(v)}`);
}
