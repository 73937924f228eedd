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
const PART = 16 << 20;                       // snapsync's default --remote-part-size
// which comparisons: 'default' (snapsync as configured by default against
// curl -T, S3 and WebDAV, plain and encrypted) and 'shape' (S3 at equal
// request shape: one PUT against curl -T, and a multipart upload against
// curl making the same multipart calls)
const MODES = (process.env.MODES || 'default,shape').split(',');
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

// curl doing what snapsync does for a multipart upload: create, each part
// in turn (one curl, one connection), complete. The parts are cut from the
// file beforehand (split), outside the timing.
async function curlMultipart(rs, partFiles) {
  const key = `curlmp/${Date.now()}.bin`;
  const url = `${rs.endpoint}/${rs.bucket}/${key}`;
  const sig = ['--aws-sigv4', 'aws:amz:us-east-1:s3', '--user', `${S3_KEY_ID}:${S3_SECRET}`, '-H', 'x-amz-content-sha256: UNSIGNED-PAYLOAD'];
  const t0 = process.hrtime.bigint();
  const c = await runOut('curl', ['-sf', '-X', 'POST', ...sig, `${url}?uploads=`]);
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(c.out)?.[1];
  if (c.status !== 0 || !uploadId) throw new Error(`create: curl ${c.status} ${c.err} ${c.out}`);
  const args = ['-sf', ...sig, '-w', '%header{etag}\\n'];
  partFiles.forEach((f, i) => args.push('-o', '/dev/null', '-T', f, `${url}?partNumber=${i + 1}&uploadId=${encodeURIComponent(uploadId)}`));
  const p = await runOut('curl', args);
  const etags = p.out.trim().split('\n');
  if (p.status !== 0 || etags.length !== partFiles.length) throw new Error(`parts: curl ${p.status} ${p.err} ${p.out.slice(0, 300)}`);
  const body = `<CompleteMultipartUpload>${etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${e}</ETag></Part>`).join('')}</CompleteMultipartUpload>`;
  const d = await runOut('curl', ['-sf', '-X', 'POST', ...sig, '-H', 'Content-Type: application/xml', '--data-binary', body,
    `${url}?uploadId=${encodeURIComponent(uploadId)}`]);
  if (d.status !== 0 || /<Error>/.test(d.out)) throw new Error(`complete: curl ${d.status} ${d.err} ${d.out}`);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const head = await runOut('curl', ['-sfI', ...sig, url]);
  const len = Number(/content-length:\s*(\d+)/i.exec(head.out)?.[1]);
  if (len !== SIZE) throw new Error(`curl's multipart object has ${len} bytes`);
  return secs;
}

function runOut(cmd, args) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args);
    let out = '', err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('exit', (status) => resolve({ status, out, err }));
  });
}

async function snapsyncUpload(rs, dataDir, id, enc, recipient, extra = []) {
  const db = path.join(dataDir, 'snapsync.db');
  const inst = spawnSync('sqlite3', [db, "SELECT value FROM meta WHERE key = 'instance_id'"], { encoding: 'utf8' }).stdout.trim();
  const prefix = rs.kind === 's3' ? 'snap' : 'backups/snap';
  const key = `${prefix}/${inst}/app/${id}.ndjson.gz${enc ? '.age' : ''}`;
  spawnSync('sqlite3', [db, `DELETE FROM snapshot_remote; INSERT INTO snapshot_remote(snapshot_id, space, kind, status, key, created_at) VALUES ('${id}', 'app', 'manual', 'pending', '${key}', 0)`]);
  const args = [...rs.args(), '--remote-kinds', 'scheduled', ...(enc ? ['--remote-encrypt-to', recipient] : []), ...extra];
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
for (const kind of MODES.includes('default') ? ['s3', 'dav'] : []) {
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
const shapeRows = [];
if (MODES.includes('shape')) {
  const pdir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-bench-parts-'));
  execFileSync('split', ['-b', String(PART), '-a', '3', '-d', file, path.join(pdir, 'p')]);
  const parts = execFileSync('sh', ['-c', `ls ${pdir}/p* | sort`], { encoding: 'utf8' }).trim().split('\n');
  const rs = await startS3();
  try {
    const res = { curl1: [], snap1: [], curlMp: [], snapMp: [] };
    for (let i = 0; i < RUNS; i++) {
      res.curl1.push(await curlUpload(rs, file));
      res.snap1.push((await snapsyncUpload(rs, dataDir, snap.id, false, recipient, ['--remote-part-size', '5GiB'])).secs);
      res.curlMp.push(await curlMultipart(rs, parts));
      res.snapMp.push((await snapsyncUpload(rs, dataDir, snap.id, false, recipient, ['--remote-part-size', `${PART >> 20}MiB`])).secs);
      log(`s3 shape run ${i + 1}: one PUT: curl ${res.curl1.at(-1).toFixed(2)} s, snapsync ${res.snap1.at(-1).toFixed(2)} s; ` +
        `${parts.length} parts: curl ${res.curlMp.at(-1).toFixed(2)} s, snapsync ${res.snapMp.at(-1).toFixed(2)} s`);
    }
    const mb = SIZE / 1048576;
    const row = (name, c, s) => `| ${name} | ${c.toFixed(2)} s (${(mb / c).toFixed(0)} MiB/s) | ${s.toFixed(2)} s (${(mb / s).toFixed(0)} MiB/s) | ${(c / s).toFixed(2)}× |`;
    shapeRows.push(row('one PUT (snapsync `--remote-part-size 5GiB`; `curl -T`)', median(res.curl1), median(res.snap1)));
    shapeRows.push(row(`multipart, ${parts.length} × ${PART >> 20} MiB (create, parts in turn, complete: both)`, median(res.curlMp), median(res.snapMp)));
  } finally {
    await rs.close();
    spawnSync('rm', ['-rf', pdir]);
  }
}
if (rows.length) {
  console.log(`\nUpload of a ${SIZE / 1048576} MiB snapshot file, median of ${RUNS} runs (MiB/s; × = curl's time / snapsync's):\n`);
  console.log('| server | curl -T | snapsync | snapsync, age-encrypted | RSS growth MiB (plain / encrypted) |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) console.log(r);
}
if (shapeRows.length) {
  console.log(`\nS3 (s3rver + SigV4 proxy) at equal request shape, ${SIZE / 1048576} MiB, median of ${RUNS} runs (× = curl's time / snapsync's):\n`);
  console.log('| request shape | curl | snapsync | × |');
  console.log('|---|---|---|---|');
  for (const r of shapeRows) console.log(r);
}
spawnSync('rm', ['-rf', dataDir, kdir]);
