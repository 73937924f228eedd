// snapsync.js - the snapsync JavaScript client (SPEC §13). One ES module, no
// dependencies, no build step: browsers (it is also served by the server at
// /sdk/snapsync.js) and Node >= 18. See README.md beside it.
//
//   import { snapsync } from './snapsync.js';
//   const db = snapsync({ url: 'http://127.0.0.1:7420', token });
//   const issues = db.space('demo').collection('issues');
//   const replica = db.space('demo').replica({ persist: 'indexeddb' });
//
// Parts, top to bottom: errors; byte/line/SSE parsers; the HTTP client;
// live streams (SSE over fetch or EventSource); space, collection,
// snapshots, sync, conflicts; the replica (bootstrap, feed, offline queue)
// and its stores (memory, IndexedDB).

export const VERSION = '0.1.0';
const API = '/api/v1';

// ---------------------------------------------------------------------------
// errors

/** Every failure the client reports: the server's `error` code and
 *  `message`, the HTTP status (0 when no answer came), and the answer's
 *  other members in `details` (`current_rev`, `missing`, ...). */
export class SnapsyncError extends Error {
  constructor(code, message, status = 0, details = {}) {
    super(message || code);
    this.name = 'SnapsyncError';
    this.code = code;
    this.status = status;
    this.details = details || {};
  }
}

const STATUS_CODES = {
  400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 405: 'method_not_allowed',
  408: 'timeout', 409: 'conflict', 411: 'length_required', 412: 'precondition_failed', 413: 'too_large',
  422: 'unprocessable', 429: 'rate_limited', 431: 'headers_too_large', 502: 'bad_gateway',
  503: 'unavailable', 504: 'gateway_timeout',
};

/** An error answer (status and body text) as a SnapsyncError. The server's
 *  `{"error","message",...}` is taken as it is; anything else (a proxy's
 *  HTML page, an empty body) gets a code from the status. */
export function mapError(status, text, retryAfter) {
  let body = null;
  if (text) {
    try { body = JSON.parse(text); } catch { body = null; }
  }
  let err;
  if (body && typeof body === 'object' && typeof body.error === 'string') {
    const { error, message, ...details } = body;
    err = new SnapsyncError(error, typeof message === 'string' && message ? message : error, status, details);
  } else {
    const code = STATUS_CODES[status] || (status >= 500 ? 'server_error' : 'http_error');
    const snippet = text ? `: ${String(text).replace(/\s+/g, ' ').slice(0, 200)}` : '';
    err = new SnapsyncError(code, `the server answered ${status}${snippet}`, status, {});
  }
  if (retryAfter != null && retryAfter !== '') err.details.retry_after = Number(retryAfter);
  return err;
}

function networkError(e) {
  return new SnapsyncError('network_error', `could not reach the server (${e && e.message ? e.message : e})`, 0, { cause: e });
}

function isAbort(e) {
  return e && (e.name === 'AbortError' || e.code === 'aborted');
}

/** Errors worth retrying later: no answer, 5xx, 408, 429. */
export function isTransient(err) {
  if (!(err instanceof SnapsyncError)) return true;
  return err.status === 0 || err.status >= 500 || err.status === 408 || err.status === 429;
}

// ---------------------------------------------------------------------------
// parsers (no I/O: unit-tested in test/)

/** Splits a byte stream into lines (UTF-8, `\n`, a `\r` before it dropped),
 *  a chunk at a time: push() returns the complete lines, end() the last
 *  unterminated one. Only one partial line is held. */
export class LineSplitter {
  constructor() {
    this.dec = new TextDecoder('utf-8', { fatal: false });
    this.rest = '';
  }

  push(chunk) {
    const text = this.rest + (typeof chunk === 'string' ? chunk : this.dec.decode(chunk, { stream: true }));
    const parts = text.split('\n');
    this.rest = parts.pop();
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (p.length && p.charCodeAt(p.length - 1) === 13) parts[i] = p.slice(0, -1);
    }
    return parts;
  }

  end() {
    const text = this.rest + this.dec.decode();
    this.rest = '';
    return text.length ? [text.endsWith('\r') ? text.slice(0, -1) : text] : [];
  }
}

const FORMAT_RE = /^snapsync\.snapshot\.v(\d+)$/;

/** Line 1 of a snapshot file. Any `snapsync.snapshot.vN` is taken (v1 today,
 *  v2 with revs and conflicts); members the client does not know are kept
 *  and ignored. Throws SnapsyncError invalid_snapshot. */
export function parseSnapshotHeader(line) {
  let h;
  try { h = JSON.parse(line); } catch (e) {
    throw new SnapsyncError('invalid_snapshot', `snapshot line 1 is not JSON (${e.message})`);
  }
  const m = h && typeof h === 'object' && typeof h.format === 'string' ? FORMAT_RE.exec(h.format) : null;
  if (!m) throw new SnapsyncError('invalid_snapshot', 'snapshot line 1 is not a snapsync snapshot header');
  if (typeof h.server_version !== 'number') {
    throw new SnapsyncError('invalid_snapshot', 'the snapshot header has no server_version');
  }
  h.formatVersion = Number(m[1]);
  return h;
}

/** One entity line of a snapshot (v1 or v2). Returns the entity in the API's
 *  shape; a v2 line's `revs` and `conflicts` come along when present (an
 *  empty `conflicts` is dropped). Members the client does not know are left
 *  as they are and ignored. */
export function parseSnapshotEntity(line, lineNo = 0) {
  let e;
  try { e = JSON.parse(line); } catch (err) {
    throw new SnapsyncError('invalid_snapshot', `snapshot line ${lineNo}: not JSON (${err.message})`);
  }
  return snapshotEntity(e, lineNo);
}

/** Checks and normalises a parsed entity line in place (no copy: a
 *  100,000-line bootstrap makes no second object per line). */
function snapshotEntity(e, lineNo) {
  if (!e || typeof e !== 'object' || typeof e.collection !== 'string' || typeof e.id !== 'string' ||
      typeof e.rev !== 'string') {
    throw new SnapsyncError('invalid_snapshot', `snapshot line ${lineNo}: not an entity`);
  }
  if (typeof e.version !== 'number') e.version = 0;
  if (e.created_at === undefined) e.created_at = null;
  if (e.updated_at === undefined) e.updated_at = null;
  e.deleted = e.deleted === true;
  if (e.deleted || e.body === undefined) e.body = null;
  if (e.revs !== undefined && !Array.isArray(e.revs)) delete e.revs;
  if (e.conflicts !== undefined && !(Array.isArray(e.conflicts) && e.conflicts.length)) delete e.conflicts;
  return e;
}

/** The entity lines of one chunk, parsed with one JSON.parse (much faster
 *  than one call per line); a chunk with a bad line is parsed line by line
 *  to name it. */
export function parseSnapshotEntities(lines, firstLineNo = 0) {
  let arr = null;
  try { arr = JSON.parse(`[${lines.join(',')}]`); } catch { arr = null; }
  if (!arr || arr.length !== lines.length) return lines.map((l, i) => parseSnapshotEntity(l, firstLineNo + i));
  for (let i = 0; i < arr.length; i++) snapshotEntity(arr[i], firstLineNo + i);
  return arr;
}

// The start of an entity line exactly as snapsync writes it (docs/
// snapshot-format.md: members in this order, no spaces, `body` last): a
// live entity whose collection and id need no unescaping. Such a line can
// be kept as text and parsed when it is first read.
const LAZY_LINE_RE = /^\{"collection":"([^"\\]+)","id":"([^"\\]+)","rev":"[^"\\]*","version":\d+,"created_at":(?:"[^"\\]*"|null),"updated_at":(?:"[^"\\]*"|null),"deleted":false,"/;

/** The collection and id of a snapshot entity line in snapsync's own
 *  spelling (see LAZY_LINE_RE): `{collection, id, line}`, the rest of the
 *  line left unparsed; null for any other line (parse it whole). */
export function snapshotLineKey(line) {
  const m = LAZY_LINE_RE.exec(line);
  if (!m || line.charCodeAt(line.length - 1) !== 125) return null;       // '}'
  return { collection: m[1], id: m[2], line };
}

/** Server-Sent Events parser (the WHATWG rules: `event`, `data` lines
 *  joined by `\n`, `id` kept across events, `retry`, `:` comments, CR, LF or
 *  CRLF). feed(text) calls onEvent({type, data, id}) per dispatched event. */
export class SSEParser {
  constructor(onEvent, onRetry) {
    this.onEvent = onEvent;
    this.onRetry = onRetry || null;
    this.buf = '';
    this.type = '';
    this.data = [];
    this.hasData = false;
    this.lastEventId = '';
  }

  feed(text) {
    let buf = this.buf + text;
    let start = 0;
    const n = buf.length;
    for (;;) {
      let i = start;
      // find the next CR or LF
      while (i < n) {
        const c = buf.charCodeAt(i);
        if (c === 10 || c === 13) break;
        i++;
      }
      if (i >= n) break;
      if (buf.charCodeAt(i) === 13 && i + 1 >= n) break;   // a CR at the end: its LF may follow
      this.line(buf.slice(start, i));
      start = buf.charCodeAt(i) === 13 && buf.charCodeAt(i + 1) === 10 ? i + 2 : i + 1;
    }
    this.buf = start ? buf.slice(start) : buf;
  }

  line(l) {
    if (l === '') {
      if (this.hasData) {
        const ev = { type: this.type || 'message', data: this.data.join('\n'), id: this.lastEventId };
        this.type = '';
        this.data = [];
        this.hasData = false;
        this.onEvent(ev);
      } else {
        this.type = '';
      }
      return;
    }
    if (l.charCodeAt(0) === 58) return;                      // ':' comment
    const c = l.indexOf(':');
    let field = l;
    let value = '';
    if (c >= 0) {
      field = l.slice(0, c);
      value = l.charCodeAt(c + 1) === 32 ? l.slice(c + 2) : l.slice(c + 1);
    }
    if (field === 'data') {
      this.data.push(value);
      this.hasData = true;
    } else if (field === 'event') {
      this.type = value;
    } else if (field === 'id') {
      if (!value.includes('\0')) this.lastEventId = value;
    } else if (field === 'retry') {
      if (/^\d+$/.test(value) && this.onRetry) this.onRetry(Number(value));
    }
  }
}

/** The order in which queued edits are pushed: oldest first, at most one
 *  edit per entity in a batch (a second edit of the same entity needs the
 *  first one's result for its base rev), stopping at the first repeat so
 *  edits never overtake each other. */
export function nextBatch(queue, max = 500) {
  const seen = new Set();
  const out = [];
  for (const e of queue) {
    const k = key(e.collection, e.id);
    if (seen.has(k) || out.length >= max) break;
    seen.add(k);
    out.push(e);
  }
  return out;
}

/** The base rev the edit that follows `edit` (same entity) is pushed with,
 *  once `edit` settled with `result`: the rev it made when it applied,
 *  otherwise the rev it was pushed against, so the follower is kept as a
 *  conflict too instead of overwriting what the server kept. */
export function followerBase(edit, result) {
  return result && result.status === 'applied' ? result.rev : edit.base_rev;
}

function key(collection, id) {
  return collection + '\u0000' + id;
}

// ---------------------------------------------------------------------------
// small tools

function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal && signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      if (signal) signal.removeEventListener('abort', done);
      resolve();
    }
    if (signal) signal.addEventListener('abort', done, { once: true });
  });
}

class Emitter {
  constructor() { this.handlers = new Map(); }
  on(type, fn) {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }
  off(type, fn) { const s = this.handlers.get(type); if (s) s.delete(fn); }
  emit(type, arg) {
    const set = this.handlers.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(arg); } catch (e) { setTimeout(() => { throw e; }); }
    }
  }
}

function qs(params) {
  const parts = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(Array.isArray(v) ? v.join(',') : String(v))}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

/** The chunks of a response body, inflated through DecompressionStream
 *  when they still are gzip (fetch already undoes `Content-Encoding: gzip`;
 *  a file served as it is stored, or by a proxy that keeps the coding,
 *  starts with the gzip magic 1f 8b and is inflated here). */
async function* bodyChunks(body, { inflate = true } = {}) {
  const reader = body.getReader();
  const first = await reader.read();
  if (first.done) return;
  if (!(inflate && first.value[0] === 0x1f && (first.value.length < 2 || first.value[1] === 0x8b))) {
    try {
      yield first.value;
      for (;;) {
        const r = await reader.read();
        if (r.done) return;
        yield r.value;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }
  if (typeof DecompressionStream !== 'function') {
    throw new SnapsyncError('unsupported', 'this runtime has no DecompressionStream to read a gzip snapshot');
  }
  const raw = new ReadableStream({
    start(c) { c.enqueue(first.value); },
    async pull(c) {
      const r = await reader.read();
      if (r.done) c.close(); else c.enqueue(r.value);
    },
    cancel(reason) { return reader.cancel(reason); },
  });
  const inflated = raw.pipeThrough(new DecompressionStream('gzip')).getReader();
  try {
    for (;;) {
      const r = await inflated.read();
      if (r.done) return;
      yield r.value;
    }
  } finally {
    inflated.cancel().catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// the client

/** `snapsync({url, token})`: url is the server's base (`http://host:7420`,
 *  or '' for the page's own origin); token an API token (`sst_...`). Options:
 *  `fetch` (a fetch to use), `transport` ('fetch', the default everywhere,
 *  or 'eventsource' in a browser: SSE through EventSource with
 *  ?access_token=). */
export function snapsync(opts = {}) {
  return new Client(opts);
}

export class Client {
  constructor({ url = '', token = null, fetch: f, transport = 'fetch', headers = {} } = {}) {
    this.url = String(url).replace(/\/+$/, '').replace(/\/api\/v1$/, '');
    this.token = token;
    this.transport = transport;
    this.extraHeaders = headers;
    const g = typeof globalThis !== 'undefined' ? globalThis : {};
    this._fetch = f || (g.fetch ? g.fetch.bind(g) : null);
    if (!this._fetch) throw new SnapsyncError('unsupported', 'no fetch in this runtime: pass {fetch}');
    this._spaces = new Map();
  }

  /** Any API call: `path` from `/api/v1` on (`/spaces/a/...`) or absolute
   *  (`/healthz`). Resolves {status, data, headers}; throws SnapsyncError. */
  async requestFull(method, path, { body, headers = {}, query, signal, raw = false } = {}) {
    const url = this.url + (path.startsWith('/api/') || path === '/healthz' || path === '/metrics' ? path : API + path) +
      (query ? qs(query) : '');
    const hd = { Accept: 'application/json', ...this.extraHeaders, ...headers };
    if (this.token) hd.Authorization = `Bearer ${this.token}`;
    let payload;
    if (body !== undefined) {
      payload = typeof body === 'string' ? body : JSON.stringify(body);
      hd['Content-Type'] = 'application/json';
    }
    let res;
    try {
      res = await this._fetch(url, { method, headers: hd, body: payload, signal, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      if (isAbort(e)) throw e;
      throw networkError(e);
    }
    if (raw && res.ok) return { status: res.status, data: null, headers: res.headers, response: res };
    let text;
    try { text = await res.text(); } catch (e) {
      if (isAbort(e)) throw e;
      throw networkError(e);
    }
    if (!res.ok) throw mapError(res.status, text, res.headers.get('Retry-After'));
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch {
        throw new SnapsyncError('invalid_response', `the server's answer is not JSON: ${text.slice(0, 100)}`, res.status);
      }
    }
    return { status: res.status, data, headers: res.headers };
  }

  /** The same, resolving the parsed body. */
  async request(method, path, opts) {
    return (await this.requestFull(method, path, opts)).data;
  }

  status() { return this.request('GET', '/status'); }

  space(name) {
    let s = this._spaces.get(name);
    if (!s) this._spaces.set(name, (s = new Space(this, name)));
    return s;
  }

  /** `for await (const ev of db.events({topics: ['snapshot'], spaces}))`:
   *  the server's event stream, {id, type, data}; resumes with
   *  Last-Event-ID after a drop (a `reset` event says events were lost).
   *  `it.opened` resolves once the stream is open; `it.close()` ends it;
   *  onState('connecting'|'open'|'retrying'|'closed') follows the
   *  connection. */
  events({ topics, spaces, lastEventId, signal, onState } = {}) {
    const path = `${API}/events${qs({ topics, spaces })}`;
    return new EventIterator(this, path, { lastEventId, signal, onState });
  }

  /** Opens an SSE stream once: resolves when it ends (cleanly or not);
   *  throws SnapsyncError when it is refused. */
  async _sse(path, { lastEventId, signal, onOpen, onEvents, onRetry }) {
    if (this.transport === 'eventsource' && typeof EventSource === 'function') {
      return this._sseEventSource(path, { lastEventId, signal, onOpen, onEvents });
    }
    const hd = { Accept: 'text/event-stream', ...this.extraHeaders };
    if (this.token) hd.Authorization = `Bearer ${this.token}`;
    if (lastEventId) hd['Last-Event-ID'] = String(lastEventId);
    let res;
    try {
      res = await this._fetch(this.url + path, { headers: hd, signal, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      if (isAbort(e)) return 'aborted';
      throw networkError(e);
    }
    if (!res.ok) throw mapError(res.status, await res.text().catch(() => ''), res.headers.get('Retry-After'));
    if (onOpen) onOpen(res);
    let batch = [];
    const parser = new SSEParser((ev) => batch.push(ev), onRetry);
    const dec = new TextDecoder();
    try {
      for await (const chunk of bodyChunks(res.body, { inflate: false })) {
        parser.feed(dec.decode(chunk, { stream: true }));
        if (batch.length) {
          const b = batch;
          batch = [];
          const stop = onEvents(b);
          if (stop) return stop;
        }
      }
    } catch (e) {
      if (isAbort(e) || (signal && signal.aborted)) return 'aborted';
      return 'dropped';
    }
    return 'ended';
  }

  _sseEventSource(path, { lastEventId, signal, onOpen, onEvents }) {
    return new Promise((resolve) => {
      const sep = path.includes('?') ? '&' : '?';
      let url = this.url + path + sep + `access_token=${encodeURIComponent(this.token || '')}`;
      if (lastEventId) url += `&last_event_id=${encodeURIComponent(lastEventId)}`;
      const es = new EventSource(url);
      let opened = false;
      const finish = (why) => { es.close(); resolve(why); };
      if (signal) signal.addEventListener('abort', () => finish('aborted'), { once: true });
      es.onopen = () => {
        if (!opened && onOpen) onOpen(null);
        opened = true;
      };
      // EventSource hides the status of a refused stream: ask once, to
      // report the server's own error instead of looping
      es.onerror = () => {
        es.close();
        if (opened) return resolve('dropped');
        this.request('GET', path.replace(/\?.*$/, '') === `${API}/events` ? '/status' : path.replace(/\/changes.*$/, '/sync/status'))
          .then(() => resolve('dropped'), (err) => resolve(Promise.reject(err)));
      };
      for (const t of ['change', 'snapshot', 'sync', 'reset', 'shutdown', 'overflow']) {
        es.addEventListener(t, (e) => {
          const stop = onEvents([{ type: t, data: e.data, id: e.lastEventId }]);
          if (stop) finish(stop);
        });
      }
    });
  }
}

/** A reconnecting event stream as an async iterator. */
class EventIterator {
  constructor(client, path, { lastEventId, signal, onState }) {
    this.client = client;
    this.onState = onState || (() => {});
    this.path = path;
    this.lastEventId = lastEventId || null;
    this.queue = [];
    this.waiter = null;
    this.error = null;
    this.done = false;
    this.ctl = new AbortController();
    if (signal) signal.addEventListener('abort', () => this.close(), { once: true });
    let openResolve;
    let openReject;
    this.opened = new Promise((res, rej) => { openResolve = res; openReject = rej; });
    this.opened.catch(() => {});
    this._openResolve = openResolve;
    this._openReject = openReject;
    Promise.resolve().then(() => this._run());    // after the caller has the iterator
  }

  async _run() {
    let delay = 250;
    this.onState('connecting');
    while (!this.done) {
      try {
        const why = await this.client._sse(this.path, {
          lastEventId: this.lastEventId,
          signal: this.ctl.signal,
          onOpen: () => { delay = 250; this._openResolve(); this.onState('open'); },
          onEvents: (evs) => {
            for (const ev of evs) {
              if (ev.id) this.lastEventId = ev.id;
              let data = null;
              try { data = ev.data ? JSON.parse(ev.data) : null; } catch { data = ev.data; }
              this._push({ id: ev.id, type: ev.type, data });
            }
            return null;
          },
        });
        if (why === 'aborted') break;
      } catch (e) {
        if (!isTransient(e)) {
          this._openReject(e);
          this.error = e;
          this.done = true;
          this.onState('closed');
          this._wake();
          return;
        }
      }
      if (this.done) break;
      this.onState('retrying');
      await sleep(delay, this.ctl.signal);
      delay = Math.min(delay * 2, 5000);
    }
  }

  _push(ev) {
    this.queue.push(ev);
    this._wake();
  }

  _wake() {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w();
    }
  }

  async next() {
    for (;;) {
      if (this.queue.length) return { value: this.queue.shift(), done: false };
      if (this.error) {
        const e = this.error;
        this.error = null;
        throw e;
      }
      if (this.done) return { value: undefined, done: true };
      await new Promise((r) => { this.waiter = r; });
    }
  }

  async return() {
    this.close();
    return { value: undefined, done: true };
  }

  close() {
    if (!this.done) this.onState('closed');
    this.done = true;
    this.ctl.abort();
    this._wake();
  }

  [Symbol.asyncIterator]() { return this; }
}

// ---------------------------------------------------------------------------
// spaces, collections, snapshots, sync, conflicts

export class Space extends Emitter {
  constructor(client, name) {
    super();
    this.client = client;
    this.name = name;
    this.path = `/spaces/${encodeURIComponent(name)}`;
    this.snapshots = new Snapshots(this);
  }

  collection(name) { return new Collection(this, name); }
  info() { return this.client.request('GET', this.path); }
  syncStatus(opts = {}) { return this.client.request('GET', `${this.path}/sync/status`, opts); }

  /** One page of the change feed: {changes, last_version, more}. */
  changes({ since = 0, limit, collections, bodies } = {}, opts = {}) {
    return this.client.request('GET', `${this.path}/changes`, { query: { since, limit, collections, bodies }, ...opts });
  }

  /** POST /changes: [{collection, id, base_rev, deleted, body}] -> {results, server_version}. */
  push(changes, opts = {}) {
    return this.client.request('POST', `${this.path}/changes`, { body: { changes }, ...opts });
  }

  /** Every pending conflict of the space (or of one collection) as a
   *  Conflict: both bodies, and resolve(). With {limit} one page only (the
   *  array's nextCursor is the next page's {cursor}, null at the end). */
  async conflicts({ collection, limit, cursor } = {}) {
    const raw = [];
    let next = null;
    for (;;) {
      const r = await this.client.requestFull('GET', `${this.path}/conflicts`, { query: { limit: limit || 1000, cursor } });
      const page = r.data;
      raw.push(...page);
      // X-Next-Cursor, or (a cross-origin page cannot read that header) the
      // last id of a full page: the list rule of docs/api.md
      next = r.headers.get('X-Next-Cursor') || (page.length === (limit || 1000) ? page[page.length - 1].id : null);
      if (limit || !next) break;
      cursor = next;
    }
    const list = collection ? raw.filter((c) => c.collection === collection) : raw;
    const current = new Map();
    const wanted = [...new Set(list.map((c) => key(c.collection, c.entity_id)))];
    for (let i = 0; i < wanted.length; i += 8) {
      await Promise.all(wanted.slice(i, i + 8).map(async (k) => {
        const [c, id] = k.split('\u0000');
        current.set(k, await this.collection(c).get(id, { includeDeleted: true }));
      }));
    }
    const out = list.map((c) => new Conflict(this, c, current.get(key(c.collection, c.entity_id))));
    out.nextCursor = limit ? next : null;
    return out;
  }

  /** Takes a space's peer sync: POST /sync, progress from the `sync`
   *  events (onProgress({phase, percent, pulled, pushed, conflicts,
   *  status})), resolves with the finished job (status `completed` or
   *  `partial`); a `failed` job throws SnapsyncError sync_failed. */
  async sync({ onProgress, signal, ...body } = {}) {
    const done = (j) => j && j.status && j.status !== 'running';
    return this._track({
      topic: 'sync',
      idOf: (d) => d.job,
      start: () => this.client.request('POST', `${this.path}/sync`, { body: { ...body, wait: undefined } }),
      get: (id) => this.client.request('GET', `${this.path}/sync/jobs/${id}`),
      isDone: done,
      progress: (d) => ({ ...d, fraction: typeof d.percent === 'number' ? d.percent / 100 : null }),
      finish: (job) => {
        if (job.status === 'failed') throw new SnapsyncError('sync_failed', job.error || 'the sync failed', 0, { job });
        return job;
      },
      onProgress,
      signal,
    });
  }

  /** Shared by snapshots.take and sync: the event stream is opened first
   *  (so no progress event is missed), then the job is started; the job's
   *  row is polled too in case events are dropped. */
  async _track({ topic, idOf, start, get, isDone, progress, finish, onProgress, signal }) {
    const events = this.client.events({ topics: [topic], spaces: [this.name], signal });
    let id = null;
    const early = [];
    let finalDone;
    const final = new Promise((r) => { finalDone = r; });
    const report = (d) => {
      if (onProgress) {
        try { onProgress(progress(d)); } catch (e) { setTimeout(() => { throw e; }); }
      }
      if (d.status && d.status !== 'running') finalDone();
    };
    try {
      const opened = new AbortController();
      await Promise.race([events.opened.catch(() => {}), sleep(3000, opened.signal)]);
      opened.abort();
      (async () => {
        try {
          for await (const ev of events) {
            if (ev.type !== topic || !ev.data) continue;
            if (id === null) early.push(ev.data);
            else if (idOf(ev.data) === id) report(ev.data);
          }
        } catch { /* polling covers it */ }
      })();
      const first = await start();
      id = first.id;
      if (onProgress) report({ ...first, [topic === 'sync' ? 'job' : 'snapshot']: first.id });
      for (const d of early.splice(0)) if (idOf(d) === id) report(d);
      let meta = first;
      let wait = 250;
      while (!isDone(meta)) {
        if (signal && signal.aborted) throw new SnapsyncError('aborted', 'aborted');
        const t = new AbortController();
        await Promise.race([final, sleep(wait, t.signal)]);
        t.abort();
        wait = Math.min(wait * 2, 2000);
        meta = await get(id);
      }
      return finish(meta);
    } finally {
      events.close();
    }
  }

  /** A live local copy of the space: see Replica. */
  replica(opts = {}) {
    return new Replica(this, opts);
  }
}

export class Conflict {
  constructor(space, raw, current) {
    this.space = space;
    this.raw = raw;
    this.id = raw.id;
    this.collection = raw.collection;
    this.entityId = raw.entity_id;
    this.currentRev = raw.current_rev;
    this.conflictingRev = raw.conflicting_rev ?? null;
    /** the body the server kept as the entity (strategy local_wins keeps it) */
    this.current = current ? current.body : null;
    this.currentEntity = current || null;
    this.currentDeleted = current ? !!current.deleted : true;
    /** the body that lost (strategy remote_wins writes it) */
    this.conflicting = raw.conflicting_body ?? null;
    this.conflictingDeleted = !!raw.deleted;
    this.origin = raw.origin ?? null;
    this.detectedAt = raw.detected_at ?? null;
  }

  /** 'local_wins' (keep the current body), 'remote_wins' (take the
   *  conflicting one), 'keep_both' (the conflicting body becomes
   *  `{id}~conflict-{n}`) or {merge: body}. Resolves the server's answer
   *  {resolved, strategy, entity}. */
  async resolve(choice) {
    let body;
    if (choice && typeof choice === 'object') {
      if (!('merge' in choice)) throw new SnapsyncError('invalid_argument', 'resolve takes a strategy or {merge: body}');
      body = { strategy: 'merge', body: choice.merge };
    } else {
      body = { strategy: choice };
    }
    const r = await this.space.client.request('POST',
      `${this.space.path}/conflicts/${encodeURIComponent(this.id)}/resolve`, { body });
    this.space.emit('resolved', { conflict: this, result: r });
    return r;
  }
}

export class Collection {
  constructor(space, name) {
    this.space = space;
    this.name = name;
    this.revs = new Map();     // id -> the rev last seen here (put's If-Match)
  }

  _path(id) {
    return `${this.space.path}/collections/${encodeURIComponent(this.name)}/entities${id === undefined ? '' : `/${encodeURIComponent(id)}`}`;
  }

  _seen(e) {
    if (e && e.id) {
      if (e.deleted) this.revs.delete(e.id); else this.revs.set(e.id, e.rev);
    }
    return e;
  }

  /** The entity, or null when there is none (or it is deleted, unless
   *  includeDeleted). */
  async get(id, { includeDeleted = false, signal } = {}) {
    try {
      return this._seen(await this.space.client.request('GET', this._path(id),
        { query: includeDeleted ? { include_deleted: 1 } : undefined, signal }));
    } catch (e) {
      if (e instanceof SnapsyncError && e.status === 404 && e.code === 'not_found') return null;
      throw e;
    }
  }

  /** Writes the body. Optimistic: with the rev this collection object last
   *  saw for the id (get, put, list) or {rev}, the write carries If-Match
   *  and a change made meanwhile elsewhere is refused with a SnapsyncError
   *  `conflict` (details.current_rev). {rev: null} creates only
   *  (If-None-Match: *); {rev: false} writes whatever is there. */
  async put(id, body, { rev, signal } = {}) {
    const headers = {};
    const r = rev === undefined ? this.revs.get(id) : rev;
    if (r === null) headers['If-None-Match'] = '*';
    else if (r) headers['If-Match'] = `"${r}"`;
    return this._seen(await this.space.client.request('PUT', this._path(id), { body, headers, signal }));
  }

  /** Deletes (a tombstone; If-Match like put). Resolves the tombstone. */
  async delete(id, { rev, signal } = {}) {
    const headers = {};
    const r = rev === undefined ? this.revs.get(id) : rev;
    if (r) headers['If-Match'] = `"${r}"`;
    return this._seen(await this.space.client.request('DELETE', this._path(id), { headers, signal }));
  }

  /** `for await (const page of issues.list({limit: 500}))`: the live
   *  entities by id, a page (an array) at a time. */
  async *list({ limit = 100, cursor, signal } = {}) {
    for (;;) {
      const d = await this.space.client.request('GET', this._path(), { query: { limit, cursor }, signal });
      for (const e of d.entities) this._seen(e);
      d.entities.nextCursor = d.next_cursor;
      if (d.entities.length) yield d.entities;
      if (!d.next_cursor) return;
      cursor = d.next_cursor;
    }
  }
}

export class Snapshots {
  constructor(space) {
    this.space = space;
    this.client = space.client;
  }

  /** `for await (const page of space.snapshots.list({status: 'completed'}))`,
   *  newest first, a page at a time. */
  async *list({ kind, status, integrity, limit = 100, cursor, signal } = {}) {
    for (;;) {
      const d = await this.client.request('GET', `${this.space.path}/snapshots`,
        { query: { kind, status, integrity, limit, cursor }, signal });
      d.snapshots.nextCursor = d.next_cursor;
      if (d.snapshots.length || !cursor) yield d.snapshots;
      if (!d.next_cursor) return;
      cursor = d.next_cursor;
    }
  }

  get(id) { return this.client.request('GET', `${this.space.path}/snapshots/${id}`); }
  preview(id) { return this.client.request('GET', `${this.space.path}/snapshots/${id}/preview`); }
  delete(id) { return this.client.request('DELETE', `${this.space.path}/snapshots/${id}`); }
  verify(id) { return this.client.request('POST', `${this.space.path}/snapshots/${id}/verify`); }
  restore(id, { dryRun = false, confirm = id } = {}) {
    return this.client.request('POST', `${this.space.path}/snapshots/${id}/restore`,
      { body: dryRun ? { confirm, dry_run: true } : { confirm } });
  }

  /** The newest completed snapshot that is not marked corrupt, or null. */
  async newest() {
    const d = await this.client.request('GET', `${this.space.path}/snapshots`, { query: { status: 'completed', limit: 10 } });
    return d.snapshots.find((s) => s.integrity !== 'corrupt') || null;
  }

  /** The download's Response (the body is the NDJSON once fetch has undone
   *  the gzip coding). */
  async download(id, { signal } = {}) {
    return (await this.client.requestFull('GET', `${this.space.path}/snapshots/${id}/download`,
      { raw: true, signal, headers: { Accept: 'application/x-ndjson' } })).response;
  }

  /** Streams a snapshot: onHeader(header) once, then onEntities(batch)
   *  with arrays of entities, never holding more than one chunk's lines.
   *  With {lazy: true} a line in snapsync's own spelling comes as
   *  `{collection, id, line}` (its text, not parsed: parseSnapshotEntity
   *  when needed) and any other line as the parsed entity.
   *  Resolves {header, entities, bytes}. */
  async read(id, { onHeader, onEntities, signal, batch = 1000, lazy = false } = {}) {
    const res = await this.download(id, { signal });
    const lines = new LineSplitter();
    let header = null;
    let n = 0;
    let lineNo = 0;
    let bytes = 0;
    let out = [];
    const take = async (ls) => {
      let i = 0;
      if (!header && ls.length) {
        header = parseSnapshotHeader(ls[0]);
        lineNo = 1;
        if (onHeader) await onHeader(header);
        i = 1;
      }
      const first = lineNo + 1;
      lineNo += ls.length - i;
      const body = (i ? ls.slice(i) : ls).filter((l) => l.length > 0);
      if (!body.length) return;
      if (lazy) {
        for (let j = 0; j < body.length; j++) {
          const r = snapshotLineKey(body[j]);
          const e = r || parseSnapshotEntity(body[j], first + j);
          if (!r && e.deleted) continue;
          out.push(e);
          n++;
        }
      } else {
        for (const e of parseSnapshotEntities(body, first)) {
          if (e.deleted) continue;           // a tombstone line (not in v1 or v2 files today): nothing to keep
          out.push(e);
          n++;
        }
      }
      if (out.length >= batch) {
        // batches of `batch` (a chunk can hold many thousand lines)
        const all = out;
        const end = all.length - (all.length % batch);
        out = all.slice(end);
        for (let j = 0; j < end; j += batch) {
          if (onEntities) await onEntities(all.slice(j, j + batch), { bytes });
        }
      }
    };
    for await (const chunk of bodyChunks(res.body)) {
      bytes += chunk.length;
      await take(lines.push(chunk));
    }
    await take(lines.end());
    if (out.length && onEntities) await onEntities(out, { bytes });
    if (!header) throw new SnapsyncError('invalid_snapshot', 'the snapshot is empty');
    if (typeof header.entity_total === 'number' && header.entity_total !== n) {
      throw new SnapsyncError('invalid_snapshot', `the snapshot ended after ${n} of ${header.entity_total} entities`);
    }
    return { header, entities: n, bytes };
  }

  /** POST /snapshots, following its progress: onProgress({snapshot,
   *  status, entities_done, entities_total, bytes, fraction}). Resolves
   *  the completed snapshot's metadata; a failed one throws
   *  SnapsyncError snapshot_failed. */
  take({ note, onProgress, signal } = {}) {
    return this.space._track({
      topic: 'snapshot',
      idOf: (d) => d.snapshot,
      start: () => this.client.request('POST', `${this.space.path}/snapshots`,
        { body: note === undefined ? {} : { note }, headers: { Prefer: 'respond-async' } }),
      get: (id) => this.get(id),
      isDone: (m) => m && m.status && m.status !== 'running' && m.status !== 'pending',
      progress: (d) => ({
        snapshot: d.snapshot || d.id, status: d.status, kind: d.kind, error: d.error ?? null, entities_done: d.entities_done ?? 0,
        entities_total: d.entities_total ?? d.entity_total ?? null, bytes: d.bytes ?? 0,
        fraction: d.entities_total ? Math.min(1, (d.entities_done || 0) / d.entities_total) : (d.status === 'completed' ? 1 : 0),
      }),
      finish: (m) => {
        if (m.status === 'failed') throw new SnapsyncError('snapshot_failed', m.error || 'the snapshot failed', 0, { snapshot: m });
        return m;
      },
      onProgress,
      signal,
    });
  }
}

// ---------------------------------------------------------------------------
// stores: where a replica keeps its state and its queue

class MemoryStore {
  async load() { return null; }
  async putEntities() {}
  async commit() {}
  async clear() {}
  async addEdit() {}
  async updateEdit() {}
  async removeEdit() {}
  close() {}
}

function idbReq(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function idbTx(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new SnapsyncError('storage_error', 'IndexedDB transaction aborted'));
  });
}

/** IndexedDB: stores `entities` ([collection, id]), `meta` (version,
 *  space_uid), `queue` (the edits not pushed yet, by seq) and `segments`
 *  (since version 2: the snapshot lines kept as text, 2,000 to a record,
 *  joined by \n: one record per line costs IndexedDB ten times as much).
 *  An entity in `entities` stands over the same one in a segment; one
 *  deleted while segments exist is kept there as {collection, id,
 *  deleted: true}. */
class IDBStore {
  constructor(name) {
    this.name = name;
    this.db = null;
    this.hasSegments = false;
  }

  async open() {
    if (typeof indexedDB === 'undefined') {
      throw new SnapsyncError('unsupported', "persist: 'indexeddb' needs IndexedDB (a browser); use 'memory'");
    }
    const req = indexedDB.open(this.name, 2);
    req.onupgradeneeded = () => {
      const db = req.result;
      const has = (n) => db.objectStoreNames.contains(n);
      if (!has('entities')) db.createObjectStore('entities', { keyPath: ['collection', 'id'] });
      if (!has('meta')) db.createObjectStore('meta');
      if (!has('queue')) db.createObjectStore('queue', { keyPath: 'seq' });
      if (!has('segments')) db.createObjectStore('segments', { autoIncrement: true });
    };
    this.db = await idbReq(req);
  }

  async load() {
    const tx = this.db.transaction(['entities', 'meta', 'queue', 'segments'], 'readonly');
    const [meta, entities, queue, segments] = await Promise.all([
      idbReq(tx.objectStore('meta').get('state')),
      idbReq(tx.objectStore('entities').getAll()),
      idbReq(tx.objectStore('queue').getAll()),
      idbReq(tx.objectStore('segments').getAll()),
    ]);
    this.hasSegments = segments.length > 0;
    return { meta: meta || null, entities, queue, segments };
  }

  /** Entities written during a bootstrap (meta is written by commit()):
   *  entities, or snapshot lines as {collection, id, line}. */
  async putEntities(list) {
    const tx = this.db.transaction(['entities', 'segments'], 'readwrite');
    const st = tx.objectStore('entities');
    const lines = [];
    for (const e of list) {
      if (lazyRecord(e)) lines.push(e.line); else st.put(e);
    }
    if (lines.length) {
      tx.objectStore('segments').put(lines.join('\n'));
      this.hasSegments = true;
    }
    await idbTx(tx);
  }

  /** Upserts and deletes, with the version they bring the replica to, in
   *  one transaction: what is stored is always a state at some version. */
  async commit(puts, dels, meta) {
    const tx = this.db.transaction(['entities', 'meta'], 'readwrite');
    const st = tx.objectStore('entities');
    for (const e of puts) st.put(e);
    for (const [c, id] of dels) {
      if (this.hasSegments) st.put({ collection: c, id, deleted: true }); else st.delete([c, id]);
    }
    tx.objectStore('meta').put(meta, 'state');
    await idbTx(tx);
  }

  async clear() {
    const tx = this.db.transaction(['entities', 'meta', 'segments'], 'readwrite');
    tx.objectStore('entities').clear();
    tx.objectStore('meta').clear();
    tx.objectStore('segments').clear();
    this.hasSegments = false;
    await idbTx(tx);
  }

  async addEdit(rec) { const tx = this.db.transaction('queue', 'readwrite'); tx.objectStore('queue').put(rec); await idbTx(tx); }
  async updateEdit(rec) { return this.addEdit(rec); }
  async removeEdit(seq) { const tx = this.db.transaction('queue', 'readwrite'); tx.objectStore('queue').delete(seq); await idbTx(tx); }
  close() { if (this.db) this.db.close(); }
}

// ---------------------------------------------------------------------------
// the replica

/** A snapshot line kept as text ({collection, id, line}: Snapshots.read
 *  with lazy, and how IndexedDB stores it) rather than an entity. */
function lazyRecord(r) {
  return typeof r.line === 'string' && r.rev === undefined;
}

const EDIT_FIELDS = ['seq', 'collection', 'id', 'deleted', 'body', 'base_rev', 'chained', 'at'];

/** An edit made on a replica: applied there at once, queued, pushed in
 *  order. `queued` resolves once it is stored (IndexedDB); `settled`
 *  resolves with {status: 'applied'|'conflict'|'error', rev?, version?,
 *  conflict?, error?}. */
class Edit {
  constructor(rec) {
    for (const f of EDIT_FIELDS) this[f] = rec[f];
    this.status = 'pending';
    this.result = null;
    this.settled = new Promise((r) => { this._settle = r; });
    this.queued = Promise.resolve();
  }
  record() {
    const r = {};
    for (const f of EDIT_FIELDS) r[f] = this[f];
    return r;
  }
}

/**
 * A live local copy of a space (or of some of its collections).
 * Options: persist 'memory' | 'indexeddb'; collections [..]; bootstrap
 * 'auto' | 'snapshot' | 'feed'; onProgress({phase, done, total, bytes}).
 * `await replica.ready` before reading; `replica.status` and the `status`
 * event say where it is.
 */
export class Replica extends Emitter {
  constructor(space, { persist = 'memory', collections = null, bootstrap = 'auto', onProgress, name } = {}) {
    super();
    this.space = space;
    this.client = space.client;
    this.collections = collections && collections.length ? [...collections].sort() : null;
    this.bootstrapMode = bootstrap;
    this.onProgress = onProgress || null;
    this.entities = new Map();   // key -> the server's entity (live ones)
    this.overlay = new Map();    // key -> {entity, count}: local edits not settled
    this.queue = [];             // Edit, in order
    this.version = 0;
    this.spaceUid = null;
    this.seq = 1;
    this.dirty = new Map();      // key -> entity | null, not stored yet
    this.flushTimer = null;
    this.flushing = Promise.resolve();
    this.closed = false;
    this.paused = false;
    this.pushing = false;
    this.feedCtl = null;
    this.status = { state: 'starting', online: false, version: 0, pending: 0, error: null, bootstrap: null };
    const dbName = name || `snapsync:${this.client.url || 'same-origin'}:${space.name}${this.collections ? `:${this.collections.join(',')}` : ''}`;
    this.store = persist === 'indexeddb' ? new IDBStore(dbName) : persist === 'memory' ? new MemoryStore()
      : (() => { throw new SnapsyncError('invalid_argument', "persist is 'memory' or 'indexeddb'"); })();
    this.persist = persist;
    this.ready = this._open();
    this.ready.catch(() => {});
  }

  // ---- reading ------------------------------------------------------------

  /** The entity as this replica sees it (local edits included), or null. */
  get(collection, id) {
    const k = key(collection, id);
    const o = this.overlay.get(k);
    const e = o ? o.entity : this._ent(k);
    return e && !e.deleted ? e : null;
  }

  /** The server's entity under key k. An entity bootstrapped from a
   *  snapshot line in snapsync's own spelling is held as that line's text
   *  until it is first read: it is parsed (and checked) here, once. */
  _ent(k) {
    const v = this.entities.get(k);
    if (typeof v !== 'string') return v;
    const e = parseSnapshotEntity(v);
    this.entities.set(k, e);
    return e;
  }

  /** The live entities (local edits included) for which fn(entity) is
   *  true, optionally of one collection. */
  query(fn = () => true, { collection } = {}) {
    const out = [];
    const n = collection ? collection.length : 0;
    const inCollection = (k) => !collection || (k.charCodeAt(n) === 0 && k.startsWith(collection));
    // lines still held as text are parsed first, 2,000 with one JSON.parse
    let keys = [];
    let lines = [];
    const parse = () => {
      const es = parseSnapshotEntities(lines);
      for (let i = 0; i < es.length; i++) this.entities.set(keys[i], es[i]);
      keys = [];
      lines = [];
    };
    for (const [k, v] of this.entities) {
      if (typeof v !== 'string' || !inCollection(k)) continue;
      keys.push(k);
      lines.push(v);
      if (keys.length >= 2000) parse();
    }
    if (keys.length) parse();
    for (const [k, e] of this.entities) {
      if (this.overlay.has(k) || !inCollection(k)) continue;
      if (fn(e)) out.push(e);
    }
    for (const { entity: e } of this.overlay.values()) {
      if (e.deleted || (collection && e.collection !== collection)) continue;
      if (fn(e)) out.push(e);
    }
    return out;
  }

  get size() {
    let n = this.entities.size;
    for (const [k, o] of this.overlay) {
      const has = this.entities.has(k);
      if (o.entity.deleted && has) n--;
      else if (!o.entity.deleted && !has) n++;
    }
    return n;
  }

  /** cb(changes) for every batch of changes the replica sees: [{type:
   *  'put'|'delete', collection, id, entity, source: 'remote'|'local'}].
   *  Returns the function that unsubscribes. */
  subscribe(cb) { return this.on('change', cb); }

  /** The edits not settled yet, in order. */
  pending() { return [...this.queue]; }

  conflicts(opts) { return this.space.conflicts(opts); }

  // ---- writing ------------------------------------------------------------

  put(collection, id, body) {
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      throw new SnapsyncError('invalid_argument', 'an entity body is a JSON object');
    }
    return this._edit(collection, id, false, JSON.parse(JSON.stringify(body)));
  }

  delete(collection, id) { return this._edit(collection, id, true, null); }

  _edit(collection, id, deleted, body) {
    if (this.closed) throw new SnapsyncError('closed', 'the replica is closed');
    const k = key(collection, id);
    const prev = this.overlay.get(k);
    const server = this._ent(k);
    const edit = new Edit({
      seq: this.seq++, collection, id, deleted, body, at: new Date().toISOString(),
      chained: !!prev, base_rev: prev ? null : (server ? server.rev : null),
    });
    const entity = { collection, id, rev: null, version: null, deleted, body, pending: true,
      created_at: server ? server.created_at : null, updated_at: edit.at };
    this.overlay.set(k, { entity, count: (prev ? prev.count : 0) + 1 });
    this.queue.push(edit);
    edit.queued = this.store.addEdit(edit.record());
    edit.queued.catch((e) => this._setStatus({ error: e }));
    this._setStatus({ pending: this.queue.length });
    this.emit('change', [{ type: deleted ? 'delete' : 'put', collection, id, entity, source: 'local' }]);
    this._kickPush();
    return edit;
  }

  // ---- lifecycle ----------------------------------------------------------

  /** Stops following the server and pushing (edits still apply locally and
   *  queue): an app's "offline" switch. resume() reconnects. */
  pause() {
    this.paused = true;
    if (this.feedCtl) this.feedCtl.abort();
    this._setStatus({ state: 'paused', online: false });
  }

  resume() {
    if (!this.paused) return;
    this.paused = false;
    if (this._resumeWake) this._resumeWake();
  }

  async close() {
    this.closed = true;
    this.paused = true;
    if (this.feedCtl) this.feedCtl.abort();
    if (this._resumeWake) this._resumeWake();
    await this.ready.catch(() => {});
    await this._flush();
    this.store.close();
    this._setStatus({ state: 'closed', online: false });
  }

  _setStatus(patch) {
    this.status = { ...this.status, ...patch, version: this.version, pending: this.queue.length };
    this.emit('status', this.status);
  }

  _progress(p) {
    this.emit('progress', p);
    if (this.onProgress) {
      try { this.onProgress(p); } catch (e) { setTimeout(() => { throw e; }); }
    }
  }

  async _open() {
    if (this.store.open) await this.store.open();
    const saved = await this.store.load();
    for (const rec of (saved && saved.queue) || []) {
      const edit = new Edit(rec);
      this.queue.push(edit);
      this.seq = Math.max(this.seq, rec.seq + 1);
      const k = key(rec.collection, rec.id);
      const prev = this.overlay.get(k);
      this.overlay.set(k, {
        entity: { collection: rec.collection, id: rec.id, rev: null, version: null, deleted: rec.deleted,
          body: rec.body, pending: true, updated_at: rec.at },
        count: (prev ? prev.count : 0) + 1,
      });
    }
    this.queue.sort((a, b) => a.seq - b.seq);
    if (saved && saved.meta && saved.meta.complete) {
      for (const text of saved.segments || []) {
        for (const line of text.split('\n')) {
          const r = snapshotLineKey(line);
          const e = r || parseSnapshotEntity(line);
          this.entities.set(key(e.collection, e.id), r ? line : e);
        }
      }
      for (const e of saved.entities) {
        const k = key(e.collection, e.id);
        if (e.deleted) this.entities.delete(k); else this.entities.set(k, lazyRecord(e) ? e.line : e);
      }
      this.version = saved.meta.version;
      this.spaceUid = saved.meta.space_uid;
      this._setStatus({ state: 'loaded', bootstrap: { method: 'stored', entities: this.entities.size } });
      this._follow();
      return this;
    }
    // nothing stored: bootstrap from the server (if it cannot be reached,
    // ready rejects; local edits still queue)
    let lastErr = null;
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        this._setStatus({ state: 'bootstrapping' });
        await this._bootstrap();
        lastErr = null;
        break;
      } catch (e) {
        lastErr = e;
        this._setStatus({ state: isTransient(e) ? 'offline' : 'error', error: e });
        if (!isTransient(e) || attempt >= 2) throw e;
        await sleep(500 * (attempt + 1));
      }
    }
    if (lastErr) throw lastErr;
    this._follow();
    return this;
  }

  /** Fills an empty replica: from the newest snapshot when that is cheaper
   *  than paging the whole feed, then the feed from its server_version. */
  async _bootstrap() {
    const t0 = Date.now();
    const st = await this.space.syncStatus();
    this.spaceUid = st.space_uid;
    this.entities.clear();
    await this.store.clear();
    const rows = (st.entity_count || 0) + (st.tombstone_count || 0);
    let method = 'feed';
    let snap = null;
    if (this.bootstrapMode !== 'feed' && st.last_snapshot) {
      snap = await this.space.snapshots.newest();
      const behind = snap ? st.server_version - snap.server_version : Infinity;
      if (snap && (this.bootstrapMode === 'snapshot' || (rows > 1000 && behind < rows / 2))) method = 'snapshot';
    }
    if (method === 'snapshot') {
      const want = this.collections ? new Set(this.collections) : null;
      const total = snap.entity_total;
      let done = 0;
      let header = null;
      // IndexedDB: one transaction per batch, up to 4 in flight while the
      // download goes on (all committed before the replica is ready)
      const writes = new Set();
      let failed = null;
      const write = (list) => {
        const w = this.store.putEntities(list).catch((e) => { failed = failed || e; });
        writes.add(w);
        w.then(() => writes.delete(w));
        return writes.size >= 4 ? Promise.race(writes) : null;
      };
      await this.space.snapshots.read(snap.id, {
        batch: 2000,
        lazy: true,
        onHeader: (h) => {
          header = h;
          if (h.space_uid && h.space_uid !== st.space_uid) {
            throw new SnapsyncError('space_changed', 'the snapshot is of an earlier space of that name');
          }
        },
        onEntities: async (batch, { bytes }) => {
          const keep = [];
          for (const e of batch) {
            if (want && !want.has(e.collection)) continue;
            // a line in snapsync's spelling stays text until it is read
            this.entities.set(key(e.collection, e.id), lazyRecord(e) ? e.line : e);
            keep.push(e);
          }
          done += batch.length;
          if (failed) throw failed;
          if (this.persist !== 'memory' && keep.length) {
            const wait = write(keep);
            if (wait) await wait;
          }
          this._progress({ phase: 'snapshot', done, total, bytes });
        },
      });
      await Promise.all(writes);
      if (failed) throw failed;
      this.version = header.server_version;
    }
    // the feed: everything from 0 (method feed) or what the snapshot misses
    let since = this.version;
    let fed = 0;
    for (;;) {
      const page = await this.space.changes({ since, limit: 1000, collections: this.collections || undefined });
      const puts = [];
      const dels = [];
      for (const e of page.changes) {
        const k = key(e.collection, e.id);
        if (e.deleted) { this.entities.delete(k); dels.push([e.collection, e.id]); } else { this.entities.set(k, e); puts.push(e); }
      }
      fed += page.changes.length;
      since = page.last_version;
      if (this.persist !== 'memory' && (puts.length || dels.length)) await this.store.commit(puts, dels, { version: 0, complete: false });
      this._progress({ phase: 'feed', done: fed, total: method === 'feed' ? rows : null, bytes: 0 });
      if (!page.more) break;
    }
    this.version = since;
    await this.store.commit([], [], { version: this.version, space_uid: this.spaceUid, complete: true });
    const info = { method, snapshot: snap && method === 'snapshot' ? snap.id : null, entities: this.entities.size,
      changes: fed, ms: Date.now() - t0 };
    this._setStatus({ state: 'ready', bootstrap: info, error: null });
    this.emit('change', [{ type: 'reset', source: 'bootstrap' }]);
  }

  /** Follows /changes?feed=sse from this.version for as long as the
   *  replica is open, reconnecting with Last-Event-ID (the last version
   *  applied) after any drop. */
  async _follow() {
    let delay = 200;
    let checked = false;
    while (!this.closed) {
      if (this.paused) {
        await new Promise((r) => { this._resumeWake = r; });
        this._resumeWake = null;
        continue;
      }
      this.feedCtl = new AbortController();
      try {
        if (!checked) {
          // same space as what is stored? (a space deleted and made again
          // has a new uid: start over)
          const st = await this.space.syncStatus({ signal: this.feedCtl.signal });
          if (this.spaceUid && st.space_uid !== this.spaceUid) {
            this._setStatus({ state: 'bootstrapping' });
            await this._bootstrap();
          }
          checked = true;
        }
        const path = `${API}${this.space.path}/changes${qs({ feed: 'sse', since: this.version, collections: this.collections || undefined })}`;
        const why = await this.client._sse(path, {
          lastEventId: this.version ? String(this.version) : null,
          signal: this.feedCtl.signal,
          onOpen: () => {
            delay = 200;
            this._setStatus({ state: 'live', online: true, error: null });
            this._kickPush();
          },
          onEvents: (evs) => this._applyEvents(evs),
        });
        if (why === 'aborted' && (this.closed || this.paused)) continue;
      } catch (e) {
        if (isAbort(e)) continue;
        this._setStatus({ error: e });
        if (!isTransient(e)) delay = 5000;
      }
      if (this.closed || this.paused) continue;
      this._setStatus({ state: 'offline', online: false });
      await sleep(delay, this.feedCtl.signal);
      delay = Math.min(delay * 2, 5000);
    }
  }

  _applyEvents(evs) {
    const changes = [];
    let stop = null;
    for (const ev of evs) {
      if (ev.type !== 'change') {
        if (ev.type === 'shutdown' || ev.type === 'overflow') stop = ev.type;
        continue;
      }
      let e;
      try { e = JSON.parse(ev.data); } catch { continue; }
      if (!(e.version > this.version)) continue;         // already applied: never twice
      this.version = e.version;
      const k = key(e.collection, e.id);
      if (e.deleted) {
        if (!this.entities.has(k)) continue;
        this.entities.delete(k);
        this.dirty.set(k, null);
      } else {
        this.entities.set(k, e);
        this.dirty.set(k, e);
      }
      if (!this.overlay.has(k)) changes.push({ type: e.deleted ? 'delete' : 'put', collection: e.collection, id: e.id, entity: e, source: 'remote' });
    }
    if (this.dirty.size || evs.length) this._scheduleFlush();
    this.status.version = this.version;
    if (changes.length) this.emit('change', changes);
    return stop;
  }

  _scheduleFlush() {
    if (this.persist === 'memory' || this.flushTimer) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this._flush();
    }, 50);
  }

  _flush() {
    if (this.persist === 'memory') return Promise.resolve();
    if (this.flushTimer) { clearTimeout(this.flushTimer); this.flushTimer = null; }
    this.flushing = this.flushing.then(async () => {
      const d = this.dirty;
      const version = this.version;
      this.dirty = new Map();
      const puts = [];
      const dels = [];
      for (const [k, e] of d) {
        if (e) puts.push(e); else dels.push(k.split('\u0000'));
      }
      await this.store.commit(puts, dels, { version, space_uid: this.spaceUid, complete: true });
    }).catch((e) => this._setStatus({ error: e }));
    return this.flushing;
  }

  // ---- pushing --------------------------------------------------------------

  _kickPush() {
    if (this.pushing || !this.status.online || this.paused || this.closed || !this.queue.length) return;
    this._pushLoop();
  }

  async _pushLoop() {
    this.pushing = true;
    try {
      while (this.queue.length && this.status.online && !this.paused && !this.closed) {
        const batch = nextBatch(this.queue);
        const items = batch.map((e) => ({ collection: e.collection, id: e.id, base_rev: e.base_rev, deleted: e.deleted,
          body: e.deleted ? null : e.body }));
        let res;
        try {
          await Promise.all(batch.map((e) => e.queued));
          res = await this.space.push(items);
        } catch (err) {
          if (isTransient(err)) {
            // the server went away: the edits stay queued; the feed's
            // reconnect pushes again
            this._setStatus({ error: err });
            if (err.status === 0) this._setStatus({ online: false, state: 'offline' });
            else await sleep(1000);
            break;
          }
          for (const e of batch) await this._settle(e, { status: 'error', error: err });
          continue;
        }
        for (let i = 0; i < batch.length; i++) {
          const r = res.results[i] || { status: 'error', error: 'invalid_response', message: 'no result' };
          await this._settle(batch[i], r);
        }
      }
    } finally {
      this.pushing = false;
    }
    if (this.queue.length && this.status.online && !this.paused && !this.closed) setTimeout(() => this._kickPush(), 50);
  }

  async _settle(edit, r) {
    const k = key(edit.collection, edit.id);
    let result;
    if (r.status === 'applied') {
      result = { status: 'applied', rev: r.rev, version: r.version };
      const cur = this._ent(k);
      if (!cur || !(cur.version >= r.version)) {
        if (edit.deleted) {
          this.entities.delete(k);
          this.dirty.set(k, null);
        } else {
          const e = { collection: edit.collection, id: edit.id, rev: r.rev, version: r.version, deleted: false,
            body: edit.body, created_at: cur ? cur.created_at : null, updated_at: null };
          this.entities.set(k, e);
          this.dirty.set(k, e);
        }
      }
    } else if (r.status === 'conflict') {
      let current = null;
      try { current = await this.space.collection(edit.collection).get(edit.id, { includeDeleted: true }); } catch { /* shown as null */ }
      const conflict = new Conflict(this.space, {
        id: r.conflict_id, collection: edit.collection, entity_id: edit.id, current_rev: r.current_rev,
        conflicting_rev: null, conflicting_body: edit.body, deleted: edit.deleted, origin: 'local',
        detected_at: new Date().toISOString(),
      }, current);
      result = { status: 'conflict', conflict, current_rev: r.current_rev };
    } else {
      const err = r.error instanceof SnapsyncError ? r.error
        : new SnapsyncError(r.error || 'error', r.message || r.error || 'the edit was refused', 0, {});
      result = { status: 'error', error: err };
    }
    // the next edit of the same entity is pushed against this one's outcome
    const next = this.queue.find((e) => e !== edit && e.collection === edit.collection && e.id === edit.id);
    if (next && next.chained) {
      next.base_rev = followerBase(edit, r);
      next.chained = false;
      await this.store.updateEdit(next.record());
    }
    this.queue.splice(this.queue.indexOf(edit), 1);
    await this.store.removeEdit(edit.seq);
    const o = this.overlay.get(k);
    const changes = [];
    if (o && --o.count <= 0) {
      this.overlay.delete(k);
      const e = this._ent(k);
      changes.push({ type: e ? 'put' : 'delete', collection: edit.collection, id: edit.id, entity: e || null, source: 'remote' });
    }
    this._scheduleFlush();
    edit.status = result.status;
    edit.result = result;
    this._setStatus({});
    edit._settle(result);
    if (changes.length) this.emit('change', changes);
    this.emit('settled', { edit, result });
    if (result.status === 'conflict') {
      this.emit('conflict', result.conflict);
      this.space.emit('conflict', result.conflict);
    }
  }
}
