// metrics.test.mjs - GET /metrics (SPEC §3, issue 7): admin only unless
// --metrics-open, Prometheus text that promtool accepts, and values that
// follow known actions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { REPO, withServer, api, putSpace } from './helpers.mjs';

function sample(text, name, labels = {}) {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(',');
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = line.match(/^([a-z_]+)(\{([^}]*)\})? (\S+)$/);
    if (!m || m[1] !== name) continue;
    if (want && !(m[3] || '').split(',').sort().join(',').includes(want.split(',').sort().join(','))) {
      const have = (m[3] || '').split(',');
      if (!want.split(',').every((w) => have.includes(w))) continue;
    }
    return Number(m[4]);
  }
  return undefined;
}

test('/metrics needs an admin key; reader keys are refused', async (t) => {
  const srv = await withServer(t);
  assert.equal((await api(srv, 'GET', '/metrics', { token: '' })).status, 401);
  const key = await api(srv, 'POST', '/api/v1/keys', { body: { role: 'reader', spaces: ['*'], name: 'r' } });
  assert.equal((await api(srv, 'GET', '/metrics', { token: key.body.token })).status, 403);
  const m = await api(srv, 'GET', '/metrics');
  assert.equal(m.status, 200, m.text);
  assert.match(m.headers['content-type'], /^text\/plain; version=0\.0\.4/);
});

test('--metrics-open serves /metrics without a token', async (t) => {
  const srv = await withServer(t, { args: ['--metrics-open'] });
  const m = await api(srv, 'GET', '/metrics', { token: '' });
  assert.equal(m.status, 200, m.text);
});

test('values follow known actions, promtool accepts the text', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'mx');
  for (let i = 0; i < 3; i++) {
    const r = await api(srv, 'PUT', `/api/v1/spaces/mx/collections/c/entities/e${i}`, { body: { i } });
    assert.equal(r.status, 201, r.text);
  }
  assert.equal((await api(srv, 'DELETE', '/api/v1/spaces/mx/collections/c/entities/e0')).status, 200);
  assert.equal((await api(srv, 'GET', '/api/v1/spaces/mx/collections/c/entities/nope')).status, 404);
  const snap = await api(srv, 'POST', '/api/v1/spaces/mx/snapshots');
  assert.equal(snap.status, 201, snap.text);
  const text = (await api(srv, 'GET', '/metrics')).text;
  assert.equal(sample(text, 'snapsync_http_requests_total', { route: 'entity_put', status: '201' }), 3);
  assert.equal(sample(text, 'snapsync_http_requests_total', { route: 'entity_get', status: '404' }), 1);
  assert.equal(sample(text, 'snapsync_space_entities', { space: 'mx' }), 2);
  assert.equal(sample(text, 'snapsync_space_tombstones', { space: 'mx' }), 1);
  assert.equal(sample(text, 'snapsync_space_server_version', { space: 'mx' }), 4);
  assert.equal(sample(text, 'snapsync_snapshots_total', { kind: 'manual', status: 'completed' }), 1);
  assert.equal(sample(text, 'snapsync_snapshot_size_bytes_count'), 1);
  assert.ok(sample(text, 'snapsync_database_bytes') > 0);
  assert.ok(sample(text, 'snapsync_open_connections') >= 1);
  assert.ok(Math.abs(sample(text, 'snapsync_process_start_time_seconds') - Date.now() / 1000) < 120);
  // route labels are route names, never raw paths: bounded cardinality
  assert.ok(!/route="\/api/.test(text), 'no raw paths in labels');
  // scripts/setup --test unpacks promtool into .tools/bin (scripts/run puts
  // it on PATH); one on the PATH works too
  const local = path.join(REPO, '.tools', 'bin', 'promtool');
  const promtool = existsSync(local) ? local : 'promtool';
  const p = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(p.error, undefined, 'promtool not found: scripts/setup --test unpacks it into .tools/bin');
  assert.equal(p.status, 0, `promtool check metrics:\n${p.stdout}${p.stderr}`);
});
