/* filestream.c - see filestream.h. */
#include "filestream.h"

#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include "http.h"
#include "jobs.h"
#include "log.h"
#include "server.h"

#define FS_CHUNK (64 * 1024)
#define FS_HIGH (256 * 1024)

struct fstream {
    struct job job;
    int fd;
    bool inflate, zs_init, eof, busy, failed;
    z_stream zs;
    uint64_t off, left;              /* left: bytes still to send (raw file bytes) */
    unsigned char in[FS_CHUNK];
    struct buf out;
};

static void fs_read(struct http_req *r);

static void fs_work(struct job *j)
{
    struct fstream *f = container_of(j, struct fstream, job);
    buf_reset(&f->out);
    size_t want = f->left < FS_CHUNK ? (size_t)f->left : FS_CHUNK;
    if (want == 0) { f->eof = true; return; }
    ssize_t n = pread(f->fd, f->in, want, (off_t)f->off);
    if (n < 0) { f->failed = true; return; }
    if (n == 0) { f->failed = f->left > 0 && !f->inflate; f->eof = true; return; }   /* shorter than it said */
    f->off += (uint64_t)n;
    f->left -= (uint64_t)n;
    if (!f->inflate) {
        buf_append(&f->out, f->in, (size_t)n);
        return;
    }
    f->zs.next_in = f->in;
    f->zs.avail_in = (uInt)n;
    while (f->zs.avail_in > 0) {
        buf_reserve(&f->out, FS_CHUNK);
        f->zs.next_out = (Bytef *)f->out.data + f->out.len;
        f->zs.avail_out = FS_CHUNK;
        int rc = inflate(&f->zs, Z_NO_FLUSH);
        f->out.len += FS_CHUNK - f->zs.avail_out;
        if (rc == Z_STREAM_END) {
            if (f->zs.avail_in == 0) break;
            inflateReset(&f->zs);    /* concatenated gzip members */
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            f->failed = true;
            return;
        }
    }
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
    buf_free(&f->out);
    free(f);
}

static void fs_done(struct job *j, struct http_req *r)
{
    struct fstream *f = container_of(j, struct fstream, job);
    f->busy = false;
    if (f->fd < 0) {                 /* the request was released meanwhile */
        f->fd = -f->fd - 1;
        fs_free(f);
        return;
    }
    if (!r) return;                  /* the client left: ctx_free cleans up */
    if (f->failed) {
        log_error("file_stream_failed", "\"error\":\"read or inflate failed\"");
        if (r->conn) conn_close(r->conn);
        return;
    }
    if (f->out.len) http_stream_write(r, f->out.data, f->out.len);
    if (f->eof || (f->left == 0 && !f->inflate)) {
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
    if (f->busy || f->eof) return;
    f->busy = true;
    job_submit(r->srv, &f->job, r, fs_work, fs_done);
}

void filestream_start(struct http_req *r, int fd, int status, const char *ctype, uint64_t offset, int64_t length,
                      bool inflate)
{
    struct fstream *f = xcalloc(1, sizeof *f);
    f->fd = fd;
    f->off = offset;
    f->left = length >= 0 ? (uint64_t)length : UINT64_MAX;
    f->inflate = inflate;
    if (inflate) {
        if (inflateInit2(&f->zs, 15 + 16) != Z_OK) abort();
        f->zs_init = true;
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
