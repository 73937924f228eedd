// bench/sse/writer.mjs - the publisher of bench/sse's throughput phase
// (forked by bench.mjs): `conns` keep-alive connections, each sending entity
// PUTs back to back (one in flight per connection, distinct ids) for
// `seconds`, as fast as the server answers.
//
// IPC in:  {cmd:'run', host, port, space, headers, conns, seconds, prefix}
// IPC out: {type:'done', ok, failed, codes, errors, ms}
import net from 'node:net';

process.on('disconnect', () => process.exit(0));
setTimeout(() => process.exit(3), 600_000).unref();

function run(m) {
  const t0 = Date.now();
  const until = t0 + m.seconds * 1000;
  let ok = 0;
  let failed = 0;
  const codes = {};
  const errors = {};
  let live = m.conns;
  let n = 0;
  const extra = Object.entries(m.headers || {}).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const body = Buffer.from(JSON.stringify({ title: 'bench event', n: 0, tags: ['a', 'b'], pad: 'x'.repeat(64) }));
  const finish = () => {
    if (--live === 0) process.send({ type: 'done', ok, failed, codes, errors, ms: Date.now() - t0 });
  };
  for (let i = 0; i < m.conns; i++) {
    const sock = net.connect({ host: m.host, port: m.port });
    sock.setNoDelay(true);
    let buf = Buffer.alloc(0);
    let done = false;
    const end = () => { if (!done) { done = true; sock.destroy(); finish(); } };
    const sendOne = () => {
      if (Date.now() >= until) { end(); return; }
      const id = `${m.prefix}-${i}-${n++}`;
      sock.write(`PUT /api/v1/spaces/${m.space}/collections/c/entities/${id} HTTP/1.1\r\nHost: ${m.host}:${m.port}\r\n` +
        `${extra}Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
      sock.write(body);
    };
    sock.on('connect', sendOne);
    sock.on('data', (d) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      for (;;) {
        const e = buf.indexOf('\r\n\r\n');
        if (e < 0) return;
        const head = buf.subarray(0, e).toString('latin1');
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        const len = cl ? Number(cl[1]) : 0;
        if (buf.length < e + 4 + len) return;
        const status = Number(head.slice(9, 12));
        buf = buf.subarray(e + 4 + len);
        if (status === 200 || status === 201) ok++;
        else { failed++; codes[status] = (codes[status] || 0) + 1; }
        sendOne();
      }
    });
    sock.on('error', (e) => { errors[e.code || e.message] = (errors[e.code || e.message] || 0) + 1; });
    sock.on('close', end);
  }
}

process.on('message', (m) => { if (m.cmd === 'run') run(m); });
process.send({ type: 'hello', pid: process.pid });
