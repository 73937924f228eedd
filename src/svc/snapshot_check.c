/* snapshot_check.c - what reads of a snapshot's file found: the integrity
 * marks on the rows, the operator's verify (POST .../verify) and the
 * background check (--snapshot-verify-every). See snapshot.h. */
#include "svc/snapshot.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/counters.h"
#include "core/json.h"
#include "core/log.h"
#include "net/server.h"
#include "store/store.h"
#include "store/writer.h"
#include "svc/sse.h"

/* ---- integrity: what reads of a snapshot's file found -------------------
 * A completed snapshot's `integrity` is 'unchecked' (written and hashed as
 * written, never read back in full), 'ok' (the last full check passed:
 * sha256, gzip, every line, counts) or 'corrupt' (a read found the file
 * damaged or missing; `integrity_error` says how). Every read that finds
 * damage -- a download, a preview or dry run, a restore's check, the verify
 * route, the background check -- marks the row with a writer op; a full
 * check that passes marks it 'ok' again (a repaired file is usable once
 * verified). A snapshot marked corrupt is refused by download, preview and
 * restore (422 snapshot_corrupt). The change to corrupt (and back) is
 * logged with the file's path (clients never see it), counted, published
 * as a `snapshot` event and audited. */

static const char *const integ_src_name[] = {"download", "preview", "restore", "verify", "background"};

struct integ_op;
typedef void (*integ_then_fn)(struct integ_op *io, struct http_req *r);

struct integ_op {
    struct wop op;
    struct server *srv;
    /* in */
    char id[27], space[64], actor[32], remote[56];
    enum integ_src src;
    bool ok;                         /* the read found the file whole */
    char why[200];                   /* else what it found */
    integ_then_fn then;              /* the verify route answers from it */
    snap_answer_fn answer;           /* ... through this */
    /* out (writer) */
    char prev[16], kind[16];
    struct buf meta;                 /* the row after the update */
};

/* Does a mark going from prev to ok/corrupt need telling (log, metrics,
 * event, audit)? A snapshot becoming corrupt, or corrupt no more. */
static bool integ_noteworthy(const char *prev, bool ok)
{
    return ok ? !strcmp(prev, "corrupt") : strcmp(prev, "corrupt") != 0;
}

static int integ_apply(struct wtx *tx, struct wop *op)
{
    struct integ_op *io = container_of(op, struct integ_op, op);
    sqlite3_stmt *st = wtx_stmt(tx, "SELECT status, integrity, kind FROM snapshots WHERE id = ?");
    sqlite3_bind_text(st, 1, io->id, -1, SQLITE_STATIC);
    bool found = sqlite3_step(st) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), "completed");
    if (found) {
        snprintf(io->prev, sizeof io->prev, "%s", (const char *)sqlite3_column_text(st, 1));
        snprintf(io->kind, sizeof io->kind, "%s", (const char *)sqlite3_column_text(st, 2));
    }
    sqlite3_reset(st);
    /* deleted (or never completed) meanwhile: nothing to mark */
    if (!found) return wop_fail(op, 404, "not_found", "no completed snapshot %s in this space", io->id);
    const char *now = io->ok ? "ok" : "corrupt";
    st = wtx_stmt(tx, "UPDATE snapshots SET integrity = ?2, integrity_error = ?3, integrity_checked_at = ?4"
                      " WHERE id = ?1");
    sqlite3_bind_text(st, 1, io->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, now, -1, SQLITE_STATIC);
    if (!io->ok) sqlite3_bind_text(st, 3, io->why, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 3);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)wtx_now(tx));
    if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "recording the check failed");
    /* the operator's verify is audited whatever it found; other reads when
     * the mark changes to or from corrupt */
    if (io->src == INTEG_VERIFY || integ_noteworthy(io->prev, io->ok)) {
        struct buf m;
        buf_init(&m);
        buf_puts(&m, "{\"integrity\":");
        json_cstr(&m, now);
        json_kv_str(&m, "error", io->ok ? NULL : io->why);
        json_kv_str(&m, "previous", io->prev);
        json_kv_str(&m, "found_by", integ_src_name[io->src]);
        buf_putc(&m, '}');
        int rc = wtx_audit(tx, io->actor, io->src == INTEG_VERIFY ? "snapshot.verify" : "snapshot.integrity",
                           io->space, io->id, m.data, io->remote);
        buf_free(&m);
        if (rc < 0) return wop_fail(op, 500, "storage_error", "audit failed");
    }
    st = wtx_stmt(tx, "SELECT " SNAP_COLS " FROM snapshots WHERE id = ?");
    sqlite3_bind_text(st, 1, io->id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) snap_meta_json(&io->meta, st);
    sqlite3_reset(st);
    return 0;
}

/* loop: the mark changed to or from corrupt */
static void integ_changed(struct integ_op *io)
{
    struct server *srv = io->srv;
    char path[1200];
    snap_file(srv->cfg->data_dir, io->id, false, path, sizeof path);
    struct buf b;
    buf_init(&b);
    json_kv_str(&b, "space", io->space);
    json_kv_str(&b, "snapshot", io->id);
    json_kv_str(&b, "kind", io->kind);
    json_kv_str(&b, "found_by", integ_src_name[io->src]);
    if (!io->ok) json_kv_str(&b, "error", io->why);
    json_kv_str(&b, "file", path);   /* the server log only */
    log_raw(io->ok ? LOG_INFO : LOG_ERROR, io->ok ? "snapshot_integrity_ok" : "snapshot_corrupt", b.data, b.len);
    buf_reset(&b);
    if (!io->ok) metrics_snapshot_corrupt(srv->metrics, integ_src_name[io->src]);
    buf_puts(&b, "{\"space\":");
    json_cstr(&b, io->space);
    json_kv_str(&b, "snapshot", io->id);
    json_kv_str(&b, "kind", io->kind);
    json_kv_str(&b, "status", "completed");
    json_kv_str(&b, "integrity", io->ok ? "ok" : "corrupt");
    json_kv_str(&b, "integrity_error", io->ok ? NULL : io->why);
    json_kv_str(&b, "found_by", integ_src_name[io->src]);
    buf_putc(&b, '}');
    sse_publish(srv, SSE_SNAPSHOT, io->space, b.data, b.len);
    buf_free(&b);
}

static void integ_done(struct wop *op, struct http_req *r)
{
    struct integ_op *io = container_of(op, struct integ_op, op);
    if (!op->err.status && integ_noteworthy(io->prev, io->ok)) integ_changed(io);
    if (io->then) io->then(io, r);
    buf_free(&io->meta);
    free(io);
}

/* Records what a read of snapshot `id` found (loop thread). r: the request
 * to answer through then() (which answers through `answer`), or NULL.
 * Returns 0, or -1 when the write queue is full (nothing recorded; then()
 * is not called). */
static int integ_mark(struct server *srv, struct http_req *r, const char *space, const char *id, enum integ_src src,
                      bool ok, const char *why, const char *actor, const char *remote, integ_then_fn then,
                      snap_answer_fn answer)
{
    struct integ_op *io = xcalloc(1, sizeof *io);
    io->srv = srv;
    snprintf(io->id, sizeof io->id, "%s", id);
    snprintf(io->space, sizeof io->space, "%s", space);
    snprintf(io->actor, sizeof io->actor, "%s", actor);
    snprintf(io->remote, sizeof io->remote, "%s", remote ? remote : "");
    io->src = src;
    io->ok = ok;
    snprintf(io->why, sizeof io->why, "%s", ok ? "" : why);
    io->then = then;
    io->answer = answer;
    if (writer_submit(srv->writer, &io->op, r, integ_apply, integ_done) < 0) {
        log_warn("snapshot_integrity_not_recorded", "\"snapshot\":\"%s\",\"reason\":\"the write queue is full\"", id);
        free(io);
        return -1;
    }
    return 0;
}

int snap_integrity_mark(struct server *srv, const char *space, const char *id, enum integ_src src, bool ok,
                        const char *why, const char *actor, const char *remote)
{
    return integ_mark(srv, NULL, space, id, src, ok, why, actor, remote, NULL, NULL);
}

/* loop: the download was aborted, the file is not what the row says */
void snap_download_damaged(struct server *srv, void *arg, const char *why)
{
    struct snap_dl_check *d = arg;
    char path[1200];
    snap_file(srv->cfg->data_dir, d->id, false, path, sizeof path);
    metrics_snapshot_download_abort(srv->metrics);
    snap_log_file(LOG_ERROR, "snapshot_download_aborted", d->space, d->id, path, why);
    integ_mark(srv, NULL, d->space, d->id, INTEG_DOWNLOAD, false, why, d->actor, d->remote, NULL, NULL);
}

/* ---- POST /snapshots/{id}/verify (operator) -------------------------------
 * The whole file checked on the pool as `snapsync verify` checks it (gzip,
 * header, every line, counts) and against the row (sha256); the answer is
 * what it found, recorded as the snapshot's integrity (so a repaired file
 * is served again) and audited as snapshot.verify. */

struct vcheck_job {
    struct job job;
    snap_answer_fn answer;
    char space[64], id[27], actor[32], remote[56], sha256[65], path[1200];
    bool ok;                         /* out */
    char why[200];                   /* out */
};

static void vcheck_work(struct job *j)
{
    struct vcheck_job *v = container_of(j, struct vcheck_job, job);
    struct snap_summary sum;
    if (snap_verify_file(v->path, &sum, v->why, sizeof v->why) < 0) return;
    if (strcmp(sum.sha256, v->sha256) != 0) snprintf(v->why, sizeof v->why, "the file's sha256 does not match the snapshot's");
    else v->ok = true;
    free(sum.counts_json);
    free(sum.blobs_json);
}

static void vcheck_answer(struct integ_op *io, struct http_req *r)
{
    if (!r) return;
    if (io->op.err.status) {
        snap_answer_wop(io->answer, r, &io->op);
        return;
    }
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"valid\":");
    buf_puts(&b, io->ok ? "true" : "false");
    char msg[300];
    if (!io->ok) snap_corrupt_msg(msg, sizeof msg, io->why);
    json_kv_str(&b, "error", io->ok ? NULL : msg);
    buf_puts(&b, ",\"snapshot\":");
    buf_append(&b, io->meta.data, io->meta.len);
    buf_putc(&b, '}');
    struct snap_answer a = {.status = 200, .body = &b};
    io->answer(r, &a);
    buf_free(&b);
}

static void vcheck_done(struct job *j, struct http_req *r)
{
    struct vcheck_job *v = container_of(j, struct vcheck_job, job);
    if (j->status == 0) {
        if (!v->ok) snap_log_file(LOG_WARN, "snapshot_verify_failed", v->space, v->id, v->path, v->why);
        if (integ_mark(job_server(j), r, v->space, v->id, INTEG_VERIFY, v->ok, v->why, v->actor, v->remote,
                       vcheck_answer, v->answer) < 0)
            snap_answer_err(v->answer, r, 1, 503, "overloaded", NULL, "the write queue is full; retry shortly");
    }
    free(v);
}

void snap_verify_start(struct server *srv, struct http_req *r, const struct snap_verify_req *q, snap_answer_fn answer)
{
    struct vcheck_job *v = xcalloc(1, sizeof *v);
    v->answer = answer;
    snprintf(v->space, sizeof v->space, "%s", q->space);
    snprintf(v->id, sizeof v->id, "%s", q->id);
    snprintf(v->actor, sizeof v->actor, "%s", q->actor);
    snprintf(v->remote, sizeof v->remote, "%s", q->remote ? q->remote : "");
    snprintf(v->sha256, sizeof v->sha256, "%s", q->sha256);
    snap_file(srv->cfg->data_dir, q->id, false, v->path, sizeof v->path);
    job_submit(&srv->jobs, &v->job, r, vcheck_work, vcheck_done);
}

/* ---- background check (--snapshot-verify-every S) ------------------------
 * Each completed snapshot's file is checked in full (as by the verify
 * route) once every S seconds, one snapshot at a time, the one whose last
 * check (or completion, if never checked) is oldest first. Low priority on
 * the shared pool: the check runs in slices of about BG_SLICE_MS, each a
 * pool job, with a pause at least as long between slices, and a slice
 * waits while every pool thread has work (up to BG_WAIT_MAX times), so it
 * never takes more than half of one pool thread from requests. The
 * snapshot is marked as by any read (see "integrity"); the next pick waits
 * until that is recorded. Loop: bg_* callbacks; pool: the pick (a read
 * transaction) and the slices, which touch only struct bgcheck's check. */

#define BG_SLICE_MS 50
#define BG_PAUSE_MIN_MS 20
#define BG_BUSY_WAIT_MS 100
#define BG_WAIT_MAX 50

static struct bgcheck {
    struct server *srv;
    uv_timer_t timer;
    bool on, busy;                   /* busy: a pool job is out */
    struct job job;
    uint64_t period_ms;
    /* the snapshot being checked */
    bool picked, checking;           /* checking: the file is open in chk */
    char id[27], space[64], sha256[65], path[1200];
    struct snap_check chk;
    struct snap_summary sum;
    int rc;                          /* of the last slice: 1 more, 0 valid, -1 not */
    char why[200];
    uint64_t slice_ms, waited;
    uint64_t next_due_ms;            /* from the pick when nothing is due (0: no snapshot) */
} bg;

static void bg_tick(uv_timer_t *t);

static void bg_arm(uint64_t ms)
{
    if (bg.on && !bg.srv->shutting_down) uv_timer_start(&bg.timer, bg_tick, ms, 0);
}

/* pool: the snapshot to check next, or when the next one is due */
static void bg_pick_work(struct job *j)
{
    UNUSED(j);
    sqlite3 *db = store_reader_get(bg.srv->store);
    if (!db) return;
    uint64_t now = now_ms_wall();
    int64_t due_before = (int64_t)(now - (now > bg.period_ms ? bg.period_ms : now));
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, space, sha256 FROM snapshots WHERE status = 'completed'"
                           " AND coalesce(integrity_checked_at, completed_at) <= ?1"
                           " ORDER BY integrity_checked_at IS NOT NULL, integrity_checked_at, completed_at, id LIMIT 1",
                           -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, due_before);
        if (sqlite3_step(q) == SQLITE_ROW) {
            bg.picked = true;
            snprintf(bg.id, sizeof bg.id, "%s", (const char *)sqlite3_column_text(q, 0));
            snprintf(bg.space, sizeof bg.space, "%s", (const char *)sqlite3_column_text(q, 1));
            const unsigned char *sha = sqlite3_column_text(q, 2);
            snprintf(bg.sha256, sizeof bg.sha256, "%s", sha ? (const char *)sha : "");
        }
        sqlite3_finalize(q);
    }
    if (!bg.picked &&
        sqlite3_prepare_v2(db,
                           "SELECT min(coalesce(integrity_checked_at, completed_at)) FROM snapshots"
                           " WHERE status = 'completed'",
                           -1, &q, NULL) == SQLITE_OK) {
        if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL)
            bg.next_due_ms = (uint64_t)sqlite3_column_int64(q, 0) + bg.period_ms;
        sqlite3_finalize(q);
    }
    store_reader_put(bg.srv->store, db);
    if (bg.picked) {
        snap_file(bg.srv->cfg->data_dir, bg.id, false, bg.path, sizeof bg.path);
        bg.rc = snap_check_open(&bg.chk, bg.path, &bg.sum, bg.why, sizeof bg.why) < 0 ? -1 : 1;
        bg.checking = bg.rc == 1;
    }
}

/* pool: the check goes on for one slice */
static void bg_slice_work(struct job *j)
{
    UNUSED(j);
    assert(bg.checking);             /* the pick opened the file */
    uint64_t t0 = now_ns_mono();
    bg.rc = snap_check_step(&bg.chk, BG_SLICE_MS * 1000000ull, &bg.sum, bg.why, sizeof bg.why);
    if (bg.rc == 0 && strcmp(bg.sum.sha256, bg.sha256) != 0) {
        bg.rc = -1;
        snprintf(bg.why, sizeof bg.why, "the file's sha256 does not match the snapshot's");
    }
    if (bg.rc != 1) {
        free(bg.sum.counts_json);
        free(bg.sum.blobs_json);
        bg.sum.counts_json = bg.sum.blobs_json = NULL;
        snap_check_close(&bg.chk);
        bg.checking = false;
    }
    bg.slice_ms = (now_ns_mono() - t0) / 1000000;
}

static void bg_stop_check(void)
{
    if (bg.checking) snap_check_close(&bg.chk);
    bg.checking = bg.picked = false;
}

/* loop: the mark is recorded; on to the next one */
static void bg_marked(struct integ_op *io, struct http_req *r)
{
    UNUSED(io);
    UNUSED(r);
    bg_arm(0);
}

/* loop: a check is over (rc 0 or -1) */
static void bg_finish(void)
{
    bool ok = bg.rc == 0;
    metrics_snapshot_check(bg.srv->metrics, ok);
    if (ok) log_info("snapshot_checked", "\"space\":\"%s\",\"snapshot\":\"%s\",\"integrity\":\"ok\"", bg.space, bg.id);
    else snap_log_file(LOG_WARN, "snapshot_check_failed", bg.space, bg.id, bg.path, bg.why);
    bg.picked = false;
    if (integ_mark(bg.srv, NULL, bg.space, bg.id, INTEG_BACKGROUND, ok, bg.why, "integrity-check", NULL, bg_marked,
                   NULL) < 0)
        bg_arm(1000);
}

static void bg_done(struct job *j, struct http_req *r)
{
    UNUSED(r);
    bg.busy = false;
    if (j->status != 0 || bg.srv->shutting_down) {
        bg_stop_check();
        return;
    }
    if (!bg.picked) {                /* nothing due: sleep until something is */
        uint64_t now = now_ms_wall(), wait = bg.period_ms;
        if (bg.next_due_ms) wait = bg.next_due_ms > now ? bg.next_due_ms - now : 0;
        if (wait < 1000) wait = 1000;
        if (wait > bg.period_ms) wait = bg.period_ms;
        bg_arm(wait);
        return;
    }
    if (bg.rc == 1) {                /* more to read: after a pause */
        bg_arm(bg.slice_ms > BG_PAUSE_MIN_MS ? bg.slice_ms : BG_PAUSE_MIN_MS);
        return;
    }
    bg_finish();
}

static void bg_tick(uv_timer_t *t)
{
    UNUSED(t);
    struct server *srv = bg.srv;
    if (bg.busy || srv->shutting_down) return;
    if (bg.checking && srv->jobs.inflight >= srv->cfg->workers && bg.waited < BG_WAIT_MAX) {
        bg.waited++;                 /* every pool thread has work: requests first */
        bg_arm(BG_BUSY_WAIT_MS);
        return;
    }
    bg.waited = 0;
    bg.busy = true;
    if (bg.checking) {
        job_submit(&srv->jobs, &bg.job, NULL, bg_slice_work, bg_done);
    } else {
        bg.picked = false;
        bg.next_due_ms = 0;
        job_submit(&srv->jobs, &bg.job, NULL, bg_pick_work, bg_done);
    }
}

void snap_bgcheck_init(struct server *srv)
{
    memset(&bg, 0, sizeof bg);
    bg.srv = srv;
    bg.period_ms = srv->cfg->snapshot_verify_every * 1000;
    if (!bg.period_ms) return;
    uv_timer_init(srv->loop, &bg.timer);
    uv_unref((uv_handle_t *)&bg.timer);  /* never keeps the loop alive */
    bg.on = true;
    bg_arm(1000);                    /* the first pick, once start-up is over */
}

void snap_bgcheck_free(void)
{
    if (!bg.on) return;
    bg_stop_check();
    uv_close((uv_handle_t *)&bg.timer, NULL);
    bg.on = false;
}

