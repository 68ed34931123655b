// `vcmdq replay`: run a command dump through one path (trap, trap-inline,
// doorbell or hw) on a fresh emulated host and print what happened as one
// JSON object. The dump is what a guest wrote into its queue, one command per
// line as two hex words; the queue stopping on an error is a result, not a
// failure. Each path is a different SMMU as the guest sees it: the two trap
// shapes (the VMM's first pass and the kernel's IOMMU_HWPT_INVALIDATE), the
// SW vCMDQ (the kernel thread's wide command set) and a Tegra241 VCMDQ (the
// strict guest command set, tegra241_guest_vcmdq_supports_cmd), so the same
// dump can stop at different commands on each.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { QueueError } from '../guest.ts';
import { startHost, type Vm } from '../host.ts';
import { queueIdx, queueUsed, queueWrap } from '../queue.ts';
import { CONS_ERR_MASK } from '../layout.ts';
import { ACCESS, faultName } from '../model/smmu.ts';
import { CD_BYTES, STE_BYTES, STE_CFG, encodeSte, writeGuestCd, writeGuestSte, type SteFields } from '../model/structs.ts';
import { readTrapCounts } from '../trap/transport.ts';
import '../trap/path.ts';
import '../trap/inline.ts';
import '../hw.ts';
import { VINTF_MAX_VSID, VINTF_SID_SLOTS } from '../vintf.ts';
import { UsageError, parseNumberArg } from './usage.ts';

export const REPLAY_USAGE = `usage: vcmdq replay --path trap|trap-inline|doorbell|hw [--vmid N] [--stream VSID:PSID]... [--attach VSID[:ASID]]... [--strtab IPA] FILE
  run a command dump (one command per line as two hex words, # comments) through one path of a fresh host
  and print one JSON object: {path, prod, cons, error, gerror, executed, forwarded, handled_by_vmm, devices}
    prod, cons       {index, wrap} of the queue's registers after the run (CONS without its ERR field)
    error            null, or {cerror, index} of the command the queue stopped on (exit status still 0)
    gerror           names of the SMMU_GERROR bits left active (GERROR != GERRORN), e.g. CMDQ_ERR, MSI_CMDQ_ABT
    forwarded, handled_by_vmm   what the VMM sent to the kernel and handled itself (0 on doorbell and hw)
    devices          [{vsid, psid, dma}] per declared device: what a DMA read of IOVA 0 gets after the run,
                     "ok" or the fault (e.g. STE_ABORT: a CFGI_STE in the dump installed an aborting vSTE)
  --path P            trap (a VMM thread serves the exits), trap-inline (QEMU's shape: on the vCPU's thread),
                      doorbell (the SW vCMDQ's kernel thread) or hw (a Tegra241 VCMDQ: CMD_SYNC with CS=NONE
                      only, at most ${VINTF_SID_SLOTS} devices)
  --vmid N            the VM's VMID (default 1)
  --stream VSID:PSID  declare a device of the VM (its vDEVICE); each vSID once
  --attach VSID[:ASID]  attach the declared device VSID: with ASID, to a stage-1 context (a CD with that
                      ASID over an empty guest page table); without, with stage 1 bypassed (stage 2 only)
  --strtab IPA        trap paths: SMMU_STRTAB_BASE, a linear stream table in guest RAM (64-byte aligned,
                      within the first half of RAM); the attached devices' vSTEs are written there, so a
                      CFGI_STE in the dump re-reads them
  exit 0: the run completed (even if the queue stopped on an error); 2: unusable arguments or dump; 1: a failure`;

const LOG2SIZE = 8;
/** Commands published between drains: at most one Linux batch, so the error index is exact. */
const CHUNK = 64;
/** The VM's RAM (the host's default): the stream table must fit its first half, the guest's own. */
const RAM_BYTES = 8 << 20;

/**
 * SMMU_GERROR bit names, by bit (smmu-facts.md §2.1; Linux GERROR_* in arm-smmu-v3.h).
 * The emulation raises CMDQ_ERR and MSI_CMDQ_ABT.
 */
const GERROR_NAMES = ['CMDQ_ERR', undefined, 'EVTQ_ABT', 'PRIQ_ABT', 'MSI_CMDQ_ABT', 'MSI_EVTQ_ABT', 'MSI_PRIQ_ABT', 'MSI_GERROR_ABT', 'SFM'];

/** Names of the bits set in `active` (GERROR ^ GERRORN); a bit without a name appears as `bit N`. */
function gerrorNames(active: number): string[] {
  const names: string[] = [];
  for (let bit = 0; bit < 32; bit++) {
    if ((active >>> bit) & 1) names.push(GERROR_NAMES[bit] ?? `bit ${bit}`);
  }
  return names;
}

const REPLAY_PATHS = ['trap', 'trap-inline', 'doorbell', 'hw'] as const;
type ReplayPath = (typeof REPLAY_PATHS)[number];
/** The paths whose register writes reach the VMM (STRTAB_BASE, the trap counters). */
const trapped = (path: ReplayPath): boolean => path === 'trap' || path === 'trap-inline';

interface ReplayArgs {
  path: ReplayPath;
  vmid: number;
  streams: { vsid: number; psid: number }[];
  attach: { vsid: number; asid: number | null }[];
  strtab: number | null;
  file: string;
}

/** `A:B` (B optional when `optional`) as two numbers. */
function pair(s: string, what: string, maxA: number, maxB: number, optional: boolean): [number, number | null] {
  const parts = s.split(':');
  if (parts.length > 2 || (parts.length === 1 && !optional)) throw new UsageError(`${what} wants ${optional ? 'A[:B]' : 'A:B'}, got '${s}'`);
  return [parseNumberArg(parts[0]!, what, maxA), parts.length === 2 ? parseNumberArg(parts[1]!, what, maxB) : null];
}

function parseReplayArgs(args: string[]): ReplayArgs {
  const { values, positionals } = parseArgs({
    args,
    options: {
      path: { type: 'string' },
      vmid: { type: 'string' },
      stream: { type: 'string', multiple: true },
      attach: { type: 'string', multiple: true },
      strtab: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  const path = values.path as ReplayPath | undefined;
  if (path === undefined || !REPLAY_PATHS.includes(path)) throw new UsageError(`--path must be one of ${REPLAY_PATHS.join(', ')}, got ${path ?? 'nothing'}`);
  const vmid = values.vmid === undefined ? 1 : parseNumberArg(values.vmid, '--vmid', 0xffff);
  const streams: ReplayArgs['streams'] = [];
  for (const s of values.stream ?? []) {
    const [vsid, psid] = pair(s, '--stream VSID:PSID', 0xffffffff, 0xffffffff, false);
    const dup = streams.find((x) => x.vsid === vsid || x.psid === psid);
    if (dup !== undefined) throw new UsageError(`--stream ${s}: ${dup.vsid === vsid ? `vSID 0x${vsid.toString(16)}` : `pSID 0x${psid!.toString(16)}`} is already declared`);
    streams.push({ vsid, psid: psid! });
  }
  const attach: ReplayArgs['attach'] = [];
  for (const s of values.attach ?? []) {
    const [vsid, asid] = pair(s, '--attach VSID[:ASID]', 0xffffffff, 0xffff, true);
    if (!streams.some((x) => x.vsid === vsid)) throw new UsageError(`--attach ${s}: vSID 0x${vsid.toString(16)} is not declared with --stream`);
    if (attach.some((x) => x.vsid === vsid)) throw new UsageError(`--attach ${s}: vSID 0x${vsid.toString(16)} is already attached`);
    attach.push({ vsid, asid });
  }
  let strtab: number | null = null;
  if (values.strtab !== undefined) {
    if (!trapped(path)) throw new UsageError('--strtab needs --path trap or trap-inline (SMMU_STRTAB_BASE is a register of the vSMMU, which a vCMDQ page does not reach)');
    strtab = parseNumberArg(values.strtab, '--strtab', RAM_BYTES);
    const top = strtab + STE_BYTES * (Math.max(-1, ...streams.map((x) => x.vsid)) + 1);
    if (strtab % STE_BYTES !== 0 || top > RAM_BYTES / 2) {
      throw new UsageError(`--strtab 0x${strtab.toString(16)}: the stream table of the declared vSIDs must be ${STE_BYTES}-byte aligned and end within the first half of guest RAM (0x${(RAM_BYTES / 2).toString(16)})`);
    }
  }
  if (path === 'hw') {
    // A VINTF's SID_MATCH/SID_REPLACE slots (src/vintf.ts): what openQueue would refuse, said as a usage error.
    if (streams.length > VINTF_SID_SLOTS) throw new UsageError(`--path hw: ${streams.length} --stream devices, a VINTF has ${VINTF_SID_SLOTS} SID slots`);
    const big = streams.find((x) => x.vsid > VINTF_MAX_VSID);
    if (big !== undefined) throw new UsageError(`--path hw: vSID 0x${big.vsid.toString(16)} does not fit a SID_MATCH register (31 bits)`);
  }
  if (positionals.length !== 1) throw new UsageError(`one dump FILE expected, got ${positionals.length}`);
  return { path, vmid, streams, attach, strtab, file: positionals[0]! };
}

/** The dump as queue words (4 u32 per command); UsageError naming the line on anything else. */
export function parseDump(text: string, name: string): Uint32Array {
  const out: number[] = [];
  const word = /^(?:0x)?([0-9a-f]{1,16})$/i;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const parts = line.split(/\s+/);
    const m = parts.map((p) => word.exec(p));
    if (parts.length !== 2 || m[0] === null || m[1] === null) {
      throw new UsageError(`${name}:${i + 1}: expected two hex words (w0 w1), got '${raw.trim()}'`);
    }
    for (const w of m) {
      const v = BigInt(`0x${w![1]}`);
      out.push(Number(v & 0xffffffffn), Number(v >> 32n));
    }
  });
  return Uint32Array.from(out);
}

/**
 * Attach each `--attach` device as a guest would: write its vSTE into the
 * stream table (when there is one), then have the VMM install it.
 */
async function attachDevices(vm: Vm, a: ReplayArgs): Promise<void> {
  for (const { vsid, asid } of a.attach) {
    let ste: SteFields = { config: STE_CFG.BYPASS };
    if (asid !== null) {
      const cdTable = vm.alloc(CD_BYTES, CD_BYTES);
      writeGuestCd(vm.memory, cdTable, 0, { asid, ttb0: vm.pageTable().root });
      ste = { config: STE_CFG.S1_TRANS, s1ContextPtr: cdTable };
    }
    if (a.strtab !== null) writeGuestSte(vm.memory, a.strtab, vsid, ste);
    await vm.attachDevice({ vsid, vste: encodeSte(ste) });
  }
}

const position = (v: number) => ({ index: queueIdx(v, LOG2SIZE), wrap: queueWrap(v, LOG2SIZE) });

export async function replayMain(args: string[]): Promise<number> {
  const a = parseReplayArgs(args);
  let text: string;
  try {
    text = readFileSync(a.file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${a.file}: ${(e as Error).message}`);
  }
  const words = parseDump(text, a.file);
  const n = words.length / 4;
  // A Tegra241 VCMDQ needs an SMMU with a CMDQV (src/hw.ts).
  const host = await startHost(a.path === 'hw' ? { cmdqv: true } : {});
  try {
    const vm = await host.createVm({ vmid: a.vmid, streams: a.streams, ramBytes: RAM_BYTES });
    await attachDevices(vm, a);
    const q = await vm.openQueue({ path: a.path, log2size: LOG2SIZE });
    if (a.strtab !== null) q.setStreamTableBase(a.strtab);
    let error: { cerror: string; index: number } | null = null;
    let executed = n;
    for (let i = 0; i < n && error === null; i += CHUNK) {
      const len = Math.min(CHUNK, n - i);
      try {
        q.submitWords(words.subarray(4 * i), len, null);
        q.drain();
      } catch (e) {
        if (!(e instanceof QueueError)) throw e;
        // Everything published but [CONS, PROD) was consumed: the faulting command is the first of those.
        executed = i + len - queueUsed(q.prodValue, e.cons & ~CONS_ERR_MASK, LOG2SIZE);
        error = { cerror: e.cerror, index: executed };
      }
    }
    const s = q.state();
    const dma = await host.dma();
    const counts = trapped(a.path) ? readTrapCounts(q.handle) : { forwarded: 0, handledByVmm: 0 };
    const result = {
      path: a.path, prod: position(s.prod), cons: position(s.cons & ~CONS_ERR_MASK), error,
      gerror: gerrorNames(s.gerror ^ s.gerrorn),
      executed, forwarded: counts.forwarded, handled_by_vmm: counts.handledByVmm,
      devices: a.streams.map(({ vsid, psid }) => {
        const fault = dma.translate(psid, -1, 0, ACCESS.READ).fault;
        return { vsid, psid, dma: fault === 0 ? 'ok' : faultName(fault) };
      }),
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } finally {
    await host.stop();
  }
}
