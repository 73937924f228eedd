/* Unit tests: the change reader (svc/changes.c) on a real store in a temp
 * dir, written through the real writer (its on_commit hook checked on the
 * way), read synchronously with a pooled read connection and through the
 * pool (changes_page). No listening server: a uv loop, a job pool without
 * request hooks, and a struct server that only carries the store and the
 * space registry. */
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"
#include "core/entity.h"
#include "core/util.h"
#include "net/server.h"
#include "store/read.h"
#include "store/spaces.h"
#include "store/store.h"
#include "store/writer.h"
#include "svc/changes.h"

#define ORIGIN "01ARZ3NDEKTSV4RRFFQ69G5FAV"

static uv_loop_t loop;
static struct store *st;
static struct spaces *reg;
static struct job_pool pool;
static struct writer *wr;
static struct server srv;            /* store and spaces only: what changes_page/until read */

/* what the writer's on_commit hook was told */
static struct change_rec committed[16];
static size_t ncommitted;

static size_t commit_calls, commit_listed;      /* on_commit calls, changes listed in all */
static uint64_t commit_skipped;                 /* changes_skipped of "s2", summed */

static void on_commit(void *arg, const struct change_rec *c, size_t n, const struct space_stats *spaces,
                      size_t nspaces)
{
    CHECK(arg == &srv);
    CHECK(n <= WRITER_CHANGES_MAX);
    commit_calls++;
    commit_listed += n;
    for (size_t i = 0; i < n && ncommitted < ARRAY_SIZE(committed); i++) committed[ncommitted++] = c[i];
    for (size_t i = 0; i < nspaces; i++) {
        if (!strcmp(spaces[i].name, "s2")) commit_skipped += spaces[i].changes_skipped;
        else CHECK_INT(spaces[i].changes_skipped, 0);
    }
}

struct put_op {
    struct wop op;
    const char *coll, *id, *body, *origin;
    bool deleted;
    bool done;
};

/* writer thread: one entity write in space "s1", made if needed */
static int put_apply(struct wtx *tx, struct wop *op)
{
    struct put_op *p = container_of(op, struct put_op, op);
    int created;
    struct space_stats *sp = wtx_space_create(tx, "s1", &created);
    if (!sp) return -1;
    struct ent_row cur;
    if (wtx_entity_get(tx, sp, p->coll, p->id, &cur) < 0) return -1;
    char rev[REV_MAX];
    size_t blen = p->body ? strlen(p->body) : 0;
    int rc = rev_make(cur.exists ? cur.rev : NULL, p->deleted, p->body, blen, rev);
    if (rc == 0) {
        wtx_set_origin(tx, p->origin);
        rc = wtx_entity_put(tx, op, sp, p->coll, p->id, &cur, rev, p->deleted, p->body, blen, NULL);
    }
    ent_row_free(&cur);
    return rc;
}

static void put_done(struct wop *op, struct http_req *r)
{
    struct put_op *p = container_of(op, struct put_op, op);
    CHECK(r == NULL);
    CHECK_INT(op->err.status, 0);
    p->done = true;
}

static void put(const char *coll, const char *id, const char *body, bool deleted, const char *origin)
{
    struct put_op p = {.coll = coll, .id = id, .body = body, .deleted = deleted, .origin = origin};
    CHECK_INT(writer_submit(wr, &p.op, NULL, put_apply, put_done), 0);
    uv_run(&loop, UV_RUN_DEFAULT);   /* the writer's handle keeps the loop up until done */
    CHECK(p.done);
}

/* One page through the JSON writer, synchronously, parsed. */
static json_t *page(uint64_t since, uint64_t until, uint64_t limit, bool bodies, struct changes_arg *filter)
{
    sqlite3 *db = store_reader_get(st);
    CHECK(db != NULL);
    struct read_job *rj = read_job_new();
    const struct space *sp = spaces_get(reg, "s1");
    rj->space_id = sp->st.id;
    rj->since = since;
    rj->until = until;
    rj->limit = limit;
    rj->flag = bodies;
    rj->arg = filter;
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    changes_json_work(db, rj);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    store_reader_put(st, db);
    CHECK_INT(rj->err.status, 0);
    json_error_t je;
    json_t *j = json_loadb(rj->out.data, rj->out.len, 0, &je);
    CHECK(j != NULL);
    /* the loop's copy of where the page ended */
    CHECK_INT(rj->since, json_integer_value(json_object_get(j, "last_version")));
    CHECK_INT(rj->flag, json_is_true(json_object_get(j, "more")));
    read_job_free(rj);
    return j;
}

/* "id@version" of each change, space-separated */
static void ids(json_t *j, char *out, size_t cap)
{
    size_t n = 0, i;
    json_t *c;
    out[0] = '\0';
    json_array_foreach(json_object_get(j, "changes"), i, c)
        n += (size_t)snprintf(out + n, cap - n, "%s%s@%lld", n ? " " : "", json_string_value(json_object_get(c, "id")),
                              (long long)json_integer_value(json_object_get(c, "version")));
}

static void check_page(uint64_t since, uint64_t until, uint64_t limit, struct changes_arg *f, const char *want,
                       uint64_t last, bool more)
{
    json_t *j = page(since, until, limit, true, f);
    char got[256];
    ids(j, got, sizeof got);
    CHECK_STR(got, want);
    CHECK_INT(json_integer_value(json_object_get(j, "last_version")), last);
    CHECK_INT(json_is_true(json_object_get(j, "more")), more);
    json_decref(j);
}

static struct changes_arg *filter(const char *coll, bool all_revs, const char *exclude)
{
    struct changes_arg *f = changes_filter_copy(NULL);
    if (coll) snprintf(f->coll[f->ncoll++], sizeof f->coll[0], "%s", coll);
    f->all_revs = all_revs;
    if (exclude) snprintf(f->exclude_origin, sizeof f->exclude_origin, "%s", exclude);
    return f;
}

static void test_pages(void)
{
    /* b@2, a@4 (deleted), x@5 (from ORIGIN) */
    check_page(0, UINT64_MAX, 100, NULL, "b@2 a@4 x@5", 5, false);
    check_page(0, UINT64_MAX, 2, NULL, "b@2 a@4", 4, true);
    check_page(2, UINT64_MAX, 100, NULL, "a@4 x@5", 5, false);
    check_page(5, UINT64_MAX, 100, NULL, "", 5, false);
    /* since ahead of the space: the end of the feed is the space's version */
    check_page(9, UINT64_MAX, 100, NULL, "", 5, false);
    /* until: never past what may be shown, even at the end */
    check_page(0, 4, 100, NULL, "b@2 a@4", 4, false);
    check_page(0, 1, 100, NULL, "", 1, false);
    /* a filtered feed still ends at the space's version */
    check_page(0, UINT64_MAX, 100, filter("c2", false, NULL), "x@5", 5, false);
    check_page(0, UINT64_MAX, 100, filter("c1", false, NULL), "b@2 a@4", 5, false);
    check_page(0, UINT64_MAX, 100, filter(NULL, false, ORIGIN), "b@2 a@4", 5, false);
    check_page(0, UINT64_MAX, 100, filter(NULL, false, "01BX5ZZKBKACTAV9WEVGEMMVRZ"), "b@2 a@4 x@5", 5, false);
}

static void test_members(void)
{
    json_t *j = page(0, UINT64_MAX, 100, true, NULL);
    json_t *ch = json_object_get(j, "changes");
    json_t *b = json_array_get(ch, 0), *a = json_array_get(ch, 1), *x = json_array_get(ch, 2);
    CHECK_STR(json_string_value(json_object_get(b, "collection")), "c1");
    CHECK_INT(json_integer_value(json_object_get(json_object_get(b, "body"), "n")), 2);
    CHECK(json_is_true(json_object_get(a, "deleted")));
    CHECK(json_is_null(json_object_get(a, "body")));
    CHECK_INT(json_integer_value(json_object_get(json_object_get(x, "body"), "n")), 4);
    /* the revs are the ones the writer reported */
    CHECK_STR(json_string_value(json_object_get(x, "rev")), committed[4].rev);
    CHECK_STR(json_string_value(json_object_get(a, "rev")), committed[3].rev);
    CHECK(json_object_get(x, "revs") == NULL);
    json_decref(j);
    /* bodies=false: body null for live entities too */
    j = page(0, UINT64_MAX, 100, false, NULL);
    CHECK(json_is_null(json_object_get(json_array_get(json_object_get(j, "changes"), 0), "body")));
    json_decref(j);
}

static void test_all_revs(void)
{
    sqlite3 *db = store_startup_db(st);
    char *sql = xasprintf("INSERT INTO conflicts(id, space_id, collection, entity_id, current_rev, conflicting_rev,"
                          " conflicting_body, deleted, origin, detected_at) VALUES ('01BX5ZZKBKACTAV9WEVGEMMVRZ', %lld,"
                          " 'c1', 'b', '%s', '1-00aa', '{\"n\":9}', 0, 'o', 0)",
                          (long long)spaces_get(reg, "s1")->st.id, committed[1].rev);
    CHECK_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    free(sql);
    /* all_revs: bodies whatever rj->flag says, history and conflicts */
    json_t *j = page(0, UINT64_MAX, 100, false, filter(NULL, true, NULL));
    json_t *ch = json_object_get(j, "changes");
    json_t *b = json_array_get(ch, 0), *x = json_array_get(ch, 2);
    CHECK_INT(json_integer_value(json_object_get(json_object_get(b, "body"), "n")), 2);
    json_t *revs = json_object_get(x, "revs");
    CHECK_INT(json_array_size(revs), 2);
    CHECK_STR(json_string_value(json_array_get(revs, 0)), committed[4].rev);
    CHECK_STR(json_string_value(json_array_get(revs, 1)), committed[2].rev);
    CHECK_INT(json_array_size(json_object_get(x, "conflicts")), 0);
    json_t *conf = json_object_get(b, "conflicts");
    CHECK_INT(json_array_size(conf), 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(conf, 0), "rev")), "1-00aa");
    CHECK_INT(json_integer_value(json_object_get(json_object_get(json_array_get(conf, 0), "body"), "n")), 9);
    json_decref(j);
    CHECK_INT(sqlite3_exec(db, "DELETE FROM conflicts", NULL, NULL, NULL), SQLITE_OK);
}

static void test_sse_frames(void)
{
    sqlite3 *db = store_reader_get(st);
    struct read_job *rj = read_job_new();
    rj->space_id = spaces_get(reg, "s1")->st.id;
    rj->since = 2;
    rj->until = UINT64_MAX;
    rj->limit = 1;
    rj->flag = true;
    changes_sse_work(db, rj);
    store_reader_put(st, db);
    CHECK_INT(rj->n, 1);
    CHECK_INT(rj->since, 4);         /* how far it got */
    CHECK(rj->flag);                 /* more */
    const char *want = "id: 4\nevent: change\ndata: {\"collection\":\"c1\",\"id\":\"a\"";
    CHECK(rj->out.len > strlen(want) && !memcmp(rj->out.data, want, strlen(want)));
    CHECK(rj->out.len > 2 && !memcmp(rj->out.data + rj->out.len - 2, "\n\n", 2));
    read_job_free(rj);
}

static struct read_job *paged;

static void page_done(struct read_job *rj, struct http_req *r)
{
    CHECK(r == NULL);
    CHECK(rj->user == &paged);
    CHECK_INT(rj->err.status, 0);
    paged = read_job_new();          /* rj is freed after this returns: keep a copy of what is checked */
    paged->since = rj->since;
    paged->flag = rj->flag;
    paged->n = rj->n;
    buf_append(&paged->out, rj->out.data, rj->out.len);
}

/* changes_page: a detached all_revs read through the pool, as a sync push */
static void test_changes_page(void)
{
    CHECK_INT(changes_until(&srv, "s1"), 5);
    CHECK(changes_until(&srv, "nope") == UINT64_MAX);
    changes_page(&srv, spaces_get(reg, "s1")->st.id, 0, changes_until(&srv, "s1"), 2, ORIGIN, page_done, &paged);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(paged != NULL);
    if (!paged) return;
    CHECK_INT(paged->n, 2);
    CHECK_INT(paged->since, 5);       /* the end of the feed: the space's version */
    CHECK(!paged->flag);             /* x@5 is from ORIGIN: nothing more to send it */
    buf_putc(&paged->out, '\0');
    CHECK(strstr(paged->out.data, "\"revs\":[") != NULL);
    CHECK(strstr(paged->out.data, "\"id\":\"x\"") == NULL);
    read_job_free(paged);
}

/* wtx_entity_put_many: n rows of "s2" in one op (k-th: id "e<k>", body
 * {"k":k}, rev "1-<k>" or, for a second round, a new rev over the first) */
struct many_op {
    struct wop op;
    size_t n;
    bool second;                     /* over the rows of the first round */
    bool fail;                       /* fails after writing */
    bool done;
};

static int many_apply(struct wtx *tx, struct wop *op)
{
    struct many_op *m = container_of(op, struct many_op, op);
    int created;
    struct space_stats *sp = wtx_space_create(tx, "s2", &created);
    if (!sp) return -1;
    struct ent_write *v = xcalloc(m->n, sizeof *v);
    char (*txt)[96] = xcalloc(m->n, sizeof *txt);
    for (size_t k = 0; k < m->n; k++) {
        char *t = txt[k];            /* id \0 body \0 rev \0 old rev */
        int a = sprintf(t, "e%06zu", k) + 1;
        int b = a + sprintf(t + a, "{\"k\":%zu}", k) + 1;
        int c = b + sprintf(t + b, "%d-%016zx", m->second ? 2 : 1, k) + 1;
        sprintf(t + c, "1-%016zx", k);
        v[k] = (struct ent_write){.coll = "c", .id = t, .body = t + a, .blen = strlen(t + a), .rev = t + b,
                                  .hist = m->second ? t + c : "", .deleted = m->second && k % 2,
                                  .existed = m->second, .old_rev = t + c};
        if (v[k].deleted) v[k].body = NULL, v[k].blen = 0;
    }
    int rc = wtx_entity_put_many(tx, op, sp, v, m->n);
    free(txt);
    free(v);
    if (rc == 0 && m->fail) rc = wop_fail(op, 409, "test_failure", "failed after writing %zu rows", m->n);
    return rc;
}

static void many_done(struct wop *op, struct http_req *r)
{
    (void)r;
    struct many_op *m = container_of(op, struct many_op, op);
    CHECK_INT(op->err.status, m->fail ? 409 : 0);
    m->done = true;
}

/* An op alone: its own transaction (the ops around it commit in theirs),
 * and a failure rolls back all it wrote, memory included. */
static void test_alone(void)
{
    const struct space *s2 = spaces_get(reg, "s2");
    uint64_t v0 = s2->st.version, e0 = s2->st.entities, t0 = s2->st.tombstones;
    struct digest d0 = s2->st.digest;
    size_t calls0 = commit_calls;
    struct put_op a = {.coll = "c1", .id = "alone-a", .body = "{}"}, c = {.coll = "c1", .id = "alone-c", .body = "{}"};
    struct many_op b = {.n = 40, .fail = true};
    b.op.alone = true;
    CHECK_INT(writer_submit(wr, &a.op, NULL, put_apply, put_done), 0);
    CHECK_INT(writer_submit(wr, &b.op, NULL, many_apply, many_done), 0);
    CHECK_INT(writer_submit(wr, &c.op, NULL, put_apply, put_done), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(a.done && b.done && c.done);
    CHECK_INT(commit_calls - calls0, 2);         /* a's batch and c's: b's rolled back, told nothing */
    CHECK_INT(s2->st.version, v0);               /* nothing of b, in memory... */
    CHECK_INT(s2->st.entities, e0);
    CHECK_INT(s2->st.tombstones, t0);
    CHECK(!memcmp(d0.b, s2->st.digest.b, 32));
    sqlite3 *db = store_reader_get(st);          /* ...or stored */
    sqlite3_stmt *q;
    CHECK_INT(sqlite3_prepare_v2(db, "SELECT max(version), count(*) FROM entities WHERE space_id = ?", -1, &q, NULL),
              SQLITE_OK);
    sqlite3_bind_int64(q, 1, s2->st.id);
    CHECK_INT(sqlite3_step(q), SQLITE_ROW);
    CHECK_INT(sqlite3_column_int64(q, 0), v0);
    sqlite3_finalize(q);
    store_reader_put(st, db);
    CHECK(spaces_get(reg, "s1")->st.version >= 7);   /* a and c are in */
}

static void test_put_many(void)
{
    size_t n = WRITER_CHANGES_MAX + 37;          /* not a multiple of the statement's rows either */
    size_t calls0 = commit_calls, listed0 = commit_listed;
    struct many_op m = {.n = n};
    CHECK_INT(writer_submit(wr, &m.op, NULL, many_apply, many_done), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(m.done);
    /* one commit: the listeners got the first WRITER_CHANGES_MAX, and the count of the rest */
    CHECK_INT(commit_calls - calls0, 1);
    CHECK_INT(commit_listed - listed0, WRITER_CHANGES_MAX);
    CHECK_INT(commit_skipped, 37);
    const struct space *s2 = spaces_get(reg, "s2");
    CHECK_INT(s2->st.version, n);
    CHECK_INT(s2->st.entities, n);
    /* the digest is what one write at a time would give */
    struct digest want = {0}, d;
    char id[16], rev[32], rev1[32];
    for (size_t k = 0; k < n; k++) {
        sprintf(id, "e%06zu", k);
        sprintf(rev, "1-%016zx", k);
        digest_item(&d, "c", id, rev, false);
        digest_xor(&want, &d);
    }
    CHECK(!memcmp(want.b, s2->st.digest.b, 32));
    /* over them: updates keep created_at, take the history, delete every other one */
    struct many_op m2 = {.n = n, .second = true};
    CHECK_INT(writer_submit(wr, &m2.op, NULL, many_apply, many_done), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(m2.done);
    CHECK_INT(s2->st.version, 2 * n);
    CHECK_INT(s2->st.tombstones, n / 2);
    CHECK_INT(s2->st.entities, n - n / 2);
    memset(&want, 0, sizeof want);
    for (size_t k = 0; k < n; k++) {
        sprintf(id, "e%06zu", k);
        sprintf(rev, "2-%016zx", k);
        digest_item(&d, "c", id, rev, k % 2);
        digest_xor(&want, &d);
    }
    CHECK(!memcmp(want.b, s2->st.digest.b, 32));
    sqlite3 *db = store_reader_get(st);
    sqlite3_stmt *q;
    CHECK_INT(sqlite3_prepare_v2(db, "SELECT rev, version, revs, deleted, body, created_at <= updated_at, count(*) OVER ()"
                                 " FROM entities WHERE space_id = ? AND collection = 'c' ORDER BY id LIMIT 2", -1, &q,
                                 NULL), SQLITE_OK);
    sqlite3_bind_int64(q, 1, s2->st.id);
    for (int k = 0; k < 2; k++) {
        CHECK_INT(sqlite3_step(q), SQLITE_ROW);
        sprintf(rev, "2-%016x", k);
        sprintf(rev1, "1-%016x", k);
        CHECK_STR((const char *)sqlite3_column_text(q, 0), rev);
        CHECK_INT(sqlite3_column_int64(q, 1), n + 1 + k);
        CHECK_STR((const char *)sqlite3_column_text(q, 2), rev1);
        CHECK_INT(sqlite3_column_int(q, 3), k % 2);
        if (k) CHECK(sqlite3_column_type(q, 4) == SQLITE_NULL);
        else CHECK_STR((const char *)sqlite3_column_text(q, 4), "{\"k\":0}");
        CHECK_INT(sqlite3_column_int(q, 5), 1);
        CHECK_INT(sqlite3_column_int64(q, 6), n);
    }
    sqlite3_finalize(q);
    store_reader_put(st, db);
    CHECK_INT(commit_skipped, 74);   /* the second commit left out as many */
}

int main(void)
{
    char dir[] = "/tmp/snapsync-test-changes-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char err[256];
    CHECK_INT(store_open(dir, DURABILITY_NORMAL, &st, err, sizeof err), 0);
    uv_loop_init(&loop);
    job_pool_init(&pool, &loop, NULL);
    reg = spaces_new();
    srv.store = st;
    srv.spaces = reg;
    const struct writer_hooks hooks = {.on_commit = on_commit, .commit_arg = &srv};
    CHECK_INT(writer_start(&wr, &loop, reg, &pool, &hooks, store_db_path(st), DURABILITY_NORMAL, err, sizeof err), 0);
    read_attach(st, &pool, wr, NULL);

    put("c1", "a", "{\"n\":1}", false, NULL);      /* v1 */
    put("c1", "b", "{\"n\":2}", false, NULL);      /* v2 */
    put("c2", "x", "{\"n\":3}", false, NULL);      /* v3 */
    put("c1", "a", NULL, true, NULL);              /* v4 */
    put("c2", "x", "{\"n\":4}", false, ORIGIN);    /* v5 */
    CHECK_INT(ncommitted, 5);
    CHECK_INT(committed[3].version, 4);
    CHECK(committed[3].deleted);
    CHECK_STR(committed[4].space, "s1");
    CHECK_INT(spaces_get(reg, "s1")->st.version, 5);

    test_pages();
    test_members();
    test_all_revs();
    test_sse_frames();
    test_changes_page();
    test_put_many();
    test_alone();

    writer_stop(wr);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&loop), 0);
    spaces_free(reg);
    store_close(st);
    char *rm = xasprintf("rm -rf '%s'", dir);
    CHECK_INT(system(rm), 0);
    free(rm);
    TEST_MAIN_END();
}
