// scripts.test.mjs - the entry point a new user types first: scripts/run.
//
// With no argument it prints its usage (not its own source) and exits 2;
// `configure` gives an existing build tree the options asked for, so
// -Dwerror=true is not lost on a tree that `scripts/run serve` set up first.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO } from './helpers.mjs';

const RUN = path.join(REPO, 'scripts', 'run');

test('scripts/run with no argument prints its usage and exits 2', () => {
  const r = spawnSync('bash', [RUN], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /^usage: scripts\/run COMMAND/m);
  for (const cmd of ['serve', 'test', 'build', 'configure']) assert.match(r.stderr, new RegExp(`^  ${cmd}\\b`, 'm'));
  assert.doesNotMatch(r.stderr + r.stdout, /set -uo pipefail|\bcase "\$cmd"|^#!/m, 'no source code as usage');
  const h = spawnSync('bash', [RUN, '--help'], { encoding: 'utf8' });
  assert.equal(h.status, 0);
  assert.match(h.stdout, /^usage: scripts\/run COMMAND/m);
});

test('scripts/run configure keeps -Dwerror=true on a tree first set up without it', (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-meson-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const tree = path.join(dir, 'b');
  const setup = spawnSync('meson', ['setup', tree, REPO, '-Dbuildtype=release'], { encoding: 'utf8' });
  assert.equal(setup.status, 0, setup.stdout + setup.stderr);
  const opt = (name) => {
    const q = spawnSync('meson', ['introspect', '--buildoptions', tree], { encoding: 'utf8' });
    assert.equal(q.status, 0, q.stderr);
    return JSON.parse(q.stdout).find((o) => o.name === name).value;
  };
  assert.equal(opt('werror'), false);
  const r = spawnSync('bash', [RUN, 'configure', tree, '-Dbuildtype=release', '-Dwerror=true'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.equal(opt('werror'), true, 'the existing tree took -Dwerror=true');
  assert.equal(opt('buildtype'), 'release');
});
