import type { RandomAccess } from '../io/source';
import { safeNumber, uintLE } from './integers';

const WINDOW = 64 * 1024;

/**
 * A forward reader over [start, end) of a RandomAccess, buffered in 64 KiB windows so that a
 * tag stream of thousands of small fields costs a handful of syscalls. It never reads past
 * `end`: each `take` either returns the whole field or null, and the caller decides what a
 * short stream means.
 */
export class Cursor {
  private window = Buffer.alloc(0);
  private windowStart = 0;

  constructor(
    private readonly src: RandomAccess,
    public pos: number,
    readonly end: number,
  ) {}

  get remaining(): number {
    return Math.max(0, this.end - this.pos);
  }

  /** The next `n` bytes (a view valid until the next call), or null if fewer remain. */
  take(n: number): Buffer | null {
    const at = this.next(n);
    return at < 0 ? null : this.window.subarray(at, at + n);
  }

  /**
   * Move past the next `n` bytes and say where they sit in `bytes` (valid until the next call),
   * or -1 if fewer remain. A tag stream reads four fields a tag: a view of each (as `take` makes)
   * would be a million short-lived objects at the tag cap, so the tag reader reads in place.
   */
  next(n: number): number {
    if (n > this.remaining) return -1;
    const rel = this.pos - this.windowStart;
    if (rel < 0 || rel + n > this.window.length) {
      const want = Math.min(Math.max(n, WINDOW), this.end - this.pos);
      const buf = Buffer.allocUnsafe(want);
      const got = this.src.readAtSync(buf, this.pos);
      this.window = buf.subarray(0, got);
      this.windowStart = this.pos;
      if (got < n) return -1;
    }
    const at = this.pos - this.windowStart;
    this.pos += n;
    return at;
  }

  /** The buffer `next` points into. */
  get bytes(): Buffer {
    return this.window;
  }

  /** Move past `n` bytes without reading them (block data); false if that leaves the range. */
  skip(n: number): boolean {
    if (n > this.remaining) return false;
    this.pos += n;
    return true;
  }
}

/** Read a little-endian unsigned integer of 1, 2, 4 or 8 bytes; 8-byte values above 2^53 are null. */
export function readUint(buf: Buffer, offset: number, width: number): number | null {
  return safeNumber(uintLE(buf, offset, width)) ?? null;
}
