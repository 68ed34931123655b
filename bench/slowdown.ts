// The perf gate's slowdown knob, for showing what the gate detects.
//
// The bench and the gate (never the library) read VCMDQ_SLOWDOWN_NS once and
// pass it to startHost({ slowdownNs }) of the doorbell hosts, and to the
// in-thread consume microbenchmark; the kernel thread then does about that
// many ns of extra work per command (calibrated loop iterations,
// native-free-fastpath/slowdown.ts), as slower consumer code would. The trap
// path is not slowed. Unset or "0" means none. The gate applies it to the
// candidate build only, never to the base it is compared with.
//
//   VCMDQ_SLOWDOWN_NS=50 npm run gate   # must fail

export const SLOWDOWN_ENV = 'VCMDQ_SLOWDOWN_NS';

export function slowdownNs(env: Record<string, string | undefined> = process.env): number {
  const raw = env[SLOWDOWN_ENV];
  if (raw === undefined || raw.trim() === '') return 0;
  const ns = Number(raw);
  if (!Number.isInteger(ns) || ns < 0 || ns > 1_000_000) throw new RangeError(`${SLOWDOWN_ENV}=${raw}: expected a whole number of ns in [0, 1000000]`);
  return ns;
}
