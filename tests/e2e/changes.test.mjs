// changes.test.mjs - SPEC §6: the change feed (GET /changes), pushes
// (POST /changes) with conflict records, the conflicts list and its
// resolution strategies, and /sync/status with its digest recomputed here.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  startServer, api, apiOk, putSpace, checkError, allChanges, ULID_RE,
} from './helpers.mjs';

const TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const REV_RE = /^(\d+)-[0-9a-f]{16}$/;
const revN = (rev) => Number(REV_RE.exec(rev)?.[1]);

let srv;
before(async () => { srv = await startServer(); });
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

const base = (sp) => `/api/v1/spaces/${sp}`;
const put = (sp, c, id, body, headers) => apiOk(srv, 'PUT', `${base(sp)}/collections/${c}/entities/${id}`, { body, headers });
const del = (sp, c, id) => apiOk(srv, 'DELETE', `${base(sp)}/collections/${c}/entities/${id}`);
const push = (sp, changes, opts = {}) => api(srv, 'POST', `${base(sp)}/changes`, { body: { changes }, ...opts });
const status = (sp) => apiOk(srv, 'GET', `${base(sp)}/sync/status`);
const conflicts = (sp, q = '') => apiOk(srv, 'GET', `${base(sp)}/conflicts${q}`);
const getEntity = (sp, c, id, q = '') => api(srv, 'GET', `${base(sp)}/collections/${c}/entities/${id}${q}`);

/** SPEC §6 digest, as the brief defines it: XOR of sha256(c\0id\0rev\0flag). */
function digestOf(entities) {
  const acc = Buffer.alloc(32);
  for (const e of entities) {
    const h = createHash('sha256').update(`${e.collection}\0${e.id}\0${e.rev}\0${e.deleted ? '1' : '0'}`, 'utf8').digest();
    for (let i = 0; i < 32; i++) acc[i] ^= h[i];
  }
  return acc.toString('hex');
}

test('GET /changes: latest state per entity, ascending versions, tombstones with null bodies', async () => {
  const sp = 'ch-feed';
  await putSpace(srv, sp);
  const a1 = await put(sp, 'alpha', 'a1', { n: 1 });
  const b1 = await put(sp, 'beta', 'b1', { n: 1 });
  await put(sp, 'alpha', 'a2', { n: 1 });
  const a1v2 = await put(sp, 'alpha', 'a1', { n: 2 });
  const a2d = await del(sp, 'alpha', 'a2');
  const r = await api(srv, 'GET', `${base(sp)}/changes?since=0`);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(Object.keys(r.body).sort(), ['changes', 'last_version', 'more']);
  const ch = r.body.changes;
  assert.deepEqual(ch.map((e) => [e.collection, e.id, e.version]), [['beta', 'b1', b1.version], ['alpha', 'a1', a1v2.version], ['alpha', 'a2', a2d.version]]);
  assert.deepEqual(ch[1], a1v2, 'latest state of a1, whole entity');
  assert.deepEqual(ch[2].body, null);
  assert.equal(ch[2].deleted, true);
  assert.equal(ch[2].rev, a2d.rev);
  assert.equal(r.body.more, false);
  const st = await status(sp);
  assert.equal(r.body.last_version, st.server_version);
  assert.equal(st.server_version, a2d.version);
  assert.ok(a1.version < b1.version);

  // since=V: only what changed after V
  const s2 = await apiOk(srv, 'GET', `${base(sp)}/changes?since=${a1v2.version}`);
  assert.deepEqual(s2.changes.map((e) => e.id), ['a2']);
  assert.equal(s2.last_version, st.server_version);
  const s3 = await apiOk(srv, 'GET', `${base(sp)}/changes?since=${st.server_version}`);
  assert.deepEqual(s3, { changes: [], last_version: st.server_version, more: false });
  const s4 = await apiOk(srv, 'GET', `${base(sp)}/changes?since=${st.server_version + 100}`);
  assert.deepEqual(s4.changes, []);
  assert.equal(s4.more, false);

  // collections filter and bodies=false
  const fa = await apiOk(srv, 'GET', `${base(sp)}/changes?since=0&collections=beta`);
  assert.deepEqual(fa.changes.map((e) => e.id), ['b1']);
  assert.equal(fa.more, false);
  assert.equal(fa.last_version, st.server_version, 'a filtered feed at its end still reports the space version');
  const fa1 = await apiOk(srv, 'GET', `${base(sp)}/changes?since=0&collections=alpha&limit=1`);
  assert.deepEqual(fa1.changes.map((e) => e.id), ['a1']);
  assert.equal(fa1.more, true);
  const fa2 = await apiOk(srv, 'GET', `${base(sp)}/changes?since=${fa1.last_version}&collections=alpha&limit=1`);
  assert.deepEqual(fa2.changes.map((e) => e.id), ['a2']);
  assert.equal(fa2.last_version, st.server_version);
  const fab = await apiOk(srv, 'GET', `${base(sp)}/changes?since=0&collections=beta,alpha`);
  assert.equal(fab.changes.length, 3);
  const fn = await apiOk(srv, 'GET', `${base(sp)}/changes?since=0&collections=gamma`);
  assert.deepEqual(fn.changes, []);
  const nb = await apiOk(srv, 'GET', `${base(sp)}/changes?since=0&bodies=false`);
  assert.equal(nb.changes.length, 3);
  for (const e of nb.changes) assert.equal(e.body, null, JSON.stringify(e));
  assert.deepEqual(nb.changes.map((e) => e.rev), ch.map((e) => e.rev));
  const wb = await apiOk(srv, 'GET', `${base(sp)}/changes?since=0&bodies=true`);
  assert.deepEqual(wb.changes, ch);
  const dflt = await apiOk(srv, 'GET', `${base(sp)}/changes`);
  assert.deepEqual(dflt.changes, ch, 'since defaults to 0, bodies to true');
});

test('GET /changes since a version beyond the space: last_version is the space version', async () => {
  // more:false -> last_version is the space's current server_version, even for
  // a client whose checkpoint is ahead of it (how it learns the space was
  // replaced, SPEC §9)
  const sp = 'ch-ahead';
  await putSpace(srv, sp);
  for (let i = 0; i < 3; i++) await put(sp, 'c', `x${i}`, { i });
  const st = await status(sp);
  const r = await apiOk(srv, 'GET', `${base(sp)}/changes?since=${st.server_version + 100}`);
  assert.deepEqual(r.changes, []);
  assert.equal(r.more, false);
  assert.equal(r.last_version, st.server_version, `since=${st.server_version + 100} on a space at ${st.server_version}: ${JSON.stringify(r)}`);
});

test('GET /changes paging: limit, more, last_version; parameter validation', async () => {
  const sp = 'ch-page';
  await putSpace(srv, sp);
  for (let i = 0; i < 25; i++) await put(sp, 'items', `i${String(i).padStart(2, '0')}`, { i });
  for (let i = 0; i < 25; i += 5) await put(sp, 'items', `i${String(i).padStart(2, '0')}`, { i, again: true });
  const st = await status(sp);
  const p1 = await apiOk(srv, 'GET', `${base(sp)}/changes?since=0&limit=10`);
  assert.equal(p1.changes.length, 10);
  assert.equal(p1.more, true);
  assert.equal(p1.last_version, p1.changes.at(-1).version, 'last_version is the last change of the page');
  const { changes, last_version: lv } = await allChanges(srv, sp, { limit: 7 });
  assert.equal(changes.length, 25, 'each entity once');
  assert.equal(new Set(changes.map((e) => e.id)).size, 25);
  for (let i = 1; i < changes.length; i++) assert.ok(changes[i].version > changes[i - 1].version, 'ascending');
  assert.equal(lv, st.server_version);
  assert.equal(changes.at(-1).version, st.server_version);
  const exact = await apiOk(srv, 'GET', `${base(sp)}/changes?since=0&limit=1000`);
  assert.equal(exact.more, false);
  assert.deepEqual(exact.changes, changes);

  for (const q of ['limit=0', 'limit=1001', 'limit=-1', 'limit=abc', 'since=abc', 'since=-1', 'bodies=maybe']) {
    checkError(assert, await api(srv, 'GET', `${base(sp)}/changes?${q}`), 400, 'invalid_parameter', q);
  }
  checkError(assert, await api(srv, 'GET', `${base(sp)}/changes?collections=BAD`), 400, 'invalid_name', 'collections=BAD');
  assert.equal((await api(srv, 'GET', `${base(sp)}/changes?limit=1000`)).status, 200);
});

test('POST /changes: applied, conflict (kept as a record), error items; one result per item', async () => {
  const sp = 'ch-push';
  await putSpace(srv, sp);
  const e1 = await put(sp, 'docs', 'e1', { v: 1 });
  const v0 = (await status(sp)).server_version;
  const r = await push(sp, [
    { collection: 'docs', id: 'new1', base_rev: null, deleted: false, body: { made: 'by push' } },
    { collection: 'docs', id: 'e1', base_rev: e1.rev, deleted: false, body: { v: 2 } },
    { collection: 'BAD NAME', id: 'x', base_rev: null, deleted: false, body: {} },
    { collection: 'docs', id: 'e1', base_rev: e1.rev, deleted: false, body: { v: 'stale' } },
    { collection: 'docs', id: 'new1', base_rev: null, deleted: false, body: { made: 'twice?' } },
    { collection: 'docs', id: 'bad-body', base_rev: null, deleted: false, body: [1, 2] },
  ]);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(Object.keys(r.body).sort(), ['results', 'server_version']);
  const res = r.body.results;
  assert.equal(res.length, 6, r.text);
  assert.equal(res[0].status, 'applied', JSON.stringify(res[0]));
  assert.match(res[0].rev, REV_RE);
  assert.equal(revN(res[0].rev), 1);
  assert.equal(res[1].status, 'applied', JSON.stringify(res[1]));
  assert.equal(revN(res[1].rev), 2);
  assert.ok(res[1].version > res[0].version && res[0].version > v0);
  assert.equal(res[2].status, 'error', JSON.stringify(res[2]));
  assert.equal(typeof res[2].error, 'string');
  assert.equal(typeof res[2].message, 'string');
  assert.equal(res[3].status, 'conflict', JSON.stringify(res[3]));
  assert.equal(res[3].current_rev, res[1].rev, 'conflict against the rev applied earlier in the same push');
  assert.match(String(res[3].conflict_id), /\S/);
  assert.equal(res[4].status, 'conflict', 'base_rev null on a live entity is a conflict');
  assert.equal(res[4].current_rev, res[0].rev);
  assert.equal(res[5].status, 'error', JSON.stringify(res[5]));

  const st = await status(sp);
  assert.equal(r.body.server_version, st.server_version);
  assert.equal(st.server_version, res[1].version);
  assert.equal(st.conflict_count, 2);
  // the server copy stays current
  assert.deepEqual((await apiOk(srv, 'GET', `${base(sp)}/collections/docs/entities/e1`)).body, { v: 2 });
  assert.deepEqual((await apiOk(srv, 'GET', `${base(sp)}/collections/docs/entities/new1`)).body, { made: 'by push' });
  // the pushed versions are kept as conflict records: nothing is lost
  const cs = await conflicts(sp);
  assert.ok(Array.isArray(cs), JSON.stringify(cs));
  assert.equal(cs.length, 2);
  const byId = Object.fromEntries(cs.map((c) => [c.id, c]));
  const c3 = byId[res[3].conflict_id];
  assert.ok(c3, `conflict ${res[3].conflict_id} listed: ${JSON.stringify(cs)}`);
  assert.deepEqual(Object.keys(c3).sort(), ['collection', 'conflicting_body', 'conflicting_rev', 'current_rev', 'deleted', 'detected_at', 'entity_id', 'id', 'origin']);
  assert.equal(c3.collection, 'docs');
  assert.equal(c3.entity_id, 'e1');
  assert.equal(c3.current_rev, res[1].rev);
  assert.deepEqual(c3.conflicting_body, { v: 'stale' });
  assert.match(c3.conflicting_rev, REV_RE);
  assert.notEqual(c3.conflicting_rev, c3.current_rev);
  assert.equal(c3.deleted, false);
  assert.match(c3.detected_at, TIME_RE);
  assert.equal(typeof c3.origin, 'string');
  assert.deepEqual(byId[res[4].conflict_id]?.conflicting_body, { made: 'twice?' });
  // the error item wrote nothing
  checkError(assert, await getEntity(sp, 'docs', 'bad-body'), 404, 'not_found', 'error item');
});

test('POST /changes: deletes, idempotent retries, empty push, 413 past 1000 items, bad bodies', async () => {
  const sp = 'ch-push2';
  await putSpace(srv, sp);
  const e = await put(sp, 'docs', 'd1', { v: 1 });
  const del1 = await push(sp, [{ collection: 'docs', id: 'd1', base_rev: e.rev, deleted: true, body: null }]);
  assert.equal(del1.status, 200, del1.text);
  assert.equal(del1.body.results[0].status, 'applied');
  assert.equal(revN(del1.body.results[0].rev), 2);
  const t = await getEntity(sp, 'docs', 'd1', '?include_deleted=1');
  assert.equal(t.body.deleted, true);
  assert.equal(t.body.rev, del1.body.results[0].rev);
  // base_rev null on a tombstone applies (re-creation)
  const re = await push(sp, [{ collection: 'docs', id: 'd1', base_rev: null, deleted: false, body: { back: true } }]);
  assert.equal(re.body.results[0].status, 'applied', re.text);
  assert.equal(revN(re.body.results[0].rev), 3);

  // the exact same item twice: same rev, no new version
  const item = { collection: 'docs', id: 'idem', base_rev: null, deleted: false, body: { x: 1, y: [1, 2] } };
  const p1 = await push(sp, [item]);
  assert.equal(p1.body.results[0].status, 'applied', p1.text);
  const v1 = (await status(sp)).server_version;
  const p2 = await push(sp, [item]);
  assert.equal(p2.status, 200);
  assert.deepEqual(p2.body.results[0], p1.body.results[0], 'a retried push is answered like the first');
  assert.equal(p2.body.server_version, v1);
  assert.equal((await status(sp)).server_version, v1, 'a retry took a version');
  assert.equal((await status(sp)).conflict_count, 0, 'a retry made a conflict');
  // and with a base_rev
  const upd = { collection: 'docs', id: 'idem', base_rev: p1.body.results[0].rev, deleted: false, body: { x: 2 } };
  const u1 = await push(sp, [upd]);
  const u2 = await push(sp, [upd]);
  assert.equal(u1.body.results[0].status, 'applied');
  assert.deepEqual(u2.body.results[0], u1.body.results[0]);
  assert.equal((await status(sp)).conflict_count, 0);
  // same item twice in one push
  const twin = { collection: 'docs', id: 'twin', base_rev: null, deleted: false, body: { t: 1 } };
  const tw = await push(sp, [twin, twin]);
  assert.equal(tw.body.results[0].status, 'applied', tw.text);
  assert.deepEqual(tw.body.results[1], tw.body.results[0], tw.text);

  const empty = await push(sp, []);
  assert.equal(empty.status, 200, empty.text);
  assert.deepEqual(empty.body.results, []);
  assert.equal(empty.body.server_version, (await status(sp)).server_version);

  const many = Array.from({ length: 1001 }, (_, i) => ({ collection: 'bulk', id: `b${i}`, base_rev: null, deleted: false, body: { i } }));
  const big = await push(sp, many);
  assert.equal(big.status, 413, big.text.slice(0, 300));
  assert.equal(typeof big.body?.error, 'string');
  checkError(assert, await getEntity(sp, 'bulk', 'b0'), 404, 'not_found', 'nothing of a refused push applied');
  const ok1000 = await push(sp, many.slice(0, 1000));
  assert.equal(ok1000.status, 200);
  assert.equal(ok1000.body.results.length, 1000);
  assert.ok(ok1000.body.results.every((x) => x.status === 'applied'));
  const col = (await apiOk(srv, 'GET', `${base(sp)}/collections`)).find((c) => c.name === 'bulk');
  assert.deepEqual(col, { name: 'bulk', count: 1000 });

  for (const b of ['{}', '{"changes":{}}', '{"changes":"x"}', '[]']) {
    const r = await api(srv, 'POST', `${base(sp)}/changes`, { body: b });
    assert.equal(r.status, 400, `${b}: ${r.text}`);
    assert.equal(typeof r.body?.error, 'string');
  }
  checkError(assert, await api(srv, 'POST', `${base(sp)}/changes`, { body: '{"changes":[' }), 400, 'invalid_json', 'truncated push');
});

test('POST /changes: a base_rev on an absent entity is a conflict (no current rev to match)', async () => {
  const sp = 'ch-push3';
  await putSpace(srv, sp);
  // base_rev names a revision the server does not have: not a match
  const r = await push(sp, [{ collection: 'docs', id: 'ghost', base_rev: '1-0123456789abcdef', deleted: false, body: { g: 1 } }]);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.results[0].status, 'conflict', `base_rev on an absent entity: ${JSON.stringify(r.body.results[0])}`);
  assert.equal(r.body.results[0].current_rev, null);
  const cs = await conflicts(sp);
  assert.deepEqual(cs.map((c) => [c.entity_id, c.current_rev, c.conflicting_body]), [['ghost', null, { g: 1 }]]);
});

test('POST /changes: a stale delete is kept as a deleted conflict; remote_wins makes it a tombstone', async () => {
  const sp = 'ch-push4';
  await putSpace(srv, sp);
  const e1 = await put(sp, 'docs', 'x', { v: 1 });
  const e2 = await put(sp, 'docs', 'x', { v: 2 });
  const r = await push(sp, [{ collection: 'docs', id: 'x', base_rev: e1.rev, deleted: true, body: null }]);
  assert.equal(r.body.results[0].status, 'conflict', r.text);
  assert.equal(r.body.results[0].current_rev, e2.rev);
  const [c] = await conflicts(sp);
  assert.equal(c.deleted, true);
  assert.equal(c.conflicting_body, null);
  assert.deepEqual((await apiOk(srv, 'GET', `${base(sp)}/collections/docs/entities/x`)).body, { v: 2 }, 'server copy stays');
  const res = await api(srv, 'POST', `${base(sp)}/conflicts/${c.id}/resolve`, { body: { strategy: 'remote_wins' } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.entity.deleted, true);
  assert.equal(res.body.entity.body, null);
  checkError(assert, await getEntity(sp, 'docs', 'x'), 404, 'not_found', 'after remote_wins of a delete');
  const st = await status(sp);
  assert.deepEqual([st.entity_count, st.tombstone_count, st.conflict_count], [0, 1, 0]);
});

test('GET /conflicts paging: limit + X-Next-Cursor', async () => {
  const sp = 'ch-cpage';
  await putSpace(srv, sp);
  await put(sp, 'docs', 'p', { v: 0 });
  const items = Array.from({ length: 5 }, (_, i) => ({ collection: 'docs', id: 'p', base_rev: null, deleted: false, body: { v: i + 1 } }));
  const r = await push(sp, items);
  assert.ok(r.body.results.every((x) => x.status === 'conflict'), r.text);
  const all = await conflicts(sp);
  assert.equal(all.length, 5);
  const seen = [];
  let cursor = null;
  for (let i = 0; i < 10; i++) {
    const q = `${base(sp)}/conflicts?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const p = await api(srv, 'GET', q);
    assert.equal(p.status, 200, p.text);
    assert.ok(Array.isArray(p.body) && p.body.length <= 2);
    seen.push(...p.body.map((c) => c.id));
    cursor = p.headers['x-next-cursor'];
    if (!cursor) break;
  }
  assert.deepEqual(seen, all.map((c) => c.id));
  assert.equal(new Set(seen).size, 5);
});

test('resolve: local_wins, remote_wins, keep_both (~conflict-1, -2), merge; each is a new change', async () => {
  const sp = 'ch-resolve';
  await putSpace(srv, sp);
  const mk = async (id) => {
    const e = await put(sp, 'docs', id, { who: 'server' });
    const r = await push(sp, [{ collection: 'docs', id, base_rev: null, deleted: false, body: { who: 'client' } }]);
    assert.equal(r.body.results[0].status, 'conflict', r.text);
    return { e, cid: r.body.results[0].conflict_id };
  };
  const resolve = (cid, body) => api(srv, 'POST', `${base(sp)}/conflicts/${cid}/resolve`, { body });

  // local_wins: body stays, but it is a new change
  const L = await mk('lw');
  let st = await status(sp);
  assert.equal(st.conflict_count, 1);
  const lw = await resolve(L.cid, { strategy: 'local_wins' });
  assert.equal(lw.status, 200, lw.text);
  assert.deepEqual(Object.keys(lw.body).sort(), ['entity', 'resolved', 'strategy']);
  assert.equal(lw.body.strategy, 'local_wins');
  assert.deepEqual(lw.body.entity.body, { who: 'server' });
  assert.ok(lw.body.entity.version > st.server_version, 'resolution took a new version');
  assert.ok(revN(lw.body.entity.rev) > revN(L.e.rev));
  const st2 = await status(sp);
  assert.equal(st2.conflict_count, 0);
  assert.equal(st2.server_version, lw.body.entity.version);
  assert.deepEqual(await conflicts(sp), []);
  const feed = await apiOk(srv, 'GET', `${base(sp)}/changes?since=${st.server_version}`);
  assert.deepEqual(feed.changes.map((e) => [e.id, e.rev]), [['lw', lw.body.entity.rev]], 'the resolution is in the feed');
  checkError(assert, await resolve(L.cid, { strategy: 'local_wins' }), 404, 'not_found', 'resolving twice');

  // remote_wins: the conflicting body becomes current
  const R = await mk('rw');
  const rw = await resolve(R.cid, { strategy: 'remote_wins' });
  assert.equal(rw.status, 200, rw.text);
  assert.deepEqual(rw.body.entity.body, { who: 'client' });
  assert.deepEqual((await apiOk(srv, 'GET', `${base(sp)}/collections/docs/entities/rw`)).body, { who: 'client' });

  // keep_both: current stays, the other becomes {id}~conflict-1, then -2
  const K1 = await mk('kb');
  const kb1 = await resolve(K1.cid, { strategy: 'keep_both' });
  assert.equal(kb1.status, 200, kb1.text);
  assert.deepEqual((await apiOk(srv, 'GET', `${base(sp)}/collections/docs/entities/kb`)).body, { who: 'server' });
  const copy1 = await apiOk(srv, 'GET', `${base(sp)}/collections/docs/entities/kb~conflict-1`);
  assert.deepEqual(copy1.body, { who: 'client' });
  assert.equal(copy1.collection, 'docs');
  const r2 = await push(sp, [{ collection: 'docs', id: 'kb', base_rev: null, deleted: false, body: { who: 'client2' } }]);
  const kb2 = await resolve(r2.body.results[0].conflict_id, { strategy: 'keep_both' });
  assert.equal(kb2.status, 200, kb2.text);
  assert.deepEqual((await apiOk(srv, 'GET', `${base(sp)}/collections/docs/entities/kb~conflict-2`)).body, { who: 'client2' });
  assert.deepEqual((await apiOk(srv, 'GET', `${base(sp)}/collections/docs/entities/kb~conflict-1`)).body, { who: 'client' });

  // merge: body required
  const M = await mk('mg');
  checkError(assert, await resolve(M.cid, { strategy: 'merge' }), 400, 'invalid_body', 'merge without body');
  const nob = await resolve(M.cid, { strategy: 'merge', body: [1] });
  assert.equal(nob.status, 400, nob.text);
  const mg = await resolve(M.cid, { strategy: 'merge', body: { who: 'both', n: 2 } });
  assert.equal(mg.status, 200, mg.text);
  assert.deepEqual(mg.body.entity.body, { n: 2, who: 'both' });
  assert.deepEqual((await apiOk(srv, 'GET', `${base(sp)}/collections/docs/entities/mg`)).body, { n: 2, who: 'both' });

  // bad strategy, unknown and malformed ids
  const B = await mk('bad');
  const bs = await resolve(B.cid, { strategy: 'coin_flip' });
  assert.equal(bs.status, 400, bs.text);
  assert.equal(typeof bs.body?.error, 'string');
  checkError(assert, await resolve('01ARZ3NDEKTSV4RRFFQ69G5FAV', { strategy: 'local_wins' }), 404, 'not_found', 'unknown conflict');
  // conflict ids are server-made: a malformed one is simply not found (SPEC §1)
  for (const bad of ['not-a-ulid', '01ARZ3NDEKTSV4RRFFQ69G5FA', '..', '%2e%2e']) {
    const mal = await resolve(bad, { strategy: 'local_wins' });
    assert.equal(mal.status, 404, `malformed conflict id ${bad}: ${mal.status} ${mal.text}`);
  }
  const fin = await status(sp);
  assert.equal(fin.conflict_count, 1, 'only the unresolved one is left');
  assert.equal((await conflicts(sp)).length, 1);
  assert.match(String(B.cid), ULID_RE);
});

test('/sync/status shape; digest = XOR of sha256(collection\\0id\\0rev\\0flag) over the whole feed', async () => {
  const sp = 'ch-digest';
  const created = await putSpace(srv, sp);
  const empty = await status(sp);
  assert.deepEqual(Object.keys(empty).sort(), ['conflict_count', 'digest', 'entity_count', 'instance_id', 'last_snapshot', 'server_version', 'space', 'space_uid', 'tombstone_count']);
  assert.equal(empty.space, sp);
  assert.equal(empty.space_uid, created.space_uid);
  assert.equal(empty.instance_id, (await apiOk(srv, 'GET', '/api/v1/status')).instance_id);
  assert.equal(empty.last_snapshot, null);
  assert.match(empty.digest, /^[0-9a-f]{64}$/);
  assert.equal(empty.digest, '0'.repeat(64), 'XOR over nothing');

  for (let i = 0; i < 60; i++) await put(sp, i % 3 ? 'tasks' : 'notes', `t-${i}`, { i, tag: `n${i % 7}` });
  for (let i = 0; i < 60; i += 4) await put(sp, i % 3 ? 'tasks' : 'notes', `t-${i}`, { i, edited: true });
  for (let i = 1; i < 60; i += 9) await del(sp, i % 3 ? 'tasks' : 'notes', `t-${i}`);
  await push(sp, [{ collection: 'tasks', id: 't-2', base_rev: null, deleted: false, body: { clash: 1 } }]);

  const st = await status(sp);
  const { changes } = await allChanges(srv, sp, { limit: 17 });
  const live = changes.filter((e) => !e.deleted);
  const dead = changes.filter((e) => e.deleted);
  assert.equal(st.entity_count, live.length);
  assert.equal(st.tombstone_count, dead.length);
  assert.equal(dead.length, 7);
  assert.equal(st.conflict_count, (await conflicts(sp)).length);
  assert.equal(st.conflict_count, 1);
  assert.equal(st.server_version, changes.at(-1).version);
  assert.equal(st.digest, digestOf(changes), 'digest recomputed from the change feed');

  // incremental: one more edit changes the digest exactly as the formula says
  const before = st.digest;
  const e = await put(sp, 'notes', 't-0', { again: 3 });
  const st2 = await status(sp);
  const old = changes.find((x) => x.id === 't-0');
  const expect = Buffer.from(before, 'hex');
  for (const c of [old, e]) {          // out goes the old rev, in comes the new
    const h = createHash('sha256').update(`${c.collection}\0${c.id}\0${c.rev}\0${c.deleted ? '1' : '0'}`).digest();
    for (let i = 0; i < 32; i++) expect[i] ^= h[i];
  }
  assert.equal(st2.digest, expect.toString('hex'));
  // deleting flips only the flag and the rev
  await del(sp, 'notes', 't-0');
  const all2 = await allChanges(srv, sp, { limit: 1000 });
  assert.equal((await status(sp)).digest, digestOf(all2.changes));

  // /api/v1/spaces/{space} agrees with /sync/status
  const sg = await apiOk(srv, 'GET', `${base(sp)}`);
  const ss = await status(sp);
  for (const k of ['server_version', 'entity_count', 'tombstone_count', 'conflict_count', 'space_uid']) assert.equal(sg[k], ss[k], k);
});

test('two spaces with the same state have the same digest', async () => {
  for (const sp of ['ch-twin-a', 'ch-twin-b']) {
    await putSpace(srv, sp);
  }
  // different order of writes, same end state
  await put('ch-twin-a', 'c', 'x', { v: 1 });
  await put('ch-twin-a', 'c', 'y', { v: 2 });
  await put('ch-twin-b', 'c', 'y', { v: 2 });
  await put('ch-twin-b', 'c', 'x', { v: 1 });
  const [a, b] = [await status('ch-twin-a'), await status('ch-twin-b')];
  assert.equal(a.digest, b.digest);
  assert.notEqual(a.space_uid, b.space_uid);
  await put('ch-twin-b', 'c', 'x', { v: 9 });
  assert.notEqual((await status('ch-twin-b')).digest, a.digest);
});
