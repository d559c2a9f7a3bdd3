/**
 * A FUSE filesystem with one file, `/disk.img`, mirroring BACKING, under a loop device and a
 * local filesystem in the slow-source tests: a disk that answers, then stalls. While armed
 * (SIGUSR1; SIGUSR2 disarms) every read waits DELAY_MS before it is answered, as a drive retrying
 * a sector would, and `slow read POS+LEN` is printed on stdout when such a read arrives. Reads are
 * answered asynchronously, so one waiting read does not hold the others; direct_io keeps the
 * kernel from caching anything at this level.
 * Run as its own process: node slow-fs.js BACKING MOUNTPOINT DELAY_MS; it prints `mounted`.
 */
import { serveOneFile } from './one-file-fs';

const [backing, mnt, delayMs] = process.argv.slice(2) as [string, string, string];
let armed = false;
serveOneFile('slow-fs', backing, mnt, 'disk.img', (_buf, len, pos, _cb, pass) => {
  if (!armed) return pass();
  process.stdout.write(`slow read ${pos}+${len}\n`);
  setTimeout(pass, Number(delayMs));
}, '-odirect_io,fsname=slow-fs,subtype=slowfs');
process.on('SIGUSR1', () => (armed = true));
process.on('SIGUSR2', () => (armed = false));
