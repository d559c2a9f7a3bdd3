// The peers of `make bench`'s compressed-memory rows: public programs fetched beside the project
// (never part of it, never needed to build or test it), run when present, else named as absent.
// - vmem-decrypt's vmem_flatten.py (pure Python): VMware's compressed .vmem flattened to a file,
//   the copying alternative to a mount. Its output must hash as the plain memory does: the peer's
//   decoder follows vmware-vmx's own, so a difference means our writer or its reader disagrees.
// - Volatility 3's banners.Banners over physmem.raw of a fresh mount: a whole-image scan as an
//   analyst runs one. The bench's memory has banners planted at known places (plantBanners).
//
// Where they are looked for: ../vmem-decrypt and ../volatility3 beside the repository, or
// BENCH_VMEM_DECRYPT=dir and BENCH_VOLATILITY=dir; Python is BENCH_PYTHON, else python3 on PATH,
// else /usr/bin/python3. Neither needs a package from outside Python's standard library for this
// (Volatility lists pefile as required, but banners does not import it).

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface Peer {
  /** The peer's directory, or null when absent. */
  dir: string | null;
  /** What the row says when the peer cannot run. */
  absent: string;
}

/** The peer in `env`'s directory or in `name` beside the repository, if it holds `probe`. */
export function findPeer(repo: string, env: string, name: string, probe: string): Peer {
  const given = process.env[env];
  const dir = given ? path.resolve(given) : path.resolve(repo, '..', name);
  const where = given ? `${env}=${given}` : `../${name}`;
  if (!fs.existsSync(path.join(dir, probe))) return { dir: null, absent: `not fetched (${where})` };
  if (!PYTHON) return { dir: null, absent: 'no python3' };
  return { dir, absent: '' };
}

function findPython(): string | null {
  const candidates = [process.env.BENCH_PYTHON, 'python3', '/usr/bin/python3'].filter((p): p is string => !!p);
  return candidates.find((p) => spawnSync(p, ['-c', 'import sys; sys.exit(sys.version_info < (3, 8))'], { stdio: 'ignore' }).status === 0) ?? null;
}

export const PYTHON = findPython();

/** A Python program's wall time (it must exit 0) and its standard output. */
function runPython(args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ seconds: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(PYTHON as string, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (code !== 0) reject(new Error(`${path.basename(args[0] ?? 'python')} exited ${code}: ${stderr.trim().split('\n').slice(-3).join(' / ')}`));
      else resolve({ seconds, stdout });
    });
  });
}

export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    fs.createReadStream(file, { highWaterMark: 1 << 20 })
      .on('data', (b) => h.update(b))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/** vmem_flatten.py of `vmem` into a temporary file in `tmpDir` (deleted after): its wall time and the file's sha256. */
export async function flatten(peer: string, vmem: string, tmpDir: string): Promise<{ seconds: number; sha256: string }> {
  const out = path.join(fs.mkdtempSync(path.join(tmpDir, 'flatten-')), 'flat.vmem');
  try {
    const r = await runPython([path.join(peer, 'vmem_flatten.py'), vmem, out], process.env, 1_200_000);
    return { seconds: r.seconds, sha256: await sha256File(out) };
  } finally {
    fs.rmSync(path.dirname(out), { recursive: true, force: true });
  }
}

/**
 * Linux banners planted in the bench's memory, at offsets of the .vmem: one across a 4 MiB block
 * boundary (and a page boundary) in the memory below the hole, one in the memory above it.
 */
const BANNERS: { at: number; text: string }[] = [
  {
    at: 300 * 1024 * 1024 - 40,
    text: 'Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)',
  },
  {
    at: 700 * 1024 * 1024 + 0x1234,
    text: 'Linux version 6.8.0-45-generic (buildd@lcy02-amd64-075) (x86_64-linux-gnu-gcc-13 (Ubuntu 13.2.0-23ubuntu4) 13.2.0, GNU ld (GNU Binutils for Ubuntu) 2.42) #45-Ubuntu SMP PREEMPT_DYNAMIC Fri Aug 30 12:02:04 UTC 2024',
  },
];

/** Write BANNERS into the memory file `vmem` (as the kernel keeps it: newline, then NUL). */
export function plantBanners(vmem: string): void {
  const fd = fs.openSync(vmem, 'r+');
  try {
    for (const b of BANNERS) {
      const bytes = Buffer.from(`${b.text}\n\0`, 'latin1');
      fs.writeSync(fd, bytes, 0, bytes.length, b.at);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** What banners.Banners must print over physmem.raw: `offset<TAB>banner` lines, `ranges` mapping the .vmem's runs to guest addresses. */
export function expectedBanners(ranges: [number, number][]): string[] {
  return BANNERS.map((b) => {
    let fileAt = 0;
    for (const [phys, len] of ranges) {
      if (b.at < fileAt + len) return `0x${(phys + b.at - fileAt).toString(16)}\t${b.text}`;
      fileAt += len;
    }
    throw new Error(`banner at ${b.at} lies outside the memory`);
  });
}

/**
 * Volatility 3's banners.Banners over `image`: wall time and the `offset<TAB>banner` lines.
 * Offline, its cache under `home` (Volatility keeps it in ~/.cache/volatility3).
 */
export async function volBanners(peer: string, image: string, home: string): Promise<{ seconds: number; banners: string[] }> {
  fs.mkdirSync(home, { recursive: true });
  const env = { ...process.env, HOME: home, XDG_CACHE_HOME: path.join(home, '.cache') };
  const r = await runPython([path.join(peer, 'vol.py'), '-q', '--offline', '-f', image, 'banners.Banners'], env, 1_200_000);
  return { seconds: r.seconds, banners: r.stdout.split('\n').filter((l) => /^0x[0-9a-f]+\t/.test(l)) };
}
