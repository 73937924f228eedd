/* restore_merge.c - see restore_merge.h: the merge of a snapshot file with
 * the live state, and the preview and dry run built on it. */
#include "svc/restore_merge.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/entity.h"
#include "core/json.h"
#include "core/log.h"
#include "net/server.h"
#include "store/store.h"
#include "svc/blobs.h"
#include "svc/restore.h"

/* ---- the merge of a snapshot with the live state ------------------------ */

/* cur_rows: the live rows, in key order (restore_merge.h's cur_row) */
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
    const char *h = (const char *)sqlite3_column_text(q, 5);
    h = h ? h : "";
    r->revs = copy ? xstrdup(h) : h;
}

static void cur_clear(struct cur_rows *cr)
{
    if (!cr->stream)
        for (size_t k = 0; k < cr->n; k++) {
            free((char *)cr->v[k].body);
            free((char *)cr->v[k].revs);
        }
    cr->n = cr->pos = 0;
}

#define CUR_SELECT "SELECT collection, id, rev, deleted, body, revs FROM entities WHERE space_id = ?1"

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

void merge_free(struct merge *m)
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
    struct put_item it = {.c = e->collection, .i = e->id, .body = e->body, .blen = e->body_len,
                          .cur = same_key ? cur : NULL};
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
int merge_run(const char *path, const char *want_sha, sqlite3 *db, int64_t space_id, struct merge *m, char *err,
              size_t errlen, bool *file_bad)
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


/* A dry run says what the restore would do: refuse it, too, when the
 * snapshot names blobs the space does not have (as plan_work does). Returns
 * the count missing, or -1 on an SQL error. */
static int dry_run_blobs(sqlite3 *db, int64_t space_id, struct blob_set *set, struct snap_preview *pa)
{
    return restore_blobs_missing(db, space_id, set, pa->missing, sizeof pa->missing, pa->missing_msg, sizeof pa->missing_msg);
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
/* The blobs of set (freed) that the space has no reference to: their count
 * (the first named in msg, all that fit as "missing":[...] in missing), or
 * -1 on an SQL error. A restore never makes an entity name a blob the
 * space cannot show. */
int restore_blobs_missing(sqlite3 *db, int64_t space_id, struct blob_set *set, char *missing, size_t mcap, char *msg,
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

