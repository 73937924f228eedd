// sync_bootstrap.test.mjs - POST /sync {"bootstrap":"snapshot"}: an empty
// space starts from the peer's newest snapshot with the peer's revisions
// (same digest, no conflicts), the pull checkpoint at the snapshot's
// server_version, then the changes after it pulled. Falls back to a plain
// pull (and says so in the job) when the peer has no usable snapshot or the
// space is not empty; a download that does not check is refused with
// nothing applied; a kill -9 of the target half-way leaves a consistent
// space that the next job completes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { withServer, startServer, putSpace, api, apiOk, checkError, REPO } from './helpers.mjs';
import { openSSE, pushMany } from './sse_helpers.mjs';
import { sp, startSync, syncStatus, put, del, conflicts, assertConverged, states, waitFinished } from './sync_helpers.mjs';
import { createSnapshot, downloadGz } from './snapshot_helpers.mjs';

const SPACE = 'boot';
const sha256 = (b) => createHash('sha256').update(b).digest('hex');

/** The source's state: edited, deleted, blob-bearing and conflicted
 *  entities, so every kind of line and the tombstones travel. */
async function fillSource(A) {
  await putSpace(A, SPACE);
  await pushMany(A, SPACE, 300, { collection: 'notes', bodyOf: (i) => ({ i, t: `note ${i}` }) });
  for (let i = 0; i < 20; i++) await put(A, SPACE, 'notes', `e${i}`, { i, edited: 1 });          // rev 2
  for (let i = 20; i < 30; i++) await del(A, SPACE, 'notes', `e${i}`);                          // tombstones
  const blob = Buffer.from('a blob for the bootstrap');
  const h = sha256(blob);
  const r = await api(A, 'PUT', `${sp(SPACE)}/blobs/${h}`, { body: blob, headers: { 'Content-Type': 'application/octet-stream' } });
  assert.ok([200, 201].includes(r.status), r.text);
  await put(A, SPACE, 'files', 'f1', { name: 'x', _blobs: [h] });
  // a conflict record on A: a divergent rev of e40 with a lower hash loses and is kept
  const cur = (await apiOk(A, 'GET', `${sp(SPACE)}/collections/notes/entities/e40`, {}, 200));
  const n = Number(cur.rev.split('-')[0]);
  const rep = await apiOk(A, 'POST', `${sp(SPACE)}/replicate`, {
    body: { entities: [{ collection: 'notes', id: 'e40', rev: `${n}-0000000000000001`, revs: [`${n}-0000000000000001`], deleted: false, body: { lost: true } }] },
  }, 200);
  assert.equal(rep.conflicts, 1, JSON.stringify(rep));
  return { blob, h };
}

test('bootstrap from the newest snapshot: same digest, no new conflicts, pull from its server_version', { timeout: 60000 }, async (t) => {
  const A = await withServer(t);
  const B = await withServer(t);
  const { blob, h } = await fillSource(A);
  // an older snapshot, then the newest one: the newest is taken
  await createSnapshot(A, SPACE);
  const snap = await createSnapshot(A, SPACE);
  assert.equal(snap.status, 'completed');
  const atSnap = await syncStatus(A, SPACE);
  // changes after the snapshot: edits, a new entity, a delete, a revival
  for (let i = 50; i < 60; i++) await put(A, SPACE, 'notes', `e${i}`, { i, after: true });
  await put(A, SPACE, 'notes', 'new1', { fresh: true });
  await del(A, SPACE, 'notes', 'e61');
  const after = await syncStatus(A, SPACE);
  const changedAfter = after.server_version - atSnap.server_version;
  assert.equal(changedAfter, 12);

  await putSpace(B, SPACE);
  const ev = await openSSE(B.port, '/api/v1/events?topics=sync', { token: B.adminToken });
  t.after(() => ev.close());
  const r = await startSync(B, SPACE, A, { direction: 'pull', extra: { bootstrap: 'snapshot' } });
  assert.equal(r.status, 200, r.text);
  const job = r.body;
  assert.equal(job.status, 'completed', r.text);
  assert.deepEqual(job.bootstrap, {
    status: 'applied', snapshot: snap.id, server_version: snap.server_version,
    // every tombstone the peer has: the 10 before the snapshot, and e61 deleted after it
    entities: snap.entity_total, tombstones: 11, reason: null,
  });
  assert.equal(job.conflicts, 0, 'no divergence: the revisions are the peer\'s');
  // the pull after the snapshot fetched only what changed after it (e61's
  // tombstone came with the others already: known, so not counted again)
  assert.equal(job.pulled, snap.entity_total + 11 + changedAfter - 1, r.text);
  assert.ok(job.blobs >= 1, 'the blob the snapshot names came from the peer');

  const conv = await assertConverged([A, B], SPACE, 'after the bootstrap');
  assert.equal(conv.status[0].tombstone_count, 11);
  assert.equal(conv.conflicts.length, 1, 'the conflict record travelled with its entity');
  const [cA] = await conflicts(A, SPACE);
  const [cB] = await conflicts(B, SPACE);
  assert.equal(cB.conflicting_rev, cA.conflicting_rev);
  assert.deepEqual(cB.conflicting_body, { lost: true });
  // revisions kept with their history: an edit on A fast-forwards on B
  const eA = await apiOk(A, 'GET', `${sp(SPACE)}/collections/notes/entities/e3`, {}, 200);
  const eB = await apiOk(B, 'GET', `${sp(SPACE)}/collections/notes/entities/e3`, {}, 200);
  assert.equal(eB.rev, eA.rev);
  assert.ok(eA.rev.startsWith('2-'));
  const blobB = await api(B, 'GET', `${sp(SPACE)}/blobs/${h}`);
  assert.equal(blobB.status, 200);
  assert.equal(blobB.text, blob.toString());

  // the phases, in order: status, bootstrap, pull, done
  const phases = ev.ofType('sync').map((e) => e.json).filter((e) => e.job === job.id).map((e) => e.phase);
  const seen = phases.filter((p, i) => p !== phases[i - 1]);
  assert.deepEqual(seen, ['status', 'bootstrap', 'pull', 'done'], phases.join(','));

  // the stored checkpoint is where the pull goes on: a later job pulls only the new change
  await put(A, SPACE, 'notes', 'e5', { later: true });
  const again = await startSync(B, SPACE, A, { direction: 'pull' });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.body.pulled, 1);
  assert.equal(again.body.bootstrap, null);
  await assertConverged([A, B], SPACE, 'after a later pull');
  // the job row says the same after it is read back from storage
  const rows = await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs`, {}, 200);
  assert.equal(rows.jobs.find((x) => x.id === job.id).bootstrap.status, 'applied');
  assert.deepEqual(readdirSync(path.join(B.dataDir, 'snapshots')).filter((f) => f.startsWith('boot-')), [], 'no download left');
});

test('no snapshot on the peer, or a space that is not empty: a plain pull, and the job says why', { timeout: 60000 }, async (t) => {
  const A = await withServer(t);
  const B = await withServer(t);
  await putSpace(A, SPACE);
  await pushMany(A, SPACE, 50, { bodyOf: (i) => ({ i }) });
  await del(A, SPACE, 'c', 'e7');
  await putSpace(B, SPACE);
  let r = await startSync(B, SPACE, A, { direction: 'pull', extra: { bootstrap: 'snapshot' } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.bootstrap.status, 'skipped');
  assert.equal(r.body.bootstrap.reason, 'the peer has no completed snapshot of the space');
  assert.equal(r.body.pulled, 50);
  await assertConverged([A, B], SPACE, 'plain pull');

  // a non-empty target: skipped, even with a snapshot there
  await createSnapshot(A, SPACE);
  const C = await withServer(t);
  await putSpace(C, SPACE);
  await put(C, SPACE, 'c', 'mine', { local: true });
  r = await startSync(C, SPACE, A, { direction: 'both', extra: { bootstrap: 'snapshot' } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.bootstrap.status, 'skipped');
  assert.match(r.body.bootstrap.reason, /not empty/);
  assert.equal(r.body.bootstrap.snapshot, null);
  await assertConverged([A, C], SPACE, 'plain both');

  // the member's checks
  const bad = await startSync(B, SPACE, A, { direction: 'push', extra: { bootstrap: 'snapshot' } });
  checkError(assert, bad, 400, 'invalid_body', 'bootstrap with a push');
  const bad2 = await startSync(B, SPACE, A, { direction: 'pull', extra: { bootstrap: 'yes' } });
  checkError(assert, bad2, 400, 'invalid_body', 'bootstrap value');
  // GET /changes?deleted=only: the tombstones alone
  const tomb = await apiOk(A, 'GET', `${sp(SPACE)}/changes?deleted=only&style=all_revs`, {}, 200);
  assert.deepEqual(tomb.changes.map((e) => e.id), ['e7']);
  const badq = await api(A, 'GET', `${sp(SPACE)}/changes?deleted=maybe`);
  checkError(assert, badq, 400, 'invalid_parameter', 'deleted=maybe');
});

/** A proxy in front of A that passes everything through, except what
 *  rewrite({url, status, headers, body}) changes. */
async function proxyTo(t, A, rewrite) {
  const srv = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const up = http.request({ host: '127.0.0.1', port: A.port, path: req.url, method: req.method, headers: req.headers }, (ur) => {
        const parts = [];
        ur.on('data', (c) => parts.push(c));
        ur.on('end', () => {
          const out = rewrite({ url: req.url, status: ur.statusCode, headers: { ...ur.headers }, body: Buffer.concat(parts) });
          delete out.headers['transfer-encoding'];
          out.headers['content-length'] = String(out.body.length);
          res.writeHead(out.status, out.headers);
          res.end(out.body);
        });
      });
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => srv.close(resolve)));
  return { base: `http://127.0.0.1:${srv.address().port}`, adminToken: A.adminToken };
}

test('a download that does not check is refused and nothing is applied', { timeout: 60000 }, async (t) => {
  const A = await withServer(t);
  const B = await withServer(t);
  await putSpace(A, SPACE);
  await pushMany(A, SPACE, 200, { bodyOf: (i) => ({ i, pad: 'p'.repeat(50) }) });
  const snap = await createSnapshot(A, SPACE);
  const gz = (await downloadGz(A, SPACE, snap.id)).body;
  const isDownload = (u) => u.includes(`/snapshots/${snap.id}/download`);
  await putSpace(B, SPACE);

  // 1. a byte flipped in the middle: not the bytes the peer recorded
  const flip = await proxyTo(t, A, (x) => {
    if (isDownload(x.url)) { const b = Buffer.from(x.body); b[b.length >> 1] ^= 0x55; x.body = b; }
    return x;
  });
  let r = await startSync(B, SPACE, flip, { direction: 'pull', extra: { bootstrap: 'snapshot' } });
  assert.equal(r.body.status, 'failed', r.text);
  assert.match(r.body.error, /^bootstrap: the downloaded snapshot \w+ does not match its sha256 /);
  assert.equal(r.status, 502);
  let st = await syncStatus(B, SPACE);
  assert.equal(st.server_version, 0, 'nothing applied');
  assert.equal(st.entity_count, 0);

  // 2. a whole, valid file that is not the one the peer recorded: one line
  // less, gzipped again (parses, counts fixed up, but another sha256)
  const lines = gunzipSync(gz).toString().split('\n').filter(Boolean);
  const hdr = JSON.parse(lines[0]);
  const dropped = JSON.parse(lines[1]);
  hdr.entity_total -= 1;
  hdr.entity_counts[dropped.collection] -= 1;
  const other = gzipSync(Buffer.from([JSON.stringify(hdr), ...lines.slice(2)].join('\n') + '\n'));
  const swap = await proxyTo(t, A, (x) => {
    if (isDownload(x.url)) x.body = other;
    if (x.url.includes('/snapshots?')) {                   // the size must allow the other file
      const l = JSON.parse(x.body);
      for (const s of l.snapshots) s.size_bytes = Math.max(s.size_bytes, other.length);
      x.body = Buffer.from(JSON.stringify(l));
    }
    return x;
  });
  r = await startSync(B, SPACE, swap, { direction: 'pull', extra: { bootstrap: 'snapshot' } });
  assert.equal(r.body.status, 'failed', r.text);
  assert.match(r.body.error, /does not match its sha256/);
  st = await syncStatus(B, SPACE);
  assert.equal(st.server_version, 0, 'nothing applied');

  // 2b. the same file with the peer's listing made to match it (sha256 and
  // size): its sha256 passes, the line count does not match its header's
  // any more... make it a line that is not valid instead: a bad rev
  const badLine = { ...JSON.parse(lines[2]), rev: 'not-a-rev' };
  const broken = gzipSync(Buffer.from([lines[0], lines[1], JSON.stringify(badLine), ...lines.slice(3)].join('\n') + '\n'));
  const lie = await proxyTo(t, A, (x) => {
    if (isDownload(x.url)) x.body = broken;
    if (x.url.includes('/snapshots?')) {
      const l = JSON.parse(x.body);
      for (const s of l.snapshots) Object.assign(s, { sha256: sha256(broken), size_bytes: broken.length });
      x.body = Buffer.from(JSON.stringify(l));
    }
    return x;
  });
  r = await startSync(B, SPACE, lie, { direction: 'pull', extra: { bootstrap: 'snapshot' } });
  assert.equal(r.body.status, 'failed', r.text);
  assert.match(r.body.error, /^bootstrap: the snapshot's line 3 is not valid: /);
  st = await syncStatus(B, SPACE);
  assert.equal(st.server_version, 0, 'nothing applied: the bad line is in the first batch');

  // 3. a v1 snapshot (the committed fixture, served as the peer's newest):
  // its lines carry no history, so the job pulls instead
  const v1 = readFileSync(path.join(REPO, 'tests/unit/fixtures/snapshot-v1.ndjson.gz'));
  const v1hdr = JSON.parse(gunzipSync(v1).toString().split('\n')[0]);
  const old = await proxyTo(t, A, (x) => {
    if (isDownload(x.url)) x.body = v1;
    if (x.url.includes('/sync/status')) {                  // the fixture's space_uid
      const s = JSON.parse(x.body);
      s.space_uid = v1hdr.space_uid;
      s.server_version = Math.max(s.server_version, v1hdr.server_version);
      x.body = Buffer.from(JSON.stringify(s));
    }
    if (x.url.includes('/snapshots?')) {
      const l = JSON.parse(x.body);
      for (const s of l.snapshots) Object.assign(s, { sha256: sha256(v1), size_bytes: v1.length, server_version: v1hdr.server_version });
      x.body = Buffer.from(JSON.stringify(l));
    }
    return x;
  });
  r = await startSync(B, SPACE, old, { direction: 'pull', extra: { bootstrap: 'snapshot' } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.bootstrap.status, 'skipped');
  assert.match(r.body.bootstrap.reason, /format v1: its lines carry no revision history/);
  assert.equal(r.body.pulled, 200);
  await assertConverged([A, B], SPACE, 'after the fallback');
});

/* A target B on a data dir of its own (removed after the test), pulling
 * from A with a bootstrap from A's newest snapshot, once its first batch
 * is applied. box.B is what the cleanup stops: set it when B restarts. */
async function bootstrapUnderway(t, A) {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-e2e-boot-'));
  const box = { B: await startServer({ dataDir }) };
  t.after(async () => { try { await box.B.stop(); } catch { /* reported */ } rmSync(dataDir, { recursive: true, force: true }); });
  await putSpace(box.B, SPACE);
  const ev = await openSSE(box.B.port, '/api/v1/events?topics=sync', { token: box.B.adminToken });
  const r = await startSync(box.B, SPACE, A, { direction: 'pull', wait: false, extra: { bootstrap: 'snapshot' } });
  assert.equal(r.status, 202, r.text);
  await ev.waitFor(() => ev.ofType('sync').some((e) => e.json?.phase === 'bootstrap' && e.json.pulled > 0) || undefined,
    60000, 'a bootstrap batch applied');
  return { box, dataDir, r, ev };
}

test('kill -9 of the target mid-bootstrap: a consistent space, the next job completes it', { timeout: 120000 }, async (t) => {
  const A = await withServer(t);
  await putSpace(A, SPACE);
  const N = 30000;
  await pushMany(A, SPACE, N, { makeId: (i) => `k${String(i).padStart(6, '0')}`, bodyOf: (i) => ({ i, pad: 'x'.repeat(200) }) });
  for (let i = 0; i < 50; i++) await put(A, SPACE, 'c', `k${String(i * 7).padStart(6, '0')}`, { edited: i });
  await createSnapshot(A, SPACE);

  const { box, dataDir, r, ev } = await bootstrapUnderway(t, A);
  let B = box.B;
  ev.close();
  await B.kill9();

  B = box.B = await startServer({ dataDir });
  const job = await waitFinished(B, SPACE, r.body.id);
  assert.equal(job.status, 'failed');
  assert.match(job.error, /interrupted/);
  // what is there is the peer's own revisions, with no conflict and no checkpoint
  const [sA, sB] = [await states(A, SPACE), await states(B, SPACE)];
  assert.ok(sB.size > 0 && sB.size < N, `killed half-way (${sB.size} of ${N})`);
  for (const [k, v] of sB) assert.equal(v.rev, sA.get(k).rev, k);
  assert.equal((await syncStatus(B, SPACE)).conflict_count, 0);
  assert.deepEqual(readdirSync(path.join(dataDir, 'snapshots')).filter((f) => f.startsWith('boot-')), [], 'the partial download is removed at start');
  // the space is not empty any more: the next job pulls in full and completes it
  const next = await startSync(B, SPACE, A, { direction: 'pull', extra: { bootstrap: 'snapshot' } });
  assert.equal(next.status, 200, next.text);
  assert.equal(next.body.bootstrap.status, 'skipped');
  assert.equal(next.body.conflicts, 0);
  await assertConverged([A, B], SPACE, 'after the resumed job');
});

test('SIGTERM of the target mid-bootstrap: a clean exit, the job ends interrupted, no download left', { timeout: 120000 }, async (t) => {
  const A = await withServer(t);
  await putSpace(A, SPACE);
  await pushMany(A, SPACE, 20000, { makeId: (i) => `k${String(i).padStart(6, '0')}`, bodyOf: (i) => ({ i, pad: 'y'.repeat(300) }) });
  await createSnapshot(A, SPACE);
  const { box, dataDir, r, ev } = await bootstrapUnderway(t, A);
  let B = box.B;
  const exit = await B.stop('SIGTERM', { timeoutMs: 20000 });
  ev.close();
  assert.equal(exit.code, 0, `clean exit: ${B.stderrText().slice(-2000)}`);
  assert.ok(B.logs.some((l) => l.msg === 'sync_finished' && l.status === 'failed'), 'the job ended before the exit');
  B = box.B = await startServer({ dataDir });
  const job = await waitFinished(B, SPACE, r.body.id);
  assert.equal(job.status, 'failed');
  assert.match(job.error, /interrupted/);
  assert.deepEqual(readdirSync(path.join(dataDir, 'snapshots')).filter((f) => f.startsWith('boot-')), []);
  const next = await startSync(B, SPACE, A, { direction: 'pull' });
  assert.equal(next.status, 200, next.text);
  await assertConverged([A, B], SPACE, 'after the next job');
});
