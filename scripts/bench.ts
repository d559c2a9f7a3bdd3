// `make bench`: side-by-side read figures for vmssfs (native read path, and the JavaScript path
// with VMSSFS_NATIVE=0) against a direct read of the source, the FUSE binding's ceiling
// (scripts/ceiling-server.ts), xmount and yara over the source, with PASS/FAIL per target.
// See docs/performance.md for what is measured, why it is fair, and the figures.
//
//   node dist/scripts/bench.js            (BENCH_ROUNDS=N rounds, default 5; BENCH_DIR=dir to
//                                          reuse inputs written by an earlier run)
//
// Nothing here reads a FUSE mount it serves: vmssfs, the ceiling server and xmount run as child
// processes, and every read of a mount is done by a separate reader process (a small C helper
// compiled at start, so the figures are the kernel's and the server's, not Node's).
//
// The compressed-memory rows (BENCH_ONLY=zip) have two peers, public programs run where they sit
// beside the repository (scripts/bench-peers.ts; ../vmem-decrypt or BENCH_VMEM_DECRYPT=dir,
// ../volatility3 or BENCH_VOLATILITY=dir, Python from BENCH_PYTHON or PATH): Z6 times
// vmem-decrypt's vmem_flatten.py flattening the compressed .vmem to a temporary file against the
// mount's cold sequential read, and checks that the file hashes as the plain memory does; Z7 times
// Volatility 3's banners.Banners over physmem.raw of fresh compressed and plain mounts, which must
// both print the banners planted in the memory. An absent peer's row says "not fetched (...)".

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { compressFile, encryptFile, fillCompressibleMemory, makeKeyChain } from '../test/kit/encrypted-vm';
import { writeSnapshot, type RegionSpec } from '../test/kit/writer';
import { writeFolderCheckpoint, vmsdText, type VmsdSnapshotSpec } from '../test/kit/folder-writer';
import { curlDownload, curlRandomRanges, HTTP_RANDOM_READS, Nginx } from './bench-http';
import { expectedBanners, findPeer, flatten, plantBanners, sha256File, volBanners, type Peer } from './bench-peers';

const REPO = path.resolve(__dirname, '..', '..');
const BIN = path.join(REPO, 'bin', 'vmssfs');
const CEILING = path.join(REPO, 'dist', 'scripts', 'ceiling-server.js');
const ROUNDS = Math.max(3, Number(process.env.BENCH_ROUNDS ?? 5) || 5);
const RANDOM_READS = Number(process.env.BENCH_RANDOM_READS ?? 20000) || 20000;
/**
 * Parts to run (comma list of seq, rand, rand4, yara, xmount, mount, diff, folder, crypto, zip, http), for
 * tuning; default all. `BENCH_ONLY=zip` runs the compressed-memory rows alone, `BENCH_ONLY=http` the web server's.
 */
const ONLY = new Set((process.env.BENCH_ONLY ?? 'seq,rand,rand4,yara,xmount,mount,diff,folder,crypto,zip,http').split(','));
/** Whether any part runs that reads the plain 1 GiB input (crypto, diff and folder make their own). */
const PLAIN_PARTS = ['seq', 'rand', 'rand4', 'yara', 'xmount', 'mount'].some((k) => ONLY.has(k));
/** The web server rows read the same 1 GiB input (scripts/bench-http.ts). */
const HTTP_PART = ONLY.has('http');
/** The JavaScript read path, for the native-versus-JavaScript figures. */
const JS_PATH = { ...process.env, VMSSFS_NATIVE: '0' };
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/**
 * --cache-size of the encrypted+compressed mounts (the default, given explicitly): the one budget
 * of the page cache and the decoding layers' caches, which the RSS row is measured against.
 */
const CRYPTO_CACHE_MIB = 64;
/**
 * What the daemon may grow by beyond that budget while decoding: the runtime's own working
 * memory (garbage awaiting the collector, the JS heap, libfuse's buffers). Measured at 17 to 28
 * MiB for budgets from 8 to 128 MiB (docs/performance.md).
 */
const DECODING_SLACK_MIB = 32;
const PAGE = 4096;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// the reader: a C helper, so that reading costs the same for every contender

/** The reader's source: scripts/bench-reader.c (this file is dist/scripts/bench.js). */
const READER_C = path.join(REPO, 'scripts', 'bench-reader.c');

interface Ran { code: number | null; stdout: string; stderr: string }

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Ran> {
  // (yara runs through here too: its wall time is the figure)
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

type Ranges = [number, number][];
interface ReadResult { amount: number; seconds: number; digest: string }

let READER = '';

/** The reader's output: one `amount seconds digest` line per file read. */
async function readerLines(args: string[]): Promise<ReadResult[]> {
  const r = await run(READER, args);
  if (r.code !== 0) throw new Error(`reader ${args.join(' ')} failed: ${r.stderr.trim()}`);
  return r.stdout.trim().split('\n').map((line) => {
    const [amount, seconds, digest] = line.split(' ');
    return { amount: Number(amount), seconds: Number(seconds), digest: digest ?? '' };
  });
}

async function reader(args: string[]): Promise<ReadResult> {
  return (await readerLines(args))[0] as ReadResult;
}

const rangeArg = (ranges: Ranges): string => ranges.map(([o, l]) => `${o}:${l}`).join(',');
const readSeq = (file: string, ranges: Ranges): Promise<ReadResult> => reader(['seq', file, String(MiB), rangeArg(ranges)]);
const readRandom = (file: string, ranges: Ranges, seed: number): Promise<ReadResult> =>
  reader(['rand', String(RANDOM_READS), String(seed), String(RANDOM_READS), file, rangeArg(ranges)]);

/** Batch of the interleaved random reads: small enough that load drift hits every contender alike. */
const RANDOM_BATCH = 500;

/** The random reads of readRandom on several files at once, interleaved in batches: one result per file. */
function readRandomInterleaved(files: { file: string; ranges: Ranges }[], seed: number): Promise<ReadResult[]> {
  return readerLines(['rand', String(RANDOM_READS), String(seed), String(RANDOM_BATCH), ...files.flatMap((f) => [f.file, rangeArg(f.ranges)])]);
}

/** Four random readers at once (seeds differ, so they touch mostly different pages): reads/s of all four. */
async function readRandom4(file: string, ranges: Ranges, round: number): Promise<{ rate: number; digests: string[] }> {
  const t0 = process.hrtime.bigint();
  const rs = await Promise.all([1, 2, 3, 4].map((i) => readRandom(file, ranges, round * 10 + i)));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { rate: rs.reduce((a, r) => a + r.amount, 0) / seconds, digests: rs.map((r) => r.digest) };
}

/** Rules a forensic scan would run: literal, wide, hex with a jump, a regex; nothing in the bench data matches. */
const YARA_RULES = String.raw`
rule bench_literals { strings: $a = "Mimikatz sekurlsa" ascii wide nocase $b = "-----BEGIN RSA PRIVATE KEY-----" condition: any of them }
rule bench_hex { strings: $mz = { 4D 5A 90 00 03 00 00 00 04 00 [4-16] FF FF 00 00 } $elf = { 7F 45 4C 46 02 01 01 [9] 03 00 3E 00 } condition: any of them }
rule bench_regex { strings: $url = /https?:\/\/[a-z0-9.-]{4,40}\.(onion|bit)\/[A-Za-z0-9]{8}/ condition: $url }
`;

/** Wall time of one yara scan of `file` (which must finish cleanly); its output, file names removed. */
async function yaraScan(rules: string, file: string): Promise<{ seconds: number; out: string }> {
  const t0 = process.hrtime.bigint();
  const r = await run('yara', ['-s', rules, file], { timeoutMs: 600_000 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.code !== 0) throw new Error(`yara ${file} failed: ${r.stderr.trim()}`);
  return { seconds, out: r.stdout.split(file).join('FILE') };
}

// ---------------------------------------------------------------------------------------------
// servers: every one a child process, every one unmounted and killed in a finally

const live = new Set<Server>();

async function isMounted(mnt: string): Promise<boolean> {
  const text = await fs.promises.readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').some((l) => l.split(' ')[4] === mnt);
}

function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

class Server {
  private stopped = false;
  constructor(readonly name: string, readonly mnt: string, readonly file: string, public pid: number, private readonly cleanupDir: boolean) {
    live.add(this);
  }

  /** Peak resident set of the serving process (VmHWM), bytes. */
  peakRss(): number {
    return this.status('VmHWM');
  }

  /** Resident set of the serving process now (VmRSS), bytes. */
  rss(): number {
    return this.status('VmRSS');
  }

  private status(field: string): number {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${this.pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    live.delete(this);
    if (await isMounted(this.mnt)) {
      const r = await run('fusermount', ['-u', this.mnt], { timeoutMs: 10_000 });
      if (r.code !== 0) await run('fusermount', ['-uz', this.mnt], { timeoutMs: 10_000 });
    }
    if (this.pid > 0) {
      // Unmounted servers leave by themselves (vmssfs notices within 500 ms); then SIGTERM, SIGKILL.
      for (let i = 0; i < 200 && alive(this.pid); i++) {
        if (i === 75 || i === 150) {
          try {
            process.kill(this.pid, i === 75 ? 'SIGTERM' : 'SIGKILL');
          } catch {
            break;
          }
        }
        await sleep(20);
      }
    }
    if (await isMounted(this.mnt)) await run('fusermount', ['-uz', this.mnt], { timeoutMs: 10_000 });
    if (this.cleanupDir) fs.rmSync(this.mnt, { recursive: true, force: true });
  }
}

let WORK = '';
/** The web server of the http rows, while it runs. */
let nginx: Nginx | null = null;

function freshMountpoint(prefix: string): string {
  return fs.mkdtempSync(path.join(WORK, `mnt-${prefix}-`));
}

async function waitMounted(mnt: string, file: string, exited: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await isMounted(mnt))) {
    if (exited() || Date.now() > deadline) throw new Error(`${what} did not mount ${mnt}`);
    await sleep(5);
  }
  await fs.promises.stat(path.join(mnt, file));
}

/** A FUSE server of ours as a child process (in the foreground, so its pid is the child's), once mounted. */
async function startNodeServer(name: 'vmssfs' | 'ceiling', args: (mnt: string) => string[], env?: NodeJS.ProcessEnv): Promise<Server> {
  const mnt = freshMountpoint(name);
  const child = spawn(process.execPath, args(mnt), { stdio: ['ignore', 'ignore', 'inherit'], env: env ?? process.env });
  let exited = false;
  child.on('exit', () => (exited = true));
  const s = new Server(name, mnt, 'physmem.raw', child.pid ?? -1, true);
  try {
    await waitMounted(mnt, 'physmem.raw', () => exited, name === 'vmssfs' ? 'vmssfs' : 'ceiling-server');
  } catch (err) {
    await s.stop();
    throw err;
  }
  return s;
}

function startVmssfs(snapshot: string, env?: NodeJS.ProcessEnv, extra: string[] = []): Promise<Server> {
  return startNodeServer('vmssfs', (mnt) => [BIN, snapshot, mnt, '-f', ...extra], env);
}

function startCeiling(size: number): Promise<Server> {
  return startNodeServer('ceiling', (mnt) => [CEILING, mnt, String(size)]);
}

/** The pid of the process whose command line holds `needle` (a unique temporary path of ours). */
function pidByArg(needle: string, also?: string): number {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const args = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (args.includes(needle) && (also === undefined || args.includes(also)) && alive(Number(d))) return Number(d);
    } catch {
      // gone meanwhile
    }
  }
  return -1;
}

/** xmount daemonizes: its pid is found by its (unique) mountpoint argument. */
async function startXmount(source: string): Promise<Server> {
  const mnt = freshMountpoint('xmount');
  // Same caching as vmssfs: read-only, kernel_cache (pages survive open), day-long timeouts.
  const opts = 'ro,kernel_cache,attr_timeout=86400,entry_timeout=86400,negative_timeout=86400';
  const s = new Server('xmount', mnt, '', -1, true);
  const r = await run('xmount', ['-o', opts, '--in', 'raw', source, '--out', 'raw', mnt], { timeoutMs: 30_000 });
  s.pid = pidByArg(mnt);
  if (r.code !== 0) {
    await s.stop();
    throw new Error(`xmount failed: ${r.stderr.trim()}`);
  }
  const file = path.basename(source).replace(/\.[^.]*$/, '') + '.dd';
  Object.assign(s, { file });
  await waitMounted(mnt, file, () => false, 'xmount');
  return s;
}

async function stopAll(): Promise<void> {
  await nginx?.stop();
  for (const s of [...live]) {
    try {
      await s.stop();
    } catch (err) {
      process.stderr.write(`bench: could not stop ${s.name} at ${s.mnt}: ${String(err)}\n`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// inputs

interface Input { snapshot: string; vmem: string; physRanges: Ranges; blobRanges: Ranges; physSize: number }

/** Two regions like a real guest: the first below 4 GiB (at most 3 GiB of it), the rest at 4 GiB; or one from 0. */
function layout(bytes: number, flat = false): RegionSpec[] {
  const pages = bytes / PAGE;
  if (flat) return [{ ppn: 0, pageNum: 0, pages }];
  const low = Math.min(pages / 2, (3 * GiB) / PAGE);
  return [
    { ppn: 0, pageNum: 0, pages: low },
    { ppn: (4 * GiB) / PAGE, pageNum: low, pages: pages - low },
  ];
}

function makeInput(dir: string, name: string, bytes: number, sparse: boolean, flat = false): Input {
  const snapshot = path.join(dir, `${name}.vmsn`);
  const vmem = path.join(dir, `${name}.vmem`);
  const regions = layout(bytes, flat);
  const stamp = path.join(dir, `${name}.done`);
  if (!fs.existsSync(stamp)) {
    const t0 = Date.now();
    writeSnapshot(snapshot, { memory: 'vmem', regions, blobPages: bytes / PAGE, sparse, screenshot: false });
    fs.writeFileSync(stamp, '');
    process.stdout.write(`  wrote ${path.basename(snapshot)} + .vmem (${fmtBytes(bytes)}${sparse ? ', sparse' : ''}) in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  const physRanges: Ranges = regions.map((r) => [r.ppn * PAGE, r.pages * PAGE]);
  const blobRanges: Ranges = [[0, bytes]];
  const last = regions[regions.length - 1] as RegionSpec;
  return { snapshot, vmem, physRanges, blobRanges, physSize: (last.ppn + last.pages) * PAGE };
}

/**
 * An encrypted VM with compressed memory, as VMware writes one for a Windows 11 guest: a 1 GiB
 * plain snapshot of guest-like (compressible) memory, then VM.vmx, VM-Snapshot1.vmsn and a
 * .vmem compressed in 4 MiB blocks and encrypted. `plain` is the same memory unencrypted.
 */
interface CryptoInput { plain: Input; meta: string; passwordFile: string; storedBytes: number; /** The same memory compressed, not encrypted. */ zipMeta: string }

function makeCryptoInput(dir: string, bytes: number): CryptoInput {
  const vmDir = path.join(dir, 'encrypted-vm');
  const meta = path.join(vmDir, 'VM-Snapshot1.vmsn');
  const passwordFile = path.join(dir, 'password.txt');
  // (the stamp's name changes with what is written: an older BENCH_DIR's memory had no banners)
  const stamp = path.join(dir, 'compressed-vms-banners.done');
  const regions = layout(bytes);
  const plainSnap = path.join(dir, 'benchz1g.vmsn');
  if (!fs.existsSync(stamp)) {
    const t0 = Date.now();
    fs.mkdirSync(vmDir, { recursive: true });
    const w = writeSnapshot(plainSnap, { memory: 'vmem', regions, blobPages: bytes / PAGE, screenshot: false });
    fillCompressibleMemory(w.vmemPath as string);
    plantBanners(w.vmemPath as string);
    const chain = makeKeyChain({ password: 'bench-password' });
    fs.writeFileSync(path.join(vmDir, 'VM.vmx'), chain.vmx);
    fs.writeFileSync(passwordFile, 'bench-password\n');
    const zipDir = path.join(dir, 'compressed-vm');
    fs.mkdirSync(zipDir, { recursive: true });
    const z = path.join(zipDir, 'VM-Snapshot1.vmem');
    compressFile(w.vmemPath as string, z);
    fs.copyFileSync(w.path, path.join(zipDir, 'VM-Snapshot1.vmsn'));
    encryptFile(w.path, meta, chain.key, { version: 1 });
    encryptFile(z, path.join(vmDir, 'VM-Snapshot1.vmem'), chain.key, { version: 2 });
    fs.writeFileSync(stamp, '');
    process.stdout.write(`  wrote the encrypted, compressed VM (${fmtBytes(bytes)} of memory) in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  const last = regions[regions.length - 1] as RegionSpec;
  const plain: Input = {
    snapshot: plainSnap, vmem: path.join(dir, 'benchz1g.vmem'),
    physRanges: regions.map((r) => [r.ppn * PAGE, r.pages * PAGE]), blobRanges: [[0, bytes]], physSize: (last.ppn + last.pages) * PAGE,
  };
  return { plain, meta, passwordFile, storedBytes: fs.statSync(path.join(vmDir, 'VM-Snapshot1.vmem')).size, zipMeta: path.join(dir, 'compressed-vm', 'VM-Snapshot1.vmsn') };
}

// ---------------------------------------------------------------------------------------------
// figures

const median = (xs: number[]): number => {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

function fmtBytes(n: number): string {
  return n >= GiB ? `${(n / GiB).toFixed(n % GiB ? 1 : 0)} GiB` : `${(n / MiB).toFixed(n % MiB ? 1 : 0)} MiB`;
}

const mibps = (r: ReadResult): number => r.amount / MiB / r.seconds;
const perSec = (r: ReadResult): number => r.amount / r.seconds;

class Samples {
  private readonly m = new Map<string, number[]>();
  add(key: string, v: number): void {
    const a = this.m.get(key) ?? [];
    a.push(v);
    this.m.set(key, a);
  }
  med(key: string): number {
    return median(this.m.get(key) ?? []);
  }
  all(key: string): number[] {
    return this.m.get(key) ?? [];
  }
}

function checkDigest(what: string, expected: string, got: ReadResult): void {
  if (got.digest !== expected) throw new Error(`${what}: served different bytes (digest ${got.digest}, expected ${expected})`);
}

/** Bring a file into the OS page cache (the reader, not cat: nothing comes back through a pipe). */
async function preRead(file: string): Promise<void> {
  await readSeq(file, [[0, fs.statSync(file).size]]);
}

async function ensureTools(): Promise<void> {
  if (ONLY.has('xmount') && spawnSync('sh', ['-c', 'command -v xmount'], { stdio: 'ignore' }).status !== 0) {
    process.stdout.write('installing Debian\'s xmount\n');
    const sudo = process.getuid?.() === 0 ? [] : ['sudo'];
    const apt = (args: string[]): void => {
      const r = spawnSync(sudo[0] ?? 'env', [...sudo.slice(1), ...(sudo.length ? ['env'] : []), 'DEBIAN_FRONTEND=noninteractive', 'apt-get', ...args], { stdio: 'inherit' });
      if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed`);
    };
    apt(['update', '-qq']);
    apt(['install', '-y', '-qq', '--no-install-recommends', 'xmount']);
  }
  READER = path.join(WORK, 'benchread');
  const cc = spawnSync('cc', ['-O2', '-Wall', '-Wextra', '-o', READER, READER_C], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc failed: ${cc.stderr}`);
}

function machine(): string {
  const cpu = /model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
  return `${os.cpus().length} CPUs (nproc ${spawnSync('nproc', { encoding: 'utf8' }).stdout.trim()}), ${cpu}, Linux ${os.release()}, Node ${process.version}`;
}

// ---------------------------------------------------------------------------------------------
// VM folders and diff

const RSS_CLI = path.join(REPO, 'dist', 'test', 'helpers', 'rss-cli.js');
/** Pages B changes, all in the last 8 MiB of the memory file, so cmp too reads everything before it finds them. */
const DIFF_CHANGED_FROM_END = [1, 2, 3, 1000];

interface DiffInputs { a: string; b: string; vmemA: string; vmemB: string; changed: number }

/** Two 1 GiB checkpoints of the same layout as the read figures', B with a few pages changed near the end. */
function makeDiffInputs(dir: string): DiffInputs {
  const regions = layout(GiB);
  const last = regions[regions.length - 1] as RegionSpec;
  const endPage = last.ppn + last.pages;
  const a = path.join(dir, 'diffa.vmsn');
  const b = path.join(dir, 'diffb.vmsn');
  const stamp = path.join(dir, 'diff.done');
  if (!fs.existsSync(stamp)) {
    const t0 = Date.now();
    writeFolderCheckpoint(dir, { file: 'diffa.vmsn', pages: GiB / PAGE, regions });
    writeFolderCheckpoint(dir, { file: 'diffb.vmsn', pages: GiB / PAGE, regions, altered: new Map(DIFF_CHANGED_FROM_END.map((k) => [endPage - k, 1])) });
    fs.writeFileSync(stamp, '');
    process.stdout.write(`  wrote diffa and diffb (.vmsn + 1 GiB .vmem each) in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  return { a, b, vmemA: a.replace(/\.vmsn$/, '.vmem'), vmemB: b.replace(/\.vmsn$/, '.vmem'), changed: DIFF_CHANGED_FROM_END.length };
}

/** Wall time of a command in ms (exit status `ok` expected), and its output. */
async function timed(cmd: string, args: string[], ok: number[]): Promise<{ ms: number; out: Ran }> {
  const t0 = process.hrtime.bigint();
  const out = await run(cmd, args, { timeoutMs: 600_000 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (!ok.includes(out.code ?? -1)) throw new Error(`${cmd} ${args.join(' ')} exited ${out.code}: ${out.stderr.trim()}`);
  return { ms, out };
}

/** One round of the diff figure: cmp of the two memory files, then vmssfs diff, both from the OS page cache. */
async function diffRound(d: DiffInputs, s: Samples): Promise<number> {
  await preRead(d.vmemA);
  await preRead(d.vmemB);
  const cmp = await timed('cmp', [d.vmemA, d.vmemB], [1]);
  const diff = await timed(process.execPath, [RSS_CLI, 'diff', '--json', d.a, d.b], [0]);
  const counts = (JSON.parse(diff.out.stdout) as { counts: { changed: number } }).counts;
  if (counts.changed !== d.changed) throw new Error(`diff found ${counts.changed} changed pages, the writer changed ${d.changed}`);
  s.add('diff.cmp', cmp.ms);
  s.add('diff.vmssfs', diff.ms);
  s.add('diff.ratio', diff.ms / cmp.ms);
  return Number(/maxrss=(\d+)/.exec(diff.out.stderr)?.[1] ?? NaN) * 1024;
}

const FOLDER_SNAPSHOTS = 4;

/** A VM folder of FOLDER_SNAPSHOTS sparse 64 GiB snapshots, and one more such snapshot alone. */
function makeFolderInputs(dir: string): { folder: string; single: string } {
  const folder = path.join(dir, 'vmfolder');
  const single = path.join(dir, 'single', 'alone.vmsn');
  const stamp = path.join(dir, 'folder.done');
  if (!fs.existsSync(stamp)) {
    const t0 = Date.now();
    fs.mkdirSync(folder, { recursive: true });
    fs.mkdirSync(path.dirname(single), { recursive: true });
    const regions = layout(64 * GiB);
    const snaps: VmsdSnapshotSpec[] = [];
    for (let k = 1; k <= FOLDER_SNAPSHOTS; k++) {
      const spec: VmsdSnapshotSpec = { uid: k, parent: k > 1 ? k - 1 : undefined, displayName: `snapshot ${k}`, created: new Date(Date.UTC(2024, 0, k)).toISOString(), file: `vm-Snapshot${k}.vmsn`, pages: (64 * GiB) / PAGE, regions, sparse: true };
      writeFolderCheckpoint(folder, spec);
      snaps.push(spec);
    }
    fs.writeFileSync(path.join(folder, 'vm.vmx'), 'displayName = "vm"\n');
    fs.writeFileSync(path.join(folder, 'vm.vmsd'), vmsdText(snaps, FOLDER_SNAPSHOTS));
    writeFolderCheckpoint(path.dirname(single), { file: 'alone.vmsn', pages: (64 * GiB) / PAGE, regions, sparse: true });
    fs.writeFileSync(stamp, '');
    process.stdout.write(`  wrote a folder of ${FOLDER_SNAPSHOTS} sparse 64 GiB snapshots and one alone in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  return { folder, single };
}

/** Mount time, daemon mode: command start to the first stat of `probe` in the mount. */
async function mountTime(source: string, probe: string): Promise<number> {
  const mnt = freshMountpoint('mt');
  const t0 = process.hrtime.bigint();
  const r = await run(process.execPath, [BIN, source, mnt], { timeoutMs: 60_000 });
  const daemon = new Server('vmssfs daemon', mnt, probe, pidByArg(mnt, '--daemon-child'), true);
  try {
    if (r.code !== 0) throw new Error(`vmssfs ${source} ${mnt} failed: ${r.stderr.trim()}`);
    await fs.promises.stat(path.join(mnt, probe));
    return Number(process.hrtime.bigint() - t0) / 1e6;
  } finally {
    await daemon.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// compressed memory: the same 1 GiB of guest-like memory, plain against compressed (in 4 MiB
// blocks, beginning in the zero window), each on a fresh mount

/** One round of the compressed rows. */
async function zipRound(enc: CryptoInput, digest: string, s: Samples, rss: { c64: number; c1: number }): Promise<void> {
  const ranges = enc.plain.physRanges;
  const pw = ['--password-file', enc.passwordFile];
  await preRead(enc.plain.vmem);
  await preRead(enc.zipMeta.replace(/\.vmsn$/, '.vmem'));
  // Random first touches, from the moment the mounts return (the seek index builds meanwhile),
  // interleaved in batches so that the machine's load weighs on both alike.
  let plain = await startVmssfs(enc.plain.snapshot);
  let zip = await startVmssfs(enc.zipMeta, undefined, ['--cache-size', '64']);
  try {
    const [p, z] = await readRandomInterleaved([{ file: path.join(plain.mnt, plain.file), ranges }, { file: path.join(zip.mnt, zip.file), ranges }], 7);
    if ((p as ReadResult).digest !== (z as ReadResult).digest) throw new Error('compressed memory served different bytes on random reads than plain');
    s.add('zip.rand.plain', perSec(p as ReadResult));
    s.add('zip.rand.zip', perSec(z as ReadResult));
    s.add('zip.rand.ratio', perSec(z as ReadResult) / perSec(p as ReadResult));
    rss.c64 = Math.max(rss.c64, zip.peakRss());
  } finally {
    await plain.stop();
    await zip.stop();
  }
  // Cold sequential: plain, compressed (--cache-size 64 and 1), encrypted and compressed.
  plain = await startVmssfs(enc.plain.snapshot);
  try {
    const r = await readSeq(path.join(plain.mnt, plain.file), ranges);
    checkDigest('plain', digest, r);
    s.add('zip.seq.plain', mibps(r));
  } finally {
    await plain.stop();
  }
  for (const [key, meta, extra] of [['zip', enc.zipMeta, ['--cache-size', '64']], ['zip1', enc.zipMeta, ['--cache-size', '1']], ['enc', enc.meta, [...pw, '--cache-size', '64']]] as const) {
    zip = await startVmssfs(meta, undefined, [...extra]);
    try {
      const r = await readSeq(path.join(zip.mnt, zip.file), ranges);
      checkDigest(key, digest, r);
      s.add(`zip.seq.${key}`, mibps(r));
      if (key === 'zip') s.add('zip.seq.zip.s', r.seconds);
      if (key === 'zip') rss.c64 = Math.max(rss.c64, zip.peakRss());
      if (key === 'zip1') rss.c1 = Math.max(rss.c1, zip.peakRss());
    } finally {
      await zip.stop();
    }
  }
  const last = (k: string): number => s.all(k).at(-1) ?? NaN;
  s.add('zip.seq.ratio', last('zip.seq.zip') / last('zip.seq.plain'));
  s.add('zip.seq1.ratio', last('zip.seq.zip1') / last('zip.seq.zip'));
  s.add('zip.enc.ratio', last('zip.seq.enc') / last('zip.seq.zip'));
}

/** The peers of the compressed rows (scripts/bench-peers.ts), found once before the rounds. */
interface Peers {
  flatten: Peer;
  vol: Peer;
  /** sha256 of the plain memory, which the flattened file must have; and what each round's had. */
  plainSha: string;
  flattenShas: string[];
  /** Why vmem_flatten.py failed on our stream, if it did: a finding, shown in its row. */
  flattenError: string;
}

async function findPeers(enc: CryptoInput): Promise<Peers> {
  const peers: Peers = {
    flatten: findPeer(REPO, 'BENCH_VMEM_DECRYPT', 'vmem-decrypt', 'vmem_flatten.py'),
    vol: findPeer(REPO, 'BENCH_VOLATILITY', 'volatility3', 'vol.py'),
    plainSha: '',
    flattenShas: [],
    flattenError: '',
  };
  if (peers.flatten.dir) peers.plainSha = await sha256File(enc.plain.vmem);
  if (peers.vol.dir) {
    // Volatility builds its cache on its first run: not in a timed one.
    const probe = path.join(WORK, 'volatility-probe.raw');
    fs.writeFileSync(probe, Buffer.alloc(MiB));
    await volBanners(peers.vol.dir, probe, path.join(WORK, 'volatility-home'));
    fs.rmSync(probe);
  }
  process.stdout.write(`peers: vmem-decrypt ${peers.flatten.dir ?? peers.flatten.absent}; Volatility 3 ${peers.vol.dir ?? peers.vol.absent}\n`);
  return peers;
}

/**
 * One round of the peers' rows, after zipRound: vmem_flatten.py of the compressed .vmem (from the
 * OS page cache) into a temporary file, against this round's Z2 read of the same memory from a
 * fresh mount; and Volatility's banners over a fresh plain mount and a fresh compressed one, in
 * alternating order, each of which must print the banners planted in the memory.
 */
async function peerRound(enc: CryptoInput, peers: Peers, round: number, s: Samples): Promise<void> {
  const zipVmem = enc.zipMeta.replace(/\.vmsn$/, '.vmem');
  if (peers.flatten.dir && !peers.flattenError) {
    await preRead(zipVmem);
    try {
      const f = await flatten(peers.flatten.dir, zipVmem, WORK);
      s.add('peer.flatten', f.seconds);
      s.add('peer.flatten.ratio', f.seconds / (s.all('zip.seq.zip.s').at(-1) ?? NaN));
      peers.flattenShas.push(f.sha256);
    } catch (err) {
      // VMware's reader, as the peer has it, rejecting our writer's stream: reported, not fatal.
      peers.flattenError = err instanceof Error ? err.message : String(err);
    }
  }
  if (peers.vol.dir) {
    const expected = expectedBanners(enc.plain.physRanges);
    const took = { plain: NaN, zip: NaN };
    for (const key of round % 2 ? (['plain', 'zip'] as const) : (['zip', 'plain'] as const)) {
      await preRead(key === 'plain' ? enc.plain.vmem : zipVmem);
      const srv = key === 'plain' ? await startVmssfs(enc.plain.snapshot) : await startVmssfs(enc.zipMeta, undefined, ['--cache-size', '64']);
      try {
        const r = await volBanners(peers.vol.dir, path.join(srv.mnt, srv.file), path.join(WORK, 'volatility-home'));
        if (r.banners.join('\n') !== expected.join('\n')) {
          throw new Error(`Volatility's banners over the ${key} mount printed ${JSON.stringify(r.banners)}, the memory holds ${JSON.stringify(expected)}`);
        }
        took[key] = r.seconds;
      } finally {
        await srv.stop();
      }
    }
    s.add('peer.vol.plain', took.plain);
    s.add('peer.vol.zip', took.zip);
    s.add('peer.vol.ratio', took.zip / took.plain);
  }
}

function zipRows(s: Samples, rss: { c64: number; c1: number }, peers: Peers | null): string[][] {
  const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '-');
  const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');
  const verdict = (ok: boolean): string => (ok ? 'PASS' : 'FAIL');
  return [
    ['Z1. compressed 1 GiB, random 4 KiB first touch from mount, reads/s (plain | compressed)', '', '', `${f0(s.med('zip.rand.plain'))} | ${f0(s.med('zip.rand.zip'))}`, '', '',
      `${f2(s.med('zip.rand.ratio'))}x plain`, '>= 0.1x plain', verdict(s.med('zip.rand.ratio') >= 0.1)],
    ['Z2. compressed 1 GiB, cold sequential, MiB/s (plain | compressed)', '', '', `${f0(s.med('zip.seq.plain'))} | ${f0(s.med('zip.seq.zip'))}`, '', '',
      `${f2(s.med('zip.seq.ratio'))}x plain`, '>= 0.4x plain', verdict(s.med('zip.seq.ratio') >= 0.4)],
    ['Z3. compressed, daemon peak RSS, --cache-size 64, MiB', '', '', f0(rss.c64 / MiB), '', '', '', '<= 192 MiB', verdict(rss.c64 <= 192 * MiB)],
    ['Z4. compressed, --cache-size 1: peak RSS MiB | sequential MiB/s', '', '', `${f0(rss.c1 / MiB)} | ${f0(s.med('zip.seq.zip1'))}`, '', '',
      `${f2(s.med('zip.seq1.ratio'))}x the 64 MiB mount`, '<= 160 MiB, >= 0.5x', verdict(rss.c1 <= 160 * MiB && s.med('zip.seq1.ratio') >= 0.5)],
    ['Z5. encrypted+compressed, cold sequential, MiB/s', '', '', f0(s.med('zip.seq.enc')), '', '',
      `${f2(s.med('zip.enc.ratio'))}x compressed`, '>= 0.9x compressed', verdict(s.med('zip.enc.ratio') >= 0.9)],
    ...(peers ? peerRows(s, peers) : []),
  ];
}

function peerRows(s: Samples, peers: Peers): string[][] {
  const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '-');
  const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');
  const verdict = (ok: boolean): string => (ok ? 'PASS' : 'FAIL');
  const flatLabel = 'Z6. vmem-decrypt\'s vmem_flatten.py of the compressed 1 GiB to a file, s (flatten | vmssfs Z2 read)';
  const volLabel = 'Z7. Volatility 3 banners.Banners over physmem.raw of a fresh mount, s (plain | compressed)';
  const sameSha = !peers.flattenError && peers.flattenShas.length > 0 && peers.flattenShas.every((h) => h === peers.plainSha);
  const shaNote = peers.flattenError ? `failed: ${peers.flattenError}` : `sha256 ${sameSha ? 'equals' : 'DIFFERS from'} the plain memory's`;
  return [
    peers.flatten.dir
      ? [flatLabel, '', '', `${f1(s.med('peer.flatten'))} | ${f1(s.med('zip.seq.zip.s'))}`, '', '',
        `flatten takes ${f2(s.med('peer.flatten.ratio'))}x the mount's read; ${shaNote}`,
        'same sha256', verdict(sameSha)]
      : [flatLabel, '', '', peers.flatten.absent, '', '', '', '', ''],
    peers.vol.dir
      ? [volLabel, '', '', `${f1(s.med('peer.vol.plain'))} | ${f1(s.med('peer.vol.zip'))}`, '', '',
        `${f2(s.med('peer.vol.ratio'))}x plain`, '<= 1.5x plain', verdict(s.med('peer.vol.ratio') <= 1.5)]
      : [volLabel, '', '', peers.vol.absent, '', '', '', '', ''],
  ];
}

function zipPerRound(s: Samples, peers: Peers | null): string {
  const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '-');
  const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '-');
  const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');
  const flat = peers?.flatten.dir
    ? `vmem_flatten.py ${s.all('peer.flatten').map(f1).join('/')} s against the mount's ${s.all('zip.seq.zip.s').map(f1).join('/')} s, sha256 ${peers.flattenShas.map((h) => h.slice(0, 12)).join('/')} (plain ${peers.plainSha.slice(0, 12)})\n`
    : '';
  const vol = peers?.vol.dir
    ? `Volatility banners plain ${s.all('peer.vol.plain').map(f1).join('/')} compressed ${s.all('peer.vol.zip').map(f1).join('/')} s (ratio ${s.all('peer.vol.ratio').map(f2).join('/')})\n`
    : '';
  return `compressed per round: random plain ${s.all('zip.rand.plain').map(f0).join('/')} compressed ${s.all('zip.rand.zip').map(f0).join('/')} (ratio ${s.all('zip.rand.ratio').map(f2).join('/')}); `
    + `sequential plain ${s.all('zip.seq.plain').map(f0).join('/')} compressed ${s.all('zip.seq.zip').map(f0).join('/')} --cache-size 1 ${s.all('zip.seq.zip1').map(f0).join('/')} encrypted ${s.all('zip.seq.enc').map(f0).join('/')} MiB/s\n` + flat + vol;
}

async function main(): Promise<number> {
  const keep = process.env.BENCH_DIR;
  WORK = keep ? path.resolve(keep) : fs.mkdtempSync(path.join(os.tmpdir(), 'vmssfs-bench-'));
  fs.mkdirSync(WORK, { recursive: true });
  const s = new Samples();
  let rssPeak = 0;
  let xmountRssPeak = 0;
  let diffRssPeak = 0;
  let encRssPeak = 0;
  /** The RSS at mount of the daemon that peaked highest, and the most any daemon grew by. */
  let encRssMount = 0;
  let encRssGrowth = 0;
  let encStored = 0;
  const zipRss = { c64: 0, c1: 0 };
  let peers: Peers | null = null;
  try {
    await ensureTools();
    process.stdout.write(`machine: ${machine()}\nrounds: ${ROUNDS} (medians shown; ratios are medians of per-round ratios)\ninputs in ${WORK}\n`);
    const big = makeInput(WORK, 'bench1g', GiB, false);
    const huge = makeInput(WORK, 'bench64g', 64 * GiB, true);
    const tiny = makeInput(WORK, 'bench8m', 8 * MiB, true);
    const diffInputs = ONLY.has('diff') ? makeDiffInputs(WORK) : null;
    const folderInputs = ONLY.has('folder') ? makeFolderInputs(WORK) : null;
    const enc = ONLY.has('crypto') || ONLY.has('zip') ? makeCryptoInput(WORK, GiB) : null;
    encStored = enc?.storedBytes ?? 0;
    const flat = makeInput(WORK, 'bench512m-flat', 512 * MiB, false, true);
    const rules = path.join(WORK, 'bench.yar');
    fs.writeFileSync(rules, YARA_RULES);

    // The bytes every contender serves: the guest's 1 GiB, the .vmem read straight through.
    if (PLAIN_PARTS || HTTP_PART) await preRead(big.vmem);
    const reference = PLAIN_PARTS || HTTP_PART ? await readSeq(big.vmem, big.blobRanges) : { amount: 0, seconds: 0, digest: '' };
    nginx = HTTP_PART ? await Nginx.start(WORK, fs.mkdtempSync(path.join(WORK, 'nginx-'))) : null;
    const encReference = enc ? await readSeq(enc.plain.vmem, enc.plain.blobRanges) : null;
    peers = enc && ONLY.has('zip') ? await findPeers(enc) : null;
    for (let round = 1; round <= ROUNDS; round++) {
      process.stdout.write(`round ${round}/${ROUNDS}\n`);
      if (PLAIN_PARTS) {
        await preRead(big.vmem);

        // (a) the source, straight from the OS page cache
        const direct = await readSeq(big.vmem, big.blobRanges);
        checkDigest('direct', reference.digest, direct);
        s.add('seq.direct', mibps(direct));
      }

      // (b) the binding's ceiling: a file of physmem.raw's size, the same ranges
      let srv: Server;
      if (ONLY.has('seq')) {
        srv = await startCeiling(big.physSize);
        try {
          s.add('seq.ceiling', mibps(await readSeq(path.join(srv.mnt, srv.file), big.physRanges)));
          s.add('warm.ceiling', mibps(await readSeq(path.join(srv.mnt, srv.file), big.physRanges)));
        } finally {
          await srv.stop();
        }
      }

      // vmssfs: physmem.raw's two runs (the 1 GiB of real bytes), cold then warm; native path,
      // then the JavaScript path (VMSSFS_NATIVE=0)
      for (const [tag, env] of [['vmssfs', undefined], ['js', JS_PATH]] as const) {
        if (!ONLY.has('seq')) break;
        srv = await startVmssfs(big.snapshot, env);
        try {
          const cold = await readSeq(path.join(srv.mnt, srv.file), big.physRanges);
          checkDigest(tag, reference.digest, cold);
          s.add(`seq.${tag}`, mibps(cold));
          const warm = await readSeq(path.join(srv.mnt, srv.file), big.physRanges);
          checkDigest(`${tag} warm`, reference.digest, warm);
          s.add(`warm.${tag}`, mibps(warm));
          if (tag === 'vmssfs') rssPeak = Math.max(rssPeak, srv.peakRss());
        } finally {
          await srv.stop();
        }
      }
      // Random reads: every contender mounted at once, one reader interleaving them in batches of
      // RANDOM_BATCH (each a first touch of the same pages, in the same order), so that the load
      // of a shared machine, which drifts by 2x within a round, weighs on all of them alike.
      if (ONLY.has('rand')) {
        const contenders: { tag: string; start: () => Promise<Server>; ranges: Ranges }[] = [
          { tag: 'ceiling', start: () => startCeiling(big.physSize), ranges: big.physRanges },
          { tag: 'vmssfs', start: () => startVmssfs(big.snapshot), ranges: big.physRanges },
          { tag: 'js', start: () => startVmssfs(big.snapshot, JS_PATH), ranges: big.physRanges },
          ...(ONLY.has('xmount') ? [{ tag: 'xmount', start: () => startXmount(big.vmem), ranges: big.blobRanges }] : []),
        ];
        const servers: Server[] = [];
        try {
          for (const c of contenders) servers.push(await c.start());
          const rs = await readRandomInterleaved(servers.map((v, i) => ({ file: path.join(v.mnt, v.file), ranges: (contenders[i] as { ranges: Ranges }).ranges })), round);
          rs.forEach((r, i) => {
            const tag = (contenders[i] as { tag: string }).tag;
            // (the ceiling's bytes are whatever libfuse's memory held: only the others must agree)
            if (tag !== 'ceiling' && r.digest !== (rs[1] as ReadResult).digest) throw new Error(`${tag} served different bytes on random reads than vmssfs`);
            s.add(`rand.${tag}`, perSec(r));
          });
          rssPeak = Math.max(rssPeak, (servers[1] as Server).peakRss());
        } finally {
          for (const v of servers) await v.stop();
        }
      }
      let vmssfsRand4: string[] | null = null;
      for (const [tag, env] of [['vmssfs', undefined], ['js', JS_PATH]] as const) {
        if (!ONLY.has('rand4')) break;
        srv = await startVmssfs(big.snapshot, env);
        try {
          const r = await readRandom4(path.join(srv.mnt, srv.file), big.physRanges, round);
          if (vmssfsRand4 && r.digests.join() !== vmssfsRand4.join()) throw new Error('the native and JavaScript paths served different bytes to four readers');
          vmssfsRand4 ??= r.digests;
          s.add(`rand4.${tag}`, r.rate);
        } finally {
          await srv.stop();
        }
      }

      // (c) xmount serving the same .vmem as a raw image: the same bytes of the same file
      if (ONLY.has('xmount') && ONLY.has('seq')) {
        srv = await startXmount(big.vmem);
        try {
          const cold = await readSeq(path.join(srv.mnt, srv.file), big.blobRanges);
          checkDigest('xmount', reference.digest, cold);
          s.add('seq.xmount', mibps(cold));
          s.add('warm.xmount', mibps(await readSeq(path.join(srv.mnt, srv.file), big.blobRanges)));
          xmountRssPeak = Math.max(xmountRssPeak, srv.peakRss());
        } finally {
          await srv.stop();
        }
      }
      if (ONLY.has('xmount') && ONLY.has('rand4')) {
        srv = await startXmount(big.vmem);
        try {
          const xr = await readRandom4(path.join(srv.mnt, srv.file), big.blobRanges, round);
          if (vmssfsRand4 && xr.digests.join() !== vmssfsRand4.join()) throw new Error('xmount and vmssfs served different bytes to four readers');
          s.add('rand4.xmount', xr.rate);
        } finally {
          await srv.stop();
        }
      }

      // (d) yara over a freshly mounted physmem.raw (one run from 0: the same bytes as the .vmem)
      // against yara over the .vmem itself, from the OS page cache
      if (ONLY.has('yara')) {
        // Each scan of a mount sits between two scans of the source, and is set against their mean:
        // the machine's load drifts within a round, and a ratio of scans minutes apart measures it.
        await preRead(flat.vmem);
        let before = (await yaraScan(rules, flat.vmem)).seconds;
        for (const [tag, env] of [['vmssfs', undefined], ['js', JS_PATH]] as const) {
          srv = await startVmssfs(flat.snapshot, env);
          let onMount: { seconds: number; out: string };
          try {
            onMount = await yaraScan(rules, path.join(srv.mnt, srv.file));
          } finally {
            await srv.stop();
          }
          const after = await yaraScan(rules, flat.vmem);
          if (onMount.out !== after.out) throw new Error(`yara found different things through the mount (${tag})`);
          const source = (before + after.seconds) / 2;
          s.add(`yara.${tag}`, onMount.seconds);
          s.add(tag === 'vmssfs' ? 'yara.source' : 'yara.source.js', source);
          s.add(tag === 'vmssfs' ? 'yara.ratio' : 'yara.ratio.js', onMount.seconds / source);
          before = after.seconds;
        }
      }

      // mount time, daemon mode: command start to the first successful stat of physmem.raw
      for (const [key, input] of ONLY.has('mount') ? ([['mount.8m', tiny], ['mount.64g', huge]] as const) : []) {
        const mnt = freshMountpoint('mt');
        const t0 = process.hrtime.bigint();
        const r = await run(process.execPath, [BIN, input.snapshot, mnt], { timeoutMs: 60_000 });
        const daemon = new Server('vmssfs daemon', mnt, 'physmem.raw', pidByArg(mnt, '--daemon-child'), true);
        try {
          if (r.code !== 0) throw new Error(`vmssfs ${input.snapshot} ${mnt} failed: ${r.stderr.trim()}`);
          await fs.promises.stat(path.join(mnt, 'physmem.raw'));
          s.add(key, Number(process.hrtime.bigint() - t0) / 1e6);
        } finally {
          await daemon.stop();
        }
      }

      // VM folders and diff
      if (diffInputs) diffRssPeak = Math.max(diffRssPeak, await diffRound(diffInputs, s));
      if (folderInputs) {
        const one = await mountTime(folderInputs.single, 'physmem.raw');
        const all = await mountTime(folderInputs.folder, `snapshot ${FOLDER_SNAPSHOTS}/physmem.raw`);
        s.add('folder.one', one);
        s.add('folder.all', all);
        s.add('folder.ratio', all / one);
      }
      // (d) an encrypted VM with compressed memory (decrypted and decompressed as read), against
      // vmssfs serving the same memory unencrypted; each on a cold mount (fresh daemon).
      if (enc && encReference && ONLY.has('zip')) await zipRound(enc, encReference.digest, s, zipRss);
      if (enc && peers) await peerRound(enc, peers, round, s);
      if (enc && encReference && ONLY.has('crypto')) {
        const pw = ['--password-file', enc.passwordFile, '--cache-size', String(CRYPTO_CACHE_MIB)];
        const noteRss = (srv: Server, atMount: number): void => {
          const peak = srv.peakRss();
          if (peak > encRssPeak) [encRssPeak, encRssMount] = [peak, atMount];
          encRssGrowth = Math.max(encRssGrowth, peak - atMount);
        };
        await preRead(path.join(path.dirname(enc.meta), 'VM-Snapshot1.vmem'));
        srv = await startVmssfs(enc.meta, undefined, pw);
        try {
          const atMount = srv.rss();
          // The last page of memory, first thing after mounting: what a reader deep in the image waits.
          const lastRange = enc.plain.physRanges[enc.plain.physRanges.length - 1] as [number, number];
          const far = await reader(['seq', path.join(srv.mnt, srv.file), String(PAGE), `${lastRange[0] + lastRange[1] - PAGE}:${PAGE}`]);
          s.add('crypto.far', far.seconds * 1000);
          noteRss(srv, atMount);
        } finally {
          await srv.stop();
        }
        srv = await startVmssfs(enc.meta, undefined, pw);
        try {
          const atMount = srv.rss();
          const seq = await readSeq(path.join(srv.mnt, srv.file), enc.plain.physRanges);
          checkDigest('vmssfs encrypted+compressed', encReference.digest, seq);
          s.add('crypto.seq', seq.amount / seq.seconds / 1e6);
          noteRss(srv, atMount);
        } finally {
          await srv.stop();
        }
        await preRead(enc.plain.vmem);
        srv = await startVmssfs(enc.plain.snapshot);
        try {
          const seq = await readSeq(path.join(srv.mnt, srv.file), enc.plain.physRanges);
          checkDigest('vmssfs plain', encReference.digest, seq);
          s.add('crypto.plainseq', seq.amount / seq.seconds / 1e6);
        } finally {
          await srv.stop();
        }
      }
      // (e) the same 1 GiB guest on a web server (nginx, loopback): vmssfs against curl, each
      // sequential read and each random series from a fresh mount (nothing cached but the server's page cache)
      if (nginx) {
        const url = nginx.url('open', path.basename(big.snapshot));
        const vmemUrl = nginx.url('open', path.basename(big.vmem));
        await preRead(big.vmem);
        s.add('http.curl', await curlDownload(vmemUrl, fs.statSync(big.vmem).size));
        srv = await startVmssfs(url);
        try {
          const seq = await readSeq(path.join(srv.mnt, srv.file), big.physRanges);
          checkDigest('vmssfs over http', reference.digest, seq);
          s.add('http.seq', mibps(seq));
        } finally {
          await srv.stop();
        }
        s.add('http.seq.ratio', (s.all('http.seq').at(-1) as number) / (s.all('http.curl').at(-1) as number));
        s.add('http.curlrand', await curlRandomRanges(vmemUrl, fs.statSync(big.vmem).size, HTTP_RANDOM_READS, round, WORK));
        srv = await startVmssfs(url);
        try {
          const r = await reader(['rand', String(HTTP_RANDOM_READS), String(round), String(HTTP_RANDOM_READS), path.join(srv.mnt, srv.file), rangeArg(big.physRanges)]);
          s.add('http.rand', perSec(r));
        } finally {
          await srv.stop();
        }
        s.add('http.rand.ratio', (s.all('http.rand').at(-1) as number) / (s.all('http.curlrand').at(-1) as number));
      }
      if (!PLAIN_PARTS) continue;

      const last = (k: string): number => s.all(k).at(-1) ?? NaN;
      for (const k of ['seq', 'warm', 'rand', 'rand4']) {
        s.add(`${k}.ratio.ceiling`, last(`${k}.vmssfs`) / last(`${k}.ceiling`));
        s.add(`${k}.ratio.xmount`, last(`${k}.vmssfs`) / last(`${k}.xmount`));
        s.add(`${k}.ratio.js`, last(`${k}.vmssfs`) / last(`${k}.js`));
      }
      s.add('mount.ratio', (s.all('mount.64g').at(-1) as number) / (s.all('mount.8m').at(-1) as number));
    }
  } finally {
    await stopAll();
    await nginx?.stop();
    if (!keep) fs.rmSync(WORK, { recursive: true, force: true });
  }

  const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '-');
  const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');
  const verdict = (ok: boolean): string => (ok ? 'PASS' : 'FAIL');
  const vs = (k: string): string => `${f2(s.med(`${k}.ratio.xmount`))}x xmount, ${f2(s.med(`${k}.ratio.js`))}x JS path`;
  const rows: string[][] = [
    ['figure', 'direct', 'ceiling', 'vmssfs', 'vmssfs JS', 'xmount', 'ratio (vmssfs)', 'target', ''],
    ['1. cold sequential, MiB/s', f0(s.med('seq.direct')), f0(s.med('seq.ceiling')), f0(s.med('seq.vmssfs')), f0(s.med('seq.js')), f0(s.med('seq.xmount')),
      vs('seq'), '>= 1.0x xmount', verdict(s.med('seq.ratio.xmount') >= 1.0)],
    ['2. warm re-read, MiB/s', '', f0(s.med('warm.ceiling')), f0(s.med('warm.vmssfs')), f0(s.med('warm.js')), f0(s.med('warm.xmount')),
      vs('warm'), '>= 0.8x xmount', verdict(s.med('warm.ratio.xmount') >= 0.8)],
    ['3. random 4 KiB first touch, 1 reader, reads/s', '', f0(s.med('rand.ceiling')), f0(s.med('rand.vmssfs')), f0(s.med('rand.js')), f0(s.med('rand.xmount')),
      vs('rand'), '>= 1.0x xmount', verdict(s.med('rand.ratio.xmount') >= 1.0)],
    ['4. random 4 KiB first touch, 4 readers, reads/s', '', '', f0(s.med('rand4.vmssfs')), f0(s.med('rand4.js')), f0(s.med('rand4.xmount')),
      vs('rand4'), '>= 1.3x xmount', verdict(s.med('rand4.ratio.xmount') >= 1.3)],
    ['5. yara, fresh mount vs the source, s', f2(s.med('yara.source')), '', f2(s.med('yara.vmssfs')), f2(s.med('yara.js')), '',
      `${f2(s.med('yara.ratio'))}x source (JS path ${f2(s.med('yara.ratio.js'))}x)`, '<= 1.1x source', verdict(s.med('yara.ratio') <= 1.1)],
    ['6. mount to first stat, ms (8 MiB | 64 GiB)', '', '', `${f0(s.med('mount.8m'))} | ${f0(s.med('mount.64g'))}`, '', '',
      `${f2(s.med('mount.ratio'))} (64 GiB / 8 MiB)`, '<= 1.5', verdict(s.med('mount.ratio') <= 1.5)],
    ['7. daemon peak RSS (VmHWM), MiB', '', '', f0(rssPeak / MiB), '', f0(xmountRssPeak / MiB), '', '< 256 MiB', verdict(rssPeak < 256 * MiB)],
    ['8. diff of two 1 GiB checkpoints, ms (cmp | vmssfs)', '', '', `${f0(s.med('diff.cmp'))} | ${f0(s.med('diff.vmssfs'))}`, '', '',
      `${f2(s.med('diff.ratio'))}x cmp`, '<= 1.5x cmp', verdict(s.med('diff.ratio') <= 1.5)],
    ['9. diff peak RSS, MiB', '', '', f0(diffRssPeak / MiB), '', '', '', '< 128 MiB', verdict(diffRssPeak < 128 * MiB)],
    [`10. mount to first stat, ms (1 | folder of ${FOLDER_SNAPSHOTS}, 64 GiB each)`, '', '', `${f0(s.med('folder.one'))} | ${f0(s.med('folder.all'))}`, '', '',
      `${f2(s.med('folder.ratio'))} (folder / one)`, '<= 1.5', verdict(s.med('folder.ratio') <= 1.5)],
  ];
  if (ONLY.has('crypto')) {
    rows.push(
      [`11. encrypted+compressed 1 GiB (${fmtBytes(encStored)} stored), cold sequential, MB/s`, '', '', f0(s.med('crypto.seq')), '', '',
        `plain vmssfs: ${f0(s.med('crypto.plainseq'))} MB/s`, '>= 400 MB/s', verdict(s.med('crypto.seq') >= 400)],
      ['12. encrypted+compressed, first read of the last page on a cold mount, ms', '', '', f0(s.med('crypto.far')), '', '', '', '< 1000 ms', verdict(s.med('crypto.far') < 1000)],
      [`13. encrypted+compressed daemon peak RSS (VmHWM), MiB, --cache-size ${CRYPTO_CACHE_MIB}`, '', '', f0(encRssPeak / MiB), '', '',
        `${f0(encRssMount / MiB)} at mount + ${f0((encRssPeak - encRssMount) / MiB)} (most grown: ${f0(encRssGrowth / MiB)})`,
        `growth <= cache + ${DECODING_SLACK_MIB} MiB`, verdict(encRssGrowth <= (CRYPTO_CACHE_MIB + DECODING_SLACK_MIB) * MiB)],
    );
  }
  if (ONLY.has('zip')) rows.push(...zipRows(s, zipRss, peers));
  if (HTTP_PART) {
    rows.push(
      ['14. web server (nginx, loopback): sequential physmem.raw, MiB/s', f0(s.med('http.curl')), '', f0(s.med('http.seq')), '', '',
        `${f2(s.med('http.seq.ratio'))}x curl downloading the .vmem (direct column)`, '>= 0.5x curl', verdict(s.med('http.seq.ratio') >= 0.5)],
      [`15. web server: random 4 KiB first touch, reads/s (${HTTP_RANDOM_READS})`, f0(s.med('http.curlrand')), '', f0(s.med('http.rand')), '', '',
        `${f2(s.med('http.rand.ratio'))}x curl's kept-alive ranged GETs (direct column)`, '>= 0.5x curl', verdict(s.med('http.rand.ratio') >= 0.5)],
    );
  }
  // Rows of parts not run would show no figures and a FAIL: left out.
  const ran = (label: string): boolean =>
    !((!PLAIN_PARTS && /^[1-7]\. /.test(label)) || (!ONLY.has('diff') && /^(8|9)\. /.test(label)) || (!ONLY.has('folder') && /^10\. /.test(label)));
  rows.splice(1, rows.length - 1, ...rows.slice(1).filter((r) => ran(r[0] ?? '')));
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
  process.stdout.write('\n' + rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join('  ').trimEnd()).join('\n') + '\n');
  process.stdout.write(`\nper round: ${['seq', 'warm', 'rand', 'rand4'].map((k) => `${k} vmssfs ${s.all(`${k}.vmssfs`).map(f0).join('/')} js ${s.all(`${k}.js`).map(f0).join('/')} ceiling ${s.all(`${k}.ceiling`).map(f0).join('/')} xmount ${s.all(`${k}.xmount`).map(f0).join('/')}`).join('; ')}; yara source ${s.all('yara.source').map(f2).join('/')} vmssfs ${s.all('yara.vmssfs').map(f2).join('/')} js ${s.all('yara.js').map(f2).join('/')} ratio ${s.all('yara.ratio').map(f2).join('/')}; mount 8m ${s.all('mount.8m').map(f0).join('/')} 64g ${s.all('mount.64g').map(f0).join('/')}\n`);
  process.stdout.write(`diff per round: cmp ${s.all('diff.cmp').map(f0).join('/')} vmssfs ${s.all('diff.vmssfs').map(f0).join('/')}; folder mount per round: one ${s.all('folder.one').map(f0).join('/')} folder ${s.all('folder.all').map(f0).join('/')}\n`);
  if (ONLY.has('zip')) process.stdout.write(zipPerRound(s, peers));
  if (HTTP_PART) process.stdout.write(`web server per round: seq vmssfs ${s.all('http.seq').map(f0).join('/')} curl ${s.all('http.curl').map(f0).join('/')} MiB/s; random vmssfs ${s.all('http.rand').map(f0).join('/')} curl ${s.all('http.curlrand').map(f0).join('/')} reads/s\n`);
  if (ONLY.has('crypto')) process.stdout.write(`encrypted+compressed per round: seq ${s.all('crypto.seq').map(f0).join('/')} MB/s (plain ${s.all('crypto.plainseq').map(f0).join('/')}), first far read ${s.all('crypto.far').map(f0).join('/')} ms\n`);
  const failed = rows.slice(1).some((r) => r[8] === 'FAIL');
  return failed ? 1 : 0;
}

process.on('uncaughtException', (err) => {
  process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
  void stopAll().finally(() => process.exit(2));
});

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    void stopAll().finally(() => process.exit(130));
  });
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    void stopAll().finally(() => process.exit(2));
  },
);
