/**
 * The seek index in JavaScript (the design: seekindex.ts), kept for when the addon cannot load.
 * Each block decodes on libuv's thread pool when the native decoder is there, else here; a walk
 * over its control bytes on the event loop records its points.
 */
import { bisect } from '../bisect';
import { type BlockEntry } from './container';
import { FastLzError, MAX_DISTANCE } from './fastlz';
import { decodeBlock, decodeBlockAsync } from './native-decoder';
import { type BlockIndex, type IndexHost, IndexPass, type ReadStored, type ReadStoredSync } from './seekindex-contract';

/** Output between seek points at first. */
export const SPACING = 32 * 1024;
/** Output indexed between two yields to the event loop (the walk over a block's tokens runs here). */
const SLICE = 4 * 1024 * 1024;
/** Bytes a point costs besides its window (its numbers, the window's buffer header). */
const POINT_COST = 96;

/** A seek point: decoding resumes at `ip` of block `block`'s stored bytes, writing stream byte `out`. */
interface Point {
  out: number;
  block: number;
  ip: number;
  /** The history the tokens from here to the next point copy, packed (see packWindow). */
  window: Buffer;
}

/** History intervals [start, end) in stream positions, sorted and merged. */
type Intervals = number[];

/**
 * Seek points of one decoded block: walks its control bytes (the block decoded, so they are
 * sound) and ends a span at the first token boundary `spacing` bytes of output or more after its
 * start. For each span, calls `point(ip, op, refs)` with the stream positions before the span
 * that its tokens copy. Stream positions: the block starts at `start`.
 */
function walkSpans(input: Buffer, start: number, spacing: number, point: (ip: number, op: number, refs: Intervals) => void): void {
  let spans: number[] = [];
  let ip = 0;
  let op = start;
  let spanIp = 0;
  let spanOp = start;
  let first = true;
  while (ip < input.length) {
    if (op - spanOp >= spacing) {
      point(spanIp, spanOp, mergeIntervals(spans));
      spans = [];
      spanIp = ip;
      spanOp = op;
    }
    let ctrl = input[ip++] as number;
    if (first) {
      ctrl &= 31;
      first = false;
    }
    if (ctrl < 32) {
      ip += ctrl + 1;
      op += ctrl + 1;
      continue;
    }
    let len = (ctrl >> 5) + 2;
    if (len === 9) {
      let b: number;
      do {
        b = input[ip++] as number;
        len += b;
      } while (b === 255);
    }
    const lo = input[ip++] as number;
    let dist: number;
    if ((ctrl & 31) === 31 && lo === 255) {
      dist = 8192 + (((input[ip] as number) << 8) | (input[ip + 1] as number));
      ip += 2;
    } else {
      dist = (((ctrl & 31) << 8) | lo) + 1;
    }
    const ref = op - dist;
    if (ref < spanOp) spans.push(ref, Math.min(ref + len, spanOp));
    op += len;
  }
  point(spanIp, spanOp, mergeIntervals(spans));
}

/** Flat [start, end, start, end, ...] pairs, sorted and merged (gaps of a few bytes closed too: cheaper than a pair). */
function mergeIntervals(spans: number[]): Intervals {
  const n = spans.length / 2;
  if (n === 0) return [];
  const order = [...Array(n).keys()].sort((a, b) => (spans[2 * a] as number) - (spans[2 * b] as number));
  const out: number[] = [];
  for (const i of order) {
    const s = spans[2 * i] as number;
    const e = spans[2 * i + 1] as number;
    if (out.length > 0 && s <= (out[out.length - 1] as number) + 8) {
      out[out.length - 1] = Math.max(out[out.length - 1] as number, e);
    } else {
      out.push(s, e);
    }
  }
  return out;
}

/**
 * A window packed: per interval, its start relative to the point (u32, counted back), its
 * length (u32, top bit set for a run of one byte value, then that byte) and its bytes.
 * `byteAt(p)` gives stream byte p (p < point).
 */
function packWindow(iv: Intervals, point: number, byteAt: (p: number) => number): Buffer {
  const parts: number[] = [];
  let size = 0;
  for (let i = 0; i < iv.length; i += 2) {
    const s = iv[i] as number;
    const e = iv[i + 1] as number;
    const v = byteAt(s);
    let uniform = true;
    for (let p = s + 1; p < e && uniform; p++) uniform = byteAt(p) === v;
    parts.push(s, e, uniform ? 1 : 0);
    size += 8 + (uniform ? 1 : e - s);
  }
  const w = Buffer.allocUnsafe(size);
  let o = 0;
  for (let i = 0; i < parts.length; i += 3) {
    const s = parts[i] as number;
    const e = parts[i + 1] as number;
    const uniform = parts[i + 2] === 1;
    w.writeUInt32LE(point - s, o);
    w.writeUInt32LE(uniform ? e - s + 0x80000000 : e - s, o + 4);
    o += 8;
    if (uniform) {
      w[o++] = byteAt(s);
    } else {
      for (let p = s; p < e; p++) w[o++] = byteAt(p);
    }
  }
  return w;
}

/** Calls `put(p, byte)` for every stream position the window holds, given its point. */
function eachWindowByte(w: Buffer, point: number, put: (p: number, v: number) => void): void {
  for (let o = 0; o < w.length;) {
    const s = point - w.readUInt32LE(o);
    const lenWord = w.readUInt32LE(o + 4);
    o += 8;
    const len = lenWord & 0x7fffffff;
    if (lenWord & 0x80000000) {
      const v = w[o++] as number;
      for (let i = 0; i < len; i++) put(s + i, v);
    } else {
      for (let i = 0; i < len; i++) put(s + i, w[o + i] as number);
      o += len;
    }
  }
}

/** Write the window into `out`, where out[at] is stream byte `point` (positions before are history). */
function fillWindow(w: Buffer, out: Buffer, at: number): void {
  for (let o = 0; o < w.length;) {
    const back = w.readUInt32LE(o);
    const lenWord = w.readUInt32LE(o + 4);
    o += 8;
    const len = lenWord & 0x7fffffff;
    const dst = at - back;
    if (lenWord & 0x80000000) {
      out.fill(w[o++] as number, dst, dst + len);
    } else {
      w.copy(out, dst, o, o + len);
      o += len;
    }
  }
}

export class SeekIndex extends IndexPass implements BlockIndex {
  private readonly points: Point[] = [];
  /** Compressed blocks fully indexed: their points are all recorded (raw blocks need none). */
  private indexedBlocks = 0;
  private spacing = SPACING;
  private heldBytes = 0;
  /** Where reads decode (at most a window and a block: 4.1 MiB). */
  private scratch = Buffer.alloc(0);
  readonly nativeHandle = null;

  constructor(private readonly host: IndexHost) {
    super();
  }

  get indexed(): number {
    return this.indexedBlocks;
  }

  private grow(n: number): boolean {
    if (this.heldBytes + n > this.host.allowance) return false;
    this.host.reserve(n);
    return true;
  }

  /** Bytes of memory the index holds. */
  get bytes(): number {
    return this.heldBytes;
  }

  get count(): number {
    return this.points.length;
  }

  covers(k: number): boolean {
    return k < this.indexedBlocks;
  }

  protected async pass(): Promise<void> {
    const blocks = this.host.blocks;
    // The stream's last MAX_DISTANCE bytes before the block being indexed: zeros before the start.
    let history = Buffer.alloc(MAX_DISTANCE);
    let sinceYield = 0;
    for (let k = 0; k < blocks.length && !this.stopped; k++) {
      const b = blocks[k] as BlockEntry;
      const raw = await this.host.readRaw(k);
      const buf = Buffer.allocUnsafe(MAX_DISTANCE + b.size);
      history.copy(buf, 0);
      if (b.raw) {
        raw.copy(buf, MAX_DISTANCE);
      } else {
        // The whole block on libuv's thread pool (the native decoder; else JavaScript, here).
        let why: string | null = null;
        try {
          if ((await decodeBlockAsync(raw, 0, buf, MAX_DISTANCE, buf.length, 0, true)) < 0) why = 'a match reaches before the window';
        } catch (err) {
          if (!(err instanceof FastLzError)) throw err;
          why = err.message;
        }
        if (why !== null) return this.halt(k, b, why);
        if (this.stopped) return;
        const base = b.start - MAX_DISTANCE;
        walkSpans(raw, b.start, this.spacing, (ip, out, refs) => {
          this.add({ out, block: k, ip, window: packWindow(refs, out, (p) => buf[p - base] as number) });
        });
        sinceYield += b.size;
        if (sinceYield >= SLICE) {
          sinceYield = 0;
          await new Promise((r) => setImmediate(r));
          if (this.stopped) return;
        }
      }
      history = Buffer.from(buf.subarray(buf.length - MAX_DISTANCE));
      this.indexedBlocks = k + 1;
      this.waiters.wake(this.indexedBlocks, false);
    }
    this.done = !this.stopped;
  }

  private add(p: Point): void {
    const cost = p.window.length + POINT_COST;
    while (!this.grow(cost)) {
      if (!this.thin()) {
        // Nothing left to merge (absurdly small allowance): the point is kept over it.
        break;
      }
    }
    this.heldBytes += cost;
    this.points.push(p);
  }

  /**
   * Merge points pairwise (within a block) and double the spacing: the merged point's window is
   * its own plus what the dropped point's window held from before it.
   */
  private thin(): boolean {
    const before = this.heldBytes;
    const kept: Point[] = [];
    let held = 0;
    for (let i = 0; i < this.points.length; i++) {
      const a = this.points[i] as Point;
      const b = this.points[i + 1];
      if (b && b.block === a.block) {
        const bytes = new Map<number, number>();
        eachWindowByte(a.window, a.out, (p, v) => bytes.set(p, v));
        eachWindowByte(b.window, b.out, (p, v) => {
          if (p < a.out) bytes.set(p, v);
        });
        const spans: number[] = [];
        for (const p of bytes.keys()) spans.push(p, p + 1);
        const window = packWindow(mergeIntervals(spans), a.out, (p) => bytes.get(p) ?? 0);
        kept.push({ ...a, window });
        i++;
      } else {
        kept.push(a);
      }
      held += (kept[kept.length - 1] as Point).window.length + POINT_COST;
    }
    if (kept.length === this.points.length) return false;
    this.points.splice(0, this.points.length, ...kept);
    this.heldBytes = held;
    this.host.reserve(held - before);
    this.spacing *= 2;
    return true;
  }

  /** The index of the last point of block k at or before stream position `pos` (block k has points). */
  private pointAt(k: number, pos: number): number {
    return Math.max(0, bisect(this.points.length, (i) => {
      const p = this.points[i] as Point;
      return p.block < k || (p.block === k && p.out <= pos);
    }) - 1);
  }

  /** The points a read of [pos, pos + n) of block k decodes between, and the stored bytes it needs. */
  private span(k: number, pos: number, n: number): { i: number; j: number; ip: number; ipEnd: number; out: number; outEnd: number } {
    const b = this.host.blocks[k] as BlockEntry;
    const i = this.pointAt(k, pos);
    let j = i + 1;
    while (j < this.points.length && (this.points[j] as Point).block === k && (this.points[j] as Point).out < pos + n) j++;
    const from = this.points[i] as Point;
    const to = this.points[j];
    const last = to && to.block === k ? to : null;
    return { i, j, ip: from.ip, ipEnd: last ? last.ip : b.stored, out: from.out, outEnd: last ? last.out : b.start + b.size };
  }

  /** Decode a span's stored bytes and copy stream bytes [pos, pos + n) into dst at `at`. */
  private decodeSpan(sp: ReturnType<SeekIndex['span']>, input: Buffer, pos: number, n: number, dst: Buffer, at: number): void {
    // One buffer for every read: decoding is synchronous, so no other read uses it meanwhile.
    const need = MAX_DISTANCE + (sp.outEnd - sp.out);
    if (this.scratch.length < need) this.scratch = Buffer.allocUnsafe(need);
    const out = this.scratch.subarray(0, need);
    // Each point's window holds what the tokens up to the next one copy from before it: for
    // tokens past an intermediate point, the bytes before the first point come from that
    // point's window. Nothing else before the first point is ever read.
    for (let m = sp.i; m < sp.j; m++) {
      const p = this.points[m] as Point;
      fillWindow(p.window, out, MAX_DISTANCE + (p.out - sp.out));
    }
    const r = decodeBlock(input, 0, out, MAX_DISTANCE, out.length, 0, sp.ip === 0);
    if (r < 0) throw new FastLzError('a match reaches before the seek point\'s window');
    out.copy(dst, at, MAX_DISTANCE + (pos - sp.out), MAX_DISTANCE + (pos - sp.out) + n);
  }

  /**
   * Copy stream bytes [pos, pos + n) of compressed block k into dst at `at`, decoding from the
   * nearest point before to the first point after; `readStored(offset, length)` reads the
   * block's stored bytes. Throws FastLzError when the tokens there are damaged.
   */
  async read(k: number, pos: number, n: number, dst: Buffer, at: number, readStored: ReadStored): Promise<void> {
    for (;;) {
      const sp = this.span(k, pos, n);
      const input = await readStored(sp.ip, sp.ipEnd - sp.ip);
      // Points may have been merged meanwhile (the index thinned): decode only as planned.
      const now = this.span(k, pos, n);
      if (now.ip === sp.ip && now.ipEnd === sp.ipEnd) return this.decodeSpan(now, input, pos, n, dst, at);
    }
  }

  /** read(), synchronously (a source read in place). */
  readSync(k: number, pos: number, n: number, dst: Buffer, at: number, readStored: ReadStoredSync): void {
    const sp = this.span(k, pos, n);
    this.decodeSpan(sp, readStored(sp.ip, sp.ipEnd - sp.ip), pos, n, dst, at);
  }
}

