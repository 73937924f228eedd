/* changes.c - the change feed's handler (the reader is
 * svc/changes.c), pushes with conflict detection (the parse is
 * svc/push.c), conflict records and their resolution. */
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

/* a live feed reads pages as large as the list rule allows */
_Static_assert(CHANGES_PAGE_MAX == LIST_MAX, "svc/changes.h CHANGES_PAGE_MAX is api/util.h LIST_MAX");

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
    if ((l = http_query_in(query, qlen, "deleted", v, sizeof v)) != -1) {
        if (l >= 0 && !strcmp(v, "only")) cq->deleted_only = true;
        else if (l < 0 || strcmp(v, "any") != 0) {
            snprintf(why, whycap, "deleted must be only or any");
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
    ca->deleted_only = cq.deleted_only;
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
    /* the API gives a bare array; the next page's cursor goes in a header */
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
                op->err.status = 0;
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
                op->err.status = 0;
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
        if (op->err.status) api_send_wop_error(r, op);
        else http_send_json(r, 200, &p->out);
    }
    push_free(p);
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

/* What a resolution works on (writer thread): the conflict record, the
 * entity as it is, and the version that wins. */
struct resolve_ctx {
    struct space_stats *sp;
    char coll[64], id[129], crev[REV_MAX];
    bool cdeleted;
    char *cbody;                     /* the conflicting body, or NULL */
    size_t cblen;
    struct ent_row cur;              /* the entity now */
    struct ent_row extra;            /* keep_both: the ~conflict-N copy */
    struct ent_row *row;             /* where the winner is written: &cur or &extra */
    const char *body;                /* the winner (points into cur, cbody or the op) */
    size_t blen;
    bool deleted;
    char target[140];                /* the id the winner is written to */
};

/* Reads the conflict record into c. 0, or -1 with op failed. */
static int resolve_load(struct wtx *tx, struct wop *op, struct resolve_op *rs, struct resolve_ctx *c)
{
    sqlite3_stmt *st = wtx_stmt(tx, SQL_CONFLICT_GET);
    sqlite3_bind_text(st, 1, rs->conflict, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, c->sp->id);
    if (sqlite3_step(st) != SQLITE_ROW) return wop_fail(op, 404, "not_found", "no conflict %s", rs->conflict);
    snprintf(c->coll, sizeof c->coll, "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(c->id, sizeof c->id, "%s", (const char *)sqlite3_column_text(st, 1));
    snprintf(c->crev, sizeof c->crev, "%s", (const char *)sqlite3_column_text(st, 2));
    c->cdeleted = sqlite3_column_int(st, 4) != 0;
    c->cblen = (size_t)sqlite3_column_bytes(st, 3);
    c->cbody = sqlite3_column_type(st, 3) == SQLITE_NULL ? NULL
                                                         : xstrndup((const char *)sqlite3_column_text(st, 3), c->cblen);
    sqlite3_reset(st);
    return 0;
}

/* keep_both: the first free ~conflict-N id takes the conflicting version. */
static int resolve_keep_both_target(struct wtx *tx, struct wop *op, struct resolve_ctx *c)
{
    if (c->cdeleted || !c->cbody)
        return wop_fail(op, 422, "nothing_to_keep", "the conflicting version is a deletion; use local_wins or remote_wins");
    for (int k = 1; k < 1000; k++) {
        char nid[160];
        snprintf(nid, sizeof nid, "%s~conflict-%d", c->id, k);
        if (strlen(nid) > 128) return wop_fail(op, 422, "id_too_long", "the entity id is too long for a ~conflict-N copy");
        if (wtx_entity_get(tx, c->sp, c->coll, nid, &c->extra) < 0) return -1;
        if (!c->extra.exists || c->extra.deleted) {
            memcpy(c->target, nid, strlen(nid) + 1);     /* checked: <= 128 */
            break;
        }
        ent_row_free(&c->extra);
    }
    c->row = &c->extra;
    c->body = c->cbody;
    c->blen = c->cblen;
    return 0;
}

/* Picks the winner by strategy. 0, or -1 with op failed. */
static int resolve_choose(struct wtx *tx, struct wop *op, struct resolve_op *rs, struct resolve_ctx *c)
{
    snprintf(c->target, sizeof c->target, "%s", c->id);
    c->row = &c->cur;
    switch (rs->strategy) {
    case LOCAL_WINS:
        c->body = c->cur.body; c->blen = c->cur.body_len; c->deleted = !c->cur.exists || c->cur.deleted;
        break;
    case REMOTE_WINS:
        c->body = c->cbody; c->blen = c->cblen; c->deleted = c->cdeleted;
        break;
    case MERGE:
        c->body = rs->merge_body; c->blen = rs->merge_len;
        break;
    case KEEP_BOTH:
        if (resolve_keep_both_target(tx, op, c) < 0) return -1;
        break;
    }
    if (c->deleted && (!c->row->exists || c->row->deleted)) {
        /* already gone: resolving leaves it gone, still as a change */
    }
    if (!c->deleted && c->body) {
        /* whichever body wins names only blobs of this space (a merge body
         * is the client's; a conflict record's came from a peer) */
        char missing[1024];
        int bc = blobs_check(tx, c->sp->id, c->body, c->blen, missing, sizeof missing);
        if (bc < 0) return wop_fail(op, bc == -2 ? 500 : 400, bc == -2 ? "storage_error" : "invalid_blobs", "%s", missing);
        if (bc > 0) {
            snprintf(op->err.extra, sizeof op->err.extra, "\"missing\":[%.140s]", missing);
            return wop_fail(op, 422, "missing_blob",
                            "the body references blobs this space does not have; upload them to it first");
        }
    }
    return 0;
}

/* Writes the winner (and, for keep_both, the original in a new rev), clears
 * the conflict and audits. 0, or -1 with op failed. */
static int resolve_write(struct wtx *tx, struct wop *op, struct resolve_op *rs, struct resolve_ctx *c)
{
    struct ent_row *row = c->row, *cur = &c->cur;
    struct space_stats *sp = c->sp;
    char rev[REV_MAX], krev[REV_MAX];
    if (rev_make(row->exists ? row->rev : NULL, c->deleted, c->body, c->blen, rev) < 0 ||
        (rs->strategy == KEEP_BOTH && cur->exists && rev_make(cur->rev, cur->deleted, cur->body, cur->body_len, krev) < 0))
        return wop_fail(op, 422, "rev_exhausted", "%s/%s: the edit count is at the most a rev can count, so the entity "
                        "cannot be edited any more", c->coll, c->id);
    char *bcopy = c->body ? xstrndup(c->body, c->blen) : NULL;    /* row->body is replaced by the put */
    char hist[sizeof cur->revs];
    merged_history(hist, sizeof hist, row, c->crev);
    int prc = wtx_entity_put(tx, op, sp, c->coll, c->target, row, rev, c->deleted, bcopy, c->blen,
                             rs->strategy == KEEP_BOTH ? NULL : hist);
    free(bcopy);
    if (prc < 0) return -1;
    if (rs->strategy == KEEP_BOTH && cur->exists) {
        /* the original stays as it is, in a new rev that settles the
         * conflict on every replica */
        merged_history(hist, sizeof hist, cur, c->crev);
        char *kb = cur->body ? xstrndup(cur->body, cur->body_len) : NULL;
        prc = wtx_entity_put(tx, op, sp, c->coll, c->id, cur, krev, cur->deleted, kb, cur->body_len, hist);
        free(kb);
        if (prc < 0) return -1;
    }
    sqlite3_stmt *st = wtx_stmt(tx, SQL_CONFLICT_DEL);
    sqlite3_bind_text(st, 1, rs->conflict, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "clearing the conflict failed");
    if (sp->conflicts) sp->conflicts--;
    char meta[64];
    snprintf(meta, sizeof meta, "{\"strategy\":\"%s\"}", strategy_names[rs->strategy]);
    char audit_target[200];
    snprintf(audit_target, sizeof audit_target, "%s/%s", c->coll, c->id);
    if (wtx_audit(tx, rs->actor, "conflict.resolve", rs->space, audit_target, meta, rs->remote) < 0)
        return wop_fail(op, 500, "storage_error", "audit failed");
    return 0;
}

static int resolve_apply(struct wtx *tx, struct wop *op)
{
    struct resolve_op *rs = container_of(op, struct resolve_op, op);
    struct resolve_ctx c;
    memset(&c, 0, sizeof c);
    c.sp = wtx_space(tx, rs->space);
    if (!c.sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", rs->space);
    if (resolve_load(tx, op, rs, &c) < 0) return -1;
    int rc = -1;
    if (wtx_entity_get(tx, c.sp, c.coll, c.id, &c.cur) < 0) {
        wop_fail(op, 500, "storage_error", "reading the entity failed");
        goto out;
    }
    if (resolve_choose(tx, op, rs, &c) < 0 || resolve_write(tx, op, rs, &c) < 0) goto out;
    struct ent_row *row = c.row;
    struct buf *b = &rs->out;
    buf_puts(b, "{\"resolved\":");
    json_cstr(b, rs->conflict);
    json_kv_str(b, "strategy", strategy_names[rs->strategy]);
    buf_puts(b, ",\"entity\":");
    entity_json(b, c.coll, c.target, row->rev, row->version, row->created_at, row->updated_at, row->deleted, row->body,
                row->body_len);
    buf_putc(b, '}');
    rc = 0;
out:
    free(c.cbody);
    ent_row_free(&c.cur);
    ent_row_free(&c.extra);
    return rc;
}

static void resolve_done(struct wop *op, struct http_req *r)
{
    struct resolve_op *rs = container_of(op, struct resolve_op, op);
    if (r) {
        if (op->err.status) api_send_wop_error(r, op);
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
