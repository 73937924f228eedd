/* import.c - see import.h. */
#include "svc/import.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/http.h"
#include "net/server.h"
#include "store/writer.h"

#define CHUNK (64 * 1024)

/* ---- import: the upload streamed to a temp file on the threadpool -------- *
 * The body arrives on the loop into `pending` (reading pauses past
 * IMPORT_PENDING_MAX); one write job at a time moves it to the temp file.
 * A gzip upload is written as it comes; plain NDJSON (the download without
 * Accept-Encoding: gzip) is deflated into the file by those jobs. At the end
 * the stored file is verified like a restore's and renamed. */

#define IMPORT_PENDING_MAX (1u << 20)

/* What the upload is, told by its first two bytes (loop) */
enum import_mode {
    IMPORT_UNKNOWN,
    IMPORT_GZIP,                     /* 1f 8b: a .ndjson.gz, stored as it comes */
    IMPORT_PLAIN,                    /* anything else: NDJSON, compressed as it comes */
};

struct import {
    struct job job;
    struct server *srv;
    snap_answer_fn answer;
    char id[27], space[64], actor[32], remote[56];
    char tmp[1200], path[1200];
    int fd;
    enum import_mode mode;           /* set on the loop before the first write job */
    int level;                       /* of the stored file; -1 for a gzip upload (not known) */
    struct snap_gz *gz;              /* IMPORT_PLAIN: the deflate stream (worker) */
    struct buf pending, writing;
    bool busy, ended, paused, failed, finalizing;
    /* out (worker; read by the loop after the job) */
    int err;
    bool bad;                        /* the stored file is not a valid snapshot (msg) */
    char msg[200];
    struct snap_summary sum;
};

static void import_free(void *p)
{
    struct import *im = p;
    if (im->busy) {                  /* a job still runs: it frees us */
        im->srv = NULL;
        return;
    }
    if (im->fd >= 0) close(im->fd);
    snap_gz_free(im->gz);
    if (!im->finalizing || im->failed) unlink(im->tmp);
    snap_set_busy(im->srv, im->space, false);
    buf_free(&im->pending);
    buf_free(&im->writing);
    free(im->sum.counts_json);
    free(im->sum.blobs_json);
    free(im);
}

static void import_write_work(struct job *j)
{
    struct import *im = container_of(j, struct import, job);
    if (im->fd < 0) {
        char dir[1200];
        snprintf(dir, sizeof dir, "%s", im->tmp);
        char *slash = strrchr(dir, '/');
        if (slash) { *slash = '\0'; mkdir(dir, 0700); }
        im->fd = open(im->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (im->fd < 0) { im->err = errno; return; }
    }
    if (im->mode == IMPORT_PLAIN) {
        /* stored gzip like every snapshot file, in the same bounded steps */
        if (!im->gz && !(im->gz = snap_gz_new(im->fd, im->level, 1, 0, false))) {
            im->err = ENOMEM;
            return;
        }
        if ((im->err = im->finalizing ? snap_gz_finish(im->gz, im->writing.data, im->writing.len)
                                      : snap_gz_write(im->gz, im->writing.data, im->writing.len)) != 0)
            return;
    } else if ((im->err = write_full(im->fd, im->writing.data, im->writing.len)) != 0) {
        return;
    }
    if (im->finalizing) {
        if (fsync(im->fd) < 0) { im->err = errno; return; }
        close(im->fd);
        im->fd = -1;
        if (snap_verify_file(im->tmp, &im->sum, im->msg, sizeof im->msg) < 0) { im->bad = true; return; }
        if (rename(im->tmp, im->path) < 0) { im->err = errno; return; }
        char dir[1200];
        snprintf(dir, sizeof dir, "%s", im->path);
        char *slash = strrchr(dir, '/');
        if (slash) {
            *slash = '\0';
            int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
        }
    }
}

static void import_pump(struct http_req *r);

struct import_op {
    struct wop op;
    struct server *srv;
    snap_answer_fn answer;
    char id[27], space[64], actor[32], remote[56], note[600];
    int level;
    struct snap_summary sum;         /* borrowed from the caller until done */
    struct buf meta;
    snap_import_after_fn after;
    void *after_arg;
};

static int import_apply(struct wtx *tx, struct wop *op)
{
    struct import_op *io = container_of(op, struct import_op, op);
    struct space_stats *sp = wtx_space(tx, io->space);
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", io->space);
    sqlite3_stmt *st = wtx_stmt(tx,
                                "INSERT INTO snapshots(id, space_id, space, kind, status, server_version, created_at,"
                                " completed_at, entity_total, raw_bytes, size_bytes, sha256, level, created_by, note,"
                                " entity_counts, blobs, integrity, integrity_checked_at)"
                                " VALUES (?1, ?2, ?3, 'imported', 'completed', ?4, ?5, ?13, ?6, ?7, ?8, ?9, ?14, ?10, ?11, ?12,"
                                " ?15, 'ok', ?13)");
    sqlite3_bind_text(st, 1, io->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sp->id);
    sqlite3_bind_text(st, 3, io->space, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)io->sum.server_version);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)io->sum.created_at_ms);      /* the capture time */
    sqlite3_bind_int64(st, 13, (sqlite3_int64)wtx_now(tx));              /* completed_at = imported_at */
    sqlite3_bind_int(st, 14, io->level);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)io->sum.entity_total);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)io->sum.raw_bytes);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)io->sum.size_bytes);
    sqlite3_bind_text(st, 9, io->sum.sha256, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, io->actor, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, io->note, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 12, io->sum.counts_json ? io->sum.counts_json : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 15, io->sum.blobs_json ? io->sum.blobs_json : "[]", -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "recording the import failed");
    if (wtx_audit(tx, io->actor, "snapshot.create", io->space, io->id, "{\"kind\":\"imported\"}", io->remote) < 0)
        return wop_fail(op, 500, "storage_error", "audit failed");
    st = wtx_stmt(tx, "SELECT " SNAP_COLS " FROM snapshots WHERE id = ?");
    sqlite3_bind_text(st, 1, io->id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) snap_meta_json(&io->meta, st);
    sqlite3_reset(st);
    return 0;
}

static void import_recorded(struct wop *op, struct http_req *r)
{
    struct import_op *io = container_of(op, struct import_op, op);
    if (op->err.status) {
        snap_answer_wop(io->answer, r, op);
    } else if (r) {
        struct snap_answer a = {.status = 201, .body = &io->meta, .space = io->space, .id = io->id, .location = true};
        io->answer(r, &a);
    }
    if (op->err.status) snap_remove_file(io->srv, io->id);
    if (io->after) io->after(io->after_arg, !op->err.status);
    buf_free(&io->meta);
    free(io);
}

int snap_import_record(struct server *srv, struct http_req *r, const struct snap_import_rec *rec,
                       snap_answer_fn answer, snap_import_after_fn after, void *arg)
{
    struct import_op *io = xcalloc(1, sizeof *io);
    io->srv = srv;
    io->answer = answer;
    snprintf(io->id, sizeof io->id, "%s", rec->id);
    snprintf(io->space, sizeof io->space, "%s", rec->space);
    snprintf(io->actor, sizeof io->actor, "%s", rec->actor);
    snprintf(io->remote, sizeof io->remote, "%s", rec->remote ? rec->remote : "");
    snprintf(io->note, sizeof io->note, "%s", rec->note);
    io->level = rec->level;
    io->sum = *rec->sum;
    io->after = after;
    io->after_arg = arg;
    if (writer_submit(srv->writer, &io->op, r, import_apply, import_recorded) < 0) {
        free(io);
        return -1;
    }
    return 0;
}

static void import_write_done(struct job *j, struct http_req *r)
{
    struct import *im = container_of(j, struct import, job);
    im->busy = false;
    if (im->bad) im->failed = true;
    buf_reset(&im->writing);
    if (!im->srv) {                  /* the request went away while we wrote */
        im->srv = job_server(j);
        im->failed = true;
        import_free(im);
        return;
    }
    if (!r) return;                  /* ctx_free runs when the request is released */
    if (im->err || im->failed) {
        im->failed = true;
        if (im->err)
            snap_answer_err(im->answer, r, 0, 500, "storage_error", NULL, "writing the upload failed: %s",
                            strerror(im->err));
        else
            snap_answer_err(im->answer, r, 0, 422, "snapshot_corrupt", NULL, "%s; nothing was imported", im->msg);
        return;
    }
    if (im->finalizing) {
        struct snap_import_rec rec = {.id = im->id, .space = im->space, .actor = im->actor, .remote = im->remote,
                                      .level = im->level, .sum = &im->sum};
        char note[200];
        snprintf(note, sizeof note, "imported from space %s (instance %s)", im->sum.space, im->sum.instance_id);
        rec.note = note;
        if (snap_import_record(im->srv, r, &rec, im->answer, NULL, NULL) < 0)
            snap_answer_err(im->answer, r, 1, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        return;
    }
    import_pump(r);
}

static void import_pump(struct http_req *r)
{
    struct import *im = r->ctx;
    if (im->busy || im->failed) return;
    if (im->mode == IMPORT_UNKNOWN) {
        /* the gzip magic (RFC 1952) tells a .ndjson.gz from the plain NDJSON
         * a download without Accept-Encoding: gzip gives */
        if (im->pending.len < 2 && !im->ended) return;
        const unsigned char *p = (const unsigned char *)im->pending.data;
        bool gz = im->pending.len >= 2 && p[0] == 0x1f && p[1] == 0x8b;
        im->mode = gz ? IMPORT_GZIP : IMPORT_PLAIN;
        im->level = gz ? -1 : (int)r->srv->cfg->snapshot_level;
    }
    if (im->pending.len || (im->ended && !im->finalizing)) {
        struct buf t = im->writing;
        im->writing = im->pending;
        im->pending = t;
        buf_reset(&im->pending);
        if (im->ended && !im->pending.len) im->finalizing = true;
        im->busy = true;
        job_submit(&r->srv->jobs, &im->job, r, import_write_work, import_write_done);
    }
    if (im->paused && im->pending.len < IMPORT_PENDING_MAX / 2) {
        im->paused = false;
        http_body_resume(r);
    }
}

static int import_on_body(struct http_req *r, const char *data, size_t len)
{
    struct import *im = r->ctx;
    if (im->failed) return 0;
    buf_append(&im->pending, data, len);
    if (!im->busy && im->pending.len >= CHUNK) import_pump(r);
    if (im->pending.len >= IMPORT_PENDING_MAX) {
        im->paused = true;
        return 1;                    /* pause reading until the disk catches up */
    }
    return 0;
}

static void import_on_end(struct http_req *r)
{
    struct import *im = r->ctx;
    im->ended = true;
    if (im->failed) return;
    if (r->body_seen == 0) {
        im->failed = true;
        snap_answer_err(im->answer, r, 0, 400, "empty_body", NULL,
                        "send the snapshot file (.ndjson.gz or .ndjson) as the request body");
        return;
    }
    import_pump(r);
}

void snap_import_start(struct server *srv, struct http_req *r, const struct snap_import_req *q, snap_answer_fn answer)
{
    struct import *im = xcalloc(1, sizeof *im);
    im->srv = srv;
    im->answer = answer;
    im->fd = -1;
    ulid_make(im->id, now_ms_wall());
    snprintf(im->space, sizeof im->space, "%s", q->space);
    snprintf(im->actor, sizeof im->actor, "%s", q->actor);
    snprintf(im->remote, sizeof im->remote, "%s", q->remote ? q->remote : "");
    snap_file(srv->cfg->data_dir, im->id, true, im->tmp, sizeof im->tmp);
    snap_file(srv->cfg->data_dir, im->id, false, im->path, sizeof im->path);
    r->ctx = im;
    r->ctx_free = import_free;
    r->on_body = import_on_body;
    r->on_body_end = import_on_end;
}
