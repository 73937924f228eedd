/* replicate.c - SPEC §9 replication endpoint: revisions made on another
 * instance, applied with their history.
 *
 * POST /replicate {"entities":[{"collection","id","rev","revs","deleted",
 * "body","updated_at","conflicts"?}]} runs as one writer op (one
 * transaction); the body is parsed on the writer thread, not the loop.
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

#include "api.h"
#include "api_util.h"
#include "json.h"
#include "log.h"
#include "names.h"
#include "server.h"
#include "sync.h"

#define REPLICATE_MAX 1000

struct rep_op {
    struct wop op;
    char space[64], origin[80];
    char *raw;
    size_t raw_len;
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

/* "revs" as a space-separated history without the current rev. */
static int history_of(json_t *revs, const char *rev, char *out, size_t cap)
{
    size_t n = 0, i;
    json_t *v;
    out[0] = '\0';
    if (revs && !json_is_array(revs)) return -1;
    int count = 0;
    json_array_foreach(revs, i, v) {
        const char *r = json_string_value(v);
        if (!r || !rev_valid(r)) return -1;
        if (i == 0 && !strcmp(r, rev)) continue;        /* the list may start with the rev itself */
        if (count == REV_HISTORY - 1) break;
        size_t l = strlen(r);
        if (n + l + 2 >= cap) break;
        if (n) out[n++] = ' ';
        memcpy(out + n, r, l + 1);
        n += l;
        count++;
    }
    return 0;
}

static void result(struct buf *b, const char *status, const char *rev, const char *msg)
{
    buf_puts(b, "{\"status\":");
    json_cstr(b, status);
    if (rev) json_kv_str(b, "rev", rev);
    if (msg) json_kv_str(b, "message", msg);
    buf_putc(b, '}');
}

/* Applies an array of replicated entities (writer thread). Fills counts and,
 * if b is not NULL, one result object per entity. -1: the op failed (the
 * batch rolls back). */
int rep_apply_entities(struct wtx *tx, struct wop *op, struct space_stats *sp, json_t *arr, const char *origin,
                       struct rep_counts *cnt, struct buf *b)
{
    struct json_err je;
    struct buf scratch;
    buf_init(&scratch);
    if (!b) b = &scratch;
    uint64_t applied = 0, ignored = 0, conflicts = 0, errors = 0;
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        const char *c = json_string_value(json_object_get(e, "collection"));
        const char *id = json_string_value(json_object_get(e, "id"));
        const char *rev = json_string_value(json_object_get(e, "rev"));
        json_t *del = json_object_get(e, "deleted");
        json_t *body = json_object_get(e, "body");
        char hist[REV_HISTORY * REV_MAX];
        if (i) buf_putc(b, ',');
        if (!json_is_object(e) || !c || !name_collection_valid(c, strlen(c)) || !id ||
            !name_entity_id_valid(id, strlen(id)) || !rev || !rev_valid(rev) || (del && !json_is_boolean(del)) ||
            history_of(json_object_get(e, "revs"), rev, hist, sizeof hist) < 0) {
            result(b, "error", NULL, "each entity needs a valid collection, id, rev and revs");
            errors++;
            continue;
        }
        bool deleted = del && json_is_true(del);
        if (!deleted && !json_is_object(body)) {
            result(b, "error", NULL, "a live entity needs an object body");
            errors++;
            continue;
        }
        size_t blen = 0;
        char *canon = NULL;
        if (!deleted) {
            canon = entity_canonical_value(body, &blen, &je);
            if (!canon) {
                result(b, "error", NULL, je.message);
                errors++;
                continue;
            }
        }
        struct ent_row cur;
        if (wtx_entity_get(tx, sp, c, id, &cur) < 0) {
            free(canon);
            buf_free(&scratch);
            return wop_fail(op, 500, "storage_error", "reading an entity failed");
        }
        enum rep_action act = rep_decide(cur.exists ? cur.rev : NULL, cur.deleted, cur.revs, rev, deleted, hist);
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
        json_t *cl = json_object_get(e, "conflicts");
        size_t k;
        json_t *cv;
        if (rc >= 0 && json_is_array(cl)) {
            json_array_foreach(cl, k, cv) {
                const char *crev = json_string_value(json_object_get(cv, "rev"));
                if (!crev || !rev_valid(crev) || !strcmp(crev, cur.rev) || rev_in_history(cur.revs, crev)) continue;
                bool cdel = json_is_true(json_object_get(cv, "deleted"));
                json_t *cb = json_object_get(cv, "body");
                size_t cbl = 0;
                char *cbody = (!cdel && json_is_object(cb)) ? entity_canonical_value(cb, &cbl, &je) : NULL;
                if (conflict_keep(tx, sp, c, id, cur.rev, crev, cdel, cbody, cbl, origin) < 0) rc = -1;
                free(cbody);
            }
        }
        if (rc >= 0 && conflicts_settle(tx, sp, c, id, cur.rev, cur.revs) < 0) rc = -1;
        if (rc < 0) {
            free(canon);
            ent_row_free(&cur);
            buf_free(&scratch);
            if (!op->status) wop_fail(op, 500, "storage_error", "applying a revision failed");
            return -1;                /* the whole batch rolls back: nothing half-applied */
        }
        result(b, status, cur.rev, NULL);
        free(canon);
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
    struct json_err je;
    json_t *root = json_parse(ro->raw, ro->raw_len, true, &je);
    if (!root) return wop_fail(op, 400, je.code, "%s", je.message);
    json_t *arr = json_object_get(root, "entities");
    if (!arr) arr = json_object_get(root, "changes");        /* a /changes page, as is */
    if (!json_is_array(arr) || json_array_size(arr) > REPLICATE_MAX) {
        json_decref(root);
        return wop_fail(op, 400, "invalid_body", "expected {\"entities\":[...]} with at most %d items", REPLICATE_MAX);
    }
    const char *src = json_string_value(json_object_get(root, "source_instance"));
    char origin[27] = "";
    if (src && ulid_valid(src, strlen(src))) {
        snprintf(origin, sizeof origin, "%s", src);
        wtx_set_origin(tx, origin);
    }
    struct buf *b = &ro->out;
    uint64_t before = sp->version;
    buf_puts(b, "{\"results\":[");
    struct rep_counts cnt;
    if (rep_apply_entities(tx, op, sp, arr, ro->origin, &cnt, b) < 0) {
        json_decref(root);
        return -1;
    }
    json_decref(root);
    uint64_t applied = cnt.applied, ignored = cnt.ignored, conflicts = cnt.conflicts, errors = cnt.errors;
    buf_puts(b, "],");
    json_kv_u64(b, "applied", applied);
    json_kv_u64(b, "ignored", ignored);
    json_kv_u64(b, "conflicts", conflicts);
    json_kv_u64(b, "errors", errors);
    /* version_before == the sender's pull checkpoint means every version up
     * to server_version is the sender's own: it may skip pulling them */
    json_kv_u64(b, "version_before", before);
    json_kv_u64(b, "server_version", sp->version);
    buf_putc(b, '}');
    return 0;
}

static void rep_done(struct wop *op, struct http_req *r)
{
    struct rep_op *ro = container_of(op, struct rep_op, op);
    if (r) {
        if (op->status) api_send_wop_error(r, op);
        else http_send_json(r, 200, &ro->out);
    }
    buf_free(&ro->out);
    free(ro->raw);
    free(ro);
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
    ro->raw = buf_steal(&r->body, &ro->raw_len);     /* parsed on the writer thread */
    if (api_write(r, &ro->op, rep_apply, rep_done) < 0) {
        free(ro->raw);
        free(ro);
    }
}
