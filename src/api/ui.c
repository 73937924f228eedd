/* ui.c - serves the embedded dashboard: GET /ui/ (index.html) and
 * GET /ui/{file} for the other assets; /ui redirects to /ui/; and the
 * JavaScript client at GET /sdk/snapsync.js (clients/js). Public: the page
 * asks for a token and calls the API with it. Loop thread (the assets
 * are static bytes: no file or thread work). */
#include <stdio.h>
#include <string.h>

#include "api/util.h"
#include "net/http.h"
#include "api/ui.h"

static const struct ui_asset *find(const char *name, size_t len)
{
    for (const struct ui_asset *a = ui_assets; a->name; a++)
        if (strlen(a->name) == len && !memcmp(a->name, name, len)) return a;
    return NULL;
}

static void send_asset(struct http_req *r, const struct ui_asset *a)
{
    char etag[32];
    snprintf(etag, sizeof etag, "ui-%08lx", a->hash);
    size_t il;
    const char *inm = http_header(r, "If-None-Match", &il);
    http_add_header(r, "ETag", "\"%s\"", etag);
    http_add_header(r, "Cache-Control", "no-cache");
    http_add_header(r, "X-Content-Type-Options", "nosniff");
    if (!strncmp(a->ctype, "text/html", 9)) {
        http_add_header(r, "Content-Security-Policy",
                        "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
                        "script-src 'self'; frame-ancestors 'none'");
        http_add_header(r, "X-Frame-Options", "DENY");
        http_add_header(r, "Referrer-Policy", "no-referrer");
    }
    if (inm && etag_list_match(inm, il, etag, true)) {
        http_send_empty(r, 304);
        return;
    }
    http_send(r, 200, a->ctype, a->data, a->len, HTTP_BODY_STATIC);
}

void api_ui(struct http_req *r)
{
    const char *p = r->match.params.asset;      /* checked by the router */
    size_t len = strlen(p);
    if (len == 0) {
        p = "index.html";
        len = 10;
    }
    const struct ui_asset *a = find(p, len);
    if (!a) {
        http_send_error(r, 404, "not_found", NULL, "no such dashboard file");
        return;
    }
    send_asset(r, a);
}

void api_sdk(struct http_req *r)
{
    const struct ui_asset *a = find("sdk/snapsync.js", 15);
    if (!a) {
        http_send_error(r, 404, "not_found", NULL, "the JavaScript client is not built in");
        return;
    }
    send_asset(r, a);
}

void api_ui_redirect(struct http_req *r)
{
    http_add_header(r, "Location", "/ui/");
    http_send_empty(r, 308);
}
