import * as fs from 'node:fs';
import * as path from 'node:path';
import { encryptVmFolder, writeVmFolder, type EncryptedVmFolder, type EncryptFolderOptions, type VmFolderSpec, type WrittenVmFolder } from '../kit/folder-writer';
import type { SnapshotsJson } from '../../src/evidence/folder/report';
import { PASSWORD } from './encrypted';

/** Pages each snapshot of the vault changes, by uid (generation = uid), and the suspended state's. */
export const CHANGED = {
  /** "after sample" against "clean install". */
  afterSample: [5, 6, 7, 100],
  /** The suspended state against "after sample". */
  suspended: [7, 200, 201],
};

/**
 * The suite's VM folder: a snapshot tree with a root, a child the VM runs from (current), a
 * snapshot taken without memory, a second "clean install" of another memory layout, one whose
 * .vmsn is gone, and a suspended state with a session-suffixed name.
 */
export const VAULT: VmFolderSpec = {
  name: 'vault',
  current: 2,
  snapshots: [
    { uid: 1, displayName: 'clean install', description: 'fresh "OS" | patched', created: '2023-11-14T22:13:20Z', file: 'vault-Snapshot1.vmsn' },
    { uid: 2, parent: 1, displayName: 'after sample', created: '2023-11-14T23:00:00Z', file: 'vault-Snapshot2.vmsn', altered: new Map(CHANGED.afterSample.map((p) => [p, 2])) },
    { uid: 3, parent: 1, displayName: 'disk only', created: '2023-11-14T22:30:00Z', file: 'vault-Snapshot3.vmsn', memory: 'none' },
    {
      uid: 4, parent: 2, displayName: 'clean install', created: '2023-11-15T01:00:00Z', file: 'vault-Snapshot4.vmsn',
      regions: [{ ppn: 0, pageNum: 0, pages: 128 }, { ppn: 256, pageNum: 128, pages: 128 }],
    },
    { uid: 5, parent: 1, displayName: 'gone', created: '2023-11-15T02:00:00Z', file: 'vault-Snapshot5.vmsn', missing: true },
  ],
  suspended: {
    file: 'vault-3-3c85c1f6.vmss',
    // The suspended state runs on from "after sample": its pages plus three more changes.
    altered: new Map([...CHANGED.afterSample.map((p): [number, number] => [p, 2]), ...CHANGED.suspended.map((p): [number, number] => [p, 3])]),
  },
};

/** The vault's chain as snapshots.json gives it (see chain()). */
export const VAULT_CHAIN = [
  ['clean install', 1, null, null, true, false, false],
  ['after sample', 2, 1, 'clean install', true, true, false],
  ['disk only', 3, 1, 'clean install', false, false, false],
  ['clean install~2', 4, 2, 'after sample', true, false, false],
  [null, 5, 1, 'clean install', false, false, true],
  ['suspended', null, 2, 'after sample', true, false, false],
];

/** The snapshot tree as snapshots.json gives it: directory, uid, parent, parent's directory, memory, current, missing. */
export function chain(j: SnapshotsJson): unknown[] {
  return j.checkpoints.map((c) => [c.directory, c.uid, c.parent, c.parentDirectory, c.hasMemory, c.current, c.missing]);
}

/** Page numbers as the merged byte ranges diff reports (4 KiB pages). */
export function pageRanges(pages: number[]): { start: number; length: number }[] {
  const PAGE = 4096;
  const out: { start: number; length: number }[] = [];
  for (const p of [...new Set(pages)].sort((x, y) => x - y)) {
    const last = out[out.length - 1];
    if (last && last.start + last.length === p * PAGE) last.length += PAGE;
    else out.push({ start: p * PAGE, length: PAGE });
  }
  return out;
}

export function writeVault(dir: string): WrittenVmFolder {
  return writeVmFolder(dir, VAULT);
}

export interface EncryptedVault {
  /** The plaintext the writer started from (root/plain). */
  plain: WrittenVmFolder;
  /** Its encrypted copy (root/vm). */
  vm: EncryptedVmFolder;
  passwordFile: string;
  keyHex: string;
}

/** The vault written plain in `root`/plain, then encrypted into `root`/vm; the password in `root`/password.txt. */
export function writeEncryptedVault(root: string, opts: Partial<EncryptFolderOptions> = {}): EncryptedVault {
  const plainDir = path.join(root, 'plain');
  const vmDir = path.join(root, 'vm');
  fs.mkdirSync(plainDir, { recursive: true });
  fs.mkdirSync(vmDir, { recursive: true });
  const plain = writeVault(plainDir);
  const vm = encryptVmFolder(plain, vmDir, { password: PASSWORD, rounds: 1000, ...opts });
  const passwordFile = path.join(root, 'password.txt');
  fs.writeFileSync(passwordFile, `${PASSWORD}\n`);
  return { plain, vm, passwordFile, keyHex: vm.key.toString('hex') };
}
