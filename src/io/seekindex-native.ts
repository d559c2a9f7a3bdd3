/**
 * The seek index in C (native/seekindex.c; the design: seekindex.ts), wrapped for JavaScript.
 */
import { loadAddon } from './addon';
import { type BlockEntry } from './container';
import { FastLzError } from './fastlz';
import { type BlockIndex, type IndexHost, IndexPass, type ReadStored, type ReadStoredSync } from './seekindex-contract';

/** A scan (NativeSeekIndex) decodes this much at once; a read this large is taken as one. */
const SCAN_AHEAD = 512 * 1024;
const SCAN_MIN_READ = 64 * 1024;

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
   * file open as `fd` and decoded on the thread pool by si_read_with, as libfuse's threads read
   * (si_read_fd): n, or null when the pass has not reached the block. Damage rejects with
   * FastLzError.
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
