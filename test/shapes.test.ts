// Shapes real VMware products write beyond the writer's usual layout, proven through the kernel:
// a lost memory group served only on request, memory files named otherwise, ESXi guest dumps.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { cpuRegisters, writeGuestDump, writeSnapshot } from './kit/writer';
import { TestMount } from './helpers/mount';
import { tempDir } from './helpers/paths';
import { readRange, sha256File } from './helpers/read';
import { runCommand } from './helpers/run';

const PAGE = 4096;

describe('shapes through the kernel', function () {
  this.timeout(60_000);
  const tmp = tempDir('vmssfs-shapes-');
  after(() => tmp.cleanup());

  describe('a memory group lost past the end of the file, with its .vmem beside it', () => {
    let file: string;
    let vmem: string;
    before(() => {
      const w = writeSnapshot(path.join(tmp.dir, 'lost.vmss'), {
        memory: 'vmem', blobPages: 8, regions: [{ ppn: 0, pageNum: 0, pages: 4 }, { ppn: 0x100000, pageNum: 4, pages: 4 }],
      });
      const mem = w.groups.find((g) => g.name === 'memory')!;
      const off = Buffer.alloc(8);
      off.writeBigUInt64LE(BigInt(w.fileSize + PAGE));
      const fd = fs.openSync(w.path, 'r+');
      fs.writeSync(fd, off, 0, 8, mem.tableOffset + 64);
      fs.closeSync(fd);
      file = w.path;
      vmem = w.vmemPath as string;
    });

    it('mounts without physmem.raw; info.txt and the mount\'s stderr say why and name --assume-flat', async () => {
      const m = await TestMount.start(file);
      try {
        expect(fs.existsSync(m.path('physmem.raw'))).to.equal(false);
        const info = await fs.promises.readFile(m.path('info.txt'), 'utf8');
        expect(info).to.match(/Physical memory: not served: the memory group is damaged .*the layout of guest memory is unknown.*--assume-flat/);
        expect(m.stderr).to.include('--assume-flat');
      } finally {
        await m.unmount();
      }
    });

    it('with --assume-flat, physmem.raw is the .vmem byte for byte, and metadata.json warns what was assumed', async () => {
      const m = await TestMount.start(file, ['--assume-flat']);
      try {
        expect((await fs.promises.stat(m.path('physmem.raw'))).size).to.equal(8 * PAGE);
        expect(await sha256File(m.path('physmem.raw'))).to.equal(await sha256File(vmem));
        const meta = JSON.parse(await fs.promises.readFile(m.path('metadata.json'), 'utf8')) as { warnings: string[]; physmemError: string | null };
        expect(meta.physmemError).to.equal(null);
        expect(meta.warnings.join('\n')).to.match(/--assume-flat serves .*lost\.vmem as memory from address 0, as asked/);
      } finally {
        await m.unmount();
      }
    });
  });

  describe('a memory file named otherwise', () => {
    it('the mount serves the one .vmem of the folder that fits, and its stderr and info.txt name it', async () => {
      const dir = path.join(tmp.dir, 'renamed');
      fs.mkdirSync(dir);
      const w = writeSnapshot(path.join(dir, 'Suspended.vmss'), {
        memory: 'vmem', blobPages: 8, regions: [{ ppn: 0, pageNum: 0, pages: 4 }, { ppn: 0x100, pageNum: 4, pages: 4 }], vmemPath: path.join(dir, '564d-uuid-copy.vmem'),
      });
      fs.writeFileSync(path.join(dir, 'other.vmem'), Buffer.alloc(3 * PAGE));
      const m = await TestMount.start(w.path);
      try {
        expect(await sha256File(m.path('physmem.raw'))).to.equal(w.physSha256());
        expect(m.stderr).to.include(`vmssfs: warning: memory file: ${w.vmemPath} (Suspended.vmem is not beside Suspended.vmss;`);
        expect(await fs.promises.readFile(m.path('info.txt'), 'utf8')).to.include(`Memory file: ${w.vmemPath}\n`);
      } finally {
        await m.unmount();
      }
    });
  });

  describe('ESXi guest dumps: debug.guest with debug.vmem', () => {
    for (const version of [1, 4, 7]) {
      it(`version ${version}: physmem.raw with the holes put back, LiME runs, gdb finds every vCPU's registers, info.txt and metadata.json describe it`, async () => {
        const dir = path.join(tmp.dir, `guest-v${version}`);
        fs.mkdirSync(dir);
        const w = writeGuestDump(path.join(dir, 'debug.guest'), { version, vcpus: 2, totalPages: 96, holes: [{ ppn: 16, pages: 32 }, { ppn: 64, pages: 8 }] });
        const m = await TestMount.start(w.path);
        try {
          expect(fs.readdirSync(m.mountpoint).sort()).to.deep.equal(['info.txt', 'metadata.json', 'physmem.elf', 'physmem.lime', 'physmem.raw']);
          const raw = m.path('physmem.raw');
          expect((await fs.promises.stat(raw)).size).to.equal(96 * PAGE);
          const want = createHash('sha256').update(w.readPhys(0, w.physSize)).digest('hex');
          expect(await sha256File(raw)).to.equal(want);
          // A page above both holes sits at its own address, the holes read as zeros.
          expect((await readRange(raw, 80 * PAGE, 28)).toString('latin1')).to.equal(`vmssfs page 0x${(80 * PAGE).toString(16).padStart(13, '0')}\n`);
          expect((await readRange(raw, 20 * PAGE, PAGE)).equals(Buffer.alloc(PAGE))).to.equal(true);

          const lime = await fs.promises.readFile(m.path('physmem.lime'));
          const starts: number[] = [];
          for (let o = 0; o < lime.length;) {
            expect(lime.readUInt32LE(o)).to.equal(0x4c694d45);
            const start = Number(lime.readBigUInt64LE(o + 8));
            const len = Number(lime.readBigUInt64LE(o + 16)) - start + 1;
            expect(lime.subarray(o + 32, o + 32 + len).equals(w.readPhys(start, len)), `LiME run at ${start}`).to.equal(true);
            starts.push(start);
            o += 32 + len;
          }
          expect(starts).to.deep.equal(w.runs.map((r) => r.physAddr));

          const gdb = await runCommand('gdb', ['-nx', '-batch', '-c', m.path('physmem.elf'), '-ex', 'info threads', '-ex', 'thread apply all info registers']);
          expect(gdb.code, gdb.stderr).to.equal(0);
          for (const c of [0, 1]) {
            const block = gdb.stdout.split(/^Thread /m).find((b) => b.startsWith(`${c + 1} (LWP ${c + 1})`)) as string;
            expect(block, `thread of vCPU ${c}`).to.be.a('string');
            const R = cpuRegisters(c);
            for (const r of ['rax', 'rbx', 'rsp', 'rbp', 'r15', 'rip', 'eflags', 'cs', 'ss', 'fs', 'gs']) {
              const row = new RegExp(`^${r}\\s+0x([0-9a-f]+)`, 'm').exec(block);
              expect(row && BigInt(`0x${row[1]}`), `vCPU ${c} ${r}`).to.equal(R[r]);
            }
          }

          const info = await fs.promises.readFile(m.path('info.txt'), 'utf8');
          expect(info).to.include(`ESXi guest dump: ${w.path}`);
          expect(info).to.include(`Header version: ${version} (`);
          expect(info).to.include('Hole: guest-physical 0x10000-0x30000 (32 pages, not stored)');
          expect(info).to.include(`Memory file: ${w.vmemPath}`);
          const meta = JSON.parse(await fs.promises.readFile(m.path('metadata.json'), 'utf8')) as { format: string; version: number; vcpus: { registers: Record<string, string> }[]; physmem: { runs: unknown[] } };
          expect([meta.format, meta.version, meta.physmem.runs.length]).to.deep.equal(['esxi-guest-dump', version, 3]);
          expect(meta.vcpus[1]?.registers.cr3).to.equal('0x' + (cpuRegisters(1).cr3 as bigint).toString(16));
        } finally {
          await m.unmount();
        }
      });
    }

    it('an AArch64 dump: memory served, an EM_AARCH64 core without notes, and a note saying the CPU state is not described', async () => {
      const dir = path.join(tmp.dir, 'guest-arm');
      fs.mkdirSync(dir);
      const w = writeGuestDump(path.join(dir, 'debug.guest'), { version: 7, arch: 0, vcpus: 4, totalPages: 32 });
      const m = await TestMount.start(w.path);
      try {
        expect(await sha256File(m.path('physmem.raw'))).to.equal(await sha256File(w.vmemPath as string));
        const r = await runCommand('readelf', ['-W', '-h', '-l', m.path('physmem.elf')]);
        expect(r.code, r.stderr).to.equal(0);
        expect(r.stdout).to.match(/Machine:\s+AArch64/);
        expect(r.stdout).to.not.match(/^\s+NOTE\s/m);
        expect(await fs.promises.readFile(m.path('info.txt'), 'utf8')).to.match(/WARNING: physmem\.elf: an AArch64 guest dump: an EM_AARCH64 core without CPU state/);
      } finally {
        await m.unmount();
      }
    });
  });
});
