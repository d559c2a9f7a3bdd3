import { expect } from 'chai';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SnapshotsJson } from '../src/evidence/folder/report';
import { cmpFiles, daemonPid, expectNoSecrets, PASSWORD, secretsOf } from './helpers/encrypted';
import { isMounted, TestMount } from './helpers/mount';
import { BIN, tempDir } from './helpers/paths';
import { sha256File } from './helpers/read';
import { runCli, runCommand } from './helpers/run';
import { chain, CHANGED, pageRanges, VAULT_CHAIN, writeEncryptedVault, type EncryptedVault } from './helpers/vault';

/** The served checkpoints of the vault: directory, and the writer's key for its plaintext. */
const SERVED: [string, number | 'suspended'][] = [['clean install', 1], ['after sample', 2], ['clean install~2', 4], ['suspended', 'suspended']];

const STRAY = 'vault-stray.vmss';

/** The encrypted vault's: the .vmss the .vmx does not name is served by its file name. */
const ENC_CHAIN = [...VAULT_CHAIN, ['vault-stray', null, null, null, false, false, false]];

describe('VM folder of an encrypted VM', function () {
  this.timeout(120_000);
  const tmp = tempDir('vmssfs-encfolder-');
  let v: EncryptedVault;
  let vmDir: string;
  let secrets: string[];
  const hashesBefore = new Map<string, string>();
  const mounts: TestMount[] = [];

  before(async () => {
    // The .vmsd encrypted too, and checkpoint.vmState only in the encrypted configuration.
    v = writeEncryptedVault(tmp.dir, { encryptVmsd: true });
    vmDir = v.vm.dir;
    // A newer .vmss the .vmx does not name: taken for the suspended state only if the encrypted
    // configuration's checkpoint.vmState went unread.
    fs.copyFileSync(path.join(vmDir, 'vault-Snapshot1.vmsn'), path.join(vmDir, STRAY));
    const later = new Date(Date.now() + 3600_000);
    fs.utimesSync(path.join(vmDir, STRAY), later, later);
    secrets = secretsOf(v.keyHex);
    for (const f of fs.readdirSync(vmDir)) hashesBefore.set(f, await sha256File(path.join(vmDir, f)));
  });
  after(async () => {
    for (const m of mounts) await m.unmount();
    // Evidence is sacred: the encrypted folder is bit-identical afterwards, and nothing was added to it.
    expect(fs.readdirSync(vmDir).sort()).to.deep.equal([...hashesBefore.keys()].sort());
    for (const [f, h] of hashesBefore) expect(await sha256File(path.join(vmDir, f)), f).to.equal(h);
    tmp.cleanup();
  });

  it('the writer wrote what VMware stores: encobj files, a key safe, checkpoint.vmState only inside encryption.data', () => {
    expect(v.vm.encrypted).to.include.members(['vault.vmsd', 'vault-Snapshot1.vmsn', 'vault-Snapshot1.vmem', 'vault-3-3c85c1f6.vmss']);
    for (const f of v.vm.encrypted) expect(fs.readFileSync(path.join(vmDir, f)).readUInt32LE(0), f).to.equal(0x8943dd9e);
    const vmx = fs.readFileSync(v.vm.vmx, 'utf8');
    expect(vmx).to.match(/encryption\.keySafe = /).and.match(/encryption\.data = /);
    expect(vmx).to.not.match(/checkpoint\.vmState/i);
  });

  it('mounts with --password-file: every checkpoint\'s physmem.raw is the plaintext\'s, the tree and the chain as the plain folder\'s', async () => {
    const m = await TestMount.start(vmDir, ['--password-file', v.passwordFile]);
    mounts.push(m);
    const p = await TestMount.start(v.plain.dir);
    mounts.push(p);
    expect((await fs.promises.readdir(m.mountpoint)).sort()).to.deep.equal([...(await fs.promises.readdir(p.mountpoint)), 'vault-stray'].sort());
    for (const [dir, key] of SERVED) {
      expect(await sha256File(m.path(dir, 'physmem.raw')), dir).to.equal(v.plain.checkpoints.get(key)?.physSha256());
    }
    for (const f of ['after sample/config.vmx', 'suspended/groups/cpu/rip[0]', 'clean install~2/physmem.elf']) {
      expect(await cmpFiles(m.path(f), p.path(f)), f).to.equal(null);
    }
    const json = JSON.parse(await fs.promises.readFile(m.path('snapshots.json'), 'utf8')) as SnapshotsJson;
    expect(chain(json)).to.deep.equal(ENC_CHAIN);
    expect([json.vmx, json.vmsd, json.current]).to.deep.equal(['vault.vmx', 'vault.vmsd', 'after sample']);
    expect(json.checkpoints[5]?.files).to.deep.equal(['vault-3-3c85c1f6.vmss', 'vault-3-3c85c1f6.vmem']);
    expect(json.encryption).to.deep.equal({
      keyFrom: 'password', vmx: v.vm.vmx, cipher: 'XTS-AES-256', rounds: 1000,
      files: ['vault.vmsd', 'vault-Snapshot1.vmsn', 'vault-Snapshot1.vmem', 'vault-Snapshot2.vmsn', 'vault-Snapshot2.vmem', 'vault-Snapshot3.vmsn',
        'vault-Snapshot4.vmsn', 'vault-Snapshot4.vmem', 'vault-3-3c85c1f6.vmss', 'vault-3-3c85c1f6.vmem', STRAY],
    });
    const txt = await fs.promises.readFile(m.path('snapshots.txt'), 'utf8');
    expect(txt).to.include(`Encrypted: vault.vmsd, vault-Snapshot1.vmsn`).and.include(`decrypted with the key safe of ${v.vm.vmx} (XTS-AES-256, 1000 PBKDF2 rounds) and the password`);
    const meta = JSON.parse(await fs.promises.readFile(m.path('suspended', 'metadata.json'), 'utf8')) as { encryption: unknown };
    expect(meta.encryption).to.deep.equal({
      keyFrom: 'password', vmx: v.vm.vmx, cipher: 'XTS-AES-256', rounds: 1000,
      files: [path.join(vmDir, 'vault-3-3c85c1f6.vmss'), path.join(vmDir, 'vault-3-3c85c1f6.vmem')],
    });
    for (const f of ['snapshots.json', 'snapshots.txt', ...SERVED.flatMap(([d]) => [`${d}/metadata.json`, `${d}/info.txt`])]) {
      expectNoSecrets(await fs.promises.readFile(m.path(f), 'utf8'), secrets, f);
    }
    expectNoSecrets(m.stderr, secrets, 'the mount\'s warnings');
  });

  it('the detached daemon gets the key through a pipe: no secret in its command line or environment; --debug shows none', async () => {
    const { dir, cleanup } = tempDir('vmssfs-mnt-');
    try {
      const r = await runCli([vmDir, dir, '--password-file', v.passwordFile]);
      expect(r.code, r.stderr).to.equal(0);
      try {
        const pid = daemonPid(dir);
        expect(pid, 'daemon found').to.not.equal(null);
        const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        expect(cmdline).to.include('--keys-from-parent');
        expect(cmdline).to.not.include(v.passwordFile);
        expectNoSecrets(cmdline, secrets, 'daemon cmdline');
        expectNoSecrets(fs.readFileSync(`/proc/${pid}/environ`, 'utf8'), secrets, 'daemon environment');
        expectNoSecrets(r.stderr, secrets, 'mount command output');
        // The daemon found the suspended state through the decrypted configuration it was handed.
        expect(await sha256File(path.join(dir, 'suspended', 'physmem.raw'))).to.equal(v.plain.checkpoints.get('suspended')?.physSha256());
        const json = JSON.parse(await fs.promises.readFile(path.join(dir, 'snapshots.json'), 'utf8')) as SnapshotsJson;
        expect(chain(json)).to.deep.equal(ENC_CHAIN);
      } finally {
        await runCommand('fusermount', ['-u', dir]);
        for (let i = 0; i < 100 && (await isMounted(dir)); i++) await new Promise((res) => setTimeout(res, 50));
        if (await isMounted(dir)) await runCommand('fusermount', ['-uz', dir]);
      }
    } finally {
      cleanup();
    }
    const m = await TestMount.start(vmDir, ['--debug', '--password-file', v.passwordFile]);
    mounts.push(m);
    await fs.promises.readFile(m.path('after sample', 'config.vmx'));
    await fs.promises.readFile(m.path('snapshots.json'));
    await m.unmount();
    expect(m.stderr).to.include('page cache:');
    expectNoSecrets(m.stderr, secrets, '--debug output');
  });

  it('info, ls, cat and extract take the folder and the key options', async () => {
    const info = await runCli(['info', '--password-file', v.passwordFile, vmDir]);
    expect(info.code, info.stderr).to.equal(0);
    expect(info.stdout).to.match(/├─ after sample {2}2023-11-14 23:00:00 {2}memory {2}\(current\)/);
    expect(info.stdout).to.include(`decrypted with the key safe of ${v.vm.vmx} (XTS-AES-256, 1000 PBKDF2 rounds) and the password`);
    const j = await runCli(['info', '--json', '--password-file', v.passwordFile, vmDir]);
    const json = JSON.parse(j.stdout) as SnapshotsJson;
    expect(chain(json)).to.deep.equal(ENC_CHAIN);
    expect(json.encryption).to.include({ keyFrom: 'password', vmx: v.vm.vmx });
    const ls = await runCli(['ls', '--password-file', v.passwordFile, vmDir, 'suspended']);
    expect(ls.code, ls.stderr).to.equal(0);
    expect(ls.stdout.split('\n')).to.include.members(['physmem.raw', 'info.txt', 'metadata.json', 'config.vmx']);
    const cat = await runCli(['cat', '--password-file', v.passwordFile, vmDir, 'after sample/groups/cpu/rip[0]']);
    expect(cat.stdout).to.equal('0xfffff80002c1c0ba\n');
    const out = path.join(tmp.dir, 'out');
    const x = await runCli(['extract', '--password-file', v.passwordFile, vmDir, out, 'suspended/physmem.raw', 'snapshots.json']);
    expect(x.code, x.stderr).to.equal(0);
    expect(await sha256File(path.join(out, 'suspended', 'physmem.raw'))).to.equal(v.plain.checkpoints.get('suspended')?.physSha256());
    for (const r of [info, j, ls, cat, x]) expectNoSecrets(r.stdout + r.stderr, secrets, 'command output');
  });

  it('diff VMDIR:A VMDIR:B finds the pages the writer changed', async () => {
    const r = await runCli(['diff', '--json', '--key', v.keyHex, `${vmDir}:clean install`, `${vmDir}:after sample`], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).to.equal(0);
    const d = JSON.parse(r.stdout) as { changed: unknown[]; counts: unknown };
    expect(d.changed).to.deep.equal(pageRanges(CHANGED.afterSample));
    expect(d.counts).to.deep.equal({ compared: 256, changed: CHANGED.afterSample.length, onlyA: 0, onlyB: 0, unreadable: 0 });
    const s = await runCli(['diff', '--json', '--password-file', v.passwordFile, `${vmDir}:after sample`, `${vmDir}:suspended`], { timeoutMs: 60_000 });
    expect(s.code, s.stderr).to.equal(0);
    expect((JSON.parse(s.stdout) as { changed: unknown[] }).changed).to.deep.equal(pageRanges(CHANGED.suspended));
    expectNoSecrets(r.stdout + r.stderr + s.stdout + s.stderr, secrets, 'diff output');
  });

  it('--key opens the files but not the key safe: the suspended state is the folder\'s newest .vmss, said in a warning', async () => {
    const r = await runCli(['info', '--json', '--key', v.keyHex, vmDir]);
    expect(r.code, r.stderr).to.equal(0);
    const json = JSON.parse(r.stdout) as SnapshotsJson;
    expect(json.checkpoints.map((c) => [c.directory, c.kind, c.files[0]]).slice(5)).to.deep.equal([
      ['suspended', 'suspended', STRAY],
      ['vault-3-3c85c1f6', 'found', 'vault-3-3c85c1f6.vmss'],
    ]);
    expect(json.encryption).to.deep.include({ keyFrom: '--key' });
    expect(json.encryption).to.not.have.property('vmx');
    expect(json.warnings.join('\n')).to.match(/checkpoint\.vmState is not in its plain text.*--key opens the data files, not the key safe/);
  });

  it('on a terminal, with no password given, asks for the folder\'s .vmx\'s password once, without echo (script(1) provides the terminal)', async () => {
    const child = spawn('script', ['-qec', `node ${BIN} info ${vmDir}`, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let asked = 0;
    const done = new Promise<number | null>((resolve) => child.on('close', resolve));
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      // Type only once asked: echo is off by then.
      const n = out.split('Password for vault.vmx: ').length - 1;
      if (n > asked) {
        asked = n;
        child.stdin.write(`${PASSWORD}\n`);
      }
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const code = await done;
    clearTimeout(timer);
    expect(code, out).to.equal(0);
    expect(asked).to.equal(1);
    expect(out).to.include('Encrypted: vault.vmsd');
    expectNoSecrets(out, secrets, 'the terminal');
  });

  it('no key material: exit 1, one line naming the encryption, --password-file, --key and --vmx; nothing mounted', async () => {
    for (const args of [['info', vmDir], ['ls', vmDir], ['cat', vmDir, 'snapshots.json'], ['extract', vmDir, path.join(tmp.dir, 'nokey')], ['diff', `${vmDir}:clean install`, `${vmDir}:after sample`]]) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).to.equal(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).to.have.length(1);
      expect(lines[0]).to.match(/encrypted/).and.match(/--password-file/).and.match(/--key/).and.match(/--vmx/);
    }
    const { dir, cleanup } = tempDir('vmssfs-mnt-');
    try {
      const r = await runCli([vmDir, dir]);
      expect(r.code).to.equal(1);
      expect(r.stderr.trim().split('\n')).to.have.length(1);
      expect(r.stderr).to.match(/encrypted.*--password-file.*--key.*--vmx/);
      expect(await isMounted(dir)).to.equal(false);
    } finally {
      cleanup();
    }
  });

  it('a wrong password: exit 1, "wrong password", for the commands and the mount', async () => {
    const pw = path.join(tmp.dir, 'wrong.txt');
    fs.writeFileSync(pw, 'not it\n');
    const want = `vmssfs: ${v.vm.vmx}: wrong password (the key safe's HMAC does not match)\n`;
    for (const args of [['info', '--password-file', pw, vmDir], ['diff', '--password-file', pw, `${vmDir}:clean install`, `${vmDir}:after sample`]]) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).to.equal(1);
      expect(r.stderr).to.equal(want);
    }
    const { dir, cleanup } = tempDir('vmssfs-mnt-');
    try {
      const r = await runCli([vmDir, dir, '--password-file', pw]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.equal(want);
      expect(await isMounted(dir)).to.equal(false);
    } finally {
      cleanup();
    }
  });

  it('a wrong --key: exit 1 in one line, the key is wrong (not every checkpoint damaged)', async () => {
    const r = await runCli(['info', '--key', '00'.repeat(32), vmDir]);
    expect(r.code).to.equal(1);
    expect(r.stderr.trim().split('\n'), r.stderr).to.have.length(1);
    expect(r.stderr).to.match(/decrypted, it is not a VMware checkpoint: the key is wrong/);
  });
});

describe('VM folder of an encrypted VM: its plain .vmsd and checkpoint.vmState, --vmx', function () {
  this.timeout(60_000);
  const tmp = tempDir('vmssfs-encfolder2-');
  let v: EncryptedVault;
  before(() => {
    v = writeEncryptedVault(tmp.dir, { vmState: 'plain', cipher: 'AES-256' });
  });
  after(() => tmp.cleanup());

  it('reads a plain .vmsd beside encrypted checkpoints; the .vmx given with --vmx is the one named', async () => {
    const elsewhere = path.join(tmp.dir, 'keys.vmx');
    fs.copyFileSync(v.vm.vmx, elsewhere);
    const r = await runCli(['info', '--json', '--password-file', v.passwordFile, '--vmx', elsewhere, v.vm.dir]);
    expect(r.code, r.stderr).to.equal(0);
    const json = JSON.parse(r.stdout) as SnapshotsJson;
    expect(chain(json)).to.deep.equal(VAULT_CHAIN);
    expect(json.encryption).to.include({ keyFrom: 'password', vmx: elsewhere, cipher: 'AES-256' });
    expect(json.encryption?.files).to.not.include('vault.vmsd');
    expect(json.warnings.join('\n')).to.not.match(/checkpoint\.vmState/);
  });
});
