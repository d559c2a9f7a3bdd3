import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO, SAMPLE, tempDir } from './helpers/paths';
import { sha256File } from './helpers/read';
import { runCommand } from './helpers/run';

describe('fixtures', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  it('make fixtures regenerates the bundled sample byte for byte', async () => {
    const r = await runCommand(process.execPath, [path.join(REPO, 'dist', 'scripts', 'make-fixtures.js'), tmp.dir], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).to.equal(0);
    expect(await sha256File(path.join(tmp.dir, 'sample.vmss'))).to.equal(await sha256File(SAMPLE));
    expect(fs.readFileSync(path.join(tmp.dir, 'sample.sha256'), 'utf8')).to.equal(fs.readFileSync(path.join(REPO, 'fixtures', 'sample.sha256'), 'utf8'));
  }).timeout(60_000);
});
