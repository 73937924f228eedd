/* keys.c - the keys API (docs/api.md, Keys, roles, audit) and the audit log. Key writes go
 * through the writer (with their audit rows in the same transaction); the
 * loop's key cache is updated when they commit. */
#include <stdio.h>
#include <stdlib.h>

#include "api/api.h"
#include "api/util.h"
#include "svc/auth.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "net/server.h"

struct key_op {
    struct wop op;
    struct key key;
    char token[TOKEN_LEN + 1];
    char actor[32], remote[56];
    bool revoke;
};

static int key_apply(struct wtx *tx, struct wop *op)
{
    struct key_op *k = container_of(op, struct key_op, op);
    char err[256];
    if (k->revoke) {
        int rc = key_revoke_sql(wtx_db(tx), k->key.id, wtx_now(tx), err, sizeof err);
        if (rc < 0) return wop_fail(op, 500, "storage_error", "%s", err);
        if (rc == 0) return wop_fail(op, 404, "not_found", "no active key %s", k->key.id);
        k->key.revoked_at = wtx_now(tx);
        if (wtx_audit(tx, k->actor, "key.revoke", NULL, k->key.id, NULL, k->remote) < 0) return -1;
        return 0;
    }
    if (key_insert(wtx_db(tx), &k->key, err, sizeof err) < 0) return wop_fail(op, 500, "storage_error", "%s", err);
    struct buf meta;
    buf_init(&meta);
    key_audit_meta(&meta, &k->key);
    int rc = wtx_audit(tx, k->actor, "key.create", NULL, k->key.id, meta.data, k->remote);
    buf_free(&meta);
    return rc;
}

/* The key cache follows the database even when the client left, so the
 * op carries the server. */
struct key_op_srv {
    struct key_op k;
    struct server *srv;
};

static void key_done(struct wop *op, struct http_req *r)
{
    struct key_op *k = container_of(op, struct key_op, op);
    struct key_op_srv *ks = container_of(k, struct key_op_srv, k);
    if (op->err.status == 0) {
        if (k->revoke) auth_revoke_cached(ks->srv, k->key.id, k->key.revoked_at);
        else auth_put_key(ks->srv, &k->key);
    }
    if (r) {
        struct buf b;
        buf_init(&b);
        if (op->err.status) {
            api_send_wop_error(r, op);
        } else if (k->revoke) {
            buf_puts(&b, "{\"id\":");
            json_cstr(&b, k->key.id);
            buf_puts(&b, ",\"revoked\":true}");
            http_send_json(r, 200, &b);
        } else {
            key_json(&b, &k->key);
            b.len--;                 /* reopen the object: the token is shown this once */
            buf_puts(&b, ",\"token\":");
            json_cstr(&b, k->token);
            buf_putc(&b, '}');
            http_send_json(r, 201, &b);
        }
        buf_free(&b);
    }
    memset(k->token, 0, sizeof k->token);
    free(ks);
}

static const char *const key_members[] = {"role", "spaces", "name", NULL};

void api_keys_create(struct http_req *r)
{
    json_t *root = api_body_members(r, key_members);
    if (!root) return;
    struct key_op_srv *ks = xcalloc(1, sizeof *ks);
    struct key *k = &ks->k.key;
    ks->srv = r->srv;
    const char *role = json_name(json_object_get(root, "role"));
    if (role_parse(role, &k->role) < 0) {
        http_send_error(r, 400, "invalid_role", NULL, "role must be admin, operator, writer or reader");
        goto fail;
    }
    json_t *name = json_object_get(root, "name");
    if (name && !json_is_null(name)) {
        if (!json_name(name) || json_string_length(name) > 64) {
            http_send_error(r, 400, "invalid_name", NULL, "name must be a string of at most 64 bytes");
            goto fail;
        }
        snprintf(k->name, sizeof k->name, "%s", json_name(name));
    }
    json_t *spaces = json_object_get(root, "spaces");
    if (!spaces || json_is_null(spaces)) {
        k->all_spaces = true;
    } else if (!json_is_array(spaces) || json_array_size(spaces) == 0 || json_array_size(spaces) > KEY_MAX_SPACES) {
        http_send_error(r, 400, "invalid_spaces", NULL, "spaces must be [\"*\"] or a list of 1 to %d space names",
                        KEY_MAX_SPACES);
        goto fail;
    } else {
        size_t i;
        json_t *v;
        json_array_foreach(spaces, i, v) {
            const char *s = json_name(v);
            if (s && !strcmp(s, "*")) {
                k->all_spaces = true;
                continue;
            }
            if (!s || !name_space_valid(s, strlen(s))) {
                http_send_error(r, 400, "invalid_name", NULL, "invalid space name in spaces");
                goto fail;
            }
            snprintf(k->spaces[k->nspaces++], 64, "%s", s);
        }
        if (k->all_spaces) k->nspaces = 0;
    }
    if (k->role == ROLE_ADMIN && !k->all_spaces) {
        http_send_error(r, 400, "invalid_spaces", NULL, "an admin key covers all spaces: use [\"*\"]");
        goto fail;
    }
    json_decref(root);
    root = NULL;
    token_make(ks->k.token, k->hash);
    snprintf(ks->k.actor, sizeof ks->k.actor, "%s", api_actor(r));
    if (r->conn) snprintf(ks->k.remote, sizeof ks->k.remote, "%s", r->client);
    if (api_write(r, &ks->k.op, key_apply, key_done) < 0) free(ks);
    return;
fail:
    json_decref(root);
    free(ks);
}

void api_keys_revoke(struct http_req *r)
{
    struct key_op_srv *ks = xcalloc(1, sizeof *ks);
    ks->srv = r->srv;
    ks->k.revoke = true;
    snprintf(ks->k.key.id, sizeof ks->k.key.id, "%s", r->match.params.key);
    snprintf(ks->k.actor, sizeof ks->k.actor, "%s", api_actor(r));
    if (r->conn) snprintf(ks->k.remote, sizeof ks->k.remote, "%s", r->client);
    if (api_write(r, &ks->k.op, key_apply, key_done) < 0) free(ks);
}

static void keys_list_work(sqlite3 *db, struct read_job *rj)
{
    struct key *keys = NULL;
    size_t n = 0;
    if (keys_load(db, &keys, &n) < 0) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    struct buf *b = &rj->out;
    buf_puts(b, "{\"keys\":[");
    uint64_t count = 0;
    const char *last = NULL;
    bool more = false;
    for (size_t i = 0; i < n; i++) {
        if (rj->cursor[0] && strcmp(keys[i].id, rj->cursor) <= 0) continue;
        if (count == rj->limit) { more = true; break; }
        if (count++) buf_putc(b, ',');
        key_json(b, &keys[i]);
        last = keys[i].id;
    }
    buf_puts(b, "],\"next_cursor\":");
    if (more && last) json_cstr(b, last);
    else buf_puts(b, "null");
    buf_putc(b, '}');
    free(keys);
}

void api_keys_list(struct http_req *r)
{
    struct read_job *rj = read_job_new();
    struct list_page pg;
    if (api_paging(r, LIST_CURSOR_ULID, &pg) < 0) {
        free(rj);
        return;
    }
    rj->limit = pg.limit;
    snprintf(rj->cursor, sizeof rj->cursor, "%s", pg.cursor);
    read_submit(r, rj, keys_list_work, NULL);
}

/* ---- audit -------------------------------------------------------------- */

struct audit_arg {
    char space[64], action[64];
};

static void audit_work(sqlite3 *db, struct read_job *rj)
{
    struct audit_arg *a = rj->arg;
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT id, at, actor, action, space, target, meta, remote_addr FROM audit WHERE id < ?1%s%s"
             " ORDER BY id DESC LIMIT ?2",
             a->space[0] ? " AND space = ?3" : "", a->action[0] ? " AND action = ?4" : "");
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_int64(q, 1, rj->since ? (sqlite3_int64)rj->since : INT64_MAX);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)rj->limit + 1);
    if (a->space[0]) sqlite3_bind_text(q, 3, a->space, -1, SQLITE_STATIC);
    if (a->action[0]) sqlite3_bind_text(q, 4, a->action, -1, SQLITE_STATIC);
    struct buf *b = &rj->out;
    buf_puts(b, "{\"entries\":[");
    uint64_t count = 0, last = 0;
    bool more = false;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (count == rj->limit) { more = true; break; }
        if (count++) buf_putc(b, ',');
        last = (uint64_t)sqlite3_column_int64(q, 0);
        buf_putc(b, '{');
        json_kv_u64(b, "id", last);
        json_kv_time(b, "at", (uint64_t)sqlite3_column_int64(q, 1));
        json_kv_str(b, "actor", (const char *)sqlite3_column_text(q, 2));
        json_kv_str(b, "action", (const char *)sqlite3_column_text(q, 3));
        json_kv_str(b, "space", (const char *)sqlite3_column_text(q, 4));
        json_kv_str(b, "target", (const char *)sqlite3_column_text(q, 5));
        buf_puts(b, ",\"meta\":");
        if (sqlite3_column_type(q, 6) == SQLITE_NULL) buf_puts(b, "null");
        else buf_append(b, sqlite3_column_text(q, 6), (size_t)sqlite3_column_bytes(q, 6));
        json_kv_str(b, "remote_addr", (const char *)sqlite3_column_text(q, 7));
        buf_putc(b, '}');
    }
    sqlite3_finalize(q);
    buf_puts(b, "],\"next_cursor\":");
    if (more) buf_printf(b, "\"%llu\"", (unsigned long long)last);
    else buf_puts(b, "null");
    buf_putc(b, '}');
}

void api_audit(struct http_req *r)
{
    struct read_job *rj = read_job_new();
    struct audit_arg *a = xcalloc(1, sizeof *a);
    rj->arg = a;
    struct list_page pg;
    if (api_paging(r, LIST_CURSOR_NUMBER, &pg) < 0) goto fail;
    rj->limit = pg.limit;
    rj->since = pg.cursor_num;       /* entries below it; 0: from the newest */
    long l = http_query(r, "space", a->space, sizeof a->space);
    if (l == 0 || l == -2 || (l > 0 && !name_space_valid(a->space, (size_t)l))) {
        http_send_error(r, 400, "invalid_name", NULL, "invalid space filter");
        goto fail;
    }
    if (l < 0) a->space[0] = '\0';
    l = http_query(r, "action", a->action, sizeof a->action);
    if (l == -2) {
        http_send_error(r, 400, "invalid_parameter", NULL, "invalid action filter");
        goto fail;
    }
    if (l < 0) a->action[0] = '\0';
    read_submit(r, rj, audit_work, NULL);
    return;
fail:
    free(a);
    free(rj);
}
