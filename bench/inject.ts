// Slowdown injection for demonstrating that the gate catches a regression.
//
// The bench (never the library) reads VCMDQ_INJECT_DELAY_US once and passes
// it to startHost({ injectDelayUs }) of the doorbell hosts; the kernel thread
// then busy-waits that many µs per command it consumes (CMD_SYNC excepted),
// as a slower SMMU would. The trap path, the reference of the gate's ratios,
// is not slowed. Unset or "0" means no delay.
//
//   VCMDQ_INJECT_DELAY_US=20 node dist/cli.js gate --baseline bench/baseline.json   # must exit 1

export const INJECT_DELAY_ENV = 'VCMDQ_INJECT_DELAY_US';

export function injectedDelayUs(env: Record<string, string | undefined> = process.env): number {
  const raw = env[INJECT_DELAY_ENV];
  if (raw === undefined || raw.trim() === '') return 0;
  const us = Number(raw);
  if (!Number.isInteger(us) || us < 0) throw new RangeError(`${INJECT_DELAY_ENV}=${raw}: expected a whole, non-negative number of microseconds`);
  return us;
}
