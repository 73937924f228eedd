/* http.c - llhttp glue, request objects, the response writer.
 *
 * Parsing: request line and header bytes are copied into req->head as
 * llhttp hands them over (the read buffer is shared and reused), with the
 * --max-header-bytes limit counted as they arrive. At the end of the headers
 * the request is routed, so 404/405/400/413 are decided before any body is
 * read; the body is buffered up to the route's limit, or handed to the
 * handler piece by piece (ROUTE_STREAM_BODY). Access is the access hook's
 * (struct http_hooks): http.c calls what main.c installed and names no one.
 * The RFC 9112 checks and the reading of a parsed request are in
 * http_parse.c, the access log in http_log.c (leaves under this file).
 *
 * Writing: a whole response is one writev of head + body, tried at once
 * with uv_try_write (no allocation when the socket takes it all), with the
 * remainder queued with uv_write. Streaming responses are chunked writes;
 * the producer watches http_stream_queued() and gets on_drain when the
 * queue runs low. Large JSON is gzip-encoded on the threadpool.
 *
 * Loop thread only.
 */
#include "net/http.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <zlib.h>

#include "core/jobs.h"
#include "net/http_log.h"
#include "net/http_parse.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"

/* llhttp.c holds a loose and a strict parser; only the strict one is
 * acceptable (docs/http.md). subprojects/llhttp/meson.build selects it. */
#if !LLHTTP_STRICT_MODE
#error "llhttp must be built with LLHTTP_STRICT_MODE=1 (see subprojects/llhttp/meson.build)"
#endif

#define REQ_FREELIST_MAX 64
#define HEAD_STACK 2048

static struct http_req *req_freelist[REQ_FREELIST_MAX];
static int req_freelist_n;

/* ---- request objects ---------------------------------------------------- */

struct http_req *http_req_new(struct conn *c)
{
    struct http_req *r;
    if (req_freelist_n > 0) {
        r = req_freelist[--req_freelist_n];
        struct buf head = r->head, body = r->body, rh = r->resp_hdrs;
        memset(r, 0, offsetof(struct http_req, hdrs));
        memset(&r->nhdrs, 0, sizeof *r - offsetof(struct http_req, nhdrs));
        buf_reset(&head);
        buf_reset(&body);
        buf_reset(&rh);
        r->head = head;
        r->body = body;
        r->resp_hdrs = rh;
    } else {
        r = xcalloc(1, sizeof *r);
    }
    r->refs = 1;
    r->conn = c;
    r->srv = c->srv;
    r->t_start_ns = now_ns_mono();
    return r;
}

void http_req_ref(struct http_req *r) { r->refs++; }

void http_req_unref(struct http_req *r)
{
    if (!r) return;
    assert(r->refs > 0);
    if (--r->refs > 0) return;
    if (r->ctx_free) r->ctx_free(r->ctx);
    /* keep small buffers for reuse; give big ones back */
    if (req_freelist_n < REQ_FREELIST_MAX && r->head.cap <= 8192 && r->body.cap <= 65536 &&
        r->resp_hdrs.cap <= 4096) {
        req_freelist[req_freelist_n++] = r;
        return;
    }
    buf_free(&r->head);
    buf_free(&r->body);
    buf_free(&r->resp_hdrs);
    free(r);
}

static bool req_alive(const struct http_req *r) { return r->conn != NULL; }

/* how the threadpool (core/jobs.c) holds a request */
const struct job_req_hooks http_job_hooks = {
    .ref = http_req_ref,
    .unref = http_req_unref,
    .alive = req_alive,
};

/* Called when the response is fully queued or the stream has ended. The
 * request lets go of its connection here: whoever still holds it (a job,
 * an upload waiting to resume reading) finds r->conn NULL, as if the
 * client had left, and never touches a connection that has moved on to
 * the next request or been freed. */
static void req_finish(struct http_req *r)
{
    http_access_log(r);
    struct conn *c = r->conn;
    r->conn = NULL;
    if (c && c->req == r) {
        conn_finish_request(c);
        http_req_unref(r);   /* the connection's reference */
    }
}

void http_add_header(struct http_req *r, const char *name, const char *fmt, ...)
{
    va_list ap;
    buf_puts(&r->resp_hdrs, name);
    buf_append(&r->resp_hdrs, ": ", 2);
    va_start(ap, fmt);
    buf_vprintf(&r->resp_hdrs, fmt, ap);
    va_end(ap);
    buf_append(&r->resp_hdrs, "\r\n", 2);
}

/* ---- parser callbacks --------------------------------------------------- */

static int limit_headers(struct http_req *r, size_t more)
{
    r->head_bytes += more;
    if (r->head_bytes > r->srv->cfg->max_header_bytes) {
        r->early_status = 431;
        r->early_code = "headers_too_large";
        snprintf(r->early_msg, sizeof r->early_msg, "request line and headers exceed %llu bytes",
                 (unsigned long long)r->srv->cfg->max_header_bytes);
        return HPE_USER;
    }
    return 0;
}

/* on_answered: a request answered before its message ended (a streamed
 * upload's handler refusing at the headers or mid-body) is finished, and
 * c->req is NULL until the next message begins, while llhttp goes on with
 * the rest of the same read: its body, chunk extensions and trailers. The
 * connection lingers by then (an answer before the end of a request closes
 * it), so those callbacks stop the parse (HPE_USER; conn_feed discards the
 * rest of the input of a lingering connection) instead of reaching for a
 * request that is gone. */
static int on_message_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    c->state = CONN_HEADERS;
    conn_set_timeout(c, TO_HEADER);
    c->req = http_req_new(c);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct http_req *r = c->req;
    if (limit_headers(r, len)) return HPE_USER;
    if (r->url_len == 0) {
        r->url_off = (uint32_t)r->head.len;
        r->scan_on = true;
        r->scan_restart = true;
    }
    if (http_fold_scan(c, r, at, len)) return HPE_USER;
    buf_append(&r->head, at, len);
    r->url_len += (uint32_t)len;
    return 0;
}

static bool headers_done(const struct http_req *r) { return r->path != NULL; }

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct http_req *r = c->req;
    if (!r) return HPE_USER;                        /* answered: see on_answered */
    if (limit_headers(r, len + 4)) return HPE_USER;
    if (headers_done(r) && !r->in_trailers) {       /* the first trailer */
        r->in_trailers = true;
        r->scan_on = true;
        r->scan_restart = true;
    }
    if (http_fold_scan(c, r, at, len)) return HPE_USER;
    r->field_len += (uint32_t)len;
    if (headers_done(r)) return 0;                  /* trailers: checked, then ignored */
    if (!r->in_field) {
        if (r->nhdrs == HTTP_MAX_HEADERS) {
            r->early_status = 431;
            r->early_code = "headers_too_large";
            snprintf(r->early_msg, sizeof r->early_msg, "more than %d header fields", HTTP_MAX_HEADERS);
            return HPE_USER;
        }
        struct http_hdr *h = &r->hdrs[r->nhdrs++];
        h->name_off = (uint32_t)r->head.len;
        h->name_len = 0;
        h->value_off = 0;
        h->value_len = 0;
        r->in_field = true;
    }
    for (size_t i = 0; i < len; i++) {
        if (!http_is_tchar((unsigned char)at[i])) {
            http_early(r, 400, "bad_request", "malformed HTTP request: invalid character in a header name");
            return HPE_USER;
        }
    }
    buf_append(&r->head, at, len);
    r->hdrs[r->nhdrs - 1].name_len += (uint32_t)len;
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct http_req *r = ((struct conn *)p->data)->req;
    if (!r) return HPE_USER;
    if (r->field_len == 0) {
        http_early(r, 400, "bad_request", "malformed HTTP request: empty header name");
        return HPE_USER;
    }
    r->field_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct http_req *r = c->req;
    if (!r) return HPE_USER;
    if (limit_headers(r, len)) return HPE_USER;
    if (http_fold_scan(c, r, at, len)) return HPE_USER;
    if (headers_done(r)) return 0;
    struct http_hdr *h = &r->hdrs[r->nhdrs - 1];
    if (r->in_field) {
        r->in_field = false;
        h->value_off = (uint32_t)r->head.len;
    }
    buf_append(&r->head, at, len);
    h->value_len += (uint32_t)len;
    return 0;
}

static void send_raw(struct conn *c, const char *data, size_t len);

/* ---- the end of the headers --------------------------------------------
 *
 * Splits the URL, picks the request id, routes, and decides what to do
 * with the body -- all before the first body byte is read. Each step below
 * is one part of on_headers_complete, in its order. */

/* Method, keep-alive and no protocol switch. */
static void head_basics(struct conn *c, struct http_req *r, llhttp_t *p)
{
    r->in_field = false;
    r->scan_on = false;
    r->method = llhttp_get_method(p);
    r->keepalive = llhttp_should_keep_alive(p);
    if (!r->keepalive) c->close_after = 1;
    r->head_only = r->method == HTTP_HEAD;
    /* no protocol switches here: Upgrade is ignored (RFC 9110 §7.8) and
     * CONNECT answered like any unknown route, then the connection closes
     * (the client meant to send something that is not HTTP after it) */
    p->upgrade = 0;
    if (r->method == HTTP_CONNECT) c->close_after = 1;
}

/* The client's X-Request-Id when it is a valid one, else one of ours. */
static void request_id(struct server *srv, struct http_req *r)
{
    size_t vlen;
    const char *v = http_header(r, "X-Request-Id", &vlen);
    if (v && name_request_id_valid(v, vlen)) {
        memcpy(r->rid, v, vlen);
        r->rid[vlen] = '\0';
    } else {
        server_request_id(srv, r->rid);
    }
}

/* Accept-Encoding and Expect. */
static void read_expect(struct http_req *r, llhttp_t *p, bool has_body)
{
    size_t vlen;
    const char *v = http_header(r, "Accept-Encoding", &vlen);
    r->accept_gzip = v && header_has_token(v, vlen, "gzip");
    v = http_header(r, "Expect", &vlen);
    if (v) {
        /* an HTTP/1.0 client cannot mean 100-continue: ignored (RFC 9110 §10.1.1) */
        if (str_ieq(v, vlen, "100-continue"))
            r->expect_continue = has_body && llhttp_get_http_minor(p) >= 1;
        else
            http_early(r, 417, "expectation_failed", "only 'Expect: 100-continue' is supported");
    }
}

static void route_request(struct server *srv, struct http_req *r)
{
    int m = r->method == HTTP_OPTIONS ? HTTP_GET : r->method;
    enum route_result rr = router_match(&srv->router, m, r->path, r->path_len, &r->match);
    if (r->method == HTTP_OPTIONS && rr == ROUTE_BAD_METHOD) rr = ROUTE_OK;  /* preflight any route */
    switch (rr) {
    case ROUTE_OK:
        r->route = r->match.route;
        break;
    case ROUTE_NOT_FOUND:
        http_early(r, 404, "not_found", "no route for %s %.*s", llhttp_method_name((llhttp_method_t)r->method),
                   (int)MIN(r->path_len, 100), r->path);
        break;
    case ROUTE_BAD_METHOD:
        http_early(r, 405, "method_not_allowed", "%s is not allowed here; allowed: %s",
                   llhttp_method_name((llhttp_method_t)r->method), r->match.allow);
        break;
    case ROUTE_BAD_NAME:
        http_early(r, 400, "invalid_name", "invalid %s in path (see the naming rules)", r->match.bad_param);
        break;
    case ROUTE_BAD_ID:
        http_early(r, 404, "not_found", "no such %s", r->match.bad_param);
        break;
    }
}

/* The access hook (auth), before any body byte is read. */
static void check_access(struct server *srv, struct http_req *r)
{
    /* a streamed upload's handler starts now: it cannot wait */
    bool may_wait = !(r->route->flags & ROUTE_STREAM_BODY);
    assert(srv->hooks && srv->hooks->access);
    enum http_access verdict = srv->hooks->access(r, may_wait);
    assert(may_wait || verdict != HTTP_ACCESS_WAIT);
    assert((verdict == HTTP_ACCESS_DENIED) == (r->early_status != 0));
    r->access = (uint8_t)verdict;
}

/* Body limits, 100 Continue, and the start of a streamed upload. Returns
 * what on_headers_complete returns. */
static int body_start(struct conn *c, struct http_req *r, llhttp_t *p, bool has_body)
{
    struct server *srv = c->srv;
    const struct config *cfg = srv->cfg;
    unsigned flags = r->route ? r->route->flags : 0;
    r->body_limit = (flags & ROUTE_STREAM_BODY) ? cfg->max_blob_bytes : cfg->max_body_bytes;
    if (has_body && (p->flags & F_CONTENT_LENGTH) && p->content_length > r->body_limit) {
        http_early(r, 413, "body_too_large", "request body of %llu bytes exceeds the limit of %llu bytes",
                   (unsigned long long)p->content_length, (unsigned long long)r->body_limit);
        return -1;                                  /* answer now, close */
    }
    if (has_body && r->early_status && r->expect_continue) return -1;   /* never send 100 for it */
    /* other early answers read and discard a body within the limit, so the
     * connection stays usable */
    if (r->expect_continue && !r->early_status) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        send_raw(c, cont, sizeof cont - 1);
    }
    if (has_body) {
        c->state = CONN_BODY;
        r->body_start_ms = uv_now(srv->loop);
        conn_set_timeout(c, TO_BODY);
    }
    if (r->route && (flags & ROUTE_STREAM_BODY) && !r->early_status && r->access != HTTP_ACCESS_WAIT &&
        r->method != HTTP_OPTIONS) {
        /* the handler takes the body as it arrives; it answers at on_body_end */
        http_req_ref(r);
        r->route->handler(r);
        http_req_unref(r);
        /* an answer already (404, 409): the connection lingers and the
         * body, read on, is discarded (on_body finds no request) */
        if (c->state == CONN_CLOSING) return HPE_USER;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct http_req *r = c->req;
    struct server *srv = c->srv;

    head_basics(c, r, p);
    if (!r->head.data) buf_putc(&r->head, '\0');  /* HTTP/0.9 "GET\r\n": no URL */
    bool valid = http_request_valid(r, p);
    http_split_target(r);
    http_client_addr(r);
    request_id(srv, r);
    if (!valid) return -1;                          /* answer now, close */

    bool has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    read_expect(r, p, has_body);
    if (!r->early_status) route_request(srv, r);
    if (!r->early_status && r->route && r->method != HTTP_OPTIONS) check_access(srv, r);
    return body_start(c, r, p, has_body);
}

/* The minimum body rate (slow-body defence, like mod_reqtimeout's
 * MinRate): --body-timeout-ms of grace, then each --min-body-rate bytes buy
 * one more second. Time the server itself stopped reading (a streamed
 * upload waiting for the disk) is not the client's and does not count. A
 * client that sends nothing at all meets the TO_BODY timeout instead. */
static uint64_t body_active_ms(const struct http_req *r, uint64_t now)
{
    uint64_t paused = r->body_paused_ms + (r->body_paused_at ? now - r->body_paused_at : 0);
    return now - r->body_start_ms - paused;
}

static bool body_too_slow(const struct http_req *r, uint64_t now)
{
    const struct config *cfg = r->srv->cfg;
    if (!cfg->min_body_rate) return false;
    return body_active_ms(r, now) > cfg->body_timeout_ms + r->body_seen * 1000 / cfg->min_body_rate;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct http_req *r = c->req;
    if (!r) return HPE_USER;                    /* answered: see on_answered */
    if (r->responded) return 0;                 /* a response under way: discard */
    r->body_seen += len;
    if (r->body_seen > r->body_limit) {
        http_early(r, 413, "body_too_large", "request body exceeds the limit of %llu bytes",
                   (unsigned long long)r->body_limit);
        return HPE_USER;
    }
    uint64_t now = uv_now(c->srv->loop);
    if (body_too_slow(r, now)) {
        http_early(r, 408, "request_timeout", "request body too slow: %llu bytes in %llu ms, the minimum is %llu bytes/s",
                   (unsigned long long)r->body_seen, (unsigned long long)body_active_ms(r, now),
                   (unsigned long long)c->srv->cfg->min_body_rate);
        return HPE_USER;
    }
    /* llhttp goes on with the rest of a read after we paused reading */
    conn_set_timeout(c, r->body_paused_at ? TO_NONE : TO_BODY);
    if (r->early_status || (r->route->flags & ROUTE_NO_BODY)) return 0;   /* counted, discarded */
    if (r->on_body) {
        if (r->on_body(r, at, len) == 1 && c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = 0;
            /* our pause, not the client's stall: no body timeout meanwhile */
            r->body_paused_at = now;
            conn_set_timeout(c, TO_NONE);
        }
        return 0;
    }
    buf_append(&r->body, at, len);
    return 0;
}

/* Chunk extensions are parsed by llhttp and ignored here; their total is
 * bounded, or a client could stream them forever without a body byte. */
static int on_chunk_extension(llhttp_t *p, const char *at, size_t len)
{
    UNUSED(at);
    struct http_req *r = ((struct conn *)p->data)->req;
    if (!r) return HPE_USER;
    r->chunk_ext_bytes += len;
    if (r->chunk_ext_bytes > HTTP_MAX_CHUNK_EXT) {
        http_early(r, 400, "bad_request", "malformed HTTP request: chunk extensions exceed %d bytes", HTTP_MAX_CHUNK_EXT);
        return HPE_USER;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    UNUSED(p);
    return HPE_PAUSED;               /* conn_feed dispatches the request */
}

const llhttp_settings_t http_parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_extension_name = on_chunk_extension,
    .on_chunk_extension_value = on_chunk_extension,
    .on_message_complete = on_message_complete,
};

void http_body_resume(struct http_req *r)
{
    if (!r->conn) return;
    if (r->body_paused_at) {
        r->body_paused_ms += uv_now(r->srv->loop) - r->body_paused_at;
        r->body_paused_at = 0;
    }
    conn_read_resume(r->conn);
}

/* ---- CORS --------------------------------------------------------------- */

static const char *cors_origin(const struct http_req *r, size_t *len)
{
    const struct config *cfg = r->srv->cfg;
    if (!cfg->cors_any && cfg->n_cors_origins == 0) return NULL;
    const char *o = http_header(r, "Origin", len);
    if (!o || !cfg_origin_allowed(cfg, o, *len)) return NULL;
    return o;
}

static void preflight(struct http_req *r)
{
    size_t olen;
    const char *o = cors_origin(r, &olen);
    const char *want = http_header(r, "Access-Control-Request-Method", NULL);
    http_add_header(r, "Allow", "%s, OPTIONS", r->match.allow[0] ? r->match.allow : "GET, HEAD");
    if (o && want) {
        http_add_header(r, "Access-Control-Allow-Methods", "%s", r->match.allow[0] ? r->match.allow : "GET, HEAD");
        http_add_header(r, "Access-Control-Allow-Headers",
                        "Authorization, Content-Type, If-Match, If-None-Match, Last-Event-ID, Prefer, "
                        "X-Request-Id, Range, Accept-Encoding");
        http_add_header(r, "Access-Control-Max-Age", "600");
    }
    http_send_empty(r, 204);
}

/* ---- dispatch ----------------------------------------------------------- */

void http_dispatch(struct http_req *r)
{
    if (!r || r->responded) return;            /* answered while reading */
    struct conn *c = r->conn;
    const struct http_hooks *hooks = r->srv->hooks;
    assert(c);                       /* the pool drops a request whose client left */
    c->state = CONN_HANDLING;
    conn_set_timeout(c, TO_NONE);
    if (r->access == HTTP_ACCESS_WAIT && !r->early_status) {
        assert(hooks && hooks->access_resolve);
        hooks->access_resolve(r);    /* comes back through http_access_decided() */
        return;
    }
    if (r->early_status) {
        if (r->access == HTTP_ACCESS_DENIED) {
            assert(hooks && hooks->denied);
            hooks->denied(r, r->early_status);
        }
        if (r->retry_after) http_add_header(r, "Retry-After", "%llu", (unsigned long long)r->retry_after);
        http_send_error(r, r->early_status, r->early_code, NULL, "%s", r->early_msg);
        return;
    }
    if (r->method == HTTP_OPTIONS) {
        preflight(r);
        return;
    }
    if (r->route->flags & ROUTE_STREAM_BODY) {
        if (r->on_body_end) r->on_body_end(r);
        return;
    }
    r->route->handler(r);
}

void http_access_decided(struct http_req *r, enum http_access verdict)
{
    assert(r->access == HTTP_ACCESS_WAIT && verdict != HTTP_ACCESS_WAIT);
    assert((verdict == HTTP_ACCESS_DENIED) == (r->early_status != 0));
    r->access = (uint8_t)verdict;
    http_dispatch(r);
}

/* ---- writing ------------------------------------------------------------ */

/* One queued write: the uv_write_t, the shared payloads it references
 * (refs[], held until the write is done) and the bytes it had to copy
 * (after refs[]). uv_write keeps its own copy of the uv_buf_t array, so a
 * write of many chunks costs a pointer per chunk here plus libuv's 16 bytes. */
struct wreq {
    uv_write_t w;
    struct conn *c;
    size_t nrefs;
    struct rbuf *refs[];
};

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = container_of(w, struct wreq, w);
    struct conn *c = wr->c;
    for (size_t i = 0; i < wr->nrefs; i++) rbuf_unref(wr->refs[i]);
    free(wr);
    if (status < 0 || c->state == CONN_CLOSING) {
        if (status < 0 && status != UV_ECANCELED) conn_close(c);
        return;
    }
    if (c->state == CONN_IDLE || c->state == CONN_STREAMING) {
        if (c->tcp.write_queue_size > 0 || c->state == CONN_STREAMING) conn_set_timeout(c, TO_IDLE);
    }
    if (c->state == CONN_STREAMING && c->req && c->req->on_drain &&
        c->tcp.write_queue_size <= c->req->drain_low)
        c->req->on_drain(c->req);
    http_on_write_drained(c);
}

/* Writes bufs now if the socket takes them; queues a copy of the rest.
 * rb (optional) backs bufs[rbi] and is referenced instead of copied. */
static void write_bufs(struct conn *c, uv_buf_t *bufs, size_t n, struct rbuf *rb, size_t rbi)
{
    size_t total = 0, off = 0;
    for (size_t i = 0; i < n; i++) total += bufs[i].len;
    c->srv->stats.bytes_out += total;
    if (c->tcp.write_queue_size == 0) {
        int w;
        uv_os_fd_t fd;
        if (n == 1 && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
            /* what uv_try_write does, minus the VFS layer of write(2):
             * send(2) is measurably cheaper per call, which counts when one
             * SSE event goes to 10,000 sockets (docs/performance.md) */
            ssize_t s;
            do s = send(fd, bufs[0].base, bufs[0].len, MSG_DONTWAIT | MSG_NOSIGNAL);
            while (s < 0 && errno == EINTR);
            w = s >= 0 ? (int)s : (errno == EAGAIN || errno == EWOULDBLOCK) ? UV_EAGAIN : uv_translate_sys_error(errno);
        } else {
            w = uv_try_write((uv_stream_t *)&c->tcp, bufs, (unsigned)n);
        }
        if (w > 0) off = (size_t)w;
        else if (w != UV_EAGAIN && w != UV_ENOSYS) {
            conn_close(c);
            return;
        }
    }
    if (off == total) return;
    /* skip what was written; copy the rest (rb's part is referenced) */
    size_t copy = 0, nrefs = 0;
    size_t skip = off;
    for (size_t i = 0; i < n; i++) {
        size_t l = bufs[i].len;
        size_t s = MIN(skip, l);
        skip -= s;
        if (rb && i == rbi) nrefs = l > s;
        else copy += l - s;
    }
    struct wreq *wr = xmalloc(sizeof *wr + nrefs * sizeof wr->refs[0] + copy);
    wr->c = c;
    wr->nrefs = 0;
    char *d = (char *)&wr->refs[nrefs];
    uv_buf_t left[3];
    size_t nleft = 0;
    assert(n <= ARRAY_SIZE(left));
    skip = off;
    for (size_t i = 0; i < n; i++) {
        size_t l = bufs[i].len;
        size_t s = MIN(skip, l);
        skip -= s;
        if (l - s == 0) continue;
        if (rb && i == rbi) {
            wr->refs[wr->nrefs++] = rbuf_ref(rb);
            left[nleft++] = uv_buf_init(bufs[i].base + s, (unsigned)(l - s));
        } else {
            memcpy(d, bufs[i].base + s, l - s);
            left[nleft++] = uv_buf_init(d, (unsigned)(l - s));
            d += l - s;
        }
    }
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, left, (unsigned)nleft, on_write) < 0) {
        for (size_t i = 0; i < wr->nrefs; i++) rbuf_unref(wr->refs[i]);
        free(wr);
        conn_close(c);
    }
}

static void send_raw(struct conn *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    write_bufs(c, &b, 1, NULL, 0);
}

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 304: return "Not Modified";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static inline char *put(char *p, const char *s, size_t n) { memcpy(p, s, n); return p + n; }
#define PUTS(p, lit) put(p, lit, sizeof(lit) - 1)

static char *put_u64(char *p, uint64_t v)
{
    char tmp[24];
    int i = (int)sizeof tmp;
    do { tmp[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    return put(p, tmp + i, sizeof tmp - (size_t)i);
}

/* Composes the status line and headers into out (cap bytes, which the
 * caller sized from resp_hdrs). len < 0: no Content-Length (streams). */
enum body_framing { FRAME_LENGTH, FRAME_NONE, FRAME_CHUNKED, FRAME_EOF };

static size_t compose_head(struct http_req *r, char *out, int status, const char *ctype,
                           enum body_framing framing, uint64_t len, const char *encoding)
{
    struct conn *c = r->conn;
    char *p = out;
    const char *st = http_status_text(status);
    p = PUTS(p, "HTTP/1.1 ");
    p = put_u64(p, (uint64_t)status);
    *p++ = ' ';
    p = put(p, st, strlen(st));
    p = PUTS(p, "\r\nServer: snapsync\r\nDate: ");
    const char *d = server_date(r->srv);
    p = put(p, d, strlen(d));
    if (ctype) {
        p = PUTS(p, "\r\nContent-Type: ");
        p = put(p, ctype, strlen(ctype));
    }
    if (framing == FRAME_LENGTH) {
        p = PUTS(p, "\r\nContent-Length: ");
        p = put_u64(p, len);
    } else if (framing == FRAME_CHUNKED) {
        p = PUTS(p, "\r\nTransfer-Encoding: chunked");
    }
    if (encoding) {
        p = PUTS(p, "\r\nContent-Encoding: ");
        p = put(p, encoding, strlen(encoding));
    }
    p = PUTS(p, "\r\nX-Request-Id: ");
    p = put(p, r->rid, strlen(r->rid));
    /* answering before the whole request was read: the rest can't be trusted */
    if (c->state == CONN_HEADERS || c->state == CONN_BODY) c->close_after = 1;
    bool closing = c->close_after || r->srv->shutting_down || framing == FRAME_EOF;
    if (closing) {
        c->close_after = 1;
        p = PUTS(p, "\r\nConnection: close");
    } else if (llhttp_get_http_minor(&c->parser) == 0) {
        p = PUTS(p, "\r\nConnection: keep-alive");
    }
    size_t olen;
    const char *o = cors_origin(r, &olen);
    if (o) {
        p = PUTS(p, "\r\nAccess-Control-Allow-Origin: ");
        p = put(p, o, olen);
        p = PUTS(p, "\r\nVary: Origin\r\nAccess-Control-Expose-Headers: ETag, Location, X-Request-Id, "
                    "Retry-After, SSE-Replay-From, Content-Encoding");
    }
    p = PUTS(p, "\r\n");
    if (r->resp_hdrs.len) p = put(p, r->resp_hdrs.data, r->resp_hdrs.len);
    p = PUTS(p, "\r\n");
    return (size_t)(p - out);
}

#define HEAD_FIXED 640               /* everything compose_head adds but resp_hdrs and the origin */

static size_t head_cap(const struct http_req *r, const char *ctype, const char *enc)
{
    return HEAD_FIXED + r->resp_hdrs.len + (ctype ? strlen(ctype) : 0) + (enc ? strlen(enc) : 0) + 300;
}

static void send_whole(struct http_req *r, int status, const char *ctype, const void *body, size_t len,
                       enum http_body_own own, const char *encoding)
{
    struct conn *c = r->conn;
    if (r->responded || !c || c->state == CONN_CLOSING) {
        if (own == HTTP_BODY_FREE) free((void *)body);
        return;
    }
    r->responded = true;
    r->status = status;
    bool no_body = r->head_only || status == 204 || status == 304;
    char stack[HEAD_STACK], *head = stack;
    size_t cap = head_cap(r, ctype, encoding);
    if (cap > sizeof stack) head = xmalloc(cap);
    enum body_framing fr = (status == 204 || status == 304) ? FRAME_NONE : FRAME_LENGTH;
    size_t hl = compose_head(r, head, status, ctype, fr, len, encoding);
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)hl), uv_buf_init((char *)body, (unsigned)len)};
    size_t nb = (no_body || len == 0) ? 1 : 2;
    r->bytes_out = hl + (nb == 2 ? len : 0);
    write_bufs(c, bufs, nb, NULL, 0);
    if (head != stack) free(head);
    if (own == HTTP_BODY_FREE) free((void *)body);
    req_finish(r);
}

void http_send(struct http_req *r, int status, const char *ctype, const void *body, size_t len,
               enum http_body_own own)
{
    send_whole(r, status, ctype ? ctype : "application/json; charset=utf-8", body, len, own, NULL);
}

void http_send_empty(struct http_req *r, int status)
{
    send_whole(r, status, NULL, "", 0, HTTP_BODY_STATIC, NULL);
}

/* gzip on the threadpool */
struct gzip_job {
    struct job job;
    int status;
    char *in;
    size_t in_len;
    char *out;
    size_t out_len;
    int err;
};

static void gzip_work(struct job *j)
{
    struct gzip_job *g = container_of(j, struct gzip_job, job);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    /* level 1: most of the size gain for a fraction of level 6's CPU (a
     * 1,000-entity change page is ~1 MB); the socket is rarely the bound */
    if (deflateInit2(&zs, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        g->err = -1;
        return;
    }
    size_t cap = deflateBound(&zs, g->in_len);
    g->out = xmalloc(cap);
    zs.next_in = (Bytef *)g->in;
    zs.avail_in = (uInt)g->in_len;
    zs.next_out = (Bytef *)g->out;
    zs.avail_out = (uInt)cap;
    int rc = deflate(&zs, Z_FINISH);
    g->out_len = zs.total_out;
    deflateEnd(&zs);
    g->err = rc == Z_STREAM_END ? 0 : -1;
}

static void gzip_done(struct job *j, struct http_req *r)
{
    struct gzip_job *g = container_of(j, struct gzip_job, job);
    if (r) {
        if (g->err == 0) {
            send_whole(r, g->status, "application/json; charset=utf-8", g->out, g->out_len, HTTP_BODY_FREE, "gzip");
            g->out = NULL;
        } else {
            send_whole(r, g->status, "application/json; charset=utf-8", g->in, g->in_len, HTTP_BODY_FREE, NULL);
            g->in = NULL;
        }
    }
    free(g->in);
    free(g->out);
    free(g);
}

void http_send_json(struct http_req *r, int status, struct buf *body)
{
    size_t len;
    char *data = buf_steal(body, &len);
    if (len >= HTTP_GZIP_MIN) http_add_header(r, "Vary", "Accept-Encoding");
    if (r->accept_gzip && !r->head_only && len >= HTTP_GZIP_MIN && r->conn) {
        struct gzip_job *g = xcalloc(1, sizeof *g);
        g->status = status;
        g->in = data;
        g->in_len = len;
        job_submit(&r->srv->jobs, &g->job, r, gzip_work, gzip_done);
        return;
    }
    send_whole(r, status, "application/json; charset=utf-8", data, len, HTTP_BODY_FREE, NULL);
}

static void error_body(struct buf *b, const char *code, const char *extra, const char *msg)
{
    buf_puts(b, "{\"error\":");
    json_cstr(b, code);
    buf_puts(b, ",\"message\":");
    json_cstr(b, msg);
    if (extra && *extra) {
        buf_putc(b, ',');
        buf_puts(b, extra);
    }
    buf_putc(b, '}');
}

void http_send_error(struct http_req *r, int status, const char *code, const char *extra, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct buf b;
    buf_init(&b);
    error_body(&b, code, extra, msg);
    if (status == 405 && r->match.allow[0]) http_add_header(r, "Allow", "%s", r->match.allow);
    http_send_json(r, status, &b);
}

void http_send_err(struct http_req *r, const struct err *e)
{
    struct buf b;
    buf_init(&b);
    error_body(&b, e->code, e->extra[0] ? e->extra : NULL, e->msg);
    if (e->status == 405 && r->match.allow[0]) http_add_header(r, "Allow", "%s", r->match.allow);
    http_send_json(r, e->status, &b);
}

/* A response the connection sends on its own, then closes: parse errors,
 * limits, timeouts, --max-connections. Works with or without a request. */
void http_reject(struct conn *c, int status, const char *code, const char *msg)
{
    struct http_req *r = c->req;
    if (c->state == CONN_CLOSING || c->state == CONN_LINGER) return;
    c->close_after = 1;
    if (!r || r->responded) {
        if (r && r->responded) { conn_close(c); return; }
        r = c->req = http_req_new(c);
    }
    if (!r->rid[0]) server_request_id(c->srv, r->rid);
    c->state = CONN_HANDLING;
    struct buf b;
    buf_init(&b);
    error_body(&b, code, NULL, msg);
    r->accept_gzip = false;
    if (status == 503) http_add_header(r, "Retry-After", "1");
    send_whole(r, status, "application/json; charset=utf-8", b.data, b.len, HTTP_BODY_FREE, NULL);
}

/* ---- streaming ---------------------------------------------------------- */

void http_stream_begin(struct http_req *r, int status, const char *ctype, bool chunked)
{
    struct conn *c = r->conn;
    if (r->responded || !c || c->state == CONN_CLOSING) return;
    r->responded = true;
    r->streaming = true;
    r->status = status;
    /* HTTP/1.0 has no chunked encoding: such a stream ends with the close */
    r->stream_chunked = chunked && !r->head_only && llhttp_get_http_minor(&c->parser) >= 1;
    char stack[HEAD_STACK], *head = stack;
    size_t cap = head_cap(r, ctype, NULL);
    if (cap > sizeof stack) head = xmalloc(cap);
    enum body_framing fr = r->head_only ? FRAME_NONE : r->stream_chunked ? FRAME_CHUNKED : FRAME_EOF;
    size_t hl = compose_head(r, head, status, ctype, fr, 0, NULL);
    r->bytes_out = hl;
    c->state = CONN_STREAMING;
    conn_set_timeout(c, TO_IDLE);
    send_raw(c, head, hl);
    if (head != stack) free(head);
}

void http_stream_begin_length(struct http_req *r, int status, const char *ctype, uint64_t len)
{
    struct conn *c = r->conn;
    if (r->responded || !c || c->state == CONN_CLOSING) return;
    r->responded = true;
    r->streaming = true;
    r->status = status;
    r->stream_chunked = false;
    r->stream_length = true;
    char stack[HEAD_STACK], *head = stack;
    size_t cap = head_cap(r, ctype, NULL);
    if (cap > sizeof stack) head = xmalloc(cap);
    size_t hl = compose_head(r, head, status, ctype, FRAME_LENGTH, len, NULL);
    r->bytes_out = hl;
    c->state = CONN_STREAMING;
    conn_set_timeout(c, TO_IDLE);
    send_raw(c, head, hl);
    if (head != stack) free(head);
}

void http_stream_write(struct http_req *r, const void *data, size_t len)
{
    struct conn *c = r->conn;
    if (!c || !r->streaming || r->head_only || c->state != CONN_STREAMING || len == 0) return;
    r->bytes_out += len;
    if (c->tkind == TO_IDLE) conn_set_timeout(c, TO_IDLE);   /* progress: restart the send timeout */
    if (!r->stream_chunked) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        write_bufs(c, &b, 1, NULL, 0);
        return;
    }
    char hdr[24];
    int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", len);
    uv_buf_t b[3] = {uv_buf_init(hdr, (unsigned)hl), uv_buf_init((char *)data, (unsigned)len),
                     uv_buf_init((char *)"\r\n", 2)};
    write_bufs(c, b, 3, NULL, 0);
}


void http_chunk_start(struct buf *b)
{
    buf_append(b, "00000000\r\n", HTTP_CHUNK_HEAD);
}

struct rbuf *http_chunk_finish(struct buf *b)
{
    char hex[HTTP_CHUNK_HEAD + 1];
    snprintf(hex, sizeof hex, "%08zx\r\n", b->len - HTTP_CHUNK_HEAD);
    memcpy(b->data, hex, HTTP_CHUNK_HEAD);
    buf_append(b, "\r\n", 2);
    return rbuf_from_buf(b);
}

struct rbuf *http_chunk_new(const void *payload, size_t len)
{
    struct buf b;
    buf_init(&b);
    buf_reserve(&b, HTTP_CHUNK_HEAD + len + 2);
    http_chunk_start(&b);
    buf_append(&b, payload, len);
    return http_chunk_finish(&b);
}

void http_stream_write_chunk(struct http_req *r, struct rbuf *ch)
{
    struct conn *c = r->conn;
    size_t len = http_chunk_payload_len(ch);
    if (!c || !r->streaming || r->head_only || c->state != CONN_STREAMING || len == 0) return;
    r->bytes_out += len;
    if (c->tkind == TO_IDLE) conn_set_timeout(c, TO_IDLE);
    uv_buf_t b = r->stream_chunked ? uv_buf_init(ch->data, (unsigned)ch->len)
                                   : uv_buf_init(ch->data + HTTP_CHUNK_HEAD, (unsigned)len);
    write_bufs(c, &b, 1, ch, 0);
}

/* The bytes of a pre-framed chunk this stream sends: all of it when
 * chunked, the payload alone without chunking (HTTP/1.0). */
static uv_buf_t chunk_buf(const struct http_req *r, struct rbuf *ch)
{
    return r->stream_chunked ? uv_buf_init(ch->data, (unsigned)ch->len)
                             : uv_buf_init(ch->data + HTTP_CHUNK_HEAD, (unsigned)http_chunk_payload_len(ch));
}

#define TRY_IOV 256                  /* iovecs per sendmsg(2) */

size_t http_stream_try_chunks(struct http_req *r, struct rbuf *const *chs, size_t n, size_t *off)
{
    struct conn *c = r->conn;
    *off = 0;
    if (!c || !r->streaming || r->head_only || c->state != CONN_STREAMING) return n;
    uv_os_fd_t fd;
    if (c->tcp.write_queue_size || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) return 0;
    size_t i = 0, o = 0, sent = 0;
    while (i < n) {
        /* sendmsg, not writev: MSG_NOSIGNAL, and no VFS layer (see write_bufs) */
        struct iovec iov[TRY_IOV];
        size_t k = 0, want = 0;
        for (size_t j = i; j < n && k < TRY_IOV; j++, k++) {
            uv_buf_t b = chunk_buf(r, chs[j]);
            size_t skip = j == i ? o : 0;
            iov[k].iov_base = b.base + skip;
            iov[k].iov_len = b.len - skip;
            want += b.len - skip;
        }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = k};
        ssize_t w;
        do w = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (w < 0 && errno == EINTR);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            conn_close(c);
            return n;
        }
        /* step over what went out */
        size_t left = (size_t)w;
        sent += left;
        while (left) {
            size_t l = chunk_buf(r, chs[i]).len - o;
            if (left < l) {
                o += left;
                break;
            }
            left -= l;
            i++;
            o = 0;
        }
        if ((size_t)w < want) break;
    }
    r->bytes_out += sent;
    c->srv->stats.bytes_out += sent;
    if (sent && c->tkind == TO_IDLE) conn_set_timeout(c, TO_IDLE);   /* progress */
    *off = o;
    return i;
}

void http_stream_queue_chunks(struct http_req *r, struct rbuf *const *chs, size_t n, size_t off)
{
    struct conn *c = r->conn;
    if (!c || !r->streaming || r->head_only || c->state != CONN_STREAMING || n == 0) return;
    struct wreq *wr = xmalloc(sizeof *wr + n * sizeof wr->refs[0]);
    wr->c = c;
    wr->nrefs = n;
    uv_buf_t stack[64], *b = n <= ARRAY_SIZE(stack) ? stack : xmalloc(n * sizeof *b);
    for (size_t i = 0; i < n; i++) {
        wr->refs[i] = rbuf_ref(chs[i]);
        b[i] = chunk_buf(r, chs[i]);
    }
    assert(off < b[0].len);
    b[0].base += off;
    b[0].len -= off;
    size_t queued = 0;
    for (size_t i = 0; i < n; i++) queued += b[i].len;
    r->bytes_out += queued;
    c->srv->stats.bytes_out += queued;
    /* the send timeout runs while a write waits (on_write restarts it) */
    if (c->tkind == TO_NONE) conn_set_timeout(c, TO_IDLE);
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, b, (unsigned)n, on_write);
    if (b != stack) free(b);
    if (rc < 0) {
        for (size_t i = 0; i < n; i++) rbuf_unref(wr->refs[i]);
        free(wr);
        conn_close(c);
    }
}

size_t http_stream_queued(const struct http_req *r)
{
    return r->conn ? r->conn->tcp.write_queue_size : 0;
}

void http_stream_end(struct http_req *r)
{
    struct conn *c = r->conn;
    if (!r->streaming) return;
    r->streaming = false;
    if (c && c->state == CONN_STREAMING && r->stream_chunked) send_raw(c, "0\r\n\r\n", 5);
    if (c && c->state == CONN_STREAMING) c->state = CONN_HANDLING;
    req_finish(r);
}
