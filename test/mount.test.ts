import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { screenshotPng } from './kit/png';
import { defaultCfgFile, writeSnapshot, type SnapshotOptions, type WrittenSnapshot } from './kit/writer';
import { DEFAULT_CHUNK_SIZE } from '../src/cache/pagecache';
import { openSnapshot } from '../src/evidence/snapshot';
import { isMounted, TestMount } from './helpers/mount';
import { SAMPLE, tempDir } from './helpers/paths';
import { readRange, sha256File } from './helpers/read';
import { runCli, runCommand } from './helpers/run';

const PAGE = 4096;
/** Two runs with a hole between them (256 KiB .. 1 MiB), small enough to hash quickly. */
const REGIONS = [
  { ppn: 0, pageNum: 0, pages: 64 },
  { ppn: 256, pageNum: 64, pages: 40 },
];

const LAYOUTS: Record<string, SnapshotOptions> = {
  'Memory block without regions': { memory: 'embedded', blobPages: 80 },
  'Memory block with regions': { memory: 'embedded', blobPages: 104, regions: REGIONS, shuffle: true },
  'metadata-only file plus .vmem, with regions': { memory: 'vmem', blobPages: 104, regions: REGIONS },
  'metadata-only file plus .vmem, without regions': { memory: 'vmem', blobPages: 72 },
  // Shapes of older products and of damaged copies (regions partly described):
  'a plain Memory tag without indices (older single-file checkpoints)': { memory: 'embedded', blobPages: 72, memoryIndices: [] },
  'regions without regionsCount (counted)': { memory: 'embedded', blobPages: 104, regions: REGIONS, omitRegionsCount: true },
  'one region without regionPageNum (blob page 0)': { memory: 'vmem', blobPages: 40, regions: [{ ppn: 256, pageNum: 0, pages: 40 }], omitRegionPageNum: true },
};

const sha256 = (file: string) => sha256File(file);

describe('mount: the tree through the kernel', function () {
  this.timeout(60_000);
  const tmp = tempDir();
  const hashesBefore = new Map<string, string>();
  after(async () => {
    // Evidence is sacred: every source file is bit-identical after everything below ran.
    for (const [file, hash] of hashesBefore) expect(await sha256(file), file).to.equal(hash);
    tmp.cleanup();
  });

  for (const [layout, opts] of Object.entries(LAYOUTS)) {
    describe(layout, () => {
      let w: WrittenSnapshot;
      let m: TestMount;
      before(async () => {
        w = writeSnapshot(path.join(tmp.dir, `${layout.replace(/\W+/g, '-')}.vmss`), opts);
        for (const f of [w.path, w.vmemPath]) if (f) hashesBefore.set(f, await sha256(f));
        m = await TestMount.start(w.path);
      });
      after(async () => m.unmount());

      it('physmem.raw hashes to the writer\'s flat image, at the size of the highest run\'s end', async () => {
        const st = await fs.promises.stat(m.path('physmem.raw'));
        expect(st.size).to.equal(w.physSize);
        expect(await sha256(m.path('physmem.raw'))).to.equal(w.physSha256());
      });

      it('reads across run boundaries, holes, chunk boundaries and at the last byte', async () => {
        const probes: [number, number][] = [
          [0, 1],
          [DEFAULT_CHUNK_SIZE - 3, 7],
          [PAGE - 10, PAGE + 20],
          [w.physSize - 1, 1],
          [w.physSize - 5000, 5000],
        ];
        for (const r of w.runs) probes.push([Math.max(0, r.physAddr - 100), 200], [r.physAddr + r.length - 100, 200]);
        for (const [pos, len] of probes) {
          expect(await readRange(m.path('physmem.raw'), pos, len), `at ${pos}+${len}`).to.deep.equal(w.readPhys(pos, len));
        }
        expect((await readRange(m.path('physmem.raw'), w.physSize, 100)).length, 'past the end').to.equal(0);
      });
    });
  }

  describe('the sample (memory above 4 GiB, two vCPUs)', () => {
    let m: TestMount;
    before(async () => {
      hashesBefore.set(SAMPLE, await sha256(SAMPLE));
      m = await TestMount.start(SAMPLE);
    });
    after(async () => m.unmount());

    it('serves guest-physical 4 GiB where the region puts it, and the hole below as zeros', async () => {
      const page = await readRange(m.path('physmem.raw'), 0x100000000, 28);
      expect(page.toString()).to.equal('vmssfs page 0x0000100000000\n');
      const hole = await readRange(m.path('physmem.raw'), 0x80000000, 1 << 20);
      expect(hole.equals(Buffer.alloc(1 << 20))).to.equal(true);
    });

    it('physmem.raw hashes to the sample\'s recorded flat image (fixtures/sample.sha256)', async () => {
      const recorded = fs.readFileSync(path.join(path.dirname(SAMPLE), 'sample.sha256'), 'utf8');
      const want = /^([0-9a-f]{64})\s+physmem\.raw$/m.exec(recorded)?.[1];
      expect(want).to.be.a('string');
      expect(await sha256(m.path('physmem.raw'))).to.equal(want);
    }).timeout(180_000);

    it('lists the documented top-level files', async () => {
      expect((await fs.promises.readdir(m.mountpoint)).sort()).to.include.members(
        ['config.vmx', 'groups', 'info.txt', 'metadata.json', 'physmem.raw', 'screenshot.png'],
      );
    });

    it('shows the snapshot as the mount source, type fuse.vmssfs', async () => {
      const r = await runCommand('mount', []);
      const line = r.stdout.split('\n').find((l) => l.includes(` on ${m.mountpoint} `));
      // user_id and group_id are whoever mounted (the suite may run as any user allowed to mount).
      expect(line).to.equal(`vmssfs#${fs.realpathSync(SAMPLE)} on ${m.mountpoint} type fuse.vmssfs (ro,nosuid,nodev,noexec,relatime,user_id=${process.getuid?.()},group_id=${process.getgid?.()},default_permissions)`);
    });

    it('is read-only: files read-only, directories searchable, owned as the snapshot is, dated by the snapshot', async () => {
      const st = fs.statSync(SAMPLE);
      const mtime = st.mtime.getTime();
      const file = await fs.promises.stat(m.path('physmem.raw'));
      const dir = await fs.promises.stat(m.path('groups', 'cpu'));
      // The evidence's read bits, no write bits (the sample is 0644: 0444 and 0555).
      expect(file.mode & 0o7777).to.equal(st.mode & 0o444);
      expect(dir.mode & 0o7777).to.equal((st.mode & 0o444) | ((st.mode & 0o444) >> 2));
      expect([file.uid, file.gid]).to.deep.equal([st.uid, st.gid]);
      expect(Math.floor(file.mtimeMs / 1000)).to.equal(Math.floor(mtime / 1000));
    });

    it('tells du and ls -s what is stored: physmem.raw counts its runs, not the holes between them', async () => {
      const snap = openSnapshot(SAMPLE);
      const stored = snap.physmem!.map.segments.reduce((sum, r) => sum + r.length, 0);
      const size = snap.physmem!.size;
      snap.close();
      expect(stored).to.be.below(size); // the sample has a hole, so the two must differ
      const r = await runCommand('stat', ['-c', '%s %b %B', m.path('physmem.raw')]);
      const [bytes, blocks, unit] = r.stdout.trim().split(' ').map(Number) as [number, number, number];
      expect(bytes).to.equal(size);
      expect(blocks * unit).to.equal(Math.ceil(stored / 512) * 512);
      const du = await runCommand('du', ['--block-size=1', m.path('physmem.raw')]);
      expect(Number(du.stdout.split('\t')[0])).to.equal(blocks * unit);
    });

    it('gives every file its own inode number, the same again when mounted again', async () => {
      // A second stat on one mount is answered by the kernel's attribute cache, not the daemon:
      // a second mount (a fresh kernel cache and a fresh daemon) is what shows the numbers are the tree's.
      const names = [[], ['physmem.raw'], ['groups', 'cpu'], ['groups', 'cpu', 'rip[0]'], ['groups', 'cpu', 'rip[1]'], ['info.txt']];
      const first = await Promise.all(names.map(async (n) => (await fs.promises.stat(m.path(...n))).ino));
      expect(new Set(first).size, 'distinct').to.equal(names.length);
      const again = await TestMount.start(SAMPLE);
      try {
        expect(await Promise.all(names.map(async (n) => (await fs.promises.stat(again.path(...n))).ino))).to.deep.equal(first);
      } finally {
        await again.unmount();
      }
    });

    it('refuses every write with EROFS', async () => {
      const attempts: [string, () => Promise<unknown>][] = [
        ['write a file', () => fs.promises.writeFile(m.path('info.txt'), 'x')],
        ['open for append', () => fs.promises.open(m.path('physmem.raw'), 'a')],
        ['create a file', () => fs.promises.writeFile(m.path('new.txt'), 'x')],
        ['make a directory', () => fs.promises.mkdir(m.path('newdir'))],
        ['remove a file', () => fs.promises.unlink(m.path('config.vmx'))],
        ['rename', () => fs.promises.rename(m.path('config.vmx'), m.path('x.vmx'))],
        ['chmod', () => fs.promises.chmod(m.path('config.vmx'), 0o666)],
      ];
      for (const [what, attempt] of attempts) {
        const err = await attempt().then(() => null, (e: NodeJS.ErrnoException) => e);
        expect(err?.code, what).to.equal('EROFS');
      }
    });

    it('serves config.vmx without its NUL padding and screenshot.png as the PNG', async () => {
      expect(await fs.promises.readFile(m.path('config.vmx'), 'utf8')).to.equal(defaultCfgFile(2, 4));
      expect((await fs.promises.readFile(m.path('screenshot.png'))).equals(screenshotPng())).to.equal(true);
    });

    it('reads scalar tags as their value text and a newline', async () => {
      const read = (p: string) => fs.promises.readFile(m.path('groups', p), 'utf8');
      expect(await read('cpu/rip[0]')).to.equal('0xfffff80002c1c0ba\n');
      expect(await read('cpu/cpu:numVCPUs')).to.equal('0x2\n');
      expect(await read('cpu/halted[0]')).to.equal('0\n');
      expect(await read('cpu/GDTR[0][0]')).to.equal('127\n');
      expect(await read('memory/regionPPN[1]')).to.equal('0x100000\n');
    });

    it('reads other tags as raw bytes: odd-sized inline, blocks, three indices, zero length', async () => {
      const raw = (p: string) => fs.promises.readFile(m.path('groups', p));
      expect((await raw('Odd names/three')).length).to.equal(3);
      expect((await raw('Odd names/inline61')).length).to.equal(61);
      expect((await raw('Odd names/empty')).length).to.equal(0);
      const gp = await raw('cpu/gpregs[1]');
      expect(gp.length).to.equal(128);
      expect((await raw('cpu/FPUregs[0][0][1]')).toString()).to.match(/^0x[0-9a-f]+\n$/);
      const product = await raw('Checkpoint/ProductName');
      expect(product.length).to.equal(256);
      expect(product.subarray(0, 18).toString()).to.equal('VMware Workstation');
    });

    it('escapes / and % in names, and nothing else', async () => {
      const names = await fs.promises.readdir(m.path('groups', 'Odd names'));
      expect(names).to.include('a%2Fb%25c');
      expect(names).to.include('maxIndex[4294967295]');
      expect(await fs.promises.readFile(m.path('groups', 'Odd names', 'a%2Fb%25c'), 'utf8')).to.equal('0xc0ffee\n');
    });

    it('serves memory/Memory[0][0] as the whole blob, lazily', async () => {
      const st = await fs.promises.stat(m.path('groups', 'memory', 'Memory[0][0]'));
      expect(st.size).to.equal(1024 * PAGE);
      const atRegion1 = await readRange(m.path('groups', 'memory', 'Memory[0][0]'), 768 * PAGE, 28);
      expect(atRegion1.toString()).to.equal('vmssfs page 0x0000100000000\n');
    });

    it('serves info.txt and metadata.json as `vmssfs info` prints them', async () => {
      const text = await runCli(['info', SAMPLE]);
      const json = await runCli(['info', '--json', SAMPLE]);
      expect(await fs.promises.readFile(m.path('info.txt'), 'utf8')).to.equal(text.stdout);
      expect(await fs.promises.readFile(m.path('metadata.json'), 'utf8')).to.equal(json.stdout);
    });
  });

  describe('mounting and unmounting', () => {
    let w: WrittenSnapshot;
    before(() => {
      w = writeSnapshot(path.join(tmp.dir, 'life.vmss'), LAYOUTS['Memory block with regions'] as SnapshotOptions);
    });

    it('returns once mounted, as a daemon, and the daemon exits on fusermount -u', async () => {
      const mnt = fs.mkdtempSync(path.join(tmp.dir, 'mnt-'));
      try {
        const r = await runCli([w.path, mnt]);
        expect(r.code, r.stderr).to.equal(0);
        expect(await isMounted(mnt)).to.equal(true);
        expect((await fs.promises.stat(path.join(mnt, 'physmem.raw'))).size).to.equal(w.physSize);
        const pids = (await runCommand('pgrep', ['-f', `${mnt} --daemon-child`])).stdout.trim().split('\n').filter(Boolean);
        expect(pids, 'the detached daemon is found').to.have.length(1);
        expect((await runCommand('fusermount', ['-u', mnt])).code).to.equal(0);
        await waitFor(async () => !(await isMounted(mnt)) && !pids.some(alive));
      } finally {
        if (await isMounted(mnt)) await runCommand('fusermount', ['-uz', mnt]);
      }
    });

    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      it(`unmounts and exits on ${sig}, leaving no mount and no process`, async () => {
        const m = await TestMount.start(w.path);
        try {
          process.kill(m.pid, sig);
          expect(await m.waitExit()).to.equal(0);
          expect(await isMounted(m.mountpoint)).to.equal(false);
        } finally {
          await m.unmount();
        }
      });
    }

    it('with --debug, logs each operation and, at unmount, what the page cache did (JavaScript read path)', async () => {
      // Reads of physmem.raw reach JavaScript (and its trace) only with the native path off.
      const m = await TestMount.start(w.path, ['--debug'], { VMSSFS_NATIVE: '0' });
      try {
        const fh = await fs.promises.open(m.path('physmem.raw'), 'r');
        await fh.read(Buffer.alloc(4096), 0, 4096, 0);
        await fh.close();
        process.kill(m.pid, 'SIGTERM');
        expect(await m.waitExit()).to.equal(0);
        const lines = m.stderr.trim().split('\n');
        expect(lines).to.include('vmssfs: open /physmem.raw -> 0');
        expect(lines.some((l) => /^vmssfs: read \/physmem\.raw @0\+\d+ -> \d+$/.test(l)), m.stderr).to.equal(true);
        const summary = lines.filter((l) => l.startsWith('vmssfs: page cache: '));
        expect(summary, m.stderr).to.have.length(1);
        expect(summary[0]).to.match(/^vmssfs: page cache: \d+ hits, \d+ chunk misses \(\d+ shared, \d+ read ahead\), [1-9]\d* reads straight from the source$/);
      } finally {
        await m.unmount();
      }
    });

    it('unmounts lazily on a signal while a reader holds a file open', async () => {
      const m = await TestMount.start(w.path);
      try {
        const fh = await fs.promises.open(m.path('physmem.raw'), 'r');
        process.kill(m.pid, 'SIGTERM');
        expect(await m.waitExit()).to.equal(0);
        expect(await isMounted(m.mountpoint)).to.equal(false);
        await fh.close().catch(() => undefined);
      } finally {
        await m.unmount();
      }
    });

    it('exits 1 with the reason when it cannot mount', async () => {
      const mnt = fs.mkdtempSync(path.join(tmp.dir, 'mnt-'));
      const notDir = path.join(tmp.dir, 'plain-file');
      fs.writeFileSync(notDir, 'x');
      const junk = path.join(tmp.dir, 'junk.vmss');
      fs.writeFileSync(junk, Buffer.alloc(64, 0x41));
      const full = fs.mkdtempSync(path.join(tmp.dir, 'full-'));
      fs.writeFileSync(path.join(full, 'evidence-notes.txt'), 'x');
      const cases: [string[], RegExp][] = [
        [[w.path, path.join(tmp.dir, 'missing')], /mountpoint does not exist/],
        [[w.path, full], /mountpoint is not empty .*-o nonempty/],
        [[w.path, notDir], /mountpoint is not a directory/],
        [[junk, mnt], /junk\.vmss: not a VMware checkpoint/],
      ];
      for (const [args, message] of cases) {
        const r = await runCli(args);
        expect(r.code, args.join(' ')).to.equal(1);
        expect(r.stderr).to.match(message);
        expect(r.stderr.trim().split('\n')).to.have.length(1);
      }
      const m = await TestMount.start(w.path);
      try {
        const r = await runCli([w.path, m.mountpoint]);
        expect(r.code).to.equal(1);
        expect(r.stderr).to.match(/already mounted/);
      } finally {
        await m.unmount();
      }
    });
  });
});

function alive(pid: string): boolean {
  try {
    process.kill(Number(pid), 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 50));
  }
}
