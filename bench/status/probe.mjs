#!/usr/bin/env node
// bench/status/probe.mjs - sequential GET /api/v1/spaces/{space}/sync/status
// on one keep-alive connection, timing each request as the client sees it.
//
//   node probe.mjs --port PORT --token T --space S [--count 2000]
//        [--warmup 200] [--rid PREFIX] [--expect-count N]
//
// A plain TCP socket (Nagle off) rather than node's http module, so the
// client's own overhead stays small: the request bytes are written, the
// clock stops when the whole response (headers + Content-Length bytes) has
// arrived. --warmup requests first (not timed; X-Request-Id
// warm-PREFIX-<i>), then --count timed ones (X-Request-Id PREFIX-<i>), so the
// server's access-log lines of the timed requests can be picked out.
// Every answer must be 200; with --expect-count, the first and last bodies'
// entity_count must equal N. One JSON line on stdout: median, p90, p99, max
// in microseconds, and the last body's entity_count and server_version.
import net from 'node:net';

const args = Object.create(null);
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i];
  if (!k.startsWith('--') || i + 1 >= process.argv.length) {
    console.error(`probe: bad argument ${k}`);
    process.exit(2);
  }
  args[k.slice(2)] = process.argv[i + 1];
}
const host = args.host ?? '127.0.0.1';
const port = Number(args.port);
const token = args.token ?? '';
const space = args.space ?? 'bench';
const count = Number(args.count ?? 2000);
const warmup = Number(args.warmup ?? 200);
const rid = args.rid ?? 'probe';
const expectCount = args['expect-count'] !== undefined ? Number(args['expect-count']) : null;
if (!Number.isInteger(port) || !Number.isInteger(count) || count < 1 || count > 1000000 ||
    !Number.isInteger(warmup) || warmup < 0 || warmup > 100000) {
  console.error('probe: --port, --count (1..1e6) and --warmup (0..1e5) must be integers');
  process.exit(2);
}

const sock = net.connect({ host, port });
sock.setNoDelay(true);
let pending = null; // { resolve, reject }
let acc = Buffer.alloc(0);
sock.on('data', (chunk) => {
  acc = acc.length ? Buffer.concat([acc, chunk]) : chunk;
  if (!pending) return;
  const he = acc.indexOf('\r\n\r\n');
  if (he < 0) return;
  const head = acc.toString('latin1', 0, he);
  const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (!m) { pending.reject(new Error(`no Content-Length in ${head.slice(0, 200)}`)); return; }
  const total = he + 4 + Number(m[1]);
  if (acc.length < total) return;
  const status = Number(head.slice(9, 12));
  const body = acc.subarray(he + 4, total);
  acc = acc.subarray(total);
  const p = pending;
  pending = null;
  p.resolve({ status, body });
});
sock.on('error', (e) => { if (pending) pending.reject(e); else { console.error(`probe: ${e.message}`); process.exit(1); } });
sock.on('close', () => { if (pending) pending.reject(new Error('connection closed')); });
await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });

const path = `/api/v1/spaces/${encodeURIComponent(space)}/sync/status`;
function request(id) {
  const req = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nAuthorization: Bearer ${token}\r\n` +
    `X-Request-Id: ${id}\r\n\r\n`, 'latin1');
  return new Promise((resolve, reject) => {
    pending = { resolve, reject };
    sock.write(req);
  });
}

let first = null;
let last = null;
const timeout = setTimeout(() => { console.error('probe: gave up after 600 s'); process.exit(1); }, 600000);
for (let i = 0; i < warmup; i++) {
  const r = await request(`warm-${rid}-${i}`);
  if (r.status !== 200) { console.error(`probe: HTTP ${r.status}: ${r.body.toString().slice(0, 300)}`); process.exit(1); }
}
const lat = new Float64Array(count);
for (let i = 0; i < count; i++) {
  const t = process.hrtime.bigint();
  const r = await request(`${rid}-${i}`);
  lat[i] = Number(process.hrtime.bigint() - t) / 1000;
  if (r.status !== 200) { console.error(`probe: HTTP ${r.status}: ${r.body.toString().slice(0, 300)}`); process.exit(1); }
  if (i === 0) first = JSON.parse(r.body.toString());
  if (i === count - 1) last = JSON.parse(r.body.toString());
}
clearTimeout(timeout);
sock.end();
lat.sort();
const pct = (p) => lat[Math.min(count - 1, Math.max(0, Math.round(p * (count - 1))))];
const out = {
  space, count, median_us: Number(pct(0.5).toFixed(1)), p90_us: Number(pct(0.9).toFixed(1)),
  p99_us: Number(pct(0.99).toFixed(1)), max_us: Number(lat[count - 1].toFixed(1)),
  entity_count: last.entity_count, server_version: last.server_version, digest: last.digest, error: null,
};
if (expectCount !== null && (first.entity_count !== expectCount || last.entity_count !== expectCount)) {
  out.error = `entity_count ${first.entity_count}/${last.entity_count}, expected ${expectCount}`;
}
console.log(JSON.stringify(out));
if (out.error) process.exit(1);
