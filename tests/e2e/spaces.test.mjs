// spaces.test.mjs - SPEC §5 spaces: PUT (create/keep), GET one, list with
// paging, DELETE with ?confirm=, name validation, counters.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, api, apiOk, putSpace, checkError, ULID_RE, sleep,
} from './helpers.mjs';

const TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const SPACE_KEYS = ['conflict_count', 'created_at', 'entity_count', 'last_snapshot', 'name', 'server_version', 'space_uid', 'tombstone_count'];

let srv;
before(async () => { srv = await startServer(); });
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

function checkSpace(s, name) {
  const w = JSON.stringify(s);
  assert.deepEqual(Object.keys(s).sort(), SPACE_KEYS, w);
  assert.equal(s.name, name, w);
  assert.match(s.space_uid, ULID_RE, w);
  assert.match(s.created_at, TIME_RE, w);
  for (const k of ['server_version', 'entity_count', 'tombstone_count', 'conflict_count']) {
    assert.ok(Number.isInteger(s[k]) && s[k] >= 0, `${k} ${w}`);
  }
  assert.equal(s.last_snapshot, null, w);
}

test('PUT /api/v1/spaces/{space}: 201 first time, 200 after, same space', async () => {
  const r1 = await api(srv, 'PUT', '/api/v1/spaces/sp-new');
  assert.equal(r1.status, 201, r1.text);
  assert.match(r1.headers['content-type'] || '', /^application\/json/);
  checkSpace(r1.body, 'sp-new');
  assert.deepEqual([r1.body.server_version, r1.body.entity_count, r1.body.tombstone_count, r1.body.conflict_count], [0, 0, 0, 0]);
  await sleep(5);
  const r2 = await api(srv, 'PUT', '/api/v1/spaces/sp-new');
  assert.equal(r2.status, 200, r2.text);
  assert.deepEqual(r2.body, r1.body, 'a second PUT changes nothing');
  // a JSON body is accepted too (ignored or options), an empty object at least
  const r3 = await api(srv, 'PUT', '/api/v1/spaces/sp-new', { body: {} });
  assert.equal(r3.status, 200, r3.text);
  assert.equal(r3.body.space_uid, r1.body.space_uid);
});

test('GET /api/v1/spaces/{space}: the same object; unknown -> 404 space_not_found', async () => {
  const created = await putSpace(srv, 'sp-get');
  const g = await api(srv, 'GET', '/api/v1/spaces/sp-get');
  assert.equal(g.status, 200, g.text);
  assert.deepEqual(g.body, created);
  const nf = await api(srv, 'GET', '/api/v1/spaces/sp-missing');
  checkError(assert, nf, 404, 'space_not_found', 'GET unknown space');
  // every space route answers space_not_found for an unknown space
  for (const [m, p, body] of [
    ['GET', '/collections'], ['GET', '/collections/c/entities'], ['GET', '/collections/c/entities/e1'],
    ['PUT', '/collections/c/entities/e1', { a: 1 }], ['DELETE', '/collections/c/entities/e1'],
    ['GET', '/changes?since=0'], ['POST', '/changes', { changes: [] }], ['GET', '/conflicts'], ['GET', '/sync/status'],
  ]) {
    const r = await api(srv, m, `/api/v1/spaces/sp-missing${p}`, { body });
    checkError(assert, r, 404, 'space_not_found', `${m} sp-missing${p}`);
  }
  // and no space was created on the way
  checkError(assert, await api(srv, 'GET', '/api/v1/spaces/sp-missing'), 404, 'space_not_found', 'still missing');
});

test('GET /api/v1/spaces: every space, paging with limit and cursor', async () => {
  const names = ['sp-l-a', 'sp-l-b', 'sp-l-c', 'sp-l-d', 'sp-l-e'];
  for (const n of [...names].reverse()) await putSpace(srv, n);
  const all = await api(srv, 'GET', '/api/v1/spaces?limit=1000');
  assert.equal(all.status, 200, all.text);
  assert.deepEqual(Object.keys(all.body).sort(), ['next_cursor', 'spaces']);
  assert.equal(all.body.next_cursor, null);
  for (const s of all.body.spaces) checkSpace(s, s.name);
  const got = all.body.spaces.map((s) => s.name);
  for (const n of names) assert.ok(got.includes(n), `${n} listed`);
  assert.equal(new Set(got).size, got.length, 'no duplicates');
  // pages of 2 walk the same list
  const paged = [];
  let cursor = null;
  for (let i = 0; i < 100; i++) {
    const p = await apiOk(srv, 'GET', `/api/v1/spaces?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.ok(p.spaces.length <= 2 && p.spaces.length > 0, JSON.stringify(p));
    paged.push(...p.spaces.map((s) => s.name));
    cursor = p.next_cursor;
    if (cursor === null) break;
  }
  assert.deepEqual(paged, got);
  // the status counts them
  const st = await apiOk(srv, 'GET', '/api/v1/status');
  assert.equal(st.spaces, got.length);
  checkError(assert, await api(srv, 'GET', '/api/v1/spaces?limit=0'), 400, 'invalid_parameter', 'limit=0');
  checkError(assert, await api(srv, 'GET', '/api/v1/spaces?limit=1001'), 400, 'invalid_parameter', 'limit=1001');
  checkError(assert, await api(srv, 'GET', '/api/v1/spaces?limit=x'), 400, 'invalid_parameter', 'limit=x');
});

test('DELETE /api/v1/spaces/{space} needs ?confirm={space}; deletes the space and its data', async () => {
  await putSpace(srv, 'sp-del');
  const keep = await putSpace(srv, 'sp-keep');
  await apiOk(srv, 'PUT', '/api/v1/spaces/sp-del/collections/c/entities/e1', { body: { a: 1 } });
  await apiOk(srv, 'PUT', '/api/v1/spaces/sp-keep/collections/c/entities/e1', { body: { k: 1 } });

  for (const q of ['', '?confirm=', '?confirm=sp-keep', '?confirm=SP-DEL', '?confirm=sp-del2', '?conf=sp-del']) {
    const r = await api(srv, 'DELETE', `/api/v1/spaces/sp-del${q}`);
    checkError(assert, r, 400, 'confirm_mismatch', `DELETE sp-del${q}`);
  }
  assert.equal((await api(srv, 'GET', '/api/v1/spaces/sp-del')).status, 200, 'still there after the refusals');

  const first = await api(srv, 'GET', '/api/v1/spaces/sp-del');
  const d = await api(srv, 'DELETE', '/api/v1/spaces/sp-del?confirm=sp-del');
  assert.equal(d.status, 200, d.text);
  assert.deepEqual(d.body, { space: 'sp-del', deleted: true });
  checkError(assert, await api(srv, 'GET', '/api/v1/spaces/sp-del'), 404, 'space_not_found', 'after delete');
  checkError(assert, await api(srv, 'GET', '/api/v1/spaces/sp-del/collections/c/entities/e1'), 404, 'space_not_found', 'entity after delete');
  const list = await apiOk(srv, 'GET', '/api/v1/spaces?limit=1000');
  assert.ok(!list.spaces.some((s) => s.name === 'sp-del'), 'not listed after delete');
  checkError(assert, await api(srv, 'DELETE', '/api/v1/spaces/sp-del?confirm=sp-del'), 404, 'space_not_found', 'second delete');

  // the other space is untouched
  const k = await apiOk(srv, 'GET', '/api/v1/spaces/sp-keep');
  assert.equal(k.space_uid, keep.space_uid);
  assert.equal(k.entity_count, 1);
  assert.deepEqual((await apiOk(srv, 'GET', '/api/v1/spaces/sp-keep/collections/c/entities/e1')).body, { k: 1 });

  // the same name again is a new, empty space
  const again = await api(srv, 'PUT', '/api/v1/spaces/sp-del');
  assert.equal(again.status, 201, again.text);
  assert.notEqual(again.body.space_uid, first.body.space_uid, 'a re-created space has a new space_uid');
  assert.equal(again.body.entity_count, 0);
  assert.equal(again.body.server_version, 0);
  checkError(assert, await api(srv, 'GET', '/api/v1/spaces/sp-del/collections/c/entities/e1'), 404, 'not_found', 'old entity in the re-created space');
  const feed = await apiOk(srv, 'GET', '/api/v1/spaces/sp-del/changes?since=0');
  assert.deepEqual(feed.changes, [], 'old changes in the re-created space');
});

test('invalid space names -> 400 invalid_name (and nothing created)', async () => {
  const bad = ['BAD', 'Upper', '-lead', '_lead', 'a.b', 'a%20b', 'x'.repeat(64), '%2e%2e', '..', 'a%2Fb', 'caf%C3%A9'];
  for (const n of bad) {
    const r = await api(srv, 'PUT', `/api/v1/spaces/${n}`);
    checkError(assert, r, 400, 'invalid_name', `PUT /api/v1/spaces/${n}`);
    const g = await api(srv, 'GET', `/api/v1/spaces/${n}`);
    checkError(assert, g, 400, 'invalid_name', `GET /api/v1/spaces/${n}`);
  }
  // the edges of the pattern are fine
  for (const n of ['0', 'a', `a${'-'.repeat(62)}`, 'a_b-c9']) {
    const r = await api(srv, 'PUT', `/api/v1/spaces/${n}`);
    assert.equal(r.status, 201, `PUT ${n}: ${r.text}`);
    assert.equal(r.body.name, n);
  }
});

test('space counters follow entity writes and deletes', async () => {
  await putSpace(srv, 'sp-count');
  const S = '/api/v1/spaces/sp-count';
  for (const id of ['a', 'b', 'c']) await apiOk(srv, 'PUT', `${S}/collections/things/entities/${id}`, { body: { id } });
  await apiOk(srv, 'PUT', `${S}/collections/other/entities/a`, { body: { x: 1 } });
  await apiOk(srv, 'DELETE', `${S}/collections/things/entities/b`);
  const s = await apiOk(srv, 'GET', S);
  assert.equal(s.entity_count, 3, JSON.stringify(s));
  assert.equal(s.tombstone_count, 1, JSON.stringify(s));
  assert.equal(s.server_version, 5, JSON.stringify(s));
  assert.equal(s.conflict_count, 0);
  const listed = (await apiOk(srv, 'GET', '/api/v1/spaces?limit=1000')).spaces.find((x) => x.name === 'sp-count');
  assert.deepEqual(listed, s, 'the list shows the same counters');
});

test('lists refuse a cursor that cannot be one of their ids (400), and take any well-formed one', async () => {
  await putSpace(srv, 'sp-cur');
  const S = '/api/v1/spaces/sp-cur';
  const ulid = '01ARZ3NDEKTSV4RRFFQ69G5FAV';
  const cases = [
    ['/api/v1/spaces', 'Bad..Name', 'zzz'],
    [`${S}/collections/c/entities`, 'has space', 'e1'],
    [`${S}/snapshots`, 'garbage', ulid],
    [`${S}/sync/jobs`, 'garbage', ulid],
    [`${S}/conflicts`, '~', ulid],
    ['/api/v1/keys', 'not-a-key-id', ulid],
    ['/api/v1/audit', 'abc', '1'],
  ];
  for (const [p, bad, good] of cases) {
    const r = await api(srv, 'GET', `${p}?cursor=${encodeURIComponent(bad)}`);
    const e = checkError(assert, r, 400, 'invalid_parameter', `GET ${p}?cursor=${bad}`);
    assert.match(e.message, /cursor/);
    const ok = await api(srv, 'GET', `${p}?cursor=${encodeURIComponent(good)}`);
    assert.equal(ok.status, 200, `GET ${p}?cursor=${good} -> ${ok.status} ${ok.text}`);
  }
});
