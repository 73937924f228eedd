// crash_matrix.test.mjs - the crash matrix (SPEC: a crash or kill -9 at any
// moment loses no acknowledged write and leaves no half-made snapshot
// listed). For each of
//   writes    PUTs, DELETEs, POST /changes pushes and blob uploads in flight
//   snapshot  a snapshot (async or not) while writes go on
//   restore   a restore (pre_restore snapshot, plan, apply)
//   import    an import of a .ndjson.gz or a plain .ndjson upload
//   sync      a pull, and a push, between two real instances (either the
//             instance running the job or its peer is killed)
// the server is killed with SIGKILL at a random moment inside the
// operation's window, restarted on the same data dir, and checked:
//   - every acknowledged write is there, as acknowledged; one in flight is
//     there whole or not at all (a push is all or nothing, a restore too; a
//     sync applies pages in order, so the receiving side holds a prefix of
//     the source's feed, at least as long as the progress it reported);
//   - PRAGMA integrity_check is ok (the sqlite3 CLI, read-only, while the
//     restarted server runs; once more after the last clean stop);
//   - no snapshot pending or running, no sync job running (GET /snapshots,
//     GET /sync/jobs); an operation answered 202 is listed, failed
//     ("interrupted") or completed;
//   - no temp file in the data dir (snapshots/*.tmp: snapshots, imports and
//     restore plans, src/snapshot.c; blobs/tmp/*: uploads and sync fetches,
//     src/blobs.c and src/sync.c);
//   - every completed snapshot has its file, with its sha256, and the file
//     passes `snapsync verify`; every file belongs to a completed snapshot;
//     every blob file's content hashes to its name; every blob a live
//     entity names is visible in its space;
//   - after a sync resumed post-restart, both peers show the same state and
//     the same digest (GET /sync/status).
//
// Every random choice comes from one seed, printed at the start (and with
// every failure): SNAPSYNC_CRASH_SEED=<n> replays it. Each phase draws from
// its own stream, so one phase replays alone with --test-name-pattern. Kill
// delays are fractions of the operation's duration, measured once per phase
// on a run that is not killed (timings differ from run to run, so a replay
// kills at the same fraction, not necessarily at the same instruction).
// SNAPSYNC_CRASH_ROUNDS sets the number of kills per phase (default 6; 3,
// on smaller data, for a sanitizer build, which is ~3x slower).
// SNAPSYNC_CRASH_KEEP=1 keeps the data dirs (their paths are printed).
//
// Only Node built-ins are used (Node 18 and later).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { execFile } from 'node:child_process';
import { createHash, randomInt } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, readSync, closeSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import os from 'node:os';
import path from 'node:path';
import {
  BIN, startServer, apiOk, putSpace, allChanges, runCli, prng, sleep,
} from './helpers.mjs';
import { openSSE } from './sse_helpers.mjs';
import { syncStatus, assertConverged } from './sync_helpers.mjs';
import { listAll, snapPath, canon, contentSet, liveState } from './snapshot_helpers.mjs';

// ---------------------------------------------------------------------------
// seed, scale

const SEED = process.env.SNAPSYNC_CRASH_SEED !== undefined && process.env.SNAPSYNC_CRASH_SEED !== ''
  ? Number(process.env.SNAPSYNC_CRASH_SEED) >>> 0
  : randomInt(0, 2 ** 32 - 1);
console.log(`crash matrix seed ${SEED} (replay with SNAPSYNC_CRASH_SEED=${SEED})`);

/** Whether the binary is built with a sanitizer (it links libasan/libubsan). */
function sanitizedBinary() {
  try {
    const b = readFileSync(BIN);
    return b.includes('libasan.so') || b.includes('__asan_init') || b.includes('libubsan.so');
  } catch { return false; }
}
const SANITIZED = sanitizedBinary();
const ROUNDS = Math.max(1, Number(process.env.SNAPSYNC_CRASH_ROUNDS) || (SANITIZED ? 3 : 6));

/** FNV-1a of a string, for one PRNG stream per phase. */
function hash32(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
  return h >>> 0;
}
const phaseRng = (name) => prng((SEED ^ hash32(name)) >>> 0);
const pick = (rng, arr) => arr[Math.floor(rng() * arr.length)];
const randInt = (rng, lo, hi) => lo + Math.floor(rng() * (hi - lo + 1));   // inclusive

/** n pseudo-random bytes from the stream (xorshift32 seeded by it). */
function seededBytes(rng, n) {
  const b = Buffer.alloc(n);
  let s = (Math.floor(rng() * 2 ** 32) >>> 0) || 1;
  for (let i = 0; i + 4 <= n; i += 4) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    b.writeUInt32LE(s, i);
  }
  return b;
}
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');
const padText = (rng, max) => 'p'.repeat(randInt(rng, 0, max));
/** Fisher-Yates, in place, from the stream. */
function shuffle(rng, arr) {
  for (let i = arr.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [arr[i], arr[j]] = [arr[j], arr[i]];
  }
  return arr;
}

/** Runs a phase as a test: its own PRNG stream; every failure names the seed, the phase and the round. */
function phase(name, fn) {
  test(`crash matrix: ${name}`, { timeout: (SANITIZED ? 600 : 240) * 1000 }, async (t) => {
    t.diagnostic(`seed ${SEED}, ${ROUNDS} kills${SANITIZED ? ' (sanitizer build)' : ''}`);
    const ctx = { round: 'setup', rng: phaseRng(name) };
    try {
      await fn(t, ctx);
    } catch (e) {
      e.message = `[crash matrix seed ${SEED} (SNAPSYNC_CRASH_SEED=${SEED}), phase "${name}", round ${ctx.round}] ${e.message}`;
      throw e;
    }
  });
}

// ---------------------------------------------------------------------------
// requests that tell an acknowledgment from a connection cut by the kill

/**
 * One request on a fresh connection. Resolves {status, headers, text, json,
 * buf} only for a complete response; rejects when the connection breaks
 * (the server died) before the whole response arrived.
 */
function request(srv, method, p, { body, headers = {}, token = srv.adminToken, timeoutMs = 60000 } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  let payload;
  if (body !== undefined) {
    payload = Buffer.isBuffer(body) || typeof body === 'string' ? body : JSON.stringify(body);
    if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) {
      h['Content-Type'] = Buffer.isBuffer(body) ? 'application/octet-stream' : 'application/json';
    }
    h['Content-Length'] = Buffer.byteLength(payload);
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: srv.port, method, path: p, headers: h, agent: false }, (res) => {
      const chunks = [];
      let ended = false;
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        ended = true;
        const buf = Buffer.concat(chunks);
        const text = buf.toString('utf8');
        let json;
        try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json, buf });
      });
      res.on('error', reject);
      res.on('close', () => { if (!ended) reject(new Error(`connection closed mid-response: ${method} ${p}`)); });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout after ${timeoutMs} ms: ${method} ${p}`)));
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** request() that never rejects: {r} or {err}, and when it settled. */
function settle(promise) {
  return promise.then((r) => ({ r, at: Date.now() }), (err) => ({ err, at: Date.now() }));
}

const ok2xx = (r) => r && r.status >= 200 && r.status < 300;

// ---------------------------------------------------------------------------
// an instance that is killed and restarted on its data dir (and its port, so
// a sync peer's URL and checkpoints stay valid)

class Inst {
  constructor(t, name) {
    this.name = name;
    this.dataDir = mkdtempSync(path.join(os.tmpdir(), `snapsync-crash-${name}-`));
    this.srv = null;
    this.port = 0;
    this.kills = 0;
    t.after(async () => {
      if (this.srv) await this.srv.kill9().catch(() => {});
      if (process.env.SNAPSYNC_CRASH_KEEP) t.diagnostic(`${name}: data dir kept: ${this.dataDir}`);
      else rmSync(this.dataDir, { recursive: true, force: true });
    });
  }

  get base() { return this.srv.base; }
  get adminToken() { return this.srv.adminToken; }

  async start() {
    const args = ['--snapshot-rate', '100000'];
    if (this.port) args.push('--listen', `127.0.0.1:${this.port}`);
    for (let attempt = 0; ; attempt++) {
      try {
        this.srv = await startServer({ dataDir: this.dataDir, args, startTimeoutMs: SANITIZED ? 30000 : 15000 });
        break;
      } catch (e) {
        // the same port again right after a kill: retry a little if taken
        if (attempt >= 5 || !/in use|EADDRINUSE|bind/i.test(e.message)) throw e;
        await sleep(200);
      }
    }
    this.port = this.srv.port;
    return this.srv;
  }

  async kill() {
    const ex = await this.srv.kill9();
    assert.equal(ex.signal, 'SIGKILL', `${this.name} was killed, not exited: ${JSON.stringify(ex)}\n${this.srv.stderrText().slice(-3000)}`);
    this.kills++;
  }

  /** SIGTERM: exit 0 within the shutdown timeout (a sanitizer report fails it). */
  async stopClean() {
    const ex = await this.srv.stop('SIGTERM', { timeoutMs: 30000 });
    assert.deepEqual(ex, { code: 0, signal: null }, `${this.name}: exit after SIGTERM\n${this.srv.stderrText().slice(-3000)}`);
  }
}

/** Sleeps until `at` (ms since the epoch). */
const sleepUntil = (at) => sleep(Math.max(0, at - Date.now()));

// ---------------------------------------------------------------------------
// the invariants after every restart

const verified = new Set();          // "<file>:<sha256>" that passed `snapsync verify`

/** Every file under dir, as paths relative to it. */
function walk(dir, rel = '') {
  const out = [];
  let ents;
  try { ents = readdirSync(path.join(dir, rel), { withFileTypes: true }); } catch { return out; }
  for (const e of ents) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walk(dir, r));
    else out.push(r);
  }
  return out;
}

/** The SQLite database files at the top of the data dir (by their header). */
function sqliteFiles(dataDir) {
  const out = [];
  for (const name of readdirSync(dataDir)) {
    const f = path.join(dataDir, name);
    if (!statSync(f).isFile() || /-(wal|shm|journal)$/.test(name)) continue;
    const fd = openSync(f, 'r');
    const head = Buffer.alloc(16);
    const n = readSync(fd, head, 0, 16, 0);
    closeSync(fd);
    if (n === 16 && head.toString('latin1') === 'SQLite format 3\u0000') out.push(f);
  }
  return out;
}

function sqlite(file, sql, { readonly = true } = {}) {
  return new Promise((resolve) => {
    execFile('sqlite3', [...(readonly ? ['-readonly'] : []), file, sql], { timeout: 60000 }, (err, stdout, stderr) => {
      const missing = err && err.code === 'ENOENT' ? 'the sqlite3 CLI is not installed (scripts/setup --test installs it)' : '';
      resolve({ code: err ? (err.code ?? 1) : 0, stdout: String(stdout), stderr: `${missing}${String(stderr)}` });
    });
  });
}

/** PRAGMA integrity_check on every database file of the data dir. */
async function checkIntegrity(dataDir, what) {
  const dbs = sqliteFiles(dataDir);
  assert.ok(dbs.length >= 1, `${what}: a SQLite database in ${dataDir}: ${readdirSync(dataDir)}`);
  for (const db of dbs) {
    const r = await sqlite(db, 'PRAGMA integrity_check;');
    assert.equal(r.code, 0, `${what}: sqlite3 ${db}: ${r.stderr}`);
    assert.equal(r.stdout.trim(), 'ok', `${what}: PRAGMA integrity_check of ${db}: ${r.stdout.slice(0, 2000)}`);
  }
}

async function listJobs(srv, space) {
  const out = [];
  let cursor = null;
  for (let i = 0; i < 100; i++) {
    const q = `/api/v1/spaces/${space}/sync/jobs?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const b = await apiOk(srv, 'GET', q, {}, 200);
    out.push(...b.jobs);
    cursor = b.next_cursor;
    if (!cursor) return out;
  }
  throw new Error('sync job list paging never ended');
}

/** Every blob a live entity names in "_blobs" is visible in its space. */
async function checkBlobRefs(srv, space, what, collections) {
  const extra = `&bodies=true${collections ? `&collections=${collections.join(',')}` : ''}`;
  const { changes } = await allChanges(srv, space, { extra });
  const need = new Set();
  for (const e of changes) {
    if (!e.deleted && e.body && Array.isArray(e.body._blobs)) for (const h of e.body._blobs) need.add(`${h}\u0000${e.collection}/${e.id}`);
  }
  const seen = new Map();
  for (const k of need) {
    const [h, who] = k.split('\u0000');
    if (!seen.has(h)) seen.set(h, (await request(srv, 'HEAD', `/api/v1/spaces/${space}/blobs/${h}`)).status);
    assert.equal(seen.get(h), 200, `${what}: ${space}/${who} names blob ${h}, which the space does not show`);
  }
  return seen.size;
}

/**
 * The §7 / storage invariants after a restart: nothing pending or running,
 * no temp file, every snapshot file that of a completed snapshot and intact
 * (`snapsync verify`), every blob file intact, integrity_check ok.
 */
async function checkInvariants(inst, what) {
  const srv = inst.srv;
  const dataDir = inst.dataDir;
  const spaces = (await apiOk(srv, 'GET', '/api/v1/spaces?limit=1000', {}, 200)).spaces.map((s) => s.name);
  const completed = new Map();
  for (const sp of spaces) {
    for (const s of await listAll(srv, sp)) {
      assert.ok(s.status === 'completed' || s.status === 'failed',
        `${what}: snapshot ${sp}/${s.id} is ${s.status} after the restart: ${JSON.stringify(s)}`);
      if (s.status === 'completed') completed.set(s.id, s);
    }
    for (const j of await listJobs(srv, sp)) {
      assert.notEqual(j.status, 'running', `${what}: sync job ${sp}/${j.id} still running after the restart: ${JSON.stringify(j)}`);
    }
  }

  const files = walk(dataDir);
  const temps = files.filter((f) => /\.tmp$|\.tmp\.|restore-plan|^blobs\/tmp\/./.test(f));
  assert.deepEqual(temps, [], `${what}: temp files left in the data dir`);

  const snapDir = path.join(dataDir, 'snapshots');
  const snapNames = existsSync(snapDir) ? readdirSync(snapDir) : [];
  for (const f of snapNames) {
    const m = /^([0-9A-HJKMNP-TV-Z]{26})\.ndjson\.gz$/.exec(f);
    assert.ok(m && completed.has(m[1]), `${what}: snapshots/${f} is not the file of a completed snapshot (completed: ${[...completed.keys()]})`);
  }
  for (const [id, s] of completed) {
    const f = path.join(snapDir, `${id}.ndjson.gz`);
    assert.ok(existsSync(f), `${what}: completed snapshot ${s.space}/${id} (${s.kind}) has no file`);
    const buf = readFileSync(f);
    assert.equal(buf.length, s.size_bytes, `${what}: size of ${id} (${s.kind})`);
    assert.equal(sha256(buf), s.sha256, `${what}: sha256 of ${id} (${s.kind})`);
    const key = `${f}:${s.sha256}`;
    if (!verified.has(key)) {
      const v = await runCli(['verify', f], { timeoutMs: SANITIZED ? 120000 : 30000 });
      assert.equal(v.code, 0, `${what}: snapsync verify ${id} (${s.kind}): ${v.stdout} ${v.stderr}`);
      verified.add(key);
    }
  }

  let blobFiles = 0;
  for (const f of files) {
    const m = /^blobs\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(f);
    if (!m) continue;
    blobFiles++;
    assert.equal(m[2].slice(0, 2), m[1], `${what}: blob ${f} in the wrong directory`);
    assert.equal(sha256(readFileSync(path.join(dataDir, f))), m[2], `${what}: blob file ${f} does not hash to its name`);
  }

  await checkIntegrity(dataDir, what);
  return { spaces, completed, blobFiles };
}

// ---------------------------------------------------------------------------
// the write workload: lanes of sequential requests, each lane owning its
// keys, and a model of what the server acknowledged

const WL_COLLECTIONS = ['wa', 'wb', 'files'];
const ekey = (c, id) => `${c}/${id}`;

function describe(x) {
  if (!x) return 'absent';
  return `${x.deleted ? 'deleted' : 'live'} rev ${x.rev ?? '?'} v${x.version ?? '?'} ${x.deleted ? '' : String(x.body).slice(0, 120)}`;
}

class Workload {
  /** lanes: writers in parallel; blobs: one of them uploads blobs and names them. */
  constructor(rng, space, { lanes = 6, keysPerLane = 8, blobs = true, maxPad = 1500 } = {}) {
    this.space = space;
    this.maxPad = maxPad;
    this.model = new Map();          // key -> {collection, id, rev, version, deleted, body (canonical text)}
    this.blobs = new Set();          // acknowledged blob uploads (sha256)
    this.maxVersion = 0;
    this.failures = [];
    this.acked = 0;
    this.lanes = [];
    for (let i = 0; i < lanes; i++) {
      const keys = [];
      for (let k = 0; k < keysPerLane; k++) keys.push({ collection: k % 2 ? 'wb' : 'wa', id: `l${i}-k${k}` });
      this.lanes.push({ i, rng: prng(Math.floor(rng() * 2 ** 32)), keys, seq: 0, pending: null, blob: blobs && i === 0, files: 0 });
    }
  }

  run(srv) {
    this.stopped = false;
    this.running = Promise.all(this.lanes.map((L) => this.lane(srv, L)));
  }

  /** Stops the lanes (after a kill they stop by themselves) and waits for them. */
  async halt() {
    this.stopped = true;
    await this.running;
  }

  url(c, id) { return `/api/v1/spaces/${this.space}/collections/${c}/entities/${encodeURIComponent(id)}`; }

  body(L) { return { lane: L.i, seq: ++L.seq, pad: padText(L.rng, this.maxPad) }; }

  async lane(srv, L) {
    while (!this.stopped) {
      const x = L.rng();
      let op;
      if (L.blob && x < 0.35) {
        const n = randInt(L.rng, 1, 64) * 4096;
        const bytes = seededBytes(L.rng, n);
        const sha = sha256(bytes);
        op = { kind: 'blob', method: 'PUT', path: `/api/v1/spaces/${this.space}/blobs/${sha}`, body: bytes, sha, items: [] };
        if (!(await this.exec(srv, L, op))) return;
        const id = `f${L.i}-${L.files++}`;
        const body = { _blobs: [sha], n, seq: ++L.seq };
        op = { kind: 'put', method: 'PUT', path: this.url('files', id), body, items: [{ key: ekey('files', id), collection: 'files', id, deleted: false, body: canon(body) }] };
      } else if (x < 0.55) {
        const k = pick(L.rng, L.keys);
        const cur = this.model.get(ekey(k.collection, k.id));
        if (cur && !cur.deleted && L.rng() < 0.5) {
          op = { kind: 'delete', method: 'DELETE', path: this.url(k.collection, k.id), items: [{ key: ekey(k.collection, k.id), ...k, deleted: true, body: null }] };
        } else {
          const body = this.body(L);
          op = { kind: 'put', method: 'PUT', path: this.url(k.collection, k.id), body, items: [{ key: ekey(k.collection, k.id), ...k, deleted: false, body: canon(body) }] };
        }
      } else {
        // a push of 2..6 distinct keys of the lane: puts and deletes
        const n = randInt(L.rng, 2, Math.min(6, L.keys.length));
        const ks = shuffle(L.rng, [...L.keys]).slice(0, n);
        const items = [];
        const changes = [];
        for (const k of ks) {
          const cur = this.model.get(ekey(k.collection, k.id));
          const del = cur && !cur.deleted && L.rng() < 0.25;
          const body = del ? null : this.body(L);
          changes.push({ collection: k.collection, id: k.id, base_rev: cur ? cur.rev : null, deleted: !!del, body });
          items.push({ key: ekey(k.collection, k.id), ...k, deleted: !!del, body: del ? null : canon(body) });
        }
        op = { kind: 'push', method: 'POST', path: `/api/v1/spaces/${this.space}/changes`, body: { changes }, items };
      }
      if (!(await this.exec(srv, L, op))) return;
    }
  }

  /** Runs one op; false once the lane must stop (the server is gone, or an unexpected answer). */
  async exec(srv, L, op) {
    L.pending = op;
    let r;
    try {
      r = await request(srv, op.method, op.path, { body: op.body, timeoutMs: 30000 });
    } catch {
      return false;                  // cut by the kill: stays pending (may or may not be applied)
    }
    if (r.status === 503) {          // overloaded: nothing queued, nothing changed
      L.pending = null;
      await sleep(5);
      return true;
    }
    const fail = (why) => { this.failures.push(`lane ${L.i} ${op.kind} ${op.method} ${op.path} -> ${r.status}: ${why} ${r.text.slice(0, 300)}`); return false; };
    if (!ok2xx(r) || !r.json) return fail('not acknowledged');
    if (op.kind === 'blob') {
      this.blobs.add(op.sha);
    } else if (op.kind === 'push') {
      const res = r.json.results;
      if (!Array.isArray(res) || res.length !== op.items.length) return fail('results');
      for (let i = 0; i < res.length; i++) {
        if (res[i].status !== 'applied') return fail(`item ${i} not applied`);
        const it = op.items[i];
        this.model.set(it.key, { collection: it.collection, id: it.id, rev: res[i].rev, version: res[i].version, deleted: it.deleted, body: it.body });
        this.maxVersion = Math.max(this.maxVersion, res[i].version);
      }
    } else {
      const e = r.json;
      const it = op.items[0];
      if (typeof e.rev !== 'string' || !Number.isInteger(e.version) || e.deleted !== it.deleted) return fail('entity');
      this.model.set(it.key, { collection: it.collection, id: it.id, rev: e.rev, version: e.version, deleted: e.deleted, body: e.deleted ? null : canon(e.body) });
      this.maxVersion = Math.max(this.maxVersion, e.version);
    }
    this.acked++;
    L.pending = null;
    return true;
  }

  /**
   * After the restart: every acknowledged write is there as acknowledged;
   * each op in flight at the kill is there whole or not at all. Then the
   * model takes what is there (the next round starts from it).
   * Returns {inFlight, applied}.
   */
  async check(srv, what) {
    assert.deepEqual(this.failures, [], `${what}: the workload got unexpected answers`);
    const { changes } = await allChanges(srv, this.space, { extra: `&bodies=true&collections=${WL_COLLECTIONS.join(',')}` });
    const actual = new Map();
    for (const e of changes) {
      actual.set(ekey(e.collection, e.id), { collection: e.collection, id: e.id, rev: e.rev, version: e.version, deleted: e.deleted, body: e.deleted ? null : canon(e.body) });
    }
    const pend = new Map();
    for (const L of this.lanes) if (L.pending) for (const it of L.pending.items) pend.set(it.key, { op: L.pending, it });
    const sameAsModel = (a, m) => (!a && !m) || (a && m && a.rev === m.rev && a.version === m.version && a.deleted === m.deleted && a.body === m.body);
    const sameAsItem = (a, it) => !!a && a.deleted === it.deleted && (it.deleted || a.body === it.body);
    for (const key of new Set([...this.model.keys(), ...pend.keys(), ...actual.keys()])) {
      const a = actual.get(key);
      const m = this.model.get(key);
      const p = pend.get(key);
      assert.ok(sameAsModel(a, m) || (p && sameAsItem(a, p.it)),
        `${what}: ${this.space}/${key} after the restart is ${describe(a)}; acknowledged: ${describe(m)}; in flight: ${p ? `${p.op.kind} ${describe(p.it)}` : 'nothing'}`);
    }
    let inFlight = 0;
    let applied = 0;
    for (const L of this.lanes) {
      if (!L.pending) continue;
      inFlight++;
      const flags = L.pending.items.map((it) => sameAsItem(actual.get(it.key), it));
      if (flags.length && flags.every(Boolean)) applied++;
      assert.ok(flags.every(Boolean) || !flags.some(Boolean),
        `${what}: a ${L.pending.kind} in flight at the kill is half applied (${flags}): ${JSON.stringify(L.pending.items.map((it) => [it.key, describe(actual.get(it.key))]))}`);
    }
    const st = await syncStatus(srv, this.space);
    assert.ok(st.server_version >= this.maxVersion, `${what}: server_version ${st.server_version} < the highest acknowledged version ${this.maxVersion}`);
    for (const sha of this.blobs) {
      const r = await request(srv, 'GET', `/api/v1/spaces/${this.space}/blobs/${sha}`);
      assert.equal(r.status, 200, `${what}: acknowledged blob ${sha} after the restart: ${r.status}`);
      assert.equal(sha256(r.buf), sha, `${what}: acknowledged blob ${sha}: content`);
    }
    await checkBlobRefs(srv, this.space, what, ['files']);
    // the next round starts from what is there
    this.model = actual;
    for (const a of actual.values()) this.maxVersion = Math.max(this.maxVersion, a.version);
    for (const L of this.lanes) L.pending = null;
    return { inFlight, applied };
  }
}

/** Bulk entities of ~400 bytes of text each, through POST /changes. */
async function bulkLoad(srv, space, n, rng, { collection = 'bulk', prefix = 'b' } = {}) {
  for (let off = 0; off < n; off += 1000) {
    const changes = [];
    for (let i = off; i < Math.min(n, off + 1000); i++) {
      changes.push({ collection, id: `${prefix}${String(i).padStart(6, '0')}`, base_rev: null, deleted: false,
        body: { i, r: seededBytes(rng, 240).toString('base64'), t: `entity number ${i}` } });
    }
    const r = await apiOk(srv, 'POST', `/api/v1/spaces/${space}/changes`, { body: { changes }, timeoutMs: 60000 }, 200);
    assert.ok(r.results.every((x) => x.status === 'applied'), 'bulk load applied');
  }
}

/** A kill delay: a fraction of the window drawn from the stream (a little past its end too). */
const killDelay = (rng, windowMs) => Math.round(rng() * 1.1 * windowMs);

// ---------------------------------------------------------------------------
// phase: writes in flight

phase('writes in flight (PUT, DELETE, push, blob upload)', async (t, ctx) => {
  const { rng } = ctx;
  const inst = new Inst(t, 'writes');
  await inst.start();
  await putSpace(inst.srv, 'w');
  const wl = new Workload(rng, 'w', { lanes: 8 });
  for (let round = 1; round <= ROUNDS; round++) {
    ctx.round = round;
    const delay = 20 + killDelay(rng, SANITIZED ? 1500 : 600);
    const acked0 = wl.acked;
    wl.run(inst.srv);
    await sleep(delay);
    await inst.kill();
    await wl.halt();
    await inst.start();
    const what = `writes round ${round} (kill after ${delay} ms)`;
    const { inFlight, applied } = await wl.check(inst.srv, what);
    const inv = await checkInvariants(inst, what);
    t.diagnostic(`${what}: ${wl.acked - acked0} acknowledged, ${inFlight} in flight at the kill (${applied} of them applied), ${wl.blobs.size} blobs, ${inv.blobFiles} blob files`);
  }
  // and the space takes writes after the last restart
  ctx.round = 'end';
  wl.run(inst.srv);
  await sleep(100);
  await wl.halt();
  await wl.check(inst.srv, 'after the last restart');
  await inst.stopClean();
  await checkIntegrity(inst.dataDir, 'after the clean stop');
});

// ---------------------------------------------------------------------------
// phase: a snapshot

phase('snapshot', async (t, ctx) => {
  const { rng } = ctx;
  const N = SANITIZED ? 6000 : 12000;
  const inst = new Inst(t, 'snap');
  await inst.start();
  await putSpace(inst.srv, 's');
  await bulkLoad(inst.srv, 's', N, rng);
  const wl = new Workload(rng, 's', { lanes: 3, keysPerLane: 6 });
  // the window: one snapshot of this space while the workload writes, not killed
  wl.run(inst.srv);
  let t0 = Date.now();
  const m0 = await apiOk(inst.srv, 'POST', snapPath('s'), { body: { note: 'measure' }, timeoutMs: 120000 }, 201);
  const T = Date.now() - t0;
  await wl.halt();
  t.diagnostic(`a snapshot of ${N} entities takes ${T} ms (${m0.size_bytes} bytes)`);
  const outcomes = [];
  for (let round = 1; round <= ROUNDS; round++) {
    ctx.round = round;
    const before = new Set((await listAll(inst.srv, 's')).map((s) => s.id));
    const async = rng() < 0.6;
    const delay = killDelay(rng, T);
    wl.run(inst.srv);
    t0 = Date.now();
    const p = settle(request(inst.srv, 'POST', snapPath('s'), {
      body: { note: `round ${round}` }, headers: async ? { Prefer: 'respond-async' } : {}, timeoutMs: 120000,
    }));
    await sleepUntil(t0 + delay);
    await inst.kill();
    await wl.halt();
    const { r } = await p;
    await inst.start();
    const what = `snapshot round ${round} (${async ? 'async' : 'sync'}, kill after ${delay} ms of ~${T})`;
    const after = await listAll(inst.srv, 's');
    const fresh = after.filter((s) => !before.has(s.id));
    assert.ok(fresh.length <= 1, `${what}: one snapshot at most was started: ${JSON.stringify(fresh)}`);
    assert.ok(!r || ok2xx(r), `${what}: answered ${r && r.status}: ${r && r.text}`);
    const acked = r ? r.json : null;
    if (acked) {
      assert.equal(r.status, async ? 202 : 201, `${what}: ${r.text}`);
      assert.ok(fresh.length === 1 && fresh[0].id === acked.id, `${what}: the acknowledged snapshot ${acked.id} is listed: ${JSON.stringify(fresh)}`);
      if (!async) assert.equal(fresh[0].status, 'completed', `${what}: a snapshot answered 201 is completed after the restart`);
    }
    for (const s of fresh) {
      if (s.status === 'failed') assert.match(String(s.error), /interrupted/i, `${what}: a snapshot cut by the kill says so: ${JSON.stringify(s)}`);
    }
    await wl.check(inst.srv, what);
    await checkInvariants(inst, what);
    const outcome = fresh.length ? fresh[0].status : 'no row';
    outcomes.push(outcome);
    t.diagnostic(`${what}: ${acked ? `answered ${r.status}` : 'not answered'}, then ${outcome}`);
  }
  ctx.round = 'end';
  // the space is not left busy: a snapshot completes and holds every entity
  const m = await apiOk(inst.srv, 'POST', snapPath('s'), { body: {}, timeoutMs: 120000 }, 201);
  assert.equal(m.status, 'completed');
  const st = await syncStatus(inst.srv, 's');
  assert.equal(m.entity_total, st.entity_count, 'a snapshot after the kills holds every live entity');
  await checkInvariants(inst, 'after the last snapshot');
  await inst.stopClean();
  await checkIntegrity(inst.dataDir, 'after the clean stop');
  t.diagnostic(`outcomes: ${outcomes.join(', ')}`);
});

// ---------------------------------------------------------------------------
// phase: a restore

/** The live content of a space as one comparable string, and its size. */
async function contentOf(srv, space) {
  const { map } = await liveState(srv, space);
  const set = contentSet(map.values());
  return { set, key: set.join('\n'), n: set.length, map };
}
/** How many entries two content sets do not share. */
function contentDiff(a, b) {
  const sa = new Set(a.set);
  const sb = new Set(b.set);
  let d = 0;
  for (const x of sa) if (!sb.has(x)) d++;
  for (const x of sb) if (!sa.has(x)) d++;
  return d;
}
/** The live content of a snapshot file on disk, comparable with contentOf(). */
function fileContent(dataDir, id) {
  const text = gunzipSync(readFileSync(path.join(dataDir, 'snapshots', `${id}.ndjson.gz`))).toString('utf8');
  const lines = text.split('\n').filter(Boolean).slice(1).map((l) => JSON.parse(l));
  const set = contentSet(lines);
  return { set, key: set.join('\n'), n: set.length };
}

phase('restore', async (t, ctx) => {
  const { rng } = ctx;
  const N = SANITIZED ? 3000 : 6000;
  const inst = new Inst(t, 'restore');
  await inst.start();
  await putSpace(inst.srv, 'r');
  await putSpace(inst.srv, 'w');
  await bulkLoad(inst.srv, 'r', N, rng);
  const S = await apiOk(inst.srv, 'POST', snapPath('r'), { body: { note: 'the restore source' }, timeoutMs: 120000 }, 201);
  const P = await contentOf(inst.srv, 'r');
  assert.equal(P.n, N);
  let added = 0;
  // edits, deletes and additions: the space moves away from S
  const modify = async () => {
    const live = [...(await liveState(inst.srv, 'r')).map.values()];
    const seen = new Set();
    const changes = [];
    const nEdit = Math.round(live.length * 0.06);
    const nDel = Math.round(live.length * 0.03);
    for (let i = 0; i < nEdit + nDel; i++) {
      const e = pick(rng, live);
      if (seen.has(e.id)) continue;
      seen.add(e.id);
      const del = i >= nEdit;
      changes.push({ collection: e.collection, id: e.id, base_rev: e.rev, deleted: del, body: del ? null : { edited: i, pad: padText(rng, 300) } });
    }
    for (let i = 0, n = Math.round(N * 0.03); i < n; i++) {
      changes.push({ collection: 'bulk', id: `n${String(added++).padStart(6, '0')}`, base_rev: null, deleted: false, body: { added: added, pad: padText(rng, 300) } });
    }
    for (let off = 0; off < changes.length; off += 1000) {
      const r = await apiOk(inst.srv, 'POST', '/api/v1/spaces/r/changes', { body: { changes: changes.slice(off, off + 1000) }, timeoutMs: 60000 }, 200);
      assert.ok(r.results.every((x) => x.status === 'applied'), `modify: ${JSON.stringify(r.results.find((x) => x.status !== 'applied'))}`);
    }
    const Q = await contentOf(inst.srv, 'r');
    assert.notEqual(Q.key, P.key, 'the space moved away from the snapshot');
    return Q;
  };
  const restoreBody = { confirm: S.id };
  const wl = new Workload(rng, 'w', { lanes: 3 });

  // the window: one restore, not killed (writes go on in another space)
  await modify();
  wl.run(inst.srv);
  let t0 = Date.now();
  const r0 = await apiOk(inst.srv, 'POST', snapPath('r', S.id, '/restore'), { body: restoreBody, timeoutMs: 120000 }, 200);
  const T = Date.now() - t0;
  await wl.halt();
  assert.equal((await contentOf(inst.srv, 'r')).key, P.key, 'a restore makes the space the snapshot');
  t.diagnostic(`a restore of ${N} entities takes ${T} ms: ${JSON.stringify(r0.changes)}`);

  const outcomes = [];
  for (let round = 1; round <= ROUNDS; round++) {
    ctx.round = round;
    const Q = await modify();
    const preBefore = new Set((await listAll(inst.srv, 'r', 'kind=pre_restore')).map((s) => s.id));
    const delay = killDelay(rng, T);
    wl.run(inst.srv);
    t0 = Date.now();
    const p = settle(request(inst.srv, 'POST', snapPath('r', S.id, '/restore'), { body: restoreBody, timeoutMs: 120000 }));
    await sleepUntil(t0 + delay);
    await inst.kill();
    await wl.halt();
    const { r } = await p;
    await inst.start();
    const what = `restore round ${round} (kill after ${delay} ms of ~${T})`;
    assert.ok(!r || r.status === 200, `${what}: answered ${r && r.status}: ${r && r.text}`);
    const now = await contentOf(inst.srv, 'r');
    const restored = now.key === P.key;
    const unchanged = now.key === Q.key;
    assert.ok(restored || unchanged,
      `${what}: the space is neither as before the restore nor the snapshot (half a restore): ${now.n} live entities, ${contentDiff(now, Q)} differences with the state before, ${contentDiff(now, P)} with the snapshot`);
    if (r) assert.ok(restored, `${what}: the restore was answered 200, then the space is not the snapshot`);
    const fresh = (await listAll(inst.srv, 'r', 'kind=pre_restore')).filter((s) => !preBefore.has(s.id));
    assert.ok(fresh.length <= 1, `${what}: one pre_restore snapshot at most: ${JSON.stringify(fresh)}`);
    for (const s of fresh) {
      if (s.status === 'failed') assert.match(String(s.error), /interrupted/i, `${what}: ${JSON.stringify(s)}`);
    }
    if (restored) {
      // what the restore replaced is kept: its pre_restore snapshot is complete and holds the state before
      const pre = fresh.find((s) => s.status === 'completed');
      assert.ok(pre, `${what}: the space was restored, so its pre_restore snapshot is completed: ${JSON.stringify(fresh)}`);
      if (r) assert.equal(pre.id, r.json.pre_restore_snapshot, `${what}: the answer names the pre_restore snapshot`);
      const f = fileContent(inst.dataDir, pre.id);
      assert.ok(f.key === Q.key, `${what}: the pre_restore snapshot holds the state before the restore (${contentDiff(f, Q)} differences)`);
    }
    const src = await apiOk(inst.srv, 'GET', snapPath('r', S.id), {}, 200);
    assert.equal(src.status, 'completed', `${what}: the restored snapshot stays`);
    await wl.check(inst.srv, what);
    await checkInvariants(inst, what);
    const outcome = `${restored ? 'restored' : 'unchanged'}${r ? ' (answered)' : ''}, pre_restore ${fresh.length ? fresh[0].status : 'none'}`;
    outcomes.push(outcome);
    t.diagnostic(`${what}: ${outcome}`);
  }
  ctx.round = 'end';
  // the space is not left busy: the restore runs to the end now
  await modify();
  await apiOk(inst.srv, 'POST', snapPath('r', S.id, '/restore'), { body: restoreBody, timeoutMs: 120000 }, 200);
  assert.equal((await contentOf(inst.srv, 'r')).key, P.key, 'a restore after the kills');
  await checkInvariants(inst, 'after the last restore');
  await inst.stopClean();
  await checkIntegrity(inst.dataDir, 'after the clean stop');
});

// ---------------------------------------------------------------------------
// phase: an import

phase('import', async (t, ctx) => {
  const { rng } = ctx;
  const N = SANITIZED ? 4000 : 10000;
  const inst = new Inst(t, 'import');
  await inst.start();
  await putSpace(inst.srv, 'i');
  await putSpace(inst.srv, 'w');
  await bulkLoad(inst.srv, 'i', N, rng);
  const S = await apiOk(inst.srv, 'POST', snapPath('i'), { body: { note: 'exported' }, timeoutMs: 120000 }, 201);
  const files = {};
  files.gz = readFileSync(path.join(inst.dataDir, 'snapshots', `${S.id}.ndjson.gz`));
  files.plain = gunzipSync(files.gz);
  const want = fileContent(inst.dataDir, S.id);
  const importOnce = (kind) => request(inst.srv, 'POST', snapPath('i', '', '/import'), {
    body: files[kind], headers: { 'Content-Type': kind === 'gz' ? 'application/gzip' : 'application/x-ndjson' }, timeoutMs: 120000,
  });
  const wl = new Workload(rng, 'w', { lanes: 3 });

  // the windows: one import of each kind, not killed
  const T = {};
  wl.run(inst.srv);
  for (const kind of ['gz', 'plain']) {
    const t0 = Date.now();
    const r = await importOnce(kind);
    T[kind] = Date.now() - t0;
    assert.equal(r.status, 201, `import ${kind}: ${r.text}`);
  }
  await wl.halt();
  t.diagnostic(`an import of ${N} entities takes ${T.gz} ms (${files.gz.length} bytes gzip), ${T.plain} ms (${files.plain.length} bytes NDJSON)`);

  const outcomes = [];
  for (let round = 1; round <= ROUNDS; round++) {
    ctx.round = round;
    const kind = rng() < 0.5 ? 'gz' : 'plain';
    const before = new Set((await listAll(inst.srv, 'i', 'kind=imported')).map((s) => s.id));
    const delay = killDelay(rng, T[kind]);
    wl.run(inst.srv);
    const t0 = Date.now();
    const p = settle(importOnce(kind));
    await sleepUntil(t0 + delay);
    await inst.kill();
    await wl.halt();
    const { r } = await p;
    await inst.start();
    const what = `import round ${round} (${kind}, kill after ${delay} ms of ~${T[kind]})`;
    assert.ok(!r || r.status === 201, `${what}: answered ${r && r.status}: ${r && r.text}`);
    const fresh = (await listAll(inst.srv, 'i', 'kind=imported')).filter((s) => !before.has(s.id));
    assert.ok(fresh.length <= 1, `${what}: one import at most: ${JSON.stringify(fresh)}`);
    if (r) assert.ok(fresh.length === 1 && fresh[0].id === r.json.id, `${what}: the acknowledged import ${r.json.id} is listed: ${JSON.stringify(fresh)}`);
    for (const s of fresh) {
      // an import is listed once it is complete, never half made
      assert.equal(s.status, 'completed', `${what}: ${JSON.stringify(s)}`);
      assert.equal(s.entity_total, N, `${what}: entity_total`);
      if (kind === 'gz') assert.equal(s.sha256, sha256(files.gz), `${what}: a gzip upload is stored as it came`);
      const f = fileContent(inst.dataDir, s.id);
      assert.ok(f.key === want.key, `${what}: the imported file holds the exported entities (${contentDiff(f, want)} differences)`);
    }
    await wl.check(inst.srv, what);
    await checkInvariants(inst, what);
    const outcome = fresh.length ? `${fresh[0].status}${r ? ' (answered)' : ''}` : 'not there';
    outcomes.push(outcome);
    t.diagnostic(`${what}: ${outcome}`);
  }
  ctx.round = 'end';
  const r = await importOnce('gz');
  assert.equal(r.status, 201, `an import after the kills: ${r.text}`);
  await checkInvariants(inst, 'after the last import');
  await inst.stopClean();
  await checkIntegrity(inst.dataDir, 'after the clean stop');
});

// ---------------------------------------------------------------------------
// phases: a sync pull and a sync push between two instances. A takes the
// writes; B receives them (pull: B's job pulls from A; push: A's job pushes
// to B). Either the instance running the job or its peer is killed; a peer
// comes back on its port at once, so the job's retries may reach it.

// (a rev is a hash of its parent and its content: the same rev is the same body)
const sameState = (b, e) => (!b && !e) || (!!b && !!e && b.rev === e.rev && b.deleted === e.deleted);

/** Map "collection/id" -> {rev, deleted, version} of every entity (tombstones too; no bodies: cheaper). */
async function revs(srv, space) {
  const { changes } = await allChanges(srv, space);
  return new Map(changes.map((e) => [`${e.collection}/${e.id}`, { rev: e.rev, deleted: e.deleted, version: e.version }]));
}

/** Two instances hold the same state of a space: the same digest and counts, the same revs. */
async function assertSame(X, Y, space, what) {
  const [sx, sy] = await Promise.all([syncStatus(X, space), syncStatus(Y, space)]);
  for (const k of ['entity_count', 'tombstone_count', 'conflict_count', 'digest']) {
    assert.equal(sy[k], sx[k], `${what}: ${k} differs: ${JSON.stringify([sx, sy])}`);
  }
  const norm = (m) => [...m].map(([k, v]) => `${k} ${v.rev} ${v.deleted}`).sort();
  assert.deepEqual(norm(await revs(Y, space)), norm(await revs(X, space)), `${what}: entity revs differ`);
  return sx;
}

/** [1,1,0,0,0,1] -> "1x2 0x3 1x1" */
function runs(flags) {
  const out = [];
  for (const f of flags) {
    if (out.length && out[out.length - 1][0] === f) out[out.length - 1][1]++;
    else out.push([f, 1]);
  }
  return out.map(([f, n]) => `${f}x${n}`).join(' ');
}

function syncPhase(direction) {
  phase(`sync ${direction}`, async (t, ctx) => {
    const { rng } = ctx;
    const M = SANITIZED ? 2000 : 4000;              // changes on A per round
    const A = new Inst(t, 'A');
    const B = new Inst(t, 'B');
    await Promise.all([A.start(), B.start()]);
    await putSpace(A.srv, 'y');
    await putSpace(B.srv, 'y');
    const runner = direction === 'pull' ? B : A;
    const peer = direction === 'pull' ? A : B;
    const firstVictim = rng() < 0.5 ? 0 : 1;
    let nextId = 0;

    // M changes on A: additions, edits, deletions, and entities naming new blobs
    const writeRound = async () => {
      const st = await revs(A.srv, 'y');
      const live = [...st].filter(([, v]) => !v.deleted);
      shuffle(rng, live);
      const nEdit = Math.min(live.length, Math.round(M * 0.45));
      const nDel = Math.min(live.length - nEdit, Math.round(M * 0.1));
      const changes = [];
      for (let i = 0; i < nEdit + nDel; i++) {
        const [k, v] = live[i];
        const [collection, id] = k.split('/');
        const del = i >= nEdit;
        changes.push({ collection, id, base_rev: v.rev, deleted: del, body: del ? null : { edit: i, pad: padText(rng, 400) } });
      }
      for (let i = changes.length; i < M - 2; i++) {
        changes.push({ collection: rng() < 0.5 ? 'c' : 'd', id: `y${nextId++}`, base_rev: null, deleted: false, body: { n: nextId, pad: padText(rng, 400) } });
      }
      for (let i = 0; i < 2; i++) {
        const bytes = seededBytes(rng, randInt(rng, 8, 64) * 4096);
        const sha = sha256(bytes);
        await apiOk(A.srv, 'PUT', `/api/v1/spaces/y/blobs/${sha}`, { body: bytes, headers: { 'Content-Type': 'application/octet-stream' } }, [200, 201]);
        changes.push({ collection: 'files', id: `y${nextId++}`, base_rev: null, deleted: false, body: { _blobs: [sha], size: bytes.length } });
      }
      shuffle(rng, changes);                               // pages mix kinds
      for (let off = 0; off < changes.length; off += 1000) {
        const r = await apiOk(A.srv, 'POST', '/api/v1/spaces/y/changes', { body: { changes: changes.slice(off, off + 1000) }, timeoutMs: 60000 }, 200);
        assert.ok(r.results.every((x) => x.status === 'applied'), `A's writes: ${JSON.stringify(r.results.find((x) => x.status !== 'applied'))}`);
      }
    };
    const count = (j) => (direction === 'pull' ? j.pulled : j.pushed);

    let T = 0;
    for (let round = 0; round <= ROUNDS; round++) {
      ctx.round = round;
      const tm = [Date.now()];
      const v0 = (await syncStatus(A.srv, 'y')).server_version;
      const before = await revs(B.srv, 'y');
      await writeRound();
      tm.push(Date.now());
      // the round's changes in the order a job sends them (A's feed, by version)
      const feed = (await allChanges(A.srv, 'y', { since: v0 })).changes;

      if (round === 0) {
        // the window: one job of this size, not killed
        const t0 = Date.now();
        const r = await request(runner.srv, 'POST', '/api/v1/spaces/y/sync', {
          body: { peer_url: peer.base, peer_space: 'y', peer_token: peer.adminToken, direction, wait: true }, timeoutMs: 120000,
        });
        T = Date.now() - t0;
        assert.equal(r.status, 200, `the first ${direction}: ${r.text}`);
        assert.equal(count(r.json), feed.length, `the first ${direction} moved every change: ${r.text}`);
        await assertSame(A.srv, B.srv, 'y', 'after the first sync');
        t.diagnostic(`a ${direction} of ${feed.length} changes takes ${T} ms`);
        continue;
      }

      const victim = (round + firstVictim) % 2 ? runner : peer;
      const vName = victim === runner ? `the ${direction}ing side (${runner.name})` : `its peer (${peer.name})`;
      const delay = killDelay(rng, T);
      const sse = await openSSE(runner.port, '/api/v1/events?topics=sync&spaces=y', { token: runner.adminToken });
      const t0 = Date.now();
      const p = settle(request(runner.srv, 'POST', '/api/v1/spaces/y/sync', {
        body: { peer_url: peer.base, peer_space: 'y', peer_token: peer.adminToken, direction }, timeoutMs: 30000,
      }));
      await sleepUntil(t0 + delay);
      await victim.kill();
      const { r } = await p;
      const what = `sync ${direction} round ${round} (kill of ${vName} after ${delay} ms of ~${T})`;
      assert.ok(!r || r.status === 202, `${what}: answered ${r && r.status}: ${r && r.text}`);
      const jobId = r ? r.json.id : null;
      tm.push(Date.now());
      await victim.start();
      tm.push(Date.now());
      let job = null;
      if (victim === peer) {
        // the job goes on: it may reach the restarted peer, or fail after its retries
        assert.ok(jobId, `${what}: the job was accepted before its peer died`);
        const deadline = Date.now() + 60000;
        for (;;) {
          job = await apiOk(runner.srv, 'GET', `/api/v1/spaces/y/sync/jobs/${jobId}`, {}, 200);
          if (job.status !== 'running') break;
          assert.ok(Date.now() < deadline, `${what}: the job is still running a minute after the kill: ${JSON.stringify(job)}`);
          await sleep(25);
        }
      } else if (jobId) {
        // a job answered 202 is listed after the restart, and not running
        job = await apiOk(runner.srv, 'GET', `/api/v1/spaces/y/sync/jobs/${jobId}`, {}, 200);
        assert.ok(job.status === 'completed' || (job.status === 'failed' && /interrupted/i.test(String(job.error))),
          `${what}: the killed job after the restart: ${JSON.stringify(job)}`);
      }
      // progress the runner reported (SSE) before it died, or until its job ended
      const progress = Math.max(0, ...sse.ofType('sync').filter((e) => e.json && (!jobId || e.json.job === jobId)).map((e) => count(e.json)));
      sse.close();

      // B holds a prefix of the round's feed, at least as long as the progress reported; nothing else moved
      const after = await revs(B.srv, 'y');
      const inFeed = new Set(feed.map((e) => `${e.collection}/${e.id}`));
      for (const [k, v] of after) {
        if (!inFeed.has(k)) assert.ok(sameState(v, before.get(k)), `${what}: B's ${k} changed though the round did not touch it: ${JSON.stringify(v)}`);
      }
      for (const [k, v] of before) if (!inFeed.has(k)) assert.ok(after.has(k), `${what}: B lost ${k} (${JSON.stringify(v)})`);
      const flags = feed.map((e) => {
        const k = `${e.collection}/${e.id}`;
        const b = after.get(k);
        if (sameState(b, e)) return 1;
        if (sameState(b, before.get(k))) return 0;
        return `${k}: ${JSON.stringify(b)}`;
      });
      const odd = flags.filter((f) => typeof f === 'string');
      assert.deepEqual(odd.slice(0, 5), [], `${what}: B holds states that are neither before nor after the round (${odd.length})`);
      const k = flags.indexOf(0) < 0 ? flags.length : flags.indexOf(0);
      const holes = flags.slice(k).filter((f) => f === 1).length;
      assert.equal(holes, 0, `${what}: B holds the first ${k} changes of the feed, then ${holes} of the later ones: pages applied out of order or half (feed positions held, as runs: ${runs(flags)}; job ${JSON.stringify(job)})`);
      assert.ok(k >= progress, `${what}: the job reported ${progress} changes moved, B holds ${k} after the restart`);
      if (job) assert.ok(count(job) <= k, `${what}: the job counts ${count(job)} changes moved, B holds ${k}: ${JSON.stringify(job)}`);

      tm.push(Date.now());
      await checkInvariants(A, `${what}, A`);
      await checkInvariants(B, `${what}, B`);
      const refs = await checkBlobRefs(B.srv, 'y', `${what}, B`, ['files']);

      tm.push(Date.now());
      // the resumed sync completes and the peers converge
      const r2 = await request(runner.srv, 'POST', '/api/v1/spaces/y/sync', {
        body: { peer_url: peer.base, peer_space: 'y', peer_token: peer.adminToken, direction, wait: true }, timeoutMs: 120000,
      });
      assert.equal(r2.status, 200, `${what}: the resumed ${direction}: ${r2.text}`);
      assert.equal(r2.json.status, 'completed', `${what}: the resumed ${direction}: ${r2.text}`);
      assert.ok(count(r2.json) <= feed.length - k, `${what}: the resumed ${direction} moved ${count(r2.json)}, at most the ${feed.length - k} B lacked: ${r2.text}`);
      const conv = await assertSame(A.srv, B.srv, 'y', `${what}, after the resumed sync`);
      tm.push(Date.now());
      t.diagnostic(`${what}: job ${job ? `${job.status} (${count(job)})` : 'not accepted'}, progress seen ${progress}, B held ${k}/${feed.length} (${refs} blobs named), resumed job moved ${count(r2.json)}, digest ${conv.digest.slice(0, 12)}… on both; ms: ${tm.slice(1).map((x, i) => x - tm[i]).join('/')}`);
    }
    ctx.round = 'end';
    // bodies and conflict records too, once
    await assertConverged([A.srv, B.srv], 'y', 'at the end');
    await A.stopClean();
    await B.stopClean();
    await checkIntegrity(A.dataDir, 'A after the clean stop');
    await checkIntegrity(B.dataDir, 'B after the clean stop');
  });
}
syncPhase('pull');
syncPhase('push');
