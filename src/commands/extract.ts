import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError } from '../errors';
import { errnoText } from '../io/source';
import type { OpenOptions } from '../evidence/open';
import type { Tree } from '../tree/build';
import type { DirNode, FileNode, Node } from '../tree/nodes';
import { CHUNK, lookup, openTree, readChunk, treeParts } from './common';
import { Progress } from './progress';

/**
 * Left out of a plain `extract` (no PATH): they hold the same guest memory as physmem.raw, laid
 * out for other tools, and would triple the output. Name them to get them.
 */
export const DERIVED_VIEWS: ReadonlySet<string> = new Set(['physmem.lime', 'physmem.elf']);

/** Below this, a copy is over before a progress bar would tell anyone anything. */
const PROGRESS_MIN_BYTES = 8 * 1024 * 1024;

const ZEROS = Buffer.alloc(CHUNK);

interface Item {
  /** Path inside the tree, '/'-separated, also the path under OUTDIR. */
  treePath: string;
  node: Node;
}

function totalBytes(node: Node): number {
  if (node.kind === 'file') return node.size;
  let sum = 0;
  for (const c of node.children.values()) sum += totalBytes(c);
  return sum;
}

/** Holes are made of whole filesystem blocks: look for zeros a page at a time. */
const SPARSE_UNIT = 4096;

/**
 * The [from, to) stretches of `chunk` (which sits at file offset `pos`) to write: everything but
 * all-zero pages, aligned to file pages so the skipped ones can become holes. A chunk of zeros
 * (most of physmem.raw's holes) costs one comparison.
 */
function dataSpans(chunk: Buffer, pos: number): [number, number][] {
  if (chunk.equals(chunk.length === CHUNK ? ZEROS : ZEROS.subarray(0, chunk.length))) return [];
  const spans: [number, number][] = [];
  let from = 0;
  while (from < chunk.length) {
    const to = Math.min(chunk.length, from + SPARSE_UNIT - ((pos + from) % SPARSE_UNIT));
    const zero = chunk.subarray(from, to).equals(ZEROS.subarray(0, to - from));
    const last = spans[spans.length - 1];
    if (!zero) {
      if (last && last[1] === from) last[1] = to;
      else spans.push([from, to]);
    }
    from = to;
  }
  return spans;
}

/**
 * A file of the tree whose evidence could not be read (a truncated encrypted file, a bad sector):
 * its partial copy is removed, it is named, and the extract goes on with the rest.
 */
class NotRead extends Error {}

/** The exit status of an extract that wrote everything it could read, but not every file. */
export const EXTRACT_INCOMPLETE = 3;

function fail(what: string, err: unknown): never {
  throw new VmssError(`${what}: ${errnoText(err)}`);
}

export interface ExtractOptions extends OpenOptions {
  /** Replace files already at the destination (the entry is removed and made anew, never written through). */
  force?: boolean;
}

/**
 * New files only, never through a link: O_EXCL fails on anything already there, a symbolic link
 * included (a planted `OUTDIR/info.txt -> /etc/passwd` is refused, not written through), and
 * O_NOFOLLOW says so twice. Read-only like the mount's files: the copy is evidence too.
 */
const CREATE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
const FILE_MODE = 0o444;

async function lstatOrNull(p: string): Promise<fs.Stats | null> {
  try {
    return await fs.promises.lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    fail(p, err);
  }
}

/** A directory below OUTDIR: made, or an existing real directory; a link or a file there is refused. */
async function makeDir(dir: string): Promise<void> {
  try {
    await fs.promises.mkdir(dir, 0o755);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') fail(dir, err);
  }
  const st = await lstatOrNull(dir);
  if (st?.isSymbolicLink()) throw new VmssError(`${dir}: is a symbolic link; extract never follows links under OUTDIR`);
  if (!st?.isDirectory()) throw new VmssError(`${dir}: exists and is not a directory`);
}

/** Create `dest` exclusively; with --force, whatever file or link is there is removed first (never followed). */
async function createFile(dest: string, force: boolean): Promise<fs.promises.FileHandle> {
  try {
    return await fs.promises.open(dest, CREATE, FILE_MODE);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') fail(dest, err);
  }
  const st = await lstatOrNull(dest);
  if (st?.isDirectory()) throw new VmssError(`${dest}: exists and is a directory`);
  if (!force) throw new VmssError(`${dest}: already exists (give --force to replace it)`);
  await fs.promises.unlink(dest).catch((err: unknown) => fail(dest, err));
  try {
    return await fs.promises.open(dest, CREATE, FILE_MODE);
  } catch (err) {
    fail(dest, err);
  }
}

/**
 * Copy one file. All-zero chunks are not written and the file is cut to size at the end, so
 * holes (physmem.raw's gaps between runs, unused guest pages) stay holes on disk. A copy that
 * fails (a full disk, a bad sector in the source) is removed: no half file is left to be taken
 * for the whole.
 */
async function copyFile(node: FileNode, dest: string, mtime: Date, force: boolean, progress: Progress | null): Promise<void> {
  const fh = await createFile(dest, force);
  let ok = false;
  try {
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(node.size, 1)));
    for (let pos = 0; pos < node.size; ) {
      const want = Math.min(buf.length, node.size - pos);
      let n: number;
      try {
        n = await readChunk(node, buf, pos, want);
      } catch (err) {
        // Reading the evidence failed: this file is lost, not the extract (a failed write stops it).
        if (err instanceof VmssError) throw new NotRead(err.message);
        throw err;
      }
      if (n === 0) break;
      try {
        for (const [from, to] of dataSpans(buf.subarray(0, n), pos)) {
          for (let off = from; off < to; ) off += (await fh.write(buf, off, to - off, pos + off)).bytesWritten;
        }
      } catch (err) {
        fail(dest, err);
      }
      pos += n;
      progress?.add(n);
    }
    try {
      await fh.truncate(node.size);
      await fh.utimes(mtime, mtime);
      await fh.close();
    } catch (err) {
      fail(dest, err);
    }
    ok = true;
  } finally {
    if (!ok) {
      await fh.close().catch(() => undefined);
      await fs.promises.unlink(dest).catch(() => undefined);
    }
  }
}

function destOf(outDir: string, treePath: string): string {
  // Tree names never hold '/' and are never '.' or '..' (names.ts escapes them), and a PATH was
  // found in the tree: joining stays under OUTDIR.
  return path.join(outDir, ...treeParts(treePath));
}

/** Files of `item` that already exist at their destination (for the refusal before anything is written). */
async function existing(item: Item, outDir: string, found: string[]): Promise<void> {
  if (found.length > 0) return;
  const dest = destOf(outDir, item.treePath);
  if (item.node.kind === 'file') {
    if (await lstatOrNull(dest)) found.push(dest);
    return;
  }
  // A link or a file where a directory goes is refused by makeDir, without looking through it.
  if (!(await lstatOrNull(dest))?.isDirectory()) return;
  for (const [name, child] of item.node.children) await existing({ treePath: `${item.treePath}/${name}`, node: child }, outDir, found);
}

interface CopyRun {
  outDir: string;
  tree: Tree;
  force: boolean;
  progress: Progress | null;
  /** Files that could not be read: named on stderr as they are met. */
  notRead: string[];
}

async function copyNode(item: Item, run: CopyRun): Promise<void> {
  const dest = destOf(run.outDir, item.treePath);
  if (item.node.kind === 'file') {
    try {
      await copyFile(item.node, dest, run.tree.mtime, run.force, run.progress);
    } catch (err) {
      if (!(err instanceof NotRead)) throw err;
      run.notRead.push(dest);
      if (run.progress) process.stderr.write('\r\x1b[K');
      process.stderr.write(`vmssfs: ${dest}: not extracted: ${err.message}\n`);
    }
    return;
  }
  await makeDir(dest);
  for (const [name, child] of item.node.children) {
    await copyNode({ treePath: `${item.treePath}/${name}`, node: child }, run);
  }
  await fs.promises.utimes(dest, run.tree.mtime, run.tree.mtime).catch(() => undefined);
}

/** The directories between OUTDIR and an item (`groups`, `groups/cpu` for `groups/cpu/rip[0]`), made one by one. */
async function makeParents(outDir: string, treePath: string): Promise<void> {
  const parts = treeParts(treePath);
  for (let i = 1; i < parts.length; i++) await makeDir(path.join(outDir, ...parts.slice(0, i)));
}

/** A checkpoint's root entries but the derived views, under `prefix`. */
function withoutViews(dir: DirNode, prefix: string): Item[] {
  return [...dir.children].filter(([name]) => !DERIVED_VIEWS.has(name)).map(([name, node]) => ({ treePath: prefix + name, node }));
}

/** A VM folder's root files, and each checkpoint's directory without its derived views. */
function folderItems(root: DirNode): Item[] {
  return [...root.children].flatMap(([name, node]) => (node.kind === 'dir' ? withoutViews(node, `${name}/`) : [{ treePath: name, node }]));
}

/**
 * `vmssfs extract SNAPSHOT OUTDIR [PATH...]`: each PATH (a file or a whole directory) is written
 * to OUTDIR/PATH, keeping its place in the tree, so several PATHs never collide. Without PATH:
 * the whole tree except the derived physmem views. OUTDIR is taken as given (a link the user
 * names is theirs to follow); below it nothing is followed, and existing files are refused
 * before anything is written, unless `force`. A file whose evidence cannot be read is named and
 * left out, and the rest is written: the result is the exit status, 0 or EXTRACT_INCOMPLETE. A
 * write that fails (a full disk) stops everything.
 */
export async function extract(snapshot: string, outDir: string, paths: string[], opts: ExtractOptions): Promise<number> {
  const t = openTree(snapshot, opts);
  try {
    const root = t.tree.root;
    const items: Item[] = paths.length > 0
      ? paths.map((p) => ({ treePath: p, node: lookup(t.tree, p) }))
      : t.snap === null ? folderItems(root) : withoutViews(root, '');
    const total = items.reduce((sum, i) => sum + totalBytes(i.node), 0);
    const progress = process.stderr.isTTY && total > PROGRESS_MIN_BYTES ? new Progress(total, process.stderr) : null;
    await fs.promises.mkdir(outDir, { recursive: true }).catch((err: unknown) => fail(outDir, err));
    if (!opts.force) {
      const found: string[] = [];
      for (const item of items) await existing(item, outDir, found);
      if (found.length > 0) throw new VmssError(`${found[0]}: already exists (give --force to replace existing files)`);
    }
    const run: CopyRun = { outDir, tree: t.tree, force: opts.force ?? false, progress, notRead: [] };
    for (const item of items) {
      await makeParents(outDir, item.treePath);
      await copyNode(item, run);
    }
    progress?.finish();
    const n = run.notRead.length;
    if (n === 0) return 0;
    process.stderr.write(`vmssfs: extract incomplete: ${n} file${n === 1 ? '' : 's'} could not be read (named above) and ${n === 1 ? 'was' : 'were'} not written; everything else was\n`);
    return EXTRACT_INCOMPLETE;
  } finally {
    t.close();
  }
}
