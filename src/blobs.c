/* blobs.c - SPEC §9 file blobs: a content-addressed store under
 * DATA/blobs/<first two hex>/<sha256>.
 *
 * PUT streams the body to a temp file on the threadpool, hashing as it
 * writes; only a body whose sha256 is the name is fsynced and renamed into
 * place (a mismatch is 422 and leaves nothing). GET/HEAD stream the file
 * (with Range). POST /blobs/missing says which of a list are absent.
 * blobs_check() is what entity writes call (writer thread) to refuse a body
 * whose "_blobs" names a blob this server does not have.
 */
#include "blobs.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "api_util.h"
#include "filestream.h"
#include "http.h"
#include "jobs.h"
#include "json.h"
#include "log.h"
#include "names.h"
#include "server.h"

#define BLOB_PENDING_MAX (1u << 20)

void blob_path(const char *data_dir, const char *sha, char *out, size_t cap)
{
    snprintf(out, cap, "%s/blobs/%.2s/%s", data_dir, sha, sha);
}

bool blob_exists(const char *data_dir, const char *sha)
{
    char p[1200];
    struct stat st;
    blob_path(data_dir, sha, p, sizeof p);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

int blobs_check(const char *data_dir, const char *body, size_t len, char *missing, size_t cap)
{
    missing[0] = '\0';
    /* cheap test first: most bodies reference no blob */
    if (!body || !memmem(body, len, "\"_blobs\":", 9)) return 0;
    json_error_t je;
    json_t *v = json_loadb(body, len, 0, &je);
    json_t *arr = v ? json_object_get(v, "_blobs") : NULL;
    int rc = 0;
    if (!arr) goto out;              /* "_blobs" nested deeper: not a reference list */
    if (!json_is_array(arr)) {
        snprintf(missing, cap, "_blobs must be an array of sha256 hex strings");
        rc = -1;
        goto out;
    }
    size_t i, n = 0;
    json_t *h;
    json_array_foreach(arr, i, h) {
        const char *s = json_string_value(h);
        if (!s || !name_sha256_valid(s, strlen(s))) {
            snprintf(missing, cap, "_blobs must be an array of sha256 hex strings");
            rc = -1;
            goto out;
        }
        if (!blob_exists(data_dir, s)) {
            size_t l = strlen(missing);
            if (l + 70 < cap) snprintf(missing + l, cap - l, "%s\"%s\"", n ? "," : "", s);
            n++;
            rc = 1;
        }
    }
out:
    json_decref(v);
    return rc;
}

/* ---- PUT ------------------------------------------------------------------ */

struct upload {
    struct job job;
    char sha[65], tmp[1200], path[1200], dir[1200];
    int fd;
    EVP_MD_CTX *md;
    struct buf pending, writing;
    bool busy, ended, paused, finalizing, released;
    int err;
    bool mismatch, existed;
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
    size_t off = 0;
    while (off < u->writing.len) {
        ssize_t w = write(u->fd, u->writing.data + off, u->writing.len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            u->err = errno;
            return;
        }
        off += (size_t)w;
    }
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
    struct stat st;
    if (stat(u->path, &st) == 0) {   /* already here (same content, by its name) */
        u->existed = true;
        unlink(u->tmp);
        return;
    }
    if (fsync(u->fd) < 0) { u->err = errno; return; }
    close(u->fd);
    u->fd = -1;
    if (rename(u->tmp, u->path) < 0) { u->err = errno; return; }
    int dfd = open(u->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

static void upload_pump(struct http_req *r);

static void upload_done(struct job *j, struct http_req *r)
{
    struct upload *u = container_of(j, struct upload, job);
    u->busy = false;
    buf_reset(&u->writing);
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
            return;
        }
        struct buf b;
        buf_init(&b);
        buf_puts(&b, "{\"sha256\":");
        json_cstr(&b, u->sha);
        json_kv_u64(&b, "size", u->size);
        json_kv_bool(&b, "created", !u->existed);
        buf_putc(&b, '}');
        http_send_json(r, u->existed ? 200 : 201, &b);
        return;
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
        job_submit(r->srv, &u->job, r, upload_work, upload_done);
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
    snprintf(u->sha, sizeof u->sha, "%s", r->match.params.sha256);
    blob_path(r->srv->cfg->data_dir, u->sha, u->path, sizeof u->path);
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
    char path[1200];
    int fd;
    uint64_t size;
    int err;
};

static void open_work(struct job *j)
{
    struct open_job *o = container_of(j, struct open_job, job);
    o->fd = open(o->path, O_RDONLY | O_CLOEXEC);
    if (o->fd < 0) { o->err = errno; return; }
    struct stat st;
    if (fstat(o->fd, &st) < 0) { o->err = errno; close(o->fd); o->fd = -1; return; }
    o->size = (uint64_t)st.st_size;
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
    http_add_header(r, "Cache-Control", "public, max-age=31536000, immutable");
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
    if (!api_space(r)) return;
    struct open_job *o = xcalloc(1, sizeof *o);
    o->fd = -1;
    blob_path(r->srv->cfg->data_dir, r->match.params.sha256, o->path, sizeof o->path);
    job_submit(r->srv, &o->job, r, open_work, open_done);
}

/* ---- POST /blobs/missing ------------------------------------------------ */

#define MISSING_MAX 10000

struct missing_job {
    struct job job;
    char data_dir[1024];
    char (*h)[65];
    size_t n;
    struct buf out;
};

static void missing_work(struct job *j)
{
    struct missing_job *m = container_of(j, struct missing_job, job);
    buf_puts(&m->out, "{\"missing\":[");
    int k = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (blob_exists(m->data_dir, m->h[i])) continue;
        if (k++) buf_putc(&m->out, ',');
        json_cstr(&m->out, m->h[i]);
    }
    buf_puts(&m->out, "]}");
}

static void missing_done(struct job *j, struct http_req *r)
{
    struct missing_job *m = container_of(j, struct missing_job, job);
    if (r) http_send_json(r, 200, &m->out);
    buf_free(&m->out);
    free(m->h);
    free(m);
}

void api_blobs_missing(struct http_req *r)
{
    if (!api_space(r)) return;
    json_t *v = api_body_object(r);
    if (!v) return;
    json_t *arr = json_object_get(v, "hashes");
    if (!json_is_array(arr) || json_array_size(arr) > MISSING_MAX) {
        json_decref(v);
        http_send_error(r, 400, "invalid_body", NULL, "expected {\"hashes\":[...]} with at most %d sha256", MISSING_MAX);
        return;
    }
    struct missing_job *m = xcalloc(1, sizeof *m);
    snprintf(m->data_dir, sizeof m->data_dir, "%s", r->srv->cfg->data_dir);
    m->h = xcalloc(json_array_size(arr) + 1, sizeof *m->h);
    size_t i;
    json_t *h;
    json_array_foreach(arr, i, h) {
        const char *s = json_string_value(h);
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
    job_submit(r->srv, &m->job, r, missing_work, missing_done);
}
