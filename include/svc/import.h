/* import.h - a snapshot file uploaded into a space (POST .../snapshots/import).
 *
 * The body arrives on the loop (the request's body callbacks) into a
 * pending buffer; one write job at a time (`_work`, threadpool) moves it to
 * DATA/snapshots/<id>.ndjson.gz.tmp -- a gzip upload as it comes, plain
 * NDJSON compressed by the format's gzip output -- and at the end verifies
 * the stored file in full (snapshot_format.h) and renames it; the row is
 * written by a writer op (`_apply`) as a completed, checked snapshot of
 * kind 'imported'. `_done` callbacks run on the loop and answer.
 */
#ifndef SNAPSYNC_IMPORT_H
#define SNAPSYNC_IMPORT_H

#include "svc/snapshot.h"

struct snap_import_req {
    const char *space, *actor, *remote;
};
/* Takes over r's body (the caller checked the space and set it busy; the
 * import clears busy when the request is released). Answers 201 with the
 * row, or the error. */
void snap_import_start(struct server *srv, struct http_req *r, const struct snap_import_req *q, snap_answer_fn answer);

/* Records a verified snapshot file already at its final name
 * (snap_file(id)) as a completed 'imported' snapshot (writer op, audited)
 * and answers r with 201 and the row, or the error (the file is removed
 * then). after(arg, ok) runs at the end when not NULL. sum is copied; its
 * strings must live until after() (or the answer). Returns 0, or -1 when
 * the write queue is full (nothing done). */
struct snap_import_rec {
    const char *id, *space, *actor, *remote, *note;
    int level;                       /* -1: not known */
    const struct snap_summary *sum;
};
typedef void (*snap_import_after_fn)(void *arg, bool ok);
int snap_import_record(struct server *srv, struct http_req *r, const struct snap_import_rec *rec,
                       snap_answer_fn answer, snap_import_after_fn after, void *arg);

#endif
