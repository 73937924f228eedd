// snapshot_crash.test.mjs - SPEC §7 crash safety and failures: kill -9
// during a large snapshot, SIGTERM during one, and a full disk
// (SNAPSYNC_TEST_SNAPSHOT_FAIL_AFTER): afterwards no snapshot is pending or
// running, no temp or orphaned file is left, every file belongs to a
// completed snapshot and earlier snapshots are intact.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, existsSync, copyFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import {
  startServer, withServer, api, apiOk, putSpace, checkError, runCli, sleep,
} from './helpers.mjs';
import { openSSE } from './sse_helpers.mjs';
import {
  snapPath, downloadGz, liveState, contentSet, createSnapshot, waitSnapshot, listAll, snapFiles, snapFile,
  checkCompletedMeta, checkFileAgainstMeta, checkEntityLines, sha256, pushEntities, until,
} from './snapshot_helpers.mjs';

function tmpData(t) {
  const d = mkdtempSync(path.join(os.tmpdir(), 'snapsync-snapcrash-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Random-ish bodies of about 500 bytes: slow to compress, so a snapshot takes a while. */
const bigBody = (i) => ({ i, r: randomBytes(240).toString('base64'), t: `entity number ${i}`, n: { a: i % 7, b: [i, i * 2] } });

/**
 * The §7 invariant after a (re)start: no snapshot pending/running, no temp
 * file, every file is <id>.ndjson.gz of a completed snapshot, every
 * completed snapshot has its intact file. Returns the list.
 */
async function checkAfterRestart(srv, space) {
  const all = await listAll(srv, space);
  for (const s of all) {
    assert.ok(s.status === 'completed' || s.status === 'failed', `no snapshot left ${s.status} after a restart: ${JSON.stringify(s)}`);
  }
  assert.deepEqual(await listAll(srv, space, 'status=running'), []);
  assert.deepEqual(await listAll(srv, space, 'status=pending'), []);
  const files = snapFiles(srv.dataDir);
  assert.deepEqual(files.filter((f) => /\.tmp$/.test(f)), [], `no temp file in snapshots/: ${files}`);
  const completed = new Map(all.filter((s) => s.status === 'completed').map((s) => [s.id, s]));
  for (const f of files) {
    const id = f.replace(/\.ndjson\.gz$/, '');
    assert.ok(completed.has(id), `${f} belongs to a completed snapshot (have ${[...completed.keys()]})`);
  }
  for (const s of completed.values()) {
    assert.ok(files.includes(`${s.id}.ndjson.gz`), `completed ${s.id} has its file`);
    assert.equal(sha256(readFileSync(snapFile(srv.dataDir, s.id))), s.sha256, `file of ${s.id} intact`);
  }
  return all;
}

test('kill -9 during a large snapshot, then SIGTERM during another: after each restart nothing is left running, partial or orphaned', async (t) => {
  const dataDir = tmpData(t);
  let srv = await startServer({ dataDir });
  t.after(() => srv.kill9().catch(() => {}));
  await putSpace(srv, 'big');
  await apiOk(srv, 'PUT', '/api/v1/spaces/big/collections/a/entities/first', { body: { hello: 'world' } });
  const early = await createSnapshot(srv, 'big', { note: 'small, before the load' });
  const items = [];
  for (let i = 0; i < 100000; i++) items.push({ collection: i % 2 ? 'odd' : 'even', id: `e${String(i).padStart(6, '0')}`, body: bigBody(i) });
  await pushEntities(srv, 'big', items);
  const st = await apiOk(srv, 'GET', '/api/v1/spaces/big/sync/status', {}, 200);
  assert.equal(st.entity_count, 100001);

  // --- kill -9 right after the 202
  const r = await api(srv, 'POST', snapPath('big'), { body: { note: 'killed' }, headers: { Prefer: 'respond-async' } });
  assert.equal(r.status, 202, r.text);
  const killedId = r.body.id;
  // kill once the partial file is on disk (so there is a leftover to clean),
  // or after 300 ms at the latest
  const t0 = Date.now();
  while (Date.now() - t0 < 300 && !snapFiles(dataDir).some((f) => f.startsWith(killedId))) await sleep(2);
  await srv.kill9();
  const finalExisted = existsSync(snapFile(dataDir, killedId));
  const filesAtCrash = snapFiles(dataDir);
  t.diagnostic(`files at the crash: ${filesAtCrash.join(' ')}`);
  // leftovers of another crash: an orphaned finished file (no row) and a temp file
  const orphan = '01ARZ3NDEKTSV4RRFFQ69G5FAV';
  copyFileSync(snapFile(dataDir, early.id), snapFile(dataDir, orphan));
  writeFileSync(path.join(dataDir, 'snapshots', '01ARZ3NDEKTSV4RRFFQ69G5FAW.ndjson.gz.tmp'), 'partial');
  const partial = filesAtCrash.filter((f) => f.startsWith(killedId) && f !== `${killedId}.ndjson.gz`);

  srv = await startServer({ dataDir });
  const all = await checkAfterRestart(srv, 'big');
  assert.ok(!existsSync(snapFile(dataDir, orphan)), 'an orphaned file (no snapshot row) is removed at start');
  assert.equal((await api(srv, 'GET', snapPath('big', orphan))).status, 404);
  const killed = all.find((s) => s.id === killedId);
  assert.ok(killed, `the interrupted snapshot is listed: ${JSON.stringify(all.map((s) => [s.id, s.status]))}`);
  for (const f of partial) assert.ok(!existsSync(path.join(dataDir, 'snapshots', f)), `partial ${f} removed at start`);
  if (!finalExisted) {
    assert.equal(killed.status, 'failed', `interrupted before its file was renamed -> failed: ${JSON.stringify(killed)}`);
  }
  if (killed.status === 'failed') {
    assert.match(String(killed.error), /interrupted/i, `error says interrupted: ${JSON.stringify(killed)}`);
  } else {
    t.diagnostic('the snapshot finished before the kill; the crash window was missed');
  }
  const e = await apiOk(srv, 'GET', snapPath('big', early.id), {}, 200);
  assert.equal(e.status, 'completed');
  checkFileAgainstMeta((await downloadGz(srv, 'big', early.id)).body, e);
  const st2 = await apiOk(srv, 'GET', '/api/v1/spaces/big/sync/status', {}, 200);
  assert.equal(st2.last_snapshot, killed.status === 'completed' ? killed.id : early.id, 'last_snapshot = newest completed');
  // a failed snapshot's download is not a file
  if (killed.status === 'failed') {
    const d = await api(srv, 'GET', snapPath('big', killedId, '/download'));
    assert.ok(d.status >= 400 && d.status < 500, `download of a failed snapshot -> ${d.status}`);
    const rs = await api(srv, 'POST', snapPath('big', killedId, '/restore'), { body: { confirm: killedId } });
    assert.ok(rs.status >= 400 && rs.status < 500, `restore of a failed snapshot -> ${rs.status} ${rs.text}`);
  }

  // --- SIGTERM during a snapshot: exit 0 within the timeout, then the same invariant
  const r2 = await api(srv, 'POST', snapPath('big'), { body: { note: 'sigterm' }, headers: { Prefer: 'respond-async' } });
  assert.equal(r2.status, 202, `the space is not stuck busy after the crash: ${r2.text}`);
  const termId = r2.body.id;
  const ex = await srv.stop('SIGTERM');
  assert.deepEqual(ex, { code: 0, signal: null }, `exit after SIGTERM during a snapshot\n${srv.stderrText().slice(-2000)}`);
  assert.deepEqual(snapFiles(dataDir).filter((f) => /\.tmp$/.test(f)), [], `SIGTERM removed the partial file: ${snapFiles(dataDir)}`);

  srv = await startServer({ dataDir });
  const all2 = await checkAfterRestart(srv, 'big');
  const term = all2.find((s) => s.id === termId);
  assert.ok(term, 'the snapshot stopped by SIGTERM is listed');
  if (term.status === 'failed') assert.equal(typeof term.error, 'string');
  t.diagnostic(`after SIGTERM: ${term.status} ${term.error}`);

  // --- the space works: a full snapshot now completes and holds everything
  const m = await createSnapshot(srv, 'big');
  checkCompletedMeta(m, { space: 'big', kind: 'manual' });
  assert.equal(m.entity_total, 100001);
  assert.deepEqual(m.entity_counts, { a: 1, even: 50000, odd: 50000 });
  const v = await runCli(['verify', snapFile(dataDir, m.id)], { timeoutMs: 30000 });
  assert.equal(v.code, 0, `verify: ${v.stdout} ${v.stderr}`);
  const ex2 = await srv.stop();
  assert.deepEqual(ex2, { code: 0, signal: null });
});

test('disk full (SNAPSYNC_TEST_SNAPSHOT_FAIL_AFTER): 500 snapshot_failed, row failed with an error, no temp file, earlier snapshots intact, SSE failed event', async (t) => {
  const LIMIT = 40000;
  const srv = await withServer(t, { env: { SNAPSYNC_TEST_SNAPSHOT_FAIL_AFTER: String(LIMIT) } });
  await putSpace(srv, 'full');
  for (let i = 0; i < 5; i++) await apiOk(srv, 'PUT', `/api/v1/spaces/full/collections/c/entities/s${i}`, { body: { i } });
  const small = await createSnapshot(srv, 'full', { note: 'fits' });
  assert.ok(small.size_bytes < LIMIT);
  const sse = await openSSE(srv.port, '/api/v1/events?topics=snapshot&spaces=full', { token: srv.adminToken });
  t.after(() => sse.close());
  assert.equal(sse.status, 200);

  const items = [];
  for (let i = 0; i < 2000; i++) items.push({ collection: 'c', id: `b${i}`, body: bigBody(i) });
  await pushEntities(srv, 'full', items);
  const stBefore = await apiOk(srv, 'GET', '/api/v1/spaces/full/sync/status', {}, 200);

  const r = await api(srv, 'POST', snapPath('full'), { body: { note: 'too big' } });
  checkError(assert, r, 500, 'snapshot_failed', 'snapshot past the disk limit');
  const failed = (await listAll(srv, 'full', 'status=failed'));
  assert.equal(failed.length, 1, JSON.stringify(failed));
  const f = failed[0];
  assert.equal(f.kind, 'manual');
  assert.equal(f.note, 'too big');
  assert.equal(typeof f.error, 'string');
  assert.ok(f.error.length > 0, 'a failed snapshot says why');
  if (r.body.snapshot !== undefined) assert.equal(r.body.snapshot, f.id);
  await until(() => snapFiles(srv.dataDir).every((n) => !/\.tmp$/.test(n)), { timeoutMs: 2000, what: `no temp file: ${snapFiles(srv.dataDir)}` });
  assert.deepEqual(snapFiles(srv.dataDir), [`${small.id}.ndjson.gz`], 'only the earlier file remains');
  const dl = await api(srv, 'GET', snapPath('full', f.id, '/download'));
  assert.ok(dl.status >= 400 && dl.status < 500, `download of a failed snapshot -> ${dl.status}`);

  // earlier snapshot intact
  const gz = (await downloadGz(srv, 'full', small.id)).body;
  checkEntityLines(checkFileAgainstMeta(gz, small));
  const v = await runCli(['verify', snapFile(srv.dataDir, small.id)]);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const st = await apiOk(srv, 'GET', '/api/v1/spaces/full/sync/status', {}, 200);
  assert.equal(st.last_snapshot, small.id, 'a failed snapshot is not last_snapshot');

  // SSE: the failure is an event, never silent
  await sse.waitFor(() => sse.ofType('snapshot').some((e) => e.json?.snapshot === f.id && e.json.status === 'failed') || undefined, 5000, 'a failed snapshot event');

  // async: 202, then failed
  const a = await api(srv, 'POST', snapPath('full'), { body: {}, headers: { Prefer: 'respond-async' } });
  assert.equal(a.status, 202, `the space is not stuck busy: ${a.text}`);
  await sse.waitFor(() => sse.ofType('snapshot').some((e) => e.json?.snapshot === a.body.id && e.json.status === 'failed') || undefined, 5000, 'the async failure event');
  const am = await waitSnapshot(srv, 'full', a.body.id);
  assert.equal(am.status, 'failed');
  assert.equal(typeof am.error, 'string');

  // a restore needs its pre_restore snapshot: when that cannot be written, nothing changes
  const rs = await api(srv, 'POST', snapPath('full', small.id, '/restore'), { body: { confirm: small.id } });
  assert.ok(rs.status >= 500, `restore whose pre_restore snapshot fails -> ${rs.status} ${rs.text}`);
  const st3 = await apiOk(srv, 'GET', '/api/v1/spaces/full/sync/status', {}, 200);
  assert.equal(st3.server_version, stBefore.server_version, 'the restore changed nothing');
  assert.equal(st3.entity_count, stBefore.entity_count);
  assert.deepEqual((await listAll(srv, 'full', 'status=completed')).map((x) => x.id), [small.id]);
  await until(() => snapFiles(srv.dataDir).length === 1, { timeoutMs: 2000, what: `no partial pre_restore file: ${snapFiles(srv.dataDir)}` });

  // shrink the space below the limit: snapshots work again (the space is not stuck)
  const changes = items.map((x) => ({ collection: 'c', id: x.id, base_rev: null, deleted: true, body: null }));
  for (let off = 0; off < changes.length; off += 1000) {
    const live = await liveState(srv, 'full');
    const batch = changes.slice(off, off + 1000).map((c) => ({ ...c, base_rev: live.map.get(`c\u0000${c.id}`).rev }));
    const pr = await apiOk(srv, 'POST', '/api/v1/spaces/full/changes', { body: { changes: batch } }, 200);
    assert.ok(pr.results.every((x) => x.status === 'applied'));
  }
  const ok = await createSnapshot(srv, 'full');
  assert.equal(ok.entity_total, 5);
  assert.deepEqual(contentSet((await liveState(srv, 'full')).map.values()),
    contentSet(checkFileAgainstMeta((await downloadGz(srv, 'full', ok.id)).body, ok).entities));
});

test('a failed scheduled snapshot is an SSE event (kind scheduled, status failed), never silent; no file is left', async (t) => {
  const srv = await withServer(t, {
    args: ['--snapshot-every', '1', '--snapshot-keep-scheduled', '2'],
    env: { SNAPSYNC_TEST_SNAPSHOT_FAIL_AFTER: '20000' },
  });
  const sse = await openSSE(srv.port, '/api/v1/events?topics=snapshot&spaces=sf', { token: srv.adminToken });
  t.after(() => sse.close());
  await putSpace(srv, 'sf');
  const items = [];
  for (let i = 0; i < 500; i++) items.push({ collection: 'c', id: `e${i}`, body: bigBody(i) });
  await pushEntities(srv, 'sf', items);
  const ev = await sse.waitFor(() => sse.ofType('snapshot').map((e) => e.json).find((e) => e?.status === 'failed'), 5000, 'a failed scheduled snapshot event');
  assert.equal(ev.kind, 'scheduled');
  assert.equal(ev.space, 'sf');
  const row = await apiOk(srv, 'GET', snapPath('sf', ev.snapshot), {}, 200);
  assert.equal(row.status, 'failed');
  assert.equal(row.kind, 'scheduled');
  assert.ok(typeof row.error === 'string' && row.error.length > 0, JSON.stringify(row));
  assert.equal((await apiOk(srv, 'GET', '/api/v1/spaces/sf/sync/status', {}, 200)).last_snapshot, null);
  await until(() => snapFiles(srv.dataDir).length === 0, { timeoutMs: 2000, what: `no file left: ${snapFiles(srv.dataDir)}` });
});

test('a schedule that keeps failing keeps only the newest --snapshot-keep-scheduled failed rows (they do not pile up)', async (t) => {
  const srv = await withServer(t, {
    args: ['--snapshot-every', '1', '--snapshot-keep-scheduled', '2'],
    env: { SNAPSYNC_TEST_SNAPSHOT_FAIL_AFTER: '20000' },
  });
  const sse = await openSSE(srv.port, '/api/v1/events?topics=snapshot&spaces=sk', { token: srv.adminToken });
  t.after(() => sse.close());
  await putSpace(srv, 'sk');
  const items = [];
  for (let i = 0; i < 500; i++) items.push({ collection: 'c', id: `e${i}`, body: bigBody(i) });
  await pushEntities(srv, 'sk', items);
  const failedIds = () => [...new Set(sse.ofType('snapshot').map((e) => e.json).filter((e) => e?.status === 'failed').map((e) => e.snapshot))];
  await sse.waitFor(() => failedIds().length >= 5, 15000, 'five failed scheduled snapshots');
  const ids = failedIds();
  let rows;
  await until(async () => {
    rows = (await apiOk(srv, 'GET', '/api/v1/spaces/sk/snapshots?kind=scheduled&limit=100', {}, 200)).snapshots;
    return rows.length <= 2;
  }, { timeoutMs: 3000, what: 'at most 2 scheduled rows' });
  assert.ok(rows.length >= 1 && rows.every((r) => r.status === 'failed' && r.error), JSON.stringify(rows));
  // the ones kept are the newest; the oldest failures are gone
  const listed = rows.map((r) => r.id);
  for (const old of ids.slice(0, ids.length - 3)) assert.ok(!listed.includes(old), `old failure ${old} pruned; listed ${listed}`);
  assert.deepEqual(listed, [...listed].sort().reverse(), 'newest first');
});
