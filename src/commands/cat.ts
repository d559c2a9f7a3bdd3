import type { OpenOptions } from '../snapshot';
import { VmssError } from '../errors';
import { CHUNK, lookup, openTree, readChunk } from './common';

/**
 * `vmssfs cat SNAPSHOT PATH`: the file's bytes to stdout, one chunk at a time. A fresh buffer per
 * chunk (the stream may still hold the last one) and a wait for 'drain' whenever the stream is
 * full, so memory stays bounded however large the file and however slow the reader.
 */
export async function cat(snapshot: string, path: string, opts: { vmem?: string; keys?: OpenOptions['keys'] }, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  const t = openTree(snapshot, opts.vmem, opts.keys);
  try {
    const node = lookup(t.tree, path);
    if (node.kind === 'dir') throw new VmssError(`${path}: is a directory`);
    for (let pos = 0; pos < node.size; ) {
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, node.size - pos));
      const n = await readChunk(node, buf, pos, buf.length);
      if (n === 0) break;
      pos += n;
      if (!out.write(n === buf.length ? buf : buf.subarray(0, n))) await new Promise<void>((resolve) => out.once('drain', resolve));
    }
  } finally {
    t.close();
  }
}
