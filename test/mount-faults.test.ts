import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSnapshot, type WrittenSnapshot } from './kit/writer';
import { SourceFile } from '../src/io/source';
import { treeModes } from '../src/tree/modes';
import { parseMountinfo } from '../src/mount/preflight';
import { isMounted, TestMount } from './helpers/mount';
import { BIN, REPO, SAMPLE, tempDir } from './helpers/paths';
import { readRange, sha256File } from './helpers/read';
import { runCli, runCommand } from './helpers/run';

const HELPERS = path.join(REPO, 'dist', 'test', 'helpers');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** The daemon looks for its mount in the mount table every 500 ms: this lets it look three times. */
const WATCH_PERIODS = 1600;
const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

const LAYOUT = { memory: 'embedded' as const, blobPages: 64, regions: [{ ppn: 0, pageNum: 0, pages: 64 }] };

async function mountEntry(mnt: string) {
  return parseMountinfo(await fs.promises.readFile('/proc/self/mountinfo', 'utf8')).find((m) => m.mountPoint === mnt);
}

async function clearMount(mnt: string): Promise<void> {
  if (await isMounted(mnt)) await runCommand('fusermount', ['-uz', mnt]);
}

/** A foreground daemon on a mountpoint of the test's choosing; resolves once mounted (or once it exited). */
async function foreground(args: string[], mnt: string): Promise<{ child: ChildProcess; exited: Promise<number | null>; stderr: () => string }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (b: Buffer) => (err += b.toString()));
  let code: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve((code = c))));
  const deadline = Date.now() + 15_000;
  while (code === undefined && !(await isMounted(mnt)) && Date.now() < deadline) await sleep(20);
  return { child, exited, stderr: () => err };
}

function within<T>(p: Promise<T>, ms: number): Promise<T | 'still running'> {
  return Promise.race([p, sleep(ms).then(() => 'still running' as const)]);
}

describe('mount: faults of the mount itself', function () {
  this.timeout(60_000);
  const tmp = tempDir();
  let w: WrittenSnapshot;
  let mnt: string;
  before(() => {
    w = writeSnapshot(path.join(tmp.dir, 'evidence.vmss'), LAYOUT);
  });
  beforeEach(() => {
    mnt = fs.mkdtempSync(path.join(tmp.dir, 'mnt-'));
  });
  afterEach(async () => clearMount(mnt));
  after(() => tmp.cleanup());

  describe('a mountpoint reached through a symbolic link', () => {
    let link: string;
    beforeEach(() => {
      link = path.join(tmp.dir, `link-${path.basename(mnt)}`);
      fs.symlinkSync(path.dirname(mnt), link);
    });

    it('stays mounted as a daemon, and the daemon still ends on fusermount -u of the real path', async () => {
      const r = await runCli([w.path, path.join(link, path.basename(mnt))]);
      expect(r.code, r.stderr).to.equal(0);
      await sleep(WATCH_PERIODS);
      expect(await isMounted(mnt)).to.equal(true);
      expect((await fs.promises.stat(path.join(mnt, 'physmem.raw'))).size).to.equal(w.physSize);
      expect((await runCommand('fusermount', ['-u', mnt])).code).to.equal(0);
    });

    it('stays mounted in the foreground (-f), and exits on fusermount -u', async () => {
      const d = await foreground([w.path, path.join(link, path.basename(mnt)), '-f'], mnt);
      try {
        await sleep(WATCH_PERIODS);
        expect(await within(d.exited, 0), d.stderr()).to.equal('still running');
        expect(await readRange(path.join(mnt, 'physmem.raw'), 0, 4096)).to.deep.equal(w.readPhys(0, 4096));
        expect((await runCommand('fusermount', ['-u', mnt])).code).to.equal(0);
        expect(await within(d.exited, 10_000)).to.equal(0);
      } finally {
        d.child.kill('SIGKILL');
      }
    });
  });

  describe('options libfuse refuses', () => {
    it('exit 1 with libfuse\'s reason on one line, and leave no dead mount behind', async () => {
      const r = await runCli(['-o', 'bogus', w.path, mnt]);
      expect(r.code).to.equal(1);
      expect(r.stderr.trim().split('\n')).to.have.length(1);
      expect(r.stderr).to.match(/cannot mount: libfuse or the kernel refused the mount \(fuse: unknown option `bogus'\)/);
      expect(await isMounted(mnt)).to.equal(false);
      expect(fs.readdirSync(mnt)).to.deep.equal([]);
    });

    it('end a foreground (-f) daemon with exit 1 and no dead mount', async () => {
      const d = await foreground(['-f', '-o', 'bogus', w.path, mnt], mnt);
      try {
        expect(await within(d.exited, 10_000), d.stderr()).to.equal(1);
        expect(d.stderr()).to.match(/unknown option `bogus'/);
        expect(await isMounted(mnt)).to.equal(false);
      } finally {
        d.child.kill('SIGKILL');
      }
    });

    it('are refused in one line when they would not fit in the 1023 bytes libfuse\'s binding keeps', async () => {
      const r = await runCli(['-o', `allow_root,fsname=${'x'.repeat(1100)}`, w.path, mnt]);
      expect(r.code).to.equal(1);
      expect(r.stderr.trim().split('\n')).to.have.length(1);
      expect(r.stderr).to.match(/FUSE options come to \d+ bytes .* at most 1023/);
      expect(await isMounted(mnt)).to.equal(false);
    });

    it('are all applied for a snapshot deep in a long path (the fsname gives way, not the options)', async () => {
      let dir = tmp.dir;
      while (dir.length < 1000) dir = path.join(dir, 'd'.repeat(100));
      fs.mkdirSync(dir, { recursive: true });
      const deep = path.join(dir, 'evidence.vmss');
      fs.copyFileSync(w.path, deep);
      const r = await runCli(['-o', 'allow_other,max_read=65536', deep, mnt]);
      expect(r.code, r.stderr).to.equal(0);
      const entry = await mountEntry(mnt);
      expect(entry?.source).to.equal('vmssfs#evidence.vmss');
      const line = (await fs.promises.readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.includes(` ${mnt} `));
      expect(line).to.match(/allow_other/);
      expect(line).to.match(/max_read=65536/);
    });
  });

  describe('options that contradict a read-only evidence mount', () => {
    for (const [opt, why] of [['rw', /read-only evidence/], ['dev', /nodev/], ['suid', /nosuid/], ['exec', /noexec/]] as const) {
      it(`refuses -o ${opt} in one line, mounting nothing`, async () => {
        const r = await runCli(['-o', `ro,${opt}`, w.path, mnt]);
        expect(r.code).to.equal(1);
        expect(r.stderr.trim().split('\n')).to.have.length(1);
        expect(r.stderr).to.match(new RegExp(`^vmssfs: -o ${opt}: refused: `));
        expect(r.stderr).to.match(why);
        expect(await isMounted(mnt)).to.equal(false);
      });
    }

    it('mounts ro, nosuid, nodev and noexec', async () => {
      const m = await TestMount.start(w.path);
      try {
        const line = (await fs.promises.readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.includes(` ${m.mountpoint} `));
        expect(line?.split(' ')[5]?.split(',')).to.include.members(['ro', 'nosuid', 'nodev', 'noexec']);
      } finally {
        await m.unmount();
      }
    });
  });

  describe('a log that goes away', () => {
    it('keeps a --debug daemon serving after its stderr reader has gone', async () => {
      const d = await foreground(['--debug', w.path, mnt], mnt);
      try {
        // `vmssfs --debug ... 2>&1 | head -2`: the reader leaves, every later log line meets a closed pipe.
        d.child.stderr?.destroy();
        for (let i = 0; i < 3; i++) {
          expect(await readRange(path.join(mnt, 'physmem.raw'), i * 4096, 4096)).to.deep.equal(w.readPhys(i * 4096, 4096));
          expect((await fs.promises.readdir(path.join(mnt, 'groups'))).length).to.be.greaterThan(0);
        }
        expect(await within(d.exited, 0)).to.equal('still running');
        expect(await isMounted(mnt)).to.equal(true);
        d.child.kill('SIGTERM');
        expect(await within(d.exited, 10_000)).to.equal(0);
        expect(await isMounted(mnt)).to.equal(false);
      } finally {
        d.child.kill('SIGKILL');
      }
    });
  });

  describe('--log and the evidence', () => {
    const attempts: [string, (log: string, evidence: string) => void, RegExp][] = [
      ['the snapshot itself', () => undefined, /is the evidence being mounted/],
      ['a hard link to the snapshot', (log, evidence) => fs.linkSync(evidence, log), /is the evidence being mounted/],
      ['a symbolic link to the snapshot', (log, evidence) => fs.symlinkSync(evidence, log), /symbolic link/],
    ];
    for (const [what, make, message] of attempts) {
      it(`refuses ${what} as the log, leaving the snapshot's hash as it was`, async () => {
        const evidence = path.join(tmp.dir, `log-${path.basename(mnt)}.vmss`);
        fs.copyFileSync(w.path, evidence);
        const log = what === 'the snapshot itself' ? evidence : path.join(tmp.dir, `log-${path.basename(mnt)}.log`);
        make(log, evidence);
        const hash = await sha256File(evidence);
        const r = await runCli(['--log', log, evidence, mnt]);
        expect(r.code).to.equal(1);
        expect(r.stderr.trim().split('\n')).to.have.length(1);
        expect(r.stderr).to.match(message);
        expect(await isMounted(mnt)).to.equal(false);
        expect(await sha256File(evidence)).to.equal(hash);
      });
    }

    it('writes a log that is a new file, and the mount works', async () => {
      const log = path.join(tmp.dir, `ok-${path.basename(mnt)}.log`);
      const r = await runCli(['--log', log, w.path, mnt]);
      expect(r.code, r.stderr).to.equal(0);
      expect((await fs.promises.stat(path.join(mnt, 'physmem.raw'))).size).to.equal(w.physSize);
      expect(fs.existsSync(log)).to.equal(true);
    });
  });

  describe('permissions from the evidence', () => {
    let m: TestMount | null = null;
    afterEach(async () => m?.unmount());

    const asNobody = (file: string) => runCommand('setpriv', [...NOBODY, 'head', '-c', '16', file]);
    /** A copy of the snapshot with these permission bits, for the evidence whose modes the mount shows. */
    const copyWithMode = (name: string, mode: number): string => {
      const file = path.join(tmp.dir, name);
      fs.copyFileSync(w.path, file);
      fs.chmodSync(file, mode);
      return file;
    };

    it('with -o allow_other, denies other users a snapshot that is 0600', async () => {
      const secret = copyWithMode('secret.vmss', 0o600);
      m = await TestMount.start(secret, ['-o', 'allow_other']);
      const st = await fs.promises.stat(m.path('physmem.raw'));
      expect(st.mode & 0o7777).to.equal(0o400);
      expect(st.uid).to.equal(fs.statSync(secret).uid);
      const r = await asNobody(m.path('physmem.raw'));
      expect(r.code).to.not.equal(0);
      expect(r.stderr).to.match(/Permission denied/);
      expect((await readRange(m.path('physmem.raw'), 0, 16)).length, 'its owner still reads it').to.equal(16);
    });

    it('with -o allow_other, lets other users read a snapshot the evidence lets them read (0644)', async () => {
      const open = copyWithMode('open.vmss', 0o644);
      m = await TestMount.start(open, ['-o', 'allow_other']);
      expect((await fs.promises.stat(m.path('physmem.raw'))).mode & 0o7777).to.equal(0o444);
      expect((await fs.promises.stat(m.path('groups'))).mode & 0o7777).to.equal(0o555);
      const r = await asNobody(m.path('physmem.raw'));
      expect(r.code, r.stderr).to.equal(0);
    });

    it('applies -o umask= and uid=/gid= on top of the evidence\'s modes, never adding a bit', async () => {
      const open = copyWithMode('masked.vmss', 0o640);
      m = await TestMount.start(open, ['-o', 'umask=0,uid=4242,gid=4343,allow_other']);
      const st = await fs.promises.stat(m.path('physmem.raw'));
      expect(st.mode & 0o7777, 'umask=0 adds nothing the evidence does not grant').to.equal(0o440);
      expect([st.uid, st.gid]).to.deep.equal([4242, 4343]);
      expect((await fs.promises.stat(m.path('groups'))).mode & 0o7777).to.equal(0o550);
      const r = await asNobody(m.path('physmem.raw'));
      expect(r.code).to.not.equal(0);
    });
  });

  describe('tree modes from several evidence files', () => {
    const open = (name: string, mode: number, uid: number): SourceFile => {
      const f = path.join(tmp.dir, name);
      fs.writeFileSync(f, 'x');
      fs.chmodSync(f, mode);
      fs.chownSync(f, uid, 0);
      return SourceFile.open(f);
    };

    it('grant the owner class no more than others get when the .vmss and .vmem have different owners', () => {
      const meta = open('owners.vmss', 0o640, 0);
      const mem = open('owners.vmem', 0o640, 4242);
      try {
        expect(treeModes([meta, mem], {}, { uid: 0, groups: [0] })).to.deep.equal({ uid: 0, gid: 0, file: 0o040, dir: 0o050 });
      } finally {
        meta.close();
        mem.close();
      }
    });

    it('give the tree to a user who mounts evidence its modes would keep from them (read through an ACL)', () => {
      const meta = open('acl.vmss', 0o600, 0);
      try {
        expect(treeModes([meta], {}, { uid: 1000, groups: [1000] })).to.deep.equal({ uid: 1000, gid: 0, file: 0o400, dir: 0o500 });
        expect(treeModes([meta], { uid: 7 }, { uid: 1000, groups: [1000] }).uid, 'uid= decides').to.equal(7);
      } finally {
        meta.close();
      }
    });
  });

  describe('access times', () => {
    it('says so once, on stderr when mounting and in info\'s warnings, when O_NOATIME is refused (a user who does not own the evidence)', async () => {
      // A folder other users may pass through, as on a shared workstation.
      fs.chmodSync(tmp.dir, 0o711);
      const dir = fs.mkdtempSync(path.join(tmp.dir, 'shared-'));
      fs.chmodSync(dir, 0o755);
      const file = path.join(dir, 'owned-by-root.vmss');
      fs.copyFileSync(w.path, file);
      fs.chmodSync(file, 0o644);
      const asOwner = await runCli(['info', '--json', file]);
      expect((JSON.parse(asOwner.stdout) as { warnings: string[] }).warnings.join('\n')).to.not.match(/O_NOATIME/);
      const r = await runCommand('setpriv', [...NOBODY, process.execPath, BIN, 'info', '--json', file]);
      expect(r.code, r.stderr).to.equal(0);
      const warnings = (JSON.parse(r.stdout) as { warnings: string[] }).warnings.filter((x) => /O_NOATIME/.test(x));
      expect(warnings).to.have.length(1);
      expect(warnings[0]).to.match(/owned-by-root\.vmss: opened without O_NOATIME .*access time/);
      const text = await runCommand('setpriv', [...NOBODY, process.execPath, BIN, 'info', file]);
      expect(text.stdout).to.match(/^WARNING: .*owned-by-root\.vmss: opened without O_NOATIME/m);
      // Mounting says so once on stderr, whether or not this machine lets that user mount FUSE.
      fs.chownSync(mnt, 65534, 65534);
      const mounting = await runCommand('setpriv', [...NOBODY, process.execPath, BIN, file, mnt]);
      await clearMount(mnt);
      expect(mounting.stderr.split('\n').filter((l) => /O_NOATIME/.test(l)), mounting.stderr).to.deep.equal([
        `vmssfs: warning: ${file}: opened without O_NOATIME (the kernel allows it only to the file's owner or root): reading it may update its access time`,
      ]);
    });
  });

  // Both read paths: the native one (plain local evidence, read on libfuse's threads, where a stalled
  // read holds one worker) and the JavaScript one (VMSSFS_NATIVE=0), which time-boxes reads in place.
  for (const readPath of ['native', 'JavaScript'] as const) describe(`a slow source on a local filesystem (${readPath} read path)`, () => {
    // The evidence sits on ext4 (a local filesystem, which vmssfs reads in place on its JavaScript
    // thread) on a loop device whose backing file stalls every read for STALL_MS once armed: a
    // drive retrying a sector. (A device-mapper `delay` target would do the same; this kernel has
    // no device-mapper, and the loop device over a stalling file is the same local block path.)
    const STALL_MS = 3000;
    const dir = (name: string) => path.join(tmp.dir, `slow-${readPath}-${name}`);
    let w2: WrittenSnapshot;
    let slowFs: ChildProcess | null = null;
    let slowOut = '';
    let loop: string | null = null;
    let m: TestMount | null = null;
    before(async function () {
      this.timeout(60_000);
      for (const d of ['staging', 'fuse', 'ext']) fs.mkdirSync(dir(d));
      w2 = writeSnapshot(path.join(dir('staging'), 'evidence.vmss'), { memory: 'embedded', blobPages: 4096, regions: [{ ppn: 0, pageNum: 0, pages: 4096 }] });
      const mkfs = await runCommand('mkfs.ext4', ['-q', '-F', '-d', dir('staging'), dir('disk.img'), '64M']);
      expect(mkfs.code, mkfs.stderr).to.equal(0);
      slowFs = spawn(process.execPath, [path.join(HELPERS, 'slow-fs.js'), dir('disk.img'), dir('fuse'), String(STALL_MS)], { stdio: ['ignore', 'pipe', 'inherit'] });
      slowFs.stdout?.on('data', (b: Buffer) => (slowOut += b.toString()));
      for (let i = 0; i < 500 && !slowOut.includes('mounted'); i++) await sleep(20);
      const lo = await runCommand('losetup', ['-f', '--show', '-r', path.join(dir('fuse'), 'disk.img')]);
      expect(lo.code, lo.stderr).to.equal(0);
      loop = lo.stdout.trim();
      const mounted = await runCommand('mount', ['-t', 'ext4', '-o', 'ro,noload', loop, dir('ext')]);
      expect(mounted.code, mounted.stderr).to.equal(0);
      m = await TestMount.start(path.join(dir('ext'), 'evidence.vmss'), [], readPath === 'JavaScript' ? { VMSSFS_NATIVE: '0' } : {});
    });
    after(async function () {
      this.timeout(60_000);
      slowFs?.kill('SIGUSR2');
      await m?.unmount();
      if (await isMounted(dir('ext'))) await runCommand('umount', [dir('ext')]);
      if (loop) await runCommand('losetup', ['-d', loop]);
      if (await isMounted(dir('fuse'))) await runCommand('fusermount', ['-u', dir('fuse')]);
      slowFs?.kill('SIGKILL');
    });

    const stalledReads = () => slowOut.split('\n').filter((l) => l.startsWith('slow read')).length;

    it('after one stalled read, stalls no other read of the mount while the next one waits on the disk', async () => {
      const mnt2 = m as TestMount;
      const raw = mnt2.path('physmem.raw');
      expect(await readRange(raw, 0, 4096), 'read before the disk stalls').to.deep.equal(w2.readPhys(0, 4096));
      slowFs?.kill('SIGUSR1');
      // On the JavaScript path the first stalled read is read in place: it holds the daemon for as
      // long as the disk takes, and is the last one to, as the daemon says. Natively it holds one
      // of libfuse's workers only.
      expect(await readRange(raw, 1000 * 4096, 4096)).to.deep.equal(w2.readPhys(1000 * 4096, 4096));
      // Another reader meets the stalled disk; while it waits there, everything else is answered.
      const seen = stalledReads();
      const order: string[] = [];
      const stalled = readRange(raw, 3000 * 4096, 4096).then((b) => {
        order.push('stalled read');
        return b;
      });
      for (let i = 0; i < 200 && stalledReads() === seen; i++) await sleep(10);
      expect(stalledReads(), 'the second read reached the stalled disk').to.be.greaterThan(seen);
      await Promise.all([
        fs.promises.readFile(mnt2.path('metadata.json'), 'utf8'),
        fs.promises.readFile(mnt2.path('info.txt'), 'utf8'),
        fs.promises.readdir(mnt2.path('groups', 'cpu')),
        fs.promises.readFile(mnt2.path('groups', 'cpu', 'rip[0]'), 'utf8'),
      ]);
      order.push('other files');
      expect(await stalled).to.deep.equal(w2.readPhys(3000 * 4096, 4096));
      expect(order).to.deep.equal(['other files', 'stalled read']);
      const switched = /evidence\.vmss: a read took \d+ ms \(the disk, not memory\): its reads go to the thread pool/;
      if (readPath === 'JavaScript') expect(mnt2.stderr).to.match(switched);
      else expect(mnt2.stderr).not.to.match(switched);
    }).timeout(60_000);
  });

  describe('an unexpected error inside a FUSE operation', () => {
    it('answers EIO for that operation, logs it, and goes on serving', async () => {
      const child = spawn(process.execPath, [path.join(HELPERS, 'buggy-fs.js'), SAMPLE, mnt], { stdio: ['ignore', 'pipe', 'pipe'] });
      let log = '';
      child.stderr.on('data', (b: Buffer) => (log += b.toString()));
      const exited = new Promise((r) => child.on('exit', r));
      try {
        for (let i = 0; i < 500 && !(await isMounted(mnt)); i++) await sleep(20);
        const thrown = await fs.promises.readFile(path.join(mnt, 'info.txt')).then(() => null, (e: NodeJS.ErrnoException) => e.code);
        expect(thrown, 'a read that throws').to.equal('EIO');
        const rejected = await fs.promises.readFile(path.join(mnt, 'metadata.json')).then(() => null, (e: NodeJS.ErrnoException) => e.code);
        expect(rejected, 'a read that rejects').to.equal('EIO');
        expect(await fs.promises.readFile(path.join(mnt, 'groups', 'cpu', 'rip[0]'), 'utf8')).to.equal('0xfffff80002c1c0ba\n');
        expect(log).to.match(/read \/info\.txt: unexpected error: Cannot read properties of undefined/);
        expect(log).to.match(/read \/metadata\.json at 0 .*unexpected error: offset out of range: answered EIO/);
        expect(await isMounted(mnt)).to.equal(true);
      } finally {
        child.kill('SIGTERM');
        await within(exited, 5000);
        child.kill('SIGKILL');
      }
    });
  });
});
