/**
 * A FUSE filesystem holding one read-only file, `/NAME`, that mirrors BACKING, for the tests'
 * misbehaving sources (faulty-fs.ts, slow-fs.ts): each decides how a read is answered. Mounts at
 * once, prints `mounted` on stdout, and unmounts on SIGTERM.
 */
import Fuse from 'fuse-native';
import * as fs from 'node:fs';

/** Answer a read of `len` bytes at `pos` into `buf`; `pass` answers it from BACKING as it is. */
export type ReadHook = (buf: Buffer, len: number, pos: number, cb: (result: number) => void, pass: () => void) => void;

export function serveOneFile(tool: string, backing: string, mnt: string, name: string, read: ReadHook, fuseOptions?: string): void {
  const fd = fs.openSync(backing, 'r');
  const size = fs.fstatSync(fd).size;
  const now = new Date();
  class OneFileFuse extends Fuse {
    override _fuseOptions(): string {
      return fuseOptions ?? super._fuseOptions();
    }
  }
  const fuse = new OneFileFuse(mnt, {
    getattr(p, cb) {
      if (p === '/') return cb(0, { mode: 0o40555, uid: 0, gid: 0, size: 0, atime: now, mtime: now, ctime: now });
      if (p === `/${name}`) return cb(0, { mode: 0o100444, uid: 0, gid: 0, size, atime: now, mtime: now, ctime: now });
      cb(Fuse.ENOENT);
    },
    readdir: (_p, cb) => cb(0, [name]),
    open: (_p, _f, cb) => cb(0, 1),
    release: (_p, _fd, cb) => cb(0),
    read(_p, _fd, buf, len, pos, cb) {
      read(buf, len, pos, cb, () => fs.read(fd, buf, 0, len, pos, (err, n) => cb(err ? Fuse.EIO : n)));
    },
  }, { timeout: false });
  fuse.mount((err) => {
    if (err) {
      process.stderr.write(`${tool}: ${err.message}\n`);
      process.exit(1);
    }
    process.stdout.write('mounted\n');
  });
  process.on('SIGTERM', () => fuse.unmount(() => process.exit(0)));
}
