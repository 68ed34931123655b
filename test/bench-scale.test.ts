// The `scale` bench scenario (issue 15): its plan (pure) and a smoke run that
// checks every row and note appears with its params: shape only, never speed.
import { describe, expect, it } from 'vitest';
import { Progress, type Profile } from '../bench/harness.ts';
import {
  QUEUES_PER_VM, SCALE_IDLE_QUEUES, SCALE_PLAN, activeCount, interleave, memBytesFor, runScale, scale, vmsFor, type ScalePlan,
} from '../bench/scenario-scale.ts';

describe('scale scenario plan', () => {
  it('1% active is at least one queue when any exist, none of none', () => {
    expect(SCALE_IDLE_QUEUES.map((n) => activeCount(n, 1))).toEqual([0, 1, 3, 10]);
    expect(activeCount(1023, 0)).toBe(0);
  });

  it('queues are spread over VMs of 16 (the last may hold fewer), and host memory grows with the VMs', () => {
    expect([1, 16, 17, 64, 1024].map(vmsFor)).toEqual([1, 1, 2, 4, 64]);
    expect(memBytesFor(64)).toBeGreaterThan(64 * 2 ** 21);
    expect(memBytesFor(64) % 65536).toBe(0);
  });

  it('interleave takes one queue of each VM in turn, so a prefix touches as many VMs as it can', () => {
    expect(interleave([[1, 2, 3], [4, 5], [6]])).toEqual([1, 4, 6, 2, 5, 3]);
    const vms = Array.from({ length: 16 }, (_, v) => Array.from({ length: QUEUES_PER_VM }, (_, k) => v * 100 + k));
    expect(new Set(interleave(vms).slice(0, 16).map((q) => Math.floor(q / 100))).size).toBe(16);
  });
});

describe('scale scenario smoke', () => {
  it('is registered with the issue\'s sizes', () => {
    expect(scale.name).toBe('scale');
    expect(SCALE_PLAN).toEqual({ idleQueues: [0, 63, 255, 1023], activePct: [0, 1], kthreads: [1, 2], spreadQueues: [1, 16, 256], soakVms: 64 });
  });

  // Smaller sizes than the scenario's (setting up 1024 queues a few times costs a minute under the suite's load); same code.
  it('produces a round-trip row per idle count x active share x kernel threads, a throughput row per spread, and the memory and soak notes', async () => {
    const plan: ScalePlan = { idleQueues: [0, 40], activePct: [0, 1], kthreads: [1, 2], spreadQueues: [1, 20], soakVms: 3 };
    const tiny: Profile = { name: 'quick', warmup: 5, samples: 20, rounds: 2, rewarm: 2, timeoutMs: 20_000 };
    const { measured, notes } = await runScale({ profile: tiny, progress: new Progress(process.stderr, false), slowdownNs: 0 }, plan);
    const rows = measured.map((m) => m.row);
    expect(rows.every((r) => r.scenario === 'scale' && r.samples > 0 && r.p50_us > 0)).toBe(true);
    const rt = rows.filter((r) => 'idle_queues' in r.params).map((r) => r.params);
    expect(rt).toEqual([1, 2].flatMap((kthreads) => [
      { idle_queues: 0, active_pct: 0, kthreads }, { idle_queues: 40, active_pct: 0, kthreads }, { idle_queues: 40, active_pct: 1, kthreads },
    ]));
    const tp = rows.filter((r) => 'queues' in r.params).map((r) => r.params);
    expect(tp).toEqual([1, 2].flatMap((kthreads) => [1, 20].map((queues) => ({ queues, batch: 16, kthreads }))));
    expect(rows.length).toBe(rt.length + tp.length);
    for (const k of [1, 2]) {
      expect(notes.some((n) => n.startsWith(`memory (${k} kernel thread(s))`))).toBe(true);
      expect(notes.find((n) => n.startsWith(`soak (${k} kernel thread(s))`))).toMatch(/3 VMs x 16 queues, 3 rounds .*every command executed exactly once/);
    }
  }, 300_000);
});
