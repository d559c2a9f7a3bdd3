import { CacheBudget, DEFAULT_CACHE_BYTES, type CacheSpace } from './budget';
import type { DirectFile } from '../io/source';
import { DecodeError } from '../io/layer';

/** What the cache reads from: an evidence file (SourceFile satisfies it). */
export interface ChunkSource {
  /** Small integer, unique per open file: part of the cache key. */
  readonly id: number;
  readonly name: string;
  /** Size when opened. Bytes past it read as zeros (a truncated copy, reported at parse time). */
  readonly size: number;
  read(buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  /**
   * Optional synchronous positional read filling `buf` (short only at end of data), as
   * RandomAccess.readAtSync. When a source has it and `readsInPlace` is true, a miss is read
   * right here on the JS thread while the source answers fast (from the OS page cache): a trip
   * through the thread pool costs two thread switches, more than the read itself. After slow
   * answers (a cold disk) the source's misses go back to the thread pool for a while.
   */
  readAtSync?(buf: Buffer, position: number): number;
  /**
   * True only where a read cannot hang (a local filesystem): a source on a network share or a
   * FUSE mount is always read on the thread pool, so a stuck read stalls its reader, never the
   * daemon.
   */
  readonly readsInPlace?: boolean;
  /**
   * True for a decoding layer (decryption, decompression): most of its read is decoding on this
   * thread, so its time says nothing about the disk and is not taken as a sign of a slow one.
   * Every other source read in place is timed, whether or not it holds a descriptor for good.
   */
  readonly decodes?: boolean;
  /**
   * A descriptor whose bytes are the source's bytes as they are (no decoding) on a local
   * filesystem, so native code may pread it on any thread (src/fuse/native.ts). Sources that
   * decrypt, decompress or may hang leave it undefined and stay on the JavaScript path.
   */
  readonly directFd?: number;
  /**
   * For a local file read as it is that holds no descriptor for good (a VM folder's memory files, opened
   * on first read): where it is and which file it must be, so native code may open it itself.
   */
  readonly directFile?: DirectFile;
  /**
   * Ranges known to be unreadable (a truncated encrypted container, a broken chain of compressed
   * blocks): a read that touches one fails with EIO naming why, and the bytes around it are read
   * as usual.
   */
  readonly damaged?: readonly Damage[];
  /**
   * Chunks to read ahead of a sequential reader, when the source wants more than the cache's
   * default (a web server, where each request costs a round trip). The window is refilled a half
   * at a time, so that the chunks of a refill are asked for together and can be fetched as one.
   */
  readonly readAhead?: number;
}

/** An unreadable range of a source, and why, in words for the analyst. */
export interface Damage {
  start: number;
  end: number;
  why: string;
}

/** The first damaged range of `src` that meets [from, to), if any. */
function damageIn(src: ChunkSource, from: number, to: number): Damage | null {
  const list = src.damaged;
  if (list === undefined || list.length === 0) return null;
  for (const d of list) if (d.start < to && d.end > from && d.end > d.start) return d;
  return null;
}

/** An underlying read failed (EIO from a bad sector, a vanished share, a file that shrank). */
export class SourceReadError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

export interface PageCacheOptions {
  /** Upper bound on cached bytes (when no budget is given). */
  maxBytes: number;
  /**
   * The budget the chunks draw from, shared with the decoding layers below (--cache-size): a
   * mount's caches hold no more than it together. Default: one of maxBytes for this cache alone.
   */
  budget: CacheBudget;
  /** Bytes per chunk: the unit of reading, caching and eviction. */
  chunkSize: number;
  /** Chunks fetched ahead once a reader is seen going forward. */
  prefetch: number;
  /** Told when a source is sent to the thread pool for answering slowly (for the daemon's log). */
  onSlow?: (source: string, readMs: number, forMs: number) => void;
}

/**
 * 64 KiB: read through chunks, a random 4 KiB first touch costs 8.5-10 us per read against
 * 15-20 us at 128 KiB, and 32 KiB and below lose on sequential reads (per-chunk overhead). Local
 * sources read random and large misses straight through, so the size matters for small forward
 * readers and for sources read on the thread pool.
 */
export const DEFAULT_CHUNK_SIZE = 64 * 1024;
export const DEFAULT_PREFETCH = 4;

/**
 * In-place reads block the JavaScript thread, and with it every other read of the mount, for as
 * long as they take. A read from the OS page cache takes microseconds; one that takes longer went
 * to the disk. So a source leaves in-place reading for the thread pool (where a stuck read holds
 * one pool thread and its own reader, nothing else):
 * - at once, after one in-place read slower than STUCK_READ_NS (a disk retrying a sector, a
 *   spun-down drive), so that one stuck read is the last one to stall the mount;
 * - after SLOW_RUN in-place reads in a row slower than SLOW_SYNC_READ_NS (a cold disk: each read is
 *   short, but the reads add up; a lone slow one is a preemption on a busy machine or a page fault).
 * It stays on the thread pool for a backoff that doubles each time the source is found slow again
 * (up to MAX_BACKOFF_MS), and for as long as its thread-pool reads are themselves that slow: a
 * source that keeps answering slowly never comes back to block the JavaScript thread.
 */
const STUCK_READ_NS = 20_000_000;
const SLOW_SYNC_READ_NS = 1_000_000;
const SLOW_RUN = 4;
const SLOW_BACKOFF_MS = 2000;
const MAX_BACKOFF_MS = 60_000;

/** Per source: how its in-place reads have gone. */
interface Speed {
  /** Slow in-place reads in a row. */
  slowRun: number;
  /** Until when (Date.now()) its misses go to the thread pool; 0 = read in place. */
  slowUntil: number;
  /** The next backoff. */
  backoff: number;
  /** When it last came back to in-place reading (the backoff starts over after a long calm). */
  calmSince: number;
}

/** Someone waiting for a chunk being read: where its bytes go once they arrive. */
interface Waiter {
  dst: Buffer;
  dstOffset: number;
  from: number;
  to: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

const DONE: Promise<void> = Promise.resolve();

/**
 * Fixed-size chunks of the source files in an LRU bounded by bytes. Concurrent misses on one
 * chunk share one read; a reader moving forward gets the next chunks read ahead (on libuv's
 * thread pool). Chunks are filled by positional reads, never by loading a whole file.
 *
 * What is worth caching depends on where the source lives. A source on a network share or a
 * FUSE mount is read on the thread pool, and every read goes through chunks. A source on a local
 * filesystem answers from the OS page cache in a microsecond or two, and behind the mount the
 * kernel keeps every page it was given (kernel_cache); there a chunk only pays when the next
 * small reads will want the rest of it. So a local source's miss is read straight into the
 * caller's buffer (one pread, nothing cached) unless it is a small read by a reader going
 * forward, which fills the chunk so that its next reads are hits.
 *
 * Bytes are copied out of a chunk at the moment it is found or arrives, never later: evicted
 * chunk buffers are recycled for new fills, so nothing may hold one across a wait.
 */
export class PageCache {
  readonly chunkSize: number;
  /** What the chunks draw from (for the --debug line: what every cache of the mount held). */
  readonly budget: CacheBudget;
  /** Per source, its chunks in the budget. */
  private readonly spaces = new Map<number, CacheSpace>();
  /** Chunks being read on the thread pool, with whoever waits for them. */
  private readonly inflight = new Map<number, Waiter[]>();
  /** Last chunk each source was asked for, to spot sequential readers. */
  private readonly lastChunk = new Map<number, number>();
  /** Per source: whether its misses are read in place or on the thread pool, and why. */
  private readonly speed = new Map<number, Speed>();
  private readonly prefetch: number;
  private readonly onSlow: PageCacheOptions['onSlow'];
  /** Counters for the --debug line at unmount, and for tests. */
  readonly stats = { hits: 0, misses: 0, shared: 0, prefetched: 0, direct: 0, slowed: 0 };

  constructor(opts: Partial<PageCacheOptions> = {}) {
    this.chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.prefetch = opts.prefetch ?? DEFAULT_PREFETCH;
    this.onSlow = opts.onSlow;
    this.budget = opts.budget ?? new CacheBudget(Math.max(opts.maxBytes ?? DEFAULT_CACHE_BYTES, this.chunkSize));
  }

  /** Key of a chunk being read: source id in the high bits, chunk number below (2^32 chunks per file). */
  private key(src: ChunkSource, chunk: number): number {
    return src.id * 0x1_0000_0000 + chunk;
  }

  /**
   * The source's chunks. Evicted chunk buffers are reused for new fills (the pool): fills then
   * neither allocate nor fault in fresh pages.
   */
  private space(src: ChunkSource): CacheSpace {
    let s = this.spaces.get(src.id);
    if (!s) this.spaces.set(src.id, (s = this.budget.space('pagecache-chunks')));
    return s;
  }

  /**
   * Copy `length` bytes at `position` of `src` into `dst[dstOffset..]`, assembled from chunks.
   * Rejects with SourceReadError when the source fails (after every chunk of the read has
   * settled: nothing writes into `dst` once the promise has settled).
   */
  read(src: ChunkSource, position: number, dst: Buffer, dstOffset: number, length: number): Promise<void> {
    return this.readNow(src, position, dst, dstOffset, length) ?? DONE;
  }

  /**
   * As read(), but null when the bytes are already in dst: a hit or an in-place read needs no
   * promise, and a FUSE read answered at once saves a microtask turn and two allocations.
   */
  readNow(src: ChunkSource, position: number, dst: Buffer, dstOffset: number, length: number): Promise<void> | null {
    if (length <= 0) return null;
    const hurt = damageIn(src, position, position + length);
    if (hurt) {
      // Refused whole, never answered short: the kernel takes a short reply for the end of the
      // file. It then reads page by page, so every page before the damage is still served.
      const from = Math.max(position, hurt.start);
      const to = Math.min(hurt.end, src.size);
      return Promise.reject(new SourceReadError(`${src.name}: bytes ${from}-${to} cannot be read: ${hurt.why}`, 'EIO'));
    }
    const cs = this.chunkSize;
    const first = Math.floor(position / cs);
    const last = Math.floor((position + length - 1) / cs);
    const forward = this.notePosition(src, first, last);
    if (this.inPlace(src) && (length >= cs || !forward)) {
      // A local source, and not a small read going forward: one pread straight into dst,
      // nothing cached. The kernel keeps what it gets (kernel_cache), so staging a large read
      // (the kernel's 128 KiB readahead of a scan) in chunks would copy every byte twice, and
      // filling a whole chunk for a random first touch (a page-table walk) would read 16 times
      // the bytes asked for (a 64 KiB pread costs 5-9 us here, a 4 KiB one under 1).
      try {
        this.readDirect(src, position, dst, dstOffset, length);
        return null;
      } catch (err) {
        return Promise.reject(err);
      }
    }
    if (src.readAhead !== undefined && !forward && length < cs) {
      // A remote source (each request a round trip), read at random: just the bytes asked for,
      // nothing cached (the kernel keeps what it gets). A whole chunk for a 4 KiB page-table
      // touch would fetch 16 times the bytes, and cost a third of the reads per second.
      return this.readRemoteDirect(src, position, dst, dstOffset, length);
    }
    if (first === last) {
      // The common case (a FUSE read inside one chunk): no array, and no Promise unless it waits.
      try {
        return this.copyOut(src, first, dst, dstOffset, position - first * cs, position - first * cs + length);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    let waits: Promise<void>[] | null = null;
    let failed: { err: unknown } | null = null;
    for (let c = first; c <= last; c++) {
      const from = Math.max(position, c * cs);
      const to = Math.min(position + length, (c + 1) * cs);
      try {
        const w = this.copyOut(src, c, dst, dstOffset + (from - position), from - c * cs, to - c * cs);
        if (w) (waits ??= []).push(w);
      } catch (err) {
        failed ??= { err };
      }
    }
    if (!waits) return failed ? Promise.reject(failed.err) : null;
    const firstFailure = failed;
    return Promise.allSettled(waits).then((results) => {
      if (firstFailure) throw firstFailure.err;
      for (const r of results) if (r.status === 'rejected') throw r.reason;
    });
  }

  /**
   * Copy chunk `c` [from, to) into dst now if it is cached (or can be read right now); else
   * join or start its read and return the promise of the copy. Throws SourceReadError when a
   * synchronous fill fails.
   */
  private copyOut(src: ChunkSource, c: number, dst: Buffer, dstOffset: number, from: number, to: number): Promise<void> | null {
    if (c * this.chunkSize >= src.size) {
      // Wholly past the source's end (a truncated copy): zeros, and nothing cached. This also
      // keeps chunk numbers below size/chunkSize, inside the key's 2^32 per source.
      dst.fill(0, dstOffset, dstOffset + (to - from));
      return null;
    }
    if (damageIn(src, c * this.chunkSize, (c + 1) * this.chunkSize)) {
      // A chunk that cannot be read whole: the intact bytes asked for are read alone, uncached.
      return this.readAround(src, c * this.chunkSize + from, dst, dstOffset, to - from);
    }
    const k = this.key(src, c);
    const hit = this.space(src).get(c);
    if (hit) {
      this.stats.hits++;
      hit.copy(dst, dstOffset, from, to);
      return null;
    }
    let waiters = this.inflight.get(k);
    if (waiters) {
      this.stats.shared++;
    } else {
      this.stats.misses++;
      if (this.inPlace(src)) {
        const buf = this.fillSync(src, c);
        this.space(src).set(c, buf);
        buf.copy(dst, dstOffset, from, to);
        return null;
      }
      waiters = this.load(src, c, k);
    }
    const list = waiters;
    return new Promise<void>((resolve, reject) => list.push({ dst, dstOffset, from, to, resolve, reject }));
  }

  /** Read intact bytes of a damaged chunk straight into dst (readNow has refused any read of the damage). */
  private readAround(src: ChunkSource, position: number, dst: Buffer, dstOffset: number, length: number): Promise<void> | null {
    this.stats.direct++;
    if (this.inPlace(src)) {
      this.readSync(src, dst.subarray(dstOffset, dstOffset + length), position);
      return null;
    }
    return src.read(dst, dstOffset, length, position).then(
      (got) => this.check(src, position, length, got),
      (err: unknown) => {
        throw this.readError(src, length, position, err);
      },
    );
  }

  private inPlace(src: ChunkSource): boolean {
    return src.readAtSync !== undefined && src.readsInPlace === true && !this.isSlow(src);
  }

  private isSlow(src: ChunkSource): boolean {
    const sp = this.speed.get(src.id);
    if (sp === undefined || sp.slowUntil === 0) return false;
    const now = Date.now();
    if (now < sp.slowUntil) return true;
    // Try reading in place again, from a clean slate.
    sp.slowUntil = 0;
    sp.slowRun = 0;
    sp.calmSince = now;
    return false;
  }

  private speedOf(src: ChunkSource): Speed {
    let sp = this.speed.get(src.id);
    if (!sp) this.speed.set(src.id, (sp = { slowRun: 0, slowUntil: 0, backoff: SLOW_BACKOFF_MS, calmSince: 0 }));
    return sp;
  }

  /** Send `src`'s misses to the thread pool for the next backoff period. */
  private markSlow(src: ChunkSource, sp: Speed, ns: number): void {
    const now = Date.now();
    if (sp.slowUntil === 0 && now - sp.calmSince > MAX_BACKOFF_MS) sp.backoff = SLOW_BACKOFF_MS;
    sp.slowUntil = now + sp.backoff;
    this.stats.slowed++;
    this.onSlow?.(src.name, Math.round(ns / 1e6), sp.backoff);
    sp.backoff = Math.min(sp.backoff * 2, MAX_BACKOFF_MS);
  }

  private noteSyncTime(src: ChunkSource, ns: number): void {
    if (src.decodes === true) return;
    const sp = this.speedOf(src);
    sp.slowRun = ns > SLOW_SYNC_READ_NS ? sp.slowRun + 1 : 0;
    if (ns > STUCK_READ_NS || sp.slowRun >= SLOW_RUN) this.markSlow(src, sp, ns);
  }

  /** A thread-pool read of a source that may be read in place: while those are slow, it stays on the pool. */
  private notePoolTime(src: ChunkSource, ns: number): void {
    if (src.readsInPlace !== true || ns <= STUCK_READ_NS) return;
    const sp = this.speedOf(src);
    sp.slowUntil = Math.max(sp.slowUntil, Date.now() + SLOW_BACKOFF_MS);
  }

  /** Remember where `src` was read; true when this read goes forward from the last one. */
  private notePosition(src: ChunkSource, first: number, last: number): boolean {
    const prev = this.lastChunk.get(src.id);
    this.lastChunk.set(src.id, last);
    if (prev === undefined || (first !== prev && first !== prev + 1)) return false;
    // Read-ahead is for sources read on the thread pool. A source answering in place from the OS
    // page cache is read ahead by the kernel's own FUSE readahead already: a second, threaded
    // read-ahead here only adds thread switches (measured: slower, 20% more CPU per GiB).
    if (this.prefetch <= 0 || this.inPlace(src)) return true;
    const maxChunk = Math.ceil(src.size / this.chunkSize) - 1;
    const ahead = src.readAhead ?? this.prefetch;
    if (src.readAhead !== undefined) {
      // Refill only once half the window is used up, so each refill goes out as one run.
      let held = last + 1;
      while (held <= Math.min(last + ahead, maxChunk) && (this.space(src).has(held) || this.inflight.has(this.key(src, held)))) held++;
      if (held > maxChunk || held > last + Math.floor(ahead / 2)) return true;
    }
    for (let c = last + 1; c <= Math.min(last + ahead, maxChunk); c++) {
      const k = this.key(src, c);
      if (this.space(src).has(c) || this.inflight.has(k) || damageIn(src, c * this.chunkSize, (c + 1) * this.chunkSize)) continue;
      this.stats.prefetched++;
      // A failed read-ahead is not an error anyone asked for: the real read retries and reports it.
      this.load(src, c, k);
    }
    return true;
  }

  /** Start reading chunk `c` on the thread pool; returns the (empty) list of its waiters. */
  private load(src: ChunkSource, c: number, k: number): Waiter[] {
    const waiters: Waiter[] = [];
    this.inflight.set(k, waiters);
    const buf = this.buffer(src);
    const start = c * this.chunkSize;
    const expected = this.expected(src, start);
    const done = (got: number): void => {
      this.inflight.delete(k);
      this.check(src, start, expected, got);
      buf.fill(0, got);
      this.space(src).set(c, buf);
      // Copy out now, before anything else runs: the buffer may be recycled once evicted.
      for (const w of waiters) {
        buf.copy(w.dst, w.dstOffset, w.from, w.to);
        w.resolve();
      }
    };
    const fail = (err: unknown): void => {
      this.inflight.delete(k);
      this.space(src).discard(buf);
      for (const w of waiters) w.reject(err);
    };
    if (expected === 0) {
      queueMicrotask(() => done(0));
      return waiters;
    }
    const t0 = process.hrtime.bigint();
    src.read(buf, 0, expected, start).then(
      (got) => {
        this.notePoolTime(src, Number(process.hrtime.bigint() - t0));
        try {
          done(got);
        } catch (err) {
          fail(err);
        }
      },
      (err: unknown) => fail(this.readError(src, expected, start, err)),
    );
    return waiters;
  }

  /** Read [position, +length) of `src` straight into dst, synchronously, caching nothing. */
  private readDirect(src: ChunkSource, position: number, dst: Buffer, dstOffset: number, length: number): void {
    this.stats.direct++;
    const expected = Math.max(0, Math.min(length, src.size - position));
    this.readSync(src, dst.subarray(dstOffset, dstOffset + expected), position);
    // Past the size at open time (a truncated copy): zeros, as the parse warnings said.
    dst.fill(0, dstOffset + expected, dstOffset + length);
  }

  /** Read [position, +length) of a remote `src` straight into dst, caching nothing. */
  private readRemoteDirect(src: ChunkSource, position: number, dst: Buffer, dstOffset: number, length: number): Promise<void> {
    this.stats.direct++;
    const expected = Math.max(0, Math.min(length, src.size - position));
    return src.read(dst, dstOffset, expected, position).then(
      (got) => {
        this.check(src, position, expected, got);
        dst.fill(0, dstOffset + expected, dstOffset + length);
      },
      (err: unknown) => {
        throw this.readError(src, expected, position, err);
      },
    );
  }

  /** Fill chunk `c` with a synchronous read (src.readAtSync must exist). */
  private fillSync(src: ChunkSource, c: number): Buffer {
    const buf = this.buffer(src);
    const start = c * this.chunkSize;
    const expected = this.expected(src, start);
    try {
      this.readSync(src, expected === buf.length ? buf : buf.subarray(0, expected), start);
    } catch (err) {
      this.space(src).discard(buf);
      throw err;
    }
    // Past the size at open time (a truncated copy): zeros, as the parse warnings said.
    buf.fill(0, expected);
    return buf;
  }

  /**
   * Fill all of `buf` from `position` of `src` with one synchronous read, timed for the slow
   * source guard. Throws SourceReadError when the read fails or comes back short.
   */
  private readSync(src: ChunkSource, buf: Buffer, position: number): void {
    if (buf.length === 0) return;
    const t0 = process.hrtime.bigint();
    let got: number;
    try {
      got = (src.readAtSync as (b: Buffer, p: number) => number)(buf, position);
    } catch (err) {
      throw this.readError(src, buf.length, position, err);
    }
    this.noteSyncTime(src, Number(process.hrtime.bigint() - t0));
    this.check(src, position, buf.length, got);
  }

  private buffer(src: ChunkSource): Buffer {
    return this.space(src).alloc(this.chunkSize);
  }

  /** Bytes of the chunk at `start` that lie within the source's size at open time. */
  private expected(src: ChunkSource, start: number): number {
    return Math.max(0, Math.min(this.chunkSize, src.size - start));
  }

  private readError(src: ChunkSource, expected: number, start: number, err: unknown): SourceReadError {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    // A source that knows why says so in the log's line: a web server's answer, a damaged block.
    const detail = (err as { detail?: unknown }).detail;
    if (typeof detail === 'string') return new SourceReadError(`${detail} (read of ${expected} bytes at ${start}: ${code})`, code);
    const why = err instanceof DecodeError ? `: ${err.reason}` : '';
    return new SourceReadError(`${src.name}: read of ${expected} bytes at ${start} failed: ${code}${why}`, code);
  }

  private check(src: ChunkSource, start: number, expected: number, got: number): void {
    if (got < expected) {
      // The file was longer when opened: it shrank under us. Serving zeros here would
      // misreport the evidence, so the read fails instead.
      throw new SourceReadError(`${src.name}: file shrank since it was opened (${src.size} bytes then, ends before ${start + expected} now)`, 'EIO');
    }
  }

  /** Bytes of chunks held now. */
  get size(): number {
    let n = 0;
    for (const s of this.spaces.values()) n += s.bytes;
    return n;
  }
}
