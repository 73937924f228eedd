// entities.test.mjs - SPEC §5 entities: PUT/GET/DELETE, canonical bodies,
// revs and versions, If-Match / If-None-Match, tombstones, listing and
// paging, collections, body validation and name validation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, withServer, api, apiOk, putSpace, checkError, rawRequest, parseResponses,
} from './helpers.mjs';

const TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const REV_RE = /^(\d+)-[0-9a-f]{16}$/;
const ENTITY_KEYS = ['body', 'collection', 'created_at', 'deleted', 'id', 'rev', 'updated_at', 'version'];
const SP = 'ent';
const E = (c, id) => `/api/v1/spaces/${SP}/collections/${c}/entities/${id}`;
const revN = (rev) => Number(REV_RE.exec(rev)?.[1]);

let srv;
before(async () => {
  srv = await startServer({ args: ['--max-body-bytes', '4096'] });
  await putSpace(srv, SP);
});
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

function checkEntity(e, { collection, id, deleted = false } = {}) {
  const w = JSON.stringify(e);
  assert.deepEqual(Object.keys(e).sort(), ENTITY_KEYS, w);
  if (collection) assert.equal(e.collection, collection, w);
  if (id) assert.equal(e.id, id, w);
  assert.match(e.rev, REV_RE, `rev ${w}`);
  assert.ok(Number.isInteger(e.version) && e.version > 0, `version ${w}`);
  assert.match(e.created_at, TIME_RE, w);
  assert.match(e.updated_at, TIME_RE, w);
  assert.ok(Date.parse(e.updated_at) >= Date.parse(e.created_at), `updated_at >= created_at ${w}`);
  assert.equal(e.deleted, deleted, w);
  if (deleted) assert.equal(e.body, null, w);
  else assert.ok(e.body && typeof e.body === 'object' && !Array.isArray(e.body), w);
}

async function spaceVersion() {
  return (await apiOk(srv, 'GET', `/api/v1/spaces/${SP}`)).server_version;
}

test('PUT creates (201, ETag, entity), GET reads it back; the body is stored canonical', async () => {
  const v0 = await spaceVersion();
  const raw = '{ "b": 1,\n "a": {"z": [3, {"y": null, "x": true}], "m": "é\\u00e9"}, "c": -0.5 }';
  const r = await api(srv, 'PUT', E('notes', 'n1'), { body: raw });
  assert.equal(r.status, 201, r.text);
  assert.match(r.headers['content-type'] || '', /^application\/json/);
  checkEntity(r.body, { collection: 'notes', id: 'n1' });
  assert.equal(revN(r.body.rev), 1);
  assert.equal(r.headers.etag, `"${r.body.rev}"`);
  assert.equal(r.body.version, v0 + 1);
  assert.equal(r.body.created_at, r.body.updated_at);
  // canonical: keys sorted at every level, minified
  const canon = '{"a":{"m":"éé","z":[3,{"x":true,"y":null}]},"b":1,"c":-0.5}';
  assert.ok(r.text.includes(`"body":${canon}`), `canonical body in ${r.text}`);

  const g = await api(srv, 'GET', E('notes', 'n1'));
  assert.equal(g.status, 200, g.text);
  assert.deepEqual(g.body, r.body);
  assert.equal(g.headers.etag, `"${r.body.rev}"`);
  assert.ok(g.text.includes(`"body":${canon}`), `canonical body in ${g.text}`);
  assert.deepEqual(Object.keys(g.body.body), ['a', 'b', 'c']);

  const simple = await api(srv, 'PUT', E('notes', 'n-simple'), { body: '{"b":1,"a":2}' });
  assert.equal(simple.status, 201);
  assert.ok(simple.text.includes('"body":{"a":2,"b":1}'), simple.text);
});

test('tricky JSON values round-trip (strings, escapes, unicode, numbers)', async () => {
  const bodies = [
    { s: 'a/b"\\\n\t\u001f\u007f\u0000\u2028\u{1F600}é', empty: '' },
    { n: 0.1, m: -1.5e-7, k: 1e21, big: 9007199254740991, neg: -42, z: 0, f: 3.14159, e: 2.5e-300 },
    { 'ключ': 'значение', '': 'empty key' },
    { nested: { a: [[], {}, [null, false, true, 0, '']] } },
  ];
  for (const [i, b] of bodies.entries()) {
    const r = await api(srv, 'PUT', E('tricky', `t${i}`), { body: b });
    assert.equal(r.status, 201, r.text);
    assert.deepStrictEqual(r.body.body, b, `PUT answer ${i}`);
    assert.deepStrictEqual((await apiOk(srv, 'GET', E('tricky', `t${i}`))).body, b, `GET ${i}`);
  }
  // a lone surrogate and numbers no double can hold are refused, not mangled
  for (const raw of ['{"s":"\\ud83d"}', '{"n":1e400}', '{"n":123456789012345678901234567890}']) {
    const r = await api(srv, 'PUT', E('tricky', 'bad'), { body: raw });
    assert.ok(r.status === 400 || r.status === 201, `${raw}: ${r.status} ${r.text}`);
    if (r.status === 400) assert.equal(r.body.error, 'invalid_json', r.text);
  }
});

test('object keys containing NUL are refused clearly (documented choice), strings may hold NUL', async () => {
  // snapsync refuses \u0000 inside object keys (docs/api.md): jansson (which
  // reads control bodies and a merge body) cannot keep such keys apart, and
  // one rule for every path beats two behaviours. NUL inside string values
  // is fine.
  for (const raw of ['{"":1,"\\u0000k":2}', '{"a":1,"a\\u0000b":2}', '{"o":{"x\\u0000y":1,"x":2}}']) {
    const r = await api(srv, 'PUT', E('tricky', 'nulkeys'), { body: raw });
    assert.equal(r.status, 400, `${raw}: ${r.status} ${r.text}`);
    assert.equal(r.body.error, 'invalid_json', r.text);
    assert.match(r.body.message, /keys may not contain/, r.text);
  }
  const ok = await api(srv, 'PUT', E('tricky', 'nulvalue'), { body: '{"k":"a\\u0000b"}' });
  assert.equal(ok.status, 201, ok.text);
  assert.equal(ok.body.body.k, 'a\u0000b');
  // the same rule through POST /changes
  const p = await api(srv, 'POST', `/api/v1/spaces/${SP}/changes`, {
    body: '{"changes":[{"collection":"tricky","id":"nulpush","base_rev":null,"body":{"a\\u0000b":1}}]}' });
  // the push document itself is refused (one parser for both: the same
  // message as the PUT), nothing applied
  assert.equal(p.status, 400, p.text);
  assert.equal(p.body.error, 'invalid_json', p.text);
  assert.match(p.body.message, /keys may not contain/, p.text);
});

test('PUT updates: 200, rev N+1, next version, created_at kept; same content -> same rev, no new version', async () => {
  const c = await apiOk(srv, 'PUT', E('notes', 'u1'), { body: { v: 1 } }, 201);
  const u = await api(srv, 'PUT', E('notes', 'u1'), { body: { v: 2 } });
  assert.equal(u.status, 200, u.text);
  checkEntity(u.body, { collection: 'notes', id: 'u1' });
  assert.equal(revN(u.body.rev), 2);
  assert.notEqual(u.body.rev, c.rev);
  assert.ok(u.body.version > c.version);
  assert.equal(u.body.created_at, c.created_at);
  assert.deepEqual(u.body.body, { v: 2 });
  assert.equal(u.headers.etag, `"${u.body.rev}"`);

  const v = await spaceVersion();
  // the same content, even with another key order or whitespace: no new edit
  const same = await api(srv, 'PUT', E('notes', 'u1'), { body: '{ "v" : 2 }' });
  assert.equal(same.status, 200, same.text);
  assert.equal(same.body.rev, u.body.rev);
  assert.equal(same.body.version, u.body.version);
  assert.equal(await spaceVersion(), v, 'a no-op PUT took a version');
  const m = await apiOk(srv, 'PUT', E('notes', 'u2'), { body: { a: 1, b: 2 } }, 201);
  const m2 = await api(srv, 'PUT', E('notes', 'u2'), { body: '{"b":2,"a":1}' });
  assert.equal(m2.status, 200);
  assert.equal(m2.body.rev, m.rev, 'key order is not content');
  assert.equal(m2.body.version, m.version);

  // versions strictly increase across entities
  const a = await apiOk(srv, 'PUT', E('notes', 'u3'), { body: { n: 1 } });
  const b = await apiOk(srv, 'PUT', E('other', 'u3'), { body: { n: 1 } });
  assert.equal(b.version, a.version + 1);
  // the rev depends on parent and content: three edits, three distinct revs
  const r3 = await apiOk(srv, 'PUT', E('notes', 'u3'), { body: { n: 2 } });
  const r4 = await apiOk(srv, 'PUT', E('notes', 'u3'), { body: { n: 1 } });
  assert.deepEqual([revN(a.rev), revN(r3.rev), revN(r4.rev)], [1, 2, 3]);
  assert.notEqual(r4.rev.split('-')[1], a.rev.split('-')[1], 'same body, other parent: other hash');
});

test('If-Match: match -> 200, mismatch -> 409 conflict with current_rev; If-None-Match: * -> 412 on a live entity', async () => {
  const c = await apiOk(srv, 'PUT', E('cond', 'c1'), { body: { v: 1 } }, 201);
  const ok = await api(srv, 'PUT', E('cond', 'c1'), { body: { v: 2 }, headers: { 'If-Match': `"${c.rev}"` } });
  assert.equal(ok.status, 200, ok.text);
  const stale = await api(srv, 'PUT', E('cond', 'c1'), { body: { v: 3 }, headers: { 'If-Match': `"${c.rev}"` } });
  const b = checkError(assert, stale, 409, 'conflict', 'stale If-Match');
  assert.equal(b.current_rev, ok.body.rev);
  const bogus = await api(srv, 'PUT', E('cond', 'c1'), { body: { v: 3 }, headers: { 'If-Match': '"9-0000000000000000"' } });
  assert.equal(checkError(assert, bogus, 409, 'conflict', 'bogus If-Match').current_rev, ok.body.rev);
  assert.deepEqual((await apiOk(srv, 'GET', E('cond', 'c1'))).body, { v: 2 }, 'a refused PUT changed the entity');

  // If-Match on an absent entity cannot match
  const absent = await api(srv, 'PUT', E('cond', 'nope'), { body: { v: 1 }, headers: { 'If-Match': `"${c.rev}"` } });
  assert.ok([404, 409, 412].includes(absent.status), `If-Match on an absent entity: ${absent.status} ${absent.text}`);
  checkError(assert, await api(srv, 'GET', E('cond', 'nope')), 404, 'not_found', 'nothing created');

  const inm = await api(srv, 'PUT', E('cond', 'c1'), { body: { v: 9 }, headers: { 'If-None-Match': '*' } });
  checkError(assert, inm, 412, 'already_exists', 'If-None-Match: * on a live entity');
  const fresh = await api(srv, 'PUT', E('cond', 'c2'), { body: { v: 1 }, headers: { 'If-None-Match': '*' } });
  assert.equal(fresh.status, 201, fresh.text);
  // on a deleted entity it may be created again
  await apiOk(srv, 'DELETE', E('cond', 'c2'));
  const again = await api(srv, 'PUT', E('cond', 'c2'), { body: { v: 2 }, headers: { 'If-None-Match': '*' } });
  assert.ok([200, 201].includes(again.status), `If-None-Match: * on a tombstone: ${again.status} ${again.text}`);
  assert.equal(revN(again.body.rev), 3, 'create, delete, re-create: edit 3');
  assert.deepEqual(again.body.body, { v: 2 });
});

// SPEC §5 names the headers; their meaning is HTTP's (RFC 9110 §13.1).
test('conditional headers, RFC 9110: If-Match: * proceeds on a live entity; If-None-Match takes a list', async () => {
  const e = await apiOk(srv, 'PUT', E('rfc', 'r1'), { body: { v: 1 } }, 201);
  const star = await api(srv, 'PUT', E('rfc', 'r1'), { body: { v: 2 }, headers: { 'If-Match': '*' } });
  assert.equal(star.status, 200, `If-Match: * on a live entity: ${star.status} ${star.text}`);
  const cur = star.status === 200 ? star.body : e;
  const absent = await api(srv, 'PUT', E('rfc', 'r-absent'), { body: { v: 1 }, headers: { 'If-Match': '*' } });
  assert.ok([409, 412].includes(absent.status), `If-Match: * on an absent entity: ${absent.status} ${absent.text}`);
  const list = await api(srv, 'GET', E('rfc', 'r1'), { headers: { 'If-None-Match': `"0-0000000000000000", "${cur.rev}"` } });
  assert.equal(list.status, 304, `If-None-Match with a list holding the current rev: ${list.status}`);
  const anyInm = await api(srv, 'GET', E('rfc', 'r1'), { headers: { 'If-None-Match': '*' } });
  assert.equal(anyInm.status, 304);
  const listIm = await api(srv, 'PUT', E('rfc', 'r1'), { body: { v: 3 }, headers: { 'If-Match': `"0-0000000000000000", "${cur.rev}"` } });
  assert.equal(listIm.status, 200, `If-Match with a list holding the current rev: ${listIm.status} ${listIm.text}`);
});

test('GET: 404 not_found when absent or deleted; include_deleted=1 shows the tombstone; If-None-Match -> 304', async () => {
  checkError(assert, await api(srv, 'GET', E('g', 'absent')), 404, 'not_found', 'absent');
  const c = await apiOk(srv, 'PUT', E('g', 'g1'), { body: { v: 1 } }, 201);

  const nm = await api(srv, 'GET', E('g', 'g1'), { headers: { 'If-None-Match': `"${c.rev}"` } });
  assert.equal(nm.status, 304, nm.text);
  assert.equal(nm.text, '');
  assert.equal(nm.headers.etag, `"${c.rev}"`);
  const other = await api(srv, 'GET', E('g', 'g1'), { headers: { 'If-None-Match': '"1-0000000000000000"' } });
  assert.equal(other.status, 200);

  const v = await spaceVersion();
  const d = await api(srv, 'DELETE', E('g', 'g1'));
  assert.equal(d.status, 200, d.text);
  checkEntity(d.body, { collection: 'g', id: 'g1', deleted: true });
  assert.equal(revN(d.body.rev), 2);
  assert.equal(d.body.version, v + 1);
  assert.equal(d.body.created_at, c.created_at);

  checkError(assert, await api(srv, 'GET', E('g', 'g1')), 404, 'not_found', 'deleted');
  const t = await api(srv, 'GET', `${E('g', 'g1')}?include_deleted=1`);
  assert.equal(t.status, 200, t.text);
  assert.deepEqual(t.body, d.body);
  assert.equal(t.headers.etag, `"${d.body.rev}"`);
  checkError(assert, await api(srv, 'GET', `${E('g', 'absent')}?include_deleted=1`), 404, 'not_found', 'absent with include_deleted');
});

test('DELETE: If-Match mismatch -> 409, match -> 200; absent -> 404; the tombstone keeps its place', async () => {
  const c = await apiOk(srv, 'PUT', E('d', 'd1'), { body: { v: 1 } }, 201);
  const u = await apiOk(srv, 'PUT', E('d', 'd1'), { body: { v: 2 } });
  const bad = await api(srv, 'DELETE', E('d', 'd1'), { headers: { 'If-Match': `"${c.rev}"` } });
  assert.equal(checkError(assert, bad, 409, 'conflict', 'DELETE stale If-Match').current_rev, u.rev);
  assert.equal((await api(srv, 'GET', E('d', 'd1'))).status, 200, 'still there');
  const good = await api(srv, 'DELETE', E('d', 'd1'), { headers: { 'If-Match': `"${u.rev}"` } });
  assert.equal(good.status, 200, good.text);
  assert.equal(good.body.deleted, true);
  assert.equal(revN(good.body.rev), 3);
  checkError(assert, await api(srv, 'DELETE', E('d', 'never')), 404, 'not_found', 'DELETE absent');
  const v = await spaceVersion();
  const twice = await api(srv, 'DELETE', E('d', 'd1'));
  assert.ok([200, 404].includes(twice.status), `second DELETE: ${twice.status} ${twice.text}`);
  if (twice.status === 200) assert.equal(twice.body.rev, good.body.rev, 'a repeated delete is not a new edit');
  assert.equal(await spaceVersion(), v, 'deleting a tombstone took a version');
});

test('entity list: live entities ordered by id, limit + cursor paging, null at the end', async () => {
  await putSpace(srv, 'ent-list');
  const L = (id) => `/api/v1/spaces/ent-list/collections/items/entities/${id}`;
  const ids = ['b', 'a', 'c10', 'c2', 'Z', '0', 'a.b', 'a~1', 'dead', 'x:y'];
  for (const id of ids) await apiOk(srv, 'PUT', L(id), { body: { id } }, 201);
  await apiOk(srv, 'PUT', '/api/v1/spaces/ent-list/collections/others/entities/zz', { body: {} }, 201);
  await apiOk(srv, 'DELETE', L('dead'));
  const live = ids.filter((i) => i !== 'dead');
  const want = [...live].sort((x, y) => (Buffer.compare(Buffer.from(x), Buffer.from(y))));

  const all = await api(srv, 'GET', '/api/v1/spaces/ent-list/collections/items/entities?limit=1000');
  assert.equal(all.status, 200, all.text);
  assert.deepEqual(Object.keys(all.body).sort(), ['entities', 'next_cursor']);
  assert.equal(all.body.next_cursor, null);
  assert.deepEqual(all.body.entities.map((e) => e.id), want);
  for (const e of all.body.entities) {
    checkEntity(e, { collection: 'items' });
    assert.deepEqual(e.body, { id: e.id });
  }
  const paged = [];
  let cursor = null;
  let pages = 0;
  for (;;) {
    const p = await apiOk(srv, 'GET', `/api/v1/spaces/ent-list/collections/items/entities?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    pages++;
    assert.ok(p.entities.length <= 3);
    paged.push(...p.entities.map((e) => e.id));
    if (p.next_cursor === null) break;
    assert.equal(p.next_cursor, p.entities.at(-1).id, 'the cursor is the last id');
    cursor = p.next_cursor;
    assert.ok(pages < 10, 'paging does not end');
  }
  assert.deepEqual(paged, want);
  assert.equal(pages, Math.ceil(want.length / 3));
  const empty = await apiOk(srv, 'GET', '/api/v1/spaces/ent-list/collections/none/entities');
  assert.deepEqual(empty, { entities: [], next_cursor: null });
  checkError(assert, await api(srv, 'GET', '/api/v1/spaces/ent-list/collections/items/entities?limit=0'), 400, 'invalid_parameter', 'limit=0');
  checkError(assert, await api(srv, 'GET', '/api/v1/spaces/ent-list/collections/items/entities?limit=1001'), 400, 'invalid_parameter', 'limit=1001');

  // collections: bare array, counts of live entities
  const cols = await api(srv, 'GET', '/api/v1/spaces/ent-list/collections');
  assert.equal(cols.status, 200, cols.text);
  assert.ok(Array.isArray(cols.body), cols.text);
  const byName = Object.fromEntries(cols.body.map((c) => [c.name, c]));
  assert.deepEqual(byName.items, { name: 'items', count: live.length });
  assert.deepEqual(byName.others, { name: 'others', count: 1 });
  for (const c of cols.body) assert.deepEqual(Object.keys(c).sort(), ['count', 'name']);
});

test('lists: default limit 100; a cursor between ids continues after it', async () => {
  await putSpace(srv, 'ent-many');
  const P = (id) => `/api/v1/spaces/ent-many/collections/c/entities/${id}`;
  const ids = Array.from({ length: 150 }, (_, i) => `e${String(i).padStart(3, '0')}`);
  const rs = await Promise.all(ids.map((id, i) => api(srv, 'PUT', P(id), { body: { i } })));
  for (const r of rs) assert.equal(r.status, 201, r.text);
  const l = await apiOk(srv, 'GET', '/api/v1/spaces/ent-many/collections/c/entities');
  assert.equal(l.entities.length, 100);
  assert.equal(l.next_cursor, 'e099');
  const l2 = await apiOk(srv, 'GET', `/api/v1/spaces/ent-many/collections/c/entities?cursor=${l.next_cursor}`);
  assert.deepEqual(l2.entities.map((e) => e.id), ids.slice(100));
  assert.equal(l2.next_cursor, null);
  const mid = await apiOk(srv, 'GET', '/api/v1/spaces/ent-many/collections/c/entities?cursor=e0995&limit=2');
  assert.deepEqual(mid.entities.map((e) => e.id), ['e100', 'e101']);
  const ch = await apiOk(srv, 'GET', '/api/v1/spaces/ent-many/changes?since=0');
  assert.equal(ch.changes.length, 100);
  assert.equal(ch.more, true);
  assert.equal(ch.last_version, ch.changes[99].version);
});

test('body validation: not_an_object, invalid_json (with line/column), too_deep, empty, 413', async () => {
  for (const b of ['[1]', '"x"', '1', 'null', 'true', '[]']) {
    checkError(assert, await api(srv, 'PUT', E('val', 'v1'), { body: b }), 400, 'not_an_object', `body ${b}`);
  }
  const inv = await api(srv, 'PUT', E('val', 'v1'), { body: '{\n  "a": 1,\n  "b": tru\n}' });
  const ib = checkError(assert, inv, 400, 'invalid_json', 'bad JSON');
  assert.match(ib.message, /line\s*:?\s*3/i, `message names the line: ${ib.message}`);
  assert.match(ib.message, /col(umn)?\s*:?\s*\d+/i, `message names the column: ${ib.message}`);
  for (const b of ['{', '{"a":1,}', "{'a':1}", '{"a":1} x', '{"a":NaN}']) {
    checkError(assert, await api(srv, 'PUT', E('val', 'v1'), { body: b }), 400, 'invalid_json', `body ${b}`);
  }
  checkError(assert, await api(srv, 'PUT', E('val', 'v1'), { body: '' }), 400, 'invalid_json', 'empty body');
  // no body at all (no Content-Length)
  const raw = await rawRequest(srv.port, `PUT ${E('val', 'v1')} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${srv.adminToken}\r\nConnection: close\r\n\r\n`);
  const [nr] = parseResponses(raw.data);
  assert.ok(nr, raw.text);
  assert.equal(nr.status, 400, nr.body);

  const nest = (n) => '{"a":'.repeat(n) + '1' + '}'.repeat(n);
  const ok64 = await api(srv, 'PUT', E('val', 'deep64'), { body: nest(64) });
  assert.equal(ok64.status, 201, `64 levels: ${ok64.text.slice(0, 200)}`);
  checkError(assert, await api(srv, 'PUT', E('val', 'v1'), { body: nest(65) }), 400, 'too_deep', '65 levels');
  const arrDeep = '{"a":' + '['.repeat(70) + ']'.repeat(70) + '}';
  checkError(assert, await api(srv, 'PUT', E('val', 'v1'), { body: arrDeep }), 400, 'too_deep', 'deep arrays');
  // far deeper than any stack should tolerate: still a clean 400 (limit is 4096 bytes here)
  const dg = await api(srv, 'PUT', E('val', 'v1'), { body: '{"a":' + '['.repeat(2000) });
  assert.equal(dg.status, 400, dg.text);
  assert.ok(['too_deep', 'invalid_json'].includes(dg.body?.error), dg.text);

  const big = JSON.stringify({ s: 'x'.repeat(5000) });
  const tb = await api(srv, 'PUT', E('val', 'v1'), { body: big });
  checkError(assert, tb, 413, 'body_too_large', 'body over --max-body-bytes');
  const fits = await api(srv, 'PUT', E('val', 'fits'), { body: JSON.stringify({ s: 'x'.repeat(3000) }) });
  assert.equal(fits.status, 201, fits.text);
  checkError(assert, await api(srv, 'GET', E('val', 'v1')), 404, 'not_found', 'no rejected body was stored');
});

test('names: path traversal and invalid ids/collections -> 400 invalid_name; unknown space -> 404', async () => {
  const badIds = ['..', '%2e%2e', '%2E%2E', 'a%2Fb', '.hidden', '-x', '~x', 'a%00b', 'a%20b', 'x'.repeat(129), '%C3%A9'];
  for (const id of badIds) {
    for (const m of ['GET', 'PUT', 'DELETE']) {
      const r = await api(srv, m, `/api/v1/spaces/${SP}/collections/notes/entities/${id}`, { body: m === 'PUT' ? { a: 1 } : undefined });
      checkError(assert, r, 400, 'invalid_name', `${m} id ${id}`);
    }
  }
  for (const c of ['Notes', '1abc', '_x', 'a-b', '..', '%2e%2e', 'x'.repeat(64)]) {
    const r = await api(srv, 'PUT', `/api/v1/spaces/${SP}/collections/${c}/entities/ok`, { body: { a: 1 } });
    checkError(assert, r, 400, 'invalid_name', `collection ${c}`);
  }
  // the raw socket way too, where nothing normalises the path
  const raw = await rawRequest(srv.port, `GET /api/v1/spaces/${SP}/collections/notes/entities/../../../../etc/passwd HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${srv.adminToken}\r\nConnection: close\r\n\r\n`);
  const [rr] = parseResponses(raw.data);
  assert.ok(rr && (rr.status === 400 || rr.status === 404), `traversal: ${raw.text}`);
  assert.ok(!/root:/.test(raw.text));
  // the edges of the id pattern work
  for (const id of ['A', '9', `a${'b'.repeat(127)}`, 'a.b_c:d~e-f']) {
    const r = await api(srv, 'PUT', E('names', id), { body: { id } });
    assert.equal(r.status, 201, `id ${id}: ${r.text}`);
    assert.equal((await apiOk(srv, 'GET', E('names', id))).id, id);
  }
  checkError(assert, await api(srv, 'PUT', '/api/v1/spaces/no-such-space/collections/c/entities/e', { body: { a: 1 } }), 404, 'space_not_found', 'unknown space');
});

test('a 1 MiB body round-trips under the default 8 MiB limit', async (t) => {
  const s = await withServer(t);
  await putSpace(s, 'bigbody');
  const body = { blob: 'y'.repeat(1024 * 1024) };
  const r = await api(s, 'PUT', '/api/v1/spaces/bigbody/collections/files/entities/f1', { body });
  assert.equal(r.status, 201, r.text.slice(0, 300));
  const g = await api(s, 'GET', '/api/v1/spaces/bigbody/collections/files/entities/f1');
  assert.equal(g.status, 200);
  assert.equal(g.body.body.blob.length, 1024 * 1024);
});
