/* api/sync.h - the handlers of sync jobs, persistent peers and POST
 * /replicate (api/sync.c). Loop thread. */
#ifndef SNAPSYNC_API_SYNC_H
#define SNAPSYNC_API_SYNC_H

struct http_req;

void api_sync_start(struct http_req *r);
void api_sync_jobs(struct http_req *r);
void api_sync_job(struct http_req *r);
void api_peer_put(struct http_req *r);
void api_peer_delete(struct http_req *r);
void api_peers_list(struct http_req *r);
void api_replicate(struct http_req *r);

#endif
