// A user who is not root mounts through fusermount (setuid root), as an analyst on a workstation
// does. Here /dev/fuse is root's, so each case runs in a mount namespace of its own, where a
// device node that user may open covers /dev/fuse and a file of the test's covers /etc/fuse.conf
// (the machine's own is never touched); the user is nobody (setpriv), and runs the real CLI.

import { expect } from 'chai';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { daemonPid } from './helpers/detached';
import { BIN, SAMPLE, scratchDir } from './helpers/paths';
import { runCli, runCommand, type RunResult } from './helpers/run';

const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

/**
 * Run `script` (bash) as nobody in a mount namespace of its own, with a FUSE device nobody may
 * open and `fuseConf` as /etc/fuse.conf. $VMSSFS runs the CLI. Whatever is still mounted when the
 * script ends is unmounted lazily there, and the daemons leave with their mounts.
 */
function asNobody(dir: string, fuseConf: string, script: string): Promise<RunResult> {
  const conf = path.join(dir, `fuse-${Math.random().toString(36).slice(2)}.conf`);
  fs.writeFileSync(conf, fuseConf, { mode: 0o644 });
  const setup = [
    'set -e',
    'dev=$(mktemp -d)',
    'mount -t tmpfs -o mode=755 vmssfs-test-dev "$dev"',
    'mknod -m 666 "$dev/fuse" c 10 229',
    'mount --bind "$dev/fuse" /dev/fuse',
    'mount --bind "$CONF" /etc/fuse.conf',
    'set +e',
    'setpriv "$@" bash -c "$SCRIPT"; rc=$?',
    // Anything the script left mounted under DIR goes with it (lazily: readers may hold it).
    'for m in $(awk \'{print $5}\' /proc/self/mountinfo | grep "^$DIR/"); do fusermount -uz "$m" 2>/dev/null || umount -l "$m"; done',
    'exit $rc',
  ].join('\n');
  const env = { ...process.env, CONF: conf, DIR: dir, SCRIPT: script, VMSSFS: `${process.execPath} ${BIN}` };
  return runCommand('unshare', ['-m', '--propagation', 'private', 'bash', '-c', setup, 'bash', ...NOBODY], { env, timeoutMs: 90_000 });
}

describe('mounting as a user who is not root', function () {
  this.timeout(120_000);
  const scratch = scratchDir('vmssfs-nonroot-');
  let snapshot: string;
  /** A directory for nobody's mountpoints: nobody owns it. */
  let home: string;
  before(() => {
    fs.chmodSync(scratch.dir, 0o755);
    snapshot = scratch.named('shared.vmss');
    fs.copyFileSync(SAMPLE, snapshot);
    fs.chmodSync(snapshot, 0o644);
    home = scratch.named('home');
    fs.mkdirSync(home);
    fs.chownSync(home, 65534, 65534);
  });
  after(async () => {
    // A daemon left behind by a failed case (its namespace lives as long as it does).
    for (const name of fs.existsSync(home) ? fs.readdirSync(home) : []) {
      const pid = daemonPid(path.join(home, name));
      if (pid !== null) process.kill(pid, 'SIGKILL');
    }
  });

  /** A fresh mountpoint owned by nobody. */
  const mountpoint = (name: string): string => {
    const mnt = path.join(home, name);
    fs.mkdirSync(mnt);
    fs.chownSync(mnt, 65534, 65534);
    return mnt;
  };

  it('mounts, reads and unmounts', async () => {
    const mnt = mountpoint('plain');
    const expected = createHash('sha256').update((await runCli(['cat', snapshot, 'config.vmx'])).stdout).digest('hex');
    const r = await asNobody(home, '', [
      'set -e',
      'echo "uid $(id -u)"',
      '$VMSSFS "$SNAP" "$MNT"',
      'grep " $MNT " /proc/self/mountinfo | grep -c " - fuse.vmssfs "',
      'sha256sum "$MNT/config.vmx"',
      'fusermount -u "$MNT"',
      'for i in $(seq 100); do grep -q " $MNT " /proc/self/mountinfo || break; sleep 0.05; done',
      'echo "mounted $(grep -c " $MNT " /proc/self/mountinfo)"',
    ].join('\n').replace(/\$SNAP/g, snapshot).replace(/\$MNT/g, mnt));
    expect(r.code, r.stdout + r.stderr).to.equal(0);
    const out = r.stdout.split('\n');
    expect(out[0]).to.equal('uid 65534');
    expect(out[1], 'the kernel lists the mount').to.equal('1');
    expect(out[2]).to.equal(`${expected}  ${mnt}/config.vmx`);
    expect(out[3], 'fusermount -u took it down').to.equal('mounted 0');
  });

  it('is refused -o allow_other without user_allow_other in /etc/fuse.conf, and says so in one line', async () => {
    const mnt = mountpoint('shared');
    const r = await asNobody(home, '# user_allow_other\n', `$VMSSFS -o allow_other '${snapshot}' '${mnt}'`);
    expect(r.code).to.equal(1);
    const lines = r.stderr.trimEnd().split('\n').filter((l) => !/O_NOATIME/.test(l));
    expect(lines, r.stderr).to.deep.equal([
      `vmssfs: ${mnt}: cannot mount: libfuse or the kernel refused the mount (fusermount: option allow_other only allowed if 'user_allow_other' is set in /etc/fuse.conf)`,
    ]);
  });

  it('without the native addon (VMSSFS_NATIVE=0), finds the same reason by itself', async () => {
    const mnt = mountpoint('fallback');
    const r = await asNobody(home, '', `VMSSFS_NATIVE=0 $VMSSFS -o allow_other '${snapshot}' '${mnt}'`);
    expect(r.code).to.equal(1);
    const lines = r.stderr.trimEnd().split('\n').filter((l) => !/O_NOATIME/.test(l));
    expect(lines, r.stderr).to.deep.equal([
      `vmssfs: ${mnt}: cannot mount: libfuse or the kernel refused the mount (option allow_other only allowed if 'user_allow_other' is set in /etc/fuse.conf)`,
    ]);
  });

  it('mounts with -o allow_other once /etc/fuse.conf has user_allow_other', async () => {
    const mnt = mountpoint('allowed');
    const r = await asNobody(home, 'user_allow_other\n', [
      `$VMSSFS -o allow_other '${snapshot}' '${mnt}'`,
      `grep " ${mnt} " /proc/self/mountinfo | grep " - fuse.vmssfs " | grep -o allow_other`,
      `fusermount -u '${mnt}'`,
    ].join(' && '));
    expect(r.code, r.stdout + r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal('allow_other');
  });

  it('is refused a mountpoint it cannot write, and says so in one line', async () => {
    const mnt = scratch.named('roots');
    fs.mkdirSync(mnt, { mode: 0o755 });
    const r = await asNobody(home, '', `$VMSSFS '${snapshot}' '${mnt}'`);
    expect(r.code).to.equal(1);
    const lines = r.stderr.trimEnd().split('\n').filter((l) => !/O_NOATIME/.test(l));
    expect(lines, r.stderr).to.deep.equal([
      `vmssfs: ${mnt}: cannot mount: libfuse or the kernel refused the mount (fusermount: user has no write access to mountpoint ${mnt})`,
    ]);
  });
});
