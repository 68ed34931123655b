// A TypeScript user of the installed package (test/pack/run.mjs copies it into
// a fresh project and type-checks it with module nodenext). Not run: the
// types are what is tested. Excluded from the repo's own tsconfig, where
// 'vcmdq' would resolve to this checkout's build instead of the tarball's.
import { CommandError, QueueError, startHost, type Command, type CsMode, type GuestQueue, type Host, type SubmitOptions } from 'vcmdq';

const host: Host = await startHost({ spinUs: 0 });
const vm = await host.createVm({ vmid: 1, streams: [{ vsid: 0, psid: 0x10 }] });
const q: GuestQueue = await vm.openQueue({ path: 'trap', log2size: 8 });
const cmd: Command = { op: 'TLBI_NH_ASID', asid: 1 };
const cs: CsMode = 'sev';
const opts: SubmitOptions = { cs, timeoutMs: 1000 };
q.submit([cmd], opts);
await q.submitAsync([{ op: 'TLBI_NH_VA', asid: 1, addr: 0x1000n, leaf: 1 }]);
q.invalidateRange(1, 0x4000_0000, 4096);
try {
  q.sync('none');
} catch (e) {
  if (e instanceof QueueError) console.log(e.cerror, e.index);
  else if (e instanceof CommandError) console.log(e.reason);
}
// @ts-expect-error: not an opcode
q.submit([{ op: 'TLBI_NH_BOGUS', asid: 1 }]);
// @ts-expect-error: not a completion signal
q.submit([cmd], { cs: 'loud' });
await host.stop();

// Disposal: `await using` stops a host when its block ends.
export async function scoped(): Promise<number> {
  await using h = await startHost();
  const vm2 = await h.createVm({ vmid: 2, streams: [] });
  return vm2.vmid;
}
