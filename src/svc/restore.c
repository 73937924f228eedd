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

/* ---- the merge of a snapshot with the live state ------------------------ */

/* Current rows of a space in (collection, id) order, read in pages so the
 * same connection may write between pages (the restore does). */
struct cur_rows {
    sqlite3 *db;
    int64_t space_id;
    char after_c[64], after_i[130];
    bool started, done;
    struct cur_row { char c[64], i[130], rev[REV_MAX]; bool deleted; char *body; size_t blen; } *v;
    size_t n, pos, cap;
};

static void cur_clear(struct cur_rows *cr)
{
    for (size_t k = 0; k < cr->n; k++) free(cr->v[k].body);
    cr->n = cr->pos = 0;
}

static int cur_page(struct cur_rows *cr)
{
    cur_clear(cr);
    if (cr->done) return 0;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(cr->db,
                           "SELECT collection, id, rev, deleted, body FROM entities WHERE space_id = ?1 AND"
                           " (collection > ?2 OR (collection = ?2 AND id > ?3)) ORDER BY collection, id LIMIT 512",
                           -1, &q, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(q, 1, cr->space_id);
    sqlite3_bind_text(q, 2, cr->after_c, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, cr->after_i, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (cr->n == cr->cap) {
            cr->cap = cr->cap ? cr->cap * 2 : 512;
            cr->v = xrealloc(cr->v, cr->cap * sizeof *cr->v);
        }
        struct cur_row *r = &cr->v[cr->n++];
        snprintf(r->c, sizeof r->c, "%s", (const char *)sqlite3_column_text(q, 0));
        snprintf(r->i, sizeof r->i, "%s", (const char *)sqlite3_column_text(q, 1));
        snprintf(r->rev, sizeof r->rev, "%s", (const char *)sqlite3_column_text(q, 2));
        r->deleted = sqlite3_column_int(q, 3) != 0;
        r->blen = (size_t)sqlite3_column_bytes(q, 4);
        r->body = sqlite3_column_type(q, 4) == SQLITE_NULL ? NULL : xstrndup((const char *)sqlite3_column_text(q, 4), r->blen);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) return -1;
    if (cr->n < 512) cr->done = true;
    if (cr->n) {
        snprintf(cr->after_c, sizeof cr->after_c, "%s", cr->v[cr->n - 1].c);
        snprintf(cr->after_i, sizeof cr->after_i, "%s", cr->v[cr->n - 1].i);
    }
    return 0;
}

/* The current row under the cursor, or NULL at the end. */
static struct cur_row *cur_peek(struct cur_rows *cr, int *err)
{
    if (cr->pos < cr->n) return &cr->v[cr->pos];
    if (cr->done && cr->started) return NULL;
    cr->started = true;
    if (cur_page(cr) < 0) { *err = 1; return NULL; }
    return cr->pos < cr->n ? &cr->v[cr->pos] : NULL;
}

struct delta_coll {
    char name[64];
    uint64_t added, modified, deleted;
};

struct merge {
    /* callbacks: NULL to only count */
    int (*put)(void *arg, const char *c, const char *i, struct cur_row *cur, const char *body, size_t blen);
    int (*del)(void *arg, struct cur_row *cur);
    void *arg;
    uint64_t puts, dels;
    /* per-collection delta, "the current state against the snapshot" */
    struct delta_coll *d;
    size_t nd;
    struct blob_set *blobs;          /* non-NULL: collects the blobs every snapshot entity names */
};

static struct delta_coll *delta_for(struct merge *m, const char *c)
{
    for (size_t k = 0; k < m->nd; k++)
        if (!strcmp(m->d[k].name, c)) return &m->d[k];
    m->d = xrealloc(m->d, (m->nd + 1) * sizeof *m->d);
    struct delta_coll *d = &m->d[m->nd++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", c);
    return d;
}

/* Walks the snapshot file and the live rows in key order. For a restore:
 * put() the snapshot's version where the live state differs, del() what
 * the snapshot does not have. For a preview the same walk only counts.
 * Returns 0, or -1 with err; *file_bad says whether the file was at fault
 * (missing, damaged, not what the row says) rather than the database. */
static int merge_run(const char *path, const char *want_sha, sqlite3 *db, int64_t space_id, struct merge *m,
                     char *err, size_t errlen, bool *file_bad)
{
    struct snap_reader rd;
    char why[200];
    *file_bad = true;
    int orc = snap_reader_open(&rd, path, why, sizeof why);
    if (orc < 0) {
        if (orc == -1 && rd.line == 1) snprintf(err, errlen, "line 1: %s", why);
        else snprintf(err, errlen, "%s", why);
        return -1;
    }
    struct cur_rows cr = {.db = db, .space_id = space_id};
    int rc = -1, dberr = 0;
    struct snap_entity e;
    for (;;) {
        int r = snap_reader_next(&rd, &e, why, sizeof why);
        if (r < 0) {
            snprintf(err, errlen, "%s", why);
            goto out;
        }
        bool have = r == 1;
        /* live rows before this snapshot entity are not in the snapshot */
        struct cur_row *cur;
        while ((cur = cur_peek(&cr, &dberr)) && (!have || snap_key_cmp(cur->c, cur->i, e.collection, e.id) < 0)) {
            if (!cur->deleted) {
                delta_for(m, cur->c)->added++;
                m->dels++;
                if (m->del && m->del(m->arg, cur) < 0) {
                    *file_bad = false;
                    snprintf(err, errlen, "deleting %.63s/%.100s failed", cur->c, cur->i);
                    goto out;
                }
            }
            cr.pos++;
        }
        if (dberr) {
            *file_bad = false;
            snprintf(err, errlen, "reading live entities failed: %s", sqlite3_errmsg(db));
            goto out;
        }
        if (!have) break;
        if (m->blobs) blob_set_add(m->blobs, e.body_json);
        bool same_key = cur && !snap_key_cmp(cur->c, cur->i, e.collection, e.id);
        bool differs = !same_key || cur->deleted || !cur->body || cur->blen != e.body_len ||
                       memcmp(cur->body, e.body, e.body_len);
        if (differs) {
            struct delta_coll *d = delta_for(m, e.collection);
            if (!same_key || cur->deleted) d->deleted++;     /* gone from the live state since */
            else d->modified++;
            m->puts++;
            if (m->put && m->put(m->arg, e.collection, e.id, same_key ? cur : NULL, e.body, e.body_len) < 0) {
                *file_bad = false;
                snprintf(err, errlen, "writing %s/%s failed", e.collection, e.id);
                goto out;
            }
        }
        if (same_key) cr.pos++;
    }
    char sha[65];
    snap_reader_sha256(&rd, sha);
    if (want_sha && strcmp(sha, want_sha) != 0) {
        snprintf(err, errlen, "the file's sha256 does not match the snapshot's");
        goto out;
    }
    rc = 0;
    *file_bad = false;
out:
    cur_clear(&cr);
    free(cr.v);
    snap_reader_close(&rd);
    return rc;
}

/* snapshot.h: merge_run counting only, for tests and the fuzz target */
int snap_merge_count(const char *path, const char *want_sha, void *db, int64_t space_id, uint64_t *puts,
                     uint64_t *dels, char *err, size_t errlen)
{
    struct merge m = {0};
    bool file_bad;
    int rc = merge_run(path, want_sha, db, space_id, &m, err, errlen, &file_bad);
    *puts = m.puts;
    *dels = m.dels;
    free(m.d);
    return rc;
}

static void delta_json(struct buf *b, struct merge *m)
{
    buf_putc(b, '{');
    for (size_t k = 0; k < m->nd; k++) {
        json_key(b, m->d[k].name);
        buf_putc(b, '{');
        json_kv_u64(b, "added", m->d[k].added);
        json_kv_u64(b, "modified", m->d[k].modified);
        json_kv_u64(b, "deleted", m->d[k].deleted);
        buf_putc(b, '}');
    }
    buf_putc(b, '}');
}

/* ---- preview and dry run (read job) ------------------------------------- */

/* A dry run says what the restore would do: refuse it, too, when the
 * snapshot names blobs the space does not have (verify_work). Returns the
 * count missing, or -1 on an SQL error. */
static int dry_run_blobs(sqlite3 *db, int64_t space_id, struct blob_set *set, struct snap_preview *pa)
{
    struct buf list;
    buf_init(&list);
    blob_set_finish(set, &list);
    json_error_t je;
    json_t *a = json_loads(list.data, 0, &je);
    buf_free(&list);
    sqlite3_stmt *q = NULL;
    size_t i, ml = (size_t)snprintf(pa->missing, sizeof pa->missing, "\"missing\":[");
    int n = 0;
    json_t *h;
    json_array_foreach(a, i, h) {
        const char *x = json_name(h);
        if (!x) continue;                            /* the list was made here: valid hashes only */
        int in = blobs_in_space(db, &q, space_id, x);
        if (in < 0) {
            n = -1;
            break;
        }
        if (in) continue;
        if (!n) snprintf(pa->missing_msg, sizeof pa->missing_msg, "blob %s that the snapshot's entities name is not in this space", x);
        if (ml + 70 < sizeof pa->missing)
            ml += (size_t)snprintf(pa->missing + ml, sizeof pa->missing - ml, "%s\"%s\"", n ? "," : "", x);
        n++;
    }
    snprintf(pa->missing + ml, sizeof pa->missing - ml, "]");
    sqlite3_finalize(q);
    json_decref(a);
    return n;
}

static void preview_json(struct snap_preview *pa, struct merge *m, struct buf *b)
{
    if (pa->dry_run) {
        buf_puts(b, "{\"restored_from\":");
        json_cstr(b, pa->id);
        buf_puts(b, ",\"dry_run\":true,\"pre_restore_snapshot\":null");
        json_kv_u64(b, "server_version", pa->current_version);
        buf_puts(b, ",\"changes\":{");
        json_kv_u64(b, "put", m->puts);
        json_kv_u64(b, "deleted", m->dels);
        buf_puts(b, "},\"delta\":");
        delta_json(b, m);
        buf_putc(b, '}');
    } else {
        buf_puts(b, "{\"snapshot\":");
        buf_append(b, pa->row.meta.data, pa->row.meta.len);
        json_kv_u64(b, "current_version", pa->current_version);
        json_kv_u64(b, "changes_since",
                    pa->current_version > pa->row.server_version ? pa->current_version - pa->row.server_version : 0);
        buf_puts(b, ",\"delta\":");
        delta_json(b, m);
        buf_putc(b, '}');
    }
}

/* the row must be a completed snapshot not marked corrupt. 0, or -1 with
 * pa->err */
static int preview_row(sqlite3 *db, struct snap_preview *pa)
{
    if (snap_row_load(db, pa->space_id, pa->id, &pa->row) < 0)
        return err_set(&pa->err, 500, "storage_error", "%s", sqlite3_errmsg(db));
    if (!pa->row.found) return err_set(&pa->err, 404, "not_found", "no snapshot %s in this space", pa->id);
    if (strcmp(pa->row.status, "completed"))
        return err_set(&pa->err, 409, "snapshot_not_ready", "the snapshot is %s", pa->row.status);
    char msg[300];
    if (!strcmp(pa->row.integrity, "corrupt")) {
        snap_corrupt_msg(msg, sizeof msg, pa->row.integrity_error);
        return err_set(&pa->err, 422, "snapshot_corrupt", "%s (POST .../snapshots/%s/verify once the file is repaired)",
                       msg, pa->id);
    }
    return 0;
}

void snap_preview_run(sqlite3 *db, struct snap_preview *pa, struct buf *out)
{
    err_clear(&pa->err);
    if (preview_row(db, pa) < 0) goto out;
    store_space_version(db, pa->space_id, &pa->current_version);
    char path[1200], err[200];
    snap_file(pa->data_dir, pa->id, false, path, sizeof path);
    struct merge m = {0};
    struct blob_set blobs = {0};
    if (pa->dry_run) m.blobs = &blobs;
    bool file_bad;
    if (merge_run(path, pa->row.sha256, db, pa->space_id, &m, err, sizeof err, &file_bad) < 0) {
        if (file_bad) {              /* the loop marks the snapshot and answers 422 */
            pa->damaged = true;
            snprintf(pa->why, sizeof pa->why, "%s", err);
        } else {
            err_set(&pa->err, 500, "storage_error", "%s", err);
        }
        free(m.d);
        free(blobs.v);
        goto out;
    }
    if (pa->dry_run && dry_run_blobs(db, pa->space_id, &blobs, pa) < 0) {
        err_set(&pa->err, 500, "storage_error", "reading the space's blobs failed");
        free(m.d);
        goto out;
    }
    preview_json(pa, &m, out);
    free(m.d);
out:
    buf_free(&pa->row.meta);
}

void snap_preview_damaged(struct server *srv, const char *space, const struct snap_preview *pa, const char *actor,
                          const char *remote)
{
    assert(pa->damaged);
    char path[1200];
    snap_file(srv->cfg->data_dir, pa->id, false, path, sizeof path);
    snap_log_file(LOG_ERROR, pa->dry_run ? "snapshot_dry_run_failed" : "snapshot_preview_failed", space, pa->id, path,
                  pa->why);
    snap_integrity_mark(srv, space, pa->id, pa->dry_run ? INTEG_RESTORE : INTEG_PREVIEW, false, pa->why, actor, remote);
}
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
    bool used_plan;                  /* the apply followed the plan */
    uint64_t moved;                  /* entities written between the plan's read and the apply */
    bool damaged;                    /* the apply's merge found the file bad (why) */
    char why[200];
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
};

/* One entity to the snapshot's state: its body, or gone (a tombstone).
 * Nothing is written when it is that already. */
static int restore_change(struct restore_op *ro, const char *c, const char *i, bool del, const char *body, size_t blen)
{
    struct ent_row row;
    if (wtx_entity_get(ro->tx, ro->sp, c, i, &row) < 0) return -1;
    bool live = row.exists && !row.deleted;
    int rc = 0;
    if (del ? live : (!live || !row.body || row.body_len != blen || memcmp(row.body, body, blen))) {
        char rev[REV_MAX];
        if (rev_make(row.exists ? row.rev : NULL, del, body, blen, rev) < 0)
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

static int restore_put(void *arg, const char *c, const char *i, struct cur_row *cur, const char *body, size_t blen)
{
    UNUSED(cur);
    return restore_change(arg, c, i, false, body, blen);
}

static int restore_del(void *arg, struct cur_row *cur)
{
    return restore_change(arg, cur->c, cur->i, true, NULL, 0);
}

/* ---- the plan file: one record per change --------------------------------
 * u8 kind ('P' put, 'D' delete), u16 collection length, u16 id length,
 * u32 body length, then the three strings (no terminators). Written and read
 * with stdio buffering; memory stays one record. */

struct plan_rec_head {
    uint8_t kind;
    uint16_t clen, ilen;
    uint32_t blen;
};

static int plan_write(FILE *f, uint8_t kind, const char *c, const char *i, const char *body, size_t blen)
{
    struct plan_rec_head h = {.kind = kind, .clen = (uint16_t)strlen(c), .ilen = (uint16_t)strlen(i), .blen = (uint32_t)blen};
    if (fwrite(&h, sizeof h, 1, f) != 1 || fwrite(c, 1, h.clen, f) != h.clen || fwrite(i, 1, h.ilen, f) != h.ilen ||
        (blen && fwrite(body, 1, blen, f) != blen))
        return -1;
    return 0;
}

static int plan_put(void *arg, const char *c, const char *i, struct cur_row *cur, const char *body, size_t blen)
{
    UNUSED(cur);
    return plan_write(arg, 'P', c, i, body, blen);
}

static int plan_del(void *arg, struct cur_row *cur)
{
    return plan_write(arg, 'D', cur->c, cur->i, NULL, 0);
}

struct plan_job {
    struct job job;
    struct restore *rs;              /* in: read only */
    /* out */
    uint64_t plan_version;
    bool ok;
    char err[200];
};

/* pool thread: one read transaction, so the plan is exactly "the space at
 * plan_version" -> "the snapshot" */
static void plan_work(struct job *j)
{
    struct plan_job *pj = container_of(j, struct plan_job, job);
    struct restore *rs = pj->rs;
    sqlite3 *db = store_reader_get(job_server(j)->store);
    if (!db) {
        snprintf(pj->err, sizeof pj->err, "no database connection");
        return;
    }
    FILE *f = fopen(rs->plan_path, "wb");
    if (!f) {
        snprintf(pj->err, sizeof pj->err, "cannot write the restore plan: %s", strerror(errno));
        store_reader_put(job_server(j)->store, db);
        return;
    }
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    bool have_version = store_space_version(db, rs->space_id, &pj->plan_version) == 1;
    /* test hook: a slow plan, so a test can write to the space meanwhile */
    uint64_t delay = env_ms("SNAPSYNC_TEST_RESTORE_PLAN_DELAY_MS");
    if (delay) uv_sleep((unsigned)delay);
    struct merge m = {.put = plan_put, .del = plan_del, .arg = f};
    char err[200];
    bool file_bad;
    if (!have_version) {
        snprintf(pj->err, sizeof pj->err, "the space is gone");
    } else if (merge_run(rs->path, rs->sha256, db, rs->space_id, &m, err, sizeof err, &file_bad) < 0) {
        snprintf(pj->err, sizeof pj->err, "%s", err);
    } else {
        pj->ok = true;
    }
    free(m.d);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    store_reader_put(job_server(j)->store, db);
    if (fclose(f) != 0 && pj->ok) {
        pj->ok = false;
        snprintf(pj->err, sizeof pj->err, "writing the plan failed: %s", strerror(errno));
    }
    if (!pj->ok) unlink(rs->plan_path);
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

static void moved_cover(struct moved *mv, const char *c, const char *i)
{
    size_t lo = 0, hi = mv->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = snap_key_cmp(mv->v[mid]->c, mv->v[mid]->i, c, i);
        if (!r) { mv->covered[mid] = true; return; }
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
}

/* Writer thread: follow the plan, then put back what moved after the plan's
 * read and the plan has no record for: such an entity was, at the plan's
 * version, the same as in the snapshot, so its state then (from the journal)
 * is the snapshot's. -1 with the op failed. */
static int plan_apply(struct restore_op *ro, struct moved *mv)
{
    struct restore *rs = ro->rs;
    FILE *f = fopen(rs->plan_path, "rb");
    if (!f) return wop_fail(&ro->op, 500, "storage_error", "the restore plan is gone: %s", strerror(errno));
    char c[64], i[130];
    char *body = NULL;
    size_t cap = 0;
    struct plan_rec_head h;
    int rc = 0;
    while (rc == 0 && fread(&h, sizeof h, 1, f) == 1) {
        if (h.clen >= sizeof c || h.ilen >= sizeof i || (h.kind != 'P' && h.kind != 'D') ||
            fread(c, 1, h.clen, f) != h.clen || fread(i, 1, h.ilen, f) != h.ilen) {
            rc = wop_fail(&ro->op, 500, "storage_error", "the restore plan is damaged");
            break;
        }
        c[h.clen] = i[h.ilen] = '\0';
        if (h.blen + 1 > cap) {
            cap = h.blen + 1;
            body = xrealloc(body, cap);
        }
        if (h.blen && fread(body, 1, h.blen, f) != h.blen) {
            rc = wop_fail(&ro->op, 500, "storage_error", "the restore plan is damaged");
            break;
        }
        if (mv->n) moved_cover(mv, c, i);
        if (restore_change(ro, c, i, h.kind == 'D', h.kind == 'D' ? NULL : body, h.blen) < 0) {
            if (!ro->op.err.status) wop_fail(&ro->op, 500, "storage_error", "writing %s/%s failed", c, i);
            rc = -1;
        }
    }
    if (rc == 0 && ferror(f)) rc = wop_fail(&ro->op, 500, "storage_error", "reading the restore plan failed");
    free(body);
    fclose(f);
    for (size_t k = 0; rc == 0 && k < mv->n; k++) {
        const struct journal_ent *e = mv->v[k];
        if (mv->covered[k]) continue;
        if (restore_change(ro, e->c, e->i, !e->live, e->body, e->blen) < 0) {
            if (!ro->op.err.status) wop_fail(&ro->op, 500, "storage_error", "writing %s/%s failed", e->c, e->i);
            rc = -1;
        }
    }
    return rc;
}

static int restore_apply(struct wtx *tx, struct wop *op)
{
    struct restore_op *ro = container_of(op, struct restore_op, op);
    struct restore *rs = ro->rs;
    assert(rs->pre_id[0]);           /* only after the pre-restore snapshot */
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
        /* no plan, or the journal overflowed: the whole merge here */
        struct merge m = {.put = restore_put, .del = restore_del, .arg = ro};
        char err[200];
        bool file_bad;
        if (merge_run(rs->path, rs->sha256, wtx_db(tx), sp->id, &m, err, sizeof err, &file_bad) < 0) {
            if (!op->err.status) {
                if (file_bad) {
                    ro->damaged = true;
                    snprintf(ro->why, sizeof ro->why, "%s", err);
                    char msg[300];
                    snap_corrupt_msg(msg, sizeof msg, err);
                    wop_fail(op, 422, "snapshot_corrupt", "%s; nothing was changed", msg);
                } else {
                    wop_fail(op, 500, "storage_error", "%s", err);
                }
            }
            rc = -1;
        }
        free(m.d);
    }
    journal_free(jn);
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

static void plan_start(struct restore *rs, struct http_req *r);

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
             "\"moved\":%llu",
             rs->space, rs->id, op->err.status ? op->err.status : 200, (unsigned long long)rs->puts,
             (unsigned long long)rs->dels, rs->used_plan ? "true" : "false", (unsigned long long)rs->moved);
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
    if (writer_submit(rs->srv->writer, &ro->op, r, restore_apply, restore_done) < 0) {
        snap_set_busy(rs->srv, rs->space, false);
        snap_answer_err(rs->answer, r, 0, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        if (rs->planned) snap_unlink_later(rs->srv, rs->plan_path);
        free(ro);
        restore_free(rs);
    }
}

static void plan_done(struct job *j, struct http_req *r)
{
    struct plan_job *pj = container_of(j, struct plan_job, job);
    struct restore *rs = pj->rs;
    rs->planned = pj->ok;
    rs->plan_version = pj->plan_version;
    if (!pj->ok)
        log_warn("snapshot_restore_plan_failed", "\"space\":\"%s\",\"snapshot\":\"%s\",\"error\":\"%s\"", rs->space,
                 rs->id, pj->err);
    free(pj);
    /* the client may have left (r NULL): the restore goes on. A failed plan
     * falls back to the merge inside the write transaction, which reports
     * the error if there is one */
    restore_submit(rs, r);
}

static void plan_start(struct restore *rs, struct http_req *r)
{
    struct plan_job *pj = xcalloc(1, sizeof *pj);
    pj->rs = rs;
    job_submit(&rs->srv->jobs, &pj->job, r, plan_work, plan_done);
}

/* The journal starts before the plan's read, so every write the plan cannot
 * see is in it. Past RESTORE_JOURNAL_BYTES of noted bodies (a space written
 * to heavily during the plan) the restore merges inside its transaction. */
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

static void journal_started(struct wop *op, struct http_req *r)
{
    struct journal_op *jo = container_of(op, struct journal_op, op);
    struct restore *rs = jo->rs;
    free(jo);
    plan_start(rs, r);
}

/* the pre-restore snapshot's row is in (go on: the file is written), or
 * the snapshot is done: the restore goes on when its file was written. A
 * row that could not be written fails the restore ("not recorded"). */
static void restore_after_pre(void *arg, struct http_req *r, const struct snap_report *rep)
{
    struct restore *rs = arg;
    if (rep->stage == SNAP_STARTED && !rep->err) return;
    if (rep->stage == SNAP_STARTED || rep->file_err) {
        snap_set_busy(rs->srv, rs->space, false);
        snap_answer_err(rs->answer, r, 0, 500, "pre_restore_failed", NULL, "the pre-restore snapshot failed: %s",
                        rep->file_err ? rep->file_err : "not recorded");
        restore_free(rs);
        return;
    }
    snprintf(rs->pre_id, sizeof rs->pre_id, "%s", rep->id);
    /* under snapshots/, so a crash's leftover goes with the start-up sweep */
    snprintf(rs->plan_path, sizeof rs->plan_path, "%s/snapshots/%s.restore-plan.tmp", rs->data_dir, rs->pre_id);
    struct journal_op *jo = xcalloc(1, sizeof *jo);
    jo->rs = rs;
    /* test hook: a small journal, to drive the fallback */
    const char *v = getenv("SNAPSYNC_TEST_RESTORE_JOURNAL_BYTES");
    uint64_t cap = RESTORE_JOURNAL_BYTES;
    if (v && parse_u64(v, strlen(v), RESTORE_JOURNAL_BYTES, &cap) < 0) cap = RESTORE_JOURNAL_BYTES;
    jo->cap = (size_t)cap;
    if (writer_submit(rs->srv->writer, &jo->op, r, journal_start_apply, journal_started) < 0) {
        snap_set_busy(rs->srv, rs->space, false);
        snap_answer_err(rs->answer, r, 0, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        free(jo);
        restore_free(rs);
    }
}

/* verified: now the pre-restore snapshot */
struct verify_job {
    struct job job;
    struct restore *rs;              /* in: read only */
    /* out */
    int err;                         /* 1 corrupt, 2 blobs missing, 3 storage */
    char msg[200];
    char missing[800];               /* err 2: "missing":[...] (JSON members) */
};

/* The file is checked whole, and every blob its entities name must be one
 * this space references (uploaded to it or arrived by sync): a restore
 * never makes an entity name a blob the space cannot show -- whether the
 * snapshot was taken here or imported, whatever is on disk for other
 * spaces. (The list comes from the file, not the row: an imported file is
 * read here for the first time as a restore's source.) */
static void verify_work(struct job *j)
{
    struct verify_job *vj = container_of(j, struct verify_job, job);
    struct snap_summary sum;
    int rc = snap_verify_file(vj->rs->path, &sum, vj->msg, sizeof vj->msg);
    free(sum.counts_json);
    if (rc < 0) {
        vj->err = 1;
    } else if (strcmp(sum.sha256, vj->rs->sha256) != 0) {
        vj->err = 1;
        snprintf(vj->msg, sizeof vj->msg, "the file's sha256 does not match the snapshot's (tampered or damaged)");
    } else if (sum.blobs_json && strcmp(sum.blobs_json, "[]")) {
        json_error_t je;
        json_t *a = json_loads(sum.blobs_json, 0, &je);
        sqlite3 *db = store_reader_get(job_server(j)->store);
        sqlite3_stmt *q = NULL;
        size_t i, n = 0, ml = (size_t)snprintf(vj->missing, sizeof vj->missing, "\"missing\":[");
        json_t *h;
        if (!db) vj->err = 3;
        json_array_foreach(a, i, h) {
            const char *x = json_name(h);
            if (!x) continue;                        /* the list was made here: valid hashes only */
            int in = db ? blobs_in_space(db, &q, vj->rs->space_id, x) : -1;
            if (in < 0) {
                vj->err = 3;
                break;
            }
            if (in) continue;
            if (!n) snprintf(vj->msg, sizeof vj->msg, "blob %s that the snapshot's entities name is not in this space", x);
            if (ml + 70 < sizeof vj->missing) ml += (size_t)snprintf(vj->missing + ml, sizeof vj->missing - ml, "%s\"%s\"", n ? "," : "", x);
            n++;
        }
        sqlite3_finalize(q);
        store_reader_put(job_server(j)->store, db);
        json_decref(a);
        snprintf(vj->missing + ml, sizeof vj->missing - ml, "]");
        if (vj->err == 3) snprintf(vj->msg, sizeof vj->msg, "reading the space's blobs failed");
        else if (n) vj->err = 2;
    }
    free(sum.blobs_json);
}

static void verify_done(struct job *j, struct http_req *r)
{
    struct verify_job *vj = container_of(j, struct verify_job, job);
    struct restore *rs = vj->rs;
    if (j->status == 0)              /* a full check of the file (2: the file is fine, a blob is not) */
        snap_integrity_mark(rs->srv, rs->space, rs->id, INTEG_RESTORE, vj->err != 1, vj->msg, rs->actor, rs->remote);
    struct snap_start_req pre = {.space = rs->space, .kind = "pre_restore", .actor = rs->actor, .remote = rs->remote,
                                 .note = "taken before a restore", .keep_request = true, .owns_busy = true,
                                 .report = restore_after_pre, .arg = rs};
    if (vj->err) {
        snap_set_busy(rs->srv, rs->space, false);
        char msg[300];
        if (vj->err == 1) {
            snap_log_file(LOG_ERROR, "snapshot_restore_refused", rs->space, rs->id, rs->path, vj->msg);
            snap_corrupt_msg(msg, sizeof msg, vj->msg);
        } else {
            snprintf(msg, sizeof msg, "%s", vj->msg);
        }
        if (vj->err == 3)
            snap_answer_err(rs->answer, r, 0, 500, "storage_error", NULL, "%s; nothing was changed", msg);
        else
            snap_answer_err(rs->answer, r, 0, 422, vj->err == 2 ? "missing_blob" : "snapshot_corrupt",
                            vj->err == 2 ? vj->missing : NULL, "%s; nothing was changed%s", msg,
                            vj->err == 2 ? " (upload those blobs to this space, then restore)" : "");
        restore_free(rs);
    } else if (!r) {
        snap_set_busy(rs->srv, rs->space, false);    /* the client left before anything changed */
        restore_free(rs);
    } else if (snap_start(rs->srv, r, &pre) < 0) {
        snap_set_busy(rs->srv, rs->space, false);
        snap_answer_err(rs->answer, r, 0, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        restore_free(rs);
    }
    free(vj);
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
    struct verify_job *vj = xcalloc(1, sizeof *vj);
    vj->rs = rs;
    job_submit(&srv->jobs, &vj->job, r, verify_work, verify_done);
}

