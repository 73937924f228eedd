// Opens N keep-alive connections to one HTTP server, sends one request on
// each, reads the full response, then keeps every socket open and idle so the
// benchmark can read the server's RSS. Used by bench/http/run.
//
//   node idle-conns.mjs --port P [--host 127.0.0.1] [--conns 5000]
//                       [--path /healthz] [--concurrency 200] [--hold-max-s 120]
//
// stdout, one JSON line each:
//   {"ready":true,"open":N,"ok":N,"failed":N,"codes":{...},"errors":{...},"ms":T}
//       once every connection has its response (or failed);
//   {"still_open":N,"closed_by_peer":N}   on SIGUSR2 (the benchmark sends it
//       after reading the RSS, to check that nothing was closed meanwhile).
// Exits on SIGTERM/SIGINT, on stdin EOF is ignored, and by itself after
// --hold-max-s seconds, so it can never hang around. Loopback only.
import net from 'node:net';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const host = opt('--host', '127.0.0.1');
const port = Number(opt('--port', '0'));
const total = Number(opt('--conns', '5000'));
const path = opt('--path', '/healthz');
const concurrency = Number(opt('--concurrency', '200'));
const holdMaxS = Number(opt('--hold-max-s', '120'));
const perConnTimeoutMs = 30_000;

if (!/^127\.|^localhost$|^::1$/.test(host)) {
  console.error('idle-conns: loopback targets only');
  process.exit(2);
}
if (!(port > 0) || !(total > 0)) {
  console.error('idle-conns: --port and --conns are required');
  process.exit(2);
}

const request = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n`);
const sockets = new Set();
const codes = {};
const errors = {};
let started = 0, done = 0, ok = 0, failed = 0, closedByPeer = 0, ready = false;
const t0 = Date.now();

function finish(sock, good, why) {
  if (sock._idleDone) return;
  sock._idleDone = true;
  clearTimeout(sock._timer);
  done++;
  if (good) ok++;
  else {
    failed++;
    errors[why] = (errors[why] || 0) + 1;
    sockets.delete(sock);
    sock.destroy();
  }
  if (started < total) openOne();
  else if (done === total && !ready) {
    ready = true;
    console.log(JSON.stringify({ ready: true, open: sockets.size, ok, failed, codes, errors, ms: Date.now() - t0 }));
  }
}

function openOne() {
  started++;
  const sock = net.connect({ host, port });
  sock.setNoDelay(true);
  sockets.add(sock);
  let buf = Buffer.alloc(0);
  sock._timer = setTimeout(() => finish(sock, false, 'timeout'), perConnTimeoutMs);
  sock.on('connect', () => sock.write(request));
  sock.on('data', (chunk) => {
    if (sock._idleDone) return; // unexpected bytes on an idle connection: ignore
    buf = Buffer.concat([buf, chunk]);
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = buf.subarray(0, end).toString('latin1');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
    const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    const need = end + 4 + (cl ? Number(cl[1]) : 0);
    if (buf.length < need) return;
    const code = m ? m[1] : 'bad';
    codes[code] = (codes[code] || 0) + 1;
    buf = null;
    finish(sock, code === '200', 'status_' + code);
  });
  sock.on('error', (e) => finish(sock, false, e.code || 'error'));
  sock.on('close', () => {
    if (sockets.delete(sock) && sock._idleDone) closedByPeer++;
    finish(sock, false, 'closed');
  });
}

for (let i = 0; i < Math.min(concurrency, total); i++) openOne();

process.on('SIGUSR2', () => {
  console.log(JSON.stringify({ still_open: sockets.size, closed_by_peer: closedByPeer }));
});
const stop = () => {
  for (const s of sockets) s.destroy();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setTimeout(() => {
  console.error(`idle-conns: --hold-max-s ${holdMaxS} reached, exiting`);
  stop();
}, holdMaxS * 1000).unref();
// keep the process alive while holding sockets even if all were closed
setInterval(() => {}, 1 << 30);
