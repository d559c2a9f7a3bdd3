/**
 * Random access into VMware's compressed memory stream by a seek index, as zlib's zran.c,
 * indexed_gzip and rapidgzip do for gzip, fitted to this format. One pass decodes the stream
 * and records, every SPACING bytes of output, a seek point: where the tokens resume (block and
 * offset in its stored bytes, always a token boundary) and a sparse window: only the bytes
 * before the point that the tokens up to the next point copy, usually far fewer than the 72 KiB
 * a match may reach, and zero runs kept as a length. A read then decodes from the nearest point
 * before it to the next point after it: a bounded amount of work wherever it lands.
 *
 * Block headers give every block's start, but a block's first tokens copy from the one before,
 * so the pass runs block after block: each block decodes on libuv's thread pool (the native
 * decoder; JavaScript when the addon is absent), then a walk over its control bytes on the event
 * loop records its points (setImmediate between blocks), while reads it has not reached yet are
 * served the other way. Decoding blocks in parallel, rapidgzip's way (markers for the unknown
 * history, resolved afterwards), would gain little on two cores shared with the readers.
 * The index lives in memory only, within an allowance the caller gives; past it, the spacing
 * doubles and the points recorded so far are merged pairwise.
 */
import { bisect } from '../bisect';
import { loadAddon } from './addon';
import { type BlockEntry } from './container';
import { FastLzError, MAX_DISTANCE } from './fastlz';
import { decodeBlock, decodeBlockAsync } from './native-decoder';

/** Output between seek points at first. */
export const SPACING = 32 * 1024;
/** Output indexed between two yields to the event loop (the walk over a block's tokens runs here). */
const SLICE = 4 * 1024 * 1024;
/** A scan (NativeSeekIndex) decodes this much at once; a read this large is taken as one. */
const SCAN_AHEAD = 512 * 1024;
const SCAN_MIN_READ = 64 * 1024;
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

export interface IndexHost {
  readonly blocks: readonly BlockEntry[];
  /**
   * Block k's stored bytes: in `into` when given and large enough (the index reuses it), else in
   * a buffer of the caller's own, not reused.
   */
  readRaw(k: number, into?: Buffer): Promise<Buffer>;
  /** The most bytes of points and windows the index may hold (past it, points merge). */
  readonly allowance: number;
  /** The index grew by `bytes` (shrank, when negative): the caller counts it in its budget. */
  reserve(bytes: number): void;
}

/** Reads the stored bytes [offset, offset + length) of the block being read. */
export type ReadStored = (offset: number, length: number) => Promise<Buffer>;
export type ReadStoredSync = (offset: number, length: number) => Buffer;

/** What BlockStreamSource asks of a seek index, in JavaScript or in C. */
export interface BlockIndex {
  readonly bytes: number;
  readonly count: number;
  readonly done: boolean;
  failure: string | null;
  /** The C index's handle for the native read path (seekindex_napi.c), or null. */
  readonly nativeHandle: object | null;
  covers(k: number): boolean;
  /** Resolves once block k is covered or the pass has ended (then covers(k) may stay false). */
  reached(k: number): Promise<void>;
  /** Blocks indexed so far. */
  readonly indexed: number;
  /** Whether the pass is running (started, not ended). */
  readonly running: boolean;
  stop(): void;
  build(): Promise<void>;
  read(k: number, pos: number, n: number, dst: Buffer, at: number, readStored: ReadStored): Promise<void>;
  readSync(k: number, pos: number, n: number, dst: Buffer, at: number, readStored: ReadStoredSync): void;
}

/** Waiters for blocks to be reached, woken as the pass goes and when it ends. */
class Waiters {
  private list: { k: number; wake: () => void }[] = [];
  wait(k: number): Promise<void> {
    return new Promise((wake) => this.list.push({ k, wake }));
  }
  /** Wake those waiting for blocks below `indexed` (all when the pass ended). */
  wake(indexed: number, ended: boolean): void {
    if (this.list.length === 0) return;
    const keep: typeof this.list = [];
    for (const w of this.list) {
      if (ended || w.k < indexed) w.wake();
      else keep.push(w);
    }
    this.list = keep;
  }
}

/** The pass and its waiters, as both indexes run them: build() once, reached(k), stop(). */
abstract class IndexPass {
  /** Why the pass stopped before the end (a damaged block), or null. */
  failure: string | null = null;
  done = false;
  running = false;
  protected stopped = false;
  protected readonly waiters = new Waiters();

  abstract readonly indexed: number;
  /** Whether block k can be read through the index. */
  abstract covers(k: number): boolean;
  protected abstract pass(): Promise<void>;

  reached(k: number): Promise<void> {
    return this.covers(k) || !this.running ? Promise.resolve() : this.waiters.wait(k);
  }

  stop(): void {
    this.stopped = true;
  }

  /** The pass over the stream; resolves when done, stopped, or halted by a damaged block. */
  async build(): Promise<void> {
    if (this.running || this.done) return;
    this.running = true;
    try {
      await this.pass();
    } finally {
      this.running = false;
      this.waiters.wake(this.indexed, true);
    }
  }

  /** The pass ends at block k, damaged: reads there and past it decode whole blocks, as before. */
  protected halt(k: number, b: BlockEntry, why: string): void {
    this.failure = `block ${k} (stream bytes ${b.start}-${b.start + b.size}) is damaged: ${why}`;
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

/** The C index's functions (native/seekindex_napi.c). */
interface SeekAddon {
  seekNew(blocks: readonly BlockEntry[], allowance: number): object;
  seekAddBlockAsync(h: object, k: number, stored: Buffer): Promise<void>;
  seekIndexed(h: object): number;
  seekStats(h: object): { points: number; bytes: number; indexed: number };
  seekPlan(h: object, pos: number, n: number): number[] | null;
  seekDecode(h: object, pos: number, n: number, plan: number[], stored: Buffer, dst: Buffer, dstAt: number): number | 'replan';
  seekReadFdAsync(h: object, fd: number, pos: number, n: number, dst: Buffer): Promise<number | null>;
}

function seekAddon(): SeekAddon | null {
  const lib = loadAddon();
  const a = lib.exports as Partial<Record<keyof SeekAddon, unknown>> | null;
  return a && typeof a.seekNew === 'function' && typeof a.seekDecode === 'function' ? (a as unknown as SeekAddon) : null;
}

/** The addon reports damage with this code, its message the reason. */
function isDamage(err: unknown): err is Error {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === 'VMSSFS_FASTLZ_DAMAGED';
}

/**
 * The seek index in C (native/seekindex.c), the same contract as SeekIndex: the pass hands each
 * block's stored bytes to the thread pool, which decodes it and records its points there, off
 * the event loop, while the next block's stored bytes are read. The handle is shared with the
 * native read path, whose libfuse threads read through the index without JavaScript.
 */
export class NativeSeekIndex extends IndexPass implements BlockIndex {
  private held = 0;
  /** The scan window: stream bytes [pos, pos + n) decoded in buf; where the last read ended. */
  private scan: { pos: number; n: number; buf: Buffer } | null = null;
  private scanBuf: Buffer | null = null;
  private scanEnd = -1;

  private constructor(private readonly host: IndexHost, private readonly addon: SeekAddon, readonly nativeHandle: object) {
    super();
  }

  /** The C index for this host, or null without the addon (or a table it refuses). */
  static create(host: IndexHost): NativeSeekIndex | null {
    const addon = seekAddon();
    if (!addon || host.blocks.length === 0) return null;
    try {
      return new NativeSeekIndex(host, addon, addon.seekNew(host.blocks, host.allowance));
    } catch {
      return null;
    }
  }

  get bytes(): number {
    return this.addon.seekStats(this.nativeHandle).bytes;
  }

  get count(): number {
    return this.addon.seekStats(this.nativeHandle).points;
  }

  get indexed(): number {
    return this.addon.seekIndexed(this.nativeHandle);
  }

  covers(k: number): boolean {
    return k < this.addon.seekIndexed(this.nativeHandle);
  }

  protected async pass(): Promise<void> {
    const blocks = this.host.blocks;
    // Two buffers, in turn: block k + 1's stored bytes are read into one while block k, in the
    // other, is indexed on the thread pool. (A fresh buffer per block left the daemon some 30 MiB
    // larger after the pass: glibc keeps the freed blocks.)
    const largest = blocks.reduce((m, b) => Math.max(m, b.stored), 0);
    const bufs = [Buffer.allocUnsafe(largest), Buffer.allocUnsafe(largest)];
    let next: Promise<Buffer> | null = this.host.readRaw(0, bufs[0]);
    for (let k = 0; k < blocks.length && next; k++) {
      const stored: Buffer = await next;
      next = k + 1 < blocks.length && !this.stopped ? this.host.readRaw(k + 1, bufs[(k + 1) % 2]) : null;
      if (this.stopped) break;
      try {
        await this.addon.seekAddBlockAsync(this.nativeHandle, k, stored);
      } catch (err) {
        next?.catch(() => undefined);
        if (!isDamage(err)) throw err;
        return this.halt(k, blocks[k] as BlockEntry, err.message);
      }
      const bytes = this.bytes;
      this.host.reserve(bytes - this.held);
      this.held = bytes;
      this.waiters.wake(k + 1, false);
    }
    next?.catch(() => undefined);
    this.done = !this.stopped && this.indexed === blocks.length;
  }

  private decode(pos: number, n: number, plan: number[], input: Buffer, dst: Buffer, at: number): boolean {
    let r: number | 'replan';
    try {
      r = this.addon.seekDecode(this.nativeHandle, pos, n, plan, input, dst, at);
    } catch (err) {
      if (isDamage(err)) throw new FastLzError(err.message);
      throw err;
    }
    return r !== 'replan';
  }

  private plan(pos: number, n: number): number[] {
    const plan = this.addon.seekPlan(this.nativeHandle, pos, n);
    if (!plan) throw new Error(`the seek index does not cover stream bytes ${pos}-${pos + n}`);
    return plan;
  }

  /**
   * A read of n bytes at pos decodes from the point before pos to the point after its end. A
   * scan (a read following the last, or a large one) decodes SCAN_AHEAD bytes at once into the
   * scan window, which the reads that follow copy from: one plan, one read of stored bytes and
   * one decode per window instead of per read, and no span decoded twice.
   */
  private scanWindow(k: number, pos: number, n: number): { pos: number; n: number } | null {
    const b = this.host.blocks[k];
    if (!b || pos < b.start || pos + n > b.start + b.size || (pos !== this.scanEnd && n < SCAN_MIN_READ)) return null;
    return { pos, n: Math.min(Math.max(n, SCAN_AHEAD), b.start + b.size - pos) };
  }

  private fromScan(pos: number, n: number, dst: Buffer, at: number): boolean {
    const w = this.scan;
    if (!w || pos < w.pos || pos + n > w.pos + w.n) return false;
    w.buf.copy(dst, at, pos - w.pos, pos - w.pos + n);
    this.scanEnd = pos + n;
    return true;
  }

  private intoScan(span: { pos: number; n: number }): { buf: Buffer; at: number } {
    if (!this.scanBuf || this.scanBuf.length < span.n) this.scanBuf = Buffer.allocUnsafe(Math.max(span.n, SCAN_AHEAD));
    this.scan = null; // being refilled
    return { buf: this.scanBuf, at: 0 };
  }

  /**
   * Decode a planned read (the scan window's span, or the read itself) from its stored bytes
   * into dst: false when points merged meanwhile, and the C side says to plan again.
   */
  private serve(span: { pos: number; n: number } | null, pos: number, n: number, plan: number[], input: Buffer, dst: Buffer, at: number): boolean {
    const want = span ?? { pos, n };
    const into = span ? this.intoScan(span) : { buf: dst, at };
    if (!this.decode(want.pos, want.n, plan, input, into.buf, into.at)) return false;
    if (span) {
      this.scan = { pos: span.pos, n: span.n, buf: into.buf };
      this.fromScan(pos, n, dst, at);
    }
    this.scanEnd = pos + n;
    return true;
  }

  async read(k: number, pos: number, n: number, dst: Buffer, at: number, readStored: ReadStored): Promise<void> {
    if (this.fromScan(pos, n, dst, at)) return;
    const span = this.scanWindow(k, pos, n);
    for (;;) {
      const plan = this.plan(span?.pos ?? pos, span?.n ?? n);
      const input = await readStored(plan[0] as number, (plan[1] as number) - (plan[0] as number));
      if (this.serve(span, pos, n, plan, input, dst, at)) return;
    }
  }

  readSync(k: number, pos: number, n: number, dst: Buffer, at: number, readStored: ReadStoredSync): void {
    if (this.fromScan(pos, n, dst, at)) return;
    const span = this.scanWindow(k, pos, n);
    for (;;) {
      const plan = this.plan(span?.pos ?? pos, span?.n ?? n);
      const input = readStored(plan[0] as number, (plan[1] as number) - (plan[0] as number));
      if (this.serve(span, pos, n, plan, input, dst, at)) return;
    }
  }

  /**
   * Stream bytes [pos, pos + n) of one compressed block into dst[0, n), read from the container
   * file open as `fd` and decoded on the thread pool, as libfuse's threads read (si_read_fd):
   * n, or null when the pass has not reached the block. Damage rejects with FastLzError.
   */
  async readFd(fd: number, pos: number, n: number, dst: Buffer): Promise<number | null> {
    try {
      return await this.addon.seekReadFdAsync(this.nativeHandle, fd, pos, n, dst);
    } catch (err) {
      if (isDamage(err)) throw new FastLzError(err.message);
      throw err;
    }
  }

}

/** The seek index for a stream: in C when the addon is there, else in JavaScript. */
export function createSeekIndex(host: IndexHost): BlockIndex {
  return NativeSeekIndex.create(host) ?? new SeekIndex(host);
}
