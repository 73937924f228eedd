/* test_json_diff.c - the two JSON parse paths agree (json_diff.h).
 *
 * Inputs: a generated corpus of valid, invalid and edge-case documents
 * (numbers at every limit, escapes, NUL, surrogates, invalid UTF-8, depth,
 * duplicate names, whitespace, trailing bytes), each also wrapped as an
 * object member and an array element; plus every file of the fuzzers' JSON
 * corpus and regressions (tests/fuzz/corpus/json/, passed as argv[1]). */
#include <dirent.h>
#include <sys/stat.h>
#include "test.h"
#include "../fuzz/json_diff.h"
#include "core/util.h"

static int n_inputs;

static void check_bytes(const char *in, size_t len)
{
    char why[600];
    n_inputs++;
    test_checks++;
    if (json_diff_one(in, len, why, sizeof why)) {
        fprintf(stderr, "parse paths disagree on %zu bytes \"", len);
        for (size_t i = 0; i < len && i < 120; i++) {
            unsigned char c = (unsigned char)in[i];
            if (c >= 0x20 && c < 0x7f && c != '\\') fputc(c, stderr);
            else fprintf(stderr, "\\x%02x", c);
        }
        fprintf(stderr, "\": %s\n", why);
        test_failures++;
    }
}

/* s alone, and inside an object and an array (other contexts of the grammar) */
static void check3(const char *s, size_t len)
{
    check_bytes(s, len);
    struct buf b = {0};
    buf_puts(&b, "{\"k\":");
    buf_append(&b, s, len);
    buf_putc(&b, '}');
    check_bytes(b.data, b.len);
    b.len = 0;
    buf_puts(&b, "[1,");
    buf_append(&b, s, len);
    buf_puts(&b, ",2]");
    check_bytes(b.data, b.len);
    buf_free(&b);
}

#define C(lit) check3(lit, sizeof(lit) - 1)

static void numbers(void)
{
    static const char *const n[] = {
        "0", "-0", "1", "-1", "0.0", "-0.0", "1.0", "0.1", "1e3", "1E3", "1e+3", "1e-3", "1.5e300", "-1.5e-300",
        "9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809",
        "18446744073709551615", "18446744073709551616", "123456789012345678901234567890",
        "1.7976931348623157e308", "1.7976931348623159e308", "1e308", "1e309", "-1e309", "5e-324", "2.5e-324",
        "1e-400", "4.9406564584124654e-324", "2.2250738585072014e-308", "0.30000000000000004", "100000000000000000000.0",
        "1e22", "1e23", "9007199254740993", "9007199254740993.0", "0.000001", "1e-7", "123.456e-2",
        "01", "00", "-", "+1", ".5", "5.", "1e", "1e+", "0x10", "1_000", "NaN", "Infinity", "-Infinity",
        "1.0e", "--1", "1..2", "1ee2", "1e2.5", "-01", "0e0", "0E-0", "-0e+0",
    };
    for (size_t i = 0; i < sizeof n / sizeof *n; i++) check3(n[i], strlen(n[i]));
}

static void strings(void)
{
    C("\"\"");
    C("\"abc\"");
    C("\"a\\u0000b\"");
    C("\"\\u0000\"");
    C("\"\\ud800\"");
    C("\"\\udc00\"");
    C("\"\\ud83d\\ude00\"");
    C("\"\\ud83d\"");
    C("\"\\ud83dx\"");
    C("\"\\ude00\\ud83d\"");
    C("\"\\/\"");
    C("\"\\b\\f\\n\\r\\t\\\"\\\\\"");
    C("\"\\x41\"");
    C("\"\\u00e9\"");
    C("\"\\u00E9\"");
    C("\"\\u12\"");
    C("\"\\uZZZZ\"");
    C("\"\\'\"");
    C("\"\xc3\xa9\"");                         /* é */
    C("\"\xe2\x82\xac\"");                     /* € */
    C("\"\xf0\x9f\x98\x80\"");                 /* emoji */
    C("\"\xc0\x80\"");                         /* overlong NUL */
    C("\"\xc1\xbf\"");                         /* overlong */
    C("\"\xe0\x80\xaf\"");                     /* overlong / */
    C("\"\xed\xa0\x80\"");                     /* encoded surrogate */
    C("\"\xf4\x90\x80\x80\"");                 /* above U+10FFFF */
    C("\"\xf5\x80\x80\x80\"");
    C("\"\xff\"");
    C("\"\x80\"");
    C("\"\xc3\"");                             /* truncated */
    C("\"\xe2\x82\"");
    C("\"\x7f\"");                             /* DEL is allowed raw */
    C("\"\x01\"");                             /* raw control */
    C("\"\x1f\"");
    C("\"a\tb\"");
    C("\"a\nb\"");
    C("\"unterminated");
    C("'single'");
    check3("\"a\0b\"", 5);                     /* raw NUL inside a string */
    check3("\"\0\"", 3);
}

static void objects(void)
{
    C("{}");
    C("[]");
    C("{\"a\":1}");
    C("{\"b\":1,\"a\":2}");
    C("{\"a\":1,\"a\":2}");                    /* duplicate */
    C("{\"a\":1,\"\\u0061\":2}");              /* duplicate after unescaping */
    C("{\"\\u0000\":1}");                      /* NUL in a key */
    C("{\"a\\u0000\":1}");
    C("{\"a\\u0000b\":1,\"a\":2}");
    C("{\"\":1}");
    C("{\"\xc3\xa9\":1,\"e\":2}");             /* key order by bytes */
    C("{\"aa\":1,\"a\":2,\"b\":3,\"A\":4}");
    C("{a:1}");
    C("{\"a\" 1}");
    C("{\"a\":1,}");
    C("[1,]");
    C("[,1]");
    C("{\"a\":1}}");
    C("{\"a\":1} x");
    C("{\"a\":1} ");
    C(" {\"a\":1}");
    C("\t\r\n{\"a\":1}\t\r\n");
    C("{\"a\":1}\v");
    C("\xef\xbb\xbf{}");                       /* BOM */
    C("{\"a\":[1,{\"b\":null}],\"c\":true,\"d\":false}");
    C("true");
    C("false");
    C("null");
    C("True");
    C("nul");
    C("nulll");
    C("");
    C(" ");
    C("[");
    C("{");
    C("]");
    C("{\"a\":1}{\"b\":2}");
    C("[1 2]");
    C("/* c */{}");
    check3("{\"v\":123\0}", 10);               /* raw NUL between tokens */
    check3("{\"v\":123}\0", 10);               /* raw NUL after the text */
    check3("\0{\"v\":1}", 8);
}

static void depth(void)
{
    for (int d = 60; d <= 70; d++) {
        struct buf b = {0};
        for (int i = 0; i < d; i++) buf_putc(&b, '[');
        for (int i = 0; i < d; i++) buf_putc(&b, ']');
        check_bytes(b.data, b.len);
        b.len = 0;
        for (int i = 0; i < d; i++) buf_puts(&b, "{\"a\":");
        buf_puts(&b, "1");
        for (int i = 0; i < d; i++) buf_putc(&b, '}');
        check_bytes(b.data, b.len);
        buf_free(&b);
    }
}

static void corpus_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "corpus %s: cannot open\n", dir);
        test_failures++;
        return;
    }
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) continue;
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        char *data = xmalloc((size_t)st.st_size + 1);
        size_t n = fread(data, 1, (size_t)st.st_size, f);
        fclose(f);
        check_bytes(data, n);
        free(data);
        files++;
    }
    closedir(d);
    printf("%s: %d files\n", dir, files);
    CHECK(files > 0);
}

int main(int argc, char **argv)
{
    numbers();
    strings();
    objects();
    depth();
    for (int i = 1; i < argc; i++) corpus_dir(argv[i]);
    printf("%d inputs\n", n_inputs);
    TEST_MAIN_END();
}
