/** A little-endian unsigned integer of 1, 2, 4 or 8 bytes at `offset` (the widths of VMware's tags), else undefined. */
export function uintLE(buf: Buffer, offset: number, width: number): number | bigint | undefined {
  switch (width) {
    case 1: return buf.readUInt8(offset);
    case 2: return buf.readUInt16LE(offset);
    case 4: return buf.readUInt32LE(offset);
    case 8: return buf.readBigUInt64LE(offset);
    default: return undefined;
  }
}

/** `v` as a number, or undefined when it is above 2^53 (a number would not hold it exactly). */
export function safeNumber(v: number | bigint | undefined): number | undefined {
  if (typeof v !== 'bigint') return v;
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
}

/** `n` as 0x-prefixed lower-case hex, zero-padded to `width` digits: how offsets and magics are shown everywhere. */
export function hex(n: number | bigint, width = 0): string {
  return '0x' + n.toString(16).padStart(width, '0');
}
