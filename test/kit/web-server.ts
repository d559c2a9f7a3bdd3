// Debian's nginx, run by the suite on a loopback port over a directory of evidence, with the
// locations the HTTP tests need. Started as its own process (no daemon, no master), stopped in
// an after hook.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

/** The login nginx's basic authentication takes under /auth/. */
export const LOGIN = { user: 'analyst', password: 'pw-Zq81-secret' };
/** The cookie /cookie/ wants (as ESXi's vmware_soap_session would be). */
export const COOKIE = 'vmware_soap_session=cookie-7f3a9c-secret';

/** The query parameter /signed/ wants (a signed URL's signature, kept off every line vmssfs writes). */
export const SIGNATURE = 'sig-4e1d0b-secret';

/** A free loopback port (the kernel picks it; released just before the server binds it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function waitForPort(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  return new Promise((resolve, reject) => {
    const tryOnce = (): void => {
      if (child.exitCode !== null) return reject(new Error(`the web server exited (${child.exitCode}): ${log()}`));
      const sock = net.connect(port, '127.0.0.1');
      sock.on('connect', () => {
        sock.destroy();
        resolve();
      });
      sock.on('error', () => {
        sock.destroy();
        if (Date.now() > deadline) return reject(new Error(`the web server did not listen on ${port}: ${log()}`));
        void sleep(50).then(tryOnce);
      });
    };
    tryOnce();
  });
}

/**
 * nginx serving `root`: /open/ as is; /signed/ only with ?sig=SIGNATURE; /auth/ behind basic authentication (LOGIN); /cookie/ only
 * with COOKIE; /norange/ ignoring Range (max_ranges 0: a 200 with the whole file); /forbidden/
 * answering 403; /loop/ redirecting to itself. Every location serves the same files, `root`/DIR.
 */
export class Nginx {
  private constructor(readonly port: number, private readonly child: ChildProcess, private readonly prefix: string) {}

  static async start(root: string, prefix: string, opts: { tls?: { cert: string; key: string } } = {}): Promise<Nginx> {
    fs.mkdirSync(path.join(prefix, 'tmp'), { recursive: true });
    const port = await freePort();
    // nginx's own {PLAIN} scheme: the suite needs no htpasswd tool.
    fs.writeFileSync(path.join(prefix, 'htpasswd'), `${LOGIN.user}:{PLAIN}${LOGIN.password}\n`);
    const t = (d: string): string => path.join(prefix, 'tmp', d);
    const conf = `
daemon off;
master_process off;
worker_processes 1;
pid ${path.join(prefix, 'nginx.pid')};
error_log ${path.join(prefix, 'error.log')} warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  default_type application/octet-stream;
  client_body_temp_path ${t('body')};
  proxy_temp_path ${t('proxy')};
  fastcgi_temp_path ${t('fastcgi')};
  uwsgi_temp_path ${t('uwsgi')};
  scgi_temp_path ${t('scgi')};
  server {
    listen 127.0.0.1:${port}${opts.tls ? ' ssl' : ''};
    ${opts.tls ? `ssl_certificate ${opts.tls.cert};\n    ssl_certificate_key ${opts.tls.key};` : ''}
    location /open/ { alias ${root}/; }
    location /auth/ { alias ${root}/; auth_basic "vmssfs"; auth_basic_user_file ${path.join(prefix, 'htpasswd')}; }
    location /cookie/ {
      alias ${root}/;
      if ($http_cookie !~ "${COOKIE}") { return 401; }
    }
    location /signed/ {
      alias ${root}/;
      if ($arg_sig != "${SIGNATURE}") { return 403; }
    }
    location /norange/ { alias ${root}/; max_ranges 0; }
    location /forbidden/ { deny all; }
    location /loop/ { return 302 $uri; }
  }
}
`;
    const confFile = path.join(prefix, 'nginx.conf');
    fs.writeFileSync(confFile, conf);
    const child = spawn('nginx', ['-p', prefix, '-c', confFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    let said = '';
    child.stderr?.on('data', (b: Buffer) => (said += b.toString()));
    const log = (): string => {
      let e = '';
      try {
        e = fs.readFileSync(path.join(prefix, 'error.log'), 'utf8');
      } catch {
        // none yet
      }
      return `${said} ${e}`.trim();
    };
    await waitForPort(port, child, log);
    return new Nginx(port, child, prefix);
  }

  url(location: string, file: string, query = ''): string {
    return `http://127.0.0.1:${this.port}/${location}/${file}${query}`;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.on('exit', r));
    this.child.kill('SIGTERM');
    await Promise.race([exited, sleep(5000)]);
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }

  get errorLog(): string {
    try {
      return fs.readFileSync(path.join(this.prefix, 'error.log'), 'utf8');
    } catch {
      return '';
    }
  }
}

/**
 * The misbehaving server (test/kit/misbehaving-server.ts) as its own process, for the faults
 * nginx cannot be made to show. Its behaviour is read from `root`/MODE before each request, so a
 * test can turn a fault on under a mount.
 */
export class MisbehavingServer {
  private constructor(readonly port: number, private readonly child: ChildProcess, private readonly root: string) {}

  static async start(root: string): Promise<MisbehavingServer> {
    const port = await freePort();
    const child = spawn(process.execPath, [path.join(__dirname, 'misbehaving-server.js'), root, String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let said = '';
    child.stderr?.on('data', (b: Buffer) => (said += b.toString()));
    await waitForPort(port, child, () => said);
    return new MisbehavingServer(port, child, root);
  }

  /** How the server answers from now on: see misbehaving-server.ts. */
  mode(m: 'honest' | 'overlong' | 'short' | 'ignore-range' | 'unauthorized' | 'gone' | 'loop' | 'stall'): void {
    fs.writeFileSync(path.join(this.root, 'MODE'), m);
  }

  url(file: string): string {
    return `http://127.0.0.1:${this.port}/${file}`;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.on('exit', r));
    this.child.kill('SIGTERM');
    await Promise.race([exited, sleep(5000)]);
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}
