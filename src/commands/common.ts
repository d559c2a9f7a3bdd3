import { VmssError } from '../errors';
import { PageCache, SourceReadError } from '../pagecache';
import { openSnapshot, type OpenOptions, type Snapshot } from '../snapshot';
import { buildTree, type Tree } from '../tree/build';
import type { FileNode, Node } from '../tree/nodes';

/** Same bound as the mount's default --cache-size: these commands read mostly sequentially. */
const CACHE_BYTES = 64 * 1024 * 1024;

/** Bytes per read/write when streaming a file: big enough for throughput, small enough to never matter in memory. */
export const CHUNK = 1024 * 1024;

export interface OpenTree {
  snap: Snapshot;
  tree: Tree;
  close(): void;
}

/**
 * The tree the mount would serve, built the same way (buildTree over a PageCache), for the
 * commands that work without FUSE. Warnings go to stderr as the mount prints them.
 */
export function openTree(snapshot: string, vmem: string | undefined, keys?: OpenOptions['keys']): OpenTree {
  const snap = openSnapshot(snapshot, { vmem, keys });
  try {
    const tree = buildTree(snap, new PageCache({ maxBytes: CACHE_BYTES }));
    for (const w of [...snap.warnings, ...(tree.notes ?? [])]) process.stderr.write(`vmssfs: warning: ${w}\n`);
    if (snap.physmemError) process.stderr.write(`vmssfs: warning: physmem.raw is not served: ${snap.physmemError}\n`);
    return { snap, tree, close: () => snap.close() };
  } catch (err) {
    snap.close();
    throw err;
  }
}

/** The node at `path` (slash-separated, relative to the root), or the CLI's one-line error. */
export function lookup(tree: Tree, path: string): Node {
  const node = tree.lookup(path);
  if (!node) throw new VmssError(`${path}: no such file in the tree`);
  return node;
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
