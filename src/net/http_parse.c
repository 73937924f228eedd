/* http_parse.c - reading a request: the RFC 9112 checks llhttp leaves to
 * its user, the early answer a check records, and what a handler reads of a
 * parsed request (headers, query, client address, target).
 *
 * Pure functions of a request and the input its connection is parsing: no
 * I/O, and nothing from http.c or server.c, so this file stays a leaf under
 * both (the llhttp callbacks that drive a connection stay in http.c: they
 * set timeouts and answer, which is server.c's and the writer's business).
 *
 * Loop thread only, except http_query_in (pure: any thread).
 */
#include "net/http_parse.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/names.h"
#include "net/http.h"
#include "net/server.h"

/* ---- header access ------------------------------------------------------ */

const char *http_header(const struct http_req *r, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (int i = 0; i < r->nhdrs; i++) {
        const struct http_hdr *h = &r->hdrs[i];
        if (h->name_len == nl && strncasecmp(r->head.data + h->name_off, name, nl) == 0) {
            const char *v = r->head.data + h->value_off;
            size_t vl = h->value_len;
            while (vl && (*v == ' ' || *v == '\t')) { v++; vl--; }
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
            if (len) *len = vl;
            return v;
        }
    }
    if (len) *len = 0;
    return NULL;
}

long http_query(const struct http_req *r, const char *name, char *out, size_t cap)
{
    return http_query_in(r->query, r->query_len, name, out, cap);
}

long http_query_in(const char *query, size_t qlen, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    if (!query) return -1;
    const char *q = query, *end = query + qlen;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - q) == nl && memcmp(q, name, nl) == 0) {
            const char *v = eq ? eq + 1 : pe;
            size_t j = 0;
            for (const char *p = v; p < pe; p++) {
                char ch = *p;
                if (ch == '\0') return -2;  /* llhttp refuses one in a URL; never in a value */
                if (ch == '+') ch = ' ';
                else if (ch == '%') {
                    char tmp[2];
                    if (pe - p < 3 || name_pct_decode(p, 3, tmp, 1) != 1) {
                        /* %2F is fine inside a query value */
                        if (pe - p >= 3 && (p[1] == '2') && (p[2] == 'F' || p[2] == 'f')) { ch = '/'; p += 2; goto put; }
                        return -2;
                    }
                    ch = tmp[0];
                    p += 2;
                }
            put:
                if (j + 1 >= cap) return -2;
                out[j++] = ch;
            }
            out[j] = '\0';
            return (long)j;
        }
        q = pe + 1;
    }
    return -1;
}

/* ---- the early answer ---------------------------------------------------- */

void http_early(struct http_req *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    r->early_status = status;
    r->early_code = code;
    va_start(ap, fmt);
    vsnprintf(r->early_msg, sizeof r->early_msg, fmt, ap);
    va_end(ap);
}

/* ---- what llhttp leaves to its user -------------------------------------
 *
 * llhttp's strict build rejects bare CR or LF, junk after chunk data, bad
 * tokens and conflicting framing, but by design lets through a few things
 * RFC 9112 asks the server to refuse: obs-fold (a header line continued on
 * the next line after SP or HTAB, §5.2), empty header names, HTTP/0.9 and
 * versions other than 1.x, a missing, repeated or malformed Host (§3.2),
 * Transfer-Encoding in HTTP/1.0 or with codings other than chunked (§6.1).
 * Those checks live here; each failure answers 400 (505, 501 where the RFC
 * names those) and closes.
 *
 * obs-fold cannot be seen in llhttp's callbacks (the CRLF SP is dropped and
 * the value goes on as if nothing happened), so the raw bytes of the header
 * and trailer sections are checked as they pass: every header callback
 * checks the input from where the last one stopped up to the end of its
 * span, and http_parse() checks the rest of each input piece, so a fold
 * split across two reads is still seen. The sections hold a few KiB at most
 * and each byte is looked at once. */

static bool fold_check(struct http_req *r, const char *from, const char *to)
{
    for (const char *q = from; q < to; q++) {
        if (r->scan_lf && (*q == ' ' || *q == '\t')) {
            http_early(r, 400, "bad_request", "malformed HTTP request: obsolete line folding (obs-fold) in a header");
            return false;
        }
        r->scan_lf = *q == '\n';
    }
    return true;
}

/* Checks the raw input up to the end of the span [at, at+len). */
int http_fold_scan(struct conn *c, struct http_req *r, const char *at, size_t len)
{
    const char *from;
    if (r->scan_restart) {
        r->scan_restart = false;
        r->scan_lf = false;
        from = at;
    } else {
        from = r->scan_gen == c->feed_gen ? r->scan_at : c->feed_lo;
    }
    if (!fold_check(r, from, at + len)) return HPE_USER;
    r->scan_at = at + len;
    r->scan_gen = c->feed_gen;
    return 0;
}

llhttp_errno_t http_parse(struct conn *c, const char *data, size_t len)
{
    c->feed_lo = data;
    c->feed_gen++;
    llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
    struct http_req *r = c->req;
    /* the unchecked end of a piece that ended inside a header section */
    if (err == HPE_OK && r && r->scan_on && !r->scan_restart) {
        const char *from = r->scan_gen == c->feed_gen ? r->scan_at : data;
        if (!fold_check(r, from, data + len)) return HPE_USER;
    }
    return err;
}

/* RFC 9110 token characters (header names) */
bool http_is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* ---- reading a parsed request ------------------------------------------- */

/* The client's address. Direct: the TCP peer. Through a reverse proxy the
 * operator trusts (--trusted-proxies): X-Forwarded-For read from the right,
 * skipping the trusted hops, so the first address no trusted proxy added
 * itself is the client (a client can prepend anything it likes, but not
 * append after what the proxy appends). Rate limits, audit entries and the
 * access log use it. */
void http_client_addr(struct http_req *r)
{
    const struct config *cfg = r->srv->cfg;
    const char *peer = r->conn ? r->conn->peer : "?";
    const char *colon = strrchr(peer, ':');
    size_t pl = colon ? (size_t)(colon - peer) : strlen(peer);
    snprintf(r->client, sizeof r->client, "%s", peer);
    snprintf(r->client_ip, sizeof r->client_ip, "%.*s", (int)pl, peer);
    if (!cfg->n_trusted_proxies || !cidr_match(cfg->trusted_proxies, cfg->n_trusted_proxies, peer, pl)) return;
    /* every X-Forwarded-For line, as one list, right to left */
    for (int h = r->nhdrs - 1; h >= 0; h--) {
        const struct http_hdr *x = &r->hdrs[h];
        if (!str_ieq(r->head.data + x->name_off, x->name_len, "X-Forwarded-For")) continue;
        const char *b = r->head.data + x->value_off, *e = b + x->value_len;
        while (e > b) {
            const char *comma = e;
            while (comma > b && comma[-1] != ',') comma--;
            const char *s = comma, *t = e;
            while (s < t && (*s == ' ' || *s == '\t')) s++;
            while (t > s && (t[-1] == ' ' || t[-1] == '\t')) t--;
            e = comma > b ? comma - 1 : b;
            struct cidr one;
            if (t == s || !cidr_parse(s, (size_t)(t - s), &one) || memchr(s, '/', (size_t)(t - s))) return;  /* garbage: stop */
            if (cidr_contains(cfg->trusted_proxies, cfg->n_trusted_proxies, one.family, one.addr)) continue;
            snprintf(r->client_ip, sizeof r->client_ip, "%.*s", (int)(t - s), s);
            snprintf(r->client, sizeof r->client, "%s", r->client_ip);
            return;
        }
    }
}

/* URL: origin-form "/path?query", or absolute-form "http://host/path" */
void http_split_target(struct http_req *r)
{
    const char *url = r->head.data + r->url_off;
    size_t ulen = r->url_len;
    size_t scheme = ulen > 7 && strncasecmp(url, "http://", 7) == 0 ? 7 : ulen > 8 && strncasecmp(url, "https://", 8) == 0 ? 8 : 0;
    if (scheme) {
        const char *s = url + scheme;
        while (s < url + ulen && *s != '/' && *s != '?') s++;
        ulen -= (size_t)(s - url);
        url = s;
    }
    const char *qm = memchr(url, '?', ulen);
    r->path = url;
    r->path_len = qm ? (size_t)(qm - url) : ulen;
    r->query = qm ? qm + 1 : NULL;
    r->query_len = qm ? ulen - r->path_len - 1 : 0;
    if (r->path_len == 0) { r->path = "/"; r->path_len = 1; }
}

/* RFC 3986 authority without userinfo: uri-host [ ":" port ]. Empty is
 * allowed (RFC 9112 §3.2: a target without an authority). */
static bool host_valid(const char *v, size_t len)
{
    size_t i = 0;
    if (len && v[0] == '[') {                       /* IP-literal */
        for (i = 1; i < len && v[i] != ']'; i++)
            if (!isxdigit((unsigned char)v[i]) && !strchr(":.vV", v[i])) return false;
        if (i == len || i == 1) return false;
        i++;
    } else {
        for (; i < len && v[i] != ':'; i++) {
            unsigned char ch = (unsigned char)v[i];
            if (isalnum(ch) || strchr("-._~!$&'()*+,;=", ch)) continue;
            if (ch == '%' && i + 2 < len && isxdigit((unsigned char)v[i + 1]) && isxdigit((unsigned char)v[i + 2])) {
                i += 2;
                continue;
            }
            return false;
        }
    }
    if (i == len) return true;
    if (v[i] != ':' || len - i - 1 > 5) return false;
    for (i++; i < len; i++)
        if (!isdigit((unsigned char)v[i])) return false;
    return true;
}

/* The request checks of RFC 9112 that llhttp leaves to its user (see
 * "what llhttp leaves to its user" above). Returns false with early_*
 * set; the caller then answers and closes. */
bool http_request_valid(struct http_req *r, llhttp_t *p)
{
    int major = llhttp_get_http_major(p), minor = llhttp_get_http_minor(p);
    if (major == 0) {
        http_early(r, 400, "bad_request", "malformed HTTP request: HTTP/0.9 is not supported");
        return false;
    }
    if (major != 1 || minor > 1) {
        http_early(r, 505, "http_version_not_supported", "HTTP/%d.%d is not supported; use HTTP/1.1", major, minor);
        return false;
    }
    /* request-target forms (§3.2): origin, absolute, asterisk (OPTIONS),
     * authority (CONNECT) */
    const char *url = r->head.data + r->url_off;
    size_t ulen = r->url_len;
    bool absolute = (ulen > 7 && strncasecmp(url, "http://", 7) == 0) || (ulen > 8 && strncasecmp(url, "https://", 8) == 0);
    bool ok = (ulen && url[0] == '/') || absolute || (r->method == HTTP_OPTIONS && ulen == 1 && url[0] == '*') ||
              r->method == HTTP_CONNECT;
    if (!ok) {
        http_early(r, 400, "bad_request", "malformed HTTP request: the request target must be a path (\"/...\") or an absolute URL");
        return false;
    }
    int hosts = 0, host_i = -1;
    bool te = false;
    for (int i = 0; i < r->nhdrs; i++) {
        const struct http_hdr *h = &r->hdrs[i];
        const char *name = r->head.data + h->name_off;
        if (str_ieq(name, h->name_len, "Host")) {
            hosts++;
            host_i = i;
        } else if (str_ieq(name, h->name_len, "Transfer-Encoding")) {
            te = true;
            /* every coding must be chunked: llhttp already refuses a list
             * whose last one is not, and chunked twice */
            const char *v = r->head.data + h->value_off, *e = v + h->value_len;
            while (v < e) {
                const char *comma = memchr(v, ',', (size_t)(e - v));
                const char *a = v, *b = comma ? comma : e;
                while (a < b && (*a == ' ' || *a == '\t')) a++;
                while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
                if (b > a && !str_ieq(a, (size_t)(b - a), "chunked")) {
                    http_early(r, 501, "not_implemented", "transfer coding '%.*s' is not supported (only chunked)",
                               (int)MIN(b - a, 40), a);
                    return false;
                }
                v = comma ? comma + 1 : e;
            }
        }
    }
    if (te && minor == 0) {
        http_early(r, 400, "bad_request", "malformed HTTP request: Transfer-Encoding in an HTTP/1.0 request");
        return false;
    }
    if (hosts == 0 && minor == 1) {
        http_early(r, 400, "bad_request", "malformed HTTP request: an HTTP/1.1 request needs a Host header");
        return false;
    }
    if (hosts > 1) {
        http_early(r, 400, "bad_request", "malformed HTTP request: more than one Host header");
        return false;
    }
    if (hosts == 1) {
        const struct http_hdr *h = &r->hdrs[host_i];
        const char *v = r->head.data + h->value_off;
        size_t vl = h->value_len;
        while (vl && (*v == ' ' || *v == '\t')) { v++; vl--; }
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
        if (!host_valid(v, vl)) {
            http_early(r, 400, "bad_request", "malformed HTTP request: invalid Host header");
            return false;
        }
    }
    return true;
}
