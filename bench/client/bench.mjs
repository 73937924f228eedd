// bench/client/bench.mjs - the JavaScript client in Chromium (playwright-core
// from tests/browser): time to a usable replica of N tracker entities
// bootstrapped from a snapshot versus paging /changes, and the replica's
// change-apply rate from the live feed. See bench/client/README.md.
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { apiOk, putSpace, startServer } from '../../tests/e2e/helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const N = Number(process.env.N || 100000);
const RUNS = Number(process.env.RUNS || 3);
const M = Number(process.env.APPLY || 20000);
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const log = (...a) => console.error('[client bench]', ...a);
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };

const require = createRequire(path.join(root, 'tests', 'browser', 'package.json'));
const { chromium } = require('playwright-core');

const pageServer = http.createServer((req, res) => { res.writeHead(200, { 'Content-Type': 'text/html' }); res.end('<!doctype html><title>bench</title>'); });
await new Promise((r) => pageServer.listen(0, '127.0.0.1', r));
const ORIGIN = `http://127.0.0.1:${pageServer.address().port}`;
const srv = await startServer({ args: ['--cors-origins', ORIGIN] });
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'] });
try {
  await putSpace(srv, 'bench');
  log(`loading ${N} tracker entities (bench/sync/sync.mjs snap-load)`);
  const load = spawnSync(process.execPath, [path.join(root, 'bench', 'sync', 'sync.mjs'), 'snap-load', '--url', srv.base,
    '--token', srv.adminToken, '--space', 'bench', '--count', String(N)], { stdio: ['ignore', 'pipe', 'inherit'] });
  if (load.status !== 0) throw new Error('load failed');
  const snap = await apiOk(srv, 'POST', '/api/v1/spaces/bench/snapshots', { body: {} }, 201);
  log(`snapshot ${snap.id}: ${snap.entity_total} entities, ${snap.size_bytes} bytes gzip, ${snap.raw_bytes} bytes NDJSON`);

  const open = async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${ORIGIN}/`);
    await page.evaluate(async (base) => { window.S = await import(`${base}/sdk/snapsync.js`); }, srv.base);
    return { ctx, page };
  };
  const boot = async (page, mode) => page.evaluate(async ({ base, token, mode }) => {
    const t0 = performance.now();
    const rep = window.S.snapsync({ url: base, token }).space('bench').replica({ persist: 'memory', bootstrap: mode });
    await rep.ready;
    const ms = performance.now() - t0;
    window.rep = rep;
    const heap = performance.memory ? performance.memory.usedJSHeapSize : null;
    return { ms, size: rep.size, method: rep.status.bootstrap.method, heap };
  }, { base: srv.base, token: srv.adminToken, mode });

  const results = { snapshot: [], feed: [], apply: [] };
  for (let run = 0; run < RUNS; run++) {
    for (const mode of run % 2 ? ['feed', 'snapshot'] : ['snapshot', 'feed']) {
      const { ctx, page } = await open();
      const r = await boot(page, mode);
      if (r.size !== N || r.method !== mode) throw new Error(`bad replica: ${JSON.stringify(r)}`);
      log(`run ${run + 1} ${mode}: ${r.ms.toFixed(0)} ms (${r.size} entities, heap ${r.heap ? (r.heap / 1048576).toFixed(0) + ' MiB' : '?'})`);
      results[mode].push(r.ms);
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
  const lines = [
    `# client bench ${new Date().toISOString()}`,
    '',
    `Chromium ${browser.version()}, ${N} tracker entities (bench/lib/tracker-data.mjs via bench/sync/sync.mjs), snapshot ${snap.size_bytes} bytes gzip / ${snap.raw_bytes} bytes NDJSON; ${RUNS} runs, order alternated; replica persist: memory.`,
    '',
    '| measure | median | runs |',
    '|---|---|---|',
    `| usable replica from the snapshot | ${ms(median(results.snapshot))} | ${results.snapshot.map(ms).join(', ')} |`,
    `| usable replica by paging /changes (limit 1000) | ${ms(median(results.feed))} | ${results.feed.map(ms).join(', ')} |`,
    `| snapshot speed-up | ${(median(results.feed) / median(results.snapshot)).toFixed(2)}× | |`,
    `| change-apply rate, ${M} changes from feed=sse | ${Math.round(median(results.apply))}/s | ${results.apply.map((r) => Math.round(r)).join(', ')} |`,
  ];
  console.log(lines.join('\n'));
} finally {
  await browser.close();
  await srv.stop();
  pageServer.close();
}
