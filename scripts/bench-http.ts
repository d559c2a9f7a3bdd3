// The web server rows of `make bench` (BENCH_ONLY=http runs only them): vmssfs reading a 1 GiB
// guest from nginx over loopback, set against curl on the same server, in the same round:
// - a sequential read of physmem.raw against curl downloading the .vmem;
// - random 4 KiB first touches of physmem.raw against one curl fetching the same number of
//   random 4 KiB ranges of the .vmem over one kept-alive connection (a config of --next entries).

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Nginx } from '../test/kit/web-server';

export { Nginx };

/** Random first touches per round, for vmssfs and for curl alike. */
export const HTTP_RANDOM_READS = Number(process.env.BENCH_HTTP_RANDOM_READS ?? 4000) || 4000;

function runCurl(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; seconds: number }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn('curl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, seconds: Number(process.hrtime.bigint() - t0) / 1e9 }));
  });
}

/** curl downloading `url` whole to /dev/null: MiB/s. */
export async function curlDownload(url: string, size: number): Promise<number> {
  const r = await runCurl(['-sS', '--fail', '-o', '/dev/null', '-w', '%{size_download}', url]);
  if (r.code !== 0 || Number(r.stdout) !== size) throw new Error(`curl ${url} failed (${r.code}): ${r.stderr.trim()} ${r.stdout}`);
  return size / (1024 * 1024) / r.seconds;
}

/**
 * One curl fetching `count` random distinct 4 KiB pages of `url` (of `size` bytes) with ranged
 * GETs over one kept-alive connection: reads/s.
 */
export async function curlRandomRanges(url: string, size: number, count: number, seed: number, dir: string): Promise<number> {
  const pages = Math.floor(size / 4096);
  let x = BigInt(seed) * 0x9e3779b97f4a7c15n + 1n;
  const mask = (1n << 64n) - 1n;
  const seen = new Set<number>();
  const lines: string[] = [];
  while (seen.size < Math.min(count, pages)) {
    x ^= (x << 13n) & mask;
    x ^= x >> 7n;
    x ^= (x << 17n) & mask;
    const p = Number(x % BigInt(pages));
    if (seen.has(p)) continue;
    seen.add(p);
    lines.push(`url = "${url}"`, `range = "${p * 4096}-${p * 4096 + 4095}"`, 'output = "/dev/null"', 'next');
  }
  lines.pop(); // no `next` after the last
  const cfg = path.join(dir, `curl-random-${seed}.cfg`);
  fs.writeFileSync(cfg, lines.join('\n') + '\n');
  const r = await runCurl(['-sS', '--fail', '-K', cfg]);
  fs.rmSync(cfg, { force: true });
  if (r.code !== 0) throw new Error(`curl's ranged GETs failed (${r.code}): ${r.stderr.trim()}`);
  return seen.size / r.seconds;
}
