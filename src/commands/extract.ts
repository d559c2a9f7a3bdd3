import type { OpenOptions } from '../snapshot';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError } from '../errors';
import { errnoText } from '../io/source';
import type { Tree } from '../tree/build';
import type { FileNode, Node } from '../tree/nodes';
import { CHUNK, lookup, openTree, readChunk } from './common';

/**
 * Left out of a plain `extract` (no PATH): they hold the same guest memory as physmem.raw, laid
 * out for other tools, and would triple the output. Name them to get them.
 */
export const DERIVED_VIEWS: ReadonlySet<string> = new Set(['physmem.lime', 'physmem.elf']);

/** Below this, a copy is over before a progress bar would tell anyone anything. */
const PROGRESS_MIN_BYTES = 8 * 1024 * 1024;
const PROGRESS_INTERVAL_MS = 100;

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

/** A one-line bar on a terminal's stderr, redrawn at most every 100 ms. */
class Progress {
  private done = 0;
  private last = 0;
  constructor(private readonly total: number, private readonly stream: NodeJS.WriteStream) {}

  add(n: number): void {
    this.done += n;
    const now = Date.now();
    if (now - this.last >= PROGRESS_INTERVAL_MS) {
      this.last = now;
      this.draw();
    }
  }

  private draw(): void {
    const frac = this.total > 0 ? this.done / this.total : 1;
    const width = Math.max(10, Math.min(40, (this.stream.columns ?? 80) - 40));
    const filled = Math.round(frac * width);
    const mib = (b: number): string => (b / (1024 * 1024)).toFixed(1);
    this.stream.write(`\r[${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${mib(this.done)}/${mib(this.total)} MiB`);
  }

  finish(): void {
    this.draw();
    this.stream.write('\n');
  }
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

function fail(what: string, err: unknown): never {
  throw new VmssError(`${what}: ${errnoText(err)}`);
}

/**
 * Copy one file. All-zero chunks are not written and the file is cut to size at the end, so
 * holes (physmem.raw's gaps between runs, unused guest pages) stay holes on disk.
 */
async function copyFile(node: FileNode, dest: string, mtime: Date, progress: Progress | null): Promise<void> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(dest, 'w', 0o644);
  } catch (err) {
    fail(dest, err);
  }
  try {
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(node.size, 1)));
    for (let pos = 0; pos < node.size; ) {
      const want = Math.min(buf.length, node.size - pos);
      const n = await readChunk(node, buf, pos, want);
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
    } catch (err) {
      fail(dest, err);
    }
  } finally {
    await fh.close();
  }
}

async function copyNode(item: Item, outDir: string, tree: Tree, progress: Progress | null): Promise<void> {
  // Tree names never hold '/' and are never '.' or '..' (names.ts escapes them): joining stays under OUTDIR.
  const dest = path.join(outDir, ...item.treePath.split('/').filter((p) => p !== ''));
  if (item.node.kind === 'file') {
    await fs.promises.mkdir(path.dirname(dest), { recursive: true }).catch((err: unknown) => fail(path.dirname(dest), err));
    await copyFile(item.node, dest, tree.mtime, progress);
    return;
  }
  await fs.promises.mkdir(dest, { recursive: true }).catch((err: unknown) => fail(dest, err));
  for (const [name, child] of item.node.children) {
    await copyNode({ treePath: `${item.treePath}/${name}`, node: child }, outDir, tree, progress);
  }
  await fs.promises.utimes(dest, tree.mtime, tree.mtime).catch(() => undefined);
}

/**
 * `vmssfs extract SNAPSHOT OUTDIR [PATH...]`: each PATH (a file or a whole directory) is written
 * to OUTDIR/PATH, keeping its place in the tree, so several PATHs never collide. Without PATH:
 * the whole tree except the derived physmem views. Existing files are overwritten.
 */
export async function extract(snapshot: string, outDir: string, paths: string[], opts: { vmem?: string; keys?: OpenOptions['keys'] }): Promise<void> {
  const t = openTree(snapshot, opts.vmem, opts.keys);
  try {
    const root = t.tree.root;
    const items: Item[] = paths.length > 0
      ? paths.map((p) => ({ treePath: p, node: lookup(t.tree, p) }))
      : [...root.children].filter(([name]) => !DERIVED_VIEWS.has(name)).map(([name, node]) => ({ treePath: name, node }));
    const total = items.reduce((sum, i) => sum + totalBytes(i.node), 0);
    const progress = process.stderr.isTTY && total > PROGRESS_MIN_BYTES ? new Progress(total, process.stderr) : null;
    await fs.promises.mkdir(outDir, { recursive: true }).catch((err: unknown) => fail(outDir, err));
    for (const item of items) await copyNode(item, outDir, t.tree, progress);
    progress?.finish();
  } finally {
    t.close();
  }
}
