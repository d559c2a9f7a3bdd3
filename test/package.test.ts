import { expect } from 'chai';
import { spawn } from 'node:child_process';
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

describe('the package: npm pack, then npm install -g of the tarball on a machine without a compiler', function () {
  this.timeout(180_000);
  const scratch = scratchDir('vmssfs-pack-');

  it('installs, mounts a snapshot, and serves it through the shipped linux-x64 native binary', async () => {
    const pack = await runCommand('npm', ['pack', REPO, '--pack-destination', scratch.dir, '--silent'], { timeoutMs: 120_000 });
    expect(pack.code, pack.stderr).to.equal(0);
    const tarball = path.join(scratch.dir, pack.stdout.trim().split('\n').pop() as string);
    const bin = bareBin(scratch.named('bin'));
    const prefix = scratch.named('prefix');
    const env = { ...process.env, PATH: bin };
    const install = await runCommand('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball], { env, timeoutMs: 150_000 });
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
