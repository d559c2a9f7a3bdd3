import { expect } from 'chai';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSnapshot } from './kit/writer';
import { isMounted } from './helpers/mount';
import { REPO, scratchDir } from './helpers/paths';
import { readRange, sha256File } from './helpers/read';
import { runCommand } from './helpers/run';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A PATH holding only node, npm and sh: no compiler, make or python for the install to lean on. */
function bareBin(dir: string): string {
  fs.mkdirSync(dir);
  for (const tool of ['node', 'npm', 'sh']) {
    const found = (process.env.PATH ?? '').split(':').map((d) => path.join(d, tool)).find((f) => fs.existsSync(f));
    if (!found) throw new Error(`${tool} not on PATH`);
    fs.symlinkSync(found, path.join(dir, tool));
  }
  return dir;
}

/** The file the dynamic loader opens for libfuse.so.2 (a bind mount over it hides the library). */
function libfuseFile(): string {
  const line = execFileSync('ldconfig', ['-p'], { encoding: 'utf8' }).split('\n').find((l) => /^\s*libfuse\.so\.2 \(/.test(l));
  return fs.realpathSync(line?.split(' => ')[1]?.trim() ?? 'libfuse.so.2 is not installed');
}

/** npm install -g of the tarball, approving fuse-native's install script as the README says. */
const INSTALL = ['install', '-g', '--allow-scripts=fuse-native', '--prefer-offline', '--no-audit', '--no-fund'];

describe('the package: npm pack, then npm install -g of the tarball on a machine without a compiler', function () {
  this.timeout(180_000);
  const scratch = scratchDir('vmssfs-pack-');
  let tarball: string;
  let bin: string;
  before(async function () {
    this.timeout(150_000);
    const pack = await runCommand('npm', ['pack', REPO, '--pack-destination', scratch.dir, '--silent'], { timeoutMs: 120_000 });
    expect(pack.code, pack.stderr).to.equal(0);
    tarball = path.join(scratch.dir, pack.stdout.trim().split('\n').pop() as string);
    bin = bareBin(scratch.named('bin'));
  });

  it('carries the licence, the format notes and the source maps its scripts name, and no C sources or performance notes', async () => {
    const files = (await runCommand('tar', ['-tzf', tarball])).stdout.trim().split('\n').map((f) => f.replace(/^package\//, ''));
    expect(files).to.include.members(['LICENSE', 'README.md', 'docs/format.md', 'package.json', 'bin/vmssfs', 'dist/src/cli/main.js']);
    expect(files.filter((f) => /^native\/|\.[ch]$|\.gyp$|performance\.md$|^dist\/test|^test\//.test(f))).to.deep.equal([]);
    const licence = (await runCommand('tar', ['-xzOf', tarball, 'package/LICENSE'])).stdout;
    expect(licence).to.match(/^MIT License\n\nCopyright \(c\) \d{4} the vmssfs authors\n/);
    const scripts = files.filter((f) => f.endsWith('.js') && f.startsWith('dist/'));
    expect(scripts.length).to.be.above(50);
    for (const js of scripts) {
      const text = (await runCommand('tar', ['-xzOf', tarball, `package/${js}`])).stdout;
      const url = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(text)?.[1];
      if (url === undefined) continue;
      const map = path.posix.join(path.posix.dirname(js), url);
      expect(files, `${js} names ${url}`).to.include(map);
      const parsed = JSON.parse((await runCommand('tar', ['-xzOf', tarball, `package/${map}`])).stdout) as { sources: string[]; sourcesContent?: string[] };
      expect(parsed.sourcesContent?.length, `${map} carries its sources`).to.equal(parsed.sources.length);
    }
  });

  it('installs where fuse-native cannot load or build (no libfuse.so.2, no compiler): every command but the mount works, and the mount says why not', async () => {
    const prefix = scratch.named('prefix-nofuse');
    // The install runs where libfuse.so.2 cannot load: fuse-native's script finds its prebuilt
    // unusable, cannot build one (no compiler), and npm leaves the optional dependency out.
    const [unshare, mountTool] = ['unshare', 'mount'].map((t) => execFileSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).trim()) as [string, string];
    const install = await runCommand(unshare, ['-m', '--propagation', 'private', 'sh', '-c', `${mountTool} --bind /dev/null "$0" && exec "$@"`, libfuseFile(), 'npm', ...INSTALL, '--prefix', prefix, tarball], { env: { ...process.env, PATH: bin }, timeoutMs: 150_000 });
    expect(install.code, install.stderr).to.equal(0);
    const installed = path.join(prefix, 'lib', 'node_modules', 'vmssfs');
    expect(fs.existsSync(path.join(installed, 'node_modules', 'fuse-native')), 'fuse-native left out').to.equal(false);
    const vmssfs = path.join(prefix, 'bin', 'vmssfs');
    const env = { ...process.env, PATH: `${bin}:/usr/bin:/bin` };
    const version = await runCommand(vmssfs, ['--version'], { env });
    expect(version.stdout, version.stderr).to.match(/^vmssfs \d/);
    const w = writeSnapshot(scratch.file(), { memory: 'embedded', blobPages: 16, regions: [{ ppn: 0, pageNum: 0, pages: 16 }] });
    const ls = await runCommand(vmssfs, ['ls', w.path], { env });
    expect(ls.code, ls.stderr).to.equal(0);
    expect(ls.stdout).to.match(/^physmem\.raw$/m);
    const mnt = scratch.named('mnt-nofuse');
    fs.mkdirSync(mnt);
    const mount = await runCommand(vmssfs, [w.path, mnt], { env });
    expect(mount.code).to.equal(1);
    expect(mount.stderr).to.match(/^vmssfs: cannot mount: fuse-native \(the binding to libfuse\) is not installed .*\n$/);
    expect(await isMounted(mnt)).to.equal(false);
  });

  it('installs, mounts a snapshot, and serves it through the shipped linux-x64 native binary', async () => {
    const prefix = scratch.named('prefix');
    const env = { ...process.env, PATH: bin };
    const install = await runCommand('npm', [...INSTALL, '--prefix', prefix, tarball], { env, timeoutMs: 150_000 });
    expect(install.code, install.stderr).to.equal(0);
    const installed = path.join(prefix, 'lib', 'node_modules', 'vmssfs');
    expect(fs.existsSync(path.join(installed, 'prebuilds', 'linux-x64', 'vmssfs_native.node'))).to.equal(true);
    expect(fs.existsSync(path.join(installed, 'native', 'build')), 'no build output is shipped').to.equal(false);

    const w = writeSnapshot(scratch.file(), { memory: 'embedded', blobPages: 200, regions: [{ ppn: 0, pageNum: 0, pages: 80 }, { ppn: 512, pageNum: 80, pages: 120 }] });
    const mnt = scratch.named('mnt');
    fs.mkdirSync(mnt);
    // fusermount comes from the system, as it would on the user's machine.
    const daemon = spawn(path.join(prefix, 'bin', 'vmssfs'), [w.path, mnt, '-f', '--debug'], { env: { ...process.env, PATH: `${bin}:/usr/bin:/bin` }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    daemon.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((r) => daemon.on('exit', r));
    try {
      for (let i = 0; i < 750 && !(await isMounted(mnt)); i++) await sleep(20);
      expect(await isMounted(mnt), stderr).to.equal(true);
      expect(stderr).to.include(`native reads on (${path.join(installed, 'prebuilds', 'linux-x64', 'vmssfs_native.node')})`);
      expect(await sha256File(path.join(mnt, 'physmem.raw'))).to.equal(w.physSha256());
      // The shipped binary is as new as the sources: a failed read reaches the log. The test's
      // own copy is cut inside the last run, whose bytes end physmem.lime (not read yet, so not
      // in the kernel's cache).
      const last = w.runs[w.runs.length - 1] as { fileOffset: number };
      fs.truncateSync(w.path, last.fileOffset + 4096);
      const lime = path.join(mnt, 'physmem.lime');
      const err = await readRange(lime, (await fs.promises.stat(lime)).size - 4096, 4096).then(() => null, (e: NodeJS.ErrnoException) => e);
      expect(err?.code).to.equal('EIO');
      for (let i = 0; i < 500 && !/file shrank/.test(stderr); i++) await sleep(20);
      expect(stderr).to.match(/read \/physmem\.lime at \d+ .*file shrank/);
      expect((await runCommand('fusermount', ['-u', mnt])).code).to.equal(0);
      expect(await exited).to.equal(0);
      expect(stderr).to.match(/native reads: [1-9]\d* served/);
    } finally {
      if (await isMounted(mnt)) await runCommand('fusermount', ['-uz', mnt]);
      daemon.kill('SIGKILL');
    }
  });
});
