import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError } from '../errors';

/**
 * Positional, synchronous reads over bytes: what the format parser needs. Implemented by
 * SourceFile for evidence on disk and by BufferSource in tests. Reading never moves a cursor,
 * so one source can be shared by every reader.
 */
export interface RandomAccess {
  /** Shown in messages: the path the user gave. */
  readonly name: string;
  /** Size in bytes at open time. */
  readonly size: number;
  /** Fill `buf` from `position`; returns bytes read, short only at end of data. */
  readAtSync(buf: Buffer, position: number): number;
}

/**
 * A read of an evidence file failed (a bad sector, a vanished share): the one line names the file,
 * the offset and the cause; `code` keeps the errno for callers that map it (the page cache).
 */
export class SourceReadFailed extends VmssError {
  constructor(file: string, length: number, position: number, readonly code: string, cause: unknown) {
    super(`${file}: read of ${length} bytes at offset 0x${position.toString(16)} failed: ${errnoText(cause)}`);
  }
}

/** A byte range of a source that cannot be produced: reads there fail with EIO. */
export interface DamagedRange {
  start: number;
  end: number;
  /** Why, in words for the analyst (names no secret). */
  why: string;
}

/**
 * What the layers above read from: an evidence file as it lies on disk (SourceFile), or a layer
 * decoding one (an encrypted container, a compressed memory stream). It satisfies both the
 * parser (RandomAccess) and the page cache (ChunkSource).
 */
export interface Source extends RandomAccess {
  /** Small integer unique per open source: part of the page cache's key. */
  readonly id: number;
  readonly mtime: Date;
  /**
   * True only for a file on disk read as is. Decoded sources are false, and have no `fd`:
   * anything that reads a file descriptor directly must leave them to their own read().
   */
  readonly plain: boolean;
  /** See ChunkSource.readsInPlace; decoded sources say false. */
  readonly readsInPlace: boolean;
  /** Asynchronous positional read; short only at end of data; rejects with code EIO in damage. */
  read(buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  /** Ranges known at open to be unreadable (a truncated container, a broken block chain). */
  readonly damaged: readonly DamagedRange[];
  /** Facts of the file on disk beneath every layer: whose it is, which it is, whether reads keep its atime. */
  readonly owner: { uid: number; gid: number; mode: number };
  readonly identity: { dev: number; ino: number };
  readonly atimeKept: boolean;
  close(): void;
}

let lastSourceId = 0;
/** Ids are shared by every kind of source, so that stacked layers never collide in the cache. */
export function nextSourceId(): number {
  return ++lastSourceId;
}

// O_NOATIME keeps reads from touching the evidence's access time. The kernel allows it only to
// the file's owner (or CAP_FOWNER), so fall back to a plain read-only open when refused.
const O_NOATIME = (fs.constants as Record<string, number>).O_NOATIME ?? 0;

/**
 * An evidence file opened read-only. Metadata parsing uses the sync reads; the page cache uses
 * `read`, which goes through libuv's thread pool so the event loop stays free while the disk works.
 */
export class SourceFile implements Source {
  /** Small stable number used as the page cache key prefix. */
  readonly id: number;
  readonly plain = true;
  readonly damaged: readonly DamagedRange[] = [];

  private constructor(
    readonly name: string,
    readonly fd: number,
    readonly size: number,
    readonly mtime: Date,
    /** On a local filesystem, where a read cannot hang: the page cache may read it in place. */
    readonly readsInPlace: boolean,
    /** Who owns the file and what its mode grants: the mount grants no more. */
    readonly owner: { uid: number; gid: number; mode: number },
    /** The file's identity (a log must never be one of the sources). */
    readonly identity: { dev: number; ino: number },
    /**
     * False when the kernel refused O_NOATIME (the user does not own the file): each read may
     * then update the evidence's access time.
     */
    readonly atimeKept: boolean,
  ) {
    this.id = nextSourceId();
  }

  static open(file: string): SourceFile {
    let fd: number;
    let noatime: boolean;
    try {
      ({ fd, noatime } = openReadOnly(file));
    } catch (err) {
      throw new VmssError(`${file}: cannot open: ${errnoText(err)}`);
    }
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) {
      fs.closeSync(fd);
      throw new VmssError(`${file}: is a directory, not a snapshot file`);
    }
    return new SourceFile(
      file, fd, st.size, st.mtime, onLocalFilesystem(file),
      { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 },
      { dev: st.dev, ino: st.ino },
      noatime || !O_NOATIME,
    );
  }

  /** Plain bytes on a local filesystem: the native read path may pread the descriptor itself. */
  get plainFd(): number | undefined {
    return this.readsInPlace ? this.fd : undefined;
  }

  readAtSync(buf: Buffer, position: number): number {
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = fs.readSync(this.fd, buf, done, buf.length - done, position + done);
      } catch (err) {
        throw new SourceReadFailed(this.name, buf.length - done, position + done, (err as NodeJS.ErrnoException).code ?? 'EIO', err);
      }
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  /** Asynchronous positional read into `buf[offset, offset+length)`; short only at end of file. */
  read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return new Promise((resolve, reject) => {
      let done = 0;
      const step = (): void => {
        fs.read(this.fd, buf, offset + done, length - done, position + done, (err, n) => {
          if (err) return reject(err);
          done += n;
          if (n === 0 || done >= length) return resolve(done);
          step();
        });
      };
      step();
    });
  }

  close(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed: nothing to release
    }
  }

  get basename(): string {
    return path.basename(this.name);
  }
}

/**
 * statfs f_type magics of local, disk- or memory-backed filesystems. Network filesystems (NFS,
 * SMB), FUSE mounts (sshfs, ntfs-3g, vmssfs itself) and anything unknown are left out: their
 * reads can hang, so they are only ever read on the thread pool.
 */
const LOCAL_FS_TYPES = new Set([
  0xef53, // ext2/3/4
  0x58465342, // xfs
  0x9123683e, // btrfs
  0x01021994, // tmpfs
  0x858458f6, // ramfs
  0x794c7630, // overlayfs
  0x2fc12fc1, // zfs
  0xf2f52010, // f2fs
  0xca451a4e, // bcachefs
  0x3153464a, // jfs
  0x52654973, // reiserfs
  0x2011bab0, // exfat
  0x4d44, // vfat
  0x7366746e, // ntfs3
  0x9660, // iso9660
  0x15013346, // udf
  0x73717368, // squashfs
]);

export function onLocalFilesystem(file: string): boolean {
  try {
    return LOCAL_FS_TYPES.has(fs.statfsSync(file).type);
  } catch {
    return false;
  }
}

export function openReadOnly(file: string): { fd: number; noatime: boolean } {
  // O_CLOEXEC is the default for Node's opens, so children never inherit evidence descriptors.
  if (O_NOATIME) {
    try {
      return { fd: fs.openSync(file, fs.constants.O_RDONLY | O_NOATIME), noatime: true };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    }
  }
  return { fd: fs.openSync(file, fs.constants.O_RDONLY), noatime: false };
}

/**
 * A whole small file of the evidence (a .vmx, a .vmsd), read as evidence files are: read-only and,
 * where the kernel allows it, without changing its access time. Null when it holds more than
 * `max` bytes (it is then not read). Throws Node's error when it cannot be opened or read.
 */
export function readSmallEvidence(file: string, max: number): { bytes: Buffer; size: number } | { bytes: null; size: number } {
  const { fd } = openReadOnly(file);
  try {
    const size = fs.fstatSync(fd).size;
    if (size > max) return { bytes: null, size };
    const buf = Buffer.alloc(size);
    let done = 0;
    while (done < size) {
      const n = fs.readSync(fd, buf, done, size - done, done);
      if (n === 0) break;
      done += n;
    }
    return { bytes: buf.subarray(0, done), size };
  } finally {
    fs.closeSync(fd);
  }
}

/** The warning for a source whose access time reads may change (said once, with the snapshot's warnings). */
export function atimeWarning(src: Pick<SourceFile, 'name' | 'atimeKept'>): string | null {
  if (src.atimeKept) return null;
  return `${src.name}: opened without O_NOATIME (the kernel allows it only to the file's owner or root): reading it may update its access time`;
}

export function errnoText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT': return 'no such file';
    case 'EACCES': return 'permission denied';
    case 'EISDIR': return 'is a directory';
    case 'EIO': return 'input/output error (damaged medium or vanished share?)';
    case 'ENOSPC': return 'no space left on device';
    case 'EDQUOT': return 'disk quota exceeded';
    case 'EFBIG': return 'file too large for its filesystem';
    case 'EROFS': return 'read-only filesystem';
    case 'EEXIST': return 'already exists';
    case 'ENOTDIR': return 'not a directory';
    default: return e?.code ? `${e.code}` : String(err);
  }
}

/** An in-memory RandomAccess, for tests and for parsing bytes already in hand. */
export class BufferSource implements Source {
  readonly id = nextSourceId();
  readonly mtime = new Date(0);
  readonly plain = true;
  readonly damaged: readonly DamagedRange[] = [];
  readonly owner = { uid: 0, gid: 0, mode: 0o444 };
  readonly identity = { dev: 0, ino: 0 };
  readonly atimeKept = true;
  constructor(
    readonly name: string,
    private readonly data: Buffer,
    /** As a local file (read in place) or as a remote one (read on the thread pool). */
    readonly readsInPlace = false,
  ) {}
  get size(): number {
    return this.data.length;
  }
  readAtSync(buf: Buffer, position: number): number {
    if (position >= this.data.length) return 0;
    return this.data.copy(buf, 0, position, Math.min(this.data.length, position + buf.length));
  }
  async read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return this.readAtSync(buf.subarray(offset, offset + length), position);
  }
  close(): void {
    // nothing held
  }
}

/** A plain local file by path, and the identity (device, inode) a reopening must find there. */
export interface PlainFile {
  path: string;
  dev: number;
  ino: number;
}
