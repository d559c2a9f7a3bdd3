// Memory without region tags (one region from address 0): a plain Memory block beside
// regionsCount = 0, and a flat .vmem cut short, read through the kernel and by `info`.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSnapshot } from './kit/writer';
import type { InfoJson } from '../src/evidence/info';
import { TestMount } from './helpers/mount';
import { tempDir } from './helpers/paths';
import { readRange, sha256File } from './helpers/read';
import { runCli, runCommand } from './helpers/run';

const MiB = 1024 * 1024;

describe('memory without region tags', function () {
  this.timeout(60_000);
  const tmp = tempDir('vmssfs-flat-');
  const mounts: TestMount[] = [];
  after(async () => {
    for (const m of mounts) await m.unmount();
    tmp.cleanup();
  });

  it('a plain Memory block beside memory/regionsCount = 0 is memory from address 0, as without the tag', async () => {
    const w = writeSnapshot(path.join(tmp.dir, 'zero.vmss'), { memory: 'embedded', blobPages: 72, memoryIndices: [], regionsCountZero: true });
    const info = await runCli(['info', '--json', w.path]);
    expect(info.code, info.stderr).to.equal(0);
    const j = JSON.parse(info.stdout) as InfoJson;
    expect(j.physmemError).to.equal(null);
    expect(j.groups.find((g) => g.name === 'memory')?.tags.map((t) => `${t.name}=${t.value}`)).to.include('regionsCount=0x0');
    const m = await TestMount.start(w.path);
    mounts.push(m);
    expect((await fs.promises.stat(m.path('physmem.raw'))).size).to.equal(72 * 4096);
    expect(await sha256File(m.path('physmem.raw'))).to.equal(w.physSha256());
  });

  describe('a flat .vmem cut short (300000 bytes of the 1 MiB Checkpoint/memSize states)', () => {
    let vmem: string;
    let meta: string;
    before(() => {
      const w = writeSnapshot(path.join(tmp.dir, 'cut.vmss'), { memory: 'vmem', blobPages: 256 });
      meta = w.path;
      vmem = w.vmemPath as string;
      fs.truncateSync(vmem, 300_000);
    });

    it('info: physical memory keeps the size the checkpoint states, and a warning names the missing range', async () => {
      const r = await runCli(['info', '--json', meta]);
      expect(r.code, r.stderr).to.equal(0);
      const j = JSON.parse(r.stdout) as InfoJson;
      expect(j.physmem?.size).to.equal(MiB);
      expect(j.warnings).to.include(`guest-physical 0x493e0-0x100000 (${MiB - 300_000} bytes) lies beyond the end of ${vmem} (300000 bytes): truncated copy; it reads as zeros`);
    });

    it('through the mount: 1 MiB, the bytes the file holds unchanged, the tail as for regions cut short, the warning on stderr', async () => {
      const m = await TestMount.start(meta);
      mounts.push(m);
      const raw = m.path('physmem.raw');
      expect((await fs.promises.stat(raw)).size).to.equal(MiB);
      const cmp = await runCommand('cmp', ['-n', '300000', raw, vmem]);
      expect(cmp.code, cmp.stdout + cmp.stderr).to.equal(0);
      expect((await readRange(raw, 300_000, MiB - 300_000)).equals(Buffer.alloc(MiB - 300_000))).to.equal(true);
      expect(m.stderr).to.match(/warning: guest-physical 0x493e0-0x100000 .*truncated copy/);
    });
  });
});
