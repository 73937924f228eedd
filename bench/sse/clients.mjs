// bench/sse/clients.mjs - one client process of bench/sse: holds many SSE
// connections to one server and reports over the IPC channel (it is forked
// by bench/sse/bench.mjs; it does nothing on its own).
//
// Raw sockets, no node:http: a subscriber is a socket that sent
//   GET <path> HTTP/1.1 (+ Authorization when given)
// and got a 200 head. The stream is not fully parsed; the client only looks
// for what it is asked about, so that the client side costs as little as
// possible per event:
//   - latency trials: the arrival time (process.hrtime, a monotonic clock
//     shared by every process of the machine) of the first chunk holding a
//     marker (the trigger entity's id) on each connection;
//   - throughput: the number of "event: change" frames received.
//
// Messages in (process.on('message')):
//   {cmd:'open', host, port, path, headers, count, concurrency, localAddress}
//       -> {type:'ready', ok, failed, codes, errors, ms}
//   {cmd:'arm', trial, marker}   -> {type:'armed', trial}; later, once every
//       open connection saw the marker: {type:'trial-done', trial, got, missing}
//   {cmd:'collect', trial}       -> {type:'arrivals', trial, us:[...], missing}
//       (microseconds of process.hrtime.bigint(), per connection that saw it)
//   {cmd:'count', tag}           -> {type:'count', tag, total, open, closed,
//       overflow, minPerConn, maxPerConn, atUs}
//   {cmd:'close'}                -> destroys every socket and exits
// Exits by itself when the parent goes away or after --max-s (600 s).
import net from 'node:net';

const MAX_S = Number(process.env.SSE_BENCH_CLIENT_MAX_S || 600);
setTimeout(() => process.exit(3), MAX_S * 1000).unref();
process.on('disconnect', () => process.exit(0));

const EVENT_CHANGE = Buffer.from('event: change');
const OVERFLOW = Buffer.from('event: overflow');
const READ_BUF = Buffer.allocUnsafe(65536);
const conns = [];
let open = 0;
let closed = 0;
let trial = null;        // {id, marker: Buffer, pending, got}

const send = (m) => { if (process.connected) process.send(m); };

/** Occurrences of pat in (tail + chunk) that end inside chunk. */
function countIn(c, chunk, pat) {
  let n = 0;
  if (c.tail && c.tail.length) {
    // matches that straddle the boundary
    const edge = Buffer.concat([c.tail, chunk.subarray(0, pat.length - 1)]);
    let i = edge.indexOf(pat);
    while (i >= 0) { if (i + pat.length > c.tail.length) n++; i = edge.indexOf(pat, i + 1); }
  }
  let i = chunk.indexOf(pat);
  while (i >= 0) { n++; i = chunk.indexOf(pat, i + pat.length); }
  return n;
}

function keepTail(c, chunk, len) {
  c.tail = chunk.length >= len ? Buffer.from(chunk.subarray(chunk.length - len)) : Buffer.concat([c.tail || Buffer.alloc(0), chunk]).subarray(-len);
}

function openOne(opts, done) {
  const c = { sock: null, head: true, status: 0, buf: null, events: 0, overflow: 0, tail: null, arrival: 0n, alive: true };
  // onread with one shared buffer: no Buffer allocated per read (less GC,
  // less CPU per event); the data is used synchronously, copies kept.
  const sock = net.connect({ host: opts.host, port: opts.port, localAddress: opts.localAddress,
    onread: { buffer: READ_BUF, callback: (n, buf) => { onData(buf.subarray(0, n)); } } });
  c.sock = sock;
  sock.setNoDelay(true);
  let finished = false;
  const fin = (ok, why) => { if (!finished) { finished = true; done(c, ok, why); } };
  const req = `GET ${opts.path} HTTP/1.1\r\nHost: ${opts.host}:${opts.port}\r\nAccept: text/event-stream\r\n` +
    Object.entries(opts.headers || {}).map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n';
  sock.on('connect', () => sock.write(req));
  const onData = (d) => {
    if (c.head) {
      c.buf = c.buf ? Buffer.concat([c.buf, d]) : Buffer.from(d);
      const e = c.buf.indexOf('\r\n\r\n');
      if (e < 0) { if (c.buf.length > 16384) { sock.destroy(); fin(false, 'head too large'); } return; }
      c.status = Number(c.buf.subarray(9, 12).toString('latin1'));
      c.head = false;
      const rest = c.buf.subarray(e + 4);
      c.buf = null;
      if (c.status !== 200) { fin(false, `HTTP ${c.status}`); sock.destroy(); return; }
      open++;
      fin(true);
      if (rest.length) onBody(c, rest);
      return;
    }
    onBody(c, d);
  };
  sock.on('error', (e) => { fin(false, e.code || e.message); });
  sock.on('close', () => {
    if (c.alive && c.status === 200) { open--; closed++; }
    c.alive = false;
    fin(false, 'closed');
  });
  sock.setTimeout(30000, () => { if (c.head) { sock.destroy(); fin(false, 'timeout'); } else sock.setTimeout(0); });
  return c;
}

function onBody(c, d) {
  const t = process.hrtime.bigint();
  c.events += countIn(c, d, EVENT_CHANGE);
  if (d.indexOf(OVERFLOW) >= 0) c.overflow++;
  if (trial && c.arrival === 0n && c.trialId !== trial.id) {
    if (d.indexOf(trial.marker) >= 0 || (c.tail && Buffer.concat([c.tail, d.subarray(0, trial.marker.length)]).indexOf(trial.marker) >= 0)) {
      c.arrival = t;
      c.trialId = trial.id;
      trial.got++;
      if (trial.got >= trial.expect) send({ type: 'trial-done', trial: trial.id, got: trial.got, missing: 0 });
    }
  }
  keepTail(c, d, 64);
}

process.on('message', (m) => {
  if (m.cmd === 'open') {
    const t0 = Date.now();
    let started = 0;
    let settled = 0;
    let ok = 0;
    let failed = 0;
    const codes = {};
    const errors = {};
    const next = () => {
      while (started < m.count && started - settled < (m.concurrency || 200)) {
        started++;
        conns.push(openOne(m, (c, good, why) => {
          settled++;
          if (good) ok++;
          else {
            failed++;
            if (c.status) codes[c.status] = (codes[c.status] || 0) + 1;
            else errors[why] = (errors[why] || 0) + 1;
          }
          if (settled === m.count) send({ type: 'ready', ok, failed, codes, errors, ms: Date.now() - t0 });
          else next();
        }));
      }
    };
    next();
  } else if (m.cmd === 'arm') {
    for (const c of conns) { c.arrival = 0n; }
    const expect = conns.filter((c) => c.alive && c.status === 200).length;
    trial = { id: m.trial, marker: Buffer.from(m.marker), got: 0, expect };
    send({ type: 'armed', trial: m.trial, expect });
  } else if (m.cmd === 'collect') {
    const us = [];
    let missing = 0;
    for (const c of conns) {
      if (!(c.status === 200)) continue;
      if (c.trialId === m.trial && c.arrival) us.push(Number(c.arrival / 1000n));
      else missing++;
    }
    trial = null;
    send({ type: 'arrivals', trial: m.trial, us, missing });
  } else if (m.cmd === 'count') {
    let total = 0;
    let overflow = 0;
    let min = Infinity;
    let max = 0;
    for (const c of conns) {
      if (c.status !== 200) continue;
      total += c.events;
      overflow += c.overflow;
      if (c.events < min) min = c.events;
      if (c.events > max) max = c.events;
    }
    send({ type: 'count', tag: m.tag, total, open, closed, overflow, minPerConn: min === Infinity ? 0 : min, maxPerConn: max, atUs: Number(process.hrtime.bigint() / 1000n) });
  } else if (m.cmd === 'close') {
    for (const c of conns) c.sock.destroy();
    setTimeout(() => process.exit(0), 50);
  }
});
send({ type: 'hello', pid: process.pid });
