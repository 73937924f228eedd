/* router.c - see router.h. Built once at startup, then read-only: matching
 * is a linear scan of compiled segments (a few dozen routes, well under a
 * microsecond), with no allocation. Loop thread. */
#include "net/router.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/names.h"
#include "core/util.h"

void router_init(struct router *rt) { memset(rt, 0, sizeof *rt); }

void router_free(struct router *rt)
{
    free(rt->routes);
    memset(rt, 0, sizeof *rt);
}

static enum param_kind kind_of(const char *name, size_t len)
{
    static const struct { const char *n; enum param_kind k; } kinds[] = {
        {"space", P_SPACE}, {"collection", P_COLLECTION}, {"entity", P_ENTITY}, {"id", P_ID},
        {"sha256", P_SHA256}, {"peer", P_PEER}, {"key", P_KEY},
        {"asset", P_ASSET},
    };
    for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
        if (strlen(kinds[i].n) == len && !memcmp(kinds[i].n, name, len)) return kinds[i].k;
    fprintf(stderr, "router: unknown parameter {%.*s}\n", (int)len, name);
    abort();
}

void router_add(struct router *rt, const struct route *route)
{
    if (rt->n == rt->cap) {
        rt->cap = rt->cap ? rt->cap * 2 : 32;
        rt->routes = xrealloc(rt->routes, rt->cap * sizeof *rt->routes);
    }
    struct route *r = &rt->routes[rt->n++];
    *r = *route;
    r->nsegs = 0;
    const char *p = r->pattern;
    if (*p != '/') abort();
    while (*p == '/') {
        p++;
        const char *s = p;
        while (*p && *p != '/') p++;
        if (r->nsegs == ROUTE_MAX_SEGS) abort();
        size_t len = (size_t)(p - s);
        if (len >= 2 && s[0] == '{' && s[len - 1] == '}') {
            r->kind[r->nsegs] = (uint8_t)kind_of(s + 1, len - 2);
            r->lit[r->nsegs] = NULL;
        } else {
            r->kind[r->nsegs] = P_LIT;
            r->lit[r->nsegs] = s;
            r->litlen[r->nsegs] = (uint8_t)len;
        }
        r->nsegs++;
    }
}

struct seg { const char *p; size_t len; };

/* Splits "/a/b/c" into segments; a trailing slash makes an empty last
 * segment, so "/api/v1/spaces/" does not match "/api/v1/spaces". */
static int split(const char *path, size_t len, struct seg *segs)
{
    int n = 0;
    size_t i = 0;
    if (len == 0 || path[0] != '/') return -1;
    while (i < len && path[i] == '/') {
        i++;
        size_t s = i;
        while (i < len && path[i] != '/') i++;
        if (n == ROUTE_MAX_SEGS) return -1;
        segs[n].p = path + s;
        segs[n].len = i - s;
        n++;
    }
    return n;
}

static bool shape_matches(const struct route *r, const struct seg *segs, int n)
{
    if (r->nsegs != n) return false;
    for (int i = 0; i < n; i++) {
        if (r->kind[i] == P_LIT) {
            if (segs[i].len != r->litlen[i] || memcmp(segs[i].p, r->lit[i], segs[i].len)) return false;
        } else if (segs[i].len == 0) {
            return false;
        }
    }
    return true;
}

static const char *param_name(enum param_kind k)
{
    switch (k) {
    case P_SPACE: return "space";
    case P_COLLECTION: return "collection";
    case P_ENTITY: return "entity id";
    case P_ID: return "id";
    case P_SHA256: return "sha256";
    case P_PEER: return "peer";
    case P_KEY: return "key id";
    case P_ASSET: return "file name";
    default: return "segment";
    }
}

/* Decodes and checks one parameter into its slot in m->params. */
static enum route_result take_param(enum param_kind k, const struct seg *s, struct route_match *m)
{
    char tmp[256];
    long n = name_pct_decode(s->p, s->len, tmp, sizeof tmp - 1);
    bool server_made = (k == P_ID || k == P_KEY || k == P_SHA256 || k == P_ASSET);
    if (n < 0) goto bad;
    tmp[n] = '\0';
    char *dst;
    size_t cap;
    bool ok;
    switch (k) {
    case P_SPACE: ok = name_space_valid(tmp, (size_t)n); dst = m->params.space; cap = sizeof m->params.space; break;
    case P_COLLECTION: ok = name_collection_valid(tmp, (size_t)n); dst = m->params.collection; cap = sizeof m->params.collection; break;
    case P_ENTITY: ok = name_entity_id_valid(tmp, (size_t)n); dst = m->params.entity; cap = sizeof m->params.entity; break;
    case P_ID: ok = ulid_valid(tmp, (size_t)n); dst = m->params.id; cap = sizeof m->params.id; break;
    case P_KEY: ok = ulid_valid(tmp, (size_t)n); dst = m->params.key; cap = sizeof m->params.key; break;
    case P_SHA256: ok = name_sha256_valid(tmp, (size_t)n); dst = m->params.sha256; cap = sizeof m->params.sha256; break;
    case P_PEER: ok = name_peer_valid(tmp, (size_t)n); dst = m->params.peer; cap = sizeof m->params.peer; break;
    case P_ASSET: ok = name_asset_valid(tmp, (size_t)n); dst = m->params.asset; cap = sizeof m->params.asset; break;
    default: return ROUTE_NOT_FOUND;
    }
    if (!ok || (size_t)n >= cap) goto bad;
    memcpy(dst, tmp, (size_t)n + 1);
    return ROUTE_OK;
bad:
    snprintf(m->bad_param, sizeof m->bad_param, "%s", param_name(k));
    /* a blob hash is a client-made name too: malformed -> 400 */
    if (k == P_SHA256) return ROUTE_BAD_NAME;
    if (k == P_ASSET) return ROUTE_NOT_FOUND;
    return server_made ? ROUTE_BAD_ID : ROUTE_BAD_NAME;
}

static void allow_add(char *allow, size_t cap, const char *m)
{
    size_t ml = strlen(m);
    for (const char *p = allow; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == ml && !memcmp(p, m, ml)) return;
        if (!e) break;
        p = e + 2;
    }
    size_t len = strlen(allow);
    snprintf(allow + len, cap - len, "%s%s", len ? ", " : "", m);
}

enum route_result router_match(const struct router *rt, int method, const char *path, size_t len,
                               struct route_match *m)
{
    struct seg segs[ROUTE_MAX_SEGS];
    int n = split(path, len, segs);
    m->route = NULL;
    m->allow[0] = '\0';
    m->bad_param[0] = '\0';
    if (n < 0) return ROUTE_NOT_FOUND;
    int want = method == HTTP_HEAD ? HTTP_GET : method;
    const struct route *hit = NULL;
    bool shape = false;
    for (size_t i = 0; i < rt->n; i++) {
        const struct route *r = &rt->routes[i];
        if (!shape_matches(r, segs, n)) continue;
        shape = true;
        allow_add(m->allow, sizeof m->allow, llhttp_method_name((llhttp_method_t)r->method));
        if (r->method == HTTP_GET) allow_add(m->allow, sizeof m->allow, "HEAD");
        if (!hit && r->method == want) hit = r;
    }
    if (!shape) return ROUTE_NOT_FOUND;
    if (!hit) return ROUTE_BAD_METHOD;
    m->route = hit;
    memset(&m->params, 0, sizeof m->params);
    for (int i = 0; i < n; i++) {
        if (hit->kind[i] == P_LIT) continue;
        enum route_result res = take_param((enum param_kind)hit->kind[i], &segs[i], m);
        if (res != ROUTE_OK) return res;
    }
    return ROUTE_OK;
}
