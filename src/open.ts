import type { Evidence } from './evidence';
import { openSnapshot, type OpenOptions } from './snapshot';

export type { OpenOptions } from './snapshot';

/**
 * Open whatever the user named: a VMware checkpoint (.vmss, .vmsn, .std, or its .vmem). Every
 * command and the mount go through here, so a new format is one more branch here and nowhere else.
 */
export function openEvidence(arg: string, opts: OpenOptions = {}): Evidence {
  return openSnapshot(arg, opts);
}
