import type { PhysMem } from '../../evidence/evidence';
import type { Extent } from '../nodes';

/**
 * LiME (Linux Memory Extractor) "lime" format: for each run of memory, a 32-byte header
 *   u32 magic 0x4C694D45 ("EMiL" on disk), u32 version 1,
 *   u64 s_addr (first guest-physical byte), u64 e_addr (last byte, inclusive), u8 reserved[8]
 * followed by the run's bytes. Holes are simply not stored.
 */
export const LIME_MAGIC = 0x4c694d45;
export const LIME_VERSION = 1;
export const LIME_HEADER_SIZE = 32;

export interface View {
  extents: Extent[];
  /** Exact size of the assembled file. */
  size: number;
  /** Things the user should know about this view (missing CPU state, guesses). */
  notes: string[];
}

function limeHeader(start: number, length: number): Buffer {
  const h = Buffer.alloc(LIME_HEADER_SIZE);
  h.writeUInt32LE(LIME_MAGIC, 0);
  h.writeUInt32LE(LIME_VERSION, 4);
  h.writeBigUInt64LE(BigInt(start), 8);
  h.writeBigUInt64LE(BigInt(start + length - 1), 16);
  return h;
}

/** /physmem.lime: headers in hand, run bytes read lazily from the memory file. */
export function limeView(pm: PhysMem): View {
  const extents: Extent[] = [];
  let at = 0;
  for (const r of pm.map.segments) {
    extents.push({ start: at, length: LIME_HEADER_SIZE, bytes: limeHeader(r.start, r.length) });
    at += LIME_HEADER_SIZE;
    extents.push({ start: at, length: r.length, source: pm.file, sourceOffset: r.fileOffset });
    at += r.length;
  }
  return { extents, size: at, notes: [] };
}
