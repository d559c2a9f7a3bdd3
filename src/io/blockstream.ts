import { CacheBudget } from '../cache/budget';
import { BlockDecoder } from './blockdecoder';
import { DecodingLayer } from './layer';
import { droppedGarbage } from './garbage';
import { FastLzError, MAX_DISTANCE } from './fastlz';
import { type BlockEntry, type ContainerIndex, indexContainer } from './container';
import { type BlockIndex, createSeekIndex } from './seekindex';
import { type DamagedRange, type Source } from './source';

export { looksLikeBlockStream, type BlockEntry } from './container';

/** The budget of a stream opened on its own, without the mount's (tests, tools): 8 blocks. */
const DEFAULT_BUDGET = 32 * 1024 * 1024;
const MIB = 1024 * 1024;
/** The most memory the seek index may take, as a share of the stream it indexes. */
const INDEX_SHARE = 0.03;
/** Until measured: the pass's time per block, and a whole block's decode (tracing back), in ms. */
const GUESS_PASS_MS = 2;
const GUESS_DECODE_MS = 15;
/**
 * A read of a block the pass will reach within this long waits for it rather than decoding the
 * whole block: each whole-block decode (tracing back) takes thread pool and CPU from the pass,
 * which on 1 GiB took 0.2-0.7 s alone and 3-6 s with a random reader decoding blocks beside it
 * (docs/performance.md).
 */
const PASS_WAIT_MS = 1000;

/**
 * The decompressed stream of a compressed memory file. Opening reads only the 16-byte headers
 * (one per block, container.ts) to index where each block lies in both the file and the stream.
 * A read of a raw block reads its stored bytes in place; of a compressed block, it decodes from
 * the nearest seek point once the index (seekindex.ts) has reached it, else the whole block
 * (blockdecoder.ts).
 */
export class BlockStreamSource extends DecodingLayer implements Source {
  readonly blocks: BlockEntry[];
  readonly damaged: DamagedRange[] = [];
  /** What the user should know about this stream (said with the snapshot's warnings). */
  readonly notes: string[] = [];
  /** Bytes of the stream its intact chain of headers describes. */
  readonly decodedSize: number;
  /** Bytes of the container the indexed blocks occupy (headers included). */
  readonly storedSize: number;
  size: number;
  private readonly decoder: BlockDecoder;
  /** The seek index (made at once, its pass started by startIndex), and the pass. */
  private readonly seek: BlockIndex;
  private pass: Promise<void> | null = null;
  private passSeconds = 0;
  /** Starts the pass on the first read (indexOnFirstRead), then null. */
  private firstRead: (() => void) | null = null;
  /** Measured, moving averages (ms): the pass's time per block, a whole block's decode. */
  private passMsPerBlock = GUESS_PASS_MS;
  private decodeMs = GUESS_DECODE_MS;
  private readonly budget: CacheBudget;

  constructor(inner: Source, opts: { budget?: CacheBudget; index?: ContainerIndex } = {}) {
    super(inner);
    const budget = opts.budget ?? new CacheBudget(DEFAULT_BUDGET);
    this.budget = budget;
    const index = opts.index ?? indexContainer(inner);
    // Decoding a block holds the block with its window, its stored bytes and the tails around
    // it: a budget below that would decode the same blocks over and over, and grow the daemon
    // by what it could not keep. The floor is said once (only the first stream raises it).
    const largest = index.blocks.reduce((a, b) => Math.max(a, b.size), 0);
    const floor = Math.ceil((2 * largest + 4 * MAX_DISTANCE) / MIB) * MIB;
    const asked = budget.maxBytes;
    if (budget.atLeast(floor)) {
      this.notes.push(`--cache-size ${Math.max(1, Math.round(asked / MIB))} MiB is below what compressed memory needs to decode (a ${(largest / MIB).toFixed(largest % MIB ? 2 : 0)} MiB block with its window): the caches use ${floor / MIB} MiB`);
    }
    this.blocks = index.blocks;
    this.decodedSize = index.decodedSize;
    this.storedSize = index.storedSize;
    this.size = index.decodedSize;
    if (index.stop !== null) {
      // What follows cannot be located: the stream ends here, and memory the run map places
      // beyond it is reported by coverDamaged().
      this.damaged.push({ start: this.size, end: this.size, why: `${index.stop}; the stream is decodable only up to byte ${this.size}` });
    }
    this.decoder = new BlockDecoder(inner, this.blocks, budget);
    // The index's memory, up to INDEX_SHARE of the stream, is counted in the budget as it grows.
    this.seek = createSeekIndex({
      blocks: this.blocks,
      readRaw: (k, into) => this.decoder.rawAsync(k, into),
      allowance: Math.max(MIB, Math.floor(this.decodedSize * INDEX_SHARE)),
      reserve: (n) => this.budget.reserve(n),
    });
  }

  /**
   * Read in place (synchronously) as the file beneath, except while the index pass runs: a read
   * it has not reached would then decode a whole block on the event loop, stalling the pass
   * with it; read asynchronously, it waits for the pass or decodes on the thread pool.
   */
  override get readsInPlace(): boolean {
    return super.readsInPlace && !this.seek.running;
  }

  /**
   * The C seek index's handle, for the native read path (which reads the blocks the pass has
   * reached through it), or null when the index is JavaScript's (no addon).
   */
  get nativeSeekHandle(): object | null {
    return this.seek.nativeHandle;
  }

  /**
   * Declare the stream `end` bytes long when the memory map wants more than the intact chain
   * holds: those bytes read as EIO (they exist, but cannot be decoded), never as zeros.
   */
  coverDamaged(end: number): void {
    const last = this.damaged[this.damaged.length - 1];
    if (!last || end <= this.size) return;
    last.end = end;
    this.size = end;
  }

  private fail(message: string): Error {
    return this.decoder.fail(message);
  }

  private checkRange(position: number, end: number): void {
    if (end > this.decodedSize) {
      const d = this.damaged[this.damaged.length - 1];
      throw this.fail(`stream bytes ${Math.max(position, this.decodedSize)}-${end} cannot be decoded: ${d?.why ?? 'past the end'}`);
    }
  }

  /**
   * The blocks a read of [position, position + length) touches, each with the stretch of it
   * wanted: `within` bytes into the block, `n` bytes long, `at` bytes into the read.
   */
  private *spans(position: number, length: number): Generator<{ k: number; within: number; n: number; at: number }> {
    const end = Math.min(position + length, this.size);
    if (end <= position) return;
    this.checkRange(position, end);
    for (let pos = position; pos < end;) {
      const k = this.decoder.blockAt(pos);
      const b = this.blocks[k] as BlockEntry;
      const n = Math.min(b.start + b.size, end) - pos;
      yield { k, within: pos - b.start, n, at: pos - position };
      pos += n;
    }
  }

  /**
   * Start the pass that builds the seek index, in the background (the mount does, once it is
   * up). Reads of blocks it has reached decode from its points from then on.
   */
  startIndex(): Promise<void> {
    if (this.pass) return this.pass;
    const seek = this.seek;
    const started = performance.now();
    let last = started;
    let lastIndexed = 0;
    // The pass's pace, for choosing between waiting for it and decoding a whole block.
    const pace = setInterval(() => {
      const now = performance.now();
      const k = seek.indexed;
      if (k > lastIndexed) {
        this.passMsPerBlock = 0.5 * this.passMsPerBlock + 0.5 * ((now - last) / (k - lastIndexed));
        last = now;
        lastIndexed = k;
      }
    }, 50);
    pace.unref();
    this.pass = seek.build().then(
      () => {
        if (seek.failure) this.notes.push(`seek index stopped: ${seek.failure}`);
      },
      (err: unknown) => {
        seek.failure = err instanceof Error ? err.message : String(err);
      },
    ).finally(() => {
      clearInterval(pace);
      this.passSeconds = (performance.now() - started) / 1000;
    });
    return this.pass;
  }

  /** What the seek index holds (for --debug and the bench), or null before startIndex(). */
  get indexStats(): { points: number; bytes: number; done: boolean; seconds: number; native: boolean } | null {
    return this.pass ? { points: this.seek.count, bytes: this.seek.bytes, done: this.seek.done, seconds: this.passSeconds, native: this.seek.nativeHandle !== null } : null;
  }

  /**
   * Whether a read of block k, which the pass has not reached, should wait for it rather than
   * decode the whole block (tracing its history back): when the pass, at its measured pace,
   * reaches k sooner than a whole block's measured decode takes, or within PASS_WAIT_MS.
   */
  private waitForPass(k: number): boolean {
    if (!this.seek.running || this.decoder.holds(k)) return false;
    const ahead = k - this.seek.indexed + 1;
    return ahead * this.passMsPerBlock <= Math.max(this.decodeMs, PASS_WAIT_MS);
  }

  /** The container file beneath: the native read path reads it itself when it is a local file as it is. */
  get container(): Source {
    return this.inner;
  }

  override close(): void {
    this.seek.stop();
    super.close();
  }

  /** Stream bytes [pos, pos + n) of block k into buf at `at`: raw blocks read in place, others through the index when it has reached them. */
  private async readSpan(k: number, within: number, n: number, buf: Buffer, at: number): Promise<void> {
    const b = this.blocks[k] as BlockEntry;
    if (b.raw) {
      if ((await this.inner.read(buf, at, n, b.dataOffset + within)) < n) throw this.fail(`block ${k} is cut short`);
      return;
    }
    if (!this.seek.covers(k) && this.waitForPass(k)) await this.seek.reached(k);
    if (this.seek.covers(k)) {
      try {
        await this.seek.read(k, b.start + within, n, buf, at, async (offset, length) => {
          droppedGarbage(length);
          const raw = Buffer.allocUnsafe(length);
          if ((await this.inner.read(raw, 0, length, b.dataOffset + offset)) < length) throw this.fail(`block ${k} is cut short`);
          return raw;
        });
      } catch (err) {
        if (!(err instanceof FastLzError)) throw err;
        throw this.fail(`block ${k} (stream bytes ${b.start}-${b.start + b.size}) is damaged: ${err.message}`);
      }
      return;
    }
    const t0 = performance.now();
    const held = this.decoder.holds(k);
    await this.decoder.withBlockAsync(k, (block) => block.copy(buf, at, within, within + n));
    if (!held) this.decodeMs = 0.7 * this.decodeMs + 0.3 * (performance.now() - t0);
  }

  /** readSpan, synchronously (the page cache reads a source that reads in place this way). */
  private readSpanSync(k: number, within: number, n: number, buf: Buffer, at: number): void {
    const b = this.blocks[k] as BlockEntry;
    const stored = (offset: number, length: number, into?: Buffer, intoAt = 0): Buffer => {
      // Stored bytes between two seek points (tens of KiB), garbage once decoded: collected young
      // (src/io/garbage.ts), they do not pile up in the allocator's heap between the chunks kept.
      if (!into) droppedGarbage(length);
      const dst = into ?? Buffer.allocUnsafe(length);
      if (this.inner.readAtSync(dst.subarray(intoAt, intoAt + length), b.dataOffset + offset) < length) throw this.fail(`block ${k} is cut short`);
      return dst;
    };
    if (b.raw) {
      stored(within, n, buf, at);
    } else if (this.seek.covers(k)) {
      try {
        this.seek.readSync(k, b.start + within, n, buf, at, stored);
      } catch (err) {
        if (!(err instanceof FastLzError)) throw err;
        throw this.fail(`block ${k} (stream bytes ${b.start}-${b.start + b.size}) is damaged: ${err.message}`);
      }
    } else {
      this.decoder.blockSync(k).copy(buf, at, within, within + n);
    }
  }

  /**
   * Start the seek index's pass when the stream is first read rather than now (a VM folder's
   * checkpoints, of which a reader may open one or two); `started` gets the pass.
   */
  indexOnFirstRead(started: (pass: Promise<void>) => void): void {
    this.firstRead = () => {
      this.firstRead = null;
      started(this.startIndex());
    };
  }

  readAtSync(buf: Buffer, position: number): number {
    this.firstRead?.();
    let done = 0;
    for (const s of this.spans(position, buf.length)) {
      this.readSpanSync(s.k, s.within, s.n, buf, s.at);
      done += s.n;
    }
    return done;
  }

  async read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    this.firstRead?.();
    let done = 0;
    for (const s of this.spans(position, length)) {
      await this.readSpan(s.k, s.within, s.n, buf, offset + s.at);
      done += s.n;
    }
    return done;
  }
}
