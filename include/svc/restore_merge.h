/* restore_merge.h - the walk of a snapshot file beside the space's live
 * rows, in key order, that a preview, a dry run and a restore's plan share
 * (restore_merge.c), and the check of the blobs a snapshot names. Internal
 * to restore.c and restore_merge.c. */
#ifndef SNAPSYNC_RESTORE_MERGE_H
#define SNAPSYNC_RESTORE_MERGE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/entity.h"

struct blob_set;

/* Current rows of a space in (collection, id) order. On a connection of
 * its own in a read transaction (a plan, a preview) one statement walks
 * them all (stream); the restore's fallback inside the write transaction
 * reads pages, so the same connection may write between them. */
struct cur_row {
    char c[64], i[130], rev[REV_MAX];
    bool deleted;
    const char *body;                /* stream: the statement's; pages: owned */
    size_t blen;
    const char *revs;                /* its history (as body) */
};

struct delta_coll {
    char name[64];
    uint64_t added, modified, deleted;
};

/* What a snapshot entity is put back as: its body, and for a v2 file its
 * revision identity (rev and the history after it, space-separated as a
 * row keeps it); rev NULL: a new edit (v1). cur: the row of that key now
 * (live or a tombstone), or NULL. */
struct put_item {
    const char *c, *i, *body, *rev, *hist;
    size_t blen;
    const struct cur_row *cur;
};

struct merge {
    /* callbacks: NULL to only count */
    int (*put)(void *arg, const struct put_item *it);
    int (*del)(void *arg, struct cur_row *cur);
    void *arg;
    bool stream;                     /* the connection is in a read transaction of its own */
    bool verify;                     /* the full check too: header, counts, snapshot_format.h */
    int version;                     /* out: the file's format */
    uint64_t puts, dels;
    /* per-collection delta, "the current state against the snapshot" */
    struct delta_coll *d;
    size_t nd;
    struct blob_set *blobs;          /* non-NULL: collects the blobs every snapshot entity names */
    /* verify: entities per collection, in file order (collections are runs) */
    struct delta_coll *seen;
    size_t nseen;
    uint64_t total;
};

void merge_free(struct merge *m);

/* Walks the snapshot file and the live rows in key order: put() the
 * snapshot's version where the live state differs, del() what the snapshot
 * does not have (see restore_merge.c). Returns 0, or -1 with err; *file_bad
 * says whether the file was at fault rather than the database. */
int merge_run(const char *path, const char *want_sha, sqlite3 *db, int64_t space_id, struct merge *m, char *err,
              size_t errlen, bool *file_bad);

/* The blobs of set (freed) that the space has no reference to: their count
 * (the first named in msg, all that fit as "missing":[...] in missing), or
 * -1 on an SQL error. */
int restore_blobs_missing(sqlite3 *db, int64_t space_id, struct blob_set *set, char *missing, size_t mcap, char *msg,
                          size_t msgcap);

#endif
