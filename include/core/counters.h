/* counters.h - the process's Prometheus counters (api/metrics.c exposes
 * them at GET /metrics). Loop thread only (no locks); label sets are
 * bounded: route patterns' names (never raw paths), HTTP statuses,
 * snapshot kinds and statuses, sync statuses. Every function takes a NULL
 * struct metrics (counting off) and does nothing. */
#ifndef SNAPSYNC_COUNTERS_H
#define SNAPSYNC_COUNTERS_H

#include <stdbool.h>
#include <stdint.h>

#define MAX_SERIES 512
#define NB 13
extern const double metrics_req_buckets[NB];
#define NSB 10
extern const double metrics_snap_buckets[NSB];
#define NZB 7
extern const double metrics_size_buckets[NZB];
#define N_FOUND_BY 5
extern const char *const metrics_found_by[N_FOUND_BY];

struct req_series {
    const char *route;               /* a route's static name */
    int status;
    uint64_t count;
};

struct lat_series {
    const char *route;
    uint64_t b[NB], count;
    double sum;
};

struct metrics {
    struct req_series req[MAX_SERIES];
    int nreq;
    struct lat_series lat[128];
    int nlat;
    uint64_t req_overflow;
    /* snapshots */
    struct { char kind[16]; bool ok; uint64_t count; } snaps[16];
    int nsnaps;
    uint64_t snap_dur_b[NSB], snap_dur_count, snap_size_b[NZB], snap_size_count;
    double snap_dur_sum, snap_size_sum;
    /* snapshot files: aborted downloads, corruption found (by what found
     * it), background checks */
    uint64_t snap_dl_aborts, snap_corrupt[5], snap_checks_ok, snap_checks_corrupt;
    /* sync */
    uint64_t sync_ok, sync_partial, sync_failed, pulled, pushed, blobs;
    /* off-site copies (svc/remote.c) */
    uint64_t remote_uploaded, remote_failed, remote_retries, remote_bytes, remote_deleted;
    uint64_t remote_queue;           /* gauge: uploads waiting or running */
    uint64_t remote_last_ok_ms;      /* when the last upload completed (0: none since start) */
    bool remote_on;
};

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);
void metrics_request(struct metrics *m, const char *route, int status, double seconds);
void metrics_snapshot(struct metrics *m, const char *kind, bool ok, double seconds, uint64_t bytes);
/* A sync job ended: status is "completed", "partial" or "failed". */
void metrics_sync(struct metrics *m, const char *status, uint64_t pulled, uint64_t pushed, uint64_t blobs);
/* snapshot files: a download cut off, a snapshot found corrupt (by:
 * download, preview, restore, verify or background), a background check */
void metrics_snapshot_download_abort(struct metrics *m);
void metrics_snapshot_corrupt(struct metrics *m, const char *by);
void metrics_snapshot_check(struct metrics *m, bool ok);
/* an off-site upload ended (uploaded or failed for good), a failed attempt
 * that will be retried, a remote object removed by retention */
void metrics_remote_upload(struct metrics *m, bool ok, uint64_t bytes, uint64_t now_ms);
void metrics_remote_retry(struct metrics *m);
void metrics_remote_deleted(struct metrics *m);

#endif
