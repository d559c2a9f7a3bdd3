import * as os from 'node:os';
import type { ChunkSource } from '../cache/pagecache';
import { loadAddon } from '../io/addon';
import { BlockStreamSource, type BlockEntry } from '../io/blockstream';
import { EncObjSource } from '../io/encobj';
import type { DirectFile } from '../io/source';
import type { Extent, Node } from '../tree/nodes';
import type { Tree } from '../tree/build';

/**
 * The native read path: our C addon (native/) registers a libfuse module that answers reads of
 * chosen files with pread on libfuse's own worker threads, so their bytes never pass through
 * JavaScript. Every other operation, and reads of every other file, still reach the adapter.
 *
 * What goes native is derived from the tree: each file whose `extents` draw only on sources with
 * a `directFd` (the file's bytes as they are, on a local filesystem) or a `directFile` (the same, opened on first read:
 * a VM folder's memory files), or on a compressed memory stream in such a file, which the addon
 * decodes from the native seek index (seekindex.h) once its pass has reached a block (before, and
 * for damaged blocks, the addon hands the read to JavaScript), decrypting its stored bytes first
 * when the stream lies in an encrypted container. Everything else (sources on network shares or
 * FUSE mounts, other encrypted files, files made in memory) stays on the JavaScript path.
 *
 * VMSSFS_NATIVE=0 turns the native path off (the JavaScript path serves everything);
 * VMSSFS_NATIVE_ADDON=<file> loads that build of the addon instead of the usual ones (tests use
 * it for the AddressSanitizer build and to prove the fallback); see src/io/addon.ts.
 */

/** What the addon is given: sources by index, files by their FUSE path. */
export interface NativeSpec {
  /** Sources the addon may open itself, at most; reads of the others go to JavaScript. */
  maxOpened: number;
  /** A descriptor the addon dups, or a file it opens itself on first read (a VM folder's); either may hold a compressed stream. */
  sources: (({ fd: number; size: number } | { path: string; dev: number; ino: number; size: number }) & Partial<NativeStream>)[];
  files: { path: string; size: number; extents: NativeExtent[] }[];
}
/**
 * A compressed memory stream in a source's file (whose `size` is then the container's): its
 * extents name stream positions. `stream` is the seek index's native handle, `blocks` the
 * container's blocks, `length` the bytes its intact chain describes (reads past it are JavaScript's).
 */
export interface NativeStream {
  stream: unknown;
  blocks: readonly BlockEntry[];
  length: number;
  /** The stream lies in an encrypted container: the key, where its pages begin, the plaintext they hold. */
  encobj?: { key: Buffer; header: number; plainSize: number };
}
export type NativeExtent = { start: number; length: number } & ({ source: number; sourceOffset: number } | { bytes: Buffer });

export interface NativeCounts {
  reads: number;
  bytes: number;
  errors: number;
  /** Of the reads, those answered with the source's own pages, spliced (no copy in the daemon). */
  spliced: number;
  /** errno of the last failed read (EIO for a source that shrank). */
  lastErrno: number;
}

/** A read the addon answered EIO: which file and request, which source bytes failed and how. */
export interface NativeReadError {
  path: string;
  offset: number;
  size: number;
  source: number;
  /** 0 when the source came back short: it shrank since it was opened. */
  errno: number;
  /** 1 when the source could not be opened (errno ESTALE: the path names another file now). */
  opening: number;
  position: number;
  length: number;
}

interface NativeAddon {
  prepare(spec: NativeSpec, onError: (e: NativeReadError) => void): number;
  discard(id: number): void;
  counts(): NativeCounts;
  /** Clear (true) or set (false) close-on-exec on descriptor 2; absent from builds older than it. */
  inheritStderr?(on: boolean): boolean;
}

export type LoadResult = { addon: NativeAddon; file: string } | { addon: null; reason: string };

export { addonCandidates } from '../io/addon';

/** The addon's read path, loaded once per process (../io/addon.ts); the reason it could not be, otherwise. */
export function loadNative(env: NodeJS.ProcessEnv = process.env): LoadResult {
  const lib = loadAddon(env);
  // Every build of the addon has the read path: loadAddon checked its three functions.
  return lib.exports ? { addon: lib.exports as unknown as NativeAddon, file: lib.file } : { addon: null, reason: lib.reason };
}

/**
 * Files the addon opens itself, at most, per mount. They stay open until unmount, beside the VM
 * folder's own bounded pool (src/io/pool.ts); once this many are open, reads of the others are
 * handed to JavaScript, which reads them through that pool.
 */
export const MAX_OPENED_NATIVELY = 32;

/** The files of the tree that can be served natively, with their FUSE paths. */
export function nativeSpec(tree: Tree): { spec: NativeSpec; sources: ChunkSource[] } {
  const spec: NativeSpec = { maxOpened: MAX_OPENED_NATIVELY, sources: [], files: [] };
  const sources: ChunkSource[] = [];
  const sourceIndex = new Map<ChunkSource, number>();
  const sourceOf = (src: ChunkSource): number | null => {
    let i = sourceIndex.get(src);
    if (i === undefined) {
      // A compressed stream is read from the container file beneath it, when that is a local
      // file as it is (not decrypted, not fetched) and the addon holds its seek index.
      const stream = src instanceof BlockStreamSource ? src : null;
      const handle = stream?.nativeSeekHandle ?? null;
      if (stream && handle === null) return null;
      let file: ChunkSource = stream ? stream.container : src;
      // An encrypted VM's stream: the addon decrypts the stored bytes it reads, with the key.
      let encobj: NativeStream['encobj'];
      if (stream && file instanceof EncObjSource) {
        const d = file.nativeDecryption;
        encobj = { key: d.key, header: d.header, plainSize: d.plainSize };
        file = d.file;
      }
      const fd = file.decodes === true ? undefined : file.directFd;
      const named = fd === undefined && file.decodes !== true ? file.directFile : undefined;
      if (fd === undefined && named === undefined) return null;
      i = spec.sources.length;
      spec.sources.push({
        ...(fd !== undefined ? { fd } : (named as DirectFile)),
        size: file.size,
        ...(stream ? { stream: handle, blocks: stream.blocks, length: stream.decodedSize, ...(encobj ? { encobj } : {}) } : {}),
      });
      sources.push(src);
      sourceIndex.set(src, i);
    }
    return i;
  };
  const toNative = (extents: readonly Extent[]): NativeExtent[] | null => {
    const out: NativeExtent[] = [];
    for (const e of extents) {
      if (e.length === 0) continue;
      if ('bytes' in e) {
        out.push({ start: e.start, length: e.length, bytes: e.bytes });
        continue;
      }
      const source = sourceOf(e.source);
      if (source === null) return null; // one piece the JavaScript path must read: all of the file stays there
      out.push({ start: e.start, length: e.length, source, sourceOffset: e.sourceOffset });
    }
    return out;
  };
  const walk = (node: Node, at: string): void => {
    if (node.kind === 'dir') {
      for (const [name, child] of node.children) walk(child, `${at}/${name}`);
      return;
    }
    if (!node.extents || !node.extents.some((e) => 'source' in e)) return;
    const extents = toNative(node.extents);
    if (extents) spec.files.push({ path: at, size: node.size, extents });
  };
  walk(tree.root, '');
  return { spec, sources };
}

/** The log line for a failed native read, worded as the JavaScript path words its own. */
export function describeNativeError(e: NativeReadError, sources: readonly ChunkSource[]): string {
  const src = sources[e.source];
  const name = src?.name ?? `source ${e.source}`;
  const why = e.opening
    ? `${name}: ${e.errno === os.constants.errno.ESTALE ? 'no longer the file that was mounted (replaced since)' : `cannot open: ${errnoName(e.errno)}`}`
    : e.errno === 0
      ? `${name}: file shrank since it was opened (${src?.size ?? '?'} bytes then, ends before ${e.position + e.length} now)`
      : `${name}: read of ${e.length} bytes at ${e.position} failed: ${errnoName(e.errno)}`;
  return `read ${e.path} at ${e.offset} (+${e.size}): ${why}: answered EIO`;
}

export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(os.constants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** One mount's native reads: the FUSE options that switch them on, and their counts. */
export interface NativeReads {
  /** modules=vmssfs and the map's id, for the mount's -o. */
  readonly fuseOptions: string[];
  /** Paths served natively. */
  readonly paths: string[];
  /** The addon's file. */
  readonly file: string;
  /** The map was not taken by a mount (the mount failed): free it. */
  discard(): void;
  counts(): NativeCounts;
}

/**
 * Prepare the native reads of a tree, or say why the JavaScript path serves everything. The
 * addon dups the descriptors: they stay open until libfuse is done with the mount, whatever
 * JavaScript closes. Failed reads reach `log` as the adapter's own failed reads do.
 */
export function prepareNative(tree: Tree, log: (line: string) => void, env: NodeJS.ProcessEnv = process.env): NativeReads | { reason: string } {
  const lib = loadNative(env);
  if (!lib.addon) return { reason: lib.reason };
  const addon = lib.addon;
  const { spec, sources } = nativeSpec(tree);
  let id: number;
  try {
    id = addon.prepare(spec, (e) => log(describeNativeError(e, sources)));
  } catch (err) {
    // The addon checks every number it is given; a refusal leaves the JavaScript path in charge.
    return { reason: `the addon refused the read map: ${err instanceof Error ? err.message : String(err)}` };
  }
  return {
    fuseOptions: ['modules=vmssfs', `vmssfs_map=${id}`],
    paths: spec.files.map((f) => f.path),
    file: lib.file,
    discard: () => addon.discard(id),
    counts: () => addon.counts(),
  };
}

/**
 * Whether programs libfuse starts get descriptor 2 (on) or not (off, as Node leaves it: close-on-
 * exec). fusermount, which mounts for a user who is not root, says there why it refused. Returns
 * false when it could not be set: no addon, or a build older than this.
 */
export function inheritStderr(on: boolean): boolean {
  return loadNative().addon?.inheritStderr?.(on) ?? false;
}
