import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkFile, fuzzCases, makeBases, RSS_LIMIT, writeCase } from '../scripts/fuzz';
import { writeSnapshot, type WrittenSnapshot } from './kit/writer';
import { isMounted, TestMount } from './helpers/mount';
import { REPO, SAMPLE, tempDir } from './helpers/paths';
import { readRange, sha256File } from './helpers/read';
import { runCli, runCommand, type RunResult } from './helpers/run';

const HELPERS = path.join(REPO, 'dist', 'test', 'helpers');
const CORPUS = path.join(REPO, 'test', 'corpus');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Exit 0 or 1, and stderr free of stack traces; when 1, exactly one line. */
function expectCleanOutcome(r: RunResult, what: string): void {
  expect([0, 1], `${what}: exit ${r.code} ${r.stderr}`).to.include(r.code);
  expect(r.stderr, what).to.not.match(/^\s+at /m);
  if (r.code === 1) expect(r.stderr.trim().split('\n'), what).to.have.length(1);
}

function runNode(script: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return runCommand(process.execPath, [path.join(HELPERS, script), ...args], { timeoutMs });
}

/** Two runs and a hole, 12 MiB of address space: reads cross runs, holes and chunk boundaries. */
const LAYOUT = {
  memory: 'embedded' as const,
  blobPages: 2048,
  regions: [
    { ppn: 0, pageNum: 0, pages: 1024 },
    { ppn: 1536, pageNum: 1024, pages: 512 },
    { ppn: 2560, pageNum: 1536, pages: 512 },
  ],
};

describe('hardening', function () {
  this.timeout(120_000);
  const tmp = tempDir();
  after(() => tmp.cleanup());

  describe('fuzzing with a fixed seed', () => {
    const bases = () => makeBases(fs.mkdtempSync(path.join(tmp.dir, 'bases-')));

    it('parses, renders and reads 1500 mutated files with a clean outcome each', async () => {
      const failures: string[] = [];
      const outcomes = { error: 0, served: 0 };
      for (const c of fuzzCases(bases(), 20261124, 1500)) {
        const input = writeCase(tmp.dir, 'fuzz', c);
        try {
          outcomes[(await checkFile(input)).outcome]++;
        } catch (err) {
          failures.push(`${c.base}: ${c.what}: ${(err as Error).message}`);
        }
      }
      expect(failures).to.deep.equal([]);
      // The mutations reach both outcomes: neither all refused nor all accepted.
      expect(outcomes.error).to.be.greaterThan(50);
      expect(outcomes.served).to.be.greaterThan(500);
    });

    it('keeps every input that ever failed as a regression case, and each now passes', async () => {
      const cases = fs.readdirSync(CORPUS).filter((f) => f.endsWith('.vmss') || f.endsWith('.guest'));
      expect(cases.length).to.be.greaterThan(0);
      for (const f of cases) {
        const file = path.join(CORPUS, f);
        await checkFile(file);
        expectCleanOutcome(await runCli(['info', file]), f);
      }
    });

    it('runs `info --json` on mutated files in bounded memory, without hanging, with one-line errors', async () => {
      let i = 0;
      for (const c of fuzzCases(bases(), 42, 16)) {
        const input = writeCase(tmp.dir, 'cli', c);
        // The kill after a minute is a watchdog for hangs, not a speed bound.
        const r = await runNode('rss-cli.js', ['info', '--json', input], 60_000);
        const maxrss = Number(/maxrss=(\d+)/.exec(r.stderr)?.[1]) * 1024;
        const stderr = r.stderr.replace(/maxrss=\d+\n$/, '');
        expectCleanOutcome({ ...r, stderr }, `case ${i++} ${c.what}`);
        expect(maxrss, c.what).to.be.lessThan(RSS_LIMIT);
        if (r.code === 0) expect(() => JSON.parse(r.stdout) as unknown).to.not.throw();
      }
    });

    it('mounts mutated files or refuses them in one line; what mounts can be listed and read', async () => {
      for (const c of fuzzCases(bases(), 99, 8)) {
        const input = writeCase(tmp.dir, 'mount', c);
        const mnt = fs.mkdtempSync(path.join(tmp.dir, 'fm-'));
        try {
          const r = await runCli([input, mnt], { timeoutMs: 60_000 });
          expectCleanOutcome(r, c.what);
          if (r.code !== 0) continue;
          const lister = await runNode('lister.js', [mnt, '1']);
          expect(lister.code, lister.stderr).to.equal(0);
          const top = await fs.promises.readdir(mnt);
          for (const name of top.filter((n) => n !== 'groups')) await readRange(path.join(mnt, name), 0, 4096);
        } finally {
          if (await isMounted(mnt)) await runCommand('fusermount', ['-u', mnt]);
        }
      }
    });
  });

  describe('concurrent readers', () => {
    let w: WrittenSnapshot;
    let m: TestMount;
    before(async () => {
      w = writeSnapshot(path.join(tmp.dir, 'concurrent.vmss'), LAYOUT);
      m = await TestMount.start(w.path, ['--cache-size', '4']);
    });
    after(async () => m.unmount());

    it('gives 8 readers at random offsets and sizes exactly the flat image while another process lists the tree', async () => {
      let seed = 12345;
      const rand = (n: number): number => {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        return seed % n;
      };
      const plans = Array.from({ length: 8 }, () =>
        Array.from({ length: 30 }, (): [number, number] => {
          const len = 1 + rand(1 << 20);
          return [rand(w.physSize), len];
        }));
      const lister = runNode('lister.js', [m.mountpoint, '20']);
      const results = await Promise.all(plans.map((p) => runNode('reader.js', [m.path('physmem.raw'), JSON.stringify(p)])));
      results.forEach((r, i) => {
        expect(r.code, r.stderr).to.equal(0);
        const want = (plans[i] as [number, number][]).map(([pos, len]) => createHash('sha256').update(w.readPhys(pos, len)).digest('hex'));
        expect(r.stdout.trim().split('\n'), `reader ${i}`).to.deep.equal(want);
      });
      const l = await lister;
      expect(l.code, l.stderr).to.equal(0);
      expect(Number(l.stdout)).to.be.greaterThan(20 * 50);
    });
  });

  describe('faults', () => {
    it('survives a reader killed mid-read and serves the next one', async () => {
      const m = await TestMount.start(SAMPLE);
      try {
        const dd = spawn('dd', [`if=${m.path('physmem.raw')}`, 'of=/dev/null', 'bs=1M'], { stdio: 'ignore' });
        await sleep(300);
        dd.kill('SIGKILL');
        await new Promise((r) => dd.on('close', r));
        const page = await readRange(m.path('physmem.raw'), 0x100000000, 28);
        expect(page.toString()).to.equal('vmssfs page 0x0000100000000\n');
        expect(await isMounted(m.mountpoint)).to.equal(true);
      } finally {
        await m.unmount();
      }
    });

    it('unmounts while readers are active: readers end, no mount and no daemon remain', async () => {
      const m = await TestMount.start(SAMPLE);
      try {
        const readers = Array.from({ length: 4 }, () => runCommand('dd', [`if=${m.path('physmem.raw')}`, 'of=/dev/null', 'bs=128k'], { timeoutMs: 30_000 }));
        await sleep(300);
        process.kill(m.pid, 'SIGTERM');
        expect(await m.waitExit()).to.equal(0);
        const ended = await Promise.all(readers);
        for (const r of ended) expect(r.signal, 'reader hung and was killed').to.equal(null);
        expect(await isMounted(m.mountpoint)).to.equal(false);
      } finally {
        await m.unmount();
      }
    });

    describe('an underlying read that fails (EIO from the source)', () => {
      let w: WrittenSnapshot;
      let faultyMnt: string;
      let faulty: ReturnType<typeof spawn>;
      let m: TestMount;
      // Bad bytes inside run 1 (guest-physical 6 MiB .. 8 MiB), far from the metadata and run 0.
      const badPhys = 1536 * 4096 + 256 * 4096;
      before(async () => {
        w = writeSnapshot(path.join(tmp.dir, 'faulty.vmss'), LAYOUT);
        const run = w.runs[1] as { physAddr: number; fileOffset: number };
        const badFile = run.fileOffset + (badPhys - run.physAddr);
        faultyMnt = fs.mkdtempSync(path.join(tmp.dir, 'faulty-'));
        faulty = spawn(process.execPath, [path.join(HELPERS, 'faulty-fs.js'), w.path, faultyMnt, String(badFile), String(badFile + 4096)], { stdio: 'ignore' });
        for (let i = 0; i < 200 && !(await isMounted(faultyMnt)); i++) await sleep(25);
        m = await TestMount.start(path.join(faultyMnt, 'evidence.vmss'));
      });
      after(async () => {
        await m?.unmount();
        if (await isMounted(faultyMnt)) await runCommand('fusermount', ['-u', faultyMnt]);
        faulty?.kill('SIGKILL');
      });

      it('reaches the reader as EIO, is logged, and the daemon goes on serving other reads', async () => {
        const err = await readRange(m.path('physmem.raw'), badPhys, 4096).then(() => null, (e: NodeJS.ErrnoException) => e);
        expect(err?.code).to.equal('EIO');
        expect(await readRange(m.path('physmem.raw'), 0, 4096)).to.deep.equal(w.readPhys(0, 4096));
        const again = await readRange(m.path('physmem.raw'), badPhys, 4096).then(() => null, (e: NodeJS.ErrnoException) => e);
        expect(again?.code, 'a failed chunk is not cached').to.equal('EIO');
        expect(m.stderr).to.match(/read \/physmem\.raw at \d+.*EIO/);
        expect(await isMounted(m.mountpoint)).to.equal(true);
      });
    });

    it('answers EIO, not zeros, for bytes of a source file truncated after mounting', async () => {
      const w = writeSnapshot(path.join(tmp.dir, 'shrinks.vmss'), LAYOUT);
      const m = await TestMount.start(w.path);
      try {
        const last = w.runs[w.runs.length - 1] as { physAddr: number; fileOffset: number };
        // This is the test's own copy, not evidence: cut it inside the last run.
        fs.truncateSync(w.path, last.fileOffset + 4096);
        const err = await readRange(m.path('physmem.raw'), last.physAddr + 64 * 4096, 4096).then(() => null, (e: NodeJS.ErrnoException) => e);
        expect(err?.code).to.equal('EIO');
        expect(await m.stderrShows(/shrank/), m.stderr).to.equal(true);
        expect(await readRange(m.path('physmem.raw'), 4096, 100)).to.deep.equal(w.readPhys(4096, 100));
      } finally {
        await m.unmount();
      }
    });
  });

  describe('stale mounts', () => {
    it('names a dead mount and how to clear it, and clears it with --clear-stale', async () => {
      const w = writeSnapshot(path.join(tmp.dir, 'stale.vmss'), LAYOUT);
      const m = await TestMount.start(w.path);
      try {
        process.kill(m.pid, 'SIGKILL');
        await m.waitExit();
        const st = await fs.promises.stat(m.mountpoint).then(() => null, (e: NodeJS.ErrnoException) => e.code);
        expect(st).to.equal('ENOTCONN');
        const refused = await runCli([w.path, m.mountpoint]);
        expect(refused.code).to.equal(1);
        expect(refused.stderr).to.match(/dead FUSE mount.*fusermount -u .*--clear-stale/);
        const cleared = await runCli([w.path, m.mountpoint, '--clear-stale']);
        expect(cleared.code, cleared.stderr).to.equal(0);
        expect((await fs.promises.stat(path.join(m.mountpoint, 'physmem.raw'))).size).to.equal(w.physSize);
      } finally {
        await m.unmount();
      }
    });
  });

  describe('telling the user what they gave it', () => {
    const cases: [string, Buffer | string, RegExp][] = [
      ['empty.vmss', Buffer.alloc(0), /empty\.vmss: empty file/],
      ['zeros.vmss', Buffer.alloc(65536), /zeros\.vmss: not a VMware checkpoint \(its first 65536 bytes are all zeros/],
      ['vm.vmss', '.encoding = "UTF-8"\nconfig.version = "8"\nmemsize = "4096"\n', /vm\.vmss: not a VMware checkpoint \(it is text: a \.vmx configuration/],
      ['notes.vmss', 'collected from host esx01\nsee ticket 42\n', /notes\.vmss: not a VMware checkpoint \(it is text/],
      ['encrypted.vmss', pseudoRandom(1 << 20), /encrypted\.vmss: not a VMware checkpoint \(.*encrypted or compressed/],
      ['core.vmss', Buffer.concat([Buffer.from('\x7fELF', 'latin1'), Buffer.alloc(60)]), /core\.vmss: not a VMware checkpoint \(it looks like an ELF file/],
    ];
    for (const [name, content, message] of cases) {
      it(`says what ${name} looks like`, async () => {
        const file = path.join(tmp.dir, name);
        fs.writeFileSync(file, content);
        const r = await runCli(['info', file]);
        expect(r.code).to.equal(1);
        expect(r.stderr.trim().split('\n')).to.have.length(1);
        expect(r.stderr).to.match(message);
      });
    }

    it('says which siblings it looked for when given a raw .vmem alone', async () => {
      const file = path.join(tmp.dir, 'lonely.vmem');
      fs.writeFileSync(file, Buffer.alloc(8192, 0x90));
      const r = await runCli(['info', file]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/lonely\.vmem: a raw \.vmem .*lonely\.vmss or lonely\.vmsn was not found.*--vmem/);
    });
  });

  describe('evidence integrity', () => {
    it('opens sources read-only (O_NOATIME) and leaves them bit-identical after reading everything', async () => {
      const w = writeSnapshot(path.join(tmp.dir, 'integrity.vmss'), { ...LAYOUT, memory: 'vmem' });
      const sources = [w.path, w.vmemPath as string];
      const hashes = await Promise.all(sources.map((f) => sha256File(f)));
      const times = sources.map((f) => fs.statSync(f).mtimeMs);
      const m = await TestMount.start(w.path);
      try {
        const fds = fs.readdirSync(`/proc/${m.pid}/fd`);
        // Every descriptor on the evidence (the native read path holds its own duplicates).
        const seen = new Set<string>();
        for (const fd of fds) {
          const target = fs.readlinkSync(`/proc/${m.pid}/fd/${fd}`);
          if (!sources.includes(target)) continue;
          seen.add(target);
          const flags = parseInt(/^flags:\s+([0-7]+)/m.exec(fs.readFileSync(`/proc/${m.pid}/fdinfo/${fd}`, 'utf8'))?.[1] ?? '', 8);
          expect(flags & 3, `${target} access mode`).to.equal(fs.constants.O_RDONLY);
          expect(flags & fs.constants.O_NOATIME, `${target} O_NOATIME`).to.not.equal(0);
        }
        expect([...seen].sort()).to.deep.equal([...sources].sort());
        const lister = await runNode('lister.js', [m.mountpoint, '1']);
        expect(lister.code).to.equal(0);
        expect(await sha256File(m.path('physmem.raw'))).to.equal(w.physSha256());
        // Every other top-level file is read whole too: "reading everything" is what must not touch the evidence.
        for (const f of await fs.promises.readdir(m.mountpoint)) if (f !== 'groups' && f !== 'physmem.raw') await sha256File(m.path(f));
      } finally {
        await m.unmount();
      }
      expect(await Promise.all(sources.map((f) => sha256File(f)))).to.deep.equal(hashes);
      expect(sources.map((f) => fs.statSync(f).mtimeMs)).to.deep.equal(times);
    });
  });
});

/** Deterministic bytes with the statistics of encrypted data. */
function pseudoRandom(n: number): Buffer {
  const out = Buffer.alloc(n);
  let block = Buffer.from('vmssfs');
  for (let i = 0; i < n; i += 32) {
    block = createHash('sha256').update(block).digest();
    block.copy(out, i);
  }
  return out;
}
