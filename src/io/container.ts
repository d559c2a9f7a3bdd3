/**
 * VMware's compressed memory container: a chain of blocks, each a 16-byte header (u32
 * uncompressed size, u32 0, u32 stored size, u32 0) and its stored bytes. This file indexes the
 * chain and decides whether a memory file is one (docs/format.md, "Compressed memory files").
 */

/** VMware's block: 4 MiB of memory, the last one of a file shorter. */
export const MAX_BLOCK = 0x400000;
export const HEADER = 16;

export interface BlockEntry {
  /** Offset of the block's payload in the container. */
  dataOffset: number;
  /** Stored bytes after the header. */
  stored: number;
  /** Offset of the block's output in the decompressed stream. */
  start: number;
  size: number;
  /** Stored uncompressed (stored size = size). */
  raw: boolean;
}

export interface ContainerIndex {
  blocks: BlockEntry[];
  /** Bytes of the stream the intact chain describes. */
  decodedSize: number;
  /** Bytes of the container the indexed blocks occupy (headers included). */
  storedSize: number;
  /** Why the chain stops before the end of the file, or null when it runs to the end. */
  stop: string | null;
  /** The chain stops only because the file does: a last block (or header) cut short. */
  cut: boolean;
}

interface Readable {
  readAtSync(buf: Buffer, position: number): number;
  size: number;
}

/** A header that fits the container's rules, or null. */
function readHeader(h: Buffer): { size: number; stored: number } | null {
  if (h.length < HEADER) return null;
  const size = h.readUInt32LE(0);
  const stored = h.readUInt32LE(8);
  if (h.readUInt32LE(4) !== 0 || h.readUInt32LE(12) !== 0) return null;
  if (size === 0 || size > MAX_BLOCK || stored === 0 || stored > size) return null;
  return { size, stored };
}

/**
 * Walk the chain of headers from the start. Each header is checked before it is believed, each
 * step moves forward by at least 17 bytes, and every block but the last is as long as the first
 * (VMware's blocks are all 4 MiB but the last): the walk ends within size / 17 steps whatever the
 * headers claim.
 */
export function indexContainer(src: Readable): ContainerIndex {
  const blocks: BlockEntry[] = [];
  const h = Buffer.alloc(HEADER);
  let pos = 0;
  let start = 0;
  let stop: string | null = null;
  let cut = false;
  let last = false;
  while (pos < src.size) {
    const got = src.readAtSync(h, pos);
    const e = readHeader(h.subarray(0, got));
    if (!e) {
      // A short read is where the readable bytes end (a file cut short, or an encrypted one whose
      // pages stop before its logical size): a cut, not a header that fails.
      cut = got < HEADER;
      stop = got < HEADER ? `its block header at byte ${pos} is cut short` : `its block header at byte ${pos} is not a valid one`;
      break;
    }
    const first = blocks[0];
    if (first && (last || e.size > first.size)) {
      stop = `block ${blocks.length} (header at byte ${pos}) follows a block shorter than the first: only the last block may be shorter`;
      break;
    }
    if (pos + HEADER + e.stored > src.size) {
      cut = true;
      stop = `block ${blocks.length} (stored at byte ${pos}) runs past the end of the file`;
      break;
    }
    last = first !== undefined && e.size < first.size;
    blocks.push({ dataOffset: pos + HEADER, stored: e.stored, start, size: e.size, raw: e.stored === e.size });
    start += e.size;
    pos += HEADER + e.stored;
  }
  return { blocks, decodedSize: start, storedSize: pos, stop, cut };
}

export type Recognition = { compressed: true; index: ContainerIndex } | { compressed: false; why: string | null };

/**
 * Whether `src` holds VMware's compressed block container. Its first header must fit (and its
 * payload open as a FastLZ level-2 block, unless stored raw), every header must parse, their
 * chain must run to the end of the file (a last block cut short is a truncated copy: served up
 * to the cut and reported), and, unless cut short, the blocks must decode to the size the
 * memory group needs (`need`, when known). A guest controls its page 0, so a plain memory file
 * may well begin with what looks like two headers: anything less than all of this is plain
 * memory, and `why` says what did not fit (null when not even the first header did).
 */
export function recogniseContainer(src: Readable, need: number | null): Recognition {
  const h = Buffer.alloc(HEADER + 1);
  const got = src.readAtSync(h, 0);
  const first = readHeader(h.subarray(0, Math.min(got, HEADER)));
  if (!first || got <= HEADER) return { compressed: false, why: null };
  if (first.stored < first.size && (h[HEADER] as number) >> 5 > 1) return { compressed: false, why: null };
  const opening = 'its first bytes look like a compressed block header, but';
  if (need !== null && src.size === need) {
    return { compressed: false, why: `${opening} it is exactly the ${need} bytes the memory group needs as plain memory` };
  }
  const index = indexContainer(src);
  if (index.stop !== null && !index.cut) return { compressed: false, why: `${opening} ${index.stop}` };
  if (!index.cut && need !== null && index.decodedSize !== need) {
    return { compressed: false, why: `${opening} its ${index.blocks.length} blocks decode to ${index.decodedSize} bytes where the memory group needs ${need}` };
  }
  return { compressed: true, index };
}

/** Whether `src` holds the container (recogniseContainer without knowing the size needed). */
export function looksLikeBlockStream(src: Readable): boolean {
  return recogniseContainer(src, null).compressed;
}
