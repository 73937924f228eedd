/* restore.h - a snapshot against the live state: the merge, the preview
 * and dry run, and the restore (verify, pre-restore snapshot, journal,
 * plan, apply).
 *
 * The merge walks the snapshot file (snapshot_format.h's reader) and the
 * space's live rows in key order (both sorted by collection, id, so memory
 * stays flat) and finds what differs. A restore starts the journal
 * (writer: from now on, each write to the space notes the entity's state
 * before it), then runs two pieces side by side on the pool: the plan (one
 * read transaction at version V verifies the file in full and merges it
 * with the live entities, writing the changes it finds to a plan file) and
 * the pre_restore snapshot (unrecorded, at --pre-restore-level). When both
 * are back: a refused plan throws the snapshot's file away (nothing
 * changed); else the snapshot is recorded, and the restore op on the
 * writer thread applies the plan, then puts back the entities
 * written after V that the plan has no record of (at V they were as in the
 * snapshot: the journal has that state). The write lock is held for the
 * changes only, not for the whole comparison. Without a plan, or past the
 * journal's cap, the whole merge runs inside the transaction. Either way
 * the space's entities change in one transaction.
 *
 * Threads: `_work` = threadpool (writes only its job struct), `_apply` =
 * writer thread (writes only its op), `_done` = loop. snap_preview_run runs
 * inside a read job on the pool; the rest starts on the loop.
 */
#ifndef SNAPSYNC_RESTORE_H
#define SNAPSYNC_RESTORE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "svc/snapshot.h"

/* The merge alone (tests, fuzz): over the file against the live rows of
 * space_id in db (a sqlite3 with an `entities` table), only counting what a
 * restore would put and delete; want_sha NULL skips the sha256 check.
 * Returns 0, or -1 with err. Any thread. */
int snap_merge_count(const char *path, const char *want_sha, void *db /* sqlite3 */, int64_t space_id,
                     uint64_t *puts, uint64_t *dels, char *err, size_t errlen);

/* A preview (GET .../preview) or dry run (POST .../restore with dry_run):
 * the snapshot's row, then the merge counting only. Pool, in a read job. */
struct snap_preview {
    /* in */
    int64_t space_id;
    char id[130];                    /* as the route gave it */
    char data_dir[1024];
    bool dry_run;
    /* out */
    struct err err;                  /* a refusal before the merge (404, 409, 422, 500) */
    struct snap_row row;
    uint64_t current_version;
    char missing[800];               /* dry run: "missing":[...] of a restore that would be refused */
    char missing_msg[200];
    bool damaged;                    /* the file is not what the row says */
    char why[200];
};
/* Fills out with the answer's JSON, or p->err, or p->damaged. */
void snap_preview_run(sqlite3 *db, struct snap_preview *p, struct buf *out);
/* Loop: a preview or dry run found the file damaged: log and mark it. */
void snap_preview_damaged(struct server *srv, const char *space, const struct snap_preview *p, const char *actor,
                          const char *remote);

/* A restore of a completed, not corrupt snapshot (the caller checked the
 * row and set the space busy; the restore clears it). Answers {"restored_from",
 * "pre_restore_snapshot","server_version","changes"} or the error. */
struct snap_restore_req {
    const char *space, *id, *actor, *remote, *sha256;
    int64_t space_id;
};
void snap_restore_start(struct server *srv, struct http_req *r, const struct snap_restore_req *q,
                        snap_answer_fn answer);

#endif
