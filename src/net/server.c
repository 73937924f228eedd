/* server.c - listener, connection life cycle, timeouts and shutdown.
 *
 * The life of a connection, in the order of the functions below:
 *   on_connection  accept; over --max-connections: 503 and close
 *   on_read        bytes from the shared buffer go straight to llhttp
 *   conn_feed      parse; at the end of each message the parser pauses and
 *                  the request is dispatched (http.c); if its handler does
 *                  not answer at once, the rest of the input waits in
 *                  c->pending until conn_finish_request
 *   conn_finish_request  keep-alive: parse what is pending or read again
 *   conn_shutdown_linger close politely: shut writes, drain input briefly
 *   conn_close / on_close  free, detach the request from a job still running
 *
 * All of it runs on the loop thread.
 */
#include "net/server.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <malloc.h>
#include <time.h>
#include <unistd.h>

#include "net/http.h"
#include "net/http_parse.h"
#include "core/jobs.h"
#include "core/json.h"
#include "core/log.h"

#define READ_BUF_SIZE (64 * 1024)
#define PENDING_CAP (64 * 1024)        /* input kept while a request is handled */
#define WRITE_HIGH_WATER (1024 * 1024) /* stop parsing pipelined input above it */
#define LINGER_MS 2000

static void conn_feed(struct conn *c, const char *data, size_t len);
static void conn_resume_input(struct conn *c);
static void start_reading(struct conn *c);

/* ---- timeouts ---------------------------------------------------------- */

static void sweep_arm(struct server *srv);

/* Ends every connection whose deadline is at or before now. */
static void sweep(struct server *srv, uint64_t now)
{
    for (int k = TO_HEADER; k < TO_COUNT; k++) {
        struct tlist *tl = &srv->tl[k];
        while (!list_empty(&tl->head)) {
            struct conn *c = container_of(tl->head.next, struct conn, tlink);
            if (c->deadline > now) break;
            list_remove(&c->tlink);
            c->tkind = TO_NONE;
            switch (k) {
            case TO_HEADER:
                srv->stats.timeouts_header++;
                if (c->state == CONN_HEADERS)
                    http_reject(c, 408, "request_timeout", "request headers not received in time");
                else
                    conn_close(c);
                break;
            case TO_IDLE:
                srv->stats.timeouts_idle++;
                conn_close(c);
                break;
            case TO_BODY:
                srv->stats.timeouts_body++;
                if (c->state == CONN_BODY) {
                    char msg[96];
                    snprintf(msg, sizeof msg, "no request body bytes for %llu ms",
                             (unsigned long long)srv->cfg->body_timeout_ms);
                    http_reject(c, 408, "request_timeout", msg);
                } else {
                    conn_close(c);
                }
                break;
            default:
                conn_close(c);
            }
        }
    }
}

static void on_sweep(uv_timer_t *t)
{
    struct server *srv = container_of(t, struct server, sweep);
    srv->sweep_due = 0;
    sweep(srv, uv_now(srv->loop));
    sweep_arm(srv);
}

void server_expire_timeouts(struct server *srv)
{
    sweep(srv, UINT64_MAX);
    sweep_arm(srv);
}

static void sweep_arm(struct server *srv)
{
    uint64_t next = UINT64_MAX;
    for (int k = TO_HEADER; k < TO_COUNT; k++) {
        struct tlist *tl = &srv->tl[k];
        if (!list_empty(&tl->head)) {
            struct conn *c = container_of(tl->head.next, struct conn, tlink);
            if (c->deadline < next) next = c->deadline;
        }
    }
    if (next == UINT64_MAX) {
        uv_timer_stop(&srv->sweep);
        srv->sweep_due = 0;
        return;
    }
    if (srv->sweep_due && srv->sweep_due <= next) return;
    uint64_t now = uv_now(srv->loop);
    uv_timer_start(&srv->sweep, on_sweep, next > now ? next - now : 0, 0);
    srv->sweep_due = next;
}

void conn_set_timeout(struct conn *c, enum timeout_kind kind)
{
    if (c->tkind != TO_NONE) list_remove(&c->tlink);
    c->tkind = (uint8_t)kind;
    if (kind == TO_NONE) return;
    struct tlist *tl = &c->srv->tl[kind];
    bool was_empty = list_empty(&tl->head);
    c->deadline = uv_now(c->srv->loop) + tl->timeout_ms;
    list_insert_tail(&tl->head, &c->tlink);
    if (was_empty) sweep_arm(c->srv);
}

/* ---- loop stalls -------------------------------------------------------- */

/* Runs just before each poll. The time since the previous one, minus the
 * time the loop spent blocked in poll (libuv's idle time, main.c turns it
 * on), is how long that iteration kept the loop busy: the longest a new
 * request could have waited to be read. */
static void on_prepare(uv_prepare_t *p)
{
    struct server *srv = container_of(p, struct server, stall_prep);
    uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(srv->loop);
    if (srv->stall_t) {
        uint64_t span = now - srv->stall_t, waited = idle - srv->stall_idle;
        uint64_t busy = span > waited ? span - waited : 0;
        if (busy > srv->stats.loop_max_stall_ns) srv->stats.loop_max_stall_ns = busy;
        if (busy >= LOOP_STALL_NS) srv->stats.loop_stalls++;
    }
    srv->stall_t = now;
    srv->stall_idle = idle;
}

/* ---- giving memory back --------------------------------------------------- */

/* Thousands of connections (SSE subscribers) closing at once free many
 * small blocks of the same sizes; glibc keeps the pages they sat on unless
 * the free space is at the top of the heap. Once TRIM_AFTER_CLOSES
 * connections have closed, malloc_trim runs on the pool TRIM_DELAY_MS
 * later (when the wave is over), so RSS falls back. */
#define TRIM_AFTER_CLOSES 1024
#define TRIM_DELAY_MS 1000

struct trim_job {
    struct job job;
    uint64_t closed;
    long rss_before, rss_after;      /* KiB, -1 if unknown */
    uint64_t ns;
};

static long rss_kib(void)
{
    long pages = -1, size, rss;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &rss) == 2) pages = rss;
    fclose(f);
    return pages < 0 ? -1 : pages * (sysconf(_SC_PAGESIZE) / 1024);
}

static void trim_work(struct job *j)
{
    struct trim_job *tj = container_of(j, struct trim_job, job);
    tj->rss_before = rss_kib();
    uint64_t t0 = uv_hrtime();
    malloc_trim(0);
    tj->ns = uv_hrtime() - t0;
    tj->rss_after = rss_kib();
}

static void trim_done(struct job *j, struct http_req *r)
{
    struct trim_job *tj = container_of(j, struct trim_job, job);
    UNUSED(r);
    log_info("memory_trimmed", "\"closed_connections\":%llu,\"rss_before_kib\":%ld,\"rss_after_kib\":%ld,\"ms\":%.1f",
             (unsigned long long)tj->closed, tj->rss_before, tj->rss_after, (double)tj->ns / 1e6);
    free(tj);
}

static void on_trim_timer(uv_timer_t *t)
{
    struct server *srv = container_of(t, struct server, trim_timer);
    struct trim_job *tj = xcalloc(1, sizeof *tj);
    tj->closed = srv->closed_since_trim;
    srv->closed_since_trim = 0;
    job_submit(&srv->jobs, &tj->job, NULL, trim_work, trim_done);
}

/* ---- closing ----------------------------------------------------------- */

static void maybe_finish_shutdown(struct server *srv);

static void on_close(uv_handle_t *h)
{
    struct conn *c = container_of((uv_tcp_t *)h, struct conn, tcp);
    struct server *srv = c->srv;
    struct http_req *r = c->req;
    c->req = NULL;
    if (r) {
        r->conn = NULL;
        if (r->on_abort) r->on_abort(r);
        http_req_unref(r);
    }
    free(c->pending);
    list_remove(&c->link);
    free(c);
    if (++srv->closed_since_trim == TRIM_AFTER_CLOSES && !srv->shutting_down)
        uv_timer_start(&srv->trim_timer, on_trim_timer, TRIM_DELAY_MS, 0);
    maybe_finish_shutdown(srv);
}

void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSING) return;
    c->state = CONN_CLOSING;
    conn_set_timeout(c, TO_NONE);
    if (c->srv->stats.open_conns) c->srv->stats.open_conns--;
    if (c->tcp.write_queue_size > 0) {
        /* output is being given up on: reset, so the kernel drops what it
         * holds too, instead of keeping the socket (and its send buffer)
         * after close to deliver to a peer that is not reading */
        uv_os_fd_t fd;
        struct linger l = {1, 0};
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_shutdown_done(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    free(req);
    if (c->state == CONN_CLOSING) return;
    if (status < 0 || c->eof) conn_close(c);
    else conn_set_timeout(c, TO_LINGER);   /* wait for EOF or the linger timeout, discarding input */
}

void conn_shutdown_linger(struct conn *c)
{
    if (c->state == CONN_CLOSING || c->state == CONN_LINGER) return;
    c->state = CONN_LINGER;
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    /* output still queued (a slow reader, an SSE overflow event) gets the
     * idle timeout to drain; the 2 s linger starts once it has */
    conn_set_timeout(c, c->tcp.write_queue_size > 0 ? TO_IDLE : TO_LINGER);
    uv_shutdown_t *sr = xmalloc(sizeof *sr);
    sr->data = c;
    if (uv_shutdown(sr, (uv_stream_t *)&c->tcp, on_shutdown_done) < 0) {
        free(sr);
        conn_close(c);
        return;
    }
    /* drain what the client still sends (it is discarded), even if a
     * streamed upload had paused reading and this runs inside conn_feed */
    start_reading(c);
}

/* ---- reading ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *c = container_of((uv_tcp_t *)h, struct conn, tcp);
    UNUSED(suggested);
    b->base = c->srv->read_buf;
    b->len = READ_BUF_SIZE;
}

static void stop_reading(struct conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static void start_reading(struct conn *c)
{
    if (!c->reading && !c->eof && c->state != CONN_CLOSING) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
        else conn_close(c);
    }
}

void conn_read_resume(struct conn *c)
{
    /* a header deadline runs from the first byte and is never extended */
    if (c->state == CONN_BODY) conn_set_timeout(c, TO_BODY);
    else if (c->state == CONN_IDLE) conn_set_timeout(c, TO_IDLE);
    start_reading(c);
}

/* Keeps input that cannot be parsed yet. Reading pauses at the cap. */
static void stash(struct conn *c, const char *data, size_t len)
{
    if (len == 0) return;
    size_t have = c->pending_len - c->pending_off;
    char *p = xmalloc(have + len);
    if (have) memcpy(p, c->pending + c->pending_off, have);
    memcpy(p + have, data, len);
    free(c->pending);
    c->pending = p;
    c->pending_off = 0;
    c->pending_len = (uint32_t)(have + len);
    if (c->pending_len >= PENDING_CAP) stop_reading(c);
}

/* The client has sent all it ever will. Responses still queued (a slow
 * reader, pipelined requests answered before it half-closed) are
 * delivered first: closing now would cancel them, cutting a response off
 * mid-body. */
static void conn_end_after_output(struct conn *c)
{
    if (c->tcp.write_queue_size == 0) conn_close(c);
    else conn_shutdown_linger(c);    /* its shutdown callback closes (eof is set) */
}

static void conn_on_eof(struct conn *c)
{
    c->eof = 1;
    stop_reading(c);
    switch (c->state) {
    case CONN_IDLE:
        if (c->pending_len == c->pending_off) conn_end_after_output(c);
        break;
    case CONN_HEADERS:
    case CONN_BODY:
        conn_end_after_output(c);    /* half a request and no more to come */
        break;
    case CONN_STREAMING:
        if (c->req && c->req->on_abort) conn_close(c);   /* SSE: the client left */
        break;
    case CONN_LINGER:
        if (c->tcp.write_queue_size == 0) conn_close(c);  /* else the shutdown's callback does */
        break;
    default:
        break;                       /* answer what was asked, then close */
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = container_of((uv_tcp_t *)s, struct conn, tcp);
    if (nread == 0) return;
    if (nread < 0) {
        if (nread == UV_EOF) conn_on_eof(c);
        else conn_close(c);
        return;
    }
    switch (c->state) {
    case CONN_LINGER:
        conn_set_timeout(c, TO_LINGER);
        return;
    case CONN_HANDLING:
    case CONN_STREAMING:
        stash(c, b->base, (size_t)nread);
        return;
    case CONN_CLOSING:
        return;
    default:
        if (c->pending_len > c->pending_off) {
            stash(c, b->base, (size_t)nread);
            conn_resume_input(c);
        } else {
            conn_feed(c, b->base, (size_t)nread);
        }
    }
}

/* Parses data; dispatches each complete request; keeps what is left over
 * when a handler answers asynchronously. Never re-entered. */
static void conn_feed(struct conn *c, const char *data, size_t len)
{
    c->in_process = 1;
    while (len > 0) {
        if (c->state != CONN_IDLE && c->state != CONN_HEADERS && c->state != CONN_BODY) break;
        if (c->wait_drain) break;
        llhttp_errno_t err = http_parse(c, data, len);
        if (err == HPE_OK) {
            len = 0;
            break;
        }
        if (err == HPE_PAUSED) {
            size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
            data += used;
            len -= used;
            llhttp_resume(&c->parser);
            http_dispatch(c->req);
            continue;
        }
        /* parse error, or a limit a callback enforced; or a request
         * answered before its end, whose connection lingers: its remaining
         * bytes are not parsed (http.c, on_answered) */
        if (c->state == CONN_LINGER || c->state == CONN_CLOSING) {
            len = 0;
            break;
        }
        c->srv->stats.parse_errors++;
        struct http_req *r = c->req;
        if (r && r->early_status &&
            (err == HPE_USER || err == HPE_CB_HEADERS_COMPLETE || err == HPE_CB_HEADER_FIELD_COMPLETE))
            http_reject(c, r->early_status, r->early_code, r->early_msg);
        else {
            char msg[160];
            const char *reason = llhttp_get_error_reason(&c->parser);
            snprintf(msg, sizeof msg, "malformed HTTP request: %s (%s)", reason ? reason : "parse error",
                     llhttp_errno_name(err));
            http_reject(c, 400, "bad_request", msg);
        }
        len = 0;
        break;
    }
    if (len > 0 && c->state != CONN_CLOSING && c->state != CONN_LINGER) stash(c, data, len);
    c->in_process = 0;
}

/* Continues with input that waited while a request was handled. */
static void conn_resume_input(struct conn *c)
{
    if (c->in_process || c->state == CONN_CLOSING) return;
    if (c->state == CONN_LINGER) {
        start_reading(c);
        return;
    }
    if (c->tcp.write_queue_size > WRITE_HIGH_WATER) {
        c->wait_drain = 1;           /* http_on_write_drained resumes */
        stop_reading(c);
        return;
    }
    c->wait_drain = 0;
    if (c->pending_len > c->pending_off) {
        char *p = c->pending;
        size_t off = c->pending_off, len = c->pending_len;
        c->pending = NULL;
        c->pending_len = c->pending_off = 0;
        conn_feed(c, p + off, len - off);
        free(p);
    }
    if (c->state == CONN_CLOSING || c->state == CONN_LINGER) return;
    if (c->eof) {
        if (c->state == CONN_IDLE && c->pending_len == c->pending_off) conn_shutdown_linger(c);
        return;
    }
    if (c->pending_len < PENDING_CAP) start_reading(c);
}

void conn_finish_request(struct conn *c)
{
    struct server *srv = c->srv;
    c->req = NULL;
    c->nrequests++;
    srv->stats.requests++;
    if (c->state == CONN_CLOSING || c->state == CONN_LINGER) return;
    if (c->close_after || srv->shutting_down) {
        conn_shutdown_linger(c);
        return;
    }
    c->state = CONN_IDLE;
    conn_set_timeout(c, TO_IDLE);
    if (!c->in_process) conn_resume_input(c);
}

void http_on_write_drained(struct conn *c)
{
    if (c->wait_drain && c->tcp.write_queue_size <= WRITE_HIGH_WATER / 2) conn_resume_input(c);
}

/* ---- accepting ---------------------------------------------------------- */

static void peer_name(struct conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof ip);
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof ip);
            port = ntohs(a->sin6_port);
        }
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
}

/* What every new connection goes through once its socket is open: the
 * parser, the peer's name, the --max-connections check, the header timeout
 * and the first read. */
static void conn_begin(struct server *srv, struct conn *c)
{
    list_insert_tail(&srv->conns, &c->link);
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &http_parser_settings);
    c->parser.data = c;
    peer_name(c);
    srv->stats.accepted++;
    srv->stats.open_conns++;
    if (srv->stats.open_conns > srv->cfg->max_connections) {
        srv->stats.rejected++;
        http_reject(c, 503, "too_many_connections", "the server is at --max-connections; retry later");
        return;
    }
    conn_set_timeout(c, TO_HEADER);
    start_reading(c);
}

static void on_connection(uv_stream_t *l, int status)
{
    struct server *srv = container_of((uv_tcp_t *)l, struct server, listener);
    if (status < 0) {
        log_warn("accept_failed", "\"error\":\"%s\"", uv_strerror(status));
        return;
    }
    struct conn *c = xcalloc(1, sizeof *c);
    c->srv = srv;
    list_init(&c->tlink);
    uv_tcp_init(srv->loop, &c->tcp);
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        list_init(&c->link);
        c->state = CONN_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    conn_begin(srv, c);
}

struct conn *server_conn_open(struct server *srv, uv_os_sock_t fd)
{
    struct conn *c = xcalloc(1, sizeof *c);
    c->srv = srv;
    list_init(&c->tlink);
    uv_tcp_init(srv->loop, &c->tcp);
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        list_init(&c->link);
        c->state = CONN_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return NULL;
    }
    conn_begin(srv, c);
    return c;
}

/* ---- shutdown ---------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) { UNUSED(h); }

static void maybe_finish_shutdown(struct server *srv)
{
    if (!srv->shutting_down || !list_empty(&srv->conns)) return;
    if (!uv_is_closing((uv_handle_t *)&srv->shutdown_timer))
        uv_close((uv_handle_t *)&srv->shutdown_timer, on_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&srv->sweep)) uv_close((uv_handle_t *)&srv->sweep, on_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&srv->stall_prep)) uv_close((uv_handle_t *)&srv->stall_prep, on_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&srv->trim_timer)) uv_close((uv_handle_t *)&srv->trim_timer, on_handle_closed);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    struct server *srv = container_of(t, struct server, shutdown_timer);
    struct list *pos, *tmp;
    log_warn("shutdown_forced", "\"open_connections\":%llu", (unsigned long long)srv->stats.open_conns);
    list_foreach_safe(pos, tmp, &srv->conns) conn_close(container_of(pos, struct conn, link));
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *srv = h->data;
    log_info("signal", "\"signal\":\"%s\"", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    server_shutdown(srv);
}

void server_add_shutdown_hook(struct server *srv, server_hook fn, void *arg)
{
    if (srv->n_on_shutdown == (int)ARRAY_SIZE(srv->on_shutdown)) abort();
    srv->on_shutdown[srv->n_on_shutdown].fn = fn;
    srv->on_shutdown[srv->n_on_shutdown].arg = arg;
    srv->n_on_shutdown++;
}

void server_shutdown(struct server *srv)
{
    if (srv->shutting_down) return;
    srv->shutting_down = true;
    atomic_store(&srv->jobs.stopping, true);
    log_info("shutdown_started", "\"open_connections\":%llu,\"timeout_ms\":%llu",
             (unsigned long long)srv->stats.open_conns, (unsigned long long)srv->cfg->shutdown_timeout_ms);
    if (srv->listener_open) {
        uv_close((uv_handle_t *)&srv->listener, on_handle_closed);
        srv->listener_open = false;
    }
    uv_close((uv_handle_t *)&srv->sigterm, on_handle_closed);
    uv_close((uv_handle_t *)&srv->sigint, on_handle_closed);
    for (int i = 0; i < srv->n_on_shutdown; i++) srv->on_shutdown[i].fn(srv, srv->on_shutdown[i].arg);
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &srv->conns) {
        struct conn *c = container_of(pos, struct conn, link);
        switch (c->state) {
        case CONN_IDLE:
        case CONN_HEADERS:
            conn_close(c);
            break;
        case CONN_LINGER:
        case CONN_CLOSING:
            break;
        default:
            c->close_after = 1;      /* finish the request, then close */
        }
    }
    uv_timer_start(&srv->shutdown_timer, on_shutdown_timeout, srv->cfg->shutdown_timeout_ms, 0);
    maybe_finish_shutdown(srv);
}

/* ---- start ------------------------------------------------------------- */

const char *server_date(struct server *srv)
{
    time_t now = time(NULL);
    if ((uint64_t)now != srv->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(srv->date, sizeof srv->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        srv->date_sec = (uint64_t)now;
    }
    return srv->date;
}

void server_request_id(struct server *srv, char out[17])
{
    static const char hx[] = "0123456789abcdef";
    uint64_t v = ((uint64_t)srv->rid_prefix << 32) | (uint32_t)(++srv->rid_counter);
    for (int i = 15; i >= 0; i--) {
        out[i] = hx[v & 15];
        v >>= 4;
    }
    out[16] = '\0';
}

void server_init(struct server *srv, uv_loop_t *loop, const struct config *cfg)
{
    srv->loop = loop;
    srv->cfg = cfg;
    list_init(&srv->conns);
    for (int k = 0; k < TO_COUNT; k++) list_init(&srv->tl[k].head);
    srv->tl[TO_HEADER].timeout_ms = cfg->header_timeout_ms;
    srv->tl[TO_IDLE].timeout_ms = cfg->idle_timeout_ms;
    srv->tl[TO_BODY].timeout_ms = cfg->body_timeout_ms;
    srv->tl[TO_LINGER].timeout_ms = LINGER_MS;
    srv->read_buf = xmalloc(READ_BUF_SIZE);
    random_bytes(&srv->rid_prefix, sizeof srv->rid_prefix);
    srv->started_ms = now_ms_wall();
    /* main.c starts the pool before the engines load (they read at
     * startup); a test that only drives connections gets it here */
    if (!srv->jobs.loop) job_pool_init(&srv->jobs, loop, &http_job_hooks);
    uv_timer_init(loop, &srv->sweep);
    uv_timer_init(loop, &srv->shutdown_timer);
    uv_prepare_init(loop, &srv->stall_prep);
    uv_prepare_start(&srv->stall_prep, on_prepare);
    uv_unref((uv_handle_t *)&srv->stall_prep);     /* it never keeps the loop alive */
    uv_timer_init(loop, &srv->trim_timer);
    uv_unref((uv_handle_t *)&srv->trim_timer);
}

int server_start(struct server *srv, uv_loop_t *loop, const struct config *cfg)
{
    int rc;
    assert(srv->hooks && srv->router.n > 0);      /* main.c fills both first */
    server_init(srv, loop, cfg);
    uv_signal_init(loop, &srv->sigterm);
    uv_signal_init(loop, &srv->sigint);
    srv->sigterm.data = srv->sigint.data = srv;
    uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    uv_signal_start(&srv->sigint, on_signal, SIGINT);

    struct sockaddr_storage addr;
    if (strchr(cfg->listen_host, ':'))
        rc = uv_ip6_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in6 *)&addr);
    else
        rc = uv_ip4_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in *)&addr);
    if (rc < 0) {
        log_error("listen_failed", "\"error\":\"invalid address\",\"host\":\"%s\"", cfg->listen_host);
        return rc;
    }
    uv_tcp_init(loop, &srv->listener);
    srv->listener_open = true;
    if ((rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&addr, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&srv->listener, 4096, on_connection)) < 0) {
        log_error("listen_failed", "\"error\":\"%s\",\"host\":\"%s\",\"port\":%d", uv_strerror(rc),
                  cfg->listen_host, cfg->listen_port);
        return rc;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen);
    if (bound.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&bound, srv->bound_addr, sizeof srv->bound_addr);
        srv->bound_port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    } else {
        uv_ip4_name((struct sockaddr_in *)&bound, srv->bound_addr, sizeof srv->bound_addr);
        srv->bound_port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    }
    /* where to point a browser and a client: the dashboard and the API base
     * (the root itself answers 404); for a wildcard address, this machine's
     * loopback one */
    bool v6 = bound.ss_family == AF_INET6;
    const char *host = !strcmp(srv->bound_addr, "0.0.0.0") ? "127.0.0.1"
                       : !strcmp(srv->bound_addr, "::")     ? "::1"
                                                            : srv->bound_addr;
    char origin[96];
    snprintf(origin, sizeof origin, "http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", srv->bound_port);
    log_info("listening", "\"address\":\"%s\",\"port\":%d,\"ui\":\"%s/ui/\",\"api\":\"%s/api/v1\"",
             srv->bound_addr, srv->bound_port, origin, origin);
    log_flush();
    return 0;
}

void server_free(struct server *srv)
{
    router_free(&srv->router);
    free(srv->read_buf);
    srv->read_buf = NULL;
}
