/* writer.c - see writer.h.
 *
 * Threads: writer_submit and on_async run on the loop thread; writer_main
 * is the writer thread. They meet in two lists guarded by one mutex: the
 * queue (loop -> writer) and the finished batches (writer -> loop).
 *
 * The writer keeps every space's counters and digest in memory (loaded at
 * start) and writes the touched ones back in the same transaction as the
 * batch, so /sync/status never scans. If a commit fails, the batch is
 * failed whole and the counters are reloaded from the database.
 */
#include "store/writer.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <uv.h>

#include "core/cli.h"
#include "core/log.h"
#include "store/spaces.h"
#include "store/store.h"

#define STMT_CACHE 128

struct batch {
    struct list link;
    struct list ops;
    struct space_stats *spaces;      /* touched spaces after commit */
    size_t nspaces;
    struct change_rec *changes;      /* entity changes, in commit order */
    size_t nchanges;
};

struct wtx {
    struct writer *w;
    uint64_t now;
    struct space_stats **touched;
    size_t ntouched, cap_touched;
    struct change_rec *changes;
    size_t nchanges, cap_changes;
    size_t op_changes;               /* changes[] length when the current op began */
    const char *origin;              /* instance the revisions being written came from, or NULL */
};

void wtx_set_origin(struct wtx *tx, const char *origin) { tx->origin = origin; }
const char *wtx_origin(struct wtx *tx) { return tx->origin; }

struct writer {
    struct spaces *spaces_reg;       /* loop thread: the registry each commit updates */
    struct job_pool *pool;           /* holds the requests of queued ops (its hooks) */
    struct writer_hooks hooks;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct list queue;               /* struct wop */
    uint64_t queued;
    uint64_t queued_bytes;           /* request bodies held by queued ops */
    struct list finished;            /* struct batch */
    /* --durability full: committed batches wait here for the syncer's
     * fdatasync of the WAL before anyone is told they are done */
    bool full;
    struct list committed;
    pthread_cond_t sync_cv;
    pthread_t sync_thread;
    int wal_fd;
    char wal_path[1200];
    uint64_t syncs;
    bool stop;
    uv_async_t async;
    uint64_t inflight;               /* loop thread: submitted, not yet done */
    struct list durable_waits;       /* loop thread: struct durable_wait */
    /* checkpointer: its own thread and connection, so a checkpoint's
     * fsyncs never stall a commit */
    pthread_t ckpt_thread;
    pthread_cond_t ckpt_cv;
    bool ckpt_wanted;
    sqlite3 *ckpt_db;
    uint64_t checkpoints;
    /* writer thread only */
    sqlite3 *db;
    struct { const char *sql; sqlite3_stmt *st; } stmts[STMT_CACHE];
    int nstmts;
    struct journal *journals;        /* restores in progress (writer thread) */
    size_t changes_max;              /* WRITER_CHANGES_MAX (a test may lower it) */
    struct space_stats **spaces;
    size_t nspaces, capspaces;
};


int wop_fail(struct wop *op, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(&op->err, status, code, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- statement cache and spaces (writer thread) ------------------------- */

sqlite3 *wtx_db(struct wtx *tx) { return tx->w->db; }
uint64_t wtx_now(struct wtx *tx) { return tx->now; }

sqlite3_stmt *wtx_stmt(struct wtx *tx, const char *sql)
{
    struct writer *w = tx->w;
    for (int i = 0; i < w->nstmts; i++)
        if (w->stmts[i].sql == sql) {
            sqlite3_reset(w->stmts[i].st);
            sqlite3_clear_bindings(w->stmts[i].st);
            return w->stmts[i].st;
        }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(w->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"prepare_failed\",\"error\":\"%s\"}\n", sqlite3_errmsg(w->db));
        abort();                     /* our SQL is program text: a bug */
    }
    if (w->nstmts < STMT_CACHE) {
        w->stmts[w->nstmts].sql = sql;
        w->stmts[w->nstmts].st = st;
        w->nstmts++;
    } else {
        abort();                     /* raise STMT_CACHE */
    }
    return st;
}

static int load_spaces(struct writer *w)
{
    for (size_t i = 0; i < w->nspaces; i++) free(w->spaces[i]);
    w->nspaces = 0;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(w->db,
                           "SELECT id, name, uid, created_at, version, entity_count, tombstone_count, "
                           "conflict_count, digest FROM spaces ORDER BY name",
                           -1, &q, NULL) != SQLITE_OK)
        return -1;
    while (sqlite3_step(q) == SQLITE_ROW) {
        struct space_stats *sp = xcalloc(1, sizeof *sp);
        sp->id = sqlite3_column_int64(q, 0);
        snprintf(sp->name, sizeof sp->name, "%s", (const char *)sqlite3_column_text(q, 1));
        snprintf(sp->uid, sizeof sp->uid, "%s", (const char *)sqlite3_column_text(q, 2));
        sp->created_at = (uint64_t)sqlite3_column_int64(q, 3);
        sp->version = (uint64_t)sqlite3_column_int64(q, 4);
        sp->entities = (uint64_t)sqlite3_column_int64(q, 5);
        sp->tombstones = (uint64_t)sqlite3_column_int64(q, 6);
        sp->conflicts = (uint64_t)sqlite3_column_int64(q, 7);
        digest_from_hex(&sp->digest, (const char *)sqlite3_column_text(q, 8));
        if (w->nspaces == w->capspaces) {
            w->capspaces = w->capspaces ? w->capspaces * 2 : 16;
            w->spaces = xrealloc(w->spaces, w->capspaces * sizeof *w->spaces);
        }
        w->spaces[w->nspaces++] = sp;
    }
    return sqlite3_finalize(q) == SQLITE_OK ? 0 : -1;
}

struct space_stats *wtx_space(struct wtx *tx, const char *name)
{
    struct writer *w = tx->w;
    for (size_t i = 0; i < w->nspaces; i++)
        if (!strcmp(w->spaces[i]->name, name)) return w->spaces[i];
    return NULL;
}

void wtx_space_touch(struct wtx *tx, struct space_stats *sp)
{
    for (size_t i = 0; i < tx->ntouched; i++)
        if (tx->touched[i] == sp) return;
    if (tx->ntouched == tx->cap_touched) {
        tx->cap_touched = tx->cap_touched ? tx->cap_touched * 2 : 8;
        tx->touched = xrealloc(tx->touched, tx->cap_touched * sizeof *tx->touched);
    }
    tx->touched[tx->ntouched++] = sp;
}

static const char SQL_SPACE_INSERT[] =
    "INSERT INTO spaces(name, uid, created_at, version, entity_count, tombstone_count, conflict_count, digest)"
    " VALUES (?, ?, ?, 0, 0, 0, 0, ?)";

struct space_stats *wtx_space_create(struct wtx *tx, const char *name, int *created)
{
    struct space_stats *sp = wtx_space(tx, name);
    *created = 0;
    if (sp) return sp;
    struct space_stats tmp;
    memset(&tmp, 0, sizeof tmp);
    snprintf(tmp.name, sizeof tmp.name, "%s", name);
    ulid_make(tmp.uid, tx->now);
    tmp.created_at = tx->now;
    char hex[65];
    digest_hex(&tmp.digest, hex);
    sqlite3_stmt *st = wtx_stmt(tx, SQL_SPACE_INSERT);
    sqlite3_bind_text(st, 1, tmp.name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, tmp.uid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)tmp.created_at);
    sqlite3_bind_text(st, 4, hex, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) return NULL;
    tmp.id = sqlite3_last_insert_rowid(tx->w->db);
    struct writer *w = tx->w;
    sp = xmalloc(sizeof *sp);
    *sp = tmp;
    if (w->nspaces == w->capspaces) {
        w->capspaces = w->capspaces ? w->capspaces * 2 : 16;
        w->spaces = xrealloc(w->spaces, w->capspaces * sizeof *w->spaces);
    }
    w->spaces[w->nspaces++] = sp;
    wtx_space_touch(tx, sp);
    *created = 1;
    return sp;
}

static const char SQL_SPACE_DEL_ENT[] = "DELETE FROM entities WHERE space_id = ?";
static const char SQL_SPACE_DEL_CONF[] = "DELETE FROM conflicts WHERE space_id = ?";
static const char SQL_SPACE_DEL_CKPT[] = "DELETE FROM checkpoints WHERE space_id = ?";
static const char SQL_SPACE_DEL_PEERS[] = "DELETE FROM peers WHERE space_id = ?";
static const char SQL_SPACE_SNAP_IDS[] = "SELECT id FROM snapshots WHERE space_id = ?";
static const char SQL_SPACE_DEL_SNAPS[] = "DELETE FROM snapshots WHERE space_id = ?";
static const char SQL_SPACE_DEL[] = "DELETE FROM spaces WHERE id = ?";
static const char SQL_SPACE_DEL_JOBS[] = "DELETE FROM sync_jobs WHERE space = ?";

/* A space created later may get the same id (INTEGER PRIMARY KEY reuses the
 * highest) and may get the same name: nothing keyed by either may outlive
 * the space. Sync checkpoints would make the new, empty space skip
 * everything its peers had sent to the old one; persistent peers would go on
 * syncing it; snapshots would be listed (and restorable) in it; its sync job
 * history would be the old one's; its blob references would show the new
 * space the old one's files. The ids of the deleted snapshots are appended
 * to snap_ids (NUL after each), and the blobs no other space references to
 * blobs_gone (64 hex digits each): their files go once this commits. */
int wtx_space_delete(struct wtx *tx, struct space_stats *sp, struct buf *snap_ids, struct buf *blobs_gone)
{
    sqlite3_stmt *st = wtx_stmt(tx, SQL_SPACE_SNAP_IDS);
    sqlite3_bind_int64(st, 1, sp->id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        buf_append(snap_ids, sqlite3_column_text(st, 0), (size_t)sqlite3_column_bytes(st, 0));
        buf_putc(snap_ids, '\0');
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return -1;
    if (tx->w->hooks.space_drop && tx->w->hooks.space_drop(tx, sp->id, blobs_gone) < 0) return -1;
    const char *sqls[] = {SQL_SPACE_DEL_ENT, SQL_SPACE_DEL_CONF, SQL_SPACE_DEL_CKPT, SQL_SPACE_DEL_PEERS,
                          SQL_SPACE_DEL_SNAPS, SQL_SPACE_DEL};
    for (size_t i = 0; i < ARRAY_SIZE(sqls); i++) {
        st = wtx_stmt(tx, sqls[i]);
        sqlite3_bind_int64(st, 1, sp->id);
        if (sqlite3_step(st) != SQLITE_DONE) return -1;
    }
    st = wtx_stmt(tx, SQL_SPACE_DEL_JOBS);
    sqlite3_bind_text(st, 1, sp->name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) return -1;
    sp->removed = true;
    wtx_space_touch(tx, sp);
    return 0;
}

static const char SQL_AUDIT[] =
    "INSERT INTO audit(at, actor, action, space, target, meta, remote_addr) VALUES (?, ?, ?, ?, ?, ?, ?)";

int wtx_audit(struct wtx *tx, const char *actor, const char *action, const char *space, const char *target,
              const char *meta, const char *remote_addr)
{
    sqlite3_stmt *st = wtx_stmt(tx, SQL_AUDIT);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)tx->now);
    sqlite3_bind_text(st, 2, actor ? actor : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, action, -1, SQLITE_STATIC);
    if (space && *space) sqlite3_bind_text(st, 4, space, -1, SQLITE_STATIC);
    if (target && *target) sqlite3_bind_text(st, 5, target, -1, SQLITE_STATIC);
    if (meta && *meta) sqlite3_bind_text(st, 6, meta, -1, SQLITE_STATIC);
    if (remote_addr && *remote_addr) sqlite3_bind_text(st, 7, remote_addr, -1, SQLITE_STATIC);
    return sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
}

/* ---- entities (writer thread) ------------------------------------------- */

void ent_row_free(struct ent_row *e)
{
    free(e->body);
    e->body = NULL;
}

static const char SQL_ENT_GET[] =
    "SELECT rev, version, created_at, updated_at, deleted, body, revs FROM entities"
    " WHERE space_id = ? AND collection = ? AND id = ?";

int wtx_entity_get(struct wtx *tx, struct space_stats *sp, const char *coll, const char *id, struct ent_row *out)
{
    memset(out, 0, offsetof(struct ent_row, revs));
    out->revs[0] = '\0';
    sqlite3_stmt *st = wtx_stmt(tx, SQL_ENT_GET);
    sqlite3_bind_int64(st, 1, sp->id);
    sqlite3_bind_text(st, 2, coll, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) return 0;
    if (rc != SQLITE_ROW) return -1;
    out->exists = true;
    snprintf(out->rev, sizeof out->rev, "%s", (const char *)sqlite3_column_text(st, 0));
    out->version = (uint64_t)sqlite3_column_int64(st, 1);
    out->created_at = (uint64_t)sqlite3_column_int64(st, 2);
    out->updated_at = (uint64_t)sqlite3_column_int64(st, 3);
    out->deleted = sqlite3_column_int(st, 4) != 0;
    if (sqlite3_column_type(st, 5) != SQLITE_NULL) {
        out->body_len = (size_t)sqlite3_column_bytes(st, 5);
        out->body = xstrndup((const char *)sqlite3_column_text(st, 5), out->body_len);
    }
    const unsigned char *revs = sqlite3_column_text(st, 6);
    snprintf(out->revs, sizeof out->revs, "%s", revs ? (const char *)revs : "");
    sqlite3_reset(st);
    return 0;
}

static const char SQL_ENT_INSERT[] =
    "INSERT INTO entities(space_id, collection, id, rev, version, created_at, updated_at, deleted, body, revs, origin)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10)";
static const char SQL_ENT_UPDATE[] =
    "UPDATE entities SET rev = ?4, version = ?5, updated_at = ?6, deleted = ?7, body = ?8, revs = ?9, origin = ?10"
    " WHERE space_id = ?1 AND collection = ?2 AND id = ?3";

void journal_free(struct journal *j)
{
    if (!j) return;
    for (size_t k = 0; k < j->n; k++) {
        free(j->v[k].body);
        free(j->v[k].revs);
    }
    free(j->v);
    free(j);
}

void wtx_journal_start(struct wtx *tx, int64_t space_id, size_t max_bytes)
{
    journal_free(wtx_journal_take(tx, space_id));
    struct journal *j = xcalloc(1, sizeof *j);
    j->space_id = space_id;
    j->max_bytes = max_bytes;
    j->next = tx->w->journals;
    tx->w->journals = j;
}

struct journal *wtx_journal_take(struct wtx *tx, int64_t space_id)
{
    for (struct journal **pp = &tx->w->journals; *pp; pp = &(*pp)->next) {
        if ((*pp)->space_id != space_id) continue;
        struct journal *j = *pp;
        *pp = j->next;
        j->next = NULL;
        return j;
    }
    return NULL;
}

/* an entity of a journaled space is about to take `version`; cur is its state now */
static void journal_note(struct journal *j, const char *coll, const char *id, uint64_t version, const struct ent_row *cur)
{
    if (j->overflowed) return;
    bool live = cur->exists && !cur->deleted && cur->body;
    size_t add = sizeof *j->v + (live ? cur->body_len + strlen(cur->revs) : 0);
    if (j->bytes + add > j->max_bytes) {
        j->overflowed = true;
        return;
    }
    if (j->n == j->cap) {
        j->cap = j->cap ? j->cap * 2 : 64;
        j->v = xrealloc(j->v, j->cap * sizeof *j->v);
    }
    struct journal_ent *e = &j->v[j->n++];
    snprintf(e->c, sizeof e->c, "%s", coll);
    snprintf(e->i, sizeof e->i, "%s", id);
    e->version = version;
    e->live = live;
    e->body = live ? xstrndup(cur->body, cur->body_len) : NULL;
    e->blen = live ? cur->body_len : 0;
    snprintf(e->rev, sizeof e->rev, "%s", live ? cur->rev : "");
    e->revs = live ? xstrdup(cur->revs) : NULL;
    j->bytes += add;
}

/* An entity's write is in the database: the space's digest, counts and
 * version follow, and the change is noted for the commit's listeners. */
static void ent_written(struct wtx *tx, struct space_stats *sp, const char *coll, const char *id, bool existed,
                        bool was_deleted, const char *old_rev, const char *rev, bool deleted, uint64_t version)
{
    struct digest d;
    if (existed) {
        digest_item(&d, coll, id, old_rev, was_deleted);
        digest_xor(&sp->digest, &d);
        if (was_deleted) sp->tombstones--;
        else sp->entities--;
    }
    digest_item(&d, coll, id, rev, deleted);
    digest_xor(&sp->digest, &d);
    if (deleted) sp->tombstones++;
    else sp->entities++;
    sp->version = version;
    wtx_space_touch(tx, sp);
    if (tx->nchanges >= tx->w->changes_max) {   /* the listeners hear of a gap instead */
        sp->changes_skipped++;
        return;
    }
    if (tx->nchanges == tx->cap_changes) {
        tx->cap_changes = tx->cap_changes ? tx->cap_changes * 2 : 64;
        tx->changes = xrealloc(tx->changes, tx->cap_changes * sizeof *tx->changes);
    }
    struct change_rec *ch = &tx->changes[tx->nchanges++];
    snprintf(ch->space, sizeof ch->space, "%s", sp->name);
    snprintf(ch->collection, sizeof ch->collection, "%s", coll);
    snprintf(ch->id, sizeof ch->id, "%s", id);
    snprintf(ch->rev, sizeof ch->rev, "%s", rev);
    ch->version = version;
    ch->deleted = deleted;
}

int wtx_entity_put(struct wtx *tx, struct wop *op, struct space_stats *sp, const char *coll, const char *id,
                   struct ent_row *cur, const char *rev, bool deleted, const char *body, size_t body_len,
                   const char *revs_after)
{
    char hist[sizeof cur->revs];
    if (revs_after) snprintf(hist, sizeof hist, "%s", revs_after);
    else if (cur->exists) rev_history_push(hist, sizeof hist, cur->rev, cur->revs);
    else hist[0] = '\0';
    uint64_t version = sp->version + 1;
    sqlite3_stmt *st = wtx_stmt(tx, cur->exists ? SQL_ENT_UPDATE : SQL_ENT_INSERT);
    sqlite3_bind_int64(st, 1, sp->id);
    sqlite3_bind_text(st, 2, coll, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, rev, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)version);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)tx->now);
    sqlite3_bind_int(st, 7, deleted ? 1 : 0);
    if (body) sqlite3_bind_text(st, 8, body, (int)body_len, SQLITE_STATIC);
    else sqlite3_bind_null(st, 8);
    sqlite3_bind_text(st, 9, hist, -1, SQLITE_STATIC);
    if (tx->origin) sqlite3_bind_text(st, 10, tx->origin, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 10);
    if (sqlite3_step(st) != SQLITE_DONE)
        return wop_fail(op, 500, "storage_error", "writing the entity failed: %s", sqlite3_errmsg(tx->w->db));
    /* a restore of this space is being planned: note what the entity was.
     * (If the op or batch rolls back later, the note stays: it still tells
     * the entity's state before that version, which is all it claims.) */
    for (struct journal *j = tx->w->journals; j; j = j->next)
        if (j->space_id == sp->id) journal_note(j, coll, id, version, cur);
    /* the statement succeeded: now the memory state follows */
    ent_written(tx, sp, coll, id, cur->exists, cur->deleted, cur->rev, rev, deleted, version);
    if (!cur->exists) cur->created_at = tx->now;
    /* cur now describes the new state */
    snprintf(cur->revs, sizeof cur->revs, "%s", hist);
    snprintf(cur->rev, sizeof cur->rev, "%s", rev);
    cur->exists = true;
    cur->version = version;
    cur->updated_at = tx->now;
    cur->deleted = deleted;
    free(cur->body);
    cur->body = body ? xstrndup(body, body_len) : NULL;
    cur->body_len = body ? body_len : 0;
    return 0;
}

/* Many rows in one statement: an upsert of PUT_MANY_ROWS rows (and of one
 * row for the rest). ?1 space, ?2 now, ?3 origin; then per row collection,
 * id, rev, version, deleted, body, revs. An existing row keeps created_at. */
#define PUT_MANY_ROWS 32
#define PUT_MANY_COLS 7
static char sql_put_many[PUT_MANY_ROWS * 64 + 512], sql_put_one[640];

static void put_many_sql(char *out, size_t cap, int rows)
{
    size_t n = (size_t)snprintf(out, cap, "INSERT INTO entities(space_id, collection, id, rev, version, created_at,"
                                " updated_at, deleted, body, revs, origin) VALUES ");
    for (int k = 0; k < rows; k++) {
        int p = 4 + k * PUT_MANY_COLS;
        n += (size_t)snprintf(out + n, cap - n, "%s(?1, ?%d, ?%d, ?%d, ?%d, ?2, ?2, ?%d, ?%d, ?%d, ?3)", k ? ", " : "",
                              p, p + 1, p + 2, p + 3, p + 4, p + 5, p + 6);
    }
    snprintf(out + n, cap - n, " ON CONFLICT(space_id, collection, id) DO UPDATE SET rev = excluded.rev,"
             " version = excluded.version, updated_at = excluded.updated_at, deleted = excluded.deleted,"
             " body = excluded.body, revs = excluded.revs, origin = excluded.origin");
}

int wtx_entity_put_many(struct wtx *tx, struct wop *op, struct space_stats *sp, const struct ent_write *v, size_t n)
{
    for (struct journal *j = tx->w->journals; j; j = j->next)
        if (j->space_id == sp->id) {
            assert(!"wtx_entity_put_many under a journal");
            return wop_fail(op, 500, "storage_error", "a batched write while a journal of the space is on");
        }
    if (!sql_put_one[0]) {           /* writer thread only; the text is the statement cache's key */
        put_many_sql(sql_put_many, sizeof sql_put_many, PUT_MANY_ROWS);
        put_many_sql(sql_put_one, sizeof sql_put_one, 1);
    }
    for (size_t done = 0; done < n;) {
        size_t rows = n - done >= PUT_MANY_ROWS ? PUT_MANY_ROWS : 1;
        sqlite3_stmt *st = wtx_stmt(tx, rows > 1 ? sql_put_many : sql_put_one);
        sqlite3_bind_int64(st, 1, sp->id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)tx->now);
        if (tx->origin) sqlite3_bind_text(st, 3, tx->origin, -1, SQLITE_STATIC);
        for (size_t k = 0; k < rows; k++) {
            const struct ent_write *e = &v[done + k];
            int p = 4 + (int)k * PUT_MANY_COLS;
            sqlite3_bind_text(st, p, e->coll, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, p + 1, e->id, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, p + 2, e->rev, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, p + 3, (sqlite3_int64)(sp->version + 1 + k));
            sqlite3_bind_int(st, p + 4, e->deleted ? 1 : 0);
            if (e->body) sqlite3_bind_text(st, p + 5, e->body, (int)e->blen, SQLITE_STATIC);
            sqlite3_bind_text(st, p + 6, e->hist ? e->hist : "", -1, SQLITE_STATIC);
        }
        if (sqlite3_step(st) != SQLITE_DONE)
            return wop_fail(op, 500, "storage_error", "writing the entities failed: %s", sqlite3_errmsg(tx->w->db));
        for (size_t k = 0; k < rows; k++) {
            const struct ent_write *e = &v[done + k];
            ent_written(tx, sp, e->coll, e->id, e->existed, e->was_deleted, e->old_rev, e->rev, e->deleted,
                        sp->version + 1);
        }
        done += rows;
    }
    return 0;
}

/* ---- the writer thread ------------------------------------------------ */

static const char SQL_SPACE_SAVE[] =
    "UPDATE spaces SET version = ?2, entity_count = ?3, tombstone_count = ?4, conflict_count = ?5, digest = ?6"
    " WHERE id = ?1";

static int save_spaces(struct wtx *tx)
{
    for (size_t i = 0; i < tx->ntouched; i++) {
        struct space_stats *sp = tx->touched[i];
        if (sp->removed) continue;
        char hex[65];
        digest_hex(&sp->digest, hex);
        sqlite3_stmt *st = wtx_stmt(tx, SQL_SPACE_SAVE);
        sqlite3_bind_int64(st, 1, sp->id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)sp->version);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)sp->entities);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)sp->tombstones);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)sp->conflicts);
        sqlite3_bind_text(st, 6, hex, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE) return -1;
    }
    return 0;
}

static int run(sqlite3 *db, const char *sql) { return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1; }

static const char SQL_SAVEPOINT[] = "SAVEPOINT op";
static const char SQL_RELEASE[] = "RELEASE op";
static const char SQL_ROLLBACK_TO[] = "ROLLBACK TO op";

/* Savepoint statements run once per op: prepared once, not re-parsed. */
static int step_stmt(struct wtx *tx, const char *sql)
{
    sqlite3_stmt *st = wtx_stmt(tx, sql);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void run_batch(struct writer *w, struct batch *b)
{
    struct wtx tx = {.w = w, .now = now_ms_wall()};
    struct list *pos, *tmp;
    bool ok = run(w->db, "BEGIN IMMEDIATE") == 0;
    struct wop *first = container_of(b->ops.next, struct wop, link);
    if (ok && first->alone) {        /* the batch is this op: no savepoint */
        assert(b->ops.next->next == &b->ops);
        first->err.status = 0;
        if (first->apply(&tx, first) == 0) {
            ok = save_spaces(&tx) == 0 && run(w->db, "COMMIT") == 0;
        } else {
            if (!first->err.status) wop_fail(first, 500, "storage_error", "the write failed");
            run(w->db, "ROLLBACK");
            load_spaces(w);          /* memory back to what is stored */
            tx.ntouched = tx.nchanges = 0;
        }
    } else if (ok) {
        list_foreach_safe(pos, tmp, &b->ops) {
            struct wop *op = container_of(pos, struct wop, link);
            step_stmt(&tx, SQL_SAVEPOINT);
            op->err.status = 0;
            tx.op_changes = tx.nchanges;
            tx.origin = NULL;
            if (op->apply(&tx, op) == 0) {
                step_stmt(&tx, SQL_RELEASE);
            } else {
                if (!op->err.status) wop_fail(op, 500, "storage_error", "the write failed");
                step_stmt(&tx, SQL_ROLLBACK_TO);
                step_stmt(&tx, SQL_RELEASE);
                tx.nchanges = tx.op_changes;     /* its changes never happened */
            }
        }
        ok = save_spaces(&tx) == 0 && run(w->db, "COMMIT") == 0;
    }
    if (!ok) {
        const char *why = sqlite3_errmsg(w->db);
        run(w->db, "ROLLBACK");
        list_foreach_safe(pos, tmp, &b->ops) {
            struct wop *op = container_of(pos, struct wop, link);
            wop_fail(op, 500, "storage_error", "the transaction failed: %s", why);
        }
        load_spaces(w);              /* memory back to what is stored */
        tx.ntouched = 0;
        tx.nchanges = 0;
    }
    b->changes = tx.changes;
    b->nchanges = tx.nchanges;
    b->nspaces = tx.ntouched;
    b->spaces = b->nspaces ? xmalloc(b->nspaces * sizeof *b->spaces) : NULL;
    for (size_t i = 0; i < tx.ntouched; i++) {
        b->spaces[i] = *tx.touched[i];
        tx.touched[i]->changes_skipped = 0;      /* counted per commit */
    }
    /* forget removed spaces now that the loop gets their last copy */
    for (size_t i = 0; i < w->nspaces;) {
        if (w->spaces[i]->removed) {
            free(w->spaces[i]);
            w->spaces[i] = w->spaces[--w->nspaces];
        } else {
            i++;
        }
    }
    free(tx.touched);
}

#define CKPT_FRAMES 4000                 /* WAL frames that trigger a checkpoint */

/* Runs in the writer thread after each commit. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct writer *w = arg;
    UNUSED(db);
    UNUSED(name);
    if (frames >= CKPT_FRAMES) {
        pthread_mutex_lock(&w->mu);
        if (!w->ckpt_wanted) {
            w->ckpt_wanted = true;
            pthread_cond_signal(&w->ckpt_cv);
        }
        pthread_mutex_unlock(&w->mu);
    }
    return SQLITE_OK;
}

static void *ckpt_main(void *arg)
{
    struct writer *w = arg;
    pthread_setname_np(pthread_self(), "snapsync-ckpt");
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->ckpt_wanted && !w->stop) pthread_cond_wait(&w->ckpt_cv, &w->mu);
        if (w->stop) break;
        w->ckpt_wanted = false;
        pthread_mutex_unlock(&w->mu);
        /* PASSIVE: copies what no reader still needs, never blocks the
         * writer; the writer restarts the WAL from its start once a
         * checkpoint has copied everything */
        int nlog = 0, nckpt = 0;
        sqlite3_wal_checkpoint_v2(w->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
        pthread_mutex_lock(&w->mu);
        w->checkpoints++;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    pthread_setname_np(pthread_self(), "snapsync-writer");
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (list_empty(&w->queue) && !w->stop) pthread_cond_wait(&w->cv, &w->mu);
        if (list_empty(&w->queue) && w->stop) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        struct batch *b = xcalloc(1, sizeof *b);
        list_init(&b->ops);
        for (int n = 0; n < WRITER_BATCH && !list_empty(&w->queue); n++) {
            struct list *l = w->queue.next;
            bool alone = container_of(l, struct wop, link)->alone;
            if (alone && n) break;           /* next batch: by itself */
            list_remove(l);
            list_insert_tail(&b->ops, l);
            w->queued--;
            w->queued_bytes -= container_of(l, struct wop, link)->bytes;
            if (alone) break;
        }
        pthread_mutex_unlock(&w->mu);

        run_batch(w, b);

        pthread_mutex_lock(&w->mu);
        if (w->full) {
            list_insert_tail(&w->committed, &b->link);
            pthread_cond_signal(&w->sync_cv);
            pthread_mutex_unlock(&w->mu);
        } else {
            list_insert_tail(&w->finished, &b->link);
            pthread_mutex_unlock(&w->mu);
            uv_async_send(&w->async);
        }
    }
    return NULL;
}

/* Group fsync for --durability full. Every batch committed before the
 * fdatasync started has its WAL frames on disk when it returns (fsync is
 * per file, whatever descriptor wrote the bytes), so it is then safe to
 * acknowledge. Meanwhile the writer already builds the next batch: commits
 * and fsyncs overlap instead of alternating. */
static void *sync_main(void *arg)
{
    struct writer *w = arg;
    pthread_setname_np(pthread_self(), "snapsync-sync");
    /* test hook: SNAPSYNC_TEST_FSYNC_DELAY_MS=N holds every group fsync back
     * N ms, widening the window in which a commit is visible to readers
     * but not yet durable (tests/e2e/durability.test.mjs) */
    uint64_t delay_ms = env_ms("SNAPSYNC_TEST_FSYNC_DELAY_MS");
    struct list local;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (list_empty(&w->committed) && !w->stop) pthread_cond_wait(&w->sync_cv, &w->mu);
        if (list_empty(&w->committed) && w->stop) break;
        list_init(&local);
        while (!list_empty(&w->committed)) {
            struct list *l = w->committed.next;
            list_remove(l);
            list_insert_tail(&local, l);
        }
        pthread_mutex_unlock(&w->mu);
        int err = 0;
        if (delay_ms) {
            struct timespec ts = {(time_t)(delay_ms / 1000), (long)(delay_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (w->wal_fd < 0) w->wal_fd = open(w->wal_path, O_RDONLY | O_CLOEXEC);
        if (w->wal_fd < 0 || fdatasync(w->wal_fd) < 0) err = errno ? errno : EIO;
        if (err) {
            struct list *bp, *bt, *pos, *tmp;
            list_foreach_safe(bp, bt, &local) {
                struct batch *b = container_of(bp, struct batch, link);
                list_foreach_safe(pos, tmp, &b->ops) {
                    struct wop *op = container_of(pos, struct wop, link);
                    if (!op->err.status) wop_fail(op, 500, "storage_error", "fsync of the log failed: %s", strerror(err));
                }
            }
        }
        pthread_mutex_lock(&w->mu);
        w->syncs++;
        while (!list_empty(&local)) {
            struct list *l = local.next;
            list_remove(l);
            list_insert_tail(&w->finished, l);
        }
        uv_async_send(&w->async);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- loop side --------------------------------------------------------- */

bool writer_is_durable(struct writer *w, const struct durable_wait *dw)
{
    if (!w) return true;
    const struct space *sp = spaces_get(w->spaces_reg, dw->space);
    return !sp || sp->st.id != dw->space_id || sp->st.version >= dw->version;
}

void writer_wait_durable(struct writer *w, struct durable_wait *dw)
{
    if (!w || writer_is_durable(w, dw)) {
        dw->ready(dw);
        return;
    }
    list_insert_tail(&w->durable_waits, &dw->link);
}

/* after commits came back (or at stop, all = true) */
static void durable_wake(struct writer *w, bool all)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &w->durable_waits) {
        struct durable_wait *dw = container_of(pos, struct durable_wait, link);
        if (!all && !writer_is_durable(w, dw)) continue;
        list_remove(pos);
        dw->ready(dw);
    }
}

static void on_async(uv_async_t *a)
{
    struct writer *w = container_of(a, struct writer, async);
    struct list done;
    list_init(&done);
    pthread_mutex_lock(&w->mu);
    while (!list_empty(&w->finished)) {
        struct list *l = w->finished.next;
        list_remove(l);
        list_insert_tail(&done, l);
    }
    pthread_mutex_unlock(&w->mu);
    struct list *bpos, *btmp, *pos, *tmp;
    list_foreach_safe(bpos, btmp, &done) {
        struct batch *b = container_of(bpos, struct batch, link);
        for (size_t i = 0; i < b->nspaces; i++) spaces_update(w->spaces_reg, &b->spaces[i]);
        /* answer the writers first: a write's latency should not include
         * fanning its events out to every subscriber */
        list_foreach_safe(pos, tmp, &b->ops) {
            struct wop *op = container_of(pos, struct wop, link);
            struct http_req *r = op->req;
            list_remove(pos);
            w->inflight--;
            op->done(op, (r && w->pool->hooks->alive(r)) ? r : NULL);    /* may free op */
            if (r) w->pool->hooks->unref(r);
        }
        bool skipped = false;
        for (size_t i = 0; i < b->nspaces; i++) skipped |= b->spaces[i].changes_skipped > 0;
        if ((b->nchanges || skipped) && w->hooks.on_commit)
            w->hooks.on_commit(w->hooks.commit_arg, b->changes, b->nchanges, b->spaces, b->nspaces);
        free(b->spaces);
        free(b->changes);
        free(b);
    }
    if (!list_empty(&w->durable_waits)) durable_wake(w, false);
    if (w->inflight == 0) uv_unref((uv_handle_t *)&w->async);
}

int writer_submit(struct writer *w, struct wop *op, struct http_req *r, wop_apply_fn apply, wop_done_fn done)
{
    if (!w) return -1;               /* stopped: after the loop ended */
    assert(!r || w->pool->hooks);
    op->apply = apply;
    op->done = done;
    op->req = r;
    op->err.status = 0;
    op->bytes = r && w->hooks.req_bytes ? w->hooks.req_bytes(r) : 0;
    pthread_mutex_lock(&w->mu);
    if (w->stop || w->queued >= WRITER_QUEUE_MAX || (w->queued && w->queued_bytes + op->bytes > WRITER_QUEUE_BYTES)) {
        pthread_mutex_unlock(&w->mu);
        return -1;
    }
    list_insert_tail(&w->queue, &op->link);
    w->queued++;
    w->queued_bytes += op->bytes;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (r) w->pool->hooks->ref(r);
    if (w->inflight++ == 0) uv_ref((uv_handle_t *)&w->async);
    return 0;
}

uint64_t writer_queue_len(const struct writer *w)
{
    return w ? w->inflight : 0;
}

int writer_start(struct writer **out, uv_loop_t *loop, struct spaces *spaces, struct job_pool *pool,
                 const struct writer_hooks *hooks, const char *db_path, int durability, char *err, size_t errlen)
{
    assert(loop && spaces && pool);
    struct writer *w = xcalloc(1, sizeof *w);
    w->spaces_reg = spaces;
    w->pool = pool;
    if (hooks) w->hooks = *hooks;
    /* test hook: a small list, so a test can make a commit pass it */
    uint64_t cmax = env_ms("SNAPSYNC_TEST_WRITER_CHANGES_MAX");
    w->changes_max = cmax && cmax < WRITER_CHANGES_MAX ? (size_t)cmax : WRITER_CHANGES_MAX;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    list_init(&w->queue);
    list_init(&w->finished);
    list_init(&w->durable_waits);
    pthread_cond_init(&w->ckpt_cv, NULL);
    pthread_cond_init(&w->sync_cv, NULL);
    list_init(&w->committed);
    w->wal_fd = -1;
    w->full = durability == DURABILITY_FULL;
    snprintf(w->wal_path, sizeof w->wal_path, "%s-wal", db_path);
    /* the writer commits with synchronous=NORMAL; with --durability full the
     * syncer makes each batch durable before it is acknowledged */
    if (store_connect(db_path, false, DURABILITY_NORMAL, &w->db, err, errlen) < 0) goto fail;
    if (store_connect(db_path, false, (enum durability)durability, &w->ckpt_db, err, errlen) < 0) goto fail;
    sqlite3_wal_autocheckpoint(w->db, 0);          /* the checkpointer does it */
    sqlite3_wal_hook(w->db, wal_hook, w);
    if (load_spaces(w) < 0) {
        snprintf(err, errlen, "loading spaces: %s", sqlite3_errmsg(w->db));
        goto fail;
    }
    /* hand the loop its first copy of every space */
    for (size_t i = 0; i < w->nspaces; i++) spaces_update(spaces, w->spaces[i]);
    uv_async_init(loop, &w->async, on_async);
    uv_unref((uv_handle_t *)&w->async);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        snprintf(err, errlen, "cannot start the writer thread");
        uv_close((uv_handle_t *)&w->async, NULL);
        goto fail;
    }
    if (pthread_create(&w->ckpt_thread, NULL, ckpt_main, w) != 0) abort();
    if (w->full && pthread_create(&w->sync_thread, NULL, sync_main, w) != 0) abort();
    *out = w;
    return 0;
fail:
    if (w->db) sqlite3_close(w->db);
    if (w->ckpt_db) sqlite3_close(w->ckpt_db);
    free(w);
    return -1;
}

static void on_async_closed(uv_handle_t *h)
{
    free(container_of((uv_async_t *)h, struct writer, async));
}

void writer_stop(struct writer *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_cond_signal(&w->ckpt_cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_lock(&w->mu);
    pthread_cond_signal(&w->sync_cv);
    pthread_mutex_unlock(&w->mu);
    if (w->full) pthread_join(w->sync_thread, NULL);
    pthread_join(w->ckpt_thread, NULL);
    if (w->wal_fd >= 0) close(w->wal_fd);
    sqlite3_close(w->ckpt_db);
    on_async(&w->async);             /* answer nobody, free what came back */
    durable_wake(w, true);           /* nothing more will come */
    for (int i = 0; i < w->nstmts; i++) sqlite3_finalize(w->stmts[i].st);
    while (w->journals) {
        struct journal *j = w->journals;
        w->journals = j->next;
        journal_free(j);
    }
    for (size_t i = 0; i < w->nspaces; i++) free(w->spaces[i]);
    free(w->spaces);
    sqlite3_close(w->db);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_cond_destroy(&w->ckpt_cv);
    pthread_cond_destroy(&w->sync_cv);
    uv_close((uv_handle_t *)&w->async, on_async_closed);    /* frees w */
}
