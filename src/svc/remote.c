/* remote.c - the upload engine (see remote.h).
 *
 * Life of an upload:
 *   loop     snapshot completed (snap hook): a writer op adds its row
 *            (pending) and it joins the queue; one upload runs at a time
 *   pool     src_open_work: the file opened, the row's metadata read, the
 *            age header made (encryption); the object's size is then known
 *   loop     WebDAV: MKCOL of each directory; S3 above the part size:
 *            create a multipart upload
 *   loop+pool the object streamed: curl pulls bytes on the loop from one
 *            buffer (up_read) while src_fill_work reads, encrypts and hashes
 *            the next MiB on the pool; parts never straddle a buffer
 *   loop     S3 multipart: complete; then HEAD: size (and ETag) checked;
 *            then the manifest; then the row is marked uploaded (writer op,
 *            audited) -- so a kill -9 anywhere before leaves the row
 *            pending/uploading and no manifest on the remote
 *   loop     retention of this instance's own objects of that kind, read
 *            once the uploaded row is committed; the next upload waits
 * A failed attempt waits retry_ms * 2^(n-1) (at most 10 minutes) and
 * starts over; 401/403/404 and the last attempt end it as failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/counters.h"
#include "core/json.h"
#include "core/log.h"
#include "net/server.h"
#include "remote_int.h"
#include "store/store.h"
#include "store/writer.h"
#include "svc/sse.h"

#define FILL_CHUNK (1u << 20)
#define READ_STEP (256u << 10)
#define MAX_BACKOFF_MS (600u * 1000)

struct qitem {
    struct list link;
    char id[27], space[64], kind[16], key[512];
    uint64_t attempts;
};

/* the pool side of one attempt: only a job touches it while it runs */
struct src {
    struct job job;
    struct upload *u;                /* the loop's only: a job never reads it */
    /* in (copies: the loop may end the attempt, and drop u, while a job runs) */
    char path[1200], id[27], instance[27], space[64], kind[16];
    const struct rtarget *t;
    uint64_t part_size;
    bool enc;
    /* state */
    int fd;
    struct age_enc age;
    struct buf carry;                /* bytes made (encrypted) but not yet handed out */
    struct buf fill;                 /* the buffer being filled for the loop */
    EVP_MD_CTX *sha, *md5, *md5_part;
    uint64_t plain_size, size, produced;
    bool eof;
    struct buf part_md5;             /* 16 bytes per finished part */
    /* out */
    int err;
    char msg[200];
    char sha256[65], md5_hex[33];
    struct buf manifest;             /* built when the last byte is made */
    struct buf meta;                 /* the row's members for the manifest */
};

enum up_stage { UP_OPEN, UP_MKCOL, UP_CREATE, UP_PUT, UP_COMPLETE, UP_HEAD, UP_MANIFEST, UP_DONE };

struct upload {
    struct qitem *it;
    struct src *src;
    bool job_running;                /* src is the pool's until its done runs */
    bool filling, next_ready, waiting;
    struct buf cur;
    size_t cur_off;
    struct rhttp *h;
    enum up_stage stage;
    int mkcol_i;
    char upload_id[300];
    uint64_t part, nparts;           /* S3 multipart: 1-based part being sent, how many */
    struct buf etags;                /* "<Part>..." of the completed ones */
    uint64_t sent;
    int last_decile;
};

static struct {
    struct server *srv;
    const struct rtarget *t;
    struct list queue;
    struct upload *cur;
    uv_timer_t retry;
    bool timer_init, stopping;
    bool retaining;                  /* a retention pass runs: the next upload waits */
    uint64_t queued;
} rc_;

const struct rtarget *remote_target(struct server *srv)
{
    UNUSED(srv);
    return rc_.t && rc_.t->base[0] ? rc_.t : NULL;
}

static void pump(void);
static void attempt_failed(int status, const char *msg);

/* ---- events ------------------------------------------------------------- */

static void publish(const struct qitem *it, const char *status, const char *error, uint64_t sent, uint64_t total)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"space\":");
    json_cstr(&b, it->space);
    json_kv_str(&b, "snapshot", it->id);
    json_kv_str(&b, "kind", it->kind);
    json_kv_str(&b, "status", "completed");
    buf_puts(&b, ",\"remote\":{\"status\":");
    json_cstr(&b, status);
    json_kv_str(&b, "key", it->key);
    json_kv_u64(&b, "attempts", it->attempts);
    json_kv_str(&b, "error", error);
    json_kv_u64(&b, "bytes_sent", sent);
    json_kv_u64(&b, "bytes_total", total);
    buf_puts(&b, "}}");
    sse_publish(rc_.srv, SSE_SNAPSHOT, it->space, b.data, b.len);
    buf_free(&b);
}

/* ---- rows (writer) ------------------------------------------------------- */

struct row_op {
    struct wop op;
    struct qitem it;
    char status[16], error[300], sha256[65];
    uint64_t bytes, total;
    bool final, insert, remove;
    void (*then)(struct row_op *ro);
};

static int row_apply(struct wtx *tx, struct wop *op)
{
    struct row_op *ro = container_of(op, struct row_op, op);
    sqlite3_stmt *st;
    if (ro->insert) {
        st = wtx_stmt(tx, "INSERT OR IGNORE INTO snapshot_remote(snapshot_id, space, kind, status, key, created_at)"
                          " VALUES (?, ?, ?, 'pending', ?, ?)");
        sqlite3_bind_text(st, 1, ro->it.id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, ro->it.space, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, ro->it.kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, ro->it.key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)wtx_now(tx));
    } else if (ro->remove) {
        st = wtx_stmt(tx, "DELETE FROM snapshot_remote WHERE snapshot_id = ?");
        sqlite3_bind_text(st, 1, ro->it.id, -1, SQLITE_STATIC);
    } else {
        st = wtx_stmt(tx, "UPDATE snapshot_remote SET status = ?2, attempts = ?3, error = ?4,"
                          " uploaded_at = CASE WHEN ?2 = 'uploaded' THEN ?5 ELSE uploaded_at END,"
                          " object_bytes = coalesce(?6, object_bytes), object_sha256 = coalesce(?7, object_sha256)"
                          " WHERE snapshot_id = ?1");
        sqlite3_bind_text(st, 1, ro->it.id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, ro->status, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)ro->it.attempts);
        if (ro->error[0]) sqlite3_bind_text(st, 4, ro->error, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)wtx_now(tx));
        if (ro->sha256[0]) {
            sqlite3_bind_int64(st, 6, (sqlite3_int64)ro->bytes);
            sqlite3_bind_text(st, 7, ro->sha256, -1, SQLITE_STATIC);
        }
    }
    if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "recording the upload failed");
    if (ro->final || ro->remove) {
        struct buf m;
        buf_init(&m);
        buf_puts(&m, "{\"key\":");
        json_cstr(&m, ro->it.key);
        if (ro->remove) json_kv_str(&m, "reason", "remote retention");
        else {
            json_kv_str(&m, "status", ro->status);
            json_kv_u64(&m, "attempts", ro->it.attempts);
            if (ro->error[0]) json_kv_str(&m, "error", ro->error);
        }
        buf_putc(&m, '}');
        int rc = wtx_audit(tx, "remote", ro->remove ? "snapshot.remote_delete" : "snapshot.remote_upload", ro->it.space,
                           ro->it.id, m.data, NULL);
        buf_free(&m);
        if (rc < 0) return wop_fail(op, 500, "storage_error", "audit failed");
    }
    return 0;
}

static void row_done(struct wop *op, struct http_req *r)
{
    struct row_op *ro = container_of(op, struct row_op, op);
    UNUSED(r);
    if (op->err.status) log_error("remote_row_failed", "\"snapshot\":\"%s\",\"error\":\"%s\"", ro->it.id, op->err.msg);
    /* the end state's event goes once the row says so: a client that reads
     * the metadata on it sees the same */
    if (ro->final && !rc_.stopping)
        publish(&ro->it, ro->status, ro->error[0] ? ro->error : NULL, ro->sha256[0] ? ro->bytes : 0, ro->total);
    if (ro->then && !rc_.stopping) ro->then(ro);
    free(ro);
}

static struct row_op *row_op(const struct qitem *it, const char *status, const char *error)
{
    struct row_op *ro = xcalloc(1, sizeof *ro);
    ro->it = *it;
    snprintf(ro->status, sizeof ro->status, "%s", status);
    snprintf(ro->error, sizeof ro->error, "%s", error ? error : "");
    return ro;
}

static void row_submit(struct row_op *ro)
{
    if (writer_submit(rc_.srv->writer, &ro->op, NULL, row_apply, row_done) < 0) {
        /* the queue is full: the row keeps its last state; a restart redoes it */
        log_error("remote_row_failed", "\"snapshot\":\"%s\",\"error\":\"the write queue is full\"", ro->it.id);
        if (ro->final) publish(&ro->it, ro->status, ro->error[0] ? ro->error : NULL, ro->sha256[0] ? ro->bytes : 0, ro->total);
        if (ro->then) ro->then(ro);
        free(ro);
    }
}

/* ---- the source: the file, encrypted and hashed, on the pool ---------------- */

static int meta_read(struct src *s)
{
    sqlite3 *db = store_reader_get(job_server(&s->job)->store);
    if (!db) return -1;
    sqlite3_stmt *q;
    int rc = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT created_at, server_version, entity_total, entity_counts, raw_bytes, size_bytes,"
                           " sha256, note, status FROM snapshots WHERE id = ?",
                           -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_text(q, 1, s->id, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(q, 8), "completed")) {
            json_kv_time(&s->meta, "created_at", (uint64_t)sqlite3_column_int64(q, 0));
            json_kv_u64(&s->meta, "server_version", (uint64_t)sqlite3_column_int64(q, 1));
            json_kv_u64(&s->meta, "entity_total", (uint64_t)sqlite3_column_int64(q, 2));
            json_key(&s->meta, "entity_counts");
            buf_puts(&s->meta, (const char *)sqlite3_column_text(q, 3));
            json_kv_u64(&s->meta, "raw_bytes", (uint64_t)sqlite3_column_int64(q, 4));
            json_kv_u64(&s->meta, "size_bytes", (uint64_t)sqlite3_column_int64(q, 5));
            json_kv_str(&s->meta, "sha256", (const char *)sqlite3_column_text(q, 6));
            json_kv_str(&s->meta, "note", (const char *)sqlite3_column_text(q, 7));
            rc = 0;
        }
        sqlite3_finalize(q);
    }
    store_reader_put(job_server(&s->job)->store, db);
    return rc;
}

static void src_open_work(struct job *j)
{
    struct src *s = container_of(j, struct src, job);
    buf_putc(&s->meta, '{');
    if (meta_read(s) < 0) {
        s->err = ENOENT;
        snprintf(s->msg, sizeof s->msg, "the snapshot is gone or not completed; nothing to upload");
        return;
    }
    s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (s->fd < 0 || fstat(s->fd, &st) < 0) {
        s->err = errno;
        snprintf(s->msg, sizeof s->msg, "the local snapshot file cannot be read: %s", strerror(errno));
        return;
    }
    posix_fadvise(s->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    s->plain_size = (uint64_t)st.st_size;
    s->size = s->plain_size;
    if (s->enc) {
        char err[200];
        if (age_enc_init(&s->age, s->t->recipients, s->t->nrecipients, &s->carry, err, sizeof err) < 0) {
            s->err = EIO;
            snprintf(s->msg, sizeof s->msg, "%s", err);
            return;
        }
        s->size = age_enc_size(s->carry.len, s->plain_size);
    }
    s->sha = EVP_MD_CTX_new();
    s->md5 = EVP_MD_CTX_new();
    s->md5_part = EVP_MD_CTX_new();
    EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL);
    EVP_DigestInit_ex(s->md5, EVP_md5(), NULL);
    EVP_DigestInit_ex(s->md5_part, EVP_md5(), NULL);
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    static const char h[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = h[d[i] >> 4];
        out[2 * i + 1] = h[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* the manifest: what listing needs in clear; with encryption the rest is
 * sealed to the same recipients */
static int build_manifest(struct src *s)
{
    struct buf *m = &s->manifest;
    char key[512];
    rt_keys(s->t, s->instance, s->space, s->id, s->enc, key, NULL, sizeof key);
    buf_puts(m, "{\"format\":\"" RT_MANIFEST_FORMAT "\"");
    json_kv_str(m, "instance_id", s->instance);
    json_kv_str(m, "space", s->space);
    json_kv_str(m, "snapshot", s->id);
    json_kv_str(m, "kind", s->kind);
    json_kv_str(m, "key", key);
    json_kv_u64(m, "object_bytes", s->size);
    json_kv_str(m, "object_sha256", s->sha256);
    json_kv_bool(m, "encrypted", s->enc);
    /* created_at stays in clear: listing sorts and shows it */
    const char *ca = strstr(s->meta.data, "\"created_at\":");
    if (ca) {
        const char *end = strchr(ca + 13, ',');
        buf_putc(m, ',');
        buf_append(m, ca, end ? (size_t)(end - ca) : strlen(ca));
    }
    buf_putc(&s->meta, '}');
    if (!s->enc) {
        buf_puts(m, ",\"meta\":");
        buf_append(m, s->meta.data, s->meta.len);
    } else {
        struct age_enc e;
        struct buf sealed;
        char err[200];
        buf_init(&sealed);
        if (age_enc_init(&e, s->t->recipients, s->t->nrecipients, &sealed, err, sizeof err) < 0 ||
            age_enc_update(&e, s->meta.data, s->meta.len, &sealed) < 0 || age_enc_final(&e, &sealed) < 0) {
            age_enc_free(&e);
            buf_free(&sealed);
            return -1;
        }
        age_enc_free(&e);
        size_t n = 4 * ((sealed.len + 2) / 3) + 1;
        char *b64 = xmalloc(n);
        EVP_EncodeBlock((unsigned char *)b64, (unsigned char *)sealed.data, (int)sealed.len);
        json_kv_str(m, "sealed_meta", b64);
        free(b64);
        buf_free(&sealed);
    }
    buf_putc(m, '}');
    return 0;
}

/* takes n bytes of carry into the loop's next buffer, hashing them */
static void hand_out(struct src *s, size_t n)
{
    buf_append(&s->fill, s->carry.data, n);
    EVP_DigestUpdate(s->sha, s->carry.data, n);
    /* MD5s only where an ETag is checked against them (S3): the object's,
     * and each part's of a multipart upload */
    if (s->t->kind == RT_S3) EVP_DigestUpdate(s->md5, s->carry.data, n);
    if (s->t->kind == RT_S3 && s->size > s->part_size) EVP_DigestUpdate(s->md5_part, s->carry.data, n);
    memmove(s->carry.data, s->carry.data + n, s->carry.len - n);
    s->carry.len -= n;
    s->produced += n;
    if (s->produced % s->part_size == 0 || s->produced == s->size) {
        unsigned char md[16];
        unsigned int l = 16;
        EVP_DigestFinal_ex(s->md5_part, md, &l);
        buf_append(&s->part_md5, md, 16);
        EVP_DigestInit_ex(s->md5_part, EVP_md5(), NULL);
    }
}

static void src_fill_work(struct job *j)
{
    struct src *s = container_of(j, struct src, job);
    uint64_t part_end = (s->produced / s->part_size + 1) * s->part_size;
    if (part_end > s->size) part_end = s->size;
    size_t want = part_end - s->produced < FILL_CHUNK ? (size_t)(part_end - s->produced) : FILL_CHUNK;
    buf_reset(&s->fill);
    char *in = xmalloc(READ_STEP);
    while (s->carry.len < want && !s->eof) {
        ssize_t n = read(s->fd, in, READ_STEP);
        if (n < 0) {
            s->err = errno;
            snprintf(s->msg, sizeof s->msg, "reading the local snapshot file failed: %s", strerror(errno));
            break;
        }
        if (n == 0) {
            s->eof = true;
            if (s->enc && age_enc_final(&s->age, &s->carry) < 0) s->err = EIO;
            break;
        }
        if (s->enc) {
            if (age_enc_update(&s->age, in, (size_t)n, &s->carry) < 0) { s->err = EIO; break; }
        } else {
            buf_append(&s->carry, in, (size_t)n);
        }
    }
    free(in);
    if (s->err) return;
    if (s->carry.len < want) {
        s->err = EIO;
        snprintf(s->msg, sizeof s->msg, "the local snapshot file changed size during the upload");
        return;
    }
    hand_out(s, want);
    if (s->produced == s->size) {
        unsigned char md[32];
        unsigned int l = 32;
        EVP_DigestFinal_ex(s->sha, md, &l);
        hex(md, 32, s->sha256);
        l = 16;
        EVP_DigestFinal_ex(s->md5, md, &l);
        hex(md, 16, s->md5_hex);
        if (build_manifest(s) < 0) {
            s->err = EIO;
            snprintf(s->msg, sizeof s->msg, "sealing the manifest failed");
        }
    }
}

static void src_free(struct src *s)
{
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    age_enc_free(&s->age);
    buf_free(&s->carry);
    buf_free(&s->fill);
    buf_free(&s->part_md5);
    buf_free(&s->manifest);
    buf_free(&s->meta);
    EVP_MD_CTX_free(s->sha);
    EVP_MD_CTX_free(s->md5);
    EVP_MD_CTX_free(s->md5_part);
    free(s);
}

/* ---- the loop side of the stream ------------------------------------------- */

static void fill_done(struct job *j, struct http_req *r);

static void kick_fill(struct upload *u)
{
    if (u->filling || u->next_ready || u->src->produced >= u->src->size || u->src->err) return;
    u->filling = true;
    u->job_running = true;
    job_submit(&rc_.srv->jobs, &u->src->job, NULL, src_fill_work, fill_done);
}

static void fill_done(struct job *j, struct http_req *r)
{
    struct src *s = container_of(j, struct src, job);
    struct upload *u = s->u;
    UNUSED(r);
    if (!u) {                        /* the attempt ended meanwhile */
        src_free(s);
        return;
    }
    u->filling = false;
    u->job_running = false;
    if (s->err) {
        if (u->h) rhttp_cancel(u->h), u->h = NULL;
        attempt_failed(0, s->msg);
        return;
    }
    u->next_ready = true;
    if (u->waiting && u->h) {
        u->waiting = false;
        rhttp_resume(u->h);
    }
}

static size_t up_read(void *arg, char *dst, size_t cap)
{
    struct upload *u = arg;
    if (u->cur_off == u->cur.len) {
        if (!u->next_ready) {
            kick_fill(u);
            u->waiting = true;
            return RHTTP_PAUSE;
        }
        struct buf t = u->cur;
        u->cur = u->src->fill;
        u->src->fill = t;
        u->cur_off = 0;
        u->next_ready = false;
        kick_fill(u);
    }
    size_t n = u->cur.len - u->cur_off < cap ? u->cur.len - u->cur_off : cap;
    memcpy(dst, u->cur.data + u->cur_off, n);
    u->cur_off += n;
    u->sent += n;
    int decile = (int)(u->sent * 10 / (u->src->size ? u->src->size : 1));
    if (decile > u->last_decile && decile < 10) {
        u->last_decile = decile;
        publish(u->it, "uploading", NULL, u->sent, u->src->size);
    }
    return n;
}

/* ---- the protocol steps ------------------------------------------------------ */

static void step(struct upload *u);

static void step_done(void *arg, const struct rhttp_result *res)
{
    struct upload *u = arg;
    u->h = NULL;
    const char *what = u->stage == UP_MKCOL ? "creating the remote directory"
                       : u->stage == UP_CREATE ? "starting the multipart upload"
                       : u->stage == UP_PUT ? "uploading the snapshot"
                       : u->stage == UP_COMPLETE ? "completing the multipart upload"
                       : u->stage == UP_HEAD ? "checking the uploaded object"
                                              : "uploading the manifest";
    int st = res->status;
    bool ok = st >= 200 && st < 300;
    if (u->stage == UP_MKCOL) ok = ok || st == 405 || st == 301;   /* 405: it is there already */
    if (!ok) {
        char msg[400];
        rt_status_msg(msg, sizeof msg, what, st, res->timed_out ? "no byte moved within --remote-timeout-ms" : res->error);
        attempt_failed(st, msg);
        return;
    }
    struct src *s = u->src;
    char tmp[300];
    size_t pos = 0;
    switch (u->stage) {
    case UP_MKCOL:
        u->mkcol_i++;
        break;
    case UP_CREATE:
        if (rt_xml_next(res->body->data ? res->body->data : "", res->body->len, &pos, "UploadId", u->upload_id,
                        sizeof u->upload_id) < 0 || !u->upload_id[0]) {
            attempt_failed(0, "starting the multipart upload: the answer has no UploadId");
            return;
        }
        u->part = 1;
        u->stage = UP_PUT;
        break;
    case UP_PUT:
        if (u->nparts) {
            /* the part's ETag is the MD5 of what we sent */
            char want[33];
            hex((const unsigned char *)s->part_md5.data + 16 * (u->part - 1), 16, want);
            if (res->etag[0] && strcasecmp(res->etag, want)) {
                attempt_failed(0, "uploading the snapshot: a part's ETag does not match what was sent");
                return;
            }
            buf_printf(&u->etags, "<Part><PartNumber>%llu</PartNumber><ETag>\"%s\"</ETag></Part>",
                       (unsigned long long)u->part, want);
            if (++u->part <= u->nparts) break;
            u->stage = UP_COMPLETE;
        } else {
            u->stage = UP_HEAD;
        }
        break;
    case UP_COMPLETE:
        /* S3 can answer 200 and an <Error> body */
        if (res->body->len && rt_xml_next(res->body->data, res->body->len, &pos, "Error", tmp, sizeof tmp) == 0) {
            attempt_failed(500, "completing the multipart upload: the remote answered an error");
            return;
        }
        u->upload_id[0] = '\0';
        u->stage = UP_HEAD;
        break;
    case UP_HEAD: {
        if (res->content_length != (int64_t)s->size) {
            char msg[200];
            snprintf(msg, sizeof msg, "the uploaded object has %lld bytes, not %llu", (long long)res->content_length,
                     (unsigned long long)s->size);
            attempt_failed(0, msg);
            return;
        }
        if (rc_.t->kind == RT_S3 && res->etag[0]) {
            char want[64];
            if (u->nparts) {
                unsigned char md[16];
                unsigned int l = 16;
                EVP_Digest(s->part_md5.data, s->part_md5.len, md, &l, EVP_md5(), NULL);
                hex(md, 16, want);
                snprintf(want + 32, sizeof want - 32, "-%llu", (unsigned long long)u->nparts);
            } else {
                snprintf(want, sizeof want, "%s", s->md5_hex);
            }
            /* S3 gives a multipart object the MD5 of its parts' MD5s and
             * "-N"; some compatible stores the MD5 of the whole: both are
             * digests of what was sent */
            if (strcasecmp(res->etag, want) && strcasecmp(res->etag, s->md5_hex)) {
                attempt_failed(0, "the uploaded object's ETag does not match the MD5 of what was sent");
                return;
            }
        }
        u->stage = UP_MANIFEST;
        break;
    }
    case UP_MANIFEST:
        u->stage = UP_DONE;
        break;
    default:
        break;
    }
    step(u);
}

static void upload_finished(struct upload *u, bool ok, const char *error);

/* the directories of a key, one MKCOL each (WebDAV creates one level at a time) */
static bool next_mkcol(struct upload *u, char *dir, size_t cap)
{
    const char *key = u->it->key;
    int level = 0;
    for (const char *p = key; *p; p++) {
        if (*p != '/') continue;
        if (level++ == u->mkcol_i) {
            snprintf(dir, cap, "%.*s/", (int)(p - key), key);
            return true;
        }
    }
    return false;
}

static void step(struct upload *u)
{
    struct src *s = u->src;
    struct rhttp_req q = {.done = step_done, .arg = u, .upload_size = -1, .max_response = 1u << 20};
    char query[600], dir[600], mkey[600];
    const char *const xml_hdr[] = {"Content-Type: application/xml", NULL};
    const char *const json_hdr[] = {"Content-Type: application/json", NULL};
    const char *const bin_hdr[] = {"Content-Type: application/octet-stream", NULL};
    switch (u->stage) {
    case UP_MKCOL:
        if (next_mkcol(u, dir, sizeof dir)) {
            u->h = rt_request(rc_.srv, rc_.t, "MKCOL", dir, NULL, &q);
            break;
        }
        u->stage = UP_PUT;
        step(u);
        return;
    case UP_CREATE:
        u->h = rt_request(rc_.srv, rc_.t, "POST", u->it->key, "uploads=", &q);
        break;
    case UP_PUT: {
        uint64_t len = s->size;
        if (u->nparts) {
            uint64_t off = (u->part - 1) * rc_.t->part_size;
            len = s->size - off < rc_.t->part_size ? s->size - off : rc_.t->part_size;
            struct buf qs;
            buf_init(&qs);
            buf_printf(&qs, "partNumber=%llu&uploadId=", (unsigned long long)u->part);
            rt_query_escape(&qs, u->upload_id);
            snprintf(query, sizeof query, "%s", qs.data);
            buf_free(&qs);
        }
        q.upload_size = (int64_t)len;
        q.read = up_read;
        q.headers = bin_hdr;
        kick_fill(u);
        u->h = rt_request(rc_.srv, rc_.t, "PUT", u->it->key, u->nparts ? query : NULL, &q);
        break;
    }
    case UP_COMPLETE: {
        struct buf body, qs;
        buf_init(&body);
        buf_init(&qs);
        buf_printf(&body, "<CompleteMultipartUpload>%s</CompleteMultipartUpload>", u->etags.data);
        buf_puts(&qs, "uploadId=");
        rt_query_escape(&qs, u->upload_id);
        q.body = body.data;
        q.body_len = body.len;
        q.headers = xml_hdr;
        u->h = rt_request(rc_.srv, rc_.t, "POST", u->it->key, qs.data, &q);
        buf_free(&body);
        buf_free(&qs);
        break;
    }
    case UP_HEAD:
        u->h = rt_request(rc_.srv, rc_.t, "HEAD", u->it->key, NULL, &q);
        break;
    case UP_MANIFEST:
        snprintf(mkey, sizeof mkey, "%s", u->it->key);
        char *dot = strstr(mkey, RT_DATA_SUFFIX);
        if (dot) snprintf(dot, sizeof mkey - (size_t)(dot - mkey), RT_MANIFEST_SUFFIX);
        q.body = s->manifest.data;
        q.body_len = s->manifest.len;
        q.headers = json_hdr;
        u->h = rt_request(rc_.srv, rc_.t, "PUT", mkey, NULL, &q);
        break;
    case UP_DONE:
        upload_finished(u, true, NULL);
        return;
    default:
        return;
    }
    if (!u->h) attempt_failed(0, "the request could not be started");
}

static void open_done(struct job *j, struct http_req *r)
{
    struct src *s = container_of(j, struct src, job);
    struct upload *u = s->u;
    UNUSED(r);
    if (!u) {
        src_free(s);
        return;
    }
    u->job_running = false;
    if (s->err) {
        /* nothing to send: no retry can help */
        upload_finished(u, false, s->msg);
        return;
    }
    u->nparts = rc_.t->kind == RT_S3 && s->size > rc_.t->part_size ? (s->size + rc_.t->part_size - 1) / rc_.t->part_size : 0;
    kick_fill(u);
    u->stage = rc_.t->kind == RT_DAV ? UP_MKCOL : u->nparts ? UP_CREATE : UP_PUT;
    step(u);
}

static void attempt_start(struct upload *u)
{
    struct src *s = xcalloc(1, sizeof *s);
    s->u = u;
    s->fd = -1;
    s->t = rc_.t;
    s->enc = rc_.t->nrecipients > 0;
    s->part_size = rc_.t->kind == RT_S3 ? rc_.t->part_size : UINT64_MAX / 2;
    snprintf(s->id, sizeof s->id, "%s", u->it->id);
    snprintf(s->space, sizeof s->space, "%s", u->it->space);
    snprintf(s->kind, sizeof s->kind, "%s", u->it->kind);
    snprintf(s->instance, sizeof s->instance, "%s", store_instance_id(rc_.srv->store));
    snap_file(rc_.srv->cfg->data_dir, u->it->id, false, s->path, sizeof s->path);
    u->src = s;
    u->stage = UP_OPEN;
    u->filling = u->next_ready = u->waiting = false;
    buf_reset(&u->cur);
    u->cur_off = 0;
    u->mkcol_i = 0;
    u->part = u->nparts = 0;
    u->upload_id[0] = '\0';
    buf_reset(&u->etags);
    u->sent = 0;
    u->last_decile = 0;
    u->it->attempts++;
    row_submit(row_op(u->it, "uploading", NULL));
    publish(u->it, "uploading", NULL, 0, 0);
    u->job_running = true;
    job_submit(&rc_.srv->jobs, &s->job, NULL, src_open_work, open_done);
}

/* the attempt's source goes; a job still running frees it when it comes back */
static void attempt_drop(struct upload *u)
{
    if (u->h) rhttp_cancel(u->h), u->h = NULL;
    if (u->src) {
        if (u->job_running) u->src->u = NULL;
        else src_free(u->src);
        u->src = NULL;
    }
}

static void upload_free(struct upload *u)
{
    buf_free(&u->cur);
    buf_free(&u->etags);
    free(u->it);
    free(u);
}

static void retry_due(uv_timer_t *t)
{
    UNUSED(t);
    if (rc_.cur && !rc_.stopping) attempt_start(rc_.cur);
}

static void abort_done(void *arg, const struct rhttp_result *res)
{
    UNUSED(arg);
    UNUSED(res);
}

static void attempt_failed(int status, const char *msg)
{
    struct upload *u = rc_.cur;
    if (u->upload_id[0]) {
        struct rhttp_req q = {.upload_size = -1, .done = abort_done, .max_response = 1u << 16};
        struct buf qs;
        buf_init(&qs);
        buf_puts(&qs, "uploadId=");
        rt_query_escape(&qs, u->upload_id);
        rt_request(rc_.srv, rc_.t, "DELETE", u->it->key, qs.data, &q);
        buf_free(&qs);
        u->upload_id[0] = '\0';
    }
    attempt_drop(u);
    bool permanent = status == 401 || status == 403 || status == 404 || (status && !rt_transient(status));
    if (permanent || u->it->attempts >= rc_.t->attempts) {
        upload_finished(u, false, msg);
        return;
    }
    uint64_t wait = rc_.t->retry_ms;
    for (uint64_t i = 1; i < u->it->attempts && wait < MAX_BACKOFF_MS; i++) wait *= 2;
    if (wait > MAX_BACKOFF_MS) wait = MAX_BACKOFF_MS;
    metrics_remote_retry(rc_.srv->metrics);
    log_warn("remote_upload_retry", "\"space\":\"%s\",\"snapshot\":\"%s\",\"attempt\":%llu,\"retry_in_ms\":%llu,\"error\":\"%s\"",
             u->it->space, u->it->id, (unsigned long long)u->it->attempts, (unsigned long long)wait, msg);
    row_submit(row_op(u->it, "pending", msg));
    publish(u->it, "pending", msg, 0, 0);
    uv_timer_start(&rc_.retry, retry_due, wait, 0);
}

/* ---- retention: this instance's own objects of a kind beyond keep -------------- */

struct ret_job {
    struct job job;
    char space[64], kind[16];
    uint64_t keep;
    struct qitem *v;
    size_t n, i;
    int step;                        /* 0: the file, 1: the manifest */
};

static void ret_work(struct job *j)
{
    struct ret_job *rj = container_of(j, struct ret_job, job);
    sqlite3 *db = store_reader_get(job_server(j)->store);
    if (!db) return;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT snapshot_id, key FROM snapshot_remote WHERE space = ? AND kind = ? AND status = 'uploaded'"
                           " ORDER BY snapshot_id DESC LIMIT 1000 OFFSET ?",
                           -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_text(q, 1, rj->space, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, rj->kind, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 3, (sqlite3_int64)rj->keep);
        size_t cap = 0;
        while (sqlite3_step(q) == SQLITE_ROW) {
            if (rj->n == cap) rj->v = xrealloc(rj->v, (cap = cap ? 2 * cap : 8) * sizeof *rj->v);
            struct qitem *it = &rj->v[rj->n++];
            memset(it, 0, sizeof *it);
            snprintf(it->id, sizeof it->id, "%s", (const char *)sqlite3_column_text(q, 0));
            snprintf(it->key, sizeof it->key, "%s", (const char *)sqlite3_column_text(q, 1));
            snprintf(it->space, sizeof it->space, "%s", rj->space);
            snprintf(it->kind, sizeof it->kind, "%s", rj->kind);
        }
        sqlite3_finalize(q);
    }
    store_reader_put(job_server(j)->store, db);
}

static void ret_next(struct ret_job *rj);

static void ret_deleted(void *arg, const struct rhttp_result *res)
{
    struct ret_job *rj = arg;
    struct qitem *it = &rj->v[rj->i];
    bool ok = (res->status >= 200 && res->status < 300) || res->status == 404;
    if (!ok) {
        char msg[300];
        rt_status_msg(msg, sizeof msg, "remote retention", res->status, res->error);
        log_error("remote_delete_failed", "\"space\":\"%s\",\"snapshot\":\"%s\",\"error\":\"%s\"", it->space, it->id, msg);
        rj->i = rj->n;               /* the next upload tries again */
    } else if (rj->step == 0) {
        rj->step = 1;
    } else {
        rj->step = 0;
        struct row_op *ro = row_op(it, "", NULL);
        ro->remove = true;
        row_submit(ro);
        metrics_remote_deleted(rc_.srv->metrics);
        log_info("remote_deleted", "\"space\":\"%s\",\"snapshot\":\"%s\",\"key\":\"%s\"", it->space, it->id, it->key);
        rj->i++;
    }
    ret_next(rj);
}

static void ret_next(struct ret_job *rj)
{
    if (rc_.stopping || rj->i >= rj->n) {
        free(rj->v);
        free(rj);
        rc_.retaining = false;
        if (!rc_.stopping) pump();
        return;
    }
    struct qitem *it = &rj->v[rj->i];
    char key[600];
    snprintf(key, sizeof key, "%s", it->key);
    if (rj->step == 1) {
        char *dot = strstr(key, RT_DATA_SUFFIX);
        if (dot) snprintf(dot, sizeof key - (size_t)(dot - key), RT_MANIFEST_SUFFIX);
    }
    /* the manifest first would hide a complete file from listing; the file
     * first leaves at worst a manifest whose file is gone (fetch: 404) */
    struct rhttp_req q = {.upload_size = -1, .done = ret_deleted, .arg = rj, .max_response = 1u << 16};
    if (!rt_request(rc_.srv, rc_.t, "DELETE", key, NULL, &q)) {
        rj->i = rj->n;
        ret_next(rj);
    }
}

static void ret_done(struct job *j, struct http_req *r)
{
    UNUSED(r);
    ret_next(container_of(j, struct ret_job, job));
}

/* the pass reads the rows once the one just marked uploaded is committed
 * (a read submitted beside the write could miss it and keep one too many) */
static void retention_start(struct row_op *ro)
{
    if (ro->op.err.status) {
        rc_.retaining = false;
        pump();
        return;
    }
    struct ret_job *rj = xcalloc(1, sizeof *rj);
    snprintf(rj->space, sizeof rj->space, "%s", ro->it.space);
    snprintf(rj->kind, sizeof rj->kind, "%s", ro->it.kind);
    rj->keep = !strcmp(ro->it.kind, "scheduled") ? rc_.t->keep_scheduled : rc_.t->keep_pre_restore;
    job_submit(&rc_.srv->jobs, &rj->job, NULL, ret_work, ret_done);
}

/* ---- the queue ----------------------------------------------------------------- */

static void upload_finished(struct upload *u, bool ok, const char *error)
{
    struct qitem *it = u->it;
    struct src *s = u->src;
    struct row_op *ro = row_op(it, ok ? "uploaded" : "failed", error);
    ro->final = true;
    if (ok && s) {
        snprintf(ro->sha256, sizeof ro->sha256, "%s", s->sha256);
        ro->bytes = s->size;
    }
    uint64_t size = s ? s->size : 0;
    metrics_remote_upload(rc_.srv->metrics, ok, size, now_ms_wall());
    if (rc_.srv->metrics && rc_.srv->metrics->remote_queue) rc_.srv->metrics->remote_queue--;
    if (ok) {
        log_info("remote_uploaded", "\"space\":\"%s\",\"snapshot\":\"%s\",\"key\":\"%s\",\"bytes\":%llu,\"attempts\":%llu",
                 it->space, it->id, it->key, (unsigned long long)size, (unsigned long long)it->attempts);
    } else {
        log_error("remote_upload_failed", "\"space\":\"%s\",\"snapshot\":\"%s\",\"key\":\"%s\",\"attempts\":%llu,\"error\":\"%s\"",
                  it->space, it->id, it->key, (unsigned long long)it->attempts, error);
    }
    ro->total = size;                /* its event: row_done, once committed */
    attempt_drop(u);
    rc_.cur = NULL;
    /* retention of that kind, one pass at a time and no upload beside it
     * (two passes would delete the same objects twice); ret_next pumps */
    bool retain = ok && strcmp(it->kind, "manual");
    if (retain) {
        rc_.retaining = true;
        ro->then = retention_start;
    }
    row_submit(ro);
    upload_free(u);
    if (!retain) pump();
}

static void pump(void)
{
    if (rc_.cur || rc_.retaining || rc_.stopping || list_empty(&rc_.queue)) return;
    struct qitem *it = container_of(rc_.queue.next, struct qitem, link);
    list_remove(&it->link);
    struct upload *u = xcalloc(1, sizeof *u);
    u->it = it;
    buf_init(&u->cur);
    buf_init(&u->etags);
    rc_.cur = u;
    attempt_start(u);
}

static void enqueue(struct qitem *it)
{
    list_insert_tail(&rc_.queue, &it->link);
    if (rc_.srv->metrics) rc_.srv->metrics->remote_queue++;
    pump();
}

static void inserted(struct row_op *ro)
{
    if (ro->op.err.status) return;
    struct qitem *it = xcalloc(1, sizeof *it);
    *it = ro->it;
    publish(it, "pending", NULL, 0, 0);
    enqueue(it);
}

static void on_snapshot(struct server *srv, const char *space, const char *id, const char *kind)
{
    UNUSED(srv);
    if (rc_.stopping) return;
    char k[20];
    snprintf(k, sizeof k, ",%s,", kind);
    if (!strstr(rc_.t->kinds, k)) return;
    struct qitem it;
    memset(&it, 0, sizeof it);
    snprintf(it.id, sizeof it.id, "%s", id);
    snprintf(it.space, sizeof it.space, "%s", space);
    snprintf(it.kind, sizeof it.kind, "%s", kind);
    rt_keys(rc_.t, store_instance_id(rc_.srv->store), space, id, rc_.t->nrecipients > 0, it.key, NULL, sizeof it.key);
    struct row_op *ro = row_op(&it, "pending", NULL);
    ro->insert = true;
    ro->then = inserted;
    row_submit(ro);
}

/* ---- a failed upload, queued again (POST .../remote/retry) ---------------------- */

struct retry_op {
    struct wop op;
    struct qitem it;
    char actor[80], remote[80], status[16];
    snap_answer_fn answer;
};

static int retry_apply(struct wtx *tx, struct wop *op)
{
    struct retry_op *ro = container_of(op, struct retry_op, op);
    sqlite3_stmt *st = wtx_stmt(tx, "SELECT status, kind, key FROM snapshot_remote WHERE snapshot_id = ? AND space = ?");
    sqlite3_bind_text(st, 1, ro->it.id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ro->it.space, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW)
        return wop_fail(op, 404, "not_found", "snapshot %s of this space has no off-site upload", ro->it.id);
    snprintf(ro->status, sizeof ro->status, "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(ro->it.kind, sizeof ro->it.kind, "%s", (const char *)sqlite3_column_text(st, 1));
    snprintf(ro->it.key, sizeof ro->it.key, "%s", (const char *)sqlite3_column_text(st, 2));
    sqlite3_reset(st);
    if (strcmp(ro->status, "failed"))
        return wop_fail(op, 409, "remote_not_failed", "the upload is %s; only a failed one is retried", ro->status);
    st = wtx_stmt(tx, "UPDATE snapshot_remote SET status = 'pending', attempts = 0, error = NULL WHERE snapshot_id = ?");
    sqlite3_bind_text(st, 1, ro->it.id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "recording the retry failed");
    struct buf m;
    buf_init(&m);
    buf_puts(&m, "{\"key\":");
    json_cstr(&m, ro->it.key);
    buf_putc(&m, '}');
    int rc = wtx_audit(tx, ro->actor, "snapshot.remote_retry", ro->it.space, ro->it.id, m.data, ro->remote[0] ? ro->remote : NULL);
    buf_free(&m);
    return rc < 0 ? wop_fail(op, 500, "storage_error", "audit failed") : 0;
}

static void retry_done(struct wop *op, struct http_req *r)
{
    struct retry_op *ro = container_of(op, struct retry_op, op);
    if (op->err.status) {
        snap_answer_wop(ro->answer, r, op);
        free(ro);
        return;
    }
    if (!rc_.stopping) {
        struct qitem *it = xmalloc(sizeof *it);
        *it = ro->it;
        it->attempts = 0;
        log_info("remote_upload_requeued", "\"space\":\"%s\",\"snapshot\":\"%s\"", it->space, it->id);
        publish(it, "pending", NULL, 0, 0);
        enqueue(it);
    }
    if (r) {
        struct buf b;
        buf_init(&b);
        buf_puts(&b, "{\"snapshot\":");
        json_cstr(&b, ro->it.id);
        buf_puts(&b, ",\"remote\":{\"status\":\"pending\"");
        json_kv_str(&b, "key", ro->it.key);
        buf_puts(&b, ",\"attempts\":0,\"error\":null}}");
        struct snap_answer a = {.status = 202, .body = &b};
        ro->answer(r, &a);
        buf_free(&b);
    }
    free(ro);
}

void remote_retry(struct server *srv, struct http_req *r, const struct remote_retry_req *q, snap_answer_fn answer)
{
    struct retry_op *ro = xcalloc(1, sizeof *ro);
    ro->answer = answer;
    snprintf(ro->it.id, sizeof ro->it.id, "%s", q->id);
    snprintf(ro->it.space, sizeof ro->it.space, "%s", q->space);
    snprintf(ro->actor, sizeof ro->actor, "%s", q->actor ? q->actor : "");
    snprintf(ro->remote, sizeof ro->remote, "%s", q->remote ? q->remote : "");
    if (writer_submit(srv->writer, &ro->op, r, retry_apply, retry_done) < 0) {
        snap_answer_err(answer, r, 1, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        free(ro);
    }
}

/* ---- start and stop ------------------------------------------------------------ */

struct resume_job {
    struct job job;
    struct qitem *v;
    size_t n;
};

static void resume_work(struct job *j)
{
    struct resume_job *rj = container_of(j, struct resume_job, job);
    sqlite3 *db = store_reader_get(job_server(j)->store);
    if (!db) return;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT snapshot_id, space, kind, key, attempts FROM snapshot_remote"
                           " WHERE status IN ('pending', 'uploading') ORDER BY snapshot_id",
                           -1, &q, NULL) == SQLITE_OK) {
        size_t cap = 0;
        while (sqlite3_step(q) == SQLITE_ROW) {
            if (rj->n == cap) rj->v = xrealloc(rj->v, (cap = cap ? 2 * cap : 8) * sizeof *rj->v);
            struct qitem *it = &rj->v[rj->n++];
            memset(it, 0, sizeof *it);
            snprintf(it->id, sizeof it->id, "%s", (const char *)sqlite3_column_text(q, 0));
            snprintf(it->space, sizeof it->space, "%s", (const char *)sqlite3_column_text(q, 1));
            snprintf(it->kind, sizeof it->kind, "%s", (const char *)sqlite3_column_text(q, 2));
            snprintf(it->key, sizeof it->key, "%s", (const char *)sqlite3_column_text(q, 3));
            it->attempts = (uint64_t)sqlite3_column_int64(q, 4);
        }
        sqlite3_finalize(q);
    }
    store_reader_put(job_server(j)->store, db);
}

static void resume_done(struct job *j, struct http_req *r)
{
    struct resume_job *rj = container_of(j, struct resume_job, job);
    UNUSED(r);
    if (rj->n) log_info("remote_uploads_resumed", "\"count\":%zu", rj->n);
    for (size_t i = 0; i < rj->n; i++) {
        struct qitem *it = xmalloc(sizeof *it);
        *it = rj->v[i];
        /* a restart gives a snapshot its full count of attempts again */
        it->attempts = 0;
        enqueue(it);
    }
    job_server(j)->loading--;
    free(rj->v);
    free(rj);
}

static void on_shutdown(struct server *srv, void *arg)
{
    UNUSED(srv);
    UNUSED(arg);
    /* an upload in flight stays 'uploading' and starts over at the next start */
    rc_.stopping = true;
    if (rc_.timer_init) uv_timer_stop(&rc_.retry);
    if (rc_.cur) {
        attempt_drop(rc_.cur);
        upload_free(rc_.cur);
        rc_.cur = NULL;
    }
}

void remote_init(struct server *srv, const struct rtarget *t)
{
    rc_.srv = srv;
    rc_.t = t;
    list_init(&rc_.queue);
    /* no store: `snapsync remote list|fetch`, which need the target only */
    if (!t || !t->base[0] || !srv->store) return;
    if (srv->metrics) srv->metrics->remote_on = true;
    uv_timer_init(srv->loop, &rc_.retry);
    rc_.timer_init = true;
    snap_set_done_hook(on_snapshot);
    server_add_shutdown_hook(srv, on_shutdown, NULL);
    log_info("remote_configured", "\"remote\":\"%s\",\"encrypted\":%s,\"kinds\":\"%.*s\"", t->display,
             t->nrecipients ? "true" : "false", (int)(strlen(t->kinds) > 2 ? strlen(t->kinds) - 2 : 0), t->kinds + 1);
    struct resume_job *rj = xcalloc(1, sizeof *rj);
    srv->loading++;
    job_submit(&srv->jobs, &rj->job, NULL, resume_work, resume_done);
}

void remote_free(struct server *srv)
{
    UNUSED(srv);
    if (!rc_.timer_init) {
        rc_.t = NULL;
        return;
    }
    on_shutdown(srv, NULL);
    while (!list_empty(&rc_.queue)) {
        struct qitem *it = container_of(rc_.queue.next, struct qitem, link);
        list_remove(&it->link);
        free(it);
    }
    if (rc_.timer_init) {
        uv_close((uv_handle_t *)&rc_.retry, NULL);
        rc_.timer_init = false;
    }
    snap_set_done_hook(NULL);
}
