import * as net from 'node:net';
import type { HttpAccessData } from './http-access';
import { HttpFault, IDLE_TIMEOUT_MS, partialAnswer, requestHeaders, type FileFacts, type Sink } from './http-request';

/** Bytes a connection receives into per read: one buffer per connection, reused for every read. */
const RECV_BUFFER = 256 * 1024;
/** A response head larger than this is not one this reader takes. */
const MAX_HEAD = 64 * 1024;

/** The answer was not a plain 206 with a Content-Length: Node's http client takes the request instead. */
export class NotPlain extends Error {
  constructor(readonly redirect: boolean) {
    super('not a plain 206');
  }
}

interface Exchange {
  onBytes(buf: Buffer, from: number, to: number): void;
  onClose(err: Error | null): void;
}

/** One kept-alive connection, reading into its own buffer (net's onread: no allocation per read). */
class Connection {
  readonly socket: net.Socket;
  private readonly buf = Buffer.allocUnsafe(RECV_BUFFER);
  exchange: Exchange | null = null;
  closed = false;
  /** Requests answered over it: a failure before any byte of a reused connection is the server having closed it idle. */
  uses = 0;

  constructor(host: string, port: number, onIdleClose: (c: Connection) => void) {
    this.socket = net.connect({
      host,
      port,
      noDelay: true,
      onread: {
        buffer: this.buf,
        callback: (n: number): boolean => {
          this.exchange?.onBytes(this.buf, 0, n);
          return true;
        },
      },
    });
    const closed = (err: Error | null): void => {
      if (this.closed) return;
      this.closed = true;
      const x = this.exchange;
      this.exchange = null;
      if (x) x.onClose(err);
      else onIdleClose(this);
    };
    this.socket.on('error', (err) => closed(err));
    this.socket.on('end', () => {
      this.socket.destroy();
      closed(null);
    });
    this.socket.on('close', () => closed(null));
    this.socket.setTimeout(IDLE_TIMEOUT_MS, () => {
      if (this.exchange) this.socket.destroy(new HttpFault('stalled', false));
    });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/**
 * Ranged GETs over plain http://, on kept-alive connections of Node's net module that receive into
 * one reused buffer each: Node's http client allocates a fresh buffer for every read of a
 * response, and measured a third of curl's speed on a 1 GiB download here (95-133 MiB/s against
 * 253-268), where reading into a reused buffer did better than curl (320-345). Only the plain
 * case is handled here: a 206 with a Content-Length. Anything else (a redirect, a refusal, a
 * chunked body) throws NotPlain after closing the connection, and the caller asks Node's http
 * client, which follows redirects and says what the fault is.
 */
export class FastHttp {
  private readonly idle: Connection[] = [];
  private closed = false;

  constructor(private readonly maxIdle: number) {}

  get(shown: string, url: URL, origin: string, start: number, end: number, access: HttpAccessData, sink: Sink): Promise<FileFacts> {
    const headers = requestHeaders(url, origin, start, end, access);
    const head = `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
    const attempt = (reuse: boolean): Promise<FileFacts> => {
      const conn = (reuse ? this.takeIdle() : null) ?? new Connection(url.hostname, Number(url.port || 80), (c) => this.forget(c));
      const reused = conn.uses > 0;
      return this.exchange(shown, conn, head, start, end, sink).catch((err: unknown) => {
        // A kept-alive connection the server closed meanwhile: once more on a new one.
        if (reused && err instanceof Unanswered) return attempt(false);
        throw err instanceof Unanswered ? err.fault : err;
      });
    };
    return attempt(true);
  }

  private takeIdle(): Connection | null {
    for (let c = this.idle.pop(); c; c = this.idle.pop()) if (!c.closed) return c;
    return null;
  }

  private forget(c: Connection): void {
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
  }

  private release(c: Connection): void {
    if (this.closed || c.closed || this.idle.length >= this.maxIdle) return c.destroy();
    this.idle.push(c);
  }

  private exchange(shown: string, conn: Connection, head: string, start: number, end: number, sink: Sink): Promise<FileFacts> {
    return new Promise<FileFacts>((resolve, reject) => {
      let headBuf: Buffer = Buffer.alloc(0);
      let body: { facts: FileFacts; want: number; promised: number; got: number; keepAlive: boolean } | null = null;
      let done = false;
      const finish = (err: unknown, facts?: FileFacts, keep = false): void => {
        if (done) return;
        done = true;
        conn.exchange = null;
        if (err) {
          conn.destroy();
          return reject(err);
        }
        conn.uses++;
        if (keep) this.release(conn);
        else conn.destroy();
        resolve(facts as FileFacts);
      };
      const onBody = (buf: Buffer, from: number, to: number): void => {
        const b = body as NonNullable<typeof body>;
        const take = Math.min(to - from, b.want - b.got);
        if (take > 0) sink(buf.subarray(from, from + take), b.got);
        b.got += take;
        if (b.got < b.want) return;
        // Bytes past what was asked: a 206 running to the end of the file is not read on (the
        // connection is closed), and neither is anything after the body.
        if (b.promised > b.want || to - from > take) return finish(null, b.facts, false);
        finish(null, b.facts, b.keepAlive);
      };
      conn.exchange = {
        onBytes: (buf, from, to) => {
          if (done) return;
          if (body) return onBody(buf, from, to);
          headBuf = Buffer.concat([headBuf, buf.subarray(from, to)]);
          const endOfHead = headBuf.indexOf('\r\n\r\n');
          if (endOfHead < 0) {
            if (headBuf.length > MAX_HEAD) finish(new NotPlain(false));
            return;
          }
          const parsed = parseHead(headBuf.toString('latin1', 0, endOfHead));
          if (!parsed || parsed.status !== 206 || parsed.headers['content-length'] === undefined || parsed.headers['transfer-encoding'] !== undefined) {
            return finish(new NotPlain(parsed !== null && parsed.status >= 300 && parsed.status < 400));
          }
          let answer: ReturnType<typeof partialAnswer>;
          try {
            answer = partialAnswer(shown, start, end, parsed.headers['content-range'], parsed.headers.etag, parsed.headers['last-modified']);
          } catch (err) {
            return finish(err);
          }
          const promised = answer.last + 1 - start;
          if (Number(parsed.headers['content-length']) !== promised) return finish(new NotPlain(false));
          const keepAlive = parsed.version === '1.1' ? !/close/i.test(parsed.headers.connection ?? '') : /keep-alive/i.test(parsed.headers.connection ?? '');
          body = { facts: answer.facts, want: Math.min(end, answer.facts.size) - start, promised, got: 0, keepAlive };
          const rest = headBuf.subarray(endOfHead + 4);
          headBuf = Buffer.alloc(0);
          if (rest.length > 0 || body.want === 0) onBody(rest, 0, rest.length);
        },
        onClose: (err) => {
          if (done) return;
          const got = body?.got ?? 0;
          if (!body) return finish(new Unanswered(new HttpFault(`${shown}: ${err ? netText(err) : 'the server closed the connection without answering'}`, false)));
          finish(new HttpFault(`${shown}: the server sent ${got} bytes of the ${body.promised} its Content-Range promised (connection closed)`, false));
        },
      };
      if (conn.closed) return finish(new Unanswered(new HttpFault(`${shown}: connection closed`, false)));
      conn.socket.write(head);
    });
  }

  close(): void {
    this.closed = true;
    for (const c of this.idle.splice(0)) c.destroy();
  }
}

/** Failed before any byte of an answer came. */
class Unanswered extends Error {
  constructor(readonly fault: HttpFault) {
    super(fault.message);
  }
}

function parseHead(text: string): { version: string; status: number; headers: Record<string, string> } | null {
  const lines = text.split('\r\n');
  const m = /^HTTP\/(1\.[01]) (\d{3})/.exec(lines[0] ?? '');
  if (!m) return null;
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const c = line.indexOf(':');
    if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
  }
  return { version: m[1] as string, status: Number(m[2]), headers };
}

function netText(err: Error): string {
  if (err instanceof HttpFault) return `the server sent nothing for ${IDLE_TIMEOUT_MS / 1000} s`;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  switch (code) {
    case 'ECONNREFUSED': return 'connection refused';
    case 'ECONNRESET': return 'connection reset by the server';
    case 'EPIPE': return 'connection closed by the server';
    default: return code || err.message;
  }
}
