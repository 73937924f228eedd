/* snapshot.c - see snapshot.h.
 *
 * Life of a snapshot (create):
 *   loop     api_snapshot_create: space not busy (409), rate limit (429),
 *            mark busy, queue a writer op that inserts the row (running)
 *   writer   snap_insert_apply: row + audit in one transaction
 *   pool     snap_work: read transaction, counts, rows -> gzip -> tmp file,
 *            sha256 as written, fsync, rename, fsync dir
 *   loop     snap_after: queue the op that marks the row completed/failed
 *   writer   snap_finish_apply
 *   loop     snap_finished: clear busy, last_snapshot, SSE, answer, retention
 * Restore runs verify (pool) -> pre_restore snapshot (as above) -> the
 * journal (writer: from now on, each write to the space notes the entity's
 * state before it) -> plan (pool): one read transaction at version V merges
 * the snapshot file with the live entities in key order (both sorted by
 * collection, id, so memory stays flat) and writes the changes it finds to a
 * plan file -> the restore op on the writer thread applies the plan, then
 * puts back the entities written after V that the plan has no record of (at
 * V they were as in the snapshot: the journal has that state). The write
 * lock is held for the changes only, not for the whole comparison. Without a
 * plan, or past the journal's cap, the whole merge runs inside the
 * transaction. Either way the space's entities change in one transaction.
 *
 * Integrity (see "integrity" below): every read of a file checks it -- a
 * download as it streams (size, gzip, sha256; one that fails is cut off,
 * filestream.h), a preview or restore by its merge and full check, the
 * verify route and the background check (--snapshot-verify-every) in full
 * -- and what it finds is recorded on the row (writer op): 'corrupt'
 * snapshots are refused with 422 until a full check passes again.
 */
#include "svc/snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "api/api.h"
#include "api/util.h"
#include "svc/auth.h"
#include "core/canon.h"
#include "net/http.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "core/pgzip.h"
#include "core/counters.h"
#include "svc/blobs.h"
#include "net/filestream.h"
#include "net/server.h"
#include "store/spaces.h"
#include "svc/sse.h"
#include "store/store.h"

#define CHUNK (64 * 1024)
#define SNAP_MISSING "the snapshot file is missing"
#define SNAP_COLS \
    "id, space, kind, status, server_version, created_at, completed_at, entity_counts, entity_total," \
    " raw_bytes, size_bytes, sha256, level, created_by, note, error, blobs, integrity, integrity_error," \
    " integrity_checked_at"

static void snap_file(const char *data_dir, const char *id, bool tmp, char *out, size_t cap)
{
    snprintf(out, cap, "%s/snapshots/%s.ndjson.gz%s", data_dir, id, tmp ? ".tmp" : "");
}


/* ---- metadata ---------------------------------------------------------- */

static void meta_json(struct buf *b, sqlite3_stmt *q)
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
    buf_putc(b, '}');
#undef TXT
}

/* One snapshot's row as the loop needs it. */
struct snap_row {
    bool found;
    char id[27], kind[16], status[16], sha256[65];
    char integrity[16], integrity_error[200];
    uint64_t server_version, size_bytes, entity_total;
    struct buf meta;                 /* JSON */
};

static int row_load(sqlite3 *db, int64_t space_id, const char *id, struct snap_row *row)
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
        meta_json(&row->meta, q);
        const unsigned char *ig = sqlite3_column_text(q, 17), *ie = sqlite3_column_text(q, 18);
        snprintf(row->integrity, sizeof row->integrity, "%s", ig ? (const char *)ig : "unchecked");
        snprintf(row->integrity_error, sizeof row->integrity_error, "%s", ie ? (const char *)ie : "");
    }
    sqlite3_finalize(q);
    return 0;
}

/* ---- busy spaces (loop) --------------------------------------------------- */

static void set_busy(struct server *srv, const char *space, bool busy)
{
    struct space *sp = spaces_get(srv->spaces, space);
    if (sp) sp->busy = busy;
}

/* ---- the engine (threadpool) ------------------------------------------- */

struct snap_job;
typedef void (*snap_then_fn)(struct snap_job *sj, struct http_req *r);

struct blob_set {
    char (*v)[65];
    size_t n, cap;
};

struct snap_job {
    struct job job;
    struct server *srv;
    /* in */
    char id[27], space[64], kind[16], created_by[32], remote[56];
    char *note;
    int64_t space_id;
    int level, threads;
    uint64_t started_ms;
    char data_dir[1024];
    bool respond;                    /* answer the request with the metadata */
    snap_then_fn then;               /* continue (restore) instead of answering */
    void *then_arg;
    /* progress, written by the worker */
    _Atomic uint64_t done, total, bytes;
    uv_async_t progress;
    int last_decile;
    /* out */
    int err;
    char msg[200];
    uint64_t server_version, entity_total, raw_bytes, size_bytes;
    char sha256[65];
    struct buf counts;               /* {"issues":3,...} */
    struct blob_set blobs;           /* blobs the entities reference */
    struct buf blobs_json;
};

/* The blobs a body names in its "_blobs" (valid hashes only). */
static void blob_set_add(struct blob_set *s, json_t *body)
{
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(body, "_blobs"), i, h) {
        const char *x = json_name(h);
        if (!x || !name_sha256_valid(x, strlen(x))) continue;
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 64;
            s->v = xrealloc(s->v, s->cap * sizeof *s->v);
        }
        memcpy(s->v[s->n++], x, 65);
    }
}

static void collect_blobs(struct snap_job *sj, const char *body, size_t len)
{
    if (!body || !memmem(body, len, "\"_blobs\":", 9)) return;
    json_error_t je;
    json_t *v = json_loadb(body, len, JSON_ALLOW_NUL, &je);      /* values may hold \u0000 */
    if (v) blob_set_add(&sj->blobs, v);
    json_decref(v);
}

static int cmp65(const void *a, const void *b) { return memcmp(a, b, 64); }

/* Sorted, without repeats, as a JSON array; the set is freed. */
static void blob_set_finish(struct blob_set *s, struct buf *out)
{
    if (s->n) qsort(s->v, s->n, sizeof *s->v, cmp65);
    buf_putc(out, '[');
    for (size_t i = 0, k = 0; i < s->n; i++) {
        if (i && !memcmp(s->v[i], s->v[i - 1], 64)) continue;
        if (k++) buf_putc(out, ',');
        json_str(out, s->v[i], 64);
    }
    buf_putc(out, ']');
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* Test hook: SNAPSYNC_TEST_SNAPSHOT_FAIL_AFTER=N makes every snapshot file
 * write fail with ENOSPC once N bytes are written (disk-full simulation). */
static uint64_t fail_after(void)
{
    const char *v = getenv("SNAPSYNC_TEST_SNAPSHOT_FAIL_AFTER");
    uint64_t n;
    if (!v || parse_u64(v, strlen(v), UINT64_MAX, &n) < 0) return 0;
    return n;
}

struct gz_out {
    int fd;
    z_stream zs;
    EVP_MD_CTX *md;
    unsigned char out[CHUNK];
    uint64_t written, limit;
    int err;
};

static int gz_emit(struct gz_out *g, size_t n)
{
    if (g->limit && g->written + n > g->limit) {
        g->err = ENOSPC;
        return -1;
    }
    if ((g->err = write_full(g->fd, g->out, n)) != 0) return -1;
    if (g->md) EVP_DigestUpdate(g->md, g->out, n);
    g->written += n;
    return 0;
}

static int gz_sink(void *arg, const unsigned char *data, size_t len)
{
    struct gz_out *g = arg;
    if (g->limit && g->written + len > g->limit) return ENOSPC;
    int e = write_full(g->fd, data, len);
    if (e) return e;
    EVP_DigestUpdate(g->md, data, len);
    g->written += len;
    return 0;
}

static int gz_put(struct gz_out *g, const char *data, size_t len, int flush)
{
    g->zs.next_in = (Bytef *)data;
    g->zs.avail_in = (uInt)len;
    do {
        g->zs.next_out = g->out;
        g->zs.avail_out = CHUNK;
        int rc = deflate(&g->zs, flush);
        if (rc == Z_STREAM_ERROR) { g->err = EIO; return -1; }
        size_t have = CHUNK - g->zs.avail_out;
        if (have && gz_emit(g, have) < 0) return -1;
    } while (g->zs.avail_out == 0 || (flush == Z_FINISH && g->zs.avail_in > 0));
    return 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
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

static void snap_work(struct job *j)
{
    struct snap_job *sj = container_of(j, struct snap_job, job);
    char tmp[1200], path[1200], dir[1100];
    snap_file(sj->data_dir, sj->id, true, tmp, sizeof tmp);
    snap_file(sj->data_dir, sj->id, false, path, sizeof path);
    snprintf(dir, sizeof dir, "%s/snapshots", sj->data_dir);
    mkdir(dir, 0700);
    struct gz_out g;
    struct pgz *pz = NULL;
    memset(&g, 0, sizeof g);
    g.fd = -1;
    g.limit = fail_after();
    struct buf line;
    buf_init(&line);
    sqlite3_stmt *q = NULL;
    sqlite3 *db = store_reader_get(sj->srv->store);
    if (!db) { fail_job(sj, "no database connection"); return; }
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);

    /* the version and counts, in the same read transaction as the rows */
    if (sqlite3_prepare_v2(db, "SELECT version, uid FROM spaces WHERE id = ?", -1, &q, NULL) != SQLITE_OK) goto sqlfail;
    sqlite3_bind_int64(q, 1, sj->space_id);
    if (sqlite3_step(q) != SQLITE_ROW) { fail_job(sj, "the space is gone"); goto out; }
    sj->server_version = (uint64_t)sqlite3_column_int64(q, 0);
    char uid[27];
    snprintf(uid, sizeof uid, "%s", (const char *)sqlite3_column_text(q, 1));
    sqlite3_finalize(q);
    q = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT collection, count(*) FROM entities WHERE space_id = ? AND deleted = 0"
                           " GROUP BY collection ORDER BY collection",
                           -1, &q, NULL) != SQLITE_OK)
        goto sqlfail;
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
    q = NULL;
    atomic_store(&sj->total, sj->entity_total);

    g.fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    /* the message is the row's error, shown to clients: no path */
    if (g.fd < 0) { fail_job(sj, "cannot create the snapshot file: %s", strerror(errno)); goto out; }
    g.md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(g.md, sha256_md(), NULL);
    if (sj->threads > 1 && sj->level > 0) {
        pz = pgz_new(sj->level, sj->threads, gz_sink, &g);
    } else if (deflateInit2(&g.zs, sj->level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        fail_job(sj, "zlib init failed");
        goto out;
    }

    /* header line */
    buf_puts(&line, "{\"format\":\"" SNAP_FORMAT "\"");
    json_kv_str(&line, "space", sj->space);
    json_kv_str(&line, "space_uid", uid);
    json_kv_u64(&line, "server_version", sj->server_version);
    json_kv_time(&line, "created_at", now_ms_wall());
    json_kv_str(&line, "instance_id", store_instance_id(sj->srv->store));
    buf_puts(&line, ",\"entity_counts\":");
    buf_append(&line, sj->counts.data, sj->counts.len);
    json_kv_u64(&line, "entity_total", sj->entity_total);
    json_kv_str(&line, "snapshot", sj->id);
    buf_puts(&line, "}\n");

    if (sqlite3_prepare_v2(db,
                           "SELECT collection, id, rev, version, created_at, updated_at, body FROM entities"
                           " WHERE space_id = ? AND deleted = 0 ORDER BY collection, id",
                           -1, &q, NULL) != SQLITE_OK)
        goto sqlfail;
    sqlite3_bind_int64(q, 1, sj->space_id);
    uint64_t n = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        entity_json(&line, (const char *)sqlite3_column_text(q, 0), (const char *)sqlite3_column_text(q, 1),
                    (const char *)sqlite3_column_text(q, 2), (uint64_t)sqlite3_column_int64(q, 3),
                    (uint64_t)sqlite3_column_int64(q, 4), (uint64_t)sqlite3_column_int64(q, 5), false,
                    (const char *)sqlite3_column_text(q, 6), (size_t)sqlite3_column_bytes(q, 6));
        buf_putc(&line, '\n');
        collect_blobs(sj, (const char *)sqlite3_column_text(q, 6), (size_t)sqlite3_column_bytes(q, 6));
        if (line.len >= CHUNK) {
            sj->raw_bytes += line.len;
            if (pz ? (g.err = pgz_write(pz, line.data, line.len)) != 0 : gz_put(&g, line.data, line.len, Z_NO_FLUSH) < 0)
                goto ioerr;
            buf_reset(&line);
        }
        if (++n % 512 == 0) {
            atomic_store(&sj->done, n);
            atomic_store(&sj->bytes, g.written);
            uv_async_send(&sj->progress);
            if (job_pool_stopping(&sj->srv->jobs)) { fail_job(sj, "interrupted by shutdown"); goto out; }
        }
    }
    if (rc != SQLITE_DONE) goto sqlfail;
    sj->raw_bytes += line.len;
    if (pz) {
        g.err = pgz_write(pz, line.data ? line.data : "", line.len);
        if (!g.err) g.err = pgz_finish(pz);
        else pgz_abort(pz);
        pz = NULL;
        if (g.err) goto ioerr;
    } else if (gz_put(&g, line.data ? line.data : "", line.len, Z_FINISH) < 0) {
        goto ioerr;
    }
    atomic_store(&sj->done, n);
    if (n != sj->entity_total) { fail_job(sj, "row count changed during the read"); goto out; }
    blob_set_finish(&sj->blobs, &sj->blobs_json);
    unsigned char md[32];
    unsigned int mdl = 32;
    EVP_DigestFinal_ex(g.md, md, &mdl);
    hex_encode(sj->sha256, md, 32);
    sj->size_bytes = g.written;
    atomic_store(&sj->bytes, g.written);
    if (fsync(g.fd) < 0) { g.err = errno; goto ioerr; }
    if (close(g.fd) < 0) { g.fd = -1; g.err = errno; goto ioerr; }
    g.fd = -1;
    if (rename(tmp, path) < 0) { g.err = errno; goto ioerr; }
    fsync_dir(dir);
    goto out;
ioerr:
    fail_job(sj, "writing the snapshot file failed: %s", strerror(g.err ? g.err : EIO));
    goto out;
sqlfail:
    fail_job(sj, "reading the space failed: %s", sqlite3_errmsg(db));
out:
    sqlite3_finalize(q);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    store_reader_put(sj->srv->store, db);
    if (pz) pgz_abort(pz);
    if (g.fd >= 0) close(g.fd);
    if (g.zs.state) deflateEnd(&g.zs);
    if (g.md) EVP_MD_CTX_free(g.md);
    buf_free(&line);
    if (sj->err) unlink(tmp);
}

/* ---- loop side: progress events, rows, completion ----------------------- */

static void publish_snapshot(struct snap_job *sj, const char *status)
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
    if (sj->err) json_kv_str(&b, "error", sj->msg);
    buf_putc(&b, '}');
    sse_publish(sj->srv, SSE_SNAPSHOT, sj->space, b.data, b.len);
    buf_free(&b);
}

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
    if (sqlite3_step(st) == SQLITE_ROW) meta_json(&f->meta, st);
    sqlite3_reset(st);
    return 0;
}

static void retention(struct server *srv, const char *space, int64_t space_id, const char *kind);

static void snap_finished(struct wop *op, struct http_req *r)
{
    struct finish_op *f = container_of(op, struct finish_op, op);
    struct snap_job *sj = f->sj;
    struct server *srv = sj->srv;
    bool ok = !sj->err && !op->status;
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
    } else {
        log_error("snapshot_failed", "\"space\":\"%s\",\"snapshot\":\"%s\",\"kind\":\"%s\",\"error\":\"%s\"", sj->space,
                  sj->id, sj->kind, sj->err ? sj->msg : op->msg);
    }
    if (sj->then) {
        sj->then(sj, r);             /* restore goes on (or fails) holding busy */
    } else {
        if (r && sj->respond) {
            if (op->status) api_send_wop_error(r, op);
            else if (sj->err) http_send_error(r, 500, "snapshot_failed", NULL, "%s", sj->msg);
            else {
                http_add_header(r, "Location", "/api/v1/spaces/%s/snapshots/%s", sj->space, sj->id);
                http_send_json(r, 201, &f->meta);
            }
        }
    }
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
    struct finish_op *f = xcalloc(1, sizeof *f);
    f->sj = sj;
    on_progress(&sj->progress);
    /* the file is done; only its row's update is left, queued ahead of
     * anything a new request could queue: the space is free again (a GET
     * that sees the row completed must not meet a 409) */
    if (!sj->then) set_busy(sj->srv, sj->space, false);
    if (writer_submit(sj->srv->writer, &f->op, r, snap_finish_apply, snap_finished) < 0) {
        /* the queue is full: try the bookkeeping again without a client */
        f->op.status = 503;
        snprintf(f->op.code, sizeof f->op.code, "overloaded");
        snprintf(f->op.msg, sizeof f->op.msg, "the write queue is full");
        snap_finished(&f->op, r);
    }
}

struct insert_op {
    struct wop op;
    struct snap_job *sj;
    struct buf meta;
};

static int snap_insert_apply(struct wtx *tx, struct wop *op)
{
    struct insert_op *ins = container_of(op, struct insert_op, op);
    struct snap_job *sj = ins->sj;
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
    sj->space_id = sp->id;
    char meta[48];
    snprintf(meta, sizeof meta, "{\"kind\":\"%s\"}", sj->kind);
    if (wtx_audit(tx, sj->created_by, "snapshot.create", sj->space, sj->id, meta, sj->remote) < 0)
        return wop_fail(op, 500, "storage_error", "audit failed");
    st = wtx_stmt(tx, "SELECT " SNAP_COLS " FROM snapshots WHERE id = ?");
    sqlite3_bind_text(st, 1, sj->id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) meta_json(&ins->meta, st);
    sqlite3_reset(st);
    return 0;
}

static void snap_inserted(struct wop *op, struct http_req *r)
{
    struct insert_op *ins = container_of(op, struct insert_op, op);
    struct snap_job *sj = ins->sj;
    struct server *srv = sj->srv;
    if (op->status) {
        if (sj->then) sj->then(sj, r);       /* the restore learns the pre-restore snapshot failed */
        else set_busy(srv, sj->space, false);
        if (r && !sj->then) api_send_wop_error(r, op);
        buf_free(&ins->meta);
        free(ins);
        snap_job_free(sj);
        return;
    }
    publish_snapshot(sj, "running");
    if (r && !sj->respond && !sj->then) {
        /* Prefer: respond-async */
        http_add_header(r, "Location", "/api/v1/spaces/%s/snapshots/%s", sj->space, sj->id);
        http_add_header(r, "Preference-Applied", "respond-async");
        http_send_json(r, 202, &ins->meta);
    }
    buf_free(&ins->meta);
    free(ins);
    uv_async_init(srv->loop, &sj->progress, on_progress);
    job_submit(&srv->jobs, &sj->job, (sj->respond || sj->then) ? r : NULL, snap_work, snap_after);
}

/* Starts a snapshot of space (busy must already be set by the caller). */
static int snap_start(struct server *srv, struct http_req *r, const char *space, const char *kind, const char *actor,
                      const char *note, bool respond, snap_then_fn then, void *then_arg)
{
    struct snap_job *sj = xcalloc(1, sizeof *sj);
    sj->srv = srv;
    ulid_make(sj->id, now_ms_wall());
    snprintf(sj->space, sizeof sj->space, "%s", space);
    snprintf(sj->kind, sizeof sj->kind, "%s", kind);
    snprintf(sj->created_by, sizeof sj->created_by, "%s", actor);
    if (r && r->conn) snprintf(sj->remote, sizeof sj->remote, "%s", r->client);
    snprintf(sj->data_dir, sizeof sj->data_dir, "%s", srv->cfg->data_dir);
    sj->note = note ? xstrdup(note) : NULL;
    sj->started_ms = now_ms_wall();
    sj->level = (int)srv->cfg->snapshot_level;
    sj->threads = (int)srv->cfg->snapshot_threads;
    sj->respond = respond;
    sj->then = then;
    sj->then_arg = then_arg;
    sj->last_decile = 0;
    struct insert_op *ins = xcalloc(1, sizeof *ins);
    ins->sj = sj;
    if (writer_submit(srv->writer, &ins->op, r, snap_insert_apply, snap_inserted) < 0) {
        free(ins);
        snap_job_free(sj);
        return -1;
    }
    return 0;
}

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

enum integ_src { INTEG_DOWNLOAD, INTEG_PREVIEW, INTEG_RESTORE, INTEG_VERIFY, INTEG_BACKGROUND };
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
    /* out (writer) */
    char prev[16], kind[16];
    struct buf meta;                 /* the row after the update */
};

/* A log line about a snapshot's file: the path is for the operator, never
 * for clients. */
static void log_file(enum log_level lvl, const char *msg, const char *space, const char *id, const char *path,
                     const char *error)
{
    struct buf b;
    buf_init(&b);
    json_kv_str(&b, "space", space);
    json_kv_str(&b, "snapshot", id);
    json_kv_str(&b, "file", path);
    json_kv_str(&b, "error", error);
    log_raw(lvl, msg, b.data, b.len);
    buf_free(&b);
}

/* Does a mark going from prev to ok/corrupt need telling (log, metrics,
 * event, audit)? A snapshot becoming corrupt, or corrupt no more. */
static bool integ_noteworthy(const char *prev, bool ok)
{
    return ok ? !strcmp(prev, "corrupt") : strcmp(prev, "corrupt") != 0;
}

/* The message of a 422 for a snapshot whose file is bad. */
static void corrupt_msg(char *out, size_t cap, const char *why)
{
    if (!strcmp(why, SNAP_MISSING)) snprintf(out, cap, "%s", why);
    else snprintf(out, cap, "the snapshot file is damaged: %s", why);
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
    if (sqlite3_step(st) == SQLITE_ROW) meta_json(&io->meta, st);
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
    if (!op->status && integ_noteworthy(io->prev, io->ok)) integ_changed(io);
    if (io->then) io->then(io, r);
    buf_free(&io->meta);
    free(io);
}

/* Records what a read of snapshot `id` found (loop thread). r: the request
 * to answer through then(), or NULL. Returns 0, or -1 when the write queue
 * is full (nothing recorded; then() is not called). */
static int integ_mark(struct server *srv, struct http_req *r, const char *space, const char *id, enum integ_src src,
                      bool ok, const char *why, const char *actor, const char *remote, integ_then_fn then)
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
    if (writer_submit(srv->writer, &io->op, r, integ_apply, integ_done) < 0) {
        log_warn("snapshot_integrity_not_recorded", "\"snapshot\":\"%s\",\"reason\":\"the write queue is full\"", id);
        free(io);
        return -1;
    }
    return 0;
}

/* ---- API: create, list, get, delete ------------------------------------- */

static const char *const create_members[] = {"note", NULL};
static const char *const restore_members[] = {"confirm", "dry_run", NULL};

void api_snapshot_create(struct http_req *r)
{
    struct server *srv = r->srv;
    struct space *sp = api_space(r);
    if (!sp) return;
    char note[256] = "";
    if (r->body.len) {
        json_t *v = api_body_members(r, create_members);
        if (!v) return;
        json_t *n = json_object_get(v, "note");
        if (n && !json_is_null(n)) {
            if (!json_is_string(n) || json_string_length(n) > 255) {
                json_decref(v);
                http_send_error(r, 400, "invalid_note", NULL, "note must be a string of at most 255 bytes");
                return;
            }
            snprintf(note, sizeof note, "%s", json_name(n));
        }
        json_decref(v);
    }
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
    sp->busy = true;
    if (snap_start(srv, r, sp->st.name, "manual", api_actor(r), note[0] ? note : NULL, !async, NULL, NULL) < 0) {
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
    char sql[768];
    snprintf(sql, sizeof sql, "SELECT " SNAP_COLS " FROM snapshots WHERE space_id = ?1 AND id < ?2%s%s%s"
             " ORDER BY id DESC LIMIT ?3",
             a->kind[0] ? " AND kind = ?4" : "", a->status[0] ? " AND status = ?5" : "",
             a->integrity[0] ? " AND status = 'completed' AND integrity = ?6" : "");
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_int64(q, 1, rj->space_id);
    sqlite3_bind_text(q, 2, rj->cursor[0] ? rj->cursor : "~", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)rj->limit + 1);
    if (a->kind[0]) sqlite3_bind_text(q, 4, a->kind, -1, SQLITE_STATIC);
    if (a->status[0]) sqlite3_bind_text(q, 5, a->status, -1, SQLITE_STATIC);
    if (a->integrity[0]) sqlite3_bind_text(q, 6, a->integrity, -1, SQLITE_STATIC);
    buf_puts(&rj->out, "{\"snapshots\":[");
    uint64_t n = 0;
    char last[27] = "";
    bool more = false;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (n == rj->limit) { more = true; break; }
        if (n++) buf_putc(&rj->out, ',');
        snprintf(last, sizeof last, "%s", (const char *)sqlite3_column_text(q, 0));
        meta_json(&rj->out, q);
    }
    sqlite3_finalize(q);
    buf_puts(&rj->out, "],\"next_cursor\":");
    if (more) json_cstr(&rj->out, last);
    else buf_puts(&rj->out, "null");
    buf_putc(&rj->out, '}');
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
    long l = http_query(r, "kind", a->kind, sizeof a->kind);
    if (l == -2 || (l >= 0 && strcmp(a->kind, "manual") && strcmp(a->kind, "scheduled") && strcmp(a->kind, "pre_restore") &&
        strcmp(a->kind, "imported"))) {
        http_send_error(r, 400, "invalid_parameter", NULL, "kind is manual, scheduled, pre_restore or imported");
        goto fail;
    }
    if (l < 0) a->kind[0] = '\0';
    l = http_query(r, "status", a->status, sizeof a->status);
    if (l == -2 || (l >= 0 && strcmp(a->status, "pending") && strcmp(a->status, "running") && strcmp(a->status, "completed") &&
        strcmp(a->status, "failed"))) {
        http_send_error(r, 400, "invalid_parameter", NULL, "status is pending, running, completed or failed");
        goto fail;
    }
    if (l < 0) a->status[0] = '\0';
    l = http_query(r, "integrity", a->integrity, sizeof a->integrity);
    if (l >= 0 && strcmp(a->integrity, "unchecked") && strcmp(a->integrity, "ok") && strcmp(a->integrity, "corrupt")) {
        http_send_error(r, 400, "invalid_parameter", NULL, "integrity is unchecked, ok or corrupt");
        goto fail;
    }
    if (l < 0) a->integrity[0] = '\0';
    read_submit(r, rj, list_work, NULL);
    return;
fail:
    free(a);
    free(rj);
}

static void get_work(sqlite3 *db, struct read_job *rj)
{
    struct snap_row row;
    if (row_load(db, rj->space_id, rj->id, &row) < 0) {
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

/* -- delete -- */

struct delete_op {
    struct wop op;
    char id[27], space[64], actor[32], remote[56], data_dir[1024];
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
static void unlink_path_later(struct server *srv, const char *path)
{
    struct unlink_job *u = xcalloc(1, sizeof *u);
    snprintf(u->path, sizeof u->path, "%s", path);
    job_submit(&srv->jobs, &u->job, NULL, unlink_work, unlink_done);
}

static void unlink_later(struct server *srv, const char *id)
{
    char path[1200];
    snap_file(srv->cfg->data_dir, id, false, path, sizeof path);
    unlink_path_later(srv, path);
}

void snap_remove_file(struct server *srv, const char *id) { unlink_later(srv, id); }

static void delete_done(struct wop *op, struct http_req *r)
{
    struct delete_op *d = container_of(op, struct delete_op, op);
    if (!op->status) {
        struct server *srv = r ? r->srv : NULL;
        if (srv) {
            unlink_later(srv, d->id);
            struct space *sp = spaces_get(srv->spaces, d->space);
            if (sp && !strcmp(sp->last_snapshot, d->id)) {
                /* the newest one left, read in the delete's transaction */
                snprintf(sp->last_snapshot, sizeof sp->last_snapshot, "%s", d->next_last);
                sp->last_snapshot_version = d->next_last_version;
            }
        }
    }
    if (r) {
        if (op->status) api_send_wop_error(r, op);
        else http_send_empty(r, 204);
    }
    free(d);
}

void api_snapshot_delete(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct delete_op *d = xcalloc(1, sizeof *d);
    snprintf(d->id, sizeof d->id, "%s", r->match.params.id);
    snprintf(d->space, sizeof d->space, "%s", sp->st.name);
    snprintf(d->actor, sizeof d->actor, "%s", api_actor(r));
    if (r->conn) snprintf(d->remote, sizeof d->remote, "%s", r->client);
    d->space_id = sp->st.id;
    if (api_write(r, &d->op, delete_apply, delete_done) < 0) free(d);
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
    if (!op->status) unlink_later(d->srv, d->id);
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

/* What a download needs to mark the snapshot when its file fails the
 * stream's checks (owned by the stream, freed with free()). */
struct dl_check {
    char space[64], id[27], actor[32], remote[56];
};

/* loop: the download was aborted, the file is not what the row says */
static void dl_damaged(struct server *srv, void *arg, const char *why)
{
    struct dl_check *d = arg;
    char path[1200];
    snap_file(srv->cfg->data_dir, d->id, false, path, sizeof path);
    metrics_snapshot_download_abort(srv->metrics);
    log_file(LOG_ERROR, "snapshot_download_aborted", d->space, d->id, path, why);
    integ_mark(srv, NULL, d->space, d->id, INTEG_DOWNLOAD, false, why, d->actor, d->remote, NULL);
}

static void dl_start(struct read_job *rj, struct http_req *r)
{
    struct snap_row *row = rj->arg;
    if (!row->found) {
        http_send_error(r, 404, "not_found", NULL, "no snapshot %s in this space", rj->id);
        return;
    }
    if (strcmp(row->status, "completed") != 0) {
        http_send_error(r, 409, "snapshot_not_ready", NULL, "the snapshot is %s", row->status);
        return;
    }
    char msg[300];
    if (!strcmp(row->integrity, "corrupt")) {
        corrupt_msg(msg, sizeof msg, row->integrity_error);
        http_send_error(r, 422, "snapshot_corrupt", NULL,
                        "%s; it is not served (POST .../snapshots/%s/verify once the file is repaired)", msg, row->id);
        return;
    }
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
        log_file(LOG_ERROR, "snapshot_file_unreadable", rj->space, row->id, path, strerror(e));
        if (e != ENOENT) {
            http_send_error(r, 500, "storage_error", NULL, "opening the snapshot file failed: %s", strerror(e));
            return;
        }
        integ_mark(r->srv, NULL, rj->space, row->id, INTEG_DOWNLOAD, false, SNAP_MISSING, api_actor(r), r->client, NULL);
        http_send_error(r, 422, "snapshot_corrupt", NULL, "%s; nothing can be sent", SNAP_MISSING);
        return;
    }
    http_add_header(r, "ETag", "\"%s\"", row->sha256);
    http_add_header(r, "Vary", "Accept-Encoding");
    bool gz = r->accept_gzip;
    /* the name of what the client ends up with: with Content-Encoding: gzip
     * it decodes the stored file (curl --compressed, browsers, fetch), so
     * both representations are NDJSON. Import takes either file. */
    http_add_header(r, "Content-Disposition", "attachment; filename=\"%s-%s.ndjson\"", rj->space, row->id);
    if (gz) http_add_header(r, "Content-Encoding", "gzip");
    /* the file is checked as it goes out (size, gzip, sha256); one that is
     * not what the row says aborts the body and marks the snapshot */
    struct filestream_check chk = {.size = row->size_bytes, .damaged = dl_damaged};
    snprintf(chk.sha256, sizeof chk.sha256, "%s", row->sha256);
    struct dl_check *d = xcalloc(1, sizeof *d);
    snprintf(d->space, sizeof d->space, "%s", rj->space);
    snprintf(d->id, sizeof d->id, "%s", row->id);
    snprintf(d->actor, sizeof d->actor, "%s", api_actor(r));
    snprintf(d->remote, sizeof d->remote, "%s", r->client);
    chk.arg = d;
    filestream_start(r, fd, 200, "application/x-ndjson", 0, gz ? (int64_t)row->size_bytes : -1, !gz, &chk);
}

static void row_work(sqlite3 *db, struct read_job *rj)
{
    struct snap_row *row = xcalloc(1, sizeof *row);
    rj->arg = row;
    if (row_load(db, rj->space_id, rj->id, row) < 0) read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
    buf_free(&row->meta);
}

void api_snapshot_download(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    read_submit(r, snap_read_job(r, sp), row_work, dl_start);
}

/* ---- reading snapshot files (any thread) --------------------------------- */

/* A streaming line reader over a gzip file, hashing the compressed bytes. */
struct snap_reader {
    int fd;
    z_stream zs;
    bool zs_init, eof;
    EVP_MD_CTX *md;
    unsigned char in[CHUNK];
    struct buf pending;              /* decompressed bytes not yet returned */
    bool in_member;                  /* inside a gzip member (not at its end) */
    size_t pos;
    uint64_t compressed, raw;
    int err;                         /* 0, or an errno / -1 for corrupt data */
    char errmsg[160];
};

static int sr_open(struct snap_reader *sr, const char *path)
{
    memset(sr, 0, sizeof *sr);
    sr->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (sr->fd < 0) {
        /* never the path: this text reaches clients */
        if (errno == ENOENT) snprintf(sr->errmsg, sizeof sr->errmsg, "%s", SNAP_MISSING);
        else snprintf(sr->errmsg, sizeof sr->errmsg, "cannot open the file: %s", strerror(errno));
        return -1;
    }
    if (inflateInit2(&sr->zs, 15 + 16) != Z_OK) abort();
    sr->zs_init = true;
    sr->md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(sr->md, sha256_md(), NULL);
    return 0;
}

static void sr_close(struct snap_reader *sr)
{
    if (sr->fd >= 0) close(sr->fd);
    if (sr->zs_init) inflateEnd(&sr->zs);
    if (sr->md) EVP_MD_CTX_free(sr->md);
    buf_free(&sr->pending);
    sr->fd = -1;
}

/* Refills pending; 0 ok, 1 at the end, -1 on error. The end is clean only
 * when the last gzip member was finished (its trailer read and its CRC and
 * length checked by zlib): a file cut short anywhere is an error. */
static int sr_fill(struct snap_reader *sr)
{
    if (sr->pos > 0) {
        size_t rest = sr->pending.len - sr->pos;
        memmove(sr->pending.data, sr->pending.data + sr->pos, rest);
        sr->pending.len = rest;
        sr->pos = 0;
    }
    for (;;) {
        if (sr->zs.avail_in == 0 && !sr->eof) {
            ssize_t n = read(sr->fd, sr->in, CHUNK);
            if (n < 0) {
                if (errno == EINTR) continue;
                snprintf(sr->errmsg, sizeof sr->errmsg, "read failed: %s", strerror(errno));
                return -1;
            }
            if (n == 0) {
                sr->eof = true;
            } else {
                EVP_DigestUpdate(sr->md, sr->in, (size_t)n);
                sr->compressed += (uint64_t)n;
                sr->zs.next_in = sr->in;
                sr->zs.avail_in = (uInt)n;
            }
        }
        if (sr->zs.avail_in == 0 && sr->eof) {
            if (!sr->in_member) return 1;
            snprintf(sr->errmsg, sizeof sr->errmsg, "the file is truncated (the gzip stream does not end)");
            return -1;
        }
        if (!sr->in_member) {        /* a member starts (concatenated members are allowed) */
            inflateReset(&sr->zs);
            sr->in_member = true;
        }
        buf_reserve(&sr->pending, CHUNK);
        sr->zs.next_out = (Bytef *)sr->pending.data + sr->pending.len;
        sr->zs.avail_out = CHUNK;
        int rc = inflate(&sr->zs, Z_NO_FLUSH);
        size_t got = CHUNK - sr->zs.avail_out;
        sr->pending.len += got;
        sr->raw += got;
        if (rc == Z_STREAM_END) {
            sr->in_member = false;
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            snprintf(sr->errmsg, sizeof sr->errmsg, "gzip data is corrupt: %s", sr->zs.msg ? sr->zs.msg : "inflate failed");
            return -1;
        }
        if (got) return 0;
    }
}

/* Next line (without '\n') into line and len, valid until the next call.
 * Returns 1 for a line, 0 at the end, -1 on error. */
static int sr_line(struct snap_reader *sr, const char **line, size_t *len)
{
    for (;;) {
        char *start = sr->pending.data ? sr->pending.data + sr->pos : NULL;
        size_t avail = sr->pending.len - sr->pos;
        char *nl = start ? memchr(start, '\n', avail) : NULL;
        if (nl) {
            *line = start;
            *len = (size_t)(nl - start);
            sr->pos += *len + 1;
            return 1;
        }
        if (avail > (64u << 20)) {
            snprintf(sr->errmsg, sizeof sr->errmsg, "a line is longer than 64 MiB");
            return -1;
        }
        int rc = sr_fill(sr);
        if (rc < 0) return -1;
        if (rc == 1) {
            if (sr->pending.len - sr->pos > 0) {
                snprintf(sr->errmsg, sizeof sr->errmsg, "the last line has no newline (truncated file?)");
                return -1;
            }
            return 0;
        }
    }
}

static void sr_sha(struct snap_reader *sr, char out[65])
{
    unsigned char md[32];
    unsigned int l = 32;
    EVP_DigestFinal_ex(sr->md, md, &l);
    hex_encode(out, md, 32);
}

/* One parsed entity line. */
struct snap_ent {
    json_t *doc;
    const char *collection, *id, *rev;
    json_t *body;
    char *canon;                     /* the body's canonical text (malloc'd), as a restore writes it */
    size_t canon_len;
};

static void ent_free(struct snap_ent *e)
{
    json_decref(e->doc);
    free(e->canon);
    e->doc = NULL;
    e->canon = NULL;
}

/* A line's rev is never taken (a restore writes new revs, docs/api.md): it
 * is checked for its shape only, as revs were before N was bounded
 * (entity.h REV_N_MAX), so a snapshot taken before that stays readable
 * even if an entity of it had a rev past the bound. */
static bool line_rev_ok(const char *rev)
{
    if (rev_valid(rev)) return true;
    const char *dash = strchr(rev, '-');
    uint64_t n;
    if (!dash || dash == rev || !dash[1] || strlen(rev) >= REV_MAX ||
        parse_u64(rev, (size_t)(dash - rev), UINT64_MAX, &n) < 0 || n == 0)
        return false;
    for (const char *h = dash + 1; *h; h++)
        if (!((*h >= '0' && *h <= '9') || (*h >= 'a' && *h <= 'f'))) return false;
    return true;
}

static int ent_parse(const char *line, size_t len, struct snap_ent *e, char *err, size_t errlen)
{
    json_error_t je;
    memset(e, 0, sizeof *e);
    /* a body's values may hold \u0000 (as every write path allows); the
     * names may not */
    e->doc = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!e->doc) {
        snprintf(err, errlen, "invalid JSON: %.120s", je.text);
        return -1;
    }
    e->collection = json_name(json_object_get(e->doc, "collection"));
    e->id = json_name(json_object_get(e->doc, "id"));
    e->rev = json_name(json_object_get(e->doc, "rev"));
    e->body = json_object_get(e->doc, "body");
    if (!e->collection || !name_collection_valid(e->collection, strlen(e->collection)) || !e->id ||
        !name_entity_id_valid(e->id, strlen(e->id)) || !e->rev || !line_rev_ok(e->rev) || !json_is_object(e->body) ||
        json_is_true(json_object_get(e->doc, "deleted"))) {
        snprintf(err, errlen, "not a live entity line (collection, id, rev, body)");
        ent_free(e);
        return -1;
    }
    /* the body as a restore will write it, decided here for every reader
     * (verify, preview, plan, restore): a body any write path would refuse
     * (nested past JSON_MAX_DEPTH, which jansson's load allows) fails the
     * file's check, not only the restore that follows it */
    struct json_err ce;
    if (!(e->canon = entity_canonical_value(e->body, &e->canon_len, &ce))) {
        snprintf(err, errlen, "the body cannot be stored: %.120s", ce.message);
        ent_free(e);
        return -1;
    }
    return 0;
}

static int key_cmp(const char *c1, const char *i1, const char *c2, const char *i2)
{
    int c = strcmp(c1, c2);
    return c ? c : strcmp(i1, i2);
}

static const char *str_or(const char *s) { return s ? s : ""; }

/* A check of a whole file (gzip, header, every line, counts) that can stop
 * and go on later: snap_verify_file runs it in one go, the background check
 * in slices (see "background check"). Any thread; one at a time. */
struct snap_check {
    struct snap_reader sr;
    bool header_done;
    json_t *hdr, *seen;
    char prev_c[64], prev_i[130];
    struct blob_set blobs;           /* blobs the entities name (a restore checks them) */
};

/* 0, or -1 with err (which never names the path). */
static int check_open(struct snap_check *c, const char *path, struct snap_summary *sum, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    memset(sum, 0, sizeof *sum);
    if (sr_open(&c->sr, path) < 0) {
        snprintf(err, errlen, "%s", c->sr.errmsg);
        return -1;
    }
    c->seen = json_object();
    return 0;
}

static void check_close(struct snap_check *c)
{
    json_decref(c->hdr);
    json_decref(c->seen);
    c->hdr = c->seen = NULL;
    free(c->blobs.v);
    c->blobs.v = NULL;
    sr_close(&c->sr);
}

static int check_header(struct snap_check *c, struct snap_summary *sum, char *err, size_t errlen)
{
    const char *line;
    size_t len;
    int r = sr_line(&c->sr, &line, &len);
    if (r <= 0) {
        snprintf(err, errlen, "%s", r < 0 ? c->sr.errmsg : "the file is empty");
        return -1;
    }
    json_error_t je;
    c->hdr = json_loadb(line, len, 0, &je);
    json_t *hdr = c->hdr;
    const char *fmt = hdr ? json_name(json_object_get(hdr, "format")) : NULL;
    if (!fmt || strcmp(fmt, SNAP_FORMAT) != 0) {
        snprintf(err, errlen, "line 1 is not a %s header", SNAP_FORMAT);
        return -1;
    }
    snprintf(sum->space, sizeof sum->space, "%s", str_or(json_name(json_object_get(hdr, "space"))));
    snprintf(sum->space_uid, sizeof sum->space_uid, "%s", str_or(json_name(json_object_get(hdr, "space_uid"))));
    snprintf(sum->instance_id, sizeof sum->instance_id, "%s", str_or(json_name(json_object_get(hdr, "instance_id"))));
    sum->server_version = (uint64_t)json_integer_value(json_object_get(hdr, "server_version"));
    json_t *counts = json_object_get(hdr, "entity_counts");
    json_t *total = json_object_get(hdr, "entity_total");
    if (!json_is_object(counts) || !json_is_integer(total) || !name_space_valid(sum->space, strlen(sum->space))) {
        snprintf(err, errlen, "the header lacks space, entity_counts or entity_total");
        return -1;
    }
    json_t *created = json_object_get(hdr, "created_at");
    if (!json_is_string(created) ||
        parse_time_ms(json_string_value(created), json_string_length(created), &sum->created_at_ms) < 0) {
        snprintf(err, errlen, "the header's created_at is not a time like 2026-11-24T14:48:26.801Z");
        return -1;
    }
    sum->lines = 1;
    c->header_done = true;
    return 0;
}

/* Goes on for about budget_ns of work (0: to the end). Returns 1 when there
 * is more to do, 0 when the file is valid (sum complete: the caller frees
 * sum->counts_json), -1 when it is not (err). */
static int check_step(struct snap_check *c, uint64_t budget_ns, struct snap_summary *sum, char *err, size_t errlen)
{
    if (!c->header_done && check_header(c, sum, err, errlen) < 0) return -1;
    uint64_t until = budget_ns ? now_ns_mono() + budget_ns : 0;
    const char *line;
    size_t len;
    int r;
    while ((r = sr_line(&c->sr, &line, &len)) == 1) {
        struct snap_ent e;
        char why[160];
        sum->lines++;
        if (ent_parse(line, len, &e, why, sizeof why) < 0) {
            snprintf(err, errlen, "line %llu: %s", (unsigned long long)sum->lines, why);
            return -1;
        }
        if (key_cmp(c->prev_c, c->prev_i, e.collection, e.id) >= 0 && c->prev_c[0]) {
            snprintf(err, errlen, "line %llu: entities are not in (collection, id) order", (unsigned long long)sum->lines);
            ent_free(&e);
            return -1;
        }
        snprintf(c->prev_c, sizeof c->prev_c, "%s", e.collection);
        snprintf(c->prev_i, sizeof c->prev_i, "%s", e.id);
        json_t *n = json_object_get(c->seen, e.collection);
        json_object_set_new(c->seen, e.collection, json_integer((n ? json_integer_value(n) : 0) + 1));
        sum->entity_total++;
        blob_set_add(&c->blobs, e.body);
        ent_free(&e);
        if (until && sum->lines % 64 == 0 && now_ns_mono() >= until) return 1;
    }
    if (r < 0) {
        snprintf(err, errlen, "line %llu: %s", (unsigned long long)sum->lines + 1, c->sr.errmsg);
        return -1;
    }
    json_t *counts = json_object_get(c->hdr, "entity_counts");
    json_t *total = json_object_get(c->hdr, "entity_total");
    if ((uint64_t)json_integer_value(total) != sum->entity_total || !json_equal(counts, c->seen)) {
        snprintf(err, errlen, "the header counts %lld entities but the file holds %llu (or per-collection counts differ)",
                 (long long)json_integer_value(total), (unsigned long long)sum->entity_total);
        return -1;
    }
    sum->raw_bytes = c->sr.raw;
    sum->size_bytes = c->sr.compressed;
    sr_sha(&c->sr, sum->sha256);
    sum->counts_json = json_dumps(counts, JSON_COMPACT | JSON_SORT_KEYS);
    struct buf bl;
    buf_init(&bl);
    blob_set_finish(&c->blobs, &bl);
    sum->blobs_json = buf_steal(&bl, NULL);
    return 0;
}

int snap_verify_file(const char *path, struct snap_summary *sum, char *err, size_t errlen)
{
    struct snap_check c;
    if (check_open(&c, path, sum, err, errlen) < 0) return -1;
    int rc = check_step(&c, 0, sum, err, errlen);
    check_close(&c);
    return rc < 0 ? -1 : 0;
}

/* ---- the merge of a snapshot with the live state ------------------------ */

/* Current rows of a space in (collection, id) order, read in pages so the
 * same connection may write between pages (the restore does). */
struct cur_rows {
    sqlite3 *db;
    int64_t space_id;
    char after_c[64], after_i[130];
    bool started, done;
    struct cur_row { char c[64], i[130], rev[REV_MAX]; bool deleted; char *body; size_t blen; } *v;
    size_t n, pos, cap;
};

static void cur_clear(struct cur_rows *cr)
{
    for (size_t k = 0; k < cr->n; k++) free(cr->v[k].body);
    cr->n = cr->pos = 0;
}

static int cur_page(struct cur_rows *cr)
{
    cur_clear(cr);
    if (cr->done) return 0;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(cr->db,
                           "SELECT collection, id, rev, deleted, body FROM entities WHERE space_id = ?1 AND"
                           " (collection > ?2 OR (collection = ?2 AND id > ?3)) ORDER BY collection, id LIMIT 512",
                           -1, &q, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(q, 1, cr->space_id);
    sqlite3_bind_text(q, 2, cr->after_c, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, cr->after_i, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (cr->n == cr->cap) {
            cr->cap = cr->cap ? cr->cap * 2 : 512;
            cr->v = xrealloc(cr->v, cr->cap * sizeof *cr->v);
        }
        struct cur_row *r = &cr->v[cr->n++];
        snprintf(r->c, sizeof r->c, "%s", (const char *)sqlite3_column_text(q, 0));
        snprintf(r->i, sizeof r->i, "%s", (const char *)sqlite3_column_text(q, 1));
        snprintf(r->rev, sizeof r->rev, "%s", (const char *)sqlite3_column_text(q, 2));
        r->deleted = sqlite3_column_int(q, 3) != 0;
        r->blen = (size_t)sqlite3_column_bytes(q, 4);
        r->body = sqlite3_column_type(q, 4) == SQLITE_NULL ? NULL : xstrndup((const char *)sqlite3_column_text(q, 4), r->blen);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) return -1;
    if (cr->n < 512) cr->done = true;
    if (cr->n) {
        snprintf(cr->after_c, sizeof cr->after_c, "%s", cr->v[cr->n - 1].c);
        snprintf(cr->after_i, sizeof cr->after_i, "%s", cr->v[cr->n - 1].i);
    }
    return 0;
}

/* The current row under the cursor, or NULL at the end. */
static struct cur_row *cur_peek(struct cur_rows *cr, int *err)
{
    if (cr->pos < cr->n) return &cr->v[cr->pos];
    if (cr->done && cr->started) return NULL;
    cr->started = true;
    if (cur_page(cr) < 0) { *err = 1; return NULL; }
    return cr->pos < cr->n ? &cr->v[cr->pos] : NULL;
}

struct delta_coll {
    char name[64];
    uint64_t added, modified, deleted;
};

struct merge {
    /* callbacks: NULL to only count */
    int (*put)(void *arg, const char *c, const char *i, struct cur_row *cur, const char *body, size_t blen);
    int (*del)(void *arg, struct cur_row *cur);
    void *arg;
    uint64_t puts, dels;
    /* per-collection delta, "the current state against the snapshot" */
    struct delta_coll *d;
    size_t nd;
    struct blob_set *blobs;          /* non-NULL: collects the blobs every snapshot entity names */
};

static struct delta_coll *delta_for(struct merge *m, const char *c)
{
    for (size_t k = 0; k < m->nd; k++)
        if (!strcmp(m->d[k].name, c)) return &m->d[k];
    m->d = xrealloc(m->d, (m->nd + 1) * sizeof *m->d);
    struct delta_coll *d = &m->d[m->nd++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", c);
    return d;
}

/* Walks the snapshot file and the live rows in key order. For a restore:
 * put() the snapshot's version where the live state differs, del() what
 * the snapshot does not have. For a preview the same walk only counts.
 * Returns 0, or -1 with err; *file_bad says whether the file was at fault
 * (missing, damaged, not what the row says) rather than the database. */
static int merge_run(const char *path, const char *want_sha, sqlite3 *db, int64_t space_id, struct merge *m,
                     char *err, size_t errlen, bool *file_bad)
{
    struct snap_reader sr;
    *file_bad = true;
    if (sr_open(&sr, path) < 0) {
        snprintf(err, errlen, "%s", sr.errmsg);
        return -1;
    }
    struct cur_rows cr = {.db = db, .space_id = space_id};
    int rc = -1, dberr = 0;
    const char *line;
    size_t len;
    int hr = sr_line(&sr, &line, &len);
    if (hr != 1) {
        snprintf(err, errlen, "line 1: %s", hr < 0 ? sr.errmsg : "the file is empty");
        goto out;
    }
    struct snap_ent e = {0};
    char prev_c[64] = "", prev_i[130] = "";
    int r;
    for (;;) {
        r = sr_line(&sr, &line, &len);
        if (r < 0) {
            snprintf(err, errlen, "%s", sr.errmsg);
            goto out;
        }
        bool have = r == 1;
        char why[160];
        if (have && ent_parse(line, len, &e, why, sizeof why) < 0) {
            snprintf(err, errlen, "%s", why);
            goto out;
        }
        /* the walk below is right only over keys in order: a file out of
         * order is refused here as verify refuses it, not merged wrong */
        if (have && prev_c[0] && key_cmp(prev_c, prev_i, e.collection, e.id) >= 0) {
            snprintf(err, errlen, "entities are not in (collection, id) order");
            goto out_e;
        }
        if (have) {
            snprintf(prev_c, sizeof prev_c, "%s", e.collection);
            snprintf(prev_i, sizeof prev_i, "%s", e.id);
        }
        /* live rows before this snapshot entity are not in the snapshot */
        struct cur_row *cur;
        while ((cur = cur_peek(&cr, &dberr)) && (!have || key_cmp(cur->c, cur->i, e.collection, e.id) < 0)) {
            if (!cur->deleted) {
                delta_for(m, cur->c)->added++;
                m->dels++;
                if (m->del && m->del(m->arg, cur) < 0) {
                    *file_bad = false;
                    snprintf(err, errlen, "deleting %.63s/%.100s failed", cur->c, cur->i);
                    goto out_e;
                }
            }
            cr.pos++;
        }
        if (dberr) {
            *file_bad = false;
            snprintf(err, errlen, "reading live entities failed: %s", sqlite3_errmsg(db));
            goto out_e;
        }
        if (!have) break;
        if (m->blobs) blob_set_add(m->blobs, e.body);
        const char *body = e.canon;
        size_t blen = e.canon_len;
        bool same_key = cur && !key_cmp(cur->c, cur->i, e.collection, e.id);
        bool differs = !same_key || cur->deleted || !cur->body || cur->blen != blen || memcmp(cur->body, body, blen);
        if (differs) {
            struct delta_coll *d = delta_for(m, e.collection);
            if (!same_key || cur->deleted) d->deleted++;     /* gone from the live state since */
            else d->modified++;
            m->puts++;
            if (m->put && m->put(m->arg, e.collection, e.id, same_key ? cur : NULL, body, blen) < 0) {
                *file_bad = false;
                snprintf(err, errlen, "writing %s/%s failed", e.collection, e.id);
                goto out_e;
            }
        }
        if (same_key) cr.pos++;
        ent_free(&e);
    }
    char sha[65];
    sr_sha(&sr, sha);
    if (want_sha && strcmp(sha, want_sha) != 0) {
        snprintf(err, errlen, "the file's sha256 does not match the snapshot's");
        goto out;
    }
    rc = 0;
    *file_bad = false;
    goto out;
out_e:
    ent_free(&e);
out:
    cur_clear(&cr);
    free(cr.v);
    sr_close(&sr);
    return rc;
}

/* snapshot.h: merge_run counting only, for tests and the fuzz target */
int snap_merge_count(const char *path, const char *want_sha, void *db, int64_t space_id, uint64_t *puts,
                     uint64_t *dels, char *err, size_t errlen)
{
    struct merge m = {0};
    bool file_bad;
    int rc = merge_run(path, want_sha, db, space_id, &m, err, errlen, &file_bad);
    *puts = m.puts;
    *dels = m.dels;
    free(m.d);
    return rc;
}

static void delta_json(struct buf *b, struct merge *m)
{
    buf_putc(b, '{');
    for (size_t k = 0; k < m->nd; k++) {
        json_key(b, m->d[k].name);
        buf_putc(b, '{');
        json_kv_u64(b, "added", m->d[k].added);
        json_kv_u64(b, "modified", m->d[k].modified);
        json_kv_u64(b, "deleted", m->d[k].deleted);
        buf_putc(b, '}');
    }
    buf_putc(b, '}');
}

/* ---- preview and dry run (read job) ------------------------------------- */

struct preview_arg {
    struct snap_row row;
    char data_dir[1024];
    bool dry_run;
    uint64_t current_version;
    char missing[800];               /* dry run: "missing":[...] of a restore that would be refused */
    char missing_msg[200];
    bool damaged;                    /* out: the file is not what the row says */
    char why[200];
};

/* A dry run says what the restore would do: refuse it, too, when the
 * snapshot names blobs the space does not have (verify_work). Returns the
 * count missing, or -1 on an SQL error. */
static int dry_run_blobs(sqlite3 *db, int64_t space_id, struct blob_set *set, struct preview_arg *pa)
{
    struct buf list;
    buf_init(&list);
    blob_set_finish(set, &list);
    json_error_t je;
    json_t *a = json_loads(list.data, 0, &je);
    buf_free(&list);
    sqlite3_stmt *q = NULL;
    size_t i, ml = (size_t)snprintf(pa->missing, sizeof pa->missing, "\"missing\":[");
    int n = 0;
    json_t *h;
    json_array_foreach(a, i, h) {
        const char *x = json_name(h);
        if (!x) continue;                            /* the list was made here: valid hashes only */
        int in = blobs_in_space(db, &q, space_id, x);
        if (in < 0) {
            n = -1;
            break;
        }
        if (in) continue;
        if (!n) snprintf(pa->missing_msg, sizeof pa->missing_msg, "blob %s that the snapshot's entities name is not in this space", x);
        if (ml + 70 < sizeof pa->missing)
            ml += (size_t)snprintf(pa->missing + ml, sizeof pa->missing - ml, "%s\"%s\"", n ? "," : "", x);
        n++;
    }
    snprintf(pa->missing + ml, sizeof pa->missing - ml, "]");
    sqlite3_finalize(q);
    json_decref(a);
    return n;
}

static void preview_done(struct read_job *rj, struct http_req *r);

static void dry_run_done(struct read_job *rj, struct http_req *r)
{
    struct preview_arg *pa = rj->arg;
    if (pa->damaged)
        preview_done(rj, r);         /* marks the snapshot and answers 422 */
    else if (pa->missing_msg[0])
        http_send_error(r, 422, "missing_blob", pa->missing,
                        "%s; a restore would be refused (upload those blobs to this space first)", pa->missing_msg);
    else
        http_send_json(r, 200, &rj->out);
}

static void preview_work(sqlite3 *db, struct read_job *rj)
{
    struct preview_arg *pa = rj->arg;
    if (row_load(db, rj->space_id, rj->id, &pa->row) < 0) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    if (!pa->row.found) { read_fail(rj, 404, "not_found", "no snapshot %s in this space", rj->id); goto out; }
    if (strcmp(pa->row.status, "completed")) {
        read_fail(rj, 409, "snapshot_not_ready", "the snapshot is %s", pa->row.status);
        goto out;
    }
    char msg[300];
    if (!strcmp(pa->row.integrity, "corrupt")) {
        corrupt_msg(msg, sizeof msg, pa->row.integrity_error);
        read_fail(rj, 422, "snapshot_corrupt", "%s (POST .../snapshots/%s/verify once the file is repaired)", msg,
                  rj->id);
        goto out;
    }
    store_space_version(db, rj->space_id, &pa->current_version);
    char path[1200], err[200];
    snap_file(pa->data_dir, rj->id, false, path, sizeof path);
    struct merge m = {0};
    struct blob_set blobs = {0};
    if (pa->dry_run) m.blobs = &blobs;
    bool file_bad;
    if (merge_run(path, pa->row.sha256, db, rj->space_id, &m, err, sizeof err, &file_bad) < 0) {
        if (file_bad) {              /* preview_done marks the snapshot and answers 422 */
            pa->damaged = true;
            snprintf(pa->why, sizeof pa->why, "%s", err);
        } else {
            read_fail(rj, 500, "storage_error", "%s", err);
        }
        free(m.d);
        free(blobs.v);
        goto out;
    }
    if (pa->dry_run && dry_run_blobs(db, rj->space_id, &blobs, pa) < 0) {
        read_fail(rj, 500, "storage_error", "reading the space's blobs failed");
        free(m.d);
        goto out;
    }
    struct buf *b = &rj->out;
    if (pa->dry_run) {
        buf_puts(b, "{\"restored_from\":");
        json_cstr(b, rj->id);
        buf_puts(b, ",\"dry_run\":true,\"pre_restore_snapshot\":null");
        json_kv_u64(b, "server_version", pa->current_version);
        buf_puts(b, ",\"changes\":{");
        json_kv_u64(b, "put", m.puts);
        json_kv_u64(b, "deleted", m.dels);
        buf_puts(b, "},\"delta\":");
        delta_json(b, &m);
        buf_putc(b, '}');
    } else {
        buf_puts(b, "{\"snapshot\":");
        buf_append(b, pa->row.meta.data, pa->row.meta.len);
        json_kv_u64(b, "current_version", pa->current_version);
        json_kv_u64(b, "changes_since",
                    pa->current_version > pa->row.server_version ? pa->current_version - pa->row.server_version : 0);
        buf_puts(b, ",\"delta\":");
        delta_json(b, &m);
        buf_putc(b, '}');
    }
    free(m.d);
out:
    buf_free(&pa->row.meta);
}

static void preview_done(struct read_job *rj, struct http_req *r)
{
    struct preview_arg *pa = rj->arg;
    if (!pa->damaged) {
        http_send_json(r, 200, &rj->out);
        return;
    }
    char path[1200], msg[300];
    snap_file(r->srv->cfg->data_dir, rj->id, false, path, sizeof path);
    log_file(LOG_ERROR, pa->dry_run ? "snapshot_dry_run_failed" : "snapshot_preview_failed", rj->space, rj->id, path,
             pa->why);
    integ_mark(r->srv, NULL, rj->space, rj->id, pa->dry_run ? INTEG_RESTORE : INTEG_PREVIEW, false, pa->why,
               api_actor(r), r->client, NULL);
    corrupt_msg(msg, sizeof msg, pa->why);
    http_send_error(r, 422, "snapshot_corrupt", NULL, "%s", msg);
}

void api_snapshot_preview(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct read_job *rj = snap_read_job(r, sp);
    struct preview_arg *pa = xcalloc(1, sizeof *pa);
    snprintf(pa->data_dir, sizeof pa->data_dir, "%s", r->srv->cfg->data_dir);
    rj->arg = pa;
    read_submit(r, rj, preview_work, preview_done);
}

/* ---- restore -------------------------------------------------------------- */

struct restore {
    struct server *srv;
    char data_dir[1024];
    char id[27], space[64], actor[32], remote[56], sha256[65], path[1200];
    int64_t space_id;
    char pre_id[27];
    uint64_t puts, dels, server_version;
    /* the plan: the merge done on a pool thread against a read snapshot of
     * the space at plan_version, its changes written to plan_path */
    char plan_path[1200];
    bool planned;                    /* plan_path holds a complete plan */
    uint64_t plan_version;
    bool used_plan;                  /* the apply followed the plan */
    uint64_t moved;                  /* entities written between the plan's read and the apply */
    bool damaged;                    /* the apply's merge found the file bad (why) */
    char why[200];
};

static void restore_free(struct restore *rs)
{
    free(rs);
}

struct restore_op {
    struct wop op;
    struct restore *rs;
    struct wtx *tx;
    struct space_stats *sp;
    uint64_t puts, dels;             /* changes made */
};

/* One entity to the snapshot's state: its body, or gone (a tombstone).
 * Nothing is written when it is that already. */
static int restore_change(struct restore_op *ro, const char *c, const char *i, bool del, const char *body, size_t blen)
{
    struct ent_row row;
    if (wtx_entity_get(ro->tx, ro->sp, c, i, &row) < 0) return -1;
    bool live = row.exists && !row.deleted;
    int rc = 0;
    if (del ? live : (!live || !row.body || row.body_len != blen || memcmp(row.body, body, blen))) {
        char rev[REV_MAX];
        if (rev_make(row.exists ? row.rev : NULL, del, body, blen, rev) < 0)
            rc = wop_fail(&ro->op, 422, "rev_exhausted", "%s/%s is at rev %s, the most a rev can count: it cannot be "
                          "edited any more, so the restore cannot change it", c, i, row.rev);
        else
            rc = wtx_entity_put(ro->tx, &ro->op, ro->sp, c, i, &row, rev, del, body, blen, NULL);
        if (rc == 0) {
            if (del) ro->dels++;
            else ro->puts++;
        }
    }
    ent_row_free(&row);
    return rc;
}

static int restore_put(void *arg, const char *c, const char *i, struct cur_row *cur, const char *body, size_t blen)
{
    UNUSED(cur);
    return restore_change(arg, c, i, false, body, blen);
}

static int restore_del(void *arg, struct cur_row *cur)
{
    return restore_change(arg, cur->c, cur->i, true, NULL, 0);
}

/* ---- the plan file: one record per change --------------------------------
 * u8 kind ('P' put, 'D' delete), u16 collection length, u16 id length,
 * u32 body length, then the three strings (no terminators). Written and read
 * with stdio buffering; memory stays one record. */

struct plan_rec_head {
    uint8_t kind;
    uint16_t clen, ilen;
    uint32_t blen;
};

static int plan_write(FILE *f, uint8_t kind, const char *c, const char *i, const char *body, size_t blen)
{
    struct plan_rec_head h = {.kind = kind, .clen = (uint16_t)strlen(c), .ilen = (uint16_t)strlen(i), .blen = (uint32_t)blen};
    if (fwrite(&h, sizeof h, 1, f) != 1 || fwrite(c, 1, h.clen, f) != h.clen || fwrite(i, 1, h.ilen, f) != h.ilen ||
        (blen && fwrite(body, 1, blen, f) != blen))
        return -1;
    return 0;
}

static int plan_put(void *arg, const char *c, const char *i, struct cur_row *cur, const char *body, size_t blen)
{
    UNUSED(cur);
    return plan_write(arg, 'P', c, i, body, blen);
}

static int plan_del(void *arg, struct cur_row *cur)
{
    return plan_write(arg, 'D', cur->c, cur->i, NULL, 0);
}

struct plan_job {
    struct job job;
    struct restore *rs;
    bool ok;
    char err[200];
};

/* pool thread: one read transaction, so the plan is exactly "the space at
 * plan_version" -> "the snapshot" */
static void plan_work(struct job *j)
{
    struct plan_job *pj = container_of(j, struct plan_job, job);
    struct restore *rs = pj->rs;
    sqlite3 *db = store_reader_get(job_server(j)->store);
    if (!db) {
        snprintf(pj->err, sizeof pj->err, "no database connection");
        return;
    }
    FILE *f = fopen(rs->plan_path, "wb");
    if (!f) {
        snprintf(pj->err, sizeof pj->err, "cannot write the restore plan: %s", strerror(errno));
        store_reader_put(job_server(j)->store, db);
        return;
    }
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    bool have_version = store_space_version(db, rs->space_id, &rs->plan_version) == 1;
    /* test hook: a slow plan, so a test can write to the space meanwhile */
    uint64_t delay = env_ms("SNAPSYNC_TEST_RESTORE_PLAN_DELAY_MS");
    if (delay) uv_sleep((unsigned)delay);
    struct merge m = {.put = plan_put, .del = plan_del, .arg = f};
    char err[200];
    bool file_bad;
    if (!have_version) {
        snprintf(pj->err, sizeof pj->err, "the space is gone");
    } else if (merge_run(rs->path, rs->sha256, db, rs->space_id, &m, err, sizeof err, &file_bad) < 0) {
        snprintf(pj->err, sizeof pj->err, "%s", err);
    } else {
        pj->ok = true;
    }
    free(m.d);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    store_reader_put(job_server(j)->store, db);
    if (fclose(f) != 0 && pj->ok) {
        pj->ok = false;
        snprintf(pj->err, sizeof pj->err, "writing the plan failed: %s", strerror(errno));
    }
    if (!pj->ok) unlink(rs->plan_path);
}

/* The entities written after the plan's read (version > since), each once,
 * with its state at `since` (the first note after it), sorted by key. */
struct moved {
    const struct journal_ent **v;
    bool *covered;                   /* the plan has a record for it */
    size_t n;
};

static int moved_cmp(const void *a, const void *b)
{
    const struct journal_ent *x = *(const struct journal_ent *const *)a, *y = *(const struct journal_ent *const *)b;
    int c = key_cmp(x->c, x->i, y->c, y->i);
    if (c) return c;
    return x < y ? -1 : x > y;       /* same key: the earlier note first (notes are in write order) */
}

static void moved_build(struct moved *mv, const struct journal *j, uint64_t since)
{
    memset(mv, 0, sizeof *mv);
    if (!j->n) return;
    mv->v = xmalloc(j->n * sizeof *mv->v);
    for (size_t k = 0; k < j->n; k++)
        if (j->v[k].version > since) mv->v[mv->n++] = &j->v[k];
    qsort(mv->v, mv->n, sizeof *mv->v, moved_cmp);
    size_t out = 0;
    for (size_t k = 0; k < mv->n; k++)
        if (!out || key_cmp(mv->v[out - 1]->c, mv->v[out - 1]->i, mv->v[k]->c, mv->v[k]->i))
            mv->v[out++] = mv->v[k];
    mv->n = out;
    mv->covered = xcalloc(mv->n ? mv->n : 1, sizeof *mv->covered);
}

static void moved_cover(struct moved *mv, const char *c, const char *i)
{
    size_t lo = 0, hi = mv->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = key_cmp(mv->v[mid]->c, mv->v[mid]->i, c, i);
        if (!r) { mv->covered[mid] = true; return; }
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
}

/* Writer thread: follow the plan, then put back what moved after the plan's
 * read and the plan has no record for: such an entity was, at the plan's
 * version, the same as in the snapshot, so its state then (from the journal)
 * is the snapshot's. -1 with the op failed. */
static int plan_apply(struct restore_op *ro, struct moved *mv)
{
    struct restore *rs = ro->rs;
    FILE *f = fopen(rs->plan_path, "rb");
    if (!f) return wop_fail(&ro->op, 500, "storage_error", "the restore plan is gone: %s", strerror(errno));
    char c[64], i[130];
    char *body = NULL;
    size_t cap = 0;
    struct plan_rec_head h;
    int rc = 0;
    while (rc == 0 && fread(&h, sizeof h, 1, f) == 1) {
        if (h.clen >= sizeof c || h.ilen >= sizeof i || (h.kind != 'P' && h.kind != 'D') ||
            fread(c, 1, h.clen, f) != h.clen || fread(i, 1, h.ilen, f) != h.ilen) {
            rc = wop_fail(&ro->op, 500, "storage_error", "the restore plan is damaged");
            break;
        }
        c[h.clen] = i[h.ilen] = '\0';
        if (h.blen + 1 > cap) {
            cap = h.blen + 1;
            body = xrealloc(body, cap);
        }
        if (h.blen && fread(body, 1, h.blen, f) != h.blen) {
            rc = wop_fail(&ro->op, 500, "storage_error", "the restore plan is damaged");
            break;
        }
        if (mv->n) moved_cover(mv, c, i);
        if (restore_change(ro, c, i, h.kind == 'D', h.kind == 'D' ? NULL : body, h.blen) < 0) {
            if (!ro->op.status) wop_fail(&ro->op, 500, "storage_error", "writing %s/%s failed", c, i);
            rc = -1;
        }
    }
    if (rc == 0 && ferror(f)) rc = wop_fail(&ro->op, 500, "storage_error", "reading the restore plan failed");
    free(body);
    fclose(f);
    for (size_t k = 0; rc == 0 && k < mv->n; k++) {
        const struct journal_ent *e = mv->v[k];
        if (mv->covered[k]) continue;
        if (restore_change(ro, e->c, e->i, !e->live, e->body, e->blen) < 0) {
            if (!ro->op.status) wop_fail(&ro->op, 500, "storage_error", "writing %s/%s failed", e->c, e->i);
            rc = -1;
        }
    }
    return rc;
}

static int restore_apply(struct wtx *tx, struct wop *op)
{
    struct restore_op *ro = container_of(op, struct restore_op, op);
    struct restore *rs = ro->rs;
    struct space_stats *sp = wtx_space(tx, rs->space);
    struct journal *jn = sp ? wtx_journal_take(tx, sp->id) : NULL;
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", rs->space);
    struct space_stats before = *sp;           /* memory goes back if we fail */
    ro->tx = tx;
    ro->sp = sp;
    ro->puts = ro->dels = 0;
    rs->used_plan = false;
    int rc = 0;
    if (rs->planned && jn && !jn->overflowed && sp->id == rs->space_id && sp->version >= rs->plan_version) {
        /* the transaction applies only the changes (the write lock is held
         * for them, not for the whole comparison) */
        struct moved mv;
        moved_build(&mv, jn, rs->plan_version);
        rs->used_plan = true;
        rs->moved = mv.n;
        rc = plan_apply(ro, &mv);
        free(mv.v);
        free(mv.covered);
    } else {
        /* no plan, or the journal overflowed: the whole merge here */
        struct merge m = {.put = restore_put, .del = restore_del, .arg = ro};
        char err[200];
        bool file_bad;
        if (merge_run(rs->path, rs->sha256, wtx_db(tx), sp->id, &m, err, sizeof err, &file_bad) < 0) {
            if (!op->status) {
                if (file_bad) {
                    rs->damaged = true;
                    snprintf(rs->why, sizeof rs->why, "%s", err);
                    char msg[300];
                    corrupt_msg(msg, sizeof msg, err);
                    wop_fail(op, 422, "snapshot_corrupt", "%s; nothing was changed", msg);
                } else {
                    wop_fail(op, 500, "storage_error", "%s", err);
                }
            }
            rc = -1;
        }
        free(m.d);
    }
    journal_free(jn);
    if (rc < 0) {
        *sp = before;
        return -1;
    }
    rs->puts = ro->puts;
    rs->dels = ro->dels;
    rs->server_version = sp->version;
    char meta[160];
    snprintf(meta, sizeof meta, "{\"pre_restore_snapshot\":\"%s\",\"put\":%llu,\"deleted\":%llu}", rs->pre_id,
             (unsigned long long)rs->puts, (unsigned long long)rs->dels);
    if (wtx_audit(tx, rs->actor, "snapshot.restore", rs->space, rs->id, meta, rs->remote) < 0) {
        *sp = before;
        return wop_fail(op, 500, "storage_error", "audit failed");
    }
    return 0;
}

static void plan_start(struct restore *rs, struct http_req *r);

static void restore_done(struct wop *op, struct http_req *r)
{
    struct restore_op *ro = container_of(op, struct restore_op, op);
    struct restore *rs = ro->rs;
    set_busy(rs->srv, rs->space, false);
    if (r) {
        if (op->status) {
            api_send_wop_error(r, op);
        } else {
            struct buf b;
            buf_init(&b);
            buf_puts(&b, "{\"restored_from\":");
            json_cstr(&b, rs->id);
            json_kv_str(&b, "pre_restore_snapshot", rs->pre_id);
            json_kv_u64(&b, "server_version", rs->server_version);
            buf_puts(&b, ",\"changes\":{");
            json_kv_u64(&b, "put", rs->puts);
            json_kv_u64(&b, "deleted", rs->dels);
            buf_puts(&b, "}}");
            http_send_json(r, 200, &b);
        }
    }
    log_info("snapshot_restore",
             "\"space\":\"%s\",\"snapshot\":\"%s\",\"status\":%d,\"put\":%llu,\"deleted\":%llu,\"planned\":%s,"
             "\"moved\":%llu",
             rs->space, rs->id, op->status ? op->status : 200, (unsigned long long)rs->puts,
             (unsigned long long)rs->dels, rs->used_plan ? "true" : "false", (unsigned long long)rs->moved);
    if (rs->planned) unlink_path_later(rs->srv, rs->plan_path);
    if (rs->damaged) {
        log_file(LOG_ERROR, "snapshot_restore_failed", rs->space, rs->id, rs->path, rs->why);
        integ_mark(rs->srv, NULL, rs->space, rs->id, INTEG_RESTORE, false, rs->why, rs->actor, rs->remote, NULL);
    }
    restore_free(rs);
    free(ro);
}

static void restore_submit(struct restore *rs, struct http_req *r)
{
    struct restore_op *ro = xcalloc(1, sizeof *ro);
    ro->rs = rs;
    if (writer_submit(rs->srv->writer, &ro->op, r, restore_apply, restore_done) < 0) {
        set_busy(rs->srv, rs->space, false);
        if (r) http_send_error(r, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        if (rs->planned) unlink_path_later(rs->srv, rs->plan_path);
        free(ro);
        restore_free(rs);
    }
}

static void plan_done(struct job *j, struct http_req *r)
{
    struct plan_job *pj = container_of(j, struct plan_job, job);
    struct restore *rs = pj->rs;
    rs->planned = pj->ok;
    if (!pj->ok)
        log_warn("snapshot_restore_plan_failed", "\"space\":\"%s\",\"snapshot\":\"%s\",\"error\":\"%s\"", rs->space,
                 rs->id, pj->err);
    free(pj);
    /* the client may have left (r NULL): the restore goes on. A failed plan
     * falls back to the merge inside the write transaction, which reports
     * the error if there is one */
    restore_submit(rs, r);
}

static void plan_start(struct restore *rs, struct http_req *r)
{
    struct plan_job *pj = xcalloc(1, sizeof *pj);
    pj->rs = rs;
    job_submit(&rs->srv->jobs, &pj->job, r, plan_work, plan_done);
}

/* The journal starts before the plan's read, so every write the plan cannot
 * see is in it. Past RESTORE_JOURNAL_BYTES of noted bodies (a space written
 * to heavily during the plan) the restore merges inside its transaction. */
#define RESTORE_JOURNAL_BYTES (64u << 20)

struct journal_op {
    struct wop op;
    struct restore *rs;
    size_t cap;
};

static int journal_start_apply(struct wtx *tx, struct wop *op)
{
    struct journal_op *jo = container_of(op, struct journal_op, op);
    wtx_journal_start(tx, jo->rs->space_id, jo->cap);
    return 0;
}

static void journal_started(struct wop *op, struct http_req *r)
{
    struct journal_op *jo = container_of(op, struct journal_op, op);
    struct restore *rs = jo->rs;
    free(jo);
    plan_start(rs, r);
}

/* after the pre-restore snapshot */
static void restore_after_pre(struct snap_job *sj, struct http_req *r)
{
    struct restore *rs = sj->then_arg;
    sj->then = NULL;
    if (sj->err || !sj->id[0]) {
        set_busy(rs->srv, rs->space, false);
        if (r) http_send_error(r, 500, "pre_restore_failed", NULL, "the pre-restore snapshot failed: %s",
                               sj->err ? sj->msg : "not recorded");
        restore_free(rs);
        return;
    }
    snprintf(rs->pre_id, sizeof rs->pre_id, "%s", sj->id);
    /* under snapshots/, so a crash's leftover goes with the start-up sweep */
    snprintf(rs->plan_path, sizeof rs->plan_path, "%s/snapshots/%s.restore-plan.tmp", rs->data_dir, rs->pre_id);
    struct journal_op *jo = xcalloc(1, sizeof *jo);
    jo->rs = rs;
    /* test hook: a small journal, to drive the fallback */
    const char *v = getenv("SNAPSYNC_TEST_RESTORE_JOURNAL_BYTES");
    uint64_t cap = RESTORE_JOURNAL_BYTES;
    if (v && parse_u64(v, strlen(v), RESTORE_JOURNAL_BYTES, &cap) < 0) cap = RESTORE_JOURNAL_BYTES;
    jo->cap = (size_t)cap;
    if (writer_submit(rs->srv->writer, &jo->op, r, journal_start_apply, journal_started) < 0) {
        set_busy(rs->srv, rs->space, false);
        if (r) http_send_error(r, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        free(jo);
        restore_free(rs);
    }
}

/* verified: now the pre-restore snapshot */
struct verify_job {
    struct job job;
    struct restore *rs;
    int err;                         /* 1 corrupt, 2 blobs missing, 3 storage */
    char msg[200];
    char missing[800];               /* err 2: "missing":[...] (JSON members) */
};

/* The file is checked whole, and every blob its entities name must be one
 * this space references (uploaded to it or arrived by sync): a restore
 * never makes an entity name a blob the space cannot show -- whether the
 * snapshot was taken here or imported, whatever is on disk for other
 * spaces. (The list comes from the file, not the row: an imported file is
 * read here for the first time as a restore's source.) */
static void verify_work(struct job *j)
{
    struct verify_job *vj = container_of(j, struct verify_job, job);
    struct snap_summary sum;
    int rc = snap_verify_file(vj->rs->path, &sum, vj->msg, sizeof vj->msg);
    free(sum.counts_json);
    if (rc < 0) {
        vj->err = 1;
    } else if (strcmp(sum.sha256, vj->rs->sha256) != 0) {
        vj->err = 1;
        snprintf(vj->msg, sizeof vj->msg, "the file's sha256 does not match the snapshot's (tampered or damaged)");
    } else if (sum.blobs_json && strcmp(sum.blobs_json, "[]")) {
        json_error_t je;
        json_t *a = json_loads(sum.blobs_json, 0, &je);
        sqlite3 *db = store_reader_get(job_server(j)->store);
        sqlite3_stmt *q = NULL;
        size_t i, n = 0, ml = (size_t)snprintf(vj->missing, sizeof vj->missing, "\"missing\":[");
        json_t *h;
        if (!db) vj->err = 3;
        json_array_foreach(a, i, h) {
            const char *x = json_name(h);
            if (!x) continue;                        /* the list was made here: valid hashes only */
            int in = db ? blobs_in_space(db, &q, vj->rs->space_id, x) : -1;
            if (in < 0) {
                vj->err = 3;
                break;
            }
            if (in) continue;
            if (!n) snprintf(vj->msg, sizeof vj->msg, "blob %s that the snapshot's entities name is not in this space", x);
            if (ml + 70 < sizeof vj->missing) ml += (size_t)snprintf(vj->missing + ml, sizeof vj->missing - ml, "%s\"%s\"", n ? "," : "", x);
            n++;
        }
        sqlite3_finalize(q);
        store_reader_put(job_server(j)->store, db);
        json_decref(a);
        snprintf(vj->missing + ml, sizeof vj->missing - ml, "]");
        if (vj->err == 3) snprintf(vj->msg, sizeof vj->msg, "reading the space's blobs failed");
        else if (n) vj->err = 2;
    }
    free(sum.blobs_json);
}

static void verify_done(struct job *j, struct http_req *r)
{
    struct verify_job *vj = container_of(j, struct verify_job, job);
    struct restore *rs = vj->rs;
    if (j->status == 0)              /* a full check of the file (2: the file is fine, a blob is not) */
        integ_mark(rs->srv, NULL, rs->space, rs->id, INTEG_RESTORE, vj->err != 1, vj->msg, rs->actor, rs->remote,
                   NULL);
    if (vj->err) {
        set_busy(rs->srv, rs->space, false);
        char msg[300];
        if (vj->err == 1) {
            log_file(LOG_ERROR, "snapshot_restore_refused", rs->space, rs->id, rs->path, vj->msg);
            corrupt_msg(msg, sizeof msg, vj->msg);
        } else {
            snprintf(msg, sizeof msg, "%s", vj->msg);
        }
        if (r) {
            if (vj->err == 3)
                http_send_error(r, 500, "storage_error", NULL, "%s; nothing was changed", msg);
            else
                http_send_error(r, 422, vj->err == 2 ? "missing_blob" : "snapshot_corrupt", vj->err == 2 ? vj->missing : NULL,
                                "%s; nothing was changed%s", msg,
                                vj->err == 2 ? " (upload those blobs to this space, then restore)" : "");
        }
        restore_free(rs);
    } else if (!r) {
        set_busy(rs->srv, rs->space, false);    /* the client left before anything changed */
        restore_free(rs);
    } else if (snap_start(rs->srv, r, rs->space, "pre_restore", rs->actor, "taken before a restore", false,
                          restore_after_pre, rs) < 0) {
        set_busy(rs->srv, rs->space, false);
        http_send_error(r, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        restore_free(rs);
    }
    free(vj);
}

static void restore_row_loaded(struct read_job *rj, struct http_req *r)
{
    struct snap_row *row = rj->arg;
    struct space *sp = spaces_get(r->srv->spaces, rj->space);
    bool corrupt = !strcmp(row->integrity, "corrupt");
    if (!row->found) {
        http_send_error(r, 404, "not_found", NULL, "no snapshot %s in this space", rj->id);
        return;
    }
    if (strcmp(row->status, "completed")) {
        http_send_error(r, 409, "snapshot_not_ready", NULL, "the snapshot is %s", row->status);
        return;
    }
    if (corrupt) {
        char msg[300];
        corrupt_msg(msg, sizeof msg, row->integrity_error);
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
    struct restore *rs = xcalloc(1, sizeof *rs);
    rs->srv = r->srv;
    snprintf(rs->id, sizeof rs->id, "%.26s", rj->id);
    snprintf(rs->space, sizeof rs->space, "%s", rj->space);
    snprintf(rs->actor, sizeof rs->actor, "%s", api_actor(r));
    if (r->conn) snprintf(rs->remote, sizeof rs->remote, "%s", r->client);
    snprintf(rs->sha256, sizeof rs->sha256, "%s", row->sha256);
    snprintf(rs->data_dir, sizeof rs->data_dir, "%s", r->srv->cfg->data_dir);
    snap_file(r->srv->cfg->data_dir, rj->id, false, rs->path, sizeof rs->path);
    rs->space_id = rj->space_id;
    struct verify_job *vj = xcalloc(1, sizeof *vj);
    vj->rs = rs;
    job_submit(&r->srv->jobs, &vj->job, r, verify_work, verify_done);
}

void api_snapshot_restore(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    /* no body (or only whitespace) is a missing confirm, not broken JSON */
    size_t k = 0;
    while (k < r->body.len && (r->body.data[k] == ' ' || r->body.data[k] == '\t' || r->body.data[k] == '\r' ||
                               r->body.data[k] == '\n'))
        k++;
    if (k == r->body.len) {
        http_send_error(r, 400, "confirm_mismatch", NULL,
                        "send {\"confirm\":\"%s\"} to restore this snapshot (the body was empty)", r->match.params.id);
        return;
    }
    json_t *v = api_body_members(r, restore_members);
    if (!v) return;
    const char *confirm = json_name(json_object_get(v, "confirm"));
    bool dry = json_is_true(json_object_get(v, "dry_run"));
    if (!confirm || strcmp(confirm, r->match.params.id) != 0) {
        json_decref(v);
        http_send_error(r, 400, "confirm_mismatch", NULL, "\"confirm\" must repeat the snapshot id");
        return;
    }
    json_decref(v);
    struct read_job *rj = snap_read_job(r, sp);
    if (dry) {
        struct preview_arg *pa = xcalloc(1, sizeof *pa);
        snprintf(pa->data_dir, sizeof pa->data_dir, "%s", r->srv->cfg->data_dir);
        pa->dry_run = true;
        rj->arg = pa;
        read_submit(r, rj, preview_work, dry_run_done);
        return;
    }
    if (sp->busy) {
        free(rj);
        http_send_error(r, 409, "snapshot_in_progress", NULL, "a snapshot or restore of '%s' is running", sp->st.name);
        return;
    }
    read_submit(r, rj, row_work, restore_row_loaded);
}

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
    char id[27], space[64], actor[32], remote[56];
    char tmp[1200], path[1200];
    int fd;
    enum import_mode mode;           /* set on the loop before the first write job */
    int level;                       /* of the stored file; -1 for a gzip upload (not known) */
    struct gz_out *gz;               /* IMPORT_PLAIN: the deflate stream (worker) */
    struct buf pending, writing;
    bool busy, ended, paused, failed, finalizing;
    int err;
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
    if (im->gz) {
        if (im->gz->zs.state) deflateEnd(&im->gz->zs);
        free(im->gz);
    }
    if (!im->finalizing || im->failed) unlink(im->tmp);
    set_busy(im->srv, im->space, false);
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
        if (!im->gz) {
            im->gz = xcalloc(1, sizeof *im->gz);
            im->gz->fd = im->fd;
            if (deflateInit2(&im->gz->zs, im->level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
                im->err = ENOMEM;
                return;
            }
        }
        if (gz_put(im->gz, im->writing.data ? im->writing.data : "", im->writing.len,
                   im->finalizing ? Z_FINISH : Z_NO_FLUSH) < 0) {
            im->err = im->gz->err ? im->gz->err : EIO;
            return;
        }
    } else if ((im->err = write_full(im->fd, im->writing.data, im->writing.len)) != 0) {
        return;
    }
    if (im->finalizing) {
        if (fsync(im->fd) < 0) { im->err = errno; return; }
        close(im->fd);
        im->fd = -1;
        if (snap_verify_file(im->tmp, &im->sum, im->msg, sizeof im->msg) < 0) { im->failed = true; return; }
        if (rename(im->tmp, im->path) < 0) { im->err = errno; return; }
        char dir[1200];
        snprintf(dir, sizeof dir, "%s", im->path);
        char *slash = strrchr(dir, '/');
        if (slash) { *slash = '\0'; fsync_dir(dir); }
    }
}

static void import_pump(struct http_req *r);

struct import_op {
    struct wop op;
    struct import *im;
    struct buf meta;
};

static int import_apply(struct wtx *tx, struct wop *op)
{
    struct import_op *io = container_of(op, struct import_op, op);
    struct import *im = io->im;
    struct space_stats *sp = wtx_space(tx, im->space);
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", im->space);
    sqlite3_stmt *st = wtx_stmt(tx,
                                "INSERT INTO snapshots(id, space_id, space, kind, status, server_version, created_at,"
                                " completed_at, entity_total, raw_bytes, size_bytes, sha256, level, created_by, note,"
                                " entity_counts, blobs, integrity, integrity_checked_at)"
                                " VALUES (?1, ?2, ?3, 'imported', 'completed', ?4, ?5, ?13, ?6, ?7, ?8, ?9, ?14, ?10, ?11, ?12,"
                                " ?15, 'ok', ?13)");
    char note[200];
    snprintf(note, sizeof note, "imported from space %s (instance %s)", im->sum.space, im->sum.instance_id);
    sqlite3_bind_text(st, 1, im->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sp->id);
    sqlite3_bind_text(st, 3, im->space, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)im->sum.server_version);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)im->sum.created_at_ms);      /* the capture time */
    sqlite3_bind_int64(st, 13, (sqlite3_int64)wtx_now(tx));              /* completed_at = imported_at */
    sqlite3_bind_int(st, 14, im->level);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)im->sum.entity_total);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)im->sum.raw_bytes);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)im->sum.size_bytes);
    sqlite3_bind_text(st, 9, im->sum.sha256, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, im->actor, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, note, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 12, im->sum.counts_json ? im->sum.counts_json : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 15, im->sum.blobs_json ? im->sum.blobs_json : "[]", -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "recording the import failed");
    if (wtx_audit(tx, im->actor, "snapshot.create", im->space, im->id, "{\"kind\":\"imported\"}", im->remote) < 0)
        return wop_fail(op, 500, "storage_error", "audit failed");
    st = wtx_stmt(tx, "SELECT " SNAP_COLS " FROM snapshots WHERE id = ?");
    sqlite3_bind_text(st, 1, im->id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) meta_json(&io->meta, st);
    sqlite3_reset(st);
    return 0;
}

static void import_recorded(struct wop *op, struct http_req *r)
{
    struct import_op *io = container_of(op, struct import_op, op);
    if (r) {
        if (op->status) api_send_wop_error(r, op);
        else {
            http_add_header(r, "Location", "/api/v1/spaces/%s/snapshots/%s", io->im->space, io->im->id);
            http_send_json(r, 201, &io->meta);
        }
    }
    if (op->status) unlink_later(io->im->srv, io->im->id);
    buf_free(&io->meta);
    free(io);
}

static void import_write_done(struct job *j, struct http_req *r)
{
    struct import *im = container_of(j, struct import, job);
    im->busy = false;
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
        if (im->err) http_send_error(r, 500, "storage_error", NULL, "writing the upload failed: %s", strerror(im->err));
        else http_send_error(r, 422, "snapshot_corrupt", NULL, "%s; nothing was imported", im->msg);
        return;
    }
    if (im->finalizing) {
        struct import_op *io = xcalloc(1, sizeof *io);
        io->im = im;
        if (api_write(r, &io->op, import_apply, import_recorded) < 0) free(io);
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
        http_send_error(r, 400, "empty_body", NULL, "send the snapshot file (.ndjson.gz or .ndjson) as the request body");
        return;
    }
    import_pump(r);
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
    struct import *im = xcalloc(1, sizeof *im);
    im->srv = r->srv;
    im->fd = -1;
    ulid_make(im->id, now_ms_wall());
    snprintf(im->space, sizeof im->space, "%s", sp->st.name);
    snprintf(im->actor, sizeof im->actor, "%s", api_actor(r));
    if (r->conn) snprintf(im->remote, sizeof im->remote, "%s", r->client);
    snap_file(r->srv->cfg->data_dir, im->id, true, im->tmp, sizeof im->tmp);
    snap_file(r->srv->cfg->data_dir, im->id, false, im->path, sizeof im->path);
    r->ctx = im;
    r->ctx_free = import_free;
    r->on_body = import_on_body;
    r->on_body_end = import_on_end;
}

/* ---- POST /snapshots/{id}/verify (operator) -------------------------------
 * The whole file checked on the pool as `snapsync verify` checks it (gzip,
 * header, every line, counts) and against the row (sha256); the answer is
 * what it found, recorded as the snapshot's integrity (so a repaired file
 * is served again) and audited as snapshot.verify. */

struct vcheck_job {
    struct job job;
    char space[64], id[27], actor[32], remote[56], sha256[65], path[1200];
    bool ok;
    char why[200];
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
    if (io->op.status) {
        api_send_wop_error(r, &io->op);
        return;
    }
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"valid\":");
    buf_puts(&b, io->ok ? "true" : "false");
    char msg[300];
    if (!io->ok) corrupt_msg(msg, sizeof msg, io->why);
    json_kv_str(&b, "error", io->ok ? NULL : msg);
    buf_puts(&b, ",\"snapshot\":");
    buf_append(&b, io->meta.data, io->meta.len);
    buf_putc(&b, '}');
    http_send_json(r, 200, &b);
}

static void vcheck_done(struct job *j, struct http_req *r)
{
    struct vcheck_job *v = container_of(j, struct vcheck_job, job);
    if (j->status == 0) {
        if (!v->ok) log_file(LOG_WARN, "snapshot_verify_failed", v->space, v->id, v->path, v->why);
        if (integ_mark(job_server(j), r, v->space, v->id, INTEG_VERIFY, v->ok, v->why, v->actor, v->remote, vcheck_answer) < 0 &&
            r) {
            http_add_header(r, "Retry-After", "1");
            http_send_error(r, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        }
    }
    free(v);
}

static void vcheck_row_loaded(struct read_job *rj, struct http_req *r)
{
    struct snap_row *row = rj->arg;
    if (!row->found) {
        http_send_error(r, 404, "not_found", NULL, "no snapshot %s in this space", rj->id);
        return;
    }
    if (strcmp(row->status, "completed")) {
        http_send_error(r, 409, "snapshot_not_ready", NULL, "the snapshot is %s: there is no file to verify",
                        row->status);
        return;
    }
    struct vcheck_job *v = xcalloc(1, sizeof *v);
    snprintf(v->space, sizeof v->space, "%s", rj->space);
    snprintf(v->id, sizeof v->id, "%s", row->id);
    snprintf(v->actor, sizeof v->actor, "%s", api_actor(r));
    snprintf(v->remote, sizeof v->remote, "%s", r->client);
    snprintf(v->sha256, sizeof v->sha256, "%s", row->sha256);
    snap_file(r->srv->cfg->data_dir, row->id, false, v->path, sizeof v->path);
    job_submit(&r->srv->jobs, &v->job, r, vcheck_work, vcheck_done);
}

void api_snapshot_verify(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    read_submit(r, snap_read_job(r, sp), row_work, vcheck_row_loaded);
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
        bg.rc = check_open(&bg.chk, bg.path, &bg.sum, bg.why, sizeof bg.why) < 0 ? -1 : 1;
        bg.checking = bg.rc == 1;
    }
}

/* pool: the check goes on for one slice */
static void bg_slice_work(struct job *j)
{
    UNUSED(j);
    uint64_t t0 = now_ns_mono();
    bg.rc = check_step(&bg.chk, BG_SLICE_MS * 1000000ull, &bg.sum, bg.why, sizeof bg.why);
    if (bg.rc == 0 && strcmp(bg.sum.sha256, bg.sha256) != 0) {
        bg.rc = -1;
        snprintf(bg.why, sizeof bg.why, "the file's sha256 does not match the snapshot's");
    }
    if (bg.rc != 1) {
        free(bg.sum.counts_json);
        free(bg.sum.blobs_json);
        bg.sum.counts_json = bg.sum.blobs_json = NULL;
        check_close(&bg.chk);
        bg.checking = false;
    }
    bg.slice_ms = (now_ns_mono() - t0) / 1000000;
}

static void bg_stop_check(void)
{
    if (bg.checking) check_close(&bg.chk);
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
    else log_file(LOG_WARN, "snapshot_check_failed", bg.space, bg.id, bg.path, bg.why);
    bg.picked = false;
    if (integ_mark(bg.srv, NULL, bg.space, bg.id, INTEG_BACKGROUND, ok, bg.why, "integrity-check", NULL, bg_marked) < 0)
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

static void bg_init(struct server *srv)
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

static void bg_free(void)
{
    if (!bg.on) return;
    bg_stop_check();
    uv_close((uv_handle_t *)&bg.timer, NULL);
    bg.on = false;
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
        if (snap_start(srv, NULL, sp->st.name, "scheduled", "scheduler", NULL, false, NULL, NULL) < 0) sp->busy = false;
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
    bg_init(srv);
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
    bg_free();
    if (sched_on) {
        uv_close((uv_handle_t *)&sched_timer, NULL);
        sched_on = false;
    }
}
