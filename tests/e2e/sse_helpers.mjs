// sse_helpers.mjs - Server-Sent Events clients for the SSE end-to-end tests
// (SPEC §6 feed=sse / feed=longpoll, §8 /api/v1/events).
//
// Two independent clients, so a bug in one parser cannot hide a server bug:
//   openSSE(port, path, opts)  raw TCP socket: writes the request bytes
//                              itself, parses the status line and headers,
//                              de-chunks by hand, then parses the stream;
//   httpSSE(port, path, opts)  node:http (its own HTTP parser and chunked
//                              decoding), same SSE parser on top.
// Both follow the WHATWG EventSource parsing rules (lines end in CRLF, LF
// or CR; `field: value` with one optional space; `data` lines join with
// \n; a blank line dispatches; comments start with ':'; `id` persists).
// Each event is stamped with process.hrtime (ms) on arrival.
//
// Only Node built-ins are used.

import net from 'node:net';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { api, apiOk } from './helpers.mjs';

export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

/** Incremental text/event-stream parser (WHATWG "interpret an event stream"). */
export class SSEParser {
  constructor({ onEvent = () => {}, onComment = () => {}, onRetry = () => {} } = {}) {
    this.buf = '';
    this.data = [];
    this.hasData = false;
    this.type = '';
    this.lastEventId = '';
    this.idSeen = false;       // an id field was part of the current event
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.onRetry = onRetry;
    this.first = true;         // strip a leading BOM
  }

  push(text) {
    if (this.first && text.length) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      this.first = false;
    }
    this.buf += text;
    let start = 0;
    for (;;) {
      let i = start;
      let eol = -1;
      let next = -1;
      for (; i < this.buf.length; i++) {
        const c = this.buf.charCodeAt(i);
        if (c === 10) { eol = i; next = i + 1; break; }
        if (c === 13) {
          if (i + 1 >= this.buf.length) break;                 // CR at the end: wait (maybe CRLF)
          eol = i; next = this.buf.charCodeAt(i + 1) === 10 ? i + 2 : i + 1; break;
        }
      }
      if (eol < 0) break;
      this.line(this.buf.slice(start, eol));
      start = next;
    }
    this.buf = this.buf.slice(start);
  }

  line(l) {
    if (l === '') { this.dispatch(); return; }
    if (l[0] === ':') { this.onComment(l.slice(1).replace(/^ /, '')); return; }
    const c = l.indexOf(':');
    const field = c < 0 ? l : l.slice(0, c);
    let value = c < 0 ? '' : l.slice(c + 1);
    if (value[0] === ' ') value = value.slice(1);
    switch (field) {
      case 'event': this.type = value; break;
      case 'data': this.data.push(value); this.hasData = true; break;
      case 'id': if (!value.includes('\0')) { this.lastEventId = value; this.idSeen = true; } break;
      case 'retry': if (/^\d+$/.test(value)) this.onRetry(Number(value)); break;
      default: break;                                          // ignored, per spec
    }
  }

  dispatch() {
    const hadId = this.idSeen;
    this.idSeen = false;
    if (!this.hasData) { this.type = ''; return; }
    const data = this.data.join('\n');
    const ev = { event: this.type || 'message', data, id: this.lastEventId, hadId };
    this.data = [];
    this.hasData = false;
    this.type = '';
    this.onEvent(ev);
  }
}

/** What both clients share: events, comments, waiters. */
class Collector {
  constructor() {
    this.events = [];          // {event, data, json, id, hadId, t}
    this.comments = [];        // {text, t}
    this.retries = [];
    this.text = '';            // the decoded body so far (when keepText)
    this.status = null;
    this.headers = null;
    this.closed = false;
    this.closedAt = null;
    this.error = null;
    this.bodyBytes = 0;
    this.keepText = true;
    this.waiters = new Set();
    this.parser = new SSEParser({
      onEvent: (ev) => {
        let json;
        try { json = JSON.parse(ev.data); } catch { json = undefined; }
        this.events.push({ ...ev, json, t: nowMs() });
        if (this.onEventHook) this.onEventHook(ev);
      },
      onComment: (text) => { this.comments.push({ text, t: nowMs() }); },
      onRetry: (ms) => { this.retries.push(ms); },
    });
  }

  poke() { for (const w of [...this.waiters]) w(); }

  body(text) {
    this.bodyBytes += Buffer.byteLength(text);
    if (this.keepText) this.text += text;
    if (this.status === 200) this.parser.push(text);
  }

  markClosed(err) {
    if (err && !this.error) this.error = err;
    if (!this.closed) { this.closed = true; this.closedAt = nowMs(); }
    this.poke();
  }

  /** Resolves with check()'s first non-undefined/false value; rejects after timeoutMs. */
  waitFor(check, timeoutMs = 5000, what = 'condition') {
    return new Promise((resolve, reject) => {
      const attempt = () => {
        let v;
        try { v = check(this); } catch (e) { cleanup(); reject(e); return; }
        if (v !== undefined && v !== false) { cleanup(); resolve(v); }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timeout after ${timeoutMs} ms waiting for ${what}; status ${this.status}, ` +
          `${this.events.length} events, ${this.comments.length} comments, closed=${this.closed}; ` +
          `last events: ${JSON.stringify(this.events.slice(-3).map((e) => [e.id, e.event, e.data.slice(0, 120)]))}; ` +
          `text start: ${JSON.stringify(this.text.slice(0, 300))}`));
      }, timeoutMs);
      const cleanup = () => { clearTimeout(timer); this.waiters.delete(attempt); };
      this.waiters.add(attempt);
      attempt();
    });
  }

  /** Waits for n events (of type `type` when given). Resolves with them. */
  waitEvents(n, { type, timeoutMs = 5000 } = {}) {
    const pick = () => (type ? this.events.filter((e) => e.event === type) : this.events);
    return this.waitFor(() => (pick().length >= n ? pick() : undefined), timeoutMs,
      `${n} ${type || ''} events`);
  }

  waitClosed(timeoutMs = 5000) {
    return this.waitFor(() => (this.closed ? true : undefined), timeoutMs, 'the stream to end');
  }

  ofType(type) { return this.events.filter((e) => e.event === type); }
}

function requestHead(port, path, { token, headers = {}, method = 'GET', httpVersion = '1.1' }) {
  const h = { Host: `127.0.0.1:${port}`, Accept: 'text/event-stream', ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  return `${method} ${path} HTTP/${httpVersion}\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
}

/**
 * Raw-socket SSE client. opts: token, headers, httpVersion ('1.1'), noRead (connect and send the
 * request but never read, until startReading()), keepText (true).
 * Resolves once the response head arrived (or, with noRead, once the
 * request is written). The client: status, headers, events, comments,
 * retries, text, closed, waitFor/waitEvents/waitClosed, close(),
 * startReading(), sock.
 */
export function openSSE(port, path, opts = {}) {
  const c = new Collector();
  c.keepText = opts.keepText ?? true;
  const sock = net.connect({ host: '127.0.0.1', port, allowHalfOpen: false });
  c.sock = sock;
  let raw = Buffer.alloc(0);
  let state = 'head';         // head, chunk-size, chunk-data, chunk-crlf, identity, length, done
  let remaining = 0;
  const decoder = new TextDecoder('utf-8');
  let headResolve;
  let headReject;
  const headP = new Promise((res, rej) => { headResolve = res; headReject = rej; });
  const emit = (b) => { if (b.length) c.body(decoder.decode(b, { stream: true })); };

  const process = () => {
    for (;;) {
      if (state === 'head') {
        const e = raw.indexOf('\r\n\r\n');
        if (e < 0) return;
        const lines = raw.subarray(0, e).toString('latin1').split('\r\n');
        raw = raw.subarray(e + 4);
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
        if (!m) { c.error = new Error(`bad status line ${JSON.stringify(lines[0])}`); sock.destroy(); return; }
        c.status = Number(m[1]);
        c.headers = {};
        for (const l of lines.slice(1)) {
          const i = l.indexOf(':');
          const k = l.slice(0, i).trim().toLowerCase();
          const v = l.slice(i + 1).trim();
          c.headers[k] = k in c.headers ? `${c.headers[k]}, ${v}` : v;
        }
        if (/chunked/i.test(c.headers['transfer-encoding'] || '')) state = 'chunk-size';
        else if (c.headers['content-length'] !== undefined) { state = 'length'; remaining = Number(c.headers['content-length']); }
        else state = 'identity';
        headResolve(c);
        c.poke();
        continue;
      }
      if (state === 'chunk-size') {
        const e = raw.indexOf('\r\n');
        if (e < 0) return;
        const size = parseInt(raw.subarray(0, e).toString('latin1').split(';')[0], 16);
        raw = raw.subarray(e + 2);
        if (Number.isNaN(size)) { c.error = new Error('bad chunk size'); sock.destroy(); return; }
        if (size === 0) { state = 'done'; c.streamEnded = true; c.poke(); return; }
        remaining = size;
        state = 'chunk-data';
        continue;
      }
      if (state === 'chunk-data') {
        if (!raw.length) return;
        const n = Math.min(remaining, raw.length);
        emit(raw.subarray(0, n));
        raw = raw.subarray(n);
        remaining -= n;
        if (remaining === 0) state = 'chunk-crlf';
        c.poke();
        continue;
      }
      if (state === 'chunk-crlf') {
        if (raw.length < 2) return;
        if (raw[0] !== 13 || raw[1] !== 10) { c.error = new Error('missing CRLF after chunk'); sock.destroy(); return; }
        raw = raw.subarray(2);
        state = 'chunk-size';
        continue;
      }
      if (state === 'length') {
        const n = Math.min(remaining, raw.length);
        emit(raw.subarray(0, n));
        raw = raw.subarray(n);
        remaining -= n;
        if (remaining === 0) { state = 'done'; c.poke(); }
        return;
      }
      if (state === 'identity') { emit(raw); raw = Buffer.alloc(0); c.poke(); return; }
      return;
    }
  };

  const onData = (d) => { raw = raw.length ? Buffer.concat([raw, d]) : d; process(); };
  c.startReading = () => { sock.on('data', onData); sock.resume(); };
  sock.on('connect', () => {
    sock.write(requestHead(port, path, opts));
    if (opts.noRead) headResolve(c);
  });
  if (!opts.noRead) c.startReading();
  sock.on('end', () => c.markClosed());
  sock.on('close', () => { c.markClosed(); headReject(new Error(`connection closed before a response head; got ${JSON.stringify(raw.toString('latin1').slice(0, 300))}`)); });
  sock.on('error', (e) => { c.markClosed(e); if (e.code === 'ECONNREFUSED') headReject(e); });
  c.close = () => { sock.destroy(); };
  c.json = () => { try { return JSON.parse(c.text); } catch { return undefined; } };
  const timer = setTimeout(() => headReject(new Error(`no response head within ${opts.timeoutMs ?? 5000} ms for ${path}`)), opts.timeoutMs ?? 5000);
  return headP.finally(() => clearTimeout(timer));
}

/** node:http SSE client; same interface as openSSE (no noRead). */
export function httpSSE(port, path, opts = {}) {
  const c = new Collector();
  c.keepText = opts.keepText ?? true;
  const headers = { Accept: 'text/event-stream', ...(opts.headers || {}) };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      c.status = res.statusCode;
      c.headers = res.headers;
      res.setEncoding('utf8');
      res.on('data', (d) => { c.body(d); c.poke(); });
      res.on('end', () => { c.streamEnded = true; c.markClosed(); });
      res.on('error', (e) => c.markClosed(e));
      res.on('close', () => c.markClosed());
      resolve(c);
    });
    const timer = setTimeout(() => { req.destroy(new Error(`no response head within 5000 ms for ${path}`)); }, opts.timeoutMs ?? 5000);
    req.on('response', () => clearTimeout(timer));
    req.on('error', (e) => { clearTimeout(timer); c.markClosed(e); reject(e); });
    req.on('close', () => c.markClosed());
    c.close = () => { req.destroy(); };
    c.req = req;
    c.json = () => { try { return JSON.parse(c.text); } catch { return undefined; } };
    req.end();
  });
}

// ---------------------------------------------------------------------------
// writes

/** PUT one entity (as admin unless token); returns the entity. */
export function putEntity(srv, space, collection, id, body = {}, { token } = {}) {
  return apiOk(srv, 'PUT', `/api/v1/spaces/${space}/collections/${collection}/entities/${encodeURIComponent(id)}`,
    token ? { body, token } : { body });
}

/**
 * Pushes n new entities through POST /changes in batches (≤ 1000 per push).
 * makeId(i) names them; bodyOf(i) gives their body. Returns the versions,
 * ascending.
 */
export async function pushMany(srv, space, n, { collection = 'c', makeId = (i) => `e${i}`, bodyOf = () => ({}), batch = 1000, token } = {}) {
  const versions = [];
  for (let off = 0; off < n; off += batch) {
    const changes = [];
    for (let i = off; i < Math.min(n, off + batch); i++) {
      changes.push({ collection, id: makeId(i), base_rev: null, deleted: false, body: bodyOf(i) });
    }
    const r = await api(srv, 'POST', `/api/v1/spaces/${space}/changes`, { body: { changes }, timeoutMs: 60000, ...(token ? { token } : {}) });
    if (r.status !== 200) throw new Error(`POST /changes -> ${r.status}: ${r.text.slice(0, 400)}`);
    for (const x of r.body.results) {
      if (x.status !== 'applied') throw new Error(`push result ${JSON.stringify(x)}`);
      versions.push(x.version);
    }
  }
  return versions;
}

/** VmRSS of a process in KiB (null off Linux). */
export function vmRssKiB(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)/m.exec(s);
    return m ? Number(m[1]) : null;
  } catch { return null; }
}

/** The change events' data objects. */
export const changeData = (client) => client.ofType('change').map((e) => e.json);
