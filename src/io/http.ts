import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { VmssError } from '../errors';
import { shownUrl, urlWithExt, type HttpAccessData } from './http-access';
import { HttpFault, makeAgents, rangedGet, withRetries, type FileFacts, IDLE_TIMEOUT_MS, ATTEMPTS } from './http-request';
import type { SyncRequest, SyncShared } from './http-worker';
import { FastHttp, NotPlain } from './http-fast';
import { nextSourceId, type DamagedRange, type Source } from './source';

/** Ranged GETs one source keeps in flight at most (each over its own kept-alive connection). */
const MAX_INFLIGHT = 4;
/** Largest GET the reads are coalesced into. */
const MAX_GET = 1024 * 1024;
/**
 * Page-cache chunks read ahead of a sequential reader: 4 MiB at 64 KiB chunks. The cache refills
 * the window a half at a time, so each refill is coalesced into 2 MiB of GETs.
 */
const READ_AHEAD_CHUNKS = 64;
/** Unit of the synchronous reads (the parser's), and how many of them are kept. */
const SYNC_BLOCK = 64 * 1024;
const SYNC_BLOCKS_KEPT = 64;
/** Largest synchronous GET (the worker's shared buffer). */
const SYNC_MAX = 4 * 1024 * 1024;

/**
 * The web server's side of the evidence: which URL a name stands for, and the synchronous reader
 * the parser uses. One per command or daemon; the sources it opens share its worker.
 */
export class HttpClient {
  private worker: Worker | null = null;
  private ctrl: Int32Array | null = null;
  private data: Buffer | null = null;
  private meta: Buffer | null = null;
  private users = 0;

  constructor(readonly access: HttpAccessData) {}

  /**
   * The full URL for `name`: a URL the user named (by its shown form, or in full), or a sibling
   * of one found by changing the extension (the .vmem beside a .vmsn): the query string of the
   * URL it derives from is kept, as ESXi's /folder URLs and the signed URLs of a pair have it.
   */
  fullUrl(name: string): string {
    const shown = shownUrl(name);
    const exact = this.access.urls[shown];
    if (exact !== undefined) return exact;
    const stem = (s: string): string => s.replace(/\.[^./]*$/, '');
    for (const [k, full] of Object.entries(this.access.urls)) {
      if (stem(k) === stem(shown)) return urlWithExt(full, path.posix.extname(new URL(shown).pathname));
    }
    return name;
  }

  /** Open `name` (a URL): one ranged GET now, which also says the size and checks Range is honoured. */
  open(name: string): HttpSource {
    const shown = shownUrl(name);
    const url = this.fullUrl(name);
    const first = this.syncGet(shown, url, 0, SYNC_BLOCK, null);
    return new HttpSource(this, shown, url, first.facts, first.bytes);
  }

  /** Whether the server has `name`: false on 404/410 only (any other fault shows when it is opened). */
  exists(name: string): boolean {
    try {
      this.syncGet(shownUrl(name), this.fullUrl(name), 0, 1, null);
      return true;
    } catch (err) {
      return !(err instanceof VmssError && /HTTP 40[4]|HTTP 410/.test(err.message));
    }
  }

  /** @internal */
  retain(): void {
    this.users++;
  }

  /** @internal The last source closed: the worker and its thread end. */
  release(): void {
    if (--this.users > 0 || this.worker === null) return;
    void this.worker.terminate();
    this.worker = null;
  }

  /**
   * A ranged GET done by the worker while this thread waits: for the parser, which reads
   * synchronously, at open only. Throws VmssError with the fault's one line.
   */
  syncGet(shown: string, url: string, start: number, end: number, expect: FileFacts | null): { bytes: Buffer; facts: FileFacts } {
    if (end - start > SYNC_MAX) throw new Error('synchronous HTTP read too large');
    const w = this.startWorker();
    const ctrl = this.ctrl as Int32Array;
    Atomics.store(ctrl, 0, 0);
    w.postMessage({ shown, url, start, end } satisfies SyncRequest);
    // The worker gives up within its retries' timeouts; this bound is only against a lost worker.
    const waited = Atomics.wait(ctrl, 0, 0, (IDLE_TIMEOUT_MS + 2000) * (ATTEMPTS + 1));
    if (waited === 'timed-out') {
      // A lost worker: the next read starts another.
      void w.terminate();
      this.worker = null;
      throw new VmssError(`${shown}: no answer from the server (read of ${end - start} bytes at ${start})`);
    }
    const json = JSON.parse((this.meta as Buffer).toString('utf8', 0, ctrl[2])) as
      | { facts: Omit<FileFacts, 'lastModified'> & { lastModified: number | null } }
      | { message: string };
    if ('message' in json) throw new VmssError(json.message);
    const facts: FileFacts = { ...json.facts, lastModified: json.facts.lastModified === null ? null : new Date(json.facts.lastModified) };
    if (expect) {
      const changed = changeOf(shown, expect, facts);
      if (changed) throw new VmssError(changed.message);
    }
    const n = ctrl[1] as number;
    return { bytes: Buffer.from((this.data as Buffer).subarray(0, n)), facts };
  }

  private startWorker(): Worker {
    if (this.worker) return this.worker;
    const shared: SyncShared = {
      access: this.access,
      ctrl: new SharedArrayBuffer(16),
      data: new SharedArrayBuffer(SYNC_MAX),
      meta: new SharedArrayBuffer(64 * 1024),
    };
    this.ctrl = new Int32Array(shared.ctrl);
    this.data = Buffer.from(shared.data);
    this.meta = Buffer.from(shared.meta);
    // The credentials reach the worker in memory (workerData), never through argv or the environment.
    this.worker = new Worker(path.join(__dirname, 'http-worker.js'), { workerData: shared, stdout: false, stderr: false });
    this.worker.unref();
    return this.worker;
  }
}

/** The fault when a later answer shows another file than the one opened, or null. */
function changeOf(shown: string, opened: FileFacts, now: FileFacts): HttpFault | null {
  if (now.size !== opened.size) {
    return new HttpFault(`${shown}: the file changed on the server since it was opened (${opened.size} bytes then, ${now.size} now): not read`, true);
  }
  if (opened.etag !== null && now.etag !== opened.etag) {
    return new HttpFault(`${shown}: the file changed on the server since it was opened (ETag ${opened.etag} then, ${now.etag ?? 'none'} now): not read`, true);
  }
  return null;
}

/** A read waiting for its bytes. */
interface Want {
  start: number;
  end: number;
  buf: Buffer;
  offset: number;
  resolve: (n: number) => void;
  reject: (err: unknown) => void;
}

/**
 * A file on a web server, read with ranged GETs: one more Source under the parser, so the
 * decryption and decompression layers stack on it as on a file. The mount's reads are
 * asynchronous (never readsInPlace: a stalled server stalls its readers, never the mount); reads
 * arriving together are coalesced into GETs of whole runs, several in flight over kept-alive
 * connections. A read that keeps failing is given up (EIO, with the fault's line for the log);
 * a file whose size or ETag changed, a server that stops honouring Range or refuses access
 * fails every read from then on: never zeros.
 */
export class HttpSource implements Source {
  readonly id = nextSourceId();
  readonly decodes = false;
  readonly readsInPlace = false;
  readonly damaged: readonly DamagedRange[] = [];
  readonly size: number;
  readonly mtime: Date;
  /** Chunks the page cache reads ahead of a sequential reader of this source. */
  readonly readAhead = READ_AHEAD_CHUNKS;
  readonly owner: { uid: number; gid: number; mode: number };
  readonly identity = { dev: 0, ino: 0 };
  readonly atimeKept = true;
  private readonly agents;
  /** Plain http:// reads over connections that receive into reused buffers (http-fast.ts); null for https. */
  private fast: FastHttp | null;
  private readonly parsedUrl: URL;
  private wants: Want[] = [];
  private flushQueued = false;
  private readonly queue: Array<{ start: number; end: number; members: Want[] }> = [];
  private inflight = 0;
  /** Set once the file is known to have changed (or access was withdrawn): every read fails with it. */
  private broken: HttpFault | null = null;
  private closed = false;
  /** The parser's reads: 64 KiB blocks, least recently used first. */
  private readonly syncBlocks = new Map<number, Buffer>();
  private lastSyncEnd = -1;

  constructor(
    private readonly client: HttpClient,
    readonly name: string,
    private readonly url: string,
    private readonly facts: FileFacts,
    firstBlock: Buffer,
  ) {
    this.size = facts.size;
    this.mtime = facts.lastModified && !Number.isNaN(facts.lastModified.getTime()) ? facts.lastModified : new Date();
    // Fetched with a secret (a login, a header, a signed query string): only the mounting user reads it.
    const u = new URL(url);
    const secret = client.access.logins[u.hostname] !== undefined || client.access.headers.length > 0 || u.search !== '';
    this.owner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mode: secret ? 0o400 : 0o444 };
    this.agents = makeAgents(client.access, MAX_INFLIGHT);
    this.parsedUrl = u;
    this.fast = u.protocol === 'http:' ? new FastHttp(MAX_INFLIGHT) : null;
    client.retain();
    if (firstBlock.length > 0) this.syncBlocks.set(0, firstBlock);
  }

  readAtSync(buf: Buffer, position: number): number {
    if (this.broken) throw new VmssError(this.broken.message);
    const end = Math.min(position + buf.length, this.size);
    if (end <= position) return 0;
    const b0 = Math.floor(position / SYNC_BLOCK);
    const b1 = Math.floor((end - 1) / SYNC_BLOCK);
    for (let b = b0; b <= b1; ) {
      if (this.syncBlocks.has(b)) {
        b++;
        continue;
      }
      // A run of missing blocks in one GET; a reader going forward gets a few more.
      let last = b;
      while (last < b1 && !this.syncBlocks.has(last + 1) && (last + 2 - b) * SYNC_BLOCK <= SYNC_MAX) last++;
      if (b * SYNC_BLOCK === this.lastSyncEnd) last = Math.min(last + 3, Math.floor((this.size - 1) / SYNC_BLOCK), b + SYNC_MAX / SYNC_BLOCK - 1);
      const from = b * SYNC_BLOCK;
      const to = Math.min((last + 1) * SYNC_BLOCK, this.size);
      const got = this.client.syncGet(this.name, this.url, from, to, this.facts).bytes;
      if (got.length < to - from) throw new VmssError(`${this.name}: the server sent ${got.length} bytes of ${to - from} asked`);
      for (let k = b; k <= last; k++) this.keepSync(k, got.subarray((k - b) * SYNC_BLOCK, (k - b + 1) * SYNC_BLOCK));
      this.lastSyncEnd = to;
      b = last + 1;
    }
    for (let b = b0; b <= b1; b++) {
      const block = this.syncBlocks.get(b) as Buffer;
      const s = Math.max(position, b * SYNC_BLOCK);
      const e = Math.min(end, b * SYNC_BLOCK + block.length);
      block.copy(buf, s - position, s - b * SYNC_BLOCK, e - b * SYNC_BLOCK);
    }
    return end - position;
  }

  private keepSync(b: number, bytes: Buffer): void {
    this.syncBlocks.delete(b);
    this.syncBlocks.set(b, bytes);
    for (const k of this.syncBlocks.keys()) {
      if (this.syncBlocks.size <= SYNC_BLOCKS_KEPT) break;
      this.syncBlocks.delete(k);
    }
  }

  read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    if (this.broken) return Promise.reject(this.broken);
    if (this.closed) return Promise.reject(new HttpFault(`${this.name}: closed`, true));
    const end = Math.min(position + length, this.size);
    if (end <= position) return Promise.resolve(0);
    return new Promise<number>((resolve, reject) => {
      this.wants.push({ start: position, end, buf, offset, resolve, reject });
      if (!this.flushQueued) {
        this.flushQueued = true;
        // Reads arriving in the same turn (a read-ahead window, several FUSE reads) go out together.
        setImmediate(() => this.flush());
      }
    });
  }

  /** Coalesce the waiting reads into runs of adjacent or overlapping bytes, one GET each. */
  private flush(): void {
    this.flushQueued = false;
    const wants = this.wants.sort((a, b) => a.start - b.start);
    this.wants = [];
    let job: { start: number; end: number; members: Want[] } | null = null;
    for (const w of wants) {
      if (job && w.start <= job.end && Math.max(job.end, w.end) - job.start <= MAX_GET) {
        job.end = Math.max(job.end, w.end);
        job.members.push(w);
      } else {
        if (job) this.queue.push(job);
        job = { start: w.start, end: w.end, members: [w] };
      }
    }
    if (job) this.queue.push(job);
    this.pump();
  }

  private pump(): void {
    while (this.inflight < MAX_INFLIGHT && this.queue.length > 0) this.run(this.queue.shift() as { start: number; end: number; members: Want[] });
  }

  private run(job: { start: number; end: number; members: Want[] }): void {
    this.inflight++;
    const sink = (chunk: Buffer, at: number): void => {
      const s0 = job.start + at;
      const e0 = s0 + chunk.length;
      for (const m of job.members) {
        const s = Math.max(s0, m.start);
        const e = Math.min(e0, m.end);
        if (s < e) chunk.copy(m.buf, m.offset + (s - m.start), s - s0, e - s0);
      }
    };
    const viaNode = (): Promise<FileFacts> => rangedGet(this.name, this.url, job.start, job.end, this.client.access, this.agents, sink);
    const get = (): Promise<FileFacts> => {
      if (!this.fast) return viaNode();
      return this.fast.get(this.name, this.parsedUrl, this.parsedUrl.origin, job.start, job.end, this.client.access, sink).catch((err: unknown) => {
        if (!(err instanceof NotPlain)) throw err;
        // Not a plain 206: Node's client follows the redirect or says what is wrong; a server that
        // redirects will again, so its reads go there from now on.
        if (err.redirect) this.fast = null;
        return viaNode();
      });
    };
    const once = (): Promise<FileFacts> => {
      if (this.broken) return Promise.reject(this.broken);
      return get().then((facts) => {
        const changed = changeOf(this.name, this.facts, facts);
        if (changed) throw changed;
        return facts;
      });
    };
    withRetries(once).then(
      () => {
        for (const m of job.members) m.resolve(m.end - m.start);
      },
      (err: unknown) => {
        const fault = err instanceof HttpFault ? err : new HttpFault(`${this.name}: ${String(err)}`, false);
        // A changed file, a refusal, a server that stopped honouring Range: no later read can be trusted.
        if (fault.permanent) this.broken ??= fault;
        for (const m of job.members) m.reject(fault);
      },
    ).finally(() => {
      this.inflight--;
      this.pump();
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.fast?.close();
    this.agents.http.destroy();
    this.agents.https.destroy();
    this.client.release();
  }
}
