/**
 * vmssfs's FUSE adapter over the sample's real tree, in which two files have a bug: reading
 * `/info.txt` throws a TypeError at once, and reading `/metadata.json` rejects with one later
 * (what a programming error in a node would do). Everything else is served as vmssfs serves it.
 * Run as its own process: node buggy-fs.js SNAPSHOT MOUNTPOINT; it prints `mounted` and logs on stderr.
 */
import Fuse from 'fuse-native';
import { fuseOperations } from '../../src/fuse/adapter';
import { mountOptions, optionString } from '../../src/mount/options';
import { PageCache } from '../../src/cache/pagecache';
import { openSnapshot } from '../../src/evidence/snapshot';
import { buildTree } from '../../src/tree/build';
import type { FileNode } from '../../src/tree/nodes';

const [snapshot, mnt] = process.argv.slice(2) as [string, string];
const tree = buildTree(openSnapshot(snapshot), new PageCache());
const bug = (name: string, read: FileNode['read']): void => {
  const node = tree.lookup(name) as FileNode & { read: FileNode['read'] };
  node.read = read;
};
bug('/info.txt', () => {
  throw new TypeError("Cannot read properties of undefined (reading 'length')");
});
bug('/metadata.json', () => Promise.reject(new RangeError('offset out of range')));

class BuggyFuse extends Fuse {
  override _fuseOptions(): string {
    return optionString(mountOptions('buggy', []));
  }
}
const ops = fuseOperations(tree, { uid: 0, gid: 0, fileMode: 0o444, dirMode: 0o555, debug: false, log: (l) => process.stderr.write(`${l}\n`) });
const fuse = new BuggyFuse(mnt, ops, { timeout: false });
fuse.mount((err) => {
  if (err) {
    process.stderr.write(`buggy-fs: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write('mounted\n');
});
process.on('SIGTERM', () => fuse.unmount(() => process.exit(0)));
