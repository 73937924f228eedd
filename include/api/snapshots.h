/* snapshots.h - the HTTP handlers of /api/v1/spaces/{space}/snapshots:
 * request parsing, the checks a request needs before the engine starts
 * (space, busy, rate limit, row status and integrity), and the answers the
 * engine reports (svc/snapshot.h struct snap_answer) said in HTTP.
 * Loop thread; the read jobs' functions (`_work`) run on the threadpool
 * and call the engine's row and preview functions. */
#ifndef SNAPSYNC_API_SNAPSHOTS_H
#define SNAPSYNC_API_SNAPSHOTS_H

struct http_req;

void api_snapshot_create(struct http_req *r);
void api_snapshot_list(struct http_req *r);
void api_snapshot_get(struct http_req *r);
void api_snapshot_delete(struct http_req *r);
void api_snapshot_download(struct http_req *r);
/* GET .../snapshots/{id}/export?format=json|csv[&collection=c] */
void api_snapshot_export(struct http_req *r);
void api_snapshot_preview(struct http_req *r);
void api_snapshot_restore(struct http_req *r);
void api_snapshot_import(struct http_req *r);
void api_snapshot_verify(struct http_req *r);
void api_snapshot_remote_retry(struct http_req *r);

/* GET /api/v1/remote/snapshots: what the off-site remote holds */
void api_remote_list(struct http_req *r);

#endif
