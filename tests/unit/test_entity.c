/* Unit tests: entity.c - canonical JSON, revs, digest. */
#include "test.h"
#include "core/entity.h"

static void test_canonical(void)
{
    struct json_err e;
    size_t n;
    char *a = entity_canonical("{ \"b\": [1, 2, {\"y\":1,\"x\":2}], \"a\" : \"\\u00e9\" }", 46, true, &n, &e);
    CHECK(a != NULL);
    CHECK_STR(a, "{\"a\":\"\xc3\xa9\",\"b\":[1,2,{\"x\":2,\"y\":1}]}");
    CHECK_INT(n, strlen(a));
    const char *fixed = "{\"a\":\"\xc3\xa9\",\"b\":[1,2,{\"x\":2,\"y\":1}]}";
    char *b = entity_canonical(fixed, strlen(fixed), true, &n, &e);
    CHECK_STR(a, b);               /* canonical form is a fixed point */
    free(a);
    free(b);
    const char *nums = "{\"r\":1.5,\"i\":-0,\"big\":9007199254740993}";
    a = entity_canonical(nums, strlen(nums), true, &n, &e);
    CHECK_STR(a, "{\"big\":9007199254740993,\"i\":0,\"r\":1.5}");
    free(a);
    CHECK(entity_canonical("[1]", 3, true, &n, &e) == NULL);
    CHECK_STR(e.code, "not_an_object");
    CHECK(entity_canonical("{\"a\":1} x", 9, true, &n, &e) == NULL);
    CHECK_STR(e.code, "invalid_json");
}

static void test_revs(void)
{
    char r1[REV_MAX], r1b[REV_MAX], r2[REV_MAX], r2x[REV_MAX], d2[REV_MAX];
    rev_make(NULL, false, "{\"a\":1}", 7, r1);
    rev_make(NULL, false, "{\"a\":1}", 7, r1b);
    CHECK_STR(r1, r1b);                                 /* deterministic */
    CHECK(strncmp(r1, "1-", 2) == 0);
    CHECK_INT(strlen(r1), 18);
    rev_make(r1, false, "{\"a\":2}", 7, r2);
    CHECK(strncmp(r2, "2-", 2) == 0);
    rev_make(r1, false, "{\"a\":3}", 7, r2x);
    CHECK(strcmp(r2, r2x) != 0);                        /* content matters */
    rev_make(r1, true, NULL, 0, d2);
    CHECK(strncmp(d2, "2-", 2) == 0);
    CHECK(strcmp(d2, r2) != 0);                          /* deletion matters */
    char r3[REV_MAX];
    rev_make(r2, false, "{\"a\":1}", 7, r3);
    CHECK(strcmp(r3 + 2, r1 + 2) != 0);                  /* parent matters */

    CHECK(rev_valid(r1));
    CHECK(!rev_valid("0-abc"));
    CHECK(!rev_valid("x-abc"));
    CHECK(!rev_valid("1-"));
    CHECK(!rev_valid("1-ABC"));
    CHECK(!rev_valid("1abc"));
    CHECK(!rev_valid(NULL));
    /* N from 1 to REV_N_MAX (2^53 - 1), one spelling: nothing a client or
     * peer sends can make the next edit wrap */
    CHECK(rev_valid("9007199254740991-abc"));
    CHECK(!rev_valid("9007199254740992-abc"));
    CHECK(!rev_valid("18446744073709551615-abc"));
    CHECK(!rev_valid("18446744073709551616-abc"));
    CHECK(!rev_valid("01-abc"));
    CHECK(!rev_valid("00-abc"));
    CHECK(!rev_valid("-abc"));
    char next[REV_MAX];
    CHECK_INT(rev_make("9007199254740990-abc", false, "{}", 2, next), 0);
    CHECK(strncmp(next, "9007199254740991-", 17) == 0);
    CHECK(rev_valid(next));
    CHECK_INT(rev_make(next, false, "{}", 2, next), -1);     /* at the maximum: refused, never wrapped */
    CHECK_STR(next, "");
    CHECK_INT(rev_make("9007199254740991-abc", true, NULL, 0, next), -1);
    CHECK_INT(rev_make(NULL, false, "{}", 2, next), 0);
    CHECK(rev_cmp("2-aaa", "10-aaa") < 0);               /* numeric N */
    CHECK(rev_cmp("3-bbb", "3-aaa") > 0);
    CHECK(rev_cmp("3-aaa", "3-aaa") == 0);
}

static void test_digest(void)
{
    struct digest a = {{0}}, b = {{0}}, i1, i2, i3;
    digest_item(&i1, "issues", "1", "1-aa", false);
    digest_item(&i2, "issues", "2", "1-bb", false);
    digest_item(&i3, "issues", "2", "2-cc", false);
    /* order independence */
    digest_xor(&a, &i1); digest_xor(&a, &i2);
    digest_xor(&b, &i2); digest_xor(&b, &i1);
    CHECK(memcmp(a.b, b.b, 32) == 0);
    /* update = remove old + add new */
    digest_xor(&a, &i2); digest_xor(&a, &i3);
    struct digest c = {{0}};
    digest_xor(&c, &i1); digest_xor(&c, &i3);
    CHECK(memcmp(a.b, c.b, 32) == 0);
    /* field boundaries matter: ("ab","c") != ("a","bc") */
    struct digest x, y;
    digest_item(&x, "ab", "c", "1-a", false);
    digest_item(&y, "a", "bc", "1-a", false);
    CHECK(memcmp(x.b, y.b, 32) != 0);
    digest_item(&y, "ab", "c", "1-a", true);
    CHECK(memcmp(x.b, y.b, 32) != 0);
    char hex[65];
    digest_hex(&a, hex);
    struct digest back;
    CHECK_INT(digest_from_hex(&back, hex), 0);
    CHECK(memcmp(back.b, a.b, 32) == 0);
    CHECK_INT(digest_from_hex(&back, "zz"), -1);
}

static void test_replication_rule(void)
{
    /* a history: 1-a <- 2-b <- 3-c */
    CHECK_INT(rep_decide(NULL, false, "", "1-a", false, ""), REP_INSERT);
    CHECK_INT(rep_decide("2-b", false, "1-a", "2-b", false, "1-a"), REP_IGNORE);      /* same */
    CHECK_INT(rep_decide("3-c", false, "2-b 1-a", "2-b", false, "1-a"), REP_IGNORE);  /* older */
    CHECK_INT(rep_decide("2-b", false, "1-a", "3-c", false, "2-b 1-a"), REP_FASTFORWARD);
    /* divergent: 2-b vs 2-f (both from 1-a) -> higher hash wins, both sides agree */
    CHECK_INT(rep_decide("2-b", false, "1-a", "2-f", false, "1-a"), REP_REMOTE_WINS);
    CHECK_INT(rep_decide("2-f", false, "1-a", "2-b", false, "1-a"), REP_LOCAL_WINS);
    /* higher N wins over a higher hash */
    CHECK_INT(rep_decide("3-a", false, "2-b 1-a", "2-z", false, "1-a"), REP_LOCAL_WINS);
    CHECK_INT(rep_decide("2-f", false, "1-a", "3-a", false, "2-b 1-a"), REP_REMOTE_WINS);
    /* an edit racing a delete: the edit wins on both sides, whatever N */
    CHECK_INT(rep_decide("3-d", true, "2-b 1-a", "2-e", false, "1-a"), REP_REMOTE_WINS);
    CHECK_INT(rep_decide("2-e", false, "1-a", "3-d", true, "2-b 1-a"), REP_LOCAL_WINS);
    /* the rule is symmetric: for any pair exactly one side keeps its own */
    const char *revs[] = {"1-a", "2-b", "2-c", "3-a", "10-0"};
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++)
            for (int di = 0; di < 2; di++)
                for (int dj = 0; dj < 2; dj++) {
                    if (i == j) continue;
                    enum rep_action x = rep_decide(revs[i], di, "", revs[j], dj, "");
                    enum rep_action y = rep_decide(revs[j], dj, "", revs[i], di, "");
                    CHECK((x == REP_LOCAL_WINS && y == REP_REMOTE_WINS) || (x == REP_REMOTE_WINS && y == REP_LOCAL_WINS));
                }
    CHECK(rev_in_history("3-c 2-b 1-a", "2-b"));
    CHECK(!rev_in_history("3-c 2-b 1-a", "2-"));
    CHECK(!rev_in_history("", "1-a"));
}

int main(void)
{
    test_replication_rule();
    test_canonical();
    test_revs();
    test_digest();
    TEST_MAIN_END();
}
