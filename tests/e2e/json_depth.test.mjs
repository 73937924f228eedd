// json_depth.test.mjs - one depth rule for entity bodies (docs/api.md): a
// body may nest 64 levels, counted in the body itself, whichever route it
// comes by: PUT, a push item, a /replicate entity or conflict record, a
// merge body, a sync pull. A body one level deeper is refused by each: 400
// too_deep for a PUT or a merge, that item's error (too_deep) in a push or
// /replicate while the other items apply. A request nested absurdly deep
// (past any item) is refused whole, before it is parsed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, putSpace, api, apiOk, checkError } from './helpers.mjs';
import { sp, put, getEntity, syncOk, assertConverged, conflicts, syncStatus } from './sync_helpers.mjs';

const SPACE = 'deep';
const E = (c, id) => `${sp(SPACE)}/collections/${c}/entities/${encodeURIComponent(id)}`;

/** An object nested `levels` deep, counted in itself: {"a":{"a":...{"a":1}}}. */
function nest(levels) {
  let v = 1;
  for (let i = 0; i < levels; i++) v = { a: v };
  return v;
}

/** The same as raw text (for depths JSON.stringify would take long to build). */
function nestText(levels) {
  return '{"a":'.repeat(levels) + '1' + '}'.repeat(levels);
}

async function server(t) {
  const s = await withServer(t);
  await putSpace(s, SPACE);
  return s;
}

test('a body of 64 levels is taken by every route: PUT, push, /replicate (entity and conflict record), merge, sync', async (t) => {
  const [A, B] = await Promise.all([server(t), server(t)]);
  const deep = nest(64);
  let r = await api(A, 'PUT', E('c', 'put'), { body: deep });
  assert.equal(r.status, 201, r.text);
  r = await apiOk(A, 'POST', `${sp(SPACE)}/changes`, { body: { changes: [{ collection: 'c', id: 'push', body: deep }] } }, 200);
  assert.equal(r.results[0].status, 'applied', JSON.stringify(r.results));
  r = await apiOk(A, 'POST', `${sp(SPACE)}/replicate`, { body: { entities: [
    { collection: 'c', id: 'rep', rev: '1-aaa', revs: ['1-aaa'], deleted: false, body: deep,
      conflicts: [{ rev: '1-bbb', deleted: false, body: deep }] }] } }, 200);
  assert.equal(r.results[0].status, 'applied', JSON.stringify(r.results));
  const [conf] = await conflicts(A, SPACE);
  assert.ok(conf, 'the conflict record travelled with it');
  r = await api(A, 'POST', `${sp(SPACE)}/conflicts/${conf.id}/resolve`, { body: { strategy: 'merge', body: deep } });
  assert.equal(r.status, 200, r.text);
  for (const id of ['put', 'push', 'rep']) assert.deepEqual((await getEntity(A, SPACE, 'c', id)).body, deep, id);
  const job = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(job.pulled, 3, JSON.stringify(job));
  await assertConverged([A, B], SPACE);
});

test('a body of 65 levels: PUT and merge 400 too_deep; in a push or /replicate that item\'s error, the others apply', async (t) => {
  const A = await server(t);
  const deeper = nest(65);
  checkError(assert, await api(A, 'PUT', E('c', 'put'), { body: deeper }), 400, 'too_deep', 'PUT');
  let r = await apiOk(A, 'POST', `${sp(SPACE)}/changes`, { body: { changes: [
    { collection: 'c', id: 'p1', body: { ok: 1 } },
    { collection: 'c', id: 'p2', body: deeper },
    { collection: 'c', id: 'p3', body: nest(100) },                       // far past, still within the request
    { collection: 'c', id: 'p4', body: nest(64) },
  ] } }, 200);
  assert.deepEqual(r.results.map((x) => x.error ?? x.status), ['applied', 'too_deep', 'too_deep', 'applied'], JSON.stringify(r));
  assert.match(r.results[1].message, /64 levels/);
  r = await apiOk(A, 'POST', `${sp(SPACE)}/replicate`, { body: { entities: [
    { collection: 'c', id: 'r1', rev: '1-aaa', revs: [], deleted: false, body: deeper },
    { collection: 'c', id: 'r2', rev: '1-aaa', revs: [], deleted: false, body: {},
      conflicts: [{ rev: '1-bbb', deleted: false, body: deeper }] },
    { collection: 'c', id: 'r3', rev: '1-aaa', revs: [], deleted: false, body: { ok: 1 } },
  ] } }, 200);
  assert.deepEqual(r.results.map((x) => x.error ?? x.status), ['too_deep', 'too_deep', 'applied'], JSON.stringify(r));
  assert.equal(r.results[0].id, 'r1', 'the error names its entity');
  const ids = (await apiOk(A, 'GET', `${sp(SPACE)}/changes?since=0`, {}, 200)).changes.map((e) => e.id).sort();
  assert.deepEqual(ids, ['p1', 'p4', 'r3']);
  // a merge body is held to the same rule
  await put(A, SPACE, 'c', 'm', { v: 1 });
  await apiOk(A, 'POST', `${sp(SPACE)}/replicate`, { body: { entities: [
    { collection: 'c', id: 'm', rev: '7-eee', revs: ['7-eee'], deleted: false, body: { v: 7 } }] } }, 200);
  const [conf] = await conflicts(A, SPACE);
  r = await api(A, 'POST', `${sp(SPACE)}/conflicts/${conf.id}/resolve`, { body: { strategy: 'merge', body: deeper } });
  checkError(assert, r, 400, 'too_deep', 'merge');
});

test('a request nested absurdly deep is refused whole before it is parsed: PUT, push, /replicate', async (t) => {
  const A = await server(t);
  const before = await syncStatus(A, SPACE);
  const abyss = nestText(100000);
  checkError(assert, await api(A, 'PUT', E('c', 'x'), { body: abyss }), 400, 'too_deep', 'PUT');
  let r = await api(A, 'POST', `${sp(SPACE)}/changes`, {
    body: `{"changes":[{"collection":"c","id":"ok","body":{}},{"collection":"c","id":"x","body":${abyss}}]}` });
  checkError(assert, r, 400, 'too_deep', 'push');
  r = await api(A, 'POST', `${sp(SPACE)}/replicate`, {
    body: `{"entities":[{"collection":"c","id":"ok","rev":"1-a","revs":[],"deleted":false,"body":{}},` +
      `{"collection":"c","id":"x","rev":"1-a","revs":[],"deleted":false,"body":${abyss}}]}` });
  checkError(assert, r, 400, 'too_deep', 'replicate');
  // just past the request's limit (128 levels in all) is refused whole too
  r = await api(A, 'POST', `${sp(SPACE)}/changes`, {
    body: `{"changes":[{"collection":"c","id":"ok","body":{}},{"collection":"c","id":"x","body":${nestText(126)}}]}` });
  checkError(assert, r, 400, 'too_deep', 'push at 129 levels');
  r = await api(A, 'POST', `${sp(SPACE)}/changes`, {
    body: `{"changes":[{"collection":"c","id":"ok","body":{}},{"collection":"c","id":"x","body":${nestText(125)}}]}` });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body.results.map((x) => x.error ?? x.status), ['applied', 'too_deep']);
  assert.equal((await syncStatus(A, SPACE)).entity_count, before.entity_count + 1, 'only the last push wrote, one entity');
});
