import { expect } from 'chai';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSnapshot } from './kit/writer';
import { writeVmFolder } from './helpers/encrypted';
import { isMounted } from './helpers/mount';
import { REPO, scratchDir } from './helpers/paths';
import { runCli, runCommand } from './helpers/run';

const PAGE = 4096;
/** diff's exit status when the comparison is incomplete: some memory could not be read. */
const INCOMPLETE = 3;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Unreadable {
  start: number;
  length: number;
  side: 'A' | 'B' | 'both';
}

interface DiffJson {
  changed: { start: number; length: number }[];
  unreadable: Unreadable[];
  counts: { compared: number; changed: number; onlyA: number; onlyB: number; unreadable: number };
}

describe('diff: memory that cannot be read is reported, never compared as zeros', function () {
  this.timeout(120_000);
  const scratch = scratchDir('vmssfs-diff-bad-');

  it('an encrypted .vmem cut inside its pages: the lost pages are unreadable in B, exit 3, nothing "changed"', async () => {
    // 1024 pages, guest-physical = the .vmem's offsets. The container keeps 4064 plaintext bytes
    // per 4096-byte page after a 4096-byte header: cut after 500 of them.
    const vm = writeVmFolder(scratch.named('enc'), { encrypt: true, compress: false, blobPages: 1024 });
    fs.truncateSync(vm.vmem, 4096 + 500 * 4096);
    const firstLost = Math.floor((500 * 4064) / PAGE); // page 496 is partly there: it cannot be read whole
    const r = await runCli(['diff', '--json', '--password-file', vm.passwordFile, vm.plain.path, vm.meta], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).to.equal(INCOMPLETE);
    const d = JSON.parse(r.stdout) as DiffJson;
    expect(d.changed).to.deep.equal([]);
    expect(d.unreadable).to.deep.equal([{ start: firstLost * PAGE, length: (1024 - firstLost) * PAGE, side: 'B' }]);
    expect(d.counts).to.deep.equal({ compared: firstLost, changed: 0, onlyA: 0, onlyB: 0, unreadable: 1024 - firstLost });
    expect(r.stderr).to.match(/comparison incomplete: 528 pages could not be read/);

    const text = await runCli(['diff', '--password-file', vm.passwordFile, vm.plain.path, vm.meta], { timeoutMs: 60_000 });
    expect(text.code).to.equal(INCOMPLETE);
    expect(text.stdout).to.include(`unreadable 0x${(firstLost * PAGE).toString(16)}-0x400000  2.1 MiB  in B\n`);
    expect(text.stdout).to.match(/pages compared 496, changed 0 \(0 ranges\), only in A 0, only in B 0, unreadable 528;/);

    // The other way round, the lost pages are A's.
    const swapped = await runCli(['diff', '--json', '--password-file', vm.passwordFile, vm.meta, vm.plain.path], { timeoutMs: 60_000 });
    expect(swapped.code).to.equal(INCOMPLETE);
    expect((JSON.parse(swapped.stdout) as DiffJson).unreadable).to.deep.equal([{ start: firstLost * PAGE, length: (1024 - firstLost) * PAGE, side: 'A' }]);
  });

  it('pages unreadable on both sides are unreadable in both', async () => {
    const vm = writeVmFolder(scratch.named('both'), { encrypt: true, compress: false, blobPages: 256 });
    fs.truncateSync(vm.vmem, 4096 + 100 * 4096);
    const r = await runCli(['diff', '--json', '--password-file', vm.passwordFile, vm.meta, vm.meta], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).to.equal(INCOMPLETE);
    const lost = Math.floor((100 * 4064) / PAGE);
    expect((JSON.parse(r.stdout) as DiffJson).unreadable).to.deep.equal([{ start: lost * PAGE, length: (256 - lost) * PAGE, side: 'both' }]);
  });

  describe('a read that fails under the comparison (a bad sector, EIO from the disk)', () => {
    let faultyMnt: string;
    let faulty: ReturnType<typeof spawn> | null = null;
    const badPage = 300;
    before(async () => {
      faultyMnt = scratch.named('faulty-mnt');
      fs.mkdirSync(faultyMnt);
    });
    after(async () => {
      if (await isMounted(faultyMnt)) await runCommand('fusermount', ['-u', faultyMnt]);
      faulty?.kill('SIGKILL');
    });

    it('only the pages the failing read touches are unreadable; every other page is compared', async () => {
      const w = writeSnapshot(scratch.named('embedded.vmss'), { memory: 'embedded', blobPages: 512 });
      const bad = w.blobOffset + badPage * PAGE + 100;
      faulty = spawn(process.execPath, [path.join(REPO, 'dist', 'test', 'helpers', 'faulty-fs.js'), w.path, faultyMnt, String(bad), String(bad + 16)], { stdio: 'ignore' });
      for (let i = 0; i < 200 && !(await isMounted(faultyMnt)); i++) await sleep(25);
      const r = await runCli(['diff', '--json', w.path, path.join(faultyMnt, 'evidence.vmss')], { timeoutMs: 60_000 });
      expect(r.code, r.stderr).to.equal(INCOMPLETE);
      const d = JSON.parse(r.stdout) as DiffJson;
      expect(d.unreadable).to.deep.equal([{ start: badPage * PAGE, length: PAGE, side: 'B' }]);
      expect(d.counts).to.deep.equal({ compared: 511, changed: 0, onlyA: 0, onlyB: 0, unreadable: 1 });
      expect(r.stderr).to.match(/warning: B: .*evidence\.vmss: read of \d+ bytes at \d+ failed: input\/output error/);
    });
  });

  it('bytes past the end of a plain truncated copy still compare as the zeros the mount serves, with the warning', async () => {
    const dir = scratch.named('plain');
    fs.mkdirSync(dir);
    // Region tags: the runs the checkpoint states reach past the end of the cut file.
    const layout = { memory: 'vmem' as const, blobPages: 64, regions: [{ ppn: 0, pageNum: 0, pages: 64 }] };
    const whole = writeSnapshot(path.join(dir, 'whole.vmss'), layout);
    const cut = writeSnapshot(path.join(dir, 'cut.vmss'), layout);
    fs.truncateSync(cut.vmemPath as string, 60 * PAGE);
    const r = await runCli(['diff', '--json', whole.path, cut.path]);
    expect(r.code, r.stderr).to.equal(0);
    const d = JSON.parse(r.stdout) as DiffJson;
    expect(d.unreadable).to.deep.equal([]);
    expect(d.changed).to.deep.equal([{ start: 60 * PAGE, length: 4 * PAGE }]);
    expect(r.stderr).to.match(/warning: B: guest-physical 0x3c000-0x40000 \(16384 bytes\) lies beyond the end of .*cut\.vmem .*truncated copy; it reads as zeros/);
  });
});
