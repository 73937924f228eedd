// snapshot_export.test.mjs - GET .../snapshots/{id}/export?format=json|csv
// [&collection=c]: the snapshot's entities as a JSON array (checked against
// the API's entities) or as RFC 4180 CSV (read back with Python's csv
// module, every value checked), gzip when accepted, a file name, the
// download's access rules, and its refusals (400, 404, 422).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { unlinkSync, readFileSync, writeFileSync } from 'node:fs';
import { withServer, putSpace, api, apiOk, checkError, createKey } from './helpers.mjs';
import { snapPath, rawGet, createSnapshot, snapFile, flipByte } from './snapshot_helpers.mjs';
import { put, del } from './sync_helpers.mjs';

const SPACE = 'exp';
const exportPath = (id, q) => `${snapPath(SPACE, id, '/export')}${q ? `?${q}` : ''}`;

/** Python's csv module reads the text: rows as arrays of strings. */
function readCsv(text) {
  const py = 'import csv,io,json,sys\nprint(json.dumps(list(csv.reader(io.StringIO(sys.stdin.read(), newline="")))))';
  const r = spawnSync('python3', ['-c', py], { input: text, encoding: 'utf8', maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** What a CSV field holds for a body member (export.h): strings their
 *  text, null and absent empty, anything else its JSON. */
const cell = (v) => (v === undefined || v === null ? '' : typeof v === 'string' ? v : JSON.stringify(v));

const BODIES = {
  n1: { title: 'plain', n: 1 },
  n2: { title: 'comma, "quotes" and\nnewline\r\n', n: -2.5, tags: ['a', 'b,c'], meta: { deep: { x: [1, null] } } },
  n3: { flag: true, off: false, nothing: null, title: 'ünïcødé ✓' },
  n4: { 'odd, "key"': 'v', n: 12345678901234 },
  gone: { title: 'deleted before the snapshot' },
};

async function fill(srv) {
  await putSpace(srv, SPACE);
  for (const [id, body] of Object.entries(BODIES)) await put(srv, SPACE, 'notes', id, body);
  await put(srv, SPACE, 'notes', 'n1', { ...BODIES.n1, edited: 'yes' });          // rev 2, a member more
  BODIES.n1 = { ...BODIES.n1, edited: 'yes' };
  await del(srv, SPACE, 'notes', 'gone');
  await put(srv, SPACE, 'tasks', 't1', { done: false, title: 'other collection' });
  const snap = await createSnapshot(srv, SPACE);
  const feed = await apiOk(srv, 'GET', `/api/v1/spaces/${SPACE}/changes?since=0&limit=1000`, {}, 200);
  // the entities as the API showed them when the snapshot was taken
  snap.entities = new Map(feed.changes.map((e) => [`${e.collection}/${e.id}`, e]));
  // after the snapshot: the export shows the snapshot, not this
  await put(srv, SPACE, 'notes', 'n1', { changed: 'after' });
  await put(srv, SPACE, 'notes', 'late', { title: 'late' });
  return snap;
}

test('JSON export: the snapshot\'s entities as the API shows them; gzip; file name', { timeout: 30000 }, async (t) => {
  const srv = await withServer(t);
  const snap = await fill(srv);
  const r = await rawGet(srv, exportPath(snap.id, 'format=json'));
  assert.equal(r.status, 200, r.body.toString());
  assert.match(r.headers['content-type'], /^application\/json/);
  assert.equal(r.headers['content-disposition'], `attachment; filename="${SPACE}-${snap.id}.json"`);
  assert.equal(r.headers['content-encoding'], undefined);
  const arr = JSON.parse(r.body.toString('utf8'));
  assert.deepEqual(arr.map((e) => `${e.collection}/${e.id}`), ['notes/n1', 'notes/n2', 'notes/n3', 'notes/n4', 'tasks/t1']);
  // each is the entity as the API gave it at the snapshot: the changes feed up to its version
  const atSnap = snap.entities;
  for (const e of arr) {
    const want = atSnap.get(`${e.collection}/${e.id}`);
    assert.ok(want, `${e.collection}/${e.id} in the feed`);
    assert.deepEqual(e, want);
  }
  assert.deepEqual(arr.find((e) => e.id === 'n2').body, BODIES.n2);

  // gzip when accepted: the same bytes once decoded
  const g = await rawGet(srv, exportPath(snap.id, 'format=json'), { headers: { 'Accept-Encoding': 'gzip' } });
  assert.equal(g.status, 200);
  assert.equal(g.headers['content-encoding'], 'gzip');
  assert.equal(g.headers.vary, 'Accept-Encoding');
  assert.deepEqual(gunzipSync(g.body), r.body);
  // a collection only; a valid one the snapshot lacks gives an empty array
  const one = await rawGet(srv, exportPath(snap.id, 'format=json&collection=tasks'));
  assert.equal(one.headers['content-disposition'], `attachment; filename="${SPACE}-${snap.id}-tasks.json"`);
  assert.deepEqual(JSON.parse(one.body.toString()).map((e) => e.id), ['t1']);
  assert.deepEqual(JSON.parse((await rawGet(srv, exportPath(snap.id, 'collection=none'))).body.toString()), []);
});

test('CSV export read back by a CSV parser: header in first-seen order, every value', { timeout: 30000 }, async (t) => {
  const srv = await withServer(t);
  const snap = await fill(srv);
  const r = await rawGet(srv, exportPath(snap.id, 'format=csv&collection=notes'), { headers: { 'Accept-Encoding': 'gzip' } });
  assert.equal(r.status, 200, r.body.toString());
  assert.equal(r.headers['content-encoding'], 'gzip');
  assert.match(r.headers['content-type'], /^text\/csv/);
  assert.equal(r.headers['content-disposition'], `attachment; filename="${SPACE}-${snap.id}-notes.csv"`);
  const text = gunzipSync(r.body).toString('utf8');
  assert.ok(text.endsWith('\r\n'), 'CRLF line ends');
  const rows = readCsv(text);
  const [header, ...data] = rows;
  // members in the order first seen over the entities (each body's keys sorted)
  const members = [];
  for (const id of ['n1', 'n2', 'n3', 'n4']) for (const k of Object.keys(BODIES[id]).sort()) if (!members.includes(k)) members.push(k);
  assert.deepEqual(header, ['collection', 'id', 'rev', 'version', 'updated_at', ...members]);
  const atSnap = new Map([...snap.entities.values()].map((e) => [e.id, e]));
  assert.deepEqual(data.map((d) => d[1]), ['n1', 'n2', 'n3', 'n4']);
  for (const d of data) {
    const e = atSnap.get(d[1]);
    assert.deepEqual(d.slice(0, 5), ['notes', e.id, e.rev, String(e.version), e.updated_at]);
    assert.deepEqual(d.slice(5), members.map((m) => cell(e.body[m])), `row ${e.id}`);
    assert.equal(d.length, header.length);
  }
  // the nested value is JSON text a reader can parse back
  assert.deepEqual(JSON.parse(data[1][header.indexOf('meta')]), BODIES.n2.meta);
  assert.equal(data[1][header.indexOf('title')], BODIES.n2.title, 'commas, quotes and line breaks survive');

  // every collection: the same without gzip
  const all = await rawGet(srv, exportPath(snap.id, 'format=csv'));
  assert.equal(all.headers['content-encoding'], undefined);
  const allRows = readCsv(all.body.toString('utf8'));
  assert.deepEqual(allRows.slice(1).map((d) => `${d[0]}/${d[1]}`), ['notes/n1', 'notes/n2', 'notes/n3', 'notes/n4', 'tasks/t1']);
  assert.deepEqual(allRows[0].slice(-1), ['done'], 'the other collection\'s member comes last');
  assert.equal(allRows[5][allRows[0].indexOf('done')], 'false');
});

test('export refusals and access: 400, 404, 422 as a download, reader keys', { timeout: 30000 }, async (t) => {
  const srv = await withServer(t);
  const snap = await fill(srv);
  checkError(assert, await api(srv, 'GET', exportPath(snap.id, 'format=xml')), 400, 'invalid_parameter', 'format');
  checkError(assert, await api(srv, 'GET', exportPath(snap.id, 'format=csv&collection=no%2Fslash')), 400, 'invalid_parameter', 'collection');
  checkError(assert, await api(srv, 'GET', exportPath('01AAAAAAAAAAAAAAAAAAAAAAAA', 'format=csv')), 404, 'not_found', 'no such snapshot');

  const reader = (await createKey(srv, 'reader', [SPACE], 'exp-reader')).token;
  const other = (await createKey(srv, 'reader', ['elsewhere'], 'other-reader')).token;
  assert.equal((await api(srv, 'GET', exportPath(snap.id, 'format=csv'), { token: reader })).status, 200);
  const dl = await api(srv, 'GET', snapPath(SPACE, snap.id, '/download'), { token: other });
  const ex = await api(srv, 'GET', exportPath(snap.id, 'format=csv'), { token: other });
  assert.equal(ex.status, dl.status, 'the same answer as a download');
  assert.equal(ex.status, 403);
  assert.equal((await api(srv, 'GET', exportPath(snap.id), { token: null })).status, 401);

  // the download's ?as=gzip (what a browser's fetch uses, docs/api.md):
  // the stored file as the body, no content coding, whatever is accepted
  for (const headers of [{}, { 'Accept-Encoding': 'gzip' }]) {
    const f = await rawGet(srv, snapPath(SPACE, snap.id, '/download?as=gzip'), { headers });
    assert.equal(f.status, 200);
    assert.equal(f.headers['content-type'], 'application/gzip');
    assert.equal(f.headers['content-encoding'], undefined);
    assert.equal(f.headers['content-disposition'], `attachment; filename="${SPACE}-${snap.id}.ndjson.gz"`);
    assert.equal(createHash('sha256').update(f.body).digest('hex'), snap.sha256);
    assert.equal(f.headers.etag, `"${snap.sha256}"`);
  }
  checkError(assert, await api(srv, 'GET', snapPath(SPACE, snap.id, '/download?as=zip')), 400, 'invalid_parameter', 'as=zip');

  // a damaged file: CSV reads it all before the first byte -> 422, and the snapshot is marked
  const f = snapFile(srv.dataDir, snap.id);
  const good = readFileSync(f);
  writeFileSync(f, flipByte(Buffer.from(good)));
  const bad = await api(srv, 'GET', exportPath(snap.id, 'format=csv'));
  checkError(assert, bad, 422, 'snapshot_corrupt', 'damaged file');
  const meta = await apiOk(srv, 'GET', snapPath(SPACE, snap.id), {}, 200);
  assert.equal(meta.integrity, 'corrupt');
  checkError(assert, await api(srv, 'GET', exportPath(snap.id, 'format=json')), 422, 'snapshot_corrupt', 'marked corrupt');

  // a missing file, on a second snapshot
  const snap2 = await createSnapshot(srv, SPACE);
  unlinkSync(snapFile(srv.dataDir, snap2.id));
  const gone = await api(srv, 'GET', exportPath(snap2.id, 'format=json'));
  checkError(assert, gone, 422, 'snapshot_corrupt', 'missing file');
  assert.match(gone.body.message, /the snapshot file is missing/);
});
