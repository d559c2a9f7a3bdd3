import type { RandomAccess } from '../io/source';
import { safeNumber, uintLE } from './integers';
import { readGroupTable, readHeader, MAGICS, type GroupEntry } from './header';
import { readTagStream, tagLabel, MAX_TAGS_PER_FILE, type Tag } from './tags';

export interface Group extends GroupEntry {
  tags: Tag[];
  /** True when the stream ended at its end marker. */
  complete: boolean;
}

/** Everything the metadata of one .vmss/.vmsn says, with what went wrong while reading it. */
export interface Checkpoint {
  file: string;
  fileSize: number;
  magic: number;
  version: number;
  groups: Group[];
  warnings: string[];
}

/**
 * Parse header, group table and every tag stream. Throws VmssError only when the file is not a
 * checkpoint at all (header, magic, group table); damage inside streams becomes warnings.
 * Cost depends on the metadata only: block data (guest memory) is skipped, never read.
 */
export function parseCheckpoint(src: RandomAccess): Checkpoint {
  const header = readHeader(src);
  const warnings: string[] = [];
  const budget = { left: MAX_TAGS_PER_FILE };
  const groups: Group[] = readGroupTable(src, header).map((entry) => {
    const r = readTagStream(src, header.version, entry, budget);
    warnings.push(...r.warnings);
    return { ...entry, tags: r.tags, complete: r.complete };
  });
  return { file: src.name, fileSize: src.size, magic: header.magic, version: header.version, groups, warnings };
}

export function magicName(magic: number): string {
  return MAGICS.get(magic) ?? 'unknown';
}

export function findGroup(cp: Checkpoint, name: string): Group | undefined {
  return cp.groups.find((g) => g.name === name);
}

/**
 * A group's tags by label (`name[i][j]`), the first of each label winning as in findTag: O(1)
 * lookups where a loop over vCPUs or regions would otherwise scan the group each time.
 */
export function indexTags(group: Group | undefined): Map<string, Tag> {
  const index = new Map<string, Tag>();
  for (const t of group?.tags ?? []) if (!index.has(tagLabel(t))) index.set(tagLabel(t), t);
  return index;
}

/** First tag of that name and indices in the first group of that name. */
export function findTag(cp: Checkpoint, group: string, name: string, indices: number[] = []): Tag | undefined {
  return findGroup(cp, group)?.tags.find(
    (t) => t.name === name && t.indices.length === indices.length && t.indices.every((v, i) => v === indices[i]),
  );
}

/** An inline tag's value as an unsigned integer (1, 2, 4 or 8 bytes), else undefined. */
export function tagUint(tag: Tag | undefined): number | undefined {
  if (!tag?.inline) return undefined;
  return safeNumber(uintLE(tag.inline, 0, tag.inline.length));
}

/**
 * The value text vmwareinfo shows for an inline tag: 1- and 2-byte values in decimal, 4- and
 * 8-byte ones in hex; null for every other size and for blocks.
 */
export function tagValueText(tag: Tag): string | null {
  const b = tag.inline;
  if (!b) return null;
  const v = uintLE(b, 0, b.length);
  if (v === undefined) return null;
  return b.length <= 2 ? String(v) : '0x' + v.toString(16);
}

export function tagPath(group: string, tag: Tag): string {
  return `${group}/${tagLabel(tag)}`;
}
