import * as fs from 'node:fs';
import { VmssError } from '../errors';
import type { Evidence } from '../evidence/evidence';
import { openEvidence, type OpenOptions } from '../evidence/open';
import { isDirectory, openFolder, type FolderCheckpoint, type VmFolder } from '../evidence/folder/folder';

/** One checkpoint named on a command line: a file, or `VMDIR:NAME`, a checkpoint of a VM folder. */
export interface NamedCheckpoint {
  snap: Evidence;
  /** The checkpoint's warnings, as the commands print them. */
  warnings: string[];
  close(): void;
}

function exists(p: string): boolean {
  try {
    fs.statSync(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * The ways to read `arg` as `VMDIR:NAME`: one per colon whose prefix is a folder, the longest
 * folder first (a display name may hold colons, `after sample 10:30`, and so may a folder's path).
 * None when `arg` exists as it is: a path that exists is always a path, even with a colon in it.
 */
export function folderSplits(arg: string): { dir: string; name: string }[] {
  if (exists(arg)) return [];
  const out: { dir: string; name: string }[] = [];
  for (let i = arg.indexOf(':'); i >= 0; i = arg.indexOf(':', i + 1)) {
    const dir = arg.slice(0, i);
    if (dir !== '' && isDirectory(dir)) out.push({ dir, name: arg.slice(i + 1) });
  }
  return out.reverse();
}

/** The checkpoints of `folder` that `name` names: by directory in the mount, else by a unique display name. */
function named(folder: VmFolder, name: string): { found: FolderCheckpoint | null; why: string } {
  const byDir = folder.checkpoints.filter((c) => c.directory === name);
  const byName = folder.checkpoints.filter((c) => c.displayName === name);
  const found = byDir[0] ?? (byName.length === 1 ? (byName[0] as FolderCheckpoint) : null);
  const served = folder.checkpoints.map((x) => x.directory).filter((d): d is string => d !== null);
  const why = byName.length > 1 ? `${byName.length} snapshots are called "${name}"; name one by its directory` : `no checkpoint "${name}"`;
  return { found, why: `${why} (its checkpoints: ${served.join(', ') || 'none'})` };
}

/**
 * Open `arg`: anything `openEvidence` opens (a checkpoint, its .vmem, an ESXi guest dump), or
 * `VMDIR:NAME` where NAME is the checkpoint's directory in the folder's mount, or its display name
 * when that is unique. With --vmem (or --assume-flat), a folder's checkpoint is opened afresh with
 * them: `VMDIR:NAME --vmem FILE` is how a folder checkpoint's memory file is given by path.
 */
export function openNamedCheckpoint(arg: string, opts: OpenOptions = {}): NamedCheckpoint {
  if (isDirectory(arg)) throw new VmssError(`${arg}: is a VM folder; name one of its checkpoints as ${arg}:NAME (vmssfs ls ${arg} lists them)`);
  const splits = folderSplits(arg);
  if (splits.length === 0) {
    const snap = openEvidence(arg, opts);
    return { snap, warnings: [...snap.warnings], close: () => snap.close() };
  }
  let firstWhy: string | null = null;
  for (const { dir, name } of splits) {
    const folder = openFolder(dir, { keys: opts.keys, budget: opts.budget });
    try {
      const { found: c, why } = named(folder, name);
      if (!c) {
        firstWhy ??= `${dir}: ${why}`;
        folder.close();
        continue;
      }
      if (c.file === null || (c.snap === null && opts.vmem === undefined)) throw new VmssError(`${arg}: not served: ${c.problem ?? 'unknown'}`);
      // Only this checkpoint's warnings: the folder's are about the others.
      if (c.snap !== null && opts.vmem === undefined && !opts.assumeFlat) return { snap: c.snap, warnings: [...c.snap.warnings], close: folder.close };
      const snap = openEvidence(c.file, opts);
      folder.close();
      return { snap, warnings: [...snap.warnings], close: () => snap.close() };
    } catch (err) {
      folder.close();
      throw err;
    }
  }
  throw new VmssError(firstWhy as string);
}
