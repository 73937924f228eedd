// snapshot_live.test.mjs - SPEC §7 snapshots while the server is busy:
// point-in-time consistency under concurrent writes, 409
// snapshot_in_progress, the schedule with retention, and §8 `snapshot`
// progress events.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  withServer, api, apiOk, putSpace, checkError, sleep,
} from './helpers.mjs';
import { openSSE } from './sse_helpers.mjs';
import {
  snapPath, downloadGz, parseSnapshot, createSnapshot, waitSnapshot, listAll, snapFiles, ekey,
  checkCompletedMeta, checkFileAgainstMeta, checkEntityLines, pushEntities, until, canon, liveState, contentSet,
  snapFile, flipByte,
} from './snapshot_helpers.mjs';
import { readFileSync, writeFileSync } from 'node:fs';

const ent = (space, c, id) => `/api/v1/spaces/${space}/collections/${c}/entities/${encodeURIComponent(id)}`;
const body500 = (i) => ({ i, r: randomBytes(180).toString('base64') });

test('consistency under load: the file is exactly the state at its server_version while writers keep writing', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'load');
  // history of every write, to rebuild the state at any version
  const hist = new Map();            // key -> [{version, rev, deleted, body}]
  const record = (c, id, e) => {
    const k = ekey(c, id);
    if (!hist.has(k)) hist.set(k, []);
    hist.get(k).push({ version: e.version, rev: e.rev, deleted: e.deleted, body: e.body, collection: c, id });
  };
  const pre = [];
  for (let i = 0; i < 30000; i++) pre.push({ collection: i % 3 ? 'docs' : 'meta', id: `p${i}`, body: body500(i) });
  const res = await pushEntities(srv, 'load', pre);
  res.forEach((x, i) => record(pre[i].collection, pre[i].id, { version: x.version, rev: x.rev, deleted: false, body: pre[i].body }));
  await apiOk(srv, 'PUT', ent('load', 'counter', 'c'), { body: { n: 0 } }).then((e) => record('counter', 'c', e));

  let stop = false;
  let snapStart = 0;
  let snapEnd = 0;
  const during = [];             // versions committed while the snapshot request was open
  const errors = [];
  const writer = async (w) => {
    let n = 0;
    while (!stop) {
      n++;
      const kind = n % 4;
      let c; let id; let r;
      if (kind === 0) { c = 'counter'; id = 'c'; r = await api(srv, 'PUT', ent('load', c, id), { body: { n: `${w}-${n}` } }); }
      else if (kind === 1) { c = 'docs'; id = `w${w}-${n}`; r = await api(srv, 'PUT', ent('load', c, id), { body: { w, n } }); }
      else if (kind === 2) { c = 'docs'; id = `p${(w * 7919 + n * 3) % 30000 | 1}`; if ((w * 7919 + n * 3) % 30000 % 3 === 0) c = 'meta'; r = await api(srv, 'PUT', ent('load', c, id), { body: { edited: w, n } }); }
      else {
        c = 'docs'; id = `w${w}-${n - 2}`;                     // delete the entity made two writes ago
        r = await api(srv, 'DELETE', ent('load', c, id));
      }
      if (r.status >= 300) { errors.push(`${r.status} ${r.text.slice(0, 200)}`); continue; }
      record(c, id, r.body);
      const now = Date.now();
      if (snapStart && now > snapStart && (!snapEnd || now < snapEnd)) during.push(r.body.version);
    }
  };
  const writers = [0, 1, 2, 3].map((w) => writer(w));
  await sleep(150);
  snapStart = Date.now();
  const m = await createSnapshot(srv, 'load');
  snapEnd = Date.now();
  await sleep(100);
  stop = true;
  await Promise.all(writers);
  assert.deepEqual(errors.filter((e) => !e.startsWith('404')), [], 'writes kept succeeding');
  t.diagnostic(`${during.length} writes answered while the snapshot ran; ${during.filter((v) => v > m.server_version).length} after its server_version ${m.server_version}`);
  assert.ok(during.some((v) => v > m.server_version), `writes committed while the snapshot ran (not blocked): ${during.length} writes, snapshot at ${m.server_version}`);

  const f = checkFileAgainstMeta((await downloadGz(srv, 'load', m.id)).body, m);
  checkEntityLines(f);
  const V = m.server_version;
  for (const e of f.entities) assert.ok(e.version <= V, `${e.collection}/${e.id} version ${e.version} <= ${V}`);
  // the exact expected state at V
  const want = [];
  for (const h of hist.values()) {
    let last = null;
    for (const x of h) if (x.version <= V && (!last || x.version > last.version)) last = x;
    if (last && !last.deleted) want.push(`${last.collection}/${last.id}@${last.version}/${last.rev}/${canon(last.body)}`);
  }
  const got = f.entities.map((e) => `${e.collection}/${e.id}@${e.version}/${e.rev}/${canon(e.body)}`);
  want.sort();
  got.sort();
  const gotSet = new Set(got);
  const wantSet = new Set(want);
  const missing = want.filter((x) => !gotSet.has(x)).slice(0, 5);
  const extra = got.filter((x) => !wantSet.has(x)).slice(0, 5);
  assert.equal(got.length, want.length, `entity count at ${V}: missing ${missing}, extra ${extra}`);
  assert.deepEqual(got, want, 'the file holds exactly the state after every change with version <= server_version');
  assert.equal(f.header.entity_total, want.length);
});

test('409 snapshot_in_progress while a snapshot of the space runs (snapshot, restore, import); other spaces are free', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'busy');
  await putSpace(srv, 'free');
  await apiOk(srv, 'PUT', ent('free', 'c', 'x'), { body: { n: 1 } });
  await apiOk(srv, 'PUT', ent('busy', 'c', 'first'), { body: { n: 1 } });
  const small = await createSnapshot(srv, 'busy');
  const smallGz = (await downloadGz(srv, 'busy', small.id)).body;
  const items = [];
  for (let i = 0; i < 25000; i++) items.push({ collection: 'c', id: `e${i}`, body: body500(i) });
  await pushEntities(srv, 'busy', items);

  const a = await api(srv, 'POST', snapPath('busy'), { body: {}, headers: { Prefer: 'respond-async' } });
  assert.equal(a.status, 202, a.text);
  const [second, restore, imp, other] = await Promise.all([
    api(srv, 'POST', snapPath('busy'), { body: {} }),
    api(srv, 'POST', snapPath('busy', small.id, '/restore'), { body: { confirm: small.id } }),
    api(srv, 'POST', snapPath('busy', 'import'), { body: smallGz, headers: { 'Content-Type': 'application/gzip' } }),
    api(srv, 'POST', snapPath('free'), { body: {} }),
  ]);
  const running = await apiOk(srv, 'GET', snapPath('busy', a.body.id), {}, 200);
  t.diagnostic(`first snapshot was ${running.status} after the concurrent requests`);
  checkError(assert, second, 409, 'snapshot_in_progress', 'a second snapshot while one runs');
  checkError(assert, restore, 409, 'snapshot_in_progress', 'a restore while a snapshot runs');
  checkError(assert, imp, 409, 'snapshot_in_progress', 'an import while a snapshot runs');
  assert.equal(other.status, 201, `another space is not blocked: ${other.text}`);
  // the refused restore changed nothing
  const m = await waitSnapshot(srv, 'busy', a.body.id, { timeoutMs: 30000 });
  checkCompletedMeta(m, { space: 'busy', kind: 'manual' });
  assert.equal(m.entity_total, 25001);
  const all = await listAll(srv, 'busy');
  assert.deepEqual(all.map((s) => s.kind).sort(), ['manual', 'manual'], 'the 409s left no snapshot behind');
  // afterwards the space is free again (not stuck busy; that it is free at
  // the very moment GET says completed is the next test)
  const again = await until(async () => {
    const x = await api(srv, 'POST', snapPath('busy'), { body: {} });
    return x.status === 409 ? undefined : x;
  }, { timeoutMs: 3000, every: 20, what: 'the space to be free again' });
  assert.equal(again.status, 201, again.text);
});

// The row turns completed (writer thread) before the loop clears the space's
// busy flag, so a client that polls GET until completed and then asks for
// the next snapshot (or a restore) can get a spurious 409.
test('a snapshot GET reports as completed no longer blocks the space: the next POST is not 409', {
}, async (t) => {
  const srv = await withServer(t, { args: ['--snapshot-rate', '0'] });
  await putSpace(srv, 'race');
  await pushEntities(srv, 'race', Array.from({ length: 200 }, (_, i) => ({ collection: 'c', id: `e${i}`, body: { i } })));
  const wrong = [];
  for (let i = 0; i < 60; i++) {
    const a = await api(srv, 'POST', snapPath('race'), { body: {}, headers: { Prefer: 'respond-async' } });
    if (a.status !== 202) { wrong.push(`round ${i}: async create -> ${a.status}`); continue; }
    let m;
    do { m = await apiOk(srv, 'GET', snapPath('race', a.body.id), {}, 200); } while (m.status === 'running' || m.status === 'pending');
    assert.equal(m.status, 'completed');
    const b = await api(srv, 'POST', snapPath('race'), { body: {} });
    if (b.status !== 201) wrong.push(`round ${i}: POST right after GET said completed -> ${b.status} ${b.body?.error}`);
    else if (i % 3 === 0) {
      const rs = await api(srv, 'POST', snapPath('race', b.body.id, '/restore'), { body: { confirm: b.body.id, dry_run: true } });
      if (rs.status !== 200) wrong.push(`round ${i}: dry-run restore -> ${rs.status}`);
    }
  }
  assert.deepEqual(wrong, [], `${wrong.length} of 60 rounds refused`);
});

test('schedule: --snapshot-every 1 takes scheduled snapshots after changes, none when idle, keeps the newest 2; manual ones stay', async (t) => {
  const srv = await withServer(t, { args: ['--snapshot-every', '1', '--snapshot-keep-scheduled', '2'] });
  await putSpace(srv, 'sch');
  await putSpace(srv, 'idle');
  const sse = await openSSE(srv.port, '/api/v1/events?topics=snapshot&spaces=sch', { token: srv.adminToken });
  t.after(() => sse.close());
  await apiOk(srv, 'PUT', ent('idle', 'c', 'x'), { body: { n: 1 } });
  const seen = [];
  let manual = null;
  for (let round = 0; round < 4; round++) {
    const e = await apiOk(srv, 'PUT', ent('sch', 'c', 'x'), { body: { round } });
    // the next scheduled snapshot covers this write
    const s = await until(async () => (await listAll(srv, 'sch', 'kind=scheduled&status=completed'))
      .find((x) => x.server_version >= e.version), { timeoutMs: 4000, every: 50, what: `a scheduled snapshot at >= ${e.version}` });
    checkCompletedMeta(s, { space: 'sch', kind: 'scheduled' });
    // its end event (sent as the space is freed) before anything else
    await sse.waitFor(() => sse.ofType('snapshot').some((x) => x.json?.snapshot === s.id && x.json.status === 'completed') || undefined, 3000, `completed event of ${s.id}`);
    assert.ok(!seen.includes(s.id));
    seen.push(s.id);
    const f = parseSnapshot((await downloadGz(srv, 'sch', s.id)).body);
    assert.deepEqual(f.entities.map((x) => x.body), [{ round }], 'the scheduled snapshot holds the write');
    if (round === 1) manual = await createSnapshot(srv, 'sch', { note: 'manual between' });
  }
  // retention runs as housekeeping right after a scheduled snapshot: allow it a moment
  let sched = await listAll(srv, 'sch', 'kind=scheduled');
  await until(async () => {
    sched = await listAll(srv, 'sch', 'kind=scheduled');
    return sched.filter((x) => x.status === 'completed').length <= 2;
  }, { timeoutMs: 2000, every: 20, what: 'retention' }).catch(() => {});
  assert.deepEqual(sched.filter((x) => x.status === 'completed').map((x) => x.id), [seen[3], seen[2]],
    `the newest 2 scheduled remain: ${JSON.stringify(sched.map((x) => [x.id, x.status]))}`);
  assert.ok((await listAll(srv, 'sch', 'kind=manual')).some((x) => x.id === manual.id), 'the manual snapshot stays');
  await until(() => !snapFiles(srv.dataDir).some((n) => n.startsWith(seen[0]) || n.startsWith(seen[1])),
    { timeoutMs: 2000, what: `pruned files removed: ${snapFiles(srv.dataDir)}` });

  // idle: nothing changed -> no new scheduled snapshot
  const before = (await listAll(srv, 'sch')).map((x) => x.id);
  const idleBefore = (await listAll(srv, 'idle', 'kind=scheduled')).length;
  assert.equal(idleBefore, 1, 'the idle space got one scheduled snapshot for its one write');
  await sleep(2600);
  assert.deepEqual((await listAll(srv, 'sch')).map((x) => x.id), before, 'no scheduled snapshot when nothing changed');
  assert.equal((await listAll(srv, 'idle', 'kind=scheduled')).length, 1, 'still one for the idle space');
  const st = await apiOk(srv, 'GET', '/api/v1/spaces/sch/sync/status', {}, 200);
  assert.equal(st.last_snapshot, before[0], 'last_snapshot = the newest');

  // events: scheduled snapshots are announced with their kind
  const evs = sse.ofType('snapshot').map((e) => e.json);
  for (const id of seen) {
    assert.ok(evs.some((e) => e.snapshot === id && e.kind === 'scheduled' && e.status === 'completed'), `completed event for ${id}`);
  }
});

test('SSE: snapshot events from running to completed with progress; topic and space filters apply', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'ev');
  await putSpace(srv, 'evother');
  const items = [];
  for (let i = 0; i < 20000; i++) items.push({ collection: i % 2 ? 'a' : 'b', id: `e${i}`, body: body500(i) });
  await pushEntities(srv, 'ev', items);
  const c = await openSSE(srv.port, '/api/v1/events?topics=snapshot', { token: srv.adminToken });
  const other = await openSSE(srv.port, '/api/v1/events?topics=snapshot&spaces=evother', { token: srv.adminToken });
  const changes = await openSSE(srv.port, '/api/v1/events?topics=change&spaces=ev', { token: srv.adminToken });
  t.after(() => { c.close(); other.close(); changes.close(); });
  assert.equal(c.status, 200);
  await sleep(50);

  const r = await api(srv, 'POST', snapPath('ev'), { body: {}, headers: { Prefer: 'respond-async' } });
  assert.equal(r.status, 202, r.text);
  const id = r.body.id;
  await apiOk(srv, 'PUT', ent('ev', 'a', 'during'), { body: { x: 1 } });
  await c.waitFor(() => c.ofType('snapshot').some((e) => e.json?.snapshot === id && ['completed', 'failed'].includes(e.json.status)) || undefined,
    15000, 'the end state event');
  const m = await waitSnapshot(srv, 'ev', id);
  assert.equal(m.status, 'completed');
  const evs = c.ofType('snapshot').map((e) => e.json).filter((e) => e.snapshot === id);
  for (const e of evs) {
    assert.deepEqual(Object.keys(e).sort(), ['bytes', 'entities_done', 'entities_total', 'kind', 'snapshot', 'space', 'status'], JSON.stringify(e));
    assert.equal(e.space, 'ev');
    assert.equal(e.kind, 'manual');
    assert.ok(Number.isInteger(e.entities_done) && Number.isInteger(e.bytes), JSON.stringify(e));
  }
  assert.equal(evs[0].status, 'running', `the first event is the start: ${JSON.stringify(evs[0])}`);
  const last = evs[evs.length - 1];
  assert.equal(last.status, 'completed', `the last event is the end state: ${JSON.stringify(evs)}`);
  assert.equal(evs.filter((e) => e.status === 'completed').length, 1, 'one end event');
  assert.equal(last.entities_done, m.entity_total);
  assert.equal(last.entities_total, m.entity_total);
  assert.ok(last.bytes > 0);
  for (let i = 1; i < evs.length; i++) {
    assert.ok(evs[i].entities_done >= evs[i - 1].entities_done, `progress never goes back: ${JSON.stringify(evs.map((e) => e.entities_done))}`);
  }
  const progress = evs.filter((e) => e.status === 'running' && e.entities_done > 0 && e.entities_done < m.entity_total);
  assert.ok(progress.length >= 3, `progress events along the way (every ~10%): ${JSON.stringify(evs.map((e) => [e.status, e.entities_done]))}`);
  // ids increase
  const ids = c.ofType('snapshot').map((e) => BigInt(e.id));
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], 'event ids increase');
  // filters: no change events on the snapshot topic, nothing for another space, no snapshot events on the change topic
  assert.deepEqual(c.events.filter((e) => e.event !== 'snapshot').map((e) => e.event), []);
  await changes.waitEvents(1, { type: 'change' });
  assert.deepEqual(other.events.filter((e) => e.event === 'snapshot'), [], 'spaces=evother gets no event of ev');
  assert.deepEqual(changes.ofType('snapshot'), [], 'topics=change gets no snapshot event');

  // a synchronous snapshot and a restore announce theirs too (the pre_restore snapshot)
  const m2 = await createSnapshot(srv, 'ev');
  const rs = await apiOk(srv, 'POST', snapPath('ev', m2.id, '/restore'), { body: { confirm: m2.id } }, 200);
  await c.waitFor(() => c.ofType('snapshot').some((e) => e.json?.snapshot === m2.id && e.json.status === 'completed') || undefined, 5000, 'sync snapshot completed event');
  await c.waitFor(() => c.ofType('snapshot').some((e) => e.json?.snapshot === rs.pre_restore_snapshot && e.json.kind === 'pre_restore' && e.json.status === 'completed') || undefined,
    5000, 'pre_restore completed event');
  const f2 = checkFileAgainstMeta((await downloadGz(srv, 'ev', m2.id)).body, m2);
  assert.deepEqual(contentSet((await liveState(srv, 'ev')).map.values()), contentSet(f2.entities), 'restored to m2');
});

test('a refused restore: its pre_restore snapshot was announced running, ends failed ("not kept"), and is never listed', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'rf');
  for (let i = 0; i < 30; i++) await apiOk(srv, 'PUT', `/api/v1/spaces/rf/collections/c/entities/e${i}`, { body: { i } });
  const m = await createSnapshot(srv, 'rf');
  const c = await openSSE(srv.port, '/api/v1/events?topics=snapshot&spaces=rf', { token: srv.adminToken });
  t.after(() => c.close());
  const f = snapFile(srv.dataDir, m.id);
  writeFileSync(f, flipByte(readFileSync(f)));
  const r = await api(srv, 'POST', snapPath('rf', m.id, '/restore'), { body: { confirm: m.id } });
  checkError(assert, r, 422, 'snapshot_corrupt', 'restore of a damaged file');
  const end = await c.waitFor(() => c.ofType('snapshot').find((e) => e.json.kind === 'pre_restore' && e.json.status === 'failed'),
    5000, 'the pre_restore snapshot\'s end event');
  assert.match(end.json.error, /not kept/, end.data);
  const id = end.json.snapshot;
  const evs = c.ofType('snapshot').filter((e) => e.json.snapshot === id).map((e) => e.json.status);
  assert.equal(evs[0], 'running', `announced first: ${evs}`);
  assert.equal(evs[evs.length - 1], 'failed');
  assert.ok(!(await listAll(srv, 'rf')).some((x) => x.id === id), 'never listed');
  checkError(assert, await api(srv, 'GET', snapPath('rf', id)), 404, 'not_found', 'no row');
});

test('restore under concurrent writes: one transaction, a contiguous block of versions, and the space exactly the snapshot\'s at that point', async (t) => {
  const srv = await withServer(t);
  await putSpace(srv, 'rl');
  const pre = [];
  for (let i = 0; i < 30000; i++) pre.push({ collection: 'docs', id: `p${i}`, body: body500(i) });
  await pushEntities(srv, 'rl', pre);
  const m = await createSnapshot(srv, 'rl');
  const snap = new Map(parseSnapshot((await downloadGz(srv, 'rl', m.id)).body).entities.map((e) => [ekey(e.collection, e.id), e]));
  // diverge a little so the restore has work
  const edits = [];
  for (let i = 0; i < 30000; i += 10) edits.push({ collection: 'docs', id: `p${i}`, base_rev: snap.get(ekey('docs', `p${i}`)).rev, body: { edited: i } });
  await pushEntities(srv, 'rl', edits);

  const writes = new Map();      // key -> max version written by the writers
  let stop = false;
  let restoring = false;
  let duringRestore = 0;
  const errors = [];
  const writer = async (w) => {
    for (let n = 0; !stop; n++) {
      const id = n % 2 ? `w${w}-${n}` : `p${(w * 104729 + n * 17) % 30000}`;
      const r = await api(srv, 'PUT', ent('rl', 'docs', id), { body: { w, n } });
      if (r.status >= 300) { errors.push(`${r.status} ${r.text.slice(0, 200)}`); continue; }
      const k = ekey('docs', id);
      writes.set(k, Math.max(writes.get(k) ?? 0, r.body.version));
      if (restoring) duringRestore++;
    }
  };
  const ws = [0, 1, 2].map(writer);
  await sleep(100);
  restoring = true;
  const res = await apiOk(srv, 'POST', snapPath('rl', m.id, '/restore'), { body: { confirm: m.id }, timeoutMs: 30000 }, 200);
  restoring = false;
  await sleep(100);
  stop = true;
  await Promise.all(ws);
  assert.deepEqual(errors, []);
  t.diagnostic(`${duringRestore} writes answered during the restore; restore ${JSON.stringify(res.changes)} at ${res.server_version}`);
  assert.ok(duringRestore > 0, 'writes went on during the restore (it ran long enough to overlap)');

  const R = res.server_version;
  const n = res.changes.put + res.changes.deleted;
  const first = R - n + 1;
  // the restore's changes are one contiguous block of versions: no writer version inside it
  for (const [k, v] of writes) assert.ok(v < first || v > R, `writer version ${v} of ${k} inside the restore's block ${first}..${R}`);

  // every key not written after R is exactly as in the snapshot
  const live = await liveState(srv, 'rl');
  const keys = new Set([...snap.keys(), ...writes.keys()]);
  const bad = [];
  for (const k of keys) {
    if ((writes.get(k) ?? 0) > R) continue;
    const want = snap.get(k);
    const got = live.map.get(k);
    if (!want && got) bad.push(`${k.replace('\u0000', '/')} live (v${got.version}) but not in the snapshot`);
    else if (want && !got) bad.push(`${k.replace('\u0000', '/')} missing`);
    else if (want && canon(want.body) !== canon(got.body)) bad.push(`${k.replace('\u0000', '/')} body ${canon(got.body)} != ${canon(want.body)}`);
  }
  assert.deepEqual(bad.slice(0, 10), [], `${bad.length} keys differ from the snapshot at the restore's version ${R}`);
});
