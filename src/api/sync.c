/* api/sync.c - the handlers of sync: jobs (POST /sync, GET /sync/jobs and
 * /sync/jobs/{id}), persistent peers (GET /peers, PUT and DELETE
 * /peers/{peer}) and POST /replicate. They parse requests and answer; the
 * engine is svc/sync.c (jobs), svc/peers.c (the registry) and
 * svc/replicate.c (the apply). Loop thread unless noted.
 */
#include "api/sync.h"

#include <stdio.h>
#include <stdlib.h>

#include "api/api.h"
#include "api/util.h"
#include "core/jobs.h"
#include "core/json.h"
#include "core/names.h"
#include "net/http.h"
#include "net/peer.h"
#include "net/server.h"
#include "store/spaces.h"
#include "svc/peers.h"
#include "svc/sync.h"

#define REPLICATE_MAX 1000

/* ---- answers a job sends once its row is stored ---------------------------- */

static void answer_waiter(struct sync_job *j)
{
    if (!j->waiter || sync_running(j)) return;
    struct http_req *r = j->waiter;
    j->waiter = NULL;
    if (r->conn) {
        struct buf b;
        buf_init(&b);
        sync_job_json(&b, j);
        bool ok = j->status == SYNC_COMPLETED;
        if (!ok) {                   /* the failed job, readable as an error too */
            b.len--;
            json_kv_str(&b, "message", j->error);
            buf_putc(&b, '}');
        }
        http_send_json(r, ok ? 200 : j->fail_status ? j->fail_status : 500, &b);
    }
    http_req_unref(r);
}

static void answer_accepted(struct sync_job *j)
{
    struct http_req *r = j->accepted;
    if (!r) return;
    j->accepted = NULL;
    if (r->conn) {
        struct buf b;
        buf_init(&b);
        sync_job_json(&b, j);
        http_add_header(r, "Location", "/api/v1/spaces/%s/sync/jobs/%s", j->space, j->id);
        http_send_json(r, 202, &b);
    }
    http_req_unref(r);
}

/* sync_answer_fn: the 202 after the start row, the wait:true answer after
 * the end row */
static void answer(struct sync_job *j, bool end)
{
    if (end) answer_waiter(j);
    else answer_accepted(j);
}

/* ---- jobs ---- */

static void waiter_abort(struct http_req *r)
{
    struct sync_job *j = r->ctx;
    if (j && j->waiter == r) {
        j->waiter = NULL;
        http_req_unref(r);
    }
    r->ctx = NULL;
}

/* The peer URL member of a request body, checked and made a base URL
 * (peer_base_url) in out; false after answering 400 (v released). */
static bool url_member_ok(struct http_req *r, json_t *v, const char *member, const char *url, char *out, size_t cap)
{
    char why[160];
    if (!url) {
        json_decref(v);
        http_send_error(r, 400, "invalid_url", NULL, "%s is required: the peer's base address, like "
                        "http://host:7420 or https://host/prefix", member);
        return false;
    }
    if (peer_base_url(url, out, cap, why, sizeof why) < 0) {
        json_decref(v);
        http_send_error(r, 400, "invalid_url", NULL, "%s must be the peer's base address, like http://host:7420 or "
                        "https://host/prefix (a trailing /api/v1 is fine), but %s", member, why);
        return false;
    }
    return true;
}

static const char *const sync_members[] = {"peer_url", "peer_space", "peer_token", "direction", "wait", "force",
                                            "bootstrap", NULL};

void api_sync_start(struct http_req *r)
{
    struct server *srv = r->srv;
    struct space *sp = api_space(r);
    if (!sp) return;
    json_t *v = api_body_members(r, sync_members);
    if (!v) return;
    const char *url = json_name(json_object_get(v, "peer_url"));
    const char *pspace = json_name(json_object_get(v, "peer_space"));
    const char *token = json_name(json_object_get(v, "peer_token"));
    const char *dir = json_name(json_object_get(v, "direction"));
    json_t *waitv = json_object_get(v, "wait"), *forcev = json_object_get(v, "force");
    bool wait = json_is_true(waitv), force = json_is_true(forcev);
    json_t *bootv = json_object_get(v, "bootstrap");
    const char *boot = json_name(bootv);
    if (!pspace) pspace = sp->st.name;
    if (!dir) dir = "both";
    char base[PEER_URL_MAX + 1];
    if (!url_member_ok(r, v, "peer_url", url, base, sizeof base)) return;
    url = base;
    const char *bad = NULL;
    if (!name_space_valid(pspace, strlen(pspace))) bad = "peer_space is not a valid space name";
    else if (!token || strlen(token) > 120) bad = "peer_token is required (a key of the peer)";
    else if (strcmp(dir, "pull") && strcmp(dir, "push") && strcmp(dir, "both")) bad = "direction is pull, push or both";
    else if (waitv && !json_is_boolean(waitv)) bad = "wait is true or false";
    else if (forcev && !json_is_boolean(forcev)) bad = "force is true or false";
    else if (bootv && !json_is_null(bootv) && (!boot || (strcmp(boot, "snapshot") && strcmp(boot, "none"))))
        bad = "bootstrap is \"snapshot\" or \"none\"";
    else if (boot && !strcmp(boot, "snapshot") && !strcmp(dir, "push"))
        bad = "bootstrap needs a pull: direction pull or both";
    if (bad) {
        json_decref(v);
        http_send_error(r, 400, "invalid_body", NULL, "%s", bad);
        return;
    }
    if (sync_running_for(srv, sp->st.name, url, pspace)) {
        json_decref(v);
        http_send_error(r, 409, "sync_in_progress", NULL, "a sync of this space with that peer is running");
        return;
    }
    struct sync_params p = {.url = url, .peer_space = pspace, .token = token, .direction = dir,
                            .actor = api_actor(r), .remote = r->conn ? r->client : "", .force = force,
                            .bootstrap = boot && !strcmp(boot, "snapshot")};
    struct sync_job *j = sync_job_new(srv, sp, &p);
    j->answer = answer;
    json_decref(v);
    if (wait) {
        j->waiter = r;
        http_req_ref(r);
        r->ctx = j;
        r->on_abort = waiter_abort;
    } else {
        j->accepted = r;             /* 202 once the job's row is stored */
        http_req_ref(r);
        sync_job_save_start(j);
    }
    sync_job_run(j);
}

/* GET /sync/jobs and /sync/jobs/{id} answer from one source: the stored
 * rows, with the live state of a job this server holds in memory (running,
 * or finished and perhaps not yet stored) in place of its row. A job from
 * before a restart, or one forgotten from memory, is read from its row. */

#define JOB_COLUMNS "id, peer_url, peer_space, direction, status, phase, pulled, pushed, conflicts, blobs, bytes," \
                    " started_at, finished_at, error, errors, error_items, bootstrap"

/* A stored job row as sync_job_json() writes a live one; "requests" is not
 * stored (null). Worker thread. */
static void row_job_json(struct buf *b, sqlite3_stmt *q, const char *space)
{
#define T(i) ((const char *)sqlite3_column_text(q, i))
    buf_puts(b, "{\"id\":");
    json_cstr(b, T(0));
    json_kv_str(b, "space", space);
    json_kv_str(b, "peer_url", T(1));
    json_kv_str(b, "peer_space", T(2));
    json_kv_str(b, "direction", T(3));
    json_kv_str(b, "status", T(4));
    json_kv_str(b, "phase", T(5));
    json_kv_u64(b, "pulled", (uint64_t)sqlite3_column_int64(q, 6));
    json_kv_u64(b, "pushed", (uint64_t)sqlite3_column_int64(q, 7));
    json_kv_u64(b, "conflicts", (uint64_t)sqlite3_column_int64(q, 8));
    json_kv_u64(b, "blobs", (uint64_t)sqlite3_column_int64(q, 9));
    json_kv_u64(b, "bytes", (uint64_t)sqlite3_column_int64(q, 10));
    json_kv_null(b, "requests");
    json_kv_time(b, "started_at", (uint64_t)sqlite3_column_int64(q, 11));
    json_kv_time(b, "finished_at", (uint64_t)sqlite3_column_int64(q, 12));
    json_kv_str(b, "error", T(13));
    json_kv_u64(b, "errors", (uint64_t)sqlite3_column_int64(q, 14));
    /* our own text (sync_error_items_json), stored as it was written */
    json_key(b, "error_items");
    if (T(15) && T(15)[0] == '[') buf_append(b, T(15), (size_t)sqlite3_column_bytes(q, 15));
    else buf_puts(b, "[]");
    /* our own text too (sync_boot_json), or NULL: a job not asked to bootstrap */
    json_key(b, "bootstrap");
    if (T(16) && T(16)[0] == '{') buf_append(b, T(16), (size_t)sqlite3_column_bytes(q, 16));
    else buf_puts(b, "null");
    buf_putc(b, '}');
#undef T
}

static void job_get_work(sqlite3 *db, struct read_job *rj)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "SELECT " JOB_COLUMNS " FROM sync_jobs WHERE space = ? AND id = ?", -1, &q, NULL) !=
        SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_text(q, 1, rj->space, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, rj->id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) row_job_json(&rj->out, q, rj->space);
    else if (rc == SQLITE_DONE) read_fail(rj, 404, "not_found", "no sync job %s in this space", rj->id);
    else read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
    sqlite3_finalize(q);
}

void api_sync_job(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct sync_job *j = sync_job_find(r->srv, sp->st.name, r->match.params.id);
    if (j) {
        struct buf b;
        buf_init(&b);
        sync_job_json(&b, j);
        http_send_json(r, 200, &b);
        return;
    }
    struct read_job *rj = read_job_new();
    snprintf(rj->space, sizeof rj->space, "%s", sp->st.name);
    snprintf(rj->id, sizeof rj->id, "%s", r->match.params.id);
    read_submit(r, rj, job_get_work, NULL);
}

/* A page of stored rows (worker), each written whole into rj->out. */
struct jobs_page {
    size_t n;
    struct jobs_row {
        char id[27];
        size_t off, len;             /* in rj->out; len 0: a job held in memory (j) */
        struct sync_job *j;
    } rows[];
};

static void jobs_work(sqlite3 *db, struct read_job *rj)
{
    struct jobs_page *pg = rj->arg;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT " JOB_COLUMNS " FROM sync_jobs WHERE space = ? AND id < ? ORDER BY id DESC LIMIT ?",
                           -1, &q, NULL) != SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_text(q, 1, rj->space, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, rj->cursor[0] ? rj->cursor : "~", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)rj->limit + 1);
    while (pg->n < rj->limit + 1 && sqlite3_step(q) == SQLITE_ROW) {
        struct jobs_row *row = &pg->rows[pg->n++];
        snprintf(row->id, sizeof row->id, "%s", (const char *)sqlite3_column_text(q, 0));
        row->off = rj->out.len;
        row_job_json(&rj->out, q, rj->space);
        row->len = rj->out.len - row->off;
    }
    sqlite3_finalize(q);
}

static int row_newer_first(const void *a, const void *b)
{
    return -strcmp(((const struct jobs_row *)a)->id, ((const struct jobs_row *)b)->id);
}

/* Loop: the stored page merged with the jobs held in memory (their live
 * state wins; one not stored yet is listed too), newest first. Of the
 * stored rows the read took limit + 1, so the first limit of the merge are
 * the page whatever the memory adds. */
static void jobs_done(struct read_job *rj, struct http_req *r)
{
    struct jobs_page *pg = rj->arg;
    struct sync_ctx *sc = r->srv->sync;
    size_t nmem = 0;
    struct list *l;
    for (l = sc->jobs.next; l != &sc->jobs; l = l->next) nmem++;
    struct jobs_row *all = xcalloc(pg->n + nmem + 1, sizeof *all);
    size_t n = 0;
    for (size_t i = 0; i < pg->n; i++) {
        all[n] = pg->rows[i];
        all[n].j = sync_job_find(r->srv, rj->space, all[n].id);
        n++;
    }
    for (l = sc->jobs.next; l != &sc->jobs; l = l->next) {
        struct sync_job *x = container_of(l, struct sync_job, link);
        if (strcmp(x->space, rj->space) || (rj->cursor[0] && strcmp(x->id, rj->cursor) >= 0)) continue;
        bool stored = false;
        for (size_t i = 0; i < pg->n && !stored; i++) stored = !strcmp(pg->rows[i].id, x->id);
        if (stored) continue;
        snprintf(all[n].id, sizeof all[n].id, "%s", x->id);
        all[n].j = x;
        n++;
    }
    qsort(all, n, sizeof *all, row_newer_first);
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"jobs\":[");
    size_t shown = n < rj->limit ? n : rj->limit;
    for (size_t i = 0; i < shown; i++) {
        if (i) buf_putc(&b, ',');
        if (all[i].j) sync_job_json(&b, all[i].j);
        else buf_append(&b, rj->out.data + all[i].off, all[i].len);
    }
    buf_puts(&b, "],\"next_cursor\":");
    if (n > shown) json_cstr(&b, all[shown - 1].id);
    else buf_puts(&b, "null");
    buf_putc(&b, '}');
    free(all);
    http_send_json(r, 200, &b);
}

void api_sync_jobs(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct read_job *rj = read_job_new();
    snprintf(rj->space, sizeof rj->space, "%s", sp->st.name);
    struct list_page lp;
    if (api_paging(r, LIST_CURSOR_ULID, &lp) < 0) {
        free(rj);
        return;
    }
    rj->limit = lp.limit;
    snprintf(rj->cursor, sizeof rj->cursor, "%s", lp.cursor);
    struct jobs_page *pg = xcalloc(1, sizeof *pg + (rj->limit + 1) * sizeof pg->rows[0]);
    rj->arg = pg;
    read_submit(r, rj, jobs_work, jobs_done);
}

/* ---- persistent peers ---- */

static void peer_json(struct buf *b, const struct peer_def *p)
{
    buf_puts(b, "{\"name\":");
    json_cstr(b, p->name);
    json_kv_str(b, "url", p->url);
    json_kv_str(b, "space", p->peer_space);
    buf_puts(b, ",\"token\":\"***\"");           /* stored, never shown back */
    json_kv_str(b, "direction", p->direction);
    json_kv_u64(b, "every_seconds", p->every_s);
    json_kv_time(b, "created_at", p->created_at);
    json_kv_str(b, "last_job", p->last_job[0] ? p->last_job : NULL);
    json_kv_str(b, "last_status", p->last_status[0] ? p->last_status : NULL);
    json_kv_str(b, "last_error", p->last_error[0] ? p->last_error : NULL);
    json_kv_time(b, "last_run_at", p->last_run_at);
    json_kv_u64(b, "failures", p->failures);
    json_kv_bool(b, "running", p->running);
    buf_putc(b, '}');
}

/* The registry follows the committed op, then the answer. */
static void peer_op_done(struct wop *op, struct http_req *r)
{
    struct peer_op *po = container_of(op, struct peer_op, op);
    struct peer_def *d = &po->def;
    peer_op_committed(po);
    if (r) {
        if (op->err.status) api_send_wop_error(r, op);
        else if (po->remove) http_send_empty(r, 204);
        else {
            struct buf b;
            buf_init(&b);
            struct peer_def *cur = peer_find(r->srv, d->space, d->name);
            peer_json(&b, cur ? cur : d);
            http_send_json(r, po->created ? 201 : 200, &b);
        }
    }
    peer_op_free(po);
}

static const char *const peer_members[] = {"url", "space", "token", "direction", "every_seconds", NULL};

void api_peer_put(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    json_t *v = api_body_members(r, peer_members);
    if (!v) return;
    const char *url = json_name(json_object_get(v, "url"));
    const char *pspace = json_name(json_object_get(v, "space"));
    const char *token = json_name(json_object_get(v, "token"));
    const char *dir = json_name(json_object_get(v, "direction"));
    json_t *every = json_object_get(v, "every_seconds");
    if (!pspace) pspace = sp->st.name;
    if (!dir) dir = "both";
    char base[PEER_URL_MAX + 1];
    if (!url_member_ok(r, v, "url", url, base, sizeof base)) return;
    url = base;
    const char *bad = NULL;
    if (!name_space_valid(pspace, strlen(pspace))) bad = "space is not a valid space name";
    else if (!token || strlen(token) > 120) bad = "token is required (a key of the peer)";
    else if (strcmp(dir, "pull") && strcmp(dir, "push") && strcmp(dir, "both")) bad = "direction is pull, push or both";
    else if (every && (!json_is_integer(every) || json_integer_value(every) < 0 || json_integer_value(every) > 86400 * 30))
        bad = "every_seconds is a whole number of seconds (0 = only on demand)";
    if (bad) {
        json_decref(v);
        http_send_error(r, 400, "invalid_body", NULL, "%s", bad);
        return;
    }
    struct peer_op *po = xcalloc(1, sizeof *po);
    po->srv = r->srv;
    struct peer_def *d = &po->def;
    snprintf(d->space, sizeof d->space, "%s", sp->st.name);
    snprintf(d->name, sizeof d->name, "%s", r->match.params.peer);
    snprintf(d->url, sizeof d->url, "%s", url);
    snprintf(d->peer_space, sizeof d->peer_space, "%s", pspace);
    snprintf(d->direction, sizeof d->direction, "%s", dir);
    snprintf(po->actor, sizeof po->actor, "%s", api_actor(r));
    if (r->conn) snprintf(po->remote, sizeof po->remote, "%s", r->client);
    d->token = xstrdup(token);
    d->space_id = sp->st.id;
    d->every_s = every ? (uint64_t)json_integer_value(every) : 0;
    json_decref(v);
    if (api_write(r, &po->op, peer_apply, peer_op_done) < 0) {
        free(d->token);
        free(po);
    }
}

void api_peer_delete(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct peer_op *po = xcalloc(1, sizeof *po);
    po->srv = r->srv;
    po->remove = true;
    snprintf(po->def.space, sizeof po->def.space, "%s", sp->st.name);
    snprintf(po->def.name, sizeof po->def.name, "%s", r->match.params.peer);
    snprintf(po->actor, sizeof po->actor, "%s", api_actor(r));
    if (r->conn) snprintf(po->remote, sizeof po->remote, "%s", r->client);
    po->def.space_id = sp->st.id;
    if (api_write(r, &po->op, peer_apply, peer_op_done) < 0) free(po);
}

static int peer_by_name(const void *a, const void *b)
{
    return strcmp((*(struct peer_def *const *)a)->name, (*(struct peer_def *const *)b)->name);
}

/* By name, paged like every list: the cursor is the last name shown. */
void api_peers_list(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct list_page pg;
    if (api_paging(r, LIST_CURSOR_PEER, &pg) < 0) return;
    size_t n = 0, cap = 16;
    struct peer_def **v = xmalloc(cap * sizeof *v);
    for (struct list *l = r->srv->sync->peers.next; l != &r->srv->sync->peers; l = l->next) {
        struct peer_def *p = container_of(l, struct peer_def, link);
        if (strcmp(p->space, sp->st.name) || (pg.cursor[0] && strcmp(p->name, pg.cursor) <= 0)) continue;
        if (n == cap) v = xrealloc(v, (cap *= 2) * sizeof *v);
        v[n++] = p;
    }
    qsort(v, n, sizeof *v, peer_by_name);
    size_t shown = n < pg.limit ? n : (size_t)pg.limit;
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"peers\":[");
    for (size_t i = 0; i < shown; i++) {
        if (i) buf_putc(&b, ',');
        peer_json(&b, v[i]);
    }
    buf_puts(&b, "],\"next_cursor\":");
    if (n > shown) json_cstr(&b, v[shown - 1]->name);
    else buf_puts(&b, "null");
    buf_putc(&b, '}');
    free(v);
    http_send_json(r, 200, &b);
}

/* ---- POST /replicate ---- */

struct rep_op {
    struct job job;                  /* parse on the threadpool */
    struct wop op;                   /* then apply on the writer */
    char space[64], origin[80];
    char *raw;
    size_t raw_len;
    bool parsed;
    struct json_err err;
    struct rep_batch batch;
    struct buf out;
};

static int rep_apply(struct wtx *tx, struct wop *op)
{
    struct rep_op *ro = container_of(op, struct rep_op, op);
    struct space_stats *sp = wtx_space(tx, ro->space);
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", ro->space);
    if (ro->batch.source_instance[0]) wtx_set_origin(tx, ro->batch.source_instance);
    struct buf *b = &ro->out;
    uint64_t before = sp->version;
    buf_puts(b, "{\"results\":[");
    struct rep_counts cnt;
    if (rep_apply_batch(tx, op, sp, &ro->batch, ro->origin, &cnt, b) < 0) return -1;
    buf_puts(b, "],");
    json_kv_u64(b, "applied", cnt.applied);
    json_kv_u64(b, "ignored", cnt.ignored);
    json_kv_u64(b, "conflicts", cnt.conflicts);
    json_kv_u64(b, "errors", cnt.errors);
    /* version_before == the sender's pull checkpoint means every version up
     * to server_version is the sender's own: it may skip pulling them */
    json_kv_u64(b, "version_before", before);
    json_kv_u64(b, "server_version", sp->version);
    buf_putc(b, '}');
    return 0;
}

static void rep_op_free(struct rep_op *ro)
{
    rep_batch_free(&ro->batch);
    buf_free(&ro->out);
    free(ro->raw);
    free(ro);
}

static void rep_done(struct wop *op, struct http_req *r)
{
    struct rep_op *ro = container_of(op, struct rep_op, op);
    if (r) {
        if (op->err.status) api_send_wop_error(r, op);
        else http_send_json(r, 200, &ro->out);
    }
    rep_op_free(ro);
}

/* threadpool: the body parsed and every entity checked and canonicalized,
 * so the writer only decides and writes */
static void rep_parse_work(struct job *j)
{
    struct rep_op *ro = container_of(j, struct rep_op, job);
    ro->parsed = rep_batch_parse(&ro->batch, ro->raw, ro->raw_len, &ro->err) == 0;
    free(ro->raw);
    ro->raw = NULL;
    /* a pulled page may carry members a newer peer added; a request may not */
    if (ro->parsed && ro->batch.unknown[0]) {
        ro->parsed = false;
        json_unknown_member_err(&ro->err, "the request body", ro->batch.unknown, rep_members);
    }
    if (ro->parsed && ro->batch.n > REPLICATE_MAX) {
        ro->parsed = false;
        snprintf(ro->err.code, sizeof ro->err.code, "invalid_body");
        snprintf(ro->err.message, sizeof ro->err.message, "at most %d entities per request", REPLICATE_MAX);
    }
}

static void rep_parsed(struct job *j, struct http_req *r)
{
    struct rep_op *ro = container_of(j, struct rep_op, job);
    if (!r) {
        rep_op_free(ro);
        return;
    }
    if (!ro->parsed) {
        api_send_json_err(r, 400, &ro->err);
        rep_op_free(ro);
        return;
    }
    if (api_write(r, &ro->op, rep_apply, rep_done) < 0) rep_op_free(ro);
}

void api_replicate(struct http_req *r)
{
    if (!api_space(r)) return;
    if (r->body.len == 0) {
        http_send_error(r, 400, "invalid_json", NULL, "expected {\"entities\":[...]}");
        return;
    }
    struct rep_op *ro = xcalloc(1, sizeof *ro);
    snprintf(ro->space, sizeof ro->space, "%s", r->match.params.space);
    snprintf(ro->origin, sizeof ro->origin, "replicate:%s", api_actor(r));
    ro->raw = buf_steal(&r->body, &ro->raw_len);     /* parsed on the threadpool */
    job_submit(&r->srv->jobs, &ro->job, r, rep_parse_work, rep_parsed);
}
