// sync_conflicts.test.mjs - SPEC §9: two instances edit the same entities
// concurrently (including edits racing deletes), then sync both ways in
// either order; both converge to the same deterministic winners, list the
// same losing revisions as conflicts, and a resolution made on one side
// clears the conflict on the other.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, putSpace, apiOk } from './helpers.mjs';
import {
  sp, put, del, getEntity, syncOk, syncStatus, conflicts, conflictKeys, states,
  assertConverged, expectedWinner,
} from './sync_helpers.mjs';

const SPACE = 'shared';
const C = 'docs';

/** Seeds A, copies it to B, makes concurrent edits on both. Returns what
 *  each side holds for the entities whose histories diverged. */
async function prepare(A, B) {
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  for (let i = 0; i < 8; i++) await put(A, SPACE, C, `e${i}`, { v: 0, i });
  const seeded = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.equal(seeded.pulled, 8, `initial pull: ${JSON.stringify(seeded)}`);
  await assertConverged([A, B], SPACE, 'after the initial copy');

  // e0: both edit (same edit count, different content)
  await put(A, SPACE, C, 'e0', { v: 'a' });
  await put(B, SPACE, C, 'e0', { v: 'b' });
  // e1: A edits twice, B once: A's longer history wins
  await put(A, SPACE, C, 'e1', { v: 'a1' });
  await put(A, SPACE, C, 'e1', { v: 'a2' });
  await put(B, SPACE, C, 'e1', { v: 'b' });
  // e2: A deletes while B edits: the edit must survive (live beats deleted)
  await del(A, SPACE, C, 'e2');
  await put(B, SPACE, C, 'e2', { v: 'b-edit-racing-delete' });
  // e3: A edits while B deletes
  await put(A, SPACE, C, 'e3', { v: 'a-edit-racing-delete' });
  await del(B, SPACE, C, 'e3');
  // e4: only A edits; e5: only B deletes
  await put(A, SPACE, C, 'e4', { v: 'a' });
  await del(B, SPACE, C, 'e5');
  // e6: the same edit on both (same rev: no conflict); e7: deleted on both
  await put(A, SPACE, C, 'e6', { v: 'same' });
  await put(B, SPACE, C, 'e6', { v: 'same' });
  await del(A, SPACE, C, 'e7');
  await del(B, SPACE, C, 'e7');
  // new entities: one each side, and one created on both with different bodies
  await put(A, SPACE, C, 'newA', { from: 'A' });
  await put(B, SPACE, C, 'newB', { from: 'B' });
  await put(A, SPACE, C, 'newX', { from: 'A' });
  await put(B, SPACE, C, 'newX', { from: 'B' });

  const sa = await states(A, SPACE);
  const sb = await states(B, SPACE);
  assert.equal(sa.get(`${C}/e6`).rev, sb.get(`${C}/e6`).rev, 'the same edit on two instances gives the same rev');
  const divergent = {};
  for (const id of ['e0', 'e1', 'e2', 'e3', 'newX']) {
    const a = { ...sa.get(`${C}/${id}`), side: 'A' };
    const b = { ...sb.get(`${C}/${id}`), side: 'B' };
    assert.notEqual(a.rev, b.rev, `${id} diverged`);
    const w = expectedWinner(a, b);
    divergent[id] = { a, b, winner: w, loser: w === a ? b : a };
  }
  // sanity of the rule itself on the crafted cases
  assert.equal(divergent.e1.winner.side, 'A', 'higher N wins');
  assert.equal(divergent.e2.winner.side, 'B', 'live beats deleted (e2)');
  assert.equal(divergent.e3.winner.side, 'A', 'live beats deleted (e3)');
  return { divergent, sa, sb };
}

async function checkOutcome(A, B, divergent, what) {
  const { states: st, conflicts: ck, status } = await assertConverged([A, B], SPACE, what);
  for (const [id, d] of Object.entries(divergent)) {
    const got = st.get(`${C}/${id}`);
    assert.equal(got.rev, d.winner.rev, `${id}: winner rev ${what} (A ${d.a.rev}${d.a.deleted ? ' deleted' : ''}, B ${d.b.rev}${d.b.deleted ? ' deleted' : ''})`);
    assert.equal(got.deleted, d.winner.deleted, `${id}: winner deleted flag ${what}`);
    if (!d.winner.deleted) assert.deepEqual(got.body, d.winner.body, `${id}: winner body ${what}`);
  }
  // the edit that raced a delete is live everywhere
  assert.deepEqual(st.get(`${C}/e2`).body, { v: 'b-edit-racing-delete' });
  assert.deepEqual(st.get(`${C}/e3`).body, { v: 'a-edit-racing-delete' });
  assert.equal(st.get(`${C}/e5`).deleted, true, 'B-only delete reached A');
  assert.deepEqual(st.get(`${C}/e4`).body, { v: 'a' }, 'A-only edit reached B');
  assert.equal(st.get(`${C}/e7`).deleted, true);
  assert.ok(st.get(`${C}/newA`) && st.get(`${C}/newB`), 'one-sided creations on both');
  // exactly the losers are conflicts, on both sides
  const want = Object.entries(divergent).map(([id, d]) => `${C}/${id}@${d.loser.rev}`).sort();
  assert.deepEqual(ck, want, `conflict records ${what}`);
  assert.equal(status[0].conflict_count, want.length, `conflict_count ${what}`);
  // the losing bodies are kept (nothing a client wrote is lost)
  for (const srv of [A, B]) {
    for (const c of await conflicts(srv, SPACE)) {
      const d = divergent[c.entity_id];
      assert.equal(c.deleted, d.loser.deleted, `conflict ${c.entity_id} deleted flag`);
      if (!d.loser.deleted) assert.deepEqual(c.conflicting_body, d.loser.body, `conflict ${c.entity_id} body`);
    }
  }
  return status[0].digest;
}

/** Resolves every conflict on A with a mix of strategies; B learns by sync. */
async function resolveOnAAndSync(A, B, divergent) {
  const list = await conflicts(A, SPACE);
  assert.equal(list.length, Object.keys(divergent).length);
  const chosen = { e0: 'local_wins', e1: 'remote_wins', e2: 'merge', e3: 'remote_wins', newX: 'keep_both' };
  for (const c of list) {
    const strategy = chosen[c.entity_id];
    const body = strategy === 'merge' ? { strategy, body: { v: 'merged', id: c.entity_id } } : { strategy };
    await apiOk(A, 'POST', `${sp(SPACE)}/conflicts/${c.id}/resolve`, { body }, 200);
  }
  assert.equal((await syncStatus(A, SPACE)).conflict_count, 0, 'A resolved everything');

  const j1 = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.ok(j1.pulled >= list.length, `the resolutions travel as ordinary changes: ${JSON.stringify(j1)}`);
  assert.equal((await syncStatus(B, SPACE)).conflict_count, 0, `B cleared the conflicts resolved on A: ${JSON.stringify(await conflicts(B, SPACE))}`);
  await syncOk(A, SPACE, B, { direction: 'pull' });
  const { states: st, status } = await assertConverged([A, B], SPACE, 'after resolving on A');
  assert.equal(status[0].conflict_count, 0);
  assert.equal(status[1].conflict_count, 0);
  // what the strategies produced
  assert.deepEqual(st.get(`${C}/e0`).body, divergent.e0.winner.body, 'e0 local_wins keeps the current body');
  assert.deepEqual(st.get(`${C}/e1`).body, divergent.e1.loser.body, 'e1 remote_wins takes the losing body');
  assert.deepEqual(st.get(`${C}/e2`).body, { v: 'merged', id: 'e2' }, 'e2 merge');
  assert.equal(st.get(`${C}/e3`).deleted, true, 'e3 remote_wins takes the losing delete');
  assert.deepEqual(st.get(`${C}/newX`).body, divergent.newX.winner.body, 'keep_both keeps the current');
  assert.deepEqual(st.get(`${C}/newX~conflict-1`)?.body, divergent.newX.loser.body, 'keep_both copies the loser');
  // and nothing is left to move
  for (const [x, y] of [[A, B], [B, A]]) {
    const j = await syncOk(x, SPACE, y, { direction: 'both' });
    assert.equal(j.pulled, 0, `nothing left to pull: ${JSON.stringify(j)}`);
    assert.equal(j.pushed, 0, `nothing left to push: ${JSON.stringify(j)}`);
  }
}

const digests = {};

// Regression: when a pull makes the peer's revision win, the local losing
// revision is a conflict record that must travel back to that peer (the
// entity may not be marked as coming from it, or exclude_origin drops it).
test('minimal: a conflict recorded on A because B\'s revision won is listed on B after B pulls from A', async (t) => {
  const A = await withServer(t);
  const B = await withServer(t);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  await put(A, SPACE, C, 'x', { v: 0 });
  await syncOk(B, SPACE, A, { direction: 'pull' });
  const a = await put(A, SPACE, C, 'x', { v: 'a' });            // 2-…
  await put(B, SPACE, C, 'x', { v: 'b1' });
  const b = await put(B, SPACE, C, 'x', { v: 'b2' });           // 3-…: B wins
  const ja = await syncOk(A, SPACE, B, { direction: 'pull' });
  assert.equal(ja.conflicts, 1, JSON.stringify(ja));
  assert.deepEqual(await conflictKeys(A, SPACE), [`${C}/x@${a.rev}`], 'A keeps its losing revision');
  assert.equal((await getEntity(A, SPACE, C, 'x')).rev, b.rev);
  await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.deepEqual(await conflictKeys(B, SPACE), [`${C}/x@${a.rev}`],
    `B lists the losing revision too (B: GET /conflicts after B pulled from A; A has ${JSON.stringify(await conflictKeys(A, SPACE))})`);
});

test('concurrent edits: A pulls from B first, then B from A -> same winners and conflicts; resolution on A clears B', async (t) => {
  const A = await withServer(t);
  const B = await withServer(t);
  const { divergent } = await prepare(A, B);
  const ja = await syncOk(A, SPACE, B, { direction: 'pull' });
  assert.ok(ja.conflicts >= 4, `A saw the divergences: ${JSON.stringify(ja)}`);
  await syncOk(B, SPACE, A, { direction: 'pull' });
  digests.first = await checkOutcome(A, B, divergent, '(A pulled first)');
  await resolveOnAAndSync(A, B, divergent);
});

test('concurrent edits: B pulls from A first, then A from B -> the same outcome as the other order', async (t) => {
  const A = await withServer(t);
  const B = await withServer(t);
  const { divergent } = await prepare(A, B);
  const jb = await syncOk(B, SPACE, A, { direction: 'pull' });
  assert.ok(jb.conflicts >= 4, `B saw the divergences: ${JSON.stringify(jb)}`);
  await syncOk(A, SPACE, B, { direction: 'pull' });
  const digest = await checkOutcome(A, B, divergent, '(B pulled first)');
  // revs are content hashes, so a fresh pair making the same edits ends
  // in exactly the same state whatever the order of syncs
  if (digests.first) assert.equal(digest, digests.first, 'same digest as the pair that synced in the other order');
  await resolveOnAAndSync(A, B, divergent);
});

test('concurrent edits, one "both" job each way -> converged with conflicts on both sides', async (t) => {
  const A = await withServer(t);
  const B = await withServer(t);
  const { divergent } = await prepare(A, B);
  await syncOk(A, SPACE, B, { direction: 'both' });
  await syncOk(B, SPACE, A, { direction: 'both' });
  const digest = await checkOutcome(A, B, divergent, '(both directions)');
  if (digests.first) assert.equal(digest, digests.first, 'same digest as the pull-only pairs');
  // the racing edit really is the live state when read directly
  const e2 = await getEntity(A, SPACE, C, 'e2');
  assert.equal(e2.deleted, false);
  assert.deepEqual(e2.body, { v: 'b-edit-racing-delete' });
});

// Issue 12: a "both" job whose pull finds an entity diverged, keeps its own
// revision and pushes it back (where the peer sees the same divergence)
// reported conflicts: 2 for one entity. It counts conflicting entities.
test('conflicts counts entities: one diverged entity is 1 in a "both" job, three are 3, whichever side wins', async (t) => {
  const A = await withServer(t);
  const B = await withServer(t);
  await putSpace(A, SPACE);
  await putSpace(B, SPACE);
  for (const id of ['x', 'y', 'z', 'w']) await put(A, SPACE, C, id, { v: 0 });
  await syncOk(B, SPACE, A, { direction: 'pull' });
  // x: B's revision wins (B edits twice); A's is pulled, loses, and B's goes back
  await put(A, SPACE, C, 'x', { v: 'a' });
  await put(B, SPACE, C, 'x', { v: 'b1' });
  await put(B, SPACE, C, 'x', { v: 'b2' });
  const one = await syncOk(B, SPACE, A, { direction: 'both' });
  assert.equal(one.conflicts, 1, `one conflicting entity: ${JSON.stringify(one)}`);
  assert.equal((await syncStatus(B, SPACE)).conflict_count, 1);
  await assertConverged([A, B], SPACE, 'after x');

  // y: B wins, z: A wins, w: B wins; one job both ways
  await put(A, SPACE, C, 'y', { v: 'a' });
  await put(B, SPACE, C, 'y', { v: 'b1' });
  await put(B, SPACE, C, 'y', { v: 'b2' });
  await put(A, SPACE, C, 'z', { v: 'a1' });
  await put(A, SPACE, C, 'z', { v: 'a2' });
  await put(B, SPACE, C, 'z', { v: 'b' });
  await put(A, SPACE, C, 'w', { v: 'a' });
  await put(B, SPACE, C, 'w', { v: 'b1' });
  await put(B, SPACE, C, 'w', { v: 'b2' });
  const three = await syncOk(A, SPACE, B, { direction: 'both' });
  assert.equal(three.conflicts, 3, `three conflicting entities: ${JSON.stringify(three)}`);
  await assertConverged([A, B], SPACE, 'after y, z, w');
  // the list and the SSE-fed job agree with the answer
  const listed = (await apiOk(A, 'GET', `${sp(SPACE)}/sync/jobs?limit=1`, {}, 200)).jobs[0];
  assert.equal(listed.id, three.id);
  assert.equal(listed.conflicts, 3);

  // a push alone: the peer reports the entity once
  await put(A, SPACE, C, 'x', { v: 'a-again' });
  await put(B, SPACE, C, 'x', { v: 'b-again-1' });
  const pushed = await syncOk(A, SPACE, B, { direction: 'push' });
  assert.equal(pushed.conflicts, 1, `push: one conflicting entity: ${JSON.stringify(pushed)}`);
});
