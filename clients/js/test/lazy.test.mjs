// lazy.test.mjs - snapshot lines kept as text until read: which lines may be
// (snapshotLineKey), and a replica bootstrapped from a snapshot served by a
// fake fetch reads exactly what a full parse gives.   node --test clients/js/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSnapshotEntity, snapshotLineKey, snapsync } from '../snapsync.js';

const V1 = '{"collection":"issues","id":"I1","rev":"1-168db3be9a7654d0","version":1,"created_at":"2026-11-24T14:48:26.737Z","updated_at":"2026-11-24T14:48:26.737Z","deleted":false,"body":{"n":1,"body":"x"}}';
const V2 = '{"collection":"issues","id":"I2","rev":"3-74780899ab8e4d39","version":7,"created_at":"2026-11-24T14:48:26.737Z","updated_at":"2026-11-24T14:49:02.114Z","deleted":false,"revs":["3-74780899ab8e4d39","2-1c5e0b7a9d3f2e41"],"conflicts":[{"rev":"2-9f0e8d7c6b5a4321","deleted":false,"body":{"n":2}}],"body":{"n":3}}';

test('snapshotLineKey: a line in snapsync\'s own spelling (v1, v2) gives its collection and id, the rest unparsed', () => {
  assert.deepEqual(snapshotLineKey(V1), { collection: 'issues', id: 'I1', line: V1 });
  assert.deepEqual(snapshotLineKey(V2), { collection: 'issues', id: 'I2', line: V2 });
  const nulls = V1.replace('"created_at":"2026-11-24T14:48:26.737Z"', '"created_at":null');
  assert.deepEqual(snapshotLineKey(nulls), { collection: 'issues', id: 'I1', line: nulls });
});

test('snapshotLineKey: any other line is left to a full parse (null)', () => {
  const other = [
    V1.replace('"id":"I1"', '"id":"I\\"1"'),                    // an id that needs unescaping
    V1.replace('"collection":"issues"', '"collection":"is\\u0073ues"'),
    V1.replace('"deleted":false', '"deleted":true'),             // a tombstone
    JSON.stringify({ id: 'I1', ...JSON.parse(V1) }),              // members in another order
    V1.replace('"rev":', '"rev" :'),                              // spaces
    V1.replace(',"body":{"n":1,"body":"x"}}', ',"body":{"n":1}} '), // not ending in }
    V1.replace('"version":1', '"version":"1"'),
    '{"collection":"c"}',
    '',
  ];
  for (const l of other) assert.equal(snapshotLineKey(l), null, l);
});

const HEADER = (n) => JSON.stringify({ format: 'snapsync.snapshot.v2', space: 's', space_uid: 'U', server_version: 9, created_at: '2026-11-24T14:48:26.801Z', entity_counts: {}, entity_total: n, snapshot: 'S1' });

/** A fake server whose newest snapshot is `lines` (sent in 7-byte pieces)
 *  and whose feed has nothing after it. */
function fakeServer(lines) {
  const json = (body) => new Response(JSON.stringify(body), { status: 200, headers: { 'Content-Type': 'application/json' } });
  const text = `${HEADER(lines.length)}\n${lines.join('\n')}\n`;
  return async (url, init = {}) => {
    const u = new URL(url);
    const p = u.pathname;
    if (p.endsWith('/sync/status')) return json({ space_uid: 'U', server_version: 9, entity_count: lines.length, tombstone_count: 0, last_snapshot: 'S1' });
    if (p.endsWith('/snapshots')) return json({ snapshots: [{ id: 'S1', server_version: 9, entity_total: lines.length, integrity: 'ok', status: 'completed' }], next_cursor: null });
    if (p.endsWith('/snapshots/S1/download')) {
      const bytes = new TextEncoder().encode(text);
      let i = 0;
      return new Response(new ReadableStream({ pull(c) { if (i >= bytes.length) c.close(); else { c.enqueue(bytes.slice(i, i + 7)); i += 7; } } }), { status: 200 });
    }
    if (p.endsWith('/changes') && u.searchParams.get('feed') === 'sse') {
      return new Response(new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode('retry: 2000\n\n')); } }), { status: 200 });
    }
    if (p.endsWith('/changes') && (init.method || 'GET') === 'GET') return json({ changes: [], last_version: 9, more: false });
    return new Response(JSON.stringify({ error: 'not_found', message: p }), { status: 404 });
  };
}

test('a replica bootstrapped from a snapshot: lines kept as text read back exactly as a full parse gives them', async () => {
  const lines = [
    V1,
    V2,
    V1.replace('"id":"I1"', '"id":"I\\"3"'),                     // parsed at once (escaped id)
    JSON.stringify({ id: 'I4', collection: 'notes', rev: '1-a', version: 2, deleted: false, body: { k: 'v' } }),
    V1.replace('"collection":"issues","id":"I1"', '"collection":"notes","id":"N5"'),
  ];
  const rep = snapsync({ url: 'http://fake', token: 't', fetch: fakeServer(lines) }).space('s').replica({ bootstrap: 'snapshot' });
  await rep.ready;
  try {
    assert.equal(rep.status.bootstrap.method, 'snapshot');
    assert.equal(rep.size, 5);
    assert.equal(typeof rep.entities.get('issues\0I1'), 'string', 'held as its line until read');
    for (const l of lines) {
      const want = parseSnapshotEntity(l);
      assert.deepEqual(rep.get(want.collection, want.id), want, l);
    }
    assert.equal(typeof rep.entities.get('issues\0I1'), 'object', 'parsed once, then kept parsed');
    assert.deepEqual(rep.query(() => true, { collection: 'notes' }).map((e) => e.id).sort(), ['I4', 'N5']);
    assert.deepEqual(rep.query((e) => e.body.n === 3).map((e) => e.id), ['I2']);
    assert.deepEqual(rep.get('issues', 'I2').conflicts, [{ rev: '2-9f0e8d7c6b5a4321', deleted: false, body: { n: 2 } }]);
  } finally {
    await rep.close();
  }
});

test('an edit of an entity still held as text is queued against the rev in its line', async () => {
  const rep = snapsync({ url: 'http://fake', token: 't', fetch: fakeServer([V2]) }).space('s').replica({ bootstrap: 'snapshot' });
  await rep.ready;
  rep.pause();
  try {
    assert.equal(typeof rep.entities.get('issues\0I2'), 'string');
    const edit = rep.put('issues', 'I2', { n: 4 });
    assert.equal(edit.base_rev, '3-74780899ab8e4d39');
    assert.equal(rep.get('issues', 'I2').body.n, 4);
    assert.equal(rep.get('issues', 'I2').created_at, '2026-11-24T14:48:26.737Z');
  } finally {
    await rep.close();
  }
});

test('a line in snapsync\'s spelling whose rest is broken is refused when it is read (invalid_snapshot), not before', async () => {
  const broken = V1.replace('"body":{"n":1,"body":"x"}}', '"body":{"n":1,}}');
  const rep = snapsync({ url: 'http://fake', token: 't', fetch: fakeServer([broken, V2]) }).space('s').replica({ bootstrap: 'snapshot' });
  await rep.ready;
  try {
    assert.equal(rep.get('issues', 'I2').version, 7);
    assert.throws(() => rep.get('issues', 'I1'), (e) => e.code === 'invalid_snapshot');
  } finally {
    await rep.close();
  }
});
