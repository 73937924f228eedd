// body_members.test.mjs - issue 13: request bodies with defined members
// (keys, spaces, pushes, conflict resolution, snapshots, sync jobs, peers,
// /replicate, /blobs/missing) refuse a member they do not define with
// `400 unknown_member` naming it, and change nothing, instead of ignoring
// it ("dryrun" for "dry_run" ran a real restore; "forse" was dropped). A
// push item with an unknown member is that item's error; the others apply
// (SPEC §6: a result per item). Entity bodies are user data: never checked.
// What the project itself sends is still accepted: the dashboard's bodies
// (ui/app.js) here, the sync engine's requests by every sync_*.test.mjs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, putSpace, api, apiOk, checkError } from './helpers.mjs';
import { sp, put, syncStatus, startSync } from './sync_helpers.mjs';

const SPACE = 'members';

function refused(r, member, what) {
  const e = checkError(assert, r, 400, 'unknown_member', what);
  assert.equal(e.member, member, `${what}: the error names the member: ${r.text}`);
  assert.ok(e.message.includes(`"${member}"`), `${what}: the message names the member: ${e.message}`);
  assert.match(e.message, /it takes/, `${what}: the message says what the route takes: ${e.message}`);
  return e;
}

test('unknown members of request bodies are 400 unknown_member naming them, and change nothing', async (t) => {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  const e1 = await put(A, SPACE, 'c', 'e1', { v: 1, anything: { goes: 'in an entity body' } });
  const snap = await apiOk(A, 'POST', `${sp(SPACE)}/snapshots`, { body: {} }, 201);
  const st0 = await syncStatus(A, SPACE);
  const count = async (p, key) => (await apiOk(A, 'GET', p, {}, 200))[key].length;
  const keys0 = await count('/api/v1/keys?limit=1000', 'keys');
  const snaps0 = await count(`${sp(SPACE)}/snapshots?limit=1000`, 'snapshots');

  refused(await api(A, 'POST', '/api/v1/keys', { body: { role: 'reader', spaces: ['*'], name: 'k', expires: 'never' } }),
    'expires', 'POST /keys');
  assert.equal(await count('/api/v1/keys?limit=1000', 'keys'), keys0, 'no key made');

  const sm = refused(await api(A, 'PUT', '/api/v1/spaces/newsp', { body: { description: 'x' } }), 'description', 'PUT /spaces');
  assert.match(sm.message, /no members/);
  assert.equal((await api(A, 'GET', '/api/v1/spaces/newsp')).status, 404, 'no space made');
  assert.equal((await api(A, 'PUT', '/api/v1/spaces/newsp', { body: {} })).status, 201, 'an empty object is still fine');

  refused(await api(A, 'POST', `${sp(SPACE)}/changes`, {
    body: { changes: [{ collection: 'c', id: 'p1', base_rev: null, body: { a: 1 } }], atomic: true },
  }), 'atomic', 'POST /changes (top level)');

  refused(await api(A, 'POST', `${sp(SPACE)}/conflicts/01ARZ3NDEKTSV4RRFFQ69G5FAV/resolve`, {
    body: { strategy: 'local_wins', keep: true },
  }), 'keep', 'POST /conflicts/{id}/resolve');

  refused(await api(A, 'POST', `${sp(SPACE)}/snapshots`, { body: { note: 'n', kind: 'scheduled' } }), 'kind', 'POST /snapshots');
  assert.equal(await count(`${sp(SPACE)}/snapshots?limit=1000`, 'snapshots'), snaps0, 'no snapshot taken');

  // the typo that mattered: "dryrun" was ignored and the restore was real
  await put(A, SPACE, 'c', 'e2', { v: 2 });
  const mid = await syncStatus(A, SPACE);
  refused(await api(A, 'POST', `${sp(SPACE)}/snapshots/${snap.id}/restore`, { body: { confirm: snap.id, dryrun: true } }),
    'dryrun', 'POST /snapshots/{id}/restore');
  assert.deepEqual(await syncStatus(A, SPACE), mid, 'nothing restored');
  assert.equal(await count(`${sp(SPACE)}/snapshots?limit=1000`, 'snapshots'), snaps0, 'no pre_restore snapshot either');

  const jobs0 = (await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs`, {}, 200)).jobs.length;
  refused(await startSync(B, SPACE, A, { extra: { forse: true } }), 'forse', 'POST /sync');
  refused(await startSync(B, SPACE, A, { extra: { boostrap: 'snapshot' } }), 'boostrap', 'POST /sync (a misspelt bootstrap)');
  assert.equal((await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs`, {}, 200)).jobs.length, jobs0, 'no job started');
  assert.equal((await syncStatus(B, SPACE)).entity_count, 0, 'nothing pulled');

  refused(await api(B, 'PUT', `${sp(SPACE)}/peers/p`, {
    body: { url: A.base, space: SPACE, token: A.adminToken, direction: 'pull', every: 60 },
  }), 'every', 'PUT /peers/{name}');
  assert.deepEqual((await apiOk(B, 'GET', `${sp(SPACE)}/peers`, {}, 200)).peers, [], 'no peer stored');

  const feed = await apiOk(A, 'GET', `${sp(SPACE)}/changes?since=0&style=all_revs`, {}, 200);
  refused(await api(B, 'POST', `${sp(SPACE)}/replicate`, { body: { ...feed, origin: 'x' } }), 'origin', 'POST /replicate');
  assert.equal((await syncStatus(B, SPACE)).entity_count, 0, 'nothing replicated');

  refused(await api(A, 'POST', `${sp(SPACE)}/blobs/missing`, { body: { hashes: [], space: SPACE } }), 'space', 'POST /blobs/missing');

  assert.equal((await syncStatus(A, SPACE)).server_version, st0.server_version + 1, 'A changed only by the one PUT above');
  // entity bodies are user data: any member goes
  const e1again = await apiOk(A, 'GET', `${sp(SPACE)}/collections/c/entities/e1`, {}, 200);
  assert.deepEqual(e1again.body, e1.body);
  // and /replicate takes a feed page as it is, entity rows with their
  // version and times included, plus who sent it
  const rep = await api(B, 'POST', `${sp(SPACE)}/replicate`, { body: { source_instance: st0.instance_id, ...feed } });
  assert.equal(rep.status, 200, rep.text);
  assert.equal(rep.body.applied, feed.changes.length, rep.text);
  assert.deepEqual(rep.body.results.map((x) => `${x.collection}/${x.id}`).sort(), feed.changes.map((x) => `${x.collection}/${x.id}`).sort(),
    'each result names its entity');
});

test('a push item with an unknown member is that item\'s error (the others apply); the top level is checked whole', async (t) => {
  const A = await withServer(t);
  await putSpace(A, SPACE);
  const r = await api(A, 'POST', `${sp(SPACE)}/changes`, {
    body: {
      changes: [
        { collection: 'c', id: 'x', rev: '1-0123456789abcdef', body: { a: 1 } },      // "rev" is not a push member (base_rev is)
        { collection: 'c', id: 'y', base_rev: null, deleted: false, body: { b: 2 } },
      ],
    },
  });
  assert.equal(r.status, 200, r.text);
  const [bad, good] = r.body.results;
  assert.equal(bad.status, 'error', r.text);
  assert.equal(bad.error, 'unknown_member', r.text);
  assert.match(bad.message, /"rev" in changes\[0\]; it takes: collection, id, base_rev, deleted, body/, r.text);
  assert.equal(good.status, 'applied', r.text);
  assert.equal((await api(A, 'GET', `${sp(SPACE)}/collections/c/entities/x`)).status, 404, 'the bad item was not applied');
  assert.equal((await api(A, 'GET', `${sp(SPACE)}/collections/c/entities/y`)).status, 200, 'the good one was');
});

test('what the dashboard (ui/app.js) sends is accepted', async (t) => {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  await put(A, SPACE, 'c', 'e1', { v: 1 });
  // take (with and without a note; Prefer: respond-async)
  for (const body of [{}, { note: 'before the upgrade' }]) {
    const r = await api(A, 'POST', `${sp(SPACE)}/snapshots`, { body, headers: { Prefer: 'respond-async' } });
    assert.equal(r.status, 202, `take ${JSON.stringify(body)}: ${r.text}`);
    for (let k = 0; k < 100; k++) {
      const m = await apiOk(A, 'GET', `${sp(SPACE)}/snapshots/${r.body.id}`, {}, 200);
      if (m.status !== 'running') break;
      await new Promise((res) => setTimeout(res, 50));
    }
  }
  const snap = (await apiOk(A, 'GET', `${sp(SPACE)}/snapshots?limit=1`, {}, 200)).snapshots[0];
  // restore preview, then the typed confirmation
  const dry = await api(A, 'POST', `${sp(SPACE)}/snapshots/${snap.id}/restore`, { body: { confirm: snap.id, dry_run: true } });
  assert.equal(dry.status, 200, dry.text);
  const real = await api(A, 'POST', `${sp(SPACE)}/snapshots/${snap.id}/restore`, { body: { confirm: snap.id } });
  assert.equal(real.status, 200, real.text);
  // start a sync (the form's four fields)
  const job = await api(B, 'POST', `${sp(SPACE)}/sync`, {
    body: { peer_url: A.base, peer_space: SPACE, peer_token: A.adminToken, direction: 'pull' },
  });
  assert.equal(job.status, 202, job.text);
  // resolve a conflict: {strategy} and {strategy, body}
  for (const [i, strategy] of ['local_wins', 'merge'].entries()) {
    const pushed = await apiOk(A, 'POST', `${sp(SPACE)}/changes`, {
      body: { changes: [{ collection: 'c', id: 'e1', base_rev: null, body: { v: `stale ${i}` } }] },
    }, 200);
    assert.equal(pushed.results[0].status, 'conflict', JSON.stringify(pushed));
    const body = strategy === 'merge' ? { strategy, body: { v: 'merged' } } : { strategy };
    const rr = await api(A, 'POST', `${sp(SPACE)}/conflicts/${pushed.results[0].conflict_id}/resolve`, { body });
    assert.equal(rr.status, 200, `${strategy}: ${rr.text}`);
  }
});
