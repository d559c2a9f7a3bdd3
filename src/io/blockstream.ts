import { LRUCache } from 'lru-cache';
import { DecodingLayer } from './layer';
import { FastLzError, MAX_DISTANCE, NEEDS_HISTORY, TokenIndex, fastLzDecode } from './fastlz';
import { type DamagedRange, type Source } from './source';

/** VMware's block: 4 MiB of memory, the last one of a file shorter. */
const MAX_BLOCK = 0x400000;
const HEADER = 16;
/** Decoded blocks kept (4 MiB each): the block a reader is in, and a few it may come back to. */
const DEFAULT_CACHED_BLOCKS = 4;
/** Tails of decoded blocks kept as starting points (72 KiB each; 256 cover 1 GiB of memory). */
const DEFAULT_CACHED_TAILS = 512;
/** Positions traced back for one block at most (a few MiB of bookkeeping); past it, decode forward. */
const MAX_TRACED = 256 * 1024;

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
export class BlockStreamSource extends DecodingLayer implements Source {
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

  constructor(inner: Source, opts: { cachedBlocks?: number; cachedTails?: number } = {}) {
    super(inner);
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
   * Decode block k, asking for stored bytes by yielding block numbers. The history it needs is
   * its predecessor's tail when held; else only the history bytes it actually uses are worked
   * out (reconstructHistory), so a first read deep in the stream costs a few blocks, not the
   * stream up to there.
   */
  private *plan(k: number): Generator<RawRequest, Buffer, Buffer> {
    const hit = this.decoded.get(k);
    if (hit) return hit;
    const why = this.broken.get(k);
    if (why) throw this.fail(why);
    const b = this.blocks[k] as BlockEntry;
    const raw = yield k;
    let history: Buffer | null = null;
    let partial = false;
    if (k > 0) {
      // A raw block needs no history, but with its predecessor's it leaves a whole window.
      history = this.tails.get(k - 1) ?? null;
      if (!history && !b.raw) {
        history = yield* this.reconstructHistory(k, raw);
        partial = history !== null;
        // Tracing the bytes back would cost more than decoding forward from the nearest block
        // whose tail is held (or the start): do that, leaving every tail on the way.
        if (!history) history = yield* this.decodeForward(k);
      }
    }
    const out = this.decodeOne(k, raw, history, partial);
    if (!out) throw this.fail(this.broken.get(k) ?? `block ${k} cannot be decoded`);
    this.decoded.set(k, out);
    return out;
  }

  /**
   * The stream's last min(MAX_DISTANCE, start) bytes before block k, correct at every position
   * block k copies from (the rest is left zero: nothing reads it). LZ matches copy bytes
   * unchanged, so each byte block k copies from before it is, in the end, a literal of some
   * earlier block: its origin is followed through the blocks' token indexes (no decoding) until
   * it is a byte a block wrote itself, or lies in a tail or block held.
   */
  private *reconstructHistory(k: number, raw: Buffer): Generator<RawRequest, Buffer | null, Buffer> {
    const kStart = (this.blocks[k] as BlockEntry).start;
    // Tracing through a block costs a pass over its stored bytes; decoding forward costs a
    // decode of each block from the nearest tail held.
    let from = k - 1;
    while (from >= 0 && !this.tails.has(from)) from--;
    const forwardCost = kStart - (from < 0 ? 0 : (this.blocks[from] as BlockEntry).start + (this.blocks[from] as BlockEntry).size);
    let spent = (this.blocks[k] as BlockEntry).stored;
    const len = Math.min(MAX_DISTANCE, kStart);
    const base = kStart - len;
    /** Stream position → its byte, or the earlier stream position it is a copy of. */
    const value = new Map<number, number>();
    const copyOf = new Map<number, number>();
    let wanted = this.historySources(k, raw, null);
    while (wanted.length > 0) {
      const top = wanted[wanted.length - 1] as number;
      const j = this.blockAt(top);
      const bj = this.blocks[j] as BlockEntry;
      const inBlock = wanted.filter((p) => p >= bj.start);
      wanted = wanted.filter((p) => p < bj.start);
      const tail = this.tails.get(j);
      const held = this.decoded.get(j);
      const tailStart = bj.start + bj.size - (tail?.length ?? 0);
      if (held) {
        for (const p of inBlock) value.set(p, held[p - bj.start] as number);
        continue;
      }
      if (tail && inBlock.every((p) => p >= tailStart)) {
        for (const p of inBlock) value.set(p, tail[p - tailStart] as number);
        continue;
      }
      spent += bj.stored;
      // Past either bound, decoding forward is cheaper, or the bookkeeping would grow too large.
      if (spent > forwardCost || value.size + copyOf.size > MAX_TRACED) return null;
      const more = this.historySources(j, yield j, inBlock, value, copyOf);
      wanted = mergeSorted(wanted, more);
    }
    // Copies point to earlier positions, resolved first when walking up.
    const history = Buffer.alloc(len);
    const positions = [...new Set([...value.keys(), ...copyOf.keys()])].sort((a, b) => a - b);
    for (const p of positions) {
      if (!value.has(p)) value.set(p, value.get(copyOf.get(p) as number) as number);
      if (p >= base) history[p - base] = value.get(p) as number;
    }
    return history;
  }

  /** Decode the blocks before k from the nearest held tail (or the start); returns k's history. */
  private *decodeForward(k: number): Generator<RawRequest, Buffer, Buffer> {
    let j = k - 1;
    while (j >= 0 && !this.tails.has(j)) j--;
    for (let i = j + 1; i < k; i++) {
      const why = this.broken.get(i);
      if (why) throw this.fail(`block ${k} depends on block ${i}, which cannot be decoded: ${why}`);
      const out = this.decodeOne(i, yield i, i === 0 ? null : (this.tails.get(i - 1) as Buffer));
      if (!out) throw this.fail(`block ${k} depends on block ${i}, which cannot be decoded: ${this.broken.get(i) ?? 'damaged'}`);
    }
    return this.tails.get(k - 1) as Buffer;
  }

  /**
   * Where block j's bytes come from, from its token index (no decoding). With `query` null:
   * the stream positions before the block that its matches copy. With a query: each queried
   * position's byte when the block made it itself (into `value`), else the earlier position it
   * copies (into `copyOf`); returns those earlier positions. Ascending either way.
   */
  private historySources(j: number, raw: Buffer, query: number[] | null, value?: Map<number, number>, copyOf?: Map<number, number>): number[] {
    const b = this.blocks[j] as BlockEntry;
    if (b.raw) {
      if (query) for (const p of query) value?.set(p, raw[p - b.start] as number);
      return [];
    }
    let index: TokenIndex;
    try {
      index = new TokenIndex(raw, b.size);
    } catch (err) {
      if (!(err instanceof FastLzError)) throw err;
      const why = `block ${j} (stream bytes ${b.start}-${b.start + b.size}) is damaged: ${err.message}`;
      this.broken.set(j, why);
      throw this.fail(why);
    }
    const found: number[] = [];
    if (query === null) {
      for (const off of index.historyReads()) found.push(b.start + off);
    } else {
      const seen = new Set<number>();
      for (const p of query) {
        const o = index.origin(p - b.start);
        if ('value' in o) {
          value?.set(p, o.value);
        } else {
          const src = b.start + o.before;
          copyOf?.set(p, src);
          if (!seen.has(src)) {
            seen.add(src);
            found.push(src);
          }
        }
      }
      found.sort((x, y) => x - y);
    }
    if (found.length > 0 && (found[0] as number) < 0) {
      const why = `block ${j} (stream bytes ${b.start}-${b.start + b.size}) references bytes before the start of the stream`;
      this.broken.set(j, why);
      throw this.fail(why);
    }
    return found;
  }

  /**
   * Decode block i over `history` (the stream's last bytes before it) or none. Returns null when
   * it cannot be decoded (and records why). A `partial` history is correct only where the block
   * reads it: the block's own output is exact, but a tail including such history is not kept.
   */
  private decodeOne(i: number, raw: Buffer, history: Buffer | null, partial = false): Buffer | null {
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
          this.broken.set(i, `block ${i} (stream bytes ${b.start}-${b.start + b.size}) references bytes before ${i === 0 || b.start <= h.length ? 'the start of the stream' : 'the window it can reach'}`);
          return null;
        }
      } catch (err) {
        if (!(err instanceof FastLzError)) throw err;
        this.broken.set(i, `block ${i} (stream bytes ${b.start}-${b.start + b.size}) is damaged: ${err.message}`);
        return null;
      }
      out = buf.subarray(h.length);
    }
    // The window the next block may reach: the stream's last MAX_DISTANCE bytes so far, which
    // for short blocks spans several.
    if (out.length >= MAX_DISTANCE) {
      this.tails.set(i, Buffer.from(out.subarray(out.length - MAX_DISTANCE)));
    } else if (!partial && (history || i === 0 || b.raw)) {
      const prev = history ?? Buffer.alloc(0);
      if (b.raw && i > 0 && !history) return out;
      const keep = prev.subarray(Math.max(0, prev.length - (MAX_DISTANCE - out.length)));
      this.tails.set(i, Buffer.concat([keep, out]));
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

  /**
   * The blocks a read of [position, position + length) touches, each with the stretch of it
   * wanted: `within` bytes into the block, `n` bytes long, `at` bytes into the read.
   */
  private *spans(position: number, length: number): Generator<{ k: number; within: number; n: number; at: number }> {
    const end = Math.min(position + length, this.size);
    if (end <= position) return;
    this.checkRange(position, end);
    for (let pos = position; pos < end;) {
      const k = this.blockAt(pos);
      const b = this.blocks[k] as BlockEntry;
      const n = Math.min(b.start + b.size, end) - pos;
      yield { k, within: pos - b.start, n, at: pos - position };
      pos += n;
    }
  }

  readAtSync(buf: Buffer, position: number): number {
    let done = 0;
    for (const s of this.spans(position, buf.length)) {
      this.blockSync(s.k).copy(buf, s.at, s.within, s.within + s.n);
      done += s.n;
    }
    return done;
  }

  async read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    let done = 0;
    for (const s of this.spans(position, length)) {
      const block = this.decoded.get(s.k) ?? (await this.blockAsync(s.k));
      block.copy(buf, offset + s.at, s.within, s.within + s.n);
      done += s.n;
    }
    return done;
  }
}

/** Two ascending arrays merged, duplicates dropped. */
function mergeSorted(a: number[], b: number[]): number[] {
  const out: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const x = j >= b.length || (i < a.length && (a[i] as number) <= (b[j] as number)) ? (a[i++] as number) : (b[j++] as number);
    if (out[out.length - 1] !== x) out.push(x);
  }
  return out;
}
