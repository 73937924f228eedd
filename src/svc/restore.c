/* restore.c - see restore.h. */
#include "svc/restore.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/entity.h"
#include "core/json.h"
#include "core/log.h"
#include "net/server.h"
#include "store/spaces.h"
#include "store/store.h"
#include "store/writer.h"
#include "svc/blobs.h"
#include "svc/restore_merge.h"

/* ---- restore -------------------------------------------------------------- */

struct restore {
    struct server *srv;
    char data_dir[1024];
    snap_answer_fn answer;
    char id[27], space[64], actor[32], remote[56], sha256[65], path[1200];
    int64_t space_id;
    char pre_id[27];
    uint64_t puts, dels, server_version;
    /* the plan: the merge done on a pool thread against a read snapshot of
     * the space at plan_version, its changes written to plan_path */
    char plan_path[1200];
    bool planned;                    /* plan_path holds a complete plan */
    uint64_t plan_version;
    int version;                     /* the file's format (v2: revisions are put back) */
    bool used_plan;                  /* the apply followed the plan */
    uint64_t moved;                  /* entities written between the plan's read and the apply */
    bool damaged;                    /* the apply's merge found the file bad (why) */
    char why[200];
    /* the two pieces that run side by side before the apply: the plan (a
     * pool job) and the pre_restore snapshot (unrecorded until the plan
     * says the restore goes ahead) */
    int out;                         /* pieces not back yet */
    struct plan_job *pj;             /* the plan, back */
    struct snap_job *pre;            /* the pre_restore snapshot, its file written (or failed: pre_err) */
    char pre_err[200];
};

static void restore_free(struct restore *rs)
{
    free(rs);
}

struct restore_op {
    struct wop op;
    struct restore *rs;
    struct wtx *tx;
    struct space_stats *sp;
    /* out (writer) */
    uint64_t puts, dels;             /* changes made */
    uint64_t server_version;
    bool used_plan;                  /* the apply followed the plan */
    uint64_t moved;                  /* entities written between the plan's read and the apply */
    bool damaged;                    /* the merge found the file bad (why) */
    char why[200];
    uint64_t apply_ns;               /* time in the transaction's apply */
};

/* One entity to the snapshot's state: its body (with the snapshot's rev
 * and history when rev is given: a v2 file), or gone (a tombstone).
 * Nothing is written when it is that already. */
static int restore_change(struct restore_op *ro, const char *c, const char *i, bool del, const char *body, size_t blen,
                          const char *rev_in, const char *hist)
{
    struct ent_row row;
    if (wtx_entity_get(ro->tx, ro->sp, c, i, &row) < 0) return -1;
    bool live = row.exists && !row.deleted;
    int rc = 0;
    if (del ? live : (!live || !row.body || row.body_len != blen || memcmp(row.body, body, blen))) {
        char rev[REV_MAX];
        if (!del && rev_in)          /* the revision as it was, not a new edit */
            rc = wtx_entity_put(ro->tx, &ro->op, ro->sp, c, i, &row, rev_in, false, body, blen, hist ? hist : "");
        else if (rev_make(row.exists ? row.rev : NULL, del, body, blen, rev) < 0)
            rc = wop_fail(&ro->op, 422, "rev_exhausted", "%s/%s is at rev %s, the most a rev can count: it cannot be "
                          "edited any more, so the restore cannot change it", c, i, row.rev);
        else
            rc = wtx_entity_put(ro->tx, &ro->op, ro->sp, c, i, &row, rev, del, body, blen, NULL);
        if (rc == 0) {
            if (del) ro->dels++;
            else ro->puts++;
        }
    }
    ent_row_free(&row);
    return rc;
}

static int restore_put(void *arg, const struct put_item *it)
{
    return restore_change(arg, it->c, it->i, false, it->body, it->blen, it->rev, it->hist);
}

static int restore_del(void *arg, struct cur_row *cur)
{
    return restore_change(arg, cur->c, cur->i, true, NULL, 0, NULL, NULL);
}

/* ---- the plan file: one record per change --------------------------------
 * What to write, worked out on the pool against the row the plan read: u8
 * kind ('P' put as a new edit, 'R' put with the snapshot's rev, 'D'
 * delete), u8 flags (PLAN_READY: rev and history below are the ones to
 * write; PLAN_EXISTED, PLAN_WAS_DELETED: the row there was), u16
 * collection length, u16 id length, u32 body length, u8 rev length, u16
 * history length, u8 length of the row's rev, then the strings (no
 * terminators). Written and read with stdio buffering. */

enum { PLAN_READY = 1, PLAN_EXISTED = 2, PLAN_WAS_DELETED = 4 };

struct plan_rec_head {
    uint8_t kind, flags;
    uint16_t clen, ilen;
    uint32_t blen;
    uint8_t rlen;
    uint16_t hlen;
    uint8_t olen;
};

static int plan_write(FILE *f, uint8_t kind, const char *c, const char *i, const char *body, size_t blen,
                      const char *rev_in, const char *hist_in, const struct cur_row *cur)
{
    char rev[REV_MAX], hist[REV_HISTORY * REV_MAX];
    uint8_t flags = 0;
    rev[0] = hist[0] = '\0';
    if (kind == 'R') {               /* the snapshot's revision identity */
        snprintf(rev, sizeof rev, "%s", rev_in);
        snprintf(hist, sizeof hist, "%s", hist_in ? hist_in : "");
        flags |= PLAN_READY;
    } else if (rev_make(cur ? cur->rev : NULL, kind == 'D', body, blen, rev) == 0) {   /* a new edit */
        if (cur) rev_history_push(hist, sizeof hist, cur->rev, cur->revs);
        flags |= PLAN_READY;
    }                                /* else: the apply refuses it (rev_exhausted), row by row */
    if (cur) flags |= PLAN_EXISTED | (cur->deleted ? PLAN_WAS_DELETED : 0);
    const char *old = cur ? cur->rev : "";
    struct plan_rec_head h = {.kind = kind, .flags = flags, .clen = (uint16_t)strlen(c), .ilen = (uint16_t)strlen(i),
                              .blen = (uint32_t)blen, .rlen = (uint8_t)strlen(rev), .hlen = (uint16_t)strlen(hist),
                              .olen = (uint8_t)strlen(old)};
    if (fwrite(&h, sizeof h, 1, f) != 1 || fwrite(c, 1, h.clen, f) != h.clen || fwrite(i, 1, h.ilen, f) != h.ilen ||
        (blen && body && fwrite(body, 1, blen, f) != blen) || (h.rlen && fwrite(rev, 1, h.rlen, f) != h.rlen) ||
        (h.hlen && fwrite(hist, 1, h.hlen, f) != h.hlen) || (h.olen && fwrite(old, 1, h.olen, f) != h.olen))
        return -1;
    return 0;
}

static int plan_put(void *arg, const struct put_item *it)
{
    return plan_write(arg, it->rev ? 'R' : 'P', it->c, it->i, it->body, it->blen, it->rev, it->hist, it->cur);
}

static int plan_del(void *arg, struct cur_row *cur)
{
    return plan_write(arg, 'D', cur->c, cur->i, NULL, 0, NULL, NULL, cur);
}

/* the strings of a record in the arena, each NUL-terminated */
enum { PS_C, PS_I, PS_BODY, PS_REV, PS_HIST, PS_OLD, PS_N };

/* The next record: 1, 0 at the end, -1 damaged or unreadable. Its strings
 * are appended to arena (off[] says where). */
static int plan_read(FILE *f, struct plan_rec_head *h, struct buf *arena, size_t off[PS_N])
{
    if (fread(h, sizeof *h, 1, f) != 1) return ferror(f) ? -1 : 0;
    if (h->clen >= 64 || h->ilen >= 130 || h->rlen >= REV_MAX || h->hlen >= REV_HISTORY * REV_MAX ||
        h->olen >= REV_MAX || (h->kind != 'P' && h->kind != 'D' && h->kind != 'R'))
        return -1;
    size_t len[PS_N] = {h->clen, h->ilen, h->blen, h->rlen, h->hlen, h->olen};
    for (int k = 0; k < PS_N; k++) {
        off[k] = arena->len;
        buf_reserve(arena, len[k] + 1);
        if (len[k] && fread(arena->data + arena->len, 1, len[k], f) != len[k]) return -1;
        arena->len += len[k];
        buf_putc(arena, '\0');
    }
    return 1;
}

/* Records waiting for one wtx_entity_put_many: their strings in text. */
#define APPLY_BATCH 256
#define APPLY_BATCH_BYTES (4u << 20)

struct apply_batch {
    struct ent_write v[APPLY_BATCH];
    size_t off[APPLY_BATCH][PS_N];
    size_t n;
    struct buf text;
};

static int apply_flush(struct restore_op *ro, struct apply_batch *ab)
{
    if (!ab->n) return 0;
    for (size_t k = 0; k < ab->n; k++) {
        struct ent_write *e = &ab->v[k];
        const char *t = ab->text.data;
        e->coll = t + ab->off[k][PS_C];
        e->id = t + ab->off[k][PS_I];
        e->body = e->deleted ? NULL : t + ab->off[k][PS_BODY];
        e->rev = t + ab->off[k][PS_REV];
        e->hist = t + ab->off[k][PS_HIST];
        e->old_rev = t + ab->off[k][PS_OLD];
    }
    if (wtx_entity_put_many(ro->tx, &ro->op, ro->sp, ab->v, ab->n) < 0) return -1;
    for (size_t k = 0; k < ab->n; k++) {
        if (ab->v[k].deleted) ro->dels++;
        else ro->puts++;
    }
    ab->n = 0;
    return 0;
}

/* The verify and the plan: one read of the file on a pool thread, in one
 * read transaction, so the plan is exactly "the space at plan_version" ->
 * "the snapshot"; the same walk checks the file in full (header, every
 * line, counts, sha256) and the blobs its entities name. */
struct plan_job {
    struct job job;
    struct restore *rs;              /* in: read only */
    /* out */
    int err;                         /* 1 the file is bad, 2 blobs missing, 3 storage */
    bool checked;                    /* the file was read to its end (err 0 or 2) or found bad (1) */
    char msg[200];
    char missing[800];               /* err 2: "missing":[...] (JSON members) */
    uint64_t plan_version;
    int version;                     /* the file's format */
    bool ok;                         /* plan_path holds a complete plan */
    char err_plan[200];              /* why there is no plan (logged) */
};

static void plan_work(struct job *j)
{
    struct plan_job *pj = container_of(j, struct plan_job, job);
    struct restore *rs = pj->rs;
    sqlite3 *db = store_reader_get(job_server(j)->store);
    if (!db) {
        pj->err = 3;
        snprintf(pj->msg, sizeof pj->msg, "no database connection");
        return;
    }
    /* no plan file: the walk still verifies, and the apply merges */
    FILE *f = fopen(rs->plan_path, "wb");
    if (!f) snprintf(pj->err_plan, sizeof pj->err_plan, "cannot write the restore plan: %s", strerror(errno));
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    bool have_version = store_space_version(db, rs->space_id, &pj->plan_version) == 1;
    /* test hook: a slow plan, so a test can write to the space meanwhile */
    uint64_t delay = env_ms("SNAPSYNC_TEST_RESTORE_PLAN_DELAY_MS");
    if (delay) uv_sleep((unsigned)delay);
    struct blob_set blobs = {0};
    struct merge m = {.put = f ? plan_put : NULL, .del = f ? plan_del : NULL, .arg = f, .stream = true, .verify = true,
                      .blobs = &blobs};
    char err[200];
    bool file_bad;
    if (!have_version) {
        pj->err = 3;
        snprintf(pj->msg, sizeof pj->msg, "the space is gone");
    } else if (merge_run(rs->path, rs->sha256, db, rs->space_id, &m, err, sizeof err, &file_bad) < 0) {
        if (file_bad) {
            pj->err = 1;
            pj->checked = true;
            snprintf(pj->msg, sizeof pj->msg, "%s", err);
        } else {             /* the plan could not be written: the apply merges (and checks) */
            snprintf(pj->err_plan, sizeof pj->err_plan, "%s", err);
        }
    } else {
        pj->checked = true;
        pj->ok = f != NULL;
        int n = restore_blobs_missing(db, rs->space_id, &blobs, pj->missing, sizeof pj->missing, pj->msg, sizeof pj->msg);
        if (n < 0) {
            pj->err = 3;
            snprintf(pj->msg, sizeof pj->msg, "reading the space's blobs failed");
        } else if (n) {
            pj->err = 2;
        }
    }
    pj->version = m.version;
    free(blobs.v);
    merge_free(&m);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    store_reader_put(job_server(j)->store, db);
    if (f && fclose(f) != 0 && pj->ok) {
        pj->ok = false;
        snprintf(pj->err_plan, sizeof pj->err_plan, "writing the plan failed: %s", strerror(errno));
    }
    if (f && !pj->ok) unlink(rs->plan_path);
}

/* The entities written after the plan's read (version > since), each once,
 * with its state at `since` (the first note after it), sorted by key. */
struct moved {
    const struct journal_ent **v;
    bool *covered;                   /* the plan has a record for it */
    size_t n;
};

static int moved_cmp(const void *a, const void *b)
{
    const struct journal_ent *x = *(const struct journal_ent *const *)a, *y = *(const struct journal_ent *const *)b;
    int c = snap_key_cmp(x->c, x->i, y->c, y->i);
    if (c) return c;
    return x < y ? -1 : x > y;       /* same key: the earlier note first (notes are in write order) */
}

static void moved_build(struct moved *mv, const struct journal *j, uint64_t since)
{
    memset(mv, 0, sizeof *mv);
    if (!j->n) return;
    mv->v = xmalloc(j->n * sizeof *mv->v);
    for (size_t k = 0; k < j->n; k++)
        if (j->v[k].version > since) mv->v[mv->n++] = &j->v[k];
    qsort(mv->v, mv->n, sizeof *mv->v, moved_cmp);
    size_t out = 0;
    for (size_t k = 0; k < mv->n; k++)
        if (!out || snap_key_cmp(mv->v[out - 1]->c, mv->v[out - 1]->i, mv->v[k]->c, mv->v[k]->i))
            mv->v[out++] = mv->v[k];
    mv->n = out;
    mv->covered = xcalloc(mv->n ? mv->n : 1, sizeof *mv->covered);
}

/* Marks (c, i) covered by the plan; true when it moved after the plan's read. */
static bool moved_cover(struct moved *mv, const char *c, const char *i)
{
    size_t lo = 0, hi = mv->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = snap_key_cmp(mv->v[mid]->c, mv->v[mid]->i, c, i);
        if (!r) { mv->covered[mid] = true; return true; }
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

/* Writer thread: follow the plan, then put back what moved after the plan's
 * read and the plan has no record for: such an entity was, at the plan's
 * version, the same as in the snapshot, so its state then (from the journal:
 * body, and rev and history for a v2 file) is the snapshot's. -1 with the op
 * failed. */
static int plan_apply(struct restore_op *ro, struct moved *mv)
{
    struct restore *rs = ro->rs;
    FILE *f = fopen(rs->plan_path, "rb");
    if (!f) return wop_fail(&ro->op, 500, "storage_error", "the restore plan is gone: %s", strerror(errno));
    /* the rows that did not move since the plan's read are as the plan
     * read them: written in batches, none read back; one that moved (or a
     * rev the plan could not make) goes row by row against the row now */
    struct apply_batch *ab = xmalloc(sizeof *ab);
    ab->n = 0;
    buf_init(&ab->text);
    struct plan_rec_head h;
    int rc = 0, r;
    while (rc == 0 && (r = plan_read(f, &h, &ab->text, ab->off[ab->n])) == 1) {
        const size_t *o = ab->off[ab->n];
        const char *c = ab->text.data + o[PS_C], *i = ab->text.data + o[PS_I];
        bool moved = mv->n && moved_cover(mv, c, i);
        if (!moved && (h.flags & PLAN_READY)) {
            struct ent_write *e = &ab->v[ab->n++];
            e->blen = h.blen;
            e->deleted = h.kind == 'D';
            e->existed = h.flags & PLAN_EXISTED;
            e->was_deleted = h.flags & PLAN_WAS_DELETED;
            if (ab->n == APPLY_BATCH || ab->text.len > APPLY_BATCH_BYTES) {
                rc = apply_flush(ro, ab);
                buf_reset(&ab->text);
            }
            continue;
        }
        if (apply_flush(ro, ab) < 0) {       /* the batch first: versions stay in plan order */
            rc = -1;
            break;
        }
        const char *t = ab->text.data;
        bool identity = h.kind == 'R';
        if (restore_change(ro, c, i, h.kind == 'D', h.kind == 'D' ? NULL : t + o[PS_BODY], h.blen,
                           identity ? t + o[PS_REV] : NULL, identity ? t + o[PS_HIST] : NULL) < 0) {
            if (!ro->op.err.status) wop_fail(&ro->op, 500, "storage_error", "writing %s/%s failed", c, i);
            rc = -1;
        }
        buf_reset(&ab->text);
    }
    if (rc == 0 && r < 0) rc = wop_fail(&ro->op, 500, "storage_error", "the restore plan is damaged or unreadable");
    if (rc == 0) rc = apply_flush(ro, ab);
    buf_free(&ab->text);
    free(ab);
    fclose(f);
    for (size_t k = 0; rc == 0 && k < mv->n; k++) {
        const struct journal_ent *e = mv->v[k];
        if (mv->covered[k]) continue;
        bool identity = rs->version >= SNAP_FORMAT_V2 && e->live && rev_valid(e->rev);
        if (restore_change(ro, e->c, e->i, !e->live, e->body, e->blen, identity ? e->rev : NULL, e->revs) < 0) {
            if (!ro->op.err.status) wop_fail(&ro->op, 500, "storage_error", "writing %s/%s failed", e->c, e->i);
            rc = -1;
        }
    }
    return rc;
}

/* No plan, or the journal overflowed: the whole merge (and the file's
 * check) inside the transaction. -1 with the op failed. */
static int merge_apply(struct restore_op *ro, struct wtx *tx)
{
    struct restore *rs = ro->rs;
    struct blob_set blobs = {0};
    struct merge m = {.put = restore_put, .del = restore_del, .arg = ro, .verify = true, .blobs = &blobs};
    char err[200], missing[800], msg[300];
    bool file_bad;
    int rc = 0;
    if (merge_run(rs->path, rs->sha256, wtx_db(tx), ro->sp->id, &m, err, sizeof err, &file_bad) < 0) {
        if (!ro->op.err.status) {
            if (file_bad) {
                ro->damaged = true;
                snprintf(ro->why, sizeof ro->why, "%s", err);
                snap_corrupt_msg(msg, sizeof msg, err);
                wop_fail(&ro->op, 422, "snapshot_corrupt", "%s; nothing was changed", msg);
            } else {
                wop_fail(&ro->op, 500, "storage_error", "%s", err);
            }
        }
        rc = -1;
    } else {
        int n = restore_blobs_missing(wtx_db(tx), ro->sp->id, &blobs, missing, sizeof missing, err, sizeof err);
        if (n < 0) rc = wop_fail(&ro->op, 500, "storage_error", "reading the space's blobs failed");
        else if (n) rc = wop_fail(&ro->op, 422, "missing_blob", "%s; nothing was changed (upload those blobs to this "
                                  "space, then restore)", err);
    }
    free(blobs.v);
    merge_free(&m);
    return rc;
}

static int restore_apply(struct wtx *tx, struct wop *op)
{
    struct restore_op *ro = container_of(op, struct restore_op, op);
    struct restore *rs = ro->rs;
    assert(rs->pre_id[0]);           /* only after the pre-restore snapshot */
    uint64_t t0 = now_ns_mono();
    struct space_stats *sp = wtx_space(tx, rs->space);
    struct journal *jn = sp ? wtx_journal_take(tx, sp->id) : NULL;
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", rs->space);
    struct space_stats before = *sp;           /* memory goes back if we fail */
    ro->tx = tx;
    ro->sp = sp;
    ro->puts = ro->dels = 0;
    ro->used_plan = false;
    int rc = 0;
    if (rs->planned && jn && !jn->overflowed && sp->id == rs->space_id && sp->version >= rs->plan_version) {
        /* the transaction applies only the changes (the write lock is held
         * for them, not for the whole comparison) */
        struct moved mv;
        moved_build(&mv, jn, rs->plan_version);
        ro->used_plan = true;
        ro->moved = mv.n;
        rc = plan_apply(ro, &mv);
        free(mv.v);
        free(mv.covered);
    } else {
        rc = merge_apply(ro, tx);
    }
    journal_free(jn);
    ro->apply_ns = now_ns_mono() - t0;
    if (rc < 0) {
        *sp = before;
        return -1;
    }
    ro->server_version = sp->version;
    char meta[160];
    snprintf(meta, sizeof meta, "{\"pre_restore_snapshot\":\"%s\",\"put\":%llu,\"deleted\":%llu}", rs->pre_id,
             (unsigned long long)ro->puts, (unsigned long long)ro->dels);
    if (wtx_audit(tx, rs->actor, "snapshot.restore", rs->space, rs->id, meta, rs->remote) < 0) {
        *sp = before;
        return wop_fail(op, 500, "storage_error", "audit failed");
    }
    return 0;
}

static void restore_done(struct wop *op, struct http_req *r)
{
    struct restore_op *ro = container_of(op, struct restore_op, op);
    struct restore *rs = ro->rs;
    rs->puts = ro->puts;
    rs->dels = ro->dels;
    rs->server_version = ro->server_version;
    rs->used_plan = ro->used_plan;
    rs->moved = ro->moved;
    rs->damaged = ro->damaged;
    snprintf(rs->why, sizeof rs->why, "%s", ro->why);
    snap_set_busy(rs->srv, rs->space, false);
    if (r) {
        if (op->err.status) {
            snap_answer_wop(rs->answer, r, op);
        } else {
            struct buf b;
            buf_init(&b);
            buf_puts(&b, "{\"restored_from\":");
            json_cstr(&b, rs->id);
            json_kv_str(&b, "pre_restore_snapshot", rs->pre_id);
            json_kv_u64(&b, "server_version", rs->server_version);
            buf_puts(&b, ",\"changes\":{");
            json_kv_u64(&b, "put", rs->puts);
            json_kv_u64(&b, "deleted", rs->dels);
            buf_puts(&b, "}}");
            struct snap_answer a = {.status = 200, .body = &b};
            rs->answer(r, &a);
            buf_free(&b);
        }
    }
    log_info("snapshot_restore",
             "\"space\":\"%s\",\"snapshot\":\"%s\",\"status\":%d,\"put\":%llu,\"deleted\":%llu,\"planned\":%s,"
             "\"moved\":%llu,\"apply_ms\":%.1f",
             rs->space, rs->id, op->err.status ? op->err.status : 200, (unsigned long long)rs->puts,
             (unsigned long long)rs->dels, rs->used_plan ? "true" : "false", (unsigned long long)rs->moved,
             (double)ro->apply_ns / 1e6);
    if (rs->planned) snap_unlink_later(rs->srv, rs->plan_path);
    if (rs->damaged) {
        snap_log_file(LOG_ERROR, "snapshot_restore_failed", rs->space, rs->id, rs->path, rs->why);
        snap_integrity_mark(rs->srv, rs->space, rs->id, INTEG_RESTORE, false, rs->why, rs->actor, rs->remote);
    }
    restore_free(rs);
    free(ro);
}

static void restore_submit(struct restore *rs, struct http_req *r)
{
    struct restore_op *ro = xcalloc(1, sizeof *ro);
    ro->rs = rs;
    ro->op.alone = true;             /* it may change every row of the space */
    if (writer_submit(rs->srv->writer, &ro->op, r, restore_apply, restore_done) < 0) {
        snap_set_busy(rs->srv, rs->space, false);
        snap_answer_err(rs->answer, r, 0, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        if (rs->planned) snap_unlink_later(rs->srv, rs->plan_path);
        free(ro);
        restore_free(rs);
    }
}

/* A restore that stops before its apply ends the journal the writer keeps
 * for it (its notes are of no use to anybody). */
struct stop_op {
    struct wop op;
    struct restore *rs;
};

static int journal_stop_apply(struct wtx *tx, struct wop *op)
{
    struct stop_op *so = container_of(op, struct stop_op, op);
    journal_free(wtx_journal_take(tx, so->rs->space_id));
    return 0;
}

static void journal_stopped(struct wop *op, struct http_req *r)
{
    UNUSED(r);
    struct stop_op *so = container_of(op, struct stop_op, op);
    restore_free(so->rs);
    free(so);
}

/* Ends the restore before anything changed (the answer was given). */
static void restore_stop(struct restore *rs)
{
    snap_set_busy(rs->srv, rs->space, false);
    if (rs->planned) snap_unlink_later(rs->srv, rs->plan_path);
    struct stop_op *so = xcalloc(1, sizeof *so);
    so->rs = rs;
    if (writer_submit(rs->srv->writer, &so->op, NULL, journal_stop_apply, journal_stopped) < 0) {
        free(so);                    /* the next restore of the space replaces the journal */
        restore_free(rs);
    }
}

static void restore_join(struct restore *rs, struct http_req *r);

/* The pre_restore snapshot: its file is written (SNAP_WRITTEN), then, once
 * recorded, done (SNAP_DONE): the apply goes. A file or row that could not
 * be written fails the restore, nothing changed. */
static void restore_after_pre(void *arg, struct http_req *r, const struct snap_report *rep)
{
    struct restore *rs = arg;
    if (rep->stage == SNAP_WRITTEN) {
        rs->pre = rep->job;
        if (rep->file_err) snprintf(rs->pre_err, sizeof rs->pre_err, "%s", rep->file_err);
        if (--rs->out == 0) restore_join(rs, r);
        return;
    }
    assert(rep->stage == SNAP_DONE);
    if (rep->err || rep->file_err) {
        snap_answer_err(rs->answer, r, 0, 500, "pre_restore_failed", NULL, "the pre-restore snapshot failed: %s",
                        rep->file_err ? rep->file_err : rep->err->msg);
        restore_stop(rs);
        return;
    }
    snprintf(rs->pre_id, sizeof rs->pre_id, "%s", rep->id);
    restore_submit(rs, r);
}

/* verified and planned: wait for the pre_restore snapshot */
static void plan_done(struct job *j, struct http_req *r)
{
    struct plan_job *pj = container_of(j, struct plan_job, job);
    struct restore *rs = pj->rs;
    rs->planned = pj->ok;
    rs->plan_version = pj->plan_version;
    rs->version = pj->version;
    if (!pj->ok && !pj->err)
        log_warn("snapshot_restore_plan_failed", "\"space\":\"%s\",\"snapshot\":\"%s\",\"error\":\"%s\"", rs->space,
                 rs->id, pj->err_plan);
    if (j->status == 0 && pj->checked)   /* a full check of the file (2: the file is fine, a blob is not) */
        snap_integrity_mark(rs->srv, rs->space, rs->id, INTEG_RESTORE, pj->err != 1, pj->msg, rs->actor, rs->remote);
    if (j->status && !pj->err) {         /* never ran (shutdown) */
        pj->err = 3;
        snprintf(pj->msg, sizeof pj->msg, "interrupted by shutdown");
    }
    rs->pj = pj;
    if (--rs->out == 0) restore_join(rs, r);
}

/* Both pieces are back: the plan's verdict first (a refused restore throws
 * the pre_restore snapshot away: nothing changed), then the snapshot's. */
static void restore_join(struct restore *rs, struct http_req *r)
{
    struct plan_job *pj = rs->pj;
    struct snap_job *pre = rs->pre;
    rs->pj = NULL;
    rs->pre = NULL;
    if (pj->err) {
        char msg[300];
        if (pj->err == 1) {
            snap_log_file(LOG_ERROR, "snapshot_restore_refused", rs->space, rs->id, rs->path, pj->msg);
            snap_corrupt_msg(msg, sizeof msg, pj->msg);
        } else {
            snprintf(msg, sizeof msg, "%s", pj->msg);
        }
        if (pj->err == 3)
            snap_answer_err(rs->answer, r, 0, 500, "storage_error", NULL, "%s; nothing was changed", msg);
        else
            snap_answer_err(rs->answer, r, 0, 422, pj->err == 2 ? "missing_blob" : "snapshot_corrupt",
                            pj->err == 2 ? pj->missing : NULL, "%s; nothing was changed%s", msg,
                            pj->err == 2 ? " (upload those blobs to this space, then restore)" : "");
        snap_discard(pre);
        restore_stop(rs);
    } else if (rs->pre_err[0]) {
        snap_answer_err(rs->answer, r, 0, 500, "pre_restore_failed", NULL, "the pre-restore snapshot failed: %s",
                        rs->pre_err);
        snap_discard(pre);
        restore_stop(rs);
    } else if (!r) {
        snap_discard(pre);
        restore_stop(rs);            /* the client left before anything changed */
    } else {
        snap_record(pre, r);         /* then restore_after_pre: the apply */
    }
    free(pj);
}

/* The journal starts before the plan's read, so every write the plan cannot
 * see is in it. Past RESTORE_JOURNAL_BYTES of noted bodies (a space written
 * to heavily during the plan and the pre-restore snapshot) the restore
 * merges inside its transaction. */
#define RESTORE_JOURNAL_BYTES (64u << 20)

struct journal_op {
    struct wop op;
    struct restore *rs;
    size_t cap;
};

static int journal_start_apply(struct wtx *tx, struct wop *op)
{
    struct journal_op *jo = container_of(op, struct journal_op, op);
    wtx_journal_start(tx, jo->rs->space_id, jo->cap);
    return 0;
}

/* the journal is on: the plan and the pre_restore snapshot, side by side */
static void journal_started(struct wop *op, struct http_req *r)
{
    struct journal_op *jo = container_of(op, struct journal_op, op);
    struct restore *rs = jo->rs;
    free(jo);
    struct snap_start_req pre = {.space = rs->space, .kind = "pre_restore", .actor = rs->actor, .remote = rs->remote,
                                 .note = "taken before a restore", .keep_request = true, .owns_busy = true,
                                 .unrecorded = true, .space_id = rs->space_id, .report = restore_after_pre,
                                 .arg = rs};
    rs->out = 2;
    struct plan_job *pj = xcalloc(1, sizeof *pj);
    pj->rs = rs;
    job_submit(&rs->srv->jobs, &pj->job, r, plan_work, plan_done);
    snap_start(rs->srv, r, &pre);    /* unrecorded: nothing queued, so it cannot be refused */
}

void snap_restore_start(struct server *srv, struct http_req *r, const struct snap_restore_req *q,
                        snap_answer_fn answer)
{
    struct restore *rs = xcalloc(1, sizeof *rs);
    rs->srv = srv;
    rs->answer = answer;
    snprintf(rs->id, sizeof rs->id, "%.26s", q->id);
    snprintf(rs->space, sizeof rs->space, "%s", q->space);
    snprintf(rs->actor, sizeof rs->actor, "%s", q->actor);
    snprintf(rs->remote, sizeof rs->remote, "%s", q->remote ? q->remote : "");
    snprintf(rs->sha256, sizeof rs->sha256, "%s", q->sha256);
    snprintf(rs->data_dir, sizeof rs->data_dir, "%s", srv->cfg->data_dir);
    snap_file(srv->cfg->data_dir, q->id, false, rs->path, sizeof rs->path);
    rs->space_id = q->space_id;
    /* the plan is named by a fresh id; under snapshots/, so a crash's
     * leftover goes with the start-up sweep */
    char pid[27];
    ulid_make(pid, now_ms_wall());
    snprintf(rs->plan_path, sizeof rs->plan_path, "%s/snapshots/%s.restore-plan.tmp", rs->data_dir, pid);
    struct journal_op *jo = xcalloc(1, sizeof *jo);
    jo->rs = rs;
    /* test hook: a small journal, to drive the fallback */
    const char *v = getenv("SNAPSYNC_TEST_RESTORE_JOURNAL_BYTES");
    uint64_t cap = RESTORE_JOURNAL_BYTES;
    if (v && parse_u64(v, strlen(v), RESTORE_JOURNAL_BYTES, &cap) < 0) cap = RESTORE_JOURNAL_BYTES;
    jo->cap = (size_t)cap;
    if (writer_submit(srv->writer, &jo->op, r, journal_start_apply, journal_started) < 0) {
        snap_set_busy(srv, rs->space, false);
        snap_answer_err(answer, r, 0, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        free(jo);
        restore_free(rs);
    }
}
