// The VMM's big lock (QEMU's BQL) as one word of shared memory: every vCPU
// thread of a VMM takes it around a trapped register write, as QEMU's
// prepare_mmio_access (system/physmem.c) takes the BQL for an MMIO write to a
// device region that is not lockless, which the SMMUv3's is not. So two
// vCPUs trapping on the vSMMU run its emulation one after the other, and the
// ioctl one of them makes is made with the lock held.
//
// The mutex is Drepper's ("Futexes Are Tricky", mutex2): the word is 0 free,
// 1 held, 2 held with possible waiters; only an unlock that saw 2 notifies.
// Every wait is bounded: `lock` gives up at its deadline (a vCPU that died
// holding the lock leaves it held, as a thread killed inside a QEMU device
// model would; the others then time out instead of hanging).

/** The lock word's values. */
const FREE = 0;
const HELD = 1;
const CONTENDED = 2;

export class Bql {
  constructor(private readonly i32: Int32Array, private readonly word: number) {}

  /** Take the lock, waiting at most `timeoutMs` (a finite number >= 0). False when it did not come. */
  lock(timeoutMs: number): boolean {
    const i32 = this.i32;
    const w = this.word;
    let c = Atomics.compareExchange(i32, w, FREE, HELD); // acquire: the BQL, uncontended
    if (c === FREE) return true;
    const deadline = performance.now() + timeoutMs;
    // A waiter leaves the word CONTENDED when it takes the lock, so the unlock after it wakes the next one.
    if (c !== CONTENDED) c = Atomics.exchange(i32, w, CONTENDED); // acquire: the BQL if it was freed meanwhile; else announce a waiter
    while (c !== FREE) {
      const left = deadline - performance.now();
      if (left <= 0) return false;
      Atomics.wait(i32, w, CONTENDED, left);
      c = Atomics.exchange(i32, w, CONTENDED); // acquire: the BQL, if the holder released it
    }
    return true;
  }

  /** Release it (the caller holds it); wake one waiter if there may be one. */
  unlock(): void {
    if (Atomics.exchange(this.i32, this.word, FREE) === CONTENDED) Atomics.notify(this.i32, this.word, 1); // publish: the BQL release, everything written under it
  }
}
