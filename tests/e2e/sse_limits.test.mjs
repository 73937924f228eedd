// sse_limits.test.mjs - the limits of the SSE hub (SPEC §8, §2):
// a never-reading subscriber overflows (bounded memory, the loop goes on),
// --sse-max-clients, subscribers that vanish mid-write, shutdown events.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withServer, startServer, api, putSpace, checkError, sleep, assertHealthy, httpRequest,
} from './helpers.mjs';
import { readFileSync } from 'node:fs';
import { openSSE, httpSSE, putEntity, pushMany, vmRssKiB } from './sse_helpers.mjs';

/** Whether the server runs with AddressSanitizer (its quarantine keeps freed memory in RSS). */
function sanitized(pid) {
  try { return /libasan|libtsan|libmsan/.test(readFileSync(`/proc/${pid}/maps`, 'utf8')); } catch { return false; }
}

const EV = '/api/v1/events';

// ---------------------------------------------------------------------------
// overflow: one server, shared by the two tests below

const LONG = 'x'.repeat(100);        // ~245-byte change frames
const WARM = 40000;                  // writes before measuring (SQLite cache, malloc arenas)
const N = 120000;                    // ~29 MB of frames while the slow subscriber never reads
let overflowRun = null;

function runOverflow() {
  overflowRun ??= (async () => {
    // the slow client reads only once every push is done: under a sanitizer
    // on a loaded machine that can be more than the default 60 s of
    // --idle-timeout-ms, after which its connection (no progress) is closed
    // with the overflow event still queued
    const srv = await startServer({ args: ['--sse-queue-bytes', '65536', '--sse-replay-events', '100', '--idle-timeout-ms', '600000'] });
    try {
      await putSpace(srv, 'a');
      await pushMany(srv, 'a', WARM, { makeId: (i) => `w${i}${LONG}` });
      const good = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken, keepText: false });
      // never reads: the kernel buffers fill (~4 MB on loopback: Node cannot
      // shrink SO_RCVBUF), then the server's own queue; past 64 KiB: overflow
      const slow = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken, noRead: true });
      await sleep(300);
      const rss0 = vmRssKiB(srv.pid);
      let rssMax = rss0;
      const sampler = setInterval(() => { const r = vmRssKiB(srv.pid); if (r > rssMax) rssMax = r; }, 10);
      const t0 = Date.now();
      try {
        await pushMany(srv, 'a', N, { makeId: (i) => `e${i}${LONG}` });
        await good.waitEvents(N, { type: 'change', timeoutMs: 120000 });
        await sleep(100);
      } finally {
        clearInterval(sampler);
      }
      const rss1 = vmRssKiB(srv.pid);
      const writeMs = Date.now() - t0;
      const publishedBytes = good.bodyBytes;
      const goodCount = good.ofType('change').length;
      const goodOverflows = good.ofType('overflow').length;
      // now read what the slow one was sent
      slow.startReading();
      const closedInTime = await slow.waitClosed(10000).then(() => true, () => false);
      const healthy = await api(srv, 'GET', '/healthz', { token: null });
      // a new subscriber still gets events
      const fresh = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken });
      const after = await putEntity(srv, 'a', 'c', 'after-overflow');
      const freshGot = await fresh.waitEvents(1, { type: 'change', timeoutMs: 5000 }).then((e) => e[0].json, (e) => e);
      fresh.close();
      good.close();
      return { srv, good, goodCount, goodOverflows, slow, rss0, rss1, rssMax, writeMs, publishedBytes, closedInTime, healthy, after, freshGot };
    } catch (e) {
      await srv.stop().catch(() => {});
      throw e;
    }
  })();
  return overflowRun;
}

test('overflow: a subscriber that never reads is cut off; server RSS stays bounded; other subscribers and the loop go on', { timeout: 240000 }, async (t) => {
  const o = await runOverflow();
  const { srv, slow } = o;
  const growKiB = o.rssMax - o.rss0;
  t.diagnostic(`published ${(o.publishedBytes / 1048576).toFixed(1)} MiB of change frames in ${o.writeMs} ms; ` +
    `server VmRSS ${o.rss0} -> max ${o.rssMax} KiB (+${growKiB} KiB); slow subscriber got ${(slow.bodyBytes / 1048576).toFixed(2)} MiB, ` +
    `${slow.events.length} events, closed=${slow.closed}, overflow event=${slow.text.includes('event: overflow')}`);
  // bounded: an unbounded per-subscriber queue would hold ~25 MiB here
  if (sanitized(srv.pid)) {
    t.diagnostic('server built with a sanitizer: its allocator quarantine keeps freed memory in RSS; RSS bound not checked');
  } else assert.ok(growKiB < 12 * 1024,
    `server VmRSS grew by ${growKiB} KiB while ${(o.publishedBytes / 1048576).toFixed(1)} MiB were published to a subscriber that never read (--sse-queue-bytes 65536)`);
  // the reading subscriber got everything, was never dropped
  assert.equal(o.goodCount, N, 'the reading subscriber got every change exactly once');
  assert.equal(o.goodOverflows, 0, 'a subscriber that keeps up never overflows');
  // the slow one was closed by the server (it did not close itself)
  assert.ok(o.closedInTime, `the slow subscriber's connection was not closed (got ${slow.bodyBytes} bytes, ${slow.events.length} events)`);
  assert.ok(slow.bodyBytes < o.publishedBytes / 2, `the slow subscriber was cut off: it received ${slow.bodyBytes} of ${o.publishedBytes} bytes`);
  assert.ok(slow.text.includes('event: overflow') || slow.closed, 'overflow event or closed');
  // what it did get is a clean prefix: consecutive versions, no garbage
  const vs = slow.ofType('change').map((e) => e.json.version);
  for (let i = 1; i < vs.length; i++) assert.equal(vs[i], vs[i - 1] + 1, `slow stream in order at ${i}`);
  // the server is fine
  assert.equal(o.healthy.status, 200);
  assert.equal(o.freshGot?.version, o.after.version, `a new subscriber gets events after the overflow: ${o.freshGot}`);
  await assertHealthy(srv);
});

test('overflow: the cut-off subscriber receives `event: overflow` before the close (SPEC §8)', { timeout: 240000 }, async (t) => {
  const o = await runOverflow();
  t.after(async () => {
    const r = await o.srv.stop();
    assert.deepEqual(r, { code: 0, signal: null }, `server exit after the overflow tests\n${o.srv.stderrText().slice(-3000)}`);
  });
  const s = o.slow;
  const tail = s.text.slice(-300);
  assert.ok(s.ofType('overflow').length === 1,
    `GET ${EV}?topics=change with a client that stops reading (--sse-queue-bytes 65536): expected the stream to end with ` +
    `"event: overflow", got ${s.events.length} events then the close, no overflow event; stream ends with ${JSON.stringify(tail)}`);
  assert.equal(s.events.at(-1).event, 'overflow', 'overflow is the last event');
});

// ---------------------------------------------------------------------------

test('--sse-max-clients 2: the third subscriber gets 503 too_many_subscribers; a freed slot is reusable', async (t) => {
  const srv = await withServer(t, { args: ['--sse-max-clients', '2'] });
  await putSpace(srv, 'a');
  const s1 = await openSSE(srv.port, EV, { token: srv.adminToken });
  const s2 = await openSSE(srv.port, '/api/v1/spaces/a/changes?feed=sse', { token: srv.adminToken });
  t.after(() => { s1.close(); s2.close(); });
  assert.equal(s1.status, 200);
  assert.equal(s2.status, 200);
  for (const p of [EV, `${EV}?topics=change`, '/api/v1/spaces/a/changes?feed=sse']) {
    const r = await api(srv, 'GET', p, { headers: { Accept: 'text/event-stream' } });
    checkError(assert, r, 503, 'too_many_subscribers', `GET ${p} with 2 subscribers and --sse-max-clients 2`);
  }
  // ordinary requests (and long polls) are not subscribers
  const lp = await api(srv, 'GET', '/api/v1/spaces/a/changes?feed=longpoll&since=0&timeout_ms=50');
  assert.equal(lp.status, 200, lp.text);
  // the two still work
  await putEntity(srv, 'a', 'x', 'one');
  await s1.waitEvents(1, { type: 'change' });
  await s2.waitEvents(1, { type: 'change' });
  // close one: within a moment a new one is accepted (still at most 2)
  s1.close();
  let s3;
  const deadline = Date.now() + 3000;
  for (;;) {
    s3 = await openSSE(srv.port, EV, { token: srv.adminToken });
    if (s3.status === 200 || Date.now() > deadline) break;
    s3.close();
    await sleep(50);
  }
  t.after(() => s3.close());
  assert.equal(s3.status, 200, `a closed subscriber's slot is freed: ${s3.status} ${s3.text}`);
  const r = await api(srv, 'GET', EV);
  checkError(assert, r, 503, 'too_many_subscribers', 'still capped at 2');
});

/** Opens a subscriber, retrying while the server still counts a closed one. */
async function acceptedWithin(srv, path, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const c = await openSSE(srv.port, path, { token: srv.adminToken });
    if (c.status === 200) return c;
    c.close();
    if (Date.now() > deadline) return c;
    await sleep(50);
  }
}

test('a subscriber that disconnects mid-write: server healthy, its slot freed (--sse-max-clients 1)', { timeout: 60000 }, async (t) => {
  const srv = await withServer(t, { args: ['--sse-max-clients', '1'] });
  await putSpace(srv, 'a');
  const body = { pad: 'p'.repeat(400) };

  // 1. /events: vanish (FIN) after a few events while a writer is busy
  const s1 = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken });
  assert.equal(s1.status, 200);
  let writeDone = false;
  const writing = pushMany(srv, 'a', 6000, { batch: 100, makeId: (i) => `m${i}`, bodyOf: () => body })
    .finally(() => { writeDone = true; });
  await s1.waitEvents(100, { type: 'change', timeoutMs: 20000 });
  s1.close();
  assert.ok(!writeDone, 'the subscriber left while the writer was still writing');
  let s2 = await acceptedWithin(srv, `${EV}?topics=change`, 3000);
  assert.equal(s2.status, 200, `after a subscriber closed mid-write, a new one is accepted: ${s2.status} ${s2.text}`);

  // 2. the same with a reset (RST) instead of a FIN
  await s2.waitEvents(10, { type: 'change', timeoutMs: 20000 });
  s2.sock.resetAndDestroy();
  const s3 = await acceptedWithin(srv, `${EV}?topics=change`, 3000);
  assert.equal(s3.status, 200, `after a subscriber reset its connection, a new one is accepted: ${s3.status} ${s3.text}`);
  s3.close();

  // 3. feed=sse closing in the middle of a big catch-up (bodies from version 0)
  const f1 = await acceptedWithin(srv, '/api/v1/spaces/a/changes?feed=sse&since=0', 3000);
  assert.equal(f1.status, 200, f1.text);
  await f1.waitEvents(50, { type: 'change', timeoutMs: 20000 });
  f1.close();
  const versions = await writing;
  assert.equal(versions.length, 6000);
  await assertHealthy(srv, 'after subscribers vanished mid-write');

  // 4. a new subscriber gets the next change
  const s4 = await acceptedWithin(srv, `${EV}?topics=change`, 3000);
  t.after(() => s4.close());
  assert.equal(s4.status, 200, `after a feed=sse closed mid-catch-up, a new subscriber is accepted: ${s4.status} ${s4.text}`);
  const e = await putEntity(srv, 'a', 'x', 'last');
  const [ev] = await s4.waitEvents(1, { type: 'change' });
  assert.equal(ev.json.version, e.version);
});

test('SIGTERM: every stream gets `event: shutdown` and ends; long polls are answered; exit 0', { timeout: 30000 }, async (t) => {
  const srv = await startServer({ args: ['--sse-keepalive-ms', '100000'] });
  t.after(async () => { await srv.stop().catch(() => {}); });
  await putSpace(srv, 'a');
  await putEntity(srv, 'a', 'x', 'one');
  const raw = await openSSE(srv.port, EV, { token: srv.adminToken });
  const viaHttp = await httpSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken });
  const feed = await openSSE(srv.port, '/api/v1/spaces/a/changes?feed=sse&since=0', { token: srv.adminToken });
  for (const c of [raw, viaHttp, feed]) assert.equal(c.status, 200, c.text);
  await feed.waitEvents(1, { type: 'change' });
  const longpoll = httpRequest(srv.port, {
    path: '/api/v1/spaces/a/changes?feed=longpoll&since=1&timeout_ms=20000',
    headers: { Authorization: `Bearer ${srv.adminToken}` }, timeoutMs: 15000,
  });
  await sleep(150);

  const t0 = Date.now();
  const exit = await srv.stop('SIGTERM', { timeoutMs: 15000 });
  const ms = Date.now() - t0;
  assert.deepEqual(exit, { code: 0, signal: null }, `exit status after SIGTERM\n${srv.stderrText().slice(-3000)}`);
  assert.ok(ms < 5000, `exited ${ms} ms after SIGTERM with idle streams open`);
  for (const [n, c] of [['events (raw)', raw], ['events (node:http)', viaHttp], ['feed=sse', feed]]) {
    await c.waitClosed(3000).catch(() => {});
    const sd = c.ofType('shutdown');
    assert.equal(sd.length, 1, `${n}: one shutdown event; stream: ${JSON.stringify(c.text.slice(-300))}`);
    assert.deepEqual(sd[0].json, {}, `${n}: shutdown data {}`);
    assert.equal(c.events.at(-1).event, 'shutdown', `${n}: shutdown is the last event`);
    assert.ok(c.closed, `${n}: the stream ended`);
    assert.ok(c.streamEnded, `${n}: the chunked stream was terminated cleanly (0-size chunk), not cut`);
  }
  const lp = await longpoll;
  assert.equal(lp.status, 200, `a pending long poll is answered at shutdown: ${lp.status} ${lp.body}`);
  const lpb = JSON.parse(lp.body);
  assert.deepEqual(lpb.changes, []);
});
