import { expect } from 'chai';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeVmFolder } from './helpers/encrypted';
import { scratchDir } from './helpers/paths';
import { runCli } from './helpers/run';
import { writeEncryptedVault } from './helpers/vault';

/** extract's exit status when some files could not be read (the rest were written). */
const INCOMPLETE = 3;

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Cut an encrypted container inside its pages: what lies past the cut cannot be decrypted. */
function cutEncrypted(file: string, pages: number): void {
  fs.truncateSync(file, 4096 + pages * 4096);
}

describe('extract writes everything that can be read, and names what could not be', function () {
  this.timeout(120_000);
  const scratch = scratchDir('vmssfs-extract-partial-');

  it('one checkpoint whose physmem.raw cannot be read: its other files are written, the copy removed, exit 3', async () => {
    const vm = writeVmFolder(scratch.named('one'), { encrypt: true, compress: false, blobPages: 256 });
    cutEncrypted(vm.vmem, 100);
    const out = scratch.named('one-out');
    const r = await runCli(['extract', '--password-file', vm.passwordFile, vm.meta, out], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).to.equal(INCOMPLETE);
    expect(fs.readdirSync(out).sort()).to.deep.equal(['config.vmx', 'groups', 'info.txt', 'metadata.json', 'screenshot.png']);
    expect(fs.readFileSync(path.join(out, 'config.vmx'), 'utf8')).to.include('memsize');
    const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('vmssfs: warning:'));
    expect(lines).to.have.length(2);
    expect(lines[0]).to.satisfy((l: string) => l.startsWith(`vmssfs: ${path.join(out, 'physmem.raw')}: not extracted: ${vm.vmem}: `));
    expect(lines[1]).to.equal('vmssfs: extract incomplete: 1 file could not be read (named above) and was not written; everything else was');
  });

  it('a VM folder with one checkpoint\'s memory unreadable: every other checkpoint is extracted whole', async () => {
    const v = writeEncryptedVault(scratch.named('vault'));
    cutEncrypted(path.join(v.vm.dir, 'vault-Snapshot2.vmem'), 10);
    const out = scratch.named('vault-out');
    const r = await runCli(['extract', '--password-file', v.passwordFile, v.vm.dir, out], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).to.equal(INCOMPLETE);
    expect(fs.readdirSync(out).sort()).to.deep.equal(['after sample', 'clean install', 'clean install~2', 'disk only', 'snapshots.json', 'snapshots.txt', 'suspended']);
    expect(fs.readdirSync(path.join(out, 'after sample')).sort()).to.deep.equal(['config.vmx', 'groups', 'info.txt', 'metadata.json']);
    for (const [dir, uid] of [['clean install', 1], ['clean install~2', 4], ['suspended', 'suspended']] as const) {
      expect(sha256(path.join(out, dir, 'physmem.raw')), dir).to.equal(v.plain.checkpoints.get(uid)?.physSha256());
    }
    expect(r.stderr).to.include(`vmssfs: ${path.join(out, 'after sample', 'physmem.raw')}: not extracted: `);
    expect(r.stderr).to.match(/extract incomplete: 1 file could not be read/);
  });

  it('a PATH that cannot be read is named; the other PATHs are written', async () => {
    const vm = writeVmFolder(scratch.named('paths'), { encrypt: true, compress: false, blobPages: 64 });
    cutEncrypted(vm.vmem, 10);
    const out = scratch.named('paths-out');
    const r = await runCli(['extract', '--password-file', vm.passwordFile, vm.meta, out, 'physmem.raw', 'physmem.elf', 'info.txt'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).to.equal(INCOMPLETE);
    expect(fs.readdirSync(out)).to.deep.equal(['info.txt']);
    expect(r.stderr).to.match(/extract incomplete: 2 files could not be read \(named above\) and were not written; everything else was/);
  });
});
