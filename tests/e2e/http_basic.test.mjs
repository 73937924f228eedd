// http_basic.test.mjs - SPEC §1-§3: /healthz, /api/v1/status, request ids,
// error shapes, 404/405, name validation, access log, data dir, CORS.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import {
  startServer, withServer, getJSON, httpRequest, rawRequest, openConn, parseResponses,
  checkError, haveCommand, api, ULID_RE, RID_RE, sleep,
} from './helpers.mjs';

const bearer = (s) => ({ Authorization: `Bearer ${s.adminToken}` });

let srv;
before(async () => { srv = await startServer(); });
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

test('GET /healthz -> 200 {"status":"ok"} as JSON', async () => {
  const r = await getJSON(`${srv.base}/healthz`);
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, { status: 'ok' });
  assert.equal(r.headers.get('content-type'), 'application/json; charset=utf-8');
  assert.match(r.headers.get('x-request-id') || '', RID_RE);
  assert.equal(Number(r.headers.get('content-length')), Buffer.byteLength(r.text));
});

test('HEAD /healthz -> 200, same headers as GET incl. Content-Length, no body', async (t) => {
  const c = await openConn(srv.port);
  t.after(() => c.destroy());
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  const g = await c.readResponse();
  await c.write('HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  const h = await c.readResponse({ head: true });
  assert.equal(h.status, 200);
  assert.equal(h.headers['content-type'], g.headers['content-type']);
  assert.ok(h.headers['content-length'] !== undefined, `HEAD has Content-Length: ${JSON.stringify(h.headers)}`);
  assert.equal(h.headers['content-length'], g.headers['content-length']);
  assert.match(h.headers['x-request-id'] || '', RID_RE);
  // If HEAD had carried a body, its bytes would now sit in front of the next
  // response and break it.
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  const g2 = await c.readResponse();
  assert.equal(g2.status, 200);
  assert.deepEqual(g2.json, { status: 'ok' });
  assert.equal(c.buffer.length, 0, `unexpected extra bytes: ${c.buffer.toString('latin1')}`);
});

test('GET /api/v1/status shape (admin token)', async () => {
  assert.match(srv.adminToken || '', /^\S{32,}$/, `admin.key holds a token: ${JSON.stringify(srv.adminToken)}`);
  const r = await getJSON(`${srv.base}/api/v1/status`, { headers: bearer(srv) });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('content-type'), 'application/json; charset=utf-8');
  const b = r.body;
  assert.equal(b.name, 'snapsync');
  assert.equal(b.version, '0.1.0');
  assert.match(b.instance_id, ULID_RE);
  assert.equal(typeof b.uptime_s, 'number');
  assert.ok(b.uptime_s >= 0 && b.uptime_s < 3600, `uptime_s ${b.uptime_s}`);
  assert.ok(Number.isInteger(b.spaces) && b.spaces >= 0, `spaces ${b.spaces}`);
});

test('GET /api/v1/status without a token -> 401 unauthorized; /healthz stays public', async () => {
  const r = await getJSON(`${srv.base}/api/v1/status`);
  checkError(assert, r, 401, 'unauthorized', 'GET /api/v1/status, no token');
  assert.equal(r.body.name, undefined, 'no status data leaks without a token');
  // an empty bearer and a non-Bearer scheme are no token either
  for (const h of ['Bearer ', 'Basic YWRtaW46YWRtaW4=', srv.adminToken]) {
    const x = await api(srv, 'GET', '/api/v1/status', { token: null, headers: { Authorization: h } });
    checkError(assert, x, 401, 'unauthorized', `Authorization: ${h.slice(0, 12)}...`);
  }
  const h = await getJSON(`${srv.base}/healthz`);
  assert.equal(h.status, 200);
  // with the token (header or ?access_token= on a GET) it is 200
  const ok = await api(srv, 'GET', '/api/v1/status');
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.body.name, 'snapsync');
  const q = await api(srv, 'GET', `/api/v1/status?access_token=${encodeURIComponent(srv.adminToken)}`, { token: null });
  assert.equal(q.status, 200, q.text);
});

test('admin.key: mode 0600, one line', async () => {
  const f = path.join(srv.dataDir, 'admin.key');
  const st = statSync(f);
  assert.equal(st.mode & 0o777, 0o600, `mode ${(st.mode & 0o777).toString(8)}`);
  const text = readFileSync(f, 'utf8');
  assert.equal(text.replace(/\n$/, '').split('\n').length, 1, `one line: ${JSON.stringify(text)}`);
  // the log names the file but never contains the key
  assert.ok(!srv.stderrText().includes(srv.adminToken), 'the admin token is in the logs');
});

test('instance_id survives a restart on the same data dir; db is SQLite in WAL mode', async (t) => {
  const a = await startServer({ keepData: true });
  let b;
  t.after(async () => {
    await a.stop().catch(() => {});
    if (b) await b.stop().catch(() => {});
    rmSync(a.dataDir, { recursive: true, force: true });   // kept for the restart
  });
  const dbPath = path.join(a.dataDir, 'snapsync.db');
  assert.ok(existsSync(dbPath), `${dbPath} exists after first start`);
  const s1 = await getJSON(`${a.base}/api/v1/status`, { headers: bearer(a) });
  assert.equal(s1.status, 200, s1.text);
  assert.match(s1.body.instance_id, ULID_RE);
  // a different data dir is a different instance
  const other = await getJSON(`${srv.base}/api/v1/status`, { headers: bearer(srv) });
  assert.notEqual(other.body.instance_id, s1.body.instance_id, 'two data dirs share an instance_id');

  const ex = await a.stop();
  assert.deepEqual(ex, { code: 0, signal: null }, a.stderrText());
  if (haveCommand('sqlite3')) {
    const q = spawnSync('sqlite3', [dbPath, 'PRAGMA journal_mode'], { encoding: 'utf8' });
    assert.equal(q.status, 0, q.stderr);
    assert.equal(q.stdout.trim(), 'wal');
  } else {
    t.diagnostic('sqlite3 CLI missing: WAL mode not checked');
  }

  b = await startServer({ dataDir: a.dataDir, keepData: false });
  assert.equal(b.adminToken, a.adminToken, 'admin.key is not rewritten on a restart');
  const s2 = await getJSON(`${b.base}/api/v1/status`, { headers: bearer(b) });
  assert.equal(s2.status, 200, s2.text);
  assert.equal(s2.body.instance_id, s1.body.instance_id);
});

test('X-Request-Id: sane ids are echoed, others replaced, fresh ones differ', async () => {
  const echo = await getJSON(`${srv.base}/healthz`, { headers: { 'X-Request-Id': 'abc-123' } });
  assert.equal(echo.headers.get('x-request-id'), 'abc-123');

  const max = 'A1b2.c3:d4_e5-'.padEnd(64, 'z');
  const r64 = await getJSON(`${srv.base}/healthz`, { headers: { 'X-Request-Id': max } });
  assert.equal(r64.headers.get('x-request-id'), max, '64 sane characters are echoed');

  const long = 'x'.repeat(100);
  const rl = await getJSON(`${srv.base}/healthz`, { headers: { 'X-Request-Id': long } });
  assert.notEqual(rl.headers.get('x-request-id'), long);
  assert.match(rl.headers.get('x-request-id') || '', RID_RE);

  const sixtyFive = 'y'.repeat(65);
  const r65 = await getJSON(`${srv.base}/healthz`, { headers: { 'X-Request-Id': sixtyFive } });
  assert.notEqual(r65.headers.get('x-request-id'), sixtyFive);
  assert.match(r65.headers.get('x-request-id') || '', RID_RE);

  // spaces and quotes: sent raw (fetch would refuse some of these)
  for (const bad of ['abc 123', 'a"b', 'a/b', '<script>']) {
    const raw = await rawRequest(srv.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: ${bad}\r\nConnection: close\r\n\r\n`);
    const [resp] = parseResponses(raw.data);
    assert.ok(resp, `no response for id ${JSON.stringify(bad)}: ${raw.text}`);
    assert.equal(resp.status, 200);
    assert.notEqual(resp.headers['x-request-id'], bad);
    assert.match(resp.headers['x-request-id'] || '', RID_RE, `replacement for ${JSON.stringify(bad)}`);
  }

  const one = await getJSON(`${srv.base}/healthz`);
  const two = await getJSON(`${srv.base}/healthz`);
  assert.notEqual(one.headers.get('x-request-id'), two.headers.get('x-request-id'));

  // echoed on errors too
  const nf = await getJSON(`${srv.base}/nope`, { headers: { 'X-Request-Id': 'err-id-1' } });
  assert.equal(nf.status, 404);
  assert.equal(nf.headers.get('x-request-id'), 'err-id-1');
});

test('unknown route -> 404 not_found as JSON', async () => {
  for (const p of ['/nope', '/api/v1/nope', '/api/v2/status', '/healthzz', '/api/v1/status/x']) {
    const r = await getJSON(`${srv.base}${p}`);
    checkError(assert, r, 404, 'not_found', `GET ${p}`);
  }
});

test('known path, wrong method -> 405 method_not_allowed with Allow', async () => {
  const r = await getJSON(`${srv.base}/healthz`, { method: 'DELETE' });
  checkError(assert, r, 405, 'method_not_allowed', 'DELETE /healthz');
  assert.equal(r.headers.get('allow'), 'GET, HEAD');

  const p = await getJSON(`${srv.base}/api/v1/status`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
  checkError(assert, p, 405, 'method_not_allowed', 'POST /api/v1/status');
  assert.match(p.headers.get('allow') || '', /\bGET\b/);
});

// Relies on the /api/v1/spaces/{space} routes being registered (they are;
// if they were not, these would answer 404 and fail).
test('invalid space name in the path -> 400 invalid_name', async () => {
  for (const p of ['/api/v1/spaces/BAD!NAME', '/api/v1/spaces/..%2F..%2Fetc', '/api/v1/spaces/..']) {
    const raw = await rawRequest(srv.port, `GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    const [resp] = parseResponses(raw.data);
    assert.ok(resp, `no response to GET ${p}: ${raw.text}`);
    checkError(assert, resp, 400, 'invalid_name', `GET ${p}`);
  }
});

test('access log: one JSON line per request with the documented members', async () => {
  const rids = ['log-a-1', 'log-a-2', 'log-a-3'];
  await getJSON(`${srv.base}/healthz`, { headers: { 'X-Request-Id': rids[0] } });
  await getJSON(`${srv.base}/api/v1/status?x=1`, { headers: { 'X-Request-Id': rids[1], ...bearer(srv) } });
  await getJSON(`${srv.base}/nope`, { headers: { 'X-Request-Id': rids[2] } });
  const lines = [];
  for (const rid of rids) lines.push(await srv.waitForLog((o) => o.msg === 'access' && o.rid === rid));
  await sleep(100);
  for (const rid of rids) {
    const n = srv.logs.filter((o) => o.msg === 'access' && o.rid === rid).length;
    assert.equal(n, 1, `access lines for ${rid}`);
  }
  const [h, s, nf] = lines;
  assert.equal(h.method, 'GET');
  assert.equal(h.path, '/healthz');
  assert.equal(h.status, 200);
  assert.match(s.path, /^\/api\/v1\/status/);
  assert.equal(s.status, 200);
  assert.equal(nf.status, 404);
  for (const l of lines) {
    assert.ok(Number.isInteger(l.bytes) && l.bytes > 0, `bytes ${JSON.stringify(l)}`);
    assert.equal(typeof l.dur_ms, 'number', `dur_ms ${JSON.stringify(l)}`);
    assert.ok(l.dur_ms >= 0 && l.dur_ms < 5000, `dur_ms ${JSON.stringify(l)}`);
    assert.match(String(l.client), /127\.0\.0\.1/, `client ${JSON.stringify(l)}`);
  }
  const unparsed = srv.logs.filter((o) => o._unparsed !== undefined);
  assert.deepEqual(unparsed, [], 'every stderr line is JSON');
});

test('access log never contains a token', async () => {
  await getJSON(`${srv.base}/api/v1/status?access_token=SECRET123&a=b`, { headers: { 'X-Request-Id': 'tok-1' } });
  await getJSON(`${srv.base}/api/v1/status`, {
    headers: { 'X-Request-Id': 'tok-2', Authorization: 'Bearer SECRET456' },
  });
  await getJSON(`${srv.base}/nope?access_token=SECRET789`, { headers: { 'X-Request-Id': 'tok-3' } });
  for (const rid of ['tok-1', 'tok-2', 'tok-3']) {
    await srv.waitForLog((o) => o.msg === 'access' && o.rid === rid);
  }
  const text = srv.stderrText();
  for (const secret of ['SECRET123', 'SECRET456', 'SECRET789']) {
    assert.ok(!text.includes(secret), `${secret} leaked into the logs:\n${text.split('\n').filter((l) => l.includes(secret)).join('\n')}`);
  }
});

test('no CORS headers when --cors-origins is not set', async () => {
  const r = await httpRequest(srv.port, { path: '/healthz', headers: { Origin: 'http://app.example' } });
  assert.equal(r.status, 200);
  assert.equal(r.headers['access-control-allow-origin'], undefined);
});

test('CORS with --cors-origins http://app.example', async (t) => {
  const c = await withServer(t, { args: ['--cors-origins', 'http://app.example'] });

  const pre = await httpRequest(c.port, {
    method: 'OPTIONS',
    path: '/api/v1/status',
    headers: {
      Origin: 'http://app.example',
      'Access-Control-Request-Method': 'GET',
      'Access-Control-Request-Headers': 'authorization',
    },
  });
  assert.equal(pre.status, 204, `preflight: ${JSON.stringify(pre.headers)} ${pre.body}`);
  assert.equal(pre.headers['access-control-allow-origin'], 'http://app.example');
  assert.match(pre.headers['access-control-allow-methods'] || '', /\bGET\b/);
  assert.match(pre.headers['access-control-allow-headers'] || '', /\bauthorization\b/i);
  assert.match(pre.headers.vary || '', /\borigin\b/i);
  assert.match(pre.headers['x-request-id'] || '', RID_RE);
  assert.equal(pre.body, '');

  const simple = await httpRequest(c.port, { path: '/healthz', headers: { Origin: 'http://app.example' } });
  assert.equal(simple.status, 200);
  assert.equal(simple.headers['access-control-allow-origin'], 'http://app.example');
  assert.match(simple.headers.vary || '', /\borigin\b/i);

  const evil = await httpRequest(c.port, { path: '/healthz', headers: { Origin: 'http://evil.example' } });
  assert.equal(evil.status, 200);
  assert.equal(evil.headers['access-control-allow-origin'], undefined);

  const evilPre = await httpRequest(c.port, {
    method: 'OPTIONS',
    path: '/api/v1/status',
    headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'GET' },
  });
  assert.equal(evilPre.headers['access-control-allow-origin'], undefined, `evil preflight: ${evilPre.status} ${JSON.stringify(evilPre.headers)}`);
  assert.notEqual(evilPre.status, 500);
});
