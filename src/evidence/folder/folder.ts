import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError, WrongKeyError } from '../../errors';
import { findGroup } from '../../format/checkpoint';
import { evidenceFiles } from '../evidence';
import type { Source } from '../../io/source';
import { FilePool } from '../../io/pool';
import type { CacheBudget } from '../../cache/budget';
import { encryptionSummary, type EncryptionSummary, type Snapshot } from '../evidence';
import { openSnapshot } from '../snapshot';
import { escapeName, uniqueNames } from '../names';
import { encryptedConfig, readEncryptedText, unlockFolder, type FolderKeys } from './keys';
import { isFile, listFolder, readText } from './listing';
import { notTextReason, parseDictionary } from '../../format/dictionary';
import { parseVmsd, type Vmsd } from './vmsd';

export { isDirectory } from './listing';
export type { FolderKeys } from './keys';

/** Names the folder's root holds besides the checkpoints' directories. */
export const ROOT_FILES = ['snapshots.json', 'snapshots.txt'] as const;
export const SUSPENDED = 'suspended';
/** The usage error for --vmem given with a whole folder. */
export function folderVmem(dir: string): string {
  return `--vmem names one checkpoint's memory: name that checkpoint as ${dir}:NAME (a VM folder finds each checkpoint's own)`;
}

/** One checkpoint of a VM folder: a snapshot of the .vmsd, the suspended state, or a file found in the folder. */
export interface FolderCheckpoint {
  /** Its directory in the mount; null when it cannot be served (see problem). */
  directory: string | null;
  /** snapshot: listed in the .vmsd; suspended: the VM's suspended state; found: in the folder, listed nowhere. */
  kind: 'snapshot' | 'suspended' | 'found';
  displayName: string;
  description: string;
  uid: number | null;
  /** uid of the parent snapshot (the suspended state's parent is the .vmsd's current snapshot). */
  parent: number | null;
  /** From the .vmsd, ISO 8601 UTC; null for checkpoints it does not list. */
  created: string | null;
  /** The checkpoint file's mtime, ISO 8601 UTC; null when the file is missing. */
  modified: string | null;
  /** The checkpoint file's absolute path (as the .vmsd or .vmx names it, when missing). */
  file: string | null;
  /** Basenames of the files served: the checkpoint, then its memory file when separate. */
  files: string[];
  disks: string[];
  hasMemory: boolean;
  /** The .vmsd's snapshot.current. */
  current: boolean;
  /** Why it is not served (a missing or unreadable file), else null. */
  problem: string | null;
  snap: Snapshot | null;
}

export interface VmFolder {
  dir: string;
  vmx: string | null;
  vmsd: string | null;
  /** Set when a file was decrypted: how the key was found, and which files (basenames). Never a secret. */
  encryption: EncryptionSummary | null;
  checkpoints: FolderCheckpoint[];
  warnings: string[];
  /** The newest of the .vmsd's and the checkpoints' mtimes: the mount's file times. */
  mtime: Date;
  pool: FilePool;
  close(): void;
}

/** Checkpoint files: snapshots (.vmsn), suspended states (.vmss, and .std of older products). */
const CHECKPOINT_EXT = /\.(vmss|vmsn|std)$/i;
/** A suspended state's file: .vmss, or .std as older products name it (the same format). */
const SUSPENDED_EXT = /\.(vmss|std)$/i;

/** Where a file the .vmsd or .vmx names lives: relative names are the folder's; an absolute one from another machine is looked for in the folder. */
function resolveNamed(dir: string, name: string): string {
  if (!path.isAbsolute(name)) return path.resolve(dir, name);
  if (isFile(name)) return name;
  return path.join(dir, path.basename(name));
}

function hasMemoryOrSibling(snap: Snapshot, file: string): boolean {
  // Any Memory block, whatever its indices (Memory[0][0], plain Memory, Memory[0]).
  const block = findGroup(snap.checkpoint, 'memory')?.tags.some((t) => t.name === 'Memory' && t.block) ?? false;
  return block || isFile(file.replace(/\.[^./]*$/, '') + '.vmem');
}

export interface FolderOptions {
  /** Key material for an encrypted VM; without it an encrypted folder is refused. */
  keys?: FolderKeys;
  /** The mount's one cache budget, which the checkpoints' decoding layers draw from. */
  budget?: CacheBudget;
}

/** The plain .vmx's keys, or null (with a warning) when it cannot be read as one. */
function readVmx(dir: string, vmx: string | null, warnings: string[]): Map<string, string> | null {
  if (vmx === null) return null;
  const file = path.join(dir, vmx);
  const bytes = readText(file, warnings);
  const why = bytes && notTextReason(bytes);
  if (why) warnings.push(`${file}: not a VMware configuration (${why}); ignored`);
  return bytes && !why ? parseDictionary(bytes.toString('utf8')).values : null;
}

/**
 * Resolve the key of an encrypted VM folder, when anything in it is encrypted: what the mount
 * command does before it starts its daemon, to ask for the password while it has the terminal.
 */
export function unlockFolderKeys(dirArg: string, keys: FolderKeys): void {
  const listing = listFolder(dirArg);
  unlockFolder(listing, readVmx(listing.dir, listing.vmx, []), keys);
}

/**
 * Open a VM folder: read its .vmx and .vmsd, and parse every checkpoint's metadata (memory files
 * are stat()ed, not opened: they are opened on first read, through one bounded descriptor pool).
 * Throws VmssError only when the folder cannot be read or holds nothing to serve, or when its
 * files are encrypted and the key cannot be had (none given, a wrong password, a wrong key).
 */
export function openFolder(dirArg: string, opts: FolderOptions = {}): VmFolder {
  const listing = listFolder(dirArg);
  const { dir, names } = listing;
  const vmx = listing.vmx;
  let vmsdName = listing.vmsd;
  const warnings = [...listing.warnings];
  const vmxValues = readVmx(dir, vmx, warnings);
  const unlock = unlockFolder(listing, vmxValues, opts.keys);
  const keys = unlock.keys;
  const decrypted: string[] = [];

  let vmsd: Vmsd = { entries: [], current: null, warnings: [] };
  if (vmsdName !== null) {
    const file = path.join(dir, vmsdName);
    const encrypted = keys !== undefined && unlock.encrypted.includes(file);
    const bytes = encrypted ? readEncryptedText(file, keys, warnings) : readText(file, warnings);
    if (bytes !== null && encrypted) decrypted.push(vmsdName);
    const why = bytes && notTextReason(bytes);
    if (bytes === null) vmsdName = null;
    else if (why) {
      warnings.push(`${file}: ${encrypted ? 'decrypted, ' : ''}not a snapshot database (${why}); ignored`);
      vmsdName = null;
    } else {
      vmsd = parseVmsd(bytes.toString('utf8'), file);
      warnings.push(...vmsd.warnings);
    }
  }

  // An encrypted VM's plain .vmx keeps a few keys; the rest of its configuration, where
  // VMware may keep checkpoint.vmState, is in encryption.data.
  let vmState: string | null = null;
  const plainState = vmxValues?.get('checkpoint.vmstate');
  if (plainState !== undefined) vmState = plainState || null;
  else if (vmxValues?.has('encryption.data')) {
    const config = encryptedConfig(unlock, opts.keys);
    if (config !== null) vmState = parseDictionary(config).values.get('checkpoint.vmstate') || null;
    else if (unlock.encrypted.length > 0) {
      const why = opts.keys?.info?.keyFrom === '--key' ? '--key opens the data files, not the key safe' : 'the key came from another .vmx';
      warnings.push(`${path.join(dir, vmx as string)}: checkpoint.vmState is not in its plain text, and its encrypted configuration is not open (${why}): the suspended state is taken to be the folder's .vmss`);
    }
  }

  const pool = new FilePool();
  const claimed = new Set<string>();
  const checkpoints: FolderCheckpoint[] = [];
  let wrongKey: WrongKeyError | null = null;

  const open = (cp: Omit<FolderCheckpoint, 'snap' | 'files' | 'hasMemory' | 'modified' | 'problem' | 'directory'>): void => {
    const entry: FolderCheckpoint = { ...cp, directory: null, files: [], hasMemory: false, modified: null, problem: null, snap: null };
    checkpoints.push(entry);
    const file = cp.file;
    if (file === null) {
      entry.problem = 'the .vmsd names no checkpoint file';
      return;
    }
    claimed.add(path.resolve(file));
    entry.files = [path.basename(file)];
    if (!isFile(file)) {
      entry.problem = `${path.basename(file)} is missing from the folder`;
      warnings.push(`${file}: ${cp.kind === 'suspended' ? 'the suspended state the .vmx names' : `snapshot "${cp.displayName}"`} is missing; listed in snapshots.json, not served`);
      return;
    }
    try {
      const snap = openSnapshot(file, { openFile: (p) => pool.file(p), keys, budget: opts.budget });
      pool.releaseIdle();
      entry.modified = snap.metaFile.mtime.toISOString();
      entry.hasMemory = snap.physmem !== null;
      if (snap.memoryPath !== null && path.resolve(snap.memoryPath) !== path.resolve(file)) {
        entry.files.push(path.basename(snap.memoryPath));
        claimed.add(path.resolve(snap.memoryPath));
      }
      if (snap.physmem === null && !hasMemoryOrSibling(snap, file)) {
        const stem = path.basename(file).replace(/\.[^.]*$/, '');
        snap.physmemError = `${cp.kind === 'snapshot' ? `snapshot "${cp.displayName}"` : path.basename(file)} holds no guest memory: ${path.basename(file)} has no memory/Memory[0][0] block and no ${stem}.vmem is beside it (a snapshot taken without the VM's memory, or a copy that left the .vmem behind); its metadata is served`;
      }
      entry.snap = snap;
    } catch (err) {
      if (!(err instanceof VmssError)) throw err;
      if (err instanceof WrongKeyError) wrongKey ??= err;
      entry.problem = err.message;
      warnings.push(`${err.message}; listed in snapshots.json, not served`);
    }
  };

  try {
    for (const e of vmsd.entries) {
      open({
        kind: 'snapshot', displayName: e.displayName, description: e.description, uid: e.uid, parent: e.parent,
        created: e.created, file: e.filename === null ? null : resolveNamed(dir, e.filename), disks: e.disks,
        current: e.uid !== null && e.uid === vmsd.current,
      });
    }
    const base = { description: '', uid: null, created: null, disks: [], current: false };
    const suspendedParent = vmsd.entries.some((e) => e.uid !== null && e.uid === vmsd.current) ? vmsd.current : null;
    const unclaimed = (): string[] => names.filter((n) => CHECKPOINT_EXT.test(n) && !claimed.has(path.join(dir, n))).sort();
    if (vmState !== null) {
      open({ ...base, kind: 'suspended', displayName: SUSPENDED, parent: suspendedParent, file: resolveNamed(dir, vmState) });
    } else {
      // No checkpoint.vmState: the folder's .vmss (or .std), the newest when there are several.
      const vmss = unclaimed().filter((n) => SUSPENDED_EXT.test(n));
      const newest = vmss.sort((a, b) => fs.statSync(path.join(dir, b)).mtimeMs - fs.statSync(path.join(dir, a)).mtimeMs)[0];
      if (newest !== undefined) {
        if (vmss.length > 1) warnings.push(`${dir} holds ${vmss.length} .vmss or .std files and the .vmx names none; ${newest}, the newest, is the suspended state`);
        open({ ...base, kind: 'suspended', displayName: SUSPENDED, parent: suspendedParent, file: path.join(dir, newest) });
      }
    }
    const found = unclaimed();
    if (vmx === null && vmsdName === null) {
      if (checkpoints.length + found.length === 0) {
        throw new VmssError(`${dirArg}: not a VM folder: it holds no .vmx, .vmsd, .vmss, .vmsn or .std file`);
      }
      warnings.push(`${dir} holds no .vmx or .vmsd: serving the checkpoints found in it, without snapshot names or times`);
    } else if (found.length > 0) {
      warnings.push(`${found.join(', ')} ${found.length > 1 ? 'are' : 'is'} in the folder but in neither the .vmsd nor the .vmx: served by file name`);
    }
    for (const n of found) open({ ...base, kind: 'found', displayName: n.replace(/\.[^.]*$/, ''), parent: null, file: path.join(dir, n) });
    // A key that decrypts none of the checkpoints is wrong, not every file damaged: said as for one file.
    if (wrongKey && !checkpoints.some((c) => c.snap?.encryption)) throw wrongKey;
  } catch (err) {
    for (const c of checkpoints) c.snap?.close();
    pool.closeAll();
    throw err;
  }

  // Directory names: made safe and unique as tag names are. The root's own files and
  // `suspended` are reserved (`suspended/` is always the suspended state): a snapshot called so
  // gets `~2`.
  const served = checkpoints.filter((c) => c.snap !== null);
  const reserved = [...ROOT_FILES, SUSPENDED];
  const others = served.filter((c) => c.kind !== 'suspended');
  const unique = uniqueNames([...reserved, ...others.map((c) => escapeName(c.displayName))]).slice(reserved.length);
  others.forEach((c, i) => (c.directory = unique[i] as string));
  for (const c of served) if (c.kind === 'suspended') c.directory = SUSPENDED;

  const times = served.map((c) => (c.snap as Snapshot).metaFile.mtime.getTime());
  if (vmsdName !== null) times.push(fs.statSync(path.join(dir, vmsdName)).mtimeMs);
  const mtime = new Date(times.length > 0 ? Math.max(...times) : fs.statSync(dir).mtimeMs);

  for (const c of served) decrypted.push(...((c.snap as Snapshot).encryption?.files ?? []).map((f) => path.basename(f)));
  const info = keys?.info ?? null;
  const encryption = decrypted.length > 0 && info ? encryptionSummary(info, [...new Set(decrypted)]) : null;

  return {
    dir, vmx, vmsd: vmsdName, encryption, checkpoints, warnings, mtime, pool,
    close: () => {
      for (const c of checkpoints) c.snap?.close();
      pool.closeAll();
    },
  };
}

/** Every evidence file the folder's served checkpoints read (the mount grants no more than they do). */
export function folderFiles(folder: VmFolder): Source[] {
  return folder.checkpoints.flatMap((c) => (c.snap ? evidenceFiles(c.snap) : []));
}
