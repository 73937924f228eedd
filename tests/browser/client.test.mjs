// client.test.mjs - the JavaScript client (clients/js, SPEC §13) in a real
// browser against real servers: playwright-core drives Debian's chromium.
//
// How pages are served: a small static server started here (its own
// origin, like a web app) serves an empty page and clients/js/examples/;
// the client module itself comes from the snapsync binary at
// /sdk/snapsync.js (a cross-origin import, allowed by --cors-origins).
//
// When chromium is missing every test is skipped with a message saying so
// (scripts/run counts a skip as a failure).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { api, apiOk, createKey, freePort, putSpace, sleep, startServer } from '../e2e/helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const EXAMPLES = path.join(here, '..', '..', 'clients', 'js', 'examples');
const CLIENT = path.join(here, '..', '..', 'clients', 'js', 'snapsync.js');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SKIP = existsSync(CHROMIUM) ? false : `chromium not found at ${CHROMIUM} (apt-get install -y chromium)`;

let browser;
let pageServer;
let ORIGIN;

before(async () => {
  if (SKIP) return;
  pageServer = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/sdk/snapsync.js') {      // an app that ships the client itself
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      res.end(readFileSync(CLIENT));
      return;
    }
    if (u.pathname.startsWith('/examples/')) {
      const f = path.join(EXAMPLES, path.basename(u.pathname));
      if (existsSync(f)) {
        res.writeHead(200, { 'Content-Type': f.endsWith('.js') ? 'text/javascript' : 'text/html; charset=utf-8' });
        res.end(readFileSync(f));
        return;
      }
    }
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>app</title><p>app</p>');
  });
  await new Promise((r) => pageServer.listen(0, '127.0.0.1', r));
  ORIGIN = `http://127.0.0.1:${pageServer.address().port}`;
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
});

after(async () => {
  if (browser) await browser.close();
  if (pageServer) pageServer.close();
});

const sp = (s) => `/api/v1/spaces/${s}`;

/** A snapsync server that lets the page origin in. */
function server(opts = {}) {
  return startServer({ ...opts, args: ['--cors-origins', ORIGIN, ...(opts.args || [])] });
}

/** A page of the app origin with the client imported from the server as
 *  window.S, and a log of what the page does (window.log). */
async function appPage(ctx, base) {
  const page = await ctx.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(e.message));
  await page.goto(`${ORIGIN}/`);
  await loadClient(page, base);
  return page;
}

async function loadClient(page, base) {
  await page.evaluate(async (base) => {
    window.S = await import(`${base}/sdk/snapsync.js`);
    window.log = { changes: [], statuses: [], conflicts: [], settled: [] };
  }, base);
}

/** Opens a replica in the page as window.rep (and the client as window.db),
 *  recording its changes, statuses, conflicts and settled edits. */
async function openReplica(page, base, token, space, opts = {}) {
  return page.evaluate(async ({ base, token, space, opts }) => {
    window.db = window.S.snapsync({ url: base, token, transport: opts.transport || 'fetch' });
    const rep = window.db.space(space).replica(opts);
    window.rep = rep;
    rep.subscribe((cs) => { for (const c of cs) window.log.changes.push({ type: c.type, id: c.id, source: c.source, version: c.entity ? c.entity.version : null }); });
    rep.on('status', (s) => window.log.statuses.push({ state: s.state, online: s.online, version: s.version, pending: s.pending, error: s.error ? s.error.code : null }));
    rep.on('conflict', (c) => { window.log.conflicts.push(c); });
    rep.on('settled', ({ edit, result }) => window.log.settled.push({ id: edit.id, status: result.status, error: result.error ? result.error.code : null }));
    try {
      await rep.ready;
      return { ok: true, status: rep.status, size: rep.size };
    } catch (e) {
      return { ok: false, error: { name: e.name, code: e.code, status: e.status, message: e.message }, status: { state: rep.status.state, error: rep.status.error && rep.status.error.code } };
    }
  }, { base, token, space, opts });
}

async function waitFor(page, fn, arg, what, timeout = 20000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch {
    const state = await page.evaluate(() => ({ status: window.rep && window.rep.status, statuses: window.log && window.log.statuses.slice(-8), settled: window.log && window.log.settled.slice(-8) }));
    throw new Error(`timeout waiting for ${what}: ${JSON.stringify(state).slice(0, 2000)}`);
  }
}

/** Every live entity of the server's space as [collection, id, rev, body]. */
async function serverState(srv, space) {
  const out = [];
  let since = 0;
  for (;;) {
    const d = await apiOk(srv, 'GET', `${sp(space)}/changes?since=${since}&limit=1000`);
    for (const e of d.changes) if (!e.deleted) out.push([e.collection, e.id, e.rev, JSON.stringify(e.body)]);
    since = d.last_version;
    if (!d.more) break;
  }
  return out.sort((a, b) => (a[0] + a[1] < b[0] + b[1] ? -1 : 1));
}

async function replicaState(page) {
  return page.evaluate(() => window.rep.query().filter((e) => !e.pending)
    .map((e) => [e.collection, e.id, e.rev, JSON.stringify(e.body)])
    .sort((a, b) => (a[0] + a[1] < b[0] + b[1] ? -1 : 1)));
}

async function seed(srv, space, n, collection = 'issues', from = 0) {
  for (let i = from; i < from + n; i += 1000) {
    const changes = [];
    for (let j = i; j < Math.min(from + n, i + 1000); j++) {
      changes.push({ collection, id: `I-${j}`, base_rev: null, body: { title: `Issue ${j}`, state: j % 3 ? 'open' : 'closed', n: j } });
    }
    await apiOk(srv, 'POST', `${sp(space)}/changes`, { body: { changes } }, 200);
  }
}

test('GET /sdk/snapsync.js: public, text/javascript, ETag and 304 like the dashboard files; the same bytes as clients/js/snapsync.js', { skip: SKIP }, async (t) => {
  const srv = await server();
  t.after(() => srv.stop());
  const res = await fetch(`${srv.base}/sdk/snapsync.js`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/javascript/);
  const etag = res.headers.get('etag');
  assert.match(etag, /^"ui-[0-9a-f]{8}"$/);
  assert.equal(await res.text(), readFileSync(CLIENT, 'utf8'));
  const again = await fetch(`${srv.base}/sdk/snapsync.js`, { headers: { 'If-None-Match': etag } });
  assert.equal(again.status, 304);
  assert.equal((await fetch(`${srv.base}/ui/snapsync.js`)).status, 404, 'not a dashboard file');
});

test('a replica of 20,000 entities bootstraps from the newest snapshot (IndexedDB), then follows live changes', { skip: SKIP, timeout: 120000 }, async (t) => {
  const srv = await server();
  t.after(() => srv.stop());
  await putSpace(srv, 'big');
  await seed(srv, 'big', 20000);
  const snap = await apiOk(srv, 'POST', `${sp('big')}/snapshots`, { body: {} }, 201);
  // changes after the snapshot: the replica takes them from the feed
  await apiOk(srv, 'PUT', `${sp('big')}/collections/issues/entities/I-5`, { body: { title: 'edited after the snapshot' } });
  await apiOk(srv, 'DELETE', `${sp('big')}/collections/issues/entities/I-6`);
  await apiOk(srv, 'PUT', `${sp('big')}/collections/notes/entities/N-1`, { body: { text: 'new' } });

  const ctx = await browser.newContext();
  t.after(() => ctx.close());
  const page = await appPage(ctx, srv.base);
  const progress = [];
  await page.exposeFunction('onProgress', (p) => { progress.push(p); });
  const r = await page.evaluate(async ({ base, token }) => {
    const db = window.S.snapsync({ url: base, token });
    const rep = db.space('big').replica({ persist: 'indexeddb', onProgress: (p) => window.onProgress(p) });
    window.rep = rep;
    window.log = { changes: [] };
    await rep.ready;
    rep.subscribe((cs) => { for (const c of cs) window.log.changes.push({ id: c.id, type: c.type, version: c.entity && c.entity.version }); });
    return { status: rep.status, size: rep.size, i5: rep.get('issues', 'I-5'), i6: rep.get('issues', 'I-6'),
      closed: rep.query((e) => e.body.state === 'closed', { collection: 'issues' }).length };
  }, { base: srv.base, token: srv.adminToken });
  assert.equal(r.status.bootstrap.method, 'snapshot');
  assert.equal(r.status.bootstrap.snapshot, snap.id);
  assert.equal(r.status.bootstrap.changes, 3, 'only the three changes after the snapshot came from the feed');
  assert.equal(r.size, 20000 - 1 + 1);
  assert.equal(r.i5.body.title, 'edited after the snapshot');
  assert.equal(r.i6, null);
  assert.equal(r.closed, [...Array(20000).keys()].filter((j) => j !== 6 && j % 3 === 0).length);
  const status = await apiOk(srv, 'GET', `${sp('big')}/sync/status`);
  assert.equal(r.status.version, status.server_version);
  const snapProgress = progress.filter((p) => p.phase === 'snapshot');
  assert.ok(snapProgress.length >= 5, `progress while reading the snapshot (${snapProgress.length} reports)`);
  assert.equal(snapProgress.at(-1).done, 20000);
  assert.equal(snapProgress.at(-1).total, 20000);

  // live: changes made now reach the replica, once each, in order
  await waitFor(page, () => window.rep.status.state === 'live', null, 'the feed to be live');
  const made = [];
  for (let i = 0; i < 20; i++) made.push(await apiOk(srv, 'PUT', `${sp('big')}/collections/issues/entities/L-${i}`, { body: { title: `live ${i}` } }));
  made.push(await apiOk(srv, 'DELETE', `${sp('big')}/collections/issues/entities/I-7`));
  await waitFor(page, (n) => window.log.changes.length >= n, made.length, 'the live changes');
  const got = await page.evaluate(() => window.log.changes);
  assert.deepEqual(got.map((c) => [c.id, c.type, c.version]), made.map((m) => [m.id, m.deleted ? 'delete' : 'put', m.version]));
  assert.deepEqual(await replicaState(page), await serverState(srv, 'big'), 'the replica holds exactly the server\'s state');

  // a reload starts from what is stored: the snapshot's lines (kept as
  // text, 2,000 to a segment record) under what the feed changed since
  // (I-5 edited, I-6 deleted during the bootstrap, I-7 deleted live)
  const segments = await page.evaluate(async () => {
    const st = window.rep.store.db.transaction('segments').objectStore('segments');
    const n = await new Promise((res) => { st.count().onsuccess = (e) => res(e.target.result); });
    await window.rep.close();
    return n;
  });
  assert.equal(segments, 10, '20,000 snapshot lines in segments of 2,000');
  const again = await page.evaluate(async ({ base, token }) => {
    const rep = window.S.snapsync({ url: base, token }).space('big').replica({ persist: 'indexeddb' });
    window.rep = rep;
    await rep.ready;
    return { method: rep.status.bootstrap.method, size: rep.size, i5: rep.get('issues', 'I-5'), i6: rep.get('issues', 'I-6'),
      i7: rep.get('issues', 'I-7'), l3: rep.get('issues', 'L-3') };
  }, { base: srv.base, token: srv.adminToken });
  assert.equal(again.method, 'stored');
  assert.equal(again.size, 20000 - 1 + 1 + 20 - 1);
  assert.equal(again.i5.body.title, 'edited after the snapshot');
  assert.equal(again.i6, null);
  assert.equal(again.i7, null);
  assert.equal(again.l3.body.title, 'live 3');
  assert.deepEqual(await replicaState(page), await serverState(srv, 'big'), 'the reloaded replica holds exactly the server\'s state');
  assert.deepEqual(page.problems, []);
});

test('a live replica across a server kill -9 and restart: every change once, none missed, none repeated', { skip: SKIP, timeout: 90000 }, async (t) => {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-client-'));
  const args = ['--listen', `127.0.0.1:${port}`];
  let srv = await server({ args, dataDir, keepData: true });
  t.after(async () => { await srv.stop().catch(() => {}); });
  await putSpace(srv, 'feed');
  await seed(srv, 'feed', 50, 'c');
  const ctx = await browser.newContext();
  t.after(() => ctx.close());
  const page = await appPage(ctx, srv.base);
  const o = await openReplica(page, srv.base, srv.adminToken, 'feed', { persist: 'indexeddb' });
  assert.ok(o.ok, JSON.stringify(o));
  await waitFor(page, () => window.rep.status.state === 'live', null, 'live');
  const put = (s, id, n) => apiOk(s, 'PUT', `${sp('feed')}/collections/c/entities/${id}`, { body: { n } });
  const made = [];
  for (let i = 0; i < 10; i++) made.push(await put(srv, `before-${i}`, i));
  await waitFor(page, () => window.log.changes.length >= 10, null, 'changes before the kill');

  await srv.kill9();
  await waitFor(page, () => window.rep.status.online === false, null, 'the replica to notice the server is gone');
  srv = await server({ args, dataDir, keepData: true });
  // writes race the replica's reconnection: some land before it, some after
  for (let i = 0; i < 30; i++) made.push(await put(srv, `after-${i}`, i));
  await waitFor(page, () => window.rep.status.state === 'live', null, 'the replica to reconnect');
  for (let i = 0; i < 10; i++) made.push(await put(srv, `live-${i}`, i));
  // and once more with a graceful stop (event: shutdown)
  await srv.stop();
  srv = await server({ args, dataDir, keepData: false });
  for (let i = 0; i < 10; i++) made.push(await put(srv, `again-${i}`, i));
  await waitFor(page, (n) => window.log.changes.length >= n, made.length, 'every change');
  await sleep(500);
  const got = await page.evaluate(() => window.log.changes.filter((c) => c.source === 'remote'));
  assert.deepEqual(got.map((c) => [c.id, c.version]), made.map((m) => [m.id, m.version]), 'each change once, in version order');
  const states = await page.evaluate(() => window.log.statuses.map((s) => s.state));
  assert.ok(states.filter((s) => s === 'live').length >= 3, `reconnected twice (${states.join(',')})`);
  assert.deepEqual(await replicaState(page), await serverState(srv, 'feed'));
  assert.deepEqual(page.problems, []);
});

test('offline edits: made while the server is stopped, kept across a page reload, pushed in order with base_rev when it is back', { skip: SKIP, timeout: 90000 }, async (t) => {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-client-'));
  const args = ['--listen', `127.0.0.1:${port}`];
  let srv = await server({ args, dataDir, keepData: true });
  t.after(async () => { await srv.stop().catch(() => {}); });
  await putSpace(srv, 'off');
  await seed(srv, 'off', 10);
  const token = srv.adminToken;
  const base = srv.base;
  const ctx = await browser.newContext();
  t.after(() => ctx.close());
  const page = await appPage(ctx, base);
  assert.ok((await openReplica(page, base, token, 'off', { persist: 'indexeddb' })).ok);
  await waitFor(page, () => window.rep.status.state === 'live', null, 'live');

  await srv.stop();
  await waitFor(page, () => window.rep.status.online === false, null, 'offline');
  const local = await page.evaluate(async () => {
    const rep = window.rep;
    const edits = [
      rep.put('issues', 'I-1', { title: 'edited offline' }),
      rep.put('issues', 'NEW-1', { title: 'made offline' }),
      rep.delete('issues', 'I-2'),
      rep.put('issues', 'I-3', { title: 'first offline edit' }),
      rep.put('issues', 'I-3', { title: 'second offline edit' }),      // chained on the first
      rep.put('issues', 'NEW-2', { title: 'made offline, then deleted' }),
      rep.delete('issues', 'NEW-2'),
    ];
    await Promise.all(edits.map((e) => e.queued));
    return { pending: rep.pending().length, i1: rep.get('issues', 'I-1').body.title, i2: rep.get('issues', 'I-2'),
      i3: rep.get('issues', 'I-3').body.title, n1: rep.get('issues', 'NEW-1').pending, size: rep.size };
  });
  assert.deepEqual(local, { pending: 7, i1: 'edited offline', i2: null, i3: 'second offline edit', n1: true, size: 10 });

  // the page is reloaded while the server is still away
  await page.reload();
  await loadClient(page, base).catch(() => {});   // the module cannot load from a stopped server...
  const reloaded = await page.evaluate(() => !!window.S);
  assert.equal(reloaded, false, 'the server is down, so /sdk/snapsync.js cannot load');
  // ...so an offline-first app ships the file itself: here from the app's origin
  await loadClient(page, ORIGIN);
  const again = await page.evaluate(async ({ base, token }) => {
    const rep = window.S.snapsync({ url: base, token }).space('off').replica({ persist: 'indexeddb' });
    window.rep = rep;
    rep.on('settled', ({ edit, result }) => window.log.settled.push({ id: edit.id, deleted: edit.deleted, status: result.status }));
    await rep.ready;
    return { pending: rep.pending().map((e) => [e.id, e.deleted]), i1: rep.get('issues', 'I-1').body.title,
      i3: rep.get('issues', 'I-3').body.title, i2: rep.get('issues', 'I-2'), state: rep.status.state, size: rep.size };
  }, { base, token });
  assert.deepEqual(again.pending, [['I-1', false], ['NEW-1', false], ['I-2', true], ['I-3', false], ['I-3', false], ['NEW-2', false], ['NEW-2', true]]);
  assert.equal(again.i1, 'edited offline');
  assert.equal(again.i3, 'second offline edit');
  assert.equal(again.i2, null);
  assert.equal(again.size, 10);

  srv = await server({ args, dataDir, keepData: false });
  await waitFor(page, () => window.rep.status.pending === 0 && window.log.settled.length === 7, null, 'the queue to drain');
  const settled = await page.evaluate(() => window.log.settled);
  assert.deepEqual(settled.map((s) => [s.id, s.deleted, s.status]),
    [['I-1', false, 'applied'], ['NEW-1', false, 'applied'], ['I-2', true, 'applied'], ['I-3', false, 'applied'],
      ['I-3', false, 'applied'], ['NEW-2', false, 'applied'], ['NEW-2', true, 'applied']], 'pushed in order, each settled');
  const i3 = await apiOk(srv, 'GET', `${sp('off')}/collections/issues/entities/I-3`);
  assert.equal(i3.body.title, 'second offline edit');
  assert.match(i3.rev, /^3-/, 'the second edit was pushed on top of the first (base_rev = its rev)');
  assert.equal((await api(srv, 'GET', `${sp('off')}/collections/issues/entities/I-2`)).status, 404);
  assert.equal((await api(srv, 'GET', `${sp('off')}/collections/issues/entities/NEW-2`)).status, 404);
  assert.equal((await apiOk(srv, 'GET', `${sp('off')}/collections/issues/entities/NEW-1`)).body.title, 'made offline');
  assert.deepEqual(await apiOk(srv, 'GET', `${sp('off')}/conflicts`), [], 'no conflict: every base_rev was current');
  await waitFor(page, () => !window.rep.query().some((e) => e.pending), null, 'the replica to hold the server\'s revs');
  await sleep(300);
  assert.deepEqual(await replicaState(page), await serverState(srv, 'off'));
});

test('conflicts made by another client: seen as conflict events with both bodies, resolved each way', { skip: SKIP, timeout: 60000 }, async (t) => {
  const srv = await server();
  t.after(() => srv.stop());
  await putSpace(srv, 'cf');
  await seed(srv, 'cf', 4);
  const ctx = await browser.newContext();
  t.after(() => ctx.close());
  const page = await appPage(ctx, srv.base);
  assert.ok((await openReplica(page, srv.base, srv.adminToken, 'cf', { persist: 'memory' })).ok);
  await waitFor(page, () => window.rep.status.state === 'live', null, 'live');

  // the replica goes offline; another client edits the same issues
  await page.evaluate(() => window.rep.pause());
  for (let i = 0; i < 4; i++) {
    await apiOk(srv, 'PUT', `${sp('cf')}/collections/issues/entities/I-${i}`, { body: { title: `theirs ${i}` } });
  }
  await page.evaluate(() => { for (let i = 0; i < 4; i++) window.rep.put('issues', `I-${i}`, { title: `mine ${i}` }); });
  await page.evaluate(() => window.rep.resume());
  await waitFor(page, () => window.log.conflicts.length === 4, null, 'four conflict events');
  const seen = await page.evaluate(() => window.log.conflicts.map((c) => ({ id: c.id, entity: c.entityId, current: c.current, conflicting: c.conflicting })));
  assert.deepEqual(seen.map((c) => [c.entity, c.current.title, c.conflicting.title]),
    [0, 1, 2, 3].map((i) => [`I-${i}`, `theirs ${i}`, `mine ${i}`]));
  // space.conflicts() lists the same ones, with both bodies
  const listed = await page.evaluate(async () => (await window.db.space('cf').conflicts())
    .map((c) => [c.id, c.entityId, c.current.title, c.conflicting.title, c.conflictingRev !== null]));
  assert.deepEqual(listed.map((c) => c[0]).sort(), seen.map((c) => c.id).sort());
  assert.ok(listed.every((c) => c[4]), 'listed conflicts carry the conflicting rev');

  const results = await page.evaluate(async () => {
    const cs = window.log.conflicts;
    const out = [];
    out.push(await cs[0].resolve('local_wins'));
    out.push(await cs[1].resolve('remote_wins'));
    out.push(await cs[2].resolve('keep_both'));
    out.push(await cs[3].resolve({ merge: { title: 'merged 3' } }));
    return out.map((r) => [r.strategy, r.entity.id, r.entity.body.title]);
  });
  assert.deepEqual(results, [['local_wins', 'I-0', 'theirs 0'], ['remote_wins', 'I-1', 'mine 1'],
    ['keep_both', 'I-2~conflict-1', 'mine 2'], ['merge', 'I-3', 'merged 3']]);
  assert.deepEqual(await apiOk(srv, 'GET', `${sp('cf')}/conflicts`), []);
  assert.equal((await apiOk(srv, 'GET', `${sp('cf')}/collections/issues/entities/I-2`)).body.title, 'theirs 2');
  // the resolutions are ordinary changes: the replica gets them from its feed
  await waitFor(page, () => window.rep.get('issues', 'I-3')?.body.title === 'merged 3' && !!window.rep.get('issues', 'I-2~conflict-1'), null, 'the resolutions in the replica');
  assert.deepEqual(await replicaState(page), await serverState(srv, 'cf'));
  // a settled edit says it ended in a conflict
  const settled = await page.evaluate(() => window.log.settled.map((s) => s.status));
  assert.deepEqual(settled, ['conflict', 'conflict', 'conflict', 'conflict']);
  // a stale optimistic put (If-Match) is a SnapsyncError conflict with the current rev
  const stale = await page.evaluate(async () => {
    const c = window.db.space('cf').collection('issues');
    const e = await c.get('I-0');
    await c.put('I-0', { title: 'fresh' });
    try { await c.put('I-0', { title: 'stale' }, { rev: e.rev }); return null; } catch (err) {
      return { name: err.name, code: err.code, status: err.status, current: err.details.current_rev, isError: err instanceof window.S.SnapsyncError };
    }
  });
  assert.deepEqual({ ...stale, current: typeof stale.current }, { name: 'SnapsyncError', code: 'conflict', status: 409, current: 'string', isError: true });
});

test('two browser contexts with replicas of one space converge: edits of both, an edit of the same issue by both', { skip: SKIP, timeout: 60000 }, async (t) => {
  const srv = await server();
  t.after(() => srv.stop());
  await putSpace(srv, 'two');
  await seed(srv, 'two', 100);
  const pages = [];
  for (let i = 0; i < 2; i++) {
    const ctx = await browser.newContext();
    t.after(() => ctx.close());
    const page = await appPage(ctx, srv.base);
    assert.ok((await openReplica(page, srv.base, srv.adminToken, 'two', { persist: i ? 'memory' : 'indexeddb' })).ok);
    pages.push(page);
  }
  for (const p of pages) await waitFor(p, () => window.rep.status.state === 'live', null, 'live');
  await Promise.all(pages.map((p, k) => p.evaluate((k) => {
    for (let i = 0; i < 25; i++) window.rep.put('issues', `P${k}-${i}`, { title: `from page ${k}`, i });
    for (let i = 0; i < 10; i++) window.rep.put('issues', `I-${k * 10 + i}`, { title: `edited by page ${k}` });
    window.rep.delete('issues', `I-${50 + k}`);
    window.rep.put('issues', 'I-99', { title: `both edit this: page ${k}` });
  }, k)));
  for (const p of pages) await waitFor(p, () => window.log.settled.length === 37, null, 'every edit settled');
  // the one both edited: one applied, the other kept as a conflict
  const i99 = await Promise.all(pages.map((p) => p.evaluate(() => window.log.settled.find((s) => s.id === 'I-99').status)));
  assert.deepEqual(i99.sort(), ['applied', 'conflict']);
  const want = await serverState(srv, 'two');
  assert.equal(want.length, 100 + 50 - 2);
  for (const p of pages) {
    await waitFor(p, (n) => window.rep.size === n && !window.rep.query().some((e) => e.pending), want.length, 'convergence');
    await waitFor(p, (v) => window.rep.status.version >= v, (await apiOk(srv, 'GET', `${sp('two')}/sync/status`)).server_version, 'the last version');
    assert.deepEqual(await replicaState(p), want);
  }
});

test('errors: a 401 and a 403 reach the app as SnapsyncError (API calls, a replica, and the example page shows them)', { skip: SKIP, timeout: 60000 }, async (t) => {
  const srv = await server();
  t.after(() => srv.stop());
  await putSpace(srv, 'demo');
  await putSpace(srv, 'other');
  await seed(srv, 'demo', 3);
  const reader = (await createKey(srv, 'reader', ['demo'])).token;
  const otherWriter = (await createKey(srv, 'writer', ['other'])).token;
  const ctx = await browser.newContext();
  t.after(() => ctx.close());
  const page = await appPage(ctx, srv.base);
  const calls = await page.evaluate(async ({ base, reader, otherWriter }) => {
    const S = window.S;
    const show = async (p) => {
      try { await p; return 'no error'; } catch (e) {
        return { isError: e instanceof S.SnapsyncError, code: e.code, status: e.status, message: e.message };
      }
    };
    return {
      badToken: await show(S.snapsync({ url: base, token: 'sst_not-a-real-token' }).space('demo').collection('issues').get('I-1')),
      readerPut: await show(S.snapsync({ url: base, token: reader }).space('demo').collection('issues').put('I-1', { title: 'x' })),
      otherSpace: await show(S.snapsync({ url: base, token: otherWriter }).space('demo').collection('issues').get('I-1')),
    };
  }, { base: srv.base, reader, otherWriter });
  assert.deepEqual([calls.badToken.isError, calls.badToken.code, calls.badToken.status], [true, 'unauthorized', 401]);
  assert.deepEqual([calls.readerPut.code, calls.readerPut.status], ['forbidden', 403]);
  assert.deepEqual([calls.otherSpace.code, calls.otherSpace.status], ['forbidden', 403]);
  assert.ok(calls.readerPut.message.length > 0);

  // a replica with a token of another space: ready rejects with the 403
  const rep403 = await openReplica(page, srv.base, otherWriter, 'demo', { persist: 'memory' });
  assert.deepEqual([rep403.ok, rep403.error.code, rep403.error.status, rep403.status.state], [false, 'forbidden', 403, 'error']);
  // a replica with a reader token works; its edits settle as 403 errors
  await loadClient(page, srv.base);
  assert.ok((await openReplica(page, srv.base, reader, 'demo', { persist: 'memory' })).ok);
  await waitFor(page, () => window.rep.status.state === 'live', null, 'live');
  const settled = await page.evaluate(async () => {
    const r = await window.rep.put('issues', 'I-1', { title: 'not allowed' }).settled;
    return { status: r.status, code: r.error.code, httpStatus: r.error.status, after: window.rep.get('issues', 'I-1').body.title };
  });
  assert.deepEqual(settled, { status: 'error', code: 'forbidden', httpStatus: 403, after: 'Issue 1' });

  // the example page: a bad token shows 401, a reader's new issue shows 403
  const ex = await ctx.newPage();
  await ex.goto(`${ORIGIN}/examples/issues.html?server=${encodeURIComponent(srv.base)}&space=demo`);
  await ex.fill('#token', 'sst_not-a-real-token');
  await ex.click('#signin button');
  await ex.waitForSelector('#error:not([hidden])');
  assert.match(await ex.textContent('#error'), /^unauthorized \(401\)/);
  await ex.fill('#token', reader);
  await ex.click('#signin button');
  await ex.waitForSelector('#add:not([hidden])');
  await ex.waitForFunction(() => document.querySelectorAll('#list li').length === 3);
  await ex.fill('#title', 'a reader may not add this');
  await ex.click('#add button');
  await ex.waitForFunction(() => /^forbidden \(403\)/.test(document.getElementById('error').textContent));
  await ex.waitForFunction(() => document.querySelectorAll('#list li').length === 3, null, { timeout: 5000 });
});

test('the example page: a live list that works offline (an issue added while the server is away is pushed later)', { skip: SKIP, timeout: 60000 }, async (t) => {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-client-'));
  const args = ['--listen', `127.0.0.1:${port}`];
  let srv = await server({ args, dataDir, keepData: true });
  t.after(async () => { await srv.stop().catch(() => {}); });
  await putSpace(srv, 'demo');
  await seed(srv, 'demo', 2);
  const ctx = await browser.newContext();
  t.after(() => ctx.close());
  const ex = await ctx.newPage();
  await ex.goto(`${ORIGIN}/examples/issues.html?server=${encodeURIComponent(srv.base)}&space=demo`);
  await ex.fill('#token', srv.adminToken);
  await ex.click('#signin button');
  await ex.waitForFunction(() => document.querySelectorAll('#list li').length === 2);
  await apiOk(srv, 'PUT', `${sp('demo')}/collections/issues/entities/X`, { body: { title: 'from elsewhere' } });
  await ex.waitForFunction(() => document.querySelectorAll('#list li').length === 3);
  await srv.stop();
  await ex.waitForFunction(() => /offline/.test(document.getElementById('status').textContent));
  await ex.fill('#title', 'written offline');
  await ex.click('#add button');
  await ex.waitForFunction(() => [...document.querySelectorAll('#list li.pending')].some((li) => li.textContent === 'written offline'));
  srv = await server({ args, dataDir, keepData: false });
  await ex.waitForFunction(() => document.querySelectorAll('#list li').length === 4 && !document.querySelector('#list li.pending'), null, { timeout: 20000 });
  const titles = (await serverState(srv, 'demo')).map((e) => JSON.parse(e[3]).title).sort();
  assert.deepEqual(titles, ['Issue 0', 'Issue 1', 'from elsewhere', 'written offline']);
});

test('transport: eventsource: the feed through the browser\'s EventSource (?access_token=) follows live changes too', { skip: SKIP, timeout: 30000 }, async (t) => {
  const srv = await server();
  t.after(() => srv.stop());
  await putSpace(srv, 'es');
  await seed(srv, 'es', 5);
  const ctx = await browser.newContext();
  t.after(() => ctx.close());
  const page = await appPage(ctx, srv.base);
  assert.ok((await openReplica(page, srv.base, srv.adminToken, 'es', { persist: 'memory', transport: 'eventsource' })).ok);
  await waitFor(page, () => window.rep.status.state === 'live', null, 'live');
  const made = [];
  for (let i = 0; i < 5; i++) made.push(await apiOk(srv, 'PUT', `${sp('es')}/collections/issues/entities/E-${i}`, { body: { i } }));
  await waitFor(page, () => window.log.changes.filter((c) => c.source === 'remote').length >= 5, null, 'changes');
  assert.deepEqual((await page.evaluate(() => window.log.changes)).map((c) => [c.type, c.source, c.version]),
    [['reset', 'bootstrap', null], ...made.map((m) => ['put', 'remote', m.version])]);
  // a refused EventSource stream reports the server's error, not a silent loop
  const refused = await page.evaluate(async (base) => {
    const it = window.S.snapsync({ url: base, token: 'sst_bad', transport: 'eventsource' }).events({ topics: ['change'] });
    try { await it.opened; return null; } catch (e) { return [e.code, e.status]; }
  }, srv.base);
  assert.deepEqual(refused, ['unauthorized', 401]);
});
