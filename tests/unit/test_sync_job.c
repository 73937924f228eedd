/* test_sync_job.c - a sync job's state machine without a server, loop or
 * network: the names of statuses and phases, which moves are legal, how a
 * job ends (completed, partial, failed), the checkpoint decisions, retries,
 * progress, the page tail scan and what the job records of refused items
 * and conflicts. */
#include <stdlib.h>
#include <string.h>

#include "svc/sync_job.h"
#include "test.h"

static struct sync_job *job(const char *direction)
{
    struct sync_job *j = calloc(1, sizeof *j);
    sync_job_state_init(j, direction);
    return j;
}

static void job_done(struct sync_job *j)
{
    json_decref(j->conflicted);
    free(j);
}

static void test_names(void)
{
    CHECK_STR(sync_status_name(SYNC_RUNNING), "running");
    CHECK_STR(sync_status_name(SYNC_COMPLETED), "completed");
    CHECK_STR(sync_status_name(SYNC_PARTIAL), "partial");
    CHECK_STR(sync_status_name(SYNC_FAILED), "failed");
    CHECK_STR(sync_phase_name(SYNC_PHASE_STATUS), "status");
    CHECK_STR(sync_phase_name(SYNC_PHASE_BOOTSTRAP), "bootstrap");
    CHECK_STR(sync_phase_name(SYNC_PHASE_PULL), "pull");
    CHECK_STR(sync_phase_name(SYNC_PHASE_PUSH), "push");
    CHECK_STR(sync_phase_name(SYNC_PHASE_DONE), "done");
    CHECK(!sync_status_terminal(SYNC_RUNNING));
    CHECK(sync_status_terminal(SYNC_COMPLETED));
    CHECK(sync_status_terminal(SYNC_PARTIAL));
    CHECK(sync_status_terminal(SYNC_FAILED));
}

static void test_transitions(void)
{
    /* every pair: only the forward moves of the diagram (sync_job.h) */
    static const bool legal[5][5] = {
        /* to:                   status bootstrap pull  push   done */
        [SYNC_PHASE_STATUS] =    {false, true,  true,  true,  false},
        [SYNC_PHASE_BOOTSTRAP] = {false, false, true,  false, false},
        [SYNC_PHASE_PULL] =      {false, false, false, true,  true},
        [SYNC_PHASE_PUSH] =      {false, false, false, false, true},
        [SYNC_PHASE_DONE] =      {false, false, false, false, true},
    };
    for (int from = 0; from < 5; from++)
        for (int to = 0; to < 5; to++) CHECK_INT(sync_phase_legal(from, to), legal[from][to]);

    struct sync_job *j = job("both");
    CHECK(j->pull && j->push);
    CHECK_INT(j->status, SYNC_RUNNING);
    CHECK_INT(j->phase, SYNC_PHASE_STATUS);
    CHECK_INT(sync_phase_after_status(j), SYNC_PHASE_PULL);
    CHECK_INT(sync_phase_after_pull(j), SYNC_PHASE_PUSH);
    job_done(j);
    j = job("pull");
    CHECK(j->pull && !j->push);
    CHECK_STR(j->direction, "pull");
    CHECK_INT(sync_phase_after_status(j), SYNC_PHASE_PULL);
    CHECK_INT(sync_phase_after_pull(j), SYNC_PHASE_DONE);
    job_done(j);
    j = job("push");
    CHECK(!j->pull && j->push);
    CHECK_INT(sync_phase_after_status(j), SYNC_PHASE_PUSH);
    sync_phase_set(j, SYNC_PHASE_PUSH);
    sync_phase_set(j, SYNC_PHASE_DONE);
    CHECK_INT(j->phase, SYNC_PHASE_DONE);
    job_done(j);
}

static void test_end(void)
{
    /* ran to its end, everything applied: completed */
    struct sync_job *j = job("both");
    sync_phase_set(j, SYNC_PHASE_PULL);
    sync_phase_set(j, SYNC_PHASE_PUSH);
    sync_phase_set(j, SYNC_PHASE_DONE);
    CHECK(sync_end(j, 0, NULL));
    CHECK_INT(j->status, SYNC_COMPLETED);
    CHECK_INT(j->phase, SYNC_PHASE_DONE);
    CHECK_STR(j->error, "");
    /* ended once: a later end changes nothing */
    CHECK(!sync_end(j, 502, "late"));
    CHECK_INT(j->status, SYNC_COMPLETED);
    CHECK_STR(j->error, "");
    job_done(j);

    /* ran to its end with items it could not apply: partial, 502 */
    j = job("pull");
    sync_phase_set(j, SYNC_PHASE_PULL);
    sync_phase_set(j, SYNC_PHASE_DONE);
    j->errors = 1;
    CHECK(sync_end(j, 0, NULL));
    CHECK_INT(j->status, SYNC_PARTIAL);
    CHECK_INT(j->fail_status, 502);
    CHECK_STR(j->error, "1 item could not be applied; error_items describes it");
    job_done(j);
    j = job("pull");
    sync_phase_set(j, SYNC_PHASE_PULL);
    sync_phase_set(j, SYNC_PHASE_DONE);
    j->errors = 3;
    sync_end(j, 0, NULL);
    CHECK_STR(j->error, "3 items could not be applied; error_items describes them");
    job_done(j);
    j = job("pull");
    sync_phase_set(j, SYNC_PHASE_PULL);
    sync_phase_set(j, SYNC_PHASE_DONE);
    j->errors = SYNC_ERROR_ITEMS + 1;
    sync_end(j, 0, NULL);
    CHECK_STR(j->error, "11 items could not be applied; error_items describes the first ones");
    job_done(j);

    /* an error fails the job, whatever it applied; the phase stays */
    j = job("both");
    sync_phase_set(j, SYNC_PHASE_PULL);
    j->errors = 2;
    CHECK(sync_end(j, 504, "pull: the peer could not be reached: timeout"));
    CHECK_INT(j->status, SYNC_FAILED);
    CHECK_INT(j->phase, SYNC_PHASE_PULL);
    CHECK_INT(j->fail_status, 504);
    CHECK_STR(j->error, "pull: the peer could not be reached: timeout");
    job_done(j);
    /* a failure without a status is a local one: 500 */
    j = job("push");
    CHECK(sync_end(j, 0, "reading checkpoints failed"));
    CHECK_INT(j->status, SYNC_FAILED);
    CHECK_INT(j->phase, SYNC_PHASE_STATUS);
    CHECK_INT(j->fail_status, 500);
    job_done(j);
}

static void settle_setup(struct sync_job *j, const char *pull_uid, uint64_t cp_pull, const char *push_uid,
                         uint64_t cp_push, uint64_t peer_version)
{
    strcpy(j->peer_uid, "01ARZ3NDEKTSV4RRFFQ69G5FAV");
    strcpy(j->cp_pull_uid, pull_uid);
    strcpy(j->cp_push_uid, push_uid);
    j->cp_pull = cp_pull;
    j->cp_push = cp_push;
    j->peer_version = peer_version;
    j->cp_loaded = true;
}

static void test_checkpoints(void)
{
    const char *uid = "01ARZ3NDEKTSV4RRFFQ69G5FAV", *other = "01BX5ZZKBKACTAV9WEVGEMMVRZ";
    /* both checkpoints of this incarnation, nothing new on either side */
    struct sync_job *j = job("both");
    settle_setup(j, uid, 10, uid, 7, 10);
    CHECK(!sync_checkpoints_settle(j, 7));
    CHECK_INT(j->phase, SYNC_PHASE_PULL);
    CHECK_INT(j->fetch_since, 10);
    CHECK(!j->fetch_more);
    CHECK_INT(j->push_sent, 7);
    CHECK_INT(j->push_target, 7);
    job_done(j);
    /* new changes here: something to push */
    j = job("both");
    settle_setup(j, uid, 10, uid, 7, 10);
    CHECK(sync_checkpoints_settle(j, 8));
    job_done(j);
    /* a pull checkpoint of another incarnation of the peer's space, or
     * past what the peer has, is dropped: a full pull */
    j = job("pull");
    settle_setup(j, other, 10, uid, 7, 20);
    CHECK(sync_checkpoints_settle(j, 0));
    CHECK_INT(j->cp_pull, 0);
    CHECK_STR(j->cp_pull_uid, uid);
    CHECK(j->fetch_more);
    job_done(j);
    j = job("pull");
    settle_setup(j, uid, 30, uid, 0, 20);
    CHECK(sync_checkpoints_settle(j, 0));
    CHECK_INT(j->cp_pull, 0);
    CHECK_INT(j->pull_from, 0);
    job_done(j);
    /* a push checkpoint of another incarnation: everything is pushed */
    j = job("push");
    settle_setup(j, uid, 5, other, 7, 5);
    CHECK(sync_checkpoints_settle(j, 7));
    CHECK_INT(j->phase, SYNC_PHASE_PUSH);
    CHECK_INT(j->cp_push, 0);
    CHECK_INT(j->push_from, 0);
    job_done(j);

    /* after a push page: the pull checkpoint may skip the peer's versions
     * that are all ours, only if nothing else happened there */
    j = job("both");
    settle_setup(j, uid, 10, uid, 0, 10);
    sync_checkpoints_settle(j, 5);
    CHECK_INT(sync_push_pull_to(j, 10, 15), 15);
    CHECK_INT(sync_push_pull_to(j, 11, 15), 0);
    job_done(j);
    /* a push-only job with no pull checkpoint of this peer space never
     * moves one */
    j = job("push");
    CHECK_INT(sync_push_pull_to(j, 0, 15), 0);
    job_done(j);
}

static void test_retries(void)
{
    CHECK(sync_peer_transient(0, true, false));        /* unreachable */
    CHECK(sync_peer_transient(429, false, false));
    CHECK(sync_peer_transient(500, false, false));
    CHECK(sync_peer_transient(502, false, false));
    CHECK(sync_peer_transient(503, false, false));
    CHECK(sync_peer_transient(504, false, false));
    CHECK(!sync_peer_transient(0, true, true));        /* timed out: never */
    CHECK(!sync_peer_transient(401, false, false));
    CHECK(!sync_peer_transient(404, false, false));
    CHECK(!sync_peer_transient(200, false, false));
}

static void test_percent(void)
{
    struct sync_job *j = job("both");
    j->pull_from = 0;
    j->peer_version = 100;
    j->cp_pull = 50;
    j->push_from = 0;
    j->push_target = 10;
    sync_phase_set(j, SYNC_PHASE_PULL);
    CHECK_INT(sync_percent(j), 25);                    /* half the pull, none of the push */
    j->cp_pull = 100;
    sync_phase_set(j, SYNC_PHASE_PUSH);
    j->push_sent = 5;
    CHECK_INT(sync_percent(j), 75);
    j->push_sent = 10;
    CHECK_INT(sync_percent(j), 99);                    /* 100 only once done */
    sync_phase_set(j, SYNC_PHASE_DONE);
    CHECK_INT(sync_percent(j), 100);
    job_done(j);
}

static void test_tail(void)
{
    uint64_t last = 0;
    bool more = false;
    const char a[] = "{\"changes\":[],\"last_version\":1234,\"more\":true}";
    CHECK(sync_tail_scan(a, strlen(a), &last, &more));
    CHECK_INT(last, 1234);
    CHECK(more);
    const char b[] = "{\"changes\":[],\"last_version\":7,\"more\":false}";
    CHECK(sync_tail_scan(b, strlen(b), &last, &more));
    CHECK_INT(last, 7);
    CHECK(!more);
    const char c[] = "{\"changes\":[],\"last_version\":7,\"more\":false,\"x\":1}";
    CHECK(!sync_tail_scan(c, strlen(c), &last, &more));
    const char d[] = "{\"changes\":[],\"more\":false,\"last_version\":7}";
    CHECK(!sync_tail_scan(d, strlen(d), &last, &more));
    CHECK(!sync_tail_scan("", 0, &last, &more));
}

static void test_records(void)
{
    struct sync_job *j = job("both");
    for (int i = 0; i < SYNC_ERROR_ITEMS + 5; i++) sync_error_item_add(j, "push", "notes", "n1", "bad", "why");
    CHECK_INT(j->nerror_items, SYNC_ERROR_ITEMS);
    /* names a peer sent that are not valid names are left out; no code:
     * "error" */
    j->nerror_items = 0;
    sync_error_item_add(j, "pull", "no such/collection", "n1", NULL, NULL);
    CHECK_STR(j->error_items[0].collection, "");
    CHECK_STR(j->error_items[0].id, "");
    CHECK_STR(j->error_items[0].error, "error");
    /* conflicts count entities: the same one seen twice is one */
    sync_conflict_seen(j, "notes", "n1");
    sync_conflict_seen(j, "notes", "n1");
    sync_conflict_seen(j, "notes", "n2");
    sync_conflict_seen(j, NULL, NULL);
    CHECK_INT(j->conflicts, 3);
    /* the JSON names the status and phase */
    strcpy(j->id, "01ARZ3NDEKTSV4RRFFQ69G5FAV");
    struct buf b;
    buf_init(&b);
    sync_job_json(&b, j);
    buf_putc(&b, '\0');
    CHECK(strstr(b.data, "\"status\":\"running\",\"phase\":\"status\"") != NULL);
    CHECK(strstr(b.data, "\"conflicts\":3") != NULL);
    CHECK(strstr(b.data, "\"error_items\":[{\"direction\":\"pull\",\"collection\":null") != NULL);
    buf_free(&b);
    job_done(j);
}

/* "bootstrap":"snapshot": when a job may start a space from the peer's
 * snapshot, which snapshot it takes, and the phase's moves */
static void test_bootstrap(void)
{
    struct sync_job *j = job("pull");
    j->boot = SYNC_BOOT_PENDING;
    j->peer_version = 50;
    CHECK(sync_boot_precheck(j, 0) == NULL);
    CHECK(strstr(sync_boot_precheck(j, 3), "not empty") != NULL);  /* a space written to, even emptied since */
    j->cp_pull = 7;
    CHECK(strstr(sync_boot_precheck(j, 0), "checkpoint") != NULL);
    j->cp_pull = 0;
    j->peer_version = 0;
    CHECK(strstr(sync_boot_precheck(j, 0), "peer's space is empty") != NULL);
    j->peer_version = 50;

    struct sync_boot_pick p;
    char why[200];
    const char *sha = "\"sha256\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"";
    char list[4096];
    /* newest first: a running one, an imported one (another space's
     * versions), a corrupt one, one past the peer's version (its data was
     * replaced since), then the one to take */
    snprintf(list, sizeof list,
             "{\"snapshots\":["
             "{\"id\":\"01AAAAAAAAAAAAAAAAAAAAAAA1\",\"status\":\"running\",\"kind\":\"manual\",\"server_version\":9},"
             "{\"id\":\"01AAAAAAAAAAAAAAAAAAAAAAA2\",\"status\":\"completed\",\"kind\":\"imported\",%s,"
             "\"server_version\":40,\"size_bytes\":10,\"integrity\":\"ok\"},"
             "{\"id\":\"01AAAAAAAAAAAAAAAAAAAAAAA3\",\"status\":\"completed\",\"kind\":\"manual\",%s,"
             "\"server_version\":40,\"size_bytes\":10,\"integrity\":\"corrupt\"},"
             "{\"id\":\"01AAAAAAAAAAAAAAAAAAAAAAA4\",\"status\":\"completed\",\"kind\":\"manual\",%s,"
             "\"server_version\":60,\"size_bytes\":10,\"integrity\":\"unchecked\"},"
             "{\"id\":\"01AAAAAAAAAAAAAAAAAAAAAAA5\",\"status\":\"completed\",\"kind\":\"scheduled\",%s,"
             "\"server_version\":30,\"size_bytes\":1234,\"entity_total\":20,\"integrity\":\"unchecked\"},"
             "{\"id\":\"01AAAAAAAAAAAAAAAAAAAAAAA6\",\"status\":\"completed\",\"kind\":\"manual\",%s,"
             "\"server_version\":20,\"size_bytes\":99,\"integrity\":\"ok\"}"
             "],\"next_cursor\":null}", sha, sha, sha, sha, sha);
    memset(&p, 0, sizeof p);
    CHECK_INT(sync_boot_pick(list, strlen(list), 50, &p, why, sizeof why), 1);
    CHECK_STR(p.id, "01AAAAAAAAAAAAAAAAAAAAAAA5");
    CHECK_INT(p.server_version, 30);
    CHECK_INT(p.size_bytes, 1234);
    CHECK_INT(p.entity_total, 20);
    CHECK_STR(p.sha256, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    /* none fits: a reason, 0 */
    CHECK_INT(sync_boot_pick(list, strlen(list), 10, &p, why, sizeof why), 0);
    CHECK(strstr(why, "none of the peer's 5 completed snapshots") != NULL);
    const char *empty = "{\"snapshots\":[],\"next_cursor\":null}";
    CHECK_INT(sync_boot_pick(empty, strlen(empty), 10, &p, why, sizeof why), 0);
    CHECK_STR(why, "the peer has no completed snapshot of the space");
    CHECK_INT(sync_boot_pick("<html>", 6, 10, &p, why, sizeof why), -1);

    /* the phase: status -> bootstrap -> pull, however it ends */
    CHECK_INT(sync_phase_after_status(j), SYNC_PHASE_BOOTSTRAP);
    sync_phase_set(j, SYNC_PHASE_BOOTSTRAP);
    sync_boot_end(j, SYNC_BOOT_SKIPPED, "the peer has no completed snapshot of the space");
    CHECK_INT(j->phase, SYNC_PHASE_PULL);
    CHECK_INT(j->boot, SYNC_BOOT_SKIPPED);
    struct buf b;
    buf_init(&b);
    sync_boot_json(&b, j);
    CHECK_STR(b.data, "{\"status\":\"skipped\",\"snapshot\":null,\"server_version\":null,\"entities\":0,"
              "\"tombstones\":0,\"reason\":\"the peer has no completed snapshot of the space\"}");
    buf_free(&b);
    job_done(j);
    /* a push-only job, or one not asked, never enters the phase */
    j = job("push");
    CHECK_INT(sync_phase_after_status(j), SYNC_PHASE_PUSH);
    job_done(j);
    j = job("both");
    CHECK_INT(sync_phase_after_status(j), SYNC_PHASE_PULL);
    buf_init(&b);
    sync_boot_json(&b, j);
    CHECK_STR(b.data, "null");
    buf_free(&b);
    j->boot = SYNC_BOOT_PENDING;
    j->peer_version = 100;
    sync_phase_set(j, SYNC_PHASE_BOOTSTRAP);
    /* progress while the snapshot applies: its share of the versions */
    j->boot_snap.server_version = 50;
    j->boot_snap.entity_total = 10;
    j->boot_entities = 5;
    CHECK_INT(sync_percent(j), 12);  /* pull half 25 %, push half 0 */
    job_done(j);
}

int main(void)
{
    test_names();
    test_transitions();
    test_end();
    test_checkpoints();
    test_retries();
    test_percent();
    test_tail();
    test_records();
    test_bootstrap();
    TEST_MAIN_END();
}
