/* metrics.h - Prometheus metrics (GET /metrics). Counters live on the loop
 * thread (no locks); label sets are bounded: route patterns' names (never
 * raw paths), HTTP statuses, snapshot kinds and statuses, sync statuses. */
#ifndef SNAPSYNC_METRICS_H
#define SNAPSYNC_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct server;
struct http_req;

void api_metrics(struct http_req *r);
/* http_hooks.done (main.c installs it): counts a finished request by route
 * and status, with its duration, for snapsync_http_request_* . */
void api_metrics_request_done(struct http_req *r, uint64_t dur_us);

#endif
