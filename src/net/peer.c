/* peer.c - see peer.h. The libuv + curl multi glue follows curl's own
 * multi-uv example: curl tells us which sockets to watch (socket_cb) and
 * when to call it back (timer_cb); we tell curl what happened with
 * curl_multi_socket_action and then collect finished transfers. */
#include "net/peer.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "net/server.h"

struct peer_ctx {
    struct server *srv;
    struct list transfers;
    CURLM *multi;
    uv_timer_t timer;
    int running;
};

struct poll_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct peer_ctx *pc;
};

struct transfer {
    struct list link;
    CURL *easy;
    struct curl_slist *headers;
    char *req_body;
    struct buf body;
    bool too_big;
    char errbuf[CURL_ERROR_SIZE];
    peer_cb cb;
    void *arg;
    /* a transfer another module built (peer_easy_add): it owns the easy
     * handle and hears the end through this instead of cb */
    peer_easy_done_fn easy_done;
};

static struct peer_ctx *ctx_of(struct server *srv) { return srv->peer; }

static void transfer_free(struct transfer *t)
{
    if (!t->easy_done) curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->headers);
    free(t->req_body);
    buf_free(&t->body);
    free(t);
}

static void check_done(struct peer_ctx *pc)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(pc->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        struct transfer *t = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (t->easy_done) {
            CURLcode rc = m->data.result;
            curl_multi_remove_handle(pc->multi, m->easy_handle);
            list_remove(&t->link);
            peer_easy_done_fn done = t->easy_done;
            void *arg = t->arg;
            transfer_free(t);
            done(arg, (int)rc);
            continue;
        }
        long code = 0;
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
        struct peer_result res = {.status = (int)code, .body = &t->body};
        char why[CURL_ERROR_SIZE + 64];
        if (m->data.result != CURLE_OK) {
            snprintf(why, sizeof why, "%s%s%s", curl_easy_strerror(m->data.result), t->errbuf[0] ? ": " : "",
                     t->errbuf);
            if (t->too_big) snprintf(why, sizeof why, "the peer's response is larger than %u bytes", PEER_MAX_BODY);
            res.error = why;
            res.status = 0;
            res.timed_out = m->data.result == CURLE_OPERATION_TIMEDOUT;
        }
        curl_multi_remove_handle(pc->multi, m->easy_handle);
        list_remove(&t->link);
        t->cb(t->arg, &res);
        transfer_free(t);
    }
}

void peer_abort_all(struct server *srv)
{
    struct peer_ctx *pc = srv->peer;
    if (!pc) return;
    while (!list_empty(&pc->transfers)) {
        struct transfer *t = container_of(pc->transfers.next, struct transfer, link);
        list_remove(&t->link);
        curl_multi_remove_handle(pc->multi, t->easy);
        if (t->easy_done) {
            peer_easy_done_fn done = t->easy_done;
            void *arg = t->arg;
            transfer_free(t);
            done(arg, (int)CURLE_ABORTED_BY_CALLBACK);
            continue;
        }
        struct peer_result res = {.status = 0, .error = "aborted: the server is shutting down", .body = &t->body};
        t->cb(t->arg, &res);
        transfer_free(t);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct poll_ctx *c = p->data;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(c->pc->multi, c->fd, flags, &c->pc->running);
    check_done(c->pc);
}

static void on_timeout(uv_timer_t *t)
{
    struct peer_ctx *pc = t->data;
    curl_multi_socket_action(pc->multi, CURL_SOCKET_TIMEOUT, 0, &pc->running);
    check_done(pc);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct peer_ctx *pc = userp;
    UNUSED(multi);
    /* 0 is "as soon as possible": a 0 ms timer runs on the loop's next
     * turn (not from inside this callback). Rounding it up to 1 ms, as
     * curl's multi-uv example does, put a millisecond or more before every
     * request started and every transfer step curl asked to hurry. */
    if (timeout_ms < 0) uv_timer_stop(&pc->timer);
    else uv_timer_start(&pc->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static void poll_closed(uv_handle_t *h) { free(h->data); }

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct peer_ctx *pc = userp;
    struct poll_ctx *c = socketp;
    UNUSED(easy);
    if (what == CURL_POLL_REMOVE) {
        if (c) {
            uv_poll_stop(&c->poll);
            curl_multi_assign(pc->multi, s, NULL);
            uv_close((uv_handle_t *)&c->poll, poll_closed);
        }
        return 0;
    }
    if (!c) {
        c = xcalloc(1, sizeof *c);
        c->fd = s;
        c->pc = pc;
        if (uv_poll_init_socket(pc->srv->loop, &c->poll, s) != 0) {
            free(c);
            return -1;
        }
        c->poll.data = c;
        curl_multi_assign(pc->multi, s, c);
    }
    int ev = 0;
    if (what & CURL_POLL_IN) ev |= UV_READABLE;
    if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
    uv_poll_start(&c->poll, ev, on_poll);
    return 0;
}

static size_t on_data(char *p, size_t size, size_t n, void *userp)
{
    struct transfer *t = userp;
    size_t len = size * n;
    if (t->body.len + len > PEER_MAX_BODY) {
        t->too_big = true;
        return 0;                    /* makes curl fail the transfer */
    }
    buf_append(&t->body, p, len);
    return len;
}

/* A peer on this host: its responses cross no wire, so compressing them
 * would only cost CPU on both sides (the source's gzip was most of its CPU
 * in an initial sync on loopback). */
static bool url_is_loopback(const char *url)
{
    CURLU *u = curl_url();
    char *host = NULL;
    bool lo = false;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host)
        lo = !strcasecmp(host, "localhost") || !strncmp(host, "127.", 4) || !strcmp(host, "[::1]");
    curl_free(host);
    curl_url_cleanup(u);
    return lo;
}

int peer_request(struct server *srv, const char *method, const char *url, const char *token, const char *body,
                 size_t len, long timeout_ms, peer_cb cb, void *arg)
{
    struct peer_ctx *pc = ctx_of(srv);
    struct transfer *t = xcalloc(1, sizeof *t);
    t->easy = curl_easy_init();
    if (!t->easy) {
        free(t);
        return -1;
    }
    t->cb = cb;
    t->arg = arg;
    char auth[256];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token ? token : "");
    if (token && *token) t->headers = curl_slist_append(t->headers, auth);
    t->headers = curl_slist_append(t->headers, "Accept: application/json");
    bool gzip = !url_is_loopback(url);
    t->headers = curl_slist_append(t->headers, "Expect:");
    if (body) {
        t->headers = curl_slist_append(t->headers, "Content-Type: application/json");
        t->req_body = xmalloc(len ? len : 1);
        memcpy(t->req_body, body, len);
        curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->req_body);
        curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(t->easy, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(t->easy, CURLOPT_URL, url);
    curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
    if (gzip) curl_easy_setopt(t->easy, CURLOPT_ACCEPT_ENCODING, "gzip");   /* sends Accept-Encoding, decodes */
    curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
    curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 10000 ? timeout_ms : 10000L);
    curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(t->easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(t->easy, CURLOPT_USERAGENT, "snapsync-peer");
    if (curl_multi_add_handle(pc->multi, t->easy) != CURLM_OK) {
        transfer_free(t);
        return -1;
    }
    list_insert_tail(&pc->transfers, &t->link);
    return 0;
}

int peer_easy_add(struct server *srv, void *easy, peer_easy_done_fn done, void *arg)
{
    struct peer_ctx *pc = ctx_of(srv);
    if (!pc) return -1;
    struct transfer *t = xcalloc(1, sizeof *t);
    t->easy = easy;
    t->easy_done = done;
    t->arg = arg;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    if (curl_multi_add_handle(pc->multi, easy) != CURLM_OK) {
        free(t);
        return -1;
    }
    list_insert_tail(&pc->transfers, &t->link);
    return 0;
}

void peer_easy_remove(struct server *srv, void *easy)
{
    struct peer_ctx *pc = ctx_of(srv);
    if (!pc) return;
    for (struct list *l = pc->transfers.next; l != &pc->transfers; l = l->next) {
        struct transfer *t = container_of(l, struct transfer, link);
        if (t->easy != easy) continue;
        list_remove(&t->link);
        curl_multi_remove_handle(pc->multi, easy);
        transfer_free(t);
        return;
    }
}

static bool url_path_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~/%!$&'()*+,;=:@", c);
}

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

int peer_base_url(const char *in, char *out, size_t cap, char *why, size_t whycap)
{
    size_t len = strlen(in);
#define REFUSE(...) do { snprintf(why, whycap, __VA_ARGS__); return -1; } while (0)
    if (len > PEER_URL_MAX) REFUSE("it is longer than %d bytes", PEER_URL_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c <= 0x20 || c >= 0x7f) REFUSE("it contains a space, a control character or a non-ASCII byte");
        if (c == '?' || c == '#') REFUSE("it has a query or a fragment ('%c')", c);
    }
    size_t skip;
    if (!strncasecmp(in, "http://", 7)) skip = 7;
    else if (!strncasecmp(in, "https://", 8)) skip = 8;
    else REFUSE("it does not start with http:// or https://");
    const char *auth = in + skip, *path = strchr(auth, '/');
    size_t alen = path ? (size_t)(path - auth) : strlen(auth);
    if (memchr(auth, '@', alen)) REFUSE("it has credentials (user@): the peer's key goes in the token");
    size_t hlen;
    if (alen && auth[0] == '[') {            /* [IPv6] */
        const char *close = memchr(auth, ']', alen);
        if (!close || close == auth + 1) REFUSE("its [IPv6] host is not closed");
        for (const char *c = auth + 1; c < close; c++)
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') || (*c >= 'A' && *c <= 'F') || *c == ':' ||
                  *c == '.'))
                REFUSE("its [IPv6] host is not an IPv6 address");
        hlen = (size_t)(close - auth) + 1;
    } else {
        for (hlen = 0; hlen < alen && auth[hlen] != ':'; hlen++)
            if (!host_char(auth[hlen])) REFUSE("its host has a character a host name cannot have ('%c')", auth[hlen]);
    }
    if (hlen == 0) REFUSE("it has no host");
    if (hlen < alen) {
        const char *port = auth + hlen;
        size_t plen = alen - hlen - 1;
        unsigned long v = 0;
        if (port[0] != ':' || plen == 0 || plen > 5) REFUSE("its port is not a number from 1 to 65535");
        for (size_t i = 1; i <= plen; i++) {
            if (port[i] < '0' || port[i] > '9') REFUSE("its port is not a number from 1 to 65535");
            v = v * 10 + (unsigned long)(port[i] - '0');
        }
        if (v == 0 || v > 65535) REFUSE("its port is not a number from 1 to 65535");
    }
    /* the path prefix: trailing slashes and a trailing /api/v1 go */
    size_t plen = path ? strlen(path) : 0;
    for (size_t i = 0; i < plen; i++)
        if (!url_path_char(path[i])) REFUSE("its path has a character a URL path cannot have ('%c')", path[i]);
    while (plen && path[plen - 1] == '/') plen--;
    if (plen >= 7 && !memcmp(path + plen - 7, "/api/v1", 7)) plen -= 7;
    while (plen && path[plen - 1] == '/') plen--;
    for (size_t i = 0; i + 7 <= plen; i++)
        if (!memcmp(path + i, "/api/v1", 7) && (i + 7 == plen || path[i + 7] == '/'))
            REFUSE("it names a route under /api/v1 (such as a space's URL), not the peer's base address");
    if (skip + alen + plen + 1 > cap) REFUSE("it is too long");
    size_t n = 0;
    for (size_t i = 0; i < skip + hlen; i++) out[n++] = (char)tolower((unsigned char)in[i]);
    memcpy(out + n, in + skip + hlen, alen - hlen);   /* the port */
    n += alen - hlen;
    if (plen) memcpy(out + n, path, plen);
    n += plen;
    out[n] = '\0';
    return 0;
#undef REFUSE
}

int peer_init(struct server *srv)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return -1;
    struct peer_ctx *pc = xcalloc(1, sizeof *pc);
    pc->srv = srv;
    pc->multi = curl_multi_init();
    list_init(&pc->transfers);
    uv_timer_init(srv->loop, &pc->timer);
    pc->timer.data = pc;
    curl_multi_setopt(pc->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(pc->multi, CURLMOPT_SOCKETDATA, pc);
    curl_multi_setopt(pc->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(pc->multi, CURLMOPT_TIMERDATA, pc);
    curl_multi_setopt(pc->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 4L);
    srv->peer = pc;
    return 0;
}

static void peer_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void peer_free(struct server *srv)
{
    struct peer_ctx *pc = srv->peer;
    if (!pc) return;
    peer_abort_all(srv);
    curl_multi_cleanup(pc->multi);
    srv->peer = NULL;
    uv_close((uv_handle_t *)&pc->timer, peer_timer_closed);
    curl_global_cleanup();
}
