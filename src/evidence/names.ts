import { createHash } from 'node:crypto';

/** The kernel refuses longer path components (NAME_MAX). */
const NAME_MAX = 255;

/**
 * File name for a group or tag: `%` becomes `%25` and `/` becomes `%2F`, nothing else changes,
 * so `cpu/rip[0]` stays readable and the escaping is reversible. Names a directory entry cannot
 * have are escaped too: NUL as `%00`, an empty name as `%00`, `.` and `..` as `%2E` and `%2E%2E`.
 * A name still over 255 bytes keeps its first 200 bytes and gets `~` and a hash of the full name.
 */
export function escapeName(name: string): string {
  if (name === '') return '%00';
  if (name === '.' || name === '..') return name.replace(/\./g, '%2E');
  const escaped = name.replace(/%/g, '%25').replace(/\//g, '%2F').replace(/\0/g, '%00');
  if (Buffer.byteLength(escaped) <= NAME_MAX) return escaped;
  const digest = createHash('sha256').update(escaped).digest('hex').slice(0, 12);
  let head = Buffer.from(escaped).subarray(0, 200).toString('utf8');
  head = head.replace(/\uFFFD$/, ''); // do not end on half a UTF-8 character
  return `${head}~${digest}`;
}

/** Give each name in `names` a unique form: later duplicates get `~2`, `~3`, ... appended. */
export function uniqueNames(names: string[]): string[] {
  const taken = new Set(names);
  // The common case, no duplicates: the list is its own answer (a group at the tag cap would
  // otherwise pay for a count map and a second list of 250,000 names).
  if (taken.size === names.length) return names;
  const seen = new Map<string, number>();
  return names.map((n) => {
    const count = (seen.get(n) ?? 0) + 1;
    seen.set(n, count);
    if (count === 1) return n;
    let k = count;
    while (taken.has(`${n}~${k}`)) k++;
    const unique = `${n}~${k}`;
    taken.add(unique);
    return unique;
  });
}
