import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cpuRegisters, writeSnapshot, type CpuLayout, type WrittenSnapshot } from './kit/writer';
import { TestMount } from './helpers/mount';
import { tempDir } from './helpers/paths';
import { runCommand } from './helpers/run';

/**
 * Tools nobody here wrote, run on the mount, find what the guest had at the right guest-physical
 * addresses. Every page the writer stores begins with `vmssfs page 0x<its guest-physical address>`.
 */
describe('raw-memory tools on the mount', function () {
  this.timeout(60_000);
  const tmp = tempDir();
  let w: WrittenSnapshot;
  let m: TestMount;
  const mappedPages = 64 + 32;
  before(async () => {
    w = writeSnapshot(path.join(tmp.dir, 'tools.vmss'), {
      memory: 'embedded',
      blobPages: mappedPages + 8,
      // A hole between 256 KiB and 4 MiB, and blob pages that no region maps (they must not show).
      regions: [{ ppn: 0, pageNum: 0, pages: 64 }, { ppn: 1024, pageNum: 72, pages: 32 }],
    });
    m = await TestMount.start(w.path);
  });
  after(async () => {
    await m.unmount();
    tmp.cleanup();
  });

  it('strings -t d finds each page marker at the offset it names', async () => {
    const r = await runCommand('strings', ['-t', 'd', m.path('physmem.raw')]);
    expect(r.code, r.stderr).to.equal(0);
    // A string may start with printable bytes from the end of the page before: the marker's own
    // offset is the string's plus where the marker starts in it.
    const markers = r.stdout.split('\n').map((l) => /^\s*(\d+) (.*?)vmssfs page 0x([0-9a-f]{13})$/.exec(l)).filter((x) => x !== null);
    expect(markers).to.have.length(mappedPages);
    for (const [, offset, before, named] of markers) {
      expect(Number(offset) + Buffer.byteLength(before as string, 'latin1')).to.equal(parseInt(named as string, 16));
    }
    expect(r.stdout).to.not.include('unmapped blob page');
  });

  it('yara matches a rule at the guest-physical address of the page', async () => {
    const rules = path.join(tmp.dir, 'pages.yar');
    fs.writeFileSync(rules, [
      'rule guest_pages {',
      '  strings:',
      '    $low = "vmssfs page 0x0000000001000"',
      '    $high = "vmssfs page 0x0000000400000"',
      '  condition: all of them',
      '}',
      '',
    ].join('\n'));
    const r = await runCommand('yara', ['-s', rules, m.path('physmem.raw')]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.include('guest_pages');
    expect(r.stdout).to.match(/^0x1000:\$low: vmssfs page 0x0000000001000$/m);
    expect(r.stdout).to.match(/^0x400000:\$high: vmssfs page 0x0000000400000$/m);
  });

  it('getfattr shows where a tag sits in the snapshot file', async () => {
    const t = w.tag('cpu/gpregs[0]');
    const r = await runCommand('getfattr', ['-d', '-m', '^user\\.vmss\\.', m.path('groups', 'cpu', 'gpregs[0]')]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.include(`user.vmss.offset="${t.dataOffset}"`);
    expect(r.stdout).to.include(`user.vmss.size="${t.size}"`);
    expect(r.stdout).to.include('user.vmss.flags="block"');
    const none = await runCommand('getfattr', ['-n', 'user.vmss.nothing', m.path('groups', 'cpu', 'gpregs[0]')]);
    expect(none.code).to.not.equal(0);
    expect(none.stderr).to.match(/No such attribute/);
  });

  it('readelf reads physmem.elf: one LOAD per run at its guest-physical address', async () => {
    const r = await runCommand('readelf', ['-W', '-h', '-l', m.path('physmem.elf')]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/Type:\s+CORE/);
    const loads = r.stdout.split('\n').filter((l) => /^\s+LOAD\s/.test(l)).map((l) => l.trim().split(/\s+/));
    expect(loads.map((f) => [Number(f[3]), Number(f[4])])).to.deep.equal(w.runs.map((run) => [run.physAddr, run.length]));
  });
});

/** `gdb -c physmem.elf`: gdb's own core reader finds each vCPU as a thread with its registers. */
describe('gdb reads physmem.elf\'s vCPU registers through the mount, in both CPU-state layouts', function () {
  this.timeout(60_000);
  const tmp = tempDir();
  after(() => tmp.cleanup());
  /** gdb's `info registers` rows: name, hex value. */
  function threads(out: string): Map<number, Map<string, bigint>> {
    const byThread = new Map<number, Map<string, bigint>>();
    let cur: Map<string, bigint> | null = null;
    for (const line of out.split('\n')) {
      const t = /^Thread (\d+) \(LWP (\d+)\):/.exec(line);
      if (t) {
        cur = new Map();
        byThread.set(Number(t[2]), cur);
        continue;
      }
      const r = /^([a-z0-9_]+)\s+(0x[0-9a-f]+)\s/.exec(line);
      if (r && cur) cur.set(r[1] as string, BigInt(r[2] as string));
    }
    return byThread;
  }
  for (const [layout, eflagsName] of [['older', 'EFLAGS'], ['newer', 'eflags']] as [CpuLayout, 'eflags' | 'EFLAGS'][]) {
    it(`${layout} layout: one thread per vCPU, every general, segment and flag register as written`, async () => {
      const w = writeSnapshot(path.join(tmp.dir, `gdb-${layout}.vmss`), { memory: 'embedded', blobPages: 4, vcpus: 3, cpuLayout: layout, eflagsName });
      const m = await TestMount.start(w.path);
      try {
        const r = await runCommand('gdb', ['-nx', '-batch', '-c', m.path('physmem.elf'), '-ex', 'info threads', '-ex', 'thread apply all info registers']);
        expect(r.code, r.stderr).to.equal(0);
        const seen = threads(r.stdout);
        // pr_pid is vCPU + 1: gdb names each thread "LWP <pr_pid>".
        expect([...seen.keys()].sort()).to.deep.equal([1, 2, 3]);
        for (const [lwp, regs] of seen) {
          const want = cpuRegisters(lwp - 1);
          for (const name of ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'eflags', 'cs', 'ss', 'ds', 'es', 'fs', 'gs']) {
            expect(regs.get(name), `vCPU ${lwp - 1} ${name}`).to.equal(want[name]);
          }
        }
      } finally {
        await m.unmount();
      }
    });
  }
});
