/* bench/sse/sseclient.c - one client process of bench/sse, in C.
 *
 * The same job as clients.mjs (which it replaces by default, CLIENT=c), at a
 * fraction of the CPU per event: with 10,000 subscribers on one core, the
 * Node.js client needs about as much CPU per event as the server under test,
 * so the latency it measures is partly its own. This one is a single-threaded
 * epoll loop with one shared read buffer; per event and connection it costs
 * one read() and a memmem().
 *
 * It holds many SSE connections to one server and talks to bench.mjs over
 * stdin/stdout, one command per line (fields separated by TAB), one JSON
 * message per line back:
 *   open HOST PORT LOCALADDR COUNT CONCURRENCY PATH [HEADER-LINE...]
 *       -> {"type":"ready","ok","failed","codes":{},"errors":{},"ms"}
 *   arm TRIAL MARKER  -> {"type":"armed","trial","expect"}; once every open
 *       connection saw MARKER: {"type":"trial-done","trial","got","missing":0}
 *   collect TRIAL     -> {"type":"arrivals","trial","us":[...],"missing"}
 *       (CLOCK_MONOTONIC microseconds -- process.hrtime's clock -- of the
 *       first read holding the marker, per connection that saw it)
 *   count TAG         -> {"type":"count","tag","total","open","closed",
 *       "overflow","minPerConn","maxPerConn","atUs"}
 *   close             -> closes every socket and exits
 * It says {"type":"hello","pid"} when it starts, and exits when stdin closes.
 *
 * Build: cc -O2 -o sseclient sseclient.c (bench/sse/run does it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TAIL 64                      /* bytes kept per connection for matches across reads */
#define MAX_CONNS 65536

struct conn {
    int fd;
    int status;                      /* HTTP status once the head is in; 0 before */
    int alive;
    int head_len;
    char *head;                      /* the response head until it is complete */
    uint64_t events, overflow;
    int64_t arrival_us;
    int trial;
    int tail_len;
    char tail[TAIL];
};

static struct conn *conns;
static int nconns;
static int ep;
static char rbuf[65536];
static int n_open, n_closed;

/* the open command in progress */
static struct {
    int active, started, settled, ok, failed, concurrency, count;
    struct sockaddr_in dst, src;
    char req[8192];
    int req_len;
    int codes[600];
    int err_refused, err_reset, err_timeout, err_other, err_closed;
    int64_t t0_ms;
} op;

/* the trial in progress */
static struct {
    int active, id, got, expect;
    char marker[256];
    int mlen;
} tr;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* Occurrences of pat in tail+data that end inside data. */
static uint64_t count_in(const struct conn *c, const char *d, size_t n, const char *pat, size_t pl)
{
    uint64_t k = 0;
    if (c->tail_len) {
        char edge[2 * TAIL];
        size_t el = (size_t)c->tail_len, take = n < pl - 1 ? n : pl - 1;
        memcpy(edge, c->tail, el);
        memcpy(edge + el, d, take);
        for (const char *p = edge; (p = memmem(p, el + take - (size_t)(p - edge), pat, pl)); p++)
            if ((size_t)(p - edge) + pl > el) k++;
    }
    for (const char *p = d; (p = memmem(p, n - (size_t)(p - d), pat, pl)); p += pl) k++;
    return k;
}

static int has_in(const struct conn *c, const char *d, size_t n, const char *pat, size_t pl)
{
    if (memmem(d, n, pat, pl)) return 1;
    if (!c->tail_len) return 0;
    char edge[2 * TAIL + 256];
    size_t el = (size_t)c->tail_len, take = n < pl ? n : pl;
    memcpy(edge, c->tail, el);
    memcpy(edge + el, d, take);
    return memmem(edge, el + take, pat, pl) != NULL;
}

static void keep_tail(struct conn *c, const char *d, size_t n)
{
    if (n >= TAIL) {
        memcpy(c->tail, d + n - TAIL, TAIL);
        c->tail_len = TAIL;
        return;
    }
    int keep = c->tail_len + (int)n > TAIL ? TAIL - (int)n : c->tail_len;
    memmove(c->tail, c->tail + c->tail_len - keep, (size_t)keep);
    memcpy(c->tail + keep, d, n);
    c->tail_len = keep + (int)n;
}

static void on_body(struct conn *c, const char *d, size_t n, int64_t t)
{
    static const char ev[] = "event: change", of[] = "event: overflow";
    c->events += count_in(c, d, n, ev, sizeof ev - 1);
    if (memmem(d, n, of, sizeof of - 1)) c->overflow++;
    if (tr.active && c->trial != tr.id && has_in(c, d, n, tr.marker, (size_t)tr.mlen)) {
        c->arrival_us = t;
        c->trial = tr.id;
        if (++tr.got >= tr.expect) {
            say("{\"type\":\"trial-done\",\"trial\":%d,\"got\":%d,\"missing\":0}", tr.id, tr.got);
            tr.active = 0;           /* arrivals stay recorded; collect reads them */
        }
    }
    keep_tail(c, d, n);
}

static void open_settle(int ok, struct conn *c, const char *why);

static void conn_gone(struct conn *c, const char *why)
{
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    if (c->alive && c->status == 200) {
        n_open--;
        n_closed++;
    }
    int was_pending = c->alive && c->status == 0;
    c->alive = 0;
    free(c->head);
    c->head = NULL;
    if (was_pending) open_settle(0, c, why);
}

static void on_readable(struct conn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, rbuf, sizeof rbuf);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            conn_gone(c, errno == ECONNRESET ? "ECONNRESET" : "error");
            return;
        }
        if (n == 0) {
            conn_gone(c, "closed");
            return;
        }
        int64_t t = now_us();
        const char *d = rbuf;
        size_t len = (size_t)n;
        if (c->status == 0) {
            c->head = realloc(c->head, (size_t)c->head_len + len + 1);
            memcpy(c->head + c->head_len, d, len);
            c->head_len += (int)len;
            c->head[c->head_len] = 0;
            char *e = memmem(c->head, (size_t)c->head_len, "\r\n\r\n", 4);
            if (!e) {
                if (c->head_len > 16384) conn_gone(c, "head too large");
                return;
            }
            c->status = c->head_len >= 12 ? atoi(c->head + 9) : 999;
            size_t hl = (size_t)(e + 4 - c->head);
            if (c->status != 200) {
                int st = c->status;
                c->status = 0;       /* still "pending" for conn_gone's accounting */
                if (st > 0 && st < 600) op.codes[st]++;
                c->alive = 1;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                c->alive = 0;
                free(c->head);
                c->head = NULL;
                c->status = st;
                open_settle(0, c, NULL);
                return;
            }
            n_open++;
            size_t rest = (size_t)c->head_len - hl;
            if (rest) on_body(c, c->head + hl, rest, t);
            free(c->head);
            c->head = NULL;
            open_settle(1, c, NULL);
        } else {
            on_body(c, d, len, t);
        }
        if ((size_t)n < sizeof rbuf) return;
    }
}

static void open_more(void);

static void open_settle(int ok, struct conn *c, const char *why)
{
    (void)c;
    if (!op.active) return;
    op.settled++;
    if (ok) op.ok++;
    else {
        op.failed++;
        if (why) {
            if (!strcmp(why, "ECONNREFUSED")) op.err_refused++;
            else if (!strcmp(why, "ECONNRESET")) op.err_reset++;
            else if (!strcmp(why, "closed")) op.err_closed++;
            else op.err_other++;
        }
    }
    if (op.settled == op.count) {
        op.active = 0;
        char codes[4096];
        int cl = 0;
        codes[0] = 0;
        for (int s = 0; s < 600; s++)
            if (op.codes[s]) cl += snprintf(codes + cl, sizeof codes - (size_t)cl, "%s\"%d\":%d", cl ? "," : "", s, op.codes[s]);
        say("{\"type\":\"ready\",\"ok\":%d,\"failed\":%d,\"codes\":{%s},\"errors\":{\"ECONNREFUSED\":%d,"
            "\"ECONNRESET\":%d,\"closed\":%d,\"other\":%d},\"ms\":%lld}",
            op.ok, op.failed, codes, op.err_refused, op.err_reset, op.err_closed, op.err_other,
            (long long)(now_us() / 1000 - op.t0_ms));
    } else {
        open_more();
    }
}

static void open_more(void)
{
    while (op.active && op.started < op.count && op.started - op.settled < op.concurrency) {
        op.started++;
        if (nconns >= MAX_CONNS) {
            open_settle(0, NULL, "too many");
            continue;
        }
        struct conn *c = &conns[nconns++];
        memset(c, 0, sizeof *c);
        c->trial = -1000000;
        c->alive = 1;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
            c->alive = 0;
            open_settle(0, c, "socket");
            continue;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (struct sockaddr *)&op.src, sizeof op.src) < 0) {
            conn_gone(c, "bind");
            continue;
        }
        /* loopback: connect completes at once (or is refused); the request
         * fits the empty send buffer */
        if (connect(c->fd, (struct sockaddr *)&op.dst, sizeof op.dst) < 0 && errno != EINPROGRESS) {
            conn_gone(c, errno == ECONNREFUSED ? "ECONNREFUSED" : "connect");
            continue;
        }
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
    }
}

static void on_writable(struct conn *c)
{
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
        conn_gone(c, err == ECONNREFUSED ? "ECONNREFUSED" : "connect");
        return;
    }
    if (write(c->fd, op.req, (size_t)op.req_len) != op.req_len) {
        conn_gone(c, "write");
        return;
    }
    struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

static int split_tabs(char *line, char **f, int max)
{
    int n = 0;
    for (char *s = line; n < max;) {
        f[n++] = s;
        char *t = strchr(s, '\t');
        if (!t) break;
        *t = 0;
        s = t + 1;
    }
    return n;
}

static void command(char *line)
{
    char *f[64];
    int n = split_tabs(line, f, 64);
    if (!strcmp(f[0], "open") && n >= 7) {
        memset(&op, 0, sizeof op);
        op.active = 1;
        op.dst.sin_family = AF_INET;
        op.dst.sin_port = htons((uint16_t)atoi(f[2]));
        inet_pton(AF_INET, f[1], &op.dst.sin_addr);
        op.src.sin_family = AF_INET;
        inet_pton(AF_INET, f[3], &op.src.sin_addr);
        op.count = atoi(f[4]);
        op.concurrency = atoi(f[5]) > 0 ? atoi(f[5]) : 200;
        op.req_len = snprintf(op.req, sizeof op.req, "GET %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/event-stream\r\n",
                              f[6], f[1], f[2]);
        for (int i = 7; i < n; i++)
            op.req_len += snprintf(op.req + op.req_len, sizeof op.req - (size_t)op.req_len, "%s\r\n", f[i]);
        op.req_len += snprintf(op.req + op.req_len, sizeof op.req - (size_t)op.req_len, "\r\n");
        op.t0_ms = now_us() / 1000;
        if (op.count <= 0) {
            op.count = 0;
            op.settled = -1;
            open_settle(1, NULL, NULL);  /* nothing to open: ready at once */
            return;
        }
        open_more();
    } else if (!strcmp(f[0], "arm") && n >= 3) {
        tr.id = atoi(f[1]);
        tr.mlen = (int)strlen(f[2]);
        if (tr.mlen > (int)sizeof tr.marker) tr.mlen = (int)sizeof tr.marker;
        memcpy(tr.marker, f[2], (size_t)tr.mlen);
        tr.got = 0;
        tr.expect = 0;
        for (int i = 0; i < nconns; i++) {
            conns[i].arrival_us = 0;
            if (conns[i].alive && conns[i].status == 200) tr.expect++;
        }
        tr.active = tr.expect > 0;
        say("{\"type\":\"armed\",\"trial\":%d,\"expect\":%d}", tr.id, tr.expect);
    } else if (!strcmp(f[0], "collect") && n >= 2) {
        int id = atoi(f[1]), missing = 0;
        size_t cap = 64 + (size_t)nconns * 21, len = 0;
        char *o = malloc(cap);
        len += (size_t)snprintf(o, cap, "{\"type\":\"arrivals\",\"trial\":%d,\"us\":[", id);
        int first = 1;
        for (int i = 0; i < nconns; i++) {
            struct conn *c = &conns[i];
            if (c->status != 200) continue;
            if (c->trial == id && c->arrival_us) {
                len += (size_t)snprintf(o + len, cap - len, "%s%lld", first ? "" : ",", (long long)c->arrival_us);
                first = 0;
            } else {
                missing++;
            }
        }
        tr.active = 0;
        say("%s],\"missing\":%d}", o, missing);
        free(o);
    } else if (!strcmp(f[0], "count") && n >= 2) {
        uint64_t total = 0, overflow = 0, mn = UINT64_MAX, mx = 0;
        for (int i = 0; i < nconns; i++) {
            struct conn *c = &conns[i];
            if (c->status != 200) continue;
            total += c->events;
            overflow += c->overflow;
            if (c->events < mn) mn = c->events;
            if (c->events > mx) mx = c->events;
        }
        say("{\"type\":\"count\",\"tag\":\"%s\",\"total\":%llu,\"open\":%d,\"closed\":%d,\"overflow\":%llu,"
            "\"minPerConn\":%llu,\"maxPerConn\":%llu,\"atUs\":%lld}",
            f[1], (unsigned long long)total, n_open, n_closed, (unsigned long long)overflow,
            (unsigned long long)(mn == UINT64_MAX ? 0 : mn), (unsigned long long)mx, (long long)now_us());
    } else if (!strcmp(f[0], "close")) {
        for (int i = 0; i < nconns; i++)
            if (conns[i].fd >= 0) close(conns[i].fd);
        exit(0);
    } else {
        fprintf(stderr, "sseclient: unknown command %s\n", f[0]);
    }
}

int main(void)
{
    conns = calloc(MAX_CONNS, sizeof *conns);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || ep < 0) return 1;
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    struct epoll_event se = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &se);
    say("{\"type\":\"hello\",\"pid\":%d}", (int)getpid());
    static char cmd[65536];
    size_t cl = 0;
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        if (n < 0 && errno != EINTR) return 1;
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                ssize_t r = read(0, cmd + cl, sizeof cmd - cl - 1);
                if (r == 0) exit(0);
                if (r < 0) continue;
                cl += (size_t)r;
                char *nl;
                while ((nl = memchr(cmd, '\n', cl))) {
                    *nl = 0;
                    command(cmd);
                    size_t used = (size_t)(nl + 1 - cmd);
                    memmove(cmd, nl + 1, cl - used);
                    cl -= used;
                }
                if (cl == sizeof cmd - 1) cl = 0;
                continue;
            }
            if (c->fd < 0) continue;
            if (c->status == 0 && (evs[i].events & EPOLLOUT)) {
                on_writable(c);
                if (c->fd < 0) continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(c);
        }
    }
}
