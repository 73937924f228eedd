/* auth.c - see auth.h. Loop thread, except the functions that take a
 * sqlite3 handle (startup, CLI, jobs), which use only their arguments. */
#include "svc/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/http.h"
#include "core/jobs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "net/server.h"
#include "store/store.h"
#include "store/writer.h"

struct auth {
    struct key **keys;
    size_t n, cap;
    struct ratelimit failed;         /* failed authentications per client address */
    struct ratelimit denied_audit;   /* sampling of denied-request audit rows */
    struct ratelimit snapshots;      /* snapshot creations per key and space */
    uint64_t last_reload_ms;
    bool reloading;
    uv_timer_t refresh;              /* picks up keys revoked or made offline */
    bool refresh_started;
    struct server *srv;
    /* token text -> key, so a busy client's requests skip the sha256 and the
     * scan; entries point at keys, which are never freed while the server
     * runs (a revocation updates the key in place and is still checked) */
    struct { char token[TOKEN_LEN + 1]; const struct key *key; } cache[64];
};

/* ---- roles ------------------------------------------------------------ */

static const char *const role_names[] = {"reader", "writer", "operator", "admin"};

const char *role_name(enum role r) { return role_names[r]; }

int role_parse(const char *s, enum role *out)
{
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, role_names[i])) {
            *out = (enum role)i;
            return 0;
        }
    return -1;
}

/* The whole access table (docs/api.md, Keys, roles, audit). */
bool auth_role_allows(enum role role, enum route_access access)
{
    switch (access) {
    case ACCESS_PUBLIC: return true;
    case ACCESS_READ: return role >= ROLE_READER;
    case ACCESS_WRITE: return role >= ROLE_WRITER;
    case ACCESS_OPERATE: return role >= ROLE_OPERATOR;
    case ACCESS_ADMIN:
    case ACCESS_METRICS: return role == ROLE_ADMIN;
    }
    return false;
}

bool key_has_space(const struct key *k, const char *space)
{
    if (k->all_spaces || k->role == ROLE_ADMIN) return true;
    for (int i = 0; i < k->nspaces; i++)
        if (!strcmp(k->spaces[i], space)) return true;
    return false;
}

/* ---- tokens ----------------------------------------------------------- */

void token_hash(const char *token, size_t len, unsigned char hash[32])
{
    unsigned int l = 32;
    if (EVP_Digest(token, len, hash, &l, sha256_md(), NULL) != 1) abort();
}

void token_make(char out[TOKEN_LEN + 1], unsigned char hash[32])
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[33];
    random_bytes(raw, 32);
    raw[32] = 0;
    memcpy(out, "sst_", 4);
    size_t o = 4;
    for (int i = 0; i < 33; i += 3) {
        uint32_t v = ((uint32_t)raw[i] << 16) | ((uint32_t)raw[i + 1] << 8) | raw[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        if (o < TOKEN_LEN) out[o++] = b64[v & 63];
    }
    out[TOKEN_LEN] = '\0';
    token_hash(out, TOKEN_LEN, hash);
}

/* ---- SQL (caller's thread and connection) ------------------------------ */

void key_spaces_json(struct buf *b, const struct key *k)
{
    buf_putc(b, '[');
    if (k->all_spaces) json_cstr(b, "*");
    for (int i = 0; i < k->nspaces; i++) {
        if (i) buf_putc(b, ',');
        json_cstr(b, k->spaces[i]);
    }
    buf_putc(b, ']');
}

void key_json(struct buf *b, const struct key *k)
{
    buf_putc(b, '{');
    json_kv_str(b, "id", k->id);
    json_kv_str(b, "name", k->name);
    json_kv_str(b, "role", role_name(k->role));
    json_key(b, "spaces");
    key_spaces_json(b, k);
    json_kv_time(b, "created_at", k->created_at);
    json_kv_time(b, "revoked_at", k->revoked_at);
    buf_putc(b, '}');
}

int key_insert(sqlite3 *db, struct key *k, char *err, size_t errlen)
{
    k->created_at = now_ms_wall();
    ulid_make(k->id, k->created_at);
    struct buf sp;
    buf_init(&sp);
    key_spaces_json(&sp, k);
    sqlite3_stmt *q = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "INSERT INTO keys(id, name, role, spaces, hash, created_at) VALUES (?,?,?,?,?,?)", -1,
                           &q, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(q, 1, k->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, k->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, role_name(k->role), -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, sp.data, (int)sp.len, SQLITE_STATIC);
    sqlite3_bind_blob(q, 5, k->hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(q, 6, (sqlite3_int64)k->created_at);
    if (sqlite3_step(q) == SQLITE_DONE) rc = 0;
out:
    if (rc < 0) snprintf(err, errlen, "storing the key failed: %s", sqlite3_errmsg(db));
    sqlite3_finalize(q);
    buf_free(&sp);
    return rc;
}

int key_revoke_sql(sqlite3 *db, const char *id, uint64_t now, char *err, size_t errlen)
{
    sqlite3_stmt *q = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", -1, &q, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_int64(q, 1, (sqlite3_int64)now);
        sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_DONE) rc = sqlite3_changes(db) > 0 ? 1 : 0;
    }
    if (rc < 0) snprintf(err, errlen, "revoking the key failed: %s", sqlite3_errmsg(db));
    sqlite3_finalize(q);
    return rc;
}

void key_audit_meta(struct buf *b, const struct key *k)
{
    buf_puts(b, "{\"role\":");
    json_cstr(b, role_name(k->role));
    buf_puts(b, ",\"spaces\":");
    key_spaces_json(b, k);
    buf_putc(b, '}');
}

/* The same row wtx_audit writes, on the caller's connection. */
static int audit_insert(sqlite3 *db, uint64_t at, const char *actor, const char *action, const char *target,
                        const char *meta)
{
    sqlite3_stmt *q = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "INSERT INTO audit(at, actor, action, target, meta) VALUES (?, ?, ?, ?, ?)", -1, &q,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, (sqlite3_int64)at);
        sqlite3_bind_text(q, 2, actor, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 3, action, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 4, target, -1, SQLITE_STATIC);
        if (meta) sqlite3_bind_text(q, 5, meta, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_DONE) rc = 0;
    }
    sqlite3_finalize(q);
    return rc;
}

/* BEGIN IMMEDIATE takes the write lock at once (waiting out a running
 * server's commit through the busy timeout), so the key change and its
 * audit row commit together or not at all. */
static int cli_begin(sqlite3 *db, char *err, size_t errlen)
{
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK) return 0;
    snprintf(err, errlen, "cannot start a transaction: %s", sqlite3_errmsg(db));
    return -1;
}

/* Commits when asked to (else, or when the commit fails, rolls back);
 * returns rc, or -1 if the commit failed. */
static int cli_finish(sqlite3 *db, int rc, bool commit, char *err, size_t errlen)
{
    if (commit && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) return rc;
    if (commit) {
        snprintf(err, errlen, "commit failed: %s", sqlite3_errmsg(db));
        rc = -1;
    }
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int key_create_audited(sqlite3 *db, struct key *k, const char *actor, char *err, size_t errlen)
{
    if (cli_begin(db, err, errlen) < 0) return -1;
    int rc = key_insert(db, k, err, errlen);
    if (rc == 0) {
        struct buf meta;
        buf_init(&meta);
        key_audit_meta(&meta, k);
        rc = audit_insert(db, k->created_at, actor, "key.create", k->id, meta.data);
        if (rc < 0) snprintf(err, errlen, "audit insert failed: %s", sqlite3_errmsg(db));
        buf_free(&meta);
    }
    return cli_finish(db, rc, rc == 0, err, errlen);
}

int key_revoke_audited(sqlite3 *db, const char *id, const char *actor, char *err, size_t errlen)
{
    if (cli_begin(db, err, errlen) < 0) return -1;
    uint64_t now = now_ms_wall();
    int rc = key_revoke_sql(db, id, now, err, errlen);
    if (rc == 1 && audit_insert(db, now, actor, "key.revoke", id, NULL) < 0) {
        snprintf(err, errlen, "audit insert failed: %s", sqlite3_errmsg(db));
        rc = -1;
    }
    return cli_finish(db, rc, rc == 1, err, errlen);
}

static void parse_spaces(struct key *k, const char *text)
{
    json_error_t je;
    json_t *a = json_loads(text ? text : "[]", 0, &je);
    size_t i;
    json_t *v;
    k->all_spaces = false;
    k->nspaces = 0;
    json_array_foreach(a, i, v) {
        const char *s = json_name(v);
        if (!s) continue;
        if (!strcmp(s, "*")) k->all_spaces = true;
        else if (k->nspaces < KEY_MAX_SPACES) snprintf(k->spaces[k->nspaces++], 64, "%s", s);
    }
    json_decref(a);
}

int keys_load(sqlite3 *db, struct key **out, size_t *n)
{
    sqlite3_stmt *q = NULL;
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(db, "SELECT id, name, role, spaces, hash, created_at, revoked_at FROM keys ORDER BY id",
                           -1, &q, NULL) != SQLITE_OK)
        return -1;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xrealloc(*out, cap * sizeof **out);
        }
        struct key *k = &(*out)[*n];
        memset(k, 0, sizeof *k);
        snprintf(k->id, sizeof k->id, "%s", (const char *)sqlite3_column_text(q, 0));
        snprintf(k->name, sizeof k->name, "%s", (const char *)sqlite3_column_text(q, 1));
        if (role_parse((const char *)sqlite3_column_text(q, 2), &k->role) < 0) continue;
        parse_spaces(k, (const char *)sqlite3_column_text(q, 3));
        if (sqlite3_column_bytes(q, 4) != 32) continue;
        memcpy(k->hash, sqlite3_column_blob(q, 4), 32);
        k->created_at = (uint64_t)sqlite3_column_int64(q, 5);
        k->revoked_at = (uint64_t)sqlite3_column_int64(q, 6);
        (*n)++;
    }
    return sqlite3_finalize(q) == SQLITE_OK ? 0 : -1;
}

int auth_bootstrap_admin(sqlite3 *db, const char *data_dir, char *path_out, size_t path_cap, char *err,
                         size_t errlen)
{
    sqlite3_stmt *q = NULL;
    int have = 0;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM keys WHERE role = 'admin' AND revoked_at IS NULL", -1, &q,
                           NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        have = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (have > 0) return 0;
    struct key k;
    memset(&k, 0, sizeof k);
    char token[TOKEN_LEN + 1];
    token_make(token, k.hash);
    k.role = ROLE_ADMIN;
    k.all_spaces = true;
    snprintf(k.name, sizeof k.name, "bootstrap admin");
    snprintf(path_out, path_cap, "%s/admin.key", data_dir);
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path_out);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    char line[TOKEN_LEN + 2];
    memcpy(line, token, TOKEN_LEN);
    line[TOKEN_LEN] = '\n';
    int rc = 0;
    if (write(fd, line, TOKEN_LEN + 1) != TOKEN_LEN + 1 || fsync(fd) < 0) rc = -errno;
    close(fd);
    if (rc < 0 || key_insert(db, &k, err, errlen) < 0 || rename(tmp, path_out) < 0) {
        if (rc < 0) snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(-rc));
        unlink(tmp);
        return -1;
    }
    return 1;
}

/* ---- the loop's cache -------------------------------------------------- */

void auth_init(struct server *srv, struct key *keys, size_t n)
{
    struct auth *a = xcalloc(1, sizeof *a);
    for (size_t i = 0; i < n; i++) {
        if (a->n == a->cap) {
            a->cap = a->cap ? a->cap * 2 : 16;
            a->keys = xrealloc(a->keys, a->cap * sizeof *a->keys);
        }
        a->keys[a->n] = xmalloc(sizeof(struct key));
        *a->keys[a->n++] = keys[i];
    }
    free(keys);
    rl_init(&a->failed, 20, 20);               /* 20 failures, then 20 a minute */
    rl_init(&a->denied_audit, 10, 120);         /* at most ~2 audit rows a second */
    rl_init(&a->snapshots, (double)(srv->cfg->snapshot_rate ? srv->cfg->snapshot_rate : 1),
            (double)srv->cfg->snapshot_rate);
    a->srv = srv;
    srv->auth = a;
}

static void on_refresh(uv_timer_t *t);

void auth_start_refresh(struct server *srv)
{
    struct auth *a = srv->auth;
    uv_timer_init(srv->loop, &a->refresh);
    a->refresh.data = a;
    uv_timer_start(&a->refresh, on_refresh, 2000, 2000);
    uv_unref((uv_handle_t *)&a->refresh);
    a->refresh_started = true;
}

static void refresh_closed(uv_handle_t *h)
{
    free(((uv_timer_t *)h)->data);
}

void auth_free(struct server *srv)
{
    struct auth *a = srv->auth;
    if (!a) return;
    for (size_t i = 0; i < a->n; i++) free(a->keys[i]);
    free(a->keys);
    rl_free(&a->failed);
    rl_free(&a->denied_audit);
    rl_free(&a->snapshots);
    memset(a->cache, 0, sizeof a->cache);
    srv->auth = NULL;
    if (a->refresh_started) uv_close((uv_handle_t *)&a->refresh, refresh_closed);   /* frees a */
    else free(a);
}

void auth_put_key(struct server *srv, const struct key *k)
{
    struct auth *a = srv->auth;
    for (size_t i = 0; i < a->n; i++)
        if (!strcmp(a->keys[i]->id, k->id)) {
            *a->keys[i] = *k;    /* same struct: requests holding it see the revocation */
            return;
        }
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 16;
        a->keys = xrealloc(a->keys, a->cap * sizeof *a->keys);
    }
    a->keys[a->n] = xmalloc(sizeof(struct key));
    *a->keys[a->n++] = *k;
}

void auth_revoke_cached(struct server *srv, const char *id, uint64_t at)
{
    struct auth *a = srv->auth;
    for (size_t i = 0; i < a->n; i++)
        if (!strcmp(a->keys[i]->id, id)) a->keys[i]->revoked_at = at;
}

/* Every key is compared (constant time per key, no early exit). */
static const struct key *find_key(struct auth *a, const unsigned char hash[32])
{
    const struct key *hit = NULL;
    for (size_t i = 0; i < a->n; i++)
        if (ct_equal(a->keys[i]->hash, hash, 32)) hit = a->keys[i];
    return hit;
}

static void client_ip(const struct http_req *r, char *out, size_t cap)
{
    snprintf(out, cap, "%s", r->client_ip[0] ? r->client_ip : "?");
}

/* What auth keeps in a request (net's opaque slots, struct http_req): the
 * key in r->principal, and in r->access_scratch the sha256 of a token the
 * cache did not know, for the decision after the reload. */
_Static_assert(HTTP_ACCESS_SCRATCH >= 32, "the token hash fits the access hook's scratch bytes");

static unsigned char *req_token_hash(struct http_req *r) { return r->access_scratch; }

const struct key *auth_key(const struct http_req *r) { return r->principal; }

static enum http_access deny(struct http_req *r, int status, const char *code, const char *msg)
{
    http_early(r, status, code, "%s", msg);
    return HTTP_ACCESS_DENIED;
}

enum http_access auth_check_request(struct http_req *r, bool may_wait)
{
    struct server *srv = r->srv;
    struct auth *a = srv->auth;
    const struct route *rt = r->route;
    if (!rt || rt->access == ACCESS_PUBLIC) return HTTP_ACCESS_OK;
    if (rt->access == ACCESS_METRICS && srv->cfg->metrics_open) return HTTP_ACCESS_OK;
    char ip[64];
    uint64_t retry;
    client_ip(r, ip, sizeof ip);
    size_t tl = 0;
    const char *tok = NULL;
    size_t hl;
    const char *h = http_header(r, "Authorization", &hl);
    char qtok[TOKEN_LEN + 8];
    if (h && hl > 7 && strncasecmp(h, "Bearer ", 7) == 0) {
        tok = h + 7;
        tl = hl - 7;
        while (tl && *tok == ' ') { tok++; tl--; }
    } else if (!h && (r->method == HTTP_GET || r->method == HTTP_HEAD)) {
        long ql = http_query(r, "access_token", qtok, sizeof qtok);
        if (ql > 0) {
            tok = qtok;
            tl = (size_t)ql;
        }
    }
    if (rl_empty(&a->failed, ip, uv_now(srv->loop), &retry)) {
        r->retry_after = retry;
        return deny(r, 429, "rate_limited", "too many failed authentications from this address; retry later");
    }
    if (!tok || tl == 0) return deny(r, 401, "unauthorized", "this route needs 'Authorization: Bearer <token>'");
    const struct key *k = NULL;
    uint64_t fnv = 1469598103934665603ull;
    for (size_t i = 0; i < tl; i++) fnv = (fnv ^ (unsigned char)tok[i]) * 1099511628211ull;
    size_t slot = fnv % ARRAY_SIZE(a->cache);
    if (tl == TOKEN_LEN && a->cache[slot].key && ct_equal(a->cache[slot].token, tok, TOKEN_LEN)) {
        k = a->cache[slot].key;
    } else {
        token_hash(tok, tl, req_token_hash(r));
        k = find_key(a, req_token_hash(r));
        if (!k) {
            /* maybe made offline: reload at dispatch; a streamed upload
             * cannot wait for a key reload: unknown is unknown */
            if (!may_wait) return deny(r, 401, "unauthorized", "unknown token");
            return HTTP_ACCESS_WAIT;
        }
        if (tl == TOKEN_LEN) {
            memcpy(a->cache[slot].token, tok, TOKEN_LEN);
            a->cache[slot].key = k;
        }
    }
    r->principal = k;
    if (k->revoked_at) {
        rl_take(&a->failed, ip, uv_now(srv->loop), NULL);
        return deny(r, 401, "unauthorized", "this key has been revoked");
    }
    if (!auth_role_allows(k->role, rt->access)) return deny(r, 403, "forbidden", "this key's role may not do that");
    if (r->match.params.space[0] && !key_has_space(k, r->match.params.space))
        return deny(r, 403, "forbidden", "this key may not use that space");
    return HTTP_ACCESS_OK;
}

/* -- unknown tokens: one reload of the keys table, then decide -- */

struct reload_job {
    struct job job;
    struct server *srv;
    struct key *keys;
    size_t n;
    int rc;
};

static void reload_work(struct job *j)
{
    struct reload_job *rj = container_of(j, struct reload_job, job);
    sqlite3 *db = store_reader_get(rj->srv->store);
    rj->rc = db ? keys_load(db, &rj->keys, &rj->n) : -1;
    store_reader_put(rj->srv->store, db);
}

static void finish_unknown(struct http_req *r)
{
    struct auth *a = r->srv->auth;
    const struct key *k = find_key(a, req_token_hash(r));
    enum http_access v;
    if (!k) {
        char ip[64];
        client_ip(r, ip, sizeof ip);
        rl_take(&a->failed, ip, uv_now(r->srv->loop), NULL);
        v = deny(r, 401, "unauthorized", "unknown token");
    } else {
        /* run the same checks with the key now known (found: no waiting) */
        r->principal = NULL;
        v = auth_check_request(r, false);
    }
    http_access_decided(r, v);
}

static void reload_done(struct job *j, struct http_req *r)
{
    struct reload_job *rj = container_of(j, struct reload_job, job);
    struct server *srv = rj->srv;
    if (srv->auth) {
        srv->auth->reloading = false;
        if (rj->rc == 0)
            for (size_t i = 0; i < rj->n; i++) auth_put_key(srv, &rj->keys[i]);
    }
    free(rj->keys);
    free(rj);
    if (r) finish_unknown(r);
}

/* Every 2 s: keys revoked with `snapsync keys revoke` while the server runs
 * stop working within that time. A few hundred rows: cheap. */
static void on_refresh(uv_timer_t *t)
{
    struct auth *a = t->data;
    struct server *srv = a->srv;
    if (a->reloading || srv->shutting_down) return;
    a->reloading = true;
    a->last_reload_ms = uv_now(srv->loop);
    struct reload_job *rj = xcalloc(1, sizeof *rj);
    rj->srv = srv;
    job_submit(&srv->jobs, &rj->job, NULL, reload_work, reload_done);
}

void auth_resolve_unknown(struct http_req *r)
{
    struct auth *a = r->srv->auth;
    uint64_t now = uv_now(r->srv->loop);
    if (a->reloading || now - a->last_reload_ms < 1000) {
        finish_unknown(r);
        return;
    }
    a->reloading = true;
    a->last_reload_ms = now;
    struct reload_job *rj = xcalloc(1, sizeof *rj);
    rj->srv = r->srv;
    job_submit(&r->srv->jobs, &rj->job, r, reload_work, reload_done);
}

/* -- audit of denials -- */

struct audit_op {
    struct wop op;
    char actor[64], action[32], space[64], target[160], meta[64], remote[64];
};

static int audit_apply(struct wtx *tx, struct wop *op)
{
    struct audit_op *a = container_of(op, struct audit_op, op);
    if (wtx_audit(tx, a->actor, a->action, a->space, a->target, a->meta, a->remote) < 0)
        return wop_fail(op, 500, "storage_error", "audit insert failed");
    return 0;
}

static void audit_done(struct wop *op, struct http_req *r)
{
    UNUSED(r);
    free(container_of(op, struct audit_op, op));
}

void auth_audit_denied(struct http_req *r, int status)
{
    struct server *srv = r->srv;
    if (!rl_take(&srv->auth->denied_audit, "denied", uv_now(srv->loop), NULL)) return;
    struct audit_op *a = xcalloc(1, sizeof *a);
    snprintf(a->actor, sizeof a->actor, "%s", auth_key(r) ? auth_key(r)->id : "anonymous");
    snprintf(a->action, sizeof a->action, "request.denied");
    snprintf(a->space, sizeof a->space, "%s", r->match.params.space);
    snprintf(a->target, sizeof a->target, "%s %s", llhttp_method_name((llhttp_method_t)r->method),
             r->route ? r->route->name : "?");
    snprintf(a->meta, sizeof a->meta, "{\"status\":%d}", status);
    if (r->conn) snprintf(a->remote, sizeof a->remote, "%s", r->client);
    if (writer_submit(srv->writer, &a->op, NULL, audit_apply, audit_done) < 0) free(a);
}

bool auth_snapshot_rate(struct http_req *r, uint64_t *retry_after_s)
{
    struct server *srv = r->srv;
    if (srv->cfg->snapshot_rate == 0) return true;
    char k[RL_KEY];
    snprintf(k, sizeof k, "%s/%s", auth_key(r) ? auth_key(r)->id : "-", r->match.params.space);
    return rl_take(&srv->auth->snapshots, k, uv_now(srv->loop), retry_after_s);
}
