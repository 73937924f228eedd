// bench/lib/tracker-data.mjs - the pieces of the tracker-like data set that
// bench/snapshot (tracker.mjs) and bench/sync (sync.mjs) share: a seeded PRNG
// and hash, word lists, the layout of N entities over five collections
// (projects 0.1 %, milestones 1.9 %, issues 28 %, relationships 20 %,
// comments the rest), and entity ids. Each benchmark builds its bodies from
// these (their body shapes differ a little and are kept as they were
// measured). Deterministic: the same N gives the same entities.

export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
export function hash32(a, b) {
  let h = Math.imul((a >>> 0) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul((b >>> 0) + 0x7f4a7c15, 0xc2b2ae35);
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b); h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35); h ^= h >>> 16;
  return h >>> 0;
}

export const WORDS = ('the a to of and in on for with when after before while is it not this that from by ' +
  'checkout cart coupon payment invoice customer order shipping address login session token password ' +
  'dashboard report export import sync snapshot restore backup migration schema index query latency ' +
  'timeout retry error warning crash freeze spinner button modal dialog dropdown tooltip sidebar header ' +
  'footer page screen mobile desktop browser safari firefox chrome android ios tablet keyboard mouse ' +
  'user admin operator guest team project milestone sprint release version build deploy rollback ' +
  'staging production canary feature flag config setting toggle default value field column row table ' +
  'search filter sort paginate cursor limit offset cache memory disk network proxy gateway service ' +
  'worker queue job cron schedule webhook email notification alert metric log trace span request ' +
  'response status header body json csv pdf upload download attachment image thumbnail avatar profile ' +
  'permission role access denied forbidden unauthorized expired invalid missing duplicate conflict ' +
  'slow fast broken fixed flaky intermittent reproducible regression performance accessibility ' +
  'translation locale timezone currency rounding tax discount refund subscription plan trial billing ' +
  'should could would must expected actual steps reproduce observed see attached screenshot please ' +
  'investigate confirm verify merged reviewed approved blocked waiting pending done closed reopened').split(' ');
export const FIRST = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'ivan', 'judy', 'mallory',
  'niaj', 'olivia', 'peggy', 'rupert', 'sybil', 'trent', 'victor', 'walter', 'yvonne'];
export const STATUSES = ['backlog', 'todo', 'in_progress', 'in_review', 'blocked', 'done', 'closed'];
export const PRIORITIES = ['p0', 'p1', 'p2', 'p3', 'p4'];
export const TYPES = ['bug', 'feature', 'task', 'chore', 'spike', 'incident'];
export const LABELS = ['frontend', 'backend', 'api', 'ux', 'perf', 'security', 'infra', 'docs', 'good-first-issue',
  'needs-triage', 'regression', 'customer', 'mobile', 'billing', 'search', 'auth'];
export const COLORS = ['#d73a4a', '#0075ca', '#cfd3d7', '#a2eeef', '#7057ff', '#008672', '#e4e669', '#d876e3'];
export const REL_TYPES = ['blocks', 'relates_to', 'duplicates', 'parent_of', 'caused_by', 'clones'];
export const BROWSERS = ['Chrome 131', 'Firefox 133', 'Safari 18.1', 'Edge 131', 'Chrome Android 131', 'Safari iOS 18'];

export const pick = (r, a) => a[Math.floor(r() * a.length)];
export const between = (r, lo, hi) => lo + Math.floor(r() * (hi - lo + 1));
export function words(r, lo, hi) {
  const n = between(r, lo, hi);
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = pick(r, WORDS);
  return out.join(' ');
}
export function sentences(r, lo, hi) {
  let left = between(r, lo, hi);
  const out = [];
  while (left > 0) {
    const k = Math.min(left, between(r, 6, 18));
    const s = words(r, k, k);
    out.push(s[0].toUpperCase() + s.slice(1) + '.');
    left -= k;
  }
  return out.join(' ');
}
export const user = (r) => `${pick(r, FIRST)}.${between(r, 1, 400)}`;
export const T0 = Date.UTC(2025, 0, 1);
export const date = (r) => new Date(T0 + Math.floor(r() * 700 * 86400e3)).toISOString();
export const day = (r) => date(r).slice(0, 10);

export function layout(N) {
  const projects = Math.max(1, Math.round(N * 0.001));
  const milestones = Math.max(1, Math.round(N * 0.019));
  const issues = Math.max(1, Math.round(N * 0.28));
  const relationships = Math.round(N * 0.20);
  const comments = Math.max(0, N - projects - milestones - issues - relationships);
  const cols = [['projects', projects], ['milestones', milestones], ['issues', issues],
    ['relationships', relationships], ['comments', comments]];
  let start = 0;
  const out = [];
  for (const [name, count] of cols) { out.push({ name, start, count }); start += count; }
  return out;
}
export function locate(L, n) {
  for (let i = L.length - 1; i >= 0; i--) if (n >= L[i].start) return { col: L[i].name, k: n - L[i].start, ci: i };
  throw new Error('bad index');
}
export const COLSEED = { projects: 11, milestones: 23, issues: 37, relationships: 41, comments: 53 };
export function entityId(col, k) {
  switch (col) {
    case 'projects': return `PRJ-${String(k + 1).padStart(4, '0')}`;
    case 'milestones': return `ms-${k + 1}`;
    case 'issues': return `ISS-${k + 1}`;
    case 'relationships': return `rel-${k + 1}`;
    default: return `c-${hash32(k, 77).toString(36)}-${k + 1}`;
  }
}
