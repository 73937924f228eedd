/* remote_http.c - see remote_http.h. */
#include "net/remote_http.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net/peer.h"
#include "net/server.h"

struct rhttp {
    struct server *srv;
    CURL *easy;
    struct curl_slist *headers;
    char *body;                      /* the small body's copy */
    struct buf resp;
    bool too_big, paused;
    size_t max_response;
    char etag[130];
    char errbuf[CURL_ERROR_SIZE];
    rhttp_read_fn read;
    rhttp_write_fn write;
    rhttp_done_fn done;
    void *arg;
    uint64_t sent;
};

static void rhttp_free(struct rhttp *h)
{
    curl_easy_cleanup(h->easy);
    curl_slist_free_all(h->headers);
    free(h->body);
    buf_free(&h->resp);
    free(h);
}

static size_t on_read(char *dst, size_t size, size_t n, void *userp)
{
    struct rhttp *h = userp;
    size_t got = h->read(h->arg, dst, size * n);
    if (got == RHTTP_PAUSE) {
        h->paused = true;
        return CURL_READFUNC_PAUSE;
    }
    h->sent += got;
    return got;
}

static size_t on_write(char *p, size_t size, size_t n, void *userp)
{
    struct rhttp *h = userp;
    size_t len = size * n;
    if (h->write) {
        if (h->write(h->arg, p, len)) {
            h->paused = true;
            return CURL_WRITEFUNC_PAUSE;   /* the same bytes come again after resume */
        }
        return len;
    }
    if (h->resp.len + len > h->max_response) {
        h->too_big = true;
        return 0;
    }
    buf_append(&h->resp, p, len);
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *userp)
{
    struct rhttp *h = userp;
    size_t len = size * n;
    if (len > 5 && !strncasecmp(p, "etag:", 5)) {
        const char *v = p + 5, *end = p + len;
        while (v < end && (*v == ' ' || *v == '"' || *v == '\t')) v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == '"' || end[-1] == ' ')) end--;
        if (end - v >= 2 && v[0] == 'W' && v[1] == '/') v += 2;
        while (v < end && *v == '"') v++;
        snprintf(h->etag, sizeof h->etag, "%.*s", (int)(end - v), v);
    }
    return len;
}

static void on_done(void *arg, int code)
{
    struct rhttp *h = arg;
    long status = 0;
    curl_off_t cl = -1;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(h->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    struct rhttp_result res = {.status = (int)status, .body = &h->resp, .etag = h->etag, .content_length = cl};
    char why[CURL_ERROR_SIZE + 64];
    if (code != CURLE_OK) {
        if (h->too_big) snprintf(why, sizeof why, "the server's answer is larger than %zu bytes", h->max_response);
        else snprintf(why, sizeof why, "%s%s%s", curl_easy_strerror((CURLcode)code), h->errbuf[0] ? ": " : "", h->errbuf);
        res.error = why;
        res.status = 0;
        res.timed_out = code == CURLE_OPERATION_TIMEDOUT;
    }
    /* the answer's body is ours until done returns (h is no longer the
     * caller's: it forgets its pointer first thing) */
    h->done(h->arg, &res);
    rhttp_free(h);
}

struct rhttp *rhttp_start(struct server *srv, const struct rhttp_req *q)
{
    struct rhttp *h = xcalloc(1, sizeof *h);
    h->srv = srv;
    h->easy = curl_easy_init();
    if (!h->easy) {
        free(h);
        return NULL;
    }
    h->read = q->read;
    h->write = q->write;
    h->done = q->done;
    h->arg = q->arg;
    h->max_response = q->max_response ? q->max_response : (1u << 20);
    buf_init(&h->resp);
    CURL *e = h->easy;
    for (const char *const *p = q->headers; p && *p; p++) h->headers = curl_slist_append(h->headers, *p);
    /* no "Expect:" removal header: curl 7.88 would sign it (SigV4) without
     * sending it; small bodies get no Expect anyway */
    curl_easy_setopt(e, CURLOPT_URL, q->url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, q->method);
    if (q->no_body) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    if (q->body) {
        h->body = xmalloc(q->body_len ? q->body_len : 1);
        memcpy(h->body, q->body, q->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, h->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
    } else if (q->upload_size >= 0) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->upload_size);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, h);
        curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
    }
    if (q->userpwd) curl_easy_setopt(e, CURLOPT_USERPWD, q->userpwd);
    if (q->sigv4) curl_easy_setopt(e, CURLOPT_AWS_SIGV4, q->sigv4);
    else if (q->userpwd) curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
    long stall_s = q->stall_ms > 0 ? (q->stall_ms + 999) / 1000 : 30;
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, stall_s);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, q->stall_ms > 0 && q->stall_ms < 10000 ? q->stall_ms : 10000L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "snapsync-remote");
    if (peer_easy_add(srv, e, on_done, h) < 0) {
        rhttp_free(h);
        return NULL;
    }
    return h;
}

void rhttp_resume(struct rhttp *h)
{
    if (!h->paused) return;
    h->paused = false;
    curl_easy_pause(h->easy, CURLPAUSE_CONT);
}

void rhttp_cancel(struct rhttp *h)
{
    peer_easy_remove(h->srv, h->easy);
    rhttp_free(h);
}

uint64_t rhttp_sent(const struct rhttp *h) { return h->sent; }

void rhttp_escape_path(struct buf *out, const char *path)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~/", *p))
            buf_putc(out, (char)*p);
        else {
            buf_putc(out, '%');
            buf_putc(out, hex[*p >> 4]);
            buf_putc(out, hex[*p & 15]);
        }
    }
}
