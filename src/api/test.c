/* test.c - routes that exist only when SNAPSYNC_TEST_HOOKS=1, so the
 * end-to-end tests can drive the server's machinery directly:
 *   GET  /_test/sleep?ms=N        a threadpool job that sleeps N ms, then
 *                                 answers {"slept_ms":N,"seq":S}
 *   GET  /_test/big?bytes=N       a JSON body of about N bytes (gzip path)
 *   GET  /_test/stream?chunks=C&size=B  a chunked stream of C chunks of B
 *                                 bytes each, written with backpressure
 *   POST /_test/echo              answers the request body's length and
 *                                 first bytes (body reading, chunked, 100)
 * Never enabled in production: the variable is read once at start. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "api/api.h"
#include "net/http.h"
#include "core/jobs.h"
#include "core/json.h"
#include "core/log.h"

static uint64_t sleep_seq;

struct sleep_job {
    struct job job;
    uint64_t ms, seq;
};

static void sleep_work(struct job *j)
{
    struct sleep_job *s = container_of(j, struct sleep_job, job);
    struct timespec ts = {(time_t)(s->ms / 1000), (long)(s->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void sleep_done(struct job *j, struct http_req *r)
{
    struct sleep_job *s = container_of(j, struct sleep_job, job);
    if (r) {
        struct buf b;
        buf_init(&b);
        buf_printf(&b, "{\"slept_ms\":%llu,\"seq\":%llu}", (unsigned long long)s->ms, (unsigned long long)s->seq);
        http_send_json(r, 200, &b);
    } else {
        log_info("test_sleep_dropped", "\"seq\":%llu", (unsigned long long)s->seq);
    }
    free(s);
}

static uint64_t query_u64(struct http_req *r, const char *name, uint64_t def, uint64_t max)
{
    char v[32];
    uint64_t n;
    long l = http_query(r, name, v, sizeof v);
    if (l <= 0 || parse_u64(v, (size_t)l, max, &n) < 0) return def;
    return n;
}

static void test_sleep(struct http_req *r)
{
    struct sleep_job *s = xcalloc(1, sizeof *s);
    s->ms = query_u64(r, "ms", 100, 60000);
    s->seq = ++sleep_seq;
    job_submit(&r->srv->jobs, &s->job, r, sleep_work, sleep_done);
}

static void test_big(struct http_req *r)
{
    uint64_t n = query_u64(r, "bytes", 4096, 64u << 20);
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"items\":[");
    for (uint64_t i = 0; b.len + 40 < n; i++) {
        if (i) buf_putc(&b, ',');
        buf_printf(&b, "{\"i\":%llu,\"name\":\"item-%llu\"}", (unsigned long long)i, (unsigned long long)i);
    }
    buf_puts(&b, "]}");
    http_send_json(r, 200, &b);
}

struct stream_ctx {
    uint64_t chunks, size, sent;
    char *chunk;
};

static void stream_free(void *p)
{
    struct stream_ctx *s = p;
    free(s->chunk);
    free(s);
}

static void stream_pump(struct http_req *r)
{
    struct stream_ctx *s = r->ctx;
    while (s->sent < s->chunks && http_stream_queued(r) < 256 * 1024) {
        http_stream_write(r, s->chunk, s->size);
        s->sent++;
    }
    if (s->sent == s->chunks) {
        r->on_drain = NULL;
        http_stream_end(r);
    }
}

static void test_stream(struct http_req *r)
{
    struct stream_ctx *s = xcalloc(1, sizeof *s);
    s->chunks = query_u64(r, "chunks", 10, 1u << 20);
    s->size = query_u64(r, "size", 1024, 1u << 20);
    if (s->size == 0) s->size = 1;
    s->chunk = xmalloc(s->size);
    memset(s->chunk, 'x', s->size);
    s->chunk[s->size - 1] = '\n';
    r->ctx = s;
    r->ctx_free = stream_free;
    r->on_drain = stream_pump;
    r->drain_low = 64 * 1024;
    http_stream_begin(r, 200, "text/plain; charset=utf-8", true);
    stream_pump(r);
}

static void test_echo(struct http_req *r)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"length\":");
    buf_put_u64(&b, r->body.len);
    buf_puts(&b, ",\"head\":");
    json_str(&b, r->body.data ? r->body.data : "", MIN(r->body.len, 64));
    buf_putc(&b, '}');
    http_send_json(r, 200, &b);
}

#define R(m, pat, fn, nm) {.method = (m), .pattern = (pat), .handler = (fn), .access = ACCESS_PUBLIC, .name = (nm)}

void api_test_routes(struct router *rt)
{
    static const struct route routes[] = {
        R(HTTP_GET, "/_test/sleep", test_sleep, "test_sleep"),
        R(HTTP_GET, "/_test/big", test_big, "test_big"),
        R(HTTP_GET, "/_test/stream", test_stream, "test_stream"),
        R(HTTP_POST, "/_test/echo", test_echo, "test_echo"),
    };
    for (size_t i = 0; i < ARRAY_SIZE(routes); i++) router_add(rt, &routes[i]);
}
