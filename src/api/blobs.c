/* api/blobs.c - the handlers of file blobs; the blob store is svc/blobs.c.
 *
 * PUT streams the body to a temp file on the threadpool, hashing as it
 * writes; a body whose sha256 is the name is fsynced and renamed into place
 * (over an existing copy: same bytes), then a writer op records the
 * reference, and only then is the client answered (201 when the reference is
 * new to the space, 200 when the space had it). A mismatch is 422 and leaves
 * nothing. GET/HEAD check the reference, then stream the file (with Range).
 *
 * POST /blobs/missing lists the hashes the space does not reference.
 * Loop thread, but for the `_work` functions (threadpool).
 */
#include "api/blobs.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/util.h"
#include "core/jobs.h"
#include "core/json.h"
#include "core/names.h"
#include "net/filestream.h"
#include "net/http.h"
#include "net/server.h"
#include "store/writer.h"
#include "svc/blobs.h"

#define BLOB_PENDING_MAX (1u << 20)

/* ---- PUT ------------------------------------------------------------------ */

/* The reference, recorded once the file is in place (writer thread); the
 * client is answered after it commits. Holds the placement's pin. */
struct ref_op {
    struct wop op;
    struct server *srv;
    char space[64], sha[65];
    uint64_t size;
    bool added;
};

static int ref_apply(struct wtx *tx, struct wop *op)
{
    struct ref_op *ro = container_of(op, struct ref_op, op);
    struct space_stats *sp = wtx_space(tx, ro->space);
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", ro->space);
    if (blobs_ref_add(tx, sp->id, ro->sha, &ro->added) < 0)
        return wop_fail(op, 500, "storage_error", "recording the blob failed: %s", sqlite3_errmsg(wtx_db(tx)));
    return 0;
}

static void ref_done(struct wop *op, struct http_req *r)
{
    struct ref_op *ro = container_of(op, struct ref_op, op);
    blob_unpin(ro->srv, ro->sha);    /* committed (or failed): the reference decides now */
    if (r) {
        if (op->err.status) {
            api_send_wop_error(r, op);
        } else {
            struct buf b;
            buf_init(&b);
            buf_puts(&b, "{\"sha256\":");
            json_cstr(&b, ro->sha);
            json_kv_u64(&b, "size", ro->size);
            json_kv_bool(&b, "created", ro->added);
            buf_putc(&b, '}');
            http_send_json(r, ro->added ? 201 : 200, &b);
        }
    }
    free(ro);
}

struct upload {
    struct job job;
    char space[64], sha[65], tmp[1200], dir[1200];
    int fd;
    EVP_MD_CTX *md;
    struct buf pending, writing;
    bool busy, ended, paused, finalizing, released;
    int err;
    bool mismatch, placed;           /* placed: in place and pinned, reference not yet asked for */
    uint64_t size;
    char got[65];
};

static void upload_free_now(struct upload *u)
{
    if (u->fd >= 0) close(u->fd);
    if (!u->finalizing || u->err || u->mismatch) unlink(u->tmp);
    if (u->md) EVP_MD_CTX_free(u->md);
    buf_free(&u->pending);
    buf_free(&u->writing);
    free(u);
}

static void upload_free(void *p)
{
    struct upload *u = p;
    if (u->busy) {
        u->released = true;          /* the job frees it */
        return;
    }
    upload_free_now(u);
}

static void upload_work(struct job *j)
{
    struct upload *u = container_of(j, struct upload, job);
    if (u->fd < 0) {
        char tdir[1200];
        snprintf(tdir, sizeof tdir, "%s", u->tmp);
        char *slash = strrchr(tdir, '/');
        if (slash) *slash = '\0';
        mkdir_p(u->dir, 0700);
        mkdir_p(tdir, 0700);
        u->fd = open(u->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (u->fd < 0) { u->err = errno; return; }
    }
    if ((u->err = write_full(u->fd, u->writing.data, u->writing.len)) != 0) return;
    EVP_DigestUpdate(u->md, u->writing.data, u->writing.len);
    u->size += u->writing.len;
    if (!u->finalizing) return;
    unsigned char md[32];
    unsigned int l = 32;
    EVP_DigestFinal_ex(u->md, md, &l);
    hex_encode(u->got, md, 32);
    if (strcmp(u->got, u->sha) != 0) {
        u->mismatch = true;
        return;
    }
    /* the same steps whether the bytes are on disk already or not (for
     * another space, perhaps): the answer's timing does not tell */
    if (fsync(u->fd) < 0) { u->err = errno; return; }
    close(u->fd);
    u->fd = -1;
    int rc = blob_place(job_server(j), u->tmp, u->sha, NULL);
    if (rc < 0) { u->err = -rc; return; }
    u->placed = true;
}

static void upload_pump(struct http_req *r);

/* Asks the writer for the reference; the pin goes with it. r NULL: the
 * client left, but it sent the bytes: the reference is recorded anyway. */
static void upload_ref(struct server *srv, struct upload *u, struct http_req *r)
{
    struct ref_op *ro = xcalloc(1, sizeof *ro);
    ro->srv = srv;
    snprintf(ro->space, sizeof ro->space, "%s", u->space);
    memcpy(ro->sha, u->sha, 65);
    ro->size = u->size;
    u->placed = false;
    int rc = r ? api_write(r, &ro->op, ref_apply, ref_done) : writer_submit(srv->writer, &ro->op, NULL, ref_apply, ref_done);
    if (rc < 0) {
        blob_unpin(srv, ro->sha);   /* unreferenced: it goes at the next start unless referenced by then */
        free(ro);
    }
}

static void upload_done(struct job *j, struct http_req *r)
{
    struct upload *u = container_of(j, struct upload, job);
    u->busy = false;
    buf_reset(&u->writing);
    if (u->placed) upload_ref(job_server(j), u, u->released ? NULL : r);
    if (u->released) {
        upload_free_now(u);
        return;
    }
    if (!r) return;
    if (u->err) {
        http_send_error(r, 500, "storage_error", NULL, "storing the blob failed: %s", strerror(u->err));
        return;
    }
    if (u->finalizing) {
        if (u->mismatch) {
            char extra[100];
            snprintf(extra, sizeof extra, "\"sha256\":\"%s\"", u->got);
            http_send_error(r, 422, "hash_mismatch", extra, "the body's sha256 is not the blob's name; nothing was kept");
        }
        return;                      /* else ref_done answers */
    }
    upload_pump(r);
}

static void upload_pump(struct http_req *r)
{
    struct upload *u = r->ctx;
    if (u->busy || u->err || u->mismatch) return;
    if (u->pending.len || (u->ended && !u->finalizing)) {
        struct buf t = u->writing;
        u->writing = u->pending;
        u->pending = t;
        buf_reset(&u->pending);
        if (u->ended) u->finalizing = true;
        u->busy = true;
        job_submit(&r->srv->jobs, &u->job, r, upload_work, upload_done);
    }
    if (u->paused && u->pending.len < BLOB_PENDING_MAX / 2) {
        u->paused = false;
        http_body_resume(r);
    }
}

static int upload_on_body(struct http_req *r, const char *data, size_t len)
{
    struct upload *u = r->ctx;
    buf_append(&u->pending, data, len);
    if (!u->busy && u->pending.len >= 64 * 1024) upload_pump(r);
    if (u->pending.len >= BLOB_PENDING_MAX) {
        u->paused = true;
        return 1;
    }
    return 0;
}

static void upload_on_end(struct http_req *r)
{
    struct upload *u = r->ctx;
    u->ended = true;
    upload_pump(r);
}

void api_blob_put(struct http_req *r)
{
    if (!api_space(r)) return;
    struct upload *u = xcalloc(1, sizeof *u);
    u->fd = -1;
    snprintf(u->space, sizeof u->space, "%s", r->match.params.space);
    snprintf(u->sha, sizeof u->sha, "%s", r->match.params.sha256);
    snprintf(u->dir, sizeof u->dir, "%s/blobs/%.2s", r->srv->cfg->data_dir, u->sha);
    char rnd[27];
    ulid_make(rnd, now_ms_wall());
    snprintf(u->tmp, sizeof u->tmp, "%s/blobs/tmp/%s.tmp", r->srv->cfg->data_dir, rnd);
    u->md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(u->md, sha256_md(), NULL);
    r->ctx = u;
    r->ctx_free = upload_free;
    r->on_body = upload_on_body;
    r->on_body_end = upload_on_end;
}

/* ---- GET / HEAD with Range ----------------------------------------------- */

struct open_job {
    struct job job;
    int64_t space_id;                /* in */
    char sha[65];                    /* in */
    int fd;                          /* out */
    uint64_t size;                   /* out */
    int err;                         /* out */
};

static void open_work(struct job *j)
{
    struct open_job *o = container_of(j, struct open_job, job);
    o->err = blob_open(job_server(j), o->space_id, o->sha, &o->fd, &o->size);
}
/* "bytes=a-b", "bytes=a-", "bytes=-n" (one range). 0 ok, -1 unsatisfiable,
 * 1 ignored (malformed: serve the whole file, as RFC 9110 allows). */
static int parse_range(const char *v, size_t l, uint64_t size, uint64_t *from, uint64_t *len)
{
    if (l < 7 || strncmp(v, "bytes=", 6) != 0 || memchr(v, ',', l)) return 1;
    const char *p = v + 6, *end = v + l, *dash = memchr(p, '-', (size_t)(end - p));
    if (!dash) return 1;
    uint64_t a = 0, b = 0;
    bool has_a = dash > p, has_b = dash + 1 < end;
    if (has_a && parse_u64(p, (size_t)(dash - p), UINT64_MAX, &a) < 0) return 1;
    if (has_b && parse_u64(dash + 1, (size_t)(end - dash - 1), UINT64_MAX, &b) < 0) return 1;
    if (!has_a && !has_b) return 1;
    if (!has_a) {                    /* the last b bytes */
        if (b == 0 || size == 0) return -1;
        *from = b >= size ? 0 : size - b;
        *len = size - *from;
        return 0;
    }
    if (a >= size) return -1;
    if (!has_b || b >= size) b = size - 1;
    if (b < a) return 1;
    *from = a;
    *len = b - a + 1;
    return 0;
}

static void open_done(struct job *j, struct http_req *r)
{
    struct open_job *o = container_of(j, struct open_job, job);
    int fd = o->fd;
    if (!r) {
        if (fd >= 0) close(fd);
        free(o);
        return;
    }
    if (o->err) {
        if (o->err == ENOENT) http_send_error(r, 404, "not_found", NULL, "no blob %s", r->match.params.sha256);
        else http_send_error(r, 500, "storage_error", NULL, "opening the blob failed: %s", strerror(o->err));
        free(o);
        return;
    }
    uint64_t size = o->size, from = 0, len = size;
    free(o);
    http_add_header(r, "ETag", "\"%s\"", r->match.params.sha256);
    http_add_header(r, "Accept-Ranges", "bytes");
    http_add_header(r, "Cache-Control", "private, max-age=31536000, immutable");
    size_t il;
    const char *inm = http_header(r, "If-None-Match", &il);
    if (inm && etag_list_match(inm, il, r->match.params.sha256, true)) {
        close(fd);
        http_send_empty(r, 304);
        return;
    }
    int status = 200;
    size_t rl;
    const char *range = http_header(r, "Range", &rl);
    if (range) {
        int pr = parse_range(range, rl, size, &from, &len);
        if (pr < 0) {
            close(fd);
            http_add_header(r, "Content-Range", "bytes */%llu", (unsigned long long)size);
            http_send_error(r, 416, "range_not_satisfiable", NULL, "the range is outside the blob (%llu bytes)",
                            (unsigned long long)size);
            return;
        }
        if (pr == 0) {
            status = 206;
            http_add_header(r, "Content-Range", "bytes %llu-%llu/%llu", (unsigned long long)from,
                            (unsigned long long)(from + len - 1), (unsigned long long)size);
        } else {
            from = 0;
            len = size;
        }
    }
    filestream_start(r, fd, status, "application/octet-stream", from, (int64_t)len, false, NULL);
}

void api_blob_get(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct open_job *o = xcalloc(1, sizeof *o);
    o->fd = -1;
    o->space_id = sp->st.id;
    snprintf(o->sha, sizeof o->sha, "%s", r->match.params.sha256);
    job_submit(&r->srv->jobs, &o->job, r, open_work, open_done);
}

/* ---- POST /blobs/missing ------------------------------------------------ */

#define MISSING_MAX 10000

struct missing_job {
    struct job job;
    int64_t space_id;
    char (*h)[65];
    size_t n;
    bool failed;
    struct buf out;
};

static void missing_work(struct job *j)
{
    struct missing_job *m = container_of(j, struct missing_job, job);
    m->failed = blobs_missing_json(job_server(j), m->space_id, m->h, m->n, &m->out) < 0;
}

static void missing_done(struct job *j, struct http_req *r)
{
    struct missing_job *m = container_of(j, struct missing_job, job);
    if (r) {
        if (m->failed) http_send_error(r, 500, "storage_error", NULL, "reading the space's blobs failed");
        else http_send_json(r, 200, &m->out);
    }
    buf_free(&m->out);
    free(m->h);
    free(m);
}

static const char *const missing_members[] = {"hashes", NULL};

void api_blobs_missing(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    json_t *v = api_body_members(r, missing_members);
    if (!v) return;
    json_t *arr = json_object_get(v, "hashes");
    if (!json_is_array(arr) || json_array_size(arr) > MISSING_MAX) {
        json_decref(v);
        http_send_error(r, 400, "invalid_body", NULL, "expected {\"hashes\":[...]} with at most %d sha256", MISSING_MAX);
        return;
    }
    struct missing_job *m = xcalloc(1, sizeof *m);
    m->space_id = sp->st.id;
    m->h = xcalloc(json_array_size(arr) + 1, sizeof *m->h);
    size_t i;
    json_t *h;
    json_array_foreach(arr, i, h) {
        const char *s = json_name(h);
        if (!s || !name_sha256_valid(s, strlen(s))) {
            json_decref(v);
            free(m->h);
            free(m);
            http_send_error(r, 400, "invalid_name", NULL, "hashes must be sha256 in lower-case hex");
            return;
        }
        memcpy(m->h[m->n++], s, 65);
    }
    json_decref(v);
    job_submit(&r->srv->jobs, &m->job, r, missing_work, missing_done);
}
