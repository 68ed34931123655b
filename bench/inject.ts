// Slowdown injection for demonstrating that the gate catches a regression.
//
// Contract with the doorbell path: the kernel-thread consumer reads
// process.env[INJECT_DELAY_ENV] ONCE at start-up (worker threads inherit the
// parent's environment) with injectedDelayUs(), and when it is > 0 calls
// busyDelayUs(delay) once per doorbell it services, before it advances CONS.
// Unset or "0" means no delay and no cost on the hot path beyond one branch.
//
//   VCMDQ_INJECT_DELAY_US=20 node dist/cli.js gate --baseline bench/baseline.json   # must exit 1

export const INJECT_DELAY_ENV = 'VCMDQ_INJECT_DELAY_US';

export function injectedDelayUs(env: Record<string, string | undefined> = process.env): number {
  const raw = env[INJECT_DELAY_ENV];
  if (raw === undefined || raw.trim() === '') return 0;
  const us = Number(raw);
  if (!Number.isFinite(us) || us < 0) throw new RangeError(`${INJECT_DELAY_ENV}=${raw}: expected a non-negative number of microseconds`);
  return us;
}

/** Burns `us` microseconds on this thread: a spin, not a sleep, so it costs CPU like real extra work would. */
export function busyDelayUs(us: number): void {
  const end = performance.now() + us / 1000;
  while (performance.now() < end);
}
