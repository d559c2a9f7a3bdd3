/**
 * Reads ranges of an encobj container's plaintext through EncObjSource (sync and async) and
 * prints one sha256 per range and read, with the decryption the environment selects (native, or
 * JavaScript with VMSSFS_NATIVE=0). Usage: node encobj-read.js FILE KEYHEX '[[pos,len],...]'
 */
import { createHash } from 'node:crypto';
import { EncObjSource } from '../../src/io/encobj';
import { SourceFile } from '../../src/io/source';

async function main(): Promise<void> {
  const [file, keyHex, spec] = process.argv.slice(2);
  const src = EncObjSource.open(SourceFile.open(file as string), Buffer.from(keyHex as string, 'hex'));
  try {
    for (const [pos, len] of JSON.parse(spec as string) as [number, number][]) {
      const a = Buffer.alloc(len);
      const n = await src.read(a, 0, len, pos);
      const b = Buffer.alloc(len);
      const m = src.readAtSync(b, pos);
      for (const x of [a.subarray(0, n), b.subarray(0, m)]) process.stdout.write(createHash('sha256').update(x).digest('hex') + '\n');
    }
  } finally {
    src.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`encobj-read: ${(err as Error).message}\n`);
  process.exit(1);
});
