// What the format allows beyond the common case: a Memory block under other indices, a .std
// suspended state in a VM folder, a folder checkpoint's memory file given by path, and a .vmsd
// disk list with a gap in its indices.

import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { vmsdText, writeVmFolder, type VmsdSnapshotSpec } from './kit/folder-writer';
import { writeSnapshot } from './kit/writer';
import type { SnapshotsJson } from '../src/evidence/folder/report';
import { sha256File } from './helpers/read';
import { BIN, scratchDir } from './helpers/paths';
import { TestMount } from './helpers/mount';
import { runCli } from './helpers/run';

function sha256(bytes: string | Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** `vmssfs cat ARGS`'s stdout as bytes (runCli's is text). */
function catRaw(...args: string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'cat', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`exit ${code}: ${Buffer.concat(err).toString()}`))));
  });
}

describe('what the format allows beyond the common case', function () {
  this.timeout(120_000);
  const scratch = scratchDir('vmssfs-breadth-');

  describe('a Memory block under other indices', () => {
    for (const [what, regions] of [['without region tags', undefined], ['with region tags', [{ ppn: 0, pageNum: 0, pages: 32 }, { ppn: 64, pageNum: 32, pages: 32 }]]] as const) {
      it(`Memory[0] ${what} is the guest's memory`, async () => {
        const w = writeSnapshot(scratch.file(), { memory: 'embedded', blobPages: 64, memoryIndices: [0], regions: regions?.map((r) => ({ ...r })) });
        const raw = await catRaw(w.path, 'physmem.raw');
        expect(raw.length).to.equal(w.physSize);
        expect(sha256(raw)).to.equal(w.physSha256());
        const info = await runCli(['info', w.path]);
        expect(info.stdout).to.not.match(/not served/);
      });
    }
  });

  describe('a VM folder whose suspended state is a .std file', () => {
    const snapshots: VmsdSnapshotSpec[] = [{ uid: 1, displayName: 'base', created: '2024-01-01T00:00:00Z', file: 'old-Snapshot1.vmsn' }];

    it('the .std the .vmx does not name is the suspended state, as a .vmss would be', async () => {
      const dir = scratch.named('std-unnamed');
      fs.mkdirSync(dir);
      const f = writeVmFolder(dir, { name: 'old', current: 1, snapshots, suspended: { file: 'old.std', unnamed: true, altered: new Map([[2, 5]]) } });
      const j = JSON.parse((await runCli(['info', '--json', dir])).stdout) as SnapshotsJson;
      const suspended = j.checkpoints.find((c) => c.kind === 'suspended');
      expect(suspended?.directory).to.equal('suspended');
      expect(suspended?.files).to.deep.equal(['old.std', 'old.vmem']);
      expect(j.warnings.join('\n')).to.not.match(/old\.std/);
      expect(sha256(await catRaw(dir, 'suspended/physmem.raw'))).to.equal(f.checkpoints.get('suspended')?.physSha256());
    });

    it('a .std that neither the .vmsd nor the .vmx names is served by file name, as a stray .vmss is', async () => {
      const dir = scratch.named('std-stray');
      fs.mkdirSync(dir);
      writeVmFolder(dir, { name: 'old', current: 1, snapshots, suspended: { file: 'old.vmss' } });
      writeSnapshot(path.join(dir, 'other.std'), { memory: 'vmem', blobPages: 16 });
      const ls = await runCli(['ls', dir]);
      expect(ls.stdout.split('\n')).to.include('other');
      expect(ls.stderr).to.match(/other\.std is in the folder but in neither the \.vmsd nor the \.vmx: served by file name/);
    });
  });

  describe("a folder checkpoint's memory file given by path: --vmem with VMDIR:NAME", () => {
    let dir: string;
    let moved: string;
    let expected: string;
    before(() => {
      dir = scratch.named('moved');
      fs.mkdirSync(dir);
      const f = writeVmFolder(dir, { name: 'vm', current: 2, snapshots: [
        { uid: 1, displayName: 'clean', created: '2024-01-01T00:00:00Z', file: 'vm-Snapshot1.vmsn' },
        { uid: 2, parent: 1, displayName: 'after', created: '2024-01-02T00:00:00Z', file: 'vm-Snapshot2.vmsn', altered: new Map([[7, 2]]) },
      ] });
      expected = f.checkpoints.get(2)?.physSha256() as string;
      // The memory file kept elsewhere (copied off a datastore apart from its snapshot).
      moved = scratch.named('after-memory.bin');
      fs.renameSync(path.join(dir, 'vm-Snapshot2.vmem'), moved);
    });

    it('info, cat and extract take VMDIR:NAME, and --vmem gives that checkpoint its memory', async () => {
      const without = await runCli(['info', `${dir}:after`]);
      expect(without.code, without.stderr).to.equal(0);
      expect(without.stdout).to.match(/Physical memory: not served/);
      expect(sha256(await catRaw('--vmem', moved, `${dir}:after`, 'physmem.raw'))).to.equal(expected);
      const info = await runCli(['info', '--json', '--vmem', moved, `${dir}:after`]);
      expect((JSON.parse(info.stdout) as { memoryFile: string }).memoryFile).to.equal(moved);
      const out = scratch.named('moved-out');
      const x = await runCli(['extract', '--vmem', moved, `${dir}:after`, out, 'physmem.raw']);
      expect(x.code, x.stderr).to.equal(0);
      expect(await sha256File(path.join(out, 'physmem.raw'))).to.equal(expected);
    });

    it('the mount takes VMDIR:NAME with --vmem', async () => {
      const m = await TestMount.start(`${dir}:after`, ['--vmem', moved]);
      try {
        expect(await sha256File(m.path('physmem.raw'))).to.equal(expected);
        expect(fs.readdirSync(m.mountpoint)).to.include('config.vmx');
      } finally {
        await m.unmount();
      }
    });

    it('--vmem with a whole folder is refused, pointing at VMDIR:NAME', async () => {
      const r = await runCli(['cat', '--vmem', moved, dir, 'after/physmem.raw']);
      expect(r.code).to.equal(2);
      expect(r.stderr.split('\n')[0]).to.equal(`vmssfs: --vmem names one checkpoint's memory: name that checkpoint as ${dir}:NAME (a VM folder finds each checkpoint's own)`);
    });
  });

  it('a .vmsd whose disk list skips an index lists every disk it holds (numDisks says how many)', async () => {
    const dir = scratch.named('disks');
    fs.mkdirSync(dir);
    const snapshots: VmsdSnapshotSpec[] = [{ uid: 1, displayName: 'two disks', created: '2024-01-01T00:00:00Z', file: 'vm-Snapshot1.vmsn' }];
    // disk0 and disk2: the disk at index 1 was removed from the VM before the snapshot.
    const text = vmsdText(snapshots, 1).replace('snapshot0.numDisks = "1"', 'snapshot0.numDisks = "2"')
      .replace('snapshot0.disk0.node = "scsi0:0"', 'snapshot0.disk0.node = "scsi0:0"\nsnapshot0.disk2.fileName = "vm_1-000001.vmdk"\nsnapshot0.disk2.node = "scsi0:2"');
    writeVmFolder(dir, { name: 'vm', current: 1, snapshots, vmsdText: text });
    const r = await runCli(['info', '--json', dir]);
    const j = JSON.parse(r.stdout) as SnapshotsJson;
    expect(j.checkpoints[0]?.disks).to.deep.equal(['vm-000001.vmdk', 'vm_1-000001.vmdk']);
    expect(j.warnings).to.deep.equal([]);
  });

  it('a .vmsd whose numDisks and disk list disagree lists what is there, and says so', async () => {
    const dir = scratch.named('disks-short');
    fs.mkdirSync(dir);
    const snapshots: VmsdSnapshotSpec[] = [{ uid: 1, displayName: 'one', created: '2024-01-01T00:00:00Z', file: 'vm-Snapshot1.vmsn' }];
    writeVmFolder(dir, { name: 'vm', current: 1, snapshots, vmsdText: vmsdText(snapshots, 1).replace('snapshot0.numDisks = "1"', 'snapshot0.numDisks = "3"') });
    const j = JSON.parse((await runCli(['info', '--json', dir])).stdout) as SnapshotsJson;
    expect(j.checkpoints[0]?.disks).to.deep.equal(['vm-000001.vmdk']);
    expect(j.warnings).to.include(`${path.join(dir, 'vm.vmsd')}: snapshot0.numDisks says 3, the file names 1 disk; the named ones are listed`);
  });
});
