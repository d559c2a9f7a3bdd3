/**
 * FastLZ level 2, the codec of VMware's compressed memory blocks (the grammar is in
 * docs/format.md). Output goes into a buffer whose bytes before `outStart` are the history the
 * block may reference: the tail of the previous block's output, since the window runs across
 * blocks.
 */

/** Farthest a match can reach back: the escaped distance 8192 + 0xffff, plus one. */
export const MAX_DISTANCE = 8192 + 0xffff + 1;

/** The block referenced bytes before the history it was given: it needs its predecessor's tail. */
export const NEEDS_HISTORY = -1;

export class FastLzError extends Error {}

/**
 * Decode `input` into out[outStart, outEnd); out[historyStart, outStart) holds valid history.
 * Returns outEnd - outStart when the block decoded to exactly that length, NEEDS_HISTORY when a
 * match reached before historyStart (nothing else is wrong yet: give it more history), and
 * throws FastLzError when the stream is damaged (runs out, overruns, ends short).
 * Each step consumes input or the loop ends, so time is bounded by the input and output sizes.
 */
export function fastLzDecode(input: Buffer, out: Buffer, outStart: number, outEnd: number, historyStart: number): number {
  const inEnd = input.length;
  if (inEnd === 0) throw new FastLzError('empty block');
  let ip = 0;
  let op = outStart;
  let ctrl = input[ip++] as number;
  if (ctrl >> 5 > 1) throw new FastLzError(`first control byte 0x${ctrl.toString(16)} is not a level-2 literal run`);
  ctrl &= 31;
  for (;;) {
    if (ctrl < 32) {
      const run = ctrl + 1;
      if (ip + run > inEnd) throw new FastLzError(`literal run of ${run} bytes runs past the block's end`);
      if (op + run > outEnd) throw new FastLzError(`literal run overruns the block's ${outEnd - outStart} bytes`);
      if (run <= 8) {
        for (let i = 0; i < run; i++) out[op + i] = input[ip + i] as number;
      } else {
        input.copy(out, op, ip, ip + run);
      }
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
    if (ip >= inEnd) break;
    ctrl = input[ip++] as number;
  }
  if (op !== outEnd) throw new FastLzError(`block decoded to ${op - outStart} bytes, its header says ${outEnd - outStart}`);
  return op - outStart;
}

/** Copy a match, which may overlap its own output (then it repeats the last `dist` bytes). */
function copyMatch(out: Buffer, op: number, ref: number, len: number, dist: number): void {
  if (len <= 16) {
    for (let i = 0; i < len; i++) out[op + i] = out[ref + i] as number;
  } else if (dist === 1) {
    out.fill(out[ref] as number, op, op + len);
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
