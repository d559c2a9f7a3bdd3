// The project as a user receives it: a version to quote in a report, a package that ships the
// tool and its documentation but no tests or fixtures, and nothing that points outside the clone.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO } from './helpers/paths';
import { runCli, runCommand } from './helpers/run';

const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };

describe('the project', function () {
  this.timeout(60_000);

  for (const flag of ['--version', '-V']) {
    it(`vmssfs ${flag} prints the package's version and exits 0`, async () => {
      const r = await runCli([flag]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.equal(`vmssfs ${pkg.version}\n`);
      expect(r.stderr).to.equal('');
    });
  }

  it('the usage names --version', async () => {
    const r = await runCli(['--help']);
    expect(r.stdout).to.match(/vmssfs --version \| -V/);
  });

  it('the package ships the built tool, its launcher and its documentation, and no tests or fixtures', async () => {
    const r = await runCommand('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: REPO });
    expect(r.code, r.stderr).to.equal(0);
    const [listing] = JSON.parse(r.stdout) as { files: { path: string }[] }[];
    const files = listing!.files.map((f) => f.path);
    expect(files).to.include.members(['bin/vmssfs', 'dist/src/cli/main.js', 'dist/src/evidence/snapshot.js', 'README.md', 'docs/format.md', 'package.json']);
    const stray = files.filter((f) => /^(test|fixtures|scripts|src|dist\/(test|scripts))\//.test(f) || f.endsWith('.map'));
    expect(stray).to.deep.equal([]);
  });

  it('no tracked file names a path outside the repository', async () => {
    // Built from pieces so that this file does not match itself.
    const outside = ['\\.\\./' + 'shared', '/' + 'work/'].join('|');
    const r = await runCommand('git', ['grep', '-nE', outside, '--', '.', ':!package-lock.json'], { cwd: REPO });
    expect(r.stdout).to.equal('');
    expect(r.code).to.equal(1); // git grep: 1 = no match, anything else = it could not look
  });
});
