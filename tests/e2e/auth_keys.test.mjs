// auth_keys.test.mjs - SPEC §4: bearer tokens, the keys API (create, list,
// revoke), space-restricted keys, ?access_token=, the keys CLI (offline and
// while a server runs) and the failed-authentication rate limit.
//
// Every request comes from 127.0.0.1, and unknown or revoked tokens count
// against that address's failed-auth budget (20, then 20/minute). The
// shared server of this file therefore sees only a handful of them; the
// rate-limit test runs on its own server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startServer, withServer, api, apiOk, putSpace, createKey, runCli, checkError, ULID_RE, sleep,
} from './helpers.mjs';

const TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
// >= 32 random bytes: at least 43 base64url characters after the prefix
const TOKEN_RE = /^sst_[A-Za-z0-9_-]{43,}$/;

let srv;
before(async () => {
  srv = await startServer();
  for (const s of ['ka', 'kb', 'kc']) await putSpace(srv, s);
});
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

function checkKeyShape(k, ctx) {
  const where = `${ctx}: ${JSON.stringify(k)}`;
  assert.match(k.id, ULID_RE, `id ${where}`);
  assert.equal(typeof k.name, 'string', `name ${where}`);
  assert.ok(['reader', 'writer', 'operator', 'admin'].includes(k.role), `role ${where}`);
  assert.ok(Array.isArray(k.spaces) && k.spaces.length > 0, `spaces ${where}`);
  assert.match(k.created_at, TIME_RE, `created_at ${where}`);
  assert.ok(k.revoked_at === null || TIME_RE.test(k.revoked_at), `revoked_at ${where}`);
}

test('POST /api/v1/keys -> 201 with the key and its token (shown once)', async () => {
  const r = await api(srv, 'POST', '/api/v1/keys', { body: { role: 'writer', spaces: ['ka', 'kb'], name: 'the writer' } });
  assert.equal(r.status, 201, r.text);
  assert.match(r.headers['content-type'] || '', /^application\/json/);
  const k = r.body;
  checkKeyShape(k, 'created key');
  assert.deepEqual(Object.keys(k).sort(), ['created_at', 'id', 'name', 'revoked_at', 'role', 'spaces', 'token']);
  assert.equal(k.name, 'the writer');
  assert.equal(k.role, 'writer');
  assert.deepEqual([...k.spaces].sort(), ['ka', 'kb']);
  assert.equal(k.revoked_at, null);
  assert.match(k.token, TOKEN_RE);
  assert.ok(Math.abs(Date.parse(k.created_at) - Date.now()) < 60000, `created_at ${k.created_at}`);

  const all = await createKey(srv, 'reader', ['*'], 'all-reader');
  assert.deepEqual(all.spaces, ['*']);
  assert.notEqual(all.token, k.token);
  assert.notEqual(all.id, k.id);
  const adm = await createKey(srv, 'admin', ['*'], 'second admin');
  assert.equal(adm.role, 'admin');
  // the new tokens work at once
  for (const tok of [k.token, all.token, adm.token]) {
    const s = await api(srv, 'GET', '/api/v1/status', { token: tok });
    assert.equal(s.status, 200, s.text);
  }
});

test('tokens are random: 20 keys, 20 distinct tokens and ids', async () => {
  const ks = await Promise.all(Array.from({ length: 20 }, (_, i) => createKey(srv, 'reader', ['ka'], `r${i}`)));
  assert.equal(new Set(ks.map((k) => k.token)).size, 20);
  assert.equal(new Set(ks.map((k) => k.id)).size, 20);
  for (const k of ks) assert.match(k.token, TOKEN_RE);
});

test('POST /api/v1/keys validation: invalid_role, invalid_name, invalid_spaces', async () => {
  const cases = [
    [{ role: 'superuser', spaces: ['*'] }, 'invalid_role'],
    [{ role: 'Admin', spaces: ['*'] }, 'invalid_role'],
    [{ spaces: ['*'], name: 'no role' }, 'invalid_role'],
    [{ role: 7, spaces: ['*'] }, 'invalid_role'],
    [{ role: 'reader', spaces: ['BAD!'] }, 'invalid_name'],
    [{ role: 'reader', spaces: ['ka', '../etc'] }, 'invalid_name'],
    [{ role: 'writer', spaces: ['-x'] }, 'invalid_name'],
    [{ role: 'admin', spaces: ['ka'] }, 'invalid_spaces'],
    [{ role: 'admin', spaces: ['ka', 'kb'] }, 'invalid_spaces'],
  ];
  const before = (await apiOk(srv, 'GET', '/api/v1/keys?limit=1000')).keys.length;
  for (const [body, code] of cases) {
    const r = await api(srv, 'POST', '/api/v1/keys', { body });
    checkError(assert, r, 400, code, `POST /api/v1/keys ${JSON.stringify(body)}`);
    assert.equal(r.body.token, undefined);
  }
  const bad = await api(srv, 'POST', '/api/v1/keys', { body: '{"role":' });
  checkError(assert, bad, 400, 'invalid_json', 'truncated JSON');
  const after = (await apiOk(srv, 'GET', '/api/v1/keys?limit=1000')).keys.length;
  assert.equal(after, before, 'a rejected request created a key');
});

test('GET /api/v1/keys: every key, never a token or a hash; paging', async () => {
  const k = await createKey(srv, 'operator', ['kc'], 'listed');
  const r = await api(srv, 'GET', '/api/v1/keys?limit=1000');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(Object.keys(r.body).sort(), ['keys', 'next_cursor']);
  assert.equal(r.body.next_cursor, null);
  const keys = r.body.keys;
  for (const x of keys) {
    checkKeyShape(x, 'listed key');
    assert.equal(x.token, undefined, `token listed: ${JSON.stringify(x)}`);
    for (const m of Object.keys(x)) assert.doesNotMatch(m, /hash|secret|token/i, `member ${m}`);
  }
  const mine = keys.find((x) => x.id === k.id);
  assert.ok(mine, 'the new key is listed');
  assert.deepEqual({ ...mine }, { id: k.id, name: 'listed', role: 'operator', spaces: ['kc'], created_at: k.created_at, revoked_at: null });
  assert.ok(!r.text.includes(k.token), 'the token appears in the list');
  assert.ok(!r.text.includes(srv.adminToken), 'the admin token appears in the list');
  assert.ok(keys.some((x) => x.role === 'admin' && x.spaces[0] === '*'), 'the bootstrap admin key is listed');
  assert.equal(new Set(keys.map((x) => x.id)).size, keys.length, 'ids unique');

  // limit=2 pages walk the same list
  const paged = [];
  let cursor = null;
  for (let i = 0; i < 1000; i++) {
    const q = `/api/v1/keys?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const p = await apiOk(srv, 'GET', q);
    assert.ok(p.keys.length <= 2);
    paged.push(...p.keys.map((x) => x.id));
    cursor = p.next_cursor;
    if (cursor === null) break;
    assert.equal(typeof cursor, 'string');
  }
  assert.deepEqual(paged, keys.map((x) => x.id));
  checkError(assert, await api(srv, 'GET', '/api/v1/keys?limit=0'), 400, 'invalid_parameter', 'limit=0');
  checkError(assert, await api(srv, 'GET', '/api/v1/keys?limit=1001'), 400, 'invalid_parameter', 'limit=1001');
});

test('tokens are stored only as hashes: no token in the database files', async () => {
  const k = await createKey(srv, 'writer', ['ka'], 'hashed');
  const files = readdirSync(srv.dataDir).filter((f) => f.startsWith('snapsync.db'));
  assert.ok(files.length > 0, `no database files in ${srv.dataDir}`);
  for (const f of files) {
    const bytes = readFileSync(path.join(srv.dataDir, f));
    for (const tok of [k.token, srv.adminToken]) {
      assert.equal(bytes.indexOf(Buffer.from(tok)), -1, `${f} contains a token in clear`);
      assert.equal(bytes.indexOf(Buffer.from(tok.replace(/^sst_/, ''))), -1, `${f} contains a token body in clear`);
    }
  }
});

test('DELETE /api/v1/keys/{id}: revoked, then the token is 401; 404 for unknown or malformed ids', async () => {
  const k = await createKey(srv, 'writer', ['ka'], 'to revoke');
  assert.equal((await api(srv, 'GET', '/api/v1/spaces/ka', { token: k.token })).status, 200);
  const r = await api(srv, 'DELETE', `/api/v1/keys/${k.id}`);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body, { id: k.id, revoked: true });
  const after = await api(srv, 'GET', '/api/v1/spaces/ka', { token: k.token });
  checkError(assert, after, 401, 'unauthorized', 'revoked token');
  const listed = (await apiOk(srv, 'GET', '/api/v1/keys?limit=1000')).keys.find((x) => x.id === k.id);
  assert.ok(listed, 'a revoked key stays listed');
  assert.match(listed.revoked_at || '', TIME_RE, `revoked_at ${JSON.stringify(listed)}`);

  const unknown = await api(srv, 'DELETE', '/api/v1/keys/01ARZ3NDEKTSV4RRFFQ69G5FAV');
  checkError(assert, unknown, 404, 'not_found', 'unknown key id');
  for (const bad of ['nope', '01ARZ3NDEKTSV4RRFFQ69G5FA', '01ARZ3NDEKTSV4RRFFQ69G5FAVX', '..', '%2e%2e']) {
    const m = await api(srv, 'DELETE', `/api/v1/keys/${bad}`);
    assert.equal(m.status, 404, `DELETE /api/v1/keys/${bad} -> ${m.status} ${m.text}`);
    assert.equal(typeof m.body?.error, 'string', m.text);
  }
  // the other keys are untouched
  assert.equal((await api(srv, 'GET', '/api/v1/status')).status, 200);
});

test('401 for no token, a non-Bearer scheme and an unknown token', async () => {
  const none = await api(srv, 'GET', '/api/v1/spaces', { token: null });
  checkError(assert, none, 401, 'unauthorized', 'no token');
  const basic = await api(srv, 'GET', '/api/v1/spaces', { token: null, headers: { Authorization: 'Basic YTpi' } });
  checkError(assert, basic, 401, 'unauthorized', 'Basic');
  const unknown = await api(srv, 'GET', '/api/v1/spaces', { token: `sst_${'A'.repeat(43)}` });
  checkError(assert, unknown, 401, 'unauthorized', 'unknown token');
  // writes without a token are 401 too (auth comes before the body is judged)
  const w = await api(srv, 'PUT', '/api/v1/spaces/ka/collections/c/entities/e1', { token: null, body: { a: 1 } });
  checkError(assert, w, 401, 'unauthorized', 'PUT without a token');
  // `Bearer` is case-insensitive (RFC 7235)
  const lower = await api(srv, 'GET', '/api/v1/status', { token: null, headers: { Authorization: `bearer ${srv.adminToken}` } });
  assert.equal(lower.status, 200, lower.text);
});

test('?access_token= works for GET and HEAD only', async () => {
  const k = await createKey(srv, 'writer', ['ka'], 'query-token');
  const q = `access_token=${encodeURIComponent(k.token)}`;
  const g = await api(srv, 'GET', `/api/v1/spaces/ka?${q}`, { token: null });
  assert.equal(g.status, 200, g.text);
  assert.equal(g.body.name, 'ka');
  const h = await api(srv, 'HEAD', `/api/v1/spaces/ka?${q}`, { token: null });
  assert.equal(h.status, 200);
  const p = await api(srv, 'PUT', `/api/v1/spaces/ka/collections/c/entities/qt?${q}`, { token: null, body: { a: 1 } });
  checkError(assert, p, 401, 'unauthorized', 'PUT with ?access_token=');
  const d = await api(srv, 'DELETE', `/api/v1/spaces/ka/collections/c/entities/qt?${q}`, { token: null });
  checkError(assert, d, 401, 'unauthorized', 'DELETE with ?access_token=');
  const nothing = await api(srv, 'GET', '/api/v1/spaces/ka/collections/c/entities/qt', { token: k.token });
  assert.equal(nothing.status, 404, 'the PUT with a query token must not have written');
});

test('a key limited to spaces: 403 for other spaces whether or not they exist; /spaces lists only its own', async () => {
  const k = await createKey(srv, 'writer', ['ka', 'ghost-space'], 'limited');
  const list = await api(srv, 'GET', '/api/v1/spaces', { token: k.token });
  assert.equal(list.status, 200, list.text);
  assert.deepEqual(list.body.spaces.map((s) => s.name), ['ka'], 'only its existing spaces are listed');
  assert.equal(list.body.next_cursor, null);

  assert.equal((await api(srv, 'GET', '/api/v1/spaces/ka', { token: k.token })).status, 200);
  // a listed space that does not exist: the key may learn that
  checkError(assert, await api(srv, 'GET', '/api/v1/spaces/ghost-space', { token: k.token }), 404, 'space_not_found', 'own missing space');
  const other = await api(srv, 'GET', '/api/v1/spaces/kb', { token: k.token });
  const missing = await api(srv, 'GET', '/api/v1/spaces/zz-not-there', { token: k.token });
  checkError(assert, other, 403, 'forbidden', 'other existing space');
  checkError(assert, missing, 403, 'forbidden', 'other missing space');
  assert.equal(other.body.error, missing.body.error);
  assert.equal(other.body.message, missing.body.message, 'the answers must not tell the two apart');
  for (const p of ['/collections', '/changes?since=0', '/sync/status', '/conflicts', '/collections/c/entities']) {
    checkError(assert, await api(srv, 'GET', `/api/v1/spaces/kb${p}`, { token: k.token }), 403, 'forbidden', `GET kb${p}`);
    checkError(assert, await api(srv, 'GET', `/api/v1/spaces/nope-nope${p}`, { token: k.token }), 403, 'forbidden', `GET nope-nope${p}`);
  }
  const w = await api(srv, 'PUT', '/api/v1/spaces/kb/collections/c/entities/x', { token: k.token, body: { a: 1 } });
  checkError(assert, w, 403, 'forbidden', 'PUT in another space');
  assert.equal((await api(srv, 'GET', '/api/v1/spaces/kb/collections/c/entities/x')).status, 404, 'nothing written');

  // a ["*"] non-admin key sees every space
  const star = await createKey(srv, 'reader', ['*'], 'star');
  const sl = await apiOk(srv, 'GET', '/api/v1/spaces', { token: star.token });
  for (const s of ['ka', 'kb', 'kc']) assert.ok(sl.spaces.some((x) => x.name === s), `${s} listed for ["*"]`);
  assert.equal((await api(srv, 'GET', '/api/v1/spaces/kc', { token: star.token })).status, 200);
  checkError(assert, await api(srv, 'GET', '/api/v1/spaces/zz-not-there', { token: star.token }), 404, 'space_not_found', '["*"] reader, missing space');
});

// ---------------------------------------------------------------------------
// CLI

const jsonLines = (s) => s.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

test('CLI offline: keys create / list / revoke on a data dir; bad role -> exit 2', async (t) => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'snapsync-keys-'));
  let s = null;
  t.after(async () => {
    if (s) await s.stop().catch(() => {});
    rmSync(d, { recursive: true, force: true });
  });
  const c = await runCli(['keys', 'create', '--data', d, '--role', 'writer', '--space', 'a', '--space', 'b', '--name', 'cli-writer']);
  assert.equal(c.code, 0, `exit ${c.code}: ${c.stderr}`);
  const lines = c.stdout.split('\n').filter((l) => l.trim());
  assert.equal(lines.length, 1, `one line: ${JSON.stringify(c.stdout)}`);
  const k = JSON.parse(lines[0]);
  assert.match(k.token, TOKEN_RE);
  assert.match(k.id, ULID_RE);
  assert.equal(k.role, 'writer');
  assert.equal(k.name, 'cli-writer');
  assert.deepEqual([...k.spaces].sort(), ['a', 'b']);

  const r2 = await runCli(['keys', 'create', '--data', d, '--role', 'reader']);
  assert.equal(r2.code, 0, r2.stderr);
  const k2 = JSON.parse(r2.stdout.trim());
  assert.deepEqual(k2.spaces, ['*'], 'no --space means all spaces');

  const l = await runCli(['keys', 'list', '--data', d]);
  assert.equal(l.code, 0, l.stderr);
  const listed = jsonLines(l.stdout);
  for (const id of [k.id, k2.id]) assert.ok(listed.some((x) => x.id === id), `${id} listed: ${l.stdout}`);
  assert.ok(!l.stdout.includes(k.token) && !l.stdout.includes(k2.token), 'keys list prints a token');
  for (const x of listed) assert.equal(x.token, undefined);

  const rv = await runCli(['keys', 'revoke', k.id, '--data', d]);
  assert.equal(rv.code, 0, rv.stderr);
  assert.deepEqual(JSON.parse(rv.stdout.trim()), { id: k.id, revoked: true });
  const l2 = jsonLines((await runCli(['keys', 'list', '--data', d])).stdout);
  assert.match(l2.find((x) => x.id === k.id)?.revoked_at || '', TIME_RE, 'revoked_at set after revoke');
  assert.equal(l2.find((x) => x.id === k2.id)?.revoked_at, null);

  const bad = await runCli(['keys', 'create', '--data', d, '--role', 'root']);
  assert.equal(bad.code, 2, `exit ${bad.code}: ${bad.stdout} ${bad.stderr}`);
  assert.equal(bad.stdout.trim(), '', 'no key printed for a bad role');
  const badSpace = await runCli(['keys', 'create', '--data', d, '--role', 'reader', '--space', 'BAD!']);
  assert.equal(badSpace.code, 2, `bad --space: exit ${badSpace.code}: ${badSpace.stderr}`);
  const after = jsonLines((await runCli(['keys', 'list', '--data', d])).stdout);
  assert.equal(after.length, listed.length, 'failed creates added a key');

  // the keys made offline work once a server runs on that dir
  s = await startServer({ dataDir: d });
  const ok = await api(s, 'GET', '/api/v1/status', { token: k2.token });
  assert.equal(ok.status, 200, ok.text);
  checkError(assert, await api(s, 'GET', '/api/v1/status', { token: k.token }), 401, 'unauthorized', 'key revoked offline');
  assert.deepEqual(await s.stop(), { code: 0, signal: null }, s.stderrText());
});

test('CLI while the server runs: a new key works without a restart', async (t) => {
  const s = await withServer(t);
  await putSpace(s, 'live');
  const c = await runCli(['keys', 'create', '--data', s.dataDir, '--role', 'writer', '--space', 'live', '--name', 'hot']);
  assert.equal(c.code, 0, `exit ${c.code}: ${c.stderr}`);
  const k = JSON.parse(c.stdout.trim());
  const r = await api(s, 'PUT', '/api/v1/spaces/live/collections/c/entities/e1', { token: k.token, body: { hot: true } });
  assert.equal(r.status, 201, r.text);
  // its space list applies
  checkError(assert, await api(s, 'GET', '/api/v1/spaces/other', { token: k.token }), 403, 'forbidden', 'CLI key, other space');
  // and it is in the API's list
  const listed = (await apiOk(s, 'GET', '/api/v1/keys?limit=1000')).keys;
  assert.ok(listed.some((x) => x.id === k.id && x.name === 'hot'), 'CLI key listed by the API');
  // a second one, more than a second later (a reload throttle must not hide it)
  await sleep(1100);
  const c2 = await runCli(['keys', 'create', '--data', s.dataDir, '--role', 'reader', '--name', 'hot2']);
  assert.equal(c2.code, 0, c2.stderr);
  const k2 = JSON.parse(c2.stdout.trim());
  assert.equal((await api(s, 'GET', '/api/v1/spaces/live', { token: k2.token })).status, 200);
});

// `keys revoke` is the offline remedy for a leaked key: it must not wait for
// a restart. The server caches keys and only reloads on an unknown token, so
// allow it a few seconds to notice.
test('CLI while the server runs: a key revoked with `keys revoke` stops working', async (t) => {
  const s = await withServer(t);
  const k = await createKey(s, 'reader', ['*'], 'leaked');
  assert.equal((await api(s, 'GET', '/api/v1/status', { token: k.token })).status, 200);
  const rv = await runCli(['keys', 'revoke', k.id, '--data', s.dataDir]);
  assert.equal(rv.code, 0, rv.stderr);
  assert.deepEqual(JSON.parse(rv.stdout.trim()), { id: k.id, revoked: true });
  let last = null;
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    last = await api(s, 'GET', '/api/v1/status', { token: k.token });
    if (last.status === 401) break;
    await sleep(250);
  }
  checkError(assert, last, 401, 'unauthorized', 'key revoked by the CLI while the server runs, 5 s later');
});

// ---------------------------------------------------------------------------
// failed-auth rate limit (own server: it blocks the whole address)

test('failed auth rate limit: 20 failures, then 429 rate_limited with Retry-After, even for a valid token, until it refills', async (t) => {
  const s = await withServer(t);
  const k = await createKey(s, 'reader', ['*'], 'soon revoked');
  await apiOk(s, 'DELETE', `/api/v1/keys/${k.id}`);
  // missing tokens are not failures: 30 of them change nothing
  for (let i = 0; i < 30; i++) {
    const r = await api(s, 'GET', '/api/v1/status', { token: null });
    assert.equal(r.status, 401, `missing token ${i}: ${r.status} ${r.text}`);
  }
  for (let i = 0; i < 20; i++) {
    const tok = i % 4 === 0 ? k.token : `sst_bogus${i}${'x'.repeat(40)}`;
    const r = await api(s, 'GET', '/api/v1/status', { token: tok });
    checkError(assert, r, 401, 'unauthorized', `failure ${i + 1}/20`);
  }
  const limited = await api(s, 'GET', '/api/v1/status', { token: 'sst_bogus-21' });
  checkError(assert, limited, 429, 'rate_limited', '21st failure');
  const ra = Number(limited.headers['retry-after']);
  assert.ok(Number.isInteger(ra) && ra >= 1 && ra <= 60, `Retry-After ${limited.headers['retry-after']}`);

  const valid = await api(s, 'GET', '/api/v1/status');
  checkError(assert, valid, 429, 'rate_limited', 'valid admin token from a blocked address');
  assert.ok(Number(valid.headers['retry-after']) >= 1, `Retry-After ${valid.headers['retry-after']}`);
  // public routes are not blocked
  assert.equal((await api(s, 'GET', '/healthz', { token: null })).status, 200);

  // the limit is per client address: another loopback address is not blocked
  const elsewhere = await api(s, 'GET', '/api/v1/status', { localAddress: '127.0.0.2' }).catch((e) => e);
  if (elsewhere instanceof Error) {
    t.diagnostic(`127.0.0.2 not usable here (${elsewhere.message}): per-address check skipped`);
  } else {
    assert.equal(elsewhere.status, 200, `valid token from 127.0.0.2 while 127.0.0.1 is blocked: ${elsewhere.status} ${elsewhere.text}`);
  }

  // after Retry-After seconds one more attempt is allowed (20/minute refill)
  await sleep(ra * 1000 + 200);
  const again = await api(s, 'GET', '/api/v1/status');
  assert.equal(again.status, 200, `after ${ra} s: ${again.status} ${again.text}`);
});

test('--trusted-proxies: X-Forwarded-For names the client (rate limits, audit, access log) only when the peer is a trusted proxy', async (t) => {
  const bogus = (i) => `sst_bogus${i}${'x'.repeat(40)}`;
  const fail20 = async (s, xff, what) => {
    for (let i = 0; i < 20; i++) {
      const r = await api(s, 'GET', '/api/v1/status', { token: bogus(i), headers: { 'X-Forwarded-For': xff } });
      checkError(assert, r, 401, 'unauthorized', `${what} failure ${i + 1}`);
    }
    const r = await api(s, 'GET', '/api/v1/status', { token: bogus(99), headers: { 'X-Forwarded-For': xff } });
    checkError(assert, r, 429, 'rate_limited', `${what}: 21st failure`);
  };

  // trusted: 127.0.0.0/8 (the loopback "proxy" these requests come from)
  const s = await withServer(t, { args: ['--trusted-proxies', '10.0.0.0/8, 127.0.0.0/8'] });
  await fail20(s, '203.0.113.5', 'client 203.0.113.5');
  // another client behind the same proxy is not blocked
  const other = await api(s, 'GET', '/api/v1/status', { headers: { 'X-Forwarded-For': '203.0.113.6' } });
  assert.equal(other.status, 200, `another forwarded client: ${other.text}`);
  // the client cannot escape by prepending: the rightmost untrusted entry counts
  const spoof = await api(s, 'GET', '/api/v1/status', { headers: { 'X-Forwarded-For': '198.51.100.1, 203.0.113.5' } });
  checkError(assert, spoof, 429, 'rate_limited', 'prepended address ignored');
  // trusted hops (10.x) on the right are skipped
  const hops = await api(s, 'GET', '/api/v1/status', { headers: { 'X-Forwarded-For': '203.0.113.5, 10.1.2.3' } });
  checkError(assert, hops, 429, 'rate_limited', 'trusted hop skipped');
  // the audit entry and the access log name the forwarded client
  await apiOk(s, 'PUT', '/api/v1/spaces/via-proxy', { headers: { 'X-Forwarded-For': '203.0.113.77' } });
  const audit = await apiOk(s, 'GET', '/api/v1/audit?action=space.create&limit=1', { headers: { 'X-Forwarded-For': '203.0.113.77' } }, 200);
  assert.equal(audit.entries[0].remote_addr, '203.0.113.77', JSON.stringify(audit.entries[0]));
  const line = await s.waitForLog((l) => l.path === '/api/v1/spaces/via-proxy', 3000);
  assert.equal(line.client, '203.0.113.77', JSON.stringify(line));

  // not trusted (default): the header is ignored, every request is 127.0.0.1
  const u = await withServer(t);
  await fail20(u, '203.0.113.5', 'untrusted');
  const still = await api(u, 'GET', '/api/v1/status', { headers: { 'X-Forwarded-For': '203.0.113.6' } });
  checkError(assert, still, 429, 'rate_limited', 'X-Forwarded-For from an untrusted peer changes nothing');

  // a bad value is refused at start
  const bad = await runCli(['serve', '--trusted-proxies', 'example.com', '--data', '/nonexistent'], { timeoutMs: 5000 });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /trusted-proxies/);
});
