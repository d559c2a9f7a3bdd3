import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { optionErrorText } from './args';
import { KEY_OPTIONS, keyringFrom } from './key-options';
import { DEFAULT_CACHE_BYTES } from '../cache/budget';
import { Keyring, type KeyHandoff } from '../crypto/keyring';
import { UsageError, VmssError, describeError } from '../errors';
import { unlockTarget } from '../target/target';
import { loadFuse } from '../fuse/load';
import { HTTP_OPTIONS, httpAccess, httpOptionsFrom, isUrl, shownUrl, type HttpAccessData } from '../io/http-access';
import { HttpClient } from '../io/http';
import { serve, type Reporter, type ServeOptions } from './daemon';
import { openLog, safeWriter } from './log';
import { MAX_OPTION_BYTES, parseUserOptions } from './options';
import { checkMountpoint, fusermount, staleMessage } from './preflight';

/** Messages from a detached daemon to the command that started it, one JSON object per line on fd 3. */
type DaemonMessage = { type: 'warning'; text: string } | { type: 'ready' } | { type: 'error'; text: string };

const READY_FD = 3;
/** The daemon reads its key from this pipe, never from its arguments or environment. */
const KEYS_FD = 4;

function parseMountArgs(argv: string[]) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        vmem: { type: 'string' },
        'assume-flat': { type: 'boolean' },
        foreground: { type: 'boolean', short: 'f' },
        debug: { type: 'boolean' },
        'cache-size': { type: 'string' },
        o: { type: 'string', short: 'o', multiple: true },
        'clear-stale': { type: 'boolean' },
        log: { type: 'string' },
        ...KEY_OPTIONS,
        ...HTTP_OPTIONS,
        // Internal: set on the detached daemon by the command that spawned it.
        'daemon-child': { type: 'boolean' },
        'keys-from-parent': { type: 'boolean' },
      },
    });
  } catch (err) {
    throw new UsageError(optionErrorText(err));
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 2) throw new UsageError('mounting takes SNAPSHOT and MOUNTPOINT');
  const cacheMiB = values['cache-size'] === undefined ? DEFAULT_CACHE_BYTES / (1024 * 1024) : Number(values['cache-size']);
  if (!Number.isInteger(cacheMiB) || cacheMiB < 1 || cacheMiB > 1024 * 1024) {
    throw new UsageError(`--cache-size takes a whole number of MiB (1 or more), not ${values['cache-size']}`);
  }
  const fuseOptions = (values.o ?? []).flatMap((o) => o.split(',')).filter((o) => o !== '');
  // Refused before anything is opened or mounted.
  parseUserOptions(fuseOptions);
  // The detached daemon gets its secrets (the key, the web server's credentials and full URLs) from
  // its parent over a pipe; its command line names a URL by its shown form only.
  const handed = values['keys-from-parent'] ? readHandoff() : null;
  const keys = handed ? (handed.keys ? Keyring.fromHandoff(handed.keys) : new Keyring()) : keyringFrom(values);
  const snapshot = positionals[0] as string;
  const http = handed ? (handed.http ?? null) : httpAccess([snapshot, values.vmem], httpOptionsFrom(values), (w) => process.stderr.write(`vmssfs: warning: ${w}\n`));
  const serveOpts: ServeOptions = {
    snapshot: isUrl(snapshot) ? snapshot : path.resolve(snapshot),
    vmem: values.vmem === undefined ? undefined : isUrl(values.vmem) ? values.vmem : path.resolve(values.vmem),
    assumeFlat: values['assume-flat'] ?? false,
    mountpoint: realMountpoint(path.resolve(positionals[1] as string)),
    cacheMiB,
    fuseOptions,
    debug: values.debug ?? false,
    keys,
    http: http ? new HttpClient(http) : undefined,
  };
  return { serveOpts, values, keys, http };
}

/**
 * The mountpoint as the kernel's mount table names it: symbolic links resolved. The unmount watch
 * compares this path with /proc/self/mountinfo, and a path through a link would never match.
 * A dead mount cannot be resolved itself (ENOTCONN), so its parent is.
 */
function realMountpoint(mnt: string): string {
  let real = mnt;
  try {
    real = fs.realpathSync(mnt);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTCONN') {
      try {
        real = path.join(fs.realpathSync(path.dirname(mnt)), path.basename(mnt));
      } catch {
        // left as given: the mountpoint checks say what is wrong
      }
    }
  }
  // fuse-native copies the mountpoint into 1024 bytes (NUL included) and would cut a longer one.
  if (Buffer.byteLength(real) > MAX_OPTION_BYTES) throw new VmssError(`${real}: mountpoint path is longer than libfuse's binding takes (${MAX_OPTION_BYTES} bytes)`);
  return real;
}

async function prepareMountpoint(mnt: string, clearStale: boolean, fuseOptions: readonly string[]): Promise<void> {
  // Said before anything else is checked or asked: without libfuse no mount can work.
  loadFuse();
  // Without fusermount the mount could not be taken down again cleanly: refuse before mounting.
  fusermount();
  if ((await checkMountpoint(mnt, fuseOptions)) === 'ready') return;
  if (!clearStale) throw new VmssError(staleMessage(mnt));
  // Not our mount and nothing serves it: unmounting it cannot wait on this process.
  const r = spawnSync(fusermount(), ['-uz', mnt], { stdio: 'ignore', timeout: 10_000 });
  if (r.status !== 0) throw new VmssError(`${mnt}: could not clear the dead mount (fusermount -uz failed)`);
  process.stderr.write(`vmssfs: cleared a dead mount at ${mnt}\n`);
  if ((await checkMountpoint(mnt, fuseOptions)) !== 'ready') throw new VmssError(staleMessage(mnt));
}

/** `vmssfs [options] SNAPSHOT MOUNTPOINT`. */
export async function mountCommand(argv: string[]): Promise<number> {
  const { serveOpts, values, keys, http } = parseMountArgs(argv);
  if (values['daemon-child']) exitWhenServed(await runDetached(serveOpts, values.log));
  await prepareMountpoint(serveOpts.mountpoint, values['clear-stale'] ?? false, serveOpts.fuseOptions);
  if (values.foreground || values.debug) {
    if (values.log !== undefined) process.stderr.write(`vmssfs: warning: --log is not used with ${values.debug ? '--debug' : '-f'}: the log goes to stderr\n`);
    exitWhenServed(await serveInForeground(serveOpts));
  }
  // The password is asked here, while this process has the terminal; the daemon gets the key
  // (and, for a folder, the decrypted configuration it reads checkpoint.vmState from).
  unlockTarget(serveOpts.snapshot, { vmem: serveOpts.vmem, keys, http: serveOpts.http });
  const keyHandoff = keys.handoff();
  return startDaemon(serveOpts, values.log, keyHandoff || http ? { keys: keyHandoff, http } : null);
}

/** What the parent hands its daemon over KEYS_FD: secrets, kept off its command line and environment. */
interface Handoff {
  keys: KeyHandoff | null;
  /** The web server's full URLs, credentials and trust, when the evidence is a URL. */
  http: HttpAccessData | null;
}

/** The secrets the parent wrote to KEYS_FD (JSON, then end of file). */
function readHandoff(): Handoff {
  try {
    const h = JSON.parse(fs.readFileSync(KEYS_FD, 'utf8')) as Handoff;
    fs.closeSync(KEYS_FD);
    return h;
  } catch {
    throw new VmssError('the daemon did not receive its key from the mount command');
  }
}

/**
 * Serve attached to the terminal. A mount that failed must still end the process: fuse-native
 * leaves a handle on the event loop even when libfuse refused, so it exits explicitly.
 */
async function serveInForeground(opts: ServeOptions): Promise<number> {
  const err = safeWriter((text) => process.stderr.write(text));
  try {
    return await serve(opts, foregroundReporter(err));
  } catch (e) {
    if (process.env.VMSSFS_TRACE) console.error(e);
    err(`vmssfs: ${e instanceof VmssError ? e.message : `internal error: ${describeError(e)} (set VMSSFS_TRACE=1 for details)`}\n`);
    return 1;
  }
}

/**
 * fuse-native's per-thread async handles keep the event loop alive after the kernel has dropped
 * the mount, so a daemon that has finished serving must leave explicitly.
 */
function exitWhenServed(code: number): never {
  process.exit(code);
}

/**
 * Logs on stderr. A reader that goes away (`vmssfs --debug ... 2>&1 | head`) must not take the
 * mount with it: write errors on stderr are swallowed and logging stops, serving goes on.
 */
function foregroundReporter(write: (text: string) => void): Reporter {
  process.stderr.on('error', () => undefined);
  return {
    warning: (text) => write(`vmssfs: warning: ${text}\n`),
    ready: () => undefined,
    log: (text) => write(`vmssfs: ${text}\n`),
  };
}

/**
 * The daemon's young generation, bounded as Node 20 bounds it (16 MiB a semi-space). Node 22 and
 * 24 size it from the heap limit, up to 64 MiB a semi-space on a machine with 16 GiB or more; a
 * mount builds its whole tree at once (a node per tag file), every object of it survives, and the
 * young generation grows to its largest and stays there: the daemon of a checkpoint at the tag cap
 * held 285 MiB on Node 24 against 166 MiB on Node 20, and 172 MiB with this bound.
 */
const DAEMON_V8_FLAGS = ['--max-semi-space-size=16'];

/**
 * Start the daemon as a detached copy of this command and wait until it says the filesystem is
 * mounted (exit 0) or why it is not (exit 1). Its warnings are printed here.
 */
function startDaemon(serveOpts: ServeOptions, logFile: string | undefined, handoff: Handoff | null): Promise<number> {
  const bin = path.resolve(__dirname, '..', '..', '..', 'bin', 'vmssfs');
  // Absolute paths: the daemon runs from / so that it never holds the caller's directory busy.
  // A URL by its shown form: the full one (a signed query string) and its credentials go down the pipe.
  const shown = (p: string): string => (isUrl(p) ? shownUrl(p) : p);
  const args = [bin, shown(serveOpts.snapshot), serveOpts.mountpoint, '--daemon-child', '--cache-size', String(serveOpts.cacheMiB)];
  if (serveOpts.vmem) args.push('--vmem', shown(serveOpts.vmem));
  if (serveOpts.assumeFlat) args.push('--assume-flat');
  if (serveOpts.debug) args.push('--debug');
  for (const o of serveOpts.fuseOptions) args.push('-o', o);
  if (logFile) args.push('--log', path.resolve(logFile));
  if (handoff) args.push('--keys-from-parent');
  // stderr is read until the daemon is mounted or has failed: libfuse says there why it refused.
  // The key, when there is one, goes down its own pipe: never the command line or the environment.
  const child = spawn(process.execPath, [...DAEMON_V8_FLAGS, ...args], {
    cwd: '/', detached: true, stdio: ['ignore', 'ignore', 'pipe', 'pipe', handoff ? 'pipe' : 'ignore'],
  });
  if (handoff) {
    const keyPipe = child.stdio[KEYS_FD] as NodeJS.WritableStream;
    keyPipe.on('error', () => undefined);
    keyPipe.end(JSON.stringify(handoff));
  }
  return new Promise((resolve) => {
    let buffered = '';
    let libfuseSaid = '';
    let failure: string | null = null;
    let settled = false;
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (text: string) => (libfuseSaid += text));
    child.stderr?.on('error', () => undefined);
    const settle = (code: number): void => {
      if (settled) return;
      settled = true;
      child.unref();
      (child.stdio[READY_FD] as NodeJS.ReadableStream | null)?.removeAllListeners();
      // The daemon's later stderr goes nowhere (it ignores the closed pipe).
      child.stderr?.removeAllListeners('data');
      child.stderr?.destroy();
      resolve(code);
    };
    const pipe = child.stdio[READY_FD] as NodeJS.ReadableStream;
    pipe.setEncoding('utf8');
    pipe.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let msg: DaemonMessage;
        try {
          msg = JSON.parse(line) as DaemonMessage;
        } catch {
          continue;
        }
        if (msg.type === 'warning') process.stderr.write(`vmssfs: warning: ${msg.text}\n`);
        else if (msg.type === 'error') failure = msg.text;
        else settle(0);
      }
    });
    pipe.on('error', () => undefined);
    // 'close': the daemon has exited and everything it wrote on stderr has arrived.
    child.on('close', (code) => {
      if (settled) return;
      // libfuse tries fusermount twice (with and without a subtype): its reason is said once.
      const reason = [...new Set(libfuseSaid.split('\n').map((l) => l.trim()).filter(Boolean))].join('; ');
      if (failure !== null) process.stderr.write(`vmssfs: ${failure}${reason ? ` (${reason})` : ''}\n`);
      else process.stderr.write(`vmssfs: the daemon exited (status ${code}) before mounting${reason ? `: ${reason}` : ''}\n`);
      settle(1);
    });
  });
}

/** The detached daemon: report over fd 3 until mounted, then close it and serve. */
async function runDetached(opts: ServeOptions, logFile: string | undefined): Promise<number> {
  // stderr is a pipe to the starting command, closed once it has its answer.
  process.stderr.on('error', () => undefined);
  const send = (msg: DaemonMessage): void => {
    try {
      fs.writeSync(READY_FD, JSON.stringify(msg) + '\n');
    } catch {
      // the starting command is gone; nothing to tell
    }
  };
  let logFd: number | null = null;
  // A full disk or a removed device under the log must not end the daemon.
  const toLog = safeWriter((text) => {
    if (logFd !== null) fs.writeSync(logFd, `${new Date().toISOString()} ${text}\n`);
  });
  const reporter: Reporter = {
    warning: (text) => {
      send({ type: 'warning', text });
      toLog(`warning: ${text}`);
    },
    ready: () => {
      send({ type: 'ready' });
      fs.closeSync(READY_FD);
    },
    log: toLog,
  };
  try {
    // The log is opened once the evidence is open, so that it can be checked not to be one of its files.
    return await serve({ ...opts, onSources: (sources) => void (logFd = logFile ? openLog(logFile, sources) : null) }, reporter);
  } catch (err) {
    send({ type: 'error', text: err instanceof VmssError ? err.message : `internal error: ${describeError(err)}` });
    return 1;
  }
}
