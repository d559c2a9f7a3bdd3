import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { guestLikeMemory } from './kit/fastlz-cases';
import { checkLayers, fuzzSeekIndex, layerCases, makeLayerBases } from '../scripts/fuzz';
import { FastLzStream, compressStream } from './kit/fastlz';
import { CacheBudget } from '../src/cache/budget';
import { BlockStreamSource, looksLikeBlockStream } from '../src/io/blockstream';
import { FastLzError, NEEDS_HISTORY, fastLzDecode } from '../src/io/fastlz';
import { BufferSource, SourceFile, type Source } from '../src/io/source';
import { cmpFiles, walkFiles, writeVmFolder, type VmFolder } from './helpers/encrypted';
import { TestMount } from './helpers/mount';
import { MemorySource } from './helpers/memory-source';
import { tempDir } from './helpers/paths';
import { runCli } from './helpers/run';

async function readAll(src: Source, pos: number, len: number): Promise<Buffer> {
  const b = Buffer.alloc(len);
  const n = await src.read(b, 0, len, pos);
  return b.subarray(0, n);
}

describe('compressed memory', function () {
  this.timeout(120_000);

  describe('FastLZ level 2 (writer\'s encoder, reader\'s decoder)', () => {
    it('round-trips guest-like memory using every construct: literal runs, near and far matches, long lengths, overlapping copies, references across blocks, raw blocks and a short last block', () => {
      const plain = Buffer.concat([guestLikeMemory(96), Buffer.alloc(5000, 0x42)]);
      const enc = new FastLzStream();
      const blocks: Buffer[] = [];
      const BS = 64 * 1024;
      for (let o = 0, k = 0; o < plain.length; o += BS, k++) blocks.push(enc.encodeBlock(plain.subarray(o, o + BS), { raw: k === 2 }));
      const s = enc.stats;
      for (const [what, n] of Object.entries(s)) expect(n, what).to.be.greaterThan(0);
      expect(blocks[blocks.length - 1]?.readUInt32LE(0), 'short last block').to.equal(plain.length % BS);
      expect(blocks[2]?.readUInt32LE(8), 'raw block: stored = size').to.equal(BS);
      const src = new BlockStreamSource(new MemorySource('m.vmem', Buffer.concat(blocks)));
      expect(src.size).to.equal(plain.length);
      const out = Buffer.alloc(plain.length);
      expect(src.readAtSync(out, 0)).to.equal(plain.length);
      expect(out.equals(plain)).to.equal(true);
    });

    it('a block needing its predecessor says so; given the tail it decodes; a damaged one throws', () => {
      const data = Buffer.concat([Buffer.alloc(70000, 7), Buffer.alloc(70000, 7)]);
      const { bytes } = compressStream(data, 70000);
      const second = bytes.subarray(16 + bytes.readUInt32LE(8));
      const payload = second.subarray(16, 16 + second.readUInt32LE(8));
      const alone = Buffer.alloc(70000);
      const r = fastLzDecode(payload, 0, alone, 0, 70000, 0, true);
      expect(r, 'refers into the first block').to.equal(NEEDS_HISTORY);
      const withHistory = Buffer.concat([data.subarray(0, 70000), Buffer.alloc(70000)]);
      expect(fastLzDecode(payload, 0, withHistory, 70000, 140000, 0, true)).to.equal(70000);
      expect(withHistory.subarray(70000).equals(data.subarray(70000))).to.equal(true);
      expect(() => fastLzDecode(payload.subarray(0, payload.length - 1), 0, Buffer.alloc(140000), 70000, 140000, 0, true)).to.throw(FastLzError);
      expect(() => fastLzDecode(payload, 0, Buffer.alloc(140001), 70000, 140001, 0, true)).to.throw(FastLzError, /decoded to 70000 bytes, its header says 70001/);
      expect(() => fastLzDecode(Buffer.from([0x60, 1, 2]), 0, Buffer.alloc(10), 0, 10, 0, true)).to.throw(FastLzError, /not a level-2 literal run/);
    });
  });

  describe('block stream source', () => {
    const BS = 64 * 1024;
    const plain = guestLikeMemory(512); // 2 MiB: 32 blocks
    let container: Buffer;
    before(() => {
      container = compressStream(plain, BS).bytes;
    });

    it('is recognised by content; flat memory and a plain checkpoint are not', () => {
      expect(looksLikeBlockStream(new BufferSource('c', container))).to.equal(true);
      expect(looksLikeBlockStream(new BufferSource('p', plain))).to.equal(false);
      expect(looksLikeBlockStream(new BufferSource('z', Buffer.alloc(8192)))).to.equal(false);
    });

    it('indexes by reading only the 16-byte headers, then serves any range as the plaintext', async () => {
      const inner = new MemorySource('c.vmem', container);
      const src = new BlockStreamSource(inner);
      expect(inner.bytes, 'one header per block').to.equal(32 * 16);
      expect(src.blocks).to.have.length(32);
      expect(src.decodes).to.equal(true);
      for (const [pos, len] of [[0, 100], [BS - 50, 100], [17 * BS + 3, 3 * BS], [plain.length - 10, 10]] as const) {
        expect((await readAll(src, pos, len)).equals(plain.subarray(pos, pos + len)), `@${pos}`).to.equal(true);
      }
    });

    it('decodes forward from the nearest point it holds: the next block after one read costs that block only', async () => {
      const inner = new MemorySource('c.vmem', container);
      const src = new BlockStreamSource(inner);
      await readAll(src, 20 * BS, 10);
      inner.bytes = 0;
      expect((await readAll(src, 21 * BS + 100, 10)).equals(plain.subarray(21 * BS + 100, 21 * BS + 110))).to.equal(true);
      expect(inner.bytes).to.equal(src.blocks[21]?.stored);
    });

    it('a first far read into a block that does not reach back decodes that block alone, and leaves the window for the next', async () => {
      // Blocks longer than the 72 KiB window, as VMware's 4 MiB ones are.
      const BIG = 128 * 1024;
      const enc = new FastLzStream();
      const parts: Buffer[] = [];
      for (let k = 0; k < 16; k++) parts.push(enc.encodeBlock(plain.subarray(k * BIG, (k + 1) * BIG), { noHistory: k === 14 }));
      const inner = new MemorySource('c.vmem', Buffer.concat(parts));
      const src = new BlockStreamSource(inner);
      inner.bytes = 0;
      expect((await readAll(src, 14 * BIG + 5, 100)).equals(plain.subarray(14 * BIG + 5, 14 * BIG + 105))).to.equal(true);
      expect(inner.bytes, 'only block 14 read').to.equal(src.blocks[14]?.stored);
      inner.bytes = 0;
      expect((await readAll(src, 15 * BIG, 10)).equals(plain.subarray(15 * BIG, 15 * BIG + 10))).to.equal(true);
      expect(inner.bytes, 'then block 15 from 14\'s tail').to.equal(src.blocks[15]?.stored);
    });

    it('a first read deep into the stream traces back only the bytes it copies, not the whole stream before it', async () => {
      // 128 MiB in VMware's 4 MiB blocks, each reaching into its predecessor.
      const mem = guestLikeMemory(32768);
      const MB = 1024 * 1024;
      const { bytes, stats } = compressStream(mem);
      expect(stats.crossBlock, 'blocks reach into their predecessors').to.be.at.least(31);
      const inner = new MemorySource('c.vmem', bytes);
      const src = new BlockStreamSource(inner);
      inner.bytes = 0;
      expect((await readAll(src, mem.length - 4096, 4096)).equals(mem.subarray(mem.length - 4096))).to.equal(true);
      const avg = bytes.length / 32;
      // Decoding forward from the start would read all 32 blocks.
      expect(inner.bytes / avg, 'blocks\' worth of stored bytes read').to.be.below(32 / 3);
      inner.bytes = 0;
      expect((await readAll(src, 64 * MB + 5, 100)).equals(mem.subarray(64 * MB + 5, 64 * MB + 105))).to.equal(true);
      expect(inner.bytes / avg, 'another far read: fewer than the 16 blocks before it').to.be.below(16);
    });

    it('keeps its decoded blocks, tails and buffers within the budget it is given, whatever the order of reads', async () => {
      // Room for about three decoded blocks (each with the window before it) and their tails.
      const budget = new CacheBudget(3 * (BS + 73728) + 8 * 73728);
      for (const sync of [true, false]) {
        const src = new BlockStreamSource(new MemorySource('c.vmem', container), { budget });
        let x = sync ? 3 : 5;
        for (let i = 0; i < 120; i++) {
          x = (Math.imul(x, 1103515245) + 12345) >>> 0;
          // Forward runs, with jumps back and far ahead now and then.
          const pos = i % 10 === 0 ? x % plain.length : (i * 37 * 1024) % plain.length;
          const len = Math.min(1 + (x >>> 16) % (3 * BS), plain.length - pos);
          const got = sync ? (() => {
            const b = Buffer.alloc(len);
            return b.subarray(0, src.readAtSync(b, pos));
          })() : await readAll(src, pos, len);
          expect(got.equals(plain.subarray(pos, pos + len)), `read ${len} at ${pos}`).to.equal(true);
          expect(budget.held, `after read ${i}`).to.be.at.most(budget.maxBytes);
        }
      }
      expect(budget.peak).to.be.at.most(budget.maxBytes);
      expect(budget.stats.reused, 'evicted buffers are reused').to.be.greaterThan(0);
    });

    it('reads in any order, over blocks shorter than the window, match the plaintext', async () => {
      for (const bs of [4096, 20000, 70000]) {
        const src = new BlockStreamSource(new MemorySource('c.vmem', compressStream(plain, bs).bytes));
        let x = bs;
        for (let i = 0; i < 40; i++) {
          x = (Math.imul(x, 1103515245) + 12345) >>> 0;
          const pos = x % plain.length;
          const len = Math.min(1 + (x >>> 20), plain.length - pos);
          expect((await readAll(src, pos, len)).equals(plain.subarray(pos, pos + len)), `block size ${bs}, read ${len} at ${pos}`).to.equal(true);
        }
      }
    });

    it('a damaged block reads as EIO, and so do blocks decoded through it; the others still read', async () => {
      const bad = Buffer.from(container);
      // Block 5's payload no longer opens with a level-2 literal run.
      let pos = 0;
      for (let k = 0; k < 5; k++) pos += 16 + bad.readUInt32LE(pos + 8);
      bad[pos + 16] = 0xe0;
      const src = new BlockStreamSource(new MemorySource('bad.vmem', bad));
      let err: NodeJS.ErrnoException | null = null;
      await readAll(src, 5 * BS + 10, 10).catch((e: NodeJS.ErrnoException) => (err = e));
      expect(err, 'block 5').to.not.equal(null);
      expect((err as unknown as NodeJS.ErrnoException).code).to.equal('EIO');
      expect((err as unknown as Error).message).to.match(/bad\.vmem: block 5 \(stream bytes 327680-393216\)/);
      expect((await readAll(src, 2 * BS, 100)).equals(plain.subarray(2 * BS, 2 * BS + 100))).to.equal(true);
    });

    it('a header chain that runs off the file: indexed up to there, the rest reported and EIO, in bounded steps', async () => {
      const cut = container.subarray(0, container.length - 100);
      const src = new BlockStreamSource(new MemorySource('cut.vmem', cut));
      expect(src.blocks).to.have.length(31);
      expect(src.damaged[0]?.why).to.match(/block 31 \(stored at byte \d+\) runs past the end of the file/);
      src.coverDamaged(plain.length);
      expect(src.size).to.equal(plain.length);
      let code: string | undefined;
      await readAll(src, 31 * BS + 1, 10).catch((e: NodeJS.ErrnoException) => (code = e.code));
      expect(code).to.equal('EIO');
      const absurd = Buffer.from(container);
      absurd.writeUInt32LE(0xffffffff, 0);
      expect(new BlockStreamSource(new MemorySource('a.vmem', absurd)).blocks, 'an absurd first size').to.have.length(0);
    });
  });

  describe('fuzzing the layers with a fixed seed', () => {
    it('mutated compressed streams and encrypted containers: every read returns bytes or EIO, every refusal is one line naming the file', async () => {
      let refused = 0;
      let n = 0;
      for (const c of layerCases(makeLayerBases(), 20261125, 300)) {
        n++;
        try {
          if ((await checkLayers('case.vmem', c.bytes, c.key)) === 'error') refused++;
        } catch (err) {
          expect.fail(`case ${n} (${c.base}: ${c.what}): ${(err as Error).message}`);
        }
      }
      expect(n).to.equal(300);
      expect(refused, 'some mutations are refused outright').to.be.greaterThan(0);
      expect(refused, 'most are served').to.be.below(150);
    });

    it('mutated compressed streams indexed by the C seek index: it stops where and why the JavaScript index does, and serves the same bytes', async () => {
      const lines: string[] = [];
      expect(await fuzzSeekIndex(20261126, 200, (l) => lines.push(l)), lines.join('\n')).to.equal(0);
      expect(lines.join('\n')).to.match(/, (1\d\d|200) indexed by C and JavaScript, 0 differed/);
    });
  });

  describe('mounted', () => {
    const tmp = tempDir('vmssfs-compressed-');
    let vm: VmFolder;
    before(() => {
      vm = writeVmFolder(tmp.dir, { encrypt: false, compress: true, metaExt: '.vmss', blobPages: 1536, blockSize: 256 * 1024, rawBlocks: [3],
        regions: [{ ppn: 0, pageNum: 0, pages: 1024 }, { ppn: 0x1800, pageNum: 1024, pages: 512 }] });
    });
    after(() => tmp.cleanup());

    it('a plain .vmss beside a compressed .vmem mounts without options; every file reads as the plaintext\'s', async () => {
      expect(fs.statSync(vm.vmem).size).to.be.lessThan(1536 * 4096);
      const m = await TestMount.start(vm.meta);
      const p = await TestMount.start(vm.plain.path);
      try {
        const files = await walkFiles(p.mountpoint);
        expect(await walkFiles(m.mountpoint)).to.deep.equal(files);
        for (const f of files) {
          if (f === 'info.txt' || f === 'metadata.json') continue;
          expect(await cmpFiles(p.path(f), m.path(f)), f).to.equal(null);
        }
        const meta = JSON.parse(await fs.promises.readFile(m.path('metadata.json'), 'utf8')) as Record<string, unknown>;
        expect(meta.compression).to.deep.equal({ file: vm.vmem, blocks: 24, storedBytes: fs.statSync(vm.vmem).size, decompressedBytes: 1536 * 4096 });
        expect(meta.encryption).to.equal(undefined);
        expect(m.stderr).to.equal('');
      } finally {
        await m.unmount();
        await p.unmount();
      }
    });

    it('a VM folder of compressed checkpoints starts each one\'s seek index when its memory is first read', async () => {
      // Two snapshots found in a folder (no .vmx or .vmsd): the same memory under two names.
      const dir = path.join(tmp.dir, 'folder');
      fs.mkdirSync(dir);
      for (const n of ['VM-Snapshot1', 'VM-Snapshot2']) {
        fs.copyFileSync(vm.meta, path.join(dir, `${n}.vmsn`));
        fs.copyFileSync(vm.vmem, path.join(dir, `${n}.vmem`));
      }
      const want = fs.readFileSync(vm.plain.vmemPath as string).subarray(0, 4096);
      const m = await TestMount.start(dir, ['--debug']);
      try {
        const readPage = async (cp: string): Promise<Buffer> => {
          const fh = await fs.promises.open(m.path(cp, 'physmem.raw'), 'r');
          try {
            const b = Buffer.alloc(4096);
            await fh.read(b, 0, 4096, 0);
            return b;
          } finally {
            await fh.close();
          }
        };
        expect(await walkFiles(m.path('VM-Snapshot1'))).to.include('physmem.raw');
        expect(m.stderr, 'nothing read yet: no pass').not.to.match(/seek index/);
        expect((await readPage('VM-Snapshot1')).equals(want)).to.equal(true);
        expect(await m.stderrShows(/VM-Snapshot1\.vmem: seek index built: \d+ points/), m.stderr).to.equal(true);
        expect(m.stderr).to.match(/VM-Snapshot1\.vmem: seek index started \(first read\)/);
        expect(m.stderr, 'the other checkpoint, unread, has none').not.to.match(/VM-Snapshot2\.vmem: seek index/);
        expect((await readPage('VM-Snapshot2')).equals(want)).to.equal(true);
        expect(await m.stderrShows(/VM-Snapshot2\.vmem: seek index built: \d+ points/), m.stderr).to.equal(true);
        expect(m.stderr.match(/VM-Snapshot1\.vmem: seek index started/g)).to.have.length(1);
      } finally {
        await m.unmount();
      }
    });

    it('a damaged compressed stream: metadata served, the lost guest-physical range named, reads there EIO', async () => {
      const dir = path.join(tmp.dir, 'damaged');
      fs.mkdirSync(dir);
      const meta = path.join(dir, path.basename(vm.meta));
      fs.copyFileSync(vm.meta, meta);
      const z = fs.readFileSync(vm.vmem);
      // Cut the file inside block 20 (of 24): blocks 20-23 (stream 5 MiB - 6 MiB, in region 1) are lost.
      let pos = 0;
      for (let k = 0; k < 20; k++) pos += 16 + z.readUInt32LE(pos + 8);
      fs.writeFileSync(path.join(dir, 'VM-Snapshot1.vmem'), z.subarray(0, pos + 20));
      const info = await runCli(['info', meta]);
      expect(info.code).to.equal(0);
      const lost = 0x1800 * 4096 + (20 * 256 * 1024 - 1024 * 4096);
      expect(info.stdout).to.include(`WARNING: guest-physical 0x${lost.toString(16)}-0x${(0x1800 * 4096 + 512 * 4096).toString(16)}`);
      expect(info.stdout).to.match(/block 20 \(stored at byte \d+\) runs past the end of the file.*reads there fail with EIO/);
      const m = await TestMount.start(meta);
      try {
        expect(m.stderr).to.match(/guest-physical .* reads there fail with EIO/);
        const fh = await fs.promises.open(m.path('physmem.raw'), 'r');
        try {
          const ok = Buffer.alloc(4096);
          await fh.read(ok, 0, 4096, 0);
          expect(ok.equals(fs.readFileSync(vm.plain.vmemPath as string).subarray(0, 4096))).to.equal(true);
          let code: string | undefined;
          await fh.read(Buffer.alloc(4096), 0, 4096, lost + 8192).catch((e: NodeJS.ErrnoException) => (code = e.code));
          expect(code).to.equal('EIO');
        } finally {
          await fh.close();
        }
        expect((await fs.promises.readFile(m.path('config.vmx'), 'utf8'))).to.include('displayName');
      } finally {
        await m.unmount();
      }
    });
  });

  it('SourceFile is plain with a descriptor; decoded sources are not, and read in place exactly when the file below does', () => {
    const { dir, cleanup } = tempDir();
    try {
      const f = path.join(dir, 'x');
      fs.writeFileSync(f, compressStream(Buffer.alloc(10000, 1), 4096).bytes);
      const s = SourceFile.open(f);
      expect(s.decodes).to.equal(false);
      expect(typeof s.fd).to.equal('number');
      const z = new BlockStreamSource(s);
      expect(z.decodes).to.equal(true);
      expect(z.readsInPlace).to.equal(s.readsInPlace);
      expect('fd' in z).to.equal(false);
      z.close();
    } finally {
      cleanup();
    }
  });
});
