/* router.h - method + path pattern -> route, with the name checks of docs/api.md (Conventions).
 *
 * Patterns are literal segments and typed parameters:
 *   /api/v1/spaces/{space}/collections/{collection}/entities/{entity}
 * Parameter types: {space} {collection} {entity} {id} (server-made ULID)
 * {sha256} {peer} {key}. Each parameter is percent-decoded and validated
 * before a handler runs: a client name that breaks its rule is 400
 * invalid_name, a malformed server-made id is 404.
 */
#ifndef SNAPSYNC_ROUTER_H
#define SNAPSYNC_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_req;
typedef void (*route_handler)(struct http_req *r);

/* Who may call a route; the auth module maps roles onto these. */
enum route_access {
    ACCESS_PUBLIC,       /* no token */
    ACCESS_READ,         /* reader and up */
    ACCESS_WRITE,        /* writer and up */
    ACCESS_OPERATE,      /* operator and up */
    ACCESS_ADMIN,        /* admin only */
    ACCESS_METRICS,      /* admin unless --metrics-open */
};

enum route_flags {
    ROUTE_STREAM_BODY = 1 << 0,   /* body delivered to the handler as it arrives */
    ROUTE_NO_BODY = 1 << 1,       /* a request body is read and discarded, never buffered */
};

#define ROUTE_MAX_SEGS 12

enum param_kind { P_LIT, P_SPACE, P_COLLECTION, P_ENTITY, P_ID, P_SHA256, P_PEER, P_KEY, P_ASSET };

struct route {
    int method;                 /* llhttp_method_t; HEAD is served by GET routes */
    const char *pattern;
    route_handler handler;
    enum route_access access;
    unsigned flags;
    const char *name;           /* stable label for logs and metrics */
    /* compiled */
    uint8_t nsegs;
    uint8_t kind[ROUTE_MAX_SEGS];
    const char *lit[ROUTE_MAX_SEGS];
    uint8_t litlen[ROUTE_MAX_SEGS];
};

struct route_params {
    char space[64];
    char collection[64];
    char entity[129];
    char id[27];
    char sha256[65];
    char peer[64];
    char key[27];
    char asset[64];
};

enum route_result {
    ROUTE_OK,
    ROUTE_NOT_FOUND,            /* no pattern matches the path */
    ROUTE_BAD_METHOD,           /* a pattern matches, not with this method: 405 + Allow */
    ROUTE_BAD_NAME,             /* a client-made name breaks its rule: 400 */
    ROUTE_BAD_ID,               /* a server-made id is malformed: 404 */
};

struct route_match {
    const struct route *route;
    struct route_params params;
    char allow[96];             /* for ROUTE_BAD_METHOD: "GET, HEAD, PUT" */
    char bad_param[16];         /* for ROUTE_BAD_NAME: "space", "collection", ... */
};

struct router {
    struct route *routes;
    size_t n, cap;
};

void router_init(struct router *rt);
void router_free(struct router *rt);
/* Adds a route (the struct is copied and its pattern compiled). Aborts on a
 * malformed pattern: routes are program text, not input. */
void router_add(struct router *rt, const struct route *route);
/* Matches a raw path (no query). method is llhttp's. */
enum route_result router_match(const struct router *rt, int method, const char *path, size_t len,
                               struct route_match *m);

#endif
