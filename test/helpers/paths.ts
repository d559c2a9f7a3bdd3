import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** The checkout's root (tests run from dist/test/...). */
export const REPO = path.resolve(__dirname, '..', '..', '..');
export const BIN = path.join(REPO, 'bin', 'vmssfs');
export const SAMPLE = path.join(REPO, 'fixtures', 'sample.vmss');

/** A fresh temporary directory, removed by the returned cleanup (call it in an after hook). */
export function tempDir(prefix = 'vmssfs-test-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A temporary directory for the enclosing `describe`, made before its tests and removed after
 * them. `file()` names a fresh file in it (`name` as given, or numbered with `ext`).
 */
export function scratchDir(prefix: string): { readonly dir: string; file(ext?: string): string; named(name: string): string } {
  let current: { dir: string; cleanup: () => void } | null = null;
  let n = 0;
  before(() => {
    current = tempDir(prefix);
  });
  after(() => current?.cleanup());
  const dir = (): string => {
    if (!current) throw new Error('scratchDir used outside its describe');
    return current.dir;
  };
  return {
    get dir() {
      return dir();
    },
    file: (ext = '.vmss') => path.join(dir(), `f${n++}${ext}`),
    named: (name) => path.join(dir(), name),
  };
}
