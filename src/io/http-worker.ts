// The worker behind HttpSource.readAtSync: the format parser reads synchronously, so the main
// thread posts a ranged GET here and waits on a shared word (Atomics.wait) while this thread's
// own event loop runs the request. Only opening (parsing the metadata, indexing a compressed
// stream) reads this way; the mount's reads are asynchronous and never come here.
import { parentPort, workerData } from 'node:worker_threads';
import type { HttpAccessData } from './http-access';
import { HttpFault, makeAgents, rangedGet, withRetries } from './http-request';

export interface SyncRequest {
  shown: string;
  url: string;
  start: number;
  end: number;
}

/** ctrl[0]: 0 waiting, 1 done, 2 failed; ctrl[1]: bytes in `data`; ctrl[2]: bytes of JSON in `meta`. */
export interface SyncShared {
  access: HttpAccessData;
  ctrl: SharedArrayBuffer;
  data: SharedArrayBuffer;
  meta: SharedArrayBuffer;
}

const shared = workerData as SyncShared;
const ctrl = new Int32Array(shared.ctrl);
const data = Buffer.from(shared.data);
const meta = Buffer.from(shared.meta);
const agents = makeAgents(shared.access, 2);

function answer(state: 1 | 2, n: number, json: unknown): void {
  const text = Buffer.from(JSON.stringify(json));
  const len = text.copy(meta, 0, 0, Math.min(text.length, meta.length));
  ctrl[1] = n;
  ctrl[2] = len;
  Atomics.store(ctrl, 0, state);
  Atomics.notify(ctrl, 0);
}

parentPort?.on('message', (m: SyncRequest) => {
  let got = 0;
  withRetries(() => {
    got = 0;
    return rangedGet(m.shown, m.url, m.start, m.end, shared.access, agents, (chunk, at) => {
      chunk.copy(data, at);
      got = Math.max(got, at + chunk.length);
    });
  }).then(
    (facts) => answer(1, got, { facts: { ...facts, lastModified: facts.lastModified?.getTime() ?? null } }),
    (err: unknown) => answer(2, 0, { message: err instanceof Error ? err.message : String(err), permanent: err instanceof HttpFault && err.permanent }),
  );
});
