import type { OpenOptions } from '../snapshot';
import { posix } from 'node:path';
import type { Node } from '../tree/nodes';
import { lookup, openTree } from './common';

export interface LsOptions {
  vmem?: string;
  keys?: OpenOptions['keys'];
  long?: boolean;
}

/** The mode bits the mount shows (read-only everywhere), in ls -l's spelling. */
function modeText(node: Node): string {
  return node.kind === 'dir' ? 'dr-xr-xr-x' : '-r--r--r--';
}

/**
 * `vmssfs ls [-l] SNAPSHOT [DIR]`: one name per line, in the order readdir on the mount gives;
 * with -l, mode and size before each name. A file given as DIR lists just itself, as ls does.
 */
export async function ls(snapshot: string, dir: string, opts: LsOptions, out: (text: string) => Promise<void>): Promise<void> {
  const t = openTree(snapshot, opts.vmem, opts.keys);
  try {
    const node = lookup(t.tree, dir);
    const entries: [string, Node][] = node.kind === 'dir' ? [...node.children] : [[posix.basename(dir), node]];
    const size = (n: Node): number => (n.kind === 'dir' ? 0 : n.size);
    let text: string;
    if (opts.long) {
      const width = Math.max(1, ...entries.map(([, n]) => String(size(n)).length));
      text = entries.map(([name, n]) => `${modeText(n)} ${String(size(n)).padStart(width)} ${name}\n`).join('');
    } else {
      text = entries.map(([name]) => name + '\n').join('');
    }
    await out(text);
  } finally {
    t.close();
  }
}
