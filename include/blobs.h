/* blobs.h - content-addressed file blobs (SPEC §9). See blobs.c. */
#ifndef SNAPSYNC_BLOBS_H
#define SNAPSYNC_BLOBS_H

#include <stdbool.h>
#include <stddef.h>

struct http_req;

void blob_path(const char *data_dir, const char *sha, char *out, size_t cap);
bool blob_exists(const char *data_dir, const char *sha);    /* a stat(2): not on the loop */
/* For a canonical body: 0 if it references no blob or all are present; 1
 * if some are missing (their hashes, JSON-quoted and comma-separated, in
 * missing); -1 if "_blobs" is malformed (the reason in missing). Any
 * thread but the loop's (it stats files). */
int blobs_check(const char *data_dir, const char *body, size_t len, char *missing, size_t cap);

void api_blob_put(struct http_req *r);
void api_blob_get(struct http_req *r);
void api_blobs_missing(struct http_req *r);

#endif
