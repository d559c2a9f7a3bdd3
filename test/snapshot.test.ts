// Opening a snapshot (src/evidence/snapshot.ts): which file holds the metadata, which the memory, and
// what is served when the memory is missing or cut short.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError } from '../src/errors';
import type { InfoJson } from '../src/evidence/info';
import type { Snapshot } from '../src/evidence/evidence';
import { openSnapshot, type OpenOptions } from '../src/evidence/snapshot';
import { PAGE, u32, writeCheckpoint, writeSnapshot, type SnapshotOptions, type WrittenSnapshot } from './kit/writer';
import { expectMatchesWritten, memoryGroup } from './helpers/checkpoint';
import { scratchDir } from './helpers/paths';
import { runCli } from './helpers/run';

const GiB = 2 ** 30;
const REGIONS = [{ ppn: 0, pageNum: 0, pages: 4 }, { ppn: 0x100000, pageNum: 4, pages: 4 }];

function withSnapshot<T>(arg: string, opts: OpenOptions, fn: (s: Snapshot) => T): T {
  const s = openSnapshot(arg, opts);
  try {
    return fn(s);
  } finally {
    s.close();
  }
}

function runsOf(s: Snapshot): { physAddr: number; fileOffset: number; length: number; file: string }[] {
  return s.physmem!.map.segments.map((r) => ({ physAddr: r.start, fileOffset: r.fileOffset, length: r.length, file: s.physmem!.file.name }));
}

describe('snapshot: finding the metadata and the memory', () => {
  const scratch = scratchDir('vmssfs-snapshot-');
  /** A fresh subdirectory, so that sibling discovery sees only what a test put there. */
  const sub = (): string => {
    const d = scratch.file('');
    fs.mkdirSync(d);
    return d;
  };
  const snapshot = (file: string, opts: Partial<SnapshotOptions> = {}): WrittenSnapshot =>
    writeSnapshot(file, { memory: 'vmem', blobPages: 8, regions: REGIONS, ...opts });

  it('finds the sibling .vmem of a metadata-only .vmss', () => {
    const w = snapshot(path.join(sub(), 'Win7.vmss'));
    expect(w.vmemPath).to.equal(w.path.replace(/\.vmss$/, '.vmem'));
    withSnapshot(w.path, {}, (s) => {
      expect(s.memoryPath).to.equal(w.vmemPath);
      expect(s.physmemError).to.equal(null);
      expect(s.warnings).to.deep.equal([]);
      expect(runsOf(s)).to.deep.equal(w.runs);
      expect(s.physmem!.size).to.equal(4 * GiB + 4 * PAGE);
      expectMatchesWritten(s.checkpoint, w);
    });
  });

  it('finds the sibling .vmem of a metadata-only .vmsn', () => {
    const w = snapshot(path.join(sub(), 'Win7-Snapshot3.vmsn'));
    withSnapshot(w.path, {}, (s) => {
      expect(s.memoryPath).to.equal(w.vmemPath);
      expect(runsOf(s)).to.deep.equal(w.runs);
    });
  });

  it('accepts the .vmem itself as the snapshot argument, reading the metadata from the sibling .vmss', () => {
    const w = snapshot(path.join(sub(), 'vm.vmss'));
    withSnapshot(w.vmemPath!, {}, (s) => {
      expect(s.metaFile.name).to.equal(w.path);
      expect(s.memoryPath).to.equal(w.vmemPath);
      expect(runsOf(s)).to.deep.equal(w.runs);
      expect(s.warnings).to.deep.equal([]);
      expectMatchesWritten(s.checkpoint, w);
    });
  });

  it('accepts the .vmem itself, reading the metadata from the sibling .vmsn', () => {
    const w = snapshot(path.join(sub(), 'vm-Snapshot1.vmsn'));
    withSnapshot(w.vmemPath!, {}, (s) => {
      expect(s.metaFile.name).to.equal(w.path);
      expect(runsOf(s)).to.deep.equal(w.runs);
    });
  });

  it('given a .vmem with both a .vmss and a .vmsn beside it, uses the .vmss and says so', () => {
    const d = sub();
    const w = snapshot(path.join(d, 'vm.vmss'));
    snapshot(path.join(d, 'vm.vmsn'), { vmemPath: path.join(d, 'other.vmem') });
    withSnapshot(path.join(d, 'vm.vmem'), {}, (s) => {
      expect(s.metaFile.name).to.equal(w.path);
      expect(s.warnings).to.deep.equal(['both vm.vmss and vm.vmsn sit beside vm.vmem; used vm.vmss']);
    });
  });

  it('refuses a .vmem with no metadata beside it, pointing at --vmem', () => {
    const d = sub();
    const vmem = path.join(d, 'lonely.vmem');
    fs.writeFileSync(vmem, Buffer.alloc(PAGE));
    expect(() => openSnapshot(vmem)).to.throw(
      VmssError,
      `${vmem}: a raw .vmem holds only memory pages; its metadata lonely.vmss or lonely.vmsn was not found beside it (give the .vmss/.vmsn, with --vmem ${vmem})`,
    );
  });

  it('takes the memory file from --vmem, whatever its name (ESXi names it by a UUID)', () => {
    const d = sub();
    const uuid = path.join(d, '564d1a2b-3c4d-5e6f-7081-92a3b4c5d6e7');
    const w = snapshot(path.join(d, 'esx.vmss'), { vmemPath: uuid });
    expect(fs.existsSync(path.join(d, 'esx.vmem'))).to.equal(false);
    withSnapshot(w.path, { vmem: uuid }, (s) => {
      expect(s.memoryPath).to.equal(uuid);
      expect(s.physmemError).to.equal(null);
      expect(runsOf(s)).to.deep.equal(w.runs);
      expect(runsOf(s).every((r) => r.file === uuid)).to.equal(true);
      expect(s.warnings).to.deep.equal([]);
    });
  });

  it('without --vmem and with no memory file, serves the metadata and says to give --vmem', () => {
    const d = sub();
    const w = snapshot(path.join(d, 'esx.vmss'), { vmemPath: path.join(d, '564d1a2b-3c4d-5e6f-7081-92a3b4c5d6e7') });
    withSnapshot(w.path, {}, (s) => {
      expect(s.physmem).to.equal(null);
      expect(s.memoryPath).to.equal(null);
      expect(s.physmemError).to.equal(
        'no memory found: esx.vmss holds no memory/Memory[0][0] block and esx.vmem is not beside it; give the memory file with --vmem FILE',
      );
      expectMatchesWritten(s.checkpoint, w);
    });
  });

  it('with no memory file, `vmssfs info` exits 0 with the metadata complete and physmemError naming --vmem', async () => {
    const w = writeSnapshot(path.join(sub(), 'meta.vmsn'), { memory: 'none', blobPages: 4 });
    const r = await runCli(['info', '--json', w.path]);
    expect(r.code).to.equal(0);
    expect(r.stderr).to.equal('');
    const j = JSON.parse(r.stdout) as InfoJson;
    expect(j.physmem).to.equal(null);
    expect(j.memoryFile).to.equal(null);
    expect(j.physmemError).to.include('--vmem');
    expect(j.groups.map((g) => g.tags.length)).to.deep.equal(w.groups.map((g) => g.tags.length));
    const text = await runCli(['info', w.path]);
    expect(text.code).to.equal(0);
    expect(text.stdout).to.include('Physical memory: not served: no memory found: meta.vmsn holds no memory/Memory[0][0] block and meta.vmem is not beside it; give the memory file with --vmem FILE\n');
  });

  it('an explicit --vmem that does not exist is a failure naming it, not a snapshot without memory', () => {
    const w = snapshot(path.join(sub(), 'vm.vmss'));
    const missing = path.join(path.dirname(w.path), 'nope.vmem');
    expect(() => openSnapshot(w.path, { vmem: missing })).to.throw(VmssError, `${missing}: cannot open: no such file (the --vmem memory file)`);
  });

  it('--vmem wins over an embedded Memory block, with a warning', () => {
    const d = sub();
    const w = writeSnapshot(path.join(d, 'both.vmss'), { memory: 'embedded', blobPages: 8 });
    const other = snapshot(path.join(d, 'x.vmss'), { vmemPath: path.join(d, 'x-mem') });
    withSnapshot(w.path, { vmem: other.vmemPath! }, (s) => {
      expect(s.memoryPath).to.equal(other.vmemPath);
      expect(s.physmem!.map.segments).to.deep.equal([{ start: 0, length: 8 * PAGE, fileOffset: 0 }]);
      expect(s.warnings).to.deep.equal([`the checkpoint holds its own memory/Memory[0][0] block; serving ${other.vmemPath} instead, as --vmem asked`]);
    });
  });

  it('a .vmem given as the snapshot wins over an embedded Memory block, with a warning', () => {
    const d = sub();
    const w = writeSnapshot(path.join(d, 'pair.vmss'), { memory: 'embedded', blobPages: 8 });
    const vmem = path.join(d, 'pair.vmem');
    fs.writeFileSync(vmem, Buffer.alloc(3 * PAGE, 7));
    withSnapshot(vmem, {}, (s) => {
      expect(s.memoryPath).to.equal(vmem);
      expect(s.physmem!.map.segments).to.deep.equal([{ start: 0, length: 3 * PAGE, fileOffset: 0 }]);
      expect(s.warnings).to.deep.equal([`the checkpoint holds its own memory/Memory[0][0] block; serving ${vmem} instead, as it was the file given`]);
    });
    expect(w.path).to.equal(path.join(d, 'pair.vmss'));
  });

  it('an embedded Memory block is served from the checkpoint even when a sibling .vmem exists', () => {
    const d = sub();
    const w = writeSnapshot(path.join(d, 'emb.vmss'), { memory: 'embedded', blobPages: 8, regions: REGIONS });
    fs.writeFileSync(path.join(d, 'emb.vmem'), Buffer.alloc(PAGE));
    withSnapshot(w.path, {}, (s) => {
      expect(s.memoryPath).to.equal(w.path);
      expect(runsOf(s)).to.deep.equal(w.runs);
    });
  });

  describe('truncated memory (a copy cut short)', () => {
    it('a .vmem shorter than its runs: physmem is still served, and a warning names the missing range', () => {
      const w = snapshot(path.join(sub(), 'cut.vmss'));
      const size = 5 * PAGE + 100; // the second run (4 GiB, blob pages 4..7) keeps 1 page + 100 bytes
      fs.truncateSync(w.vmemPath!, size);
      withSnapshot(w.path, {}, (s) => {
        expect(s.physmemError).to.equal(null);
        expect(runsOf(s)).to.deep.equal(w.runs);
        expect(s.physmem!.size).to.equal(4 * GiB + 4 * PAGE);
        const start = 4 * GiB + PAGE + 100;
        expect(s.warnings).to.deep.equal([
          `guest-physical 0x${start.toString(16)}-0x${(4 * GiB + 4 * PAGE).toString(16)} (${3 * PAGE - 100} bytes) lies beyond the end of ${w.vmemPath} (${size} bytes): truncated copy; it reads as zeros`,
        ]);
      });
    });

    it('a .vmem cut before a whole run: that whole run is named', () => {
      const w = snapshot(path.join(sub(), 'cut2.vmss'));
      fs.truncateSync(w.vmemPath!, 2 * PAGE);
      withSnapshot(w.path, {}, (s) => {
        expect(s.physmem!.size).to.equal(4 * GiB + 4 * PAGE);
        expect(s.warnings).to.deep.equal([
          `guest-physical 0x2000-0x4000 (8192 bytes) lies beyond the end of ${w.vmemPath} (8192 bytes): truncated copy; it reads as zeros`,
          `guest-physical 0x100000000-0x100004000 (16384 bytes) lies beyond the end of ${w.vmemPath} (8192 bytes): truncated copy; it reads as zeros`,
        ]);
      });
    });

    it('an embedded Memory block cut by the end of the file: tags kept, physmem served, the missing range named', () => {
      const file = path.join(sub(), 'embcut.vmss');
      const w = writeCheckpoint(file, {
        groups: [
          { name: 'Checkpoint', tags: [{ name: 'memSize', value: u32(1) }] },
          memoryGroup({ regions: REGIONS, memory: Buffer.alloc(8 * PAGE, 0x5a), align: 65536 }),
          { name: 'cpu', tags: [{ name: 'cpu:numVCPUs', value: u32(1) }] },
        ],
        storeOrder: [0, 2, 1], // memory stored last, as big blocks usually are
      });
      const mem = w.groups[1].tags.find((t) => t.name === 'Memory')!;
      const size = mem.dataOffset + 6 * PAGE;
      fs.truncateSync(file, size);
      withSnapshot(file, {}, (s) => {
        expect(s.physmemError).to.equal(null);
        expect(s.memoryPath).to.equal(file);
        expect(s.physmem!.map.segments).to.deep.equal([
          { start: 0, length: 4 * PAGE, fileOffset: mem.dataOffset },
          { start: 4 * GiB, length: 4 * PAGE, fileOffset: mem.dataOffset + 4 * PAGE },
        ]);
        expect(s.checkpoint.groups.map((g) => g.tags.length)).to.deep.equal([1, 8, 1]);
        expect(s.warnings).to.deep.equal([
          `memory/Memory[0][0]: block of ${8 * PAGE} bytes at 0x${mem.dataOffset.toString(16)} runs ${2 * PAGE} bytes past the end of the file (0x${size.toString(16)}): truncated copy; the missing bytes read as zeros`,
          `guest-physical 0x100002000-0x100004000 (8192 bytes) lies beyond the end of ${file} (${size} bytes): truncated copy; it reads as zeros`,
        ]);
      });
    });
  });

  describe('a lost or damaged memory group: the layout is unknown, never taken for "no regions"', () => {
    /** A .vmss with two regions (one above 4 GiB) and its .vmem, then `damage` applied to the .vmss. */
    function lost(damage: (fd: number, memory: { tableOffset: number; tagsOffset: number }, w: WrittenSnapshot) => void): WrittenSnapshot {
      const w = snapshot(path.join(sub(), 'lost.vmss'));
      const mem = w.groups.find((g) => g.name === 'memory')!;
      const fd = fs.openSync(w.path, 'r+');
      try {
        damage(fd, mem, w);
      } finally {
        fs.closeSync(fd);
      }
      return w;
    }
    const beyondTheEnd = (fd: number, mem: { tableOffset: number }, w: WrittenSnapshot): void => {
      const off = Buffer.alloc(8);
      off.writeBigUInt64LE(BigInt(w.fileSize + 4096));
      fs.writeSync(fd, off, 0, 8, mem.tableOffset + 64);
    };
    // A tag word with flags but no name: the stream is damaged at its very first tag.
    const damagedFirstTag = (fd: number, mem: { tagsOffset: number }): void => void fs.writeSync(fd, Buffer.from([0x04, 0x00]), 0, 2, mem.tagsOffset);

    for (const [what, damage, reason] of [
      ['its stream lies past the end of the file', beyondTheEnd, /^the memory group is damaged \(its tag stream ended early after 0 tags, before any region tag\)/],
      ['its stream is damaged before any region tag', damagedFirstTag, /^the memory group is damaged \(its tag stream ended early after 0 tags, before any region tag\)/],
    ] as const) {
      it(`${what}: physmem is null, and physmemError says so and names --assume-flat`, () => {
        const w = lost(damage);
        withSnapshot(w.path, {}, (s) => {
          expect(s.physmem).to.equal(null);
          expect(s.memoryPath).to.equal(null);
          expect(s.physmemError).to.match(reason);
          expect(s.physmemError).to.include('the layout of guest memory is unknown');
          expect(s.physmemError).to.include(`give --assume-flat to serve ${w.vmemPath} as memory from address 0 anyway`);
        });
      });
    }

    it('--assume-flat serves the .vmem from address 0 as asked, and a warning says what was assumed', () => {
      const w = lost(beyondTheEnd);
      withSnapshot(w.path, { assumeFlat: true }, (s) => {
        expect(s.physmemError).to.equal(null);
        expect(runsOf(s)).to.deep.equal([{ physAddr: 0, fileOffset: 0, length: 8 * PAGE, file: w.vmemPath }]);
        expect(s.warnings.some((x) => /the layout of guest memory is unknown; --assume-flat serves .* as memory from address 0, as asked/.test(x)), s.warnings.join('\n')).to.equal(true);
      });
    });

    it('no memory group at all, with a .vmem beside it: the same', () => {
      const file = path.join(sub(), 'nomemgroup.vmss');
      writeCheckpoint(file, { groups: [{ name: 'Checkpoint', tags: [{ name: 'memSize', value: u32(1) }] }] });
      fs.writeFileSync(file.replace(/\.vmss$/, '.vmem'), Buffer.alloc(2 * PAGE, 0x11));
      withSnapshot(file, {}, (s) => {
        expect(s.physmem).to.equal(null);
        expect(s.physmemError).to.match(/^the checkpoint has no memory group, the group that says where guest memory lies: the layout of guest memory is unknown.*--assume-flat/);
      });
      withSnapshot(file, { assumeFlat: true }, (s) => expect(s.physmem?.size).to.equal(2 * PAGE));
    });

    it('`vmssfs info --json` shows physmem null with the reason; `cat --assume-flat` serves the .vmem bytes', async () => {
      const w = lost(damagedFirstTag);
      const r = await runCli(['info', '--json', w.path]);
      expect(r.code, r.stderr).to.equal(0);
      const j = JSON.parse(r.stdout) as InfoJson;
      expect(j.physmem).to.equal(null);
      expect(j.physmemError).to.include('--assume-flat');
      const flat = await runCli(['cat', '--assume-flat', w.path, 'physmem.raw']);
      expect(flat.code, flat.stderr).to.equal(0);
      expect(Buffer.from(flat.stdout, 'latin1').length).to.be.greaterThan(0);
      expect(flat.stderr).to.match(/warning: .*--assume-flat serves/);
      const refused = await runCli(['cat', w.path, 'physmem.raw']);
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.match(/physmem\.raw: no such file in the tree/);
    });
  });

  describe('memory files named otherwise, and the .std of older products', () => {
    it('a .std is a suspended state like a .vmss: opened directly, and found beside a .vmem given alone', () => {
      const w = snapshot(path.join(sub(), 'old.std'));
      withSnapshot(w.path, {}, (s) => {
        expect(s.memoryPath).to.equal(w.vmemPath);
        expect(runsOf(s)).to.deep.equal(w.runs);
      });
      withSnapshot(w.vmemPath!, {}, (s) => expect(s.metaFile.name).to.equal(w.path));
    });

    it('no sibling .vmem: the one .vmem of the folder whose size the memory group needs is used, and named', () => {
      const dir = sub();
      const w = snapshot(path.join(dir, 'vault-3-3c85c1f6.vmss'), { vmemPath: path.join(dir, 'copied memory.vmem') });
      fs.writeFileSync(path.join(dir, 'smaller.vmem'), Buffer.alloc(4 * PAGE));
      fs.writeFileSync(path.join(dir, 'notes.txt'), 'x'.repeat(8 * PAGE));
      withSnapshot(w.path, {}, (s) => {
        expect(s.memoryPath).to.equal(w.vmemPath);
        expect(runsOf(s)).to.deep.equal(w.runs);
        expect(s.warnings).to.deep.equal([
          `memory file: ${w.vmemPath} (vault-3-3c85c1f6.vmem is not beside vault-3-3c85c1f6.vmss; this is the one .vmem in its folder of the size the memory group needs, ${8 * PAGE} bytes)`,
        ]);
        expect(s.infoText(s.warnings)).to.include(`Memory file: ${w.vmemPath}\n`);
      });
    });

    it('two or more .vmem files of that size: no guess; physmemError lists them and names --vmem', () => {
      const dir = sub();
      const w = snapshot(path.join(dir, 'vm.vmss'), { vmemPath: path.join(dir, 'b.vmem') });
      fs.copyFileSync(w.vmemPath!, path.join(dir, 'a.vmem'));
      withSnapshot(w.path, {}, (s) => {
        expect(s.physmem).to.equal(null);
        expect(s.physmemError).to.equal(
          `no memory file chosen: vm.vmem is not beside vm.vmss, and 2 .vmem files in its folder have the size the memory group needs (${8 * PAGE} bytes): a.vmem, b.vmem; give the right one with --vmem FILE`,
        );
      });
    });

    it('a .vmem that sits beside another checkpoint is that one\'s memory, never a candidate', () => {
      const dir = sub();
      snapshot(path.join(dir, 'VM-Snapshot1.vmsn'));
      const w = snapshot(path.join(dir, 'VM-Snapshot2.vmsn'), { memory: 'none' });
      withSnapshot(w.path, {}, (s) => {
        expect(s.physmem).to.equal(null);
        expect(s.physmemError).to.match(/^no memory found: /);
      });
    });
  });
});
