import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError } from '../../errors';
import { errnoText, readSmallEvidence } from '../../io/source';
import { TEXT_MAX } from './vmsd';

/** What a VM folder holds, before anything in it is parsed: its files, and which .vmx and .vmsd are its own. */
export interface FolderListing {
  /** Absolute. */
  dir: string;
  /** Basenames of its regular files. */
  names: string[];
  /** Basenames of the .vmx and .vmsd chosen (null when there is none). */
  vmx: string | null;
  vmsd: string | null;
  /** Which of several .vmx or .vmsd files was chosen, and why. */
  warnings: string[];
}

export function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Is `p` a directory (a VM folder to open) rather than a checkpoint file? */
export function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Of several candidates, the one sharing `stem`'s basename, else the first by name. */
function pick(files: string[], stem: string | null, what: string, dir: string, warnings: string[]): string | null {
  if (files.length === 0) return null;
  const sorted = [...files].sort();
  const chosen = (stem !== null && sorted.find((f) => f.replace(/\.[^.]*$/, '') === stem)) || (sorted[0] as string);
  if (sorted.length > 1) warnings.push(`${dir} holds ${sorted.length} ${what} files (${sorted.join(', ')}); used ${chosen}`);
  return chosen;
}

/** List a VM folder and choose its .vmx and .vmsd. Throws VmssError when it cannot be read. */
export function listFolder(dirArg: string): FolderListing {
  const dir = path.resolve(dirArg);
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => isFile(path.join(dir, n)));
  } catch (err) {
    throw new VmssError(`${dirArg}: cannot read the folder: ${errnoText(err)}`);
  }
  const warnings: string[] = [];
  const vmx = pick(names.filter((n) => /\.vmx$/i.test(n)), null, '.vmx', dir, warnings);
  const vmxStem = vmx === null ? null : vmx.replace(/\.[^.]*$/, '');
  const vmsd = pick(names.filter((n) => /\.vmsd$/i.test(n)), vmxStem, '.vmsd', dir, warnings);
  return { dir, names, vmx, vmsd, warnings };
}

/** A small text file of the folder, or null (with a warning) when it is too large or unreadable. */
export function readText(file: string, warnings: string[]): Buffer | null {
  try {
    const read = readSmallEvidence(file, TEXT_MAX);
    if (read.bytes === null) warnings.push(`${file}: ${read.size} bytes is too large for a VMware text file; ignored`);
    return read.bytes;
  } catch (err) {
    warnings.push(`${file}: cannot read: ${errnoText(err)}; ignored`);
    return null;
  }
}
