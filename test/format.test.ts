// The format layer (src/format): header, group table and tag streams, checked against what the
// independent fixture writer (test/kit/writer.ts) says it wrote. Inputs are always generated.

import { expect } from 'chai';
import * as fs from 'node:fs';
import { VmssError } from '../src/errors';
import { parseCheckpoint, tagValueText } from '../src/format/checkpoint';
import { BufferSource, SourceFile } from '../src/io/source';
import {
  PAGE, padded, u16, u32, u64, u8, writeCheckpoint, writeSnapshot,
  type BlockData, type CheckpointSpec, type SnapshotOptions, type TagSpec, type WrittenCheckpoint,
} from './kit/writer';
import { CountingSource, expectMatchesWritten, parseFile } from './helpers/checkpoint';
import { scratchDir } from './helpers/paths';

const GiB = 2 ** 30;

/** Block data of `size` bytes that writes nothing: the file keeps a hole there (cheap, sparse). */
function holeData(size: number): BlockData {
  return { size, write: () => undefined, read: (_o, length) => Buffer.alloc(length) };
}

function seq(len: number, base = 0): Buffer {
  return Buffer.from(Array.from({ length: len }, (_, i) => (base + i * 7) & 0xff));
}

function bytesAt(file: string, offset: number, length: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(length);
    const n = fs.readSync(fd, b, 0, length, offset);
    return b.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

describe('format layer', () => {
  const { file } = scratchDir('vmssfs-format-');
  const write = (spec: CheckpointSpec): WrittenCheckpoint => writeCheckpoint(file(), spec);

  describe('header', () => {
    // Every magic FORMAT.md lists, with the version its low nibble gives.
    const magics: [number, number, string][] = [
      [0xbed2bed2, 2, 'current'],
      [0xbed3bed3, 3, 'partial'],
      [0xbad1bad1, 1, 'restored'],
      [0xbad2bad2, 2, 'not restorable'],
      [0xbed2bed0, 0, 'old'],
      [0xbed0bed0, 0, 'old'],
      [0xbed1bed1, 1, 'restored (one reader)'],
    ];
    for (const [magic, version, what] of magics) {
      it(`accepts magic 0x${magic.toString(16)} (${what}) as version ${version}, with ${version === 0 ? '32' : '64'}-bit block sizes`, () => {
        const w = write({
          magic,
          groups: [{
            name: 'g',
            tags: [
              { name: 'before', value: u32(0x11223344) },
              { name: 'blk', block: { data: seq(300), padding: 5 } },
              { name: 'cblk', indices: [1], block: { data: seq(20), compressed: true, memSize: 4096 } },
              { name: 'after', value: u16(513) },
            ],
          }],
        });
        const cp = parseFile(w.path);
        expect(cp.magic).to.equal(magic);
        expect(cp.version).to.equal(version);
        expectMatchesWritten(cp, w);
        // The block header is two size words (4 or 8 bytes each) and a u16 padding length.
        const blk = cp.groups[0].tags[1];
        const sizeWords = version === 0 ? 8 : 16;
        expect(blk.dataOffset).to.equal(blk.headerOffset + 2 + 3 + sizeWords + 2 + 5);
        expect(blk.size).to.equal(300);
        expect(cp.groups[0].tags[2]).to.include({ size: 20, memSize: 4096, compressed: true, block: true });
        expect(tagValueText(cp.groups[0].tags[3])).to.equal('513');
      });
    }

    it('does not validate the word at offset 4', () => {
      for (const unknownWord of [0, 1, 0xffffffff, 0x12345678]) {
        const w = write({ unknownWord, groups: [{ name: 'g', tags: [{ name: 'x', value: u8(7) }] }] });
        expectMatchesWritten(parseFile(w.path), w);
      }
    });

    it('reads a checkpoint with no groups at all', () => {
      const w = write({ groups: [] });
      const cp = parseFile(w.path);
      expect(w.fileSize).to.equal(12);
      expect(cp.groups).to.deep.equal([]);
      expect(cp.warnings).to.deep.equal([]);
    });

    const rejects = (name: string, data: Buffer, message: RegExp): void => {
      let err: unknown;
      try {
        parseCheckpoint(new BufferSource(name, data));
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(VmssError);
      const msg = (err as VmssError).message;
      expect(msg.startsWith(`${name}: `), msg).to.equal(true);
      expect(msg).to.match(message);
      expect(msg).not.to.include('\n');
      expect((err as VmssError).exitCode).to.equal(1);
    };

    it('rejects magics that are not in the list, naming the file and the magic', () => {
      const header = (magic: number): Buffer => Buffer.concat([u32(magic), u32(0), u32(0)]);
      for (const magic of [0xbed4bed4, 0xbed2bed1, 0xd2bed2be, 0xbad0bad0, 0xffffffff]) {
        rejects('x.vmss', header(magic), new RegExp(`not a VMware checkpoint.*0x${magic.toString(16).padStart(8, '0')}`));
      }
      rejects('zeros.vmss', header(0), /not a VMware checkpoint/);
      rejects('shot.png', Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'), /not a VMware checkpoint/);
    });

    it('rejects an empty file, a short header, a group table beyond the file and an absurd group count', () => {
      rejects('empty.vmss', Buffer.alloc(0), /empty/);
      rejects('short.vmss', u32(0xbed2bed2), /only 4 bytes.*header/);
      rejects('short11.vmss', Buffer.concat([u32(0xbed2bed2), u32(0), Buffer.alloc(3)]), /only 11 bytes/);
      // two groups announced, one entry present: the table ends at 12 + 160 = 0xac
      const oneEntry = Buffer.concat([u32(0xbed2bed2), u32(0), u32(2), Buffer.alloc(80)]);
      rejects('cut.vmss', oneEntry, /group table of 2 groups ends at 0xac, beyond the end of the file \(0x5c\)/);
      rejects('absurd.vmss', Buffer.concat([u32(0xbed2bed2), u32(0), u32(0xffffffff), Buffer.alloc(80)]), /absurd group count 4294967295/);
    });
  });

  describe('group table', () => {
    it('reads names (NUL-padded, UTF-8, a full 64 bytes without NUL), table offsets, stream offsets and sizes', () => {
      const name64 = 'G'.repeat(64);
      const w = write({
        groups: [
          { name: 'Checkpoint', tags: [{ name: 'a', value: u8(1) }] },
          { name: 'Gruppé ü', tags: [{ name: 'b', value: u8(2) }] },
          { name: name64, tags: [] },
          { name: 'x', tags: [{ name: 'c', block: { data: seq(10) } }] },
        ],
      });
      const cp = parseFile(w.path);
      expectMatchesWritten(cp, w);
      expect(cp.groups.map((g) => g.name)).to.deep.equal(['Checkpoint', 'Gruppé ü', name64, 'x']);
      expect(cp.groups.map((g) => g.tableOffset)).to.deep.equal([12, 92, 172, 252]);
      // streams follow the table back to back: 332 = 12 + 4 * 80
      expect(cp.groups[0].tagsOffset).to.equal(332);
      expect(cp.groups[0].size).to.equal(2 + 1 + 1 + 2);
      expect(cp.groups[2].tags).to.deep.equal([]);
      expect(cp.groups[2].complete).to.equal(true);
    });

    it('reads groups stored in any order', () => {
      const groups = ['zero', 'one', 'two', 'three'].map((name, i) => ({
        name,
        tags: [{ name: `t${i}`, value: u32(i) }, { name: 'blob', block: { data: seq(100 + i, i) } }],
      }));
      for (const storeOrder of [[3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]]) {
        const w = write({ groups, storeOrder });
        const cp = parseFile(w.path);
        expectMatchesWritten(cp, w);
        const byOffset = [...cp.groups].sort((a, b) => a.tagsOffset - b.tagsOffset).map((g) => g.index);
        expect(byOffset).to.deep.equal(storeOrder);
      }
    });

    it('reads a group stored beyond 4 GiB (after a hole), and the groups around it', () => {
      const w = write({
        groups: [
          { name: 'far', tags: [{ name: 'rip', indices: [0], value: u64(0xfffff80002c1c0ban) }, { name: 'b', block: { data: seq(40) } }] },
          { name: 'near', tags: [{ name: 'x', value: u8(9) }] },
          { name: 'farther', tags: [{ name: 'y', value: u16(4095) }] },
        ],
        storeOrder: [1, 0, 2],
        gapBefore: [5 * GiB, 0, 64],
      });
      expect(fs.statSync(w.path).blocks * 512).to.be.below(1024 * 1024); // the hole costs nothing
      const cp = parseFile(w.path);
      expectMatchesWritten(cp, w);
      expect(cp.groups[0].tagsOffset).to.be.above(5 * GiB);
      expect(cp.groups[2].tagsOffset).to.be.above(cp.groups[0].tagsOffset);
      expect(tagValueText(cp.groups[0].tags[0])).to.equal('0xfffff80002c1c0ba');
      expect(bytesAt(w.path, cp.groups[0].tags[1].dataOffset, 40)).to.deep.equal(seq(40));
    });
  });

  describe('tag streams', () => {
    it('reads inline values of every length 0..61, each where the writer put it', () => {
      const tags = Array.from({ length: 62 }, (_, len) => ({ name: `v${len}`, value: seq(len, len) }));
      const w = write({ groups: [{ name: 'inline', tags }] });
      const cp = parseFile(w.path);
      expectMatchesWritten(cp, w);
      cp.groups[0].tags.forEach((t, len) => {
        expect(t.block).to.equal(false);
        expect(t.size).to.equal(len);
        expect(t.inline).to.deep.equal(seq(len, len));
        expect(bytesAt(w.path, t.dataOffset, len)).to.deep.equal(seq(len, len));
      });
    });

    it('reads blocks with their size fields, skipping any padding: the data lands where the writer says', () => {
      const paddings = [0, 1, 2, 255, 4096, 65535];
      const tags: TagSpec[] = paddings.map((p, i) => ({ name: `pad${p}`, block: { data: seq(1000 + i, i), padding: p } }));
      tags.push({ name: 'aligned', block: { data: seq(5000, 3), align: 65536 } });
      tags.push({ name: 'empty', block: { data: Buffer.alloc(0) } });
      const w = write({ groups: [{ name: 'g', tags: [{ name: 'first', value: u8(1) }, ...tags, { name: 'last', value: u32(0xdeadbeef) }] }] });
      const cp = parseFile(w.path);
      expectMatchesWritten(cp, w);
      const got = cp.groups[0].tags;
      paddings.forEach((p, i) => {
        const t = got[i + 1];
        expect(t.dataOffset - t.headerOffset).to.equal(2 + `pad${p}`.length + 16 + 2 + p);
        expect(bytesAt(w.path, t.dataOffset, t.size)).to.deep.equal(seq(1000 + i, i));
        expect(t).to.include({ block: true, compressed: false, memSize: 1000 + i, inline: null });
      });
      const aligned = got[paddings.length + 1];
      expect(aligned.dataOffset % 65536).to.equal(0);
      expect(bytesAt(w.path, aligned.dataOffset, 5000)).to.deep.equal(seq(5000, 3));
      expect(got[paddings.length + 2]).to.include({ size: 0, block: true });
      expect(tagValueText(got[got.length - 1])).to.equal('0xdeadbeef');
    });

    it('reads size field 62 as a compressed block and 63 as a plain one', () => {
      const w = write({
        groups: [{
          name: 'g',
          tags: [
            { name: 'plain', block: { data: seq(64) } },
            { name: 'packed', block: { data: seq(64), compressed: true, memSize: 1 << 20 } },
            { name: 'packedSame', block: { data: seq(8), compressed: true } },
          ],
        }],
      });
      const cp = parseFile(w.path);
      expectMatchesWritten(cp, w);
      expect(bytesAt(w.path, w.groups[0].tags[1].headerOffset, 1)[0]).to.equal(62);
      expect(bytesAt(w.path, w.groups[0].tags[0].headerOffset, 1)[0]).to.equal(63);
      const [plain, packed, same] = cp.groups[0].tags;
      expect(plain).to.include({ compressed: false, size: 64, memSize: 64 });
      expect(packed).to.include({ compressed: true, size: 64, memSize: 1 << 20 });
      expect(same).to.include({ compressed: true, size: 8, memSize: 8 });
      expect(tagValueText(packed)).to.equal(null);
    });

    it('reads 0, 1, 2 and 3 indices, up to 0xffffffff', () => {
      const w = write({
        groups: [{
          name: 'cpu',
          tags: [
            { name: 'numVCPUs', value: u32(2) },
            { name: 'rip', indices: [1], value: u64(0x1234n) },
            { name: 'CR64', indices: [0, 3], value: u64(0x187000n) },
            { name: 'FPUregs', indices: [1, 0, 7], value: u8(3) },
            { name: 'max', indices: [0xffffffff, 0, 0xffffffff], block: { data: seq(3) } },
          ],
        }],
      });
      const cp = parseFile(w.path);
      expectMatchesWritten(cp, w);
      expect(cp.groups[0].tags.map((t) => t.indices)).to.deep.equal([[], [1], [0, 3], [1, 0, 7], [0xffffffff, 0, 0xffffffff]]);
    });

    it('reads a zero-length tag (flags 0, with a name) as a tag, not as the end of the stream', () => {
      const w = write({
        groups: [
          { name: 'a', tags: [{ name: 'z' }, { name: 'x', value: u8(5) }, { name: 'zz', indices: [2] }, { name: 'y', value: u16(7) }, { name: 'end' }] },
          { name: 'only', tags: [{ name: 'e1' }, { name: 'e2' }] },
        ],
      });
      expect(bytesAt(w.path, w.groups[0].tags[0].headerOffset, 3)).to.deep.equal(Buffer.from([0, 1, 0x7a]));
      const cp = parseFile(w.path);
      expectMatchesWritten(cp, w);
      expect(cp.groups[0].tags.map((t) => `${t.name}:${t.size}`)).to.deep.equal(['z:0', 'x:1', 'zz:0', 'y:2', 'end:0']);
      expect(cp.groups[0].tags[0].inline).to.deep.equal(Buffer.alloc(0));
      expect(tagValueText(cp.groups[0].tags[0])).to.equal(null);
      expect(cp.groups[1].tags.map((t) => t.name)).to.deep.equal(['e1', 'e2']);
    });

    it('reads names of 1 and 255 bytes, and names with any bytes in them', () => {
      const long = 'n'.repeat(255);
      const w = write({
        groups: [{ name: 'g', tags: [{ name: 'a', value: u8(1) }, { name: long, value: u8(2) }, { name: 'a/b%c[0] é', value: u8(3) }] }],
      });
      const cp = parseFile(w.path);
      expectMatchesWritten(cp, w);
      expect(cp.groups[0].tags.map((t) => t.name)).to.deep.equal(['a', long, 'a/b%c[0] é']);
    });

    it('reads block sizes beyond 4 GiB (version 2) and up to 0xffffffff (version 0), and the tags after them', () => {
      const big = write({
        groups: [{ name: 'g', tags: [{ name: 'huge', block: { data: holeData(5 * GiB + 3) } }, { name: 'after', value: u32(42) }] }],
      });
      let cp = parseFile(big.path);
      expectMatchesWritten(cp, big);
      expect(cp.groups[0].tags[0].size).to.equal(5 * GiB + 3);
      expect(cp.groups[0].tags[1].dataOffset).to.be.above(5 * GiB);
      expect(tagValueText(cp.groups[0].tags[1])).to.equal('0x2a');

      const v0 = write({
        magic: 0xbed2bed0,
        groups: [{ name: 'g', tags: [{ name: 'max', block: { data: holeData(0xffffffff), memSize: 0xfffffffe } }, { name: 'after', value: u8(1) }] }],
      });
      cp = parseFile(v0.path);
      expectMatchesWritten(cp, v0);
      expect(cp.groups[0].tags[0]).to.include({ size: 0xffffffff, memSize: 0xfffffffe });
    });

    it('costs the same to parse whatever the size of the memory block: block data is never read', () => {
      const spec = (size: number): CheckpointSpec => ({
        groups: [
          { name: 'Checkpoint', tags: [{ name: 'ProductName', block: { data: padded('VMware ESX', 256) } }] },
          { name: 'memory', tags: [{ name: 'align_mask', value: u32(0xffff) }, { name: 'Memory', indices: [0, 0], block: { data: holeData(size), align: 65536 } }] },
          { name: 'cpu', tags: [{ name: 'rip', indices: [0], value: u64(1n) }] },
        ],
      });
      const read = (size: number): { bytes: number; calls: number } => {
        const w = write(spec(size));
        const src = SourceFile.open(w.path);
        try {
          const counting = new CountingSource(src);
          expectMatchesWritten(parseCheckpoint(counting), w);
          return { bytes: counting.bytesRead, calls: counting.calls };
        } finally {
          src.close();
        }
      };
      const small = read(8 * 1024 * 1024);
      const large = read(64 * GiB);
      expect(large).to.deep.equal(small);
      expect(small.bytes).to.be.below(256 * 1024);
    });
  });

  describe('whole snapshots from writeSnapshot: every tag matches what was written', () => {
    const layouts: [string, SnapshotOptions][] = [
      ['embedded memory, no regions', { memory: 'embedded', blobPages: 16 }],
      ['embedded memory with regions above 4 GiB', { memory: 'embedded', blobPages: 24, regions: [{ ppn: 0, pageNum: 0, pages: 8 }, { ppn: 0x100000, pageNum: 8, pages: 16 }] }],
      ['metadata only + .vmem, with regions', { memory: 'vmem', blobPages: 12, regions: [{ ppn: 0x10, pageNum: 4, pages: 8 }, { ppn: 0, pageNum: 0, pages: 4 }] }],
      ['metadata only + .vmem, no regions', { memory: 'vmem', blobPages: 8 }],
      ['no memory anywhere', { memory: 'none', blobPages: 8, vcpus: 1 }],
      ['version 0 (0xbed2bed0), embedded', { memory: 'embedded', blobPages: 8, magic: 0xbed2bed0 }],
      ['version 0 (0xbed0bed0), regions', { memory: 'embedded', blobPages: 8, magic: 0xbed0bed0, regions: [{ ppn: 0, pageNum: 0, pages: 4 }, { ppn: 8, pageNum: 4, pages: 4 }] }],
      ['groups shuffled (memory first, Checkpoint last), 4 vCPUs', { memory: 'embedded', blobPages: 8, shuffle: true, vcpus: 4 }],
      ['compressed Memory block, no cfgFile, no screenshot', { memory: 'embedded', blobPages: 4, compressedMemory: true, cfgFile: null, screenshot: false }],
      ['memory aligned to 4 KiB, restored magic', { memory: 'embedded', blobPages: 4, memoryAlign: 4096, magic: 0xbad1bad1 }],
    ];
    for (const [what, opts] of layouts) {
      it(what, () => {
        const w = writeSnapshot(file(), opts);
        const cp = parseFile(w.path);
        expectMatchesWritten(cp, w);
        // spot checks in the words of the format
        expect(tagValueText(cp.groups[0].tags.find((t) => t.name === 'fileversion')!)).to.equal('0xa');
        const mem = cp.groups.find((g) => g.name === 'memory')!;
        const memory = mem.tags.find((t) => t.name === 'Memory');
        if (opts.memory === 'embedded') {
          expect(memory).to.include({ size: opts.blobPages * PAGE, block: true, compressed: !!opts.compressedMemory });
          expect(memory!.dataOffset % (opts.memoryAlign ?? 65536)).to.equal(0);
          expect(memory!.dataOffset).to.equal(w.blobOffset);
        } else {
          expect(memory).to.equal(undefined);
        }
      });
    }
  });
});
