import type { PageCache } from '../cache/pagecache';
import { buildTree, type Tree } from './build';
import { BytesFile, type DirNode, type Node } from './nodes';
import type { VmFolder } from '../evidence/folder/folder';
import { snapshotsJsonText, snapshotsText } from '../evidence/folder/report';

function maxIno(node: Node): number {
  if (node.kind === 'file') return node.ino;
  let m = node.ino;
  for (const c of node.children.values()) m = Math.max(m, maxIno(c));
  return m;
}

/**
 * A VM folder's tree: snapshots.json and snapshots.txt, then one directory per served checkpoint
 * holding exactly the tree a mount of that checkpoint alone presents. Each subtree is numbered
 * on from the last, so inode numbers are unique across the mount; all share one page cache.
 */
export function buildFolderTree(folder: VmFolder, cache: PageCache): Tree {
  const root: DirNode = { kind: 'dir', ino: 1, children: new Map() };
  root.children.set('snapshots.json', new BytesFile(2, Buffer.from(snapshotsJsonText(folder))));
  root.children.set('snapshots.txt', new BytesFile(3, Buffer.from(snapshotsText(folder))));
  let next = 4;
  const notes: string[] = [];
  for (const c of folder.checkpoints) {
    if (c.snap === null || c.directory === null) continue;
    const sub = buildTree(c.snap, cache, { firstIno: next });
    next = maxIno(sub.root) + 1;
    root.children.set(c.directory, sub.root);
    for (const n of sub.notes ?? []) notes.push(`${c.directory}: ${n}`);
  }
  return {
    root,
    mtime: folder.mtime,
    notes,
    lookup(path: string): Node | undefined {
      let node: Node = root;
      for (const part of path.split('/')) {
        if (part === '') continue;
        if (node.kind !== 'dir') return undefined;
        const next = node.children.get(part);
        if (!next) return undefined;
        node = next;
      }
      return node;
    },
  };
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
