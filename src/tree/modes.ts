import type { Source } from '../io/source';

/** What the user may ask of the modes (the mount's -o uid=, gid=, umask=). */
export interface ModeOptions {
  uid?: number;
  gid?: number;
  /** Bits removed from every mode, after the evidence's own. */
  umask?: number;
}

/** Who mounts: their uid and every group they are in. */
export interface Mounter {
  uid: number;
  groups: readonly number[];
}

function currentMounter(): Mounter {
  const uid = process.getuid?.() ?? 0;
  return { uid, groups: [process.getgid?.() ?? 0, ...(process.getgroups?.() ?? [])] };
}

/**
 * The modes the tree shows: what every source grants, write bits removed, then the user's umask.
 * Where the sources' owners (or groups) differ, the owner (group) class gets no more than others
 * do, so that no one reads through the mount a file the evidence would not let them read.
 * Owner and group are the snapshot's, unless uid=/gid= say otherwise, or unless the user who
 * mounts could read the evidence only through an ACL or a capability (the modes would lock them
 * out of their own mount): then they own the tree.
 */
export function treeModes(sources: readonly Source[], user: ModeOptions, mounter: Mounter = currentMounter()): { uid: number; gid: number; file: number; dir: number } {
  const first = sources[0] as Source;
  let mode = 0o444;
  for (const s of sources) mode &= s.owner.mode;
  const othersRead = (mode & 0o004) !== 0;
  if (!othersRead && sources.some((s) => s.owner.uid !== first.owner.uid)) mode &= ~0o400;
  if (!othersRead && sources.some((s) => s.owner.gid !== first.owner.gid)) mode &= ~0o040;
  mode &= ~(user.umask ?? 0);
  // A directory is searchable by whoever may read it.
  const dir = mode | ((mode & 0o444) >> 2);
  let uid = user.uid ?? first.owner.uid;
  const gid = user.gid ?? first.owner.gid;
  const grants = uid === mounter.uid ? mode & 0o400 : mounter.groups.includes(gid) ? mode & 0o040 : mode & 0o004;
  if (user.uid === undefined && mounter.uid !== 0 && grants === 0) uid = mounter.uid;
  return { uid, gid, file: mode, dir };
}
