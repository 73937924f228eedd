/* Unit tests: http.c request parsing helpers (header and query access)
 * driven through llhttp with the server's own parser settings. */
#include <llhttp.h>

#include "test.h"
#include "http.h"
#include "server.h"
#include "auth.h"

static struct server srv;
static struct config cfg;

/* Parses one request text with the real callbacks up to the end of the
 * message; returns the request (owned by the test). */
static struct http_req *parse(const char *text, int *err_out)
{
    static struct conn c;
    memset(&c, 0, sizeof c);
    c.srv = &srv;
    list_init(&c.tlink);
    llhttp_init(&c.parser, HTTP_REQUEST, &http_parser_settings);
    c.parser.data = &c;
    int err = llhttp_execute(&c.parser, text, strlen(text));
    *err_out = err;
    return c.req;
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
    http_routes_init(&srv);
    auth_init(&srv, NULL, 0);

    int err;
    struct http_req *r = parse("GET /api/v1/status?access_token=abc%20d&limit=5&x HTTP/1.1\r\n"
                               "Host: a\r\nX-Request-Id: my-id\r\nAccept-Encoding: br, gzip\r\n"
                               "X-Empty:\r\nX-Spaced:   v  \r\n\r\n", &err);
    CHECK_INT(err, HPE_PAUSED);
    CHECK(r != NULL);
    CHECK_STR(r->rid, "my-id");
    CHECK(r->accept_gzip);
    CHECK_STR(r->route->name, "status");
    CHECK(r->auth_unknown);                       /* ?access_token= not in the cache: decided at dispatch */
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
    r = parse("GET /api/v1/spaces/NOPE HTTP/1.1\r\n\r\n", &err);
    CHECK_INT(r->early_status, 400);
    CHECK_STR(r->early_code, "invalid_name");
    http_req_unref(r);
    r = parse("GET /x HTTP/1.1\r\nX-Request-Id: bad id\r\n\r\n", &err);
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
