import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFolderCheckpoint } from './kit/folder-writer';
import { layout } from '../src/commands/diff';
import { BIN, scratchDir } from './helpers/paths';
import { runCli, runCommand } from './helpers/run';
import { CHANGED, pageRanges, writeVault } from './helpers/vault';

const PAGE = 4096;

interface DiffJson {
  a: string;
  b: string;
  pageSize: number;
  changed: { start: number; length: number }[];
  onlyA: { start: number; length: number }[];
  onlyB: { start: number; length: number }[];
  unreadable: { start: number; length: number; side: string }[];
  counts: { compared: number; changed: number; onlyA: number; onlyB: number; unreadable: number };
}

async function diffJson(...args: string[]): Promise<DiffJson> {
  const r = await runCli(['diff', '--json', ...args], { timeoutMs: 60_000 });
  expect(r.code, r.stderr).to.equal(0);
  return JSON.parse(r.stdout) as DiffJson;
}

describe('diff: the layouts two checkpoints share', () => {
  it('cuts the space into both, only-A and only-B stretches; holes in both are left out', () => {
    const s = layout([{ start: 0, length: 100 }, { start: 200, length: 100 }], [{ start: 50, length: 100 }, { start: 400, length: 10 }]);
    expect(s).to.deep.equal([
      { start: 0, length: 50, inA: true, inB: false },
      { start: 50, length: 50, inA: true, inB: true },
      { start: 100, length: 50, inA: false, inB: true },
      { start: 200, length: 100, inA: true, inB: false },
      { start: 400, length: 10, inA: false, inB: true },
    ]);
  });

  it('merges adjacent runs of one side', () => {
    expect(layout([{ start: 0, length: 10 }, { start: 10, length: 10 }], [{ start: 0, length: 20 }])).to.deep.equal([{ start: 0, length: 20, inA: true, inB: true }]);
  });
});

describe('diff: which pages changed between checkpoints', function () {
  this.timeout(120_000);
  const scratch = scratchDir('vmssfs-diff-');
  let vault: string;
  before(() => {
    vault = scratch.named('vault');
    fs.mkdirSync(vault);
    writeVault(vault);
  });

  it('finds exactly the pages the writer changed between two snapshots of a folder', async () => {
    const d = await diffJson(`${vault}:clean install`, `${vault}:after sample`);
    expect(d.a).to.equal(`${vault}:clean install`);
    expect(d.pageSize).to.equal(PAGE);
    expect(d.changed).to.deep.equal(pageRanges(CHANGED.afterSample));
    expect(d.onlyA).to.deep.equal([]);
    expect(d.onlyB).to.deep.equal([]);
    expect(d.unreadable).to.deep.equal([]);
    expect(d.counts).to.deep.equal({ compared: 256, changed: CHANGED.afterSample.length, onlyA: 0, onlyB: 0, unreadable: 0 });
  });

  it('takes files and VMDIR:NAME alike, the suspended state included', async () => {
    const d = await diffJson(path.join(vault, 'vault-Snapshot2.vmsn'), `${vault}:suspended`);
    expect(d.changed).to.deep.equal(pageRanges(CHANGED.suspended));
    expect(d.counts.changed).to.equal(CHANGED.suspended.length);
  });

  it('reports nothing changed between a checkpoint and itself', async () => {
    const d = await diffJson(path.join(vault, 'vault-3-3c85c1f6.vmss'), `${vault}:suspended`);
    expect(d.changed).to.deep.equal([]);
    expect(d.counts).to.deep.equal({ compared: 256, changed: 0, onlyA: 0, onlyB: 0, unreadable: 0 });
  });

  it('compares what two memory layouts share and reports the rest as only-A and only-B', async () => {
    // "clean install": pages 0-255. "clean install~2": pages 0-127 and 256-383, the same pattern.
    const d = await diffJson(`${vault}:clean install`, `${vault}:clean install~2`);
    expect(d.changed).to.deep.equal([]);
    expect(d.onlyA).to.deep.equal([{ start: 128 * PAGE, length: 128 * PAGE }]);
    expect(d.onlyB).to.deep.equal([{ start: 256 * PAGE, length: 128 * PAGE }]);
    expect(d.counts).to.deep.equal({ compared: 128, changed: 0, onlyA: 128, onlyB: 128, unreadable: 0 });
  });

  it('uses --vmem-a and --vmem-b as the memory files', async () => {
    const d = await diffJson('--vmem-a', path.join(vault, 'vault-Snapshot2.vmem'), path.join(vault, 'vault-Snapshot1.vmsn'), `${vault}:after sample`);
    expect(d.changed).to.deep.equal([]);
  });

  it('prints merged ranges, sizes and counts as text by default, and no progress bar off a terminal', async () => {
    const r = await runCli(['diff', `${vault}:clean install`, `${vault}:suspended`]);
    expect(r.code).to.equal(0);
    expect(r.stderr).to.equal('');
    const lines = r.stdout.trim().split('\n');
    expect(lines.filter((l) => l.startsWith('changed'))).to.deep.equal([
      'changed    0x5000-0x8000  12 KiB',
      'changed    0x64000-0x65000  4 KiB',
      'changed    0xc8000-0xca000  8 KiB',
    ]);
    expect(lines[lines.length - 1]).to.equal('pages compared 256, changed 6 (3 ranges), only in A 0, only in B 0, unreadable 0; page size 4096 bytes');
  });

  it('merges a range across its reads, and finds the first and last pages', async () => {
    const dir = scratch.named('big');
    fs.mkdirSync(dir);
    const pages = 4096; // 16 MiB: sixteen steps
    const changed = [0, 254, 255, 256, 257, 2047, 2048, 4095];
    writeFolderCheckpoint(dir, { file: 'a.vmss', pages, sparse: true });
    writeFolderCheckpoint(dir, { file: 'b.vmss', pages, sparse: true, altered: new Map(changed.map((p) => [p, 1])) });
    const d = await diffJson(path.join(dir, 'a.vmss'), path.join(dir, 'b.vmss'));
    expect(d.changed).to.deep.equal(pageRanges(changed));
    expect(d.counts).to.deep.equal({ compared: pages, changed: changed.length, onlyA: 0, onlyB: 0, unreadable: 0 });
  });

  it('draws a progress bar on stderr when it is a terminal, and keeps stdout clean', async () => {
    // script(1) gives the command a terminal; stdout goes to a file, so what script echoes is stderr.
    const dir = scratch.named('tty');
    fs.mkdirSync(dir);
    const pages = 32768; // 128 MiB, sparse: above the size where a bar starts
    writeFolderCheckpoint(dir, { file: 'a.vmss', pages, sparse: true });
    writeFolderCheckpoint(dir, { file: 'b.vmss', pages, sparse: true, altered: new Map([[9, 1]]) });
    const out = path.join(dir, 'out.txt');
    const q = (p: string): string => `'${p.replace(/'/g, "'\\''")}'`;
    const r = await runCommand('script', ['-qec', `${q(process.execPath)} ${q(BIN)} diff ${q(path.join(dir, 'a.vmss'))} ${q(path.join(dir, 'b.vmss'))} > ${q(out)}`, '/dev/null'], { timeoutMs: 60_000 });
    expect(r.code, r.stdout).to.equal(0);
    expect(r.stdout).to.match(/\[#+\] 100% 128\.0\/128\.0 MiB/);
    const text = fs.readFileSync(out, 'utf8');
    expect(text).to.not.match(/MiB\r|\[#/);
    expect(text).to.match(/^changed {4}0x9000-0xa000 {2}4 KiB$/m);
  });

  it('keeps its memory bounded on a 1 GiB comparison (peak RSS under 128 MiB)', async () => {
    const dir = scratch.named('rss');
    fs.mkdirSync(dir);
    const pages = 262144; // 1 GiB, sparse
    const changed = [1, 65536, 262143];
    writeFolderCheckpoint(dir, { file: 'a.vmss', pages, sparse: true });
    writeFolderCheckpoint(dir, { file: 'b.vmss', pages, sparse: true, altered: new Map(changed.map((p) => [p, 1])) });
    const r = await runCommand(process.execPath, [path.join(__dirname, 'helpers', 'rss-cli.js'), 'diff', '--json', path.join(dir, 'a.vmss'), path.join(dir, 'b.vmss')], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).to.equal(0);
    expect((JSON.parse(r.stdout) as DiffJson).changed).to.deep.equal(pageRanges(changed));
    const kib = Number(/maxrss=(\d+)/.exec(r.stderr)?.[1]);
    expect(kib).to.be.above(0).and.below(128 * 1024);
  });

  it('refuses a checkpoint without memory, a missing one and an unknown name, in one line each', async () => {
    const cases: [string, RegExp][] = [
      [`${vault}:disk only`, /disk only: no memory to compare: snapshot "disk only" holds no guest memory/],
      [`${vault}:gone`, /gone: not served: vault-Snapshot5\.vmsn is missing/],
      [`${vault}:nothing`, /no checkpoint "nothing" \(its checkpoints: clean install, after sample, disk only, clean install~2, suspended\)/],
      [vault, /is a VM folder; name one of its checkpoints/],
    ];
    for (const [arg, re] of cases) {
      const r = await runCli(['diff', `${vault}:clean install`, arg]);
      expect(r.code, arg).to.equal(1);
      expect(r.stderr.trim().split('\n'), arg).to.have.length(1);
      expect(r.stderr, arg).to.match(re);
    }
  });
});
