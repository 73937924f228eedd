// sse_gap.test.mjs - a commit with more changes than the writer lists for
// the loop (WRITER_CHANGES_MAX, 65,536; lowered here to 50 with
// SNAPSYNC_TEST_WRITER_CHANGES_MAX): the /events subscribers of that space
// get the listed change events, then one `reset` (no id) naming the gap; a
// Last-Event-ID from before the gap gets `reset` too; other spaces'
// subscribers see nothing of it; the space's own feed (feed=sse, read from
// the database) still gets every change. Memory stays bounded whatever a
// commit holds (a restore of a million entities is one commit).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, putSpace, apiOk, sleep } from './helpers.mjs';
import { openSSE, putEntity, pushMany } from './sse_helpers.mjs';

const EV = '/api/v1/events';
const CAP = 50;

test('a commit past the change list cap: listed events, then reset; replay from before it resets; feed=sse has every change', async (t) => {
  const srv = await withServer(t, { env: { SNAPSYNC_TEST_WRITER_CHANGES_MAX: String(CAP) }, args: ['--sse-replay-events', '1000'] });
  await putSpace(srv, 'g');
  await putSpace(srv, 'other');
  const pre = await putEntity(srv, 'g', 'c', 'before', { n: 0 });   // one event before the gap, in the ring
  const all = await openSSE(srv.port, EV, { token: srv.adminToken });
  const mine = await openSSE(srv.port, `${EV}?spaces=g&topics=change`, { token: srv.adminToken });
  const others = await openSSE(srv.port, `${EV}?spaces=other`, { token: srv.adminToken });
  const feed = await openSSE(srv.port, `/api/v1/spaces/g/changes?feed=sse&since=${pre.version}`, { token: srv.adminToken });
  t.after(() => { all.close(); mine.close(); others.close(); feed.close(); });

  // 120 new entities in one push: one op, one commit, 70 past the cap
  const versions = await pushMany(srv, 'g', 120);
  assert.equal(versions.length, 120);
  const last = versions[119];

  for (const [name, c] of [['all', all], ['spaces=g', mine]]) {
    const evs = await c.waitFor(() => (c.ofType('reset').length ? c.events : undefined), 5000, `${name}: the reset`);
    const changes = evs.filter((e) => e.event === 'change');
    assert.equal(changes.length, CAP, `${name}: the listed changes come as events`);
    assert.deepEqual(changes.map((e) => e.json.version), versions.slice(0, CAP), `${name}: the first ${CAP}, in order`);
    const reset = evs[evs.length - 1];
    assert.equal(reset.event, 'reset', `${name}: the reset comes after them`);
    assert.equal(reset.id, changes[CAP - 1].id, `${name}: the reset carries no id (the last id stays the last change's)`);
    assert.equal(reset.json.space, 'g');
    assert.equal(reset.json.skipped, 120 - CAP);
    assert.equal(reset.json.version, last, 'the space\'s version after the commit');
    assert.equal(String(reset.json.last_event_id), changes[CAP - 1].id);
    assert.ok(BigInt(reset.json.oldest) > BigInt(changes[CAP - 1].id) + BigInt(120 - CAP),
      `the skipped changes used up their ids: oldest ${reset.json.oldest}`);
  }
  // a subscriber of another space hears nothing of it
  await sleep(200);
  assert.deepEqual(others.events.map((e) => e.event), [], 'nothing for spaces=other');

  // the space's feed reads the database: every change, in order
  const got = await feed.waitFor(() => {
    const ch = feed.ofType('change');
    return ch.length >= 120 ? ch : undefined;
  }, 10000, 'feed=sse: all 120 changes');
  assert.deepEqual(got.map((e) => Number(e.id)), versions, 'feed=sse: each version once, in order');

  // a client that reconnects with an id from before the gap is told of it
  const lei = all.ofType('change')[CAP - 1].id;
  const again = await openSSE(srv.port, EV, { token: srv.adminToken, headers: { 'Last-Event-ID': lei } });
  t.after(() => again.close());
  const [r] = await again.waitEvents(1, { timeoutMs: 3000 });
  assert.equal(r.event, 'reset', `a replay from before the gap starts with reset: ${r.event} ${r.data}`);

  // the stream goes on: later writes are events as before
  const after = await putEntity(srv, 'g', 'c', 'after', { n: 1 });
  const live = await all.waitFor(() => all.ofType('change').find((e) => e.json.version === after.version), 3000, 'a live event after the gap');
  assert.ok(BigInt(live.id) > BigInt(all.ofType('reset')[0].json.oldest) - 1n, 'ids go on after the gap');
  await again.waitFor(() => again.ofType('change').find((e) => e.json.version === after.version), 3000, 'live after the replay reset');
});

test('a restore into an empty space past the cap: the same reset, and the restored entities are all there', async (t) => {
  const srv = await withServer(t, { env: { SNAPSYNC_TEST_WRITER_CHANGES_MAX: String(CAP) } });
  await putSpace(srv, 'src');
  await pushMany(srv, 'src', 80, { batch: 40 });          // two commits of 40: under the cap
  const snap = await apiOk(srv, 'POST', '/api/v1/spaces/src/snapshots', { body: {} }, 201);
  const sub = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken });
  t.after(() => sub.close());
  // every entity deleted, then the snapshot restored: 80 puts in one commit
  for (let k = 0; k < 80; k++) await apiOk(srv, 'DELETE', `/api/v1/spaces/src/collections/c/entities/e${k}`, {}, 200);
  const st0 = await apiOk(srv, 'GET', '/api/v1/spaces/src/sync/status', {}, 200);
  assert.equal(st0.entity_count, 0);
  const res = await apiOk(srv, 'POST', `/api/v1/spaces/src/snapshots/${snap.id}/restore`, { body: { confirm: snap.id } }, 200);
  const reset = await sub.waitFor(() => sub.ofType('reset')[0], 5000, 'the reset of the restore\'s commit');
  assert.equal(reset.json.space, 'src');
  assert.equal(reset.json.version, res.server_version);
  const put = res.changes.put;
  assert.equal(put, 80, 'every entity put back');
  const restoredEvents = sub.ofType('change').filter((e) => e.json.version > st0.server_version);
  assert.equal(restoredEvents.length, CAP, 'the listed part of the restore\'s changes');
  assert.equal(reset.json.skipped, put + res.changes.deleted - CAP);
  const st = await apiOk(srv, 'GET', '/api/v1/spaces/src/sync/status', {}, 200);
  assert.equal(st.entity_count, 80, 'every entity back');
});
