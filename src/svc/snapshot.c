/* snapshot.c - see snapshot.h.
 *
 * Life of a snapshot (create):
 *   loop     snap_start (api/snapshots.c checked: space not busy (409), rate
 *            limit (429), marked busy): queue a writer op that inserts the
 *            row (running)
 *   writer   snap_insert_apply: row + audit in one transaction
 *   pool     snap_work: read transaction, counts, rows -> the format's
 *            writer -> tmp file, sha256 as written, fsync, rename, fsync dir
 *   loop     snap_after: queue the op that marks the row completed/failed
 *   writer   snap_finish_apply
 *   loop     snap_finished: clear busy, last_snapshot, SSE, report, retention
 * An unrecorded snapshot (a restore's pre_restore, taken beside the
 * restore's check of its file) skips the insert: the job writes the file,
 * snap_after reports SNAP_WRITTEN, and the owner either records it
 * (snap_record_apply: row, audit and completion in one transaction) or
 * throws the file away (snap_discard).
 * Restore (restore.c) and import (import.c) build on the rows, the
 * integrity marks and snap_start kept here.
 *
 * Integrity (see "integrity" below): every read of a file checks it -- a
 * download as it streams (size, gzip, sha256; one that fails is cut off,
 * filestream.h), a preview or restore by its merge and full check, the
 * verify route and the background check (--snapshot-verify-every) in full
 * -- and what it finds is recorded on the row (writer op): 'corrupt'
 * snapshots are refused with 422 until a full check passes again.
 */
#include "svc/snapshot.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/counters.h"
#include "core/entity.h"
#include "core/json.h"
#include "core/log.h"
#include "net/server.h"
#include "store/spaces.h"
#include "store/store.h"
#include "store/writer.h"
#include "svc/sse.h"

/* ---- the engine (threadpool) ------------------------------------------- */

struct snap_job {
    struct job job;
    struct server *srv;
    /* in */
    char id[27], space[64], kind[16], created_by[32], remote[56];
    char *note;
    int64_t space_id;                /* set by the insert (writer), before the job is submitted */
    int level, threads;
    uint64_t started_ms;
    char data_dir[1024];
    bool keep_request, owns_busy;
    bool unrecorded;                 /* no row until snap_record (events as for any snapshot) */
    snap_report_fn report;
    void *report_arg;
    /* progress, written by the worker */
    _Atomic uint64_t done, total, bytes;
    uv_async_t progress;
    int last_decile;
    /* out (worker) */
    int err;
    char msg[200];
    uint64_t server_version, entity_total, raw_bytes, size_bytes;
    char sha256[65];
    struct buf counts;               /* {"issues":3,...} */
    struct blob_set blobs;           /* blobs the entities reference */
    struct buf blobs_json;
};

/* Test hook: SNAPSYNC_TEST_SNAPSHOT_FAIL_AFTER=N makes every snapshot file
 * write fail with ENOSPC once N bytes are written (disk-full simulation). */
static uint64_t fail_after(void)
{
    const char *v = getenv("SNAPSYNC_TEST_SNAPSHOT_FAIL_AFTER");
    uint64_t n;
    if (!v || parse_u64(v, strlen(v), UINT64_MAX, &n) < 0) return 0;
    return n;
}

static void fail_job(struct snap_job *sj, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void fail_job(struct snap_job *sj, const char *fmt, ...)
{
    va_list ap;
    sj->err = -1;
    va_start(ap, fmt);
    vsnprintf(sj->msg, sizeof sj->msg, fmt, ap);
    va_end(ap);
}

/* the version and the counts, in the read transaction of the rows; the
 * space's uid into uid. 0, or -1 with the job failed */
static int snap_read_counts(struct snap_job *sj, sqlite3 *db, char uid[27])
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "SELECT version, uid FROM spaces WHERE id = ?", -1, &q, NULL) != SQLITE_OK) {
        fail_job(sj, "reading the space failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_int64(q, 1, sj->space_id);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_finalize(q);
        fail_job(sj, "the space is gone");
        return -1;
    }
    sj->server_version = (uint64_t)sqlite3_column_int64(q, 0);
    snprintf(uid, 27, "%s", (const char *)sqlite3_column_text(q, 1));
    sqlite3_finalize(q);
    if (sqlite3_prepare_v2(db,
                           "SELECT collection, count(*) FROM entities WHERE space_id = ? AND deleted = 0"
                           " GROUP BY collection ORDER BY collection",
                           -1, &q, NULL) != SQLITE_OK) {
        fail_job(sj, "reading the space failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_int64(q, 1, sj->space_id);
    buf_putc(&sj->counts, '{');
    while (sqlite3_step(q) == SQLITE_ROW) {
        json_key(&sj->counts, (const char *)sqlite3_column_text(q, 0));   /* collection names are [a-z0-9_] */
        uint64_t c = (uint64_t)sqlite3_column_int64(q, 1);
        buf_put_u64(&sj->counts, c);
        sj->entity_total += c;
    }
    buf_putc(&sj->counts, '}');
    sqlite3_finalize(q);
    atomic_store(&sj->total, sj->entity_total);
    return 0;
}

/* The conflict records of the space in entity key order, walked beside the
 * rows (a merge, not a query per row; most spaces have none). */
struct conf_walk {
    sqlite3_stmt *q;
    int rc;                          /* of the last step */
    struct buf out;
};

static int conf_open(struct conf_walk *cw, sqlite3 *db, int64_t space_id)
{
    memset(cw, 0, sizeof *cw);
    buf_init(&cw->out);
    if (sqlite3_prepare_v2(db,
                           "SELECT collection, entity_id, conflicting_rev, deleted, conflicting_body FROM conflicts"
                           " WHERE space_id = ? ORDER BY collection, entity_id, id",
                           -1, &cw->q, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(cw->q, 1, space_id);
    cw->rc = sqlite3_step(cw->q);
    return cw->rc == SQLITE_ROW || cw->rc == SQLITE_DONE ? 0 : -1;
}

/* The records of (c, i) as JSON text (NULL for none); skips records of
 * keys before it (entities that are not live). -1 on an SQL error. */
static int conf_for(struct conf_walk *cw, const char *c, const char *i, const char **txt, size_t *len)
{
    *txt = NULL;
    buf_reset(&cw->out);
    int n = 0;
    while (cw->rc == SQLITE_ROW) {
        int k = snap_key_cmp((const char *)sqlite3_column_text(cw->q, 0), (const char *)sqlite3_column_text(cw->q, 1),
                             c, i);
        if (k > 0) break;
        if (k == 0) {
            buf_puts(&cw->out, n++ ? "," : "[");
            buf_puts(&cw->out, "{\"rev\":");
            json_cstr(&cw->out, (const char *)sqlite3_column_text(cw->q, 2));
            json_kv_bool(&cw->out, "deleted", sqlite3_column_int(cw->q, 3) != 0);
            buf_puts(&cw->out, ",\"body\":");
            if (sqlite3_column_type(cw->q, 4) == SQLITE_NULL) buf_puts(&cw->out, "null");
            else buf_append(&cw->out, sqlite3_column_text(cw->q, 4), (size_t)sqlite3_column_bytes(cw->q, 4));
            buf_putc(&cw->out, '}');
        }
        cw->rc = sqlite3_step(cw->q);
    }
    if (cw->rc != SQLITE_ROW && cw->rc != SQLITE_DONE) return -1;
    if (n) {
        buf_putc(&cw->out, ']');
        *txt = cw->out.data;
        *len = cw->out.len;
    }
    return 0;
}

static void conf_close(struct conf_walk *cw)
{
    sqlite3_finalize(cw->q);
    buf_free(&cw->out);
}

/* every live row, in key order, through the writer. 0, or -1 with the job
 * failed */
static int snap_write_rows(struct snap_job *sj, sqlite3 *db, struct snap_writer *w)
{
    sqlite3_stmt *q;
    struct conf_walk cw;
    if (conf_open(&cw, db, sj->space_id) < 0 ||
        sqlite3_prepare_v2(db,
                           "SELECT collection, id, rev, version, created_at, updated_at, body, revs FROM entities"
                           " WHERE space_id = ? AND deleted = 0 ORDER BY collection, id",
                           -1, &q, NULL) != SQLITE_OK) {
        fail_job(sj, "reading the space failed: %s", sqlite3_errmsg(db));
        conf_close(&cw);
        return -1;
    }
    sqlite3_bind_int64(q, 1, sj->space_id);
    uint64_t n = 0;
    int rc;
    struct buf revs;
    buf_init(&revs);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct snap_entity e = {
            .collection = (const char *)sqlite3_column_text(q, 0),
            .id = (const char *)sqlite3_column_text(q, 1),
            .rev = (const char *)sqlite3_column_text(q, 2),
            .version = (uint64_t)sqlite3_column_int64(q, 3),
            .created_at = (uint64_t)sqlite3_column_int64(q, 4),
            .updated_at = (uint64_t)sqlite3_column_int64(q, 5),
            .body = (const char *)sqlite3_column_text(q, 6),
            .body_len = (size_t)sqlite3_column_bytes(q, 6),
        };
        buf_reset(&revs);
        rev_history_json(&revs, e.rev, (const char *)sqlite3_column_text(q, 7));
        e.revs = revs.data;
        e.revs_len = revs.len;
        if (conf_for(&cw, e.collection, e.id, &e.conflicts, &e.conflicts_len) < 0) {
            fail_job(sj, "reading the space's conflicts failed: %s", sqlite3_errmsg(db));
            break;
        }
        blob_set_add_text(&sj->blobs, e.body, e.body_len);
        if (snap_writer_entity(w, &e, sj->msg, sizeof sj->msg) < 0) {
            sj->err = -1;
            break;
        }
        if (++n % 512 == 0) {
            atomic_store(&sj->done, n);
            atomic_store(&sj->bytes, snap_writer_bytes(w));
            uv_async_send(&sj->progress);
            if (job_pool_stopping(&sj->srv->jobs)) { fail_job(sj, "interrupted by shutdown"); break; }
        }
    }
    if (!sj->err && rc != SQLITE_DONE) fail_job(sj, "reading the space failed: %s", sqlite3_errmsg(db));
    sqlite3_finalize(q);
    conf_close(&cw);
    buf_free(&revs);
    atomic_store(&sj->done, n);
    return sj->err ? -1 : 0;
}

/* the file: header, rows, end, then (only if the rows were all there)
 * committed under its final name */
static void snap_write_file(struct snap_job *sj, sqlite3 *db, const char *uid)
{
    char tmp[1200], path[1200], dir[1100];
    snap_file(sj->data_dir, sj->id, true, tmp, sizeof tmp);
    snap_file(sj->data_dir, sj->id, false, path, sizeof path);
    snprintf(dir, sizeof dir, "%s/snapshots", sj->data_dir);
    mkdir(dir, 0700);
    struct snap_writer w;
    if (snap_writer_open(&w, tmp, sj->level, sj->threads, fail_after(), sj->msg, sizeof sj->msg) < 0) {
        sj->err = -1;
        snap_writer_close(&w, tmp, true);
        return;
    }
    struct snap_header h = {.server_version = sj->server_version, .created_at_ms = now_ms_wall(),
                            .entity_total = sj->entity_total, .counts_json = sj->counts.data,
                            .counts_len = sj->counts.len};
    snprintf(h.space, sizeof h.space, "%s", sj->space);
    snprintf(h.space_uid, sizeof h.space_uid, "%s", uid);
    snprintf(h.instance_id, sizeof h.instance_id, "%s", store_instance_id(sj->srv->store));
    snprintf(h.snapshot, sizeof h.snapshot, "%s", sj->id);
    snap_writer_header(&w, &h);
    struct snap_written out;
    if (snap_write_rows(sj, db, &w) == 0 && snap_writer_end(&w, sj->msg, sizeof sj->msg) < 0) sj->err = -1;
    if (!sj->err && w.entities != sj->entity_total) fail_job(sj, "row count changed during the read");
    if (!sj->err) {
        blob_set_finish(&sj->blobs, &sj->blobs_json);
        if (snap_writer_commit(&w, tmp, path, &out, sj->msg, sizeof sj->msg) < 0) {
            sj->err = -1;
        } else {
            snprintf(sj->sha256, sizeof sj->sha256, "%s", out.sha256);
            sj->raw_bytes = out.raw_bytes;
            sj->size_bytes = out.size_bytes;
        }
    }
    atomic_store(&sj->bytes, snap_writer_bytes(&w));
    snap_writer_close(&w, tmp, sj->err != 0);
}

static void snap_work(struct job *j)
{
    struct snap_job *sj = container_of(j, struct snap_job, job);
    assert(sj->space_id > 0);        /* the insert's _done set it before submitting */
    sqlite3 *db = store_reader_get(sj->srv->store);
    if (!db) { fail_job(sj, "no database connection"); return; }
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    char uid[27];
    if (snap_read_counts(sj, db, uid) == 0) snap_write_file(sj, db, uid);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    store_reader_put(sj->srv->store, db);
}

/* ---- loop side: progress events, rows, completion ----------------------- */

/* error: the event's "error" (NULL: the file's, if it failed) */
static void publish_snapshot_err(struct snap_job *sj, const char *status, const char *error)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"space\":");
    json_cstr(&b, sj->space);
    json_kv_str(&b, "snapshot", sj->id);
    json_kv_str(&b, "kind", sj->kind);
    json_kv_str(&b, "status", status);
    json_kv_u64(&b, "entities_done", atomic_load(&sj->done));
    json_kv_u64(&b, "entities_total", atomic_load(&sj->total));
    json_kv_u64(&b, "bytes", atomic_load(&sj->bytes));
    if (error || sj->err) json_kv_str(&b, "error", error ? error : sj->msg);
    buf_putc(&b, '}');
    sse_publish(sj->srv, SSE_SNAPSHOT, sj->space, b.data, b.len);
    buf_free(&b);
}

static void publish_snapshot(struct snap_job *sj, const char *status) { publish_snapshot_err(sj, status, NULL); }

static void on_progress(uv_async_t *a)
{
    struct snap_job *sj = container_of(a, struct snap_job, progress);
    uint64_t total = atomic_load(&sj->total), done = atomic_load(&sj->done);
    int decile = total ? (int)(done * 10 / total) : 10;
    if (decile > sj->last_decile && decile < 10) {
        sj->last_decile = decile;
        publish_snapshot(sj, "running");
    }
}

static void snap_job_free(struct snap_job *sj)
{
    buf_free(&sj->counts);
    buf_free(&sj->blobs_json);
    free(sj->blobs.v);
    free(sj->note);
    free(sj);
}

static void progress_closed(uv_handle_t *h)
{
    snap_job_free(container_of((uv_async_t *)h, struct snap_job, progress));
}

static void snap_report(struct snap_job *sj, struct http_req *r, enum snap_stage stage, const struct err *e,
                        struct buf *meta)
{
    if (!sj->report) return;
    struct snap_report rep = {.stage = stage, .id = sj->id, .space = sj->space, .kind = sj->kind, .err = e,
                              .file_err = sj->err ? sj->msg : NULL, .meta = meta,
                              .job = stage == SNAP_WRITTEN ? sj : NULL};
    sj->report(sj->report_arg, r, &rep);
}

struct finish_op {
    struct wop op;
    struct snap_job *sj;
    struct buf meta;                 /* out: the row as JSON */
};

static int snap_finish_apply(struct wtx *tx, struct wop *op)
{
    struct finish_op *f = container_of(op, struct finish_op, op);
    struct snap_job *sj = f->sj;
    sqlite3_stmt *st = wtx_stmt(tx,
                                "UPDATE snapshots SET status = ?2, server_version = ?3, completed_at = ?4,"
                                " entity_counts = ?5, entity_total = ?6, raw_bytes = ?7, size_bytes = ?8,"
                                " sha256 = ?9, error = ?10, blobs = ?11 WHERE id = ?1");
    sqlite3_bind_text(st, 1, sj->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sj->err ? "failed" : "completed", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)sj->server_version);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)wtx_now(tx));
    sqlite3_bind_text(st, 5, sj->counts.len ? sj->counts.data : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)sj->entity_total);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)sj->raw_bytes);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)sj->size_bytes);
    if (!sj->err) sqlite3_bind_text(st, 9, sj->sha256, -1, SQLITE_STATIC);
    if (sj->err) sqlite3_bind_text(st, 10, sj->msg, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, sj->blobs_json.len ? sj->blobs_json.data : "[]", -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "updating the snapshot failed");
    st = wtx_stmt(tx, "SELECT " SNAP_COLS " FROM snapshots WHERE id = ?");
    sqlite3_bind_text(st, 1, sj->id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) snap_meta_json(&f->meta, st);
    sqlite3_reset(st);
    return 0;
}

static void retention(struct server *srv, const char *space, int64_t space_id, const char *kind);

static snap_done_hook done_hook;
void snap_set_done_hook(snap_done_hook fn) { done_hook = fn; }

static void snap_finished(struct wop *op, struct http_req *r)
{
    struct finish_op *f = container_of(op, struct finish_op, op);
    struct snap_job *sj = f->sj;
    struct server *srv = sj->srv;
    bool ok = !sj->err && !op->err.status;
    publish_snapshot(sj, ok ? "completed" : "failed");
    metrics_snapshot(srv->metrics, sj->kind, ok, (double)(now_ms_wall() - sj->started_ms) / 1000.0, sj->size_bytes);
    if (ok) {
        struct space *sp = spaces_get(srv->spaces, sj->space);
        if (sp) {
            snprintf(sp->last_snapshot, sizeof sp->last_snapshot, "%s", sj->id);
            sp->last_snapshot_version = sj->server_version;
        }
        log_info("snapshot_done", "\"space\":\"%s\",\"snapshot\":\"%s\",\"kind\":\"%s\",\"entities\":%llu,\"bytes\":%llu",
                 sj->space, sj->id, sj->kind, (unsigned long long)sj->entity_total,
                 (unsigned long long)sj->size_bytes);
        if (done_hook) done_hook(srv, sj->space, sj->id, sj->kind);
    } else {
        log_error("snapshot_failed", "\"space\":\"%s\",\"snapshot\":\"%s\",\"kind\":\"%s\",\"error\":\"%s\"", sj->space,
                  sj->id, sj->kind, sj->err ? sj->msg : op->err.msg);
        if (sj->unrecorded && !sj->err) snap_remove_file(srv, sj->id);   /* written, but no row holds it */
    }
    struct err e;
    err_clear(&e);
    if (op->err.status) {
        err_copy(&e, &op->err);
    } else if (sj->err) {
        err_set(&e, 500, "snapshot_failed", "%s", sj->msg);
    }
    /* a restore goes on (or fails) holding busy */
    snap_report(sj, r, SNAP_DONE, err_failed(&e) ? &e : NULL, &f->meta);
    /* after a failure too: a schedule that keeps failing (disk full, say)
     * must not pile up failed rows without end */
    if (!strcmp(sj->kind, "scheduled") || !strcmp(sj->kind, "pre_restore"))
        retention(srv, sj->space, sj->space_id, sj->kind);
    buf_free(&f->meta);
    free(f);
    uv_close((uv_handle_t *)&sj->progress, progress_closed);    /* frees sj */
}

static void snap_after(struct job *j, struct http_req *r)
{
    struct snap_job *sj = container_of(j, struct snap_job, job);
    if (j->status && !sj->err) fail_job(sj, "interrupted by shutdown");  /* never ran: no file */
    if (sj->unrecorded) {            /* its owner records or discards it */
        on_progress(&sj->progress);
        snap_report(sj, r, SNAP_WRITTEN, NULL, NULL);
        return;
    }
    struct finish_op *f = xcalloc(1, sizeof *f);
    f->sj = sj;
    on_progress(&sj->progress);
    /* the file is done; only its row's update is left, queued ahead of
     * anything a new request could queue: the space is free again (a GET
     * that sees the row completed must not meet a 409) */
    if (!sj->owns_busy) snap_set_busy(sj->srv, sj->space, false);
    if (writer_submit(sj->srv->writer, &f->op, r, snap_finish_apply, snap_finished) < 0) {
        /* the queue is full: try the bookkeeping again without a client */
        f->op.err.status = 503;
        snprintf(f->op.err.code, sizeof f->op.err.code, "overloaded");
        snprintf(f->op.err.msg, sizeof f->op.err.msg, "the write queue is full");
        snap_finished(&f->op, r);
    }
}

struct insert_op {
    struct wop op;
    struct snap_job *sj;
    int64_t space_id;                /* out */
    struct buf meta;                 /* out */
};

/* the row (running) and its audit; the space's id into *space_id */
static int snap_row_insert(struct wtx *tx, struct wop *op, struct snap_job *sj, int64_t *space_id)
{
    struct space_stats *sp = wtx_space(tx, sj->space);
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", sj->space);
    sqlite3_stmt *st = wtx_stmt(tx,
                                "INSERT INTO snapshots(id, space_id, space, kind, status, server_version, created_at,"
                                " level, created_by, note) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)");
    sqlite3_bind_text(st, 1, sj->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sp->id);
    sqlite3_bind_text(st, 3, sj->space, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, sj->kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)sp->version);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)wtx_now(tx));
    sqlite3_bind_int(st, 7, sj->level);
    sqlite3_bind_text(st, 8, sj->created_by, -1, SQLITE_STATIC);
    if (sj->note) sqlite3_bind_text(st, 9, sj->note, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "recording the snapshot failed");
    *space_id = sp->id;
    char meta[48];
    snprintf(meta, sizeof meta, "{\"kind\":\"%s\"}", sj->kind);
    if (wtx_audit(tx, sj->created_by, "snapshot.create", sj->space, sj->id, meta, sj->remote) < 0)
        return wop_fail(op, 500, "storage_error", "audit failed");
    return 0;
}

static int snap_insert_apply(struct wtx *tx, struct wop *op)
{
    struct insert_op *ins = container_of(op, struct insert_op, op);
    struct snap_job *sj = ins->sj;
    if (snap_row_insert(tx, op, sj, &ins->space_id) < 0) return -1;
    sqlite3_stmt *st = wtx_stmt(tx, "SELECT " SNAP_COLS " FROM snapshots WHERE id = ?");
    sqlite3_bind_text(st, 1, sj->id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) snap_meta_json(&ins->meta, st);
    sqlite3_reset(st);
    return 0;
}

static void snap_inserted(struct wop *op, struct http_req *r)
{
    struct insert_op *ins = container_of(op, struct insert_op, op);
    struct snap_job *sj = ins->sj;
    struct server *srv = sj->srv;
    if (op->err.status) {
        if (!sj->owns_busy) snap_set_busy(srv, sj->space, false);
        struct err e;
        err_copy(&e, &op->err);
        snap_report(sj, r, SNAP_STARTED, &e, NULL);
        buf_free(&ins->meta);
        free(ins);
        snap_job_free(sj);
        return;
    }
    sj->space_id = ins->space_id;
    publish_snapshot(sj, "running");
    snap_report(sj, r, SNAP_STARTED, NULL, &ins->meta);
    buf_free(&ins->meta);
    free(ins);
    uv_async_init(srv->loop, &sj->progress, on_progress);
    job_submit(&srv->jobs, &sj->job, sj->keep_request ? r : NULL, snap_work, snap_after);
}

int snap_start(struct server *srv, struct http_req *r, const struct snap_start_req *q)
{
    struct snap_job *sj = xcalloc(1, sizeof *sj);
    sj->srv = srv;
    ulid_make(sj->id, now_ms_wall());
    snprintf(sj->space, sizeof sj->space, "%s", q->space);
    snprintf(sj->kind, sizeof sj->kind, "%s", q->kind);
    snprintf(sj->created_by, sizeof sj->created_by, "%s", q->actor);
    snprintf(sj->remote, sizeof sj->remote, "%s", q->remote ? q->remote : "");
    snprintf(sj->data_dir, sizeof sj->data_dir, "%s", srv->cfg->data_dir);
    sj->note = q->note ? xstrdup(q->note) : NULL;
    sj->started_ms = now_ms_wall();
    /* a restore's own snapshot is taken while somebody waits for the
     * restore: its level is chosen apart (docs/api.md, restore) */
    sj->level = (int)(!strcmp(q->kind, "pre_restore") ? srv->cfg->pre_restore_level : srv->cfg->snapshot_level);
    sj->threads = (int)srv->cfg->snapshot_threads;
    sj->keep_request = q->keep_request;
    sj->owns_busy = q->owns_busy;
    sj->report = q->report;
    sj->report_arg = q->arg;
    sj->last_decile = 0;
    if (q->unrecorded) {             /* straight to the pool: the row comes with snap_record */
        assert(q->space_id > 0 && q->owns_busy && q->report);
        sj->unrecorded = true;
        sj->space_id = q->space_id;
        publish_snapshot(sj, "running");
        uv_async_init(srv->loop, &sj->progress, on_progress);
        job_submit(&srv->jobs, &sj->job, sj->keep_request ? r : NULL, snap_work, snap_after);
        return 0;
    }
    struct insert_op *ins = xcalloc(1, sizeof *ins);
    ins->sj = sj;
    if (writer_submit(srv->writer, &ins->op, r, snap_insert_apply, snap_inserted) < 0) {
        free(ins);
        snap_job_free(sj);
        return -1;
    }
    return 0;
}
/* an unrecorded snapshot's row, completed in the same transaction */
static int snap_record_apply(struct wtx *tx, struct wop *op)
{
    struct finish_op *f = container_of(op, struct finish_op, op);
    int64_t space_id;
    if (snap_row_insert(tx, op, f->sj, &space_id) < 0) return -1;
    if (space_id != f->sj->space_id)
        return wop_fail(op, 409, "space_replaced", "the space was dropped and made again during the snapshot");
    return snap_finish_apply(tx, op);
}

void snap_record(struct snap_job *sj, struct http_req *r)
{
    assert(sj->unrecorded && !sj->err);
    struct finish_op *f = xcalloc(1, sizeof *f);
    f->sj = sj;
    if (writer_submit(sj->srv->writer, &f->op, r, snap_record_apply, snap_finished) < 0) {
        f->op.err.status = 503;
        snprintf(f->op.err.code, sizeof f->op.err.code, "overloaded");
        snprintf(f->op.err.msg, sizeof f->op.err.msg, "the write queue is full");
        snap_finished(&f->op, r);
    }
}

void snap_discard(struct snap_job *sj)
{
    assert(sj->unrecorded);
    if (sj->err) {                   /* the file failed: as any failed snapshot, minus the row */
        log_error("snapshot_failed", "\"space\":\"%s\",\"snapshot\":\"%s\",\"kind\":\"%s\",\"error\":\"%s\"",
                  sj->space, sj->id, sj->kind, sj->msg);
        metrics_snapshot(sj->srv->metrics, sj->kind, false, (double)(now_ms_wall() - sj->started_ms) / 1000.0, 0);
        publish_snapshot(sj, "failed");
    } else {
        snap_remove_file(sj->srv, sj->id);
        publish_snapshot_err(sj, "failed", "not kept: the restore it was taken for did not go ahead");
    }
    uv_close((uv_handle_t *)&sj->progress, progress_closed);     /* frees sj */
}

/* ---- delete ---------------------------------------------------------------- */

struct delete_op {
    struct wop op;
    struct server *srv;
    snap_answer_fn answer;
    char id[27], space[64], actor[32], remote[56];
    int64_t space_id;
    char next_last[27];              /* out: the newest completed snapshot left */
    uint64_t next_last_version;
};

static int delete_apply(struct wtx *tx, struct wop *op)
{
    struct delete_op *d = container_of(op, struct delete_op, op);
    sqlite3_stmt *st = wtx_stmt(tx, "SELECT status FROM snapshots WHERE id = ? AND space_id = ?");
    sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, d->space_id);
    if (sqlite3_step(st) != SQLITE_ROW) return wop_fail(op, 404, "not_found", "no snapshot %s in this space", d->id);
    bool running = !strcmp((const char *)sqlite3_column_text(st, 0), "running") ||
                   !strcmp((const char *)sqlite3_column_text(st, 0), "pending");
    sqlite3_reset(st);
    if (running) return wop_fail(op, 409, "snapshot_in_progress", "the snapshot is still being written");
    st = wtx_stmt(tx, "DELETE FROM snapshots WHERE id = ?");
    sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "deleting the snapshot failed");
    if (wtx_audit(tx, d->actor, "snapshot.delete", d->space, d->id, NULL, d->remote) < 0)
        return wop_fail(op, 500, "storage_error", "audit failed");
    st = wtx_stmt(tx, "SELECT id, server_version FROM snapshots WHERE space_id = ? AND status = 'completed'"
                      " ORDER BY id DESC LIMIT 1");
    sqlite3_bind_int64(st, 1, d->space_id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(d->next_last, sizeof d->next_last, "%s", (const char *)sqlite3_column_text(st, 0));
        d->next_last_version = (uint64_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    /* the row is gone in this transaction; the file goes after commit (a
     * file without a row is removed at the next start if this one fails) */
    return 0;
}

static void delete_done(struct wop *op, struct http_req *r)
{
    struct delete_op *d = container_of(op, struct delete_op, op);
    /* as before the split: the file goes when the client is still there to
     * be told (otherwise the start-up sweep removes it) */
    if (!op->err.status && r) {
        snap_remove_file(d->srv, d->id);
        struct space *sp = spaces_get(d->srv->spaces, d->space);
        if (sp && !strcmp(sp->last_snapshot, d->id)) {
            /* the newest one left, read in the delete's transaction */
            snprintf(sp->last_snapshot, sizeof sp->last_snapshot, "%s", d->next_last);
            sp->last_snapshot_version = d->next_last_version;
        }
    }
    if (op->err.status) {
        snap_answer_wop(d->answer, r, op);
    } else if (r) {
        struct snap_answer a = {.status = 204};
        d->answer(r, &a);
    }
    free(d);
}

void snap_delete(struct server *srv, struct http_req *r, const struct snap_delete_req *q, snap_answer_fn answer)
{
    struct delete_op *d = xcalloc(1, sizeof *d);
    d->srv = srv;
    d->answer = answer;
    snprintf(d->id, sizeof d->id, "%s", q->id);
    snprintf(d->space, sizeof d->space, "%s", q->space);
    snprintf(d->actor, sizeof d->actor, "%s", q->actor);
    snprintf(d->remote, sizeof d->remote, "%s", q->remote ? q->remote : "");
    d->space_id = q->space_id;
    if (writer_submit(srv->writer, &d->op, r, delete_apply, delete_done) < 0) {
        snap_answer_err(answer, r, 1, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        free(d);
    }
}

/* -- retention: keep the newest N completed snapshots of a kind, and the
 * newest N failed ones (so the last errors stay visible) -- */

struct retention_job {
    struct job job;
    int64_t space_id;
    char kind[16], space[64];
    uint64_t keep;
    char (*ids)[27];
    size_t n;
};

static void retention_work(struct job *j)
{
    struct retention_job *rj = container_of(j, struct retention_job, job);
    sqlite3 *db = store_reader_get(job_server(j)->store);
    if (!db) return;
    sqlite3_stmt *q;
    size_t cap = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (sqlite3_prepare_v2(db,
                               "SELECT id FROM snapshots WHERE space_id = ? AND kind = ? AND status = ?"
                               " ORDER BY id DESC LIMIT -1 OFFSET ?",
                               -1, &q, NULL) != SQLITE_OK)
            break;
        sqlite3_bind_int64(q, 1, rj->space_id);
        sqlite3_bind_text(q, 2, rj->kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 3, pass ? "failed" : "completed", -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 4, (sqlite3_int64)rj->keep);
        while (sqlite3_step(q) == SQLITE_ROW) {
            if (rj->n == cap) {
                cap = cap ? cap * 2 : 8;
                rj->ids = xrealloc(rj->ids, cap * sizeof *rj->ids);
            }
            snprintf(rj->ids[rj->n++], 27, "%s", (const char *)sqlite3_column_text(q, 0));
        }
        sqlite3_finalize(q);
    }
    store_reader_put(job_server(j)->store, db);
}

struct retire_op {
    struct wop op;
    struct server *srv;
    char id[27], space[64];
    int64_t space_id;
};

static int retire_apply(struct wtx *tx, struct wop *op)
{
    struct retire_op *d = container_of(op, struct retire_op, op);
    sqlite3_stmt *st = wtx_stmt(tx, "DELETE FROM snapshots WHERE id = ? AND status IN ('completed', 'failed')");
    sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "retention delete failed");
    if (sqlite3_changes(wtx_db(tx)) == 0) return wop_fail(op, 404, "not_found", "already gone");
    return wtx_audit(tx, "retention", "snapshot.delete", d->space, d->id, "{\"reason\":\"retention\"}", NULL) < 0 ? -1 : 0;
}

static void retire_done(struct wop *op, struct http_req *r)
{
    struct retire_op *d = container_of(op, struct retire_op, op);
    UNUSED(r);
    if (!op->err.status) snap_remove_file(d->srv, d->id);
    free(d);
}

static void retention_done(struct job *j, struct http_req *r)
{
    struct retention_job *rj = container_of(j, struct retention_job, job);
    UNUSED(r);
    for (size_t i = 0; i < rj->n; i++) {
        struct retire_op *d = xcalloc(1, sizeof *d);
        d->srv = job_server(j);
        snprintf(d->id, sizeof d->id, "%s", rj->ids[i]);
        snprintf(d->space, sizeof d->space, "%s", rj->space);
        if (writer_submit(job_server(j)->writer, &d->op, NULL, retire_apply, retire_done) < 0) free(d);
    }
    free(rj->ids);
    free(rj);
}

static void retention(struct server *srv, const char *space, int64_t space_id, const char *kind)
{
    struct retention_job *rj = xcalloc(1, sizeof *rj);
    rj->space_id = space_id;
    snprintf(rj->kind, sizeof rj->kind, "%s", kind);
    snprintf(rj->space, sizeof rj->space, "%s", space);
    rj->keep = !strcmp(kind, "scheduled") ? srv->cfg->snapshot_keep_scheduled : srv->cfg->snapshot_keep_pre_restore;
    job_submit(&srv->jobs, &rj->job, NULL, retention_work, retention_done);
}

/* ---- schedule ------------------------------------------------------------ */

static uv_timer_t sched_timer;
static bool sched_on;

static void on_schedule(uv_timer_t *t)
{
    struct server *srv = t->data;
    if (srv->shutting_down) return;
    size_t n;
    struct space **v = spaces_sorted(srv->spaces, &n);
    for (size_t i = 0; i < n; i++) {
        struct space *sp = v[i];
        if (sp->busy) continue;
        /* nothing changed since the last snapshot: skip */
        if (sp->st.version == 0 || (sp->last_snapshot[0] && sp->st.version <= sp->last_snapshot_version)) continue;
        sp->busy = true;
        struct snap_start_req q = {.space = sp->st.name, .kind = "scheduled", .actor = "scheduler"};
        if (snap_start(srv, NULL, &q) < 0) sp->busy = false;
    }
}

/* ---- start-up ------------------------------------------------------------ */

int snap_recover(const char *data_dir, void *dbp, char *err, size_t errlen)
{
    sqlite3 *db = dbp;
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/snapshots", data_dir);
    mkdir(dir, 0700);
    char *msg = NULL;
    if (sqlite3_exec(db,
                     "UPDATE snapshots SET status = 'failed', error = 'interrupted: the server stopped while it ran',"
                     " completed_at = CAST(strftime('%s','now') AS INTEGER) * 1000"
                     " WHERE status IN ('pending', 'running')",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "marking interrupted snapshots failed: %s", msg ? msg : "?");
        sqlite3_free(msg);
        return -1;
    }
    int interrupted = sqlite3_changes(db);
    /* temp files, and files whose row is not a completed snapshot */
    DIR *d = opendir(dir);
    int removed = 0;
    if (d) {
        struct dirent *de;
        sqlite3_stmt *q = NULL;
        sqlite3_prepare_v2(db, "SELECT 1 FROM snapshots WHERE id = ? AND status = 'completed'", -1, &q, NULL);
        while ((de = readdir(d))) {
            const char *name = de->d_name;
            if (name[0] == '.') continue;
            size_t l = strlen(name);
            bool tmp = l > 4 && !strcmp(name + l - 4, ".tmp");
            bool keep = false;
            if (!tmp && l == 26 + 10 && !strcmp(name + 26, ".ndjson.gz") && q) {
                char id[27];
                memcpy(id, name, 26);
                id[26] = '\0';
                sqlite3_reset(q);
                sqlite3_bind_text(q, 1, id, -1, SQLITE_TRANSIENT);
                keep = sqlite3_step(q) == SQLITE_ROW;
            }
            if (!keep) {
                char p[1400];
                snprintf(p, sizeof p, "%s/%s", dir, name);
                if (unlink(p) == 0) removed++;
            }
        }
        sqlite3_finalize(q);
        closedir(d);
    }
    if (interrupted || removed)
        log_warn("snapshots_recovered", "\"interrupted\":%d,\"files_removed\":%d", interrupted, removed);
    return 0;
}

struct last_job {
    struct job job;
    struct { char space[64], id[27]; uint64_t version; } *v;
    size_t n;
};

static void last_work(struct job *j)
{
    struct last_job *lj = container_of(j, struct last_job, job);
    sqlite3 *db = store_reader_get(job_server(j)->store);
    if (!db) return;
    sqlite3_stmt *q;
    uint64_t delay = env_ms("SNAPSYNC_TEST_LOAD_DELAY_MS");   /* test hook, as in peers_load_work */
    if (delay) uv_sleep((unsigned)delay);
    if (sqlite3_prepare_v2(db,
                           "SELECT space, max(id), server_version FROM snapshots WHERE status = 'completed'"
                           " GROUP BY space_id",
                           -1, &q, NULL) == SQLITE_OK) {
        size_t cap = 0;
        while (sqlite3_step(q) == SQLITE_ROW) {
            if (lj->n == cap) {
                cap = cap ? cap * 2 : 16;
                lj->v = xrealloc(lj->v, cap * sizeof *lj->v);
            }
            snprintf(lj->v[lj->n].space, 64, "%s", (const char *)sqlite3_column_text(q, 0));
            snprintf(lj->v[lj->n].id, 27, "%s", (const char *)sqlite3_column_text(q, 1));
            lj->v[lj->n].version = (uint64_t)sqlite3_column_int64(q, 2);
            lj->n++;
        }
        sqlite3_finalize(q);
    }
    store_reader_put(job_server(j)->store, db);
}

static void last_done(struct job *j, struct http_req *r)
{
    struct last_job *lj = container_of(j, struct last_job, job);
    UNUSED(r);
    for (size_t i = 0; i < lj->n; i++) {
        struct space *sp = spaces_get(job_server(j)->spaces, lj->v[i].space);
        if (sp && !sp->last_snapshot[0]) {
            snprintf(sp->last_snapshot, sizeof sp->last_snapshot, "%s", lj->v[i].id);
            sp->last_snapshot_version = lj->v[i].version;
        }
    }
    job_server(j)->loading--;
    free(lj->v);
    free(lj);
}

/* once, at startup: main listens when it is in (srv->loading) */
static void snap_load_last(struct server *srv)
{
    struct last_job *lj = xcalloc(1, sizeof *lj);
    srv->loading++;
    job_submit(&srv->jobs, &lj->job, NULL, last_work, last_done);
}

void snap_init(struct server *srv)
{
    snap_load_last(srv);
    snap_bgcheck_init(srv);
    if (srv->cfg->snapshot_every) {
        uv_timer_init(srv->loop, &sched_timer);
        sched_timer.data = srv;
        uint64_t ms = srv->cfg->snapshot_every * 1000;
        uv_timer_start(&sched_timer, on_schedule, ms, ms);
        uv_unref((uv_handle_t *)&sched_timer);
        sched_on = true;
    }
}

void snap_free(struct server *srv)
{
    UNUSED(srv);
    snap_bgcheck_free();
    if (sched_on) {
        uv_close((uv_handle_t *)&sched_timer, NULL);
        sched_on = false;
    }
}
