import { parseArgs, type ParseArgsConfig } from 'node:util';
import { cat } from './commands/cat';
import { extract } from './commands/extract';
import { ls } from './commands/ls';
import { UsageError, VmssError, describeError } from './errors';
import { infoJsonText, infoText } from './info';
import { mountCommand } from './mount/command';
import { KEY_OPTIONS, keyringFrom } from './cli-options';
import { openSnapshot } from './snapshot';

export const USAGE = `usage:
  vmssfs [options] SNAPSHOT MOUNTPOINT      mount SNAPSHOT (.vmss, .vmsn or .vmem) read-only at MOUNTPOINT
  vmssfs info [--json] [--verbose] [--vmem FILE] SNAPSHOT
  vmssfs ls [--vmem FILE] [-l] SNAPSHOT [DIR]   list the tree without mounting (-l: mode and size)
  vmssfs cat [--vmem FILE] SNAPSHOT PATH     write one file of the tree to stdout
  vmssfs extract [--vmem FILE] SNAPSHOT OUTDIR [PATH...]
                                             copy files or directories of the tree to OUTDIR/PATH;
                                             no PATH: everything but physmem.lime and physmem.elf

key options, for an encrypted VM (the mount and every command take them):
  --password-file FILE the VM's password is FILE's first line (- reads standard input);
                       without it, a terminal is asked (no echo)
  --key HEX            the data file key (64 hex digits) instead of a password
  --vmx FILE           the VM's .vmx holding encryption.keySafe (default: the one beside SNAPSHOT)

mount options:
  --vmem FILE          the memory file, when it is not SNAPSHOT's sibling .vmem
  -f, --foreground     stay attached (default: return once mounted, like sshfs)
  --debug              log every FUSE operation, and the page cache's counts at unmount,
                       to stderr (implies --foreground)
  --cache-size MiB     page cache bound (default 64)
  -o OPTS              FUSE options, e.g. allow_other
  --clear-stale        unmount a dead mount left at MOUNTPOINT by a killed daemon, then mount

unmount with: fusermount -u MOUNTPOINT
`;

type Handler = (args: string[]) => Promise<number>;


function parse<T extends ParseArgsConfig['options']>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(describeError(err));
  }
}

/** Write all of `text` to stdout and wait for it, so large outputs are not cut off at exit. */
export function writeOut(text: string | Buffer): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdout.write(text)) resolve();
    else process.stdout.once('drain', resolve);
  });
}

const info: Handler = async (args) => {
  const { values, positionals } = parse(args, {
    json: { type: 'boolean' },
    verbose: { type: 'boolean', short: 'v' },
    vmem: { type: 'string' },
    ...KEY_OPTIONS,
  });
  if (positionals.length !== 1) throw new UsageError('info takes exactly one SNAPSHOT');
  const snap = openSnapshot(positionals[0] as string, { vmem: values.vmem, keys: keyringFrom(values) });
  try {
    await writeOut(values.json ? infoJsonText(snap) : infoText(snap, { verbose: values.verbose }));
  } finally {
    snap.close();
  }
  return 0;
};

const lsCommand: Handler = async (args) => {
  const { values, positionals } = parse(args, { vmem: { type: 'string' }, long: { type: 'boolean', short: 'l' }, ...KEY_OPTIONS });
  if (positionals.length < 1 || positionals.length > 2) throw new UsageError('ls takes SNAPSHOT and at most one DIR');
  await ls(positionals[0] as string, positionals[1] ?? '', { vmem: values.vmem, long: values.long, keys: keyringFrom(values) }, writeOut);
  return 0;
};

const catCommand: Handler = async (args) => {
  const { values, positionals } = parse(args, { vmem: { type: 'string' }, ...KEY_OPTIONS });
  if (positionals.length !== 2) throw new UsageError('cat takes SNAPSHOT and one PATH');
  await cat(positionals[0] as string, positionals[1] as string, { vmem: values.vmem, keys: keyringFrom(values) });
  return 0;
};

const extractCommand: Handler = async (args) => {
  const { values, positionals } = parse(args, { vmem: { type: 'string' }, ...KEY_OPTIONS });
  if (positionals.length < 2) throw new UsageError('extract takes SNAPSHOT, OUTDIR and optionally PATHs');
  const [snapshot, outDir, ...paths] = positionals as [string, string, ...string[]];
  await extract(snapshot, outDir, paths, { vmem: values.vmem, keys: keyringFrom(values) });
  return 0;
};

const commands: Record<string, Handler> = { info, ls: lsCommand, cat: catCommand, extract: extractCommand };

/** Entry point: returns the exit status. Never throws; never prints a stack trace unless VMSSFS_TRACE is set. */
export async function main(argv: string[]): Promise<number> {
  // A reader that closed the pipe (`vmssfs info x | head`) is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
  });
  try {
    const [first, ...rest] = argv;
    if (first === '-h' || first === '--help' || first === 'help') {
      await writeOut(USAGE);
      return 0;
    }
    if (first === undefined) throw new UsageError('missing SNAPSHOT and MOUNTPOINT');
    const handler = commands[first];
    if (handler) return await handler(rest);
    return await mountCommand(argv);
  } catch (err) {
    if (process.env.VMSSFS_TRACE) console.error(err);
    if (err instanceof UsageError) {
      process.stderr.write(`vmssfs: ${err.message}\n${USAGE}`);
      return 2;
    }
    if (err instanceof VmssError) {
      process.stderr.write(`vmssfs: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`vmssfs: internal error: ${describeError(err)} (set VMSSFS_TRACE=1 for details)\n`);
    return 1;
  }
}
