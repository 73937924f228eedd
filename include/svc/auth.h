/* auth.h - API keys, roles and who may call what (docs/api.md, Keys, roles, audit).
 *
 * Tokens are "sst_" + 43 characters of base64url (32 random bytes); only
 * their sha256 is stored. The loop keeps every key in memory (loaded at
 * start, kept current by the keys API), so checking a request costs one
 * short hash and a table probe; the stored and computed hashes are compared
 * in constant time. A token the cache does not know triggers one reload
 * from the database (rate-limited), so keys made offline with `snapsync
 * keys create` work without a restart.
 *
 * The decision table is auth_role_allows(): a route's access class (the
 * route table in routes.c) against the key's role, then the key's spaces.
 *
 * The HTTP core does not call auth: main.c installs auth_check_request,
 * auth_resolve_unknown and auth_audit_denied as its access hooks (struct
 * http_hooks, net/http.h). What auth keeps in a request lives in the
 * request's opaque access slots; auth_key() reads the caller's key.
 */
#ifndef SNAPSYNC_AUTH_H
#define SNAPSYNC_AUTH_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/ratelimit.h"
#include "net/http.h"
#include "net/router.h"

enum role { ROLE_READER, ROLE_WRITER, ROLE_OPERATOR, ROLE_ADMIN };

#define KEY_MAX_SPACES 64
#define TOKEN_LEN 47                  /* "sst_" + 43 */

struct key {
    char id[27];
    char name[65];
    enum role role;
    bool all_spaces;
    int nspaces;
    char spaces[KEY_MAX_SPACES][64];
    unsigned char hash[32];
    uint64_t created_at;
    uint64_t revoked_at;             /* 0 = active */
};

struct server;
struct http_req;

const char *role_name(enum role r);
int role_parse(const char *s, enum role *out);
bool auth_role_allows(enum role role, enum route_access access);
bool key_has_space(const struct key *k, const char *space);

/* Makes a new token and its hash. */
void token_make(char out[TOKEN_LEN + 1], unsigned char hash[32]);
void token_hash(const char *token, size_t len, unsigned char hash[32]);

/* Startup (main thread) and CLI: SQL on the given connection. */
int key_insert(sqlite3 *db, struct key *k, char *err, size_t errlen);   /* fills id, created_at */
int key_revoke_sql(sqlite3 *db, const char *id, uint64_t now, char *err, size_t errlen);  /* 1 if revoked, 0 if no such key */
int keys_load(sqlite3 *db, struct key **out, size_t *n);
/* `snapsync keys create|revoke`: the key change and its audit row (the
 * shape the keys API writes: action key.create with meta {"role","spaces"},
 * or key.revoke; target the key id; no remote address) in one transaction.
 * Create returns 0 or -1; revoke 1, 0 (no active key: nothing written) or
 * -1, with a message in err. */
int key_create_audited(sqlite3 *db, struct key *k, const char *actor, char *err, size_t errlen);
int key_revoke_audited(sqlite3 *db, const char *id, const char *actor, char *err, size_t errlen);
/* Key JSON for the API (never the hash). */
struct buf;
void key_json(struct buf *b, const struct key *k);
void key_spaces_json(struct buf *b, const struct key *k);
/* {"role":…,"spaces":[…]}: the meta of a key.create audit row. */
void key_audit_meta(struct buf *b, const struct key *k);

/* Loop thread. */
void auth_init(struct server *srv, struct key *keys, size_t n);   /* takes keys */
void auth_start_refresh(struct server *srv);   /* loop running: periodic reload */
void auth_free(struct server *srv);
void auth_put_key(struct server *srv, const struct key *k);       /* add or replace */
void auth_revoke_cached(struct server *srv, const char *id, uint64_t at);
/* The caller's key once auth_check_request found it, else NULL. */
const struct key *auth_key(const struct http_req *r);
/* http_hooks.access: called at the end of the headers, after routing.
 * Returns OK (allowed, or a public route), DENIED with the request's early
 * answer set (401, 403, 429 with retry_after), or WAIT for a token the
 * cache does not know (only when may_wait; else that is a 401). */
enum http_access auth_check_request(struct http_req *r, bool may_wait);
/* http_hooks.access_resolve: at dispatch for a request whose token was
 * unknown: reloads keys (at most once a second), then decides and hands the
 * verdict to http_access_decided(). */
void auth_resolve_unknown(struct http_req *r);
/* http_hooks.denied: records a denied request in the audit log, sampled (a
 * few per second). */
void auth_audit_denied(struct http_req *r, int status);
/* Snapshot creation limiter: one token per creation per key and
 * space. Returns true if allowed, else sets retry_after_s. */
bool auth_snapshot_rate(struct http_req *r, uint64_t *retry_after_s);

/* Makes DATA/admin.key (0600) with a fresh admin key if no active admin key
 * exists. Returns 1 if created, 0 if not needed, -1 on error. Startup only. */
int auth_bootstrap_admin(sqlite3 *db, const char *data_dir, char *path_out, size_t path_cap, char *err,
                         size_t errlen);

#endif
