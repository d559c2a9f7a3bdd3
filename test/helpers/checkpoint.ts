// Shared helpers for the format-layer tests: parse a file the writer produced, and compare
// what the parser read against what the writer says it wrote, tag by tag.

import { expect } from 'chai';
import type { Checkpoint } from '../../src/format/checkpoint';
import { parseCheckpoint } from '../../src/format/checkpoint';
import { SourceFile, type RandomAccess } from '../../src/io/source';
import type { GroupSpec, RegionSpec, TagSpec, WrittenCheckpoint, WrittenTag } from '../kit/writer';
import { u32 } from '../kit/writer';

/** Parse a checkpoint on disk, closing the file afterwards. */
export function parseFile(file: string): Checkpoint {
  const src = SourceFile.open(file);
  try {
    return parseCheckpoint(src);
  } finally {
    src.close();
  }
}

/** The fields of a tag both sides describe, in one comparable shape. */
function tagFacts(t: Pick<WrittenTag, 'name' | 'indices' | 'headerOffset' | 'dataOffset' | 'size' | 'memSize' | 'block' | 'compressed' | 'inline'>) {
  return {
    name: t.name,
    indices: t.indices,
    headerOffset: t.headerOffset,
    dataOffset: t.dataOffset,
    size: t.size,
    memSize: t.memSize,
    block: t.block,
    compressed: t.compressed,
    inline: t.inline === null ? null : t.inline.toString('hex'),
  };
}

/**
 * Every group (name, table and stream offsets, size) and every tag (offsets, sizes, flags,
 * inline bytes) of `cp` equals what the writer recorded, in table order, and nothing was warned.
 */
export function expectMatchesWritten(cp: Checkpoint, written: WrittenCheckpoint): void {
  expect(cp.magic).to.equal(written.magic);
  expect(cp.version).to.equal(written.version);
  expect(cp.fileSize).to.equal(written.fileSize);
  expect(cp.warnings).to.deep.equal([]);
  expect(cp.groups.map((g) => g.name)).to.deep.equal(written.groups.map((g) => g.name));
  written.groups.forEach((wg, i) => {
    const g = cp.groups[i];
    expect({ index: g.index, tableOffset: g.tableOffset, tagsOffset: g.tagsOffset, size: g.size, complete: g.complete }, `group ${wg.name}`)
      .to.deep.equal({ index: i, tableOffset: wg.tableOffset, tagsOffset: wg.tagsOffset, size: wg.size, complete: true });
    expect(g.tags.map(tagFacts), `tags of group ${wg.name}`).to.deep.equal(wg.tags.map(tagFacts));
  });
}

/** Tags of a `memory` group describing `regions` (regionsCount, then PageNum/PPN/Size per region). */
export function regionTags(regions: RegionSpec[]): TagSpec[] {
  return [
    { name: 'regionsCount', value: u32(regions.length) },
    ...regions.map((r, i) => ({ name: 'regionPageNum', indices: [i], value: u32(r.pageNum) })),
    ...regions.map((r, i) => ({ name: 'regionPPN', indices: [i], value: u32(r.ppn) })),
    ...regions.map((r, i) => ({ name: 'regionSize', indices: [i], value: u32(r.pages) })),
  ];
}

/** A `memory` group by hand: optional regions and optional Memory[0][0] block. */
export function memoryGroup(opts: { regions?: RegionSpec[]; memory?: Buffer; compressed?: boolean; align?: number }): GroupSpec {
  const tags: TagSpec[] = [...(opts.regions ? regionTags(opts.regions) : [])];
  if (opts.memory) {
    tags.push({ name: 'Memory', indices: [0, 0], block: { data: opts.memory, compressed: opts.compressed, align: opts.align } });
  }
  return { name: 'memory', tags };
}

/** A RandomAccess that counts what is read through it: parsing must not touch block data. */
export class CountingSource implements RandomAccess {
  bytesRead = 0;
  calls = 0;
  constructor(private readonly inner: RandomAccess) {}
  get name(): string {
    return this.inner.name;
  }
  get size(): number {
    return this.inner.size;
  }
  readAtSync(buf: Buffer, position: number): number {
    this.calls++;
    const n = this.inner.readAtSync(buf, position);
    this.bytesRead += n;
    return n;
  }
}
