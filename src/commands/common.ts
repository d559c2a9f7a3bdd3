import { VmssError } from '../errors';
import { DEFAULT_CACHE_BYTES } from '../cache/budget';
import { PageCache, SourceReadError } from '../cache/pagecache';
import { openTarget, type OpenOptions, type Target } from '../target/target';
import type { FileNode } from '../tree/nodes';

export { findNode as lookup } from '../target/target';
export { pathParts as treeParts } from '../tree/tree';

/** Bytes per read/write when streaming a file: big enough for throughput, small enough to never matter in memory. */
export const CHUNK = 1024 * 1024;

/**
 * The tree the mount would serve, built the same way (openTarget over a PageCache), for the
 * commands that work without FUSE. Warnings go to stderr as the mount prints them.
 */
// The mount's default --cache-size bounds them: these commands read mostly sequentially.
export function openTree(snapshot: string, opts: OpenOptions): Target {
  const t = openTarget(snapshot, opts, new PageCache({ maxBytes: DEFAULT_CACHE_BYTES }));
  for (const w of t.warnings) process.stderr.write(`vmssfs: warning: ${w}\n`);
  return t;
}

/** A file read; a failing evidence read becomes the one-line error it already is. */
export async function readChunk(file: FileNode, dst: Buffer, position: number, length: number): Promise<number> {
  try {
    return await file.read(dst, position, length);
  } catch (err) {
    if (err instanceof SourceReadError) throw new VmssError(err.message);
    throw err;
  }
}
