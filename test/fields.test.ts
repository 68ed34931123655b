import { describe, expect, it } from 'vitest';
import { COMMANDS, OP, illegalOpcodeReason } from '../src/fields.ts';

// The field table is the one source of bit positions; these checks catch a
// typo in it before the codec turns it into silently wrong encodings.
describe('command field table', () => {
  it('gives every command a unique opcode that matches OP', () => {
    const seen = new Set<number>();
    for (const c of COMMANDS) {
      expect(OP[c.op]).toBe(c.opcode);
      expect(seen.has(c.opcode)).toBe(false);
      seen.add(c.opcode);
    }
    expect(seen.size).toBe(Object.keys(OP).length);
  });

  it('keeps fields inside their word, clear of OP[7:0] and of each other', () => {
    for (const c of COMMANDS) {
      const used = [0n, 0n];
      used[0] = 0xffn; // OP
      for (const f of c.fields) {
        expect(f.lo).toBeGreaterThanOrEqual(0);
        expect(f.hi).toBeLessThanOrEqual(63);
        expect(f.hi).toBeGreaterThanOrEqual(f.lo);
        const mask = ((1n << BigInt(f.hi - f.lo + 1)) - 1n) << BigInt(f.lo);
        expect(used[f.w]! & mask, `${c.op}.${f.name} overlaps`).toBe(0n);
        used[f.w]! |= mask;
        // Only address fields may straddle the two u32 halves of a word.
        if (f.lo < 32 && f.hi >= 32) expect(f.inPlace, `${c.op}.${f.name}`).toBe(true);
      }
    }
  });

  it('matches the Linux positions of the fields the vectors pin down', () => {
    const nhVa = COMMANDS.find((c) => c.op === 'TLBI_NH_VA')!;
    const pos = Object.fromEntries(nhVa.fields.map((f) => [f.name, [f.w, f.hi, f.lo]]));
    expect(pos).toMatchObject({
      vmid: [0, 47, 32], asid: [0, 63, 48], num: [0, 16, 12], leaf: [1, 0, 0],
      ttl: [1, 9, 8], tg: [1, 11, 10], addr: [1, 63, 12],
    });
  });

  it('names why a non-command opcode is illegal', () => {
    expect(illegalOpcodeReason(0x18)).toMatch(/Secure-only/);
    expect(illegalOpcodeReason(0x5a)).toMatch(/Secure-only/);
    expect(illegalOpcodeReason(0x85)).toMatch(/IMPLEMENTATION DEFINED/);
    expect(illegalOpcodeReason(0x73)).toMatch(/DPTI/);
    expect(illegalOpcodeReason(0x00)).toMatch(/Reserved/);
    expect(illegalOpcodeReason(0xff)).toMatch(/Reserved/);
  });

  it('classes every non-command opcode as the spec does, edges included', () => {
    // SMMUv3 §4.1.1 (command opcode table): the Secure-only CFGI/TLBI forms,
    // DPTI (0x70, 0x73), the IMPLEMENTATION DEFINED block 0x80-0x8f; the rest of the gaps are Reserved.
    const secure = [0x18, 0x1a, 0x50, 0x51, 0x52, 0x53, 0x58, 0x5a, 0x60];
    const commands = new Set(COMMANDS.map((c) => c.opcode));
    for (let op = 0; op < 256; op++) {
      if (commands.has(op)) continue;
      const want = secure.includes(op) ? /Secure-only/ : op === 0x70 || op === 0x73 ? /DPTI/ : op >= 0x80 && op <= 0x8f ? /IMPLEMENTATION DEFINED/ : /Reserved/;
      expect(illegalOpcodeReason(op), `opcode 0x${op.toString(16)}`).toMatch(want);
    }
  });
});
