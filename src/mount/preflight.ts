import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError } from '../errors';

export interface MountEntry {
  /** major:minor of the mount's device, as /sys/class/bdi names it. */
  device: string;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** /proc/self/mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (fields.length < 5 || dash < 0) continue;
    out.push({ device: fields[2] as string, mountPoint: unescapeMountField(fields[4] as string), fsType: fields[dash + 1] ?? '', source: unescapeMountField(fields[dash + 2] ?? '') });
  }
  return out;
}

/** The mount at exactly `mnt` (absolute), if any. Reads procfs, never the mount itself. */
export async function mountAt(mnt: string): Promise<MountEntry | undefined> {
  const text = await fs.promises.readFile('/proc/self/mountinfo', 'utf8');
  return parseMountinfo(text).reverse().find((m) => m.mountPoint === mnt);
}

function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = path.join(dir || '.', cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not in this directory
    }
  }
  return null;
}

/** fusermount unmounts FUSE filesystems (Debian's `fuse` package; `fuse3` names it fusermount3). */
export function fusermount(): string {
  const found = which('fusermount') ?? which('fusermount3');
  if (!found) throw new VmssError('fusermount not found: install Debian\'s fuse package (apt-get install fuse libfuse2)');
  return found;
}

export type MountpointState = 'ready' | 'stale';

/**
 * Check that MOUNTPOINT can be mounted on: a directory, not already a mount point. A dead FUSE
 * mount (its daemon killed) answers ENOTCONN: reported as 'stale' for the caller to clear or explain.
 */
export async function checkMountpoint(mnt: string, fuseOptions: readonly string[] = []): Promise<MountpointState> {
  if (!fs.existsSync('/dev/fuse')) {
    throw new VmssError('/dev/fuse is missing: this kernel or container has no FUSE (in a container, pass --device /dev/fuse); use `vmssfs ls/cat/extract` instead');
  }
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(mnt);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTCONN') return 'stale';
    if (code === 'ENOENT') throw new VmssError(`${mnt}: mountpoint does not exist`);
    throw new VmssError(`${mnt}: cannot use as mountpoint: ${code ?? String(err)}`);
  }
  if (!st.isDirectory()) throw new VmssError(`${mnt}: mountpoint is not a directory`);
  const existing = await mountAt(mnt);
  if (existing) throw new VmssError(`${mnt}: already mounted (${existing.source} type ${existing.fsType}); unmount it first with fusermount -u ${mnt}`);
  // libfuse refuses a non-empty mountpoint; a detached daemon could only say "refused".
  if (!fuseOptions.includes('nonempty') && (await fs.promises.readdir(mnt)).length > 0) {
    throw new VmssError(`${mnt}: mountpoint is not empty (mounting would hide its files; pass -o nonempty to do it anyway)`);
  }
  return 'ready';
}

export function staleMessage(mnt: string): string {
  return `${mnt}: holds a dead FUSE mount (its daemon was killed: "Transport endpoint is not connected"); clear it with \`fusermount -u ${mnt}\`, or run vmssfs again with --clear-stale`;
}

/**
 * Why fusermount would refuse this mount to a user who is not root, as far as can be told from
 * outside: what it says itself when its stderr reaches us. null for root, or when nothing is found.
 */
export function refusalReason(mnt: string, fuseOptions: readonly string[], conf = '/etc/fuse.conf'): string | null {
  if (process.getuid?.() === 0) return null;
  const shared = fuseOptions.find((o) => o === 'allow_other' || o === 'allow_root');
  if (shared) {
    let text = '';
    try {
      text = fs.readFileSync(conf, 'utf8');
    } catch {
      // no file: the option is not allowed
    }
    if (!/^\s*user_allow_other\s*$/m.test(text)) return `option ${shared} only allowed if 'user_allow_other' is set in ${conf}`;
  }
  try {
    fs.accessSync(mnt, fs.constants.W_OK);
  } catch {
    return `user has no write access to mountpoint ${mnt}`;
  }
  return null;
}
