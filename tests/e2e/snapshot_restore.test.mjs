// snapshot_restore.test.mjs - SPEC §7 preview, restore (confirm, dry run,
// pre_restore, verification of the file first), import (same server,
// another space, another server) and pre_restore retention.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gzipSync, gunzipSync } from 'node:zlib';
import {
  startServer, withServer, api, apiOk, putSpace, checkError, allChanges, sleep, haveCommand,
} from './helpers.mjs';
import {
  snapPath, downloadGz, parseSnapshot, liveState, contentSet, createSnapshot, listAll, snapFiles, snapFile,
  checkCompletedMeta, checkFileAgainstMeta, checkEntityLines, sha256, flipByte, pushEntities, postBinary, until,
} from './snapshot_helpers.mjs';

let srv;
before(async () => { srv = await startServer(); });
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText().slice(-3000)}`);
});

const ent = (space, c, id) => `/api/v1/spaces/${space}/collections/${c}/entities/${encodeURIComponent(id)}`;
const put = (s, space, c, id, body) => apiOk(s, 'PUT', ent(space, c, id), { body });
const del = (s, space, c, id) => apiOk(s, 'DELETE', ent(space, c, id), {}, 200);
const status = (s, space) => apiOk(s, 'GET', `/api/v1/spaces/${space}/sync/status`, {}, 200);
const revN = (rev) => Number(rev.split('-')[0]);

/** delta without all-zero collections (a server may list them or not) */
function nz(delta) {
  const out = {};
  for (const [c, d] of Object.entries(delta)) {
    assert.deepEqual(Object.keys(d).sort(), ['added', 'deleted', 'modified'], `delta members for ${c}: ${JSON.stringify(d)}`);
    if (d.added || d.modified || d.deleted) out[c] = d;
  }
  return out;
}

/** Seeds a space, snapshots it, then edits it. Returns {m, before (content set at snapshot)}. */
async function seedAndDiverge(s, space) {
  await putSpace(s, space);
  await put(s, space, 'issues', 'I1', { title: 'one' });
  await put(s, space, 'issues', 'I2', { title: 'two' });
  await put(s, space, 'issues', 'I3', { title: 'three' });
  await put(s, space, 'notes', 'N1', { text: 'keep' });
  await put(s, space, 'tags', 'T1', { t: 1 });
  await put(s, space, 'tags', 'T2', { t: 2 });
  await put(s, space, 'gone', 'G1', { g: 1 });
  await del(s, space, 'gone', 'G1');                 // a tombstone before the snapshot
  const snapState = await liveState(s, space);
  const m = await createSnapshot(s, space, { note: 'base' });
  // diverge
  await put(s, space, 'issues', 'I1', { title: 'one, edited' });   // modified
  await del(s, space, 'issues', 'I2');                              // deleted
  await put(s, space, 'issues', 'I4', { title: 'four' });          // added
  await put(s, space, 'issues', 'I3', { title: 'tmp' });
  await put(s, space, 'issues', 'I3', { title: 'three' });         // same body again: not modified
  await del(s, space, 'tags', 'T1');
  await del(s, space, 'tags', 'T2');                                // a whole collection gone
  await put(s, space, 'fresh', 'F1', { f: 1 });                    // a new collection
  await put(s, space, 'gone', 'G1', { g: 'back' });                // recreated after a tombstone: added
  return { m, snapState };
}

const EXPECTED_DELTA = {
  issues: { added: 1, modified: 1, deleted: 1 },
  tags: { added: 0, modified: 0, deleted: 2 },
  fresh: { added: 1, modified: 0, deleted: 0 },
  gone: { added: 1, modified: 0, deleted: 0 },
};

test('preview: per-collection added/modified/deleted against the current state, current_version, changes_since', async () => {
  await putSpace(srv, 'pv0');
  await put(srv, 'pv0', 'c', 'x', { n: 1 });
  const m0 = await createSnapshot(srv, 'pv0');
  const p0 = await apiOk(srv, 'GET', snapPath('pv0', m0.id, '/preview'), {}, 200);
  assert.deepEqual(Object.keys(p0).sort(), ['changes_since', 'current_version', 'delta', 'snapshot']);
  assert.deepEqual(p0.snapshot, m0, 'preview.snapshot is the metadata');
  assert.equal(p0.current_version, m0.server_version);
  assert.equal(p0.changes_since, 0);
  assert.deepEqual(nz(p0.delta), {}, 'nothing changed');

  const { m } = await seedAndDiverge(srv, 'pv');
  const st = await status(srv, 'pv');
  const p = await apiOk(srv, 'GET', snapPath('pv', m.id, '/preview'), {}, 200);
  assert.deepEqual(p.snapshot, m);
  assert.equal(p.current_version, st.server_version);
  assert.equal(p.changes_since, st.server_version - m.server_version, 'changes_since counts the changes after the snapshot');
  assert.deepEqual(nz(p.delta), EXPECTED_DELTA);
  // preview changes nothing
  assert.equal((await status(srv, 'pv')).server_version, st.server_version);
});

test('restore: confirm must repeat the id (400 confirm_mismatch, nothing changes); dry run answers and changes nothing', async () => {
  const { m } = await seedAndDiverge(srv, 'rc');
  const other = await createSnapshot(srv, 'rc');
  const st = await status(srv, 'rc');
  const liveBefore = await liveState(srv, 'rc');
  const listBefore = (await listAll(srv, 'rc')).map((x) => x.id);
  for (const body of [{}, { confirm: 'nope' }, { confirm: other.id }, { confirm: m.id.toLowerCase() }, { confirm: null },
    { confirm: 1 }, { dry_run: true }, { confirm: `${m.id} ` }]) {
    const r = await api(srv, 'POST', snapPath('rc', m.id, '/restore'), { body });
    checkError(assert, r, 400, 'confirm_mismatch', `restore with ${JSON.stringify(body)}`);
  }
  // no body at all, an empty body, a body of whitespace: a missing confirm
  // is a mismatch too (as docs/api.md says), not invalid_json
  for (const [what, opts] of [['no body', {}], ['an empty body', { body: '' }],
    ['Content-Length: 0 with a JSON type', { body: Buffer.alloc(0), headers: { 'Content-Type': 'application/json' } }],
    ['a body of whitespace', { body: ' \r\n\t' }]]) {
    const r = await api(srv, 'POST', snapPath('rc', m.id, '/restore'), opts);
    const e = checkError(assert, r, 400, 'confirm_mismatch', `restore with ${what}`);
    assert.ok(e.message.includes(m.id), `the message shows the body to send: ${e.message}`);
  }
  // a body that is not JSON stays invalid_json
  checkError(assert, await api(srv, 'POST', snapPath('rc', m.id, '/restore'), { body: '{"confirm":' }), 400, 'invalid_json',
    'restore with broken JSON');
  // dry run
  const d = await api(srv, 'POST', snapPath('rc', m.id, '/restore'), { body: { confirm: m.id, dry_run: true } });
  assert.equal(d.status, 200, d.text);
  assert.equal(d.body.restored_from, m.id);
  assert.equal(d.body.dry_run, true);
  assert.equal(d.body.pre_restore_snapshot, null);
  assert.equal(d.body.server_version, st.server_version);
  // put = modified + deleted since; deleted = added since
  assert.deepEqual(d.body.changes, { put: 1 + 1 + 2, deleted: 1 + 1 + 1 }, JSON.stringify(d.body));
  assert.deepEqual(nz(d.body.delta), EXPECTED_DELTA);
  // nothing changed
  const st2 = await status(srv, 'rc');
  assert.equal(st2.server_version, st.server_version);
  assert.equal(st2.digest, st.digest);
  assert.deepEqual((await listAll(srv, 'rc')).map((x) => x.id), listBefore, 'no snapshot taken by a dry run or a refused restore');
  const liveAfter = await liveState(srv, 'rc');
  assert.deepEqual([...liveAfter.map.values()], [...liveBefore.map.values()]);
});

test('restore: pre_restore snapshot first, then the live entities are exactly the snapshot\'s, as new changes in the feed; undo works', async () => {
  const { m, snapState } = await seedAndDiverge(srv, 'rs');
  const before = await liveState(srv, 'rs');
  const st0 = await status(srv, 'rs');

  const r = await api(srv, 'POST', snapPath('rs', m.id, '/restore'), { body: { confirm: m.id } });
  assert.equal(r.status, 200, r.text);
  const res = r.body;
  assert.equal(res.restored_from, m.id);
  assert.notEqual(res.dry_run, true);
  assert.deepEqual(res.changes, { put: 4, deleted: 3 });
  const st1 = await status(srv, 'rs');
  assert.equal(res.server_version, st1.server_version, 'response server_version = the space\'s after the restore');
  assert.equal(st1.server_version, st0.server_version + 7, 'one new version per put/delete');
  assert.equal(st1.entity_count, m.entity_total);

  // the pre_restore snapshot holds the state just before
  const pre = await apiOk(srv, 'GET', snapPath('rs', res.pre_restore_snapshot), {}, 200);
  checkCompletedMeta(pre, { space: 'rs', kind: 'pre_restore' });
  assert.equal(pre.level, 1, 'a pre_restore snapshot is written at --pre-restore-level (default 1)');
  assert.equal(m.level, 6, 'other snapshots at --snapshot-level (default 6)');
  assert.equal(pre.server_version, st0.server_version);
  const preFile = checkFileAgainstMeta((await downloadGz(srv, 'rs', pre.id)).body, pre);
  checkEntityLines(preFile);
  assert.deepEqual(contentSet(preFile.entities), contentSet(before.map.values()), 'pre_restore file = the state before the restore');
  assert.deepEqual(preFile.entities.map((e) => e.rev).sort(), [...before.map.values()].map((e) => e.rev).sort());

  // live state = the snapshot's
  const after = await liveState(srv, 'rs');
  const file = parseSnapshot((await downloadGz(srv, 'rs', m.id)).body);
  assert.deepEqual(contentSet(after.map.values()), contentSet(file.entities), 'live (collection, id, body) = the snapshot file');
  assert.deepEqual(contentSet(after.map.values()), contentSet(snapState.map.values()), '= the state when the snapshot was taken');

  // the feed shows the restore as ordinary changes with new versions
  const feed = (await allChanges(srv, 'rs', { since: st0.server_version, extra: '&bodies=true' })).changes;
  assert.equal(feed.length, 7, JSON.stringify(feed));
  const byKey = Object.fromEntries(feed.map((e) => [`${e.collection}/${e.id}`, e]));
  assert.deepEqual(Object.keys(byKey).sort(), ['fresh/F1', 'gone/G1', 'issues/I1', 'issues/I2', 'issues/I4', 'tags/T1', 'tags/T2']);
  for (const k of ['fresh/F1', 'gone/G1', 'issues/I4']) assert.equal(byKey[k].deleted, true, `${k} deleted by the restore`);
  for (const k of ['issues/I1', 'issues/I2', 'tags/T1', 'tags/T2']) {
    assert.equal(byKey[k].deleted, false, `${k} put by the restore`);
  }
  assert.deepEqual(byKey['issues/I1'].body, { title: 'one' });
  for (const e of feed) {
    assert.ok(e.version > st0.server_version && e.version <= st1.server_version, `new version ${e.version}`);
  }
  // a v2 snapshot puts back the revision of each entity it writes (rev and
  // history as in the file), not a new edit (a v1 file: the test below)
  const withRevs = (await liveState(srv, 'rs', { allRevs: true })).map;
  for (const id of ['I1', 'I2']) {
    const fe = file.entities.find((e) => e.id === id);
    assert.equal(byKey[`issues/${id}`].rev, fe.rev, `${id}: the snapshot's rev`);
    assert.deepEqual(withRevs.get(`issues\u0000${id}`).revs, fe.revs, `${id}: the snapshot's history`);
  }
  // untouched: entities equal in both keep their version and rev
  for (const k of ['issues\u0000I3', 'notes\u0000N1']) {
    assert.equal(after.map.get(k).version, before.map.get(k).version, `${k} not rewritten`);
    assert.equal(after.map.get(k).rev, before.map.get(k).rev);
  }
  // a GET of a restored entity
  const g = await apiOk(srv, 'GET', ent('rs', 'tags', 'T2'), {}, 200);
  assert.deepEqual(g.body, { t: 2 });

  // a second restore of the same snapshot changes nothing but still answers
  const again = await apiOk(srv, 'POST', snapPath('rs', m.id, '/restore'), { body: { confirm: m.id } }, 200);
  assert.deepEqual(again.changes, { put: 0, deleted: 0 });
  assert.equal((await status(srv, 'rs')).server_version, st1.server_version);

  // undo: restore the pre_restore snapshot
  const undo = await apiOk(srv, 'POST', snapPath('rs', pre.id, '/restore'), { body: { confirm: pre.id } }, 200);
  assert.deepEqual(undo.changes, { put: 4, deleted: 3 });   // I1, I4, F1, G1 back; I2, T1, T2 gone
  const undone = await liveState(srv, 'rs');
  assert.deepEqual(contentSet(undone.map.values()), contentSet(before.map.values()), 'back to the state before the first restore');
});

test('restore of a bigger space (merge of 6000 entities over 3 collections): preview, dry run and result agree', async () => {
  await putSpace(srv, 'rbig');
  const items = [];
  for (let i = 0; i < 6000; i++) items.push({ collection: ['a', 'b', 'c'][i % 3], id: `k${String(i).padStart(5, '0')}`, body: { i, s: 'x'.repeat(i % 50) } });
  await pushEntities(srv, 'rbig', items);
  const snapState = await liveState(srv, 'rbig');
  const m = await createSnapshot(srv, 'rbig');
  assert.equal(m.entity_total, 6000);
  // modify every 7th, delete every 11th (not both), add 500 (some in a new collection)
  const expect = { a: { added: 0, modified: 0, deleted: 0 }, b: { added: 0, modified: 0, deleted: 0 }, c: { added: 0, modified: 0, deleted: 0 }, d: { added: 0, modified: 0, deleted: 0 } };
  const edits = [];
  const dels = [];
  for (const it of items) {
    const i = it.body.i;
    if (i % 11 === 0) { dels.push(it); expect[it.collection].deleted++; } else if (i % 7 === 0) {
      edits.push({ ...it, base_rev: snapState.map.get(`${it.collection}\u0000${it.id}`).rev, body: { i, edited: true } });
      expect[it.collection].modified++;
    }
  }
  for (let j = 0; j < 500; j++) {
    const c = j % 2 ? 'a' : 'd';
    edits.push({ collection: c, id: `new${j}`, body: { j } });
    expect[c].added++;
  }
  await pushEntities(srv, 'rbig', edits);
  for (let off = 0; off < dels.length; off += 1000) {
    const changes = dels.slice(off, off + 1000).map((it) => ({ collection: it.collection, id: it.id, base_rev: snapState.map.get(`${it.collection}\u0000${it.id}`).rev, deleted: true, body: null }));
    const r = await apiOk(srv, 'POST', '/api/v1/spaces/rbig/changes', { body: { changes } }, 200);
    assert.ok(r.results.every((x) => x.status === 'applied'), JSON.stringify(r.results.find((x) => x.status !== 'applied')));
  }
  const p = await apiOk(srv, 'GET', snapPath('rbig', m.id, '/preview'), {}, 200);
  assert.deepEqual(nz(p.delta), nz(expect));
  const sum = (k) => Object.values(expect).reduce((a, d) => a + d[k], 0);
  const dry = await apiOk(srv, 'POST', snapPath('rbig', m.id, '/restore'), { body: { confirm: m.id, dry_run: true } }, 200);
  assert.deepEqual(dry.changes, { put: sum('modified') + sum('deleted'), deleted: sum('added') });
  const res = await apiOk(srv, 'POST', snapPath('rbig', m.id, '/restore'), { body: { confirm: m.id }, timeoutMs: 30000 }, 200);
  assert.deepEqual(res.changes, dry.changes, 'the restore does what the dry run said');
  const after = await liveState(srv, 'rbig');
  assert.deepEqual(contentSet(after.map.values()), contentSet(snapState.map.values()));
  const pre = await apiOk(srv, 'GET', snapPath('rbig', res.pre_restore_snapshot), {}, 200);
  assert.equal(pre.entity_total, 6000 - dels.length + 500);
});

test('restore of a corrupt file (flipped byte, truncated, trailer cut): 422 snapshot_corrupt, space untouched, no pre_restore', async () => {
  const { m } = await seedAndDiverge(srv, 'rx');
  const f = snapFile(srv.dataDir, m.id);
  const good = readFileSync(f);
  const st = await status(srv, 'rx');
  const live = await liveState(srv, 'rx');
  const list = (await listAll(srv, 'rx')).map((x) => x.id);
  const files = snapFiles(srv.dataDir).sort();
  const creates = async () => (await apiOk(srv, 'GET', '/api/v1/audit?action=snapshot.create&space=rx&limit=1000', {}, 200)).entries.length;
  const creates0 = await creates();
  const variants = {
    'flipped byte': flipByte(good),
    truncated: good.subarray(0, Math.floor(good.length / 2)),
    'trailer cut': good.subarray(0, good.length - 8),
    'one byte appended': Buffer.concat([good, Buffer.from([0])]),
  };
  const verify = () => apiOk(srv, 'POST', snapPath('rx', m.id, '/verify'), {}, 200);
  for (const [name, buf] of Object.entries(variants)) {
    // a refused restore marks the snapshot corrupt, and a snapshot so marked
    // is refused without reading the file: clear the mark with the good
    // bytes first, so each variant is caught by the restore's own check
    writeFileSync(f, good);
    assert.equal((await verify()).valid, true, `${name}: the good file verifies`);
    writeFileSync(f, buf);
    for (const body of [{ confirm: m.id }, { confirm: m.id, dry_run: false }]) {
      const r = await api(srv, 'POST', snapPath('rx', m.id, '/restore'), { body });
      checkError(assert, r, 422, 'snapshot_corrupt', `restore of a ${name} file`);
    }
    const st2 = await status(srv, 'rx');
    assert.equal(st2.server_version, st.server_version, `${name}: nothing changed`);
    assert.equal(st2.digest, st.digest, `${name}: nothing changed`);
    assert.deepEqual((await listAll(srv, 'rx')).map((x) => x.id), list, `${name}: no pre_restore snapshot taken`);
    assert.deepEqual(snapFiles(srv.dataDir).filter((n) => /\.tmp$/.test(n)), [], `${name}: no temp file left`);
    // the pre_restore snapshot ran beside the check: its file is thrown
    // away (on the pool, so shortly after the answer) and it was never
    // recorded or audited
    await until(() => snapFiles(srv.dataDir).sort().join() === files.join(),
      { timeoutMs: 3000, what: `${name}: no pre_restore file left: ${snapFiles(srv.dataDir)}` });
    assert.equal(await creates(), creates0, `${name}: no snapshot.create audited`);
  }
  assert.deepEqual([...(await liveState(srv, 'rx')).map.values()], [...live.map.values()]);
  // the good bytes back and verified again (POST .../verify clears the
  // mark): the restore goes through
  writeFileSync(f, good);
  assert.equal((await verify()).valid, true);
  const r = await api(srv, 'POST', snapPath('rx', m.id, '/restore'), { body: { confirm: m.id } });
  assert.equal(r.status, 200, r.text);
});

test('import: a downloaded file imported into another space -> 201 imported, then preview and restore reproduce the source', async () => {
  const { m } = await seedAndDiverge(srv, 'ims');
  await putSpace(srv, 'imd');
  await put(srv, 'imd', 'local', 'L1', { mine: true });       // replaced by the restore
  const gz = (await downloadGz(srv, 'ims', m.id)).body;
  await sleep(20);                                             // so the import's time differs from the capture's
  const t0 = Date.now();
  const r = await postBinary(srv, snapPath('imd', 'import'), gz);
  assert.equal(r.status, 201, r.text);
  const im = r.body;
  checkCompletedMeta(im, { space: 'imd', kind: 'imported' });
  assert.notEqual(im.id, m.id, 'an import gets its own id');
  // the capture time from the file's header, not the import's; the import's
  // in imported_at; the level is not in the format: null, not 2^64-1
  const hdr = parseSnapshot(gz).header;
  assert.equal(im.created_at, hdr.created_at, 'created_at is the header\'s');
  assert.ok(Date.parse(im.created_at) >= Date.parse(m.created_at) && Date.parse(im.created_at) <= Date.parse(m.completed_at),
    `the capture time lies within the source snapshot's run: ${im.created_at} vs ${JSON.stringify(m)}`);
  assert.ok(Date.parse(im.imported_at) >= t0 - 5 && Date.parse(im.imported_at) <= Date.now() + 5, `imported_at ${im.imported_at}`);
  assert.ok(Date.parse(im.imported_at) > Date.parse(im.created_at), 'imported after the capture');
  assert.equal(im.level, null, 'the level of an uploaded gzip file is not known');
  assert.deepEqual(await apiOk(srv, 'GET', snapPath('imd', im.id), {}, 200), im, 'GET shows the same');
  assert.deepEqual(im.entity_counts, m.entity_counts, 'entity_counts from the file header');
  assert.equal(im.entity_total, m.entity_total);
  assert.equal(im.sha256, sha256(gz));
  assert.equal(im.size_bytes, gz.length);
  if (r.headers.location !== undefined) assert.equal(r.headers.location, snapPath('imd', im.id));
  assert.deepEqual(readFileSync(snapFile(srv.dataDir, im.id)), gz, 'stored as uploaded');
  const listed = await listAll(srv, 'imd', 'kind=imported');
  assert.deepEqual(listed.map((x) => x.id), [im.id]);
  const dl = await downloadGz(srv, 'imd', im.id);
  assert.deepEqual(dl.body, gz);

  const p = await apiOk(srv, 'GET', snapPath('imd', im.id, '/preview'), {}, 200);
  const del = {};
  for (const [c, n] of Object.entries(m.entity_counts)) del[c] = { added: 0, modified: 0, deleted: n };
  assert.deepEqual(nz(p.delta), { ...del, local: { added: 1, modified: 0, deleted: 0 } });

  const res = await apiOk(srv, 'POST', snapPath('imd', im.id, '/restore'), { body: { confirm: im.id } }, 200);
  assert.deepEqual(res.changes, { put: m.entity_total, deleted: 1 });
  const want = parseSnapshot(gz).entities;
  assert.deepEqual(contentSet((await liveState(srv, 'imd')).map.values()), contentSet(want));
  // the source space is untouched
  const src = await listAll(srv, 'ims');
  assert.ok(src.every((x) => x.kind !== 'imported'));
});

/** Runs a command to its end; resolves {code, stdout, stderr}. */
function run(cmd, args, { cwd, timeoutMs = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
    p.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`${cmd} ${args.join(' ')}: no exit in ${timeoutMs} ms`)); }, timeoutMs);
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

function tmpDir(t, tag) {
  const d = mkdtempSync(path.join(os.tmpdir(), `snapsync-${tag}-`));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

// The user's way (issue 12): `curl -OJ` (identity: the server inflates) and
// `curl --compressed -OJ` (Content-Encoding: gzip, which curl decodes) both
// leave NDJSON on disk, so both must be named .ndjson, and either file must
// import back (the import tells gzip from plain NDJSON by the magic bytes).
test('curl -OJ and curl --compressed -OJ: each file is named for what it holds, imports into another instance with curl, and restores the same entities', async (t) => {
  assert.ok(haveCommand('curl'), 'curl is installed');
  const a = await withServer(t);
  const b = await withServer(t);
  await putSpace(a, 'cu');
  // about 1.5 MiB of NDJSON: the plain upload arrives, and is compressed, in many pieces
  const items = [];
  for (let i = 0; i < 3000; i++) items.push({ collection: i % 3 ? 'docs' : 'people', id: `d${i}`, body: { i, text: `text ${i} `.repeat(40), u: 'ü€\u{1F680}' } });
  await pushEntities(a, 'cu', items);
  await del(a, 'cu', 'docs', 'd1');
  const m = await createSnapshot(a, 'cu');
  const aLive = await liveState(a, 'cu');
  const stored = readFileSync(snapFile(a.dataDir, m.id));
  const ndjson = gunzipSync(stored);
  assert.ok(ndjson.length > 1024 * 1024, `${ndjson.length} bytes of NDJSON`);
  const auth = (s) => ['-H', `Authorization: Bearer ${s.adminToken}`];

  for (const [mode, flags, encoding] of [['identity', [], undefined], ['compressed', ['--compressed'], 'gzip']]) {
    const dir = tmpDir(t, `curl-${mode}`);
    const hdrFile = path.join(tmpDir(t, `curl-${mode}-h`), 'headers');
    const dl = await run('curl', ['-sS', '--fail', '-OJ', '-D', hdrFile, ...flags, ...auth(a), `${a.base}${snapPath('cu', m.id, '/download')}`], { cwd: dir });
    assert.equal(dl.code, 0, `curl ${mode}: ${dl.stderr}`);
    const heads = readFileSync(hdrFile, 'utf8').toLowerCase();
    if (encoding) assert.match(heads, /\r\ncontent-encoding: gzip\r\n/, `${mode}: the gzip representation was sent\n${heads}`);
    else assert.doesNotMatch(heads, /content-encoding/, `${mode}: the inflated representation was sent\n${heads}`);
    assert.match(heads, /\r\nvary: accept-encoding\r\n/, `${mode}: Vary\n${heads}`);
    const files = readdirSync(dir);
    assert.deepEqual(files, [`cu-${m.id}.ndjson`], `curl ${mode} -OJ saved ${files}`);
    const saved = readFileSync(path.join(dir, files[0]));
    assert.ok(!(saved[0] === 0x1f && saved[1] === 0x8b), `${mode}: the saved file is not gzip`);
    assert.deepEqual(saved, ndjson, `${mode}: the saved file is the snapshot's NDJSON`);

    // import it back with curl, into a space on another instance
    const sp = `cu-${mode}`;
    await putSpace(b, sp);
    await apiOk(b, 'PUT', ent(sp, 'local', 'L1'), { body: { replaced: true } });
    const up = await run('curl', ['-sS', '-X', 'POST', '--data-binary', `@${path.join(dir, files[0])}`, '-w', '\n%{http_code}', ...auth(b),
      `${b.base}${snapPath(sp, 'import')}`]);
    assert.equal(up.code, 0, `curl import ${mode}: ${up.stderr}`);
    const [text, code] = [up.stdout.slice(0, up.stdout.lastIndexOf('\n')), up.stdout.slice(up.stdout.lastIndexOf('\n') + 1)];
    assert.equal(code, '201', `import of the ${mode} file -> ${code} ${text}`);
    const im = JSON.parse(text);
    checkCompletedMeta(im, { space: sp, kind: 'imported' });
    assert.equal(im.created_at, parseSnapshot(stored).header.created_at, 'the capture time from the header');
    assert.deepEqual(im.entity_counts, m.entity_counts);
    assert.equal(im.raw_bytes, ndjson.length);
    assert.equal(im.level, 6, 'compressed here at --snapshot-level');
    // stored as gzip like every snapshot file; the metadata describes that file
    const f = checkFileAgainstMeta(readFileSync(snapFile(b.dataDir, im.id)), { ...im, id: m.id });
    checkEntityLines(f);
    assert.deepEqual(gunzipSync(readFileSync(snapFile(b.dataDir, im.id))), ndjson, 'the same NDJSON, compressed');
    const dlb = await downloadGz(b, sp, im.id);
    assert.equal(sha256(dlb.body), im.sha256);

    const res = await apiOk(b, 'POST', snapPath(sp, im.id, '/restore'), { body: { confirm: im.id }, timeoutMs: 30000 }, 200);
    assert.deepEqual(res.changes, { put: m.entity_total, deleted: 1 });
    assert.deepEqual(contentSet((await liveState(b, sp)).map.values()), contentSet(aLive.map.values()),
      `${mode}: the restored space holds the source's entities`);
  }
});

test('import of plain NDJSON (what a download without Accept-Encoding: gzip gives): 201, verified like a gzip file; bad plain uploads -> 422, nothing kept', async () => {
  await putSpace(srv, 'impl');
  await putSpace(srv, 'implsrc');
  for (let i = 0; i < 40; i++) await put(srv, 'implsrc', i % 2 ? 'b' : 'a', `e${i}`, { i });
  const m = await createSnapshot(srv, 'implsrc');
  const text = gunzipSync(readFileSync(snapFile(srv.dataDir, m.id)));
  const lines = text.toString('utf8').slice(0, -1).split('\n');
  const filesBefore = snapFiles(srv.dataDir);
  const bad = {
    'cut mid-line': text.subarray(0, text.length - 10),
    'without its last newline': text.subarray(0, text.length - 1),
    'a line missing': Buffer.from(`${[lines[0], ...lines.slice(2)].join('\n')}\n`),
    'one byte': Buffer.from('{'),
    'a lone 1f byte': Buffer.from([0x1f]),
    'gzip magic, then plain text': Buffer.concat([Buffer.from([0x1f, 0x8b]), text]),
  };
  for (const [name, buf] of Object.entries(bad)) {
    const r = await postBinary(srv, snapPath('impl', 'import'), buf, { headers: { 'Content-Type': 'application/x-ndjson' } });
    checkError(assert, r, 422, 'snapshot_corrupt', `import of plain NDJSON ${name}`);
  }
  assert.deepEqual(await listAll(srv, 'impl'), [], 'nothing imported');
  await until(() => snapFiles(srv.dataDir).join() === filesBefore.join(), { timeoutMs: 2000, every: 20, what: `no file left: before ${filesBefore}, now ${snapFiles(srv.dataDir)}` });

  const ok = await postBinary(srv, snapPath('impl', 'import'), text, { headers: { 'Content-Type': 'application/x-ndjson' } });
  assert.equal(ok.status, 201, ok.text);
  checkCompletedMeta(ok.body, { space: 'impl', kind: 'imported' });
  assert.equal(ok.body.entity_total, 40);
  assert.equal(ok.body.raw_bytes, text.length);
  const gz = readFileSync(snapFile(srv.dataDir, ok.body.id));
  assert.equal(sha256(gz), ok.body.sha256);
  assert.deepEqual(gunzipSync(gz), text);
  // and it restores
  const res = await apiOk(srv, 'POST', snapPath('impl', ok.body.id, '/restore'), { body: { confirm: ok.body.id } }, 200);
  assert.deepEqual(res.changes, { put: 40, deleted: 0 });
  assert.deepEqual(contentSet((await liveState(srv, 'impl')).map.values()), contentSet((await liveState(srv, 'implsrc')).map.values()));
});

test('import of bad uploads: garbage, truncated, tampered, empty -> 4xx, nothing stored, no temp file', async () => {
  await putSpace(srv, 'imbad');
  await putSpace(srv, 'imsrc');
  for (let i = 0; i < 40; i++) await put(srv, 'imsrc', i % 2 ? 'b' : 'a', `e${i}`, { i });
  const m = await createSnapshot(srv, 'imsrc');
  const gz = (await downloadGz(srv, 'imsrc', m.id)).body;
  const text = gunzipSync(gz).toString('utf8');
  const lines = text.slice(0, -1).split('\n');
  const hdr = JSON.parse(lines[0]);
  const filesBefore = snapFiles(srv.dataDir);
  const rejoin = (ls) => gzipSync(Buffer.from(`${ls.join('\n')}\n`));
  const bad = {
    garbage: Buffer.from('definitely not gzip'),
    'random bytes': Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256)),
    'flipped byte': flipByte(gz),
    truncated: gz.subarray(0, Math.floor(gz.length / 2)),
    'gzip of non-JSON': gzipSync(Buffer.from('hello\nworld\n')),
    'wrong format': rejoin([JSON.stringify({ ...hdr, format: 'something.else' }), ...lines.slice(1)]),
    'counts do not match': rejoin([JSON.stringify({ ...hdr, entity_total: hdr.entity_total + 1 }), ...lines.slice(1)]),
    'a line missing': rejoin([lines[0], ...lines.slice(2)]),
    'lines out of order': rejoin([lines[0], lines[2], lines[1], ...lines.slice(3)]),
    'an entity that is not an object': rejoin([...lines.slice(0, 3), '[1,2,3]', ...lines.slice(4)]),
    'no header': rejoin(lines.slice(1)),
    'header without created_at': rejoin([JSON.stringify({ ...hdr, created_at: undefined }), ...lines.slice(1)]),
    'header created_at not a time': rejoin([JSON.stringify({ ...hdr, created_at: 'yesterday' }), ...lines.slice(1)]),
  };
  for (const [name, buf] of Object.entries(bad)) {
    const r = await postBinary(srv, snapPath('imbad', 'import'), buf);
    checkError(assert, r, 422, 'snapshot_corrupt', `import of ${name}`);
  }
  const empty = await postBinary(srv, snapPath('imbad', 'import'), Buffer.alloc(0));
  assert.equal(empty.status, 400, `empty import -> ${empty.status} ${empty.text}`);
  assert.equal(typeof empty.body?.error, 'string');
  assert.ok((await listAll(srv, 'imbad')).every((x) => x.status !== 'completed'), 'no imported snapshot from bad uploads');
  await until(() => snapFiles(srv.dataDir).join() === filesBefore.join(), { timeoutMs: 2000, every: 20, what: `no file left by bad imports: before ${filesBefore}, now ${snapFiles(srv.dataDir)}` });
  // an untouched re-gzip of the same NDJSON is accepted (any gzip writer)
  const ok = await postBinary(srv, snapPath('imbad', 'import'), gzipSync(Buffer.from(text), { level: 1 }));
  assert.equal(ok.status, 201, ok.text);
  assert.equal(ok.body.entity_total, 40);
});

test('import of a file whose gzip trailer is cut (last 8 bytes) -> 422 snapshot_corrupt', async () => {
  await putSpace(srv, 'imtr');
  await putSpace(srv, 'imtrsrc');
  for (let i = 0; i < 40; i++) await put(srv, 'imtrsrc', 'c', `e${i}`, { i });
  const m = await createSnapshot(srv, 'imtrsrc');
  const gz = (await downloadGz(srv, 'imtrsrc', m.id)).body;
  const bad = [];
  for (const cut of [4, 8]) {
    const buf = gz.subarray(0, gz.length - cut);
    assert.throws(() => gunzipSync(buf), 'node:zlib refuses it');
    const r = await postBinary(srv, snapPath('imtr', 'import'), buf);
    if (r.status !== 422) bad.push(`cut ${cut}: ${r.status} ${r.text.slice(0, 200)}`);
  }
  assert.deepEqual(bad, [], 'an incomplete gzip stream is refused');
  assert.deepEqual((await listAll(srv, 'imtr')).filter((x) => x.status === 'completed'), []);
});

test('move a space between two servers: snapshot on A, download, import on B into a new space, restore, same entities', async (t) => {
  const a = await withServer(t);
  const b = await withServer(t);
  await putSpace(a, 'origin');
  const items = [];
  for (let i = 0; i < 1500; i++) items.push({ collection: i % 4 ? 'docs' : 'users', id: `id-${i}`, body: { i, name: `n${i}`, tags: ['a', i % 3], u: 'ü€\u{1F680}' } });
  await pushEntities(a, 'origin', items);
  for (let i = 0; i < 100; i++) await del(a, 'origin', 'docs', `id-${i * 4 + 1}`);
  const m = await createSnapshot(a, 'origin');
  assert.equal(m.entity_total, 1400);
  const gz = (await downloadGz(a, 'origin', m.id)).body;
  const aLive = await liveState(a, 'origin');

  await putSpace(b, 'moved');
  const r = await postBinary(b, snapPath('moved', 'import'), gz);
  assert.equal(r.status, 201, r.text);
  assert.equal(r.body.kind, 'imported');
  assert.equal(r.body.space, 'moved');
  assert.deepEqual(r.body.entity_counts, m.entity_counts);
  const p = await apiOk(b, 'GET', snapPath('moved', r.body.id, '/preview'), {}, 200);
  assert.deepEqual(nz(p.delta), { docs: { added: 0, modified: 0, deleted: m.entity_counts.docs }, users: { added: 0, modified: 0, deleted: m.entity_counts.users } });
  const res = await apiOk(b, 'POST', snapPath('moved', r.body.id, '/restore'), { body: { confirm: r.body.id }, timeoutMs: 30000 }, 200);
  assert.deepEqual(res.changes, { put: 1400, deleted: 0 });
  const bLive = await liveState(b, 'moved');
  assert.deepEqual(contentSet(bLive.map.values()), contentSet(aLive.map.values()), 'B\'s space holds A\'s entities');
  const stB = await status(b, 'moved');
  assert.equal(stB.entity_count, 1400);
  assert.equal(stB.server_version, res.server_version);
  // B's own snapshot of the moved space has the same content
  const mb = await createSnapshot(b, 'moved');
  const fb = checkFileAgainstMeta((await downloadGz(b, 'moved', mb.id)).body, mb);
  assert.deepEqual(contentSet(fb.entities), contentSet(parseSnapshot(gz).entities));
  assert.equal(fb.header.space, 'moved');
  assert.notEqual(fb.header.instance_id, parseSnapshot(gz).header.instance_id, 'written by another instance');
});

test('--pre-restore-level 0: the pre_restore snapshot is stored uncompressed (and restores back)', async (t) => {
  const s = await withServer(t, { args: ['--pre-restore-level', '0'] });
  await putSpace(s, 'pl');
  for (let i = 0; i < 50; i++) await put(s, 'pl', 'c', `x${i}`, { n: i, text: 'the same words again and again '.repeat(4) });
  const m = await createSnapshot(s, 'pl');
  await put(s, 'pl', 'c', 'x0', { n: -1 });
  const r = await apiOk(s, 'POST', snapPath('pl', m.id, '/restore'), { body: { confirm: m.id } }, 200);
  const pre = await apiOk(s, 'GET', snapPath('pl', r.pre_restore_snapshot), {}, 200);
  assert.equal(pre.level, 0);
  assert.ok(pre.size_bytes > pre.raw_bytes, `stored, not deflated: ${pre.size_bytes} > ${pre.raw_bytes}`);
  assert.ok(m.size_bytes < m.raw_bytes / 2, `the manual one is deflated at 6: ${m.size_bytes} of ${m.raw_bytes}`);
  const back = await apiOk(s, 'POST', snapPath('pl', pre.id, '/restore'), { body: { confirm: pre.id } }, 200);
  assert.deepEqual(back.changes, { put: 1, deleted: 0 }, 'the undo puts x0 back');
  assert.equal((await apiOk(s, 'GET', ent('pl', 'c', 'x0'), {}, 200)).body.n, -1, 'x0 as it was before the first restore');
});

test('retention: --snapshot-keep-pre-restore 2 keeps the two newest pre_restore snapshots (rows and files); manual ones stay', async (t) => {
  const s = await withServer(t, { args: ['--snapshot-keep-pre-restore', '2'] });
  await putSpace(s, 'kp');
  await put(s, 'kp', 'c', 'x', { n: 0 });
  const m = await createSnapshot(s, 'kp');
  const pres = [];
  for (let i = 1; i <= 4; i++) {
    await put(s, 'kp', 'c', 'x', { n: i });
    const r = await apiOk(s, 'POST', snapPath('kp', m.id, '/restore'), { body: { confirm: m.id } }, 200);
    pres.push(r.pre_restore_snapshot);
  }
  // retention is housekeeping after the restore: allow it a moment
  let all = await listAll(s, 'kp');
  await until(async () => {
    all = await listAll(s, 'kp');
    return all.filter((x) => x.kind === 'pre_restore').length <= 2;
  }, { timeoutMs: 2000, every: 20, what: `at most 2 pre_restore snapshots: ${JSON.stringify(all.map((x) => [x.id, x.kind]))}` }).catch(() => {});
  const pr = all.filter((x) => x.kind === 'pre_restore');
  assert.deepEqual(pr.map((x) => x.id), [pres[3], pres[2]], `the two newest pre_restore remain: ${JSON.stringify(all.map((x) => [x.id, x.kind]))}`);
  assert.ok(all.some((x) => x.id === m.id), 'the manual snapshot stays');
  // the pruned files go (maybe just after the answer)
  await until(() => ![pres[0], pres[1]].some((id) => snapFiles(s.dataDir).includes(`${id}.ndjson.gz`)),
    { timeoutMs: 2000, every: 20, what: `files of pruned ${pres[0]}, ${pres[1]} removed: ${snapFiles(s.dataDir)}` });
  const files = snapFiles(s.dataDir);
  assert.equal(files.length, all.length, `one file per snapshot: ${files}`);
  for (const x of all) assert.ok(files.includes(`${x.id}.ndjson.gz`), `file of ${x.id} kept`);
  // the kept pre_restore snapshots hold the states before their restores
  const f = parseSnapshot((await downloadGz(s, 'kp', pres[3])).body);
  assert.deepEqual(f.entities.map((e) => e.body), [{ n: 4 }]);
});

/* The restore's comparison runs as a plan on a pool thread
 * (SNAPSYNC_TEST_RESTORE_PLAN_DELAY_MS holds it back); the write transaction
 * applies the planned changes, then puts back what was written after the
 * plan's read (the writer's journal knows what it was). */
async function planServer(t, delayMs, env = {}) {
  const s = await withServer(t, { env: { SNAPSYNC_TEST_RESTORE_PLAN_DELAY_MS: String(delayMs), ...env } });
  await putSpace(s, 'rp');
  await putSpace(s, 'other');
  const items = [];
  for (let i = 0; i < 300; i++) items.push({ collection: i % 3 ? 'issues' : 'projects', id: `e${i}`, body: { i, t: `title ${i}` } });
  await pushEntities(s, 'rp', items);
  const base = await createSnapshot(s, 'rp');
  const want = contentSet((await liveState(s, 'rp')).map.values());
  // change some, delete some, add some after the snapshot
  for (let i = 0; i < 20; i++) await put(s, 'rp', 'issues', `e${3 * i + 1}`, { changed: i });
  for (let i = 0; i < 5; i++) await del(s, 'rp', 'projects', `e${30 * i}`);
  for (let i = 0; i < 7; i++) await put(s, 'rp', 'notes', `n${i}`, { n: i });
  return { s, base, want };
}

const restoreLog = (s) => s.waitForLog((o) => o.msg === 'snapshot_restore', 10000);
const leftovers = (s) => snapFiles(s.dataDir).filter((f) => !f.endsWith('.ndjson.gz'));
const planFileSeen = (s) => until(async () => snapFiles(s.dataDir).some((f) => f.endsWith('.restore-plan.tmp')), { what: 'the plan file' });

test('restore plan: other spaces write while the plan runs (the write lock is taken only to apply); the result is exactly the snapshot; the plan file is gone', async (t) => {
  const { s, base, want } = await planServer(t, 1500);
  const order = [];
  const restore = api(s, 'POST', snapPath('rp', base.id, '/restore'), { body: { confirm: base.id }, timeoutMs: 30000 })
    .then((r) => { order.push('restore'); return r; });
  await planFileSeen(s);
  const w = await put(s, 'other', 'c', 'during', { x: 1 });
  order.push('other-write');
  const r = await restore;
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(order, ['other-write', 'restore'], 'a write to another space is not held behind the plan');
  assert.deepEqual(r.body.changes, { put: 25, deleted: 7 });
  assert.deepEqual(contentSet((await liveState(s, 'rp')).map.values()), want, 'the space is exactly the snapshot');
  assert.ok(w.version > 0);
  const log = await restoreLog(s);
  assert.equal(log.planned, true);
  assert.equal(log.moved, 0);
  await until(async () => leftovers(s).length === 0, { what: 'no plan file left' });
});

test('restore plan: writes to the restored space during the plan are undone like any other change since the snapshot (one in the plan, one not)', async (t) => {
  const { s, base, want } = await planServer(t, 1200);
  const restore = api(s, 'POST', snapPath('rp', base.id, '/restore'), { body: { confirm: base.id }, timeoutMs: 30000 });
  await planFileSeen(s);
  await put(s, 'rp', 'issues', 'e1', { during: 'the plan' });       // the plan reverts e1 already
  await put(s, 'rp', 'issues', 'e2', { during: 'the plan' });       // e2 was as in the snapshot: the journal has it
  await del(s, 'rp', 'issues', 'e5');                                // also as in the snapshot: comes back
  await put(s, 'rp', 'late', 'x', { during: 'the plan' });           // not in the snapshot: deleted
  const r = await restore;
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body.changes, { put: 27, deleted: 8 });
  assert.deepEqual(contentSet((await liveState(s, 'rp')).map.values()), want);
  const log = await restoreLog(s);
  assert.equal(log.planned, true);
  assert.equal(log.moved, 4);
  await until(async () => leftovers(s).length === 0, { what: 'no plan file left' });
});

async function restoreUnderWrites(s, base) {
  let stop = false;
  let n = 0;
  const writer = (async () => {
    while (!stop) {
      await api(s, 'PUT', ent('rp', 'busy', `b${n % 40}`), { body: { n } });
      if (n % 3 === 0) await api(s, 'PUT', ent('rp', 'issues', `e${(n * 7) % 300 || 1}`), { body: { busy: n } });
      n++;
      await new Promise((res) => setTimeout(res, 20));
    }
  })();
  const r = await api(s, 'POST', snapPath('rp', base.id, '/restore'), { body: { confirm: base.id }, timeoutMs: 30000 });
  stop = true;
  await writer;
  return r;
}

/* What the restore answered is exactly the snapshot, plus what was written after it. */
async function checkRestoredAt(s, r, want) {
  const all = (await allChanges(s, 'rp', { extra: '&bodies=true' })).changes;
  const after = new Set(all.filter((e) => e.version > r.body.server_version).map((e) => `${e.collection}\u0000${e.id}`));
  // entities not written after the restore must be exactly the snapshot's
  const live = all.filter((e) => !e.deleted && !after.has(`${e.collection}\u0000${e.id}`));
  const wantUntouched = want.filter((k) => !after.has(k.split('\u0000').slice(0, 2).join('\u0000')));
  assert.deepEqual(contentSet(live), wantUntouched, 'at the restore\'s version the space was exactly the snapshot');
}

test('restore plan: a space written to all through the plan still comes out exactly as the snapshot', async (t) => {
  const { s, base, want } = await planServer(t, 800);
  const r = await restoreUnderWrites(s, base);
  assert.equal(r.status, 200, r.text);
  const log = await restoreLog(s);
  assert.equal(log.planned, true);
  assert.ok(log.moved > 0, JSON.stringify(log));
  await checkRestoredAt(s, r, want);
  await until(async () => leftovers(s).length === 0, { what: 'no plan file left' });
});

test('restore plan: past the journal cap the comparison runs inside the transaction, with the same result', async (t) => {
  const { s, base, want } = await planServer(t, 800, { SNAPSYNC_TEST_RESTORE_JOURNAL_BYTES: '100' });
  const r = await restoreUnderWrites(s, base);
  assert.equal(r.status, 200, r.text);
  const log = await restoreLog(s);
  assert.equal(log.planned, false, 'the journal overflowed');
  await checkRestoredAt(s, r, want);
  await until(async () => leftovers(s).length === 0, { what: 'no plan file left' });
});

test('import of a file whose body nests past 64 levels (no write path stores one): 422 snapshot_corrupt, as its restore would fail; 64 levels import and restore', async () => {
  // found by fuzz_snapshot: verify loaded lines with jansson (2,048 levels)
  // while the restore canonicalized bodies (64), so such an import was
  // accepted and every restore of it failed
  await putSpace(srv, 'imdeep');
  const nest = (n) => { let v = 1; for (let i = 1; i < n; i++) v = { a: v }; return { a: v }; };
  const file = (depth) => {
    const hdr = {
      format: 'snapsync.snapshot.v1', space: 'imdeep', space_uid: '01M870F4B6J2Y2BM3PJ0Q9AKFS', server_version: 1,
      created_at: '2026-11-24T14:48:26.801Z', instance_id: '01M870F3ZC31KMW6JKDKK7GMRH',
      entity_counts: { c: 1 }, entity_total: 1, snapshot: '01M870F4DE63XFXTE5Z2FKFXB5',
    };
    const ent = { collection: 'c', id: 'x', rev: '1-ab', version: 1, created_at: hdr.created_at, updated_at: hdr.created_at, deleted: false, body: nest(depth) };
    return Buffer.from(`${JSON.stringify(hdr)}\n${JSON.stringify(ent)}\n`);
  };
  const r = await postBinary(srv, snapPath('imdeep', 'import'), gzipSync(file(65)), { headers: { 'Content-Type': 'application/gzip' } });
  const body = checkError(assert, r, 422, 'snapshot_corrupt', 'import of a body nested 65 levels');
  assert.match(body.message, /line 2/);
  assert.deepEqual(await listAll(srv, 'imdeep'), [], 'nothing imported');
  const ok = await postBinary(srv, snapPath('imdeep', 'import'), gzipSync(file(64)), { headers: { 'Content-Type': 'application/gzip' } });
  assert.equal(ok.status, 201, ok.text);
  const res = await apiOk(srv, 'POST', snapPath('imdeep', ok.body.id, '/restore'), { body: { confirm: ok.body.id } }, 200);
  assert.deepEqual(res.changes, { put: 1, deleted: 0 });
});

test('restore of a v1 file (no revision history in it): the entities it puts get new revs, one generation past the current one', async () => {
  const { m } = await seedAndDiverge(srv, 'rv1');
  const before = await liveState(srv, 'rv1');
  // the snapshot as v1 wrote it: the same lines without revs and conflicts
  const f = parseSnapshot((await downloadGz(srv, 'rv1', m.id)).body);
  const lines = [JSON.stringify({ ...f.header, format: 'snapsync.snapshot.v1' })];
  for (const { revs, conflicts, ...e } of f.entities) lines.push(JSON.stringify(e));
  const imp = await postBinary(srv, snapPath('rv1', 'import'), gzipSync(Buffer.from(`${lines.join('\n')}\n`)),
    { headers: { 'Content-Type': 'application/gzip' } });
  assert.equal(imp.status, 201, imp.text);
  const dry = await apiOk(srv, 'POST', snapPath('rv1', imp.body.id, '/restore'), { body: { confirm: imp.body.id, dry_run: true } }, 200);
  assert.deepEqual(dry.changes, { put: 4, deleted: 3 });
  const res = await apiOk(srv, 'POST', snapPath('rv1', imp.body.id, '/restore'), { body: { confirm: imp.body.id } }, 200);
  assert.deepEqual(res.changes, { put: 4, deleted: 3 });
  const after = await liveState(srv, 'rv1', { allRevs: true });
  const i1Before = before.map.get('issues\u0000I1'), i1 = after.map.get('issues\u0000I1');
  assert.deepEqual(i1.body, { title: 'one' });
  assert.equal(revN(i1.rev), revN(i1Before.rev) + 1, `rev moves on: ${i1Before.rev} -> ${i1.rev}`);
  assert.notEqual(i1.rev, f.entities.find((e) => e.id === 'I1').rev, 'not the snapshot\'s old rev');
  assert.equal(i1.revs[1], i1Before.rev, 'the edit follows the current rev');
  assert.deepEqual(contentSet(after.map.values()), contentSet(f.entities));
});

test('restore of a v2 file keeps long histories and puts entities back at their revision; a peer-style all_revs read agrees with the file', async () => {
  await putSpace(srv, 'rv2');
  for (let k = 1; k <= 70; k++) await put(srv, 'rv2', 'c', 'x', { k });   // more edits than a row keeps
  await put(srv, 'rv2', 'c', 'y', { y: 1 });
  const m = await createSnapshot(srv, 'rv2');
  const f = parseSnapshot((await downloadGz(srv, 'rv2', m.id)).body);
  const fx = f.entities.find((e) => e.id === 'x');
  const want = (await liveState(srv, 'rv2', { allRevs: true })).map.get('c\u0000x');
  assert.deepEqual(fx.revs, want.revs, 'the line\'s revs = /changes?style=all_revs');
  assert.deepEqual(fx.conflicts, []);
  await put(srv, 'rv2', 'c', 'x', { k: 'later' });
  await del(srv, 'rv2', 'c', 'y');
  const res = await apiOk(srv, 'POST', snapPath('rv2', m.id, '/restore'), { body: { confirm: m.id } }, 200);
  assert.deepEqual(res.changes, { put: 2, deleted: 0 });
  const after = (await liveState(srv, 'rv2', { allRevs: true })).map;
  for (const e of f.entities) {
    const l = after.get(`c\u0000${e.id}`);
    assert.equal(l.rev, e.rev, `${e.id}: rev as in the file`);
    assert.deepEqual(l.revs, e.revs, `${e.id}: history as in the file`);
    assert.deepEqual(l.body, e.body);
    assert.ok(l.version > m.server_version, `${e.id}: a new version (the feed shows the restore)`);
  }
});
