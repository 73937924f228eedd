// audit.test.mjs - SPEC §4 audit log: GET /api/v1/audit (admin), newest
// first, filters (space, action), paging, and what gets audited: space
// create/delete, key create/revoke (through the API and the CLI), conflict
// resolve, denied requests (sampled: a burst of 10, then about 2 a second).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, api, apiOk, putSpace, createKey, checkError, sleep, runCli,
} from './helpers.mjs';

const TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

let srv;
let adminId;
before(async () => {
  srv = await startServer();
  const keys = (await apiOk(srv, 'GET', '/api/v1/keys?limit=1000')).keys;
  adminId = keys.find((k) => k.role === 'admin').id;
});
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

/** Every entry matching the query, walking all pages. */
async function allAudit(query = '') {
  const out = [];
  let cursor = null;
  for (let i = 0; i < 10000; i++) {
    const sep = query ? '&' : '';
    const q = `/api/v1/audit?${query}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const b = await apiOk(srv, 'GET', q, {}, 200);
    out.push(...b.entries);
    cursor = b.next_cursor;
    if (cursor === null) return out;
  }
  throw new Error('audit paging never ended');
}

/** Audit rows may be written just after the response: poll briefly. */
async function waitAudit(pred, query = '', timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const es = await allAudit(query);
    const hit = es.find(pred);
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`no matching audit entry within ${timeoutMs} ms; have ${JSON.stringify(es.slice(0, 20))}`);
    await sleep(50);
  }
}

function checkEntry(e) {
  const w = JSON.stringify(e);
  assert.deepEqual(Object.keys(e).sort(), ['action', 'actor', 'at', 'id', 'meta', 'remote_addr', 'space', 'target'], w);
  assert.ok(e.id !== null && e.id !== undefined && e.id !== '', `id ${w}`);
  assert.match(e.at, TIME_RE, `at ${w}`);
  assert.equal(typeof e.actor, 'string', `actor ${w}`);
  assert.equal(typeof e.action, 'string', `action ${w}`);
  // rows written by `snapsync keys` on the machine have no client address
  if (e.actor === 'cli') assert.equal(e.remote_addr, null, `remote_addr ${w}`);
  else assert.match(String(e.remote_addr), /127\.0\.0\.1/, `remote_addr ${w}`);
}

test('space create/delete and key create/revoke are audited with actor, target and remote address', async () => {
  const t0 = Date.now();
  await putSpace(srv, 'au-one');
  await apiOk(srv, 'PUT', '/api/v1/spaces/au-one', {}, 200);          // not a create
  await putSpace(srv, 'au-gone');
  await apiOk(srv, 'DELETE', '/api/v1/spaces/au-gone?confirm=au-gone', {}, 200);
  const k = await createKey(srv, 'writer', ['au-one'], 'audited');
  await apiOk(srv, 'DELETE', `/api/v1/keys/${k.id}`, {}, 200);

  const sc = await waitAudit((e) => e.action === 'space.create' && e.space === 'au-one');
  checkEntry(sc);
  assert.equal(sc.actor, adminId, 'actor is the key id');
  assert.ok(Date.parse(sc.at) >= t0 - 1000 && Date.parse(sc.at) <= Date.now() + 1000, `at ${sc.at}`);
  const creates = (await allAudit('action=space.create')).filter((e) => e.space === 'au-one');
  assert.equal(creates.length, 1, `a second PUT of an existing space is not a create: ${JSON.stringify(creates)}`);

  const sd = await waitAudit((e) => e.action === 'space.delete' && e.space === 'au-gone');
  checkEntry(sd);
  assert.equal(sd.actor, adminId);

  const kc = await waitAudit((e) => e.action === 'key.create' && e.target === k.id);
  checkEntry(kc);
  assert.equal(kc.actor, adminId);
  const metaText = JSON.stringify(kc.meta);
  assert.ok(!metaText.includes(k.token), 'the token is in the audit log');
  const kr = await waitAudit((e) => e.action === 'key.revoke' && e.target === k.id);
  checkEntry(kr);
  assert.equal(kr.actor, adminId);

  // no token anywhere in the log
  const everything = JSON.stringify(await allAudit());
  assert.ok(!everything.includes(k.token) && !everything.includes(srv.adminToken), 'a token is in the audit log');
});

// `snapsync keys create|revoke` beside the running server write the same
// rows as the keys API, with actor "cli" and no remote address.
test('keys create/revoke from the CLI are audited with actor cli, in the shape of the keys API', async () => {
  const viaApi = await createKey(srv, 'writer', ['au-cli'], 'api twin');
  const apiRow = await waitAudit((e) => e.action === 'key.create' && e.target === viaApi.id);

  const c = await runCli(['keys', 'create', '--data', srv.dataDir, '--role', 'writer', '--space', 'au-cli', '--name', 'from cli']);
  assert.equal(c.code, 0, `keys create: exit ${c.code}: ${c.stderr}`);
  const k = JSON.parse(c.stdout.trim());
  const kc = await waitAudit((e) => e.action === 'key.create' && e.target === k.id);
  const w = JSON.stringify(kc);
  assert.deepEqual(Object.keys(kc).sort(), Object.keys(apiRow).sort(), w);
  assert.match(kc.at, TIME_RE, w);
  assert.ok(Math.abs(Date.parse(kc.at) - Date.parse(k.created_at)) <= 1000, `at ${kc.at} vs created_at ${k.created_at}`);
  assert.equal(kc.actor, 'cli', w);
  assert.equal(kc.space, null, w);
  assert.equal(kc.remote_addr, null, w);
  assert.deepEqual(kc.meta, { role: 'writer', spaces: ['au-cli'] }, w);
  assert.deepEqual(kc.meta, apiRow.meta, 'the same meta as the keys API writes');

  const rv = await runCli(['keys', 'revoke', k.id, '--data', srv.dataDir]);
  assert.equal(rv.code, 0, `keys revoke: exit ${rv.code}: ${rv.stderr}`);
  const kr = await waitAudit((e) => e.action === 'key.revoke' && e.target === k.id);
  assert.equal(kr.actor, 'cli', JSON.stringify(kr));
  assert.equal(kr.meta, null, JSON.stringify(kr));
  assert.equal(kr.remote_addr, null, JSON.stringify(kr));
  assert.ok(Number(kr.id) > Number(kc.id), 'revoke after create');

  // a revoke that finds no active key changes nothing and audits nothing
  const again = await runCli(['keys', 'revoke', k.id, '--data', srv.dataDir]);
  assert.equal(again.code, 1, again.stderr);
  const revokes = (await allAudit('action=key.revoke')).filter((e) => e.target === k.id);
  assert.equal(revokes.length, 1, JSON.stringify(revokes));
  // the admin key: the CLI's role (admin) covers all spaces
  const a = await runCli(['keys', 'create', '--data', srv.dataDir, '--role', 'admin']);
  assert.equal(a.code, 0, a.stderr);
  const ka = JSON.parse(a.stdout.trim());
  const ac = await waitAudit((e) => e.action === 'key.create' && e.target === ka.id);
  assert.deepEqual(ac.meta, { role: 'admin', spaces: ['*'] });
  const everything = JSON.stringify(await allAudit());
  assert.ok(!everything.includes(k.token) && !everything.includes(ka.token), 'a CLI token is in the audit log');
});

test('the actor is the key that acted', async () => {
  const other = await createKey(srv, 'admin', ['*'], 'second admin');
  const r = await api(srv, 'PUT', '/api/v1/spaces/au-by-other', { token: other.token });
  assert.equal(r.status, 201, r.text);
  const e = await waitAudit((x) => x.action === 'space.create' && x.space === 'au-by-other');
  assert.equal(e.actor, other.id);
});

test('conflict.resolve is audited', async () => {
  await putSpace(srv, 'au-conf');
  const S = '/api/v1/spaces/au-conf';
  await apiOk(srv, 'PUT', `${S}/collections/docs/entities/d1`, { body: { v: 1 } });
  const push = await apiOk(srv, 'POST', `${S}/changes`, { body: { changes: [{ collection: 'docs', id: 'd1', base_rev: null, deleted: false, body: { v: 'mine' } }] } }, 200);
  assert.equal(push.results[0].status, 'conflict', JSON.stringify(push));
  const cid = push.results[0].conflict_id;
  await apiOk(srv, 'POST', `${S}/conflicts/${cid}/resolve`, { body: { strategy: 'remote_wins' } }, 200);
  const e = await waitAudit((x) => x.action === 'conflict.resolve' && x.space === 'au-conf');
  checkEntry(e);
  assert.equal(e.actor, adminId);
  assert.ok(JSON.stringify(e).includes(String(cid)) || JSON.stringify(e).includes('d1'), `entry names the conflict or entity: ${JSON.stringify(e)}`);
});

test('newest first; filters by action and space; limit=1 + cursor pages through', async () => {
  for (const s of ['au-p1', 'au-p2', 'au-p3']) await putSpace(srv, s);
  await waitAudit((e) => e.action === 'space.create' && e.space === 'au-p3');
  const all = await allAudit();
  assert.ok(all.length >= 8, `entries: ${all.length}`);
  for (const e of all) checkEntry(e);
  for (let i = 1; i < all.length; i++) {
    assert.ok(Date.parse(all[i - 1].at) >= Date.parse(all[i].at), `not newest first at ${i}: ${all[i - 1].at} < ${all[i].at}`);
  }
  assert.equal(new Set(all.map((e) => String(e.id))).size, all.length, 'ids unique');
  // the three creates, newest first
  const creates = all.filter((e) => e.action === 'space.create' && /^au-p\d$/.test(e.space)).map((e) => e.space);
  assert.deepEqual(creates, ['au-p3', 'au-p2', 'au-p1']);

  const byAction = await allAudit('action=space.create');
  assert.ok(byAction.length >= 3);
  assert.ok(byAction.every((e) => e.action === 'space.create'), 'action filter');
  assert.deepEqual(byAction.map((e) => e.id), all.filter((e) => e.action === 'space.create').map((e) => e.id));

  const bySpace = await allAudit('space=au-p2');
  assert.ok(bySpace.length >= 1);
  assert.ok(bySpace.every((e) => e.space === 'au-p2'), 'space filter');
  const both = await allAudit('space=au-p2&action=key.create');
  assert.deepEqual(both, [], 'space AND action');
  const none = await allAudit('action=no.such.action');
  assert.deepEqual(none, []);

  // limit=1 then the cursor: the same sequence as the full list
  const first = await apiOk(srv, 'GET', '/api/v1/audit?limit=1', {}, 200);
  assert.equal(first.entries.length, 1);
  assert.notEqual(first.next_cursor, null);
  assert.deepEqual(first.entries[0], all[0]);
  const second = await apiOk(srv, 'GET', `/api/v1/audit?limit=1&cursor=${encodeURIComponent(first.next_cursor)}`, {}, 200);
  assert.equal(second.entries.length, 1);
  assert.deepEqual(second.entries[0], all[1]);
  const walked = [];
  let cursor = null;
  for (let i = 0; i < all.length + 5; i++) {
    const q = `/api/v1/audit?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const p = await apiOk(srv, 'GET', q, {}, 200);
    walked.push(...p.entries.map((e) => e.id));
    cursor = p.next_cursor;
    if (cursor === null) break;
  }
  // entries written meanwhile would appear at the top, never in the middle
  assert.deepEqual(walked.slice(-all.length), all.map((e) => e.id));
  // filtered paging
  const fp = await apiOk(srv, 'GET', '/api/v1/audit?action=space.create&limit=1', {}, 200);
  assert.equal(fp.entries[0].action, 'space.create');
  const fp2 = await apiOk(srv, 'GET', `/api/v1/audit?action=space.create&limit=1&cursor=${encodeURIComponent(fp.next_cursor)}`, {}, 200);
  assert.equal(fp2.entries[0].action, 'space.create');
  assert.deepEqual([fp.entries[0].id, fp2.entries[0].id], byAction.slice(0, 2).map((e) => e.id));

  checkError(assert, await api(srv, 'GET', '/api/v1/audit?limit=0'), 400, 'invalid_parameter', 'limit=0');
  checkError(assert, await api(srv, 'GET', '/api/v1/audit?space=BAD!'), 400, 'invalid_name', 'space=BAD!');
});

test('request.denied: audited, sampled (burst of 10, then ~2/s)', async () => {
  await putSpace(srv, 'au-deny');
  const reader = await createKey(srv, 'reader', ['au-deny'], 'denied-reader');
  const before = (await allAudit('action=request.denied')).length;
  const t0 = Date.now();
  const N = 40;
  for (let i = 0; i < N; i++) {
    const r = await api(srv, 'PUT', `/api/v1/spaces/au-deny/collections/c/entities/x${i}`, { token: reader.token, body: { i } });
    assert.equal(r.status, 403, r.text);
  }
  const elapsed = (Date.now() - t0) / 1000;
  // let the sampled rows commit
  const count = async () => (await allAudit('action=request.denied')).length - before;
  const deadline = Date.now() + 3000;
  while ((await count()) < 10 && Date.now() < deadline) await sleep(50);
  await sleep(200);
  const rows = await allAudit('action=request.denied');
  const fresh = rows.length - before;
  const max = 10 + Math.ceil(2 * (elapsed + 0.5)) + 1;
  assert.ok(fresh >= 10, `${fresh} request.denied rows for ${N} denials; the first 10 are all kept`);
  assert.ok(fresh <= max, `${fresh} request.denied rows for ${N} denials in ${elapsed.toFixed(2)} s: not sampled (max ${max})`);
  const e = rows.find((x) => x.space === 'au-deny');
  assert.ok(e, 'a denied row for the space');
  checkEntry(e);
  assert.equal(e.actor, reader.id, `actor ${JSON.stringify(e)}`);
  assert.ok(JSON.stringify(e.meta).includes('403'), `meta has the status: ${JSON.stringify(e.meta)}`);
  // the audit log itself is admin-only
  checkError(assert, await api(srv, 'GET', '/api/v1/audit', { token: reader.token }), 403, 'forbidden', 'reader GET /audit');
});
