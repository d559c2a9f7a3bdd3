import { LRUCache } from 'lru-cache';

/**
 * One memory budget (--cache-size) for every cache of a mount: the page cache's chunks and the
 * decoding layers' decoded blocks, tails, decrypted pages and scratch buffers. What a mount holds
 * between reads is then bounded by the one figure the user set, however many layers are stacked
 * and however many checkpoints share it. Eviction is least recently used across every cache, so
 * the memory goes to whatever is being read.
 *
 * Each cache takes a space of it (its own keys) and knows nothing of the others: a page cache
 * does not learn that a source below it decodes blocks, nor a decoding layer who reads it.
 */
export class CacheBudget {
  /**
   * Every entry, in one LRU order. Its own bound is the budget, but it never has to apply it:
   * evict() makes room first, counting the buffers still being filled, which it does not know.
   * dispose keeps the count, whatever removes an entry.
   */
  private readonly entries: LRUCache<number, Entry>;
  private heldBytes = 0;
  private peakBytes = 0;
  private lastSpace = 0;
  /** The allocations alloc() made: only those are ever handed out again (never a pooled slab). */
  private readonly own = new WeakSet<object>();
  /**
   * Buffers alloc() handed out that are not entries yet (being filled: a read on the thread
   * pool, a block being decoded), with their size. They count as held from alloc() on, so that
   * what else is stored meanwhile cannot take their room: the set() that ends a fill then
   * evicts nothing, and every eviction happens in alloc(), where a buffer evicted can be reused.
   */
  private readonly pending = new Map<object, number>();

  /** Buffers handed out by alloc(): reused from an evicted entry, or fresh (for --debug). */
  readonly stats = { reused: 0, fresh: 0, freshBytes: 0 };

  constructor(readonly maxBytes: number) {
    this.entries = new LRUCache<number, Entry>({
      maxSize: Math.max(1, maxBytes),
      sizeCalculation: (e) => Math.max(1, e.bytes),
      dispose: (e) => {
        this.heldBytes -= e.bytes;
        e.space.bytes -= e.bytes;
      },
    });
  }

  /**
   * A new space. With a `pool`, evicted buffers of the space are handed to the next alloc() of
   * the same pool and size instead of being left to the garbage collector: a fresh multi-MiB
   * buffer costs page faults on first touch, and garbage counts in the daemon's RSS until
   * collected. Only a cache whose users copy out of a buffer at once, never holding one across a
   * wait, may name a pool.
   */
  space(pool: string | null = null): CacheSpace {
    return new CacheSpace(this, ++this.lastSpace, pool);
  }

  /** Bytes held now, in every space. */
  get held(): number {
    return this.heldBytes;
  }

  /** The most ever held at once (for --debug and the tests: never above maxBytes). */
  get peak(): number {
    return this.peakBytes;
  }

  /** @internal */
  get(key: number): Buffer | undefined {
    return this.entries.get(key)?.buf;
  }

  /** @internal */
  peek(key: number): Buffer | undefined {
    return this.entries.peek(key)?.buf;
  }

  /** @internal Store `buf` (false when it alone exceeds the budget: it is then not kept). */
  set(key: number, buf: Buffer, space: CacheSpace): boolean {
    this.delete(key);
    const bytes = heldBy(buf);
    // A buffer from alloc() already has its room: it only changes from pending to entry.
    const reserved = this.pending.get(buf.buffer);
    if (reserved !== undefined) {
      this.pending.delete(buf.buffer);
      this.heldBytes -= reserved;
    }
    if (bytes > this.maxBytes) return false;
    this.evict(bytes, null);
    this.heldBytes += bytes;
    this.entries.set(key, { buf, bytes, space });
    space.bytes += bytes;
    this.notePeak();
    return true;
  }

  /** @internal A buffer from alloc() that will not be stored after all (a failed fill): its room is given back. */
  discard(buf: Buffer): void {
    const reserved = this.pending.get(buf.buffer);
    if (reserved === undefined) return;
    this.pending.delete(buf.buffer);
    this.heldBytes -= reserved;
  }

  private notePeak(): void {
    if (this.heldBytes > this.peakBytes) this.peakBytes = this.heldBytes;
  }

  /** @internal */
  delete(key: number): void {
    this.entries.delete(key);
  }

  /**
   * @internal A buffer of `n` bytes for a new entry of `pool`, counted as held from now until it
   * is set (or discarded): room is made for it here, and an evicted buffer of the pool and size
   * is reused. Larger than the whole budget, it is neither reserved nor ever kept.
   */
  alloc(n: number, pool: string | null): Buffer {
    const fits = n <= this.maxBytes;
    let buf = fits ? this.evict(n, pool === null ? null : { pool, n }) : null;
    if (buf) {
      this.stats.reused++;
    } else {
      this.stats.fresh++;
      this.stats.freshBytes += n;
      buf = Buffer.allocUnsafeSlow(n);
      this.own.add(buf.buffer);
    }
    if (fits) {
      this.pending.set(buf.buffer, n);
      this.heldBytes += n;
      this.notePeak();
    }
    return buf;
  }

  /**
   * Evict until `bytes` more fit, least recently used first, and return a buffer to reuse if one
   * is wanted. An entry of the wanted pool and size goes first when one lies among the
   * SCAN_FOR_REUSE least recently used: strict LRU would often evict a 4 MiB block to make room
   * for a 72 KiB tail, leaving the block's buffer to the garbage collector and the next block a
   * fresh one; this way a block's room comes from a block, a tail's from a tail.
   */
  private evict(bytes: number, want: { pool: string; n: number } | null): Buffer | null {
    if (this.heldBytes + bytes <= this.maxBytes) return null;
    let reused: Buffer | null = null;
    if (want !== null) {
      let scanned = 0;
      for (const key of this.entries.rkeys()) {
        if (++scanned > SCAN_FOR_REUSE) break;
        const e = this.entries.peek(key);
        if (e && this.reusable(e, want)) {
          // A cached view (a decoded block after its window) gives back its whole allocation.
          reused = Buffer.from(e.buf.buffer, 0, want.n);
          this.delete(key);
          break;
        }
      }
    }
    while (this.heldBytes + bytes > this.maxBytes && this.entries.size > 0) this.entries.pop();
    return reused;
  }

  private reusable(e: Entry, want: { pool: string; n: number }): boolean {
    return e.space.pool === want.pool && e.buf.buffer.byteLength === want.n && this.own.has(e.buf.buffer);
  }
}

/** Entries looked at, from the least recently used, for one of the size wanted (see evict()). */
const SCAN_FOR_REUSE = 64;

interface Entry {
  buf: Buffer;
  bytes: number;
  space: CacheSpace;
}

/** The memory a buffer keeps alive: all of the allocation it is a view of. */
function heldBy(buf: Buffer): number {
  return Math.max(buf.buffer.byteLength, buf.length);
}

/** One cache's share of a budget: its own keys (integers below 2^32), the budget's one LRU order. */
export class CacheSpace {
  /** Bytes this space holds now. */
  bytes = 0;

  constructor(private readonly budget: CacheBudget, private readonly id: number, readonly pool: string | null) {}

  /**
   * The budget's key of entry k, or null for a k outside this space's 2^32 keys (a page number of
   * an absurdly large file): such an entry is never kept, so it can never be another space's.
   */
  private key(k: number): number | null {
    return Number.isInteger(k) && k >= 0 && k < 0x1_0000_0000 ? this.id * 0x1_0000_0000 + k : null;
  }

  /** The entry, now the most recently used. */
  get(k: number): Buffer | undefined {
    const key = this.key(k);
    return key === null ? undefined : this.budget.get(key);
  }

  /** The entry, its place in the LRU order unchanged. */
  peek(k: number): Buffer | undefined {
    const key = this.key(k);
    return key === null ? undefined : this.budget.peek(key);
  }

  has(k: number): boolean {
    return this.peek(k) !== undefined;
  }

  /** Keep `buf` as entry k, evicting what must go; false when it is not kept (larger than the whole budget, or k out of range). */
  set(k: number, buf: Buffer): boolean {
    const key = this.key(k);
    if (key === null) {
      this.budget.discard(buf);
      return false;
    }
    return this.budget.set(key, buf, this);
  }

  /**
   * A buffer of n bytes for an entry about to be set (reused from this space's pool when one was
   * evicted), counted in the budget from now on: set() it, or discard() it if the fill failed.
   */
  alloc(n: number): Buffer {
    return this.budget.alloc(n, this.pool);
  }

  /** Give back the room of a buffer from alloc() that will not be set. */
  discard(buf: Buffer): void {
    this.budget.discard(buf);
  }

  get maxBytes(): number {
    return this.budget.maxBytes;
  }
}
