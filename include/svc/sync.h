/* sync.h - multi-instance sync (SPEC §9): sync jobs that pull from and push
 * to a peer with checkpoints, and the replication core they share with
 * POST /replicate. Loop thread unless noted. */
#ifndef SNAPSYNC_SYNC_H
#define SNAPSYNC_SYNC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/entity.h"
#include "core/util.h"

struct server;
struct http_req;
struct wtx;
struct wop;
struct space_stats;
struct buf;

struct rep_counts {
    uint64_t applied, ignored, conflicts, errors;
};

/* One replicated revision, checked and canonicalized off the writer
 * thread. Strings at *_off live in the batch's text (NUL-terminated). */
struct rep_item {
    const char *err_code;            /* why it cannot apply: a code (invalid_rev, too_deep, ...), or NULL */
    const char *err;                 /* and in words (static text) */
    char collection[64], id[129], rev[REV_MAX];
    bool deleted, has_body;
    size_t hist_off;                 /* earlier revs, newest first, space-separated */
    size_t body_off, body_len;       /* canonical body */
    uint32_t conf_first, nconf;      /* conflict records that travel with it: confs[conf_first..] */
    bool conflicted;                 /* rep_apply_batch: it diverged from the local revision */
};

struct rep_conf {
    char rev[REV_MAX];
    bool deleted, has_body;
    size_t body_off, body_len;
};

/* A parsed /replicate body or /changes?style=all_revs page. */
struct rep_batch {
    struct rep_item *items;
    size_t n;
    struct rep_conf *confs;
    size_t nconfs, capconfs;
    struct buf text;
    char (*blobs)[65];               /* distinct valid "_blobs" hashes of live bodies */
    size_t nblobs;
    bool has_last, more;             /* a page's "last_version" and "more" */
    uint64_t last_version;
    char source_instance[27];        /* "source_instance" when it is an instance id, else "" */
    char unknown[64];                /* the first top-level member that is none of the above, or "" */
};

/* Any thread but the loop: parses raw ({"entities":[...]} or {"changes":
 * [...]}) into b. Returns 0, or -1 with err filled (the whole text is
 * refused: invalid JSON, duplicate keys, too deep, no array); a bad entity
 * is not a failure but an item with err set. b is always safe to free. */
int rep_batch_parse(struct rep_batch *b, const char *raw, size_t len, struct json_err *err);
void rep_batch_free(struct rep_batch *b);
/* Writer thread: applies a batch (see replicate.c); marks the items that
 * diverged (conflicted). */
int rep_apply_batch(struct wtx *tx, struct wop *op, struct space_stats *sp, struct rep_batch *batch,
                    const char *origin, struct rep_counts *cnt, struct buf *out);

/* Start-up, main thread, before the loop runs: sync jobs a stopped server
 * left `running` become `failed` ("interrupted: ..."), as snapshots do.
 * Returns 0, or -1 with err filled. */
int sync_recover(void *db /* sqlite3 */, char *err, size_t errlen);
void sync_init(struct server *srv);
void sync_free(struct server *srv);
struct sync_blob_stats {
    uint64_t running, waiting, waited;
};
void sync_blob_stats(struct server *srv, struct sync_blob_stats *out);
/* Loop: is a sync job of this space running? */
bool sync_space_running(struct server *srv, const char *space);
/* Loop: the space was deleted (its peers' rows with it): forget its peers. */
void sync_space_deleted(struct server *srv, const char *space);

void api_sync_start(struct http_req *r);
void api_sync_jobs(struct http_req *r);
void api_sync_job(struct http_req *r);
void api_peer_put(struct http_req *r);
void api_peer_delete(struct http_req *r);
void api_peers_list(struct http_req *r);

#endif
