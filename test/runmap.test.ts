// The run map (src/tree/segments.ts, src/format/regions.ts): the segmented binary-search layer, and the guest-physical runs
// derived from the memory group for every layout FORMAT.md describes.

import { expect } from 'chai';
import * as fs from 'node:fs';
import { findTag } from '../src/format/checkpoint';
import { buildRuns, missingRanges, PAGE_SIZE, type MemoryBlob, type Run, type RunsResult } from '../src/format/regions';
import { SegmentMap } from '../src/tree/segments';
import { openSnapshot } from '../src/evidence/snapshot';
import {
  PAGE, u32, writeCheckpoint, writeSnapshot,
  type GroupSpec, type RegionSpec, type SnapshotOptions, type WrittenSnapshot,
} from './kit/writer';
import { memoryGroup, parseFile } from './helpers/checkpoint';
import { scratchDir } from './helpers/paths';

const GiB = 2 ** 30;

interface Seg { start: number; length: number; id: string }

/** Read guest-physical [addr, addr+length) through a run map from `file`, holes as zeros. */
function readThrough(map: SegmentMap<Run>, file: string, addr: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  const fd = fs.openSync(file, 'r');
  try {
    for (const p of map.pieces(addr, length)) {
      if (p.segment) fs.readSync(fd, out, p.at - addr, p.length, p.segment.fileOffset + p.within);
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

function expectedRuns(w: WrittenSnapshot): Run[] {
  return w.runs.map((r) => ({ start: r.physAddr, length: r.length, fileOffset: r.fileOffset }));
}

function ok(r: RunsResult): Run[] {
  if (!r.ok) throw new Error(`buildRuns failed: ${r.error}`);
  return r.runs;
}

function failure(r: RunsResult): string {
  if (r.ok) throw new Error(`buildRuns succeeded with ${JSON.stringify(r.runs)}`);
  return r.error;
}

describe('run map', () => {
  describe('SegmentMap.pieces', () => {
    const a: Seg = { start: 0x1000, length: 0x1000, id: 'a' };
    const b: Seg = { start: 0x3000, length: 0x2000, id: 'b' };
    const c: Seg = { start: 0x5000, length: 0x800, id: 'c' }; // adjacent to b
    const map = new SegmentMap([c, a, b]); // given out of order
    const pieces = (addr: number, length: number): [number, number, string | null, number][] =>
      [...map.pieces(addr, length)].map((p) => [p.at, p.length, p.segment?.id ?? null, p.within]);

    it('sorts its segments and ends at the end of the highest', () => {
      expect(map.segments.map((s) => s.id)).to.deep.equal(['a', 'b', 'c']);
      expect(map.end).to.equal(0x5800);
      expect(new SegmentMap<Seg>([]).end).to.equal(0);
    });

    it('cuts a read across segments and holes, in address order', () => {
      expect(pieces(0, 0x6000)).to.deep.equal([
        [0, 0x1000, null, 0],
        [0x1000, 0x1000, 'a', 0],
        [0x2000, 0x1000, null, 0],
        [0x3000, 0x2000, 'b', 0],
        [0x5000, 0x800, 'c', 0], // no hole between adjacent segments
        [0x5800, 0x800, null, 0],
      ]);
    });

    it('handles reads inside one segment, at its edges and wholly in holes', () => {
      expect(pieces(0x3800, 0x100)).to.deep.equal([[0x3800, 0x100, 'b', 0x800]]);
      expect(pieces(0x1fff, 2)).to.deep.equal([[0x1fff, 1, 'a', 0xfff], [0x2000, 1, null, 0]]);
      expect(pieces(0x2fff, 2)).to.deep.equal([[0x2fff, 1, null, 0], [0x3000, 1, 'b', 0]]);
      expect(pieces(0x2000, 0x1000)).to.deep.equal([[0x2000, 0x1000, null, 0]]); // starts where a ends
      expect(pieces(0x4fff, 2)).to.deep.equal([[0x4fff, 1, 'b', 0x1fff], [0x5000, 1, 'c', 0]]);
      expect(pieces(0x57ff, 1)).to.deep.equal([[0x57ff, 1, 'c', 0x7ff]]);
      expect(pieces(0x5800, 0x10)).to.deep.equal([[0x5800, 0x10, null, 0]]);
      expect(pieces(10 * GiB, 0x10)).to.deep.equal([[10 * GiB, 0x10, null, 0]]);
      expect(pieces(0x0, 0x1000)).to.deep.equal([[0, 0x1000, null, 0]]);
      expect(pieces(0x1234, 0)).to.deep.equal([]);
    });

    it('finds the right segment among many by binary search, beyond 4 GiB too', () => {
      const many: Seg[] = Array.from({ length: 1000 }, (_, i) => ({ start: i * 2 * GiB, length: GiB, id: `s${i}` }));
      const big = new SegmentMap(many);
      expect([...big.pieces(777 * 2 * GiB + 5, 10)].map((p) => [p.segment?.id, p.within])).to.deep.equal([['s777', 5]]);
      expect([...big.pieces(777 * 2 * GiB + GiB - 1, 2)].map((p) => [p.segment?.id ?? null, p.length])).to.deep.equal([['s777', 1], [null, 1]]);
    });

    it('drops empty segments and refuses overlapping ones', () => {
      expect(new SegmentMap([{ start: 5, length: 0, id: 'e' }, a]).segments.map((s) => s.id)).to.deep.equal(['a']);
      expect(() => new SegmentMap([a, { start: 0x1fff, length: 2, id: 'x' }])).to.throw(RangeError, 'overlap');
    });
  });

  describe('buildRuns and physmem for every layout', () => {
    const scratch = scratchDir('vmssfs-runmap-');
    const file = scratch.file;

    /** Runs from buildRuns, as openSnapshot would call it, plus the served physmem. */
    function check(opts: SnapshotOptions, expected: { runs: Run[]; size: number }): void {
      const w = writeSnapshot(file(), opts);
      expect(expectedRuns(w)).to.deep.equal(expected.runs, 'the writer agrees with the expected runs');
      expect(w.physSize).to.equal(expected.size);
      const cp = parseFile(w.path);
      let blob: MemoryBlob;
      if (opts.memory === 'embedded') {
        const mem = findTag(cp, 'memory', 'Memory', [0, 0])!;
        blob = { offset: mem.dataOffset, length: mem.size, wholeFile: false };
      } else {
        blob = { offset: 0, length: fs.statSync(w.vmemPath!).size, wholeFile: true };
      }
      const runs = ok(buildRuns(cp, blob));
      expect(runs).to.deep.equal(expected.runs);

      const snap = openSnapshot(w.path);
      try {
        expect(snap.physmemError).to.equal(null);
        expect(snap.warnings).to.deep.equal([]);
        expect(snap.physmem!.map.segments).to.deep.equal(expected.runs);
        expect(snap.physmem!.size).to.equal(expected.size);
        const memFile = opts.memory === 'embedded' ? w.path : w.vmemPath!;
        expect(snap.physmem!.file.name).to.equal(memFile);
        // The bytes the runs point at are the bytes the writer put at those guest addresses,
        // holes included, across every run boundary.
        const map = snap.physmem!.map;
        for (const r of expected.runs) {
          for (const at of [r.start, r.start + r.length - PAGE]) {
            expect(readThrough(map, memFile, at, PAGE).equals(w.readPhys(at, PAGE)), `page at 0x${at.toString(16)}`).to.equal(true);
          }
          if (r.start >= 100) expect(readThrough(map, memFile, r.start - 100, 200)).to.deep.equal(w.readPhys(r.start - 100, 200));
        }
        if (expected.size <= 64 * PAGE) expect(readThrough(map, memFile, 0, expected.size).equals(w.readPhys(0, expected.size))).to.equal(true);
      } finally {
        snap.close();
      }
    }

    it('Memory block without regions: one run from guest-physical 0 over the whole block', () => {
      const w = writeSnapshot(file(), { memory: 'embedded', blobPages: 16 });
      check({ memory: 'embedded', blobPages: 16 }, { runs: [{ start: 0, length: 16 * PAGE, fileOffset: w.blobOffset }], size: 16 * PAGE });
    });

    it('Memory block with regions: regionPageNum is absolute in the blob; holes between regions are not stored', () => {
      // ESX 4.1's shape, scaled down: low memory, the PCI hole, then memory above 4 GiB.
      const regions: RegionSpec[] = [{ ppn: 0, pageNum: 0, pages: 8 }, { ppn: 0x100000, pageNum: 8, pages: 8 }];
      const probe = writeSnapshot(file(), { memory: 'embedded', blobPages: 16, regions });
      const base = probe.blobOffset;
      check({ memory: 'embedded', blobPages: 16, regions }, {
        runs: [
          { start: 0, length: 8 * PAGE, fileOffset: base },
          { start: 4 * GiB, length: 8 * PAGE, fileOffset: base + 8 * PAGE },
        ],
        size: 4 * GiB + 8 * PAGE,
      });
    });

    it('regions in any blob order, with unmapped blob pages and several holes (not cumulative like crash)', () => {
      const regions: RegionSpec[] = [
        { ppn: 0x20, pageNum: 2, pages: 3 },
        { ppn: 0, pageNum: 10, pages: 4 },
        { ppn: 0x40, pageNum: 6, pages: 2 },
      ];
      const probe = writeSnapshot(file(), { memory: 'embedded', blobPages: 16, regions });
      const base = probe.blobOffset;
      check({ memory: 'embedded', blobPages: 16, regions }, {
        runs: [
          { start: 0, length: 4 * PAGE, fileOffset: base + 10 * PAGE },
          { start: 0x20 * PAGE, length: 3 * PAGE, fileOffset: base + 2 * PAGE },
          { start: 0x40 * PAGE, length: 2 * PAGE, fileOffset: base + 6 * PAGE },
        ],
        size: 0x42 * PAGE,
      });
    });

    it('metadata-only file plus .vmem, with regions: runs point into the .vmem from offset 0', () => {
      const regions: RegionSpec[] = [{ ppn: 0, pageNum: 0, pages: 4 }, { ppn: 0x100000, pageNum: 4, pages: 4 }, { ppn: 0x180000, pageNum: 8, pages: 2 }];
      check({ memory: 'vmem', blobPages: 10, regions }, {
        runs: [
          { start: 0, length: 4 * PAGE, fileOffset: 0 },
          { start: 4 * GiB, length: 4 * PAGE, fileOffset: 4 * PAGE },
          { start: 6 * GiB, length: 2 * PAGE, fileOffset: 8 * PAGE },
        ],
        size: 6 * GiB + 2 * PAGE,
      });
    });

    it('metadata-only file plus .vmem, without regions: the whole .vmem is memory from 0', () => {
      check({ memory: 'vmem', blobPages: 12 }, { runs: [{ start: 0, length: 12 * PAGE, fileOffset: 0 }], size: 12 * PAGE });
    });

    it('version 0 files map the same way', () => {
      const regions: RegionSpec[] = [{ ppn: 0, pageNum: 0, pages: 2 }, { ppn: 16, pageNum: 2, pages: 2 }];
      const probe = writeSnapshot(file(), { memory: 'embedded', blobPages: 4, regions, magic: 0xbed2bed0 });
      check({ memory: 'embedded', blobPages: 4, regions, magic: 0xbed2bed0 }, {
        runs: [{ start: 0, length: 2 * PAGE, fileOffset: probe.blobOffset }, { start: 16 * PAGE, length: 2 * PAGE, fileOffset: probe.blobOffset + 2 * PAGE }],
        size: 18 * PAGE,
      });
    });

    it('physical memory ends at the highest run, not at the blob size', () => {
      const regions: RegionSpec[] = [{ ppn: 0x300000, pageNum: 0, pages: 1 }, { ppn: 0, pageNum: 1, pages: 1 }];
      check({ memory: 'vmem', blobPages: 8, regions }, {
        runs: [{ start: 0, length: PAGE, fileOffset: PAGE }, { start: 12 * GiB, length: PAGE, fileOffset: 0 }],
        size: 12 * GiB + PAGE,
      });
    });
  });

  describe('buildRuns on hand-built memory groups', () => {
    const scratch = scratchDir('vmssfs-runmap-hand-');

    /** Write `groups`, parse, and build runs over the Memory block (or a .vmem of vmemBytes). */
    function runsOf(groups: GroupSpec[], vmemBytes?: number): RunsResult {
      const w = writeCheckpoint(scratch.file(), { groups });
      const cp = parseFile(w.path);
      expect(cp.warnings).to.deep.equal([]);
      if (vmemBytes !== undefined) return buildRuns(cp, { offset: 0, length: vmemBytes, wholeFile: true });
      const mem = findTag(cp, 'memory', 'Memory', [0, 0])!;
      return buildRuns(cp, { offset: mem.dataOffset, length: mem.size, wholeFile: false });
    }
    const blob = (pages: number): Buffer => Buffer.alloc(pages * PAGE, 0xab);

    it('regionsCount 0 means one region: the blob from 0', () => {
      const runs = ok(runsOf([{ name: 'memory', tags: [{ name: 'regionsCount', value: u32(0) }] }], 8 * PAGE));
      expect(runs).to.deep.equal([{ start: 0, length: 8 * PAGE, fileOffset: 0 }]);
    });

    it('drops regions of zero pages', () => {
      const runs = ok(runsOf([memoryGroup({ regions: [{ ppn: 0, pageNum: 0, pages: 2 }, { ppn: 5, pageNum: 2, pages: 0 }, { ppn: 8, pageNum: 2, pages: 2 }] })], 4 * PAGE));
      expect(runs).to.deep.equal([{ start: 0, length: 2 * PAGE, fileOffset: 0 }, { start: 8 * PAGE, length: 2 * PAGE, fileOffset: 2 * PAGE }]);
    });

    it('Fusion on Apple silicon (Platform 3) without regions: memory starts at 0x80000000, and a note says so', () => {
      const r = runsOf([
        { name: 'Checkpoint', tags: [{ name: 'Platform', value: u32(3) }] },
        memoryGroup({}),
      ], 4 * PAGE);
      expect(ok(r)).to.deep.equal([{ start: 0x80000000, length: 4 * PAGE, fileOffset: 0 }]);
      expect(r.ok && r.notes).to.deep.equal([
        'Checkpoint/Platform is 3 (Apple silicon) and there are no region tags: assumed guest RAM starts at 0x80000000',
      ]);
    });

    it('regions overlapping in guest-physical memory are an error', () => {
      const err = failure(runsOf([memoryGroup({ regions: [{ ppn: 0, pageNum: 0, pages: 4 }, { ppn: 3, pageNum: 4, pages: 4 }], memory: blob(8) })]));
      expect(err).to.equal(
        'region 0 (guest-physical 0x0, 4 pages at blob page 0) and region 1 (guest-physical 0x3000, 4 pages at blob page 4) overlap in guest-physical memory',
      );
    });

    it('regions overlapping in the blob are an error', () => {
      const err = failure(runsOf([memoryGroup({ regions: [{ ppn: 0, pageNum: 0, pages: 4 }, { ppn: 0x100, pageNum: 2, pages: 2 }], memory: blob(8) })]));
      expect(err).to.match(/^region 0 .* and region 1 .* overlap in the memory blob$/);
    });

    it('a region beyond the Memory block is an error', () => {
      const err = failure(runsOf([memoryGroup({ regions: [{ ppn: 0, pageNum: 0, pages: 4 }, { ppn: 0x100, pageNum: 4, pages: 5 }], memory: blob(8) })]));
      expect(err).to.equal(`region 1 (guest-physical 0x100000, 5 pages at blob page 4) reaches past the end of the Memory block (${8 * PAGE} bytes)`);
    });

    it('a region missing one of its tags, or a regionsCount beyond the group, is an error', () => {
      const missing = failure(runsOf([{
        name: 'memory',
        tags: [{ name: 'regionsCount', value: u32(1) }, { name: 'regionPPN', indices: [0], value: u32(0) }, { name: 'regionPageNum', indices: [0], value: u32(0) }, { name: 'x', value: u32(0) }],
      }], 4 * PAGE));
      expect(missing).to.equal('memory/regionSize[0] is missing or not an integer (regionsCount is 1)');
      const absurd = failure(runsOf([{ name: 'memory', tags: [{ name: 'regionsCount', value: u32(0xffffffff) }] }], 4 * PAGE));
      expect(absurd).to.equal('memory/regionsCount says 4294967295 regions, but the memory group has only 1 tags');
    });

    it('a regionsCount that is not a 1, 2, 4 or 8-byte integer is an error, not "no regions"', () => {
      const odd = failure(runsOf([{ name: 'memory', tags: [{ name: 'regionsCount', value: Buffer.alloc(3, 1) }] }], 4 * PAGE));
      expect(odd).to.equal('memory/regionsCount is not an integer of 1, 2, 4 or 8 bytes below 2^53');
    });

    it('an empty memory blob is an error', () => {
      expect(failure(runsOf([memoryGroup({})], 0))).to.equal('the memory blob is empty');
    });

    it('openSnapshot turns each of these into physmemError, keeping the metadata', () => {
      const w = writeCheckpoint(scratch.named('overlap.vmss'), {
        groups: [
          { name: 'Checkpoint', tags: [{ name: 'memSize', value: u32(1) }] },
          memoryGroup({ regions: [{ ppn: 0, pageNum: 0, pages: 4 }, { ppn: 2, pageNum: 4, pages: 4 }], memory: blob(8) }),
        ],
      });
      const snap = openSnapshot(w.path);
      try {
        expect(snap.physmem).to.equal(null);
        expect(snap.memoryPath).to.equal(null);
        expect(snap.physmemError).to.match(/overlap in guest-physical memory: physical memory cannot be mapped \(the metadata is served\)$/);
        expect(snap.checkpoint.groups.map((g) => g.tags.length)).to.deep.equal([1, 8]);
      } finally {
        snap.close();
      }
    });
  });

  describe('memory groups with tags missing, as older products and damaged copies have them', () => {
    const scratch = scratchDir('vmssfs-runmap-shapes-');
    const TWO: RegionSpec[] = [{ ppn: 0, pageNum: 0, pages: 4 }, { ppn: 0x100, pageNum: 4, pages: 4 }];

    /** Open the writer's file; the runs and every guest-physical byte must be what it wrote. */
    function served(opts: SnapshotOptions, assumeFlat = false): { warnings: string[]; runs: Run[] } {
      const w = writeSnapshot(scratch.file(), opts);
      const snap = openSnapshot(w.path, { assumeFlat });
      try {
        if (!snap.physmem) throw new Error(`not served: ${snap.physmemError}`);
        expect(snap.physmem.map.segments).to.deep.equal(expectedRuns(w));
        const file = snap.physmem.file.name;
        expect(readThrough(snap.physmem.map, file, 0, w.physSize).equals(w.readPhys(0, w.physSize))).to.equal(true);
        return { warnings: snap.warnings, runs: [...snap.physmem.map.segments] };
      } finally {
        snap.close();
      }
    }

    it('a plain `Memory` tag with no indices and no region tags is memory from 0, without a warning', () => {
      const r = served({ memory: 'embedded', blobPages: 6, memoryIndices: [] });
      expect(r.runs).to.have.length(1);
      expect(r.runs[0]?.start).to.equal(0);
      expect(r.warnings).to.deep.equal([]);
    });

    it('regionPageNum absent with a single region: blob page 0, and a warning says so', () => {
      const r = served({ memory: 'vmem', blobPages: 4, regions: [{ ppn: 0x10, pageNum: 0, pages: 4 }], omitRegionPageNum: true });
      expect(r.runs).to.deep.equal([{ start: 0x10 * PAGE, length: 4 * PAGE, fileOffset: 0 }]);
      expect(r.warnings).to.deep.equal(['memory/regionPageNum[0] is absent and there is a single region: took it to start at blob page 0']);
    });

    it('regionsCount absent while regionPPN[i]/regionSize[i] are present: the regions are counted, with a warning', () => {
      const r = served({ memory: 'embedded', blobPages: 8, regions: TWO, omitRegionsCount: true });
      expect(r.runs.map((x) => x.start)).to.deep.equal([0, 0x100 * PAGE]);
      expect(r.warnings).to.deep.equal(['memory/regionsCount is absent: counted 2 regions from memory/regionPPN[i] and memory/regionSize[i]']);
    });

    it('less complete than that stays a physmemError: two regions without regionPageNum, or neither count nor page numbers', () => {
      for (const opts of [{ omitRegionPageNum: true }, { omitRegionPageNum: true, omitRegionsCount: true }]) {
        const w = writeSnapshot(scratch.file(), { memory: 'vmem', blobPages: 8, regions: TWO, ...opts });
        const snap = openSnapshot(w.path);
        try {
          expect(snap.physmem, JSON.stringify(opts)).to.equal(null);
          expect(snap.physmemError).to.match(/^memory\/regionPageNum\[0\] is missing or not an integer .*layout of guest memory is unknown.*--assume-flat/);
        } finally {
          snap.close();
        }
      }
    });

    it('regionsCount absent and region tags with a gap (regionPPN[0], regionPPN[2]): a physmemError, not a guess', () => {
      const w = writeCheckpoint(scratch.file(), {
        groups: [{
          name: 'memory',
          tags: [0, 2].flatMap((i) => [
            { name: 'regionPPN', indices: [i], value: u32(i * 16) },
            { name: 'regionSize', indices: [i], value: u32(1) },
            { name: 'regionPageNum', indices: [i], value: u32(i) },
          ]),
        }],
      });
      const r = buildRuns(parseFile(w.path), { offset: 0, length: 4 * PAGE, wholeFile: true });
      expect(r.ok).to.equal(false);
      expect(!r.ok && r.layoutUnknown).to.equal(true);
      expect(failure(r)).to.equal('memory/regionsCount is absent and the region tags do not describe regions 0..n-1 (each needs regionPPN[i] and regionSize[i])');
    });
  });

  describe('compressed memory', () => {
    const scratch = scratchDir('vmssfs-runmap-z-');

    it('a compressed Memory block cannot be served: physmemError says why, the metadata is complete', () => {
      const w = writeSnapshot(scratch.named('z.vmss'), { memory: 'embedded', blobPages: 8, compressedMemory: true });
      const snap = openSnapshot(w.path);
      try {
        expect(snap.physmem).to.equal(null);
        expect(snap.physmemError).to.equal(
          "memory/Memory[0][0] is a compressed block, and VMware's compression scheme is not public: physical memory cannot be served (the metadata is)",
        );
        expect(snap.checkpoint.groups.map((g) => g.name)).to.deep.equal(w.groups.map((g) => g.name));
        expect(snap.checkpoint.warnings).to.deep.equal([]);
      } finally {
        snap.close();
      }
    });
  });

  describe('missingRanges', () => {
    const runs: Run[] = [
      { start: 0, length: 4 * PAGE_SIZE, fileOffset: 0x10000 },
      { start: 4 * GiB, length: 4 * PAGE_SIZE, fileOffset: 0x10000 + 4 * PAGE_SIZE },
    ];
    it('is empty when the file holds every run', () => {
      expect(missingRanges(runs, 0x10000 + 8 * PAGE_SIZE)).to.deep.equal([]);
    });
    it('names the guest-physical tail of a run cut by the end of the file, and whole runs past it', () => {
      expect(missingRanges(runs, 0x10000 + 6 * PAGE_SIZE + 1)).to.deep.equal([{ start: 4 * GiB + 2 * PAGE_SIZE + 1, length: 2 * PAGE_SIZE - 1 }]);
      expect(missingRanges(runs, 0x10000 + 2 * PAGE_SIZE)).to.deep.equal([
        { start: 2 * PAGE_SIZE, length: 2 * PAGE_SIZE },
        { start: 4 * GiB, length: 4 * PAGE_SIZE },
      ]);
      expect(missingRanges(runs, 100)).to.deep.equal([{ start: 0, length: 4 * PAGE_SIZE }, { start: 4 * GiB, length: 4 * PAGE_SIZE }]);
    });
  });
});
