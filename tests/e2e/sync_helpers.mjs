// sync_helpers.mjs - shared machinery for the multi-instance sync tests
// (SPEC §9 with §6 and §8): sync jobs between real instances on loopback,
// convergence checks (digests, entity states, conflict sets) and small
// polling helpers.
//
// Only Node built-ins are used.

import assert from 'node:assert/strict';
import { api, apiOk, allChanges, sleep } from './helpers.mjs';

export const sp = (space) => `/api/v1/spaces/${space}`;

/** GET /sync/status of a space. */
export function syncStatus(srv, space) {
  return apiOk(srv, 'GET', `${sp(space)}/sync/status`, {}, 200);
}

/** PUT an entity; returns the entity (asserts 200/201). */
export function put(srv, space, collection, id, body, { ifMatch } = {}) {
  const headers = ifMatch ? { 'If-Match': `"${ifMatch}"` } : {};
  return apiOk(srv, 'PUT', `${sp(space)}/collections/${collection}/entities/${encodeURIComponent(id)}`,
    { body, headers }, [200, 201]);
}

/** DELETE an entity; returns the tombstone. */
export function del(srv, space, collection, id) {
  return apiOk(srv, 'DELETE', `${sp(space)}/collections/${collection}/entities/${encodeURIComponent(id)}`, {}, 200);
}

/** GET an entity including tombstones; null when absent. */
export async function getEntity(srv, space, collection, id) {
  const r = await api(srv, 'GET', `${sp(space)}/collections/${collection}/entities/${encodeURIComponent(id)}?include_deleted=1`);
  if (r.status === 404) return null;
  assert.equal(r.status, 200, `GET ${collection}/${id}: ${r.text}`);
  return r.body;
}

/**
 * Starts a sync job on `srv` (the local side) against `peer`.
 * opts: direction ('pull'), wait (true), peerSpace (= space), token (the
 * peer's admin token), peerUrl (peer.base), force (not sent unless given),
 * extra (more members for the body), timeoutMs.
 * Returns the raw api() response.
 */
export function startSync(srv, space, peer, { direction = 'pull', wait = true, peerSpace = space, token, peerUrl, force, extra = {}, timeoutMs = 120000 } = {}) {
  const body = {
    peer_url: peerUrl ?? peer.base,
    peer_space: peerSpace,
    peer_token: token ?? peer.adminToken,
    direction,
    ...extra,
  };
  if (wait) body.wait = true;
  if (force !== undefined) body.force = force;
  return api(srv, 'POST', `${sp(space)}/sync`, { body, timeoutMs });
}

/** A sync with wait:true that must complete; returns the finished job. */
export async function syncOk(srv, space, peer, opts = {}) {
  const r = await startSync(srv, space, peer, { ...opts, wait: true });
  assert.equal(r.status, 200, `sync ${opts.direction ?? 'pull'} ${space} from ${peer.base}: ${r.text}`);
  assert.equal(r.body.status, 'completed', `sync job did not complete: ${r.text}`);
  return r.body;
}

/** GET /sync/jobs/{id}. */
export function getJob(srv, space, id) {
  return apiOk(srv, 'GET', `${sp(space)}/sync/jobs/${id}`, {}, 200);
}

/** Polls a job until pred(job) holds; returns the job. */
export async function waitJob(srv, space, id, pred, { timeoutMs = 30000, intervalMs = 25, what = 'job condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await getJob(srv, space, id);
    if (pred(last)) return last;
    if (Date.now() > deadline) throw new Error(`timeout after ${timeoutMs} ms waiting for ${what}; job: ${JSON.stringify(last)}`);
    await sleep(intervalMs);
  }
}

/** Waits until a job is no longer running. */
export function waitFinished(srv, space, id, opts = {}) {
  return waitJob(srv, space, id, (j) => j.status !== 'running', { what: 'the job to finish', ...opts });
}

/** Every conflict record of a space (all pages). */
export async function conflicts(srv, space) {
  const out = [];
  let cursor = '';
  for (let guard = 0; guard < 1000; guard++) {
    const r = await api(srv, 'GET', `${sp(space)}/conflicts?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
    assert.equal(r.status, 200, r.text);
    out.push(...r.body);
    cursor = r.headers['x-next-cursor'];
    if (!cursor) return out;
  }
  throw new Error('conflict list never ended');
}

/** The conflict records as sorted "collection/id@conflicting_rev" keys. */
export async function conflictKeys(srv, space) {
  return (await conflicts(srv, space)).map((c) => `${c.collection}/${c.entity_id}@${c.conflicting_rev}`).sort();
}

/** Map "collection/id" -> {rev, deleted, body} of every entity, tombstones included. */
export async function states(srv, space) {
  const { changes } = await allChanges(srv, space, { extra: '&bodies=true' });
  const m = new Map();
  for (const e of changes) m.set(`${e.collection}/${e.id}`, { rev: e.rev, deleted: e.deleted, body: e.body });
  return m;
}

/** Asserts that every instance holds the same state of a space:
 *  equal digests, counts, entity states and conflict sets. */
export async function assertConverged(servers, space, what = '') {
  const st = await Promise.all(servers.map((s) => syncStatus(s, space)));
  const ents = await Promise.all(servers.map((s) => states(s, space)));
  const cks = await Promise.all(servers.map((s) => conflictKeys(s, space)));
  const norm = (m) => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k} ${v.rev} ${v.deleted}`);
  for (let i = 1; i < servers.length; i++) {
    assert.deepEqual(norm(ents[i]), norm(ents[0]), `entity states of instance ${i} vs 0 ${what}`);
    assert.deepEqual(cks[i], cks[0], `conflict sets of instance ${i} vs 0 ${what}`);
    for (const k of ['entity_count', 'tombstone_count', 'conflict_count']) {
      assert.equal(st[i][k], st[0][k], `${k} of instance ${i} vs 0 ${what}: ${JSON.stringify(st)}`);
    }
    assert.equal(st[i].digest, st[0].digest, `digest of instance ${i} vs 0 ${what}: ${JSON.stringify(st)}`);
  }
  return { status: st, states: ents[0], conflicts: cks[0] };
}

/** Parses "N-hash". */
export function parseRev(rev) {
  const m = /^(\d+)-([0-9a-f]+)$/.exec(rev);
  assert.ok(m, `rev shape: ${rev}`);
  return { n: Number(m[1]), hash: m[2] };
}

/** The deterministic winner of two divergent revisions (SPEC §9): a live
 *  revision beats a deleted one, then higher N, then higher hash. */
export function expectedWinner(a, b) {
  if (a.deleted !== b.deleted) return a.deleted ? b : a;
  const ra = parseRev(a.rev);
  const rb = parseRev(b.rev);
  if (ra.n !== rb.n) return ra.n > rb.n ? a : b;
  return ra.hash > rb.hash ? a : b;
}
