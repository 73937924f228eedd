// bench/client/bench.mjs - the JavaScript client in Chromium (playwright-core
// from tests/browser): time to a usable replica of N tracker entities
// bootstrapped from a snapshot versus paging /changes (in memory and in
// IndexedDB), where the snapshot path's time goes, IndexedDB's own write
// rate, PouchDB replicating the same documents from pouchdb-server, and the
// replica's change-apply rate from the live feed. See bench/client/README.md.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { apiOk, freePort, putSpace, sleep, startServer } from '../../tests/e2e/helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const N = Number(process.env.N || 100000);
const RUNS = Number(process.env.RUNS || 3);
const M = Number(process.env.APPLY || 20000);
const IDB = process.env.IDB !== '0';
const POUCH = process.env.POUCH !== '0';
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const POUCH_SERVER = path.join(root, 'bench', 'sync', 'node_modules', 'pouchdb-server', 'bin', 'pouchdb-server');
const POUCH_DIST = path.join(here, 'node_modules', 'pouchdb', 'dist');
const log = (...a) => console.error('[client bench]', ...a);
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };

const require = createRequire(path.join(root, 'tests', 'browser', 'package.json'));
const { chromium } = require('playwright-core');

const pageServer = http.createServer((req, res) => { res.writeHead(200, { 'Content-Type': 'text/html' }); res.end('<!doctype html><title>bench</title>'); });
await new Promise((r) => pageServer.listen(0, '127.0.0.1', r));
const ORIGIN = `http://127.0.0.1:${pageServer.address().port}`;
const srv = await startServer({ args: ['--cors-origins', ORIGIN] });
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'] });
let pouch = null;
try {
  await putSpace(srv, 'bench');
  log(`loading ${N} tracker entities (bench/sync/sync.mjs snap-load)`);
  const load = spawnSync(process.execPath, [path.join(root, 'bench', 'sync', 'sync.mjs'), 'snap-load', '--url', srv.base,
    '--token', srv.adminToken, '--space', 'bench', '--count', String(N)], { stdio: ['ignore', 'pipe', 'inherit'] });
  if (load.status !== 0) throw new Error('load failed');
  const snap = await apiOk(srv, 'POST', '/api/v1/spaces/bench/snapshots', { body: {}, timeoutMs: 300000 }, 201);
  log(`snapshot ${snap.id}: ${snap.entity_total} entities, ${snap.size_bytes} bytes gzip, ${snap.raw_bytes} bytes NDJSON`);

  if (POUCH) {
    // pouchdb-server (bench/sync's package) on a fresh LevelDB dir, CORS on,
    // database "bench" with the same N documents (sync.mjs pouch-load)
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snapsync-bench-client-pouch-'));
    const port = await freePort();
    const proc = spawn(process.execPath, [POUCH_SERVER, '--port', String(port), '--host', '127.0.0.1', '--dir', dir,
      '--config', path.join(dir, 'config.json')], { cwd: dir, stdio: ['ignore', 'ignore', 'ignore'] });
    pouch = { proc, dir, url: `http://127.0.0.1:${port}` };
    const call = async (method, p, body) => {
      const r = await fetch(pouch.url + p, { method, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: r.status, body: await r.text() };
    };
    for (let i = 0; ; i++) {
      try { if ((await call('GET', '/')).status === 200) break; } catch { /* not yet */ }
      if (i > 300) throw new Error('pouchdb-server did not start');
      await sleep(100);
    }
    await call('PUT', '/_config/httpd/enable_cors', 'true');
    await call('PUT', '/_config/cors/origins', '*');
    if ((await call('PUT', '/bench')).status !== 201) throw new Error('pouchdb-server: PUT /bench failed');
    log(`loading ${N} documents into pouchdb-server (bench/sync/sync.mjs pouch-load)`);
    const pl = spawnSync(process.execPath, [path.join(root, 'bench', 'sync', 'sync.mjs'), 'pouch-load', '--url', pouch.url,
      '--db', 'bench', '--count', String(N)], { stdio: ['ignore', 'pipe', 'inherit'] });
    if (pl.status !== 0) throw new Error('pouch-load failed');
  }

  const open = async ({ pouchdb = false } = {}) => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${ORIGIN}/`);
    if (pouchdb) {
      await page.addScriptTag({ path: path.join(POUCH_DIST, 'pouchdb.min.js') });
      await page.addScriptTag({ path: path.join(POUCH_DIST, 'pouchdb.memory.min.js') });
    } else {
      await page.evaluate(async (base) => { window.S = await import(`${base}/sdk/snapsync.js`); }, srv.base);
    }
    return { ctx, page };
  };

  // Usable (the same test for every path): `ready` resolved (replication
  // complete for PouchDB), then 1,000 entities spread over the data set read
  // by id with their bodies, and a query of one whole collection (projects).
  // "All read" adds reading the body of every entity (a query over all).
  const boot = async (page, mode, persist) => page.evaluate(async ({ base, token, mode, persist, n }) => {
    const ids = [];
    for (let i = 0; i < 1000; i++) ids.push(Math.floor((i * n) / 1000));
    const t0 = performance.now();
    const rep = window.S.snapsync({ url: base, token }).space('bench').replica({ persist, bootstrap: mode, name: `bench-${Math.random()}` });
    await rep.ready;
    const tReady = performance.now() - t0;
    const keys = [...rep.entities.keys()];
    let got = 0;
    for (const i of ids) {
      const [c, id] = keys[i].split('\u0000');
      const e = rep.get(c, id);
      if (e && e.id === id && e.body && typeof e.body === 'object') got++;
    }
    const projects = rep.query((e) => typeof e.body.name === 'string', { collection: 'projects' }).length;
    const tUsable = performance.now() - t0;
    const all = rep.query((e) => e.body !== null && typeof e.body === 'object').length;
    const tAll = performance.now() - t0;
    const heap = performance.memory ? performance.memory.usedJSHeapSize : null;
    window.rep = rep;
    return { ready: tReady, usable: tUsable, all: tAll, got, projects, size: rep.size, count: all, method: rep.status.bootstrap.method, heap };
  }, { base: srv.base, token: srv.adminToken, mode, persist, n: N });

  const pouchBoot = async (page, adapter) => page.evaluate(async ({ url, adapter, n }) => {
    const t0 = performance.now();
    const db = new window.PouchDB(`bench-${Math.random()}`, { adapter });
    const info = await db.replicate.from(`${url}/bench`);
    const tReady = performance.now() - t0;
    const all = await db.allDocs({ limit: n });
    const ids = [];
    for (let i = 0; i < 1000; i++) ids.push(all.rows[Math.floor((i * n) / 1000)].id);
    let got = 0;
    for (const id of ids) {
      const d = await db.get(id);
      if (d && d._id === id && typeof d.collection === 'string') got++;
    }
    const p = await db.allDocs({ startkey: 'projects:', endkey: 'projects:\uffff', include_docs: true });
    const projects = p.rows.filter((r) => typeof r.doc.name === 'string').length;
    const tUsable = performance.now() - t0;
    const heap = performance.memory ? performance.memory.usedJSHeapSize : null;
    return { ready: tReady, usable: tUsable, got, projects, size: (await db.info()).doc_count, written: info.docs_written, adapter: db.adapter, heap };
  }, { url: pouch.url, adapter, n: N });

  // Where the snapshot path's time goes, each step on its own in one page:
  // the download read to its end (fetch undoes the gzip coding); the same
  // plus the UTF-8 decode and the line split; plus cutting collection and
  // id from each line (what the replica's bootstrap does); a full
  // JSON.parse of every line instead (what reading every body costs); and
  // IndexedDB's write rate on its own, one transaction per 2,000 lines,
  // four in flight (the replica's pattern): the N lines as one record each
  // ({collection, id, line}), then as 2,000-line segment records (what the
  // replica stores).
  const steps = async (page) => page.evaluate(async ({ base, token, id }) => {
    const url = `${base}/api/v1/spaces/bench/snapshots/${id}/download`;
    const get = () => fetch(url, { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store', credentials: 'omit' });
    const out = {};
    let t = performance.now();
    const chunks = [];
    const rd = (await get()).body.getReader();
    for (;;) { const r = await rd.read(); if (r.done) break; chunks.push(r.value); }
    out.download = performance.now() - t;
    const lines = (decodeOnly) => {
      const dec = new TextDecoder();
      let rest = '';
      const all = [];
      for (const c of chunks) {
        const parts = (rest + dec.decode(c, { stream: true })).split('\n');
        rest = parts.pop();
        if (!decodeOnly) for (const p of parts) all.push(p);
      }
      return all;
    };
    t = performance.now();
    const ls = lines(false);
    out.decode_split = performance.now() - t;
    ls.shift();
    t = performance.now();
    const m = new Map();
    for (const l of ls) { const k = window.S.snapshotLineKey(l); m.set(`${k.collection}\u0000${k.id}`, l); }
    out.key_cut = performance.now() - t;
    t = performance.now();
    const ents = window.S.parseSnapshotEntities(ls, 2);
    out.full_parse = performance.now() - t;
    if (m.size !== ents.length) throw new Error('steps: line count');
    const recs = ls.map((l) => window.S.snapshotLineKey(l));
    const db = await new Promise((res, rej) => {
      const r = indexedDB.open(`idb-bound-${Math.random()}`, 1);
      r.onupgradeneeded = () => {
        r.result.createObjectStore('entities', { keyPath: ['collection', 'id'] });
        r.result.createObjectStore('segments', { autoIncrement: true });
      };
      r.onsuccess = () => res(r.result);
      r.onerror = () => rej(r.error);
    });
    const idbWrite = async (fill) => {
      const t0 = performance.now();
      const inflight = new Set();
      for (let i = 0; i < recs.length; i += 2000) {
        const tx = db.transaction(['entities', 'segments'], 'readwrite');
        fill(tx, i, Math.min(recs.length, i + 2000));
        const p = new Promise((res, rej) => { tx.oncomplete = res; tx.onerror = () => rej(tx.error); });
        inflight.add(p);
        p.then(() => inflight.delete(p));
        if (inflight.size >= 4) await Promise.race(inflight);
      }
      await Promise.all(inflight);
      return performance.now() - t0;
    };
    out.idb_records = await idbWrite((tx, a, b) => { const st = tx.objectStore('entities'); for (let j = a; j < b; j++) st.put(recs[j]); });
    out.idb_segments = await idbWrite((tx, a, b) => { tx.objectStore('segments').put(ls.slice(a, b).join('\n')); });
    db.close();
    out.bytes = chunks.reduce((a, c) => a + c.length, 0);
    return out;
  }, { base: srv.base, token: srv.adminToken, id: snap.id });

  const kinds = [['snapshot', 'memory'], ['feed', 'memory']];
  if (IDB) kinds.push(['snapshot', 'indexeddb'], ['feed', 'indexeddb']);
  if (POUCH) kinds.push(['pouchdb', 'idb'], ['pouchdb', 'memory']);
  const results = {};
  for (const [m, p] of kinds) results[`${m}/${p}`] = [];
  results.steps = [];
  results.apply = [];
  for (let run = 0; run < RUNS; run++) {
    // the order rotates from run to run
    const order = kinds.map((_, i) => kinds[(i + run) % kinds.length]);
    for (const [mode, persist] of order) {
      const { ctx, page } = await open({ pouchdb: mode === 'pouchdb' });
      const r = mode === 'pouchdb' ? await pouchBoot(page, persist) : await boot(page, mode, persist);
      if (r.size !== N || r.got !== 1000 || r.projects !== Math.max(1, Math.round(N * 0.001)) || (mode !== 'pouchdb' && (r.method !== mode || r.count !== N))) {
        throw new Error(`bad replica (${mode}/${persist}): ${JSON.stringify(r)}`);
      }
      log(`run ${run + 1} ${mode}/${persist}: ready ${r.ready.toFixed(0)} ms, usable ${r.usable.toFixed(0)} ms${r.all ? `, every body read ${r.all.toFixed(0)} ms` : ''} (${r.size} entities, heap ${r.heap ? (r.heap / 1048576).toFixed(0) + ' MiB' : '?'})`);
      results[`${mode}/${persist}`].push(r);
      await ctx.close();
    }
    {
      const { ctx, page } = await open();
      const s = await steps(page);
      log(`run ${run + 1} steps: ${Object.entries(s).map(([k, v]) => `${k} ${Math.round(v)}`).join(', ')}`);
      results.steps.push(s);
      await ctx.close();
    }
    // apply rate, in a space of its own (the bootstrap figures stay on the
    // same N): a replica goes offline, M changes are written, then it
    // reconnects and takes them from /changes?feed=sse
    const space = `live${run}`;
    await putSpace(srv, space);
    const { ctx, page } = await open();
    await page.evaluate(async ({ base, token, space }) => {
      window.rep = window.S.snapsync({ url: base, token }).space(space).replica({ persist: 'memory' });
      await window.rep.ready;
      await new Promise((r) => { const c = () => (window.rep.status.state === 'live' ? r() : setTimeout(c, 20)); c(); });
      window.rep.pause();
    }, { base: srv.base, token: srv.adminToken, space });
    let target = 0;
    for (let i = 0; i < M; i += 1000) {
      const changes = [];
      for (let j = i; j < Math.min(M, i + 1000); j++) {
        changes.push({ collection: 'issues', id: `apply-${j}`, base_rev: null,
          body: { title: `applied change ${j}`, status: 'todo', priority: 'p2', labels: ['api', 'perf'], n: j } });
      }
      target = (await apiOk(srv, 'POST', `/api/v1/spaces/${space}/changes`, { body: { changes } }, 200)).server_version;
    }
    const a = await page.evaluate(async (target) => {
      const rep = window.rep;
      const t0 = performance.now();
      rep.resume();
      await new Promise((res) => {
        const check = () => (rep.status.version >= target ? res() : null);
        rep.on('change', check);
        check();
      });
      return { ms: performance.now() - t0, size: rep.size };
    }, target);
    if (a.size !== M) throw new Error(`apply: the replica holds ${a.size} of ${M}`);
    const rate = M / (a.ms / 1000);
    log(`run ${run + 1} apply: ${M} changes in ${a.ms.toFixed(0)} ms = ${Math.round(rate)}/s`);
    results.apply.push(rate);
    await ctx.close();
  }

  const ms = (v) => `${Math.round(v)} ms`;
  const med = (k, f) => median(results[k].map((r) => r[f]));
  const runs = (k, f) => results[k].map((r) => ms(r[f])).join(', ');
  const ratio = (a, b) => `${(a / b).toFixed(2)}×`;
  const lines = [
    `# client bench ${new Date().toISOString()}`,
    '',
    `Chromium ${browser.version()}, ${N} tracker entities (bench/lib/tracker-data.mjs via bench/sync/sync.mjs), snapshot ${snap.size_bytes} bytes gzip / ${snap.raw_bytes} bytes NDJSON; ${RUNS} runs, order rotated. Usable: ready, then 1,000 entities read by id and one collection queried (bench/client/README.md).`,
    '',
    '| measure | median | runs |',
    '|---|---|---|',
  ];
  const row = (label, k, f) => lines.push(`| ${label} | ${ms(med(k, f))} | ${runs(k, f)} |`);
  row('memory: usable replica from the snapshot', 'snapshot/memory', 'usable');
  row('memory: usable replica by paging /changes (limit 1000)', 'feed/memory', 'usable');
  lines.push(`| memory: snapshot speed-up (usable) | ${ratio(med('feed/memory', 'usable'), med('snapshot/memory', 'usable'))} | |`);
  row('memory: snapshot, then every body read', 'snapshot/memory', 'all');
  row('memory: paging, then every body read', 'feed/memory', 'all');
  lines.push(`| memory: snapshot speed-up (every body read) | ${ratio(med('feed/memory', 'all'), med('snapshot/memory', 'all'))} | |`);
  if (IDB) {
    row('IndexedDB: usable replica from the snapshot', 'snapshot/indexeddb', 'usable');
    row('IndexedDB: usable replica by paging /changes', 'feed/indexeddb', 'usable');
    lines.push(`| IndexedDB: snapshot speed-up (usable) | ${ratio(med('feed/indexeddb', 'usable'), med('snapshot/indexeddb', 'usable'))} | |`);
  }
  if (POUCH) {
    row('PouchDB (idb adapter) replicating from pouchdb-server, usable', 'pouchdb/idb', 'usable');
    row('PouchDB (memory adapter), usable', 'pouchdb/memory', 'usable');
    if (IDB) lines.push(`| PouchDB idb / snapsync IndexedDB replica from the snapshot | ${ratio(med('pouchdb/idb', 'usable'), med('snapshot/indexeddb', 'usable'))} | |`);
    lines.push(`| PouchDB memory / snapsync memory replica from the snapshot | ${ratio(med('pouchdb/memory', 'usable'), med('snapshot/memory', 'usable'))} | |`);
  }
  for (const [k, label] of [['download', 'step: download read to the end (gzip undone by fetch)'], ['decode_split', 'step: UTF-8 decode + line split'],
    ['key_cut', 'step: collection and id cut from each line, into a Map'], ['full_parse', 'step: JSON.parse of every line'],
    ['idb_records', `step: IndexedDB alone, ${N} lines as one record each`], ['idb_segments', `step: IndexedDB alone, ${N} lines as 2,000-line segment records`]]) {
    lines.push(`| ${label} | ${ms(median(results.steps.map((s) => s[k])))} | ${results.steps.map((s) => ms(s[k])).join(', ')} |`);
  }
  lines.push(`| change-apply rate, ${M} changes from feed=sse | ${Math.round(median(results.apply))}/s | ${results.apply.map((r) => Math.round(r)).join(', ')} |`);
  console.log(lines.join('\n'));
} finally {
  await browser.close();
  await srv.stop();
  pageServer.close();
  if (pouch) {
    pouch.proc.kill('SIGTERM');
    fs.rmSync(pouch.dir, { recursive: true, force: true });
  }
}
