import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { alteredPage, writeFolderCheckpoint, writeVmFolder } from './kit/folder-writer';
import { writeGuestDump } from './kit/writer';
import { scratchDir } from './helpers/paths';
import { runCli } from './helpers/run';
import { pageRanges } from './helpers/vault';

const PAGE = 4096;

interface DiffJson {
  changed: { start: number; length: number }[];
  onlyA: { start: number; length: number }[];
  onlyB: { start: number; length: number }[];
  counts: { compared: number; changed: number; onlyA: number; onlyB: number; unreadable: number };
}

async function diffJson(...args: string[]): Promise<DiffJson> {
  const r = await runCli(['diff', '--json', ...args], { timeoutMs: 60_000 });
  expect(r.code, r.stderr).to.equal(0);
  return JSON.parse(r.stdout) as DiffJson;
}

describe('diff opens what info and the mount open', function () {
  this.timeout(120_000);
  const scratch = scratchDir('vmssfs-diff-targets-');

  describe('ESXi guest dumps', () => {
    // 64 pages of guest-physical space, pages 16-31 and 40-47 not stored (holes).
    const HOLES = [{ ppn: 16, pages: 16 }, { ppn: 40, pages: 8 }];
    let older: string;
    let after: string;
    before(() => {
      for (const name of ['before', 'after']) fs.mkdirSync(scratch.named(name));
      older = writeGuestDump(path.join(scratch.named('before'), 'debug.guest'), { version: 7, vcpus: 2, totalPages: 64, holes: HOLES }).path;
      const w = writeGuestDump(path.join(scratch.named('after'), 'debug.guest'), { version: 7, vcpus: 2, totalPages: 64, holes: HOLES });
      after = w.path;
      // Guest page 50 changed: it lies in the third run, 24 pages lower in debug.vmem.
      const run = w.runs.find((r) => r.physAddr <= 50 * PAGE && 50 * PAGE < r.physAddr + r.length) as { physAddr: number; fileOffset: number };
      const fd = fs.openSync(w.vmemPath as string, 'r+');
      fs.writeSync(fd, alteredPage(w.readPhys(50 * PAGE, PAGE), 9), 0, PAGE, run.fileOffset + 50 * PAGE - run.physAddr);
      fs.closeSync(fd);
    });

    it('compares two guest dumps, named by debug.guest or by debug.vmem', async () => {
      const d = await diffJson(older, after.replace(/guest$/, 'vmem'));
      expect(d.changed).to.deep.equal(pageRanges([50]));
      expect(d.counts).to.deep.equal({ compared: 40, changed: 1, onlyA: 0, onlyB: 0, unreadable: 0 });
    });

    it('compares a guest dump with a VMware checkpoint: the holes are only in the checkpoint', async () => {
      const vm = writeFolderCheckpoint(scratch.named('before'), { file: 'vm.vmss', pages: 64 });
      const d = await diffJson(older, (vm.written as { path: string }).path);
      expect(d.changed).to.deep.equal([]);
      expect(d.onlyB).to.deep.equal(HOLES.map((h) => ({ start: h.ppn * PAGE, length: h.pages * PAGE })));
      expect(d.counts).to.deep.equal({ compared: 40, changed: 0, onlyA: 0, onlyB: 24, unreadable: 0 });
    });

    it('takes a guest dump\'s memory file from --vmem-b', async () => {
      const d = await diffJson('--vmem-b', after.replace(/guest$/, 'vmem'), older, older);
      expect(d.changed).to.deep.equal(pageRanges([50]));
    });
  });

  describe('VMDIR:NAME where NAME or the folder holds a colon', () => {
    let vmDir: string;
    before(() => {
      // The folder's own path holds a colon too: only the prefix that is a folder splits.
      vmDir = scratch.named('case:7/vm');
      fs.mkdirSync(vmDir, { recursive: true });
      writeVmFolder(vmDir, {
        name: 'vm',
        current: 2,
        snapshots: [
          { uid: 1, displayName: 'clean', created: '2024-03-01T10:00:00Z', file: 'vm-Snapshot1.vmsn' },
          { uid: 2, parent: 1, displayName: 'after sample 10:30', created: '2024-03-01T10:30:00Z', file: 'vm-Snapshot2.vmsn', altered: new Map([[3, 2]]) },
          { uid: 3, parent: 2, displayName: 'x:', created: '2024-03-01T11:00:00Z', file: 'vm-Snapshot3.vmsn', altered: new Map([[4, 3]]) },
        ],
      });
    });

    it('names a snapshot whose display name holds a colon', async () => {
      const d = await diffJson(`${vmDir}:clean`, `${vmDir}:after sample 10:30`);
      expect(d.changed).to.deep.equal(pageRanges([3]));
      const e = await diffJson(`${vmDir}:clean`, `${vmDir}:x:`);
      expect(e.changed).to.deep.equal(pageRanges([4]));
    });

    it('an unknown name still names the folder and its checkpoints', async () => {
      const r = await runCli(['diff', `${vmDir}:clean`, `${vmDir}:after sample 10:31`]);
      expect(r.code).to.equal(1);
      expect(r.stderr.trim().split('\n')).to.have.length(1);
      expect(r.stderr).to.include(`${vmDir}: no checkpoint "after sample 10:31" (its checkpoints: clean, after sample 10:30, x:)`);
    });
  });
});
