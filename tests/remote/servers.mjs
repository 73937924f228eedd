// servers.mjs - the storage servers the off-site tests upload to, all on
// loopback and started by the tests themselves:
//
//   startDav()  Apache 2 (mod_dav, mod_dav_fs, Basic auth) in the foreground
//               as this process's user, with a generated config in a temp
//               dir (never the system service)
//   startS3()   s3rver (npm), behind a proxy that recomputes every request's
//               AWS Signature V4 with the aws4 package and refuses a mismatch
//               (s3rver checks the access key id only)
//
// Both sit behind a fault proxy (faults.mode): 'pass', 'down' (connections
// reset), 'stall' (requests never answered), {status: N, count: K} (the
// next K requests answered N without reaching the server), or a script: an
// array of steps taken one per request, each 'down' (that request's
// connection reset) or a status, then 'pass' once it is used up. A script
// makes retries exact: the remote's client stops an attempt at its first
// failed request, so each step fails exactly one attempt (a 'down' on a
// connection that served a request before would be retried by libcurl
// itself: use it on fresh connections; a scripted status closes its own).

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
// aws4 and s3rver (this folder's npm packages) are loaded by startS3 only,
// so startDav works without them (tests/browser uses it)
let aws4;

export const S3_KEY_ID = 'S3RVER';           // s3rver's default access key id
export const S3_SECRET = 'S3RVER';
export const DAV_USER = 'backup';
export const DAV_PASS = 'dav-secret-Pw-9931';

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

// A proxy to 127.0.0.1:upstream with fault injection and an optional check
// of each request before it is forwarded (check(req) -> null or [status, body]).
async function faultProxy(upstreamPort, check) {
  const faults = { mode: 'pass', seen: [] };
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    faults.seen.push(`${req.method} ${req.url}`);
    if (Array.isArray(faults.mode)) {
      const st = faults.mode.shift();
      if (!faults.mode.length) faults.mode = 'pass';
      if (st === 'down') { req.socket.destroy(); return; }
      req.resume();
      req.on('end', () => { res.writeHead(st, { 'content-type': 'text/plain', connection: 'close' }); res.end('injected\n'); });
      return;
    }
    if (faults.mode === 'down') { req.socket.destroy(); return; }
    if (faults.mode === 'stall') { req.resume(); return; }      // never answered
    if (typeof faults.mode === 'object' && faults.mode.count > 0) {
      faults.mode.count--;
      req.resume();
      req.on('end', () => { res.writeHead(faults.mode.status, { 'content-type': 'text/plain' }); res.end('injected\n'); });
      return;
    }
    const refused = check ? check(req) : null;
    if (refused) {
      req.resume();
      req.on('end', () => { res.writeHead(refused[0], { 'content-type': 'application/xml' }); res.end(refused[1]); });
      return;
    }
    const up = http.request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers },
      (ur) => { ur.on('error', () => res.destroy()); res.writeHead(ur.statusCode, ur.headers); ur.pipe(res); });
    // a reset on either side ends the other; never an unhandled error
    up.on('error', () => { res.destroy(); });
    req.on('error', () => { up.destroy(); });
    res.on('error', () => {});
    req.pipe(up);
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.keepAliveTimeout = 1000;
  const port = await listen(server);
  return {
    port, faults,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

// ---------------------------------------------------------------------------
// S3: s3rver + the SigV4 check

function parseAuth(h) {
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(h || '');
  return m && { keyId: m[1], region: m[3], service: m[4], signed: m[5].split(';'), signature: m[6] };
}

export function sigv4Check(secret) {
  return (req) => {
    const a = parseAuth(req.headers.authorization);
    const deny = (why) => [403, `<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code><Message>${why}</Message></Error>`];
    if (!a) return deny('no AWS4-HMAC-SHA256 authorization');
    const headers = {};
    for (const h of a.signed) headers[h] = req.headers[h];
    const opts = { method: req.method, host: req.headers.host, path: req.url, service: a.service, region: a.region, headers };
    aws4.sign(opts, { accessKeyId: a.keyId, secretAccessKey: secret });
    const got = parseAuth(opts.headers.Authorization);
    if (!got || got.signature !== a.signature) {
      if (process.env.SIGV4_DEBUG) console.error('sigv4 mismatch', req.method, req.url, JSON.stringify(req.headers));
      return deny('the signature does not match');
    }
    return null;
  };
}

export async function startS3({ bucket = 'backups' } = {}) {
  aws4 = aws4 || (await import('aws4')).default;
  const { default: S3rver } = await import('s3rver');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-s3-'));
  const s3 = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: dir, configureBuckets: [{ name: bucket }] });
  const { port: s3port } = await s3.run();
  const proxy = await faultProxy(s3port, sigv4Check(S3_SECRET));
  return {
    kind: 's3', bucket, dir, faults: proxy.faults,
    endpoint: `http://127.0.0.1:${proxy.port}`,
    // the options a snapsync needs to use it (credentials by the environment)
    args: (prefix = 'snap') => ['--remote', `s3://${bucket}/${prefix}`, '--remote-endpoint', `http://127.0.0.1:${proxy.port}`],
    env: { AWS_ACCESS_KEY_ID: S3_KEY_ID, AWS_SECRET_ACCESS_KEY: S3_SECRET },
    // an object's bytes, straight from s3rver's store (bypassing snapsync)
    async get(key) {
      const r = await fetch(`http://127.0.0.1:${s3port}/${bucket}/${key}`);
      return r.status === 200 ? Buffer.from(await r.arrayBuffer()) : null;
    },
    async put(key, body) {
      // s3rver itself does not check signatures: the test writes behind the proxy
      const r = await fetch(`http://127.0.0.1:${s3port}/${bucket}/${key}`, { method: 'PUT', body });
      if (r.status !== 200) throw new Error(`put ${key}: ${r.status}`);
    },
    async keys(prefix = '') {
      const r = await fetch(`http://127.0.0.1:${s3port}/${bucket}?list-type=2&prefix=${encodeURIComponent(prefix)}&max-keys=1000`);
      const text = await r.text();
      if (process.env.SIGV4_DEBUG) console.error(text);
      return [...text.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]).sort();
    },
    async close() { await proxy.close(); await s3.close(); rmSync(dir, { recursive: true, force: true }); },
  };
}

// ---------------------------------------------------------------------------
// WebDAV: Apache in the foreground

const MODULES = '/usr/lib/apache2/modules';

export async function startDav() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'snapsync-dav-'));
  const root = path.join(dir, 'root');
  mkdirSync(path.join(root, 'backups'), { recursive: true });
  const htpasswd = spawnSync('htpasswd', ['-bc', path.join(dir, 'htpasswd'), DAV_USER, DAV_PASS], { encoding: 'utf8' });
  if (htpasswd.status !== 0) throw new Error(`htpasswd: ${htpasswd.stderr}`);
  // a free port for Apache: listen on 0 is not possible, so ask the kernel
  const probe = http.createServer();
  const port = await listen(probe);
  await new Promise((r) => probe.close(r));
  const mods = ['mpm_event', 'authn_core', 'authn_file', 'authz_core', 'authz_user', 'auth_basic', 'dav', 'dav_fs'];
  const conf = [
    `ServerRoot ${dir}`,
    `ServerName 127.0.0.1`,
    `Listen 127.0.0.1:${port}`,
    `PidFile ${dir}/httpd.pid`,
    `ErrorLog ${dir}/error.log`,
    `LogLevel warn`,
    ...mods.map((m) => `LoadModule ${m}_module ${MODULES}/mod_${m}.so`),
    `DavLockDB ${dir}/davlock`,
    `DocumentRoot ${root}`,
    `LimitRequestBody 0`,
    `<Directory ${root}>`,
    `  Dav On`,
    `  AuthType Basic`,
    `  AuthName snapsync-test`,
    `  AuthUserFile ${dir}/htpasswd`,
    `  Require valid-user`,
    `</Directory>`,
  ].join('\n');
  writeFileSync(path.join(dir, 'httpd.conf'), conf + '\n');
  const proc = spawn('/usr/sbin/apache2', ['-f', path.join(dir, 'httpd.conf'), '-DFOREGROUND'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  // a loaded machine can take seconds to start it
  for (const deadline = Date.now() + 30000; ;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/`);
      if (r.status === 401) break;
    } catch { /* not yet */ }
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`apache2 did not start: ${stderr} ${(() => { try { return readFileSync(`${dir}/error.log`, 'utf8'); } catch { return ''; } })()}`);
    await sleep(50);
  }
  const proxy = await faultProxy(port, null);
  const auth = 'Basic ' + Buffer.from(`${DAV_USER}:${DAV_PASS}`).toString('base64');
  const pwfile = path.join(dir, 'password');
  writeFileSync(pwfile, DAV_PASS + '\n', { mode: 0o600 });
  return {
    kind: 'dav', dir, root, faults: proxy.faults, pwfile,
    args: (prefix = 'backups/snap') => ['--remote', `webdav+http://${DAV_USER}@127.0.0.1:${proxy.port}/${prefix}`,
      '--remote-credentials-file', pwfile],
    env: {},
    async get(key) {
      const r = await fetch(`http://127.0.0.1:${port}/${key}`, { headers: { authorization: auth } });
      return r.status === 200 ? Buffer.from(await r.arrayBuffer()) : null;
    },
    async put(key, body) {
      const r = await fetch(`http://127.0.0.1:${port}/${key}`, { method: 'PUT', body, headers: { authorization: auth } });
      if (r.status >= 300) throw new Error(`put ${key}: ${r.status}`);
    },
    async keys(prefix = '') {
      const out = [];
      const walk = (d, rel) => {
        for (const e of readdirSyncSafe(d)) {
          const p = path.join(d, e.name);
          if (e.isDirectory()) walk(p, `${rel}${e.name}/`);
          else out.push(`${rel}${e.name}`);
        }
      };
      walk(root, '');
      return out.filter((k) => k.startsWith(prefix)).sort();
    },
    async close() {
      await proxy.close();
      proc.kill('SIGTERM');
      await new Promise((r) => (proc.exitCode !== null ? r() : proc.on('exit', r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

import { readdirSync } from 'node:fs';
function readdirSyncSafe(d) {
  try { return readdirSync(d, { withFileTypes: true }); } catch { return []; }
}

export function sha256(buf) { return createHash('sha256').update(buf).digest('hex'); }
