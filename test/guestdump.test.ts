// ESXi guest dumps (src/format/guestdump.ts, src/evidence/guest.ts): every header version crash reads,
// the holes put back, each vCPU's registers, and everything that is not a guest dump refused.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cpuRegisters, writeGuestDump, type GuestDumpOptions, type WrittenGuestDump } from './kit/writer';
import { USER_REGS } from '../src/format/cpu';
import { VmssError } from '../src/errors';
import { guestRuns, NotGuestDump, readGuestDump } from '../src/format/guestdump';
import { SourceFile } from '../src/io/source';
import { openEvidence } from '../src/evidence/open';
import { scratchDir } from './helpers/paths';
import { runCli } from './helpers/run';

const PAGE = 4096;
const HOLES = [{ ppn: 16, pages: 16 }, { ppn: 40, pages: 8 }];

describe('ESXi guest dumps', () => {
  const scratch = scratchDir('vmssfs-guest-');
  /** A fresh folder holding debug.guest (+ debug.vmem). */
  const dump = (opts: Partial<GuestDumpOptions> = {}): WrittenGuestDump => {
    const dir = scratch.file('');
    fs.mkdirSync(dir);
    return writeGuestDump(path.join(dir, 'debug.guest'), { version: 7, vcpus: 2, totalPages: 64, holes: HOLES, ...opts });
  };
  const header = (file: string) => {
    const src = SourceFile.open(file);
    try {
      return readGuestDump(src);
    } finally {
      src.close();
    }
  };

  for (const version of [1, 3, 4, 5, 6, 7]) {
    it(`version ${version}: header, holes put back, and every vCPU's registers as written`, () => {
      const w = dump({ version, vcpus: 3 });
      const h = header(w.path);
      expect([h.version, h.vcpuCount, h.memoryPages, h.holes, h.arch]).to.deep.equal([version, 3, 40, HOLES, 'x86_64']);
      expect(guestRuns(h)).to.deep.equal(w.runs.map((r) => ({ start: r.physAddr, length: r.length, fileOffset: r.fileOffset })));
      const ev = openEvidence(w.path);
      try {
        expect(ev.checkpoint).to.equal(null);
        expect(ev.physmemError).to.equal(null);
        expect(ev.warnings).to.deep.equal([]);
        expect(ev.physmem?.size).to.equal(64 * PAGE);
        const cpu = ev.cpuState();
        expect(cpu.vcpus.map((v) => v.index)).to.deep.equal([0, 1, 2]);
        for (const v of cpu.vcpus) {
          const want = cpuRegisters(v.index);
          for (const r of USER_REGS) expect(v.regs.get(r), `v${version} vCPU ${v.index} ${r}`).to.equal(r === 'orig_rax' ? 0xffffffffffffffffn : want[r]);
          for (const r of ['cr0', 'cr2', 'cr3', 'cr4', 'idtr_base'] as const) expect(v.system.get(r), r).to.equal(want[r]);
        }
      } finally {
        ev.close();
      }
    });
  }

  it('no holes: debug.vmem is memory from 0', () => {
    const w = dump({ holes: [] });
    expect(guestRuns(header(w.path))).to.deep.equal([{ start: 0, length: 64 * PAGE, fileOffset: 0 }]);
  });

  it('the debug.vmem given instead pairs with its debug.guest', () => {
    const w = dump();
    const ev = openEvidence(w.vmemPath as string);
    try {
      expect(ev.metaFile.name).to.equal(w.path);
      expect(ev.memoryPath).to.equal(w.vmemPath);
    } finally {
      ev.close();
    }
  });

  it('an AArch64 dump (version 7, architecture 0) serves its memory and says its CPU state is not described', () => {
    const w = dump({ arch: 0 });
    const ev = openEvidence(w.path);
    try {
      expect(ev.physmem?.size).to.equal(64 * PAGE);
      const cpu = ev.cpuState();
      expect(cpu.arch).to.equal('aarch64');
      expect(cpu.vcpus).to.deep.equal([]);
      expect(cpu.notes.join()).to.match(/AArch64 guest dump: an EM_AARCH64 core without CPU state/);
      expect(ev.infoText(ev.warnings)).to.include('CPU architecture: AArch64');
    } finally {
      ev.close();
    }
  });

  it('`ls -l`, `cat` and `extract` serve the same tree without FUSE', async () => {
    const w = dump();
    const ls = await runCli(['ls', '-l', w.path]);
    expect(ls.code, ls.stderr).to.equal(0);
    expect(ls.stdout).to.match(new RegExp(`^-r--r--r-- +${64 * PAGE} physmem\\.raw$`, 'm'));
    expect(ls.stdout.split('\n').map((l) => l.split(' ').pop()).filter(Boolean)).to.deep.equal(['physmem.raw', 'physmem.lime', 'physmem.elf', 'info.txt', 'metadata.json']);
    const out = path.join(path.dirname(w.path), 'out');
    const ex = await runCli(['extract', w.path, out]);
    expect(ex.code, ex.stderr).to.equal(0);
    expect(fs.readFileSync(path.join(out, 'physmem.raw')).equals(w.readPhys(0, w.physSize))).to.equal(true);
    expect(fs.readFileSync(path.join(out, 'info.txt'), 'utf8')).to.match(/^ESXi guest dump: /);
  });

  describe('bad input: one clear line, nothing invented', () => {
    /** Patch bytes of a written dump. */
    const patch = (file: string, at: number, bytes: Buffer): void => {
      const fd = fs.openSync(file, 'r+');
      try {
        fs.writeSync(fd, bytes, 0, bytes.length, at);
      } finally {
        fs.closeSync(fd);
      }
    };
    const u32 = (v: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(v >>> 0);
      return b;
    };
    const refused = (file: string, reason: RegExp): void => {
      expect(() => header(file)).to.throw(NotGuestDump, reason);
      let err: unknown;
      try {
        openEvidence(file).close();
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(VmssError);
      expect((err as Error).message).to.match(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not a VMware checkpoint \\(.*\\); nor an ESXi guest dump: `));
      expect((err as Error).message).to.not.include('\n');
    };

    it('an absurd vCPU count', () => {
      const w = dump();
      patch(w.path, 4, u32(0xffffffff));
      refused(w.path, /absurd vCPU count 4294967295/);
    });
    it('a vCPU count the file size does not hold', () => {
      const w = dump();
      patch(w.path, 4, u32(3));
      refused(w.path, /bytes, where 3 vCPUs after a version 7 header make/);
    });
    it('an absurd hole count', () => {
      const w = dump();
      patch(w.path, 8 + 8 + 20, u32(1000));
      refused(w.path, /1000 memory holes \(at most 2\)/);
    });
    it('a memory size that does not add up with the holes', () => {
      const w = dump();
      patch(w.path, 8 + 8 + 8, u32(47));
      refused(w.path, /is not \(47 memory pages \+ 24 hole pages\) × 4096/);
    });
    it('an unknown header version (2, 8)', () => {
      for (const v of [2, 8]) {
        const w = dump();
        patch(w.path, 0, u32(v));
        refused(w.path, new RegExp(`header version ${v} is none of`));
      }
    });
    it('an unknown architecture code', () => {
      const w = dump();
      patch(w.path, 8 + 8 + 56, u32(7));
      refused(w.path, /CPU architecture 7/);
    });
    it('a text file named .guest', () => {
      const file = path.join(scratch.file(''), 'notes.guest');
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, 'nothing to see here\n'.repeat(10));
      refused(file, /header version/);
    });

    it('a debug.vmem larger than the memory described: the header is served, memory is not, and why', () => {
      const w = dump();
      fs.appendFileSync(w.vmemPath as string, Buffer.alloc(PAGE));
      const ev = openEvidence(w.path);
      try {
        expect(ev.physmem).to.equal(null);
        expect(ev.physmemError).to.equal(`${w.vmemPath} holds ${41 * PAGE} bytes, but debug.guest describes ${40 * PAGE} bytes of memory: not this dump's memory file (give the right one with --vmem FILE)`);
      } finally {
        ev.close();
      }
    });

    it('a debug.vmem cut short: served, the missing range named and read as zeros', () => {
      const w = dump();
      fs.truncateSync(w.vmemPath as string, 32 * PAGE);
      const ev = openEvidence(w.path);
      try {
        expect(ev.physmem?.size).to.equal(64 * PAGE);
        // Stored page 32 is guest page 32 + 24 (both holes) = 56.
        expect(ev.warnings).to.deep.equal([`guest-physical 0x${(56 * PAGE).toString(16)}-0x${(64 * PAGE).toString(16)} (${8 * PAGE} bytes) lies beyond the end of ${w.vmemPath} (${32 * PAGE} bytes): truncated copy; it reads as zeros`]);
      } finally {
        ev.close();
      }
    });

    it('no debug.vmem: the header is served, physmemError names --vmem; `info` exits 0', async () => {
      const w = dump({ vmem: false });
      const r = await runCli(['info', '--json', w.path]);
      expect(r.code, r.stderr).to.equal(0);
      const j = JSON.parse(r.stdout) as { physmem: unknown; physmemError: string; format: string; vcpus: unknown[] };
      expect(j.format).to.equal('esxi-guest-dump');
      expect(j.physmem).to.equal(null);
      expect(j.physmemError).to.equal('no memory found: debug.vmem is not beside debug.guest; give the memory file with --vmem FILE');
      expect(j.vcpus).to.have.length(2);
    });

    it('`vmssfs info` on a file that is no guest dump: exit 1, one line', async () => {
      const w = dump();
      patch(w.path, 4, u32(0xffffffff));
      const r = await runCli(['info', w.path]);
      expect(r.code).to.equal(1);
      expect(r.stdout).to.equal('');
      expect(r.stderr.trim().split('\n')).to.have.length(1);
      expect(r.stderr).to.match(/debug\.guest: not a VMware checkpoint .*; nor an ESXi guest dump: absurd vCPU count/);
    });
  });
});
