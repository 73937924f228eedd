// snapshot_helpers.mjs - shared machinery for the snapshot end-to-end tests
// (SPEC §7 snapshots, §8 `snapshot` events).
//
// Binary-safe downloads (helpers.api() decodes bodies as UTF-8, which would
// mangle a gzip file), a parser for the snapsync.snapshot NDJSON format (v2
// written; v1 read),
// the live state of a space read back through the change feed, and small
// polling helpers. Only Node built-ins are used.

import http from 'node:http';
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { readdirSync, existsSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { api, apiOk, allChanges, sleep, ULID_RE } from './helpers.mjs';

export const TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
export const SHA_RE = /^[0-9a-f]{64}$/;
export const META_KEYS = ['completed_at', 'created_at', 'created_by', 'entity_counts', 'entity_total', 'error',
  'id', 'imported_at', 'integrity', 'integrity_checked_at', 'integrity_error', 'kind', 'level', 'note', 'raw_bytes', 'remote',
  'server_version', 'sha256', 'size_bytes', 'space', 'status'];
export const HEADER_KEYS = ['created_at', 'entity_counts', 'entity_total', 'format', 'instance_id', 'server_version',
  'snapshot', 'space', 'space_uid'];
export const ENTITY_KEYS = ['body', 'collection', 'created_at', 'deleted', 'id', 'rev', 'updated_at', 'version'];
// a v2 line: the entity, plus its revision history and conflict records as /changes?style=all_revs has them
export const LINE_KEYS = ['body', 'collection', 'conflicts', 'created_at', 'deleted', 'id', 'rev', 'revs', 'updated_at', 'version'];
export const FORMAT = 'snapsync.snapshot.v2';

export const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');
export const snapPath = (space, id = '', tail = '') => `/api/v1/spaces/${space}/snapshots${id ? `/${id}` : ''}${tail}`;

/** JSON with object keys sorted (canonical form, for comparing bodies as strings). */
export function canon(v) {
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/** Byte-order comparison of two JS strings as UTF-8. */
export function byteCmp(a, b) {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * GET with a binary body, on a fresh connection (node:http never inflates).
 * Resolves {status, headers, body: Buffer}.
 */
export function rawGet(srv, p, { token = srv.adminToken, headers = {}, timeoutMs = 30000, method = 'GET' } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: srv.port, method, path: p, headers: h, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout after ${timeoutMs} ms: GET ${p}`)));
    req.on('error', reject);
    req.end();
  });
}

/** POST a binary body (a snapshot file for import). Resolves like api(). */
export function postBinary(srv, p, buf, { token = srv.adminToken, headers = {}, timeoutMs = 30000 } = {}) {
  return api(srv, 'POST', p, {
    token, body: buf, timeoutMs, headers: { 'Content-Type': 'application/gzip', ...headers },
  });
}

/** Downloads the stored gzip file (Accept-Encoding: gzip) and checks it is the gzip as stored. */
export async function downloadGz(srv, space, id, opts = {}) {
  const r = await rawGet(srv, snapPath(space, id, '/download'), { ...opts, headers: { 'Accept-Encoding': 'gzip', ...(opts.headers || {}) } });
  if (r.status !== 200) throw new Error(`download ${space}/${id} -> ${r.status}: ${r.body.toString('utf8').slice(0, 300)}`);
  return r;
}

/**
 * Parses snapshot NDJSON (a Buffer, gzip or plain). Checks the line framing
 * (every line, the last one included, ends in \n; each is one JSON object).
 * Returns {header, entities, text}.
 */
export function parseSnapshot(buf) {
  const raw = buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b ? gunzipSync(buf) : buf;
  const text = raw.toString('utf8');
  assert.ok(text.endsWith('\n'), `snapshot text ends with a newline: ${JSON.stringify(text.slice(-80))}`);
  const lines = text.slice(0, -1).split('\n');
  const objs = lines.map((l, i) => {
    try { return JSON.parse(l); } catch (e) { throw new Error(`line ${i + 1} is not JSON: ${JSON.stringify(l.slice(0, 200))}`); }
  });
  const [header, ...entities] = objs;
  return { header, entities, text, rawLength: raw.length };
}

/** key for (collection, id) */
export const ekey = (c, id) => `${c}\u0000${id}`;

/**
 * Live entities of a space through the change feed (tombstones dropped).
 * Returns {map: Map(key -> entity), last_version}.
 */
export async function liveState(srv, space, { allRevs = false } = {}) {
  const { changes, last_version } = await allChanges(srv, space, { extra: `&bodies=true${allRevs ? '&style=all_revs' : ''}` });
  const map = new Map();
  for (const e of changes) if (!e.deleted) map.set(ekey(e.collection, e.id), e);
  return { map, last_version };
}

/** A sorted list of "collection\0id\0canon(body)" strings for set comparison. */
export function contentSet(entities) {
  return [...entities].map((e) => `${e.collection}\u0000${e.id}\u0000${canon(e.body)}`).sort();
}

/** Takes a snapshot synchronously (201) and returns its metadata. */
export function createSnapshot(srv, space, body = {}, opts = {}) {
  return apiOk(srv, 'POST', snapPath(space), { body, timeoutMs: 60000, ...opts }, 201);
}

/** Polls a snapshot until it leaves pending/running. */
export async function waitSnapshot(srv, space, id, { timeoutMs = 20000, token } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = await apiOk(srv, 'GET', snapPath(space, id), token ? { token } : {}, 200);
    if (m.status !== 'pending' && m.status !== 'running') return m;
    if (Date.now() > deadline) throw new Error(`snapshot ${id} still ${m.status} after ${timeoutMs} ms`);
    await sleep(25);
  }
}

/** Every snapshot of a space (all pages); query like 'kind=manual'. */
export async function listAll(srv, space, query = '', { limit = 1000, token } = {}) {
  const out = [];
  let cursor = null;
  for (let i = 0; i < 1000; i++) {
    const q = `${snapPath(space)}?limit=${limit}${query ? `&${query}` : ''}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const b = await apiOk(srv, 'GET', q, token ? { token } : {}, 200);
    assert.ok(Array.isArray(b.snapshots), `snapshots array: ${JSON.stringify(b)}`);
    out.push(...b.snapshots);
    cursor = b.next_cursor;
    if (cursor === null || cursor === undefined) return out;
  }
  throw new Error('snapshot list paging never ended');
}

/** The file names in DATA/snapshots (empty when the directory is absent). */
export function snapFiles(dataDir) {
  const d = path.join(dataDir, 'snapshots');
  if (!existsSync(d)) return [];
  return readdirSync(d).sort();
}

export const snapFile = (dataDir, id) => path.join(dataDir, 'snapshots', `${id}.ndjson.gz`);

/** Checks the §7 metadata shape of a completed snapshot. */
export function checkCompletedMeta(m, { space, kind } = {}) {
  const w = JSON.stringify(m);
  assert.deepEqual(Object.keys(m).sort(), META_KEYS, `metadata members ${w}`);
  assert.match(m.id, ULID_RE, `id ${w}`);
  if (space) assert.equal(m.space, space, `space ${w}`);
  if (kind) assert.equal(m.kind, kind, `kind ${w}`);
  assert.equal(m.status, 'completed', `status ${w}`);
  assert.ok(m.remote === null || (typeof m.remote === 'object' && typeof m.remote.status === 'string'), `remote ${w}`);
  assert.equal(m.error, null, `error ${w}`);
  assert.match(m.created_at, TIME_RE, `created_at ${w}`);
  assert.match(m.completed_at, TIME_RE, `completed_at ${w}`);
  assert.ok(Date.parse(m.completed_at) >= Date.parse(m.created_at), `completed_at >= created_at ${w}`);
  if (m.kind === 'imported') {
    // created_at is the capture time from the file; imported_at = completed_at
    assert.match(m.imported_at, TIME_RE, `imported_at ${w}`);
    assert.equal(m.imported_at, m.completed_at, `imported_at ${w}`);
    assert.ok(m.level === null || (Number.isInteger(m.level) && m.level >= 0 && m.level <= 9), `level ${w}`);
  } else {
    assert.equal(m.imported_at, null, `imported_at is null unless imported ${w}`);
    assert.ok(Number.isInteger(m.level) && m.level >= 0 && m.level <= 9, `level ${w}`);
  }
  assert.match(m.sha256, SHA_RE, `sha256 ${w}`);
  assert.ok(Number.isInteger(m.server_version) && m.server_version >= 0, `server_version ${w}`);
  assert.ok(Number.isInteger(m.size_bytes) && m.size_bytes > 0, `size_bytes ${w}`);
  assert.ok(Number.isInteger(m.raw_bytes) && m.raw_bytes > 0, `raw_bytes ${w}`);
  assert.ok(Number.isInteger(m.entity_total) && m.entity_total >= 0, `entity_total ${w}`);
  assert.equal(typeof m.entity_counts, 'object', `entity_counts ${w}`);
  const sum = Object.values(m.entity_counts).reduce((a, b) => a + b, 0);
  assert.equal(sum, m.entity_total, `entity_counts add up to entity_total ${w}`);
  // what the last full check or read of the file found (docs/api.md)
  assert.ok(['unchecked', 'ok', 'corrupt'].includes(m.integrity), `integrity ${w}`);
  if (m.integrity === 'unchecked') assert.equal(m.integrity_checked_at, null, `integrity_checked_at ${w}`);
  else assert.match(m.integrity_checked_at, TIME_RE, `integrity_checked_at ${w}`);
  if (m.integrity === 'corrupt') assert.ok(typeof m.integrity_error === 'string' && m.integrity_error, `integrity_error ${w}`);
  else assert.equal(m.integrity_error, null, `integrity_error ${w}`);
}

/** Checks a file (Buffer) against its metadata; returns the parsed file. */
export function checkFileAgainstMeta(gz, m) {
  assert.equal(gz.length, m.size_bytes, `file size = size_bytes (${m.id})`);
  assert.equal(sha256(gz), m.sha256, `sha256 of the file = metadata sha256 (${m.id})`);
  const f = parseSnapshot(gz);
  assert.equal(f.rawLength, m.raw_bytes, `decompressed size = raw_bytes (${m.id})`);
  assert.equal(f.header.format, FORMAT);
  assert.equal(f.header.snapshot, m.id, 'header snapshot id');
  assert.equal(f.header.server_version, m.server_version, 'header server_version');
  assert.equal(f.header.entity_total, m.entity_total, 'header entity_total');
  assert.deepEqual(f.header.entity_counts, m.entity_counts, 'header entity_counts');
  assert.equal(f.entities.length, m.entity_total, 'entity lines = entity_total');
  return f;
}

/** Checks the entity lines: §5 shape, live, ordered by (collection, id) in byte order, counts = header. */
export function checkEntityLines(f) {
  const counts = {};
  let prev = null;
  for (const e of f.entities) {
    const w = JSON.stringify(e).slice(0, 300);
    assert.deepEqual(Object.keys(e).sort(), LINE_KEYS, `entity members ${w}`);
    assert.ok(Array.isArray(e.revs) && e.revs[0] === e.rev, `revs: newest first, rev first ${w}`);
    assert.ok(Array.isArray(e.conflicts), `conflicts ${w}`);
    assert.equal(e.deleted, false, `no tombstones in a snapshot ${w}`);
    assert.match(e.rev, /^\d+-[0-9a-f]+$/, `rev ${w}`);
    assert.ok(e.body && typeof e.body === 'object' && !Array.isArray(e.body), `object body ${w}`);
    assert.ok(Number.isInteger(e.version) && e.version >= 1, `version ${w}`);
    if (prev) {
      const c = byteCmp(prev.collection, e.collection) || byteCmp(prev.id, e.id);
      assert.ok(c < 0, `lines strictly ordered by (collection, id): ${prev.collection}/${prev.id} then ${e.collection}/${e.id}`);
    }
    prev = e;
    counts[e.collection] = (counts[e.collection] || 0) + 1;
  }
  assert.deepEqual(counts, f.header.entity_counts, 'per-collection line counts = header entity_counts');
  assert.equal(f.entities.length, f.header.entity_total, 'line count = header entity_total');
}

/** Flips one byte of a buffer (copy) at position pos. */
export function flipByte(buf, pos = Math.floor(buf.length / 2)) {
  const b = Buffer.from(buf);
  b[pos] ^= 0x55;
  return b;
}

/** Pushes n entities built by make(i) -> {collection, id, body} through POST /changes. */
export async function pushEntities(srv, space, items, { batch = 1000, token } = {}) {
  const out = [];
  for (let off = 0; off < items.length; off += batch) {
    const changes = items.slice(off, off + batch).map((x) => ({
      collection: x.collection, id: x.id, base_rev: x.base_rev ?? null, deleted: false, body: x.body,
    }));
    const r = await api(srv, 'POST', `/api/v1/spaces/${space}/changes`, { body: { changes }, timeoutMs: 60000, ...(token ? { token } : {}) });
    if (r.status !== 200) throw new Error(`POST /changes -> ${r.status}: ${r.text.slice(0, 400)}`);
    for (const x of r.body.results) {
      if (x.status !== 'applied') throw new Error(`push result ${JSON.stringify(x)}`);
    }
    out.push(...r.body.results);
  }
  return out;
}

/** Waits until check() returns a truthy value (polling). */
export async function until(check, { timeoutMs = 5000, every = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timeout after ${timeoutMs} ms waiting for ${what}`);
    await sleep(every);
  }
}
