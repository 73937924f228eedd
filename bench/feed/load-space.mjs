#!/usr/bin/env node
// bench/feed/load-space.mjs - fill a snapsync space fast through
// POST /api/v1/spaces/{space}/changes batches (used by bench/feed/run and
// bench/status/run).
//
//   node load-space.mjs --url http://127.0.0.1:PORT --token T --space S --count N
//        [--start 1] [--body issue|small] [--batch 1000] [--concurrency 2]
//        [--collection issues] [--prefix e] [--max-seconds 3600] [--progress-s 5]
//
// Pushes entities PREFIX-START .. PREFIX-(START+COUNT-1) into COLLECTION as
// new entities (base_rev null), BATCH per request, CONCURRENCY requests in
// flight (keep-alive). Bodies: "issue" is the ~320-byte object of
// bench/writes/put.lua, "small" a ~100-byte one. Every result must be
// "applied"; anything else stops the load with exit code 1. A 429/503 answer
// is retried (at most 5 times per batch, with a growing pause).
// Progress goes to stderr; one JSON summary line to stdout.
import http from 'node:http';

const args = Object.create(null);
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i];
  if (!k.startsWith('--') || i + 1 >= process.argv.length) {
    console.error(`load-space: bad argument ${k}`);
    process.exit(2);
  }
  args[k.slice(2)] = process.argv[i + 1];
}
const url = new URL(args.url ?? 'http://127.0.0.1:7420');
const token = args.token ?? '';
const space = args.space ?? 'bench';
const count = Number(args.count ?? 100000);
const start = Number(args.start ?? 1);
const bodyKind = args.body ?? 'issue';
const batch = Number(args.batch ?? 1000);
const concurrency = Number(args.concurrency ?? 2);
const collection = args.collection ?? 'issues';
const prefix = args.prefix ?? 'e';
const maxSeconds = Number(args['max-seconds'] ?? 3600);
const progressS = Number(args['progress-s'] ?? 5);
for (const [k, v, lo, hi] of [['count', count, 1, 1e8], ['start', start, 0, 1e12], ['batch', batch, 1, 1000],
  ['concurrency', concurrency, 1, 64], ['max-seconds', maxSeconds, 1, 86400]]) {
  if (!Number.isInteger(v) || v < lo || v > hi) {
    console.error(`load-space: --${k} must be an integer in [${lo}, ${hi}]`);
    process.exit(2);
  }
}
if (!['issue', 'small'].includes(bodyKind)) {
  console.error('load-space: --body must be issue or small');
  process.exit(2);
}

const statuses = ['open', 'in_progress', 'review', 'closed'];
const points = [1, 2, 3, 5, 8, 13];
function issueBody(n) { // the same object as put.lua's body(n)
  return {
    title: `Checkout fails after applying coupon #${n}`, status: statuses[n % 4], priority: n % 5,
    assignee: `user-${n % 97}`, reporter: `user-${n % 211}`, labels: ['bug', 'checkout', `p${n % 5}`],
    points: points[n % 6], sprint: `2026-W${String(n % 52 + 1).padStart(2, '0')}`, component: 'web/cart',
    description: `Add ${n % 9 + 1} items, apply coupon SAVE${n % 50}, press Checkout: the button spins and nothing happens.`,
  };
}
function smallBody(n) { // ~100 bytes of JSON
  return { title: `Item ${n}`, status: statuses[n % 4], priority: n % 5, assignee: `user-${n % 97}`,
    tags: ['a', `t${n % 13}`], n };
}
const makeBody = bodyKind === 'issue' ? issueBody : smallBody;

const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const path = `/api/v1/spaces/${encodeURIComponent(space)}/changes`;

function post(payload) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: url.hostname, port: url.port, path, method: 'POST', agent,
      headers: { 'Content-Type': 'application/json', 'Content-Length': payload.length,
        Authorization: `Bearer ${token}` },
      timeout: 120000,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('request timed out after 120 s')));
    req.on('error', reject);
    req.end(payload);
  });
}

const t0 = process.hrtime.bigint();
const secs = () => Number(process.hrtime.bigint() - t0) / 1e9;
const end = start + count; // exclusive
let next = start;
let loaded = 0;
let batches = 0;
let bytesSent = 0;
let serverVersion = null;
let lastProgress = 0;
let failed = null;
let bodyBytes = 0;

async function worker() {
  while (next < end && !failed) {
    if (secs() > maxSeconds) { failed = `stopped after --max-seconds ${maxSeconds}`; return; }
    const from = next;
    const to = Math.min(end, from + batch);
    next = to;
    const changes = [];
    for (let n = from; n < to; n++) {
      const body = makeBody(n);
      changes.push({ collection, id: `${prefix}-${n}`, base_rev: null, body });
    }
    const payload = Buffer.from(JSON.stringify({ changes }));
    let res;
    for (let attempt = 0; ; attempt++) {
      try {
        res = await post(payload);
      } catch (e) {
        failed = `POST ${path}: ${e.message}`;
        return;
      }
      if ((res.status === 429 || res.status === 503) && attempt < 5) {
        await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
        continue;
      }
      break;
    }
    if (res.status !== 200) { failed = `POST ${path} answered ${res.status}: ${res.body.slice(0, 300)}`; return; }
    let out;
    try { out = JSON.parse(res.body); } catch (e) { failed = `unparsable answer: ${res.body.slice(0, 300)}`; return; }
    const bad = (out.results ?? []).find((r) => r.status !== 'applied');
    if (!Array.isArray(out.results) || out.results.length !== to - from || bad) {
      failed = `batch ${from}..${to - 1} not applied whole: ${JSON.stringify(bad ?? out).slice(0, 300)}`;
      return;
    }
    loaded += to - from;
    batches++;
    bytesSent += payload.length;
    if (batches === 1) bodyBytes = JSON.stringify(changes[0].body).length;
    if (serverVersion === null || out.server_version > serverVersion) serverVersion = out.server_version;
    const s = secs();
    if (s - lastProgress >= progressS) {
      lastProgress = s;
      console.error(`[load-space] ${space}: ${loaded}/${count} entities in ${s.toFixed(1)} s ` +
        `(${Math.round(loaded / s)}/s)`);
    }
  }
}

await Promise.all(Array.from({ length: concurrency }, worker));
agent.destroy();
const s = secs();
const summary = { space, loaded, seconds: Number(s.toFixed(3)), rate: Math.round(loaded / s), batches,
  bytes_sent: bytesSent, body_bytes_first: bodyBytes, server_version: serverVersion,
  error: failed };
console.log(JSON.stringify(summary));
if (failed) {
  console.error(`[load-space] error: ${failed}`);
  process.exit(1);
}
