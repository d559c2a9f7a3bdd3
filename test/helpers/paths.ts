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
