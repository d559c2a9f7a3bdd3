import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSnapshot } from './kit/writer';
import { PageCache } from '../src/cache/pagecache';
import { openFolder } from '../src/evidence/folder/folder';
import { openSnapshot } from '../src/evidence/snapshot';
import { buildTree, type Tree } from '../src/tree/build';
import { buildFolderTree } from '../src/tree/folder';
import { scratchDir } from './helpers/paths';
import { writeVault } from './helpers/vault';

/** Paths written as a shell would take them, each with the plain path it names. */
function samePaths(tree: Tree, pairs: [string, string][]): void {
  for (const [written, plain] of pairs) {
    const node = tree.lookup(plain);
    expect(node, plain).to.not.equal(undefined);
    expect(tree.lookup(written), written).to.equal(node);
  }
}

describe('tree paths: one lookup for every tree', () => {
  const scratch = scratchDir('vmssfs-lookup-');

  it('a checkpoint tree resolves ./x, a//b and a trailing slash as the plain path', () => {
    const file = scratch.file('.vmss');
    writeSnapshot(file, { memory: 'embedded', blobPages: 8, regions: [{ ppn: 0, pageNum: 0, pages: 8 }] });
    const snap = openSnapshot(file);
    try {
      const tree = buildTree(snap, new PageCache({ maxBytes: 1 << 20 }));
      samePaths(tree, [['./info.txt', 'info.txt'], ['groups//cpu', 'groups/cpu'], ['/./groups/./cpu/', 'groups/cpu'], ['.', '']]);
      expect(tree.lookup('info.txt/x')).to.equal(undefined);
      expect(tree.lookup('nothing')).to.equal(undefined);
    } finally {
      snap.close();
    }
  });

  it('a VM folder tree resolves them the same way', () => {
    const dir = scratch.named('vault');
    fs.mkdirSync(dir);
    writeVault(dir);
    const folder = openFolder(dir);
    try {
      const tree = buildFolderTree(folder, new PageCache({ maxBytes: 1 << 20 }));
      samePaths(tree, [['./snapshots.txt', 'snapshots.txt'], ['after sample//groups', 'after sample/groups'], ['./after sample/./info.txt', 'after sample/info.txt'], ['.', '']]);
      expect(tree.lookup(path.join('snapshots.txt', 'x'))).to.equal(undefined);
      expect(tree.lookup('nothing')).to.equal(undefined);
    } finally {
      folder.close();
    }
  });
});
