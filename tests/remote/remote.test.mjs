// remote.test.mjs - off-site snapshots against real servers on loopback:
// Apache mod_dav (WebDAV, Basic auth) and s3rver behind a proxy that checks
// every SigV4 signature (servers.mjs). Needs apache2, htpasswd and age
// (scripts/setup --test) and this folder's npm packages (npm ci).
//
// Run: SNAPSYNC_BIN=$PWD/build/snapsync node --test --test-concurrency=2 tests/remote/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, statSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { startServer, apiOk as apiOk0, api as api0, createKey, BIN, childEnv } from '../e2e/helpers.mjs';
import { until as until0, snapPath } from '../e2e/snapshot_helpers.mjs';
import { httpSSE } from '../e2e/sse_helpers.mjs';
import { startS3, startDav, sha256, S3_SECRET, DAV_PASS } from './servers.mjs';

const FAST = ['--remote-retry-ms', '100', '--remote-timeout-ms', '1500'];

// Every wait here ends on the state that says the work is done; the
// timeouts are only there to end a test that hangs, so they are generous
// (a loaded machine, an ASan build).
const WAIT = 60000;

// A snapsync that died (a crash shows up as ECONNREFUSED or a reset in
// whatever request comes next) makes the error say so, with its stderr.
function died(srv, e) {
  if (!srv.exited || srv.stopRequested) return e;
  return new Error(`${e.message}\nsnapsync exited ${JSON.stringify(srv.exited)}; its stderr ends with:\n${srv.stderrText().slice(-6000)}`);
}
async function api(srv, ...a) {
  try { return await api0(srv, ...a); } catch (e) { throw died(srv, e); }
}
async function apiOk(srv, ...a) {
  try { return await apiOk0(srv, ...a); } catch (e) { throw died(srv, e); }
}
const putSpace = (srv, name) => apiOk(srv, 'PUT', `/api/v1/spaces/${name}`);
const until = (check, opts) => until0(check, { timeoutMs: WAIT, ...opts });

// startServer, stopped after the test; an exit other than the one asked
// for (a signal, a sanitizer's non-zero code) fails the test.
async function serve(t, opts) {
  const srv = await startServer(opts);
  t.after(async () => {
    const killed = srv.stopRequested === 'SIGKILL';
    const r = await srv.stop();
    if (!killed && (r.code !== 0 || r.signal)) {
      throw new Error(`snapsync exited ${JSON.stringify(r)}\n${srv.stderrText().slice(-6000)}`);
    }
  });
  return srv;
}

// writes n entities; resolves the last one written
async function fill(srv, space, n = 20, tag = 'v') {
  let e;
  for (let i = 0; i < n; i++) {
    e = await apiOk(srv, 'PUT', `/api/v1/spaces/${space}/collections/docs/entities/e${i}`, { body: { i, tag, text: 'x'.repeat(100) } });
  }
  return e;
}

// the scheduled snapshot that holds version v, uploaded: after it, with no
// write, the schedule (--snapshot-every) takes none, so a manual snapshot or
// a restore does not meet a running one (409)
function scheduledUploaded(srv, space, v) {
  return until(async () => (await apiOk(srv, 'GET', `${snapPath(space)}?kind=scheduled`)).snapshots
    .find((s) => s.server_version >= v && s.remote && s.remote.status === 'uploaded'), { what: `a scheduled snapshot of version ${v} uploaded` });
}

async function waitRemote(srv, space, id, want = ['uploaded', 'failed'], timeoutMs = WAIT) {
  return until(async () => {
    const m = await apiOk(srv, 'GET', snapPath(space, id));
    return m.remote && want.includes(m.remote.status) ? m : null;
  }, { timeoutMs, what: `remote status ${want} of ${id}` });
}

function metric(text, name) {
  const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

async function metrics(srv) { return (await api(srv, 'GET', '/metrics')).text; }

function allText(srv) { return srv.logs.map((o) => JSON.stringify(o)).join('\n'); }

// the storage servers run in this process: a child that talks to them must
// not block it (no spawnSync)
function run(cmd, args, env) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

function ageKeypair() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-age-'));
  const key = path.join(dir, 'key.txt');
  execFileSync('age-keygen', ['-o', key], { stdio: 'ignore' });
  const pub = /public key: (age1[0-9a-z]+)/.exec(readFileSync(key, 'utf8'))[1];
  return { key, pub, dir };
}

for (const kind of ['s3', 'dav']) {
  const start = kind === 's3' ? startS3 : startDav;

  test(`${kind}: every kind uploads, with its manifest; metadata, events, metrics and audit say so`, async (t) => {
    const rs = await start();
    t.after(() => rs.close());
    const srv = await serve(t, { args: [...rs.args(), ...FAST, '--snapshot-every', '1'], env: rs.env });
    await putSpace(srv, 'app');
    const last = await fill(srv, 'app');
    await scheduledUploaded(srv, 'app', last.version);
    const man = await apiOk(srv, 'POST', snapPath('app'), { body: { note: 'by hand' }, timeoutMs: 30000 }, 201);
    const m = await waitRemote(srv, 'app', man.id);
    assert.equal(m.remote.status, 'uploaded', JSON.stringify(m.remote));
    assert.equal(m.remote.attempts, 1);
    assert.match(m.remote.uploaded_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const inst = (await apiOk(srv, 'GET', '/api/v1/status')).instance_id || m.remote.key.split('/').at(-3);
    assert.ok(m.remote.key.endsWith(`/${inst}/app/${man.id}.ndjson.gz`), m.remote.key);
    // the object is the local file, byte for byte
    const local = readFileSync(path.join(srv.dataDir, 'snapshots', `${man.id}.ndjson.gz`));
    const remote = await rs.get(m.remote.key);
    assert.ok(remote && local.equals(remote), 'remote object equals the snapshot file');
    const manifest = JSON.parse((await rs.get(m.remote.key.replace('.ndjson.gz', '.manifest.json'))).toString());
    assert.equal(manifest.object_sha256, sha256(remote));
    assert.equal(manifest.meta.sha256, man.sha256);
    assert.equal(manifest.encrypted, false);
    // a scheduled one (the schedule runs every second for a space that
    // changed since its last snapshot) and a pre_restore one
    const changed = await fill(srv, 'app', 1, 'changed');
    const sched = await scheduledUploaded(srv, 'app', changed.version);
    assert.equal(sched.kind, 'scheduled');
    await apiOk(srv, 'POST', snapPath('app', man.id, '/restore'), { body: { confirm: man.id }, timeoutMs: 30000 });
    const pre = await until(async () => {
      const l = await apiOk(srv, 'GET', `${snapPath('app')}?kind=pre_restore`);
      return l.snapshots.find((s) => s.remote && s.remote.status === 'uploaded');
    }, { what: 'the pre_restore snapshot uploaded' });
    assert.equal(pre.kind, 'pre_restore');
    // listing from the manifests
    const list = await apiOk(srv, 'GET', '/api/v1/remote/snapshots?space=app');
    const kinds = new Set(list.snapshots.map((s) => s.kind));
    assert.deepEqual([...kinds].sort(), ['manual', 'pre_restore', 'scheduled']);
    assert.ok(list.snapshots.every((s) => s.instance_id === inst && s.space === 'app'));
    const mt = await metrics(srv);
    assert.ok(metric(mt, 'snapsync_remote_uploads_total{status="uploaded"}') >= 3, mt);
    assert.equal(metric(mt, 'snapsync_remote_uploads_total{status="failed"}'), 0);
    assert.ok(metric(mt, 'snapsync_remote_last_upload_timestamp_seconds') > 0);
    const audit = await apiOk(srv, 'GET', '/api/v1/audit?action=snapshot.remote_upload');
    assert.ok(audit.entries.some((e) => e.target === man.id), JSON.stringify(audit).slice(0, 500));
    // no secret anywhere
    const secret = kind === 's3' ? S3_SECRET + ':' : DAV_PASS;
    assert.ok(!allText(srv).includes(DAV_PASS));
    assert.ok(!JSON.stringify(list).includes(secret) && !JSON.stringify(audit).includes(DAV_PASS));
  });

  test(`${kind}: disaster recovery into a fresh instance (list, import, restore: same digest; CLI list and fetch)`, async (t) => {
    const rs = await start();
    t.after(() => rs.close());
    const src = await serve(t, { args: [...rs.args(), ...FAST], env: rs.env });
    await putSpace(src, 'app');
    await fill(src, 'app', 50, 'dr');
    const snap = await apiOk(src, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
    const up = await waitRemote(src, 'app', snap.id);
    assert.equal(up.remote.status, 'uploaded');
    const want = await apiOk(src, 'GET', '/api/v1/spaces/app/sync/status');
    await src.stop();

    // the new machine: a fresh data dir, the same --remote
    const dst = await serve(t, { args: [...rs.args(), ...FAST], env: rs.env });
    const list = await apiOk(dst, 'GET', '/api/v1/remote/snapshots?space=app');
    const entry = list.snapshots.find((s) => s.snapshot === snap.id);
    assert.ok(entry, JSON.stringify(list));
    await putSpace(dst, 'app');
    const imp = await apiOk(dst, 'POST', snapPath('app', '', '/import'), { body: { remote: entry.key }, timeoutMs: 30000 }, 201);
    assert.equal(imp.kind, 'imported');
    assert.equal(imp.sha256, snap.sha256);
    const pv = await apiOk(dst, 'GET', snapPath('app', imp.id, '/preview'));
    assert.ok(pv, 'preview answers');
    await apiOk(dst, 'POST', snapPath('app', imp.id, '/restore'), { body: { confirm: imp.id }, timeoutMs: 30000 });
    const got = await apiOk(dst, 'GET', '/api/v1/spaces/app/sync/status');
    assert.equal(got.digest, want.digest);
    assert.equal(got.entity_count, want.entity_count);

    // without a server: the CLI lists and fetches
    const env = childEnv(rs.env);
    const cli = await run(BIN, ['remote', 'list', '--space', 'app', ...rs.args()], env);
    assert.equal(cli.status, 0, cli.stderr);
    assert.ok(JSON.parse(cli.stdout).snapshots.some((s) => s.key === entry.key));
    const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'snapsync-fetch-')), 'f.ndjson.gz');
    const f = await run(BIN, ['remote', 'fetch', entry.key, '-o', out, ...rs.args()], env);
    assert.equal(f.status, 0, f.stderr);
    assert.equal(sha256(readFileSync(out)), snap.sha256);
    const v = spawnSync(BIN, ['verify', out], { encoding: 'utf8' });
    assert.equal(v.status, 0, v.stderr);
    // a key that is not there
    const nf = await api(dst, 'POST', snapPath('app', '', '/import'), { body: { remote: entry.key.replace(snap.id, '01J00000000000000000000000') } });
    assert.equal(nf.status, 404, nf.text);
  });
}

test('encryption: the age CLI decrypts the object; import needs the identity; a tampered object is refused with 422', async (t) => {
  const rs = await startS3();
  t.after(() => rs.close());
  const a = ageKeypair();
  const srv = await serve(t, { args: [...rs.args(), ...FAST, '--remote-encrypt-to', a.pub], env: rs.env });
  await putSpace(srv, 'sec');
  await fill(srv, 'sec', 30, 'secret-text');
  const snap = await apiOk(srv, 'POST', snapPath('sec'), { body: { note: 'private note' }, timeoutMs: 30000 }, 201);
  const m = await waitRemote(srv, 'sec', snap.id);
  assert.equal(m.remote.status, 'uploaded', JSON.stringify(m.remote));
  assert.ok(m.remote.key.endsWith('.ndjson.gz.age'));
  const obj = await rs.get(m.remote.key);
  assert.ok(obj.subarray(0, 22).toString() === 'age-encryption.org/v1\n');
  assert.ok(!obj.includes(Buffer.from('secret-text')));
  // age -d -i key.txt F | gunzip | jq
  const encFile = path.join(a.dir, 'obj.age');
  writeFileSync(encFile, obj);
  const pipe = spawnSync('sh', ['-c', `age -d -i ${a.key} ${encFile} | gunzip | jq -c .`], { encoding: 'utf8' });
  assert.equal(pipe.status, 0, pipe.stderr);
  const lines = pipe.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines[0].snapshot, snap.id);
  assert.equal(lines.length, 31);
  const plain = spawnSync('age', ['-d', '-i', a.key, encFile]);
  assert.equal(sha256(plain.stdout), snap.sha256);
  // the manifest: listing fields in clear, the rest sealed
  const mkey = m.remote.key.replace('.ndjson.gz.age', '.manifest.json');
  const manText = (await rs.get(mkey)).toString();
  const man = JSON.parse(manText);
  assert.equal(man.encrypted, true);
  assert.equal(man.meta, undefined);
  assert.ok(!manText.includes('private note') && !manText.includes(snap.sha256));
  const sealed = spawnSync('age', ['-d', '-i', a.key], { input: Buffer.from(man.sealed_meta, 'base64') });
  assert.equal(sealed.status, 0);
  assert.equal(JSON.parse(sealed.stdout.toString()).sha256, snap.sha256);
  await srv.stop();

  // a new machine without the identity: refused; with it: imported
  const noid = await serve(t, { args: [...rs.args(), ...FAST], env: rs.env });
  await putSpace(noid, 'sec');
  const r1 = await api(noid, 'POST', snapPath('sec', '', '/import'), { body: { remote: m.remote.key } });
  assert.equal(r1.status, 400, r1.text);
  assert.match(r1.text, /remote-identity/);
  await noid.stop();
  const dst = await serve(t, { args: [...rs.args(), ...FAST, '--remote-identity', a.key], env: rs.env });
  await putSpace(dst, 'sec');
  const imp = await apiOk(dst, 'POST', snapPath('sec', '', '/import'), { body: { remote: m.remote.key }, timeoutMs: 30000 }, 201);
  assert.equal(imp.sha256, snap.sha256);
  // one flipped byte in the payload: 422, nothing new in the space
  const bad = Buffer.from(obj);
  bad[bad.length - 100] ^= 1;
  await rs.put(m.remote.key, bad);
  const before = (await apiOk(dst, 'GET', snapPath('sec'))).snapshots.length;
  const r2 = await api(dst, 'POST', snapPath('sec', '', '/import'), { body: { remote: m.remote.key }, timeoutMs: 30000 });
  assert.equal(r2.status, 422, r2.text);
  assert.match(r2.text, /snapshot_corrupt/);
  assert.equal((await apiOk(dst, 'GET', snapPath('sec'))).snapshots.length, before);
  const left = spawnSync('sh', ['-c', `ls ${dst.dataDir}/snapshots | grep -c tmp || true`], { encoding: 'utf8' });
  assert.equal(left.stdout.trim(), '0');
});

test('remote retention keeps N per kind and touches only its own instance', async (t) => {
  const rs = await startDav();
  t.after(() => rs.close());
  // another instance's objects in the same remote: a manual one and a
  // scheduled one (retention of scheduled objects must leave it alone)
  const other = await serve(t, { args: [...rs.args(), ...FAST, '--snapshot-every', '1'], env: rs.env });
  await putSpace(other, 'app');
  const oe = await apiOk(other, 'PUT', '/api/v1/spaces/app/collections/docs/entities/o', { body: { other: true } });
  const os2 = await until(async () => (await apiOk(other, 'GET', `${snapPath('app')}?kind=scheduled`)).snapshots
    .find((x) => x.status === 'completed' && x.server_version >= oe.version), { what: "the other instance's scheduled snapshot" });
  assert.equal((await waitRemote(other, 'app', os2.id)).remote.status, 'uploaded');
  const os1 = await apiOk(other, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  assert.equal((await waitRemote(other, 'app', os1.id)).remote.status, 'uploaded');
  const otherInst = (await apiOk(other, 'GET', '/api/v1/status')).instance_id;
  await other.stop();

  const srv = await serve(t, { args: [...rs.args(), ...FAST, '--snapshot-every', '1', '--remote-keep-scheduled', '2',
    '--snapshot-keep-scheduled', '10'], env: rs.env });
  const inst = (await apiOk(srv, 'GET', '/api/v1/status')).instance_id;
  assert.ok(inst && otherInst && inst !== otherInst);
  await putSpace(srv, 'app');
  // five scheduled snapshots, exactly: one write, then the scheduled
  // snapshot that holds it, before the next write
  const ids = [];
  for (let round = 0; round < 5; round++) {
    const e = await apiOk(srv, 'PUT', `/api/v1/spaces/app/collections/docs/entities/r${round}`, { body: { round } });
    const snap = await until(async () => (await apiOk(srv, 'GET', `${snapPath('app')}?kind=scheduled`)).snapshots
      .find((x) => x.status === 'completed' && x.server_version >= e.version), { what: `the scheduled snapshot of round ${round}` });
    ids.push(snap.id);
  }
  assert.equal(new Set(ids).size, 5);
  const sched = (await apiOk(srv, 'GET', `${snapPath('app')}?kind=scheduled`)).snapshots;
  assert.deepEqual(sched.map((x) => x.id).sort(), [...ids].sort(), 'no other scheduled snapshot');
  // retention runs after each upload, once its row is committed: the fifth
  // upload's pass ends with 5 - 2 = 3 objects deleted, and not before the
  // upload of the fifth (a pass after the k-th upload can delete k - 2 at most)
  await until(async () => metric(await metrics(srv), 'snapsync_remote_deleted_total') >= 3, { what: 'three remote deletions' });
  for (const id of ids.slice(3)) assert.equal((await waitRemote(srv, 'app', id)).remote.status, 'uploaded');
  const list = await apiOk(srv, 'GET', '/api/v1/remote/snapshots?space=app');
  const mine = list.snapshots.filter((s) => s.kind === 'scheduled' && s.instance_id === inst);
  assert.deepEqual(mine.map((s) => s.snapshot).sort(), ids.slice(3).sort(), JSON.stringify(list.snapshots.map((s) => [s.kind, s.snapshot])));
  assert.ok(list.snapshots.some((s) => s.snapshot === os1.id), "the other instance's manual object stays");
  assert.ok(list.snapshots.some((s) => s.snapshot === os2.id), "the other instance's scheduled object stays");
  // the deleted ones are gone from the remote, file and manifest
  const keys = await rs.keys();
  for (const id of ids.slice(0, 3)) assert.ok(!keys.some((k) => k.includes(id)), `${id} left on the remote: ${keys}`);
  const local = await apiOk(srv, 'GET', `${snapPath('app')}?kind=scheduled`);
  assert.equal(local.snapshots.length, 5, 'local snapshots are kept whatever remote retention does');
  const mt = await metrics(srv);
  assert.equal(metric(mt, 'snapsync_remote_deleted_total'), 3, mt);
  // each deletion is audited, and the local row forgets the remote copy
  const audit = await until(async () => {
    const a = await apiOk(srv, 'GET', '/api/v1/audit?action=snapshot.remote_delete');
    return a.entries.length >= 3 ? a : null;
  }, { what: 'three snapshot.remote_delete audit entries' });
  assert.deepEqual(audit.entries.map((e) => e.target).sort(), ids.slice(0, 3).sort());
  const gone = await until(async () => {
    const l = await apiOk(srv, 'GET', `${snapPath('app')}?kind=scheduled`);
    return l.snapshots.filter((x) => x.remote === null).length === 3 ? l : null;
  }, { what: 'the deleted copies forgotten locally' });
  assert.deepEqual(gone.snapshots.filter((x) => x.remote).map((x) => x.id).sort(), ids.slice(3).sort());
});

test('wrong credentials end at once with a plain message, counted, audited, no secret shown', async (t) => {
  const rs = await startS3();
  t.after(() => rs.close());
  const srv = await serve(t, { args: [...rs.args(), ...FAST], env: { ...rs.env, AWS_SECRET_ACCESS_KEY: 'not-the-secret-77' } });
  await putSpace(srv, 'app');
  await fill(srv, 'app', 2);
  const s = await apiOk(srv, 'POST', snapPath('app'), { body: {} , timeoutMs: 30000 }, 201);
  const m = await waitRemote(srv, 'app', s.id);
  assert.equal(m.remote.status, 'failed');
  assert.equal(m.remote.attempts, 1);
  assert.match(m.remote.error, /403/);
  const mt = await metrics(srv);
  assert.equal(metric(mt, 'snapsync_remote_uploads_total{status="failed"}'), 1);
  const audit = await apiOk(srv, 'GET', '/api/v1/audit?action=snapshot.remote_upload');
  assert.ok(audit.entries.some((e) => e.target === s.id && JSON.stringify(e).includes('failed')));
  assert.ok(srv.logs.some((o) => o.msg === 'remote_upload_failed' && o.snapshot === s.id));
  assert.ok(!allText(srv).includes('not-the-secret-77'));
  assert.ok(!JSON.stringify(m).includes('not-the-secret-77') && !mt.includes('not-the-secret-77'));
  assert.ok(existsSync(path.join(srv.dataDir, 'snapshots', `${s.id}.ndjson.gz`)), 'the local file stays');
});

test('server down, 500, then back: retried and uploaded; 507 without end: failed after the attempts; then retried by an operator', async (t) => {
  const rs = await startDav();
  t.after(() => rs.close());
  const srv = await serve(t, { args: [...rs.args(), ...FAST, '--remote-attempts', '4'], env: rs.env });
  await putSpace(srv, 'app');
  await fill(srv, 'app', 3);
  // attempts 1 and 2: the connection reset (no connection open yet, so
  // libcurl cannot retry on its own); attempt 3: 500; attempt 4: through
  rs.faults.mode = ['down', 'down', 500];
  const s1 = await apiOk(srv, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  const m1 = await waitRemote(srv, 'app', s1.id);
  assert.equal(m1.remote.status, 'uploaded', JSON.stringify(m1.remote));
  assert.equal(m1.remote.attempts, 4, JSON.stringify(m1.remote));
  const retries = srv.logs.filter((o) => o.msg === 'remote_upload_retry' && o.snapshot === s1.id);
  assert.deepEqual(retries.map((o) => o.attempt), [1, 2, 3]);
  assert.match(retries[2].error, /500/);
  assert.ok(!/500/.test(retries[0].error), retries[0].error);
  rs.faults.mode = { status: 507, count: 1000 };
  const s2 = await apiOk(srv, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  const m2 = await waitRemote(srv, 'app', s2.id, ['failed']);
  assert.equal(m2.remote.attempts, 4);
  assert.match(m2.remote.error, /507|out of space/);
  const mt = await metrics(srv);
  assert.equal(metric(mt, 'snapsync_remote_uploads_total{status="failed"}'), 1);
  assert.equal(metric(mt, 'snapsync_remote_uploads_total{status="uploaded"}'), 1);
  assert.equal(metric(mt, 'snapsync_remote_upload_retries_total'), 6, mt);

  // the cause fixed, an operator queues the failed one again: all its
  // attempts back, audited; a reader may not; only a failed one
  rs.faults.mode = 'pass';
  const op = await createKey(srv, 'operator', ['app']);
  const rd = await createKey(srv, 'reader', ['app']);
  const retry = snapPath('app', s2.id, '/remote/retry');
  const denied = await api(srv, 'POST', retry, { token: rd.token });
  assert.equal(denied.status, 403, denied.text);
  const rr = await apiOk(srv, 'POST', retry, { token: op.token }, 202);
  assert.deepEqual(rr, { snapshot: s2.id, remote: { status: 'pending', key: m2.remote.key, attempts: 0, error: null } });
  const m3 = await waitRemote(srv, 'app', s2.id);
  assert.equal(m3.remote.status, 'uploaded', JSON.stringify(m3.remote));
  assert.equal(m3.remote.attempts, 1);
  assert.equal(m3.remote.error, null);
  assert.ok(await rs.get(m3.remote.key.replace('.ndjson.gz', '.manifest.json')), 'the manifest is there');
  const again = await api(srv, 'POST', retry, { token: op.token });
  assert.equal(again.status, 409, again.text);
  assert.match(again.text, /remote_not_failed/);
  const none = await api(srv, 'POST', snapPath('app', '01J00000000000000000000000', '/remote/retry'));
  assert.equal(none.status, 404, none.text);
  const audit = await apiOk(srv, 'GET', '/api/v1/audit?action=snapshot.remote_retry');
  assert.deepEqual(audit.entries.map((e) => [e.target, e.actor, e.space, e.meta]), [[s2.id, op.id, 'app', { key: m2.remote.key }]]);
  const mt2 = await metrics(srv);
  assert.equal(metric(mt2, 'snapsync_remote_uploads_total{status="uploaded"}'), 2);
  // without --remote
  const plain = await serve(t, {});
  await putSpace(plain, 'app');
  const nr = await api(plain, 'POST', snapPath('app', s2.id, '/remote/retry'));
  assert.equal(nr.status, 409, nr.text);
  assert.match(nr.text, /remote_not_configured/);
});

test('SSE: an upload\'s steps arrive on /api/v1/events as snapshot events (pending, uploading with progress, uploaded; failed)', async (t) => {
  const rs = await startDav();
  t.after(() => rs.close());
  const srv = await serve(t, { args: [...rs.args(), ...FAST, '--remote-attempts', '3'], env: rs.env });
  await putSpace(srv, 'app');
  // about 3 MiB of gzip (random text does not compress much): enough
  // reads for progress events at tenths of the bytes
  for (let i = 0; i < 40; i++) {
    await apiOk(srv, 'PUT', `/api/v1/spaces/app/collections/docs/entities/big${i}`, { body: { blob: randomBytes(75000).toString('base64') } });
  }
  const sse = await httpSSE(srv.port, '/api/v1/events?spaces=app&topics=snapshot', { token: srv.adminToken, keepText: false });
  t.after(() => sse.close());
  assert.equal(sse.status, 200);
  const remoteOf = (id) => sse.events.filter((e) => e.event === 'snapshot' && e.json?.snapshot === id && e.json.remote).map((e) => e.json);
  const collapse = (v) => v.filter((x, i) => i === 0 || x !== v[i - 1]);

  // one 500 (the first MKCOL of attempt 1), then through
  rs.faults.mode = [500];
  const s1 = await apiOk(srv, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  const ev1 = await sse.waitFor(() => { const v = remoteOf(s1.id); return v.some((e) => e.remote.status === 'uploaded') ? v : undefined; },
    WAIT, `the uploaded event of ${s1.id}`);
  const m1 = await apiOk(srv, 'GET', snapPath('app', s1.id));
  assert.equal(m1.remote.status, 'uploaded');
  const size = m1.remote && (await rs.get(m1.remote.key)).length;
  assert.ok(size > 2 << 20, `object of ${size} bytes`);
  for (const e of ev1) {
    assert.deepEqual(Object.keys(e).sort(), ['kind', 'remote', 'snapshot', 'space', 'status']);
    assert.deepEqual(Object.keys(e.remote).sort(), ['attempts', 'bytes_sent', 'bytes_total', 'error', 'key', 'status']);
    assert.equal(e.space, 'app');
    assert.equal(e.kind, 'manual');
    assert.equal(e.status, 'completed');
    assert.equal(e.remote.key, m1.remote.key);
  }
  assert.deepEqual(collapse(ev1.map((e) => e.remote.status)), ['pending', 'uploading', 'pending', 'uploading', 'uploaded'],
    JSON.stringify(ev1.map((e) => e.remote)));
  assert.equal(ev1[0].remote.attempts, 0);
  const retry = ev1.find((e) => e.remote.status === 'pending' && e.remote.attempts === 1);
  assert.match(retry.remote.error, /500/);
  const up2 = ev1.filter((e) => e.remote.status === 'uploading' && e.remote.attempts === 2);
  const progress = up2.filter((e) => e.remote.bytes_sent > 0);
  assert.ok(progress.length >= 3, JSON.stringify(up2.map((e) => e.remote)));
  for (let i = 0; i < progress.length; i++) {
    assert.equal(progress[i].remote.bytes_total, size);
    assert.ok(progress[i].remote.bytes_sent < size);
    if (i) assert.ok(progress[i].remote.bytes_sent > progress[i - 1].remote.bytes_sent);
    assert.equal(progress[i].remote.error, null);
  }
  const done = ev1.at(-1).remote;
  assert.deepEqual(done, { status: 'uploaded', key: m1.remote.key, attempts: 2, error: null, bytes_sent: size, bytes_total: size });

  // 507 on every attempt: failed after the third, with the error
  rs.faults.mode = { status: 507, count: 1000 };
  const s2 = await apiOk(srv, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  const ev2 = await sse.waitFor(() => { const v = remoteOf(s2.id); return v.some((e) => e.remote.status === 'failed') ? v : undefined; },
    WAIT, `the failed event of ${s2.id}`);
  assert.deepEqual(collapse(ev2.map((e) => e.remote.status)),
    ['pending', 'uploading', 'pending', 'uploading', 'pending', 'uploading', 'failed'], JSON.stringify(ev2.map((e) => e.remote)));
  const fail = ev2.at(-1).remote;
  assert.equal(fail.attempts, 3);
  assert.match(fail.error, /507|out of space/);
  assert.equal(fail.bytes_sent, 0);
  const m2 = await apiOk(srv, 'GET', snapPath('app', s2.id));
  assert.equal(m2.remote.status, 'failed');
  assert.equal(m2.remote.error, fail.error);
});

test('a server that stalls times out and is retried; kill -9 mid-upload, then a restart uploads it', async (t) => {
  const rs = await startS3();
  t.after(() => rs.close());
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-r9-'));
  let srv = await serve(t, { dataDir, args: [...rs.args(), ...FAST], env: rs.env });
  await putSpace(srv, 'app');
  await fill(srv, 'app', 3);
  rs.faults.mode = 'stall';
  const s = await apiOk(srv, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  await until(() => srv.logs.find((o) => o.msg === 'remote_upload_retry' && /did not answer|timed out|Timeout|no byte/i.test(o.error)),
    { what: 'a stall timing out' });
  const m = await apiOk(srv, 'GET', snapPath('app', s.id));
  assert.ok(['pending', 'uploading'].includes(m.remote.status));
  await srv.kill9();
  // nothing complete-looking on the remote: no manifest
  assert.deepEqual((await rs.keys()).filter((k) => k.endsWith('.manifest.json')), []);
  rs.faults.mode = 'pass';
  srv = await serve(t, { dataDir, args: [...rs.args(), ...FAST], env: rs.env });
  const m2 = await waitRemote(srv, 'app', s.id);
  assert.equal(m2.remote.status, 'uploaded', JSON.stringify(m2.remote));
  assert.ok(srv.logs.some((o) => o.msg === 'remote_uploads_resumed'));
});

test('a large snapshot streams with bounded memory (multipart on S3)', async (t) => {
  const rs = await startS3();
  t.after(() => rs.close());
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-big-'));
  let srv = await serve(t, { dataDir, args: [...rs.args(), ...FAST, '--remote-kinds', 'scheduled'], env: rs.env });
  await putSpace(srv, 'app');
  await fill(srv, 'app', 2);
  const s = await apiOk(srv, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  await srv.stop();
  // the upload streams whatever the file holds: 192 MiB of random bytes
  // stand in for a large snapshot (a real one that size takes minutes to
  // make), queued as a pending upload of that snapshot
  const SIZE = 192 << 20;
  const file = path.join(dataDir, 'snapshots', `${s.id}.ndjson.gz`);
  spawnSync('sh', ['-c', `head -c ${SIZE} /dev/urandom > ${file}`]);
  assert.equal(statSync(file).size, SIZE);
  const inst = spawnSync('sqlite3', [path.join(dataDir, 'snapsync.db'), 'SELECT value FROM meta WHERE key = \'instance_id\''], { encoding: 'utf8' }).stdout.trim();
  const key = `snap/${inst}/app/${s.id}.ndjson.gz`;
  const q = spawnSync('sqlite3', [path.join(dataDir, 'snapsync.db'),
    `INSERT INTO snapshot_remote(snapshot_id, space, kind, status, key, created_at) VALUES ('${s.id}', 'app', 'manual', 'pending', '${key}', 0)`], { encoding: 'utf8' });
  assert.equal(q.status, 0, q.stderr);
  srv = await serve(t, { dataDir, args: [...rs.args(), ...FAST, '--remote-part-size', '16MiB'], env: rs.env });
  const m = await waitRemote(srv, 'app', s.id, ['uploaded', 'failed'], 4 * WAIT);
  assert.equal(m.remote.status, 'uploaded', JSON.stringify(m.remote));
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${srv.proc.pid}/status`, 'utf8'))[1]) * 1024;
  // ASan's shadow memory and quarantine (freed blocks held back) add tens
  // of MiB that have nothing to do with the upload: there the bound is
  // only "well below the file"
  const asan = /asan/.test(spawnSync('ldd', [BIN], { encoding: 'utf8' }).stdout);
  assert.ok(hwm < (asan ? SIZE * 0.7 : 64 << 20), `peak RSS ${hwm} bytes for a ${SIZE}-byte upload`);
  const obj = await rs.get(key);
  assert.equal(obj.length, SIZE);
  assert.equal(sha256(obj), sha256(readFileSync(file)));
  assert.ok(rs.faults.seen.some((l) => /partNumber=12&/.test(l)), 'uploaded in 12 parts');
});
