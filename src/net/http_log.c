/* http_log.c - the access log line of a finished request, and the
 * redaction of its target (no credential reaches a log). Whatever is
 * counted per request is the done hook's business (struct http_hooks):
 * this file only calls it.
 *
 * A leaf under http.c: nothing here calls back into the connection.
 * Loop thread, except http_redact_target (pure: any thread).
 */
#include "net/http_log.h"

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "net/http.h"
#include "net/server.h"

/* Redaction of the request target for the access log.
 *
 * A client may put a token anywhere: under a name we know (?access_token=),
 * under one we do not (?Access_Token=, ?access%5Ftoken=, ?q=), as a path
 * parameter (;access_token=) or percent-encoded once or twice. So values
 * are judged by what they look like, after decoding, whatever their name:
 * a snapsync token ("sst_" + base64url), or a long random-looking run of
 * base64/hex/alphanumeric characters (another service's key, a JWT, a
 * signature). Names that say "secret" (token, key, password...) are
 * redacted whatever their value. Path segments themselves are names and
 * ids the routes define (entity ids, sha256, ULIDs): only a snapsync token
 * is taken out of them. A false positive costs a less useful log line, a
 * false negative leaks a credential, so the rules lean to redacting. */

#define REDACTED "REDACTED"

static bool is_b64url(unsigned char ch) { return isalnum(ch) || ch == '-' || ch == '_'; }
static bool is_runc(unsigned char ch) { return isalnum(ch) || (ch && strchr("+/=_-.~", ch)); }

/* Shannon entropy of s in bits per byte */
static double entropy(const char *s, size_t n)
{
    unsigned cnt[256] = {0};
    for (size_t i = 0; i < n; i++) cnt[(unsigned char)s[i]]++;
    double h = 0;
    for (int i = 0; i < 256; i++) {
        if (!cnt[i]) continue;
        double q = (double)cnt[i] / (double)n;
        h -= q * log2(q);
    }
    return h;
}

/* One run of base64/base64url/JWT characters: random-looking? */
static bool secret_run(const char *s, size_t n)
{
    if (n < 20) return false;
    bool up = false, lo = false, dg = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        up |= isupper(ch) != 0;
        lo |= islower(ch) != 0;
        dg |= isdigit(ch) != 0;
    }
    /* mixed case and digits: base64, base62, JWT */
    if (up && lo && dg && entropy(s, n) >= 3.5) return true;
    /* its letters-and-digits pieces: hex keys and digests, base32/36 keys */
    for (size_t i = 0; i < n;) {
        size_t j = i;
        bool hex = true, let = false, dig = false;
        while (j < n && isalnum((unsigned char)s[j])) {
            hex &= isxdigit((unsigned char)s[j]) != 0;
            let |= isalpha((unsigned char)s[j]) != 0;
            dig |= isdigit((unsigned char)s[j]) != 0;
            j++;
        }
        size_t m = j - i;
        if (m >= 24 && let && dig && !(m == 26 && ulid_valid(s + i, m))) {   /* ULIDs are our ids */
            double h = entropy(s + i, m);
            if (hex && m >= 32 && h >= 3.0) return true;
            if (h >= 3.7) return true;
        }
        i = j + 1;
    }
    return false;
}

/* A snapsync token, or most of one, anywhere in s */
static bool has_sst(const char *s, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i++) {
        if (strncasecmp(s + i, "sst_", 4)) continue;
        size_t k = i + 4;
        while (k < n && is_b64url((unsigned char)s[k])) k++;
        if (k - i - 4 >= 16) return true;
    }
    return false;
}

static bool looks_secret(const char *s, size_t n, bool tokens_only)
{
    if (has_sst(s, n)) return true;
    if (tokens_only) return false;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && is_runc((unsigned char)s[j])) j++;
        if (secret_run(s + i, j - i)) return true;
        i = j + 1;
    }
    return false;
}

static int hexv(unsigned char ch)
{
    return isdigit(ch) ? ch - '0' : isxdigit(ch) ? tolower(ch) - 'a' + 10 : -1;
}

/* One round of percent- and '+'-decoding of s into out (n bytes at
 * least); returns the decoded length. Malformed escapes stay as sent. */
static size_t pct_round(const char *s, size_t n, char *out)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexv((unsigned char)s[i + 1]) >= 0 && hexv((unsigned char)s[i + 2]) >= 0) {
            out[j++] = (char)(hexv((unsigned char)s[i + 1]) * 16 + hexv((unsigned char)s[i + 2]));
            i += 2;
        } else {
            out[j++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    return j;
}

/* looks_secret() on s as sent and after each of up to three rounds of
 * decoding (%2573st_ is sst_ decoded twice). */
static bool value_secret(const char *s, size_t n, bool tokens_only)
{
    if (looks_secret(s, n, tokens_only)) return true;
    char stack[512];
    char *a = 2 * n + 2 <= sizeof stack ? stack : xmalloc(2 * n + 2), *b = a + n + 1;
    const char *cur = s;
    bool hit = false;
    for (int round = 0; round < 3 && !hit; round++) {
        char *dst = round % 2 ? b : a;
        size_t m = pct_round(cur, n, dst);
        if (m == n && !memchr(cur, '+', n)) break;  /* nothing left to decode */
        n = m;
        cur = dst;
        hit = looks_secret(cur, n, tokens_only);
    }
    if (a != stack) free(a);
    return hit;
}

/* Parameter names that announce a secret, whatever the value. */
static bool name_sensitive(const char *s, size_t n)
{
    static const char *const parts[] = {"token", "secret", "passw", "apikey", "api_key", "api-key",
                                        "auth", "credential", "signature", "session"};
    static const char *const whole[] = {"key", "sig", "pw", "pwd"};
    char d[128], tmp[128];
    if (n >= sizeof d) return false;
    memcpy(d, s, n);
    for (int round = 0; round < 3; round++) {       /* access%255Ftoken */
        size_t m = pct_round(d, n, tmp);
        if (m == n) break;
        memcpy(d, tmp, m);
        n = m;
    }
    for (size_t i = 0; i < n; i++) d[i] = (char)tolower((unsigned char)d[i]);
    d[n] = '\0';
    for (size_t i = 0; i < ARRAY_SIZE(parts); i++)
        if (strstr(d, parts[i])) return true;
    for (size_t i = 0; i < ARRAY_SIZE(whole); i++)
        if (!strcmp(d, whole[i])) return true;
    return false;
}

/* "name=value" or "value": appended as sent, or with the value replaced
 * (the whole parameter when it has no name or its name is a secret). */
static void redact_param(struct buf *out, const char *s, size_t n)
{
    const char *eq = memchr(s, '=', n);
    if (!eq) {
        if (value_secret(s, n, false)) buf_puts(out, REDACTED);
        else buf_append(out, s, n);
        return;
    }
    size_t nl = (size_t)(eq - s);
    if (value_secret(s, nl, false)) {
        buf_puts(out, REDACTED "=" REDACTED);
        return;
    }
    buf_append(out, s, nl + 1);
    if (name_sensitive(s, nl) || value_secret(eq + 1, n - nl - 1, false)) buf_puts(out, REDACTED);
    else buf_append(out, eq + 1, n - nl - 1);
}

void http_redact_target(struct buf *out, const char *path, size_t plen, const char *query, size_t qlen)
{
    /* path: segments, each "name;param;param" */
    for (size_t i = 0; i < plen;) {
        size_t j = i;
        while (j < plen && path[j] != '/') j++;
        const char *seg = path + i;
        size_t sl = j - i;
        const char *semi = memchr(seg, ';', sl);
        size_t head = semi ? (size_t)(semi - seg) : sl;
        if (value_secret(seg, head, true)) buf_puts(out, REDACTED);
        else buf_append(out, seg, head);
        for (size_t k = head; k < sl;) {            /* seg[k] is ';' */
            size_t e = k + 1;
            while (e < sl && seg[e] != ';') e++;
            buf_putc(out, ';');
            redact_param(out, seg + k + 1, e - k - 1);
            k = e;
        }
        if (j < plen) buf_putc(out, '/');
        i = j + 1;
    }
    if (!query) return;
    buf_putc(out, '?');
    /* '&' and ';' both separate: a secret must not hide behind either */
    for (size_t i = 0; i <= qlen;) {
        size_t j = i;
        while (j < qlen && query[j] != '&' && query[j] != ';') j++;
        redact_param(out, query + i, j - i);
        if (j < qlen) buf_putc(out, query[j]);
        i = j + 1;
    }
}

/* Path and query for the log: redacted whole, then shortened. */
static void log_target(struct buf *b, const struct http_req *r)
{
    struct buf t, q;
    buf_init(&t);
    buf_init(&q);
    http_redact_target(&t, r->path, r->path_len, NULL, 0);
    if (r->query) http_redact_target(&q, "", 0, r->query, r->query_len);
    if (t.len > 512) t.len = 512;
    if (q.len) buf_append(&t, q.data, MIN(q.len, 1025));
    json_str(b, t.data, t.len);
    buf_free(&t);
    buf_free(&q);
}

void http_access_log(struct http_req *r)
{
    uint64_t dur_us = (now_ns_mono() - r->t_start_ns) / 1000;
    assert(r->srv->hooks && r->srv->hooks->done);
    r->srv->hooks->done(r, dur_us);
    if (!r->srv->cfg->access_log) return;
    static struct buf f;
    buf_reset(&f);
    buf_puts(&f, "\"rid\":");
    json_cstr(&f, r->rid);
    buf_puts(&f, ",\"method\":\"");
    buf_puts(&f, r->path ? llhttp_method_name((llhttp_method_t)r->method) : "-");
    buf_puts(&f, "\",\"path\":");
    if (r->path) log_target(&f, r);
    else buf_puts(&f, "null");
    buf_puts(&f, ",\"route\":");
    if (r->route) json_cstr(&f, r->route->name);
    else buf_puts(&f, "null");
    buf_printf(&f, ",\"status\":%d,\"bytes\":%llu,\"dur_ms\":%llu.%03llu,\"client\":", r->status,
               (unsigned long long)r->bytes_out, (unsigned long long)(dur_us / 1000),
               (unsigned long long)(dur_us % 1000));
    json_cstr(&f, r->client[0] ? r->client : r->conn ? r->conn->peer : "-");
    log_raw(LOG_INFO, "access", f.data, f.len);
}

