import * as fs from 'node:fs';
import * as tty from 'node:tty';
import { VmssError } from '../errors';
import { errnoText } from '../io/source';

/**
 * The reader of stdout went away (`vmssfs cat ... | head`): not an error, the command just stops
 * and exits 0, as `cat` does under a shell that ignores SIGPIPE.
 */
export class OutputClosed extends Error {
  constructor() {
    super('standard output closed by its reader');
    this.name = 'OutputClosed';
  }
}

/** Where the commands' output goes: every byte of each write lands, or the promise rejects. */
export interface Output {
  write(data: string | Buffer): Promise<void>;
}

/** `standard output (/path/it/goes/to)`, so a full-disk message names the file that is short. */
function stdoutName(): string {
  try {
    return `standard output (${fs.readlinkSync('/proc/self/fd/1')})`;
  } catch {
    return 'standard output';
  }
}

function outputError(err: unknown): Error {
  if ((err as NodeJS.ErrnoException)?.code === 'EPIPE') return new OutputClosed();
  return new VmssError(`cannot write to ${stdoutName()}: ${errnoText(err)}`);
}

/**
 * A regular file or a device: written with our own write(2) loop. process.stdout's stream for
 * files ignores a short write (what the kernel returns when the disk fills mid-chunk), so the
 * bytes it did not take would be lost without a word; here a short write is continued, and the
 * next one fails with ENOSPC.
 */
function fileOutput(fd: number): Output {
  return {
    async write(data) {
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      try {
        for (let off = 0; off < buf.length; ) off += fs.writeSync(fd, buf, off, buf.length - off);
      } catch (err) {
        throw outputError(err);
      }
    },
  };
}

/**
 * A pipe, socket or terminal: process.stdout, waiting for each write's callback, which is both
 * the back-pressure (memory stays one chunk) and where the write's error arrives.
 */
function streamOutput(): Output {
  // The error also comes as an event; the callback below handles it, the listener only keeps
  // Node from treating it as unhandled.
  if (process.stdout.listenerCount('error') === 0) process.stdout.on('error', () => undefined);
  return {
    write(data) {
      return new Promise((resolve, reject) => {
        process.stdout.write(data, (err) => (err ? reject(outputError(err)) : resolve()));
      });
    },
  };
}

let stdout: Output | null = null;

/** The process's stdout as an Output (made once: the kind of fd 1 does not change). */
export function stdoutOutput(): Output {
  if (stdout) return stdout;
  let st: fs.Stats | null = null;
  try {
    st = fs.fstatSync(1);
  } catch {
    // fd 1 closed: the stream reports the error on the first write
  }
  const plain = st !== null && (st.isFile() || st.isBlockDevice() || (st.isCharacterDevice() && !tty.isatty(1)));
  stdout = plain ? fileOutput(1) : streamOutput();
  return stdout;
}
