// http_strict.test.mjs - RFC 9112 strictness (docs/http.md "Requests"):
// llhttp's strict build plus the checks llhttp leaves to its user. Every
// refused request gets one JSON error and a close, and nothing sent after it
// on the same connection is answered (no request smuggling).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, rawRequest, openConn, parseResponses, checkError, assertHealthy, sleep,
} from './helpers.mjs';

let srv;
before(async () => { srv = await startServer({ env: { SNAPSYNC_TEST_HOOKS: '1' } }); });
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

const NEXT = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: smuggled\r\n\r\n';
const echo = (headers, body = '', version = '1.1') => `POST /_test/echo HTTP/${version}\r\n${headers}\r\n${body}`;

/** Sends bytes + a pipelined GET; expects exactly one error answer, then a close. */
async function refused(bytes, status, code, what) {
  const raw = await rawRequest(srv.port, bytes + NEXT, { timeoutMs: 3000 });
  const rs = parseResponses(raw.data);
  assert.equal(rs.length, 1, `${what}: expected one response, got ${JSON.stringify(raw.text)}`);
  const body = checkError(assert, rs[0], status, code, what);
  assert.equal((rs[0].headers.connection || '').toLowerCase(), 'close', `${what}: Connection: close`);
  assert.equal(raw.closed, true, `${what}: connection left open`);
  return body;
}

const refusedCases = [
  // llhttp's loose build takes any two bytes after chunk data as the CRLF
  ['junk instead of CRLF after chunk data',
    echo('Host: x\r\nTransfer-Encoding: chunked\r\n', '7\r\n{"a":1}XX0\r\n\r\n'), 400, 'bad_request'],
  ['tab in the request target', 'GET /healthz\tx HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'bad_request'],
  ['obs-fold in Content-Length', echo('Host: x\r\nContent-Length:\r\n 3\r\n', 'abc'), 400, 'bad_request'],
  ['obs-fold in Transfer-Encoding',
    echo('Host: x\r\nTransfer-Encoding:\r\n chunked\r\n', '3\r\nabc\r\n0\r\n\r\n'), 400, 'bad_request'],
  ['obs-fold in another header', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n', 400, 'bad_request'],
  ['obs-fold in a trailer',
    echo('Host: x\r\nTransfer-Encoding: chunked\r\n', '3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n'), 400, 'bad_request'],
  ['HTTP/1.1 without Host', 'GET /healthz HTTP/1.1\r\n\r\n', 400, 'bad_request'],
  ['two Host headers', 'GET /healthz HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n', 400, 'bad_request'],
  ['a Host that is not host[:port]', 'GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n', 400, 'bad_request'],
  ['an empty header name', 'GET /healthz HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n', 400, 'bad_request'],
  ['an HTTP/0.9 request line', 'GET /healthz\r\n\r\n', 400, 'bad_request'],
  ['HTTP/2.0 in an HTTP/1 request line', 'GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n', 505, 'http_version_not_supported'],
  ['a target that is neither a path nor http(s)', 'GET ftp://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'bad_request'],
  ['Content-Length and Transfer-Encoding',
    echo('Host: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n', '3\r\nabc\r\n0\r\n\r\n'), 400, 'bad_request'],
  ['two different Content-Lengths', echo('Host: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n', 'abcd'), 400, 'bad_request'],
  ['Transfer-Encoding in HTTP/1.0',
    echo('Transfer-Encoding: chunked\r\n', '3\r\nabc\r\n0\r\n\r\n', '1.0'), 400, 'bad_request'],
  ['a transfer coding other than chunked',
    echo('Host: x\r\nTransfer-Encoding: gzip, chunked\r\n', '3\r\nabc\r\n0\r\n\r\n'), 501, 'not_implemented'],
  ['chunk extensions past 16 KiB',
    echo('Host: x\r\nTransfer-Encoding: chunked\r\n', `3;e=${'x'.repeat(17000)}\r\nabc\r\n0\r\n\r\n`), 400, 'bad_request'],
];

for (const [what, bytes, status, code] of refusedCases) {
  test(`refused with ${status} and a close: ${what}`, async () => {
    await refused(bytes, status, code, what);
  });
}

test('obs-fold split across two reads is still refused', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n');
  await sleep(50);
  await c.write(` b\r\n\r\n${NEXT}`);
  const r = await c.readResponse();
  checkError(assert, r, 400, 'bad_request', 'split obs-fold');
  assert.match(r.json.message, /obs-fold/);
  assert.equal(await c.waitClose(2000), true);
  await sleep(50);
  assert.equal(c.buffer.length, 0, `answered after the refusal: ${c.buffer.toString('latin1')}`);
});

const acceptedCases = [
  ['HTTP/1.0 without Host', 'GET /healthz HTTP/1.0\r\n\r\n'],
  ['an empty Host (RFC 9112 §3.2)', 'GET /healthz HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n'],
  ['an IPv6 Host with a port', 'GET /healthz HTTP/1.1\r\nHost: [::1]:7420\r\nConnection: close\r\n\r\n'],
  ['absolute-form (its authority wins over Host)', 'GET http://a.example/healthz HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n'],
  ['chunked with an extension and a trailer',
    echo('Host: x\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n', '3;e=1\r\nabc\r\n0\r\nX-T: t\r\n\r\n')],
];

for (const [what, bytes] of acceptedCases) {
  test(`accepted: ${what}`, async () => {
    const raw = await rawRequest(srv.port, bytes, { timeoutMs: 3000 });
    const rs = parseResponses(raw.data);
    assert.equal(rs.length, 1, `${what}: ${JSON.stringify(raw.text)}`);
    assert.equal(rs[0].status, 200, `${what}: ${rs[0].status} ${rs[0].body}`);
  });
}

test('Upgrade is ignored: the next request on the connection is answered as HTTP', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n' + NEXT);
  assert.equal((await c.readResponse()).status, 200);
  const r = await c.readResponse();
  assert.equal(r.status, 200, `second request: ${r.status} ${r.body}`);
  assert.equal(r.headers['x-request-id'], 'smuggled');
});

test('HTTP/1.0 with Expect: 100-continue: the expectation is ignored (no 417, no 100)', async () => {
  const raw = await rawRequest(srv.port, echo('Content-Length: 3\r\nExpect: 100-continue\r\n', 'abc', '1.0'), { timeoutMs: 3000 });
  const rs = parseResponses(raw.data);
  assert.deepEqual(rs.map((r) => r.status), [200], raw.text);
  assert.equal(rs[0].json.length, 3);
});

test('server healthy after the strictness tests', async () => {
  await assertHealthy(srv);
});
