#!/usr/bin/env node
// bench/snapshot/tracker.mjs - a deterministic "issue tracker" data set for
// snapsync benchmarks, and the HTTP clients bench/snapshot/run needs.
//
//   node tracker.mjs stats    --count N
//   node tracker.mjs load     --url U --token T --space S --count N [--concurrency 3] [--max-seconds 3600]
//   node tracker.mjs modify   --url U --token T --space S --count N --run R [--fraction 0.01] [--concurrency 8]
//   node tracker.mjs putload  --url U --token T --space S --count N --out FILE
//                             [--clients 8] [--max-seconds 600] [--rate 0]
//   node tracker.mjs latstats --file FILE [--from MS] [--to MS]
//
// The data set of N entities is a pure function of N: entity n (0 <= n < N)
// belongs to one of five collections (projects 0.1 %, milestones 1.9 %,
// issues 28 %, relationships 20 %, comments the rest) and has a body made
// from a PRNG seeded with its collection and index: free text drawn from a
// tracker vocabulary, user ids, dates, labels, nested objects - 300 to
// ~1,500 bytes of JSON. About 5 % of the non-project entities are deleted
// right after they are created (tombstones), so a snapshot holds ~95 %.
//
// load     pushes all N as new entities with POST /changes, 1,000 per request,
//          CONCURRENCY requests in flight, then deletes the chosen 5 % by
//          pushing {"deleted":true} with the rev each one got. Progress and
//          rate on stderr; a JSON summary on stdout.
// modify   changes ~FRACTION of the live entities (a selection that depends
//          on R): 60 % of them updated by PUT, 20 % deleted by DELETE, and
//          as many new entities as 20 % of the selection pushed with POST
//          /changes - so a restore of an earlier snapshot has to put back
//          (updated + deleted) and delete (new). JSON summary on stdout.
// putload  CLIENTS keep-alive connections, each doing PUT of a random live
//          issue (a fresh body) one after another (or at --rate requests/s
//          in all, 0 = as fast as answered) until SIGTERM/SIGINT or
//          --max-seconds; writes "start_epoch_ms latency_ms status" per
//          request to FILE; JSON summary on stdout.
// latstats percentiles of the requests in FILE that started in [from, to]
//          (epoch ms).
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
    console.error(`tracker: bad argument ${k}`);
    process.exit(2);
  }
  args[k.slice(2)] = process.argv[i + 1];
}
function intArg(name, def, lo, hi) {
  const v = Number(args[name] ?? def);
  if (!Number.isInteger(v) || v < lo || v > hi) {
    console.error(`tracker: --${name} must be an integer in [${lo}, ${hi}]`);
    process.exit(2);
  }
  return v;
}

// ------------------------------------------------------------------ data set
// projects are never deleted; about 5 % of everything else is
function deletedAtLoad(col, k) { return col !== 'projects' && hash32(k, COLSEED[col] * 1009) % 1000 < 50; }

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

// ------------------------------------------------------------------ HTTP
function client(maxSockets) {
  const url = new URL(args.url ?? 'http://127.0.0.1:7420');
  const token = args.token ?? '';
  const space = args.space ?? 'bench';
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  const base = `/api/v1/spaces/${encodeURIComponent(space)}`;
  function request(method, path, body) {
    const payload = body === undefined ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const headers = { Authorization: `Bearer ${token}` };
      if (payload) { headers['Content-Type'] = 'application/json'; headers['Content-Length'] = payload.length; }
      const req = http.request({ host: url.hostname, port: url.port, path: base + path, method, agent, headers,
        timeout: 300000 }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8'),
          sent: payload ? payload.length : 0 }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error('request timed out after 300 s')));
      req.on('error', reject);
      req.end(payload ?? undefined);
    });
  }
  return { request, agent };
}
async function push(request, changes) {
  for (let attempt = 0; ; attempt++) {
    const res = await request('POST', '/changes', { changes });
    if ((res.status === 429 || res.status === 503) && attempt < 5) {
      await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
      continue;
    }
    if (res.status !== 200) throw new Error(`POST /changes answered ${res.status}: ${res.body.slice(0, 300)}`);
    const out = JSON.parse(res.body);
    const bad = out.results.find((x) => x.status !== 'applied');
    if (out.results.length !== changes.length || bad) throw new Error(`batch not applied whole: ${JSON.stringify(bad).slice(0, 300)}`);
    return { out, sent: res.sent };
  }
}
const now = () => performance.timeOrigin + performance.now();

// ------------------------------------------------------------------ commands
async function cmdStats() {
  const N = intArg('count', 100000, 1, 1e8);
  const L = layout(N);
  const per = {};
  let del = 0;
  const sample = Math.max(1, Math.floor(N / 50000)); // at most ~50k bodies looked at
  for (let n = 0; n < N; n += sample) {
    const { col, k } = locate(L, n);
    const len = Buffer.byteLength(JSON.stringify(makeBody(L, col, k)));
    const s = per[col] ??= { count: L.find((c) => c.name === col).count, sampled: 0, min: Infinity, max: 0, sum: 0 };
    s.sampled++; s.sum += len; s.min = Math.min(s.min, len); s.max = Math.max(s.max, len);
  }
  for (let n = 0; n < N; n++) { const { col, k } = locate(L, n); if (deletedAtLoad(col, k)) del++; }
  for (const s of Object.values(per)) { s.avg = Math.round(s.sum / s.sampled); delete s.sum; }
  console.log(JSON.stringify({ count: N, deleted: del, live: N - del, collections: per }));
}

async function cmdLoad() {
  const N = intArg('count', 100000, 1, 1e8);
  const conc = intArg('concurrency', 3, 1, 64);
  const maxSeconds = intArg('max-seconds', 3600, 1, 86400);
  const L = layout(N);
  const { request, agent } = client(conc);
  const t0 = now();
  const secs = () => (now() - t0) / 1000;
  let next = 0;
  let created = 0;
  let deleted = 0;
  let bytes = 0;
  let bodyBytes = 0;
  let failed = null;
  let lastProgress = 0;
  const pendingDel = [];
  const progress = (force) => {
    const s = secs();
    if (!force && s - lastProgress < 5) return;
    lastProgress = s;
    console.error(`[tracker load] ${created}/${N} created, ${deleted} deleted, ${s.toFixed(1)} s, ` +
      `${Math.round(created / s)} entities/s, ${(bytes / 1048576 / s).toFixed(1)} MiB/s pushed`);
  };
  async function worker() {
    while (!failed) {
      if (secs() > maxSeconds) { failed = `stopped after --max-seconds ${maxSeconds}`; return; }
      try {
        if (pendingDel.length >= 1000 || (next >= N && pendingDel.length > 0)) {
          const batch = pendingDel.splice(0, 1000);
          const { sent } = await push(request, batch);
          deleted += batch.length; bytes += sent;
          continue;
        }
        if (next >= N) return;
        const from = next;
        const to = Math.min(N, from + 1000);
        next = to;
        const changes = [];
        for (let n = from; n < to; n++) {
          const { col, k } = locate(L, n);
          const body = makeBody(L, col, k);
          changes.push({ collection: col, id: entityId(col, k), base_rev: null, body });
        }
        const { out, sent } = await push(request, changes);
        created += changes.length; bytes += sent;
        for (let i = 0; i < changes.length; i++) {
          bodyBytes += JSON.stringify(changes[i].body).length;
          const { col, k } = locate(L, from + i);
          if (deletedAtLoad(col, k)) {
            pendingDel.push({ collection: col, id: changes[i].id, base_rev: out.results[i].rev, deleted: true });
          }
        }
        progress(false);
      } catch (e) { failed = e.message; return; }
    }
  }
  await Promise.all(Array.from({ length: conc }, worker));
  // the last workers may have left deletes behind
  while (!failed && pendingDel.length) {
    const batch = pendingDel.splice(0, 1000);
    try { const { sent } = await push(request, batch); deleted += batch.length; bytes += sent; } catch (e) { failed = e.message; }
  }
  progress(true);
  agent.destroy();
  const s = secs();
  console.log(JSON.stringify({ created, deleted, live: created - deleted, seconds: Number(s.toFixed(3)),
    rate: Math.round(created / s), mib_pushed: Number((bytes / 1048576).toFixed(1)),
    avg_body_bytes: Math.round(bodyBytes / Math.max(1, created)), error: failed }));
  if (failed) { console.error(`[tracker load] error: ${failed}`); process.exit(1); }
}

async function cmdModify() {
  const N = intArg('count', 100000, 1, 1e8);
  const run = intArg('run', 1, 0, 1e6);
  const conc = intArg('concurrency', 8, 1, 64);
  const fraction = Number(args.fraction ?? 0.01);
  if (!(fraction > 0 && fraction <= 0.5)) { console.error('tracker: --fraction must be in (0, 0.5]'); process.exit(2); }
  const L = layout(N);
  const ops = [];
  const thresh = Math.round(fraction * 1e6);
  for (let n = 0; n < N; n++) {
    const { col, k } = locate(L, n);
    if (deletedAtLoad(col, k)) continue;
    const h = hash32(n, 0x51ed + run * 7919);
    if (h % 1e6 >= thresh) continue;
    ops.push({ op: (h >>> 20) % 10 < 6 ? 'put' : ((h >>> 20) % 10 < 8 ? 'del' : 'keep'), col, k });
  }
  // 'keep' entries are not touched; their count decides how many new entities are added
  const puts = ops.filter((o) => o.op === 'put');
  const dels = ops.filter((o) => o.op === 'del');
  const nNew = ops.length - puts.length - dels.length;
  const { request, agent } = client(conc);
  const t0 = now();
  let i = 0;
  let failed = null;
  const work = [...puts, ...dels];
  async function worker() {
    while (!failed && i < work.length) {
      const o = work[i++];
      const p = `/collections/${o.col}/entities/${encodeURIComponent(entityId(o.col, o.k))}`;
      try {
        const res = o.op === 'put'
          ? await request('PUT', p, makeBody(L, o.col, o.k, { edited_in_run: run, edited_note: `changed by modify run ${run}` }))
          : await request('DELETE', p);
        if (res.status !== 200 && res.status !== 201) failed = `${o.op} ${p} answered ${res.status}: ${res.body.slice(0, 200)}`;
      } catch (e) { failed = e.message; }
    }
  }
  await Promise.all(Array.from({ length: conc }, worker));
  if (!failed && nNew > 0) {
    const changes = [];
    for (let j = 0; j < nNew; j++) {
      changes.push({ collection: 'comments', id: `c-new-r${run}-${j + 1}`, base_rev: null,
        body: makeBody(L, 'comments', N + j, { added_in_run: run }) });
    }
    try { for (let j = 0; j < changes.length; j += 1000) await push(request, changes.slice(j, j + 1000)); } catch (e) { failed = e.message; }
  }
  agent.destroy();
  const out = { run, updated: puts.length, deleted: dels.length, added: nNew,
    expect_restore: { put: puts.length + dels.length, deleted: nNew },
    seconds: Number(((now() - t0) / 1000).toFixed(3)), error: failed };
  console.log(JSON.stringify(out));
  if (failed) process.exit(1);
}

async function cmdPutload() {
  const N = intArg('count', 100000, 1, 1e8);
  const clients = intArg('clients', 8, 1, 256);
  const maxSeconds = intArg('max-seconds', 600, 1, 86400);
  const rate = Number(args.rate ?? 0);
  const outFile = args.out;
  if (!outFile) { console.error('tracker: putload needs --out FILE'); process.exit(2); }
  const L = layout(N);
  const iss = L.find((c) => c.name === 'issues');
  const { request, agent } = client(clients);
  const starts = [];
  const lats = [];
  const codes = [];
  let stop = false;
  let errors = 0;
  let seq = 0;
  const t0 = now();
  process.on('SIGTERM', () => { stop = true; });
  process.on('SIGINT', () => { stop = true; });
  const interval = rate > 0 ? (1000 * clients) / rate : 0; // per client, ms
  async function one(c) {
    let due = now() + (interval ? (c * interval) / clients : 0);
    while (!stop && now() - t0 < maxSeconds * 1000) {
      if (interval) {
        const wait = due - now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        due += interval;
        if (stop) break;
      }
      let k;
      do { k = Math.floor(Math.random() * iss.count); } while (deletedAtLoad('issues', k));
      const body = makeBody(L, 'issues', k, { status: pick(Math.random, STATUSES), touched: ++seq });
      const p = `/collections/issues/entities/${entityId('issues', k)}`;
      const s = now();
      let st = 0;
      try { st = (await request('PUT', p, body)).status; } catch { errors++; }
      starts.push(s); lats.push(now() - s); codes.push(st);
    }
  }
  await Promise.all(Array.from({ length: clients }, (_, c) => one(c)));
  agent.destroy();
  const lines = new Array(starts.length);
  for (let j = 0; j < starts.length; j++) lines[j] = `${starts[j].toFixed(3)} ${lats[j].toFixed(3)} ${codes[j]}`;
  fs.writeFileSync(outFile, lines.join('\n') + '\n');
  const s = (now() - t0) / 1000;
  console.log(JSON.stringify({ requests: starts.length, seconds: Number(s.toFixed(3)),
    rate: Math.round(starts.length / s), errors, ...stats(lats, codes) }));
}

function pct(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Number(sorted[i].toFixed(3));
}
function stats(lats, codes) {
  const s = Float64Array.from(lats).sort();
  let non2xx = 0;
  for (const c of codes) if (!(c >= 200 && c < 300)) non2xx++;
  return { count: s.length, p50_ms: pct(s, 50), p90_ms: pct(s, 90), p99_ms: pct(s, 99), p999_ms: pct(s, 99.9),
    max_ms: s.length ? Number(s[s.length - 1].toFixed(3)) : null, non2xx };
}

function cmdLatstats() {
  const from = Number(args.from ?? 0);
  const to = Number(args.to ?? Infinity);
  const lats = [];
  const codes = [];
  let first = Infinity;
  let last = -Infinity;
  for (const line of fs.readFileSync(args.file, 'utf8').split('\n')) {
    if (!line) continue;
    const [t, l, c] = line.split(' ');
    const ts = Number(t);
    if (ts < from || ts > to) continue;
    lats.push(Number(l)); codes.push(Number(c));
    first = Math.min(first, ts); last = Math.max(last, ts);
  }
  const span = (last - first) / 1000;
  console.log(JSON.stringify({ ...stats(lats, codes), rate: span > 0 ? Math.round(lats.length / span) : null }));
}

const cmds = { stats: cmdStats, load: cmdLoad, modify: cmdModify, putload: cmdPutload, latstats: cmdLatstats };
if (!cmds[cmd]) { console.error('usage: tracker.mjs stats|load|modify|putload|latstats [--options]'); process.exit(2); }
await cmds[cmd]();
