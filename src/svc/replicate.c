/* replicate.c - SPEC §9 replication endpoint: revisions made on another
 * instance, applied with their history.
 *
 * POST /replicate {"entities":[{"collection","id","rev","revs","deleted",
 * "body","updated_at","conflicts"?}]} is parsed on the threadpool into a
 * struct rep_batch (rep_batch_parse: one canon_parse of the whole text,
 * every entity checked, bodies written canonical straight from that parse),
 * then applied as one writer op (one transaction). Sync pulls use the same
 * two halves for each /changes page (sync.c).
 * Each entity is decided by rep_decide() (entity.c): insert, ignore a known
 * rev, fast-forward a descendant, or settle a divergence by the
 * deterministic winner rule with the loser kept as a conflict record. A rev
 * history that contains a conflict record's rev means that conflict was
 * resolved elsewhere: the record is cleared here too. Conflict records that
 * travel with an entity ("conflicts") are recorded if new, so every
 * instance ends up listing the same losing versions.
 */
#include <stdio.h>
#include <stdlib.h>

#include "api/api.h"
#include "api/util.h"
#include "svc/blobs.h"
#include "core/canon.h"
#include "core/jobs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "net/server.h"
#include "svc/sync.h"

#define REPLICATE_MAX 1000

struct rep_op {
    struct job job;                  /* parse on the threadpool */
    struct wop op;                   /* then apply on the writer */
    char space[64], origin[80];
    char *raw;
    size_t raw_len;
    bool parsed;
    struct json_err err;
    struct rep_batch batch;
    struct buf out;
};

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

/* ---- parsing (any thread but the loop) -------------------------------- */

static size_t text_put(struct buf *t, const char *s, size_t len)
{
    size_t off = t->len;
    buf_append(t, s, len);
    buf_putc(t, '\0');
    return off;
}

/* "revs" as a space-separated history without the current rev. */
static int history_of(const struct canon_doc *d, uint32_t revs, const char *rev, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    if (revs == CANON_NONE) return 0;
    if (canon_type(d, revs) != CANON_ARR) return -1;
    int count = 0;
    bool first = true;
    for (uint32_t v = canon_first(d, revs); v != CANON_NONE; v = canon_next(d, v), first = false) {
        size_t l;
        const char *r = canon_name(d, v, &l);
        if (!r || !rev_valid(r)) return -1;
        if (first && !strcmp(r, rev)) continue;      /* the list may start with the rev itself */
        if (count == REV_HISTORY - 1) break;
        if (n + l + 2 >= cap) break;
        if (n) out[n++] = ' ';
        memcpy(out + n, r, l + 1);
        n += l;
        count++;
    }
    return 0;
}

/* a string member that becomes a name: NULL if absent, not a string, or
 * holding a NUL (an inner NUL is never a valid name) */
static const char *str_member(const struct canon_doc *d, uint32_t obj, const char *key, size_t *len)
{
    return canon_name(d, canon_member(d, obj, key), len);
}

static void blob_ref_add(struct rep_batch *b, const char *h)
{
    for (size_t i = 0; i < b->nblobs; i++)
        if (!strcmp(b->blobs[i], h)) return;
    if (b->nblobs % 16 == 0) b->blobs = xrealloc(b->blobs, (b->nblobs + 16) * sizeof *b->blobs);
    memcpy(b->blobs[b->nblobs++], h, 65);
}

/* Returns -1: the item cannot apply (item_parse returns it). */
static int item_fail(struct rep_item *it, const char *code, const char *msg)
{
    it->err_code = code;
    it->err = msg;
    return -1;
}

#define REV_SHAPE "a rev like \"3-9f2c4a1b7d3e0c55\" (N from 1 to 9007199254740991, no leading zero)"

/* A body is held to JSON_MAX_DEPTH counted in itself, as a PUT is. */
static bool body_too_deep(const struct canon_doc *d, uint32_t body)
{
    return canon_depth(d, body) > JSON_MAX_DEPTH;
}

/* Checks one entity of a page and keeps it in b's text; a bad entity is
 * not an error of the batch but an item with err set (its result says
 * why; the others apply). Its collection and id are kept when they are
 * valid, so that even its error names it. */
static int item_parse(struct rep_batch *b, struct rep_item *it, const struct canon_doc *d, uint32_t e)
{
    if (canon_type(d, e) != CANON_OBJ) return item_fail(it, "invalid_item", "each entity must be an object");
    size_t cl = 0, il = 0, rl = 0;
    const char *c = str_member(d, e, "collection", &cl), *id = str_member(d, e, "id", &il),
               *rev = str_member(d, e, "rev", &rl);
    bool c_ok = c && name_collection_valid(c, cl), id_ok = id && name_entity_id_valid(id, il);
    if (c_ok && id_ok) {
        memcpy(it->collection, c, cl + 1);
        memcpy(it->id, id, il + 1);
    }
    uint32_t del = canon_member(d, e, "deleted");
    enum canon_type dt = canon_type(d, del);
    char hist[REV_HISTORY * REV_MAX];
    if (!c_ok) return item_fail(it, "invalid_name", "invalid or missing collection");
    if (!id_ok) return item_fail(it, "invalid_name", "invalid or missing id");
    if (!rev || !rev_valid(rev)) return item_fail(it, "invalid_rev", "rev must be " REV_SHAPE);
    if (history_of(d, canon_member(d, e, "revs"), rev, hist, sizeof hist) < 0)
        return item_fail(it, "invalid_rev", "revs must be a list of revs, each " REV_SHAPE);
    if (del != CANON_NONE && dt != CANON_TRUE && dt != CANON_FALSE)
        return item_fail(it, "invalid_item", "deleted must be true or false");
    it->deleted = dt == CANON_TRUE;
    uint32_t body = canon_member(d, e, "body");
    if (!it->deleted && canon_type(d, body) != CANON_OBJ)
        return item_fail(it, "invalid_item", "a live entity needs an object body");
    if (!it->deleted && body_too_deep(d, body))
        return item_fail(it, "too_deep", "the body is nested deeper than 64 levels");
    /* conflict records that travel with the entity: every one is checked
     * before anything is kept, as the entity is (a record dropped here
     * would leave this instance listing fewer conflicts than the sender) */
    uint32_t cl_node = canon_member(d, e, "conflicts");
    enum canon_type ct = canon_type(d, cl_node);
    if (ct != CANON_ABSENT && ct != CANON_NULL && ct != CANON_ARR)
        return item_fail(it, "invalid_item", "conflicts must be a list of conflict records");
    for (uint32_t cv = canon_first(d, cl_node); cv != CANON_NONE; cv = canon_next(d, cv)) {
        const char *crev = str_member(d, cv, "rev", NULL);
        if (canon_type(d, cv) != CANON_OBJ || !crev || !rev_valid(crev))
            return item_fail(it, "invalid_rev", "each conflict record needs a rev, " REV_SHAPE);
        uint32_t cb = canon_member(d, cv, "body");
        if (canon_type(d, cb) == CANON_OBJ && body_too_deep(d, cb))
            return item_fail(it, "too_deep", "a conflict record's body is nested deeper than 64 levels");
    }
    memcpy(it->rev, rev, rl + 1);
    it->hist_off = text_put(&b->text, hist, strlen(hist));
    if (!it->deleted) {
        it->body_off = b->text.len;
        canon_emit(d, body, &b->text);
        it->body_len = b->text.len - it->body_off;
        buf_putc(&b->text, '\0');
        it->has_body = true;
        /* blobs the body references move before it is applied (one that is
         * not a valid hash is refused by blobs_check when it is applied) */
        uint32_t bl = canon_member(d, body, "_blobs");
        for (uint32_t h = canon_first(d, bl); h != CANON_NONE; h = canon_next(d, h)) {
            size_t hl;
            const char *x = canon_name(d, h, &hl);
            if (x && name_sha256_valid(x, hl)) blob_ref_add(b, x);
        }
    }
    it->conf_first = b->nconfs;
    for (uint32_t cv = canon_first(d, cl_node); cv != CANON_NONE; cv = canon_next(d, cv)) {
        size_t crl;
        const char *crev = str_member(d, cv, "rev", &crl);
        if (b->nconfs == b->capconfs) {
            b->capconfs = b->capconfs ? b->capconfs * 2 : 16;
            b->confs = xrealloc(b->confs, b->capconfs * sizeof *b->confs);
        }
        struct rep_conf *k = &b->confs[b->nconfs++];
        memset(k, 0, sizeof *k);
        memcpy(k->rev, crev, crl + 1);
        k->deleted = canon_type(d, canon_member(d, cv, "deleted")) == CANON_TRUE;
        uint32_t cb = canon_member(d, cv, "body");
        if (!k->deleted && canon_type(d, cb) == CANON_OBJ) {
            k->body_off = b->text.len;
            canon_emit(d, cb, &b->text);
            k->body_len = b->text.len - k->body_off;
            buf_putc(&b->text, '\0');
            k->has_body = true;
        }
        it->nconf++;
    }
    return 0;
}

static void batch_items_reset(struct rep_batch *b)
{
    b->n = 0;
    b->nconfs = 0;
    b->nblobs = 0;
    buf_reset(&b->text);
    b->text.len = 0;
}

/* The top level of a /replicate body: a /changes page as it is, and who
 * sent it. Its entities are not checked member by member: they are the
 * feed's entity rows (version, created_at, ...), whose shape may grow from
 * one version of snapsync to the next, and peers of both must still sync. */
static const char *const rep_members[] = {"entities", "changes", "last_version", "more", "source_instance", NULL};

int rep_batch_parse(struct rep_batch *b, const char *raw, size_t len, struct json_err *err)
{
    memset(b, 0, sizeof *b);
    buf_init(&b->text);
    /* one member, and one entity, at a time: memory for one entity's parse,
     * not the page's. A body may nest as deep as a PUT allows, counted in
     * the body (item_parse: too_deep is that entity's error); the page as a
     * whole up to JSON_REQUEST_MAX_DEPTH, past what any entity can be. */
    struct canon_stream *cs = canon_stream_open(raw, len, JSON_REQUEST_MAX_DEPTH, err);
    if (!cs) return -1;
    buf_reserve(&b->text, len);
    size_t cap = 0;
    int from = 0;                    /* where the items came from: 1 "changes", 2 "entities" */
    const char *key;
    size_t kl;
    int rc;
    while ((rc = canon_stream_member(cs, &key, &kl)) == 1) {
        if (!b->unknown[0] && !json_member_known(key, rep_members))
            snprintf(b->unknown, sizeof b->unknown, "%.*s", (int)(kl < 63 ? kl : 63), key);
        int which = !strcmp(key, "entities") ? 2 : !strcmp(key, "changes") ? 1 : 0;
        const struct canon_doc *d;
        if (which && which >= from && (rc = canon_stream_array(cs)) == 1) {
            if (from) batch_items_reset(b);          /* "entities" wins over "changes" */
            from = which;
            while ((rc = canon_stream_element(cs)) == 1) {
                if (!(d = canon_stream_value(cs))) { rc = -1; break; }
                if (b->n == cap) {
                    cap = cap ? cap * 2 : 256;
                    b->items = xrealloc(b->items, cap * sizeof *b->items);
                }
                struct rep_item *it = &b->items[b->n++];
                memset(it, 0, sizeof *it);
                item_parse(b, it, d, 0);      /* a bad entity is its own error */
            }
            if (rc < 0) break;
            continue;
        }
        if (rc < 0) break;
        if (!(d = canon_stream_value(cs))) { rc = -1; break; }
        int64_t v;
        size_t sl;
        const char *str;
        if (!strcmp(key, "last_version")) {
            b->has_last = canon_int(d, 0, &v) && v >= 0;
            b->last_version = b->has_last ? (uint64_t)v : 0;
        } else if (!strcmp(key, "more")) {
            b->more = canon_type(d, 0) == CANON_TRUE;
        } else if (!strcmp(key, "source_instance") && (str = canon_name(d, 0, &sl)) && ulid_valid(str, sl)) {
            memcpy(b->source_instance, str, sl + 1);
        } else if (which && which >= from) {
            from = -1;                                /* "changes"/"entities" that is not an array */
        }
    }
    canon_stream_close(cs);
    if (rc < 0) return -1;
    if (from <= 0) {
        snprintf(err->code, sizeof err->code, "invalid_body");
        snprintf(err->message, sizeof err->message, "expected {\"entities\":[...]} or a changes page");
        return -1;
    }
    if (!b->items) b->items = xcalloc(1, sizeof *b->items);
    return 0;
}

void rep_batch_free(struct rep_batch *b)
{
    if (!b) return;
    free(b->items);
    free(b->confs);
    free(b->blobs);
    buf_free(&b->text);
    memset(b, 0, sizeof *b);
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

/* Applies a parsed batch of replicated entities (writer thread). Fills cnt
 * and, if out is not NULL, one result object per entity. -1: the op failed
 * (the batch rolls back). */
int rep_apply_batch(struct wtx *tx, struct wop *op, struct space_stats *sp, struct rep_batch *batch,
                    const char *origin, struct rep_counts *cnt, struct buf *out)
{
    struct buf scratch;
    buf_init(&scratch);
    struct buf *b = out ? out : &scratch;
    const char *text = batch->text.data;
    uint64_t applied = 0, ignored = 0, conflicts = 0, errors = 0;
    for (size_t i = 0; i < batch->n; i++) {
        struct rep_item *it = &batch->items[i];
        if (i) buf_putc(b, ',');
        if (it->err_code) {
            result(b, it, "error", NULL);
            errors++;
            continue;
        }
        const char *c = it->collection, *id = it->id, *rev = it->rev;
        const char *hist = text + it->hist_off;
        bool deleted = it->deleted;
        const char *canon = it->has_body ? text + it->body_off : NULL;
        size_t blen = it->has_body ? it->body_len : 0;
        struct ent_row cur;
        if (wtx_entity_get(tx, sp, c, id, &cur) < 0) {
            buf_free(&scratch);
            return wop_fail(op, 500, "storage_error", "reading an entity failed");
        }
        enum rep_action act = rep_decide(cur.exists ? cur.rev : NULL, cur.deleted, cur.revs, rev, deleted, hist);
        if (act != REP_IGNORE && canon) {
            /* a body kept here (current or as a conflict) names only blobs
             * of this space: a push sends them first (PUT /blobs), a pull
             * has fetched them and referenced them (sync.c pull_apply) */
            char missing[1024];
            int bc = blobs_check(tx, sp->id, canon, blen, missing, sizeof missing);
            if (bc == -2) {
                ent_row_free(&cur);
                buf_free(&scratch);
                return wop_fail(op, 500, "storage_error", "%s", missing);
            }
            if (bc != 0) {
                (void)item_fail(it, bc < 0 ? "invalid_blobs" : "missing_blob",
                                bc < 0 ? "_blobs must be an array of sha256 hex strings"
                                       : "the body references blobs this space does not have; send them first");
                result(b, it, "error", NULL);
                errors++;
                ent_row_free(&cur);
                continue;
            }
        }
        int rc = 0;
        const char *status = "ignored";
        switch (act) {
        case REP_IGNORE:
            ignored++;
            break;
        case REP_INSERT:
        case REP_FASTFORWARD:
            rc = wtx_entity_put(tx, op, sp, c, id, &cur, rev, deleted, canon, blen, hist);
            status = "applied";
            applied++;
            break;
        case REP_REMOTE_WINS: {
            /* ours becomes the conflict; theirs becomes current */
            char old_rev[REV_MAX];
            snprintf(old_rev, sizeof old_rev, "%s", cur.rev);
            rc = conflict_keep(tx, sp, c, id, rev, old_rev, cur.deleted, cur.body, cur.body_len, origin);
            if (rc >= 0) {
                /* the entity now carries a conflict the sender has not seen
                 * (our old revision): it must travel back to the sender, so
                 * it is not marked as having come from it */
                const char *o = wtx_origin(tx);
                wtx_set_origin(tx, NULL);
                rc = wtx_entity_put(tx, op, sp, c, id, &cur, rev, deleted, canon, blen, hist);
                wtx_set_origin(tx, o);
            }
            status = "conflict";
            conflicts++;
            break;
        }
        case REP_LOCAL_WINS: {
            rc = conflict_keep(tx, sp, c, id, cur.rev, rev, deleted, canon, blen, origin);
            if (rc == 1) {
                /* a new version (same rev and body) so feeds carry the new
                 * conflict record on to other peers */
                char keep_hist[sizeof cur.revs];
                snprintf(keep_hist, sizeof keep_hist, "%s", cur.revs);
                char keep_rev[REV_MAX];
                snprintf(keep_rev, sizeof keep_rev, "%s", cur.rev);
                char *keep_body = cur.body ? xstrndup(cur.body, cur.body_len) : NULL;
                /* our revision stays current: it did not come from the peer,
                 * which must still receive it */
                const char *o = wtx_origin(tx);
                wtx_set_origin(tx, NULL);
                rc = wtx_entity_put(tx, op, sp, c, id, &cur, keep_rev, cur.deleted, keep_body, cur.body_len, keep_hist);
                wtx_set_origin(tx, o);
                free(keep_body);
            }
            status = "conflict";
            conflicts++;
            break;
        }
        }
        /* conflicts that travel with the entity, and ones resolved elsewhere */
        for (uint32_t k = 0; rc >= 0 && k < it->nconf; k++) {
            const struct rep_conf *cf = &batch->confs[it->conf_first + k];
            if (!strcmp(cf->rev, cur.rev) || rev_in_history(cur.revs, cf->rev)) continue;
            if (conflict_keep(tx, sp, c, id, cur.rev, cf->rev, cf->deleted, cf->has_body ? text + cf->body_off : NULL,
                              cf->has_body ? cf->body_len : 0, origin) < 0)
                rc = -1;
        }
        /* a space without conflict records has none to settle */
        if (rc >= 0 && sp->conflicts && conflicts_settle(tx, sp, c, id, cur.rev, cur.revs) < 0) rc = -1;
        if (rc < 0) {
            ent_row_free(&cur);
            buf_free(&scratch);
            if (!op->status) wop_fail(op, 500, "storage_error", "applying a revision failed");
            return -1;                /* the whole batch rolls back: nothing half-applied */
        }
        it->conflicted = act == REP_REMOTE_WINS || act == REP_LOCAL_WINS;
        result(b, it, status, cur.rev);
        ent_row_free(&cur);
    }
    buf_free(&scratch);
    cnt->applied = applied;
    cnt->ignored = ignored;
    cnt->conflicts = conflicts;
    cnt->errors = errors;
    return 0;
}

static int rep_apply(struct wtx *tx, struct wop *op)
{
    struct rep_op *ro = container_of(op, struct rep_op, op);
    struct space_stats *sp = wtx_space(tx, ro->space);
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", ro->space);
    if (ro->batch.source_instance[0]) wtx_set_origin(tx, ro->batch.source_instance);
    struct buf *b = &ro->out;
    uint64_t before = sp->version;
    buf_puts(b, "{\"results\":[");
    struct rep_counts cnt;
    if (rep_apply_batch(tx, op, sp, &ro->batch, ro->origin, &cnt, b) < 0) return -1;
    buf_puts(b, "],");
    json_kv_u64(b, "applied", cnt.applied);
    json_kv_u64(b, "ignored", cnt.ignored);
    json_kv_u64(b, "conflicts", cnt.conflicts);
    json_kv_u64(b, "errors", cnt.errors);
    /* version_before == the sender's pull checkpoint means every version up
     * to server_version is the sender's own: it may skip pulling them */
    json_kv_u64(b, "version_before", before);
    json_kv_u64(b, "server_version", sp->version);
    buf_putc(b, '}');
    return 0;
}

static void rep_op_free(struct rep_op *ro)
{
    rep_batch_free(&ro->batch);
    buf_free(&ro->out);
    free(ro->raw);
    free(ro);
}

static void rep_done(struct wop *op, struct http_req *r)
{
    struct rep_op *ro = container_of(op, struct rep_op, op);
    if (r) {
        if (op->status) api_send_wop_error(r, op);
        else http_send_json(r, 200, &ro->out);
    }
    rep_op_free(ro);
}

/* threadpool: the body parsed and every entity checked and canonicalized,
 * so the writer only decides and writes */
static void rep_parse_work(struct job *j)
{
    struct rep_op *ro = container_of(j, struct rep_op, job);
    ro->parsed = rep_batch_parse(&ro->batch, ro->raw, ro->raw_len, &ro->err) == 0;
    free(ro->raw);
    ro->raw = NULL;
    /* a pulled page may carry members a newer peer added; a request may not */
    if (ro->parsed && ro->batch.unknown[0]) {
        ro->parsed = false;
        json_unknown_member_err(&ro->err, "the request body", ro->batch.unknown, rep_members);
    }
    if (ro->parsed && ro->batch.n > REPLICATE_MAX) {
        ro->parsed = false;
        snprintf(ro->err.code, sizeof ro->err.code, "invalid_body");
        snprintf(ro->err.message, sizeof ro->err.message, "at most %d entities per request", REPLICATE_MAX);
    }
}

static void rep_parsed(struct job *j, struct http_req *r)
{
    struct rep_op *ro = container_of(j, struct rep_op, job);
    if (!r) {
        rep_op_free(ro);
        return;
    }
    if (!ro->parsed) {
        api_send_json_err(r, 400, &ro->err);
        rep_op_free(ro);
        return;
    }
    if (api_write(r, &ro->op, rep_apply, rep_done) < 0) rep_op_free(ro);
}

void api_replicate(struct http_req *r)
{
    if (!api_space(r)) return;
    if (r->body.len == 0) {
        http_send_error(r, 400, "invalid_json", NULL, "expected {\"entities\":[...]}");
        return;
    }
    struct rep_op *ro = xcalloc(1, sizeof *ro);
    snprintf(ro->space, sizeof ro->space, "%s", r->match.params.space);
    snprintf(ro->origin, sizeof ro->origin, "replicate:%s", api_actor(r));
    ro->raw = buf_steal(&r->body, &ro->raw_len);     /* parsed on the threadpool */
    job_submit(&r->srv->jobs, &ro->job, r, rep_parse_work, rep_parsed);
}
