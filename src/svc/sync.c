/* sync.c - sync jobs: pull from and/or push to a peer, with
 * per-(peer, peer space_uid, direction) checkpoints. This file is a job's
 * life (start, rows, end, lookups) and the engine that drives its state
 * machine (sync_job.h); the pull is sync_pull.c, the push sync_push.c,
 * blob transfers blob_transfer.c and persistent peers peers.c.
 *
 * A job is a small state machine on the loop thread; every step is a peer
 * request (net/peer.c) or a local read/write, never a blocking call:
 *   status   GET peer /sync/status: its space_uid and server_version
 *   pull     GET peer /changes?since=cp&style=all_revs in pages
 *            (sync_pull.c); each page's writer op also advances the pull
 *            checkpoint in the same transaction
 *   push     local changes since the push checkpoint, leaving out the
 *            revisions that came from that peer, POSTed to its /replicate
 *            (sync_push.c); the checkpoint advances once the peer
 *            accepted the page
 * A checkpoint whose peer space_uid differs, or that is past the peer's
 * server_version (its data was replaced), is dropped: a full diff runs.
 * A sync with nothing to do costs the one status request, and one commit
 * (its row with both audit records).
 * Progress goes out as SSE `sync` events; start and end are audited.
 */
#include "svc/sync.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/counters.h"
#include "core/json.h"
#include "core/log.h"
#include "net/http.h"
#include "net/server.h"
#include "store/read.h"
#include "store/spaces.h"
#include "store/store.h"
#include "store/writer.h"
#include "svc/sse.h"
#include "sync_int.h"

void sync_publish(struct sync_job *j)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"space\":");
    json_cstr(&b, j->space);
    json_kv_str(&b, "job", j->id);
    json_kv_str(&b, "peer", j->peer_url);
    json_kv_str(&b, "phase", sync_phase_name(j->phase));
    json_kv_u64(&b, "pulled", j->pulled);
    json_kv_u64(&b, "pushed", j->pushed);
    json_kv_u64(&b, "conflicts", j->conflicts);
    json_kv_u64(&b, "percent", (uint64_t)sync_percent(j));
    json_kv_str(&b, "status", sync_status_name(j->status));
    if (j->error[0]) json_kv_str(&b, "error", j->error);
    json_kv_u64(&b, "errors", j->errors);
    json_key(&b, "error_items");
    sync_error_items_json(&b, j);
    buf_putc(&b, '}');
    sse_publish(j->srv, SSE_SYNC, j->space, b.data, b.len);
    buf_free(&b);
}


/* ---- rows in the database ----------------------------------------------- */

struct job_row_op {
    struct wop op;
    struct sync_job snap;            /* a copy: the job may go on meanwhile */
    struct sync_job *job;            /* answered once the row is stored (row_pending holds it) */
    bool insert;                     /* the start row (sync.start) */
    bool finish;                     /* the end state (sync.finish); both: a job that wrote nothing else */
};

/* sync.start: the job and its direction; sync.finish: how it ended, with
 * what it could not apply (errors, error_items) */
static void audit_meta(const struct sync_job *j, bool fin, struct buf *meta)
{
    buf_putc(meta, '{');
    json_kv_str(meta, "job", j->id);
    json_kv_str(meta, "direction", j->direction);
    json_kv_str(meta, "status", sync_status_name(fin ? j->status : SYNC_RUNNING));
    json_kv_u64(meta, "pulled", fin ? j->pulled : 0);
    json_kv_u64(meta, "pushed", fin ? j->pushed : 0);
    if (fin) {
        json_kv_u64(meta, "errors", j->errors);
        json_key(meta, "error_items");
        sync_error_items_json(meta, j);
    }
    buf_putc(meta, '}');
}

static int job_row_apply(struct wtx *tx, struct wop *op)
{
    struct job_row_op *o = container_of(op, struct job_row_op, op);
    struct sync_job *j = &o->snap;
    sqlite3_stmt *st = wtx_stmt(tx,
                                "INSERT INTO sync_jobs(id, space, peer_url, peer_space, direction, status, phase, pulled,"
                                " pushed, conflicts, blobs, bytes, started_at, finished_at, error, created_by, errors,"
                                " error_items, bootstrap)"
                                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,"
                                " ?19)"
                                " ON CONFLICT(id) DO UPDATE SET status = ?6, phase = ?7, pulled = ?8, pushed = ?9,"
                                " conflicts = ?10, blobs = ?11, bytes = ?12, finished_at = ?14, error = ?15,"
                                " errors = ?17, error_items = ?18, bootstrap = ?19");
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->space, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, j->peer_url, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, j->peer_space, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, j->direction, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, sync_status_name(j->status), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, sync_phase_name(j->phase), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)j->pulled);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)j->pushed);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)j->conflicts);
    sqlite3_bind_int64(st, 11, (sqlite3_int64)j->blobs);
    sqlite3_bind_int64(st, 12, (sqlite3_int64)j->bytes);
    sqlite3_bind_int64(st, 13, (sqlite3_int64)j->started_at);
    if (j->finished_at) sqlite3_bind_int64(st, 14, (sqlite3_int64)j->finished_at);
    if (j->error[0]) sqlite3_bind_text(st, 15, j->error, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 16, j->actor, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 17, (sqlite3_int64)j->errors);
    struct buf items, meta;
    buf_init(&items);
    buf_init(&meta);
    sync_error_items_json(&items, j);
    sqlite3_bind_text(st, 18, items.data, (int)items.len, SQLITE_STATIC);
    struct buf boot;
    buf_init(&boot);
    if (j->boot != SYNC_BOOT_OFF) {
        sync_boot_json(&boot, j);
        sqlite3_bind_text(st, 19, boot.data, (int)boot.len, SQLITE_STATIC);
    }
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : wop_fail(op, 500, "storage_error", "recording the sync job failed");
    char target[600];
    snprintf(target, sizeof target, "%.500s#%.63s", j->peer_url, j->peer_space);
    if (rc == 0 && o->insert) {
        audit_meta(j, false, &meta);
        if (wtx_audit(tx, j->actor, "sync.start", j->space, target, meta.data, j->remote) < 0)
            rc = wop_fail(op, 500, "storage_error", "audit failed");
    }
    if (rc == 0 && o->finish) {
        buf_reset(&meta);
        meta.len = 0;
        audit_meta(j, true, &meta);
        if (wtx_audit(tx, j->actor, "sync.finish", j->space, target, meta.data, j->remote) < 0)
            rc = wop_fail(op, 500, "storage_error", "audit failed");
    }
    buf_free(&items);
    buf_free(&meta);
    buf_free(&boot);
    return rc;
}

/* Lets the answer that waited for a row go (see sync_answer_fn). */
static void row_stored(struct sync_job *j, bool insert, bool fin)
{
    if (insert && j->answer) j->answer(j, false);
    if (fin) {
        sync_publish(j);             /* the end state, now that GET /sync/jobs shows it too */
        if (j->answer) j->answer(j, true);
    }
}

/* The job's answers wait for its row: a client that reads GET /sync/jobs
 * right after the answer sees what the answer said. */
static void job_row_done(struct wop *op, struct http_req *r)
{
    struct job_row_op *o = container_of(op, struct job_row_op, op);
    struct sync_job *j = o->job;
    UNUSED(r);
    j->rows_pending--;
    row_stored(j, o->insert, o->finish);
    free(o);
}

static void save_row(struct sync_job *j, bool insert, bool fin)
{
    struct job_row_op *o = xcalloc(1, sizeof *o);
    o->snap = *j;
    o->snap.token = NULL;
    o->snap.conflicted = NULL;
    o->snap.waiter = NULL;
    o->snap.accepted = NULL;
    o->job = j;
    o->insert = insert;
    o->finish = fin;
    j->rows_pending++;
    if (writer_submit(j->srv->writer, &o->op, NULL, job_row_apply, job_row_done) < 0) {
        free(o);
        j->rows_pending--;
        row_stored(j, insert, fin);
    }
}

/* The job's row and its sync.start audit. A job answered with 202 stores it
 * at once (the answer follows it); any other job stores it when it first
 * has something to write, so a sync with nothing to do commits once: its
 * row, start and end together (save_end_row). */
void sync_save_start_row(struct sync_job *j)
{
    if (j->row_saved) return;
    j->row_saved = true;
    save_row(j, true, false);
}

static void save_end_row(struct sync_job *j)
{
    bool start = !j->row_saved;
    j->row_saved = true;
    save_row(j, start, true);
}

/* ---- ending ------------------------------------------------------------- */

/* A finished job nothing refers to any more (its rows written, no waiter). */
static bool job_forgettable(const struct sync_job *x)
{
    return !sync_running(x) && !x->rows_pending && !x->pipeline && !x->cp_pending && !x->waiter &&
           !x->accepted;
}

void sync_job_free(struct sync_job *x)
{
    json_decref(x->conflicted);
    free(x->token);
    free(x);
}

static void job_forget(struct sync_ctx *sc, struct sync_job *x)
{
    if (sc->hooks.job_release) sc->hooks.job_release(x);
    list_remove(&x->link);
    sc->n--;
    sync_job_free(x);
}

static void job_forget_old(struct sync_ctx *sc)
{
    while (sc->n > SYNC_KEEP) {
        struct list *l;
        struct sync_job *old = NULL;
        for (l = sc->jobs.next; l != &sc->jobs; l = l->next) {
            struct sync_job *x = container_of(l, struct sync_job, link);
            if (job_forgettable(x)) {
                old = x;
                break;
            }
        }
        if (!old) return;
        job_forget(sc, old);
    }
}

/* Ends the job (the decision is sync_end's), then what follows an end: the
 * token wiped, metrics, the end row (the end event and the waiter's answer
 * follow it), a persistent peer's schedule. */
void sync_finish(struct sync_job *j, int http, const char *error_fmt, ...)
{
    if (!sync_running(j)) return;        /* finished already */
    char why[sizeof j->error];
    if (error_fmt) {
        va_list ap;
        va_start(ap, error_fmt);
        vsnprintf(why, sizeof why, error_fmt, ap);
        va_end(ap);
    }
    sync_end(j, http, error_fmt ? why : NULL);
    assert(sync_status_terminal(j->status));
    j->finished_at = now_ms_wall();
    memset(j->token, 0, strlen(j->token));
    metrics_sync(j->srv->metrics, sync_status_name(j->status), j->pulled, j->pushed, j->blobs);
    save_end_row(j);                 /* the end event and the waiter's answer follow the stored row */
    log_info("sync_finished", "\"job\":\"%s\",\"space\":\"%s\",\"status\":\"%s\",\"pulled\":%llu,\"pushed\":%llu,"
             "\"errors\":%llu,\"requests\":%llu", j->id, j->space, sync_status_name(j->status), (unsigned long long)j->pulled,
             (unsigned long long)j->pushed, (unsigned long long)j->errors, (unsigned long long)j->requests);
    if (j->peer_name[0] && j->srv->sync->hooks.job_ended) j->srv->sync->hooks.job_ended(j);
    job_forget_old(j->srv->sync);
}


/* ---- steps -------------------------------------------------------------- */

static void on_retry(uv_timer_t *t)
{
    sync_step(t->data);
}

void sync_peer_explain(const struct sync_job *j, const struct peer_result *res, const char *what, char *out,
                         size_t cap)
{
    if (res->error) snprintf(out, cap, "%s: the peer could not be reached: %s", what, res->error);
    else if (res->status == 401) snprintf(out, cap, "%s: the peer refused the token (401 unauthorized)", what);
    else if (res->status == 403) snprintf(out, cap, "%s: the peer's token may not do this (403 forbidden)", what);
    else if (res->status == 404 && res->body && res->body->len &&
             memmem(res->body->data, res->body->len, "\"space_not_found\"", 17))
        snprintf(out, cap, "%s: the peer has no space '%s' (404)", what, j->peer_space);
    else if (res->status == 404)
        snprintf(out, cap, "%s: nothing at %.100s/api/v1/spaces/%s (404): is the peer URL the base address of a "
                 "snapsync server (like http://host:7420)?", what, j->peer_url, j->peer_space);
    else snprintf(out, cap, "%s: the peer answered %d", what, res->status);
}

int sync_peer_fail_status(const struct sync_job *j, const struct peer_result *res)
{
    return j->srv->shutting_down ? 503 : res->timed_out ? 504 : 502;
}

bool sync_peer_failed(struct sync_job *j, const struct peer_result *res, const char *what)
{
    if (sync_peer_transient(res->status, res->error != NULL, res->timed_out) && ++j->tries <= SYNC_RETRIES && !j->srv->shutting_down) {
        if (!j->retry_init) {
            uv_timer_init(j->srv->loop, &j->retry);
            j->retry.data = j;
            j->retry_init = true;
        }
        uint64_t delay = 250u << (2 * (j->tries - 1));          /* 250 ms, 1 s, 4 s */
        uv_timer_start(&j->retry, on_retry, delay, 0);
        return true;
    }
    char why[300];
    sync_peer_explain(j, res, what, why, sizeof why);
    sync_finish(j, sync_peer_fail_status(j, res), "%s", why);
    return false;
}

static void url_for(const struct sync_job *j, const char *tail, char *out, size_t cap)
{
    size_t l = strlen(j->peer_url);
    bool slash = l && j->peer_url[l - 1] == '/';
    snprintf(out, cap, "%.*s/api/v1/spaces/%s%s", (int)(slash ? l - 1 : l), j->peer_url, j->peer_space, tail);
}

int sync_send_peer(struct sync_job *j, const char *method, const char *tail, const char *body, size_t len, peer_cb cb,
                   bool finish_on_fail)
{
    char url[1100];
    url_for(j, tail, url, sizeof url);
    j->requests++;
    if (body) j->bytes += len;
    if (peer_request(j->srv, method, url, j->token, body, len, (long)j->srv->sync->timeout_ms, cb, j) < 0) {
        if (finish_on_fail) sync_finish(j, 500, "cannot start a request to %s", url);
        return -1;
    }
    return 0;
}

void sync_xfer_init(struct blob_xfer *x, const struct sync_job *j)
{
    memset(x, 0, sizeof *x);
    url_for(j, "", x->url, sizeof x->url);
    snprintf(x->token, sizeof x->token, "%s", j->token);
    snprintf(x->data_dir, sizeof x->data_dir, "%s", j->srv->cfg->data_dir);
    x->srv = j->srv;
    x->space_id = j->space_id;
    snprintf(x->owner, sizeof x->owner, "%s", j->id);
}

/* -- checkpoints (read on the threadpool) -- */

/* The read's own copy of what it needs, and its results: the worker never
 * touches the live job (the loop's), cp_done copies them in. */
struct cp_read {
    int64_t space_id;                            /* in */
    char peer_url[512], peer_space[64];          /* in */
    uint64_t cp_pull, cp_push;                   /* out */
    char cp_pull_uid[27], cp_push_uid[27];       /* out */
};

static void cp_work(sqlite3 *db, struct read_job *rj)
{
    struct cp_read *c = rj->arg;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT direction, peer_uid, version FROM checkpoints WHERE space_id = ? AND peer_url = ?"
                           " AND peer_space = ?",
                           -1, &q, NULL) != SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_int64(q, 1, c->space_id);
    sqlite3_bind_text(q, 2, c->peer_url, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, c->peer_space, -1, SQLITE_STATIC);
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *dir = (const char *)sqlite3_column_text(q, 0);
        bool pull = !strcmp(dir, "pull");
        snprintf(pull ? c->cp_pull_uid : c->cp_push_uid, 27, "%s", (const char *)sqlite3_column_text(q, 1));
        *(pull ? &c->cp_pull : &c->cp_push) = (uint64_t)sqlite3_column_int64(q, 2);
    }
    sqlite3_finalize(q);
}

static void cp_done(struct read_job *rj, struct http_req *r)
{
    struct sync_job *j = rj->user;
    const struct cp_read *c = rj->arg;
    UNUSED(r);
    if (rj->err.status) {
        sync_finish(j, 500, "reading checkpoints failed: %s", rj->err.msg);
        return;
    }
    j->cp_pull = c->cp_pull;
    j->cp_push = c->cp_push;
    memcpy(j->cp_pull_uid, c->cp_pull_uid, sizeof j->cp_pull_uid);
    memcpy(j->cp_push_uid, c->cp_push_uid, sizeof j->cp_push_uid);
    j->cp_loaded = true;
    sync_step(j);
}

static void cp_read_start(struct sync_job *j)
{
    struct read_job *rj = read_job_new();
    struct cp_read *c = xcalloc(1, sizeof *c);
    c->space_id = j->space_id;
    snprintf(c->peer_url, sizeof c->peer_url, "%s", j->peer_url);
    snprintf(c->peer_space, sizeof c->peer_space, "%s", j->peer_space);
    rj->arg = c;                     /* freed with the job */
    rj->user = j;
    read_start_detached(j->srv->store, rj, cp_work, cp_done);
}

const char SYNC_SQL_CHECKPOINT_GET[] =
    "SELECT peer_uid, version FROM checkpoints WHERE space_id = ? AND peer_url = ? AND peer_space = ?"
    " AND direction = 'pull'";

/* Writer thread: moves a checkpoint, in the caller's transaction. */
static const char SQL_CHECKPOINT[] =
    "INSERT INTO checkpoints(space_id, peer_url, peer_space, direction, peer_uid, version, updated_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO UPDATE SET peer_uid = ?5, version = ?6, updated_at = ?7";

int sync_checkpoint_save(struct wtx *tx, int64_t space_id, const char *url, const char *pspace, const char *dir,
                         const char *uid, uint64_t version)
{
    sqlite3_stmt *st = wtx_stmt(tx, SQL_CHECKPOINT);
    sqlite3_bind_int64(st, 1, space_id);
    sqlite3_bind_text(st, 2, url, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, pspace, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, dir, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, uid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)version);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)wtx_now(tx));
    return sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
}

static void on_status(void *arg, const struct peer_result *res);

/* ---- the state machine --------------------------------------------------- */

/* The status phase: the peer's status, then the checkpoints, then on to
 * the pull or the push. */
static void status_step(struct sync_job *j)
{
    if (!j->peer_uid[0]) {
        sync_send_peer(j, "GET", "/sync/status", NULL, 0, on_status, true);
        return;
    }
    if (!j->cp_loaded && j->force) {
        /* no checkpoint: both halves start from version 0, and the
         * checkpoints move again as the pages go (a known revision is
         * ignored, so only what is missing is written) */
        j->cp_loaded = true;
    }
    if (!j->cp_loaded) {
        cp_read_start(j);
        return;
    }
    struct space *sp = spaces_get(j->srv->spaces, j->space);
    if (sync_checkpoints_settle(j, sp ? sp->st.version : 0)) sync_save_start_row(j);
    sync_publish(j);
    sync_step(j);
}

void sync_step(struct sync_job *j)
{
    if (!sync_running(j)) return;
    if (j->srv->shutting_down) {
        /* a pull with pages on their way ends once they are done with */
        if (j->phase == SYNC_PHASE_PULL) j->srv->sync->hooks.pull_pump(j);
        else if (j->phase == SYNC_PHASE_BOOTSTRAP) j->srv->sync->hooks.boot_step(j);
        else sync_finish(j, 503, "interrupted: the server is shutting down");
        return;
    }
    switch (j->phase) {
    case SYNC_PHASE_STATUS:
        status_step(j);
        return;
    case SYNC_PHASE_BOOTSTRAP:
        j->srv->sync->hooks.boot_step(j);    /* also after a retry's wait */
        return;
    case SYNC_PHASE_PULL:
        j->srv->sync->hooks.pull_pump(j);    /* also after a retry's wait */
        return;
    case SYNC_PHASE_PUSH:
        j->srv->sync->hooks.push_step(j);
        return;
    case SYNC_PHASE_DONE:
        if (j->cp_pending) return;   /* push_cp_done steps again after the last one */
        sync_finish(j, 0, NULL);
        return;
    }
}

void sync_job_run(struct sync_job *j)
{
    sync_step(j);
}

static void on_status(void *arg, const struct peer_result *res)
{
    struct sync_job *j = arg;
    if (res->status != 200) {
        sync_peer_failed(j, res, "status");
        return;
    }
    j->tries = 0;
    json_error_t je;
    json_t *v = json_loadb(res->body->data ? res->body->data : "", res->body->len, 0, &je);
    const char *uid = json_name(json_object_get(v, "space_uid"));
    const char *inst = json_name(json_object_get(v, "instance_id"));
    json_t *ver = json_object_get(v, "server_version");
    if (!uid || !json_is_integer(ver) || strlen(uid) >= sizeof j->peer_uid) {
        json_decref(v);
        sync_finish(j, 502, "the peer's /sync/status answer is not snapsync's (no space_uid / server_version)");
        return;
    }
    snprintf(j->peer_uid, sizeof j->peer_uid, "%s", uid);
    snprintf(j->peer_instance, sizeof j->peer_instance, "%s", inst && strlen(inst) == 26 ? inst : "");
    j->peer_version = (uint64_t)json_integer_value(ver);
    json_decref(v);
    if (!strcmp(j->peer_instance, store_instance_id(j->srv->store))) {
        sync_finish(j, 502, "the peer is this instance");
        return;
    }
    sync_step(j);
}

/* ---- jobs ---------------------------------------------------------------- */

struct sync_job *sync_job_new(struct server *srv, struct space *sp, const struct sync_params *p)
{
    struct sync_job *j = xcalloc(1, sizeof *j);
    j->srv = srv;
    ulid_make(j->id, now_ms_wall());
    snprintf(j->space, sizeof j->space, "%s", sp->st.name);
    snprintf(j->peer_url, sizeof j->peer_url, "%s", p->url);
    snprintf(j->peer_space, sizeof j->peer_space, "%s", p->peer_space);
    snprintf(j->actor, sizeof j->actor, "%s", p->actor);
    snprintf(j->remote, sizeof j->remote, "%s", p->remote);
    snprintf(j->peer_name, sizeof j->peer_name, "%s", p->peer_name ? p->peer_name : "");
    j->token = xstrdup(p->token);
    j->space_id = sp->st.id;
    j->force = p->force;
    sync_job_state_init(j, p->direction);
    if (p->bootstrap && j->pull) j->boot = SYNC_BOOT_PENDING;
    j->started_at = now_ms_wall();
    list_insert_tail(&srv->sync->jobs, &j->link);
    srv->sync->n++;
    sync_publish(j);
    return j;
}

void sync_job_save_start(struct sync_job *j)
{
    sync_save_start_row(j);
}

struct sync_job *sync_running_for(struct server *srv, const char *space, const char *url, const char *pspace)
{
    struct list *l;
    for (l = srv->sync->jobs.next; l != &srv->sync->jobs; l = l->next) {
        struct sync_job *j = container_of(l, struct sync_job, link);
        if (sync_running(j) && !strcmp(j->space, space) && !strcmp(j->peer_url, url) &&
            !strcmp(j->peer_space, pspace))
            return j;
    }
    return NULL;
}

void sync_blob_stats(struct server *srv, struct sync_blob_stats *out)
{
    memset(out, 0, sizeof *out);
    struct sync_ctx *sc = srv->sync;
    if (!sc) return;
    out->running = sc->gate.active;
    out->waited = sc->gate.waited;
    out->waiting = blob_gate_waiting(&sc->gate);
}

bool sync_space_running(struct server *srv, const char *space)
{
    if (!srv->sync) return false;
    struct list *l;
    for (l = srv->sync->jobs.next; l != &srv->sync->jobs; l = l->next) {
        struct sync_job *j = container_of(l, struct sync_job, link);
        if (sync_running(j) && !strcmp(j->space, space)) return true;
    }
    return false;
}

struct sync_job *sync_job_find(struct server *srv, const char *space, const char *id)
{
    struct list *l;
    for (l = srv->sync->jobs.next; l != &srv->sync->jobs; l = l->next) {
        struct sync_job *j = container_of(l, struct sync_job, link);
        if (!strcmp(j->id, id) && !strcmp(j->space, space)) return j;
    }
    return NULL;
}

void sync_forget_space_jobs(struct sync_ctx *sc, const char *space)
{
    /* the finished jobs kept in memory, so that a space made later under
     * the same name does not show them */
    struct list *l, *next;
    for (l = sc->jobs.next; l != &sc->jobs; l = next) {
        next = l->next;
        struct sync_job *x = container_of(l, struct sync_job, link);
        if (!strcmp(x->space, space) && job_forgettable(x)) job_forget(sc, x);
    }
}

/* ---- life ---------------------------------------------------------------- */

int sync_recover(void *dbp, char *err, size_t errlen)
{
    sqlite3 *db = dbp;
    sqlite3_stmt *st;
    /* finished now, in ms (never before it started, whatever the clock did) */
    if (sqlite3_prepare_v2(db,
                           "UPDATE sync_jobs SET status = 'failed', error = 'interrupted: the server stopped while it"
                           " ran', finished_at = max(started_at, ?1) WHERE status = 'running'",
                           -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "marking interrupted sync jobs failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)now_ms_wall());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "marking interrupted sync jobs failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    int n = sqlite3_changes(db);
    if (n) log_warn("sync_jobs_recovered", "\"interrupted\":%d", n);
    return 0;
}
