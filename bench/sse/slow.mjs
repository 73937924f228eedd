// bench/sse/slow.mjs - the slow-subscriber storm (run by bench/sse/slow-subscribers).
//
// For each binary (BINS="label=path ...") and each subscriber count (COUNTS):
// a fresh server, COUNT subscribers of GET /api/v1/events that never read
// (stall.c), PUSHES pushes of CHANGES changes each (POST /changes), then
// every subscriber leaves. Measured: VmRSS before, peak during the storm
// and after everyone left (sampled every 10 ms), /healthz latency during
// the storm (a new connection every PROBE_MS), the longest loop stall the
// server reports (snapsync_loop_max_stall_seconds, when it has it),
// subscribers the server closed (overflow), and how long the pushes took.
// Prints a Markdown report on stdout.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

const env = (k, d) => (process.env[k] === undefined || process.env[k] === '' ? d : process.env[k]);
const BINS = env('BINS', '').split(/\s+/).filter(Boolean).map((s) => {
  const i = s.indexOf('=');
  return { label: s.slice(0, i), path: s.slice(i + 1) };
});
const COUNTS = env('COUNTS', '1000 10000').split(/\s+/).filter(Boolean).map(Number);
const PUSHES = Number(env('PUSHES', 20));
const CHANGES = Number(env('CHANGES', 1000));
const PROBE_MS = Number(env('PROBE_MS', 100));
const SETTLE_MS = Number(env('SETTLE_MS', 2000));
const AFTER_MS = Number(env('AFTER_MS', 3000));
const SERVER_CPU = env('SERVER_CPU', '0');
const QUEUE = env('QUEUE_BYTES', '');
const STALL_BIN = env('STALL_BIN', '');
const SERVER_ARGS = env('SERVER_ARGS', '').split(/\s+/).filter(Boolean);
if (!BINS.length || !STALL_BIN) { console.error('BINS and STALL_BIN are required'); process.exit(2); }

const log = (...a) => process.stderr.write(`[slow-subscribers ${new Date().toISOString().slice(11, 19)}] ${a.join(' ')}\n`);
const vm = (pid, k) => { try { return Number(new RegExp(`${k}:\\s+(\\d+)`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]); } catch { return null; } };
const children = new Set();
process.on('exit', () => { for (const p of children) try { p.kill('SIGKILL'); } catch { /* gone */ } });

function request(port, method, p, { token, body, timeoutMs = 120000 } = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (data) { headers['Content-Type'] = 'application/json'; headers['Content-Length'] = data.length; }
    const t0 = process.hrtime.bigint();
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8'),
        ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${p}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}

async function startServer(bin) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snapsync-slowsubs-'));
  const args = ['serve', '--listen', '127.0.0.1:0', '--data', dir, '--max-connections', '30000',
    '--sse-max-clients', '30000', '--access-log', 'false', ...(QUEUE ? ['--sse-queue-bytes', QUEUE] : []), ...SERVER_ARGS];
  const cmd = SERVER_CPU !== '' ? 'taskset' : bin;
  const argv = SERVER_CPU !== '' ? ['-c', SERVER_CPU, bin, ...args] : args;
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(proc);
  let tail = '';
  const lines = [];                  // parsed log objects other than access lines
  const port = await new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: proc.stderr });
    rl.on('line', (l) => {
      tail = (tail + l + '\n').slice(-4000);
      try { const o = JSON.parse(l); lines.push(o); if (o.msg === 'listening') resolve(o.port); } catch { /* not JSON */ }
    });
    proc.on('exit', (c) => reject(new Error(`server exited ${c}: ${tail}`)));
    setTimeout(() => reject(new Error(`no listening line: ${tail}`)), 15000);
  });
  const token = fs.readFileSync(path.join(dir, 'admin.key'), 'utf8').trim();
  const pid = proc.pid;              // taskset execs the server: same pid
  return { proc, pid, port, token, dir, tail: () => tail, lines,
    async stop() {
      proc.kill('SIGTERM');
      const code = await new Promise((r) => { if (proc.exitCode !== null) r(proc.exitCode); else proc.on('exit', (c) => r(c)); });
      children.delete(proc);
      fs.rmSync(dir, { recursive: true, force: true });
      return code;
    } };
}

function startStall(port, count, token) {
  const p = spawn(STALL_BIN, ['127.0.0.1', String(port), String(count), '/api/v1/events?topics=change',
    `Authorization: Bearer ${token}`], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(p);
  const waiters = [];
  readline.createInterface({ input: p.stdout }).on('line', (l) => {
    const o = JSON.parse(l);
    const i = waiters.findIndex((w) => w.type === o.type);
    if (i >= 0) waiters.splice(i, 1)[0].resolve(o);
  });
  const wait = (type) => new Promise((resolve) => waiters.push({ type, resolve }));
  return {
    ready: wait('ready'),
    async status() { const w = wait('status'); p.stdin.write('status\n'); return w; },
    async close() { const w = wait('closed'); p.stdin.write('close\n'); const r = await w; children.delete(p); return r; },
  };
}

async function metrics(srv) {
  const r = await request(srv.port, 'GET', '/metrics', { token: srv.token });
  const m = {};
  for (const l of r.text.split('\n')) {
    const x = /^([a-z_]+) ([0-9.e+-]+)$/.exec(l);
    if (x) m[x[1]] = Number(x[2]);
  }
  return m;
}

/** Sequential /healthz probes on new connections until stop(); latencies in ms. */
function prober(port) {
  const lat = [];
  let on = true;
  const done = (async () => {
    while (on) {
      const t0 = Date.now();
      try { lat.push((await request(port, 'GET', '/healthz', { timeoutMs: 60000 })).ms); } catch { lat.push(Infinity); }
      const wait = PROBE_MS - (Date.now() - t0);
      if (wait > 0) await sleep(wait);
    }
  })();
  return { lat, async stop() { on = false; await done; return lat; } };
}

function sampler(pid) {
  let max = 0;
  const t = setInterval(() => { const r = vm(pid, 'VmRSS'); if (r > max) max = r; }, 10);
  return { stop() { clearInterval(t); return max; }, get max() { return max; } };
}

const pct = (xs, p) => { const v = [...xs].sort((a, b) => a - b); return v.length ? v[Math.min(v.length - 1, Math.ceil(p / 100 * v.length) - 1)] : NaN; };

async function scenario(bin, count) {
  log(`${bin.label}: ${count} subscribers`);
  const srv = await startServer(bin.path);
  try {
    let r = await request(srv.port, 'PUT', '/api/v1/spaces/s', { token: srv.token, body: {} });
    if (r.status >= 300) throw new Error(`PUT space: ${r.status} ${r.text}`);
    // warm-up: one push with nobody listening (SQLite cache, the write path)
    await push(srv, 'warm', 0);
    await sleep(500);
    const rss0 = vm(srv.pid, 'VmRSS');
    const stall = startStall(srv.port, count, srv.token);
    const ready = await stall.ready;
    if (ready.ok !== count) throw new Error(`only ${ready.ok} of ${count} subscribers: ${JSON.stringify(ready)}`);
    await sleep(500);
    const rssSubs = vm(srv.pid, 'VmRSS');
    const s = sampler(srv.pid);
    const probe = prober(srv.port);
    const t0 = Date.now();
    const pushMs = [];
    for (let i = 0; i < PUSHES; i++) pushMs.push(await push(srv, 'p', i));
    const pushedMs = Date.now() - t0;
    // the fan-out may go on after the last push was answered (new binaries
    // say how many events are still to be offered); wait for it to end
    for (;;) {
      const m = await metrics(srv);
      if (!m.snapsync_sse_fanout_backlog_events) break;
      await sleep(100);
    }
    const stormMs = Date.now() - t0;
    await sleep(SETTLE_MS);
    const lat = await probe.stop();
    const peak = s.max;
    const st = await stall.status();
    const m1 = await metrics(srv);
    // everyone leaves
    const probe2 = prober(srv.port);
    await stall.close();
    const deadline = Date.now() + 120000;
    let m2;
    for (;;) {
      m2 = await metrics(srv);
      if ((m2.snapsync_open_connections ?? 0) <= 1 || Date.now() > deadline) break;
      await sleep(100);
    }
    await sleep(AFTER_MS);
    const lat2 = await probe2.stop();
    const rssAfter = vm(srv.pid, 'VmRSS');
    s.stop();
    const hwm = vm(srv.pid, 'VmHWM');
    const stall1 = m1.snapsync_loop_max_stall_seconds;
    const m3 = await metrics(srv);
    const code = await srv.stop();
    const res = {
      bin: bin.label, count, rss0, rssSubs, peak, rssAfter, hwm, stormMs, pushedMs, pushMs,
      healthMax: Math.max(...lat), healthP99: pct(lat, 99), healthN: lat.length,
      closeHealthMax: Math.max(...lat2),
      stallMs: stall1 === undefined ? null : stall1 * 1000,
      stallAllMs: m3.snapsync_loop_max_stall_seconds === undefined ? null : m3.snapsync_loop_max_stall_seconds * 1000,
      closedByServer: st.closed_by_server, dropped: m1.snapsync_sse_dropped_subscribers_total, exit: code,
      trims: srv.lines.filter((o) => o.msg === 'memory_trimmed').map((o) => `${o.rss_before_kib}→${o.rss_after_kib} KiB in ${o.ms} ms`),
    };
    log(JSON.stringify(res));
    return res;
  } catch (e) {
    await srv.stop().catch(() => {});
    throw e;
  }
}

async function push(srv, prefix, i) {
  const changes = [];
  for (let k = 0; k < CHANGES; k++) changes.push({ collection: 'c', id: `${prefix}${i}-${k}`, base_rev: null, deleted: false, body: {} });
  const r = await request(srv.port, 'POST', '/api/v1/spaces/s/changes', { token: srv.token, body: { changes }, timeoutMs: 300000 });
  if (r.status !== 200) throw new Error(`push: ${r.status} ${r.text.slice(0, 300)}`);
  return r.ms;
}

const results = [];
for (const count of COUNTS) for (const bin of BINS) results.push(await scenario(bin, count));

const kib = (x) => (x / 1024).toFixed(1);
const out = [];
out.push(`# SSE slow subscribers — ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}`, '');
out.push(`${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}, Node ${process.version}.`);
out.push(`Storm: COUNT subscribers of \`GET /api/v1/events?topics=change\` that never read (bench/sse/stall.c), then ${PUSHES} pushes of ${CHANGES} changes (\`POST /api/v1/spaces/s/changes\`), one after the other; ${SETTLE_MS} ms later every subscriber leaves. Server pinned to CPU ${SERVER_CPU}; --sse-queue-bytes ${QUEUE || 'default (262144)'}.`, '');
for (const b of BINS) out.push(`- \`${b.label}\`: ${b.path}${process.env[`DESC_${b.label}`] ? ` (${process.env[`DESC_${b.label}`]})` : ''}`);
out.push('');
out.push('| binary | subscribers | RSS before | RSS peak | peak per subscriber | RSS after all left | longest loop stall: storm / whole run | /healthz max (p99) during the storm | /healthz max while they leave | pushes answered / fan-out done | overflowed | exit |');
out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
const ms = (x) => (x === null || x === undefined ? 'n/a' : `${x.toFixed(1)} ms`);
for (const r of results) {
  out.push(`| ${r.bin} | ${r.count.toLocaleString('en-US')} | ${kib(r.rss0)} MiB | ${kib(r.peak)} MiB | ${Math.round((r.peak - r.rss0) * 1024 / r.count).toLocaleString('en-US')} B | ${kib(r.rssAfter)} MiB | ` +
    `${ms(r.stallMs)} / ${ms(r.stallAllMs)} | ${r.healthMax.toFixed(1)} (${r.healthP99.toFixed(1)}) ms, ${r.healthN} probes | ${r.closeHealthMax.toFixed(1)} ms | ` +
    `${(r.pushedMs / 1000).toFixed(2)} s (slowest push ${Math.max(...r.pushMs).toFixed(0)} ms) / ${(r.stormMs / 1000).toFixed(2)} s | ${r.dropped ?? '?'} | ${r.exit} |`);
}
out.push('', 'RSS figures are VmRSS of the server, sampled every 10 ms; "peak per subscriber" = (peak − before) / subscribers (it includes each connection\'s own few KiB). ' +
  '"Longest loop stall" = snapsync_loop_max_stall_seconds (the busiest loop iteration) read after the storm and at the end (after everyone left); n/a: the binary does not have it, and /healthz latency (a new connection every ' +
  `${PROBE_MS} ms) is the outside view of the same thing. "Fan-out done": when the server had offered every event to every subscriber (snapsync_sse_fanout_backlog_events 0; the old binary fans out inside the push). "Overflowed" = snapsync_sse_dropped_subscribers_total.`);
const trims = results.filter((r) => r.trims.length);
if (trims.length) {
  out.push('', 'malloc_trim after the mass close (log line `memory_trimmed`):');
  for (const r of trims) out.push(`- ${r.bin}, ${r.count}: ${r.trims.join('; ')}`);
}
console.log(out.join('\n'));
