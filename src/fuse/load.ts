import { VmssError, describeError } from '../errors';

/**
 * fuse-native, loaded only to mount. It links libfuse.so.2 when it loads, and it is an optional
 * dependency (npm leaves it out where it cannot build it): every command but the mount works
 * without it, so nothing else may import it.
 */
export type FuseClass = typeof import('fuse-native').default;

/** What stops fuse-native from loading, and how to get it, in one line. */
export function fuseMissing(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const what = describeError(err);
  const others = 'info, ls, cat, extract and diff work without it';
  if (e?.code === 'MODULE_NOT_FOUND' && /'fuse-native'/.test(what)) {
    return `cannot mount: fuse-native (the binding to libfuse) is not installed (npm leaves it out where it cannot build it; it ships builds for Linux and macOS on x64): ${others}`;
  }
  if (/libfuse\.so\.2/.test(what)) {
    // dlopen's own words say whether the file is missing or unusable.
    return `cannot mount: libfuse.so.2 (the FUSE 2 library) cannot be loaded (${what.replace(/^.*?libfuse\.so\.2/, 'libfuse.so.2')}): install it (Debian, Ubuntu: apt-get install libfuse2, or libfuse2t64 on newer releases; Fedora: dnf install fuse-libs): ${others}`;
  }
  if (/not currently supported on|No native build was found/.test(what)) {
    return `cannot mount: fuse-native does not run here (${what}): ${others}`;
  }
  return `cannot mount: fuse-native does not load (${what}): ${others}`;
}

let loaded: FuseClass | null = null;

/** fuse-native, or a VmssError saying in one line what is missing and how to get it. */
export function loadFuse(): FuseClass {
  if (loaded) return loaded;
  try {
    // A plain require at the point of use: a static import would load libfuse with the CLI.
    // The package's module.exports is the class itself.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loaded = require('fuse-native') as FuseClass;
  } catch (err) {
    throw new VmssError(fuseMissing(err));
  }
  return loaded;
}
