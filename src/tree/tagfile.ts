import { tagValueText } from '../format/checkpoint';
import type { Tag } from '../format/tags';
import type { ChunkSource, PageCache } from '../cache/pagecache';
import type { Extent, FileNode } from './nodes';

/**
 * A tag's file, made from the parsed tag on demand: a checkpoint holds tens of thousands of tags,
 * so a tag's node keeps no bytes, strings or maps of its own.
 *   - 1/2/4/8-byte inline values read as their text plus a newline (exactly the JSON's `value`);
 *   - other inline values read as their bytes;
 *   - blocks read as their stored bytes, lazily, from the snapshot file through the page cache
 *     (past the end of a truncated file: zeros, as the parse warning says).
 */
export class TagFile implements FileNode {
  // On the prototype, not in each of a quarter million instances.
  get kind(): 'file' {
    return 'file';
  }

  constructor(
    readonly ino: number,
    private readonly tag: Tag,
    private readonly source: ChunkSource,
    private readonly cache: PageCache,
  ) {}

  /** The bytes of an inline tag's file (blocks are never held). */
  private inlineBytes(): Buffer {
    const text = tagValueText(this.tag);
    return text === null ? (this.tag.inline ?? Buffer.alloc(0)) : Buffer.from(text + '\n');
  }

  get size(): number {
    if (this.tag.block) return this.tag.size;
    const text = tagValueText(this.tag);
    return text === null ? this.tag.size : text.length + 1;
  }

  /** Where the tag's bytes sit in the snapshot file, for getfattr. */
  get xattrs(): ReadonlyMap<string, string> {
    const t = this.tag;
    return new Map([
      ['user.vmss.offset', String(t.dataOffset)],
      ['user.vmss.size', String(t.size)],
      ['user.vmss.flags', t.block ? (t.compressed ? 'block,compressed' : 'block') : 'inline'],
    ]);
  }

  /** A block is one extent of the snapshot file (what read serves); inline values have none. */
  get extents(): readonly Extent[] | undefined {
    const t = this.tag;
    return t.block ? [{ start: 0, length: t.size, source: this.source, sourceOffset: t.dataOffset }] : undefined;
  }

  async read(dst: Buffer, position: number, length: number): Promise<number> {
    const n = Math.max(0, Math.min(length, this.size - position));
    if (n === 0) return 0;
    if (this.tag.block) await this.cache.read(this.source, this.tag.dataOffset + position, dst, 0, n);
    else this.inlineBytes().copy(dst, 0, position, position + n);
    return n;
  }
}
