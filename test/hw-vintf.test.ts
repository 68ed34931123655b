// The hw path's SMMU in-thread: the kernel thread's Consumer serving a queue
// whose VINTF (src/vintf.ts) says how its commands are rewritten, as Tegra241
// CMDQV hardware does (tegra241-cmdqv.c: VINTF_CONFIG.VMID,
// SID_MATCH/SID_REPLACE), and polling, not sleeping, while such a queue is
// enabled. The VINTF here disagrees with the VM's vSMMU on purpose, so each
// assertion shows which one the hardware used.
import { describe, expect, it } from 'vitest';
import { buildCmdSync, encodeWords } from '../src/codec.ts';
import { CS, F, FIELD_COUNT, OP } from '../src/fields.ts';
import { CONS_ERR_SHIFT, Q_CONFIG, Q_CONS } from '../src/layout.ts';
import {
  SID_MATCH_EN, VINTF_CONFIG, VINTF_EN, VINTF_HYP_OWN, VINTF_SID_MATCH, VINTF_SID_REPLACE, VINTF_SID_SLOTS, VINTF_WORDS, readVintf, writeVintf,
} from '../src/vintf.ts';
import { addQueue, consPos, makeRig, submit, type Rig } from './consumer-rig.ts';

/** The VM's own vSMMU: VMID 3, vSID 0 -> pSID 0x11. */
const VM = { vmid: 3, psid: 0x11 };
/** Its VINTF: VMID 9, vSID 0x40 -> pSID 0x11 (the vSMMU knows no vSID 0x40, and the VINTF no vSID 0). */
const VINTF = { vmid: 9, vsid: 0x40 };

function cmd(fields: Partial<Record<keyof typeof F, number>>): Uint32Array {
  const f = new Uint32Array(FIELD_COUNT);
  for (const [k, v] of Object.entries(fields)) f[F[k as keyof typeof F]] = v;
  const u = new Uint32Array(4);
  encodeWords(f, u);
  return u;
}

function sync(cs: number): Uint32Array {
  const u = new Uint32Array(4);
  buildCmdSync(u, cs, 0, 0, 0);
  return u;
}

function hwRig(): { rig: Rig; vintf: number } {
  const rig = makeRig([{ vmid: VM.vmid, psids: [VM.psid] }]);
  const vintf = rig.w.layout.alloc(VINTF_WORDS * 4, 64) >>> 2;
  writeVintf(rig.i32, vintf, VINTF.vmid, [{ vsid: VINTF.vsid, psid: VM.psid }]);
  return { rig, vintf };
}

describe('VINTF registers', () => {
  it('are written as Tegra241 programs them and read back as the rewrite they describe', () => {
    const i32 = new Int32Array(VINTF_WORDS);
    writeVintf(i32, 0, 0x1234, [{ vsid: 5, psid: 0x20008 }, { vsid: 0x7fffffff, psid: 0xffffffff }]);
    // tegra241_vintf_hw_init: VMID [16:1] | EN; tegra241_vintf_init_vsid: SID_MATCH = vsid << 1 | 1, SID_REPLACE = pSID.
    expect(i32[VINTF_CONFIG]).toBe((0x1234 << 1) | VINTF_EN);
    expect(i32[VINTF_SID_MATCH]).toBe((5 << 1) | SID_MATCH_EN);
    expect(i32[VINTF_SID_REPLACE]! >>> 0).toBe(0x20008);
    const v = readVintf(i32, 0);
    expect(v.vmid).toBe(0x1234);
    expect([...v.vsidToPsid]).toEqual([[5, 0x20008], [0x7fffffff, 0xffffffff]]);
  });

  it('a slot without its EN bit matches nothing; a disabled or hypervisor-owned VINTF is refused', () => {
    const i32 = new Int32Array(VINTF_WORDS);
    writeVintf(i32, 0, 1, [{ vsid: 5, psid: 6 }, { vsid: 7, psid: 8 }]);
    i32[VINTF_SID_MATCH + 1] = 7 << 1;
    expect([...readVintf(i32, 0).vsidToPsid]).toEqual([[5, 6]]);
    i32[VINTF_CONFIG] = i32[VINTF_CONFIG]! | VINTF_HYP_OWN;
    expect(() => readVintf(i32, 0)).toThrow(/hypervisor-owned/);
    i32[VINTF_CONFIG] = 0;
    expect(() => readVintf(i32, 0)).toThrow(/not enabled/);
  });

  it('refuses more streams than slots and a vSID SID_MATCH cannot hold', () => {
    const i32 = new Int32Array(VINTF_WORDS);
    const many = Array.from({ length: VINTF_SID_SLOTS + 1 }, (_, k) => ({ vsid: k, psid: k }));
    expect(() => writeVintf(i32, 0, 1, many)).toThrow(/16 SID slots/);
    expect(() => writeVintf(i32, 0, 1, [{ vsid: 2 ** 31, psid: 1 }])).toThrow(/31 bits/);
  });
});

describe('the SMMU serving a hardware VCMDQ', () => {
  it("forces the VINTF's VMID and replaces the vSID through its SID slots, not the vSMMU's", () => {
    const { rig, vintf } = hwRig();
    const q = addQueue(rig, VM.vmid, 4, vintf);
    submit(rig, q, [
      cmd({ OP: OP.TLBI_NH_ASID, ASID: 1, VMID: VM.vmid }), // the guest writes its own VMID ...
      cmd({ OP: OP.TLBI_NH_VA, ASID: 1, VMID: 0xff }), // ... or any VMID: the VINTF's wins
      cmd({ OP: OP.ATC_INV, SID: VINTF.vsid, SIZE: 52 }),
      sync(CS.NONE),
    ]);
    rig.consumer.pass();
    expect(consPos(rig, q)).toBe(4);
    const seen = rig.model.log.map((e) => [e.f[F.OP], e.f[F.VMID], e.f[F.SID]]);
    expect(seen).toEqual([[OP.TLBI_NH_ASID, VINTF.vmid, 0], [OP.TLBI_NH_VA, VINTF.vmid, 0], [OP.ATC_INV, 0, VM.psid]]);
  });

  it('a vSID no SID slot matches stops the queue with CERROR_ILL, even one the vSMMU knows', () => {
    const { rig, vintf } = hwRig();
    const q = addQueue(rig, VM.vmid, 4, vintf);
    submit(rig, q, [cmd({ OP: OP.TLBI_NH_ASID, ASID: 1 }), cmd({ OP: OP.ATC_INV, SID: 0, SIZE: 52 }), sync(CS.NONE)]);
    rig.consumer.pass();
    expect(rig.i32[q.regs + Q_CONS]).toBe(1 | (1 << CONS_ERR_SHIFT)); // stopped on index 1
    expect(rig.model.log.length).toBe(1);
  });

  it('takes the strict guest command set: TLBI_NH_ALL and a CMD_SYNC with CS=SEV are CERROR_ILL', () => {
    for (const bad of [cmd({ OP: OP.TLBI_NH_ALL }), cmd({ OP: OP.TLBI_NH_VAA }), sync(CS.SEV), sync(CS.IRQ)]) {
      const { rig, vintf } = hwRig();
      const q = addQueue(rig, VM.vmid, 4, vintf);
      submit(rig, q, [bad, sync(CS.NONE)]);
      rig.consumer.pass();
      expect(rig.i32[q.regs + Q_CONS]).toBe(1 << CONS_ERR_SHIFT);
      expect(rig.model.log.length).toBe(0);
    }
  });

  it('wants service while a hw queue is enabled, work or not, and not once it is disabled', () => {
    const { rig, vintf } = hwRig();
    const q = addQueue(rig, VM.vmid, 4, vintf);
    rig.consumer.pass();
    // Nothing published: a SW vCMDQ would let the thread sleep here; the hardware keeps polling.
    expect(rig.consumer.hasWork()).toBe(true);
    Atomics.store(rig.i32, q.regs + Q_CONFIG, 0);
    expect(rig.consumer.hasWork()).toBe(false);
    // A doorbell queue beside it changes nothing: idle is idle.
    addQueue(rig, VM.vmid, 4);
    rig.consumer.pass(); // its one look (addQueue marks a doorbell queue pending)
    expect(rig.consumer.hasWork()).toBe(false);
  });
});
