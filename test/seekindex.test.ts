import { expect } from 'chai';
import * as fs from 'node:fs';
import { guestLikeMemory } from './kit/fastlz-cases';
import { compressStream, FastLzStream } from './kit/fastlz';
import { CacheBudget } from '../src/cache/budget';
import { BlockStreamSource } from '../src/io/blockstream';
import { type BlockEntry } from '../src/io/container';
import { type BlockIndex, type IndexHost, NativeSeekIndex, SeekIndex, SPACING } from '../src/io/seekindex';
import { BufferSource } from '../src/io/source';
import { writeVmFolder, type VmFolder } from './helpers/encrypted';
import { TestMount } from './helpers/mount';
import { MemorySource } from './helpers/memory-source';
import { tempDir } from './helpers/paths';

const MiB = 1024 * 1024;

describe('the seek index of compressed memory', function () {
  this.timeout(180_000);
  // 32 MiB of guest-like memory in VMware's 4 MiB blocks, beginning in the zero window.
  const plain = guestLikeMemory(8192);
  let stream: Buffer;
  before(() => {
    stream = compressStream(plain).bytes;
  });

  it('once built, a first read anywhere reads the stored bytes between two seek points, not the block, and is exact', async () => {
    const inner = new MemorySource('z.vmem', stream);
    const src = new BlockStreamSource(inner);
    await src.startIndex();
    const st = src.indexStats;
    expect(st?.done).to.equal(true);
    expect(st?.points, 'a point every few tens of KiB of compressed blocks').to.be.greaterThan(plain.length / (4 * SPACING));
    expect(st?.bytes, 'within 3% of the memory').to.be.at.most(0.03 * plain.length);
    let x = 11;
    for (let i = 0; i < 200; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const pos = x % (plain.length - 4096);
      inner.bytes = 0;
      const b = Buffer.alloc(4096);
      await src.read(b, 0, 4096, pos);
      expect(b.equals(plain.subarray(pos, pos + 4096)), `read at ${pos}`).to.equal(true);
      expect(inner.bytes, `stored bytes read for 4 KiB at ${pos}`).to.be.at.most(4 * SPACING);
      // The page cache reads a local source in place, synchronously: the same through the index.
      inner.bytes = 0;
      const c = Buffer.alloc(4096);
      src.readAtSync(c, pos);
      expect(c.equals(plain.subarray(pos, pos + 4096)), `synchronous read at ${pos}`).to.equal(true);
      expect(inner.bytes, `stored bytes read synchronously for 4 KiB at ${pos}`).to.be.at.most(4 * SPACING);
    }
  });

  it('reads that arrive while the pass runs are served, exact; the pass yields to the event loop as it goes', async () => {
    const src = new BlockStreamSource(new BufferSource('z.vmem', stream));
    let turns = 0;
    let done = false;
    const pass = src.startIndex().then(() => (done = true));
    const tick = (): void => {
      if (done) return;
      turns++;
      setImmediate(tick);
    };
    setImmediate(tick);
    const reads: Promise<void>[] = [];
    for (const pos of [31 * MiB, 5, 17 * MiB + 3, 4 * MiB - 10, 9 * MiB]) {
      reads.push((async () => {
        const b = Buffer.alloc(8192);
        const n = await src.read(b, 0, 8192, pos);
        expect(b.subarray(0, n).equals(plain.subarray(pos, pos + n)), `read at ${pos}`).to.equal(true);
      })());
    }
    await Promise.all(reads);
    await pass;
    expect(turns, 'other work ran between slices of the pass').to.be.greaterThan(8);
    const all = Buffer.alloc(plain.length);
    for (let p = 0; p < plain.length; p += MiB) await src.read(all, p, MiB, p);
    expect(all.equals(plain), 'sequential reads through the index').to.equal(true);
  });

  it('is counted in the budget, which grows by what it holds', async () => {
    const budget = new CacheBudget(8 * MiB);
    const src = new BlockStreamSource(new BufferSource('z.vmem', stream), { budget });
    const before = budget.maxBytes;
    await src.startIndex();
    const held = src.indexStats?.bytes ?? 0;
    expect(held).to.be.greaterThan(0);
    expect(budget.maxBytes - before).to.equal(held);
    expect(budget.held).to.be.at.least(held);
  });

  /** A host over the stream in memory, counting what the index reserves. */
  function host(allowance: number, blocks = new BlockStreamSource(new BufferSource('z.vmem', stream)).blocks): IndexHost & { held: number } {
    const h = {
      blocks,
      allowance,
      held: 0,
      readRaw: (k: number) => Promise.resolve(Buffer.from(stream.subarray(blocks[k]?.dataOffset, (blocks[k]?.dataOffset ?? 0) + (blocks[k]?.stored ?? 0)))),
      reserve: (n: number) => void (h.held += n),
    };
    return h;
  }

  /** 100 random reads of each compressed block through idx, against the plain memory. */
  async function readsExact(idx: BlockIndex, blocks: readonly BlockEntry[], seed: number, count = 100): Promise<void> {
    let x = seed;
    for (let i = 0; i < count; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const pos = x % (plain.length - 4096);
      const k = Math.floor(pos / (4 * MiB));
      const n = Math.min(1 + (x % 9000), (k + 1) * 4 * MiB - pos);
      const b = blocks[k];
      if (!b || b.raw) continue;
      const out = Buffer.alloc(n + 3);
      await idx.read(k, pos, n, out, 3, (off, len) => Promise.resolve(stream.subarray(b.dataOffset + off, b.dataOffset + off + len)));
      expect(out.subarray(3).equals(plain.subarray(pos, pos + n)), `read of ${n} at ${pos}`).to.equal(true);
      const sync = Buffer.alloc(n);
      idx.readSync(k, pos, n, sync, 0, (off, len) => stream.subarray(b.dataOffset + off, b.dataOffset + off + len));
      expect(sync.equals(plain.subarray(pos, pos + n)), `synchronous read of ${n} at ${pos}`).to.equal(true);
    }
  }

  for (const [name, make] of [['JavaScript', (h: IndexHost) => new SeekIndex(h)], ['C', (h: IndexHost) => NativeSeekIndex.create(h)]] as const) {
    it(`in ${name}, held to a smaller allowance, merges its points (wider spacing) and still reads exact`, async () => {
      const h = host(64 * 1024);
      const idx = make(h);
      if (!idx) throw new Error('the addon has no seek index');
      await idx.build();
      expect(idx.done).to.equal(true);
      expect(idx.bytes).to.equal(h.held);
      expect(idx.count, 'points merged').to.be.lessThan(plain.length / SPACING / 2);
      await readsExact(idx, h.blocks, 5);
    });
  }

  it('in C, reads the same bytes as the JavaScript index and the plain memory, the zero window at the start included', async () => {
    const h = host(MiB);
    const c = NativeSeekIndex.create(h);
    if (!c) throw new Error('the addon has no seek index');
    await c.build();
    expect(c.done).to.equal(true);
    expect(c.bytes).to.be.greaterThan(0).and.at.most(MiB);
    expect(h.held).to.equal(c.bytes);
    // The stream's first bytes are matches into VMware's zeroed window.
    const first = Buffer.alloc(70_000, 1);
    await c.read(0, 0, first.length, first, 0, (off, len) => Promise.resolve(stream.subarray(h.blocks[0]!.dataOffset + off, h.blocks[0]!.dataOffset + off + len)));
    expect(first.equals(plain.subarray(0, first.length))).to.equal(true);
    await readsExact(c, h.blocks, 77, 300);
  });

  it('in C, raw blocks carry the history on: the blocks after them read exact, as do scans in large reads', async () => {
    const enc = new FastLzStream();
    const mem = guestLikeMemory(1024);
    const parts: Buffer[] = [];
    for (let o = 0, k = 0; o < mem.length; o += 512 * 1024, k++) parts.push(enc.encodeBlock(mem.subarray(o, o + 512 * 1024), { raw: k % 3 === 1 }));
    const src = new BlockStreamSource(new BufferSource('r.vmem', Buffer.concat(parts)));
    expect(src.nativeSeekHandle, 'the C index').to.not.equal(null);
    expect(src.blocks.filter((b) => b.raw).length).to.be.greaterThan(1);
    await src.startIndex();
    expect(src.indexStats?.done).to.equal(true);
    const all = Buffer.alloc(mem.length);
    for (let p = 0; p < mem.length; p += 100_000) src.readAtSync(all.subarray(p, Math.min(mem.length, p + 100_000)), p);
    expect(all.equals(mem), 'scanned synchronously in 100,000-byte reads').to.equal(true);
    all.fill(0);
    for (let p = 0; p < mem.length; p += 70_000) await src.read(all, p, Math.min(70_000, mem.length - p), p);
    expect(all.equals(mem), 'scanned in 70,000-byte reads').to.equal(true);
  });

  it('in C, a damaged block stops the pass with its reason, the JavaScript index\'s; the blocks before it are served through the index', async () => {
    const bent = Buffer.from(stream);
    const blocks = new BlockStreamSource(new BufferSource('z.vmem', stream)).blocks;
    const victim = blocks[5] as BlockEntry;
    for (let i = 0; i < 30; i++) bent[victim.dataOffset + 1000 + i * 997] ^= 0x3c;
    const src = new BlockStreamSource(new BufferSource('d.vmem', bent));
    await src.startIndex();
    const js = new SeekIndex({ ...host(MiB, blocks), readRaw: (k) => Promise.resolve(Buffer.from(bent.subarray(blocks[k]!.dataOffset, blocks[k]!.dataOffset + blocks[k]!.stored))) });
    await js.build();
    expect(js.failure).to.match(/^block 5 \(stream bytes \d+-\d+\) is damaged: .+/);
    expect(src.notes).to.include(`seek index stopped: ${js.failure}`);
    expect(src.indexStats?.done).to.equal(false);
    const b = Buffer.alloc(8192);
    await src.read(b, 0, b.length, 3 * 4 * MiB + 5);
    expect(b.equals(plain.subarray(3 * 4 * MiB + 5, 3 * 4 * MiB + 5 + 8192))).to.equal(true);
    const err = await src.read(b, 0, 4096, victim.start + 4 * 4096).then(() => null, (e: Error) => e);
    expect(err?.message).to.match(/d\.vmem: .*block 5 .*damaged/);
  });

  describe('mounted', () => {
    const tmp = tempDir('vmssfs-seek-');
    let vm: VmFolder;
    let m: TestMount | null = null;
    before(() => {
      vm = writeVmFolder(tmp.dir, { encrypt: true, compress: true, blobPages: 8192 });
    });
    after(async () => {
      await m?.unmount();
      tmp.cleanup();
    });

    it('the mount builds the index in the background; random reads, encrypted and compressed, are the plaintext', async () => {
      m = await TestMount.start(vm.meta, ['--password-file', vm.passwordFile, '--debug']);
      const want = fs.readFileSync(vm.plain.vmemPath as string);
      const fh = await fs.promises.open(m.path('physmem.raw'), 'r');
      try {
        let x = 3;
        for (let i = 0; i < 300; i++) {
          x = (Math.imul(x, 1103515245) + 12345) >>> 0;
          const page = x % 8192;
          const b = Buffer.alloc(4096);
          await fh.read(b, 0, 4096, page * 4096);
          expect(b.equals(want.subarray(page * 4096, page * 4096 + 4096)), `page ${page}`).to.equal(true);
        }
      } finally {
        await fh.close();
      }
      expect(await m.stderrShows(/VM-Snapshot1\.vmem: seek index built: \d+ points, \d+ bytes/)).to.equal(true);
    });
  });
});
