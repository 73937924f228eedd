// http_logs.test.mjs - the access log never holds a token (SPEC §2), wherever
// the client put it: under any query name, as a ;path parameter, in a path
// segment, percent-encoded once or twice (docs/http.md "Logs").
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, rawRequest, parseResponses, createKey, putSpace } from './helpers.mjs';

let srv;
let token;
before(async () => {
  srv = await startServer();
  await putSpace(srv, 'logs');
  token = (await createKey(srv, 'reader', ['logs'], 'log-reader')).token;
});
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

const pct = (s) => [...Buffer.from(s)].map((b) => `%${b.toString(16).padStart(2, '0').toUpperCase()}`).join('');

async function logged(target, rid) {
  const raw = await rawRequest(srv.port, `GET ${target} HTTP/1.1\r\nHost: x\r\nX-Request-Id: ${rid}\r\nConnection: close\r\n\r\n`);
  const [r] = parseResponses(raw.data);
  assert.ok(r, `${rid}: no response to ${target}: ${raw.text}`);
  const line = await srv.waitForLog((o) => o.msg === 'access' && o.rid === rid);
  return { status: r.status, path: line.path };
}

test('a token is redacted from the access log wherever it is in the target', async () => {
  const body = token.slice(4);              // the 43 characters after sst_
  const cases = [
    ['documented name', `/api/v1/status?access_token=${token}`, 200],
    ['other case', `/api/v1/status?Access_Token=${token}`, 401],
    ['encoded name', `/api/v1/status?access%5Ftoken=${token}`, 401],
    ['any name', `/api/v1/status?q=${token}&limit=5`, 401],
    ['no name', `/api/v1/status?${token}`, 401],
    ['; in the query', `/api/v1/status?a=1;b=${token}`, 401],
    ['path parameter', `/api/v1/status;access_token=${token}`, 404],
    ['path segment', `/api/v1/spaces/${token}`, 400],
    ['encoded once', `/api/v1/status?q=${pct(token)}`, 401],
    ['encoded twice', `/api/v1/status?q=${pct(token).replaceAll('%', '%25')}`, 401],
    ['prefix encoded', `/api/v1/status?q=sst%5F${body}`, 401],
    ['another service key', '/api/v1/status?k=ghp_16C7e42F292c6912E7710c838347Ae178B4a', 401],
  ];
  for (const [i, [what, target, status]] of cases.entries()) {
    const l = await logged(target, `redact-${i}`);
    assert.equal(l.status, status, `${what}: status for ${target}`);
    assert.match(l.path, /REDACTED/, `${what}: logged as ${l.path}`);
    assert.ok(!l.path.includes(body.slice(0, 12)), `${what}: token in the access line ${l.path}`);
  }
  // the documented member stays readable around the redaction
  assert.equal((await srv.waitForLog((o) => o.rid === 'redact-3')).path, '/api/v1/status?q=REDACTED&limit=5');
  const text = srv.stderrText();
  for (const piece of [token, body, body.slice(10, 30)]) {
    assert.ok(!text.includes(piece), `token piece ${piece} in the logs:\n${text.split('\n').filter((x) => x.includes(piece)).join('\n')}`);
  }
});

test('ordinary values stay readable in the access log', async () => {
  const target = '/api/v1/spaces/logs/changes?since=42&limit=100&cursor=01J9ZQ3V5K8W2X4Y6A7B8C9D0E';
  const l = await logged(target, 'plain-1');
  assert.equal(l.path, target);
});
