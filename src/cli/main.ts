import * as fs from 'node:fs';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import { parseOptions, wantsHelp } from '../mount/args';
import { cat } from '../commands/cat';
import { diff } from '../commands/diff';
import { extract } from '../commands/extract';
import { ls } from '../commands/ls';
import { UsageError, VmssError, describeError } from '../errors';
import { mountCommand } from '../mount/command';
import { openNamed, type OpenOptions } from '../target/target';
import { OutputClosed, stdoutOutput } from '../commands/output';
import { KEY_OPTIONS, keyringFrom } from '../mount/key-options';
import { docPieces } from '../evidence/textdoc';
import { snapshotsJsonText, snapshotsText } from '../evidence/folder/report';
import type { VmFolder } from '../evidence/folder/folder';
import { HTTP_OPTIONS, httpAccess, httpOptionsFrom } from '../io/http-access';
import { HttpClient } from '../io/http';

// Node 24's V8 compiles a hot loop's on-stack replacement on a background thread; for the tag
// parser's loop over a checkpoint at the tag cap that compile held about 150 MiB for a moment
// (`info` peaked at 320 MiB against 163 MiB without it, measured; Node 20 and 22 do not). Compiled
// on this thread instead, it costs nothing measurable and the peak stays put. Set before any hot
// loop runs; the detached daemon runs this module too.
v8.setFlagsFromString('--no-concurrent-osr');

const VMEM_HELP = `  --vmem FILE      the memory file, when it is not SNAPSHOT's sibling .vmem (ESXi may name it by a UUID)
  --assume-flat    when the memory group is lost or damaged (layout unknown), serve the memory
                   file as memory from address 0 anyway (reported as a warning)
  --password-file FILE, --key HEX, --key-file FILE, --vmx FILE
                   key material for an encrypted VM (see vmssfs --help)
  --netrc-file FILE, --header-file FILE, --cacert FILE, --insecure
                   for SNAPSHOT given as an http:// or https:// URL (see vmssfs --help)
`;

/** Each command's own usage: what `vmssfs CMD --help` prints, and what follows a usage error of CMD. */
export const COMMAND_USAGE: Readonly<Record<string, string>> = {
  info: `usage:
  vmssfs info [--json] [--verbose] [--vmem FILE] [--assume-flat] SNAPSHOT
  print the checkpoint's memory runs, tags and warnings, in Volatility's vmwareinfo layout
  --json           the same as JSON (the mount's metadata.json)
  -v, --verbose    hexdump every block tag but the memory (the first 64 KiB of each)
${VMEM_HELP}`,
  ls: `usage:
  vmssfs ls [-l] [--vmem FILE] [--assume-flat] SNAPSHOT [DIR]
  list a directory of the tree the mount would show (default: its root), without mounting
  -l, --long       mode and size before each name
${VMEM_HELP}`,
  cat: `usage:
  vmssfs cat [--vmem FILE] [--assume-flat] SNAPSHOT PATH
  write one file of the tree (e.g. physmem.raw, groups/cpu/rip[0]) to stdout, without mounting
${VMEM_HELP}`,
  extract: `usage:
  vmssfs extract [--force] [--vmem FILE] [--assume-flat] SNAPSHOT OUTDIR [PATH...]
  copy files or directories of the tree to OUTDIR/PATH (no PATH: everything but physmem.lime and
  physmem.elf), sparse where the memory has holes, read-only (0444), dated by the snapshot
  --force          replace files that already exist under OUTDIR (links there are never followed)
${VMEM_HELP}  a file whose evidence cannot be read is named on stderr and left out (no partial copy); the
  rest is written. Exit status: 0 all written, 1 bad input or a failed write, 2 usage,
  3 incomplete (some files could not be read)
`,
  diff: `usage:
  vmssfs diff [--json] [--vmem-a FILE] [--vmem-b FILE] [key options] A B
  which guest-physical pages differ between checkpoints A and B (checkpoint files, ESXi guest
  dumps, or VMDIR:NAME for a snapshot of a VM folder; NAME may hold colons): merged ranges of
  changed and of unreadable pages in address order, then pages only in A or only in B, counts
  --json           the same as JSON: {a, b, pageSize, changed, onlyA, onlyB, unreadable, counts}
  --vmem-a FILE, --vmem-b FILE
                   A's or B's memory file, when it is not the checkpoint's own
  --password-file FILE, --key HEX, --key-file FILE, --vmx FILE
                   key material for encrypted checkpoints, as the mount takes it
  pages that cannot be read on one side or both (a truncated encrypted file, a bad sector) are
  listed as unreadable and never compared; exit status: 0 compared (whether or not pages
  differ), 1 bad input, 2 usage, 3 incomplete (some pages unreadable)
`,
};

export const USAGE = `usage:
  vmssfs [options] SNAPSHOT MOUNTPOINT      mount SNAPSHOT read-only at MOUNTPOINT: a .vmss, .vmsn,
                                             .std or its .vmem, or an ESXi debug.guest or its debug.vmem;
                                             a checkpoint may be an http:// or https:// URL
  vmssfs info [--json] [--verbose] [--vmem FILE] [--assume-flat] SNAPSHOT
  vmssfs ls [-l] [--vmem FILE] [--assume-flat] SNAPSHOT [DIR]
                                             list the tree without mounting (-l: mode and size)
  vmssfs cat [--vmem FILE] [--assume-flat] SNAPSHOT PATH
                                             write one file of the tree to stdout
  vmssfs extract [--force] [--vmem FILE] [--assume-flat] SNAPSHOT OUTDIR [PATH...]
                                             copy files or directories of the tree to OUTDIR/PATH;
                                             no PATH: everything but physmem.lime and physmem.elf
  vmssfs diff [--json] [--vmem-a FILE] [--vmem-b FILE] [key options] A B
                                             which guest-physical pages differ between checkpoints
                                             or guest dumps A and B (files, or VMDIR:NAME)
  vmssfs COMMAND --help                      that command's usage
  vmssfs --version | -V                      print the version

SNAPSHOT may also be a VM folder (holding a .vmx and its .vmsd): one directory per checkpoint,
plus snapshots.json and snapshots.txt; or VMDIR:NAME, one checkpoint of a folder (NAME: its
directory in the folder's mount, or its display name), which takes --vmem for its memory file.
An encrypted VM's folder takes the key options below.

options of every command:
  --vmem FILE          the memory file, when it is not SNAPSHOT's sibling .vmem
  --assume-flat        when the memory group is lost or damaged (layout unknown), serve the
                       memory file as memory from address 0 anyway (reported as a warning)

key options, for an encrypted VM (the mount and every command take them):
  --password-file FILE the VM's password is FILE's first line (- reads standard input);
                       without it, a terminal is asked (no echo)
  --key HEX            the data file key (64 hex digits) instead of a password
  --key-file FILE      that key from FILE's first line (- reads standard input; on a terminal,
                       without echo), so that it never sits on a command line
  --vmx FILE           the VM's .vmx holding encryption.keySafe (default: the one beside SNAPSHOT,
                       or a VM folder's own)

web server options, for SNAPSHOT (and --vmem) given as an http:// or https:// URL:
  --netrc-file FILE    logins for basic authentication (default: ~/.netrc when it exists)
  --header-file FILE   header lines sent with every request, e.g. "Cookie: vmware_soap_session=..."
                       or "Authorization: Bearer ..." (never shown, logged or passed on a command line)
  --cacert FILE        trust the CA certificate(s) in FILE (PEM) instead of the system's
  --insecure           do not check the server's TLS certificate (said once, as a warning)

mount options:
  -f, --foreground     stay attached (default: return once mounted, like sshfs)
  --debug              log every FUSE operation, and the page cache's counts at unmount,
                       to stderr (implies --foreground)
  --log FILE           the detached daemon's log (failed reads, unexpected errors), appended;
                       without it a detached daemon logs nothing (with -f the log is stderr)
  --cache-size MiB     bound of every cache of the mount together (default 64)
  -o OPTS              FUSE options, e.g. allow_other
  --clear-stale        unmount a dead mount left at MOUNTPOINT by a killed daemon, then mount

unmount with: fusermount -u MOUNTPOINT
`;

/** The package's own version (package.json ships with every install, three levels above dist/src/cli). */
function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version?: string };
  return pkg.version ?? 'unknown';
}

type Handler = (args: string[]) => Promise<number>;

/** A usage error of one command: its own usage follows the message. */
class CommandUsageError extends UsageError {
  constructor(message: string, readonly command: string) {
    super(message);
  }
}

function parse<T extends Parameters<typeof parseOptions>[1]>(command: string, args: string[], options: T) {
  try {
    return parseOptions(args, options);
  } catch (err) {
    throw err instanceof UsageError ? new CommandUsageError(`${command}: ${err.message}`, command) : err;
  }
}

/** Write all of `text` to stdout; rejects with a one-line VmssError when it cannot (a full disk). */
export function writeOut(text: string | Buffer): Promise<void> {
  return stdoutOutput().write(text);
}

/** Options every command takes to open its evidence: one place, so the commands cannot drift apart. */
const EVIDENCE = { vmem: { type: 'string' }, 'assume-flat': { type: 'boolean' }, ...KEY_OPTIONS, ...HTTP_OPTIONS } as const;

type EvidenceValues = { vmem?: string; 'assume-flat'?: boolean; 'password-file'?: string; key?: string; 'key-file'?: string; vmx?: string } & Parameters<typeof httpOptionsFrom>[0];

function evidenceOptions(values: EvidenceValues, named: string | undefined): OpenOptions {
  return { vmem: values.vmem, assumeFlat: values['assume-flat'], keys: keyringFrom(values), http: httpClientFor([named, values.vmem], values) };
}

/** The HTTP client for the URLs among `names`, from the HTTP options; undefined when none is a URL. */
function httpClientFor(names: Array<string | undefined>, values: Parameters<typeof httpOptionsFrom>[0]): HttpClient | undefined {
  const access = httpAccess(names, httpOptionsFrom(values), (w) => process.stderr.write(`vmssfs: warning: ${w}\n`));
  return access ? new HttpClient(access) : undefined;
}

const info: Handler = async (args) => {
  const { values, positionals } = parse('info', args, { ...EVIDENCE, json: { type: 'boolean' }, verbose: { type: 'boolean', short: 'v' } });
  if (positionals.length !== 1) throw new CommandUsageError('info takes exactly one SNAPSHOT', 'info');
  const opened = openNamed(positionals[0] as string, evidenceOptions(values, positionals[0]));
  if (opened.kind === 'folder') return folderInfo(opened.folder, values.json ?? false);
  const snap = opened.evidence;
  try {
    const doc = values.json ? snap.infoJsonDoc(opened.warnings) : snap.infoTextDoc(opened.warnings, { verbose: values.verbose });
    for (const piece of docPieces(doc)) await writeOut(piece);
  } finally {
    opened.close();
  }
  return 0;
};

const lsCommand: Handler = async (args) => {
  const { values, positionals } = parse('ls', args, { ...EVIDENCE, long: { type: 'boolean', short: 'l' } });
  if (positionals.length < 1 || positionals.length > 2) throw new CommandUsageError('ls takes SNAPSHOT and at most one DIR', 'ls');
  await ls(positionals[0] as string, positionals[1] ?? '', { ...evidenceOptions(values, positionals[0]), long: values.long }, writeOut);
  return 0;
};

const catCommand: Handler = async (args) => {
  const { values, positionals } = parse('cat', args, EVIDENCE);
  if (positionals.length !== 2) throw new CommandUsageError('cat takes SNAPSHOT and one PATH', 'cat');
  await cat(positionals[0] as string, positionals[1] as string, evidenceOptions(values, positionals[0]), stdoutOutput());
  return 0;
};

const extractCommand: Handler = async (args) => {
  const { values, positionals } = parse('extract', args, { ...EVIDENCE, force: { type: 'boolean' } });
  if (positionals.length < 2) throw new CommandUsageError('extract takes SNAPSHOT, OUTDIR and optionally PATHs', 'extract');
  const [snapshot, outDir, ...paths] = positionals as [string, string, ...string[]];
  return await extract(snapshot, outDir, paths, { ...evidenceOptions(values, snapshot), force: values.force });
};

/** `info VMDIR`: the folder's snapshots.txt, or with --json its snapshots.json (both carry the folder's warnings). */
async function folderInfo(folder: VmFolder, json: boolean): Promise<number> {
  try {
    await writeOut(json ? snapshotsJsonText(folder) : snapshotsText(folder));
  } finally {
    folder.close();
  }
  return 0;
}

const diffCommand: Handler = async (args) => {
  const { values, positionals } = parse('diff', args, { json: { type: 'boolean' }, 'vmem-a': { type: 'string' }, 'vmem-b': { type: 'string' }, ...KEY_OPTIONS, ...HTTP_OPTIONS });
  if (positionals.length !== 2) throw new CommandUsageError('diff takes two checkpoints, A and B', 'diff');
  const http = httpClientFor([positionals[0], positionals[1], values['vmem-a'], values['vmem-b']], values);
  const opts = { json: values.json, vmemA: values['vmem-a'], vmemB: values['vmem-b'], keys: keyringFrom(values), http };
  return await diff(positionals[0] as string, positionals[1] as string, opts, writeOut);
};

const commands: ReadonlyMap<string, Handler> = new Map([['info', info], ['ls', lsCommand], ['cat', catCommand], ['extract', extractCommand], ['diff', diffCommand]]);

/** Levenshtein distance, for "did you mean": command names are short, so the naive table is fine. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length] as number;
}

/**
 * A first word that is no command and no file is a mistyped command (`vmssfs inof x.vmss`), not
 * a snapshot to mount: a snapshot's name has a dot or a slash, or at least exists. Said so here,
 * rather than as whatever the mount would trip on first (MOUNTPOINT "is not a directory").
 */
function unknownCommand(word: string): UsageError | null {
  if (word.startsWith('-') || /[./]/.test(word)) return null;
  try {
    fs.lstatSync(word);
    return null;
  } catch {
    const near = [...commands.keys()].find((c) => distance(c, word) <= 2);
    return new UsageError(`${word}: unknown command${near ? ` (did you mean ${near}?)` : ''}, and no file of that name to mount`);
  }
}

/** Entry point: returns the exit status. Never throws; never prints a stack trace unless VMSSFS_TRACE is set. */
export async function main(argv: string[]): Promise<number> {
  try {
    const [first, ...rest] = argv;
    if (first === undefined) throw new UsageError('missing SNAPSHOT and MOUNTPOINT');
    if (first === '-V' || first === '--version') {
      await writeOut(`vmssfs ${version()}\n`);
      return 0;
    }
    const handler = commands.get(first);
    if (first === 'help') {
      await writeOut((commands.has(rest[0] ?? '') && COMMAND_USAGE[rest[0] as string]) || USAGE);
      return 0;
    }
    if (wantsHelp(handler ? rest : argv)) {
      await writeOut(handler ? (COMMAND_USAGE[first] as string) : USAGE);
      return 0;
    }
    if (handler) return await handler(rest);
    const unknown = unknownCommand(first);
    if (unknown) throw unknown;
    return await mountCommand(argv);
  } catch (err) {
    if (process.env.VMSSFS_TRACE) console.error(err);
    // A reader that closed the pipe (`vmssfs info x | head`) is not an error.
    if (err instanceof OutputClosed) return 0;
    if (err instanceof CommandUsageError) {
      process.stderr.write(`vmssfs: ${err.message}\n${COMMAND_USAGE[err.command] ?? USAGE}`);
      return 2;
    }
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
