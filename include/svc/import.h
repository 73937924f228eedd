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

#endif
