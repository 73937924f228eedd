/* Unit tests: store.c migrations on an existing database (the blob
 * references of migration 6), and blobs_recover at start-up. Real SQLite
 * and real files in a temp dir. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "svc/blobs.h"
#include "store/store.h"
#include "core/util.h"

static char dir[256];

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) fprintf(stderr, "%s: %s\n", sql, msg ? msg : "?");
    CHECK_INT(rc, SQLITE_OK);
    sqlite3_free(msg);
}

static void hash_of(char c, char out[65])
{
    memset(out, c, 64);
    out[64] = '\0';
}

/* "sha:space_id,..." in order: what space_blobs holds */
static void refs(sqlite3 *db, char *out, size_t cap)
{
    sqlite3_stmt *q;
    out[0] = '\0';
    CHECK_INT(sqlite3_prepare_v2(db, "SELECT substr(sha256, 1, 1), space_id FROM space_blobs ORDER BY 1, 2", -1, &q, NULL),
              SQLITE_OK);
    size_t n = 0;
    while (sqlite3_step(q) == SQLITE_ROW)
        n += (size_t)snprintf(out + n, cap - n, "%s%s:%lld", n ? "," : "", (const char *)sqlite3_column_text(q, 0),
                              (long long)sqlite3_column_int64(q, 1));
    sqlite3_finalize(q);
}

/* A database as it was before blobs had spaces (schema 5), with blobs named
 * in every place a space's data can name them, migrated by store_open. */
static void test_migration(void)
{
    struct store *st = NULL;
    char err[256];
    CHECK_INT(store_open(dir, DURABILITY_NORMAL, &st, err, sizeof err), 0);
    sqlite3 *db = store_startup_db(st);
    /* back to schema 5: undo migrations 6 (space_blobs), 7 (integrity) and
     * 8 (sync job errors), 9 (off-site copies), 10 (sync job bootstrap),
     * 11 (the tombstones' index) */
    exec_ok(db, "DROP TABLE space_blobs; ALTER TABLE snapshots DROP COLUMN integrity;"
                " ALTER TABLE snapshots DROP COLUMN integrity_error; ALTER TABLE snapshots DROP COLUMN integrity_checked_at;"
                " ALTER TABLE sync_jobs DROP COLUMN errors; ALTER TABLE sync_jobs DROP COLUMN error_items;"
                " DROP TABLE snapshot_remote;"
                " ALTER TABLE sync_jobs DROP COLUMN bootstrap; DROP INDEX entities_tombstones;"
                " DELETE FROM schema_version WHERE version >= 6;");
    char a[65], b[65], c[65], d[65], e[65], f[65], g[65], h[65];
    hash_of('a', a); hash_of('b', b); hash_of('c', c); hash_of('d', d);
    hash_of('e', e); hash_of('f', f); hash_of('9', g); hash_of('1', h);
    char *sql = xasprintf(
        "INSERT INTO spaces(id, name, uid, created_at, digest) VALUES (1, 'alpha', 'U1', 0, ''), (2, 'beta', 'U2', 0, '');"
        /* live entities: a and b in alpha, a in beta */
        "INSERT INTO entities(space_id, collection, id, rev, version, created_at, updated_at, deleted, body) VALUES"
        " (1, 'c', 'e1', '1-x', 1, 0, 0, 0, '{\"_blobs\":[\"%s\",\"%s\"],\"t\":1}'),"
        " (2, 'c', 'e1', '1-x', 1, 0, 0, 0, '{\"_blobs\":[\"%s\"]}'),"
        /* not reference lists: nested, not an array, not hashes, a tombstone */
        " (1, 'c', 'e2', '1-x', 2, 0, 0, 0, '{\"x\":{\"_blobs\":[\"%s\"]}}'),"
        " (1, 'c', 'e3', '1-x', 3, 0, 0, 0, '{\"_blobs\":\"%s\"}'),"
        " (1, 'c', 'e4', '1-x', 4, 0, 0, 0, '{\"_blobs\":[\"ABC\",7,\"%.63sZ\"]}'),"
        " (1, 'c', 'e5', '2-x', 5, 0, 0, 1, NULL),"
        /* a space that is gone */
        " (7, 'c', 'e1', '1-x', 1, 0, 0, 0, '{\"_blobs\":[\"%s\"]}');"
        /* a conflict record of beta names e */
        "INSERT INTO conflicts(id, space_id, collection, entity_id, current_rev, conflicting_rev, conflicting_body,"
        " deleted, origin, detected_at) VALUES ('K1', 2, 'c', 'e1', '1-x', '1-y', '{\"_blobs\":[\"%s\"]}', 0, 'o', 0);"
        /* a completed snapshot of alpha names f; a failed one names 9 */
        "INSERT INTO snapshots(id, space_id, space, kind, status, created_at, level, created_by, blobs) VALUES"
        " ('S1', 1, 'alpha', 'manual', 'completed', 0, 1, 'x', '[\"%s\"]'),"
        " ('S2', 1, 'alpha', 'manual', 'failed', 0, 1, 'x', '[\"%s\"]');"
        /* a sync job from before jobs counted what they could not apply */
        "INSERT INTO sync_jobs(id, space, peer_url, peer_space, direction, status, phase, started_at, created_by)"
        " VALUES ('J1', 'alpha', 'http://p', 'alpha', 'pull', 'completed', 'done', 0, 'x');",
        a, b, a, c, d, d, h, e, f, g);
    exec_ok(db, sql);
    free(sql);
    store_close(st);

    st = NULL;
    CHECK_INT(store_open(dir, DURABILITY_NORMAL, &st, err, sizeof err), 0);
    CHECK_INT(store_schema_version(st), 11);
    char got[256];
    refs(store_startup_db(st), got, sizeof got);
    CHECK_STR(got, "a:1,a:2,b:1,e:2,f:1");
    /* migration 7: the old job counts nothing it could not apply */
    sqlite3_stmt *q;
    CHECK_INT(sqlite3_prepare_v2(store_startup_db(st), "SELECT errors, error_items FROM sync_jobs WHERE id = 'J1'", -1,
                                 &q, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_step(q), SQLITE_ROW);
    CHECK_INT(sqlite3_column_int64(q, 0), 0);
    CHECK_STR((const char *)sqlite3_column_text(q, 1), "[]");
    sqlite3_finalize(q);
    /* migration 9: an old job was not asked to bootstrap */
    CHECK_INT(sqlite3_prepare_v2(store_startup_db(st), "SELECT bootstrap IS NULL FROM sync_jobs WHERE id = 'J1'", -1,
                                 &q, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_step(q), SQLITE_ROW);
    CHECK_INT(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);
    store_close(st);
}

static void touch(const char *p)
{
    FILE *fp = fopen(p, "w");
    CHECK(fp != NULL);
    if (fp) fclose(fp);
}

static bool exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* After the migration above: a is referenced, 1 is not. */
static void test_recover(void)
{
    char a[65], one[65], p[512];
    hash_of('a', a);
    hash_of('1', one);
    snprintf(p, sizeof p, "%s/blobs", dir);
    CHECK_INT(mkdir_p(p, 0700), 0);
    snprintf(p, sizeof p, "%s/blobs/aa", dir);
    CHECK_INT(mkdir_p(p, 0700), 0);
    snprintf(p, sizeof p, "%s/blobs/11", dir);
    CHECK_INT(mkdir_p(p, 0700), 0);
    snprintf(p, sizeof p, "%s/blobs/tmp", dir);
    CHECK_INT(mkdir_p(p, 0700), 0);
    char pa[512], p1[512], pt[512], pn[512], pm[512];
    snprintf(pa, sizeof pa, "%s/blobs/aa/%s", dir, a);
    snprintf(p1, sizeof p1, "%s/blobs/11/%s", dir, one);
    snprintf(pt, sizeof pt, "%s/blobs/tmp/01ABC.tmp", dir);
    snprintf(pn, sizeof pn, "%s/blobs/aa/notes.txt", dir);        /* not a blob: left alone */
    snprintf(pm, sizeof pm, "%s/blobs/11/%s", dir, a);           /* a blob in the wrong directory: left alone */
    touch(pa);
    touch(p1);
    touch(pt);
    touch(pn);
    touch(pm);
    struct store *st = NULL;
    char err[256];
    CHECK_INT(store_open(dir, DURABILITY_NORMAL, &st, err, sizeof err), 0);
    CHECK_INT(blobs_recover(dir, store_startup_db(st), err, sizeof err), 0);
    store_close(st);
    CHECK(exists(pa));
    CHECK(!exists(p1));
    CHECK(!exists(pt));
    CHECK(exists(pn));
    CHECK(exists(pm));
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/snapsync-test-store-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    test_migration();
    test_recover();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
    TEST_MAIN_END();
}
