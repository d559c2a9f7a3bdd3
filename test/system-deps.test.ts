// `make system-deps` on machines set up in different ways: a PATH of its own for each, where the
// tools that are "installed" are links to /bin/true, ldconfig prints the loader cache the machine
// would have, and apt-get is a script that writes down what it was asked. Make and the Makefile
// are the real ones.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO, scratchDir } from './helpers/paths';
import { runCommand } from './helpers/run';

const SUITE_TOOLS = ['strings', 'readelf', 'yara', 'getfattr', 'gdb', 'mkfs.ext4', 'losetup', 'mount', 'setpriv', 'unshare', 'nginx', 'curl', 'openssl'];
const LIBFUSE2 = '\tlibfuse.so.2 (libc6,x86-64) => /lib/x86_64-linux-gnu/libfuse.so.2\n';

function which(tool: string): string {
  const found = (process.env.PATH ?? '').split(':').map((d) => path.join(d, tool)).find((f) => fs.existsSync(f));
  if (!found) throw new Error(`${tool} not on PATH`);
  return found;
}

describe('make system-deps', function () {
  this.timeout(60_000);
  const scratch = scratchDir('vmssfs-sysdeps-');
  let n = 0;

  /** Run `make system-deps` on a machine with `tools` and this loader cache; what apt-get was asked, one call a line. */
  async function systemDeps(tools: string[], ldcache: string, aptCache?: string): Promise<{ code: number | null; apt: string[]; stderr: string }> {
    const bin = scratch.named(`bin${n++}`);
    fs.mkdirSync(bin);
    for (const t of ['bash', 'env', 'id', 'node']) fs.symlinkSync(which(t), path.join(bin, t));
    for (const t of tools) fs.symlinkSync('/bin/true', path.join(bin, t));
    const log = path.join(bin, 'apt.log');
    fs.writeFileSync(path.join(bin, 'apt-get'), `#!${which('bash')}\necho "$*" >> ${JSON.stringify(log)}\n`, { mode: 0o755 });
    fs.writeFileSync(path.join(bin, 'ldconfig'), `#!${which('bash')}\nprintf '%s' ${JSON.stringify(ldcache)}\n`, { mode: 0o755 });
    // apt-cache policy PACKAGE, as apt prints it for a package the archive has or has not.
    if (aptCache !== undefined) fs.writeFileSync(path.join(bin, 'apt-cache'), `#!${which('bash')}\n${aptCache}\n`, { mode: 0o755 });
    const r = await runCommand(which('make'), ['-s', '-C', REPO, 'system-deps'], { env: { PATH: bin, HOME: process.env.HOME ?? '/' } });
    const apt = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : [];
    return { code: r.code, apt, stderr: r.stderr };
  }

  it('asks apt for nothing when everything is there', async () => {
    const r = await systemDeps(['fusermount', ...SUITE_TOOLS], LIBFUSE2);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.apt).to.deep.equal([]);
  });

  it('on a machine with fuse3 (fusermount3 and its fusermount link), asks only for the missing tools: never fuse or fuse3, and never lets apt remove a package', async () => {
    const r = await systemDeps(['fusermount3', 'fusermount', ...SUITE_TOOLS.filter((t) => t !== 'yara' && t !== 'gdb')], LIBFUSE2);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.apt[0]).to.equal('update -qq');
    expect(r.apt[1]).to.match(/^install .*--no-remove yara gdb$/);
    expect(r.apt).to.have.length(2);
  });

  it('with fusermount3 alone, installs no FUSE package and says what a user who is not root needs', async () => {
    const r = await systemDeps(['fusermount3', ...SUITE_TOOLS], LIBFUSE2);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.apt).to.deep.equal([]);
    expect(r.stderr).to.match(/only fusermount3 is here; mounting as a user that is not root needs a `fusermount`/);
  });

  it('asks for libfuse2 alone when only the library is missing', async () => {
    const r = await systemDeps(['fusermount3', 'fusermount', ...SUITE_TOOLS], '\tlibfuse3.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libfuse3.so.3\n');
    expect(r.apt[1]).to.match(/^install .* libfuse2$/);
  });

  it('asks for libfuse2t64 where the distribution renamed the library (Debian 13, Ubuntu 24.04), libfuse2 where it did not', async () => {
    const noLib = '\tlibfuse3.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libfuse3.so.3\n';
    const policy = (candidate: string): string =>
      `[ "$2" = libfuse2t64 ] && printf 'libfuse2t64:\\n  Installed: (none)\\n  Candidate: ${candidate}\\n'; exit 0`;
    const trixie = await systemDeps(['fusermount3', 'fusermount', ...SUITE_TOOLS], noLib, policy('2.9.9-9'));
    expect(trixie.code, trixie.stderr).to.equal(0);
    expect(trixie.apt[1]).to.match(/^install .*--no-remove libfuse2t64$/);
    const bookworm = await systemDeps(['fusermount3', 'fusermount', ...SUITE_TOOLS], noLib, policy('(none)'));
    expect(bookworm.apt[1]).to.match(/^install .*--no-remove libfuse2$/);
  });

  it('asks for fuse3 only on a machine without any fusermount', async () => {
    const r = await systemDeps(SUITE_TOOLS, '');
    expect(r.apt[1]).to.match(/^install .*--no-remove libfuse2 fuse3$/);
    expect(r.apt.join('\n')).to.not.match(/\bfuse\b(?!3)/);
  });
});
