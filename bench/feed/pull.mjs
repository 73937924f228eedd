#!/usr/bin/env node
// bench/feed/pull.mjs - pull a whole space through the change feed, the way
// a client bootstraps: GET /changes?since=V&limit=L, one page at a time on
// one keep-alive connection, V = the page's last_version, until more=false.
//
//   node pull.mjs --url http://127.0.0.1:PORT --token T --space S
//        [--limit 1000] [--gzip 0|1] [--parse tail|full] [--rid PREFIX]
//        [--expect N] [--max-seconds 300] [--server-pid PID]
//
// --gzip 1   sends Accept-Encoding: gzip and gunzips each page (zlib, in the
//            client's time)
// --parse tail (default): reads last_version and more from the end of the
//            page and counts the entities by scanning for '{"collection":'
//            - cheap, so the time is mostly the server's and the wire's;
//         full: JSON.parse of every page and checks that versions ascend -
//            what a real client pays on top.
// --rid      every request carries X-Request-Id: PREFIX-<page>, so the
//            server's access-log lines of this pull can be picked out.
// --expect   the number of entities the space holds: exit 1 when the pull
//            saw another number.
// --server-pid  reads the server's CPU time (whole process and per thread,
//            from /proc) just before the first request and after the last
//            answer, so server_cpu_pct covers exactly the timed pull.
// One JSON line on stdout: entities, pages, wire and JSON bytes, seconds
// (first request to last byte), entities/s, CPU of server and client.
import fs from 'node:fs';
import http from 'node:http';
import zlib from 'node:zlib';

const args = Object.create(null);
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i];
  if (!k.startsWith('--') || i + 1 >= process.argv.length) {
    console.error(`pull: bad argument ${k}`);
    process.exit(2);
  }
  args[k.slice(2)] = process.argv[i + 1];
}
const url = new URL(args.url ?? 'http://127.0.0.1:7420');
const token = args.token ?? '';
const space = args.space ?? 'bench';
const limit = Number(args.limit ?? 1000);
const gzip = args.gzip === '1';
const parse = args.parse ?? 'tail';
const rid = args.rid ?? '';
const expect = args.expect !== undefined ? Number(args.expect) : null;
const maxSeconds = Number(args['max-seconds'] ?? 300);
const serverPid = args['server-pid'] ? Number(args['server-pid']) : null;

// utime + stime in clock ticks (USER_HZ, 100 on Linux) per thread, from /proc
function threadTicks(pid) {
  const out = {};
  if (!pid) return out;
  const ticks = (f) => {
    const st = fs.readFileSync(f, 'utf8');
    const rest = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  };
  try {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        const comm = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
        const name = Number(tid) === pid ? 'loop' : (comm === 'snapsync' ? 'pool' : comm);
        out[name] = (out[name] ?? 0) + ticks(`/proc/${pid}/task/${tid}/stat`);
      } catch { /* thread gone */ }
    }
  } catch { /* process gone */ }
  return out;
}
if (!['tail', 'full'].includes(parse)) { console.error('pull: --parse must be tail or full'); process.exit(2); }

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const base = `/api/v1/spaces/${encodeURIComponent(space)}/changes`;

function get(path, page) {
  return new Promise((resolve, reject) => {
    const headers = { Authorization: `Bearer ${token}` };
    if (gzip) headers['Accept-Encoding'] = 'gzip';
    if (rid) headers['X-Request-Id'] = `${rid}-${page}`;
    const req = http.request({ host: url.hostname, port: url.port, path, method: 'GET', agent, headers, timeout: 60000 },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, enc: res.headers['content-encoding'] ?? '',
          buf: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
    req.on('timeout', () => req.destroy(new Error('request timed out after 60 s')));
    req.on('error', reject);
    req.end();
  });
}

const needle = Buffer.from('{"collection":');
function countEntities(buf) {
  let n = 0;
  for (let i = buf.indexOf(needle); i !== -1; i = buf.indexOf(needle, i + needle.length)) n++;
  return n;
}

let since = 0;
let entities = 0;
let pages = 0;
let wire = 0;
let jsonBytes = 0;
let gzipped = 0;
let lastSeen = 0;
let error = null;
const srv0 = threadTicks(serverPid);
const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
const secs = () => Number(process.hrtime.bigint() - t0) / 1e9;
for (;;) {
  if (secs() > maxSeconds) { error = `stopped after --max-seconds ${maxSeconds}`; break; }
  let res;
  try {
    res = await get(`${base}?since=${since}&limit=${limit}`, pages);
  } catch (e) { error = e.message; break; }
  pages++;
  wire += res.buf.length;
  let body = res.buf;
  if (res.enc === 'gzip') { gzipped++; body = zlib.gunzipSync(body); }
  jsonBytes += body.length;
  if (res.status !== 200) { error = `HTTP ${res.status}: ${body.toString('utf8', 0, 300)}`; break; }
  let lastVersion;
  let more;
  if (parse === 'full') {
    const page = JSON.parse(body.toString('utf8'));
    for (const c of page.changes) {
      if (!(c.version > lastSeen)) { error = `version ${c.version} after ${lastSeen}`; break; }
      lastSeen = c.version;
    }
    entities += page.changes.length;
    lastVersion = page.last_version;
    more = page.more;
  } else {
    const tail = body.toString('utf8', Math.max(0, body.length - 256));
    const lv = /"last_version":(\d+)/.exec(tail);
    const mo = /"more":(true|false)/.exec(tail);
    if (!lv || !mo) { error = `no last_version/more at the end of page ${pages}: ${tail}`; break; }
    lastVersion = Number(lv[1]);
    more = mo[1] === 'true';
    entities += countEntities(body);
  }
  if (error) break;
  if (more && !(lastVersion > since)) { error = `last_version ${lastVersion} did not advance past ${since}`; break; }
  since = lastVersion;
  if (!more) break;
}
const seconds = secs();
const cpu1 = process.cpuUsage(cpu0);
const srv1 = threadTicks(serverPid);
agent.destroy();
const hz = 100;
const threads = {};
let srvTicks = 0;
for (const [k, v] of Object.entries(srv1)) {
  const d = v - (srv0[k] ?? 0);
  srvTicks += d;
  threads[k] = Math.round(100 * d / hz / seconds);
}
const serverCpu = serverPid ? Math.round(100 * srvTicks / hz / seconds) : null;
const clientCpu = Math.round(100 * (cpu1.user + cpu1.system) / 1e6 / seconds);
if (!error && expect !== null && entities !== expect) error = `pulled ${entities} entities, expected ${expect}`;
console.log(JSON.stringify({ entities, pages, limit, gzip, gzipped_pages: gzipped, parse, wire_bytes: wire,
  json_bytes: jsonBytes, seconds: Number(seconds.toFixed(4)), rate: Math.round(entities / seconds),
  last_version: since, server_cpu_pct: serverCpu, server_threads_pct: threads, client_cpu_pct: clientCpu, error }));
if (error) { console.error(`pull: ${error}`); process.exit(1); }
