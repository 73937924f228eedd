// durability.test.mjs - acknowledged writes survive SIGKILL; a graceful
// restart keeps everything; concurrent conditional writes and pushes
// serialise (exactly one winner, nothing lost).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import {
  startServer, withServer, api, apiOk, putSpace, createKey, allChanges, checkError, sleep,
} from './helpers.mjs';

const E = (sp, c, id) => `/api/v1/spaces/${sp}/collections/${c}/entities/${id}`;
const REV_RE = /^(\d+)-[0-9a-f]{16}$/;
const revN = (rev) => Number(REV_RE.exec(rev)?.[1]);

/** Runs fns with at most `width` in flight. */
async function pool(items, width, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }));
  return out;
}

test('SIGKILL after 200 acknowledged PUTs: all there after a restart, same revs, same status and digest', async (t) => {
  const a = await startServer({ keepData: true });
  let b = null;
  t.after(async () => {
    await a.stop().catch(() => {});
    if (b) await b.stop().catch(() => {});
    rmSync(a.dataDir, { recursive: true, force: true });
  });
  await putSpace(a, 'dur');
  const ids = Array.from({ length: 200 }, (_, i) => `e${String(i).padStart(3, '0')}`);
  const acked = await pool(ids, 20, async (id, i) => {
    const r = await api(a, 'PUT', E('dur', i % 2 ? 'odd' : 'even', id), { body: { i, text: `entity ${i}` } });
    assert.equal(r.status, 201, `${id}: ${r.text}`);
    return r.body;
  });
  // some edits and deletes too, acknowledged
  for (let i = 0; i < 200; i += 10) {
    const e = acked[i];
    const r = await api(a, 'PUT', E('dur', e.collection, e.id), { body: { i, edited: true }, headers: { 'If-Match': `"${e.rev}"` } });
    assert.equal(r.status, 200, r.text);
    acked[i] = r.body;
  }
  for (let i = 5; i < 200; i += 50) {
    const e = acked[i];
    const r = await api(a, 'DELETE', E('dur', e.collection, e.id));
    assert.equal(r.status, 200, r.text);
    acked[i] = r.body;
  }
  const before = await apiOk(a, 'GET', '/api/v1/spaces/dur/sync/status');
  const feedBefore = await allChanges(a, 'dur');

  const ex = await a.kill9();
  assert.equal(ex.signal, 'SIGKILL');

  b = await startServer({ dataDir: a.dataDir });
  assert.equal(b.adminToken, a.adminToken);
  const after = await apiOk(b, 'GET', '/api/v1/spaces/dur/sync/status');
  assert.deepEqual(after, before, 'sync/status (counters, version, digest) after SIGKILL + restart');
  for (const e of acked) {
    const r = await api(b, 'GET', `${E('dur', e.collection, e.id)}?include_deleted=1`);
    assert.equal(r.status, 200, `${e.collection}/${e.id} after restart: ${r.text}`);
    assert.deepEqual(r.body, e, `${e.collection}/${e.id} identical after restart`);
  }
  const feedAfter = await allChanges(b, 'dur');
  assert.deepEqual(feedAfter, feedBefore);
  assert.equal(after.entity_count + after.tombstone_count, 200);
  assert.equal(after.tombstone_count, 4);
  // and writing goes on with the next version
  const w = await apiOk(b, 'PUT', E('dur', 'even', 'later'), { body: { later: true } }, 201);
  assert.equal(w.version, before.server_version + 1);
});

test('graceful restart keeps spaces, entities, tombstones, conflicts, keys and audit', async (t) => {
  const a = await startServer({ keepData: true });
  let b = null;
  t.after(async () => {
    await a.stop().catch(() => {});
    if (b) await b.stop().catch(() => {});
    rmSync(a.dataDir, { recursive: true, force: true });
  });
  const sp1 = await putSpace(a, 'keep-a');
  await putSpace(a, 'keep-b');
  await putSpace(a, 'keep-gone');
  await apiOk(a, 'DELETE', '/api/v1/spaces/keep-gone?confirm=keep-gone');
  for (let i = 0; i < 30; i++) await apiOk(a, 'PUT', E('keep-a', 'c', `k${i}`), { body: { i } });
  await apiOk(a, 'DELETE', E('keep-a', 'c', 'k3'));
  await apiOk(a, 'PUT', E('keep-b', 'other', 'x'), { body: { b: true } });
  const push = await apiOk(a, 'POST', '/api/v1/spaces/keep-a/changes', { body: { changes: [{ collection: 'c', id: 'k1', base_rev: null, deleted: false, body: { mine: 1 } }] } });
  assert.equal(push.results[0].status, 'conflict');
  const writer = await createKey(a, 'writer', ['keep-a'], 'survivor');
  const revoked = await createKey(a, 'reader', ['*'], 'dead');
  await apiOk(a, 'DELETE', `/api/v1/keys/${revoked.id}`);

  const snap = {
    status: await apiOk(a, 'GET', '/api/v1/status'),
    spaces: await apiOk(a, 'GET', '/api/v1/spaces?limit=1000'),
    a: await apiOk(a, 'GET', '/api/v1/spaces/keep-a/sync/status'),
    b: await apiOk(a, 'GET', '/api/v1/spaces/keep-b/sync/status'),
    feed: await allChanges(a, 'keep-a'),
    conflicts: await apiOk(a, 'GET', '/api/v1/spaces/keep-a/conflicts'),
    cols: await apiOk(a, 'GET', '/api/v1/spaces/keep-a/collections'),
    keys: await apiOk(a, 'GET', '/api/v1/keys?limit=1000'),
    audit: await apiOk(a, 'GET', '/api/v1/audit?limit=1000'),
  };
  assert.deepEqual(await a.stop(), { code: 0, signal: null }, a.stderrText());

  b = await startServer({ dataDir: a.dataDir });
  const st = await apiOk(b, 'GET', '/api/v1/status');
  assert.equal(st.instance_id, snap.status.instance_id);
  assert.equal(st.spaces, snap.status.spaces);
  assert.deepEqual(await apiOk(b, 'GET', '/api/v1/spaces?limit=1000'), snap.spaces);
  assert.deepEqual(await apiOk(b, 'GET', '/api/v1/spaces/keep-a/sync/status'), snap.a);
  assert.deepEqual(await apiOk(b, 'GET', '/api/v1/spaces/keep-b/sync/status'), snap.b);
  assert.deepEqual(await allChanges(b, 'keep-a'), snap.feed);
  assert.deepEqual(await apiOk(b, 'GET', '/api/v1/spaces/keep-a/conflicts'), snap.conflicts);
  assert.deepEqual(await apiOk(b, 'GET', '/api/v1/spaces/keep-a/collections'), snap.cols);
  assert.deepEqual(await apiOk(b, 'GET', '/api/v1/keys?limit=1000'), snap.keys);
  const audit = await apiOk(b, 'GET', '/api/v1/audit?limit=1000');
  assert.deepEqual(audit.entries.slice(-snap.audit.entries.length), snap.audit.entries);
  checkError(assert, await api(b, 'GET', '/api/v1/spaces/keep-gone'), 404, 'space_not_found', 'deleted space after restart');
  assert.equal((await apiOk(b, 'GET', '/api/v1/spaces/keep-a')).space_uid, sp1.space_uid);

  // keys: the live one works, the revoked one stays revoked
  const w = await api(b, 'PUT', E('keep-a', 'c', 'k1'), { token: writer.token, body: { after: 'restart' } });
  assert.equal(w.status, 200, w.text);
  checkError(assert, await api(b, 'GET', '/api/v1/status', { token: revoked.token }), 401, 'unauthorized', 'revoked key after restart');
  // a resolution still works on a conflict from before the restart
  const cid = snap.conflicts[0].id;
  const res = await api(b, 'POST', `/api/v1/spaces/keep-a/conflicts/${cid}/resolve`, { body: { strategy: 'local_wins' } });
  assert.equal(res.status, 200, res.text);
});

test('concurrency: 20 clients PUT the same entity with the same If-Match, 10 rounds: one 200, nineteen 409 each', async (t) => {
  const s = await withServer(t);
  await putSpace(s, 'race');
  const url = E('race', 'c', 'hot');
  let cur = await apiOk(s, 'PUT', url, { body: { round: -1 } }, 201);
  for (let round = 0; round < 10; round++) {
    const rs = await Promise.all(Array.from({ length: 20 }, (_, k) => api(s, 'PUT', url, {
      body: { round, client: k }, headers: { 'If-Match': `"${cur.rev}"` },
    })));
    const ok = rs.filter((r) => r.status === 200);
    const conflict = rs.filter((r) => r.status === 409);
    assert.equal(ok.length, 1, `round ${round}: ${rs.map((r) => r.status).join(',')}`);
    assert.equal(conflict.length, 19, `round ${round}: ${rs.map((r) => r.status).join(',')}`);
    const win = ok[0].body;
    assert.equal(revN(win.rev), revN(cur.rev) + 1, `round ${round}`);
    for (const c of conflict) {
      assert.equal(c.body.error, 'conflict');
      assert.equal(c.body.current_rev, win.rev, `round ${round}: a loser saw ${c.body.current_rev}, the winner wrote ${win.rev}`);
    }
    const g = await apiOk(s, 'GET', url);
    assert.deepEqual(g, win, `round ${round}: the stored entity is the winner's`);
    cur = win;
  }
  const st = await apiOk(s, 'GET', '/api/v1/spaces/race/sync/status');
  assert.equal(st.server_version, 11, 'one version per accepted write');
});

test('concurrency: 20 concurrent pushes with the same base_rev: one applied, 19 conflict records, nothing lost', async (t) => {
  const s = await withServer(t);
  await putSpace(s, 'race2');
  const e = await apiOk(s, 'PUT', E('race2', 'c', 'hot'), { body: { v: 0 } }, 201);
  const rs = await Promise.all(Array.from({ length: 20 }, (_, k) => api(s, 'POST', '/api/v1/spaces/race2/changes', {
    body: { changes: [{ collection: 'c', id: 'hot', base_rev: e.rev, deleted: false, body: { client: k } }] },
  })));
  for (const r of rs) assert.equal(r.status, 200, r.text);
  const results = rs.map((r) => r.body.results[0]);
  const applied = results.map((r, k) => [r, k]).filter(([r]) => r.status === 'applied');
  const conflicted = results.filter((r) => r.status === 'conflict');
  assert.equal(applied.length, 1, JSON.stringify(results));
  assert.equal(conflicted.length, 19, JSON.stringify(results));
  const [win, winner] = applied[0];
  for (const c of conflicted) assert.equal(c.current_rev, win.rev);
  assert.equal(new Set(conflicted.map((c) => c.conflict_id)).size, 19, 'distinct conflict ids');

  const cur = await apiOk(s, 'GET', E('race2', 'c', 'hot'));
  assert.deepEqual(cur.body, { client: winner });
  const list = await apiOk(s, 'GET', '/api/v1/spaces/race2/conflicts?limit=1000');
  assert.equal(list.length, 19);
  assert.deepEqual(new Set(list.map((c) => c.id)), new Set(conflicted.map((c) => c.conflict_id)));
  const kept = list.map((c) => c.conflicting_body.client).sort((x, y) => x - y);
  const want = Array.from({ length: 20 }, (_, k) => k).filter((k) => k !== winner);
  assert.deepEqual(kept, want, 'every losing push is kept as a conflict record');
  const st = await apiOk(s, 'GET', '/api/v1/spaces/race2/sync/status');
  assert.equal(st.conflict_count, 19);
  assert.equal(st.server_version, 2);
});

test('concurrency: 100 concurrent PUTs to distinct ids take 100 distinct consecutive versions', async (t) => {
  const s = await withServer(t);
  await putSpace(s, 'race3');
  const rs = await Promise.all(Array.from({ length: 100 }, (_, k) => api(s, 'PUT', E('race3', 'c', `id${k}`), { body: { k } })));
  for (const r of rs) assert.equal(r.status, 201, r.text);
  const versions = rs.map((r) => r.body.version).sort((x, y) => x - y);
  assert.deepEqual(versions, Array.from({ length: 100 }, (_, k) => k + 1));
  const { changes } = await allChanges(s, 'race3');
  assert.equal(changes.length, 100);
  const st = await apiOk(s, 'GET', '/api/v1/spaces/race3/sync/status');
  assert.equal(st.entity_count, 100);
  assert.equal(st.server_version, 100);
});

test('the change feed never shows a commit before it is durable (fsync held back 1.5 s by a test hook): GET /changes, plain and style=all_revs', async (t) => {
  const srv = await withServer(t, { env: { SNAPSYNC_TEST_FSYNC_DELAY_MS: '1500' } });
  await putSpace(srv, 'dur');          // acknowledged: durable
  const base = await apiOk(srv, 'GET', '/api/v1/spaces/dur/changes?since=0', {}, 200);
  // a write that is committed at once but acknowledged only after the fsync
  const t0 = Date.now();
  const pending = api(srv, 'PUT', E('dur', 'c', 'x'), { body: { v: 1 } });
  await new Promise((r) => setTimeout(r, 400));
  // the writer has committed by now (the row is in the database) ...
  const feed = await apiOk(srv, 'GET', '/api/v1/spaces/dur/changes?since=0', {}, 200);
  const allRevs = await apiOk(srv, 'GET', '/api/v1/spaces/dur/changes?since=0&style=all_revs', {}, 200);
  const ackedYet = Date.now() - t0 >= 1500;
  // ... but no feed shows it before it is acknowledged
  if (!ackedYet) {
    assert.deepEqual(feed.changes, [], `not durable yet, not in the feed: ${JSON.stringify(feed)}`);
    assert.equal(feed.last_version, base.last_version, 'last_version does not run ahead of what is durable');
    assert.deepEqual(allRevs.changes, []);
  }
  const put = await pending;
  assert.equal(put.status, 201, put.text);
  assert.ok(Date.now() - t0 >= 1400, 'the hook held the acknowledgment back');
  const after = await apiOk(srv, 'GET', '/api/v1/spaces/dur/changes?since=0', {}, 200);
  assert.deepEqual(after.changes.map((c) => c.id), ['x'], 'in the feed once acknowledged');
  assert.equal(after.last_version, put.body.version);
});

test('a read never shows a write before it is acknowledged (fsync held back 1.5 s): GET entity and the collection list wait for it, a tombstone\'s 404 too', async (t) => {
  const srv = await withServer(t, { env: { SNAPSYNC_TEST_FSYNC_DELAY_MS: '1500' } });
  await putSpace(srv, 'dr');
  const order = [];
  const t0 = Date.now();
  const pending = api(srv, 'PUT', E('dr', 'c', 'x'), { body: { v: 1 } }).then((res) => { order.push('put'); return res; });
  await sleep(400);                    // committed by now, not yet durable
  const get = api(srv, 'GET', E('dr', 'c', 'x')).then((res) => { order.push('get'); return res; });
  const list = api(srv, 'GET', '/api/v1/spaces/dr/collections/c/entities').then((res) => { order.push('list'); return res; });
  const [put, g, l] = await Promise.all([pending, get, list]);
  assert.equal(put.status, 201, put.text);
  assert.ok(Date.now() - t0 >= 1400, 'the hook held the acknowledgment back');
  assert.equal(order[0], 'put', `the write is answered before any read shows it: ${order}`);
  assert.equal(g.status, 200, g.text);
  assert.equal(g.body.version, put.body.version);
  assert.deepEqual(l.body.entities.map((e) => e.id), ['x']);

  // a delete: the old body is never shown again once the 404 could be
  const t1 = Date.now();
  const del = api(srv, 'DELETE', E('dr', 'c', 'x'), { headers: { 'If-Match': `"${put.body.rev}"` } })
    .then((res) => { order.push('del'); return res; });
  await sleep(400);
  const g2 = await api(srv, 'GET', E('dr', 'c', 'x')).then((res) => { order.push('get404'); return res; });
  assert.ok([200, 204].includes((await del).status));
  assert.deepEqual(order.slice(3), ['del', 'get404'], `the 404 of a tombstone waits for the delete's acknowledgment: ${order}`);
  assert.equal(g2.status, 404);
  assert.ok(Date.now() - t1 >= 1400);
  // reads of what is already durable do not wait
  const t2 = Date.now();
  await apiOk(srv, 'GET', '/api/v1/spaces/dr/collections/c/entities', {}, 200);
  assert.ok(Date.now() - t2 < 1000, 'a durable answer is not held');
});
