// http_conn.test.mjs - SPEC §3 connection handling over raw sockets:
// keep-alive, pipelining, Connection: close, HTTP/1.0, request bodies,
// Expect: 100-continue, half-close, malformed requests.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, rawRequest, openConn, parseResponses, checkError, assertHealthy, RID_RE, sleep,
} from './helpers.mjs';

let srv;
before(async () => { srv = await startServer(); });
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

const GET = (p, extra = '') => `GET ${p} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;
// /api/v1/status needs a key (SPEC §4): every request for it carries the admin token
const AUTH = () => `Authorization: Bearer ${srv.adminToken}\r\n`;

async function conn(t) {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  return c;
}

test('keep-alive: several requests on one socket', async (t) => {
  const c = await conn(t);
  for (let i = 0; i < 5; i++) {
    await c.write(GET(i % 2 ? '/api/v1/status' : '/healthz', `X-Request-Id: ka-${i}\r\n${AUTH()}`));
    const r = await c.readResponse();
    assert.equal(r.status, 200, `request ${i}`);
    assert.equal(r.version, '1.1');
    assert.equal(r.headers['x-request-id'], `ka-${i}`);
    assert.notEqual((r.headers.connection || '').toLowerCase(), 'close');
    assert.equal(c.closed, false, `closed after request ${i}`);
  }
  // and errors do not end a keep-alive connection either
  await c.write(GET('/nope'));
  assert.equal((await c.readResponse()).status, 404);
  await c.write(GET('/healthz'));
  assert.equal((await c.readResponse()).status, 200);
});

test('pipelining: three requests in one write -> three responses in order', async (t) => {
  const c = await conn(t);
  await c.write(
    GET('/healthz', 'X-Request-Id: p-1\r\n') +
    GET('/api/v1/status', `X-Request-Id: p-2\r\n${AUTH()}`) +
    GET('/nope', 'X-Request-Id: p-3\r\n'),
  );
  const a = await c.readResponse();
  const b = await c.readResponse();
  const d = await c.readResponse();
  assert.deepEqual([a.status, b.status, d.status], [200, 200, 404]);
  assert.deepEqual([a.headers['x-request-id'], b.headers['x-request-id'], d.headers['x-request-id']], ['p-1', 'p-2', 'p-3']);
  assert.deepEqual(a.json, { status: 'ok' });
  assert.equal(b.json.name, 'snapsync');
  assert.equal(d.json.error, 'not_found');
  assert.equal(c.closed, false);
});

test('pipelining: 60 requests, delivered in random-sized pieces, stay in order', async (t) => {
  const c = await conn(t);
  const paths = ['/healthz', '/api/v1/status', '/nope'];
  const want = [];
  let all = '';
  for (let i = 0; i < 60; i++) {
    const p = paths[i % 3];
    want.push([p === '/nope' ? 404 : 200, `pp-${i}`]);
    all += i % 7 === 3
      ? `HEAD ${p} HTTP/1.1\r\nHost: x\r\nX-Request-Id: pp-${i}\r\n${AUTH()}\r\n`
      : GET(p, `X-Request-Id: pp-${i}\r\n${AUTH()}`);
  }
  const buf = Buffer.from(all);
  let off = 0;
  let step = 1;
  while (off < buf.length) {
    const n = Math.min(buf.length - off, step);
    await c.write(buf.subarray(off, off + n));
    off += n;
    step = (step * 7 + 3) % 500 + 1;   // 1..500 bytes, deterministic
  }
  for (let i = 0; i < 60; i++) {
    const r = await c.readResponse({ head: i % 7 === 3 });
    assert.deepEqual([r.status, r.headers['x-request-id']], want[i], `response ${i}`);
  }
  await sleep(50);
  assert.equal(c.buffer.length, 0, 'no stray bytes after the last response');
});

test('Connection: close is honoured', async (t) => {
  const c = await conn(t);
  await c.write(GET('/healthz', 'Connection: close\r\n'));
  const r = await c.readResponse();
  assert.equal(r.status, 200);
  assert.equal((r.headers.connection || '').toLowerCase(), 'close');
  assert.equal(await c.waitClose(2000), true, 'server closed the socket');
});

test('Connection: close on an error response closes too', async (t) => {
  const c = await conn(t);
  await c.write(GET('/nope', 'Connection: close\r\n'));
  const r = await c.readResponse();
  assert.equal(r.status, 404);
  assert.equal((r.headers.connection || '').toLowerCase(), 'close');
  assert.equal(await c.waitClose(2000), true);
});

test('HTTP/1.0 without keep-alive: closed after the response', async () => {
  const raw = await rawRequest(srv.port, 'GET /healthz HTTP/1.0\r\n\r\n', { timeoutMs: 2000 });
  assert.equal(raw.closed, true, `socket left open; got ${raw.text}`);
  const rs = parseResponses(raw.data);
  assert.equal(rs.length, 1, raw.text);
  assert.equal(rs[0].status, 200);
  assert.deepEqual(rs[0].json, { status: 'ok' });
});

test('HTTP/1.0: a second pipelined request is not answered after the close', async () => {
  const raw = await rawRequest(srv.port, 'GET /healthz HTTP/1.0\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n', { timeoutMs: 2000 });
  assert.equal(raw.closed, true);
  assert.equal(parseResponses(raw.data).length, 1, raw.text);
});

test('Content-Length body to an unknown route: 404, body discarded, connection reusable', async (t) => {
  const c = await conn(t);
  const body = '{"hello":"world","GET /healthz HTTP/1.1":1}';
  await c.write(`POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  const r = await c.readResponse();
  checkError(assert, r, 404, 'not_found', 'POST /api/v1/nope');
  await c.write(GET('/healthz', 'X-Request-Id: after-body\r\n'));
  const r2 = await c.readResponse();
  assert.equal(r2.status, 200);
  assert.equal(r2.headers['x-request-id'], 'after-body');
});

test('large Content-Length body (256 KiB) to an unknown route is discarded', async (t) => {
  const c = await conn(t);
  const body = Buffer.alloc(256 * 1024, 'GET /nope HTTP/1.1\r\n\r\n');
  await c.write(Buffer.concat([
    Buffer.from(`POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`),
    body,
    Buffer.from(GET('/healthz', 'X-Request-Id: after-big\r\n')),
  ]));
  const r = await c.readResponse();
  assert.equal(r.status, 404);
  const r2 = await c.readResponse();
  assert.equal(r2.status, 200);
  assert.equal(r2.headers['x-request-id'], 'after-big');
  await sleep(50);
  assert.equal(c.buffer.length, 0, `stray bytes: ${c.buffer.toString('latin1').slice(0, 200)}`);
});

test('chunked body to an unknown route: 404, body discarded, connection reusable', async (t) => {
  const c = await conn(t);
  await c.write('POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
  await sleep(20);
  await c.write('5\r\nhello\r\n');
  await sleep(20);
  // a chunk (with an extension) whose data looks like a request: must stay data
  const sneaky = 'GET /healthz HTTP/1.1\r\n\r\n';
  await c.write(`${sneaky.length.toString(16)};ext=1\r\n${sneaky}\r\n6\r\n world\r\n0\r\n\r\n`);
  const r = await c.readResponse();
  checkError(assert, r, 404, 'not_found', 'chunked POST /api/v1/nope');
  await c.write(GET('/healthz', 'X-Request-Id: after-chunked\r\n'));
  const r2 = await c.readResponse();
  assert.equal(r2.status, 200);
  assert.equal(r2.headers['x-request-id'], 'after-chunked');
  await sleep(50);
  assert.equal(c.buffer.length, 0, `stray bytes: ${c.buffer.toString('latin1').slice(0, 200)}`);
});

test('Expect: 100-continue -> interim 100 before the final response', async (t) => {
  // PUT /api/v1/spaces/{space} is a registered route that takes a JSON body,
  // so the server has no reason to answer before the body. The admin token
  // (DATA/admin.key) is sent so auth cannot answer early.
  const body = '{}';
  const tok = srv.adminToken;
  assert.ok(tok, 'admin.key read');
  const c = await conn(t);
  await c.write(`PUT /api/v1/spaces/continue-test HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`);
  const interim = await c.readResponse({ timeoutMs: 2000 });
  assert.equal(interim.status, 100, `expected 100 Continue first, got ${interim.status} ${interim.body}`);
  await sleep(100);
  assert.equal(c.buffer.length, 0, `final response sent before the body: ${c.buffer.toString('latin1')}`);
  await c.write(body);
  const fin = await c.readResponse();
  assert.equal(fin.status, 201, `final status ${fin.status} ${fin.body}`);
  assert.equal(fin.json.name, 'continue-test');
  assert.match(fin.headers['x-request-id'] || '', RID_RE);
  // still usable
  await c.write(GET('/healthz'));
  assert.equal((await c.readResponse()).status, 200);
});

test('Expect: 100-continue without a token: no 100, the 401 comes at once', async (t) => {
  const c = await conn(t);
  await c.write('PUT /api/v1/spaces/continue-noauth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n');
  const r = await c.readResponse({ timeoutMs: 2000 });
  checkError(assert, r, 401, 'unauthorized', 'PUT space with Expect, no token');
});

test('Expect: 100-continue to an unknown route: no 100, the 404 comes at once', async (t) => {
  const c = await conn(t);
  await c.write('POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n');
  const r = await c.readResponse({ timeoutMs: 2000 });
  assert.equal(r.status, 404, `got ${r.status} ${r.body}`);
});

test('half-close: request then end() still gets the full response', async () => {
  const raw = await rawRequest(srv.port, GET('/api/v1/status', `X-Request-Id: half-1\r\n${AUTH()}`), { endAfterWrite: true, timeoutMs: 3000 });
  const rs = parseResponses(raw.data);
  assert.equal(rs.length, 1, raw.text);
  assert.equal(rs[0].status, 200);
  assert.equal(rs[0].headers['x-request-id'], 'half-1');
  assert.equal(rs[0].json.name, 'snapsync');
  assert.equal(raw.closed, true, 'server closes after answering a half-closed client');
});

test('half-close after two pipelined requests: both answered', async () => {
  const raw = await rawRequest(srv.port, GET('/healthz', 'X-Request-Id: hc-1\r\n') + GET('/nope', 'X-Request-Id: hc-2\r\n'), { endAfterWrite: true, timeoutMs: 3000 });
  const rs = parseResponses(raw.data);
  assert.deepEqual(rs.map((r) => [r.status, r.headers['x-request-id']]), [[200, 'hc-1'], [404, 'hc-2']], raw.text);
  assert.equal(raw.closed, true);
});

// The client half-closes while its responses are still queued in the
// server (it has not read them yet): the server must deliver them all
// before it closes, not cancel what it had queued when it reads the EOF.
test('half-close with responses still queued (a slow reader): every response arrives whole', async (t) => {
  const n = 100;                 // ~100 x the dashboard's app.js: more than the socket buffers hold
  const c = await conn(t);
  c.sock.pause();                // read nothing for now
  await c.write(GET('/ui/app.js').repeat(n) + GET('/healthz', 'X-Request-Id: hq-last\r\n'));
  c.end();
  await sleep(300);              // the server reads the requests and the EOF, its answers queued
  c.sock.resume();
  assert.equal(await c.waitClose(20000), true, 'the server closes once everything is sent');
  const rs = parseResponses(c.buffer);
  const sizes = new Set(rs.slice(0, n).map((r) => r.bodyBuffer.length));
  assert.equal(rs.length, n + 1, `${rs.length} complete responses of ${n + 1}; ${rs.rest.length} bytes left over`);
  assert.ok(rs.slice(0, n).every((r) => r.status === 200), 'every app.js answered 200');
  assert.equal(sizes.size, 1, `every app.js body the same length: ${[...sizes]}`);
  assert.equal(rs[n].headers['x-request-id'], 'hq-last');
  assert.equal(rs.rest.length, 0, 'nothing cut off after the last response');
});

const malformed = {
  'garbage line': 'HELLO WORLD\r\n\r\n',
  'invalid method': 'FOO@BAR /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
  'unknown method token': 'FROB /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
  'space in header name': 'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n',
  'space before colon in Transfer-Encoding (smuggling)':
    'POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n',
  'space before colon in Content-Length':
    'POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc',
  'invalid HTTP version': 'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n',
  'control char in header name': 'GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Header: y\r\n\r\n',
  'Content-Length with Transfer-Encoding (smuggling)':
    'POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  'Transfer-Encoding then Content-Length (smuggling)':
    'POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n',
  'Content-Length: abc': 'POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n',
  'Content-Length: -1': 'POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n',
  'two different Content-Length headers':
    'POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
  'bad chunk size': 'POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
};

for (const [name, bytes] of Object.entries(malformed)) {
  test(`malformed request (${name}) -> 400 bad_request and close`, async () => {
    const raw = await rawRequest(srv.port, bytes, { timeoutMs: 2000 });
    const rs = parseResponses(raw.data);
    assert.equal(rs.length, 1, `expected one response to ${JSON.stringify(bytes)}, got ${JSON.stringify(raw.text)}`);
    checkError(assert, rs[0], 400, 'bad_request', JSON.stringify(bytes));
    assert.equal(raw.closed, true, `connection left open after 400 to ${JSON.stringify(bytes)}`);
  });
}

test('a 400 after a good request on the same connection: first answered, then 400 and close', async (t) => {
  const c = await conn(t);
  await c.write(GET('/healthz', 'X-Request-Id: good-1\r\n') + 'HELLO WORLD\r\n\r\n');
  const a = await c.readResponse();
  assert.equal(a.status, 200);
  assert.equal(a.headers['x-request-id'], 'good-1');
  const b = await c.readResponse();
  checkError(assert, b, 400, 'bad_request', 'second message garbage');
  assert.equal(await c.waitClose(2000), true);
  await assertHealthy(srv);
});

test('request ids on every error status', async () => {
  const raw = await rawRequest(srv.port, 'DELETE /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: e405\r\nConnection: close\r\n\r\n');
  const [r] = parseResponses(raw.data);
  assert.equal(r.status, 405);
  assert.equal(r.headers['x-request-id'], 'e405');
  assert.equal(r.headers.allow, 'GET, HEAD');
  const raw2 = await rawRequest(srv.port, 'HELLO\r\n\r\n');
  const [r2] = parseResponses(raw2.data);
  assert.match(r2.headers['x-request-id'] || '', RID_RE);
});
