/* changes.c - see changes.h.
 *
 * The feed is the entities table read in version order (one row per
 * entity, its latest state), so a client that pulls since V gets every
 * entity changed after V exactly once. Bodies are stored canonical and are
 * copied into the response verbatim. */
#include "svc/changes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/entity.h"
#include "core/json.h"
#include "net/http.h"
#include "net/server.h"
#include "store/spaces.h"
#include "store/store.h"

void *changes_filter_copy(const void *filter)
{
    struct changes_arg *c = xcalloc(1, sizeof *c);
    if (filter) *c = *(const struct changes_arg *)filter;
    return c;
}

/* Calls row() for each change after rj->since (up to rj->limit), in version
 * order; returns the count, sets *more and *last. Worker thread. */
typedef void (*change_row_fn)(struct read_job *rj, sqlite3_stmt *q, uint64_t n);

static uint64_t changes_iter(sqlite3 *db, struct read_job *rj, change_row_fn row, bool *more, uint64_t *last)
{
    struct changes_arg *ca = rj->arg;
    char sql[1024];
    size_t n = (size_t)snprintf(sql, sizeof sql,
                                "SELECT collection, id, rev, version, created_at, updated_at, deleted, body, revs"
                                " FROM entities WHERE space_id = ?1 AND version > ?2 AND version <= ?21");
    if (ca && ca->ncoll) {
        n += (size_t)snprintf(sql + n, sizeof sql - n, " AND collection IN (");
        for (int i = 0; i < ca->ncoll; i++) n += (size_t)snprintf(sql + n, sizeof sql - n, "%s?%d", i ? "," : "", 4 + i);
        n += (size_t)snprintf(sql + n, sizeof sql - n, ")");
    }
    if (ca && ca->exclude_origin[0])
        n += (size_t)snprintf(sql + n, sizeof sql - n, " AND (origin IS NULL OR origin != ?20)");
    if (ca && ca->deleted_only) n += (size_t)snprintf(sql + n, sizeof sql - n, " AND deleted = 1");
    snprintf(sql + n, sizeof sql - n, " ORDER BY version LIMIT ?3");
    sqlite3_stmt *q;
    *more = false;
    *last = rj->since;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return 0;
    }
    sqlite3_bind_int64(q, 1, rj->space_id);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)rj->since);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)rj->limit + 1);
    sqlite3_bind_int64(q, 21, rj->until > (uint64_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)rj->until);
    for (int i = 0; ca && i < ca->ncoll; i++) sqlite3_bind_text(q, 4 + i, ca->coll[i], -1, SQLITE_STATIC);
    if (ca) {
        ca->db = db;
        ca->space_id = rj->space_id;
        ca->conf_q = NULL;
        ca->has_conf = -1;
        if (ca->exclude_origin[0]) sqlite3_bind_text(q, 20, ca->exclude_origin, -1, SQLITE_STATIC);
    }
    uint64_t count = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (count == rj->limit) { *more = true; break; }
        *last = (uint64_t)sqlite3_column_int64(q, 3);
        row(rj, q, count++);
    }
    sqlite3_finalize(q);
    if (ca && ca->conf_q) {
        sqlite3_finalize(ca->conf_q);
        ca->conf_q = NULL;
    }
    if (!*more) {
        /* the end of the feed: report the space's version in this same read
         * snapshot, so a filtered feed does not make the client rescan */
        uint64_t v;
        if (store_space_version(db, rj->space_id, &v) == 1)
            *last = v < rj->until ? v : rj->until;   /* even when since is ahead; never past what may be shown */
    }
    return count;
}

/* ,"revs":[rev, older...],"conflicts":[{"rev","deleted","body"}] */
static void all_revs_members(struct changes_arg *ca, sqlite3_stmt *q, struct buf *b)
{
    const char *coll = (const char *)sqlite3_column_text(q, 0), *id = (const char *)sqlite3_column_text(q, 1);
    buf_puts(b, ",\"revs\":");
    rev_history_json(b, (const char *)sqlite3_column_text(q, 2), (const char *)sqlite3_column_text(q, 8));
    buf_puts(b, ",\"conflicts\":[");
    /* Both queries below run while the feed's statement is active, so they
     * read the same snapshot as the row. A space without conflict records
     * (the common case) costs one probe per read, not one per row. */
    if (ca->has_conf < 0) {
        sqlite3_stmt *e;
        ca->has_conf = 1;
        if (sqlite3_prepare_v2(ca->db, "SELECT EXISTS (SELECT 1 FROM conflicts WHERE space_id = ?)", -1, &e, NULL) ==
            SQLITE_OK) {
            sqlite3_bind_int64(e, 1, ca->space_id);
            if (sqlite3_step(e) == SQLITE_ROW) ca->has_conf = sqlite3_column_int(e, 0) != 0;
            sqlite3_finalize(e);
        }
    }
    if (ca->has_conf && !ca->conf_q &&
        sqlite3_prepare_v2(ca->db,
                           "SELECT conflicting_rev, deleted, conflicting_body FROM conflicts"
                           " WHERE space_id = ? AND collection = ? AND entity_id = ? ORDER BY id",
                           -1, &ca->conf_q, NULL) != SQLITE_OK)
        ca->conf_q = NULL;
    sqlite3_stmt *c = ca->has_conf ? ca->conf_q : NULL;
    if (c) {
        sqlite3_reset(c);
        sqlite3_bind_int64(c, 1, ca->space_id);
        sqlite3_bind_text(c, 2, coll, -1, SQLITE_STATIC);
        sqlite3_bind_text(c, 3, id, -1, SQLITE_STATIC);
        int n = 0;
        while (sqlite3_step(c) == SQLITE_ROW) {
            if (n++) buf_putc(b, ',');
            buf_puts(b, "{\"rev\":");
            json_cstr(b, (const char *)sqlite3_column_text(c, 0));
            json_kv_bool(b, "deleted", sqlite3_column_int(c, 1) != 0);
            buf_puts(b, ",\"body\":");
            if (sqlite3_column_type(c, 2) == SQLITE_NULL) buf_puts(b, "null");
            else buf_append(b, sqlite3_column_text(c, 2), (size_t)sqlite3_column_bytes(c, 2));
            buf_putc(b, '}');
        }
        sqlite3_reset(c);
    }
    buf_putc(b, ']');
}

static void row_entity(struct read_job *rj, sqlite3_stmt *q, struct buf *b)
{
    struct changes_arg *ca = rj->arg;
    bool bodies = rj->flag || (ca && ca->all_revs);
    entity_json(b, (const char *)sqlite3_column_text(q, 0), (const char *)sqlite3_column_text(q, 1),
                (const char *)sqlite3_column_text(q, 2), (uint64_t)sqlite3_column_int64(q, 3),
                (uint64_t)sqlite3_column_int64(q, 4), (uint64_t)sqlite3_column_int64(q, 5),
                sqlite3_column_int(q, 6) != 0, bodies ? (const char *)sqlite3_column_text(q, 7) : NULL,
                bodies ? (size_t)sqlite3_column_bytes(q, 7) : 0);
    if (ca && ca->all_revs) {
        b->len--;                    /* reopen the object */
        all_revs_members(ca, q, b);
        buf_putc(b, '}');
    }
}

static void row_json(struct read_job *rj, sqlite3_stmt *q, uint64_t n)
{
    if (n) buf_putc(&rj->out, ',');
    row_entity(rj, q, &rj->out);
}

void changes_json_work(sqlite3 *db, struct read_job *rj)
{
    bool more;
    uint64_t last;
    buf_puts(&rj->out, "{\"changes\":[");
    rj->n = changes_iter(db, rj, row_json, &more, &last);
    buf_puts(&rj->out, "],");
    json_kv_u64(&rj->out, "last_version", last);
    json_kv_bool(&rj->out, "more", more);
    buf_putc(&rj->out, '}');
    /* for callers on the loop (sync pushes): where this page ended */
    rj->since = last;
    rj->flag = more;
}

uint64_t changes_until(struct server *srv, const char *space)
{
    struct space *sp = spaces_get(srv->spaces, space);
    return sp ? sp->st.version : UINT64_MAX;
}

/* A page of all_revs changes for a sync push (detached: no request). */
void changes_page(struct server *srv, int64_t space_id, uint64_t since, uint64_t until, uint64_t limit,
                  const char *exclude_origin, read_done_fn done, void *user)
{
    struct read_job *rj = read_job_new();
    rj->until = until;
    struct changes_arg *ca = xcalloc(1, sizeof *ca);
    ca->all_revs = true;
    if (exclude_origin) snprintf(ca->exclude_origin, sizeof ca->exclude_origin, "%s", exclude_origin);
    rj->arg = ca;
    rj->space_id = space_id;
    rj->since = since;
    rj->limit = limit;
    rj->flag = true;
    rj->user = user;
    read_start_detached(srv->store, rj, changes_json_work, done);
}

/* one SSE frame per change: id is the version, so Last-Event-ID resumes */
static void row_sse(struct read_job *rj, sqlite3_stmt *q, uint64_t n)
{
    UNUSED(n);
    buf_puts(&rj->out, "id: ");
    buf_put_u64(&rj->out, (uint64_t)sqlite3_column_int64(q, 3));
    buf_puts(&rj->out, "\nevent: change\ndata: ");
    row_entity(rj, q, &rj->out);
    buf_puts(&rj->out, "\n\n");
}

void changes_sse_work(sqlite3 *db, struct read_job *rj)
{
    bool more;
    uint64_t last;
    rj->n = changes_iter(db, rj, row_sse, &more, &last);
    /* outputs: since = how far this read got, flag = more to read */
    rj->since = last;
    rj->flag = more;
}

void changes_respond(struct http_req *r, int64_t space_id, uint64_t since, uint64_t until, uint64_t limit, bool bodies,
                     void *filter)
{
    struct read_job *rj = read_job_new();
    rj->until = until;
    rj->arg = filter;
    rj->space_id = space_id;
    rj->since = since;
    rj->limit = limit;
    rj->flag = bodies;
    read_start(r->srv->store, r, rj, changes_json_work, NULL);
}
