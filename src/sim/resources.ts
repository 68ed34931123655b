// Shared resources of the simulated machine, each a queue in virtual time:
// a counted semaphore (the host CPUs a host thread needs to run; the BQL and
// the CMDQ owner as semaphores of one) and the physical SMMU's command
// engine, which serves submissions one after the other.

import type { Actor, Sim } from './engine.ts';
import { ArgumentError } from '../errors.ts';

/** `n` units handed out first come, first served; a waiter is told by its event. */
export class Semaphore {
  private free: number;
  private waitActor: Actor[] = [];
  private waitKind: number[] = [];
  private head = 0;
  /** Time-integral of units held, ns (utilisation = busyNs / (n * elapsed)). */
  private heldNs = 0;
  private lastChange = 0;

  constructor(private readonly sim: Sim, readonly n: number, readonly name: string) {
    if (!Number.isInteger(n) || n < 1) throw new ArgumentError(`${name}: units`, `must be an integer >= 1, got ${n}`);
    this.free = n;
  }

  /** `actor` gets event `kind` once it holds a unit: now (after the events already due) or when one is released. */
  acquire(actor: Actor, kind: number): void {
    if (this.free > 0) {
      this.account();
      this.free--;
      this.sim.after(0, actor, kind);
      return;
    }
    this.waitActor.push(actor);
    this.waitKind.push(kind);
  }

  release(): void {
    if (this.head < this.waitActor.length) {
      // The unit passes straight to the first waiter.
      const a = this.waitActor[this.head]!;
      const k = this.waitKind[this.head]!;
      this.head++;
      if (this.head === this.waitActor.length) {
        this.waitActor.length = 0;
        this.waitKind.length = 0;
        this.head = 0;
      }
      this.sim.after(0, a, k);
      return;
    }
    if (this.free >= this.n) throw new Error(`${this.name}: released more units than were acquired`);
    this.account();
    this.free++;
  }

  get waiting(): number {
    return this.waitActor.length - this.head;
  }

  /** Units held over [0, now], ns. */
  busyNs(): number {
    this.account();
    return this.heldNs;
  }

  private account(): void {
    this.heldNs += (this.n - this.free) * (this.sim.now - this.lastChange);
    this.lastChange = this.sim.now;
  }
}

/**
 * The physical SMMU's command engine. Commands are issued one at a time, in
 * submission order, from every queue (host CMDQ and hardware VCMDQs alike):
 * `issueNs` occupies the engine. A CMD_SYNC then waits for the
 * invalidations before it to finish in the TLBs (`syncNs`), a wait that
 * does not hold the engine, so syncs of different queues overlap. The
 * submitter hears of completion through its event.
 */
export class SmmuEngine {
  private busyUntil = 0;
  busyNs = 0;
  constructor(private readonly sim: Sim) {}

  submit(issueNs: number, syncNs: number, actor: Actor, kind: number): void {
    const start = Math.max(this.sim.now, this.busyUntil);
    this.busyUntil = start + issueNs;
    this.busyNs += issueNs;
    this.sim.after(this.busyUntil + syncNs - this.sim.now, actor, kind);
  }
}
