/* remote_fetch.c - the way back from the remote (see remote.h): listing
 * from the manifests, and a fetch that streams an object down, decrypts
 * it, and checks it three ways (the object's sha256 and size from the
 * manifest, the file in full, the file's own sha256) before it is given
 * its name. The import route records what a fetch brought.
 *
 * A fetch's body arrives on the loop (curl's write callback) into a
 * pending buffer; one pool job at a time hashes, decrypts and writes it
 * (the transfer pauses past FETCH_PENDING_MAX), the last one checks. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "net/http.h"
#include "net/server.h"
#include "remote_int.h"
#include "svc/import.h"

#define FETCH_PENDING_MAX (4u << 20)
#define LIST_MAX_MANIFESTS 2000

static bool ends_with(const char *s, const char *suffix)
{
    size_t l = strlen(s), k = strlen(suffix);
    return l >= k && !strcmp(s + l - k, suffix);
}

int remote_key_check(const struct rtarget *t, const char *key, char *mkey, size_t cap, char *why, size_t whylen)
{
    size_t pl = strlen(t->prefix), kl = strlen(key);
    if (kl > 480 || strstr(key, "..") || strstr(key, "//") || key[0] == '/') {
        snprintf(why, whylen, "'remote' is not a key of this remote (see GET /api/v1/remote/snapshots)");
        return -1;
    }
    for (const char *p = key; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '?' || *p == '#' || *p == '\\') {
            snprintf(why, whylen, "'remote' has a character a key cannot have");
            return -1;
        }
    if (pl && (strncmp(key, t->prefix, pl) || key[pl] != '/')) {
        snprintf(why, whylen, "'remote' is not under this remote's prefix '%s/'", t->prefix);
        return -1;
    }
    const char *suffix = ends_with(key, RT_DATA_SUFFIX RT_AGE_SUFFIX) ? RT_DATA_SUFFIX RT_AGE_SUFFIX
                         : ends_with(key, RT_DATA_SUFFIX)             ? RT_DATA_SUFFIX
                                                                      : NULL;
    if (!suffix) {
        snprintf(why, whylen, "'remote' must name a snapshot object (…%s or …%s%s)", RT_DATA_SUFFIX, RT_DATA_SUFFIX,
                 RT_AGE_SUFFIX);
        return -1;
    }
    snprintf(mkey, cap, "%.*s" RT_MANIFEST_SUFFIX, (int)(kl - strlen(suffix)), key);
    return 0;
}

/* ---- fetch -------------------------------------------------------------------- */

struct fetch {
    struct job job;
    struct server *srv;
    char key[512], mkey[512], tmp[1200], path[1200];
    remote_fetch_cb cb;
    void *arg;
    struct rhttp *h;
    /* from the manifest */
    char want_sha[65], instance[27], space[64], kind[16];
    uint64_t want_bytes;
    bool enc;
    char *sealed;                    /* base64 of the sealed members, or NULL */
    char meta_sha[65];               /* the file's own sha256 (plain manifests) */
    /* the stream */
    struct buf pending, writing, plain;
    bool busy, ended, paused, finalizing, done;
    int fd;
    struct age_dec dec;
    EVP_MD_CTX *sha;
    uint64_t got;
    /* out (worker) */
    struct err e;
    struct snap_summary sum;
};

static void fetch_free(struct fetch *f)
{
    if (f->fd >= 0) close(f->fd);
    if (!f->done) unlink(f->tmp);
    age_dec_free(&f->dec);
    EVP_MD_CTX_free(f->sha);
    buf_free(&f->pending);
    buf_free(&f->writing);
    buf_free(&f->plain);
    free(f->sealed);
    free(f->sum.counts_json);
    free(f->sum.blobs_json);
    free(f);
}

static void fetch_end(struct fetch *f)
{
    if (f->h) rhttp_cancel(f->h), f->h = NULL;
    struct remote_fetched out = {.manifest_instance = f->instance, .manifest_space = f->space,
                                 .manifest_kind = f->kind};
    out.sum = f->sum;
    f->cb(f->arg, err_failed(&f->e) ? &f->e : NULL, err_failed(&f->e) ? NULL : &out);
    fetch_free(f);
}

static void hexs(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

/* the sealed members, opened with the identities: the file's sha256 */
static int open_sealed(struct fetch *f, const struct rtarget *t)
{
    size_t n = strlen(f->sealed);
    unsigned char *raw = xmalloc(n + 4);
    int len = EVP_DecodeBlock(raw, (const unsigned char *)f->sealed, (int)n);
    if (len < 0) { free(raw); return -1; }
    while (n && f->sealed[n - 1] == '=') { n--; len--; }
    struct age_dec d;
    struct buf out;
    char err[200];
    buf_init(&out);
    age_dec_init(&d, t->ids, t->nids);
    int rc = age_dec_update(&d, raw, (size_t)len, &out, err, sizeof err) == 0 && age_dec_final(&d, &out, err, sizeof err) == 0 ? 0 : -1;
    age_dec_free(&d);
    free(raw);
    json_t *m = rc == 0 ? json_loadb(out.data ? out.data : "", out.len, 0, NULL) : NULL;
    const char *sha = m ? json_string_value(json_object_get(m, "sha256")) : NULL;
    if (sha && strlen(sha) == 64) snprintf(f->meta_sha, sizeof f->meta_sha, "%s", sha);
    else rc = -1;
    json_decref(m);
    buf_free(&out);
    return rc;
}

static void fetch_finish(struct fetch *f, const struct rtarget *t)
{
    char err[300];
    if (f->enc) {
        buf_reset(&f->plain);
        if (age_dec_final(&f->dec, &f->plain, err, sizeof err) < 0) {
            err_set(&f->e, 422, "snapshot_corrupt", "the remote object does not decrypt: %s; nothing was imported", err);
            return;
        }
        if (write_full(f->fd, f->plain.data, f->plain.len) != 0) goto io;
    }
    unsigned char md[32];
    unsigned int l = 32;
    char got[65];
    EVP_DigestFinal_ex(f->sha, md, &l);
    hexs(md, 32, got);
    if (f->got != f->want_bytes || strcmp(got, f->want_sha)) {
        err_set(&f->e, 422, "snapshot_corrupt",
                "the remote object is not the one its manifest describes (%llu bytes, sha256 %.12s…; the manifest says "
                "%llu bytes, %.12s…); nothing was imported",
                (unsigned long long)f->got, got, (unsigned long long)f->want_bytes, f->want_sha);
        return;
    }
    if (fsync(f->fd) < 0) goto io;
    close(f->fd);
    f->fd = -1;
    if (f->sealed && open_sealed(f, t) < 0) {
        err_set(&f->e, 422, "snapshot_corrupt", "the manifest's sealed members do not decrypt; nothing was imported");
        return;
    }
    if (snap_verify_file(f->tmp, &f->sum, err, sizeof err) < 0) {
        err_set(&f->e, 422, "snapshot_corrupt", "the remote snapshot is not a valid snapshot file: %s; nothing was imported", err);
        return;
    }
    if (f->meta_sha[0] && strcmp(f->meta_sha, f->sum.sha256)) {
        err_set(&f->e, 422, "snapshot_corrupt", "the snapshot's sha256 is not the one recorded when it was uploaded; nothing was imported");
        return;
    }
    if (rename(f->tmp, f->path) < 0) goto io;
    char dir[1200];
    snprintf(dir, sizeof dir, "%s", f->path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) fsync(dfd), close(dfd);
    }
    f->done = true;
    return;
io:
    err_set(&f->e, 500, "storage_error", "writing the fetched snapshot failed: %s", strerror(errno));
}

static void fetch_work(struct job *j)
{
    struct fetch *f = container_of(j, struct fetch, job);
    const struct rtarget *t = remote_target(f->srv);
    if (f->fd < 0) {
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (f->fd < 0) {
            err_set(&f->e, 500, "storage_error", "cannot write the fetched snapshot: %s", strerror(errno));
            return;
        }
    }
    EVP_DigestUpdate(f->sha, f->writing.data, f->writing.len);
    f->got += f->writing.len;
    if (f->enc) {
        char err[300];
        buf_reset(&f->plain);
        if (age_dec_update(&f->dec, f->writing.data, f->writing.len, &f->plain, err, sizeof err) < 0) {
            err_set(&f->e, 422, "snapshot_corrupt", "the remote object does not decrypt: %s; nothing was imported", err);
            return;
        }
        if (write_full(f->fd, f->plain.data, f->plain.len) != 0) {
            err_set(&f->e, 500, "storage_error", "writing the fetched snapshot failed: %s", strerror(errno));
            return;
        }
    } else if (write_full(f->fd, f->writing.data, f->writing.len) != 0) {
        err_set(&f->e, 500, "storage_error", "writing the fetched snapshot failed: %s", strerror(errno));
        return;
    }
    if (f->finalizing) fetch_finish(f, t);
}

static void fetch_pump(struct fetch *f);

static void fetch_work_done(struct job *j, struct http_req *r)
{
    struct fetch *f = container_of(j, struct fetch, job);
    UNUSED(r);
    f->busy = false;
    buf_reset(&f->writing);
    if (err_failed(&f->e) || (f->finalizing && f->done)) {
        fetch_end(f);
        return;
    }
    fetch_pump(f);
}

static void fetch_pump(struct fetch *f)
{
    if (f->busy) return;
    if (f->pending.len || (f->ended && !f->finalizing)) {
        struct buf t = f->writing;
        f->writing = f->pending;
        f->pending = t;
        buf_reset(&f->pending);
        if (f->ended) f->finalizing = true;
        f->busy = true;
        job_submit(&f->srv->jobs, &f->job, NULL, fetch_work, fetch_work_done);
    }
    if (f->paused && f->h && f->pending.len < FETCH_PENDING_MAX / 2) {
        f->paused = false;
        rhttp_resume(f->h);
    }
}

static int fetch_on_data(void *arg, const char *p, size_t n)
{
    struct fetch *f = arg;
    if (f->pending.len >= FETCH_PENDING_MAX) {
        f->paused = true;
        return 1;
    }
    buf_append(&f->pending, p, n);
    if (f->pending.len >= (1u << 20)) fetch_pump(f);
    return 0;
}

static void data_done(void *arg, const struct rhttp_result *res)
{
    struct fetch *f = arg;
    f->h = NULL;
    if (res->status != 200) {
        char msg[400];
        rt_status_msg(msg, sizeof msg, "downloading the remote snapshot", res->status, res->error);
        if (res->status == 404) err_set(&f->e, 404, "not_found", "the remote has no object %s", f->key);
        else err_set(&f->e, 502, "remote_error", "%s", msg);
        if (!f->busy) fetch_end(f);
        return;                      /* else the job's done ends it */
    }
    f->ended = true;
    fetch_pump(f);
}

static void manifest_done(void *arg, const struct rhttp_result *res)
{
    struct fetch *f = arg;
    f->h = NULL;
    const struct rtarget *t = remote_target(f->srv);
    if (res->status != 200) {
        char msg[400];
        rt_status_msg(msg, sizeof msg, "reading the remote manifest", res->status, res->error);
        if (res->status == 404) err_set(&f->e, 404, "not_found", "the remote has no snapshot %s (no manifest beside it)", f->key);
        else err_set(&f->e, 502, "remote_error", "%s", msg);
        fetch_end(f);
        return;
    }
    json_t *m = json_loadb(res->body->data ? res->body->data : "", res->body->len, 0, NULL);
    const char *key = m ? json_string_value(json_object_get(m, "key")) : NULL;
    const char *sha = m ? json_string_value(json_object_get(m, "object_sha256")) : NULL;
    json_t *bytes = m ? json_object_get(m, "object_bytes") : NULL;
    if (!m || !key || strcmp(key, f->key) || !sha || strlen(sha) != 64 || !json_is_integer(bytes)) {
        err_set(&f->e, 422, "snapshot_corrupt", "the remote manifest of %s is not valid; nothing was imported", f->key);
        json_decref(m);
        fetch_end(f);
        return;
    }
    snprintf(f->want_sha, sizeof f->want_sha, "%s", sha);
    f->want_bytes = (uint64_t)json_integer_value(bytes);
    f->enc = json_is_true(json_object_get(m, "encrypted"));
    const char *v;
    if ((v = json_string_value(json_object_get(m, "instance_id")))) snprintf(f->instance, sizeof f->instance, "%s", v);
    if ((v = json_string_value(json_object_get(m, "space")))) snprintf(f->space, sizeof f->space, "%s", v);
    if ((v = json_string_value(json_object_get(m, "kind")))) snprintf(f->kind, sizeof f->kind, "%s", v);
    if ((v = json_string_value(json_object_get(m, "sealed_meta")))) f->sealed = xstrdup(v);
    if ((v = json_string_value(json_object_get(json_object_get(m, "meta"), "sha256"))) && strlen(v) == 64)
        snprintf(f->meta_sha, sizeof f->meta_sha, "%s", v);
    json_decref(m);
    if (f->enc != ends_with(f->key, RT_AGE_SUFFIX)) {
        err_set(&f->e, 422, "snapshot_corrupt", "the remote manifest of %s is not valid; nothing was imported", f->key);
        fetch_end(f);
        return;
    }
    if (f->enc && !t->nids) {
        err_set(&f->e, 400, "remote_identity_missing",
                "%s is encrypted: start snapsync with --remote-identity FILE (the age identity of a recipient)", f->key);
        fetch_end(f);
        return;
    }
    age_dec_init(&f->dec, t->ids, t->nids);
    struct rhttp_req q = {.upload_size = -1, .write = fetch_on_data, .done = data_done, .arg = f};
    if (!(f->h = rt_request(f->srv, t, "GET", f->key, NULL, &q))) {
        err_set(&f->e, 502, "remote_error", "the download could not be started");
        fetch_end(f);
    }
}

int remote_fetch(struct server *srv, const char *key, const char *tmp_path, const char *path, remote_fetch_cb cb,
                 void *arg)
{
    const struct rtarget *t = remote_target(srv);
    if (!t) return -1;
    struct fetch *f = xcalloc(1, sizeof *f);
    f->srv = srv;
    f->fd = -1;
    f->cb = cb;
    f->arg = arg;
    f->done = false;
    err_clear(&f->e);
    snprintf(f->key, sizeof f->key, "%s", key);
    char why[200];
    if (remote_key_check(t, key, f->mkey, sizeof f->mkey, why, sizeof why) < 0) {
        free(f);
        return -1;
    }
    snprintf(f->tmp, sizeof f->tmp, "%s", tmp_path);
    snprintf(f->path, sizeof f->path, "%s", path);
    f->sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(f->sha, EVP_sha256(), NULL);
    buf_init(&f->pending);
    buf_init(&f->writing);
    buf_init(&f->plain);
    age_dec_init(&f->dec, NULL, 0);
    struct rhttp_req q = {.upload_size = -1, .max_response = RT_MAX_MANIFEST, .done = manifest_done, .arg = f};
    if (!(f->h = rt_request(srv, t, "GET", f->mkey, NULL, &q))) {
        fetch_free(f);
        return -1;
    }
    return 0;
}

/* ---- import --------------------------------------------------------------------- */

struct rimport {
    struct server *srv;
    struct http_req *r;
    snap_answer_fn answer;
    char id[27], space[64], actor[32], remote[56], key[512];
    struct snap_summary sum;         /* copies for the record */
};

static void rimport_free(struct rimport *ri)
{
    snap_set_busy(ri->srv, ri->space, false);
    if (ri->r) http_req_unref(ri->r);
    free(ri->sum.counts_json);
    free(ri->sum.blobs_json);
    free(ri);
}

static void rimport_recorded(void *arg, bool ok)
{
    struct rimport *ri = arg;
    if (ok) log_info("remote_imported", "\"space\":\"%s\",\"snapshot\":\"%s\",\"key\":\"%s\"", ri->space, ri->id, ri->key);
    rimport_free(ri);
}

static struct http_req *alive(struct http_req *r) { return r && http_job_hooks.alive(r) ? r : NULL; }

static void rimport_fetched(void *arg, const struct err *e, const struct remote_fetched *f)
{
    struct rimport *ri = arg;
    struct http_req *r = alive(ri->r);
    if (e) {
        log_warn("remote_import_failed", "\"space\":\"%s\",\"key\":\"%s\",\"error\":\"%s\"", ri->space, ri->key, e->msg);
        if (r) snap_answer_err(ri->answer, r, 0, e->status, e->code, NULL, "%s", e->msg);
        rimport_free(ri);
        return;
    }
    ri->sum = f->sum;
    ri->sum.counts_json = f->sum.counts_json ? xstrdup(f->sum.counts_json) : NULL;
    ri->sum.blobs_json = f->sum.blobs_json ? xstrdup(f->sum.blobs_json) : NULL;
    char note[700];
    snprintf(note, sizeof note, "imported from the remote: %s (space %s, instance %s)", ri->key, f->sum.space,
             f->sum.instance_id);
    struct snap_import_rec rec = {.id = ri->id, .space = ri->space, .actor = ri->actor, .remote = ri->remote,
                                  .note = note, .level = -1, .sum = &ri->sum};
    if (snap_import_record(ri->srv, r, &rec, ri->answer, rimport_recorded, ri) < 0) {
        if (r) snap_answer_err(ri->answer, r, 1, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        snap_remove_file(ri->srv, ri->id);
        rimport_free(ri);
    }
}

void remote_import_start(struct server *srv, struct http_req *r, const struct remote_import_req *q,
                         snap_answer_fn answer)
{
    const struct rtarget *t = remote_target(srv);
    char mkey[600], why[300];
    if (!t) {
        snap_set_busy(srv, q->space, false);
        snap_answer_err(answer, r, 0, 409, "remote_not_configured", NULL,
                        "no remote is configured: start snapsync with --remote (and the same credentials)");
        return;
    }
    if (remote_key_check(t, q->key, mkey, sizeof mkey, why, sizeof why) < 0) {
        snap_set_busy(srv, q->space, false);
        snap_answer_err(answer, r, 0, 400, "invalid_parameter", NULL, "%s", why);
        return;
    }
    struct rimport *ri = xcalloc(1, sizeof *ri);
    ri->srv = srv;
    ri->answer = answer;
    ri->r = r;
    http_req_ref(r);
    ulid_make(ri->id, now_ms_wall());
    snprintf(ri->space, sizeof ri->space, "%s", q->space);
    snprintf(ri->actor, sizeof ri->actor, "%s", q->actor);
    snprintf(ri->remote, sizeof ri->remote, "%s", q->remote ? q->remote : "");
    snprintf(ri->key, sizeof ri->key, "%s", q->key);
    char tmp[1200], path[1200], dir[1100];
    snprintf(dir, sizeof dir, "%s/snapshots", srv->cfg->data_dir);
    mkdir(dir, 0700);
    snap_file(srv->cfg->data_dir, ri->id, true, tmp, sizeof tmp);
    snap_file(srv->cfg->data_dir, ri->id, false, path, sizeof path);
    if (remote_fetch(srv, q->key, tmp, path, rimport_fetched, ri) < 0) {
        snap_answer_err(answer, r, 0, 502, "remote_error", NULL, "the download could not be started");
        rimport_free(ri);
    }
}

/* ---- list ------------------------------------------------------------------------ */

struct lister {
    struct server *srv;
    remote_list_cb cb;
    void *arg;
    char space[64], instance[64];
    struct buf token;                /* S3 continuation token */
    char **dirs;                     /* WebDAV: collections still to read */
    size_t ndirs, capdirs;
    char **keys;                     /* manifests to read */
    size_t nkeys, capkeys, next;
    json_t *out;
    struct err e;
};

static void push_str(char ***v, size_t *n, size_t *cap, const char *s)
{
    if (*n == *cap) *v = xrealloc(*v, (*cap = *cap ? *cap * 2 : 16) * sizeof **v);
    (*v)[(*n)++] = xstrdup(s);
}

static void lister_free(struct lister *l)
{
    for (size_t i = 0; i < l->ndirs; i++) free(l->dirs[i]);
    for (size_t i = 0; i < l->nkeys; i++) free(l->keys[i]);
    free(l->dirs);
    free(l->keys);
    buf_free(&l->token);
    json_decref(l->out);
    free(l);
}

static int by_id_desc(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "snapshot"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "snapshot"));
    return strcmp(y ? y : "", x ? x : "");
}

static void list_end(struct lister *l)
{
    const struct rtarget *t = remote_target(l->srv);
    if (err_failed(&l->e)) {
        l->cb(l->arg, &l->e, NULL);
        lister_free(l);
        return;
    }
    size_t n = json_array_size(l->out);
    json_t **v = xmalloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = json_array_get(l->out, i);
    qsort(v, n, sizeof *v, by_id_desc);
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"remote\":");
    json_cstr(&b, t->display);
    buf_puts(&b, ",\"snapshots\":[");
    for (size_t i = 0; i < n; i++) {
        char *s = json_dumps(v[i], JSON_COMPACT | JSON_ENSURE_ASCII);
        if (i) buf_putc(&b, ',');
        buf_puts(&b, s);
        free(s);
    }
    buf_puts(&b, "]}");
    free(v);
    l->cb(l->arg, NULL, &b);
    buf_free(&b);
    lister_free(l);
}

/* does a manifest key fit the filters? (prefix/instance/space/id.manifest.json) */
static bool key_wanted(const struct lister *l, const struct rtarget *t, const char *key)
{
    if (!ends_with(key, RT_MANIFEST_SUFFIX)) return false;
    const char *rest = key + (t->prefix[0] ? strlen(t->prefix) + 1 : 0);
    const char *s1 = strchr(rest, '/'), *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (!s1 || !s2 || strchr(s2 + 1, '/')) return false;
    if (l->instance[0] && ((size_t)(s1 - rest) != strlen(l->instance) || strncmp(rest, l->instance, (size_t)(s1 - rest))))
        return false;
    if (l->space[0] && ((size_t)(s2 - s1 - 1) != strlen(l->space) || strncmp(s1 + 1, l->space, (size_t)(s2 - s1 - 1))))
        return false;
    return true;
}

static void manifests_next(struct lister *l);

static void one_manifest(void *arg, const struct rhttp_result *res)
{
    struct lister *l = arg;
    if (res->status == 200) {
        json_t *m = json_loadb(res->body->data ? res->body->data : "", res->body->len, 0, NULL);
        if (json_is_object(m) && json_is_string(json_object_get(m, "key"))) {
            json_object_del(m, "sealed_meta");
            json_object_set_new(m, "manifest_key", json_string(l->keys[l->next]));
            json_array_append_new(l->out, m);
        } else {
            json_decref(m);
        }
    } else if (res->status != 404) {         /* 404: removed meanwhile */
        char msg[400];
        rt_status_msg(msg, sizeof msg, "reading a remote manifest", res->status, res->error);
        err_set(&l->e, 502, "remote_error", "%s", msg);
        list_end(l);
        return;
    }
    l->next++;
    manifests_next(l);
}

static void manifests_next(struct lister *l)
{
    const struct rtarget *t = remote_target(l->srv);
    if (l->next >= l->nkeys || l->next >= LIST_MAX_MANIFESTS) {
        list_end(l);
        return;
    }
    struct rhttp_req q = {.upload_size = -1, .max_response = RT_MAX_MANIFEST, .done = one_manifest, .arg = l};
    if (!rt_request(l->srv, t, "GET", l->keys[l->next], NULL, &q)) {
        err_set(&l->e, 502, "remote_error", "the request could not be started");
        list_end(l);
    }
}

static void s3_page(struct lister *l);

static void s3_listed(void *arg, const struct rhttp_result *res)
{
    struct lister *l = arg;
    const struct rtarget *t = remote_target(l->srv);
    if (res->status != 200) {
        char msg[400];
        rt_status_msg(msg, sizeof msg, "listing the remote", res->status, res->error);
        err_set(&l->e, res->status == 404 ? 404 : 502, "remote_error", "%s", msg);
        list_end(l);
        return;
    }
    const char *x = res->body->data ? res->body->data : "";
    size_t len = res->body->len, pos = 0;
    char key[1024], flag[16] = "";
    if (getenv("RDEBUG")) fprintf(stderr, "listed %d %zu %.*s\n", res->status, len, (int)len, x);
    while (rt_xml_next(x, len, &pos, "Key", key, sizeof key) == 0)
        if (key_wanted(l, t, key)) push_str(&l->keys, &l->nkeys, &l->capkeys, key);
    pos = 0;
    rt_xml_next(x, len, &pos, "IsTruncated", flag, sizeof flag);
    char token[1024];
    pos = 0;
    if (!strcmp(flag, "true") && rt_xml_next(x, len, &pos, "NextContinuationToken", token, sizeof token) == 0 &&
        l->nkeys < LIST_MAX_MANIFESTS) {
        buf_reset(&l->token);
        buf_puts(&l->token, token);
        s3_page(l);
        return;
    }
    manifests_next(l);
}

static void s3_page(struct lister *l)
{
    const struct rtarget *t = remote_target(l->srv);
    struct buf qs, p;
    buf_init(&qs);
    buf_init(&p);
    buf_printf(&p, "%s%s%s%s%s%s", t->prefix, t->prefix[0] ? "/" : "", l->instance, l->instance[0] ? "/" : "",
               l->instance[0] ? l->space : "", l->instance[0] && l->space[0] ? "/" : "");
    /* the parameters in the order SigV4's canonical query sorts them */
    if (l->token.len) {
        buf_puts(&qs, "continuation-token=");
        rt_query_escape(&qs, l->token.data);
        buf_putc(&qs, '&');
    }
    buf_puts(&qs, "list-type=2&prefix=");
    rt_query_escape(&qs, p.data);
    struct rhttp_req q = {.upload_size = -1, .max_response = 8u << 20, .done = s3_listed, .arg = l};
    if (!rt_request(l->srv, t, "GET", "", qs.data, &q)) {
        err_set(&l->e, 502, "remote_error", "the request could not be started");
        list_end(l);
    }
    buf_free(&qs);
    buf_free(&p);
}

static void dav_next(struct lister *l);

/* an href (absolute URL or path, percent-encoded) as a key */
static void href_key(const char *href, char *out, size_t cap)
{
    const char *p = href;
    const char *s = strstr(p, "://");
    if (s) p = strchr(s + 3, '/') ? strchr(s + 3, '/') : "";
    while (*p == '/') p++;
    size_t j = 0;
    for (; *p && j + 1 < cap; p++) {
        if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char h[3] = {p[1], p[2], 0};
            out[j++] = (char)strtol(h, NULL, 16);
            p += 2;
        } else {
            out[j++] = *p;
        }
    }
    out[j] = '\0';
}

static void dav_listed(void *arg, const struct rhttp_result *res)
{
    struct lister *l = arg;
    const struct rtarget *t = remote_target(l->srv);
    char *dir = l->dirs[--l->ndirs];
    if (res->status == 404) {        /* nothing uploaded there yet */
        free(dir);
        dav_next(l);
        return;
    }
    if (res->status != 207) {
        char msg[400];
        rt_status_msg(msg, sizeof msg, "listing the remote", res->status, res->error);
        err_set(&l->e, 502, "remote_error", "%s", msg);
        free(dir);
        list_end(l);
        return;
    }
    const char *x = res->body->data ? res->body->data : "";
    size_t len = res->body->len, pos = 0;
    char href[1024], key[1024];
    size_t depth = 0;
    for (const char *c = dir + strlen(t->prefix); *c; c++) depth += *c == '/';
    while (rt_xml_next(x, len, &pos, "href", href, sizeof href) == 0) {
        href_key(href, key, sizeof key);
        size_t kl = strlen(key);
        if (kl && key[kl - 1] == '/') {
            /* a collection below this one, down to prefix/instance/space/ */
            if (!strcmp(key, dir) || depth >= 3 || strncmp(key, dir, strlen(dir))) continue;
            push_str(&l->dirs, &l->ndirs, &l->capdirs, key);
        } else if (key_wanted(l, t, key) && l->nkeys < LIST_MAX_MANIFESTS) {
            push_str(&l->keys, &l->nkeys, &l->capkeys, key);
        }
    }
    free(dir);
    dav_next(l);
}

static void dav_next(struct lister *l)
{
    const struct rtarget *t = remote_target(l->srv);
    if (!l->ndirs) {
        manifests_next(l);
        return;
    }
    static const char body[] = "<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\"><D:prop><D:resourcetype/>"
                               "</D:prop></D:propfind>";
    const char *const hdr[] = {"Depth: 1", "Content-Type: application/xml", NULL};
    struct rhttp_req q = {.upload_size = -1, .max_response = 8u << 20, .done = dav_listed, .arg = l,
                          .headers = hdr, .body = body, .body_len = sizeof body - 1};
    if (!rt_request(l->srv, t, "PROPFIND", l->dirs[l->ndirs - 1], NULL, &q)) {
        err_set(&l->e, 502, "remote_error", "the request could not be started");
        list_end(l);
    }
}

int remote_list(struct server *srv, const struct remote_list_req *q, remote_list_cb cb, void *arg)
{
    const struct rtarget *t = remote_target(srv);
    if (!t) return -1;
    struct lister *l = xcalloc(1, sizeof *l);
    l->srv = srv;
    l->cb = cb;
    l->arg = arg;
    l->out = json_array();
    err_clear(&l->e);
    buf_init(&l->token);
    snprintf(l->space, sizeof l->space, "%s", q->space ? q->space : "");
    snprintf(l->instance, sizeof l->instance, "%s", q->instance ? q->instance : "");
    if (t->kind == RT_S3) {
        s3_page(l);
    } else {
        char dir[600];
        snprintf(dir, sizeof dir, "%s%s%s%s%s%s", t->prefix, t->prefix[0] ? "/" : "", l->instance,
                 l->instance[0] ? "/" : "", l->instance[0] ? l->space : "", l->instance[0] && l->space[0] ? "/" : "");
        push_str(&l->dirs, &l->ndirs, &l->capdirs, dir);
        dav_next(l);
    }
    return 0;
}
