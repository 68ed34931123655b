// The round-trip scenario's two APIs (issue #15): the 'objects' row must send
// exactly the command the 'words' row sends, so their ratio is the cost of
// the convenience API alone. Shape only, never speed.
import { describe, expect, it } from 'vitest';
import { STREAM, VMID, tlbiNhVaCommand, tlbiNhVaWords } from '../bench/queue-api.ts';
import { SubmitPath } from '../bench/scenario-kit.ts';
import { encodeCommand } from '../src/codec.ts';
import { withHost } from './doorbell-helpers.ts';

describe('round-trip rows: submitWords (api words) and submit with objects (api objects)', () => {
  it('tlbiNhVaCommand encodes to tlbiNhVaWords for any page', () => {
    for (const page of [0, 1, 0x40000, 0xf_ffff_ffff]) {
      const u = tlbiNhVaWords(page);
      const [w0, w1] = encodeCommand(tlbiNhVaCommand(page));
      expect([w0, w1]).toEqual([(BigInt(u[1]!) << 32n) | BigInt(u[0]!), (BigInt(u[3]!) << 32n) | BigInt(u[2]!)]);
    }
  });

  it('both paths complete every sample on a doorbell queue, each a TLBI_NH_VA and a CMD_SYNC, and say their api', async () => {
    await withHost({}, async (host) => {
      const vm = await host.createVm({ vmid: VMID, streams: [STREAM] });
      const q = await vm.openQueue({ path: 'doorbell' });
      const words = new SubmitPath('doorbell-sleep', q, tlbiNhVaWords(0x40000), 'sev', 5000);
      const objects = new SubmitPath('doorbell-sleep', q, [tlbiNhVaCommand(0x40000)], 'sev', 5000);
      expect(words.params).toEqual({ cs: 'sev', api: 'words' });
      expect(objects.params).toEqual({ cs: 'sev', api: 'objects' });
      for (const path of [words, objects]) {
        const before = q.state();
        const out = new Float64Array(20);
        path.sample(out, 5, 10);
        const after = q.state();
        expect(after.cmds - before.cmds).toBe(20);
        expect(after.syncs - before.syncs).toBe(10);
        expect(after.errors).toBe(0);
        expect([...out.subarray(5, 15)].every((x) => x > 0 && Number.isFinite(x))).toBe(true);
        expect([...out.subarray(0, 5), ...out.subarray(15)].every((x) => x === 0)).toBe(true);
      }
    });
  });
});
