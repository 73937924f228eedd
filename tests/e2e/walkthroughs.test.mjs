// walkthroughs.test.mjs - the two walk-throughs in docs/ run as written.
//
// Every ```sh block of docs/walkthrough-backup.md and docs/walkthrough-sync.md
// is joined, in order, into one bash script run with `set -euo pipefail` in a
// fresh folder whose build/snapsync is the binary under test. Only the ports
// change (7420 and 7421 become free ones), so a page that drifts from what
// the server does fails here. The servers the script starts are in the
// script's own process group, killed whatever happens.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BIN, REPO, childEnv, freePort } from './helpers.mjs';

/** The ```sh blocks of a markdown file, in order. */
export function shBlocks(markdown) {
  const blocks = [];
  const re = /^```sh\n([\s\S]*?)^```$/gm;
  let m;
  while ((m = re.exec(markdown)) !== null) blocks.push(m[1]);
  return blocks;
}

async function runWalkthrough(t, doc) {
  const jq = spawnSync('jq', ['--version'], { encoding: 'utf8' });
  assert.equal(jq.error, undefined, 'jq must be installed (scripts/setup --test installs it)');
  const md = readFileSync(path.join(REPO, 'docs', doc), 'utf8');
  const blocks = shBlocks(md);
  assert.ok(blocks.length >= 5, `${doc}: expected its sh blocks, found ${blocks.length}`);
  const [pa, pb] = [await freePort(), await freePort()];
  const script = 'set -euo pipefail\n' +
    blocks.join('\n').replace(/\b7420\b/g, String(pa)).replace(/\b7421\b/g, String(pb));

  const dir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-walk-'));
  mkdirSync(path.join(dir, 'build'));
  symlinkSync(BIN, path.join(dir, 'build', 'snapsync'));
  const proc = spawn('bash', ['-c', script], {
    cwd: dir, env: childEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const killAll = () => { try { process.kill(-proc.pid, 'SIGKILL'); } catch { /* gone */ } };
  t.after(() => { killAll(); rmSync(dir, { recursive: true, force: true }); });
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
  proc.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const code = await new Promise((resolve) => {
    const timer = setTimeout(() => { killAll(); resolve('timeout'); }, 120000);
    proc.on('close', (c) => { clearTimeout(timer); resolve(c); });
  });
  const logs = ['a.log', 'b.log'].map((f) => {
    try { return `--- ${f}\n` + readFileSync(path.join(dir, f), 'utf8').split('\n').slice(-15).join('\n'); } catch { return ''; }
  }).join('\n');
  assert.equal(code, 0, `${doc} did not run to the end (exit ${code})\nstdout:\n${stdout}\nstderr:\n${stderr}\n${logs}`);
  return stdout.split('\n');
}

test('walk-through: back up and restore a space (docs/walkthrough-backup.md)', async (t) => {
  const out = await runWalkthrough(t, 'walkthrough-backup.md');
  const text = out.join('\n');
  assert.ok(out.includes('{"name":"notes","server_version":0}'), text);
  assert.ok(out.some((l) => /^snapshot [0-9A-HJKMNP-TV-Z]{26}$/.test(l)), text);
  assert.ok(out.some((l) => / manual completed 2 entities$/.test(l)), text);
  assert.ok(out.includes('{"valid":true,"space":"notes","entity_total":2}'), text);
  assert.ok(out.includes('{"id":"t1","deleted":true}'), text);
  // the dry run and the restore agree: t1 comes back, t2 goes back
  const dry = out.indexOf('{"put":2,"deleted":0}');
  assert.ok(dry > 0 && out.indexOf('{"id":"t1","deleted":true}') < dry, text);
  assert.ok(out.some((l) => /^\{"changes":\{"put":2,"deleted":0\},"pre_restore_snapshot":"[0-9A-Z]{26}"\}$/.test(l)), text);
  assert.ok(out.includes('buy milk'), text);
  assert.ok(out.includes('{"done":false,"title":"call mum"}'), text);
  // the second instance, from the downloaded file
  assert.ok(out.includes('t1 buy milk done=false'), text);
  assert.ok(out.includes('t2 call mum done=false'), text);
});

test('walk-through: sync two instances (docs/walkthrough-sync.md)', async (t) => {
  const out = await runWalkthrough(t, 'walkthrough-sync.md');
  const text = out.join('\n');
  assert.ok(out.includes('{"status":"completed","pulled":0,"pushed":1,"conflicts":0}'), text);
  assert.ok(out.includes('{"name":"Ada","phone":"100"}'), text);
  // one entity edited on both sides is one conflict
  assert.ok(out.includes('{"status":"completed","conflicts":1}'), text);
  assert.ok(out.some((l) => /^\{"entity_id":"ada",/.test(l)), text);
  assert.ok(out.includes('{"mobile":"222","name":"Ada","phone":"111"}'), text);
  assert.ok(out.includes('0'), 'no conflict left on B\n' + text);
  assert.ok(out.some((l) => /^converged: [0-9a-f]{64}$/.test(l)), text);
});
