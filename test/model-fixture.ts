// Shared setup for the model tests: host memory, a VM with stage 2, guest
// stage-1 tables and CDs in guest RAM, nested STEs installed as the VMM would.
import { F, FIELD_COUNT, OP } from '../src/fields.ts';
import { makeFeatures, type SmmuFeatures } from '../src/features.ts';
import {
  GuestMemory, HostTableStore, PhysLayout, STE_CFG, SmmuModel, TranslationTable, buildStage2, encodeCd, encodeSte, installNestedSte,
  readGuestSte, split64, tg0Of, writeGuestCd, writeGuestSte, writeHostWords, type CdFields, type Granule, type Stage2, type SmmuModelOptions,
  type SteFields,
} from '../src/model/index.ts';

export const MiB = 1 << 20;
export const GiB = 1 << 30;

export interface Vm {
  vmid: number;
  gm: GuestMemory;
  s2: Stage2;
  pt: TranslationTable;
  cdTable: number;
  strtab: number;
  /** psid -> vsid */
  streams: Map<number, number>;
  stePa: Map<number, number>;
  /** First IPA of the data area (pages handed to map()). */
  dataIpa: number;
}

export interface World {
  mem: SharedArrayBuffer;
  layout: PhysLayout;
  model: SmmuModel;
  features: SmmuFeatures;
}

/** `physBase`: first PA handed out (a consumer rig keeps the MMIO region below it). */
export function makeWorld(features: Partial<SmmuFeatures> = {}, opts: SmmuModelOptions = {}, memBytes = 96 * MiB, physBase = 0x10000): World {
  const mem = new SharedArrayBuffer(memBytes);
  const layout = new PhysLayout(mem, physBase);
  const feat = makeFeatures(features);
  return { mem, layout, model: new SmmuModel(mem, feat, opts), features: feat };
}

export function makeVm(w: World, o: { vmid: number; psids: number[]; asid?: number; ramBytes?: number; granule?: Granule }): Vm {
  const ramBytes = o.ramBytes ?? 16 * MiB;
  const ramBase = w.layout.alloc(ramBytes, 2 * MiB);
  const s2 = buildStage2(w.mem, w.layout, ramBase, ramBytes, o.vmid);
  const gm = new GuestMemory(w.mem, ramBase, ramBytes, { ipa: 0, bytes: ramBytes / 4 });
  const pt = new TranslationTable(gm, 1, { granule: o.granule ?? 4096 });
  const cdTable = gm.allocTable(4096);
  const strtab = gm.allocTable(4096);
  const vm: Vm = { vmid: o.vmid, gm, s2, pt, cdTable, strtab, streams: new Map(), stePa: new Map(), dataIpa: ramBytes / 2 };
  writeGuestCd(gm, cdTable, 0, { asid: o.asid ?? 1, ttb0: pt.root, tg0: tg0Of(o.granule ?? 4096) });
  o.psids.forEach((psid, vsid) => {
    writeGuestSte(gm, strtab, vsid, { config: STE_CFG.S1_TRANS, s1ContextPtr: cdTable, s1CdMax: 0, eats: 1 });
    const stePa = w.layout.alloc(64, 64);
    const reject = installNestedSte(w.mem, stePa, readGuestSte(gm, strtab, vsid), s2);
    if (reject) throw new Error(reject);
    w.model.attachStream(psid, stePa);
    vm.streams.set(psid, vsid);
    vm.stePa.set(psid, stePa);
  });
  return vm;
}


export type Field = readonly [number, number, number];

/** Overwrite one field of an encoded STE/CD (the encoders only write legal values). */
export function patch(w: Uint32Array, [i, sh, width]: Field, v: number): Uint32Array {
  const mask = (width === 32 ? 0xffffffff : ((1 << width) - 1) << sh) >>> 0;
  w[i] = ((w[i]! & ~mask) | ((v << sh) & mask)) >>> 0;
  return w;
}

export interface S1 {
  w: World;
  pt: TranslationTable;
  cdTable: number;
  stePa: number;
  /** Host PA of the data pages map() hands out. */
  data: number;
}

/** StreamID of the stream s1Stream attaches. */
export const S1_PSID = 1;

/**
 * A stage-1-only stream (STE.Config = S1_TRANS): its CD table and tables in
 * host memory, as a host driver's own DMA domain has them. `cds` CDs at SSIDs
 * 0.., each with ASID 9 + ssid over the one table; the STE takes `ste` on top.
 */
export function s1Stream(o: { ste?: Partial<SteFields>; cd?: Partial<CdFields>; granule?: Granule; features?: Parameters<typeof makeWorld>[0]; opts?: Parameters<typeof makeWorld>[1]; cds?: number } = {}): S1 {
  const w = small(o.features ?? {}, o.opts ?? {});
  const granule = o.granule ?? 4096;
  const pt = new TranslationTable(new HostTableStore(w.layout), 1, { granule });
  const cds = o.cds ?? 1;
  const cdTable = w.layout.alloc(64 * cds, 64);
  for (let s = 0; s < cds; s++) writeHostWords(w.mem, cdTable + 64 * s, encodeCd({ asid: 9 + s, ttb0: pt.root, tg0: tg0Of(granule), ...o.cd }));
  const stePa = w.layout.alloc(64, 64);
  writeHostWords(w.mem, stePa, encodeSte({ config: STE_CFG.S1_TRANS, s1ContextPtr: cdTable, eats: 1, ...o.ste }));
  w.model.attachStream(S1_PSID, stePa);
  const data = w.layout.alloc(4 * MiB, 2 * MiB);
  return { w, pt, cdTable, stePa, data };
}

/** A world over 8 MiB (its STEs, CDs, tables and a 4 MiB data area) of host memory: allocating the fixture's 96 MiB dominates a short test. */
export function small(features: Parameters<typeof makeWorld>[0] = {}, opts: Parameters<typeof makeWorld>[1] = {}): World {
  return makeWorld(features, opts, 8 * MiB);
}

type Slot = Lowercase<Exclude<keyof typeof F, 'ADDR_LO' | 'ADDR_HI' | 'OP' | 'MSIADDR_LO' | 'MSIADDR_HI'>>;

/** A decoded command in F slots, filled directly (independent of the codec). */
export function cmd(op: keyof typeof OP, fields: Partial<Record<Slot, number>> & { addr?: number | bigint } = {}): Uint32Array {
  const f = new Uint32Array(FIELD_COUNT);
  f[F.OP] = OP[op];
  for (const [k, v] of Object.entries(fields)) {
    if (k === 'addr') {
      const [lo, hi] = split64(v as number | bigint);
      f[F.ADDR_LO] = lo;
      f[F.ADDR_HI] = hi;
    } else {
      const slot = F[k.toUpperCase() as Uppercase<Slot>];
      if (slot === undefined) throw new Error(`no field ${k}`);
      f[slot] = v as number;
    }
  }
  return f;
}

/** Execute commands, asserting each is accepted, then a CMD_SYNC. */
export function run(model: SmmuModel, ...cmds: Uint32Array[]): void {
  for (const c of cmds) {
    const r = model.execute(c);
    if (r !== 0) throw new Error(`command op 0x${c[F.OP]!.toString(16)} refused with CERROR ${r}`);
  }
  model.execute(cmd('CMD_SYNC'));
}

/** Linux __arm_smmu_tlb_inv_range with RIL: TLBI_NH_VA commands covering [iova, iova+size) of `granule` pages. */
export function linuxRangeTlbi(asid: number, vmid: number, iova: number, size: number, granule = 4096, leaf = true, leafSize = granule): Uint32Array[] {
  const tg = Math.log2(granule);
  const out: Uint32Array[] = [];
  let numPages = size / granule;
  const ttl = leaf ? 4 - (Math.log2(leafSize) - 3) / (tg - 3) : 0;
  if (!leaf && (numPages & 31) === 1) numPages++;
  let a = iova;
  while (numPages > 0) {
    const scale = Math.log2(numPages & -numPages);
    const num = Math.floor(numPages / 2 ** scale) & 31;
    out.push(cmd('TLBI_NH_VA', { asid, vmid, addr: a, tg: (tg - 10) / 2, ttl, num: num - 1, scale, leaf: leaf ? 1 : 0 }));
    const pages = num * 2 ** scale;
    a += pages * granule;
    numPages -= pages;
  }
  return out;
}
