/* snapshots.c - see snapshots.h. The engine is svc/snapshot.h (create,
 * delete, integrity), svc/restore.h (preview, restore) and svc/import.h. */
#include "api/snapshots.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api/util.h"
#include "core/json.h"
#include "core/log.h"
#include "net/filestream.h"
#include "net/http.h"
#include "net/server.h"
#include "core/names.h"
#include "svc/auth.h"
#include "svc/export.h"
#include "svc/import.h"
#include "svc/remote.h"
#include "svc/restore.h"
#include "svc/snapshot.h"

static const char *const create_members[] = {"note", NULL};
static const char *const restore_members[] = {"confirm", "dry_run", NULL};
static const char async_flag;        /* create_report's arg for Prefer: respond-async */

/* What the engine reports, in HTTP. */
static void snapshots_answer(struct http_req *r, const struct snap_answer *a)
{
    if (a->retry_after) http_add_header(r, "Retry-After", "%u", a->retry_after);
    if (a->err) {
        const char *extra = a->extra ? a->extra : (a->err->extra[0] ? a->err->extra : NULL);
        http_send_error(r, a->status, a->err->code[0] ? a->err->code : "error", extra, "%s",
                        a->msg ? a->msg : a->err->msg);
        return;
    }
    if (a->location) http_add_header(r, "Location", "/api/v1/spaces/%s/snapshots/%s", a->space, a->id);
    if (a->async) http_add_header(r, "Preference-Applied", "respond-async");
    if (a->body) http_send_json(r, a->status, a->body);
    else http_send_empty(r, a->status);
}

static const char *client_of(const struct http_req *r) { return r->conn ? r->client : NULL; }

/* ---- create, list, get, delete ----------------------------------------- */

/* POST .../snapshots answers when the snapshot is done (201); with Prefer:
 * respond-async when its row is in (202) */
static void create_report(void *arg, struct http_req *r, const struct snap_report *rep)
{
    bool async = arg != NULL;
    if (!r) return;
    struct snap_answer a = {.space = rep->space, .id = rep->id};
    if (rep->err) {
        a.status = rep->err->status;
        a.err = rep->err;
    } else if (rep->stage == SNAP_STARTED) {
        if (!async) return;
        a = (struct snap_answer){.status = 202, .body = rep->meta, .space = rep->space, .id = rep->id,
                                 .location = true, .async = true};
    } else {
        a = (struct snap_answer){.status = 201, .body = rep->meta, .space = rep->space, .id = rep->id,
                                 .location = true};
    }
    snapshots_answer(r, &a);
}

/* the note member, if any: 0, or -1 after answering */
static int create_note(struct http_req *r, char *note, size_t cap)
{
    if (!r->body.len) return 0;
    json_t *v = api_body_members(r, create_members);
    if (!v) return -1;
    json_t *n = json_object_get(v, "note");
    if (n && !json_is_null(n)) {
        if (!json_is_string(n) || json_string_length(n) > 255) {
            json_decref(v);
            http_send_error(r, 400, "invalid_note", NULL, "note must be a string of at most 255 bytes");
            return -1;
        }
        snprintf(note, cap, "%s", json_name(n));
    }
    json_decref(v);
    return 0;
}

void api_snapshot_create(struct http_req *r)
{
    struct server *srv = r->srv;
    struct space *sp = api_space(r);
    if (!sp) return;
    char note[256] = "";
    if (create_note(r, note, sizeof note) < 0) return;
    if (sp->busy) {
        http_send_error(r, 409, "snapshot_in_progress", NULL, "a snapshot or restore of '%s' is running",
                        sp->st.name);
        return;
    }
    uint64_t retry;
    if (!auth_snapshot_rate(r, &retry)) {
        auth_audit_denied(r, 429);   /* sampled, like the other denials */
        http_add_header(r, "Retry-After", "%llu", (unsigned long long)retry);
        http_send_error(r, 429, "rate_limited", NULL, "at most %llu snapshots a minute per key and space",
                        (unsigned long long)srv->cfg->snapshot_rate);
        return;
    }
    size_t pl;
    const char *prefer = http_header(r, "Prefer", &pl);
    bool async = prefer && header_has_token(prefer, pl, "respond-async");
    struct snap_start_req q = {.space = sp->st.name, .kind = "manual", .actor = api_actor(r),
                               .remote = client_of(r), .note = note[0] ? note : NULL, .keep_request = !async,
                               .report = create_report, .arg = async ? (void *)&async_flag : NULL};
    sp->busy = true;
    if (snap_start(srv, r, &q) < 0) {
        sp->busy = false;
        http_add_header(r, "Retry-After", "1");
        http_send_error(r, 503, "overloaded", NULL, "the write queue is full; retry shortly");
    }
}

struct list_arg {
    char kind[16], status[16], integrity[16];
};

static void list_work(sqlite3 *db, struct read_job *rj)
{
    struct list_arg *a = rj->arg;
    struct snap_list_query q = {.space_id = rj->space_id, .cursor = rj->cursor, .limit = rj->limit,
                                .kind = a->kind, .status = a->status, .integrity = a->integrity};
    if (snap_list_json(db, &q, &rj->out) < 0) read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
}

/* kind, status and integrity: 0, or -1 after answering 400 */
static int list_filters(struct http_req *r, struct list_arg *a)
{
    long l = http_query(r, "kind", a->kind, sizeof a->kind);
    if (l == -2 || (l >= 0 && strcmp(a->kind, "manual") && strcmp(a->kind, "scheduled") && strcmp(a->kind, "pre_restore") &&
        strcmp(a->kind, "imported"))) {
        http_send_error(r, 400, "invalid_parameter", NULL, "kind is manual, scheduled, pre_restore or imported");
        return -1;
    }
    if (l < 0) a->kind[0] = '\0';
    l = http_query(r, "status", a->status, sizeof a->status);
    if (l == -2 || (l >= 0 && strcmp(a->status, "pending") && strcmp(a->status, "running") && strcmp(a->status, "completed") &&
        strcmp(a->status, "failed"))) {
        http_send_error(r, 400, "invalid_parameter", NULL, "status is pending, running, completed or failed");
        return -1;
    }
    if (l < 0) a->status[0] = '\0';
    l = http_query(r, "integrity", a->integrity, sizeof a->integrity);
    if (l >= 0 && strcmp(a->integrity, "unchecked") && strcmp(a->integrity, "ok") && strcmp(a->integrity, "corrupt")) {
        http_send_error(r, 400, "invalid_parameter", NULL, "integrity is unchecked, ok or corrupt");
        return -1;
    }
    if (l < 0) a->integrity[0] = '\0';
    return 0;
}

void api_snapshot_list(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct read_job *rj = read_job_new();
    struct list_arg *a = xcalloc(1, sizeof *a);
    rj->arg = a;
    rj->space_id = sp->st.id;
    struct list_page pg;
    if (api_paging(r, LIST_CURSOR_ULID, &pg) < 0) goto fail;
    rj->limit = pg.limit;
    snprintf(rj->cursor, sizeof rj->cursor, "%s", pg.cursor);
    if (list_filters(r, a) < 0) goto fail;
    read_submit(r, rj, list_work, NULL);
    return;
fail:
    free(a);
    free(rj);
}

static void get_work(sqlite3 *db, struct read_job *rj)
{
    struct snap_row row;
    if (snap_row_load(db, rj->space_id, rj->id, &row) < 0) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    if (!row.found) read_fail(rj, 404, "not_found", "no snapshot %s in this space", rj->id);
    else buf_append(&rj->out, row.meta.data, row.meta.len);
    buf_free(&row.meta);
}

static struct read_job *snap_read_job(struct http_req *r, struct space *sp)
{
    struct read_job *rj = read_job_new();
    rj->space_id = sp->st.id;
    snprintf(rj->space, sizeof rj->space, "%s", sp->st.name);
    snprintf(rj->id, sizeof rj->id, "%s", r->match.params.id);
    return rj;
}

void api_snapshot_get(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    read_submit(r, snap_read_job(r, sp), get_work, NULL);
}

void api_snapshot_delete(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct snap_delete_req q = {.space = sp->st.name, .id = r->match.params.id, .actor = api_actor(r),
                                .remote = client_of(r), .space_id = sp->st.id};
    snap_delete(r->srv, r, &q, snapshots_answer);
}

/* ---- the row, for download, restore and verify -------------------------- */

static void row_work(sqlite3 *db, struct read_job *rj)
{
    struct snap_row *row = xcalloc(1, sizeof *row);
    rj->arg = row;
    if (snap_row_load(db, rj->space_id, rj->id, row) < 0) read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
    buf_free(&row->meta);
}

/* 404 and 409 for a row that is not a completed snapshot: true after answering */
static bool row_refused(struct http_req *r, struct read_job *rj, const struct snap_row *row, const char *not_ready)
{
    if (!row->found) {
        http_send_error(r, 404, "not_found", NULL, "no snapshot %s in this space", rj->id);
        return true;
    }
    if (strcmp(row->status, "completed") != 0) {
        http_send_error(r, 409, "snapshot_not_ready", NULL, "the snapshot is %s%s", row->status, not_ready);
        return true;
    }
    return false;
}

/* ---- download --------------------------------------------------------------- */

/* The file, streamed (net/filestream.h): checked as it goes out (size, gzip,
 * sha256); one that is not what the row says aborts the body and marks the
 * snapshot (snap_download_damaged). */
/* ?as=gzip: the stored file as the body itself (application/gzip, no
 * Content-Encoding), for a client that cannot ask for gzip without having
 * it decoded: a browser's fetch, which then reads it through
 * DecompressionStream and can hash what ETag names. 1, 0 without, -1
 * having answered 400. */
static int dl_as_file(struct http_req *r)
{
    char v[16];
    long l = http_query_in(r->query, r->query_len, "as", v, sizeof v);
    if (l == -1) return 0;
    if (l >= 0 && !strcmp(v, "gzip")) return 1;
    http_send_error(r, 400, "invalid_parameter", NULL, "as must be gzip (the stored file as the body)");
    return -1;
}

/* What the stream checks as it sends the file (size, sha256), and what it
 * needs to mark the snapshot corrupt when the file fails them. */
static struct filestream_check dl_check(struct read_job *rj, struct http_req *r, const struct snap_row *row)
{
    struct filestream_check chk = {.size = row->size_bytes, .damaged = snap_download_damaged};
    snprintf(chk.sha256, sizeof chk.sha256, "%s", row->sha256);
    struct snap_dl_check *d = xcalloc(1, sizeof *d);
    snprintf(d->space, sizeof d->space, "%s", rj->space);
    snprintf(d->id, sizeof d->id, "%s", row->id);
    snprintf(d->actor, sizeof d->actor, "%s", api_actor(r));
    snprintf(d->remote, sizeof d->remote, "%s", r->client);
    chk.arg = d;
    return chk;
}

static void dl_send(struct read_job *rj, struct http_req *r, const struct snap_row *row, int fd, bool as_file)
{
    http_add_header(r, "ETag", "\"%s\"", row->sha256);
    http_add_header(r, "Vary", "Accept-Encoding");
    struct filestream_check chk = dl_check(rj, r, row);
    if (as_file) {
        http_add_header(r, "Content-Disposition", "attachment; filename=\"%s-%s.ndjson.gz\"", rj->space, row->id);
        filestream_start(r, fd, 200, "application/gzip", 0, (int64_t)row->size_bytes, false, &chk);
        return;
    }
    bool gz = r->accept_gzip;
    /* the name of what the client ends up with: with Content-Encoding: gzip
     * it decodes the stored file (curl --compressed, browsers, fetch), so
     * both representations are NDJSON. Import takes either file. */
    http_add_header(r, "Content-Disposition", "attachment; filename=\"%s-%s.ndjson\"", rj->space, row->id);
    if (gz) http_add_header(r, "Content-Encoding", "gzip");
    filestream_start(r, fd, 200, "application/x-ndjson", 0, gz ? (int64_t)row->size_bytes : -1, !gz, &chk);
}

static void dl_start(struct read_job *rj, struct http_req *r)
{
    struct snap_row *row = rj->arg;
    if (row_refused(r, rj, row, "")) return;
    char msg[300];
    if (!strcmp(row->integrity, "corrupt")) {
        snap_corrupt_msg(msg, sizeof msg, row->integrity_error);
        http_send_error(r, 422, "snapshot_corrupt", NULL,
                        "%s; it is not served (POST .../snapshots/%s/verify once the file is repaired)", msg, row->id);
        return;
    }
    int as_file = dl_as_file(r);
    if (as_file < 0) return;
    size_t il;
    const char *inm = http_header(r, "If-None-Match", &il);
    if (inm && etag_list_match(inm, il, row->sha256, true)) {
        http_add_header(r, "ETag", "\"%s\"", row->sha256);
        http_add_header(r, "Vary", "Accept-Encoding");
        http_send_empty(r, 304);
        return;
    }
    char path[1200];
    snap_file(r->srv->cfg->data_dir, row->id, false, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);    /* a single open(2); the reads go to the pool */
    if (fd < 0) {
        int e = errno;
        snap_log_file(LOG_ERROR, "snapshot_file_unreadable", rj->space, row->id, path, strerror(e));
        if (e != ENOENT) {
            http_send_error(r, 500, "storage_error", NULL, "opening the snapshot file failed: %s", strerror(e));
            return;
        }
        snap_integrity_mark(r->srv, rj->space, row->id, INTEG_DOWNLOAD, false, SNAP_MISSING, api_actor(r), r->client);
        http_send_error(r, 422, "snapshot_corrupt", NULL, "%s; nothing can be sent", SNAP_MISSING);
        return;
    }
    dl_send(rj, r, row, fd, as_file == 1);
}

void api_snapshot_download(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    read_submit(r, snap_read_job(r, sp), row_work, dl_start);
}

/* ---- export ------------------------------------------------------------------ */

/* format=json|csv (json when absent), collection=c (optional). 0, or -1
 * having answered 400. */
static int export_query(struct http_req *r, enum export_format *fmt, char *coll, size_t cap)
{
    char v[80];
    long l = http_query_in(r->query, r->query_len, "format", v, sizeof v);
    *fmt = EXPORT_JSON;
    if (l >= 0 && !strcmp(v, "csv")) *fmt = EXPORT_CSV;
    else if (l != -1 && (l < 0 || strcmp(v, "json"))) {
        http_send_error(r, 400, "invalid_parameter", NULL, "format must be json or csv");
        return -1;
    }
    coll[0] = '\0';
    l = http_query_in(r->query, r->query_len, "collection", coll, cap);
    if (l != -1 && (l <= 0 || !name_collection_valid(coll, (size_t)l))) {
        http_send_error(r, 400, "invalid_parameter", NULL, "collection must be a collection name");
        return -1;
    }
    if (l == -1) coll[0] = '\0';
    return 0;
}

/* the same refusals as a download's, then the stream (svc/export.c) */
static void export_row_loaded(struct read_job *rj, struct http_req *r)
{
    struct snap_row *row = rj->arg;
    if (row_refused(r, rj, row, "")) return;
    if (!strcmp(row->integrity, "corrupt")) {
        char msg[300];
        snap_corrupt_msg(msg, sizeof msg, row->integrity_error);
        http_send_error(r, 422, "snapshot_corrupt", NULL,
                        "%s; it is not served (POST .../snapshots/%s/verify once the file is repaired)", msg, row->id);
        return;
    }
    enum export_format fmt;
    char coll[80], path[1200];
    if (export_query(r, &fmt, coll, sizeof coll) < 0) return;
    snap_file(r->srv->cfg->data_dir, row->id, false, path, sizeof path);
    struct export_params p = {.space = rj->space, .id = row->id, .path = path, .sha256 = row->sha256,
                              .collection = coll, .format = fmt, .gzip = r->accept_gzip, .actor = api_actor(r),
                              .remote = r->client};
    export_start(r, &p);
}

void api_snapshot_export(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    enum export_format fmt;
    char coll[80];
    if (export_query(r, &fmt, coll, sizeof coll) < 0) return;
    read_submit(r, snap_read_job(r, sp), row_work, export_row_loaded);
}

/* ---- preview and dry run ------------------------------------------------------ */

static void preview_work(sqlite3 *db, struct read_job *rj)
{
    struct snap_preview *pa = rj->arg;
    snap_preview_run(db, pa, &rj->out);
    if (err_failed(&pa->err)) read_fail(rj, pa->err.status, pa->err.code, "%s", pa->err.msg);
}

static void preview_done(struct read_job *rj, struct http_req *r)
{
    struct snap_preview *pa = rj->arg;
    if (!pa->damaged) {
        http_send_json(r, 200, &rj->out);
        return;
    }
    char msg[300];
    snap_preview_damaged(r->srv, rj->space, pa, api_actor(r), r->client);
    snap_corrupt_msg(msg, sizeof msg, pa->why);
    http_send_error(r, 422, "snapshot_corrupt", NULL, "%s", msg);
}

static void dry_run_done(struct read_job *rj, struct http_req *r)
{
    struct snap_preview *pa = rj->arg;
    if (pa->damaged)
        preview_done(rj, r);         /* marks the snapshot and answers 422 */
    else if (pa->missing_msg[0])
        http_send_error(r, 422, "missing_blob", pa->missing,
                        "%s; a restore would be refused (upload those blobs to this space first)", pa->missing_msg);
    else
        http_send_json(r, 200, &rj->out);
}

static struct read_job *preview_job(struct http_req *r, struct space *sp, bool dry_run)
{
    struct read_job *rj = snap_read_job(r, sp);
    struct snap_preview *pa = xcalloc(1, sizeof *pa);
    pa->space_id = sp->st.id;
    snprintf(pa->id, sizeof pa->id, "%s", r->match.params.id);
    snprintf(pa->data_dir, sizeof pa->data_dir, "%s", r->srv->cfg->data_dir);
    pa->dry_run = dry_run;
    rj->arg = pa;
    return rj;
}

void api_snapshot_preview(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    read_submit(r, preview_job(r, sp, false), preview_work, preview_done);
}

/* ---- restore -------------------------------------------------------------------- */

static void restore_row_loaded(struct read_job *rj, struct http_req *r)
{
    struct snap_row *row = rj->arg;
    struct space *sp = spaces_get(r->srv->spaces, rj->space);
    if (row_refused(r, rj, row, "")) return;
    if (!strcmp(row->integrity, "corrupt")) {
        char msg[300];
        snap_corrupt_msg(msg, sizeof msg, row->integrity_error);
        http_send_error(r, 422, "snapshot_corrupt", NULL,
                        "%s; nothing was changed (POST .../snapshots/%s/verify once the file is repaired)", msg,
                        row->id);
        return;
    }
    if (!sp || sp->busy) {
        http_send_error(r, 409, "snapshot_in_progress", NULL, "a snapshot or restore of this space is running");
        return;
    }
    sp->busy = true;
    struct snap_restore_req q = {.space = rj->space, .id = rj->id, .actor = api_actor(r), .remote = client_of(r),
                                 .sha256 = row->sha256, .space_id = rj->space_id};
    snap_restore_start(r->srv, r, &q, snapshots_answer);
}

/* {"confirm":"<id>","dry_run"?}: 0 with *dry, or -1 after answering 400 */
static int restore_body(struct http_req *r, bool *dry)
{
    /* no body (or only whitespace) is a missing confirm, not broken JSON */
    size_t k = 0;
    while (k < r->body.len && (r->body.data[k] == ' ' || r->body.data[k] == '\t' || r->body.data[k] == '\r' ||
                               r->body.data[k] == '\n'))
        k++;
    if (k == r->body.len) {
        http_send_error(r, 400, "confirm_mismatch", NULL,
                        "send {\"confirm\":\"%s\"} to restore this snapshot (the body was empty)", r->match.params.id);
        return -1;
    }
    json_t *v = api_body_members(r, restore_members);
    if (!v) return -1;
    const char *confirm = json_name(json_object_get(v, "confirm"));
    *dry = json_is_true(json_object_get(v, "dry_run"));
    if (!confirm || strcmp(confirm, r->match.params.id) != 0) {
        json_decref(v);
        http_send_error(r, 400, "confirm_mismatch", NULL, "\"confirm\" must repeat the snapshot id");
        return -1;
    }
    json_decref(v);
    return 0;
}

void api_snapshot_restore(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    bool dry;
    if (restore_body(r, &dry) < 0) return;
    if (dry) {
        read_submit(r, preview_job(r, sp, true), preview_work, dry_run_done);
        return;
    }
    if (sp->busy) {
        http_send_error(r, 409, "snapshot_in_progress", NULL, "a snapshot or restore of '%s' is running", sp->st.name);
        return;
    }
    read_submit(r, snap_read_job(r, sp), row_work, restore_row_loaded);
}

/* ---- import and verify -------------------------------------------------------- */

/* {"remote": KEY}: the body is small JSON, collected here (the route
 * streams bodies for file uploads) */
#define REMOTE_BODY_MAX 4096
static const char *const import_members[] = {"remote", NULL};

static int remote_body(struct http_req *r, const char *data, size_t len)
{
    if (r->body.len + len > REMOTE_BODY_MAX) return 0;   /* judged at the end */
    buf_append(&r->body, data, len);
    return 0;
}

static void remote_body_end(struct http_req *r)
{
    const char *space = r->ctx;
    r->ctx = NULL;
    if (r->body_seen > REMOTE_BODY_MAX) {
        snap_set_busy(r->srv, space, false);
        http_send_error(r, 413, "body_too_large", NULL, "a JSON import request is at most %d bytes", REMOTE_BODY_MAX);
        return;
    }
    json_t *b = api_body_members(r, import_members);
    const char *key = b ? json_string_value(json_object_get(b, "remote")) : NULL;
    if (!b || !key) {
        snap_set_busy(r->srv, space, false);
        if (b) http_send_error(r, 400, "invalid_parameter", NULL,
                               "send {\"remote\": KEY} (a key from GET /api/v1/remote/snapshots), or the snapshot file itself");
        json_decref(b);
        return;
    }
    struct remote_import_req q = {.space = space, .key = key, .actor = api_actor(r), .remote = client_of(r)};
    remote_import_start(r->srv, r, &q, snapshots_answer);
    json_decref(b);
}

void api_snapshot_import(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    if (sp->busy) {
        http_send_error(r, 409, "snapshot_in_progress", NULL, "a snapshot or restore of '%s' is running", sp->st.name);
        return;
    }
    sp->busy = true;
    size_t ctl = 0;
    const char *ct = http_header(r, "content-type", &ctl);
    if (ct && ctl >= 16 && !strncasecmp(ct, "application/json", 16)) {
        r->ctx = sp->st.name;        /* the registry's name outlives the request while busy */
        r->on_body = remote_body;
        r->on_body_end = remote_body_end;
        return;
    }
    struct snap_import_req q = {.space = sp->st.name, .actor = api_actor(r), .remote = client_of(r)};
    snap_import_start(r->srv, r, &q, snapshots_answer);
}

/* POST .../snapshots/{id}/remote/retry */
void api_snapshot_remote_retry(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    if (!remote_target(r->srv)) {
        http_send_error(r, 409, "remote_not_configured", NULL, "no remote is configured (--remote)");
        return;
    }
    struct remote_retry_req q = {.space = sp->st.name, .id = r->match.params.id, .actor = api_actor(r), .remote = client_of(r)};
    remote_retry(r->srv, r, &q, snapshots_answer);
}

/* GET /api/v1/remote/snapshots?space=&instance= */
static void remote_listed(void *arg, const struct err *e, struct buf *json)
{
    struct http_req *r = arg;
    if (r->conn) {
        if (e) http_send_error(r, e->status, e->code, NULL, "%s", e->msg);
        else http_send_json(r, 200, json);
    }
    http_req_unref(r);
}

void api_remote_list(struct http_req *r)
{
    char space[80] = "", inst[80] = "";
    if (api_query(r, "space", space, sizeof space) == -2 || api_query(r, "instance", inst, sizeof inst) == -2) return;
    if (!remote_target(r->srv)) {
        http_send_error(r, 409, "remote_not_configured", NULL, "no remote is configured (--remote)");
        return;
    }
    struct remote_list_req q = {.space = space, .instance = inst};
    http_req_ref(r);
    if (remote_list(r->srv, &q, remote_listed, r) < 0) {
        http_req_unref(r);
        http_send_error(r, 502, "remote_error", NULL, "the listing could not be started");
    }
}

static void vcheck_row_loaded(struct read_job *rj, struct http_req *r)
{
    struct snap_row *row = rj->arg;
    if (row_refused(r, rj, row, ": there is no file to verify")) return;
    struct snap_verify_req q = {.space = rj->space, .id = row->id, .actor = api_actor(r), .remote = r->client,
                                .sha256 = row->sha256};
    snap_verify_start(r->srv, r, &q, snapshots_answer);
}

void api_snapshot_verify(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    read_submit(r, snap_read_job(r, sp), row_work, vcheck_row_loaded);
}
