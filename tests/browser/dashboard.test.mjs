// dashboard.test.mjs - the operator dashboard (/ui/, SPEC §10) in a real
// browser: playwright-core drives Debian's chromium (/usr/bin/chromium; no
// browser is downloaded) against real snapsync servers on loopback.
//
//   npm ci --prefix tests/browser
//   node --test tests/browser/
//
// Screenshots of every page land in tests/browser/artifacts/ (git-ignored).
// When chromium is missing every test is skipped with a message saying so.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { api, apiOk, createKey, putSpace, sleep, startServer } from '../e2e/helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.join(here, 'artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SKIP = existsSync(CHROMIUM) ? false : `chromium not found at ${CHROMIUM} (apt-get install -y chromium)`;

const SPACE = 'demo';
const sp = (s = SPACE) => `/api/v1/spaces/${s}`;

let chromium;
let browser;
let srv;        // the instance the dashboard is served from
let peer;       // a second instance to sync with
const contexts = [];

before(async () => {
  if (SKIP) return;
  ({ chromium } = await import('playwright-core'));
  mkdirSync(ARTIFACTS, { recursive: true });
  [srv, peer] = await Promise.all([startServer(), startServer()]);

  // the dashboard's instance: two collections, enough issues for two pages
  await putSpace(srv, SPACE);
  const issues = [];
  for (let i = 1; i <= 120; i++) {
    issues.push({ collection: 'issues', id: `ISS-${i}`, base_rev: null,
      body: { title: `Issue ${i}`, state: i % 3 ? 'open' : 'closed', priority: i % 5 } });
  }
  await apiOk(srv, 'POST', `${sp()}/changes`, { body: { changes: issues } }, 200);
  for (let i = 1; i <= 3; i++) {
    await apiOk(srv, 'PUT', `${sp()}/collections/notes/entities/N-${i}`, { body: { text: `note ${i}`, tags: ['a', 'b'] } });
  }
  await putSpace(srv, 'archive');

  // the peer: a collection the dashboard's instance does not have yet
  await putSpace(peer, SPACE);
  const items = [];
  for (let i = 1; i <= 30; i++) items.push({ collection: 'items', id: `I-${i}`, base_rev: null, body: { n: i } });
  await apiOk(peer, 'POST', `${sp()}/changes`, { body: { changes: items } }, 200);

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  await Promise.all([srv, peer].filter(Boolean).map((s) => s.stop().catch(() => {})));
});

// ---------------------------------------------------------------------------
// helpers

/** A fresh page (own context, so its own sessionStorage); CSP reports and
 *  script errors are collected and checked by assertClean(). */
async function newPage({ width = 1280, height = 900 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, acceptDownloads: true, reducedMotion: 'reduce' });
  contexts.push(context);
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const t = m.text();
    if (/Content Security Policy|Refused to/i.test(t)) page.problems.push(`CSP: ${t}`);
    else if (m.type() === 'error' && !/status of (4\d\d|5\d\d)/.test(t)) page.problems.push(`console error: ${t}`);
  });
  page.setDefaultTimeout(15000);
  return page;
}

/** No CSP report, no script error, and no "null"/"undefined"/"NaN" leaked into
 *  the visible text (the test data holds none of those words). */
async function assertClean(page) {
  assert.deepEqual(page.problems, [], 'no CSP violation or script error on the page');
  const text = await page.evaluate(() => document.body.innerText);
  assert.doesNotMatch(text, /\bnull\b|\bundefined\b|\bNaN\b|\[object /, 'no leaked null/undefined/NaN');
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** Opens the dashboard and signs in through the form. */
async function signIn(page, token = srv.adminToken, hash = '') {
  await page.goto(`${srv.base}/ui/${hash}`);
  await page.locator('#token-input').fill(token);
  await page.locator('#login-submit').click();
  await page.locator('#view').waitFor({ state: 'visible' });
}

async function waitLive(page) {
  await page.locator('#live[data-state="on"]').waitFor();
}

/** Waits until the locator's text matches re; returns the text. */
async function waitText(locator, re, timeout = 15000) {
  const deadline = Date.now() + timeout;
  let last = '';
  for (;;) {
    last = (await locator.textContent().catch(() => '')) || '';
    if (re.test(last)) return last;
    if (Date.now() > deadline) throw new Error(`timeout waiting for ${re} in ${locator}; text: ${JSON.stringify(last.slice(0, 500))}`);
    await sleep(50);
  }
}

async function noHorizontalScroll(page) {
  const { sw, iw } = await page.evaluate(() => ({ sw: document.documentElement.scrollWidth, iw: window.innerWidth }));
  assert.ok(sw <= iw, `page is ${sw}px wide in a ${iw}px viewport`);
}

async function entityOrNull(s, collection, id) {
  const r = await api(s, 'GET', `${sp()}/collections/${collection}/entities/${encodeURIComponent(id)}`);
  if (r.status === 404) return null;
  assert.equal(r.status, 200, r.text);
  return r.body;
}

/** Pushes a stale edit (base_rev one behind) so the server keeps it as a conflict record. */
async function makeConflict(collection, id, body) {
  const cur = await apiOk(srv, 'GET', `${sp()}/collections/${collection}/entities/${id}`, {}, 200);
  // edit it once more so the rev the client "had" is stale
  const next = await apiOk(srv, 'PUT', `${sp()}/collections/${collection}/entities/${id}`,
    { body: { ...cur.body, edited: 'on the server' } });
  const r = await apiOk(srv, 'POST', `${sp()}/changes`,
    { body: { changes: [{ collection, id, base_rev: cur.rev, body }] } }, 200);
  assert.equal(r.results[0].status, 'conflict', JSON.stringify(r));
  return { conflictId: r.results[0].conflict_id, current: next };
}

// ---------------------------------------------------------------------------

test('sign-in: a wrong token is refused in plain words; the right one, typed with the keyboard, opens the spaces', { skip: SKIP }, async () => {
  const page = await newPage();
  await page.goto(`${srv.base}/ui/`);
  await page.locator('#login').waitFor();
  // the token box has focus: type and press Enter, no mouse
  assert.equal(await page.evaluate(() => document.activeElement.id), 'token-input');
  await page.keyboard.type('sst_this-token-does-not-exist-0000000000000000');
  await page.keyboard.press('Enter');
  const msg = await waitText(page.locator('#login-error'), /unknown token/);
  assert.match(msg, /Sign-in failed: unknown token/);
  assert.equal(await page.locator('#view').isVisible(), false);
  await shot(page, '01-login-error');

  await page.locator('#token-input').focus();
  await page.keyboard.type(srv.adminToken);
  await page.keyboard.press('Enter');
  const row = page.locator(`.spaces-table tr[data-space="${SPACE}"]`);
  await row.waitFor();
  const cells = await row.locator('td').allTextContents();
  assert.equal(cells[1], '123', `entity count in ${JSON.stringify(cells)}`);   // 120 issues + 3 notes
  assert.equal(await page.evaluate(() => sessionStorage.getItem('snapsync.token')), srv.adminToken);
  assert.equal(await page.locator('#nav-audit').isVisible(), true, 'an admin key sees the audit log');
  await waitLive(page);

  // the change rate counts SSE change events per space per minute
  for (let i = 0; i < 3; i++) {
    await apiOk(srv, 'PUT', `${sp()}/collections/notes/entities/RATE-${i}`, { body: { i } });
  }
  await waitText(row.locator('td').last(), /^[3-9]\/min$/);
  await waitText(row.locator('td').nth(1), /^126$/);              // the list follows the changes
  assert.equal(await page.locator('.spaces-table tr[data-space="archive"] td').last().textContent(), '0/min');
  await shot(page, '02-spaces');

  // a reload keeps the session (sessionStorage); sign out clears it
  await page.reload();
  await row.waitFor();
  await page.locator('#signout').click();
  await page.locator('#login').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('snapsync.token')), null);
  await waitText(page.locator('#login-info'), /Signed out/);
  await assertClean(page);
});

test('collections and entities: counts, paging with next_cursor, pretty-printed JSON', { skip: SKIP }, async () => {
  const page = await newPage();
  await signIn(page, srv.adminToken, `#/spaces/${SPACE}`);
  const issuesLink = page.locator('.collection-list a[data-collection="issues"]');
  await waitText(issuesLink, /issues\s*120/);
  await waitText(page.locator('.collection-list a[data-collection="notes"]'), /notes\s*6/);
  await issuesLink.click();
  await page.waitForFunction(() => location.hash === '#/spaces/demo/collections/issues');
  const rows = page.locator('.entities-table tbody tr');
  await page.waitForFunction(() => document.querySelectorAll('.entities-table tbody tr').length === 50);
  for (const n of [100, 120]) {
    await page.getByRole('button', { name: 'Load more' }).click();
    await page.waitForFunction((k) => document.querySelectorAll('.entities-table tbody tr').length === k, n);
  }
  assert.equal(await page.getByRole('button', { name: 'Load more' }).isVisible(), false, 'no more pages');
  assert.equal(await rows.count(), 120);

  await page.getByRole('button', { name: 'Show entity ISS-7', exact: true }).click();
  const detail = page.locator('.entity-detail');
  await detail.locator('pre.json').waitFor();
  const e = await apiOk(srv, 'GET', `${sp()}/collections/issues/entities/ISS-7`, {}, 200);
  const text = await detail.textContent();
  assert.ok(text.includes(e.rev), 'rev shown');
  assert.match(text, /Version\s*7/);
  assert.match(text, /Created\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/);
  assert.equal(await detail.locator('pre.json').textContent(), JSON.stringify(e.body, null, 2));
  await shot(page, '03-collections');
  await assertClean(page);
});

test('snapshots: take one and watch the bar reach completed; filters; preview; download', { skip: SKIP }, async () => {
  const page = await newPage();
  await signIn(page, srv.adminToken, `#/spaces/${SPACE}/snapshots`);
  await waitLive(page);
  await page.locator('.snapshots-table').waitFor();
  await page.getByLabel('Note').fill('before the cleanup');
  await page.getByRole('button', { name: 'Take snapshot' }).click();
  const item = page.locator('.progress-item[data-snapshot]');
  await item.waitFor();
  await page.locator('.progress-item[data-status="completed"]').waitFor();
  const bar = item.locator('[role=progressbar]');
  assert.equal(await bar.getAttribute('aria-valuenow'), '100');
  assert.equal(await bar.getAttribute('data-status'), 'completed');
  await waitText(item.locator('.progress-text'), /completed\s+126 of 126 entities/);
  const id = await item.getAttribute('data-snapshot');
  const row = page.locator(`.snapshots-table tr[data-snapshot="${id}"]`);
  await row.locator('.badge-completed').waitFor();
  assert.match(await row.textContent(), /before the cleanup/);
  const meta = await apiOk(srv, 'GET', `${sp()}/snapshots/${id}`, {}, 200);
  assert.equal(meta.status, 'completed');
  assert.ok((await row.textContent()).includes(meta.sha256.slice(0, 12)), 'short sha256 in the row');
  // the chart has a point per completed snapshot
  await page.waitForFunction(() => document.querySelectorAll('svg.chart circle.dot-entities').length === 1);
  await shot(page, '04-snapshot-taken');

  // filters go to the server: no pre-restore snapshot yet
  await page.getByLabel('Kind').selectOption('pre_restore');
  await waitText(page.locator('.snapshots-table tbody'), /No snapshot matches these filters/);
  await page.getByLabel('Kind').selectOption('');
  await row.waitFor();

  // change the space, then preview the delta per collection
  await apiOk(srv, 'PUT', `${sp()}/collections/issues/entities/NEW-1`, { body: { title: 'added after' } });
  await apiOk(srv, 'PUT', `${sp()}/collections/issues/entities/ISS-2`, { body: { title: 'changed after' } });
  await apiOk(srv, 'DELETE', `${sp()}/collections/notes/entities/N-3`, {}, 200);
  await page.getByRole('button', { name: `Preview snapshot ${id}` }).click();
  const delta = page.locator('.preview-out .delta-table');
  await delta.waitFor();
  assert.deepEqual(await delta.locator('tr[data-collection="issues"] td').allTextContents(), ['1', '1', '0']);
  assert.deepEqual(await delta.locator('tr[data-collection="notes"] td').allTextContents(), ['0', '0', '1']);
  assert.match(await page.locator('.preview-summary').textContent(), /3 changes since this snapshot/);
  await shot(page, '05-snapshot-preview');

  // download: fetched with the Authorization header, saved through a Blob URL
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: `Download snapshot ${id}` }).click(),
  ]);
  assert.equal(download.suggestedFilename(), `${SPACE}-${id}.ndjson`);
  const file = path.join(ARTIFACTS, 'downloaded-snapshot.ndjson');
  await download.saveAs(file);
  const lines = readFileSync(file, 'utf8').trim().split('\n');
  const head = JSON.parse(lines[0]);
  assert.equal(head.format, 'snapsync.snapshot.v2');
  assert.equal(head.entity_total, 126);
  assert.equal(lines.length, 127);
  await assertClean(page);
});

test('restore: dry run first; a wrong typed id is refused in the UI; the right id restores', { skip: SKIP }, async () => {
  const page = await newPage();
  const restoreCalls = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && /\/restore$/.test(new URL(r.url()).pathname)) restoreCalls.push(JSON.parse(r.postData()));
  });
  await signIn(page, srv.adminToken, `#/spaces/${SPACE}/snapshots`);
  const list = await apiOk(srv, 'GET', `${sp()}/snapshots?kind=manual`, {}, 200);
  const id = list.snapshots[0].id;
  await page.getByRole('button', { name: `Restore snapshot ${id}` }).click();
  const detail = page.locator('.snapshot-detail');
  // no confirm box before the dry run has been shown
  assert.equal(await detail.locator('.confirm-input').count(), 0);
  await detail.getByRole('button', { name: 'Check what a restore would do' }).click();
  const summary = detail.locator('.dry-summary');
  // the snapshot lacks NEW-1 and has the old ISS-2 and N-3: 2 writes, 1 delete
  assert.match(await waitText(summary, /Dry run/), /would write 2 entities and delete 1/);
  assert.deepEqual(restoreCalls, [{ confirm: id, dry_run: true }]);

  const wrong = id.slice(0, -1) + (id.endsWith('0') ? '1' : '0');
  const input = detail.getByLabel('Type the snapshot id to confirm');
  await input.fill(wrong);
  await detail.getByRole('button', { name: 'Restore this snapshot' }).click();
  const err = detail.locator('.error').filter({ hasText: 'Nothing was restored' });
  await err.waitFor();
  assert.match(await err.textContent(), /is not this snapshot's id/);
  assert.equal(await input.getAttribute('aria-invalid'), 'true');
  assert.equal(restoreCalls.length, 1, 'the UI sent no restore for a wrong id');
  assert.ok(await entityOrNull(srv, 'issues', 'NEW-1'), 'nothing restored');
  await shot(page, '06-restore-refused');
  // the server refuses a mismatch too
  const r = await api(srv, 'POST', `${sp()}/snapshots/${id}/restore`, { body: { confirm: wrong } });
  assert.equal(r.status, 400);
  assert.equal(r.body.error, 'confirm_mismatch');

  await input.fill(id);
  await input.press('Enter');
  const ok = detail.locator('.ok');
  assert.match(await waitText(ok, /Restored from/), new RegExp(`Restored from ${id}: 2 written, 1 deleted`));
  assert.equal(await entityOrNull(srv, 'issues', 'NEW-1'), null, 'NEW-1 is gone');
  assert.equal((await entityOrNull(srv, 'issues', 'ISS-2')).body.title, 'Issue 2');
  assert.ok(await entityOrNull(srv, 'notes', 'N-3'), 'N-3 is back');
  // the list now shows the pre-restore snapshot, and the chart two points
  await page.locator('.snapshots-table tr[data-snapshot] td', { hasText: 'pre-restore' }).first().waitFor();
  await page.waitForFunction(() => document.querySelectorAll('svg.chart circle.dot-entities').length === 2);
  await shot(page, '07-restore-done');
  await assertClean(page);
});

test('an API error is shown in plain words: 409 snapshot_in_progress while an import runs', { skip: SKIP }, async () => {
  const page = await newPage();
  await signIn(page, srv.adminToken, `#/spaces/${SPACE}/snapshots`);
  await page.locator('.snapshots-table').waitFor();
  // hold an import's body open: the space's snapshot slot is busy meanwhile
  const sock = net.connect(srv.port, '127.0.0.1');
  await new Promise((resolve) => sock.once('connect', resolve));
  sock.write(`POST ${sp()}/snapshots/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${srv.adminToken}\r\n`
    + 'Content-Type: application/gzip\r\nContent-Length: 1000000\r\n\r\n');
  sock.write(Buffer.from([0x1f, 0x8b, 0x08, 0x00]));
  try {
    // wait until the server holds the slot (an operator key, so the admin
    // key's --snapshot-rate budget is left alone)
    const op = await createKey(srv, 'operator', [SPACE], 'probe');
    let busy = false;
    for (let i = 0; i < 100 && !busy; i++) {
      const r = await api(srv, 'POST', `${sp()}/snapshots`, { token: op.token, body: {} });
      busy = r.status === 409;
      if (!busy) await sleep(50);
    }
    assert.ok(busy, 'the import holds the snapshot slot');
    await page.getByRole('button', { name: 'Take snapshot' }).click();
    const box = page.locator('.take-card .error');
    const text = await waitText(box, /snapshot_in_progress/);
    assert.match(text, /Could not take a snapshot: a snapshot or restore of 'demo' is running/);
    assert.match(text, /\(409 snapshot_in_progress\)/);
    await shot(page, '08-error-409');
  } finally {
    sock.destroy();
  }
  await assertClean(page);
});

test('sync: start a job against a second instance and watch it reach 100%; a refused peer token is shown', { skip: SKIP }, async () => {
  await apiOk(srv, 'PUT', `${sp()}/peers/backup`, {
    body: { url: peer.base, space: SPACE, token: peer.adminToken, direction: 'both', every_seconds: 0 },
  });
  const page = await newPage();
  await signIn(page, srv.adminToken, `#/spaces/${SPACE}/sync`);
  await waitLive(page);
  const peerRow = page.locator('tr[data-peer="backup"]');
  await waitText(peerRow, /never run/);
  await page.getByRole('button', { name: 'Fill the form with peer backup' }).click();
  assert.equal(await page.getByLabel('Peer URL').inputValue(), peer.base);
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('type')), 'password', 'focus moves to the token');
  await page.keyboard.type(peer.adminToken);
  await page.getByRole('button', { name: 'Start sync' }).click();

  const item = page.locator('.progress-item[data-job]');
  await item.waitFor();
  await page.locator('.progress-item[data-job][data-status="completed"]').waitFor();
  const bar = item.locator('[role=progressbar]');
  assert.equal(await bar.getAttribute('aria-valuenow'), '100');
  const t = await item.locator('.progress-text').textContent();
  assert.match(t, /completed/);
  assert.match(t, /phase done/);
  assert.match(t, /100%/);
  assert.match(t, /pulled 30/);
  const jobId = await item.getAttribute('data-job');
  await page.locator(`.jobs-table tr[data-job="${jobId}"][data-status="completed"]`).waitFor();
  const items = await apiOk(srv, 'GET', `${sp()}/collections/items/entities?limit=100`, {}, 200);
  assert.equal(items.entities.length, 30, 'the pull brought the peer\'s items');
  await shot(page, '09-sync-completed');

  // a job whose peer refuses the token fails, and says why
  await page.getByLabel('Peer URL').fill(peer.base);
  await page.getByLabel('Peer token').fill('sst_wrong-peer-token-000000000000000000000000');
  await page.getByLabel('Direction').selectOption('pull');
  await page.getByRole('button', { name: 'Start sync' }).click();
  const failed = page.locator('.progress-item[data-job][data-status="failed"]');
  await failed.waitFor();
  assert.match(await failed.textContent(), /refused the token/);
  await page.locator('.jobs-table tr[data-status="failed"]').first().waitFor();
  // an empty form is refused before anything is sent
  await page.getByLabel('Peer URL').fill('');
  await page.getByRole('button', { name: 'Start sync' }).click();
  await waitText(page.locator('.sync-card .error'), /Fill in the peer URL, the peer token/);
  await assertClean(page);
});

test('conflicts: side by side with differing fields marked; merge, keep both, and a stale one shows the server\'s error', { skip: SKIP }, async () => {
  const c1 = await makeConflict('issues', 'ISS-10', { title: 'Issue 10 (edited offline)', state: 'open', priority: 0 });
  const c2 = await makeConflict('issues', 'ISS-11', { title: 'Issue 11 offline', state: 'open', priority: 1 });
  const c3 = await makeConflict('notes', 'N-1', { text: 'note 1, offline', tags: ['a'] });

  const page = await newPage();
  await signIn(page, srv.adminToken, `#/spaces/${SPACE}/conflicts`);
  const card1 = page.locator(`article.conflict[data-conflict="${c1.conflictId}"]`);
  await card1.waitFor();
  await page.waitForFunction(() => document.querySelectorAll('article.conflict').length === 3);
  // ISS-10: current {edited, priority 0, state closed? no: 10%3=1 -> open, title} vs conflicting
  const sides = card1.locator('.side pre.json');
  const curDiff = await sides.nth(0).locator('.jdiff').evaluateAll((els) => els.map((e) => e.dataset.key));
  const conDiff = await sides.nth(1).locator('.jdiff').evaluateAll((els) => els.map((e) => e.dataset.key));
  assert.deepEqual(curDiff, ['edited', 'title']);
  assert.deepEqual(conDiff, ['title']);
  assert.match(await card1.locator('.diff-summary').textContent(), /Differs in: edited, title/);
  assert.match(await card1.textContent(), new RegExp(`rev ${c1.current.rev}`));
  await shot(page, '10-conflicts');

  // merge: the editor starts with the current body; bad JSON is refused locally
  await card1.getByRole('button', { name: 'Merge… (merge)' }).click();
  const ta = card1.getByLabel(/Merged body/);
  assert.deepEqual(JSON.parse(await ta.inputValue()), c1.current.body);
  await ta.fill('{"title": ');
  await card1.getByRole('button', { name: 'Save merged body' }).click();
  await waitText(card1.locator('.error'), /not valid JSON.*Nothing was saved/);
  await shot(page, '11-conflict-merge');
  await ta.fill(JSON.stringify({ title: 'Issue 10 (merged)', state: 'open', priority: 0 }, null, 2));
  await card1.getByRole('button', { name: 'Save merged body' }).click();
  await waitText(page.locator('.panel > .ok'), /Resolved the conflict on issues\/ISS-10 with merge/);
  await card1.waitFor({ state: 'detached' });
  assert.deepEqual((await entityOrNull(srv, 'issues', 'ISS-10')).body, { title: 'Issue 10 (merged)', state: 'open', priority: 0 });

  // keep both: the conflicting body becomes N-1~conflict-1
  const card3 = page.locator(`article.conflict[data-conflict="${c3.conflictId}"]`);
  await card3.getByRole('button', { name: 'Keep both (keep_both)' }).click();
  await waitText(page.locator('.panel > .ok'), /notes\/N-1 with keep both/);
  assert.deepEqual((await entityOrNull(srv, 'notes', 'N-1~conflict-1')).body, { text: 'note 1, offline', tags: ['a'] });

  // someone else resolves ISS-11 meanwhile: the button gets the server's 404, in words
  await apiOk(srv, 'POST', `${sp()}/conflicts/${c2.conflictId}/resolve`, { body: { strategy: 'remote_wins' } }, 200);
  const card2 = page.locator(`article.conflict[data-conflict="${c2.conflictId}"]`);
  await card2.getByRole('button', { name: 'Keep current (local_wins)' }).click();
  const text = await waitText(card2.locator('.error'), /Could not resolve/);
  assert.match(text, new RegExp(`Could not resolve the conflict on ISS-11: no conflict ${c2.conflictId}`));
  assert.match(text, /\(404 not_found\)/);
  await shot(page, '12-conflict-error');
  const left = await apiOk(srv, 'GET', `${sp()}/conflicts`, {}, 200);
  assert.deepEqual(left, []);
  await assertClean(page);
});

test('audit: an admin filters by action; a reader key sees no Audit link and gets words for a 403', { skip: SKIP }, async () => {
  const page = await newPage();
  await signIn(page, srv.adminToken, '#/audit');
  await page.locator('.audit-table tbody tr').first().waitFor();
  await page.getByLabel('Action').selectOption('snapshot.restore');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('.audit-table tbody tr')];
    return rows.length >= 1 && rows.every((r) => r.dataset.action === 'snapshot.restore');
  });
  await page.getByLabel('Space').selectOption(SPACE);
  await page.getByLabel('Action').selectOption('');
  await page.locator('.audit-table tbody tr[data-action="conflict.resolve"]').first().waitFor();
  await shot(page, '13-audit');
  await assertClean(page);

  const reader = await createKey(srv, 'reader', [SPACE], 'dashboard-reader');
  const rp = await newPage();
  await signIn(rp, reader.token);
  await rp.locator(`.spaces-table tr[data-space="${SPACE}"]`).waitFor();
  assert.equal(await rp.locator('.spaces-table tr[data-space="archive"]').count(), 0, 'a key limited to demo sees only demo');
  assert.equal(await rp.locator('#nav-audit').isVisible(), false, 'no Audit link for a reader');
  await rp.goto(`${srv.base}/ui/#/audit`);
  await waitText(rp.locator('#view .error'), /The audit log is for admin keys only: this token is not allowed to do that/);
  await rp.goto(`${srv.base}/ui/#/spaces/${SPACE}/snapshots`);
  await rp.locator('.snapshots-table').waitFor();
  await rp.getByRole('button', { name: 'Take snapshot' }).click();
  await waitText(rp.locator('.take-card .error'), /Could not take a snapshot: this token is not allowed.*\(403 forbidden\)/);
  await assertClean(rp);
});

test('phone width: every page fits 390px; keyboard alone reaches the tabs', { skip: SKIP }, async () => {
  const page = await newPage({ width: 390, height: 844 });
  await page.goto(`${srv.base}/ui/`);
  await page.locator('#token-input').waitFor();
  await noHorizontalScroll(page);
  await page.keyboard.type(srv.adminToken);
  await page.keyboard.press('Enter');
  await page.locator('.spaces-table').waitFor();
  await noHorizontalScroll(page);
  await shot(page, '14-phone-spaces');

  // keyboard: Tab to the space's link, Enter, then Tab to the Snapshots tab
  const tabTo = async (pred, what) => {
    for (let i = 0; i < 40; i++) {
      await page.keyboard.press('Tab');
      if (await page.evaluate(pred)) return;
    }
    throw new Error(`Tab never reached ${what}`);
  };
  await tabTo(() => document.activeElement.textContent === 'demo', 'the demo link');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => location.hash === '#/spaces/demo');
  await tabTo(() => document.activeElement.dataset.tab === 'snapshots', 'the Snapshots tab');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none', 'keyboard focus is visible');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => location.hash === '#/spaces/demo/snapshots');
  await page.locator('.snapshots-table').waitFor();
  // switching tabs keeps the keyboard on the tabs
  assert.equal(await page.evaluate(() => document.activeElement.dataset.tab), 'snapshots');
  await page.locator('svg.chart').waitFor();
  await noHorizontalScroll(page);
  await shot(page, '15-phone-snapshots');

  for (const tab of ['collections/issues', 'sync', 'conflicts']) {
    await page.goto(`${srv.base}/ui/#/spaces/${SPACE}/${tab}`);
    await page.locator({ 'collections/issues': '.entities-table tbody tr', sync: '.jobs-table tbody tr', conflicts: '.conflict-list .empty' }[tab]).first().waitFor();
    await noHorizontalScroll(page);
    await shot(page, `16-phone-${tab.split('/')[0]}`);
  }
  await assertClean(page);
});
