/* metrics.h - Prometheus metrics (GET /metrics). Counters live on the loop
 * thread (no locks); label sets are bounded: route patterns' names (never
 * raw paths), HTTP statuses, snapshot kinds and statuses, sync statuses. */
#ifndef SNAPSYNC_METRICS_H
#define SNAPSYNC_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct server;
struct http_req;

void metrics_init(struct server *srv);
void metrics_free(struct server *srv);
void metrics_request(struct server *srv, const char *route, int status, double seconds);
void metrics_snapshot(struct server *srv, const char *kind, bool ok, double seconds, uint64_t bytes);
/* A sync job ended: status is "completed", "partial" or "failed". */
void metrics_sync(struct server *srv, const char *status, uint64_t pulled, uint64_t pushed, uint64_t blobs);
/* snapshot files: a download cut off, a snapshot found corrupt (by:
 * download, preview, restore, verify or background), a background check */
void metrics_snapshot_download_abort(struct server *srv);
void metrics_snapshot_corrupt(struct server *srv, const char *by);
void metrics_snapshot_check(struct server *srv, bool ok);

void api_metrics(struct http_req *r);

#endif
