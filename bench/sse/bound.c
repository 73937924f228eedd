/* bench/sse/bound.c - the floor for bench/sse: the least work a server can do
 * to fan one event out to every subscriber over loopback TCP on this machine.
 *
 * Not an SSE server anyone would run: one epoll loop, subscribers in a plain
 * array, no auth, no storage, no ring, no queue, no backpressure (a send that
 * would block drops the event for that subscriber, counted), a request parser
 * that only looks at the method and Content-Length. What it keeps is the one
 * thing no server can skip: one send(2) of the event to each subscriber's
 * socket, which on loopback also runs the receiver's TCP input path and wakes
 * the receiving process, on the sender's CPU. bench/sse/run runs it as the
 * third server (SERVERS="snapsync node bound") so that snapsync's fan-out time
 * can be read against what the kernel alone costs here.
 *
 *   GET  /api/v1/events...   -> 200 text/event-stream, chunked, "retry: 2000"
 *   PUT  .../entities/{id}   -> one frame "id: N\nevent: change\ndata:
 *        {"space":"bench","collection":"c","id":"{id}","version":N}\n\n"
 *        sent to every subscriber, then 201 {}
 *   anything else            -> 404
 * Prints {"listening":{"host":"127.0.0.1","port":N}} on stdout.
 *
 * Build: cc -O2 -o bound bound.c (bench/sse/run does it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FD 131072
#define REQ_MAX 16384

struct peer {
    int len;                         /* bytes of the request read so far */
    int sub;                         /* 1: a subscriber (its index in subs + 1 in idx) */
    int idx;
    char *req;
};

static struct peer peers[MAX_FD];
static int subs[MAX_FD], nsubs;
static uint64_t next_id, version, dropped;
static int ep;

static void drop(int fd)
{
    struct peer *p = &peers[fd];
    if (p->sub) {                    /* swap-remove from the array */
        int last = subs[--nsubs];
        subs[p->idx] = last;
        peers[last].idx = p->idx;
        p->sub = 0;
    }
    free(p->req);
    p->req = NULL;
    p->len = 0;
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
}

static void reply(int fd, const char *s)
{
    size_t n = strlen(s);
    if (send(fd, s, n, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)n) drop(fd);
}

static void broadcast(const char *id, size_t idlen)
{
    char frame[512];
    uint64_t v = ++version;
    int n = snprintf(frame + 10, sizeof frame - 12,
                     "id: %llu\nevent: change\ndata: {\"space\":\"bench\",\"collection\":\"c\",\"id\":\"%.*s\",\"version\":%llu}\n\n",
                     (unsigned long long)++next_id, (int)idlen, id, (unsigned long long)v);
    char hex[11];
    snprintf(hex, sizeof hex, "%08x\r\n", n);
    memcpy(frame, hex, 10);
    memcpy(frame + 10 + n, "\r\n", 2);
    size_t len = (size_t)n + 12;
    for (int i = 0; i < nsubs; i++)
        if (send(subs[i], frame, len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)len) dropped++;
}

/* A whole request is in p->req (head + body): answer it. Returns 0 when the
 * connection goes on (keep-alive or subscriber). */
static void handle(int fd, struct peer *p, int head_len)
{
    if (!strncmp(p->req, "GET /api/v1/events", 18)) {
        reply(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n0000000d\r\nretry: 2000\n\n\r\n");
        p->sub = 1;
        p->idx = nsubs;
        subs[nsubs++] = fd;
        free(p->req);
        p->req = NULL;
        return;
    }
    if (!strncmp(p->req, "PUT ", 4)) {
        const char *path = p->req + 4, *sp = strchr(path, ' ');
        const char *slash = sp ? memrchr(path, '/', (size_t)(sp - path)) : NULL;
        if (slash) broadcast(slash + 1, (size_t)(sp - slash - 1));
        reply(fd, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    } else {
        reply(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
    (void)head_len;
}

static void on_read(int fd)
{
    struct peer *p = &peers[fd];
    for (;;) {
        if (p->sub) {                /* subscribers send nothing: read and forget */
            char junk[4096];
            ssize_t n = read(fd, junk, sizeof junk);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) drop(fd);
            return;
        }
        if (!p->req) p->req = malloc(REQ_MAX + 1);
        ssize_t n = read(fd, p->req + p->len, (size_t)(REQ_MAX - p->len));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            drop(fd);
            return;
        }
        if (n < 0) return;
        p->len += (int)n;
        p->req[p->len] = 0;
        for (;;) {                   /* every complete request in the buffer */
            char *e = strstr(p->req, "\r\n\r\n");
            if (!e) {
                if (p->len == REQ_MAX) drop(fd);
                break;
            }
            int hl = (int)(e + 4 - p->req);
            char *cl = strcasestr(p->req, "\r\ncontent-length:");
            int body = cl && cl < e ? atoi(cl + 17) : 0;
            if (p->len < hl + body) break;
            int used = hl + body;
            handle(fd, p, hl);
            if (p->sub || !p->req) return;
            memmove(p->req, p->req + used, (size_t)(p->len - used));
            p->len -= used;
            p->req[p->len] = 0;
            if (!p->len) break;
        }
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) return 1;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    ep = epoll_create1(0);
    struct epoll_event le = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
    printf("{\"listening\":{\"host\":\"127.0.0.1\",\"port\":%d}}\n", ntohs(a.sin_port));
    fflush(stdout);
    next_id = (uint64_t)time(NULL) * 1000000;
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAX_FD) {
                        close(c);
                        continue;
                    }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
                }
                continue;
            }
            on_read(fd);
        }
    }
}
