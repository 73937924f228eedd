// bench.mjs - see run. The file is random bytes planted as a snapshot's
// file with a pending upload row: the upload streams whatever the file
// holds, and making a real 1 GiB snapshot takes minutes.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, apiOk, putSpace, sleep } from '../../tests/e2e/helpers.mjs';
import { startS3, startDav, S3_KEY_ID, S3_SECRET, DAV_USER, DAV_PASS } from '../../tests/remote/servers.mjs';

const SIZE = Number(process.env.SIZE_MB || 1024) << 20;
const RUNS = Number(process.env.RUNS || 3);
const median = (v) => { const s = [...v].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const log = (...a) => console.error(...a);

function run(cmd, args, env) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env } });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.on('exit', (status) => resolve({ status, err }));
  });
}

async function curlUpload(rs, file) {
  const t0 = process.hrtime.bigint();
  const key = `curl/${Date.now()}.bin`;
  const args = rs.kind === 's3'
    ? ['-sf', '-T', file, '--aws-sigv4', 'aws:amz:us-east-1:s3', '--user', `${S3_KEY_ID}:${S3_SECRET}`,
       '-H', 'x-amz-content-sha256: UNSIGNED-PAYLOAD', `${rs.endpoint}/${rs.bucket}/${key}`]
    : ['-sf', '-T', file, '--user', `${DAV_USER}:${DAV_PASS}`, `http://127.0.0.1:${rs.args()[1].split('@')[1].split('/')[0].split(':')[1]}/backups/${key.replace('/', '-')}`];
  const r = await run('curl', args, {});
  if (r.status !== 0) throw new Error(`curl ${r.status} ${r.err}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function snapsyncUpload(rs, dataDir, id, enc, recipient) {
  const db = path.join(dataDir, 'snapsync.db');
  const inst = spawnSync('sqlite3', [db, "SELECT value FROM meta WHERE key = 'instance_id'"], { encoding: 'utf8' }).stdout.trim();
  const prefix = rs.kind === 's3' ? 'snap' : 'backups/snap';
  const key = `${prefix}/${inst}/app/${id}.ndjson.gz${enc ? '.age' : ''}`;
  spawnSync('sqlite3', [db, `DELETE FROM snapshot_remote; INSERT INTO snapshot_remote(snapshot_id, space, kind, status, key, created_at) VALUES ('${id}', 'app', 'manual', 'pending', '${key}', 0)`]);
  const args = [...rs.args(), '--remote-kinds', 'scheduled', ...(enc ? ['--remote-encrypt-to', recipient] : [])];
  const srv = await startServer({ dataDir, args, env: rs.env });
  const base = rssOf(srv.pid);
  let peak = base;
  const timer = setInterval(() => { const r = rssOf(srv.pid); if (r > peak) peak = r; }, 50);
  const done = await srv.waitForLog((o) => o.msg === 'remote_uploaded' || o.msg === 'remote_upload_failed' || o.msg === 'remote_upload_retry', 600000);
  clearInterval(timer);
  const start = srv.logs.find((o) => o.msg === 'remote_uploads_resumed');
  await srv.stop();
  if (done.msg !== 'remote_uploaded') throw new Error(JSON.stringify(done));
  return { secs: (Date.parse(done.ts) - Date.parse(start.ts)) / 1000, rss: peak - base, peak };
}

function rssOf(pid) {
  try { return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024; } catch { return 0; }
}

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-bench-remote-'));
let srv = await startServer({ dataDir });
await putSpace(srv, 'app');
await apiOk(srv, 'PUT', '/api/v1/spaces/app/collections/c/entities/e', { body: { x: 1 } });
const snap = await apiOk(srv, 'POST', '/api/v1/spaces/app/snapshots', { body: {} }, 201);
await srv.stop();
const file = path.join(dataDir, 'snapshots', `${snap.id}.ndjson.gz`);
log(`writing ${SIZE} random bytes to the snapshot file`);
execFileSync('sh', ['-c', `head -c ${SIZE} /dev/urandom > ${file}`]);
const kdir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-bench-age-'));
execFileSync('age-keygen', ['-o', path.join(kdir, 'k')], { stdio: 'ignore' });
const recipient = /public key: (age1[0-9a-z]+)/.exec(readFileSync(path.join(kdir, 'k'), 'utf8'))[1];

const rows = [];
for (const kind of ['s3', 'dav']) {
  const rs = kind === 's3' ? await startS3() : await startDav();
  try {
    const res = { curl: [], plain: [], enc: [], rssPlain: [], rssEnc: [] };
    for (let i = 0; i < RUNS; i++) {
      res.curl.push(await curlUpload(rs, file));
      const p = await snapsyncUpload(rs, dataDir, snap.id, false, recipient);
      res.plain.push(p.secs); res.rssPlain.push(p.rss);
      const e = await snapsyncUpload(rs, dataDir, snap.id, true, recipient);
      res.enc.push(e.secs); res.rssEnc.push(e.rss);
      log(`${kind} run ${i + 1}: curl ${res.curl.at(-1).toFixed(2)} s, snapsync ${p.secs.toFixed(2)} s (+${(p.rss / 1048576).toFixed(1)} MiB), encrypted ${e.secs.toFixed(2)} s (+${(e.rss / 1048576).toFixed(1)} MiB)`);
    }
    const mb = SIZE / 1048576;
    const c = median(res.curl), p = median(res.plain), e = median(res.enc);
    rows.push(`| ${kind === 's3' ? 'S3 (s3rver + SigV4 proxy)' : 'WebDAV (Apache mod_dav + proxy)'} | ${(mb / c).toFixed(0)} | ${(mb / p).toFixed(0)} (${(c / p).toFixed(2)}×) | ${(mb / e).toFixed(0)} (${(c / e).toFixed(2)}×) | +${(median(res.rssPlain) / 1048576).toFixed(1)} / +${(median(res.rssEnc) / 1048576).toFixed(1)} |`);
  } finally {
    await rs.close();
  }
}
console.log(`\nUpload of a ${SIZE / 1048576} MiB snapshot file, median of ${RUNS} runs (MiB/s; × = curl's time / snapsync's):\n`);
console.log('| server | curl -T | snapsync | snapsync, age-encrypted | RSS growth MiB (plain / encrypted) |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(r);
spawnSync('rm', ['-rf', dataDir, kdir]);
