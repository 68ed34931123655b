// The perf gate's slowdown knob (bench only): about N ns of extra *work* per
// command, so a self-test sees what a real regression of that size looks like.
// Work, not time: a busy-wait on the clock would hide in the clock's own cost
// and would not scale with a slower or faster core as real code does. The
// loop is calibrated once, on the thread that will run it, against the clock.

/**
 * Iterations of `work` per ns on this thread. Calls of a few hundred ns, as
 * the consumer makes them, after enough calls for the JIT to optimise `work`
 * (timing a cold loop would under-count the iterations and so the slowdown);
 * the fastest of several chunks, so a preemption cannot inflate it.
 */
export function calibrateWork(): number {
  const ITERS = 256;
  const CALLS = 2000;
  let sink = 0;
  for (let k = 0; k < 20 * CALLS; k++) sink ^= work(ITERS);
  let best = Infinity;
  for (let chunk = 0; chunk < 10; chunk++) {
    const t0 = performance.now();
    for (let k = 0; k < CALLS; k++) sink ^= work(ITERS);
    best = Math.min(best, (performance.now() - t0) * 1e6);
  }
  return sink === 0.5 ? 0 : (ITERS * CALLS) / Math.max(best, 1); // sink keeps the loops observable
}

/** A dependent chain of integer steps (xorshift32) the JIT cannot fold away; returns the state. */
export function work(iters: number): number {
  let x = 0x9e3779b9 | 0;
  for (let i = 0; i < iters; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
  }
  return x;
}
