/* filestream.c - see filestream.h.
 *
 * One read job at a time per stream: fs_work (pool) reads up to 64 KiB at
 * the stream's offset, hashes it when the stream checks the file, inflates
 * it when asked, and leaves what to send in f->out; fs_done (loop) writes
 * it, ends the stream or aborts it, and asks for the next read while less
 * than FS_HIGH is queued on the socket (else on_drain does). The checks of
 * struct filestream_check run in the worker, so the bytes that would end
 * the body are never handed to the loop before the file proved whole. */
#include "net/filestream.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "net/http.h"
#include "core/jobs.h"
#include "core/json.h"
#include "core/log.h"
#include "net/server.h"

#define FS_CHUNK (64 * 1024)
#define FS_HIGH (256 * 1024)

struct fstream {
    struct job job;
    struct server *srv;
    int fd;
    bool inflate, zs_init, eof, busy, failed;
    bool in_member;                  /* inside a gzip member (its end not yet seen) */
    bool checked_size, reported;
    bool has_check;
    struct filestream_check check;
    EVP_MD_CTX *md;
    z_stream zs;
    uint64_t off, left;              /* left: bytes still to send (raw file bytes) */
    char why[200];                   /* set with failed (worker) */
    unsigned char in[FS_CHUNK];
    struct buf out;
};

static void fs_read(struct http_req *r);

static void fs_fail(struct fstream *f, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void fs_fail(struct fstream *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->why, sizeof f->why, fmt, ap);
    va_end(ap);
    f->failed = true;
    buf_reset(&f->out);              /* nothing of this read goes out */
}

/* The whole file is read: does it match what the check expects? */
static void fs_verify_end(struct fstream *f)
{
    unsigned char md[32];
    unsigned int l = 32;
    char hex[65];
    EVP_DigestFinal_ex(f->md, md, &l);
    hex_encode(hex, md, 32);
    if (f->inflate && f->in_member) fs_fail(f, "the gzip stream does not end (the file is truncated)");
    else if (strcmp(hex, f->check.sha256) != 0) fs_fail(f, "the file's sha256 does not match the recorded one");
    else f->eof = true;
}

static void fs_work(struct job *j)
{
    struct fstream *f = container_of(j, struct fstream, job);
    buf_reset(&f->out);
    if (f->has_check && !f->checked_size) {
        struct stat st;
        f->checked_size = true;
        if (fstat(f->fd, &st) < 0) { fs_fail(f, "reading the file failed: %s", strerror(errno)); return; }
        if ((uint64_t)st.st_size != f->check.size) {
            fs_fail(f, "the file is %llu bytes, %llu expected", (unsigned long long)st.st_size,
                    (unsigned long long)f->check.size);
            return;
        }
    }
    size_t want = f->left < FS_CHUNK ? (size_t)f->left : FS_CHUNK;
    if (want == 0) { f->eof = true; return; }
    ssize_t n = pread(f->fd, f->in, want, (off_t)f->off);
    if (n < 0) { fs_fail(f, "reading the file failed: %s", strerror(errno)); return; }
    if (n == 0) {
        if (f->has_check)
            fs_fail(f, "the file ended after %llu bytes, %llu expected", (unsigned long long)f->off,
                    (unsigned long long)f->check.size);
        else if (f->left > 0 && !f->inflate)
            fs_fail(f, "the file is shorter than it was");
        f->eof = true;
        return;
    }
    f->off += (uint64_t)n;
    f->left -= (uint64_t)n;
    if (f->md) EVP_DigestUpdate(f->md, f->in, (size_t)n);
    if (!f->inflate) {
        buf_append(&f->out, f->in, (size_t)n);
    } else {
        f->zs.next_in = f->in;
        f->zs.avail_in = (uInt)n;
        while (f->zs.avail_in > 0) {
            if (!f->in_member) {     /* a member starts (concatenated members are allowed) */
                inflateReset(&f->zs);
                f->in_member = true;
            }
            buf_reserve(&f->out, FS_CHUNK);
            f->zs.next_out = (Bytef *)f->out.data + f->out.len;
            f->zs.avail_out = FS_CHUNK;
            int rc = inflate(&f->zs, Z_NO_FLUSH);
            f->out.len += FS_CHUNK - f->zs.avail_out;
            if (rc == Z_STREAM_END) {
                f->in_member = false;
            } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
                fs_fail(f, "the gzip data is corrupt: %s", f->zs.msg ? f->zs.msg : "inflate failed");
                return;
            }
        }
    }
    if (f->has_check && f->left == 0) fs_verify_end(f);
}

static void fs_free(void *p)
{
    struct fstream *f = p;
    if (f->busy) {                   /* a read is out: fs_done frees */
        f->fd = -f->fd - 1;          /* mark: owner gone */
        return;
    }
    if (f->fd >= 0) close(f->fd);
    if (f->zs_init) inflateEnd(&f->zs);
    if (f->md) EVP_MD_CTX_free(f->md);
    free(f->check.arg);
    buf_free(&f->out);
    free(f);
}

/* loop: the stream cannot be completed; says so once */
static void fs_report(struct fstream *f, struct server *srv)
{
    if (f->reported) return;
    f->reported = true;
    struct buf b;
    buf_init(&b);
    json_kv_str(&b, "error", f->why);
    json_kv_u64(&b, "offset", f->off);
    log_raw(LOG_ERROR, "file_stream_failed", b.data, b.len);
    buf_free(&b);
    if (f->has_check && f->check.damaged) f->check.damaged(srv, f->check.arg, f->why);
}

static void fs_done(struct job *j, struct http_req *r)
{
    struct fstream *f = container_of(j, struct fstream, job);
    f->busy = false;
    if (f->failed) fs_report(f, f->srv);
    if (f->fd < 0) {                 /* the request was released meanwhile */
        f->fd = -f->fd - 1;
        fs_free(f);
        return;
    }
    if (!r) return;                  /* the client left: ctx_free cleans up */
    if (f->failed) {
        /* abort: no last chunk, fewer bytes than Content-Length */
        if (r->conn) conn_close(r->conn);
        return;
    }
    if (f->out.len) http_stream_write(r, f->out.data, f->out.len);
    if (f->eof || (f->left == 0 && !f->inflate && !f->has_check)) {
        r->on_drain = NULL;
        http_stream_end(r);
        return;
    }
    if (http_stream_queued(r) < FS_HIGH) fs_read(r);
    /* else on_drain continues */
}

static void fs_read(struct http_req *r)
{
    struct fstream *f = r->ctx;
    if (f->busy || f->eof || f->failed) return;
    f->busy = true;
    job_submit(&r->srv->jobs, &f->job, r, fs_work, fs_done);
}

void filestream_start(struct http_req *r, int fd, int status, const char *ctype, uint64_t offset, int64_t length,
                      bool inflate, const struct filestream_check *check)
{
    struct fstream *f = xcalloc(1, sizeof *f);
    f->srv = r->srv;
    f->fd = fd;
    f->off = offset;
    f->left = length >= 0 ? (uint64_t)length : UINT64_MAX;
    f->inflate = inflate;
    if (inflate) {
        if (inflateInit2(&f->zs, 15 + 16) != Z_OK) abort();
        f->zs_init = true;
    }
    if (check) {
        f->has_check = true;
        f->check = *check;
        f->left = check->size;       /* the whole file, whatever the framing */
        f->md = EVP_MD_CTX_new();
        if (!f->md || EVP_DigestInit_ex(f->md, sha256_md(), NULL) != 1) abort();
    }
    r->ctx = f;
    r->ctx_free = fs_free;
    r->on_drain = fs_read;
    r->drain_low = FS_CHUNK;
    if (length >= 0) http_stream_begin_length(r, status, ctype, (uint64_t)length);
    else http_stream_begin(r, status, ctype, true);
    if (r->head_only || length == 0) {
        http_stream_end(r);
        return;
    }
    fs_read(r);
}
