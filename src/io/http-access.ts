import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VmssError } from '../errors';

/** True when the user named evidence on a web server rather than a path. */
export function isUrl(arg: string): boolean {
  return /^https?:\/\//i.test(arg);
}

/**
 * How a URL is shown (messages, info.txt, metadata.json, the daemon's arguments): scheme, host
 * and path only. The query string (a signed URL's signature, ESXi's datastore selector) and any
 * user:password@ are left out, as either may be a credential.
 */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return url.replace(/[?#].*$/s, '').replace(/\/\/[^/@]*@/, '//');
  }
}

/** The same URL with the extension of its path's last component changed, the query string kept. */
export function urlWithExt(url: string, ext: string): string {
  const u = new URL(url);
  u.pathname = u.pathname.replace(/\.[^./]*$/, '') + ext;
  return u.toString();
}

/** A login for one host, from netrc or from the URL's user:password@. */
export interface Login {
  login: string;
  password: string;
}

/**
 * Everything needed to reach the named URLs, in a form that can be handed to the daemon over its
 * key pipe and to the synchronous reader's worker (plain data): never written anywhere else.
 */
export interface HttpAccessData {
  /** Each named URL in full (query string and all), by its shown name. */
  urls: Record<string, string>;
  /** Basic-auth logins by host name (netrc's machine), only for the hosts of the named URLs. */
  logins: Record<string, Login>;
  /** Header lines from --header-file (a cookie, a bearer token), sent only to the named URLs' hosts. */
  headers: Array<[string, string]>;
  /** PEM certificates to trust: --cacert's, else the system's bundle; null: Node's own. */
  ca: string | null;
  /** --insecure: the server's certificate is not checked. */
  insecure: boolean;
}

/** The user's HTTP options, as every command takes them. */
export interface HttpOptions {
  netrcFile?: string;
  headerFile?: string;
  cacert?: string;
  insecure?: boolean;
}

export const HTTP_OPTIONS = {
  'netrc-file': { type: 'string' },
  'header-file': { type: 'string' },
  cacert: { type: 'string' },
  insecure: { type: 'boolean' },
} as const;

export function httpOptionsFrom(values: { 'netrc-file'?: string; 'header-file'?: string; cacert?: string; insecure?: boolean }): HttpOptions {
  return { netrcFile: values['netrc-file'], headerFile: values['header-file'], cacert: values.cacert, insecure: values.insecure };
}

/** Debian's bundle of the system's trusted CAs (ca-certificates); Node's own store is used without it. */
const SYSTEM_CA_FILES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt'];

/**
 * The access to the URLs among `names` (snapshot, --vmem): their logins, headers and trust. Reads
 * the netrc file (--netrc-file, else ~/.netrc when it exists), the header file and the CA file
 * now, so that a daemon started from here needs none of them. Null when no name is a URL.
 */
export function httpAccess(names: ReadonlyArray<string | undefined>, opts: HttpOptions, warn: (text: string) => void): HttpAccessData | null {
  const urls = names.filter((n): n is string => n !== undefined && isUrl(n));
  if (urls.length === 0) {
    for (const [flag, v] of [['--netrc-file', opts.netrcFile], ['--header-file', opts.headerFile], ['--cacert', opts.cacert]] as const) {
      if (v !== undefined) throw new VmssError(`${flag} is for evidence named by an http:// or https:// URL`, 2);
    }
    return null;
  }
  const data: HttpAccessData = { urls: {}, logins: {}, headers: [], ca: null, insecure: opts.insecure ?? false };
  const hosts = new Set<string>();
  for (const raw of urls) {
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw new VmssError(`${shownUrl(raw)}: not a valid URL`);
    }
    hosts.add(u.hostname);
    if (u.username !== '' || u.password !== '') {
      data.logins[u.hostname] = { login: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
      u.username = '';
      u.password = '';
    }
    data.urls[shownUrl(raw)] = u.toString();
  }
  const netrc = opts.netrcFile ?? defaultNetrc();
  if (netrc !== null) {
    const entries = parseNetrc(readSecretFile(netrc, '--netrc-file'), netrc);
    for (const h of hosts) {
      const e = entries.get(h) ?? entries.get('');
      // A login in the URL itself wins over netrc, as with curl.
      if (e && !data.logins[h]) data.logins[h] = e;
    }
  }
  if (opts.headerFile !== undefined) data.headers = parseHeaderFile(readSecretFile(opts.headerFile, '--header-file'), opts.headerFile);
  if (opts.cacert !== undefined) {
    data.ca = readSecretFile(opts.cacert, '--cacert');
    if (!/-----BEGIN CERTIFICATE-----/.test(data.ca)) throw new VmssError(`${opts.cacert}: no PEM certificate in it (--cacert takes the server's CA certificate, PEM)`);
  } else {
    data.ca = systemCas();
  }
  if (data.insecure) warn("--insecure: the web server's TLS certificate is not checked; anyone between here and it can read and change what is served");
  return data;
}

function defaultNetrc(): string | null {
  const file = path.join(os.homedir(), '.netrc');
  try {
    return fs.statSync(file).isFile() ? file : null;
  } catch {
    return null;
  }
}

function systemCas(): string | null {
  for (const f of SYSTEM_CA_FILES) {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch {
      // not this distribution's place
    }
  }
  return null;
}

function readSecretFile(file: string, flag: string): string {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new VmssError(`${file}: not a file (${flag})`);
    if (st.size > 1024 * 1024) throw new VmssError(`${file}: ${st.size} bytes is too large for ${flag}`);
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof VmssError) throw err;
    throw new VmssError(`${file}: cannot read the ${flag} file (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/**
 * netrc as curl and ftp read it: `machine HOST login L password P`, and `default login L password
 * P` (kept under ''), tokens separated by any white space, `macdef` bodies skipped up to a blank line.
 */
export function parseNetrc(text: string, file: string): Map<string, Login> {
  const out = new Map<string, Login>();
  const lines = text.split(/\r?\n/);
  const tokens: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const words = (lines[i] as string).trim().split(/\s+/).filter(Boolean);
    if (words[0] === 'macdef') {
      while (i + 1 < lines.length && (lines[i + 1] as string).trim() !== '') i++;
      continue;
    }
    tokens.push(...words);
  }
  let host: string | null = null;
  let cur: Partial<Login> = {};
  const flush = (): void => {
    if (host !== null && cur.login !== undefined && !out.has(host)) out.set(host, { login: cur.login, password: cur.password ?? '' });
  };
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as string;
    if (t === 'machine' || t === 'default') {
      flush();
      cur = {};
      host = t === 'default' ? '' : (tokens[++i] ?? null);
      if (host === null) throw new VmssError(`${file}: "machine" without a host name`);
    } else if (t === 'login' || t === 'password' || t === 'account') {
      const v = tokens[++i];
      if (v === undefined) throw new VmssError(`${file}: "${t}" without a value`);
      if (t === 'login') cur.login = v;
      else if (t === 'password') cur.password = v;
    }
  }
  flush();
  return out;
}

/** Header lines `Name: value` (blank lines and # comments skipped); the value is never shown. */
export function parseHeaderFile(text: string, file: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (!m) throw new VmssError(`${file}: line ${i + 1} is not a header ("Name: value")`);
    if (/^(host|range|content-length|connection|transfer-encoding)$/i.test(m[1] as string)) {
      throw new VmssError(`${file}: line ${i + 1}: the ${m[1]} header is set by vmssfs itself`);
    }
    out.push([m[1] as string, m[2] as string]);
  });
  return out;
}
