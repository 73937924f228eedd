/* bench/sse/stall.c - many SSE subscribers that never read (bench/sse/slow-subscribers).
 *
 *   stall HOST PORT COUNT PATH [HEADER-LINE...]
 *
 * Opens COUNT connections to HOST:PORT (256 connecting at once), sends
 * "GET PATH HTTP/1.1" with the header lines given (e.g. "Authorization:
 * Bearer ..."), reads each response head and from then on never reads
 * again: the server's data piles up in the kernel buffers and then in the
 * server. Each socket stays registered for EPOLLRDHUP only, so a connection
 * the server closes (an overflowed subscriber) is seen without reading it.
 * STALL_RCVBUF=N sets SO_RCVBUF before connecting (default: the kernel's).
 *
 * stdout, one JSON object per line:
 *   {"type":"ready","ok","failed","codes":{"200":n,...},"ms"}   all heads in
 * stdin commands, one per line:
 *   status -> {"type":"status","open","closed_by_server"}
 *   close  -> closes every socket, {"type":"closed"}, exits
 * It exits when stdin closes.
 *
 * Build: cc -O2 -o stall stall.c (bench/sse/slow-subscribers does it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONCURRENCY 256
#define HEAD_MAX 4096

enum { C_CONNECTING, C_HEAD, C_STALLED, C_CLOSED };

struct conn {
    int fd, state, status, head_len, sent;
    char head[HEAD_MAX];
};

static struct conn *conns;
static int nconns, started, settled, ok_n, failed_n, closed_by_server;
static int codes[600];
static int ep;
static struct sockaddr_in dst;
static char req[16384];
static int req_len;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void settle(struct conn *c, int ok)
{
    settled++;
    if (ok) {
        ok_n++;
        if (c->status > 0 && c->status < 600) codes[c->status]++;
    } else {
        failed_n++;
        if (c->status > 0 && c->status < 600) codes[c->status]++;
    }
}

static void drop(struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = C_CLOSED;
}

static void start_one(int i)
{
    struct conn *c = &conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("socket");
        exit(1);
    }
    const char *rb = getenv("STALL_RCVBUF");
    if (rb && *rb) {
        int v = atoi(rb);
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
    }
    c->state = C_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->state = C_CLOSED;
        settle(c, 0);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void on_event(int i, uint32_t evs)
{
    struct conn *c = &conns[i];
    if (c->state == C_CLOSED) return;
    if (c->state == C_STALLED) {
        if (evs & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            closed_by_server++;
            drop(c);
        }
        return;
    }
    if (c->state == C_CONNECTING && (evs & EPOLLOUT)) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            drop(c);
            settle(c, 0);
            return;
        }
        while (c->sent < req_len) {
            ssize_t w = write(c->fd, req + c->sent, (size_t)(req_len - c->sent));
            if (w < 0) {
                if (errno == EAGAIN) return;
                drop(c);
                settle(c, 0);
                return;
            }
            c->sent += (int)w;
        }
        c->state = C_HEAD;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    if (c->state == C_HEAD && (evs & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        /* read the head only: at most what is left of HEAD_MAX */
        ssize_t r = read(c->fd, c->head + c->head_len, (size_t)(HEAD_MAX - 1 - c->head_len));
        if (r <= 0) {
            if (r < 0 && errno == EAGAIN) return;
            drop(c);
            settle(c, 0);
            return;
        }
        c->head_len += (int)r;
        c->head[c->head_len] = '\0';
        if (!strstr(c->head, "\r\n\r\n")) {
            if (c->head_len >= HEAD_MAX - 1) {
                drop(c);
                settle(c, 0);
            }
            return;
        }
        c->status = atoi(c->head + 9);
        if (c->status != 200) {
            drop(c);
            settle(c, 0);
            return;
        }
        c->state = C_STALLED;
        struct epoll_event ev = {.events = EPOLLRDHUP, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        settle(c, 1);
    }
}

static void report_ready(int64_t t0)
{
    printf("{\"type\":\"ready\",\"ok\":%d,\"failed\":%d,\"codes\":{", ok_n, failed_n);
    int first = 1;
    for (int s = 0; s < 600; s++)
        if (codes[s]) {
            printf("%s\"%d\":%d", first ? "" : ",", s, codes[s]);
            first = 0;
        }
    printf("},\"ms\":%lld}\n", (long long)(now_ms() - t0));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: stall HOST PORT COUNT PATH [HEADER-LINE...]\n");
        return 2;
    }
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
        fprintf(stderr, "stall: bad address %s\n", argv[1]);
        return 2;
    }
    nconns = atoi(argv[3]);
    req_len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/event-stream\r\n", argv[4],
                       argv[1], argv[2]);
    for (int i = 5; i < argc; i++) req_len += snprintf(req + req_len, sizeof req - (size_t)req_len, "%s\r\n", argv[i]);
    req_len += snprintf(req + req_len, sizeof req - (size_t)req_len, "\r\n");
    conns = calloc((size_t)nconns, sizeof *conns);
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event stdin_ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &stdin_ev);
    int64_t t0 = now_ms();
    int ready_sent = 0;
    char line[256];
    int line_len = 0;
    struct epoll_event evs[512];
    for (;;) {
        while (started < nconns && started - settled < CONCURRENCY) start_one(started++);
        if (!ready_sent && settled == nconns) {
            report_ready(t0);
            ready_sent = 1;
        }
        int n = epoll_wait(ep, evs, 512, 1000);
        for (int k = 0; k < n; k++) {
            if (evs[k].data.u32 != UINT32_MAX) {
                on_event((int)evs[k].data.u32, evs[k].events);
                continue;
            }
            ssize_t r = read(0, line + line_len, sizeof line - 1 - (size_t)line_len);
            if (r <= 0) return 0;
            line_len += (int)r;
            line[line_len] = '\0';
            char *nl;
            while ((nl = strchr(line, '\n'))) {
                *nl = '\0';
                if (!strcmp(line, "status")) {
                    int open = 0;
                    for (int i = 0; i < nconns; i++) open += conns[i].state == C_STALLED;
                    printf("{\"type\":\"status\",\"open\":%d,\"closed_by_server\":%d}\n", open, closed_by_server);
                    fflush(stdout);
                } else if (!strcmp(line, "close")) {
                    for (int i = 0; i < nconns; i++)
                        if (conns[i].state != C_CLOSED) close(conns[i].fd);
                    printf("{\"type\":\"closed\"}\n");
                    fflush(stdout);
                    return 0;
                }
                line_len -= (int)(nl + 1 - line);
                memmove(line, nl + 1, (size_t)line_len + 1);
            }
            if (line_len >= (int)sizeof line - 1) line_len = 0;
        }
    }
}
