/* metrics.c - see metrics.h. The exposition is built on the loop (a copy of
 * the counters), then a threadpool job stats the database files and sends
 * the text: the loop does no file calls. */
#include "api/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "core/counters.h"
#include "net/http.h"
#include "core/jobs.h"
#include "core/json.h"
#include "net/server.h"
#include "store/spaces.h"
#include "svc/sse.h"
#include "svc/sync.h"
#include "store/store.h"
#include "store/writer.h"


static void help(struct buf *b, const char *name, const char *type, const char *text)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* One unlabelled sample with its HELP and TYPE lines. */
static void metric_u64(struct buf *b, const char *name, const char *type, const char *text, uint64_t v)
{
    help(b, name, type, text);
    buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* label values: our own names ([a-z0-9_-]) need no escaping, but be safe */
static void label(struct buf *b, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"') buf_putc(b, '\\');
        if (*p == '\n') { buf_puts(b, "\\n"); continue; }
        buf_putc(b, *p);
    }
}

static void fmt_le(char *out, size_t cap, double v)
{
    snprintf(out, cap, "%g", v);
}

void api_metrics_request_done(struct http_req *r, uint64_t dur_us)
{
    metrics_request(r->srv->metrics, r->route ? r->route->name : NULL, r->status, (double)dur_us / 1e6);
}

struct metrics_job {
    struct job job;
    char db[1100];
    struct buf text;
};

static void metrics_work(struct job *j)
{
    struct metrics_job *mj = container_of(j, struct metrics_job, job);
    struct stat st;
    char wal[1200];
    snprintf(wal, sizeof wal, "%s-wal", mj->db);
    struct buf *b = &mj->text;
    help(b, "snapsync_database_bytes", "gauge", "Size of the SQLite database file.");
    buf_printf(b, "snapsync_database_bytes %lld\n", stat(mj->db, &st) == 0 ? (long long)st.st_size : 0LL);
    help(b, "snapsync_wal_bytes", "gauge", "Size of the SQLite write-ahead log.");
    buf_printf(b, "snapsync_wal_bytes %lld\n", stat(wal, &st) == 0 ? (long long)st.st_size : 0LL);
}

static void metrics_done(struct job *j, struct http_req *r)
{
    struct metrics_job *mj = container_of(j, struct metrics_job, job);
    if (r) {
        size_t len;
        char *t = buf_steal(&mj->text, &len);
        http_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", t, len, HTTP_BODY_FREE);
    }
    buf_free(&mj->text);
    free(mj);
}

/* Requests by route and status, and their latency histogram. */
static void metrics_http(struct buf *b, const struct metrics *m)
{
    char le[32];
    help(b, "snapsync_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for (int i = 0; i < m->nreq; i++) {
        buf_puts(b, "snapsync_http_requests_total{route=\"");
        label(b, m->req[i].route);
        buf_printf(b, "\",status=\"%d\"} %llu\n", m->req[i].status, (unsigned long long)m->req[i].count);
    }
    help(b, "snapsync_http_request_duration_seconds", "histogram",
         "Time from a request's first byte to its response being queued, by route.");
    for (int i = 0; i < m->nlat; i++) {
        const struct lat_series *l = &m->lat[i];
        for (size_t k = 0; k < NB; k++) {
            fmt_le(le, sizeof le, metrics_req_buckets[k]);
            buf_puts(b, "snapsync_http_request_duration_seconds_bucket{route=\"");
            label(b, l->route);
            buf_printf(b, "\",le=\"%s\"} %llu\n", le, (unsigned long long)l->b[k]);
        }
        buf_puts(b, "snapsync_http_request_duration_seconds_bucket{route=\"");
        label(b, l->route);
        buf_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)l->count);
        buf_puts(b, "snapsync_http_request_duration_seconds_sum{route=\"");
        label(b, l->route);
        buf_printf(b, "\"} %.6f\n", l->sum);
        buf_puts(b, "snapsync_http_request_duration_seconds_count{route=\"");
        label(b, l->route);
        buf_printf(b, "\"} %llu\n", (unsigned long long)l->count);
    }
}

/* Per-space gauges from the loop's registry. */
static void metrics_spaces(struct buf *b, struct server *srv)
{
    size_t n;
    struct space **v = spaces_sorted(srv->spaces, &n);
    static const char *const sm[][2] = {
        {"snapsync_space_server_version", "The space's change counter."},
        {"snapsync_space_entities", "Live entities in the space."},
        {"snapsync_space_tombstones", "Deleted entities (tombstones) in the space."},
        {"snapsync_space_conflicts", "Unresolved conflict records in the space."},
    };
    for (int k = 0; k < 4; k++) {
        help(b, sm[k][0], "gauge", sm[k][1]);
        for (size_t i = 0; i < n; i++) {
            uint64_t val = k == 0 ? v[i]->st.version : k == 1 ? v[i]->st.entities : k == 2 ? v[i]->st.tombstones
                                                                                           : v[i]->st.conflicts;
            buf_printf(b, "%s{space=\"", sm[k][0]);
            label(b, v[i]->st.name);
            buf_printf(b, "\"} %llu\n", (unsigned long long)val);
        }
    }
}

/* Snapshots: outcomes, durations, sizes, damaged files and checks. */
static void metrics_snapshots(struct buf *b, const struct metrics *m)
{
    char le[32];
    help(b, "snapsync_snapshots_total", "counter", "Snapshots finished since start, by kind and status.");
    for (int i = 0; i < m->nsnaps; i++)
        buf_printf(b, "snapsync_snapshots_total{kind=\"%s\",status=\"%s\"} %llu\n", m->snaps[i].kind,
                   m->snaps[i].ok ? "completed" : "failed", (unsigned long long)m->snaps[i].count);
    help(b, "snapsync_snapshot_duration_seconds", "histogram", "Time to write a snapshot.");
    for (size_t k = 0; k < NSB; k++) {
        fmt_le(le, sizeof le, metrics_snap_buckets[k]);
        buf_printf(b, "snapsync_snapshot_duration_seconds_bucket{le=\"%s\"} %llu\n", le,
                   (unsigned long long)m->snap_dur_b[k]);
    }
    buf_printf(b, "snapsync_snapshot_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)m->snap_dur_count);
    buf_printf(b, "snapsync_snapshot_duration_seconds_sum %.6f\n", m->snap_dur_sum);
    buf_printf(b, "snapsync_snapshot_duration_seconds_count %llu\n", (unsigned long long)m->snap_dur_count);
    help(b, "snapsync_snapshot_size_bytes", "histogram", "Compressed size of completed snapshots.");
    for (size_t k = 0; k < NZB; k++) {
        fmt_le(le, sizeof le, metrics_size_buckets[k]);
        buf_printf(b, "snapsync_snapshot_size_bytes_bucket{le=\"%s\"} %llu\n", le, (unsigned long long)m->snap_size_b[k]);
    }
    buf_printf(b, "snapsync_snapshot_size_bytes_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)m->snap_size_count);
    buf_printf(b, "snapsync_snapshot_size_bytes_sum %.0f\n", m->snap_size_sum);
    buf_printf(b, "snapsync_snapshot_size_bytes_count %llu\n", (unsigned long long)m->snap_size_count);

    metric_u64(b, "snapsync_snapshot_download_aborts_total", "counter",
               "Snapshot downloads cut off because the file could not be read whole or did not match its sha256.",
               m->snap_dl_aborts);
    help(b, "snapsync_snapshot_corrupt_found_total", "counter",
         "Snapshots found damaged or missing (marked corrupt), by what found it.");
    for (size_t i = 0; i < N_FOUND_BY; i++)
        buf_printf(b, "snapsync_snapshot_corrupt_found_total{found_by=\"%s\"} %llu\n", metrics_found_by[i],
                   (unsigned long long)m->snap_corrupt[i]);
    help(b, "snapsync_snapshot_checks_total", "counter",
         "Background checks of snapshot files (--snapshot-verify-every), by result.");
    buf_printf(b, "snapsync_snapshot_checks_total{result=\"ok\"} %llu\n", (unsigned long long)m->snap_checks_ok);
    buf_printf(b, "snapsync_snapshot_checks_total{result=\"corrupt\"} %llu\n",
               (unsigned long long)m->snap_checks_corrupt);
}

void api_metrics(struct http_req *r)
{
    struct server *srv = r->srv;
    struct metrics *m = srv->metrics;
    struct metrics_job *mj = xcalloc(1, sizeof *mj);
    snprintf(mj->db, sizeof mj->db, "%s", store_db_path(srv->store));
    struct buf *b = &mj->text;

    help(b, "snapsync_build_info", "gauge", "Build information.");
    buf_printf(b, "snapsync_build_info{version=\"%s\"} 1\n", SNAPSYNC_VERSION);
    help(b, "snapsync_process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.");
    buf_printf(b, "snapsync_process_start_time_seconds %.3f\n", (double)srv->started_ms / 1000.0);

    metrics_http(b, m);
    metric_u64(b, "snapsync_open_connections", "gauge", "Open client connections.", srv->stats.open_conns);
    metric_u64(b, "snapsync_connections_rejected_total", "counter", "Connections refused past --max-connections.", srv->stats.rejected);

    struct sse_stats ss;
    sse_get_stats(srv, &ss);
    metric_u64(b, "snapsync_sse_subscribers", "gauge", "Open event streams (events and feed=sse).", ss.subscribers);
    metric_u64(b, "snapsync_sse_dropped_subscribers_total", "counter", "Subscribers closed for not keeping up (overflow).", ss.dropped);
    metric_u64(b, "snapsync_sse_events_total", "counter", "Events published.", ss.published);
    metric_u64(b, "snapsync_sse_queued_bytes", "gauge",
               "Bytes held for event subscribers that have not taken them yet, as counted against --sse-queue-bytes "
               "(frames plus a fixed overhead per queued event).", ss.queued_bytes);
    metric_u64(b, "snapsync_sse_fanout_backlog_events", "gauge",
               "Events not yet offered to every event subscriber (a fan-out in progress).", ss.backlog_events);
    help(b, "snapsync_loop_max_stall_seconds", "gauge",
         "The longest the event loop was busy in one iteration (not waiting for I/O) since start.");
    buf_printf(b, "snapsync_loop_max_stall_seconds %.6f\n", (double)srv->stats.loop_max_stall_ns / 1e9);
    metric_u64(b, "snapsync_loop_stalls_total", "counter", "Event loop iterations busy for 100 ms or more.",
               srv->stats.loop_stalls);

    metrics_spaces(b, srv);
    metrics_snapshots(b, m);
    if (m->remote_on) {
        help(b, "snapsync_remote_uploads_total", "counter", "Off-site snapshot uploads finished since start, by result.");
        buf_printf(b, "snapsync_remote_uploads_total{status=\"uploaded\"} %llu\n", (unsigned long long)m->remote_uploaded);
        buf_printf(b, "snapsync_remote_uploads_total{status=\"failed\"} %llu\n", (unsigned long long)m->remote_failed);
        metric_u64(b, "snapsync_remote_upload_retries_total", "counter",
                   "Upload attempts that failed and were retried later.", m->remote_retries);
        metric_u64(b, "snapsync_remote_uploaded_bytes_total", "counter", "Bytes of snapshot objects uploaded.", m->remote_bytes);
        metric_u64(b, "snapsync_remote_queue", "gauge", "Snapshots waiting for their upload or being uploaded.", m->remote_queue);
        metric_u64(b, "snapsync_remote_deleted_total", "counter", "Remote snapshots removed by remote retention.",
                   m->remote_deleted);
        help(b, "snapsync_remote_last_upload_timestamp_seconds", "gauge",
             "When the last upload completed (0: none since start).");
        buf_printf(b, "snapsync_remote_last_upload_timestamp_seconds %.3f\n", (double)m->remote_last_ok_ms / 1000.0);
    }

    help(b, "snapsync_sync_jobs_total", "counter", "Sync jobs finished since start, by status.");
    buf_printf(b, "snapsync_sync_jobs_total{status=\"completed\"} %llu\n", (unsigned long long)m->sync_ok);
    buf_printf(b, "snapsync_sync_jobs_total{status=\"partial\"} %llu\n", (unsigned long long)m->sync_partial);
    buf_printf(b, "snapsync_sync_jobs_total{status=\"failed\"} %llu\n", (unsigned long long)m->sync_failed);
    metric_u64(b, "snapsync_sync_entities_pulled_total", "counter", "Entities applied from peers by sync jobs.", m->pulled);
    metric_u64(b, "snapsync_sync_entities_pushed_total", "counter", "Entities sent to peers by sync jobs.", m->pushed);
    metric_u64(b, "snapsync_sync_blobs_moved_total", "counter", "Blobs transferred by sync jobs.", m->blobs);
    struct sync_blob_stats bs;
    sync_blob_stats(srv, &bs);
    metric_u64(b, "snapsync_sync_blob_jobs_running", "gauge", "Blob transfer jobs on the threadpool (at most half of it).", bs.running);
    metric_u64(b, "snapsync_sync_blob_jobs_waiting", "gauge", "Blob transfer jobs waiting for a turn.", bs.waiting);
    metric_u64(b, "snapsync_sync_blob_jobs_waited_total", "counter", "Blob transfer jobs that had to wait for a turn.", bs.waited);
    metric_u64(b, "snapsync_write_queue_ops", "gauge", "Write operations submitted and not yet answered.", writer_queue_len(srv->writer));

    job_submit(&srv->jobs, &mj->job, r, metrics_work, metrics_done);
}
