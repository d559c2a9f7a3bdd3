import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { KEY_OPTIONS, keyringFrom } from '../cli-options';
import { Keyring, type KeyHandoff } from '../crypto/keyring';
import { UsageError, VmssError, describeError } from '../errors';
import { encryptedFiles } from '../snapshot';
import { serve, type Reporter, type ServeOptions } from './daemon';
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
        foreground: { type: 'boolean', short: 'f' },
        debug: { type: 'boolean' },
        'cache-size': { type: 'string' },
        o: { type: 'string', short: 'o', multiple: true },
        'clear-stale': { type: 'boolean' },
        log: { type: 'string' },
        ...KEY_OPTIONS,
        // Internal: set on the detached daemon by the command that spawned it.
        'daemon-child': { type: 'boolean' },
        'keys-from-parent': { type: 'boolean' },
      },
    });
  } catch (err) {
    throw new UsageError(describeError(err));
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 2) throw new UsageError('mounting takes SNAPSHOT and MOUNTPOINT');
  const cacheMiB = values['cache-size'] === undefined ? 64 : Number(values['cache-size']);
  if (!Number.isInteger(cacheMiB) || cacheMiB < 1 || cacheMiB > 1024 * 1024) {
    throw new UsageError(`--cache-size takes a whole number of MiB (1 or more), not ${values['cache-size']}`);
  }
  const fuseOptions = (values.o ?? []).flatMap((o) => o.split(',')).filter((o) => o !== '');
  const serveOpts: ServeOptions = {
    snapshot: path.resolve(positionals[0] as string),
    vmem: values.vmem === undefined ? undefined : path.resolve(values.vmem),
    mountpoint: path.resolve(positionals[1] as string),
    cacheMiB,
    fuseOptions,
    debug: values.debug ?? false,
    keys: values['keys-from-parent'] ? Keyring.fromHandoff(readHandoff()) : keyringFrom(values),
  };
  return { serveOpts, values };
}

async function prepareMountpoint(mnt: string, clearStale: boolean, fuseOptions: readonly string[]): Promise<void> {
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
  const { serveOpts, values } = parseMountArgs(argv);
  if (values['daemon-child']) exitWhenServed(await runDetached(serveOpts, values.log));
  await prepareMountpoint(serveOpts.mountpoint, values['clear-stale'] ?? false, serveOpts.fuseOptions);
  if (values.foreground || values.debug) exitWhenServed(await serve(serveOpts, foregroundReporter()));
  // The password is asked here, while this process has the terminal; the daemon gets the key.
  const encrypted = encryptedFiles(serveOpts.snapshot, { vmem: serveOpts.vmem });
  const keys = serveOpts.keys as Keyring;
  if (encrypted.length > 0) keys.dataKey(encrypted[0] as string);
  return startDaemon(serveOpts, values.log, keys.handoff());
}

/** The key the parent wrote to KEYS_FD (JSON, then end of file). */
function readHandoff(): KeyHandoff {
  try {
    const h = JSON.parse(fs.readFileSync(KEYS_FD, 'utf8')) as KeyHandoff;
    fs.closeSync(KEYS_FD);
    return h;
  } catch {
    throw new VmssError('the daemon did not receive its key from the mount command');
  }
}

/**
 * fuse-native's per-thread async handles keep the event loop alive after the kernel has dropped
 * the mount, so a daemon that has finished serving must leave explicitly.
 */
function exitWhenServed(code: number): never {
  process.exit(code);
}

function foregroundReporter(): Reporter {
  return {
    warning: (text) => process.stderr.write(`vmssfs: warning: ${text}\n`),
    ready: () => undefined,
    log: (text) => process.stderr.write(`vmssfs: ${text}\n`),
  };
}

/**
 * Start the daemon as a detached copy of this command and wait until it says the filesystem is
 * mounted (exit 0) or why it is not (exit 1). Its warnings are printed here.
 */
function startDaemon(serveOpts: ServeOptions, logFile: string | undefined, handoff: KeyHandoff | null): Promise<number> {
  const bin = path.resolve(__dirname, '..', '..', '..', 'bin', 'vmssfs');
  // Absolute paths: the daemon runs from / so that it never holds the caller's directory busy.
  const args = [bin, serveOpts.snapshot, serveOpts.mountpoint, '--daemon-child', '--cache-size', String(serveOpts.cacheMiB)];
  if (serveOpts.vmem) args.push('--vmem', serveOpts.vmem);
  if (serveOpts.debug) args.push('--debug');
  for (const o of serveOpts.fuseOptions) args.push('-o', o);
  if (logFile) args.push('--log', path.resolve(logFile));
  if (handoff) args.push('--keys-from-parent');
  const child = spawn(process.execPath, args, {
    cwd: '/', detached: true, stdio: ['ignore', 'ignore', 'ignore', 'pipe', handoff ? 'pipe' : 'ignore'],
  });
  if (handoff) {
    const keyPipe = child.stdio[KEYS_FD] as NodeJS.WritableStream;
    keyPipe.on('error', () => undefined);
    keyPipe.end(JSON.stringify(handoff));
  }
  return new Promise((resolve) => {
    let buffered = '';
    let settled = false;
    const settle = (code: number): void => {
      if (settled) return;
      settled = true;
      child.unref();
      (child.stdio[READY_FD] as NodeJS.ReadableStream | null)?.removeAllListeners();
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
        else if (msg.type === 'error') {
          process.stderr.write(`vmssfs: ${msg.text}\n`);
          settle(1);
        } else settle(0);
      }
    });
    pipe.on('error', () => undefined);
    child.on('exit', (code) => {
      if (!settled) process.stderr.write(`vmssfs: the daemon exited (status ${code}) before mounting\n`);
      settle(1);
    });
  });
}

/** The detached daemon: report over fd 3 until mounted, then close it and serve. */
async function runDetached(opts: ServeOptions, logFile: string | undefined): Promise<number> {
  const send = (msg: DaemonMessage): void => {
    try {
      fs.writeSync(READY_FD, JSON.stringify(msg) + '\n');
    } catch {
      // the starting command is gone; nothing to tell
    }
  };
  const logFd = logFile ? fs.openSync(logFile, 'a') : null;
  const reporter: Reporter = {
    warning: (text) => {
      send({ type: 'warning', text });
      if (logFd !== null) fs.writeSync(logFd, `${new Date().toISOString()} warning: ${text}\n`);
    },
    ready: () => {
      send({ type: 'ready' });
      fs.closeSync(READY_FD);
    },
    log: (text) => {
      if (logFd !== null) fs.writeSync(logFd, `${new Date().toISOString()} ${text}\n`);
    },
  };
  try {
    return await serve(opts, reporter);
  } catch (err) {
    send({ type: 'error', text: err instanceof VmssError ? err.message : `internal error: ${describeError(err)}` });
    return 1;
  }
}
