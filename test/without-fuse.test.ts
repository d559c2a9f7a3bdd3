// A machine without FUSE 2 (a container, a server, a desktop with only FUSE 3's library), or an
// install where npm left fuse-native out: every command but the mount works, and the mount says
// in one line what is missing. Each case runs the real CLI in a private mount namespace where
// libfuse.so.2 (or fuse-native itself) is hidden, so the library really cannot load.

import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isMounted } from './helpers/mount';
import { BIN, REPO, SAMPLE, scratchDir } from './helpers/paths';
import { runCommand, type RunResult } from './helpers/run';

/** The file the dynamic loader opens for libfuse.so.2 (a symbolic link resolved: a bind mount covers its target). */
function libfuseFile(): string {
  const line = execFileSync('ldconfig', ['-p'], { encoding: 'utf8' }).split('\n').find((l) => /^\s*libfuse\.so\.2 \(/.test(l));
  const found = line?.split(' => ')[1]?.trim();
  if (!found) throw new Error('libfuse.so.2 is not installed here: `make build` installs it');
  return fs.realpathSync(found);
}

/**
 * `vmssfs ARGS` with `hidden` covered by `cover` in a mount namespace of its own (nothing outside
 * it sees the change): /dev/null over a library, which the loader then refuses as too short.
 */
function runHiding(hidden: string, cover: string, args: string[]): Promise<RunResult> {
  return runCommand('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" "$1" && shift 2 && exec "$@"', cover, hidden, process.execPath, BIN, ...args], { timeoutMs: 60_000 });
}

function expectOneLine(r: RunResult, what: RegExp): void {
  expect(r.code, r.stderr).to.equal(1);
  expect(r.stderr.trimEnd().split('\n'), r.stderr).to.have.length(1);
  expect(r.stderr).to.match(what);
  expect(r.stderr).to.not.match(/\n\s+at |internal error/);
}

describe('without libfuse.so.2', function () {
  this.timeout(120_000);
  const scratch = scratchDir('vmssfs-nofuse-');
  const withoutLibfuse = (args: string[]) => runHiding(libfuseFile(), '/dev/null', args);

  it('the library really cannot load there (fuse-native fails as it would on such a machine)', async () => {
    const r = await runCommand('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount --bind /dev/null "$0" && exec "$@"', libfuseFile(), process.execPath, '-e', `require(${JSON.stringify(path.join(REPO, 'node_modules', 'fuse-native'))})`]);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/libfuse\.so\.2/);
  });

  it('--version and --help work', async () => {
    const v = await withoutLibfuse(['--version']);
    expect(v.code, v.stderr).to.equal(0);
    expect(v.stdout).to.match(/^vmssfs \d+\.\d+\.\d+\n$/);
    const h = await withoutLibfuse(['--help']);
    expect(h.code, h.stderr).to.equal(0);
    expect(h.stdout).to.match(/^usage:/);
  });

  it('info, ls and cat read the snapshot', async () => {
    const info = await withoutLibfuse(['info', SAMPLE]);
    expect(info.code, info.stderr).to.equal(0);
    expect(info.stdout).to.match(/^Magic: 0x/);
    const ls = await withoutLibfuse(['ls', SAMPLE]);
    expect(ls.code, ls.stderr).to.equal(0);
    expect(ls.stdout.split('\n')).to.include.members(['physmem.raw', 'info.txt', 'groups']);
    const cat = await withoutLibfuse(['cat', SAMPLE, 'info.txt']);
    expect(cat.code, cat.stderr).to.equal(0);
    expect(cat.stdout).to.equal(info.stdout);
  });

  it('extract writes the files and diff compares two checkpoints', async () => {
    const out = scratch.named('out');
    const x = await withoutLibfuse(['extract', SAMPLE, out, 'info.txt', 'groups']);
    expect(x.code, x.stderr).to.equal(0);
    expect(fs.readFileSync(path.join(out, 'info.txt'), 'utf8')).to.match(/^Magic: 0x/);
    expect(fs.readdirSync(path.join(out, 'groups')).length).to.be.above(0);
    const d = await withoutLibfuse(['diff', SAMPLE, SAMPLE]);
    expect(d.code, d.stderr).to.equal(0);
    expect(d.stdout).to.match(/changed 0 /);
  });

  it('a mount says in one line that libfuse.so.2 is missing and how to install it, and mounts nothing', async () => {
    const mnt = scratch.named('mnt');
    fs.mkdirSync(mnt);
    const r = await withoutLibfuse([SAMPLE, mnt]);
    expectOneLine(r, /^vmssfs: cannot mount: libfuse\.so\.2 \(the FUSE 2 library\) cannot be loaded \(libfuse\.so\.2: .*\): install it \(Debian, Ubuntu: apt-get install libfuse2.*info, ls, cat, extract and diff work without it\n$/);
    expect(await isMounted(mnt)).to.equal(false);
  });
});

describe('without fuse-native (npm left the optional dependency out)', function () {
  this.timeout(120_000);
  const scratch = scratchDir('vmssfs-nobinding-');
  // An empty directory over the installed package: Node finds no fuse-native anywhere.
  const withoutBinding = (args: string[]) => runHiding(path.join(REPO, 'node_modules', 'fuse-native'), scratch.dir, args);

  it('info works, and a mount says in one line that fuse-native is not installed', async () => {
    const info = await withoutBinding(['info', '--json', SAMPLE]);
    expect(info.code, info.stderr).to.equal(0);
    expect((JSON.parse(info.stdout) as { magic: number }).magic).to.be.a('number');
    const mnt = path.join(scratch.dir, '..', `${path.basename(scratch.dir)}-mnt`);
    fs.mkdirSync(mnt);
    try {
      const r = await withoutBinding([SAMPLE, mnt]);
      expectOneLine(r, /^vmssfs: cannot mount: fuse-native \(the binding to libfuse\) is not installed .*info, ls, cat, extract and diff work without it\n$/);
      expect(await isMounted(mnt)).to.equal(false);
    } finally {
      fs.rmdirSync(mnt);
    }
  });
});
