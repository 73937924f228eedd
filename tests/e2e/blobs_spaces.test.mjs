// blobs_spaces.test.mjs - blobs belong to spaces (SPEC §9): a blob is
// visible in a space (GET, HEAD, POST /blobs/missing, "_blobs" of entity
// writes through PUT, POST /changes, POST /replicate and conflict
// resolution, the blobs a restore brings) only if it was uploaded to that
// space or arrived there by sync. The bytes stay shared on disk; a space
// gets a blob only from someone who sends the bytes. Sync moves what the
// receiving space lacks; deleting a space removes its references, and a
// file goes once no space references it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import http from 'node:http';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { withServer, startServer, putSpace, createKey, api, apiOk, checkError, haveCommand, binaryRequest as raw } from './helpers.mjs';
import { sp, put, syncOk, startSync, syncStatus } from './sync_helpers.mjs';
import { until } from './snapshot_helpers.mjs';

const sha = (b) => createHash('sha256').update(b).digest('hex');
const blobUrl = (space, h) => `${sp(space)}/blobs/${h}`;
const blobFile = (srv, h) => path.join(srv.dataDir, 'blobs', h.slice(0, 2), h);


const upload = (srv, space, data, token) => raw(srv, 'PUT', blobUrl(space, sha(data)), { body: data, token });
async function uploadOk(srv, space, data, token, want = 201) {
  const r = await upload(srv, space, data, token);
  assert.equal(r.status, want, `PUT blob to ${space}: ${r.text}`);
  return sha(data);
}
async function missing(srv, space, hashes, token) {
  const b = await apiOk(srv, 'POST', `${sp(space)}/blobs/missing`, { body: { hashes }, token }, 200);
  return [...b.missing].sort();
}

/** A 404 for a blob, in the shape a never-uploaded blob gets. */
function assertNoBlob(r, h, what) {
  assert.equal(r.status, 404, `${what}: ${r.json ? r.text : `${r.buf.length} bytes of blob`}`);
  if (r.json) {
    assert.equal(r.json.error, 'not_found', what);
    assert.equal(r.json.message, `no blob ${h}`, `${what}: the same answer as for a blob nobody uploaded`);
  }
}

test('a blob of another space is invisible: GET/HEAD 404, listed missing, refused in _blobs (PUT, POST /changes, /replicate, conflict resolution); uploading the bytes to the space makes it visible', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'alpha');
  await putSpace(srv, 'beta');
  const readerA = (await createKey(srv, 'reader', ['alpha'], 'ra')).token;
  const writerA = (await createKey(srv, 'writer', ['alpha'], 'wa')).token;
  const readerB = (await createKey(srv, 'reader', ['beta'], 'rb')).token;
  const writerB = (await createKey(srv, 'writer', ['beta'], 'wb')).token;

  const secret = randomBytes(40 * 1024);
  const X = await uploadOk(srv, 'beta', secret, writerB);
  const never = sha(Buffer.from('nobody uploaded this'));
  await put(srv, 'beta', 'docs', 'b1', { title: 'beta file', _blobs: [X] });
  assert.ok(existsSync(blobFile(srv, X)), 'the bytes are on disk');
  assert.equal((await raw(srv, 'GET', blobUrl('beta', X), { token: readerB })).status, 200, 'beta sees its blob');

  // alpha, with its own keys and with the admin key (visibility is per space, not per key)
  for (const [who, tok] of [['alpha reader', readerA], ['alpha writer', writerA], ['admin', srv.adminToken]]) {
    assertNoBlob(await raw(srv, 'GET', blobUrl('alpha', X), { token: tok }), X, `GET beta's blob in alpha (${who})`);
    assertNoBlob(await raw(srv, 'GET', blobUrl('alpha', never), { token: tok }), never, `GET a blob nobody has (${who})`);
    const hd = await raw(srv, 'HEAD', blobUrl('alpha', X), { token: tok });
    assert.equal(hd.status, 404, `HEAD beta's blob in alpha (${who})`);
    const rg = await raw(srv, 'GET', blobUrl('alpha', X), { token: tok, headers: { Range: 'bytes=0-9' } });
    assert.equal(rg.status, 404, `a Range GET of beta's blob in alpha (${who})`);
    assert.deepEqual(await missing(srv, 'alpha', [X, never], tok), [X, never].sort(), `missing in alpha lists beta's blob (${who})`);
  }
  // the alpha key may not look into beta at all
  assert.equal((await raw(srv, 'GET', blobUrl('beta', X), { token: readerA })).status, 403);

  // entity writes in alpha naming beta's blob
  const refused = await api(srv, 'PUT', `${sp('alpha')}/collections/docs/entities/a1`, { token: writerA, body: { title: 'steal', _blobs: [X] } });
  const eb = checkError(assert, refused, 422, 'missing_blob', 'PUT entity naming beta\'s blob');
  assert.deepEqual(eb.missing, [X]);
  const ch = await apiOk(srv, 'POST', `${sp('alpha')}/changes`, {
    token: writerA, body: { changes: [{ collection: 'docs', id: 'a2', base_rev: null, deleted: false, body: { _blobs: [X] } }] },
  }, 200);
  assert.equal(ch.results[0].status, 'error', JSON.stringify(ch));
  assert.equal(ch.results[0].error, 'missing_blob', JSON.stringify(ch));
  // /replicate with a revision as a peer would send it (beta's own entity, relabelled)
  const feed = await apiOk(srv, 'GET', `${sp('beta')}/changes?since=0&style=all_revs`, {}, 200);
  const rep = await apiOk(srv, 'POST', `${sp('alpha')}/replicate`, { token: writerA, body: { entities: feed.changes } }, 200);
  assert.equal(rep.applied, 0, JSON.stringify(rep));
  assert.equal(rep.errors, 1, JSON.stringify(rep));
  assert.equal(rep.results[0].status, 'error');
  assert.equal(rep.results[0].error, 'missing_blob', JSON.stringify(rep));
  // a conflict resolved with a merge body naming beta's blob
  const e = await put(srv, 'alpha', 'docs', 'c1', { v: 1 });
  await put(srv, 'alpha', 'docs', 'c1', { v: 2 }, { ifMatch: e.rev });
  const stale = await apiOk(srv, 'POST', `${sp('alpha')}/changes`, {
    token: writerA, body: { changes: [{ collection: 'docs', id: 'c1', base_rev: e.rev, deleted: false, body: { v: 'other' } }] },
  }, 200);
  assert.equal(stale.results[0].status, 'conflict', JSON.stringify(stale));
  const merged = await api(srv, 'POST', `${sp('alpha')}/conflicts/${stale.results[0].conflict_id}/resolve`, {
    token: writerA, body: { strategy: 'merge', body: { v: 3, _blobs: [X] } },
  });
  checkError(assert, merged, 422, 'missing_blob', 'merge body naming beta\'s blob');
  assert.equal((await syncStatus(srv, 'alpha')).entity_count, 1, 'nothing of it was written in alpha');

  // a name without the bytes claims nothing
  const noBytes = await raw(srv, 'PUT', blobUrl('alpha', X), { body: Buffer.alloc(0), token: writerA });
  checkError(assert, noBytes, 422, 'hash_mismatch', 'PUT with no bytes');
  const wrongBytes = await raw(srv, 'PUT', blobUrl('alpha', X), { body: randomBytes(100), token: writerA });
  assert.equal(wrongBytes.status, 422, wrongBytes.text);
  assertNoBlob(await raw(srv, 'GET', blobUrl('alpha', X), { token: readerA }), X, 'still invisible in alpha');

  // uploading the bytes to alpha: 201 for alpha although they are on disk
  const up = await upload(srv, 'alpha', secret, writerA);
  assert.equal(up.status, 201, up.text);
  assert.deepEqual(up.json, { sha256: X, size: secret.length, created: true });
  const again = await upload(srv, 'alpha', secret, writerA);
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.created, false);
  const g = await raw(srv, 'GET', blobUrl('alpha', X), { token: readerA });
  assert.equal(g.status, 200);
  assert.ok(g.buf.equals(secret));
  assert.match(g.headers['cache-control'] || '', /^private\b/, 'a per-space answer is not for shared caches');
  assert.equal((await raw(srv, 'HEAD', blobUrl('alpha', X), { token: readerA })).status, 200);
  assert.deepEqual(await missing(srv, 'alpha', [X, never], readerA), [never]);
  assert.equal((await api(srv, 'PUT', `${sp('alpha')}/collections/docs/entities/a1`, { token: writerA, body: { title: 'mine', _blobs: [X] } })).status, 201);
  // beta is as it was
  assert.equal((await raw(srv, 'GET', blobUrl('beta', X), { token: readerB })).status, 200);
  assert.deepEqual(await missing(srv, 'beta', [X, never], readerB), [never]);
});

test('deleting a space: its references go; a blob another space has survives, one only it had is removed', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'alpha');
  await putSpace(srv, 'beta');
  const shared = randomBytes(30 * 1024);
  const own = randomBytes(20 * 1024);
  const S = await uploadOk(srv, 'alpha', shared);
  await uploadOk(srv, 'beta', shared);
  const O = await uploadOk(srv, 'beta', own);
  await put(srv, 'alpha', 'docs', 'a', { _blobs: [S] });
  await put(srv, 'beta', 'docs', 'b', { _blobs: [S, O] });
  assert.ok(existsSync(blobFile(srv, O)));

  await apiOk(srv, 'DELETE', `${sp('beta')}?confirm=beta`, {}, 200);
  await until(() => !existsSync(blobFile(srv, O)), { what: 'the file only beta referenced to be removed' });
  assert.ok(existsSync(blobFile(srv, S)), 'the shared file stays');
  const g = await raw(srv, 'GET', blobUrl('alpha', S));
  assert.equal(g.status, 200);
  assert.ok(g.buf.equals(shared), 'alpha still reads the shared blob');
  assert.deepEqual(await missing(srv, 'alpha', [S, O]), [O]);

  // a new space of the same name starts without references
  await putSpace(srv, 'beta');
  assert.deepEqual(await missing(srv, 'beta', [S, O]), [S, O].sort());
  assertNoBlob(await raw(srv, 'GET', blobUrl('beta', S)), S, 'the old beta\'s blob in the new beta');
  checkError(assert, await api(srv, 'PUT', `${sp('beta')}/collections/docs/entities/b`, { body: { _blobs: [S] } }), 422, 'missing_blob');

  // and the last reference going removes the file
  await apiOk(srv, 'DELETE', `${sp('alpha')}?confirm=alpha`, {}, 200);
  await until(() => !existsSync(blobFile(srv, S)), { what: 'the shared file to go with its last space' });
});

test('sync moves what the receiving space lacks, even when the bytes are on disk for another space', async (t) => {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  for (const s of ['alpha', 'beta']) {
    await putSpace(A, s);
    await putSpace(B, s);
  }
  const fx = randomBytes(64 * 1024);
  const fy = randomBytes(16 * 1024);
  const fz = randomBytes(8 * 1024);
  // A has X for beta; B has X and Y for alpha
  const X = await uploadOk(A, 'beta', fx);
  await put(A, 'beta', 'docs', 'bx', { _blobs: [X] });
  await uploadOk(B, 'alpha', fx);
  const Y = await uploadOk(B, 'alpha', fy);
  await put(B, 'alpha', 'docs', 'e1', { _blobs: [X] });
  await put(B, 'alpha', 'docs', 'e2', { _blobs: [Y] });

  // pull into A's alpha: X comes from the peer although A has its bytes (for beta)
  const j1 = await syncOk(A, 'alpha', B, { direction: 'pull' });
  assert.equal(j1.pulled, 2, JSON.stringify(j1));
  assert.equal(j1.blobs, 2, `both blobs alpha lacked were fetched: ${JSON.stringify(j1)}`);
  assert.deepEqual(await missing(A, 'alpha', [X, Y]), [], 'A\'s alpha has both now');
  assert.ok((await raw(A, 'GET', blobUrl('alpha', Y))).buf.equals(fy));
  assert.ok((await raw(A, 'GET', blobUrl('alpha', X))).buf.equals(fx));

  // a new reference to a blob A's alpha has: nothing moves
  await put(B, 'alpha', 'docs', 'e3', { _blobs: [X, Y] });
  const j2 = await syncOk(A, 'alpha', B, { direction: 'pull' });
  assert.equal(j2.pulled, 1, JSON.stringify(j2));
  assert.equal(j2.blobs, 0, JSON.stringify(j2));

  // push from A's alpha: only Z (B's alpha lacks it) is sent
  const Z = await uploadOk(A, 'alpha', fz);
  await put(A, 'alpha', 'docs', 'e4', { _blobs: [Z, X] });
  const j3 = await syncOk(A, 'alpha', B, { direction: 'push' });
  assert.equal(j3.pushed, 1, JSON.stringify(j3));
  assert.equal(j3.blobs, 1, `only Z was sent: ${JSON.stringify(j3)}`);
  assert.ok((await raw(B, 'GET', blobUrl('alpha', Z))).buf.equals(fz));

  // push A's beta to B's beta: B has X's bytes (for alpha) but its beta does not
  assert.deepEqual(await missing(B, 'beta', [X]), [X]);
  const j4 = await syncOk(A, 'beta', B, { direction: 'push' });
  assert.equal(j4.pushed, 1, JSON.stringify(j4));
  assert.equal(j4.blobs, 1, `X was sent to B's beta: ${JSON.stringify(j4)}`);
  assert.deepEqual(await missing(B, 'beta', [X, Y, Z]), [Y, Z].sort(), 'B\'s beta got X and nothing else');

  const idle = await syncOk(A, 'alpha', B, { direction: 'both' });
  assert.equal(idle.blobs, 0, JSON.stringify(idle));
  for (const s of ['alpha', 'beta']) {
    assert.equal((await syncStatus(A, s)).digest, (await syncStatus(B, s)).digest, `${s} converged`);
  }
});

test('a pull does not give a space a blob by its name: a peer that names a blob without serving its bytes fails the pull', async (t) => {
  const A = await withServer(t);
  await putSpace(A, 'alpha');
  await putSpace(A, 'beta');
  const X = await uploadOk(A, 'beta', randomBytes(4096));
  await put(A, 'beta', 'docs', 'bx', { _blobs: [X] });
  // a fake peer that serves beta's page as its own, but not the blob's bytes
  const page = await apiOk(A, 'GET', `${sp('beta')}/changes?since=0&style=all_revs&limit=1000`, {}, 200);
  const blobGets = [];
  const fake = http.createServer((req, res) => {
    const send = (status, obj) => {
      const body = JSON.stringify(obj);
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (req.url.endsWith('/sync/status')) {
      send(200, { space: 'alpha', space_uid: '01J00000000000000000000000', instance_id: '01J00000000000000000000001', server_version: page.last_version, digest: '0'.repeat(64) });
    } else if (req.url.includes('/changes?')) {
      send(200, page);
    } else if (req.url.includes('/blobs/')) {
      blobGets.push(req.url);
      send(404, { error: 'not_found', message: 'no blob' });
    } else {
      send(404, { error: 'not_found', message: req.url });
    }
  });
  await new Promise((r) => fake.listen(0, '127.0.0.1', r));
  t.after(() => new Promise((r) => fake.close(r)));
  const r = await startSync(A, 'alpha', null, { direction: 'pull', peerUrl: `http://127.0.0.1:${fake.address().port}`, token: 'x' });
  assert.equal(r.status, 502, r.text);   // a wait job whose peer failed
  assert.equal(r.body.status, 'failed', `the pull must fail: ${r.text}`);
  assert.match(r.body.error, /blob/, r.text);
  assert.equal(blobGets.length, 1, 'the bytes were asked for although they are on disk here');
  assert.equal((await syncStatus(A, 'alpha')).entity_count, 0, 'nothing was applied');
  assertNoBlob(await raw(A, 'GET', blobUrl('alpha', X)), X, 'alpha did not get beta\'s blob');
  assert.deepEqual(await missing(A, 'alpha', [X]), [X]);
});

test('restore: every blob the snapshot\'s entities name must be in the space (an import of another space\'s data included)', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'alpha');
  await putSpace(srv, 'beta');
  const bytes = randomBytes(10 * 1024);
  const X = await uploadOk(srv, 'beta', bytes);
  await put(srv, 'beta', 'docs', 'b1', { title: 'with file', _blobs: [X] });
  const snap = await apiOk(srv, 'POST', `${sp('beta')}/snapshots`, { body: {}, timeoutMs: 60000 }, 201);
  const dl = await raw(srv, 'GET', `${sp('beta')}/snapshots/${snap.id}/download`);
  assert.equal(dl.status, 200);
  // the import only stores the file: it changes no entity and needs no blob
  const im = await api(srv, 'POST', `${sp('alpha')}/snapshots/import`, { body: dl.buf, headers: { 'Content-Type': 'application/x-ndjson' }, timeoutMs: 60000 });
  assert.equal(im.status, 201, im.text);
  const restore = (dry = false) => api(srv, 'POST', `${sp('alpha')}/snapshots/${im.body.id}/restore`, { body: { confirm: im.body.id, dry_run: dry }, timeoutMs: 60000 });
  const dry = checkError(assert, await restore(true), 422, 'missing_blob', 'a dry run says the restore would be refused');
  assert.deepEqual(dry.missing, [X]);
  const refused = await restore();
  const b = checkError(assert, refused, 422, 'missing_blob', 'restoring entities that name beta\'s blob into alpha');
  assert.deepEqual(b.missing, [X]);
  assert.equal((await syncStatus(srv, 'alpha')).entity_count, 0, 'nothing changed');
  assertNoBlob(await raw(srv, 'GET', blobUrl('alpha', X)), X, 'the refused restore gave alpha nothing');
  // with the bytes uploaded to alpha the restore goes through
  await uploadOk(srv, 'alpha', bytes);
  const dry2 = await restore(true);
  assert.equal(dry2.status, 200, dry2.text);
  assert.equal(dry2.body.changes.put, 1);
  const ok = await restore();
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.body.changes.put, 1);
  // and a space's own snapshot restores (its references outlive the entities)
  await put(srv, 'beta', 'docs', 'b1', { title: 'no file now' });
  const own = await api(srv, 'POST', `${sp('beta')}/snapshots/${snap.id}/restore`, { body: { confirm: snap.id }, timeoutMs: 60000 });
  assert.equal(own.status, 200, own.text);
});

test('an existing database: the upgrade references each blob from the spaces whose data names it; a blob nothing names is removed at start', { skip: !haveCommand('sqlite3') && 'needs the sqlite3 command' }, async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-e2e-'));
  let srv = await startServer({ dataDir, keepData: true });
  t.after(async () => {
    if (!srv.exited) await srv.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });
  await putSpace(srv, 'alpha');
  await putSpace(srv, 'beta');
  const fx = randomBytes(1000);
  const fw = randomBytes(1001);
  const fy = randomBytes(1002);
  const X = await uploadOk(srv, 'alpha', fx);        // named by a live entity of alpha
  const W = await uploadOk(srv, 'alpha', fw);        // named only by a snapshot of alpha
  const Y = await uploadOk(srv, 'beta', fy);         // named by nothing
  await put(srv, 'alpha', 'docs', 'x', { _blobs: [X] });
  const w = await put(srv, 'alpha', 'docs', 'w', { _blobs: [W] });
  const snap = await apiOk(srv, 'POST', `${sp('alpha')}/snapshots`, { body: {}, timeoutMs: 60000 }, 201);
  await put(srv, 'alpha', 'docs', 'w', { plain: true }, { ifMatch: w.rev });
  const stopped = await srv.stop();
  assert.equal(stopped.code, 0);

  // back to the schema before blobs had spaces
  const db = path.join(dataDir, 'snapsync.db');
  // (and before sync jobs counted the items they could not apply: migration 7)
  // back to schema 5: undo migrations 6 (space_blobs), 7 (snapshot integrity), 8 (sync job errors), 9 (off-site copies),
  // 10 (sync job bootstrap), 11 (the tombstones' index)
  const q = spawnSync('sqlite3', [db, 'DROP TABLE space_blobs; ' +
    'ALTER TABLE snapshots DROP COLUMN integrity; ALTER TABLE snapshots DROP COLUMN integrity_error; ' +
    'ALTER TABLE snapshots DROP COLUMN integrity_checked_at; ' +
    'ALTER TABLE sync_jobs DROP COLUMN errors; ALTER TABLE sync_jobs DROP COLUMN error_items; ' +
    'DROP TABLE snapshot_remote; ' +
    'ALTER TABLE sync_jobs DROP COLUMN bootstrap; DROP INDEX entities_tombstones; ' +
    'DELETE FROM schema_version WHERE version >= 6;'], { encoding: 'utf8' });
  assert.equal(q.status, 0, q.stderr);
  assert.ok(existsSync(path.join(dataDir, 'blobs', Y.slice(0, 2), Y)));

  srv = await startServer({ dataDir, keepData: true });
  const rec = await srv.waitForLog((o) => o.msg === 'blobs_recovered');
  assert.equal(rec.unreferenced_removed, 1, JSON.stringify(rec));
  assert.ok(!existsSync(path.join(dataDir, 'blobs', Y.slice(0, 2), Y)), 'the blob nothing named is gone');
  assert.deepEqual(await missing(srv, 'alpha', [X, W, Y]), [Y]);
  assert.deepEqual(await missing(srv, 'beta', [X, W, Y]), [X, W, Y].sort());
  assert.ok((await raw(srv, 'GET', blobUrl('alpha', X))).buf.equals(fx));
  const r = await api(srv, 'POST', `${sp('alpha')}/snapshots/${snap.id}/restore`, { body: { confirm: snap.id }, timeoutMs: 60000 });
  assert.equal(r.status, 200, `the old snapshot still restores: ${r.text}`);
  const v = spawnSync('sqlite3', [db, 'SELECT max(version) FROM schema_version'], { encoding: 'utf8' });
  assert.equal(v.stdout.trim(), '11');   // the latest migration
  assert.equal((await srv.stop()).code, 0);
  assert.ok(readFileSync(path.join(dataDir, 'blobs', X.slice(0, 2), X)).equals(fx), 'a referenced file is kept at start');
});
