import type { RandomAccess } from '../io/source';
import { Cursor, readUint } from './cursor';
import { hex, type GroupEntry } from './header';

/**
 * One tag of a group's stream. On disk a tag is:
 *   u16 word   byte 0 = flags: bits 7..6 index count (0..3), bits 5..0 value size
 *              (0..61 inline bytes, 62 compressed block, 63 plain block); byte 1 = name length
 *   name       name-length bytes, no NUL
 *   indices    one u32 per index
 *   value      inline bytes, or a block: stored size, in-memory size (u64 each, u32 in version 0),
 *              u16 padding length P, P padding bytes (aligns big blocks), then the stored bytes.
 * A zero word (flags 0 and name length 0) ends the stream; flags 0 with a name is an ordinary
 * zero-length tag.
 */
export interface Tag {
  name: string;
  indices: number[];
  /** File offset of the tag's u16 word. */
  headerOffset: number;
  /** File offset of the value's first byte (after any block padding). */
  dataOffset: number;
  /** Bytes stored in the file. */
  size: number;
  /** Bytes in memory: differs from `size` only for compressed blocks. */
  memSize: number;
  block: boolean;
  compressed: boolean;
  /** Copy of an inline value (at most 61 bytes); null for blocks. */
  inline: Buffer | null;
}

/** Size fields 62 (compressed block) and 63 (plain block); below 62 the value is inline. */
const SIZE_COMPRESSED = 62;

/** Shared across a file's groups so a garbage stream cannot allocate without bound. */
export interface TagBudget {
  left: number;
}
export const MAX_TAGS_PER_FILE = 250_000;

export interface StreamResult {
  tags: Tag[];
  /** True when the stream ended at its zero word. */
  complete: boolean;
  warnings: string[];
}

/** `name[i][j]`: the text form vmwareinfo prints after `group/`. */
export function tagLabel(tag: Pick<Tag, 'name' | 'indices'>): string {
  return tag.name + tag.indices.map((i) => `[${i}]`).join('');
}

/**
 * Read a group's tag stream, bounded by its declared size and by the end of the file.
 * Damage never throws: what was read is kept and a warning says where and why reading stopped.
 */
export function readTagStream(src: RandomAccess, version: number, group: GroupEntry, budget: TagBudget): StreamResult {
  const warnings: string[] = [];
  const where = `group "${group.name}"`;
  const tags: Tag[] = [];
  if (group.tagsOffset >= src.size) {
    warnings.push(`${where}: its tags offset ${hex(group.tagsOffset)} lies beyond the end of the file (${hex(src.size)}); no tags read`);
    return { tags, complete: false, warnings };
  }
  const declaredEnd = group.size === null ? Infinity : group.tagsOffset + group.size;
  if (group.size === null) warnings.push(`${where}: absurd stream size in the group table; read up to the end of the file`);
  const end = Math.min(declaredEnd, src.size);
  const cur = new Cursor(src, group.tagsOffset, end);
  const offEnd = (): string =>
    declaredEnd > src.size
      ? `runs off the end of the file at ${hex(src.size)} (truncated copy?)`
      : `runs off the end of the group (${hex(end)})`;
  const blockWidth = version === 0 ? 4 : 8;

  for (;;) {
    const headerOffset = cur.pos;
    const word = cur.take(2);
    if (!word) {
      if (cur.pos >= end && cur.pos === headerOffset) {
        warnings.push(`${where}: tag stream ${offEnd()} without its end marker; kept ${tags.length} tags`);
      } else {
        warnings.push(`${where}: tag stream ${offEnd()} inside a tag at ${hex(headerOffset)}; kept ${tags.length} tags`);
      }
      return { tags, complete: false, warnings };
    }
    const flags = word[0] as number;
    const nameLength = word[1] as number;
    if (flags === 0 && nameLength === 0) return { tags, complete: true, warnings };
    if (budget.left <= 0) {
      warnings.push(`${where}: stopped at ${hex(headerOffset)}: the file holds more than ${MAX_TAGS_PER_FILE} tags, which no real checkpoint does`);
      return { tags, complete: false, warnings };
    }
    const truncated = (): StreamResult => {
      warnings.push(`${where}: tag stream ${offEnd()} inside the tag at ${hex(headerOffset)}; kept ${tags.length} tags`);
      return { tags, complete: false, warnings };
    };
    if (nameLength === 0) {
      warnings.push(`${where}: tag at ${hex(headerOffset)} has flags ${hex(flags, 2)} but no name: the stream is damaged; kept ${tags.length} tags`);
      return { tags, complete: false, warnings };
    }
    const nameBytes = cur.take(nameLength);
    if (!nameBytes) return truncated();
    const name = nameBytes.toString('utf8');
    const indexCount = flags >> 6;
    const indices: number[] = [];
    if (indexCount > 0) {
      const raw = cur.take(4 * indexCount);
      if (!raw) return truncated();
      for (let i = 0; i < indexCount; i++) indices.push(raw.readUInt32LE(4 * i));
    }
    const sizeField = flags & 0x3f;
    budget.left--;

    if (sizeField < SIZE_COMPRESSED) {
      const dataOffset = cur.pos;
      const value = cur.take(sizeField);
      if (!value) return truncated();
      tags.push({
        name, indices, headerOffset, dataOffset, size: sizeField, memSize: sizeField,
        block: false, compressed: false, inline: Buffer.from(value),
      });
      continue;
    }

    const head = cur.take(2 * blockWidth + 2);
    if (!head) return truncated();
    const size = readUint(head, 0, blockWidth);
    const memSize = readUint(head, blockWidth, blockWidth);
    const padding = head.readUInt16LE(2 * blockWidth);
    const label = `${group.name}/${tagLabel({ name, indices })}`;
    if (size === null || memSize === null) {
      warnings.push(`${label}: block at ${hex(headerOffset)} claims an absurd size; stream abandoned, kept ${tags.length} tags`);
      return { tags, complete: false, warnings };
    }
    if (!cur.skip(padding)) return truncated();
    const dataOffset = cur.pos;
    const tag: Tag = {
      name, indices, headerOffset, dataOffset, size, memSize,
      block: true, compressed: sizeField === SIZE_COMPRESSED, inline: null,
    };
    tags.push(tag);
    if (!cur.skip(size)) {
      // Keep the tag: its bytes that exist are still evidence. Where the file ends first, the
      // missing tail reads as zeros, and this warning is what says so.
      const short = dataOffset + size - end;
      warnings.push(
        declaredEnd > src.size
          ? `${label}: block of ${size} bytes at ${hex(dataOffset)} runs ${short} bytes past the end of the file (${hex(src.size)}): truncated copy; the missing bytes read as zeros`
          : `${label}: block of ${size} bytes at ${hex(dataOffset)} runs past the end of its group (${hex(end)}); stream abandoned after it`,
      );
      return { tags, complete: false, warnings };
    }
  }
}
