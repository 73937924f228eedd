// rev_limits.test.mjs - SPEC §5/§9 revs: the edit count N of a rev is at
// most 2^53 - 1 (9007199254740991) wherever a rev comes in (a base_rev, a
// /replicate rev, its history, a conflict record), so the next edit can
// never wrap to "0-…" (which every peer refuses, leaving digests apart for
// good). An entity whose rev is at the maximum cannot be edited any more:
// 422 rev_exhausted, nothing written, never a wrapped rev.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';
import { withServer, putSpace, api, apiOk, checkError } from './helpers.mjs';
import { sp, put, getEntity, syncOk, syncStatus, assertConverged, conflicts } from './sync_helpers.mjs';
import { createSnapshot, snapFile, snapPath, postBinary } from './snapshot_helpers.mjs';

const SPACE = 'revs';
const MAX = '9007199254740991';
const E = (c, id) => `${sp(SPACE)}/collections/${c}/entities/${encodeURIComponent(id)}`;

function replicate(srv, entities) {
  return api(srv, 'POST', `${sp(SPACE)}/replicate`, { body: { entities } });
}

const ent = (id, rev, extra = {}) => ({ collection: 'c', id, rev, revs: [rev], deleted: false, body: { id }, ...extra });

test('/replicate: a rev, a history rev or a conflict record past 2^53-1 (or with a leading zero) is that entity\'s error; the others apply', async (t) => {
  const A = await withServer(t);
  await putSpace(A, SPACE);
  const bad = [
    ent('wrap', '18446744073709551615-abc'),                 // the value the hardening pass used
    ent('over', '9007199254740992-abc'),                     // MAX + 1
    ent('huge', '18446744073709551616-abc'),                 // past uint64
    ent('zero', '01-abc'),                                   // a second spelling of 1-abc
    ent('hist', '2-bbb', { revs: ['2-bbb', '18446744073709551615-abc'] }),
    ent('conf', '2-ccc', { conflicts: [{ rev: '18446744073709551615-ddd', deleted: false, body: { x: 1 } }] }),
  ];
  const good = [ent('atmax', `${MAX}-abc`), ent('fine', '3-abc')];
  const r = await replicate(A, [...bad, ...good]);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.errors, bad.length, r.text);
  assert.equal(r.body.applied, good.length, r.text);
  bad.forEach((e, i) => {
    const res = r.body.results[i];
    assert.equal(res.status, 'error', `${e.id}: ${JSON.stringify(res)}`);
    assert.equal(res.error, 'invalid_rev', `${e.id}: ${JSON.stringify(res)}`);
    assert.equal(res.collection, 'c', `${e.id}: the error names its entity ${JSON.stringify(res)}`);
    assert.equal(res.id, e.id, `${e.id}: ${JSON.stringify(res)}`);
    assert.match(res.message, /9007199254740991/, JSON.stringify(res));
  });
  for (const e of bad) assert.equal(await getEntity(A, SPACE, 'c', e.id), null, `${e.id} was not written`);
  assert.equal((await getEntity(A, SPACE, 'c', 'atmax')).rev, `${MAX}-abc`);
  assert.deepEqual(await conflicts(A, SPACE), [], 'no conflict record was kept from a malformed one');
});

test('an entity at the maximum edit count cannot be edited: PUT, DELETE, a push and a resolution are refused (rev_exhausted), nothing wraps', async (t) => {
  const A = await withServer(t);
  await putSpace(A, SPACE);
  let r = await replicate(A, [ent('top', `${MAX}-abc`)]);
  assert.equal(r.body.applied, 1, r.text);
  const before = await syncStatus(A, SPACE);

  r = await api(A, 'PUT', E('c', 'top'), { body: { v: 2 } });
  const err = checkError(assert, r, 422, 'rev_exhausted', 'PUT');
  assert.match(err.message, /9007199254740991/);
  checkError(assert, await api(A, 'DELETE', E('c', 'top')), 422, 'rev_exhausted', 'DELETE');

  // pushes: with the current rev as base_rev, and with a base_rev past the maximum
  r = await apiOk(A, 'POST', `${sp(SPACE)}/changes`, { body: { changes: [
    { collection: 'c', id: 'top', base_rev: `${MAX}-abc`, body: { v: 3 } },
    { collection: 'c', id: 'top', base_rev: '18446744073709551615-abc', body: { v: 4 } },
    { collection: 'c', id: 'other', base_rev: null, body: { v: 5 } },
  ] } }, 200);
  assert.equal(r.results[0].status, 'error', JSON.stringify(r));
  assert.equal(r.results[0].error, 'rev_exhausted', JSON.stringify(r));
  assert.equal(r.results[1].status, 'error', JSON.stringify(r));
  assert.equal(r.results[1].error, 'invalid_rev', JSON.stringify(r));
  assert.equal(r.results[2].status, 'applied', JSON.stringify(r));

  const top = await getEntity(A, SPACE, 'c', 'top');
  assert.equal(top.rev, `${MAX}-abc`, 'unchanged');
  assert.deepEqual(top.body, { id: 'top' });
  const after = await syncStatus(A, SPACE);
  assert.equal(after.server_version, before.server_version + 1, 'only "other" was written');

  // a conflict on it: its resolution would be an edit past the maximum
  r = await replicate(A, [ent('top', '5-eee', { revs: ['5-eee', '4-fff'] })]);
  assert.equal(r.body.conflicts, 1, r.text);
  const [c] = await conflicts(A, SPACE);
  for (const strategy of ['local_wins', 'remote_wins']) {
    r = await api(A, 'POST', `${sp(SPACE)}/conflicts/${c.id}/resolve`, { body: { strategy } });
    checkError(assert, r, 422, 'rev_exhausted', strategy);
  }
  assert.equal((await conflicts(A, SPACE)).length, 1, 'the conflict stays until it can be resolved');
});

test('a rev one below the maximum: the next edit reaches it and syncs; the one after is refused; digests agree throughout', async (t) => {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  const below = `${BigInt(MAX) - 1n}-abc`;
  let r = await replicate(A, [ent('e', below)]);
  assert.equal(r.body.applied, 1, r.text);
  const edited = await put(A, SPACE, 'c', 'e', { v: 1 });
  assert.ok(edited.rev.startsWith(`${MAX}-`), edited.rev);
  const job = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(job.pulled, 1);
  assert.equal(job.errors, 0, JSON.stringify(job));
  assert.deepEqual(job.error_items, [], JSON.stringify(job));
  await assertConverged([A, B], SPACE, 'after the pull');
  checkError(assert, await api(B, 'PUT', E('c', 'e'), { body: { v: 2 } }), 422, 'rev_exhausted', 'B: PUT');
  checkError(assert, await api(A, 'PUT', E('c', 'e'), { body: { v: 2 } }), 422, 'rev_exhausted', 'A: PUT');
  await syncOk(A, SPACE, B, { direction: 'both' });
  await assertConverged([A, B], SPACE, 'nothing wrapped');
});

test('a snapshot line whose rev is past the limit (taken before it) still imports and restores: a restore writes its own revs', async (t) => {
  const A = await withServer(t);
  await putSpace(A, SPACE);
  await put(A, SPACE, 'c', 'e', { v: 1 });
  const m = await createSnapshot(A, SPACE);
  const lines = gunzipSync(readFileSync(snapFile(A.dataDir, m.id))).toString('utf8').slice(0, -1).split('\n');
  // a file taken before the limit is a v1 file (no revs); a v2 line with
  // such a rev (and revs to match) is taken the same way: as a new edit
  const hdr = JSON.parse(lines[0]);
  const { revs, conflicts, ...v1ent } = JSON.parse(lines[1]);
  assert.ok(Array.isArray(revs) && Array.isArray(conflicts), 'the server writes v2 lines');
  const big = '18446744073709551615-abc';
  const files = [
    [{ ...hdr, format: 'snapsync.snapshot.v1' }, { ...v1ent, rev: big }],
    [hdr, { ...v1ent, rev: big, revs: [big], conflicts: [] }],
  ];
  let n = 1;
  for (const [h, ent] of files) {
    const gz = gzipSync(Buffer.from(`${[JSON.stringify(h), JSON.stringify(ent)].join('\n')}\n`));
    const im = await postBinary(A, snapPath(SPACE, 'import'), gz);
    assert.equal(im.status, 201, im.text);
    await put(A, SPACE, 'c', 'e', { v: 2 });
    const r = await apiOk(A, 'POST', snapPath(SPACE, im.body.id, '/restore'), { body: { confirm: im.body.id } }, 200);
    assert.deepEqual(r.changes, { put: 1, deleted: 0 });
    const e = await getEntity(A, SPACE, 'c', 'e');
    assert.deepEqual(e.body, { v: 1 });
    n += 2;
    assert.ok(e.rev.startsWith(`${n}-`), `${h.format}: ${e.rev}`);
  }
});
