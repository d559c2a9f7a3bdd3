import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { guestLikeMemory } from './kit/fastlz-cases';
import { compressStream } from './kit/fastlz';
import { writeSnapshot } from './kit/writer';
import { CacheBudget } from '../src/cache/budget';
import { BlockStreamSource } from '../src/io/blockstream';
import { recogniseContainer } from '../src/io/container';
import { BufferSource, type Source } from '../src/io/source';
import { EncObjSource } from '../src/io/encobj';
import { Rng, checkLayers, layerCases, makeLayerBases, resizeLayer } from '../scripts/fuzz';
import { MemorySource } from './helpers/memory-source';
import { writeVmFolder, type VmFolder } from './helpers/encrypted';
import { TestMount } from './helpers/mount';
import { tempDir } from './helpers/paths';
import { runCli, runCommand } from './helpers/run';

/** Two 16-byte records that parse as block headers, the first's payload ending where the second begins. */
function fakeHeaders(page0: Buffer): void {
  page0.fill(0, 0, 64);
  for (const at of [0, 32]) {
    page0.writeUInt32LE(4096, at);
    page0.writeUInt32LE(16, at + 8);
  }
}

/** The offset of block k's header in a container. */
function headerOf(container: Buffer, k: number): number {
  let pos = 0;
  for (let i = 0; i < k; i++) pos += 16 + container.readUInt32LE(pos + 8);
  return pos;
}

describe('compressed memory: faults of the layer', function () {
  this.timeout(180_000);

  describe('recognising the container', () => {
    it('a plain memory file whose page 0 looks like two block headers is plain memory, and says why', () => {
      const plain = guestLikeMemory(256, 1);
      fakeHeaders(plain);
      const r = recogniseContainer(new BufferSource('p.vmem', plain), plain.length);
      expect(r.compressed).to.equal(false);
      expect(!r.compressed && r.why).to.match(/look like a compressed block header, but it is exactly the 1048576 bytes the memory group needs/);
      const unknownNeed = recogniseContainer(new BufferSource('p.vmem', plain), null);
      expect(unknownNeed.compressed, 'the chain does not run to the end of the file').to.equal(false);
      expect(!unknownNeed.compressed && unknownNeed.why).to.match(/block header at byte 64 is not a valid one/);
    });

    it('an intact chain whose blocks decode to another size than the memory group needs is plain memory, and says why', () => {
      const z = compressStream(guestLikeMemory(64), 64 * 1024).bytes;
      expect(recogniseContainer(new BufferSource('z.vmem', z), 64 * 4096).compressed).to.equal(true);
      const r = recogniseContainer(new BufferSource('z.vmem', z), 65 * 4096);
      expect(!r.compressed && r.why).to.match(/its 4 blocks decode to 262144 bytes where the memory group needs 266240/);
    });

    it('a chain whose last block is cut short is the container, cut: served up to the cut and reported', async () => {
      const plain = guestLikeMemory(64);
      const z = compressStream(plain, 64 * 1024).bytes;
      const cut = z.subarray(0, headerOf(z, 3) + 100);
      const r = recogniseContainer(new BufferSource('cut.vmem', cut), 64 * 4096);
      expect(r.compressed).to.equal(true);
      const src = new BlockStreamSource(new BufferSource('cut.vmem', cut));
      expect(src.size).to.equal(3 * 64 * 1024);
      expect(src.damaged[0]?.why).to.match(/block 3 \(stored at byte \d+\) runs past the end of the file/);
      const b = Buffer.alloc(4096);
      await src.read(b, 0, 4096, 3 * 64 * 1024 - 4096);
      expect(b.equals(plain.subarray(3 * 64 * 1024 - 4096, 3 * 64 * 1024))).to.equal(true);
    });

    describe('through info and the mount', () => {
      const tmp = tempDir('vmssfs-fakehdr-');
      let m: TestMount | null = null;
      let snap = '';
      let vmem = '';
      before(() => {
        const w = writeSnapshot(path.join(tmp.dir, 'guest.vmss'), { memory: 'vmem', blobPages: 512 });
        snap = w.path;
        vmem = w.vmemPath as string;
        const bytes = fs.readFileSync(vmem);
        fakeHeaders(bytes);
        fs.writeFileSync(vmem, bytes);
      });
      after(async () => {
        await m?.unmount();
        tmp.cleanup();
      });

      it('info names the file and why it is read as plain; physmem.raw is the file, byte for byte', async () => {
        const info = await runCli(['info', snap]);
        expect(info.code).to.equal(0);
        expect(info.stdout).to.match(/WARNING: .*guest\.vmem: read as plain memory, not as a compressed block stream: its first bytes look like a compressed block header, but it is exactly/);
        m = await TestMount.start(snap);
        const cmp = await runCommand('cmp', [m.path('physmem.raw'), vmem]);
        expect(cmp.code, cmp.stdout + cmp.stderr).to.equal(0);
      });
    });
  });

  describe('the fuzzer and the decoded size the memory group needs', () => {
    it('a chain that decodes to another size than the memory group needs is read as plain memory, never as compressed', async () => {
      const bases = makeLayerBases();
      const rng = new Rng(7);
      const seen = new Set<string>();
      for (let i = 0; i < 40; i++) {
        const base = bases[i % bases.length]!;
        const c = resizeLayer(base, rng);
        seen.add(c.what.replace(/\d+/g, 'N'));
        let src: Source = new MemorySource('r.vmem', c.bytes);
        if (base.key) src = EncObjSource.open(src, base.key);
        const r = recogniseContainer(src, c.need);
        expect(r.compressed, `${base.name}: ${c.what}`).to.equal(false);
        expect(!r.compressed && r.why, `${base.name}: ${c.what}`).to.match(/decode to \d+ bytes where the memory group needs \d+|it is exactly the \d+ bytes the memory group needs/);
        expect(await checkLayers('r.vmem', c.bytes, base.key, c.need), `${base.name}: ${c.what}`).to.equal('plain');
      }
      expect([...seen].sort()).to.deep.equal([
        'first block repeated',
        'last block dropped',
        "last block's size N -> N (header at N)",
        'memory group needs N bytes, not N',
      ]);
    });

    it('the fixed seed\'s layer cases include streams read as plain memory, and none breaks the rule', async () => {
      let plain = 0;
      let n = 0;
      for (const c of layerCases(makeLayerBases(), 20261125, 300)) {
        n++;
        try {
          if ((await checkLayers('case.vmem', c.bytes, c.key, c.need)) === 'plain') plain++;
        } catch (err) {
          expect.fail(`case ${n} (${c.base}: ${c.what}): ${(err as Error).message}`);
        }
      }
      expect(plain, 'some are no longer the container').to.be.greaterThan(0);
    });
  });

  describe('a budget below one block and its window', () => {
    it('is raised to a floor that works, said once however many streams share it', async () => {
      const plain = guestLikeMemory(2048);
      const z = compressStream(plain).bytes;
      const budget = new CacheBudget(1024 * 1024);
      const a = new BlockStreamSource(new BufferSource('a.vmem', z), { budget });
      const b = new BlockStreamSource(new BufferSource('b.vmem', z), { budget });
      expect(budget.maxBytes, 'one 4 MiB block with its window, and room to decode').to.be.at.least(4 * 1024 * 1024 + 73728);
      expect(a.notes.concat(b.notes).filter((n) => /--cache-size/.test(n))).to.have.length(1);
      expect(a.notes[0]).to.match(/--cache-size 1 MiB is below what compressed memory needs to decode .*: the caches use \d+ MiB/);
      const got = Buffer.alloc(plain.length);
      expect(await b.read(got, 0, got.length, 0)).to.equal(plain.length);
      expect(got.equals(plain)).to.equal(true);
    });
  });

  describe('many readers, a tiny budget', () => {
    it('no read of an intact stream fails, whatever is evicted while others wait', async () => {
      // Blocks shorter than the window, each reaching into those before: a first read far ahead
      // decodes forward through several, awaiting each one's stored bytes while the other
      // readers' decodes evict what it decoded last. (No zero-window references here.)
      const plain = guestLikeMemory(1024, 1);
      for (const bs of [20000, 64 * 1024]) {
        const { bytes, stats } = compressStream(plain, bs);
        expect(stats.crossBlock).to.be.greaterThan(10);
        expect(stats.zeroWindow).to.equal(0);
        for (const budgetBytes of [1, 300 * 1024, 600 * 1024]) {
          const src = new BlockStreamSource(new BufferSource('c.vmem', bytes), { budget: new CacheBudget(budgetBytes) });
          let x = budgetBytes | 1;
          const reads: Promise<void>[] = [];
          for (let r = 0; r < 48; r++) {
            x = (Math.imul(x, 1103515245) + 12345) >>> 0;
            // Reads near the start too, where decoding forward costs less than tracing back.
            const pos = r % 3 === 0 ? (r / 3 + 1) * bs + 100 : x % (plain.length - 8192);
            reads.push((async () => {
              const b = Buffer.alloc(8192);
              await src.read(b, 0, b.length, pos);
              expect(b.equals(plain.subarray(pos, pos + 8192)), `blocks of ${bs}, budget ${budgetBytes}: read at ${pos}`).to.equal(true);
            })());
          }
          await Promise.all(reads);
        }
      }
    });

    it('through the mount with --cache-size 1 and sixteen readers at once', async () => {
      const tmp = tempDir('vmssfs-tinybudget-');
      let m: TestMount | null = null;
      try {
        const vm: VmFolder = writeVmFolder(tmp.dir, { encrypt: false, compress: true, blobPages: 8192, blockSize: 256 * 1024 });
        m = await TestMount.start(vm.meta, ['--cache-size', '1']);
        const want = fs.readFileSync(vm.plain.vmemPath as string);
        const mnt = m;
        await Promise.all([...Array(16).keys()].map(async (i) => {
          const fh = await fs.promises.open(mnt.path('physmem.raw'), 'r');
          try {
            for (let k = 0; k < 12; k++) {
              const page = (i * 7919 + k * 104729) % 8192;
              const b = Buffer.alloc(65536);
              const n = (await fh.read(b, 0, b.length, page * 4096)).bytesRead;
              expect(b.subarray(0, n).equals(want.subarray(page * 4096, page * 4096 + n)), `reader ${i} at page ${page}`).to.equal(true);
            }
          } finally {
            await fh.close();
          }
        }));
        expect(m.stderr).to.not.match(/EIO|lost/);
      } finally {
        await m?.unmount();
        tmp.cleanup();
      }
    });
  });

  describe('a damaged block', () => {
    const tmp = tempDir('vmssfs-damagedblock-');
    let vm: VmFolder;
    let m: TestMount | null = null;
    before(() => {
      vm = writeVmFolder(tmp.dir, { encrypt: false, compress: true, blobPages: 1024, blockSize: 256 * 1024 });
      const z = fs.readFileSync(vm.vmem);
      // Block 2's payload no longer opens with a level-2 literal run.
      z[headerOf(z, 2) + 16] = 0xe0;
      fs.writeFileSync(vm.vmem, z);
    });
    after(async () => {
      await m?.unmount();
      tmp.cleanup();
    });

    it('its reason reaches the daemon\'s log and cat\'s message, not only EIO', async () => {
      m = await TestMount.start(vm.meta);
      const fh = await fs.promises.open(m.path('physmem.raw'), 'r');
      let code: string | undefined;
      try {
        await fh.read(Buffer.alloc(4096), 0, 4096, 2 * 256 * 1024 + 4096).catch((e: NodeJS.ErrnoException) => (code = e.code));
      } finally {
        await fh.close();
      }
      expect(code).to.equal('EIO');
      expect(await m.stderrShows(/block 2 \(stream bytes 524288-786432\) is damaged: first control byte 0xe0 is not a level-2 literal run/)).to.equal(true);
      const cat = await runCli(['cat', vm.meta, 'physmem.raw'], { timeoutMs: 60_000 });
      expect(cat.code).to.equal(1);
      expect(cat.stderr).to.match(/block 2 \(stream bytes 524288-786432\) is damaged: first control byte 0xe0 is not a level-2 literal run/);
    });
  });
});
