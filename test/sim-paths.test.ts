// The simulator's actors and paths, on a profile whose every step has one
// fixed cost: a lone vCPU's latency is then exactly the sum of the steps its
// path takes (counted here from the path's structure, not from the code);
// with many vCPUs, what serialises serialises and what is shared saturates.
// And every run is a correctness run: a lost invalidation ends it.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { POLLED_QUEUES } from '../native-free-fastpath/consumer.ts';
import { ArgumentError, StaleTranslationError } from '../src/errors.ts';
import { F, OP } from '../src/fields.ts';
import { SmmuModel } from '../src/model/smmu.ts';
import { SIM_PATHS, type SimPathName } from '../src/sim/paths.ts';
import { loadProfile, STEP_NAMES, type SimProfile, type StepName } from '../src/sim/profile.ts';
import { runSim, SIM_SPIN_NS, type SimConfig } from '../src/sim/run.ts';

/** Distinct fixed costs, ns, so a wrong count of any step changes the sum. */
const FIXED: Record<StepName, number> = {
  guest_pte: 3, guest_cmd: 5, guest_submit: 23, exit_user: 2000, exit_kernel: 500, ioctl: 300, ioctl_iothread: 370, bql: 70, vmm_cmd: 110, iommufd_cmd: 40,
  kthread_cmd: 60, kthread_pass: 29, smmu_cmd: 130, smmu_sync: 1100, wake: 4000, notice: 150, publish_line: 90, slot_lines: 11,
  hw_doorbell: 210, hw_publish: 43, hw_cmd: 17, clock: 7,
};

function fixedProfile(guestWait: SimProfile['guest_wait'] = 'poll', over: Partial<Record<StepName, number>> = {}): SimProfile {
  const base = loadProfile('kvm-arm64');
  const cost = { ...FIXED, ...over };
  const steps = Object.fromEntries(STEP_NAMES.map((s) => [s, { ...base.steps[s], lo_ns: cost[s], hi_ns: cost[s] }])) as SimProfile['steps'];
  return { ...base, name: 'fixed-test', guest_wait: guestWait, steps };
}

const run = (path: SimPathName, over: Partial<SimConfig> = {}) =>
  runSim({ profile: fixedProfile(), path, vcpus: 1, granule: 4096, unmaps: 20, ...over });

function median(xs: Float64Array): number {
  return Float64Array.from(xs).sort()[xs.length >> 1]!;
}

describe('one vCPU, 4K unmap (one range TLBI + CMD_SYNC): latency = the sum of its path\'s steps', () => {
  const f = FIXED;
  // From the clock read: clear 1 PTE, write 2 commands (TLBI + CMD_SYNC) in one PROD write.
  const guest = f.clock + f.guest_pte + 2 * f.guest_cmd + f.guest_submit;
  // The kernel thread's work on the queue: its fixed part and 2 commands.
  const kwork = f.kthread_pass + 2 * f.kthread_cmd;
  // The kernel's share of one IOMMU_HWPT_INVALIDATE with one TLBI: the VMM parses TLBI + SYNC, one ioctl converting
  // one command, the SMMU executes it and the kernel's CMD_SYNC closing the block.
  const ioctlWork = (ioctl: number) => 2 * f.vmm_cmd + ioctl + f.iommufd_cmd + f.smmu_cmd + f.smmu_sync;

  it('trap-qemu (QEMU shape): exit to user space, BQL, first pass + ioctl on the vCPU thread, back', () => {
    const r = run('trap-qemu');
    expect(median(r.latenciesNs)).toBeCloseTo(guest + f.exit_user + f.bql + ioctlWork(f.ioctl), 6);
    expect(r.traps).toBe(20);
  });

  it('trap (iothread shape): an in-kernel exit kicks the sleeping VMM thread, which does the work; the guest polls the reply', () => {
    const r = run('trap');
    // Its ioctl is the iothread's (a host thread beside the kernel's work), not the vCPU thread's.
    expect(median(r.latenciesNs)).toBeCloseTo(guest + f.exit_kernel + f.wake + ioctlWork(f.ioctl_iothread) + f.notice, 6);
    // The VMM thread holds its CPU for the whole ioctl, the wait for the SMMU's CMD_SYNC included (it polls).
    expect(r.hostCpuNs / r.unmaps).toBeCloseTo(ioctlWork(f.ioctl_iothread), 6);
  });

  it('doorbell-sleep: kick (in-kernel exit) + wake-up, the kernel thread consumes 2 commands, the SMMU runs them, the guest polls CONS', () => {
    const r = run('doorbell-sleep');
    // Woken, it reads PROD and the slots in its re-check: no separate line cost.
    expect(median(r.latenciesNs)).toBeCloseTo(guest + f.exit_kernel + f.wake + kwork + f.smmu_cmd + f.smmu_sync + f.notice, 6);
    expect(r.wakeups).toBe(20);
    expect(r.spinNs).toBe(0);
  });

  it('doorbell-spin: no kick, the spinning kernel thread notices PROD and reads the slot line (every unmap after the first)', () => {
    const r = run('doorbell-spin');
    // The lines: PROD's, polled (notice: the first unmap's pass put the queue in the polled set, layout.ts
    // "Polled queues"), then the slots' (slot_lines); no pending bit.
    const want = guest + f.notice + f.slot_lines + kwork + f.smmu_cmd + f.smmu_sync + f.notice;
    for (const x of r.latenciesNs.subarray(1)) expect(x).toBeCloseTo(want, 6);
    expect(r.wakeups).toBe(1);
  });

  it('hw: the SMMU reads the VCMDQ on the doorbell write; no exit, no kernel thread', () => {
    const r = run('hw');
    expect(median(r.latenciesNs)).toBeCloseTo(guest + f.hw_doorbell + 2 * f.hw_cmd + f.smmu_cmd + f.smmu_sync + f.notice, 6);
    expect(r.hostCpuNs).toBe(0);
  });

  it('a sleeping guest (the emulation\'s waiter) pays a wake-up instead of a poll to see its CMD_SYNC', () => {
    const polled = median(run('doorbell-sleep').latenciesNs);
    const slept = median(runSim({ profile: fixedProfile('sleep-unless-spinning'), path: 'doorbell-sleep', vcpus: 1, granule: 4096, unmaps: 20 }).latenciesNs);
    expect(slept - polled).toBeCloseTo(f.wake - f.notice, 6);
  });

  it('a gap before each operation longer than the spin budget puts the kernel thread to sleep: the kick and wake-up come back', () => {
    const roundtrip = (gapNs: number) => median(runSim({ profile: fixedProfile(), path: 'doorbell-spin', vcpus: 1, workload: 'roundtrip', unmaps: 9, gapNs }).latenciesNs);
    // Spinning, the thread polls the queue's PROD (the polled set); asleep, it emptied the set, so the guest rings.
    const spinning = f.clock + 2 * f.guest_cmd + f.guest_submit + f.notice + f.slot_lines + kwork + f.smmu_cmd + f.smmu_sync + f.notice;
    expect(roundtrip(SIM_SPIN_NS / 2)).toBeCloseTo(spinning, 6);
    expect(roundtrip(2 * SIM_SPIN_NS)).toBeCloseTo(spinning - f.notice - f.slot_lines + f.exit_kernel + f.wake, 6);
  });

  it('the roundtrip workload is the command part alone: no PTEs', () => {
    const r = runSim({ profile: fixedProfile(), path: 'hw', vcpus: 1, workload: 'roundtrip', unmaps: 5 });
    expect(median(r.latenciesNs)).toBeCloseTo(f.clock + 2 * f.guest_cmd + f.guest_submit + f.hw_doorbell + 2 * f.hw_cmd + f.smmu_cmd + f.smmu_sync + f.notice, 6);
  });
});

describe('submissions go out as the driver sends them (GuestQueue.submitWords)', () => {
  const f = FIXED;

  it('a submission of 256 commands is four PROD writes of at most 64 (CMDQ_BATCH_ENTRIES), so four traps', () => {
    // The batch workload at 256: 16 submissions of 256, the last with the CMD_SYNC beside its last 64.
    const r = run('trap-qemu', { workload: 'batch', batch: 256, unmaps: 3 });
    expect(r.traps).toBe(3 * 16 * 4);
  });

  it('a ring smaller than the submission makes the guest wait for space; a sleeping guest and kernel thread pay a wake-up each per lap', () => {
    const op = (log2size: number, guestWait: SimProfile['guest_wait']) =>
      median(runSim({ profile: fixedProfile(guestWait), path: 'doorbell-sleep', vcpus: 1, workload: 'batch', batch: 256, unmaps: 3, log2size }).latenciesNs);
    // 4096 commands through 256 slots: 15 laps beyond the first. Between laps the kernel thread, out of work, falls
    // asleep and the guest's next publish wakes it; a guest that sleeps for space (GuestQueue.block with no spin
    // budget) adds its own wake-up. The roomy ring needs neither.
    expect(op(8, 'poll') - op(13, 'poll')).toBeGreaterThanOrEqual(15 * f.wake);
    expect(op(8, 'sleep-unless-spinning') - op(13, 'sleep-unless-spinning')).toBeGreaterThanOrEqual(15 * 2 * f.wake);
    expect(run('doorbell-sleep', { workload: 'batch', batch: 256, unmaps: 3, log2size: 8 }).wakeups).toBeGreaterThanOrEqual(3 * 16);
  });

  it('a guest sees CONS only as far as the simulated SMMU has got: on a ring lapped four times, hw completes no sync early', () => {
    // The register moves when the real consumer runs (at the fetch); the engine's time comes after. Reading it
    // would free slots and complete the CMD_SYNC before the SMMU issued the commands (a lap-old CONS compared
    // with a position four laps on).
    const r = run('hw', { workload: 'batch', batch: 16, unmaps: 3, log2size: 8 });
    expect(median(r.latenciesNs)).toBeGreaterThanOrEqual(1024 * (f.hw_cmd + f.smmu_cmd) + f.hw_cmd + f.smmu_sync);
    expect(r.smmuBusy).toBeLessThanOrEqual(1);
  });

  it('at batch 1 the guest pays its own price of each publish to a polling kernel thread (publish_line), not only its bookkeeping', () => {
    const r = run('doorbell-spin', { workload: 'batch', batch: 1, unmaps: 20 });
    const perPublish = f.guest_cmd + f.guest_submit + f.publish_line;
    // 64 publishes (the last one with the CMD_SYNC: one more command) after the clock read.
    expect(median(r.latenciesNs)).toBeGreaterThanOrEqual(f.clock + 64 * perPublish + f.guest_cmd);
    // A sleeping kernel thread reads no line the guest writes: the guest pays the kick's exit instead.
    const slept = run('doorbell-sleep', { workload: 'roundtrip', unmaps: 5 });
    expect(median(slept.latenciesNs)).toBeCloseTo(f.clock + 2 * f.guest_cmd + f.guest_submit + f.exit_kernel + f.wake + f.kthread_pass + 2 * f.kthread_cmd + f.smmu_cmd + f.smmu_sync + f.notice, 6);
  });

  it('at batch 1 the hw guest pays hw_publish per PROD write but the last (its CMD_SYNC\'s, overlapped by its poll of CONS)', () => {
    // An SMMU that keeps up (no per-command time) and fetches each write before the next (a doorbell shorter than a
    // publish): the iteration is the guest's 64 publishes, then the CMD_SYNC's fetch and completion.
    const op = (hwPublish: number) => median(runSim({
      profile: fixedProfile('poll', { hw_publish: hwPublish, hw_cmd: 0, smmu_cmd: 0, hw_doorbell: 1 }), path: 'hw', vcpus: 1, workload: 'batch', batch: 1, unmaps: 20,
    }).latenciesNs);
    expect(op(f.hw_publish) - op(0)).toBeCloseTo(63 * f.hw_publish, 6);
    // On hardware the PROD write is a posted store, counted in guest_submit.
    expect(loadProfile('kvm-arm64').steps.hw_publish).toMatchObject({ lo_ns: 0, hi_ns: 0, kind: 'structural' });
  });

  it('refuses a ring too small for the unmap loop or larger than the simulated host reserves', () => {
    for (const log2size of [6, 14]) {
      expect(() => run('hw', { log2size })).toThrow(expect.objectContaining({ argument: 'runSim: config.log2size' }) as ArgumentError);
    }
  });
});

describe('the vSVA storm (bench/scenarios.ts svastorm)', () => {
  const f = FIXED;

  it('cycles mprotect of 4 pages, a COW break of 1, munmap of 4: each its PTE writes, one range TLBI and a CMD_SYNC', () => {
    const r = runSim({ profile: fixedProfile(), path: 'hw', vcpus: 1, workload: 'svastorm', unmaps: 6 });
    const op = (ptes: number) => f.clock + ptes * f.guest_pte + 2 * f.guest_cmd + f.guest_submit + f.hw_doorbell + 2 * f.hw_cmd + f.smmu_cmd + f.smmu_sync + f.notice;
    const want = [op(4), op(1), op(4), op(4), op(1), op(4)];
    Array.from(r.latenciesNs).forEach((x, k) => expect(x, `operation ${k}`).toBeCloseTo(want[k]!, 6));
  });

  it('runs on every path with many vCPUs, each operation checked against the model', () => {
    for (const path of SIM_PATHS) {
      const r = runSim({ profile: loadProfile('kvm-arm64'), path, vcpus: 4, workload: 'svastorm', unmaps: 60 });
      expect(r.latenciesNs.length, path).toBe(240);
    }
  });
});

describe('many vCPUs', () => {
  it('trap-qemu: the VM\'s one CMDQ takes one trapped PROD write at a time (owner + BQL serialise)', () => {
    const r = run('trap-qemu', { vcpus: 8, unmaps: 50 });
    const f = FIXED;
    // Each write holds the queue for at least the exit, the BQL, one ioctl and its CMD_SYNC.
    const perTrap = f.exit_user + f.bql + f.ioctl + f.smmu_sync;
    expect(r.traps * perTrap).toBeLessThanOrEqual(r.elapsedNs);
    // Owners gather the others' commands: fewer writes than unmaps.
    expect(r.traps).toBeLessThan(r.unmaps);
  });

  it('a single kernel thread saturates: throughput levels off at one queue per (its lines + its work + SMMU issue + sync)', () => {
    const f = FIXED;
    // Busy, it reads each queue's pending, PROD and slot lines (notice + 2 slot_lines) before its fixed part and 2
    // commands; POLLED_QUEUES of the 32 queues are in its polled set, which reads PROD itself (no pending line).
    const lines = f.notice + (2 - POLLED_QUEUES / 32) * f.slot_lines;
    const cap = 1e9 / (lines + f.kthread_pass + 2 * f.kthread_cmd + f.smmu_cmd + f.smmu_sync);
    const one = run('doorbell-spin', { unmaps: 200 });
    const many = run('doorbell-spin', { vcpus: 32, unmaps: 200 });
    const opsPerS = (r: typeof one) => (r.unmaps * 1e9) / r.elapsedNs;
    expect(opsPerS(many)).toBeLessThanOrEqual(cap * 1.001);
    expect(opsPerS(many)).toBeGreaterThan(0.95 * cap);
    // 32 vCPUs get little more than one: the thread, not the vCPUs, sets the pace.
    expect(opsPerS(many)).toBeLessThan(1.5 * opsPerS(one));
    // Per-vCPU hardware queues do not share that thread.
    expect(opsPerS(run('hw', { vcpus: 32, unmaps: 200 }))).toBeGreaterThan(4 * cap);
  });

  it('spinning costs host CPU: the spin path burns it between unmaps, the sleeping path only works', () => {
    const f = FIXED;
    const sleep = run('doorbell-sleep', { unmaps: 100 });
    const spin = run('doorbell-spin', { unmaps: 100 });
    expect(sleep.hostCpuNs / sleep.unmaps).toBeCloseTo(f.kthread_pass + 2 * f.kthread_cmd + f.smmu_cmd + f.smmu_sync, 6);
    expect(spin.spinNs).toBeGreaterThan(0);
    expect(spin.hostCpuNs).toBeGreaterThan(sleep.hostCpuNs + spin.spinNs * 0.99);
    expect(spin.spinNs).toBeLessThanOrEqual(spin.elapsedNs);
    expect(SIM_SPIN_NS).toBeGreaterThan(0);
  });

  it('doorbell-adaptive runs the real adaptive policy: it learns to poll through the loop\'s short gaps, so it stops paying wake-ups', () => {
    const adaptive = run('doorbell-adaptive', { unmaps: 100 });
    const sleep = run('doorbell-sleep', { unmaps: 100 });
    expect(sleep.wakeups).toBe(100);
    expect(adaptive.wakeups).toBeLessThan(5);
    expect(median(adaptive.latenciesNs)).toBeLessThan(median(sleep.latenciesNs) - FIXED.wake / 2);
  });

  it('vCPUs sharing a vCMDQ (queues < vCPUs) are all served and checked', () => {
    const r = run('doorbell-sleep', { vcpus: 8, queues: 2, unmaps: 30 });
    expect(r.queues).toBe(2);
    expect(r.latenciesNs.length).toBe(240);
  });

  it('the batch workload at batch 1 (64 publishes per iteration) runs to the end within its event bound, on every path', () => {
    // simcheck's batch-1 point: the bound once counted one publish per operation and stopped this run with SimLimitError.
    for (const path of SIM_PATHS) {
      const r = run(path, { workload: 'batch', batch: 1, unmaps: 200 });
      expect(r.latenciesNs.length).toBe(200);
    }
  });
});

describe('determinism', () => {
  it('the same seed gives the same run; another seed another', () => {
    const profile = loadProfile('kvm-arm64');
    const cfg: SimConfig = { profile, path: 'doorbell-sleep', vcpus: 4, granule: 16384, unmaps: 50, seed: 9 };
    const a = runSim(cfg);
    const b = runSim(cfg);
    const c = runSim({ ...cfg, seed: 10 });
    expect(a.latenciesNs).toEqual(b.latenciesNs);
    expect(a.events).toBe(b.events);
    expect(c.latenciesNs).not.toEqual(a.latenciesNs);
  });
});

describe('correctness inside the simulation', () => {
  afterEach(() => vi.restoreAllMocks());

  it('every path completes every unmap of every granule with no stale translation', () => {
    const profile = loadProfile('kvm-arm64');
    for (const path of SIM_PATHS) {
      for (const granule of [4096, 65536, 262144]) {
        const r = runSim({ profile, path, vcpus: 4, granule, unmaps: 10 });
        expect(r.latenciesNs.every((x) => x > 0)).toBe(true);
      }
    }
  });

  it('a COW break whose TLBI is lost leaves the device on the old frame: StaleTranslationError', () => {
    const execute = SmmuModel.prototype.execute;
    let tlbis = 0;
    // Keep the first operation's (mprotect's) TLBI, drop the second's (the COW break's).
    vi.spyOn(SmmuModel.prototype, 'execute').mockImplementation(function (this: SmmuModel, f: Uint32Array) {
      return f[F.OP] === OP.TLBI_NH_VA && ++tlbis === 2 ? 0 : execute.call(this, f);
    });
    expect(() => runSim({ profile: loadProfile('kvm-arm64'), path: 'doorbell-spin', vcpus: 1, workload: 'svastorm', unmaps: 3 })).toThrow(/COW break of IOVA/);
  });

  it('an SMMU that drops the TLBIs makes every path fail with StaleTranslationError', () => {
    const execute = SmmuModel.prototype.execute;
    vi.spyOn(SmmuModel.prototype, 'execute').mockImplementation(function (this: SmmuModel, f: Uint32Array) {
      return f[F.OP] === OP.TLBI_NH_VA ? 0 : execute.call(this, f);
    });
    for (const path of SIM_PATHS) {
      expect(() => runSim({ profile: loadProfile('kvm-arm64'), path, vcpus: 2, granule: 4096, unmaps: 3 }), path).toThrow(StaleTranslationError);
      // The storm's first operation, mprotect: a write through the stale read-write entry still succeeds.
      expect(() => runSim({ profile: loadProfile('kvm-arm64'), path, vcpus: 2, workload: 'svastorm', unmaps: 3 }), path).toThrow(/mprotect of IOVA/);
    }
  });

  it('refuses bad configurations with an ArgumentError naming the field', () => {
    const profile = loadProfile('kvm-arm64');
    const bad: [Partial<SimConfig> & Record<string, unknown>, string][] = [
      [{ path: 'nope' as SimPathName }, 'runSim: config.path'],
      [{ vcpus: 0 }, 'runSim: config.vcpus'],
      [{ granule: 5000 }, 'runSim: config.granule'],
      [{ queues: 9 }, 'runSim: config.queues'],
      [{ seed: -1 }, 'runSim: config.seed'],
      [{ workload: 'batch' }, 'runSim: config.batch'],
      [{ colour: 'red' }, 'runSim: config.colour'],
      [{ adaptive: { wakeCostNs: -1, maxSpinNs: 0, cpuShare: 1, historyPeriods: 1 } }, 'runSim: config.adaptive.wakeCostNs'],
    ];
    for (const [over, argument] of bad) {
      const cfg = { profile, path: 'trap', vcpus: 2, granule: 4096, unmaps: 1, ...over } as SimConfig;
      expect(() => runSim(cfg)).toThrow(expect.objectContaining({ argument }) as ArgumentError);
    }
  });
});
