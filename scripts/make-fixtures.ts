// Writes the deterministic test fixtures:
//   node dist/scripts/make-fixtures.js [OUTDIR]     (default: <repo>/fixtures)
// Output is byte-for-byte identical on every run.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { writeSnapshot } from '../test/kit/writer';

function sha256File(p: string): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(p, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    let n: number;
    let pos = 0;
    while ((n = fs.readSync(fd, buf, 0, buf.length, pos)) > 0) {
      h.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

function main(): void {
  // dist/scripts/make-fixtures.js -> repo root is two directories up
  const outDir = path.resolve(process.argv[2] ?? path.join(__dirname, '..', '..', 'fixtures'));
  fs.mkdirSync(outDir, { recursive: true });

  const samplePath = path.join(outDir, 'sample.vmss');
  const snap = writeSnapshot(samplePath, {
    memory: 'embedded',
    vcpus: 2,
    // 3 MiB below 4 GiB, 1 MiB at 4 GiB
    regions: [
      { ppn: 0, pageNum: 0, pages: 768 },
      { ppn: 0x100000, pageNum: 768, pages: 256 },
    ],
    blobPages: 1024,
    shuffle: true,
  });

  const lines = [`${sha256File(samplePath)}  sample.vmss`, `${snap.physSha256()}  physmem.raw`];
  fs.writeFileSync(path.join(outDir, 'sample.sha256'), lines.join('\n') + '\n');
  process.stdout.write(`wrote ${samplePath} (${snap.fileSize} bytes)\n${lines.join('\n')}\n`);
}

main();
