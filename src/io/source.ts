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

// O_NOATIME keeps reads from touching the evidence's access time. The kernel allows it only to
// the file's owner (or CAP_FOWNER), so fall back to a plain read-only open when refused.
const O_NOATIME = (fs.constants as Record<string, number>).O_NOATIME ?? 0;

/**
 * An evidence file opened read-only. Metadata parsing uses the sync reads; the page cache uses
 * `read`, which goes through libuv's thread pool so the event loop stays free while the disk works.
 */
export class SourceFile implements RandomAccess {
  /** Small stable number used as the page cache key prefix. */
  readonly id: number;
  private static nextId = 1;

  private constructor(
    readonly name: string,
    readonly fd: number,
    readonly size: number,
    readonly mtime: Date,
  ) {
    this.id = SourceFile.nextId++;
  }

  static open(file: string): SourceFile {
    let fd: number;
    try {
      fd = openReadOnly(file);
    } catch (err) {
      throw new VmssError(`${file}: cannot open: ${errnoText(err)}`);
    }
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) {
      fs.closeSync(fd);
      throw new VmssError(`${file}: is a directory, not a snapshot file`);
    }
    return new SourceFile(file, fd, st.size, st.mtime);
  }

  readAtSync(buf: Buffer, position: number): number {
    let done = 0;
    while (done < buf.length) {
      const n = fs.readSync(this.fd, buf, done, buf.length - done, position + done);
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

function openReadOnly(file: string): number {
  // O_CLOEXEC is the default for Node's opens, so children never inherit evidence descriptors.
  if (O_NOATIME) {
    try {
      return fs.openSync(file, fs.constants.O_RDONLY | O_NOATIME);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    }
  }
  return fs.openSync(file, fs.constants.O_RDONLY);
}

export function errnoText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT': return 'no such file';
    case 'EACCES': return 'permission denied';
    case 'EISDIR': return 'is a directory';
    case 'EIO': return 'input/output error (damaged medium or vanished share?)';
    default: return e?.code ? `${e.code}` : String(err);
  }
}

/** An in-memory RandomAccess, for tests and for parsing bytes already in hand. */
export class BufferSource implements RandomAccess {
  constructor(readonly name: string, private readonly data: Buffer) {}
  get size(): number {
    return this.data.length;
  }
  readAtSync(buf: Buffer, position: number): number {
    if (position >= this.data.length) return 0;
    return this.data.copy(buf, 0, position, Math.min(this.data.length, position + buf.length));
  }
}
