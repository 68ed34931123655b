// Every shared region of the host SharedArrayBuffer, described once as named
// Int32 word offsets. The SAB is the host physical address space: the "MMIO"
// region below sits at PA 0, host-private tables and each VM's RAM follow it
// (allocated by src/host.ts). Word offset w is byte PA 4*w.
//
// ─────────────────────────────────────────────────────────────────────────────
// ORDERING PROTOCOL (all threads; "publish" = the store that makes data visible)
//
// JS Atomics are sequentially consistent: every Atomics.* operation on the SAB
// is in one total order that agrees with each thread's program order, and
// plain reads/writes before an Atomics.store are visible to a thread whose
// Atomics.load observes that store (release/acquire). So:
//
// Queue (any number of producer threads per queue, the kernel thread as its
// consumer; how producers share it, Q_DRV_RESV/Q_DRV_PUB below, is written
// above GuestQueue.submitWords):
//  - Entries: the guest writes slots with plain stores, then publishes
//    `Atomics.store(PROD)` (publish: PROD release). The kernel thread reads
//    `Atomics.load(PROD)` (acquire) and only then copies slots [CONS, PROD)
//    once each into a private buffer. Guest memory is untrusted: a slot may
//    change while it is read; only the private copy is decoded and executed.
//  - CONS is written only by the kernel thread (publish: CONS release), after
//    every command before it has executed. The producer's view of CONS may be
//    late (CONS may be late on the producer side): it can only under-estimate
//    free space and completion, never over-estimate.
//  - Errors: the kernel thread stores CONS (with ERR) BEFORE toggling GERROR
//    (publish: GERROR release), so a guest that sees GERROR != GERRORN reads
//    the right CONS.ERR. The guest acks with `Atomics.store(GERRORN)` (publish:
//    GERRORN release) after rewriting the faulting entry, then kicks.
//  - CMD_SYNC completion: the sync publishes CONS past itself, then
//    Atomics.notify(CONS) (CS_SEV's event, and the wake-up of space and
//    CS_NONE waiters, who also sleep on CONS); CS_IRQ first stores MSIDATA
//    at the MSI address with Atomics.store (publish: MSI release) and
//    notifies that word. A pass publishes CONS once more at its end only if
//    commands followed its last sync.
//  - Those notifies (and the one after each pass, for space waiters) are made
//    only while Atomics.load(WAITERS) != 0: a notify costs ~40 ns even with
//    nobody waiting, twice per round trip. A guest about to block does
//    Atomics.add(WAITERS, 1), re-checks CONS/the MSI word, Atomics.wait,
//    Atomics.sub(WAITERS, 1). The kernel thread loads WAITERS after its
//    publishing store, so by the same argument as the doorbell below either
//    the guest's re-check sees the publish or the kernel thread sees the
//    waiter and notifies (a wait on a stale value returns at once).
//  - ERR_REASON and statistics are plain debugging words, written before the
//    publish that makes them interesting (ERR_REASON before CONS/GERROR).
//
// Pending bitmap (virtio's event index / Tegra241 CMDQV's per-VINTF bitmaps
// in spirit): a pass never reads an idle queue's registers. Each kernel
// thread has a bitmap; each of its doorbell queues owns one bit, its pending
// slot (Q_PEND; pendingWord/pendingBit below). Slots are not qids: the host
// hands out whole words per VM (PendingSlots), so no word holds two VMs'
// bits. A guest may store anything to its own words (clear them, set bits no
// queue owns): it delays only its own VM's queues, never another VM's
// (Tegra241 CMDQV keeps its status bitmaps per VINTF, i.e. per VM, for the
// same reason). Guests RMW only their own words; the kernel thread takes
// bits of every VM it serves.
//  - Whoever publishes PROD (the producer that won its turn, Q_DRV_PUB in
//    guest.ts) then sets the queue's bit: `Atomics.or(word, bit)` (publish:
//    PENDING, after PROD), then kicks.
//  - The kernel thread peeks at the words its queues' slots lie in (see
//    "Peeks" below) and takes its queues' bits with `Atomics.and(word, ~mine)`
//    (take: before it reads any PROD they announce; a bit no queue owns
//    stays, unread), maps each taken bit to its queue through a table by
//    slot, and consumes only those queues, each up to the PROD it loads
//    after the take.
//  Why a published PROD is always consumed: take a PROD store S and the OR
//  after it. If the OR precedes a take T, then S precedes T, which precedes
//  that pass's PROD load: the pass sees S (or a later PROD). Otherwise the OR
//  follows every take before it, so the bit stays set for the next take. A
//  bit whose PROD an earlier pass already consumed costs one look, no more.
//  The argument needs that nothing but a take clears the bit. A guest's plain
//  store to its own word can break that for its own VM's queues only (their
//  announcement waits for their next publish or CONFIG write); no other
//  VM's bit is in that word, so no other VM's waiter is delayed.
//  - Peeks. On Node 20 (V8 11.3) no Atomics operation is inlined by the
//    JIT: each is a builtin call, ~18 ns for a load, ~35 ns for an RMW and
//    ~55 ns for a store on this machine, against ~1 ns for a plain element
//    read. A thread of 1024 queues in 64 VMs polls 64 words, so a pass of
//    Atomics.loads cost ~1.2 us before it found the one bit set (measured
//    in-thread, 64 VMs x 16 queues: an idle pass 2.27 us, 0.3 us peeked).
//    So a pass and the idle poll read the words with plain reads, peeks,
//    and act only on what is read atomically:
//      - a peek never decides what is consumed: a set word is taken with
//        the Atomics.and, whose result names the queues, and each PROD is
//        loaded with Atomics.load after the take (the argument above);
//      - a peek that reads a stale 0 only leaves the bit for a later pass:
//        the thread never sleeps on a peek, because the re-check (A) before
//        Atomics.wait loads every word with Atomics.load (Consumer.hasWork);
//      - every poll and every turn of the thread's loop (before each pass)
//        makes one Atomics call, CTRL's load: a call the JIT cannot see
//        through, so it cannot hoist a peek out of the loop, and each
//        iteration reads memory afresh; an aligned Int32Array read never
//        tears (ECMAScript's memory model: integer TypedArray accesses are
//        [[NoTear]]). CTRL itself must be a load: it publishes the control
//        message the thread then reads;
//      - the other words a poll looks at are peeked as well: STATE (a stop
//        seen one poll late), the crash test hook, the mailboxes' STATE (a
//        request is served only after an Atomics.load of it, the acquire of
//        its arguments), the GERRORN of a stopped queue and CONFIG of a hw
//        queue; measured in-thread, an idle poll went from ~28 to ~15 ns and
//        an idle pass from ~43 to ~21 ns (1 queue, 2 mailboxes);
//      - the crash hook read after a PROD load (consume) or a request's
//        load is plain: the test armed it before it published that PROD or
//        request, so the arming store happens before the read.
//    The same rule for a queue's registers in a pass: CONFIG and GERRORN are
//    read plainly (values with nothing published behind them; after the
//    take, so ordered after the guest's stores to them; a hw queue's are
//    sampled every pass, so a stale one waits one pass), while PROD stays an
//    Atomics.load, once per consume: it publishes the slots (a plain read
//    could see a newer PROD than the slots it can see). HEARTBEAT, which only
//    its thread writes, is bumped with a plain read-modify-write.
//  - What is not announced by a bit: a queue stopped on an error waits for
//    GERRORN, not PROD, so the thread keeps its own list of stopped queues and
//    reads their GERRORN each pass (a bit taken while stopped is dropped: the
//    ack resumes the queue); a pass cut short (host stopping) sets its bit
//    again; a thread that starts (or restarts) sets the bit of every queue it
//    is given once, so it looks at each. Mailboxes and control words are
//    polled as before.
//  - CONFIG.EN: a pass drops the bit of a disabled queue (its PROD may have
//    moved), so whoever enables a queue marks it as a PROD writer does:
//    `Atomics.store(CONFIG)` then the OR (DoorbellTransport.writeConfig; the
//    host enables a new queue before the thread is given it, which marks it).
//    The argument above holds with CONFIG in place of PROD: the pass that
//    takes the bit loads CONFIG after the take.
//  - Polled queues (virtio's VRING_USED_F_NO_NOTIFY; io_uring's SQPOLL
//    thread, which reads the SQ tail itself while awake). The bit is one
//    line more per publish than a thread that reads PROD: the guest's OR
//    takes the pend line back from the poller, and the poller's peek and
//    take bring it over again. So a thread that is polling anyway reads
//    the PROD of the queues that keep it busy directly and tells their
//    producers so:
//      - a pass that consumed commands from a queue announced by its bit
//        puts it in the thread's polled set (at most POLLED_QUEUES,
//        consumer.ts) with `Atomics.store(NO_NOTIFY, 1)`; while there, every
//        poll peeks its PROD (before the pending words) and every pass
//        serves it first (PROD loaded with Atomics.load, as above), so the
//        bitmap's scan of a word per VM runs after its CONS publish; a bit
//        taken for a queue that pass already served is dropped (its
//        publisher loaded NO_NOTIFY clear, so its PROD store came before
//        the queue joined the set, before that PROD load);
//      - a producer loads NO_NOTIFY after its PROD store (publish: PROD
//        release, then the load); when set, the store was the whole publish:
//        no OR, no kick;
//      - the thread takes a queue out (before it sleeps, all of them; when
//        the queue is disabled or stopped; when it sat idle for
//        POLLED_IDLE_PASSES passes and another queue wants its place) with
//        `Atomics.store(NO_NOTIFY, 0)`, then `Atomics.load(PROD)`, and sets
//        the queue's bit itself if PROD is ahead of its CONS.
//    Why a published PROD is still always consumed: take a PROD store S
//    whose producer's load L of NO_NOTIFY read 1, so L precedes the store
//    of 0 (C) that ends that stay in the set. S precedes L precedes C,
//    which precedes the thread's PROD load R after it: R sees S (or a later
//    PROD), and the thread sets the bit, which the bitmap argument above
//    then covers. Until C the thread reads PROD itself, on every poll and
//    every pass, and it never sleeps with a queue in the set (it empties
//    the set first), so the sleep argument below needs only the bits. A
//    thread that starts (or restarts) clears NO_NOTIFY of every queue it is
//    given before it sets the queue's bit: a dead thread's set must not
//    silence producers, and the same argument applies to that clear.
//  - Hardware VCMDQs (Q_VINTF, the 'hw' path, src/hw.ts) have no bit: the
//    guest's PROD store is its whole publish, as on Tegra241 where the SMMU
//    polls the VCMDQ page and no doorbell exists. The thread keeps them on a
//    list of their own and loads each one's PROD every pass, so a PROD store
//    is seen by the first pass whose load follows it, and it never sleeps
//    while one is enabled (hwPolling), so the sleep argument below never has
//    to cover them. Chosen over a bit set by the hw transport: the hw guest's
//    publish stays exactly the hardware's (one store, no RMW), and a bitmap
//    would save nothing on a queue that keeps the thread polling anyway; the
//    price is one PROD load per hw queue per pass (a VINTF's few LVCMDQs).
//
// Kernel-thread wake-up (io_uring IORING_SQ_NEED_WAKEUP shape). Producers are
// guests (PROD then its PENDING bit, GERRORN), mailbox clients (mailbox
// STATE) and the host (CTRL). Each producer, after its publishing store:
//      Atomics.store(X)                   // publish (for PROD: the PENDING OR after it)
//      if (Atomics.load(SLEEPING) !== 0) { Atomics.add(WAKE, 1); Atomics.notify(WAKE, 1) }
// The consumer, when a pass found no work and its poll budget is spent (the
// budget comes from src/poll-policy.ts; how long it polls never matters to
// this argument):
//      Atomics.store(SLEEPING, 1)
//      seen = Atomics.load(WAKE)
//      re-check the pending words, stopped queues' GERRORN, mailboxes, CTRL   // (A)
//      (never reached while a hw queue is enabled: the thread polls on)
//      if nothing: Atomics.wait(WAKE, seen, heartbeatMs)
//      Atomics.store(SLEEPING, 0)                      // only the sleeper clears its own flag
// Why no wake-up is lost: take a producer's publish P and the consumer's
// re-check load R of the same word (A); for a PROD, P is the PENDING OR and R
// the load of its bitmap word (the re-check only looks, it does not take).
// If P precedes R in the total order, R sees the work. Otherwise R precedes
// P, so SLEEPING=1 (before R) precedes the producer's load of SLEEPING (after
// P): the producer sees 1 and adds to WAKE. Its add either precedes Atomics.wait, which then returns "not-equal"
// because WAKE != seen (seen was read before R, so before the add), or
// follows it, and the notify wakes the waiter. A notifier never clears
// SLEEPING: a late clear could eat the flag of the NEXT sleep (the lost-wakeup
// trap of node-latency-floor.md). The wait also times out after heartbeatMs,
// so even a broken producer costs latency, not a hang.
//
// Cache lines per doorbell round trip (one submitWords of a TLBI + CMD_SYNC,
// single producer, kernel thread spinning). Counted, access by access, in
// test/line-budget.test.ts; "ctl.N" is line N of the control block, "q.N"
// line N of the queue's register block, "pend" the line of the kernel
// thread's pending bitmap that holds the queue's slot (its VM's word; up to
// LINE_WORDS VMs' words share a line, so another VM's publish can pull it
// away, as the qid-numbered words of 32 queues did). The slot (q.2's Q_PEND)
// is read once, when the transport is built and when the thread adds the
// queue, never per round trip.
//  Guest (submitWords, kick, its wait), the queue in the polled set (as it
//  is from its second round trip while the thread polls; before that, and
//  after the thread slept, the publish also ORs the pend line and reads
//  ctl.1's SLEEPING in kick):
//    reads  ctl.2 (EPOCH in Liveness.begin, SPIN_US: written at setup only),
//           q.4 (RESV, PUB, TURN_WAITERS: its own driver line),
//           q.1 (CONS, GERROR: every poll of the wait; the space check
//           only when the CONS it last saw shows too little room, so a
//           batch without a sync reads no line the kernel thread writes),
//           q.0 (GERRORN, in every poll's error check, and NO_NOTIFY after
//           the publish: its own line);
//    writes the slot line(s) of the ring (plain stores; a pair of slots
//           shares one line unless it straddles two), q.4 (CAS RESV, PUB),
//           q.0 (PROD, the publish);
//    no clock read unless its wait outlasts SPIN_CLOCK_EVERY polls.
//  Kernel thread (a pass, its spin):
//    reads  pend (peeked; its own bits taken with an Atomics.and when set:
//           idle for a polled queue),
//           ctl.0 (CTRL, CRASH; WAKE is written only by a kick of a sleeper),
//           ctl.1 (STATE), ctl.2 (config, plain reads), q.0 (CONFIG,
//           GERRORN, PROD, and WAITERS after each publish), the slot line(s)
//           (one plain copy per command), each mailbox's STATE line;
//    writes pend (the Atomics.and that takes the bits), q.1 (CONS: once per
//           pass, at its CMD_SYNC or at the end; GERROR and ERR_REASON only
//           on an error), q.3 (command statistics, plain, per command),
//           ctl.3 (HEARTBEAT per pass, pass statistics);
//    per command, nothing shared but its slot (the line-budget test checks
//           that 1 and 60 commands make the same Atomics accesses).
// So three lines cross per round trip: the slot line and q.0 to the kernel
// thread, q.1 back. A queue outside the polled set adds pend both ways (the
// price of the bitmap); in exchange an idle queue costs a pass no line at
// all (an idle pending word stays in the poller's cache). A pass loads one word per
// VM it serves (one per 32 queues of a VM), LINE_WORDS of them to a line:
// with words per VM, a thread of 1024 single-queue VMs polls 1024 words
// (64 lines, all cached while idle) where bit = qid polled 32. Every other line a side
// reads is written by nobody per round trip (ctl.0, ctl.1, ctl.2), or only by
// that side itself (q.4, and q.0 for the guest, which the kernel thread
// writes only when the queue enters or leaves its polled set), and the lines written per
// pass or per command are read only by slow paths (ctl.3 by a wait slice's
// liveness check, q.3 by state()). The floor is therefore the 3-line ping-pong plus the work:
// bench/scenario-anatomy.ts measures both and the residual beside them.
//
// Liveness: the kernel thread bumps HEARTBEAT at least once per heartbeatMs
// (per pass and per wait timeout). STATE goes RUNNING -> STOPPING (host asked)
// -> DEAD; on any escaping exception the thread sets DEAD and notifies every
// waiter word before dying, and the host sets DEAD when the worker exits. A
// waiter blocked on the main thread cannot see the exit event, so waiters wait
// in slices and also treat a HEARTBEAT unchanged for STALE_MS as death.
//
// Mailboxes (request/response, see src/mailbox.ts): the client claims the
// slot (CAS STATE IDLE->CLAIMED), writes OP/args/payload with plain stores,
// publishes `Atomics.store(STATE, REQUEST)` (publish: mailbox REQUEST) and
// kicks the server as above. The server writes results, publishes
// `Atomics.store(STATE, RESPONSE)` (publish: mailbox RESPONSE) and notifies
// STATE. The client reads results and releases the slot with STATE=IDLE.
// ─────────────────────────────────────────────────────────────────────────────

/** Int32 words in one 64-byte cache line; words that different threads write never share one. */
export const LINE_WORDS = 16;

// ── Server control block (the kernel thread's; the trap VMM thread has its own) ──
/** Line 0 (written by producers): doorbell counter. */
export const CTL_WAKE = 0;
/** Line 0: bumped by the host after posting control messages on the port. */
export const CTL_CTRL = 1;
/** Line 0: test hook: a non-zero value (CRASH) makes the thread fail on its next pass. */
export const CTL_CRASH = 2;
/**
 * CTL_CRASH values: EXIT leaves no trace (process.exit, STATE untouched);
 * THROW is an exception escaping the thread's loop (the thread marks itself
 * DEAD, as on any bug); WEDGE blocks forever without a heartbeat.
 */
export const CRASH = { EXIT: 1, THROW: 2, WEDGE: 3 } as const;
export type CrashHow = 'exit' | 'throw' | 'wedge';
export const CRASH_CODE: Record<CrashHow, number> = { exit: CRASH.EXIT, throw: CRASH.THROW, wedge: CRASH.WEDGE };
/**
 * Line 0: test hook: with CTL_CRASH armed, 0 fails at the next pass; k > 0
 * fails mid-pass, right after the k-th command consumed from now on and
 * before the CONS store that would publish it as consumed (the window in
 * which a restart runs a command again). The host stores it before
 * CTL_CRASH; the kernel thread counts it down across passes. Read only while
 * CTL_CRASH is armed, so it costs the consume loop nothing.
 */
export const CTL_CRASH_AFTER = 3;
/**
 * Line 1 (written by the server, rarely): need-wakeup flag, 1 while it may be
 * asleep. Every producer's kick reads it, so nothing the server writes per
 * pass may share its line (a per-pass write would cost each kick a line
 * transfer: issue #12 measured the round trip 0.83-1.06 -> 0.59-0.79 µs when
 * HEARTBEAT moved off it).
 */
export const CTL_SLEEPING = 16;
/**
 * Line 1: when the idle period of a sleeping server really ended, for its
 * polling policy: the clockUs() of the first kick that found SLEEPING set
 * since the server last cleared it (0: none). The sleeper clears it before
 * it announces sleep; a kicker that sees SLEEPING set stamps it with
 * compareExchange(0 -> now) before it adds to WAKE, so only the first kick
 * counts; the sleeper reads it after it wakes. Without it the period ends
 * when the wake-up reached the server, ~15-25 us after the kick on Node: a
 * 20 us gap was learnt as ~36 us, longer than a wake is worth, so the
 * adaptive poller slept on every such gap and every sleep confirmed it.
 * Written only on the sleep path, never per pass.
 */
export const CTL_KICKED_AT = 17;
/** Line 1: SERVER_STATE (changes a few times in a thread's life; waiters read it). */
export const CTL_STATE = 18;
/**
 * Line 3 (written by the server every pass): liveness counter. Read only by
 * waiters between wait slices (Liveness.check), never on a submission's fast
 * path, so the server's per-pass writes stay in its own cache.
 */
export const CTL_HEARTBEAT = 48;
/** Line 3: statistics: passes that found work, sleeps taken (plain words, per pass like HEARTBEAT). */
export const CTL_STAT_PASSES = 49;
export const CTL_STAT_SLEEPS = 50;
/**
 * Line 2 (configuration, written once by the host before the thread starts):
 * the guests' spin budget, µs, before they block on a completion (also the
 * kernel thread's fixed budget when the host was started with `spinUs`; its
 * polling policy itself travels in the thread's workerData).
 */
export const CTL_SPIN_US = 32;
export const CTL_HEARTBEAT_MS = 33;
export const CTL_STALE_MS = 34;
export const CTL_INJECT_DELAY_US = 35;
/**
 * Bench-only slowdown (the gate's detection floor): ns of extra WORK per
 * command, turned into loop iterations by the kernel thread's own
 * calibration (native-free-fastpath/slowdown.ts). 0 in normal use.
 */
export const CTL_SLOWDOWN_NS = 36;
/**
 * Line 2: the server's incarnation, bumped by the host when it replaces a dead
 * thread (host.restartKernelThread). A wait that began under another
 * incarnation ends with the death it slept through, even if the new thread
 * already runs. Read once per wait (Liveness.begin): this line is written
 * only at a restart, so the read stays in the reader's cache.
 */
export const CTL_EPOCH = 37;
/**
 * Line 2: word offset of this server's pending bitmap (the kernel threads';
 * 0 for a server without one, the VMM), written once by the host (initMmio).
 */
export const CTL_PENDING = 38;
/** Line 2: Int32 words in that bitmap (pendingBitmapWords), written with it: a slot must lie below 32 times it. */
export const CTL_PENDING_WORDS = 39;
/**
 * Line 2, in thread 0's control block (KTHREAD_CTL) only: word offset of
 * mailbox FIXED_MAILBOXES, the first of those past the fixed region (a host
 * with `maxMailboxes` above FIXED_MAILBOXES); 0 when it has none. Written
 * once by initMmio before any thread starts and never again, so no reader
 * sees it stale (mailboxAt).
 */
export const CTL_MAILBOXES_MORE = 40;
export const CTL_WORDS = 64;

export const SERVER_STATE = { STARTING: 0, RUNNING: 1, STOPPING: 2, DEAD: 3 } as const;

/** Kernel thread 0's control block (the others' follow the register blocks: mmioLayout). */
export const KTHREAD_CTL = 0;
/** A second control block for the trap path's VMM thread. */
export const VMM_CTL = KTHREAD_CTL + CTL_WORDS;

// ── Per-queue register block ──
// Our own layout, not Tegra241's VCMDQ page (whose offsets are CONS 0x0,
// PROD 0x4, CONFIG 0x8, STATUS 0xC, GERROR 0x10, GERRORN 0x14): the same
// registers, arranged so that words written by different threads never share
// a cache line (guest-written line 0, kernel-thread-written line 1,
// host-written line 2, statistics line 3).
/** Line 0 (guest-written): SMMU_CMDQ_PROD: WR_WRAP at bit LOG2SIZE, index below. */
export const Q_PROD = 0;
/** Line 0: GERRORN (guest acks GERROR by writing it back). */
export const Q_GERRORN = 1;
/** Line 0: CONFIG; bit 0 EN. */
export const Q_CONFIG = 2;
/** Line 0: guest threads blocked (or about to block) in Atomics.wait on CONS or an MSI word of this queue. */
export const Q_WAITERS = 3;
/**
 * Line 0: the producer's "I will block" hint (GuestQueue.announceIdle):
 * IDLE_HINT_SET | the PROD it had published when it announced. It holds
 * while PROD still equals it, so the next publish cancels it with no store
 * of its own. Advisory only: the kernel thread's adaptive poller sleeps at
 * once when every queue holds one, and the sleep protocol below still
 * catches whatever is published after (a late hint costs one wake, never a
 * lost one). The producer stores it (publish: IDLE_HINT) after its last
 * PROD; the kernel thread loads it and then PROD.
 */
export const Q_IDLE_HINT = 4;
export const IDLE_HINT_SET = 1 << 31;
/**
 * Line 0, written by the kernel thread (only when the queue enters or leaves
 * its polled set): NO_NOTIFY, virtio's VRING_USED_F_NO_NOTIFY. Non-zero: the
 * thread reads this queue's PROD itself on every poll and pass, so a publish
 * needs no pending bit and no kick ("Polled queues" above). On the guest's
 * own line on purpose: the producer loads it right after its PROD store, a
 * line it then holds, so the check costs no line crossing.
 */
export const Q_NO_NOTIFY = 5;
/** Line 1 (kernel-thread-written): CONS: RD_WRAP at bit LOG2SIZE, ERR[30:24]. */
export const Q_CONS = 16;
/** Line 1: GERROR (CMDQ_ERR bit 0, MSI_CMDQ_ABT bit 4). */
export const Q_GERROR = 17;
/** Line 1: ERR_REASON debug word: (ERR_KIND << 16) | code, see below. */
export const Q_ERR_REASON = 18;
/** Line 1: STATUS; bit 0 ENABLED (the kernel thread serves the queue). */
export const Q_STATUS = 19;
/** Line 2 (host-written at setup): LOG2SIZE of the queue. */
export const Q_LOG2SIZE = 32;
/** Line 2: BASE: byte PA of entry 0. */
export const Q_BASE = 33;
/** Line 2: the same base as the guest's IPA. */
export const Q_BASE_IPA = 34;
/** Line 2: VMID of the owning VM. */
export const Q_VMID = 35;
/** Line 2: the vCMDQ command set, an index into vsmmu.ts VCMDQ_CMDSETS (0 wide, the default; 1 strict Tegra241). */
export const Q_CMDSET = 36;
/**
 * Line 2: word offset of the VINTF (src/vintf.ts) whose configuration the
 * SMMU applies to this queue's commands: a hardware VCMDQ (the 'hw' path).
 * 0 for a SW vCMDQ or a trapped queue, whose rewrite is the VM's vSMMU.
 */
export const Q_VINTF = 37;
/**
 * Line 2: the queue's pending slot: its bit is bit (slot & 31) of word
 * (slot >>> 5) of its kernel thread's bitmap (pendingWord, pendingBit), in a
 * word only its VM's queues use (PendingSlots). The one place both sides
 * learn it: written by the host before it enables the queue, tells the
 * thread of it (addQueue) or gives out its handle, never rewritten, so no
 * reader sees it stale; the guest's transport reads it once when built, the
 * consumer once per addQueue (a restart's replay too; like BASE, it trusts
 * this host-written line and checks the slot lies in its bitmap). 0 and
 * unused on a hardware VCMDQ or a trapped queue, which have no bit.
 */
export const Q_PEND = 38;
/**
 * Line 3 (kernel-thread-written): statistics, bumped per command. Their own
 * line: on CONS's line every bump would steal the line from a producer
 * polling CONS for space (false sharing, measured at ~2x per command).
 */
export const Q_STAT_CMDS = 48;
export const Q_STAT_SYNCS = 49;
export const Q_STAT_ERRORS = 50;
/** Line 3: number of slot copies taken (one per command consumed or refused). */
export const Q_STAT_SLOT_READS = 51;
export const Q_STAT_PASSES = 52;
/**
 * Line 4 (guest-written, driver-private: no SMMU or VMM reads it): the shared
 * state of several producers on one queue, Linux's cmdq->q.llq shadow PROD and
 * cmdq->owner_prod (the protocol is above GuestQueue.submitWords in guest.ts).
 * Both are free-running u32 positions (the queue position is the low
 * log2size+1 bits), so a waiter can tell a lap from no progress.
 * RESV: the reservation head, advanced by CAS; every slot before it is owned
 * by a producer. Line of its own: producers CAS it while the kernel thread
 * polls PROD on line 0.
 */
export const Q_DRV_RESV = 64;
/** Line 4: everything before PUB is published in PROD; the producer whose reservation starts at PUB publishes next. */
export const Q_DRV_PUB = 65;
/** Line 4: producers blocked (or about to block) in Atomics.wait on PUB for their turn to publish. */
export const Q_DRV_TURN_WAITERS = 66;
export const Q_WORDS = 80;

export const CONFIG_EN = 1;
export const STATUS_ENABLED = 1;
export const GERROR_CMDQ_ERR = 1 << 0;
export const GERROR_MSI_CMDQ_ABT = 1 << 4;
/** CONS.ERR [30:24]. */
export const CONS_ERR_SHIFT = 24;
export const CONS_ERR_MASK = 0x7f << CONS_ERR_SHIFT;

/** What ERR_REASON's code refers to. */
export const ERR_KIND = {
  /** decodeWords reason code (codec illReasonText). */
  DECODE: 1,
  /** VSmmu.convertVcmdq reject code (vsmmu rejectReason). */
  VSMMU: 2,
  /** The model refused the command (code = CERROR). */
  MODEL: 3,
} as const;

// ── The MMIO region, in address order ──
// Fixed part first (the two control blocks above, then FIXED_MAILBOXES
// mailboxes and their payloads), so the offsets of a default host
// (KTHREAD_CTL, a fixed mailbox's id, `queueRegs(qid)`) are constants of
// this module. Then the queue register blocks, as many as the host's
// `maxQueues` (startHost), then what follows them (mmioLayout): the control
// blocks of kernel threads 1..N-1, one pending bitmap per kernel thread, and
// the mailboxes past the fixed ones (`maxMailboxes`), each followed by its
// payload. A reader finds its thread's control block in its handle (`ctl`),
// its bitmap in the control block (CTL_PENDING) and a mailbox through
// mailboxAt (CTL_MAILBOXES_MORE).

// ── Mailboxes ──
/** Line 0: STATE (MAILBOX_STATE); the only word both sides spin on. */
export const MB_STATE = 0;
/** Line 1: operation, written by the client. */
export const MB_OP = 16;
/** Line 1: arguments (client) and results (server), MB_ARGS words each. */
export const MB_ARG0 = 17;
export const MB_RES0 = 24;
export const MB_ARGS = 7;
/** Line 1: byte PA of this mailbox's payload area and its size. */
export const MB_PAYLOAD = 31;
export const MB_WORDS = 32;
export const MB_PAYLOAD_BYTES = 4096;

export const MAILBOX_STATE = { IDLE: 0, CLAIMED: 1, REQUEST: 2, RESPONSE: 3 } as const;

/** Mailbox ops served by the kernel thread. */
export const KTHREAD_OP = {
  /** args: psid, ssid, iovaLo, iovaHi, access -> results: [0] fault code (0 = ok), [1] paLo, [2] paHi, [3..6] model extras. */
  TRANSLATE: 1,
  /** The trap path's IOMMU_HWPT_INVALIDATE (handler registered by src/trap on the kernel thread). */
  IOMMUFD_INVALIDATE: 2,
} as const;

/**
 * Mailboxes of the fixed region (ids 0..FIXED_MAILBOXES-1), and startHost's
 * default `maxMailboxes`. Each trap-path queue (its vCPU's exit into the
 * VMM), each DMA agent and each kernel thread's trap-path ioctl channel takes
 * one; ids are never reused.
 */
export const FIXED_MAILBOXES = 64;
export const MAILBOXES = VMM_CTL + CTL_WORDS;

/** Word offset of mailbox `id` of the fixed region (id < FIXED_MAILBOXES; mailboxAt finds any). */
export function mailboxWords(id: number): number {
  return MAILBOXES + id * MB_WORDS;
}

/** Byte PA of fixed mailbox `id`'s payload area (mailboxPayloadOf finds any mailbox's). */
export const MAILBOX_PAYLOADS = (MAILBOXES + FIXED_MAILBOXES * MB_WORDS) * 4;
export function mailboxPayload(id: number): number {
  return MAILBOX_PAYLOADS + id * MB_PAYLOAD_BYTES;
}

/** Words of a mailbox past the fixed region: its slot, then its payload. */
const MORE_MAILBOX_WORDS = MB_WORDS + MB_PAYLOAD_BYTES / 4;

/** Word offset of mailbox `id` of the host whose MMIO `i32` views: fixed, or past the fixed region (CTL_MAILBOXES_MORE). */
export function mailboxAt(i32: Int32Array, id: number): number {
  return id < FIXED_MAILBOXES ? mailboxWords(id) : i32[KTHREAD_CTL + CTL_MAILBOXES_MORE]! + (id - FIXED_MAILBOXES) * MORE_MAILBOX_WORDS;
}

/** Byte PA of the payload area of the mailbox whose slot is at word `words` (mailboxAt's result). */
export function mailboxPayloadOf(words: number): number {
  return words < MAILBOX_PAYLOADS / 4 ? mailboxPayload((words - MAILBOXES) / MB_WORDS) : (words + MB_WORDS) * 4;
}

// ── Queue register blocks: `maxQueues` of them ──
export const QUEUE_REGS = (MAILBOX_PAYLOADS + FIXED_MAILBOXES * MB_PAYLOAD_BYTES) / 4;

/** Word offset of queue `qid`'s register block. */
export function queueRegs(qid: number): number {
  return QUEUE_REGS + qid * Q_WORDS;
}

/** startHost's default `maxQueues`: the README's 64 VMs x 16 queues (one per vCPU). */
export const DEFAULT_MAX_QUEUES = 1024;

// ── After the register blocks: kernel threads 1..N-1's control blocks, then
// one pending bitmap per kernel thread ──
// A queue's slot (Q_PEND) is its "PROD moved" mark (protocol above). Each
// bitmap is whole cache lines of its own: producers RMW it, its kernel
// thread polls and takes it. Sized for the worst case of whole words per
// VM: every VM with one queue, all on one thread, is one word per queue.

/** Int32 words of one pending bitmap of a host with `maxQueues` queues: one per queue, whole lines. */
export function pendingBitmapWords(maxQueues: number): number {
  return Math.ceil(maxQueues / LINE_WORDS) * LINE_WORDS;
}

/** Where a host's variable regions lie; startHost computes it from maxQueues and kernelThreads. */
export interface MmioLayout {
  readonly maxQueues: number;
  /** Word offset of each kernel thread's control block (thread 0's is KTHREAD_CTL). */
  readonly ctl: readonly number[];
  /** Word offset of each kernel thread's pending bitmap. */
  readonly pending: readonly number[];
  /** Int32 words in each of those bitmaps (pendingBitmapWords). */
  readonly pendingWords: number;
  /** Word offset of mailbox FIXED_MAILBOXES (CTL_MAILBOXES_MORE), 0 when there are no more than the fixed ones. */
  readonly mailboxesMore: number;
  /** Bytes of the MMIO region; host-private memory and VM RAM start here (64 KiB aligned). */
  readonly bytes: number;
}

export function mmioLayout(maxQueues: number, kernelThreads = 1, maxMailboxes = FIXED_MAILBOXES): MmioLayout {
  const ctlBase = queueRegs(maxQueues);
  const ctl = Array.from({ length: kernelThreads }, (_, t) => (t === 0 ? KTHREAD_CTL : ctlBase + (t - 1) * CTL_WORDS));
  const bitmaps = ctlBase + (kernelThreads - 1) * CTL_WORDS;
  const words = pendingBitmapWords(maxQueues);
  const pending = ctl.map((_, t) => bitmaps + t * words);
  const more = bitmaps + kernelThreads * words;
  const end = more + Math.max(0, maxMailboxes - FIXED_MAILBOXES) * MORE_MAILBOX_WORDS;
  return {
    maxQueues, ctl, pending, pendingWords: words, mailboxesMore: end > more ? more : 0, bytes: Math.ceil((end * 4) / 65536) * 65536,
  };
}

/** Bytes of the MMIO region of a host with `maxQueues` queues, `kernelThreads` kernel threads and `maxMailboxes` mailboxes. */
export function mmioBytes(maxQueues: number, kernelThreads = 1, maxMailboxes = FIXED_MAILBOXES): number {
  return mmioLayout(maxQueues, kernelThreads, maxMailboxes).bytes;
}

/** The MMIO bytes of a host with the default options (startHost without maxQueues). */
export const MMIO_BYTES = mmioBytes(DEFAULT_MAX_QUEUES);

/**
 * The publish store of the hot paths (liburing's io_uring_smp_store_release):
 * an Atomics.exchange whose old value is dropped, not an Atomics.store. The
 * order is the same: both are sequentially consistent, and the exchange, an
 * RMW, is at least as strong. The price is not: Node 20's V8 (11.3) inlines
 * neither, and its Atomics.store builtin costs ~55 ns a call on this machine
 * against ~35 ns for the exchange. A round trip publishes PROD, PUB, CONS and,
 * for CS=IRQ, the MSI through it; cold stores keep Atomics.store.
 */
/**
 * Word `index` as a poll or a re-check reads it (layout.ts, "Peeks"): a plain
 * read when `peek` (a stale value costs one more poll), else an Atomics.load
 * (the re-check before a server sleeps, which must see every publish).
 */
export function readWord(i32: Int32Array, index: number, peek: boolean): number {
  return peek ? i32[index]! : Atomics.load(i32, index);
}

export function storeRelease(i32: Int32Array, index: number, value: number): void {
  Atomics.exchange(i32, index, value); // publish: the caller's (tagged at the call)
}

/** Point each kernel thread's control block at its pending bitmap, and thread 0's at the mailboxes past the fixed ones (before the threads start); returns the layout. */
export function initMmio(i32: Int32Array, maxQueues = DEFAULT_MAX_QUEUES, kernelThreads = 1, maxMailboxes = FIXED_MAILBOXES): MmioLayout {
  const m = mmioLayout(maxQueues, kernelThreads, maxMailboxes);
  i32[KTHREAD_CTL + CTL_MAILBOXES_MORE] = m.mailboxesMore;
  m.ctl.forEach((ctl, t) => {
    i32[ctl + CTL_PENDING] = m.pending[t]!;
    i32[ctl + CTL_PENDING_WORDS] = m.pendingWords;
  });
  return m;
}

/**
 * One kernel thread's pending slots, as the host hands them out (setup only):
 * a VM's first queue takes a fresh word, its later queues fill that word,
 * then take another fresh one. No word ever holds two VMs' bits.
 */
export class PendingSlots {
  /** Words handed out so far: the next fresh word's index. */
  private fresh = 0;
  /** Each VM's newest slot. */
  private readonly newest = new Map<number, number>();
  constructor(readonly words: number) {}
  /** The slot of a new queue of VM `vmid`, or -1 when no fresh word is left. */
  take(vmid: number): number {
    const prev = this.newest.get(vmid);
    let slot: number;
    if (prev !== undefined && (prev & 31) !== 31) slot = prev + 1;
    else if (this.fresh < this.words) slot = this.fresh++ << 5;
    else return -1;
    this.newest.set(vmid, slot);
    return slot;
  }
}

/** Queue `qid`'s pending slot (Q_PEND, host-written). */
export function pendingSlot(i32: Int32Array, qid: number): number {
  return i32[queueRegs(qid) + Q_PEND]!;
}

/** Word offset of pending slot `slot` in the bitmap of the kernel thread at `ctl`. */
export function pendingWord(i32: Int32Array, ctl: number, slot: number): number {
  return i32[ctl + CTL_PENDING]! + (slot >>> 5);
}

/** Pending slot `slot`'s bit in its word. */
export function pendingBit(slot: number): number {
  return 1 << (slot & 31);
}

/** After publishing PROD of queue `qid`: mark its slot pending for the kernel thread at `ctl` (then kick). */
export function markPending(i32: Int32Array, ctl: number, qid: number): void {
  const slot = pendingSlot(i32, qid);
  Atomics.or(i32, pendingWord(i32, ctl, slot), pendingBit(slot)); // publish: PENDING bit, after PROD
}

/**
 * A doorbell producer's publish of PROD (the guest's DoorbellTransport and
 * the simulator's ring): PROD, then its pending bit unless the kernel thread
 * polls the queue ("Polled queues" above). True when it set the bit: the
 * caller then kicks.
 */
export function publishDoorbellProd(i32: Int32Array, regs: number, prod: number, pendWord: number, pendBit: number): boolean {
  storeRelease(i32, regs + Q_PROD, prod); // publish: PROD release
  if (Atomics.load(i32, regs + Q_NO_NOTIFY) !== 0) return false;
  Atomics.or(i32, pendWord, pendBit); // publish: PENDING, after PROD
  return true;
}

// ── The wake-up protocol, in one place for every producer and every server ──

/**
 * A clock every thread of the process reads alike: µs since the epoch,
 * mod 2^32, never 0 (0 is CTL_KICKED_AT's "none"). performance.now() counts
 * from each thread's own timeOrigin; timeOrigin + now() is one clock across
 * threads (measured here: a worker's stamp falls inside the main thread's
 * sub-µs round trip). Differences of two readings, | 0, are exact for spans
 * below ~35 minutes.
 */
export function clockUs(): number {
  return clockUsAt(performance.now());
}

/** clockUs() of this thread's performance.now() reading `nowMs`. */
export function clockUsAt(nowMs: number): number {
  return (Math.round((performance.timeOrigin + nowMs) * 1000) | 0) || 1;
}

/** After a publishing store: wake the server only if it said it may sleep. */
export function kick(i32: Int32Array, ctl: number): void {
  if (Atomics.load(i32, ctl + CTL_SLEEPING) !== 0) {
    Atomics.compareExchange(i32, ctl + CTL_KICKED_AT, 0, clockUs()); // publish: KICKED_AT, the first kick's time (the sleeper's policy)
    Atomics.add(i32, ctl + CTL_WAKE, 1); // publish: WAKE (the sleeper's futex word)
    Atomics.notify(i32, ctl + CTL_WAKE, 1);
  }
}

/**
 * Server side: announce sleep, re-check with `hasWork` (which must look at
 * every word a producer publishes), and block until kicked or `timeoutMs`.
 * Returns true when it slept (or tried to), false when the re-check found work.
 */
export function sleepUnlessWork(i32: Int32Array, ctl: number, hasWork: () => boolean, timeoutMs: number): boolean {
  Atomics.store(i32, ctl + CTL_KICKED_AT, 0); // unordered: before SLEEPING, so a kick that sees SLEEPING stamps a clear word
  Atomics.store(i32, ctl + CTL_SLEEPING, 1); // publish: SLEEPING, before the re-check (A)
  const seen = Atomics.load(i32, ctl + CTL_WAKE);
  if (hasWork()) {
    Atomics.store(i32, ctl + CTL_SLEEPING, 0); // unordered: only the sleeper clears its own flag
    return false;
  }
  Atomics.wait(i32, ctl + CTL_WAKE, seen, timeoutMs);
  Atomics.store(i32, ctl + CTL_SLEEPING, 0); // unordered: only the sleeper clears its own flag
  return true;
}

/**
 * Wake everyone who may be blocked on queue `qid`: CONS waiters (CS_SEV,
 * space) and MSI-polling waiters, who wait on the first word of their own
 * CMD_SYNC slot somewhere in [CONS, PROD). Used on a queue error and when
 * the kernel thread dies; bounded by the queue size, never on the hot path.
 */
export function notifyQueueWaiters(i32: Int32Array, qid: number): void {
  const r = queueRegs(qid);
  Atomics.notify(i32, r + Q_CONS);
  const log2 = i32[r + Q_LOG2SIZE]!;
  const base = (i32[r + Q_BASE]! >>> 0) / 4;
  if (base === 0 || log2 < 0 || log2 > 19) return;
  const mask = (1 << log2) - 1;
  const prod = Atomics.load(i32, r + Q_PROD);
  let cons = Atomics.load(i32, r + Q_CONS);
  for (let n = 0; n <= mask && ((prod ^ cons) & ((2 << log2) - 1)) !== 0; n++) {
    Atomics.notify(i32, base + ((cons & mask) << 2));
    cons = (cons & ~CONS_ERR_MASK) + 1;
  }
}
