// sync_peers.test.mjs - SPEC §9 persistent peers: PUT/GET/DELETE
// /peers/{name} (tokens stored, never shown back), every_seconds scheduling
// between two real instances, a failing peer that backs off with its last
// error visible, peers surviving a restart, and a deleted space taking its
// peers, snapshots and sync job history with it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { withServer, startServer, putSpace, api, apiOk, checkError, sleep } from './helpers.mjs';
import { sp, put, syncStatus, startSync } from './sync_helpers.mjs';
import { snapFile } from './snapshot_helpers.mjs';

const SPACE = 'peers';
const PEER_KEYS = ['created_at', 'direction', 'every_seconds', 'failures', 'last_error', 'last_job', 'last_run_at',
  'last_status', 'name', 'running', 'space', 'token', 'url'];

async function pair(t) {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  return [A, B];
}

const peers = async (srv, space = SPACE) => (await apiOk(srv, 'GET', `${sp(space)}/peers`, {}, 200)).peers;

/** Polls GET /peers until pred(peer) holds; returns the peer. */
async function waitPeer(srv, name, pred, { timeoutMs = 20000, what = 'peer condition', onEach } = {}) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = (await peers(srv)).find((p) => p.name === name);
    if (onEach) onEach(last);
    if (last && pred(last)) return last;
    await sleep(50);
  }
  throw new Error(`timeout waiting for ${what}; last ${JSON.stringify(last)}`);
}

test('peers: PUT creates (201) and replaces (200), GET lists without the token, bad bodies are 400, DELETE is 204 then 404', async (t) => {
  const [A, B] = await pair(t);
  const secret = A.adminToken;
  const body = { url: A.base, space: SPACE, token: secret, direction: 'pull', every_seconds: 0 };
  const c = await api(B, 'PUT', `${sp(SPACE)}/peers/a`, { body });
  assert.equal(c.status, 201, c.text);
  assert.deepEqual(Object.keys(c.body).sort(), PEER_KEYS, c.text);
  assert.equal(c.body.name, 'a');
  assert.equal(c.body.url, A.base);
  assert.equal(c.body.space, SPACE);
  assert.equal(c.body.direction, 'pull');
  assert.equal(c.body.every_seconds, 0);
  assert.equal(c.body.failures, 0);
  assert.equal(c.body.last_status, null);
  assert.equal(c.body.running, false);
  assert.ok(!c.text.includes(secret), 'the token is never shown back (PUT answer)');

  const again = await api(B, 'PUT', `${sp(SPACE)}/peers/a`, { body: { ...body, direction: 'both', every_seconds: 3600 } });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.body.direction, 'both');
  assert.equal(again.body.every_seconds, 3600);
  assert.equal(again.body.created_at, c.body.created_at, 'replacing keeps created_at');

  const list = await api(B, 'GET', `${sp(SPACE)}/peers`);
  assert.equal(list.status, 200, list.text);
  assert.equal(list.body.peers.length, 1);
  assert.equal(list.body.peers[0].direction, 'both');
  assert.ok(!list.text.includes(secret), 'the token is never shown back (GET)');

  const bad = [
    [{ ...body, url: 'ftp://x' }, /url/],
    [{ ...body, url: undefined }, /url/],
    [{ ...body, token: undefined }, /token/],
    [{ ...body, direction: 'sideways' }, /direction/],
    [{ ...body, space: 'Bad Space' }, /space/],
    [{ ...body, every_seconds: -1 }, /every_seconds/],
    [{ ...body, every_seconds: 1.5 }, /every_seconds/],
    [{ ...body, every_seconds: '60' }, /every_seconds/],
  ];
  for (const [b, re] of bad) {
    const r = await api(B, 'PUT', `${sp(SPACE)}/peers/x`, { body: b });
    const e = checkError(assert, r, 400, r.body?.error ?? 'invalid_body', `PUT peer ${JSON.stringify(b)}`);
    assert.match(e.message, re, `message for ${JSON.stringify(b)}`);
  }
  checkError(assert, await api(B, 'PUT', `${sp(SPACE)}/peers/x`, { body: '[1]' }), 400, 'not_an_object', 'array body');
  assert.equal((await peers(B)).length, 1, 'nothing stored by the refused PUTs');
  checkError(assert, await api(B, 'PUT', `${sp('nope')}/peers/a`, { body }), 404, 'space_not_found', 'unknown space');

  const d = await api(B, 'DELETE', `${sp(SPACE)}/peers/a`);
  assert.equal(d.status, 204, d.text);
  assert.deepEqual(await peers(B), []);
  assert.equal((await api(B, 'DELETE', `${sp(SPACE)}/peers/a`)).status, 404);

  // audit: put and delete are recorded, without the token
  const audit = await api(B, 'GET', '/api/v1/audit?limit=200');
  assert.equal(audit.status, 200, audit.text);
  const acts = audit.body.entries.map((e) => e.action);
  assert.ok(acts.includes('peer.put') && acts.includes('peer.delete'), `audit actions ${acts}`);
  assert.ok(!audit.text.includes(secret), 'no token in the audit log');
});

test('peers: every_seconds runs jobs on schedule until both sides converge, and keeps them converged', async (t) => {
  const [A, B] = await pair(t);
  for (let i = 0; i < 20; i++) await put(A, SPACE, 'c', `a${i}`, { i });
  for (let i = 0; i < 7; i++) await put(B, SPACE, 'c', `b${i}`, { i });
  const r = await api(B, 'PUT', `${sp(SPACE)}/peers/a`, {
    body: { url: A.base, space: SPACE, token: A.adminToken, direction: 'both', every_seconds: 1 },
  });
  assert.equal(r.status, 201, r.text);
  // nobody starts a job: the schedule does
  const p = await waitPeer(B, 'a', (x) => x.last_status === 'completed', { what: 'a scheduled job to complete' });
  assert.equal(p.failures, 0);
  assert.equal(p.last_error, null);
  assert.ok(p.last_job && p.last_run_at, JSON.stringify(p));
  const job = await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs/${p.last_job}`, {}, 200);
  assert.equal(job.status, 'completed');
  const [sa, sb] = [await syncStatus(A, SPACE), await syncStatus(B, SPACE)];
  assert.equal(sa.entity_count, 27);
  assert.equal(sb.digest, sa.digest, 'converged by the scheduled job');

  // a later write on A arrives by itself
  await put(A, SPACE, 'c', 'late', { late: true });
  const end = Date.now() + 15000;
  while (Date.now() < end && (await syncStatus(B, SPACE)).digest !== (await syncStatus(A, SPACE)).digest) await sleep(100);
  assert.equal((await syncStatus(B, SPACE)).digest, (await syncStatus(A, SPACE)).digest, 'the next scheduled job brought the late write');
  const later = (await peers(B)).find((x) => x.name === 'a');
  assert.notEqual(later.last_job, p.last_job, 'a newer job ran');
});

test('peers: a peer that keeps failing backs off (every × 2^failures), shows its last error, and recovers when fixed', async (t) => {
  const [A, B] = await pair(t);
  await put(A, SPACE, 'c', 'x', { x: 1 });
  const body = { url: A.base, space: SPACE, token: 'wrong-token-wrong-token-wrong-token-00', direction: 'pull', every_seconds: 1 };
  assert.equal((await api(B, 'PUT', `${sp(SPACE)}/peers/bad`, { body })).status, 201);
  // record when each failure was seen (last_run_at = the failed job's end)
  const runs = new Map();
  const p = await waitPeer(B, 'bad', (x) => x.failures >= 3, {
    timeoutMs: 30000,
    what: 'three failures',
    onEach: (x) => { if (x && x.failures && !runs.has(x.failures)) runs.set(x.failures, Date.parse(x.last_run_at)); },
  });
  assert.equal(p.last_status, 'failed');
  assert.match(p.last_error, /401|token|unauthori/i, `last_error names the cause: ${p.last_error}`);
  const gap12 = runs.get(2) - runs.get(1);
  const gap23 = runs.get(3) - runs.get(2);
  // without backoff a failing job would run every second
  assert.ok(gap12 >= 1900, `after the 1st failure it waited ~2 s, not 1 (${gap12} ms); runs ${JSON.stringify([...runs])}`);
  assert.ok(gap23 >= 3900, `after the 2nd failure it waited ~4 s (${gap23} ms)`);
  // the failed jobs are in the job list with their error
  const jobs = (await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs?limit=10`, {}, 200)).jobs;
  assert.ok(jobs.length >= 3 && jobs.every((j) => j.status === 'failed' && j.error), JSON.stringify(jobs.slice(0, 3)));

  // fixed: replacing the peer resets the failures and the next run completes
  const fixed = await api(B, 'PUT', `${sp(SPACE)}/peers/bad`, { body: { ...body, token: A.adminToken } });
  assert.equal(fixed.status, 200, fixed.text);
  assert.equal(fixed.body.failures, 0);
  const ok = await waitPeer(B, 'bad', (x) => x.last_status === 'completed', { timeoutMs: 15000, what: 'a completed run after the fix' });
  assert.equal(ok.failures, 0);
  assert.equal(ok.last_error, null);
  assert.equal((await syncStatus(B, SPACE)).digest, (await syncStatus(A, SPACE)).digest);
});

test('peers: stored across a restart (token included: the schedule still works after it)', async (t) => {
  const A = await withServer(t);
  await putSpace(A, SPACE);
  let B = await startServer({ keepData: true });
  const dataDir = B.dataDir;
  t.after(async () => { await B.stop().catch(() => {}); });
  await putSpace(B, SPACE);
  const put1 = await api(B, 'PUT', `${sp(SPACE)}/peers/a`, {
    body: { url: A.base, space: SPACE, token: A.adminToken, direction: 'pull', every_seconds: 1 },
  });
  assert.equal(put1.status, 201, put1.text);
  await waitPeer(B, 'a', (x) => x.last_status === 'completed', { what: 'a first scheduled job' });
  const r = await B.stop();
  assert.deepEqual(r, { code: 0, signal: null });
  B = await startServer({ dataDir, keepData: false });
  const [p] = await peers(B);
  assert.equal(p.name, 'a');
  assert.equal(p.last_status, 'completed', 'last status kept');
  assert.equal(p.token, '***');
  await put(A, SPACE, 'c', 'after-restart', { r: 1 });
  const end = Date.now() + 15000;
  while (Date.now() < end && (await syncStatus(B, SPACE)).entity_count < 1) await sleep(100);
  assert.equal((await syncStatus(B, SPACE)).entity_count, 1, 'the restarted server runs the schedule with the stored token');
});

test('deleting a space deletes its peers, snapshots (files too) and sync job history: a space made again under the name starts clean', async (t) => {
  const [A, B] = await pair(t);
  await put(B, SPACE, 'c', 'x', { x: 1 });
  assert.equal((await api(B, 'PUT', `${sp(SPACE)}/peers/a`, {
    body: { url: A.base, space: SPACE, token: A.adminToken, direction: 'pull', every_seconds: 0 },
  })).status, 201);
  const job = await startSync(B, SPACE, A, { direction: 'pull', wait: true });
  assert.equal(job.status, 200, job.text);
  const snap = await apiOk(B, 'POST', `${sp(SPACE)}/snapshots`, { body: {} }, 201);
  assert.ok(existsSync(snapFile(B.dataDir, snap.id)));
  // another space keeps all of its own
  await putSpace(B, 'other');
  const otherSnap = await apiOk(B, 'POST', `${sp('other')}/snapshots`, { body: {} }, 201);
  assert.equal((await api(B, 'PUT', `${sp('other')}/peers/a`, {
    body: { url: A.base, space: SPACE, token: A.adminToken, direction: 'pull', every_seconds: 0 },
  })).status, 201);

  const d = await api(B, 'DELETE', `${sp(SPACE)}?confirm=${SPACE}`);
  assert.equal(d.status, 200, d.text);
  const end = Date.now() + 3000;
  while (Date.now() < end && existsSync(snapFile(B.dataDir, snap.id))) await sleep(20);
  assert.ok(!existsSync(snapFile(B.dataDir, snap.id)), 'the snapshot file is removed');

  await putSpace(B, SPACE);
  assert.deepEqual(await peers(B), [], 'no peers of the old space');
  assert.deepEqual((await apiOk(B, 'GET', `${sp(SPACE)}/snapshots`, {}, 200)).snapshots, [], 'no snapshots of the old space');
  checkError(assert, await api(B, 'GET', `${sp(SPACE)}/snapshots/${snap.id}`), 404, 'not_found', 'old snapshot by id');
  assert.deepEqual((await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs`, {}, 200)).jobs, [], 'no sync jobs of the old space');
  assert.equal((await api(B, 'GET', `${sp(SPACE)}/sync/jobs/${job.body.id}`)).status, 404, 'old job by id');

  assert.equal((await peers(B, 'other')).length, 1, 'the other space keeps its peer');
  assert.equal((await apiOk(B, 'GET', `${sp('other')}/snapshots`, {}, 200)).snapshots.length, 1);
  assert.ok(existsSync(snapFile(B.dataDir, otherSnap.id)));
});

test('a space with a sync job running cannot be deleted (409 sync_in_progress) until the job ends', async (t) => {
  const [A, B] = await pair(t);
  await put(A, SPACE, 'c', 'x', { x: 1 });
  A.proc.kill('SIGSTOP');               // the job waits on the frozen peer
  let resumed = false;
  const resume = () => { if (!resumed) { resumed = true; A.proc.kill('SIGCONT'); } };
  t.after(resume);
  let job;
  try {
    job = await startSync(B, SPACE, A, { direction: 'pull', wait: false });
    assert.equal(job.status, 202, job.text);
    const d = await api(B, 'DELETE', `${sp(SPACE)}?confirm=${SPACE}`);
    checkError(assert, d, 409, 'sync_in_progress', 'delete while a job runs');
    assert.equal((await api(B, 'GET', sp(SPACE))).status, 200, 'the space is still there');
  } finally {
    resume();
  }
  const end = Date.now() + 40000;
  let j;
  while (Date.now() < end) {
    j = await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs/${job.body.id}`, {}, 200);
    if (j.status !== 'running') break;
    await sleep(50);
  }
  assert.equal(j.status, 'completed', JSON.stringify(j));
  assert.equal((await api(B, 'DELETE', `${sp(SPACE)}?confirm=${SPACE}`)).status, 200, 'deleted once the job ended');
});

// Issue 12: the same URL rules as POST /sync (docs/api.md).
test('peers: url …/api/v1/ is stored as the base address and works; an unusable url is 400 invalid_url', async (t) => {
  const [A, B] = await pair(t);
  await put(A, SPACE, 'c', 'x', { x: 1 });
  const r = await api(B, 'PUT', `${sp(SPACE)}/peers/a`, {
    body: { url: `${A.base}/api/v1/`, space: SPACE, token: A.adminToken, direction: 'pull', every_seconds: 1 },
  });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.body.url, A.base);
  const p = await waitPeer(B, 'a', (x) => x.last_status !== null, { what: 'the scheduled job' });
  assert.equal(p.last_status, 'completed', JSON.stringify(p));
  assert.equal((await syncStatus(B, SPACE)).entity_count, 1);
  for (const url of [`${A.base}/api/v1/spaces/${SPACE}`, 'ftp://x', `${A.base}?a=1`]) {
    const e = checkError(assert, await api(B, 'PUT', `${sp(SPACE)}/peers/x`, {
      body: { url, space: SPACE, token: A.adminToken },
    }), 400, 'invalid_url', `url ${url}`);
    assert.match(e.message, /url must be the peer's base address, like http:\/\/host:7420/, e.message);
  }
  assert.deepEqual((await peers(B)).map((x) => x.name), ['a'], 'nothing stored for the refused urls');
});
