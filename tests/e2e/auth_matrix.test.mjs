// auth_matrix.test.mjs - SPEC §4 role table: every role x one route of each
// access class x own space / another existing space / a space that does not
// exist, plus no token at all. The OPERATE route of the table (POST /sync)
// is called with an empty body: 400 means auth let it through.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, api, apiOk, putSpace, createKey, checkError,
} from './helpers.mjs';

// One route per access class. {s} is the space; `ok` is what an allowed call answers.
const ROUTES = {
  READ: { method: 'GET', path: '/api/v1/spaces/{s}/collections', ok: [200] },
  WRITE: { method: 'PUT', path: '/api/v1/spaces/{s}/collections/notes/entities/{id}', body: { n: 1 }, ok: [200, 201] },
  OPERATE: { method: 'POST', path: '/api/v1/spaces/{s}/sync', body: {}, ok: [400] },   // allowed, then the empty body is refused
  ADMIN: { method: 'PUT', path: '/api/v1/spaces/{s}', ok: [200] },
};
// Admin routes that are not tied to a space.
const GLOBAL_ADMIN = [
  { method: 'GET', path: '/api/v1/keys' },
  { method: 'GET', path: '/api/v1/audit' },
  { method: 'POST', path: '/api/v1/keys', body: { role: 'reader', spaces: ['*'], name: 'from-matrix' } },
];

// THE TABLE. Keys of the non-admin roles are limited to the space `own`;
// the admin key covers all spaces. `ghost` is a space that does not exist:
// a key that may not use it must get the same 403 as for `other`.
//   role        class      own       other     ghost
const MATRIX = [
  ['reader',   'READ',    'allow', 'deny', 'deny'],
  ['reader',   'WRITE',   'deny',  'deny', 'deny'],
  ['reader',   'OPERATE', 'deny',  'deny', 'deny'],
  ['reader',   'ADMIN',   'deny',  'deny', 'deny'],
  ['writer',   'READ',    'allow', 'deny', 'deny'],
  ['writer',   'WRITE',   'allow', 'deny', 'deny'],
  ['writer',   'OPERATE', 'deny',  'deny', 'deny'],
  ['writer',   'ADMIN',   'deny',  'deny', 'deny'],
  ['operator', 'READ',    'allow', 'deny', 'deny'],
  ['operator', 'WRITE',   'allow', 'deny', 'deny'],
  ['operator', 'OPERATE', 'allow', 'deny', 'deny'],
  ['operator', 'ADMIN',   'deny',  'deny', 'deny'],
  ['admin',    'READ',    'allow', 'allow', null],   // admin on a missing space: not an auth question
  ['admin',    'WRITE',   'allow', 'allow', null],
  ['admin',    'OPERATE', 'allow', 'allow', null],
  ['admin',    'ADMIN',   'allow', 'allow', null],
];
const SPACES = { own: 'm-own', other: 'm-other', ghost: 'm-ghost' };

let srv;
const tokens = {};
before(async () => {
  srv = await startServer();
  await putSpace(srv, SPACES.own);
  await putSpace(srv, SPACES.other);
  for (const role of ['reader', 'writer', 'operator']) {
    tokens[role] = (await createKey(srv, role, [SPACES.own], `matrix-${role}`)).token;
  }
  tokens.admin = srv.adminToken;
});
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `server exit after SIGTERM\n${srv.stderrText()}`);
});

function call(route, space, token, n) {
  const p = route.path.replace('{s}', space).replace('{id}', `e-${n}`);
  return api(srv, route.method, p, { token, body: route.body });
}

test('the table covers every role x class once', () => {
  const seen = new Set(MATRIX.map(([r, c]) => `${r}/${c}`));
  assert.equal(seen.size, 16);
  for (const r of ['reader', 'writer', 'operator', 'admin']) {
    for (const c of Object.keys(ROUTES)) assert.ok(seen.has(`${r}/${c}`), `${r}/${c} missing`);
  }
});

test('role matrix: role x class x own/other/missing space', async () => {
  const failures = [];
  let n = 0;
  for (const [role, cls, ...expect] of MATRIX) {
    const route = ROUTES[cls];
    for (const [i, where] of ['own', 'other', 'ghost'].entries()) {
      const want = expect[i];
      if (want === null) continue;
      const space = SPACES[where];
      const r = await call(route, space, tokens[role], n++);
      const ctx = `${role} ${cls} ${route.method} ${route.path} in ${where} space (${space})`;
      if (want === 'allow') {
        if (!route.ok.includes(r.status)) failures.push(`${ctx}: wanted ${route.ok.join('|')}, got ${r.status} ${r.text}`);
      } else if (r.status !== 403 || r.body?.error !== 'forbidden') {
        failures.push(`${ctx}: wanted 403 forbidden, got ${r.status} ${r.text}`);
      }
    }
  }
  assert.deepEqual(failures, []);
  // nothing was created by the denied ADMIN PUTs on the missing space
  const g = await api(srv, 'GET', `/api/v1/spaces/${SPACES.ghost}`);
  checkError(assert, g, 404, 'space_not_found', 'ghost space after the matrix');
});

test('denied answers are complete error objects (403 forbidden)', async () => {
  const r = await call(ROUTES.WRITE, SPACES.own, tokens.reader, 'x');
  checkError(assert, r, 403, 'forbidden', 'reader PUT');
  const o = await call(ROUTES.READ, SPACES.other, tokens.operator, 'x');
  checkError(assert, o, 403, 'forbidden', 'operator READ other space');
});

test('global admin routes: only admin', async () => {
  const failures = [];
  for (const role of ['reader', 'writer', 'operator', 'admin']) {
    for (const rt of GLOBAL_ADMIN) {
      const r = await api(srv, rt.method, rt.path, { token: tokens[role], body: rt.body });
      const ok = role === 'admin' ? r.status >= 200 && r.status < 300 : r.status === 403 && r.body?.error === 'forbidden';
      if (!ok) failures.push(`${role} ${rt.method} ${rt.path}: got ${r.status} ${r.text}`);
    }
  }
  assert.deepEqual(failures, []);
});

test('no token: 401 unauthorized on every route of the table, in every space', async () => {
  const failures = [];
  const all = [...Object.values(ROUTES), ...GLOBAL_ADMIN];
  for (const route of all) {
    for (const space of Object.values(SPACES)) {
      const r = await call(route, space, null, 'anon');
      if (r.status !== 401 || r.body?.error !== 'unauthorized') failures.push(`${route.method} ${route.path} (${space}): ${r.status} ${r.text}`);
    }
  }
  assert.deepEqual(failures, []);
  // /api/v1/status too
  checkError(assert, await api(srv, 'GET', '/api/v1/status', { token: null }), 401, 'unauthorized', 'status');
});

test('every role may read /api/v1/status and /api/v1/spaces', async () => {
  for (const role of Object.keys(tokens)) {
    const s = await api(srv, 'GET', '/api/v1/status', { token: tokens[role] });
    assert.equal(s.status, 200, `${role}: ${s.text}`);
    // a key limited to one space counts that space only (admin: all)
    assert.equal(s.body.spaces, role === 'admin' ? 2 : 1, `${role}: /status spaces ${s.text}`);
    const l = await apiOk(srv, 'GET', '/api/v1/spaces', { token: tokens[role] });
    const names = l.spaces.map((x) => x.name).sort();
    assert.deepEqual(names, role === 'admin' ? [SPACES.other, SPACES.own].sort() : [SPACES.own], `${role} sees`);
  }
});

test('/api/v1/status shows a scoped key nothing about spaces outside its list', async () => {
  const later = `${SPACES.own}-later`;
  const scoped = (await createKey(srv, 'reader', [SPACES.own, later], 'status-scoped')).token;
  const star = (await createKey(srv, 'reader', ['*'], 'status-star')).token;
  const status = (token) => apiOk(srv, 'GET', '/api/v1/status', { token }, 200);
  const before1 = await status(scoped);
  // exactly the SPEC's members: nothing else that could count other spaces
  assert.deepEqual(Object.keys(before1).sort(), ['instance_id', 'name', 'spaces', 'uptime_s', 'version']);
  assert.equal(before1.spaces, 1, 'only its own existing space');
  const allBefore = (await status(star)).spaces;
  await putSpace(srv, `${SPACES.other}-more`);            // another space it may not see
  assert.equal((await status(scoped)).spaces, 1, 'a new foreign space does not show');
  assert.equal((await status(star)).spaces, allBefore + 1, 'a ["*"] key counts every space');
  await putSpace(srv, later);                             // a listed space that now exists
  assert.equal((await status(scoped)).spaces, 2, 'a listed space counts once it exists');
  await apiOk(srv, 'DELETE', `/api/v1/spaces/${later}?confirm=${later}`, {}, 200);
  await apiOk(srv, 'DELETE', `/api/v1/spaces/${SPACES.other}-more?confirm=${SPACES.other}-more`, {}, 200);
});

test('more routes per class (spot checks on the own space)', async () => {
  const S = `/api/v1/spaces/${SPACES.own}`;
  await apiOk(srv, 'PUT', `${S}/collections/notes/entities/spot`, { body: { a: 1 } });
  const cases = [
    // [method, path, body, min role allowed, allowed status]
    ['GET', `${S}`, undefined, 'reader', [200]],
    ['GET', `${S}/collections/notes/entities`, undefined, 'reader', [200]],
    ['GET', `${S}/collections/notes/entities/spot`, undefined, 'reader', [200]],
    ['GET', `${S}/changes?since=0`, undefined, 'reader', [200]],
    ['GET', `${S}/conflicts`, undefined, 'reader', [200]],
    ['GET', `${S}/sync/status`, undefined, 'reader', [200]],
    ['POST', `${S}/changes`, { changes: [] }, 'writer', [200]],
    ['POST', `${S}/conflicts/01ARZ3NDEKTSV4RRFFQ69G5FAV/resolve`, { strategy: 'local_wins' }, 'writer', [404]],
    ['POST', `${S}/snapshots`, {}, 'operator', [201, 429]],
    ['DELETE', `${S}/snapshots/01ARZ3NDEKTSV4RRFFQ69G5FAV`, undefined, 'operator', [404]],
    ['POST', `${S}/snapshots/01ARZ3NDEKTSV4RRFFQ69G5FAV/restore`, { confirm: 'x' }, 'operator', [400]],
    ['GET', `${S}/snapshots`, undefined, 'reader', [200]],
    ['PUT', `${S}/peers/p1`, {}, 'operator', [400]],
    ['DELETE', `${S}/peers/p1`, undefined, 'operator', [404]],
    ['GET', `${S}/peers`, undefined, 'reader', [200]],
    ['GET', `${S}/sync/jobs`, undefined, 'reader', [200]],
    ['DELETE', `/api/v1/spaces/m-nonexistent?confirm=m-nonexistent`, undefined, 'admin', [404]],
    ['GET', '/metrics', undefined, 'admin', [501, 200]],
    ['DELETE', `${S}/collections/notes/entities/spot`, undefined, 'writer', [200]],
  ];
  const rank = { reader: 0, writer: 1, operator: 2, admin: 3 };
  const failures = [];
  for (const [method, p, body, min, okStatus] of cases) {
    for (const role of ['reader', 'writer', 'operator', 'admin']) {
      // the DELETE of `spot` is allowed once; test the denials first, then the admin
      const r = await api(srv, method, p, { token: tokens[role], body });
      const allowed = rank[role] >= rank[min];
      if (allowed && method === 'DELETE' && p.endsWith('/spot')) {
        if (r.status !== 200) failures.push(`${role} ${method} ${p}: wanted 200, got ${r.status} ${r.text}`);
        break;
      }
      const ok = allowed ? okStatus.includes(r.status) : r.status === 403 && r.body?.error === 'forbidden';
      if (!ok) failures.push(`${role} ${method} ${p}: wanted ${allowed ? okStatus.join('|') : '403 forbidden'}, got ${r.status} ${r.text}`);
    }
  }
  assert.deepEqual(failures, []);
});
