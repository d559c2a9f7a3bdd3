import { VmssError } from '../errors';
import { errnoText } from '../io/source';
import { PAGE_SIZE, type Run } from '../format/regions';
import type { PhysMem } from '../evidence/evidence';

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

/** Read `length` bytes of `pm`'s memory file at `offset` into dst[at...] in place: null, or why it could not be read whole. */
function readSpanSync(pm: PhysMem, dst: Buffer, at: number, length: number, offset: number): string | null {
  try {
    const got = pm.file.readAtSync(dst.subarray(at, at + length), offset);
    return got < length ? shortRead(pm, length, offset, got) : null;
  } catch (err) {
    return readFailure(err, pm.file.name, length, offset);
  }
}

/** The same on the thread pool. */
async function readSpanAsync(pm: PhysMem, dst: Buffer, at: number, length: number, offset: number): Promise<string | null> {
  try {
    const got = await pm.file.read(dst, at, length, offset);
    return got < length ? shortRead(pm, length, offset, got) : null;
  } catch (err) {
    return readFailure(err, pm.file.name, length, offset);
  }
}

function shortRead(pm: PhysMem, length: number, offset: number, got: number): string {
  return `${pm.file.name}: ${length - got} bytes at ${offset + got} are missing (the file shrank since it was opened)`;
}

/** Add the page at `pageStart` to `out` (address order), merging it with the last range. */
function lose(out: Unread[], pageStart: number, why: string): void {
  const last = out[out.length - 1];
  if (last && last.start + last.length >= pageStart) last.length = Math.max(last.length, pageStart + PAGE_SIZE - last.start);
  else out.push({ start: pageStart, length: PAGE_SIZE, why });
}

/** One piece of a step: where it lies in the step, in the file, and how much of it the file holds. */
interface Span {
  /** Guest-physical address. */
  phys: number;
  at: number;
  offset: number;
  /** Bytes within the file's size; the rest of the piece lies past its end (zeros). */
  held: number;
}

/** The pieces of guest-physical [pos, pos+n) with memory, the parts past the file's end zero-filled. */
function spans(pm: PhysMem, pos: number, buf: Buffer, n: number): Span[] {
  const out: Span[] = [];
  for (const p of pm.map.pieces(pos, n)) {
    const at = p.at - pos;
    const run = p.segment as Run | null;
    if (run === null) {
      buf.fill(0, at, at + p.length);
      continue;
    }
    const offset = run.fileOffset + p.within;
    // Past the end of a plain truncated copy: zeros, as the mount serves them (its warning says so).
    const held = Math.max(0, Math.min(p.length, pm.file.size - offset));
    buf.fill(0, at + held, at + p.length);
    if (held > 0) out.push({ phys: p.at, at, offset, held });
  }
  return out;
}

const NONE: readonly Unread[] = Object.freeze([]);

/**
 * Fill buf[0, n) with guest-physical [pos, pos+n) of `pm`, which holds all of it, and return the
 * pages that could not be read (in address order; their bytes in buf are meaningless). Bytes
 * past the end of a plain truncated copy read as zeros, as the mount serves them; everything
 * within the file's size is read, and a read that fails or comes back short is tried again a
 * page at a time, so that only the pages it cannot produce are lost. A local file (or a layer
 * over one) is read right here, as cmp reads: a trip through the thread pool per step costs more
 * than the copy out of the OS page cache it waits for.
 */
export function readPhys(pm: PhysMem, pos: number, buf: Buffer, n: number): readonly Unread[] | Promise<readonly Unread[]> {
  const todo = spans(pm, pos, buf, n);
  if (pm.file.readsInPlace) {
    let lost: Unread[] | null = null;
    for (const s of todo) {
      if (readSpanSync(pm, buf, s.at, s.held, s.offset) === null) continue;
      lost ??= [];
      for (let q = s.phys; q < s.phys + s.held;) {
        const end = Math.min(s.phys + s.held, (Math.floor(q / PAGE_SIZE) + 1) * PAGE_SIZE);
        const why = readSpanSync(pm, buf, q - pos, end - q, s.offset + (q - s.phys));
        if (why !== null) lose(lost, Math.floor(q / PAGE_SIZE) * PAGE_SIZE, why);
        q = end;
      }
    }
    return lost ?? NONE;
  }
  return (async () => {
    const first = await Promise.all(todo.map((s) => readSpanAsync(pm, buf, s.at, s.held, s.offset)));
    let lost: Unread[] | null = null;
    for (const [i, s] of todo.entries()) {
      if (first[i] === null) continue;
      lost ??= [];
      for (let q = s.phys; q < s.phys + s.held;) {
        const end = Math.min(s.phys + s.held, (Math.floor(q / PAGE_SIZE) + 1) * PAGE_SIZE);
        const why = await readSpanAsync(pm, buf, q - pos, end - q, s.offset + (q - s.phys));
        if (why !== null) lose(lost, Math.floor(q / PAGE_SIZE) * PAGE_SIZE, why);
        q = end;
      }
    }
    return lost ?? NONE;
  })();
}
