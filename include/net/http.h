/* http.h - requests, the response writer and streaming responses.
 *
 * A handler gets a struct http_req once the body is complete (or, for
 * ROUTE_STREAM_BODY routes, once the headers are) and answers exactly once:
 * with http_send*() for a whole body, or http_stream_begin() ... end() for a
 * streamed one. It may answer later from a job's completion (jobs.h).
 *
 * Ownership: the connection holds one reference on its current request;
 * every job in flight holds another. When the client goes away, req->conn
 * becomes NULL, on_abort runs, and whatever answers later is dropped.
 * Loop thread only.
 */
#ifndef SNAPSYNC_HTTP_H
#define SNAPSYNC_HTTP_H

#include <llhttp.h>

#include "core/err.h"
#include "net/router.h"
#include "net/server.h"
#include "core/util.h"

#define HTTP_MAX_HEADERS 100
#define HTTP_MAX_CHUNK_EXT 16384     /* chunk extension bytes per request */
#define HTTP_GZIP_MIN 1024           /* compress JSON bodies from this size */
#define HTTP_ACCESS_SCRATCH 32       /* bytes of a request the access hook keeps for itself */

struct http_hdr {
    uint32_t name_off, name_len, value_off, value_len;   /* into req->head */
};

enum http_body_own { HTTP_BODY_STATIC, HTTP_BODY_COPY, HTTP_BODY_FREE };

struct http_req {
    uint32_t refs;
    struct conn *conn;              /* NULL once the client is gone */
    struct server *srv;
    int method;                     /* llhttp_method_t as sent (HEAD kept) */
    bool head_only;                 /* HEAD: send headers, no body */
    bool keepalive;
    bool expect_continue;
    bool in_field;                  /* parser: inside a header name */
    bool responded;                 /* a response has been queued or begun */
    bool streaming;
    bool stream_chunked;
    bool stream_length;             /* Content-Length framing: the stream keeps the connection */
    bool accept_gzip;
    /* raw request line pieces and headers */
    struct buf head;
    uint32_t url_off, url_len;
    struct http_hdr hdrs[HTTP_MAX_HEADERS];
    int nhdrs;
    uint64_t head_bytes;
    /* parser checks llhttp leaves to us (http.c, "strictness") */
    const char *scan_at;            /* raw bytes up to here are checked for obs-fold */
    uint32_t scan_gen;              /* ...in the input piece conn->feed_gen */
    bool scan_on;                   /* inside a header or trailer section */
    bool scan_restart;              /* start at the next span (trailers) */
    bool scan_lf;                   /* the last raw byte checked was LF */
    bool in_trailers;
    uint32_t field_len;             /* bytes of the header name being read */
    uint64_t chunk_ext_bytes;       /* chunk extensions seen (bounded) */
    /* after headers: views into head (stable: head is not appended to again) */
    const char *path, *query;
    size_t path_len, query_len;
    /* body (buffered routes) */
    struct buf body;
    uint64_t body_seen;             /* body bytes received so far */
    uint64_t body_start_ms;         /* loop time the body could start (end of headers) */
    uint64_t body_paused_ms;        /* time reading was paused by us, not the client */
    uint64_t body_paused_at;        /* loop time of the current pause, or 0 */
    uint64_t body_limit;
    /* the client: "ip:port" of the TCP peer, or the address a trusted proxy
     * (--trusted-proxies) named in X-Forwarded-For; client_ip without port */
    char client[56];
    char client_ip[48];
    /* routing */
    struct route_match match;
    const struct route *route;
    /* access control (struct http_hooks): what the access hook decided and
     * what it keeps; net stores them and never looks inside */
    const void *principal;          /* who is calling, once the hook knows (NULL: nobody yet) */
    uint8_t access;                 /* enum http_access */
    unsigned char access_scratch[HTTP_ACCESS_SCRATCH];
    /* an answer decided before the body is read (http_early) */
    int early_status;
    const char *early_code;
    char early_msg[160];
    uint64_t retry_after;           /* seconds: Retry-After on the early answer (429) */
    /* response */
    int status;
    uint64_t bytes_out;
    struct buf resp_hdrs;           /* extra header lines, each "Name: value\r\n" */
    char rid[65];
    uint64_t t_start_ns;
    /* handler state */
    void *ctx;
    void (*ctx_free)(void *ctx);
    void (*on_abort)(struct http_req *r);      /* client left mid-request */
    void (*on_drain)(struct http_req *r);      /* stream queue below low water */
    size_t drain_low;
    /* streaming bodies (ROUTE_STREAM_BODY): called on the loop per piece;
     * return 0 to continue or 1 to pause reading until http_body_resume() */
    int (*on_body)(struct http_req *r, const char *data, size_t len);
    void (*on_body_end)(struct http_req *r);
};

/* What the HTTP core asks of the layers above it, so it calls nobody by
 * name (nginx's access phase, h2o's handler->on_req): main.c fills one from
 * svc/auth.c and api/metrics.c and points srv->hooks at it before the first
 * connection. Every member is required. Loop thread. */
enum http_access {
    HTTP_ACCESS_OK,                 /* go on */
    HTTP_ACCESS_DENIED,             /* the hook set the early answer (http_early) */
    HTTP_ACCESS_WAIT,               /* cannot tell yet: access_resolve decides at dispatch */
};

struct http_hooks {
    /* At the end of the headers, after routing, for a routed request with
     * no early answer yet (OPTIONS preflights excepted): before any body
     * byte is read. may_wait is false for a route whose handler takes the
     * body as it arrives (ROUTE_STREAM_BODY): it starts now and cannot wait
     * for access_resolve, so the hook must answer OK or DENIED. */
    enum http_access (*access)(struct http_req *r, bool may_wait);
    /* At dispatch, for a request access answered WAIT and that nothing
     * else answered early: decides (from a job if it likes), then calls
     * http_access_decided() while the client is still there. */
    void (*access_resolve)(struct http_req *r);
    /* An early answer the access hook decided is about to be sent (its
     * audit row). */
    void (*denied)(struct http_req *r, int status);
    /* The response is queued or the stream has ended, dur_us after the
     * request began (what is counted is the hook's business). */
    void (*done)(struct http_req *r, uint64_t dur_us);
};

/* access_resolve's answer (OK or DENIED): records it and dispatches r. */
void http_access_decided(struct http_req *r, enum http_access verdict);
/* Sets r's early answer: sent at dispatch instead of calling the handler,
 * unless the request is refused first. */
void http_early(struct http_req *r, int status, const char *code, const char *fmt, ...) PRINTF_LIKE(4, 5);

/* Header lookup (case-insensitive). Returns the value or NULL; *len set. */
const char *http_header(const struct http_req *r, const char *name, size_t *len);
/* Query parameter (first occurrence), percent-decoded into out. Returns the
 * decoded length, -1 if absent, -2 if malformed (a bad escape, a NUL raw
 * or escaped) or too long for cap. */
long http_query(const struct http_req *r, const char *name, char *out, size_t cap);
/* The same on a raw query string (the part after '?', not NUL-terminated;
 * NULL for none); cap is at least 1. Pure: any thread. */
long http_query_in(const char *query, size_t qlen, const char *name, char *out, size_t cap);

/* Adds a response header line. */
void http_add_header(struct http_req *r, const char *name, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* Whole responses. body ownership per own; ctype NULL means JSON. */
void http_send(struct http_req *r, int status, const char *ctype, const void *body, size_t len,
               enum http_body_own own);
/* JSON body from a buffer (taken over); gzip-encoded in a worker when large
 * and accepted. */
void http_send_json(struct http_req *r, int status, struct buf *body);
/* {"error":code,"message":...} plus optional extra members (JSON text
 * without braces, e.g. "\"current_rev\":\"3-ab\"" or NULL). */
void http_send_error(struct http_req *r, int status, const char *code, const char *extra,
                     const char *fmt, ...) PRINTF_LIKE(5, 6);
void http_send_empty(struct http_req *r, int status);
/* The same from the error carrier (core/err.h). */
void http_send_err(struct http_req *r, const struct err *e);

/* Streaming responses. chunked=false means the body ends with the
 * connection (only for responses that end the connection). */
void http_stream_begin(struct http_req *r, int status, const char *ctype, bool chunked);
/* A streamed body of known length (Content-Length, no chunking). */
void http_stream_begin_length(struct http_req *r, int status, const char *ctype, uint64_t len);
void http_stream_write(struct http_req *r, const void *data, size_t len);
/* Pre-framed chunks, for one frame shared by many streams (SSE fan-out):
 * the rbuf holds a whole HTTP/1.1 chunk, "%08zx\r\n" payload "\r\n", so a
 * chunked stream sends it as one buffer in one send(), and a stream without
 * chunking (HTTP/1.0) sends the payload part. Build one with
 * http_chunk_start() on an empty buf, append the payload, then
 * http_chunk_finish() (steals the buf). */
#define HTTP_CHUNK_HEAD 10
void http_chunk_start(struct buf *b);
struct rbuf *http_chunk_finish(struct buf *b);
struct rbuf *http_chunk_new(const void *payload, size_t len);
static inline size_t http_chunk_payload_len(const struct rbuf *ch) { return ch->len - HTTP_CHUNK_HEAD - 2; }
void http_stream_write_chunk(struct http_req *r, struct rbuf *ch);    /* takes a ref */
size_t http_stream_queued(const struct http_req *r);                  /* bytes not yet sent */
/* Several pre-framed chunks at once, for a stream whose producer keeps its
 * own queue (SSE subscribers). http_stream_try_chunks writes what the socket
 * takes now, in as few sendmsg(2) calls as it can and without allocating,
 * when nothing else is queued on the connection; it returns how many
 * chunks went out whole and sets *off to the bytes of the next one already
 * sent. It returns n (the chunks are dropped) when the stream is gone.
 * http_stream_queue_chunks then queues chunks (the first from byte off) as
 * one write request that holds a reference on each until it is written;
 * on_drain (with drain_low 0) says when it is. */
size_t http_stream_try_chunks(struct http_req *r, struct rbuf *const *chs, size_t n, size_t *off);
void http_stream_queue_chunks(struct http_req *r, struct rbuf *const *chs, size_t n, size_t off);
void http_stream_end(struct http_req *r);

/* Streaming request bodies: resume after on_body returned 1. */
void http_body_resume(struct http_req *r);

/* The request target as the access log shows it: path (plen bytes) and,
 * when query is not NULL, "?" and the query, with every value that looks
 * like a secret (a snapsync token, a long random-looking string, a value
 * under a name such as token or password), in any parameter of the query,
 * any ";param" of the path, percent-encoded or not, replaced by REDACTED;
 * path segments lose only snapsync tokens. Appended to out. Any thread. */
void http_redact_target(struct buf *out, const char *path, size_t plen, const char *query, size_t qlen);

void http_req_ref(struct http_req *r);
void http_req_unref(struct http_req *r);
/* ref/unref/alive for the threadpool (server_init installs them) */
extern const struct job_req_hooks http_job_hooks;

/* For server.c */
extern const llhttp_settings_t http_parser_settings;
/* (http_parse() and the request checks: net/http_parse.h) */
struct http_req *http_req_new(struct conn *c);
void http_dispatch(struct http_req *r);
void http_on_write_drained(struct conn *c);
/* Answers a request that failed in the parser (status 400/413/431...) */
void http_reject(struct conn *c, int status, const char *code, const char *msg);
const char *http_status_text(int status);

#endif
