// sse_feeds.test.mjs - the live change feeds of SPEC §6:
//   GET /api/v1/spaces/{s}/changes?feed=longpoll&since=V&timeout_ms=T
//   GET /api/v1/spaces/{s}/changes?feed=sse (catch-up, live, Last-Event-ID resume)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, api, apiOk, putSpace, createKey, checkError, sleep, assertHealthy } from './helpers.mjs';
import { openSSE, httpSSE, putEntity, pushMany, nowMs } from './sse_helpers.mjs';

const CH = (s) => `/api/v1/spaces/${s}/changes`;

/** GET that resolves with {status, body, ms} (ms from the call). */
async function timedGet(srv, path, opts = {}) {
  const t0 = nowMs();
  const r = await api(srv, 'GET', path, { timeoutMs: 20000, ...opts });
  return { ...r, t0, t1: nowMs(), ms: nowMs() - t0 };
}

// The behaviour under test: the long poll is answered by the write, not by its
// 10 s timeout. The bound is far from both ends (a loaded CI machine can take
// a few hundred ms for an fsync'd write), so it cannot pass by timing out.
test('longpoll: wakes on a write (not at its timeout), with the normal changes answer', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  const e1 = await putEntity(srv, 'a', 'x', 'one', { n: 1 });
  const V = e1.version;

  for (let round = 0; round < 3; round++) {
    const since = V + round;
    const pending = timedGet(srv, `${CH('a')}?feed=longpoll&since=${since}&timeout_ms=10000`);
    await sleep(300);
    const tw = nowMs();                               // just before the write is sent
    const w = await putEntity(srv, 'a', 'x', `w${round}`, { round });
    const r = await pending;
    const wake = r.t1 - tw;
    assert.equal(r.status, 200, r.text);
    assert.ok(r.ms >= 280, `round ${round}: the long poll waited for the write (answered after ${r.ms.toFixed(0)} ms)`);
    assert.ok(wake < 3000, `round ${round}: answered ${wake.toFixed(0)} ms after the write was sent (the poll's timeout is 10 s)`);
    assert.deepEqual(Object.keys(r.body).sort(), ['changes', 'last_version', 'more']);
    assert.equal(r.body.changes.length, 1, r.text);
    assert.equal(r.body.changes[0].id, `w${round}`);
    assert.equal(r.body.changes[0].version, w.version);
    assert.deepEqual(r.body.changes[0].body, { round });
    assert.equal(r.body.last_version, w.version);
    assert.equal(r.body.more, false);
  }
});

test('longpoll: no change -> {"changes":[],"last_version":since,"more":false} after timeout_ms (300)', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  await putEntity(srv, 'a', 'x', 'one');
  await putEntity(srv, 'a', 'x', 'two');
  const r = await timedGet(srv, `${CH('a')}?feed=longpoll&since=2&timeout_ms=300`);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body, { changes: [], last_version: 2, more: false });
  // not before its timeout; "late" is only a sanity bound (a loaded CI machine)
  assert.ok(r.ms >= 280 && r.ms < 5000, `answered after ${r.ms.toFixed(0)} ms, want ~300`);
  // timeout_ms=0: at once
  const z = await timedGet(srv, `${CH('a')}?feed=longpoll&since=2&timeout_ms=0`);
  assert.equal(z.status, 200, z.text);
  assert.deepEqual(z.body, { changes: [], last_version: 2, more: false });
  assert.ok(z.ms < 3000, `timeout_ms=0 answered after ${z.ms.toFixed(0)} ms (the default wait is 30 s)`);
  // an empty space times out too
  await putSpace(srv, 'empty');
  const e = await timedGet(srv, `${CH('empty')}?feed=longpoll&since=0&timeout_ms=300`);
  assert.equal(e.status, 200, e.text);
  assert.deepEqual(e.body, { changes: [], last_version: 0, more: false });
  assert.ok(e.ms >= 280, `empty space: answered after ${e.ms.toFixed(0)} ms`);
  for (const q of ['feed=longpoll&since=0&timeout_ms=abc', 'feed=longpoll&since=0&timeout_ms=-1', 'feed=bogus&since=0']) {
    const b = await api(srv, 'GET', `${CH('a')}?${q}`);
    assert.equal(b.status, 400, `?${q} -> ${b.status} ${b.text}`);
  }
});

test('longpoll: changes past `since` already there -> answered at once', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  for (let i = 0; i < 5; i++) await putEntity(srv, 'a', 'x', `e${i}`, { i });
  const r = await timedGet(srv, `${CH('a')}?feed=longpoll&since=2&timeout_ms=10000`);
  assert.equal(r.status, 200, r.text);
  assert.ok(r.ms < 3000, `answered after ${r.ms.toFixed(0)} ms (its timeout is 10 s)`);
  assert.deepEqual(r.body.changes.map((c) => c.version), [3, 4, 5]);
  assert.equal(r.body.last_version, 5);
  assert.equal(r.body.more, false);
});

test('longpoll: honours limit and bodies like the normal feed (at once and after a wake-up)', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  for (let i = 0; i < 5; i++) await putEntity(srv, 'a', 'x', `e${i}`, { i });
  const normal = await apiOk(srv, 'GET', `${CH('a')}?since=0&limit=2&bodies=false`);
  const now = await timedGet(srv, `${CH('a')}?feed=longpoll&since=0&limit=2&bodies=false&timeout_ms=5000`);
  assert.equal(now.status, 200, now.text);
  assert.deepEqual(now.body, normal,
    `GET ${CH('a')}?feed=longpoll&since=0&limit=2&bodies=false should answer like the same request without feed=longpoll`);

  // after a wake-up: 3 changes committed in one push, limit=2
  const pending = timedGet(srv, `${CH('a')}?feed=longpoll&since=5&limit=2&bodies=false&timeout_ms=10000`);
  await sleep(200);
  await pushMany(srv, 'a', 3, { makeId: (i) => `p${i}`, bodyOf: (i) => ({ i }) });
  const r = await pending;
  const want = await apiOk(srv, 'GET', `${CH('a')}?since=5&limit=2&bodies=false`);
  assert.deepEqual(r.body, want, 'woken long poll answers like the normal feed with the same parameters');
});

test('longpoll: a poll filtered by collections is not woken (or at least advanced) by other collections', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  const e = await putEntity(srv, 'a', 'watch', 'one');
  const pending = timedGet(srv, `${CH('a')}?feed=longpoll&since=${e.version}&collections=watch&timeout_ms=1500`);
  await sleep(100);
  const other = await putEntity(srv, 'a', 'other', 'noise');
  const r = await pending;
  assert.equal(r.status, 200, r.text);
  // Either it kept waiting (timed out with nothing), or it answered with a
  // last_version past the unrelated change so the next poll does not spin.
  const spins = r.body.changes.length === 0 && r.ms < 1400 && r.body.last_version < other.version;
  assert.ok(!spins,
    `GET ${CH('a')}?feed=longpoll&since=${e.version}&collections=watch answered after ${r.ms.toFixed(0)} ms with ${r.text} ` +
    `after a write to collection "other" (version ${other.version}): an empty answer whose last_version did not advance ` +
    'makes the client poll again from the same version, which answers at once again (busy loop)');
  if (r.body.changes.length === 0 && r.body.last_version < other.version) {
    // if it did wait: confirm the next poll from there does not answer at once
    const again = await timedGet(srv, `${CH('a')}?feed=longpoll&since=${r.body.last_version}&collections=watch&timeout_ms=300`);
    assert.ok(again.ms >= 250 || again.body.last_version >= other.version,
      `the next poll answered after ${again.ms.toFixed(0)} ms with ${again.text}`);
  }
});

test('longpoll: many waiters wake on one write; a waiter that hangs up is forgotten', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  await putSpace(srv, 'b');
  // 3 waiters that give up (the client closes the connection)
  const quitters = [];
  for (let i = 0; i < 3; i++) {
    const c = await openSSE(srv.port, `${CH('a')}?feed=longpoll&since=0&timeout_ms=10000`, { token: srv.adminToken, noRead: true });
    quitters.push(c);
  }
  const polls = [];
  for (let i = 0; i < 20; i++) polls.push(timedGet(srv, `${CH('a')}?feed=longpoll&since=0&timeout_ms=10000`));
  const otherSpace = timedGet(srv, `${CH('b')}?feed=longpoll&since=0&timeout_ms=800`);
  await sleep(300);
  for (const q of quitters) q.close();
  await sleep(100);
  const tw = nowMs();
  const w = await putEntity(srv, 'a', 'x', 'wake');
  const rs = await Promise.all(polls);
  for (const r of rs) {
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.changes[0]?.version, w.version, r.text);
    assert.ok(r.t1 - tw < 3000, `woken ${(r.t1 - tw).toFixed(0)} ms after the write (timeout 10 s)`);
  }
  const ob = await otherSpace;
  assert.deepEqual(ob.body, { changes: [], last_version: 0, more: false }, 'a write to a does not wake b');
  assert.ok(ob.ms >= 750, `space b's poll waited its timeout (${ob.ms.toFixed(0)} ms)`);
  await assertHealthy(srv);
});

test('feed=sse: catch-up with bodies, then live; resume with Last-Event-ID after 1,500 changes: each version once, in order', { timeout: 120000 }, async (t) => {
  const srv = await withServer(t, { args: ['--sse-keepalive-ms', '500'] });
  await putSpace(srv, 'a');
  await putSpace(srv, 'b');
  const pad = 'q'.repeat(1000);               // ~1 KB bodies: 1.5 MB of catch-up, past --sse-queue-bytes
  const v0 = await pushMany(srv, 'a', 50, { makeId: (i) => `pre${i}`, bodyOf: (i) => ({ i, pad }) });
  await putEntity(srv, 'b', 'x', 'elsewhere');

  const url = `${CH('a')}?feed=sse&since=0`;
  const c1 = await openSSE(srv.port, url, { token: srv.adminToken });
  assert.equal(c1.status, 200, c1.text);
  assert.match(c1.headers['content-type'] || '', /^text\/event-stream/);
  assert.match(c1.headers['cache-control'] || '', /no-store/);
  await c1.waitFor(() => c1.text.length >= 13 || undefined, 3000, 'retry');
  assert.ok(c1.text.startsWith('retry: 2000\n\n'), JSON.stringify(c1.text.slice(0, 40)));
  const catchup = await c1.waitEvents(50, { type: 'change' });
  assert.deepEqual(catchup.map((e) => Number(e.id)), v0, 'catch-up: ids are the versions 1..50');
  assert.deepEqual(catchup.map((e) => e.json.version), v0);
  assert.deepEqual(catchup[7].json.body, { i: 7, pad });
  assert.equal(catchup[7].json.id, 'pre7');
  assert.equal(catchup[7].json.collection, 'c');
  assert.match(catchup[7].json.rev, /^1-[0-9a-f]+$/);
  assert.equal(catchup[7].json.deleted, false);
  // live
  const live = await putEntity(srv, 'a', 'x', 'live1', { live: true });
  const [ev51] = (await c1.waitEvents(51, { type: 'change' })).slice(50);
  assert.equal(Number(ev51.id), live.version);
  assert.deepEqual(ev51.json.body, { live: true });
  await c1.waitFor(() => c1.comments.some((x) => x.text === 'ping') || undefined, 3000, 'a ping on feed=sse');
  const lastSeen = c1.ofType('change').at(-1).id;
  c1.close();

  // 1,500 changes while disconnected: 1,490 new entities and 10 deletes of
  // entities the client already has (each takes a new version)
  const created = await pushMany(srv, 'a', 1490, { makeId: (i) => `off${i}`, bodyOf: (i) => ({ i, pad }), batch: 250 });
  const deleted = [];
  for (let i = 0; i < 10; i++) {
    const d = await apiOk(srv, 'DELETE', `${CH('a').replace('/changes', '')}/collections/c/entities/pre${i}`);
    deleted.push(d.version);
  }
  await putEntity(srv, 'b', 'x', 'elsewhere2');
  const missed = [...created, ...deleted];
  assert.equal(missed.length, 1500);

  // reconnect the way EventSource does: same URL (since=0), Last-Event-ID header
  const c2 = await openSSE(srv.port, url, { token: srv.adminToken, headers: { 'Last-Event-ID': lastSeen }, keepText: false });
  t.after(() => c2.close());
  assert.equal(c2.status, 200);
  await c2.waitEvents(1500, { type: 'change', timeoutMs: 30000 });
  const live2 = await putEntity(srv, 'a', 'x', 'live2');
  await c2.waitEvents(1501, { type: 'change', timeoutMs: 5000 });
  await sleep(300);
  const got = c2.ofType('change').map((e) => Number(e.id));
  assert.equal(got.length, 1501, `exactly 1,500 missed + 1 live, got ${got.length}`);
  assert.deepEqual(got, [...missed, live2.version], 'every missed version once, in order, then the live one');
  const versions = c2.ofType('change').map((e) => e.json.version);
  assert.deepEqual(versions, got, 'id = data.version');
  const del = c2.ofType('change').filter((e) => e.json.deleted);
  assert.deepEqual(del.map((e) => e.json.id), Array.from({ length: 10 }, (_, i) => `pre${i}`));
  assert.ok(del.every((e) => e.json.body === null || e.json.body === undefined), 'tombstones carry no body');
  assert.ok(!c2.ofType('change').some((e) => e.json.id?.startsWith('elsewhere')), 'no other space');

  // and through node:http, resuming from the middle
  const mid = String(missed[749]);
  const c3 = await httpSSE(srv.port, url, { token: srv.adminToken, headers: { 'Last-Event-ID': mid }, keepText: false });
  t.after(() => c3.close());
  await c3.waitEvents(751, { type: 'change', timeoutMs: 30000 });
  await sleep(200);
  assert.deepEqual(c3.ofType('change').map((e) => Number(e.id)), [...missed.slice(750), live2.version]);
});

test('feed=sse: collections filter, auth scoping, ?access_token=', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  await putSpace(srv, 'b');
  const readerB = await createKey(srv, 'reader', ['b'], 'reader-b');
  const r403 = await api(srv, 'GET', `${CH('a')}?feed=sse`, { token: readerB.token });
  checkError(assert, r403, 403, 'forbidden', 'reader(b) GET a feed=sse');
  const r401 = await api(srv, 'GET', `${CH('b')}?feed=sse`, { token: null });
  checkError(assert, r401, 401, 'unauthorized', 'GET feed=sse without a token');

  const f = await openSSE(srv.port, `${CH('b')}?feed=sse&collections=keep&access_token=${encodeURIComponent(readerB.token)}`);
  t.after(() => f.close());
  assert.equal(f.status, 200, f.text);
  await putEntity(srv, 'b', 'drop', 'd1');
  const k1 = await putEntity(srv, 'b', 'keep', 'k1');
  await putEntity(srv, 'a', 'keep', 'other-space');
  await putEntity(srv, 'b', 'drop', 'd2');
  const k2 = await putEntity(srv, 'b', 'keep', 'k2');
  await f.waitEvents(2, { type: 'change' });
  await sleep(300);
  assert.deepEqual(f.ofType('change').map((e) => [e.json.collection, e.json.id, Number(e.id)]),
    [['keep', 'k1', k1.version], ['keep', 'k2', k2.version]]);
});
