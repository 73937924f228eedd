// bootstrap.test.mjs - a web frontend starts the way a new peer does
// (docs/api.md, "A browser bootstraps from a snapshot"): the newest
// completed snapshot downloaded with fetch (?as=gzip: the stored file as
// the body), through DecompressionStream('gzip') into lines, its sha256
// checked against the ETag, then GET /changes?feed=sse followed from the
// snapshot's server_version. Chromium, on a page of another origin, against
// the real server, with writes made during and after the bootstrap; the
// page ends with the same entities as the server.
//
// When chromium is missing the test is skipped with a message saying so
// (scripts/run counts a skip as a failure).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { api, apiOk, putSpace, startServer } from '../e2e/helpers.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SKIP = existsSync(CHROMIUM) ? false : `chromium not found at ${CHROMIUM} (apt-get install -y chromium)`;
const SPACE = 'web';

let browser;
let pageServer;

before(async () => {
  if (SKIP) return;
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  pageServer = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>app</title><p>app</p>');
  });
  await new Promise((r) => pageServer.listen(0, '127.0.0.1', r));
});

after(async () => {
  if (browser) await browser.close();
  if (pageServer) pageServer.close();
});

/* The page's code, as docs/api.md shows it: a replica in a Map. */
function pageBootstrap({ base, space, token }) {
  const sp = `${base}/api/v1/spaces/${space}`;
  const key = (e) => `${e.collection}/${e.id}`;
  window.replica = new Map();
  window.applied = 0;
  window.lastVersion = 0;
  window.feedErrors = 0;
  return (async () => {
    const headers = { Authorization: `Bearer ${token}` };
    const list = await (await fetch(`${sp}/snapshots?status=completed&limit=1`, { headers })).json();
    const snap = list.snapshots[0];
    const res = await fetch(`${sp}/snapshots/${snap.id}/download?as=gzip`, { headers });
    if (!res.ok) throw new Error(`download: ${res.status}`);
    const [forHash, forLines] = res.body.tee();
    const hashed = new Response(forHash).arrayBuffer().then((b) => crypto.subtle.digest('SHA-256', b));
    const reader = forLines.pipeThrough(new DecompressionStream('gzip')).pipeThrough(new TextDecoderStream()).getReader();
    let header = null;
    let rest = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += value;
      let nl;
      while ((nl = rest.indexOf('\n')) >= 0) {
        const line = JSON.parse(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
        if (!header) { header = line; continue; }
        window.replica.set(key(line), { rev: line.rev, body: line.body });
      }
    }
    const hex = [...new Uint8Array(await hashed)].map((b) => b.toString(16).padStart(2, '0')).join('');
    if (`"${hex}"` !== res.headers.get('ETag')) throw new Error(`sha256 ${hex} is not the ETag ${res.headers.get('ETag')}`);
    window.snapshotVersion = header.server_version;
    window.lastVersion = header.server_version;
    // then the change feed from the snapshot's version: every change after it, then live
    const es = new EventSource(`${sp}/changes?feed=sse&since=${header.server_version}&access_token=${encodeURIComponent(token)}`);
    es.addEventListener('change', (ev) => {
      const e = JSON.parse(ev.data);
      if (e.deleted) window.replica.delete(key(e));
      else window.replica.set(key(e), { rev: e.rev, body: e.body });
      window.lastVersion = Number(ev.lastEventId);
      window.applied++;
    });
    es.onerror = () => { window.feedErrors++; };
    window.es = es;
    return { snapshot: snap.id, lines: window.replica.size, version: header.server_version };
  })();
}

async function serverLive(srv) {
  const out = new Map();
  let since = 0;
  for (;;) {
    const p = await apiOk(srv, 'GET', `/api/v1/spaces/${SPACE}/changes?since=${since}&limit=1000`, {}, 200);
    for (const e of p.changes) {
      if (e.deleted) out.delete(`${e.collection}/${e.id}`);
      else out.set(`${e.collection}/${e.id}`, { rev: e.rev, body: e.body });
    }
    since = p.last_version;
    if (!p.more) return { map: out, version: p.last_version };
  }
}

test('a browser bootstraps from the newest snapshot, then follows the change feed: the same entities as the server', { skip: SKIP, timeout: 120000 }, async (t) => {
  const origin = `http://127.0.0.1:${pageServer.address().port}`;
  const srv = await startServer({ args: ['--cors-origins', origin] });
  t.after(() => srv.stop());
  await putSpace(srv, SPACE);
  const N = 5000;
  for (let i = 0; i < N; i += 1000) {
    const changes = [];
    for (let k = i; k < i + 1000; k++) changes.push({ collection: k % 3 ? 'notes' : 'tasks', id: `e${k}`, base_rev: null, body: { k, text: `entity ${k}`, tags: ['a', k % 7] } });
    await apiOk(srv, 'POST', `/api/v1/spaces/${SPACE}/changes`, { body: { changes } }, 200);
  }
  const first = await apiOk(srv, 'POST', `/api/v1/spaces/${SPACE}/snapshots`, { body: {} }, 201);
  // a newer one: the page must take the newest
  await apiOk(srv, 'PUT', `/api/v1/spaces/${SPACE}/collections/notes/entities/e1`, { body: { edited: 'before the newest snapshot' } }, 200);
  const snap = await apiOk(srv, 'POST', `/api/v1/spaces/${SPACE}/snapshots`, { body: {} }, 201);
  assert.notEqual(first.id, snap.id);

  const page = await (await browser.newContext()).newPage();
  await page.goto(`${origin}/`);
  // writes while the page bootstraps: edits, deletes, new entities
  let writing = true;
  const writer = (async () => {
    let n = 0;
    while (writing || n < 50) {
      const k = (n * 37) % N;
      const coll = k % 3 ? 'notes' : 'tasks';
      if (n % 5 === 4) await api(srv, 'DELETE', `/api/v1/spaces/${SPACE}/collections/${coll}/entities/e${k}`);
      else await api(srv, 'PUT', `/api/v1/spaces/${SPACE}/collections/${coll}/entities/e${k}`, { body: { k, during: n } });
      await api(srv, 'PUT', `/api/v1/spaces/${SPACE}/collections/notes/entities/new${n}`, { body: { n } });
      n++;
    }
    return n;
  })();
  const boot = await page.evaluate(pageBootstrap, { base: srv.base, space: SPACE, token: srv.adminToken });
  writing = false;
  const during = await writer;
  assert.equal(boot.snapshot, snap.id);
  assert.equal(boot.version, snap.server_version);
  assert.equal(boot.lines, N);
  assert.ok(during >= 50);

  // writes after the bootstrap
  for (let n = 0; n < 30; n++) {
    await api(srv, 'PUT', `/api/v1/spaces/${SPACE}/collections/tasks/entities/after${n}`, { body: { after: n } });
    if (n % 3 === 0) await api(srv, 'DELETE', `/api/v1/spaces/${SPACE}/collections/notes/entities/new${n}`);
  }
  await api(srv, 'DELETE', `/api/v1/spaces/${SPACE}/collections/notes/entities/e1`);

  const want = await serverLive(srv);
  await page.waitForFunction((v) => window.lastVersion >= v, want.version, { timeout: 30000, polling: 50 });
  const got = new Map(await page.evaluate(() => [...window.replica.entries()]));
  assert.equal(got.size, want.map.size);
  for (const [k, v] of want.map) assert.deepEqual(got.get(k), v, k);
  const stats = await page.evaluate(() => ({ applied: window.applied, errors: window.feedErrors }));
  assert.equal(stats.errors, 0);
  assert.ok(stats.applied >= during + 40, `the feed brought the writes after the snapshot (${stats.applied})`);
  await page.evaluate(() => window.es.close());
});
