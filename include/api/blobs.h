/* api/blobs.h - the handlers of file blobs: PUT and GET/HEAD
 * /blobs/{sha256}, POST /blobs/missing (api/blobs.c). The blob store itself
 * is svc/blobs.h. Loop thread. */
#ifndef SNAPSYNC_API_BLOBS_H
#define SNAPSYNC_API_BLOBS_H

struct http_req;

void api_blob_put(struct http_req *r);
void api_blob_get(struct http_req *r);
void api_blobs_missing(struct http_req *r);

#endif
