import { loadAddon } from './addon';
import { FastLzError, NEEDS_HISTORY, fastLzDecode, type DecodeStop } from './fastlz';

/**
 * FastLZ decoding in the native addon (native/fastlz.c), with the JavaScript decoder's contract
 * (fastLzDecode in ./fastlz): the same bytes, the same NEEDS_HISTORY, the same FastLzError and
 * reason. The addon is loaded by ./addon.ts (VMSSFS_NATIVE=0 and VMSSFS_NATIVE_ADDON apply),
 * without a mount; when it cannot be, or predates the decoder, the JavaScript decoder does the
 * work.
 *
 * decodeBlockAsync decodes on libuv's thread pool (UV_THREADPOOL_SIZE threads, 4 by default), so
 * several blocks decode at once, beside the event loop; its `out` must be left alone until the
 * promise settles.
 */

type DecodeArgs = [input: Buffer, ip0: number, out: Buffer, outStart: number, outEnd: number, historyStart: number, atBlockStart: boolean, stopAt: number, where?: Float64Array];

interface DecoderAddon {
  fastlzDecode(...args: DecodeArgs): number;
  fastlzDecodeAsync(...args: DecodeArgs): Promise<number>;
}

function isDecoder(x: unknown): x is DecoderAddon {
  const a = x as Partial<Record<keyof DecoderAddon, unknown>> | null;
  return !!a && typeof a.fastlzDecode === 'function' && typeof a.fastlzDecodeAsync === 'function';
}

let chosen: { addon: DecoderAddon; file: string } | { addon: null; reason: string } | null = null;

function native(): DecoderAddon | null {
  if (!chosen) {
    const lib = loadAddon();
    if (!lib.exports) chosen = { addon: null, reason: lib.reason };
    else if (isDecoder(lib.exports)) chosen = { addon: lib.exports, file: lib.file };
    else chosen = { addon: null, reason: `${lib.file} has no decoder (an older build)` };
  }
  return chosen.addon;
}

/** Which decoder runs, for --debug and the bench: "native (file)" or "JavaScript (why)". */
export function decoderInUse(): string {
  native();
  const c = chosen as NonNullable<typeof chosen>;
  return c.addon ? `native (${c.file})` : `JavaScript (${c.reason})`;
}

/** The addon reports a damaged stream with this code; its message is the reason. */
function damaged(err: unknown): unknown {
  if (err instanceof Error && (err as NodeJS.ErrnoException).code === 'VMSSFS_FASTLZ_DAMAGED') return new FastLzError(err.message);
  return err;
}

const where = new Float64Array(2);

/** fastLzDecode's contract (see ./fastlz), decoded natively when the addon is there. */
export function decodeBlock(
  input: Buffer, ip0: number, out: Buffer, outStart: number, outEnd: number, historyStart: number, atBlockStart: boolean, stop?: DecodeStop,
): number {
  const addon = native();
  if (!addon) return fastLzDecode(input, ip0, out, outStart, outEnd, historyStart, atBlockStart, stop);
  let r: number;
  try {
    r = addon.fastlzDecode(input, ip0, out, outStart, outEnd, historyStart, atBlockStart, stop ? stop.at : -1, stop ? where : undefined);
  } catch (err) {
    throw damaged(err);
  }
  if (stop && r !== NEEDS_HISTORY) {
    stop.ip = where[0] as number;
    stop.op = where[1] as number;
  }
  return r;
}

/**
 * decodeBlock on libuv's thread pool; without the addon, the JavaScript decoder after a turn of
 * the event loop, so that the reads (and FUSE requests) waiting get theirs between blocks.
 */
export async function decodeBlockAsync(
  input: Buffer, ip0: number, out: Buffer, outStart: number, outEnd: number, historyStart: number, atBlockStart: boolean, stop?: DecodeStop,
): Promise<number> {
  const addon = native();
  if (!addon) {
    await new Promise((turn) => setImmediate(turn));
    return fastLzDecode(input, ip0, out, outStart, outEnd, historyStart, atBlockStart, stop);
  }
  const at = stop ? new Float64Array(2) : undefined;
  let r: number;
  try {
    r = await addon.fastlzDecodeAsync(input, ip0, out, outStart, outEnd, historyStart, atBlockStart, stop ? stop.at : -1, at);
  } catch (err) {
    throw damaged(err);
  }
  if (stop && at && r !== NEEDS_HISTORY) {
    stop.ip = at[0] as number;
    stop.op = at[1] as number;
  }
  return r;
}
