import { UsageError, VmssError } from '../errors';
import type { PageCache } from '../cache/pagecache';
import { evidenceFiles, type Evidence } from '../evidence/evidence';
import { folderFiles, folderVmem, openFolder, unlockFolderKeys, type FolderKeys, type VmFolder } from '../evidence/folder/folder';
import type { OpenOptions } from '../evidence/open';
import { encryptedFiles } from '../evidence/snapshot';
import type { Source } from '../io/source';
import { buildTree } from '../tree/build';
import { buildFolderTree } from '../tree/folder';
import type { Node } from '../tree/nodes';
import { lookupPath, type Tree } from '../tree/tree';
import { naming, openNamedCheckpoint } from './named';

export type { OpenOptions } from '../evidence/open';

/** A folder is served whole: --vmem, which names one checkpoint's memory, is refused with it. */
function namesFolder(arg: string, vmem: string | undefined): boolean {
  if (naming(arg).kind !== 'folder') return false;
  if (vmem !== undefined) throw new UsageError(folderVmem(arg));
  return true;
}

/**
 * What the user named, opened: a VM folder, or one piece of evidence (a checkpoint, its .vmem,
 * a guest dump, or VMDIR:NAME) with the warnings that are its own.
 */
export type Opened = { kind: 'folder'; folder: VmFolder } | { kind: 'evidence'; evidence: Evidence; warnings: string[]; close(): void };

/** Open what `arg` names without building a tree (`vmssfs info`). */
export function openNamed(arg: string, opts: OpenOptions = {}): Opened {
  if (namesFolder(arg, opts.vmem)) return { kind: 'folder', folder: openFolder(arg, { keys: opts.keys, budget: opts.budget }) };
  const named = openNamedCheckpoint(arg, opts);
  return { kind: 'evidence', evidence: named.snap, warnings: named.warnings, close: named.close };
}

/**
 * Ask for the key an encrypted target needs (a password prompt, while the terminal is ours),
 * without opening the evidence: the mount command does this before it detaches its daemon.
 */
export function unlockTarget(arg: string, opts: { vmem?: string; keys: FolderKeys; http?: OpenOptions['http'] }): void {
  if (namesFolder(arg, opts.vmem)) {
    unlockFolderKeys(arg, opts.keys);
    return;
  }
  const named = naming(arg);
  if (named.kind === 'folder-checkpoint') {
    // VMDIR:NAME: the folder's key, as for the whole folder.
    unlockFolderKeys((named.splits[0] as { dir: string }).dir, opts.keys);
    return;
  }
  const encrypted = encryptedFiles(arg, { vmem: opts.vmem, http: opts.http });
  if (encrypted.length > 0) opts.keys.dataKey(encrypted[0] as string);
}

/** What is served for a name: the tree, the files it reads, and what to tell the user about them. */
export interface Target {
  tree: Tree;
  /** The evidence, or null for a VM folder (a tree of checkpoint trees). */
  evidence: Evidence | null;
  /** The path the user named, as the mount's fsname shows it. */
  source: string;
  /** Every evidence file the tree reads: the tree grants no more than they do, and a log is never one of them. */
  files: Source[];
  /** Warnings about the evidence and the tree, in the order they are told. */
  warnings: string[];
  close(): void;
}

/** Every warning of a folder, as the mount and the commands print them: the folder's, then each served checkpoint's. */
export function folderWarnings(folder: VmFolder): string[] {
  const out = [...folder.warnings];
  for (const c of folder.checkpoints) {
    if (c.snap === null) continue;
    for (const w of c.snap.warnings) out.push(`${c.directory}: ${w}`);
    if (c.snap.physmemError) out.push(`${c.directory}: physmem.raw is not served: ${c.snap.physmemError}`);
  }
  return out;
}

/**
 * Open what `arg` names and build the tree that is served from it over `cache`: a single piece of
 * evidence (VMDIR:NAME too), or a VM folder. The mount and every command that reads the tree start here. The
 * decoding layers' caches draw from the cache's budget: one bound for all.
 */
export function openTarget(arg: string, opts: OpenOptions, cache: PageCache): Target {
  const opened = openNamed(arg, { ...opts, budget: cache.budget });
  if (opened.kind === 'folder') {
    const folder = opened.folder;
    try {
      const tree = buildFolderTree(folder, cache);
      const warnings = [...folderWarnings(folder), ...(tree.notes ?? [])];
      return { tree, evidence: null, source: folder.dir, files: folderFiles(folder), warnings, close: folder.close };
    } catch (err) {
      folder.close();
      throw err;
    }
  }
  const snap = opened.evidence;
  try {
    const tree = buildTree(snap, cache);
    const warnings = [...opened.warnings, ...(snap.physmemError ? [`physmem.raw is not served: ${snap.physmemError}`] : []), ...(tree.notes ?? [])];
    return { tree, evidence: snap, source: snap.metaFile.name, files: evidenceFiles(snap), warnings, close: opened.close };
  } catch (err) {
    opened.close();
    throw err;
  }
}

/** The node at `path` (slash-separated, relative to the root, as a shell takes it), or the one-line error. */
export function findNode(tree: Tree, path: string): Node {
  const node = lookupPath(tree.root, path);
  if (!node) throw new VmssError(`${path}: no such file in the tree`);
  return node;
}
