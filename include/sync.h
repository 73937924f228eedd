/* sync.h - multi-instance sync (SPEC §9): sync jobs that pull from and push
 * to a peer with checkpoints, and the replication core they share with
 * POST /replicate. Loop thread unless noted. */
#ifndef SNAPSYNC_SYNC_H
#define SNAPSYNC_SYNC_H

#include <jansson.h>
#include <stdint.h>

struct server;
struct http_req;
struct wtx;
struct wop;
struct space_stats;
struct buf;

struct rep_counts {
    uint64_t applied, ignored, conflicts, errors;
};

/* Writer thread: applies replicated entities (see replicate.c). */
int rep_apply_entities(struct wtx *tx, struct wop *op, struct space_stats *sp, json_t *arr, const char *origin,
                       struct rep_counts *cnt, struct buf *b);

void sync_init(struct server *srv);
void sync_free(struct server *srv);

void api_sync_start(struct http_req *r);
void api_sync_jobs(struct http_req *r);
void api_sync_job(struct http_req *r);
void api_peer_put(struct http_req *r);
void api_peer_delete(struct http_req *r);
void api_peers_list(struct http_req *r);

#endif
