// Shapes real VMware products write beyond the writer's usual layout, proven through the kernel:
// a lost memory group served only on request, memory files named otherwise, ESXi guest dumps.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSnapshot } from '../scripts/writer';
import { TestMount } from './helpers/mount';
import { tempDir } from './helpers/paths';
import { sha256File } from './helpers/read';

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
});
