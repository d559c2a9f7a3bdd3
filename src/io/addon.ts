import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/**
 * Loading the native addon (native/), once per process and without a mount: the read path
 * (src/fuse/native.ts), the decoder (./native-decoder.ts) and decryption (./native-crypto.ts)
 * each take what they need from its exports, and fall back to JavaScript when it is absent.
 *
 * VMSSFS_NATIVE=0 turns it off; VMSSFS_NATIVE_ADDON=<file> loads that build instead of the usual
 * ones (tests use it for the AddressSanitizer build and to prove the fallback).
 */

export type AddonLoad = { exports: Record<string, unknown>; file: string } | { exports: null; reason: string };

/** Package root: this file is dist/src/io/addon.js. */
const ROOT = path.join(__dirname, '..', '..', '..');

/** Where the addon may be, in order: a fresh build, then the binary shipped in the package. */
export function addonCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.VMSSFS_NATIVE_ADDON) return [path.resolve(env.VMSSFS_NATIVE_ADDON)];
  const out = [path.join(ROOT, 'native', 'build', 'Release', 'vmssfs_native.node')];
  if (process.platform === 'linux' && process.arch === 'x64') out.push(path.join(ROOT, 'prebuilds', 'linux-x64', 'vmssfs_native.node'));
  return out;
}

/** Every build of the addon exports the read path's three functions: the mark of ours. */
function isOurs(x: unknown): x is Record<string, unknown> {
  const a = x as Record<string, unknown> | null;
  return !!a && typeof a.prepare === 'function' && typeof a.discard === 'function' && typeof a.counts === 'function';
}

let loaded: AddonLoad | null = null;

/** Load the addon once per process; the reason it could not be, otherwise. */
export function loadAddon(env: NodeJS.ProcessEnv = process.env): AddonLoad {
  if (loaded) return loaded;
  if (env.VMSSFS_NATIVE === '0') return (loaded = { exports: null, reason: 'turned off by VMSSFS_NATIVE=0' });
  let reason = 'no build of the addon found';
  for (const file of addonCandidates(env)) {
    if (!fs.existsSync(file)) continue;
    try {
      const m = { exports: {} as unknown };
      process.dlopen(m, file, os.constants.dlopen.RTLD_NOW);
      if (isOurs(m.exports)) return (loaded = { exports: m.exports, file });
      reason = `${file} is not the vmssfs addon`;
    } catch (err) {
      // dlopen's message names the file and the missing library or wrong architecture.
      reason = (err instanceof Error ? err.message : String(err)).split('\n')[0] as string;
    }
  }
  return (loaded = { exports: null, reason });
}
