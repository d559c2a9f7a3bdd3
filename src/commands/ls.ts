import type { OpenOptions } from '../evidence/open';
import { treeModes } from '../tree/modes';
import type { Node } from '../tree/nodes';
import { lookup, openTree, treeParts } from './common';

export interface LsOptions extends OpenOptions {
  long?: boolean;
}

/** Mode bits in ls -l's spelling: 0o440 is r--r-----. */
function rwx(mode: number): string {
  return [6, 3, 0].map((shift) => ((mode >> shift) & 4 ? 'r' : '-') + ((mode >> shift) & 2 ? 'w' : '-') + ((mode >> shift) & 1 ? 'x' : '-')).join('');
}

/**
 * `vmssfs ls [-l] SNAPSHOT [DIR]`: one name per line, in the order readdir on the mount gives;
 * with -l, mode and size before each name. A file given as DIR lists just itself, as ls does.
 */
export async function ls(snapshot: string, dir: string, opts: LsOptions, out: (text: string) => Promise<void>): Promise<void> {
  const t = openTree(snapshot, opts);
  try {
    const node = lookup(t.tree, dir);
    const entries: [string, Node][] = node.kind === 'dir' ? [...node.children] : [[treeParts(dir).pop() ?? dir, node]];
    const size = (n: Node): number => (n.kind === 'dir' ? 0 : n.size);
    let text: string;
    if (opts.long) {
      // The modes the mount shows: what the evidence grants, never write (tree/modes.ts).
      const modes = treeModes(t.files, {});
      const modeText = (n: Node): string => (n.kind === 'dir' ? `d${rwx(modes.dir)}` : `-${rwx(modes.file)}`);
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
