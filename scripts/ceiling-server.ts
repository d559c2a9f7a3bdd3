// The FUSE binding's ceiling: a fuse-native server with one file, /physmem.raw, of a given size,
// that answers every read at once without touching the buffer (its bytes are whatever libfuse's
// memory held). Everything vmssfs spends on top of this is the cost of producing real bytes.
//
//   node dist/scripts/ceiling-server.js MOUNTPOINT SIZE
//
// Fairness: the same fuse-native build, the same process model (one Node process, every request
// crossing to the JS thread), the same `timeout: false` and the same mount options as vmssfs
// (mountOptions() of src/mount/options.ts: ro, use_ino, kernel_cache, day-long attribute, entry
// and negative timeouts, plus whatever max_read/max_readahead the daemon asks for), the same
// open/release handle bookkeeping. Prints "ready" on stdout once mounted; SIGTERM/SIGINT
// unmount and exit.

import Fuse, { type Operations, type Stat } from 'fuse-native';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { mountOptions } from '../src/mount/options';

class CeilingFuse extends Fuse {
  constructor(mnt: string, ops: Operations, private readonly options: string[]) {
    super(mnt, ops, { timeout: false });
  }
  override _fuseOptions(): string {
    return '-o' + this.options.join(',');
  }
}

const FILE = '/physmem.raw';

function main(): void {
  const [mnt, sizeArg] = process.argv.slice(2);
  const size = Number(sizeArg);
  if (!mnt || !Number.isSafeInteger(size) || size < 0) {
    process.stderr.write('usage: ceiling-server MOUNTPOINT SIZE\n');
    process.exit(2);
  }
  const time = new Date(0);
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const base = { uid, gid, atime: time, mtime: time, ctime: time, blksize: 4096 };
  const rootStat: Stat = { ...base, ino: 1, mode: fs.constants.S_IFDIR | 0o555, size: 0, nlink: 2 };
  const fileStat: Stat = { ...base, ino: 2, mode: fs.constants.S_IFREG | 0o444, size, nlink: 1, blocks: Math.ceil(size / 512) };
  const handles = new Map<number, true>();
  let nextHandle = 1;

  const ops: Operations = {
    getattr: (path, cb) => {
      if (path === '/') return cb(0, rootStat);
      if (path === FILE) return cb(0, fileStat);
      cb(Fuse.ENOENT);
    },
    readdir: (path, cb) => (path === '/' ? cb(0, ['.', '..', FILE.slice(1)]) : cb(Fuse.ENOENT)),
    open: (path, _flags, cb) => {
      if (path !== FILE) return cb(Fuse.ENOENT);
      const h = nextHandle++;
      handles.set(h, true);
      cb(0, h);
    },
    release: (_path, fd, cb) => {
      handles.delete(fd);
      cb(0);
    },
    read: (_path, _fd, _buf, len, pos, cb) => cb(Math.max(0, Math.min(len, size - pos))),
    statfs: (_path, cb) => cb(0, { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 }),
  };

  const fuse = new CeilingFuse(mnt, ops, mountOptions('ceiling', []).map((o) => (o.startsWith('fsname=') ? 'fsname=ceiling' : o.startsWith('subtype=') ? 'subtype=ceiling' : o)));
  fuse.mount((err) => {
    if (err) {
      process.stderr.write(`ceiling-server: cannot mount ${mnt}: ${err.message}\n`);
      process.exit(1);
    }
    process.stdout.write('ready\n');
  });
  const stop = (): void => {
    try {
      execFileSync('fusermount', ['-u', mnt], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      try {
        execFileSync('fusermount', ['-uz', mnt], { stdio: 'ignore', timeout: 10_000 });
      } catch {
        // already gone
      }
    }
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
