/* Unit tests: util.c, names.c, json.c, peer.c (peer URLs) */
#include "test.h"
#include "core/util.h"
#include "core/names.h"
#include "core/json.h"
#include "net/peer.h"

static void test_sizes(void)
{
    uint64_t v;
    CHECK_INT(parse_size("16384", &v), 0); CHECK_INT(v, 16384);
    CHECK_INT(parse_size("8MiB", &v), 0); CHECK_INT(v, 8u << 20);
    CHECK_INT(parse_size("512k", &v), 0); CHECK_INT(v, 512u << 10);
    CHECK_INT(parse_size("1GiB", &v), 0); CHECK_INT(v, 1u << 30);
    CHECK_INT(parse_size("abc", &v), -1);
    CHECK_INT(parse_size("", &v), -1);
    CHECK_INT(parse_size("12XB", &v), -1);
    CHECK_INT(parse_size("99999999999999999999999", &v), -1);
    CHECK_INT(parse_size("18446744073709551615G", &v), -1);
    CHECK_INT(parse_u64("42", 2, 100, &v), 0); CHECK_INT(v, 42);
    CHECK_INT(parse_u64("420", 3, 100, &v), -1);
    CHECK_INT(parse_u64("-1", 2, 100, &v), -1);
}

static void test_names(void)
{
    CHECK(name_space_valid("a", 1));
    CHECK(name_space_valid("team-1_x", 8));
    CHECK(!name_space_valid("Team", 4));
    CHECK(!name_space_valid("-a", 2));
    CHECK(!name_space_valid("", 0));
    char big[80];
    memset(big, 'a', sizeof big);
    CHECK(name_space_valid(big, 63));
    CHECK(!name_space_valid(big, 64));
    CHECK(name_collection_valid("issues", 6));
    CHECK(!name_collection_valid("1issues", 7));
    CHECK(!name_collection_valid("is-sues", 7));
    CHECK(name_entity_id_valid("ISS-1", 5));
    CHECK(name_entity_id_valid("a.b:c~d_e-f", 11));
    CHECK(!name_entity_id_valid("..", 2));
    CHECK(!name_entity_id_valid(".hidden", 7));
    CHECK(!name_entity_id_valid("a/b", 3));
    CHECK(name_entity_id_valid(big, 80));
    CHECK(name_sha256_valid("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 64));
    CHECK(!name_sha256_valid("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", 64));
    CHECK(name_request_id_valid("abc-123", 7));
    CHECK(!name_request_id_valid("a b", 3));

    char out[64];
    CHECK_INT(name_pct_decode("a%2Db", 5, out, sizeof out), 3);
    CHECK(memcmp(out, "a-b", 3) == 0);
    CHECK_INT(name_pct_decode("a%2Fb", 5, out, sizeof out), -1);   /* no '/' smuggling */
    CHECK_INT(name_pct_decode("a%00b", 5, out, sizeof out), -1);
    CHECK_INT(name_pct_decode("a%2", 3, out, sizeof out), -1);
    CHECK_INT(name_pct_decode("a%zz", 4, out, sizeof out), -1);
    CHECK_INT(name_pct_decode("abc", 3, out, 2), -1);
}

static void test_ulid(void)
{
    char a[27], b[27];
    ulid_make(a, 1700000000000ull);
    ulid_make(b, 1700000000001ull);
    CHECK_INT(strlen(a), 26);
    CHECK(ulid_valid(a, 26));
    CHECK(strcmp(a, b) < 0);                  /* time-sortable */
    CHECK(!ulid_valid("0123456789ABCDEFGHJKMNPQRI", 26));    /* I is not Crockford */
    CHECK(!ulid_valid("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", 26));    /* overflow */
    CHECK(!ulid_valid(a, 25));
}

static void test_json_writer(void)
{
    struct buf b;
    buf_init(&b);
    json_str(&b, "a\"b\\c\n\x01", 7);
    CHECK_STR(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    buf_reset(&b);
    json_str(&b, "caf\xc3\xa9 \xff", 7);             /* valid UTF-8 kept, invalid byte replaced */
    CHECK_STR(b.data, "\"caf\xc3\xa9 \xef\xbf\xbd\"");
    buf_reset(&b);
    buf_putc(&b, '{');
    json_kv_str(&b, "a", "x");
    json_kv_u64(&b, "n", 18446744073709551615ull);
    json_kv_bool(&b, "t", true);
    json_kv_null(&b, "z");
    buf_putc(&b, '}');
    CHECK_STR(b.data, "{\"a\":\"x\",\"n\":18446744073709551615,\"t\":true,\"z\":null}");
    buf_free(&b);

    char ts[32];
    fmt_time_ms(ts, 1795958673123ull);
    CHECK_STR(ts, "2026-11-29T13:24:33.123Z");
    fmt_time_ms(ts, 951782400000ull);          /* leap day 2000 */
    CHECK_STR(ts, "2000-02-29T00:00:00.000Z");
    fmt_time_ms(ts, 0);
    CHECK_STR(ts, "1970-01-01T00:00:00.000Z");
    fmt_time_ms(ts, 4102444799999ull);         /* last ms of 2099 */
    CHECK_STR(ts, "2099-12-31T23:59:59.999Z");
    fmt_time_ms(ts, 1709251199000ull + 1);       /* 2024-02-29T23:59:59.001Z */
    CHECK_STR(ts, "2024-02-29T23:59:59.001Z");
    /* and back */
    static const uint64_t back[] = {1795958673123ull, 951782400000ull, 0, 4102444799999ull, 1709251199001ull,
                                    1735689599999ull /* 2024-12-31T23:59:59.999Z */};
    for (size_t i = 0; i < ARRAY_SIZE(back); i++) {
        uint64_t v = 1;
        fmt_time_ms(ts, back[i]);
        CHECK_INT(parse_time_ms(ts, strlen(ts), &v), 0);
        CHECK(v == back[i]);
    }
    static const char *const bad[] = {"2026-11-29T13:24:33Z", "2026-11-29T13:24:33.123+00:00", "2026-13-01T00:00:00.000Z",
                                      "2026-02-29T00:00:00.000Z", "1900-02-29T00:00:00.000Z", "2026-11-29 13:24:33.123Z",
                                      "2026-11-29T24:00:00.000Z", "1969-12-31T23:59:59.999Z", "2026-11-29T13:24:33.12xZ",
                                      "2026-04-31T00:00:00.000Z", ""};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        uint64_t v;
        CHECK_INT(parse_time_ms(bad[i], strlen(bad[i]), &v), -1);
    }
    uint64_t v;
    CHECK_INT(parse_time_ms("2000-02-29T00:00:00.000Z", 24, &v), 0);
    CHECK(v == 951782400000ull);
}

static void test_json_parse(void)
{
    struct json_err e;
    json_t *v = json_parse("{\"a\":1}", 7, true, &e);
    CHECK(v != NULL);
    json_decref(v);
    CHECK(json_parse("[1]", 3, true, &e) == NULL);
    CHECK_STR(e.code, "not_an_object");
    CHECK(json_parse("{\"a\":", 5, true, &e) == NULL);
    CHECK_STR(e.code, "invalid_json");
    CHECK(strstr(e.message, "line 1") != NULL);
    CHECK(json_parse("", 0, true, &e) == NULL);
    CHECK(json_parse("{\"a\":1,\"a\":2}", 13, true, &e) == NULL);   /* duplicate keys */
    char deep[400];
    size_t n = 0;
    deep[n++] = '{'; deep[n++] = '"'; deep[n++] = 'a'; deep[n++] = '"'; deep[n++] = ':';
    for (int i = 0; i < 100; i++) deep[n++] = '[';
    for (int i = 0; i < 100; i++) deep[n++] = ']';
    deep[n++] = '}';
    CHECK(json_parse(deep, n, true, &e) == NULL);
    CHECK_STR(e.code, "too_deep");
    /* brackets inside strings do not count */
    const char *s = "{\"a\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}";
    v = json_parse(s, strlen(s), true, &e);
    CHECK(v != NULL);
    json_decref(v);
}

static void test_json_members(void)
{
    static const char *const allowed[] = {"peer_url", "wait", NULL};
    static const char *const none[] = {NULL};
    struct json_err e;
    const char *t1 = "{\"peer_url\":\"x\",\"wait\":true}", *t2 = "{\"wait\":true,\"forse\":1}";
    json_t *v = json_parse(t1, strlen(t1), true, &e);
    CHECK(v != NULL);
    CHECK(json_unknown_member(v, allowed) == NULL);
    CHECK_STR(json_unknown_member(v, none), "peer_url");
    json_decref(v);
    v = json_parse(t2, strlen(t2), true, &e);
    CHECK(v != NULL);
    CHECK_STR(json_unknown_member(v, allowed), "forse");
    json_unknown_member_err(&e, "the request body", "forse", allowed);
    CHECK_STR(e.code, "unknown_member");
    CHECK_STR(e.member, "forse");
    CHECK_STR(e.message, "unknown member \"forse\" in the request body; it takes: peer_url, wait");
    json_unknown_member_err(&e, "the request body", "x", none);
    CHECK_STR(e.message, "unknown member \"x\" in the request body; it takes no members");
    json_decref(v);
    CHECK(json_member_known("wait", allowed));
    CHECK(!json_member_known("Wait", allowed));
    CHECK(!json_member_known("", allowed));
}

static void test_header_tokens(void)
{
    CHECK(header_has_token("gzip, deflate, br", 17, "gzip"));
    CHECK(header_has_token("deflate, GZIP", 13, "gzip"));
    CHECK(!header_has_token("gzip;q=0", 8, "gzip"));
    CHECK(header_has_token("gzip;q=0.5", 10, "gzip"));
    CHECK(!header_has_token("x-gzip", 6, "gzip"));
    CHECK(!header_has_token("", 0, "gzip"));
}

static void test_ct_equal(void)
{
    CHECK(ct_equal("abcdef", "abcdef", 6));
    CHECK(!ct_equal("abcdef", "abcdeg", 6));
}

#define IN(nets, n, ip) cidr_match(nets, n, ip, strlen(ip))

static void test_cidr(void)
{
    struct cidr n[4];
    CHECK(cidr_parse("10.0.0.0/8", 10, &n[0]));
    CHECK(cidr_parse("192.0.2.7", 9, &n[1]));
    CHECK(cidr_parse("fd00::/8", 8, &n[2]));
    CHECK(cidr_parse("172.16.0.0/12", 13, &n[3]));
    CHECK(IN(n, 4, "10.1.2.3"));
    CHECK(IN(n, 4, "10.255.255.255"));
    CHECK(!IN(n, 4, "11.0.0.1"));
    CHECK(IN(n, 4, "192.0.2.7"));
    CHECK(!IN(n, 4, "192.0.2.8"));           /* a bare address is a /32 */
    CHECK(IN(n, 4, "172.31.255.1"));          /* /12: 172.16-172.31 */
    CHECK(!IN(n, 4, "172.32.0.1"));
    CHECK(!IN(n, 4, "172.15.255.255"));
    CHECK(IN(n, 4, "fd12:3456::1"));
    CHECK(!IN(n, 4, "fe80::1"));
    CHECK(!IN(n, 4, "::ffff:10.1.2.3"));      /* v4-mapped v6 is another family */
    CHECK(!IN(n, 4, "not-an-ip"));
    CHECK(!IN(n, 4, ""));
    CHECK(!IN(n, 0, "10.1.2.3"));
    struct cidr x;
    CHECK(!cidr_parse("10.0.0.0/33", 11, &x));
    CHECK(!cidr_parse("::/129", 6, &x));
    CHECK(!cidr_parse("10.0.0.0/", 9, &x));
    CHECK(!cidr_parse("10.0.0/8", 8, &x));
    CHECK(!cidr_parse("example.com", 11, &x));
    CHECK(cidr_parse("0.0.0.0/0", 9, &x));
    CHECK(cidr_match(&x, 1, "203.0.113.9", 11));
    CHECK(cidr_parse("::1", 3, &x) && x.bits == 128);
}

static void test_peer_url(void)
{
    char out[PEER_URL_MAX + 1], why[160];
    static const char *const ok[][2] = {
        {"http://127.0.0.1:7420", "http://127.0.0.1:7420"},
        {"http://127.0.0.1:7420/", "http://127.0.0.1:7420"},
        {"http://127.0.0.1:7420/api/v1", "http://127.0.0.1:7420"},
        {"http://127.0.0.1:7420/api/v1/", "http://127.0.0.1:7420"},
        {"HTTPS://Sync.Example.COM/snapsync/api/v1", "https://sync.example.com/snapsync"},
        {"https://example.com/api/snapsync/", "https://example.com/api/snapsync"},
        {"http://[::1]:7420/api/v1", "http://[::1]:7420"},
        {"http://localhost", "http://localhost"},
        {"http://h/apiv1", "http://h/apiv1"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        CHECK_INT(peer_base_url(ok[i][0], out, sizeof out, why, sizeof why), 0);
        CHECK_STR(out, ok[i][1]);
    }
    static const char *const bad[] = {
        "", "127.0.0.1:7420", "ftp://h", "http://", "http:///x", "http://:7420", "http://h:", "http://h:0",
        "http://h:65536", "http://h:12a", "http://u:p@h", "http://h/?x=1", "http://h/#top", "http://h /x",
        "http://h/api/v1/spaces/a", "http://h/api/v1/spaces", "http://h/api/v1/api/v1", "http://h\x01",
        "http://[::1", "http://[zz]", "http://h_!/", "http://h/a b", "mailto:x@h",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        int rc = peer_base_url(bad[i], out, sizeof out, why, sizeof why);
        if (rc != -1) fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK_INT(rc, -1);
        CHECK(why[0] != '\0');
    }
    char big[PEER_URL_MAX + 20];
    memset(big, 'a', sizeof big);
    memcpy(big, "http://h/", 9);
    big[sizeof big - 1] = '\0';
    CHECK_INT(peer_base_url(big, out, sizeof out, why, sizeof why), -1);
}

int main(void)
{
    test_peer_url();
    test_cidr();
    test_sizes();
    test_names();
    test_ulid();
    test_json_writer();
    test_json_parse();
    test_json_members();
    test_header_tokens();
    test_ct_equal();
    TEST_MAIN_END();
}
