/** `n` as 0x-prefixed lower-case hex, zero-padded to `width` digits: how offsets and magics are shown everywhere. */
export function hex(n: number | bigint, width = 0): string {
  return '0x' + n.toString(16).padStart(width, '0');
}
