import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError } from '../errors';
import { errnoText, type SourceFile } from '../io/source';

/** What the log is checked against: each evidence file's name and identity. */
type LogGuarded = Pick<SourceFile, 'name' | 'identity'>;

function isSource(st: { dev: number; ino: number }, sources: readonly LogGuarded[]): LogGuarded | undefined {
  return sources.find((s) => s.identity.dev === st.dev && s.identity.ino === st.ino);
}

const O_NOFOLLOW = fs.constants.O_NOFOLLOW ?? 0;

/**
 * Open the detached daemon's --log FILE for appending. Appending to evidence would change its
 * hash: a log that is one of the sources (the same file by any name, a hard link) is refused, and
 * a symbolic link is never followed (it could point at the evidence once checked). The check is
 * made again on the open descriptor, so a file swapped in between is caught too.
 */
export function openLog(file: string, sources: readonly LogGuarded[]): number {
  const refuse = (why: string): never => {
    throw new VmssError(`${file}: refused as --log: ${why}`);
  };
  let before: fs.Stats | null = null;
  try {
    before = fs.lstatSync(file);
  } catch {
    // not there yet: it is created below
  }
  if (before?.isSymbolicLink()) refuse('it is a symbolic link (logs are opened without following links; give the real path)');
  const hit = before ? isSource(before, sources) : undefined;
  if (hit) refuse(`it is the evidence being mounted (${hit.name}); a log there would change it`);
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | O_NOFOLLOW, 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') return refuse('it is a symbolic link (logs are opened without following links; give the real path)');
    const missingDir = code === 'ENOENT' && !fs.existsSync(path.dirname(file));
    throw new VmssError(`${file}: cannot open the log: ${missingDir ? `its directory ${path.dirname(file)} does not exist` : errnoText(err)}`);
  }
  const opened = isSource(fs.fstatSync(fd), sources);
  if (opened) {
    fs.closeSync(fd);
    refuse(`it is the evidence being mounted (${opened.name}); a log there would change it`);
  }
  return fd;
}

/**
 * A log line writer that never throws: a daemon whose log went away (a closed pipe, a full disk,
 * a removed device) goes on serving and stops logging.
 */
export function safeWriter(write: (text: string) => void): (text: string) => void {
  let gone = false;
  return (text) => {
    if (gone) return;
    try {
      write(text);
    } catch {
      gone = true;
    }
  };
}
