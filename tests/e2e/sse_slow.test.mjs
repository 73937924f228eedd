// sse_slow.test.mjs - slow subscribers of GET /api/v1/events (docs/api.md,
// "Server-Sent Events and live feeds"; docs/performance.md, "Slow
// subscribers"):
//   - what a subscriber holds counts against --sse-queue-bytes as its
//     frames plus 64 bytes per queued event, and it is cut off (event:
//     overflow) at the event that would pass the cap;
//   - a storm (1,000 subscribers that never read, 20 pushes of 1,000
//     changes) costs far less than the cap per subscriber, the loop keeps
//     answering, and the memory goes back when they leave;
//   - a fan-out spread over many loop turns still gives every subscriber
//     every event once, in id order, also one that joins mid-storm with
//     Last-Event-ID.
// Bounds are wide (several times what the server does) so that a loaded
// machine or a sanitizer build does not fail them; RSS bounds are not
// checked under a sanitizer (its allocator keeps freed memory).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { startServer, withServer, api, putSpace, sleep, assertHealthy } from './helpers.mjs';
import { openSSE, putEntity, pushMany, vmRssKiB } from './sse_helpers.mjs';

const EV = '/api/v1/events';
const OVERHEAD = 64;                 // SSE_EVENT_OVERHEAD (include/sse.h), per queued event

function sanitized(pid) {
  try { return /libasan|libtsan|libmsan/.test(readFileSync(`/proc/${pid}/maps`, 'utf8')); } catch { return false; }
}

/** The server's /metrics as { name: value } (unlabelled samples only). */
async function metrics(srv) {
  const r = await api(srv, 'GET', '/metrics');
  assert.equal(r.status, 200, r.text);
  const m = {};
  for (const l of r.text.split('\n')) {
    const x = /^([a-z_]+) ([0-9.e+-]+)$/.exec(l);
    if (x) m[x[1]] = Number(x[2]);
  }
  return m;
}

/** Waits until pred(metrics) holds; returns those metrics. */
async function waitMetrics(srv, pred, what, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = await metrics(srv);
    if (pred(m)) return m;
    if (Date.now() > deadline) throw new Error(`timeout waiting for ${what}: ${JSON.stringify(m)}`);
    await sleep(50);
  }
}

/** Waits until the server has offered every published event to every
 *  subscriber (a server without the gauge fans out before it answers). */
const fannedOut = (srv) => waitMetrics(srv, (m) => !m.snapsync_sse_fanout_backlog_events, 'the fan-out to end');

/** A subscriber that sends its request and never reads a byte. */
function stalledSubscriber(port, token, path = `${EV}?topics=change`) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    s.on('connect', () => {
      s.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n\r\n`);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** The open-file limit this process's children get. */
function childNofile() {
  const r = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' });
  const v = r.stdout.trim();
  return v === 'unlimited' ? Infinity : Number(v);
}

/** GET /healthz on a new connection; resolves with ms (Infinity on error). */
function healthMs(port) {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/healthz', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? Number(process.hrtime.bigint() - t0) / 1e6 : Infinity));
    });
    req.setTimeout(30000, () => req.destroy());
    req.on('error', () => resolve(Infinity));
  });
}

// ---------------------------------------------------------------------------

test('the cap counts each queued event as its frame plus 64 bytes; a subscriber that never reads is cut off at the event that would pass it', { timeout: 180000 }, async (t) => {
  const CAP = 32768;
  const srv = await withServer(t, { args: ['--sse-queue-bytes', String(CAP), '--sse-keepalive-ms', '600000'] });
  await putSpace(srv, 'a');
  const slow = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken, noRead: true });
  await waitMetrics(srv, (m) => m.snapsync_sse_subscribers === 1, 'the subscriber');

  // 1. fill the kernel's buffers for it (a few MB on loopback): pushes of
  //    100 changes (~15 KB, under half the cap) until the server starts
  //    to hold bytes for it
  let m = await metrics(srv);
  let pushes = 0;
  for (let i = 0; m.snapsync_sse_queued_bytes === 0; i++) {
    assert.ok(i < 2000, 'the subscriber that never reads never made the server queue anything');
    await pushMany(srv, 'a', 100, { makeId: (k) => `fill${i}-${k}`, batch: 100 });
    pushes++;
    m = await fannedOut(srv);
    assert.equal(m.snapsync_sse_dropped_subscribers_total, 0, `overflowed while filling the kernel buffers (queued ${m.snapsync_sse_queued_bytes})`);
  }
  assert.ok(m.snapsync_sse_queued_bytes <= CAP, `queued ${m.snapsync_sse_queued_bytes} > cap ${CAP}`);
  t.diagnostic(`kernel buffers full after ${pushes} pushes of 100; the server holds ${m.snapsync_sse_queued_bytes} bytes for it`);

  // 2. one change at a time: a reader shows each event's exact frame; the
  //    server's queue for the slow one grows by frame + HTTP chunk framing
  //    (12 bytes) + 64, until the event that would pass the cap
  const reader = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken, keepText: false });
  t.after(() => reader.close());
  let queued = m.snapsync_sse_queued_bytes;
  let steps = 0;
  for (let i = 0; ; i++) {
    assert.ok(i < 2000, 'never overflowed');
    const e = await putEntity(srv, 'a', 'c', `one-${i}`);
    const [ev] = (await reader.waitEvents(i + 1, { type: 'change', timeoutMs: 10000 })).slice(i);
    assert.equal(ev.json.version, e.version);
    const frame = Buffer.byteLength(`id: ${ev.id}\nevent: change\ndata: ${ev.data}\n\n`);
    const cost = frame + 12 + OVERHEAD;
    m = await fannedOut(srv);
    if (m.snapsync_sse_dropped_subscribers_total === 1) {
      assert.ok(queued + cost > CAP, `cut off at an event that fit: held ${queued} + ${cost} <= ${CAP}`);
      assert.equal(m.snapsync_sse_queued_bytes, 0, 'nothing counted for it once it is gone');
      t.diagnostic(`${steps} single events queued at frame+76 each; cut off holding ${queued} of ${CAP} bytes, the next would cost ${cost}`);
      break;
    }
    assert.equal(m.snapsync_sse_queued_bytes - queued, cost, `event ${i}: the queue grew by frame ${frame} + 12 + ${OVERHEAD}`);
    assert.ok(m.snapsync_sse_queued_bytes <= CAP);
    queued = m.snapsync_sse_queued_bytes;
    steps++;
  }
  assert.ok(steps > 10, `only ${steps} events were queued before the overflow`);

  // 3. what it was sent is a clean prefix, then event: overflow, then the end
  slow.startReading();
  await slow.waitClosed(30000);
  const vs = slow.ofType('change').map((e) => e.json.version);
  for (let i = 1; i < vs.length; i++) assert.equal(vs[i], vs[i - 1] + 1, `in order at ${i}`);
  assert.equal(slow.events.at(-1)?.event, 'overflow', `the stream ends with event: overflow: ${JSON.stringify(slow.events.slice(-2))}`);
  await assertHealthy(srv);
});

test('storm: 1,000 subscribers that never read, 20 pushes of 1,000 changes: memory far under the cap per subscriber, the loop answers, memory goes back when they leave', { timeout: 300000 }, async (t) => {
  const N = 1000;
  const nofile = childNofile();
  if (nofile < N + 300) {
    t.skip(`open-file limit ${nofile} is under ${N + 300}`);
    return;
  }
  const srv = await startServer({ args: ['--access-log', 'false'] });
  t.after(async () => {
    const r = await srv.stop();
    assert.deepEqual(r, { code: 0, signal: null }, `server exit\n${srv.stderrText().slice(-3000)}`);
  });
  const noRss = sanitized(srv.pid);
  await putSpace(srv, 'a');
  await pushMany(srv, 'a', 1000, { makeId: (k) => `warm${k}` });          // warm the write path
  await sleep(300);
  const rss0 = vmRssKiB(srv.pid);

  const socks = [];
  for (let i = 0; i < N; i += 100) {
    socks.push(...await Promise.all(Array.from({ length: Math.min(100, N - i) }, () => stalledSubscriber(srv.port, srv.adminToken))));
  }
  const onClose = () => { for (const s of socks) s.destroy(); };
  t.after(onClose);
  await waitMetrics(srv, (m) => m.snapsync_sse_subscribers === N, `${N} subscribers`);
  const rssSubs = vmRssKiB(srv.pid);

  // the storm, with RSS sampled, /healthz probed and the server's queue watched
  let rssMax = rssSubs;
  const sampler = setInterval(() => { const r = vmRssKiB(srv.pid); if (r > rssMax) rssMax = r; }, 10);
  const health = [];
  let probing = true;
  const prober = (async () => {
    while (probing) {
      health.push(await healthMs(srv.port));
      await sleep(100);
    }
  })();
  let queuedMax = 0;
  const t0 = Date.now();
  try {
    await pushMany(srv, 'a', 20000, { makeId: (k) => `storm${k}` });
    for (;;) {
      const m = await metrics(srv);
      queuedMax = Math.max(queuedMax, m.snapsync_sse_queued_bytes);
      if (!m.snapsync_sse_fanout_backlog_events) break;
      assert.ok(Date.now() - t0 < 120000, 'the fan-out did not end within 2 minutes');
      await sleep(50);
    }
  } finally {
    clearInterval(sampler);
    probing = false;
    await prober;
  }
  const stormMs = Date.now() - t0;
  const m1 = await metrics(srv);
  const perSubKiB = (rssMax - rss0) / N;
  const healthMax = Math.max(...health);
  t.diagnostic(`storm ${stormMs} ms; VmRSS ${rss0} -> ${rssSubs} with subscribers -> max ${rssMax} KiB ` +
    `(${perSubKiB.toFixed(1)} KiB per subscriber, cap 256 KiB); longest loop stall ${(m1.snapsync_loop_max_stall_seconds * 1000).toFixed(1)} ms; ` +
    `/healthz max ${healthMax.toFixed(1)} ms over ${health.length} probes; overflowed ${m1.snapsync_sse_dropped_subscribers_total}; ` +
    `server queue max ${queuedMax} B`);
  if (noRss) t.diagnostic('sanitizer build: RSS bounds not checked');
  else assert.ok(perSubKiB < 128, `${perSubKiB.toFixed(1)} KiB per subscriber that never reads (--sse-queue-bytes 256 KiB)`);
  assert.ok(health.length >= 5 && health.every(Number.isFinite), `every /healthz during the storm answered 200: ${health}`);
  assert.ok(healthMax < 2000, `/healthz took ${healthMax.toFixed(0)} ms during the storm`);
  assert.ok(m1.snapsync_loop_max_stall_seconds < 1, `the loop was busy for ${m1.snapsync_loop_max_stall_seconds} s in one go`);
  assert.ok(queuedMax <= N * 262144, `the server held ${queuedMax} bytes for ${N} subscribers, more than their caps`);

  // everyone leaves; once the connections are closed, the memory goes back
  onClose();
  await waitMetrics(srv, (m) => m.snapsync_sse_subscribers === 0 && m.snapsync_open_connections <= 1, 'the subscribers to be gone', 30000);
  const trimmed = await srv.waitForLog((o) => o.msg === 'memory_trimmed', 10000).catch(() => null);
  await sleep(200);
  const rssAfter = vmRssKiB(srv.pid);
  t.diagnostic(`after they left: VmRSS ${rssAfter} KiB (before ${rss0}); ${trimmed ? `malloc_trim ${trimmed.rss_before_kib} -> ${trimmed.rss_after_kib} KiB in ${trimmed.ms} ms` : 'no memory_trimmed line'}`);
  assert.ok(trimmed, 'memory_trimmed is logged after 1,000 connections closed');
  if (!noRss) assert.ok(rssAfter - rss0 < 24 * 1024, `VmRSS ${rssAfter} KiB after every subscriber left, ${rss0} KiB before they came`);

  // and the server goes on
  const fresh = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken });
  const e = await putEntity(srv, 'a', 'c', 'after-the-storm');
  const [ev] = await fresh.waitEvents(1, { type: 'change', timeoutMs: 10000 });
  fresh.close();
  assert.equal(ev.json.version, e.version);
  await assertHealthy(srv);
});

test('a fan-out spread over many loop turns: every subscriber gets every event once, in id order; one that joins mid-storm with Last-Event-ID misses none and gets none twice', { timeout: 180000 }, async (t) => {
  const SUBS = 100;
  const PUSHES = 6;
  const srv = await withServer(t, { args: ['--access-log', 'false'] });
  await putSpace(srv, 'a');
  await putSpace(srv, 'b');
  const subs = [];
  for (let i = 0; i < SUBS; i++) subs.push(await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken, timeoutMs: 20000, keepText: false }));
  const onlyB = await openSSE(srv.port, `${EV}?topics=change&spaces=b`, { token: srv.adminToken, timeoutMs: 20000, keepText: false });
  t.after(() => { for (const s of [...subs, onlyB]) s.close(); });

  // pushes of 1,000 to a and b, two at a time, so commits arrive while a
  // round is still going
  const push = (i) => pushMany(srv, i % 2 ? 'b' : 'a', 1000, { makeId: (k) => `p${i}-${k}` });
  const running = [push(0), push(1)];
  // once the first has seen 1,500 events, a new subscriber resumes after the 1,500th
  const first = await subs[0].waitEvents(1500, { type: 'change', timeoutMs: 60000 });
  const resumeId = first[1499].id;
  const joiner = await openSSE(srv.port, `${EV}?topics=change`, { token: srv.adminToken, timeoutMs: 20000, keepText: false, headers: { 'Last-Event-ID': resumeId } });
  t.after(() => joiner.close());
  assert.equal(joiner.status, 200);
  for (let i = 2; i < PUSHES; i += 2) {
    await Promise.all(running.splice(0));
    running.push(push(i), push(i + 1));
  }
  await Promise.all(running);
  await fannedOut(srv);
  const total = PUSHES * 1000;

  const ids = (c) => c.ofType('change').map((e) => BigInt(e.id));
  for (const [n, c] of subs.entries()) {
    const got = await c.waitEvents(total, { type: 'change', timeoutMs: 60000 });
    assert.equal(got.length, total, `subscriber ${n}: every event once`);
    const v = ids(c);
    for (let i = 1; i < v.length; i++) assert.ok(v[i] > v[i - 1], `subscriber ${n}: ids increase at ${i}`);
    assert.equal(c.ofType('overflow').length, 0);
  }
  const all = ids(subs[0]);
  for (const c of subs.slice(1)) assert.deepEqual(ids(c), all, 'every subscriber saw the same events');
  const bOnly = await onlyB.waitEvents(total / 2, { type: 'change', timeoutMs: 60000 });
  assert.ok(bOnly.every((e) => e.json.space === 'b'), 'the spaces filter holds across turns');
  assert.equal(bOnly.length, total / 2);
  const after = all.filter((id) => id > BigInt(resumeId));
  const j = await joiner.waitEvents(after.length, { type: 'change', timeoutMs: 60000 });
  await sleep(200);
  assert.deepEqual(ids(joiner), after, `the joiner got exactly the ${after.length} events after ${resumeId}, in order (got ${j.length})`);
  const m = await metrics(srv);
  t.diagnostic(`${SUBS + 2} subscribers, ${total} events; longest loop stall ${(m.snapsync_loop_max_stall_seconds * 1000).toFixed(1)} ms`);
});
