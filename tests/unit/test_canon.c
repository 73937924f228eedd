/* Unit tests: canon.c against jansson, on fixed cases and a generated
 * corpus: the two canonical paths must agree byte for byte. */
#include <jansson.h>

#include "test.h"
#include "core/canon.h"
#include "core/util.h"

/* the push path: jansson parses and dumps, then the canonicalizer again */
static char *via_jansson(const char *s, size_t len)
{
    json_error_t e;
    json_t *v = json_loadb(s, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!v) return NULL;
    char *out = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    json_decref(v);
    struct json_err je;
    size_t n;
    char *c = json_canonical(out, strlen(out), false, &n, &je);
    free(out);
    return c;
}

static int mismatches;

static void same(const char *s)
{
    struct json_err e;
    size_t n;
    char *a = json_canonical(s, strlen(s), false, &n, &e);
    char *b = via_jansson(s, strlen(s));
    test_checks++;
    if ((a == NULL) != (b == NULL) || (a && strcmp(a, b))) {
        if (mismatches++ < 10)
            fprintf(stderr, "mismatch for %s\n  canon:   %s\n  jansson: %s\n", s, a ? a : "(error)", b ? b : "(error)");
        test_failures++;
    }
    free(a);
    free(b);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void gen(struct buf *b, int depth)
{
    static const char *strs[] = {"a", "b", "ab", "", "\\u00e9t\\u00e9", "x\\ny", "\\ud83d\\ude00", "q\\\"t", "\\/s",
                                 "tab\\t", "\\u0001", "caf\xc3\xa9", "A", "Z", "aa", "\\u001f", "\\u007f"};
    static const char *nums[] = {"0", "-0", "1", "-1", "1.5", "1.50", "1e3", "1E-3", "-2.5e+10", "123456789012",
                                 "9223372036854775807", "-9223372036854775808", "0.1", "3.141592653589793",
                                 "1e300", "5e-324", "100.0", "2.0e0"};
    int k = (int)(next() % (depth > 4 ? 6 : 9));
    switch (k) {
    case 0: buf_puts(b, "null"); break;
    case 1: buf_puts(b, "true"); break;
    case 2: buf_puts(b, "false"); break;
    case 3: buf_puts(b, nums[next() % ARRAY_SIZE(nums)]); break;
    case 4: case 5: buf_printf(b, "\"%s\"", strs[next() % ARRAY_SIZE(strs)]); break;
    case 6: {
        int n = (int)(next() % 4);
        buf_puts(b, "[ ");
        for (int i = 0; i < n; i++) { if (i) buf_puts(b, " ,"); gen(b, depth + 1); }
        buf_puts(b, "]");
        break;
    }
    default: {
        int n = (int)(next() % 5);
        buf_puts(b, "{");
        char used[8][16];
        int nu = 0;
        for (int i = 0; i < n; i++) {
            char key[16];
            snprintf(key, sizeof key, "%s%d", (next() & 1) ? "k" : "K", (int)(next() % 6));
            bool dup = false;
            for (int j = 0; j < nu; j++) if (!strcmp(used[j], key)) dup = true;
            if (dup) continue;
            snprintf(used[nu++], 16, "%s", key);
            if (b->data[b->len - 1] != '{') buf_puts(b, ",\n");
            buf_printf(b, " \"%s\" : ", key);
            gen(b, depth + 1);
        }
        buf_puts(b, "}");
    }
    }
}

/* canon_parse + canon_emit on a value nested in a sync-page-like wrapper
 * must give what json_canonical gives for the value alone */
static void same_in_doc(const char *s)
{
    struct json_err e;
    size_t n;
    char *alone = json_canonical(s, strlen(s), false, &n, &e);
    struct buf w;
    buf_init(&w);
    buf_printf(&w, "{\"changes\":[{\"id\":\"x\",\"body\":%s,\"rev\":\"1-ab\"}],\"last_version\":42}", s);
    struct canon_doc *d = canon_parse(w.data, w.len, CANON_MAX_DEPTH + 3, &e);
    test_checks++;
    if ((d == NULL) != (alone == NULL)) {
        if (mismatches++ < 10) fprintf(stderr, "doc %s for %s\n", d ? "parsed" : "refused", s);
        test_failures++;
    } else if (d) {
        uint32_t ent = canon_first(d, canon_member(d, 0, "changes"));
        struct buf o;
        buf_init(&o);
        canon_emit(d, canon_member(d, ent, "body"), &o);
        if (strcmp(o.data ? o.data : "", alone)) {
            if (mismatches++ < 10) fprintf(stderr, "doc emit mismatch for %s\n  doc:   %s\n  alone: %s\n", s, o.data, alone);
            test_failures++;
        }
        buf_free(&o);
    }
    canon_doc_free(d);
    free(alone);
    buf_free(&w);
}

static void doc_accessors(void)
{
    struct json_err e;
    const char *t = "{\"changes\":[{\"id\":\"a\\u00e9\",\"n\":-7,\"ok\":true,\"z\":null,\"r\":1.5},"
                    "{\"id\":\"b\"},3],\"last_version\":9007199254740993,\"more\":false}";
    struct canon_doc *d = canon_parse(t, strlen(t), 8, &e);
    CHECK(d != NULL);
    CHECK_INT(canon_type(d, 0), CANON_OBJ);
    CHECK_INT(canon_count(d, 0), 3);
    uint32_t arr = canon_member(d, 0, "changes");
    CHECK_INT(canon_type(d, arr), CANON_ARR);
    CHECK_INT(canon_count(d, arr), 3);
    uint32_t e1 = canon_first(d, arr), e2 = canon_next(d, e1), e3 = canon_next(d, e2);
    CHECK(canon_next(d, e3) == CANON_NONE);
    size_t l = 0;
    CHECK_STR(canon_str(d, canon_member(d, e1, "id"), &l), "a\xc3\xa9");
    CHECK_INT(l, 3);
    int64_t v = 0;
    CHECK(canon_int(d, canon_member(d, e1, "n"), &v));
    CHECK_INT(v, -7);
    CHECK(!canon_int(d, canon_member(d, e1, "r"), &v));       /* a real is not an int */
    CHECK_INT(canon_type(d, canon_member(d, e1, "ok")), CANON_TRUE);
    CHECK_INT(canon_type(d, canon_member(d, e1, "z")), CANON_NULL);
    CHECK(canon_member(d, e1, "missing") == CANON_NONE);
    CHECK_INT(canon_type(d, CANON_NONE), CANON_ABSENT);
    CHECK(canon_str(d, canon_member(d, e1, "n"), NULL) == NULL);
    CHECK_STR(canon_str(d, canon_member(d, e2, "id"), NULL), "b");
    CHECK(canon_member(d, e3, "id") == CANON_NONE);               /* not an object */
    CHECK(canon_first(d, e1) == CANON_NONE);                       /* not an array */
    CHECK(canon_int(d, canon_member(d, 0, "last_version"), &v));
    CHECK_INT(v, 9007199254740993LL);
    CHECK_INT(canon_type(d, canon_member(d, 0, "more")), CANON_FALSE);
    struct buf o;
    buf_init(&o);
    canon_emit(d, e1, &o);
    CHECK_STR(o.data, "{\"id\":\"a\xc3\xa9\",\"n\":-7,\"ok\":true,\"r\":1.5,\"z\":null}");
    buf_free(&o);
    canon_doc_free(d);
    /* a duplicate key deep inside refuses the whole text; so does depth */
    const char *dup = "{\"changes\":[{\"body\":{\"k\":{\"a\":1,\"a\":2}}}]}";
    CHECK(canon_parse(dup, strlen(dup), 64, &e) == NULL);
    CHECK_STR(e.code, "invalid_json");
    CHECK(canon_parse("[[[1]]]", 7, 2, &e) == NULL);
    CHECK_STR(e.code, "too_deep");
    d = canon_parse("[[[1]]]", 7, 3, &e);
    CHECK(d != NULL);
    canon_doc_free(d);
    CHECK(canon_parse("{\"a\":1} x", 10, 8, &e) == NULL);
    canon_doc_free(NULL);
}

/* canon_stream over {"a":1,"changes":[v,v],"z":v} accepts what canon_parse
 * accepts, and gives each element and member the same canonical text */
static void stream_like_doc(const char *v)
{
    struct json_err e, e2;
    struct buf w;
    buf_init(&w);
    buf_printf(&w, "{\"a\":1,\"changes\":[%s, %s],\"z\":%s}", v, v, v);
    struct canon_doc *whole = canon_parse(w.data, w.len, CANON_MAX_DEPTH + 3, &e);
    struct canon_stream *cs = canon_stream_open(w.data, w.len, CANON_MAX_DEPTH + 3, &e2);
    struct buf got, want;
    buf_init(&got);
    buf_init(&want);
    int rc = cs ? 1 : -1;
    const char *key;
    size_t kl;
    while (cs && (rc = canon_stream_member(cs, &key, &kl)) == 1) {
        buf_printf(&got, "%s=", key);
        const struct canon_doc *d;
        if (!strcmp(key, "changes") && (rc = canon_stream_array(cs)) == 1) {
            while ((rc = canon_stream_element(cs)) == 1) {
                if (!(d = canon_stream_value(cs))) { rc = -1; break; }
                canon_emit(d, 0, &got);
                buf_putc(&got, ';');
            }
            if (rc < 0) break;
            continue;
        }
        if (rc < 0 || !(d = canon_stream_value(cs))) { rc = -1; break; }
        canon_emit(d, 0, &got);
        buf_putc(&got, ';');
    }
    if (whole) {
        buf_puts(&want, "a=1;changes=");
        uint32_t arr = canon_member(whole, 0, "changes");
        for (uint32_t x = canon_first(whole, arr); x != CANON_NONE; x = canon_next(whole, x)) {
            canon_emit(whole, x, &want);
            buf_putc(&want, ';');
        }
        buf_puts(&want, "z=");
        canon_emit(whole, canon_member(whole, 0, "z"), &want);
        buf_putc(&want, ';');
    }
    test_checks++;
    if ((whole != NULL) != (rc == 0) || (whole && strcmp(got.data, want.data))) {
        if (mismatches++ < 10)
            fprintf(stderr, "stream vs doc for %s: rc %d (%s), doc %s\n  stream: %s\n  doc:    %s\n", v, rc, e2.message,
                    whole ? "ok" : e.message, got.data ? got.data : "", want.data ? want.data : "");
        test_failures++;
    }
    canon_stream_close(cs);
    canon_doc_free(whole);
    buf_free(&got);
    buf_free(&want);
    buf_free(&w);
}

static int stream_rc(const char *t, int depth, struct json_err *e)
{
    struct canon_stream *cs = canon_stream_open(t, strlen(t), depth, e);
    if (!cs) return -2;
    const char *key;
    size_t kl;
    int rc;
    while ((rc = canon_stream_member(cs, &key, &kl)) == 1) {
        if ((rc = canon_stream_array(cs)) == 1) {
            while ((rc = canon_stream_element(cs)) == 1)
                if (!canon_stream_value(cs)) { rc = -1; break; }
            if (rc < 0) break;
        } else if (rc < 0 || !canon_stream_value(cs)) {
            rc = -1;
            break;
        }
    }
    canon_stream_close(cs);
    return rc;
}

static void stream_errors(void)
{
    struct json_err e;
    CHECK_INT(stream_rc("{}", 8, &e), 0);
    CHECK_INT(stream_rc(" {\"a\":[],\"b\":[1,{\"c\":2}]} \n", 8, &e), 0);
    CHECK_INT(stream_rc("[1]", 8, &e), -2);
    CHECK_STR(e.code, "not_an_object");
    CHECK_INT(stream_rc("", 8, &e), -2);
    CHECK_STR(e.code, "invalid_json");
    CHECK_INT(stream_rc("{\"a\":1,\"a\":2}", 8, &e), -1);                 /* duplicate at the top */
    CHECK_STR(e.message, "duplicate object key");
    CHECK_INT(stream_rc("{\"a\":[{\"k\":1,\"k\":2}]}", 8, &e), -1);      /* and inside an element */
    CHECK_INT(stream_rc("{\"a\":1} x", 8, &e), -1);
    CHECK_INT(stream_rc("{\"a\":1", 8, &e), -1);
    CHECK_INT(stream_rc("{\"a\":[1,2}", 8, &e), -1);
    CHECK_INT(stream_rc("{\"a\":[1,,2]}", 8, &e), -1);
    CHECK_INT(stream_rc("{\"a\" 1}", 8, &e), -1);
    CHECK_INT(stream_rc("{\"a\":1,}", 8, &e), -1);
    /* depth counts from the top object, as canon_parse does; a text nested
     * deeper is refused by the open itself, before anything is parsed */
    CHECK_INT(stream_rc("{\"a\":[[1]]}", 3, &e), 0);
    CHECK_INT(stream_rc("{\"a\":[[[1]]]}", 3, &e), -2);
    CHECK_STR(e.code, "too_deep");
    CHECK_INT(stream_rc("{\"a\":{\"b\":[1]}}", 3, &e), 0);
    CHECK_INT(stream_rc("{\"a\":{\"b\":[[1]]}}", 3, &e), -2);
    CHECK_STR(e.code, "too_deep");
    CHECK_INT(stream_rc("{\"a\":\"[[[[\",\"b\":[\"]]]]{{{{\\\"[[\"]}", 3, &e), 0);   /* brackets in strings */
    CHECK(canon_parse("{\"a\":[[[1]]]}", 13, 3, &e) == NULL);
    /* an invalid text nested too deep: too_deep too (the scan comes first) */
    CHECK_INT(stream_rc("{\"a\":[[[[x", 3, &e), -2);
    CHECK_STR(e.code, "too_deep");
}

/* names, depth and member checks on a parsed doc */
static void doc_helpers(void)
{
    struct json_err e;
    const char *t = "{\"n\":\"ab\",\"z\":\"a\\u0000evil\",\"i\":1,\"o\":{\"a\":[[{}]],\"b\":[]},\"e\":{},\"s\":[[[\"x\"]]]}";
    struct canon_doc *d = canon_parse(t, strlen(t), 16, &e);
    CHECK(d != NULL);
    size_t l = 99;
    CHECK_STR(canon_name(d, canon_member(d, 0, "n"), &l), "ab");
    CHECK_INT(l, 2);
    CHECK(canon_str(d, canon_member(d, 0, "z"), &l) != NULL);
    CHECK_INT(l, 6);                                       /* the whole string, NUL inside */
    CHECK(canon_name(d, canon_member(d, 0, "z"), &l) == NULL);  /* never "a" */
    CHECK(canon_name(d, canon_member(d, 0, "i"), &l) == NULL);
    CHECK(canon_name(d, CANON_NONE, &l) == NULL);
    CHECK_INT(canon_depth(d, 0), 5);                       /* the root over "o" */
    CHECK_INT(canon_depth(d, canon_member(d, 0, "o")), 4); /* {"a":[[{}]]} */
    CHECK_INT(canon_depth(d, canon_member(d, 0, "e")), 1);
    CHECK_INT(canon_depth(d, canon_member(d, 0, "i")), 0);
    CHECK_INT(canon_depth(d, CANON_NONE), 0);
    static const char *const all[] = {"n", "z", "i", "o", "e", "s", NULL};
    static const char *const some[] = {"n", "z", "i", "o", NULL};
    static const char *const none[] = {NULL};
    CHECK(canon_unknown_member(d, 0, all) == NULL);
    CHECK_STR(canon_unknown_member(d, 0, some), "e");
    CHECK_STR(canon_unknown_member(d, 0, none), "n");
    CHECK(canon_unknown_member(d, canon_member(d, 0, "i"), none) == NULL);   /* not an object */
    canon_doc_free(d);
    /* a body of exactly JSON_MAX_DEPTH levels, and one more */
    struct buf b;
    buf_init(&b);
    for (int k = 0; k < JSON_MAX_DEPTH; k++) buf_puts(&b, "{\"a\":");
    buf_puts(&b, "1");
    for (int k = 0; k < JSON_MAX_DEPTH; k++) buf_putc(&b, '}');
    d = canon_parse(b.data, b.len, JSON_REQUEST_MAX_DEPTH, &e);
    CHECK_INT(canon_depth(d, 0), JSON_MAX_DEPTH);          /* what a PUT takes, counted alike */
    canon_doc_free(d);
    d = canon_parse(b.data, b.len, JSON_MAX_DEPTH, &e);
    CHECK(d != NULL);
    canon_doc_free(d);
    char *c = json_canonical(b.data, b.len, true, &l, &e);        /* a PUT's parse */
    CHECK(c != NULL);
    free(c);
    /* one level more: refused by a PUT's parse, and counted one more here */
    buf_reset(&b);
    b.len = 0;
    for (int k = 0; k <= JSON_MAX_DEPTH; k++) buf_puts(&b, "[");
    for (int k = 0; k <= JSON_MAX_DEPTH; k++) buf_puts(&b, "]");
    CHECK(json_canonical(b.data, b.len, false, &l, &e) == NULL);
    CHECK_STR(e.code, "too_deep");
    d = canon_parse(b.data, b.len, JSON_REQUEST_MAX_DEPTH, &e);
    CHECK_INT(canon_depth(d, 0), JSON_MAX_DEPTH + 1);
    canon_doc_free(d);
    buf_free(&b);
}

int main(void)
{
    const char *fixed[] = {
        "{}", "[]", "{\"b\":1,\"a\":2}", "{\"a\":{\"d\":[3,2,1],\"c\":null}}", "\"\\u00e9\"", "{\"\\u00e9\":1,\"e\":2,\"z\":3}",
        "[1.0, 1e2, -0.0, 0.5, 1e-7, 123.456e5]", "{\"k\":\"\\ud83d\\ude00\"}", "[\"\\u0000\"]", "{\"x\":\"\\u001F\"}",
        "  {  \"a\" :  [ true , false , null ] }  ", "[9223372036854775807]",
        "{\"\":1,\"\\u0000k\":2}", "{\"a\":1,\"a\\u0000b\":2}", "{\"o\":{\"x\\u0000y\":1,\"x\":2}}",
        "[0.1, 0.30000000000000004, 1e21, 123.456, -1.5e-7]",
        /* errors: both must refuse */
        "{\"a\":1,\"a\":2}", "{\"a\":}", "[1,]", "{\"a\" 1}", "[01]", "[1.]", "[.5]", "[-]", "[\"\\ud800\"]",
        "[\"\\x\"]", "[\"a\nb\"]", "[9223372036854775808]", "[1e999]", "tru", "[\"\xff\"]", "{} {}", "",
    };
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++) same(fixed[i]);
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++) if (fixed[i][0]) same_in_doc(fixed[i]);
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++) if (fixed[i][0]) stream_like_doc(fixed[i]);
    doc_accessors();
    stream_errors();
    doc_helpers();

    struct buf b;
    buf_init(&b);
    for (int i = 0; i < 20000; i++) {
        buf_reset(&b);
        gen(&b, 0);
        same(b.data);
        same_in_doc(b.data);
        stream_like_doc(b.data);
    }
    buf_free(&b);

    /* reals: shortest form that reads back */
    struct json_err e;
    size_t n;
    char *c = json_canonical("[0.1,2.50,1e3,-0.0]", 19, false, &n, &e);
    CHECK_STR(c, "[0.1,2.5,1000.0,-0.0]");
    free(c);
    c = json_canonical("[1e21,1.5e-7,0.30000000000000004,123.456]", 41, false, &n, &e);
    CHECK_STR(c, "[1e21,1.5e-7,0.30000000000000004,123.456]");
    free(c);
    CHECK(json_canonical("{\"a\\u0000\":2}", 14, true, &n, &e) == NULL);   /* NUL in a key */
    CHECK_STR(e.code, "invalid_json");

    /* error codes and positions */
    CHECK(json_canonical("[1]", 3, true, &n, &e) == NULL);
    CHECK_STR(e.code, "not_an_object");
    CHECK(json_canonical("{\"a\":\n  x}", 10, true, &n, &e) == NULL);
    CHECK_STR(e.code, "invalid_json");
    CHECK(strstr(e.message, "line 2") != NULL);
    char deep[300];
    size_t d = 0;
    for (int i = 0; i < 100; i++) deep[d++] = '[';
    for (int i = 0; i < 100; i++) deep[d++] = ']';
    CHECK(json_canonical(deep, d, false, &n, &e) == NULL);
    CHECK_STR(e.code, "too_deep");
    TEST_MAIN_END();
}
