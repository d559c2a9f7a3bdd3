import { VmssError } from '../errors';
import { errnoText } from '../io/source';
import { PAGE_SIZE, type Run } from '../runmap';
import type { PhysMem } from '../snapshot';

/** Guest-physical pages [start, start+length) that could not be read, and the first reason. */
export interface Unread {
  start: number;
  length: number;
  why: string;
}

/** A read's failure as one line; errors that are no read failure (a bug) are thrown on. */
function readFailure(err: unknown, file: string, length: number, offset: number): string {
  if (err instanceof VmssError) return err.message;
  // A decoding layer's failure names its file and says what is missing; the OS's says only its errno.
  if (err instanceof Error && err.message.startsWith(`${file}: `)) return err.message;
  if ((err as NodeJS.ErrnoException | null)?.code !== undefined) return `${file}: read of ${length} bytes at ${offset} failed: ${errnoText(err)}`;
  throw err;
}

/** Read `length` bytes of `pm`'s memory file at `offset` into dst[at...]: null, or why it could not be read whole. */
async function readSpan(pm: PhysMem, dst: Buffer, at: number, length: number, offset: number): Promise<string | null> {
  try {
    // A local file (or a layer over one) is read right here, as cmp reads: a trip through the
    // thread pool per step costs more than the copy out of the OS page cache it waits for.
    const got = pm.file.readsInPlace
      ? pm.file.readAtSync(dst.subarray(at, at + length), offset)
      : await pm.file.read(dst, at, length, offset);
    return got < length ? `${pm.file.name}: ${length - got} bytes at ${offset + got} are missing (the file shrank since it was opened)` : null;
  } catch (err) {
    return readFailure(err, pm.file.name, length, offset);
  }
}

/**
 * Fill buf[0, n) with guest-physical [pos, pos+n) of `pm`, which holds all of it, and return the
 * pages that could not be read (in address order; their bytes in buf are meaningless). Bytes
 * past the end of a plain truncated copy read as zeros, as the mount serves them (its warning
 * says so); everything within the file's size is read, and a read that fails or comes back
 * short is tried again a page at a time, so that only the pages it cannot produce are lost.
 */
export async function readPhys(pm: PhysMem, pos: number, buf: Buffer, n: number): Promise<Unread[]> {
  const lost: Unread[] = [];
  const pieces = [...pm.map.pieces(pos, n)].map(async (p): Promise<Unread[]> => {
    const at = p.at - pos;
    const run = p.segment as Run | null;
    if (run === null) {
      buf.fill(0, at, at + p.length);
      return [];
    }
    const offset = run.fileOffset + p.within;
    const held = Math.max(0, Math.min(p.length, pm.file.size - offset));
    buf.fill(0, at + held, at + p.length);
    if (held === 0 || (await readSpan(pm, buf, at, held, offset)) === null) return [];
    const out: Unread[] = [];
    for (let q = p.at; q < p.at + held;) {
      const end = Math.min(p.at + held, (Math.floor(q / PAGE_SIZE) + 1) * PAGE_SIZE);
      const why = await readSpan(pm, buf, q - pos, end - q, offset + (q - p.at));
      const pageStart = Math.floor(q / PAGE_SIZE) * PAGE_SIZE;
      const last = out[out.length - 1];
      if (why !== null) {
        if (last && last.start + last.length >= pageStart) last.length = pageStart + PAGE_SIZE - last.start;
        else out.push({ start: pageStart, length: PAGE_SIZE, why });
      }
      q = end;
    }
    return out;
  });
  for (const r of await Promise.all(pieces)) {
    for (const u of r) {
      const last = lost[lost.length - 1];
      if (last && last.start + last.length >= u.start) last.length = Math.max(last.length, u.start + u.length - last.start);
      else lost.push(u);
    }
  }
  return lost;
}
