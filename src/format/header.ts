import { VmssError } from '../errors';
import type { RandomAccess } from '../io/source';
import { Cursor, readUint } from './cursor';
import { hex } from './integers';
import { describeContent, SNIFF_BYTES } from './sniff';

/**
 * Checkpoint magics seen in the public readers. The low nibble is the format version:
 * version 0 stores block sizes as 32-bit words, every other version as 64-bit.
 */
export const MAGICS: ReadonlyMap<number, string> = new Map([
  [0xbed2bed2, 'current'],
  [0xbed3bed3, 'partial'],
  [0xbad1bad1, 'restored'],
  [0xbad2bad2, 'not restorable'],
  [0xbed2bed0, 'old'],
  [0xbed0bed0, 'old'],
  [0xbed1bed1, 'restored'],
]);

export const HEADER_SIZE = 12;
export const GROUP_ENTRY_SIZE = 80;
const GROUP_NAME_SIZE = 64;
/** Real checkpoints hold about a hundred groups; far more means the count field is garbage. */
export const MAX_GROUPS = 10_000;

export interface Header {
  magic: number;
  version: number;
  groupCount: number;
}

export interface GroupEntry {
  /** Position in the group table. */
  index: number;
  name: string;
  /** File offset of the 80-byte table entry. */
  tableOffset: number;
  /** File offset of the group's first tag. */
  tagsOffset: number;
  /** Declared length of the tag stream; null when the field exceeds 2^53 (garbage). */
  size: number | null;
}

/** Read and validate the 12-byte header; throws VmssError naming the file on anything fatal. */
export function readHeader(src: RandomAccess): Header {
  if (src.size === 0) throw new VmssError(`${src.name}: empty file, not a VMware checkpoint`);
  const buf = Buffer.alloc(HEADER_SIZE);
  const got = src.readAtSync(buf, 0);
  if (got < HEADER_SIZE) {
    throw new VmssError(`${src.name}: only ${got} bytes, too short for a VMware checkpoint header (12 bytes)`);
  }
  const magic = buf.readUInt32LE(0);
  if (!MAGICS.has(magic)) {
    const head = Buffer.alloc(Math.min(SNIFF_BYTES, src.size));
    const what = describeContent(head.subarray(0, src.readAtSync(head, 0)));
    throw new VmssError(`${src.name}: not a VMware checkpoint (${what ?? `magic ${hex(magic, 8)} is none of the known .vmss/.vmsn magics`})`);
  }
  const groupCount = buf.readUInt32LE(8);
  if (groupCount > MAX_GROUPS) {
    throw new VmssError(`${src.name}: absurd group count ${groupCount} (more than ${MAX_GROUPS}): the header is damaged`);
  }
  const tableEnd = HEADER_SIZE + groupCount * GROUP_ENTRY_SIZE;
  if (tableEnd > src.size) {
    throw new VmssError(
      `${src.name}: group table of ${groupCount} groups ends at ${hex(tableEnd)}, beyond the end of the file (${hex(src.size)}): truncated or damaged`,
    );
  }
  return { magic, version: magic & 0xf, groupCount };
}

/** Decode the group table that follows the header. */
export function readGroupTable(src: RandomAccess, header: Header): GroupEntry[] {
  const cur = new Cursor(src, HEADER_SIZE, HEADER_SIZE + header.groupCount * GROUP_ENTRY_SIZE);
  const groups: GroupEntry[] = [];
  for (let index = 0; index < header.groupCount; index++) {
    const tableOffset = cur.pos;
    const entry = cur.take(GROUP_ENTRY_SIZE);
    if (!entry) break; // unreachable: readHeader checked the table fits
    const nul = entry.indexOf(0);
    const name = entry.toString('utf8', 0, nul >= 0 && nul < GROUP_NAME_SIZE ? nul : GROUP_NAME_SIZE);
    groups.push({
      index,
      name,
      tableOffset,
      tagsOffset: readUint(entry, 64, 8) ?? Number.MAX_SAFE_INTEGER,
      size: readUint(entry, 72, 8),
    });
  }
  return groups;
}
