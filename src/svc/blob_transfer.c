/* blob_transfer.c - moving the blobs a sync page needs between this server
 * and the peer (see blob_transfer.h).
 *
 * Blob transfers run on a threadpool thread (never the loop): the blobs a
 * page's entities reference that the receiving space lacks, file to file
 * with a blocking curl easy handle, so memory stays flat whatever the
 * blob's size. "Lacks" is per space on both sides: a push asks the peer's
 * space (POST /blobs/missing), a pull asks our space's references -- a blob
 * whose bytes are on disk here for another space still comes from the peer,
 * since the bytes are what entitles a space to a blob.
 */
#include "svc/blob_transfer.h"

#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "core/names.h"
#include "net/server.h"
#include "store/store.h"
#include "svc/blobs.h"

/* A threadpool job that moves blobs: it blocks a pool thread for as long
 * as its transfers take, so at most the gate's cap of them run at once
 * (half the pool, at least one) and the rest wait here, in order: database
 * reads and snapshots always find a thread. */
struct blob_wait {
    struct list link;
    struct job *job;
    job_work_fn work;
    job_done_fn done;
};

void blob_gate_init(struct blob_gate *g, unsigned cap)
{
    list_init(&g->waiting);
    g->cap = cap;
}

void blob_gate_free(struct blob_gate *g)
{
    while (!list_empty(&g->waiting)) {    /* empty once every job ended */
        struct blob_wait *w = container_of(g->waiting.next, struct blob_wait, link);
        list_remove(&w->link);
        free(w);
    }
}

void blob_gate_submit(struct server *srv, struct blob_gate *g, struct job *jb, job_work_fn work, job_done_fn done)
{
    if (g->active < g->cap) {
        g->active++;
        job_submit(&srv->jobs, jb, NULL, work, done);
        return;
    }
    struct blob_wait *w = xcalloc(1, sizeof *w);
    w->job = jb;
    w->work = work;
    w->done = done;
    list_insert_tail(&g->waiting, &w->link);
    g->waited++;
}

void blob_gate_release(struct server *srv, struct blob_gate *g)
{
    assert(g->active > 0);
    g->active--;
    if (list_empty(&g->waiting)) return;
    struct blob_wait *w = container_of(g->waiting.next, struct blob_wait, link);
    list_remove(&w->link);
    g->active++;
    job_submit(&srv->jobs, w->job, NULL, w->work, w->done);
    free(w);
}

unsigned blob_gate_waiting(const struct blob_gate *g)
{
    unsigned n = 0;
    for (const struct list *l = g->waiting.next; l != &g->waiting; l = l->next) n++;
    return n;
}

static size_t to_file(char *p, size_t size, size_t n, void *arg)
{
    FILE *f = arg;
    return fwrite(p, size, n, f);
}

static size_t to_buf(char *p, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    if (b->len + size * n > (1u << 20)) return 0;
    buf_append(b, p, size * n);
    return size * n;
}

static CURL *easy_for(const struct blob_xfer *bj, const char *url, struct curl_slist **hdrs)
{
    CURL *e = curl_easy_init();
    if (!e) return NULL;
    char auth[200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", bj->token);
    *hdrs = curl_slist_append(NULL, auth);
    *hdrs = curl_slist_append(*hdrs, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);          /* a stalled transfer fails after 30 s */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    return e;
}

/* pull: fetch the ones our space lacks. Each is hash-checked, put in place
 * and pinned; pull_apply references them in the page's transaction. */
void blob_fetch_work(struct blob_xfer *bj, char (*hashes)[65], size_t nh)
{
    bool *have = xcalloc(nh + 1, sizeof *have);
    sqlite3 *db = store_reader_get(bj->srv->store);
    sqlite3_stmt *q = NULL;
    for (size_t i = 0; db && i < nh; i++) {
        /* fetched by an earlier page of this job, not yet applied: the
         * bytes came from the same peer space; this page pins them too.
         * (Checked before the references: once that page is applied and
         * unpinned, the reference is there to be read.) */
        if (blob_pin_owned(bj->srv, hashes[i], bj->owner)) {
            if (bj->npinned % 16 == 0) bj->pinned = xrealloc(bj->pinned, (bj->npinned + 16) * sizeof *bj->pinned);
            memcpy(bj->pinned[bj->npinned++], hashes[i], 65);
            have[i] = true;
            continue;
        }
        int in = blobs_in_space(db, &q, bj->space_id, hashes[i]);
        if (in < 0) {
            snprintf(bj->err, sizeof bj->err, "reading the space's blobs failed");
            break;
        }
        have[i] = in == 1;
    }
    sqlite3_finalize(q);
    store_reader_put(bj->srv->store, db);
    if (!db) snprintf(bj->err, sizeof bj->err, "reading the space's blobs failed: no database connection");
    for (size_t i = 0; !bj->err[0] && i < nh; i++) {
        const char *h = hashes[i];
        {
            if (have[i]) continue;
            char url[800], tmp[1200], dir[1200];
            snprintf(url, sizeof url, "%s/blobs/%s", bj->url, h);
            snprintf(dir, sizeof dir, "%s/blobs/%.2s", bj->data_dir, h);
            char rnd[27];
            ulid_make(rnd, now_ms_wall());
            snprintf(tmp, sizeof tmp, "%s/blobs/tmp/sync-%s.tmp", bj->data_dir, rnd);
            char tdir[1100];
            snprintf(tdir, sizeof tdir, "%s/blobs/tmp", bj->data_dir);
            mkdir_p(dir, 0700);
            mkdir_p(tdir, 0700);
            FILE *f = fopen(tmp, "wbx");
            if (!f) { snprintf(bj->err, sizeof bj->err, "cannot create a temp file for a blob: %s", strerror(errno)); return; }
            struct curl_slist *hdrs = NULL;
            CURL *e = easy_for(bj, url, &hdrs);
            curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, to_file);
            curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
            CURLcode rc = curl_easy_perform(e);
            long code = 0;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            curl_easy_cleanup(e);
            curl_slist_free_all(hdrs);
            bool ok = rc == CURLE_OK && code == 200 && fflush(f) == 0 && fsync(fileno(f)) == 0;
            fclose(f);
            /* it must be what its name says */
            char got[65] = "";
            if (ok) {
                int fd = open(tmp, O_RDONLY | O_CLOEXEC);
                EVP_MD_CTX *md = EVP_MD_CTX_new();
                EVP_DigestInit_ex(md, sha256_md(), NULL);
                unsigned char chunk[65536];
                ssize_t n;
                while (fd >= 0 && (n = read(fd, chunk, sizeof chunk)) > 0) {
                    EVP_DigestUpdate(md, chunk, (size_t)n);
                    bj->bytes += (uint64_t)n;
                }
                if (fd >= 0) close(fd);
                unsigned char d[32];
                unsigned int l = 32;
                EVP_DigestFinal_ex(md, d, &l);
                EVP_MD_CTX_free(md);
                hex_encode(got, d, 32);
            }
            int placed = ok && !strcmp(got, h) ? blob_place(bj->srv, tmp, h, bj->owner) : -1;
            if (placed < 0) {
                unlink(tmp);
                snprintf(bj->err, sizeof bj->err, "fetching blob %.16s… from the peer failed (%s, HTTP %ld%s)", h,
                         rc == CURLE_OK ? "ok" : curl_easy_strerror(rc), code, ok && strcmp(got, h) ? ", hash mismatch" : "");
                break;
            }
            if (bj->npinned % 16 == 0) bj->pinned = xrealloc(bj->pinned, (bj->npinned + 16) * sizeof *bj->pinned);
            memcpy(bj->pinned[bj->npinned++], h, 65);
            bj->moved++;
        }
    }
    free(have);
}

/* Loop: the page's references are committed, or will never be. */
void blob_xfer_release(struct blob_xfer *bj)
{
    for (size_t i = 0; i < bj->npinned; i++) blob_unpin(bj->srv, bj->pinned[i]);
    free(bj->pinned);
    bj->pinned = NULL;
    bj->npinned = 0;
}

/* push: ask which the peer lacks, send those */
void blob_send_work(struct blob_xfer *bj, char (*hashes)[65], size_t nh)
{
    if (nh == 0) return;
    {
        struct buf q, ans;
        buf_init(&q);
        buf_init(&ans);
        buf_puts(&q, "{\"hashes\":[");
        for (size_t k = 0; k < nh; k++) {
            if (k) buf_putc(&q, ',');
            json_cstr(&q, hashes[k]);
        }
        buf_puts(&q, "]}");
        char url[800];
        snprintf(url, sizeof url, "%s/blobs/missing", bj->url);
        struct curl_slist *hdrs = NULL;
        CURL *e = easy_for(bj, url, &hdrs);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, q.data);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, to_buf);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &ans);
        CURLcode rc = curl_easy_perform(e);
        long code = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(e);
        curl_slist_free_all(hdrs);
        buf_free(&q);
        json_error_t je;
        json_t *m = (rc == CURLE_OK && code == 200) ? json_loadb(ans.data ? ans.data : "", ans.len, 0, &je) : NULL;
        buf_free(&ans);
        if (!m) {
            snprintf(bj->err, sizeof bj->err, "asking the peer for missing blobs failed (HTTP %ld)", code);
            return;
        }
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(m, "missing"), i, x) {
            const char *hh = json_name(x);
            if (!hh || !name_sha256_valid(hh, strlen(hh))) continue;
            char path[1200], purl[800];
            blob_path(bj->data_dir, hh, path, sizeof path);
            FILE *f = fopen(path, "rb");
            if (!f) {
                snprintf(bj->err, sizeof bj->err, "blob %.16s… is referenced here but missing", hh);
                break;
            }
            struct stat st;
            fstat(fileno(f), &st);
            snprintf(purl, sizeof purl, "%s/blobs/%s", bj->url, hh);
            e = easy_for(bj, purl, &hdrs);
            curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(e, CURLOPT_READDATA, f);
            curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
            curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, to_buf);
            struct buf sink;
            buf_init(&sink);
            curl_easy_setopt(e, CURLOPT_WRITEDATA, &sink);
            rc = curl_easy_perform(e);
            code = 0;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            curl_easy_cleanup(e);
            curl_slist_free_all(hdrs);
            buf_free(&sink);
            fclose(f);
            if (rc != CURLE_OK || (code != 200 && code != 201)) {
                snprintf(bj->err, sizeof bj->err, "sending blob %.16s… to the peer failed (HTTP %ld)", hh, code);
                break;
            }
            bj->moved++;
            bj->bytes += (uint64_t)st.st_size;
        }
        json_decref(m);
    }
}
