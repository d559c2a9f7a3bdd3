import { type CacheBudget, type CacheSpace } from '../cache/budget';
import { lastAtOrBefore } from '../bisect';
import { type BlockEntry } from './container';
import { FastLzError, MAX_DISTANCE, NEEDS_HISTORY, TokenIndex } from './fastlz';
import { decodeBlock } from './native-decoder';
import { DecodeError } from './layer';
import { droppedGarbage } from './garbage';
import { type Source } from './source';

/** Scratch sizes are rounded up to this, so that one buffer serves blocks of every stored size. */
const SCRATCH_STEP = 256 * 1024;
/** Positions traced back for one block at most (a few MiB of bookkeeping); past it, decode forward. */
const MAX_TRACED = 256 * 1024;

/** Yielded by a decoding plan: "give me block k's stored bytes". */
type RawRequest = number;

/**
 * Whole blocks of a compressed stream, decoded on demand: what serves reads before the seek
 * index reaches them (and every synchronous read). Because a block's matches may reach up to
 * 72 KiB into the previous block's output, each decoded block leaves its tail behind; a block is
 * decoded from the tail of its predecessor when held, else by first trying it alone (a block
 * that never reaches back decodes by itself) and otherwise by tracing back the bytes it copies
 * or walking back to the nearest block that can start the chain, then decoding forward.
 */
export class BlockDecoder {
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

  constructor(private readonly inner: Source, private readonly blocks: readonly BlockEntry[], budget: CacheBudget) {
    this.decoded = budget.space('blockstream-blocks');
    this.tails = budget.space('blockstream-tails');
    this.scratch = budget.space();
  }

  private get name(): string {
    return this.inner.name;
  }

  /** The block holding stream byte `position`. */
  blockAt(position: number): number {
    return lastAtOrBefore(this.blocks.length, (i) => (this.blocks[i] as BlockEntry).start, position);
  }

  fail(message: string): Error {
    return new DecodeError(this.name, message);
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
    // The whole window: positions before the stream's start are VMware's zeroed window.
    const len = MAX_DISTANCE;
    const base = kStart - len;
    /** Stream position → its byte, or the earlier stream position it is a copy of. */
    const value = new Map<number, number>();
    const copyOf = new Map<number, number>();
    let wanted = this.historySources(k, raw, null);
    while (wanted.length > 0) {
      const top = wanted[wanted.length - 1] as number;
      if (top < 0) {
        // Ascending: all that is left lies before the stream's start, in the zeroed window.
        for (const p of wanted) value.set(p, 0);
        break;
      }
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

  /**
   * Decode the blocks before k from the nearest held tail (or the start); returns k's history.
   * The window is carried in a buffer of its own from block to block: a cached tail can be
   * evicted, and its buffer reused, while this waits for the next block's stored bytes.
   */
  private *decodeForward(k: number): Generator<RawRequest, Buffer, Buffer> {
    let j = k - 1;
    while (j >= 0 && !this.hasTail(j)) j--;
    let history: Buffer = j < 0 ? Buffer.alloc(MAX_DISTANCE) : Buffer.from(this.tailOf(j) as Buffer);
    for (let i = j + 1; i < k; i++) {
      const why = this.broken.get(i);
      if (why) throw this.fail(`block ${k} depends on block ${i}, which cannot be decoded: ${why}`);
      const out = this.decodeOne(i, yield i, history);
      if (!out) throw this.fail(`block ${k} depends on block ${i}, which cannot be decoded: ${this.broken.get(i) ?? 'damaged'}`);
      history = nextWindow(history, out);
    }
    return history;
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
    return found;
  }

  /**
   * Decode block i over `history` (the stream's last bytes before it) or none. Returns null when
   * it cannot be decoded (and records why). A `partial` history is correct only where the block
   * reads it: the block's own output is exact, but a tail including such history is not kept.
   */
  private decodeOne(i: number, raw: Buffer, history: Buffer | null, partial = false, kept = false): Buffer | null {
    const b = this.blocks[i] as BlockEntry;
    // The window before the block, whole when the history given reaches back to the stream's
    // start (zeros before it) or is MAX_DISTANCE long; else only as long as the history.
    const given = history ?? EMPTY;
    const full = given.length >= MAX_DISTANCE || given.length >= b.start;
    const w = full ? MAX_DISTANCE : given.length;
    let out: Buffer;
    let buf: Buffer;
    if (b.raw) {
      // The stored bytes may lie in a scratch buffer: a block kept gets a buffer of its own.
      out = kept ? this.decoded.alloc(b.size) : raw;
      if (kept) raw.copy(out);
      buf = out;
    } else {
      // A block to be kept is decoded into a buffer of the budget (all 4 MiB blocks with their
      // window take the same size, so an evicted one is reused); one decoded only for its tail,
      // on the way to another, into a buffer of its own that evicts nothing.
      buf = kept ? this.decoded.alloc(w + b.size) : Buffer.allocUnsafe(w + b.size);
      buf.fill(0, 0, w - Math.min(w, given.length));
      given.copy(buf, w - Math.min(w, given.length), Math.max(0, given.length - w));
      let why: string | null = null;
      try {
        const r = decodeBlock(raw, 0, buf, w, buf.length, 0, true);
        if (r === NEEDS_HISTORY) why = `block ${i} (stream bytes ${b.start}-${b.start + b.size}) references bytes before the window it can reach`;
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
      out = buf.subarray(w);
    }
    // Kept before its tail is cut: alloc() made room for exactly this block, and an entry set
    // in between would take that room, making this set evict a buffer alloc() could have reused.
    if (kept) this.decoded.set(i, out);
    // The window the next block may reach: the stream's last MAX_DISTANCE bytes so far, which
    // for short blocks spans several.
    if (out.length >= MAX_DISTANCE) {
      this.tails.set(i, this.copyOf(out.subarray(out.length - MAX_DISTANCE)));
    } else if (!partial && full) {
      this.tails.set(i, this.copyOf(b.raw ? nextWindow(zeroPadded(given), out) : buf.subarray(buf.length - MAX_DISTANCE)));
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

  /** Block i's stored bytes, in `into` when it is large enough (the caller's to reuse), else a new buffer. */
  async rawAsync(i: number, into?: Buffer): Promise<Buffer> {
    const b = this.blocks[i] as BlockEntry;
    // A new buffer (the seek pass keeps it over a decode on the thread pool, with the next block's
    // read ahead) is dropped soon after: without young collections as they pile up, V8 left up to
    // 50 MiB of them until external memory had grown enough for a full one.
    const reuse = into !== undefined && into.length >= b.stored;
    if (!reuse) droppedGarbage(b.stored);
    const raw = reuse ? into.subarray(0, b.stored) : Buffer.allocUnsafe(b.stored);
    if ((await this.inner.read(raw, 0, b.stored, b.dataOffset)) < b.stored) throw this.fail(`block ${i} is cut short`);
    return raw;
  }

  /** Whether block k is held decoded (a read of it costs a copy). */
  holds(k: number): boolean {
    return this.decoded.get(k) !== undefined;
  }

  blockSync(k: number): Buffer {
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
  withBlockAsync(k: number, use: (block: Buffer) => void): Promise<void> {
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
    const entry = { users, done: Promise.resolve() };
    // Leaves the map in the same step as its users copy: a reader that joined after the copies
    // were made would wait on a decode that never hands it the block.
    const leave = (): void => {
      if (this.inflight.get(k) === entry) this.inflight.delete(k);
    };
    this.inflight.set(k, entry);
    entry.done = (async () => {
      try {
        const g = this.plan(k);
        let step = g.next();
        while (!step.done) step = g.next(await this.rawAsync(step.value));
        leave();
        for (const u of users) u(step.value);
      } finally {
        leave();
      }
    })();
    return entry.done;
  }
}

const EMPTY = Buffer.alloc(0);

/** A window that reaches back to the stream's start, with the zeroed window before it: MAX_DISTANCE bytes. */
function zeroPadded(history: Buffer): Buffer {
  if (history.length >= MAX_DISTANCE) return history;
  const w = Buffer.alloc(MAX_DISTANCE);
  history.copy(w, MAX_DISTANCE - history.length);
  return w;
}

/** The stream's last MAX_DISTANCE bytes after `out`, given those before it: a buffer of its own. */
function nextWindow(history: Buffer, out: Buffer): Buffer {
  if (out.length >= MAX_DISTANCE) return Buffer.from(out.subarray(out.length - MAX_DISTANCE));
  return Buffer.concat([history.subarray(history.length - (MAX_DISTANCE - out.length)), out]);
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
