import * as fs from 'node:fs';
import { VmssError } from '../errors';
import type { Evidence } from './evidence';
import { GUEST_EXT, NotGuestDump } from '../format/guestdump';
import { guestSibling, openGuestDump } from './guest';
import { openSnapshot, type OpenOptions } from './snapshot';
import { isUrl } from '../io/http-access';

export type { OpenOptions } from './snapshot';

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/**
 * The guest dump to open for `arg`: `arg` itself when it is named `.guest` (crash's rule: guest
 * dumps carry no magic), or the `.guest` beside a `.vmem` that has no checkpoint beside it.
 */
function guestDumpFor(arg: string): string | null {
  if (GUEST_EXT.test(arg)) return arg;
  if (!/\.vmem$/i.test(arg)) return null;
  const base = arg.replace(/\.vmem$/i, '');
  if (['.vmss', '.vmsn', '.std'].some((e) => isFile(base + e))) return null;
  const guest = `${base}.guest`;
  return isFile(guest) && guestSibling(guest) === arg ? guest : null;
}

/**
 * Open whatever the user named: a VMware checkpoint (.vmss, .vmsn, .std, or its .vmem) or an ESXi
 * guest dump (debug.guest, or its debug.vmem). Every command and the mount go through here, so
 * the tree and the commands never learn which format they hold.
 */
export function openEvidence(arg: string, opts: OpenOptions = {}): Evidence {
  // On a web server: a checkpoint (or its .vmem) only; guest dumps are read from files.
  if (isUrl(arg)) return openSnapshot(arg, opts);
  const guest = guestDumpFor(arg);
  if (guest === null) return openSnapshot(arg, opts);
  let reason: string;
  try {
    return openGuestDump(guest, { vmem: opts.vmem ?? (guest === arg ? undefined : arg) });
  } catch (err) {
    if (!(err instanceof NotGuestDump)) throw err;
    reason = err.message;
  }
  if (guest !== arg) throw new VmssError(`${guest}: not an ESXi guest dump (${reason}), so ${arg} cannot be paired with it; give the .vmss/.vmsn with --vmem ${arg}`);
  // Named .guest but not one: perhaps a checkpoint under another name; else say both.
  try {
    return openSnapshot(arg, opts);
  } catch (err) {
    if (err instanceof VmssError) throw new VmssError(`${err.message}; nor an ESXi guest dump: ${reason}`);
    throw err;
  }
}
