// sync_resume.test.mjs - SPEC §9 checkpoints: a 50,000-entity pull whose
// peer is killed (-9) in the middle fails with a clear error, keeps every
// page it applied, and the next job (peer restarted on its data dir and
// port) resumes after the last applied page instead of starting from zero,
// without losing or duplicating a change. While the big pull runs, a
// second job with the same peer is refused (409). A checkpoint from an
// older incarnation of the peer's space (deleted and recreated) is dropped.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { withServer, startServer, putSpace, api, checkError, sleep } from './helpers.mjs';
import { openSSE, pushMany } from './sse_helpers.mjs';
import { sp, startSync, syncOk, syncStatus, getJob, waitFinished, assertConverged, states } from './sync_helpers.mjs';

const SPACE = 'big';
const N = 50000;

test('kill -9 of the peer mid-pull of 50,000 entities: failed job, then the next job resumes and converges', { timeout: 120000 }, async (t) => {
  // our own data dir: it must outlive the kill (a server given a dataDir keeps it)
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-e2e-sync-'));
  const A0 = await startServer({ dataDir });
  let A = A0;
  t.after(async () => {
    try { await A.stop(); } catch { /* reported by the test */ }
    try { await A0.stop(); } catch { /* gone */ }
    rmSync(dataDir, { recursive: true, force: true });
  });
  const B = await withServer(t);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  await pushMany(A, SPACE, N, { makeId: (i) => `k${String(i).padStart(6, '0')}`, bodyOf: (i) => ({ i, pad: 'x'.repeat(40) }) });
  const aStatus = await syncStatus(A, SPACE);
  assert.equal(aStatus.entity_count, N);

  // watch B's sync events: the kill goes in as soon as a page was applied
  const ev = await openSSE(B.port, '/api/v1/events?topics=sync', { token: B.adminToken });
  t.after(() => ev.close());
  assert.equal(ev.status, 200);

  const r = await startSync(B, SPACE, A, { direction: 'pull', wait: false });
  assert.equal(r.status, 202, r.text);
  const jobId = r.body.id;
  // a second job with the same peer while this one runs -> 409
  const dup = await startSync(B, SPACE, A, { direction: 'pull', wait: false });
  checkError(assert, dup, 409, 'sync_in_progress', 'second job during the big pull');

  await ev.waitFor(() => ev.ofType('sync').some((e) => e.json?.job === jobId && e.json.pulled > 0) || undefined,
    30000, 'a sync event with pulled > 0');
  await A.kill9();
  const killedAt = Date.now();

  const failed = await waitFinished(B, SPACE, jobId, { timeoutMs: 30000 });
  assert.equal(failed.status, 'failed', `the job fails when its peer dies: ${JSON.stringify(failed)}`);
  assert.match(failed.error, /could not be reached|connection|refused|reset|closed|empty reply|recv/i, `a clear error: ${failed.error}`);
  assert.ok(failed.pulled > 0 && failed.pulled < N, `the kill came mid-pull (pulled ${failed.pulled})`);
  assert.ok(Date.now() - killedAt < 25000, 'the failure is reported within the retries');
  // every applied page is kept, and only whole pages: what was counted is there
  const mid = await syncStatus(B, SPACE);
  assert.equal(mid.entity_count, failed.pulled, `entities on B after the failure vs the job's count: ${JSON.stringify(failed)}`);
  // a job's pages are 250, 500, then 1000 entities: whole pages end at 250,
  // 750, 1750, 2750, ...
  const whole = (n) => n === 250 || n === 750 || (n >= 1750 && (n - 1750) % 1000 === 0);
  assert.ok(whole(mid.entity_count), `pages are applied whole (${mid.entity_count} entities)`);
  // the failure is also a sync event, the last one of the job
  await ev.waitFor(() => ev.ofType('sync').some((e) => e.json?.job === jobId && e.json.status === 'failed') || undefined,
    5000, 'the failed sync event');

  // the peer comes back on the same data dir and the same address
  A = await startServer({ dataDir, args: ['--listen', `127.0.0.1:${A0.port}`] });
  assert.equal(A.port, A0.port, 'restarted on the same port (the checkpoint is per peer URL)');
  const aAgain = await syncStatus(A, SPACE);
  assert.equal(aAgain.space_uid, aStatus.space_uid);
  assert.equal(aAgain.digest, aStatus.digest);

  const second = await syncOk(B, SPACE, A, { direction: 'pull' });
  t.diagnostic(`first job: ${JSON.stringify(failed)}`);
  t.diagnostic(`second job: ${JSON.stringify(second)}`);
  const remaining = N - failed.pulled;
  assert.equal(second.pulled, remaining, `the second job pulled the rest: ${JSON.stringify(second)}`);
  assert.equal(failed.pulled + second.pulled, N, 'nothing lost, nothing counted twice');
  // pages (250, 500, then 1000) after the checkpoint, plus the status
  // request: starting from zero would have cost ~52 requests
  const pages = remaining <= 250 ? 1 : remaining <= 750 ? 2 : 2 + Math.ceil((remaining - 750) / 1000);
  assert.ok(second.requests <= pages + 1, `the second job resumed from the checkpoint (${second.requests} requests for ${remaining} entities): ${JSON.stringify(second)}`);
  // and the peer saw no request for the feed from the beginning
  const feedReqs = A.logs.filter((l) => l.route === 'changes_get' || /\/changes\?/.test(String(l.path ?? '')));
  assert.ok(feedReqs.length > 0, 'the restarted peer logged its /changes requests');
  for (const l of feedReqs) {
    assert.doesNotMatch(String(l.path), /since=0(&|$)/, `the resumed pull did not start from zero: ${JSON.stringify(l)}`);
  }

  const conv = await assertConverged([A, B], SPACE, 'after the resumed pull');
  assert.equal(conv.status[1].entity_count, N);
  // one more: nothing to do, one request
  const idle = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(idle.pulled, 0);
  assert.equal(idle.requests, 1, JSON.stringify(idle));
  assert.equal((await getJob(B, SPACE, jobId)).status, 'failed', 'the first job stays failed');
});

test('a checkpoint from an older incarnation of the peer space is dropped: full diff after delete + recreate', async (t) => {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  await pushMany(A, SPACE, 30, { makeId: (i) => `old${i}` });
  const first = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(first.pulled, 30);
  const uid1 = (await syncStatus(A, SPACE)).space_uid;

  // A's space is replaced: fewer changes, so a lower server_version than B's checkpoint
  const d = await api(A, 'DELETE', `${sp(SPACE)}?confirm=${SPACE}`);
  assert.ok([200, 204].includes(d.status), `delete space: ${d.status} ${d.text}`);
  await putSpace(A, SPACE);
  await pushMany(A, SPACE, 4, { makeId: (i) => `new${i}`, bodyOf: (i) => ({ gen: 2, i }) });
  const st = await syncStatus(A, SPACE);
  assert.notEqual(st.space_uid, uid1, 'a recreated space has a new space_uid');
  assert.ok(st.server_version < 30, 'the new incarnation is behind the old checkpoint');

  const second = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(second.pulled, 4, `the checkpoint was dropped and the new entities pulled: ${JSON.stringify(second)}`);
  const sb = await states(B, SPACE);
  for (let i = 0; i < 4; i++) assert.deepEqual(sb.get(`c/new${i}`)?.body, { gen: 2, i }, `new${i} on B`);
  // the old entities B already had stay (a pull never deletes what the peer merely lacks)
  assert.ok(sb.get('c/old0'), 'old entities stay on B');

  // then incremental again: one new entity, one page
  await pushMany(A, SPACE, 1, { makeId: () => 'new-late' });
  const third = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(third.pulled, 1, JSON.stringify(third));
  assert.equal(third.requests, 2, `status + one page: ${JSON.stringify(third)}`);
  await sleep(0);
});

test('kill -9 of the receiving peer mid-push of 20,000 entities: failed job, then the next push resumes from the checkpoint and converges', { timeout: 120000 }, async (t) => {
  const M = 20000;
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-e2e-push-'));
  const B0 = await startServer({ dataDir });
  let B = B0;
  t.after(async () => {
    try { await B.stop(); } catch { /* reported by the test */ }
    try { await B0.stop(); } catch { /* gone */ }
    rmSync(dataDir, { recursive: true, force: true });
  });
  const A = await withServer(t);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  await pushMany(A, SPACE, M, { makeId: (i) => `p${String(i).padStart(6, '0')}`, bodyOf: (i) => ({ i, pad: 'y'.repeat(40) }) });

  const ev = await openSSE(A.port, '/api/v1/events?topics=sync', { token: A.adminToken });
  t.after(() => ev.close());
  const r = await startSync(A, SPACE, B, { direction: 'push', wait: false });
  assert.equal(r.status, 202, r.text);
  const jobId = r.body.id;
  await ev.waitFor(() => ev.ofType('sync').some((e) => e.json?.job === jobId && e.json.pushed >= 2000) || undefined,
    30000, 'a sync event with pushed >= 2000');
  await B.kill9();
  const failed = await waitFinished(A, SPACE, jobId, { timeoutMs: 30000 });
  assert.equal(failed.status, 'failed', JSON.stringify(failed));
  assert.ok(failed.pushed >= 2000 && failed.pushed < M, `the kill came mid-push (pushed ${failed.pushed})`);

  B = await startServer({ dataDir, args: ['--listen', `127.0.0.1:${B0.port}`] });
  assert.equal(B.port, B0.port);
  const onB = (await syncStatus(B, SPACE)).entity_count;
  assert.ok(onB >= 2000, `what B acknowledged survived its kill (${onB})`);
  const second = await syncOk(A, SPACE, B, { direction: 'push' });
  t.diagnostic(`first: ${JSON.stringify(failed)}; B had ${onB}; second: ${JSON.stringify(second)}`);
  // the checkpoint covers at least the pages acknowledged before the last
  // one whose checkpoint was still committing: the second push sends the
  // rest (plus at most that page and the one in flight), not everything
  assert.ok(second.pushed <= M - failed.pushed + 2000, `resumed from the checkpoint: ${JSON.stringify(second)}`);
  assert.ok(second.pushed < M, 'not from zero');
  const conv = await assertConverged([A, B], SPACE, 'after the resumed push');
  assert.equal(conv.status[1].entity_count, M);
  const idle = await syncOk(A, SPACE, B, { direction: 'push' });
  assert.equal(idle.pushed, 0, JSON.stringify(idle));
});

test('a multi-page push in a "both" job moves the pull checkpoint past our own changes: the next "both" job is one request', async (t) => {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  await pushMany(A, SPACE, 3500, { makeId: (i) => `b${i}`, bodyOf: (i) => ({ i }) });
  const first = await syncOk(A, SPACE, B, { direction: 'both' });
  assert.equal(first.pushed, 3500, JSON.stringify(first));
  assert.equal(first.pulled, 0);
  await assertConverged([A, B], SPACE, 'after the push');
  const again = await syncOk(A, SPACE, B, { direction: 'both' });
  assert.equal(again.pulled, 0, JSON.stringify(again));
  assert.equal(again.pushed, 0);
  assert.equal(again.requests, 1, `nothing to do costs one request: ${JSON.stringify(again)}`);
  // a change on B afterwards is the only thing the next job pulls
  await apiOkPut(B, 'late');
  const third = await syncOk(A, SPACE, B, { direction: 'both' });
  assert.equal(third.pulled, 1, JSON.stringify(third));
  assert.equal(third.pushed, 0);
});

function apiOkPut(srv, id) {
  return api(srv, 'PUT', `${sp(SPACE)}/collections/c/entities/${id}`, { body: { late: true } })
    .then((r) => { assert.equal(r.status, 201, r.text); return r.body; });
}
