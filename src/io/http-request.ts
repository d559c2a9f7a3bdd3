import * as http from 'node:http';
import * as https from 'node:https';
import type { HttpAccessData } from './http-access';

/** Redirects followed for one request (curl's default is 50; a datastore or an object store needs one or two). */
const MAX_REDIRECTS = 8;
/** A server that sends nothing for this long is taken as stalled: the request fails (and is retried). */
export const IDLE_TIMEOUT_MS = 30_000;

/** What a ranged answer says about the whole file. */
export interface FileFacts {
  size: number;
  etag: string | null;
  lastModified: Date | null;
}

/**
 * A request that failed. `permanent` faults (the server refuses, ignores ranges, the file changed)
 * are not retried; the others (a dropped connection, a 5xx, a short body) are, a bounded number of
 * times. The message names the shown URL, never the query string or a credential.
 */
export class HttpFault extends Error {
  readonly code = 'EIO';
  constructor(message: string, readonly permanent: boolean) {
    super(message);
  }
  /** What the page cache puts in its line for the log (the file's name, and what went wrong). */
  get detail(): string {
    return this.message;
  }
}

/** The agents (kept-alive connections) one source's requests go over. */
export function makeAgents(access: HttpAccessData, maxSockets: number): { http: http.Agent; https: https.Agent } {
  const common = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets, scheduling: 'lifo' as const };
  return {
    http: new http.Agent(common),
    https: new https.Agent({ ...common, ...(access.ca !== null ? { ca: access.ca } : {}), rejectUnauthorized: !access.insecure }),
  };
}

/** Bytes of the answer as they arrive: `at` is their offset from the start of the range asked for. */
export type Sink = (chunk: Buffer, at: number) => void;

/**
 * One ranged GET of [start, end) of `url`, following redirects, checking every fault the
 * evidence could be misread through, and handing the body to `sink`. A server answering with
 * more than was asked (a 206 running to the end of the file, as ESXi's datastore browser may)
 * is read as far as needed and its connection closed. Resolves with the file's facts from
 * Content-Range and the validators.
 */
export function rangedGet(
  shown: string,
  url: string,
  start: number,
  end: number,
  access: HttpAccessData,
  agents: { http: http.Agent; https: https.Agent },
  sink: Sink,
): Promise<FileFacts> {
  const origin = new URL(url).origin;
  const seen = new Set<string>();
  const attempt = (target: string, hops: number): Promise<FileFacts> =>
    new Promise<FileFacts>((resolve, reject) => {
      const u = new URL(target);
      const secure = u.protocol === 'https:';
      // Credentials go only to the origin the user named (a redirect elsewhere gets none), as curl does.
      const headers = requestHeaders(u, origin, start, end, access);
      let settled = false;
      const fail = (err: HttpFault): void => {
        if (settled) return;
        settled = true;
        req.destroy();
        reject(err);
      };
      const req = (secure ? https : http).get(u, { headers, agent: secure ? agents.https : agents.http }, (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400 && res.headers.location !== undefined) {
          res.resume();
          const next = new URL(res.headers.location, u).toString();
          if (seen.has(next) || hops >= MAX_REDIRECTS) {
            return fail(new HttpFault(`${shown}: redirect loop (${hops + 1} redirects, the last to ${shownRedirect(next)})`, true));
          }
          seen.add(next);
          settled = true;
          return resolve(attempt(next, hops + 1));
        }
        if (status !== 206) {
          res.resume();
          return fail(statusFault(shown, status, res.statusMessage ?? '', access.logins[u.hostname] !== undefined || access.headers.length > 0));
        }
        let facts: FileFacts;
        let last: number;
        try {
          ({ facts, last } = partialAnswer(shown, start, end, res.headers['content-range'], res.headers.etag, res.headers['last-modified']));
        } catch (err) {
          return fail(err as HttpFault);
        }
        const total = facts.size;
        const first = start;
        const want = Math.min(end, total) - start;
        const promised = last + 1 - first;
        let got = 0;
        res.on('data', (chunk: Buffer) => {
          if (settled) return;
          const take = Math.min(chunk.length, want - got);
          if (take > 0) sink(take === chunk.length ? chunk : chunk.subarray(0, take), got);
          got += take;
          if (got >= want && promised > want) {
            // More than was asked is on its way: what is needed is in, the rest is not read.
            settled = true;
            res.destroy();
            req.destroy();
            resolve(facts);
          }
        });
        res.on('end', () => {
          if (settled) return;
          if (got < want || !res.complete) return fail(new HttpFault(`${shown}: the server sent ${got} bytes of the ${promised} its Content-Range promised`, false));
          settled = true;
          resolve(facts);
        });
        res.on('aborted', () => fail(new HttpFault(`${shown}: the server sent ${got} bytes of the ${promised} its Content-Range promised (connection closed)`, false)));
        res.on('error', (err) => fail(new HttpFault(`${shown}: the server sent ${got} bytes of the ${promised} its Content-Range promised (${netText(err)})`, false)));
      });
      req.setTimeout(IDLE_TIMEOUT_MS, () => fail(new HttpFault(`${shown}: the server sent nothing for ${IDLE_TIMEOUT_MS / 1000} s`, false)));
      req.on('error', (err) => fail(new HttpFault(`${shown}: ${netText(err)}`, isTlsError(err))));
    });
  return attempt(url, 0);
}

/**
 * What a 206 answer says, checked: its Content-Range must start where asked and cover what was
 * asked (or run to the end of the file), and name the file's size. Throws HttpFault otherwise.
 */
export function partialAnswer(
  shown: string,
  start: number,
  end: number,
  contentRange: string | undefined,
  etag: string | undefined,
  lastModified: string | undefined,
): { facts: FileFacts; last: number } {
  const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(contentRange ?? '').trim());
  if (!cr) throw new HttpFault(`${shown}: the server answered a ranged GET with 206 but no usable Content-Range`, true);
  const first = Number(cr[1]);
  const last = Number(cr[2]);
  const total = cr[3] === '*' ? NaN : Number(cr[3]);
  if (!Number.isSafeInteger(total)) throw new HttpFault(`${shown}: the server does not say the file's size in its Content-Range`, true);
  if (first !== start || last + 1 < Math.min(end, total)) {
    throw new HttpFault(`${shown}: the server answered bytes ${first}-${last} when ${start}-${end - 1} were asked`, true);
  }
  return { facts: { size: total, etag: typeof etag === 'string' ? etag : null, lastModified: lastModified ? new Date(lastModified) : null }, last };
}

/** The request's headers: the range, and the credentials when `u` is on the origin the user named (as curl, none after a redirect elsewhere). */
export function requestHeaders(u: URL, origin: string, start: number, end: number, access: HttpAccessData): Record<string, string> {
  const headers: Record<string, string> = { Range: `bytes=${start}-${end - 1}`, 'Accept-Encoding': 'identity', 'User-Agent': 'vmssfs' };
  if (u.origin === origin) {
    for (const [k, v] of access.headers) headers[k] = v;
    const login = access.logins[u.hostname];
    if (login && !Object.keys(headers).some((k) => k.toLowerCase() === 'authorization')) {
      headers.Authorization = `Basic ${Buffer.from(`${login.login}:${login.password}`).toString('base64')}`;
    }
  }
  return headers;
}

/** A redirect target as shown: no query string (it may carry a signature). */
function shownRedirect(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname}`;
}

function statusFault(shown: string, status: number, text: string, sentCredentials: boolean): HttpFault {
  const line = `HTTP ${status}${text ? ` ${text}` : ''}`;
  switch (status) {
    case 200:
      return new HttpFault(`${shown}: the server ignores Range requests (it answered a ranged GET with 200, the whole file): vmssfs reads evidence in parts and will not download it whole`, true);
    case 401:
      return new HttpFault(
        sentCredentials
          ? `${shown}: ${line}: the server refused the credentials given (--netrc-file, --header-file)`
          : `${shown}: ${line}: the server wants credentials (give them in a netrc file, --netrc-file FILE, or as a header, --header-file FILE)`,
        true,
      );
    case 403:
      return new HttpFault(`${shown}: ${line}: the server refuses access to this file`, true);
    case 404:
    case 410:
      return new HttpFault(`${shown}: ${line}: no such file on the server`, true);
    case 416:
      return new HttpFault(`${shown}: ${line}: the server says the range read lies past the end of the file (did it shrink?)`, true);
    default:
      // 5xx and the like: the server may answer next time.
      return new HttpFault(`${shown}: ${line}`, status < 500 && status !== 429 && status !== 408);
  }
}

function isTlsError(err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  return /CERT|SELF_SIGNED|TLS|SSL|ERR_OSSL/.test(code);
}

function netText(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  switch (code) {
    case 'ECONNREFUSED': return 'connection refused';
    case 'ECONNRESET': return 'connection reset by the server';
    case 'ENOTFOUND': return 'host not found';
    case 'ETIMEDOUT': return 'connection timed out';
    case 'EHOSTUNREACH': return 'host unreachable';
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
      return `the server's TLS certificate is not trusted (${code}): give its CA with --cacert FILE`;
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `the server's TLS certificate is not for this host name (${code})`;
    case 'CERT_HAS_EXPIRED':
      return "the server's TLS certificate has expired";
    default: return code || err.message;
  }
}

/** Attempts of one read before it is given up (EIO and a log line): the first and two retries. */
export const ATTEMPTS = 3;
const RETRY_DELAY_MS = [200, 1000];

/** Run `once` until it succeeds, a permanent fault, or ATTEMPTS tries; rejects with the last fault. */
export async function withRetries<T>(once: () => Promise<T>, attempts = ATTEMPTS): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await once();
    } catch (err) {
      if (!(err instanceof HttpFault) || err.permanent || i >= attempts) throw err;
      await new Promise((r) => setTimeout(r, RETRY_DELAY_MS[i - 1] ?? 1000));
    }
  }
}
