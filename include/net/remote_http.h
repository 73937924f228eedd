/* remote_http.h - outgoing HTTP(S) to storage servers (S3, WebDAV) with
 * streamed bodies: libcurl easy handles on peer.c's multi, so they run on
 * the loop thread and never block it.
 *
 * A request body comes from a small in-memory copy or is pulled through
 * read() on the loop as curl can send it; read() returns RHTTP_PAUSE when it
 * has nothing yet (the caller's pool job is filling its next buffer) and
 * the caller calls rhttp_resume() when it has. A response body goes to
 * write() the same way (returning 1 pauses; the same bytes come again after
 * rhttp_resume), or is kept in memory up to max_response. S3 requests are
 * signed by libcurl (CURLOPT_AWS_SIGV4); WebDAV ones use Basic auth. The
 * credentials are handed to curl only: they are never logged and never in
 * an error message.
 *
 * Threads: loop only.
 */
#ifndef SNAPSYNC_REMOTE_HTTP_H
#define SNAPSYNC_REMOTE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

struct server;
struct rhttp;

#define RHTTP_PAUSE ((size_t)-1)

struct rhttp_result {
    int status;                      /* HTTP status, or 0 when no response came */
    const char *error;               /* transport error, or NULL */
    bool timed_out;                  /* stalled past stall_ms, or connect timeout */
    struct buf *body;                /* what was kept (no write callback) */
    const char *etag;                /* the ETag header without quotes, or "" */
    int64_t content_length;          /* of the response, or -1 */
};

typedef size_t (*rhttp_read_fn)(void *arg, char *dst, size_t cap);
typedef int (*rhttp_write_fn)(void *arg, const char *p, size_t n);
typedef void (*rhttp_done_fn)(void *arg, const struct rhttp_result *res);

struct rhttp_req {
    const char *method, *url;
    const char *const *headers;      /* "Name: value" lines, NULL-terminated, or NULL */
    const char *userpwd;             /* "user:password" for Basic auth or the S3 key pair, or NULL */
    const char *sigv4;               /* "aws:amz:REGION:s3" to sign, or NULL */
    const void *body;                /* a small body, copied; or NULL */
    size_t body_len;
    int64_t upload_size;             /* >= 0: a body of this many bytes pulled through read */
    rhttp_read_fn read;
    rhttp_write_fn write;            /* NULL: keep the response in memory */
    size_t max_response;             /* what is kept at most (more fails the request) */
    long stall_ms;                   /* fail when no byte moves for this long */
    bool no_body;                    /* HEAD */
    rhttp_done_fn done;              /* once, on the loop */
    void *arg;
};

/* Starts the request; NULL when curl would not (done is then not called). */
struct rhttp *rhttp_start(struct server *srv, const struct rhttp_req *q);
/* A paused read or write can go on. */
void rhttp_resume(struct rhttp *h);
/* Ends the request without calling done. */
void rhttp_cancel(struct rhttp *h);
/* Bytes sent so far. */
uint64_t rhttp_sent(const struct rhttp *h);

/* The URL escape of a key's path (each segment escaped, '/' kept). */
void rhttp_escape_path(struct buf *out, const char *path);

#endif
