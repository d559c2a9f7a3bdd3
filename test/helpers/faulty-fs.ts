/**
 * A FUSE filesystem with one file, `/evidence.vmss`, mirroring BACKING, whose reads fail with EIO
 * where they touch [BAD_START, BAD_END): a bad sector or a vanished share, seen from above.
 * Run as its own process: node faulty-fs.js BACKING MOUNTPOINT BAD_START BAD_END
 */
import Fuse from 'fuse-native';
import { serveOneFile } from './one-file-fs';

const [backing, mnt, badStart, badEnd] = process.argv.slice(2) as [string, string, string, string];
const bad = [Number(badStart), Number(badEnd)] as const;
serveOneFile('faulty-fs', backing, mnt, 'evidence.vmss', (_buf, len, pos, cb, pass) => {
  if (pos < bad[1] && pos + len > bad[0]) return cb(Fuse.EIO);
  pass();
});
