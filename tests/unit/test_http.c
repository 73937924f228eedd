/* Unit tests: http.c request parsing helpers (header and query access)
 * driven through llhttp with the server's own parser settings. */
#include <llhttp.h>

#include "test.h"
#include "api/api.h"
#include "api/metrics.h"
#include "net/http.h"
#include "net/http_parse.h"
#include "net/server.h"
#include "svc/auth.h"

static struct server srv;
static struct config cfg;
static const struct http_hooks hooks = {
    .access = auth_check_request,
    .access_resolve = auth_resolve_unknown,
    .denied = auth_audit_denied,
    .done = api_metrics_request_done,
};

/* Parses one request text with the real callbacks up to the end of the
 * message, in two pieces split at `split` (0: one piece), each piece a
 * separate copy as a socket read would be; returns the request (owned by
 * the test). */
static struct http_req *parse_split(const char *text, size_t split, int *err_out)
{
    static struct conn c;
    memset(&c, 0, sizeof c);
    c.srv = &srv;
    list_init(&c.tlink);
    llhttp_init(&c.parser, HTTP_REQUEST, &http_parser_settings);
    c.parser.data = &c;
    size_t len = strlen(text);
    if (split == 0 || split >= len) split = len;
    char *a = xmalloc(split), *b = xmalloc(len - split + 1);
    memcpy(a, text, split);
    memcpy(b, text + split, len - split);
    int err = http_parse(&c, a, split);
    memset(a, 'Z', split);           /* the read buffer is reused: nothing may look back */
    if (err == HPE_OK && split < len) err = http_parse(&c, b, len - split);
    free(a);
    free(b);
    *err_out = err;
    return c.req;
}

static struct http_req *parse(const char *text, int *err_out) { return parse_split(text, 0, err_out); }

/* The request is refused (early 400-class answer, then close) however the
 * input is split into two reads. */
static void check_refused(const char *text, int status, const char *what)
{
    for (size_t k = 0; k < strlen(text); k++) {
        int err;
        struct http_req *r = parse_split(text, k, &err);
        if (!r || err == HPE_PAUSED || err == HPE_OK || (status && r->early_status != status)) {
            fprintf(stderr, "%s: accepted or wrong answer when split at %zu: err %d (%s), status %d\n", what, k, err,
                    llhttp_errno_name((llhttp_errno_t)err), r ? r->early_status : -1);
            test_failures++;
        }
        test_checks++;
        http_req_unref(r);
        if (!r) return;
    }
}

/* The request parses to its end however it is split (routing may still
 * answer 404 or 405: not a protocol refusal). */
static void check_accepted(const char *text, const char *what)
{
    for (size_t k = 0; k < strlen(text); k++) {
        int err;
        struct http_req *r = parse_split(text, k, &err);
        if (err != HPE_PAUSED || (r->early_status != 0 && r->early_status != 404 && r->early_status != 405)) {
            fprintf(stderr, "%s: refused when split at %zu: err %d (%s), status %d %s\n", what, k, err,
                    llhttp_errno_name((llhttp_errno_t)err), r ? r->early_status : -1, r ? r->early_msg : "");
            test_failures++;
        }
        test_checks++;
        http_req_unref(r);
    }
}

/* http_redact_target() of target (split at its first '?') */
static void check_redact(const char *target, const char *want)
{
    struct buf b;
    buf_init(&b);
    const char *qm = strchr(target, '?');
    size_t plen = qm ? (size_t)(qm - target) : strlen(target);
    http_redact_target(&b, target, plen, qm ? qm + 1 : NULL, qm ? strlen(qm + 1) : 0);
    buf_putc(&b, '\0');
    CHECK_STR(b.data, want);
    buf_free(&b);
}

static void test_redaction(void)
{
    const char *tok = "sst_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo";   /* 4 + 43 */
    char in[1024], want[1024];
#define R(fmt_in, fmt_want) do { snprintf(in, sizeof in, fmt_in, tok); snprintf(want, sizeof want, "%s", fmt_want); \
    check_redact(in, want); } while (0)
    /* whatever the name */
    R("/api/v1/events?access_token=%s", "/api/v1/events?access_token=REDACTED");
    R("/api/v1/events?Access_Token=%s&x=1", "/api/v1/events?Access_Token=REDACTED&x=1");
    R("/api/v1/events?access%%5Ftoken=%s", "/api/v1/events?access%5Ftoken=REDACTED");
    R("/api/v1/events?q=%s", "/api/v1/events?q=REDACTED");
    R("/api/v1/events?%s", "/api/v1/events?REDACTED");
    R("/api/v1/events?%s=1", "/api/v1/events?REDACTED=REDACTED");
    R("/api/v1/events?a=1;b=%s", "/api/v1/events?a=1;b=REDACTED");
    R("/api/v1/events?q=Bearer+%s", "/api/v1/events?q=REDACTED");
    /* path parameters and path segments */
    R("/api/v1/events;access_token=%s", "/api/v1/events;access_token=REDACTED");
    R("/api/v1/spaces/a;x=1;q=%s/changes", "/api/v1/spaces/a;x=1;q=REDACTED/changes");
    R("/api/v1/%s/x", "/api/v1/REDACTED/x");
    /* percent-encoded, once and twice */
    check_redact("/e?q=%73%73%74%5FZm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo", "/e?q=REDACTED");
    check_redact("/e?q=%2573st_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo", "/e?q=REDACTED");
    check_redact("/e;t=%2573st%255FZm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo", "/e;t=REDACTED");
    /* a token cut short is still most of a token */
    check_redact("/e?q=sst_Zm9vYmFyYmF6cXV4", "/e?q=REDACTED");
    /* other long random-looking values */
    check_redact("/e?sig=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
                 "/e?sig=REDACTED");
    check_redact("/e?x=ghp_16C7e42F292c6912E7710c838347Ae178B4a", "/e?x=REDACTED");
    check_redact("/e?x=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "/e?x=REDACTED");
    check_redact("/e?x=k3j5h2g8f7d6s5a4q1w2e3r4t5y6", "/e?x=REDACTED");
    check_redact("/e?x=AKIAIOSFODNN7EXAMPLEwJalrXUtnFEMI", "/e?x=REDACTED");
    /* names that announce a secret, whatever the value */
    check_redact("/e?password=hunter2&API_KEY=1&sessionid=2&key=3", "/e?password=REDACTED&API_KEY=REDACTED&sessionid=REDACTED&key=REDACTED");
    check_redact("/e?access%255Ftoken=short", "/e?access%255Ftoken=REDACTED");
    /* what is left alone: our ids, names, numbers, short values */
    check_redact("/api/v1/spaces/demo/changes?since=42&limit=100&cursor=01J9ZQ3V5K8W2X4Y6A7B8C9D0E",
                 "/api/v1/spaces/demo/changes?since=42&limit=100&cursor=01J9ZQ3V5K8W2X4Y6A7B8C9D0E");
    check_redact("/api/v1/events?topics=change,snapshot&spaces=customer-orders-archive-2024-q1,my_collection_name_that_is_long",
                 "/api/v1/events?topics=change,snapshot&spaces=customer-orders-archive-2024-q1,my_collection_name_that_is_long");
    check_redact("/api/v1/spaces/s/blobs/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                 "/api/v1/spaces/s/blobs/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    check_redact("/api/v1/spaces/s/collections/c/entities/Order-2024-ABCDEFGHijklmnop1234",
                 "/api/v1/spaces/s/collections/c/entities/Order-2024-ABCDEFGHijklmnop1234");
    check_redact("/x?a=1&&b=&c", "/x?a=1&&b=&c");
    check_redact("/x?", "/x?");
    check_redact("/", "/");
#undef R
}

/* Every status the server sends has its reason phrase (RFC 9110 §15): a
 * status line never says "Unknown". */
static void test_status_text(void)
{
    static const int sent[] = {100, 200, 201, 202, 204, 206, 304, 308, 400, 401, 403, 404, 405, 408, 409, 410,
                               411, 412, 413, 416, 417, 422, 429, 431, 500, 501, 502, 503, 504, 505};
    for (size_t i = 0; i < ARRAY_SIZE(sent); i++) {
        if (!strcmp(http_status_text(sent[i]), "Unknown")) fprintf(stderr, "status %d: no reason phrase\n", sent[i]);
        CHECK(strcmp(http_status_text(sent[i]), "Unknown") != 0);
    }
    CHECK_STR(http_status_text(308), "Permanent Redirect");
    CHECK_STR(http_status_text(502), "Bad Gateway");
    CHECK_STR(http_status_text(504), "Gateway Timeout");
}

int main(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cfg_defaults(&cfg);
    srv.loop = &loop;
    srv.cfg = &cfg;
    for (int k = 0; k < TO_COUNT; k++) list_init(&srv.tl[k].head);
    uv_timer_init(&loop, &srv.sweep);
    api_routes_init(&srv.router);
    srv.hooks = &hooks;
    auth_init(&srv, NULL, 0);
    test_status_text();

    int err;
    struct http_req *r = parse("GET /api/v1/status?access_token=abc%20d&limit=5&x HTTP/1.1\r\n"
                               "Host: a\r\nX-Request-Id: my-id\r\nAccept-Encoding: br, gzip\r\n"
                               "X-Empty:\r\nX-Spaced:   v  \r\n\r\n", &err);
    CHECK_INT(err, HPE_PAUSED);
    CHECK(r != NULL);
    CHECK_STR(r->rid, "my-id");
    CHECK(r->accept_gzip);
    CHECK_STR(r->route->name, "status");
    CHECK_INT(r->access, HTTP_ACCESS_WAIT);       /* ?access_token= not in the cache: decided at dispatch */
    size_t len;
    const char *v = http_header(r, "host", &len);
    CHECK(v && len == 1 && v[0] == 'a');
    v = http_header(r, "x-spaced", &len);
    CHECK(v && len == 1 && v[0] == 'v');
    v = http_header(r, "X-Empty", &len);
    CHECK(v && len == 0);
    CHECK(http_header(r, "missing", &len) == NULL);
    char q[64];
    CHECK_INT(http_query(r, "access_token", q, sizeof q), 5);
    CHECK_STR(q, "abc d");
    CHECK_INT(http_query(r, "limit", q, sizeof q), 1);
    CHECK_STR(q, "5");
    CHECK_INT(http_query(r, "x", q, sizeof q), 0);
    CHECK_INT(http_query(r, "nope", q, sizeof q), -1);
    CHECK_INT(http_query(r, "access_token", q, 3), -2);
    http_req_unref(r);

    /* no token at all: 401 decided before any body is read */
    r = parse("GET /api/v1/status HTTP/1.1\r\nHost: a\r\n\r\n", &err);
    CHECK_INT(r->early_status, 401);
    http_req_unref(r);

    /* routing decisions made at the end of the headers */
    r = parse("DELETE /healthz HTTP/1.1\r\nHost: a\r\n\r\n", &err);
    CHECK_INT(r->early_status, 405);
    http_req_unref(r);
    r = parse("GET /api/v1/spaces/NOPE HTTP/1.1\r\nHost: a\r\n\r\n", &err);
    CHECK_INT(r->early_status, 400);
    CHECK_STR(r->early_code, "invalid_name");
    http_req_unref(r);
    r = parse("GET /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: bad id\r\n\r\n", &err);
    CHECK_INT(r->early_status, 404);
    CHECK_INT(strlen(r->rid), 16);            /* replaced by a server-made id */
    http_req_unref(r);

    /* smuggling: both Content-Length and Transfer-Encoding */
    r = parse("POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &err);
    CHECK(err != HPE_OK && err != HPE_PAUSED);
    http_req_unref(r);

    /* llhttp's strict build: the loose one takes any two bytes after chunk
     * data as the CRLF, and a tab inside the request target */
    r = parse("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"a\":1}XX0\r\n\r\n", &err);
    CHECK_INT(err, HPE_STRICT);
    http_req_unref(r);
    r = parse("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", &err);
    CHECK_INT(err, HPE_INVALID_URL);
    http_req_unref(r);

    /* RFC 9112's checks that llhttp leaves to its user, whole and split */
    check_accepted("GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: a b\r\nX-Empty:\r\nX-B:\t c \r\n\r\n", "plain");
    check_accepted("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n\n \n\t ", "LF SP in a body");
    check_accepted("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\n\n \n\r\n0\r\nX-T: t\r\n\r\n",
                   "chunked with a trailer");
    check_accepted("GET /healthz HTTP/1.0\r\n\r\n", "HTTP/1.0 without Host");
    check_accepted("GET /healthz HTTP/1.1\r\nHost: \r\n\r\n", "empty Host");
    check_accepted("GET /healthz HTTP/1.1\r\nHost: [::1]:7420\r\n\r\n", "IPv6 Host");
    check_accepted("GET http://h/healthz HTTP/1.1\r\nHost: other\r\n\r\n", "absolute-form");
    check_refused("GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n", 400, "obs-fold");
    check_refused("GET /healthz HTTP/1.1\r\nHost: a\r\nX-A:\r\n b\r\n\r\n", 400, "obs-fold after an empty value");
    check_refused("GET /healthz HTTP/1.1\r\nHost: a\r\nX-A:\r\n \r\nX-B: b\r\n\r\n", 400, "blank obs-fold");
    check_refused("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 5\r\n\r\nhello", 400, "folded Content-Length");
    check_refused("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400,
                  "folded Transfer-Encoding");
    check_refused("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: a\r\n b\r\n\r\n", 400,
                  "folded trailer");
    check_refused("GET /healthz HTTP/1.1\r\n\r\n", 400, "no Host");
    check_refused("GET /healthz HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400, "two Hosts");
    check_refused("GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400, "two Hosts in HTTP/1.0");
    check_refused("GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "bad Host");
    check_refused("GET /healthz HTTP/1.1\r\nHost: u@h\r\n\r\n", 400, "userinfo in Host");
    check_refused("GET /healthz HTTP/1.1\r\nHost: h:99999x\r\n\r\n", 400, "bad port in Host");
    check_refused("GET /healthz HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400, "empty header name");
    check_refused("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n: v\r\n\r\n", 400,
                  "empty trailer name");
    check_refused("GET /healthz\r\n\r\n", 400, "HTTP/0.9");
    check_refused("GET /healthz HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP/2.0");
    check_refused("GET ftp://h/healthz HTTP/1.1\r\nHost: a\r\n\r\n", 400, "ftp:// target");
    check_refused("POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "chunked HTTP/1.0");
    check_refused("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501,
                  "gzip transfer coding");
    check_refused("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 0,
                  "two Content-Lengths");
    check_refused("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n", 0,
                  "Transfer-Encoding and Content-Length");
    {
        struct buf big;
        buf_init(&big);
        buf_puts(&big, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;e=");
        for (int i = 0; i < HTTP_MAX_CHUNK_EXT; i++) buf_putc(&big, 'x');
        buf_puts(&big, "\r\na\r\n0\r\n\r\n");
        buf_putc(&big, '\0');
        r = parse(big.data, &err);
        CHECK_INT(err, HPE_USER);
        CHECK_INT(r->early_status, 400);
        http_req_unref(r);
        buf_free(&big);
    }
    /* HTTP/1.0 cannot ask for 100 Continue: ignored, not 417 */
    r = parse("POST /x HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\na", &err);
    CHECK_INT(err, HPE_PAUSED);
    CHECK(!r->expect_continue);
    CHECK(r->early_status != 417);
    http_req_unref(r);
    /* Upgrade is ignored: the next request on the connection is HTTP again */
    r = parse("GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", &err);
    CHECK_INT(err, HPE_PAUSED);
    llhttp_resume(&r->conn->parser);
    CHECK_INT(llhttp_execute(&r->conn->parser, "G", 1), HPE_OK);
    http_req_unref(r->conn->req);
    http_req_unref(r);

    test_redaction();

    /* header limit */
    cfg.max_header_bytes = 1024;
    char big[2048];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-Big: %01500d\r\n\r\n", 7);
    r = parse(big, &err);
    CHECK_INT(err, HPE_USER);
    CHECK_INT(r->early_status, 431);
    http_req_unref(r);

    auth_free(&srv);
    router_free(&srv.router);
    uv_close((uv_handle_t *)&srv.sweep, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    TEST_MAIN_END();
}
