/* sync_bootstrap.c - the bootstrap phase of a sync job ("bootstrap":
 * "snapshot"): an empty space starts from the peer's newest snapshot, with
 * the peer's revisions as they are, then pulls from its server_version.
 *
 *   1. decide (sync_boot_precheck): only a space never written to;
 *   2. GET peer /snapshots?status=completed: the newest usable one
 *      (sync_boot_pick);
 *   3. download it (Accept-Encoding: gzip, the stored file as it is) to
 *      DATA/snapshots/boot-<job>.tmp on a pool thread, file to file,
 *      hashing it as it comes: before any line is applied, its sha256 must
 *      be the one the peer recorded (a damaged or substituted download
 *      changes nothing) and its header that of a v2 snapshot of the
 *      peer's space (space_uid) at the version the peer listed;
 *   4. read it once, in batches of BOOT_BATCH lines: the format's reader
 *      checks each line's layout, names, revs and order and the gzip
 *      stream, the line count and sha256 are checked again at its end;
 *      each line made into a /replicate item (collection, id, rev, revs,
 *      conflicts, body) and parsed by the replication parser on another
 *      pool thread (which checks and canonicalizes the body, as for a
 *      pulled page), the blobs its bodies name fetched from the peer like
 *      a pull's; each batch applied by the writer, in order, through the
 *      same rep_apply_batch a pull uses (an entity new here is taken as it
 *      is: same rev, same history, no conflict), at most BOOT_AHEAD
 *      batches between the reader and the writer. The file is read once,
 *      not checked in a pass of its own first: with its sha256 matching,
 *      it is the file the peer wrote and checked as it wrote it, and a
 *      second pass would cost as much again as the apply (docs/sync.md);
 *   5. the tombstones: a snapshot holds live entities only, and a digest
 *      counts tombstones too (so does the winner rule: a deleted rev is a
 *      known rev), so GET peer /changes?deleted=only&style=all_revs in
 *      pages; the last page's transaction stores the pull checkpoint at
 *      the snapshot's server_version;
 *   6. the pull phase goes on from there.
 * Falls back to a plain pull (boot = SKIPPED, boot_reason) when the space
 * is not empty, the peer has no usable snapshot, or the snapshot is v1 (its
 * lines carry the current rev only: applied as they are, every entity the
 * peer had edited would diverge from its history). A download that fails
 * or does not check fails the job, with nothing applied.
 *
 * A job killed half-way leaves real revisions of the peer and no
 * checkpoint: the space is no longer empty, so the next job pulls in full
 * from version 0 and ignores what is already here (known revisions).
 *
 * Threads: *_work on the threadpool (each on its own batch or the context,
 * one at a time for the reader), boot_apply on the writer, the rest on the
 * loop.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "net/server.h"
#include "store/spaces.h"
#include "store/store.h"
#include "store/writer.h"
#include "svc/blobs.h"
#include "svc/snapshot.h"
#include "svc/snapshot_format.h"
#include "sync_int.h"

#define BOOT_BATCH 1000              /* snapshot lines per writer op */
#define BOOT_AHEAD 4                 /* batches read (being parsed, parsed or at the writer), not yet applied */
#define BOOT_TOMB_PAGE 1000

enum boot_state {
    BS_START,                        /* decide, then ask for the list */
    BS_LIST,                         /* the list request is out */
    BS_FILE,                         /* download and check (pool) */
    BS_APPLY,                        /* batches */
    BS_TOMB,                         /* tombstone pages */
    BS_END,
};

struct sync_boot_ctx {
    struct job job;                  /* download + check, then the final cleanup */
    struct sync_job *j;
    enum boot_state state;
    /* in (copied on the loop) */
    char path[1200], url[1200], token[128], peer_uid[27];
    struct job_pool *pool;
    struct sync_boot_pick pick;
    /* pool results (download + check) */
    int outcome;                     /* 0 go on, 1 fall back to a pull (msg), -1 fail (msg, http) */
    int http;
    char msg[300];
    uint64_t downloaded;
    char got_sha[65];                /* of the download */
    uint64_t lines;                  /* entity lines read */
    uint64_t t_start, t_fetched, t_checked, t_applied;    /* ms (mono), for the log line */
    /* the reader: one pool job at a time holds it */
    struct snap_reader rd;
    bool rd_open, read_eof, reading;
    bool file_out, cleanup_out;      /* the download job, the cleanup job is out */
    int ahead;                       /* read, not yet applied */
    uint64_t seq_read, seq_applied;
    bool first_applied;              /* the first batch found the space empty and applied */
    struct list ready;               /* batches read, waiting for the writer */
    /* tombstones */
    uint64_t tomb_since;
    bool tomb_busy;
};

struct boot_batch {
    struct job job;
    struct wop op;
    struct list link;
    struct sync_boot_ctx *bc;
    uint64_t seq;
    bool first, tomb, last;          /* last: stores the pull checkpoint */
    bool eof;                        /* the reader reached the file's end with this batch */
    char *raw;                       /* the text to parse: a tombstone page as received, or a batch */
    size_t raw_len;
    uint64_t since;                  /* a tombstone page: where it starts */
    int rc;                          /* pool: -1 with err */
    char err[300];
    bool blobs_fetched;
    struct rep_batch batch;
    struct blob_xfer xfer;
    struct rep_counts cnt;
    /* writer's copies */
    char space[64], peer_instance[27], peer_uid[27], peer_url[512], peer_space[64];
    int64_t space_id;
    uint64_t cp_version;
};

static void boot_pump(struct sync_job *j);

static void batch_free(struct boot_batch *b)
{
    blob_xfer_release(&b->xfer);
    rep_batch_free(&b->batch);
    free(b->raw);
    free(b);
}

/* ---- the end of the phase ---------------------------------------------- */

/* pool: what is left of the file */
static void cleanup_work(struct job *jb)
{
    struct sync_boot_ctx *bc = container_of(jb, struct sync_boot_ctx, job);
    if (bc->rd_open) snap_reader_close(&bc->rd);
    bc->rd_open = false;
    unlink(bc->path);
}

static void cleanup_done(struct job *jb, struct http_req *r)
{
    struct sync_boot_ctx *bc = container_of(jb, struct sync_boot_ctx, job);
    UNUSED(r);
    bc->j->pipeline--;
    if (bc->j->boot_ctx == bc) bc->j->boot_ctx = NULL;
    struct sync_job *j = bc->j;
    free(bc);
    if (!sync_running(j)) return;
    sync_step(j);
}

/* Once nothing of the phase is out any more: the file goes, then the
 * context. The job is held (pipeline) until then. */
static void boot_release(struct sync_boot_ctx *bc)
{
    struct sync_job *j = bc->j;
    if (bc->state != BS_END || bc->reading || bc->ahead || bc->tomb_busy || bc->file_out || bc->cleanup_out) return;
    while (!list_empty(&bc->ready)) {
        struct boot_batch *b = container_of(bc->ready.next, struct boot_batch, link);
        list_remove(&b->link);
        batch_free(b);
    }
    bc->cleanup_out = true;
    j->pipeline++;
    job_submit(&j->srv->jobs, &bc->job, NULL, cleanup_work, cleanup_done);
}

/* The phase is over (ended, failed, or the job ended under it): a piece
 * coming back drops itself and lets the context go. */
static bool boot_gone(struct sync_boot_ctx *bc)
{
    if (sync_running(bc->j) && bc->state != BS_END) return false;
    bc->state = BS_END;
    boot_release(bc);
    return true;
}

/* Falls back to a plain pull, or goes on to it after the snapshot. */
static void boot_finish_phase(struct sync_job *j, enum sync_boot outcome, const char *reason)
{
    struct sync_boot_ctx *bc = j->boot_ctx;
    if (outcome == SYNC_BOOT_SKIPPED)
        log_info("sync_bootstrap_skipped", "\"job\":\"%s\",\"space\":\"%s\",\"reason\":\"%s\"", j->id, j->space,
                 reason);
    else if (bc)
        log_info("sync_bootstrap_applied", "\"job\":\"%s\",\"space\":\"%s\",\"snapshot\":\"%s\",\"entities\":%llu,"
                 "\"tombstones\":%llu,\"download_ms\":%llu,\"check_ms\":%llu,\"apply_ms\":%llu,\"tombstones_ms\":%llu",
                 j->id, j->space, j->boot_snap.id, (unsigned long long)j->boot_entities,
                 (unsigned long long)j->boot_tombstones, (unsigned long long)(bc->t_fetched - bc->t_start),
                 (unsigned long long)(bc->t_checked - bc->t_fetched), (unsigned long long)(bc->t_applied - bc->t_checked),
                 (unsigned long long)(now_ns_mono() / 1000000 - bc->t_applied));
    sync_boot_end(j, outcome, reason);
    sync_publish(j);
    if (bc) {
        bc->state = BS_END;
        boot_release(bc);            /* steps the job once the file is gone */
        return;
    }
    sync_step(j);
}

/* The phase failed: the job ends (once what is out is back). */
static void boot_fail(struct sync_job *j, int http, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void boot_fail(struct sync_job *j, int http, const char *fmt, ...)
{
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    sync_finish(j, http, "bootstrap: %s", why);
    if (j->boot_ctx) {
        j->boot_ctx->state = BS_END;
        boot_release(j->boot_ctx);
    }
}

/* ---- the snapshot list ------------------------------------------------- */

static void on_list(void *arg, const struct peer_result *res)
{
    struct sync_job *j = arg;
    struct sync_boot_ctx *bc = j->boot_ctx;
    j->pipeline--;
    if (boot_gone(bc)) return;
    if (res->status != 200) {
        bc->state = BS_START;
        /* retried: sync_step asks again; or the job failed */
        if (!sync_peer_failed(j, res, "bootstrap: the peer's snapshot list")) boot_gone(bc);
        return;
    }
    j->tries = 0;
    j->bytes += res->body->len;
    char why[200];
    int rc = sync_boot_pick(res->body->data, res->body->len, j->peer_version, &bc->pick, why, sizeof why);
    if (rc < 0) {
        boot_fail(j, 502, "%s", why);
        return;
    }
    if (rc == 0) {
        boot_finish_phase(j, SYNC_BOOT_SKIPPED, why);
        return;
    }
    j->boot_snap = bc->pick;
    bc->state = BS_FILE;
    boot_pump(j);
}

/* ---- download and check (pool) ----------------------------------------- */

struct dl_sink {
    FILE *f;
    uint64_t n, cap;
    EVP_MD_CTX *md;
    struct job_pool *pool;           /* its stopping flag: a shutdown cuts the download short */
};

static size_t to_file(char *p, size_t size, size_t n, void *arg)
{
    struct dl_sink *s = arg;
    s->n += size * n;
    if (s->n > s->cap) return 0;     /* more than the peer said the file holds */
    if (job_pool_stopping(s->pool)) return 0;
    EVP_DigestUpdate(s->md, p, size * n);
    return fwrite(p, size, n, s->f);
}

static int download(struct sync_boot_ctx *bc)
{
    FILE *f = fopen(bc->path, "wbx");
    if (!f) {
        bc->http = 500;
        snprintf(bc->msg, sizeof bc->msg, "cannot create a temp file for the snapshot: %s", strerror(errno));
        return -1;
    }
    struct dl_sink sink = {.f = f, .cap = bc->pick.size_bytes, .md = EVP_MD_CTX_new(), .pool = bc->pool};
    EVP_DigestInit_ex(sink.md, sha256_md(), NULL);
    CURL *e = curl_easy_init();
    char auth[200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", bc->token);
    /* asked for as a header, not CURLOPT_ACCEPT_ENCODING: the file is kept
     * as the peer stored it, the bytes its sha256 describes */
    struct curl_slist *h = curl_slist_append(NULL, auth);
    h = curl_slist_append(h, "Accept-Encoding: gzip");
    curl_easy_setopt(e, CURLOPT_URL, bc->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);          /* a stalled download fails after 30 s */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, to_file);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &sink);
    CURLcode rc = curl_easy_perform(e);
    long code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    bool ok = fclose(f) == 0 && rc == CURLE_OK && code == 200;
    bc->downloaded = sink.n;
    unsigned char d[32];
    unsigned int dl = 32;
    EVP_DigestFinal_ex(sink.md, d, &dl);
    EVP_MD_CTX_free(sink.md);
    hex_encode(bc->got_sha, d, 32);
    if (ok) return 0;
    bc->http = 502;
    if (sink.n > sink.cap)
        snprintf(bc->msg, sizeof bc->msg, "the download of snapshot %s is longer than its size_bytes (%llu)",
                 bc->pick.id, (unsigned long long)bc->pick.size_bytes);
    else
        snprintf(bc->msg, sizeof bc->msg, "downloading snapshot %s failed (%s, HTTP %ld)", bc->pick.id,
                 rc == CURLE_OK ? "ok" : curl_easy_strerror(rc), code);
    return -1;
}

/* Before any line is applied: the download is the file the peer recorded
 * (sha256), and a v2 snapshot of its space at the version it listed. */
static void file_work(struct job *jb)
{
    struct sync_boot_ctx *bc = container_of(jb, struct sync_boot_ctx, job);
    char err[200];
    bc->outcome = -1;
    if (download(bc) < 0) goto out;
    bc->t_fetched = now_ns_mono() / 1000000;
    bc->http = 502;
    if (strcmp(bc->got_sha, bc->pick.sha256)) {
        snprintf(bc->msg, sizeof bc->msg, "the downloaded snapshot %s does not match its sha256 (got %.16s…, the "
                 "peer recorded %.16s…)", bc->pick.id, bc->got_sha, bc->pick.sha256);
        goto out;
    }
    struct snap_header h;
    if (snap_reader_open(&bc->rd, bc->path, err, sizeof err) < 0) {
        snprintf(bc->msg, sizeof bc->msg, "the downloaded snapshot %s is not valid: %s", bc->pick.id, err);
        goto out;
    }
    bc->rd_open = true;
    if (snap_reader_header(&bc->rd, &h, err, sizeof err) < 0) {
        snprintf(bc->msg, sizeof bc->msg, "the downloaded snapshot %s is not valid: %s", bc->pick.id, err);
        goto out;
    }
    if (h.version < SNAP_FORMAT_V2) {
        bc->outcome = 1;
        snprintf(bc->msg, sizeof bc->msg, "the peer's snapshot %s is format v1: its lines carry no revision "
                 "history, so its entities cannot keep their revisions", bc->pick.id);
        goto out;
    }
    if (strcmp(h.space_uid, bc->peer_uid)) {
        bc->outcome = 1;
        snprintf(bc->msg, sizeof bc->msg, "the peer's snapshot %s is of another incarnation of its space",
                 bc->pick.id);
        goto out;
    }
    if (h.server_version != bc->pick.server_version) {
        snprintf(bc->msg, sizeof bc->msg, "the downloaded snapshot %s is at version %llu, its metadata says %llu",
                 bc->pick.id, (unsigned long long)h.server_version, (unsigned long long)bc->pick.server_version);
        goto out;
    }
    bc->pick.entity_total = h.entity_total;
    /* bodies are checked (and made canonical) by the replication parse */
    bc->rd.defer_body = true;
    bc->outcome = 0;
    bc->t_checked = now_ns_mono() / 1000000;
out:
    if (bc->outcome && bc->rd_open) {
        snap_reader_close(&bc->rd);
        bc->rd_open = false;
    }
    if (bc->outcome) unlink(bc->path);
}

static void file_done(struct job *jb, struct http_req *r)
{
    struct sync_boot_ctx *bc = container_of(jb, struct sync_boot_ctx, job);
    struct sync_job *j = bc->j;
    UNUSED(r);
    blob_gate_release(j->srv, &j->srv->sync->gate);
    bool ran = jb->status != UV_ECANCELED;
    memset(&bc->job, 0, sizeof bc->job);
    bc->file_out = false;
    j->pipeline--;
    j->bytes += bc->downloaded;
    j->requests++;
    if (boot_gone(bc)) return;
    if (!ran) {
        boot_fail(j, 503, "interrupted: the server is shutting down");
        return;
    }
    if (bc->outcome < 0) {
        boot_fail(j, bc->http, "%s", bc->msg);
        return;
    }
    if (bc->outcome > 0) {
        boot_finish_phase(j, SYNC_BOOT_SKIPPED, bc->msg);
        return;
    }
    j->boot_snap.entity_total = bc->pick.entity_total;
    bc->state = BS_APPLY;
    boot_pump(j);
}

/* ---- batches ------------------------------------------------------------ */

/* The seam with the format: one v2 line as the /replicate item it is (the
 * same members as a /changes?style=all_revs row), so the replication
 * parser checks it and the writer decides it like any pulled revision. */
static void line_item(struct buf *t, const struct snap_entity *e)
{
    buf_puts(t, "{\"collection\":");
    json_cstr(t, e->collection);
    json_kv_str(t, "id", e->id);
    json_kv_str(t, "rev", e->rev);
    buf_puts(t, ",\"revs\":");
    if (e->revs) buf_append(t, e->revs, e->revs_len);
    else buf_puts(t, "[]");
    if (e->conflicts && e->conflicts_len) {
        buf_puts(t, ",\"conflicts\":");
        buf_append(t, e->conflicts, e->conflicts_len);
    }
    buf_puts(t, ",\"deleted\":false,\"body\":");
    buf_append(t, e->body, e->body_len);
    buf_putc(t, '}');
}

/* pool: the next BOOT_BATCH lines as a /replicate body (the reader is this
 * job's alone while it runs) */
static void read_work(struct job *jb)
{
    struct boot_batch *b = container_of(jb, struct boot_batch, job);
    struct sync_boot_ctx *bc = b->bc;
    struct buf t;
    buf_init(&t);
    buf_puts(&t, "{\"entities\":[");
    struct snap_entity e;
    char err[200];
    int n = 0;
    while (n < BOOT_BATCH) {
        int rc = snap_reader_next(&bc->rd, &e, err, sizeof err);
        if (rc == 0) {
            b->eof = true;
            break;
        }
        if (rc < 0) {
            b->rc = -1;
            snprintf(b->err, sizeof b->err, "the snapshot's line %llu is not valid: %s",
                     (unsigned long long)bc->rd.line, err);
            break;
        }
        if (n++) buf_putc(&t, ',');
        line_item(&t, &e);
    }
    buf_puts(&t, "]}");
    bc->lines += (uint64_t)n;
    if (b->eof) {
        /* the whole stream read (gzip CRC and length checked by the reader):
         * the same bytes as downloaded, and every line the header counts */
        char got[65];
        snap_reader_sha256(&bc->rd, got);
        if (strcmp(got, bc->pick.sha256) || bc->lines != bc->pick.entity_total) {
            b->rc = -1;
            snprintf(b->err, sizeof b->err, "the snapshot file changed while it was read, or its line count (%llu) "
                     "is not its header's (%llu)", (unsigned long long)bc->lines,
                     (unsigned long long)bc->pick.entity_total);
        }
    }
    if (b->eof || b->rc) {
        snap_reader_close(&bc->rd);
        bc->rd_open = false;
        unlink(bc->path);
    }
    b->raw = buf_steal(&t, &b->raw_len);
}

/* pool: a batch or a tombstone page through the replication parser */
static void parse_work(struct job *jb)
{
    struct boot_batch *b = container_of(jb, struct boot_batch, job);
    struct json_err je;
    if (rep_batch_parse(&b->batch, b->raw, b->raw_len, &je) < 0) {
        b->rc = -1;
        snprintf(b->err, sizeof b->err, "%s is not usable: %s", b->tomb ? "the peer's tombstone page" :
                 "a batch of the snapshot", je.message);
    } else if (b->tomb && (!b->batch.has_last || b->batch.last_version < b->since)) {
        b->rc = -1;
        snprintf(b->err, sizeof b->err, "the peer's tombstone page is not usable: bad last_version");
    }
    free(b->raw);
    b->raw = NULL;
}

static void blobs_work(struct job *jb)
{
    struct boot_batch *b = container_of(jb, struct boot_batch, job);
    blob_fetch_work(&b->xfer, b->batch.blobs, b->batch.nblobs);
}

static const char SQL_HAS_DATA[] = "SELECT 1 FROM entities WHERE space_id = ? LIMIT 1";

/* Writer thread. The first batch applies only to a space still empty (a
 * write that came in since the decision would otherwise meet the peer's
 * revisions as if it were theirs to overwrite): else the job falls back to
 * a plain pull. */
static int boot_apply(struct wtx *tx, struct wop *op)
{
    struct boot_batch *b = container_of(op, struct boot_batch, op);
    struct space_stats *sp = wtx_space(tx, b->space);
    if (!sp || sp->id != b->space_id) return wop_fail(op, 404, "space_not_found", "the local space is gone");
    if (b->first) {
        sqlite3_stmt *st = wtx_stmt(tx, SQL_HAS_DATA);
        sqlite3_bind_int64(st, 1, sp->id);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (sp->version || rc == SQLITE_ROW)
            return wop_fail(op, 409, "not_empty", "the local space was written to before the bootstrap began");
    }
    for (size_t k = 0; k < b->batch.nblobs; k++)
        if (blobs_ref_add(tx, sp->id, b->batch.blobs[k], NULL) < 0)
            return wop_fail(op, 500, "storage_error", "recording the batch's blobs failed");
    char origin[80];
    snprintf(origin, sizeof origin, "sync:%s", b->peer_instance);
    if (b->peer_instance[0]) wtx_set_origin(tx, b->peer_instance);
    if (rep_apply_batch(tx, op, sp, &b->batch, origin, &b->cnt, NULL) < 0) return -1;
    if (b->last &&
        sync_checkpoint_save(tx, sp->id, b->peer_url, b->peer_space, "pull", b->peer_uid, b->cp_version) < 0)
        return wop_fail(op, 500, "storage_error", "saving the checkpoint failed");
    return 0;
}

static void count_batch(struct sync_job *j, struct boot_batch *b)
{
    uint64_t applied = b->cnt.applied + b->cnt.conflicts;
    j->pulled += applied;
    if (b->tomb) j->boot_tombstones += applied;
    else j->boot_entities += b->batch.n;
    j->errors += b->cnt.errors;
    j->blobs += b->xfer.moved;
    j->bytes += b->xfer.bytes;
    for (size_t i = 0; (b->cnt.conflicts || b->cnt.errors) && i < b->batch.n; i++) {
        const struct rep_item *it = &b->batch.items[i];
        if (it->conflicted) sync_conflict_seen(j, it->collection, it->id);
        if (it->err_code) sync_error_item_add(j, "pull", it->collection, it->id, it->err_code, it->err);
    }
}

static void boot_applied(struct wop *op, struct http_req *r)
{
    struct boot_batch *b = container_of(op, struct boot_batch, op);
    struct sync_boot_ctx *bc = b->bc;
    struct sync_job *j = bc->j;
    UNUSED(r);
    j->pipeline--;
    if (b->tomb) bc->tomb_busy = false;
    else bc->ahead--;
    bool first = b->first;
    if (boot_gone(bc)) {
        batch_free(b);
        return;
    }
    if (op->err.status == 409 && first) {
        batch_free(b);
        boot_finish_phase(j, SYNC_BOOT_SKIPPED, op->err.msg);
        return;
    }
    if (op->err.status) {
        boot_fail(j, op->err.status == 503 ? 503 : 500, "applying the snapshot failed: %s", op->err.msg);
        batch_free(b);
        return;
    }
    count_batch(j, b);
    if (first) bc->first_applied = true;
    if (b->tomb && !b->last) bc->tomb_since = b->batch.last_version;
    bool last = b->last;
    batch_free(b);
    if (last) {
        /* the checkpoint is stored: the pull starts at the snapshot */
        j->cp_pull = j->pull_from = j->fetch_since = j->boot_snap.server_version;
        snprintf(j->cp_pull_uid, sizeof j->cp_pull_uid, "%s", j->peer_uid);
        j->fetch_more = j->cp_pull < j->peer_version;
        boot_finish_phase(j, SYNC_BOOT_APPLIED, NULL);
        return;
    }
    sync_publish(j);
    boot_pump(j);
}

static void batch_fill_ids(struct boot_batch *b, struct sync_job *j)
{
    b->bc = j->boot_ctx;
    snprintf(b->space, sizeof b->space, "%s", j->space);
    snprintf(b->peer_instance, sizeof b->peer_instance, "%s", j->peer_instance);
    snprintf(b->peer_uid, sizeof b->peer_uid, "%s", j->peer_uid);
    snprintf(b->peer_url, sizeof b->peer_url, "%s", j->peer_url);
    snprintf(b->peer_space, sizeof b->peer_space, "%s", j->peer_space);
    b->space_id = j->space_id;
    b->cp_version = j->boot_snap.server_version;
    sync_xfer_init(&b->xfer, j);
}

static void batch_to_writer(struct sync_job *j, struct boot_batch *b)
{
    j->pipeline++;
    if (writer_submit(j->srv->writer, &b->op, NULL, boot_apply, boot_applied) < 0) {
        j->pipeline--;
        if (b->tomb) b->bc->tomb_busy = false;
        else b->bc->ahead--;
        batch_free(b);
        boot_fail(j, 503, "the local write queue is full");
    }
}

static void batch_parsed(struct job *jb, struct http_req *r);

static void batch_blobs_done(struct job *jb, struct http_req *r)
{
    struct boot_batch *b = container_of(jb, struct boot_batch, job);
    blob_gate_release(b->bc->j->srv, &b->bc->j->srv->sync->gate);
    batch_parsed(jb, r);
}

/* A piece came back when it cannot go on (failed, or the phase is over):
 * dropped; the job fails unless the phase ended already. */
static void batch_drop(struct sync_job *j, struct boot_batch *b)
{
    struct sync_boot_ctx *bc = b->bc;
    if (b->tomb) bc->tomb_busy = false;
    else bc->ahead--;
    const char *why = b->rc ? b->err : b->xfer.err[0] ? b->xfer.err : "interrupted";
    if (!boot_gone(bc)) boot_fail(j, j->srv->shutting_down ? 503 : 502, "%s", why);
    batch_free(b);
}

/* Loop: a batch is parsed (a tombstone page too), its blobs fetched: to
 * the writer in order; the first one alone until it is applied. */
static void batch_parsed(struct job *jb, struct http_req *r)
{
    struct boot_batch *b = container_of(jb, struct boot_batch, job);
    struct sync_boot_ctx *bc = b->bc;
    struct sync_job *j = bc->j;
    UNUSED(r);
    if (jb->status == UV_ECANCELED && !b->rc) {
        b->rc = -1;
        snprintf(b->err, sizeof b->err, "interrupted: the server is shutting down");
    }
    if (b->rc == 0 && b->batch.nblobs && !b->blobs_fetched && sync_running(j) && bc->state != BS_END) {
        b->blobs_fetched = true;
        blob_gate_submit(j->srv, &j->srv->sync->gate, &b->job, blobs_work, batch_blobs_done);
        return;
    }
    j->pipeline--;
    if (b->rc || b->xfer.err[0] || !sync_running(j) || bc->state == BS_END) {
        batch_drop(j, b);
        return;
    }
    if (b->tomb) {
        b->last = !b->batch.more;
        batch_to_writer(j, b);
        return;
    }
    list_insert_tail(&bc->ready, &b->link);
    boot_pump(j);
}

/* Loop: a batch's text is read; it is parsed on another pool thread while
 * the reader goes on with the next. */
static void batch_read(struct job *jb, struct http_req *r)
{
    struct boot_batch *b = container_of(jb, struct boot_batch, job);
    struct sync_boot_ctx *bc = b->bc;
    struct sync_job *j = bc->j;
    UNUSED(r);
    bc->reading = false;
    if (b->eof) bc->read_eof = true;
    if (jb->status == UV_ECANCELED && !b->rc) {
        b->rc = -1;
        snprintf(b->err, sizeof b->err, "interrupted: the server is shutting down");
    }
    if (b->rc || !sync_running(j) || bc->state == BS_END) {
        j->pipeline--;
        batch_drop(j, b);
        return;
    }
    memset(&b->job, 0, sizeof b->job);
    job_submit(&j->srv->jobs, &b->job, NULL, parse_work, batch_parsed);    /* pipeline: still counted */
    boot_pump(j);
}

static void on_tomb_page(void *arg, const struct peer_result *res)
{
    struct sync_job *j = arg;
    struct sync_boot_ctx *bc = j->boot_ctx;
    j->pipeline--;
    bc->tomb_busy = false;
    if (boot_gone(bc)) return;
    if (res->status != 200) {
        /* retried: sync_step asks again; or the job failed */
        if (!sync_peer_failed(j, res, "bootstrap: the peer's tombstones")) boot_gone(bc);
        return;
    }
    bc->tomb_busy = true;
    j->tries = 0;
    j->bytes += res->body->len;
    struct boot_batch *b = xcalloc(1, sizeof *b);
    batch_fill_ids(b, j);
    b->tomb = true;
    b->since = bc->tomb_since;
    b->raw = buf_steal(res->body, &b->raw_len);
    j->pipeline++;
    job_submit(&j->srv->jobs, &b->job, NULL, parse_work, batch_parsed);
}

/* ---- the phase's step (loop) -------------------------------------------- */

static void boot_start(struct sync_job *j)
{
    struct space *sp = spaces_get(j->srv->spaces, j->space);
    const char *why = sync_boot_precheck(j, sp ? sp->st.version : 1);
    if (why) {
        boot_finish_phase(j, SYNC_BOOT_SKIPPED, why);
        return;
    }
    struct sync_boot_ctx *bc = xcalloc(1, sizeof *bc);
    bc->j = j;
    list_init(&bc->ready);
    snprintf(bc->peer_uid, sizeof bc->peer_uid, "%s", j->peer_uid);
    snprintf(bc->token, sizeof bc->token, "%s", j->token);
    bc->pool = &j->srv->jobs;
    char name[64];
    snprintf(name, sizeof name, "boot-%s", j->id);
    snap_file(j->srv->cfg->data_dir, name, true, bc->path, sizeof bc->path);
    j->boot_ctx = bc;
    bc->state = BS_LIST;
    j->pipeline++;
    if (sync_send_peer(j, "GET", "/snapshots?status=completed&limit=100", NULL, 0, on_list, false) < 0) {
        j->pipeline--;
        boot_fail(j, 500, "cannot start a request to the peer");
    }
}

/* the next batch to read, or the ready one to hand to the writer */
static void apply_pump(struct sync_job *j, struct sync_boot_ctx *bc)
{
    for (;;) {
        struct boot_batch *b = NULL;
        for (struct list *l = bc->ready.next; l != &bc->ready; l = l->next) {
            struct boot_batch *x = container_of(l, struct boot_batch, link);
            if (x->seq == bc->seq_applied) { b = x; break; }
        }
        if (!b || (!b->first && !bc->first_applied)) break;
        list_remove(&b->link);
        bc->seq_applied++;
        batch_to_writer(j, b);     /* no checkpoint: that waits for the tombstones */
        if (!sync_running(j)) return;
    }
    if (!bc->reading && !bc->read_eof && bc->ahead < BOOT_AHEAD) {
        struct boot_batch *b = xcalloc(1, sizeof *b);
        batch_fill_ids(b, j);
        b->seq = bc->seq_read++;
        b->first = b->seq == 0;
        bc->reading = true;
        bc->ahead++;
        j->pipeline++;
        job_submit(&j->srv->jobs, &b->job, NULL, read_work, batch_read);
        return;
    }
    if (!bc->reading && bc->read_eof && !bc->ahead) {
        /* every line is applied (a snapshot without lines applies none):
         * the tombstones next */
        bc->state = BS_TOMB;
        bc->t_applied = now_ns_mono() / 1000000;
        boot_pump(j);
    }
}

static void boot_pump(struct sync_job *j)
{
    struct sync_boot_ctx *bc = j->boot_ctx;
    if (!sync_running(j) || (bc && bc->state == BS_END)) return;
    if (j->srv->shutting_down) {
        /* what is out comes back and is dropped; the job ends now */
        boot_fail(j, 503, "interrupted: the server is shutting down");
        return;
    }
    if (!bc) {
        boot_start(j);
        return;
    }
    if (sync_retry_waiting(j)) return;
    switch (bc->state) {
    case BS_START:                   /* after a retry's wait */
        bc->state = BS_LIST;
        j->pipeline++;
        if (sync_send_peer(j, "GET", "/snapshots?status=completed&limit=100", NULL, 0, on_list, false) < 0) {
            j->pipeline--;
            boot_fail(j, 500, "cannot start a request to the peer");
        }
        return;
    case BS_FILE: {
        if (bc->file_out) return;
        char tail[200];
        snprintf(tail, sizeof tail, "/snapshots/%s/download", bc->pick.id);
        size_t l = strlen(j->peer_url);
        snprintf(bc->url, sizeof bc->url, "%.*s/api/v1/spaces/%s%s", (int)(l && j->peer_url[l - 1] == '/' ? l - 1 : l),
                 j->peer_url, j->peer_space, tail);
        bc->file_out = true;
        bc->t_start = now_ns_mono() / 1000000;
        j->pipeline++;
        blob_gate_submit(j->srv, &j->srv->sync->gate, &bc->job, file_work, file_done);
        return;
    }
    case BS_APPLY:
        apply_pump(j, bc);
        return;
    case BS_TOMB: {
        if (bc->tomb_busy) return;
        char tail[160];
        snprintf(tail, sizeof tail, "/changes?since=%llu&limit=%d&style=all_revs&deleted=only",
                 (unsigned long long)bc->tomb_since, BOOT_TOMB_PAGE);
        bc->tomb_busy = true;
        j->pipeline++;
        if (sync_send_peer(j, "GET", tail, NULL, 0, on_tomb_page, false) < 0) {
            j->pipeline--;
            bc->tomb_busy = false;
            boot_fail(j, 500, "cannot start a request to the peer");
        }
        return;
    }
    case BS_LIST:
    case BS_END: return;
    }
}

/* After the loop has ended (sync_free, main thread): a phase whose
 * release never came -- a piece that was out when shutdown began and whose
 * answer the stopped loop never delivered -- still holds the open reader,
 * parsed batches and the downloaded file. Blocking calls are fine here:
 * nothing else runs any more. */
void sync_boot_discard(struct sync_job *j)
{
    struct sync_boot_ctx *bc = j->boot_ctx;
    if (!bc) return;
    while (!list_empty(&bc->ready)) {
        struct boot_batch *b = container_of(bc->ready.next, struct boot_batch, link);
        list_remove(&b->link);
        batch_free(b);
    }
    if (bc->rd_open) snap_reader_close(&bc->rd);
    if (bc->path[0]) unlink(bc->path);
    free(bc);
    j->boot_ctx = NULL;
}

/* The phase's step (sync_hooks.boot_step): also after a retry's wait, and
 * at shutdown. */
void sync_boot_step(struct sync_job *j)
{
    if (j->srv->shutting_down || !sync_running(j)) {
        boot_fail(j, 503, "interrupted: the server is shutting down");
        return;
    }
    boot_pump(j);
}
