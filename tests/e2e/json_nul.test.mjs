// json_nul.test.mjs - "\u0000" inside JSON strings (SPEC §1 names). A
// string that becomes a name (space, collection, entity id, rev, sha256,
// peer, key name, strategy, direction, confirm, ...) is read on its full
// length: one holding a NUL is refused, never cut short at it ("a\u0000evil"
// must not write entity "a"; spaces ["p1\u0000x"] must not make a key for
// p1). Entity body values may hold a NUL (docs/api.md), on every path:
// PUT, push, /replicate, sync, snapshots and their restore.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, putSpace, api, apiOk, checkError } from './helpers.mjs';
import { sp, put, getEntity, syncOk, assertConverged, conflicts } from './sync_helpers.mjs';
import { createSnapshot } from './snapshot_helpers.mjs';

const SPACE = 'p1';
const SHA = 'ab'.repeat(32);
const N = '\u0000';
const E = (c, id) => `${sp(SPACE)}/collections/${c}/entities/${encodeURIComponent(id)}`;

async function server(t) {
  const s = await withServer(t);
  await putSpace(s, SPACE);
  return s;
}

async function entityIds(srv) {
  const r = await apiOk(srv, 'GET', `${sp(SPACE)}/changes?since=0&limit=1000`, {}, 200);
  return r.changes.map((e) => `${e.collection}/${e.id}`).sort();
}

test('POST /changes: a NUL in a collection, id or base_rev is that change\'s error; nothing is written under the shorter name', async (t) => {
  const A = await server(t);
  const r = await apiOk(A, 'POST', `${sp(SPACE)}/changes`, { body: { changes: [
    { collection: 'c', id: `a${N}evil`, body: { v: 1 } },
    { collection: `c${N}`, id: 'b', body: { v: 2 } },
    { collection: 'c', id: 'ok', body: { v: 3, text: `a${N}b` } },         // values may hold one
    { collection: 'c', id: 'd', base_rev: `1-abc${N}`, body: { v: 4 } },
  ] } }, 200);
  assert.deepEqual(r.results.map((x) => x.status), ['error', 'error', 'applied', 'error'], JSON.stringify(r));
  assert.deepEqual(r.results.map((x) => x.error ?? null), ['invalid_name', 'invalid_name', null, 'invalid_rev'], JSON.stringify(r));
  assert.deepEqual(await entityIds(A), ['c/ok']);
  assert.equal((await getEntity(A, SPACE, 'c', 'ok')).body.text, `a${N}b`);
});

test('control bodies: a NUL in any name or option is 400 invalid_string naming the member, whatever the route', async (t) => {
  const A = await server(t);
  const sid = (await createSnapshot(A, SPACE)).id;
  // a conflict to resolve
  await put(A, SPACE, 'c', 'x', { v: 1 });
  await api(A, 'POST', `${sp(SPACE)}/replicate`, { body: { entities: [
    { collection: 'c', id: 'x', rev: '9-fff', revs: ['9-fff'], deleted: false, body: { v: 9 } }] } });
  const [conf] = await conflicts(A, SPACE);
  assert.ok(conf, 'a conflict record');
  const peer = { url: A.base, space: SPACE, token: A.adminToken, direction: 'pull' };
  const cases = [
    ['POST', '/api/v1/keys', { role: 'reader', spaces: [`p1${N}x`] }, 'spaces', /spaces\[0\]/],
    ['POST', '/api/v1/keys', { role: `reader${N}`, spaces: ['p1'] }, 'role', /role/],
    ['POST', '/api/v1/keys', { role: 'reader', spaces: ['p1'], name: `k${N}` }, 'name', /name/],
    ['POST', `${sp(SPACE)}/sync`, { peer_url: A.base, peer_space: `p1${N}x`, peer_token: 't' }, 'peer_space', /peer_space/],
    ['POST', `${sp(SPACE)}/sync`, { peer_url: A.base, peer_token: 't', direction: `pull${N}` }, 'direction', /direction/],
    ['POST', `${sp(SPACE)}/sync`, { peer_url: `${A.base}${N}/x`, peer_token: 't' }, 'peer_url', /peer_url/],
    ['POST', `${sp(SPACE)}/sync`, { peer_url: A.base, peer_token: `t${N}u` }, 'peer_token', /peer_token/],
    ['PUT', `${sp(SPACE)}/peers/p`, { ...peer, space: `p1${N}x` }, 'space', /space/],
    ['PUT', `${sp(SPACE)}/peers/p`, { ...peer, direction: `push${N}` }, 'direction', /direction/],
    ['POST', `${sp(SPACE)}/conflicts/${conf.id}/resolve`, { strategy: `local_wins${N}` }, 'strategy', /strategy/],
    ['POST', `${sp(SPACE)}/snapshots/${sid}/restore`, { confirm: `${sid}${N}` }, 'confirm', /confirm/],
    ['POST', `${sp(SPACE)}/snapshots`, { note: `n${N}` }, 'note', /note/],
    ['POST', `${sp(SPACE)}/blobs/missing`, { hashes: [`${SHA}${N}x`] }, 'hashes', /hashes\[0\]/],
  ];
  for (const [method, p, body, member, where] of cases) {
    const r = await api(A, method, p, { body });
    const e = checkError(assert, r, 400, 'invalid_string', `${method} ${p} ${member}`);
    assert.equal(e.member, member, r.text);
    assert.match(e.message, where, r.text);
    assert.match(e.message, /\\u0000/, r.text);
  }
  // nothing came of them
  const keys = await apiOk(A, 'GET', '/api/v1/keys', {}, 200);
  assert.ok(!JSON.stringify(keys).includes('reader-'), 'no key made');
  assert.equal((await apiOk(A, 'GET', `${sp(SPACE)}/peers`, {}, 200)).peers.length, 0, 'no peer stored');
  assert.equal((await apiOk(A, 'GET', `${sp(SPACE)}/sync/jobs`, {}, 200)).jobs.length, 0, 'no sync job');
  assert.equal((await conflicts(A, SPACE)).length, 1, 'the conflict is still there');
  // a merge body is entity data: its values may hold a NUL
  const m = await api(A, 'POST', `${sp(SPACE)}/conflicts/${conf.id}/resolve`, { body: { strategy: 'merge', body: { t: `a${N}b` } } });
  assert.equal(m.status, 200, m.text);
  assert.equal((await getEntity(A, SPACE, 'c', 'x')).body.t, `a${N}b`);
});

test('/replicate: a NUL in a collection, id, rev, history or conflict rev is that entity\'s error', async (t) => {
  const A = await server(t);
  const base = (id, extra = {}) => ({ collection: 'c', id, rev: '1-aaa', revs: ['1-aaa'], deleted: false, body: { id }, ...extra });
  const bad = [
    base(`a${N}evil`),
    base('b', { collection: `c${N}` }),
    base('r', { rev: `1-aaa${N}` }),
    base('h', { rev: '2-bbb', revs: ['2-bbb', `1-aaa${N}`] }),
    base('k', { conflicts: [{ rev: `1-ccc${N}`, deleted: false, body: {} }] }),
  ];
  const r = await apiOk(A, 'POST', `${sp(SPACE)}/replicate`, { body: { entities: [...bad, base('fine', { body: { t: `x${N}y` } })] } }, 200);
  assert.equal(r.errors, bad.length, JSON.stringify(r));
  assert.deepEqual(r.results.map((x) => x.error ?? x.status),
    ['invalid_name', 'invalid_name', 'invalid_rev', 'invalid_rev', 'invalid_rev', 'applied'], JSON.stringify(r));
  assert.deepEqual(await entityIds(A), ['c/fine']);
  assert.equal((await getEntity(A, SPACE, 'c', 'fine')).body.t, `x${N}y`);
});

test('"_blobs": a hash with a NUL is not a hash; a body with a NUL value still has its blobs checked', async (t) => {
  const A = await server(t);
  // the hash before the NUL is not in the space: it must not count as named
  let r = await api(A, 'PUT', E('c', 'b1'), { body: { _blobs: [`${SHA}${N}x`] } });
  checkError(assert, r, 400, 'invalid_blobs', 'NUL in a hash');
  // a NUL elsewhere in the body does not hide "_blobs" from the check
  r = await api(A, 'PUT', E('c', 'b2'), { body: { note: `a${N}b`, _blobs: [SHA] } });
  checkError(assert, r, 422, 'missing_blob', 'NUL value beside _blobs');
  r = await apiOk(A, 'POST', `${sp(SPACE)}/changes`, { body: { changes: [
    { collection: 'c', id: 'b3', body: { note: `a${N}b`, _blobs: [SHA] } }] } }, 200);
  assert.equal(r.results[0].error, 'missing_blob', JSON.stringify(r));
  r = await apiOk(A, 'POST', `${sp(SPACE)}/replicate`, { body: { entities: [
    { collection: 'c', id: 'b4', rev: '1-aaa', revs: [], deleted: false, body: { note: `a${N}b`, _blobs: [SHA] } },
    { collection: 'c', id: 'b5', rev: '1-aaa', revs: [], deleted: false, body: { _blobs: [`${SHA}${N}x`] } }] } }, 200);
  assert.deepEqual(r.results.map((x) => x.error), ['missing_blob', 'invalid_blobs'], JSON.stringify(r));
  assert.deepEqual(await entityIds(A), []);
});

test('bodies with NUL values: a snapshot of them verifies, previews and restores; a sync carries them', async (t) => {
  const [A, B] = await Promise.all([server(t), server(t)]);
  await put(A, SPACE, 'c', 'n1', { t: `a${N}b`, list: [N, `${N}${N}`], nested: { k: `z${N}` } });
  await put(A, SPACE, 'c', 'n2', { plain: true });
  const { id } = await createSnapshot(A, SPACE);
  await put(A, SPACE, 'c', 'n1', { t: 'changed' });
  const pv = await api(A, 'GET', `${sp(SPACE)}/snapshots/${id}/preview`);
  assert.equal(pv.status, 200, pv.text);
  const dry = await api(A, 'POST', `${sp(SPACE)}/snapshots/${id}/restore`, { body: { confirm: id, dry_run: true } });
  assert.equal(dry.status, 200, dry.text);
  assert.equal(dry.body.changes.put, 1, dry.text);
  const rs = await api(A, 'POST', `${sp(SPACE)}/snapshots/${id}/restore`, { body: { confirm: id } });
  assert.equal(rs.status, 200, rs.text);
  assert.deepEqual((await getEntity(A, SPACE, 'c', 'n1')).body, { t: `a${N}b`, list: [N, `${N}${N}`], nested: { k: `z${N}` } });
  const job = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(job.pulled, 2, JSON.stringify(job));
  await assertConverged([A, B], SPACE);
  assert.equal((await getEntity(B, SPACE, 'c', 'n1')).body.t, `a${N}b`);
});
