// http_limits.test.mjs - SPEC §3 limits: 431 headers too large, 413 body
// too large, 408 header timeout (slowloris), 408 body timeout and minimum
// body rate (slow bodies), idle keep-alive timeout, 503 past
// --max-connections.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, withServer, rawRequest, openConn, parseResponses, checkError, assertHealthy, httpRequest, sleep,
} from './helpers.mjs';

let srv;
before(async () => {
  srv = await startServer({
    args: ['--max-header-bytes', '2048', '--max-body-bytes', '1024', '--header-timeout-ms', '300', '--idle-timeout-ms', '300',
      '--body-timeout-ms', '300', '--min-body-rate', '100'],
  });
});
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

/** One response and a close, from a fresh connection. */
async function oneAndClose(port, bytes, opts = {}) {
  const raw = await rawRequest(port, bytes, { timeoutMs: 2500, ...opts });
  const rs = parseResponses(raw.data);
  return { raw, rs, r: rs[0] };
}

test('a 4 KB header -> 431 headers_too_large and close', async () => {
  const bytes = `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`;
  const { raw, rs, r } = await oneAndClose(srv.port, bytes);
  assert.equal(rs.length, 1, raw.text);
  checkError(assert, r, 431, 'headers_too_large', '4 KB header');
  assert.equal(raw.closed, true, 'closed after 431');
});

test('many small headers over the limit -> 431', async () => {
  let h = '';
  for (let i = 0; i < 120; i++) h += `X-H${i}: ${'v'.repeat(20)}\r\n`;
  const { raw, r } = await oneAndClose(srv.port, `GET /healthz HTTP/1.1\r\nHost: x\r\n${h}\r\n`);
  assert.ok(r, raw.text);
  checkError(assert, r, 431, 'headers_too_large', '120 headers');
  assert.equal(raw.closed, true);
});

test('a very long URL counts against the header limit -> 431', async () => {
  const { raw, r } = await oneAndClose(srv.port, `GET /healthz?q=${'u'.repeat(4000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.ok(r, raw.text);
  checkError(assert, r, 431, 'headers_too_large', 'long URL');
  assert.equal(raw.closed, true);
});

test('headers under the limit (about 1.5 KB) are fine', async () => {
  const { raw, r } = await oneAndClose(srv.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Mid: ${'m'.repeat(1500)}\r\nConnection: close\r\n\r\n`);
  assert.ok(r, raw.text);
  assert.equal(r.status, 200, r.body);
});

test('Content-Length over --max-body-bytes -> 413 at once (before the body) and close', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  const t0 = Date.now();
  await c.write('POST /api/v1/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n');
  const r = await c.readResponse({ timeoutMs: 1500 });
  checkError(assert, r, 413, 'body_too_large', 'Content-Length: 5000');
  assert.ok(Date.now() - t0 < 1000, `413 took ${Date.now() - t0} ms`);
  assert.equal(await c.waitClose(2500), true, 'closed after 413');
});

test('Content-Length over the limit on an unknown route -> 413 too', async () => {
  const { raw, r } = await oneAndClose(srv.port, 'POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n');
  assert.ok(r, raw.text);
  checkError(assert, r, 413, 'body_too_large', 'unknown route');
  assert.equal(raw.closed, true);
});

test('a body of exactly the limit (1024) is accepted and the connection kept', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  const body = 'b'.repeat(1024);
  await c.write(`POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n${body}`);
  const r = await c.readResponse();
  assert.equal(r.status, 404, `1024-byte body: ${r.status} ${r.body}`);
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal((await c.readResponse()).status, 200);
});

test('chunked body over the limit -> 413 and close', async () => {
  const chunk = `200\r\n${'c'.repeat(512)}\r\n`;
  const bytes = `POST /api/v1/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}${chunk}${chunk}0\r\n\r\n`;
  const { raw, rs, r } = await oneAndClose(srv.port, bytes);
  assert.equal(rs.length, 1, raw.text);
  checkError(assert, r, 413, 'body_too_large', 'chunked 1536 bytes');
  assert.equal(raw.closed, true);
});

test('chunked body over the limit, sent in pieces -> 413 and close', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  await c.write('POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
  for (let i = 0; i < 3 && !c.closed && c.buffer.length === 0; i++) {
    await c.write(`200\r\n${'c'.repeat(512)}\r\n`);
    await sleep(30);
  }
  const r = await c.readResponse({ timeoutMs: 1500 });
  checkError(assert, r, 413, 'body_too_large', 'chunked pieces');
  assert.equal(await c.waitClose(2500), true);
});

test('slowloris: incomplete headers -> 408 request_timeout after ~300 ms, then close', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  const t0 = Date.now();
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
  const r = await c.readResponse({ timeoutMs: 2500 });
  const dt = Date.now() - t0;
  checkError(assert, r, 408, 'request_timeout', 'slowloris');
  assert.ok(dt >= 250, `408 came too early (${dt} ms)`);
  assert.ok(dt < 1500, `408 came too late (${dt} ms)`);
  assert.equal(await c.waitClose(2500), true, 'closed after 408');
});

test('slowloris trickling one byte every 50 ms still gets 408 (deadline not reset per byte)', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  const t0 = Date.now();
  const line = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'z'.repeat(200);
  let i = 0;
  while (!c.closed && c.buffer.length === 0 && Date.now() - t0 < 2500) {
    await c.write(i < line.length ? line[i] : 'z');
    i++;
    await sleep(50);
  }
  const dt = Date.now() - t0;
  assert.ok(c.buffer.length > 0 || c.closed, 'still open after 2.5 s of trickling');
  assert.ok(dt < 1500, `server waited ${dt} ms for headers with a 300 ms header timeout`);
  if (c.buffer.length > 0) {
    const r = await c.readResponse();
    checkError(assert, r, 408, 'request_timeout', 'trickle');
  }
});

test('a connection that sends nothing is closed after the header timeout', async () => {
  const raw = await rawRequest(srv.port, '', { timeoutMs: 2500 });
  assert.equal(raw.closed, true, 'silent connection still open after 2.5 s');
  assert.ok(raw.elapsedMs >= 200, `closed too early: ${raw.elapsedMs} ms`);
  assert.ok(raw.elapsedMs < 1500, `closed too late: ${raw.elapsedMs} ms`);
  if (raw.data.length) {
    const [r] = parseResponses(raw.data);
    assert.equal(r.status, 408);
  }
});

test('stalled body -> 408 and close after --body-timeout-ms', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  const t0 = Date.now();
  await c.write('POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part');
  const r = await c.readResponse({ timeoutMs: 2000 });
  const dt = Date.now() - t0;
  checkError(assert, r, 408, 'request_timeout', 'stalled body');
  assert.ok(dt >= 250 && dt < 1500, `408 after ${dt} ms with a 300 ms body timeout`);
  assert.equal(await c.waitClose(2000), true, 'stalled body connection still open');
});

/** Sends the head, then the body one byte every `everyMs` until an answer or a close. */
async function trickle(t, port, { bytes = 1000, everyMs = 50, maxMs = 3000, chunked = false } = {}) {
  const c = await openConn(port);
  t.after(() => c.destroy());
  const t0 = Date.now();
  await c.write(`POST /nope HTTP/1.1\r\nHost: x\r\n${chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${bytes}`}\r\n\r\n`);
  let sent = 0;
  while (!c.closed && c.buffer.length === 0 && Date.now() - t0 < maxMs && sent < bytes) {
    await c.write(chunked ? '1\r\nb\r\n' : 'b');
    sent++;
    await sleep(everyMs);
  }
  return { c, dt: Date.now() - t0, sent };
}

test('body trickled at 20 B/s, below --min-body-rate 100 -> 408 and close (gaps never reach the body timeout)', async (t) => {
  // allowed: 300 ms + 10 ms per byte; at one byte per 50 ms that runs out near 375 ms
  const { c, dt, sent } = await trickle(t, srv.port);
  assert.ok(c.buffer.length > 0 || c.closed, `still reading a 20 B/s body after ${dt} ms (${sent} bytes)`);
  assert.ok(dt < 1500, `slow body kept ${dt} ms`);
  const r = await c.readResponse();
  const body = checkError(assert, r, 408, 'request_timeout', 'trickled body');
  assert.match(body.message, /too slow/);
  assert.equal(await c.waitClose(2000), true);
});

test('chunked body trickled below the minimum rate -> 408 too', async (t) => {
  const { c, dt } = await trickle(t, srv.port, { chunked: true });
  assert.ok(c.buffer.length > 0 || c.closed, `still reading after ${dt} ms`);
  checkError(assert, await c.readResponse(), 408, 'request_timeout', 'trickled chunked body');
});

test('a slow but steady body (about 600 B/s for 1 s, longer than the body timeout) is read', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  await c.write('POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 600\r\n\r\n');
  for (let i = 0; i < 10; i++) {
    await sleep(100);
    await c.write('s'.repeat(60));
  }
  const r = await c.readResponse();
  assert.equal(r.status, 404, `${r.status} ${r.body}`);
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal((await c.readResponse()).status, 200, 'connection still usable');
});

test('SNAPSYNC_BODY_TIMEOUT_MS and SNAPSYNC_MIN_BODY_RATE set the body limits', async (t) => {
  const s = await withServer(t, { env: { SNAPSYNC_BODY_TIMEOUT_MS: '200', SNAPSYNC_MIN_BODY_RATE: '0' } });
  // rate check off: a trickle with gaps under 200 ms lives on...
  const { c, dt } = await trickle(t, s.port, { everyMs: 100, maxMs: 1000 });   // 10 B/s for 1 s
  assert.equal(c.buffer.length, 0, `answered a steady trickle after ${dt} ms: ${c.buffer.toString('latin1')}`);
  assert.equal(c.closed, false);
  // ...and a stall past 200 ms ends it
  const r = await c.readResponse({ timeoutMs: 2000 });
  checkError(assert, r, 408, 'request_timeout', 'stall with SNAPSYNC_BODY_TIMEOUT_MS=200');
});

test('idle keep-alive connection is closed by the server (~300 ms)', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  const r = await c.readResponse();
  assert.equal(r.status, 200);
  const t0 = Date.now();
  assert.equal(c.closed, false, 'closed right after the response');
  assert.equal(await c.waitClose(1500), true, 'idle connection still open after 1.5 s');
  const dt = c.closedAt - t0;
  assert.ok(dt >= 150, `idle close too early (${dt} ms)`);
  assert.ok(dt < 1000, `idle close too late (${dt} ms)`);
  assert.equal(c.buffer.length, 0, `no bytes expected on idle close: ${c.buffer.toString('latin1')}`);
});

test('activity keeps a keep-alive connection open past the idle timeout', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  for (let i = 0; i < 6; i++) {           // 6 x 150 ms = 900 ms > 300 ms idle timeout
    await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await c.readResponse()).status, 200, `request ${i}`);
    await sleep(150);
  }
});

test('--max-connections 3: the 4th gets 503 too_many_connections; capacity comes back', async (t) => {
  const s = await withServer(t, { args: ['--max-connections', '3'] });
  await sleep(100);   // the health-check connection is gone
  const held = [];
  t.after(() => { for (const c of held) c.destroy(); });
  for (let i = 0; i < 3; i++) {
    const c = await openConn(s.port);
    held.push(c);
    await c.write('GET /healthz HTTP/1.1\r\n');   // partial: stays open
  }
  await sleep(100);
  for (const [i, c] of held.entries()) assert.equal(c.closed, false, `held connection ${i} was closed`);

  const fourth = await openConn(s.port);
  t.after(() => fourth.destroy());
  // The server may answer at accept time; only send a request if it did not.
  await fourth.waitData(1, 300);
  if (fourth.buffer.length === 0 && !fourth.closed) {
    await fourth.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  }
  const r = await fourth.readResponse({ timeoutMs: 2000 });
  checkError(assert, r, 503, 'too_many_connections', '4th connection');
  assert.equal(await fourth.waitClose(2500), true, '4th connection closed after 503');
  // a client that writes its request at once still reads the 503 (no reset)
  const eager = await rawRequest(s.port, 'GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Request-Id: eager-5\r\n\r\n', { timeoutMs: 2000 });
  const [er] = parseResponses(eager.data);
  assert.ok(er, `eager 5th connection got no response: ${JSON.stringify(eager.text)} closed=${eager.closed}`);
  checkError(assert, er, 503, 'too_many_connections', 'eager 5th connection');
  assert.equal(eager.closed, true);
  assert.equal(s.exited, null);

  fourth.destroy();
  for (const c of held) c.destroy();
  // capacity is back once the held connections are gone
  let ok = null;
  const deadline = Date.now() + 2000;
  while (Date.now() < deadline) {
    const raw = await rawRequest(s.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const [resp] = parseResponses(raw.data);
    if (resp && resp.status === 200) { ok = resp; break; }
    await sleep(50);
  }
  assert.ok(ok, 'no 200 after releasing the held connections');
  // and 3 concurrent requests work again
  await sleep(100);
  const rs = await Promise.all([0, 1, 2].map(() => httpRequest(s.port, { path: '/healthz' })));
  assert.deepEqual(rs.map((x) => x.status), [200, 200, 200]);
});

test('server still healthy after all the limit tests', async () => {
  // a fresh request (header timeout 300 ms must not hit a normal request)
  await assertHealthy(srv);
});
