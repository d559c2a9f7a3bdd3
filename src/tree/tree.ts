import type { DirNode, Node } from './nodes';

/** The read-only tree a snapshot presents, independent of how it is served (FUSE, ls/cat/extract). */
export interface Tree {
  readonly root: DirNode;
  /** Every file and directory's time: the snapshot file's mtime. */
  readonly mtime: Date;
  lookup(path: string): Node | undefined;
  /** What building the views found worth telling (missing CPU state...); also in info.txt and metadata.json warnings. */
  readonly notes?: readonly string[];
}

/** The components of a tree path as a shell would take them: `./groups//cpu/` is `groups`, `cpu` (tree names are never `.`). */
export function pathParts(path: string): string[] {
  return path.split('/').filter((p) => p !== '' && p !== '.');
}

/** The node at `path` under `root`, or undefined: the one walk every tree's lookup is. */
export function lookupPath(root: DirNode, path: string): Node | undefined {
  let node: Node = root;
  for (const part of pathParts(path)) {
    if (node.kind !== 'dir') return undefined;
    const next = node.children.get(part);
    if (!next) return undefined;
    node = next;
  }
  return node;
}

/** A tree over `root`: checkpoint trees and folder trees alike look paths up with lookupPath. */
export function treeOf(root: DirNode, mtime: Date, notes: readonly string[]): Tree {
  return { root, mtime, notes, lookup: (path) => lookupPath(root, path) };
}
