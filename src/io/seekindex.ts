/**
 * Random access into VMware's compressed memory stream by a seek index, as zlib's zran.c,
 * indexed_gzip and rapidgzip do for gzip, fitted to this format. One pass decodes the stream
 * and records, every SPACING bytes of output, a seek point: where the tokens resume (block and
 * offset in its stored bytes, always a token boundary) and a sparse window: only the bytes
 * before the point that the tokens up to the next point copy, usually far fewer than the 72 KiB
 * a match may reach, and zero runs kept as a length. A read then decodes from the nearest point
 * before it to the next point after it: a bounded amount of work wherever it lands.
 *
 * Block headers give every block's start, but a block's first tokens copy from the one before,
 * so the pass runs block after block: each block decodes on libuv's thread pool (the native
 * decoder; JavaScript when the addon is absent), then a walk over its control bytes on the event
 * loop records its points (setImmediate between blocks), while reads it has not reached yet are
 * served the other way. Decoding blocks in parallel, rapidgzip's way (markers for the unknown
 * history, resolved afterwards), would gain little on two cores shared with the readers.
 * The index lives in memory only, within an allowance the caller gives; past it, the spacing
 * doubles and the points recorded so far are merged pairwise.
 *
 * seekindex-contract.ts holds what both indexes share; seekindex-native.ts wraps the index in C
 * (native/seekindex.c), seekindex-js.ts is the same design in JavaScript, for when the addon
 * cannot load.
 */
import { type BlockIndex, type IndexHost } from './seekindex-contract';
import { SeekIndex } from './seekindex-js';
import { NativeSeekIndex } from './seekindex-native';

export { type BlockIndex, type IndexHost, type ReadStored, type ReadStoredSync } from './seekindex-contract';
export { SeekIndex, SPACING } from './seekindex-js';
export { NativeSeekIndex } from './seekindex-native';

/** The seek index for a stream: in C when the addon is there, else in JavaScript. */
export function createSeekIndex(host: IndexHost): BlockIndex {
  return NativeSeekIndex.create(host) ?? new SeekIndex(host);
}
