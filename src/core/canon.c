/* canon.c - canonical JSON without building a DOM of malloc'd nodes.
 *
 * Parses RFC 8259 JSON into a flat array of nodes (one allocation), then
 * writes it minified with object keys sorted (byte order, then length).
 * Integers print as int64, reals in their shortest round-trip form, strings
 * re-escaped minimally (as jansson does). Bodies that arrive inside a
 * larger document (pushes) are dumped by jansson and passed through here
 * again, so every path gives the same bytes for the same content:
 * tests/unit/test_canon.c checks canon(x) == canon(jansson(x)) on a corpus.
 * Pure function, any thread.
 *
 * The same parser also serves readers of larger texts: canon_parse keeps the
 * nodes for member lookups and canon_emit of any node; canon_stream parses
 * a top-level object one member at a time, and an array member one element
 * at a time, reusing one node array (a sync page: one entity's nodes in
 * memory, whatever the page's size).
 */
#include "core/canon.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

enum ntype { N_NULL, N_TRUE, N_FALSE, N_INT, N_REAL, N_STR, N_ARR, N_OBJ };

struct node {
    uint8_t type;
    uint32_t off, len;               /* N_STR: decoded bytes in sbuf; numbers: raw text in input */
    uint32_t first;                  /* containers: first child, 0 = none (node 0 is the root) */
    uint32_t next;                   /* next sibling, 0 = none */
    uint32_t count;                  /* containers: children (objects: key+value pairs count as 2) */
    union {
        int64_t i;                   /* N_INT */
        double d;                    /* N_REAL */
    };
};

struct parser {
    const char *s, *end, *p;
    struct node *n;
    uint32_t nn, cap;
    struct buf sbuf;                 /* decoded strings */
    int depth, max_depth;
    struct json_err *err;
    const char *start;
};

static int fail(struct parser *ps, const char *code, const char *what)
{
    if (!ps->err->code[0]) {
        size_t pos = (size_t)(ps->p - ps->start);
        size_t line = 1, col = 1;
        for (const char *q = ps->start; q < ps->p && q < ps->end; q++) {
            if (*q == '\n') { line++; col = 1; }
            else col++;
        }
        snprintf(ps->err->code, sizeof ps->err->code, "%s", code);
        snprintf(ps->err->message, sizeof ps->err->message, "invalid JSON at line %zu column %zu (byte %zu): %s",
                 line, col, pos, what);
    }
    return -1;
}

static uint32_t new_node(struct parser *ps, uint8_t type)
{
    if (ps->nn == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 64;
        ps->n = xrealloc(ps->n, ps->cap * sizeof *ps->n);
    }
    struct node *n = &ps->n[ps->nn];
    memset(n, 0, sizeof *n);
    n->type = type;
    return ps->nn++;
}

static void ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(struct buf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 63)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 63)); u[2] = (char)(0x80 | (cp & 63)); n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 63));
        u[2] = (char)(0x80 | ((cp >> 6) & 63)); u[3] = (char)(0x80 | (cp & 63)); n = 4;
    }
    buf_append(b, u, n);
}

static int parse_string(struct parser *ps, uint32_t *off, uint32_t *len)
{
    ps->p++;                         /* opening quote */
    *off = (uint32_t)ps->sbuf.len;
    for (;;) {
        const char *run = ps->p;
        while (ps->p < ps->end && *ps->p != '"' && *ps->p != '\\' && (unsigned char)*ps->p >= 0x20 &&
               (unsigned char)*ps->p < 0x80)
            ps->p++;
        if (ps->p > run) buf_append(&ps->sbuf, run, (size_t)(ps->p - run));
        if (ps->p >= ps->end) return fail(ps, "invalid_json", "unterminated string");
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') { ps->p++; break; }
        if (c < 0x20) return fail(ps, "invalid_json", "control character in a string");
        if (c >= 0x80) {
            size_t l = utf8_seq_len((const unsigned char *)ps->p, (size_t)(ps->end - ps->p));
            if (!l) return fail(ps, "invalid_json", "invalid UTF-8 in a string");
            buf_append(&ps->sbuf, ps->p, l);
            ps->p += l;
            continue;
        }
        /* escape */
        if (ps->end - ps->p < 2) return fail(ps, "invalid_json", "unterminated escape");
        char e = ps->p[1];
        ps->p += 2;
        switch (e) {
        case '"': buf_putc(&ps->sbuf, '"'); break;
        case '\\': buf_putc(&ps->sbuf, '\\'); break;
        case '/': buf_putc(&ps->sbuf, '/'); break;
        case 'b': buf_putc(&ps->sbuf, '\b'); break;
        case 'f': buf_putc(&ps->sbuf, '\f'); break;
        case 'n': buf_putc(&ps->sbuf, '\n'); break;
        case 'r': buf_putc(&ps->sbuf, '\r'); break;
        case 't': buf_putc(&ps->sbuf, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (ps->end - ps->p < 4 || hex4(ps->p, &cp) < 0) return fail(ps, "invalid_json", "invalid \\u escape");
            ps->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' || hex4(ps->p + 2, &lo) < 0 ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return fail(ps, "invalid_json", "invalid UTF-16 surrogate pair");
                ps->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(ps, "invalid_json", "invalid UTF-16 surrogate");
            }
            put_utf8(&ps->sbuf, cp);
            break;
        }
        default: return fail(ps, "invalid_json", "invalid escape");
        }
    }
    *len = (uint32_t)(ps->sbuf.len - *off);
    buf_append(&ps->sbuf, "", 1);   /* NUL after each string: keys sort with strcmp */
    return 0;
}

static int parse_number(struct parser *ps, uint32_t idx)
{
    const char *s = ps->p;
    const char *p = s;
    bool real = false;
    if (p < ps->end && *p == '-') p++;
    if (p >= ps->end) return fail(ps, "invalid_json", "invalid number");
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') while (p < ps->end && *p >= '0' && *p <= '9') p++;
    else return fail(ps, "invalid_json", "invalid number");
    if (p < ps->end && *p == '.') {
        real = true;
        p++;
        if (p >= ps->end || *p < '0' || *p > '9') return fail(ps, "invalid_json", "invalid number");
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        real = true;
        p++;
        if (p < ps->end && (*p == '+' || *p == '-')) p++;
        if (p >= ps->end || *p < '0' || *p > '9') return fail(ps, "invalid_json", "invalid number");
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    char tmp[512];
    size_t l = (size_t)(p - s);
    if (l >= sizeof tmp) return fail(ps, "invalid_json", "number too long");
    memcpy(tmp, s, l);
    tmp[l] = '\0';
    struct node *n = &ps->n[idx];
    errno = 0;
    if (!real) {
        n->type = N_INT;
        n->i = strtoll(tmp, NULL, 10);
        if (errno == ERANGE) return fail(ps, "invalid_json", "too big integer");
    } else {
        n->type = N_REAL;
        n->d = strtod(tmp, NULL);
        if (isinf(n->d)) return fail(ps, "invalid_json", "real number overflow");
    }
    ps->p = p;
    return 0;
}

static int parse_value(struct parser *ps, uint32_t idx);

static int parse_container(struct parser *ps, uint32_t idx, bool obj)
{
    if (++ps->depth > ps->max_depth) return fail(ps, "too_deep", "nested too deeply");
    ps->p++;
    ws(ps);
    uint32_t prev = 0;
    char close = obj ? '}' : ']';
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return 0;
    }
    for (;;) {
        ws(ps);
        if (obj) {
            if (ps->p >= ps->end || *ps->p != '"') return fail(ps, "invalid_json", "expected a string key");
            uint32_t k = new_node(ps, N_STR);
            uint32_t off, len;
            if (parse_string(ps, &off, &len) < 0) return -1;
            if (memchr(ps->sbuf.data + off, '\0', len))
                return fail(ps, "invalid_json", "object keys may not contain \\u0000");
            ps->n[k].off = off;
            ps->n[k].len = len;
            if (prev) ps->n[prev].next = k;
            else ps->n[idx].first = k;
            prev = k;
            ps->n[idx].count++;
            ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') return fail(ps, "invalid_json", "expected ':'");
            ps->p++;
            ws(ps);
        }
        uint32_t v = new_node(ps, N_NULL);
        if (parse_value(ps, v) < 0) return -1;
        if (prev) ps->n[prev].next = v;
        else ps->n[idx].first = v;
        prev = v;
        ps->n[idx].count++;
        ws(ps);
        if (ps->p >= ps->end) return fail(ps, "invalid_json", obj ? "unterminated object" : "unterminated array");
        if (*ps->p == ',') { ps->p++; continue; }
        if (*ps->p == close) { ps->p++; break; }
        return fail(ps, "invalid_json", obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    ps->depth--;
    return 0;
}

static int parse_value(struct parser *ps, uint32_t idx)
{
    if (ps->p >= ps->end) return fail(ps, "invalid_json", "unexpected end of input");
    char c = *ps->p;
    switch (c) {
    case '{': ps->n[idx].type = N_OBJ; return parse_container(ps, idx, true);
    case '[': ps->n[idx].type = N_ARR; return parse_container(ps, idx, false);
    case '"': {
        uint32_t off, len;
        if (parse_string(ps, &off, &len) < 0) return -1;
        ps->n[idx].type = N_STR;
        ps->n[idx].off = off;
        ps->n[idx].len = len;
        return 0;
    }
    case 't':
        if (ps->end - ps->p >= 4 && !memcmp(ps->p, "true", 4)) { ps->n[idx].type = N_TRUE; ps->p += 4; return 0; }
        break;
    case 'f':
        if (ps->end - ps->p >= 5 && !memcmp(ps->p, "false", 5)) { ps->n[idx].type = N_FALSE; ps->p += 5; return 0; }
        break;
    case 'n':
        if (ps->end - ps->p >= 4 && !memcmp(ps->p, "null", 4)) { ps->n[idx].type = N_NULL; ps->p += 4; return 0; }
        break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(ps, idx);
    }
    return fail(ps, "invalid_json", "unexpected character");
}

/* ---- output ------------------------------------------------------------ */

static void emit_string(struct buf *b, const char *s, size_t len)
{
    static const char hx[] = "0123456789ABCDEF";
    buf_reserve(b, len + 2);
    buf_putc(b, '"');
    const char *end = s + len;
    while (s < end) {
        const char *run = s;
        while (s < end && *s != '"' && *s != '\\' && (unsigned char)*s >= 0x20) s++;
        if (s > run) buf_append(b, run, (size_t)(s - run));
        if (s >= end) break;
        unsigned char c = (unsigned char)*s++;
        switch (c) {
        case '"': buf_append(b, "\\\"", 2); break;
        case '\\': buf_append(b, "\\\\", 2); break;
        case '\b': buf_append(b, "\\b", 2); break;
        case '\f': buf_append(b, "\\f", 2); break;
        case '\n': buf_append(b, "\\n", 2); break;
        case '\r': buf_append(b, "\\r", 2); break;
        case '\t': buf_append(b, "\\t", 2); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hx[c >> 4], hx[c & 15]};
            buf_append(b, u, 6);
        }
        }
    }
    buf_putc(b, '"');
}

/* Shortest round-trip digits, laid out like Python's repr: fixed notation
 * for exponents -4..15 (with ".0" when integral), else d.ddde[-]x. A
 * function of the value alone, so every path that canonicalizes the same
 * number agrees. */
static void emit_real(struct buf *b, double d)
{
    char sci[64], out[400];
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec - 1, d);
        if (strtod(sci, NULL) == d) break;
    }
    if (prec > 17) prec = 17;
    char *e = strchr(sci, 'e');
    int exp = e ? atoi(e + 1) : 0;
    if (exp < -4 || exp >= 16) {
        *e = '\0';
        snprintf(out, sizeof out, "%se%d", sci, exp);
    } else {
        int decimals = prec - 1 - exp;
        snprintf(out, sizeof out, "%.*f", decimals > 0 ? decimals : 0, d);
        if (!strchr(out, '.')) strcat(out, ".0");
    }
    buf_puts(b, out);
}

struct member { const char *k; uint32_t klen; uint32_t key, val; };

/* byte order, then length (jansson 2.14's order; keys may hold NUL) */
static int member_cmp(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    uint32_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->k, y->k, n);
    if (c) return c;
    return x->klen < y->klen ? -1 : x->klen > y->klen;
}

static void emit(struct parser *ps, uint32_t idx, struct buf *b)
{
    const struct node *n = &ps->n[idx];
    switch (n->type) {
    case N_NULL: buf_append(b, "null", 4); return;
    case N_TRUE: buf_append(b, "true", 4); return;
    case N_FALSE: buf_append(b, "false", 5); return;
    case N_INT: buf_put_i64(b, n->i); return;
    case N_REAL: emit_real(b, n->d); return;
    case N_STR: emit_string(b, ps->sbuf.data + n->off, n->len); return;
    case N_ARR: {
        buf_putc(b, '[');
        bool first = true;
        for (uint32_t c = n->first; c; c = ps->n[c].next) {
            if (!first) buf_putc(b, ',');
            first = false;
            emit(ps, c, b);
        }
        buf_putc(b, ']');
        return;
    }
    case N_OBJ: {
        uint32_t pairs = n->count / 2;
        struct member stackm[16], *m = pairs <= 16 ? stackm : xmalloc(pairs * sizeof *m);
        uint32_t i = 0;
        for (uint32_t c = n->first; c; c = ps->n[ps->n[c].next].next, i++) {
            m[i].key = c;
            m[i].val = ps->n[c].next;
            m[i].k = ps->sbuf.data + ps->n[c].off;
            m[i].klen = ps->n[c].len;
        }
        /* canonical input has its keys in order already: no sort then */
        bool sorted = true;
        for (i = 1; i < pairs && sorted; i++) sorted = member_cmp(&m[i - 1], &m[i]) < 0;
        if (!sorted) qsort(m, pairs, sizeof *m, member_cmp);
        buf_putc(b, '{');
        for (i = 0; i < pairs; i++) {
            if (i) buf_putc(b, ',');
            emit_string(b, m[i].k, m[i].klen);
            buf_putc(b, ':');
            emit(ps, m[i].val, b);
        }
        buf_putc(b, '}');
        if (m != stackm) free(m);
        return;
    }
    }
}

/* Strings are stored NUL-terminated in sbuf so keys compare with strcmp;
 * a duplicate key is an error (as with JSON_REJECT_DUPLICATES). */
static int check_dups(struct parser *ps)
{
    struct member stackm[64];
    for (uint32_t i = 0; i < ps->nn; i++) {
        const struct node *n = &ps->n[i];
        if (n->type != N_OBJ || n->count < 4) continue;
        uint32_t pairs = n->count / 2;
        struct member *m = pairs <= 64 ? stackm : xmalloc(pairs * sizeof *m);
        uint32_t j = 0;
        for (uint32_t c = n->first; c; c = ps->n[ps->n[c].next].next, j++) {
            m[j].k = ps->sbuf.data + ps->n[c].off;
            m[j].klen = ps->n[c].len;
        }
        /* keys in strictly increasing order (canonical input) hold no
         * duplicate: only others are sorted to find out */
        bool increasing = true;
        for (j = 1; j < pairs && increasing; j++) increasing = member_cmp(&m[j - 1], &m[j]) < 0;
        int dup = 0;
        if (!increasing) {
            qsort(m, pairs, sizeof *m, member_cmp);
            for (j = 1; j < pairs && !dup; j++) dup = member_cmp(&m[j - 1], &m[j]) == 0;
        }
        if (m != stackm) free(m);
        if (dup) return -1;
    }
    return 0;
}

/* Parses a whole text into ps (nodes from 0, the root). 0 or -1 with
 * ps->err filled. */
static void parser_init(struct parser *ps, const char *in, size_t len, int max_depth, struct json_err *err)
{
    memset(err, 0, sizeof *err);
    ps->s = ps->p = ps->start = in;
    ps->end = in + len;
    ps->err = err;
    ps->max_depth = max_depth;
    buf_init(&ps->sbuf);
}

static int parse_text(struct parser *ps, const char *in, size_t len, int max_depth, struct json_err *err)
{
    memset(ps, 0, sizeof *ps);
    parser_init(ps, in, len, max_depth, err);
    uint32_t root = new_node(ps, N_NULL);
    ws(ps);
    if (len == 0 || ps->p == ps->end) return fail(ps, "invalid_json", "empty input");
    if (parse_value(ps, root) < 0) return -1;
    ws(ps);
    if (ps->p != ps->end) return fail(ps, "invalid_json", "end of file expected");
    return 0;
}

static int no_dups(struct parser *ps, struct json_err *err)
{
    if (check_dups(ps) == 0) return 0;
    snprintf(err->code, sizeof err->code, "invalid_json");
    snprintf(err->message, sizeof err->message, "duplicate object key");
    return -1;
}

char *json_canonical(const char *in, size_t len, bool want_object, size_t *out_len, struct json_err *err)
{
    struct parser ps;
    char *out = NULL;
    if (parse_text(&ps, in, len, CANON_MAX_DEPTH, err) < 0) goto done;
    if (want_object && ps.n[0].type != N_OBJ) {
        snprintf(err->code, sizeof err->code, "not_an_object");
        snprintf(err->message, sizeof err->message, "the request body must be a JSON object");
        goto done;
    }
    if (no_dups(&ps, err) < 0) goto done;
    struct buf b;
    buf_init(&b);
    buf_reserve(&b, len);
    emit(&ps, 0, &b);
    out = buf_steal(&b, out_len);
done:
    free(ps.n);
    buf_free(&ps.sbuf);
    return out;
}

/* ---- a parsed document ------------------------------------------------- */

struct canon_doc {
    struct parser ps;                /* nodes and decoded strings; the input is not kept */
};

struct canon_doc *canon_parse(const char *in, size_t len, int max_depth, struct json_err *err)
{
    struct canon_doc *d = xmalloc(sizeof *d);
    if (parse_text(&d->ps, in, len, max_depth, err) < 0 || no_dups(&d->ps, err) < 0) {
        canon_doc_free(d);
        return NULL;
    }
    d->ps.s = d->ps.p = d->ps.start = d->ps.end = NULL;
    return d;
}

void canon_doc_free(struct canon_doc *d)
{
    if (!d) return;
    free(d->ps.n);
    buf_free(&d->ps.sbuf);
    free(d);
}

static const struct node *node_at(const struct canon_doc *d, uint32_t n)
{
    return n < d->ps.nn ? &d->ps.n[n] : NULL;
}

enum canon_type canon_type(const struct canon_doc *d, uint32_t n)
{
    static const enum canon_type map[] = {
        [N_NULL] = CANON_NULL, [N_TRUE] = CANON_TRUE, [N_FALSE] = CANON_FALSE, [N_INT] = CANON_INT,
        [N_REAL] = CANON_REAL, [N_STR] = CANON_STR, [N_ARR] = CANON_ARR, [N_OBJ] = CANON_OBJ,
    };
    const struct node *x = node_at(d, n);
    return x ? map[x->type] : CANON_ABSENT;
}

uint32_t canon_member(const struct canon_doc *d, uint32_t obj, const char *key)
{
    const struct node *o = node_at(d, obj);
    if (!o || o->type != N_OBJ) return CANON_NONE;
    size_t kl = strlen(key);
    for (uint32_t c = o->first; c; c = d->ps.n[d->ps.n[c].next].next) {
        const struct node *k = &d->ps.n[c];
        if (k->len == kl && !memcmp(d->ps.sbuf.data + k->off, key, kl)) return k->next;
    }
    return CANON_NONE;
}

uint32_t canon_first(const struct canon_doc *d, uint32_t arr)
{
    const struct node *a = node_at(d, arr);
    return a && a->type == N_ARR && a->first ? a->first : CANON_NONE;
}

uint32_t canon_next(const struct canon_doc *d, uint32_t elem)
{
    const struct node *e = node_at(d, elem);
    return e && e->next ? e->next : CANON_NONE;
}

size_t canon_count(const struct canon_doc *d, uint32_t n)
{
    const struct node *x = node_at(d, n);
    if (!x || (x->type != N_ARR && x->type != N_OBJ)) return 0;
    return x->type == N_OBJ ? x->count / 2 : x->count;
}

const char *canon_str(const struct canon_doc *d, uint32_t n, size_t *len)
{
    const struct node *x = node_at(d, n);
    if (!x || x->type != N_STR) return NULL;
    if (len) *len = x->len;
    return d->ps.sbuf.data + x->off;
}

const char *canon_name(const struct canon_doc *d, uint32_t n, size_t *len)
{
    size_t l;
    const char *s = canon_str(d, n, &l);
    if (!s || memchr(s, '\0', l)) return NULL;
    if (len) *len = l;
    return s;
}

int canon_depth(const struct canon_doc *d, uint32_t n)
{
    const struct node *x = node_at(d, n);
    if (!x || (x->type != N_ARR && x->type != N_OBJ)) return 0;
    int max = 0;
    /* recursion bounded by the parse's max_depth */
    for (uint32_t c = x->first; c; c = d->ps.n[c].next) {
        if (x->type == N_OBJ) c = d->ps.n[c].next;         /* from the key to its value */
        int k = canon_depth(d, c);
        if (k > max) max = k;
    }
    return max + 1;
}

const char *canon_unknown_member(const struct canon_doc *d, uint32_t obj, const char *const *allowed)
{
    const struct node *o = node_at(d, obj);
    if (!o || o->type != N_OBJ) return NULL;
    for (uint32_t c = o->first; c; c = d->ps.n[d->ps.n[c].next].next) {
        const char *k = d->ps.sbuf.data + d->ps.n[c].off;  /* keys hold no NUL (parse_container) */
        if (!json_member_known(k, allowed)) return k;
    }
    return NULL;
}

bool canon_int(const struct canon_doc *d, uint32_t n, int64_t *out)
{
    const struct node *x = node_at(d, n);
    if (!x || x->type != N_INT) return false;
    *out = x->i;
    return true;
}

void canon_emit(const struct canon_doc *d, uint32_t n, struct buf *out)
{
    if (node_at(d, n)) emit((struct parser *)&d->ps, n, out);
}

/* ---- reading a large object member by member --------------------------- */

struct canon_stream {
    struct canon_doc doc;            /* the last value parsed; its parser walks the text */
    int base;                        /* nesting at the top object's members (1), array elements (2) */
    bool in_array, first;            /* iterating an array value; no element/member read yet */
    bool top_first;
    struct buf keys;                 /* the top object's keys so far, NUL-separated (duplicates) */
};

struct canon_stream *canon_stream_open(const char *in, size_t len, int max_depth, struct json_err *err)
{
    /* nested further than anything the caller reads: refused before a
     * byte of it is parsed (and the parser never recurses that deep) */
    memset(err, 0, sizeof *err);
    if (json_too_deep(in, len, max_depth, err)) return NULL;
    struct canon_stream *cs = xcalloc(1, sizeof *cs);
    struct parser *ps = &cs->doc.ps;
    parser_init(ps, in, len, max_depth, err);
    buf_init(&cs->keys);
    ws(ps);
    if (ps->p >= ps->end) {
        fail(ps, "invalid_json", "empty input");
        canon_stream_close(cs);
        return NULL;
    }
    if (*ps->p != '{') {
        snprintf(err->code, sizeof err->code, "not_an_object");
        snprintf(err->message, sizeof err->message, "the request body must be a JSON object");
        canon_stream_close(cs);
        return NULL;
    }
    ps->p++;
    ps->depth = 1;
    cs->base = 1;
    cs->top_first = true;
    return cs;
}

void canon_stream_close(struct canon_stream *cs)
{
    if (!cs) return;
    free(cs->doc.ps.n);
    buf_free(&cs->doc.ps.sbuf);
    buf_free(&cs->keys);
    free(cs);
}

/* Parses the value at the parser's position into a fresh set of nodes
 * (node 0 its root). */
static int stream_value(struct canon_stream *cs)
{
    struct parser *ps = &cs->doc.ps;
    ps->nn = 0;
    buf_reset(&ps->sbuf);
    ps->sbuf.len = 0;
    uint32_t root = new_node(ps, N_NULL);
    ws(ps);
    if (parse_value(ps, root) < 0) return -1;
    if (no_dups(ps, ps->err) < 0) return -1;
    return 0;
}

int canon_stream_member(struct canon_stream *cs, const char **key, size_t *klen)
{
    struct parser *ps = &cs->doc.ps;
    if (cs->in_array) return fail(ps, "invalid_json", "an array value was not read to its end");
    ws(ps);
    if (ps->p >= ps->end) return fail(ps, "invalid_json", "unterminated object");
    if (!cs->top_first) {
        if (*ps->p == '}') goto end;
        if (*ps->p != ',') return fail(ps, "invalid_json", "expected ',' or '}'");
        ps->p++;
        ws(ps);
    } else if (*ps->p == '}') {
        goto end;
    }
    cs->top_first = false;
    if (ps->p >= ps->end || *ps->p != '"') return fail(ps, "invalid_json", "expected a string key");
    /* the key is decoded into the keys list, not the value's buffer */
    ps->nn = 0;
    buf_reset(&ps->sbuf);
    ps->sbuf.len = 0;
    uint32_t off, len;
    if (parse_string(ps, &off, &len) < 0) return -1;
    if (memchr(ps->sbuf.data + off, '\0', len)) return fail(ps, "invalid_json", "object keys may not contain \\u0000");
    for (size_t k = 0; k < cs->keys.len;) {
        size_t l = strlen(cs->keys.data + k);
        if (l == len && !memcmp(cs->keys.data + k, ps->sbuf.data + off, len)) {
            snprintf(ps->err->code, sizeof ps->err->code, "invalid_json");
            snprintf(ps->err->message, sizeof ps->err->message, "duplicate object key");
            return -1;
        }
        k += l + 1;
    }
    size_t at = cs->keys.len;
    buf_append(&cs->keys, ps->sbuf.data + off, len);
    buf_append(&cs->keys, "", 1);
    ws(ps);
    if (ps->p >= ps->end || *ps->p != ':') return fail(ps, "invalid_json", "expected ':'");
    ps->p++;
    ws(ps);
    *key = cs->keys.data + at;
    *klen = len;
    return 1;
end:
    ps->p++;
    ws(ps);
    if (ps->p != ps->end) return fail(ps, "invalid_json", "end of file expected");
    return 0;
}

const struct canon_doc *canon_stream_value(struct canon_stream *cs)
{
    struct parser *ps = &cs->doc.ps;
    if (cs->in_array) {
        /* an element: the nesting is the array's */
        ps->depth = cs->base + 1;
    } else {
        ps->depth = cs->base;
    }
    if (stream_value(cs) < 0) return NULL;
    return &cs->doc;
}

int canon_stream_array(struct canon_stream *cs)
{
    struct parser *ps = &cs->doc.ps;
    ws(ps);
    if (ps->p >= ps->end || *ps->p != '[') return 0;
    if (cs->base + 1 > ps->max_depth) return fail(ps, "too_deep", "nested too deeply");
    ps->p++;
    cs->in_array = true;
    cs->first = true;
    return 1;
}

int canon_stream_element(struct canon_stream *cs)
{
    struct parser *ps = &cs->doc.ps;
    if (!cs->in_array) return fail(ps, "invalid_json", "not in an array");
    ws(ps);
    if (ps->p >= ps->end) return fail(ps, "invalid_json", "unterminated array");
    if (*ps->p == ']') {
        ps->p++;
        cs->in_array = false;
        return 0;
    }
    if (!cs->first) {
        if (*ps->p != ',') return fail(ps, "invalid_json", "expected ',' or ']'");
        ps->p++;
        ws(ps);
    }
    cs->first = false;
    return 1;
}
