import { bisect } from '../bisect';

/** A stretch [start, start+length) of some address space. */
export interface Segment {
  start: number;
  length: number;
}

/** One piece of a read: `length` bytes at `at` of the address space, `within` bytes into `segment`; a hole when segment is null. */
export interface Piece<S extends Segment> {
  at: number;
  length: number;
  segment: S | null;
  within: number;
}

/**
 * A sorted list of non-overlapping segments and a binary search: the shape of Volatility's
 * segmented layer. Everything outside the segments is a hole. Used for guest-physical memory
 * and for every file the tree assembles from pieces.
 */
export class SegmentMap<S extends Segment> {
  readonly segments: readonly S[];

  constructor(segments: S[]) {
    this.segments = [...segments].filter((s) => s.length > 0).sort((a, b) => a.start - b.start);
    for (let i = 1; i < this.segments.length; i++) {
      const prev = this.segments[i - 1] as S;
      if ((this.segments[i] as S).start < prev.start + prev.length) throw new RangeError('segments overlap');
    }
  }

  /** End of the highest segment. */
  get end(): number {
    const last = this.segments[this.segments.length - 1];
    return last ? last.start + last.length : 0;
  }

  /** The segment holding `addr`, if any. */
  find(addr: number): S | undefined {
    const s = this.segments[this.firstEndingAfter(addr)];
    return s && s.start <= addr ? s : undefined;
  }

  /** Index of the first segment that ends after `addr` (segments.length if none). */
  private firstEndingAfter(addr: number): number {
    return bisect(this.segments.length, (i) => {
      const s = this.segments[i] as S;
      return s.start + s.length <= addr;
    });
  }

  /** Cut [addr, addr+length) into segment pieces and holes, in address order. */
  *pieces(addr: number, length: number): Generator<Piece<S>> {
    let at = addr;
    const stop = addr + length;
    let i = this.firstEndingAfter(at);
    while (at < stop) {
      const s = this.segments[i];
      if (!s || s.start >= stop) {
        yield { at, length: stop - at, segment: null, within: 0 };
        return;
      }
      if (s.start > at) {
        yield { at, length: s.start - at, segment: null, within: 0 };
        at = s.start;
      }
      const n = Math.min(stop, s.start + s.length) - at;
      yield { at, length: n, segment: s, within: at - s.start };
      at += n;
      i++;
    }
  }
}
