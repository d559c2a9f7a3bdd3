import type { ChunkSource, PageCache } from '../cache/pagecache';
import { lastAtOrBefore } from '../bisect';
import { SegmentMap, type Segment } from './segments';
import { PIECE_CHARS, unitsText, type TextDoc } from '../evidence/textdoc';

/**
 * A regular file of the tree: it answers its size and reads. How its bytes are made (held in
 * memory, assembled from runs of evidence files) is its own business; nothing here knows FUSE.
 */
export interface FileNode {
  readonly kind: 'file';
  readonly ino: number;
  readonly size: number;
  /**
   * Bytes the file really holds (st_blocks, so `du` and `ls -s` tell the truth): a sparse file's
   * holes are not stored. Absent: all of `size`.
   */
  readonly storedBytes?: number;
  /** Extended attributes shown by getfattr, e.g. where a tag sits in the snapshot. */
  readonly xattrs?: ReadonlyMap<string, string>;
  /**
   * Fill dst[0, n) with the file's bytes at `position`, n = min(length, size - position); returns
   * n, as a plain number when the bytes are there at once (no promise on the hot path).
   */
  read(dst: Buffer, position: number, length: number): number | Promise<number>;
  /**
   * The file as extents (zeros between them), sorted and apart, when that is how its bytes are
   * made; `read` serves exactly these. The native read path is built from them (src/fuse/native.ts).
   */
  readonly extents?: readonly Extent[];
}

export interface DirNode {
  readonly kind: 'dir';
  readonly ino: number;
  /** Entries in listing order. */
  readonly children: Map<string, Node>;
}

export type Node = FileNode | DirNode;

/** Clamp a read to the file; the number of bytes it will produce. */
function clamp(size: number, position: number, length: number): number {
  return Math.max(0, Math.min(length, size - position));
}

/** A file whose bytes are in memory: info.txt, metadata.json, inline tags, view headers. */
export class BytesFile implements FileNode {
  readonly kind = 'file';
  constructor(readonly ino: number, private readonly data: Buffer) {}
  get size(): number {
    return this.data.length;
  }
  async read(dst: Buffer, position: number, length: number): Promise<number> {
    const n = clamp(this.data.length, position, length);
    if (n > 0) this.data.copy(dst, 0, position, position + n);
    return n;
  }
}

/**
 * A generated text file (info.txt, metadata.json) that is not kept: its size and where every
 * piece of about PIECE_CHARS starts are found once, and a read makes the pieces it touches again
 * (the last one is kept, for readers that go forward in small steps). At the tag cap the texts
 * are 50 MiB that the daemon would otherwise hold for the life of the mount.
 */
export class DocFile implements FileNode {
  readonly kind = 'file';
  readonly size: number;
  /** Piece k holds units [units[k], units[k+1]) and starts at byte offsets[k]. */
  private readonly units: number[] = [];
  private readonly offsets: number[] = [];
  private last: { piece: number; bytes: Buffer } | null = null;

  constructor(readonly ino: number, private readonly doc: TextDoc) {
    let bytes = 0;
    let chars = PIECE_CHARS;
    for (let i = 0; i < doc.units; i++) {
      if (chars >= PIECE_CHARS) {
        this.units.push(i);
        this.offsets.push(bytes);
        chars = 0;
      }
      const u = doc.unit(i);
      chars += u.length;
      bytes += Buffer.byteLength(u);
    }
    this.units.push(doc.units);
    this.size = bytes;
  }

  private piece(k: number): Buffer {
    if (this.last?.piece !== k) {
      this.last = { piece: k, bytes: Buffer.from(unitsText(this.doc, this.units[k] as number, this.units[k + 1] as number)) };
    }
    return this.last.bytes;
  }

  async read(dst: Buffer, position: number, length: number): Promise<number> {
    const n = clamp(this.size, position, length);
    // The last piece starting at or before position; then on across pieces.
    const first = lastAtOrBefore(this.offsets.length, (i) => this.offsets[i] as number, position);
    for (let done = 0, k = first; done < n; k++) {
      const piece = this.piece(k);
      const from = position + done - (this.offsets[k] as number);
      done += piece.copy(dst, done, from, Math.min(piece.length, from + n - done));
    }
    return n;
  }
}

/** A stretch of an assembled file: bytes of an evidence file (through the page cache), or bytes in hand. */
export type Extent = Segment & ({ source: ChunkSource; sourceOffset: number } | { bytes: Buffer });

/**
 * A file assembled from extents with zeros between them: physmem.raw (runs and holes), block
 * tags (one extent), the LiME and ELF views (headers in hand, runs from the cache).
 */
export class ExtentFile implements FileNode {
  readonly kind = 'file';
  private readonly map: SegmentMap<Extent>;
  readonly storedBytes: number;
  constructor(
    readonly ino: number,
    extents: Extent[],
    readonly size: number,
    private readonly cache: PageCache,
  ) {
    this.map = new SegmentMap(extents);
    this.storedBytes = extents.reduce((sum, e) => sum + e.length, 0);
  }

  get extents(): readonly Extent[] {
    return this.map.segments;
  }

  read(dst: Buffer, position: number, length: number): number | Promise<number> {
    const n = clamp(this.size, position, length);
    if (n === 0) return 0;
    // The common case, a read inside one extent of an evidence file: straight to the cache,
    // without cutting the read into pieces.
    const e = this.map.find(position);
    if (e && 'source' in e && position + n <= e.start + e.length) {
      const wait = this.cache.readNow(e.source, e.sourceOffset + (position - e.start), dst, 0, n);
      return wait ? wait.then(() => n) : n;
    }
    return this.readPieces(dst, position, n);
  }

  /** A read across extents and holes; a number when no piece had to wait. */
  private readPieces(dst: Buffer, position: number, n: number): number | Promise<number> {
    let pending: Promise<void>[] | null = null;
    for (const p of this.map.pieces(position, n)) {
      const at = p.at - position;
      const e = p.segment;
      if (e === null) dst.fill(0, at, at + p.length);
      else if ('bytes' in e) e.bytes.copy(dst, at, p.within, p.within + p.length);
      else {
        const wait = this.cache.readNow(e.source, e.sourceOffset + p.within, dst, at, p.length);
        if (wait) (pending ??= []).push(wait);
      }
    }
    if (!pending) return n;
    if (pending.length === 1) return pending[0]!.then(() => n);
    // Every piece settles before this does: nothing may write into dst after the reply.
    return Promise.allSettled(pending).then((results) => {
      for (const r of results) if (r.status === 'rejected') throw r.reason;
      return n;
    });
  }
}
