// Encrypted VMs that are damaged or cut short: every byte that can be decrypted is served, and
// each error names the real cause (a truncated copy, a damaged key safe, two keys), never a
// shrinking file or a wrong key that is not.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { InfoJson } from '../src/evidence/info';
import { writeVmFolder, type VmFolder } from './helpers/encrypted';
import { TestMount } from './helpers/mount';
import { tempDir } from './helpers/paths';
import { runCli, runCommand } from './helpers/run';

/** Run cat(1) on a mounted file into `out`: its exit status and message. */
async function catInto(file: string, out: string): Promise<{ code: number | null; stderr: string }> {
  const r = await runCommand('sh', ['-c', 'cat "$1" > "$2"', 'sh', file, out]);
  return { code: r.code, stderr: r.stderr };
}

describe('encrypted VMs damaged or cut short', function () {
  this.timeout(120_000);
  const tmp = tempDir('vmssfs-encdmg-');
  const mounts: TestMount[] = [];
  after(async () => {
    for (const m of mounts) await m.unmount();
    tmp.cleanup();
  });

  /** A fresh encrypted VM folder under `name`, memory in the clear 1 MiB. */
  const vmFolder = (name: string): VmFolder => writeVmFolder(path.join(tmp.dir, name), { encrypt: true, compress: false, blobPages: 256, rounds: 500 });

  describe('a .vmsn cut short', () => {
    for (const size of [100, 4096, 6000]) {
      it(`cut to ${size} bytes (no whole encrypted page left): says it is cut short, not that the right password's key is wrong`, async () => {
        const vm = vmFolder(`short-${size}`);
        fs.truncateSync(vm.meta, size);
        const r = await runCli(['info', '--password-file', vm.passwordFile, vm.meta]);
        expect(r.code).to.equal(1);
        expect(r.stderr.trim().split('\n')).to.have.length(1);
        expect(r.stderr).to.match(/VM-Snapshot1\.vmsn: cut short/).and.match(/truncated copy/);
        expect(r.stderr).to.not.match(/key is wrong/);
      });
    }

    it('inside the screenshot: screenshot.png serves its intact pages, then EIO naming the truncated copy, not a file that shrank', async () => {
      const vm = vmFolder('screenshot');
      // Two encrypted pages left: plaintext bytes [0, 8128) of the .vmsn.
      fs.truncateSync(vm.meta, 4096 + 2 * 4096 + 100);
      const png = vm.plain.groups.flatMap((g) => g.tags).find((t) => t.name === 'imageData')!;
      expect(png.dataOffset + 4096).to.be.below(8128);
      expect(png.dataOffset + png.size).to.be.above(8128);
      const plainPng = fs.readFileSync(vm.plain.path).subarray(png.dataOffset, png.dataOffset + png.size);
      const m = await TestMount.start(vm.meta, ['--password-file', vm.passwordFile]);
      mounts.push(m);
      const out = path.join(tmp.dir, 'screenshot.out');
      const r = await catInto(m.path('screenshot.png'), out);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/Input\/output error/);
      // The mount answers in whole pages: every page before the one holding the cut.
      expect(fs.readFileSync(out).equals(plainPng.subarray(0, 4096))).to.equal(true);
      expect(await m.stderrShows(/read \/screenshot\.png .*VM-Snapshot1\.vmsn: bytes 8128-\d+ cannot be read: .*truncated copy/)).to.equal(true);
      expect(m.stderr).to.not.match(/shrank/);
      const c = await runCli(['cat', '--password-file', vm.passwordFile, vm.meta, 'screenshot.png']);
      expect(c.code).to.equal(1);
      expect(c.stderr).to.match(/vmssfs: .*VM-Snapshot1\.vmsn: bytes 8128-\d+ cannot be read: .*truncated copy/);
      expect(c.stderr).to.not.match(/shrank/);
    });
  });

  it('a .vmem cut short, through the mount: every whole page before the cut is served, then EIO naming the truncated copy', async () => {
    const vm = vmFolder('vmem');
    // 100 encrypted pages left: plaintext [0, 406400), guest-physical page 99 holds the cut.
    fs.truncateSync(vm.vmem, 4096 + 100 * 4096);
    const m = await TestMount.start(vm.meta, ['--password-file', vm.passwordFile]);
    mounts.push(m);
    const out = path.join(tmp.dir, 'physmem.out');
    const r = await catInto(m.path('physmem.raw'), out);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/Input\/output error/);
    const got = fs.readFileSync(out);
    expect(got.length).to.equal(99 * 4096);
    expect(got.equals(fs.readFileSync(vm.plain.vmemPath as string).subarray(0, 99 * 4096))).to.equal(true);
    expect(await m.stderrShows(/VM-Snapshot1\.vmem: bytes 406400-\d+ cannot be read: .*truncated copy/)).to.equal(true);
    expect(m.stderr).to.not.match(/shrank/);
  });

  it('a damaged key safe with the right password: says the key safe may be damaged, as well as the password wrong', async () => {
    const vm = vmFolder('keysafe');
    const vmx = fs.readFileSync(vm.vmx as string, 'utf8');
    // One base64 letter of the key safe's dictionary changed (a bit flip on disk). The dictionary
    // is percent-encoded ('/' is %2f): a letter inside an escape would make it not base64 at all.
    let at = vmx.lastIndexOf(',') + 1;
    for (let seen = 0; seen < 20 || !/[A-Za-z0-9]/.test(vmx[at] as string); seen++) at += vmx[at] === '%' ? 3 : 1;
    const c = vmx[at] as string;
    expect(c).to.match(/[A-Za-z0-9]/);
    fs.writeFileSync(vm.vmx as string, vmx.slice(0, at) + (c === 'A' ? 'B' : 'A') + vmx.slice(at + 1));
    const r = await runCli(['info', '--password-file', vm.passwordFile, vm.meta]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.equal(`vmssfs: ${vm.vmx}: wrong password, or the key safe is damaged (its HMAC does not match)\n`);
  });

  it('diff of two VMs keyed differently: says that one key opens both sides, and does not send the user to --vmx', async () => {
    const a = vmFolder('diff-a');
    const b = vmFolder('diff-b');
    const r = await runCli(['diff', '--password-file', a.passwordFile, a.meta, b.meta]);
    expect(r.code).to.equal(1);
    expect(r.stderr.trim().split('\n')).to.have.length(1);
    expect(r.stderr).to.match(/diff opens both sides with one key/);
    expect(r.stderr).to.not.match(/--vmx/);
  });

  it('info and metadata.json say that the integrity of decrypted bytes is not verified', async () => {
    const vm = vmFolder('integrity');
    const text = await runCli(['info', '--password-file', vm.passwordFile, vm.meta]);
    expect(text.code, text.stderr).to.equal(0);
    expect(text.stdout).to.match(/^Integrity: not verified: /m);
    const j = JSON.parse((await runCli(['info', '--json', '--password-file', vm.passwordFile, vm.meta])).stdout) as InfoJson;
    expect(j.encryption?.integrity).to.match(/^not verified: /);
    const m = await TestMount.start(vm.meta, ['--password-file', vm.passwordFile]);
    mounts.push(m);
    const meta = JSON.parse(await fs.promises.readFile(m.path('metadata.json'), 'utf8')) as InfoJson;
    expect(meta.encryption?.integrity).to.equal(j.encryption?.integrity);
    expect(await fs.promises.readFile(m.path('info.txt'), 'utf8')).to.match(/^Integrity: not verified: /m);
  });
});
