import { VmssError } from '../errors';
import type { OpenOptions } from '../evidence/open';
import type { Output } from '../cli/output';
import { CHUNK, lookup, openTree, readChunk } from './common';

/**
 * `vmssfs cat SNAPSHOT PATH`: the file's bytes to `out`, one chunk at a time, each written
 * before the next is read, so memory stays bounded however large the file and however slow the
 * reader, and a failed write (a full disk) stops the copy with its error.
 */
export async function cat(snapshot: string, path: string, opts: OpenOptions, out: Output): Promise<void> {
  const t = openTree(snapshot, opts);
  try {
    const node = lookup(t.tree, path);
    if (node.kind === 'dir') throw new VmssError(`${path}: is a directory`);
    // One buffer for the whole copy: each write has landed before the next read fills it.
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(node.size, 1)));
    for (let pos = 0; pos < node.size; ) {
      const n = await readChunk(node, buf, pos, Math.min(buf.length, node.size - pos));
      if (n === 0) break;
      pos += n;
      await out.write(buf.subarray(0, n));
    }
  } finally {
    t.close();
  }
}
