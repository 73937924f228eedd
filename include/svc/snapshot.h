/* snapshot.h - consistent, compressed snapshots of a space: the engine.
 *
 * A snapshot is one threadpool job: a read transaction on its own
 * connection fixes the space at one server_version while writers go on;
 * rows stream through the format's writer (snapshot_format.h: gzip,
 * sha256 as written) into DATA/snapshots/<id>.tmp, fsynced, renamed to
 * <id>.ndjson.gz, the directory fsynced, and only then is the row marked
 * completed. Memory is a few fixed buffers whatever the size of the space.
 *
 * Rows live in the `snapshots` table (written by the writer thread); the
 * loop thread tracks which spaces have a snapshot or restore running (409)
 * and publishes `snapshot` SSE events from the job's progress.
 *
 * Each row also says what the last read of its file found (`integrity`:
 * unchecked, ok, corrupt); a background check re-verifies every completed
 * file once per --snapshot-verify-every seconds, one at a time, in slices
 * on the pool.
 *
 * This module: create, delete, retention, schedule, recovery at start
 * (snapshot.c); integrity marks, the verify route, the background check
 * (snapshot_check.c). restore.h and import.h build on it;
 * api/snapshots.c parses requests and turns what the engine reports
 * (struct snap_answer) into HTTP.
 *
 * Threads: functions here run on the loop unless noted. `_work` functions
 * run on the threadpool and write only their own job struct; `_apply`
 * functions run on the writer thread; `_done` functions run on the loop and
 * copy results into loop-owned state (spaces, the request's answer).
 */
#ifndef SNAPSYNC_SNAPSHOT_H
#define SNAPSYNC_SNAPSHOT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/util.h"
#include "svc/snapshot_format.h"

struct server;
struct http_req;
struct wop;

/* ---- what the engine reports -------------------------------------------------
 * One answer to the request a step was started for (NULL requests get
 * none). api/snapshots.c says it in HTTP. */
struct snap_answer {
    int status;                      /* the HTTP status */
    const struct err *err;           /* an error (status >= 400), or NULL */
    const char *msg;                 /* the error's message when longer than err->msg holds, or NULL */
    const char *extra;               /* error members longer than err->extra holds (missing blobs), or NULL */
    struct buf *body;                /* JSON of a success (the answer takes its bytes), or NULL (no body) */
    const char *space, *id;          /* with location: the snapshot made */
    bool location;                   /* Location: the snapshot's URL */
    bool async;                      /* Preference-Applied: respond-async */
    unsigned retry_after;            /* Retry-After seconds (0: none) */
};
typedef void (*snap_answer_fn)(struct http_req *r, const struct snap_answer *a);
/* Answers an error through fn when r is there (extra: its members, or NULL). */
void snap_answer_err(snap_answer_fn fn, struct http_req *r, unsigned retry_after, int status, const char *code,
                     const char *extra, const char *fmt, ...) PRINTF_LIKE(7, 8);
/* A failed writer op's error. */
void snap_answer_wop(snap_answer_fn fn, struct http_req *r, const struct wop *op);

/* ---- files and rows ---------------------------------------------------------- */

/* DATA/snapshots/<id>.ndjson.gz (tmp: the name it is written under) */
void snap_file(const char *data_dir, const char *id, bool tmp, char *out, size_t cap);

#define SNAP_COLS \
    "id, space, kind, status, server_version, created_at, completed_at, entity_counts, entity_total," \
    " raw_bytes, size_bytes, sha256, level, created_by, note, error, blobs, integrity, integrity_error," \
    " integrity_checked_at," \
    " (SELECT json_object('status', r.status, 'key', r.key, 'uploaded_at'," \
    "   replace(datetime(r.uploaded_at / 1000, 'unixepoch'), ' ', 'T') || '.' ||" \
    "   substr('00' || (r.uploaded_at - r.uploaded_at / 1000 * 1000), -3) || 'Z'," \
    "   'attempts', r.attempts, 'error', r.error)" \
    "  FROM snapshot_remote r WHERE r.snapshot_id = snapshots.id)"
/* (no '%' in SNAP_COLS: it is pasted into format strings) */
/* A row selected with SNAP_COLS as the API's metadata JSON ("remote": its
 * off-site copy, svc/remote.h, or null). */
void snap_meta_json(struct buf *b, sqlite3_stmt *q);

/* One snapshot's row as the loop needs it. */
struct snap_row {
    bool found;
    char id[27], kind[16], status[16], sha256[65];
    char integrity[16], integrity_error[200];
    uint64_t server_version, size_bytes, entity_total;
    struct buf meta;                 /* JSON */
};
/* Any thread with its own connection. 0 (found or not), -1 on an SQL error. */
int snap_row_load(sqlite3 *db, int64_t space_id, const char *id, struct snap_row *row);

/* A page of a space's snapshots, newest first, as {"snapshots":[...],
 * "next_cursor"}; "" filters are off. Pool (a read job). -1 on an SQL
 * error. */
struct snap_list_query {
    int64_t space_id;
    const char *cursor;              /* "" from the start */
    uint64_t limit;
    const char *kind, *status, *integrity;
};
int snap_list_json(sqlite3 *db, const struct snap_list_query *q, struct buf *out);

/* The message of a 422 for a snapshot whose file is bad. */
void snap_corrupt_msg(char *out, size_t cap, const char *why);
/* A log line about a snapshot's file: the path is for the operator, never
 * for clients. */
void snap_log_file(int lvl /* enum log_level */, const char *msg, const char *space, const char *id, const char *path,
                   const char *error);

/* ---- the engine's state on the loop ------------------------------------------ */

/* Startup (main thread, before the loop): rows left pending/running by a
 * crash become failed ("interrupted"), leftover temp files are removed.
 * Returns 0 or -1 with err. */
int snap_recover(const char *data_dir, void *db /* sqlite3 */, char *err, size_t errlen);
void snap_init(struct server *srv);      /* loop: schedule and check timers, last_snapshot per space */
void snap_free(struct server *srv);
/* A snapshot or restore of the space runs (409 for another). */
void snap_set_busy(struct server *srv, const char *space, bool busy);
/* Removes a snapshot's file in the threadpool (its row is already gone). */
void snap_remove_file(struct server *srv, const char *id);
/* unlink(2) of any path, on the pool */
void snap_unlink_later(struct server *srv, const char *path);

/* ---- create ------------------------------------------------------------------- */

/* What a snapshot job reports to who started it: at SNAP_STARTED (the row
 * is in, or could not be written: err) and at SNAP_DONE (the file and the
 * row are finished, or failed: err). meta: the row as JSON. An unrecorded
 * snapshot (below) reports SNAP_WRITTEN instead of SNAP_STARTED: its file
 * is written (or not: file_err), and job waits for snap_record or
 * snap_discard. */
enum snap_stage { SNAP_STARTED, SNAP_WRITTEN, SNAP_DONE };
struct snap_job;
struct snap_report {
    enum snap_stage stage;
    const char *id, *space, *kind;
    const struct err *err;           /* NULL: it went well */
    const char *file_err;            /* SNAP_WRITTEN, SNAP_DONE: the file could not be written (why), or NULL */
    struct buf *meta;                /* an answer may take its bytes */
    struct snap_job *job;            /* SNAP_WRITTEN: the handle for snap_record / snap_discard */
};
typedef void (*snap_report_fn)(void *arg, struct http_req *r, const struct snap_report *rep);

struct snap_start_req {
    const char *space, *kind, *actor, *remote, *note;   /* remote, note: NULL for none */
    bool keep_request;               /* the job holds r until SNAP_DONE (else only until SNAP_STARTED) */
    bool owns_busy;                  /* the reporter clears busy (a restore goes on holding it) */
    /* Unrecorded: no row while the file is written (its events go out as
     * for any snapshot; a discarded one ends with status failed);
     * the reporter then records it (snap_record) or throws it away
     * (snap_discard). A restore takes its pre_restore snapshot this way,
     * beside its check of the file, so a refused restore leaves nothing.
     * space_id must be given; nothing goes through the writer until then. */
    bool unrecorded;
    int64_t space_id;
    snap_report_fn report;           /* NULL: nobody is told */
    void *arg;
};
/* Starts a snapshot of space (busy must already be set by the caller).
 * Returns 0, or -1 when the write queue is full (nothing started, nothing
 * reported). */
int snap_start(struct server *srv, struct http_req *r, const struct snap_start_req *q);
/* An unrecorded snapshot whose file is written: its row goes in, completed,
 * with its audit (a writer op); then SNAP_DONE as for any snapshot (err:
 * not recorded; the file is then removed by the start-up sweep's rule: no
 * completed row, no file). */
void snap_record(struct snap_job *sj, struct http_req *r);
/* An unrecorded snapshot that is not wanted (or whose file failed): the
 * file goes, nothing was recorded. A failed file is logged and counted. */
void snap_discard(struct snap_job *sj);

/* Called on the loop for every snapshot that completed (the off-site
 * copy's hook, svc/remote.c): one function, installed at start. */
typedef void (*snap_done_hook)(struct server *srv, const char *space, const char *id, const char *kind);
void snap_set_done_hook(snap_done_hook fn);

/* ---- delete ------------------------------------------------------------------- */

struct snap_delete_req {
    const char *space, *id, *actor, *remote;
    int64_t space_id;
};
/* The row goes in a writer op (404, 409 while it runs), the file after
 * commit; answers 204 or the error. */
void snap_delete(struct server *srv, struct http_req *r, const struct snap_delete_req *q, snap_answer_fn answer);

/* ---- integrity ------------------------------------------------------------------ */

enum integ_src { INTEG_DOWNLOAD, INTEG_PREVIEW, INTEG_RESTORE, INTEG_VERIFY, INTEG_BACKGROUND };

/* Records what a read of snapshot `id` found (a writer op; logged, counted,
 * published and audited when the mark changes to or from corrupt).
 * Returns 0, or -1 when the write queue is full (nothing recorded). */
int snap_integrity_mark(struct server *srv, const char *space, const char *id, enum integ_src src, bool ok,
                        const char *why, const char *actor, const char *remote);

/* The background check (snapshot_check.c), started by snap_init and
 * stopped by snap_free. */
void snap_bgcheck_init(struct server *srv);
void snap_bgcheck_free(void);

/* A download's stream found the file is not what the row says (the
 * filestream's damaged callback; arg: a struct snap_dl_check, freed by the
 * stream). Counts, logs and marks the snapshot corrupt. */
struct snap_dl_check {
    char space[64], id[27], actor[32], remote[56];
};
void snap_download_damaged(struct server *srv, void *arg, const char *why);

/* The operator's full check of a stored file (POST .../verify): on the pool,
 * then recorded as the snapshot's integrity; answers
 * {"valid","error","snapshot"} or the error. */
struct snap_verify_req {
    const char *space, *id, *actor, *remote, *sha256;
};
void snap_verify_start(struct server *srv, struct http_req *r, const struct snap_verify_req *q, snap_answer_fn answer);

#endif
