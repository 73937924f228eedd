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

/* Current rows of a space in (collection, id) order. On a connection of
 * its own in a read transaction (a plan, a preview) one statement walks
 * them all (stream); the restore's fallback inside the write transaction
 * reads pages, so the same connection may write between them. */
struct cur_row {
    char c[64], i[130], rev[REV_MAX];
    bool deleted;
    const char *body;                /* stream: the statement's; pages: owned */
    size_t blen;
};
struct cur_rows {
    sqlite3 *db;
    int64_t space_id;
    bool stream;
    sqlite3_stmt *q;                 /* stream */
    char after_c[64], after_i[130];
    bool started, done;
    struct cur_row *v;
    size_t n, pos, cap;
};

static void cur_fill(struct cur_row *r, sqlite3_stmt *q, bool copy)
{
    snprintf(r->c, sizeof r->c, "%s", (const char *)sqlite3_column_text(q, 0));
    snprintf(r->i, sizeof r->i, "%s", (const char *)sqlite3_column_text(q, 1));
    snprintf(r->rev, sizeof r->rev, "%s", (const char *)sqlite3_column_text(q, 2));
    r->deleted = sqlite3_column_int(q, 3) != 0;
    r->blen = (size_t)sqlite3_column_bytes(q, 4);
    const char *b = (const char *)sqlite3_column_text(q, 4);
    r->body = !b ? NULL : copy ? xstrndup(b, r->blen) : b;
}

static void cur_clear(struct cur_rows *cr)
{
    if (!cr->stream)
        for (size_t k = 0; k < cr->n; k++) free((char *)cr->v[k].body);
    cr->n = cr->pos = 0;
}

#define CUR_SELECT "SELECT collection, id, rev, deleted, body FROM entities WHERE space_id = ?1"

static int cur_page(struct cur_rows *cr)
{
    cur_clear(cr);
    if (cr->done) return 0;
    sqlite3_stmt *q;
    /* a row value, so the index range starts at the key (not a scan of the
     * collection from its start for every page) */
    if (sqlite3_prepare_v2(cr->db, CUR_SELECT " AND (collection, id) > (?2, ?3) ORDER BY collection, id LIMIT 512", -1,
                           &q, NULL) != SQLITE_OK)
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
        cur_fill(&cr->v[cr->n++], q, true);
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

/* stream: the next row into v[0] (n 0 at the end) */
static int cur_step(struct cur_rows *cr)
{
    if (!cr->q) {
        if (!cr->v) cr->v = xmalloc(sizeof *cr->v);
        if (sqlite3_prepare_v2(cr->db, CUR_SELECT " ORDER BY collection, id", -1, &cr->q, NULL) != SQLITE_OK) return -1;
        sqlite3_bind_int64(cr->q, 1, cr->space_id);
    }
    cr->n = cr->pos = 0;
    int rc = sqlite3_step(cr->q);
    if (rc == SQLITE_ROW) {
        cur_fill(&cr->v[0], cr->q, false);
        cr->n = 1;
        return 0;
    }
    cr->done = true;
    return rc == SQLITE_DONE ? 0 : -1;
}

/* The current row under the cursor, or NULL at the end. */
static struct cur_row *cur_peek(struct cur_rows *cr, int *err)
{
    if (cr->pos < cr->n) return &cr->v[cr->pos];
    if (cr->done && cr->started) return NULL;
    cr->started = true;
    if ((cr->stream ? cur_step(cr) : cur_page(cr)) < 0) { *err = 1; return NULL; }
    return cr->pos < cr->n ? &cr->v[cr->pos] : NULL;
}

static void cur_free(struct cur_rows *cr)
{
    cur_clear(cr);
    sqlite3_finalize(cr->q);
    free(cr->v);
}

struct delta_coll {
    char name[64];
    uint64_t added, modified, deleted;
};

/* What a snapshot entity is put back as: its body, and for a v2 file its
 * revision identity (rev and the history after it, space-separated as a
 * row keeps it); rev NULL: a new edit (v1). */
struct put_item {
    const char *c, *i, *body, *rev, *hist;
    size_t blen;
};

struct merge {
    /* callbacks: NULL to only count */
    int (*put)(void *arg, const struct put_item *it);
    int (*del)(void *arg, struct cur_row *cur);
    void *arg;
    bool stream;                     /* the connection is in a read transaction of its own */
    bool verify;                     /* the full check too: header, counts, snapshot_format.h */
    int version;                     /* out: the file's format */
    uint64_t puts, dels;
    /* per-collection delta, "the current state against the snapshot" */
    struct delta_coll *d;
    size_t nd;
    struct blob_set *blobs;          /* non-NULL: collects the blobs every snapshot entity names */
    /* verify: entities per collection, in file order (collections are runs) */
    struct delta_coll *seen;
    size_t nseen;
    uint64_t total;
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

static void merge_free(struct merge *m)
{
    free(m->d);
    free(m->seen);
    m->d = m->seen = NULL;
}

/* A v2 line's revs, ["r","older",...] (names without escapes, as the
 * reader checked them), as the history a row keeps after rev: the older
 * ones, space-separated, as many as a row holds (REV_HISTORY - 1). */
static void hist_of(const char *revs, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    int k = -1;
    out[0] = '\0';
    for (const char *p = revs, *end = revs + len; p < end && k < REV_HISTORY - 1;) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        const char *z = q ? memchr(q + 1, '"', (size_t)(end - q - 1)) : NULL;
        if (!z) break;
        size_t l = (size_t)(z - q - 1);
        if (k++ >= 0) {
            if (n + l + 2 > cap) break;
            if (n) out[n++] = ' ';
            memcpy(out + n, q + 1, l);
            n += l;
            out[n] = '\0';
        }
        p = z + 1;
    }
}

/* verify: the line's collection counted (lines are in key order) */
static void count_line(struct merge *m, const char *c)
{
    m->total++;
    if (!m->nseen || strcmp(m->seen[m->nseen - 1].name, c)) {
        m->seen = xrealloc(m->seen, (m->nseen + 1) * sizeof *m->seen);
        memset(&m->seen[m->nseen], 0, sizeof *m->seen);
        snprintf(m->seen[m->nseen++].name, sizeof m->seen->name, "%s", c);
    }
    m->seen[m->nseen - 1].added++;
}

/* verify: the counts against the header (as snap_check_step checks them) */
static int counts_check(struct snap_reader *rd, struct merge *m, char *err, size_t errlen)
{
    json_t *counts = snap_reader_counts(rd), *total = json_object_get(rd->hdr, "entity_total");
    bool ok = (uint64_t)json_integer_value(total) == m->total && json_object_size(counts) == m->nseen;
    for (size_t k = 0; ok && k < m->nseen; k++) {
        json_t *v = json_object_get(counts, m->seen[k].name);
        ok = json_is_integer(v) && (uint64_t)json_integer_value(v) == m->seen[k].added;
    }
    if (!ok)
        snprintf(err, errlen, "the header counts %lld entities but the file holds %llu (or per-collection counts differ)",
                 (long long)json_integer_value(total), (unsigned long long)m->total);
    return ok ? 0 : -1;
}

/* The snapshot entity against the live row under the cursor (cur, when
 * same_key): 1 when the restore must put it (not live, or another body),
 * 0 when not, -1 when its body fails the check. A body is checked only
 * when it is not byte-equal to the stored one: stored bodies are
 * canonical, so an equal one needs no parse. An entity with the same body
 * under another rev is left as it is (v1 and v2 alike: the answers count
 * bodies). */
static int line_differs(struct snap_reader *rd, struct snap_entity *e, const struct cur_row *cur, bool same_key,
                        char *why, size_t whylen)
{
    bool live = same_key && !cur->deleted && cur->body;
    if (live && cur->blen == e->body_len && !memcmp(cur->body, e->body, e->body_len)) return 0;
    if (snap_reader_body(rd, e, why, whylen) < 0) return -1;
    return !live || cur->blen != e->body_len || memcmp(cur->body, e->body, e->body_len) ? 1 : 0;
}

static int merge_entity(struct merge *m, struct snap_entity *e, struct cur_row *cur, bool same_key, char *err,
                        size_t errlen)
{
    struct delta_coll *d = delta_for(m, e->collection);
    if (!same_key || cur->deleted) d->deleted++;         /* gone from the live state since */
    else d->modified++;
    m->puts++;
    if (!m->put) return 0;
    char hist[REV_HISTORY * REV_MAX];
    struct put_item it = {.c = e->collection, .i = e->id, .body = e->body, .blen = e->body_len};
    if (e->format_version >= SNAP_FORMAT_V2 && rev_valid(e->rev)) {
        hist_of(e->revs, e->revs_len, hist, sizeof hist);
        it.rev = e->rev;
        it.hist = hist;
    }
    if (m->put(m->arg, &it) < 0) {
        snprintf(err, errlen, "writing %s/%s failed", e->collection, e->id);
        return -1;
    }
    return 0;
}

/* The live rows before key (c, i) (every one left at the end: c NULL) are
 * not in the snapshot. 0, or -1 with err (*dberr for the database). */
static int merge_extra(struct merge *m, struct cur_rows *cr, const char *c, const char *i, struct cur_row **curp,
                       int *dberr, char *err, size_t errlen)
{
    struct cur_row *cur;
    while ((cur = cur_peek(cr, dberr)) && (!c || snap_key_cmp(cur->c, cur->i, c, i) < 0)) {
        if (!cur->deleted) {
            delta_for(m, cur->c)->added++;
            m->dels++;
            if (m->del && m->del(m->arg, cur) < 0) {
                snprintf(err, errlen, "deleting %.63s/%.100s failed", cur->c, cur->i);
                return -1;
            }
        }
        cr->pos++;
    }
    *curp = cur;
    return 0;
}

/* Walks the snapshot file and the live rows in key order. For a restore:
 * put() the snapshot's version where the live state differs, del() what
 * the snapshot does not have. For a preview the same walk only counts.
 * With m->verify the walk is also the file's full check (header, every
 * line, counts; the errors name the line as snapsync verify does), so a
 * restore reads the file once.
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
    rd.defer_body = true;
    m->version = rd.version;
    struct snap_header h;
    if (m->verify && snap_reader_header(&rd, &h, err, errlen) < 0) {
        snap_reader_close(&rd);
        return -1;
    }
    struct cur_rows cr = {.db = db, .space_id = space_id, .stream = m->stream};
    int rc = -1, dberr = 0;
    struct snap_entity e;
    for (;;) {
        int r = snap_reader_next(&rd, &e, why, sizeof why);
        if (r < 0) goto bad_line;
        bool have = r == 1;
        struct cur_row *cur;
        if (merge_extra(m, &cr, have ? e.collection : NULL, have ? e.id : NULL, &cur, &dberr, err, errlen) < 0) {
            *file_bad = false;
            goto out;
        }
        if (dberr) {
            *file_bad = false;
            snprintf(err, errlen, "reading live entities failed: %s", sqlite3_errmsg(db));
            goto out;
        }
        if (!have) break;
        bool same_key = cur && !snap_key_cmp(cur->c, cur->i, e.collection, e.id);
        int d = line_differs(&rd, &e, cur, same_key, why, sizeof why);
        if (d < 0) goto bad_line;
        if (m->verify) count_line(m, e.collection);
        if (m->blobs) blob_set_add_text(m->blobs, e.body, e.body_len);
        if (d && merge_entity(m, &e, cur, same_key, err, errlen) < 0) {
            *file_bad = false;
            goto out;
        }
        if (same_key) cr.pos++;
    }
    if (m->verify && counts_check(&rd, m, err, errlen) < 0) goto out;
    char sha[65];
    snap_reader_sha256(&rd, sha);
    if (want_sha && strcmp(sha, want_sha) != 0) {
        snprintf(err, errlen, "the file's sha256 does not match the snapshot's%s",
                 m->verify ? " (tampered or damaged)" : "");
        goto out;
    }
    rc = 0;
    *file_bad = false;
    goto out;
bad_line:
    if (m->verify) snprintf(err, errlen, "line %llu: %s", (unsigned long long)rd.line, why);
    else snprintf(err, errlen, "%s", why);
out:
    cur_free(&cr);
    snap_reader_close(&rd);
    return rc;
}

/* snapshot.h: merge_run counting only, for tests and the fuzz target */
int snap_merge_count(const char *path, const char *want_sha, void *db, int64_t space_id, uint64_t *puts,
                     uint64_t *dels, char *err, size_t errlen)
{
    struct merge m = {.stream = true};
    bool file_bad;
    int rc = merge_run(path, want_sha, db, space_id, &m, err, errlen, &file_bad);
    *puts = m.puts;
    *dels = m.dels;
    merge_free(&m);
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

static int blobs_missing(sqlite3 *db, int64_t space_id, struct blob_set *set, char *missing, size_t mcap, char *msg,
                         size_t msgcap);

/* A dry run says what the restore would do: refuse it, too, when the
 * snapshot names blobs the space does not have (as plan_work does). Returns
 * the count missing, or -1 on an SQL error. */
static int dry_run_blobs(sqlite3 *db, int64_t space_id, struct blob_set *set, struct snap_preview *pa)
{
    return blobs_missing(db, space_id, set, pa->missing, sizeof pa->missing, pa->missing_msg, sizeof pa->missing_msg);
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
    struct merge m = {.stream = true};   /* the read job's connection is its own */
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
        merge_free(&m);
        free(blobs.v);
        goto out;
    }
    if (pa->dry_run && dry_run_blobs(db, pa->space_id, &blobs, pa) < 0) {
        err_set(&pa->err, 500, "storage_error", "reading the space's blobs failed");
        merge_free(&m);
        goto out;
    }
    preview_json(pa, &m, out);
    merge_free(&m);
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
 * u8 kind ('P' put, 'R' put with the snapshot's rev, 'D' delete), u16
 * collection length, u16 id length, u32 body length, u8 rev length, u16
 * history length, then the strings (no terminators). Written and read with
 * stdio buffering; memory stays one record. */

struct plan_rec_head {
    uint8_t kind;
    uint16_t clen, ilen;
    uint32_t blen;
    uint8_t rlen;
    uint16_t hlen;
};

static int plan_write(FILE *f, uint8_t kind, const char *c, const char *i, const char *body, size_t blen,
                      const char *rev, const char *hist)
{
    rev = rev ? rev : "";
    hist = hist ? hist : "";
    struct plan_rec_head h = {.kind = kind, .clen = (uint16_t)strlen(c), .ilen = (uint16_t)strlen(i),
                              .blen = (uint32_t)blen, .rlen = (uint8_t)strlen(rev),
                              .hlen = (uint16_t)strlen(hist)};
    if (fwrite(&h, sizeof h, 1, f) != 1 || fwrite(c, 1, h.clen, f) != h.clen || fwrite(i, 1, h.ilen, f) != h.ilen ||
        (blen && body && fwrite(body, 1, blen, f) != blen) || (h.rlen && fwrite(rev, 1, h.rlen, f) != h.rlen) ||
        (h.hlen && fwrite(hist, 1, h.hlen, f) != h.hlen))
        return -1;
    return 0;
}

static int plan_put(void *arg, const struct put_item *it)
{
    return plan_write(arg, it->rev ? 'R' : 'P', it->c, it->i, it->body, it->blen, it->rev, it->hist);
}

static int plan_del(void *arg, struct cur_row *cur)
{
    return plan_write(arg, 'D', cur->c, cur->i, NULL, 0, NULL, NULL);
}

/* The blobs of set (freed) that the space has no reference to: their count
 * (the first named in msg, all that fit as "missing":[...] in missing), or
 * -1 on an SQL error. A restore never makes an entity name a blob the
 * space cannot show. */
static int blobs_missing(sqlite3 *db, int64_t space_id, struct blob_set *set, char *missing, size_t mcap, char *msg,
                         size_t msgcap)
{
    struct buf list;
    buf_init(&list);
    blob_set_finish(set, &list);
    json_error_t je;
    json_t *a = json_loads(list.data, 0, &je);
    buf_free(&list);
    sqlite3_stmt *q = NULL;
    size_t i, ml = (size_t)snprintf(missing, mcap, "\"missing\":[");
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
        if (!n) snprintf(msg, msgcap, "blob %s that the snapshot's entities name is not in this space", x);
        if (ml + 70 < mcap) ml += (size_t)snprintf(missing + ml, mcap - ml, "%s\"%s\"", n ? "," : "", x);
        n++;
    }
    snprintf(missing + ml, mcap - ml, "]");
    sqlite3_finalize(q);
    json_decref(a);
    return n;
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
        int n = blobs_missing(db, rs->space_id, &blobs, pj->missing, sizeof pj->missing, pj->msg, sizeof pj->msg);
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
 * version, the same as in the snapshot, so its state then (from the journal:
 * body, and rev and history for a v2 file) is the snapshot's. -1 with the op
 * failed. */
static int plan_apply(struct restore_op *ro, struct moved *mv)
{
    struct restore *rs = ro->rs;
    FILE *f = fopen(rs->plan_path, "rb");
    if (!f) return wop_fail(&ro->op, 500, "storage_error", "the restore plan is gone: %s", strerror(errno));
    char c[64], i[130], rev[REV_MAX], hist[REV_HISTORY * REV_MAX];
    char *body = NULL;
    size_t cap = 0;
    struct plan_rec_head h;
    int rc = 0;
    while (rc == 0 && fread(&h, sizeof h, 1, f) == 1) {
        if (h.clen >= sizeof c || h.ilen >= sizeof i || h.rlen >= sizeof rev || h.hlen >= sizeof hist ||
            (h.kind != 'P' && h.kind != 'D' && h.kind != 'R') || fread(c, 1, h.clen, f) != h.clen ||
            fread(i, 1, h.ilen, f) != h.ilen) {
            rc = wop_fail(&ro->op, 500, "storage_error", "the restore plan is damaged");
            break;
        }
        c[h.clen] = i[h.ilen] = '\0';
        if (h.blen + 1 > cap) {
            cap = h.blen + 1;
            body = xrealloc(body, cap);
        }
        if ((h.blen && fread(body, 1, h.blen, f) != h.blen) || (h.rlen && fread(rev, 1, h.rlen, f) != h.rlen) ||
            (h.hlen && fread(hist, 1, h.hlen, f) != h.hlen)) {
            rc = wop_fail(&ro->op, 500, "storage_error", "the restore plan is damaged");
            break;
        }
        rev[h.rlen] = hist[h.hlen] = '\0';
        if (mv->n) moved_cover(mv, c, i);
        if (restore_change(ro, c, i, h.kind == 'D', h.kind == 'D' ? NULL : body, h.blen, h.kind == 'R' ? rev : NULL,
                           hist) < 0) {
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
        int n = blobs_missing(wtx_db(tx), ro->sp->id, &blobs, missing, sizeof missing, err, sizeof err);
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
