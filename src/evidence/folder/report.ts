import { encryptionText } from '../info';
import type { EncryptionSummary } from '../evidence';
import type { FolderCheckpoint, VmFolder } from './folder';

/** One checkpoint in snapshots.json. */
export interface CheckpointJson {
  /** Its directory at the mount's root; null when it is not served (see problem). */
  directory: string | null;
  kind: FolderCheckpoint['kind'];
  displayName: string;
  description: string;
  uid: number | null;
  parent: number | null;
  /** The parent's directory, when the parent is served. */
  parentDirectory: string | null;
  created: string | null;
  modified: string | null;
  files: string[];
  disks: string[];
  hasMemory: boolean;
  current: boolean;
  missing: boolean;
  problem: string | null;
}

export interface SnapshotsJson {
  folder: string;
  vmx: string | null;
  vmsd: string | null;
  /** Present only when a file was decrypted: how the key was found, which files; never a password or key. */
  encryption?: EncryptionSummary;
  /** Directory of the .vmsd's current snapshot. */
  current: string | null;
  checkpoints: CheckpointJson[];
  warnings: string[];
}

function parentOf(folder: VmFolder, c: FolderCheckpoint): FolderCheckpoint | undefined {
  if (c.parent === null) return undefined;
  return folder.checkpoints.find((p) => p !== c && p.kind === 'snapshot' && p.uid === c.parent);
}

export function snapshotsJson(folder: VmFolder): SnapshotsJson {
  return {
    folder: folder.dir,
    vmx: folder.vmx,
    vmsd: folder.vmsd,
    ...(folder.encryption ? { encryption: folder.encryption } : {}),
    current: folder.checkpoints.find((c) => c.current)?.directory ?? null,
    checkpoints: folder.checkpoints.map((c) => ({
      directory: c.directory,
      kind: c.kind,
      displayName: c.displayName,
      description: c.description,
      uid: c.uid,
      parent: c.parent,
      parentDirectory: parentOf(folder, c)?.directory ?? null,
      created: c.created,
      modified: c.modified,
      files: c.files,
      disks: c.disks,
      hasMemory: c.hasMemory,
      current: c.current,
      missing: c.snap === null,
      problem: c.problem,
    })),
    warnings: folder.warnings,
  };
}

export function snapshotsJsonText(folder: VmFolder): string {
  return JSON.stringify(snapshotsJson(folder), null, 2) + '\n';
}

/** `2023-11-14T22:13:20.000Z` as `2023-11-14 22:13:20`. */
function shortTime(iso: string): string {
  return iso.slice(0, 19).replace('T', ' ');
}

function line(c: FolderCheckpoint): string {
  const parts = [c.directory ?? c.displayName];
  if (c.created) parts.push(shortTime(c.created));
  else if (c.modified) parts.push(`file time ${shortTime(c.modified)}`);
  if (c.snap === null) parts.push(`not served: ${c.problem ?? 'unknown'}`);
  else parts.push(c.hasMemory ? 'memory' : 'no memory');
  if (c.current) parts.push('(current)');
  if (c.directory !== null && c.kind === 'snapshot' && c.directory !== c.displayName) parts.push(`"${c.displayName}"`);
  return parts.join('  ');
}

/**
 * The snapshot tree as a person reads it: children under their parent, in .vmsd order, the
 * suspended state under the current snapshot (it runs on from there); times in UTC.
 */
export function snapshotsText(folder: VmFolder): string {
  const out: string[] = [];
  const head = [folder.vmx, folder.vmsd].filter((n): n is string => n !== null);
  out.push(`VM folder ${folder.dir}${head.length ? ` (${head.join(', ')})` : ''}, times UTC`);
  const cps = folder.checkpoints;
  const children = new Map<FolderCheckpoint | null, FolderCheckpoint[]>();
  for (const c of cps) {
    const p = parentOf(folder, c) ?? null;
    const list = children.get(p) ?? [];
    list.push(c);
    children.set(p, list);
  }
  const seen = new Set<FolderCheckpoint>();
  const walk = (c: FolderCheckpoint, prefix: string, last: boolean): void => {
    seen.add(c);
    out.push(`${prefix}${last ? '└─ ' : '├─ '}${line(c)}`);
    const kids = (children.get(c) ?? []).filter((k) => !seen.has(k));
    kids.forEach((k, i) => walk(k, prefix + (last ? '   ' : '│  '), i === kids.length - 1));
  };
  // Roots, then whatever a loop of parents keeps out of their reach.
  const reached = new Set<FolderCheckpoint>();
  const mark = (c: FolderCheckpoint): void => {
    if (reached.has(c)) return;
    reached.add(c);
    for (const k of children.get(c) ?? []) mark(k);
  };
  const roots = children.get(null) ?? [];
  roots.forEach(mark);
  const tops = [...roots, ...cps.filter((c) => !reached.has(c))];
  tops.forEach((c, i) => {
    if (!seen.has(c)) walk(c, '', tops.slice(i + 1).every((t) => seen.has(t)));
  });
  if (cps.length === 0) out.push('(no checkpoints)');
  if (folder.encryption) out.push(encryptionText(folder.encryption));
  for (const w of folder.warnings) out.push(`warning: ${w}`);
  return out.join('\n') + '\n';
}
