import { expect } from 'chai';
import * as path from 'node:path';
import { writeCheckpoint, writeSnapshot, u32, u64, type WrittenSnapshot } from './kit/writer';
import { PageCache } from '../src/cache/pagecache';
import type { Snapshot } from '../src/evidence/evidence';
import { openSnapshot } from '../src/evidence/snapshot';
import { buildTree, type Tree } from '../src/tree/build';
import { escapeName, uniqueNames } from '../src/tree/names';
import type { FileNode, Node } from '../src/tree/nodes';
import { tempDir } from './helpers/paths';

function file(tree: Tree, p: string): FileNode {
  const node: Node | undefined = tree.lookup(p);
  if (!node || node.kind !== 'file') throw new Error(`${p} is not a file in the tree`);
  return node;
}

async function readAll(node: FileNode): Promise<Buffer> {
  const buf = Buffer.alloc(node.size);
  expect(await node.read(buf, 0, node.size + 10)).to.equal(node.size);
  return buf;
}

describe('tree model (no FUSE)', () => {
  describe('names', () => {
    it('escapes % and / and nothing else', () => {
      expect(escapeName('a/b%c')).to.equal('a%2Fb%25c');
      expect(escapeName('cpu:numVCPUs[0]')).to.equal('cpu:numVCPUs[0]');
      expect(escapeName('S.base64 [1]')).to.equal('S.base64 [1]');
    });

    it('escapes what a directory entry cannot hold', () => {
      expect(escapeName('')).to.equal('%00');
      expect(escapeName('.')).to.equal('%2E');
      expect(escapeName('..')).to.equal('%2E%2E');
      expect(escapeName('a\0b')).to.equal('a%00b');
    });

    it('cuts names over 255 bytes and keeps them distinct with a hash', () => {
      const a = escapeName('x'.repeat(250) + '[1]' + '%'.repeat(10));
      const b = escapeName('x'.repeat(250) + '[2]' + '%'.repeat(10));
      expect(Buffer.byteLength(a)).to.be.at.most(255);
      expect(a).to.not.equal(b);
      expect(escapeName('n'.repeat(255))).to.equal('n'.repeat(255));
    });

    it('gives later duplicates ~2, ~3 without colliding with existing names', () => {
      expect(uniqueNames(['rip[0]', 'rip[0]', 'rip[0]~2', 'rip[0]'])).to.deep.equal(['rip[0]', 'rip[0]~3', 'rip[0]~2', 'rip[0]~4']);
    });
  });

  describe('built from a snapshot', () => {
    const tmp = tempDir();
    let w: WrittenSnapshot;
    let snap: Snapshot;
    let tree: Tree;
    before(() => {
      w = writeSnapshot(path.join(tmp.dir, 'tree.vmss'), {
        memory: 'embedded', blobPages: 48, regions: [{ ppn: 0, pageNum: 0, pages: 32 }, { ppn: 64, pageNum: 32, pages: 16 }],
      });
      snap = openSnapshot(w.path);
      tree = buildTree(snap, new PageCache({ maxBytes: 1 << 20, chunkSize: 64 * 1024 }));
    });
    after(() => {
      snap.close();
      tmp.cleanup();
    });

    it('reads physmem.raw as the flat image, holes as zeros, clamped at the end', async () => {
      const pm = file(tree, '/physmem.raw');
      expect(pm.size).to.equal(w.physSize);
      expect((await readAll(pm)).equals(w.readPhys(0, w.physSize))).to.equal(true);
      const tail = Buffer.alloc(100);
      expect(await pm.read(tail, w.physSize - 10, 100)).to.equal(10);
      expect(await pm.read(tail, w.physSize, 100)).to.equal(0);
    });

    it('reads scalar tags as text and blocks as raw bytes', async () => {
      expect((await readAll(file(tree, '/groups/cpu/rip[1]'))).toString()).to.equal('0xfffff80002c1c0bb\n');
      const gp = await readAll(file(tree, '/groups/cpu/gpregs[0]'));
      const t = w.tag('cpu/gpregs[0]');
      expect(gp.length).to.equal(t.size);
    });

    it('tells where each tag sits in the snapshot through extended attributes', () => {
      const t = w.tag('cpu/gpregs[0]');
      const x = file(tree, '/groups/cpu/gpregs[0]').xattrs;
      expect(x?.get('user.vmss.offset')).to.equal(String(t.dataOffset));
      expect(x?.get('user.vmss.size')).to.equal(String(t.size));
      expect(x?.get('user.vmss.flags')).to.equal('block');
      expect(file(tree, '/groups/cpu/rip[0]').xattrs?.get('user.vmss.flags')).to.equal('inline');
    });

    it('numbers every node uniquely', () => {
      const seen = new Set<number>();
      const walk = (n: Node): void => {
        expect(seen.has(n.ino)).to.equal(false);
        seen.add(n.ino);
        if (n.kind === 'dir') for (const c of n.children.values()) walk(c);
      };
      walk(tree.root);
      expect(seen.size).to.be.greaterThan(100);
    });
  });

  it('keeps every duplicate tag and group, disambiguated', () => {
    const tmp = tempDir();
    try {
      const cpu = { name: 'cpu', tags: [{ name: 'rip', indices: [0], value: u64(1) }, { name: 'rip', indices: [0], value: u64(2) }, { name: 'x', value: u32(3) }] };
      const w = writeCheckpoint(path.join(tmp.dir, 'dup.vmss'), { groups: [cpu, { name: 'cpu', tags: [{ name: 'y', value: u32(4) }] }] });
      const snap = openSnapshot(w.path);
      try {
        const tree = buildTree(snap, new PageCache());
        const groups = tree.lookup('/groups');
        expect(groups?.kind === 'dir' && [...groups.children.keys()]).to.deep.equal(['cpu', 'cpu~2']);
        const cpuDir = tree.lookup('/groups/cpu');
        expect(cpuDir?.kind === 'dir' && [...cpuDir.children.keys()]).to.deep.equal(['rip[0]', 'rip[0]~2', 'x']);
        expect(tree.lookup('/groups/cpu~2/y')).to.not.equal(undefined);
      } finally {
        snap.close();
      }
    } finally {
      tmp.cleanup();
    }
  });
});
