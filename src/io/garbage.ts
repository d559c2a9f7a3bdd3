import * as v8 from 'node:v8';
import * as vm from 'node:vm';

/**
 * Decryption makes garbage no buffer reuse can avoid: each update() of a Node cipher returns a
 * new buffer (and so does reading a compressed block's stored bytes for the seek pass). V8 collects such buffers only once external memory has grown by tens of MiB since
 * its last collection, and until then they count in the daemon's RSS on top of the cache budget
 * (measured: 162 MiB peak with a 64 MiB budget, 141 with this). They die young, so a minor
 * collection (the young generation only: well under a millisecond here) after every
 * GARBAGE_STEP bytes of them keeps that garbage small.
 */
const GARBAGE_STEP = 4 * 1024 * 1024;

type Collect = (opts: { type: 'minor' | 'major' }) => void;

let collect: Collect | null | undefined;
let pending = 0;

/** The collector's entry point, exposed to a fresh context (the main one stays as it was); null if unavailable. */
function collector(): Collect | null {
  if (collect !== undefined) return collect;
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc: unknown = vm.runInNewContext('gc');
    collect = typeof gc === 'function' ? (gc as Collect) : null;
  } catch {
    collect = null;
  }
  return collect;
}

/** Say that `bytes` of short-lived buffers were just dropped; collects the young generation every GARBAGE_STEP. */
export function droppedGarbage(bytes: number): void {
  pending += bytes;
  if (pending < GARBAGE_STEP) return;
  pending = 0;
  collector()?.({ type: 'minor' });
}
