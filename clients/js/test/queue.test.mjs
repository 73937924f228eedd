// queue.test.mjs - the offline queue's order: which edits go in one push,
// and which base_rev an edit that follows another edit of the same entity
// is pushed with. The last test runs a memory replica against a fake fetch
// (no server) and checks what it actually sends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { followerBase, nextBatch, snapsync } from '../snapsync.js';

const ed = (id, extra = {}) => ({ collection: 'c', id, ...extra });

test('nextBatch: oldest first, one edit per entity, stops at the first repeat (no edit overtakes another)', () => {
  const q = [ed('a'), ed('b'), ed('a'), ed('c'), ed('d')];
  assert.deepEqual(nextBatch(q).map((e) => e.id), ['a', 'b']);
  assert.deepEqual(nextBatch(q.slice(2)).map((e) => e.id), ['a', 'c', 'd']);
  assert.deepEqual(nextBatch([]), []);
  const many = Array.from({ length: 1200 }, (_, i) => ed(`e${i}`));
  assert.equal(nextBatch(many).length, 500, 'at most 500 a push');
  assert.equal(nextBatch(many, 1000).length, 1000);
  // the same id in two collections is two entities
  assert.equal(nextBatch([ed('a'), { collection: 'd', id: 'a' }]).length, 2);
});

test('followerBase: the rev the previous edit made, or its own base when it did not apply', () => {
  assert.equal(followerBase({ base_rev: '1-a' }, { status: 'applied', rev: '2-b' }), '2-b');
  assert.equal(followerBase({ base_rev: '1-a' }, { status: 'conflict', current_rev: '2-x' }), '1-a');
  assert.equal(followerBase({ base_rev: null }, { status: 'error', error: 'invalid_name' }), null);
});

/** A fake server: one space, entities with made-up revs, a feed that never
 *  sends anything (the stream stays open), POST /changes recorded. */
function fakeServer() {
  const pushes = [];
  const ents = new Map([['c\0x', { collection: 'c', id: 'x', rev: '1-x', version: 1, deleted: false, body: { v: 0 } }]]);
  let version = 1;
  const json = (status, body) => new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
  const f = async (url, init = {}) => {
    const u = new URL(url);
    const p = u.pathname;
    if (p.endsWith('/sync/status')) return json(200, { space_uid: 'U', server_version: version, entity_count: ents.size, tombstone_count: 0, last_snapshot: null });
    if (p.endsWith('/changes') && (init.method || 'GET') === 'GET') {
      if (u.searchParams.get('feed') === 'sse') {
        return new Response(new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode('retry: 2000\n\n')); } }), { status: 200 });
      }
      return json(200, { changes: [...ents.values()], last_version: version, more: false });
    }
    if (p.endsWith('/changes')) {
      const { changes } = JSON.parse(init.body);
      pushes.push(changes.map((c) => [c.id, c.base_rev, c.deleted]));
      const results = changes.map((c) => {
        const k = `c\0${c.id}`;
        const cur = ents.get(k);
        if ((cur && !cur.deleted ? cur.rev : null) !== c.base_rev) return { status: 'conflict', current_rev: cur.rev, conflict_id: 'K' };
        const n = cur ? Number(cur.rev.split('-')[0]) + 1 : 1;
        const e = { collection: 'c', id: c.id, rev: `${n}-${c.id}`, version: ++version, deleted: c.deleted, body: c.body };
        ents.set(k, e);
        return { status: 'applied', rev: e.rev, version: e.version };
      });
      return json(200, { results, server_version: version });
    }
    if (p.includes('/entities/')) return json(200, ents.get(`c\0${p.split('/').pop()}`));
    return json(404, { error: 'not_found', message: p });
  };
  return { f, pushes, ents };
}

test('a replica pushes queued edits in order, each follower against the rev its predecessor made', async () => {
  const srv = fakeServer();
  const db = snapsync({ url: 'http://fake', token: 't', fetch: srv.f });
  const rep = db.space('s').replica({ persist: 'memory' });
  await rep.ready;
  rep.pause();                       // offline: edits queue
  const edits = [
    rep.put('c', 'x', { v: 1 }), rep.put('c', 'y', { v: 1 }), rep.put('c', 'x', { v: 2 }),
    rep.delete('c', 'y'), rep.put('c', 'x', { v: 3 }),
  ];
  assert.equal(rep.get('c', 'x').body.v, 3);
  assert.equal(rep.get('c', 'y'), null);
  assert.equal(rep.pending().length, 5);
  rep.resume();
  const results = await Promise.all(edits.map((e) => e.settled));
  assert.deepEqual(results.map((r) => [r.status, r.rev]),
    [['applied', '2-x'], ['applied', '1-y'], ['applied', '3-x'], ['applied', '2-y'], ['applied', '4-x']]);
  assert.deepEqual(srv.pushes, [
    [['x', '1-x', false], ['y', null, false]],
    [['x', '2-x', false], ['y', '1-y', true]],
    [['x', '3-x', false]],
  ]);
  assert.equal(rep.pending().length, 0);
  await rep.close();
});

test('after a conflict, the edits that followed it on the same entity are kept as conflicts too (not written over the server\'s copy)', async () => {
  const srv = fakeServer();
  const db = snapsync({ url: 'http://fake', token: 't', fetch: srv.f });
  const rep = db.space('s').replica({ persist: 'memory' });
  await rep.ready;
  rep.pause();
  srv.ents.set('c\0x', { collection: 'c', id: 'x', rev: '2-other', version: 9, deleted: false, body: { v: 'theirs' } });
  const a = rep.put('c', 'x', { v: 'mine 1' });
  const b = rep.put('c', 'x', { v: 'mine 2' });
  const conflicts = [];
  rep.on('conflict', (c) => conflicts.push(c));
  rep.resume();
  assert.deepEqual([(await a.settled).status, (await b.settled).status], ['conflict', 'conflict']);
  assert.deepEqual(srv.pushes, [[['x', '1-x', false]], [['x', '1-x', false]]]);
  assert.deepEqual(conflicts.map((c) => [c.current.v, c.conflicting.v]), [['theirs', 'mine 1'], ['theirs', 'mine 2']]);
  await rep.close();
});
