// A deliberately misbehaving web server, for the faults the suite's nginx cannot be made to show:
// a 206 running to the end of the file when a bounded range was asked (as ESXi's datastore
// browser may answer), and a body shorter than its Content-Range. It also turns the faults nginx
// shows at open (200 for a range, 401, 404, a redirect loop) on under a running mount.
//   node misbehaving-server.js ROOT PORT
// Serves ROOT's files; before each request it reads ROOT/MODE (honest when absent).

import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';

const [root, portText] = process.argv.slice(2) as [string, string];

function mode(): string {
  try {
    return fs.readFileSync(path.join(root, 'MODE'), 'utf8').trim();
  } catch {
    return 'honest';
  }
}

const server = http.createServer((req, res) => {
  const m = mode();
  const name = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/^\/+/, '');
  const file = path.join(root, path.basename(name));
  if (m === 'stall') return; // never answers
  if (m === 'unauthorized') {
    res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="x"' });
    return res.end();
  }
  if (m === 'gone') {
    res.writeHead(404);
    return res.end();
  }
  if (m === 'loop') {
    res.writeHead(302, { Location: req.url });
    return res.end();
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    res.writeHead(404);
    return res.end();
  }
  const headers = { ETag: `"${st.mtimeMs.toString(16)}-${st.size.toString(16)}"`, 'Last-Modified': st.mtime.toUTCString(), 'Accept-Ranges': 'bytes' };
  const r = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (!r || m === 'ignore-range') {
    res.writeHead(200, { ...headers, 'Content-Length': st.size });
    return fs.createReadStream(file).pipe(res);
  }
  const start = Number(r[1]);
  let end = r[2] === '' ? st.size - 1 : Math.min(Number(r[2]), st.size - 1);
  if (m === 'overlong') end = st.size - 1;
  const length = end + 1 - start;
  res.writeHead(206, { ...headers, 'Content-Range': `bytes ${start}-${end}/${st.size}`, 'Content-Length': length });
  if (m === 'short') {
    // Half the promised body, then the connection is dropped.
    const half = Math.max(1, Math.floor(length / 2));
    const s = fs.createReadStream(file, { start, end: start + half - 1 });
    s.on('data', (c) => res.write(c));
    s.on('end', () => res.socket?.destroy());
    return;
  }
  const s = fs.createReadStream(file, { start, end });
  s.pipe(res);
  // A client that closes an overlong answer early: stop reading the file.
  res.on('close', () => s.destroy());
});
server.keepAliveTimeout = 60_000;
server.listen(Number(portText), '127.0.0.1');
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
