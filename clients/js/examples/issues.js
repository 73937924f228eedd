// issues.js - a live list of issues that works offline, on snapsync-client.
// The replica keeps the space's "issues" in IndexedDB: the list shows at
// once after a reload, edits made while the server is away are kept and
// pushed when it comes back, and a conflict shows with both versions.
const params = new URLSearchParams(location.search);
const server = params.get('server') || location.origin;
const { snapsync } = await import(`${server}/sdk/snapsync.js`);
const $ = (id) => document.getElementById(id);
let replica = null;

function showError(err) {
  $('error').hidden = !err;
  $('error').textContent = err ? `${err.code} (${err.status || 'no answer'}): ${err.message}` : '';
}

function render() {
  const issues = replica.query((e) => !e.body.done, { collection: 'issues' })
    .sort((a, b) => String(a.body.title).localeCompare(String(b.body.title)));
  $('list').replaceChildren(...issues.map((e) => {
    const li = document.createElement('li');
    li.textContent = e.body.title;
    li.dataset.id = e.id;
    if (e.pending) li.className = 'pending';
    return li;
  }));
}

async function open(token) {
  sessionStorage.setItem('snapsync-token', token);
  const db = snapsync({ url: server, token });
  replica = db.space(params.get('space') || 'demo').replica({ persist: 'indexeddb', collections: ['issues'] });
  replica.subscribe(render);
  replica.on('status', (s) => {
    $('status').textContent = `${s.state}${s.online ? '' : ' (offline)'}, version ${s.version}, ${s.pending} edit(s) waiting`;
    if (s.error && !s.online) showError(s.error);
  });
  replica.on('settled', ({ result }) => showError(result.status === 'error' ? result.error : null));
  replica.on('conflict', (c) => {
    showError({ code: 'conflict', status: 409, message: `"${c.conflicting?.title}" lost to "${c.current?.title}": kept both` });
    c.resolve('keep_both');
  });
  try {
    await replica.ready;
    showError(null);
    $('add').hidden = false;
    render();
  } catch (err) {
    showError(err);
  }
}

$('signin').addEventListener('submit', (ev) => { ev.preventDefault(); open($('token').value.trim()); });
$('add').addEventListener('submit', (ev) => {
  ev.preventDefault();
  replica.put('issues', `i-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`, { title: $('title').value });
  $('title').value = '';
});
const saved = sessionStorage.getItem('snapsync-token');
if (saved) open(saved);
