/* json.c - see json.h. Thread-safe: no shared state. */
#include "core/json.h"

#include <stdio.h>

static const char hexd[] = "0123456789abcdef";

void json_str(struct buf *b, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    buf_reserve(b, len + 2);
    buf_putc(b, '"');
    while (p < end) {
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\' && *p < 0x80) p++;
        if (p > run) buf_append(b, run, (size_t)(p - run));
        if (p >= end) break;
        unsigned c = *p;
        if (c >= 0x80) {
            size_t n = utf8_seq_len(p, (size_t)(end - p));
            if (n) { buf_append(b, p, n); p += n; }
            else { buf_append(b, "\xEF\xBF\xBD", 3); p++; }
            continue;
        }
        p++;
        switch (c) {
        case '"': buf_append(b, "\\\"", 2); break;
        case '\\': buf_append(b, "\\\\", 2); break;
        case '\n': buf_append(b, "\\n", 2); break;
        case '\r': buf_append(b, "\\r", 2); break;
        case '\t': buf_append(b, "\\t", 2); break;
        case '\b': buf_append(b, "\\b", 2); break;
        case '\f': buf_append(b, "\\f", 2); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hexd[c >> 4], hexd[c & 15]};
            buf_append(b, u, 6);
        }
        }
    }
    buf_putc(b, '"');
}

void json_sep(struct buf *b)
{
    if (b->len == 0) return;
    char last = b->data[b->len - 1];
    if (last != '{' && last != '[' && last != ':' && last != ',') buf_putc(b, ',');
}

void json_key(struct buf *b, const char *key)
{
    json_sep(b);
    buf_putc(b, '"');
    buf_puts(b, key);           /* keys are our own literals */
    buf_append(b, "\":", 2);
}

void json_kv_str(struct buf *b, const char *key, const char *s)
{
    json_key(b, key);
    if (s) json_cstr(b, s);
    else buf_append(b, "null", 4);
}

void json_kv_strn(struct buf *b, const char *key, const char *s, size_t len)
{
    json_key(b, key);
    json_str(b, s, len);
}

void json_kv_u64(struct buf *b, const char *key, uint64_t v) { json_key(b, key); buf_put_u64(b, v); }
void json_kv_i64(struct buf *b, const char *key, int64_t v) { json_key(b, key); buf_put_i64(b, v); }
void json_kv_bool(struct buf *b, const char *key, bool v) { json_key(b, key); buf_puts(b, v ? "true" : "false"); }
void json_kv_null(struct buf *b, const char *key) { json_key(b, key); buf_append(b, "null", 4); }

void json_kv_time(struct buf *b, const char *key, uint64_t ms)
{
    json_key(b, key);
    if (!ms) { buf_append(b, "null", 4); return; }
    char ts[32];
    size_t n = fmt_time_ms(ts, ms);
    buf_putc(b, '"');
    buf_append(b, ts, n);
    buf_putc(b, '"');
}

int json_depth(const json_t *v)
{
    int max = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) { int d = json_depth(x); if (d > max) max = d; }
        return max + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) { int d = json_depth(x); if (d > max) max = d; }
        return max + 1;
    }
    return 0;
}

/* Limits checked on the raw text before jansson's recursive parser sees it,
 * the same as the canonicalizer's (canon.c), so both parse paths accept and
 * refuse the same bytes: nesting deeper than JSON_MAX_DEPTH (a 100,000-deep
 * body never reaches the recursion) and a number token of JSON_MAX_NUMBER
 * bytes or more. Strings are skipped properly. Returns NULL or what is
 * wrong, with *where the byte. */
#define JSON_MAX_NUMBER 512
static const char *text_limits(const char *s, size_t len, int max_depth, size_t *where)
{
    int depth = 0;
    bool in_str = false;
    size_t num = 0;                  /* length of the number-like run so far */
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
            continue;
        }
        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') {
            if (++num >= JSON_MAX_NUMBER) { *where = i + 1 - num; return "number too long"; }
            continue;
        }
        num = 0;
        if (c == '"') in_str = true;
        else if (c == '{' || c == '[') {
            if (++depth > max_depth) { *where = i; return "too deep"; }
        } else if (c == '}' || c == ']') depth--;
    }
    return NULL;
}

bool json_member_known(const char *key, const char *const *allowed)
{
    for (; *allowed; allowed++)
        if (!strcmp(key, *allowed)) return true;
    return false;
}

const char *json_unknown_member(const json_t *obj, const char *const *allowed)
{
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)obj, k, x) {
        if (!json_member_known(k, allowed)) return k;
    }
    return NULL;
}

void json_unknown_member_err(struct json_err *err, const char *where, const char *member,
                             const char *const *allowed)
{
    char list[120] = "";
    size_t n = 0;
    for (const char *const *a = allowed; *a && n < sizeof list; a++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", *a);
    snprintf(err->code, sizeof err->code, "unknown_member");
    snprintf(err->member, sizeof err->member, "%s", member);
    if (allowed[0])
        snprintf(err->message, sizeof err->message, "unknown member \"%.40s\" in %s; it takes: %s", member, where, list);
    else
        snprintf(err->message, sizeof err->message, "unknown member \"%.40s\" in %s; it takes no members", member,
                 where);
}

static void too_deep_err(struct json_err *err, int max_depth, size_t where)
{
    snprintf(err->code, sizeof err->code, "too_deep");
    snprintf(err->message, sizeof err->message, "JSON nested deeper than %d levels (at byte %zu)", max_depth, where);
    err->member[0] = '\0';
}

bool json_too_deep(const char *text, size_t len, int max_depth, struct json_err *err)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth) {
                too_deep_err(err, max_depth, i);
                return true;
            }
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return false;
}

/* Depth-first; path[0..at) is where v is. On a find, path is its path. */
static bool find_nul(const json_t *v, char *path, size_t cap, size_t at)
{
    if (json_is_string(v)) return !json_name(v);
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            int n = snprintf(path + at, cap - at, "[%zu]", i);
            if (find_nul(x, path, cap, MIN(at + (size_t)n, cap - 1))) return true;
        }
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            int n = snprintf(path + at, cap - at, "%s%.60s", at ? "." : "", k);
            if (find_nul(x, path, cap, MIN(at + (size_t)n, cap - 1))) return true;
        }
    }
    path[at] = '\0';
    return false;
}

bool json_find_nul(const json_t *v, const char *const *skip, char *path, size_t cap)
{
    path[0] = '\0';
    if (!json_is_object(v)) return find_nul(v, path, cap, 0);
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) {
        if (skip && json_member_known(k, skip)) continue;
        int n = snprintf(path, cap, "%.60s", k);
        if (find_nul(x, path, cap, MIN((size_t)n, cap - 1))) return true;
    }
    path[0] = '\0';
    return false;
}

json_t *json_parse(const char *text, size_t len, bool want_object, struct json_err *err)
{
    return json_parse_depth(text, len, want_object, JSON_MAX_DEPTH, err);
}

json_t *json_parse_depth(const char *text, size_t len, bool want_object, int max_depth, struct json_err *err)
{
    size_t where = 0;
    err->member[0] = '\0';
    if (len == 0) {
        snprintf(err->code, sizeof err->code, "invalid_json");
        snprintf(err->message, sizeof err->message, "request body is empty; a JSON %s is expected",
                 want_object ? "object" : "value");
        return NULL;
    }
    /* A raw NUL byte is invalid JSON anywhere (in a string it is a control
     * character, elsewhere not whitespace); jansson's lexer takes one after
     * a number as the end of the token, so {"v":123<NUL>} would parse as
     * {"v":123} here while the canonicalizer refuses it. */
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        snprintf(err->code, sizeof err->code, "invalid_json");
        snprintf(err->message, sizeof err->message, "invalid JSON: a NUL byte at byte %zu", (size_t)(nul - text));
        return NULL;
    }
    const char *limit = text_limits(text, len, max_depth, &where);
    if (limit && !strcmp(limit, "too deep")) {
        too_deep_err(err, max_depth, where);
        return NULL;
    }
    if (limit) {
        snprintf(err->code, sizeof err->code, "invalid_json");
        snprintf(err->message, sizeof err->message, "invalid JSON at byte %zu: a number of %d bytes or more",
                 where, JSON_MAX_NUMBER);
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!v) {
        snprintf(err->code, sizeof err->code, "invalid_json");
        snprintf(err->message, sizeof err->message, "invalid JSON at line %d column %d (byte %d): %.100s",
                 je.line, je.column, je.position, je.text);
        return NULL;
    }
    if (want_object && !json_is_object(v)) {
        json_decref(v);
        snprintf(err->code, sizeof err->code, "not_an_object");
        snprintf(err->message, sizeof err->message, "the request body must be a JSON object");
        return NULL;
    }
    return v;
}
