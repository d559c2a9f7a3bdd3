/**
 * FastLZ level 2, the codec of VMware's compressed memory blocks (the grammar is in
 * docs/format.md). Output goes into a buffer whose bytes before `outStart` are the history the
 * block may reference: the tail of the previous block's output, since the window runs across
 * blocks, and zeros before the stream's start.
 */
import { lastAtOrBefore } from '../bisect';

/** Farthest a match can reach back: the escaped distance 8192 + 0xffff, plus one. */
export const MAX_DISTANCE = 8192 + 0xffff + 1;

/** The block referenced bytes before the history it was given: it needs its predecessor's tail. */
export const NEEDS_HISTORY = -1;

export class FastLzError extends Error {}

/**
 * Where a decode given a stop position ended: the input offset of the next token and the output
 * position it writes at (a token boundary, so decoding can resume there later: a seek point).
 */
export interface DecodeStop {
  /** Stop at the first token boundary at or after this output position. */
  at: number;
  /** Set on return: the next token's offset in the input, and the output position reached. */
  ip: number;
  op: number;
}

/**
 * Decode tokens from input[ip0..] into out[outStart, outEnd); out[historyStart, outStart) holds
 * valid history. The caller prefills zeros for positions before the stream's start: VMware's
 * window is zeroed there, and its encoder matches a guest's first zero pages into it.
 * `atBlockStart`: input[ip0] is the block's first control byte, which carries the level-2 mark.
 *
 * Returns the bytes produced; NEEDS_HISTORY when a match reached before historyStart (nothing
 * else is wrong yet: give it more history); throws FastLzError when the stream is damaged (runs
 * out, overruns, ends short). Without `stop`, the input must produce exactly outEnd - outStart
 * bytes. With `stop`, decoding ends at the first token boundary at or after stop.at, or where the
 * input ends (the caller checks the output reached), and stop.ip / stop.op say where: a seek
 * point. The native decoder (native/) implements this same contract.
 * Each step consumes input or the loop ends, so time is bounded by the input and output sizes.
 */
export function fastLzDecode(
  input: Buffer, ip0: number, out: Buffer, outStart: number, outEnd: number, historyStart: number, atBlockStart: boolean, stop?: DecodeStop,
): number {
  const inEnd = input.length;
  if (ip0 >= inEnd) throw new FastLzError(atBlockStart ? 'empty block' : 'no tokens to decode');
  const limit = stop ? stop.at : Infinity;
  let ip = ip0;
  let op = outStart;
  let ctrl = input[ip++] as number;
  if (atBlockStart) {
    if (ctrl >> 5 > 1) throw new FastLzError(`first control byte 0x${ctrl.toString(16)} is not a level-2 literal run`);
    ctrl &= 31;
  }
  for (;;) {
    if (ctrl < 32) {
      const run = ctrl + 1;
      if (ip + run > inEnd) throw new FastLzError(`literal run of ${run} bytes runs past the block's end`);
      if (op + run > outEnd) throw new FastLzError(`literal run overruns the block's ${outEnd - outStart} bytes`);
      // At most 32 bytes: a loop beats Buffer.copy's call overhead.
      for (let i = 0; i < run; i++) out[op + i] = input[ip + i] as number;
      ip += run;
      op += run;
    } else {
      let len = (ctrl >> 5) + 2;
      if (len === 9) {
        let b: number;
        do {
          if (ip >= inEnd) throw new FastLzError('match length runs past the block\'s end');
          b = input[ip++] as number;
          len += b;
        } while (b === 255);
      }
      if (ip >= inEnd) throw new FastLzError('match distance runs past the block\'s end');
      const lo = input[ip++] as number;
      let dist: number;
      if ((ctrl & 31) === 31 && lo === 255) {
        if (ip + 2 > inEnd) throw new FastLzError('far match distance runs past the block\'s end');
        dist = 8192 + (((input[ip] as number) << 8) | (input[ip + 1] as number));
        ip += 2;
      } else {
        dist = (((ctrl & 31) << 8) | lo) + 1;
      }
      const ref = op - dist;
      if (ref < historyStart) return NEEDS_HISTORY;
      if (op + len > outEnd) throw new FastLzError(`match overruns the block's ${outEnd - outStart} bytes`);
      copyMatch(out, op, ref, len, dist);
      op += len;
    }
    if (ip >= inEnd || op >= limit) break;
    ctrl = input[ip++] as number;
  }
  if (stop) {
    stop.ip = ip;
    stop.op = op;
  } else if (op !== outEnd) {
    throw new FastLzError(`block decoded to ${op - outStart} bytes, its header says ${outEnd - outStart}`);
  }
  return op - outStart;
}

const fill = Uint8Array.prototype.fill;

/** Copy a match, which may overlap its own output (then it repeats the last `dist` bytes). */
function copyMatch(out: Buffer, op: number, ref: number, len: number, dist: number): void {
  if (len <= 16) {
    for (let i = 0; i < len; i++) out[op + i] = out[ref + i] as number;
  } else if (dist === 1) {
    // The typed array's own fill: Buffer's wrapper costs more than short runs do.
    fill.call(out, out[ref] as number, op, op + len);
  } else if (dist >= len) {
    out.copyWithin(op, ref, ref + len);
  } else {
    // Overlapping: the pattern of `dist` bytes repeats; copy in growing, non-overlapping steps.
    let done = 0;
    let span = dist;
    while (done < len) {
      const n = Math.min(span, len - done);
      out.copyWithin(op + done, ref, ref + n);
      done += n;
      span += n;
    }
  }
}

/**
 * A block's tokens without their output: where each starts in the output, and for a literal
 * run where its bytes are in the input, for a match its distance. Parsing costs a pass over
 * the control bytes only, and answers "where does output byte o come from" (origin) without
 * decoding: LZ copies bytes unchanged, so every byte is a literal of some token in the end.
 */
export class TokenIndex {
  private readonly outAt: Int32Array;
  /** Input offset of a literal run's bytes, or -(distance) for a match. */
  private readonly arg: Int32Array;
  private readonly count: number;

  constructor(private readonly input: Buffer, readonly size: number) {
    const cap = Math.max(16, Math.min(input.length, size) + 1);
    let outAt: Int32Array = new Int32Array(Math.min(cap, 1 << 16));
    let arg: Int32Array = new Int32Array(outAt.length);
    let n = 0;
    const push = (o: number, a: number): void => {
      if (n === outAt.length) {
        const grow = (x: Int32Array): Int32Array => {
          const y = new Int32Array(Math.min(cap, x.length * 2));
          y.set(x);
          return y;
        };
        outAt = grow(outAt);
        arg = grow(arg);
      }
      outAt[n] = o;
      arg[n] = a;
      n++;
    };
    const inEnd = input.length;
    if (inEnd === 0) throw new FastLzError('empty block');
    let ip = 0;
    let op = 0;
    let ctrl = input[ip++] as number;
    if (ctrl >> 5 > 1) throw new FastLzError(`first control byte 0x${ctrl.toString(16)} is not a level-2 literal run`);
    ctrl &= 31;
    for (;;) {
      if (ctrl < 32) {
        const run = ctrl + 1;
        if (ip + run > inEnd) throw new FastLzError(`literal run of ${run} bytes runs past the block's end`);
        if (op + run > size) throw new FastLzError(`literal run overruns the block's ${size} bytes`);
        push(op, ip);
        ip += run;
        op += run;
      } else {
        let len = (ctrl >> 5) + 2;
        if (len === 9) {
          let b: number;
          do {
            if (ip >= inEnd) throw new FastLzError('match length runs past the block\'s end');
            b = input[ip++] as number;
            len += b;
          } while (b === 255);
        }
        if (ip >= inEnd) throw new FastLzError('match distance runs past the block\'s end');
        const lo = input[ip++] as number;
        let dist: number;
        if ((ctrl & 31) === 31 && lo === 255) {
          if (ip + 2 > inEnd) throw new FastLzError('far match distance runs past the block\'s end');
          dist = 8192 + (((input[ip] as number) << 8) | (input[ip + 1] as number));
          ip += 2;
        } else {
          dist = (((ctrl & 31) << 8) | lo) + 1;
        }
        if (op + len > size) throw new FastLzError(`match overruns the block's ${size} bytes`);
        push(op, -dist);
        op += len;
      }
      if (ip >= inEnd) break;
      ctrl = input[ip++] as number;
    }
    if (op !== size) throw new FastLzError(`block decoded to ${op} bytes, its header says ${size}`);
    this.outAt = outAt;
    this.arg = arg;
    this.count = n;
  }

  private tokenAt(o: number): number {
    return lastAtOrBefore(this.count, (i) => this.outAt[i] as number, o);
  }

  /**
   * Output byte o's origin: its value when the block produced it (a literal), else the offset
   * (negative: before the block) of the history byte it is a copy of.
   */
  origin(o: number): { value: number } | { before: number } {
    for (;;) {
      const t = this.tokenAt(o);
      const start = this.outAt[t] as number;
      const a = this.arg[t] as number;
      if (a >= 0) return { value: this.input[a + (o - start)] as number };
      const dist = -a;
      // A match repeats the `dist` bytes before it: byte o is the one (o - start) mod dist into them.
      const src = start - dist + ((o - start) % dist);
      if (src < 0) return { before: src };
      o = src;
    }
  }

  /** Offsets before the block (negative) that its matches copy directly, ascending. */
  historyReads(): number[] {
    const out = new Set<number>();
    for (let t = 0; t < this.count; t++) {
      const a = this.arg[t] as number;
      if (a >= 0) continue;
      const start = this.outAt[t] as number;
      const ref = start + a;
      if (ref >= 0) continue;
      const end = t + 1 < this.count ? (this.outAt[t + 1] as number) : this.size;
      // Bytes copied from before the block: ref .. min(ref + len, 0) - 1 (the rest is own output).
      for (let p = ref; p < Math.min(ref + (end - start), 0); p++) out.add(p);
    }
    return [...out].sort((x, y) => x - y);
  }
}
