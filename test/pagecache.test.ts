import { expect } from 'chai';
import { PageCache, SourceReadError, type ChunkSource } from '../src/pagecache';

let nextId = 1000;

/** A source over bytes in memory that counts its reads and can fail or shrink on demand. */
class FakeSource implements ChunkSource {
  readonly id = nextId++;
  readonly name: string;
  asyncReads = 0;
  syncReads = 0;
  failAt: number | null = null;
  shrunkTo: number | null = null;
  readAtSync?: (buf: Buffer, position: number) => number;

  constructor(private readonly data: Buffer, readonly size = data.length, readonly readsInPlace = false) {
    this.name = `fake${this.id}`;
    if (readsInPlace) {
      this.readAtSync = (buf, position) => {
        this.syncReads++;
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

  it('fills misses in place for a local source, without a thread-pool read', async () => {
    const data = pattern(8 * CHUNK);
    const src = new FakeSource(data, data.length, true);
    const cache = new PageCache({ chunkSize: CHUNK, maxBytes: 64 * CHUNK, prefetch: 4 });
    const dst = Buffer.alloc(2 * CHUNK);
    await cache.read(src, CHUNK / 2, dst, 0, 2 * CHUNK);
    expect(dst.equals(data.subarray(CHUNK / 2, CHUNK / 2 + 2 * CHUNK))).to.equal(true);
    expect(src.syncReads).to.equal(3);
    expect(src.asyncReads).to.equal(0);
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
});
