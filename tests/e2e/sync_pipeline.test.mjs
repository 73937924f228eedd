// sync_pipeline.test.mjs - SPEC §9 pulls of many pages, seen through a
// proxy in front of the peer: B fetches the next page while the last one is
// parsed and applied, yet applies pages in order and only whole. A page
// that cannot be used stops the pull after the pages before it (the
// checkpoint stays at the last applied page, and the next job resumes
// there); pages whose end the read-ahead cannot read (pretty-printed) still
// sync, one after the other. Also: a peer on loopback is not asked for
// gzip; a space deleted and recreated under the same name does not inherit
// the old space's checkpoints; a sync with nothing to do stores its job row
// with both audit records; a puller stopped (SIGTERM) mid-pull stores the
// job as failed with exactly what it applied.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { withServer, startServer, putSpace, api, apiOk, sleep } from './helpers.mjs';
import { pushMany } from './sse_helpers.mjs';
import { sp, put, startSync, syncOk, syncStatus, assertConverged } from './sync_helpers.mjs';

const SPACE = 'pipe';

/**
 * An HTTP proxy on loopback in front of `target`. Every request is
 * recorded ({method, path, headers}); `edit(n, path, body)` may replace the
 * body of the n-th (from 1) GET /changes response (return a string), or
 * return undefined to pass it as is. `refuse(method, path, body)` may answer
 * a request itself with a status (returned), without passing it on.
 */
async function proxy(t, target, edit = () => undefined, { refuse = () => undefined } = {}) {
  const seen = [];
  let feeds = 0;
  const srv = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method, path: req.url, headers: req.headers, body: Buffer.concat(chunks) });
      const refused = refuse(req.method, req.url, Buffer.concat(chunks));
      if (refused) {
        const out = JSON.stringify({ error: 'overloaded', message: 'refused by the test proxy' });
        res.writeHead(refused, { 'content-type': 'application/json', 'content-length': String(out.length) });
        res.end(out);
        return;
      }
      const isFeed = req.method === 'GET' && /\/changes\?/.test(req.url);
      const n = isFeed ? ++feeds : 0;
      const up = http.request({ host: '127.0.0.1', port: target.port, path: req.url, method: req.method,
        headers: { ...req.headers, host: `127.0.0.1:${target.port}` } }, (ur) => {
        const body = [];
        ur.on('data', (c) => body.push(c));
        ur.on('end', async () => {
          let out = Buffer.concat(body);
          const replaced = isFeed && ur.statusCode === 200 ? await edit(n, req.url, out.toString('utf8')) : undefined;
          if (replaced !== undefined) out = Buffer.from(replaced, 'utf8');
          const headers = { ...ur.headers, 'content-length': String(out.length) };
          delete headers['transfer-encoding'];
          res.writeHead(ur.statusCode, headers);
          res.end(out);
        });
      });
      up.on('error', () => { res.writeHead(502); res.end(); });
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => new Promise((r) => srv.close(r)));
  const base = `http://127.0.0.1:${srv.address().port}`;
  return { base, seen, feedRequests: () => seen.filter((s) => s.method === 'GET' && /\/changes\?/.test(s.path)) };
}

const sinceOf = (p) => Number(/[?&]since=(\d+)/.exec(p)[1]);
const limitOf = (p) => Number(/[?&]limit=(\d+)/.exec(p)[1]);
/** A job's page sizes: 250 first, each next twice as big, at most 1000. */
const PAGE_SIZES = (n) => { const out = []; for (let l = 250, left = n; left > 0; l = Math.min(1000, l * 2)) { out.push(Math.min(l, left)); left -= l; } return out; };

/** The job as stored (GET /sync/jobs, read from the database) says what the
 *  answer said, with one sync.start and one sync.finish audit record. */
async function assertStored(srv, job) {
  const list = await apiOk(srv, 'GET', `${sp(SPACE)}/sync/jobs`, {}, 200);
  const row = list.jobs.find((j) => j.id === job.id);
  assert.ok(row, `job ${job.id} listed`);
  for (const k of ['status', 'phase', 'pulled', 'pushed', 'conflicts', 'finished_at', 'error']) {
    assert.deepEqual(row[k], job[k], `stored ${k}: ${JSON.stringify(row)} vs ${JSON.stringify(job)}`);
  }
  const audit = await apiOk(srv, 'GET', `/api/v1/audit?space=${SPACE}&limit=1000`, {}, 200);
  const mine = audit.entries.filter((e) => JSON.stringify(e.meta ?? '').includes(job.id));
  assert.deepEqual(mine.map((e) => e.action).sort(), ['sync.finish', 'sync.start'], JSON.stringify(mine));
  const fin = mine.find((e) => e.action === 'sync.finish');
  const meta = typeof fin.meta === 'string' ? JSON.parse(fin.meta) : fin.meta;
  assert.equal(meta.pulled, job.pulled, JSON.stringify(fin));
  assert.equal(meta.status, job.status, JSON.stringify(fin));
}

async function pairWith(t, n) {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  await pushMany(A, SPACE, n, { makeId: (i) => `k${String(i).padStart(5, '0')}`, bodyOf: (i) => ({ i, t: `text ${i}` }) });
  return [A, B];
}

test('a page that cannot be used stops the pull after the pages before it; the next job resumes there', { timeout: 60000 }, async (t) => {
  const N = 5500;                    // pages of 250, 500, 1000, 1000, 1000, 1000, 750
  const [A, B] = await pairWith(t, N);
  let broken = true;
  const px = await proxy(t, A, (n, _path, body) => (broken && n === 3 ? body.slice(0, body.length >> 1) : undefined));

  const r = await startSync(B, SPACE, A, { direction: 'pull', peerUrl: px.base });
  assert.equal(r.status, 502, `a wait:true job failed by its peer answers 502: ${r.text}`);
  const failed = r.body;
  assert.equal(failed.status, 'failed', r.text);
  assert.match(failed.error, /not usable|invalid JSON/i, `a clear error: ${failed.error}`);
  // the two pages before the broken one are applied, whole; nothing after it
  const before2 = 250 + 500;
  assert.equal(failed.pulled, before2, r.text);
  const mid = await syncStatus(B, SPACE);
  assert.equal(mid.entity_count, before2, 'exactly the pages before the broken one');
  // the read-ahead may have fetched pages past the broken one, but at most
  // 3 pages are held at once (fetched and not yet applied): never more than 2
  const firstFeeds = px.feedRequests().length;
  assert.ok(firstFeeds >= 3 && firstFeeds <= 5, `feed requests of the failed job: ${firstFeeds}`);
  const pageEnds = px.feedRequests().map((s) => sinceOf(s.path));
  for (let i = 1; i < pageEnds.length; i++) assert.ok(pageEnds[i] > pageEnds[i - 1], `pages in order: ${pageEnds}`);
  assert.deepEqual(px.feedRequests().slice(0, 3).map((s) => limitOf(s.path)), [250, 500, 1000], 'small pages first');
  // no gzip asked of a peer on loopback (compression would only cost CPU)
  for (const s of px.seen) assert.doesNotMatch(String(s.headers['accept-encoding'] ?? ''), /gzip/, JSON.stringify(s));

  // the next job starts where the checkpoint is: after page 2
  broken = false;
  const before = px.feedRequests().length;
  const second = await syncOk(B, SPACE, A, { direction: 'pull', peerUrl: px.base });
  const feeds = px.feedRequests().slice(before);
  assert.equal(sinceOf(feeds[0].path), pageEnds[2], `resumed from the checkpoint: ${feeds.map((f) => f.path)}`);
  assert.equal(second.pulled, N - before2, JSON.stringify(second));
  await assertStored(B, failed);
  await assertStored(B, second);
  assert.equal(second.requests, 1 + PAGE_SIZES(N - before2).length, JSON.stringify(second));
  const conv = await assertConverged([A, B], SPACE, 'after the resumed pull');
  assert.equal(conv.status[1].entity_count, N);
});

test('pages whose end the read-ahead cannot read (pretty-printed) still sync, in order', { timeout: 60000 }, async (t) => {
  const N = 3200;
  const [A, B] = await pairWith(t, N);
  const px = await proxy(t, A, (_n, _path, body) => JSON.stringify(JSON.parse(body), null, 1) + '\n');
  const job = await syncOk(B, SPACE, A, { direction: 'pull', peerUrl: px.base });
  assert.equal(job.pulled, N);
  await assertStored(B, job);
  assert.equal(job.requests, 1 + PAGE_SIZES(N).length, JSON.stringify(job));
  const since = px.feedRequests().map((s) => sinceOf(s.path));
  assert.equal(since[0], 0);
  for (let i = 1; i < since.length; i++) assert.ok(since[i] > since[i - 1], `pages in order: ${since}`);
  await assertConverged([A, B], SPACE, 'after a pretty-printed pull');
  // edits after that: an incremental pull through the same proxy
  for (let i = 0; i < 5; i++) {
    const cur = await apiOk(A, 'GET', `${sp(SPACE)}/collections/c/entities/k0000${i}`, {}, 200);
    await put(A, SPACE, 'c', `k0000${i}`, { i, edited: true }, { ifMatch: cur.rev });
  }
  const inc = await syncOk(B, SPACE, A, { direction: 'pull', peerUrl: px.base });
  assert.equal(inc.pulled, 5);
  await assertStored(B, inc);
  await assertConverged([A, B], SPACE, 'after the incremental pull');
});

test('a space deleted and recreated under the same name pulls everything again (no inherited checkpoint)', async (t) => {
  const [A, B] = await pairWith(t, 30);
  const first = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(first.pulled, 30);
  const del = await api(B, 'DELETE', `${sp(SPACE)}?confirm=${SPACE}`);
  assert.equal(del.status, 200, del.text);
  await putSpace(B, SPACE);
  assert.equal((await syncStatus(B, SPACE)).entity_count, 0);
  const again = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(again.pulled, 30, `the new space starts from zero: ${JSON.stringify(again)}`);
  await assertConverged([A, B], SPACE, 'after the recreated space pulled');
});

test('a sync with nothing to do: one request, and its job row with sync.start and sync.finish', async (t) => {
  const [A, B] = await pairWith(t, 10);
  await syncOk(B, SPACE, A, { direction: 'both' });
  const idle = await syncOk(B, SPACE, A, { direction: 'both' });
  assert.equal(idle.requests, 1, JSON.stringify(idle));
  assert.equal(idle.pulled + idle.pushed, 0);
  const list = await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs`, {}, 200);
  const row = list.jobs.find((j) => j.id === idle.id);
  assert.ok(row, 'the no-op job is listed as soon as it answered');
  assert.equal(row.status, 'completed');
  const audit = await apiOk(B, 'GET', `/api/v1/audit?space=${SPACE}&limit=1000`, {}, 200);
  const mine = audit.entries.filter((e) => JSON.stringify(e.meta ?? '').includes(idle.id));
  const actions = mine.map((e) => e.action).sort();
  assert.deepEqual(actions, ['sync.finish', 'sync.start'], JSON.stringify(mine));
});

test('SIGTERM of the puller mid-pull: clean exit, the job is stored failed with what it applied, the next job resumes', { timeout: 90000 }, async (t) => {
  const N = 30000;
  const A = await withServer(t);
  await putSpace(A, SPACE);
  await pushMany(A, SPACE, N, { makeId: (i) => `k${String(i).padStart(5, '0')}`, bodyOf: (i) => ({ i, pad: 'y'.repeat(200) }) });
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-e2e-pipe-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  let B = await startServer({ dataDir });
  t.after(async () => { try { await B.stop(); } catch { /* reported by the test */ } });
  await putSpace(B, SPACE);
  // a proxy that answers each page after 30 ms keeps the pull going long enough
  const px = await proxy(t, A, (_n, _p, body) => new Promise((r) => setTimeout(() => r(body), 30)));
  const r = await startSync(B, SPACE, A, { direction: 'pull', wait: false, peerUrl: px.base });
  assert.equal(r.status, 202, r.text);
  const jobId = r.body.id;
  for (let k = 0; k < 400; k++) {
    const j = await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs/${jobId}`, {}, 200);
    if (j.pulled > 0) break;
    await sleep(10);
  }
  const exit = await B.stop('SIGTERM');
  assert.equal(exit.code, 0, `clean exit: ${JSON.stringify(exit)}`);

  B = await startServer({ dataDir });
  const list = await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs`, {}, 200);
  const row = list.jobs.find((j) => j.id === jobId);
  assert.ok(row, 'the interrupted job is stored');
  assert.equal(row.status, 'failed', JSON.stringify(row));
  assert.match(row.error, /interrupted|shutting down/, JSON.stringify(row));
  const st = await syncStatus(B, SPACE);
  assert.ok(row.pulled > 0 && row.pulled < N, JSON.stringify(row));
  assert.equal(st.entity_count, row.pulled, `what the stored job says it pulled is what B holds: ${JSON.stringify(row)}`);
  const again = await syncOk(B, SPACE, A, { direction: 'pull', peerUrl: px.base });
  assert.equal(row.pulled + again.pulled, N, JSON.stringify(again));
  await assertConverged([A, B], SPACE, 'after the resumed pull');
});

test('a push page the peer did not acknowledge (503, retried) goes again before the next one: no page is skipped', { timeout: 60000 }, async (t) => {
  const N = 3500;                    // push pages of 1000, 1000, 1000, 500
  const [A, B] = await pairWith(t, N);
  let replicates = 0;
  // the second page is refused once; the third is read (and ready) while the second is out
  const px = await proxy(t, B, undefined, {
    refuse: (method, p) => (method === 'POST' && /\/replicate$/.test(p) && ++replicates === 2 ? 503 : undefined),
  });
  const job = await syncOk(A, SPACE, B, { direction: 'push', peerUrl: px.base });
  const sent = px.seen.filter((s) => s.method === 'POST' && /\/replicate$/.test(s.path))
    .map((s) => JSON.parse(s.body.toString('utf8')).changes.map((c) => c.version));
  const firsts = sent.map((v) => `${v[0]}..${v[v.length - 1]}`);
  assert.equal(replicates, 5, `four pages, one of them twice: ${firsts}`);
  assert.deepEqual(sent[2], sent[1], `the refused page is the next one sent: ${firsts}`);
  assert.equal(job.pushed, N, `every change pushed: ${JSON.stringify(job)}`);
  await assertConverged([A, B], SPACE, 'after a push with a refused page');
  // and the checkpoint did not pass anything: the next push has nothing to send
  const again = await syncOk(A, SPACE, B, { direction: 'push', peerUrl: px.base });
  assert.equal(again.pushed, 0, JSON.stringify(again));
});
