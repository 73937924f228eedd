/* blobs.c - the blob store: file blobs, the bytes in a content-addressed store
 * under DATA/blobs/<first two hex>/<sha256>, shared by every space; which
 * space may see which blob in the table space_blobs(sha256, space_id).
 *
 * A blob is visible in a space (GET, HEAD, POST /blobs/missing, "_blobs" of
 * an entity write) only if the space references it: it was uploaded to that
 * space or arrived there by sync. The bytes stay deduplicated, but a space
 * gets a reference only from someone who sent the bytes: an upload of a blob
 * already on disk is still received whole and hash-checked.
 *
 * The handlers (PUT, GET/HEAD, POST /blobs/missing) are api/blobs.c.
 *
 * Removal: deleting a space drops its references in its transaction; once
 * that commits, a threadpool job removes the files no space references any
 * more. A file being put in place for a reference not yet committed (an
 * upload, a sync fetch) is pinned in an in-memory table, and the removal
 * skips it; a placement waits while a removal of the same blob is being
 * decided. Files a crash left without a reference go at the next start
 * (blobs_recover).
 */
#include "svc/blobs.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/jobs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "net/server.h"
#include "store/store.h"
#include "store/writer.h"


void blob_path(const char *data_dir, const char *sha, char *out, size_t cap)
{
    snprintf(out, cap, "%s/blobs/%.2s/%s", data_dir, sha, sha);
}

/* ---- pins: files in place whose reference is not committed yet ---------- */

struct pin {
    char sha[65];
    unsigned pins;                   /* placements waiting for their reference */
    bool removing;                   /* a removal is deciding about this file */
    char owner[32];                  /* who placed it last (a sync job), or "" */
};

struct blob_store {
    pthread_mutex_t mu;
    pthread_cond_t cv;               /* a removal finished */
    struct pin *v;
    size_t n, cap;
};

void blobs_init(struct server *srv)
{
    struct blob_store *bs = xcalloc(1, sizeof *bs);
    pthread_mutex_init(&bs->mu, NULL);
    pthread_cond_init(&bs->cv, NULL);
    srv->blobs = bs;
}

void blobs_free(struct server *srv)
{
    struct blob_store *bs = srv->blobs;
    if (!bs) return;
    pthread_mutex_destroy(&bs->mu);
    pthread_cond_destroy(&bs->cv);
    free(bs->v);
    free(bs);
    srv->blobs = NULL;
}

/* under mu */
static struct pin *pin_find(struct blob_store *bs, const char *sha)
{
    for (size_t i = 0; i < bs->n; i++)
        if (!memcmp(bs->v[i].sha, sha, 64)) return &bs->v[i];
    return NULL;
}

static struct pin *pin_add(struct blob_store *bs, const char *sha)
{
    if (bs->n == bs->cap) {
        bs->cap = bs->cap ? bs->cap * 2 : 16;
        bs->v = xrealloc(bs->v, bs->cap * sizeof *bs->v);
    }
    struct pin *p = &bs->v[bs->n++];
    memset(p, 0, sizeof *p);
    memcpy(p->sha, sha, 64);
    return p;
}

static void pin_drop_if_idle(struct blob_store *bs, struct pin *p)
{
    if (p->pins || p->removing) return;
    *p = bs->v[--bs->n];
}

int blob_place(struct server *srv, const char *tmp, const char *sha, const char *owner)
{
    struct blob_store *bs = srv->blobs;
    pthread_mutex_lock(&bs->mu);
    struct pin *p;
    while ((p = pin_find(bs, sha)) && p->removing) pthread_cond_wait(&bs->cv, &bs->mu);
    if (!p) p = pin_add(bs, sha);
    p->pins++;
    snprintf(p->owner, sizeof p->owner, "%s", owner ? owner : "");
    pthread_mutex_unlock(&bs->mu);
    /* pinned: no removal touches the file from here on */
    char path[1200], dir[1200];
    blob_path(srv->cfg->data_dir, sha, path, sizeof path);
    snprintf(dir, sizeof dir, "%s/blobs/%.2s", srv->cfg->data_dir, sha);
    mkdir(dir, 0700);
    if (rename(tmp, path) < 0) {
        int e = errno;
        blob_unpin(srv, sha);
        return -e;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

bool blob_pin_owned(struct server *srv, const char *sha, const char *owner)
{
    struct blob_store *bs = srv->blobs;
    pthread_mutex_lock(&bs->mu);
    struct pin *p = pin_find(bs, sha);
    bool ok = p && p->pins && !p->removing && owner[0] && !strcmp(p->owner, owner);
    if (ok) p->pins++;
    pthread_mutex_unlock(&bs->mu);
    return ok;
}

void blob_unpin(struct server *srv, const char *sha)
{
    struct blob_store *bs = srv->blobs;
    pthread_mutex_lock(&bs->mu);
    struct pin *p = pin_find(bs, sha);
    assert(p && p->pins > 0);
    if (p) {
        p->pins--;
        pin_drop_if_idle(bs, p);
    }
    pthread_mutex_unlock(&bs->mu);
}

/* ---- references (writer thread) ----------------------------------------- */

static const char SQL_REF_HAS[] = "SELECT 1 FROM space_blobs WHERE sha256 = ? AND space_id = ?";
static const char SQL_REF_ADD[] = "INSERT OR IGNORE INTO space_blobs(sha256, space_id) VALUES (?, ?)";
static const char SQL_REF_LAST[] =
    "SELECT sha256 FROM space_blobs b WHERE space_id = ?1"
    " AND NOT EXISTS (SELECT 1 FROM space_blobs o WHERE o.sha256 = b.sha256 AND o.space_id <> ?1)";
static const char SQL_REF_DROP[] = "DELETE FROM space_blobs WHERE space_id = ?";

int blobs_check(struct wtx *tx, int64_t space_id, const char *body, size_t len, char *missing, size_t cap)
{
    missing[0] = '\0';
    /* cheap test first: most bodies reference no blob */
    if (!body || !memmem(body, len, "\"_blobs\":", 9)) return 0;
    json_error_t je;
    /* a body's values may hold \u0000: parsed as the body was accepted */
    json_t *v = json_loadb(body, len, JSON_ALLOW_NUL, &je);
    json_t *arr = v ? json_object_get(v, "_blobs") : NULL;
    int rc = 0;
    if (!arr) goto out;              /* "_blobs" nested deeper: not a reference list */
    if (!json_is_array(arr)) {
        snprintf(missing, cap, "_blobs must be an array of sha256 hex strings");
        rc = -1;
        goto out;
    }
    size_t i, n = 0;
    json_t *h;
    json_array_foreach(arr, i, h) {
        const char *s = json_name(h);
        if (!s || !name_sha256_valid(s, strlen(s))) {
            snprintf(missing, cap, "_blobs must be an array of sha256 hex strings");
            rc = -1;
            goto out;
        }
        sqlite3_stmt *st = wtx_stmt(tx, SQL_REF_HAS);
        sqlite3_bind_text(st, 1, s, 64, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, space_id);
        int sr = sqlite3_step(st);
        sqlite3_reset(st);
        if (sr == SQLITE_ROW) continue;
        if (sr != SQLITE_DONE) {
            snprintf(missing, cap, "reading the space's blobs failed");
            rc = -2;
            goto out;
        }
        size_t l = strlen(missing);
        if (l + 70 < cap) snprintf(missing + l, cap - l, "%s\"%s\"", n ? "," : "", s);
        n++;
        rc = 1;
    }
out:
    json_decref(v);
    return rc;
}

int blobs_ref_add(struct wtx *tx, int64_t space_id, const char *sha, bool *added)
{
    sqlite3_stmt *st = wtx_stmt(tx, SQL_REF_ADD);
    sqlite3_bind_text(st, 1, sha, 64, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, space_id);
    if (sqlite3_step(st) != SQLITE_DONE) return -1;
    if (added) *added = sqlite3_changes(wtx_db(tx)) > 0;
    return 0;
}

int blobs_space_drop(struct wtx *tx, int64_t space_id, struct buf *gone)
{
    sqlite3_stmt *st = wtx_stmt(tx, SQL_REF_LAST);
    sqlite3_bind_int64(st, 1, space_id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (sqlite3_column_bytes(st, 0) == 64) buf_append(gone, sqlite3_column_text(st, 0), 64);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return -1;
    st = wtx_stmt(tx, SQL_REF_DROP);
    sqlite3_bind_int64(st, 1, space_id);
    return sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
}

/* ---- references (read connections, threadpool) ---------------------------- */

int blobs_in_space(sqlite3 *db, sqlite3_stmt **st, int64_t space_id, const char *sha)
{
    if (!*st && sqlite3_prepare_v2(db, SQL_REF_HAS, -1, st, NULL) != SQLITE_OK) return -1;
    sqlite3_reset(*st);
    sqlite3_bind_text(*st, 1, sha, 64, SQLITE_TRANSIENT);
    sqlite3_bind_int64(*st, 2, space_id);
    int rc = sqlite3_step(*st);
    sqlite3_reset(*st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* ---- removal ---------------------------------------------------------------- */

struct collect_job {
    struct job job;
    char *hashes;                    /* 64 hex digits each */
    size_t n;
    uint64_t removed;
    int err;                         /* an SQL failure: the rest stay for the next start */
};

/* Removes the file of sha unless someone has it pinned or a space references
 * it. The removing mark makes a placement of the same blob wait until the
 * decision is made and carried out; the reference check comes after the
 * mark, so it sees every reference committed before a pin was released. */
static int collect_one(struct server *srv, sqlite3 *db, sqlite3_stmt **st, const char *sha)
{
    struct blob_store *bs = srv->blobs;
    pthread_mutex_lock(&bs->mu);
    struct pin *p = pin_find(bs, sha);
    if (p) {                         /* pinned (or already being decided) */
        pthread_mutex_unlock(&bs->mu);
        return 0;
    }
    pin_add(bs, sha)->removing = true;
    pthread_mutex_unlock(&bs->mu);
    if (!*st && sqlite3_prepare_v2(db, "SELECT 1 FROM space_blobs WHERE sha256 = ? LIMIT 1", -1, st, NULL) != SQLITE_OK)
        *st = NULL;
    int rc = -1;
    if (*st) {
        sqlite3_reset(*st);
        sqlite3_bind_text(*st, 1, sha, 64, SQLITE_TRANSIENT);
        int sr = sqlite3_step(*st);
        sqlite3_reset(*st);
        rc = 0;
        if (sr == SQLITE_DONE) {
            char path[1200];
            blob_path(srv->cfg->data_dir, sha, path, sizeof path);
            if (unlink(path) == 0) rc = 1;
        } else if (sr != SQLITE_ROW) {
            rc = -1;
        }
    }
    pthread_mutex_lock(&bs->mu);
    p = pin_find(bs, sha);
    p->removing = false;
    pin_drop_if_idle(bs, p);
    pthread_cond_broadcast(&bs->cv);
    pthread_mutex_unlock(&bs->mu);
    return rc;
}

static void collect_work(struct job *j)
{
    struct collect_job *cj = container_of(j, struct collect_job, job);
    sqlite3 *db = store_reader_get(job_server(j)->store);
    if (!db) {
        cj->err = 1;
        return;
    }
    sqlite3_stmt *st = NULL;
    for (size_t i = 0; i < cj->n; i++) {
        char sha[65];
        memcpy(sha, cj->hashes + i * 64, 64);
        sha[64] = '\0';
        int rc = collect_one(job_server(j), db, &st, sha);
        if (rc < 0) {
            cj->err = 1;
            break;
        }
        cj->removed += (uint64_t)rc;
    }
    sqlite3_finalize(st);
    store_reader_put(job_server(j)->store, db);
}

static void collect_done(struct job *j, struct http_req *r)
{
    struct collect_job *cj = container_of(j, struct collect_job, job);
    UNUSED(r);
    if (cj->err)
        log_warn("blobs_collect_failed", "\"candidates\":%zu,\"removed\":%llu,\"note\":\"the rest go at the next start\"",
                 cj->n, (unsigned long long)cj->removed);
    else if (cj->removed)
        log_info("blobs_removed", "\"removed\":%llu", (unsigned long long)cj->removed);
    free(cj->hashes);
    free(cj);
}

void blobs_collect(struct server *srv, const char *hashes, size_t n)
{
    if (!n) return;
    struct collect_job *cj = xcalloc(1, sizeof *cj);
    cj->hashes = xmalloc(n * 64);
    memcpy(cj->hashes, hashes, n * 64);
    cj->n = n;
    job_submit(&srv->jobs, &cj->job, NULL, collect_work, collect_done);
}

int blobs_recover(const char *data_dir, sqlite3 *db, char *err, size_t errlen)
{
    char dir[1100];
    int tmp_removed = 0, removed = 0, rc = 0;
    snprintf(dir, sizeof dir, "%s/blobs/tmp", data_dir);
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.') continue;
            char p[1400];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            if (unlink(p) == 0) tmp_removed++;
        }
        closedir(d);
    }
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM space_blobs WHERE sha256 = ? LIMIT 1", -1, &q, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading blob references: %s", sqlite3_errmsg(db));
        return -1;
    }
    snprintf(dir, sizeof dir, "%s/blobs", data_dir);
    DIR *top = opendir(dir);
    struct dirent *sub;
    while (top && rc == 0 && (sub = readdir(top))) {
        const char *pre = sub->d_name;
        /* only the two-hex-digit directories hold blobs (not tmp/) */
        if (strlen(pre) != 2 || !strchr("0123456789abcdef", pre[0]) || !strchr("0123456789abcdef", pre[1])) continue;
        char sd[1200];
        snprintf(sd, sizeof sd, "%s/%.2s", dir, pre);
        DIR *d2 = opendir(sd);
        struct dirent *de;
        while (d2 && (de = readdir(d2))) {
            const char *name = de->d_name;
            size_t l = strlen(name);
            if (!name_sha256_valid(name, l) || memcmp(name, pre, 2)) continue;
            sqlite3_reset(q);
            sqlite3_bind_text(q, 1, name, 64, SQLITE_TRANSIENT);
            int sr = sqlite3_step(q);
            if (sr == SQLITE_ROW) continue;
            if (sr != SQLITE_DONE) {
                snprintf(err, errlen, "reading blob references: %s", sqlite3_errmsg(db));
                rc = -1;
                break;
            }
            char p[1400];
            snprintf(p, sizeof p, "%s/%.64s", sd, name);
            if (unlink(p) == 0) removed++;
        }
        if (d2) closedir(d2);
    }
    if (top) closedir(top);
    sqlite3_finalize(q);
    if (tmp_removed || removed)
        log_info("blobs_recovered", "\"temp_files_removed\":%d,\"unreferenced_removed\":%d", tmp_removed, removed);
    return rc;
}

/* ---- reading (threadpool) ------------------------------------------------ */

int blob_open(struct server *srv, int64_t space_id, const char *sha, int *fd, uint64_t *size)
{
    /* another space's blob is not there, just like one nobody uploaded */
    sqlite3 *db = store_reader_get(srv->store);
    sqlite3_stmt *st = NULL;
    int in = db ? blobs_in_space(db, &st, space_id, sha) : -1;
    sqlite3_finalize(st);
    store_reader_put(srv->store, db);
    if (in <= 0) return in == 0 ? ENOENT : EIO;
    char path[1200];
    blob_path(srv->cfg->data_dir, sha, path, sizeof path);
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) return errno;
    struct stat st2;
    if (fstat(*fd, &st2) < 0) {
        int e = errno;
        close(*fd);
        *fd = -1;
        return e;
    }
    *size = (uint64_t)st2.st_size;
    return 0;
}

/* what the space does not reference is missing, whatever is on disk */
int blobs_missing_json(struct server *srv, int64_t space_id, char (*h)[65], size_t n, struct buf *out)
{
    sqlite3 *db = store_reader_get(srv->store);
    if (!db) return -1;
    bool failed = false;
    sqlite3_stmt *st = NULL;
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    buf_puts(out, "{\"missing\":[");
    int k = 0;
    for (size_t i = 0; i < n && !failed; i++) {
        int in = blobs_in_space(db, &st, space_id, h[i]);
        if (in < 0) failed = true;
        if (in != 0) continue;
        if (k++) buf_putc(out, ',');
        json_cstr(out, h[i]);
    }
    buf_puts(out, "]}");
    sqlite3_finalize(st);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    store_reader_put(srv->store, db);
    return failed ? -1 : 0;
}
