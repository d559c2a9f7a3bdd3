// Key material as people keep it: password files written by Windows editors and PowerShell,
// passwords and keys typed on a terminal for `-`, keys in a file (--key-file), and key safes
// whose phrase ID holds a `/`.

import { expect } from 'chai';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeKeyChain } from './kit/encrypted-vm';
import { dataFileKeyFromVmx, parseKeySafe, unlockKeySafe } from '../src/crypto/keysafe';
import { parseDictionary } from '../src/format/dictionary';
import { cmpFiles, daemonPid, expectNoSecrets, PASSWORD, secretsOf, writeVmFolder, type VmFolder } from './helpers/encrypted';
import { isMounted } from './helpers/mount';
import { BIN, tempDir } from './helpers/paths';
import { runCli, runCommand } from './helpers/run';

/**
 * Run `vmssfs ARGS` with a terminal on its standard input (script(1) provides it), typing
 * `typed` once `prompt` shows; what the terminal showed, and the exit status.
 */
async function onTerminal(args: string[], prompt: string, typed: string): Promise<{ code: number | null; screen: string }> {
  const quoted = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child = spawn('script', ['-qec', quoted, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let screen = '';
  let done = false;
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  child.stdout.on('data', (b: Buffer) => {
    screen += b.toString();
    // Type only once asked: echo is off by then.
    if (!done && screen.includes(prompt)) {
      done = true;
      child.stdin.write(`${typed}\n`);
    }
  });
  child.stderr.on('data', (b: Buffer) => (screen += b.toString()));
  // Without a prompt nothing is typed, and a reader waiting for end of file would wait for good.
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const code = await closed;
  clearTimeout(timer);
  return { code, screen };
}

describe('key material as people keep it', function () {
  this.timeout(120_000);
  const tmp = tempDir('vmssfs-pw-');
  let vm: VmFolder;
  before(() => {
    vm = writeVmFolder(tmp.dir, { encrypt: true, compress: false, blobPages: 64, rounds: 500 });
  });
  after(() => tmp.cleanup());

  describe('password files', () => {
    const bom8 = Buffer.from([0xef, 0xbb, 0xbf]);
    const utf16be = (s: string): Buffer => Buffer.from(s, 'utf16le').swap16();
    const files: Record<string, () => Buffer> = {
      'UTF-8 with a byte-order mark (Notepad)': () => Buffer.concat([bom8, Buffer.from(`${PASSWORD}\r\n`)]),
      'UTF-16LE with a byte-order mark (Windows PowerShell 5.1: echo PW > file)': () => Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(`${PASSWORD}\r\n`, 'utf16le')]),
      'UTF-16BE with a byte-order mark': () => Buffer.concat([Buffer.from([0xfe, 0xff]), utf16be(`${PASSWORD}\n`)]),
      'UTF-8 ending in CRLF': () => Buffer.from(`${PASSWORD}\r\n`),
      'UTF-8 without a final newline': () => Buffer.from(PASSWORD),
    };
    for (const [name, bytes] of Object.entries(files)) {
      it(`opens the VM with a password file in ${name}`, async () => {
        const f = path.join(tmp.dir, `${name.replace(/\W+/g, '-')}.txt`);
        fs.writeFileSync(f, bytes());
        const r = await runCli(['info', '--password-file', f, vm.meta]);
        expect(r.code, r.stderr).to.equal(0);
        expect(r.stdout).to.include('Encrypted:');
      });
    }

    it('a password that is not the first line after a mark is still wrong: only the mark and the line end are dropped', async () => {
      const f = path.join(tmp.dir, 'spaced.txt');
      fs.writeFileSync(f, Buffer.concat([bom8, Buffer.from(` ${PASSWORD}\n`)]));
      const r = await runCli(['info', '--password-file', f, vm.meta]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/wrong password/);
    });

    it('--password-file - on a terminal asks for one line without echo, and does not wait for end of file', async () => {
      const r = await onTerminal(['info', '--password-file', '-', vm.meta], 'Password for VM.vmx: ', PASSWORD);
      expect(r.code, r.screen).to.equal(0);
      expect(r.screen).to.include('Encrypted:');
      expectNoSecrets(r.screen, secretsOf(vm.keyHex as string), 'the terminal');
    });
  });

  describe('--key-file', () => {
    let keyFile: string;
    before(() => {
      keyFile = path.join(tmp.dir, 'key.txt');
      fs.writeFileSync(keyFile, `${vm.keyHex as string}\n`);
    });

    it('reads the data file key from a file, and from standard input (-)', async () => {
      const r = await runCli(['cat', '--key-file', keyFile, vm.meta, 'config.vmx']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.include('displayName');
      const piped = await runCommand('sh', ['-c', `node "$BIN" info --json --key-file - "$META" < "$KEYFILE"`], {
        env: { ...process.env, BIN, META: vm.meta, KEYFILE: keyFile },
      });
      expect(piped.code, piped.stderr).to.equal(0);
      expect((JSON.parse(piped.stdout) as { encryption: { keyFrom: string } }).encryption.keyFrom).to.equal('--key');
    });

    it('on a terminal, - asks for the key without echo', async () => {
      const r = await onTerminal(['info', '--key-file', '-', vm.meta], 'Data file key (hex): ', vm.keyHex as string);
      expect(r.code, r.screen).to.equal(0);
      expect(r.screen).to.include('Encrypted:');
      expectNoSecrets(r.screen, secretsOf(vm.keyHex as string), 'the terminal');
    });

    it('the detached daemon gets the key from the mount command through its pipe: no key or key file on its command line', async () => {
      const { dir, cleanup } = tempDir('vmssfs-mnt-');
      try {
        const r = await runCli([vm.meta, dir, '--key-file', keyFile]);
        expect(r.code, r.stderr).to.equal(0);
        try {
          const pid = daemonPid(dir);
          expect(pid, 'daemon found').to.not.equal(null);
          const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
          expect(cmdline).to.include('--keys-from-parent');
          expect(cmdline).to.not.include(keyFile);
          expectNoSecrets(cmdline + fs.readFileSync(`/proc/${pid}/environ`, 'utf8'), secretsOf(vm.keyHex as string), 'the daemon');
          expect(await cmpFiles(path.join(dir, 'physmem.raw'), vm.plain.vmemPath as string)).to.equal(null);
        } finally {
          await runCommand('fusermount', ['-u', dir]);
          for (let i = 0; i < 100 && (await isMounted(dir)); i++) await new Promise((res) => setTimeout(res, 50));
        }
      } finally {
        cleanup();
      }
    });

    it('a wrong, empty or non-hex key file, and --key with --key-file, are one-line errors', async () => {
      const wrong = path.join(tmp.dir, 'wrong-key.txt');
      fs.writeFileSync(wrong, `${'00'.repeat(32)}\n`);
      const w = await runCli(['info', '--key-file', wrong, vm.meta]);
      expect(w.code).to.equal(1);
      expect(w.stderr).to.match(/the key is wrong/);
      const empty = path.join(tmp.dir, 'empty-key.txt');
      fs.writeFileSync(empty, '\n');
      expect((await runCli(['info', '--key-file', empty, vm.meta])).stderr).to.equal(`vmssfs: ${empty}: the key file's first line is empty\n`);
      const notHex = path.join(tmp.dir, 'not-hex.txt');
      fs.writeFileSync(notHex, 'the key\n');
      expect((await runCli(['info', '--key-file', notHex, vm.meta])).stderr).to.equal(`vmssfs: ${notHex}: --key-file takes the data file key as 64 (or 128) hex digits\n`);
      const both = await runCli(['info', '--key', vm.keyHex as string, '--key-file', keyFile, vm.meta]);
      expect(both.code).to.equal(2);
      expect(both.stderr).to.match(/--key and --key-file both give the data file key/);
    });
  });

  describe('a key safe whose phrase ID holds a / (VMware writes it %2f)', () => {
    it('is split at its separators before it is decoded, and opens with the password', () => {
      const chain = makeKeyChain({ password: PASSWORD, rounds: 100, phraseId: 'GX/uyuKmjvA=' });
      const value = parseDictionary(chain.vmx).values.get('encryption.keysafe') as string;
      expect(value).to.include('phrase/GX%2fuyuKmjvA%3d/pass2key%3d');
      const ks = parseKeySafe(value, 'VM.vmx');
      const configKey = unlockKeySafe(ks, PASSWORD, 'VM.vmx');
      expect(dataFileKeyFromVmx(parseDictionary(chain.vmx).values.get('encryption.data') as string, configKey, 'VM.vmx').equals(chain.key)).to.equal(true);
    });

    it('a VM whose .vmx holds such a key safe is read with its password', async () => {
      const dir = path.join(tmp.dir, 'slash');
      fs.mkdirSync(dir);
      // The same data files' key under a key safe with a slashed ID.
      const dataFileKey = Buffer.concat([Buffer.from(vm.keyHex as string, 'hex'), crypto.randomBytes(32)]);
      const chain = makeKeyChain({ password: PASSWORD, rounds: 500, dataFileKey, phraseId: 'a/b+/c/d/E0=' });
      fs.writeFileSync(path.join(dir, 'VM.vmx'), chain.vmx);
      for (const f of [vm.meta, vm.vmem]) fs.copyFileSync(f, path.join(dir, path.basename(f)));
      const r = await runCli(['info', '--password-file', vm.passwordFile, path.join(dir, path.basename(vm.meta))]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.include('Encrypted:');
    });
  });
});
