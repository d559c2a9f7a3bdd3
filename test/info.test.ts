// `vmssfs info` (src/evidence/info.ts): the text form in the layout of Volatility's vmwareinfo, checked
// against the reference article's own output, and the JSON contract, checked against the writer.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { infoJson, infoText, type InfoJson } from '../src/evidence/info';
import type { Snapshot } from '../src/evidence/evidence';
import { openSnapshot } from '../src/evidence/snapshot';
import {
  cpuRegisters, padded, u16, u32, u64, u8, writeCheckpoint, writeSnapshot,
  type BlockData, type CheckpointSpec, type GroupSpec, type WrittenCheckpoint, type WrittenTag,
} from './kit/writer';
import { regionTags } from './helpers/checkpoint';
import { scratchDir } from './helpers/paths';
import { runCli } from './helpers/run';

/**
 * The vmwareinfo listing printed in the Volatility Labs article "MoVP II - 1.3 - VMware Snapshot
 * and Saved State Analysis" (May 2013)
 * (an ESX 4.1 saved state of a 6 GiB guest): Volatility's output lines, quoted as published,
 * `[snip]` marks and the blog's squeezed spacing included.
 */
const ARTICLE_LISTING: readonly string[] = [
  'Magic: 0xbad1bad1 (Version 1)',
  'Group count: 0x5c',
  '',
  'File Offset PhysMem Offset Size      ',
  '----------- -------------- ----------',
  '0x000010000 0x000000000000 0xc0000000',
  '0x0c0010000 0x000100000000 0xc0000000',
  '',
  'DataOffset   DataSize Name                                               Value',
  '---------- ---------- ------------------------------------------------- -----',
  '0x00001cd9        0x4 Checkpoint/fileversion                             0xa',
  '0x00001cfc      0x100 Checkpoint/ProductName                             ',
  '0x00001cfc  56 4d 77 61 72 65 20 45 53 58 00 00 00 00 00 00   VMware.ESX......',
  '0x00001d0c  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00   ................',
  '[snip]',
  '0x00001e1d      0x100 Checkpoint/VersionNumber                           ',
  '0x00001e1d  34 2e 31 2e 30 00 00 00 00 00 00 00 00 00 00 00   4.1.0...........',
  '0x00001e2d  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00   ................',
  '[snip]',
  '0x00002046        0x4 Checkpoint/Platform                      0x1',
  '0x00002055        0x4 Checkpoint/usageMode                     0x1',
  '0x00002062        0x4 Checkpoint/memSize                       0x1800',
  '0x00002071        0x4 Checkpoint/maxFBSize                     0x800000',
  '0x00002085        0x4 cpu/cpu:numVCPUs                         0x1',
  '0x00002095        0x4 cpu/eflags[0]                            0x86',
  '0x000020a2        0x8 cpu/rip[0]                               0xfffff80002c1c0ba',
  '0x000020b3        0x4 cpu/eip[0]                               0x2c1c0ba',
  '0x000020c3        0x1 cpu/halted[0]                            0',
  '[snip]',
  '0x00005eea        0x4 cpu/CR[0][0]                             0x80050031',
  '0x00005efa        0x4 cpu/CR[0][1]                             0x0',
  '0x00005f0a        0x4 cpu/CR[0][2]                             0x865eb08',
  '0x00005f1a        0x4 cpu/CR[0][3]                             0x187000',
  '0x00005f2a        0x4 cpu/CR[0][4]                             0x6f8',
  '0x00005f3c        0x8 cpu/DR64[0][0]                           0x0',
  '[snip]',
  '0x00006020        0x8 cpu/DR64[0][6]                           0xffff0ff0',
  '0x00006034        0x4 cpu/DR[0][6]                             0xffff0ff0',
  '0x00006046        0x8 cpu/DR64[0][7]                           0x400',
  '0x0000605a        0x4 cpu/DR[0][7]                             0x400',
  '0x0000606c        0x2 cpu/GDTR[0][0]                           127',
  '0x0000607c        0x4 cpu/GDTR[0][1]                           0x3cd5000',
  '0x0000608e        0x4 cpu/GDTR[0][2]                           0xfffff800',
  '0x000060a0        0x2 cpu/IDTR[0][0]                           4095',
  '0x000060b0        0x4 cpu/IDTR[0][1]                           0x3cd5080',
  '0x000060c2        0x4 cpu/IDTR[0][2]                           0xfffff800',
  '[snip]',
  '0x180011963    0x2c29 Snapshot/cfgFile                                   ',
  '0x180011953  2e 65 6e 63 6f 64 69 6e 67 20 3d 20 22 55 54 46   .encoding.=."UTF',
  '0x180011963  2d 38 22 0a 63 6f 6e 66 69 67 2e 76 65 72 73 69   -8".config.versi',
  '0x180011973  6f 6e 20 3d 20 22 38 22 0a 76 69 72 74 75 61 6c   on.=."8".virtual',
  '0x180011983  48 57 2e 76 65 72 73 69 6f 6e 20 3d 20 22 37 22   HW.version.=."7"',
  '0x180011993  0a 70 63 69 42 72 69 64 67 65 30 2e 70 72 65 73   .pciBridge0.pres',
  '0x1800119a3  65 6e 74 20 3d 20 22 74 72 75 65 22 0a 70 63 69   ent.=."true".pci',
  '0x1800119b3  42 72 69 64 67 65 34 2e 70 72 65 73 65 6e 74 20   Bridge4.present.',
  '0x1800119c3  3d 20 22 74 72 75 65 22 0a 70 63 69 42 72 69 64   =."true".pciBrid',
  '0x1800119d3  67 65 34 2e 76 69 72 74 75 61 6c 44 65 76 20 3d   ge4.virtualDev.=',
  '0x1800119e3  20 22 70 63 69 65 52 6f 6f 74 50 6f 72 74 22 0a   ."pcieRootPort".',
];

/** The value vmwareinfo shows, computed from the written bytes without the parser's help. */
function expectedValue(t: WrittenTag): string | null {
  const b = t.inline;
  if (!b) return null;
  if (b.length === 1) return String(b[0]);
  if (b.length === 2) return String(b[0]! + 256 * b[1]!);
  if (b.length === 4) return '0x' + (b[0]! + 2 ** 8 * b[1]! + 2 ** 16 * b[2]! + 2 ** 24 * b[3]!).toString(16);
  if (b.length === 8) return '0x' + [...b].reverse().map((x) => x.toString(16).padStart(2, '0')).join('').replace(/^0+(?=.)/, '');
  return null;
}

const key = (t: WrittenTag): string => `${t.group}/${t.name}${t.indices.map((i) => `[${i}]`).join('')}`;
const h = (n: number, w = 0): string => '0x' + n.toString(16).padStart(w, '0');

function expectedRow(t: WrittenTag): string {
  return `${h(t.dataOffset, 8)} ${h(t.size).padStart(10)} ${key(t).padEnd(50)} ${expectedValue(t) ?? ''}`;
}

function holeData(size: number): BlockData {
  return { size, write: () => undefined, read: (_o, length) => Buffer.alloc(length) };
}
function filler(bytes: number): { name: string; block: { data: Buffer } } {
  // a block tag taking exactly `bytes` bytes: 2 + 6 (name) + 18 (block header) + data
  return { name: 'filler', block: { data: Buffer.alloc(bytes - 26, 0xee) } };
}

/**
 * The ESX 4.1 saved state of the article, rebuilt with the writer so that every offset the
 * article prints comes out the same: the snipped parts of its listing are filled with filler
 * tags, the 6 GiB of memory is a hole, and 88 empty groups bring the count to 0x5c.
 */
function articleSpec(cfgGap: number): CheckpointSpec {
  const cfg = Buffer.alloc(0x2c29);
  cfg.write('.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "7"\npciBridge0.present = "true"\n'
    + 'pciBridge4.present = "true"\npciBridge4.virtualDev = "pcieRootPort"\n');
  const groups: GroupSpec[] = [
    {
      name: 'Checkpoint',
      tags: [
        { name: 'fileversion', value: u32(0xa) },
        { name: 'ProductName', block: { data: padded('VMware ESX', 256) } },
        { name: 'VersionNumber', block: { data: padded('4.1.0', 256) } },
        filler(0x203c - 0x1f1d),
        { name: 'Platform', value: u32(1) },
        { name: 'usageMode', value: u32(1) },
        { name: 'memSize', value: u32(0x1800) },
        { name: 'maxFBSize', value: u32(0x800000) },
      ],
    },
    {
      name: 'cpu',
      tags: [
        { name: 'cpu:numVCPUs', value: u32(1) },
        { name: 'eflags', indices: [0], value: u32(0x86) },
        { name: 'rip', indices: [0], value: u64(0xfffff80002c1c0ban) },
        { name: 'eip', indices: [0], value: u32(0x2c1c0ba) },
        { name: 'halted', indices: [0], value: u8(0) },
        filler(0x5ede - 0x20c4),
        ...[0x80050031, 0, 0x865eb08, 0x187000, 0x6f8].map((v, k) => ({ name: 'CR', indices: [0, k], value: u32(v) })),
        { name: 'DR64', indices: [0, 0], value: u64(0n) },
        filler(0x6012 - 0x5f44),
        { name: 'DR64', indices: [0, 6], value: u64(0xffff0ff0n) },
        { name: 'DR', indices: [0, 6], value: u32(0xffff0ff0) },
        { name: 'DR64', indices: [0, 7], value: u64(0x400n) },
        { name: 'DR', indices: [0, 7], value: u32(0x400) },
        { name: 'GDTR', indices: [0, 0], value: u16(127) },
        { name: 'GDTR', indices: [0, 1], value: u32(0x3cd5000) },
        { name: 'GDTR', indices: [0, 2], value: u32(0xfffff800) },
        { name: 'IDTR', indices: [0, 0], value: u16(4095) },
        { name: 'IDTR', indices: [0, 1], value: u32(0x3cd5080) },
        { name: 'IDTR', indices: [0, 2], value: u32(0xfffff800) },
      ],
    },
    {
      name: 'memory',
      tags: [
        { name: 'align_mask', value: u32(0xffff) },
        ...regionTags([{ ppn: 0, pageNum: 0, pages: 0xc0000 }, { ppn: 0x100000, pageNum: 0xc0000, pages: 0xc0000 }]),
        { name: 'Memory', indices: [0, 0], block: { data: holeData(0x180000000), align: 65536 } },
      ],
    },
    { name: 'Snapshot', tags: [{ name: 'cfgFile', block: { data: cfg } }] },
  ];
  for (let i = groups.length; i < 0x5c; i++) groups.push({ name: `empty${i}`, tags: [] });
  const gapBefore = groups.map(() => 0);
  gapBefore[0] = 0x1ccc - (12 + 80 * 0x5c); // Checkpoint's stream starts where the article's does
  gapBefore[3] = cfgGap;
  return { magic: 0xbad1bad1, groups, gapBefore };
}

describe('info', () => {
  const { file } = scratchDir('vmssfs-info-');

  function withSnap<T>(p: string, fn: (s: Snapshot) => T): T {
    const s = openSnapshot(p);
    try {
      return fn(s);
    } finally {
      s.close();
    }
  }

  describe('text form: the article, rebuilt', () => {
    let w: WrittenCheckpoint;
    let text: string[];
    let verbose: string[];
    before(() => {
      const probe = writeCheckpoint(file(), articleSpec(0));
      const cfgGap = 0x180011963 - 27 - probe.groups[3].tagsOffset; // cfgFile data at the article's offset
      fs.unlinkSync(probe.path);
      w = writeCheckpoint(file(), articleSpec(cfgGap));
      withSnap(w.path, (s) => {
        text = infoText(s).split('\n');
        verbose = infoText(s, { verbose: true }).split('\n');
      });
    });

    it('the rebuilt file has the article\'s offsets', () => {
      const cfg = w.groups[3].tags[0];
      expect([cfg.dataOffset, cfg.size]).to.deep.equal([0x180011963, 0x2c29]);
      expect(w.groups[2].tags.find((t) => t.name === 'Memory')!.dataOffset).to.equal(0x10000);
    });

    it('starts with the magic and version, the group count and the run table, exactly as in the article', () => {
      expect(text.slice(0, 7)).to.deep.equal(ARTICLE_LISTING.slice(0, 7));
    });

    it('has the tag table header and dash lines of the article, with Value at column 74', () => {
      const art = ARTICLE_LISTING;
      const at = art.findIndex((l) => l.startsWith('DataOffset'));
      expect(text.slice(7, 10)).to.deep.equal(art.slice(7, 10));
      expect(text[8]).to.equal(art[at]);
      expect(text[9]).to.equal(art[at + 1]);
      expect(text[8]!.indexOf('Value')).to.equal(73);
    });

    it('prints every tag row of the article: offsets, sizes, names and values (decimal for 1/2 bytes, hex for 4/8)', () => {
      const rows = ARTICLE_LISTING.filter((l) => /^0x[0-9a-f]{8,} +0x[0-9a-f]+ [A-Za-z]/.test(l));
      expect(rows).to.have.length(29);
      // The article's blog rendering squeezed the spaces before most values; the columns before
      // the name are exact, and the value starts at column 74 as in its first row and header.
      const squeeze = (l: string): string => l.slice(0, 22) + ' ' + l.slice(22).trim().split(/ +/).join(' ');
      const ours = text.filter((l) => /^0x[0-9a-f]{8,} +0x[0-9a-f]+ [A-Za-z]/.test(l));
      let from = 0;
      for (const row of rows) {
        const i = ours.findIndex((l, k) => k >= from && squeeze(l) === squeeze(row));
        expect(i, `row ${JSON.stringify(row)}`).to.be.at.least(from);
        from = i + 1;
        const mine = ours[i]!;
        const value = row.slice(22).trim().split(/ +/)[1];
        if (value === undefined) expect(mine).to.equal(row); // empty value: 73 columns, as printed
        else expect(mine.slice(73)).to.equal(value);
        if (row.includes('fileversion')) expect(mine).to.equal(row);
      }
    });

    it('--verbose adds vmwareinfo hexdump rows under tags without a number, and none for the Memory block', () => {
      const art = ARTICLE_LISTING;
      const dumpRow = /^0x[0-9a-f]{8,} {2}([0-9a-f]{2} ){15}[0-9a-f]{2} {3}.{16}$/;
      const artDumps = art.filter((l) => dumpRow.test(l));
      expect(artDumps).to.have.length(14);
      // ProductName's and VersionNumber's rows are byte-for-byte the article's
      for (const row of artDumps.slice(0, 4)) expect(verbose).to.include(row);
      const pn = verbose.indexOf('0x00001cfc      0x100 Checkpoint/ProductName                             ');
      expect(verbose.slice(pn + 1, pn + 3)).to.deep.equal(artDumps.slice(0, 2));
      expect(verbose.slice(pn + 3, pn + 16).every((l) => dumpRow.test(l))).to.equal(true);
      expect(verbose[pn + 16]).to.equal('0x00001dec  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00   ................');
      // cfgFile: the article's vmwareinfo labelled the rows 16 bytes early; the bytes are the same
      const cfg = verbose.indexOf(art.find((l) => l.includes('Snapshot/cfgFile'))!);
      expect(cfg).to.be.above(0);
      artDumps.slice(4).forEach((row, i) => {
        expect(verbose[cfg + 1 + i]).to.equal(h(0x180011963 + 16 * i, 8) + row.slice(11));
      });
      // the last, partial row of cfgFile (0x2c29 = 16 * 706 + 9 bytes) keeps the columns
      const last = verbose[cfg + 1 + 706]!;
      expect(last).to.equal(`${h(0x180011963 + 16 * 706, 8)}  ${'00 '.repeat(8)}00${' '.repeat(3 * 7)}   .........`);
      expect(verbose.some((l) => l.startsWith('0x00010000  '))).to.equal(false);
      expect(text.some((l) => dumpRow.test(l))).to.equal(false);
    });

    it('ends with what the file is and how much memory it serves', () => {
      const tail = text.slice(text.indexOf('', 10));
      expect(tail).to.deep.equal([
        '',
        `File: ${w.path} (${w.fileSize} bytes, magic restored)`,
        `Memory file: ${w.path}`,
        `Physical memory: ${h(0x100000000 + 0xc0000000)} bytes in 2 runs`,
        '',
      ]);
    });
  });

  describe('text form: every tag of a writeSnapshot file', () => {
    it('prints one row per tag in table order, with the value rules applied to every size', () => {
      const w = writeSnapshot(file(), { memory: 'embedded', blobPages: 8, regions: [{ ppn: 0, pageNum: 0, pages: 4 }, { ppn: 0x100000, pageNum: 4, pages: 4 }], shuffle: true });
      const lines = withSnap(w.path, (s) => infoText(s).split('\n'));
      expect(lines[0]).to.equal('Magic: 0xbed2bed2 (Version 2)');
      expect(lines[1]).to.equal(`Group count: 0x${w.groups.length.toString(16)}`);
      expect(lines.slice(5, 7)).to.deep.equal([
        `${h(w.blobOffset, 9)} 0x000000000000 0x00004000`,
        `${h(w.blobOffset + 0x4000, 9)} 0x000100000000 0x00004000`,
      ]);
      const start = lines.indexOf('---------- ---------- ------------------------------------------------- -----') + 1;
      const rows = lines.slice(start, lines.indexOf('', start));
      const expected = w.groups.flatMap((g) => g.tags.map(expectedRow));
      expect(rows).to.deep.equal(expected);
      // spot checks of the value rules, as vmwareinfo shows them
      const row = (k: string): string => rows.find((r) => r.slice(22).startsWith(k + ' '))!;
      expect(row('cpu/rip[0]').slice(73)).to.equal('0xfffff80002c1c0ba');
      expect(row('cpu/GDTR[0][0]').slice(73)).to.equal('127');
      expect(row('cpu/IDTR[1][0]').slice(73)).to.equal('4095');
      expect(row('cpu/halted[0]').slice(73)).to.equal('0');
      expect(row('cpu/halted[1]').slice(73)).to.equal('1');
      expect(row('cpu/DR64[0][1]').slice(73)).to.equal('0x0');
      expect(row('Checkpoint/maxFBSize').slice(73)).to.equal('0x800000');
      expect(row('Odd names/three').slice(73)).to.equal('');
      expect(row('Odd names/empty').slice(73)).to.equal('');
      expect(row('Odd names/inline61').slice(73)).to.equal('');
      expect(row('cpu/gpregs[0]')).to.equal(`${h(w.tag('cpu/gpregs[0]').dataOffset, 8)}       0x80 ${'cpu/gpregs[0]'.padEnd(50)} `);
    });

    it('--verbose dumps odd-sized inline values too, and nothing for zero-length tags', () => {
      const w = writeSnapshot(file(), { memory: 'none', blobPages: 1, vcpus: 1 });
      const lines = withSnap(w.path, (s) => infoText(s, { verbose: true }).split('\n'));
      const three = w.tag('Odd names/three');
      const at = lines.indexOf(expectedRow(three));
      expect(lines[at + 1]).to.equal(`${h(three.dataOffset, 8)}  aa bb cc${' '.repeat(39)}   ...`);
      const empty = lines.indexOf(expectedRow(w.tag('Odd names/empty')));
      expect(lines[empty + 1]).to.equal(expectedRow(three));
      expect(lines.filter((l) => l.startsWith('WARNING: '))).to.deep.equal([]);
    });

    it('--verbose dumps a block cut off by a truncated copy only as far as the file goes, and says what is missing', () => {
      const data = Buffer.alloc(100, 0x41);
      const w = writeCheckpoint(file(), { groups: [{ name: 'Snapshot', tags: [{ name: 'cfgFile', block: { data } }] }] });
      const cfg = w.groups[0].tags[0];
      fs.truncateSync(w.path, cfg.dataOffset + 40);
      const lines = withSnap(w.path, (s) => infoText(s, { verbose: true }).split('\n'));
      const at = lines.findIndex((l) => l.includes('Snapshot/cfgFile'));
      expect(lines.slice(at + 1, at + 5)).to.deep.equal([
        `${h(cfg.dataOffset, 8)}  ${'41 '.repeat(15)}41   ${'A'.repeat(16)}`,
        `${h(cfg.dataOffset + 16, 8)}  ${'41 '.repeat(15)}41   ${'A'.repeat(16)}`,
        `${h(cfg.dataOffset + 32, 8)}  ${'41 '.repeat(7)}41${' '.repeat(24)}   ${'A'.repeat(8)}`,
        '[60 bytes missing: past the end of the file (truncated copy)]',
      ]);
    });

    it('lists warnings last, one per line', () => {
      const p = file();
      writeCheckpoint(p, { groups: [{ name: 'g', tags: [{ name: 'a', value: u8(1) }], omitTerminator: true }] });
      const lines = withSnap(p, (s) => infoText(s).split('\n'));
      expect(lines.slice(-3)).to.deep.equal([
        'Physical memory: not served: no memory found: ' + path.basename(p) + ' holds no memory/Memory[0][0] block and '
          + path.basename(p).replace(/\.vmss$/, '.vmem') + ' is not beside it; give the memory file with --vmem FILE',
        `WARNING: group "g": tag stream runs off the end of the group (${h(fs.statSync(p).size)}) without its end marker; kept 1 tags`,
        '',
      ]);
    });
  });

  describe('JSON contract', () => {
    /** The writer's registers (default layout: no CR8) as 0x-hex strings, orig_rax outside a syscall. */
    function expectedVcpus(count: number): InfoJson['vcpus'] {
      return Array.from({ length: count }, (_, index) => {
        const registers: Record<string, string> = { orig_rax: '0xffffffffffffffff' };
        for (const [name, v] of Object.entries(cpuRegisters(index))) if (name !== 'cr8') registers[name] = '0x' + v.toString(16);
        return { index, registers, missing: [] };
      });
    }

    function expectedJson(w: ReturnType<typeof writeSnapshot>, memoryFile: string | null): InfoJson {
      return {
        file: w.path,
        magic: w.magic,
        version: w.version,
        memoryFile,
        physmem: memoryFile === null ? null : { size: w.physSize, runs: w.runs },
        physmemError: null,
        warnings: [],
        vcpus: expectedVcpus(2),
        groups: w.groups.map((g) => ({
          name: g.name,
          tagsOffset: g.tagsOffset,
          size: g.size,
          tags: g.tags.map((t) => ({
            name: t.name, indices: t.indices, dataOffset: t.dataOffset, size: t.size, memSize: t.memSize,
            block: t.block, compressed: t.compressed, value: expectedValue(t),
          })),
        })),
      };
    }

    it('is {file, magic, version, memoryFile, physmem, physmemError, warnings, vcpus, groups}, matching the writer exactly', () => {
      const w = writeSnapshot(file(), { memory: 'vmem', blobPages: 8, regions: [{ ppn: 0x10, pageNum: 0, pages: 4 }, { ppn: 0x100000, pageNum: 4, pages: 4 }] });
      const j = withSnap(w.path, (s) => infoJson(s));
      expect(Object.keys(j)).to.deep.equal(['file', 'magic', 'version', 'memoryFile', 'physmem', 'physmemError', 'warnings', 'vcpus', 'groups']);
      expect(j).to.deep.equal(expectedJson(w, w.vmemPath));
      expect(j.magic).to.equal(0xbed2bed2);
    });

    it('`info --json` prints the same document, with numbers for magic, offsets and sizes', async () => {
      const w = writeSnapshot(file(), { memory: 'embedded', blobPages: 4, magic: 0xbed0bed0 });
      const r = await runCli(['info', '--json', w.path]);
      expect(r.code).to.equal(0);
      expect(r.stderr).to.equal('');
      const j = JSON.parse(r.stdout) as InfoJson;
      expect(j).to.deep.equal(expectedJson(w, w.path));
      expect(j.version).to.equal(0);
      expect(typeof j.magic).to.equal('number');
      expect(j.groups.every((g) => typeof g.tagsOffset === 'number' && typeof g.size === 'number')).to.equal(true);
    });

    it('`value` is exactly the text form\'s value for 1/2/4/8-byte inline tags, else null', () => {
      const w = writeSnapshot(file(), { memory: 'embedded', blobPages: 4 });
      const { j, lines } = withSnap(w.path, (s) => ({ j: infoJson(s), lines: infoText(s).split('\n') }));
      const start = lines.findIndex((l) => l.startsWith('---------- ')) + 1;
      const rows = lines.slice(start, lines.indexOf('', start));
      const tags = j.groups.flatMap((g) => g.tags.map((t) => ({ g: g.name, t })));
      expect(rows).to.have.length(tags.length);
      const sizes = new Set<number>();
      tags.forEach(({ g, t }, i) => {
        const label = `${g}/${t.name}${t.indices.map((x) => `[${x}]`).join('')}`;
        expect(rows[i]!.slice(22, 22 + label.length)).to.equal(label);
        // the name column is 50 wide; a longer name pushes the value right, one space after it
        const shown = rows[i]!.slice(22 + Math.max(50, label.length) + 1);
        if (!t.block && [1, 2, 4, 8].includes(t.size)) expect(t.value).to.equal(shown);
        else expect([t.value, shown]).to.deep.equal([null, '']);
        if (!t.block) sizes.add(t.size);
      });
      expect([...sizes].sort((a, b) => a - b)).to.deep.equal([0, 1, 2, 3, 4, 8, 61]);
    });

    it('has physmem null and a physmemError when the memory cannot be served', () => {
      const w = writeSnapshot(file(), { memory: 'embedded', blobPages: 4, compressedMemory: true });
      const j = withSnap(w.path, (s) => infoJson(s));
      expect(j.physmem).to.equal(null);
      expect(j.memoryFile).to.equal(null);
      expect(j.physmemError).to.match(/compressed block/);
      expect(j.groups.find((g) => g.name === 'memory')!.tags.find((t) => t.name === 'Memory')).to.include({ compressed: true, block: true, value: null });
    });
  });
});
