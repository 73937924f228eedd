/* fuzz_http.c - the HTTP request path, from socket bytes to response bytes.
 *
 * Each input is one client connection. The server is the real one, set up
 * by server_init() on a libuv loop made once per process; the connection
 * is one end of a socketpair handed to server_conn_open(), so everything
 * after accept() is the code a TCP client meets: on_read with the shared
 * buffer, llhttp (strict build) and the RFC 9112 checks of http_parse.c, body
 * framing and limits, pipelining (parser paused per message, input stashed
 * while a handler works, reading paused at the caps), keep-alive decisions,
 * early refusals, the router with the real route table, and the response
 * writer (send(2), uv_try_write, queued writes, streams, gzip on the pool).
 *
 * The routes are routes.c's table. Handlers that answer without the
 * database keep their real code (healthz, the dashboard, the space list,
 * and every GET under /spaces/{space}, which answers 404 space_not_found:
 * the registry is empty); the others answer through the handlers below,
 * which exercise the writer's shapes: at once, later (the harness answers
 * them between reads, as a job's completion would), streamed (chunked or
 * with a length), errors, 204/304, and large JSON (gzip). Every route is
 * public: auth needs the key store (not here). PUT /fz/upload/{entity}
 * streams its body (ROUTE_STREAM_BODY) and pauses reading at will.
 *
 * Input: 12 control bytes, then the bytes the client sends.
 *   [0]     flags: 1 half-close after the last piece, 2 answer deferred
 *           requests and resume paused bodies after each piece (else only
 *           at the end), 4 the peer is a trusted proxy (X-Forwarded-For),
 *           8 time passes after each piece (server_expire_timeouts),
 *           16 the client reads nothing until it has sent everything (the
 *           server's output queues up: the write high-water mark)
 *   [1..3]  3 bits per request, in order: how the handler answers
 *   [4..11] four 16-bit offsets: where the input is cut into reads
 * Each piece is written to the client end and the loop run until the
 * server has read it (if it is reading), the output drained as it comes.
 *
 * Checks, besides sanitizers and leaks: the output is a sequence of
 * well-formed HTTP/1.1 responses (status line with the right reason,
 * header syntax, Date, Server, X-Request-Id, one framing, bodies exactly as
 * framed); as many final responses as the server finished requests (plus
 * streams an idle timeout ended mid-body; fewer when time passed while the
 * client read nothing and the send timeout dropped queued output: only
 * then may a response be cut off);
 * nothing after a response that says Connection: close; a lingering
 * connection reads (and discards) what still comes; an answered request no
 * longer leads to its connection; and the connection is gone once its
 * timeouts have passed (the harness lets time pass at the end of every
 * input, before the client leaves). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/api.h"
#include "api/metrics.h"
#include "api/util.h"
#include "core/cli.h"
#include "net/http.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "net/server.h"
#include "store/spaces.h"
#include "svc/auth.h"
#include "api/ui.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CTL_LEN 12
#define MAX_DEFER 64

static uv_loop_t loop;
static struct server srv;
static struct config cfg;
static bool ready;
static bool verbose;                 /* FUZZ_HTTP_VERBOSE=1: print each output */

/* per input */
static uint8_t ctl[CTL_LEN];
static unsigned nhandled;
static struct buf out;
static bool out_eof;
static int cfd = -1;
static struct { struct http_req *r; int act; } deferred[MAX_DEFER];
static int ndeferred;
static struct http_req *paused[MAX_DEFER];
static int npaused;
static unsigned cut_streams;         /* streams whose connection a timeout ended mid-body */
static bool send_cut;                /* a send timeout ended the connection with output queued */

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_http: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    if (out.len) fprintf(stderr, "output (%zu bytes):\n%.*s\n", out.len, (int)MIN(out.len, 4000), out.data);
    abort();
}

static unsigned next_mode(void)
{
    unsigned bits = (unsigned)ctl[1] | (unsigned)ctl[2] << 8 | (unsigned)ctl[3] << 16;
    unsigned m = (bits >> (3 * (nhandled % 8))) & 7;
    nhandled++;
    return m;
}

/* ---- handlers ----------------------------------------------------------- */

enum { ACT_ECHO, ACT_STREAM_REST };

/* What the handler saw, as JSON: method, route, params, paging, body size. */
static void echo_json(struct http_req *r, struct buf *b, size_t pad)
{
    buf_puts(b, "{\"method\":");
    json_cstr(b, llhttp_method_name((llhttp_method_t)r->method));
    json_kv_str(b, "route", r->route ? r->route->name : "?");
    json_kv_strn(b, "path", r->path, r->path_len);
    json_kv_str(b, "space", r->match.params.space);
    json_kv_str(b, "entity", r->match.params.entity);
    char v[64];
    long l = http_query(r, "q", v, sizeof v);
    if (l >= 0) json_kv_strn(b, "q", v, (size_t)l);
    json_kv_u64(b, "body_len", r->body.len);
    json_kv_str(b, "client", r->client_ip);
    if (pad) {
        buf_puts(b, ",\"pad\":\"");
        for (size_t i = 0; i < pad; i++) buf_putc(b, (char)('a' + i % 26));
        buf_putc(b, '"');
    }
    buf_putc(b, '}');
}

static void answer_echo(struct http_req *r, int status, size_t pad)
{
    struct buf b;
    buf_init(&b);
    echo_json(r, &b, pad);
    http_send_json(r, status, &b);
}

static void defer(struct http_req *r, int act)
{
    if (ndeferred == MAX_DEFER) {
        if (act == ACT_STREAM_REST) http_stream_end(r);
        else answer_echo(r, 200, 0);
        return;
    }
    http_req_ref(r);
    deferred[ndeferred].r = r;
    deferred[ndeferred].act = act;
    ndeferred++;
}

static void stream_rest(struct http_req *r)
{
    struct buf b;
    buf_init(&b);
    echo_json(r, &b, 0);
    buf_putc(&b, '\n');
    http_stream_write(r, b.data, b.len);
    http_stream_write(r, "{\"end\":true}\n", 13);
    buf_free(&b);
    http_stream_end(r);
}

/* Stands in for every handler that needs the database. */
static void fz_handler(struct http_req *r)
{
    struct list_page pg;
    switch (next_mode()) {
    case 0:                          /* at once, through the list parser */
        if (api_paging(r, LIST_CURSOR_ENTITY, &pg) < 0) return;
        answer_echo(r, r->method == HTTP_POST ? 201 : 200, 0);
        break;
    case 1:                          /* later, as a job would */
        defer(r, ACT_ECHO);
        break;
    case 2:                          /* streamed, chunked, at once */
        http_stream_begin(r, 200, "application/x-ndjson", true);
        stream_rest(r);
        break;
    case 3:                          /* streamed: the head now, the rest later */
        http_stream_begin(r, 200, "application/x-ndjson", true);
        defer(r, ACT_STREAM_REST);
        break;
    case 4:
        http_add_header(r, "Retry-After", "%d", 3);
        http_send_error(r, 409, "conflict", "\"current_rev\":\"1-abc\"", "fuzz says %s", "no");
        break;
    case 5:
        http_add_header(r, "ETag", "\"1-abc\"");
        http_send_empty(r, nhandled & 1 ? 204 : 304);
        break;
    case 6: {                        /* streamed with a length */
        struct buf b;
        buf_init(&b);
        echo_json(r, &b, 100);
        http_stream_begin_length(r, 200, "application/json", b.len);
        http_stream_write(r, b.data, b.len / 2);
        http_stream_write(r, b.data + b.len / 2, b.len - b.len / 2);
        buf_free(&b);
        http_stream_end(r);
        break;
    }
    default:                         /* large: gzip on the pool when accepted */
        answer_echo(r, 200, 3000);
        break;
    }
}

/* PUT /fz/upload/{entity}: takes the body as it arrives (ROUTE_STREAM_BODY) */
struct upload {
    unsigned mode;
    uint64_t bytes;
};

/* the upload's mode: bits of next_mode() */
#define UP_PAUSE 1                   /* pause reading after each piece until the harness resumes it */
#define UP_REFUSE 2                  /* answer 422 at the first '!' in the body, mid-body */
#define UP_EARLY 4                   /* answer 409 at the headers, before any body */

static int upload_body(struct http_req *r, const char *data, size_t len)
{
    struct upload *u = r->ctx;
    u->bytes += len;
    if ((u->mode & UP_REFUSE) && memchr(data, '!', len)) {
        http_send_error(r, 422, "bad_upload", NULL, "a '!' in the body after %llu bytes", (unsigned long long)u->bytes);
        return 0;
    }
    if ((u->mode & UP_PAUSE) && npaused < MAX_DEFER) {
        http_req_ref(r);
        paused[npaused++] = r;
        return 1;
    }
    return 0;
}

static void upload_end(struct http_req *r)
{
    struct upload *u = r->ctx;
    if (u->mode & UP_PAUSE) {        /* answered later, as after a job */
        defer(r, ACT_ECHO);
        return;
    }
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "{\"bytes\":%llu}", (unsigned long long)u->bytes);
    http_send_json(r, 201, &b);
}

static void fz_upload(struct http_req *r)
{
    struct upload *u = xcalloc(1, sizeof *u);
    u->mode = next_mode();
    r->ctx = u;
    r->ctx_free = free;
    if (u->mode & UP_EARLY) {
        http_send_error(r, 409, "exists", NULL, "already there");
        return;
    }
    r->on_body = upload_body;
    r->on_body_end = upload_end;
}

/* Answers what waits; resumes paused bodies. Either may dispatch pipelined
 * requests that wait again: repeat until nothing is left. */
static void settle(void)
{
    for (int round = 0; round < 1000 && (ndeferred || npaused); round++) {
        int nd = ndeferred, np = npaused;
        struct { struct http_req *r; int act; } d[MAX_DEFER];
        struct http_req *p[MAX_DEFER];
        memcpy(d, deferred, sizeof d[0] * (size_t)nd);
        memcpy(p, paused, sizeof p[0] * (size_t)np);
        ndeferred = npaused = 0;
        for (int i = 0; i < np; i++) {
            /* an answered request must not lead back to its connection
             * (it may be gone, or on its next request) */
            if (p[i]->responded && !p[i]->streaming && p[i]->conn) fail("an answered request still holds its connection", NULL);
            if (p[i]->conn) http_body_resume(p[i]);
            http_req_unref(p[i]);
        }
        for (int i = 0; i < nd; i++) {
            struct http_req *r = d[i].r;
            if (r->responded && !r->streaming && r->conn) fail("an answered request still holds its connection", NULL);
            if (r->conn) {
                if (d[i].act == ACT_STREAM_REST) stream_rest(r);
                else answer_echo(r, 200, 0);
            } else if (d[i].act == ACT_STREAM_REST) {
                cut_streams++;       /* its head went out; its end never will */
            }
            http_req_unref(r);
        }
    }
}

/* ---- the loop and the client end ---------------------------------------- */

static struct conn *the_conn(void)
{
    return list_empty(&srv.conns) ? NULL : container_of(srv.conns.next, struct conn, link);
}

static bool slow_reader;             /* the client reads nothing until the input is sent */

static bool drain_output(void)
{
    bool got = false;
    if (slow_reader) return false;
    char tmp[65536];
    while (cfd >= 0 && !out_eof) {
        ssize_t n = read(cfd, tmp, sizeof tmp);
        if (n > 0) {
            if (out.len + (size_t)n > (64u << 20)) fail("more than 64 MiB of output", NULL);
            buf_append(&out, tmp, (size_t)n);
            got = true;
        } else if (n == 0) {
            out_eof = true;
        } else {
            if (errno == EINTR) continue;
            break;
        }
    }
    return got;
}

/* Runs the loop until nothing moves: the server has read what it will
 * read, the pool is idle, the output is drained. */
static void pump(void)
{
    int idle = 0;
    for (int i = 0; i < 100000 && idle < 3; i++) {
        uv_run(&loop, srv.jobs.inflight ? UV_RUN_ONCE : UV_RUN_NOWAIT);
        bool moved = drain_output();
        struct conn *c = the_conn();
        int unread = 0;
        if (c && c->reading && c->state != CONN_CLOSING) {
            uv_os_fd_t fd;
            if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, FIONREAD, &unread) < 0) unread = 0;
        }
        if (moved || unread > 0 || srv.jobs.inflight) idle = 0;
        else idle++;
    }
    /* lingering is for draining what the client still sends, so that
     * closing does not reset the connection under the last response */
    struct conn *c = the_conn();
    if (c && c->state == CONN_LINGER && !c->reading && !c->eof) fail("a lingering connection that does not read", NULL);
}

/* Writes one piece to the client end. A server that stopped reading gets
 * what the socket holds; past that the rest of the input is dropped, as a
 * client would block there. */
static void send_piece(const uint8_t *p, size_t len)
{
    bool retried = false;
    while (len > 0) {
        ssize_t w = write(cfd, p, len);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            retried = false;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (retried || !the_conn()) return;
        pump();
        retried = true;
    }
}

/* Time passes. A connection whose output is still queued then (the
 * client reads nothing) meets its send timeout: what was queued is lost. */
static void let_time_pass(void)
{
    struct conn *c = the_conn();
    if (c && c->tcp.write_queue_size > 0) send_cut = true;
    server_expire_timeouts(&srv);
}

/* ---- checking the output ------------------------------------------------- */

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

struct resp {
    int status;
    bool close, chunked, has_len;
    uint64_t len;
    bool date, server, rid;
};

/* Parses the head at p (n bytes left). Returns its length, or fails. */
static size_t parse_head(const char *p, size_t n, struct resp *rs)
{
    memset(rs, 0, sizeof *rs);
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) fail("a response head without its end", NULL);
    size_t hl = (size_t)(end - p) + 4;
    if (hl < 13 || memcmp(p, "HTTP/1.1 ", 9) || p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' ||
        p[11] < '0' || p[11] > '9' || p[12] != ' ')
        fail("a malformed status line", NULL);
    rs->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    const char *eol = memmem(p, hl, "\r\n", 2);
    const char *reason = http_status_text(rs->status);
    if (!strcmp(reason, "Unknown") || (size_t)(eol - p - 13) != strlen(reason) || memcmp(p + 13, reason, strlen(reason)))
    {
        char line[64];
        snprintf(line, sizeof line, "%.*s", (int)MIN(eol - p, 60), p);
        fail("a status line with an unknown status or the wrong reason", line);
    }
    int nlen = 0, nte = 0;
    for (const char *l = eol + 2; l < end + 2;) {
        const char *le = memmem(l, (size_t)(end + 2 - l), "\r\n", 2);
        const char *colon = memchr(l, ':', (size_t)(le - l));
        if (!colon || colon == l) fail("a header line without a name", NULL);
        for (const char *q = l; q < colon; q++)
            if (!is_tchar((unsigned char)*q)) fail("a header name with a bad character", NULL);
        const char *v = colon + 1;
        if (v >= le || *v != ' ') fail("a header without ': '", NULL);
        for (const char *q = v; q < le; q++)
            if ((unsigned char)*q < 0x20 && *q != '\t') fail("a control character in a header value", NULL);
        v++;
        size_t nl = (size_t)(colon - l), vl = (size_t)(le - v);
        if (str_ieq(l, nl, "Content-Length")) {
            nlen++;
            uint64_t x;
            if (parse_u64(v, vl, UINT64_MAX, &x) < 0) fail("a bad Content-Length", NULL);
            rs->len = x;
            rs->has_len = true;
        } else if (str_ieq(l, nl, "Transfer-Encoding")) {
            nte++;
            if (!str_ieq(v, vl, "chunked")) fail("a Transfer-Encoding other than chunked", NULL);
            rs->chunked = true;
        } else if (str_ieq(l, nl, "Connection")) {
            if (str_ieq(v, vl, "close")) rs->close = true;
            else if (!str_ieq(v, vl, "keep-alive")) fail("a Connection header that is neither close nor keep-alive", NULL);
        } else if (str_ieq(l, nl, "Date")) {
            rs->date = true;
        } else if (str_ieq(l, nl, "Server")) {
            rs->server = true;
        } else if (str_ieq(l, nl, "X-Request-Id")) {
            if (!name_request_id_valid(v, vl)) fail("a malformed X-Request-Id", NULL);
            rs->rid = true;
        }
        l = le + 2;
    }
    if (rs->status == 100) {
        if (hl != 25) fail("a 100 Continue with headers", NULL);
        return hl;
    }
    if (!rs->date || !rs->server || !rs->rid) fail("a response without Date, Server or X-Request-Id", NULL);
    if (nlen > 1 || nte > 1 || (nlen && nte)) fail("a response framed twice", NULL);
    if ((rs->status == 204 || rs->status == 304) && (nlen || nte)) fail("a 204 or 304 with a body framing", NULL);
    return hl;
}

/* The length of the chunked body at p, or SIZE_MAX if the output ends
 * inside it (fails if it is malformed). */
static size_t chunked_len(const char *p, size_t n)
{
    size_t i = 0;
    for (;;) {
        uint64_t sz = 0;
        size_t d = 0;
        while (i + d < n && ((p[i + d] >= '0' && p[i + d] <= '9') || (p[i + d] >= 'a' && p[i + d] <= 'f'))) {
            int h = p[i + d] <= '9' ? p[i + d] - '0' : p[i + d] - 'a' + 10;
            if (sz >> 56) fail("a chunk size too large", NULL);
            sz = sz * 16 + (uint64_t)h;
            d++;
        }
        if (i + d + 2 > n) return SIZE_MAX;
        if (d == 0 || memcmp(p + i + d, "\r\n", 2)) fail("a malformed chunk head", NULL);
        i += d + 2;
        if (sz == 0) {
            if (i + 2 > n) return SIZE_MAX;
            if (memcmp(p + i, "\r\n", 2)) fail("a chunked body with trailers or junk after its last chunk", NULL);
            return i + 2;
        }
        if (i + sz + 2 > n) return SIZE_MAX;
        if (memcmp(p + i + sz, "\r\n", 2)) fail("a chunk longer than its size", NULL);
        i += sz + 2;
    }
}

static bool at_response(const char *p, size_t n) { return n >= 9 && !memcmp(p, "HTTP/1.1 ", 9); }

/* Returns the number of final responses. */
static uint64_t check_output(void)
{
    const char *p = out.data;
    size_t n = out.len;
    uint64_t finals = 0;
    bool closed = false;
    while (n > 0) {
        if (closed) fail("bytes after a response that said Connection: close", NULL);
        struct resp rs;
        size_t hl = parse_head(p, n, &rs);
        p += hl;
        n -= hl;
        if (rs.status == 100) continue;
        finals++;
        size_t bl = 0;
        if (rs.chunked) {
            bl = chunked_len(p, n);
            if (bl == SIZE_MAX) {
                /* only what a timeout ended may stop mid-body, at the end */
                if (!cut_streams && !send_cut) fail("a chunked body cut off", NULL);
                bl = n;
            }
        } else if (rs.has_len) {
            /* a HEAD answer has the length and no body: the next response
             * or the end follows at once (no body here starts like one) */
            if (rs.len && !(n == 0 || at_response(p, n))) {
                if (rs.len > n && !send_cut) fail("a body shorter than its Content-Length", NULL);
                bl = (size_t)MIN(rs.len, n);
            }
        } else if (rs.status != 204 && rs.status != 304 && !(n == 0 || at_response(p, n))) {
            /* (a streamed answer to HEAD has no framing and no body) */
            if (!rs.close) fail("a body framed by the end of the connection without Connection: close", NULL);
            bl = n;                  /* an HTTP/1.0 stream: to the end */
        }
        p += bl;
        n -= bl;
        closed = rs.close;
    }
    return finals;
}

/* ---- the run ------------------------------------------------------------- */

/* main.c's hooks: every route here is public, so the access hook answers
 * OK without the key store */
static const struct http_hooks fz_hooks = {
    .access = auth_check_request,
    .access_resolve = auth_resolve_unknown,
    .denied = auth_audit_denied,
    .done = api_metrics_request_done,
};

static void setup(void)
{
    char *argv[] = {"--max-header-bytes", "4096", "--max-body-bytes", "2048", "--max-blob-bytes", "8192",
                    "--cors-origins", "http://app.example,https://b.example", "--trusted-proxies",
                    "127.0.0.0/8,::1", "--log-level", "error", "--max-connections", "4"};
    cfg_defaults(&cfg);
    if (cfg_parse_serve(&cfg, (int)ARRAY_SIZE(argv), argv) != 0) abort();
    log_set_level(LOG_ERROR);
    cfg.access_log = true;           /* the access line is built (redaction), not printed */
    if (uv_loop_init(&loop) != 0) abort();
    server_init(&srv, &loop, &cfg);
    srv.spaces = spaces_new();
    api_routes_init(&srv.router);
    srv.hooks = &fz_hooks;
    for (size_t i = 0; i < srv.router.n; i++) {
        struct route *rt = &srv.router.routes[i];
        bool keep = rt->handler == api_healthz || rt->handler == api_ui || rt->handler == api_ui_redirect ||
                    rt->handler == api_spaces_list ||
                    (!strncmp(rt->pattern, "/api/v1/spaces/{space}/", 23) &&
                     (rt->method == HTTP_GET || (rt->flags & ROUTE_STREAM_BODY)));
        if (!keep) rt->handler = fz_handler;
        rt->access = ACCESS_PUBLIC;
    }
    struct route up = {.method = HTTP_PUT, .pattern = "/fz/upload/{entity}", .handler = fz_upload,
                       .access = ACCESS_PUBLIC, .flags = ROUTE_STREAM_BODY, .name = "fz_upload"};
    router_add(&srv.router, &up);
    verbose = getenv("FUZZ_HTTP_VERBOSE") != NULL;
    ready = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready) setup();
    memset(ctl, 0, sizeof ctl);
    if (size >= CTL_LEN) {
        memcpy(ctl, data, CTL_LEN);
        data += CTL_LEN;
        size -= CTL_LEN;
    }
    nhandled = 0;
    cut_streams = 0;
    send_cut = false;
    slow_reader = (ctl[0] & 16) != 0;
    buf_reset(&out);
    out_eof = false;
    uint64_t requests0 = srv.stats.requests;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) abort();
    cfd = sv[1];
    fcntl(cfd, F_SETFL, fcntl(cfd, F_GETFL) | O_NONBLOCK);
    struct conn *c = server_conn_open(&srv, sv[0]);
    if (!c) abort();
    snprintf(c->peer, sizeof c->peer, "%s", ctl[0] & 4 ? "127.0.0.1:50000" : "192.0.2.7:50000");

    /* the reads: cut at up to four points */
    size_t cuts[6] = {0};
    int nc = 1;
    for (int i = 0; i < 4; i++) {
        size_t at = size ? ((size_t)ctl[4 + 2 * i] | (size_t)ctl[5 + 2 * i] << 8) % (size + 1) : 0;
        cuts[nc++] = at;
    }
    cuts[nc++] = size;
    for (int i = 1; i < nc; i++)             /* sort */
        for (int j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
            size_t t = cuts[j];
            cuts[j] = cuts[j - 1];
            cuts[j - 1] = t;
        }
    pump();
    for (int i = 0; i + 1 < nc; i++) {
        if (cuts[i + 1] == cuts[i]) continue;
        if (!the_conn()) break;
        send_piece(data + cuts[i], cuts[i + 1] - cuts[i]);
        pump();
        if (ctl[0] & 8) {            /* time passes */
            let_time_pass();
            pump();
        }
        if (ctl[0] & 2) {
            settle();
            pump();
        }
    }
    if (ctl[0] & 1) {
        shutdown(cfd, SHUT_WR);
        pump();
    }
    slow_reader = false;
    pump();
    for (int i = 0; i < 100 && (ndeferred || npaused); i++) {
        settle();
        pump();
    }
    /* time passes: every timeout the connection is under expires (408 for
     * a request cut short, close for an idle or lingering connection) */
    for (int i = 0; i < 8 && the_conn(); i++) {
        let_time_pass();
        pump();
        settle();
        pump();
    }
    if (the_conn()) fail("the connection outlived every timeout", NULL);
    if (ndeferred || npaused) fail("requests left waiting", NULL);
    uint64_t finished = srv.stats.requests - requests0;
    close(cfd);
    cfd = -1;
    pump();
    if (srv.jobs.inflight) fail("jobs left running", NULL);

    if (verbose) fprintf(stderr, "---- %zu bytes in, %zu out%s:\n%.*s\n", size, out.len, out_eof ? ", then EOF" : "",
                         (int)MIN(out.len, 1500), out.data);
    uint64_t finals = check_output();
    /* with output lost to a send timeout, some finished requests have no
     * (whole) response: fewer, never more */
    if (send_cut ? finals > finished + cut_streams : finals != finished + cut_streams) {
        char d[128];
        snprintf(d, sizeof d, "%llu responses, %llu requests finished, %u streams cut off by a timeout",
                 (unsigned long long)finals, (unsigned long long)finished, cut_streams);
        fail("responses and finished requests differ", d);
    }
    return 0;
}
