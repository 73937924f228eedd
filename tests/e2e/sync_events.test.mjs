// sync_events.test.mjs - SPEC §8 `sync` events for §9 jobs: a start while
// running, phases that never go backwards, non-decreasing percent and
// counters, and exactly one final event with the job's end state (percent
// 100 when completed); failed jobs end in a `failed` event; subscribers see
// sync events only for the topics and spaces they may read.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, putSpace, createKey, sleep } from './helpers.mjs';
import { openSSE, pushMany } from './sse_helpers.mjs';
import { startSync, waitFinished } from './sync_helpers.mjs';

const SPACE = 'ev';
const PHASES = ['status', 'pull', 'push', 'done'];

function checkSequence(events, job, what) {
  assert.ok(events.length >= 2, `${what}: at least a start and an end event, got ${JSON.stringify(events)}`);
  let prevPhase = -1;
  let prevPct = -1;
  let prevPulled = -1;
  let prevPushed = -1;
  for (const [i, e] of events.entries()) {
    const d = e.json;
    assert.ok(d, `${what}: event data is JSON: ${e.data}`);
    for (const k of ['space', 'job', 'peer', 'phase', 'pulled', 'pushed', 'conflicts', 'percent', 'status']) {
      assert.ok(k in d, `${what}: ${k} in ${e.data}`);
    }
    assert.equal(d.space, SPACE);
    assert.equal(d.job, job.id);
    const ph = PHASES.indexOf(d.phase);
    assert.ok(ph >= 0, `${what}: known phase ${d.phase}`);
    assert.ok(ph >= prevPhase, `${what}: phase went backwards at event ${i}: ${JSON.stringify(events.map((x) => x.json.phase))}`);
    assert.ok(Number.isInteger(d.percent) && d.percent >= 0 && d.percent <= 100, `${what}: percent ${d.percent}`);
    assert.ok(d.percent >= prevPct, `${what}: percent went down at event ${i}: ${JSON.stringify(events.map((x) => x.json.percent))}`);
    assert.ok(d.pulled >= prevPulled && d.pushed >= prevPushed, `${what}: counters went down at event ${i}`);
    const last = i === events.length - 1;
    if (!last) assert.equal(d.status, 'running', `${what}: only the last event is final: ${JSON.stringify(events.map((x) => x.json.status))}`);
    if (i > 0) assert.ok(Number(e.id) > Number(events[i - 1].id), `${what}: event ids increase`);
    prevPhase = ph; prevPct = d.percent; prevPulled = d.pulled; prevPushed = d.pushed;
  }
  assert.equal(events[0].json.status, 'running', `${what}: the first event is the start`);
  return events[events.length - 1].json;
}

test('sync events of a pull+push job: in order, never backwards, ending with the final status', async (t) => {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  await putSpace(B, 'other');
  await pushMany(A, SPACE, 3500, { makeId: (i) => `a${i}` });
  await pushMany(B, SPACE, 1200, { makeId: (i) => `b${i}` });

  const ev = await openSSE(B.port, `/api/v1/events?topics=sync&spaces=${SPACE}`, { token: B.adminToken });
  const changesOnly = await openSSE(B.port, '/api/v1/events?topics=change', { token: B.adminToken });
  const otherReader = await createKey(B, 'reader', ['other'], 'other-reader');
  const stranger = await openSSE(B.port, '/api/v1/events?topics=sync', { token: otherReader.token });
  t.after(() => { ev.close(); changesOnly.close(); stranger.close(); });
  assert.equal(ev.status, 200);

  const r = await startSync(B, SPACE, A, { direction: 'both', wait: false });
  assert.equal(r.status, 202, r.text);
  const job = r.body;
  const mine = () => ev.ofType('sync').filter((e) => e.json?.job === job.id);
  await ev.waitFor(() => mine().some((e) => e.json.status !== 'running') || undefined, 30000, 'the final sync event');
  const final = await waitFinished(B, SPACE, job.id);
  assert.equal(final.status, 'completed', JSON.stringify(final));
  await sleep(300);                          // nothing may follow the final event
  const events = mine();
  t.diagnostic(events.map((e) => `${e.json.phase}/${e.json.status}/${e.json.percent}%/${e.json.pulled}/${e.json.pushed}`).join(' '));
  const end = checkSequence(events, job, 'pull+push');
  assert.equal(end.status, 'completed');
  assert.equal(end.percent, 100, 'a completed job ends at 100%');
  assert.equal(end.phase, 'done');
  assert.equal(end.pulled, 3500);
  assert.equal(end.pushed, 1200);
  assert.equal(end.pulled, final.pulled);
  assert.equal(end.pushed, final.pushed);
  assert.equal(end.peer, A.base);
  // both halves were reported on the way
  const phases = new Set(events.map((e) => e.json.phase));
  assert.ok(phases.has('pull'), `a pull phase event: ${[...phases]}`);
  // nothing for subscribers of other topics or spaces
  assert.equal(changesOnly.ofType('sync').length, 0, 'topics=change gets no sync events');
  assert.ok(changesOnly.ofType('change').length > 0, 'topics=change did get the pulled changes');
  assert.equal(stranger.ofType('sync').filter((e) => e.json?.space === SPACE).length, 0,
    'a key of another space sees no sync events of this one');
});

test('sync events of a failing job end with status failed (and carry the error)', async (t) => {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  const ev = await openSSE(B.port, '/api/v1/events?topics=sync', { token: B.adminToken });
  t.after(() => ev.close());
  const r = await startSync(B, SPACE, A, { direction: 'pull', wait: false, token: 'wrong-token-wrong-token-wrong-token-0000' });
  assert.equal(r.status, 202, r.text);
  const job = r.body;
  const mine = () => ev.ofType('sync').filter((e) => e.json?.job === job.id);
  await ev.waitFor(() => mine().some((e) => e.json.status !== 'running') || undefined, 15000, 'the final sync event');
  await sleep(200);
  const end = checkSequence(mine(), job, 'failing job');
  assert.equal(end.status, 'failed');
  assert.ok(end.percent < 100, `a failed job does not claim 100%: ${JSON.stringify(end)}`);
  // the event shape (SPEC §8) has no error member; when there is one it must say why
  if ('error' in end) assert.match(String(end.error), /401/, `the failure says why: ${JSON.stringify(end)}`);
});
