/* snapsync dashboard (SPEC §10).
 *
 * Plain JavaScript, no framework, no build step. Every call to the server
 * goes through the JavaScript client the server also serves
 * (/sdk/snapsync.js, clients/js): the same origin's /api/v1 with the token
 * the operator typed (kept in sessionStorage, sent as "Authorization:
 * Bearer"), one event stream on /api/v1/events (db.events(), which resumes
 * with Last-Event-ID) for change rates and the live progress of snapshots
 * and sync jobs, snapshots.take() and sync() with their progress, the
 * snapshot list and download, and conflicts with resolve().
 *
 * The page runs under "script-src 'self'; style-src 'self'": no inline
 * script or style; everything is built with DOM calls (never innerHTML
 * with server data), and the only style set from here is the width of
 * progress bars through CSSOM.
 *
 * Views are chosen by the location hash:
 *   #/spaces                         spaces and their status
 *   #/spaces/S[/collections[/C]]     collections and entities of S
 *   #/spaces/S/snapshots             snapshots: take, preview, download, restore;
 *                                    off-site copies: each one's upload status,
 *                                    the remote's list and an import from it
 *   #/spaces/S/sync                  peers, start a sync, live jobs, history
 *   #/spaces/S/conflicts             conflicts side by side, resolution
 *   #/audit                          audit log (admin keys only)
 */
import { snapsync, SnapsyncError } from '/sdk/snapsync.js';

(function () {
  'use strict';

  const API = '/api/v1';
  const TOKEN_KEY = 'snapsync.token';
  const PAGE = 50;
  const RATE_WINDOW_MS = 60000;
  const TABS = [
    ['collections', 'Collections'],
    ['snapshots', 'Snapshots'],
    ['sync', 'Sync'],
    ['conflicts', 'Conflicts'],
  ];
  const AUDIT_ACTIONS = [
    'space.create', 'space.delete', 'key.create', 'key.revoke',
    'snapshot.create', 'snapshot.restore', 'snapshot.delete',
    'snapshot.remote_upload', 'snapshot.remote_delete',
    'sync.start', 'sync.finish', 'peer.put', 'peer.delete',
    'conflict.resolve', 'request.denied',
  ];

  const state = {
    token: null,
    status: null,          // GET /api/v1/status
    isAdmin: false,        // GET /api/v1/audit answered 200
    db: null,              // the client (snapsync({token}))
    events: null,          // db.events(): the live event stream
    esRetry: null,
    live: 'off',
    changeTimes: new Map(),  // space -> [ms of change events in the last minute]
    snapProgress: new Map(), // snapshot id -> last `snapshot` event (+ local fields)
    syncProgress: new Map(), // job id -> last `sync` event (+ local fields)
    view: null,            // {onEvent(type, data), dispose()} of the current view
    route: null,           // the route drawn last
    renderSeq: 0,
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------
  // DOM helpers

  /** h('div', {class:'x', onclick: fn, hidden: true}, child, 'text', [more]) */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    add(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'selected') el[k] = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'style') throw new Error('inline styles are blocked by the CSP: use a class');
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  /** Appends children (nested arrays flattened; null, undefined and false skipped). */
  function add(el, ...children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
  }

  const SVGNS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'class') el.setAttribute('class', v);
      else el.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

  let uid = 0;
  const nextId = (p) => `${p}-${++uid}`;

  function table(headers, rows, { caption, className = '' } = {}) {
    const t = h('table', { class: `table ${className}` },
      caption ? h('caption', { class: 'sr-only' }, caption) : null,
      h('thead', null, h('tr', null, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', null, rows));
    labelRows(t);
    return h('div', { class: 'table-wrap' }, t);
  }

  /** Copies each column's heading into its cells' data-label: on a phone,
   *  tables with class "stack" show one labelled card per row. */
  function labelRows(tableEl) {
    if (!tableEl || !tableEl.tHead) return;
    const heads = [...tableEl.tHead.rows[0].cells].map((c) => c.textContent);
    for (const body of tableEl.tBodies) {
      for (const tr of body.rows) {
        [...tr.cells].forEach((c, i) => {
          if (!c.hasAttribute('colspan') && heads[i] && !c.dataset.label) c.dataset.label = heads[i];
        });
      }
    }
  }

  function field(labelText, input, hint) {
    const id = input.id || nextId('f');
    input.id = id;
    let hintEl = null;
    if (hint) {
      hintEl = h('span', { class: 'hint', id: `${id}-hint` }, hint);
      input.setAttribute('aria-describedby', hintEl.id);
    }
    return h('div', { class: 'field' }, h('label', { for: id }, labelText), input, hintEl);
  }

  function select(options, value) {
    return h('select', null, options.map(([v, t]) => h('option', { value: v, selected: v === value }, t)));
  }

  function button(text, onclick, cls = 'btn', extra = {}) {
    return h('button', { type: 'button', class: cls, onclick, ...extra }, text);
  }

  /** A progress bar (role=progressbar); set(p) with p in 0..100. */
  function progressBar(label) {
    const fill = h('span', { class: 'bar-fill' });
    const bar = h('div', {
      class: 'bar', role: 'progressbar', 'aria-label': label,
      'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': '0',
    }, fill);
    bar.set = (p, status) => {
      const v = Math.max(0, Math.min(100, Math.round(p)));
      fill.style.width = `${v}%`;           // CSSOM: allowed by style-src 'self'
      bar.setAttribute('aria-valuenow', String(v));
      bar.dataset.status = status || '';
      bar.classList.toggle('bar-done', status === 'completed');
      bar.classList.toggle('bar-failed', status === 'failed');
      bar.classList.toggle('bar-partial', status === 'partial');
    };
    return bar;
  }

  // ---------------------------------------------------------------------------
  // formatting

  function fmtBytes(n) {
    if (n === null || n === undefined) return '—';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return `${i === 0 ? v : Number(v.toFixed(v < 10 ? 1 : 0))} ${u[i]}`;
  }

  const fmtNum = (n) => (n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US'));

  function fmtAge(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
    const d = Math.max(0, Date.now() - ms) / 1000;
    if (d < 5) return 'just now';
    if (d < 60) return `${Math.floor(d)} s ago`;
    if (d < 3600) return `${Math.floor(d / 60)} min ago`;
    if (d < 86400) return `${Math.floor(d / 3600)} h ago`;
    return `${Math.floor(d / 86400)} d ago`;
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  }

  function pad(n, w = 2) { return String(n).padStart(w, '0'); }
  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  /** <time> showing "3 min ago" with the full time as a tooltip. */
  function ago(iso) {
    if (!iso) return h('span', { class: 'muted' }, '—');
    return h('time', { datetime: iso, title: `${fmtTime(iso)} (${iso})` }, fmtAge(Date.parse(iso)));
  }

  /** Milliseconds encoded in the first 10 characters of a ULID. */
  function ulidTime(id) {
    const A = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    if (typeof id !== 'string' || id.length < 10) return null;
    let t = 0;
    for (let i = 0; i < 10; i++) {
      const v = A.indexOf(id[i].toUpperCase());
      if (v < 0) return null;
      t = t * 32 + v;
    }
    return t;
  }

  const short = (id, n = 10) => (id && id.length > n ? `${id.slice(0, n)}…` : id || '—');

  function idCell(id, n = 10) {
    if (!id) return h('span', { class: 'muted' }, '—');
    return h('code', { title: id, class: 'id' }, short(id, n));
  }

  function statusBadge(status) {
    const st = status || 'unknown';
    return h('span', { class: `badge badge-${st.replace(/[^a-z_]/g, '')}` }, st.replace(/_/g, ' '));
  }

  /** Key-sorted JSON for comparisons (bodies are canonical on the server, but be safe). */
  function stable(v) {
    if (Array.isArray(v)) return `[${v.map(stable).join(',')}]`;
    if (v && typeof v === 'object') {
      return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stable(v[k])}`).join(',')}}`;
    }
    return JSON.stringify(v);
  }

  // ---------------------------------------------------------------------------
  // API access

  /** The client for the token in use. */
  function client() {
    if (!state.db || state.db.token !== state.token) state.db = snapsync({ token: state.token });
    return state.db;
  }
  const space$ = (space) => client().space(space);

  /** A failed call: 401 signs out (outside the sign-in itself), 429 says when to retry. */
  function failed(err, signIn) {
    if (!(err instanceof SnapsyncError)) return err;
    if (err.status === 429 && err.details.retry_after) err.message += ` (try again in ${err.details.retry_after} s)`;
    if (err.status === 401 && !signIn && state.token) tokenRefused(err);
    return err;
  }

  /** One API call; resolves {status, data, headers} or throws SnapsyncError. */
  async function apiRaw(method, path, { body, headers = {}, signIn = false } = {}) {
    try {
      return await client().requestFull(method, path, { body, headers });
    } catch (err) {
      throw failed(err, signIn);
    }
  }

  /** A client call (space$(s).snapshots.list(), ...) with the same handling. */
  async function call(p) {
    try {
      return await p;
    } catch (err) {
      throw failed(err, false);
    }
  }

  async function api(method, path, opts) {
    return (await apiRaw(method, path, opts)).data;
  }

  const sp = (space) => `/spaces/${encodeURIComponent(space)}`;

  /** Plain words for an error: "<what failed>: <server message>". */
  function explain(what, err) {
    if (!(err instanceof SnapsyncError)) return `${what}: ${err && err.message ? err.message : err}`;
    let why = err.message;
    if (err.status === 403) why = `this token is not allowed to do that (${err.message})`;
    return `${what}: ${why}`;
  }

  /** An error box (role=alert) for inline use; .show(what, err) / .hide(). */
  function errorBox() {
    const el = h('p', { class: 'error', role: 'alert', hidden: true });
    el.show = (what, err) => {
      el.textContent = explain(what, err);
      if (err instanceof SnapsyncError && err.code && err.status) {
        add(el, ' ', h('span', { class: 'error-code' }, `(${err.status} ${err.code})`));
      }
      el.hidden = false;
    };
    el.say = (text) => { el.textContent = text; el.hidden = false; };
    el.hide = () => { el.hidden = true; el.textContent = ''; };
    return el;
  }

  function okBox() {
    const el = h('p', { class: 'ok', role: 'status', hidden: true });
    el.say = (text) => { el.textContent = text; el.hidden = false; };
    el.hide = () => { el.hidden = true; el.textContent = ''; };
    return el;
  }

  /** A notice at the top of the page (errors from background work). */
  function notice(text, kind = 'error') {
    const box = $('notices');
    const n = h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
      h('span', null, text),
      button('Dismiss', () => n.remove(), 'btn btn-quiet btn-small', { 'aria-label': 'Dismiss this message' }));
    add(box, n);
    while (box.children.length > 4) box.firstChild.remove();
    return n;
  }

  // ---------------------------------------------------------------------------
  // session

  function tokenRefused(err) {
    signOut(`The server refused the token: ${err.message}. Sign in again.`);
  }

  /** Shows the sign-in form with an optional error (or, with info:true, a plain note). */
  function showLogin(message, { info = false } = {}) {
    $('login').hidden = false;
    $('view').hidden = true;
    $('topnav').hidden = true;
    $('session').hidden = true;
    $('server-info').textContent = '';
    const le = $('login-error');
    const li = $('login-info');
    le.hidden = true; le.textContent = '';
    li.hidden = true; li.textContent = '';
    if (message) {
      const el = info ? li : le;
      el.textContent = message;
      el.hidden = false;
    }
    $('token-input').value = '';
    $('token-input').focus();
  }

  function signOut(message, opts) {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* storage off */ }
    state.token = null;
    state.db = null;
    state.status = null;
    state.isAdmin = false;
    closeEvents();
    if (state.view && state.view.dispose) state.view.dispose();
    state.view = null;
    state.route = null;
    clear($('view'));
    clear($('notices'));
    state.snapProgress.clear();
    state.syncProgress.clear();
    state.changeTimes.clear();
    showLogin(message, opts);
  }

  async function signIn(token, { fromStorage = false } = {}) {
    state.token = token;
    const btn = $('login-submit');
    btn.disabled = true;
    try {
      state.status = await api('GET', '/status', { signIn: true });
    } catch (err) {
      state.token = null;
      try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* ignore */ }
      showLogin(fromStorage
        ? explain('The saved token no longer works', err)
        : explain('Sign-in failed', err));
      btn.disabled = false;
      return;
    }
    btn.disabled = false;
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch { /* private mode: keep it in memory */ }
    // the audit log is for admin keys; anything else hides it
    try {
      await api('GET', '/audit?limit=1', { signIn: true });
      state.isAdmin = true;
    } catch (err) {
      state.isAdmin = false;
      if (err.status !== 403 && err.status !== 401) notice(explain('Could not check for audit access', err));
    }
    $('login').hidden = true;
    $('view').hidden = false;
    $('topnav').hidden = false;
    $('session').hidden = false;
    $('nav-audit').hidden = !state.isAdmin;
    const st = state.status;
    $('server-info').textContent = `v${st.version} · instance ${short(st.instance_id, 8)}`;
    $('server-info').title = `instance ${st.instance_id}, up ${fmtDuration(st.uptime_s * 1000)}`;
    connectEvents();
    if (!location.hash || location.hash === '#' || location.hash === '#/') location.hash = '#/spaces';
    else render();
  }

  // ---------------------------------------------------------------------------
  // live events (one EventSource for every view)

  function setLive(s) {
    state.live = s;
    const el = $('live');
    el.className = `live live-${s}`;
    el.textContent = {
      on: 'Live updates: on', connecting: 'Live updates: connecting…',
      retrying: 'Live updates: reconnecting…', off: 'Live updates: off',
    }[s] || s;
    el.dataset.state = s;
  }

  function closeEvents() {
    if (state.events) { state.events.close(); state.events = null; }
    if (state.esRetry) { clearTimeout(state.esRetry); state.esRetry = null; }
    setLive('off');
  }

  const onEvent = {
    change(d) {
      const list = state.changeTimes.get(d.space) || [];
      const now = Date.now();
      list.push(now);
      while (list.length && list[0] < now - RATE_WINDOW_MS) list.shift();
      state.changeTimes.set(d.space, list);
    },
    snapshot(d) { progress(state.snapProgress, d.snapshot, d); },
    sync(d) { progress(state.syncProgress, d.job, d); },
  };

  function progress(map, id, d) {
    map.set(id, { ...(map.get(id) || {}), ...d, at: Date.now() });
    prune(map);
  }

  function connectEvents() {
    closeEvents();
    if (!state.token) return;
    setLive('connecting');
    let it = null;
    it = client().events({
      topics: ['change', 'snapshot', 'sync'],
      onState: (st) => {
        if (state.events === it && st !== 'closed') setLive({ open: 'on', connecting: 'connecting', retrying: 'retrying' }[st]);
      },
    });
    state.events = it;
    (async () => {
      try {
        for await (const ev of it) {
          if (ev.type === 'reset') {
            if (state.view && state.view.refresh) state.view.refresh();
          } else if (ev.type === 'overflow') {
            notice('Live updates fell behind and were restarted.', 'info');
          } else if (ev.type === 'shutdown') {
            notice('The server is shutting down; live updates will resume when it is back.', 'info');
          } else if (onEvent[ev.type] && ev.data && typeof ev.data === 'object') {
            onEvent[ev.type](ev.data);
            if (state.view && state.view.onEvent) {
              try { state.view.onEvent(ev.type, ev.data); } catch (err) { console.error(err); }
            }
          }
        }
      } catch (err) {
        // the server refused the stream (e.g. 401): retry slowly, and let an
        // ordinary request tell the user why
        if (state.events !== it) return;
        state.events = null;
        setLive('retrying');
        state.esRetry = setTimeout(() => {
          api('GET', '/status').then(connectEvents, (e) => {
            if (state.token) { notice(explain('Live updates stopped', e)); setLive('off'); }
          });
        }, 5000);
      }
    })();
  }

  /** Keeps a progress map small: finished entries older than ten minutes go. */
  function prune(map) {
    if (map.size < 200) return;
    const cut = Date.now() - 600000;
    for (const [k, v] of map) if (v.status !== 'running' && v.at < cut) map.delete(k);
  }

  /** Changes per minute seen for a space (SSE change events in the last 60 s). */
  function changeRate(space) {
    const list = state.changeTimes.get(space);
    if (!list) return 0;
    const cut = Date.now() - RATE_WINDOW_MS;
    while (list.length && list[0] < cut) list.shift();
    return list.length;
  }

  // ---------------------------------------------------------------------------
  // routing

  function parseRoute() {
    const raw = location.hash.replace(/^#\/?/, '');
    const parts = raw.split('/').filter(Boolean).map((p) => {
      try { return decodeURIComponent(p); } catch { return p; }
    });
    if (parts[0] === 'audit') return { view: 'audit' };
    if (parts[0] === 'spaces' && parts[1]) {
      const tab = TABS.some(([t]) => t === parts[2]) ? parts[2] : 'collections';
      return { view: 'space', space: parts[1], tab, collection: tab === 'collections' ? parts[3] || null : null };
    }
    return { view: 'spaces' };
  }

  const spaceHref = (space, tab, extra) =>
    `#/spaces/${encodeURIComponent(space)}${tab ? `/${tab}` : ''}${extra ? `/${encodeURIComponent(extra)}` : ''}`;

  function render() {
    if (!state.token) return;
    const route = parseRoute();
    if (state.view && state.view.dispose) state.view.dispose();
    state.view = null;
    const root = clear($('view'));
    const [on, off] = route.view === 'audit' ? ['nav-audit', 'nav-spaces'] : ['nav-spaces', 'nav-audit'];
    $(on).setAttribute('aria-current', 'page');
    $(off).removeAttribute('aria-current');
    const prev = state.route;
    state.route = route;
    if (route.view === 'audit') state.view = auditView(root);
    else if (route.view === 'space') state.view = spaceView(root, route, prev);
    else state.view = spacesView(root);
  }

  /** Moves focus to a view's heading so keyboard and screen-reader users land there. */
  function focusHeading(el) {
    el.setAttribute('tabindex', '-1');
    if (document.activeElement === document.body || !document.activeElement
        || !$('view').contains(document.activeElement)) {
      el.focus({ preventScroll: true });
    }
  }

  // ---------------------------------------------------------------------------
  // spaces list

  function spacesView(root) {
    const title = h('h1', null, 'Spaces');
    const err = errorBox();
    const body = h('div', { class: 'loading' }, 'Loading spaces…');
    const refreshBtn = button('Refresh', () => load(), 'btn btn-quiet');
    add(root, h('div', { class: 'view-head' }, title, refreshBtn), err, body);
    focusHeading(title);
    let spaces = [];
    const rateCells = new Map();
    let timer = null;
    let pending = null;

    async function load() {
      try {
        const all = [];
        let cursor = null;
        for (let i = 0; i < 20; i++) {
          const q = `/spaces?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
          const d = await api('GET', q);
          all.push(...d.spaces);
          cursor = d.next_cursor;
          if (!cursor) break;
        }
        spaces = all;
        err.hide();
        draw();
      } catch (e) {
        err.show('Could not load the spaces', e);
        body.textContent = '';
      }
    }

    function draw() {
      clear(body).className = '';
      rateCells.clear();
      if (!spaces.length) {
        add(body, h('p', { class: 'empty' }, 'No spaces yet.',
          state.isAdmin ? ' Create one with PUT /api/v1/spaces/{name}.' : ''));
        return;
      }
      const rows = spaces.map((sObj) => {
        const rate = h('td', { class: 'num' }, `${changeRate(sObj.name)}/min`);
        rateCells.set(sObj.name, rate);
        const snapT = ulidTime(sObj.last_snapshot);
        return h('tr', { dataset: { space: sObj.name } },
          h('th', { scope: 'row' }, h('a', { href: spaceHref(sObj.name) }, sObj.name)),
          h('td', { class: 'num' }, fmtNum(sObj.server_version)),
          h('td', { class: 'num' }, fmtNum(sObj.entity_count)),
          h('td', { class: 'num' }, fmtNum(sObj.tombstone_count)),
          h('td', { class: 'num' }, sObj.conflict_count
            ? h('a', { href: spaceHref(sObj.name, 'conflicts'), class: 'warn-text' }, fmtNum(sObj.conflict_count))
            : '0'),
          h('td', null, sObj.last_snapshot
            ? [idCell(sObj.last_snapshot), ' ', h('span', { class: 'muted' }, fmtAge(snapT))]
            : h('span', { class: 'muted' }, 'none')),
          rate);
      });
      add(body, table(
        ['Space', 'Version', 'Entities', 'Tombstones', 'Conflicts', 'Last snapshot', 'Change rate'],
        rows, { caption: 'Spaces', className: 'spaces-table stack' }));
    }

    function tick() {
      for (const [name, cell] of rateCells) cell.textContent = `${changeRate(name)}/min`;
    }
    timer = setInterval(tick, 2000);
    load();
    return {
      refresh: load,
      onEvent(type) {
        if (type === 'change') tick();
        if ((type === 'change' || type === 'snapshot') && !pending) {
          pending = setTimeout(() => { pending = null; load(); }, 1500);
        }
      },
      dispose() { clearInterval(timer); clearTimeout(pending); },
    };
  }

  // ---------------------------------------------------------------------------
  // one space: summary + tabs

  function spaceView(root, route, prev) {
    const { space, tab } = route;
    const title = h('h1', null, h('span', { class: 'muted' }, 'Space '), space);
    const summary = h('dl', { class: 'summary' });
    const err = errorBox();
    const tabs = h('nav', { class: 'tabs', 'aria-label': `Sections of ${space}` },
      TABS.map(([t, label]) => h('a', {
        href: spaceHref(space, t), class: 'tab', 'aria-current': t === tab ? 'page' : null, dataset: { tab: t },
      }, label, t === 'conflicts' ? h('span', { class: 'tab-count', id: 'conflict-tab-count' }) : null)));
    const panel = h('section', { class: 'panel', 'aria-label': TABS.find(([t]) => t === tab)[1] });
    add(root,
      h('p', { class: 'crumbs' }, h('a', { href: '#/spaces' }, 'Spaces'), ' / ', space),
      h('div', { class: 'view-head' }, title),
      summary, err, tabs, panel);
    // a new space: focus its heading; another tab of the same space: stay on the tabs
    if (prev && prev.view === 'space' && prev.space === space) {
      title.setAttribute('tabindex', '-1');
      tabs.querySelector('[aria-current="page"]').focus();
    } else {
      focusHeading(title);
    }

    let info = null;
    let pending = null;
    const rateDd = h('dd', null, '0/min');

    async function loadInfo() {
      try {
        info = await api('GET', sp(space));
        err.hide();
        drawSummary();
      } catch (e) {
        err.show(`Could not load space "${space}"`, e);
      }
    }

    function drawSummary() {
      clear(summary);
      const item = (k, v) => h('div', { class: 'summary-item' }, h('dt', null, k), h('dd', null, v));
      rateDd.textContent = `${changeRate(space)}/min`;
      add(summary,
        item('Server version', fmtNum(info.server_version)),
        item('Entities', fmtNum(info.entity_count)),
        item('Tombstones', fmtNum(info.tombstone_count)),
        item('Conflicts', fmtNum(info.conflict_count)),
        item('Last snapshot', info.last_snapshot
          ? [idCell(info.last_snapshot), ' ', h('span', { class: 'muted' }, fmtAge(ulidTime(info.last_snapshot)))]
          : 'none'),
        h('div', { class: 'summary-item' }, h('dt', null, 'Change rate'), rateDd));
      const cc = document.getElementById('conflict-tab-count');
      if (cc) cc.textContent = info.conflict_count ? ` (${info.conflict_count})` : '';
    }

    const ctx = { space, refreshInfo: () => loadInfo() };
    let sub;
    if (tab === 'snapshots') sub = snapshotsTab(panel, ctx);
    else if (tab === 'sync') sub = syncTab(panel, ctx);
    else if (tab === 'conflicts') sub = conflictsTab(panel, ctx);
    else sub = collectionsTab(panel, ctx, route.collection);

    loadInfo();
    const timer = setInterval(() => { rateDd.textContent = `${changeRate(space)}/min`; }, 2000);
    return {
      refresh() { loadInfo(); if (sub.refresh) sub.refresh(); },
      onEvent(type, d) {
        if (d.space !== space) return;
        if (type === 'change') rateDd.textContent = `${changeRate(space)}/min`;
        if (!pending) pending = setTimeout(() => { pending = null; loadInfo(); }, 1000);
        if (sub.onEvent) sub.onEvent(type, d);
      },
      dispose() { clearInterval(timer); clearTimeout(pending); if (sub.dispose) sub.dispose(); },
    };
  }

  // ---------------------------------------------------------------------------
  // collections and entities

  function collectionsTab(panel, { space }, collection) {
    const err = errorBox();
    const list = h('div', { class: 'collections' }, h('p', { class: 'loading' }, 'Loading collections…'));
    const entitiesBox = h('div', { class: 'entities' });
    const detail = h('div', { class: 'entity-detail', hidden: true });
    add(panel, err, h('div', { class: 'split' },
      h('div', { class: 'split-side' }, h('h2', null, 'Collections'), list),
      h('div', { class: 'split-main' }, entitiesBox, detail)));

    async function loadCollections() {
      try {
        // every collection, a page of up to 1000 at a time (the next
        // page's cursor comes in X-Next-Cursor: the answer is a bare array)
        const cols = [];
        let next = null;
        do {
          const r = await apiRaw('GET', `${sp(space)}/collections?limit=1000${next ? `&cursor=${encodeURIComponent(next)}` : ''}`);
          cols.push(...(r.data || []));
          next = r.headers.get('X-Next-Cursor');
        } while (next);
        clear(list);
        if (!cols.length) {
          add(list, h('p', { class: 'empty' }, 'No collections: this space holds no entities yet.'));
          return;
        }
        add(list, h('ul', { class: 'collection-list' }, cols.map((c) => h('li', null,
          h('a', {
            href: spaceHref(space, 'collections', c.name),
            'aria-current': c.name === collection ? 'true' : null,
            dataset: { collection: c.name },
          }, h('span', { class: 'col-name' }, c.name), h('span', { class: 'count' }, fmtNum(c.count)))))));
      } catch (e) {
        clear(list);
        err.show('Could not load the collections', e);
      }
    }

    let cursor = null;
    let tbody = null;
    let moreBtn = null;
    async function loadEntities(first) {
      if (first) {
        cursor = null;
        clear(entitiesBox);
        tbody = h('tbody');
        moreBtn = button('Load more', () => loadEntities(false), 'btn', { hidden: true });
        add(entitiesBox,
          h('h2', null, 'Entities in ', h('code', null, collection)),
          h('div', { class: 'table-wrap' }, h('table', { class: 'table entities-table' },
            h('caption', { class: 'sr-only' }, `Entities in ${collection}`),
            h('thead', null, h('tr', null, ['ID', 'Rev', 'Version', 'Updated'].map((t) => h('th', { scope: 'col', class: t === 'Rev' ? 'col-rev' : null }, t)))),
            tbody)),
          moreBtn);
      }
      moreBtn.disabled = true;
      try {
        const q = `${sp(space)}/collections/${encodeURIComponent(collection)}/entities?limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
        const d = await api('GET', q);
        for (const e of d.entities) {
          add(tbody, h('tr', null,
            h('th', { scope: 'row' }, button(e.id, () => showEntity(e.id), 'linklike', { 'aria-label': `Show entity ${e.id}` })),
            h('td', { class: 'col-rev' }, h('code', null, e.rev)),
            h('td', { class: 'num' }, fmtNum(e.version)),
            h('td', null, ago(e.updated_at))));
        }
        if (!d.entities.length && first) {
          add(tbody, h('tr', null, h('td', { colspan: '4', class: 'empty' }, 'No live entities in this collection.')));
        }
        labelRows(tbody.parentElement);
        cursor = d.next_cursor;
        moreBtn.hidden = !cursor;
        moreBtn.disabled = false;
      } catch (e) {
        moreBtn.disabled = false;
        err.show(`Could not load the entities of "${collection}"`, e);
      }
    }

    async function showEntity(id) {
      detail.hidden = false;
      add(clear(detail), h('p', { class: 'loading' }, 'Loading…'));
      try {
        const e = await api('GET', `${sp(space)}/collections/${encodeURIComponent(collection)}/entities/${encodeURIComponent(id)}`);
        clear(detail);
        const heading = h('h2', null, h('code', null, `${e.collection} / ${e.id}`));
        add(detail, heading,
          h('dl', { class: 'meta' },
            h('dt', null, 'Rev'), h('dd', null, h('code', null, e.rev)),
            h('dt', null, 'Version'), h('dd', null, fmtNum(e.version)),
            h('dt', null, 'Created'), h('dd', null, fmtTime(e.created_at), ' ', h('span', { class: 'muted' }, `(${fmtAge(Date.parse(e.created_at))})`)),
            h('dt', null, 'Updated'), h('dd', null, fmtTime(e.updated_at), ' ', h('span', { class: 'muted' }, `(${fmtAge(Date.parse(e.updated_at))})`))),
          h('pre', { class: 'json', tabindex: '0', 'aria-label': `Body of ${e.id}` }, JSON.stringify(e.body, null, 2)),
          button('Close', () => { detail.hidden = true; }, 'btn btn-quiet'));
        heading.setAttribute('tabindex', '-1');
        heading.focus();
      } catch (e) {
        add(clear(detail), h('p', { class: 'error', role: 'alert' }, explain(`Could not load entity "${id}"`, e)));
      }
    }

    loadCollections();
    if (collection) loadEntities(true);
    else add(entitiesBox, h('p', { class: 'empty' }, 'Choose a collection to browse its entities.'));
    let pending = null;
    return {
      refresh() { loadCollections(); },
      onEvent(type) {
        if (type === 'change' && !pending) pending = setTimeout(() => { pending = null; loadCollections(); }, 1500);
      },
      dispose() { clearTimeout(pending); },
    };
  }

  // ---------------------------------------------------------------------------
  // snapshots

  function snapshotsTab(panel, { space, refreshInfo }) {
    const err = errorBox();
    const takeErr = errorBox();
    const note = h('input', { type: 'text', maxlength: '200', placeholder: 'optional', autocomplete: 'off' });
    const takeBtn = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Take snapshot');
    const takeForm = h('form', { class: 'inline-form', onsubmit: (e) => { e.preventDefault(); take(); } },
      field('Note', note), h('div', { class: 'form-actions' }, takeBtn));
    const progressBox = h('div', { class: 'progress-list', 'aria-live': 'polite' });
    const kindSel = select([['', 'any kind'], ['manual', 'manual'], ['scheduled', 'scheduled'], ['pre_restore', 'pre-restore'], ['imported', 'imported']], '');
    const statusSel = select([['', 'any status'], ['running', 'running'], ['completed', 'completed'], ['failed', 'failed']], '');
    kindSel.addEventListener('change', () => loadList(true));
    statusSel.addEventListener('change', () => loadList(true));
    const listBox = h('div');
    const moreBtn = button('Load more', () => loadList(false), 'btn', { hidden: true });
    const detail = h('section', { class: 'card snapshot-detail', hidden: true, 'aria-label': 'Snapshot details' });
    const chartBox = h('div', { class: 'chart-box' });
    const remote = state.isAdmin ? remoteCard(space, () => loadList(true)) : null;

    add(panel,
      h('section', { class: 'card take-card' }, h('h2', null, 'Take a snapshot'), takeForm, takeErr, progressBox),
      h('section', { class: 'card' },
        h('div', { class: 'section-head' }, h('h2', null, 'Snapshots'),
          h('div', { class: 'filters' }, field('Kind', kindSel), field('Status', statusSel))),
        err, listBox, moreBtn),
      detail,
      remote ? remote.card : null,
      h('section', { class: 'card' }, h('h2', null, 'Entities and size across snapshots'), chartBox));

    // --- take + live progress -------------------------------------------------
    const tracked = new Map();   // snapshot id -> {card, bar, text, poll}

    async function take() {
      takeErr.hide();
      takeBtn.disabled = true;
      let id = null;
      try {
        // snapshots.take() follows the progress (events, and polling when
        // they are quiet) until the snapshot ends
        await call(space$(space).snapshots.take({
          note: note.value.trim() || undefined,
          onProgress: (p) => {
            if (!id) {
              id = p.snapshot;
              note.value = '';
              takeBtn.disabled = false;
              track(id, { kind: 'manual' });
              loadList(true);
            }
            progress(state.snapProgress, id, { ...p, space });
            update(id);
          },
        }));
        loadList(true);
      } catch (e) {
        if (!id) takeErr.show('Could not take a snapshot', e);
        else loadList(true);              // a failed snapshot shows in its card and the list
      } finally {
        takeBtn.disabled = false;
      }
    }

    function track(id, meta) {
      if (tracked.has(id)) { update(id); return; }
      const bar = progressBar(`Progress of snapshot ${id}`);
      const text = h('span', { class: 'progress-text' });
      const card = h('div', { class: 'progress-item', dataset: { snapshot: id } },
        h('div', { class: 'progress-head' },
          h('span', null, 'Snapshot ', idCell(id, 12), meta && meta.kind ? ` (${meta.kind})` : ''),
          button('Dismiss', () => { card.remove(); tracked.delete(id); }, 'btn btn-quiet btn-small',
            { 'aria-label': `Dismiss progress of snapshot ${id}` })),
        bar, text);
      progressBox.prepend(card);
      tracked.set(id, { card, bar, text, meta: meta || {}, started: Date.now() });
      update(id);
    }

    function update(id) {
      const t = tracked.get(id);
      if (!t) return;
      const ev = state.snapProgress.get(id);
      const status = ev ? ev.status : (t.meta.status || 'running');
      const done = ev ? ev.entities_done : 0;
      const total = ev ? ev.entities_total : 0;
      let pct = total > 0 ? (100 * done) / total : 0;
      if (status === 'completed') pct = 100;
      t.bar.set(pct, status);
      add(clear(t.text), statusBadge(status), ' ',
        total ? `${fmtNum(done)} of ${fmtNum(total)} entities` : `${fmtNum(done)} entities`,
        ev && ev.bytes ? ` · ${fmtBytes(ev.bytes)}` : '',
        ev && ev.error ? ` · ${ev.error}` : '');
      t.card.dataset.status = status;
    }

    // --- list ---------------------------------------------------------------------
    let pages = null;              // snapshots.list(): the next page on "Load more"
    let tbody = null;
    let loadSeq = 0;
    async function loadList(first) {
      const seq = ++loadSeq;
      if (first || !pages) {
        pages = space$(space).snapshots.list({ limit: PAGE, kind: kindSel.value || undefined, status: statusSel.value || undefined });
      }
      moreBtn.disabled = true;
      try {
        const r = await call(pages.next());
        if (seq !== loadSeq) return;
        const d = { snapshots: r.done ? [] : r.value, next_cursor: r.done ? null : r.value.nextCursor };
        err.hide();
        if (first) {
          clear(listBox);
          tbody = h('tbody');
          add(listBox, h('div', { class: 'table-wrap' }, h('table', { class: 'table snapshots-table stack' },
            h('caption', { class: 'sr-only' }, 'Snapshots, newest first'),
            h('thead', null, h('tr', null, ['Snapshot', 'Kind', 'Status', 'Off-site', 'Entities', 'Size', 'SHA-256', 'Age', 'Actions']
              .map((t) => h('th', { scope: 'col' }, t)))),
            tbody)));
        }
        for (const m of d.snapshots) add(tbody, row(m));
        if (first && !d.snapshots.length) {
          add(tbody, h('tr', null, h('td', { colspan: '9', class: 'empty' },
            kindSel.value || statusSel.value ? 'No snapshot matches these filters.' : 'No snapshots yet.')));
        }
        labelRows(tbody.parentElement);
        moreBtn.hidden = !d.next_cursor;
      } catch (e) {
        if (seq === loadSeq) err.show('Could not load the snapshots', e);
      } finally {
        moreBtn.disabled = false;
      }
      if (first) loadChart();
    }

    function row(m) {
      const usable = m.status === 'completed';
      return h('tr', { dataset: { snapshot: m.id, status: m.status } },
        h('th', { scope: 'row' }, idCell(m.id, 12), m.note ? h('div', { class: 'muted small' }, m.note) : null),
        h('td', null, m.kind.replace(/_/g, '-')),
        h('td', null, statusBadge(m.status), m.error ? h('div', { class: 'error-inline small' }, m.error) : null),
        remoteCell(laterRemote(m.remote, (state.snapProgress.get(m.id) || {}).remote), { onRetry: (b) => retryUpload(m.id, b) }),
        h('td', { class: 'num' }, fmtNum(m.entity_total)),
        h('td', { class: 'num' }, fmtBytes(m.size_bytes)),
        h('td', null, m.sha256 ? h('code', { title: m.sha256 }, m.sha256.slice(0, 12)) : h('span', { class: 'muted' }, '—')),
        h('td', null, ago(m.created_at)),
        h('td', { class: 'actions' },
          button('Details', () => openDetail(m, null), 'btn btn-small', { 'aria-label': `Details of snapshot ${m.id}` }),
          usable ? button('Preview', () => openDetail(m, 'preview'), 'btn btn-small', { 'aria-label': `Preview snapshot ${m.id}` }) : null,
          usable ? button('Download', (e) => download(m, e.currentTarget), 'btn btn-small', { 'aria-label': `Download snapshot ${m.id}` }) : null,
          usable ? button('Restore…', () => openDetail(m, 'restore'), 'btn btn-small btn-danger-quiet', { 'aria-label': `Restore snapshot ${m.id}` }) : null));
    }

    // --- a failed off-site upload, queued again (operator) ------------------------
    async function retryUpload(id, btn) {
      err.hide();
      btn.disabled = true;
      try {
        await call(client().request('POST', `${sp(space)}/snapshots/${encodeURIComponent(id)}/remote/retry`));
        // the pending event redraws the cell
      } catch (e) {
        err.show(`Could not retry the off-site upload of ${id}`, e);
        btn.disabled = false;
      }
    }

    // --- download (fetch with the header, save through a Blob URL) --------------
    async function download(m, btn) {
      err.hide();
      const old = btn.textContent;
      btn.disabled = true;
      btn.textContent = 'Downloading…';
      try {
        const res = await call(space$(space).snapshots.download(m.id));
        // the browser undoes Content-Encoding: gzip, so this is the NDJSON itself
        const blob = await res.blob();
        const url = URL.createObjectURL(blob);
        const a = h('a', { href: url, download: `${space}-${m.id}.ndjson`, class: 'sr-only' }, 'download');
        add(document.body, a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
      } catch (e) {
        err.show(`Could not download snapshot ${m.id}`, e);
      } finally {
        btn.disabled = false;
        btn.textContent = old;
      }
    }

    // --- details, preview and restore ---------------------------------------------
    function deltaTable(delta, caption) {
      const names = Object.keys(delta || {}).sort();
      if (!names.length) return h('p', { class: 'empty' }, 'No differences.');
      return table(['Collection', 'Added', 'Modified', 'Deleted'], names.map((c) => h('tr', { dataset: { collection: c } },
        h('th', { scope: 'row' }, c),
        h('td', { class: 'num' }, fmtNum(delta[c].added)),
        h('td', { class: 'num' }, fmtNum(delta[c].modified)),
        h('td', { class: 'num' }, fmtNum(delta[c].deleted)))), { caption, className: 'delta-table' });
    }

    function openDetail(m, focus) {
      detail.hidden = false;
      clear(detail);
      const heading = h('h2', null, 'Snapshot ', h('code', null, m.id));
      const counts = Object.entries(m.entity_counts || {});
      const previewBtn = button('Preview changes since this snapshot', () => preview(), 'btn');
      const previewOut = h('div', { class: 'preview-out', 'aria-live': 'polite' });
      const previewErr = errorBox();
      const dryBtn = button('Check what a restore would do', () => dryRun(), 'btn');
      const dryOut = h('div', { class: 'dry-out', 'aria-live': 'polite' });
      const restoreErr = errorBox();
      const restoreOk = okBox();
      add(detail,
        h('div', { class: 'section-head' }, heading,
          button('Close', () => { detail.hidden = true; }, 'btn btn-quiet', { 'aria-label': 'Close snapshot details' })),
        h('dl', { class: 'meta' },
          h('dt', null, 'Kind'), h('dd', null, m.kind),
          h('dt', null, 'Status'), h('dd', null, statusBadge(m.status), m.error ? ` ${m.error}` : ''),
          h('dt', null, 'Server version'), h('dd', null, fmtNum(m.server_version)),
          h('dt', null, 'Created'), h('dd', null, fmtTime(m.created_at), m.created_by ? h('span', { class: 'muted' }, ` by key ${short(m.created_by, 10)}`) : ''),
          h('dt', null, 'Completed'), h('dd', null, fmtTime(m.completed_at)),
          h('dt', null, 'Entities'), h('dd', null, fmtNum(m.entity_total),
            counts.length ? h('span', { class: 'muted' }, ` (${counts.map(([c, n]) => `${c}: ${n}`).join(', ')})`) : ''),
          h('dt', null, 'Size'), h('dd', null, `${fmtBytes(m.size_bytes)} compressed, ${fmtBytes(m.raw_bytes)} raw, level ${m.level}`),
          h('dt', null, 'SHA-256'), h('dd', null, h('code', { class: 'wrap' }, m.sha256 || '—')),
          m.note ? [h('dt', null, 'Note'), h('dd', null, m.note)] : null));
      if (m.status === 'completed') {
        add(detail,
          h('h3', null, 'Preview'),
          h('p', { class: 'muted' }, 'What changed in the space since this snapshot was taken, per collection.'),
          previewBtn, previewErr, previewOut,
          h('h3', null, 'Restore'),
          h('p', { class: 'muted' }, 'A restore makes the space\'s live entities exactly this snapshot\'s, as new changes that feeds and peers see. A pre-restore snapshot is taken first. Check the dry run, then type the snapshot id to confirm.'),
          dryBtn, dryOut, restoreErr, restoreOk);
      }
      heading.setAttribute('tabindex', '-1');
      heading.focus();
      detail.scrollIntoView({ block: 'nearest' });
      if (focus === 'preview') preview();
      if (focus === 'restore') dryBtn.focus();

      async function preview() {
        previewErr.hide();
        previewBtn.disabled = true;
        add(clear(previewOut), h('p', { class: 'loading' }, 'Comparing…'));
        try {
          const p = await call(space$(space).snapshots.preview(m.id));
          add(clear(previewOut),
            h('p', { class: 'preview-summary' },
              `${fmtNum(p.changes_since)} change${p.changes_since === 1 ? '' : 's'} since this snapshot `,
              `(snapshot at version ${fmtNum(p.snapshot.server_version)}, now ${fmtNum(p.current_version)}).`),
            deltaTable(p.delta, 'Changes since the snapshot, per collection'));
        } catch (e) {
          clear(previewOut);
          previewErr.show('Could not preview the snapshot', e);
        } finally {
          previewBtn.disabled = false;
        }
      }

      async function dryRun() {
        restoreErr.hide();
        restoreOk.hide();
        dryBtn.disabled = true;
        add(clear(dryOut), h('p', { class: 'loading' }, 'Computing…'));
        try {
          const r = await call(space$(space).snapshots.restore(m.id, { dryRun: true }));
          clear(dryOut);
          const input = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', class: 'mono confirm-input' });
          const go = h('button', { type: 'submit', class: 'btn btn-danger' }, 'Restore this snapshot');
          const form = h('form', { class: 'confirm-form', onsubmit: (e) => { e.preventDefault(); restore(input, go); } },
            field('Type the snapshot id to confirm', input, `It is ${m.id}.`),
            h('div', { class: 'form-actions' }, go));
          add(dryOut,
            h('div', { class: 'dry-summary', role: 'status' },
              h('strong', null, 'Dry run: '),
              `restoring would write ${fmtNum(r.changes.put)} entit${r.changes.put === 1 ? 'y' : 'ies'} and delete ${fmtNum(r.changes.deleted)}. `,
              'Nothing has changed yet.'),
            r.delta ? deltaTable(r.delta, 'Differences between now and the snapshot') : null,
            form);
          input.focus();
        } catch (e) {
          clear(dryOut);
          restoreErr.show('Could not compute the restore', e);
        } finally {
          dryBtn.disabled = false;
        }
      }

      async function restore(input, go) {
        restoreErr.hide();
        restoreOk.hide();
        const typed = input.value.trim();
        if (typed !== m.id) {
          restoreErr.say(typed
            ? `The id you typed ("${typed}") is not this snapshot's id. Nothing was restored.`
            : 'Type the snapshot id to confirm the restore. Nothing was restored.');
          input.setAttribute('aria-invalid', 'true');
          input.focus();
          return;
        }
        input.removeAttribute('aria-invalid');
        go.disabled = true;
        try {
          const r = await call(space$(space).snapshots.restore(m.id, { confirm: typed }));
          restoreOk.say(`Restored from ${r.restored_from}: ${fmtNum(r.changes.put)} written, ${fmtNum(r.changes.deleted)} deleted; the space is now at version ${fmtNum(r.server_version)}. Pre-restore snapshot: ${r.pre_restore_snapshot || 'none'}.`);
          input.value = '';
          loadList(true);
          refreshInfo();
        } catch (e) {
          restoreErr.show('The restore failed', e);
        } finally {
          go.disabled = false;
        }
      }
    }

    // --- chart (inline SVG, no library) -----------------------------------------
    async function loadChart() {
      try {
        const all = [];
        let c = null;
        for (let i = 0; i < 5; i++) {
          const d = await api('GET', `${sp(space)}/snapshots?status=completed&limit=200${c ? `&cursor=${encodeURIComponent(c)}` : ''}`);
          all.push(...d.snapshots);
          c = d.next_cursor;
          if (!c) break;
        }
        add(clear(chartBox), chart(all.reverse()));
      } catch (e) {
        add(clear(chartBox), h('p', { class: 'error', role: 'alert' }, explain('Could not load the chart data', e)));
      }
    }

    /** A round axis top at or above v, split in `ticks` round steps (whole numbers if integer). */
    function niceMax(v, ticks, integer) {
      const raw = Math.max(v / ticks, integer ? 1 : 0) || 1;
      const mag = 10 ** Math.floor(Math.log10(raw));
      let step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((x) => x >= raw * (1 - 1e-9));
      if (integer) step = Math.ceil(step);
      return step * ticks;
    }

    /** The same for bytes: round numbers of B, KiB, MiB... */
    function niceBytes(v, ticks) {
      let unit = 1;
      while (v / unit >= 1024 && unit < 1024 ** 4) unit *= 1024;
      return niceMax(v / unit, ticks, false) * unit;
    }

    function chart(snaps) {
      if (!snaps.length) return h('p', { class: 'empty' }, 'No completed snapshots yet.');
      // drawn at the box's own width, so text keeps its size on a phone
      const W = Math.round(Math.max(300, Math.min(960, chartBox.clientWidth || 720)));
      const narrow = W < 560;
      const H = 240;
      const m = narrow ? { l: 44, r: 58, t: 16, b: 36 } : { l: 56, r: 70, t: 16, b: 36 };
      const when = (iso) => (narrow ? fmtTime(iso).slice(5, 16) : fmtTime(iso));
      const iw = W - m.l - m.r;
      const ih = H - m.t - m.b;
      const maxE = niceMax(Math.max(...snaps.map((x) => x.entity_total)), 4, true);
      const maxS = niceBytes(Math.max(...snaps.map((x) => x.size_bytes)), 4);
      const n = snaps.length;
      const step = iw / n;
      const x = (i) => m.l + step * (i + 0.5);
      const yE = (v) => m.t + ih - (ih * v) / maxE;
      const yS = (v) => m.t + ih - (ih * v) / maxS;
      const barW = Math.max(2, Math.min(28, step * 0.6));
      const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => {
        const y = m.t + ih - ih * f;
        return [
          s('line', { x1: m.l, x2: m.l + iw, y1: y, y2: y, class: 'grid' }),
          s('text', { x: m.l - 6, y: y + 4, class: 'axis-label', 'text-anchor': 'end' }, fmtNum(Math.round(maxE * f))),
          s('text', { x: m.l + iw + 6, y: y + 4, class: 'axis-label' }, fmtBytes(Math.round(maxS * f))),
        ];
      });
      const bars = snaps.map((sn, i) => s('rect', {
        x: x(i) - barW / 2, y: yS(sn.size_bytes), width: barW, height: Math.max(0, m.t + ih - yS(sn.size_bytes)), class: 'bar-size',
      }, s('title', null, `${sn.id} (${sn.kind}) · ${fmtBytes(sn.size_bytes)} compressed · ${fmtTime(sn.created_at)}`)));
      const pts = snaps.map((sn, i) => `${x(i).toFixed(1)},${yE(sn.entity_total).toFixed(1)}`).join(' ');
      const dots = snaps.map((sn, i) => s('circle', { cx: x(i), cy: yE(sn.entity_total), r: 3.5, class: 'dot-entities' },
        s('title', null, `${sn.id} (${sn.kind}) · ${fmtNum(sn.entity_total)} entities · ${fmtTime(sn.created_at)}`)));
      // the oldest and newest times, at the ends of the axis
      const xLabels = n === 1
        ? [s('text', { x: x(0), y: H - 12, class: 'axis-label', 'text-anchor': 'middle' }, when(snaps[0].created_at))]
        : [s('text', { x: m.l, y: H - 12, class: 'axis-label', 'text-anchor': 'start' }, when(snaps[0].created_at)),
          s('text', { x: m.l + iw, y: H - 12, class: 'axis-label', 'text-anchor': 'end' }, when(snaps[n - 1].created_at))];
      const svg = s('svg', {
        viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img',
        'aria-label': `Entity count and compressed size across ${n} completed snapshot${n === 1 ? '' : 's'}; latest ${fmtNum(snaps[n - 1].entity_total)} entities, ${fmtBytes(snaps[n - 1].size_bytes)}.`,
      },
      s('title', null, 'Entities and compressed size across snapshots'),
      grid, bars,
      n > 1 ? s('polyline', { points: pts, class: 'line-entities' }) : null,
      dots, xLabels,
      s('text', { x: 8, y: m.t + ih / 2, class: 'axis-title', transform: `rotate(-90 12 ${m.t + ih / 2})`, 'text-anchor': 'middle' }, 'entities'),
      s('text', { x: W - 8, y: m.t + ih / 2, class: 'axis-title', transform: `rotate(90 ${W - 12} ${m.t + ih / 2})`, 'text-anchor': 'middle' }, 'compressed size'));
      return h('figure', { class: 'chart-fig' }, svg,
        h('figcaption', { class: 'legend' },
          h('span', { class: 'key key-entities' }), ' entities (line) ',
          h('span', { class: 'key key-size' }), ' compressed size (bars) — ',
          `${n} completed snapshot${n === 1 ? '' : 's'}, oldest to newest`));
    }

    // running snapshots of this space that someone else started show up too
    for (const [id, ev] of state.snapProgress) {
      if (ev.space === space && ev.status === 'running') track(id, { kind: ev.kind });
    }
    loadList(true);
    return {
      refresh() { loadList(true); },
      onEvent(type, d) {
        if (type !== 'snapshot') return;
        if (d.remote) {
          // an off-site upload's step: that row's cell follows it in place
          const tr = tbody && [...tbody.rows].find((r) => r.dataset.snapshot === d.snapshot);
          if (tr) tr.cells[3].replaceWith(remoteCell(d.remote, { live: true, onRetry: (b) => retryUpload(d.snapshot, b) }));
          labelRows(tbody.parentElement);
          if (d.remote.status === 'uploaded' && remote) remote.stale();
          return;
        }
        if (!tracked.has(d.snapshot) && d.status === 'running') track(d.snapshot, { kind: d.kind });
        update(d.snapshot);
        if (d.status === 'completed' || d.status === 'failed') loadList(true);
      },
    };
  }

  // ---------------------------------------------------------------------------
  // off-site copies (--remote)

  /** Of the metadata's `remote` and the last event's, the one further
   *  along (a list read before an event may land after it). */
  function laterRemote(meta, ev) {
    if (!ev || !meta) return meta || null;
    const rank = (r) => [r.attempts || 0,
      r.status === 'uploaded' || r.status === 'failed' ? 3 : r.status === 'pending' ? (r.attempts ? 2 : 0) : 1,
      r.bytes_sent || 0];
    const a = rank(meta);
    const b = rank(ev);
    for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return b[i] > a[i] ? { ...meta, ...ev } : meta;
    return meta;
  }

  /** The "Off-site" cell of a snapshot row: its upload's status, attempts
   *  and last error (metadata's `remote`, or a `snapshot` event's). */
  function remoteCell(r, { live = false, onRetry = null } = {}) {
    if (!r) return h('td', { class: 'remote-cell', dataset: { label: 'Off-site', remote: 'none' } }, h('span', { class: 'muted', title: 'No off-site copy' }, '—'));
    const n = r.attempts || 0;
    let detail = '';
    if (r.status === 'uploading' && r.bytes_total > 0 && r.bytes_sent > 0) {
      detail = `${Math.floor((100 * r.bytes_sent) / r.bytes_total)}% · attempt ${n}`;
    } else if (r.status === 'uploading' || (r.status === 'pending' && n > 0)) {
      detail = `attempt ${n}${r.status === 'pending' ? ', retrying' : ''}`;
    } else if (r.status === 'uploaded' || r.status === 'failed') {
      detail = `${n} attempt${n === 1 ? '' : 's'}`;
    }
    return h('td', { class: 'remote-cell', dataset: { label: 'Off-site', remote: r.status, attempts: String(n), live: live ? '1' : '0' } },
      statusBadge(r.status),
      detail ? h('span', { class: 'muted small' }, ` ${detail}`) : null,
      r.error ? h('div', { class: 'error-inline small' }, r.error) : null,
      r.status === 'failed' && onRetry ? button('Retry upload', (e) => onRetry(e.currentTarget), 'btn btn-small',
        { 'aria-label': 'Retry the off-site upload' }) : null,
      r.status === 'uploaded' && r.key ? h('div', { class: 'muted small' }, h('code', { class: 'wrap', title: r.key }, r.key.split('/').slice(-2).join('/'))) : null);
  }

  /** The remote's snapshots of a space (GET /remote/snapshots, admin) with
   *  an Import for each (POST …/snapshots/import {"remote": key}). */
  function remoteCard(space, imported) {
    const err = errorBox();
    const ok = okBox();
    const listBtn = button('List off-site snapshots', () => load(), 'btn');
    const where = h('p', { class: 'muted' });
    const box = h('div', { class: 'remote-list' });
    const card = h('section', { class: 'card remote-card', 'aria-label': 'Off-site snapshots' },
      h('div', { class: 'section-head' }, h('h2', null, 'Off-site copies'), listBtn),
      h('p', { class: 'muted' }, 'What the off-site remote holds for this space, from every instance that uploads there. An import downloads one, checks it in full and adds it here as an imported snapshot; restore it from the list above.'),
      where, err, ok, box);
    let loaded = false;

    async function load() {
      err.hide();
      listBtn.disabled = true;
      try {
        const d = await call(client().request('GET', '/remote/snapshots', { query: { space } }));
        loaded = true;
        where.textContent = `Remote: ${d.remote}`;
        clear(box);
        if (!d.snapshots.length) { add(box, h('p', { class: 'empty' }, 'The remote holds no snapshot of this space.')); return; }
        const t = table(['Snapshot', 'Instance', 'Kind', 'Created', 'Size', 'Encrypted', 'Actions'], d.snapshots.map((x) =>
          h('tr', { dataset: { remoteKey: x.key, snapshot: x.snapshot } },
            h('th', { scope: 'row' }, idCell(x.snapshot, 12)),
            h('td', null, idCell(x.instance_id, 10), x.instance_id === (state.status && state.status.instance_id) ? h('span', { class: 'muted small' }, ' (this one)') : null),
            h('td', null, String(x.kind).replace(/_/g, '-')),
            h('td', null, ago(x.created_at)),
            h('td', { class: 'num' }, fmtBytes(x.object_bytes)),
            h('td', null, x.encrypted ? 'yes' : 'no'),
            h('td', { class: 'actions' }, button('Import', (e) => importOne(x, e.currentTarget), 'btn btn-small',
              { 'aria-label': `Import off-site snapshot ${x.snapshot}` })))), { caption: 'Off-site snapshots, newest first', className: 'remote-table stack' });
        add(box, h('div', { class: 'table-wrap' }, t));
      } catch (e) {
        clear(box);
        if (e instanceof SnapsyncError && e.code === 'remote_not_configured') err.say('This server has no off-site remote: start it with --remote (docs/operations.md, "Off-site backups").');
        else err.show('Could not list the off-site snapshots', e);
      } finally {
        listBtn.disabled = false;
      }
    }

    async function importOne(x, btn) {
      err.hide();
      ok.hide();
      btn.disabled = true;
      const old = btn.textContent;
      btn.textContent = 'Importing…';
      try {
        const m = await call(client().request('POST', `${sp(space)}/snapshots/import`, { body: { remote: x.key } }));
        ok.say(`Imported ${x.snapshot} as snapshot ${m.id}: ${fmtNum(m.entity_total)} entities, ${fmtBytes(m.size_bytes)}, checked in full.`);
        imported();
      } catch (e) {
        err.show(`Could not import ${x.snapshot}`, e);
      } finally {
        btn.disabled = false;
        btn.textContent = old;
      }
    }

    // a new upload shows in an open list without a click
    return { card, stale() { if (loaded) load(); } };
  }

  // ---------------------------------------------------------------------------
  // sync: peers, start a job, live jobs, history

  function syncTab(panel, { space }) {
    const peersErr = errorBox();
    const peersBox = h('div', null, h('p', { class: 'loading' }, 'Loading peers…'));
    const formErr = errorBox();
    const url = h('input', { type: 'url', required: true, placeholder: 'http://host:7420', autocomplete: 'off', spellcheck: 'false' });
    const pspace = h('input', { type: 'text', required: true, value: space, autocomplete: 'off', spellcheck: 'false' });
    const ptoken = h('input', { type: 'password', required: true, autocomplete: 'off', spellcheck: 'false' });
    const dir = select([['both', 'both (pull, then push)'], ['pull', 'pull (peer → here)'], ['push', 'push (here → peer)']], 'both');
    const startBtn = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Start sync');
    const form = h('form', { class: 'sync-form grid-form', novalidate: true, onsubmit: (e) => { e.preventDefault(); start(); } },
      field('Peer URL', url), field('Peer space', pspace), field('Peer token', ptoken, 'A token of the peer, sent to it by this server.'),
      field('Direction', dir), h('div', { class: 'form-actions' }, startBtn));
    const liveBox = h('div', { class: 'progress-list', 'aria-live': 'polite' });
    const histErr = errorBox();
    const histBox = h('div');
    const moreBtn = button('Load more', () => loadJobs(false), 'btn', { hidden: true });

    add(panel,
      h('section', { class: 'card sync-card' }, h('h2', null, 'Start a sync'), form, formErr, liveBox),
      h('section', { class: 'card' }, h('h2', null, 'Peers'), peersErr, peersBox),
      h('section', { class: 'card' }, h('h2', null, 'Job history'), histErr, histBox, moreBtn));

    async function loadPeers() {
      try {
        const d = await api('GET', `${sp(space)}/peers?limit=200`);
        peersErr.hide();
        clear(peersBox);
        if (!d.peers.length) {
          add(peersBox, h('p', { class: 'empty' }, 'No persistent peers. An operator adds one with PUT /peers/{name}; you can still sync with any peer using the form above.'));
          return;
        }
        add(peersBox, table(['Peer', 'URL', 'Space', 'Direction', 'Every', 'Last status', 'Last error', ''],
          d.peers.map((p) => h('tr', { dataset: { peer: p.name } },
            h('th', { scope: 'row' }, p.name),
            h('td', null, h('code', { class: 'wrap' }, p.url)),
            h('td', null, p.space),
            h('td', null, p.direction),
            h('td', null, p.every_seconds ? `${p.every_seconds} s` : 'on demand'),
            h('td', null, p.running ? statusBadge('running') : (p.last_status ? statusBadge(p.last_status) : h('span', { class: 'muted' }, 'never run')),
              p.last_run_at ? h('div', { class: 'muted small' }, ago(p.last_run_at)) : null,
              p.failures ? h('div', { class: 'warn-text small' }, `${p.failures} failure${p.failures === 1 ? '' : 's'} in a row`) : null),
            h('td', { class: p.last_error ? 'error-inline' : 'muted' }, p.last_error || '—'),
            h('td', null, button('Use', () => {
              url.value = p.url; pspace.value = p.space; dir.value = p.direction;
              ptoken.focus();
            }, 'btn btn-small', { 'aria-label': `Fill the form with peer ${p.name}` })))),
          { caption: 'Persistent peers', className: 'peers-table stack' }));
      } catch (e) {
        clear(peersBox);
        peersErr.show('Could not load the peers', e);
      }
    }

    async function start() {
      formErr.hide();
      const missing = [[url, 'the peer URL'], [pspace, 'the peer space'], [ptoken, 'the peer token']]
        .filter(([el]) => !el.value.trim());
      if (missing.length) {
        formErr.say(`Fill in ${missing.map(([, n]) => n).join(', ')}.`);
        missing[0][0].focus();
        return;
      }
      startBtn.disabled = true;
      let id = null;
      try {
        // sync() follows the job (events, and polling when they are quiet)
        // until it ends
        const job = await call(space$(space).sync({
          peer_url: url.value.trim(), peer_space: pspace.value.trim(), peer_token: ptoken.value.trim(), direction: dir.value,
          onProgress: (p) => {
            if (!id) {
              id = p.job;
              ptoken.value = '';
              startBtn.disabled = false;
              track(id, p);
              loadJobs(true);
            }
            progress(state.syncProgress, id, { ...p, space });
            update(id);
          },
        }));
        ended(job);
      } catch (e) {
        if (!id) formErr.show('Could not start the sync', e);
        else ended(e.details && e.details.job);    // a failed job shows in its card
      } finally {
        startBtn.disabled = false;
      }
    }

    /** The end of a job started here, as its stored row says. */
    function ended(j) {
      if (j) {
        const cur = state.syncProgress.get(j.id) || {};
        progress(state.syncProgress, j.id, {
          job: j.id, space, phase: j.phase, pulled: j.pulled, pushed: j.pushed, conflicts: j.conflicts,
          percent: j.status === 'completed' ? 100 : (cur.percent || 0), status: j.status, error: j.error, errors: j.errors,
        });
        update(j.id);
      }
      jobEnded();
    }

    const tracked = new Map();
    function track(id, job) {
      if (tracked.has(id)) { update(id); return; }
      const bar = progressBar(`Progress of sync job ${id}`);
      const text = h('span', { class: 'progress-text' });
      const peer = (job && (job.peer_url || job.peer)) || '';
      const card = h('div', { class: 'progress-item', dataset: { job: id } },
        h('div', { class: 'progress-head' },
          h('span', null, 'Sync ', idCell(id, 12), job && job.direction ? ` (${job.direction})` : '', peer ? [' with ', h('code', null, peer)] : ''),
          button('Dismiss', () => { card.remove(); tracked.delete(id); }, 'btn btn-quiet btn-small',
            { 'aria-label': `Dismiss progress of sync job ${id}` })),
        bar, text);
      liveBox.prepend(card);
      tracked.set(id, { card, bar, text, job: job || {} });
      update(id);
    }
    function update(id) {
      const t = tracked.get(id);
      if (!t) return;
      const ev = state.syncProgress.get(id) || {};
      const status = ev.status || t.job.status || 'running';
      const pct = status === 'completed' ? 100 : (ev.percent || 0);
      t.bar.set(pct, status);
      add(clear(t.text), statusBadge(status), ' ',
        h('span', { class: 'phase' }, `phase ${ev.phase || t.job.phase || 'starting'}`),
        ` · ${Math.round(pct)}% · pulled ${fmtNum(ev.pulled || 0)} · pushed ${fmtNum(ev.pushed || 0)} · conflicts ${fmtNum(ev.conflicts || 0)}`,
        ev.errors ? ` · not applied ${fmtNum(ev.errors)}` : '',
        ev.error ? h('div', { class: 'error-inline' }, ev.error) : null);
      t.card.dataset.status = status;
    }

    let cursor = null;
    let tbody = null;
    let jobsSeq = 0;
    async function loadJobs(first) {
      const seq = ++jobsSeq;
      moreBtn.disabled = true;
      try {
        const d = await api('GET', `${sp(space)}/sync/jobs?limit=20${!first && cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
        if (seq !== jobsSeq) return;          // a newer load is on its way
        histErr.hide();
        if (first) {
          clear(histBox);
          tbody = h('tbody');
          add(histBox, h('div', { class: 'table-wrap' }, h('table', { class: 'table jobs-table stack' },
            h('caption', { class: 'sr-only' }, 'Sync jobs, newest first'),
            h('thead', null, h('tr', null, ['Job', 'Peer', 'Direction', 'Status', 'Pulled', 'Pushed', 'Conflicts', 'Bytes', 'Started', 'Took', 'Error']
              .map((t) => h('th', { scope: 'col' }, t)))), tbody)));
        }
        for (const row of d.jobs) {
          // the end event can come before the stored row says so: trust the event
          const ev = state.syncProgress.get(row.id);
          const j = row.status === 'running' && ev && ev.status && ev.status !== 'running'
            ? { ...row, status: ev.status, phase: ev.phase, pulled: ev.pulled, pushed: ev.pushed, conflicts: ev.conflicts, error: ev.error || row.error }
            : row;
          const took = j.finished_at ? Date.parse(j.finished_at) - Date.parse(j.started_at) : null;
          add(tbody, h('tr', { dataset: { job: j.id, status: j.status } },
            h('th', { scope: 'row' }, idCell(j.id, 10)),
            h('td', { class: 'nowrap' }, h('code', null, j.peer_url), j.peer_space ? h('span', { class: 'muted' }, ` / ${j.peer_space}`) : ''),
            h('td', null, j.direction),
            h('td', null, statusBadge(j.status),
              j.status !== 'completed' && j.phase ? h('div', { class: 'muted small' }, `phase ${j.phase}`) : null),
            h('td', { class: 'num' }, fmtNum(j.pulled)),
            h('td', { class: 'num' }, fmtNum(j.pushed)),
            h('td', { class: 'num' }, fmtNum(j.conflicts)),
            h('td', { class: 'num' }, fmtBytes(j.bytes)),
            h('td', null, ago(j.started_at)),
            h('td', null, took === null ? '—' : fmtDuration(took)),
            h('td', { class: j.error ? 'error-inline' : 'muted' }, j.error || '—')));
        }
        if (first && !d.jobs.length) add(tbody, h('tr', null, h('td', { colspan: '11', class: 'empty' }, 'No sync jobs yet.')));
        labelRows(tbody.parentElement);
        cursor = d.next_cursor;
        moreBtn.hidden = !cursor;
      } catch (e) {
        if (seq === jobsSeq) histErr.show('Could not load the sync jobs', e);
      } finally {
        moreBtn.disabled = false;
      }
    }

    /** After a job ends: reload now, and once more when its row has surely been stored. */
    let again = null;
    function jobEnded() {
      loadJobs(true);
      loadPeers();
      clearTimeout(again);
      again = setTimeout(() => { loadJobs(true); loadPeers(); }, 1500);
    }

    for (const [id, ev] of state.syncProgress) {
      if (ev.space === space && ev.status === 'running') track(id, { peer_url: ev.peer });
    }
    loadPeers();
    loadJobs(true);
    return {
      refresh() { loadPeers(); loadJobs(true); },
      onEvent(type, d) {
        if (type !== 'sync') return;
        if (!tracked.has(d.job) && d.status === 'running') track(d.job, { peer_url: d.peer });
        update(d.job);
        if (d.status !== 'running') jobEnded();
      },
      dispose() { clearTimeout(again); },
    };
  }

  // ---------------------------------------------------------------------------
  // conflicts

  function conflictsTab(panel, { space, refreshInfo }) {
    const err = errorBox();
    const ok = okBox();
    const listBox = h('div', { class: 'conflict-list' }, h('p', { class: 'loading' }, 'Loading conflicts…'));
    const moreBtn = button('Load more', () => load(false), 'btn', { hidden: true });
    add(panel,
      h('div', { class: 'section-head' }, h('h2', null, 'Conflicts'), button('Refresh', () => load(true), 'btn btn-quiet')),
      h('p', { class: 'muted' }, 'Each conflict keeps a version of an entity that lost to the current one. Differing top-level fields are highlighted.'),
      ok, err, listBox, moreBtn);

    let cursor = null;
    async function load(first) {
      moreBtn.disabled = true;
      try {
        // space.conflicts(): each with both bodies and resolve()
        const list = await call(space$(space).conflicts({ limit: 20, cursor: first ? undefined : cursor || undefined }));
        err.hide();
        if (first) clear(listBox);
        if (first && !list.length) add(listBox, h('p', { class: 'empty' }, 'No conflicts in this space.'));
        add(listBox, ...list.map(card));
        cursor = list.nextCursor;
        moreBtn.hidden = !cursor;
      } catch (e) {
        if (first) clear(listBox);
        err.show('Could not load the conflicts', e);
      } finally {
        moreBtn.disabled = false;
      }
    }

    function jsonSide(obj, diff, label) {
      const pre = h('pre', { class: 'json', tabindex: '0', 'aria-label': label });
      if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
        pre.textContent = JSON.stringify(obj, null, 2);
        return pre;
      }
      // one block per top-level member, so a differing member can be marked
      const keys = Object.keys(obj).sort();
      add(pre, h('span', { class: 'jline' }, keys.length ? '{' : '{}'));
      keys.forEach((k, i) => {
        const val = JSON.stringify(obj[k], null, 2).replace(/\n/g, '\n  ');
        const line = h('span', { class: diff.has(k) ? 'jline jdiff' : 'jline', dataset: { key: k } },
          `  ${JSON.stringify(k)}: ${val}${i < keys.length - 1 ? ',' : ''}`);
        if (diff.has(k)) {
          line.title = 'differs from the other side';
          add(line, h('span', { class: 'sr-only' }, ' (differs)'));
        }
        add(pre, line);
      });
      if (keys.length) add(pre, h('span', { class: 'jline' }, '}'));
      return pre;
    }

    function card(conflict) {
      const c = conflict.raw;
      const current = conflict.currentEntity;
      const curBody = current && !current.deleted ? current.body : null;
      const conBody = c.deleted ? null : c.conflicting_body;
      const diff = new Set();
      const isObj = (v) => v && typeof v === 'object' && !Array.isArray(v);
      if (isObj(curBody) && isObj(conBody)) {
        for (const k of new Set([...Object.keys(curBody), ...Object.keys(conBody)])) {
          if (stable(curBody[k]) !== stable(conBody[k])) diff.add(k);
        }
      }
      const cardErr = errorBox();
      const cardOk = okBox();
      const titleId = nextId('conflict');
      const el = h('article', { class: 'card conflict', 'aria-labelledby': titleId, dataset: { conflict: c.id } });
      const curSide = current && current.deleted
          ? h('p', { class: 'muted' }, `Deleted (tombstone, rev ${current.rev}).`)
          : jsonSide(curBody, diff, `Current body of ${c.entity_id}`);
      const conSide = c.deleted
        ? h('p', { class: 'muted' }, 'A deletion.')
        : jsonSide(conBody, diff, `Conflicting body of ${c.entity_id}`);
      const merge = h('div', { class: 'merge', hidden: true });
      const buttons = h('div', { class: 'resolve-buttons', role: 'group', 'aria-label': `Resolve the conflict on ${c.entity_id}` },
        button('Keep current (local_wins)', () => resolve('local_wins'), 'btn', { dataset: { strategy: 'local_wins' } }),
        button('Use conflicting (remote_wins)', () => resolve('remote_wins'), 'btn', { dataset: { strategy: 'remote_wins' } }),
        button('Keep both (keep_both)', () => resolve('keep_both'), 'btn', { dataset: { strategy: 'keep_both' } }),
        button('Merge… (merge)', () => openMerge(), 'btn', { dataset: { strategy: 'merge' }, 'aria-expanded': 'false' }));

      add(el,
        h('h3', { id: titleId }, h('code', null, `${c.collection} / ${c.entity_id}`)),
        h('p', { class: 'muted small' }, 'Detected ', ago(c.detected_at), ` · origin ${c.origin || 'unknown'} · conflict `, idCell(c.id, 12)),
        diff.size ? h('p', { class: 'diff-summary' }, 'Differs in: ', [...diff].sort().map((k, i) => [i ? ', ' : '', h('code', null, k)])) : null,
        h('div', { class: 'side-by-side' },
          h('div', { class: 'side' }, h('h4', null, 'Current ', h('code', { class: 'small' }, current ? `rev ${current.rev}` : `rev ${c.current_rev}`)), curSide),
          h('div', { class: 'side' }, h('h4', null, 'Conflicting ', h('code', { class: 'small' }, `rev ${c.conflicting_rev}`)), conSide)),
        buttons, merge, cardErr, cardOk);

      function openMerge() {
        const toggle = buttons.querySelector('[data-strategy="merge"]');
        if (!merge.hidden) { merge.hidden = true; toggle.setAttribute('aria-expanded', 'false'); return; }
        toggle.setAttribute('aria-expanded', 'true');
        clear(merge);
        const ta = h('textarea', { rows: '12', spellcheck: 'false', class: 'mono' });
        ta.value = JSON.stringify(curBody || conBody || {}, null, 2);
        const save = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Save merged body');
        add(merge, h('form', { onsubmit: (e) => { e.preventDefault(); saveMerge(ta, save); } },
          field('Merged body (a JSON object; starts as the current body)', ta),
          h('div', { class: 'form-actions' }, save,
            button('Cancel', () => { merge.hidden = true; toggle.setAttribute('aria-expanded', 'false'); toggle.focus(); }, 'btn btn-quiet'))));
        merge.hidden = false;
        ta.focus();
      }

      function saveMerge(ta, save) {
        cardErr.hide();
        let body;
        try {
          body = JSON.parse(ta.value);
        } catch (e) {
          cardErr.say(`The merged body is not valid JSON: ${e.message}. Nothing was saved.`);
          ta.focus();
          return;
        }
        if (!isObj(body)) {
          cardErr.say('The merged body must be a JSON object ({ … }). Nothing was saved.');
          ta.focus();
          return;
        }
        resolve('merge', body, save);
      }

      async function resolve(strategy, body, extraBtn) {
        cardErr.hide();
        cardOk.hide();
        const all = [...buttons.querySelectorAll('button'), extraBtn].filter(Boolean);
        all.forEach((b) => { b.disabled = true; });
        try {
          const r = await call(conflict.resolve(body === undefined ? strategy : { merge: body }));
          const e = r.entity || {};
          ok.say(`Resolved the conflict on ${c.collection}/${c.entity_id} with ${strategy.replace('_', ' ')}${e.id ? `: ${e.id} is now rev ${e.rev}` : ''}.`);
          el.remove();
          if (!listBox.querySelector('.conflict')) add(listBox, h('p', { class: 'empty' }, 'No conflicts in this space.'));
          refreshInfo();
          ok.setAttribute('tabindex', '-1');
          ok.focus();
        } catch (e) {
          cardErr.show(`Could not resolve the conflict on ${c.entity_id}`, e);
          all.forEach((b) => { b.disabled = false; });
        }
      }
      return el;
    }

    load(true);
    return { refresh() { load(true); } };
  }

  // ---------------------------------------------------------------------------
  // audit (admin)

  function auditView(root) {
    const title = h('h1', null, 'Audit log');
    const err = errorBox();
    const spaceSel = select([['', 'all spaces']], '');
    const actionSel = select([['', 'all actions'], ...AUDIT_ACTIONS.map((a) => [a, a])], '');
    const listBox = h('div');
    const moreBtn = button('Load more', () => load(false), 'btn', { hidden: true });
    add(root, h('div', { class: 'view-head' }, title),
      h('p', { class: 'muted' }, 'Newest first. Who did what, from where.'),
      h('div', { class: 'filters' }, field('Space', spaceSel), field('Action', actionSel)),
      err, listBox, moreBtn);
    focusHeading(title);
    spaceSel.addEventListener('change', () => load(true));
    actionSel.addEventListener('change', () => load(true));

    api('GET', '/spaces?limit=1000').then((d) => {
      for (const x of d.spaces) add(spaceSel, h('option', { value: x.name }, x.name));
    }, (e) => err.show('Could not load the list of spaces', e));

    let cursor = null;
    let tbody = null;
    let seqN = 0;
    async function load(first) {
      const seq = ++seqN;
      const q = new URLSearchParams({ limit: '50' });
      if (spaceSel.value) q.set('space', spaceSel.value);
      if (actionSel.value) q.set('action', actionSel.value);
      if (!first && cursor) q.set('cursor', cursor);
      moreBtn.disabled = true;
      try {
        const d = await api('GET', `/audit?${q}`);
        if (seq !== seqN) return;
        err.hide();
        if (first) {
          clear(listBox);
          tbody = h('tbody');
          add(listBox, h('div', { class: 'table-wrap' }, h('table', { class: 'table audit-table stack' },
            h('caption', { class: 'sr-only' }, 'Audit entries, newest first'),
            h('thead', null, h('tr', null, ['When', 'Action', 'Space', 'Target', 'Actor', 'Details', 'From']
              .map((t) => h('th', { scope: 'col' }, t)))), tbody)));
        }
        for (const a of d.entries) {
          add(tbody, h('tr', { dataset: { action: a.action } },
            h('td', null, ago(a.at)),
            h('th', { scope: 'row' }, h('code', null, a.action)),
            h('td', null, a.space || h('span', { class: 'muted' }, '—')),
            h('td', null, a.target ? h('code', { class: 'wrap' }, a.target) : h('span', { class: 'muted' }, '—')),
            h('td', null, idCell(a.actor, 10)),
            h('td', null, a.meta ? h('code', { class: 'wrap small' }, JSON.stringify(a.meta)) : h('span', { class: 'muted' }, '—')),
            h('td', null, a.remote_addr || '—')));
        }
        if (first && !d.entries.length) add(tbody, h('tr', null, h('td', { colspan: '7', class: 'empty' }, 'No audit entries match.')));
        labelRows(tbody.parentElement);
        cursor = d.next_cursor;
        moreBtn.hidden = !cursor;
      } catch (e) {
        if (seq !== seqN) return;
        if (e.status === 403) {
          state.isAdmin = false;
          $('nav-audit').hidden = true;
          clear(listBox);
          err.show('The audit log is for admin keys only', e);
        } else {
          err.show('Could not load the audit log', e);
        }
      } finally {
        moreBtn.disabled = false;
      }
    }
    load(true);
    return { refresh() { load(true); } };
  }

  // ---------------------------------------------------------------------------
  // start

  function init() {
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const t = $('token-input').value.trim();
      if (!t) {
        const le = $('login-error');
        le.textContent = 'Enter a token to sign in.';
        le.hidden = false;
        $('token-input').focus();
        return;
      }
      signIn(t);
    });
    $('signout').addEventListener('click', () => signOut('Signed out. The token was removed from this tab.', { info: true }));
    window.addEventListener('hashchange', render);
    let saved = null;
    try { saved = sessionStorage.getItem(TOKEN_KEY); } catch { saved = null; }
    if (saved) signIn(saved, { fromStorage: true });
    else showLogin();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
}());
