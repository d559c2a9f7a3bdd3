import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeVmFolder, type WrittenFolderCheckpoint } from './kit/folder-writer';
import { isMounted, TestMount } from './helpers/mount';
import { REPO, tempDir } from './helpers/paths';
import { readRange } from './helpers/read';
import { runCommand } from './helpers/run';

const HELPERS = path.join(REPO, 'dist', 'test', 'helpers');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// A VM folder's memory files are opened on first read, through the folder's descriptor pool. On
// the JavaScript read path (VMSSFS_NATIVE=0) they are read in place like any local file, so a disk
// that stalls under them must be noticed and their reads moved to the thread pool, as for a
// single checkpoint (the slow-source tests in mount-faults.test.ts).
describe('a VM folder on a local filesystem whose disk stalls (JavaScript read path)', () => {
  const tmp = tempDir('vmssfs-slow-folder-');
  const STALL_MS = 3000;
  const dir = (name: string) => path.join(tmp.dir, name);
  let cp: WrittenFolderCheckpoint;
  let slowFs: ChildProcess | null = null;
  let slowOut = '';
  let loop: string | null = null;
  let m: TestMount | null = null;
  before(async function () {
    this.timeout(60_000);
    for (const d of ['staging', 'fuse', 'ext']) fs.mkdirSync(dir(d));
    fs.mkdirSync(path.join(dir('staging'), 'vm'));
    const w = writeVmFolder(path.join(dir('staging'), 'vm'), {
      name: 'vm',
      current: 1,
      snapshots: [{ uid: 1, displayName: 'before', created: '2023-11-14T22:13:20Z', file: 'vm-Snapshot1.vmsn', pages: 4096 }],
    });
    cp = w.checkpoints.get(1) as WrittenFolderCheckpoint;
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
    m = await TestMount.start(path.join(dir('ext'), 'vm'), [], { VMSSFS_NATIVE: '0' });
  });
  after(async function () {
    this.timeout(60_000);
    slowFs?.kill('SIGUSR2');
    await m?.unmount();
    if (await isMounted(dir('ext'))) await runCommand('umount', [dir('ext')]);
    if (loop) await runCommand('losetup', ['-d', loop]);
    if (await isMounted(dir('fuse'))) await runCommand('fusermount', ['-u', dir('fuse')]);
    slowFs?.kill('SIGKILL');
    tmp.cleanup();
  });

  const stalledReads = () => slowOut.split('\n').filter((l) => l.startsWith('slow read')).length;

  it("moves a checkpoint's memory file to the thread pool after one stalled read, so the next stalls no other read", async () => {
    const mnt = m as TestMount;
    const raw = mnt.path('before', 'physmem.raw');
    expect(await readRange(raw, 0, 4096), 'read before the disk stalls').to.deep.equal(cp.readPhys(0, 4096));
    slowFs?.kill('SIGUSR1');
    // The first stalled read is read in place: it holds the daemon for as long as the disk takes.
    expect(await readRange(raw, 1000 * 4096, 4096)).to.deep.equal(cp.readPhys(1000 * 4096, 4096));
    const seen = stalledReads();
    const order: string[] = [];
    const stalled = readRange(raw, 3000 * 4096, 4096).then((b) => {
      order.push('stalled read');
      return b;
    });
    for (let i = 0; i < 200 && stalledReads() === seen; i++) await sleep(10);
    expect(stalledReads(), 'the second read reached the stalled disk').to.be.greaterThan(seen);
    await Promise.all([
      fs.promises.readFile(mnt.path('snapshots.txt'), 'utf8'),
      fs.promises.readFile(mnt.path('before', 'metadata.json'), 'utf8'),
      fs.promises.readFile(mnt.path('before', 'info.txt'), 'utf8'),
      fs.promises.readdir(mnt.path('before', 'groups', 'cpu')),
    ]);
    order.push('other files');
    expect(await stalled).to.deep.equal(cp.readPhys(3000 * 4096, 4096));
    expect(order).to.deep.equal(['other files', 'stalled read']);
    expect(mnt.stderr).to.match(/vm-Snapshot1\.vmem: a read took \d+ ms \(the disk, not memory\): its reads go to the thread pool/);
  }).timeout(60_000);
});
