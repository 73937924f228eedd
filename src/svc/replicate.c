/* replicate.c - replication: revisions made on another instance, applied
 * with their history (the handler of POST /replicate is api/sync.c).
 *
 * POST /replicate {"entities":[{"collection","id","rev","revs","deleted",
 * "body","updated_at","conflicts"?}]} is parsed on the threadpool into a
 * struct rep_batch (rep_parse.c), then applied here as one writer op (one
 * transaction). Sync pulls use the same
 * two halves for each /changes page (sync_pull.c).
 * Each entity is decided by rep_decide() (entity.c): insert, ignore a known
 * rev, fast-forward a descendant, or settle a divergence by the
 * deterministic winner rule with the loser kept as a conflict record. A rev
 * history that contains a conflict record's rev means that conflict was
 * resolved elsewhere: the record is cleared here too. Conflict records that
 * travel with an entity ("conflicts") are recorded if new, so every
 * instance ends up listing the same losing versions.
 */
#include "svc/replicate.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/json.h"
#include "core/names.h"
#include "store/spaces.h"
#include "store/writer.h"
#include "svc/blobs.h"

static const char SQL_CONFLICT_FIND[] =
    "SELECT 1 FROM conflicts WHERE space_id = ? AND collection = ? AND entity_id = ? AND conflicting_rev = ?";
static const char SQL_CONFLICT_ADD[] =
    "INSERT INTO conflicts(id, space_id, collection, entity_id, current_rev, conflicting_rev, conflicting_body,"
    " deleted, origin, detected_at) VALUES (?,?,?,?,?,?,?,?,?,?)";
static const char SQL_CONFLICT_LIST[] =
    "SELECT id, conflicting_rev FROM conflicts WHERE space_id = ? AND collection = ? AND entity_id = ?";
static const char SQL_CONFLICT_DROP[] = "DELETE FROM conflicts WHERE id = ?";

/* Records (collection, id, rev) as a conflict unless it is already there.
 * Returns 1 if added, 0 if known, -1 on error. */
static int conflict_keep(struct wtx *tx, struct space_stats *sp, const char *c, const char *id, const char *current,
                         const char *rev, bool deleted, const char *body, size_t blen, const char *origin)
{
    sqlite3_stmt *st = wtx_stmt(tx, SQL_CONFLICT_FIND);
    sqlite3_bind_int64(st, 1, sp->id);
    sqlite3_bind_text(st, 2, c, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, rev, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW) return 0;
    if (rc != SQLITE_DONE) return -1;
    char cid[27];
    ulid_make(cid, wtx_now(tx));
    st = wtx_stmt(tx, SQL_CONFLICT_ADD);
    sqlite3_bind_text(st, 1, cid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sp->id);
    sqlite3_bind_text(st, 3, c, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, current ? current : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, rev, -1, SQLITE_STATIC);
    if (body && !deleted) sqlite3_bind_text(st, 7, body, (int)blen, SQLITE_STATIC);
    sqlite3_bind_int(st, 8, deleted ? 1 : 0);
    sqlite3_bind_text(st, 9, origin, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)wtx_now(tx));
    if (sqlite3_step(st) != SQLITE_DONE) return -1;
    sp->conflicts++;
    wtx_space_touch(tx, sp);
    return 1;
}

/* Clears conflict records whose rev the entity's history now contains (or
 * that are its current rev): resolved, here or elsewhere. */
static int conflicts_settle(struct wtx *tx, struct space_stats *sp, const char *c, const char *id, const char *rev,
                            const char *hist)
{
    sqlite3_stmt *st = wtx_stmt(tx, SQL_CONFLICT_LIST);
    sqlite3_bind_int64(st, 1, sp->id);
    sqlite3_bind_text(st, 2, c, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
    char drop[32][27];
    int nd = 0;
    while (sqlite3_step(st) == SQLITE_ROW && nd < 32) {
        const char *crev = (const char *)sqlite3_column_text(st, 1);
        if (!strcmp(crev, rev) || rev_in_history(hist, crev))
            snprintf(drop[nd++], 27, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_reset(st);
    for (int k = 0; k < nd; k++) {
        st = wtx_stmt(tx, SQL_CONFLICT_DROP);
        sqlite3_bind_text(st, 1, drop[k], -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) return -1;
        if (sp->conflicts) sp->conflicts--;
        wtx_space_touch(tx, sp);
    }
    return nd;
}

/* ---- applying (writer thread) ------------------------------------------ */

/* One entity's result; it names the entity (when it has a valid name) so
 * that a sync job can count conflicting entities rather than revisions,
 * and say which entities it could not apply. */
static void result(struct buf *b, const struct rep_item *it, const char *status, const char *rev)
{
    buf_puts(b, "{\"status\":");
    json_cstr(b, status);
    if (it->collection[0]) {
        json_kv_str(b, "collection", it->collection);
        json_kv_str(b, "id", it->id);
    }
    if (rev) json_kv_str(b, "rev", rev);
    if (it->err_code) {
        json_kv_str(b, "error", it->err_code);
        json_kv_str(b, "message", it->err);
    }
    buf_putc(b, '}');
}

/* One batch being applied (writer thread). */
struct rep_ctx {
    struct wtx *tx;
    struct wop *op;
    struct space_stats *sp;
    const struct rep_batch *batch;
    const char *origin;
    struct buf *b;                   /* the results */
    struct rep_counts cnt;
};

/* A body kept here (current or as a conflict) names only blobs of this
 * space: a push sends them first (PUT /blobs), a pull has fetched them and
 * referenced them (sync_pull.c pull_apply). 1 it does; 0 it does not (the
 * item's error result is written); -1 the op failed. */
static int item_blobs_ok(struct rep_ctx *c, struct rep_item *it, const char *canon, size_t blen)
{
    char missing[1024];
    int bc = blobs_check(c->tx, c->sp->id, canon, blen, missing, sizeof missing);
    if (bc == -2) return wop_fail(c->op, 500, "storage_error", "%s", missing);
    if (bc == 0) return 1;
    it->err_code = bc < 0 ? "invalid_blobs" : "missing_blob";
    it->err = bc < 0 ? "_blobs must be an array of sha256 hex strings"
                     : "the body references blobs this space does not have; send them first";
    result(c->b, it, "error", NULL);
    c->cnt.errors++;
    return 0;
}

/* Carries out what the winner rule decided for the item (cur: the local
 * entity, updated by the writes). <0 on a failure. */
static int item_take(struct rep_ctx *c, enum rep_action act, const struct rep_item *it, struct ent_row *cur,
                     const char *canon, size_t blen, const char *hist)
{
    struct wtx *tx = c->tx;
    const char *cl = it->collection, *id = it->id, *rev = it->rev;
    int rc = 0;
    switch (act) {
    case REP_IGNORE:
        c->cnt.ignored++;
        break;
    case REP_INSERT:
    case REP_FASTFORWARD:
        rc = wtx_entity_put(tx, c->op, c->sp, cl, id, cur, rev, it->deleted, canon, blen, hist);
        c->cnt.applied++;
        break;
    case REP_REMOTE_WINS: {
        /* ours becomes the conflict; theirs becomes current */
        char old_rev[REV_MAX];
        snprintf(old_rev, sizeof old_rev, "%s", cur->rev);
        rc = conflict_keep(tx, c->sp, cl, id, rev, old_rev, cur->deleted, cur->body, cur->body_len, c->origin);
        if (rc >= 0) {
            /* the entity now carries a conflict the sender has not seen
             * (our old revision): it must travel back to the sender, so
             * it is not marked as having come from it */
            const char *o = wtx_origin(tx);
            wtx_set_origin(tx, NULL);
            rc = wtx_entity_put(tx, c->op, c->sp, cl, id, cur, rev, it->deleted, canon, blen, hist);
            wtx_set_origin(tx, o);
        }
        c->cnt.conflicts++;
        break;
    }
    case REP_LOCAL_WINS: {
        rc = conflict_keep(tx, c->sp, cl, id, cur->rev, rev, it->deleted, canon, blen, c->origin);
        if (rc == 1) {
            /* a new version (same rev and body) so feeds carry the new
             * conflict record on to other peers */
            char keep_hist[sizeof cur->revs];
            snprintf(keep_hist, sizeof keep_hist, "%s", cur->revs);
            char keep_rev[REV_MAX];
            snprintf(keep_rev, sizeof keep_rev, "%s", cur->rev);
            char *keep_body = cur->body ? xstrndup(cur->body, cur->body_len) : NULL;
            /* our revision stays current: it did not come from the peer,
             * which must still receive it */
            const char *o = wtx_origin(tx);
            wtx_set_origin(tx, NULL);
            rc = wtx_entity_put(tx, c->op, c->sp, cl, id, cur, keep_rev, cur->deleted, keep_body, cur->body_len,
                                keep_hist);
            wtx_set_origin(tx, o);
            free(keep_body);
        }
        c->cnt.conflicts++;
        break;
    }
    }
    return rc;
}

/* Conflicts that travel with the entity, and ones resolved elsewhere. <0 on
 * a failure. */
static int item_conflicts(struct rep_ctx *c, const struct rep_item *it, const struct ent_row *cur)
{
    const char *text = c->batch->text.data;
    for (uint32_t k = 0; k < it->nconf; k++) {
        const struct rep_conf *cf = &c->batch->confs[it->conf_first + k];
        if (!strcmp(cf->rev, cur->rev) || rev_in_history(cur->revs, cf->rev)) continue;
        if (conflict_keep(c->tx, c->sp, it->collection, it->id, cur->rev, cf->rev, cf->deleted,
                          cf->has_body ? text + cf->body_off : NULL, cf->has_body ? cf->body_len : 0, c->origin) < 0)
            return -1;
    }
    /* a space without conflict records has none to settle */
    if (c->sp->conflicts && conflicts_settle(c->tx, c->sp, it->collection, it->id, cur->rev, cur->revs) < 0)
        return -1;
    return 0;
}

/* One entity: decided by the winner rule, written, its result appended.
 * -1: the op failed. */
static int item_apply(struct rep_ctx *c, struct rep_item *it)
{
    if (it->err_code) {
        result(c->b, it, "error", NULL);
        c->cnt.errors++;
        return 0;
    }
    const char *text = c->batch->text.data;
    const char *hist = text + it->hist_off;
    const char *canon = it->has_body ? text + it->body_off : NULL;
    size_t blen = it->has_body ? it->body_len : 0;
    struct ent_row cur;
    if (wtx_entity_get(c->tx, c->sp, it->collection, it->id, &cur) < 0)
        return wop_fail(c->op, 500, "storage_error", "reading an entity failed");
    enum rep_action act = rep_decide(cur.exists ? cur.rev : NULL, cur.deleted, cur.revs, it->rev, it->deleted, hist);
    if (act != REP_IGNORE && canon) {
        int ok = item_blobs_ok(c, it, canon, blen);
        if (ok <= 0) {
            ent_row_free(&cur);
            return ok;               /* 0: refused, the others apply; -1: failed */
        }
    }
    int rc = item_take(c, act, it, &cur, canon, blen, hist);
    if (rc >= 0) rc = item_conflicts(c, it, &cur);
    if (rc < 0) {
        ent_row_free(&cur);
        if (!c->op->err.status) wop_fail(c->op, 500, "storage_error", "applying a revision failed");
        return -1;
    }
    it->conflicted = rep_action_conflicts(act);
    result(c->b, it, rep_result_status(act), cur.rev);
    ent_row_free(&cur);
    return 0;
}

/* Applies a parsed batch of replicated entities (writer thread). Fills cnt
 * and, if out is not NULL, one result object per entity. -1: the op failed
 * (the batch rolls back). */
int rep_apply_batch(struct wtx *tx, struct wop *op, struct space_stats *sp, struct rep_batch *batch,
                    const char *origin, struct rep_counts *cnt, struct buf *out)
{
    struct buf scratch;
    buf_init(&scratch);
    struct rep_ctx c = {.tx = tx, .op = op, .sp = sp, .batch = batch, .origin = origin, .b = out ? out : &scratch};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < batch->n; i++) {
        if (i) buf_putc(c.b, ',');
        rc = item_apply(&c, &batch->items[i]);
    }
    buf_free(&scratch);
    if (rc < 0) return -1;           /* the whole batch rolls back: nothing half-applied */
    *cnt = c.cnt;
    return 0;
}
