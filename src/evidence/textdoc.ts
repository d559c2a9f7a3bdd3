/**
 * Generated text (info.txt, metadata.json) as numbered units, each whole lines, any of which can
 * be made again on its own. A checkpoint at the 250,000-tag cap makes 50 MiB of such text: made
 * a unit at a time it is never held whole, neither by `vmssfs info` (which writes it out in
 * pieces) nor by the mount (which keeps its size and where each piece starts, and makes a piece
 * again when it is read).
 */
import { lastAtOrBefore } from '../bisect';

export interface TextDoc {
  readonly units: number;
  /** Unit `i` (0 <= i < units): whole lines, each ending in a newline, or ''. Same text every call. */
  unit(i: number): string;
}

/** Pieces of about this many characters: large enough to write or copy efficiently, small enough to make on a read. */
export const PIECE_CHARS = 64 * 1024;

/** The text of units [from, to) as one string. */
export function unitsText(doc: TextDoc, from: number, to: number): string {
  const parts: string[] = [];
  for (let i = from; i < to; i++) parts.push(doc.unit(i));
  return parts.join('');
}

/** The whole text, a piece of about PIECE_CHARS at a time. */
export function* docPieces(doc: TextDoc): Generator<string> {
  let chars = 0;
  const parts: string[] = [];
  for (let i = 0; i < doc.units; i++) {
    const u = doc.unit(i);
    parts.push(u);
    chars += u.length;
    if (chars >= PIECE_CHARS) {
      yield parts.join('');
      parts.length = 0;
      chars = 0;
    }
  }
  if (parts.length > 0) yield parts.join('');
}

/** The whole text as one string (for tests and small documents). */
export function docText(doc: TextDoc): string {
  return unitsText(doc, 0, doc.units);
}

/** A short text as a document of one unit. */
export function wholeDoc(text: string): TextDoc {
  return { units: 1, unit: () => text };
}

/** The parts of a document laid out over a checkpoint's groups: a head, per group an opening, a unit per tag, a closing, and a tail. */
export interface GroupedParts {
  head(): string;
  /** Tags per group. */
  counts: readonly number[];
  open(group: number): string;
  tag(group: number, tag: number): string;
  close(group: number): string;
  tail(): string;
}

/** A TextDoc over GroupedParts: unit i is found by a binary search over the groups. */
export function groupedDoc(parts: GroupedParts): TextDoc {
  const starts: number[] = [];
  let n = 1;
  for (const c of parts.counts) {
    starts.push(n);
    n += c + 2;
  }
  const units = n + 1;
  return {
    units,
    unit(i: number): string {
      if (i === 0) return parts.head();
      if (i === units - 1) return parts.tail();
      const lo = lastAtOrBefore(starts.length, (s) => starts[s] as number, i);
      const k = i - (starts[lo] as number);
      if (k === 0) return parts.open(lo);
      if (k === (parts.counts[lo] as number) + 1) return parts.close(lo);
      return parts.tag(lo, k - 1);
    },
  };
}
