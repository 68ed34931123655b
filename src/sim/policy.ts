// What the simulated kernel thread does when a pass found no work: the
// polling policy, behind the small interface the real consumer's idle path
// uses (spin budget decided on going idle, told of each arrival). The fixed
// budget is the consumer's CTL_SPIN_US rule (run(): spin spinUs, then sleep).

/** The idle decision of a consumer thread. Times are ns on the caller's clock. */
export interface IdlePolicy {
  /** The thread just went idle at `nowNs`: how long to poll before sleeping (0: sleep now). */
  spinBudgetNs(nowNs: number): number;
  /** Work arrived at `nowNs`; `slept` says whether the thread had gone to sleep for it. */
  onArrival(nowNs: number, slept: boolean): void;
}

/** Spin `budgetNs` after the last work, then sleep (0: sleep at once, the doorbell-sleep path). */
export class FixedSpinPolicy implements IdlePolicy {
  constructor(private readonly budgetNs: number) {}
  spinBudgetNs(): number {
    return this.budgetNs;
  }
  onArrival(): void {}
}
