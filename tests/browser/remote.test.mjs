// remote.test.mjs - the dashboard's off-site copies (--remote) in a real
// browser: each snapshot's upload status, followed live from the event
// stream (pending with the last error, uploaded, failed, with attempts),
// and an import from the remote's list into a fresh instance.
//
// The remote is Apache WebDAV on loopback behind the fault proxy of
// tests/remote/servers.mjs (apache2 and htpasswd: scripts/setup --test).
//
//   npm ci --prefix tests/browser
//   SNAPSYNC_BIN=$PWD/build/snapsync node --test --test-concurrency=1 tests/browser/

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { apiOk, putSpace, startServer } from '../e2e/helpers.mjs';
import { startDav } from '../remote/servers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.join(here, 'artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const FAST = ['--remote-retry-ms', '100', '--remote-timeout-ms', '1500'];
const WAIT = 60000;          // generous: only ends a test that hangs
const snapPath = (space, id = '') => `/api/v1/spaces/${space}/snapshots${id ? `/${id}` : ''}`;

let browser;
let rs;
const servers = [];
const contexts = [];

async function serve(opts) {
  const srv = await startServer(opts);
  servers.push(srv);
  return srv;
}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);
  const { chromium } = await import('playwright-core');
  mkdirSync(ARTIFACTS, { recursive: true });
  rs = await startDav();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  await Promise.all(servers.map((s) => s.stop().catch(() => {})));
  if (rs) await rs.close();
});

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, reducedMotion: 'reduce' });
  contexts.push(context);
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const t = m.text();
    if (/Content Security Policy|Refused to/i.test(t)) page.problems.push(`CSP: ${t}`);
    else if (m.type() === 'error' && !/status of (4\d\d|5\d\d)/.test(t)) page.problems.push(`console error: ${t}`);
  });
  page.setDefaultTimeout(WAIT);
  return page;
}

async function signIn(page, srv, hash) {
  await page.goto(`${srv.base}/ui/${hash}`);
  await page.locator('#token-input').fill(srv.adminToken);
  await page.locator('#login-submit').click();
  await page.locator('#view').waitFor({ state: 'visible' });
  await page.locator('#live[data-state="on"]').waitFor();
}

async function assertClean(page) {
  assert.deepEqual(page.problems, [], 'no CSP violation or script error on the page');
  const text = await page.evaluate(() => document.body.innerText);
  assert.doesNotMatch(text, /\bnull\b|\bundefined\b|\bNaN\b|\[object /, 'no leaked null/undefined/NaN');
}

const remoteCell = (page, id) => page.locator(`.snapshots-table tr[data-snapshot="${id}"] td.remote-cell`);

let uploaded = null;         // {srv, meta} of the snapshot the import test fetches

test('the snapshot list shows each upload live: pending with its error and attempt, then uploaded; a refused one failed, then retried from the page', async () => {
  const srv = await serve({ args: [...rs.args(), ...FAST], env: rs.env });
  await putSpace(srv, 'app');
  for (let i = 0; i < 5; i++) await apiOk(srv, 'PUT', `/api/v1/spaces/app/collections/docs/entities/d${i}`, { body: { i } });
  const page = await newPage();
  await signIn(page, srv, '#/spaces/app/snapshots');
  await page.locator('.snapshots-table').waitFor();

  // the remote answers 503 (transient) until told otherwise: the upload
  // waits to retry, and the row says so with the error
  rs.faults.mode = { status: 503, count: 100000 };
  const s1 = await apiOk(srv, 'POST', snapPath('app'), { body: { note: 'off-site one' }, timeoutMs: 30000 }, 201);
  const cell = remoteCell(page, s1.id);
  // (the retries go on meanwhile: one wait for the whole state, no second read)
  await page.locator(`.snapshots-table tr[data-snapshot="${s1.id}"] td.remote-cell[data-remote="pending"]`)
    .filter({ hasText: /^pending attempt \d+, retrying\s*creating the remote directory: .*503/ }).waitFor();
  await page.screenshot({ path: path.join(ARTIFACTS, 'remote-01-pending.png'), fullPage: true });

  // from here on the cell follows the event stream: the table is not redrawn
  await page.evaluate(() => { document.querySelector('.snapshots-table tbody').dataset.mark = 'kept'; });
  rs.faults.mode = 'pass';
  await page.locator(`.snapshots-table tr[data-snapshot="${s1.id}"] td.remote-cell[data-remote="uploaded"]`).waitFor();
  const meta = await apiOk(srv, 'GET', snapPath('app', s1.id));
  assert.equal(meta.remote.status, 'uploaded');
  assert.ok(meta.remote.attempts >= 2, JSON.stringify(meta.remote));
  assert.equal(await page.evaluate(() => document.querySelector('.snapshots-table tbody').dataset.mark), 'kept',
    'the cell was updated in place from the events');
  assert.equal(await cell.getAttribute('data-live'), '1');
  const text = await cell.innerText();
  assert.match(text, new RegExp(`uploaded[\\s\\S]*${meta.remote.attempts} attempts`));
  assert.doesNotMatch(text, /503/, 'the error is gone once uploaded');
  uploaded = { srv, meta };

  // refused (403): failed at the first attempt, with the reason
  rs.faults.mode = { status: 403, count: 100000 };
  const s2 = await apiOk(srv, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  await page.locator(`.snapshots-table tr[data-snapshot="${s2.id}"] td.remote-cell[data-remote="failed"]`).waitFor();
  rs.faults.mode = 'pass';
  const failed = remoteCell(page, s2.id);
  assert.equal(await failed.getAttribute('data-attempts'), '1');
  assert.match(await failed.innerText(), /failed[\s\S]*1 attempt[\s\S]*403/);
  // a reload shows the same from the metadata
  await page.reload();
  await page.locator(`.snapshots-table tr[data-snapshot="${s2.id}"] td.remote-cell[data-remote="failed"]`).waitFor();
  assert.equal(await remoteCell(page, s2.id).getAttribute('data-live'), '0');
  assert.match(await remoteCell(page, s2.id).innerText(), /failed[\s\S]*1 attempt[\s\S]*403/);
  assert.match(await remoteCell(page, s1.id).innerText(), /uploaded/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'remote-02-states.png'), fullPage: true });

  // the cause gone, Retry upload queues it again: the cell follows it to
  // uploaded, after one attempt of its new count
  await remoteCell(page, s2.id).getByRole('button', { name: 'Retry the off-site upload' }).click();
  await page.locator(`.snapshots-table tr[data-snapshot="${s2.id}"] td.remote-cell[data-remote="uploaded"]`).waitFor();
  assert.match(await remoteCell(page, s2.id).innerText(), /uploaded[\s\S]*1 attempt\b/);
  const m2 = await apiOk(srv, 'GET', snapPath('app', s2.id));
  assert.deepEqual([m2.remote.status, m2.remote.attempts, m2.remote.error], ['uploaded', 1, null]);
  await assertClean(page);
});

test('a fresh instance lists the remote\'s snapshots and imports one; without --remote the card says so', async () => {
  assert.ok(uploaded, 'the previous test uploaded a snapshot');
  const { srv: src, meta } = uploaded;
  const srcInst = (await apiOk(src, 'GET', '/api/v1/status')).instance_id;
  const dst = await serve({ args: [...rs.args(), ...FAST], env: rs.env });
  await putSpace(dst, 'app');
  const page = await newPage();
  await signIn(page, dst, '#/spaces/app/snapshots');
  const card = page.locator('.remote-card');
  await card.getByRole('button', { name: 'List off-site snapshots' }).click();
  const row = card.locator(`tr[data-snapshot="${meta.id}"]`);
  await row.waitFor();
  assert.equal(await row.getAttribute('data-remote-key'), meta.remote.key);
  assert.equal(await row.locator('code[title]').nth(1).getAttribute('title'), srcInst);
  assert.match(await card.innerText(), /Remote: webdav\+http:\/\//);
  assert.doesNotMatch(await card.innerText(), /dav-secret/);
  await row.getByRole('button', { name: `Import off-site snapshot ${meta.id}` }).click();
  const ok = card.locator('.ok');
  await ok.filter({ hasText: /Imported/ }).waitFor();
  const list = await apiOk(dst, 'GET', `${snapPath('app')}?kind=imported`);
  assert.equal(list.snapshots.length, 1);
  const imp = list.snapshots[0];
  assert.equal(imp.sha256, meta.sha256);
  assert.match(await ok.innerText(), new RegExp(`Imported ${meta.id} as snapshot ${imp.id}: ${meta.entity_total} entities`));
  // the imported snapshot shows in the list above without a reload
  await page.locator(`.snapshots-table tr[data-snapshot="${imp.id}"]`).waitFor();
  await page.screenshot({ path: path.join(ARTIFACTS, 'remote-03-import.png'), fullPage: true });
  await assertClean(page);

  // a server without --remote
  const plain = await serve({});
  await putSpace(plain, 'app');
  const p2 = await newPage();
  await signIn(p2, plain, '#/spaces/app/snapshots');
  await p2.locator('.remote-card').getByRole('button', { name: 'List off-site snapshots' }).click();
  await p2.locator('.remote-card .error').filter({ hasText: /no off-site remote/ }).waitFor();
  // and every snapshot row says it has no off-site copy
  await apiOk(plain, 'POST', snapPath('app'), { body: {}, timeoutMs: 30000 }, 201);
  await p2.locator('.snapshots-table td.remote-cell[data-remote="none"]').first().waitFor();
  await assertClean(p2);
});
