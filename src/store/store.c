/* store.c - see store.h.
 *
 * Migrations are an ordered list of SQL scripts; schema_version holds the
 * number applied. Each runs in its own transaction, so a crash mid-way
 * leaves the database at the previous version, and start-up simply tries
 * again. Later subsystems append their migrations; never edit an old one.
 */
#include "store/store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/read.h"

#define READER_POOL 8

struct store {
    char path[1100];
    enum durability durability;
    sqlite3 *db;                     /* read-write connection: startup, then the writer path */
    char instance_id[27];
    int schema_version;
    uint64_t spaces;
    pthread_mutex_t lock;
    sqlite3 *readers[READER_POOL];
    int nreaders;
    struct read_side read;           /* loop thread: what read_attach installed */
};

static const char *const migrations[] = {
    /* 1: bookkeeping */
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE spaces ("
    "  name TEXT PRIMARY KEY,"
    "  uid TEXT NOT NULL UNIQUE,"
    "  created_at INTEGER NOT NULL"
    ") WITHOUT ROWID;",
    /* 2: spaces with counters, entities and their change log, conflicts,
     * keys, audit. (Version 1's spaces table could hold no rows yet.) */
    "DROP TABLE spaces;"
    "CREATE TABLE spaces ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  uid TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  version INTEGER NOT NULL DEFAULT 0,"
    "  entity_count INTEGER NOT NULL DEFAULT 0,"
    "  tombstone_count INTEGER NOT NULL DEFAULT 0,"
    "  conflict_count INTEGER NOT NULL DEFAULT 0,"
    "  digest TEXT NOT NULL"
    ");"
    /* one row per entity: its latest state; version orders the change feed */
    "CREATE TABLE entities ("
    "  space_id INTEGER NOT NULL,"
    "  collection TEXT NOT NULL,"
    "  id TEXT NOT NULL,"
    "  rev TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  deleted INTEGER NOT NULL DEFAULT 0,"
    "  body TEXT,"
    "  revs TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE UNIQUE INDEX entities_key ON entities(space_id, collection, id);"
    "CREATE UNIQUE INDEX entities_feed ON entities(space_id, version);"
    "CREATE TABLE conflicts ("
    "  id TEXT PRIMARY KEY,"
    "  space_id INTEGER NOT NULL,"
    "  collection TEXT NOT NULL,"
    "  entity_id TEXT NOT NULL,"
    "  current_rev TEXT NOT NULL,"
    "  conflicting_rev TEXT NOT NULL,"
    "  conflicting_body TEXT,"
    "  deleted INTEGER NOT NULL DEFAULT 0,"
    "  origin TEXT NOT NULL,"
    "  detected_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX conflicts_entity ON conflicts(space_id, collection, entity_id);"
    "CREATE TABLE keys ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL DEFAULT '',"
    "  role TEXT NOT NULL,"
    "  spaces TEXT NOT NULL,"
    "  hash BLOB NOT NULL UNIQUE,"
    "  created_at INTEGER NOT NULL,"
    "  revoked_at INTEGER"
    ") WITHOUT ROWID;"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  at INTEGER NOT NULL,"
    "  actor TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  space TEXT,"
    "  target TEXT,"
    "  meta TEXT,"
    "  remote_addr TEXT"
    ");"
    "CREATE INDEX audit_space ON audit(space, id);"
    "CREATE INDEX audit_action ON audit(action, id);",
    /* 3: snapshots */
    "CREATE TABLE snapshots ("
    "  id TEXT PRIMARY KEY,"
    "  space_id INTEGER NOT NULL,"
    "  space TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  server_version INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL,"
    "  completed_at INTEGER,"
    "  entity_counts TEXT NOT NULL DEFAULT '{}',"
    "  entity_total INTEGER NOT NULL DEFAULT 0,"
    "  raw_bytes INTEGER NOT NULL DEFAULT 0,"
    "  size_bytes INTEGER NOT NULL DEFAULT 0,"
    "  sha256 TEXT,"
    "  level INTEGER NOT NULL,"
    "  created_by TEXT NOT NULL,"
    "  note TEXT,"
    "  error TEXT,"
    "  blobs TEXT NOT NULL DEFAULT '[]'"
    ") WITHOUT ROWID;"
    "CREATE INDEX snapshots_space ON snapshots(space_id, id);",
    /* 4: sync jobs, checkpoints, where an entity's current revision came from */
    "CREATE TABLE sync_jobs ("
    "  id TEXT PRIMARY KEY,"
    "  space TEXT NOT NULL,"
    "  peer_url TEXT NOT NULL,"
    "  peer_space TEXT NOT NULL,"
    "  direction TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  phase TEXT NOT NULL,"
    "  pulled INTEGER NOT NULL DEFAULT 0,"
    "  pushed INTEGER NOT NULL DEFAULT 0,"
    "  conflicts INTEGER NOT NULL DEFAULT 0,"
    "  blobs INTEGER NOT NULL DEFAULT 0,"
    "  bytes INTEGER NOT NULL DEFAULT 0,"
    "  started_at INTEGER NOT NULL,"
    "  finished_at INTEGER,"
    "  error TEXT,"
    "  created_by TEXT NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX sync_jobs_space ON sync_jobs(space, id);"
    "CREATE TABLE checkpoints ("
    "  space_id INTEGER NOT NULL,"
    "  peer_url TEXT NOT NULL,"
    "  peer_space TEXT NOT NULL,"
    "  direction TEXT NOT NULL,"
    "  peer_uid TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (space_id, peer_url, peer_space, direction)"
    ") WITHOUT ROWID;"
    "ALTER TABLE entities ADD COLUMN origin TEXT;",
    /* 5: persistent peers */
    "CREATE TABLE peers ("
    "  space_id INTEGER NOT NULL,"
    "  space TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  url TEXT NOT NULL,"
    "  peer_space TEXT NOT NULL,"
    "  token TEXT NOT NULL,"
    "  direction TEXT NOT NULL,"
    "  every_seconds INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL,"
    "  last_job TEXT,"
    "  last_status TEXT,"
    "  last_error TEXT,"
    "  last_run_at INTEGER,"
    "  failures INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (space_id, name)"
    ") WITHOUT ROWID;",
    /* 6: blobs belong to spaces. The bytes stay shared on disk; a space sees
     * a blob only through a reference. An existing database gets one for
     * every blob a space's data names in "_blobs": its live entities, its
     * conflict records, its completed snapshots (so they stay restorable).
     * A blob nothing names belongs to no space: blobs_recover removes it. */
    "CREATE TABLE space_blobs ("
    "  sha256 TEXT NOT NULL,"
    "  space_id INTEGER NOT NULL,"
    "  PRIMARY KEY (sha256, space_id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX space_blobs_space ON space_blobs(space_id, sha256);"
    "CREATE TEMP TABLE named (space_id INTEGER, list TEXT);"
    "INSERT INTO named SELECT space_id, body FROM entities"
    "  WHERE deleted = 0 AND body IS NOT NULL AND instr(body, '\"_blobs\":') > 0;"
    "INSERT INTO named SELECT space_id, conflicting_body FROM conflicts"
    "  WHERE conflicting_body IS NOT NULL AND instr(conflicting_body, '\"_blobs\":') > 0;"
    /* a snapshot's blobs column is the list itself: wrap it like a body */
    "INSERT INTO named SELECT space_id, '{\"_blobs\":' || blobs || '}' FROM snapshots"
    "  WHERE status = 'completed' AND blobs <> '[]';"
    /* CASE: json_each is never handed text that is not a JSON array */
    "INSERT OR IGNORE INTO space_blobs(sha256, space_id)"
    "  SELECT j.value, n.space_id FROM named n, json_each(CASE WHEN json_valid(n.list) THEN"
    "    CASE WHEN json_type(n.list, '$._blobs') = 'array' THEN json_extract(n.list, '$._blobs') ELSE '[]' END"
    "    ELSE '[]' END) j"
    "  WHERE j.type = 'text' AND length(j.value) = 64 AND j.value NOT GLOB '*[^0-9a-f]*'"
    "    AND n.space_id IN (SELECT id FROM spaces);"
    "DROP TABLE named;",
    /* 7: what the last read of a snapshot's file found (see snapshot.c,
     * "integrity"): 'unchecked' until a full check; an import was checked
     * in full before it was recorded */
    "ALTER TABLE snapshots ADD COLUMN integrity TEXT NOT NULL DEFAULT 'unchecked';"
    "ALTER TABLE snapshots ADD COLUMN integrity_error TEXT;"
    "ALTER TABLE snapshots ADD COLUMN integrity_checked_at INTEGER;"
    "UPDATE snapshots SET integrity = 'ok', integrity_checked_at = completed_at"
    " WHERE kind = 'imported' AND status = 'completed';",
    /* 8: what a sync job could not apply: how many items, and the first
     * ones (a JSON array of {direction, collection, id, error, message}) */
    "ALTER TABLE sync_jobs ADD COLUMN errors INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE sync_jobs ADD COLUMN error_items TEXT NOT NULL DEFAULT '[]';",
    /* 9: off-site copies of snapshots (svc/remote.c). A row outlives its
     * local snapshot: remote retention needs to know what is up there */
    "CREATE TABLE snapshot_remote ("
    "  snapshot_id TEXT PRIMARY KEY,"
    "  space TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  status TEXT NOT NULL,"        /* pending, uploading, uploaded, failed */
    "  key TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  uploaded_at INTEGER,"
    "  object_bytes INTEGER,"
    "  object_sha256 TEXT"
    ") WITHOUT ROWID;"
    "CREATE INDEX snapshot_remote_kind ON snapshot_remote(space, kind, status, snapshot_id);",
    /* 10: a job asked to bootstrap from the peer's snapshot: what it did
     * (the job's "bootstrap" object as JSON), NULL for the others */
    "ALTER TABLE sync_jobs ADD COLUMN bootstrap TEXT;",
    /* 11: the tombstones of a space in version order (GET /changes?deleted=
     * only, which a snapshot bootstrap reads): without it that read walks
     * every entity of the space; partial, so only deletions pay for it */
    "CREATE INDEX entities_tombstones ON entities(space_id, version) WHERE deleted = 1;",
};

int store_connect(const char *path, bool readonly, enum durability durability, sqlite3 **out, char *err,
                  size_t errlen)
{
    sqlite3 *db = NULL;
    int flags = readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    flags |= SQLITE_OPEN_NOMUTEX;    /* one owner thread at a time */
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, 5000);
    /* temp_store=FILE where we write: every writer op runs in a savepoint,
     * whose statement journal keeps the original of each page it changes.
     * In memory that is unbounded (a space of 100,000 entities deleted in
     * one op took 100 MB of RSS, a restore over a million entities would
     * take a GB); as a file it spills past 64 KiB to a deleted temp file
     * (SQLITE_TMPDIR, else /var/tmp, /tmp) and stays in the page cache. */
    char pragmas[256];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=ON;"
             "PRAGMA temp_store=FILE; PRAGMA cache_size=-16000;",
             durability == DURABILITY_FULL ? "FULL" : "NORMAL");
    char *msg = NULL;
    if (sqlite3_exec(db, readonly ? "PRAGMA temp_store=MEMORY;" : pragmas, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot configure %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(db);
        return -1;
    }
    *out = db;
    return 0;
}

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int migrate(struct store *st, char *err, size_t errlen)
{
    sqlite3 *db = st->db;
    sqlite3_stmt *q = NULL;
    if (exec(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);", err, errlen) < 0)
        return -1;
    int version = 0;
    if (sqlite3_prepare_v2(db, "SELECT max(version) FROM schema_version", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        version = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    int latest = (int)ARRAY_SIZE(migrations);
    if (version < 0) {
        snprintf(err, errlen, "database schema version %d is not valid", version);
        return -1;
    }
    if (version > latest) {
        snprintf(err, errlen, "database schema version %d is newer than this binary knows (%d)", version, latest);
        return -1;
    }
    for (int v = version + 1; v <= latest; v++) {
        char bump[96];
        snprintf(bump, sizeof bump, "INSERT INTO schema_version(version) VALUES (%d);", v);
        if (exec(db, "BEGIN IMMEDIATE;", err, errlen) < 0) return -1;
        if (exec(db, migrations[v - 1], err, errlen) < 0 || exec(db, bump, err, errlen) < 0) {
            sqlite3_exec(db, "ROLLBACK;", NULL, NULL, NULL);
            char tmp[256];
            snprintf(tmp, sizeof tmp, "%s", err);
            snprintf(err, errlen, "migration %d failed: %s", v, tmp);
            return -1;
        }
        if (exec(db, "COMMIT;", err, errlen) < 0) return -1;
    }
    st->schema_version = latest;
    return 0;
}

static int load_meta(struct store *st, char *err, size_t errlen)
{
    sqlite3 *db = st->db;
    sqlite3_stmt *q = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key='instance_id'", -1, &q, NULL) != SQLITE_OK)
        goto out;
    if (sqlite3_step(q) == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(q, 0);
        if (v && ulid_valid((const char *)v, strlen((const char *)v))) {
            memcpy(st->instance_id, v, 27);
            rc = 0;
        }
    }
    sqlite3_finalize(q);
    q = NULL;
    if (rc != 0) {
        ulid_make(st->instance_id, now_ms_wall());
        if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta(key, value) VALUES ('instance_id', ?)", -1, &q,
                               NULL) != SQLITE_OK)
            goto out;
        sqlite3_bind_text(q, 1, st->instance_id, 26, SQLITE_STATIC);
        if (sqlite3_step(q) != SQLITE_DONE) goto out;
        sqlite3_finalize(q);
        q = NULL;
    }
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM spaces", -1, &q, NULL) != SQLITE_OK) goto out;
    if (sqlite3_step(q) != SQLITE_ROW) goto out;
    st->spaces = (uint64_t)sqlite3_column_int64(q, 0);
    rc = 0;
out:
    if (rc != 0) snprintf(err, errlen, "reading metadata: %s", sqlite3_errmsg(db));
    sqlite3_finalize(q);
    return rc;
}

int store_open(const char *data_dir, enum durability durability, struct store **out, char *err, size_t errlen)
{
    struct store *st = xcalloc(1, sizeof *st);
    pthread_mutex_init(&st->lock, NULL);
    st->durability = durability;
    snprintf(st->path, sizeof st->path, "%s/snapsync.db", data_dir);
    if (store_connect(st->path, false, durability, &st->db, err, errlen) < 0) goto fail;
    char jm[16] = "";
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode", -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        snprintf(jm, sizeof jm, "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    if (strcmp(jm, "wal") != 0) {
        snprintf(err, errlen, "%s: cannot switch to WAL mode (journal_mode=%s)", st->path, jm);
        goto fail;
    }
    if (migrate(st, err, errlen) < 0 || load_meta(st, err, errlen) < 0) goto fail;
    *out = st;
    return 0;
fail:
    store_close(st);
    return -1;
}

void store_close(struct store *st)
{
    if (!st) return;
    for (int i = 0; i < st->nreaders; i++) sqlite3_close(st->readers[i]);
    if (st->db) {
        sqlite3_exec(st->db, "PRAGMA optimize;", NULL, NULL, NULL);
        sqlite3_close(st->db);
    }
    pthread_mutex_destroy(&st->lock);
    free(st);
}

const char *store_instance_id(const struct store *st) { return st->instance_id; }
struct read_side *store_read_side(struct store *st) { return &st->read; }
const char *store_db_path(const struct store *st) { return st->path; }
int store_schema_version(const struct store *st) { return st->schema_version; }
uint64_t store_space_count(const struct store *st) { return st->spaces; }
sqlite3 *store_startup_db(struct store *st) { return st->db; }

int store_space_version(sqlite3 *db, int64_t space_id, uint64_t *out)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "SELECT version FROM spaces WHERE id = ?", -1, &q, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_int64(q, 1, space_id);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) *out = (uint64_t)sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

sqlite3 *store_reader_get(struct store *st)
{
    sqlite3 *db = NULL;
    pthread_mutex_lock(&st->lock);
    if (st->nreaders > 0) db = st->readers[--st->nreaders];
    pthread_mutex_unlock(&st->lock);
    if (!db) {
        char err[256];
        if (store_connect(st->path, true, st->durability, &db, err, sizeof err) < 0) return NULL;
    }
    return db;
}

void store_reader_put(struct store *st, sqlite3 *db)
{
    if (!db) return;
    pthread_mutex_lock(&st->lock);
    if (st->nreaders < READER_POOL) {
        st->readers[st->nreaders++] = db;
        db = NULL;
    }
    pthread_mutex_unlock(&st->lock);
    if (db) sqlite3_close(db);
}
