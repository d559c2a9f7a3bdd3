import { expect } from 'chai';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pageContent, writeSnapshot, type WrittenSnapshot } from './kit/writer';
import { TestMount } from './helpers/mount';
import { BIN, SAMPLE, tempDir } from './helpers/paths';
import { runCli, runCommand } from './helpers/run';

const PAGE = 4096;
const MiB = 1024 * 1024;

/** runCli, but stdout kept as bytes: cat's output is binary. */
function runCliBytes(args: string[]): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
  });
}

/** Every file under `dir`, as '/'-separated paths relative to it, sorted. */
async function walk(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.promises.readdir(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await walk(path.join(dir, e.name), rel)));
    else out.push(rel);
  }
  return out.sort();
}

async function readRange(file: string, position: number, length: number): Promise<Buffer> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, position);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Mode bits as ls -l spells them. */
function rwx(mode: number): string {
  return [6, 3, 0].map((s) => ((mode >> s) & 4 ? 'r' : '-') + ((mode >> s) & 2 ? 'w' : '-') + ((mode >> s) & 1 ? 'x' : '-')).join('');
}

describe('commands: ls, cat and extract without FUSE', function () {
  this.timeout(60_000);
  const tmp = tempDir('vmssfs-cmd-');
  after(() => tmp.cleanup());

  describe('a small layout, checked against a real mount of it', () => {
    let w: WrittenSnapshot;
    let m: TestMount;
    before(async () => {
      w = writeSnapshot(path.join(tmp.dir, 'small.vmss'), {
        memory: 'embedded',
        blobPages: 6,
        // 0..12 KiB and 32..44 KiB: a hole between, at small addresses
        regions: [{ ppn: 0, pageNum: 0, pages: 3 }, { ppn: 8, pageNum: 3, pages: 3 }],
        vcpus: 2,
      });
      m = await TestMount.start(w.path);
    });
    after(async () => m.unmount());

    it('ls lists the root and a directory as the mount does, the physmem views included', async () => {
      for (const dir of ['', 'groups', 'groups/cpu', 'groups/Odd names']) {
        const r = await runCli(['ls', w.path, ...(dir ? [dir] : [])]);
        expect(r.code, r.stderr).to.equal(0);
        const names = r.stdout.split('\n').slice(0, -1);
        expect([...names].sort(), dir).to.deep.equal((await fs.promises.readdir(m.path(dir))).sort());
      }
      const root = (await runCli(['ls', w.path])).stdout;
      expect(root.split('\n')).to.include.members(['physmem.raw', 'physmem.lime', 'physmem.elf', 'groups']);
    });

    it('ls -l gives each entry\'s mode and the size the mount reports', async () => {
      const r = await runCli(['ls', '-l', w.path]);
      expect(r.code, r.stderr).to.equal(0);
      for (const line of r.stdout.split('\n').slice(0, -1)) {
        const match = /^([d-][r-]-[x-][r-]-[x-][r-]-[x-]) +(\d+) (.+)$/.exec(line);
        expect(match, line).to.not.equal(null);
        const [, mode, size, name] = match as unknown as [string, string, string, string];
        const st = await fs.promises.stat(m.path(name));
        expect(mode.startsWith('d'), name).to.equal(st.isDirectory());
        expect(mode.slice(1), `${name}: the mode the mount shows`).to.equal(rwx(st.mode));
        if (st.isFile()) expect(Number(size), name).to.equal(st.size);
      }
      const file = await runCli(['ls', '-l', w.path, 'physmem.elf']);
      expect(file.stdout).to.match(/^-r--r--r-- \d+ physmem\.elf\n$/);
    });

    it('ls -l takes its modes from the evidence, as the mount does: a 0640 snapshot lists r--r----- and r-xr-x---', async () => {
      const d = fs.mkdtempSync(path.join(tmp.dir, 'modes-'));
      const own = writeSnapshot(path.join(d, 'private.vmss'), { memory: 'embedded', blobPages: 4 });
      fs.chmodSync(own.path, 0o640);
      const r = await runCli(['ls', '-l', own.path]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.match(/^-r--r----- +\d+ physmem\.raw$/m);
      expect(r.stdout).to.match(/^dr-xr-x--- +0 groups$/m);
    });

    it('cat writes exactly the bytes the mount serves, for the views, metadata and tag files', async () => {
      for (const p of ['physmem.raw', 'physmem.lime', 'physmem.elf', 'info.txt', 'metadata.json', 'config.vmx', 'screenshot.png',
        'groups/cpu/rip[1]', 'groups/cpu/gpregs[0]', 'groups/Odd names/a%2Fb%25c']) {
        const r = await runCliBytes(['cat', w.path, p]);
        expect(r.code, `${p}: ${r.stderr}`).to.equal(0);
        expect(r.stderr, p).to.equal('');
        const mounted = await fs.promises.readFile(m.path(p));
        expect(r.stdout.length, p).to.equal(mounted.length);
        expect(r.stdout.equals(mounted), p).to.equal(true);
      }
      expect((await runCliBytes(['cat', w.path, 'physmem.raw'])).stdout.equals(w.readPhys(0, w.physSize))).to.equal(true);
    });

    it('extract with no PATH copies the tree but the derived views, byte for byte, holes kept as holes', async () => {
      const out = path.join(tmp.dir, 'all');
      const r = await runCli(['extract', w.path, out]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stderr, 'no progress bar when stderr is not a terminal').to.equal('');
      const want: string[] = [];
      const collect = async (rel: string): Promise<void> => {
        for (const e of await fs.promises.readdir(m.path(rel), { withFileTypes: true })) {
          const p = rel ? `${rel}/${e.name}` : e.name;
          if (e.isDirectory()) await collect(p);
          else if (p !== 'physmem.lime' && p !== 'physmem.elf') want.push(p);
        }
      };
      await collect('');
      expect(await walk(out)).to.deep.equal(want.sort());
      for (const p of want) {
        expect((await fs.promises.readFile(path.join(out, p))).equals(await fs.promises.readFile(m.path(p))), p).to.equal(true);
      }
      const raw = await fs.promises.stat(path.join(out, 'physmem.raw'));
      expect(raw.size).to.equal(w.physSize);
      // 24 KiB of data in 44 KiB: the 20 KiB hole is not allocated.
      expect(raw.blocks * 512, 'allocated bytes of physmem.raw').to.be.below(w.physSize);
      const st = await fs.promises.stat(path.join(out, 'info.txt'));
      expect(st.mtime.getTime(), 'the snapshot\'s time, as the mount shows').to.equal((await fs.promises.stat(m.path('info.txt'))).mtime.getTime());
    });

    it('extract with PATHs copies those files and whole directories to OUTDIR/PATH, and nothing else', async () => {
      const out = path.join(tmp.dir, 'some');
      const r = await runCli(['extract', w.path, out, 'physmem.elf', 'groups/cpu']);
      expect(r.code, r.stderr).to.equal(0);
      const cpu = (await fs.promises.readdir(m.path('groups', 'cpu'))).map((n) => `groups/cpu/${n}`);
      expect(await walk(out)).to.deep.equal(['physmem.elf', ...cpu].sort());
      expect((await fs.promises.readFile(path.join(out, 'physmem.elf'))).equals(await fs.promises.readFile(m.path('physmem.elf')))).to.equal(true);
    });

    it('a missing PATH is one line and exit 1, for ls, cat and extract, and extract writes nothing', async () => {
      const out = path.join(tmp.dir, 'never');
      for (const args of [['ls', w.path, 'nope'], ['cat', w.path, 'groups/nope'], ['extract', w.path, out, 'info.txt', 'nope/x']]) {
        const r = await runCli(args);
        expect(r.code, args.join(' ')).to.equal(1);
        expect(r.stderr).to.equal(`vmssfs: ${args[args.length - 1]}: no such file in the tree\n`);
        expect(r.stdout).to.equal('');
      }
      expect(fs.existsSync(out)).to.equal(false);
      const dir = await runCli(['cat', w.path, 'groups']);
      expect([dir.code, dir.stderr]).to.deep.equal([1, 'vmssfs: groups: is a directory\n']);
    });

    it('a file that is not a checkpoint, and bad usage, fail as the other commands do', async () => {
      const junk = path.join(tmp.dir, 'junk.vmss');
      await fs.promises.writeFile(junk, Buffer.alloc(4096, 0x41));
      for (const cmd of ['ls', 'cat', 'extract']) {
        const r = await runCli(cmd === 'ls' ? [cmd, junk] : [cmd, junk, 'x']);
        expect(r.code, cmd).to.equal(1);
        expect(r.stderr, cmd).to.match(/^vmssfs: [^\n]*junk\.vmss[^\n]*\n$/);
      }
      expect((await runCli(['cat', w.path])).code).to.equal(2);
      expect((await runCli(['ls', '--bogus', w.path])).code).to.equal(2);
    });
  });

  describe('the sample (4 GiB + 1 MiB of physical memory, mostly hole)', () => {
    it('extract writes physmem.raw sparse: full size, few blocks, the runs\' bytes in place', async () => {
      const out = path.join(tmp.dir, 'sample');
      const r = await runCli(['extract', SAMPLE, out, 'physmem.raw']);
      expect(r.code, r.stderr).to.equal(0);
      const file = path.join(out, 'physmem.raw');
      const st = await fs.promises.stat(file);
      expect(st.size).to.equal(4 * 1024 * MiB + MiB);
      // 4 MiB of data; a dense copy would take 4 GiB.
      expect(st.blocks * 512, 'allocated bytes').to.be.at.most(8 * MiB);
      // Runs: 3 MiB at 0 and 1 MiB at 4 GiB, every page written by the fixture generator.
      for (const [start, pages] of [[0, 768], [4 * 1024 * MiB, 256]] as const) {
        const got = await readRange(file, start, pages * PAGE);
        for (let i = 0; i < pages; i++) {
          const n = start / PAGE + i;
          expect(got.subarray(i * PAGE, (i + 1) * PAGE).equals(pageContent(n)), `page ${n}`).to.equal(true);
        }
      }
      for (const at of [3 * MiB, 2048 * MiB, 4 * 1024 * MiB - 4096]) {
        expect((await readRange(file, at, 4096)).equals(Buffer.alloc(4096)), `hole at ${at}`).to.equal(true);
      }
    });

    it('extract shows a progress bar when stderr is a terminal', async () => {
      const out = path.join(tmp.dir, 'tty');
      // script(1) gives the command a pseudo-terminal; its output is what the terminal showed.
      const cmd = [process.execPath, BIN, 'extract', SAMPLE, out, 'physmem.raw'].map((a) => `'${a}'`).join(' ');
      const r = await runCommand('script', ['-qec', cmd, '/dev/null'], { timeoutMs: 60_000 });
      expect(r.code, r.stdout + r.stderr).to.equal(0);
      expect(r.stdout).to.match(/\[#+\] 100% 4097\.0\/4097\.0 MiB/);
    });

    it('cat into a pipe closed early (head) ends quietly with status 0', async () => {
      const r = await runCommand('bash', ['-c', `'${process.execPath}' '${BIN}' cat '${SAMPLE}' physmem.raw | head -c 100000 | wc -c; echo "\${PIPESTATUS[0]}"`]);
      expect(r.stdout.split('\n').slice(0, 2).map((s) => s.trim())).to.deep.equal(['100000', '0']);
      expect(r.stderr).to.equal('');
    });
  });

  describe('output that cannot be written: exit 1 and one line, never a silent short copy', () => {
    /** Run the CLI under bash with stdout redirected as `redirect` says (e.g. `> /dev/full`). */
    const shell = (args: string[], redirect: string) =>
      runCommand('bash', ['-c', `${[process.execPath, BIN, ...args].map((a) => `'${a}'`).join(' ')} ${redirect}`], { timeoutMs: 60_000 });

    it('cat, info and ls into /dev/full say so and exit 1', async () => {
      for (const args of [['cat', SAMPLE, 'physmem.elf'], ['info', SAMPLE], ['info', '--json', SAMPLE], ['ls', '-l', SAMPLE]]) {
        const r = await shell(args, '> /dev/full');
        expect(r.code, args.join(' ')).to.equal(1);
        expect(r.stderr, args.join(' ')).to.equal('vmssfs: cannot write to standard output (/dev/full): no space left on device\n');
      }
    });

    it('info into a pipe closed early (head) stays quiet with status 0', async () => {
      const r = await shell(['info', '--json', SAMPLE], '| head -c 10 >/dev/null; exit "${PIPESTATUS[0]}"');
      expect([r.code, r.stderr]).to.deep.equal([0, '']);
    });

    describe('on a filesystem that fills up (a 1 MiB tmpfs)', () => {
      let full: string;
      before(async () => {
        full = fs.mkdtempSync(path.join(tmp.dir, 'full-'));
        const r = await runCommand('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0755', 'vmssfs-test-full', full]);
        expect(r.code, r.stderr).to.equal(0);
      });
      after(async () => {
        await runCommand('umount', [full]);
      });

      it('cat stops with the file it could not complete named, exit 1', async () => {
        const out = path.join(full, 'physmem.elf');
        const r = await shell(['cat', SAMPLE, 'physmem.elf'], `> '${out}'`);
        expect(r.code, r.stderr).to.equal(1);
        expect(r.stderr).to.equal(`vmssfs: cannot write to standard output (${out}): no space left on device\n`);
        await fs.promises.unlink(out);
      });

      it('extract fails in one line and leaves no partial file behind', async () => {
        const out = path.join(full, 'x');
        const r = await runCli(['extract', SAMPLE, out, 'info.txt', 'physmem.elf']);
        expect(r.code, r.stderr).to.equal(1);
        expect(r.stderr).to.equal(`vmssfs: ${path.join(out, 'physmem.elf')}: no space left on device\n`);
        // info.txt was complete and stays; the half-written physmem.elf is gone.
        expect(await walk(out)).to.deep.equal(['info.txt']);
        await fs.promises.rm(out, { recursive: true });
      });
    });
  });

  describe('extract never writes through what it finds at the destination', () => {
    const victim = (): string => {
      const f = path.join(tmp.dir, `victim-${Math.random().toString(16).slice(2)}`);
      fs.writeFileSync(f, 'not yours\n');
      return f;
    };
    const outDir = (): string => fs.mkdtempSync(path.join(tmp.dir, 'out-'));

    it('refuses a symbolic link planted at a file\'s place, and writes nothing', async () => {
      const target = victim();
      const out = outDir();
      fs.symlinkSync(target, path.join(out, 'info.txt'));
      const r = await runCli(['extract', SAMPLE, out]);
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.equal(`vmssfs: ${path.join(out, 'info.txt')}: already exists (give --force to replace existing files)\n`);
      expect(fs.readFileSync(target, 'utf8')).to.equal('not yours\n');
      expect(fs.readdirSync(out)).to.deep.equal(['info.txt']);
    });

    it('with --force replaces the link itself, never its target', async () => {
      const target = victim();
      const out = outDir();
      fs.symlinkSync(target, path.join(out, 'info.txt'));
      const r = await runCli(['extract', '--force', SAMPLE, out, 'info.txt']);
      expect(r.code, r.stderr).to.equal(0);
      expect(fs.readFileSync(target, 'utf8')).to.equal('not yours\n');
      const st = fs.lstatSync(path.join(out, 'info.txt'));
      expect(st.isFile()).to.equal(true);
      expect(fs.readFileSync(path.join(out, 'info.txt'), 'utf8')).to.match(/^Magic: 0xbed2bed2/);
    });

    it('refuses a link planted at a directory\'s place, with or without --force', async () => {
      const elsewhere = fs.mkdtempSync(path.join(tmp.dir, 'elsewhere-'));
      const out = outDir();
      fs.symlinkSync(elsewhere, path.join(out, 'groups'));
      for (const force of [[], ['--force']]) {
        const r = await runCli(['extract', ...force, SAMPLE, out, 'groups/cpu']);
        expect(r.code, r.stderr).to.equal(1);
        expect(r.stderr).to.equal(`vmssfs: ${path.join(out, 'groups')}: is a symbolic link; extract never follows links under OUTDIR\n`);
        expect(fs.readdirSync(elsewhere)).to.deep.equal([]);
      }
    });

    it('refuses to overwrite an existing file unless --force, and makes read-only files', async () => {
      const out = outDir();
      expect((await runCli(['extract', SAMPLE, out, 'config.vmx', 'groups/cpu'])).code).to.equal(0);
      const mode = (p: string): number => fs.statSync(path.join(out, p)).mode & 0o777;
      expect(mode('config.vmx')).to.equal(0o444);
      expect(mode('groups/cpu/rip[0]')).to.equal(0o444);
      fs.chmodSync(path.join(out, 'config.vmx'), 0o644);
      fs.writeFileSync(path.join(out, 'config.vmx'), 'edited\n');
      const again = await runCli(['extract', SAMPLE, out, 'screenshot.png', 'config.vmx']);
      expect(again.code).to.equal(1);
      expect(again.stderr).to.equal(`vmssfs: ${path.join(out, 'config.vmx')}: already exists (give --force to replace existing files)\n`);
      expect(fs.readFileSync(path.join(out, 'config.vmx'), 'utf8')).to.equal('edited\n');
      expect(fs.existsSync(path.join(out, 'screenshot.png')), 'nothing written before the refusal').to.equal(false);
      const forced = await runCli(['extract', '--force', SAMPLE, out, 'screenshot.png', 'config.vmx']);
      expect(forced.code, forced.stderr).to.equal(0);
      expect(fs.readFileSync(path.join(out, 'config.vmx'), 'utf8')).to.not.equal('edited\n');
      expect(mode('config.vmx')).to.equal(0o444);
    });
  });
});
