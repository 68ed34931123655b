// `vcmdq replay` as a user runs it: the built CLI on fixture dumps, through
// both paths; the process must exit on its own (host.stop() ends every thread).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fixture, vcmdq } from './cli-helpers.ts';

function replay(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return vcmdq(['replay', ...args]);
}
const at = (index: number, wrap = 0) => ({ index, wrap });

describe('vcmdq replay', () => {
  it('a legal dump through the trap path: the VMM forwards the invalidations and handles the syncs', () => {
    const r = replay('--path', 'trap', '--vmid', '3', '--stream', '0:0x10', fixture('replay-legal.txt'));
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      path: 'trap', prod: at(6), cons: at(6), error: null, gerror: [], executed: 6, forwarded: 4, handled_by_vmm: 2,
      devices: [{ vsid: 0, psid: 0x10, dma: 'C_BAD_STREAMID' }],
    });
  });

  it('the same dump through the doorbell path', () => {
    const r = replay('--path', 'doorbell', '--stream', '0:0x10', fixture('replay-legal.txt'));
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ path: 'doorbell', prod: at(6), cons: at(6), error: null, gerror: [], executed: 6, forwarded: 0, handled_by_vmm: 0 });
  });

  it('trap-inline (QEMU\'s shape) is the same VMM on the vCPU\'s thread: the same result and counters as trap', () => {
    const r = replay('--path', 'trap-inline', '--vmid', '3', '--stream', '0:0x10', fixture('replay-legal.txt'));
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      path: 'trap-inline', prod: at(6), cons: at(6), error: null, gerror: [], executed: 6, forwarded: 4, handled_by_vmm: 2,
      devices: [{ vsid: 0, psid: 0x10, dma: 'C_BAD_STREAMID' }],
    });
  });

  // tegra241_guest_vcmdq_supports_cmd: a guest VCMDQ takes CMD_SYNC with CS=NONE only (src/hw.ts), so the dump's
  // CS=SEV sync (its 4th command) stops the hw queue where the other paths go on.
  it('hw: the same dump stops at its CS=SEV CMD_SYNC with CERROR_ILL (a Tegra241 VCMDQ takes CS=NONE only)', () => {
    const r = replay('--path', 'hw', '--stream', '0:0x10', fixture('replay-legal.txt'));
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ path: 'hw', prod: at(6), cons: at(3), error: { cerror: 'ILL', index: 3 }, gerror: ['CMDQ_ERR'], executed: 3, forwarded: 0, handled_by_vmm: 0 });
  });

  it('hw refuses a VM a VINTF cannot describe, and --strtab on a path that does not reach the VMM, as usage errors', () => {
    const streams = Array.from({ length: 17 }, (_, k) => ['--stream', `${k}:${0x100 + k}`]).flat();
    const many = replay('--path', 'hw', ...streams, fixture('replay-legal.txt'));
    expect(many.status).toBe(2);
    expect(many.stderr).toMatch(/17 --stream devices, a VINTF has 16/);
    expect(replay('--path', 'hw', '--stream', '0x80000000:0x10', fixture('replay-legal.txt')).stderr).toMatch(/does not fit a SID_MATCH/);
    for (const path of ['hw', 'doorbell']) expect(replay('--path', path, '--strtab', '0x100000', fixture('replay-legal.txt')).status).toBe(2);
    expect(replay('--path', 'warp', fixture('replay-legal.txt')).stderr).toMatch(/--path must be one of trap, trap-inline, doorbell, hw/);
  });

  it.each(['trap', 'doorbell'])('an illegal entry after the first batch stops the %s queue at its index, exit 0, GERROR.CMDQ_ERR active', (path) => {
    const r = replay('--path', path, fixture('replay-illegal.txt'));
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ path, prod: at(77), cons: at(70), error: { cerror: 'ILL', index: 70 }, gerror: ['CMDQ_ERR'], executed: 70 });
  });

  it('an ATC_INV for a vSID the VM does not have is the kernel refusing it: CERROR_ILL at its index', () => {
    const r = replay('--path', 'trap', fixture('replay-legal.txt'));
    expect(JSON.parse(r.stdout)).toEqual({
      path: 'trap', prod: at(6), cons: at(2), error: { cerror: 'ILL', index: 2 }, gerror: ['CMDQ_ERR'], executed: 2, forwarded: 2, handled_by_vmm: 0, devices: [],
    });
  });

  // SMMUv3 4.7.3: a CMD_SYNC's MSI write that aborts sets SMMU_GERROR.MSI_CMDQ_ABT_ERR; the sync still completes.
  it.each(['trap', 'doorbell'])('%s: an MSI write outside guest RAM is reported as GERROR MSI_CMDQ_ABT, not as a queue error', (path) => {
    const r = replay('--path', path, fixture('replay-msi-abort.txt'));
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ prod: at(2), cons: at(2), error: null, gerror: ['MSI_CMDQ_ABT'], executed: 2 });
  });

  it('prod and cons are index plus wrap: 300 commands on a 256-entry queue wrap once', () => {
    const dump = join(mkdtempSync(join(tmpdir(), 'vcmdq-replay-')), 'syncs.txt');
    writeFileSync(dump, '0x0000000000000046 0x0\n'.repeat(300));
    const r = replay('--path', 'doorbell', dump);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ prod: at(44, 1), cons: at(44, 1), error: null, executed: 300 });
  });

  describe('a CFGI_STE for a device (trap path)', () => {
    const dump = fixture('replay-cfgi-ste.txt');
    it('without --attach the device has no STE: the CFGI_STE still completes (spec 4.3.1, it never reads the STE), the device has no stream', () => {
      const r = replay('--path', 'trap', '--stream', '0x10:0x20008', dump);
      expect(JSON.parse(r.stdout)).toMatchObject({ error: null, executed: 4, devices: [{ vsid: 0x10, dma: 'C_BAD_STREAMID' }] });
    });
    it('--attach without --strtab: the VMM re-reads the vSTE at STRTAB_BASE 0, finds it invalid and the device now aborts', () => {
      const r = replay('--path', 'trap', '--stream', '0x10:0x20008', '--attach', '0x10', dump);
      expect(JSON.parse(r.stdout)).toMatchObject({ error: null, executed: 4, forwarded: 1, handled_by_vmm: 3, devices: [{ vsid: 0x10, psid: 0x20008, dma: 'STE_ABORT' }] });
    });
    it('--attach with --strtab: the vSTE is in the guest stream table, so the device stays attached (stage 1 bypass: IOVA 0 translates)', () => {
      const r = replay('--path', 'trap', '--stream', '0x10:0x20008', '--attach', '0x10', '--strtab', '0x100000', dump);
      expect(JSON.parse(r.stdout)).toMatchObject({ error: null, executed: 4, devices: [{ vsid: 0x10, dma: 'ok' }] });
    });
    it('--attach VSID:ASID gives a stage-1 context over an empty page table: IOVA 0 is a stage-1 translation fault', () => {
      const r = replay('--path', 'trap', '--stream', '0x10:0x20008', '--attach', '0x10:7', '--strtab', '0x100000', dump);
      expect(JSON.parse(r.stdout)).toMatchObject({ error: null, devices: [{ vsid: 0x10, dma: 'F_TRANSLATION' }] });
    });
  });

  it('unusable input exits 2 with one line naming the line of the dump', () => {
    const r = replay('--path', 'trap', fixture('replay-badhex.txt'));
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^vcmdq replay: [^\n]*replay-badhex\.txt:3: expected two hex words .*0xZZ'\n$/);
    expect(replay('--path', 'sideways', fixture('replay-legal.txt')).status).toBe(2);
    expect(replay('--path', 'trap', fixture('no-such-file.txt')).stderr).toMatch(/^vcmdq replay: cannot read .*no-such-file\.txt: ENOENT[^\n]*\n$/);
  });
});
