/* fuzz_lists.c - the query parsers of the list routes, against a model.
 *
 * The input is a raw query string (what follows '?'). It goes through
 * http_query_in(), api_list_parse() for every kind of cursor a list has,
 * and changes_query_parse() (GET /changes), and each answer is compared
 * with a model written here from the documented rules (docs/api.md,
 * Conventions), not from the code: the first parameter of that exact name
 * counts; '+' is a space and %XX a byte, but a bad escape or an escaped NUL
 * makes the value malformed; limit is 1 to 1000 in decimal digits (at most
 * 20 of them), 100 when absent; a cursor must be an id of the list's kind;
 * anything else is refused. An accepted page must also come back the same
 * when its own values are encoded into a new query. Aborts on any
 * difference. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/util.h"
#include "net/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *in_text;
static size_t in_len;

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_lists: %s%s%s\nquery: \"%.*s\"\n", what, detail ? ": " : "", detail ? detail : "",
            (int)MIN(in_len, 2000), in_text);
    abort();
}

/* ---- the model ----------------------------------------------------------- */

enum { M_ABSENT = -1, M_BAD = -2 };

static int hexv(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* the value of the first parameter called name, decoded into out (cap
 * bytes with its NUL): its length, M_ABSENT or M_BAD */
static long m_param(const char *q, size_t n, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name), i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && q[j] != '&') j++;
        size_t k = i;
        while (k < j && q[k] != '=') k++;
        if (k - i == nl && !memcmp(q + i, name, nl)) {
            size_t len = 0;
            for (size_t p = k + 1; p < j; p++) {
                char c = q[p];
                if (c == '%') {
                    if (p + 2 >= j || hexv(q[p + 1]) < 0 || hexv(q[p + 2]) < 0) return M_BAD;
                    c = (char)(hexv(q[p + 1]) * 16 + hexv(q[p + 2]));
                    if (c == '\0') return M_BAD;
                    p += 2;
                } else if (c == '+') {
                    c = ' ';
                } else if (c == '\0') {
                    return M_BAD;            /* raw or escaped, never in a value */
                }
                if (len + 1 >= cap) return M_BAD;
                out[len++] = c;
            }
            out[len] = '\0';
            return (long)len;
        }
        i = j + 1;
    }
    return M_ABSENT;
}

static bool all_digits(const char *s, size_t n)
{
    if (n == 0 || n > 20) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

/* a whole number of at most 20 digits, no more than max */
static bool m_number(const char *s, size_t n, uint64_t max, uint64_t *v)
{
    if (!all_digits(s, n)) return false;
    /* compared as decimal text: no arithmetic to overflow */
    char mx[24], t[24];
    size_t ml = (size_t)snprintf(mx, sizeof mx, "%llu", (unsigned long long)max);
    while (n > 1 && s[0] == '0') {
        s++;
        n--;
    }
    if (n > ml || (n == ml && memcmp(s, mx, n) > 0)) return false;
    memcpy(t, s, n);
    t[n] = '\0';
    *v = strtoull(t, NULL, 10);
    return true;
}

static bool in_set(char c, const char *set) { return c && strchr(set, c); }

#define LOWER "abcdefghijklmnopqrstuvwxyz"
#define UPPER "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define DIGIT "0123456789"

/* ^[first][rest]{0,max-1}$ */
static bool m_name(const char *s, size_t n, const char *first, const char *rest, size_t max)
{
    if (n < 1 || n > max || !in_set(s[0], first)) return false;
    for (size_t i = 1; i < n; i++)
        if (!in_set(s[i], rest)) return false;
    return true;
}

static bool m_ulid(const char *s, size_t n)
{
    return n == 26 && in_set(s[0], "01234567") && m_name(s, n, "01234567", "0123456789ABCDEFGHJKMNPQRSTVWXYZ", 26);
}

static bool m_cursor(enum list_cursor kind, const char *s, size_t n, uint64_t *num)
{
    switch (kind) {
    case LIST_CURSOR_SPACE:
    case LIST_CURSOR_PEER: return m_name(s, n, LOWER DIGIT, LOWER DIGIT "_-", 63);
    case LIST_CURSOR_COLLECTION: return m_name(s, n, LOWER, LOWER DIGIT "_", 63);
    case LIST_CURSOR_ENTITY: return m_name(s, n, LOWER UPPER DIGIT, LOWER UPPER DIGIT "._:~-", 128);
    case LIST_CURSOR_ULID: return m_ulid(s, n);
    case LIST_CURSOR_NUMBER: return m_number(s, n, INT64_MAX, num) && *num > 0;
    default: return false;
    }
}

/* the documented list rule; 0 or -1 */
static int m_list(const char *q, size_t n, enum list_cursor kind, struct list_page *p)
{
    char v[32];
    memset(p, 0, sizeof *p);
    p->limit = 100;
    long l = m_param(q, n, "limit", v, sizeof v);
    if (l == M_BAD) return -1;
    if (l != M_ABSENT && !(m_number(v, (size_t)l, 1000, &p->limit) && p->limit >= 1)) return -1;
    if (kind == LIST_NO_CURSOR) return 0;
    l = m_param(q, n, "cursor", p->cursor, sizeof p->cursor);
    if (l == M_ABSENT) {
        p->cursor[0] = '\0';
        return 0;
    }
    if (l == M_BAD || !m_cursor(kind, p->cursor, (size_t)l, &p->cursor_num)) return -1;
    return 0;
}

/* ---- checks -------------------------------------------------------------- */

static void check_query_in(const char *q, size_t n)
{
    static const char *const names[] = {"limit", "cursor", "since", "q", "a", ""};
    static const size_t caps[] = {1, 2, 8, 32, 130, 1100};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        for (size_t c = 0; c < ARRAY_SIZE(caps); c++) {
            char got[1100], want[1100];
            long a = http_query_in(q, n, names[i], got, caps[c]);
            long b = m_param(q, n, names[i], want, caps[c]);
            if (a != b) {
                char d[96];
                snprintf(d, sizeof d, "http_query_in(\"%s\", cap %zu) = %ld, the model says %ld", names[i], caps[c], a, b);
                fail("query parameter", d);
            }
            if (a >= 0 && (memcmp(got, want, (size_t)a + 1) || memchr(got, '\0', (size_t)a)))
                fail("query parameter decoded differently", names[i]);
        }
}

static void enc(struct buf *b, const char *s)
{
    static const char hx[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~", c)) {
            buf_putc(b, (char)c);
        } else {
            buf_putc(b, '%');
            buf_putc(b, hx[c >> 4]);
            buf_putc(b, hx[c & 15]);
        }
    }
}

static void check_list(const char *q, size_t n, enum list_cursor kind)
{
    struct list_page got, want;
    char why[160] = "";
    int a = api_list_parse(q, n, kind, &got, why, sizeof why);
    int b = m_list(q, n, kind, &want);
    char d[128];
    snprintf(d, sizeof d, "kind %d: api_list_parse %s, the model %s", (int)kind, a ? "refuses" : "accepts",
             b ? "refuses" : "accepts");
    if (a != b) fail("list paging", d);
    if (a) {
        if (!why[0]) fail("a refusal without a reason", d);
        return;
    }
    if (got.limit != want.limit || got.limit < 1 || got.limit > LIST_MAX) fail("limit differs from the model", d);
    if (strcmp(got.cursor, want.cursor)) fail("cursor differs from the model", d);
    if (kind == LIST_CURSOR_NUMBER && got.cursor_num != want.cursor_num) fail("cursor number differs", d);
    /* what the page says, asked again, is the same page */
    struct buf again;
    buf_init(&again);
    buf_printf(&again, "limit=%llu", (unsigned long long)got.limit);
    if (got.cursor[0]) {
        buf_puts(&again, "&cursor=");
        enc(&again, got.cursor);
    }
    struct list_page p2;
    if (api_list_parse(again.data, again.len, kind, &p2, why, sizeof why) || p2.limit != got.limit ||
        strcmp(p2.cursor, got.cursor) || p2.cursor_num != got.cursor_num)
        fail("a page's own values do not give the same page", again.data);
    buf_free(&again);
}

/* GET /changes, in the documented order of its checks */
static int m_changes(const char *q, size_t n, struct changes_query *cq, const char **code)
{
    char v[1100];
    long l;
    memset(cq, 0, sizeof *cq);
    cq->timeout_ms = 30000;
    cq->bodies = true;
    *code = "invalid_parameter";
    struct list_page pg;
    if (m_list(q, n, LIST_NO_CURSOR, &pg)) return -1;
    cq->limit = pg.limit;
    l = m_param(q, n, "since", v, sizeof v);
    if (l == M_BAD || (l >= 0 && !m_number(v, (size_t)l, INT64_MAX, &cq->since))) return -1;
    l = m_param(q, n, "bodies", v, sizeof v);
    if (l != M_ABSENT) {
        if (l >= 0 && (!strcmp(v, "true") || !strcmp(v, "1"))) cq->bodies = true;
        else if (l >= 0 && (!strcmp(v, "false") || !strcmp(v, "0"))) cq->bodies = false;
        else return -1;
    }
    l = m_param(q, n, "collections", v, sizeof v);
    if (l == M_BAD) return -1;
    for (long i = 0; l > 0 && i < l;) {  /* comma-separated; empty items are skipped */
        long j = i;
        while (j < l && v[j] != ',') j++;
        if (j > i) {
            if (!m_name(v + i, (size_t)(j - i), LOWER, LOWER DIGIT "_", 63)) {
                *code = "invalid_name";
                return -1;
            }
            if (cq->ncoll == CHANGES_MAX_COLLECTIONS) return -1;
            memcpy(cq->coll[cq->ncoll], v + i, (size_t)(j - i));
            cq->coll[cq->ncoll++][j - i] = '\0';
        }
        i = j + 1;
    }
    l = m_param(q, n, "exclude_origin", v, sizeof v);
    if (l != M_ABSENT) {
        if (l < 0 || !m_ulid(v, (size_t)l)) return -1;
        memcpy(cq->exclude_origin, v, 27);
    }
    l = m_param(q, n, "style", v, sizeof v);
    if (l != M_ABSENT) {
        if (l >= 0 && !strcmp(v, "all_revs")) cq->all_revs = true;
        else if (l < 0 || strcmp(v, "main_only")) return -1;
    }
    l = m_param(q, n, "deleted", v, sizeof v);
    if (l != M_ABSENT) {
        if (l >= 0 && !strcmp(v, "only")) cq->deleted_only = true;
        else if (l < 0 || strcmp(v, "any")) return -1;
    }
    l = m_param(q, n, "timeout_ms", v, sizeof v);
    if (l == M_BAD || (l >= 0 && !m_number(v, (size_t)l, 300000, &cq->timeout_ms))) return -1;
    l = m_param(q, n, "feed", v, sizeof v);
    if (l == M_ABSENT || (l >= 0 && !strcmp(v, "normal"))) cq->feed = CHANGES_FEED_NORMAL;
    else if (l >= 0 && !strcmp(v, "longpoll")) cq->feed = CHANGES_FEED_LONGPOLL;
    else if (l >= 0 && (!strcmp(v, "sse") || !strcmp(v, "eventsource"))) cq->feed = CHANGES_FEED_SSE;
    else return -1;
    return 0;
}

static void check_changes(const char *q, size_t n)
{
    struct changes_query got, want;
    const char *gc = NULL, *wc = NULL;
    char why[160] = "";
    int a = changes_query_parse(q, n, &got, &gc, why, sizeof why);
    int b = m_changes(q, n, &want, &wc);
    if (a != b) fail("GET /changes query", a ? "changes_query_parse refuses, the model accepts" : "changes_query_parse accepts, the model refuses");
    if (a) {
        if (strcmp(gc, wc)) fail("GET /changes refuses with another code", gc);
        if (!why[0]) fail("a refusal without a reason", NULL);
        return;
    }
    if (got.since != want.since || got.limit != want.limit || got.timeout_ms != want.timeout_ms ||
        got.bodies != want.bodies || got.all_revs != want.all_revs || got.deleted_only != want.deleted_only ||
        got.feed != want.feed ||
        got.ncoll != want.ncoll || strcmp(got.exclude_origin, want.exclude_origin))
        fail("GET /changes query parsed differently", NULL);
    for (int i = 0; i < got.ncoll; i++)
        if (strcmp(got.coll[i], want.coll[i])) fail("GET /changes collections differ", got.coll[i]);
}

static void check_u64(const char *s, size_t n)
{
    static const uint64_t maxes[] = {0, 1000, 300000, INT64_MAX, UINT64_MAX};
    for (size_t i = 0; i < ARRAY_SIZE(maxes); i++) {
        uint64_t a = 7, b = 7;
        bool ga = parse_u64(s, n, maxes[i], &a) == 0, gb = m_number(s, n, maxes[i], &b);
        if (ga != gb || (ga && a != b)) fail("parse_u64 differs from the model", NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy so ASan sees any read past the end */
    char *q = malloc(size ? size : 1);
    if (!q) return 0;
    memcpy(q, data, size);
    in_text = q;
    in_len = size;
    check_query_in(q, size);
    for (int k = LIST_NO_CURSOR; k <= LIST_CURSOR_NUMBER; k++) check_list(q, size, (enum list_cursor)k);
    check_changes(q, size);
    check_u64(q, size < 24 ? size : 24);
    /* no query at all: the defaults */
    struct list_page p;
    char why[160];
    if (api_list_parse(NULL, 0, LIST_CURSOR_ULID, &p, why, sizeof why) || p.limit != LIST_DEFAULT || p.cursor[0])
        fail("no query is not the first page of 100", NULL);
    free(q);
    return 0;
}
