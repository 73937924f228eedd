// cli.test.mjs - SPEC §2: command line, environment variables (flags win),
// SIGTERM/SIGINT shutdown, and one server per data directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  runCli, startServer, withServer, rawRequest, openConn, parseResponses, checkError, httpRequest, sleep,
  api, assertHealthy,
} from './helpers.mjs';

function tmpDir(t) {
  const d = mkdtempSync(path.join(os.tmpdir(), 'snapsync-cli-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const nonEmptyLines = (s) => s.split('\n').filter((l) => l.trim() !== '');

test('snapsync --version prints 0.1.0 and exits 0', async () => {
  const r = await runCli(['--version']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /0\.1\.0/, `stdout: ${JSON.stringify(r.stdout)} stderr: ${JSON.stringify(r.stderr)}`);
  assert.equal(nonEmptyLines(r.stdout).length, 1, `one line: ${JSON.stringify(r.stdout)}`);
});

test('snapsync --help exits 0 and describes serve', async () => {
  const r = await runCli(['--help']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /serve/);
});

test('snapsync serve --help exits 0 and lists the options with their env vars', async () => {
  const r = await runCli(['serve', '--help']);
  assert.equal(r.code, 0, r.stderr);
  for (const s of ['--max-body-bytes', '--header-timeout-ms', 'SNAPSYNC_IDLE_TIMEOUT_MS', '--body-timeout-ms',
    'SNAPSYNC_BODY_TIMEOUT_MS', '--min-body-rate', 'SNAPSYNC_MIN_BODY_RATE']) {
    assert.ok(r.stdout.includes(s), `serve --help lacks ${s}`);
  }
});

test('serve --max-body-bytes abc -> exit 2, one stderr line naming the option', async (t) => {
  const d = tmpDir(t);
  const r = await runCli(['serve', '--listen', '127.0.0.1:0', '--data', d, '--max-body-bytes', 'abc'], { timeoutMs: 5000 });
  assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
  const lines = nonEmptyLines(r.stderr);
  assert.equal(lines.length, 1, `stderr: ${JSON.stringify(r.stderr)}`);
  assert.match(lines[0], /max-body-bytes/);
});

test('serve --max-body-bytes below the 1024 minimum -> exit 2', async (t) => {
  const d = tmpDir(t);
  const r = await runCli(['serve', '--listen', '127.0.0.1:0', '--data', d, '--max-body-bytes', '100'], { timeoutMs: 5000 });
  assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
  assert.match(r.stderr, /max-body-bytes/);
});

test('SNAPSYNC_IDLE_TIMEOUT_MS=nope -> exit 2 naming the variable', async (t) => {
  const d = tmpDir(t);
  const r = await runCli(['serve', '--listen', '127.0.0.1:0', '--data', d], {
    env: { SNAPSYNC_IDLE_TIMEOUT_MS: 'nope' }, timeoutMs: 5000,
  });
  assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
  assert.match(r.stderr, /SNAPSYNC_IDLE_TIMEOUT_MS/);
  assert.equal(nonEmptyLines(r.stderr).length, 1, `stderr: ${JSON.stringify(r.stderr)}`);
});

test('serve --bogus -> exit 2', async (t) => {
  const d = tmpDir(t);
  const r = await runCli(['serve', '--listen', '127.0.0.1:0', '--data', d, '--bogus'], { timeoutMs: 5000 });
  assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
  assert.match(r.stderr, /bogus/);
});

test('serve --max-body-bytes with no value -> exit 2', async (t) => {
  const d = tmpDir(t);
  const r = await runCli(['serve', '--listen', '127.0.0.1:0', '--data', d, '--max-body-bytes'], { timeoutMs: 5000 });
  assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
});

const BIG_HEADER = `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4096)}\r\nConnection: close\r\n\r\n`;
const MID_HEADER = `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Mid: ${'a'.repeat(1500)}\r\nConnection: close\r\n\r\n`;

test('environment variable applies: SNAPSYNC_MAX_HEADER_BYTES=2048', async (t) => {
  const s = await withServer(t, { env: { SNAPSYNC_MAX_HEADER_BYTES: '2048' } });
  const big = parseResponses((await rawRequest(s.port, BIG_HEADER)).data)[0];
  assert.ok(big, 'no response to a 4 KB header');
  checkError(assert, big, 431, 'headers_too_large', 'env limit 2048');
  const mid = parseResponses((await rawRequest(s.port, MID_HEADER)).data)[0];
  assert.equal(mid?.status, 200, '1.5 KB header under a 2048 limit');
});

test('a flag wins over its environment variable', async (t) => {
  const s = await withServer(t, { env: { SNAPSYNC_MAX_HEADER_BYTES: '2048' }, args: ['--max-header-bytes', '16384'] });
  const big = parseResponses((await rawRequest(s.port, BIG_HEADER)).data)[0];
  assert.equal(big?.status, 200, `4 KB header with --max-header-bytes 16384: ${big?.status} ${big?.body}`);
});

test('SIGTERM with no connections: exit 0 in under 2 s', async () => {
  const s = await startServer();
  const t0 = Date.now();
  const r = await s.stop('SIGTERM');
  const dt = Date.now() - t0;
  assert.deepEqual(r, { code: 0, signal: null }, s.stderrText());
  assert.ok(dt < 2000, `took ${dt} ms`);
});

test('SIGINT: exit 0 too', async () => {
  const s = await startServer();
  const r = await s.stop('SIGINT');
  assert.deepEqual(r, { code: 0, signal: null }, s.stderrText());
});

test('SIGTERM with an idle keep-alive connection: the connection is closed, exit 0 within the shutdown timeout', async (t) => {
  const s = await withServer(t, { args: ['--shutdown-timeout-ms', '3000'] });
  const c = await openConn(s.port);
  t.after(() => c.destroy());
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal((await c.readResponse()).status, 200);
  const t0 = Date.now();
  const r = await s.stop('SIGTERM');
  const dt = Date.now() - t0;
  assert.deepEqual(r, { code: 0, signal: null }, s.stderrText());
  assert.ok(dt < 3000 + 1000, `took ${dt} ms with a 3000 ms shutdown timeout`);
  assert.equal(await c.waitClose(1000), true, 'idle connection closed');
});

test('SIGTERM with a half-sent request: exit 0 within the shutdown timeout', async (t) => {
  const s = await withServer(t, { args: ['--shutdown-timeout-ms', '1000'] });
  const c = await openConn(s.port);
  t.after(() => c.destroy());
  await c.write('POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc');
  await sleep(50);
  const t0 = Date.now();
  const r = await s.stop('SIGTERM');
  assert.deepEqual(r, { code: 0, signal: null }, s.stderrText());
  assert.ok(Date.now() - t0 < 1000 + 1000, `took ${Date.now() - t0} ms`);
});

test('after SIGTERM the listener is closed', async () => {
  const s = await startServer();
  const port = s.port;
  await s.stop();
  await assert.rejects(httpRequest(port, { path: '/healthz', timeoutMs: 1000 }));
});

test('logs: the listening line has address and port, all lines are JSON', async () => {
  const s = await startServer();
  await s.stop();
  const l = s.logs.find((o) => o.msg === 'listening');
  assert.equal(l.address, '127.0.0.1');
  assert.equal(l.port, s.port);
  for (const o of s.logs) {
    assert.equal(o._unparsed, undefined, `non-JSON stderr line: ${o._unparsed}`);
    assert.equal(typeof o.msg, 'string');
    assert.equal(typeof o.level, 'string');
  }
});

// The listening line names where to go: the dashboard and the API base
// (it used to name http://host:port/, which answers 404).
test('the listening line names the dashboard (ui) and the API base (api), and both answer', async (t) => {
  const s = await withServer(t);
  const l = s.logs.find((o) => o.msg === 'listening');
  const w = JSON.stringify(l);
  assert.equal(l.ui, `http://127.0.0.1:${s.port}/ui/`, w);
  assert.equal(l.api, `http://127.0.0.1:${s.port}/api/v1`, w);
  for (const [k, v] of Object.entries(l)) {
    if (typeof v === 'string' && /^https?:/.test(v)) assert.ok(k === 'ui' || k === 'api', `another URL in the line: ${k}=${v}`);
  }
  const ui = await fetch(l.ui, { signal: AbortSignal.timeout(5000) });
  assert.equal(ui.status, 200, `GET ${l.ui}`);
  assert.match(ui.headers.get('content-type') || '', /^text\/html/);
  assert.match(await ui.text(), /<html/i);
  const st = await fetch(`${l.api}/status`, { headers: { Authorization: `Bearer ${s.adminToken}` }, signal: AbortSignal.timeout(5000) });
  assert.equal(st.status, 200, `GET ${l.api}/status`);
  assert.equal((await st.json()).name, 'snapsync');
});

test('listening on a wildcard address: the ui and api URLs use this machine\'s loopback address', async (t) => {
  const s = await withServer(t, { args: ['--listen', '0.0.0.0:0'] });
  const l = s.logs.find((o) => o.msg === 'listening');
  assert.equal(l.address, '0.0.0.0', JSON.stringify(l));
  assert.equal(l.ui, `http://127.0.0.1:${s.port}/ui/`);
  assert.equal(l.api, `http://127.0.0.1:${s.port}/api/v1`);
  assert.equal((await fetch(l.ui, { signal: AbortSignal.timeout(5000) })).status, 200);
});

// One data directory, one server: a second `serve` on a directory in use
// must refuse at once (it used to start with the same instance id, serve a
// stale /sync/status and fail its writes on UNIQUE constraints).
test('a second serve on a data dir in use exits 1 with one line; the first keeps serving; keys create/revoke still work', async (t) => {
  const s = await withServer(t);
  const space = '/api/v1/spaces/one';
  assert.equal((await api(s, 'PUT', space)).status, 201);
  assert.equal((await api(s, 'PUT', `${space}/collections/c/entities/e1`, { body: { n: 1 } })).status, 201);
  const lockText = readFileSync(path.join(s.dataDir, 'serve.lock'), 'utf8');
  assert.equal(lockText.trim(), String(s.pid), 'serve.lock names the holder');

  const t0 = Date.now();
  const r = await runCli(['serve', '--listen', '127.0.0.1:0', '--data', s.dataDir], { timeoutMs: 5000 });
  const dt = Date.now() - t0;
  assert.equal(r.code, 1, `exit ${r.code}; stderr: ${r.stderr}`);
  assert.ok(dt < 3000, `took ${dt} ms to refuse`);
  const lines = nonEmptyLines(r.stderr);
  assert.equal(lines.length, 1, `one stderr line: ${JSON.stringify(r.stderr)}`);
  assert.ok(lines[0].includes(s.dataDir), `names the directory: ${lines[0]}`);
  assert.match(lines[0], /in use/);
  assert.ok(lines[0].includes(`pid ${s.pid}`), `names the running server: ${lines[0]}`);
  assert.equal(r.stdout, '');
  assert.equal(readFileSync(path.join(s.dataDir, 'serve.lock'), 'utf8'), lockText, 'the refused server left the lock alone');

  // the first one is untouched: it reads and writes as before
  await assertHealthy(s);
  assert.equal((await api(s, 'PUT', `${space}/collections/c/entities/e2`, { body: { n: 2 } })).status, 201);
  const st = await api(s, 'GET', `${space}/sync/status`);
  assert.equal(st.status, 200, st.text);
  assert.equal(st.body.server_version, 2);
  assert.equal(st.body.entity_count, 2);

  // writing CLI commands do not take the lock
  const c = await runCli(['keys', 'create', '--data', s.dataDir, '--role', 'reader', '--name', 'beside']);
  assert.equal(c.code, 0, `keys create beside a server: exit ${c.code}: ${c.stderr}`);
  const k = JSON.parse(c.stdout.trim());
  assert.equal((await api(s, 'GET', space, { token: k.token })).status, 200, 'the CLI key works on the running server');
  const rv = await runCli(['keys', 'revoke', k.id, '--data', s.dataDir]);
  assert.equal(rv.code, 0, `keys revoke beside a server: exit ${rv.code}: ${rv.stderr}`);
  assert.deepEqual(JSON.parse(rv.stdout.trim()), { id: k.id, revoked: true });
  assert.ok(nonEmptyLines((await runCli(['keys', 'list', '--data', s.dataDir])).stdout).length >= 2);
  await assertHealthy(s);
});

test('the lock dies with its server: after kill -9 the next serve on the directory starts', async (t) => {
  const d = tmpDir(t);
  const a = await startServer({ dataDir: d });
  assert.equal((await api(a, 'PUT', '/api/v1/spaces/kept')).status, 201);
  await a.kill9();
  const b = await withServer(t, { dataDir: d });
  const r = await api(b, 'GET', '/api/v1/spaces/kept', { token: a.adminToken });
  assert.equal(r.status, 200, r.text);
  assert.equal(readFileSync(path.join(d, 'serve.lock'), 'utf8').trim(), String(b.pid));
});
