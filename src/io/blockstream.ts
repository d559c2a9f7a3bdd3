import { LRUCache } from 'lru-cache';
import { FastLzError, MAX_DISTANCE, NEEDS_HISTORY, fastLzDecode } from './fastlz';
import { nextSourceId, type DamagedRange, type Source } from './source';

/** VMware's block: 4 MiB of memory, the last one of a file shorter. */
const MAX_BLOCK = 0x400000;
const HEADER = 16;
/** Decoded blocks kept (4 MiB each): the block a reader is in, and a few it may come back to. */
const DEFAULT_CACHED_BLOCKS = 4;
/** Tails of decoded blocks kept as starting points (72 KiB each; 256 cover 1 GiB of memory). */
const DEFAULT_CACHED_TAILS = 512;

export interface BlockEntry {
  /** Offset of the block's payload in the container. */
  dataOffset: number;
  /** Stored bytes after the header. */
  stored: number;
  /** Offset of the block's output in the decompressed stream. */
  start: number;
  size: number;
  /** Stored uncompressed (stored size = size). */
  raw: boolean;
}

/** A header that fits the container's rules, or null. */
function readHeader(h: Buffer): { size: number; stored: number } | null {
  if (h.length < HEADER) return null;
  const size = h.readUInt32LE(0);
  const stored = h.readUInt32LE(8);
  if (h.readUInt32LE(4) !== 0 || h.readUInt32LE(12) !== 0) return null;
  if (size === 0 || size > MAX_BLOCK || stored === 0 || stored > size) return null;
  return { size, stored };
}

/**
 * Whether `src` holds VMware's compressed block container: a first header that fits (and whose
 * payload opens as a FastLZ level-2 block, unless stored raw) and, when the file goes on, a
 * second one that fits too. Flat memory fails this at once: its first word is not a block size.
 */
export function looksLikeBlockStream(src: { readAtSync(buf: Buffer, position: number): number; size: number }): boolean {
  const h = Buffer.alloc(HEADER + 1);
  const got = src.readAtSync(h, 0);
  const first = readHeader(h.subarray(0, got));
  if (!first || HEADER + first.stored > src.size) return false;
  if (first.stored < first.size && (h[HEADER] as number) >> 5 > 1) return false;
  const next = HEADER + first.stored;
  if (next === src.size) return true;
  const h2 = Buffer.alloc(HEADER);
  return readHeader(h2.subarray(0, src.readAtSync(h2, next))) !== null;
}

/** Yielded by a decoding plan: "give me block k's stored bytes". */
type RawRequest = number;

/**
 * The decompressed stream of a compressed memory file. Opening reads only the 16-byte headers
 * (one per 4 MiB block) to index where each block lies in both the file and the stream. A read
 * decodes the blocks it touches. Because a block's matches may reach up to 72 KiB into the
 * previous block's output, each decoded block leaves its tail behind; a block is decoded from
 * the tail of its predecessor when held, else by first trying it alone (a block that never
 * reaches back decodes by itself) and otherwise walking back to the nearest block that can start
 * the chain, then decoding forward.
 */
export class BlockStreamSource implements Source {
  readonly id = nextSourceId();
  readonly plain = false;
  readonly readsInPlace = false;
  readonly blocks: BlockEntry[] = [];
  readonly damaged: DamagedRange[] = [];
  /** Bytes of the stream its intact chain of headers describes. */
  readonly decodedSize: number;
  /** Bytes of the container the indexed blocks occupy (headers included). */
  readonly storedSize: number;
  size: number;
  private readonly decoded: LRUCache<number, Buffer>;
  private readonly tails: LRUCache<number, Buffer>;
  /** Blocks that failed to decode, with why. */
  private readonly broken = new Map<number, string>();
  private readonly inflight = new Map<number, Promise<Buffer>>();

  constructor(private readonly inner: Source, opts: { cachedBlocks?: number; cachedTails?: number } = {}) {
    this.decoded = new LRUCache({ max: opts.cachedBlocks ?? DEFAULT_CACHED_BLOCKS });
    this.tails = new LRUCache({ max: opts.cachedTails ?? DEFAULT_CACHED_TAILS });
    const h = Buffer.alloc(HEADER);
    let pos = 0;
    let start = 0;
    let why: string | null = null;
    // Each header is checked before it is believed, and each step moves forward by at least
    // 17 bytes: the walk ends within size / 17 steps whatever the headers claim.
    while (pos < inner.size) {
      const got = inner.readAtSync(h, pos);
      const e = readHeader(h.subarray(0, got));
      if (!e) {
        why = got < HEADER ? `its block header at byte ${pos} is cut short` : `its block header at byte ${pos} is not a valid one`;
        break;
      }
      if (pos + HEADER + e.stored > inner.size) {
        why = `block ${this.blocks.length} (stored at byte ${pos}) runs past the end of the file`;
        break;
      }
      this.blocks.push({ dataOffset: pos + HEADER, stored: e.stored, start, size: e.size, raw: e.stored === e.size });
      start += e.size;
      pos += HEADER + e.stored;
    }
    this.decodedSize = start;
    this.storedSize = pos;
    this.size = start;
    if (why !== null) {
      // What follows cannot be located: the stream ends here, and memory the run map places
      // beyond it is reported by coverDamaged().
      this.damaged.push({ start, end: start, why: `${why}; the stream is decodable only up to byte ${start}` });
    }
  }

  get name(): string {
    return this.inner.name;
  }

  get mtime(): Date {
    return this.inner.mtime;
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

  private blockAt(position: number): number {
    let lo = 0;
    let hi = this.blocks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.blocks[mid] as BlockEntry).start <= position) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  private fail(message: string): Error {
    const e = new Error(`${this.name}: ${message}`) as NodeJS.ErrnoException;
    e.code = 'EIO';
    return e;
  }

  /**
   * Decode block k, asking for stored bytes by yielding block numbers. Every decoded block's
   * tail is kept; block k itself is kept whole.
   */
  private *plan(k: number): Generator<RawRequest, Buffer, Buffer> {
    const hit = this.decoded.get(k);
    if (hit) return hit;
    // Walk back to a block that can start: the first block, one whose predecessor's tail is
    // held, or one that decodes alone.
    let j = k;
    let first: Buffer | null = null;
    for (;;) {
      const why = this.broken.get(j);
      if (why) throw this.fail(j === k ? why : `block ${k} depends on block ${j}, which cannot be decoded: ${why}`);
      if (j === 0 || this.tails.has(j - 1)) break;
      const raw = yield j;
      const out = this.decodeOne(j, raw, null);
      // Decoded alone, it can start the chain only if it leaves a whole window behind.
      if (out && this.tails.has(j)) {
        first = out;
        break;
      }
      if (out && j === k) {
        this.decoded.set(k, out);
        return out;
      }
      j--;
    }
    let out = first ?? this.decodeOne(j, yield j, j === 0 ? null : (this.tails.get(j - 1) as Buffer));
    if (!out) throw this.fail(this.broken.get(j) ?? `block ${j} cannot be decoded`);
    for (let i = j + 1; i <= k; i++) {
      const tail = this.tails.get(i - 1) as Buffer;
      out = this.decodeOne(i, yield i, tail);
      if (!out) throw this.fail(this.broken.get(i) ?? `block ${i} cannot be decoded`);
    }
    this.decoded.set(k, out);
    return out;
  }

  /**
   * Decode block i with `history` (its predecessor's tail) or none. Returns null when it needs
   * history it was not given (and records a damaged block as broken).
   */
  private decodeOne(i: number, raw: Buffer, history: Buffer | null): Buffer | null {
    const b = this.blocks[i] as BlockEntry;
    let out: Buffer;
    if (b.raw) {
      out = raw;
    } else {
      const h = history ?? Buffer.alloc(0);
      const buf = Buffer.allocUnsafe(h.length + b.size);
      h.copy(buf, 0);
      try {
        const r = fastLzDecode(raw, buf, h.length, buf.length, 0);
        if (r === NEEDS_HISTORY) {
          if (history || i === 0) {
            // Given all the history there is and still reaching before it: damage.
            const why = `block ${i} (stream bytes ${b.start}-${b.start + b.size}) references bytes before ${i === 0 ? 'the start of the stream' : 'the window it can reach'}`;
            this.broken.set(i, why);
          }
          return null;
        }
      } catch (err) {
        if (!(err instanceof FastLzError)) throw err;
        this.broken.set(i, `block ${i} (stream bytes ${b.start}-${b.start + b.size}) is damaged: ${err.message}`);
        return null;
      }
      out = buf.subarray(h.length);
    }
    // The window the next block may reach: the last MAX_DISTANCE bytes of the stream so far,
    // which for short blocks spans several. Decoded alone, a block shorter than the window
    // leaves no whole window (what came before it is unknown), so it leaves no tail.
    const prev = history ?? (i === 0 ? Buffer.alloc(0) : null);
    if (prev) {
      const need = Math.max(0, MAX_DISTANCE - out.length);
      const keep = prev.subarray(Math.max(0, prev.length - need));
      this.tails.set(i, Buffer.concat([keep, out.subarray(Math.max(0, out.length - MAX_DISTANCE))]));
    } else if (out.length >= MAX_DISTANCE) {
      this.tails.set(i, Buffer.from(out.subarray(out.length - MAX_DISTANCE)));
    }
    return out;
  }

  private rawSync(i: number): Buffer {
    const b = this.blocks[i] as BlockEntry;
    const raw = Buffer.allocUnsafe(b.stored);
    if (this.inner.readAtSync(raw, b.dataOffset) < b.stored) throw this.fail(`block ${i} is cut short`);
    return raw;
  }

  private async rawAsync(i: number): Promise<Buffer> {
    const b = this.blocks[i] as BlockEntry;
    const raw = Buffer.allocUnsafe(b.stored);
    if ((await this.inner.read(raw, 0, b.stored, b.dataOffset)) < b.stored) throw this.fail(`block ${i} is cut short`);
    return raw;
  }

  private blockSync(k: number): Buffer {
    const g = this.plan(k);
    let step = g.next();
    while (!step.done) step = g.next(this.rawSync(step.value));
    return step.value;
  }

  private blockAsync(k: number): Promise<Buffer> {
    const running = this.inflight.get(k);
    if (running) return running;
    const p = (async () => {
      const g = this.plan(k);
      let step = g.next();
      while (!step.done) step = g.next(await this.rawAsync(step.value));
      return step.value;
    })();
    this.inflight.set(k, p);
    const clear = (): void => void this.inflight.delete(k);
    p.then(clear, clear);
    return p;
  }

  private checkRange(position: number, end: number): void {
    if (end > this.decodedSize) {
      const d = this.damaged[this.damaged.length - 1];
      throw this.fail(`stream bytes ${Math.max(position, this.decodedSize)}-${end} cannot be decoded: ${d?.why ?? 'past the end'}`);
    }
  }

  readAtSync(buf: Buffer, position: number): number {
    const end = Math.min(position + buf.length, this.size);
    if (end <= position) return 0;
    this.checkRange(position, end);
    let done = 0;
    for (let pos = position; pos < end;) {
      const k = this.blockAt(pos);
      const b = this.blocks[k] as BlockEntry;
      const n = Math.min(b.start + b.size, end) - pos;
      this.blockSync(k).copy(buf, done, pos - b.start, pos - b.start + n);
      done += n;
      pos += n;
    }
    return done;
  }

  async read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    const end = Math.min(position + length, this.size);
    if (end <= position) return 0;
    this.checkRange(position, end);
    let done = 0;
    for (let pos = position; pos < end;) {
      const k = this.blockAt(pos);
      const b = this.blocks[k] as BlockEntry;
      const n = Math.min(b.start + b.size, end) - pos;
      const block = this.decoded.get(k) ?? (await this.blockAsync(k));
      block.copy(buf, offset + done, pos - b.start, pos - b.start + n);
      done += n;
      pos += n;
    }
    return done;
  }

  close(): void {
    this.inner.close();
  }
}
