import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encryptFile } from './kit/encrypted-vm';
import { writeVmFolder } from './helpers/encrypted';
import { writeSnapshot, type SnapshotOptions, type WrittenSnapshot } from './kit/writer';
import { loadNative, nativeSpec, type NativeSpec } from '../src/fuse/native';
import type { ChunkSource } from '../src/cache/pagecache';
import { PageCache } from '../src/cache/pagecache';
import { openSnapshot } from '../src/evidence/snapshot';
import { buildTree } from '../src/tree/build';
import type { Node } from '../src/tree/nodes';
import { isMounted, TestMount } from './helpers/mount';
import { REPO, SAMPLE, scratchDir } from './helpers/paths';
import { readRange, sha256File } from './helpers/read';
import { writeVault } from './helpers/vault';
import { runCli, runCommand } from './helpers/run';

const PAGE = 4096;
const HELPERS = path.join(__dirname, 'helpers');
const JS_PATH = { VMSSFS_NATIVE: '0' };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs with holes between them, a LiME/ELF view with a header per run, block tags, a screenshot. */
const LAYOUT: SnapshotOptions = {
  memory: 'embedded',
  blobPages: 300,
  regions: [
    { ppn: 0, pageNum: 0, pages: 100 },
    { ppn: 256, pageNum: 100, pages: 60 },
    { ppn: 1024, pageNum: 160, pages: 140 },
  ],
  shuffle: true,
};

/** Every regular file of a tree with its path, for walking. */
function files(node: Node, at = ''): [string, Node][] {
  if (node.kind === 'file') return [[at, node]];
  return [...node.children].flatMap(([name, child]) => files(child, `${at}/${name}`));
}

/** Read offsets worth checking in a file made of extents: each edge, a little either side, and the end. */
function probes(extents: readonly { start: number; length: number }[], size: number): [number, number][] {
  const out: [number, number][] = [[0, 1], [0, 200_000], [size - 1, 1], [Math.max(0, size - 5000), 5000], [size, 100], [size - 10, 100]];
  for (const e of extents) {
    for (const at of [e.start, e.start + e.length]) out.push([Math.max(0, at - 100), 200], [Math.max(0, at - 1), 2], [Math.max(0, at - PAGE), 3 * PAGE]);
  }
  return out.filter(([pos]) => pos >= 0);
}

describe('native read path: a libfuse module serving plain evidence on libfuse\'s threads', function () {
  this.timeout(120_000);
  const scratch = scratchDir('vmssfs-native-');

  it('is built and loads (make build builds native/)', () => {
    const lib = loadNative({});
    expect(lib.addon, 'reason' in lib ? lib.reason : '').to.not.equal(null);
  });

  describe('the addon checks every number it is given', () => {
    it('refuses bad descriptors, sizes, offsets, extents, bytes and paths, one clear error each', () => {
      const lib = loadNative({});
      if (!lib.addon) throw new Error('addon not loaded');
      const addon = lib.addon;
      const file = scratch.named('source.bin');
      fs.writeFileSync(file, Buffer.alloc(8192, 7));
      const fd = fs.openSync(file, 'r');
      try {
        const st = fs.statSync(file);
        const good = (): NativeSpec => ({
          maxOpened: 1,
          sources: [{ fd, size: 8192 }, { path: file, dev: st.dev, ino: st.ino, size: 8192 }],
          files: [{ path: '/a', size: 10_000, extents: [{ start: 0, length: 16, bytes: Buffer.alloc(16) }, { start: 100, length: 8000, source: 0, sourceOffset: 0 }] }],
        });
        const id = addon.prepare(good(), () => undefined);
        expect(id).to.be.a('number').above(0);
        addon.discard(id);
        const bad: [string, (s: NativeSpec) => void, RegExp][] = [
          ['a closed descriptor', (s) => ((s.sources[0] as { fd: number }).fd = 1 << 20), /descriptor is not open/],
          ['a negative size', (s) => ((s.sources[0] as { size: number }).size = -1), /size = -1 is not an integer/],
          ['a fractional size', (s) => ((s.files[0] as { size: number }).size = 10.5), /size = 10.5 is not an integer/],
          ['a size past 2^53', (s) => ((s.files[0] as { size: number }).size = 2 ** 60), /is not an integer/],
          ['a size that is not a number', (s) => ((s.files[0] as unknown as { size: string }).size = '10'), /size is not a number/],
          ['an extent past the end of its file', (s) => ((s.files[0]?.extents[1] as { length: number }).length = 9_950), /length = 9950 is not an integer in \[0, 9900\]/],
          ['overlapping extents', (s) => ((s.files[0]?.extents[1] as { start: number }).start = 10), /sorted and apart/],
          ['an empty extent', (s) => ((s.files[0]?.extents[0] as { length: number }).length = 0), /non-empty/],
          ['bytes of another length', (s) => ((s.files[0]?.extents[0] as { bytes: Buffer }).bytes = Buffer.alloc(15)), /Buffer of its length/],
          ['a source that does not exist', (s) => ((s.files[0]?.extents[1] as { source: number }).source = 2), /source = 2 is not an integer in \[0, 1\]/],
          ['a source path that is not absolute', (s) => ((s.sources[1] as { path: string }).path = 'source.bin'), /path must be absolute/],
          ['a source path with a NUL', (s) => ((s.sources[1] as { path: string }).path = `${file}\0x`), /hold no NUL/],
          ['an inode that is not a number', (s) => ((s.sources[1] as unknown as { ino: string }).ino = 'x'), /ino is not a number/],
          ['a negative bound on opened files', (s) => (s.maxOpened = -1), /maxOpened = -1 is not an integer/],
          ['a path without a leading /', (s) => ((s.files[0] as { path: string }).path = 'a'), /must start with \//],
          ['two files with one path', (s) => s.files.push({ ...(s.files[0] as NativeSpec['files'][0]) }), /share a path/],
        ];
        for (const [what, spoil, message] of bad) {
          const spec = good();
          spoil(spec);
          expect(() => addon.prepare(spec, () => undefined), what).to.throw(message);
        }
        expect(() => addon.prepare({} as NativeSpec, () => undefined)).to.throw(/sources is not an array/);
        expect(() => (addon.prepare as (s: NativeSpec) => number)(good())).to.throw(/error callback/);
      } finally {
        fs.closeSync(fd);
      }
    });
  });

  describe('what goes native: derived from the tree\'s extents', () => {
    it('physmem.raw, the views, the screenshot and every block tag; nothing made in memory', () => {
      const w = writeSnapshot(scratch.file(), LAYOUT);
      const snap = openSnapshot(w.path);
      try {
        const tree = buildTree(snap, new PageCache({ maxBytes: 1 << 20 }));
        const { spec } = nativeSpec(tree);
        const paths = spec.files.map((f) => f.path);
        expect(paths).to.include.members(['/physmem.raw', '/physmem.lime', '/physmem.elf', '/screenshot.png']);
        expect(paths).to.not.include.members(['/info.txt', '/metadata.json', '/config.vmx']);
        // Exactly the files whose bytes the tree assembles from the snapshot file's extents.
        const fromExtents = files(tree.root).filter(([, n]) => n.kind === 'file' && n.extents?.some((e) => 'source' in e)).map(([p]) => p);
        expect([...paths].sort()).to.deep.equal([...fromExtents].sort());
        expect(paths.filter((p) => p.startsWith('/groups/')).length).to.be.greaterThan(3);
        // The map is the tree's extents, not a second derivation.
        const raw = spec.files.find((f) => f.path === '/physmem.raw');
        expect(raw?.extents.map((e) => [e.start, e.length])).to.deep.equal(w.runs.map((r) => [r.physAddr, r.length]));
      } finally {
        snap.close();
      }
    });

    it('leaves a file on the JavaScript path when any of its sources is not plain (no directFd)', () => {
      const w = writeSnapshot(scratch.file(), LAYOUT);
      const snap = openSnapshot(w.path);
      try {
        const tree = buildTree(snap, new PageCache({ maxBytes: 1 << 20 }));
        // What an encrypted or remote source looks like to the tree: the same reads, no directFd.
        const hidden = new Map<ChunkSource, ChunkSource>();
        const opaque = (src: ChunkSource): ChunkSource => {
          let o = hidden.get(src);
          if (!o) hidden.set(src, (o = { id: src.id, name: src.name, size: src.size, read: (b, off, len, pos) => src.read(b, off, len, pos) }));
          return o;
        };
        const raw = tree.lookup('/physmem.raw');
        if (!raw || raw.kind !== 'file' || !raw.extents) throw new Error('no physmem.raw');
        const first = raw.extents[0] as { source: ChunkSource };
        first.source = opaque(first.source);
        const paths = nativeSpec(tree).spec.files.map((f) => f.path);
        expect(paths).to.not.include('/physmem.raw');
        expect(paths).to.include('/physmem.lime');
      } finally {
        snap.close();
      }
    });
  });

  for (const [name, truncate] of [['a snapshot with holes, views and block tags', false], ['a truncated copy (zeros past the end, with the warning)', true]] as const) {
    describe(`byte for byte the JavaScript path: ${name}`, () => {
      let w: WrittenSnapshot;
      let native: TestMount;
      let js: TestMount;
      let served: string[];
      before(async () => {
        w = writeSnapshot(scratch.file(), LAYOUT);
        // A copy cut inside the last run: the tree serves zeros past the cut and says so.
        if (truncate) fs.truncateSync(w.path, fs.statSync(w.path).size - 50 * PAGE - 123);
        const snap = openSnapshot(w.path);
        try {
          served = nativeSpec(buildTree(snap, new PageCache({ maxBytes: 1 << 20 }))).spec.files.map((f) => f.path);
        } finally {
          snap.close();
        }
        native = await TestMount.start(w.path, ['--debug']);
        js = await TestMount.start(w.path, [], JS_PATH);
      });
      after(async () => {
        await native?.unmount();
        await js?.unmount();
      });

      it('whole files hash the same on both paths (physmem.raw also to the writer\'s image)', async () => {
        for (const p of served) expect(await sha256File(native.path(p)), p).to.equal(await sha256File(js.path(p)));
        if (!truncate) expect(await sha256File(native.path('physmem.raw'))).to.equal(w.physSha256());
      });

      it('reads at every extent edge, across holes and headers, and past the end match', async () => {
        const snap = openSnapshot(w.path);
        try {
          const tree = buildTree(snap, new PageCache({ maxBytes: 1 << 20 }));
          for (const p of ['/physmem.raw', '/physmem.lime', '/physmem.elf']) {
            const node = tree.lookup(p);
            if (!node || node.kind !== 'file' || !node.extents) throw new Error(`no ${p}`);
            for (const [pos, len] of probes(node.extents, node.size)) {
              const got = await readRange(native.path(p), pos, len);
              expect(got, `${p} at ${pos}+${len}`).to.deep.equal(await readRange(js.path(p), pos, len));
              expect(got.length, `${p} at ${pos}+${len}`).to.equal(Math.max(0, Math.min(len, node.size - pos)));
            }
          }
        } finally {
          snap.close();
        }
        if (!truncate) {
          for (const r of w.runs) {
            const at = Math.max(0, r.physAddr - 10);
            expect(await readRange(native.path('physmem.raw'), at, 20)).to.deep.equal(w.readPhys(at, 20));
          }
        }
      });

      it('were served natively: --debug counts the native reads at unmount, none failed', async () => {
        if (truncate) expect(native.stderr).to.match(/warning: .*(truncated|shorter|ends)/i);
        await native.unmount();
        const line = native.stderr.split('\n').find((l) => l.startsWith('vmssfs: native reads: '));
        expect(line, native.stderr.slice(-2000)).to.match(/^vmssfs: native reads: [1-9]\d* served \(\d+ bytes, \d+ spliced\), 0 failed$/);
        // Long reads inside one run are answered with the source's pages (spliced): the hashes
        // above went through that path too.
        expect(Number(/(\d+) spliced/.exec(line ?? '')?.[1]), line).to.be.greaterThan(0);
        expect(native.stderr).to.match(/native reads on \(.*vmssfs_native\.node\) for \d+ files/);
        // Sequential readers get a wider kernel read-ahead (the suite runs as root, who may set it).
        expect(native.stderr).to.match(/^vmssfs: read-ahead: 1024 KiB$/m);
      });
    });
  }

  describe('faults on the native path', () => {
    it('answers EIO, not zeros, when the source shrinks after mounting; logs it; serves the rest', async () => {
      const w = writeSnapshot(scratch.file(), LAYOUT);
      const m = await TestMount.start(w.path, ['--debug']);
      try {
        const last = w.runs[w.runs.length - 1] as { physAddr: number; fileOffset: number };
        // The test's own copy, not evidence: cut it inside the last run.
        fs.truncateSync(w.path, last.fileOffset + PAGE);
        const err = await readRange(m.path('physmem.raw'), last.physAddr + 64 * PAGE, PAGE).then(() => null, (e: NodeJS.ErrnoException) => e);
        expect(err?.code).to.equal('EIO');
        // A long read (O_DIRECT: the kernel asks for 128 KiB at once) takes the splice path,
        // which must not come back short either.
        const dd = await runCommand('dd', [`if=${m.path('physmem.raw')}`, 'of=/dev/null', 'bs=128K', 'count=1', `skip=${last.physAddr + 8 * PAGE}`, 'iflag=skip_bytes,direct']);
        expect(dd.code, dd.stderr).to.not.equal(0);
        expect(dd.stderr).to.match(/Input\/output error/);
        expect(await readRange(m.path('physmem.raw'), PAGE, 100)).to.deep.equal(w.readPhys(PAGE, 100));
        expect(await m.stderrShows(/read \/physmem\.raw at \d+ \(\+\d+\): .*file shrank since it was opened.*: answered EIO/), m.stderr).to.equal(true);
        await m.unmount();
        expect(m.stderr).to.match(/native reads: \d+ served \(\d+ bytes, \d+ spliced\), [1-9]\d* failed/);
        expect(m.stderr).to.match(/native reads answered EIO \(last: EIO\)/);
      } finally {
        await m.unmount();
      }
    });

    it('gives 8 concurrent readers at random offsets exactly the flat image', async () => {
      const w = writeSnapshot(scratch.file(), LAYOUT);
      const m = await TestMount.start(w.path);
      try {
        let seed = 777;
        const rand = (n: number): number => {
          seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
          return seed % n;
        };
        const plans = Array.from({ length: 8 }, () => Array.from({ length: 40 }, (): [number, number] => [rand(w.physSize), 1 + rand(300_000)]));
        const results = await Promise.all(plans.map((p) => runCommand(process.execPath, [path.join(HELPERS, 'reader.js'), m.path('physmem.raw'), JSON.stringify(p)])));
        results.forEach((r, i) => {
          expect(r.code, r.stderr).to.equal(0);
          const want = (plans[i] as [number, number][]).map(([pos, len]) => createHash('sha256').update(w.readPhys(pos, len)).digest('hex'));
          expect(r.stdout.trim().split('\n'), `reader ${i}`).to.deep.equal(want);
        });
      } finally {
        await m.unmount();
      }
    });

    it('survives a reader killed mid-read and serves the next one', async () => {
      const m = await TestMount.start(SAMPLE);
      try {
        const dd = spawn('dd', [`if=${m.path('physmem.raw')}`, 'of=/dev/null', 'bs=1M'], { stdio: 'ignore' });
        await sleep(200);
        dd.kill('SIGKILL');
        await new Promise((r) => dd.on('close', r));
        expect((await readRange(m.path('physmem.raw'), 0x100000000, 28)).toString()).to.equal('vmssfs page 0x0000100000000\n');
        expect(await isMounted(m.mountpoint)).to.equal(true);
      } finally {
        await m.unmount();
      }
    });

    for (const how of ['SIGTERM', 'SIGINT', 'SIGHUP', 'fusermount -u'] as const) {
      it(`unmounts on ${how} while readers are active: readers end, no mount and no daemon remain`, async () => {
        const m = await TestMount.start(SAMPLE);
        try {
          const readers = Array.from({ length: 4 }, (_, i) =>
            runCommand('dd', [`if=${m.path(i % 2 ? 'physmem.raw' : 'physmem.elf')}`, 'of=/dev/null', 'bs=128k'], { timeoutMs: 60_000 }));
          await sleep(300);
          if (how === 'fusermount -u') {
            // Busy: a plain unmount is refused while readers hold files open; the lazy one is not.
            const r = await runCommand('fusermount', ['-u', m.mountpoint]);
            if (r.code !== 0) expect((await runCommand('fusermount', ['-uz', m.mountpoint])).code).to.equal(0);
          } else {
            process.kill(m.pid, how);
          }
          expect(await m.waitExit(30_000)).to.equal(0);
          for (const r of await Promise.all(readers)) expect(r.signal, 'a reader hung and was killed').to.equal(null);
          expect(await isMounted(m.mountpoint)).to.equal(false);
        } finally {
          await m.unmount();
        }
      });
    }
  });

  describe('fallback when the addon cannot load', () => {
    it('mounts on the JavaScript path and says so once, on stderr and in --debug', async () => {
      const w = writeSnapshot(scratch.file(), LAYOUT);
      const bogus = scratch.named('not-an-addon.node');
      fs.writeFileSync(bogus, 'this is not a shared object\n');
      const m = await TestMount.start(w.path, ['--debug'], { VMSSFS_NATIVE_ADDON: bogus });
      try {
        expect(await sha256File(m.path('physmem.raw'))).to.equal(w.physSha256());
        const lines = m.stderr.split('\n');
        const warned = lines.filter((l) => l.startsWith('vmssfs: warning: native reads unavailable'));
        expect(warned, m.stderr.slice(0, 2000)).to.have.length(1);
        expect(warned[0]).to.include('not-an-addon.node');
        expect(lines.filter((l) => l.startsWith('vmssfs: native reads off: '))).to.have.length(1);
        // The reads went through JavaScript: its trace shows them.
        expect(lines.some((l) => /^vmssfs: read \/physmem\.raw @0\+\d+ -> \d+$/.test(l))).to.equal(true);
      } finally {
        await m.unmount();
      }
      expect(m.stderr).to.not.match(/native reads: \d+ served/);
    });

    it('as a detached daemon, tells the starting command once on its stderr', async () => {
      const w = writeSnapshot(scratch.file(), LAYOUT);
      const bogus = scratch.named('also-not-an-addon.node');
      fs.writeFileSync(bogus, '');
      const mnt = scratch.named('daemon-mnt');
      fs.mkdirSync(mnt);
      try {
        const r = await runCli([w.path, mnt], { env: { ...process.env, VMSSFS_NATIVE_ADDON: bogus } });
        expect(r.code, r.stderr).to.equal(0);
        expect(r.stderr.trim().split('\n')).to.have.length(1);
        expect(r.stderr).to.match(/^vmssfs: warning: native reads unavailable \(.*also-not-an-addon\.node.*\): every read goes through JavaScript\n$/);
        expect(await readRange(path.join(mnt, 'physmem.raw'), 0, PAGE)).to.deep.equal(w.readPhys(0, PAGE));
      } finally {
        if (await isMounted(mnt)) await runCommand('fusermount', ['-u', mnt]);
      }
    });

    it('says nothing on stderr when the native path is turned off on purpose (VMSSFS_NATIVE=0)', async () => {
      const w = writeSnapshot(scratch.file(), LAYOUT);
      const m = await TestMount.start(w.path, [], JS_PATH);
      try {
        expect(await readRange(m.path('physmem.raw'), 0, PAGE)).to.deep.equal(w.readPhys(0, PAGE));
      } finally {
        await m.unmount();
      }
      expect(m.stderr).to.equal('');
    });
  });

  describe('under AddressSanitizer (make native-asan)', () => {
    const addon = path.join(REPO, 'native', 'build-asan', 'build', 'Release', 'vmssfs_native.node');
    const asanEnv = {
      VMSSFS_NATIVE_ADDON: addon,
      LD_PRELOAD: '',
      // Node itself is not instrumented: leaks are its business; any error in ours ends the process.
      ASAN_OPTIONS: 'detect_leaks=0:halt_on_error=1:exitcode=66',
    };
    before(function () {
      this.timeout(240_000);
      const build = spawnSync('make', ['-s', '-C', REPO, 'native-asan'], { encoding: 'utf8', timeout: 180_000 });
      expect(build.status, build.stderr).to.equal(0);
      const libasan = spawnSync('gcc', ['-print-file-name=libasan.so'], { encoding: 'utf8' }).stdout.trim();
      expect(path.isAbsolute(libasan), 'gcc knows libasan').to.equal(true);
      asanEnv.LD_PRELOAD = libasan;
    });

    it('serves holes, edges, views, tags, concurrent readers and a failing read with no memory error', async () => {
      const w = writeSnapshot(scratch.file(), LAYOUT);
      const m = await TestMount.start(w.path, ['--debug'], asanEnv);
      try {
        expect(m.stderr).to.include(`native reads on (${addon})`);
        // The failing read first (before the kernel caches those pages), on the test's own copy,
        // which is then put back as it was.
        const whole = fs.readFileSync(w.path);
        const last = w.runs[w.runs.length - 1] as { physAddr: number; fileOffset: number };
        fs.truncateSync(w.path, last.fileOffset + PAGE);
        const err = await readRange(m.path('physmem.raw'), last.physAddr + 8 * PAGE, PAGE).then(() => null, (e: NodeJS.ErrnoException) => e);
        expect(err?.code).to.equal('EIO');
        expect(await m.stderrShows(/file shrank/), m.stderr).to.equal(true);
        fs.writeFileSync(w.path, whole);
        expect(await sha256File(m.path('physmem.raw'))).to.equal(w.physSha256());
        for (const p of ['physmem.lime', 'physmem.elf', 'screenshot.png']) await sha256File(m.path(p));
        const plans = Array.from({ length: 4 }, (_, i) => w.runs.map((r): [number, number] => [Math.max(0, r.physAddr - 1000 * (i + 1)), 3000 * (i + 1)]));
        const readers = await Promise.all(plans.map((p) => runCommand(process.execPath, [path.join(HELPERS, 'reader.js'), m.path('physmem.raw'), JSON.stringify(p)])));
        for (const r of readers) expect(r.code, r.stderr).to.equal(0);
      } finally {
        await m.unmount();
      }
      expect(await m.waitExit(), m.stderr.slice(-3000)).to.equal(0);
      expect(m.stderr).to.not.match(/AddressSanitizer|LeakSanitizer/);
      expect(m.stderr).to.match(/native reads: [1-9]\d* served/);

      // A VM folder: the addon opens its memory files itself, and refuses one replaced meanwhile.
      const dir = scratch.named('asan-folder');
      fs.mkdirSync(dir);
      const vault = writeVault(dir);
      const f = await TestMount.start(dir, ['--debug'], asanEnv);
      try {
        const vmem = path.join(dir, 'vault-Snapshot1.vmem');
        fs.renameSync(vmem, path.join(dir, 'kept.vmem'));
        fs.copyFileSync(path.join(dir, 'vault-Snapshot2.vmem'), vmem);
        const swapped = await readRange(f.path('clean install', 'physmem.raw'), 0, 4096).then(() => null, (e: NodeJS.ErrnoException) => e);
        expect(swapped?.code).to.equal('EIO');
        expect(await f.stderrShows(/no longer the file that was mounted/), f.stderr).to.equal(true);
        expect(await sha256File(f.path('after sample', 'physmem.raw'))).to.equal(vault.checkpoints.get(2)?.physSha256());
        expect(await sha256File(f.path('suspended', 'physmem.raw'))).to.equal(vault.checkpoints.get('suspended')?.physSha256());
      } finally {
        await f.unmount();
      }
      expect(await f.waitExit(), f.stderr.slice(-3000)).to.equal(0);
      expect(f.stderr).to.not.match(/AddressSanitizer|LeakSanitizer/);
      expect(f.stderr).to.match(/native reads: [1-9]\d* served .*, [1-9]\d* failed/);
    });

    it('serves a compressed stream from the seek index, plain and encrypted: random reads before and after the index, sequential and concurrent readers, a damaged block handed to JavaScript, with no memory error', async () => {
      const root = scratch.named('asan-zip');
      fs.mkdirSync(root);
      const BLOCK = 256 * 1024;
      const vm = writeVmFolder(root, { encrypt: false, compress: true, blobPages: 2048, blockSize: BLOCK, rawBlocks: [2] });
      const image = fs.readFileSync(vm.plain.vmemPath as string);
      const hash = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
      let x = 4242;
      const plan = (): [number, number][] => Array.from({ length: 25 }, (): [number, number] => {
        x = (Math.imul(x, 1103515245) + 12345) >>> 0;
        return [x % image.length, 1 + (x % 200_000)];
      });
      const m = await TestMount.start(vm.meta, ['--debug'], asanEnv);
      try {
        expect(m.stderr).to.include(`native reads on (${addon})`);
        // Reads racing the index pass: blocks it has not reached go to JavaScript.
        const early = plan();
        const first = await runCommand(process.execPath, [path.join(HELPERS, 'reader.js'), m.path('physmem.raw'), JSON.stringify(early)]);
        expect(first.stdout.trim().split('\n'), first.stderr).to.deep.equal(early.map(([pos, len]) => hash(image.subarray(pos, pos + len))));
        expect(await m.stderrShows(/seek index built/, 90_000), m.stderr.slice(-2000)).to.equal(true);
        expect(await sha256File(m.path('physmem.raw'))).to.equal(hash(image));
        const dd = await runCommand('dd', [`if=${m.path('physmem.raw')}`, 'of=/dev/null', 'bs=1M', 'iflag=direct']);
        expect(dd.code, dd.stderr).to.equal(0);
        const plans = Array.from({ length: 4 }, plan);
        const readers = await Promise.all(plans.map((p) => runCommand(process.execPath, [path.join(HELPERS, 'reader.js'), m.path('physmem.raw'), JSON.stringify(p)])));
        readers.forEach((r, i) => expect(r.stdout.trim().split('\n'), r.stderr).to.deep.equal((plans[i] as [number, number][]).map(([pos, len]) => hash(image.subarray(pos, pos + len)))));
        // Block 4's stored bytes overwritten under the index (0xff: a match whose length runs off the block): the native decode finds it damaged, JavaScript answers EIO and says why.
        const z = fs.readFileSync(vm.vmem);
        let at = 0;
        for (let k = 0; k < 4; k++) at += 16 + z.readUInt32LE(at + 8);
        const fd = fs.openSync(vm.vmem, 'r+');
        try {
          fs.writeSync(fd, Buffer.alloc(z.readUInt32LE(at + 8), 0xff), 0, z.readUInt32LE(at + 8), at + 16);
        } finally {
          fs.closeSync(fd);
        }
        // O_DIRECT: past the kernel's cache of the pages read above.
        const bad = await runCommand('dd', [`if=${m.path('physmem.raw')}`, 'of=/dev/null', 'bs=4K', 'count=1', `skip=${4 * BLOCK + 12 * 4096}`, 'iflag=skip_bytes,direct']);
        expect(bad.stderr).to.match(/Input\/output error/);
        expect(await m.stderrShows(/block 4 .*is damaged/), m.stderr.slice(-2000)).to.equal(true);
      } finally {
        await m.unmount();
      }
      expect(await m.waitExit(), m.stderr.slice(-3000)).to.equal(0);
      expect(m.stderr).to.not.match(/AddressSanitizer|LeakSanitizer/);
      const served = /native reads: (\d+) served \((\d+) bytes, \d+ spliced\), 0 failed/.exec(m.stderr);
      expect(served, m.stderr.slice(-2000)).to.not.equal(null);
      expect(Number(served?.[2]), 'the sequential reads went native').to.be.at.least(2 * image.length);

      // The same memory encrypted: the addon decrypts the stored bytes it reads.
      const encRoot = scratch.named('asan-zip-enc');
      fs.mkdirSync(encRoot);
      const ev = writeVmFolder(encRoot, { encrypt: true, compress: true, blobPages: 1024, blockSize: BLOCK, rawBlocks: [1], rounds: 500 });
      const encImage = fs.readFileSync(ev.plain.vmemPath as string);
      const e = await TestMount.start(ev.meta, ['--key', ev.keyHex as string, '--debug'], asanEnv);
      try {
        expect(await e.stderrShows(/seek index built/, 90_000), e.stderr.slice(-2000)).to.equal(true);
        expect(await sha256File(e.path('physmem.raw'))).to.equal(hash(encImage));
        x = 99;
        const encPlans = Array.from({ length: 4 }, () => plan().map(([pos, len]): [number, number] => [pos % encImage.length, len]));
        const encReaders = await Promise.all(encPlans.map((p) => runCommand(process.execPath, [path.join(HELPERS, 'reader.js'), e.path('physmem.raw'), JSON.stringify(p)])));
        encReaders.forEach((r, i) => expect(r.stdout.trim().split('\n'), r.stderr).to.deep.equal((encPlans[i] as [number, number][]).map(([pos, len]) => hash(encImage.subarray(pos, pos + len)))));
      } finally {
        await e.unmount();
      }
      expect(await e.waitExit(), e.stderr.slice(-3000)).to.equal(0);
      expect(e.stderr).to.not.match(/AddressSanitizer|LeakSanitizer/);
      expect(e.stderr).to.match(/native reads: [1-9]\d* served \(\d+ bytes, \d+ spliced\), 0 failed/);
    });

    it('decodes intact and damaged FastLZ blocks, sync and on the thread pool, with no memory error', async () => {
      const r = await runCommand(process.execPath, [path.join(HELPERS, 'decode-check.js'), '1500', '11'], { env: { ...process.env, ...asanEnv } });
      expect(r.code, r.stderr.slice(-3000)).to.equal(0);
      expect(r.stderr).to.not.match(/AddressSanitizer/);
      const report = JSON.parse(r.stdout) as { decoder: string; cases: number; differences: string[]; outcomes: string[] };
      expect(report.decoder).to.equal(`native (${addon})`);
      expect(report.differences).to.deep.equal([]);
      // Damage of several kinds reached the decoder, not only intact blocks.
      expect(report.outcomes.length, report.outcomes.join('; ')).to.be.above(8);
    });

    it('indexes compressed streams and reads them through the seek index, during and after the pass, damaged and cut, with no memory error', async () => {
      const dir = scratch.named('asan-seek');
      fs.mkdirSync(dir);
      const r = await runCommand(process.execPath, [path.join(HELPERS, 'seek-check.js'), dir], { env: { ...process.env, ...asanEnv } });
      expect(r.code, r.stderr.slice(-3000)).to.equal(0);
      expect(r.stderr).to.not.match(/AddressSanitizer/);
      const report = JSON.parse(r.stdout) as { reads: number; differences: string[]; outcomes: string[] };
      expect(report.differences).to.deep.equal([]);
      expect(report.outcomes).to.include.members(['served during the pass', 'not yet', 'stopped at a damaged block', 'damaged', 'indexed with allowance 4096']);
      expect(report.reads).to.be.above(1000);
    });

    it('decrypts encobj pages, whole and cut, sync and async, with no memory error', async () => {
      const plainFile = scratch.named('asan-plain.bin');
      const encFile = scratch.named('asan-enc.bin');
      const plain = Buffer.alloc(4064 * 30 + 123);
      for (let i = 0; i < plain.length; i++) plain[i] = (i * 31 + (i >> 11)) & 0xff;
      fs.writeFileSync(plainFile, plain);
      const key = Buffer.alloc(32, 3);
      encryptFile(plainFile, encFile, key, { version: 2 });
      const ranges: [number, number][] = [[0, 1], [4063, 2], [4064 * 4 + 9, 4064 * 9], [0, plain.length], [plain.length - 5, 50]];
      const r = await runCommand(process.execPath, [path.join(HELPERS, 'encobj-read.js'), encFile, key.toString('hex'), JSON.stringify(ranges)], { env: { ...process.env, ...asanEnv } });
      expect(r.code, r.stderr.slice(-3000)).to.equal(0);
      expect(r.stderr).to.not.match(/AddressSanitizer/);
      const want = ranges.flatMap(([pos, len]) => {
        const h = createHash('sha256').update(plain.subarray(pos, pos + len)).digest('hex');
        return [h, h];
      });
      expect(r.stdout.trim().split('\n')).to.deep.equal(want);
    });
  });
});
