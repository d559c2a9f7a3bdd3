import * as path from 'node:path';
import { VmssError } from '../errors';

/**
 * What the user's -o asked for, split into what vmssfs applies itself and what goes to libfuse.
 * uid=, gid= and umask= are applied by the tree's attributes, never by libfuse: libfuse's own
 * umask= would replace the modes outright (umask=0 makes every file 0777), and the tree must never
 * grant more than the evidence does.
 */
export interface UserOptions {
  /** Passed to libfuse as given (allow_other, allow_root, nonempty, max_read=...). */
  fuse: string[];
  uid?: number;
  gid?: number;
  /** Bits removed from every mode, after the evidence's own. */
  umask?: number;
}

/** Options that would make the evidence mount writable, or let it carry devices, setuid or programs. */
const CONTRADICTS_READ_ONLY: Record<string, string> = {
  rw: 'the mount is read-only evidence',
  dev: 'device files are never served from evidence (the mount is nodev)',
  suid: 'setuid bits are never honoured on evidence (the mount is nosuid)',
  exec: 'nothing on the evidence mount is run (the mount is noexec)',
};

function whole(name: string, value: string, radix: 8 | 10): number {
  const ok = radix === 8 ? /^[0-7]{1,4}$/.test(value) : /^\d{1,10}$/.test(value);
  const n = parseInt(value, radix);
  if (!ok || !Number.isSafeInteger(n) || n > 0xffff_ffff) {
    throw new VmssError(`-o ${name}=${value}: ${name} takes ${radix === 8 ? 'an octal mask such as 027' : 'a numeric id'}`);
  }
  return n;
}

/** Split and check the user's -o options. Throws VmssError for one that contradicts a read-only evidence mount. */
export function parseUserOptions(opts: readonly string[]): UserOptions {
  const out: UserOptions = { fuse: [] };
  for (const o of opts) {
    const eq = o.indexOf('=');
    const name = eq < 0 ? o : o.slice(0, eq);
    const value = eq < 0 ? '' : o.slice(eq + 1);
    const why = CONTRADICTS_READ_ONLY[name];
    if (why !== undefined) throw new VmssError(`-o ${o}: refused: ${why}`);
    if (name === 'uid' && eq >= 0) out.uid = whole('uid', value, 10);
    else if (name === 'gid' && eq >= 0) out.gid = whole('gid', value, 10);
    else if (name === 'umask' && eq >= 0) out.umask = whole('umask', value, 8) & 0o777;
    else out.fuse.push(o);
  }
  return out;
}

/** libfuse option values are split at commas; a backslash escapes one. */
function optValue(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/,/g, '\\,');
}

/**
 * The mount's FUSE options. The filesystem never changes while mounted, so the kernel may keep
 * pages (kernel_cache) and attributes and names (long timeouts) for the life of the mount.
 */
export function mountOptions(fsname: string, extra: readonly string[]): string[] {
  return [
    'ro',
    'nosuid',
    'nodev',
    'noexec',
    'use_ino',
    'default_permissions',
    `fsname=vmssfs#${optValue(fsname)}`,
    'subtype=vmssfs',
    'kernel_cache',
    'attr_timeout=86400',
    'entry_timeout=86400',
    'negative_timeout=86400',
    ...extra,
  ];
}

/**
 * fuse-native copies the option string into a 1024-byte buffer (NUL included) and silently drops
 * the rest, which could cut `allow_other` or the middle of an option: anything longer is refused.
 */
export const MAX_OPTION_BYTES = 1023;

/** The option string handed to fuse-native: `-o` and the options, comma-separated. */
export function optionString(options: readonly string[]): string {
  return '-o' + options.join(',');
}

/**
 * The options for mounting `snapshot` (its real path), within fuse-native's limit. `mount` shows
 * the fsname, so it names the whole path when that fits and the file's name otherwise.
 */
export function fittedMountOptions(snapshot: string, extra: readonly string[]): string[] {
  for (const fsname of [snapshot, path.basename(snapshot), '']) {
    const opts = mountOptions(fsname, extra);
    if (Buffer.byteLength(optionString(opts)) <= MAX_OPTION_BYTES) return opts;
  }
  const bytes = Buffer.byteLength(optionString(mountOptions('', extra)));
  throw new VmssError(`-o: the FUSE options come to ${bytes} bytes and libfuse's binding takes at most ${MAX_OPTION_BYTES} (it would cut the rest off silently): shorten them`);
}
