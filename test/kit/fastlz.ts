/**
 * A FastLZ level-2 encoder for the fixture writer: VMware's compressed memory stream, a sequence
 * of blocks (16-byte header, then the block's tokens) whose match window runs on across blocks.
 * Greedy, with a hash of three bytes; good enough to make every construct of the grammar appear.
 */

/** Bytes of history a match may reach: distances 1 .. 8192 + 0xffff. */
const MAX_DIST = 8192 + 0xffff;
const NEAR_MAX = 8191;
const HASH_LOG = 16;
export const BLOCK_SIZE = 0x400000;

export interface EncoderStats {
  blocks: number;
  rawBlocks: number;
  literalRuns: number;
  nearMatches: number;
  farMatches: number;
  /** Matches of 9 bytes or more (the length escape). */
  longMatches: number;
  /** Matches that overlap their own output (distance < length). */
  overlapping: number;
  /** Matches reaching into an earlier block. */
  crossBlock: number;
}

function hash3(b: Buffer, i: number): number {
  const v = (b[i] as number) | ((b[i + 1] as number) << 8) | ((b[i + 2] as number) << 16);
  return Math.imul(v, 2654435761) >>> (32 - HASH_LOG);
}

/** Encodes a stream block by block; each call gets the next block's plaintext. */
export class FastLzStream {
  /** The last MAX_DIST bytes of the stream so far. */
  private history = Buffer.alloc(0);
  private streamPos = 0;
  /** Absolute stream position of the last place each hash was seen, -1 for none. */
  private readonly table = new Float64Array(1 << HASH_LOG).fill(-1);
  readonly stats: EncoderStats = { blocks: 0, rawBlocks: 0, literalRuns: 0, nearMatches: 0, farMatches: 0, longMatches: 0, overlapping: 0, crossBlock: 0 };

  /**
   * The block's container bytes: header ‖ payload. `opts.raw` stores it uncompressed; a block
   * that does not shrink is stored raw anyway (compressed size = uncompressed size means raw).
   * `opts.noHistory` keeps this block's matches inside it (as if the window started here).
   */
  encodeBlock(block: Buffer, opts: { raw?: boolean; noHistory?: boolean } = {}): Buffer {
    if (block.length === 0 || block.length > BLOCK_SIZE) throw new RangeError(`block of ${block.length} bytes`);
    const buf = Buffer.concat([this.history, block]);
    const base = this.streamPos - this.history.length;
    const start = this.history.length;
    let payload = opts.raw ? null : this.tokens(buf, base, start, opts.noHistory ? start : 0);
    if (payload === null || payload.length >= block.length) {
      payload = block;
      this.stats.rawBlocks++;
    }
    this.stats.blocks++;
    this.streamPos += block.length;
    this.history = Buffer.from(buf.subarray(Math.max(0, buf.length - MAX_DIST)));
    const header = Buffer.alloc(16);
    header.writeUInt32LE(block.length, 0);
    header.writeUInt32LE(payload.length, 8);
    return Buffer.concat([header, payload]);
  }

  private tokens(buf: Buffer, base: number, start: number, floor: number): Buffer {
    const out: number[] = [];
    const end = buf.length;
    let lit = start; // first byte not yet emitted
    const flushLiterals = (to: number): void => {
      while (lit < to) {
        const run = Math.min(32, to - lit);
        // The block's first token carries the level-2 mark in its top three bits.
        out.push(out.length === 0 ? 0x20 | (run - 1) : run - 1);
        for (let k = 0; k < run; k++) out.push(buf[lit + k] as number);
        lit += run;
        this.stats.literalRuns++;
      }
    };
    // The first byte is always a literal: the block must open with a literal run.
    let i = start + 1;
    while (i + 3 <= end) {
      const h = hash3(buf, i);
      const cand = this.table[h] as number;
      this.table[h] = base + i;
      const c = cand - base;
      const dist = i - c;
      if (cand < 0 || c < floor || dist < 1 || dist > MAX_DIST || buf[c] !== buf[i] || buf[c + 1] !== buf[i + 1] || buf[c + 2] !== buf[i + 2]) {
        i++;
        continue;
      }
      let len = 3;
      while (i + len < end && buf[c + len] === buf[i + len]) len++;
      flushLiterals(i);
      this.emitMatch(out, len, dist);
      if (c < start) this.stats.crossBlock++;
      // Remember the match's last positions too, so that a repeat right after it is found.
      for (let k = Math.max(i + 1, i + len - 3); k + 3 <= Math.min(end, i + len + 2); k++) this.table[hash3(buf, k)] = base + k;
      i += len;
      lit = i;
    }
    flushLiterals(end);
    return Buffer.from(out);
  }

  private emitMatch(out: number[], len: number, dist: number): void {
    const far = dist > NEAR_MAX;
    const code = far ? 31 : (dist - 1) >> 8;
    if (len < 9) {
      out.push(((len - 2) << 5) | code);
    } else {
      out.push((7 << 5) | code);
      let rest = len - 9;
      while (rest >= 255) {
        out.push(255);
        rest -= 255;
      }
      out.push(rest);
      this.stats.longMatches++;
    }
    if (far) {
      const d = dist - 8192;
      out.push(255, d >> 8, d & 255);
      this.stats.farMatches++;
    } else {
      out.push((dist - 1) & 255);
      this.stats.nearMatches++;
    }
    if (dist < len) this.stats.overlapping++;
  }
}

/** The whole container for `data`, in 4 MiB blocks (the last one shorter). */
export function compressStream(data: Buffer, blockSize = BLOCK_SIZE): { bytes: Buffer; stats: EncoderStats } {
  const enc = new FastLzStream();
  const parts: Buffer[] = [];
  for (let o = 0; o < data.length; o += blockSize) parts.push(enc.encodeBlock(data.subarray(o, Math.min(data.length, o + blockSize))));
  return { bytes: Buffer.concat(parts), stats: enc.stats };
}
