import type { RandomAccess } from '../io/source';
import { Cursor, readUint } from './cursor';
import type { GroupEntry } from './header';
import { hex } from './integers';

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

/**
 * Shared across a file's groups so a garbage stream cannot allocate without bound: the tag count
 * left, and the storage every tag of the file shares (names, indices, inline values).
 */
export interface TagBudget {
  left: number;
  store?: TagStore;
}
export const MAX_TAGS_PER_FILE = 250_000;

/**
 * The bytes a file's tags hold, packed: each tag's indices (u32 each) and inline value sit in one
 * growing buffer, and each distinct name is one string. A tag of its own Buffer, index array and
 * name string cost about 400 bytes of heap; at the 250,000-tag cap that alone was 100 MiB.
 */
export class TagStore {
  bytes = Buffer.allocUnsafe(64 * 1024);
  used = 0;
  private readonly names = new Map<string, string>();

  /** Where `data` now sits in `bytes`. */
  put(data: Buffer): number {
    if (this.used + data.length > this.bytes.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.bytes.length * 2, this.used + data.length));
      this.bytes.copy(grown, 0, 0, this.used);
      this.bytes = grown;
    }
    const at = this.used;
    data.copy(this.bytes, at);
    this.used += data.length;
    return at;
  }

  /** The one string for a name: real files repeat a few thousand names across their tags. */
  name(bytes: Buffer): string {
    const decoded = bytes.toString('utf8');
    const known = this.names.get(decoded);
    if (known !== undefined) return known;
    this.names.set(decoded, decoded);
    return decoded;
  }
}

const BLOCK = 1;
const COMPRESSED = 2;

/**
 * A parsed tag: numbers and a reference into its file's TagStore. `indices` and `inline` are made
 * when asked for (a fresh array and a view of the store each time), so a tag holds no objects
 * of its own.
 */
class StoredTag implements Tag {
  constructor(
    readonly name: string,
    readonly headerOffset: number,
    readonly dataOffset: number,
    readonly size: number,
    readonly memSize: number,
    /** BLOCK | COMPRESSED, and the index count from bit 2. */
    private readonly bits: number,
    private readonly store: TagStore,
    /** Offset in the store of the indices, then the inline value. */
    private readonly at: number,
  ) {}

  get block(): boolean {
    return (this.bits & BLOCK) !== 0;
  }

  get compressed(): boolean {
    return (this.bits & COMPRESSED) !== 0;
  }

  get indices(): number[] {
    const n = this.bits >> 2;
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(this.store.bytes.readUInt32LE(this.at + 4 * i));
    return out;
  }

  get inline(): Buffer | null {
    if (this.block) return null;
    const from = this.at + 4 * (this.bits >> 2);
    return this.store.bytes.subarray(from, from + this.size);
  }
}

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
  const store = (budget.store ??= new TagStore());
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
    const name = store.name(nameBytes);
    const indexCount = flags >> 6;
    // The indices are copied to the store at once: the next take() may move the cursor's window.
    let at = store.used;
    if (indexCount > 0) {
      const rawIndices = cur.take(4 * indexCount);
      if (!rawIndices) return truncated();
      at = store.put(rawIndices);
    }
    const sizeField = flags & 0x3f;
    budget.left--;

    if (sizeField < SIZE_COMPRESSED) {
      const dataOffset = cur.pos;
      const value = cur.take(sizeField);
      if (!value) return truncated();
      store.put(value);
      tags.push(new StoredTag(name, headerOffset, dataOffset, sizeField, sizeField, indexCount << 2, store, at));
      continue;
    }

    const head = cur.take(2 * blockWidth + 2);
    if (!head) return truncated();
    const size = readUint(head, 0, blockWidth);
    const memSize = readUint(head, blockWidth, blockWidth);
    const padding = head.readUInt16LE(2 * blockWidth);
    const indices: number[] = [];
    for (let i = 0; i < indexCount; i++) indices.push(store.bytes.readUInt32LE(at + 4 * i));
    const label = `${group.name}/${tagLabel({ name, indices })}`;
    if (size === null || memSize === null) {
      warnings.push(`${label}: block at ${hex(headerOffset)} claims an absurd size; stream abandoned, kept ${tags.length} tags`);
      return { tags, complete: false, warnings };
    }
    if (!cur.skip(padding)) return truncated();
    const dataOffset = cur.pos;
    tags.push(new StoredTag(name, headerOffset, dataOffset, size, memSize, (indexCount << 2) | BLOCK | (sizeField === SIZE_COMPRESSED ? COMPRESSED : 0), store, at));
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
