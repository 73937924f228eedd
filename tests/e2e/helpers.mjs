// helpers.mjs - shared machinery for the end-to-end tests (node --test).
//
// startServer() runs the real binary on 127.0.0.1:0 with a fresh data dir,
// learns the port from the JSON `listening` line on stderr (no port races),
// waits for GET /healthz and hands back a handle to talk to and stop it.
// withServer(t, opts) does the same and registers t.after() so the server
// is stopped even when the test fails. rawRequest / openConn / parseResponses
// speak HTTP/1.1 over plain sockets for the tests that need exact bytes.
//
// Only Node built-ins are used.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..');
export const BIN = process.env.SNAPSYNC_BIN || path.join(REPO, 'build', 'snapsync');
export { sleep };

export const ULID_RE = /^[0-9A-HJKMNP-TV-Z]{26}$/;
export const RID_RE = /^[A-Za-z0-9._:-]{1,64}$/;

// ---------------------------------------------------------------------------
// process helpers

/** Environment for a child: the parent's, minus any SNAPSYNC_* setting (so a
 *  developer's shell cannot change a test), plus `extra`. */
export function childEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('SNAPSYNC_')) env[k] = v;
  }
  return { ...env, ...extra };
}

/** Runs the binary to completion (CLI tests). Returns {code, signal, stdout, stderr}. */
export function runCli(args, { env = {}, timeoutMs = 10000, cwd } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, args, { env: childEnv(env), cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
    proc.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${BIN} ${args.join(' ')} did not exit within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    proc.on('error', (e) => { clearTimeout(timer); reject(e); });
    proc.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
  });
}

// Every server started by this process, so a crashed test run never leaves
// one behind.
const live = new Set();
process.on('exit', () => {
  for (const p of live) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
});

/** A loopback port nobody listens on right now (for a server to take, or
 *  as an address that refuses connections). */
export async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** Number of open file descriptors of a process, or null off Linux. */
export function fdCount(pid) {
  try { return readdirSync(`/proc/${pid}/fd`).length; } catch { return null; }
}

/**
 * Starts `snapsync serve --listen 127.0.0.1:0 --data DIR ...args`.
 * opts: args (extra CLI args), env (extra env vars), dataDir (reuse a dir;
 * such a dir is kept on stop unless keepData:false), keepData,
 * startTimeoutMs (10 s), waitHealthy (true).
 * Resolves to { port, base, dataDir, proc, pid, logs, stderrText(), stop(), kill9(),
 *   exited (null or {code, signal}), waitForLog(pred, ms), adminToken }.
 * adminToken is the one line of DATA/admin.key (written on first start),
 * read once the server listens; null if the file is missing.
 */
export async function startServer(opts = {}) {
  const { args = [], env = {}, startTimeoutMs = 10000, waitHealthy = true } = opts;
  const ownDir = !opts.dataDir;
  const dataDir = opts.dataDir || mkdtempSync(path.join(os.tmpdir(), 'snapsync-e2e-'));
  const keepData = opts.keepData ?? !ownDir;

  const argv = ['serve', '--listen', '127.0.0.1:0', '--data', dataDir, ...args];
  const proc = spawn(BIN, argv, { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);

  const logs = [];          // parsed JSON objects, kept updating
  const rawLines = [];      // every stderr line as text
  let stdoutText = '';
  const logWaiters = new Set();
  let partial = '';
  proc.stdout.setEncoding('utf8').on('data', (d) => { stdoutText += d; });
  proc.stderr.setEncoding('utf8').on('data', (d) => {
    partial += d;
    let nl;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      if (!line.trim()) continue;
      rawLines.push(line);
      let obj;
      try { obj = JSON.parse(line); } catch { obj = { _unparsed: line }; }
      logs.push(obj);
      for (const w of logWaiters) w(obj);
    }
  });

  let exitInfo = null;
  let spawnError = null;
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      live.delete(proc);
      resolve(exitInfo);
    });
    // a spawn that fails (binary missing, or being relinked: ETXTBSY) emits
    // 'error' and never 'exit': count it as exited, or stop() would wait forever
    proc.on('error', (e) => {
      spawnError = e;
      if (!exitInfo && proc.pid === undefined) {
        exitInfo = { code: null, signal: null, error: e.message };
        live.delete(proc);
        resolve(exitInfo);
      }
    });
  });

  const stderrText = () => rawLines.join('\n') + (partial ? '\n' + partial : '');
  const describe = () => `${BIN} ${argv.join(' ')}\n--- stderr ---\n${stderrText()}\n--- stdout ---\n${stdoutText}`;

  const handle = {
    dataDir,
    proc,
    pid: proc.pid,
    logs,
    rawLines,
    stderrText,
    get exited() { return exitInfo; },
    /** Resolves with the first log object (already seen or future) matching pred. */
    waitForLog(pred, timeoutMs = 3000) {
      const found = logs.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          logWaiters.delete(w);
          reject(new Error(`no matching log line within ${timeoutMs} ms\n${stderrText()}`));
        }, timeoutMs);
        const w = (obj) => {
          if (pred(obj)) { clearTimeout(timer); logWaiters.delete(w); resolve(obj); }
        };
        logWaiters.add(w);
      });
    },
  };

  let stopping = null;
  handle.stop = (signal = 'SIGTERM', { timeoutMs = 15000 } = {}) => {
    if (stopping) return stopping;
    handle.stopRequested = signal;
    stopping = (async () => {
      if (!exitInfo) {
        try { proc.kill(signal); } catch { /* already gone */ }
        let timer;
        const timedOut = new Promise((resolve) => { timer = setTimeout(() => resolve(null), timeoutMs); });
        const r = await Promise.race([exited, timedOut]);
        clearTimeout(timer);
        if (!r) {
          proc.kill('SIGKILL');
          await exited;
          if (!keepData) rmSync(dataDir, { recursive: true, force: true });
          throw new Error(`server did not exit within ${timeoutMs} ms of ${signal}\n${stderrText()}`);
        }
      }
      if (!keepData) rmSync(dataDir, { recursive: true, force: true });
      return exitInfo;
    })();
    return stopping;
  };
  handle.kill9 = () => handle.stop('SIGKILL');

  // wait for the `listening` line, or an early exit
  let listening;
  try {
    listening = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not log "listening" within ${startTimeoutMs} ms`)), startTimeoutMs);
      const w = (obj) => {
        if (obj && obj.msg === 'listening') { clearTimeout(timer); logWaiters.delete(w); resolve(obj); }
      };
      logWaiters.add(w);
      exited.then((e) => {
        clearTimeout(timer);
        reject(new Error(`server exited before listening (code ${e.code}, signal ${e.signal})`));
      });
      proc.on('error', (e) => { clearTimeout(timer); reject(e); });
    });
  } catch (e) {
    try { await handle.kill9(); } catch { /* reported below */ }
    throw new Error(`${e.message}${spawnError ? ` (${spawnError.message})` : ''}\n${describe()}`);
  }
  if (typeof listening.port !== 'number' || !listening.port || typeof listening.address !== 'string') {
    await handle.kill9();
    throw new Error(`bad "listening" line ${JSON.stringify(listening)}\n${describe()}`);
  }
  handle.port = listening.port;
  handle.address = listening.address;
  handle.base = `http://127.0.0.1:${listening.port}`;
  handle.adminToken = readAdminToken(dataDir);

  if (waitHealthy) {
    const deadline = Date.now() + startTimeoutMs;
    let last = '';
    for (;;) {
      if (exitInfo) {
        await handle.stop();
        throw new Error(`server exited while waiting for /healthz\n${describe()}`);
      }
      try {
        const r = await httpRequest(handle.port, { path: '/healthz', timeoutMs: 1000 });
        if (r.status === 200) break;
        last = `status ${r.status}: ${r.body}`;
      } catch (e) {
        last = e.message;
      }
      if (Date.now() > deadline) {
        await handle.kill9();
        throw new Error(`GET /healthz did not answer 200 within ${startTimeoutMs} ms (last: ${last})\n${describe()}`);
      }
      await sleep(50);
    }
  }
  return handle;
}

/** The token in DATA/admin.key (trimmed), or null when there is none. */
export function readAdminToken(dataDir) {
  const f = path.join(dataDir, 'admin.key');
  if (!existsSync(f)) return null;
  const t = readFileSync(f, 'utf8').trim();
  return t || null;
}

/** startServer + t.after(stop): the server is stopped even when the test fails. */
export async function withServer(t, opts = {}) {
  const srv = await startServer(opts);
  t.after(async () => {
    if (srv.stopRequested) { await srv.stop().catch(() => {}); return; }  // the test stopped it itself
    const r = await srv.stop();
    // a crash or a sanitizer report (ASan exits non-zero) fails the test
    if (r.code !== 0 || r.signal) {
      throw new Error(`server exited with ${JSON.stringify(r)} after SIGTERM\n${srv.stderrText().slice(-4000)}`);
    }
  });
  return srv;
}

/** Fails (throws) when the server process is gone; otherwise a 200 /healthz. */
export async function assertHealthy(srv, msg = '') {
  if (srv.exited) {
    throw new Error(`server exited (${JSON.stringify(srv.exited)}) ${msg}\n${srv.stderrText()}`);
  }
  const r = await httpRequest(srv.port, { path: '/healthz', timeoutMs: 3000 });
  if (r.status !== 200) throw new Error(`/healthz answered ${r.status} ${msg}: ${r.body}`);
  return r;
}

// ---------------------------------------------------------------------------
// HTTP clients

/**
 * One request on a fresh connection through node:http (no pooling, so no
 * connection outlives the request; useful when connection counts matter).
 * Resolves {status, headers, body (string), json (parsed or undefined)}.
 */
export function httpRequest(port, { method = 'GET', path: p = '/', headers = {}, body, timeoutMs = 3000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body: text, json });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout after ${timeoutMs} ms: ${method} ${p}`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/**
 * One API request on a fresh connection (node:http, so the path is sent as
 * given: no normalisation of `..` or `%2e`).
 *   api(srv, 'PUT', '/api/v1/spaces/a', { token, body, headers, timeoutMs })
 * token: defaults to srv.adminToken; null sends no Authorization header.
 * body: an object/array/number is sent as JSON; a string or Buffer as is.
 * localAddress: the client's source address (e.g. 127.0.0.2, another
 * client as far as per-address limits go).
 * Resolves {status, headers (plain object, lower-case names), body (parsed
 * JSON or null), json (the same, for checkError), text}.
 */
export function api(srv, method, p, { token = srv.adminToken, body, headers = {}, timeoutMs = 10000, localAddress } = {}) {
  const h = { ...headers };
  if (token !== null && token !== undefined) h.Authorization = `Bearer ${token}`;
  let payload;
  if (body !== undefined) {
    if (typeof body === 'string' || Buffer.isBuffer(body)) payload = body;
    else payload = JSON.stringify(body);
    if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['Content-Type'] = 'application/json';
    h['Content-Length'] = Buffer.byteLength(payload);
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: srv.port, method, path: p, headers: h, agent: false, localAddress }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed = null;
        try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
        resolve({ status: res.statusCode, headers: res.headers, body: parsed, json: parsed ?? undefined, text });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout after ${timeoutMs} ms: ${method} ${p}`)));
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** api() that asserts the status; returns the parsed body. */
export async function apiOk(srv, method, p, opts = {}, want = [200, 201]) {
  const r = await api(srv, method, p, opts);
  const ok = Array.isArray(want) ? want.includes(r.status) : r.status === want;
  if (!ok) throw new Error(`${method} ${p} -> ${r.status} (wanted ${want}): ${r.text}`);
  return r.body;
}

/** Creates (or keeps) a space as admin; returns the space object. */
export function putSpace(srv, name) {
  return apiOk(srv, 'PUT', `/api/v1/spaces/${name}`);
}

/** Creates a key through the API; returns the 201 body (with .token). */
export function createKey(srv, role, spaces = ['*'], name = `${role}-key`) {
  return apiOk(srv, 'POST', '/api/v1/keys', { body: { role, spaces, name } }, 201);
}

/** The whole change feed of a space from `since` (all pages). */
export async function allChanges(srv, space, { since = 0, limit = 1000, extra = '', token } = {}) {
  const out = [];
  let v = since;
  for (let guard = 0; guard < 100000; guard++) {
    const q = `/api/v1/spaces/${space}/changes?since=${v}&limit=${limit}${extra}`;
    const b = await apiOk(srv, 'GET', q, token === undefined ? {} : { token }, 200);
    out.push(...b.changes);
    if (!b.more) return { changes: out, last_version: b.last_version };
    if (b.last_version <= v) throw new Error(`feed did not advance: ${q} -> last_version ${b.last_version}`);
    v = b.last_version;
  }
  throw new Error('change feed never ended');
}

/** fetch() and parse the body as JSON when possible. {status, headers (Headers), body, text}. */
export async function getJSON(url, opts = {}) {
  const res = await fetch(url, { ...opts, signal: opts.signal ?? AbortSignal.timeout(opts.timeoutMs ?? 5000) });
  const text = await res.text();
  let body;
  try { body = text ? JSON.parse(text) : null; } catch { body = undefined; }
  return { status: res.status, headers: res.headers, body, text };
}

/**
 * Opens a TCP connection, writes `bytes`, collects everything until the
 * server closes (FIN or reset) or the timeout. endAfterWrite half-closes our
 * side after writing. Resolves {data, text, closed, error, elapsedMs}.
 */
export function rawRequest(port, bytes, { timeoutMs = 3000, endAfterWrite = false } = {}) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const t0 = Date.now();
    let done = false;
    let error = null;
    const sock = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const finish = (closed) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      const data = Buffer.concat(chunks);
      resolve({ data, text: data.toString('utf8'), closed, error, elapsedMs: Date.now() - t0 });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('connect', () => {
      if (bytes !== undefined && bytes !== null && bytes.length) sock.write(bytes);
      if (endAfterWrite) sock.end();
    });
    sock.on('data', (d) => chunks.push(d));
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('error', (e) => {
      if (e.code === 'ECONNREFUSED') { clearTimeout(timer); done = true; reject(e); return; }
      error = e;          // EPIPE / ECONNRESET: the server closed on us
      finish(true);
    });
  });
}

/**
 * A persistent raw connection for keep-alive, pipelining and timing tests.
 *   const c = await openConn(port);
 *   c.write(bytes); const r = await c.readResponse({head}); await c.waitClose(ms)
 */
export async function openConn(port, { allowHalfOpen = true } = {}) {
  const sock = net.connect({ host: '127.0.0.1', port, allowHalfOpen });
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  let buf = Buffer.alloc(0);
  let ended = false;          // FIN or reset from the server
  let error = null;
  let endedAt = null;
  const waiters = new Set();
  const poke = () => { for (const w of [...waiters]) w(); };
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); poke(); });
  // like a normal client, answer the server's FIN with ours (else the
  // server lingers on a half-open socket)
  sock.on('end', () => { ended = true; endedAt ??= Date.now(); sock.end(); poke(); });
  sock.on('close', () => { ended = true; endedAt ??= Date.now(); poke(); });
  sock.on('error', (e) => { error = e; ended = true; endedAt ??= Date.now(); poke(); });

  // Waits until check() returns a non-undefined value; rejects on timeout.
  const waitFor = (check, timeoutMs, what) => new Promise((resolve, reject) => {
    const attempt = () => {
      let v;
      try { v = check(); } catch (e) { cleanup(); reject(e); return true; }
      if (v !== undefined) { cleanup(); resolve(v); return true; }
      return false;
    };
    const w = () => { attempt(); };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timeout after ${timeoutMs} ms waiting for ${what}; received so far: ${JSON.stringify(buf.toString('latin1').slice(0, 600))}, closed=${ended}`));
    }, timeoutMs);
    const cleanup = () => { clearTimeout(timer); waiters.delete(w); };
    waiters.add(w);
    attempt();
  });

  const conn = {
    sock,
    get buffer() { return buf; },
    get closed() { return ended; },
    get closedAt() { return endedAt; },
    get error() { return error; },
    write(bytes) {
      return new Promise((resolve) => {
        if (ended || sock.destroyed) { resolve(false); return; }
        sock.write(bytes, (err) => resolve(!err));
      });
    },
    end() { sock.end(); },
    destroy() { sock.destroy(); },
    /** Next complete response (removed from the buffer). head: it answers a HEAD. */
    readResponse({ head = false, timeoutMs = 3000 } = {}) {
      return waitFor(() => {
        const r = parseOne(buf, 0, { head, eof: ended });
        if (r) {
          buf = buf.subarray(r.end);
          delete r.end;
          return r;
        }
        if (ended) throw new Error(`connection closed before a complete response; received: ${JSON.stringify(buf.toString('latin1').slice(0, 600))}`);
        return undefined;
      }, timeoutMs, 'a response');
    },
    /** Resolves true once the server closed, false after timeoutMs. */
    waitClose(timeoutMs = 3000) {
      return waitFor(() => (ended ? true : undefined), timeoutMs, 'close').catch(() => false);
    },
    /** Resolves once at least n bytes (or a close) arrived, else false on timeout. */
    waitData(n = 1, timeoutMs = 3000) {
      return waitFor(() => (buf.length >= n || ended ? true : undefined), timeoutMs, 'data').catch(() => false);
    },
  };
  return conn;
}

// ---------------------------------------------------------------------------
// response parsing

const CRLFCRLF = Buffer.from('\r\n\r\n');

/**
 * Parses one response at buf[off]. Returns null if incomplete, else
 * {status, reason, version, headers, rawHeaders, body, bodyBuffer, json, end}.
 * head: no body (answer to HEAD). eof: the connection is closed (a response
 * without framing then ends at the end of the data).
 */
export function parseOne(buf, off = 0, { head = false, eof = false } = {}) {
  const hEnd = buf.indexOf(CRLFCRLF, off);
  if (hEnd < 0) return null;
  const headText = buf.subarray(off, hEnd).toString('latin1');
  const lines = headText.split('\r\n');
  const m = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (!m) throw new Error(`bad status line: ${JSON.stringify(lines[0])}`);
  const status = Number(m[2]);
  const headers = {};
  const rawHeaders = [];
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0) throw new Error(`bad header line: ${JSON.stringify(line)}`);
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    rawHeaders.push([name, value]);
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  let p = hEnd + 4;
  let body = Buffer.alloc(0);
  const noBody = head || (status >= 100 && status < 200) || status === 204 || status === 304;
  if (!noBody) {
    const te = (headers['transfer-encoding'] || '').toLowerCase();
    if (te.includes('chunked')) {
      const parts = [];
      for (;;) {
        const le = buf.indexOf('\r\n', p);
        if (le < 0) return null;
        const size = parseInt(buf.subarray(p, le).toString('latin1').split(';')[0], 16);
        if (Number.isNaN(size)) throw new Error(`bad chunk size at ${p}`);
        p = le + 2;
        if (size === 0) {
          // trailers until an empty line
          for (;;) {
            const te2 = buf.indexOf('\r\n', p);
            if (te2 < 0) return null;
            const empty = te2 === p;
            p = te2 + 2;
            if (empty) break;
          }
          break;
        }
        if (buf.length < p + size + 2) return null;
        parts.push(buf.subarray(p, p + size));
        p += size + 2;
      }
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (!Number.isInteger(n) || n < 0) throw new Error(`bad content-length ${headers['content-length']}`);
      if (buf.length < p + n) return null;
      body = buf.subarray(p, p + n);
      p += n;
    } else {
      if (!eof) return null;      // delimited by close
      body = buf.subarray(p);
      p = buf.length;
    }
  }
  const text = body.toString('utf8');
  let json;
  if (/json/i.test(headers['content-type'] || '')) {
    try { json = JSON.parse(text); } catch { json = undefined; }
  }
  return { version: m[1], status, reason: m[3] ?? '', headers, rawHeaders, body: text, bodyBuffer: Buffer.from(body), json, end: p };
}

/**
 * Parses concatenated responses (Buffer or string). opts.heads: indices of
 * responses that answer HEAD requests (no body). Interim 1xx responses are
 * returned as entries too. Trailing incomplete data is ignored (see .rest).
 */
export function parseResponses(input, { heads = [], eof = true } = {}) {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input, 'utf8');
  const out = [];
  let off = 0;
  let finalIndex = 0;
  while (off < buf.length) {
    const r = parseOne(buf, off, { head: heads.includes(finalIndex), eof });
    if (!r) break;
    off = r.end;
    delete r.end;
    out.push(r);
    if (r.status >= 200) finalIndex++;
  }
  out.rest = buf.subarray(off);
  return out;
}

// ---------------------------------------------------------------------------
// assertions shared by several files

/** Checks the SPEC §1 error shape; returns the parsed body. */
export function checkError(assert, r, status, code, ctx = '') {
  const where = `${ctx} -> ${r.status} ${JSON.stringify(r.headers)} ${r.body}`;
  assert.equal(r.status, status, `status ${where}`);
  const ct = r.headers['content-type'] ?? (typeof r.headers.get === 'function' ? r.headers.get('content-type') : undefined);
  assert.match(ct || '', /^application\/json/, `content-type ${where}`);
  let body = r.json;
  if (body === undefined) {
    body = typeof r.body === 'string' ? JSON.parse(r.body) : r.body;
  }
  assert.equal(body.error, code, `error code ${where}`);
  assert.equal(typeof body.message, 'string', `message ${where}`);
  assert.ok(body.message.length > 0, `non-empty message ${where}`);
  const rid = r.headers['x-request-id'] ?? (typeof r.headers.get === 'function' ? r.headers.get('x-request-id') : undefined);
  assert.match(rid || '', RID_RE, `X-Request-Id ${where}`);
  return body;
}

/** Seeded PRNG (mulberry32) for reproducible fuzzing. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Whether an external command is available (e.g. sqlite3). */
export function haveCommand(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
  return r.status === 0;
}

export { existsSync };

/** A request with a binary body and a binary answer: {status, headers, buf,
 *  json, text}. */
export function binaryRequest(srv, method, path, { body, headers = {}, token = srv.adminToken, timeoutMs = 30000 } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    h['Content-Length'] = body.length;
    h['Content-Type'] ??= 'application/octet-stream';
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: srv.port, method, path, headers: h, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        let json;
        try { json = JSON.parse(buf.toString('utf8')); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, buf, json, text: buf.toString('utf8').slice(0, 500) });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout: ${method} ${path}`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}
