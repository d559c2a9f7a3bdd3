import { UsageError, VmssError } from '../errors';
import { folderFiles, folderVmem, isDirectory, openFolder } from '../evidence/folder/folder';
import { openNamedCheckpoint } from '../target/named';
import { buildFolderTree, folderWarnings } from '../tree/folder';
import { PageCache, SourceReadError } from '../cache/pagecache';
import { evidenceFiles, type Evidence } from '../evidence/evidence';
import type { Source } from '../io/source';
import type { OpenOptions } from '../evidence/open';
import { buildTree, type Tree } from '../tree/build';
import type { FileNode, Node } from '../tree/nodes';

/** Same bound as the mount's default --cache-size: these commands read mostly sequentially. */
const CACHE_BYTES = 64 * 1024 * 1024;

/** Bytes per read/write when streaming a file: big enough for throughput, small enough to never matter in memory. */
export const CHUNK = 1024 * 1024;

export interface OpenTree {
  /** The evidence, or null for a VM folder (a tree of checkpoint trees). */
  snap: Evidence | null;
  /** Every evidence file the tree reads: its modes are theirs, as the mount shows them. */
  files: Source[];
  tree: Tree;
  close(): void;
}

/**
 * The tree the mount would serve, built the same way (buildTree over a PageCache), for the
 * commands that work without FUSE. Warnings go to stderr as the mount prints them.
 */
export function openTree(snapshot: string, opts: OpenOptions): OpenTree {
  if (isDirectory(snapshot)) return openFolderTree(snapshot, opts);
  // One budget for the page cache and the decoding layers beneath it, as the mount has.
  const cache = new PageCache({ maxBytes: CACHE_BYTES });
  // A file, or VMDIR:NAME: one checkpoint of a VM folder.
  const named = openNamedCheckpoint(snapshot, { ...opts, budget: cache.budget });
  const snap = named.snap;
  try {
    const tree = buildTree(snap, cache);
    for (const w of [...named.warnings, ...(tree.notes ?? [])]) process.stderr.write(`vmssfs: warning: ${w}\n`);
    if (snap.physmemError) process.stderr.write(`vmssfs: warning: physmem.raw is not served: ${snap.physmemError}\n`);
    return { snap, tree, files: evidenceFiles(snap), close: named.close };
  } catch (err) {
    named.close();
    throw err;
  }
}

/** The path components of a tree path as the user wrote it: `./groups//cpu/` is `groups`, `cpu`. */
export function treeParts(treePath: string): string[] {
  return treePath.split('/').filter((p) => p !== '' && p !== '.');
}

function openFolderTree(dir: string, opts: OpenOptions): OpenTree {
  if (opts.vmem !== undefined) throw new UsageError(folderVmem(dir));
  const cache = new PageCache({ maxBytes: CACHE_BYTES });
  const folder = openFolder(dir, { keys: opts.keys, budget: cache.budget });
  try {
    const tree = buildFolderTree(folder, cache);
    for (const w of [...folderWarnings(folder), ...(tree.notes ?? [])]) process.stderr.write(`vmssfs: warning: ${w}\n`);
    return { snap: null, tree, files: folderFiles(folder), close: folder.close };
  } catch (err) {
    folder.close();
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
