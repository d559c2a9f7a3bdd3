import { LRUCache } from 'lru-cache';

/** What the cache reads from: an evidence file (SourceFile satisfies it). */
export interface ChunkSource {
  /** Small integer, unique per open file: part of the cache key. */
  readonly id: number;
  readonly name: string;
  /** Size when opened. Bytes past it read as zeros (a truncated copy, reported at parse time). */
  readonly size: number;
  read(buf: Buffer, offset: number, length: number, position: number): Promise<number>;
}

/** An underlying read failed (EIO from a bad sector, a vanished share, a file that shrank). */
export class SourceReadError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

export interface PageCacheOptions {
  /** Upper bound on cached bytes. */
  maxBytes: number;
  /** Bytes per chunk: the unit of reading, caching and eviction. */
  chunkSize: number;
  /** Chunks fetched ahead once a reader is seen going forward. */
  prefetch: number;
}

export const DEFAULT_CHUNK_SIZE = 128 * 1024;

/**
 * Fixed-size chunks of the source files in an LRU bounded by bytes. Concurrent misses on one
 * chunk share one read; a reader moving forward gets the next chunks read ahead. Chunks are
 * filled by positional reads on libuv's thread pool, never by loading a whole file.
 */
export class PageCache {
  readonly chunkSize: number;
  private readonly lru: LRUCache<number, Buffer>;
  private readonly inflight = new Map<number, Promise<Buffer>>();
  /** Last chunk each source was asked for, to spot sequential readers. */
  private readonly lastChunk = new Map<number, number>();
  private readonly prefetch: number;
  /** Counters for --debug and the benchmark. */
  readonly stats = { hits: 0, misses: 0, shared: 0, prefetched: 0 };

  constructor(opts: Partial<PageCacheOptions> = {}) {
    this.chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.prefetch = opts.prefetch ?? 4;
    const maxBytes = Math.max(opts.maxBytes ?? 64 * 1024 * 1024, this.chunkSize);
    this.lru = new LRUCache<number, Buffer>({ maxSize: maxBytes, sizeCalculation: (b) => b.length });
  }

  /** Chunk key: source id in the high bits, chunk number below (2^32 chunks per file). */
  private key(src: ChunkSource, chunk: number): number {
    return src.id * 0x1_0000_0000 + chunk;
  }

  /**
   * Copy `length` bytes at `position` of `src` into `dst[dstOffset..]`, assembled from chunks.
   * Rejects with SourceReadError when the source fails.
   */
  async read(src: ChunkSource, position: number, dst: Buffer, dstOffset: number, length: number): Promise<void> {
    if (length <= 0) return;
    const cs = this.chunkSize;
    const first = Math.floor(position / cs);
    const last = Math.floor((position + length - 1) / cs);
    this.notePosition(src, first, last);
    if (first === last) {
      // The common case (a FUSE read inside one chunk): no array, no Promise.all.
      const chunk = await this.chunk(src, first);
      chunk.copy(dst, dstOffset, position - first * cs, position - first * cs + length);
      return;
    }
    const copies: Promise<void>[] = [];
    for (let c = first; c <= last; c++) {
      const from = Math.max(position, c * cs);
      const to = Math.min(position + length, (c + 1) * cs);
      copies.push(this.chunk(src, c).then((chunk) => {
        chunk.copy(dst, dstOffset + (from - position), from - c * cs, to - c * cs);
      }));
    }
    await Promise.all(copies);
  }

  private notePosition(src: ChunkSource, first: number, last: number): void {
    const prev = this.lastChunk.get(src.id);
    this.lastChunk.set(src.id, last);
    if (this.prefetch <= 0 || prev === undefined || (first !== prev && first !== prev + 1)) return;
    const maxChunk = Math.ceil(src.size / this.chunkSize) - 1;
    for (let c = last + 1; c <= Math.min(last + this.prefetch, maxChunk); c++) {
      const k = this.key(src, c);
      if (this.lru.has(k) || this.inflight.has(k)) continue;
      this.stats.prefetched++;
      // A failed read-ahead is not an error anyone asked for: the real read retries and reports it.
      this.load(src, c, k).catch(() => undefined);
    }
  }

  private chunk(src: ChunkSource, c: number): Promise<Buffer> {
    const k = this.key(src, c);
    const hit = this.lru.get(k);
    if (hit) {
      this.stats.hits++;
      return Promise.resolve(hit);
    }
    const pending = this.inflight.get(k);
    if (pending) {
      this.stats.shared++;
      return pending;
    }
    this.stats.misses++;
    return this.load(src, c, k);
  }

  private load(src: ChunkSource, c: number, k: number): Promise<Buffer> {
    const p = this.fill(src, c).then(
      (buf) => {
        this.inflight.delete(k);
        this.lru.set(k, buf);
        return buf;
      },
      (err: unknown) => {
        this.inflight.delete(k);
        throw err;
      },
    );
    this.inflight.set(k, p);
    return p;
  }

  private async fill(src: ChunkSource, c: number): Promise<Buffer> {
    const start = c * this.chunkSize;
    const buf = Buffer.allocUnsafe(this.chunkSize);
    const expected = Math.max(0, Math.min(this.chunkSize, src.size - start));
    let got = 0;
    if (expected > 0) {
      try {
        got = await src.read(buf, 0, expected, start);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
        throw new SourceReadError(`${src.name}: read of ${expected} bytes at ${start} failed: ${code}`, code);
      }
      if (got < expected) {
        // The file was longer when opened: it shrank under us. Serving zeros here would
        // misreport the evidence, so the read fails instead.
        throw new SourceReadError(`${src.name}: file shrank since it was opened (${src.size} bytes then, ends before ${start + expected} now)`, 'EIO');
      }
    }
    // Past the size at open time (a truncated copy): zeros, as the parse warnings said.
    buf.fill(0, got);
    return buf;
  }

  /** Bytes held now. */
  get size(): number {
    return this.lru.calculatedSize;
  }
}
