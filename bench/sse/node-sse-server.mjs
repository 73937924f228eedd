// Baseline for bench/sse/run: a minimal Node.js Server-Sent Events server,
// the way one is usually written: a Set of open responses and an HTTP
// endpoint whose request triggers a broadcast.
//
//   node node-sse-server.mjs [--port N] [--keepalive-ms 15000]
//
// GET /api/v1/events[?...]   -> 200 text/event-stream (chunked), the same
//     headers snapsync sends (Cache-Control: no-store, X-Accel-Buffering: no),
//     starts with "retry: 2000\n\n"; the response joins the Set until it closes.
// PUT /api/v1/spaces/{s}/collections/{c}/entities/{id}  (JSON object body)
//     -> parses the body, takes the next version, writes one frame
//        "id: N\nevent: change\ndata: {"space","collection","id","rev",
//        "version","deleted"}\n\n" to every open response, answers 201 with
//        the entity JSON. (No storage: it does less work per write than
//        snapsync, which commits to SQLite first.)
// GET /healthz -> {"status":"ok"}
// A ": ping" comment goes to every stream each --keepalive-ms.
// Prints {"listening":{"host","port"}} on stdout. Loopback only; exits on
// SIGTERM/SIGINT.
import http from 'node:http';
import crypto from 'node:crypto';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const port = Number(opt('--port', '0'));
const keepaliveMs = Number(opt('--keepalive-ms', '15000'));

const clients = new Set();
let nextId = Date.now() * 1000;
const versions = new Map();      // space -> version

const JSON_CT = 'application/json; charset=utf-8';
function sendJson(res, code, obj) {
  const b = Buffer.from(JSON.stringify(obj));
  res.writeHead(code, { 'Content-Type': JSON_CT, 'Content-Length': b.length });
  res.end(b);
}

function broadcast(event, data) {
  const frame = `id: ${++nextId}\nevent: ${event}\ndata: ${data}\n\n`;
  for (const res of clients) res.write(frame);
}

const ENTITY = /^\/api\/v1\/spaces\/([a-z0-9][a-z0-9_-]{0,62})\/collections\/([a-z][a-z0-9_]{0,62})\/entities\/([A-Za-z0-9][A-Za-z0-9._:~-]{0,127})$/;

const server = http.createServer((req, res) => {
  const q = req.url.indexOf('?');
  const path = q < 0 ? req.url : req.url.slice(0, q);
  if (req.method === 'GET' && path === '/api/v1/events') {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Accel-Buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    clients.add(res);
    res.on('close', () => clients.delete(res));
    return;
  }
  if (req.method === 'GET' && path === '/healthz') return sendJson(res, 200, { status: 'ok' });
  const m = req.method === 'PUT' && ENTITY.exec(path);
  if (m) {
    const chunks = [];
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => {
      let body;
      try { body = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch { body = undefined; }
      if (!body || typeof body !== 'object' || Array.isArray(body)) {
        return sendJson(res, 400, { error: 'invalid_json', message: 'the body must be a JSON object' });
      }
      const [, space, collection, id] = m;
      const version = (versions.get(space) || 0) + 1;
      versions.set(space, version);
      const rev = `1-${crypto.createHash('sha256').update(JSON.stringify(body)).digest('hex').slice(0, 16)}`;
      broadcast('change', JSON.stringify({ space, collection, id, rev, version, deleted: false }));
      const now = new Date().toISOString();
      sendJson(res, 201, { collection, id, rev, version, created_at: now, updated_at: now, deleted: false, body });
    });
    return;
  }
  sendJson(res, 404, { error: 'not_found', message: 'no such route' });
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 61_000;
server.requestTimeout = 0;
server.maxRequestsPerSocket = 0;

setInterval(() => { for (const res of clients) res.write(': ping\n\n'); }, keepaliveMs).unref();

server.listen(port, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(JSON.stringify({ listening: { host: a.address, port: a.port } }) + '\n');
});
const stop = () => {
  for (const res of clients) res.end();
  server.closeAllConnections?.();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
