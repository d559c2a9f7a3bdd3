// `make bench-decode` (and `make bench`): FastLZ decoding speed, the JavaScript decoder
// (src/io/fastlz.ts) against the native one (native/fastlz.c), on the same guest-like memory in
// 4 MiB blocks, rounds interleaved so that a machine whose load drifts slows both alike. Medians
// of BENCH_ROUNDS rounds (default 5) of BENCH_DECODE_MIB MiB (default 128), in MB/s of output.
//
//   js      one block after another, each with the tail of the one before as its window
//   c       the same, natively, on the calling thread
//   c-pool  every block at once on libuv's thread pool, each given its window (as a seek index
//           would give it): what several cores decode together
//
// And encobj decryption (AES-256-CBC, 4064-byte pages), Node's crypto as src/io/encobj.ts uses it
// against the addon's EVP calls into Node's own OpenSSL, page by page (a Decipher per page, as a
// single-page read does) and 4 MiB at a time (one CBC pass, as a block read does).
import * as crypto from 'node:crypto';
import { MAX_DISTANCE, fastLzDecode } from '../src/io/fastlz';
import { decryptPagesNative } from '../src/io/native-crypto';
import { decodeBlock, decodeBlockAsync, decoderInUse } from '../src/io/native-decoder';
import { guestLikeMemory } from '../test/kit/fastlz-cases';
import { FastLzStream } from '../test/kit/fastlz';

const ROUNDS = Math.max(3, Number(process.env.BENCH_ROUNDS ?? 5) || 5);
const MIB = Math.max(8, Number(process.env.BENCH_DECODE_MIB ?? 128) || 128);
const BLOCK = 4 * 1024 * 1024;

interface Block {
  payload: Buffer;
  start: number;
  size: number;
}

type Decode = (input: Buffer, ip0: number, out: Buffer, outStart: number, outEnd: number, historyStart: number, atBlockStart: boolean) => number;

function sequential(decode: Decode, blocks: Block[], data: Buffer): number {
  const out = Buffer.alloc(MAX_DISTANCE + data.length);
  const t = process.hrtime.bigint();
  for (const b of blocks) {
    const at = MAX_DISTANCE + b.start;
    if (decode(b.payload, 0, out, at, at + b.size, 0, true) !== b.size) throw new Error('decode failed');
  }
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  if (!out.subarray(MAX_DISTANCE).equals(data)) throw new Error('decoded bytes differ from the memory');
  return data.length / s / 1e6;
}

async function pooled(blocks: Block[], data: Buffer): Promise<number> {
  const windowed = Buffer.concat([Buffer.alloc(MAX_DISTANCE), data]);
  const outs = blocks.map((b) => {
    const o = Buffer.alloc(MAX_DISTANCE + b.size);
    windowed.copy(o, 0, b.start, b.start + MAX_DISTANCE);
    return o;
  });
  const t = process.hrtime.bigint();
  const made = await Promise.all(blocks.map((b, i) => decodeBlockAsync(b.payload, 0, outs[i] as Buffer, MAX_DISTANCE, MAX_DISTANCE + b.size, 0, true)));
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  blocks.forEach((b, i) => {
    if (made[i] !== b.size || !(outs[i] as Buffer).subarray(MAX_DISTANCE).equals(data.subarray(b.start, b.start + b.size))) throw new Error('decode failed');
  });
  return data.length / s / 1e6;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

export async function decodeBench(log: (line: string) => void): Promise<void> {
  const data = guestLikeMemory(MIB * 256);
  const enc = new FastLzStream();
  const blocks: Block[] = [];
  let stored = 0;
  for (let o = 0; o < data.length; o += BLOCK) {
    const size = Math.min(BLOCK, data.length - o);
    const bytes = enc.encodeBlock(data.subarray(o, o + size));
    stored += bytes.length;
    if (bytes.readUInt32LE(8) === size) throw new Error('a block was stored raw');
    blocks.push({ payload: bytes.subarray(16), start: o, size });
  }
  log(`decode: ${MIB} MiB of guest-like memory in ${blocks.length} blocks of 4 MiB (${(stored / data.length * 100).toFixed(0)}% stored); native decoder: ${decoderInUse()}`);
  const js: number[] = [];
  const c: number[] = [];
  const pool: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    // ABBA order: the first contender of a round is the second of the next.
    const order = r % 2 === 0 ? ['js', 'c'] : ['c', 'js'];
    for (const k of order) (k === 'js' ? js : c).push(sequential(k === 'js' ? fastLzDecode : decodeBlock, blocks, data));
    pool.push(await pooled(blocks, data));
  }
  const f = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join('/');
  log(`decode MB/s per round: js ${f(js)}; c ${f(c)}; c-pool ${f(pool)}`);
  log(`decode MB/s, medians: js ${median(js).toFixed(0)}, c ${median(c).toFixed(0)} (${(median(c) / median(js)).toFixed(1)}x), c-pool ${median(pool).toFixed(0)} (${(median(pool) / median(js)).toFixed(1)}x)`);
}

/** Node's crypto over `pages` pages: a Decipher per page, or one CBC pass with each page's first block fixed up. */
function jsDecrypt(key: Buffer, raw: Buffer, pages: number, dst: Buffer, perPage: boolean): void {
  if (perPage) {
    for (let p = 0; p < pages; p++) {
      const d = crypto.createDecipheriv('aes-256-cbc', key, raw.subarray(p * 4096 + 4064, p * 4096 + 4080));
      d.setAutoPadding(false);
      const a = d.update(raw.subarray(p * 4096, p * 4096 + 4064));
      a.copy(dst, p * 4064);
      d.final().copy(dst, p * 4064 + a.length);
    }
    return;
  }
  const cbc = crypto.createDecipheriv('aes-256-cbc', key, Buffer.alloc(16));
  cbc.setAutoPadding(false);
  for (let s = 0; s < pages; s += 16) {
    const e = Math.min(pages, s + 16);
    const d = cbc.update(raw.subarray(s * 4096, e * 4096));
    for (let p = s; p < e; p++) {
      const at = (p - s) * 4096;
      for (let i = 0; i < 16; i++) d[at + i] = (d[at + i] as number) ^ (p === 0 ? 0 : (raw[p * 4096 - 16 + i] as number)) ^ (raw[p * 4096 + 4064 + i] as number);
      d.copy(dst, p * 4064, at, at + 4064);
    }
  }
}

export function cryptoBench(log: (line: string) => void): void {
  const key = Buffer.alloc(32, 0x5a);
  const pages = 8192; // 32 MiB of container
  const raw = crypto.randomBytes(pages * 4096);
  const ref = Buffer.alloc(pages * 4064);
  jsDecrypt(key, raw, pages, ref, false);
  const rows: Record<string, number[]> = { 'js-page': [], 'c-page': [], 'js-4m': [], 'c-4m': [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const k of r % 2 === 0 ? Object.keys(rows) : Object.keys(rows).reverse()) {
      const dst = Buffer.alloc(pages * 4064);
      const step = k.endsWith('page') ? 1 : 1024;
      const t = process.hrtime.bigint();
      for (let p = 0; p < pages; p += step) {
        const part = raw.subarray(p * 4096, (p + step) * 4096);
        const out = dst.subarray(p * 4064, (p + step) * 4064);
        if (k.startsWith('js')) jsDecrypt(key, part, step, out, step === 1);
        else if (!decryptPagesNative(key, part, step, 0, step * 4064, out, 0)) throw new Error('the addon cannot decrypt');
      }
      const s = Number(process.hrtime.bigint() - t) / 1e9;
      if (!dst.equals(ref)) throw new Error(`${k} decrypted other bytes`);
      (rows[k] as number[]).push((pages * 4064) / s / 1e6);
    }
  }
  const f = (k: string): string => median(rows[k] as number[]).toFixed(0);
  log(`encobj MB/s per round: ${Object.entries(rows).map(([k, v]) => `${k} ${v.map((x) => x.toFixed(0)).join('/')}`).join('; ')}`);
  log(`encobj MB/s, medians: per page js ${f('js-page')}, c ${f('c-page')}; 4 MiB at a time js ${f('js-4m')}, c ${f('c-4m')}`);
}

if (require.main === module) {
  decodeBench((line) => process.stdout.write(line + '\n'))
    .then(() => cryptoBench((line) => process.stdout.write(line + '\n'))).catch((err: unknown) => {
    process.stderr.write(`decode-bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
