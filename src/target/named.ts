import * as fs from 'node:fs';
import { VmssError } from '../errors';
import type { CacheBudget } from '../cache/budget';
import type { Snapshot } from '../evidence/evidence';
import { openSnapshot, type OpenOptions } from '../evidence/snapshot';
import { isDirectory, openFolder } from '../evidence/folder/folder';
import { isUrl } from '../io/http-access';

/** One checkpoint named on a command line: a file, or `VMDIR:NAME`, a checkpoint of a VM folder. */
export interface NamedCheckpoint {
  snap: Snapshot;
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
 * Open `arg`: a checkpoint file (.vmss, .vmsn, .vmem), or `VMDIR:NAME` where NAME is the
 * checkpoint's directory in the folder's mount, or its display name when that is unique. A path
 * that exists is always a path, even with a colon in it.
 */
export function openNamedCheckpoint(arg: string, vmem: string | undefined, keys?: OpenOptions['keys'], budget?: CacheBudget, http?: OpenOptions['http']): NamedCheckpoint {
  if (isUrl(arg) || (vmem !== undefined && isUrl(vmem))) {
    const snap = openSnapshot(arg, { vmem, keys, budget, http });
    return { snap, warnings: [...snap.warnings], close: () => snap.close() };
  }
  if (isDirectory(arg)) throw new VmssError(`${arg}: is a VM folder; name one of its checkpoints as ${arg}:NAME (vmssfs ls ${arg} lists them)`);
  const colon = arg.lastIndexOf(':');
  if (exists(arg) || colon < 0 || !isDirectory(arg.slice(0, colon))) {
    const snap = openSnapshot(arg, { vmem, keys, budget });
    return { snap, warnings: [...snap.warnings], close: () => snap.close() };
  }
  const dir = arg.slice(0, colon);
  const name = arg.slice(colon + 1);
  const folder = openFolder(dir, { keys, budget });
  try {
    const byDir = folder.checkpoints.filter((c) => c.directory === name);
    const byName = folder.checkpoints.filter((c) => c.displayName === name);
    const c = byDir[0] ?? (byName.length === 1 ? byName[0] : undefined);
    if (!c) {
      const served = folder.checkpoints.map((x) => x.directory).filter((d): d is string => d !== null);
      const why = byName.length > 1 ? `${byName.length} snapshots are called "${name}"; name one by its directory` : `no checkpoint "${name}"`;
      throw new VmssError(`${dir}: ${why} (its checkpoints: ${served.join(', ') || 'none'})`);
    }
    if (c.snap === null || c.file === null) throw new VmssError(`${arg}: not served: ${c.problem ?? 'unknown'}`);
    // Only this checkpoint's warnings: the folder's are about the others.
    if (vmem === undefined) return { snap: c.snap, warnings: [...c.snap.warnings], close: folder.close };
    // --vmem: the checkpoint opened afresh with the memory file given.
    const snap = openSnapshot(c.file, { vmem, keys, budget });
    folder.close();
    return { snap, warnings: [...snap.warnings], close: () => snap.close() };
  } catch (err) {
    folder.close();
    throw err;
  }
}
