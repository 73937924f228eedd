/* writer.h - the one write path: a thread that owns the read-write SQLite
 * connection and applies queued write operations in group commits.
 *
 * The loop thread queues a struct wop (embedded in a struct of the
 * caller's, like struct job) with writer_submit(). The writer thread takes
 * everything queued at that moment (up to WRITER_BATCH), opens one
 * transaction, runs each op's apply() inside its own savepoint (a failing op
 * rolls back alone), writes the touched spaces' counters, and commits once:
 * one fsync for the whole batch with --durability full. Then the batch goes
 * back to the loop (uv_async), which updates the space registry and calls
 * each op's done() in submission order.
 *
 * apply() runs on the writer thread and touches only its op, the wtx
 * helpers and SQLite. done() runs on the loop thread; r is NULL when the
 * client left. An op that fails sets status/code/msg (wop_fail).
 *
 * The writer knows nothing above storage: it holds requests through the
 * job pool's opaque reference (core/jobs.h), and tells the layers above
 * about commits and dropped spaces through struct writer_hooks, which
 * main.c installs (the SSE hub, blobs).
 *
 * The queue is capped at WRITER_QUEUE_MAX ops and WRITER_QUEUE_BYTES of
 * request bodies (one op is always admitted): past either, writer_submit
 * refuses and the caller answers 503 overloaded with Retry-After.
 */
#ifndef SNAPSYNC_WRITER_H
#define SNAPSYNC_WRITER_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "core/entity.h"
#include "core/err.h"
#include "core/jobs.h"
#include "core/util.h"

#define WRITER_BATCH 2048
#define WRITER_QUEUE_MAX 20000
#define WRITER_QUEUE_BYTES (256u << 20)  /* request bodies waiting in the queue */

struct http_req;
struct spaces;
struct wtx;
struct wop;

typedef int (*wop_apply_fn)(struct wtx *tx, struct wop *op);
typedef void (*wop_done_fn)(struct wop *op, struct http_req *r);

struct wop {
    struct list link;
    wop_apply_fn apply;
    wop_done_fn done;
    struct http_req *req;            /* reference held, or NULL */
    uint64_t bytes;                  /* body bytes it holds, for the queue cap */
    struct err err;                  /* status 0 = applied; else why not */
    /* Set before submitting: the op runs in a transaction of its own, with
     * no savepoint (a failure rolls back the transaction). For ops that
     * change many rows (a restore's apply): a savepoint keeps the original
     * of every page it changes in a statement journal. */
    bool alone;
};

/* A space as the writer knows it; copies go to the loop after commit. */
struct space_stats {
    int64_t id;
    char name[64];
    char uid[27];
    uint64_t created_at;
    uint64_t version;
    uint64_t entities, tombstones, conflicts;
    struct digest digest;
    bool removed;                    /* the space was deleted */
    /* in a commit's copy: its changes to this space that are not in the
     * commit's list (past WRITER_CHANGES_MAX) */
    uint64_t changes_skipped;
};

/* Changes one commit lists for the loop (SSE, live feeds): about 20 MiB of
 * change_rec. A bigger commit (a restore of a large space) counts the rest
 * per space instead, and the listeners are told of the gap. */
#define WRITER_CHANGES_MAX 65536

/* One committed entity change, handed to the loop (SSE, live feeds). */
struct change_rec {
    char space[64];
    char collection[64];
    char id[129];
    char rev[REV_MAX];
    uint64_t version;
    bool deleted;
};

struct writer;

/* How the writer reaches the layers above it (main.c installs them). The
 * writer copies the struct; any member may be NULL. */
struct writer_hooks {
    /* Writer thread, inside the transaction that deletes space space_id
     * (wtx_space_delete): drops what else refers to the space, appending
     * to gone what no other space still needs (blob hashes, 64 hex digits
     * each; their files go once this commits). 0, or -1 to fail the op. */
    int (*space_drop)(struct wtx *tx, int64_t space_id, struct buf *gone);
    /* Loop thread: a batch committed (and, with --durability full, is on
     * disk) and its ops have been answered; c: its entity changes in
     * commit order (at most WRITER_CHANGES_MAX); spaces: the spaces it
     * touched, as committed, with the changes left out of c counted in
     * changes_skipped. Called when n > 0 or something was left out. */
    void (*on_commit)(void *arg, const struct change_rec *c, size_t n, const struct space_stats *spaces,
                      size_t nspaces);
    void *commit_arg;
    /* Loop thread: the request body bytes an op for r holds, counted
     * against WRITER_QUEUE_BYTES (NULL: none counted). */
    uint64_t (*req_bytes)(const struct http_req *r);
};

/* Opens the writer's connections, loads the spaces and hands spaces their
 * first copy, starts the threads. Requests given to writer_submit are held
 * through pool's hooks. Sets *out, returns 0; or -1 with err. Loop thread,
 * before the loop runs. */
int writer_start(struct writer **out, uv_loop_t *loop, struct spaces *spaces, struct job_pool *pool,
                 const struct writer_hooks *hooks, const char *db_path, int durability, char *err, size_t errlen);
/* Stops after the queue is drained; joins the threads and frees w (its
 * handle closes on the loop). After uv_run ends. */
void writer_stop(struct writer *w);
/* Returns 0, or -1 when the queue is full (nothing queued). */
int writer_submit(struct writer *w, struct wop *op, struct http_req *r, wop_apply_fn apply, wop_done_fn done);
uint64_t writer_queue_len(const struct writer *w);

/* A reader's transaction can see a commit before it is durable (the syncer's
 * fdatasync comes after COMMIT) and before the writers are told. A read that
 * shows version `version` of space `space_id` waits here until the loop knows
 * that version as acknowledged, so nobody is shown a write that a crash could
 * still take back. ready() runs on the loop: at once if the version is there,
 * else after the commit that brings it (or the space goes, or the writer
 * stops). The wait is at most one group commit and its fsync. */
struct durable_wait {
    struct list link;
    int64_t space_id;
    char space[64];
    uint64_t version;
    void (*ready)(struct durable_wait *dw);
};
bool writer_is_durable(struct writer *w, const struct durable_wait *dw);
void writer_wait_durable(struct writer *w, struct durable_wait *dw);

/* Fails the op (returns -1 for apply to return). */
int wop_fail(struct wop *op, int status, const char *code, const char *fmt, ...) PRINTF_LIKE(4, 5);

/* ---- helpers for apply() (writer thread) ---- */
sqlite3 *wtx_db(struct wtx *tx);
uint64_t wtx_now(struct wtx *tx);          /* ms since the epoch, fixed per batch */
/* Prepared statement cache keyed by the SQL text's address (use literals). */
sqlite3_stmt *wtx_stmt(struct wtx *tx, const char *sql);
struct space_stats *wtx_space(struct wtx *tx, const char *name);      /* NULL if absent */
struct space_stats *wtx_space_create(struct wtx *tx, const char *name, int *created);
int wtx_space_delete(struct wtx *tx, struct space_stats *sp, struct buf *snap_ids, struct buf *blobs_gone);
void wtx_space_touch(struct wtx *tx, struct space_stats *sp);
/* Revisions written by the rest of this op came from that instance (its
 * id): a push to it skips them. Reset before every op. */
void wtx_set_origin(struct wtx *tx, const char *origin);
const char *wtx_origin(struct wtx *tx);
/* Records an audit row in the batch transaction. meta: JSON text or NULL. */
int wtx_audit(struct wtx *tx, const char *actor, const char *action, const char *space, const char *target,
              const char *meta, const char *remote_addr);

/* The stored state of one entity. Strings point into the struct. */
struct ent_row {
    bool exists;
    char rev[REV_MAX];
    uint64_t version, created_at, updated_at;
    bool deleted;
    char *body;                      /* malloc'd canonical text or NULL */
    size_t body_len;
    char revs[REV_HISTORY * REV_MAX];  /* earlier revs, newest first, space-separated */
};
void ent_row_free(struct ent_row *e);

/* A restore's journal (writer thread only). From wtx_journal_start on, every
 * write of an entity of that space notes the entity's state just before it
 * (live body, or none) and the version it got: a restore planned against a
 * read snapshot at version V learns from it which entities moved after V and
 * what they were at V. Capped at `cap` bytes of bodies: past it, overflowed
 * (the restore then merges inside its transaction). */
struct journal_ent {
    char c[64], i[130];
    uint64_t version;                /* the version the write took */
    bool live;                       /* before the write: a live entity with body */
    char *body;
    size_t blen;
    char rev[REV_MAX];               /* live: its rev then, and its history (a restore */
    char *revs;                      /* of a v2 snapshot puts that identity back) */
};
struct journal {
    int64_t space_id;
    struct journal_ent *v;
    size_t n, cap, bytes, max_bytes;
    bool overflowed;
    struct journal *next;
};
void wtx_journal_start(struct wtx *tx, int64_t space_id, size_t max_bytes);   /* replaces an older one */
struct journal *wtx_journal_take(struct wtx *tx, int64_t space_id);           /* NULL if none; caller frees */
void journal_free(struct journal *j);
int wtx_entity_get(struct wtx *tx, struct space_stats *sp, const char *coll, const char *id, struct ent_row *out);
/* Writes the new state of an entity: takes the space's next version, keeps
 * the old rev in the history, and updates counters and digest. body is the
 * canonical text (NULL for a tombstone). Memory state changes only if the
 * SQL succeeded. Returns 0 or -1 (op failed with 500). */
int wtx_entity_put(struct wtx *tx, struct wop *op, struct space_stats *sp, const char *coll, const char *id,
                   struct ent_row *cur, const char *rev, bool deleted, const char *body, size_t body_len,
                   const char *revs_after);

/* One entity's write for wtx_entity_put_many: its new state, and the row
 * it replaces (for the digest and the counts). */
struct ent_write {
    const char *coll, *id, *rev;
    const char *hist;                /* the history after rev (space-separated) */
    const char *body;                /* canonical text, NULL for a tombstone */
    size_t blen;
    bool deleted;
    bool existed, was_deleted;       /* a row was there (live, or a tombstone) */
    const char *old_rev;             /* existed: its rev */
};
/* Writes v[0..n) of sp as wtx_entity_put writes one (versions sp->version
 * + 1 .. + n, in order), in multi-row statements, for a caller that knows
 * each row's state already and wants no row read back (a restore's plan).
 * Not while a journal of sp is on (its notes need the bodies replaced).
 * Returns 0 or -1 (op failed with 500; the memory state then holds the
 * rows written before the failure, as after a failed wtx_entity_put). */
int wtx_entity_put_many(struct wtx *tx, struct wop *op, struct space_stats *sp, const struct ent_write *v, size_t n);

#endif
