import type { Evidence } from '../evidence/evidence';
import { findTag, type Checkpoint } from '../format/checkpoint';
import type { Tag } from '../format/tags';
import { tagLabel } from '../format/tags';
import type { PageCache } from '../cache/pagecache';
import type { TextDoc } from '../evidence/textdoc';
import { elfView } from './views/elf';
import { limeView, type View } from './views/lime';
import { escapeName, uniqueNames } from './names';
import { BytesFile, DocFile, ExtentFile, type DirNode, type FileNode, type Node } from './nodes';
import { TagFile } from './tagfile';

/** The read-only tree a snapshot presents, independent of how it is served (FUSE, ls/cat/extract). */
export interface Tree {
  readonly root: DirNode;
  /** Every file and directory's time: the snapshot file's mtime. */
  readonly mtime: Date;
  lookup(path: string): Node | undefined;
  /** What building the views found worth telling (missing CPU state...); also in info.txt and metadata.json warnings. */
  readonly notes?: readonly string[];
}

/** config.vmx is read whole at build time to trim its NUL padding; a larger cfgFile is not a .vmx. */
const CONFIG_MAX = 16 * 1024 * 1024;

class Builder {
  constructor(private readonly snap: Evidence, private readonly cache: PageCache, private nextIno: number) {}

  ino(): number {
    return this.nextIno++;
  }

  dir(): DirNode {
    return { kind: 'dir', ino: this.ino(), children: new Map() };
  }

  bytes(data: Buffer): FileNode {
    return new BytesFile(this.ino(), data);
  }

  /** Generated text (info.txt, metadata.json), made again when read. */
  text(doc: TextDoc): FileNode {
    return new DocFile(this.ino(), doc);
  }

  /** A block tag's stored bytes, served lazily from the snapshot file through the cache. */
  block(tag: Tag): FileNode {
    const src = this.snap.metaFile;
    return new ExtentFile(this.ino(), [{ start: 0, length: tag.size, source: src, sourceOffset: tag.dataOffset }], tag.size, this.cache);
  }

  tagFile(tag: Tag): FileNode {
    return new TagFile(this.ino(), tag, this.snap.metaFile, this.cache);
  }

  configVmx(cp: Checkpoint): FileNode | null {
    const tag = findTag(cp, 'Snapshot', 'cfgFile');
    if (!tag || tag.compressed || tag.size > CONFIG_MAX) return null;
    let data = tag.inline;
    if (!data) {
      data = Buffer.alloc(tag.size);
      this.snap.metaFile.readAtSync(data, tag.dataOffset);
    }
    let end = data.length;
    while (end > 0 && data[end - 1] === 0) end--;
    return this.bytes(data.subarray(0, end));
  }

  screenshot(cp: Checkpoint): FileNode | null {
    const tag = findTag(cp, 'MKSVMX', 'imageData');
    if (!tag || tag.compressed) return null;
    return tag.block ? this.block(tag) : this.bytes(tag.inline ?? Buffer.alloc(0));
  }

  physmem(): FileNode | null {
    const pm = this.snap.physmem;
    if (!pm) return null;
    const extents = pm.map.segments.map((r) => ({ start: r.start, length: r.length, source: pm.file, sourceOffset: r.fileOffset }));
    return new ExtentFile(this.ino(), extents, pm.size, this.cache);
  }

  /** physmem.lime / physmem.elf: headers in hand, run bytes through the cache like physmem.raw. */
  view(v: View | null): FileNode | null {
    return v && new ExtentFile(this.ino(), v.extents, v.size, this.cache);
  }

  groups(cp: Checkpoint): DirNode {
    const dir = this.dir();
    const groups = cp.groups;
    const names = uniqueNames(groups.map((g) => escapeName(g.name)));
    groups.forEach((g, i) => {
      const gdir = this.dir();
      const tagNames = uniqueNames(g.tags.map((t) => escapeName(tagLabel(t))));
      g.tags.forEach((t, j) => gdir.children.set(tagNames[j] as string, this.tagFile(t)));
      dir.children.set(names[i] as string, gdir);
    });
    return dir;
  }
}

export interface BuildOptions {
  /** Inode number of the root (default 1); the tree numbers onwards from it. A VM folder's
   * subtrees each start past the last, so numbers stay unique across the whole mount. */
  firstIno?: number;
}

/** The tree of any evidence: memory and its views, info.txt and metadata.json, and the checkpoint's tags when it has them. */
export function buildTree(snap: Evidence, cache: PageCache, opts: BuildOptions = {}): Tree {
  const b = new Builder(snap, cache, opts.firstIno ?? 1);
  const root = b.dir();
  const add = (name: string, node: Node | null): void => {
    if (node) root.children.set(name, node);
  };
  // The views' notes join the warnings of info.txt and metadata.json (a copy: the snapshot's own
  // list stays what `vmssfs info` prints).
  const lime = snap.physmem && limeView(snap.physmem);
  const elf = elfView(snap.physmem, snap.cpuState());
  const notes = [...(lime?.notes ?? []), ...(elf?.notes ?? [])];
  const warnings = [...snap.warnings, ...notes];
  const cp = snap.checkpoint;
  // Nodes are made in the order that existed before the views, so earlier inode numbers stay put;
  // the views are listed next to physmem.raw.
  const physmem = b.physmem();
  const config = cp && b.configVmx(cp);
  const screenshot = cp && b.screenshot(cp);
  const infoTxt = b.text(snap.infoTextDoc(warnings));
  const metadata = b.text(snap.infoJsonDoc(warnings));
  const groups = cp && b.groups(cp);
  add('physmem.raw', physmem);
  add('physmem.lime', b.view(lime));
  add('physmem.elf', b.view(elf));
  add('config.vmx', config);
  add('screenshot.png', screenshot);
  add('info.txt', infoTxt);
  add('metadata.json', metadata);
  add('groups', groups);
  return {
    root,
    mtime: snap.metaFile.mtime,
    notes,
    lookup(path: string): Node | undefined {
      let node: Node = root;
      // As a shell path would be: `./info.txt`, `groups//cpu/` (tree names are never `.`).
      for (const part of path.split('/')) {
        if (part === '' || part === '.') continue;
        if (node.kind !== 'dir') return undefined;
        const next = node.children.get(part);
        if (!next) return undefined;
        node = next;
      }
      return node;
    },
  };
}
