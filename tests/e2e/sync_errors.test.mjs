// sync_errors.test.mjs - SPEC §9 sync jobs that cannot work: a wrong peer
// token, an unknown peer space, an unreachable peer, a token that may not
// push. Each ends as a failed job with a clear error and nothing applied on
// either side. Also: async jobs (202 + Location), the job list, 409 for a
// second job with the same peer while one runs, request validation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, startServer, putSpace, createKey, api, apiOk, checkError, sleep, ULID_RE, freePort } from './helpers.mjs';
import { sp, put, startSync, syncStatus, getJob, waitFinished, states } from './sync_helpers.mjs';

const SPACE = 'errs';

async function pair(t) {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  for (let i = 0; i < 5; i++) await put(A, SPACE, 'c', `a${i}`, { i });
  for (let i = 0; i < 3; i++) await put(B, SPACE, 'c', `b${i}`, { i });
  return [A, B];
}


/** A wait:true job that fails: the answer is `status` (502 when the peer
 *  failed or refused) with the failed job as the body, plus "message". */
async function failedJob(srv, space, peer, opts, re, what, status = 502) {
  const t0 = Date.now();
  const r = await startSync(srv, space, peer, { ...opts, wait: true, timeoutMs: 60000 });
  assert.equal(r.status, status, `${what}: ${r.text}`);
  assert.match(r.headers['content-type'], /^application\/json/);
  const j = r.body;
  assert.equal(j.status, 'failed', `${what}: job ${r.text}`);
  assert.equal(typeof j.error, 'string', `${what}: error ${r.text}`);
  assert.match(j.error, re, `${what}: error text ${r.text}`);
  assert.equal(j.message, j.error, `${what}: message ${r.text}`);
  delete j.message;
  assert.ok(j.finished_at, `${what}: finished_at ${r.text}`);
  assert.equal(j.pulled, 0, `${what}: pulled ${r.text}`);
  assert.equal(j.pushed, 0, `${what}: pushed ${r.text}`);
  // the job as stored: in memory and in the list
  const again = await getJob(srv, space, j.id);
  assert.deepEqual(again, j, `${what}: GET /sync/jobs/{id} is the job the answer carried`);
  // (listed from the database; that the list is up to date the moment the
  // answer arrives is checked on its own below)
  let row;
  for (let k = 0; k < 40; k++) {
    const list = await apiOk(srv, 'GET', `${sp(space)}/sync/jobs`, {}, 200);
    row = list.jobs.find((x) => x.id === j.id);
    if (row && row.status !== 'running') break;
    await sleep(50);
  }
  assert.ok(row, `${what}: job listed`);
  assert.equal(row.status, 'failed', `${what}: listed status ${JSON.stringify(row)}`);
  assert.equal(row.error, j.error, `${what}: listed error`);
  assert.ok(row.finished_at, `${what}: listed finished_at`);
  return { job: j, ms: Date.now() - t0 };
}

async function unchanged(A, B, before) {
  const [sa, sb] = await Promise.all([syncStatus(A, SPACE), syncStatus(B, SPACE)]);
  assert.equal(sa.entity_count, before.a.entity_count, 'nothing applied on A');
  assert.equal(sb.entity_count, before.b.entity_count, 'nothing applied on B');
  assert.equal(sa.digest, before.a.digest, 'A unchanged');
  assert.equal(sb.digest, before.b.digest, 'B unchanged');
  assert.equal(sb.server_version, before.b.server_version, 'B wrote nothing');
}

test('wrong peer token, unknown peer space, reader token pushing -> failed job with a clear error, nothing applied', async (t) => {
  const [A, B] = await pair(t);
  const before = { a: await syncStatus(A, SPACE), b: await syncStatus(B, SPACE) };

  await failedJob(B, SPACE, A, { direction: 'both', token: 'not-a-real-token-0123456789abcdef0123456789' }, /401/, 'wrong token');
  await unchanged(A, B, before);

  await failedJob(B, SPACE, A, { direction: 'pull', peerSpace: 'no-such-space' }, /404/, 'unknown peer space');
  await unchanged(A, B, before);

  // a token of another space on the peer cannot read this one
  await putSpace(A, 'other');
  const otherKey = await createKey(A, 'operator', ['other'], 'other-space');
  await failedJob(B, SPACE, A, { direction: 'pull', token: otherKey.token }, /403|401|404/, 'key of another space');
  await unchanged(A, B, before);

  // a reader may pull but not push: the push half fails, A gets nothing
  const reader = await createKey(A, 'reader', [SPACE], 'reader');
  const r = await startSync(B, SPACE, A, { direction: 'push', token: reader.token, wait: true });
  assert.equal(r.status, 502, r.text);
  assert.equal(r.body.status, 'failed', `push with a reader key: ${r.text}`);
  assert.match(r.body.error, /403/, `push with a reader key: ${r.text}`);
  assert.equal(r.body.pushed, 0);
  await unchanged(A, B, before);
  const sa = await states(A, SPACE);
  assert.ok(![...sa.keys()].some((k) => k.startsWith('c/b')), 'none of B\'s entities reached A');
});

test('unreachable peer -> failed after the retries with "could not be reached"; nothing applied', async (t) => {
  const [A, B] = await pair(t);
  const before = { a: await syncStatus(A, SPACE), b: await syncStatus(B, SPACE) };
  const port = await freePort();
  const { job, ms } = await failedJob(B, SPACE, A, { direction: 'both', peerUrl: `http://127.0.0.1:${port}` },
    /could not be reached/, 'unreachable peer');
  assert.ok(job.error.length < 300, 'a short error');
  // transient errors are retried 3 times with backoff 250 ms, 1 s, 4 s
  assert.ok(ms >= 4500, `the job retried with backoff before failing (${ms} ms)`);
  assert.ok(ms < 30000, `the job gave up in reasonable time (${ms} ms)`);
  assert.ok(job.requests >= 4, `1 try + 3 retries: ${JSON.stringify(job)}`);
  await unchanged(A, B, before);
});

test('async job: 202 with Location, then completed; GET /sync/jobs lists it newest first; bad requests are 400', async (t) => {
  const [A, B] = await pair(t);
  const r = await startSync(B, SPACE, A, { direction: 'both', wait: false });
  assert.equal(r.status, 202, r.text);
  const j = r.body;
  assert.match(j.id, ULID_RE);
  assert.equal(j.space, SPACE);
  assert.equal(j.peer_url, A.base);
  assert.equal(j.peer_space, SPACE);
  assert.equal(j.direction, 'both');
  assert.equal(j.status, 'running');
  assert.ok(j.started_at);
  assert.equal(r.headers.location, `/api/v1/spaces/${SPACE}/sync/jobs/${j.id}`);
  const loc = await apiOk(B, 'GET', r.headers.location, {}, 200);
  assert.equal(loc.id, j.id);
  const done = await waitFinished(B, SPACE, j.id, { timeoutMs: 20000 });
  assert.equal(done.status, 'completed', JSON.stringify(done));
  assert.equal(done.phase, 'done');
  assert.equal(done.pulled, 5);
  assert.equal(done.pushed, 3);
  assert.equal(done.error, null);
  assert.ok(Date.parse(done.finished_at) >= Date.parse(done.started_at));

  const second = await startSync(B, SPACE, A, { direction: 'pull', wait: true });
  assert.equal(second.body.status, 'completed');
  const list = await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs`, {}, 200);
  assert.deepEqual(list.jobs.slice(0, 2).map((x) => x.id), [second.body.id, j.id], 'newest first');
  assert.equal(list.jobs[1].status, 'completed');
  assert.equal(list.jobs[1].pulled, 5);
  assert.ok('next_cursor' in list);
  const paged = await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs?limit=1`, {}, 200);
  assert.equal(paged.jobs.length, 1);
  assert.ok(paged.next_cursor, 'a cursor to the next page');
  const page2 = await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs?limit=1&cursor=${encodeURIComponent(paged.next_cursor)}`, {}, 200);
  assert.equal(page2.jobs[0].id, j.id);

  // sync.start and sync.finish are audited, naming the job
  for (const action of ['sync.start', 'sync.finish']) {
    let entry;
    for (let k = 0; k < 60 && !entry; k++) {
      const a = await apiOk(B, 'GET', `/api/v1/audit?action=${action}&space=${SPACE}&limit=1000`, {}, 200);
      entry = a.entries.find((x) => JSON.stringify(x.meta ?? '').includes(j.id));
      if (!entry) await sleep(50);
    }
    assert.ok(entry, `${action} audited for job ${j.id}`);
    assert.equal(entry.action, action);
    assert.equal(entry.space, SPACE);
    assert.ok(String(entry.target).includes(A.base), `${action} target names the peer: ${JSON.stringify(entry)}`);
  }

  // unknown job id -> 404; bad bodies -> 400
  const nf = await api(B, 'GET', `${sp(SPACE)}/sync/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV`);
  assert.equal(nf.status, 404, nf.text);
  const bad = [
    { peer_space: SPACE, peer_token: 'x', direction: 'pull' },
    { peer_url: 'ftp://127.0.0.1:1', peer_space: SPACE, peer_token: 'x', direction: 'pull' },
    { peer_url: A.base, peer_space: SPACE, peer_token: 'x', direction: 'sideways' },
    { peer_url: A.base, peer_space: 'Bad Space!', peer_token: 'x', direction: 'pull' },
    { peer_url: A.base, peer_space: SPACE, direction: 'pull' },
  ];
  for (const body of bad) {
    const x = await api(B, 'POST', `${sp(SPACE)}/sync`, { body });
    assert.equal(x.status, 400, `${JSON.stringify(body)} -> ${x.status} ${x.text}`);
    assert.equal(typeof x.body?.error, 'string');
  }
  // a writer may not start sync jobs (operator+)
  const writer = await createKey(B, 'writer', [SPACE], 'w');
  const forb = await api(B, 'POST', `${sp(SPACE)}/sync`, {
    token: writer.token,
    body: { peer_url: A.base, peer_space: SPACE, peer_token: A.adminToken, direction: 'pull' },
  });
  checkError(assert, forb, 403, 'forbidden', 'writer starting a sync');
  // unknown local space
  const nosp = await api(B, 'POST', `${sp('nope')}/sync`, {
    body: { peer_url: A.base, peer_space: SPACE, peer_token: A.adminToken, direction: 'pull' },
  });
  assert.equal(nosp.status, 404, nosp.text);
});

test('409 sync_in_progress for a second job on the same space and peer while one runs (peer frozen meanwhile)', async (t) => {
  const [A, B] = await pair(t);
  await putSpace(B, 'second');
  // freeze the peer: the first job waits on its status request
  A.proc.kill('SIGSTOP');
  let resumed = false;
  const resume = () => { if (!resumed) { resumed = true; A.proc.kill('SIGCONT'); } };
  t.after(resume);
  let first;
  let other;
  try {
    first = await startSync(B, SPACE, A, { direction: 'pull', wait: false });
    assert.equal(first.status, 202, first.text);
    const dup = await startSync(B, SPACE, A, { direction: 'both', wait: false });
    const e = checkError(assert, dup, 409, 'sync_in_progress', 'second job, same space and peer');
    assert.ok(e.message.length > 0);
    // another local space with the same peer is another job
    other = await startSync(B, 'second', A, { direction: 'pull', wait: false, peerSpace: SPACE });
    assert.equal(other.status, 202, `another space may sync with the same peer: ${other.text}`);
    assert.equal((await getJob(B, SPACE, first.body.id)).status, 'running');
  } finally {
    resume();                  // before the after-hooks stop the servers
  }
  const done = await waitFinished(B, SPACE, first.body.id, { timeoutMs: 40000 });
  assert.equal(done.status, 'completed', JSON.stringify(done));
  assert.equal(done.pulled, 5);
  const done2 = await waitFinished(B, 'second', other.body.id, { timeoutMs: 40000 });
  assert.equal(done2.status, 'completed', JSON.stringify(done2));
  // once it ended, a new job is accepted
  const next = await startSync(B, SPACE, A, { direction: 'pull', wait: true });
  assert.equal(next.status, 200, next.text);
  assert.equal(next.body.status, 'completed');
});

// Was a race: the answer went out before the job's row was committed, so a
// GET /sync/jobs right after it could still list the job as running. The
// answers now wait for the row.
test('GET /sync/jobs is up to date as soon as a wait:true job has answered (completed and failed jobs)', async (t) => {
  const [A, B] = await pair(t);
  const stale = [];
  for (let i = 0; i < 40; i++) {
    const fail = i % 2 === 1;
    const r = await startSync(B, SPACE, A, { direction: 'pull', wait: true, ...(fail ? { token: 'wrong-token-wrong-token-wrong-token-00' } : {}) });
    assert.equal(r.status, fail ? 502 : 200, r.text);
    assert.equal(r.body.status, fail ? 'failed' : 'completed', r.text);
    const list = await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs?limit=1`, {}, 200);
    const row = list.jobs[0];
    if (row.id !== r.body.id) { stale.push(`#${i}: the job just answered is not listed yet (newest listed: ${row.id} ${row.status})`); continue; }
    if (row.status !== r.body.status || row.finished_at === null) stale.push(`#${i}: answered ${r.body.status}, listed ${row.status} finished_at ${row.finished_at}`);
  }
  assert.deepEqual(stale, [], `GET /sync/jobs right after the job's 200 answer still showed it running (${stale.length}/40)`);
});

// Issue 12: a peer_url given as the API's base (…/api/v1, with or without a
// trailing slash) failed with "the peer has no space": it is the same peer.
// A URL the server cannot use is refused at once, before any job starts.
test('peer_url: …/api/v1 and trailing slashes are the peer\'s base address; unusable URLs are 400 before any job', async (t) => {
  const [A, B] = await pair(t);
  const variants = [`${A.base}/api/v1`, `${A.base}/api/v1/`, `${A.base}/`, `${A.base.replace('http:', 'HTTP:')}/api/v1`];
  for (const peerUrl of variants) {
    const r = await startSync(B, SPACE, A, { direction: 'pull', peerUrl });
    assert.equal(r.status, 200, `${peerUrl}: ${r.text}`);
    assert.equal(r.body.status, 'completed', `${peerUrl}: ${r.text}`);
    assert.equal(r.body.peer_url, A.base, `the job names the peer by its base address (${peerUrl})`);
  }
  // one peer, one set of checkpoints: after the first pull nothing is left
  const again = await startSync(B, SPACE, A, { direction: 'pull', peerUrl: `${A.base}/api/v1/` });
  assert.equal(again.body.pulled, 0, again.text);
  assert.equal(again.body.requests, 1, `the checkpoint of ${A.base} is used: ${again.text}`);

  const before = (await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs?limit=1000`, {}, 200)).jobs.length;
  const port = A.port;
  const unusable = [
    'localhost:7420', `ftp://127.0.0.1:${port}`, 'http://', `http://:${port}`, 'http://127.0.0.1:99999',
    `http://127.0.0.1:${port}/api/v1/spaces/${SPACE}`, `http://admin:pw@127.0.0.1:${port}`,
    `http://127.0.0.1:${port}/?space=${SPACE}`, `http://127.0.0.1:${port}/#x`, ` http://127.0.0.1:${port}`,
    `http://127.0.0.1:${port}/a b`, `http://127.0.0.1:${port}/${'x'.repeat(600)}`,
  ];
  for (const peerUrl of unusable) {
    const r = await startSync(B, SPACE, A, { direction: 'pull', peerUrl, wait: false });
    const e = checkError(assert, r, 400, 'invalid_url', `peer_url ${JSON.stringify(peerUrl)}`);
    assert.match(e.message, /peer_url must be the peer's base address, like http:\/\/host:7420/, e.message);
  }
  const missing = await api(B, 'POST', `${sp(SPACE)}/sync`, { body: { peer_space: SPACE, peer_token: 'x' } });
  assert.match(checkError(assert, missing, 400, 'invalid_url', 'no peer_url').message, /peer_url is required/);
  const after = (await apiOk(B, 'GET', `${sp(SPACE)}/sync/jobs?limit=1000`, {}, 200)).jobs.length;
  assert.equal(after, before, 'no job was started for a refused URL');

  // a URL that reaches something, but not a snapsync API: the error says so
  // (it is not "the peer has no space")
  const prefix = await startSync(B, SPACE, A, { direction: 'pull', peerUrl: `${A.base}/not-here` });
  assert.equal(prefix.body.status, 'failed', prefix.text);
  assert.match(prefix.body.error, /base address of a snapsync server/, prefix.text);
  assert.doesNotMatch(prefix.body.error, /has no space/, prefix.text);
  // while a missing space still says so
  const nospace = await startSync(B, SPACE, A, { direction: 'pull', peerSpace: 'nope' });
  assert.match(nospace.body.error, /the peer has no space 'nope'/, nospace.text);
});

/** Every job GET /sync/jobs lists, each checked against GET /sync/jobs/{id}. */
async function listedAgreeWithGet(srv, space, what) {
  const list = (await apiOk(srv, 'GET', `${sp(space)}/sync/jobs?limit=1000`, {}, 200)).jobs;
  for (const row of list) {
    const one = await api(srv, 'GET', `${sp(space)}/sync/jobs/${row.id}`);
    assert.equal(one.status, 200, `${what}: listed job ${row.id} answers GET /sync/jobs/{id}: ${one.text}`);
    // a running job may move between the two reads: compare what cannot
    if (row.status === 'running') assert.equal(one.body.id, row.id);
    else assert.deepEqual(one.body, row, `${what}: GET /sync/jobs/${row.id} and the list agree`);
  }
  return list;
}

// Issue 12/13: GET /sync/jobs/{id} answered 404 for every job from before a
// restart while GET /sync/jobs listed it; a job killed with its instance
// stayed "running" in the list forever; a running job that had not stored
// its row yet was not listed. One source now: the stored rows, with the
// live state of the jobs the server holds.
test('jobs: GET /sync/jobs and /sync/jobs/{id} agree, across a restart; a job killed with its server is failed "interrupted"', { timeout: 90000 }, async (t) => {
  const A = await withServer(t);
  let B = await startServer({ keepData: true });
  const dataDir = B.dataDir;
  t.after(async () => { await B.stop().catch(() => {}); });
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  await putSpace(B, 'second');
  for (let i = 0; i < 5; i++) await put(A, SPACE, 'c', `a${i}`, { i });
  const done = (await startSync(B, SPACE, A, { direction: 'pull' })).body;
  assert.equal(done.status, 'completed');
  await listedAgreeWithGet(B, SPACE, 'after one job');

  // freeze the peer: the jobs below wait on their first request
  A.proc.kill('SIGSTOP');
  let thawed = false;
  const thaw = () => { if (!thawed) { thawed = true; A.proc.kill('SIGCONT'); } };
  t.after(thaw);
  let stored;
  let unstored;
  try {
    stored = await startSync(B, SPACE, A, { direction: 'pull', wait: false });   // its row is stored at once
    assert.equal(stored.status, 202, stored.text);
    // a wait:true job stores its row only once it has something to write:
    // it is listed all the same while it runs
    const waiting = startSync(B, 'second', A, { direction: 'pull', peerSpace: SPACE, wait: true }).catch((e) => e);
    for (let k = 0; k < 100 && !unstored; k++) {
      unstored = (await apiOk(B, 'GET', `${sp('second')}/sync/jobs`, {}, 200)).jobs.find((x) => x.status === 'running');
      if (!unstored) await sleep(20);
    }
    assert.ok(unstored, 'the running wait:true job is listed');
    assert.equal(unstored.requests, 1, JSON.stringify(unstored));
    assert.equal((await getJob(B, 'second', unstored.id)).status, 'running');
    const live = await listedAgreeWithGet(B, SPACE, 'while a job runs');
    const row = live.find((x) => x.id === stored.body.id);
    assert.equal(row.status, 'running');
    assert.equal(row.requests, 1, `the list shows the running job's live state: ${JSON.stringify(row)}`);

    // the local server dies with the job running
    await B.kill9();
    await waiting;
  } finally {
    thaw();
  }
  B = await startServer({ dataDir, keepData: false });
  // a job from before the restart: the same answer from both routes
  const again = await getJob(B, SPACE, done.id);
  assert.equal(again.status, 'completed');
  assert.equal(again.pulled, 5);
  assert.equal(again.started_at, done.started_at);
  assert.equal(again.finished_at, done.finished_at);
  // the job killed with its server is failed, not running forever
  const killed = await getJob(B, SPACE, stored.body.id);
  assert.equal(killed.status, 'failed', JSON.stringify(killed));
  assert.match(killed.error, /^interrupted/, JSON.stringify(killed));
  assert.ok(killed.finished_at && Date.parse(killed.finished_at) >= Date.parse(killed.started_at), JSON.stringify(killed));
  const list = await listedAgreeWithGet(B, SPACE, 'after the restart');
  assert.deepEqual(list.map((x) => x.id), [stored.body.id, done.id]);
  assert.ok(!list.some((x) => x.status === 'running'), 'nothing is left running');
  // and the next job with that peer is accepted
  const next = await startSync(B, SPACE, A, { direction: 'pull' });
  assert.equal(next.body.status, 'completed', next.text);
  await listedAgreeWithGet(B, SPACE, 'after the next job');
  assert.deepEqual(await B.stop(), { code: 0, signal: null }, `the restarted server exits cleanly\n${B.stderrText().slice(-3000)}`);
});

// Issue 12: "force": true was accepted and ignored. It means: do not use the
// checkpoints, run the full diff (every change the peer has, every local
// change), writing only what is missing.
test('force: true ignores the checkpoints and runs the full diff; false or absent uses them', async (t) => {
  const [A, B] = await pair(t);
  const first = await startSync(B, SPACE, A, { direction: 'both' });
  assert.equal(first.body.status, 'completed', first.text);
  assert.equal(first.body.pulled, 5);
  assert.equal(first.body.pushed, 3);
  for (const force of [undefined, false]) {
    const r = await startSync(B, SPACE, A, { direction: 'both', force });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.requests, 1, `force ${force}: the checkpoints say there is nothing to do: ${r.text}`);
  }
  const before = { a: await syncStatus(A, SPACE), b: await syncStatus(B, SPACE) };
  const forced = await startSync(B, SPACE, A, { direction: 'both', force: true });
  assert.equal(forced.status, 200, forced.text);
  const j = forced.body;
  assert.equal(j.status, 'completed', forced.text);
  // status, the peer's whole feed (one page), our whole feed pushed (one page)
  assert.ok(j.requests >= 3, `a full diff both ways: ${forced.text}`);
  assert.ok(j.bytes > 1000, `the feeds moved: ${forced.text}`);
  assert.equal(j.pulled, 0, 'every revision was known: nothing applied here');
  assert.equal(j.pushed, 0, 'nor there');
  assert.equal(j.conflicts, 0);
  const after = { a: await syncStatus(A, SPACE), b: await syncStatus(B, SPACE) };
  assert.deepEqual(after, before, 'a full diff of converged spaces changes nothing');
  // and the checkpoints it left are used by the next job
  const next = await startSync(B, SPACE, A, { direction: 'both' });
  assert.equal(next.body.requests, 1, next.text);
  // force must be a boolean
  const bad = await startSync(B, SPACE, A, { direction: 'pull', force: 'yes', wait: false });
  assert.match(checkError(assert, bad, 400, 'invalid_body', 'force: "yes"').message, /force/);
});
