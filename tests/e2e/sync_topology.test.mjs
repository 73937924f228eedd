// sync_topology.test.mjs - SPEC §9: three instances in a ring (each pulls
// from the previous one) and in a star (two spokes sync both ways with a
// hub) converge to the same digest; deletes travel as tombstones; once
// converged, another round moves nothing and costs one request per job.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, putSpace } from './helpers.mjs';
import { put, del, getEntity, syncOk, syncStatus, assertConverged, states } from './sync_helpers.mjs';

const SPACE = 'topo';
const C = 'items';

async function three(t) {
  const [A, B, Cs] = await Promise.all([withServer(t), withServer(t), withServer(t)]);
  for (const s of [A, B, Cs]) await putSpace(s, SPACE);
  return [A, B, Cs];
}

async function writeMany(srv, prefix, n) {
  for (let i = 0; i < n; i++) await put(srv, SPACE, C, `${prefix}${i}`, { by: prefix, i });
}

/** One ring round: B pulls from A, C pulls from B, A pulls from C. */
async function ringRound(A, B, Cs) {
  return [
    await syncOk(B, SPACE, A, { direction: 'pull' }),
    await syncOk(Cs, SPACE, B, { direction: 'pull' }),
    await syncOk(A, SPACE, Cs, { direction: 'pull' }),
  ];
}

/** One star round: B and C sync both ways with the hub A. */
async function starRound(A, B, Cs) {
  return [
    await syncOk(B, SPACE, A, { direction: 'both' }),
    await syncOk(Cs, SPACE, A, { direction: 'both' }),
  ];
}

function assertIdle(jobs, what) {
  for (const j of jobs) {
    assert.equal(j.pulled, 0, `${what}: pulled ${JSON.stringify(j)}`);
    assert.equal(j.pushed, 0, `${what}: pushed ${JSON.stringify(j)}`);
    assert.equal(j.conflicts, 0, `${what}: conflicts ${JSON.stringify(j)}`);
    assert.equal(j.requests, 1, `${what}: a sync with nothing to do costs one request ${JSON.stringify(j)}`);
  }
}

async function assertTombstone(servers, id, what) {
  for (const [i, s] of servers.entries()) {
    const e = await getEntity(s, SPACE, C, id);
    assert.ok(e, `${id} known on instance ${i} ${what}`);
    assert.equal(e.deleted, true, `${id} is a tombstone on instance ${i} ${what}: ${JSON.stringify(e)}`);
  }
}

test('ring A->B->C->A (each pulls from the previous) converges; deletes propagate; an idle round costs 1 request per job', async (t) => {
  const [A, B, Cs] = await three(t);
  await writeMany(A, 'a', 10);
  await writeMany(B, 'b', 10);
  await writeMany(Cs, 'c', 10);

  const r1 = await ringRound(A, B, Cs);
  assert.equal(r1[0].pulled, 10, `B pulled A's ten: ${JSON.stringify(r1[0])}`);
  assert.equal(r1[1].pulled, 20, `C pulled A's and B's: ${JSON.stringify(r1[1])}`);
  assert.equal(r1[2].pulled, 20, `A pulled B's and C's (its own are not sent back): ${JSON.stringify(r1[2])}`);
  const r2 = await ringRound(A, B, Cs);
  assert.equal(r2[0].pulled, 10, `B pulled C's ten (via A; its own come back ignored, not counted): ${JSON.stringify(r2[0])}`);
  const { status } = await assertConverged([A, B, Cs], SPACE, 'after two ring rounds');
  assert.equal(status[0].entity_count, 30);

  // deletes (of entities born on other instances too) and an edit
  await del(A, SPACE, C, 'a0');
  await del(B, SPACE, C, 'c1');
  await del(Cs, SPACE, C, 'b2');
  await put(Cs, SPACE, C, 'a3', { edited: 'on C' });
  await ringRound(A, B, Cs);
  await ringRound(A, B, Cs);
  const after = await assertConverged([A, B, Cs], SPACE, 'after deletes');
  assert.equal(after.status[0].entity_count, 27);
  assert.equal(after.status[0].tombstone_count, 3);
  for (const id of ['a0', 'c1', 'b2']) await assertTombstone([A, B, Cs], id, 'after the ring');
  assert.deepEqual(after.states.get(`${C}/a3`).body, { edited: 'on C' });

  // converged: a further round moves nothing
  assertIdle(await ringRound(A, B, Cs), 'idle ring round');
  assertIdle(await ringRound(A, B, Cs), 'second idle ring round');
  const still = await assertConverged([A, B, Cs], SPACE, 'after idle rounds');
  assert.equal(still.status[0].digest, after.status[0].digest, 'idle rounds changed nothing');
  assert.equal((await syncStatus(A, SPACE)).server_version, after.status[0].server_version, 'idle rounds wrote nothing on A');
});

test('star: B and C sync both ways with hub A -> converged; deletes propagate; idle rounds cost 1 request per job', async (t) => {
  const [A, B, Cs] = await three(t);
  await writeMany(A, 'a', 5);
  await writeMany(B, 'b', 5);
  await writeMany(Cs, 'c', 5);

  const s1 = await starRound(A, B, Cs);
  assert.equal(s1[0].pulled, 5, `B pulled A's: ${JSON.stringify(s1[0])}`);
  assert.equal(s1[0].pushed, 5, `B pushed its own: ${JSON.stringify(s1[0])}`);
  assert.equal(s1[1].pulled, 10, `C pulled A's and B's: ${JSON.stringify(s1[1])}`);
  assert.equal(s1[1].pushed, 5, `C pushed its own (not what it pulled): ${JSON.stringify(s1[1])}`);
  const s2 = await starRound(A, B, Cs);
  assert.equal(s2[0].pulled, 5, `B pulled C's via the hub: ${JSON.stringify(s2[0])}`);
  assert.equal(s2[0].pushed, 0, `B has nothing of its own to push: ${JSON.stringify(s2[0])}`);
  const conv = await assertConverged([A, B, Cs], SPACE, 'after two star rounds');
  assert.equal(conv.status[0].entity_count, 15);

  // deletes on a spoke and on the hub, an edit on the other spoke
  await del(B, SPACE, C, 'c0');
  await del(A, SPACE, C, 'b1');
  await del(Cs, SPACE, C, 'a2');
  await put(Cs, SPACE, C, 'b3', { edited: 'on C' });
  await starRound(A, B, Cs);
  await starRound(A, B, Cs);
  const after = await assertConverged([A, B, Cs], SPACE, 'after deletes in the star');
  assert.equal(after.status[0].entity_count, 12);
  assert.equal(after.status[0].tombstone_count, 3);
  for (const id of ['c0', 'b1', 'a2']) await assertTombstone([A, B, Cs], id, 'after the star');
  assert.deepEqual(after.states.get(`${C}/b3`).body, { edited: 'on C' });

  assertIdle(await starRound(A, B, Cs), 'idle star round');
  assertIdle(await starRound(A, B, Cs), 'second idle star round');
  // the other way round too: the hub syncing with its spokes has nothing to do
  const hubJobs = [
    await syncOk(A, SPACE, B, { direction: 'both' }),
    await syncOk(A, SPACE, Cs, { direction: 'both' }),
  ];
  for (const j of hubJobs) {
    assert.equal(j.pulled, 0, `hub pulled nothing new: ${JSON.stringify(j)}`);
    assert.equal(j.pushed, 0, `hub pushed nothing new: ${JSON.stringify(j)}`);
  }
  await assertConverged([A, B, Cs], SPACE, 'after the hub synced');
  const sb = await states(B, SPACE);
  assert.equal(sb.size, 15, 'every entity (live or tombstone) is on B');
});
