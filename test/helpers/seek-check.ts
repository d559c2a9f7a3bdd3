/**
 * Exercises the C seek index (native/seekindex.c) as the mount and libfuse's threads use it, for
 * the AddressSanitizer build: streams of guest-like memory in small blocks (raw ones among them,
 * beginning in the zero window) indexed with a roomy and a tiny allowance (points merging), read
 * while the pass runs (si_read_fd on the thread pool, seekDecode on the event loop) and after it,
 * against the plain memory and the JavaScript index; a damaged block (the same reason as the
 * JavaScript index gives, the blocks before it still served); a container file cut short and one
 * rewritten under the index (clean failures or bytes, never a memory error).
 * Prints {native, reads, differences, outcomes} as JSON. Usage: node seek-check.js DIR
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { compressStream } from '../kit/fastlz';
import { guestLikeMemory } from '../kit/fastlz-cases';
import { type BlockEntry, indexContainer } from '../../src/io/container';
import { FastLzError } from '../../src/io/fastlz';
import { type IndexHost, NativeSeekIndex, SeekIndex } from '../../src/io/seekindex';
import { BufferSource } from '../../src/io/source';

const differences: string[] = [];
const outcomes = new Set<string>();
let reads = 0;

function differ(what: string): void {
  if (differences.length < 50) differences.push(what);
}

function hostOf(stream: Buffer, allowance: number): IndexHost & { blocks: BlockEntry[] } {
  const blocks = indexContainer(new BufferSource('s.vmem', stream)).blocks;
  return {
    blocks,
    allowance,
    readRaw: (k) => Promise.resolve(Buffer.from(stream.subarray(blocks[k]!.dataOffset, blocks[k]!.dataOffset + blocks[k]!.stored))),
    reserve: () => undefined,
  };
}

/** Positions inside compressed block k: its start, its end, and some between. */
function* positions(b: BlockEntry, seed: number): Generator<[number, number]> {
  yield [b.start, Math.min(b.size, 5000)];
  yield [b.start + b.size - 1, 1];
  let x = seed;
  for (let i = 0; i < 12; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const within = x % b.size;
    yield [b.start + within, Math.min(b.size - within, 1 + (x % 70_000))];
  }
}

async function intact(dir: string, plain: Buffer, allowance: number, seed: number): Promise<void> {
  const stream = compressStream(plain, 256 * 1024).bytes;
  const file = path.join(dir, `intact-${allowance}.vmem`);
  fs.writeFileSync(file, stream);
  const fd = fs.openSync(file, 'r');
  try {
    const h = hostOf(stream, allowance);
    const c = NativeSeekIndex.create(h);
    if (!c) throw new Error('the addon has no seek index');
    const js = new SeekIndex(hostOf(stream, allowance));
    // Reads on the thread pool while the pass runs (points merging under them with the tiny
    // allowance): served, exact, or not yet (null), in waves until the pass ends.
    let running = true;
    const pass = c.build().finally(() => (running = false));
    const compressed = h.blocks.filter((b) => !b.raw);
    const during = (async () => {
      for (let wave = 0; running || wave < 2; wave++) {
        const batch: Promise<void>[] = [];
        for (let i = 0; i < 8; i++) {
          const b = compressed[(wave * 8 + i) % compressed.length] as BlockEntry;
          const [pos, n] = [...positions(b, seed + wave * 8 + i)][2 + (i % 12)] as [number, number];
          batch.push((async () => {
            const dst = Buffer.alloc(n);
            const r = await c.readFd(fd, pos, n, dst);
            outcomes.add(r === null ? 'not yet' : 'served during the pass');
            reads++;
            if (r !== null && !dst.equals(plain.subarray(pos, pos + n))) differ(`during the pass, ${n} at ${pos} (allowance ${allowance})`);
          })());
        }
        await Promise.all(batch);
      }
    })();
    await Promise.all([pass, during, js.build()]);
    if (!c.done || c.failure) differ(`pass not done: ${c.failure}`);
    if (allowance < 64 * 1024 && c.count >= js.count * 2) differ(`no merging: ${c.count} points`);
    for (const b of h.blocks) {
      if (b.raw) continue;
      const stored = (off: number, len: number): Buffer => stream.subarray(b.dataOffset + off, b.dataOffset + off + len);
      for (const [pos, n] of positions(b, seed * 7 + b.start)) {
        const want = plain.subarray(pos, pos + n);
        const viaFd = Buffer.alloc(n);
        const r = await c.readFd(fd, pos, n, viaFd);
        const viaC = Buffer.alloc(n + 1);
        c.readSync(Math.floor(pos / (256 * 1024)), pos, n, viaC, 1, stored);
        const viaJs = Buffer.alloc(n);
        await js.read(Math.floor(pos / (256 * 1024)), pos, n, viaJs, 0, (off, len) => Promise.resolve(stored(off, len)));
        reads += 3;
        if (r !== n || !viaFd.equals(want)) differ(`si_read_fd ${n} at ${pos}`);
        if (!viaC.subarray(1).equals(want)) differ(`seekDecode ${n} at ${pos}`);
        if (!viaJs.equals(want)) differ(`JavaScript index ${n} at ${pos}`);
      }
    }
    outcomes.add(`indexed with allowance ${allowance}`);

    // The file cut short under the index: the reads past the cut fail cleanly.
    const cut = path.join(dir, `cut-${allowance}.vmem`);
    fs.writeFileSync(cut, stream.subarray(0, stream.length >> 1));
    // The file rewritten under the index: damage, or other bytes, never a memory error.
    const bent = Buffer.from(stream);
    for (let i = 0; i < 64; i++) bent[(i * 2654435761) % bent.length] ^= 0x5a;
    const bentFile = path.join(dir, `bent-${allowance}.vmem`);
    fs.writeFileSync(bentFile, bent);
    for (const f of [cut, bentFile]) {
      const other = fs.openSync(f, 'r');
      try {
        for (const b of h.blocks) {
          if (b.raw) continue;
          for (const [pos, n] of positions(b, seed + 3)) {
            reads++;
            await c.readFd(other, pos, n, Buffer.alloc(n)).then(
              () => outcomes.add('read a changed file'),
              (err: Error) => outcomes.add(err instanceof FastLzError ? 'damaged' : err.message.replace(/\d+/g, 'N')),
            );
          }
        }
      } finally {
        fs.closeSync(other);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

async function damaged(plain: Buffer): Promise<void> {
  const stream = Buffer.from(compressStream(plain, 256 * 1024).bytes);
  const blocks = indexContainer(new BufferSource('s.vmem', stream)).blocks;
  const compressed = blocks.filter((b) => !b.raw);
  const victim = compressed[Math.floor(compressed.length / 2)] as BlockEntry;
  const k = blocks.indexOf(victim);
  for (let i = 0; i < 40; i++) stream[victim.dataOffset + Math.floor((victim.stored * i) / 40)] ^= 0xa5;
  const c = NativeSeekIndex.create(hostOf(stream, 1 << 20));
  const js = new SeekIndex(hostOf(stream, 1 << 20));
  if (!c) throw new Error('the addon has no seek index');
  await Promise.all([c.build(), js.build()]);
  outcomes.add(c.failure ? 'stopped at a damaged block' : 'the damage went unseen');
  if (c.failure !== js.failure) differ(`failures differ: C ${c.failure}, JavaScript ${js.failure}`);
  if (c.indexed !== k || js.indexed !== k) differ(`indexed ${c.indexed} (C) and ${js.indexed} (JavaScript), damaged block ${k}`);
  for (const [j, b] of blocks.slice(0, k).entries()) {
    if (b.raw) continue;
    const out = Buffer.alloc(b.size);
    c.readSync(j, b.start, b.size, out, 0, (off, len) => stream.subarray(b.dataOffset + off, b.dataOffset + off + len));
    reads++;
    if (!out.equals(plain.subarray(b.start, b.start + b.size))) differ(`block before the damage at ${b.start}`);
  }
}

async function main(): Promise<void> {
  const dir = process.argv[2] as string;
  const plain = guestLikeMemory(1024);
  await intact(dir, plain, 1 << 20, 1);
  await intact(dir, plain, 4096, 2);
  await damaged(plain);
  process.stdout.write(JSON.stringify({ native: true, reads, differences, outcomes: [...outcomes].sort() }) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`seek-check: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
