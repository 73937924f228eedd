/* entities.c - spaces and entities, and /sync/status (docs/api.md).
 *
 * Reads run as read jobs on the threadpool; writes are ops on the writer
 * thread (group commit). Space listings and /sync/status answer from the
 * loop's registry (spaces.c): O(1), no SQL. */
#include <stdio.h>
#include <stdlib.h>

#include "api/api.h"
#include "api/util.h"
#include "svc/auth.h"
#include "svc/blobs.h"
#include "svc/snapshot.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "net/server.h"
#include "store/store.h"
#include "svc/sync.h"

/* ---- spaces ------------------------------------------------------------ */

static void space_json(struct buf *b, const struct space *sp, const char *instance_id)
{
    buf_putc(b, '{');
    json_kv_str(b, "name", sp->st.name);
    json_kv_str(b, "space_uid", sp->st.uid);
    json_kv_time(b, "created_at", sp->st.created_at);
    json_kv_u64(b, "server_version", sp->st.version);
    json_kv_u64(b, "entity_count", sp->st.entities);
    json_kv_u64(b, "tombstone_count", sp->st.tombstones);
    json_kv_u64(b, "conflict_count", sp->st.conflicts);
    if (instance_id) json_kv_str(b, "instance_id", instance_id);
    json_key(b, "last_snapshot");
    if (sp->last_snapshot[0]) json_cstr(b, sp->last_snapshot);
    else buf_puts(b, "null");
    buf_putc(b, '}');
}

void api_spaces_list(struct http_req *r)
{
    struct list_page pg;
    if (api_paging(r, LIST_CURSOR_SPACE, &pg) < 0) return;
    const char *cursor = pg.cursor;
    uint64_t limit = pg.limit;
    size_t n;
    struct space **v = spaces_sorted(r->srv->spaces, &n);
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"spaces\":[");
    uint64_t count = 0;
    const char *last = NULL;
    bool more = false;
    for (size_t i = 0; i < n; i++) {
        if (cursor[0] && strcmp(v[i]->st.name, cursor) <= 0) continue;
        if (auth_key(r) && !key_has_space(auth_key(r), v[i]->st.name)) continue;   /* never reveal others */
        if (count == limit) { more = true; break; }
        if (count++) buf_putc(&b, ',');
        space_json(&b, v[i], NULL);
        last = v[i]->st.name;
    }
    buf_puts(&b, "],\"next_cursor\":");
    if (more && last) json_cstr(&b, last);
    else buf_puts(&b, "null");
    buf_putc(&b, '}');
    http_send_json(r, 200, &b);
}

void api_space_get(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct buf b;
    buf_init(&b);
    space_json(&b, sp, NULL);
    http_send_json(r, 200, &b);
}

struct space_op {
    struct wop op;
    struct server *srv;
    char name[64];
    char actor[32];
    char remote[56];
    bool remove;
    int created;
    struct buf snap_ids;             /* deleted with the space: NUL-separated ids */
    struct buf blobs_gone;           /* blobs only it referenced: 64 hex digits each */
};

static int space_apply(struct wtx *tx, struct wop *op)
{
    struct space_op *s = container_of(op, struct space_op, op);
    if (s->remove) {
        struct space_stats *sp = wtx_space(tx, s->name);
        if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", s->name);
        buf_reset(&s->snap_ids);
        buf_reset(&s->blobs_gone);
        if (wtx_space_delete(tx, sp, &s->snap_ids, &s->blobs_gone) < 0)
            return wop_fail(op, 500, "storage_error", "deleting the space failed");
        char meta[96];
        snprintf(meta, sizeof meta, "{\"entities\":%llu,\"tombstones\":%llu}", (unsigned long long)sp->entities,
                 (unsigned long long)sp->tombstones);
        if (wtx_audit(tx, s->actor, "space.delete", s->name, s->name, meta, s->remote) < 0) return -1;
        return 0;
    }
    struct space_stats *sp = wtx_space_create(tx, s->name, &s->created);
    if (!sp) return wop_fail(op, 500, "storage_error", "creating the space failed");
    if (s->created && wtx_audit(tx, s->actor, "space.create", s->name, s->name, NULL, s->remote) < 0) return -1;
    return 0;
}

static void space_done(struct wop *op, struct http_req *r)
{
    struct space_op *s = container_of(op, struct space_op, op);
    if (s->remove && !op->err.status) {
        /* committed: its snapshot files, its persistent peers and the blob
         * files no other space references go too */
        for (size_t i = 0; i < s->snap_ids.len; i += strlen(s->snap_ids.data + i) + 1)
            snap_remove_file(s->srv, s->snap_ids.data + i);
        sync_space_deleted(s->srv, s->name);
        blobs_collect(s->srv, s->blobs_gone.data, s->blobs_gone.len / 64);
    }
    buf_free(&s->snap_ids);
    buf_free(&s->blobs_gone);
    if (r) {
        if (op->err.status) {
            api_send_wop_error(r, op);
        } else if (s->remove) {
            struct buf b;
            buf_init(&b);
            buf_puts(&b, "{\"space\":");
            json_cstr(&b, s->name);
            buf_puts(&b, ",\"deleted\":true}");
            http_send_json(r, 200, &b);
        } else {
            struct space *sp = spaces_get(r->srv->spaces, s->name);
            struct buf b;
            buf_init(&b);
            if (sp) space_json(&b, sp, NULL);
            else buf_puts(&b, "{}");
            http_send_json(r, s->created ? 201 : 200, &b);
        }
    }
    free(s);
}

static struct space_op *space_op_new(struct http_req *r)
{
    struct space_op *s = xcalloc(1, sizeof *s);
    s->srv = r->srv;
    buf_init(&s->snap_ids);
    snprintf(s->name, sizeof s->name, "%s", r->match.params.space);
    snprintf(s->actor, sizeof s->actor, "%s", api_actor(r));
    if (r->conn) snprintf(s->remote, sizeof s->remote, "%s", r->client);
    return s;
}

static const char *const space_members[] = {NULL};

void api_space_put(struct http_req *r)
{
    if (r->body.len) {               /* a body is optional; if given it must be an object, with no members yet */
        json_t *v = api_body_members(r, space_members);
        if (!v) return;
        json_decref(v);
    }
    struct space_op *s = space_op_new(r);
    if (api_write(r, &s->op, space_apply, space_done) < 0) {
        buf_free(&s->snap_ids);
        free(s);
    }
}

void api_space_delete(struct http_req *r)
{
    char confirm[80];
    long l = http_query(r, "confirm", confirm, sizeof confirm);
    if (l < 0 || strcmp(confirm, r->match.params.space) != 0) {
        http_send_error(r, 400, "confirm_mismatch", NULL,
                        "deleting a space needs ?confirm=<space name>, repeating the space's name");
        return;
    }
    struct space *sp = api_space(r);
    if (!sp) return;
    if (sp->busy) {
        http_send_error(r, 409, "snapshot_in_progress", NULL,
                        "a snapshot, restore or import of this space is running; delete it when that ends");
        return;
    }
    if (sync_space_running(r->srv, sp->st.name)) {
        http_send_error(r, 409, "sync_in_progress", NULL, "a sync job of this space is running; delete it when that ends");
        return;
    }
    struct space_op *s = space_op_new(r);
    s->remove = true;
    s->op.alone = true;              /* it deletes every row of the space */
    if (api_write(r, &s->op, space_apply, space_done) < 0) {
        buf_free(&s->snap_ids);
        free(s);
    }
}

/* ---- /sync/status: O(1) from the registry ------------------------------- */

void api_sync_status(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    char digest[65];
    digest_hex(&sp->st.digest, digest);
    struct buf b;
    buf_init(&b);
    buf_reserve(&b, 400);
    buf_putc(&b, '{');
    json_kv_str(&b, "space", sp->st.name);
    json_kv_str(&b, "space_uid", sp->st.uid);
    json_kv_str(&b, "instance_id", store_instance_id(r->srv->store));
    json_kv_u64(&b, "server_version", sp->st.version);
    json_kv_u64(&b, "entity_count", sp->st.entities);
    json_kv_u64(&b, "tombstone_count", sp->st.tombstones);
    json_kv_u64(&b, "conflict_count", sp->st.conflicts);
    json_kv_str(&b, "digest", digest);
    json_key(&b, "last_snapshot");
    if (sp->last_snapshot[0]) json_cstr(&b, sp->last_snapshot);
    else buf_puts(&b, "null");
    buf_putc(&b, '}');
    http_send_json(r, 200, &b);
}

/* ---- entity reads ------------------------------------------------------- */

static const char SQL_GET[] =
    "SELECT rev, version, created_at, updated_at, deleted, body FROM entities"
    " WHERE space_id = ? AND collection = ? AND id = ?";

static void entity_get_work(sqlite3 *db, struct read_job *rj)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, SQL_GET, -1, &q, NULL) != SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_int64(q, 1, rj->space_id);
    sqlite3_bind_text(q, 2, rj->collection, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, rj->id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) rj->seen = (uint64_t)sqlite3_column_int64(q, 1);   /* a tombstone's 404 too */
    if (rc == SQLITE_ROW && (!sqlite3_column_int(q, 4) || rj->flag)) {
        snprintf(rj->etag, sizeof rj->etag, "%s", (const char *)sqlite3_column_text(q, 0));
        entity_json(&rj->out, rj->collection, rj->id, rj->etag, (uint64_t)sqlite3_column_int64(q, 1),
                    (uint64_t)sqlite3_column_int64(q, 2), (uint64_t)sqlite3_column_int64(q, 3),
                    sqlite3_column_int(q, 4) != 0, (const char *)sqlite3_column_text(q, 5),
                    (size_t)sqlite3_column_bytes(q, 5));
    } else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
        read_fail(rj, 404, "not_found", "no entity %s/%s", rj->collection, rj->id);
    } else {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(q);
}

static void entity_get_done(struct read_job *rj, struct http_req *r)
{
    size_t il;
    const char *inm = http_header(r, "If-None-Match", &il);
    http_add_header(r, "ETag", "\"%s\"", rj->etag);
    if (inm && etag_list_match(inm, il, rj->etag, true)) {
        http_send_empty(r, 304);
        return;
    }
    http_send_json(r, 200, &rj->out);
}

static struct read_job *entity_job(struct http_req *r, struct space *sp)
{
    struct read_job *rj = read_job_new();
    rj->space_id = sp->st.id;
    snprintf(rj->space, sizeof rj->space, "%s", sp->st.name);
    snprintf(rj->collection, sizeof rj->collection, "%s", r->match.params.collection);
    snprintf(rj->id, sizeof rj->id, "%s", r->match.params.entity);
    return rj;
}

void api_entity_get(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    char v[8];
    long l = api_query(r, "include_deleted", v, sizeof v);
    if (l == -2) return;
    struct read_job *rj = entity_job(r, sp);
    rj->flag = l > 0 && (!strcmp(v, "1") || !strcmp(v, "true"));
    read_submit(r, rj, entity_get_work, entity_get_done);
}

static void entity_list_work(sqlite3 *db, struct read_job *rj)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, rev, version, created_at, updated_at, body FROM entities"
                           " WHERE space_id = ? AND collection = ? AND id > ? AND deleted = 0 ORDER BY id LIMIT ?",
                           -1, &q, NULL) != SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_int64(q, 1, rj->space_id);
    sqlite3_bind_text(q, 2, rj->collection, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, rj->cursor, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, (sqlite3_int64)rj->limit + 1);
    struct buf *b = &rj->out;
    buf_puts(b, "{\"entities\":[");
    uint64_t n = 0;
    char last[130] = "";
    bool more = false;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (n == rj->limit) { more = true; break; }
        if (n++) buf_putc(b, ',');
        const char *id = (const char *)sqlite3_column_text(q, 0);
        snprintf(last, sizeof last, "%s", id);
        uint64_t v = (uint64_t)sqlite3_column_int64(q, 2);
        if (v > rj->seen) rj->seen = v;           /* the answer waits for it to be durable */
        entity_json(b, rj->collection, id, (const char *)sqlite3_column_text(q, 1),
                    (uint64_t)sqlite3_column_int64(q, 2), (uint64_t)sqlite3_column_int64(q, 3),
                    (uint64_t)sqlite3_column_int64(q, 4), false, (const char *)sqlite3_column_text(q, 5),
                    (size_t)sqlite3_column_bytes(q, 5));
    }
    sqlite3_finalize(q);
    buf_puts(b, "],\"next_cursor\":");
    if (more) json_cstr(b, last);
    else buf_puts(b, "null");
    buf_putc(b, '}');
}

void api_entity_list(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct read_job *rj = entity_job(r, sp);
    struct list_page pg;
    if (api_paging(r, LIST_CURSOR_ENTITY, &pg) < 0) {
        free(rj);
        return;
    }
    rj->limit = pg.limit;
    snprintf(rj->cursor, sizeof rj->cursor, "%s", pg.cursor);
    read_submit(r, rj, entity_list_work, NULL);
}

/* By name, paged like every list; the answer stays a bare array (docs/api.md)
 * and the next page's cursor goes in X-Next-Cursor, as for /conflicts. */
static void collections_work(sqlite3 *db, struct read_job *rj)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT collection, sum(deleted = 0) FROM entities WHERE space_id = ? AND collection > ?"
                           " GROUP BY collection ORDER BY collection LIMIT ?",
                           -1, &q, NULL) != SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_int64(q, 1, rj->space_id);
    sqlite3_bind_text(q, 2, rj->cursor, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)rj->limit + 1);
    buf_putc(&rj->out, '[');
    uint64_t n = 0;
    char last[64] = "";              /* not rj->cursor: it is bound to q */
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (n == rj->limit) {
            rj->flag = true;
            break;
        }
        if (n++) buf_putc(&rj->out, ',');
        const char *name = (const char *)sqlite3_column_text(q, 0);
        snprintf(last, sizeof last, "%s", name);
        buf_puts(&rj->out, "{\"name\":");
        json_cstr(&rj->out, name);
        json_kv_u64(&rj->out, "count", (uint64_t)sqlite3_column_int64(q, 1));
        buf_putc(&rj->out, '}');
    }
    buf_putc(&rj->out, ']');
    sqlite3_finalize(q);
    if (rj->flag) snprintf(rj->cursor, sizeof rj->cursor, "%s", last);   /* the next page's */
}

static void collections_done(struct read_job *rj, struct http_req *r)
{
    if (rj->flag) http_add_header(r, "X-Next-Cursor", "%s", rj->cursor);
    http_send_json(r, 200, &rj->out);
}

void api_collections(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct list_page pg;
    if (api_paging(r, LIST_CURSOR_COLLECTION, &pg) < 0) return;
    struct read_job *rj = read_job_new();
    rj->space_id = sp->st.id;
    rj->limit = pg.limit;
    snprintf(rj->cursor, sizeof rj->cursor, "%s", pg.cursor);
    read_submit(r, rj, collections_work, collections_done);
}

/* ---- entity writes ------------------------------------------------------ */

struct entity_op {
    struct wop op;
    char space[64], collection[64], id[129];
    char *raw;                       /* client body (owned) */
    size_t raw_len;
    bool remove;
    bool has_if_match, if_none_match_star;
    char if_match[512];
    /* out */
    int status_ok;                   /* 200 or 201 */
    struct buf out;
    char rev[REV_MAX];
};

static int entity_apply(struct wtx *tx, struct wop *op)
{
    struct entity_op *e = container_of(op, struct entity_op, op);
    struct space_stats *sp = wtx_space(tx, e->space);
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", e->space);
    char *canon = NULL;
    size_t clen = 0;
    if (!e->remove) {
        struct json_err je;
        canon = entity_canonical(e->raw, e->raw_len, true, &clen, &je);
        if (!canon) return wop_fail(op, 400, je.code, "%s", je.message);
        char missing[1024];
        int bc = blobs_check(tx, sp->id, canon, clen, missing, sizeof missing);
        if (bc != 0) {
            free(canon);
            if (bc == -2) return wop_fail(op, 500, "storage_error", "%s", missing);
            if (bc < 0) return wop_fail(op, 400, "invalid_blobs", "%s", missing);
            snprintf(op->err.extra, sizeof op->err.extra, "\"missing\":[%.140s]", missing);
            return wop_fail(op, 422, "missing_blob", "the body references blobs this space does not have; upload them to it first");
        }
    }
    struct ent_row cur;
    int rc = -1;
    if (wtx_entity_get(tx, sp, e->collection, e->id, &cur) < 0) {
        wop_fail(op, 500, "storage_error", "reading the entity failed");
        goto out;
    }
    bool live = cur.exists && !cur.deleted;
    if (e->has_if_match && !etag_list_match(e->if_match, strlen(e->if_match), live ? cur.rev : NULL, false)) {
        snprintf(op->err.extra, sizeof op->err.extra, "\"current_rev\":%s%s%s", live ? "\"" : "", live ? cur.rev : "null",
                 live ? "\"" : "");
        wop_fail(op, 409, "conflict", "If-Match does not match the current revision");
        goto out;
    }
    if (e->if_none_match_star && live) {
        wop_fail(op, 412, "already_exists", "the entity exists (If-None-Match: *)");
        goto out;
    }
    if (e->remove && !live) {
        wop_fail(op, 404, "not_found", "no entity %s/%s", e->collection, e->id);
        goto out;
    }
    if (!e->remove && live && cur.body_len == clen && memcmp(cur.body, canon, clen) == 0) {
        /* same content: nothing changes, no new version (a retried PUT) */
        e->status_ok = 200;
        rc = 0;
    } else {
        char rev[REV_MAX];
        if (rev_make(cur.exists ? cur.rev : NULL, e->remove, canon, clen, rev) < 0) {
            wop_fail(op, 422, "rev_exhausted", "%s/%s is at rev %s: its edit count is at the most a rev can count "
                     "(%llu), so it cannot be edited any more", e->collection, e->id, cur.rev, REV_N_MAX);
            goto out;
        }
        e->status_ok = live ? 200 : 201;
        if (e->remove) e->status_ok = 200;
        rc = wtx_entity_put(tx, op, sp, e->collection, e->id, &cur, rev, e->remove, canon, clen, NULL);
        if (rc < 0) goto out;
    }
    snprintf(e->rev, sizeof e->rev, "%s", cur.rev);
    entity_json(&e->out, e->collection, e->id, cur.rev, cur.version, cur.created_at, cur.updated_at, cur.deleted,
                cur.body, cur.body_len);
out:
    free(canon);
    ent_row_free(&cur);
    return rc;
}

static void entity_done(struct wop *op, struct http_req *r)
{
    struct entity_op *e = container_of(op, struct entity_op, op);
    if (r) {
        if (op->err.status) {
            api_send_wop_error(r, op);
        } else {
            http_add_header(r, "ETag", "\"%s\"", e->rev);
            http_send_json(r, e->status_ok, &e->out);
        }
    }
    buf_free(&e->out);
    free(e->raw);
    free(e);
}

static struct entity_op *entity_op_new(struct http_req *r)
{
    struct entity_op *e = xcalloc(1, sizeof *e);
    snprintf(e->space, sizeof e->space, "%s", r->match.params.space);
    snprintf(e->collection, sizeof e->collection, "%s", r->match.params.collection);
    snprintf(e->id, sizeof e->id, "%s", r->match.params.entity);
    size_t l;
    const char *im = http_header(r, "If-Match", &l);
    if (im) {
        e->has_if_match = true;
        snprintf(e->if_match, sizeof e->if_match, "%.*s", (int)MIN(l, sizeof e->if_match - 1), im);
    }
    return e;
}

void api_entity_put(struct http_req *r)
{
    if (!api_space(r)) return;
    if (r->body.len == 0) {
        http_send_error(r, 400, "invalid_json", NULL, "request body is empty; a JSON object is expected");
        return;
    }
    struct entity_op *e = entity_op_new(r);
    size_t il;
    const char *inm = http_header(r, "If-None-Match", &il);
    if (inm) {
        if (!(il == 1 && inm[0] == '*')) {
            free(e);
            http_send_error(r, 400, "invalid_header", NULL, "If-None-Match on a PUT only takes *");
            return;
        }
        e->if_none_match_star = true;
    }
    e->raw = buf_steal(&r->body, &e->raw_len);      /* parsed on the writer thread */
    if (api_write(r, &e->op, entity_apply, entity_done) < 0) {
        free(e->raw);
        free(e);
    }
}

void api_entity_delete(struct http_req *r)
{
    if (!api_space(r)) return;
    struct entity_op *e = entity_op_new(r);
    e->remove = true;
    if (api_write(r, &e->op, entity_apply, entity_done) < 0) free(e);
}
