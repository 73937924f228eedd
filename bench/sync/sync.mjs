#!/usr/bin/env node
// bench/sync/sync.mjs - data set and HTTP clients for bench/sync/run.
//
//   node sync.mjs stats        --count N
//   node sync.mjs snap-load    --url U --token T --space S --count N [--concurrency 2]
//   node sync.mjs snap-edit    --url U --token T --space S --count N --edits E --run R
//   node sync.mjs snap-sync    --url B --token TB --space S --peer A --peer-token TA [--reps 1] [--direction pull] [--bootstrap snapshot]
//   node sync.mjs snap-digests --url A --token TA --url2 B --token2 TB --space S
//   node sync.mjs pouch-load   --url U --db D --count N [--concurrency 2]
//   node sync.mjs pouch-edit   --url U --db D --count N --edits E --run R
//   node sync.mjs pouch-rep    --url B --source URL --target D [--reps 1]
//   node sync.mjs pouch-compare --url A --url2 B --db D
//   node sync.mjs bootstrap    --url A --token TA --url2 C --token2 TC --space S --dir DIR
//
// The data set of N entities is a pure function of N (built from
// bench/lib/tracker-data.mjs, shared with bench/snapshot/tracker.mjs):
// entity n belongs to projects (0.1 %), milestones (1.9 %), issues (28 %),
// relationships (20 %) or comments (the rest), with a body of 300 to ~1,500
// bytes of JSON made from a PRNG seeded with its collection and index. Here
// every entity stays live (no tombstones), so both servers hold N documents.
// snapsync gets {collection, id, body}; pouchdb-server gets the document
// {"_id":"<collection>:<id>","collection":"<collection>", ...body}.
//
// Edit run R changes E entities chosen by a permutation that depends on R:
// their current revs are read (snapsync: GET of each entity, 16 in flight;
// pouchdb: one POST _all_docs {keys}), then one batch writes the new bodies
// (snapsync: POST /changes with base_rev; pouchdb: _bulk_docs with _rev),
// 1,000 per request. Every item must be applied.
//
// snap-sync / pouch-rep open a keep-alive connection first (not timed), then
// time each POST /sync {"direction":"pull","wait":true} / POST /_replicate
// with the high-resolution clock. One JSON line on stdout per command;
// progress and errors on stderr; exit 1 on any error.
import fs from 'node:fs';
import http from 'node:http';
import {
  mulberry32, hash32, STATUSES, PRIORITIES, TYPES, LABELS, COLORS, REL_TYPES, BROWSERS, pick, between, words, sentences, user, date, day, layout, locate, COLSEED, entityId,
} from '../lib/tracker-data.mjs';

const cmd = process.argv[2];
const args = Object.create(null);
for (let i = 3; i < process.argv.length; i += 2) {
  const k = process.argv[i];
  if (!k.startsWith('--') || i + 1 >= process.argv.length) {
    console.error(`sync.mjs: bad argument ${k}`);
    process.exit(2);
  }
  args[k.slice(2)] = process.argv[i + 1];
}
function intArg(name, def, lo, hi) {
  const v = Number(args[name] ?? def);
  if (!Number.isInteger(v) || v < lo || v > hi) {
    console.error(`sync.mjs: --${name} must be an integer in [${lo}, ${hi}]`);
    process.exit(2);
  }
  return v;
}
function need(name) {
  if (args[name] === undefined) { console.error(`sync.mjs: ${cmd} needs --${name}`); process.exit(2); }
  return args[name];
}
const fail = (msg) => { console.error(`[sync.mjs ${cmd}] error: ${msg}`); process.exit(1); };

// ------------------------------------------------------------------ data set
function makeBody(L, col, k, extra) {
  const r = mulberry32(hash32(k, COLSEED[col]));
  const cnt = (name) => L.find((c) => c.name === name).count;
  const project = entityId('projects', k % cnt('projects'));
  let b;
  switch (col) {
    case 'projects': {
      const labels = [];
      for (let i = 0, n = between(r, 6, 10); i < n; i++) labels.push({ name: pick(r, LABELS), color: pick(r, COLORS) });
      const members = [];
      for (let i = 0, n = between(r, 4, 14); i < n; i++) members.push(user(r));
      b = { key: `P${k + 1}`, name: words(r, 2, 4), description: sentences(r, 25, 60), owner: user(r), members,
        visibility: pick(r, ['private', 'internal', 'public']), archived: false, created_by: user(r),
        settings: { default_assignee: user(r), workflow: STATUSES, labels, require_estimate: r() < 0.5,
          sla_hours: between(r, 4, 96) }, stats: { open_issues: between(r, 0, 900), closed_issues: between(r, 0, 5000) } };
      break;
    }
    case 'milestones':
      b = { project, title: `${words(r, 2, 5)} (${day(r)})`, description: sentences(r, 12, 45),
        state: pick(r, ['planned', 'active', 'closed']), start_date: day(r), due_date: day(r), owner: user(r),
        goals: [words(r, 4, 9), words(r, 4, 9), words(r, 4, 9)],
        progress: { total: between(r, 5, 200), done: between(r, 0, 120), percent: between(r, 0, 100) } };
      break;
    case 'issues': {
      const labels = [];
      for (let i = 0, n = between(r, 1, 4); i < n; i++) labels.push(pick(r, LABELS));
      const watchers = [];
      for (let i = 0, n = between(r, 0, 6); i < n; i++) watchers.push(user(r));
      b = { project, milestone: entityId('milestones', between(r, 0, cnt('milestones') - 1)), number: k + 1,
        title: words(r, 5, 11), status: pick(r, STATUSES), priority: pick(r, PRIORITIES), type: pick(r, TYPES),
        assignee: r() < 0.8 ? user(r) : null, reporter: user(r), labels, watchers,
        estimate_points: pick(r, [1, 2, 3, 5, 8, 13, null]), time_spent_min: between(r, 0, 2400),
        description: sentences(r, 15, 125), due_date: r() < 0.4 ? day(r) : null,
        custom: { severity: pick(r, ['minor', 'major', 'critical']), customer: `acct_${between(r, 1000, 99999)}`,
          browser: pick(r, BROWSERS), environment: pick(r, ['production', 'staging', 'dev']) },
        opened_at: date(r) };
      break;
    }
    case 'relationships':
      b = { type: pick(r, REL_TYPES),
        from: { collection: 'issues', id: entityId('issues', between(r, 0, cnt('issues') - 1)) },
        to: { collection: 'issues', id: entityId('issues', between(r, 0, cnt('issues') - 1)) },
        project, created_by: user(r), reviewed_by: user(r), created_at: date(r), note: sentences(r, 10, 25),
        source: pick(r, ['manual', 'import', 'automation', 'api']), confidence: Math.round(r() * 1000) / 1000 };
      break;
    default: {
      const mentions = [];
      for (let i = 0, n = between(r, 0, 3); i < n; i++) mentions.push(user(r));
      b = { issue: entityId('issues', between(r, 0, cnt('issues') - 1)), project, author: user(r),
        body: sentences(r, 28, 150), mentions, reactions: { thumbs_up: between(r, 0, 12), heart: between(r, 0, 4),
          eyes: between(r, 0, 3) }, edited_at: r() < 0.3 ? date(r) : null, posted_at: date(r),
        visibility: pick(r, ['public', 'internal']), in_reply_to: r() < 0.3 ? `c-${between(r, 1, 1e6)}` : null };
    }
  }
  if (extra) Object.assign(b, extra);
  return b;
}
// the E entity indices edited by run R: a permutation step coprime to N
function editIndices(N, E, R) {
  let step = 104729;
  const gcd = (a, b) => (b ? gcd(b, a % b) : a);
  while (gcd(step, N) !== 1) step += 2;
  const off = hash32(R, 0xed17) % N;
  const out = [];
  for (let j = 0; j < Math.min(E, N); j++) out.push((off + (j + R * E) * step) % N);
  return out;
}
function editExtra(R, n) {
  const r = mulberry32(hash32(n, 0xbeef + R));
  return { edited_in_run: R, status: pick(r, STATUSES), edited_by: user(r), edited_at: date(r),
    edit_note: sentences(r, 6, 14) };
}

// ------------------------------------------------------------------ HTTP
const agents = new Map();
function agentFor(u) {
  const key = `${u.hostname}:${u.port}`;
  if (!agents.has(key)) agents.set(key, new http.Agent({ keepAlive: true, maxSockets: 32 }));
  return agents.get(key);
}
function request(base, method, path, body, headers = {}) {
  const u = new URL(base);
  const payload = body === undefined ? null : Buffer.isBuffer(body) ? body
    : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (payload) { h['Content-Type'] ??= 'application/json'; h['Content-Length'] = payload.length; }
    const req = http.request({ host: u.hostname, port: u.port, path, method, agent: agentFor(u), headers: h,
      timeout: 900000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, raw: Buffer.concat(chunks),
        get body() { return this.raw.toString('utf8'); } }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out after 900 s`)));
    req.on('error', reject);
    req.end(payload ?? undefined);
  });
}
const auth = (t) => ({ Authorization: `Bearer ${t}` });
const spacePath = (s) => `/api/v1/spaces/${encodeURIComponent(s)}`;
const out = (o) => console.log(JSON.stringify(o));
const hr = () => Number(process.hrtime.bigint()) / 1e6; // ms
async function pool(n, items, fn) {
  let i = 0;
  let err = null;
  await Promise.all(Array.from({ length: n }, async () => {
    while (!err && i < items.length) {
      const j = i++;
      try { await fn(items[j], j); } catch (e) { err = e; }
    }
  }));
  if (err) throw err;
}
async function retrying(fn) {
  for (let attempt = 0; ; attempt++) {
    const res = await fn();
    if ((res.status === 429 || res.status === 503) && attempt < 5) {
      await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
      continue;
    }
    return res;
  }
}

// ------------------------------------------------------------------ commands
function cmdStats() {
  const N = intArg('count', 100000, 1, 1e8);
  const L = layout(N);
  let sum = 0; let min = Infinity; let max = 0; let pouch = 0;
  const per = {};
  for (let n = 0; n < N; n++) {
    const { col, k } = locate(L, n);
    const b = makeBody(L, col, k);
    const len = Buffer.byteLength(JSON.stringify(b));
    pouch += Buffer.byteLength(JSON.stringify({ _id: `${col}:${entityId(col, k)}`, collection: col, ...b }));
    sum += len; min = Math.min(min, len); max = Math.max(max, len);
    per[col] = (per[col] ?? 0) + 1;
  }
  out({ count: N, body_bytes_avg: Math.round(sum / N), body_bytes_min: min, body_bytes_max: max,
    body_bytes_total: sum, pouch_doc_bytes_total: pouch, collections: per });
}

async function loadBatches(N, conc, label, send) {
  const L = layout(N);
  const t0 = hr();
  let next = 0; let done = 0; let last = t0;
  await pool(conc, Array.from({ length: Math.ceil(N / 1000) }, (_, i) => i), async (bi) => {
    const from = bi * 1000;
    const to = Math.min(N, from + 1000);
    const items = [];
    for (let n = from; n < to; n++) { const { col, k } = locate(L, n); items.push({ col, id: entityId(col, k), body: makeBody(L, col, k) }); }
    await send(items);
    done += items.length; next = to;
    if (hr() - last > 5000) { last = hr(); console.error(`[sync.mjs ${label}] ${done}/${N}, ${Math.round(done / ((last - t0) / 1000))}/s`); }
  });
  const s = (hr() - t0) / 1000;
  return { loaded: done, seconds: Number(s.toFixed(3)), rate: Math.round(done / s), next };
}

async function cmdSnapLoad() {
  const url = need('url'); const token = need('token'); const space = args.space ?? 'bench';
  const N = intArg('count', 100000, 1, 1e8);
  const conc = intArg('concurrency', 2, 1, 64);
  const r = await loadBatches(N, conc, 'snap-load', async (items) => {
    const changes = items.map((x) => ({ collection: x.col, id: x.id, base_rev: null, body: x.body }));
    const res = await retrying(() => request(url, 'POST', `${spacePath(space)}/changes`, { changes }, auth(token)));
    if (res.status !== 200) throw new Error(`POST /changes answered ${res.status}: ${res.body.slice(0, 300)}`);
    const o = JSON.parse(res.body);
    const bad = o.results.find((x) => x.status !== 'applied');
    if (o.results.length !== changes.length || bad) throw new Error(`batch not applied whole: ${JSON.stringify(bad).slice(0, 300)}`);
  });
  out(r);
}

async function cmdPouchLoad() {
  const url = need('url'); const db = args.db ?? 'bench';
  const N = intArg('count', 100000, 1, 1e8);
  const conc = intArg('concurrency', 2, 1, 64);
  const r = await loadBatches(N, conc, 'pouch-load', async (items) => {
    const docs = items.map((x) => ({ _id: `${x.col}:${x.id}`, collection: x.col, ...x.body }));
    const res = await retrying(() => request(url, 'POST', `/${db}/_bulk_docs`, { docs }));
    if (res.status !== 201 && res.status !== 200) throw new Error(`_bulk_docs answered ${res.status}: ${res.body.slice(0, 300)}`);
    const o = JSON.parse(res.body);
    const bad = o.find((x) => !x.ok);
    if (o.length !== docs.length || bad) throw new Error(`_bulk_docs not applied whole: ${JSON.stringify(bad).slice(0, 300)}`);
  });
  out(r);
}

async function cmdSnapEdit() {
  const url = need('url'); const token = need('token'); const space = args.space ?? 'bench';
  const N = intArg('count', 100000, 1, 1e8);
  const E = intArg('edits', 1000, 1, 1e6);
  const R = intArg('run', 1, 0, 1e6);
  const L = layout(N);
  const idx = editIndices(N, E, R);
  const t0 = hr();
  const changes = new Array(idx.length);
  await pool(16, idx, async (n, j) => {
    const { col, k } = locate(L, n);
    const id = entityId(col, k);
    const res = await request(url, 'GET', `${spacePath(space)}/collections/${col}/entities/${encodeURIComponent(id)}`, undefined, auth(token));
    if (res.status !== 200) throw new Error(`GET ${col}/${id} answered ${res.status}: ${res.body.slice(0, 200)}`);
    changes[j] = { collection: col, id, base_rev: JSON.parse(res.body).rev, body: makeBody(L, col, k, editExtra(R, n)) };
  });
  const t1 = hr();
  for (let i = 0; i < changes.length; i += 1000) {
    const part = changes.slice(i, i + 1000);
    const res = await retrying(() => request(url, 'POST', `${spacePath(space)}/changes`, { changes: part }, auth(token)));
    if (res.status !== 200) fail(`POST /changes answered ${res.status}: ${res.body.slice(0, 300)}`);
    const o = JSON.parse(res.body);
    const bad = o.results.find((x) => x.status !== 'applied');
    if (bad) fail(`edit not applied: ${JSON.stringify(bad).slice(0, 300)}`);
  }
  out({ edited: changes.length, read_ms: Number((t1 - t0).toFixed(1)), write_ms: Number((hr() - t1).toFixed(1)) });
}

async function cmdPouchEdit() {
  const url = need('url'); const db = args.db ?? 'bench';
  const N = intArg('count', 100000, 1, 1e8);
  const E = intArg('edits', 1000, 1, 1e6);
  const R = intArg('run', 1, 0, 1e6);
  const L = layout(N);
  const idx = editIndices(N, E, R);
  const t0 = hr();
  const docs = [];
  for (let i = 0; i < idx.length; i += 1000) {
    const part = idx.slice(i, i + 1000).map((n) => { const { col, k } = locate(L, n); return { n, col, k, _id: `${col}:${entityId(col, k)}` }; });
    const res = await request(url, 'POST', `/${db}/_all_docs`, { keys: part.map((p) => p._id) });
    if (res.status !== 200) fail(`_all_docs answered ${res.status}: ${res.body.slice(0, 300)}`);
    const rows = JSON.parse(res.body).rows;
    rows.forEach((row, j) => {
      if (!row.value) fail(`${row.key}: ${JSON.stringify(row).slice(0, 200)}`);
      const p = part[j];
      docs.push({ _id: p._id, _rev: row.value.rev, collection: p.col, ...makeBody(L, p.col, p.k, editExtra(R, p.n)) });
    });
  }
  const t1 = hr();
  for (let i = 0; i < docs.length; i += 1000) {
    const res = await request(url, 'POST', `/${db}/_bulk_docs`, { docs: docs.slice(i, i + 1000) });
    if (res.status !== 201 && res.status !== 200) fail(`_bulk_docs answered ${res.status}: ${res.body.slice(0, 300)}`);
    const bad = JSON.parse(res.body).find((x) => !x.ok);
    if (bad) fail(`edit not applied: ${JSON.stringify(bad).slice(0, 300)}`);
  }
  out({ edited: docs.length, read_ms: Number((t1 - t0).toFixed(1)), write_ms: Number((hr() - t1).toFixed(1)) });
}

async function cmdSnapSync() {
  const url = need('url'); const token = need('token'); const space = args.space ?? 'bench';
  const peer = need('peer'); const peerToken = need('peer-token');
  const reps = intArg('reps', 1, 1, 1000);
  const direction = args.direction ?? 'pull';
  if (!['pull', 'push', 'both'].includes(direction)) fail('--direction is pull, push or both');
  // open the keep-alive connection (not timed)
  const w = await request(url, 'GET', `${spacePath(space)}/sync/status`, undefined, auth(token));
  if (w.status !== 200) fail(`GET /sync/status answered ${w.status}: ${w.body.slice(0, 200)}`);
  const runs = [];
  for (let i = 0; i < reps; i++) {
    const t0 = hr();
    const body = { peer_url: peer, peer_space: space, peer_token: peerToken, direction, wait: true };
    if (args.bootstrap) body.bootstrap = args.bootstrap;       // "snapshot": bench/sync/bootstrap
    const res = await request(url, 'POST', `${spacePath(space)}/sync`, body, auth(token));
    const ms = hr() - t0;
    if (res.status !== 200) fail(`POST /sync answered ${res.status}: ${res.body.slice(0, 300)}`);
    const j = JSON.parse(res.body);
    if (j.status !== 'completed') fail(`sync job ${j.status}: ${j.error}`);
    runs.push({ client_ms: Number(ms.toFixed(3)),
      server_ms: Date.parse(j.finished_at) - Date.parse(j.started_at),
      pulled: j.pulled, pushed: j.pushed, conflicts: j.conflicts, requests: j.requests, bytes: j.bytes, id: j.id,
      bootstrap: j.bootstrap });
  }
  out({ runs });
}

async function cmdSnapDigests() {
  const space = args.space ?? 'bench';
  const get = async (u, t) => {
    const r = await request(u, 'GET', `${spacePath(space)}/sync/status`, undefined, auth(t));
    if (r.status !== 200) fail(`GET /sync/status answered ${r.status}`);
    return JSON.parse(r.body);
  };
  const a = await get(need('url'), need('token'));
  const b = await get(need('url2'), need('token2'));
  out({ equal: a.digest === b.digest && a.entity_count === b.entity_count, a_count: a.entity_count,
    b_count: b.entity_count, a_digest: a.digest.slice(0, 16), b_digest: b.digest.slice(0, 16),
    a_version: a.server_version, b_version: b.server_version, b_conflicts: b.conflict_count });
}

async function cmdPouchRep() {
  const url = need('url'); const source = need('source'); const target = need('target');
  const reps = intArg('reps', 1, 1, 1000);
  const w = await request(url, 'GET', '/');
  if (w.status !== 200) fail(`GET / answered ${w.status}`);
  const runs = [];
  for (let i = 0; i < reps; i++) {
    const t0 = hr();
    const res = await request(url, 'POST', '/_replicate', { source, target });
    const ms = hr() - t0;
    if (res.status !== 200) fail(`_replicate answered ${res.status}: ${res.body.slice(0, 300)}`);
    const j = JSON.parse(res.body);
    if (!j.ok) fail(`_replicate: ${res.body.slice(0, 300)}`);
    runs.push({ client_ms: Number(ms.toFixed(3)), docs_read: j.docs_read, docs_written: j.docs_written,
      doc_write_failures: j.doc_write_failures, errors: (j.errors ?? []).length });
  }
  out({ runs });
}

async function cmdPouchCompare() {
  const db = args.db ?? 'bench';
  const all = async (u) => {
    const r = await request(u, 'GET', `/${db}/_all_docs`);
    if (r.status !== 200) fail(`_all_docs answered ${r.status}`);
    return JSON.parse(r.body).rows.map((x) => `${x.id} ${x.value.rev}`).join('\n');
  };
  const [a, b] = await Promise.all([all(need('url')), all(need('url2'))]);
  out({ equal: a === b, a_count: a ? a.split('\n').length : 0, b_count: b ? b.split('\n').length : 0 });
}

// A new empty peer C from A's snapshot: POST /snapshots on A, download
// (gzip), POST /snapshots/import on C, restore it, then a pull sync from A.
async function cmdBootstrap() {
  const a = need('url'); const ta = need('token'); const c = need('url2'); const tc = need('token2');
  const space = args.space ?? 'bench'; const dir = need('dir');
  const sp = spacePath(space);
  const T = {};
  let t = hr();
  let r = await request(a, 'POST', `${sp}/snapshots`, { note: 'bench/sync bootstrap' }, auth(ta));
  if (r.status !== 201) fail(`POST /snapshots answered ${r.status}: ${r.body.slice(0, 300)}`);
  const snap = JSON.parse(r.body);
  T.snapshot_ms = hr() - t; t = hr();
  r = await request(a, 'GET', `${sp}/snapshots/${snap.id}/download`, undefined, { ...auth(ta), 'Accept-Encoding': 'gzip' });
  if (r.status !== 200) fail(`download answered ${r.status}`);
  const file = `${dir}/bootstrap.ndjson.gz`;
  fs.writeFileSync(file, r.raw);
  T.download_ms = hr() - t; t = hr();
  r = await request(c, 'POST', `${sp}/snapshots/import`, r.raw, { ...auth(tc), 'Content-Type': 'application/gzip' });
  if (r.status !== 201) fail(`import answered ${r.status}: ${r.body.slice(0, 300)}`);
  const imp = JSON.parse(r.body);
  T.import_ms = hr() - t; t = hr();
  r = await request(c, 'POST', `${sp}/snapshots/${imp.id}/restore`, { confirm: imp.id }, auth(tc));
  if (r.status !== 200) fail(`restore answered ${r.status}: ${r.body.slice(0, 300)}`);
  const rest = JSON.parse(r.body);
  T.restore_ms = hr() - t; t = hr();
  r = await request(c, 'POST', `${sp}/sync`, { peer_url: a, peer_space: space, peer_token: ta, direction: 'pull', wait: true }, auth(tc));
  if (r.status !== 200) fail(`POST /sync answered ${r.status}: ${r.body.slice(0, 300)}`);
  const job = JSON.parse(r.body);
  T.sync_ms = hr() - t;
  for (const k of Object.keys(T)) T[k] = Number(T[k].toFixed(1));
  out({ ...T, total_ms: Number(Object.values(T).reduce((x, y) => x + y, 0).toFixed(1)),
    snapshot_bytes: snap.size_bytes, raw_bytes: snap.raw_bytes, restored_put: rest.changes?.put,
    sync_status: job.status, sync_error: job.error, sync_pulled: job.pulled, sync_conflicts: job.conflicts,
    sync_requests: job.requests, sync_bytes: job.bytes });
}

const cmds = { stats: cmdStats, 'snap-load': cmdSnapLoad, 'snap-edit': cmdSnapEdit, 'snap-sync': cmdSnapSync,
  'snap-digests': cmdSnapDigests, 'pouch-load': cmdPouchLoad, 'pouch-edit': cmdPouchEdit, 'pouch-rep': cmdPouchRep,
  'pouch-compare': cmdPouchCompare, bootstrap: cmdBootstrap };
if (!cmds[cmd]) { console.error(`usage: sync.mjs ${Object.keys(cmds).join('|')} [--options]`); process.exit(2); }
try {
  await cmds[cmd]();
} catch (e) {
  fail(e.stack ?? String(e));
}
for (const a of agents.values()) a.destroy();
