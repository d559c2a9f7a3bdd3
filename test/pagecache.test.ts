import { expect } from 'chai';
import { CacheBudget } from '../src/cache/budget';
import { PageCache, SourceReadError, type ChunkSource } from '../src/cache/pagecache';

let nextId = 1000;

/** A source over bytes in memory that counts its reads and can fail or shrink on demand. */
class FakeSource implements ChunkSource {
  readonly id = nextId++;
  readonly name: string;
  asyncReads = 0;
  syncReads = 0;
  failAt: number | null = null;
  shrunkTo: number | null = null;
  /** Make the next in-place read block this long, as a disk retrying a sector would. */
  stallNextMs = 0;
  readAtSync?: (buf: Buffer, position: number) => number;

  constructor(private readonly data: Buffer, readonly size = data.length, readonly readsInPlace = false) {
    this.name = `fake${this.id}`;
    if (readsInPlace) {
      this.readAtSync = (buf, position) => {
        this.syncReads++;
        if (this.stallNextMs > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, this.stallNextMs);
        this.stallNextMs = 0;
        return this.copy(buf, 0, buf.length, position);
      };
    }
  }

  private copy(buf: Buffer, offset: number, length: number, position: number): number {
    if (this.failAt !== null && position <= this.failAt && this.failAt < position + length) {
      throw Object.assign(new Error('EIO'), { code: 'EIO' });
    }
    const end = Math.min(this.shrunkTo ?? this.data.length, position + length);
    return end > position ? this.data.copy(buf, offset, position, end) : 0;
  }

  read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    this.asyncReads++;
    return new Promise((resolve, reject) => setImmediate(() => {
      try {
        resolve(this.copy(buf, offset, length, position));
      } catch (err) {
        reject(err);
      }
    }));
  }
}

function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + (i >> 12)) & 0xff;
  return b;
}

const CHUNK = 4096;

describe('page cache', () => {
  it('assembles reads across chunk boundaries from fixed-size chunks', async () => {
    const data = pattern(10 * CHUNK + 123);
    const src = new FakeSource(data);
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 0 });
    for (const [pos, len] of [[0, 1], [CHUNK - 1, 2], [100, 5 * CHUNK], [data.length - 10, 10]] as const) {
      const dst = Buffer.alloc(len);
      await cache.read(src, pos, dst, 0, len);
      expect(dst.equals(data.subarray(pos, pos + len)), `${pos}+${len}`).to.equal(true);
    }
  });

  it('serves a second read of the same chunk from memory', async () => {
    const src = new FakeSource(pattern(4 * CHUNK));
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 0 });
    await cache.read(src, 10, Buffer.alloc(10), 0, 10);
    await cache.read(src, 20, Buffer.alloc(10), 0, 10);
    expect(src.asyncReads).to.equal(1);
    expect(cache.stats.hits).to.equal(1);
  });

  it('lets concurrent misses on one chunk share a single read', async () => {
    const src = new FakeSource(pattern(4 * CHUNK));
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 0 });
    await Promise.all(Array.from({ length: 8 }, (_, i) => cache.read(src, i * 100, Buffer.alloc(50), 0, 50)));
    expect(src.asyncReads).to.equal(1);
    expect(cache.stats.shared).to.equal(7);
  });

  it('reads ahead for a sequential reader of a thread-pool source', async () => {
    const src = new FakeSource(pattern(16 * CHUNK));
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 2 });
    await cache.read(src, 0, Buffer.alloc(CHUNK), 0, CHUNK);
    await cache.read(src, CHUNK, Buffer.alloc(CHUNK), 0, CHUNK);
    expect(cache.stats.prefetched).to.equal(2);
    await new Promise((r) => setImmediate(r));
    await cache.read(src, 2 * CHUNK, Buffer.alloc(CHUNK), 0, CHUNK);
    expect(cache.stats.hits).to.be.at.least(1);
  });

  it('reads a large read of a local source in one pread straight into the buffer, caching nothing', async () => {
    const data = pattern(8 * CHUNK);
    const src = new FakeSource(data, data.length, true);
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 4 });
    const dst = Buffer.alloc(2 * CHUNK);
    expect(cache.readNow(src, CHUNK / 2, dst, 0, 2 * CHUNK)).to.equal(null);
    expect(dst.equals(data.subarray(CHUNK / 2, CHUNK / 2 + 2 * CHUNK))).to.equal(true);
    expect([src.syncReads, src.asyncReads, cache.size]).to.deep.equal([1, 0, 0]);
  });

  it('fills the chunks of a small forward read of a local source in place, without a thread-pool read', async () => {
    const data = pattern(8 * CHUNK);
    const src = new FakeSource(data, data.length, true);
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 4 });
    await cache.read(src, 0, Buffer.alloc(100), 0, 100);
    const dst = Buffer.alloc(200);
    expect(cache.readNow(src, CHUNK - 100, dst, 0, 200)).to.equal(null);
    expect(dst.equals(data.subarray(CHUNK - 100, CHUNK + 100))).to.equal(true);
    expect([src.syncReads, src.asyncReads, cache.size]).to.deep.equal([3, 0, 2 * CHUNK]);
  });

  it('reads only the bytes asked for on a random miss of a local source, and caches nothing', async () => {
    const data = pattern(64 * CHUNK);
    const src = new FakeSource(data, data.length - 100, true);
    const seen: number[] = [];
    const sync = src.readAtSync as (b: Buffer, p: number) => number;
    src.readAtSync = (buf, position) => {
      seen.push(buf.length);
      return sync(buf, position);
    };
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 4 });
    // A page-table walk: small reads far apart, each answered at once (no promise).
    for (const c of [40, 3, 17, 55]) {
      const dst = Buffer.alloc(512);
      expect(cache.readNow(src, c * CHUNK + 256, dst, 0, 512)).to.equal(null);
      expect(dst.equals(data.subarray(c * CHUNK + 256, c * CHUNK + 768)), `chunk ${c}`).to.equal(true);
    }
    expect(seen).to.deep.equal([512, 512, 512, 512]);
    expect(cache.stats.direct).to.equal(4);
    expect(cache.size).to.equal(0);
    // The same holds at the end of a truncated copy: what is missing reads as zeros.
    const tail = Buffer.alloc(200, 0xff);
    expect(cache.readNow(src, data.length - 200, tail, 0, 200)).to.equal(null);
    expect(tail.subarray(0, 100).equals(data.subarray(data.length - 200, data.length - 100))).to.equal(true);
    expect(tail.subarray(100).every((b) => b === 0)).to.equal(true);
  });

  it('fills whole chunks for a reader going forward, so its next reads are hits', async () => {
    const data = pattern(16 * CHUNK);
    const src = new FakeSource(data, data.length, true);
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 4 });
    for (let pos = 5 * CHUNK; pos < 8 * CHUNK; pos += 1024) {
      const dst = Buffer.alloc(1024);
      expect(cache.readNow(src, pos, dst, 0, 1024)).to.equal(null);
      expect(dst.equals(data.subarray(pos, pos + 1024)), `at ${pos}`).to.equal(true);
    }
    // The first read cannot know it starts a stream; from then on chunks 5, 6 and 7 are filled.
    expect(cache.stats.direct).to.equal(1);
    expect(src.syncReads).to.equal(4);
    expect(cache.stats.hits).to.equal(12 - 4);
    expect(cache.size).to.equal(3 * CHUNK);
  });

  it('sends a local source to the thread pool after one in-place read that stalled, reporting it', async () => {
    const data = pattern(64 * CHUNK);
    const src = new FakeSource(data, data.length, true);
    const told: string[] = [];
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 0, onSlow: (name, ms, forMs) => told.push(`${name} ${ms >= 50} ${forMs}`) });
    const dst = Buffer.alloc(100);
    expect(cache.readNow(src, 10 * CHUNK, dst, 0, 100), 'read in place, at once').to.equal(null);
    src.stallNextMs = 60;
    expect(cache.readNow(src, 30 * CHUNK, dst, 0, 100), 'the stalled read itself').to.equal(null);
    expect(told).to.deep.equal([`${src.name} true 2000`]);
    const before = { sync: src.syncReads, pool: src.asyncReads };
    const pending = cache.readNow(src, 50 * CHUNK, dst, 0, 100);
    expect(pending, 'the next miss waits on the thread pool').to.not.equal(null);
    await pending;
    expect(dst).to.deep.equal(data.subarray(50 * CHUNK, 50 * CHUNK + 100));
    expect({ sync: src.syncReads, pool: src.asyncReads }).to.deep.equal({ sync: before.sync, pool: before.pool + 1 });
  });

  it('stays within its byte bound', async () => {
    const src = new FakeSource(pattern(100 * CHUNK));
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 8 * CHUNK, prefetch: 0 });
    for (let c = 0; c < 100; c++) await cache.read(src, c * CHUNK, Buffer.alloc(1), 0, 1);
    expect(cache.size).to.be.at.most(8 * CHUNK);
  });

  it('reads bytes past the size at open time as zeros (a truncated copy)', async () => {
    const data = pattern(2 * CHUNK + 100);
    const src = new FakeSource(data);
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 0 });
    const dst = Buffer.alloc(CHUNK, 0xff);
    await cache.read(src, 2 * CHUNK, dst, 0, CHUNK);
    expect(dst.subarray(0, 100).equals(data.subarray(2 * CHUNK))).to.equal(true);
    expect(dst.subarray(100).every((b) => b === 0)).to.equal(true);
  });

  it('never mistakes another file\'s chunk for bytes far past a source\'s end', async () => {
    // Chunk keys hold 2^32 chunks per source: a read 2^32 chunks past the end of source A would
    // share its key with source B's chunk 0 if such chunks were ever cached.
    const a = new FakeSource(pattern(CHUNK));
    const b = new FakeSource(Buffer.alloc(CHUNK, 0xab));
    Object.defineProperty(b, 'id', { value: a.id + 1 });
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 0 });
    await cache.read(b, 0, Buffer.alloc(16), 0, 16);
    const far = Buffer.alloc(16, 0xff);
    await cache.read(a, 2 ** 32 * CHUNK, far, 0, 16);
    expect(far.every((x) => x === 0)).to.equal(true);
  });

  it('fails with SourceReadError (EIO) when the source fails, and caches nothing for it', async () => {
    for (const inPlace of [false, true]) {
      const src = new FakeSource(pattern(4 * CHUNK), 4 * CHUNK, inPlace);
      src.failAt = CHUNK + 5;
      const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 0 });
      const err = await cache.read(src, CHUNK, Buffer.alloc(10), 0, 10).then(() => null, (e: unknown) => e);
      expect(err).to.be.instanceOf(SourceReadError);
      expect((err as SourceReadError).code).to.equal('EIO');
      src.failAt = null;
      const dst = Buffer.alloc(10);
      await cache.read(src, CHUNK, dst, 0, 10);
      expect(dst.equals(pattern(4 * CHUNK).subarray(CHUNK, CHUNK + 10)), `in place: ${inPlace}`).to.equal(true);
    }
  });

  it('fails, rather than serving zeros, when the source shrank since it was opened', async () => {
    for (const inPlace of [false, true]) {
      const src = new FakeSource(pattern(4 * CHUNK), 4 * CHUNK, inPlace);
      src.shrunkTo = CHUNK;
      const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 0 });
      const err = await cache.read(src, 2 * CHUNK, Buffer.alloc(10), 0, 10).then(() => null, (e: unknown) => e);
      expect((err as Error).message, `in place: ${inPlace}`).to.match(/shrank since it was opened/);
    }
  });

  it('settles a multi-chunk read only after every chunk has, even when one fails', async () => {
    const src = new FakeSource(pattern(8 * CHUNK));
    src.failAt = 0;
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 0 });
    const dst = Buffer.alloc(4 * CHUNK);
    const err = await cache.read(src, 0, dst, 0, 4 * CHUNK).then(() => null, (e: unknown) => e);
    expect(err).to.be.instanceOf(SourceReadError);
    const before = Buffer.from(dst);
    await new Promise((r) => setTimeout(r, 20));
    expect(dst.equals(before), 'nothing writes into the buffer after the read settled').to.equal(true);
  });

  it('shares one budget with other caches: what they hold together never exceeds it, and a failed fill gives its room back', async () => {
    const budget = new CacheBudget(16 * CHUNK);
    const cache = new PageCache({ chunkSize: CHUNK, budget, prefetch: 2 });
    // Another cache of the same budget (a decoding layer's), holding buffers of another size.
    const other = budget.space('other');
    const srcs = [new FakeSource(pattern(40 * CHUNK)), new FakeSource(pattern(40 * CHUNK), 40 * CHUNK, true)];
    let x = 7;
    for (let i = 0; i < 300; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const src = srcs[x % 2] as FakeSource;
      const pos = (x >>> 8) % (39 * CHUNK);
      const dst = Buffer.alloc(100);
      await cache.read(src, pos, dst, 0, 100);
      expect(dst.equals(pattern(40 * CHUNK).subarray(pos, pos + 100)), `read ${i}`).to.equal(true);
      if (i % 7 === 0) other.set(i, other.alloc(3 * CHUNK));
      expect(budget.held, `after read ${i}`).to.be.at.most(16 * CHUNK);
    }
    expect(budget.peak).to.be.at.most(16 * CHUNK);
    expect(other.bytes + cache.size).to.equal(budget.held);
    const failing = new FakeSource(pattern(8 * CHUNK));
    failing.failAt = 0;
    const held = budget.held;
    await cache.read(failing, 0, Buffer.alloc(10), 0, 10).then(() => null, (e: unknown) => e);
    expect(budget.held, 'the failed chunk\'s room is given back').to.be.at.most(held);
  });

  describe('cache budget', () => {
    it('counts a buffer from alloc() at once, and set() then evicts nothing; a discarded one gives its room back', () => {
      const b = new CacheBudget(10);
      const s = b.space('p');
      s.set(1, s.alloc(4));
      s.set(2, s.alloc(4));
      const pending = s.alloc(2);
      expect(b.held).to.equal(10);
      s.set(3, pending);
      expect([s.has(1), s.has(2), s.has(3), b.held]).to.deep.equal([true, true, true, 10]);
      const dropped = s.alloc(4);
      expect(s.has(1), 'the least recently used made room').to.equal(false);
      s.discard(dropped);
      expect(b.held).to.equal(6);
      expect(b.peak).to.equal(10);
    });

    it('hands an evicted buffer to the next alloc() of its pool and size only, and a view of it back whole', () => {
      const b = new CacheBudget(8);
      const blocks = b.space('blocks');
      const chunks = b.space('chunks');
      const first = blocks.alloc(4);
      blocks.set(1, first.subarray(1));
      expect(b.held, 'a view counts its whole allocation').to.equal(4);
      blocks.set(2, blocks.alloc(4));
      const again = blocks.alloc(4);
      expect(again.buffer, 'the least recently used block of that size').to.equal(first.buffer);
      expect(again.length).to.equal(4);
      blocks.set(3, again);
      const other = chunks.alloc(4);
      expect(other.buffer, 'never a buffer of another pool').to.not.equal(blocks.peek(2)?.buffer);
      expect(b.stats).to.include({ reused: 1, fresh: 3 });
    });

    it('keeps nothing larger than itself, and never hands out a buffer it did not allocate', () => {
      const b = new CacheBudget(8);
      const s = b.space('p');
      expect(s.set(1, Buffer.alloc(9))).to.equal(false);
      expect(s.alloc(9).length).to.equal(9);
      expect(b.held).to.equal(0);
      const foreign = Buffer.allocUnsafeSlow(8);
      s.set(2, foreign);
      expect(s.alloc(8).buffer).to.not.equal(foreign.buffer);
    });

    it('keeps no entry whose key lies outside its space\'s 2^32 (it could alias another space\'s)', () => {
      const b = new CacheBudget(64);
      const [s, t] = [b.space(), b.space()];
      t.set(0, Buffer.alloc(4, 1));
      expect(s.set(2 ** 32, Buffer.alloc(4, 2))).to.equal(false);
      expect([s.get(2 ** 32), s.has(-1), t.get(0)?.[0], b.held]).to.deep.equal([undefined, false, 1, 4]);
    });
  });
});

describe('page cache over a remote source (readAhead: a web server)', () => {
  /** A FakeSource that says it wants `ahead` chunks read ahead, and keeps what it was asked for. */
  class RemoteSource extends FakeSource {
    readonly asked: Array<[number, number]> = [];
    constructor(data: Buffer, readonly readAhead: number) {
      super(data);
    }
    override read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
      this.asked.push([position, length]);
      return super.read(buf, offset, length, position);
    }
  }

  it('reads a random small read as just its bytes, caching nothing', async () => {
    const data = pattern(64 * CHUNK);
    const src = new RemoteSource(data, 8);
    const cache = new PageCache({ maxBytes: 1 << 20, chunkSize: CHUNK });
    const dst = Buffer.alloc(512);
    await cache.read(src, 10 * CHUNK + 100, dst, 0, 512);
    expect(dst.equals(data.subarray(10 * CHUNK + 100, 10 * CHUNK + 612))).to.equal(true);
    await cache.read(src, 40 * CHUNK, dst, 0, 512);
    expect(src.asked).to.deep.equal([[10 * CHUNK + 100, 512], [40 * CHUNK, 512]]);
    expect(cache.size).to.equal(0);
  });

  it('reads ahead of a sequential reader a whole window, then refills it a half at a time', async () => {
    const data = pattern(64 * CHUNK);
    const src = new RemoteSource(data, 8);
    const cache = new PageCache({ maxBytes: 1 << 20, chunkSize: CHUNK });
    const dst = Buffer.alloc(CHUNK);
    const startsAsked = (): number[] => src.asked.map(([p]) => p / CHUNK);
    for (let c = 0; c < 8; c++) {
      await cache.read(src, c * CHUNK, dst, 0, CHUNK);
      expect(dst.equals(data.subarray(c * CHUNK, (c + 1) * CHUNK)), `chunk ${c}`).to.equal(true);
    }
    // Chunk 1, the first read going forward, asks for the window ahead (2..9) and then for itself;
    // chunks 2-5 find more than half the window held; at chunk 6 it is half used, and 10..14 are
    // asked for together.
    expect(startsAsked()).to.deep.equal([0, 2, 3, 4, 5, 6, 7, 8, 9, 1, 10, 11, 12, 13, 14]);
  });
});
