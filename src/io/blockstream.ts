import { CacheBudget, type CacheSpace } from '../cache/budget';
import { DecodingLayer } from './layer';
import { FastLzError, MAX_DISTANCE, NEEDS_HISTORY, TokenIndex, fastLzDecode } from './fastlz';
import { type DamagedRange, type Source } from './source';

/** VMware's block: 4 MiB of memory, the last one of a file shorter. */
const MAX_BLOCK = 0x400000;
const HEADER = 16;
/** The budget of a stream opened on its own, without the mount's (tests, tools): 8 blocks. */
const DEFAULT_BUDGET = 32 * 1024 * 1024;
/** Scratch sizes are rounded up to this, so that one buffer serves blocks of every stored size. */
const SCRATCH_STEP = 256 * 1024;
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
  /**
   * Decoded blocks, in the mount's budget. Their buffers are reused once evicted (a fresh 4 MiB
   * buffer costs a thousand page faults, and garbage counts in the RSS until collected), so a
   * block is copied out the moment it is found or decoded, never after a wait.
   */
  private readonly decoded: CacheSpace;
  /** Tails of decoded blocks (72 KiB each), kept as starting points; in the budget too, reused as blocks are. */
  private readonly tails: CacheSpace;
  /** Buffers for stored bytes, kept between reads in the budget (never reused by another space). */
  private readonly scratch: CacheSpace;
  /** Blocks that failed to decode, with why. */
  private readonly broken = new Map<number, string>();
  /** Blocks being decoded after reads on the thread pool, with who waits to copy from them. */
  private readonly inflight = new Map<number, { users: Array<(block: Buffer) => void>; done: Promise<void> }>();

  constructor(inner: Source, opts: { budget?: CacheBudget } = {}) {
    super(inner);
    const budget = opts.budget ?? new CacheBudget(DEFAULT_BUDGET);
    this.decoded = budget.space('blockstream-blocks');
    this.tails = budget.space('blockstream-tails');
    this.scratch = budget.space();
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
      history = this.tailOf(k - 1);
      if (!history && !b.raw) {
        history = yield* this.reconstructHistory(k, raw);
        partial = history !== null;
        // Tracing the bytes back would cost more than decoding forward from the nearest block
        // whose tail is held (or the start): do that, leaving every tail on the way.
        if (!history) history = yield* this.decodeForward(k);
      }
    }
    const out = this.decodeOne(k, raw, history, partial, true);
    if (!out) throw this.fail(this.broken.get(k) ?? `block ${k} cannot be decoded`);
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
    while (from >= 0 && !this.hasTail(from)) from--;
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
      const tail = this.tails.peek(j);
      const held = this.decoded.peek(j);
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
    while (j >= 0 && !this.hasTail(j)) j--;
    for (let i = j + 1; i < k; i++) {
      const why = this.broken.get(i);
      if (why) throw this.fail(`block ${k} depends on block ${i}, which cannot be decoded: ${why}`);
      const out = this.decodeOne(i, yield i, i === 0 ? null : this.needTail(i - 1));
      if (!out) throw this.fail(`block ${k} depends on block ${i}, which cannot be decoded: ${this.broken.get(i) ?? 'damaged'}`);
    }
    return this.needTail(k - 1);
  }

  /**
   * Whether the stream's last MAX_DISTANCE bytes up to the end of block j are at hand: its tail,
   * or the block itself when it is that long (its tail may have been evicted before it).
   */
  private hasTail(j: number): boolean {
    return this.tails.has(j) || ((this.blocks[j] as BlockEntry).size >= MAX_DISTANCE && this.decoded.has(j));
  }

  /** Block j's tail if at hand (cut from the block when only the block is held), else null. */
  private tailOf(j: number): Buffer | null {
    const tail = this.tails.get(j);
    if (tail) return tail;
    const held = (this.blocks[j] as BlockEntry).size >= MAX_DISTANCE ? this.decoded.peek(j) : undefined;
    if (!held) return null;
    // A copy: the block's buffer may be reused as soon as something is decoded.
    const cut = this.copyOf(held.subarray(held.length - MAX_DISTANCE));
    this.tails.set(j, cut);
    return cut;
  }

  /** A copy of `bytes` for the tails (reusing an evicted tail's buffer). */
  private copyOf(bytes: Buffer): Buffer {
    const t = this.tails.alloc(bytes.length);
    bytes.copy(t);
    return t;
  }

  private needTail(j: number): Buffer {
    const tail = this.tailOf(j);
    if (!tail) throw this.fail(`the window before block ${j + 1} was lost`);
    return tail;
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
  private decodeOne(i: number, raw: Buffer, history: Buffer | null, partial = false, kept = false): Buffer | null {
    const b = this.blocks[i] as BlockEntry;
    let out: Buffer;
    if (b.raw) {
      // The stored bytes may lie in a scratch buffer: a block kept gets a buffer of its own.
      out = kept ? this.decoded.alloc(b.size) : raw;
      if (kept) raw.copy(out);
    } else {
      const h = history ?? Buffer.alloc(0);
      // A block to be kept is decoded into a buffer of the budget (all 4 MiB blocks with their
      // window take the same size, so an evicted one is reused); one decoded only for its tail,
      // on the way to another, into a buffer of its own that evicts nothing.
      const buf = kept ? this.decoded.alloc(h.length + b.size) : Buffer.allocUnsafe(h.length + b.size);
      h.copy(buf, 0);
      let why: string | null = null;
      try {
        const r = fastLzDecode(raw, buf, h.length, buf.length, 0);
        if (r === NEEDS_HISTORY) why = `block ${i} (stream bytes ${b.start}-${b.start + b.size}) references bytes before ${i === 0 || b.start <= h.length ? 'the start of the stream' : 'the window it can reach'}`;
      } catch (err) {
        if (!(err instanceof FastLzError)) {
          if (kept) this.decoded.discard(buf);
          throw err;
        }
        why = `block ${i} (stream bytes ${b.start}-${b.start + b.size}) is damaged: ${err.message}`;
      }
      if (why !== null) {
        this.broken.set(i, why);
        if (kept) this.decoded.discard(buf);
        return null;
      }
      out = buf.subarray(h.length);
    }
    // Kept before its tail is cut: alloc() made room for exactly this block, and an entry set
    // in between would take that room, making this set evict a buffer alloc() could have reused.
    if (kept) this.decoded.set(i, out);
    // The window the next block may reach: the stream's last MAX_DISTANCE bytes so far, which
    // for short blocks spans several.
    if (out.length >= MAX_DISTANCE) {
      this.tails.set(i, this.copyOf(out.subarray(out.length - MAX_DISTANCE)));
    } else if (!partial && (history || i === 0 || b.raw)) {
      const prev = history ?? Buffer.alloc(0);
      if (b.raw && i > 0 && !history) return out;
      const keep = prev.subarray(Math.max(0, prev.length - (MAX_DISTANCE - out.length)));
      this.tails.set(i, Buffer.concat([keep, out]));
    }
    return out;
  }

  /**
   * Block i's stored bytes, read into scratch buffer `slot`, which stays in the budget (counted)
   * while in use: being of no pool, it is never handed to anyone else, even if evicted meanwhile.
   * A decode asks first for its own block's bytes, which it keeps to the end (slot 0); the blocks
   * it traces or decodes on the way are used one at a time (slot 1).
   */
  private rawSync(i: number, slot: number): Buffer {
    const b = this.blocks[i] as BlockEntry;
    let buf = this.scratch.get(slot);
    if (!buf || buf.length < b.stored) {
      buf = this.scratch.alloc(Math.ceil(b.stored / SCRATCH_STEP) * SCRATCH_STEP);
      this.scratch.set(slot, buf);
    }
    const raw = buf.subarray(0, b.stored);
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
    const hit = this.decoded.get(k);
    if (hit) return hit;
    const g = this.plan(k);
    let step = g.next();
    for (let slot = 0; !step.done; slot = 1) step = g.next(this.rawSync(step.value, slot));
    return step.value;
  }

  /**
   * Hand block k to `use` (which copies out of it at once), decoding it after reads on the
   * thread pool if it is not held. Readers of one block share one decode, and each copies the
   * moment it is done: by the time a promise's continuation ran, the buffer could be reused.
   */
  private withBlockAsync(k: number, use: (block: Buffer) => void): Promise<void> {
    const held = this.decoded.get(k);
    if (held) {
      use(held);
      return Promise.resolve();
    }
    const running = this.inflight.get(k);
    if (running) {
      running.users.push(use);
      return running.done;
    }
    const users = [use];
    const done = (async () => {
      const g = this.plan(k);
      let step = g.next();
      while (!step.done) step = g.next(await this.rawAsync(step.value));
      for (const u of users) u(step.value);
    })();
    this.inflight.set(k, { users, done });
    const clear = (): void => void this.inflight.delete(k);
    done.then(clear, clear);
    return done;
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
      await this.withBlockAsync(s.k, (block) => block.copy(buf, offset + s.at, s.within, s.within + s.n));
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
