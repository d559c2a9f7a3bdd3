import { expect } from 'chai';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeKeyChain, encryptFile } from './kit/encrypted-vm';
import { dataFileKeyFromVmx, parseKeySafe, unlockKeySafe } from '../src/crypto/keysafe';
import { parseDictionary } from '../src/format/dictionary';
import { VmssError } from '../src/errors';
import { EncObjSource } from '../src/io/encobj';
import { INTEGRITY } from '../src/evidence/evidence';
import { SourceFile, type Source } from '../src/io/source';
import { cmpFiles, daemonPid, expectNoSecrets, PASSWORD, secretsOf, walkFiles, writeVmFolder, type VmFolder } from './helpers/encrypted';
import { isMounted, TestMount } from './helpers/mount';
import { scratchDir, tempDir } from './helpers/paths';
import { runCli, runCommand } from './helpers/run';

/** A Source that counts the bytes read through it: decryption must cost pages, not prefixes. */
class CountingFile implements Source {
  bytes = 0;
  constructor(private readonly f: SourceFile) {}
  get id() { return this.f.id; }
  get name() { return this.f.name; }
  get size() { return this.f.size; }
  get mtime() { return this.f.mtime; }
  get owner() { return this.f.owner; }
  get identity() { return this.f.identity; }
  get atimeKept() { return this.f.atimeKept; }
  readonly decodes = false;
  readonly readsInPlace = false;
  readonly damaged = [];
  readAtSync(buf: Buffer, position: number): number {
    const n = this.f.readAtSync(buf, position);
    this.bytes += n;
    return n;
  }
  async read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    const n = await this.f.read(buf, offset, length, position);
    this.bytes += n;
    return n;
  }
  close(): void {
    this.f.close();
  }
}

/** No password or data key in `text`. */
function expectNoSecret(text: string, vm: VmFolder, where: string): void {
  expectNoSecrets(text, secretsOf(vm.keyHex as string), where);
}

/** Mount the plaintext and the VM folder; every file of both trees reads the same (cmp), bar the two that name the files. */
async function expectSameTreeAsPlain(vm: VmFolder, m: TestMount): Promise<void> {
  const p = await TestMount.start(vm.plain.path);
  try {
    const files = await walkFiles(p.mountpoint);
    expect(await walkFiles(m.mountpoint)).to.deep.equal(files);
    expect(files).to.include.members(['physmem.raw', 'physmem.lime', 'physmem.elf', 'config.vmx', 'screenshot.png']);
    for (const f of files) {
      if (f === 'info.txt' || f === 'metadata.json') continue;
      expect(await cmpFiles(p.path(f), m.path(f)), f).to.equal(null);
    }
  } finally {
    await p.unmount();
  }
}

describe('encrypted VMs', function () {
  this.timeout(120_000);

  describe('key chain (.vmx key safe)', () => {
    for (const cipher of ['XTS-AES-256', 'AES-256'] as const) {
      it(`opens a ${cipher} key safe with the password and finds the data files' key`, () => {
        const chain = makeKeyChain({ password: 'pw ünïcode', cipher, rounds: 1234, encodeDataKey: cipher === 'AES-256' });
        const vmx = parseDictionary(chain.vmx).values;
        const ks = parseKeySafe(vmx.get('encryption.keysafe') as string, 'VM.vmx');
        expect({ cipher: ks.cipher, rounds: ks.rounds }).to.deep.equal({ cipher, rounds: 1234 });
        const configKey = unlockKeySafe(ks, 'pw ünïcode', 'VM.vmx');
        expect(dataFileKeyFromVmx(vmx.get('encryption.data') as string, configKey, 'VM.vmx').toString('hex')).to.equal(chain.key.toString('hex'));
      });
    }

    it('reads the percent-encodings of a real key safe: lowercase hex, the salt encoded twice', () => {
      const chain = makeKeyChain({ password: 'x', rounds: 10 });
      const value = parseDictionary(chain.vmx).values.get('encryption.keysafe') as string;
      expect(value).to.match(/^vmware:key\/list\/\(pair\/\(phrase\/[^/]+\/pass2key%3dPBKDF2%2dHMAC%2dSHA%2d1%3acipher%3dXTS%2dAES%2d256%3arounds%3d10%3asalt%3d[^,]*%253d/);
      expect(parseKeySafe(value, 'VM.vmx').salt.length).to.equal(8);
    });

    it('tells a wrong password by the key safe\'s HMAC', () => {
      const chain = makeKeyChain({ password: 'right', rounds: 100 });
      const ks = parseKeySafe(parseDictionary(chain.vmx).values.get('encryption.keysafe') as string, 'VM.vmx');
      expect(() => unlockKeySafe(ks, 'wrong', 'VM.vmx')).to.throw(VmssError, /VM\.vmx: wrong password/);
    });

    it('refuses an absurd round count and an unknown key derivation, by name', () => {
      const chain = makeKeyChain({ password: 'x', rounds: 10 });
      const value = parseDictionary(chain.vmx).values.get('encryption.keysafe') as string;
      expect(() => parseKeySafe(value.replace('rounds%3d10%3a', 'rounds%3d999999999999%3a'), 'VM.vmx')).to.throw(VmssError, /PBKDF2 rounds/);
      expect(() => parseKeySafe(value.replace('SHA%2d1%3acipher', 'SHA%2d256%3acipher'), 'VM.vmx')).to.throw(VmssError, /PBKDF2-HMAC-SHA-256/);
      expect(() => parseKeySafe('vmware:key/list/()', 'VM.vmx')).to.throw(VmssError, /not a password key safe/);
    });
  });

  describe('encobj source', () => {
    const tmp = scratchDir('vmssfs-encobj-');
    const key = Buffer.alloc(32, 7);
    let plainPath: string;
    let encPath: string;
    let plainBytes: Buffer;
    before(() => {
      plainPath = tmp.named('plain.bin');
      encPath = tmp.named('enc.bin');
      plainBytes = Buffer.alloc(4064 * 50 + 1000);
      for (let i = 0; i < plainBytes.length; i++) plainBytes[i] = (i * 131 + (i >> 12)) & 0xff;
      fs.writeFileSync(plainPath, plainBytes);
      encryptFile(plainPath, encPath, key, { version: 2 });
    });

    it('has the logical size of its header and reads any range as the plaintext, costing only the pages touched', async () => {
      const inner = new CountingFile(SourceFile.open(encPath));
      const src = EncObjSource.open(inner, key);
      try {
        expect(src.size).to.equal(plainBytes.length);
        expect(src.decodes, 'a decoding layer, not the file as it is').to.equal(true);
        expect('fd' in src).to.equal(false);
        for (const [pos, len] of [[0, 10], [4060, 10], [4064 * 33 + 5, 9000], [plainBytes.length - 7, 100]] as const) {
          inner.bytes = 0;
          const a = Buffer.alloc(len);
          const n = await src.read(a, 0, len, pos);
          expect(a.subarray(0, n).equals(plainBytes.subarray(pos, pos + len)), `async @${pos}`).to.equal(true);
          expect(inner.bytes, `bytes read for ${len} at ${pos}`).to.be.at.most((Math.ceil(len / 4064) + 1) * 4096);
          const b = Buffer.alloc(len);
          const m = src.readAtSync(b, pos);
          expect(m).to.equal(n);
          expect(b.subarray(0, m).equals(plainBytes.subarray(pos, pos + len)), `sync @${pos}`).to.equal(true);
        }
      } finally {
        src.close();
      }
    });

    it('a copy cut short: the missing pages are reported and read as EIO, not zeros', async () => {
      const cut = tmp.named('cut.bin');
      fs.writeFileSync(cut, fs.readFileSync(encPath).subarray(0, 4096 + 10 * 4096 + 100));
      const src = EncObjSource.open(SourceFile.open(cut), key);
      try {
        expect(src.size).to.equal(plainBytes.length);
        expect(src.damaged).to.have.length(1);
        expect(src.damaged[0]).to.include({ start: 10 * 4064, end: plainBytes.length });
        const ok = Buffer.alloc(100);
        expect(await src.read(ok, 0, 100, 9 * 4064)).to.equal(100);
        expect(ok.equals(plainBytes.subarray(9 * 4064, 9 * 4064 + 100))).to.equal(true);
        let code: string | undefined;
        await src.read(Buffer.alloc(100), 0, 100, 10 * 4064 + 5).catch((e: NodeJS.ErrnoException) => (code = e.code));
        expect(code).to.equal('EIO');
        expect(src.readAtSync(Buffer.alloc(200), 10 * 4064 - 100), 'parsing sees a truncated file').to.equal(100);
      } finally {
        src.close();
      }
    });

    it('refuses a header with an unknown page layout, naming the file', () => {
      const bad = tmp.named('layout.bin');
      const b = fs.readFileSync(encPath);
      b.writeUInt32LE(2048, 8);
      fs.writeFileSync(bad, b);
      const f = SourceFile.open(bad);
      try {
        expect(() => EncObjSource.open(f, key)).to.throw(VmssError, /layout.bin: encrypted container with an unknown page layout/);
      } finally {
        f.close();
      }
    });
  });

  describe('a Windows 11 VM folder (VM.vmx, VM-Snapshot1.vmsn, VM-Snapshot1.vmem), encrypted, memory compressed', () => {
    const tmp = tempDir('vmssfs-win11-');
    let vm: VmFolder;
    const mounts: TestMount[] = [];
    before(() => {
      vm = writeVmFolder(tmp.dir, { encrypt: true, compress: true, blobPages: 2048, blockSize: 1 << 20 });
    });
    after(async () => {
      for (const m of mounts) await m.unmount();
      tmp.cleanup();
    });

    it('mounts with --password-file; every file reads exactly as the plaintext\'s', async () => {
      const m = await TestMount.start(vm.meta, ['--password-file', vm.passwordFile]);
      mounts.push(m);
      await expectSameTreeAsPlain(vm, m);
      const meta = JSON.parse(await fs.promises.readFile(m.path('metadata.json'), 'utf8')) as Record<string, unknown>;
      expect(meta.encryption).to.deep.equal({ keyFrom: 'password', vmx: vm.vmx, cipher: 'XTS-AES-256', rounds: 2000, files: [vm.meta, vm.vmem], integrity: INTEGRITY });
      expect(meta.compression).to.include({ file: vm.vmem, blocks: 8, decompressedBytes: 2048 * 4096 });
      expectNoSecret(JSON.stringify(meta), vm, 'metadata.json');
      const info = await fs.promises.readFile(m.path('info.txt'), 'utf8');
      expect(info).to.include(`Encrypted: ${vm.meta}, ${vm.vmem} decrypted with the key safe of ${vm.vmx} (XTS-AES-256, 2000 PBKDF2 rounds)`);
      expect(info).to.match(/Compressed memory: .*VM-Snapshot1\.vmem holds 8 blocks/);
      expectNoSecret(info, vm, 'info.txt');
      expect(m.stderr, 'no warning').to.equal('');
    });

    it('holds its seek index, decoded blocks, tails and decrypted pages within --cache-size: reads across every block, backwards too, match the plaintext', async () => {
      // 3 MiB: room for two of the fixture's 1 MiB blocks (with their window), never all eight.
      const m = await TestMount.start(vm.meta, ['--cache-size', '3', '--debug', '--password-file', vm.passwordFile]);
      mounts.push(m);
      const p = await TestMount.start(vm.plain.path);
      try {
        expect(await cmpFiles(p.path('physmem.raw'), m.path('physmem.raw'))).to.equal(null);
        const size = (await fs.promises.stat(p.path('physmem.raw'))).size;
        const [a, b] = await Promise.all([fs.promises.open(p.path('physmem.raw')), fs.promises.open(m.path('physmem.raw'))]);
        try {
          for (let pos = size - 300_000; pos > 0; pos -= 700_001) {
            const want = Buffer.alloc(200_000);
            const got = Buffer.alloc(200_000);
            await a.read(want, 0, want.length, pos);
            await b.read(got, 0, got.length, pos);
            expect(got.equals(want), `200000 bytes at ${pos}`).to.equal(true);
          }
        } finally {
          await Promise.all([a.close(), b.close()]);
        }
      } finally {
        await p.unmount();
        await m.unmount();
      }
      const line = /cache budget: peak (\d+) bytes held of (\d+) \(--cache-size\)/.exec(m.stderr);
      expect(line, 'the --debug line at unmount').to.not.equal(null);
      const [peak, max] = [Number(line?.[1]), Number(line?.[2])];
      // The seek index is counted in the budget, which grows by what the index holds.
      const index = /seek index built: \d+ points, (\d+) bytes/.exec(m.stderr);
      expect(index, 'the --debug line of the seek index').to.not.equal(null);
      expect(max).to.equal(3 * 1024 * 1024 + Number(index?.[1]));
      expect(peak, 'held at most the budget').to.be.at.most(max);
      // Reads decode from the seek index's points once it is built, not whole blocks: what the
      // budget held is the index and the caches' chunks, pages and blocks beside it.
      expect(peak, 'the index and cached bytes were held').to.be.greaterThan(Number(index?.[1]));
    });

    it('diff takes the key options: the encrypted VM against its plaintext differs nowhere, and a page changed in a copy is found', async () => {
      const same = await runCli(['diff', '--json', '--password-file', vm.passwordFile, vm.meta, vm.plain.path], { timeoutMs: 60_000 });
      expect(same.code, same.stderr).to.equal(0);
      const j = JSON.parse(same.stdout) as { changed: unknown[]; counts: { compared: number; changed: number } };
      expect(j.counts.compared).to.equal(2048);
      expect([j.counts.changed, j.changed]).to.deep.equal([0, []]);
      // A copy of the plaintext with guest page 7 changed: the diff against the encrypted VM names it.
      const copy = path.join(tmp.dir, 'changed');
      fs.mkdirSync(copy);
      const meta = path.join(copy, path.basename(vm.plain.path));
      const vmem = path.join(copy, path.basename(vm.plain.vmemPath as string));
      fs.copyFileSync(vm.plain.path, meta);
      fs.copyFileSync(vm.plain.vmemPath as string, vmem);
      const fd = fs.openSync(vmem, 'r+');
      fs.writeSync(fd, Buffer.from('changed by the test'), 0, 19, 7 * 4096 + 100);
      fs.closeSync(fd);
      const diff = await runCli(['diff', '--json', '--key', vm.keyHex as string, vm.meta, meta], { timeoutMs: 60_000 });
      expect(diff.code, diff.stderr).to.equal(0);
      expect((JSON.parse(diff.stdout) as { changed: unknown[] }).changed).to.deep.equal([{ start: 7 * 4096, length: 4096 }]);
      expectNoSecret(diff.stdout + diff.stderr, vm, 'diff output');
    });

    it('given the .vmem, finds the .vmsn beside it; --key HEX opens it without a password', async () => {
      const r = await runCli(['cat', '--key', vm.keyHex as string, vm.vmem, 'physmem.raw']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.length).to.be.greaterThan(0);
      const j = await runCli(['info', '--json', '--key', vm.keyHex as string, vm.vmem]);
      expect((JSON.parse(j.stdout) as { encryption: unknown }).encryption).to.deep.equal({ keyFrom: '--key', files: [vm.meta, vm.vmem], integrity: INTEGRITY });
    });

    it('info, ls and extract take the password from standard input (--password-file -)', async () => {
      const r = await runCommand('sh', ['-c', `printf '%s\\n' "$PW" | node "$BIN" info --password-file - "$META"`], {
        env: { ...process.env, PW: PASSWORD, BIN: path.resolve(__dirname, '..', '..', 'bin', 'vmssfs'), META: vm.meta },
      });
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.include('Encrypted:');
      const ls = await runCli(['ls', '--password-file', vm.passwordFile, vm.meta]);
      expect(ls.stdout.split('\n')).to.include.members(['physmem.raw', 'config.vmx', 'metadata.json']);
      const out = path.join(tmp.dir, 'out');
      const x = await runCli(['extract', '--password-file', vm.passwordFile, vm.meta, out, 'config.vmx', 'groups']);
      expect(x.code, x.stderr).to.equal(0);
      const plainOut = path.join(tmp.dir, 'plain-out');
      expect((await runCli(['extract', vm.plain.path, plainOut, 'config.vmx', 'groups'])).code).to.equal(0);
      expect(await cmpFiles(path.join(out, 'config.vmx'), path.join(plainOut, 'config.vmx'))).to.equal(null);
      expect(await cmpFiles(path.join(out, 'groups', 'cpu', 'rip[0]'), path.join(plainOut, 'groups', 'cpu', 'rip[0]'))).to.equal(null);
    });

    it('on a terminal, with no password given, asks for it without echoing it (script(1) provides the terminal)', async () => {
      const bin = path.resolve(__dirname, '..', '..', 'bin', 'vmssfs');
      const child = spawn('script', ['-qec', `node ${bin} info ${vm.meta}`, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let typed = false;
      const done = new Promise<number | null>((resolve) => child.on('close', resolve));
      child.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        // Type only once asked: echo is off by then.
        if (!typed && out.includes('Password for VM.vmx: ')) {
          typed = true;
          child.stdin.write(`${PASSWORD}\n`);
        }
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const code = await done;
      clearTimeout(timer);
      expect(code, out).to.equal(0);
      expect(out).to.include('Encrypted:');
      expectNoSecret(out, vm, 'the terminal');
    });

    it('a truncated copy of the encrypted .vmem: metadata served, the lost guest-physical range named, reads there fail', async () => {
      const cut = writeVmFolder(path.join(tmp.dir, 'cut'), { encrypt: true, compress: true, blobPages: 2048, blockSize: 1 << 20,
        regions: [{ ppn: 0, pageNum: 0, pages: 1024 }, { ppn: 0x1800, pageNum: 1024, pages: 1024 }] });
      const enc = fs.readFileSync(cut.vmem);
      fs.writeFileSync(cut.vmem, enc.subarray(0, Math.floor(enc.length / 2)));
      const meta = cut.meta;
      const info = await runCli(['info', '--password-file', cut.passwordFile, meta]);
      expect(info.code, info.stderr).to.equal(0);
      expect(info.stdout).to.match(/WARNING: guest-physical 0x[0-9a-f]+-0x1c00000 \(\d+ bytes\) cannot be read from .*VM-Snapshot1\.vmem: .*reads there fail with EIO/);
      const cfg = await runCli(['cat', '--password-file', cut.passwordFile, meta, 'config.vmx']);
      expect(cfg.code).to.equal(0);
      expect(cfg.stdout).to.include('displayName');
      const raw = await runCli(['cat', '--password-file', cut.passwordFile, meta, 'physmem.raw']);
      expect(raw.code).to.equal(1);
      expect(raw.stderr.trim().split('\n').filter((l) => !l.includes('warning'))).to.have.length(1);
      expect(raw.stderr).to.match(/VM-Snapshot1\.vmem: read of \d+ bytes at \d+ failed: EIO/);
    });

    it('the detached daemon gets the key through a pipe: its command line and environment hold no secret; --debug shows none', async () => {
      const { dir, cleanup } = tempDir('vmssfs-mnt-');
      try {
        const r = await runCli([vm.meta, dir, '--password-file', vm.passwordFile]);
        expect(r.code, r.stderr).to.equal(0);
        try {
          const pid = daemonPid(dir);
          expect(pid, 'daemon found').to.not.equal(null);
          const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
          const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
          expect(cmdline).to.include('--keys-from-parent');
          expect(cmdline).to.not.include(vm.passwordFile);
          expectNoSecret(cmdline, vm, 'daemon cmdline');
          expectNoSecret(environ, vm, 'daemon environment');
          expect(await cmpFiles(path.join(dir, 'physmem.raw'), vm.plain.vmemPath as string)).to.equal(null);
        } finally {
          await runCommand('fusermount', ['-u', dir]);
          for (let i = 0; i < 100 && (await isMounted(dir)); i++) await new Promise((res) => setTimeout(res, 50));
        }
      } finally {
        cleanup();
      }
      const m = await TestMount.start(vm.meta, ['--debug', '--password-file', vm.passwordFile]);
      mounts.push(m);
      await fs.promises.readFile(m.path('config.vmx'));
      await m.unmount();
      expect(m.stderr).to.include('page cache:');
      expectNoSecret(m.stderr, vm, '--debug output');
    });
  });

  describe('errors', () => {
    const tmp = tempDir('vmssfs-encerr-');
    let vm: VmFolder;
    before(() => {
      vm = writeVmFolder(tmp.dir, { encrypt: true, compress: false, blobPages: 64, rounds: 500 });
    });
    after(() => tmp.cleanup());

    it('no key material: exit 1 naming the encryption, --password-file, --key and --vmx', async () => {
      for (const args of [['info', vm.meta], ['ls', vm.meta], ['cat', vm.meta, 'config.vmx']]) {
        const r = await runCli(args);
        expect(r.code, args.join(' ')).to.equal(1);
        const lines = r.stderr.trim().split('\n');
        expect(lines).to.have.length(1);
        expect(lines[0]).to.match(/encrypted/).and.match(/--password-file/).and.match(/--key/).and.match(/--vmx/);
      }
      const { dir, cleanup } = tempDir('vmssfs-mnt-');
      try {
        const r = await runCli([vm.meta, dir]);
        expect(r.code).to.equal(1);
        expect(r.stderr).to.match(/encrypted.*--password-file.*--key.*--vmx/);
        expect(await isMounted(dir)).to.equal(false);
      } finally {
        cleanup();
      }
    });

    it('a wrong password: exit 1, "wrong password", no stack trace', async () => {
      const pw = path.join(tmp.dir, 'wrong.txt');
      fs.writeFileSync(pw, 'not it\n');
      const r = await runCli(['info', '--password-file', pw, vm.meta]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.equal(`vmssfs: ${vm.vmx}: wrong password, or the key safe is damaged (its HMAC does not match)\n`);
    });

    it('a wrong --key: exit 1, the decrypted file is not a checkpoint', async () => {
      const r = await runCli(['info', '--key', '00'.repeat(32), vm.meta]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/decrypted, it is not a VMware checkpoint: the key is wrong/);
      expect(r.stderr.trim().split('\n')).to.have.length(1);
    });

    it('no .vmx beside the snapshot: exit 1 naming --vmx; --vmx FILE finds it elsewhere', async () => {
      const alone = path.join(tmp.dir, 'alone');
      fs.mkdirSync(alone);
      for (const f of [vm.meta, vm.vmem]) fs.copyFileSync(f, path.join(alone, path.basename(f)));
      const meta = path.join(alone, path.basename(vm.meta));
      const r = await runCli(['info', '--password-file', vm.passwordFile, meta]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/no \.vmx holding encryption\.keySafe is beside it: give the VM's \.vmx with --vmx FILE/);
      const ok = await runCli(['info', '--password-file', vm.passwordFile, '--vmx', vm.vmx as string, meta]);
      expect(ok.code, ok.stderr).to.equal(0);
      expect(ok.stdout).to.include(`key safe of ${vm.vmx}`);
    });

    it('several .vmx with a key safe and no --vmx: exit 1 listing them', async () => {
      const two = path.join(tmp.dir, 'two');
      fs.mkdirSync(two);
      for (const f of [vm.meta, vm.vmem, vm.vmx as string]) fs.copyFileSync(f, path.join(two, path.basename(f)));
      fs.copyFileSync(vm.vmx as string, path.join(two, 'Other.vmx'));
      const r = await runCli(['info', '--password-file', vm.passwordFile, path.join(two, path.basename(vm.meta))]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/several \.vmx files beside it hold a key safe \(Other\.vmx, VM\.vmx\): choose one with --vmx FILE/);
    });

    it('an empty or missing password file, and a malformed --key, are one-line errors', async () => {
      const empty = path.join(tmp.dir, 'empty.txt');
      fs.writeFileSync(empty, '\n');
      expect((await runCli(['info', '--password-file', empty, vm.meta])).stderr).to.match(/first line is empty/);
      expect((await runCli(['info', '--password-file', path.join(tmp.dir, 'nope'), vm.meta])).stderr).to.match(/nope: cannot read the password file/);
      const k = await runCli(['info', '--key', 'xyz', vm.meta]);
      expect(k.code).to.equal(1);
      expect(k.stderr).to.match(/--key takes the data file key as 64 \(or 128\) hex digits/);
    });
  });
});
