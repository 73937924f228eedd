// sync_item_errors.test.mjs - SPEC §9 sync jobs that could not apply some
// of what they were sent. A job says so: "errors" (how many items) and
// "error_items" (the first ten: direction, collection, id, error, message)
// in the job, its SSE `sync` events and its `sync.finish` audit record, and
// it ends "partial" (error "N items could not be applied"), not
// "completed": a wait:true request gets 502 with the job. Both ways: items
// our own apply refused during a pull, and items the peer's /replicate
// answered "error" for during a push.
//
// The peer here is a small HTTP server in this file that speaks the sync
// protocol (/sync/status, /changes, /blobs/missing, /replicate) and sends
// what a faulty or hostile peer could: a rev past 2^53-1, a body 65 levels
// deep, an id holding \u0000, a live entity without a body.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { withServer, startServer, putSpace, api, apiOk, sleep } from './helpers.mjs';
import { sp, put, getEntity, startSync, getJob, syncStatus } from './sync_helpers.mjs';
import { openSSE } from './sse_helpers.mjs';

const SPACE = 'itemerr';
const PEER_INSTANCE = '01ARZ3NDEKTSV4RRFFQ69G5FAV';

function nest(levels) {
  let v = 1;
  for (let i = 0; i < levels; i++) v = { a: v };
  return v;
}

/** A peer on loopback. pages: the entities its feed serves (one page);
 *  replicate(body) -> the /replicate answer. Records the requests. */
async function fakePeer(t, { entities = [], replicate } = {}) {
  const seen = [];
  const version = entities.length;
  const srv = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url, 'http://peer');
      const text = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method, path: url.pathname, query: url.search, body: text });
      const send = (status, obj) => {
        const b = JSON.stringify(obj);
        res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(b) });
        res.end(b);
      };
      const p = url.pathname;
      if (p.endsWith('/sync/status')) {
        return send(200, { space: SPACE, space_uid: 'FAKEUID00000000000000000000'.slice(0, 26), instance_id: PEER_INSTANCE,
          server_version: version, entity_count: version, tombstone_count: 0, conflict_count: 0, digest: '0'.repeat(64), last_snapshot: null });
      }
      if (p.endsWith('/changes')) {
        const since = Number(url.searchParams.get('since'));
        const changes = since >= version ? [] : entities;
        return send(200, { changes, last_version: version, more: false });
      }
      if (p.endsWith('/blobs/missing')) return send(200, { missing: [] });
      if (p.endsWith('/replicate')) return send(200, replicate(JSON.parse(text)));
      return send(404, { error: 'not_found', message: 'no such route' });
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => new Promise((r) => srv.close(r)));
  return { base: `http://127.0.0.1:${srv.address().port}`, adminToken: 'fake-peer-token-0123456789abcdef0123456789', seen };
}

const good = (id, rev = '1-aaa', body = { id }) => ({ collection: 'c', id, rev, revs: [rev], deleted: false, body, conflicts: [] });

test('pull: items our apply refuses -> job "partial" with errors and error_items; the rest applied; wait answers 502; SSE, audit, metrics and the stored row say so', async (t) => {
  const peer = await fakePeer(t, { entities: [
    good('ok1'),
    good('wrap', '18446744073709551615-abc'),
    good('deep', '1-bbb', nest(65)),
    good('a\u0000evil'),
    { ...good('nobody'), body: null },
    good('ok2'),
  ] });
  let B = await startServer({ keepData: true });          // restarted below on the same data
  t.after(async () => {
    const r = await B.stop();
    assert.deepEqual(r, { code: 0, signal: null }, `server exit\n${B.stderrText().slice(-4000)}`);
  });
  await putSpace(B, SPACE);
  const ev = await openSSE(B.port, `/api/v1/events?topics=sync&spaces=${SPACE}`, { token: B.adminToken });
  t.after(() => ev.close());

  const r = await startSync(B, SPACE, peer, { direction: 'pull', wait: true });
  assert.equal(r.status, 502, r.text);
  const job = r.body;
  assert.equal(job.status, 'partial', r.text);
  assert.equal(job.phase, 'done', r.text);
  assert.equal(job.pulled, 2, r.text);
  assert.equal(job.errors, 4, r.text);
  assert.match(job.error, /^4 items could not be applied/, r.text);
  assert.equal(job.message, job.error);
  assert.deepEqual(job.error_items.map((e) => [e.direction, e.collection, e.id, e.error]), [
    ['pull', 'c', 'wrap', 'invalid_rev'],
    ['pull', 'c', 'deep', 'too_deep'],
    ['pull', null, null, 'invalid_name'],
    ['pull', 'c', 'nobody', 'invalid_item'],
  ], r.text);
  for (const e of job.error_items) assert.ok(e.message.length > 0, JSON.stringify(e));
  assert.ok(await getEntity(B, SPACE, 'c', 'ok1'));
  assert.ok(await getEntity(B, SPACE, 'c', 'ok2'));
  assert.equal(await getEntity(B, SPACE, 'c', 'a'), null, 'nothing under the name cut at the NUL');
  assert.equal((await syncStatus(B, SPACE)).entity_count, 2);

  // the same in the job routes
  delete job.message;
  assert.deepEqual(await getJob(B, SPACE, job.id), job);
  const list = await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs`, {}, 200);
  const row = list.jobs.find((x) => x.id === job.id);
  assert.equal(row.status, 'partial');
  assert.equal(row.errors, 4);
  assert.deepEqual(row.error_items, job.error_items);
  // the end event
  const mine = () => ev.ofType('sync').filter((e) => e.json?.job === job.id);
  const end = await ev.waitFor(() => mine().find((e) => e.json.status !== 'running'), 5000, 'the end event');
  assert.equal(end.json.status, 'partial');
  assert.equal(end.json.errors, 4);
  assert.equal(end.json.error, job.error);
  assert.deepEqual(end.json.error_items, job.error_items);
  // the audit record
  const audit = await apiOk(B, 'GET', '/api/v1/audit?action=sync.finish', {}, 200);
  const fin = audit.entries.find((a) => a.meta?.job === job.id);
  assert.ok(fin, JSON.stringify(audit));
  assert.equal(fin.meta.status, 'partial');
  assert.equal(fin.meta.errors, 4);
  assert.deepEqual(fin.meta.error_items, job.error_items);
  // metrics count it apart
  const m = await api(B, 'GET', '/metrics');
  assert.match(m.text, /snapsync_sync_jobs_total\{status="partial"\} 1\n/);
  assert.match(m.text, /snapsync_sync_jobs_total\{status="completed"\} 0\n/);

  // the checkpoint moved past them (retrying would not help): the next job
  // has nothing to do and completes
  const again = await startSync(B, SPACE, peer, { direction: 'pull', wait: true });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.body.status, 'completed');
  assert.equal(again.body.errors, 0);
  assert.deepEqual(again.body.error_items, []);

  // and the stored row survives a restart
  const dataDir = B.dataDir;
  assert.deepEqual(await B.stop(), { code: 0, signal: null }, B.stderrText().slice(-4000));
  B = await startServer({ dataDir, keepData: false });
  const stored = await getJob(B, SPACE, job.id);
  assert.equal(stored.status, 'partial');
  assert.equal(stored.errors, 4);
  assert.deepEqual(stored.error_items, job.error_items);
});

test('push: items the peer\'s /replicate answers "error" for -> job "partial"; old-style results without names or codes count too', async (t) => {
  let replicated = 0;
  const peer = await fakePeer(t, {
    replicate: (body) => {
      replicated += body.changes.length;
      const results = body.changes.map((e) => {
        if (e.id === 'named') return { status: 'error', collection: e.collection, id: e.id, error: 'invalid_rev', message: 'rev is not one' };
        if (e.id === 'old') return { status: 'error', message: 'each entity needs a valid collection, id, rev and revs' };
        return { status: 'applied', collection: e.collection, id: e.id, rev: e.rev };
      });
      const errors = results.filter((x) => x.status === 'error').length;
      return { results, applied: results.length - errors, ignored: 0, conflicts: 0, errors, version_before: 0, server_version: results.length - errors };
    },
  });
  const A = await withServer(t);
  await putSpace(A, SPACE);
  for (const id of ['a1', 'named', 'old', 'a2']) await put(A, SPACE, 'c', id, { id });
  const r = await startSync(A, SPACE, peer, { direction: 'push', wait: true });
  assert.equal(r.status, 502, r.text);
  assert.equal(replicated, 4);
  const job = r.body;
  assert.equal(job.status, 'partial', r.text);
  assert.equal(job.pushed, 2, r.text);
  assert.equal(job.errors, 2, r.text);
  assert.match(job.error, /^2 items could not be applied/);
  assert.deepEqual(job.error_items, [
    { direction: 'push', collection: 'c', id: 'named', error: 'invalid_rev', message: 'rev is not one' },
    { direction: 'push', collection: null, id: null, error: 'error', message: 'each entity needs a valid collection, id, rev and revs' },
  ], r.text);
});

test('push: a peer that counts more errors than it lists is believed; at most ten are described', async (t) => {
  const peer = await fakePeer(t, {
    replicate: (body) => ({
      results: body.changes.map((e) => ({ status: 'error', collection: e.collection, id: e.id, error: 'missing_blob', message: 'send it first' })),
      applied: 0, ignored: 0, conflicts: 0, errors: body.changes.length + 3, version_before: 0, server_version: 0,
    }),
  });
  const A = await withServer(t);
  await putSpace(A, SPACE);
  await apiOk(A, 'POST', `${sp(SPACE)}/changes`, { body: { changes: Array.from({ length: 25 }, (_, i) => ({ collection: 'c', id: `e${i}`, body: { i } })) } }, 200);
  const r = await startSync(A, SPACE, peer, { direction: 'push', wait: true });
  assert.equal(r.status, 502, r.text);
  assert.equal(r.body.status, 'partial');
  assert.equal(r.body.errors, 28);
  assert.equal(r.body.error_items.length, 10);
  assert.match(r.body.error, /^28 items could not be applied; error_items describes the first ones/);
});

test('a persistent peer whose job ends partial shows it (last_status, last_error)', async (t) => {
  const peer = await fakePeer(t, { entities: [good('ok'), good('bad', '0-abc')] });
  const B = await withServer(t);
  await putSpace(B, SPACE);
  await apiOk(B, 'PUT', `${sp(SPACE)}/peers/fake`, { body: { url: peer.base, space: SPACE, token: peer.adminToken, direction: 'pull', every_seconds: 1 } }, 201);
  let p;
  for (let i = 0; i < 100; i++) {
    p = (await apiOk(B, 'GET', `${sp(SPACE)}/peers`, {}, 200)).peers[0];
    if (p.last_status) break;
    await sleep(100);
  }
  assert.equal(p.last_status, 'partial', JSON.stringify(p));
  assert.match(p.last_error, /^1 item could not be applied/, JSON.stringify(p));
  assert.ok(await getEntity(B, SPACE, 'c', 'ok'));
  await api(B, 'DELETE', `${sp(SPACE)}/peers/fake`);
});
