// sse_events.test.mjs - GET /api/v1/events (SPEC §8): delivery, headers,
// topic and space filters, auth scoping, ?access_token=, Last-Event-ID
// replay, reset, keepalive pings, CORS.
//
// Every stream is read by the raw-socket client of sse_helpers.mjs (own
// HTTP and chunked parsing); delivery is also checked through node:http.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withServer, startServer, api, putSpace, createKey, checkError, sleep, assertHealthy, openConn,
} from './helpers.mjs';
import { SSEParser, openSSE, httpSSE, putEntity, changeData, pushMany } from './sse_helpers.mjs';

const EV = '/api/v1/events';
const big = (s) => BigInt(s);

function assertStreamHead(c, ctx = '') {
  assert.equal(c.status, 200, `status ${ctx}: ${c.text}`);
  assert.match(c.headers['content-type'] || '', /^text\/event-stream(;\s*charset=utf-8)?$/i, `content-type ${ctx}`);
  assert.match(c.headers['cache-control'] || '', /no-store/i, `cache-control ${ctx}`);
  assert.equal((c.headers['x-accel-buffering'] || '').toLowerCase(), 'no', `x-accel-buffering ${ctx}`);
  assert.equal(c.headers['content-length'], undefined, `an event stream has no Content-Length ${ctx}`);
}

test('SSE parser follows the EventSource rules (self-check of the test client)', () => {
  const got = [];
  const comments = [];
  const retries = [];
  const p = new SSEParser({ onEvent: (e) => got.push(e), onComment: (c) => comments.push(c), onRetry: (r) => retries.push(r) });
  const stream = 'retry: 2000\n\n: ping\n\nid: 7\nevent: change\ndata: {"a":1}\n\ndata:x\r\ndata: y\r\rid: 8\ndata\n\n';
  // feed it one character at a time: boundaries anywhere
  for (const ch of stream) p.push(ch);
  assert.deepEqual(retries, [2000]);
  assert.deepEqual(comments, ['ping']);
  assert.deepEqual(got.map((e) => [e.id, e.event, e.data]), [['7', 'change', '{"a":1}'], ['7', 'message', 'x\ny'], ['8', 'message', '']]);
});

test('events: stream head, retry, one change event per write with the SPEC shape (raw socket and node:http)', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  const raw = await openSSE(srv.port, EV);
  const viaHttp = await httpSSE(srv.port, EV, { token: srv.adminToken });
  // raw has no Authorization: it must be 401, not a stream
  assert.equal(raw.status, 401, `GET ${EV} without a token -> ${raw.status} ${raw.text}`);
  raw.close();

  const c = await openSSE(srv.port, EV, { token: srv.adminToken });
  t.after(() => { c.close(); viaHttp.close(); });
  assertStreamHead(c, 'raw');
  assertStreamHead(viaHttp, 'node:http');
  assert.match(c.headers['transfer-encoding'] || '', /chunked/i, 'an HTTP/1.1 stream is chunked');
  assert.match(c.headers['sse-replay-from'] || '', /^\d+$/, `SSE-Replay-From: ${c.headers['sse-replay-from']}`);
  await c.waitFor(() => c.text.length >= 13 || undefined, 3000, 'retry line');
  assert.ok(c.text.startsWith('retry: 2000\n\n'), `stream starts with retry: 2000, got ${JSON.stringify(c.text.slice(0, 60))}`);
  assert.deepEqual(c.retries, [2000]);

  const e1 = await putEntity(srv, 'a', 'issues', 'ISS-1', { title: 'one' });
  const [ev] = await c.waitEvents(1, { type: 'change' });
  assert.equal(ev.event, 'change');
  assert.ok(ev.hadId, 'a change event carries an id: field');
  assert.match(ev.id, /^\d+$/, `numeric event id, got ${ev.id}`);
  assert.ok(big(ev.id) >= big(c.headers['sse-replay-from']), `first live id ${ev.id} >= SSE-Replay-From ${c.headers['sse-replay-from']}`);
  assert.deepEqual(ev.json, { space: 'a', collection: 'issues', id: 'ISS-1', rev: e1.rev, version: e1.version, deleted: false },
    `data ${ev.data}`);

  // a delete is a change with deleted:true; more writes keep ids increasing
  const del = await api(srv, 'DELETE', '/api/v1/spaces/a/collections/issues/entities/ISS-1');
  assert.equal(del.status, 200, del.text);
  const writes = [];
  for (let i = 2; i <= 6; i++) writes.push(await putEntity(srv, 'a', 'issues', `ISS-${i}`, { i }));
  const evs = await c.waitEvents(7, { type: 'change' });
  assert.deepEqual(evs[1].json, { space: 'a', collection: 'issues', id: 'ISS-1', rev: del.body.rev, version: del.body.version, deleted: true });
  assert.deepEqual(evs.slice(2).map((e) => [e.json.id, e.json.version, e.json.rev]), writes.map((w) => [w.id, w.version, w.rev]));
  for (let i = 1; i < evs.length; i++) {
    assert.ok(big(evs[i].id) > big(evs[i - 1].id), `ids increase: ${evs[i - 1].id} then ${evs[i].id}`);
  }
  // node:http sees the same events with the same ids
  const evh = await viaHttp.waitEvents(7, { type: 'change' });
  assert.deepEqual(evh.map((e) => [e.id, e.data]), evs.map((e) => [e.id, e.data]));
  await sleep(200);
  assert.equal(c.ofType('change').length, 7, 'no duplicate events');
});

test('events: topic and space filters; bad topics and names are 400', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  await putSpace(srv, 'b');
  await putSpace(srv, 'c');
  const tok = srv.adminToken;
  const subs = {
    a: await openSSE(srv.port, `${EV}?spaces=a`, { token: tok }),
    b: await openSSE(srv.port, `${EV}?spaces=b&topics=change`, { token: tok }),
    ab: await openSSE(srv.port, `${EV}?spaces=a,b&topics=change,snapshot,sync`, { token: tok }),
    all: await openSSE(srv.port, EV, { token: tok }),
    noChange: await openSSE(srv.port, `${EV}?topics=snapshot,sync`, { token: tok }),
  };
  t.after(() => { for (const s of Object.values(subs)) s.close(); });
  for (const [k, s] of Object.entries(subs)) assertStreamHead(s, k);

  await putEntity(srv, 'a', 'x', 'a1');
  await putEntity(srv, 'b', 'x', 'b1');
  await putEntity(srv, 'c', 'x', 'c1');
  await putEntity(srv, 'a', 'x', 'a2');
  await putEntity(srv, 'b', 'x', 'b2');
  await subs.all.waitEvents(5, { type: 'change' });
  await subs.a.waitEvents(2, { type: 'change' });
  await subs.b.waitEvents(2, { type: 'change' });
  await subs.ab.waitEvents(4, { type: 'change' });
  await sleep(300);     // time for anything wrongly routed to show up
  const ids = (s) => changeData(s).map((d) => `${d.space}/${d.id}`);
  assert.deepEqual(ids(subs.all), ['a/a1', 'b/b1', 'c/c1', 'a/a2', 'b/b2']);
  assert.deepEqual(ids(subs.a), ['a/a1', 'a/a2']);
  assert.deepEqual(ids(subs.b), ['b/b1', 'b/b2']);
  assert.deepEqual(ids(subs.ab), ['a/a1', 'b/b1', 'a/a2', 'b/b2']);
  assert.deepEqual(subs.noChange.events.map((e) => e.event), [], 'topics=snapshot,sync gets no change events');
  // the same event has the same id in every stream
  assert.equal(subs.a.ofType('change')[0].id, subs.all.ofType('change')[0].id);

  for (const q of ['topics=bogus', 'topics=change,nope', 'topics=CHANGE']) {
    const r = await api(srv, 'GET', `${EV}?${q}`);
    checkError(assert, r, 400, r.body?.error ?? 'invalid_parameter', `GET ${EV}?${q}`);
  }
  const bad = await api(srv, 'GET', `${EV}?spaces=Bad..Name`);
  assert.equal(bad.status, 400, `GET ${EV}?spaces=Bad..Name -> ${bad.status} ${bad.text}`);
  await assertHealthy(srv);
});

test('events: a key limited to space a never sees b, gets 403 asking for b, 401 without a valid token', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  await putSpace(srv, 'b');
  const reader = await createKey(srv, 'reader', ['a'], 'reader-a');
  const writerB = await createKey(srv, 'writer', ['b'], 'writer-b');

  for (const q of ['?spaces=b', '?spaces=a,b', '?spaces=b&topics=change']) {
    const r = await api(srv, 'GET', `${EV}${q}`, { token: reader.token });
    checkError(assert, r, 403, 'forbidden', `reader(a) GET ${EV}${q}`);
  }
  const w = await api(srv, 'GET', `${EV}?spaces=a`, { token: writerB.token });
  checkError(assert, w, 403, 'forbidden', `writer(b) GET ${EV}?spaces=a`);
  for (const [what, tokOpt] of [['no token', null], ['unknown token', 'sst_' + 'x'.repeat(43)]]) {
    const r = await api(srv, 'GET', EV, { token: tokOpt });
    checkError(assert, r, 401, 'unauthorized', `${what}: GET ${EV}`);
  }

  const implicit = await openSSE(srv.port, EV, { token: reader.token });           // no spaces= -> its spaces only
  const explicit = await openSSE(srv.port, `${EV}?spaces=a`, { token: reader.token });
  const admin = await openSSE(srv.port, EV, { token: srv.adminToken });
  t.after(() => { implicit.close(); explicit.close(); admin.close(); });
  assertStreamHead(implicit, 'reader, no spaces=');
  assertStreamHead(explicit, 'reader, spaces=a');

  // b's events come first, so a leak would be seen before a's event arrives
  for (let i = 0; i < 5; i++) await putEntity(srv, 'b', 'x', `b${i}`);
  await putEntity(srv, 'a', 'x', 'a0');
  for (let i = 5; i < 10; i++) await putEntity(srv, 'b', 'x', `b${i}`);
  await putEntity(srv, 'a', 'x', 'a1');
  await admin.waitEvents(12, { type: 'change' });
  await implicit.waitEvents(2, { type: 'change' });
  await explicit.waitEvents(2, { type: 'change' });
  await sleep(300);
  for (const [n, s] of [['implicit', implicit], ['explicit', explicit]]) {
    assert.deepEqual(changeData(s).map((d) => `${d.space}/${d.id}`), ['a/a0', 'a/a1'], `${n}: ${s.text.slice(0, 2000)}`);
    assert.ok(!/"space":"b"/.test(s.text), `${n}: nothing of space b in the stream`);
  }

  // replay must not leak either: a reader resuming from before b's writes
  const firstId = admin.ofType('change')[0].id;
  const replay = await openSSE(srv.port, EV, { token: reader.token, headers: { 'Last-Event-ID': String(big(firstId) - 1n) } });
  t.after(() => replay.close());
  assertStreamHead(replay, 'reader replay');
  await replay.waitEvents(2, { type: 'change' });
  await sleep(200);
  assert.deepEqual(changeData(replay).map((d) => `${d.space}/${d.id}`), ['a/a0', 'a/a1'], 'replay is filtered by the key too');
});

test('events: ?access_token= authenticates (EventSource cannot send headers) and never reaches the log', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  await putSpace(srv, 'b');
  const reader = await createKey(srv, 'reader', ['a'], 'reader-a');
  const tok = encodeURIComponent(reader.token);

  const c = await openSSE(srv.port, `${EV}?access_token=${tok}&topics=change`);
  const h = await httpSSE(srv.port, `${EV}?topics=change&access_token=${tok}`);
  t.after(() => { c.close(); h.close(); });
  assertStreamHead(c, '?access_token= (raw)');
  assertStreamHead(h, '?access_token= (node:http)');
  const e = await putEntity(srv, 'a', 'x', 'via-query');
  const [ev] = await c.waitEvents(1, { type: 'change' });
  assert.equal(ev.json.version, e.version);
  await h.waitEvents(1, { type: 'change' });

  const forbidden = await api(srv, 'GET', `${EV}?spaces=b&access_token=${tok}`, { token: null });
  checkError(assert, forbidden, 403, 'forbidden', '?access_token= of a reader(a) asking for b');
  const bogus = await api(srv, 'GET', `${EV}?access_token=sst_${'y'.repeat(43)}`, { token: null });
  checkError(assert, bogus, 401, 'unauthorized', 'unknown ?access_token=');

  await sleep(200);   // let the access-log lines be written
  const logs = srv.stderrText();
  assert.ok(logs.includes('/api/v1/events'), 'the access log has the events requests');
  assert.ok(!logs.includes(reader.token), 'the access log never contains a token passed as ?access_token=');
  assert.ok(!logs.includes(tok), 'not even URL-encoded');
});

test('events: Last-Event-ID (header or ?last_event_id=) replays exactly the events after it', async (t) => {
  const srv = await withServer(t, { args: ['--sse-replay-events', '1000'] });
  await putSpace(srv, 'a');
  await putSpace(srv, 'b');
  const first = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken });
  for (let i = 0; i < 10; i++) await putEntity(srv, i % 3 === 2 ? 'b' : 'a', 'x', `e${i}`, { i });
  const seen = await first.waitEvents(10, { type: 'change' });
  first.close();
  const ids = seen.map((e) => e.id);

  // 6 more while nobody listens
  for (let i = 10; i < 16; i++) await putEntity(srv, i % 3 === 2 ? 'b' : 'a', 'x', `e${i}`, { i });

  // resume after the 10th (header): the 6 missed ones, in order, once
  const r1 = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken, headers: { 'Last-Event-ID': ids[9] } });
  t.after(() => r1.close());
  assertStreamHead(r1, 'Last-Event-ID');
  assert.equal(r1.headers['sse-replay-from'], String(big(ids[9]) + 1n), 'SSE-Replay-From = Last-Event-ID + 1');
  const got1 = await r1.waitEvents(6, { type: 'change' });
  assert.deepEqual(got1.map((e) => e.json.id), ['e10', 'e11', 'e12', 'e13', 'e14', 'e15']);
  assert.equal(got1[0].id, String(big(ids[9]) + 1n), 'replay starts right after the given id');
  // then live, no gap and no duplicate
  await putEntity(srv, 'a', 'x', 'e16');
  const all1 = await r1.waitEvents(7, { type: 'change' });
  await sleep(200);
  assert.deepEqual(r1.ofType('change').map((e) => e.json.id), ['e10', 'e11', 'e12', 'e13', 'e14', 'e15', 'e16']);
  for (let i = 1; i < all1.length; i++) assert.equal(big(all1[i].id), big(all1[i - 1].id) + 1n, 'consecutive ids');

  // resume from the 4th through the query, filtered to space a
  const r2 = await openSSE(srv.port, `${EV}?topics=change&spaces=a&last_event_id=${ids[3]}`, { token: srv.adminToken });
  t.after(() => r2.close());
  assertStreamHead(r2, '?last_event_id=');
  const wantA = [];
  for (let i = 4; i <= 16; i++) if (i % 3 !== 2 || i === 16) wantA.push(`e${i}`);
  await r2.waitEvents(wantA.length, { type: 'change' });
  await sleep(200);
  assert.deepEqual(r2.ofType('change').map((e) => e.json.id), wantA);

  // resume from the newest: nothing is replayed, the next write comes live
  const newest = r1.ofType('change').at(-1).id;
  const r3 = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken, headers: { 'Last-Event-ID': newest } });
  t.after(() => r3.close());
  assertStreamHead(r3, 'Last-Event-ID = newest');
  await sleep(200);
  assert.equal(r3.events.length, 0, `nothing to replay: ${r3.text}`);
  await putEntity(srv, 'a', 'x', 'e17');
  const [live] = await r3.waitEvents(1, { type: 'change' });
  assert.equal(live.json.id, 'e17');
  assert.equal(live.id, String(big(newest) + 1n));
  assert.equal(r3.ofType('reset').length, 0, 'no reset when the id is the newest');
});

test('events: a Last-Event-ID older than the ring (or unknown) gets event: reset, then live events', async (t) => {
  const srv = await withServer(t, { args: ['--sse-replay-events', '5'] });
  await putSpace(srv, 'a');
  const first = await openSSE(srv.port, EV, { token: srv.adminToken });
  for (let i = 0; i < 20; i++) await putEntity(srv, 'a', 'x', `e${i}`, { i });
  const ids = (await first.waitEvents(20, { type: 'change' })).map((e) => e.id);
  first.close();

  // within the ring (the last 5): a plain replay, no reset
  const ok = await openSSE(srv.port, EV, { token: srv.adminToken, headers: { 'Last-Event-ID': ids[16] } });
  t.after(() => ok.close());
  await ok.waitEvents(3, { type: 'change' });
  await sleep(150);
  assert.deepEqual(ok.events.map((e) => `${e.event}:${e.json?.id}`), ['change:e17', 'change:e18', 'change:e19']);

  for (const [what, lei] of [['older than the ring', ids[2]], ['newer than anything sent', String(big(ids[19]) + 1000n)]]) {
    const c = await openSSE(srv.port, EV, { token: srv.adminToken, headers: { 'Last-Event-ID': lei } });
    t.after(() => c.close());
    assertStreamHead(c, what);
    const [reset] = await c.waitEvents(1, { timeoutMs: 3000 });
    assert.equal(reset.event, 'reset', `${what}: the first event is reset, got ${reset.event} ${reset.data}`);
    assert.equal(typeof reset.json, 'object', `reset data is JSON: ${reset.data}`);
    assert.equal(String(reset.json.last_event_id), lei, `${what}: reset.last_event_id ${reset.data}`);
    assert.match(String(reset.json.oldest), /^\d+$/, `reset.oldest ${reset.data}`);
    assert.ok(big(String(reset.json.oldest)) > big(ids[2]), `oldest kept id ${reset.json.oldest} is after the evicted ${ids[2]}`);
    assert.match(c.headers['sse-replay-from'] || '', /^\d+$/, `${what}: SSE-Replay-From`);
    assert.ok(big(c.headers['sse-replay-from']) > big(ids[2]), `${what}: SSE-Replay-From ${c.headers['sse-replay-from']} tells the client it has a gap after ${ids[2]}`);
    // then live
    const e = await putEntity(srv, 'a', 'x', `live-${what.length}`);
    const evs = await c.waitFor(() => (c.ofType('change').some((x) => x.json.version === e.version) ? c.events : undefined), 3000, 'the live event');
    assert.equal(evs[0].event, 'reset');
    assert.equal(c.ofType('reset').length, 1, 'one reset');
  }
});

test('events: after a reset, SSE-Replay-From is where the events really begin (a client can trust it to find its gap)', async (t) => {
  // SPEC §8: "the response header SSE-Replay-From says where replay began, so
  // a client can tell a gap". A client that got `reset` and SSE-Replay-From: N
  // believes it will receive every event >= N. Either those events come, or N
  // must be the first id that will really be sent.
  const srv = await withServer(t, { args: ['--sse-replay-events', '5'] });
  await putSpace(srv, 'a');
  const first = await openSSE(srv.port, EV, { token: srv.adminToken });
  for (let i = 0; i < 20; i++) await putEntity(srv, 'a', 'x', `e${i}`, { i });
  const ids = (await first.waitEvents(20, { type: 'change' })).map((e) => e.id);
  first.close();

  const c = await openSSE(srv.port, EV, { token: srv.adminToken, headers: { 'Last-Event-ID': ids[2] } });
  t.after(() => c.close());
  await c.waitEvents(1, { type: 'reset' });
  const from = big(c.headers['sse-replay-from']);
  await putEntity(srv, 'a', 'x', 'after');
  await c.waitFor(() => c.ofType('change').some((e) => e.json.id === 'after') || undefined, 3000, 'the live event');
  const got = c.ofType('change').map((e) => e.id);
  const promised = ids.filter((id) => big(id) >= from);
  const missing = promised.filter((id) => !got.includes(id));
  assert.deepEqual(missing, [],
    `GET ${EV} with Last-Event-ID: ${ids[2]} (ring of 5, 20 events ${ids[0]}..${ids[19]}) answered SSE-Replay-From: ${from} ` +
    `but events ${missing.join(',')} (>= that id, still in the ring) were never sent; received ids: ${got.join(',')}`);
});

test('events: ids of a previous process are unknown after a restart -> reset, and new ids are larger', async (t) => {
  const srv1 = await startServer({ keepData: true });
  let srv2;
  t.after(async () => { await srv1.stop().catch(() => {}); if (srv2) await srv2.stop().catch(() => {}); });
  await putSpace(srv1, 'a');
  const c1 = await openSSE(srv1.port, EV, { token: srv1.adminToken });
  await putEntity(srv1, 'a', 'x', 'one');
  const [old] = await c1.waitEvents(1, { type: 'change' });
  c1.close();
  const r = await srv1.stop();
  assert.equal(r.code, 0);

  srv2 = await startServer({ dataDir: srv1.dataDir, keepData: false });
  const c2 = await openSSE(srv2.port, EV, { token: srv2.adminToken, headers: { 'Last-Event-ID': old.id } });
  t.after(() => c2.close());
  assertStreamHead(c2, 'after restart');
  const [reset] = await c2.waitEvents(1);
  assert.equal(reset.event, 'reset', `a previous process's id ${old.id} -> reset, got ${reset.event} ${reset.data}`);
  await putEntity(srv2, 'a', 'x', 'two');
  const [ev] = await c2.waitEvents(1, { type: 'change' });
  assert.ok(big(ev.id) > big(old.id), `ids keep growing across restarts: ${old.id} then ${ev.id}`);
});

test('events: `: ping` every --sse-keepalive-ms (200 ms)', async (t) => {
  const srv = await withServer(t, { args: ['--sse-keepalive-ms', '200'] });
  const c = await openSSE(srv.port, EV, { token: srv.adminToken });
  const h = await httpSSE(srv.port, EV, { token: srv.adminToken });
  t.after(() => { c.close(); h.close(); });
  const t0 = c.comments.length;
  await c.waitFor(() => c.comments.length >= t0 + 7 || undefined, 4000, '7 pings');
  const pings = c.comments.slice(t0);
  assert.ok(pings.every((p) => p.text === 'ping'), `comments: ${JSON.stringify(pings.map((p) => p.text))}`);
  const gaps = [];
  for (let i = 1; i < pings.length; i++) gaps.push(Math.round(pings[i].t - pings[i - 1].t));
  const sorted = [...gaps].sort((x, y) => x - y);
  const med = sorted[Math.floor(sorted.length / 2)];
  assert.ok(med >= 150 && med <= 280, `median ping interval ${med} ms (gaps ${gaps.join(', ')})`);
  assert.ok(sorted[0] >= 60 && sorted.at(-1) <= 600, `ping gaps within 60..600 ms: ${gaps.join(', ')}`);
  assert.ok(h.comments.length >= 3, `node:http client saw ${h.comments.length} pings`);
  assert.equal(c.events.length, 0, 'pings are comments, not events');
});

test('events: CORS headers on the stream for an allowed Origin, none for others', async (t) => {
  const srv = await withServer(t, { args: ['--cors-origins', 'http://app.example'] });
  await putSpace(srv, 'a');
  const ok = await openSSE(srv.port, EV, { token: srv.adminToken, headers: { Origin: 'http://app.example' } });
  const other = await openSSE(srv.port, EV, { token: srv.adminToken, headers: { Origin: 'http://evil.example' } });
  const feed = await openSSE(srv.port, '/api/v1/spaces/a/changes?feed=sse', { token: srv.adminToken, headers: { Origin: 'http://app.example' } });
  t.after(() => { ok.close(); other.close(); feed.close(); });
  assertStreamHead(ok, 'allowed origin');
  assert.equal(ok.headers['access-control-allow-origin'], 'http://app.example', `headers ${JSON.stringify(ok.headers)}`);
  assert.match(ok.headers.vary || '', /origin/i, 'Vary: Origin');
  assert.match(ok.headers['access-control-expose-headers'] || '', /sse-replay-from/i, 'SSE-Replay-From readable cross-origin');
  assert.notEqual(other.headers['access-control-allow-origin'], 'http://evil.example');
  assert.notEqual(other.headers['access-control-allow-origin'], '*');
  assertStreamHead(feed, 'feed=sse');
  assert.equal(feed.headers['access-control-allow-origin'], 'http://app.example', `feed=sse headers ${JSON.stringify(feed.headers)}`);
  // the stream still works cross-origin
  await putEntity(srv, 'a', 'x', 'cors');
  await ok.waitEvents(1, { type: 'change' });

  // preflight for a fetch()-based SSE client that sends Authorization and Last-Event-ID
  const pre = await api(srv, 'OPTIONS', EV, {
    token: null,
    headers: { Origin: 'http://app.example', 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'authorization,last-event-id' },
  });
  assert.ok(pre.status === 204 || pre.status === 200, `preflight -> ${pre.status} ${pre.text}`);
  assert.equal(pre.headers['access-control-allow-origin'], 'http://app.example');
  const allowH = (pre.headers['access-control-allow-headers'] || '').toLowerCase();
  assert.ok(allowH.includes('authorization') && allowH.includes('last-event-id'),
    `Access-Control-Allow-Headers ${JSON.stringify(pre.headers['access-control-allow-headers'])} must allow authorization and last-event-id`);
});

test('events: an HTTP/1.0 subscriber gets an unchunked stream (body delimited by the close)', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  const c = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken, httpVersion: '1.0' });
  t.after(() => c.close());
  assert.equal(c.status, 200, c.text);
  assert.equal(c.headers['transfer-encoding'], undefined, `no chunked framing for HTTP/1.0: ${JSON.stringify(c.headers)}`);
  assert.match(c.headers['content-type'] || '', /^text\/event-stream/);
  const e = await putEntity(srv, 'a', 'x', 'one');
  const [ev] = await c.waitEvents(1, { type: 'change' });
  assert.equal(ev.json.version, e.version);
  assert.ok(c.text.startsWith('retry: 2000\n\n'), `raw body: ${JSON.stringify(c.text.slice(0, 80))}`);
  assert.ok(!/^[0-9a-f]+\r\n/m.test(c.text), `no chunk-size lines in the body: ${JSON.stringify(c.text.slice(0, 120))}`);
});

test('events: batched commits (pushes of many changes, two spaces at once) reach every subscriber whole, once, in id order', async (t) => {
  // A commit of many changes goes to a subscriber that wants all of them as
  // one shared chunk, and frame by frame to one that wants some: both paths,
  // chunked and HTTP/1.0, must give the same events as one write at a time.
  const srv = await withServer(t);
  await putSpace(srv, 'a');
  await putSpace(srv, 'b');
  const tok = srv.adminToken;
  const subs = {
    all: await openSSE(srv.port, `${EV}?topics=change`, { token: tok }),
    a: await openSSE(srv.port, `${EV}?spaces=a&topics=change`, { token: tok }),
    a10: await openSSE(srv.port, `${EV}?spaces=a&topics=change`, { token: tok, httpVersion: '1.0' }),
    ab10: await openSSE(srv.port, `${EV}?spaces=a,b`, { token: tok, httpVersion: '1.0' }),
    viaHttp: await httpSSE(srv.port, `${EV}?spaces=b,a`, { token: tok }),
  };
  t.after(() => { for (const s of Object.values(subs)) s.close(); });
  const ROUNDS = 4;
  const N = 40;
  const push = (space, round) => pushMany(srv, space, N, { makeId: (i) => `${space}-${round}-${i}`, bodyOf: (i) => ({ i, pad: 'x'.repeat(i) }) });
  const expected = { a: [], b: [] };
  for (let r = 0; r < ROUNDS; r++) {
    const [va, vb] = await Promise.all([push('a', r), push('b', r)]);     // concurrent: often one commit
    expected.a.push(...va.map((v, i) => `a/a-${r}-${i}@${v}`));
    expected.b.push(...vb.map((v, i) => `b/b-${r}-${i}@${v}`));
  }
  const total = 2 * ROUNDS * N;
  await subs.all.waitEvents(total, { type: 'change' });
  await subs.a.waitEvents(ROUNDS * N, { type: 'change' });
  await subs.a10.waitEvents(ROUNDS * N, { type: 'change' });
  await subs.ab10.waitEvents(total, { type: 'change' });
  await subs.viaHttp.waitEvents(total, { type: 'change' });
  await sleep(300);       // anything extra (a duplicate) would show up now
  const keys = (s) => changeData(s).map((d) => `${d.space}/${d.id}@${d.version}`);
  for (const [name, s] of Object.entries(subs)) {
    const ids = s.ofType('change').map((e) => big(e.id));
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], `${name}: event ids increase (${ids[i - 1]} then ${ids[i]})`);
    const k = keys(s);
    assert.equal(new Set(k).size, k.length, `${name}: no event twice`);
    const bySpace = (sp) => k.filter((x) => x.startsWith(`${sp}/`));
    assert.deepEqual(bySpace('a'), expected.a, `${name}: space a's changes, all and in version order`);
    if (name === 'a' || name === 'a10') assert.deepEqual(bySpace('b'), [], `${name}: nothing of b`);
    else assert.deepEqual(bySpace('b'), expected.b, `${name}: space b's changes`);
  }
  // the same event carries the same id and data in every stream
  const byKey = (s) => new Map(s.ofType('change').map((e) => [`${e.json.space}/${e.json.id}`, `${e.id} ${e.data}`]));
  const all = byKey(subs.all);
  for (const name of ['a', 'a10', 'ab10', 'viaHttp']) {
    for (const [k, v] of byKey(subs[name])) assert.equal(v, all.get(k), `${name}: ${k} as in the all-spaces stream`);
  }
  for (const name of ['a10', 'ab10']) {
    assert.equal(subs[name].headers['transfer-encoding'], undefined);
    assert.ok(!/^[0-9a-f]+\r\n/m.test(subs[name].text), `${name}: no chunk-size lines in an HTTP/1.0 body`);
  }
  await assertHealthy(srv);
});

test('events: HEAD /api/v1/events answers the head and holds no subscriber slot (--sse-max-clients 1)', async (t) => {
  const srv = await withServer(t, { args: ['--sse-max-clients', '1'] });
  const conn = await openConn(srv.port);
  t.after(() => conn.destroy());
  await conn.write(`HEAD ${EV} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${srv.adminToken}\r\n\r\n`);
  const r = await conn.readResponse({ head: true, timeoutMs: 3000 });
  assert.ok(r.status === 200 || r.status === 405, `HEAD ${EV} -> ${r.status}`);
  // the connection is reusable (or closed), not stuck in a stream
  await conn.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  const h = await conn.readResponse({ timeoutMs: 2000 }).catch((e) => ({ error: e.message }));
  assert.ok(h.status === 200 || conn.closed,
    `after HEAD ${EV} (${r.status}) the same connection should answer GET /healthz or be closed; got ${JSON.stringify(h).slice(0, 300)}`);
  // and the only subscriber slot is free
  let s;
  const deadline = Date.now() + 2000;
  for (;;) {
    s = await openSSE(srv.port, EV, { token: srv.adminToken });
    if (s.status === 200 || Date.now() > deadline) break;
    s.close();
    await sleep(50);
  }
  t.after(() => s.close());
  assert.equal(s.status, 200, `GET ${EV} after a HEAD with --sse-max-clients 1 -> ${s.status} ${s.text}`);
});
