// snapshot_api.test.mjs - SPEC §7 snapshots, the API surface: create
// (metadata, Location, async), the file (download gzip / inflated, ETag,
// 304, format, order, sha256), list (filters, paging, order), get, delete,
// 404s, roles, rate limit, audit, sync/status last_snapshot and the
// offline `snapsync verify`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import os from 'node:os';
import path from 'node:path';
import {
  startServer, withServer, api, apiOk, putSpace, createKey, checkError, runCli, ULID_RE,
} from './helpers.mjs';
import {
  snapPath, rawGet, downloadGz, parseSnapshot, liveState, createSnapshot, waitSnapshot, listAll,
  snapFiles, snapFile, checkCompletedMeta, checkFileAgainstMeta, checkEntityLines, sha256, flipByte, until,
  HEADER_KEYS, TIME_RE,
} from './snapshot_helpers.mjs';

let srv;
let adminId;
before(async () => {
  srv = await startServer();
  const keys = (await apiOk(srv, 'GET', '/api/v1/keys?limit=1000')).keys;
  adminId = keys.find((k) => k.role === 'admin').id;
});
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText().slice(-3000)}`);
});

const put = (space, c, id, body) => apiOk(srv, 'PUT', `/api/v1/spaces/${space}/collections/${c}/entities/${encodeURIComponent(id)}`, { body });
const del = (space, c, id) => apiOk(srv, 'DELETE', `/api/v1/spaces/${space}/collections/${c}/entities/${encodeURIComponent(id)}`, {}, 200);

function tmpDir(t) {
  const d = mkdtempSync(path.join(os.tmpdir(), 'snapsync-snapv-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

test('create: 201 completed metadata with Location; file on disk matches size, sha256, counts; GET and sync/status agree', async () => {
  await putSpace(srv, 'sa');
  await put('sa', 'issues', 'I1', { title: 'one', n: 1 });
  await put('sa', 'issues', 'I2', { title: 'two' });
  await put('sa', 'notes', 'N1', { text: 'héllo ✓ \u{1F600}' });
  await put('sa', 'notes', 'N2', { text: 'gone' });
  await del('sa', 'notes', 'N2');
  const st0 = await apiOk(srv, 'GET', '/api/v1/spaces/sa/sync/status', {}, 200);

  const t0 = Date.now();
  const r = await api(srv, 'POST', snapPath('sa'), { body: { note: 'before the migration' } });
  assert.equal(r.status, 201, r.text);
  const m = r.body;
  checkCompletedMeta(m, { space: 'sa', kind: 'manual' });
  assert.equal(r.headers.location, snapPath('sa', m.id), `Location: ${r.headers.location}`);
  assert.equal(m.note, 'before the migration');
  assert.equal(m.created_by, adminId, 'created_by is the key id');
  assert.equal(m.level, 6, 'default --snapshot-level');
  assert.equal(m.server_version, st0.server_version, 'taken at the current server_version');
  assert.deepEqual(m.entity_counts, { issues: 2, notes: 1 }, 'tombstones are not counted');
  assert.equal(m.entity_total, 3);
  assert.ok(Date.parse(m.created_at) >= t0 - 1000 && Date.parse(m.created_at) <= Date.now() + 1000, `created_at ${m.created_at}`);

  // the file on disk
  const f = snapFile(srv.dataDir, m.id);
  assert.ok(existsSync(f), `${f} exists; have ${snapFiles(srv.dataDir)}`);
  const gz = readFileSync(f);
  const parsed = checkFileAgainstMeta(gz, m);
  checkEntityLines(parsed);

  // GET by id = the same metadata
  const g = await apiOk(srv, 'GET', snapPath('sa', m.id), {}, 200);
  assert.deepEqual(g, m);

  const st = await apiOk(srv, 'GET', '/api/v1/spaces/sa/sync/status', {}, 200);
  assert.equal(st.last_snapshot, m.id, 'sync/status last_snapshot = the newest completed snapshot');
  assert.equal(st.server_version, st0.server_version, 'a snapshot is not a change');

  // without a body and with an empty object: both are fine, note null
  const m2 = await createSnapshot(srv, 'sa');
  assert.equal(m2.note, null);
  assert.ok(m2.id > m.id, 'ids are time-sortable');
  const st2 = await apiOk(srv, 'GET', '/api/v1/spaces/sa/sync/status', {}, 200);
  assert.equal(st2.last_snapshot, m2.id);
});

test('create with Prefer: respond-async: 202 running + Location + Preference-Applied, then completed', async () => {
  await putSpace(srv, 'sasync');
  for (let i = 0; i < 20; i++) await put('sasync', 'c', `e${i}`, { i });
  const r = await api(srv, 'POST', snapPath('sasync'), { body: { note: 'async' }, headers: { Prefer: 'respond-async' } });
  assert.equal(r.status, 202, r.text);
  assert.match(r.headers['preference-applied'] || '', /respond-async/i, JSON.stringify(r.headers));
  assert.match(r.body.id, ULID_RE);
  assert.equal(r.headers.location, snapPath('sasync', r.body.id));
  assert.ok(['pending', 'running', 'completed'].includes(r.body.status), `status ${r.body.status}`);
  assert.equal(r.body.kind, 'manual');
  assert.equal(r.body.note, 'async');
  const m = await waitSnapshot(srv, 'sasync', r.body.id);
  checkCompletedMeta(m, { space: 'sasync', kind: 'manual' });
  assert.equal(m.entity_total, 20);
  assert.deepEqual(m.entity_counts, { c: 20 });
  const { body } = await downloadGz(srv, 'sasync', m.id);
  checkEntityLines(checkFileAgainstMeta(body, m));
});

test('download: gzip as stored (Content-Length, sha256, ETag) or inflated NDJSON (chunked); 304 on If-None-Match; HEAD', async () => {
  await putSpace(srv, 'sdl');
  // ids and collections chosen so byte order differs from a naive or
  // case-insensitive sort; one entity updated, one deleted
  const items = [
    ['zeta', 'a'], ['alpha', 'b'], ['alpha', 'B'], ['alpha', 'a.b'], ['alpha', 'a-b'], ['alpha', 'a~1'],
    ['alpha', 'A1'], ['alpha', '10'], ['alpha', '9'], ['alpha_2', 'x'], ['alpha2', 'x'], ['beta', 'gone'],
  ];
  for (const [c, id] of items) await put('sdl', c, id, { c, id, nested: { z: 1, a: [1, 'two', null, true] } });
  await put('sdl', 'alpha', 'b', { v: 2, text: 'updated ünïcödé' });
  await del('sdl', 'beta', 'gone');
  const m = await createSnapshot(srv, 'sdl');
  assert.equal(m.entity_total, items.length - 1);

  const gzr = await downloadGz(srv, 'sdl', m.id);
  assert.equal(gzr.headers['content-encoding'], 'gzip', JSON.stringify(gzr.headers));
  assert.match(gzr.headers['content-type'] || '', /^application\/x-ndjson/);
  assert.equal(Number(gzr.headers['content-length']), m.size_bytes, 'Content-Length = size_bytes');
  assert.equal(gzr.headers.etag, `"${m.sha256}"`);
  assert.equal(sha256(gzr.body), m.sha256, 'sha256 of the downloaded gzip');
  assert.deepEqual(gzr.body, readFileSync(snapFile(srv.dataDir, m.id)), 'the download is the stored file');
  // a client that asked for gzip decodes Content-Encoding: it ends up with NDJSON, and the name says so
  assert.equal(gzr.headers['content-disposition'], `attachment; filename="sdl-${m.id}.ndjson"`);
  assert.match(gzr.headers.vary || '', /accept-encoding/i, 'the representation depends on Accept-Encoding');

  const plain = await rawGet(srv, snapPath('sdl', m.id, '/download'));
  assert.equal(plain.status, 200);
  assert.equal(plain.headers['content-encoding'], undefined, `no Content-Encoding without Accept-Encoding: ${JSON.stringify(plain.headers)}`);
  assert.match(plain.headers['content-type'] || '', /^application\/x-ndjson/);
  assert.match(plain.headers['transfer-encoding'] || '', /chunked/i);
  assert.equal(plain.headers.etag, `"${m.sha256}"`);
  assert.deepEqual(plain.body, gunzipSync(gzr.body), 'inflated download = gunzip(stored file)');
  assert.equal(plain.headers['content-disposition'], `attachment; filename="sdl-${m.id}.ndjson"`);
  assert.match(plain.headers.vary || '', /accept-encoding/i);
  assert.equal(plain.body.length, m.raw_bytes);

  // Accept-Encoding without gzip -> inflated
  const id = await rawGet(srv, snapPath('sdl', m.id, '/download'), { headers: { 'Accept-Encoding': 'identity' } });
  assert.equal(id.status, 200);
  assert.equal(id.headers['content-encoding'], undefined);
  assert.deepEqual(id.body, plain.body);

  // file format
  const f = parseSnapshot(plain.body);
  assert.deepEqual(Object.keys(f.header).sort(), HEADER_KEYS, JSON.stringify(f.header));
  const st = await apiOk(srv, 'GET', '/api/v1/spaces/sdl/sync/status', {}, 200);
  const status = await apiOk(srv, 'GET', '/api/v1/status', {}, 200);
  assert.equal(f.header.format, 'snapsync.snapshot.v2');
  assert.equal(f.header.space, 'sdl');
  assert.equal(f.header.space_uid, st.space_uid);
  assert.equal(f.header.instance_id, status.instance_id);
  assert.equal(f.header.snapshot, m.id);
  assert.equal(f.header.server_version, m.server_version);
  assert.match(f.header.created_at, TIME_RE);
  checkEntityLines(f);
  // the exact expected order: (collection, id) in byte order
  const keys = f.entities.map((e) => `${e.collection}/${e.id}`);
  assert.deepEqual(keys, ['alpha/10', 'alpha/9', 'alpha/A1', 'alpha/B', 'alpha/a-b', 'alpha/a.b', 'alpha/a~1', 'alpha/b',
    'alpha2/x', 'alpha_2/x', 'zeta/a']);
  // = the live entities, exactly (rev, version, times, body, revs, conflicts as /changes?style=all_revs)
  const live = await liveState(srv, 'sdl', { allRevs: true });
  assert.equal(live.map.size, f.entities.length);
  for (const e of f.entities) {
    const l = live.map.get(`${e.collection}\u0000${e.id}`);
    assert.ok(l, `${e.collection}/${e.id} is live`);
    assert.deepEqual(e, l, `file line = live entity for ${e.collection}/${e.id}`);
  }

  // conditional GETs
  for (const hdrs of [{}, { 'Accept-Encoding': 'gzip' }]) {
    const nm = await rawGet(srv, snapPath('sdl', m.id, '/download'), { headers: { ...hdrs, 'If-None-Match': `"${m.sha256}"` } });
    assert.equal(nm.status, 304, `If-None-Match with the ETag (${JSON.stringify(hdrs)}) -> ${nm.status}`);
    assert.equal(nm.body.length, 0);
    const other = await rawGet(srv, snapPath('sdl', m.id, '/download'), { headers: { ...hdrs, 'If-None-Match': `"${'0'.repeat(64)}"` } });
    assert.equal(other.status, 200, 'another ETag -> the file');
  }

  // a weak comparison (W/) matches too
  const weak = await rawGet(srv, snapPath('sdl', m.id, '/download'), { headers: { 'If-None-Match': `W/"${m.sha256}"` } });
  assert.equal(weak.status, 304, 'If-None-Match: W/"<sha256>"');

  // HEAD: the headers without a body
  const h = await rawGet(srv, snapPath('sdl', m.id, '/download'), { method: 'HEAD', headers: { 'Accept-Encoding': 'gzip' } });
  assert.equal(h.status, 200);
  assert.equal(h.body.length, 0);
  assert.equal(h.headers.etag, `"${m.sha256}"`);
});

// RFC 9110 §13.1.2: If-None-Match is a list, and * matches any current
// representation (GET of an entity already answers 304 to both).
test('download: If-None-Match with a list holding the ETag, or *, -> 304', async () => {
  await putSpace(srv, 'sinm');
  await put('sinm', 'c', 'x', { n: 1 });
  const m = await createSnapshot(srv, 'sinm');
  const e = await apiOk(srv, 'GET', '/api/v1/spaces/sinm/collections/c/entities/x', {}, 200);
  const got = {};
  for (const inm of [`"${'0'.repeat(64)}", "${m.sha256}"`, '*']) {
    const ent = await api(srv, 'GET', '/api/v1/spaces/sinm/collections/c/entities/x', { headers: { 'If-None-Match': inm.replace(`"${m.sha256}"`, `"${e.rev}"`) } });
    assert.equal(ent.status, 304, `entity GET with If-None-Match: ${inm} (reference behaviour)`);
    for (const hdrs of [{}, { 'Accept-Encoding': 'gzip' }]) {
      const r = await rawGet(srv, snapPath('sinm', m.id, '/download'), { headers: { ...hdrs, 'If-None-Match': inm } });
      got[`${inm.slice(0, 12)} ${JSON.stringify(hdrs)}`] = r.status;
    }
  }
  assert.deepEqual(Object.values(got), [304, 304, 304, 304], JSON.stringify(got));
});

test('empty space: a snapshot holds only the header', async () => {
  await putSpace(srv, 'sempty');
  const m = await createSnapshot(srv, 'sempty');
  assert.equal(m.entity_total, 0);
  assert.deepEqual(m.entity_counts, {});
  const { body } = await downloadGz(srv, 'sempty', m.id);
  const f = checkFileAgainstMeta(body, m);
  assert.equal(f.entities.length, 0);
  assert.equal(f.header.server_version, 0);
});

test('list: newest first, kind/status filters, limit + cursor paging, bad kind -> 400', async () => {
  await putSpace(srv, 'slist');
  await put('slist', 'c', 'x', { n: 1 });
  const made = [];
  for (let i = 0; i < 7; i++) made.push((await createSnapshot(srv, 'slist', { note: `n${i}` })).id);
  const all = await listAll(srv, 'slist');
  assert.deepEqual(all.map((s) => s.id), [...made].reverse(), 'newest first, every snapshot once');
  for (const s of all) checkCompletedMeta(s, { space: 'slist', kind: 'manual' });

  // paging with limit=3
  const seen = [];
  let cursor = null;
  let pages = 0;
  do {
    const b = await apiOk(srv, 'GET', `${snapPath('slist')}?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, {}, 200);
    assert.ok(b.snapshots.length <= 3, `limit honoured: ${b.snapshots.length}`);
    assert.ok('next_cursor' in b, 'next_cursor present');
    seen.push(...b.snapshots.map((s) => s.id));
    cursor = b.next_cursor;
    pages++;
    assert.ok(pages < 10, 'paging ends');
  } while (cursor !== null);
  assert.deepEqual(seen, [...made].reverse(), 'pages concatenate to the full list');
  assert.equal(pages, 3);

  // filters
  assert.deepEqual((await listAll(srv, 'slist', 'kind=manual')).map((s) => s.id), [...made].reverse());
  assert.deepEqual(await listAll(srv, 'slist', 'kind=scheduled'), []);
  assert.deepEqual(await listAll(srv, 'slist', 'kind=imported'), []);
  assert.equal((await listAll(srv, 'slist', 'status=completed')).length, 7);
  assert.deepEqual(await listAll(srv, 'slist', 'status=failed'), []);
  for (const q of ['kind=bogus', 'status=bogus', 'limit=0', 'limit=1001', 'limit=abc']) {
    const bad = await api(srv, 'GET', `${snapPath('slist')}?${q}`);
    assert.equal(bad.status, 400, `?${q} -> ${bad.status} ${bad.text.slice(0, 200)}`);
    checkError(assert, bad, 400, bad.body?.error, `?${q}`);
  }
  // a bad create body: not JSON, note not a string
  checkError(assert, await api(srv, 'POST', snapPath('slist'), { body: '{"note": ' }), 400, 'invalid_json', 'create with broken JSON');
  const nn = await api(srv, 'POST', snapPath('slist'), { body: { note: 5 } });
  assert.equal(nn.status, 400, `note: 5 -> ${nn.status} ${nn.text}`);
  assert.equal((await listAll(srv, 'slist')).length, 7, 'refused creations left nothing');
  // other spaces' snapshots are not listed
  await putSpace(srv, 'slist2');
  assert.deepEqual(await listAll(srv, 'slist2'), []);
});

test('404s: malformed and unknown ids, another space\'s snapshot, unknown space', async () => {
  await putSpace(srv, 's404');
  await putSpace(srv, 's404b');
  await put('s404', 'c', 'x', { n: 1 });
  const m = await createSnapshot(srv, 's404');
  const unknown = '01ARZ3NDEKTSV4RRFFQ69G5FAV';
  const malformed = ['nope', '..', '01ARZ3NDEKTSV4RRFFQ69G5FA', `${m.id}x`, '%2e%2e', m.id.toLowerCase().replace(/./, 'u')];
  for (const id of [unknown, ...malformed]) {
    for (const [method, tail, body] of [['GET', ''], ['GET', '/download'], ['GET', '/preview'],
      ['POST', '/restore', { confirm: id }], ['DELETE', '']]) {
      const r = await api(srv, method, snapPath('s404', id, tail), body ? { body } : {});
      assert.equal(r.status, 404, `${method} ${snapPath('s404', id, tail)} -> ${r.status} ${r.text}`);
      assert.equal(typeof r.body?.error, 'string', `error body for ${method} ${tail} ${id}`);
    }
  }
  // the snapshot exists, but in another space
  for (const tail of ['', '/download', '/preview']) {
    const r = await api(srv, 'GET', snapPath('s404b', m.id, tail));
    assert.equal(r.status, 404, `GET ${snapPath('s404b', m.id, tail)} -> ${r.status} ${r.text.slice(0, 200)}`);
  }
  const rr = await api(srv, 'POST', snapPath('s404b', m.id, '/restore'), { body: { confirm: m.id } });
  assert.equal(rr.status, 404, `restore via another space -> ${rr.status} ${rr.text}`);
  const dd = await api(srv, 'DELETE', snapPath('s404b', m.id));
  assert.equal(dd.status, 404, `delete via another space -> ${dd.status}`);
  assert.equal((await api(srv, 'GET', snapPath('s404', m.id))).status, 200, 'still there');
  // unknown space
  for (const [method, p] of [['GET', snapPath('nosuch')], ['POST', snapPath('nosuch')], ['GET', snapPath('nosuch', m.id)]]) {
    const r = await api(srv, method, p, method === 'POST' ? { body: {} } : {});
    assert.equal(r.status, 404, `${method} ${p} -> ${r.status} ${r.text}`);
  }
});

test('delete: 204, file removed, gone from GET/list/download, second delete 404', async () => {
  await putSpace(srv, 'sdel');
  await put('sdel', 'c', 'x', { n: 1 });
  const a = await createSnapshot(srv, 'sdel');
  const b = await createSnapshot(srv, 'sdel');
  assert.ok(existsSync(snapFile(srv.dataDir, b.id)));
  const r = await api(srv, 'DELETE', snapPath('sdel', b.id));
  assert.equal(r.status, 204, r.text);
  assert.equal(r.text, '');
  // the file goes (the server may unlink it just after answering)
  await until(() => !existsSync(snapFile(srv.dataDir, b.id)), { timeoutMs: 2000, every: 20, what: `file of ${b.id} removed; have ${snapFiles(srv.dataDir)}` });
  assert.ok(existsSync(snapFile(srv.dataDir, a.id)), 'the other file stays');
  assert.equal((await api(srv, 'GET', snapPath('sdel', b.id))).status, 404);
  assert.equal((await rawGet(srv, snapPath('sdel', b.id, '/download'))).status, 404);
  assert.deepEqual((await listAll(srv, 'sdel')).map((s) => s.id), [a.id]);
  assert.equal((await api(srv, 'DELETE', snapPath('sdel', b.id))).status, 404);
  await apiOk(srv, 'DELETE', snapPath('sdel', a.id), {}, 204);
  assert.deepEqual(await listAll(srv, 'sdel'), []);
  await until(() => !existsSync(snapFile(srv.dataDir, a.id)), { timeoutMs: 2000, every: 20, what: `file of ${a.id} removed` });
});

// Read-your-writes: the status read right after the 204 must already be
// right (observed: null for a moment after deleting the newest snapshot,
// then the right id; so the check is repeated to catch the window).
test('sync/status last_snapshot follows deletes at once: deleting the newest falls back to the next newest completed one, then null', {
}, async () => {
  const wrong = [];
  for (let round = 0; round < 30; round++) {
    const sp = `slast${round}`;
    await putSpace(srv, sp);
    await put(sp, 'c', 'x', { n: 1 });
    const a = await createSnapshot(srv, sp);
    const b = await createSnapshot(srv, sp);
    const c = await createSnapshot(srv, sp);
    const last = async () => (await apiOk(srv, 'GET', `/api/v1/spaces/${sp}/sync/status`, {}, 200)).last_snapshot;
    if (await last() !== c.id) wrong.push(`${sp}: after 3 creations`);
    await apiOk(srv, 'DELETE', snapPath(sp, c.id), {}, 204);          // the newest
    const l1 = await last();
    if (l1 !== b.id) wrong.push(`${sp}: after deleting the newest: ${l1}, want ${b.id}`);
    await apiOk(srv, 'DELETE', snapPath(sp, a.id), {}, 204);          // an older one
    const l2 = await last();
    if (l2 !== b.id) wrong.push(`${sp}: after deleting an older one: ${l2}, want ${b.id}`);
    await apiOk(srv, 'DELETE', snapPath(sp, b.id), {}, 204);          // the last one
    const l3 = await last();
    if (l3 !== null) wrong.push(`${sp}: after deleting all: ${l3}, want null`);
    // and the list agrees with sync/status once things settle
    assert.deepEqual(await listAll(srv, sp), []);
  }
  assert.deepEqual(wrong, [], `${wrong.length} wrong last_snapshot reads`);
});

test('roles: readers and writers read snapshots but may not create, restore, import or delete; operators may', async () => {
  await putSpace(srv, 'srole');
  await putSpace(srv, 'srole2');
  await put('srole', 'c', 'x', { n: 1 });
  const m = await createSnapshot(srv, 'srole');
  const reader = (await createKey(srv, 'reader', ['srole'], 'snap-reader')).token;
  const writer = (await createKey(srv, 'writer', ['srole'], 'snap-writer')).token;
  const operator = (await createKey(srv, 'operator', ['srole'], 'snap-op')).token;
  const gz = (await downloadGz(srv, 'srole', m.id)).body;

  for (const [who, tok] of [['reader', reader], ['writer', writer], ['operator', operator]]) {
    assert.equal((await api(srv, 'GET', snapPath('srole'), { token: tok })).status, 200, `${who} list`);
    assert.equal((await api(srv, 'GET', snapPath('srole', m.id), { token: tok })).status, 200, `${who} get`);
    assert.equal((await api(srv, 'GET', snapPath('srole', m.id, '/preview'), { token: tok })).status, 200, `${who} preview`);
    const d = await downloadGz(srv, 'srole', m.id, { token: tok });
    assert.equal(sha256(d.body), m.sha256, `${who} download`);
  }
  for (const [who, tok] of [['reader', reader], ['writer', writer]]) {
    const c = await api(srv, 'POST', snapPath('srole'), { token: tok, body: {} });
    checkError(assert, c, 403, 'forbidden', `${who} create`);
    const rs = await api(srv, 'POST', snapPath('srole', m.id, '/restore'), { token: tok, body: { confirm: m.id } });
    checkError(assert, rs, 403, 'forbidden', `${who} restore`);
    const im = await api(srv, 'POST', snapPath('srole', 'import'), { token: tok, body: gz, headers: { 'Content-Type': 'application/gzip' } });
    checkError(assert, im, 403, 'forbidden', `${who} import`);
    const dl = await api(srv, 'DELETE', snapPath('srole', m.id), { token: tok });
    checkError(assert, dl, 403, 'forbidden', `${who} delete`);
  }
  // no key -> 401
  checkError(assert, await api(srv, 'GET', snapPath('srole'), { token: null }), 401, 'unauthorized', 'list without a key');
  checkError(assert, await api(srv, 'POST', snapPath('srole'), { token: null, body: {} }), 401, 'unauthorized', 'create without a key');
  // the operator limited to srole: not srole2
  checkError(assert, await api(srv, 'POST', snapPath('srole2'), { token: operator, body: {} }), 403, 'forbidden', 'operator of another space');
  checkError(assert, await api(srv, 'GET', snapPath('srole2'), { token: reader }), 403, 'forbidden', 'reader of another space');
  assert.deepEqual(await listAll(srv, 'srole2'), [], 'nothing was created in srole2');
  // the operator may create, restore and delete
  const om = await createSnapshot(srv, 'srole', {}, { token: operator });
  assert.notEqual(om.created_by, adminId, 'created_by is the operator key');
  const rs = await api(srv, 'POST', snapPath('srole', m.id, '/restore'), { token: operator, body: { confirm: m.id } });
  assert.equal(rs.status, 200, rs.text);
  assert.equal((await api(srv, 'DELETE', snapPath('srole', om.id), { token: operator })).status, 204);
  // the 403s changed nothing
  const kinds = (await listAll(srv, 'srole')).map((s) => s.kind).sort();
  assert.deepEqual(kinds, ['manual', 'pre_restore'], 'only the admin snapshot and the operator restore\'s pre_restore remain');
});

test('audit: snapshot.create, snapshot.restore and snapshot.delete are recorded with the space and target', async () => {
  await putSpace(srv, 'saud');
  await put('saud', 'c', 'x', { n: 1 });
  const m = await createSnapshot(srv, 'saud');
  await put('saud', 'c', 'x', { n: 2 });
  const rs = await apiOk(srv, 'POST', snapPath('saud', m.id, '/restore'), { body: { confirm: m.id } }, 200);
  await apiOk(srv, 'DELETE', snapPath('saud', rs.pre_restore_snapshot), {}, 204);
  const find = async (action, target) => until(async () => {
    const b = await apiOk(srv, 'GET', `/api/v1/audit?action=${action}&space=saud&limit=1000`, {}, 200);
    return b.entries.find((e) => e.target === target && e.space === 'saud');
  }, { timeoutMs: 3000, what: `${action} audit entry for ${target}` });
  const c = await find('snapshot.create', m.id);
  assert.equal(c.actor, adminId);
  assert.equal(c.action, 'snapshot.create');
  const r = await find('snapshot.restore', m.id);
  assert.equal(r.actor, adminId);
  const d = await find('snapshot.delete', rs.pre_restore_snapshot);
  assert.equal(d.actor, adminId);
  // the audit filter is exact: no snapshot.delete entry for m
  const dels = (await apiOk(srv, 'GET', '/api/v1/audit?action=snapshot.delete&space=saud&limit=1000', {}, 200)).entries;
  assert.ok(dels.every((e) => e.action === 'snapshot.delete'));
  assert.ok(!dels.some((e) => e.target === m.id), 'm was not deleted');
});

test('rate limit: --snapshot-rate 2 -> the third creation in a minute is 429 rate_limited with Retry-After; per key and space', async (t) => {
  const s = await withServer(t, { args: ['--snapshot-rate', '2'] });
  await putSpace(s, 'r1');
  await putSpace(s, 'r2');
  await apiOk(s, 'PUT', '/api/v1/spaces/r1/collections/c/entities/x', { body: { n: 1 } });
  const op = (await apiOk(s, 'POST', '/api/v1/keys', { body: { role: 'operator', spaces: ['*'], name: 'op' } }, 201)).token;
  assert.equal((await api(s, 'POST', snapPath('r1'), { body: {} })).status, 201);
  assert.equal((await api(s, 'POST', snapPath('r1'), { body: {} })).status, 201);
  const third = await api(s, 'POST', snapPath('r1'), { body: {} });
  checkError(assert, third, 429, 'rate_limited', 'third snapshot in a minute');
  const ra = third.headers['retry-after'];
  assert.match(ra || '', /^\d+$/, `Retry-After: ${ra}`);
  assert.ok(Number(ra) >= 1 && Number(ra) <= 60, `Retry-After within the minute: ${ra}`);
  const n = (await listAll(s, 'r1')).length;
  assert.equal(n, 2, 'the refused creation left no snapshot');
  // audited like the other denials (request.denied, with the status)
  const adminKey = (await apiOk(s, 'GET', '/api/v1/keys?limit=1000')).keys.find((k) => k.role === 'admin').id;
  const denied = await until(async () => (await apiOk(s, 'GET', '/api/v1/audit?action=request.denied&space=r1&limit=1000', {}, 200))
    .entries.find((e) => e.meta?.status === 429), { timeoutMs: 3000, what: 'a request.denied audit entry for the 429' });
  assert.equal(denied.actor, adminKey, JSON.stringify(denied));
  assert.equal(denied.space, 'r1', JSON.stringify(denied));
  assert.equal(denied.target, 'POST snapshot_create', JSON.stringify(denied));
  assert.ok(denied.remote_addr, `remote_addr ${JSON.stringify(denied)}`);
  assert.equal((await apiOk(s, 'GET', '/api/v1/audit?action=snapshot.create&space=r1&limit=1000', {}, 200)).entries.length, 2,
    'no snapshot.create entry for the refused one');
  // other space, same key: allowed; other key, same space: allowed
  assert.equal((await api(s, 'POST', snapPath('r2'), { body: {} })).status, 201, 'another space has its own budget');
  assert.equal((await api(s, 'POST', snapPath('r1'), { body: {}, token: op })).status, 201, 'another key has its own budget');
  // reads are not limited
  assert.equal((await api(s, 'GET', snapPath('r1'))).status, 200);
});

test('snapsync verify: valid file -> exit 0 and a JSON line; flipped byte or truncated -> exit 1 INVALID', async (t) => {
  await putSpace(srv, 'sver');
  const items = [];
  for (let i = 0; i < 300; i++) items.push(put('sver', i % 2 ? 'odd' : 'even', `e${String(i).padStart(4, '0')}`, { i, s: `value ${i} `.repeat(5) }));
  await Promise.all(items);
  const m = await createSnapshot(srv, 'sver');
  const src = snapFile(srv.dataDir, m.id);
  const d = tmpDir(t);

  const ok = await runCli(['verify', src]);
  assert.equal(ok.code, 0, `verify exit ${ok.code}\nstdout ${ok.stdout}\nstderr ${ok.stderr}`);
  const line = ok.stdout.split('\n').find((l) => l.trim().startsWith('{'));
  assert.ok(line, `a JSON line on stdout: ${ok.stdout}`);
  const j = JSON.parse(line);
  assert.equal(j.valid, true);
  assert.equal(j.file, src);
  assert.equal(j.space, 'sver');
  assert.equal(j.entity_total, 300);
  assert.equal(j.sha256, m.sha256);

  const gz = readFileSync(src);
  const cases = {
    flipped: flipByte(gz),
    truncated: gz.subarray(0, Math.floor(gz.length * 0.6)),
    garbage: Buffer.from('this is not a snapshot\n'),
    empty: Buffer.alloc(0),
  };
  for (const [name, buf] of Object.entries(cases)) {
    const f = path.join(d, `${name.replace(/ /g, '_')}.ndjson.gz`);
    writeFileSync(f, buf);
    const r = await runCli(['verify', f]);
    assert.equal(r.code, 1, `${name}: exit ${r.code}\nstdout ${r.stdout}\nstderr ${r.stderr}`);
    assert.match(r.stdout + r.stderr, /INVALID/, `${name}: message says INVALID\nstdout ${r.stdout}\nstderr ${r.stderr}`);
  }
  const missing = await runCli(['verify', path.join(d, 'nope.ndjson.gz')]);
  assert.notEqual(missing.code, 0, 'a missing file is not valid');
  // the original is still fine (verify never changes a file)
  assert.equal(sha256(readFileSync(src)), m.sha256);
});

// A gzip file must end with its end-of-stream block and the CRC32 + ISIZE
// trailer (RFC 1952); node:zlib refuses all of these cuts.
test('snapsync verify: a file cut short by its last 1..10 bytes (gzip end or trailer missing) -> exit 1 INVALID', async (t) => {
  await putSpace(srv, 'sver2');
  await Promise.all(Array.from({ length: 50 }, (_, i) => put('sver2', 'c', `e${i}`, { i })));
  const m = await createSnapshot(srv, 'sver2');
  const gz = readFileSync(snapFile(srv.dataDir, m.id));
  const d = tmpDir(t);
  const bad = [];
  for (const cut of [1, 4, 5, 8, 10]) {
    const buf = gz.subarray(0, gz.length - cut);
    assert.throws(() => gunzipSync(buf), `node:zlib refuses the file without its last ${cut} bytes`);
    const f = path.join(d, `cut${cut}.ndjson.gz`);
    writeFileSync(f, buf);
    const r = await runCli(['verify', f]);
    if (r.code !== 1 || !/INVALID/.test(r.stdout + r.stderr)) bad.push(`cut ${cut}: exit ${r.code} ${r.stdout.trim()} ${r.stderr.trim()}`);
  }
  assert.deepEqual(bad, [], 'every cut file is INVALID');
});

test('concurrent creations on different spaces all complete; the server keeps answering', async () => {
  const spaces = ['sc1', 'sc2', 'sc3', 'sc4'];
  for (const s of spaces) {
    await putSpace(srv, s);
    await Promise.all(Array.from({ length: 30 }, (_, i) => put(s, 'c', `e${i}`, { s, i })));
  }
  const ms = await Promise.all(spaces.map((s) => createSnapshot(srv, s)));
  for (const [i, m] of ms.entries()) {
    checkCompletedMeta(m, { space: spaces[i], kind: 'manual' });
    assert.equal(m.entity_total, 30);
    const f = checkFileAgainstMeta((await downloadGz(srv, spaces[i], m.id)).body, m);
    assert.ok(f.entities.every((e) => e.body.s === spaces[i]), 'each file holds its own space');
  }
  for (const s of spaces) assert.equal((await apiOk(srv, 'GET', `/api/v1/spaces/${s}/sync/status`, {}, 200)).last_snapshot, ms[spaces.indexOf(s)].id);
});

test('restart: the first request after a restart already knows the last snapshot and the peers (the server listens once they are loaded)', async (t) => {
  let a = await startServer({ keepData: true });
  const dataDir = a.dataDir;
  t.after(async () => { await a.stop().catch(() => {}); rmSync(dataDir, { recursive: true, force: true }); });
  await putSpace(a, 'rs');
  await apiOk(a, 'PUT', '/api/v1/spaces/rs/collections/c/entities/x', { body: { x: 1 } }, 201);
  const s = await createSnapshot(a, 'rs');
  assert.equal(s.status, 'completed');
  assert.equal((await api(a, 'PUT', '/api/v1/spaces/rs/peers/p', {
    body: { url: 'http://127.0.0.1:9', space: 'rs', token: 'sk_none', direction: 'pull', every_seconds: 0 },
  })).status, 201);
  assert.deepEqual(await a.stop(), { code: 0, signal: null });
  for (let i = 0; i < 3; i++) {
    // the hook holds both startup loads 300 ms on the pool
    const b = a = await startServer({ dataDir, env: { SNAPSYNC_TEST_LOAD_DELAY_MS: '300' } });
    // no wait of any kind: the very first answers
    const [sp, st, pe] = await Promise.all([
      apiOk(b, 'GET', '/api/v1/spaces/rs', {}, 200),
      apiOk(b, 'GET', '/api/v1/spaces/rs/sync/status', {}, 200),
      apiOk(b, 'GET', '/api/v1/spaces/rs/peers', {}, 200),
    ]);
    assert.equal(sp.last_snapshot, s.id, `GET space after restart ${i}`);
    assert.equal(st.last_snapshot, s.id, `sync/status after restart ${i}`);
    assert.deepEqual(pe.peers.map((p) => p.name), ['p'], `peers after restart ${i}`);
    assert.deepEqual(await b.stop(), { code: 0, signal: null });
  }
});
