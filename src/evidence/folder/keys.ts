/**
 * An encrypted VM's folder: which of its files are encrypted, the key that opens them (asked for
 * once, before anything is parsed), and what the folder reads through that key besides the
 * checkpoints: its .vmx's encrypted configuration and, when encrypted, its .vmsd.
 */
import * as path from 'node:path';
import type { EncryptionInfo } from '../../crypto/keyring';
import { VmssError } from '../../errors';
import { isEncObjFile } from '../../io/encobj';
import { noKeys, openSource, type KeySupplier } from '../../io/sources';
import type { FolderListing } from './listing';
import { TEXT_MAX } from './vmsd';

/** Key material as a folder takes it: a Keyring (cli/options.ts), or any supplier of the data files' key. */
export interface FolderKeys {
  readonly info: EncryptionInfo | null;
  /** `vmx`: the key-safe .vmx to use when none was named with --vmx (the folder's own). */
  dataKey(file: string, vmx?: string): Buffer;
  /** The decrypted configuration of `vmx`, once its key safe was opened (see Keyring.config). */
  config?(vmx: string): string | null;
}

/** What each file of the folder is opened with: the keys, with the folder's own .vmx as the default key safe. */
export type BoundKeys = KeySupplier & { readonly info: EncryptionInfo | null };

export interface FolderUnlock {
  /** Undefined when no key material was given (then nothing in the folder is encrypted). */
  keys: BoundKeys | undefined;
  /** The folder's .vmx, absolute, when it holds a key safe: an encrypted VM's. */
  keySafeVmx: string | null;
  /** The folder's encrypted files, absolute: the .vmsd first, then the checkpoints, then memory files. */
  encrypted: string[];
}

const ORDER = [/\.vmsd$/i, /\.(vmsn|vmss|std)$/i, /\.vmem$/i];

/**
 * Find the folder's encrypted files by their first bytes and, when there are any, resolve the key
 * now, from its first: the password is asked (or refused, or found wrong) once, with the same
 * words as for a single file, before any checkpoint is parsed; a key problem stops the folder
 * instead of leaving every checkpoint "not served". `vmxValues`: the plain .vmx's keys.
 */
export function unlockFolder(listing: FolderListing, vmxValues: ReadonlyMap<string, string> | null, keys: FolderKeys | undefined): FolderUnlock {
  const keySafeVmx = listing.vmx !== null && vmxValues?.has('encryption.keysafe') ? path.join(listing.dir, listing.vmx) : null;
  const encrypted = ORDER.flatMap((re) => listing.names.filter((n) => re.test(n)).sort())
    .map((n) => path.join(listing.dir, n))
    .filter(isEncObjFile);
  const first = encrypted[0];
  if (first !== undefined && !keys) throw noKeys(first);
  const vmx = keySafeVmx ?? undefined;
  const bound: BoundKeys | undefined = keys && {
    dataKey: (file) => keys.dataKey(file, vmx),
    get info() {
      return keys.info;
    },
  };
  if (first !== undefined) bound?.dataKey(first);
  return { keys: bound, keySafeVmx, encrypted };
}

/**
 * The decrypted configuration of the folder's key-safe .vmx, or null when it is not at hand: no
 * key was needed, or it came from --key, which opens the data files but not the key safe.
 */
export function encryptedConfig(unlock: FolderUnlock, keys: FolderKeys | undefined): string | null {
  return unlock.keySafeVmx !== null && keys?.config ? keys.config(unlock.keySafeVmx) : null;
}

/**
 * The plaintext of an encrypted text file of the folder (its .vmsd), decrypted through the same
 * layer as the checkpoints, in memory only; null (with a warning) when it cannot be.
 */
export function readEncryptedText(file: string, keys: BoundKeys, warnings: string[]): Buffer | null {
  let opened;
  try {
    opened = openSource(file, { keys, memory: false });
  } catch (err) {
    if (!(err instanceof VmssError)) throw err;
    warnings.push(`${err.message}; ignored`);
    return null;
  }
  const src = opened.source;
  try {
    if (src.size > TEXT_MAX) {
      warnings.push(`${file}: decrypted, ${src.size} bytes is too large for a VMware text file; ignored`);
      return null;
    }
    for (const d of src.damaged) warnings.push(`${file}: ${d.why}`);
    const buf = Buffer.alloc(src.size);
    return buf.subarray(0, src.readAtSync(buf, 0));
  } catch (err) {
    warnings.push(`${file}: cannot decrypt: ${err instanceof Error ? err.message : String(err)}; ignored`);
    return null;
  } finally {
    src.close();
  }
}
