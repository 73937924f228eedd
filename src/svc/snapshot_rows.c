/* snapshot_rows.c - what every part of the snapshot engine shares: file
 * names, the rows as JSON, the list, busy spaces, the answers it reports,
 * file removal on the pool, and the messages and log lines about a file.
 * See snapshot.h. */
#include "svc/snapshot.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "net/server.h"
#include "store/spaces.h"
#include "store/writer.h"

void snap_file(const char *data_dir, const char *id, bool tmp, char *out, size_t cap)
{
    snprintf(out, cap, "%s/snapshots/%s.ndjson.gz%s", data_dir, id, tmp ? ".tmp" : "");
}

/* ---- answers ------------------------------------------------------------- */

void snap_answer_err(snap_answer_fn fn, struct http_req *r, unsigned retry_after, int status, const char *code,
                     const char *extra, const char *fmt, ...)
{
    if (!r || !fn) return;
    struct err e;
    err_clear(&e);
    e.status = status;
    snprintf(e.code, sizeof e.code, "%s", code);
    char msg[512];                   /* as much as an HTTP error's message holds */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(e.msg, sizeof e.msg, "%.239s", msg);
    struct snap_answer a = {.status = status, .err = &e, .msg = msg, .extra = extra, .retry_after = retry_after};
    fn(r, &a);
}

void snap_answer_wop(snap_answer_fn fn, struct http_req *r, const struct wop *op)
{
    if (!r || !fn) return;
    struct err e;
    err_copy(&e, &op->err);
    struct snap_answer a = {.status = op->err.status, .err = &e};
    fn(r, &a);
}

/* ---- metadata ---------------------------------------------------------- */

void snap_meta_json(struct buf *b, sqlite3_stmt *q)
{
#define TXT(i) ((const char *)sqlite3_column_text(q, i))
    buf_puts(b, "{\"id\":");
    json_cstr(b, TXT(0));
    json_kv_str(b, "space", TXT(1));
    json_kv_str(b, "kind", TXT(2));
    json_kv_str(b, "status", TXT(3));
    json_kv_u64(b, "server_version", (uint64_t)sqlite3_column_int64(q, 4));
    json_kv_time(b, "created_at", (uint64_t)sqlite3_column_int64(q, 5));
    json_kv_time(b, "completed_at", (uint64_t)sqlite3_column_int64(q, 6));
    /* an import's row is written completed when the upload is in: created_at
     * is the capture time from the file's header, this is the import's */
    if (TXT(2) && !strcmp(TXT(2), "imported")) json_kv_time(b, "imported_at", (uint64_t)sqlite3_column_int64(q, 6));
    else json_kv_null(b, "imported_at");
    buf_puts(b, ",\"entity_counts\":");
    buf_puts(b, TXT(7) ? TXT(7) : "{}");
    json_kv_u64(b, "entity_total", (uint64_t)sqlite3_column_int64(q, 8));
    json_kv_u64(b, "raw_bytes", (uint64_t)sqlite3_column_int64(q, 9));
    json_kv_u64(b, "size_bytes", (uint64_t)sqlite3_column_int64(q, 10));
    json_kv_str(b, "sha256", TXT(11));
    /* -1: not known (an uploaded gzip file: the format does not record it) */
    if (sqlite3_column_int64(q, 12) < 0) json_kv_null(b, "level");
    else json_kv_u64(b, "level", (uint64_t)sqlite3_column_int64(q, 12));
    json_kv_str(b, "created_by", TXT(13));
    json_kv_str(b, "note", TXT(14));
    json_kv_str(b, "error", TXT(15));
    /* what the last full check or read of the file found; null while
     * there is no file (running, failed) */
    bool done = TXT(3) && !strcmp(TXT(3), "completed");
    json_kv_str(b, "integrity", done ? TXT(17) : NULL);
    json_kv_str(b, "integrity_error", done ? TXT(18) : NULL);
    json_kv_time(b, "integrity_checked_at", done ? (uint64_t)sqlite3_column_int64(q, 19) : 0);
    buf_puts(b, ",\"remote\":");
    buf_puts(b, TXT(20) ? TXT(20) : "null");
    buf_putc(b, '}');
#undef TXT
}

int snap_row_load(sqlite3 *db, int64_t space_id, const char *id, struct snap_row *row)
{
    sqlite3_stmt *q;
    memset(row, 0, sizeof *row);
    if (sqlite3_prepare_v2(db, "SELECT " SNAP_COLS " FROM snapshots WHERE id = ? AND space_id = ?", -1, &q, NULL) !=
        SQLITE_OK)
        return -1;
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, space_id);
    if (sqlite3_step(q) == SQLITE_ROW) {
        row->found = true;
        snprintf(row->id, sizeof row->id, "%s", (const char *)sqlite3_column_text(q, 0));
        snprintf(row->kind, sizeof row->kind, "%s", (const char *)sqlite3_column_text(q, 2));
        snprintf(row->status, sizeof row->status, "%s", (const char *)sqlite3_column_text(q, 3));
        row->server_version = (uint64_t)sqlite3_column_int64(q, 4);
        row->entity_total = (uint64_t)sqlite3_column_int64(q, 8);
        row->size_bytes = (uint64_t)sqlite3_column_int64(q, 10);
        const unsigned char *sha = sqlite3_column_text(q, 11);
        snprintf(row->sha256, sizeof row->sha256, "%s", sha ? (const char *)sha : "");
        snap_meta_json(&row->meta, q);
        const unsigned char *ig = sqlite3_column_text(q, 17), *ie = sqlite3_column_text(q, 18);
        snprintf(row->integrity, sizeof row->integrity, "%s", ig ? (const char *)ig : "unchecked");
        snprintf(row->integrity_error, sizeof row->integrity_error, "%s", ie ? (const char *)ie : "");
    }
    sqlite3_finalize(q);
    return 0;
}

/* a page of the list (the read job of GET .../snapshots) */
int snap_list_json(sqlite3 *db, const struct snap_list_query *a, struct buf *out)
{
    char sql[768];
    snprintf(sql, sizeof sql, "SELECT " SNAP_COLS " FROM snapshots WHERE space_id = ?1 AND id < ?2%s%s%s"
             " ORDER BY id DESC LIMIT ?3",
             a->kind[0] ? " AND kind = ?4" : "", a->status[0] ? " AND status = ?5" : "",
             a->integrity[0] ? " AND status = 'completed' AND integrity = ?6" : "");
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_int64(q, 1, a->space_id);
    sqlite3_bind_text(q, 2, a->cursor[0] ? a->cursor : "~", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)a->limit + 1);
    if (a->kind[0]) sqlite3_bind_text(q, 4, a->kind, -1, SQLITE_STATIC);
    if (a->status[0]) sqlite3_bind_text(q, 5, a->status, -1, SQLITE_STATIC);
    if (a->integrity[0]) sqlite3_bind_text(q, 6, a->integrity, -1, SQLITE_STATIC);
    buf_puts(out, "{\"snapshots\":[");
    uint64_t n = 0;
    char last[27] = "";
    bool more = false;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (n == a->limit) { more = true; break; }
        if (n++) buf_putc(out, ',');
        snprintf(last, sizeof last, "%s", (const char *)sqlite3_column_text(q, 0));
        snap_meta_json(out, q);
    }
    sqlite3_finalize(q);
    buf_puts(out, "],\"next_cursor\":");
    if (more) json_cstr(out, last);
    else buf_puts(out, "null");
    buf_putc(out, '}');
    return 0;
}

/* ---- busy spaces (loop) --------------------------------------------------- */

void snap_set_busy(struct server *srv, const char *space, bool busy)
{
    struct space *sp = spaces_get(srv->spaces, space);
    if (sp) sp->busy = busy;
}

/* ---- files and messages -------------------------------------------------- */

struct unlink_job {
    struct job job;
    char path[1200];
};

static void unlink_work(struct job *j)
{
    struct unlink_job *u = container_of(j, struct unlink_job, job);
    unlink(u->path);
}

static void unlink_done(struct job *j, struct http_req *r)
{
    UNUSED(r);
    free(container_of(j, struct unlink_job, job));
}

/* unlink(2) on the pool, not the loop */
void snap_unlink_later(struct server *srv, const char *path)
{
    struct unlink_job *u = xcalloc(1, sizeof *u);
    snprintf(u->path, sizeof u->path, "%s", path);
    job_submit(&srv->jobs, &u->job, NULL, unlink_work, unlink_done);
}

void snap_remove_file(struct server *srv, const char *id)
{
    char path[1200];
    snap_file(srv->cfg->data_dir, id, false, path, sizeof path);
    snap_unlink_later(srv, path);
}

void snap_log_file(int lvl, const char *msg, const char *space, const char *id, const char *path, const char *error)
{
    struct buf b;
    buf_init(&b);
    json_kv_str(&b, "space", space);
    json_kv_str(&b, "snapshot", id);
    json_kv_str(&b, "file", path);
    json_kv_str(&b, "error", error);
    log_raw((enum log_level)lvl, msg, b.data, b.len);
    buf_free(&b);
}

/* The message of a 422 for a snapshot whose file is bad. */
void snap_corrupt_msg(char *out, size_t cap, const char *why)
{
    if (!strcmp(why, SNAP_MISSING)) snprintf(out, cap, "%s", why);
    else snprintf(out, cap, "the snapshot file is damaged: %s", why);
}
