// sync_blobs.test.mjs - SPEC §9 blobs: PUT /blobs/{sha256} (streamed,
// hash-checked: a tampered upload is refused and nothing kept), GET/HEAD
// with Range, POST /blobs/missing, entities referencing blobs ("_blobs"),
// and sync moving only the missing blobs before the entities that
// reference them (pull and push).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { withServer, putSpace, createKey, api, apiOk, checkError, binaryRequest as raw } from './helpers.mjs';
import { sp, put, syncOk, syncStatus } from './sync_helpers.mjs';

const SPACE = 'files';
const sha = (b) => createHash('sha256').update(b).digest('hex');


const blobPath = (h) => `${sp(SPACE)}/blobs/${h}`;
const missing = async (srv, hashes) => (await apiOk(srv, 'POST', `${sp(SPACE)}/blobs/missing`, { body: { hashes } }, 200)).missing;

test('blobs: upload, idempotent re-upload, missing, GET, HEAD, Range', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, SPACE);
  const data = randomBytes(300 * 1024);
  const h = sha(data);
  const other = sha(Buffer.from('never uploaded'));

  assert.deepEqual((await missing(srv, [h, other])).sort(), [h, other].sort(), 'both missing at first');
  const up = await raw(srv, 'PUT', blobPath(h), { body: data });
  assert.equal(up.status, 201, up.text);
  assert.equal(up.json?.sha256, h);
  assert.equal(up.json?.size, data.length);
  const again = await raw(srv, 'PUT', blobPath(h), { body: data });
  assert.equal(again.status, 200, `re-upload of a known blob: ${again.text}`);
  assert.deepEqual(await missing(srv, [h, other]), [other], 'only the unknown one is missing');
  assert.deepEqual(await missing(srv, []), []);

  const g = await raw(srv, 'GET', blobPath(h));
  assert.equal(g.status, 200);
  assert.ok(g.buf.equals(data), 'GET returns the bytes');
  assert.equal(Number(g.headers['content-length']), data.length);
  assert.equal(g.headers.etag, `"${h}"`);
  assert.match(g.headers['accept-ranges'] || '', /bytes/);

  const hd = await raw(srv, 'HEAD', blobPath(h));
  assert.equal(hd.status, 200);
  assert.equal(Number(hd.headers['content-length']), data.length, 'HEAD says the size');
  assert.equal(hd.buf.length, 0, 'HEAD has no body');

  const r1 = await raw(srv, 'GET', blobPath(h), { headers: { Range: 'bytes=100-199' } });
  assert.equal(r1.status, 206);
  assert.equal(r1.headers['content-range'], `bytes 100-199/${data.length}`);
  assert.ok(r1.buf.equals(data.subarray(100, 200)), 'the range bytes');
  const r2 = await raw(srv, 'GET', blobPath(h), { headers: { Range: 'bytes=-10' } });
  assert.equal(r2.status, 206);
  assert.ok(r2.buf.equals(data.subarray(data.length - 10)), 'a suffix range');
  const r3 = await raw(srv, 'GET', blobPath(h), { headers: { Range: `bytes=${data.length - 5}-` } });
  assert.equal(r3.status, 206);
  assert.equal(r3.headers['content-range'], `bytes ${data.length - 5}-${data.length - 1}/${data.length}`);
  assert.ok(r3.buf.equals(data.subarray(data.length - 5)), 'an open-ended range');
  const r4 = await raw(srv, 'GET', blobPath(h), { headers: { Range: `bytes=${data.length}-` } });
  assert.equal(r4.status, 416, 'a range past the end');
  assert.equal(r4.headers['content-range'], `bytes */${data.length}`);
  const r5 = await raw(srv, 'GET', blobPath(h), { headers: { 'If-None-Match': `"${h}"` } });
  assert.equal(r5.status, 304);

  const nf = await raw(srv, 'GET', blobPath(other));
  assert.equal(nf.status, 404);
  const nfh = await raw(srv, 'HEAD', blobPath(other));
  assert.equal(nfh.status, 404);
  for (const bad of ['abc', h.toUpperCase(), `${h}0`, 'z'.repeat(64)]) {
    const x = await api(srv, 'GET', blobPath(bad));
    assert.ok([400, 404].includes(x.status), `GET blob ${bad} -> ${x.status}`);
  }
  const badMissing = await api(srv, 'POST', `${sp(SPACE)}/blobs/missing`, { body: { hashes: ['nope'] } });
  assert.equal(badMissing.status, 400, badMissing.text);

  // roles: a reader reads, a writer uploads
  const reader = await createKey(srv, 'reader', [SPACE], 'r');
  const rg = await raw(srv, 'GET', blobPath(h), { token: reader.token });
  assert.equal(rg.status, 200);
  const small = Buffer.from('reader may not upload');
  const rp = await raw(srv, 'PUT', blobPath(sha(small)), { body: small, token: reader.token });
  assert.equal(rp.status, 403, rp.text);
  assert.deepEqual(await missing(srv, [sha(small)]), [sha(small)], 'the refused upload left nothing');
});

test('blobs: a tampered upload is refused with 422 hash_mismatch and nothing is kept', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, SPACE);
  const good = randomBytes(64 * 1024);
  const bad = Buffer.from(good);
  bad[1234] ^= 0xff;
  const h = sha(good);
  const r = await api(srv, 'PUT', blobPath(h), { body: bad, headers: { 'Content-Type': 'application/octet-stream' } });
  checkError(assert, r, 422, 'hash_mismatch', 'tampered upload');
  assert.deepEqual(await missing(srv, [h, sha(bad)]).then((m) => m.sort()), [h, sha(bad)].sort(),
    'neither the named blob nor the tampered bytes were kept');
  assert.equal((await raw(srv, 'GET', blobPath(h))).status, 404);
  assert.equal((await raw(srv, 'HEAD', blobPath(h))).status, 404);
  // the name still accepts the right bytes afterwards
  const ok = await raw(srv, 'PUT', blobPath(h), { body: good });
  assert.equal(ok.status, 201, ok.text);
  assert.ok((await raw(srv, 'GET', blobPath(h))).buf.equals(good));
});

test('blobs: uploads are streamed (a 12 MiB blob, above the JSON body limit); entities referencing unknown blobs are refused', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, SPACE);
  const big = randomBytes(12 * 1024 * 1024);
  const h = sha(big);
  const up = await raw(srv, 'PUT', blobPath(h), { body: big, timeoutMs: 60000 });
  assert.equal(up.status, 201, up.text);
  const g = await raw(srv, 'GET', blobPath(h), { timeoutMs: 60000 });
  assert.equal(g.status, 200);
  assert.equal(sha(g.buf), h, 'the stored bytes hash to their name');

  const unknown = sha(Buffer.from('unknown'));
  const refused = await api(srv, 'PUT', `${sp(SPACE)}/collections/docs/entities/d1`, { body: { title: 'x', _blobs: [unknown] } });
  checkError(assert, refused, 422, 'missing_blob', 'entity referencing an unknown blob');
  assert.equal((await syncStatus(srv, SPACE)).entity_count, 0, 'nothing written');
  const accepted = await api(srv, 'PUT', `${sp(SPACE)}/collections/docs/entities/d1`, { body: { title: 'x', _blobs: [h] } });
  assert.equal(accepted.status, 201, accepted.text);
});

test('sync moves only the missing blobs, before the entities (pull and push)', async (t) => {
  const [A, B] = await Promise.all([withServer(t), withServer(t)]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  const f1 = randomBytes(200 * 1024);
  const f2 = randomBytes(50 * 1024);
  const h1 = sha(f1);
  const h2 = sha(f2);
  assert.equal((await raw(A, 'PUT', blobPath(h1), { body: f1 })).status, 201);
  await put(A, SPACE, 'docs', 'withfile', { title: 'one', _blobs: [h1] });
  await put(A, SPACE, 'docs', 'plain', { title: 'no file' });

  // pull: B lacks h1, the job fetches it first
  const j1 = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(j1.pulled, 2, JSON.stringify(j1));
  assert.equal(j1.blobs, 1, `one blob moved: ${JSON.stringify(j1)}`);
  assert.ok(j1.bytes >= f1.length, `the blob's bytes are counted: ${JSON.stringify(j1)}`);
  const got = await raw(B, 'GET', blobPath(h1));
  assert.equal(got.status, 200);
  assert.ok(got.buf.equals(f1), 'B has the blob');
  const e = await apiOk(B, 'GET', `${sp(SPACE)}/collections/docs/entities/withfile`, {}, 200);
  assert.deepEqual(e.body._blobs, [h1]);

  // a new reference to a blob B already has: nothing moves
  await put(A, SPACE, 'docs', 'samefile', { title: 'again', _blobs: [h1] });
  const j2 = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(j2.pulled, 1);
  assert.equal(j2.blobs, 0, `a blob the puller has is not fetched again: ${JSON.stringify(j2)}`);

  // push: B uploads h2 and references it; the push sends it to A first
  assert.equal((await raw(B, 'PUT', blobPath(h2), { body: f2 })).status, 201);
  await put(B, SPACE, 'docs', 'fromB', { title: 'B file', _blobs: [h2, h1] });
  assert.deepEqual(await missing(A, [h1, h2]), [h2]);
  const j3 = await syncOk(B, SPACE, A, { direction: 'push' });
  assert.equal(j3.pushed, 1, JSON.stringify(j3));
  assert.equal(j3.blobs, 1, `only the blob A lacked was sent: ${JSON.stringify(j3)}`);
  assert.deepEqual(await missing(A, [h1, h2]), [], 'A has both blobs');
  assert.ok((await raw(A, 'GET', blobPath(h2))).buf.equals(f2), 'A has the pushed blob bytes');
  const ea = await apiOk(A, 'GET', `${sp(SPACE)}/collections/docs/entities/fromB`, {}, 200);
  assert.deepEqual(ea.body._blobs, [h2, h1]);

  // nothing left: idle both ways
  const idle = await syncOk(B, SPACE, A, { direction: 'both' });
  assert.equal(idle.blobs, 0);
  assert.equal(idle.pulled, 0);
  assert.equal(idle.pushed, 0);
  const [sa, sb] = await Promise.all([syncStatus(A, SPACE), syncStatus(B, SPACE)]);
  assert.equal(sa.digest, sb.digest, 'converged');
});

test('blob transfers take at most half the threadpool (--workers 2: one at a time); the others wait their turn, and the pull still converges', async (t) => {
  const [A, B] = await Promise.all([withServer(t), withServer(t, { args: ['--workers', '2'] })]);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  // four 8 MiB blobs, each referenced by the entities of one 1,000-entity page
  const blobs = [];
  for (let k = 0; k < 4; k++) {
    const data = randomBytes(8 << 20);
    const h = sha(data);
    assert.equal((await raw(A, 'PUT', blobPath(h), { body: data })).status, 201);
    blobs.push(h);
  }
  for (let k = 0; k < 4; k++) {
    const changes = [];
    for (let i = 0; i < 1000; i++) changes.push({ collection: 'docs', id: `p${k}-${i}`, base_rev: null, deleted: false, body: { k, i, _blobs: [blobs[k]] } });
    await apiOk(A, 'POST', `${sp(SPACE)}/changes`, { body: { changes }, timeoutMs: 60000 }, 200);
  }
  const metricsText = async () => (await raw(B, 'GET', '/metrics')).buf.toString('utf8');
  const num = (txt, name) => Number((new RegExp(`^${name} (\\d+)$`, 'm').exec(txt) || [])[1]);
  assert.equal(num(await metricsText(), 'snapsync_sync_blob_jobs_running'), 0);
  // sample the gauge while the pull runs
  let sampling = true;
  let maxRunning = 0;
  const sampler = (async () => {
    while (sampling) {
      const txt = await metricsText();
      maxRunning = Math.max(maxRunning, num(txt, 'snapsync_sync_blob_jobs_running'));
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const job = await syncOk(B, SPACE, A, { direction: 'pull' });
  sampling = false;
  await sampler;
  assert.equal(job.pulled, 4000, JSON.stringify(job));
  assert.equal(job.blobs, 4, `each blob moved once: ${JSON.stringify(job)}`);
  assert.equal((await syncStatus(B, SPACE)).digest, (await syncStatus(A, SPACE)).digest);
  const txt = await metricsText();
  assert.ok(maxRunning <= 1, `never more than one blob job at once with --workers 2 (saw ${maxRunning})`);
  assert.ok(num(txt, 'snapsync_sync_blob_jobs_waited_total') >= 1, `pages with blobs waited their turn: ${txt.match(/^snapsync_sync_blob.*$/gm)}`);
  assert.equal(num(txt, 'snapsync_sync_blob_jobs_running'), 0);
  assert.equal(num(txt, 'snapsync_sync_blob_jobs_waiting'), 0);
  for (const h of blobs) assert.equal((await raw(B, 'HEAD', blobPath(h))).status, 200);
});
