// sync_frozen.test.mjs - SPEC §9: a peer that accepts connections but never
// answers (frozen with SIGSTOP) makes the job fail after the 30 s peer
// request timeout (retried like any transient error: 3 retries with backoff)
// with a clear error; meanwhile the local server stays responsive, nothing
// is applied, and once the peer thaws a new job works.
//
// Slow by nature: at least 30 s, up to ~2 min when timeouts are retried.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, putSpace, httpRequest, sleep } from './helpers.mjs';
import { put, startSync, syncOk, syncStatus, getJob, waitFinished } from './sync_helpers.mjs';

const SPACE = 'frozen';
const TIMEOUT_MS = 30000;
const MAX_MS = 4 * TIMEOUT_MS + 250 + 1000 + 4000 + 20000;   // 1 try + 3 retries, backoff, slack

test('a peer frozen with SIGSTOP: the job fails after the peer request timeout, the server stays responsive', { timeout: MAX_MS + 30000 }, async (t) => {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  for (let i = 0; i < 3; i++) await put(A, SPACE, 'c', `a${i}`, { i });
  await put(B, SPACE, 'c', 'mine', { here: true });
  const before = await syncStatus(B, SPACE);

  A.proc.kill('SIGSTOP');
  let thawed = false;
  const thaw = () => { if (!thawed) { thawed = true; A.proc.kill('SIGCONT'); } };
  t.after(thaw);                               // so it can be stopped whatever happens

  try {
    const t0 = Date.now();
    const r = await startSync(B, SPACE, A, { direction: 'both', wait: false });
    assert.equal(r.status, 202, r.text);
    const id = r.body.id;

    // the loop never waits on the peer: B answers at once meanwhile
    for (let k = 0; k < 5; k++) {
      await sleep(1000);
      const s0 = Date.now();
      const h = await httpRequest(B.port, { path: '/healthz', timeoutMs: 2000 });
      assert.equal(h.status, 200);
      assert.ok(Date.now() - s0 < 1000, 'healthz answered promptly during the frozen sync');
      assert.equal((await syncStatus(B, SPACE)).entity_count, before.entity_count);
    }
    // well before the timeout the job is still waiting on its first request
    await sleep(Math.max(0, TIMEOUT_MS - 4000 - (Date.now() - t0)));
    const waiting = await getJob(B, SPACE, id);
    assert.equal(waiting.status, 'running', `the job waits for the peer timeout (${Date.now() - t0} ms): ${JSON.stringify(waiting)}`);
    assert.equal(waiting.requests, 1, `one request so far: ${JSON.stringify(waiting)}`);
    // a timeout is not retried (a frozen peer would hold the job for minutes):
    // the job fails soon after the first request's 30 s

    const done = await waitFinished(B, SPACE, id, { timeoutMs: MAX_MS, intervalMs: 250 });
    const ms = Date.now() - t0;
    t.diagnostic(`frozen peer: job failed after ${ms} ms: ${JSON.stringify(done)}`);
    assert.equal(done.status, 'failed', JSON.stringify(done));
    assert.match(done.error, /time(d)?[ -]?out/i, `the error says the peer timed out: ${done.error}`);
    assert.ok(ms >= TIMEOUT_MS - 1000, `not before the peer request timeout (${ms} ms)`);
    assert.ok(ms <= TIMEOUT_MS + 8000, `soon after the one timeout, without retries (${ms} ms)`);
    assert.equal(done.requests, 1, `one request, not retried: ${JSON.stringify(done)}`);
    assert.equal(done.pulled, 0);
    assert.equal(done.pushed, 0);
    const after = await syncStatus(B, SPACE);
    assert.equal(after.entity_count, before.entity_count, 'nothing applied');
    assert.equal(after.digest, before.digest);
  } finally {
    thaw();                    // before the after-hooks stop the servers
  }

  // thawed, the peer works again and so does the next job
  await sleep(200);
  const h = await httpRequest(A.port, { path: '/healthz', timeoutMs: 5000 });
  assert.equal(h.status, 200);
  const ok = await syncOk(B, SPACE, A, { direction: 'both' });
  assert.equal(ok.pulled, 3, JSON.stringify(ok));
  assert.equal(ok.pushed, 1, JSON.stringify(ok));
});

// Issue 12: a wait:true job whose peer timed out answered 200. It answers
// 504 with the failed job as the body (502 when the peer failed or refused:
// sync_errors.test.mjs). The test hook SNAPSYNC_TEST_PEER_TIMEOUT_MS
// shortens the 30 s peer request timeout so this runs in seconds.
test('wait:true with a peer that does not answer in time -> 504 with the failed job', { timeout: 60000 }, async (t) => {
  const A = await withServer(t);
  const B = await withServer(t, { env: { SNAPSYNC_TEST_PEER_TIMEOUT_MS: '1500' } });
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  await put(A, SPACE, 'c', 'x', { x: 1 });
  A.proc.kill('SIGSTOP');
  let thawed = false;
  const thaw = () => { if (!thawed) { thawed = true; A.proc.kill('SIGCONT'); } };
  t.after(thaw);
  let r;
  try {
    const t0 = Date.now();
    r = await startSync(B, SPACE, A, { direction: 'pull', wait: true, timeoutMs: 30000 });
    assert.ok(Date.now() - t0 >= 1400, 'after the peer request timeout');
  } finally {
    thaw();
  }
  assert.equal(r.status, 504, r.text);
  assert.match(r.headers['content-type'], /^application\/json/);
  assert.equal(r.body.status, 'failed', r.text);
  assert.match(r.body.error, /time(d)?[ -]?out/i, r.text);
  assert.equal(r.body.message, r.body.error);
  assert.equal((await getJob(B, SPACE, r.body.id)).status, 'failed');
  // thawed, the same request completes: 200 as before
  await sleep(100);
  const ok = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(ok.pulled, 1);
});
