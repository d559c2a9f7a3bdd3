/**
 * A FUSE filesystem with one file, `/evidence.vmss`, mirroring BACKING, whose reads fail with EIO
 * where they touch [BAD_START, BAD_END): a bad sector or a vanished share, seen from above.
 * Run as its own process: node faulty-fs.js BACKING MOUNTPOINT BAD_START BAD_END
 */
import Fuse from 'fuse-native';
import * as fs from 'node:fs';

const [backing, mnt, badStart, badEnd] = process.argv.slice(2) as [string, string, string, string];
const fd = fs.openSync(backing, 'r');
const size = fs.fstatSync(fd).size;
const bad = [Number(badStart), Number(badEnd)] as const;
const now = new Date();
const fuse = new Fuse(mnt, {
  getattr(p, cb) {
    if (p === '/') return cb(0, { mode: 0o40555, uid: 0, gid: 0, size: 0, atime: now, mtime: now, ctime: now });
    if (p === '/evidence.vmss') return cb(0, { mode: 0o100444, uid: 0, gid: 0, size, atime: now, mtime: now, ctime: now });
    cb(Fuse.ENOENT);
  },
  readdir: (_p, cb) => cb(0, ['evidence.vmss']),
  open: (_p, _f, cb) => cb(0, 1),
  release: (_p, _fd, cb) => cb(0),
  read(_p, _fd, buf, len, pos, cb) {
    if (pos < bad[1] && pos + len > bad[0]) return cb(Fuse.EIO);
    fs.read(fd, buf, 0, len, pos, (err, n) => cb(err ? Fuse.EIO : n));
  },
}, { timeout: false });
fuse.mount((err) => {
  if (err) {
    process.stderr.write(`faulty-fs: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write('mounted\n');
});
process.on('SIGTERM', () => fuse.unmount(() => process.exit(0)));
