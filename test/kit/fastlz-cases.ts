/**
 * FastLZ blocks to hold the native decoder (src/io/native-decoder.ts) to the JavaScript one
 * (src/io/fastlz.ts): intact blocks from the project's encoder (guest-like memory, matches into
 * the zeroed window before the stream's start, overlapping and far matches, long lengths), and
 * the same damaged. Used by the tests, the fuzzer (`make fuzz`) and the AddressSanitizer run.
 */
import { FastLzError, MAX_DISTANCE, fastLzDecode, type DecodeStop } from '../../src/io/fastlz';
import { decodeBlock, decodeBlockAsync } from '../../src/io/native-decoder';
import { compressiblePage } from './encrypted-vm';
import { FastLzStream, type EncoderStats } from './fastlz';

/** One block to decode: its tokens, the window before it (out[0, history.length)), its size. */
export interface BlockCase {
  what: string;
  payload: Buffer;
  history: Buffer;
  size: number;
  /** Where the valid history starts (past 0: the decoder must answer NEEDS_HISTORY for reaches before it). */
  historyStart: number;
  ip0: number;
  atBlockStart: boolean;
  /** A stop position (absolute in out), or null. */
  stopAt: number | null;
  /** What the intact block decodes to. */
  expected: Buffer;
}

/** Guest-like memory: zero pages, text, near-copies of pages, pointer tables, incompressible pages. */
export function guestLikeMemory(pages: number, first = 0): Buffer {
  const mem = Buffer.alloc(pages * 4096);
  const page = (i: number): Buffer => mem.subarray(i * 4096, (i + 1) * 4096);
  for (let i = 0; i < pages; i++) compressiblePage(first + i, page(i), (b) => (i >= b ? page(i - b) : null));
  return mem;
}

/** The blocks of an encoded stream, each with the window before it (zeros before the stream's start). */
export function streamBlocks(name: string, data: Buffer, blockSize: number, enc = new FastLzStream()): { blocks: BlockCase[]; stats: EncoderStats } {
  const blocks: BlockCase[] = [];
  // The stream's output so far, after MAX_DISTANCE zeros: VMware's zeroed window.
  const all = Buffer.concat([Buffer.alloc(MAX_DISTANCE), data]);
  for (let o = 0, k = 0; o < data.length; o += blockSize, k++) {
    const size = Math.min(blockSize, data.length - o);
    const bytes = enc.encodeBlock(data.subarray(o, o + size));
    const stored = bytes.readUInt32LE(8);
    if (stored === size) continue; // stored raw: nothing to decode
    const at = MAX_DISTANCE + o;
    blocks.push({
      what: `${name} block ${k}`,
      payload: bytes.subarray(16),
      history: Buffer.from(all.subarray(at - MAX_DISTANCE, at)),
      size,
      historyStart: 0,
      ip0: 0,
      atBlockStart: true,
      stopAt: null,
      expected: data.subarray(o, o + size),
    });
  }
  return { blocks, stats: enc.stats };
}

/**
 * Intact blocks covering the grammar: guest-like memory in 40000-byte blocks (matches across
 * blocks), a stream whose first block matches into the zeroed window, far matches (distance
 * 8192 and more) and long overlapping runs.
 */
export function intactBlocks(): { blocks: BlockCase[]; stats: EncoderStats[] } {
  const guest = streamBlocks('guest-like', guestLikeMemory(96), 40000);
  // The encoder's window starts at the stream's start; a first block of zeros encoded before the
  // block of interest leaves exactly VMware's zeroed window behind it.
  const zeroEnc = new FastLzStream();
  zeroEnc.encodeBlock(Buffer.alloc(MAX_DISTANCE));
  const zeroData = Buffer.concat([Buffer.alloc(3 * 4096), guestLikeMemory(8, 200)]);
  const zero = streamBlocks('zero-window', zeroData, zeroData.length, zeroEnc);
  for (const b of zero.blocks) b.history = Buffer.alloc(MAX_DISTANCE);
  // Far matches: a random 4 KiB repeated 20000 bytes later, then runs of one byte and of short patterns.
  const far = Buffer.alloc(64 * 1024);
  let x = 12345;
  for (let o = 0; o < 4096; o++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    far[o] = x >>> 24;
  }
  far.copy(far, 20000, 0, 4096);
  far.copy(far, 40000, 0, 2048);
  far.fill(0x41, 50000, 53000);
  for (let o = 53000; o < 60000; o++) far[o] = [1, 2, 3, 4, 5][o % 5] as number;
  const farS = streamBlocks('far-matches', far, far.length);
  return { blocks: [...guest.blocks, ...zero.blocks, ...farS.blocks], stats: [guest.stats, zero.stats, farS.stats] };
}

/** What a decode came to: bytes (and where it stopped), NEEDS_HISTORY, or a damage reason. */
export type Outcome = { produced: number; out: Buffer; ip?: number; op?: number } | { damaged: string };

function outcome(run: () => number, out: Buffer, stop: DecodeStop | undefined): Outcome {
  try {
    const produced = run();
    return { produced, out, ...(stop ? { ip: stop.ip, op: stop.op } : {}) };
  } catch (err) {
    if (err instanceof FastLzError) return { damaged: err.message };
    throw err;
  }
}

function setUp(c: BlockCase): { out: Buffer; stop: DecodeStop | undefined; args: [number, number, number] } {
  const out = Buffer.alloc(c.history.length + c.size);
  c.history.copy(out);
  const stop = c.stopAt === null ? undefined : { at: c.stopAt, ip: -1, op: -1 };
  return { out, stop, args: [c.history.length, out.length, c.historyStart] };
}

/** Decode c with the JavaScript decoder. */
export function decodeJs(c: BlockCase): Outcome {
  const { out, stop, args } = setUp(c);
  return outcome(() => fastLzDecode(c.payload, c.ip0, out, ...args, c.atBlockStart, stop), out, stop);
}

/** Decode c with the native decoder (the JavaScript one when the addon is absent), sync or on the thread pool. */
export async function decodeNative(c: BlockCase, async: boolean): Promise<Outcome> {
  const { out, stop, args } = setUp(c);
  if (!async) return outcome(() => decodeBlock(c.payload, c.ip0, out, ...args, c.atBlockStart, stop), out, stop);
  try {
    const produced = await decodeBlockAsync(c.payload, c.ip0, out, ...args, c.atBlockStart, stop);
    return { produced, out, ...(stop ? { ip: stop.ip, op: stop.op } : {}) };
  } catch (err) {
    if (err instanceof FastLzError) return { damaged: err.message };
    throw err;
  }
}

/**
 * How two outcomes differ, or null when they agree: the same bytes (the block's output up to
 * where it ended) and stop point, or both NEEDS_HISTORY, or the same damage reason.
 */
export function difference(js: Outcome, native: Outcome): string | null {
  if ('damaged' in js || 'damaged' in native) {
    const a = 'damaged' in js ? js.damaged : `produced ${js.produced}`;
    const b = 'damaged' in native ? native.damaged : `produced ${native.produced}`;
    return a === b ? null : `JavaScript: ${a}; native: ${b}`;
  }
  if (js.produced !== native.produced) return `JavaScript produced ${js.produced}, native ${native.produced}`;
  if (js.ip !== native.ip || js.op !== native.op) return `stopped at ip ${js.ip} op ${js.op} (JavaScript) and ip ${native.ip} op ${native.op} (native)`;
  if (js.produced < 0) return null; // NEEDS_HISTORY: nothing to compare but the answer
  const end = js.op ?? js.out.length;
  const i = js.out.subarray(0, end).findIndex((v, k) => native.out[k] !== v);
  return i < 0 ? null : `outputs differ at byte ${i}`;
}

/** A source of choices (the fuzzer's Rng). */
export interface Choice {
  int(n: number): number;
}

/** One damaged (or re-aimed) variant of an intact block. */
export function damageBlock(c: BlockCase, rng: Choice): BlockCase {
  const p = Buffer.from(c.payload);
  const at = rng.int(p.length);
  const v: BlockCase = { ...c, payload: p };
  switch (rng.int(11)) {
    case 0:
      return { ...v, payload: p.subarray(0, at), what: `${c.what} truncated to ${at}` };
    case 1: {
      const n = 1 + rng.int(8);
      for (let i = 0; i < n; i++) p[rng.int(p.length)] ^= 1 + rng.int(255);
      return { ...v, what: `${c.what}, ${n} bytes flipped` };
    }
    case 2:
      // A length escape that runs on: 255s to the end, or many of them mid-block.
      p.fill(255, at, Math.min(p.length, at + 1 + rng.int(600)));
      return { ...v, what: `${c.what}, 255s from ${at}` };
    case 3: {
      const len = 1 + rng.int(512);
      const from = rng.int(Math.max(1, p.length - len));
      Buffer.from(p.subarray(from, from + len)).copy(p, at);
      return { ...v, what: `${c.what}, ${len} bytes from ${from} copied to ${at}` };
    }
    case 4: {
      const size = Math.max(0, c.size + rng.int(65) - 32);
      return { ...v, size, what: `${c.what}, told ${size} bytes` };
    }
    case 5: {
      const historyStart = rng.int(c.history.length + 1);
      return { ...v, historyStart, what: `${c.what}, history from ${historyStart}` };
    }
    case 6:
      p[0] = rng.int(256);
      return { ...v, what: `${c.what}, first control byte 0x${(p[0] as number).toString(16)}` };
    case 7: {
      const stopAt = c.history.length + rng.int(c.size + 2);
      return { ...v, stopAt, what: `${c.what}, stop at ${stopAt}` };
    }
    case 8:
      // Resuming mid-block at an arbitrary byte: rarely a token boundary, so mostly damage.
      return { ...v, ip0: at, atBlockStart: rng.int(2) === 0, what: `${c.what}, resumed at input ${at}` };
    case 9: {
      // Told the size its first tokens make, with the rest of its tokens still there: the output
      // ends at a token boundary while input remains (the edge where copies in words must stop).
      const out = Buffer.alloc(c.history.length + c.size);
      c.history.copy(out);
      const stop = { at: c.history.length + rng.int(c.size + 1), ip: 0, op: 0 };
      const r = fastLzDecode(c.payload, 0, out, c.history.length, out.length, 0, true, stop);
      const size = r < 0 ? c.size : stop.op - c.history.length;
      return { ...v, size, what: `${c.what}, told the ${size} bytes of its tokens up to input ${stop.ip}` };
    }
    default:
      return { ...v, payload: p.subarray(0, rng.int(3)), what: `${c.what}, ${Math.min(p.length, 2)} bytes or fewer` };
  }
}

/** `count` damaged cases from the intact blocks, deterministic for a given choice source. */
export function* damagedBlocks(rng: Choice, count: number, intact = intactBlocks().blocks): Generator<BlockCase> {
  for (let i = 0; i < count; i++) yield damageBlock(intact[rng.int(intact.length)] as BlockCase, rng);
}
