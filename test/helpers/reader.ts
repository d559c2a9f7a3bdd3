/**
 * A reader process for concurrency tests: reads the given ranges of a file (in the mount) and
 * prints one sha256 per range. Usage: node reader.js FILE '[[pos,len],...]'
 */
import { createHash } from 'node:crypto';
import { readRange } from './read';

async function main(): Promise<void> {
  const [file, spec] = process.argv.slice(2);
  const ranges = JSON.parse(spec as string) as [number, number][];
  for (const [pos, len] of ranges) {
    const data = await readRange(file as string, pos, len);
    process.stdout.write(createHash('sha256').update(data).digest('hex') + '\n');
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`reader: ${(err as Error).message}\n`);
  process.exit(1);
});
