// Baseline for bench/http/run: a plain Node.js `http` server answering the
// same bytes as snapsync for the two benchmarked paths.
//
//   node node-server.mjs [--port N] [--status-body-file FILE]
//
// GET /healthz        -> 200 {"status":"ok"}
// GET /api/v1/status  -> 200 <contents of FILE> (snapsync's real body, fetched
//                        once by the benchmark so the bytes are identical)
// anything else       -> 404 {"error":"not_found",...}
//
// Prints one line {"listening":{"host":"127.0.0.1","port":N}} on stdout once it
// accepts connections. Exits on SIGTERM/SIGINT. Listens on 127.0.0.1 only.
import http from 'node:http';
import fs from 'node:fs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const port = Number(opt('--port', '0'));
const statusFile = opt('--status-body-file', '');

const CT = 'application/json; charset=utf-8';
const healthz = Buffer.from('{"status":"ok"}');
const status = statusFile
  ? fs.readFileSync(statusFile)
  : Buffer.from('{"name":"snapsync","version":"0.0.0","instance_id":"00000000000000000000000000","uptime_s":0,"spaces":0}');
const notFound = Buffer.from('{"error":"not_found","message":"no such route"}');

function send(res, code, body) {
  res.writeHead(code, { 'Content-Type': CT, 'Content-Length': body.length });
  res.end(body);
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' || req.method === 'HEAD') {
    const q = req.url.indexOf('?');
    const path = q < 0 ? req.url : req.url.slice(0, q);
    if (path === '/healthz') return send(res, 200, healthz);
    if (path === '/api/v1/status') return send(res, 200, status);
  }
  send(res, 404, notFound);
});
// Match snapsync's --idle-timeout-ms default (60 s) instead of Node's 5 s, so
// the idle keep-alive measurement sees every connection still open.
server.keepAliveTimeout = 60_000;
server.headersTimeout = 61_000;
server.requestTimeout = 0;
server.maxRequestsPerSocket = 0;

server.listen(port, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(JSON.stringify({ listening: { host: a.address, port: a.port } }) + '\n');
});
const stop = () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 2000).unref();
process.on('SIGTERM', () => { server.closeAllConnections?.(); stop(); });
process.on('SIGINT', () => { server.closeAllConnections?.(); stop(); });
