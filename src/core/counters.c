/* counters.c - see counters.h. */
#include "core/counters.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

const double metrics_req_buckets[NB] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};
const double metrics_snap_buckets[NSB] = {0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900};
const double metrics_size_buckets[NZB] = {1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10};
const char *const metrics_found_by[N_FOUND_BY] = {"download", "preview", "restore", "verify", "background"};

struct metrics *metrics_new(void) { return xcalloc(1, sizeof(struct metrics)); }

void metrics_free(struct metrics *m) { free(m); }

void metrics_request(struct metrics *m, const char *route, int status, double s)
{
    if (!m) return;
    if (!route) route = "none";
    int i;
    for (i = 0; i < m->nreq; i++)
        if (m->req[i].status == status && (m->req[i].route == route || !strcmp(m->req[i].route, route))) break;
    if (i == m->nreq) {
        if (m->nreq == MAX_SERIES) { m->req_overflow++; goto lat; }
        m->req[m->nreq].route = route;
        m->req[m->nreq].status = status;
        m->nreq++;
    }
    m->req[i].count++;
lat:
    for (i = 0; i < m->nlat; i++)
        if (m->lat[i].route == route || !strcmp(m->lat[i].route, route)) break;
    if (i == m->nlat) {
        if (m->nlat == (int)ARRAY_SIZE(m->lat)) return;
        m->lat[m->nlat++].route = route;
    }
    struct lat_series *l = &m->lat[i];
    for (size_t k = 0; k < NB; k++)
        if (s <= metrics_req_buckets[k]) l->b[k]++;
    l->count++;
    l->sum += s;
}

void metrics_snapshot(struct metrics *m, const char *kind, bool ok, double s, uint64_t bytes)
{
    if (!m) return;
    int i;
    for (i = 0; i < m->nsnaps; i++)
        if (m->snaps[i].ok == ok && !strcmp(m->snaps[i].kind, kind)) break;
    if (i == m->nsnaps) {
        if (m->nsnaps == (int)ARRAY_SIZE(m->snaps)) return;
        snprintf(m->snaps[i].kind, sizeof m->snaps[i].kind, "%s", kind);
        m->snaps[i].ok = ok;
        m->nsnaps++;
    }
    m->snaps[i].count++;
    for (size_t k = 0; k < NSB; k++)
        if (s <= metrics_snap_buckets[k]) m->snap_dur_b[k]++;
    m->snap_dur_count++;
    m->snap_dur_sum += s;
    if (ok) {
        for (size_t k = 0; k < NZB; k++)
            if ((double)bytes <= metrics_size_buckets[k]) m->snap_size_b[k]++;
        m->snap_size_count++;
        m->snap_size_sum += (double)bytes;
    }
}



void metrics_snapshot_download_abort(struct metrics *m)
{
    if (m) m->snap_dl_aborts++;
}

void metrics_snapshot_corrupt(struct metrics *m, const char *by)
{
    if (!m) return;
    for (size_t i = 0; i < ARRAY_SIZE(metrics_found_by); i++)
        if (!strcmp(metrics_found_by[i], by)) m->snap_corrupt[i]++;
}

void metrics_snapshot_check(struct metrics *m, bool ok)
{
    if (!m) return;
    if (ok) m->snap_checks_ok++;
    else m->snap_checks_corrupt++;
}

void metrics_remote_upload(struct metrics *m, bool ok, uint64_t bytes, uint64_t now_ms)
{
    if (!m) return;
    if (ok) {
        m->remote_uploaded++;
        m->remote_bytes += bytes;
        m->remote_last_ok_ms = now_ms;
    } else {
        m->remote_failed++;
    }
}

void metrics_remote_retry(struct metrics *m)
{
    if (m) m->remote_retries++;
}

void metrics_remote_deleted(struct metrics *m)
{
    if (m) m->remote_deleted++;
}

void metrics_sync(struct metrics *m, const char *status, uint64_t pulled, uint64_t pushed, uint64_t blobs)
{
    if (!m) return;
    if (!strcmp(status, "completed")) m->sync_ok++;
    else if (!strcmp(status, "partial")) m->sync_partial++;
    else m->sync_failed++;
    m->pulled += pulled;
    m->pushed += pushed;
    m->blobs += blobs;
}
