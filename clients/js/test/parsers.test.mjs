// parsers.test.mjs - the pieces of snapsync.js that need no server and no
// browser: the line splitter, the snapshot line parser (v1 and v2), the SSE
// parser and the error mapping.   node --test clients/js/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  LineSplitter, SSEParser, SnapsyncError, mapError, isTransient, parseSnapshotEntities, parseSnapshotEntity, parseSnapshotHeader,
} from '../snapsync.js';

const enc = (s) => new TextEncoder().encode(s);

test('LineSplitter: lines across chunks, CRLF, a multi-byte character cut between chunks, the last line without \\n', () => {
  const s = new LineSplitter();
  const bytes = enc('{"a":1}\r\n{"é":"ü€"}\n{"b":');
  const out = [];
  // one byte at a time: every UTF-8 sequence is cut somewhere
  for (let i = 0; i < bytes.length; i++) out.push(...s.push(bytes.subarray(i, i + 1)));
  out.push(...s.push(enc('2}\n')));
  out.push(...s.push(enc('tail')));
  out.push(...s.end());
  assert.deepEqual(out, ['{"a":1}', '{"é":"ü€"}', '{"b":2}', 'tail']);
  assert.deepEqual(s.end(), [], 'nothing is held after end()');
});

test('LineSplitter: holds one partial line, never the whole input', () => {
  const s = new LineSplitter();
  let n = 0;
  for (let i = 0; i < 1000; i++) {
    n += s.push(enc(`{"i":${i}}\n{"j":`)).length;
    n += s.push(enc(`${i}}\n`)).length;
    assert.ok(s.rest.length < 16, 'only the unterminated tail is kept');
  }
  assert.equal(n, 2000);
});

const V1_HEADER = '{"format":"snapsync.snapshot.v1","space":"alpha","space_uid":"01M870F4B6J2Y2BM3PJ0Q9AKFS","server_version":4,"created_at":"2026-11-24T14:48:26.801Z","instance_id":"01M870F3ZC31KMW6JKDKK7GMRH","entity_counts":{"issues":3,"notes":1},"entity_total":4,"snapshot":"01M870F4DE63XFXTE5Z2FKFXB5"}';
const V1_LINE = '{"collection":"issues","id":"I1","rev":"1-168db3be9a7654d0","version":1,"created_at":"2026-11-24T14:48:26.737Z","updated_at":"2026-11-24T14:48:26.737Z","deleted":false,"body":{"n":1}}';

test('snapshot lines: a v1 header and entity', () => {
  const h = parseSnapshotHeader(V1_HEADER);
  assert.equal(h.formatVersion, 1);
  assert.equal(h.server_version, 4);
  assert.equal(h.entity_total, 4);
  const e = parseSnapshotEntity(V1_LINE, 2);
  assert.deepEqual(e, {
    collection: 'issues', id: 'I1', rev: '1-168db3be9a7654d0', version: 1,
    created_at: '2026-11-24T14:48:26.737Z', updated_at: '2026-11-24T14:48:26.737Z', deleted: false, body: { n: 1 },
  });
  assert.ok(!('revs' in e) && !('conflicts' in e));
});

test('snapshot lines: v2 lines with revs and conflicts, and members nobody knows yet, are read tolerantly', () => {
  const h = parseSnapshotHeader(V1_HEADER.replace('v1', 'v2').slice(0, -1) + ',"future":{"x":1}}');
  assert.equal(h.formatVersion, 2);
  assert.deepEqual(h.future, { x: 1 });
  const line = JSON.stringify({
    ...JSON.parse(V1_LINE), rev: '3-aaaaaaaaaaaaaaaa', revs: ['3-aaaaaaaaaaaaaaaa', '2-bbbbbbbbbbbbbbbb'],
    conflicts: [{ rev: '2-cccccccccccccccc', deleted: false, body: { n: 9 } }], origin: 'x', extra: [1, 2],
  });
  const e = parseSnapshotEntity(line, 3);
  assert.equal(e.rev, '3-aaaaaaaaaaaaaaaa');
  assert.deepEqual(e.revs, ['3-aaaaaaaaaaaaaaaa', '2-bbbbbbbbbbbbbbbb']);
  assert.deepEqual(e.conflicts, [{ rev: '2-cccccccccccccccc', deleted: false, body: { n: 9 } }]);
  assert.deepEqual([e.extra, e.origin], [[1, 2], 'x'], 'unknown members are left as they are (and ignored)');
  // a v2 line with no pending conflicts: "conflicts":[] leaves none
  const e2 = parseSnapshotEntity(JSON.stringify({ ...JSON.parse(V1_LINE), revs: ['1-168db3be9a7654d0'], conflicts: [] }));
  assert.ok(!('conflicts' in e2));
  assert.deepEqual(e2.revs, ['1-168db3be9a7654d0']);
});

test('snapshot lines: a chunk parsed in one go gives the same entities; a bad line in it is named', () => {
  const lines = [V1_LINE, V1_LINE.replace('"I1"', '"I2"').replace('"version":1', '"version":2'), '{"collection":"c","id":"x","rev":"1-a","deleted":true,"body":null}'];
  const all = parseSnapshotEntities(lines, 2);
  assert.deepEqual(all, lines.map((l, i) => parseSnapshotEntity(l, 2 + i)));
  assert.deepEqual(all.map((e) => [e.id, e.deleted, e.body]), [['I1', false, { n: 1 }], ['I2', false, { n: 1 }], ['x', true, null]]);
  assert.throws(() => parseSnapshotEntities([V1_LINE, '{"collection":"c"}', V1_LINE], 10), (e) => e.code === 'invalid_snapshot' && /line 11/.test(e.message));
  assert.throws(() => parseSnapshotEntities([V1_LINE, V1_LINE, '{"collection":'], 10), (e) => /line 12: not JSON/.test(e.message));
});

test('snapshot lines: what is not a snapshot is refused with invalid_snapshot and the line number', () => {
  for (const bad of ['', 'nope', '{"format":"other"}', '{"format":"snapsync.snapshot.vX","server_version":1}',
    '{"format":"snapsync.snapshot.v1"}']) {
    assert.throws(() => parseSnapshotHeader(bad), (e) => e instanceof SnapsyncError && e.code === 'invalid_snapshot', bad);
  }
  assert.throws(() => parseSnapshotEntity('{"collection":"c"}', 7), (e) => e.code === 'invalid_snapshot' && /line 7/.test(e.message));
  assert.throws(() => parseSnapshotEntity('{"collection":"c","id":', 8), (e) => e.code === 'invalid_snapshot' && /line 8/.test(e.message));
});

function sse(chunks) {
  const got = [];
  const retries = [];
  const p = new SSEParser((e) => got.push(e), (ms) => retries.push(ms));
  for (const c of chunks) p.feed(c);
  return { got, retries, p };
}

test('SSEParser: the server\'s frames, id kept, retry, comments, multi-line data', () => {
  const { got, retries } = sse([
    'retry: 2000\n\n: ping\n\n',
    'id: 7\nevent: change\ndata: {"version":7}\n\n',
    'event: change\ndata: {"a":1}\ndata: {"b":2}\n\n',
    'data:no-space\n\n',
    'event: shutdown\ndata: {}\n\n',
  ]);
  assert.deepEqual(retries, [2000]);
  assert.deepEqual(got, [
    { type: 'change', data: '{"version":7}', id: '7' },
    { type: 'change', data: '{"a":1}\n{"b":2}', id: '7' },
    { type: 'message', data: 'no-space', id: '7' },
    { type: 'shutdown', data: '{}', id: '7' },
  ]);
});

test('SSEParser: frames cut anywhere (CRLF and CR line ends too) give the same events', () => {
  const text = 'id: 1\r\nevent: change\r\ndata: x\r\n\r\nid: 2\revent: sync\rdata: y\r\rid: 3\nevent: snapshot\ndata: z\n\n';
  const whole = sse([text]).got;
  assert.deepEqual(whole.map((e) => [e.id, e.type, e.data]), [['1', 'change', 'x'], ['2', 'sync', 'y'], ['3', 'snapshot', 'z']]);
  for (let cut = 1; cut < text.length; cut++) {
    assert.deepEqual(sse([text.slice(0, cut), text.slice(cut)]).got, whole, `cut at ${cut}`);
  }
  const bytewise = sse(text.split('')).got;
  assert.deepEqual(bytewise, whole);
});

test('SSEParser: an event without data is not dispatched; an unfinished one is held', () => {
  const { got, p } = sse(['event: change\n\n', 'id: 9\n\n', 'event: change\ndata: half']);
  assert.deepEqual(got, []);
  assert.equal(p.lastEventId, '9');
});

test('mapError: the server\'s error body becomes code, message, status and details', () => {
  const e = mapError(409, '{"error":"conflict","message":"rev mismatch","current_rev":"2-abc"}');
  assert.ok(e instanceof SnapsyncError && e instanceof Error);
  assert.equal(e.name, 'SnapsyncError');
  assert.deepEqual([e.code, e.message, e.status, e.details], ['conflict', 'rev mismatch', 409, { current_rev: '2-abc' }]);
  const r = mapError(429, '{"error":"rate_limited","message":"slow down"}', '7');
  assert.equal(r.details.retry_after, 7);
  assert.equal(isTransient(r), true);
});

test('mapError: answers that are not the server\'s JSON get a code from the status', () => {
  assert.deepEqual([mapError(401, '').code, mapError(401, '').status], ['unauthorized', 401]);
  assert.equal(mapError(403, '<html>no</html>').code, 'forbidden');
  assert.match(mapError(403, '<html>no</html>').message, /403: <html>no<\/html>/);
  assert.equal(mapError(502, 'Bad Gateway').code, 'bad_gateway');
  assert.equal(mapError(599, '').code, 'server_error');
  assert.equal(mapError(418, '').code, 'http_error');
  assert.equal(mapError(400, '[1,2]').code, 'bad_request', 'JSON without an error member');
  assert.equal(isTransient(mapError(401, '')), false);
  assert.equal(isTransient(mapError(503, '')), true);
  assert.equal(isTransient(new SnapsyncError('network_error', 'down', 0)), true);
});
