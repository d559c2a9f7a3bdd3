/**
 * The one binary search the layers share: a segmented layer is a sorted list and a bisect (the
 * segments of guest memory, a stream's blocks, its seek points, a file's pieces).
 */

/**
 * How many leading indexes of [0, n) satisfy `before`, which holds for a prefix of them and for
 * none after it (Python's bisect_right, C++'s partition_point).
 */
export function bisect(n: number, before: (i: number) => boolean): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (before(mid)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The last index of [0, n) whose key is at or before x (keys ascending), or 0 when none is. */
export function lastAtOrBefore(n: number, key: (i: number) => number, x: number): number {
  return Math.max(0, bisect(n, (i) => key(i) <= x) - 1);
}
