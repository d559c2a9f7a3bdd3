import { expect } from 'chai';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadNative, nativeSpec, type NativeSpec, type NativeStream } from '../src/fuse/native';
import { BlockStreamSource } from '../src/io/blockstream';
import { SourceFile } from '../src/io/source';
import { PageCache } from '../src/cache/pagecache';
import { openSnapshot } from '../src/evidence/snapshot';
import { buildTree } from '../src/tree/build';
import { writeVmFolder, type VmFolder } from './helpers/encrypted';
import { TestMount } from './helpers/mount';
import { tempDir } from './helpers/paths';
import { readRange, sha256File } from './helpers/read';
import { runCommand } from './helpers/run';

const HELPERS = path.join(__dirname, 'helpers');
const BLOCK = 256 * 1024;

/** The offset of block k's header in a container. */
function headerOf(container: Buffer, k: number): number {
  let pos = 0;
  for (let i = 0; i < k; i++) pos += 16 + container.readUInt32LE(pos + 8);
  return pos;
}

/** The --debug line counting native reads at unmount: reads served, bytes, reads failed. */
function nativeCounts(stderr: string): { reads: number; bytes: number; failed: number } {
  const m = /^vmssfs: native reads: (\d+) served \((\d+) bytes, \d+ spliced\), (\d+) failed$/m.exec(stderr);
  if (!m) throw new Error(`no native read counts in: ${stderr.slice(-2000)}`);
  return { reads: Number(m[1]), bytes: Number(m[2]), failed: Number(m[3]) };
}

/** `n` reads of up to 300 KiB at random offsets of a file of `size` bytes, the same for a given seed. */
function randomPlan(seed: number, size: number, n: number): [number, number][] {
  let x = seed;
  const rand = (k: number): number => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x % k;
  };
  return Array.from({ length: n }, (): [number, number] => [rand(size), 1 + rand(300_000)]);
}

/** Concurrent reader processes, each reading its plan of `file`; each range's hash must be the image's. */
async function readersAgree(file: string, image: Buffer, plans: [number, number][][]): Promise<void> {
  const results = await Promise.all(plans.map((p) => runCommand(process.execPath, [path.join(HELPERS, 'reader.js'), file, JSON.stringify(p)])));
  results.forEach((r, i) => {
    expect(r.code, r.stderr).to.equal(0);
    const want = (plans[i] as [number, number][]).map(([pos, len]) => createHash('sha256').update(image.subarray(pos, pos + len)).digest('hex'));
    expect(r.stdout.trim().split('\n'), `reader ${i}`).to.deep.equal(want);
  });
}

describe('native read path: compressed memory decoded on libfuse\'s threads from the seek index', function () {
  this.timeout(180_000);
  const tmp = tempDir('vmssfs-nstream-');
  let vm: VmFolder;
  /** The same memory plain, mounted: what every compressed read must equal. */
  let p: TestMount | null = null;
  let image: Buffer;
  before(async () => {
    // 16 MiB in 64 blocks, one stored raw, in two runs of guest memory with a hole between.
    vm = writeVmFolder(tmp.dir, { encrypt: false, compress: true, metaExt: '.vmss', blobPages: 4096, blockSize: BLOCK, rawBlocks: [5],
      regions: [{ ppn: 0, pageNum: 0, pages: 3072 }, { ppn: 0x1000, pageNum: 3072, pages: 1024 }] });
    p = await TestMount.start(vm.plain.path);
    image = await fs.promises.readFile(p.path('physmem.raw'));
  });
  after(async () => {
    await p?.unmount();
    tmp.cleanup();
  });

  it('physmem.raw and the views of a compressed local .vmem go native, naming the stream\'s blocks and seek index', () => {
    const snap = openSnapshot(vm.meta);
    try {
      const { spec } = nativeSpec(buildTree(snap, new PageCache({ maxBytes: 1 << 20 })));
      expect(spec.files.map((f) => f.path)).to.include.members(['/physmem.raw', '/physmem.lime', '/physmem.elf']);
      const streams = spec.sources.filter((s) => s.stream !== undefined);
      expect(streams).to.have.length(1);
      const s = streams[0];
      expect(s?.size, 'the container\'s size').to.equal(fs.statSync(vm.vmem).size);
      expect(s?.length, 'the decoded stream\'s').to.equal(4096 * 4096);
      expect(s?.blocks).to.have.length(64);
      expect(s?.blocks?.[5]?.raw).to.equal(true);
    } finally {
      snap.close();
    }
  });

  describe('an encrypted VM\'s compressed memory', () => {
    let enc: VmFolder;
    let m: TestMount | null = null;
    before(() => {
      enc = writeVmFolder(path.join(tmp.dir, 'enc'), { encrypt: true, compress: true, blobPages: 2048, blockSize: BLOCK, rawBlocks: [3], rounds: 500 });
    });
    after(async () => {
      await m?.unmount();
    });

    it('goes native with the key, beneath the stream: its stored bytes are decrypted in the addon', () => {
      const key = Buffer.from(enc.keyHex as string, 'hex');
      const snap = openSnapshot(enc.meta, { keys: { dataKey: () => key, info: null } });
      try {
        const { spec } = nativeSpec(buildTree(snap, new PageCache({ maxBytes: 1 << 20 })));
        expect(spec.files.map((f) => f.path)).to.include('/physmem.raw');
        const streams = spec.sources.filter((s) => s.stream !== undefined);
        expect(streams).to.have.length(1);
        expect(streams[0]?.size, 'the encrypted file\'s size').to.equal(fs.statSync(enc.vmem).size);
        expect(streams[0]?.encobj?.key.equals(key)).to.equal(true);
        expect(streams[0]?.encobj?.header).to.equal(4096);
      } finally {
        snap.close();
      }
    });

    it('reads byte for byte as the plaintext, natively once indexed, from 8 readers at once', async () => {
      m = await TestMount.start(enc.meta, ['--key', enc.keyHex as string, '--debug']);
      expect(await m.stderrShows(/seek index built/, 60_000), m.stderr.slice(-2000)).to.equal(true);
      const want = fs.readFileSync(enc.plain.vmemPath as string);
      expect(await sha256File(m.path('physmem.raw'))).to.equal(createHash('sha256').update(want).digest('hex'));
      for (const [pos, len] of [[3 * BLOCK - 5000, 10_000], [4 * BLOCK - 1, 2], [want.length - 100, 100]] as const) {
        expect((await readRange(m.path('physmem.raw'), pos, len)).equals(want.subarray(pos, pos + len)), `at ${pos}+${len}`).to.equal(true);
      }
      await readersAgree(m.path('physmem.raw'), want, Array.from({ length: 8 }, (_, i) => randomPlan(2000 + i, want.length, 20)));
      await m.unmount();
      const c = nativeCounts(m.stderr);
      expect(c.bytes, m.stderr.slice(-2000)).to.be.at.least(want.length);
      expect(c.failed).to.equal(0);
    });
  });

  it('the addon checks a stream source\'s blocks, length and handle, one clear error each', () => {
    const lib = loadNative({});
    if (!lib.addon) throw new Error('addon not loaded');
    const addon = lib.addon;
    const file = SourceFile.open(vm.vmem);
    const stream = new BlockStreamSource(file);
    try {
      const handle = stream.nativeSeekHandle;
      expect(handle, 'the addon makes the index').to.not.equal(null);
      const good = (): NativeSpec => ({
        maxOpened: 1,
        sources: [{ fd: file.fd, size: file.size, stream: handle, blocks: stream.blocks.map((b) => ({ ...b })), length: stream.decodedSize }],
        files: [{ path: '/physmem.raw', size: stream.decodedSize, extents: [{ start: 0, length: stream.decodedSize, source: 0, sourceOffset: 0 }] }],
      });
      addon.discard(addon.prepare(good(), () => undefined));
      type Block = { dataOffset: number; stored: number; start: number; size: number; raw: boolean };
      const block = (s: NativeSpec, k: number): Block => (s.sources[0]?.blocks as Block[])[k] as Block;
      const bad: [string, (s: NativeSpec) => void, RegExp][] = [
        ['a gap between blocks', (s) => (block(s, 3).start += 1), /blocks must follow on from 0/],
        ['a first block not at 0', (s) => (block(s, 0).start = 4096), /blocks must follow on from 0/],
        ['stored bytes past the block\'s size', (s) => (block(s, 1).stored = block(s, 1).size + 1), /blocks must follow on/],
        ['a raw block stored shorter than its size', (s) => (block(s, 5).stored -= 1), /\(raw: its size\)/],
        ['an empty block', (s) => (block(s, 7).size = 0), /blocks must follow on/],
        ['a negative offset in the file', (s) => (block(s, 2).dataOffset = -1), /dataOffset = -1 is not an integer/],
        ['a size past 32 bits', (s) => (block(s, 2).size = 2 ** 32), /size = 4.29497e\+09 is not an integer in \[0, 4294967295\]/],
        ['raw that is not a boolean', (s) => ((block(s, 2) as unknown as { raw: number }).raw = 1), /raw is not a boolean/],
        ['a length past the blocks', (s) => ((s.sources[0] as { length: number }).length = stream.decodedSize + 1), /length = \S+ is not an integer in \[0, 16777216\]/],
        ['blocks that are not an array', (s) => ((s.sources[0] as { blocks: unknown }).blocks = {}), /blocks is not an array/],
        ['a key that is not 32 bytes', (s) => ((s.sources[0] as NativeStream).encobj = { key: Buffer.alloc(16), header: 4096, plainSize: 0 }), /key must be a Buffer of 32 bytes/],
        ['plaintext past the file\'s whole pages', (s) => ((s.sources[0] as NativeStream).encobj = { key: Buffer.alloc(32), header: 4096, plainSize: file.size }), /plainSize = \S+ is not an integer in \[0, \d+\]/],
        ['pages beginning past the file', (s) => ((s.sources[0] as NativeStream).encobj = { key: Buffer.alloc(32), header: file.size + 1, plainSize: 0 }), /header = \S+ is not an integer/],
        ['a handle that is not a seek index', (s) => ((s.sources[0] as { stream: unknown }).stream = {}), /not a seek index handle/],
      ];
      for (const [what, spoil, message] of bad) {
        const spec = good();
        spoil(spec);
        expect(() => addon.prepare(spec, () => undefined), what).to.throw(message);
      }
    } finally {
      stream.close();
    }
  });

  describe('mounted beside the same memory plain', () => {
    let z: TestMount;
    before(async () => {
      z = await TestMount.start(vm.meta, ['--debug']);
      // Compressed blocks are served natively once the pass has indexed them: wait for all.
      expect(await z.stderrShows(/seek index built/, 60_000), z.stderr).to.equal(true);
    });
    after(async () => {
      await z?.unmount();
    });

    it('physmem.raw, physmem.lime and physmem.elf are byte for byte the plain mount\'s (cmp, sha256)', async () => {
      const plain = p as TestMount;
      const cmp = await runCommand('cmp', [z.path('physmem.raw'), plain.path('physmem.raw')]);
      expect(cmp.code, cmp.stdout + cmp.stderr).to.equal(0);
      for (const f of ['physmem.lime', 'physmem.elf']) expect(await sha256File(z.path(f)), f).to.equal(await sha256File(plain.path(f)));
    });

    it('random reads, across block edges, the raw block and the hole, from 8 readers at once', async () => {
      const edges: [number, number][] = [];
      for (const k of [1, 4, 5, 6, 47]) edges.push([k * BLOCK - 3000, 6000], [k * BLOCK - 1, 2], [k * BLOCK, 1]);
      edges.push([3072 * 4096 - 100, 200], [0x1000 * 4096 - 100, 200], [image.length - 10, 10]);
      for (const [pos, len] of edges) expect((await readRange(z.path('physmem.raw'), pos, len)).equals(image.subarray(pos, pos + len)), `at ${pos}+${len}`).to.equal(true);
      await readersAgree(z.path('physmem.raw'), image, Array.from({ length: 8 }, (_, i) => randomPlan(1000 + i, image.length, 30)));
    });

    it('were served natively: --debug counts at least every byte of physmem.raw, none failed', async () => {
      await z.unmount();
      const c = nativeCounts(z.stderr);
      // Every read above came after the index was built, so each went native: the one raw block
      // alone could not account for this many bytes.
      expect(c.bytes, z.stderr.slice(-2000)).to.be.at.least(image.length);
      expect(c.failed).to.equal(0);
      expect(z.stderr).to.not.match(/EIO/);
    });
  });

  describe('damage found by a native read is served by JavaScript: EIO with its reason, never zeros', () => {
    let m: TestMount | null = null;
    let copy = '';
    before(async () => {
      // The test's own copy of the folder, spoiled once the index is built (below).
      const dir = path.join(tmp.dir, 'spoiled');
      fs.mkdirSync(dir);
      copy = path.join(dir, path.basename(vm.vmem));
      fs.copyFileSync(vm.meta, path.join(dir, path.basename(vm.meta)));
      fs.copyFileSync(vm.vmem, copy);
      m = await TestMount.start(path.join(dir, path.basename(vm.meta)), ['--debug']);
      expect(await m.stderrShows(/seek index built/, 60_000), m.stderr).to.equal(true);
    });
    after(async () => {
      await m?.unmount();
    });

    it('a block damaged from the start stops the pass: reads there and past it go to JavaScript (EIO with the reason), those before it stay native', async () => {
      const dir = path.join(tmp.dir, 'stopped');
      fs.mkdirSync(dir);
      const z = fs.readFileSync(vm.vmem);
      // Block 2's payload no longer opens with a level-2 literal run: the pass stops there.
      z[headerOf(z, 2) + 16] = 0xe0;
      fs.writeFileSync(path.join(dir, path.basename(vm.vmem)), z);
      fs.copyFileSync(vm.meta, path.join(dir, path.basename(vm.meta)));
      const s = await TestMount.start(path.join(dir, path.basename(vm.meta)), ['--debug']);
      try {
        expect(await s.stderrShows(/seek index stopped/, 60_000), s.stderr.slice(-2000)).to.equal(true);
        // Twice: the first read waits for the pass, the second knows it stopped.
        for (let i = 0; i < 2; i++) {
          const err = await readRange(s.path('physmem.raw'), 2 * BLOCK + 4096 * (1 + i), 4096).then(() => null, (e: NodeJS.ErrnoException) => e);
          expect(err?.code).to.equal('EIO');
        }
        expect(await s.stderrShows(/block 2 \(stream bytes 524288-786432\) is damaged: first control byte 0xe0/), s.stderr.slice(-2000)).to.equal(true);
        expect((await readRange(s.path('physmem.raw'), BLOCK - 2048, 4096)).equals(image.subarray(BLOCK - 2048, BLOCK + 2048))).to.equal(true);
      } finally {
        await s.unmount();
      }
      const c = nativeCounts(s.stderr);
      expect(c.reads).to.be.greaterThan(0);
      expect(c.failed).to.equal(0);
    });

    it('a block whose stored bytes changed under the index, and a file cut short since: EIO and the reason logged; the rest still reads', async () => {
      const mnt = m as TestMount;
      const z = fs.readFileSync(copy);
      // Block 2's stored bytes become 0xff (a match whose length runs off the block, from wherever decoding starts).
      const stored2 = z.readUInt32LE(headerOf(z, 2) + 8);
      const fd = fs.openSync(copy, 'r+');
      try {
        fs.writeSync(fd, Buffer.alloc(stored2, 0xff), 0, stored2, headerOf(z, 2) + 16);
        // ...and the file ends inside block 40.
        fs.ftruncateSync(fd, headerOf(z, 40) + 1000);
      } finally {
        fs.closeSync(fd);
      }
      for (const [pos, why] of [[2 * BLOCK + 70_000, /block 2 .*is damaged/], [40 * BLOCK + 100_000, /block 40 is cut short|cut short/]] as const) {
        const err = await readRange(mnt.path('physmem.raw'), pos, 4096).then(() => null, (e: NodeJS.ErrnoException) => e);
        expect(err?.code, `read at ${pos}`).to.equal('EIO');
        expect(await mnt.stderrShows(why), mnt.stderr.slice(-2000)).to.equal(true);
      }
      expect((await readRange(mnt.path('physmem.raw'), 7 * BLOCK, 8192)).equals(image.subarray(7 * BLOCK, 7 * BLOCK + 8192))).to.equal(true);
      await mnt.unmount();
      const c = nativeCounts(mnt.stderr);
      expect(c.reads).to.be.greaterThan(0);
      expect(c.failed, 'the native path answered none of them EIO itself').to.equal(0);
    });
  });
});
