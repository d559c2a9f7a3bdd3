import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError } from '../errors';
import { errnoText, nextSourceId, onLocalFilesystem, openReadOnly, type DamagedRange, type PlainFile, type Source } from './source';

const O_NOATIME = (fs.constants as Record<string, number>).O_NOATIME ?? 0;


/** Descriptors a pool keeps open at most (more are opened while pinned by reads in flight). */
export const DEFAULT_MAX_OPEN = 32;

/**
 * Evidence files of a VM folder, opened when first read rather than all at mount, with at most
 * `maxOpen` descriptors kept open: a folder of a hundred snapshots never holds a hundred memory
 * files open. A file is stat()ed when the pool hands it out (its size and mtime are needed to
 * map memory), opened on its first read, and closed again when the least recently used one must
 * make room. Reopening checks that the path still names the same file (device and inode).
 */
export class FilePool {
  /** Open files, least recently used first (a Map keeps insertion order). */
  private readonly open = new Map<PooledFile, true>();
  constructor(readonly maxOpen = DEFAULT_MAX_OPEN) {}

  /** The file at `file`, not yet opened. Throws VmssError when it cannot be stat()ed or is not a file. */
  file(file: string): PooledFile {
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch (err) {
      throw new VmssError(`${file}: cannot open: ${errnoText(err)}`);
    }
    if (st.isDirectory()) throw new VmssError(`${file}: is a directory, not a snapshot file`);
    return new PooledFile(this, file, st);
  }

  /** How many descriptors are open now (for tests and --debug). */
  get openCount(): number {
    return this.open.size;
  }

  /** @internal A file just opened or used: most recently used now; close the oldest unpinned ones past the bound. */
  touch(f: PooledFile): void {
    this.open.delete(f);
    this.open.set(f, true);
    for (const old of this.open.keys()) {
      if (this.open.size <= this.maxOpen) break;
      if (old !== f && old.releaseDescriptor()) this.open.delete(old);
    }
  }

  /** @internal */
  forget(f: PooledFile): void {
    this.open.delete(f);
  }

  /**
   * Close every descriptor no read holds: opening a checkpoint reads the first bytes of its
   * memory file (is it encrypted, compressed?), and a folder mount must not keep them all open.
   */
  releaseIdle(): void {
    for (const f of [...this.open.keys()]) if (f.releaseDescriptor()) this.open.delete(f);
  }

  closeAll(): void {
    for (const f of [...this.open.keys()]) f.close();
  }
}

/**
 * One evidence file of a pool: what SourceFile offers (positional reads, sync and async), with
 * the descriptor opened on demand. Reads in flight pin it, so it is never closed under them.
 */
export class PooledFile implements Source {
  readonly id = nextSourceId();
  /** No descriptor is held for good: the native path opens the file itself (plainFile), never ours. */
  readonly plain = false;
  readonly damaged: readonly DamagedRange[] = [];
  readonly size: number;
  readonly mtime: Date;
  readonly readsInPlace: boolean;
  /** Who owns the file and what its mode grants: the mount grants no more. */
  readonly owner: { uid: number; gid: number; mode: number };
  /** The file's identity (a log must never be one of the sources; a reopened path must still be it). */
  readonly identity: { dev: number; ino: number };
  /**
   * Whether reads will keep the access time: decided by the kernel's rule for O_NOATIME (the
   * file's owner, or root) before the file is first opened, so that it can be said at mount.
   */
  readonly atimeKept: boolean;
  private fd: number | null = null;
  private pins = 0;
  private closed = false;

  constructor(private readonly pool: FilePool, readonly name: string, st: fs.Stats) {
    this.size = st.size;
    this.mtime = st.mtime;
    this.owner = { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 };
    this.identity = { dev: st.dev, ino: st.ino };
    const euid = process.geteuid?.() ?? 0;
    this.atimeKept = O_NOATIME !== 0 && (euid === 0 || euid === st.uid);
    this.readsInPlace = onLocalFilesystem(name);
  }

  /**
   * Plain bytes on a local filesystem, opened on demand: the native read path may open the file
   * itself (it checks device and inode as we do). Identities past 2^53 do not survive a number
   * and stay on the JavaScript path.
   */
  get plainFile(): PlainFile | undefined {
    const { dev, ino } = this.identity;
    if (!this.readsInPlace || !Number.isSafeInteger(dev) || !Number.isSafeInteger(ino) || !path.isAbsolute(this.name)) return undefined;
    return { path: this.name, dev, ino };
  }

  get basename(): string {
    return path.basename(this.name);
  }

  /** Is a descriptor open now? (for tests) */
  get isOpen(): boolean {
    return this.fd !== null;
  }

  private adopt(fd: number): number {
    const st = fs.fstatSync(fd);
    if (st.dev !== this.identity.dev || st.ino !== this.identity.ino) {
      fs.closeSync(fd);
      throw Object.assign(new Error(`${this.name} is no longer the file that was mounted (replaced since)`), { code: 'ESTALE' });
    }
    this.fd = fd;
    return fd;
  }

  private checkOpenable(): void {
    if (this.closed) throw Object.assign(new Error(`${this.name}: closed`), { code: 'EBADF' });
  }

  /** Open (synchronously) if needed and pin; the caller unpins. */
  private pinSync(): number {
    this.checkOpenable();
    const fd = this.fd ?? this.adopt(openReadOnly(this.name).fd);
    this.pins++;
    this.pool.touch(this);
    return fd;
  }

  /** As pinSync, the open done on the thread pool: a hung share must not stall the event loop. */
  private pinAsync(): Promise<number> {
    try {
      this.checkOpenable();
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.fd !== null) return Promise.resolve(this.pinSync());
    return new Promise((resolve, reject) => {
      openReadOnlyAsync(this.name, (err, fd) => {
        if (err) return reject(err);
        if (this.fd !== null || this.closed) {
          // another read opened it meanwhile, or the mount ended: keep one descriptor only
          fs.close(fd, () => undefined);
          try {
            resolve(this.pinSync());
          } catch (e) {
            reject(e);
          }
          return;
        }
        try {
          this.adopt(fd);
          resolve(this.pinSync());
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  private unpin(): void {
    this.pins--;
    if (this.closed && this.pins === 0) this.releaseDescriptor();
  }

  /** @internal Close the descriptor unless a read holds it; true when none is open now. */
  releaseDescriptor(): boolean {
    if (this.pins > 0) return false;
    if (this.fd !== null) {
      try {
        fs.closeSync(this.fd);
      } catch {
        // already gone: nothing to release
      }
      this.fd = null;
    }
    return true;
  }

  readAtSync(buf: Buffer, position: number): number {
    const fd = this.pinSync();
    try {
      let done = 0;
      while (done < buf.length) {
        const n = fs.readSync(fd, buf, done, buf.length - done, position + done);
        if (n === 0) break;
        done += n;
      }
      return done;
    } finally {
      this.unpin();
    }
  }

  read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return this.pinAsync().then(
      (fd) =>
        new Promise<number>((resolve, reject) => {
          let done = 0;
          const step = (): void => {
            fs.read(fd, buf, offset + done, length - done, position + done, (err, n) => {
              if (err) {
                this.unpin();
                return reject(err);
              }
              done += n;
              if (n === 0 || done >= length) {
                this.unpin();
                return resolve(done);
              }
              step();
            });
          };
          step();
        }),
    );
  }

  close(): void {
    this.closed = true;
    if (this.releaseDescriptor()) this.pool.forget(this);
  }
}


/** openReadOnly's asynchronous twin: O_NOATIME where the kernel allows it, else a plain read-only open. */
function openReadOnlyAsync(file: string, done: (err: NodeJS.ErrnoException | null, fd: number) => void): void {
  if (!O_NOATIME) return fs.open(file, fs.constants.O_RDONLY, done);
  fs.open(file, fs.constants.O_RDONLY | O_NOATIME, (err, fd) => {
    if (err?.code === 'EPERM') fs.open(file, fs.constants.O_RDONLY, done);
    else done(err, fd);
  });
}
