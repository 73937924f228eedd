/* snapshot.h - consistent, compressed snapshots of a space (SPEC §7).
 *
 * A snapshot is one threadpool job: a read transaction on its own
 * connection fixes the space at one server_version while writers go on;
 * rows stream through zlib (gzip framing) into DATA/snapshots/<id>.tmp,
 * hashed (sha256) as written, fsynced, renamed to <id>.ndjson.gz, the
 * directory fsynced, and only then is the row marked completed. Memory is a
 * few fixed buffers whatever the size of the space.
 *
 * Rows live in the `snapshots` table (written by the writer thread); the
 * loop thread tracks which spaces have a snapshot or restore running (409)
 * and publishes `snapshot` SSE events from the job's progress.
 *
 * Each row also says what the last read of its file found (`integrity`:
 * unchecked, ok, corrupt); a background check re-verifies every completed
 * file once per --snapshot-verify-every seconds, one at a time, in slices
 * on the pool.
 */
#ifndef SNAPSYNC_SNAPSHOT_H
#define SNAPSYNC_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server;
struct http_req;

#define SNAP_FORMAT "snapsync.snapshot.v1"

/* Startup (main thread, before the loop): rows left pending/running by a
 * crash become failed ("interrupted"), leftover temp files are removed.
 * Returns 0 or -1 with err. */
int snap_recover(const char *data_dir, void *db /* sqlite3 */, char *err, size_t errlen);
void snap_init(struct server *srv);      /* loop: schedule and check timers, last_snapshot per space */
void snap_free(struct server *srv);
/* Removes a snapshot's file in the threadpool (its row is already gone). */
void snap_remove_file(struct server *srv, const char *id);

/* Offline check of a snapshot file: gzip integrity, header, every line,
 * counts. Fills a summary; returns 0 or -1 with err. Any thread. */
struct snap_summary {
    char space[64], space_uid[27], instance_id[27];
    uint64_t server_version, entity_total, lines, raw_bytes, size_bytes;
    uint64_t created_at_ms;          /* the header's created_at */
    char sha256[65];
    char *counts_json;               /* the header's entity_counts (malloc'd; caller frees) */
    char *blobs_json;                /* the blobs its entities name: a sorted JSON array (malloc'd; caller frees) */
};
int snap_verify_file(const char *path, struct snap_summary *sum, char *err, size_t errlen);

/* The restore plan's reader alone (tests, fuzz): merge_run over the file
 * against the live rows of space_id in db (a sqlite3 with an `entities`
 * table), only counting what a restore would put and delete; want_sha NULL
 * skips the sha256 check. Returns 0, or -1 with err. Any thread. */
int snap_merge_count(const char *path, const char *want_sha, void *db /* sqlite3 */, int64_t space_id,
                     uint64_t *puts, uint64_t *dels, char *err, size_t errlen);

void api_snapshot_create(struct http_req *r);
void api_snapshot_list(struct http_req *r);
void api_snapshot_get(struct http_req *r);
void api_snapshot_delete(struct http_req *r);
void api_snapshot_download(struct http_req *r);
void api_snapshot_preview(struct http_req *r);
void api_snapshot_restore(struct http_req *r);
void api_snapshot_import(struct http_req *r);
void api_snapshot_verify(struct http_req *r);

#endif
