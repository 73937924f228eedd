// list_paging.test.mjs - every list pages the same way (docs/api.md,
// Conventions): ?limit= is 1 to 1000 (default 100), ?cursor= is the id of
// the last item of the previous page, and anything else is 400
// invalid_parameter -- a bad escape (%zz, %00) included, which used to be
// read as "no limit" or "no cursor". /peers and /collections page too
// (they listed everything, whatever limit or cursor said).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, putSpace, api, apiOk, checkError, createKey } from './helpers.mjs';

const SPACE = 'pages';
const S = `/api/v1/spaces/${SPACE}`;
const ULID = '01ARZ3NDEKTSV4RRFFQ69G5FAV';

let srv;

// path, the member holding the items (null: a bare array, the next cursor in
// X-Next-Cursor), the item's id, a cursor that cannot be an id of the list,
// a well-formed one
const LISTS = [
  ['/api/v1/spaces', 'spaces', (x) => x.name, 'Bad..Name', 'zzz'],
  ['/api/v1/keys', 'keys', (x) => x.id, 'not-a-key-id', ULID],
  ['/api/v1/audit', 'entries', (x) => String(x.id), 'abc', '1'],
  [`${S}/collections`, null, (x) => x.name, '9starts-with-a-digit', 'zzz'],
  [`${S}/collections/c0/entities`, 'entities', (x) => x.id, 'has space', 'e1'],
  [`${S}/conflicts`, null, (x) => x.id, '~', ULID],
  [`${S}/snapshots`, 'snapshots', (x) => x.id, 'garbage', ULID],
  [`${S}/sync/jobs`, 'jobs', (x) => x.id, 'garbage', ULID],
  [`${S}/peers`, 'peers', (x) => x.name, 'Bad Name', 'zzz'],
];

const BAD_LIMITS = ['0', '1001', '-1', 'abc', '%00', '', '1.5', '%2B5', '5%zz', '1%', '%205', '+5', '1e3', '1'.repeat(40)];

before(async () => {
  srv = await startServer();
  for (const s of [SPACE, 'pages-b', 'pages-c']) await putSpace(srv, s);
  for (const role of ['reader', 'writer']) await createKey(srv, role);
  // three collections, three entities in c0
  for (const [c, id] of [['c0', 'e1'], ['c0', 'e2'], ['c0', 'e3'], ['c1', 'x'], ['c2', 'y']])
    await apiOk(srv, 'PUT', `${S}/collections/${c}/entities/${id}`, { body: { n: id } });
  // three conflicts: pushes against a stale base
  for (const id of ['e1', 'e2', 'e3']) {
    const r = await apiOk(srv, 'POST', `${S}/changes`, { body: { changes: [{ collection: 'c0', id, base_rev: '9-0000000000000000', body: { stale: true } }] } });
    assert.equal(r.results[0].status, 'conflict', JSON.stringify(r));
  }
  // three snapshots
  for (let i = 0; i < 3; i++) await apiOk(srv, 'POST', `${S}/snapshots`, { body: { note: `n${i}` } }, 201);
  // three sync jobs (each fails: the peer is this instance)
  for (let i = 0; i < 3; i++) {
    const r = await api(srv, 'POST', `${S}/sync`, { body: { peer_url: srv.base, peer_space: SPACE, peer_token: srv.adminToken, direction: 'pull', wait: true } });
    assert.equal(r.status, 502, r.text);
  }
  // three persistent peers
  for (const name of ['p1', 'p2', 'p3'])
    await apiOk(srv, 'PUT', `${S}/peers/${name}`, { body: { url: 'http://127.0.0.1:9', space: SPACE, token: 't', direction: 'pull', every_seconds: 0 } });
});

after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

/** One page: {items, next} (next: the next cursor, or null). */
async function page(path, member, query) {
  const r = await api(srv, 'GET', `${path}?${query}`);
  assert.equal(r.status, 200, `GET ${path}?${query} -> ${r.status} ${r.text}`);
  if (member === null) {
    assert.ok(Array.isArray(r.body), `${path} answers a bare array`);
    return { items: r.body, next: r.headers['x-next-cursor'] ?? null };
  }
  assert.ok(Array.isArray(r.body[member]), `${path}: ${member} ${r.text}`);
  assert.ok('next_cursor' in r.body, `${path} has next_cursor: ${r.text}`);
  return { items: r.body[member], next: r.body.next_cursor };
}

test('every list: a limit that is not a whole number from 1 to 1000 is 400 invalid_parameter', async () => {
  for (const path of [...LISTS.map((l) => l[0]), `${S}/changes`]) {
    for (const l of BAD_LIMITS) {
      const e = checkError(assert, await api(srv, 'GET', `${path}?limit=${l}`), 400, 'invalid_parameter', `GET ${path}?limit=${l}`);
      assert.match(e.message, /limit/, `GET ${path}?limit=${l}: ${e.message}`);
    }
    // a bare ?limit (no value) too
    checkError(assert, await api(srv, 'GET', `${path}?limit`), 400, 'invalid_parameter', `GET ${path}?limit`);
    for (const l of ['1', '1000', '%31', '0005'])
      assert.equal((await api(srv, 'GET', `${path}?limit=${l}`)).status, 200, `GET ${path}?limit=${l}`);
  }
});

test('every list: a cursor that cannot be one of its ids is 400 invalid_parameter; a well-formed one is taken', async () => {
  for (const [path, , , wrongKind, good] of LISTS) {
    for (const c of [encodeURIComponent(wrongKind), '%ff', '%00', '', '%zz', 'x'.repeat(300)]) {
      const e = checkError(assert, await api(srv, 'GET', `${path}?cursor=${c}`), 400, 'invalid_parameter', `GET ${path}?cursor=${c}`);
      assert.match(e.message, /cursor/, `GET ${path}?cursor=${c}: ${e.message}`);
    }
    const ok = await api(srv, 'GET', `${path}?cursor=${encodeURIComponent(good)}&limit=5`);
    assert.equal(ok.status, 200, `GET ${path}?cursor=${good} -> ${ok.status} ${ok.text}`);
  }
  // /changes pages by since: a malformed one is refused, not read as 0
  for (const q of ['since=%00', 'since=%zz', 'since=', 'since=-1', 'bodies=%zz', 'style=%00', 'feed=%zz', 'timeout_ms=%zz'])
    checkError(assert, await api(srv, 'GET', `${S}/changes?${q}`), 400, 'invalid_parameter', `GET /changes?${q}`);
});

test('every list pages through more than one page with limit=2, and the pages make the whole list', async () => {
  for (const [path, member, id] of LISTS) {
    const whole = (await page(path, member, 'limit=1000')).items.map(id);
    assert.ok(whole.length >= 3, `${path}: at least 3 items to page through (${whole.length})`);
    const seen = [];
    let cursor = null;
    let pages = 0;
    do {
      const q = `limit=2${cursor !== null ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const p = await page(path, member, q);
      assert.ok(p.items.length <= 2, `${path}?${q}: ${p.items.length} items on a page of 2`);
      if (p.next !== null) {
        assert.equal(p.items.length, 2, `${path}?${q}: a page that is not the last is full`);
        assert.equal(p.next, id(p.items[p.items.length - 1]), `${path}?${q}: next_cursor is the last item's id`);
      }
      seen.push(...p.items.map(id));
      cursor = p.next;
      pages++;
      assert.ok(pages < 50, `${path}: paging does not end`);
    } while (cursor !== null);
    assert.ok(pages >= 2, `${path}: ${whole.length} items in ${pages} page(s) of 2`);
    assert.deepEqual(seen, whole, `${path}: the pages of 2, in order, are the list`);
  }
});

test('/peers: more than 100 peers come in pages of 100 by default, sorted by name, with next_cursor', async () => {
  const space = 'pages-b';
  const names = [];
  for (let i = 0; i < 103; i++) names.push(`q${String(i).padStart(3, '0')}`);
  for (const name of names)
    await apiOk(srv, 'PUT', `/api/v1/spaces/${space}/peers/${name}`, { body: { url: 'http://127.0.0.1:9', space, token: 't', direction: 'push', every_seconds: 0 } });
  const first = await apiOk(srv, 'GET', `/api/v1/spaces/${space}/peers`, {}, 200);
  assert.equal(first.peers.length, 100);
  assert.deepEqual(first.peers.map((p) => p.name), names.slice(0, 100));
  assert.equal(first.next_cursor, names[99]);
  const rest = await apiOk(srv, 'GET', `/api/v1/spaces/${space}/peers?cursor=${first.next_cursor}`, {}, 200);
  assert.deepEqual(rest.peers.map((p) => p.name), names.slice(100));
  assert.equal(rest.next_cursor, null);
  // the limits every other list refuses
  for (const q of ['limit=-1', 'limit=abc', 'limit=1001', 'cursor=%ff'])
    checkError(assert, await api(srv, 'GET', `/api/v1/spaces/${space}/peers?${q}`), 400, 'invalid_parameter', `GET /peers?${q}`);
});

test('/collections: limit and cursor are honoured (a bare array; the next cursor in X-Next-Cursor)', async () => {
  const one = await api(srv, 'GET', `${S}/collections?limit=1`);
  assert.equal(one.status, 200, one.text);
  assert.deepEqual(one.body, [{ name: 'c0', count: 3 }]);
  assert.equal(one.headers['x-next-cursor'], 'c0');
  const next = await api(srv, 'GET', `${S}/collections?limit=1&cursor=c0`);
  assert.deepEqual(next.body, [{ name: 'c1', count: 1 }]);
  const last = await api(srv, 'GET', `${S}/collections?cursor=c1`);
  assert.deepEqual(last.body, [{ name: 'c2', count: 1 }]);
  assert.equal(last.headers['x-next-cursor'], undefined, 'no next cursor on the last page');
});

test('other query parameters: a malformed value (bad escape, escaped NUL) is 400, not read as absent', async () => {
  const cases = [
    [`${S}/snapshots?kind=%zz`, 'invalid_parameter'],
    [`${S}/snapshots?status=manual%00`, 'invalid_parameter'],
    [`${S}/collections/c0/entities/e1?include_deleted=%zz`, 'invalid_parameter'],
    [`${S}/changes?collections=c0%00`, 'invalid_parameter'],
    [`${S}/changes?exclude_origin=%zz`, 'invalid_parameter'],
    ['/api/v1/events?topics=%zz', 'invalid_parameter'],
    ['/api/v1/events?spaces=%00', 'invalid_parameter'],
    ['/api/v1/events?last_event_id=%zz', 'invalid_parameter'],
    ['/api/v1/audit?space=%zz', 'invalid_name'],
    ['/api/v1/audit?action=%00', 'invalid_parameter'],
  ];
  for (const [p, code] of cases) checkError(assert, await api(srv, 'GET', p), 400, code, `GET ${p}`);
});
