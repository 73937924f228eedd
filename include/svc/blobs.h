/* blobs.h - the blob store: content-addressed file blobs, referenced per
 * space. See blobs.c; the handlers are api/blobs.c. Threads: as each
 * section says (start-up, writer thread, threadpool, loop). */
#ifndef SNAPSYNC_BLOBS_H
#define SNAPSYNC_BLOBS_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

struct http_req;
struct server;
struct wtx;

void blob_path(const char *data_dir, const char *sha, char *out, size_t cap);

/* Startup (main thread, before the loop and the writer): removes what a
 * crash left in DATA/blobs/tmp, and every blob file no space references
 * (a space deleted just before a crash, an upload whose reference was never
 * recorded, blobs no entity named when the references were introduced).
 * Returns 0 or -1 with err. */
int blobs_recover(const char *data_dir, sqlite3 *db, char *err, size_t errlen);
void blobs_init(struct server *srv);     /* loop: the table of pinned blobs */
void blobs_free(struct server *srv);

/* ---- writer thread: the references (table space_blobs) ---- */

/* For a canonical body: 0 if it references no blob or all of them are
 * referenced by the space; 1 if some are not (their hashes, JSON-quoted and
 * comma-separated, in missing); -1 if "_blobs" is malformed (the reason in
 * missing); -2 on an SQL error. */
int blobs_check(struct wtx *tx, int64_t space_id, const char *body, size_t len, char *missing, size_t cap);
/* References sha from the space (a no-op if it is already). *added (may be
 * NULL): whether the reference is new. 0 or -1 on an SQL error. */
int blobs_ref_add(struct wtx *tx, int64_t space_id, const char *sha, bool *added);
/* Drops the space's references; appends to gone (64 hex digits each, no
 * separator) the blobs no other space references: blobs_collect() them
 * once the transaction has committed. 0 or -1. */
int blobs_space_drop(struct wtx *tx, int64_t space_id, struct buf *gone);

/* ---- threadpool ---- */

/* Does the space reference sha? 1 yes, 0 no, -1 SQL error. *st is prepared
 * on the first call for db (the caller finalizes it). */
int blobs_in_space(sqlite3 *db, sqlite3_stmt **st, int64_t space_id, const char *sha);
/* Puts a verified, fsynced temp file in place as blob sha (rename over any
 * copy already there: same bytes) and pins it: the file cannot be removed
 * until blob_unpin(), which the caller calls once the reference it records
 * has committed (or will not be). Waits while a removal of that blob is
 * being decided. owner (or NULL): who placed it, for blob_pin_owned. 0, or
 * -errno (nothing pinned, tmp left to the caller). */
int blob_place(struct server *srv, const char *tmp, const char *sha, const char *owner);
/* Pins sha again if owner placed it and it is still pinned (its reference
 * not yet committed): a sync job's later page reuses what an earlier page
 * of the same job fetched. true if pinned. */
bool blob_pin_owned(struct server *srv, const char *sha, const char *owner);

/* Any thread (a short lock, no I/O under it). */
void blob_unpin(struct server *srv, const char *sha);

/* Loop: removes, on the threadpool, those of the n blobs (64 hex digits
 * each, back to back) that no space references and nobody has pinned. */
void blobs_collect(struct server *srv, const char *hashes, size_t n);

/* Threadpool: opens blob sha for reading if the space references it. 0
 * (*fd open, *size set) or an errno (ENOENT: not in the space). */
int blob_open(struct server *srv, int64_t space_id, const char *sha, int *fd, uint64_t *size);
/* Threadpool: {"missing":[...]}: those of the n hashes the space does not
 * reference, whatever is on disk, into out. 0 or -1 (a read failed). */
int blobs_missing_json(struct server *srv, int64_t space_id, char (*h)[65], size_t n, struct buf *out);

#endif
