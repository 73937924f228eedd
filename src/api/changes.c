/* api_changes.c - SPEC §6: the change feed, pushes with conflict
 * detection, conflict records and their resolution.
 *
 * The feed is the entities table read in version order (one row per
 * entity, its latest state), so a client that pulls since V gets every
 * entity changed after V exactly once. Bodies are stored canonical and are
 * copied into the response verbatim. */
#include <stdio.h>
#include <stdlib.h>

#include "api/api.h"
#include "api/util.h"
#include "svc/blobs.h"
#include "core/canon.h"
#include "core/jobs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "svc/push.h"
#include "net/server.h"
#include "svc/sse.h"
#include "store/store.h"

/* ---- GET /changes ------------------------------------------------------- */

struct changes_arg {
    int ncoll;
    char coll[CHANGES_MAX_COLLECTIONS][64];
    bool all_revs;                   /* style=all_revs: history and conflicts */
    char exclude_origin[27];         /* skip revisions that came from this instance (sync pushes) */
    sqlite3 *db;                     /* set while iterating (worker) */
    int64_t space_id;
    sqlite3_stmt *conf_q;            /* all_revs: one entity's conflicts, prepared once per read */
    int has_conf;                    /* all_revs: -1 unknown, else whether the space has any */
};

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
    const char *hist = (const char *)sqlite3_column_text(q, 8);
    buf_puts(b, ",\"revs\":[");
    json_cstr(b, (const char *)sqlite3_column_text(q, 2));
    for (const char *p = hist; p && *p;) {
        const char *sp = strchr(p, ' ');
        size_t l = sp ? (size_t)(sp - p) : strlen(p);
        buf_putc(b, ',');
        json_str(b, p, l);
        if (!sp) break;
        p = sp + 1;
    }
    buf_puts(b, "],\"conflicts\":[");
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

static void changes_work(sqlite3 *db, struct read_job *rj)
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

/* A page of all_revs changes for a sync push (detached: no request). */
uint64_t changes_until(struct server *srv, const char *space)
{
    struct space *sp = spaces_get(srv->spaces, space);
    return sp ? sp->st.version : UINT64_MAX;
}

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
    read_start_detached(srv->store, rj, changes_work, done);
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
    read_submit(r, rj, changes_work, NULL);
}

int changes_query_parse(const char *query, size_t qlen, struct changes_query *cq, const char **code, char *why,
                        size_t whycap)
{
    char v[1100];
    long l;
    memset(cq, 0, sizeof *cq);
    cq->timeout_ms = 30000;
    cq->bodies = true;
    *code = "invalid_parameter";
    struct list_page pg;
    if (api_list_parse(query, qlen, LIST_NO_CURSOR, &pg, why, whycap) < 0) return -1;
    cq->limit = pg.limit;
    if ((l = http_query_in(query, qlen, "since", v, sizeof v)) != -1 &&
        (l < 0 || parse_u64(v, (size_t)l, INT64_MAX, &cq->since) < 0)) {
        snprintf(why, whycap, "since must be a version number (0 or more)");
        return -1;
    }
    if ((l = http_query_in(query, qlen, "bodies", v, sizeof v)) != -1) {
        if (l >= 0 && (!strcmp(v, "true") || !strcmp(v, "1"))) cq->bodies = true;
        else if (l >= 0 && (!strcmp(v, "false") || !strcmp(v, "0"))) cq->bodies = false;
        else {
            snprintf(why, whycap, "bodies must be true or false");
            return -1;
        }
    }
    if ((l = http_query_in(query, qlen, "collections", v, sizeof v)) > 0) {
        char *save = NULL;
        for (char *t = strtok_r(v, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (!name_collection_valid(t, strlen(t))) {
                *code = "invalid_name";
                snprintf(why, whycap, "invalid collection name in collections");
                return -1;
            }
            if (cq->ncoll == CHANGES_MAX_COLLECTIONS) {
                snprintf(why, whycap, "at most %d collections", CHANGES_MAX_COLLECTIONS);
                return -1;
            }
            snprintf(cq->coll[cq->ncoll++], sizeof cq->coll[0], "%s", t);
        }
    } else if (l == -2) {
        snprintf(why, whycap, "collections is malformed");
        return -1;
    }
    if ((l = http_query_in(query, qlen, "exclude_origin", v, sizeof v)) != -1) {
        if (l < 0 || !ulid_valid(v, (size_t)l)) {
            snprintf(why, whycap, "exclude_origin is an instance id");
            return -1;
        }
        snprintf(cq->exclude_origin, sizeof cq->exclude_origin, "%.26s", v);
    }
    if ((l = http_query_in(query, qlen, "style", v, sizeof v)) != -1) {
        if (l >= 0 && !strcmp(v, "all_revs")) cq->all_revs = true;
        else if (l < 0 || strcmp(v, "main_only") != 0) {
            snprintf(why, whycap, "style must be main_only or all_revs");
            return -1;
        }
    }
    if ((l = http_query_in(query, qlen, "timeout_ms", v, sizeof v)) != -1 &&
        (l < 0 || parse_u64(v, (size_t)l, 300000, &cq->timeout_ms) < 0)) {
        snprintf(why, whycap, "timeout_ms must be from 0 to 300000");
        return -1;
    }
    l = http_query_in(query, qlen, "feed", v, sizeof v);
    if (l == -1 || (l >= 0 && !strcmp(v, "normal"))) cq->feed = CHANGES_FEED_NORMAL;
    else if (l >= 0 && !strcmp(v, "longpoll")) cq->feed = CHANGES_FEED_LONGPOLL;
    else if (l >= 0 && (!strcmp(v, "sse") || !strcmp(v, "eventsource"))) cq->feed = CHANGES_FEED_SSE;
    else {
        snprintf(why, whycap, "feed must be normal, longpoll or sse");
        return -1;
    }
    return 0;
}

void api_changes_get(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct changes_query cq;
    const char *code;
    char why[160];
    if (changes_query_parse(r->query, r->query_len, &cq, &code, why, sizeof why) < 0) {
        http_send_error(r, 400, code, NULL, "%s", why);
        return;
    }
    struct changes_arg *ca = xcalloc(1, sizeof *ca);
    ca->ncoll = cq.ncoll;
    memcpy(ca->coll, cq.coll, sizeof ca->coll);
    ca->all_revs = cq.all_revs;
    memcpy(ca->exclude_origin, cq.exclude_origin, sizeof ca->exclude_origin);
    switch (cq.feed) {
    case CHANGES_FEED_LONGPOLL:
        feed_longpoll(r, sp->st.id, cq.since, cq.limit, cq.bodies, cq.timeout_ms, ca);
        break;
    case CHANGES_FEED_SSE:
        feed_sse(r, sp->st.id, cq.since, ca);
        break;
    default:
        changes_respond(r, sp->st.id, cq.since, sp->st.version, cq.limit, cq.bodies, ca);
    }
}

/* ---- conflicts ---------------------------------------------------------- */

static const char SQL_CONFLICT_INSERT[] =
    "INSERT INTO conflicts(id, space_id, collection, entity_id, current_rev, conflicting_rev, conflicting_body,"
    " deleted, origin, detected_at) VALUES (?,?,?,?,?,?,?,?,?,?)";

/* Records a version the server did not take. Writer thread. */
static int conflict_record(struct wtx *tx, struct wop *op, struct space_stats *sp, const char *coll,
                           const char *id, const char *current_rev, const char *rev, bool deleted,
                           const char *body, size_t blen, const char *origin, char out_id[27])
{
    ulid_make(out_id, wtx_now(tx));
    sqlite3_stmt *st = wtx_stmt(tx, SQL_CONFLICT_INSERT);
    sqlite3_bind_text(st, 1, out_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sp->id);
    sqlite3_bind_text(st, 3, coll, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, current_rev, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, rev, -1, SQLITE_STATIC);
    if (body && !deleted) sqlite3_bind_text(st, 7, body, (int)blen, SQLITE_STATIC);
    sqlite3_bind_int(st, 8, deleted ? 1 : 0);
    sqlite3_bind_text(st, 9, origin, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)wtx_now(tx));
    if (sqlite3_step(st) != SQLITE_DONE)
        return wop_fail(op, 500, "storage_error", "recording the conflict failed");
    sp->conflicts++;
    wtx_space_touch(tx, sp);
    return 0;
}

static void conflict_json(struct buf *b, sqlite3_stmt *q)
{
    /* columns: id, collection, entity_id, current_rev, conflicting_rev, conflicting_body, deleted, origin, detected_at */
    buf_puts(b, "{\"id\":");
    json_cstr(b, (const char *)sqlite3_column_text(q, 0));
    json_kv_str(b, "collection", (const char *)sqlite3_column_text(q, 1));
    json_kv_str(b, "entity_id", (const char *)sqlite3_column_text(q, 2));
    const char *cur = (const char *)sqlite3_column_text(q, 3);
    json_kv_str(b, "current_rev", cur && *cur ? cur : NULL);      /* "" = there was none */
    json_kv_str(b, "conflicting_rev", (const char *)sqlite3_column_text(q, 4));
    buf_puts(b, ",\"conflicting_body\":");
    if (sqlite3_column_type(q, 5) == SQLITE_NULL) buf_puts(b, "null");
    else buf_append(b, sqlite3_column_text(q, 5), (size_t)sqlite3_column_bytes(q, 5));
    json_kv_bool(b, "deleted", sqlite3_column_int(q, 6) != 0);
    json_kv_str(b, "origin", (const char *)sqlite3_column_text(q, 7));
    json_kv_time(b, "detected_at", (uint64_t)sqlite3_column_int64(q, 8));
    buf_putc(b, '}');
}

static void conflicts_work(sqlite3 *db, struct read_job *rj)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, collection, entity_id, current_rev, conflicting_rev, conflicting_body,"
                           " deleted, origin, detected_at FROM conflicts WHERE space_id = ? AND id > ?"
                           " ORDER BY id LIMIT ?",
                           -1, &q, NULL) != SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_int64(q, 1, rj->space_id);
    sqlite3_bind_text(q, 2, rj->cursor, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)rj->limit + 1);
    buf_putc(&rj->out, '[');
    uint64_t n = 0;
    char last[27] = "";              /* not rj->cursor while it is bound to q */
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (n == rj->limit) {
            rj->flag = true;
            break;
        }
        if (n++) buf_putc(&rj->out, ',');
        snprintf(last, sizeof last, "%s", (const char *)sqlite3_column_text(q, 0));
        conflict_json(&rj->out, q);
    }
    buf_putc(&rj->out, ']');
    sqlite3_finalize(q);
    if (rj->flag) snprintf(rj->cursor, sizeof rj->cursor, "%s", last);
}

static void conflicts_done(struct read_job *rj, struct http_req *r)
{
    /* SPEC §6 shows a bare array; the next page's cursor goes in a header */
    if (rj->flag) http_add_header(r, "X-Next-Cursor", "%s", rj->cursor);
    http_send_json(r, 200, &rj->out);
}

void api_conflicts(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct read_job *rj = read_job_new();
    rj->space_id = sp->st.id;
    struct list_page pg;
    if (api_paging(r, LIST_CURSOR_ULID, &pg) < 0) {
        free(rj);
        return;
    }
    rj->limit = pg.limit;
    snprintf(rj->cursor, sizeof rj->cursor, "%s", pg.cursor);
    read_submit(r, rj, conflicts_work, conflicts_done);
}

/* ---- POST /changes ------------------------------------------------------ */

struct push_op {
    struct job job;                  /* parsed on the threadpool */
    struct wop op;                   /* then applied on the writer */
    char *raw;                       /* the request body, until parsed */
    size_t raw_len;
    struct push_batch pb;            /* the parse (threadpool) */
    char space[64];
    char origin[64];
    struct buf out;
};

static void push_result_error(struct buf *b, const char *code, const char *msg)
{
    buf_puts(b, "{\"status\":\"error\",\"error\":");
    json_cstr(b, code);
    buf_puts(b, ",\"message\":");
    json_cstr(b, msg);
    buf_putc(b, '}');
}

static int push_apply(struct wtx *tx, struct wop *op)
{
    struct push_op *p = container_of(op, struct push_op, op);
    struct space_stats *sp = wtx_space(tx, p->space);
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", p->space);
    struct buf *b = &p->out;
    buf_puts(b, "{\"results\":[");
    for (size_t i = 0; i < p->pb.n; i++) {
        struct push_item *it = &p->pb.items[i];
        if (i) buf_putc(b, ',');
        if (it->err_code) {
            push_result_error(b, it->err_code, it->err_msg);
            continue;
        }
        char missing[1024];
        int bc = it->deleted ? 0 : blobs_check(tx, sp->id, it->body, it->body_len, missing, sizeof missing);
        if (bc != 0) {
            push_result_error(b, bc == -2 ? "storage_error" : bc < 0 ? "invalid_blobs" : "missing_blob",
                              bc < 0 ? missing : "the body references blobs this space does not have");
            continue;
        }
        struct ent_row cur;
        if (wtx_entity_get(tx, sp, it->collection, it->id, &cur) < 0) {
            push_result_error(b, "storage_error", "reading the entity failed");
            continue;
        }
        const char *parent = it->has_base ? it->base_rev : NULL;
        char rev[REV_MAX];
        bool base_matches = it->has_base ? (cur.exists && !strcmp(cur.rev, it->base_rev))
                                         : (!cur.exists || cur.deleted);
        int made = rev_make(parent, it->deleted, it->body, it->body_len, rev);
        bool retried = made == 0 && cur.exists && !strcmp(cur.rev, rev);
        /* no base_rev over a tombstone: the new rev follows the tombstone's */
        if (made == 0 && !retried && base_matches && !it->has_base && cur.exists)
            made = rev_make(cur.rev, it->deleted, it->body, it->body_len, rev);
        if (made < 0) {
            push_result_error(b, "rev_exhausted", "the entity's edit count is at the most a rev can count: it cannot "
                              "be edited any more");
        } else if (retried) {
            /* the same edit already applied (a retried push) */
            buf_puts(b, "{\"status\":\"applied\",\"rev\":");
            json_cstr(b, cur.rev);
            json_kv_u64(b, "version", cur.version);
            buf_putc(b, '}');
        } else if (base_matches) {
            if (it->deleted && (!cur.exists || cur.deleted)) {
                push_result_error(b, "not_found", "nothing to delete");
            } else if (wtx_entity_put(tx, op, sp, it->collection, it->id, &cur, rev, it->deleted, it->body,
                                      it->body_len, NULL) < 0) {
                op->status = 0;
                push_result_error(b, "storage_error", "writing the entity failed");
            } else {
                buf_puts(b, "{\"status\":\"applied\",\"rev\":");
                json_cstr(b, cur.rev);
                json_kv_u64(b, "version", cur.version);
                buf_putc(b, '}');
            }
        } else {
            char cid[27];
            if (conflict_record(tx, op, sp, it->collection, it->id, cur.exists ? cur.rev : "", rev, it->deleted,
                                it->body, it->body_len, p->origin, cid) < 0) {
                op->status = 0;
                push_result_error(b, "storage_error", "recording the conflict failed");
            } else {
                buf_puts(b, "{\"status\":\"conflict\",\"current_rev\":");
                if (cur.exists) json_cstr(b, cur.rev);
                else buf_puts(b, "null");
                json_kv_str(b, "conflict_id", cid);
                buf_putc(b, '}');
            }
        }
        ent_row_free(&cur);
    }
    buf_puts(b, "],");
    json_kv_u64(b, "server_version", sp->version);
    buf_putc(b, '}');
    return 0;
}

static void push_free(struct push_op *p)
{
    free(p->raw);
    push_batch_free(&p->pb);
    buf_free(&p->out);
    free(p);
}

static void push_done(struct wop *op, struct http_req *r)
{
    struct push_op *p = container_of(op, struct push_op, op);
    if (r) {
        if (op->status) api_send_wop_error(r, op);
        else http_send_json(r, 200, &p->out);
    }
    push_free(p);
}

static void item_err(struct push_item *it, const char *code, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void item_err(struct push_item *it, const char *code, const char *fmt, ...)
{
    va_list ap;
    it->err_code = code;
    va_start(ap, fmt);
    vsnprintf(it->err_msg, sizeof it->err_msg, fmt, ap);
    va_end(ap);
}

/* SPEC §6: a push is {"changes":[...]}; each change has these members. An
 * unknown member at the top refuses the whole push (400); one in a change
 * is that change's error (its result says so; the others apply), as for
 * any other malformed change. */
static const char *const push_members[] = {"changes", NULL};
static const char *const change_members[] = {"collection", "id", "base_rev", "deleted", "body", NULL};

/* One change, read from its own parse (the stream's current value): names
 * read whole (a NUL in one is never cut short to a shorter name), the body
 * written canonical straight from that parse and held to JSON_MAX_DEPTH
 * counted in itself, as a PUT's. Anything wrong is this change's error. */
static void push_item_parse(struct push_item *it, const struct canon_doc *d, size_t index)
{
    const uint32_t v = 0;
    if (canon_type(d, v) != CANON_OBJ) { item_err(it, "invalid_item", "each change must be an object"); return; }
    const char *unknown = canon_unknown_member(d, v, change_members);
    if (unknown) {
        struct json_err e;
        char where[40];
        snprintf(where, sizeof where, "changes[%zu]", index);
        json_unknown_member_err(&e, where, unknown, change_members);
        item_err(it, "unknown_member", "%s", e.message);
        return;
    }
    size_t cl, il, bl;
    const char *c = canon_name(d, canon_member(d, v, "collection"), &cl);
    const char *id = canon_name(d, canon_member(d, v, "id"), &il);
    if (!c || !name_collection_valid(c, cl)) { item_err(it, "invalid_name", "invalid or missing collection"); return; }
    if (!id || !name_entity_id_valid(id, il)) { item_err(it, "invalid_name", "invalid or missing id"); return; }
    memcpy(it->collection, c, cl + 1);
    memcpy(it->id, id, il + 1);
    uint32_t base = canon_member(d, v, "base_rev");
    if (base != CANON_NONE && canon_type(d, base) != CANON_NULL) {
        const char *br = canon_name(d, base, &bl);
        if (!br || !rev_valid(br)) {
            item_err(it, "invalid_rev", "base_rev must be null or a rev like \"3-9f2c4a1b7d3e0c55\" (N from 1 to "
                     "%llu, no leading zero)", REV_N_MAX);
            return;
        }
        it->has_base = true;
        memcpy(it->base_rev, br, bl + 1);
    }
    enum canon_type dt = canon_type(d, canon_member(d, v, "deleted"));
    if (dt != CANON_ABSENT && dt != CANON_TRUE && dt != CANON_FALSE) {
        item_err(it, "invalid_item", "deleted must be true or false");
        return;
    }
    it->deleted = dt == CANON_TRUE;
    uint32_t body = canon_member(d, v, "body");
    if (!it->deleted) {
        if (canon_type(d, body) != CANON_OBJ) { item_err(it, "invalid_item", "body must be a JSON object"); return; }
        if (canon_depth(d, body) > JSON_MAX_DEPTH) {
            item_err(it, "too_deep", "the body is nested deeper than %d levels", JSON_MAX_DEPTH);
            return;
        }
        struct buf out;
        buf_init(&out);
        canon_emit(d, body, &out);
        it->body = buf_steal(&out, &it->body_len);
    }
}

static void push_fail(struct push_batch *pb, int status, const char *code, const char *msg)
{
    pb->err_status = status;
    snprintf(pb->err.code, sizeof pb->err.code, "%s", code);
    snprintf(pb->err.message, sizeof pb->err.message, "%s", msg);
}

/* push.h. The body (up to --max-body-bytes) parsed, every item checked
 * and its body canonicalized, so neither the loop nor the writer parses.
 * The canonicalizer's streaming reader, as /replicate and PUT use: one
 * parser, one depth rule and one canonical form for every route that
 * writes a body. A change at a time: memory for one change's parse. */
void push_batch_parse(struct push_batch *pb, const char *raw, size_t len)
{
    memset(pb, 0, sizeof *pb);
    struct canon_stream *cs = canon_stream_open(raw, len, JSON_REQUEST_MAX_DEPTH, &pb->err);
    const char *key;
    size_t kl, cap = 0;
    int rc = cs ? 0 : -1;
    bool have = false, bad_changes = false, too_many = false;
    char unknown[64] = "";
    while (cs && (rc = canon_stream_member(cs, &key, &kl)) == 1) {
        if (!json_member_known(key, push_members)) {
            /* refused once the text is known to be valid JSON */
            if (!unknown[0]) snprintf(unknown, sizeof unknown, "%s", key);
        } else if ((rc = canon_stream_array(cs)) == 1) {          /* "changes" */
            have = true;
            while ((rc = canon_stream_element(cs)) == 1) {
                if (pb->n == PUSH_MAX_ITEMS) {
                    too_many = true;
                    break;
                }
                const struct canon_doc *d = canon_stream_value(cs);
                if (!d) { rc = -1; break; }
                if (pb->n == cap) {
                    cap = cap ? cap * 2 : 64;
                    pb->items = xrealloc(pb->items, cap * sizeof *pb->items);
                }
                struct push_item *it = &pb->items[pb->n++];
                memset(it, 0, sizeof *it);
                push_item_parse(it, d, pb->n - 1);
            }
            if (rc < 0 || too_many) break;
            continue;
        }
        if (rc < 0) break;
        if (!canon_stream_value(cs)) { rc = -1; break; }     /* "changes" that is not an array, or unknown */
        if (json_member_known(key, push_members)) bad_changes = true;
    }
    canon_stream_close(cs);
    if (too_many) {
        char m[64];
        snprintf(m, sizeof m, "at most %d changes per push", PUSH_MAX_ITEMS);
        push_fail(pb, 413, "too_many_changes", m);
    } else if (rc < 0) {
        pb->err_status = 400;                        /* pb->err: invalid_json, too_deep, not_an_object */
    } else if (unknown[0]) {
        pb->err_status = 400;
        json_unknown_member_err(&pb->err, "the request body", unknown, push_members);
    } else if (!have || bad_changes) {
        push_fail(pb, 400, "invalid_body", "expected {\"changes\":[...]}");
    }
}

void push_batch_free(struct push_batch *pb)
{
    if (!pb) return;
    for (size_t i = 0; i < pb->n; i++) free(pb->items[i].body);
    free(pb->items);
    pb->items = NULL;
    pb->n = 0;
}

/* threadpool: push_batch_parse, then the raw body is no longer needed */
static void push_parse_work(struct job *j)
{
    struct push_op *p = container_of(j, struct push_op, job);
    push_batch_parse(&p->pb, p->raw, p->raw_len);
    free(p->raw);
    p->raw = NULL;
}

static void push_parsed(struct job *j, struct http_req *r)
{
    struct push_op *p = container_of(j, struct push_op, job);
    if (!r) {
        push_free(p);
        return;
    }
    if (p->pb.err_status) {
        api_send_json_err(r, p->pb.err_status, &p->pb.err);
        push_free(p);
        return;
    }
    if (api_write(r, &p->op, push_apply, push_done) < 0) push_free(p);
}

void api_changes_post(struct http_req *r)
{
    if (!api_space(r)) return;
    if (r->body.len == 0) {
        http_send_error(r, 400, "invalid_json", NULL, "request body is empty; a JSON object is expected");
        return;
    }
    struct push_op *p = xcalloc(1, sizeof *p);
    snprintf(p->space, sizeof p->space, "%s", r->match.params.space);
    snprintf(p->origin, sizeof p->origin, "push:%s", api_actor(r));
    p->raw = buf_steal(&r->body, &p->raw_len);
    job_submit(&r->srv->jobs, &p->job, r, push_parse_work, push_parsed);
}

/* ---- POST /conflicts/{id}/resolve --------------------------------------- */

enum strategy { LOCAL_WINS, REMOTE_WINS, KEEP_BOTH, MERGE };

struct resolve_op {
    struct wop op;
    char space[64], conflict[27], actor[32], remote[56];
    enum strategy strategy;
    char *merge_body;
    size_t merge_len;
    struct buf out;
};

static const char SQL_CONFLICT_GET[] =
    "SELECT collection, entity_id, conflicting_rev, conflicting_body, deleted FROM conflicts"
    " WHERE id = ? AND space_id = ?";

/* history for a resolution: the old current rev, then the losing rev (so
 * replicas that hold the same conflict see it settled), then the rest */
static void merged_history(char *out, size_t cap, const struct ent_row *row, const char *loser)
{
    struct buf b;
    buf_init(&b);
    if (row->exists) {
        buf_puts(&b, row->rev);
        buf_putc(&b, ' ');
    }
    buf_puts(&b, loser);
    if (row->exists && row->revs[0]) {
        buf_putc(&b, ' ');
        buf_puts(&b, row->revs);
    }
    /* keep at most REV_HISTORY - 1 whole entries */
    int n = 0;
    for (size_t k = 0; k < b.len; k++)
        if (b.data[k] == ' ' && ++n == REV_HISTORY - 1) { b.len = k; break; }
    if (b.len >= cap) b.len = 0;     /* cannot happen: 63 revs fit */
    memcpy(out, b.data, b.len);
    out[b.len] = '\0';
    buf_free(&b);
}
static const char SQL_CONFLICT_DEL[] = "DELETE FROM conflicts WHERE id = ?";

static const char *strategy_names[] = {"local_wins", "remote_wins", "keep_both", "merge"};

static int resolve_apply(struct wtx *tx, struct wop *op)
{
    struct resolve_op *rs = container_of(op, struct resolve_op, op);
    struct space_stats *sp = wtx_space(tx, rs->space);
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", rs->space);
    sqlite3_stmt *st = wtx_stmt(tx, SQL_CONFLICT_GET);
    sqlite3_bind_text(st, 1, rs->conflict, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sp->id);
    if (sqlite3_step(st) != SQLITE_ROW) return wop_fail(op, 404, "not_found", "no conflict %s", rs->conflict);
    char coll[64], id[129], crev[REV_MAX];
    snprintf(coll, sizeof coll, "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(id, sizeof id, "%s", (const char *)sqlite3_column_text(st, 1));
    snprintf(crev, sizeof crev, "%s", (const char *)sqlite3_column_text(st, 2));
    bool cdeleted = sqlite3_column_int(st, 4) != 0;
    size_t cblen = (size_t)sqlite3_column_bytes(st, 3);
    char *cbody = sqlite3_column_type(st, 3) == SQLITE_NULL ? NULL : xstrndup((const char *)sqlite3_column_text(st, 3), cblen);
    sqlite3_reset(st);

    struct ent_row cur;
    int rc = -1;
    if (wtx_entity_get(tx, sp, coll, id, &cur) < 0) {
        wop_fail(op, 500, "storage_error", "reading the entity failed");
        goto out;
    }
    const char *body = NULL;
    size_t blen = 0;
    bool deleted = false;
    char target[140];
    snprintf(target, sizeof target, "%s", id);
    struct ent_row *row = &cur;
    struct ent_row extra;
    memset(&extra, 0, sizeof extra);
    switch (rs->strategy) {
    case LOCAL_WINS:
        body = cur.body; blen = cur.body_len; deleted = !cur.exists || cur.deleted;
        break;
    case REMOTE_WINS:
        body = cbody; blen = cblen; deleted = cdeleted;
        break;
    case MERGE:
        body = rs->merge_body; blen = rs->merge_len;
        break;
    case KEEP_BOTH:
        if (cdeleted || !cbody) {
            wop_fail(op, 422, "nothing_to_keep", "the conflicting version is a deletion; use local_wins or remote_wins");
            goto out;
        }
        for (int k = 1; k < 1000; k++) {
            char nid[160];
            snprintf(nid, sizeof nid, "%s~conflict-%d", id, k);
            if (strlen(nid) > 128) {
                wop_fail(op, 422, "id_too_long", "the entity id is too long for a ~conflict-N copy");
                goto out;
            }
            if (wtx_entity_get(tx, sp, coll, nid, &extra) < 0) goto out;
            if (!extra.exists || extra.deleted) {
                memcpy(target, nid, strlen(nid) + 1);     /* checked: <= 128 */
                break;
            }
            ent_row_free(&extra);
        }
        row = &extra;
        body = cbody; blen = cblen;
        break;
    }
    if (deleted && (!row->exists || row->deleted)) {
        /* already gone: resolving leaves it gone, still as a change */
    }
    if (!deleted && body) {
        /* whichever body wins names only blobs of this space (a merge body
         * is the client's; a conflict record's came from a peer) */
        char missing[1024];
        int bc = blobs_check(tx, sp->id, body, blen, missing, sizeof missing);
        if (bc < 0) {
            wop_fail(op, bc == -2 ? 500 : 400, bc == -2 ? "storage_error" : "invalid_blobs", "%s", missing);
            goto out;
        }
        if (bc > 0) {
            snprintf(op->extra, sizeof op->extra, "\"missing\":[%.140s]", missing);
            wop_fail(op, 422, "missing_blob", "the body references blobs this space does not have; upload them to it first");
            goto out;
        }
    }
    char rev[REV_MAX], krev[REV_MAX];
    if (rev_make(row->exists ? row->rev : NULL, deleted, body, blen, rev) < 0 ||
        (rs->strategy == KEEP_BOTH && cur.exists && rev_make(cur.rev, cur.deleted, cur.body, cur.body_len, krev) < 0)) {
        wop_fail(op, 422, "rev_exhausted", "%s/%s: the edit count is at the most a rev can count, so the entity "
                 "cannot be edited any more", coll, id);
        goto out;
    }
    char *bcopy = body ? xstrndup(body, blen) : NULL;    /* row->body is replaced by the put */
    char hist[sizeof cur.revs];
    merged_history(hist, sizeof hist, row, crev);
    int prc = wtx_entity_put(tx, op, sp, coll, target, row, rev, deleted, bcopy, blen,
                             rs->strategy == KEEP_BOTH ? NULL : hist);
    free(bcopy);
    if (prc < 0) goto out;
    if (rs->strategy == KEEP_BOTH && cur.exists) {
        /* the original stays as it is, in a new rev that settles the
         * conflict on every replica */
        merged_history(hist, sizeof hist, &cur, crev);
        char *kb = cur.body ? xstrndup(cur.body, cur.body_len) : NULL;
        prc = wtx_entity_put(tx, op, sp, coll, id, &cur, krev, cur.deleted, kb, cur.body_len, hist);
        free(kb);
        if (prc < 0) goto out;
    }
    st = wtx_stmt(tx, SQL_CONFLICT_DEL);
    sqlite3_bind_text(st, 1, rs->conflict, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        wop_fail(op, 500, "storage_error", "clearing the conflict failed");
        goto out;
    }
    if (sp->conflicts) sp->conflicts--;
    char meta[64];
    snprintf(meta, sizeof meta, "{\"strategy\":\"%s\"}", strategy_names[rs->strategy]);
    char audit_target[200];
    snprintf(audit_target, sizeof audit_target, "%s/%s", coll, id);
    if (wtx_audit(tx, rs->actor, "conflict.resolve", rs->space, audit_target, meta, rs->remote) < 0) {
        wop_fail(op, 500, "storage_error", "audit failed");
        goto out;
    }
    struct buf *b = &rs->out;
    buf_puts(b, "{\"resolved\":");
    json_cstr(b, rs->conflict);
    json_kv_str(b, "strategy", strategy_names[rs->strategy]);
    buf_puts(b, ",\"entity\":");
    entity_json(b, coll, target, row->rev, row->version, row->created_at, row->updated_at, row->deleted, row->body,
                row->body_len);
    buf_putc(b, '}');
    rc = 0;
out:
    free(cbody);
    ent_row_free(&cur);
    ent_row_free(&extra);
    return rc;
}

static void resolve_done(struct wop *op, struct http_req *r)
{
    struct resolve_op *rs = container_of(op, struct resolve_op, op);
    if (r) {
        if (op->status) api_send_wop_error(r, op);
        else http_send_json(r, 200, &rs->out);
    }
    buf_free(&rs->out);
    free(rs->merge_body);
    free(rs);
}

static const char *const resolve_members[] = {"strategy", "body", NULL};
static const char *const resolve_data[] = {"body", NULL};         /* an entity body: user data */

void api_conflict_resolve(struct http_req *r)
{
    if (!api_space(r)) return;
    json_t *root = api_body_members_data(r, resolve_members, resolve_data);
    if (!root) return;
    const char *s = json_name(json_object_get(root, "strategy"));
    int strategy = -1;
    for (int i = 0; s && i < 4; i++)
        if (!strcmp(s, strategy_names[i])) strategy = i;
    if (strategy < 0) {
        json_decref(root);
        http_send_error(r, 400, "invalid_strategy", NULL,
                        "strategy must be local_wins, remote_wins, keep_both or merge");
        return;
    }
    json_t *body = json_object_get(root, "body");
    if (strategy == MERGE && !json_is_object(body)) {
        json_decref(root);
        http_send_error(r, 400, "invalid_body", NULL, "merge needs \"body\": the merged JSON object");
        return;
    }
    if (strategy == MERGE && json_depth(body) > JSON_MAX_DEPTH) {
        json_decref(root);
        http_send_error(r, 400, "too_deep", NULL, "body is nested deeper than %d levels", JSON_MAX_DEPTH);
        return;
    }
    struct resolve_op *rs = xcalloc(1, sizeof *rs);
    snprintf(rs->space, sizeof rs->space, "%s", r->match.params.space);
    snprintf(rs->conflict, sizeof rs->conflict, "%s", r->match.params.id);
    snprintf(rs->actor, sizeof rs->actor, "%s", api_actor(r));
    if (r->conn) snprintf(rs->remote, sizeof rs->remote, "%s", r->client);
    rs->strategy = (enum strategy)strategy;
    if (strategy == MERGE) {
        struct json_err je;
        rs->merge_body = entity_canonical_value(body, &rs->merge_len, &je);
        if (!rs->merge_body) {
            json_decref(root);
            free(rs);
            http_send_error(r, 400, je.code, NULL, "%s", je.message);
            return;
        }
    }
    json_decref(root);
    if (api_write(r, &rs->op, resolve_apply, resolve_done) < 0) {
        free(rs->merge_body);
        free(rs);
    }
}
