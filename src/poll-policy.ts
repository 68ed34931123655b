// How long the kernel thread polls for work before it sleeps: a pure policy,
// free of threads, clocks and I/O. The consumer (native-free-fastpath/
// consumer.ts) and the discrete-event simulator drive the same code with
// their own clocks, in ns:
//
//   budget = policy.idle(now, guestIdle)   // a pass found no work: poll this long, then sleep
//   policy.arrived(now, slept)             // the idle period ended: work was found (polling or after a wake)
//
// An idle period runs from idle() to arrived(); a sleep that ends without
// work (the heartbeat timeout) leaves it open, and idle() then answers 0: a
// period that has outlasted a sleep has outlasted every budget.
//
// Three policies:
//
// - fixed(spinNs): io_uring SQPOLL's sq_thread_idle, today's `spinUs`: poll
//   a fixed time after the last work, whatever the traffic. The perf gate
//   relies on `startHost({ spinUs })` meaning exactly this.
//
// - haltPoll: KVM's halt polling, the anchor (virt/kvm/kvm_main.c
//   kvm_vcpu_halt, grow_halt_poll_ns, shrink_halt_poll_ns). One number per
//   thread, the poll time, starting at 0. After each halt of halt_ns (the
//   whole idle period, polling included): nothing when halt_ns <= poll (the
//   poll caught it); shrink (divide by halt_poll_ns_shrink, 0 below
//   halt_poll_ns_grow_start) when halt_ns > halt_poll_ns (a long block: the
//   poll was wasted); grow (multiply by halt_poll_ns_grow, at least
//   halt_poll_ns_grow_start) when the wake-up came after the poll but within
//   halt_poll_ns (it slept and was woken soon after). The poll is clamped to
//   halt_poll_ns before each halt. It reacts to the LAST halt only, so a
//   steady 100 µs gap with halt_poll_ns = 500 µs makes it poll (and burn)
//   100 µs per command forever: it never asks whether the wake it avoids is
//   worth 100 µs of CPU.
//
// - adaptive (the default): ask that question. A wake-up costs the thread
//   `wakeCostNs` (the futex wake's latency on the critical path plus the CPU
//   of sleeping and waking, ~25 + ~15 µs here); polling costs the time polled.
//   Polling for b catches an idle period of length D when D <= b, so its
//   expected net saving is
//        gain(b) = wakeCostNs * P(D <= b) - E[min(D, b)]
//   and the policy polls for the b that maximises it, or not at all when no
//   b gains (gain(0) = 0). D's distribution is learnt per thread (the
//   decision is the thread's, and its idle period ends at the first arrival
//   on ANY of its queues, so it is the thread's idle periods that matter,
//   not each queue's) in a log2-bucket histogram of counts and sums of D,
//   decayed by (1 - 1/historyPeriods) per period, so it follows a changing
//   load within a few dozen periods. Candidate budgets are the bucket
//   edges up to maxSpinNs. With no history it polls for wakeCostNs: the
//   ski-rental rule of competitive spinning (Karlin, Li, Manasse, Owicki,
//   SOSP 1991), never worse than twice the best choice in hindsight.
//   Three limits beat a pure expected-value rule:
//     * a CPU budget: a token bucket fills at cpuShare ns per ns of wall time
//       (capped at CPU_WINDOW_NS of it) and every ns polled takes one out; a
//       budget is cut to the tokens left, so polling never exceeds cpuShare
//       of a core over a window (cpuShare 1: no limit beyond the gain);
//     * the guest's hint: when every queue's producer announced it will block
//       (GuestQueue.announceIdle, layout.ts Q_IDLE_HINT), the period is not
//       polled at all, whatever the history says;
//     * a poll that was wasted is charged in full, one that caught work only
//       up to the arrival (the token bucket and spunNs both).
//   Compared with halt polling: at a steady 100 µs gap, gain(b >= 100 µs) =
//   wakeCost - 100 µs < 0, so it sleeps at once and pays one wake (~15 µs of
//   CPU) instead of polling 100 µs; at 5-20 µs gaps both poll; at 1 ms both
//   sleep; and on a bimodal load (most gaps short, some long) it polls just
//   past the short mode, where halt polling oscillates with each long gap.
//
// Nothing here allocates after construction: idle() and arrived() run on
// the consumer's idle transition, and arrived() only records (the learning
// is done by the next idle(), so the pass that serves the arrival is not
// delayed by it).

import { checkInt, checkOptions, show } from './args.ts';
import { ArgumentError } from './errors.ts';

export const POLL_POLICIES = ['adaptive', 'halt-poll', 'fixed'] as const;
export type PollPolicyName = (typeof POLL_POLICIES)[number];

/** The consumer's view of a polling policy; every time is in ns on the caller's clock. */
export interface PollPolicy {
  readonly name: PollPolicyName;
  /** Whether idle() looks at its guestIdle argument (the consumer skips reading the hints otherwise). */
  readonly usesGuestHint: boolean;
  /**
   * A pass found no work at `nowNs`: how long to poll before sleeping, ns (0:
   * sleep at once). `guestIdle`: every queue's producer announced it will block.
   */
  idle(nowNs: number, guestIdle: boolean): number;
  /**
   * Work was found at `nowNs`, ending the idle period: while polling
   * (`slept` false) or after the thread slept and woke (`slept` true). O(1):
   * it only records.
   */
  arrived(nowNs: number, slept: boolean): void;
  /** ns spent polling so far: a poll that caught work counts up to the arrival, a wasted one in full. */
  readonly spunNs: number;
}

/** Idle-period bookkeeping shared by the policies: which period is open, what it was given, what was spent. */
abstract class PeriodPolicy implements PollPolicy {
  abstract readonly name: PollPolicyName;
  abstract readonly usesGuestHint: boolean;
  spunNs = 0;
  /** Start of the open idle period, or -1 when none is open. */
  protected idleSince = -1;
  /** Budget given to the open period. */
  protected budgetNs = 0;

  idle(nowNs: number, guestIdle: boolean): number {
    if (this.idleSince >= 0) return 0;
    this.idleSince = nowNs;
    const b = this.budget(nowNs, guestIdle);
    this.budgetNs = b;
    this.spunNs += b;
    return b;
  }

  arrived(nowNs: number, slept: boolean): void {
    if (this.idleSince < 0) return;
    const idleNs = Math.max(0, nowNs - this.idleSince);
    this.idleSince = -1;
    // A poll that caught the work is charged up to the arrival only.
    if (!slept && idleNs < this.budgetNs) this.refund(this.budgetNs - idleNs);
    this.observe(idleNs);
  }

  protected refund(ns: number): void {
    this.spunNs -= ns;
  }

  /** The budget of a period opening at `nowNs`. */
  protected abstract budget(nowNs: number, guestIdle: boolean): number;
  /** A period of `idleNs` ended (record only; learn in budget()). */
  protected abstract observe(idleNs: number): void;
}

/** io_uring SQPOLL's fixed idle: always `spinNs`. */
export class FixedPoll extends PeriodPolicy {
  readonly name = 'fixed';
  readonly usesGuestHint = false;
  constructor(readonly spinNs: number) {
    super();
  }
  protected budget(): number {
    return this.spinNs;
  }
  protected observe(): void {}
}

/** KVM's module parameters, with their upstream defaults (arm64's KVM_HALT_POLL_NS_DEFAULT). */
export interface HaltPollParams {
  /** halt_poll_ns: the most it polls, ns (arm64 500000, x86 200000). */
  haltPollNs: number;
  /** halt_poll_ns_grow: factor per grow (0: never grows). */
  grow: number;
  /** halt_poll_ns_grow_start: the first poll after 0, ns; below it a shrink goes to 0. */
  growStartNs: number;
  /** halt_poll_ns_shrink: divisor per shrink (0: reset to 0). */
  shrink: number;
}
export const HALT_POLL_DEFAULTS: Readonly<HaltPollParams> = { haltPollNs: 500_000, grow: 2, growStartNs: 10_000, shrink: 2 };

/** KVM halt polling (kvm_vcpu_halt), the grow/shrink of one poll time per thread. */
export class HaltPoll extends PeriodPolicy {
  readonly name = 'halt-poll';
  readonly usesGuestHint = false;
  /** vcpu->halt_poll_ns. */
  pollNs = 0;
  constructor(readonly params: Readonly<HaltPollParams>) {
    super();
  }

  protected budget(): number {
    if (this.pollNs > this.params.haltPollNs) this.pollNs = this.params.haltPollNs;
    return this.pollNs;
  }

  /** kvm_vcpu_halt's tail, with halt_ns = the idle period (every arrival is a valid wake-up). */
  protected observe(haltNs: number): void {
    const max = this.params.haltPollNs;
    if (max === 0) this.pollNs = 0;
    else if (haltNs <= this.pollNs) return;
    else if (this.pollNs !== 0 && haltNs > max) this.shrinkPoll();
    else if (this.pollNs < max && haltNs < max) this.growPoll();
  }

  /** grow_halt_poll_ns. */
  private growPoll(): void {
    const { grow, growStartNs } = this.params;
    if (grow === 0) return;
    this.pollNs = Math.max(this.pollNs * grow, growStartNs);
  }

  /** shrink_halt_poll_ns. */
  private shrinkPoll(): void {
    const { shrink, growStartNs } = this.params;
    const v = shrink === 0 ? 0 : Math.floor(this.pollNs / shrink);
    this.pollNs = v < growStartNs ? 0 : v;
  }
}

export interface AdaptiveParams {
  /** What one sleep + wake-up costs, in ns of polling it is worth (latency added plus CPU spent). */
  wakeCostNs: number;
  /** The longest poll, ns. */
  maxSpinNs: number;
  /** Share of one core the thread may spend polling, over CPU_WINDOW_NS (0..1; 1: no limit). */
  cpuShare: number;
  /** Idle periods the histogram remembers (decay 1 - 1/historyPeriods per period). */
  historyPeriods: number;
}
export const ADAPTIVE_DEFAULTS: Readonly<AdaptiveParams> = { wakeCostNs: 30_000, maxSpinNs: 200_000, cpuShare: 1, historyPeriods: 32 };

/**
 * A decayed weight or sum below this is dropped to 0. Without the floor, a
 * bucket no period has landed in for ~23 000 periods (decay 31/32) decays
 * into the subnormal range, where x * decay rounds back to x (16 x 2^-1074
 * times 31/32 is 15.5, rounded to even: 16): it never reaches 0, and from
 * then on every learn() and bestBudget() pays the CPU's subnormal
 * arithmetic, ~0.6-1 us a period measured in-thread, on the idle transition
 * of every round trip. 2^-40 of one period's weight changes no decision.
 */
const FLUSH_BELOW = 2 ** -40;

/** The token bucket's depth: cpuShare is kept over windows of this much wall time. */
export const CPU_WINDOW_NS = 100e6;
/** Bucket 0 holds D < 2^MIN_SHIFT ns; bucket k >= 1 holds [2^(MIN_SHIFT+k-1), 2^(MIN_SHIFT+k)); the last is open above. */
const MIN_SHIFT = 9;
export const ADAPTIVE_BUCKETS = 18;

// Both bucket functions run on every idle transition, so neither calls the
// math library: on Node 20 (V8 11.3) `2 ** k` with a variable k and
// Math.log2 are calls of ~20-70 ns each; bestBudget's nine `2 ** k` made an
// idle transition ~0.6 us (measured in-thread), longer than a near-mode
// round trip.
const BUCKET_UPPER_NS = Float64Array.from({ length: ADAPTIVE_BUCKETS - 1 }, (_, k) => 2 ** (MIN_SHIFT + k));
/** Where the last bucket opens: 2^(MIN_SHIFT + ADAPTIVE_BUCKETS - 2) ns (< 2^31, so Math.clz32 sees every ns below it whole). */
const LAST_BUCKET_NS = BUCKET_UPPER_NS[ADAPTIVE_BUCKETS - 2]!;

/** Histogram bucket of an idle period of `ns`. */
export function bucketOf(ns: number): number {
  if (ns < 2 ** MIN_SHIFT) return 0;
  if (ns >= LAST_BUCKET_NS) return ADAPTIVE_BUCKETS - 1;
  // floor(log2(ns)) = 31 - clz32(floor(ns)) for 1 <= ns < 2^31 (ToUint32 truncates, and log2 steps only at integers).
  return 31 - Math.clz32(ns) - MIN_SHIFT + 1;
}

/** Upper edge of bucket `k`, ns (Infinity for the last). */
export function bucketUpperNs(k: number): number {
  return k >= ADAPTIVE_BUCKETS - 1 ? Infinity : BUCKET_UPPER_NS[k]!;
}

/** The default: poll for the budget whose expected saving beats its CPU most, within a CPU budget. */
export class AdaptivePoll extends PeriodPolicy {
  readonly name = 'adaptive';
  readonly usesGuestHint = true;
  /** Decayed count and sum (ns) of idle periods per bucket. */
  private readonly weight = new Float64Array(ADAPTIVE_BUCKETS);
  private readonly sumNs = new Float64Array(ADAPTIVE_BUCKETS);
  private total = 0;
  /** An idle period recorded by arrived() and not yet learnt, ns (-1: none). */
  private pendingNs = -1;
  /** Polling allowed now, ns, and when the bucket was last filled (-1: never). */
  private tokens: number;
  private filledAt = -1;
  private readonly decay: number;

  constructor(readonly params: Readonly<AdaptiveParams>) {
    super();
    this.decay = 1 - 1 / params.historyPeriods;
    this.tokens = params.cpuShare * CPU_WINDOW_NS;
  }

  protected budget(nowNs: number, guestIdle: boolean): number {
    this.learn();
    const { cpuShare } = this.params;
    if (this.filledAt >= 0) this.tokens = Math.min(cpuShare * CPU_WINDOW_NS, this.tokens + (nowNs - this.filledAt) * cpuShare);
    this.filledAt = nowNs;
    if (guestIdle) return 0;
    const b = Math.min(this.bestBudget(), Math.max(0, Math.floor(this.tokens)));
    this.tokens -= b;
    return b;
  }

  protected observe(idleNs: number): void {
    this.pendingNs = idleNs;
  }

  protected override refund(ns: number): void {
    super.refund(ns);
    this.tokens += ns;
  }

  private learn(): void {
    const d = this.pendingNs;
    if (d < 0) return;
    this.pendingNs = -1;
    const w = this.weight;
    const s = this.sumNs;
    const decay = this.decay;
    for (let k = 0; k < ADAPTIVE_BUCKETS; k++) {
      const wk = w[k]! * decay;
      const sk = s[k]! * decay;
      w[k] = wk < FLUSH_BELOW ? 0 : wk;
      s[k] = wk < FLUSH_BELOW || sk < FLUSH_BELOW ? 0 : sk;
    }
    const k = bucketOf(d);
    w[k]!++;
    s[k]! += d;
    this.total = this.total * decay + 1;
  }

  /** argmax over b of wakeCost * P(D <= b) - E[min(D, b)], b in {0} and the bucket edges up to maxSpinNs. */
  bestBudget(): number {
    const { wakeCostNs, maxSpinNs } = this.params;
    const total = this.total;
    if (total === 0) return Math.min(wakeCostNs, maxSpinNs);
    const w = this.weight;
    const s = this.sumNs;
    let best = 0;
    let bestGain = 0;
    let below = 0;
    let belowSum = 0;
    for (let k = 0; k < ADAPTIVE_BUCKETS - 1; k++) {
      const b = bucketUpperNs(k);
      if (b > maxSpinNs) break;
      below += w[k]!;
      belowSum += s[k]!;
      const gain = (wakeCostNs * below - belowSum - b * (total - below)) / total;
      if (gain > bestGain) {
        bestGain = gain;
        best = b;
      }
    }
    return best;
  }
}

export type PollConfig =
  | { policy: 'fixed'; spinNs: number }
  | ({ policy: 'halt-poll' } & HaltPollParams)
  | ({ policy: 'adaptive' } & AdaptiveParams);

/** A policy from its (checked) configuration: what a kernel thread builds from its workerData. */
export function makePollPolicy(c: PollConfig): PollPolicy {
  switch (c.policy) {
    case 'fixed': return new FixedPoll(c.spinNs);
    case 'halt-poll': return new HaltPoll(c);
    case 'adaptive': return new AdaptivePoll(c);
  }
}

/** The user-facing `poll` option (startHost), times in the units their names say. */
export interface PollOptions {
  /** Default 'adaptive'. */
  policy?: PollPolicyName;
  /** fixed: the budget, µs. */
  spinUs?: number;
  /** halt-poll: KVM's halt_poll_ns, halt_poll_ns_grow, halt_poll_ns_grow_start, halt_poll_ns_shrink. */
  haltPollNs?: number;
  grow?: number;
  growStartNs?: number;
  shrink?: number;
  /** adaptive: AdaptiveParams in µs. */
  wakeCostUs?: number;
  maxSpinUs?: number;
  cpuShare?: number;
  historyPeriods?: number;
}

const OPTIONS_OF: Record<PollPolicyName, readonly string[]> = {
  'fixed': ['policy', 'spinUs'],
  'halt-poll': ['policy', 'haltPollNs', 'grow', 'growStartNs', 'shrink'],
  'adaptive': ['policy', 'wakeCostUs', 'maxSpinUs', 'cpuShare', 'historyPeriods'],
};
const MAX_US = 1_000_000;

/** Checks `v` (PollOptions; undefined is the adaptive default) and fills in the defaults; errors name `argument.key`. */
export function checkPollOptions(argument: string, v: unknown): PollConfig {
  const policy = (v !== null && typeof v === 'object' && 'policy' in v ? (v as { policy: unknown }).policy : undefined) ?? 'adaptive';
  if (!(POLL_POLICIES as readonly unknown[]).includes(policy)) {
    throw new ArgumentError(`${argument}.policy`, `must be one of ${POLL_POLICIES.map((p) => `'${p}'`).join(', ')}, got ${show(policy)}`);
  }
  const p = policy as PollPolicyName;
  const o = checkOptions(argument, v, OPTIONS_OF[p]);
  const at = (k: string): string => `${argument}.${k}`;
  switch (p) {
    case 'fixed':
      return { policy: p, spinNs: 1000 * checkInt(at('spinUs'), o['spinUs'] ?? 0, 0, MAX_US, 'µs') };
    case 'halt-poll': {
      const d = HALT_POLL_DEFAULTS;
      return {
        policy: p,
        haltPollNs: checkInt(at('haltPollNs'), o['haltPollNs'] ?? d.haltPollNs, 0, 1000 * MAX_US, 'ns, KVM halt_poll_ns'),
        grow: checkInt(at('grow'), o['grow'] ?? d.grow, 0, 1000, 'KVM halt_poll_ns_grow'),
        growStartNs: checkInt(at('growStartNs'), o['growStartNs'] ?? d.growStartNs, 0, 1000 * MAX_US, 'ns, KVM halt_poll_ns_grow_start'),
        shrink: checkInt(at('shrink'), o['shrink'] ?? d.shrink, 0, 1000, 'KVM halt_poll_ns_shrink'),
      };
    }
    case 'adaptive': {
      const d = ADAPTIVE_DEFAULTS;
      const cpuShare = o['cpuShare'] ?? d.cpuShare;
      if (typeof cpuShare !== 'number' || !(cpuShare >= 0 && cpuShare <= 1)) {
        throw new ArgumentError(at('cpuShare'), `must be a number in 0..1 (share of one core), got ${show(cpuShare)}`);
      }
      return {
        policy: p,
        wakeCostNs: 1000 * checkInt(at('wakeCostUs'), o['wakeCostUs'] ?? d.wakeCostNs / 1000, 0, MAX_US, 'µs'),
        maxSpinNs: 1000 * checkInt(at('maxSpinUs'), o['maxSpinUs'] ?? d.maxSpinNs / 1000, 0, MAX_US, 'µs'),
        cpuShare,
        historyPeriods: checkInt(at('historyPeriods'), o['historyPeriods'] ?? d.historyPeriods, 1, 1_000_000, 'idle periods'),
      };
    }
  }
}
