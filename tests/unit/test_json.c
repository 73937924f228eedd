/* Unit tests: json.c - names read whole (json_name, json_find_nul) and the
 * nesting scan (json_too_deep, json_parse_depth). */
#include "test.h"
#include "core/json.h"

static json_t *parse(const char *t)
{
    struct json_err e;
    json_t *v = json_parse_depth(t, strlen(t), true, JSON_REQUEST_MAX_DEPTH, &e);
    if (!v) fprintf(stderr, "parse %s: %s\n", t, e.message);
    return v;
}

static void names(void)
{
    json_t *v = parse("{\"a\":\"p1\",\"b\":\"p1\\u0000x\",\"c\":1,\"d\":\"\",\"e\":\"\\u0000\"}");
    CHECK_STR(json_name(json_object_get(v, "a")), "p1");
    CHECK_STR(json_string_value(json_object_get(v, "b")), "p1");          /* what jansson's reader gives */
    CHECK(json_name(json_object_get(v, "b")) == NULL);                    /* never "p1" */
    CHECK(json_name(json_object_get(v, "c")) == NULL);
    CHECK(json_name(json_object_get(v, "missing")) == NULL);
    CHECK_STR(json_name(json_object_get(v, "d")), "");
    CHECK(json_name(json_object_get(v, "e")) == NULL);
    json_decref(v);
}

static void find_nul(void)
{
    char path[128];
    json_t *v = parse("{\"role\":\"writer\",\"spaces\":[\"p0\",\"p1\\u0000x\"],\"name\":\"k\"}");
    CHECK(json_find_nul(v, NULL, path, sizeof path));
    CHECK_STR(path, "spaces[1]");
    json_decref(v);
    v = parse("{\"strategy\":\"merge\",\"body\":{\"t\":\"a\\u0000b\",\"l\":[\"\\u0000\"]}}");
    static const char *const body[] = {"body", NULL};
    CHECK(!json_find_nul(v, body, path, sizeof path));                    /* entity data may hold one */
    CHECK_STR(path, "");
    CHECK(json_find_nul(v, NULL, path, sizeof path));
    CHECK_STR(path, "body.t");
    json_decref(v);
    v = parse("{\"a\":{\"b\":[1,{\"c\":[\"ok\",\"x\\u0000\"]}]}}");
    CHECK(json_find_nul(v, NULL, path, sizeof path));
    CHECK_STR(path, "a.b[1].c[1]");
    json_decref(v);
    v = parse("{\"confirm\":\"01M8XY96CS8PBW3G16R96EAS81\\u0000\"}");
    CHECK(json_find_nul(v, NULL, path, sizeof path));
    CHECK_STR(path, "confirm");
    json_decref(v);
    v = parse("{\"a\":[\"x\",{\"y\":null}],\"b\":true}");
    CHECK(!json_find_nul(v, NULL, path, sizeof path));
    json_decref(v);
}

static void depth(void)
{
    struct json_err e;
    CHECK(!json_too_deep("{\"a\":[[1]]}", 11, 3, &e));
    CHECK(json_too_deep("{\"a\":[[[1]]]}", 13, 3, &e));
    CHECK_STR(e.code, "too_deep");
    CHECK(!json_too_deep("{\"a\":\"[[[[[\\\"[[\"}", 17, 1, &e));        /* brackets in strings */
    CHECK(!json_too_deep("[][][][]", 8, 1, &e));
    /* a body of JSON_MAX_DEPTH levels is a valid control body; inside a
     * member it needs the request's limit */
    struct buf b;
    buf_init(&b);
    for (int k = 0; k < JSON_MAX_DEPTH; k++) buf_puts(&b, "{\"a\":");
    buf_puts(&b, "1");
    for (int k = 0; k < JSON_MAX_DEPTH; k++) buf_putc(&b, '}');
    json_t *v = json_parse(b.data, b.len, true, &e);
    CHECK(v != NULL);
    CHECK_INT(json_depth(v), JSON_MAX_DEPTH);
    json_decref(v);
    buf_reset(&b);
    b.len = 0;
    buf_puts(&b, "{\"body\":");
    for (int k = 0; k < JSON_MAX_DEPTH; k++) buf_puts(&b, "{\"a\":");
    buf_puts(&b, "1");
    for (int k = 0; k < JSON_MAX_DEPTH; k++) buf_putc(&b, '}');
    buf_putc(&b, '}');
    CHECK(json_parse(b.data, b.len, true, &e) == NULL);
    CHECK_STR(e.code, "too_deep");
    v = json_parse_depth(b.data, b.len, true, JSON_REQUEST_MAX_DEPTH, &e);
    CHECK(v != NULL);
    CHECK_INT(json_depth(json_object_get(v, "body")), JSON_MAX_DEPTH);
    json_decref(v);
    json_t *one = json_integer(1);
    CHECK_INT(json_depth(one), 0);
    json_decref(one);
    buf_free(&b);
}

int main(void)
{
    names();
    find_nul();
    depth();
    TEST_MAIN_END();
}
