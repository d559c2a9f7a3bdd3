/**
 * The VM folder's snapshot database, the `.vmsd`: `key = "value"` lines (format/dictionary.ts)
 * naming each snapshot, its parent, its files and when it was taken.
 */
import { parseDictionary } from '../../format/dictionary';

/** One `.vmsd` entry: a snapshot as VMware recorded it. */
export interface VmsdEntry {
  /** N of `snapshotN.*`: the entry's place in the file. */
  index: number;
  uid: number | null;
  /** The `.vmsn`, as written (usually a name relative to the folder). */
  filename: string | null;
  /** uid of the parent snapshot; null for a root. */
  parent: number | null;
  displayName: string;
  description: string;
  /** Creation time, ISO 8601 UTC; null when absent or unusable. */
  created: string | null;
  /** Every `snapshotN.diskK.fileName`, in K order (K may skip). */
  disks: string[];
}

export interface Vmsd {
  entries: VmsdEntry[];
  /** `snapshot.current`: the uid of the snapshot the VM runs from. */
  current: number | null;
  warnings: string[];
}

/** A file this size is not a configuration file; larger ones are refused, not read. */
export const TEXT_MAX = 4 * 1024 * 1024;

function int(values: Map<string, string>, key: string): number | null {
  const v = values.get(key);
  if (v === undefined || !/^\s*-?\d+\s*$/.test(v)) return null;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : null;
}

/**
 * The creation time from its two halves: VMware stores microseconds since 1970 as two signed
 * 32-bit numbers, `high * 2^32 + (low mod 2^32)`. Null when a half is missing or the time is not
 * a representable date.
 */
export function decodeCreateTime(high: number | null, low: number | null): string | null {
  if (high === null || low === null) return null;
  if (high < -0x8000_0000 || high > 0xffff_ffff || low < -0x8000_0000 || low > 0xffff_ffff) return null;
  const micros = BigInt(high) * 0x1_0000_0000n + BigInt(((low % 0x1_0000_0000) + 0x1_0000_0000) % 0x1_0000_0000);
  const ms = Number(micros / 1000n);
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

/** Parse a `.vmsd`'s text. Entries are those N with any `snapshotN.` key, in N order. */
export function parseVmsd(text: string, name: string): Vmsd {
  const { values } = parseDictionary(text);
  const warnings: string[] = [];
  const indices = new Set<number>();
  for (const key of values.keys()) {
    const m = /^snapshot(\d+)\./.exec(key);
    if (m) indices.add(Number(m[1]));
  }
  const declared = int(values, 'snapshot.numsnapshots');
  if (declared !== null && declared !== indices.size) {
    warnings.push(`${name}: snapshot.numSnapshots says ${declared}, the file describes ${indices.size}; the described ones are listed`);
  }
  const entries: VmsdEntry[] = [...indices].sort((a, b) => a - b).map((n) => {
    const k = (s: string): string => `snapshot${n}.${s}`;
    // Every snapshotN.diskK.fileName there is, in K order: K may skip (a disk removed from the
    // VM), so the list is not cut at the first gap. numDisks, when given, is checked against it.
    const diskKey = new RegExp(`^snapshot${n}\\.disk(\\d+)\\.filename$`);
    const found: [number, string][] = [];
    for (const [key, v] of values) {
      const m = diskKey.exec(key);
      if (m) found.push([Number(m[1]), v]);
    }
    const disks = found.sort((x, y) => x[0] - y[0]).map(([, f]) => f);
    const numDisks = int(values, k('numdisks'));
    if (numDisks !== null && numDisks !== disks.length) {
      warnings.push(`${name}: snapshot${n}.numDisks says ${numDisks}, the file names ${disks.length} disk${disks.length === 1 ? '' : 's'}; the named ones are listed`);
    }
    return {
      index: n,
      uid: int(values, k('uid')),
      filename: values.get(k('filename')) ?? null,
      parent: int(values, k('parent')),
      displayName: values.get(k('displayname')) ?? `snapshot${n}`,
      description: values.get(k('description')) ?? '',
      created: decodeCreateTime(int(values, k('createtimehigh')), int(values, k('createtimelow'))),
      disks,
    };
  });
  for (const e of entries) {
    if (e.uid === null) warnings.push(`${name}: snapshot${e.index} has no uid; its place in the tree is unknown`);
    if (e.filename === null) warnings.push(`${name}: snapshot${e.index} ("${e.displayName}") names no .vmsn file`);
  }
  return { entries, current: int(values, 'snapshot.current'), warnings };
}
