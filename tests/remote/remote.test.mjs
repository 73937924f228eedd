// remote.test.mjs - off-site snapshots against real servers on loopback:
// Apache mod_dav (WebDAV, Basic auth) and s3rver behind a proxy that checks
// every SigV4 signature (servers.mjs). Needs apache2, htpasswd and age
// (scripts/setup --test) and this folder's npm packages (npm ci).
//
// Run: SNAPSYNC_BIN=$PWD/build/snapsync node --test --test-concurrency=2 tests/remote/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, statSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { startServer, apiOk, api, putSpace, sleep, BIN, childEnv } from '../e2e/helpers.mjs';
import { until, snapPath } from '../e2e/snapshot_helpers.mjs';
import { startS3, startDav, sha256, S3_SECRET, DAV_PASS } from './servers.mjs';

const FAST = ['--remote-retry-ms', '100', '--remote-timeout-ms', '1500'];

async function fill(srv, space, n = 20, tag = 'v') {
  for (let i = 0; i < n; i++) {
    await apiOk(srv, 'PUT', `/api/v1/spaces/${space}/collections/docs/entities/e${i}`, { body: { i, tag, text: 'x'.repeat(100) } });
  }
}

async function waitRemote(srv, space, id, want = ['uploaded', 'failed'], timeoutMs = 20000) {
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
    const srv = await startServer({ args: [...rs.args(), ...FAST, '--snapshot-every', '1'], env: rs.env });
    t.after(() => srv.stop());
    await putSpace(srv, 'app');
    await fill(srv, 'app');
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
    await fill(srv, 'app', 1, 'changed');
    const sched = await until(async () => {
      const l = await apiOk(srv, 'GET', `${snapPath('app')}?kind=scheduled`);
      return l.snapshots.find((s) => s.remote && s.remote.status === 'uploaded');
    }, { timeoutMs: 15000, what: 'a scheduled snapshot uploaded' });
    assert.equal(sched.kind, 'scheduled');
    await apiOk(srv, 'POST', snapPath('app', man.id, '/restore'), { body: { confirm: man.id }, timeoutMs: 30000 });
    const pre = await until(async () => {
      const l = await apiOk(srv, 'GET', `${snapPath('app')}?kind=pre_restore`);
      return l.snapshots.find((s) => s.remote && s.remote.status === 'uploaded');
    }, { timeoutMs: 15000, what: 'the pre_restore snapshot uploaded' });
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
    const src = await startServer({ args: [...rs.args(), ...FAST], env: rs.env });
    t.after(() => src.stop());
    await putSpace(src, 'app');
    await fill(src, 'app', 50, 'dr');
    const snap = await apiOk(src, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
    const up = await waitRemote(src, 'app', snap.id);
    assert.equal(up.remote.status, 'uploaded');
    const want = await apiOk(src, 'GET', '/api/v1/spaces/app/sync/status');
    await src.stop();

    // the new machine: a fresh data dir, the same --remote
    const dst = await startServer({ args: [...rs.args(), ...FAST], env: rs.env });
    t.after(() => dst.stop());
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
  const srv = await startServer({ args: [...rs.args(), ...FAST, '--remote-encrypt-to', a.pub], env: rs.env });
  t.after(() => srv.stop());
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
  const noid = await startServer({ args: [...rs.args(), ...FAST], env: rs.env });
  t.after(() => noid.stop());
  await putSpace(noid, 'sec');
  const r1 = await api(noid, 'POST', snapPath('sec', '', '/import'), { body: { remote: m.remote.key } });
  assert.equal(r1.status, 400, r1.text);
  assert.match(r1.text, /remote-identity/);
  await noid.stop();
  const dst = await startServer({ args: [...rs.args(), ...FAST, '--remote-identity', a.key], env: rs.env });
  t.after(() => dst.stop());
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
  // another instance's objects in the same remote
  const other = await startServer({ args: [...rs.args(), ...FAST], env: rs.env });
  t.after(() => other.stop());
  await putSpace(other, 'app');
  await fill(other, 'app', 3);
  const os1 = await apiOk(other, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  assert.equal((await waitRemote(other, 'app', os1.id)).remote.status, 'uploaded');
  await other.stop();
  const srv = await startServer({ args: [...rs.args(), ...FAST, '--snapshot-every', '1', '--remote-keep-scheduled', '2',
    '--snapshot-keep-scheduled', '10'], env: rs.env });
  t.after(() => srv.stop());
  await putSpace(srv, 'app');
  for (let round = 0; round < 5; round++) {
    await fill(srv, 'app', 2, `r${round}`);
    await sleep(1300);
  }
  await until(async () => {
    const l = await apiOk(srv, 'GET', `${snapPath('app')}?kind=scheduled`);
    return l.snapshots.length >= 5 && l.snapshots.every((s) => s.remote === null || s.remote.status === 'uploaded') ? l : null;
  }, { timeoutMs: 20000, what: 'five scheduled snapshots settled' });
  await sleep(500);
  const list = await apiOk(srv, 'GET', '/api/v1/remote/snapshots?space=app');
  const mine = list.snapshots.filter((s) => s.kind === 'scheduled' && s.instance_id !== os1.id && s.snapshot !== os1.id);
  assert.equal(mine.length, 2, JSON.stringify(list.snapshots.map((s) => [s.kind, s.snapshot])));
  assert.ok(list.snapshots.some((s) => s.snapshot === os1.id), 'the other instance keeps its object');
  const local = await apiOk(srv, 'GET', `${snapPath('app')}?kind=scheduled`);
  assert.ok(local.snapshots.length >= 5, 'local snapshots are kept whatever remote retention does');
  const mt = await metrics(srv);
  assert.ok(metric(mt, 'snapsync_remote_deleted_total') >= 3, mt);
});

test('wrong credentials end at once with a plain message, counted, audited, no secret shown', async (t) => {
  const rs = await startS3();
  t.after(() => rs.close());
  const srv = await startServer({ args: [...rs.args(), ...FAST], env: { ...rs.env, AWS_SECRET_ACCESS_KEY: 'not-the-secret-77' } });
  t.after(() => srv.stop());
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

test('server down, 500, then back: retried and uploaded; 507 without end: failed after the attempts', async (t) => {
  const rs = await startDav();
  t.after(() => rs.close());
  const srv = await startServer({ args: [...rs.args(), ...FAST, '--remote-attempts', '4'], env: rs.env });
  t.after(() => srv.stop());
  await putSpace(srv, 'app');
  await fill(srv, 'app', 3);
  rs.faults.mode = 'down';
  const s1 = await apiOk(srv, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  await until(async () => (await apiOk(srv, 'GET', snapPath('app', s1.id))).remote?.attempts >= 2, { timeoutMs: 10000, what: 'a second attempt' });
  const mid = await apiOk(srv, 'GET', snapPath('app', s1.id));
  assert.ok(['pending', 'uploading'].includes(mid.remote.status), JSON.stringify(mid.remote));
  rs.faults.mode = { status: 500, count: 1 };
  const m1 = await waitRemote(srv, 'app', s1.id);
  assert.equal(m1.remote.status, 'uploaded', JSON.stringify(m1.remote));
  assert.ok(m1.remote.attempts >= 3, JSON.stringify(m1.remote));
  assert.ok(srv.logs.some((o) => o.msg === 'remote_upload_retry'));
  rs.faults.mode = { status: 507, count: 1000 };
  const s2 = await apiOk(srv, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  const m2 = await waitRemote(srv, 'app', s2.id, ['failed'], 20000);
  assert.equal(m2.remote.attempts, 4);
  assert.match(m2.remote.error, /507|out of space/);
  const mt = await metrics(srv);
  assert.equal(metric(mt, 'snapsync_remote_uploads_total{status="failed"}'), 1);
  assert.ok(metric(mt, 'snapsync_remote_upload_retries_total') >= 4);
});

test('a server that stalls times out and is retried; kill -9 mid-upload, then a restart uploads it', async (t) => {
  const rs = await startS3();
  t.after(() => rs.close());
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-r9-'));
  let srv = await startServer({ dataDir, args: [...rs.args(), ...FAST], env: rs.env });
  await putSpace(srv, 'app');
  await fill(srv, 'app', 3);
  rs.faults.mode = 'stall';
  const s = await apiOk(srv, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  await until(() => srv.logs.find((o) => o.msg === 'remote_upload_retry' && /did not answer|timed out|Timeout|no byte/i.test(o.error)),
    { timeoutMs: 15000, what: 'a stall timing out' });
  const m = await apiOk(srv, 'GET', snapPath('app', s.id));
  assert.ok(['pending', 'uploading'].includes(m.remote.status));
  await srv.kill9();
  // nothing complete-looking on the remote: no manifest
  assert.deepEqual((await rs.keys()).filter((k) => k.endsWith('.manifest.json')), []);
  rs.faults.mode = 'pass';
  srv = await startServer({ dataDir, args: [...rs.args(), ...FAST], env: rs.env });
  t.after(() => srv.stop());
  const m2 = await waitRemote(srv, 'app', s.id);
  assert.equal(m2.remote.status, 'uploaded', JSON.stringify(m2.remote));
  assert.ok(srv.logs.some((o) => o.msg === 'remote_uploads_resumed'));
});

test('a large snapshot streams with bounded memory (multipart on S3)', async (t) => {
  const rs = await startS3();
  t.after(() => rs.close());
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-big-'));
  let srv = await startServer({ dataDir, args: [...rs.args(), ...FAST, '--remote-kinds', 'scheduled'], env: rs.env });
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
  srv = await startServer({ dataDir, args: [...rs.args(), ...FAST, '--remote-part-size', '16MiB'], env: rs.env });
  t.after(() => srv.stop());
  const m = await waitRemote(srv, 'app', s.id, ['uploaded', 'failed'], 120000);
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
