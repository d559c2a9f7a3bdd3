// Evidence on a web server: Debian's nginx (and, for the faults nginx cannot show, a small
// misbehaving server) on a loopback port, read through real mounts and the commands.

import { expect } from 'chai';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSnapshot, type WrittenSnapshot } from './kit/writer';
import { cmpFiles, daemonPid, writeVmFolder, type VmFolder } from './helpers/encrypted';
import { isMounted, TestMount } from './helpers/mount';
import { BIN, scratchDir, tempDir } from './helpers/paths';
import { runCli, runCommand } from './helpers/run';
import { COOKIE, LOGIN, MisbehavingServer, Nginx, SIGNATURE } from './kit/web-server';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const QUERY = `?dsName=datastore1&sig=${SIGNATURE}`;
/** Everything that must never show outside the request itself. */
const SECRETS = [LOGIN.password, COOKIE.split('=')[1] as string, SIGNATURE];

function expectNoSecret(text: string, where: string): void {
  for (const s of SECRETS) expect(text.includes(s), `${where} shows a secret (${s.slice(0, 4)}...)`).to.equal(false);
}

async function sha256(file: string): Promise<string> {
  const r = await runCommand('sha256sum', [file], { timeoutMs: 60_000 });
  expect(r.code, r.stderr).to.equal(0);
  return r.stdout.split(' ')[0] as string;
}

/** `vmssfs cat ARGS` into a file (the bytes as they are); its exit status, stderr and the file's sha256. */
async function catToFile(args: string[], out: string): Promise<{ code: number | null; stderr: string; sha: string }> {
  const fd = fs.openSync(out, 'w');
  try {
    const child = spawn(process.execPath, [BIN, 'cat', ...args], { stdio: ['ignore', fd, 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    return { code, stderr, sha: await sha256(out) };
  } finally {
    fs.closeSync(fd);
  }
}

/** The lines on stderr that are not warnings. */
function errorLines(stderr: string): string[] {
  return stderr.trim().split('\n').filter((l) => l !== '' && !l.startsWith('vmssfs: warning:'));
}

describe('evidence on a web server (nginx on loopback)', function () {
  this.timeout(120_000);
  const tmp = scratchDir('vmssfs-http-');
  let www: string;
  let nginx: Nginx;
  let snap: WrittenSnapshot;
  let enc: VmFolder;
  let netrc: string;
  let headerFile: string;
  const mounts: TestMount[] = [];

  before(async () => {
    www = path.join(tmp.dir, 'www');
    fs.mkdirSync(path.join(www, 'plain'), { recursive: true });
    // Two runs with a hole between them: physmem.raw is not the .vmem as it lies.
    snap = writeSnapshot(path.join(www, 'plain', 'vm.vmsn'), {
      memory: 'vmem', blobPages: 2048,
      regions: [{ ppn: 0, pageNum: 0, pages: 1024 }, { ppn: 0x1800, pageNum: 1024, pages: 1024 }],
    });
    // ESXi may name the memory file by a UUID, without extension.
    fs.copyFileSync(snap.vmemPath as string, path.join(www, 'plain', '564d0b1e-7a2f'));
    fs.mkdirSync(path.join(www, 'changing'));
    enc = writeVmFolder(path.join(www, 'enc'), { encrypt: true, compress: true, blobPages: 2048, blockSize: 1 << 20 });
    netrc = tmp.named('netrc');
    fs.writeFileSync(netrc, `machine 127.0.0.1\n  login ${LOGIN.user}\n  password ${LOGIN.password}\n`, { mode: 0o600 });
    headerFile = tmp.named('headers');
    fs.writeFileSync(headerFile, `# the datastore's session\nCookie: ${COOKIE}\n`, { mode: 0o600 });
    nginx = await Nginx.start(www, path.join(tmp.dir, 'nginx'));
  });

  after(async () => {
    for (const m of mounts) await m.unmount();
    await nginx?.stop();
  });

  it('mounts a checkpoint by URL: physmem.raw is byte-exact against the local files, its .vmem found beside it with the query string kept', async () => {
    const m = await TestMount.start(nginx.url('signed', 'plain/vm.vmsn', QUERY));
    mounts.push(m);
    const local = await TestMount.start(snap.path);
    mounts.push(local);
    expect(await cmpFiles(m.path('physmem.raw'), local.path('physmem.raw'))).to.equal(null);
    expect(await sha256(m.path('physmem.raw'))).to.equal(snap.physSha256());
    expect(await cmpFiles(m.path('physmem.elf'), local.path('physmem.elf'))).to.equal(null);
    expect(await cmpFiles(m.path('screenshot.png'), local.path('screenshot.png'))).to.equal(null);
    const info = await fs.promises.readFile(m.path('info.txt'), 'utf8');
    expect(info).to.include(`Memory file: http://127.0.0.1:${nginx.port}/signed/plain/vm.vmem\n`);
    const meta = await fs.promises.readFile(m.path('metadata.json'), 'utf8');
    expect(JSON.parse(meta).file).to.equal(`http://127.0.0.1:${nginx.port}/signed/plain/vm.vmsn`);
    expectNoSecret(info + meta, 'info.txt and metadata.json');
    // A signed URL's files are the mounting user's alone.
    expect((await fs.promises.stat(m.path('physmem.raw'))).mode & 0o777).to.equal(0o400);
    await m.unmount();
    await local.unmount();
  });

  it('info, ls, cat, extract and diff take URLs, and name them without query string or credentials', async () => {
    const url = nginx.url('auth', 'plain/vm.vmsn', QUERY.replace('sig=', 'x='));
    const auth = ['--netrc-file', netrc];
    const info = await runCli(['info', '--json', ...auth, url]);
    expect(info.code, info.stderr).to.equal(0);
    expect(JSON.parse(info.stdout).memoryFile).to.equal(`http://127.0.0.1:${nginx.port}/auth/plain/vm.vmem`);
    expect(info.stdout).to.not.include('datastore1');
    expectNoSecret(info.stdout + info.stderr, 'info');
    const ls = await runCli(['ls', ...auth, url]);
    expect(ls.stdout.split('\n')).to.include.members(['physmem.raw', 'config.vmx', 'info.txt']);
    const cat = await runCli(['cat', ...auth, url, 'groups/cpu/rip[0]']);
    expect(cat.stdout).to.equal((await runCli(['cat', snap.path, 'groups/cpu/rip[0]'])).stdout);
    const out = path.join(tmp.dir, 'extracted');
    const ex = await runCli(['extract', ...auth, url, out, 'physmem.raw', 'config.vmx']);
    expect(ex.code, ex.stderr).to.equal(0);
    expect(await sha256(path.join(out, 'physmem.raw'))).to.equal(snap.physSha256());
    const d = await runCli(['diff', '--json', ...auth, url, snap.path]);
    expect(d.code, d.stderr).to.equal(0);
    const doc = JSON.parse(d.stdout);
    expect(doc.a).to.equal(`http://127.0.0.1:${nginx.port}/auth/plain/vm.vmsn`);
    expect(doc.changed).to.deep.equal([]);
  });

  it('--vmem URL names the memory file (an ESXi UUID name); a cookie comes from --header-file', async () => {
    const r = await catToFile(['--header-file', headerFile, '--vmem', nginx.url('cookie', 'plain/564d0b1e-7a2f'), nginx.url('cookie', 'plain/vm.vmsn'), 'physmem.raw'], tmp.named('cat.raw'));
    expect(r.code, r.stderr).to.equal(0);
    expect(r.sha).to.equal(snap.physSha256());
    const m = await TestMount.start(nginx.url('cookie', 'plain/vm.vmsn'), ['--header-file', headerFile, '--vmem', nginx.url('cookie', 'plain/564d0b1e-7a2f')]);
    mounts.push(m);
    expect(await sha256(m.path('physmem.raw'))).to.equal(snap.physSha256());
    await m.unmount();
    const refused = await runCli(['info', nginx.url('cookie', 'plain/vm.vmsn')]);
    expect(refused.code).to.equal(1);
    expect(errorLines(refused.stderr)).to.deep.equal([`vmssfs: ${nginx.url('cookie', 'plain/vm.vmsn')}: HTTP 401 Unauthorized: the server wants credentials (give them in a netrc file, --netrc-file FILE, or as a header, --header-file FILE)`]);
  });

  it('an encrypted VM with compressed memory over HTTP: decrypted and decompressed byte-exact', async () => {
    const url = nginx.url('open', 'enc/vm/VM-Snapshot1.vmsn');
    const m = await TestMount.start(url, ['--vmx', enc.vmx as string, '--password-file', enc.passwordFile]);
    mounts.push(m);
    expect(await cmpFiles(m.path('physmem.raw'), enc.plain.vmemPath as string)).to.equal(null);
    expect(await fs.promises.readFile(m.path('info.txt'), 'utf8')).to.match(/compressed/i);
    await m.unmount();
  });

  it('the detached daemon gets the credentials and the full URL through a pipe: none in its argv, environment or log', async () => {
    const { dir, cleanup } = tempDir('vmssfs-mnt-');
    const log = path.join(tmp.dir, 'daemon.log');
    try {
      const url = nginx.url('auth', 'plain/vm.vmsn', QUERY);
      const r = await runCli([url, dir, '--netrc-file', netrc, '--header-file', headerFile, '--log', log]);
      expect(r.code, r.stderr).to.equal(0);
      try {
        const pid = daemonPid(dir);
        expect(pid, 'daemon found').to.not.equal(null);
        const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
        expect(cmdline).to.include(`http://127.0.0.1:${nginx.port}/auth/plain/vm.vmsn`);
        expect(cmdline).to.not.include(netrc);
        expect(cmdline).to.not.include(headerFile);
        expect(cmdline).to.not.include('datastore1');
        expectNoSecret(cmdline, 'daemon cmdline');
        expectNoSecret(environ, 'daemon environment');
        expect(await sha256(path.join(dir, 'physmem.raw'))).to.equal(snap.physSha256());
        expectNoSecret(await fs.promises.readFile(path.join(dir, 'info.txt'), 'utf8'), 'info.txt');
        expectNoSecret(await fs.promises.readFile(path.join(dir, 'metadata.json'), 'utf8'), 'metadata.json');
      } finally {
        await runCommand('fusermount', ['-u', dir]);
        for (let i = 0; i < 100 && (await isMounted(dir)); i++) await sleep(50);
      }
      expectNoSecret(fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '', 'the log');
    } finally {
      cleanup();
    }
  });

  describe('a server that will not serve the file: one line and exit 1 at open', () => {
    const cases: Array<[string, () => string, string[], RegExp]> = [
      ['ignores Range (200)', () => nginx.url('norange', 'plain/vm.vmsn'), [], /: the server ignores Range requests \(it answered a ranged GET with 200, the whole file\)/],
      ['wants credentials (401)', () => nginx.url('auth', 'plain/vm.vmsn'), [], /: HTTP 401 Unauthorized: the server wants credentials/],
      ['refuses the credentials given (401)', () => nginx.url('auth', 'plain/vm.vmsn'), ['--header-file', 'WRONG'], /: HTTP 401 Unauthorized: the server refused the credentials given/],
      ['refuses access (403)', () => nginx.url('forbidden', 'plain/vm.vmsn'), [], /: HTTP 403 Forbidden: the server refuses access/],
      ['has no such file (404)', () => nginx.url('open', 'plain/nothing.vmsn'), [], /: HTTP 404 Not Found: no such file on the server/],
      ['redirects in a loop', () => nginx.url('loop', 'plain/vm.vmsn'), [], /: redirect loop \(\d+ redirects, the last to http:\/\/127\.0\.0\.1:\d+\/loop\/plain\/vm\.vmsn\)/],
    ];
    for (const [what, url, extra, re] of cases) {
      it(`${what}`, async () => {
        const args = extra.map((a) => (a === 'WRONG' ? writeWrongCookie(tmp.named('wrong-headers')) : a));
        const r = await runCli(['info', ...args, url()]);
        expect(r.code).to.equal(1);
        const lines = errorLines(r.stderr);
        expect(lines, r.stderr).to.have.length(1);
        expect(lines[0]).to.match(re);
        expect(r.stdout).to.equal('');
      });
    }

    it('the mount command says it in one line and exits 1, mounting nothing', async () => {
      const { dir, cleanup } = tempDir('vmssfs-mnt-');
      try {
        const r = await runCli([nginx.url('auth', 'plain/vm.vmsn'), dir]);
        expect(r.code).to.equal(1);
        expect(errorLines(r.stderr)).to.have.length(1);
        expect(r.stderr).to.match(/HTTP 401 Unauthorized/);
        expect(await isMounted(dir)).to.equal(false);
      } finally {
        cleanup();
      }
    });
  });

  describe('a file that changes on the server under the mount: EIO, never other bytes', () => {
    for (const change of ['size', 'ETag'] as const) {
      it(`its ${change} changes: reads fail with EIO and the log says why`, async () => {
        const dir = path.join(www, 'changing', change);
        fs.mkdirSync(dir);
        fs.copyFileSync(snap.path, path.join(dir, 'vm.vmsn'));
        fs.copyFileSync(snap.vmemPath as string, path.join(dir, 'vm.vmem'));
        const m = await TestMount.start(nginx.url('open', `changing/${change}/vm.vmsn`));
        mounts.push(m);
        const vmem = path.join(dir, 'vm.vmem');
        if (change === 'size') fs.appendFileSync(vmem, Buffer.alloc(4096, 1));
        else fs.utimesSync(vmem, new Date(), new Date(Date.now() + 3_600_000));
        const r = await runCommand('cat', [m.path('physmem.raw')]);
        expect(r.code).to.equal(1);
        expect(r.stderr).to.match(/Input\/output error/);
        expect(r.stdout.length).to.equal(0);
        expect(await m.stderrShows(change === 'size' ? /vm\.vmem: the file changed on the server since it was opened \(\d+ bytes then, \d+ now\)/ : /vm\.vmem: the file changed on the server since it was opened \(ETag .* then, .* now\)/)).to.equal(true);
        await m.unmount();
      });
    }
  });

  describe('https', () => {
    let tls: Nginx;
    let cert: string;
    before(async function () {
      cert = tmp.named('cert.pem');
      const key = tmp.named('key.pem');
      const r = await runCommand('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert]);
      expect(r.code, r.stderr).to.equal(0);
      tls = await Nginx.start(www, path.join(tmp.dir, 'nginx-tls'), { tls: { cert, key } });
    });
    after(async () => tls?.stop());

    it("a server whose certificate is not trusted is refused; --cacert trusts it; --insecure is said once", async () => {
      const url = tls.url('open', 'plain/vm.vmsn').replace('http:', 'https:');
      const refused = await runCli(['info', url]);
      expect(refused.code).to.equal(1);
      expect(errorLines(refused.stderr)).to.have.length(1);
      expect(refused.stderr).to.match(/TLS certificate is not trusted .*give its CA with --cacert FILE/);
      const m = await TestMount.start(url, ['--cacert', cert]);
      mounts.push(m);
      expect(await sha256(m.path('physmem.raw'))).to.equal(snap.physSha256());
      await m.unmount();
      const insecure = await runCli(['cat', '--insecure', url, 'groups/cpu/rip[0]']);
      expect(insecure.code, insecure.stderr).to.equal(0);
      expect(insecure.stderr.match(/--insecure/g)).to.have.length(1);
    });
  });
});

function writeWrongCookie(file: string): string {
  fs.writeFileSync(file, 'Authorization: Basic YW5hbHlzdDp3cm9uZw==\n');
  return file;
}

describe('a misbehaving web server (test/kit/misbehaving-server.ts)', function () {
  this.timeout(120_000);
  const tmp = scratchDir('vmssfs-http-bad-');
  let server: MisbehavingServer;
  let snap: WrittenSnapshot;
  const mounts: TestMount[] = [];

  before(async () => {
    snap = writeSnapshot(tmp.named('vm.vmsn'), { memory: 'vmem', blobPages: 2048 });
    server = await MisbehavingServer.start(tmp.dir);
  });
  after(async () => {
    for (const m of mounts) await m.unmount();
    await server?.stop();
  });

  it('a 206 running to the end of the file for a bounded range: what is needed is read, byte-exact', async () => {
    server.mode('overlong');
    const m = await TestMount.start(server.url('vm.vmsn'));
    mounts.push(m);
    expect(await sha256(m.path('physmem.raw'))).to.equal(snap.physSha256());
    const cat = await catToFile([server.url('vm.vmsn'), 'physmem.raw'], tmp.named('cat.raw'));
    expect(cat.code, cat.stderr).to.equal(0);
    expect(cat.sha).to.equal(snap.physSha256());
    await m.unmount();
  });

  it('a body shorter than its Content-Range: one line and exit 1 at open', async () => {
    server.mode('short');
    const r = await runCli(['info', server.url('vm.vmsn')]);
    expect(r.code).to.equal(1);
    // The checkpoint is smaller than the first read (64 KiB): the server promised all of it, and sent half.
    const size = fs.statSync(snap.path).size;
    expect(errorLines(r.stderr)).to.deep.equal([`vmssfs: ${server.url('vm.vmsn')}: the server sent ${Math.floor(size / 2)} bytes of the ${size} its Content-Range promised (connection closed)`]);
  });

  it('a server that stops answering stalls only the readers waiting on it, never the mount', async () => {
    server.mode('honest');
    const m = await TestMount.start(server.url('vm.vmsn'));
    mounts.push(m);
    server.mode('stall');
    const stalled = spawn('cat', [m.path('physmem.raw')], { stdio: ['ignore', 'ignore', 'ignore'] });
    const ended = new Promise((r) => stalled.on('close', r));
    try {
      await sleep(500);
      expect(stalled.exitCode, 'the reader of the stalled server is still waiting').to.equal(null);
      // Meanwhile the mount answers everything that needs no byte from the server.
      const info = await runCommand('cat', [m.path('info.txt')]);
      expect(info.code, info.stderr).to.equal(0);
      expect(info.stdout).to.include(`File: ${server.url('vm.vmsn')}`);
      // metadata.json is made again when read, from what was read at open (never from the server).
      const meta = await runCommand('cat', [m.path('metadata.json')]);
      expect(meta.code, meta.stderr).to.equal(0);
      expect(JSON.parse(meta.stdout).vcpus).to.have.length(2);
      const ls = await runCommand('ls', [m.mountpoint]);
      expect(ls.stdout.split('\n')).to.include('physmem.raw');
      expect(stalled.exitCode).to.equal(null);
    } finally {
      server.mode('honest');
      await m.unmount();
      stalled.kill('SIGKILL');
      await ended;
    }
  });

  for (const [fault, re] of [
    ['ignore-range', /the server ignores Range requests/],
    ['unauthorized', /HTTP 401/],
    ['gone', /HTTP 404/],
    ['loop', /redirect loop/],
    ['short', /the server sent \d+ bytes of the \d+ its Content-Range promised/],
  ] as const) {
    it(`after the mount, a server that turns to "${fault}": reads fail with EIO (retried, then logged), never zeros`, async () => {
      server.mode('honest');
      const m = await TestMount.start(server.url('vm.vmsn'));
      mounts.push(m);
      server.mode(fault);
      const r = await runCommand('cat', [m.path('physmem.raw')], { timeoutMs: 60_000 });
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/Input\/output error/);
      expect(r.stdout.length).to.equal(0);
      expect(await m.stderrShows(new RegExp(`read /physmem\\.raw at \\d+ \\(\\+\\d+\\): .*${re.source}.*: answered EIO`))).to.equal(true);
      server.mode('honest');
      await m.unmount();
    });
  }
});
