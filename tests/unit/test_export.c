/* test_export.c - the CSV pieces of a snapshot export (svc/export.h):
 * RFC 4180 quoting, the columns in first-seen order with their cap and the
 * "_more" column, and each value's text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc/export.h"
#include "test.h"

static void field(const char *in, const char *want)
{
    struct buf b;
    buf_init(&b);
    export_csv_field(&b, in, strlen(in));
    buf_putc(&b, '\0');
    CHECK_STR(b.data, want);
    buf_free(&b);
}

static void test_quoting(void)
{
    field("plain", "plain");
    field("", "");
    field(" spaces kept ", " spaces kept ");
    field("a,b", "\"a,b\"");
    field("say \"hi\"", "\"say \"\"hi\"\"\"");
    field("two\nlines", "\"two\nlines\"");
    field("cr\rhere", "\"cr\rhere\"");
    field("\"", "\"\"\"\"");
    field("é ünïcode", "é ünïcode");
}

static char *row(const struct export_cols *c, const char *body)
{
    struct buf b;
    buf_init(&b);
    int rc = export_csv_row(&b, c, "notes", "n,1", "2-abcdef0123456789", 7, 1700000000123ull, body, strlen(body));
    buf_putc(&b, '\0');
    if (rc < 0) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static void test_columns(void)
{
    struct export_cols c;
    export_cols_init(&c);
    /* canonical bodies: keys sorted within each; the order across bodies is first seen */
    const char *b1 = "{\"b\":1,\"title\":\"x\"}";
    const char *b2 = "{\"a\":[1,{\"k\":\"v\"}],\"b\":2.5,\"n\":null,\"t\":true}";
    const char *b3 = "{\"odd, name\":\"q\\\"uote\"}";
    CHECK_INT(export_cols_add_body(&c, b1, strlen(b1)), 0);
    CHECK_INT(export_cols_add_body(&c, b2, strlen(b2)), 0);
    CHECK_INT(export_cols_add_body(&c, b3, strlen(b3)), 0);
    CHECK_INT(export_cols_add_body(&c, "[1]", 3), -1);
    CHECK_INT(c.n, 6);
    CHECK(!c.more);
    struct buf h;
    buf_init(&h);
    export_csv_header(&h, &c);
    buf_putc(&h, '\0');
    CHECK_STR(h.data, "collection,id,rev,version,updated_at,b,title,a,n,t,\"odd, name\"\r\n");
    buf_free(&h);
    char *r = row(&c, b2);
    /* strings as their text, numbers and booleans as JSON, null empty, nested as canonical JSON, quoted when needed */
    CHECK_STR(r, "notes,\"n,1\",2-abcdef0123456789,7,2023-11-14T22:13:20.123Z,2.5,,\"[1,{\"\"k\"\":\"\"v\"\"}]\",,true,\r\n");
    free(r);
    r = row(&c, b3);
    CHECK_STR(r, "notes,\"n,1\",2-abcdef0123456789,7,2023-11-14T22:13:20.123Z,,,,,,\"q\"\"uote\"\r\n");
    free(r);
    CHECK(row(&c, "\"not an object\"") == NULL);
    export_cols_free(&c);
}

/* past EXPORT_MAX_COLUMNS, members without a column go into "_more" */
static void test_cap(void)
{
    struct export_cols c;
    export_cols_init(&c);
    struct buf body;
    buf_init(&body);
    buf_putc(&body, '{');
    for (int i = 0; i < EXPORT_MAX_COLUMNS + 2; i++) buf_printf(&body, "%s\"k%04d\":%d", i ? "," : "", i, i);
    buf_putc(&body, '}');
    CHECK_INT(export_cols_add_body(&c, body.data, body.len), 0);
    CHECK_INT(c.n, EXPORT_MAX_COLUMNS);
    CHECK(c.more);
    struct buf h;
    buf_init(&h);
    export_csv_header(&h, &c);
    buf_putc(&h, '\0');
    CHECK(strstr(h.data, ",k0999,_more\r\n") != NULL);
    CHECK(strstr(h.data, "k1000") == NULL);
    buf_free(&h);
    buf_putc(&body, '\0');
    char *r = row(&c, body.data);
    CHECK(strstr(r, ",998,999,\"{\"\"k1000\"\":1000,\"\"k1001\"\":1001}\"\r\n") != NULL);
    free(r);
    /* a body with only known members leaves "_more" empty */
    r = row(&c, "{\"k0000\":5}");
    size_t l = strlen(r);
    CHECK(l > 3 && !strcmp(r + l - 3, ",,\r\n" + 1));
    free(r);
    buf_free(&body);
    export_cols_free(&c);
}

int main(void)
{
    test_quoting();
    test_columns();
    test_cap();
    TEST_MAIN_END();
}
