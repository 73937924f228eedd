/* blobs.c - SPEC §9 file blobs: the bytes in a content-addressed store
 * under DATA/blobs/<first two hex>/<sha256>, shared by every space; which
 * space may see which blob in the table space_blobs(sha256, space_id).
 *
 * A blob is visible in a space (GET, HEAD, POST /blobs/missing, "_blobs" of
 * an entity write) only if the space references it: it was uploaded to that
 * space or arrived there by sync. The bytes stay deduplicated, but a space
 * gets a reference only from someone who sent the bytes: an upload of a blob
 * already on disk is still received whole and hash-checked.
 *
 * PUT streams the body to a temp file on the threadpool, hashing as it
 * writes; a body whose sha256 is the name is fsynced and renamed into place
 * (over an existing copy: same bytes), then a writer op records the
 * reference, and only then is the client answered (201 when the reference is
 * new to the space, 200 when the space had it). A mismatch is 422 and leaves
 * nothing. GET/HEAD check the reference, then stream the file (with Range).
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
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "api/util.h"
#include "net/filestream.h"
#include "net/http.h"
#include "core/jobs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "net/server.h"
#include "store/store.h"
#include "store/writer.h"

#define BLOB_PENDING_MAX (1u << 20)

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

/* ---- PUT ------------------------------------------------------------------ */

/* The reference, recorded once the file is in place (writer thread); the
 * client is answered after it commits. Holds the placement's pin. */
struct ref_op {
    struct wop op;
    struct server *srv;
    char space[64], sha[65];
    uint64_t size;
    bool added;
};

static int ref_apply(struct wtx *tx, struct wop *op)
{
    struct ref_op *ro = container_of(op, struct ref_op, op);
    struct space_stats *sp = wtx_space(tx, ro->space);
    if (!sp) return wop_fail(op, 404, "space_not_found", "no space named '%s'", ro->space);
    if (blobs_ref_add(tx, sp->id, ro->sha, &ro->added) < 0)
        return wop_fail(op, 500, "storage_error", "recording the blob failed: %s", sqlite3_errmsg(wtx_db(tx)));
    return 0;
}

static void ref_done(struct wop *op, struct http_req *r)
{
    struct ref_op *ro = container_of(op, struct ref_op, op);
    blob_unpin(ro->srv, ro->sha);    /* committed (or failed): the reference decides now */
    if (r) {
        if (op->status) {
            api_send_wop_error(r, op);
        } else {
            struct buf b;
            buf_init(&b);
            buf_puts(&b, "{\"sha256\":");
            json_cstr(&b, ro->sha);
            json_kv_u64(&b, "size", ro->size);
            json_kv_bool(&b, "created", ro->added);
            buf_putc(&b, '}');
            http_send_json(r, ro->added ? 201 : 200, &b);
        }
    }
    free(ro);
}

struct upload {
    struct job job;
    char space[64], sha[65], tmp[1200], dir[1200];
    int fd;
    EVP_MD_CTX *md;
    struct buf pending, writing;
    bool busy, ended, paused, finalizing, released;
    int err;
    bool mismatch, placed;           /* placed: in place and pinned, reference not yet asked for */
    uint64_t size;
    char got[65];
};

static void upload_free_now(struct upload *u)
{
    if (u->fd >= 0) close(u->fd);
    if (!u->finalizing || u->err || u->mismatch) unlink(u->tmp);
    if (u->md) EVP_MD_CTX_free(u->md);
    buf_free(&u->pending);
    buf_free(&u->writing);
    free(u);
}

static void upload_free(void *p)
{
    struct upload *u = p;
    if (u->busy) {
        u->released = true;          /* the job frees it */
        return;
    }
    upload_free_now(u);
}

static void upload_work(struct job *j)
{
    struct upload *u = container_of(j, struct upload, job);
    if (u->fd < 0) {
        char tdir[1200];
        snprintf(tdir, sizeof tdir, "%s", u->tmp);
        char *slash = strrchr(tdir, '/');
        if (slash) *slash = '\0';
        mkdir_p(u->dir, 0700);
        mkdir_p(tdir, 0700);
        u->fd = open(u->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (u->fd < 0) { u->err = errno; return; }
    }
    if ((u->err = write_full(u->fd, u->writing.data, u->writing.len)) != 0) return;
    EVP_DigestUpdate(u->md, u->writing.data, u->writing.len);
    u->size += u->writing.len;
    if (!u->finalizing) return;
    unsigned char md[32];
    unsigned int l = 32;
    EVP_DigestFinal_ex(u->md, md, &l);
    hex_encode(u->got, md, 32);
    if (strcmp(u->got, u->sha) != 0) {
        u->mismatch = true;
        return;
    }
    /* the same steps whether the bytes are on disk already or not (for
     * another space, perhaps): the answer's timing does not tell */
    if (fsync(u->fd) < 0) { u->err = errno; return; }
    close(u->fd);
    u->fd = -1;
    int rc = blob_place(job_server(j), u->tmp, u->sha, NULL);
    if (rc < 0) { u->err = -rc; return; }
    u->placed = true;
}

static void upload_pump(struct http_req *r);

/* Asks the writer for the reference; the pin goes with it. r NULL: the
 * client left, but it sent the bytes: the reference is recorded anyway. */
static void upload_ref(struct server *srv, struct upload *u, struct http_req *r)
{
    struct ref_op *ro = xcalloc(1, sizeof *ro);
    ro->srv = srv;
    snprintf(ro->space, sizeof ro->space, "%s", u->space);
    memcpy(ro->sha, u->sha, 65);
    ro->size = u->size;
    u->placed = false;
    int rc = r ? api_write(r, &ro->op, ref_apply, ref_done) : writer_submit(srv->writer, &ro->op, NULL, ref_apply, ref_done);
    if (rc < 0) {
        blob_unpin(srv, ro->sha);   /* unreferenced: it goes at the next start unless referenced by then */
        free(ro);
    }
}

static void upload_done(struct job *j, struct http_req *r)
{
    struct upload *u = container_of(j, struct upload, job);
    u->busy = false;
    buf_reset(&u->writing);
    if (u->placed) upload_ref(job_server(j), u, u->released ? NULL : r);
    if (u->released) {
        upload_free_now(u);
        return;
    }
    if (!r) return;
    if (u->err) {
        http_send_error(r, 500, "storage_error", NULL, "storing the blob failed: %s", strerror(u->err));
        return;
    }
    if (u->finalizing) {
        if (u->mismatch) {
            char extra[100];
            snprintf(extra, sizeof extra, "\"sha256\":\"%s\"", u->got);
            http_send_error(r, 422, "hash_mismatch", extra, "the body's sha256 is not the blob's name; nothing was kept");
        }
        return;                      /* else ref_done answers */
    }
    upload_pump(r);
}

static void upload_pump(struct http_req *r)
{
    struct upload *u = r->ctx;
    if (u->busy || u->err || u->mismatch) return;
    if (u->pending.len || (u->ended && !u->finalizing)) {
        struct buf t = u->writing;
        u->writing = u->pending;
        u->pending = t;
        buf_reset(&u->pending);
        if (u->ended) u->finalizing = true;
        u->busy = true;
        job_submit(&r->srv->jobs, &u->job, r, upload_work, upload_done);
    }
    if (u->paused && u->pending.len < BLOB_PENDING_MAX / 2) {
        u->paused = false;
        http_body_resume(r);
    }
}

static int upload_on_body(struct http_req *r, const char *data, size_t len)
{
    struct upload *u = r->ctx;
    buf_append(&u->pending, data, len);
    if (!u->busy && u->pending.len >= 64 * 1024) upload_pump(r);
    if (u->pending.len >= BLOB_PENDING_MAX) {
        u->paused = true;
        return 1;
    }
    return 0;
}

static void upload_on_end(struct http_req *r)
{
    struct upload *u = r->ctx;
    u->ended = true;
    upload_pump(r);
}

void api_blob_put(struct http_req *r)
{
    if (!api_space(r)) return;
    struct upload *u = xcalloc(1, sizeof *u);
    u->fd = -1;
    snprintf(u->space, sizeof u->space, "%s", r->match.params.space);
    snprintf(u->sha, sizeof u->sha, "%s", r->match.params.sha256);
    snprintf(u->dir, sizeof u->dir, "%s/blobs/%.2s", r->srv->cfg->data_dir, u->sha);
    char rnd[27];
    ulid_make(rnd, now_ms_wall());
    snprintf(u->tmp, sizeof u->tmp, "%s/blobs/tmp/%s.tmp", r->srv->cfg->data_dir, rnd);
    u->md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(u->md, sha256_md(), NULL);
    r->ctx = u;
    r->ctx_free = upload_free;
    r->on_body = upload_on_body;
    r->on_body_end = upload_on_end;
}

/* ---- GET / HEAD with Range ----------------------------------------------- */

struct open_job {
    struct job job;
    int64_t space_id;
    char sha[65], path[1200];
    int fd;
    uint64_t size;
    int err;
};

static void open_work(struct job *j)
{
    struct open_job *o = container_of(j, struct open_job, job);
    /* another space's blob is not there, just like one nobody uploaded */
    sqlite3 *db = store_reader_get(job_server(j)->store);
    sqlite3_stmt *st = NULL;
    int in = db ? blobs_in_space(db, &st, o->space_id, o->sha) : -1;
    sqlite3_finalize(st);
    store_reader_put(job_server(j)->store, db);
    if (in <= 0) {
        o->err = in == 0 ? ENOENT : EIO;
        return;
    }
    o->fd = open(o->path, O_RDONLY | O_CLOEXEC);
    if (o->fd < 0) { o->err = errno; return; }
    struct stat st2;
    if (fstat(o->fd, &st2) < 0) { o->err = errno; close(o->fd); o->fd = -1; return; }
    o->size = (uint64_t)st2.st_size;
}
/* "bytes=a-b", "bytes=a-", "bytes=-n" (one range). 0 ok, -1 unsatisfiable,
 * 1 ignored (malformed: serve the whole file, as RFC 9110 allows). */
static int parse_range(const char *v, size_t l, uint64_t size, uint64_t *from, uint64_t *len)
{
    if (l < 7 || strncmp(v, "bytes=", 6) != 0 || memchr(v, ',', l)) return 1;
    const char *p = v + 6, *end = v + l, *dash = memchr(p, '-', (size_t)(end - p));
    if (!dash) return 1;
    uint64_t a = 0, b = 0;
    bool has_a = dash > p, has_b = dash + 1 < end;
    if (has_a && parse_u64(p, (size_t)(dash - p), UINT64_MAX, &a) < 0) return 1;
    if (has_b && parse_u64(dash + 1, (size_t)(end - dash - 1), UINT64_MAX, &b) < 0) return 1;
    if (!has_a && !has_b) return 1;
    if (!has_a) {                    /* the last b bytes */
        if (b == 0 || size == 0) return -1;
        *from = b >= size ? 0 : size - b;
        *len = size - *from;
        return 0;
    }
    if (a >= size) return -1;
    if (!has_b || b >= size) b = size - 1;
    if (b < a) return 1;
    *from = a;
    *len = b - a + 1;
    return 0;
}

static void open_done(struct job *j, struct http_req *r)
{
    struct open_job *o = container_of(j, struct open_job, job);
    int fd = o->fd;
    if (!r) {
        if (fd >= 0) close(fd);
        free(o);
        return;
    }
    if (o->err) {
        if (o->err == ENOENT) http_send_error(r, 404, "not_found", NULL, "no blob %s", r->match.params.sha256);
        else http_send_error(r, 500, "storage_error", NULL, "opening the blob failed: %s", strerror(o->err));
        free(o);
        return;
    }
    uint64_t size = o->size, from = 0, len = size;
    free(o);
    http_add_header(r, "ETag", "\"%s\"", r->match.params.sha256);
    http_add_header(r, "Accept-Ranges", "bytes");
    http_add_header(r, "Cache-Control", "private, max-age=31536000, immutable");
    size_t il;
    const char *inm = http_header(r, "If-None-Match", &il);
    if (inm && etag_list_match(inm, il, r->match.params.sha256, true)) {
        close(fd);
        http_send_empty(r, 304);
        return;
    }
    int status = 200;
    size_t rl;
    const char *range = http_header(r, "Range", &rl);
    if (range) {
        int pr = parse_range(range, rl, size, &from, &len);
        if (pr < 0) {
            close(fd);
            http_add_header(r, "Content-Range", "bytes */%llu", (unsigned long long)size);
            http_send_error(r, 416, "range_not_satisfiable", NULL, "the range is outside the blob (%llu bytes)",
                            (unsigned long long)size);
            return;
        }
        if (pr == 0) {
            status = 206;
            http_add_header(r, "Content-Range", "bytes %llu-%llu/%llu", (unsigned long long)from,
                            (unsigned long long)(from + len - 1), (unsigned long long)size);
        } else {
            from = 0;
            len = size;
        }
    }
    filestream_start(r, fd, status, "application/octet-stream", from, (int64_t)len, false, NULL);
}

void api_blob_get(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct open_job *o = xcalloc(1, sizeof *o);
    o->fd = -1;
    o->space_id = sp->st.id;
    snprintf(o->sha, sizeof o->sha, "%s", r->match.params.sha256);
    blob_path(r->srv->cfg->data_dir, o->sha, o->path, sizeof o->path);
    job_submit(&r->srv->jobs, &o->job, r, open_work, open_done);
}

/* ---- POST /blobs/missing ------------------------------------------------ */

#define MISSING_MAX 10000

struct missing_job {
    struct job job;
    int64_t space_id;
    char (*h)[65];
    size_t n;
    bool failed;
    struct buf out;
};

/* what the space does not reference is missing, whatever is on disk */
static void missing_work(struct job *j)
{
    struct missing_job *m = container_of(j, struct missing_job, job);
    sqlite3 *db = store_reader_get(job_server(j)->store);
    if (!db) {
        m->failed = true;
        return;
    }
    sqlite3_stmt *st = NULL;
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    buf_puts(&m->out, "{\"missing\":[");
    int k = 0;
    for (size_t i = 0; i < m->n && !m->failed; i++) {
        int in = blobs_in_space(db, &st, m->space_id, m->h[i]);
        if (in < 0) m->failed = true;
        if (in != 0) continue;
        if (k++) buf_putc(&m->out, ',');
        json_cstr(&m->out, m->h[i]);
    }
    buf_puts(&m->out, "]}");
    sqlite3_finalize(st);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    store_reader_put(job_server(j)->store, db);
}

static void missing_done(struct job *j, struct http_req *r)
{
    struct missing_job *m = container_of(j, struct missing_job, job);
    if (r) {
        if (m->failed) http_send_error(r, 500, "storage_error", NULL, "reading the space's blobs failed");
        else http_send_json(r, 200, &m->out);
    }
    buf_free(&m->out);
    free(m->h);
    free(m);
}

static const char *const missing_members[] = {"hashes", NULL};

void api_blobs_missing(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    json_t *v = api_body_members(r, missing_members);
    if (!v) return;
    json_t *arr = json_object_get(v, "hashes");
    if (!json_is_array(arr) || json_array_size(arr) > MISSING_MAX) {
        json_decref(v);
        http_send_error(r, 400, "invalid_body", NULL, "expected {\"hashes\":[...]} with at most %d sha256", MISSING_MAX);
        return;
    }
    struct missing_job *m = xcalloc(1, sizeof *m);
    m->space_id = sp->st.id;
    m->h = xcalloc(json_array_size(arr) + 1, sizeof *m->h);
    size_t i;
    json_t *h;
    json_array_foreach(arr, i, h) {
        const char *s = json_name(h);
        if (!s || !name_sha256_valid(s, strlen(s))) {
            json_decref(v);
            free(m->h);
            free(m);
            http_send_error(r, 400, "invalid_name", NULL, "hashes must be sha256 in lower-case hex");
            return;
        }
        memcpy(m->h[m->n++], s, 65);
    }
    json_decref(v);
    job_submit(&r->srv->jobs, &m->job, r, missing_work, missing_done);
}
