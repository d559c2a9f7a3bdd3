/**
 * A FUSE filesystem with one file, `/disk.img`, mirroring BACKING, under a loop device and a
 * local filesystem in the slow-source tests: a disk that answers, then stalls. While armed
 * (SIGUSR1; SIGUSR2 disarms) every read waits DELAY_MS before it is answered, as a drive retrying
 * a sector would, and `slow read POS+LEN` is printed on stdout when such a read arrives. Reads are
 * answered asynchronously, so one waiting read does not hold the others; direct_io keeps the
 * kernel from caching anything at this level.
 * Run as its own process: node slow-fs.js BACKING MOUNTPOINT DELAY_MS; it prints `mounted`.
 */
import Fuse from 'fuse-native';
import * as fs from 'node:fs';

const [backing, mnt, delayMs] = process.argv.slice(2) as [string, string, string];
const fd = fs.openSync(backing, 'r');
const size = fs.fstatSync(fd).size;
const now = new Date();
let armed = false;

class SlowFuse extends Fuse {
  override _fuseOptions(): string {
    return '-odirect_io,fsname=slow-fs,subtype=slowfs';
  }
}

const fuse = new SlowFuse(mnt, {
  getattr(p, cb) {
    if (p === '/') return cb(0, { mode: 0o40555, uid: 0, gid: 0, size: 0, atime: now, mtime: now, ctime: now });
    if (p === '/disk.img') return cb(0, { mode: 0o100444, uid: 0, gid: 0, size, atime: now, mtime: now, ctime: now });
    cb(Fuse.ENOENT);
  },
  readdir: (_p, cb) => cb(0, ['disk.img']),
  open: (_p, _f, cb) => cb(0, 1),
  release: (_p, _fd, cb) => cb(0),
  read(_p, _fd, buf, len, pos, cb) {
    const answer = (): void => fs.read(fd, buf, 0, len, pos, (err, n) => cb(err ? Fuse.EIO : n));
    if (!armed) return answer();
    process.stdout.write(`slow read ${pos}+${len}\n`);
    setTimeout(answer, Number(delayMs));
  },
}, { timeout: false });
fuse.mount((err) => {
  if (err) {
    process.stderr.write(`slow-fs: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write('mounted\n');
});
process.on('SIGUSR1', () => (armed = true));
process.on('SIGUSR2', () => (armed = false));
process.on('SIGTERM', () => fuse.unmount(() => process.exit(0)));
