// The bad-input rules, through the real CLI (bin/vmssfs as its own process), and `info --json`
// on files shaped by hand with writeCheckpoint, as another writer following FORMAT.md would.

import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { InfoJson } from '../src/evidence/info';
import { PAGE, padded, u16, u32, u64, u8, writeCheckpoint, type CheckpointSpec, type WrittenCheckpoint } from './kit/writer';
import { memoryGroup } from './helpers/checkpoint';
import { isMounted, TestMount } from './helpers/mount';
import { REPO, SAMPLE, scratchDir } from './helpers/paths';
import { runCli, runCommand, type RunResult } from './helpers/run';

const GiB = 2 ** 30;

function expectOneLineError(r: RunResult, file: string, what: RegExp): void {
  expect(r.code, r.stderr).to.equal(1);
  expect(r.stdout).to.equal('');
  expect(r.stderr.endsWith('\n')).to.equal(true);
  const lines = r.stderr.slice(0, -1).split('\n');
  expect(lines, r.stderr).to.have.length(1);
  expect(lines[0]!.startsWith(`vmssfs: ${file}: `), lines[0]).to.equal(true);
  expect(lines[0]).to.match(what);
  expect(r.stderr).not.to.match(/\n\s+at |Error:|internal error/);
}

async function infoJson(args: string[]): Promise<InfoJson> {
  const r = await runCli(['info', '--json', ...args]);
  expect(r.code, r.stderr).to.equal(0);
  expect(r.stderr).to.equal('');
  return JSON.parse(r.stdout) as InfoJson;
}

describe('cli', () => {
  const scratch = scratchDir('vmssfs-cli-');
  const file = (name?: string): string => (name === undefined ? scratch.file() : scratch.named(name));
  const bytes = (data: Buffer, name?: string): string => {
    const p = file(name);
    fs.writeFileSync(p, data);
    return p;
  };

  describe('input that is not a checkpoint: exit 1, one line on stderr naming the file, no stack trace', () => {
    it('not a VMware checkpoint (a PNG, a text file, an encrypted state file)', async () => {
      const png = bytes(Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), Buffer.alloc(100)]), 'shot.vmss');
      expectOneLineError(await runCli(['info', png]), png, /not a VMware checkpoint \(magic 0x0a1a0a0d0a1a0a0d|not a VMware checkpoint/);
      const txt = bytes(Buffer.from('config.version = "8"\n'.repeat(10)), 'vm.vmsn');
      expectOneLineError(await runCli(['info', '--json', txt]), txt, /not a VMware checkpoint/);
      const enc = bytes(Buffer.concat([u32(0xbed4bed4), u32(0), u32(1), Buffer.alloc(200, 0x77)]));
      expectOneLineError(await runCli(['info', enc]), enc, /not a VMware checkpoint \(magic 0xbed4bed4/);
    });

    it('an empty file', async () => {
      const p = bytes(Buffer.alloc(0));
      expectOneLineError(await runCli(['info', p]), p, /empty/);
    });

    it('a short header', async () => {
      const p = bytes(Buffer.concat([u32(0xbed2bed2), u32(0), u16(1)]));
      expectOneLineError(await runCli(['info', '--json', p]), p, /only 10 bytes, too short for a VMware checkpoint header/);
    });

    it('a group table beyond the end of the file', async () => {
      const w = writeCheckpoint(file(), { groups: [{ name: 'a', tags: [] }, { name: 'b', tags: [] }, { name: 'c', tags: [] }] });
      fs.truncateSync(w.path, 12 + 80 * 2 + 40);
      expectOneLineError(await runCli(['info', w.path]), w.path, /group table of 3 groups ends at 0xfc, beyond the end of the file \(0xd4\)/);
    });

    it('an absurd group count', async () => {
      const p = bytes(Buffer.concat([u32(0xbed2bed2), u32(0), u32(0x7fffffff), Buffer.alloc(4096)]));
      expectOneLineError(await runCli(['info', p]), p, /absurd group count 2147483647/);
    });

    it('a file that does not exist, and a directory holding no checkpoint', async () => {
      const missing = file('missing.vmss');
      expectOneLineError(await runCli(['info', missing]), missing, /cannot open: no such file/);
      // A directory is taken as a VM folder; one with nothing to serve is refused.
      const empty = file('empty-dir');
      fs.mkdirSync(empty);
      expectOneLineError(await runCli(['info', empty]), empty, /not a VM folder/);
    });
  });

  describe('a read of the metadata that fails (EIO: a bad sector, a vanished share)', () => {
    // The snapshot is served by a FUSE filesystem whose reads fail over the cpu group's stream,
    // 2 MiB into the file, away from the header the kernel may read ahead.
    let source: string;
    let badAt: number;
    let faultyMnt: string;
    let faulty: ChildProcess | undefined;
    before(async () => {
      const w = writeCheckpoint(file('eio.vmss'), {
        groups: [{ name: 'Checkpoint', tags: [{ name: 'memSize', value: u32(16) }] }, { name: 'cpu', tags: [{ name: 'rip', indices: [0], value: u64(1) }] }],
        gapBefore: [0, 2 * 1024 * 1024],
      });
      badAt = w.groups[1]!.tagsOffset;
      faultyMnt = fs.mkdtempSync(path.join(scratch.dir, 'faulty-'));
      faulty = spawn(process.execPath, [path.join(REPO, 'dist', 'test', 'helpers', 'faulty-fs.js'), w.path, faultyMnt, String(badAt), String(badAt + 16)], { stdio: 'ignore' });
      for (let i = 0; i < 400 && !(await isMounted(faultyMnt)); i++) await new Promise((r) => setTimeout(r, 25));
      source = path.join(faultyMnt, 'evidence.vmss');
    });
    after(async () => {
      if (await isMounted(faultyMnt)) await runCommand('fusermount', ['-u', faultyMnt]);
      faulty?.kill('SIGKILL');
    });

    it('info, ls and a mount name the file and the offset, in one line, exit 1', async () => {
      const what = new RegExp(`: read of \\d+ bytes at offset 0x${badAt.toString(16)} failed: input/output error`);
      expectOneLineError(await runCli(['info', source]), source, what);
      expectOneLineError(await runCli(['ls', source]), source, what);
      const mnt = fs.mkdtempSync(path.join(scratch.dir, 'mnt-'));
      try {
        expectOneLineError(await runCli([source, mnt], { timeoutMs: 20_000 }), source, what);
        expect(await isMounted(mnt)).to.equal(false);
      } finally {
        if (await isMounted(mnt)) await runCommand('fusermount', ['-u', mnt]);
      }
    });
  });

  describe('usage errors: exit 2 with the usage', () => {
    const cases: [string, string[]][] = [
      ['no arguments', []],
      ['info without a snapshot', ['info']],
      ['info with two snapshots', ['info', 'a.vmss', 'b.vmss']],
      ['an unknown option', ['info', '--bogus', 'a.vmss']],
      ['--vmem without its value', ['info', 'a.vmss', '--vmem']],
    ];
    for (const [what, args] of cases) {
      it(what, async () => {
        const r = await runCli(args);
        expect(r.code, r.stderr).to.equal(2);
        expect(r.stdout).to.equal('');
        expect(r.stderr).to.match(/^vmssfs: .+\nusage:\n/);
        expect(r.stderr).to.include('vmssfs info [--json] [--verbose] [--vmem FILE] [--assume-flat] SNAPSHOT');
        expect(r.stderr).not.to.match(/\n\s+at /);
      });
    }
  });

  describe('the command line', () => {
    it('COMMAND --help and -h print that command\'s usage on stdout, exit 0', async () => {
      const cases: [string[], string][] = [
        [['info', '--help'], 'vmssfs info [--json] [--verbose] [--vmem FILE] [--assume-flat] SNAPSHOT'],
        [['ls', '-h'], 'vmssfs ls [-l] [--vmem FILE] [--assume-flat] SNAPSHOT [DIR]'],
        [['cat', SAMPLE, '--help'], 'vmssfs cat [--vmem FILE] [--assume-flat] SNAPSHOT PATH'],
        [['extract', '-h'], 'vmssfs extract [--force] [--vmem FILE] [--assume-flat] SNAPSHOT OUTDIR [PATH...]'],
        [['help', 'ls'], 'vmssfs ls [-l] [--vmem FILE] [--assume-flat] SNAPSHOT [DIR]'],
      ];
      for (const [args, synopsis] of cases) {
        const r = await runCli(args);
        expect([r.code, r.stderr], args.join(' ')).to.deep.equal([0, '']);
        expect(r.stdout, args.join(' ')).to.match(new RegExp(`^usage:\n  ${synopsis.replace(/[[\].]/g, '\\$&')}\n`));
      }
    });

    it('--help (and a mount given --help) prints the whole usage, --log included', async () => {
      for (const args of [['--help'], ['-h'], ['help'], [SAMPLE, '/nonexistent', '--help']]) {
        const r = await runCli(args);
        expect([r.code, r.stderr], args.join(' ')).to.deep.equal([0, '']);
        expect(r.stdout).to.match(/^usage:\n {2}vmssfs \[options\] SNAPSHOT MOUNTPOINT/);
        expect(r.stdout).to.match(/\n {2}--log FILE +the detached daemon's log/);
      }
    });

    it('an unknown option is named in the tool\'s words, with the command\'s usage, exit 2', async () => {
      const r = await runCli(['info', '--bogus', SAMPLE]);
      expect(r.code).to.equal(2);
      expect(r.stderr).to.match(/^vmssfs: info: unknown option --bogus\nusage:\n {2}vmssfs info /);
      const v = await runCli(['cat', SAMPLE, 'info.txt', '--vmem']);
      expect(v.code).to.equal(2);
      expect(v.stderr.split('\n')[0]).to.equal('vmssfs: cat: --vmem needs a value');
    });

    it('a mistyped command is an unknown command, not a mount of its argument', async () => {
      const r = await runCli(['inof', SAMPLE]);
      expect([r.code, r.stdout]).to.deep.equal([2, '']);
      expect(r.stderr.split('\n')[0]).to.equal('vmssfs: inof: unknown command (did you mean info?), and no file of that name to mount');
      const far = await runCli(['frobnicate', SAMPLE]);
      expect(far.stderr.split('\n')[0]).to.equal('vmssfs: frobnicate: unknown command, and no file of that name to mount');
    });

    it('a --vmem that does not exist is exit 1 for info and for a mount, which mounts nothing', async () => {
      const missing = file('missing.vmem');
      expectOneLineError(await runCli(['info', '--vmem', missing, SAMPLE]), missing, /cannot open: no such file \(the --vmem memory file\)$/);
      const mnt = fs.mkdtempSync(path.join(scratch.dir, 'mnt-'));
      try {
        expectOneLineError(await runCli(['--vmem', missing, SAMPLE, mnt], { timeoutMs: 20_000 }), missing, /cannot open: no such file/);
        expect(await isMounted(mnt)).to.equal(false);
      } finally {
        if (await isMounted(mnt)) await runCommand('fusermount', ['-u', mnt]);
      }
    });

    it('a --log that cannot be opened says why, and nothing is mounted', async () => {
      const mnt = fs.mkdtempSync(path.join(scratch.dir, 'mnt-'));
      const noDir = path.join(scratch.dir, 'no', 'such', 'dir', 'vmssfs.log');
      try {
        const r = await runCli(['--log', noDir, SAMPLE, mnt], { timeoutMs: 20_000 });
        expect([r.code, r.stderr]).to.deep.equal([1, `vmssfs: ${noDir}: cannot open the log: its directory ${path.dirname(noDir)} does not exist\n`]);
        const dir = await runCli(['--log', scratch.dir, SAMPLE, mnt], { timeoutMs: 20_000 });
        expect([dir.code, dir.stderr]).to.deep.equal([1, `vmssfs: ${scratch.dir}: cannot open the log: is a directory\n`]);
        expect(await isMounted(mnt)).to.equal(false);
      } finally {
        if (await isMounted(mnt)) await runCommand('fusermount', ['-u', mnt]);
      }
    });

    it('--log with -f says it is not used, and the log goes to stderr', async () => {
      const log = file('unused.log');
      const m = await TestMount.start(SAMPLE, ['--log', log]);
      try {
        expect(m.stderr).to.include('vmssfs: warning: --log is not used with -f: the log goes to stderr\n');
        expect(fs.existsSync(log)).to.equal(false);
      } finally {
        await m.unmount();
      }
    });

    it('PATHs are read as a shell would: ./info.txt, a trailing slash, doubled slashes', async () => {
      const plain = await runCli(['cat', SAMPLE, 'info.txt']);
      expect(plain.code).to.equal(0);
      for (const p of ['./info.txt', './/info.txt', '././info.txt']) {
        const r = await runCli(['cat', SAMPLE, p]);
        expect([r.code, r.stderr], p).to.deep.equal([0, '']);
        expect(r.stdout, p).to.equal(plain.stdout);
      }
      const cpu = await runCli(['ls', SAMPLE, 'groups/cpu']);
      for (const p of ['./groups/cpu/', 'groups//cpu', './groups/./cpu']) {
        const r = await runCli(['ls', SAMPLE, p]);
        expect([r.code, r.stdout], p).to.deep.equal([0, cpu.stdout]);
      }
      expect((await runCli(['ls', '-l', SAMPLE, './config.vmx'])).stdout).to.match(/^-r--r--r-- +\d+ config\.vmx\n$/);
      const out = path.join(scratch.dir, 'dotted');
      const x = await runCli(['extract', SAMPLE, out, './groups/cpu/', './info.txt']);
      expect(x.code, x.stderr).to.equal(0);
      expect(fs.readdirSync(out).sort()).to.deep.equal(['groups', 'info.txt']);
      expect(fs.readdirSync(path.join(out, 'groups'))).to.deep.equal(['cpu']);
    });
  });

  describe('damaged tag streams: exit 0, the tags read so far kept, a warning, the other groups read', () => {
    const spec = (): CheckpointSpec => ({
      groups: [
        { name: 'Checkpoint', tags: [{ name: 'fileversion', value: u32(0xa) }, { name: 'ProductName', block: { data: padded('VMware ESX', 32) } }, { name: 'memSize', value: u32(16) }] },
        { name: 'cpu', tags: [{ name: 'rip', indices: [0], value: u64(0xfffff80002c1c0ban) }, { name: 'halted', indices: [0], value: u8(1) }] },
        { name: 'Snapshot', tags: [{ name: 'cfgFile', block: { data: Buffer.from('.encoding = "UTF-8"\n') } }, { name: 'tail', value: u16(7) }] },
      ],
    });
    const names = (j: InfoJson, g: number): string[] => j.groups[g]!.tags.map((t) => t.name);

    it('a stream that runs off its group (the table says it is shorter)', async () => {
      const s = spec();
      s.groups[0]!.sizeDelta = -10; // cuts inside memSize, the third tag
      const w = writeCheckpoint(file(), s);
      const j = await infoJson([w.path]);
      expect(names(j, 0)).to.deep.equal(['fileversion', 'ProductName']);
      expect(names(j, 1)).to.deep.equal(['rip', 'halted']);
      expect(names(j, 2)).to.deep.equal(['cfgFile', 'tail']);
      const memSize = w.groups[0]!.tags[2]!;
      expect(j.warnings).to.deep.equal([
        `group "Checkpoint": tag stream runs off the end of the group (0x${(w.groups[0]!.tagsOffset + w.groups[0]!.size).toString(16)}) inside the tag at 0x${memSize.headerOffset.toString(16)}; kept 2 tags`,
      ]);
      expect(j.groups[1]!.tags[0]!.value).to.equal('0xfffff80002c1c0ba');
    });

    it('a stream without its end marker, in the middle of the file', async () => {
      const s = spec();
      s.groups[1]!.omitTerminator = true;
      const w = writeCheckpoint(file(), s);
      const j = await infoJson([w.path]);
      expect(j.groups.map((g) => g.tags.length)).to.deep.equal([3, 2, 2]);
      expect(j.warnings).to.have.length(1);
      expect(j.warnings[0]).to.match(/^group "cpu": tag stream runs off the end of the group \(0x[0-9a-f]+\) without its end marker; kept 2 tags$/);
    });

    it('a block that runs off its group', async () => {
      const s = spec();
      s.groups[2]!.sizeDelta = -30; // inside cfgFile's data
      const w = writeCheckpoint(file(), s);
      const j = await infoJson([w.path]);
      expect(j.groups.map((g) => g.tags.length)).to.deep.equal([3, 2, 1]);
      expect(j.warnings).to.have.length(1);
      expect(j.warnings[0]).to.match(/^Snapshot\/cfgFile: block of 20 bytes at 0x[0-9a-f]+ runs past the end of its group/);
    });

    it('a stream that runs off the end of the file (a truncated copy), with a group stored after the cut', async () => {
      const s = spec();
      s.storeOrder = [0, 2, 1]; // cpu stored last
      const w: WrittenCheckpoint = writeCheckpoint(file(), s);
      const halted = w.groups[1]!.tags[1]!;
      fs.truncateSync(w.path, halted.headerOffset + 3); // inside halted[0]'s name
      const text = await runCli(['info', w.path]);
      expect(text.code).to.equal(0);
      const j = await infoJson([w.path]);
      expect(names(j, 0)).to.deep.equal(['fileversion', 'ProductName', 'memSize']);
      expect(names(j, 1)).to.deep.equal(['rip']);
      expect(names(j, 2)).to.deep.equal(['cfgFile', 'tail']);
      expect(j.warnings).to.deep.equal([
        `group "cpu": tag stream runs off the end of the file at 0x${(halted.headerOffset + 3).toString(16)} (truncated copy?) inside the tag at 0x${halted.headerOffset.toString(16)}; kept 1 tags`,
      ]);
      expect(text.stdout).to.include(`\nWARNING: ${j.warnings[0]}\n`);

      // cut exactly where the cpu group's stream begins: no tags from it, the others intact
      fs.truncateSync(w.path, w.groups[1]!.tagsOffset);
      const j2 = await infoJson([w.path]);
      expect(j2.groups.map((g) => g.tags.length)).to.deep.equal([3, 0, 2]);
      expect(j2.warnings).to.have.length(1);
      expect(j2.warnings[0]).to.match(/^group "cpu": its tags offset 0x[0-9a-f]+ lies beyond the end of the file/);
    });
  });

  describe('info --json on files shaped by hand (another writer)', () => {
    it('version 0, groups stored in reverse, an unpadded Memory block with regions, zero-length and 3-index tags', async () => {
      const mem = Buffer.alloc(6 * PAGE);
      for (let p = 0; p < 6; p++) mem.fill(p + 1, p * PAGE, (p + 1) * PAGE);
      const w = writeCheckpoint(file('other.vmsn'), {
        magic: 0xbed2bed0,
        unknownWord: 0x12345678,
        groups: [
          { name: 'Checkpoint', tags: [{ name: 'memSize', value: u32(0x1000) }, { name: 'marker' }] },
          memoryGroup({ regions: [{ ppn: 0x100000, pageNum: 2, pages: 4 }, { ppn: 0, pageNum: 0, pages: 2 }], memory: mem }),
          { name: 'cpu', tags: [{ name: 'FPUregs', indices: [0, 1, 2], value: u8(255) }, { name: 'gpregs', indices: [0], block: { data: Buffer.alloc(128, 1), padding: 3 } }] },
        ],
        storeOrder: [2, 1, 0],
      });
      const memTag = w.groups[1]!.tags.find((t) => t.name === 'Memory')!;
      const j = await infoJson([w.path]);
      expect(j).to.deep.include({ file: w.path, magic: 0xbed2bed0, version: 0, memoryFile: w.path, physmemError: null, warnings: [] });
      expect(j.physmem).to.deep.equal({
        size: 4 * GiB + 4 * PAGE,
        runs: [
          { physAddr: 0, fileOffset: memTag.dataOffset, length: 2 * PAGE, file: w.path },
          { physAddr: 4 * GiB, fileOffset: memTag.dataOffset + 2 * PAGE, length: 4 * PAGE, file: w.path },
        ],
      });
      expect(j.groups).to.deep.equal(w.groups.map((g) => ({
        name: g.name,
        tagsOffset: g.tagsOffset,
        size: g.size,
        tags: g.tags.map((t) => ({
          name: t.name, indices: t.indices, dataOffset: t.dataOffset, size: t.size, memSize: t.memSize, block: t.block, compressed: t.compressed,
          value: t.inline?.length === 1 ? String(t.inline[0]) : t.inline?.length === 4 ? '0x' + t.inline.readUInt32LE(0).toString(16) : null,
        })),
      })));
      expect(j.groups[2]!.tags[0]).to.deep.include({ indices: [0, 1, 2], value: '255' });
      expect(j.groups[0]!.tags[1]).to.deep.include({ name: 'marker', size: 0, value: null });
    });

    it('a Memory block without regions and without alignment, and a .vmem-less metadata file given --vmem', async () => {
      const w = writeCheckpoint(file('plain.vmss'), { groups: [memoryGroup({ memory: Buffer.alloc(3 * PAGE, 9) })] });
      const memTag = w.groups[0]!.tags[0]!;
      expect(memTag.dataOffset).to.equal(12 + 80 + 2 + 6 + 8 + 18);
      const j = await infoJson([w.path]);
      expect(j.physmem).to.deep.equal({ size: 3 * PAGE, runs: [{ physAddr: 0, fileOffset: memTag.dataOffset, length: 3 * PAGE, file: w.path }] });

      const meta = writeCheckpoint(file('meta.vmss'), { groups: [memoryGroup({ regions: [{ ppn: 0x10, pageNum: 0, pages: 1 }] })] });
      const vmem = bytes(Buffer.alloc(PAGE, 1), '564d-uuid-named');
      const j2 = await infoJson(['--vmem', vmem, meta.path]);
      expect(j2.memoryFile).to.equal(vmem);
      expect(j2.physmem).to.deep.equal({ size: 0x11 * PAGE, runs: [{ physAddr: 0x10 * PAGE, fileOffset: 0, length: PAGE, file: vmem }] });
    });
  });
});
