/* test_replicate.c - the winner rule and the replicate decisions on plain
 * inputs, without a server or a database: which of two revisions wins
 * (generation, then hash; live beats deleted), what rep_decide() does with
 * an incoming revision, the result each decision reports, and
 * rep_batch_parse() on a page. */
#include <stdbool.h>
#include <string.h>

#include "core/entity.h"
#include "svc/replicate.h"
#include "test.h"

#define A1 "1-aaaaaaaaaaaaaaaa"
#define B1 "1-bbbbbbbbbbbbbbbb"
#define A2 "2-aaaaaaaaaaaaaaaa"
#define F2 "2-ffffffffffffffff"
#define B3 "3-bbbbbbbbbbbbbbbb"
#define A10 "10-aaaaaaaaaaaaaaaa"

/* a beats b, and b loses to a, whichever way round it is asked */
static void wins(const char *a, bool ad, const char *b, bool bd)
{
    CHECK(rev_winner(a, ad, b, bd) > 0);
    CHECK(rev_winner(b, bd, a, ad) < 0);
}

static void test_winner(void)
{
    /* a higher generation wins, whatever the hashes */
    wins(A2, false, B1, false);
    wins(B3, false, F2, false);
    /* numerically, not as text: 10 beats 2 */
    wins(A10, false, F2, false);
    /* same generation: the higher hash */
    wins(F2, false, A2, false);
    wins(B1, false, A1, false);
    /* a live revision beats a deleted one, even of a lower generation */
    wins(A1, false, B3, true);
    wins(A2, false, F2, true);
    /* both deleted: the usual order */
    wins(B3, true, A2, true);
    /* equal revisions: neither wins */
    CHECK_INT(rev_winner(A2, false, A2, false), 0);
    CHECK_INT(rev_winner(A2, true, A2, true), 0);
}

static void test_decide(void)
{
    /* nothing here: insert */
    CHECK_INT(rep_decide(NULL, false, "", A1, false, ""), REP_INSERT);
    CHECK_INT(rep_decide(NULL, false, "", A1, true, ""), REP_INSERT);
    /* the same revision, or one in our history: known */
    CHECK_INT(rep_decide(A2, false, A1, A2, false, A1), REP_IGNORE);
    CHECK_INT(rep_decide(B3, false, A2 " " A1, A2, false, A1), REP_IGNORE);
    /* equal revs are known even when the deleted flags disagree: the rev
     * names the revision */
    CHECK_INT(rep_decide(A2, true, A1, A2, false, A1), REP_IGNORE);
    /* a descendant of ours: fast-forward, even to a delete */
    CHECK_INT(rep_decide(A2, false, A1, B3, false, A2 " " A1), REP_FASTFORWARD);
    CHECK_INT(rep_decide(A2, false, A1, B3, true, A2 " " A1), REP_FASTFORWARD);
    /* divergent: the winner rule decides, the same on both sides */
    CHECK_INT(rep_decide(A2, false, A1, F2, false, A1), REP_REMOTE_WINS);
    CHECK_INT(rep_decide(F2, false, A1, A2, false, A1), REP_LOCAL_WINS);
    CHECK_INT(rep_decide(B3, false, A2 " " A1, F2, false, A1), REP_LOCAL_WINS);
    CHECK_INT(rep_decide(F2, false, A1, B3, false, A2 " " A1), REP_REMOTE_WINS);
    /* divergent, one deleted: the live one wins on either side */
    CHECK_INT(rep_decide(B3, true, A2 " " A1, F2, false, A1), REP_REMOTE_WINS);
    CHECK_INT(rep_decide(F2, false, A1, B3, true, A2 " " A1), REP_LOCAL_WINS);
}

static void test_results(void)
{
    CHECK_STR(rep_result_status(REP_INSERT), "applied");
    CHECK_STR(rep_result_status(REP_FASTFORWARD), "applied");
    CHECK_STR(rep_result_status(REP_IGNORE), "ignored");
    CHECK_STR(rep_result_status(REP_LOCAL_WINS), "conflict");
    CHECK_STR(rep_result_status(REP_REMOTE_WINS), "conflict");
    CHECK(!rep_action_conflicts(REP_INSERT));
    CHECK(!rep_action_conflicts(REP_IGNORE));
    CHECK(!rep_action_conflicts(REP_FASTFORWARD));
    CHECK(rep_action_conflicts(REP_LOCAL_WINS));
    CHECK(rep_action_conflicts(REP_REMOTE_WINS));
}

#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_parse(void)
{
    const char page[] =
        "{\"changes\":["
        "{\"collection\":\"notes\",\"id\":\"n1\",\"rev\":\"" A2 "\",\"revs\":[\"" A2 "\",\"" A1 "\"],"
        "\"body\":{\"b\":1,\"a\":[2],\"_blobs\":[\"" SHA "\",\"" SHA "\"]}},"
        "{\"collection\":\"notes\",\"id\":\"n2\",\"rev\":\"" B1 "\",\"deleted\":true},"
        "{\"collection\":\"notes\",\"id\":\"n3\",\"rev\":\"nope\",\"body\":{}},"
        "{\"collection\":\"notes\",\"id\":\"n4\",\"rev\":\"" F2 "\",\"body\":{},"
        "\"conflicts\":[{\"rev\":\"" A2 "\",\"body\":{\"x\":1}}]}"
        "],\"last_version\":42,\"more\":true,\"source_instance\":\"01ARZ3NDEKTSV4RRFFQ69G5FAV\"}";
    struct rep_batch b;
    struct json_err err;
    CHECK_INT(rep_batch_parse(&b, page, strlen(page), &err), 0);
    CHECK_INT(b.n, 4);
    CHECK(b.has_last && b.more);
    CHECK_INT(b.last_version, 42);
    CHECK_STR(b.source_instance, "01ARZ3NDEKTSV4RRFFQ69G5FAV");
    CHECK_STR(b.unknown, "");
    /* the body canonical (keys sorted), the history without the rev itself */
    CHECK_STR(b.items[0].rev, A2);
    CHECK_STR(b.text.data + b.items[0].hist_off, A1);
    CHECK_STR(b.text.data + b.items[0].body_off, "{\"_blobs\":[\"" SHA "\",\"" SHA "\"],\"a\":[2],\"b\":1}");
    CHECK(b.items[0].err_code == NULL);
    /* a blob named twice is listed once */
    CHECK_INT(b.nblobs, 1);
    CHECK_STR(b.blobs[0], SHA);
    /* a tombstone has no body */
    CHECK(b.items[1].deleted && !b.items[1].has_body);
    /* a bad entity is its own error, named when its names are valid */
    CHECK_STR(b.items[2].err_code, "invalid_rev");
    CHECK_STR(b.items[2].collection, "notes");
    CHECK_STR(b.items[2].id, "n3");
    /* conflict records travel with their entity */
    CHECK_INT(b.items[3].nconf, 1);
    CHECK_STR(b.confs[b.items[3].conf_first].rev, A2);
    rep_batch_free(&b);

    /* "entities" wins over "changes"; an unknown member is noted, not refused */
    const char ent[] = "{\"changes\":[{}],\"entities\":[],\"extra\":1}";
    CHECK_INT(rep_batch_parse(&b, ent, strlen(ent), &err), 0);
    CHECK_INT(b.n, 0);
    CHECK_STR(b.unknown, "extra");
    CHECK(!b.has_last);
    rep_batch_free(&b);

    /* no array at all: the whole text is refused */
    const char none[] = "{\"entities\":3}";
    CHECK_INT(rep_batch_parse(&b, none, strlen(none), &err), -1);
    CHECK_STR(err.code, "invalid_body");
    rep_batch_free(&b);
    const char bad[] = "{\"entities\":[";
    CHECK_INT(rep_batch_parse(&b, bad, strlen(bad), &err), -1);
    rep_batch_free(&b);
}

int main(void)
{
    test_winner();
    test_decide();
    test_results();
    test_parse();
    TEST_MAIN_END();
}
