/* bench/writes/sqlite_bound.c - how fast SQLite itself takes snapsync's rows.
 *
 *   cc -O2 -o sqlite_bound sqlite_bound.c -lsqlite3
 *   sqlite_bound --db FILE --rows N [--txn 1000] [--sync FULL|NORMAL] [--mode insert|writer]
 *
 * Creates FILE (it must not exist) with a table shaped like snapsync's
 * entities table (same columns, a unique index on (space_id, collection, id)
 * and one on (space_id, version)), in WAL mode with the given synchronous
 * setting and snapsync's other pragmas, then inserts N rows through one
 * prepared statement, committing every --txn rows. Each row is a new entity
 * as snapsync stores it: collection "issues", id "m-<n>", rev "1-<16 hex>",
 * version n, created_at = updated_at = now in ms, deleted 0, a ~330-byte JSON
 * body (the same generator as put.lua) and an empty rev history.
 *
 * --mode insert (default): INSERT only - the bound for these rows.
 * --mode writer: per row, also the lookup snapsync's writer does before an
 *   insert (SELECT ... WHERE space_id, collection, id), and per transaction
 *   the UPDATE of the space's counters row - roughly the SQL snapsync runs.
 *
 * Prints one JSON line: rows, seconds, rows_per_s, txns, avg body bytes.
 * The clock runs from the first BEGIN to the last COMMIT (schema setup is
 * not timed). */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void die(sqlite3 *db, const char *what)
{
    fprintf(stderr, "sqlite_bound: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
    exit(1);
}

static void exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "sqlite_bound: %s: %s\n", sql, msg ? msg : "?");
        exit(1);
    }
}

/* the same body as put.lua's body(n) */
static int body(char *out, size_t cap, long n)
{
    static const char *const statuses[] = { "open", "in_progress", "review", "closed" };
    static const int points[] = { 1, 2, 3, 5, 8, 13 };
    return snprintf(out, cap,
                    "{\"title\":\"Checkout fails after applying coupon #%ld\",\"status\":\"%s\",\"priority\":%ld,"
                    "\"assignee\":\"user-%ld\",\"reporter\":\"user-%ld\",\"labels\":[\"bug\",\"checkout\",\"p%ld\"],"
                    "\"points\":%d,\"sprint\":\"2026-W%02ld\",\"component\":\"web/cart\",\"description\":"
                    "\"Add %ld items, apply coupon SAVE%ld, press Checkout: the button spins and nothing happens.\"}",
                    n, statuses[n % 4], n % 5, n % 97, n % 211, n % 5, points[n % 6], n % 52 + 1, n % 9 + 1,
                    n % 50);
}

static uint64_t fnv1a(const char *s, size_t len, uint64_t h)
{
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *sync = "FULL", *mode = "insert";
    long rows = 100000, txn = 1000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "sqlite_bound: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--db")) path = v;
        else if (!strcmp(a, "--rows")) rows = atol(v);
        else if (!strcmp(a, "--txn")) txn = atol(v);
        else if (!strcmp(a, "--sync")) sync = v;
        else if (!strcmp(a, "--mode")) mode = v;
        else { fprintf(stderr, "sqlite_bound: unknown option %s\n", a); return 2; }
        i++;
    }
    if (!path || rows < 1 || txn < 1 || (strcmp(sync, "FULL") && strcmp(sync, "NORMAL")) ||
        (strcmp(mode, "insert") && strcmp(mode, "writer"))) {
        fprintf(stderr, "usage: sqlite_bound --db FILE --rows N [--txn N] [--sync FULL|NORMAL] [--mode insert|writer]\n");
        return 2;
    }
    if (access(path, F_OK) == 0) { fprintf(stderr, "sqlite_bound: %s exists\n", path); return 2; }
    int writer = !strcmp(mode, "writer");

    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
        die(db, "open");
    char pragmas[256];
    /* snapsync's pragmas (src/store.c) */
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=ON;"
             "PRAGMA temp_store=MEMORY; PRAGMA cache_size=-16000;", sync);
    exec(db, pragmas);
    exec(db,
         "CREATE TABLE spaces (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, uid TEXT NOT NULL,"
         " created_at INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0,"
         " entity_count INTEGER NOT NULL DEFAULT 0, tombstone_count INTEGER NOT NULL DEFAULT 0,"
         " conflict_count INTEGER NOT NULL DEFAULT 0, digest TEXT NOT NULL);"
         "CREATE TABLE entities (space_id INTEGER NOT NULL, collection TEXT NOT NULL, id TEXT NOT NULL,"
         " rev TEXT NOT NULL, version INTEGER NOT NULL, created_at INTEGER NOT NULL,"
         " updated_at INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, body TEXT,"
         " revs TEXT NOT NULL DEFAULT '');"
         "CREATE UNIQUE INDEX entities_key ON entities(space_id, collection, id);"
         "CREATE UNIQUE INDEX entities_feed ON entities(space_id, version);"
         "INSERT INTO spaces(id, name, uid, created_at, digest)"
         " VALUES (1, 'bench', '01BENCH0000000000000000000', 0, '');");

    sqlite3_stmt *ins = NULL, *sel = NULL, *upd = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO entities(space_id, collection, id, rev, version, created_at, updated_at,"
                           " deleted, body, revs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 0, ?7, '')",
                           -1, &ins, NULL) != SQLITE_OK)
        die(db, "prepare insert");
    if (sqlite3_prepare_v2(db,
                           "SELECT rev, version, created_at, updated_at, deleted, body, revs FROM entities"
                           " WHERE space_id = ?1 AND collection = ?2 AND id = ?3",
                           -1, &sel, NULL) != SQLITE_OK)
        die(db, "prepare select");
    if (sqlite3_prepare_v2(db,
                           "UPDATE spaces SET version = ?2, entity_count = ?3, digest = ?4 WHERE id = ?1", -1,
                           &upd, NULL) != SQLITE_OK)
        die(db, "prepare update");

    char b[1024], id[64], rev[40], digest[65];
    long body_bytes = 0, txns = 0;
    uint64_t dig = 0;
    double t0 = now_s();
    for (long n = 1; n <= rows; n++) {
        if ((n - 1) % txn == 0) exec(db, "BEGIN IMMEDIATE");
        int blen = body(b, sizeof b, n);
        body_bytes += blen;
        int idlen = snprintf(id, sizeof id, "m-%ld", n);
        uint64_t h = fnv1a(b, (size_t)blen, fnv1a(id, (size_t)idlen, 0xcbf29ce484222325ULL));
        snprintf(rev, sizeof rev, "1-%016llx", (unsigned long long)h);
        dig ^= h;
        if (writer) {
            sqlite3_bind_int64(sel, 1, 1);
            sqlite3_bind_text(sel, 2, "issues", 6, SQLITE_STATIC);
            sqlite3_bind_text(sel, 3, id, idlen, SQLITE_STATIC);
            if (sqlite3_step(sel) != SQLITE_DONE) die(db, "select (the row should not exist)");
            sqlite3_reset(sel);
        }
        sqlite3_bind_int64(ins, 1, 1);
        sqlite3_bind_text(ins, 2, "issues", 6, SQLITE_STATIC);
        sqlite3_bind_text(ins, 3, id, idlen, SQLITE_STATIC);
        sqlite3_bind_text(ins, 4, rev, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 5, n);
        sqlite3_bind_int64(ins, 6, wall_ms());
        sqlite3_bind_text(ins, 7, b, blen, SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE) die(db, "insert");
        sqlite3_reset(ins);
        if (n % txn == 0 || n == rows) {
            if (writer) {
                snprintf(digest, sizeof digest, "%016llx", (unsigned long long)dig);
                sqlite3_bind_int64(upd, 1, 1);
                sqlite3_bind_int64(upd, 2, n);
                sqlite3_bind_int64(upd, 3, n);
                sqlite3_bind_text(upd, 4, digest, -1, SQLITE_STATIC);
                if (sqlite3_step(upd) != SQLITE_DONE) die(db, "update spaces");
                sqlite3_reset(upd);
            }
            exec(db, "COMMIT");
            txns++;
        }
    }
    double secs = now_s() - t0;
    sqlite3_finalize(ins);
    sqlite3_finalize(sel);
    sqlite3_finalize(upd);
    if (sqlite3_close(db) != SQLITE_OK) die(db, "close");
    printf("{\"rows\":%ld,\"seconds\":%.4f,\"rows_per_s\":%.0f,\"txns\":%ld,\"txn_rows\":%ld,\"sync\":\"%s\","
           "\"mode\":\"%s\",\"avg_body_bytes\":%.1f,\"sqlite\":\"%s\"}\n",
           rows, secs, rows / secs, txns, txn, sync, mode, (double)body_bytes / rows, sqlite3_libversion());
    return 0;
}
