// Host physical memory and guest RAM views. The whole host physical address
// space is one SharedArrayBuffer (PA = byte offset); a VM's RAM is the window
// [ramBase, ramBase + ramBytes) of it, addressed by the guest as IPA 0..ramBytes.
// 64-bit quantities are handled as two little-endian u32 so the walk path
// never needs bigint.

const TWO32 = 4294967296;

/** Bump allocator over host physical memory, for host-private regions (stage-2 tables, STEs, guest RAM). */
export class PhysLayout {
  readonly mem: SharedArrayBuffer;
  private next: number;
  private readonly u8: Uint8Array;

  constructor(mem: SharedArrayBuffer, start = 0) {
    this.mem = mem;
    this.u8 = new Uint8Array(mem);
    this.next = start;
  }

  /** Reserve `bytes` at a multiple of `align` (a power of two), zero-filled; returns its PA. */
  alloc(bytes: number, align = 4096): number {
    if (!Number.isInteger(bytes) || bytes <= 0) throw new RangeError(`PhysLayout.alloc: bad size ${bytes}`);
    if (!Number.isInteger(align) || align <= 0 || (align & (align - 1)) !== 0) {
      throw new RangeError(`PhysLayout.alloc: alignment ${align} is not a power of two`);
    }
    const pa = Math.ceil(this.next / align) * align;
    if (pa + bytes > this.mem.byteLength) {
      throw new RangeError(`PhysLayout.alloc: ${bytes} bytes at 0x${pa.toString(16)} exceed host memory (${this.mem.byteLength} bytes)`);
    }
    // Memory handed out twice (a torn-down VM's RAM) must not leak old tables.
    this.u8.fill(0, pa, pa + bytes);
    this.next = pa + bytes;
    return pa;
  }

  /** First PA not yet handed out. */
  get top(): number {
    return this.next;
  }

  /** Give back everything allocated since `top` was `mark` (a setup call that failed undoes its allocations). */
  rewind(mark: number): void {
    if (!(mark <= this.next)) throw new RangeError(`PhysLayout.rewind: 0x${mark.toString(16)} is above the top`);
    this.next = mark;
  }
}

/** Read/write access to 32-bit words by address, plus a table allocator: what a page-table builder needs. */
export interface TableStore {
  read32(addr: number): number;
  write32(addr: number, v: number): void;
  /** A zeroed, naturally aligned region for one translation table. */
  allocTable(bytes: number): number;
}

/** Host-side table store: addresses are PAs, tables come from a PhysLayout. */
export class HostTableStore implements TableStore {
  private readonly u32: Uint32Array;
  constructor(readonly layout: PhysLayout) {
    this.u32 = new Uint32Array(layout.mem);
  }
  read32(pa: number): number {
    return this.u32[checkAddr(pa, this.u32.length * 4) / 4]!;
  }
  write32(pa: number, v: number): void {
    // Atomic so a walker running on another thread never sees a torn word.
    Atomics.store(this.u32, checkAddr(pa, this.u32.length * 4) / 4, v); // unordered: table data, atomic so a concurrent walk never reads a torn word; published by the PROD or mailbox store that follows
  }
  allocTable(bytes: number): number {
    return this.layout.alloc(bytes, bytes);
  }
}

/**
 * The guest's view of its RAM: addresses are IPAs in [0, ramBytes). It is what
 * guest code (and the VMM reading guest structures) uses; the SMMU never goes
 * through it, it walks stage 2.
 */
export class GuestMemory implements TableStore {
  readonly mem: SharedArrayBuffer;
  readonly ramBase: number;
  readonly ramBytes: number;
  private readonly u32: Uint32Array;
  private bump: number;
  private bumpEnd: number;

  /**
   * `tablePool` is an IPA range of guest RAM from which allocTable hands out
   * page-table pages (the guest's own allocator; never freed).
   */
  constructor(mem: SharedArrayBuffer, ramBase: number, ramBytes: number, tablePool?: { ipa: number; bytes: number }) {
    if (ramBase % 8 !== 0 || ramBytes % 8 !== 0 || ramBase + ramBytes > mem.byteLength) {
      throw new RangeError(`GuestMemory: RAM [0x${ramBase.toString(16)}, +0x${ramBytes.toString(16)}) is not inside host memory`);
    }
    this.mem = mem;
    this.ramBase = ramBase;
    this.ramBytes = ramBytes;
    this.u32 = new Uint32Array(mem);
    this.bump = tablePool?.ipa ?? 0;
    this.bumpEnd = tablePool ? tablePool.ipa + tablePool.bytes : 0;
    if (this.bumpEnd > ramBytes) throw new RangeError('GuestMemory: table pool outside guest RAM');
  }

  read32(ipa: number): number {
    return this.u32[(this.ramBase + checkAddr(ipa, this.ramBytes)) / 4]!;
  }
  write32(ipa: number, v: number): void {
    Atomics.store(this.u32, (this.ramBase + checkAddr(ipa, this.ramBytes)) / 4, v); // unordered: guest RAM data (PTEs, CDs, STEs), as above
  }
  writeWords(ipa: number, words: Uint32Array): void {
    for (let i = 0; i < words.length; i++) this.write32(ipa + 4 * i, words[i]!);
  }
  readWords(ipa: number, out: Uint32Array): Uint32Array {
    for (let i = 0; i < out.length; i++) out[i] = this.read32(ipa + 4 * i);
    return out;
  }
  allocTable(bytes: number): number {
    const ipa = Math.ceil(this.bump / bytes) * bytes;
    if (ipa + bytes > this.bumpEnd) throw new RangeError('GuestMemory: page-table pool exhausted');
    for (let a = ipa; a < ipa + bytes; a += 4) this.write32(a, 0);
    this.bump = ipa + bytes;
    return ipa;
  }
  /** The host PA of a guest IPA (what stage 2 maps it to when built by buildStage2). */
  paOf(ipa: number): number {
    checkAddr(ipa - (ipa % 4), this.ramBytes);
    return this.ramBase + ipa;
  }
}

/** Host-side copy of 32-bit words to a PA (STEs, CDs of S1-only streams). */
export function writeHostWords(mem: SharedArrayBuffer, pa: number, words: Uint32Array): void {
  const u32 = new Uint32Array(mem);
  for (let i = 0; i < words.length; i++) Atomics.store(u32, checkAddr(pa + 4 * i, mem.byteLength) / 4, words[i]!); // unordered: table data, as above
}

/** A 4-byte-aligned address inside [0, limit), returned unchanged; throws otherwise. */
function checkAddr(addr: number, limit: number): number {
  if (!(addr >= 0 && addr + 4 <= limit && addr % 4 === 0)) {
    throw new RangeError(`address 0x${addr.toString(16)} is outside [0, 0x${limit.toString(16)}) or unaligned`);
  }
  return addr;
}

/** Join two u32 halves into a double (exact below 2^53). */
export function join64(lo: number, hi: number): number {
  return hi * TWO32 + (lo >>> 0);
}

/** Split a non-negative integer below 2^64 (number or bigint) into u32 halves. */
export function split64(v: number | bigint): [number, number] {
  if (typeof v === 'bigint') {
    if (v < 0n || v >= 1n << 64n) throw new RangeError(`address ${v} is not a 64-bit unsigned value`);
    return [Number(v & 0xffffffffn), Number(v >> 32n)];
  }
  if (!Number.isInteger(v) || v < 0 || v > Number.MAX_SAFE_INTEGER) throw new RangeError(`address ${v} is not a safe non-negative integer`);
  return [v % TWO32, Math.floor(v / TWO32)];
}
