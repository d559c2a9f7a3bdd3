/**
 * Decodes the FastLZ test blocks (intact, then COUNT damaged ones from SEED) with the decoder
 * src/io/native-decoder.ts picks in this process's environment, against the JavaScript decoder,
 * sync and on the thread pool. Prints {decoder, cases, differences, outcomes} as JSON.
 * Usage: node decode-check.js COUNT SEED
 */
import { damagedBlocks, decodeJs, decodeNative, difference, intactBlocks } from '../kit/fastlz-cases';
import { Rng } from '../../scripts/fuzz';
import { decoderInUse } from '../../src/io/native-decoder';

async function main(): Promise<void> {
  const [count, seed] = process.argv.slice(2).map(Number);
  const { blocks } = intactBlocks();
  const differences: string[] = [];
  const outcomes = new Set<string>();
  let cases = 0;
  for (const c of [...blocks, ...damagedBlocks(new Rng(seed as number), count as number, blocks)]) {
    const js = decodeJs(c);
    outcomes.add('damaged' in js ? js.damaged.replace(/\d+|0x[0-9a-f]+/g, 'N') : js.produced < 0 ? 'needs history' : 'decoded');
    for (const async of [false, true]) {
      const d = difference(js, await decodeNative(c, async));
      if (d) differences.push(`${c.what}${async ? ' (async)' : ''}: ${d}`);
    }
    cases++;
  }
  process.stdout.write(JSON.stringify({ decoder: decoderInUse(), cases, differences, outcomes: [...outcomes].sort() }) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`decode-check: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
