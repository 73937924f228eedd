// snapshot_integrity.test.mjs - a snapshot file that is damaged or missing
// on the server (the hardening issue's fault-injection cases): downloads
// with and without gzip end in an error a client sees (the real curl exits
// non-zero, fetch's body read rejects) instead of a clean 200; the snapshot
// is then marked `"integrity":"corrupt"` (persisted), refused by download,
// preview and restore with 422 snapshot_corrupt; POST .../verify re-checks
// and clears the mark once the file is repaired; the background check
// (--snapshot-verify-every) finds a tampered file on its own (SSE, metrics,
// audit, log); and no error shows a server path.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync, unlinkSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import {
  startServer, withServer, api, apiOk, putSpace, createKey, checkError, haveCommand,
} from './helpers.mjs';
import {
  snapPath, rawGet, createSnapshot, listAll, snapFile, checkCompletedMeta, sha256, flipByte, pushEntities, until,
  TIME_RE,
} from './snapshot_helpers.mjs';
import { openSSE } from './sse_helpers.mjs';

const HAVE_CURL = haveCommand('curl');

let srv;
before(async () => { srv = await startServer({ args: ['--snapshot-rate', '0'] }); });
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText().slice(-3000)}`);
});

/** A space whose snapshot file is about 190 KB of gzip: several 64 KiB reads,
 *  so a damaged end is found after part of the body went out. */
async function seedBig(s, space, n = 600) {
  await putSpace(s, space);
  const items = [];
  for (let i = 0; i < n; i++) {
    items.push({ collection: 'docs', id: `d${String(i).padStart(4, '0')}`, body: { i, noise: randomBytes(300).toString('hex') } });
  }
  await pushEntities(s, space, items);
}

/** Runs the curl binary; resolves {code, stderr}. */
function curl(args, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const p = spawn('curl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`curl ${args.join(' ')} hung`)); }, timeoutMs);
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, stderr }); });
  });
}

const dlUrl = (s, space, id) => `${s.base}${snapPath(space, id, '/download')}`;

/** One download as a client does it: by curl or fetch, asking for gzip or
 *  not. Resolves {ok, detail}: ok is true only for a body read to its end
 *  with a 2xx and (curl) exit 0. */
async function clientDownload(s, space, id, how) {
  const url = dlUrl(s, space, id);
  const auth = `Authorization: Bearer ${s.adminToken}`;
  if (how.startsWith('curl')) {
    const args = ['-sS', '-o', '/dev/null', '-H', auth];
    if (how === 'curl-gzip') args.push('-H', 'Accept-Encoding: gzip');        // the stored file as is
    if (how === 'curl-compressed') args.push('--compressed');                  // gzip, decoded by curl
    args.push(url);
    const r = await curl(args);
    return { ok: r.code === 0, detail: `curl exit ${r.code} ${r.stderr.trim()}` };
  }
  const headers = { Authorization: `Bearer ${s.adminToken}` };
  if (how === 'fetch-plain') headers['Accept-Encoding'] = 'identity';          // fetch asks for gzip by default
  // a body that neither ends nor fails is a failure of its own (undici can
  // stall on a gzip body that is corrupt at its very end): never wait forever
  const ac = new AbortController();
  let timer;
  const stall = new Promise((resolve) => { timer = setTimeout(() => resolve('stalled'), 20000); });
  let res;
  try {
    const got = await Promise.race([stall, (async () => {
      res = await fetch(url, { headers, signal: ac.signal });
      return Buffer.from(await res.arrayBuffer());
    })()]);
    if (got === 'stalled') return { ok: false, hung: true, detail: `fetch ${res ? res.status : '(no head)'} stalled for 20 s` };
    return { ok: res.ok, detail: `fetch ${res.status}, body of ${got.length} bytes read to its end` };
  } catch (e) {
    return { ok: false, detail: `fetch ${res ? res.status : 'no response'}, rejected: ${e.cause?.message || e.message}` };
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

const getMeta = (s, space, id) => apiOk(s, 'GET', snapPath(space, id), {}, 200);

/** Waits until the snapshot's mark says corrupt (the mark is a write after the read). */
function waitCorrupt(s, space, id, timeoutMs = 5000) {
  return until(async () => {
    const m = await getMeta(s, space, id);
    return m.integrity === 'corrupt' ? m : null;
  }, { timeoutMs, what: `snapshot ${id} marked corrupt` });
}

function metric(text, name, labels = '') {
  const re = new RegExp(`^${name}${labels ? `\\{${labels.replace(/[{}]/g, '')}\\}` : ''} (\\S+)$`, 'm');
  const m = re.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** A text a client sees must not name a server path. */
const noPath = (s, text, what) => {
  for (const p of [s.dataDir, path.dirname(s.dataDir), '.ndjson.gz']) {
    assert.ok(!text.includes(p), `${what} names a server path (${p}): ${text}`);
  }
};

test('metadata: integrity is "unchecked" for a new snapshot and "ok" for an import (checked in full); a good file downloads cleanly', async () => {
  await seedBig(srv, 'iok', 200);
  const m = await createSnapshot(srv, 'iok');
  checkCompletedMeta(m, { space: 'iok', kind: 'manual' });
  assert.equal(m.integrity, 'unchecked');
  assert.equal(m.integrity_error, null);
  assert.equal(m.integrity_checked_at, null);
  if (HAVE_CURL) {
    for (const how of ['curl-gzip', 'curl-plain', 'curl-compressed']) {
      const r = await clientDownload(srv, 'iok', m.id, how);
      assert.ok(r.ok, `${how} of a good file: ${r.detail}`);
    }
  }
  for (const how of ['fetch-gzip', 'fetch-plain']) {
    const r = await clientDownload(srv, 'iok', m.id, how);
    assert.ok(r.ok, `${how} of a good file: ${r.detail}`);
  }
  // a download does not change the mark (only full checks say ok)
  assert.equal((await getMeta(srv, 'iok', m.id)).integrity, 'unchecked');
  const gz = readFileSync(snapFile(srv.dataDir, m.id));
  const im = await api(srv, 'POST', snapPath('iok', 'import'), { body: gz, headers: { 'Content-Type': 'application/gzip' } });
  assert.equal(im.status, 201, im.text);
  checkCompletedMeta(im.body, { space: 'iok', kind: 'imported' });
  assert.equal(im.body.integrity, 'ok');
  assert.match(im.body.integrity_checked_at, TIME_RE);
});

test('a tampered or truncated file: every download fails as the client sees it (curl exits non-zero, fetch rejects), with and without gzip; then marked corrupt and refused with 422', async () => {
  await seedBig(srv, 'idl');
  const damage = {
    tampered: (buf) => flipByte(buf),                                // one byte in the middle
    truncated: (buf) => buf.subarray(0, Math.floor(buf.length * 0.7)),
  };
  const clients = [...(HAVE_CURL ? ['curl-gzip', 'curl-plain', 'curl-compressed'] : []), 'fetch-gzip', 'fetch-plain'];
  const before = (await api(srv, 'GET', '/metrics')).text;
  let n = 0;
  for (const [kind, hurt] of Object.entries(damage)) {
    for (const how of clients) {
      // each client meets the damage first (the first read is the one that streams)
      const m = await createSnapshot(srv, 'idl');
      const f = snapFile(srv.dataDir, m.id);
      writeFileSync(f, hurt(readFileSync(f)));
      const r = await clientDownload(srv, 'idl', m.id, how);
      assert.equal(r.ok, false, `${how} of a ${kind} file must fail: ${r.detail}`);
      assert.ok(!r.hung, `${how} of a ${kind} file must fail, not stall: ${r.detail}`);
      n++;
      const marked = await waitCorrupt(srv, 'idl', m.id);
      assert.equal(typeof marked.integrity_error, 'string', JSON.stringify(marked));
      assert.ok(marked.integrity_error.length > 0);
      assert.match(marked.integrity_checked_at, TIME_RE);
      assert.equal(marked.status, 'completed', 'still a completed snapshot, listed');
      noPath(srv, marked.integrity_error, 'integrity_error');
      // now refused before any byte is sent
      for (const enc of ['gzip', 'identity']) {
        const again = await rawGet(srv, snapPath('idl', m.id, '/download'), { headers: { 'Accept-Encoding': enc } });
        const body = checkError(assert, { ...again, body: again.body.toString('utf8') }, 422, 'snapshot_corrupt', `${kind} ${enc} download after the mark`);
        assert.match(body.message, /damaged/);
        assert.ok(body.message.includes(marked.integrity_error), `the reason is in the message: ${body.message}`);
        assert.equal(again.headers.etag, undefined, 'no ETag on the refusal');
      }
      if (HAVE_CURL) {
        const c = await curl(['-sS', '-f', '-o', '/dev/null', '-H', `Authorization: Bearer ${srv.adminToken}`, dlUrl(srv, 'idl', m.id)]);
        assert.notEqual(c.code, 0, 'curl -f of a refused download');
      }
    }
  }
  // listed as corrupt (and found by ?integrity=corrupt), and still deletable
  const list = await listAll(srv, 'idl');
  assert.equal(list.length, n);
  assert.ok(list.every((x) => x.integrity === 'corrupt'), JSON.stringify(list.map((x) => [x.id, x.integrity])));
  assert.equal((await listAll(srv, 'idl', 'integrity=corrupt')).length, n);
  assert.equal((await listAll(srv, 'idl', 'integrity=ok')).length, 0);
  checkError(assert, await api(srv, 'GET', `${snapPath('idl')}?integrity=bad`), 400, 'invalid_parameter', 'integrity filter');
  const del = await api(srv, 'DELETE', snapPath('idl', list[0].id));
  assert.equal(del.status, 204, del.text);
  // counted and logged
  const after = (await api(srv, 'GET', '/metrics')).text;
  const d = (name, labels) => (metric(after, name, labels) ?? 0) - (metric(before, name, labels) ?? 0);
  assert.equal(d('snapsync_snapshot_download_aborts_total'), n, after);
  assert.equal(d('snapsync_snapshot_corrupt_found_total', 'found_by="download"'), n);
  const aborted = srv.logs.filter((l) => l.msg === 'snapshot_download_aborted' && l.space === 'idl');
  assert.equal(aborted.length, n, 'one snapshot_download_aborted log line per download');
  const audit = (await apiOk(srv, 'GET', '/api/v1/audit?action=snapshot.integrity&space=idl&limit=1000')).entries;
  assert.equal(audit.length, n, 'each snapshot found corrupt is audited once');
  assert.equal(audit[0].meta.integrity, 'corrupt');
  assert.equal(audit[0].meta.found_by, 'download');
});

test('a missing file: download and restore say "the snapshot file is missing", never the server path (logged server-side); the mark persists across a restart', async (t) => {
  const s = await withServer(t, { keepData: true });
  await seedBig(s, 'imiss', 50);
  const a = await createSnapshot(s, 'imiss');
  const b = await createSnapshot(s, 'imiss');
  unlinkSync(snapFile(s.dataDir, a.id));
  unlinkSync(snapFile(s.dataDir, b.id));
  const r = await api(s, 'POST', snapPath('imiss', a.id, '/restore'), { body: { confirm: a.id } });
  const body = checkError(assert, r, 422, 'snapshot_corrupt', 'restore of a snapshot whose file is gone');
  assert.equal(body.message, 'the snapshot file is missing; nothing was changed');
  noPath(s, r.text, 'the restore error');
  const logged = await s.waitForLog((l) => l.msg === 'snapshot_restore_refused' && l.snapshot === a.id);
  assert.equal(logged.file, snapFile(s.dataDir, a.id), 'the server log names the file');
  const dl = await api(s, 'GET', snapPath('imiss', b.id, '/download'));
  const dbody = checkError(assert, dl, 422, 'snapshot_corrupt', 'download of a snapshot whose file is gone');
  assert.match(dbody.message, /^the snapshot file is missing/);
  noPath(s, dl.text, 'the download error');
  for (const m of [a, b]) {
    const x = await waitCorrupt(s, 'imiss', m.id);
    assert.equal(x.integrity_error, 'the snapshot file is missing');
  }
  // the mark is in the database
  await s.stop();
  const s2 = await withServer(t, { dataDir: s.dataDir, keepData: false });
  const x = await getMeta(s2, 'imiss', a.id);
  assert.equal(x.integrity, 'corrupt');
  assert.equal(x.integrity_error, 'the snapshot file is missing');
  const again = await api(s2, 'POST', snapPath('imiss', a.id, '/restore'), { body: { confirm: a.id } });
  checkError(assert, again, 422, 'snapshot_corrupt', 'restore of a snapshot marked corrupt');
  noPath(s2, again.text, 'the restore error');
});

test('a snapshot that cannot be written: its error names no path', async (t) => {
  const s = await withServer(t);
  await putSpace(s, 'inopath');
  await apiOk(s, 'PUT', '/api/v1/spaces/inopath/collections/c/entities/e1', { body: { a: 1 } });
  const dir = path.join(s.dataDir, 'snapshots');
  renameSync(dir, `${dir}.away`);
  writeFileSync(dir, 'not a directory');         // open(2) of the temp file fails (ENOTDIR), as root too
  try {
    const r = await api(s, 'POST', snapPath('inopath'), { body: {} });
    const body = checkError(assert, r, 500, 'snapshot_failed', 'a snapshot whose file cannot be created');
    noPath(s, body.message, 'the snapshot_failed message');
    const failed = (await listAll(s, 'inopath', 'status=failed'))[0];
    assert.ok(failed && failed.error, JSON.stringify(failed));
    noPath(s, failed.error, 'the failed row\'s error');
    assert.equal(failed.integrity, null, 'no file, no integrity');
  } finally {
    rmSync(dir, { force: true });
    renameSync(`${dir}.away`, dir);
  }
});

test('preview and dry run of a damaged file say the file is damaged (not "no header line") and mark it', async () => {
  await seedBig(srv, 'ipv', 100);
  const m = await createSnapshot(srv, 'ipv');
  const f = snapFile(srv.dataDir, m.id);
  writeFileSync(f, readFileSync(f).subarray(0, 40));     // inside the first gzip block
  const r = await api(srv, 'GET', snapPath('ipv', m.id, '/preview'));
  const body = checkError(assert, r, 422, 'snapshot_corrupt', 'preview of a cut file');
  assert.match(body.message, /^the snapshot file is damaged: /);
  assert.doesNotMatch(body.message, /no header line/);
  noPath(srv, body.message, 'the preview error');
  const x = await waitCorrupt(srv, 'ipv', m.id);
  assert.ok(body.message.includes(x.integrity_error), `${body.message} / ${x.integrity_error}`);
  // marked: the next preview and a dry run say so without reading
  const again = checkError(assert, await api(srv, 'GET', snapPath('ipv', m.id, '/preview')), 422, 'snapshot_corrupt', 'preview after the mark');
  assert.match(again.message, /damaged.*verify/);
  const dry = await api(srv, 'POST', snapPath('ipv', m.id, '/restore'), { body: { confirm: m.id, dry_run: true } });
  checkError(assert, dry, 422, 'snapshot_corrupt', 'dry run of a snapshot marked corrupt');
  const audit = (await apiOk(srv, 'GET', '/api/v1/audit?action=snapshot.integrity&space=ipv')).entries;
  assert.equal(audit.length, 1);
  assert.equal(audit[0].meta.found_by, 'preview');
});

test('POST .../verify (operator): re-checks the file, answers and records the result; a repaired file is served and restorable again; audited', async () => {
  await seedBig(srv, 'ivf', 300);
  const m = await createSnapshot(srv, 'ivf');
  const f = snapFile(srv.dataDir, m.id);
  const good = readFileSync(f);
  // a good file: valid, and the mark says ok
  let r = await apiOk(srv, 'POST', snapPath('ivf', m.id, '/verify'), {}, 200);
  assert.deepEqual(Object.keys(r).sort(), ['error', 'snapshot', 'valid']);
  assert.equal(r.valid, true);
  assert.equal(r.error, null);
  assert.equal(r.snapshot.id, m.id);
  assert.equal(r.snapshot.integrity, 'ok');
  assert.match(r.snapshot.integrity_checked_at, TIME_RE);
  checkCompletedMeta(r.snapshot, { space: 'ivf', kind: 'manual' });
  // tampered: not valid, marked corrupt, refused by download and restore
  writeFileSync(f, flipByte(good));
  r = await apiOk(srv, 'POST', snapPath('ivf', m.id, '/verify'), {}, 200);
  assert.equal(r.valid, false);
  assert.match(r.error, /^the snapshot file is damaged: /);
  assert.equal(r.snapshot.integrity, 'corrupt');
  assert.ok(r.error.includes(r.snapshot.integrity_error));
  noPath(srv, r.error, 'the verify error');
  assert.equal((await getMeta(srv, 'ivf', m.id)).integrity, 'corrupt', 'recorded before the answer');
  checkError(assert, await api(srv, 'GET', snapPath('ivf', m.id, '/download')), 422, 'snapshot_corrupt', 'download');
  const rr = await api(srv, 'POST', snapPath('ivf', m.id, '/restore'), { body: { confirm: m.id } });
  const rb = checkError(assert, rr, 422, 'snapshot_corrupt', 'restore of a snapshot marked corrupt');
  assert.match(rb.message, /verify/);
  // a file with the right bytes again (repaired from a backup): valid, mark cleared
  writeFileSync(f, good);
  r = await apiOk(srv, 'POST', snapPath('ivf', m.id, '/verify'), {}, 200);
  assert.equal(r.valid, true);
  assert.equal(r.snapshot.integrity, 'ok');
  assert.equal(r.snapshot.integrity_error, null);
  const dl = await rawGet(srv, snapPath('ivf', m.id, '/download'), { headers: { 'Accept-Encoding': 'gzip' } });
  assert.equal(dl.status, 200);
  assert.equal(sha256(dl.body), m.sha256);
  const res = await api(srv, 'POST', snapPath('ivf', m.id, '/restore'), { body: { confirm: m.id }, timeoutMs: 30000 });
  assert.equal(res.status, 200, res.text);
  // a valid snapshot file that is not this snapshot's is not a repair
  const other = await createSnapshot(srv, 'ivf');
  writeFileSync(f, readFileSync(snapFile(srv.dataDir, other.id)));
  r = await apiOk(srv, 'POST', snapPath('ivf', m.id, '/verify'), {}, 200);
  assert.equal(r.valid, false);
  assert.match(r.error, /sha256/);
  writeFileSync(f, good);
  // audited, whatever it found
  const audit = (await apiOk(srv, 'GET', '/api/v1/audit?action=snapshot.verify&space=ivf')).entries;
  assert.deepEqual(audit.map((e) => e.meta.integrity), ['corrupt', 'ok', 'corrupt', 'ok']);
  assert.ok(audit.every((e) => e.target === m.id && e.remote_addr));
  // operator only; 404 for no such snapshot
  const reader = await createKey(srv, 'reader');
  assert.equal((await api(srv, 'POST', snapPath('ivf', m.id, '/verify'), { token: reader.token })).status, 403);
  const op = await createKey(srv, 'operator', ['ivf']);
  assert.equal((await api(srv, 'POST', snapPath('ivf', m.id, '/verify'), { token: op.token })).status, 200);
  checkError(assert, await api(srv, 'POST', snapPath('ivf', '01M870F4DE63XFXTE5Z2FKFXB5', '/verify')), 404, 'not_found', 'verify of no snapshot');
});

test('restore verifies the file first: a damaged one is refused and marked; after a repair and a verify it goes through', async () => {
  await seedBig(srv, 'irs', 100);
  const m = await createSnapshot(srv, 'irs');
  const f = snapFile(srv.dataDir, m.id);
  const good = readFileSync(f);
  const variants = {
    'flipped byte': flipByte(good),
    truncated: good.subarray(0, Math.floor(good.length / 2)),
    'trailer cut': good.subarray(0, good.length - 8),
    'one byte appended': Buffer.concat([good, Buffer.from([0])]),
  };
  for (const [name, buf] of Object.entries(variants)) {
    writeFileSync(f, buf);
    const r = await api(srv, 'POST', snapPath('irs', m.id, '/restore'), { body: { confirm: m.id } });
    const body = checkError(assert, r, 422, 'snapshot_corrupt', `restore of a ${name} file`);
    assert.match(body.message, /^the snapshot file is damaged: .*; nothing was changed$/);
    const x = await waitCorrupt(srv, 'irs', m.id);
    assert.ok(body.message.includes(x.integrity_error), `${name}: ${body.message} / ${x.integrity_error}`);
    writeFileSync(f, good);
    assert.equal((await apiOk(srv, 'POST', snapPath('irs', m.id, '/verify'), {}, 200)).valid, true, name);
  }
  const res = await api(srv, 'POST', snapPath('irs', m.id, '/restore'), { body: { confirm: m.id } });
  assert.equal(res.status, 200, res.text);
  await until(async () => (await getMeta(srv, 'irs', m.id)).integrity === 'ok', { what: 'the restore\'s check recorded as ok' });
});

test('background check (SNAPSYNC_SNAPSHOT_VERIFY_EVERY=1): finds a tampered file on its own -> marked, SSE snapshot event, metrics, audit, log; good files become ok', async (t) => {
  const s = await withServer(t, { env: { SNAPSYNC_SNAPSHOT_VERIFY_EVERY: '1' }, args: ['--snapshot-rate', '0'] });
  await seedBig(s, 'ibg', 200);
  const good = await createSnapshot(s, 'ibg');
  const bad = await createSnapshot(s, 'ibg');
  const sse = await openSSE(s.port, '/api/v1/events?spaces=ibg&topics=snapshot', { token: s.adminToken });
  t.after(() => sse.close());
  assert.equal(sse.status, 200);
  const f = snapFile(s.dataDir, bad.id);
  writeFileSync(f, flipByte(readFileSync(f)));
  const ev = await sse.waitFor(() => sse.ofType('snapshot').find((e) => e.json && e.json.snapshot === bad.id && e.json.integrity === 'corrupt'),
    15000, 'a snapshot event saying the tampered file is corrupt');
  assert.equal(ev.json.found_by, 'background');
  assert.equal(ev.json.space, 'ibg');
  assert.equal(ev.json.status, 'completed');
  assert.equal(typeof ev.json.integrity_error, 'string');
  noPath(s, ev.json.integrity_error, 'the event');
  const x = await getMeta(s, 'ibg', bad.id);
  assert.equal(x.integrity, 'corrupt');
  assert.equal(x.integrity_error, ev.json.integrity_error);
  const g = await until(async () => {
    const m = await getMeta(s, 'ibg', good.id);
    return m.integrity === 'ok' ? m : null;
  }, { timeoutMs: 15000, what: 'the good snapshot checked ok' });
  assert.match(g.integrity_checked_at, TIME_RE);
  const text = (await api(s, 'GET', '/metrics')).text;
  assert.ok(metric(text, 'snapsync_snapshot_checks_total', 'result="corrupt"') >= 1, text);
  assert.ok(metric(text, 'snapsync_snapshot_checks_total', 'result="ok"') >= 1, text);
  assert.equal(metric(text, 'snapsync_snapshot_corrupt_found_total', 'found_by="background"'), 1, 'found once, not at every check');
  const audit = (await apiOk(s, 'GET', '/api/v1/audit?action=snapshot.integrity&space=ibg')).entries;
  assert.equal(audit.length, 1, JSON.stringify(audit));
  assert.equal(audit[0].actor, 'integrity-check');
  assert.equal(audit[0].target, bad.id);
  assert.equal(audit[0].meta.found_by, 'background');
  const line = await s.waitForLog((l) => l.msg === 'snapshot_corrupt' && l.snapshot === bad.id);
  assert.equal(line.level, 'error');
  assert.equal(line.found_by, 'background');
  assert.equal(line.file, f);
  // the check keeps the pool usable meanwhile
  assert.equal((await api(s, 'GET', '/api/v1/spaces/ibg/sync/status')).status, 200);
});

test('--snapshot-verify-every 0 turns the background check off', async (t) => {
  const s = await withServer(t, { args: ['--snapshot-verify-every', '0'], env: { SNAPSYNC_SNAPSHOT_VERIFY_EVERY: '1' } });
  await seedBig(s, 'ioff', 20);
  const m = await createSnapshot(s, 'ioff');
  const f = snapFile(s.dataDir, m.id);
  writeFileSync(f, flipByte(readFileSync(f)));
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal((await getMeta(s, 'ioff', m.id)).integrity, 'unchecked');
  const text = (await api(s, 'GET', '/metrics')).text;
  assert.equal(metric(text, 'snapsync_snapshot_checks_total', 'result="corrupt"'), 0);
});
