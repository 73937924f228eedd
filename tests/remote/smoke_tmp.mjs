import { startS3, startDav } from '/work/wt-remote/tests/remote/servers.mjs';
import { startServer, apiOk, api, putSpace, sleep } from '/work/wt-remote/tests/e2e/helpers.mjs';
const kind = process.argv[2];
const rs = kind === 's3' ? await startS3() : await startDav();
const extra = process.argv[3] === 'enc' ? ['--remote-encrypt-to', 'age1s06a5vfat0jqxdh447yaewxkvdtelkg7dm8cv8la6fcuy3nsl9es60dgah'] : [];
const srv = await startServer({ args: [...rs.args(), '--remote-retry-ms', '200', ...extra], env: rs.env });
try {
  await putSpace(srv, 'app');
  for (let i = 0; i < 5; i++) await apiOk(srv, 'PUT', `/api/v1/spaces/app/collections/c/entities/e${i}`, { body: { i } });
  const s = await apiOk(srv, 'POST', '/api/v1/spaces/app/snapshots', { body: {} }, 201);
  console.log('created', s.remote);
  for (let i = 0; i < 50; i++) {
    const g = await apiOk(srv, 'GET', `/api/v1/spaces/app/snapshots/${s.id}`);
    if (g.remote && (g.remote.status === 'uploaded' || g.remote.status === 'failed')) { console.log(g.remote); break; }
    await sleep(100);
  }
  console.log(await rs.keys());
  const l = await api(srv, 'GET', '/api/v1/remote/snapshots');
  console.log(l.status, l.text.slice(0, 600));
} finally {
  await srv.stop();
  console.log(srv.logs.filter(o => /remote/.test(o.msg)).map(o => JSON.stringify(o)).join('\n'));
  await rs.close();
}
