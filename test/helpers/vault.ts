import { writeVmFolder, type VmFolderSpec, type WrittenVmFolder } from '../../scripts/folder-writer';

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

export function writeVault(dir: string): WrittenVmFolder {
  return writeVmFolder(dir, VAULT);
}
