import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createTimeHalves, type WrittenVmFolder } from './kit/folder-writer';
import { writeSnapshot } from './kit/writer';
import { openFolder } from '../src/evidence/folder/folder';
import type { SnapshotsJson } from '../src/evidence/folder/report';
import { notTextReason } from '../src/format/dictionary';
import { decodeCreateTime, parseVmsd } from '../src/evidence/folder/vmsd';
import { buildFolderTree } from '../src/tree/folder';
import { MAX_OPENED_NATIVELY, nativeSpec } from '../src/fuse/native';
import { DEFAULT_MAX_OPEN, FilePool, PooledFile } from '../src/io/pool';
import { PageCache } from '../src/cache/pagecache';
import { TestMount } from './helpers/mount';
import { scratchDir, tempDir } from './helpers/paths';
import { readRange, sha256File } from './helpers/read';
import { runCli, runCommand } from './helpers/run';
import { chain, VAULT_CHAIN, writeVault } from './helpers/vault';

describe('VM folder: the .vmsd and .vmx', () => {
  it('decodes the creation time from its two signed halves', () => {
    // 1700000000 s = 2023-11-14 22:13:20 UTC; its low half, read as signed, is positive.
    expect(decodeCreateTime(395812, 404635648)).to.equal('2023-11-14T22:13:20.000Z');
    // A low half at or past 2^31 is written negative: low mod 2^32 restores it.
    expect(decodeCreateTime(395812, -1090331648)).to.equal('2023-11-14T23:00:00.000Z');
    expect(decodeCreateTime(395812, 2 ** 32 - 1090331648)).to.equal('2023-11-14T23:00:00.000Z');
    expect(decodeCreateTime(null, 5)).to.equal(null);
  });

  it('agrees with the fixture writer on every time it encodes', () => {
    for (const iso of ['1970-01-01T00:00:00.000Z', '2001-09-09T01:46:40.000Z', '2023-11-14T22:13:20.123Z', '2038-01-19T03:14:08.000Z', '2100-02-28T12:00:00.000Z']) {
      const t = createTimeHalves(iso);
      expect(decodeCreateTime(t.high, t.low), iso).to.equal(iso);
    }
  });

  it('reads entries, escapes, parents and the current snapshot', () => {
    const v = parseVmsd(
      [
        '.encoding = "UTF-8"',
        'snapshot.lastUID = "2"',
        'snapshot.current = "2"',
        'snapshot0.uid = "1"',
        'snapshot0.filename = "a-Snapshot1.vmsn"',
        'snapshot0.displayName = "say |22hi|22 |7C bye"',
        'snapshot1.uid = "2"',
        'snapshot1.parent = "1"',
        'snapshot1.filename = "a-Snapshot2.vmsn"',
        'snapshot1.disk0.fileName = "a-000001.vmdk"',
        'snapshot1.disk1.fileName = "b-000001.vmdk"',
        'snapshot.numSnapshots = "2"',
      ].join('\r\n'),
      'a.vmsd',
    );
    expect(v.warnings).to.deep.equal([]);
    expect(v.current).to.equal(2);
    expect(v.entries.map((e) => [e.uid, e.parent, e.filename, e.displayName])).to.deep.equal([
      [1, null, 'a-Snapshot1.vmsn', 'say "hi" | bye'],
      [2, 1, 'a-Snapshot2.vmsn', 'snapshot1'],
    ]);
    expect(v.entries[1]?.disks).to.deep.equal(['a-000001.vmdk', 'b-000001.vmdk']);
  });

  it('warns when the declared count disagrees or an entry lacks its uid or file', () => {
    const v = parseVmsd('snapshot.numSnapshots = "3"\nsnapshot0.displayName = "x"\n', 'b.vmsd');
    expect(v.entries).to.have.length(1);
    expect(v.warnings.join('\n')).to.match(/numSnapshots says 3/).and.match(/no uid/).and.match(/names no \.vmsn/);
  });

  it('tells a .vmsd from what is not one (an empty one is)', () => {
    expect(notTextReason(Buffer.alloc(0))).to.equal(null);
    expect(notTextReason(Buffer.from('snapshot.lastUID = "1"\n'))).to.equal(null);
    expect(notTextReason(Buffer.from([0xbe, 0xd2, 0xbe, 0xd2, 0, 0, 0, 0]))).to.match(/binary/);
    expect(notTextReason(Buffer.from('hello\nworld\n'))).to.match(/2 of its 2 lines/);
  });
});

describe('VM folder: descriptors opened on demand', () => {
  const scratch = scratchDir('vmssfs-pool-');

  it('keeps at most maxOpen descriptors open and still reads every file right', () => {
    const pool = new FilePool(2);
    const files = [0, 1, 2, 3, 4].map((i) => {
      const p = scratch.named(`p${i}.bin`);
      fs.writeFileSync(p, Buffer.alloc(100, i + 1));
      return pool.file(p);
    });
    expect(pool.openCount).to.equal(0);
    for (let round = 0; round < 2; round++) {
      for (const [i, f] of files.entries()) {
        const b = Buffer.alloc(10);
        expect(f.readAtSync(b, 50)).to.equal(10);
        expect([...b]).to.deep.equal(new Array(10).fill(i + 1));
        expect(pool.openCount).to.be.at.most(2);
      }
    }
    pool.closeAll();
    expect(pool.openCount).to.equal(0);
  });

  it('reads asynchronously through a descriptor it opens itself', async () => {
    const pool = new FilePool(1);
    const p = scratch.named('async.bin');
    fs.writeFileSync(p, Buffer.from('0123456789'));
    const f = pool.file(p);
    const b = Buffer.alloc(4);
    expect(await f.read(b, 0, 4, 3)).to.equal(4);
    expect(b.toString()).to.equal('3456');
    pool.closeAll();
  });

  it('refuses a file replaced since it was opened', async () => {
    const pool = new FilePool(1);
    const p = scratch.named('replaced.bin');
    fs.writeFileSync(p, Buffer.alloc(10, 1));
    const f = pool.file(p);
    // Renamed away, not removed: the old inode lives on, so the new file cannot reuse its number.
    fs.renameSync(p, scratch.named('replaced.old'));
    fs.writeFileSync(p, Buffer.alloc(10, 2));
    await f.read(Buffer.alloc(4), 0, 4, 0).then(
      () => expect.fail('read a replaced file'),
      (err: NodeJS.ErrnoException) => expect(err.code).to.equal('ESTALE'),
    );
    pool.closeAll();
  });

  it('parses every checkpoint at open but opens no memory file', () => {
    const dir = scratch.named('lazy');
    fs.mkdirSync(dir);
    writeVault(dir);
    const folder = openFolder(dir);
    try {
      const served = folder.checkpoints.filter((c) => c.snap?.physmem);
      expect(served).to.have.length(4);
      for (const c of served) {
        const file = c.snap?.physmem?.file;
        expect(file).to.be.instanceOf(PooledFile);
        expect((file as PooledFile).isOpen, c.directory ?? '').to.equal(false);
      }
    } finally {
      folder.close();
    }
  });
});

describe('VM folder: mounted through the kernel', function () {
  this.timeout(60_000);
  const tmp = tempDir('vmssfs-folder-');
  let vault: WrittenVmFolder;
  let m: TestMount;
  let json: SnapshotsJson;
  const hashesBefore = new Map<string, string>();

  before(async () => {
    vault = writeVault(tmp.dir);
    for (const f of fs.readdirSync(tmp.dir)) hashesBefore.set(f, await sha256File(path.join(tmp.dir, f)));
    m = await TestMount.start(tmp.dir);
    json = JSON.parse(await fs.promises.readFile(m.path('snapshots.json'), 'utf8')) as SnapshotsJson;
  });
  after(async () => {
    await m?.unmount();
    // Evidence is sacred: every file of the folder is bit-identical after the mount.
    for (const [f, h] of hashesBefore) expect(await sha256File(path.join(tmp.dir, f)), f).to.equal(h);
    tmp.cleanup();
  });

  it('has a directory per served checkpoint, names made unique, and the two reports', async () => {
    expect((await fs.promises.readdir(m.mountpoint)).sort()).to.deep.equal(
      ['after sample', 'clean install', 'clean install~2', 'disk only', 'snapshots.json', 'snapshots.txt', 'suspended'].sort(),
    );
  });

  it('serves each checkpoint with memory byte for byte, as the writer made it', async () => {
    const dirs: [string, number | 'suspended'][] = [['clean install', 1], ['after sample', 2], ['clean install~2', 4], ['suspended', 'suspended']];
    for (const [dir, key] of dirs) {
      const w = vault.checkpoints.get(key);
      expect(await sha256File(m.path(dir, 'physmem.raw')), dir).to.equal(w?.physSha256());
    }
    // The changed pages read as changed, at their addresses.
    const page = await readRange(m.path('suspended', 'physmem.raw'), 200 * 4096, 4096);
    expect(page.readUInt32LE(100)).to.equal(0xdead0003);
  });

  it('gives each checkpoint exactly the tree a mount of its file alone gives', async () => {
    const single = await TestMount.start(path.join(tmp.dir, 'vault-Snapshot2.vmsn'));
    try {
      const list = async (root: string): Promise<string[]> => {
        const out: string[] = [];
        const walk = async (rel: string): Promise<void> => {
          for (const e of (await fs.promises.readdir(path.join(root, rel), { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
            const p = path.join(rel, e.name);
            const st = await fs.promises.stat(path.join(root, p));
            out.push(`${p} ${e.isDirectory() ? 'dir' : st.size}`);
            if (e.isDirectory()) await walk(p);
          }
        };
        await walk('');
        return out;
      };
      expect(await list(m.path('after sample'))).to.deep.equal(await list(single.mountpoint));
      for (const f of ['groups/cpu/rip[0]', 'config.vmx', 'physmem.elf']) {
        expect(await sha256File(m.path('after sample', f)), f).to.equal(await sha256File(single.path(f)));
      }
    } finally {
      await single.unmount();
    }
  });

  it('numbers every inode of the mount uniquely', async () => {
    const r = await runCommand('find', [m.mountpoint, '-printf', '%i %p\\n']);
    const inos = r.stdout.trim().split('\n').map((l) => l.split(' ')[0]);
    expect(inos.length).to.be.greaterThan(500);
    expect(new Set(inos).size).to.equal(inos.length);
  });

  it('serves a snapshot taken without memory with its metadata, and says why there is no physmem', async () => {
    const names = await fs.promises.readdir(m.path('disk only'));
    expect(names).to.include.members(['config.vmx', 'info.txt', 'metadata.json', 'groups']);
    expect(names.filter((n) => n.startsWith('physmem'))).to.deep.equal([]);
    const info = await fs.promises.readFile(m.path('disk only', 'info.txt'), 'utf8');
    expect(info).to.match(/not served: snapshot "disk only" holds no guest memory/);
  });

  it('lists every checkpoint in snapshots.json: names, times, the parent chain, files, memory, current', () => {
    const by = new Map(json.checkpoints.map((c) => [c.displayName + (c.uid ?? ''), c]));
    expect(json.current).to.equal('after sample');
    expect(json.vmx).to.equal('vault.vmx');
    expect(json.vmsd).to.equal('vault.vmsd');
    expect(chain(json)).to.deep.equal(VAULT_CHAIN);
    expect(by.get('clean install1')?.created).to.equal('2023-11-14T22:13:20.000Z');
    expect(by.get('clean install1')?.description).to.equal('fresh "OS" | patched');
    expect(by.get('clean install1')?.files).to.deep.equal(['vault-Snapshot1.vmsn', 'vault-Snapshot1.vmem']);
    expect(by.get('disk only3')?.files).to.deep.equal(['vault-Snapshot3.vmsn']);
    expect(by.get('gone5')?.problem).to.match(/vault-Snapshot5\.vmsn is missing/);
    const suspended = json.checkpoints.find((c) => c.kind === 'suspended');
    expect(suspended?.files).to.deep.equal(['vault-3-3c85c1f6.vmss', 'vault-3-3c85c1f6.vmem']);
    expect(json.warnings.join('\n')).to.match(/snapshot "gone" is missing/);
  });

  it('draws the tree in snapshots.txt', async () => {
    const text = await fs.promises.readFile(m.path('snapshots.txt'), 'utf8');
    expect(text.split('\n').slice(1, 7)).to.deep.equal([
      '└─ clean install  2023-11-14 22:13:20  memory',
      '   ├─ after sample  2023-11-14 23:00:00  memory  (current)',
      '   │  ├─ clean install~2  2023-11-15 01:00:00  memory  "clean install"',
      `   │  └─ suspended  file time ${new Date(json.checkpoints[5]?.modified as string).toISOString().slice(0, 19).replace('T', ' ')}  memory`,
      '   ├─ disk only  2023-11-14 22:30:00  no memory',
      '   └─ gone  2023-11-15 02:00:00  not served: vault-Snapshot5.vmsn is missing from the folder',
    ]);
  });

  it('opens a memory file only when its checkpoint is first read', async () => {
    const fresh = await TestMount.start(tmp.dir, ['--debug']);
    try {
      const vmems = (): string[] => fs.readdirSync(`/proc/${fresh.pid}/fd`).map((fd) => {
        try {
          return fs.readlinkSync(`/proc/${fresh.pid}/fd/${fd}`);
        } catch {
          return '';
        }
      }).filter((t) => t.endsWith('.vmem'));
      expect(vmems()).to.deep.equal([]);
      await readRange(fresh.path('after sample', 'physmem.raw'), 0, 4096);
      expect(vmems()).to.deep.equal([path.join(tmp.dir, 'vault-Snapshot2.vmem')]);
    } finally {
      await fresh.unmount();
    }
    // ...by the native read path, which opened it itself (the folder's pool opened nothing).
    expect(fresh.stderr).to.match(/native reads: [1-9]\d* served .*, 0 failed/);
  });

  it('serves every checkpoint\'s memory and block tags on the native read path', () => {
    const folder = openFolder(tmp.dir);
    try {
      const spec = nativeSpec(buildFolderTree(folder, new PageCache({ maxBytes: 1 << 20 }))).spec;
      const paths = spec.files.map((f) => f.path);
      for (const dir of ['clean install', 'after sample', 'clean install~2', 'suspended']) {
        expect(paths, dir).to.include.members([`/${dir}/physmem.raw`, `/${dir}/physmem.lime`, `/${dir}/physmem.elf`]);
      }
      // Each file by path and identity, for the addon to open on first read; no descriptor handed over.
      expect(spec.sources.every((s) => 'path' in s && path.isAbsolute(s.path))).to.equal(true);
    } finally {
      folder.close();
    }
  });
});

describe('VM folder: commands and bad input', function () {
  this.timeout(60_000);
  const scratch = scratchDir('vmssfs-folder-cli-');
  let vaultDir: string;
  before(() => {
    vaultDir = scratch.named('vault');
    fs.mkdirSync(vaultDir);
    writeVault(vaultDir);
  });

  it('info prints snapshots.txt, info --json snapshots.json', async () => {
    const t = await runCli(['info', vaultDir]);
    expect(t.code).to.equal(0);
    expect(t.stdout).to.match(/├─ after sample {2}2023-11-14 23:00:00 {2}memory {2}\(current\)/);
    const j = await runCli(['info', '--json', vaultDir]);
    expect((JSON.parse(j.stdout) as SnapshotsJson).checkpoints).to.have.length(6);
  });

  it('ls, cat and extract take the folder', async () => {
    const ls = await runCli(['ls', vaultDir, 'suspended']);
    expect(ls.stdout.split('\n')).to.include.members(['physmem.raw', 'info.txt']);
    const cat = await runCli(['cat', vaultDir, 'after sample/groups/cpu/rip[0]']);
    expect(cat.stdout).to.equal('0xfffff80002c1c0ba\n');
    const out = scratch.named('out');
    const ex = await runCli(['extract', vaultDir, out]);
    expect(ex.code, ex.stderr).to.equal(0);
    expect(fs.readdirSync(path.join(out, 'suspended')).sort()).to.deep.equal(['config.vmx', 'groups', 'info.txt', 'metadata.json', 'physmem.raw']);
    expect(fs.existsSync(path.join(out, 'snapshots.json'))).to.equal(true);
  });

  it('leaves every file\'s access time as it was: the .vmx and .vmsd are read as evidence is (O_NOATIME)', async () => {
    const dir = scratch.named('atime');
    fs.mkdirSync(dir);
    writeVault(dir);
    // An access time older than the modification time: relatime would move it on any read.
    const old = new Date('2001-01-01T00:00:00Z');
    const files = fs.readdirSync(dir).map((n) => path.join(dir, n));
    for (const f of files) fs.utimesSync(f, old, fs.statSync(f).mtime);
    const r = await runCli(['info', dir]);
    expect(r.code, r.stderr).to.equal(0);
    const c = await runCli(['cat', dir, 'after sample/config.vmx']);
    expect(c.code, c.stderr).to.equal(0);
    for (const f of files) expect(fs.statSync(f).atime.toISOString(), path.basename(f)).to.equal(old.toISOString());
  });

  it('refuses --vmem with a folder', async () => {
    const r = await runCli(['ls', '--vmem', path.join(vaultDir, 'vault-Snapshot1.vmem'), vaultDir]);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.match(/a VM folder finds each checkpoint's own/);
  });

  it('serves the checkpoints of a folder without .vmx or .vmsd, with a warning', async () => {
    const dir = scratch.named('loose');
    fs.mkdirSync(dir);
    writeSnapshot(path.join(dir, 'one.vmss'), { memory: 'vmem', blobPages: 16 });
    writeSnapshot(path.join(dir, 'two.vmsn'), { memory: 'embedded', blobPages: 16 });
    const r = await runCli(['ls', dir]);
    expect(r.code).to.equal(0);
    expect(r.stdout.split('\n').filter(Boolean)).to.deep.equal(['snapshots.json', 'snapshots.txt', 'suspended', 'two']);
    expect(r.stderr).to.match(/holds no \.vmx or \.vmsd: serving the checkpoints found in it/);
  });

  it('ignores a .vmsd that is not one, with a warning, and serves what the folder holds', async () => {
    const dir = scratch.named('badvmsd');
    fs.mkdirSync(dir);
    writeSnapshot(path.join(dir, 'vm-Snapshot1.vmsn'), { memory: 'embedded', blobPages: 16 });
    fs.writeFileSync(path.join(dir, 'vm.vmx'), 'displayName = "vm"\n');
    fs.copyFileSync(path.join(dir, 'vm-Snapshot1.vmsn'), path.join(dir, 'vm.vmsd'));
    const r = await runCli(['info', '--json', dir]);
    expect(r.code).to.equal(0);
    const j = JSON.parse(r.stdout) as SnapshotsJson;
    expect(j.vmsd).to.equal(null);
    expect(j.warnings.join('\n')).to.match(/vm\.vmsd: not a snapshot database \(it holds binary data/);
    expect(j.checkpoints.map((c) => [c.directory, c.kind])).to.deep.equal([['vm-Snapshot1', 'found']]);
  });

  it('lists a checkpoint it cannot parse as not served and serves the rest', async () => {
    const dir = scratch.named('damaged');
    fs.mkdirSync(dir);
    writeSnapshot(path.join(dir, 'vm-Snapshot1.vmsn'), { memory: 'embedded', blobPages: 16 });
    fs.writeFileSync(path.join(dir, 'vm-Snapshot2.vmsn'), 'not a checkpoint at all\n');
    fs.writeFileSync(path.join(dir, 'vm.vmx'), 'displayName = "vm"\n');
    fs.writeFileSync(path.join(dir, 'vm.vmsd'), 'snapshot0.uid = "1"\nsnapshot0.filename = "vm-Snapshot1.vmsn"\nsnapshot0.displayName = "a"\nsnapshot1.uid = "2"\nsnapshot1.filename = "vm-Snapshot2.vmsn"\nsnapshot1.displayName = "b"\n');
    const r = await runCli(['ls', dir]);
    expect(r.code).to.equal(0);
    expect(r.stdout.split('\n').filter(Boolean)).to.deep.equal(['snapshots.json', 'snapshots.txt', 'a']);
    expect(r.stderr).to.match(/vm-Snapshot2\.vmsn: .*not served/);
  });

  it('answers EIO, not the bytes of another file, when a memory file was replaced before its first read', async () => {
    const dir = scratch.named('swapped');
    fs.mkdirSync(dir);
    writeVault(dir);
    const m = await TestMount.start(dir);
    try {
      const vmem = path.join(dir, 'vault-Snapshot1.vmem');
      fs.renameSync(vmem, path.join(dir, 'kept.vmem'));
      fs.copyFileSync(path.join(dir, 'vault-Snapshot2.vmem'), vmem);
      await readRange(m.path('clean install', 'physmem.raw'), 0, 4096).then(
        () => expect.fail('read a replaced memory file'),
        (err: NodeJS.ErrnoException) => expect(err.code).to.equal('EIO'),
      );
      // The other checkpoints are still served.
      expect((await readRange(m.path('after sample', 'physmem.raw'), 5 * 4096, 4096)).readUInt32LE(100)).to.equal(0xdead0002);
    } finally {
      await m.unmount();
    }
  });

  it('finds a file the .vmsd names by an absolute path from another machine in the folder', async () => {
    const dir = scratch.named('moved');
    fs.mkdirSync(dir);
    writeSnapshot(path.join(dir, 'vm-Snapshot1.vmsn'), { memory: 'vmem', blobPages: 16 });
    fs.writeFileSync(path.join(dir, 'vm.vmx'), 'displayName = "vm"\n');
    fs.writeFileSync(path.join(dir, 'vm.vmsd'), 'snapshot0.uid = "1"\nsnapshot0.filename = "/vmfs/volumes/ds1/vm/vm-Snapshot1.vmsn"\nsnapshot0.displayName = "a/b"\n');
    const r = await runCli(['info', '--json', dir]);
    const j = JSON.parse(r.stdout) as SnapshotsJson;
    expect(j.checkpoints.map((c) => [c.directory, c.hasMemory, c.files])).to.deep.equal([['a%2Fb', true, ['vm-Snapshot1.vmsn', 'vm-Snapshot1.vmem']]]);
    expect(j.warnings).to.deep.equal([]);
  });

  it('without checkpoint.vmState takes the newest .vmss as the suspended state and serves the others by name', async () => {
    const dir = scratch.named('twovmss');
    fs.mkdirSync(dir);
    writeSnapshot(path.join(dir, 'old.vmss'), { memory: 'embedded', blobPages: 16 });
    writeSnapshot(path.join(dir, 'new.vmss'), { memory: 'embedded', blobPages: 16 });
    fs.utimesSync(path.join(dir, 'old.vmss'), new Date('2020-01-01T00:00:00Z'), new Date('2020-01-01T00:00:00Z'));
    fs.writeFileSync(path.join(dir, 'vm.vmx'), 'displayName = "vm"\ncheckpoint.vmState = ""\n');
    const r = await runCli(['info', '--json', dir]);
    const j = JSON.parse(r.stdout) as SnapshotsJson;
    expect(j.checkpoints.map((c) => [c.directory, c.kind, c.files[0]])).to.deep.equal([['suspended', 'suspended', 'new.vmss'], ['old', 'found', 'old.vmss']]);
    expect(j.warnings.join('\n')).to.match(/2 \.vmss or \.std files and the \.vmx names none; new\.vmss, the newest/).and.match(/old\.vmss is in the folder but in neither/);
  });

  it('lists a suspended state the .vmx names but the folder lacks, and gives "suspended" to no snapshot', async () => {
    const dir = scratch.named('nosuspend');
    fs.mkdirSync(dir);
    writeSnapshot(path.join(dir, 'vm-Snapshot1.vmsn'), { memory: 'embedded', blobPages: 16 });
    fs.writeFileSync(path.join(dir, 'vm.vmx'), 'checkpoint.vmState = "vm-1a2b3c4d.vmss"\n');
    fs.writeFileSync(path.join(dir, 'vm.vmsd'), 'snapshot0.uid = "1"\nsnapshot0.filename = "vm-Snapshot1.vmsn"\nsnapshot0.displayName = "suspended"\n');
    const r = await runCli(['info', '--json', dir]);
    const j = JSON.parse(r.stdout) as SnapshotsJson;
    expect(j.checkpoints.map((c) => [c.directory, c.kind, c.missing])).to.deep.equal([['suspended~2', 'snapshot', false], [null, 'suspended', true]]);
    expect(j.warnings.join('\n')).to.match(/vm-1a2b3c4d\.vmss: the suspended state the \.vmx names is missing/);
  });

  it('reads any .vmsd text in bounded time without throwing', () => {
    // Mutations of a real .vmsd: every outcome is entries and warnings, never an exception.
    const base = Buffer.from(fs.readFileSync(path.join(vaultDir, 'vault.vmsd')));
    let seed = 7;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const t0 = Date.now();
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.from(base);
      for (let k = 0; k < 1 + rand(8); k++) b[rand(b.length)] = rand(256);
      const cut = b.subarray(0, rand(b.length + 1));
      if (notTextReason(cut) !== null) continue;
      const v = parseVmsd(cut.toString('utf8'), 'fuzz.vmsd');
      for (const e of v.entries) expect(e.created === null || !Number.isNaN(Date.parse(e.created))).to.equal(true);
    }
    expect(Date.now() - t0).to.be.below(20_000);
  });

  it('serves a folder of more checkpoints than descriptors it may hold, every byte right', async () => {
    const dir = scratch.named('many');
    fs.mkdirSync(dir);
    const written = Array.from({ length: DEFAULT_MAX_OPEN + 8 }, (_, i) =>
      writeSnapshot(path.join(dir, `cp${String(i).padStart(2, '0')}.vmsn`), { memory: i % 2 ? 'vmem' : 'embedded', blobPages: 8, screenshot: false }));
    const m = await TestMount.start(dir);
    try {
      const open = (): number => fs.readdirSync(`/proc/${m.pid}/fd`).filter((fd) => {
        try {
          return fs.readlinkSync(`/proc/${m.pid}/fd/${fd}`).startsWith(dir + '/');
        } catch {
          return false;
        }
      }).length;
      // The native path opens MAX_OPENED_NATIVELY of them itself and hands reads of the rest to
      // JavaScript, whose pool keeps at most DEFAULT_MAX_OPEN open.
      for (const w of written) {
        const name = path.basename(w.path, '.vmsn');
        expect(await sha256File(m.path(name, 'physmem.raw')), name).to.equal(w.physSha256());
        expect(open()).to.be.at.most(DEFAULT_MAX_OPEN + MAX_OPENED_NATIVELY);
      }
      expect(open()).to.be.above(MAX_OPENED_NATIVELY);
    } finally {
      await m.unmount();
    }
  });

  it('refuses a folder with nothing to serve, in one line', async () => {
    const dir = scratch.named('empty');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'hello\n');
    const r = await runCli(['info', dir]);
    expect(r.code).to.equal(1);
    expect(r.stderr.trim().split('\n')).to.have.length(1);
    expect(r.stderr).to.match(/not a VM folder: it holds no \.vmx, \.vmsd, \.vmss, \.vmsn or \.std file/);
  });
});
